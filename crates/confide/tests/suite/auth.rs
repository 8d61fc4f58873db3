//! Signing in and out, sessions, access tokens, CSRF, lockouts, password changes and resets,
//! imported password hashes, and the audit trail they leave.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{
    Credential, PASSWORD, SESSION_COOKIE, TestApp, each_backend, each_backend_with, email,
};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// Django's `pbkdf2_sha256` hash of [`DJANGO_PASSWORD`] with salt `seasalt` and 1,000,000
/// iterations, computed once with
/// `base64(hashlib.pbkdf2_hmac('sha256', pw, b'seasalt', 1000000))`.
const DJANGO_HASH: &str =
    "pbkdf2_sha256$1000000$seasalt$5YGFAWS1Cu+xASixJYSbolqCUgtwAdKNxflr6PT+Mys=";
const DJANGO_PASSWORD: &str = "correct horse battery staple";

async fn me(app: &TestApp, credential: &Credential) -> common::Reply {
    app.get("/api/v1/me", credential).await
}

#[tokio::test]
async fn signing_in_gives_an_access_token_a_csrf_token_and_a_strict_session_cookie() {
    each_backend(async |app| {
        let address = email("ada");
        let owner = app
            .create_owner(&address, "Analytical Engines", PASSWORD)
            .await;
        let reply = app.try_login(&address, PASSWORD).await;
        reply.expect(200);
        let body = reply.json();
        for field in ["access_token", "expires_at", "csrf_token"] {
            assert!(
                body[field].as_str().is_some_and(|v| !v.is_empty()),
                "login answer lacks {field}: {body}"
            );
        }
        assert_eq!(body["user_id"], json!(owner.user_id));

        let cookies = common::session_set_cookies(&reply.headers);
        assert_eq!(cookies.len(), 1, "exactly one session cookie: {cookies:?}");
        let attributes: Vec<String> = cookies[0]
            .split(';')
            .skip(1)
            .map(|a| a.trim().to_ascii_lowercase())
            .collect();
        assert!(
            attributes.contains(&"httponly".to_owned()),
            "{}",
            cookies[0]
        );
        assert!(
            attributes.contains(&"samesite=strict".to_owned()),
            "{}",
            cookies[0]
        );
        assert!(attributes.contains(&"path=/".to_owned()), "{}", cookies[0]);
        assert!(
            !attributes.iter().any(|a| a.starts_with("domain")),
            "__Host- cookies have no Domain"
        );

        let session = app.login(&address, PASSWORD).await;
        for credential in [session.bearer(), session.cookie()] {
            let reply = me(app, &credential).await;
            reply.expect(200);
            assert_eq!(reply.json()["user"]["email"], json!(address));
            assert_eq!(reply.json()["organizations"][0]["id"], json!(owner.org_id));
        }
        me(app, &Credential::Anonymous)
            .await
            .expect_error(401, "unauthenticated");
    })
    .await;
}

#[tokio::test]
async fn the_session_cookie_is_secure_by_default() {
    each_backend(async |app| {
        let address = email("grace");
        app.create_owner(&address, "Compilers", PASSWORD).await;
        let reply = app.try_login(&address, PASSWORD).await;
        reply.expect(200);
        let cookies = common::session_set_cookies(&reply.headers);
        assert_eq!(cookies.len(), 1, "{cookies:?}");
        assert!(
            cookies[0]
                .split(';')
                .any(|a| a.trim().eq_ignore_ascii_case("secure")),
            "{}",
            cookies[0]
        );
    })
    .await;
}

#[tokio::test]
async fn without_secure_cookies_on_loopback_the_cookie_drops_the_host_prefix_browsers_would_refuse()
{
    each_backend_with(
        |config| config.cookie_secure = false,
        async |app| {
            let address = email("hopper");
            app.create_owner(&address, "Compilers", PASSWORD).await;
            let reply = app.try_login(&address, PASSWORD).await;
            reply.expect(200);
            assert!(common::session_set_cookies(&reply.headers).is_empty());
            let cookie = reply
                .headers
                .get_all(reqwest::header::SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find(|v| v.starts_with("confide_session="))
                .expect("an unprefixed session cookie")
                .to_owned();
            assert!(
                !cookie
                    .split(';')
                    .any(|a| a.trim().eq_ignore_ascii_case("secure")),
                "{cookie}"
            );
            assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
            let value = cookie
                .split(';')
                .next()
                .and_then(|kv| kv.split_once('='))
                .map(|(_, v)| v.to_owned())
                .expect("cookie value");
            let me = app
                .client
                .get(app.url("/api/v1/me"))
                .header(reqwest::header::COOKIE, format!("confide_session={value}"))
                .send()
                .await
                .expect("request");
            assert_eq!(me.status(), 200);
        },
    )
    .await;
}

#[tokio::test]
async fn signing_out_ends_the_cookie_and_the_access_token_on_the_very_next_request() {
    each_backend(async |app| {
        let address = email("linus");
        app.create_owner(&address, "Kernels", PASSWORD).await;

        // Out with the access token.
        let session = app.login(&address, PASSWORD).await;
        me(app, &session.bearer()).await.expect(200);
        let reply = app
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/logout",
                &session.bearer(),
                None,
            )
            .await;
        reply.expect(204);
        let cleared = common::session_set_cookies(&reply.headers);
        assert!(
            cleared
                .iter()
                .any(|c| c.to_ascii_lowercase().contains("max-age=0")),
            "logout clears the cookie: {cleared:?}"
        );
        me(app, &session.bearer()).await.expect(401);
        me(app, &session.cookie()).await.expect(401);

        // Out with the cookie (a write: it needs the CSRF token).
        let session = app.login(&address, PASSWORD).await;
        let reply = app
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/logout",
                &session.cookie(),
                None,
            )
            .await;
        reply.expect(204);
        me(app, &session.cookie()).await.expect(401);
        me(app, &session.bearer()).await.expect(401);
    })
    .await;
}

#[tokio::test]
async fn a_cookie_session_mints_access_tokens_only_with_its_csrf_token_from_our_origin() {
    each_backend(async |app| {
        let address = email("barbara");
        app.create_owner(&address, "Abstractions", PASSWORD).await;
        let session = app.login(&address, PASSWORD).await;
        let cookie = format!("{SESSION_COOKIE}={}", session.cookie);
        let url = app.url("/api/v1/auth/token");

        // Cookie, token and our own origin: a fresh access token that works.
        let reply = app
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/token",
                &session.cookie(),
                None,
            )
            .await;
        reply.expect(200);
        let token = reply.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned();
        assert!(reply.json()["expires_at"].is_string(), "{}", reply.text);
        me(app, &Credential::Bearer(token)).await.expect(200);

        // No CSRF token.
        let reply = app
            .send(
                app.client
                    .post(&url)
                    .header("cookie", &cookie)
                    .header("origin", &app.base),
            )
            .await;
        reply.expect_error(403, "csrf_failed");

        // A CSRF token that is not this session's.
        let other = app.login(&address, PASSWORD).await;
        let reply = app
            .send(
                app.client
                    .post(&url)
                    .header("cookie", &cookie)
                    .header("origin", &app.base)
                    .header(common::CSRF_HEADER, &other.csrf_token),
            )
            .await;
        reply.expect_error(403, "csrf_failed");

        // The right token, sent from someone else's page.
        let reply = app
            .send(
                app.client
                    .post(&url)
                    .header("cookie", &cookie)
                    .header("origin", "https://evil.example")
                    .header(common::CSRF_HEADER, &session.csrf_token),
            )
            .await;
        reply.expect_error(403, "csrf_failed");
        let reply = app
            .send(
                app.client
                    .post(&url)
                    .header("cookie", &cookie)
                    .header("sec-fetch-site", "cross-site")
                    .header(common::CSRF_HEADER, &session.csrf_token),
            )
            .await;
        reply.expect_error(403, "csrf_failed");

        // Nothing but a cookie mints tokens: not an access token, not nothing.
        let reply = app
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/token",
                &session.bearer(),
                None,
            )
            .await;
        assert_eq!(reply.status.as_u16(), 403, "{}", reply.text);
        app.call(
            reqwest::Method::POST,
            "/api/v1/auth/token",
            &Credential::Anonymous,
            None,
        )
        .await
        .expect(401);

        // A CSRF token fetched again for the cookie session works too.
        let reply = app.get("/api/v1/auth/csrf", &session.cookie()).await;
        reply.expect(200);
        let fresh = reply.json()["csrf_token"]
            .as_str()
            .expect("csrf_token")
            .to_owned();
        let again = Credential::Cookie {
            session: session.cookie.clone(),
            csrf: fresh,
        };
        app.call(reqwest::Method::POST, "/api/v1/auth/token", &again, None)
            .await
            .expect(200);
        // The endpoint is for cookie sessions only.
        app.get("/api/v1/auth/csrf", &Credential::Anonymous)
            .await
            .expect(401);
    })
    .await;
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hs256(secret: &[u8], signing_input: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("any key length");
    mac.update(signing_input.as_bytes());
    b64(&mac.finalize().into_bytes())
}

/// DER length octets.
fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        vec![u8::try_from(len).unwrap()]
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        let mut out = vec![0x80 | u8::try_from(bytes.len()).unwrap()];
        out.extend(bytes);
        out
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(content.len()));
    out.extend_from_slice(content);
    out
}

fn der_integer(big_endian: &[u8]) -> Vec<u8> {
    let mut content = big_endian.to_vec();
    if content.first().is_some_and(|b| b & 0x80 != 0) {
        content.insert(0, 0);
    }
    der(0x02, &content)
}

/// The RSA public key of a JWK as SubjectPublicKeyInfo DER and PEM: the "public key as an HMAC
/// secret" confusion attack signs with exactly these bytes.
fn public_key_material(jwk: &Value) -> Vec<Vec<u8>> {
    let n = URL_SAFE_NO_PAD
        .decode(jwk["n"].as_str().expect("n"))
        .expect("n is base64url");
    let e = URL_SAFE_NO_PAD
        .decode(jwk["e"].as_str().expect("e"))
        .expect("e is base64url");
    let rsa = der(0x30, &[der_integer(&n), der_integer(&e)].concat());
    // rsaEncryption OID 1.2.840.113549.1.1.1 with NULL parameters.
    let algorithm = der(
        0x30,
        &[
            der(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
            vec![0x05, 0x00],
        ]
        .concat(),
    );
    let mut bits = vec![0u8];
    bits.extend(&rsa);
    let spki = der(0x30, &[algorithm, der(0x03, &bits)].concat());
    let body = STANDARD.encode(&spki);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    );
    let pkcs1 = format!(
        "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
        STANDARD.encode(&rsa)
    );
    vec![
        pem.clone().into_bytes(),
        pem.trim_end().as_bytes().to_vec(),
        pkcs1.into_bytes(),
        spki,
        rsa,
        n,
        jwk.to_string().into_bytes(),
    ]
}

#[tokio::test]
async fn forged_access_tokens_are_refused() {
    each_backend(async |app| {
        let address = email("mallory");
        app.create_owner(&address, "Forgeries", PASSWORD).await;
        let session = app.login(&address, PASSWORD).await;
        me(app, &session.bearer()).await.expect(200);

        let parts: Vec<&str> = session.access_token.split('.').collect();
        assert_eq!(parts.len(), 3, "a JWT");
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], json!("RS256"));
        let payload = parts[1];

        // alg none, with and without a trailing dot, in a few spellings.
        for alg in ["none", "None", "NONE", "nOnE"] {
            let forged_header = b64(json!({ "alg": alg, "typ": "JWT", "kid": header["kid"] })
                .to_string()
                .as_bytes());
            for token in [
                format!("{forged_header}.{payload}."),
                format!("{forged_header}.{payload}"),
            ] {
                me(app, &Credential::Bearer(token))
                    .await
                    .expect_error(401, "unauthenticated");
            }
        }

        // HS256, keyed with the public key everyone can read from the JWKS.
        let jwks = app
            .get("/.well-known/jwks.json", &Credential::Anonymous)
            .await;
        jwks.expect(200);
        let jwks = jwks.json();
        let keys = jwks["keys"].as_array().expect("keys");
        assert!(!keys.is_empty(), "the JWKS lists the signing key: {jwks}");
        for jwk in keys {
            assert!(
                jwk.get("d").is_none(),
                "the JWKS holds no private parts: {jwk}"
            );
            for alg in ["HS256", "HS384", "HS512"] {
                let forged_header = b64(json!({ "alg": alg, "typ": "JWT", "kid": jwk["kid"] })
                    .to_string()
                    .as_bytes());
                let signing_input = format!("{forged_header}.{payload}");
                for secret in public_key_material(jwk) {
                    let token = format!("{signing_input}.{}", hs256(&secret, &signing_input));
                    me(app, &Credential::Bearer(token))
                        .await
                        .expect_error(401, "unauthenticated");
                }
            }
        }

        // The real signature over a changed payload.
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 3600 * 24 * 365);
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(claims.to_string().as_bytes()),
            parts[2]
        );
        me(app, &Credential::Bearer(tampered))
            .await
            .expect_error(401, "unauthenticated");

        // Garbage is refused the same way; the genuine token still works.
        for junk in ["", "a.b.c", "not-a-token", "Bearer"] {
            me(app, &Credential::Bearer(junk.to_owned()))
                .await
                .expect(401);
        }
        me(app, &session.bearer()).await.expect(200);
    })
    .await;
}

/// Status, error code and whether Retry-After was sent, of each login attempt.
async fn attempts(app: &TestApp, address: &str, passwords: &[&str]) -> Vec<(u16, String, bool)> {
    let mut seen = Vec::new();
    for password in passwords {
        let reply = app.try_login(address, password).await;
        let code = if reply.status.is_success() {
            String::new()
        } else {
            reply.code()
        };
        if reply.status.as_u16() == 429 {
            let retry = reply
                .header("retry-after")
                .expect("429 carries Retry-After");
            assert!(
                retry.parse::<u64>().is_ok_and(|s| s > 0),
                "Retry-After: {retry}"
            );
        }
        seen.push((
            reply.status.as_u16(),
            code,
            reply.header("retry-after").is_some(),
        ));
    }
    seen
}

#[tokio::test]
async fn five_wrong_passwords_lock_an_account_and_an_unknown_address_looks_the_same() {
    each_backend(async |app| {
        let (owner, owner_session) = app.owner(&email("owner"), "Locksmiths").await;
        let victim = email("victim");
        app.member(&owner_session.bearer(), &owner.org_id, &victim, "member")
            .await;

        let wrong = "not the password at all";
        let sequence = [wrong, wrong, wrong, wrong, wrong, PASSWORD];
        let known = attempts(app, &victim, &sequence).await;
        let unknown = attempts(app, &email("nobody"), &sequence).await;
        let failed = (401, "invalid_credentials".to_owned(), false);
        let locked = (429, "too_many_attempts".to_owned(), true);
        let expected = vec![
            failed.clone(),
            failed.clone(),
            failed.clone(),
            failed.clone(),
            failed,
            locked,
        ];
        assert_eq!(
            known, expected,
            "the right password is refused while locked"
        );
        assert_eq!(
            unknown, known,
            "an unknown address must look exactly like a known one"
        );

        // The lockout is in the organization's audit log, and the chain verifies.
        let actions = app
            .audit_actions(&owner_session.bearer(), &owner.org_id)
            .await;
        assert!(
            actions.iter().any(|a| a == "auth.locked_out"),
            "{actions:?}"
        );
        assert!(
            actions.iter().any(|a| a == "auth.login_failed"),
            "{actions:?}"
        );

        // An operator lifts it.
        app.confide(&["admin", "unlock-user", "--email", &victim], None)
            .await
            .expect_success();
        app.login(&victim, PASSWORD).await;
        let actions = app
            .audit_actions(&owner_session.bearer(), &owner.org_id)
            .await;
        assert!(actions.iter().any(|a| a == "auth.unlocked"), "{actions:?}");
    })
    .await;
}

/// Moves every recorded login attempt and lockout back in time, as if `minutes` had passed.
async fn let_time_pass(app: &TestApp, minutes: i64) {
    let db = app.database().await;
    let shift = minutes * 60 * 1000;
    sqlx::query("UPDATE login_attempts SET at = at - $1")
        .bind(shift)
        .execute(&db)
        .await
        .expect("shift login attempts");
    sqlx::query(
        "UPDATE lockouts SET locked_until = locked_until - $1, updated_at = updated_at - $1",
    )
    .bind(shift)
    .execute(&db)
    .await
    .expect("shift lockouts");
    db.close().await;
}

fn retry_after_secs(reply: &common::Reply) -> u64 {
    reply
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("a numeric Retry-After")
}

#[tokio::test]
async fn a_repeat_lockout_lasts_longer_and_the_window_moves() {
    each_backend(async |app| {
        let (owner, session) = app.owner(&email("owner"), "Locksmiths").await;
        let victim = email("victim");
        app.member(&session.bearer(), &owner.org_id, &victim, "member")
            .await;
        let wrong = "not the password at all";

        attempts(app, &victim, &[wrong; 5]).await;
        let first = app.try_login(&victim, PASSWORD).await;
        first.expect(429);
        let first_lock = retry_after_secs(&first);
        assert!((14 * 60..=15 * 60).contains(&first_lock), "{first_lock}");

        // Once the first lockout and its window have passed, the right password works again...
        let_time_pass(app, 16).await;
        app.try_login(&victim, PASSWORD).await.expect(200);

        // ...and four failures spread over the moving window do not lock, a fifth inside it does.
        attempts(app, &victim, &[wrong; 4]).await;
        let_time_pass(app, 10).await;
        app.try_login(&victim, wrong).await.expect(401);
        let second = app.try_login(&victim, PASSWORD).await;
        second.expect(429);
        let second_lock = retry_after_secs(&second);
        assert!(
            second_lock > first_lock + 10 * 60,
            "a repeat lockout within a day lasts longer: {first_lock}s then {second_lock}s"
        );
    })
    .await;
}

#[tokio::test]
async fn the_audit_chain_verifies_until_someone_edits_a_row() {
    each_backend(async |app| {
        let (owner, session) = app.owner(&email("auditor"), "Ledgers").await;
        app.create_bot(&session.bearer(), &owner.org_id, "Ledger Bot")
            .await;
        app.try_login(&email("nobody"), "wrong password here")
            .await
            .expect(401);

        let verify = app.confide(&["admin", "audit", "verify"], None).await;
        verify.expect_success();
        assert_eq!(verify.json()["ok"], json!(true));

        // Only someone with the database in hand can do this, and even they must lift the guard.
        let db = app.database().await;
        let lift = if app.is_postgres() {
            "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update"
        } else {
            "DROP TRIGGER audit_events_no_update"
        };
        sqlx::query(lift)
            .execute(&db)
            .await
            .expect("lift the append-only guard");
        let edited = sqlx::query(
            "UPDATE audit_events SET action = 'nothing.happened' \
             WHERE id = (SELECT id FROM audit_events WHERE action = 'bot.created')",
        )
        .execute(&db)
        .await
        .expect("edit an audit row");
        assert_eq!(edited.rows_affected(), 1);
        db.close().await;

        let verify = app.confide(&["admin", "audit", "verify"], None).await;
        assert!(
            !verify.success,
            "verify must fail after an edit: {}",
            verify.stdout
        );
        assert_eq!(verify.json()["ok"], json!(false), "{}", verify.stdout);
    })
    .await;
}

#[tokio::test]
async fn the_audit_chain_verifies_until_someone_removes_a_row() {
    each_backend(async |app| {
        let (owner, session) = app.owner(&email("auditor"), "Ledgers").await;
        app.create_bot(&session.bearer(), &owner.org_id, "Ledger Bot")
            .await;
        app.confide(&["admin", "audit", "verify"], None)
            .await
            .expect_success();

        let db = app.database().await;
        let lift = if app.is_postgres() {
            "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update"
        } else {
            "DROP TRIGGER audit_events_no_delete"
        };
        sqlx::query(lift)
            .execute(&db)
            .await
            .expect("lift the append-only guard");
        // The organization's first event, with later ones chained after it.
        let removed = sqlx::query(
            "DELETE FROM audit_events \
             WHERE id = (SELECT id FROM audit_events WHERE action = 'org.created')",
        )
        .execute(&db)
        .await
        .expect("remove an audit row");
        assert_eq!(removed.rows_affected(), 1);
        db.close().await;

        let verify = app.confide(&["admin", "audit", "verify"], None).await;
        assert!(
            !verify.success,
            "verify must fail after a removal: {}",
            verify.stdout
        );
        assert_eq!(verify.json()["ok"], json!(false), "{}", verify.stdout);
    })
    .await;
}

#[tokio::test]
async fn the_audit_log_refuses_edits_through_the_database() {
    each_backend(async |app| {
        let (owner, session) = app.owner(&email("auditor"), "Ledgers").await;
        app.create_bot(&session.bearer(), &owner.org_id, "Ledger Bot")
            .await;
        let db = app.database().await;
        let update = sqlx::query("UPDATE audit_events SET action = 'nothing.happened'")
            .execute(&db)
            .await;
        assert!(update.is_err(), "audit rows cannot be updated");
        let delete = sqlx::query("DELETE FROM audit_events").execute(&db).await;
        assert!(delete.is_err(), "audit rows cannot be deleted");
        db.close().await;
        app.confide(&["admin", "audit", "verify"], None)
            .await
            .expect_success();
    })
    .await;
}

#[tokio::test]
async fn changing_the_password_signs_out_the_other_sessions_but_not_this_one() {
    each_backend(async |app| {
        let address = email("margaret");
        app.create_owner(&address, "Apollo", PASSWORD).await;
        let here = app.login(&address, PASSWORD).await;
        let elsewhere = app.login(&address, PASSWORD).await;
        let new_password = "a brand new lunar passphrase";

        // The current password is checked, and the new one must pass the policy.
        app.post(
            "/api/v1/auth/password",
            &here.bearer(),
            json!({ "current_password": "wrong current one", "new_password": new_password }),
        )
        .await
        .expect(401);
        app.post(
            "/api/v1/auth/password",
            &here.bearer(),
            json!({ "current_password": PASSWORD, "new_password": "short" }),
        )
        .await
        .expect_error(422, "password_too_short");
        me(app, &elsewhere.bearer()).await.expect(200);

        app.post(
            "/api/v1/auth/password",
            &here.bearer(),
            json!({ "current_password": PASSWORD, "new_password": new_password }),
        )
        .await
        .expect(204);

        me(app, &here.bearer()).await.expect(200);
        me(app, &here.cookie()).await.expect(200);
        me(app, &elsewhere.bearer()).await.expect(401);
        me(app, &elsewhere.cookie()).await.expect(401);
        app.try_login(&address, PASSWORD)
            .await
            .expect_error(401, "invalid_credentials");
        app.login(&address, new_password).await;
    })
    .await;
}

#[tokio::test]
async fn a_password_reset_token_works_once_and_only_for_a_known_address() {
    each_backend(async |app| {
        let address = email("hedy");
        app.create_owner(&address, "Frequency Hopping", PASSWORD)
            .await;
        let before = app.login(&address, PASSWORD).await;
        let stranger = email("stranger");

        // Known and unknown addresses get the same answer.
        let for_stranger = app
            .post(
                "/api/v1/auth/password-reset",
                &Credential::Anonymous,
                json!({ "email": stranger }),
            )
            .await;
        let for_user = app
            .post(
                "/api/v1/auth/password-reset",
                &Credential::Anonymous,
                json!({ "email": address }),
            )
            .await;
        for_stranger.expect(202);
        for_user.expect(202);
        assert_eq!(for_stranger.json(), for_user.json());

        let token = app.wait_for_mail_token(&address, "Reset token:").await;
        assert!(
            app.mail_to(&stranger).is_empty(),
            "no mail for an address without an account"
        );

        // A bad token is refused and changes nothing.
        app.post(
            "/api/v1/auth/password-reset/confirm",
            &Credential::Anonymous,
            json!({ "token": format!("{token}x"), "new_password": "someone else's choice" }),
        )
        .await
        .expect_error(403, "invalid_token");

        let new_password = "a freshly reset passphrase";
        app.post(
            "/api/v1/auth/password-reset/confirm",
            &Credential::Anonymous,
            json!({ "token": token, "new_password": new_password }),
        )
        .await
        .expect(204);

        // Used once, it is dead.
        app.post(
            "/api/v1/auth/password-reset/confirm",
            &Credential::Anonymous,
            json!({ "token": token, "new_password": "yet another passphrase" }),
        )
        .await
        .expect_error(403, "invalid_token");

        app.try_login(&address, PASSWORD)
            .await
            .expect_error(401, "invalid_credentials");
        me(app, &before.bearer()).await.expect(401);
        app.login(&address, new_password).await;
    })
    .await;
}

#[tokio::test]
async fn an_imported_django_account_signs_in_and_its_hash_is_upgraded_to_argon2id() {
    each_backend(async |app| {
        let (owner, _) = app.owner(&email("owner"), "Migrated From Django").await;
        let address = email("django");
        let imported = app
            .confide(
                &[
                    "admin",
                    "import-user",
                    "--email",
                    &address,
                    "--org",
                    &owner.org_id,
                    "--password-hash",
                    DJANGO_HASH,
                ],
                None,
            )
            .await;
        imported.expect_success();
        let user_id = imported.json()["user_id"]
            .as_str()
            .expect("user_id")
            .to_owned();

        let stored_hash = async || -> String {
            let db = app.database().await;
            let row: (String,) = sqlx::query_as("SELECT password_hash FROM users WHERE id = $1")
                .bind(&user_id)
                .fetch_one(&db)
                .await
                .expect("read the stored hash");
            db.close().await;
            row.0
        };
        assert_eq!(stored_hash().await, DJANGO_HASH);

        app.try_login(&address, "not the django password")
            .await
            .expect(401);
        let session = app.login(&address, DJANGO_PASSWORD).await;
        assert_eq!(session.user_id, user_id);
        let upgraded = stored_hash().await;
        assert!(
            upgraded.starts_with("$argon2id$"),
            "stored hash is now {upgraded:.20}…"
        );

        // The upgraded hash still knows the password.
        app.login(&address, DJANGO_PASSWORD).await;
        let orgs = me(app, &session.bearer()).await.json()["organizations"].clone();
        assert_eq!(orgs[0]["id"], json!(owner.org_id));
        assert_eq!(orgs[0]["role"], json!("member"));
    })
    .await;
}

#[tokio::test]
async fn a_malformed_imported_hash_is_refused() {
    each_backend(async |app| {
        let (owner, _) = app.owner(&email("owner"), "Careful Imports").await;
        for hash in [
            "pbkdf2_sha256$1000000$seasalt$not-base64",
            "md5$abc$def",
            "plain text password",
        ] {
            let run = app
                .confide(
                    &[
                        "admin",
                        "import-user",
                        "--email",
                        &email("bad"),
                        "--org",
                        &owner.org_id,
                        "--password-hash",
                        hash,
                    ],
                    None,
                )
                .await;
            assert!(!run.success, "import of {hash:?} must fail: {}", run.stdout);
        }
    })
    .await;
}

#[tokio::test]
async fn sessions_are_listed_and_one_can_be_revoked() {
    each_backend(async |app| {
        let address = email("katherine");
        app.create_owner(&address, "Trajectories", PASSWORD).await;
        let laptop = app.login(&address, PASSWORD).await;
        let phone = app.login(&address, PASSWORD).await;

        let list = app.get("/api/v1/me/sessions", &laptop.bearer()).await;
        list.expect(200);
        let sessions = list.json()["sessions"]
            .as_array()
            .expect("sessions")
            .clone();
        let mut ids: Vec<&str> = sessions
            .iter()
            .map(|s| s["id"].as_str().expect("id"))
            .collect();
        ids.sort_unstable();
        let mut expected = vec![laptop.session_id.as_str(), phone.session_id.as_str()];
        expected.sort_unstable();
        assert_eq!(ids, expected);
        let current: Vec<&Value> = sessions
            .iter()
            .filter(|s| s["current"] == json!(true))
            .collect();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0]["id"], json!(laptop.session_id));
        assert!(!list.text.contains(&laptop.cookie) && !list.text.contains(&phone.cookie));

        // Someone else cannot end my session.
        let intruder_address = email("intruder");
        app.create_owner(&intruder_address, "Elsewhere", PASSWORD)
            .await;
        let intruder = app.login(&intruder_address, PASSWORD).await;
        app.delete(
            &format!("/api/v1/me/sessions/{}", phone.session_id),
            &intruder.bearer(),
        )
        .await
        .expect_error(404, "not_found");
        me(app, &phone.bearer()).await.expect(200);

        app.delete(
            &format!("/api/v1/me/sessions/{}", phone.session_id),
            &laptop.bearer(),
        )
        .await
        .expect(204);
        me(app, &phone.bearer()).await.expect(401);
        me(app, &phone.cookie()).await.expect(401);
        me(app, &laptop.bearer()).await.expect(200);
        let list = app.get("/api/v1/me/sessions", &laptop.bearer()).await;
        assert_eq!(
            list.json()["sessions"].as_array().map(Vec::len),
            Some(1),
            "{}",
            list.text
        );

        // Revoking again finds nothing.
        app.delete(
            &format!("/api/v1/me/sessions/{}", phone.session_id),
            &laptop.bearer(),
        )
        .await
        .expect(404);
    })
    .await;
}

#[tokio::test]
async fn signing_in_again_with_an_old_cookie_rotates_the_session() {
    each_backend(async |app| {
        let address = email("rotation");
        app.create_owner(&address, "Fixation", PASSWORD).await;
        let first = app.login(&address, PASSWORD).await;
        // A browser that still carries the first cookie signs in again.
        let reply = app
            .send(
                app.client
                    .post(app.url("/api/v1/auth/login"))
                    .header("cookie", format!("{SESSION_COOKIE}={}", first.cookie))
                    .json(&json!({ "email": address, "password": PASSWORD })),
            )
            .await;
        reply.expect(200);
        let second = common::session_cookie_value(&reply.headers).expect("a new cookie");
        assert_ne!(second, first.cookie, "the session id changes at sign-in");
        me(app, &first.cookie()).await.expect(401);
        me(
            app,
            &Credential::Cookie {
                session: second,
                csrf: String::new(),
            },
        )
        .await
        .expect(200);
    })
    .await;
}
