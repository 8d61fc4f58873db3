use std::fs;
use std::os::unix::fs::PermissionsExt;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::PublicKeyComponents;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;

use super::*;

const ISS: &str = "https://confide.example";
const AUD: &str = "confide-api";
const NOW: i64 = 1_750_000_000;

fn keys() -> (tempfile::TempDir, JwtKeys) {
    let dir = tempfile::tempdir().unwrap();
    let keys = JwtKeys::load_or_generate_at(dir.path(), NOW).unwrap();
    (dir, keys)
}

fn b64(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn claims_json(now: i64) -> serde_json::Value {
    json!({"iss": ISS, "aud": AUD, "sub": "user-1", "sid": "session-1",
           "iat": now, "exp": now + 300, "jti": "j"})
}

fn public_key_pem(keys: &JwtKeys) -> String {
    let published = &keys.published[0];
    let components = PublicKeyComponents {
        n: published.n.clone(),
        e: published.e.clone(),
    };
    let der = components.as_der().unwrap();
    let body = STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

fn refused(keys: &JwtKeys, token: &str) -> bool {
    matches!(
        keys.verify(token, ISS, AUD, NOW),
        Err(Error::InvalidToken(_))
    )
}

#[test]
fn an_issued_token_verifies_and_carries_the_session() {
    let (_dir, keys) = keys();
    let (token, exp) = keys
        .issue("user-1", "session-1", ISS, AUD, NOW, 300)
        .unwrap();
    assert_eq!(exp, NOW + 300);
    let claims = keys.verify(&token, ISS, AUD, NOW + 10).unwrap();
    assert_eq!(claims.sub, "user-1");
    assert_eq!(claims.sid, "session-1");
    assert_eq!((claims.iat, claims.exp), (NOW, NOW + 300));
    assert!(claims.jti.len() >= 22);

    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(header.kid.as_deref(), Some(keys.active_kid()));
}

#[test]
fn every_token_gets_its_own_jti() {
    let (_dir, keys) = keys();
    let (a, _) = keys.issue("u", "s", ISS, AUD, NOW, 60).unwrap();
    let (b, _) = keys.issue("u", "s", ISS, AUD, NOW, 60).unwrap();
    let ja = keys.verify(&a, ISS, AUD, NOW).unwrap().jti;
    let jb = keys.verify(&b, ISS, AUD, NOW).unwrap().jti;
    assert_ne!(ja, jb);
}

#[test]
fn a_token_never_lives_longer_than_fifteen_minutes() {
    let (_dir, keys) = keys();
    let (_, exp) = keys.issue("u", "s", ISS, AUD, NOW, 86_400).unwrap();
    assert_eq!(exp, NOW + 900);
    assert!(keys.issue("u", "s", ISS, AUD, NOW, 0).is_err());
    assert!(keys.issue("u", "s", ISS, AUD, i64::MAX, 60).is_err());
}

#[test]
fn an_expired_token_is_refused_after_the_leeway() {
    let (_dir, keys) = keys();
    let (token, exp) = keys.issue("u", "s", ISS, AUD, NOW, 300).unwrap();
    assert!(
        keys.verify(&token, ISS, AUD, exp + CLOCK_LEEWAY_SECS)
            .is_ok()
    );
    assert!(matches!(
        keys.verify(&token, ISS, AUD, exp + CLOCK_LEEWAY_SECS + 1),
        Err(Error::TokenExpired)
    ));
}

#[test]
fn a_token_issued_in_the_future_is_refused() {
    let (_dir, keys) = keys();
    let (token, _) = keys.issue("u", "s", ISS, AUD, NOW + 600, 300).unwrap();
    assert!(refused(&keys, &token));
    let (token, _) = keys.issue("u", "s", ISS, AUD, NOW + 30, 300).unwrap();
    assert!(keys.verify(&token, ISS, AUD, NOW).is_ok());
}

#[test]
fn a_token_for_another_audience_or_issuer_is_refused() {
    let (_dir, keys) = keys();
    let (token, _) = keys.issue("u", "s", ISS, "another-api", NOW, 300).unwrap();
    assert!(refused(&keys, &token));
    let (token, _) = keys
        .issue("u", "s", "https://evil.example", AUD, NOW, 300)
        .unwrap();
    assert!(refused(&keys, &token));
}

#[test]
fn an_unsigned_alg_none_token_is_refused() {
    let (_dir, keys) = keys();
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": keys.active_kid()});
        let token = format!("{}.{}.", b64(&header), b64(&claims_json(NOW)));
        assert!(refused(&keys, &token), "{alg}");
    }
}

#[test]
fn an_hs256_token_keyed_with_our_public_key_is_refused() {
    let (_dir, keys) = keys();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(keys.active_kid().to_owned());
    let pem = public_key_pem(&keys);
    let n = URL_SAFE_NO_PAD.encode(&keys.published[0].n);
    for secret in [pem.as_bytes(), pem.trim_end().as_bytes(), n.as_bytes()] {
        let token = jsonwebtoken::encode(
            &header,
            &claims_json(NOW),
            &EncodingKey::from_secret(secret),
        )
        .unwrap();
        assert!(refused(&keys, &token));
    }
}

#[test]
fn a_ps256_token_signed_with_our_own_key_is_refused() {
    let (_dir, keys) = keys();
    let mut header = Header::new(Algorithm::PS256);
    header.kid = Some(keys.active_kid().to_owned());
    let token = jsonwebtoken::encode(&header, &claims_json(NOW), &keys.signing).unwrap();
    assert!(refused(&keys, &token));
}

#[test]
fn ecdsa_and_other_algorithms_are_refused() {
    let (_dir, keys) = keys();
    for alg in ["ES256", "ES384", "EdDSA", "RS512", "HS512"] {
        let header = json!({"alg": alg, "kid": keys.active_kid()});
        let token = format!("{}.{}.c2ln", b64(&header), b64(&claims_json(NOW)));
        assert!(refused(&keys, &token), "{alg}");
    }
}

#[test]
fn a_tampered_payload_is_refused() {
    let (_dir, keys) = keys();
    let (token, _) = keys.issue("user-1", "s", ISS, AUD, NOW, 300).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = claims_json(NOW);
    claims["sub"] = json!("admin");
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert!(refused(&keys, &forged));
    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    signature[0] ^= 1;
    let flipped = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        URL_SAFE_NO_PAD.encode(signature)
    );
    assert!(refused(&keys, &flipped));
}

#[test]
fn a_token_from_another_server_or_without_a_kid_is_refused() {
    let (_dir, keys) = keys();
    let (_other_dir, other) = self::keys();
    let (token, _) = other.issue("u", "s", ISS, AUD, NOW, 300).unwrap();
    assert!(refused(&keys, &token));

    let header = Header::new(Algorithm::RS256);
    let no_kid = jsonwebtoken::encode(&header, &claims_json(NOW), &keys.signing).unwrap();
    assert!(refused(&keys, &no_kid));
}

#[test]
fn a_token_with_missing_claims_or_a_critical_header_is_refused() {
    let (_dir, keys) = keys();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(keys.active_kid().to_owned());
    for missing in ["iss", "aud", "sub", "sid", "iat", "exp", "jti"] {
        let mut claims = claims_json(NOW);
        claims.as_object_mut().unwrap().remove(missing);
        let token = jsonwebtoken::encode(&header, &claims, &keys.signing).unwrap();
        assert!(refused(&keys, &token), "{missing}");
    }
    let mut claims = claims_json(NOW);
    claims["exp"] = json!(NOW + 86_400);
    let long_lived = jsonwebtoken::encode(&header, &claims, &keys.signing).unwrap();
    assert!(refused(&keys, &long_lived));

    let mut crit = header.clone();
    crit.crit = Some(vec!["exp".to_owned()]);
    let token = jsonwebtoken::encode(&crit, &claims_json(NOW), &keys.signing).unwrap();
    assert!(refused(&keys, &token));
}

#[test]
fn a_not_before_in_the_future_is_refused() {
    let (_dir, keys) = keys();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(keys.active_kid().to_owned());
    let mut claims = claims_json(NOW);
    claims["nbf"] = json!(NOW + 120);
    let token = jsonwebtoken::encode(&header, &claims, &keys.signing).unwrap();
    assert!(refused(&keys, &token));
}

#[test]
fn garbage_is_refused_without_panicking() {
    let (_dir, keys) = keys();
    let long = "a".repeat(100_000);
    for bad in ["", ".", "..", "a.b.c", "a.b", "e30.e30.e30", "....", &long] {
        assert!(refused(&keys, bad), "{bad:?}");
    }
}

#[test]
fn the_jwks_publishes_the_active_key_as_a_standard_rsa_jwk() {
    let (_dir, keys) = keys();
    let jwks = keys.jwks();
    let published = jwks["keys"].as_array().unwrap();
    assert_eq!(published.len(), 1);
    let jwk = &published[0];
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["alg"], "RS256");
    assert_eq!(jwk["kid"], keys.active_kid());
    assert_eq!(jwk["e"], "AQAB");
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    assert_eq!(n.len(), 256);
    assert_ne!(n[0], 0, "n must carry no leading zero byte");

    // A verifier holding only the JWKS (as any standard JWT library would) accepts our tokens.
    let (token, _) = keys.issue("u", "s", ISS, AUD, NOW, 300).unwrap();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.set_audience(&[AUD]);
    let decoded = jsonwebtoken::decode::<AccessClaims>(
        &token,
        &DecodingKey::from_jwk(&jwk).unwrap(),
        &validation,
    );
    assert!(decoded.is_ok());
}

#[test]
fn the_signing_key_is_private_on_disk_and_reused_on_the_next_start() {
    let (dir, keys) = keys();
    let jwt = dir.path().join("keys/jwt");
    let pem = jwt.join(format!("{}.pem", keys.active_kid()));
    assert_eq!(
        fs::metadata(&pem).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(&jwt).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let again = JwtKeys::load_or_generate_at(dir.path(), NOW + 5).unwrap();
    assert_eq!(again.active_kid(), keys.active_kid());
}

#[test]
fn a_world_readable_signing_key_is_refused() {
    let (dir, keys) = keys();
    let pem = dir
        .path()
        .join(format!("keys/jwt/{}.pem", keys.active_kid()));
    fs::set_permissions(&pem, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        JwtKeys::load_or_generate_at(dir.path(), NOW),
        Err(Error::InsecurePermissions(_))
    ));
}

#[test]
fn an_active_file_naming_a_missing_key_is_an_error() {
    let (dir, keys) = keys();
    fs::remove_file(
        dir.path()
            .join(format!("keys/jwt/{}.pem", keys.active_kid())),
    )
    .unwrap();
    assert!(matches!(
        JwtKeys::load_or_generate_at(dir.path(), NOW),
        Err(Error::InvalidKey { .. })
    ));
}

#[test]
fn a_key_file_renamed_to_another_kid_is_refused() {
    let (dir, keys) = keys();
    let jwt = dir.path().join("keys/jwt");
    fs::rename(
        jwt.join(format!("{}.pem", keys.active_kid())),
        jwt.join("someone-else.pem"),
    )
    .unwrap();
    fs::write(jwt.join("active"), "someone-else\n").unwrap();
    assert!(matches!(
        JwtKeys::load_or_generate_at(dir.path(), NOW),
        Err(Error::InvalidKey { .. })
    ));
}

#[test]
fn after_rotation_old_tokens_verify_until_the_old_key_is_dropped() {
    let (dir, mut keys) = keys();
    let old_kid = keys.active_kid().to_owned();
    let (old_token, old_exp) = keys.issue("u", "s", ISS, AUD, NOW, 900).unwrap();

    let new_kid = JwtKeys::rotate(dir.path(), NOW + 10).unwrap();
    assert_ne!(new_kid, old_kid);
    // Until reloaded, a server keeps its keys.
    assert_eq!(keys.active_kid(), old_kid);
    keys.reload(dir.path(), NOW + 20).unwrap();
    assert_eq!(keys.active_kid(), new_kid);

    let kids: Vec<String> = keys.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kids, [new_kid.clone(), old_kid.clone()]);

    let (new_token, _) = keys.issue("u", "s", ISS, AUD, NOW + 20, 300).unwrap();
    let header = jsonwebtoken::decode_header(&new_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));
    assert!(keys.verify(&old_token, ISS, AUD, old_exp).is_ok());

    // Once every token of the old key has expired, the old key is dropped and deleted.
    keys.reload(dir.path(), NOW + 10 + 900 + 60 + 1).unwrap();
    assert_eq!(keys.jwks()["keys"].as_array().unwrap().len(), 1);
    let jwt = dir.path().join("keys/jwt");
    assert!(!jwt.join(format!("{old_kid}.pem")).exists());
    assert!(!jwt.join(format!("{old_kid}.retired")).exists());
    assert!(matches!(
        keys.verify(&old_token, ISS, AUD, NOW),
        Err(Error::InvalidToken("unknown key id"))
    ));
}

#[test]
fn a_key_left_behind_by_an_interrupted_rotation_is_retired_not_kept_forever() {
    let (dir, keys) = keys();
    let old_kid = keys.active_kid().to_owned();
    let new_kid = JwtKeys::rotate(dir.path(), NOW).unwrap();
    // Simulate a crash after switching `active` but before marking the old key retired.
    fs::remove_file(dir.path().join(format!("keys/jwt/{old_kid}.retired"))).unwrap();
    let loaded = JwtKeys::load_or_generate_at(dir.path(), NOW + 100).unwrap();
    assert_eq!(loaded.active_kid(), new_kid);
    assert_eq!(loaded.jwks()["keys"].as_array().unwrap().len(), 2);
    let later = JwtKeys::load_or_generate_at(dir.path(), NOW + 100 + 961).unwrap();
    assert_eq!(later.jwks()["keys"].as_array().unwrap().len(), 1);
}
