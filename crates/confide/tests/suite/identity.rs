//! End-user identity verification through HTTP: a bot owner trusts their backend's public key, the
//! widget hands over a JWT that backend signed, and the chat becomes that identity's for good.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use common::{Credential, Reply, TestApp, each_backend, email};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const PAGE: &str = "https://shop.example.com";

/// The customer's backend: holds a private key and signs identity tokens for its users.
struct Backend {
    encoding: EncodingKey,
    alg: Algorithm,
    public_pem: String,
}

impl Backend {
    fn es256() -> Backend {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        Backend {
            encoding: EncodingKey::from_ec_der(pair.to_pkcs8v1().unwrap().as_ref()),
            alg: Algorithm::ES256,
            public_pem: pem::encode(&pem::Pem::new(
                "PUBLIC KEY",
                pair.public_key().as_der().unwrap().as_ref().to_vec(),
            )),
        }
    }

    fn rs256() -> Backend {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let private = pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            pair.as_der().unwrap().as_ref().to_vec(),
        ));
        Backend {
            encoding: EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
            alg: Algorithm::RS256,
            public_pem: pem::encode(&pem::Pem::new(
                "PUBLIC KEY",
                pair.public_key().as_der().unwrap().as_ref().to_vec(),
            )),
        }
    }

    fn sign(&self, claims: Value) -> String {
        jsonwebtoken::encode(&Header::new(self.alg), &claims, &self.encoding).unwrap()
    }

    /// A token for `sub`, valid for five minutes, for the bot with `audience` as widget key.
    fn token_for(&self, sub: &str, audience: &str) -> String {
        let now = now();
        self.sign(json!({ "sub": sub, "aud": audience, "iat": now, "exp": now + 300 }))
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Setup {
    org: String,
    owner: Credential,
    bot: common::CreatedBot,
}

impl Setup {
    fn keys_path(&self) -> String {
        format!(
            "/api/v1/orgs/{}/bots/{}/identity-keys",
            self.org, self.bot.id
        )
    }

    fn settings_path(&self) -> String {
        format!(
            "/api/v1/orgs/{}/bots/{}/chat-settings",
            self.org, self.bot.id
        )
    }

    async fn trust(&self, app: &TestApp, backend: &Backend) -> Value {
        let reply = app
            .post(
                &self.keys_path(),
                &self.owner,
                json!({ "name": "Shop backend", "public_key_pem": backend.public_pem }),
            )
            .await;
        reply.expect(201);
        reply.json()
    }

    async fn require_identity(&self, app: &TestApp, required: bool) -> Reply {
        app.put(
            &self.settings_path(),
            &self.owner,
            json!({
                "greeting": "Welcome back!",
                "fallback_reply": "Let me check.",
                "allowed_domains": ["shop.example.com"],
                "require_identity": required,
            }),
        )
        .await
    }
}

async fn setup(app: &TestApp, shop: &str) -> Setup {
    let (owner, session) = app.owner(&email(shop), shop).await;
    let bot = app
        .create_bot(&session.bearer(), &owner.org_id, "Helper")
        .await;
    Setup {
        org: owner.org_id,
        owner: session.bearer(),
        bot,
    }
}

async fn start_chat(app: &TestApp, bot_key: &str) -> Value {
    let reply = app
        .send(
            app.client
                .post(app.url(&format!("/chat/v1/{bot_key}/sessions")))
                .header("origin", PAGE)
                .json(&json!({})),
        )
        .await;
    reply.expect(201);
    reply.json()
}

async fn chat_call(app: &TestApp, method: &str, path: &str, token: &str, body: Value) -> Reply {
    let request = match method {
        "GET" => app.client.get(app.url(path)),
        _ => app.client.post(app.url(path)).json(&body),
    };
    app.send(request.header("origin", PAGE).header("x-chat-token", token))
        .await
}

async fn verify(app: &TestApp, chat_token: &str, identity_token: &str) -> Reply {
    chat_call(
        app,
        "POST",
        "/chat/v1/identity",
        chat_token,
        json!({ "token": identity_token }),
    )
    .await
}

async fn channel_auth(app: &TestApp, token: &str, channel: &str) -> Reply {
    app.send(
        app.client
            .post(app.url("/chat/v1/auth"))
            .header("origin", PAGE)
            .header("x-chat-token", token)
            .form(&[("socket_id", "1234.5678"), ("channel_name", channel)]),
    )
    .await
}

/// The `reason` of each audit event with this action, oldest first.
async fn refusal_reasons(app: &TestApp, s: &Setup, action: &str) -> Vec<String> {
    let reply = app
        .get(&format!("/api/v1/orgs/{}/audit?limit=200", s.org), &s.owner)
        .await;
    reply.expect(200);
    let mut reasons: Vec<String> = reply.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .map(|e| e["details"]["reason"].as_str().unwrap_or("").to_owned())
        .collect();
    reasons.reverse();
    reasons
}

#[tokio::test]
async fn a_visitor_verified_by_the_owners_backend_gets_a_chat_only_that_identity_opens() {
    each_backend(async |app| {
        let s = setup(app, "Shop").await;
        let backend = Backend::es256();
        let key = s.trust(app, &backend).await;
        assert_eq!(key["algorithm"], "ES256");
        assert_eq!(key["fingerprint"].as_str().unwrap().len(), 64);

        let chat = start_chat(app, &s.bot.key).await;
        assert_eq!(chat["identity_required"], false);
        let anonymous = chat["token"].as_str().unwrap();
        let channel = chat["channel"].as_str().unwrap();
        chat_call(
            app,
            "POST",
            "/chat/v1/messages",
            anonymous,
            json!({ "text": "Where is my order?" }),
        )
        .await
        .expect(202);

        let verified = verify(
            app,
            anonymous,
            &backend.token_for("customer-42", &s.bot.key),
        )
        .await;
        verified.expect(200);
        let body = verified.json();
        assert_eq!(body["verified"], true);
        assert_eq!(body["user_id"], "customer-42");
        let bound = body["token"].as_str().unwrap();
        assert_ne!(bound, anonymous);

        // The bound token does everything; the chat so far is still there.
        channel_auth(app, bound, channel).await.expect(200);
        chat_call(
            app,
            "POST",
            "/chat/v1/messages",
            bound,
            json!({ "text": "Order 1234" }),
        )
        .await
        .expect(202);
        let history = chat_call(app, "GET", "/chat/v1/messages", bound, json!({})).await;
        history.expect(200);
        let texts: Vec<_> = history.json()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["sender"] == "visitor")
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(texts, ["Where is my order?", "Order 1234"]);

        // The unverified token no longer opens the verified visitor's chat: not to read, write
        // or subscribe.
        for reply in [
            chat_call(app, "GET", "/chat/v1/messages", anonymous, json!({})).await,
            chat_call(
                app,
                "POST",
                "/chat/v1/messages",
                anonymous,
                json!({ "text": "hi" }),
            )
            .await,
            chat_call(app, "POST", "/chat/v1/greeting", anonymous, json!({})).await,
            channel_auth(app, anonymous, channel).await,
        ] {
            reply.expect_error(403, "identity_mismatch");
        }
        // Another identity cannot take the chat over, with either token.
        for token in [anonymous, bound] {
            verify(app, token, &backend.token_for("mallory", &s.bot.key))
                .await
                .expect_error(403, "identity_mismatch");
        }
        // The same identity may verify again (a new page load), which also rebinds an old token.
        verify(
            app,
            anonymous,
            &backend.token_for("customer-42", &s.bot.key),
        )
        .await
        .expect(200);

        let actions = app.audit_actions(&s.owner, &s.org).await;
        assert!(actions.contains(&"bot.identity_key_added".to_owned()));
        assert!(actions.contains(&"chat.identity_verified".to_owned()));
        let reasons = refusal_reasons(app, &s, "chat.identity_refused").await;
        assert_eq!(
            reasons,
            [
                "token_not_verified",
                "token_not_verified",
                "token_not_verified",
                "token_not_verified",
                "other_identity",
                "other_identity",
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn identity_tokens_that_are_forged_expired_or_for_another_bot_are_refused_and_audited() {
    each_backend(async |app| {
        let s = setup(app, "Shop").await;
        let other = setup(app, "Other").await;
        let backend = Backend::rs256();
        let key = s.trust(app, &backend).await;
        assert_eq!(key["algorithm"], "RS256");
        let chat = start_chat(app, &s.bot.key).await;
        let token = chat["token"].as_str().unwrap();
        let chat_id = chat["chat_id"].as_str().unwrap();
        let now = now();

        let stranger = Backend::rs256();
        let hs256 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({ "sub": "x", "aud": s.bot.key, "exp": now + 60 }),
            &EncodingKey::from_secret(key["public_key_pem"].as_str().unwrap().as_bytes()),
        )
        .unwrap();
        let cases = [
            (stranger.token_for("customer-42", &s.bot.key), "signature"),
            (backend.token_for("customer-42", &other.bot.key), "audience"),
            (
                backend.sign(json!({ "sub": "customer-42", "aud": s.bot.key, "iat": now - 900, "exp": now - 300 })),
                "expired",
            ),
            (
                backend.sign(json!({ "sub": "customer-42", "aud": s.bot.key, "iat": now, "exp": now + 30 * 86_400 })),
                "lifetime",
            ),
            (
                backend.sign(json!({ "aud": s.bot.key, "iat": now, "exp": now + 60 })),
                "subject",
            ),
            (
                backend.sign(json!({ "sub": "c", "aud": s.bot.key, "exp": now + 60, "chat_id": "another" })),
                "other_chat",
            ),
            (hs256, "algorithm"),
            ("not.a.jwt".to_owned(), "malformed"),
        ];
        for (identity_token, _) in &cases {
            verify(app, token, identity_token)
                .await
                .expect_error(403, "invalid_identity_token");
        }
        let expected: Vec<&str> = cases.iter().map(|(_, reason)| *reason).collect();
        assert_eq!(refusal_reasons(app, &s, "chat.identity_refused").await, expected);

        // Still unverified: the chat works anonymously as before.
        chat_call(app, "GET", "/chat/v1/messages", token, json!({}))
            .await
            .expect(200);
        // A token bound to this very chat is accepted.
        verify(
            app,
            token,
            &backend.sign(json!({ "sub": "c", "aud": s.bot.key, "exp": now + 60, "chat_id": chat_id })),
        )
        .await
        .expect(200);
    })
    .await;
}

#[tokio::test]
async fn a_bot_that_requires_identity_serves_verified_visitors_only() {
    each_backend(async |app| {
        let s = setup(app, "Shop").await;
        // Requiring identity with no key to verify with would turn everyone away.
        s.require_identity(app, true)
            .await
            .expect_error(409, "no_identity_keys");
        let chat = start_chat(app, &s.bot.key).await;
        verify(app, chat["token"].as_str().unwrap(), "x.y.z")
            .await
            .expect_error(409, "identity_not_configured");

        let backend = Backend::es256();
        let key = s.trust(app, &backend).await;
        s.require_identity(app, true).await.expect(200);
        // A client that does not know the field saves the settings: the requirement stays.
        let older = app
            .put(
                &s.settings_path(),
                &s.owner,
                json!({ "greeting": "Welcome back!", "fallback_reply": "Let me check.",
                        "allowed_domains": ["shop.example.com"] }),
            )
            .await;
        older.expect(200);
        assert_eq!(older.json()["require_identity"], true);
        let chat = start_chat(app, &s.bot.key).await;
        assert_eq!(chat["identity_required"], true);
        let anonymous = chat["token"].as_str().unwrap();
        let channel = chat["channel"].as_str().unwrap();
        chat_call(app, "POST", "/chat/v1/greeting", anonymous, json!({}))
            .await
            .expect_error(403, "identity_required");
        channel_auth(app, anonymous, channel)
            .await
            .expect_error(403, "identity_required");

        let verified = verify(app, anonymous, &backend.token_for("customer-7", &s.bot.key)).await;
        verified.expect(200);
        let bound = verified.json()["token"].as_str().unwrap().to_owned();
        channel_auth(app, &bound, channel).await.expect(200);
        chat_call(app, "POST", "/chat/v1/greeting", &bound, json!({}))
            .await
            .expect(202);

        // The last key cannot go while the bot requires identity; after turning that off it can.
        let key_path = format!("{}/{}", s.keys_path(), key["id"].as_str().unwrap());
        app.delete(&key_path, &s.owner)
            .await
            .expect_error(409, "identity_required");
        s.require_identity(app, false).await.expect(200);
        app.delete(&key_path, &s.owner).await.expect(204);
        let list = app.get(&s.keys_path(), &s.owner).await;
        list.expect(200);
        assert_eq!(list.json()["keys"], json!([]));
        // Tokens it signed are refused from now on.
        verify(app, anonymous, &backend.token_for("customer-7", &s.bot.key))
            .await
            .expect_error(409, "identity_not_configured");
    })
    .await;
}

#[tokio::test]
async fn only_supported_public_keys_are_trusted_once_each() {
    each_backend(async |app| {
        let s = setup(app, "Shop").await;
        let backend = Backend::es256();
        s.trust(app, &backend).await;
        let keys_path = s.keys_path();
        let upload = |pem: String| {
            app.post(
                &keys_path,
                &s.owner,
                json!({ "name": "k", "public_key_pem": pem }),
            )
        };
        upload(backend.public_pem.clone())
            .await
            .expect_error(409, "key_exists");
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let private = pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            pair.to_pkcs8v1().unwrap().as_ref().to_vec(),
        ));
        let refused = upload(private).await;
        refused.expect_error(422, "invalid_public_key");
        assert!(refused.text.contains("private key"), "{}", refused.text);
        upload("hello".into())
            .await
            .expect_error(422, "invalid_public_key");
        for _ in 0..4 {
            s.trust(app, &Backend::es256()).await;
        }
        upload(Backend::es256().public_pem)
            .await
            .expect_error(409, "too_many_keys");

        // Another organization's owner sees nothing of it.
        let other = setup(app, "Other").await;
        app.get(&s.keys_path(), &other.owner)
            .await
            .expect_error(404, "not_found");
    })
    .await;
}
