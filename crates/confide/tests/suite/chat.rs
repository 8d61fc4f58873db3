//! The chat widget's API through HTTP: starting a chat, authorizing its private channel, and the
//! chat token's refusals (tampered, expired, another bot's, another chat's), each audited.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{Credential, Reply, TestApp, each_backend, email};
use confide_security::chat_token::{ChatClaims, ChatTokenKeys};
use reqwest::Method;
use serde_json::{Value, json};

const PAGE: &str = "https://shop.example.com";

async fn start_chat(app: &TestApp, bot_key: &str, origin: Option<&str>) -> Reply {
    let mut request = app
        .client
        .post(app.url(&format!("/chat/v1/{bot_key}/sessions")))
        .json(&json!({}));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    reply(request.send().await.expect("request")).await
}

async fn reply(response: reqwest::Response) -> Reply {
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        text: response.text().await.expect("body"),
    }
}

async fn channel_auth(app: &TestApp, token: &str, channel: &str, origin: Option<&str>) -> Reply {
    let mut request = app
        .client
        .post(app.url("/chat/v1/auth"))
        .header("x-chat-token", token)
        .form(&[("socket_id", "1234.5678"), ("channel_name", channel)]);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    reply(request.send().await.expect("request")).await
}

async fn send(app: &TestApp, token: &str, text: &str) -> Reply {
    reply(
        app.client
            .post(app.url("/chat/v1/messages"))
            .header("x-chat-token", token)
            .header("origin", PAGE)
            .json(&json!({ "text": text }))
            .send()
            .await
            .expect("request"),
    )
    .await
}

/// Audit actions of one chain, read straight from the database.
async fn audit_actions(app: &TestApp, chain: &str) -> Vec<String> {
    let db = app.database().await;
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT action FROM audit_events WHERE chain = $1 ORDER BY seq")
            .bind(chain)
            .fetch_all(&db)
            .await
            .expect("audit rows");
    db.close().await;
    rows.into_iter().map(|(a,)| a).collect()
}

struct Setup {
    org: String,
    owner: Credential,
    bot: common::CreatedBot,
}

async fn setup(app: &TestApp) -> Setup {
    let (owner, session) = app.owner(&email("owner"), "Shop").await;
    let bot = app
        .create_bot(&session.bearer(), &owner.org_id, "Helper")
        .await;
    app.put(
        &format!(
            "/api/v1/orgs/{}/bots/{}/chat-settings",
            owner.org_id, bot.id
        ),
        &session.bearer(),
        json!({
            "greeting": "Welcome to the shop!",
            "fallback_reply": "Let me find someone who knows.",
            "allowed_domains": ["shop.example.com", "*.shop.example.com"],
        }),
    )
    .await
    .expect(200);
    Setup {
        org: owner.org_id,
        owner: session.bearer(),
        bot,
    }
}

#[tokio::test]
async fn a_visitor_starts_a_chat_authorizes_its_channel_and_gets_the_configured_replies() {
    each_backend(async |app| {
        let s = setup(app).await;
        let session = start_chat(app, &s.bot.key, Some(PAGE)).await;
        session.expect(201);
        let body = session.json();
        let channel = body["channel"].as_str().unwrap();
        let token = body["token"].as_str().unwrap();
        assert_eq!(
            channel,
            format!("private-chat-{}", body["chat_id"].as_str().unwrap())
        );
        assert_eq!(body["realtime"]["app_key"], s.bot.key.as_str());

        let auth = channel_auth(app, token, channel, Some(PAGE)).await;
        auth.expect(200);
        let signed = auth.json()["auth"].as_str().unwrap().to_owned();
        assert!(signed.starts_with(&format!("{}:", s.bot.key)), "{signed}");
        assert_eq!(signed.len(), s.bot.key.len() + 1 + 64);

        let greeting = app
            .client
            .post(app.url("/chat/v1/greeting"))
            .header("x-chat-token", token)
            .header("origin", PAGE)
            .send()
            .await
            .unwrap();
        let greeting = reply(greeting).await;
        greeting.expect(202);
        assert_eq!(greeting.json()["message"]["text"], "Welcome to the shop!");

        let posted = send(app, token, "  Do you ship to Norway?  ").await;
        posted.expect(202);
        let posted = posted.json();
        assert_eq!(posted["message"]["text"], "Do you ship to Norway?");
        assert_eq!(posted["message"]["sender"], "visitor");
        assert_eq!(posted["reply"]["text"], "Let me find someone who knows.");
        assert_eq!(posted["reply"]["sender"], "bot");

        // A widget that was offline catches up from the history.
        let history = reply(
            app.client
                .get(app.url("/chat/v1/messages"))
                .header("x-chat-token", token)
                .header("origin", PAGE)
                .send()
                .await
                .unwrap(),
        )
        .await;
        history.expect(200);
        let texts: Vec<String> = history.json()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            texts,
            [
                "Welcome to the shop!",
                "Do you ship to Norway?",
                "Let me find someone who knows."
            ]
        );

        send(app, token, "   ").await.expect(422);
        send(app, token, &"x".repeat(2001)).await.expect(422);
    })
    .await;
}

#[tokio::test]
async fn a_page_outside_the_allowed_domains_cannot_start_or_authorize_a_chat() {
    each_backend(async |app| {
        let s = setup(app).await;
        for origin in [
            Some("https://evil.example.net"),
            Some("https://example.com"),
            None,
        ] {
            let refused = start_chat(app, &s.bot.key, origin).await;
            refused.expect(403);
            assert_eq!(refused.code(), "origin_not_allowed");
        }
        start_chat(app, &s.bot.key, Some("https://eu.shop.example.com"))
            .await
            .expect(201);

        let body = start_chat(app, &s.bot.key, Some(PAGE)).await.json();
        let (token, channel) = (
            body["token"].as_str().unwrap(),
            body["channel"].as_str().unwrap(),
        );
        let refused = channel_auth(app, token, channel, Some("https://evil.example.net")).await;
        refused.expect(403);
        assert_eq!(refused.code(), "origin_not_allowed");
        assert!(
            audit_actions(app, &s.org)
                .await
                .iter()
                .any(|a| a == "chat.origin_refused")
        );

        start_chat(app, "no-such-bot-key", Some(PAGE))
            .await
            .expect(404);
    })
    .await;
}

#[tokio::test]
async fn tampered_expired_and_foreign_chat_tokens_are_refused_and_audited() {
    each_backend(async |app| {
        let s = setup(app).await;
        let first = start_chat(app, &s.bot.key, Some(PAGE)).await.json();
        let second = start_chat(app, &s.bot.key, Some(PAGE)).await.json();
        let token = first["token"].as_str().unwrap();
        let channel = first["channel"].as_str().unwrap();

        // Tampered: one character of the sealed part changed.
        let mut tampered = token.to_owned().into_bytes();
        let last = tampered.len() - 5;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let refused = channel_auth(app, &tampered, channel, Some(PAGE)).await;
        refused.expect(403);
        assert_eq!(refused.code(), "invalid_chat_token");
        send(app, &tampered, "hi").await.expect(403);

        // Another chat: a valid token cannot open a different chat's channel.
        let other_channel = second["channel"].as_str().unwrap();
        let refused = channel_auth(app, token, other_channel, Some(PAGE)).await;
        refused.expect(403);
        assert_eq!(refused.code(), "channel_mismatch");

        // Another bot: a chat of a second bot cannot be opened with this bot's token.
        let other_bot = app.create_bot(&s.owner, &s.org, "Other").await;
        let theirs = start_chat(app, &other_bot.key, Some(PAGE)).await.json();
        let refused =
            channel_auth(app, token, theirs["channel"].as_str().unwrap(), Some(PAGE)).await;
        refused.expect(403);
        assert_eq!(refused.code(), "channel_mismatch");

        // Expired: sealed with the server's own key, but its time is up.
        let key_text = std::fs::read_to_string(app.data_dir.join("keys/chat-token.key")).unwrap();
        let key: [u8; 32] = base64_decode(key_text.trim()).try_into().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let original = first["chat_id"].as_str().unwrap().to_owned();
        let expired = ChatTokenKeys::new(&key, &[])
            .seal(&ChatClaims {
                org: s.org.clone(),
                bot: s.bot.id.clone(),
                chat: original,
                visitor: "v".into(),
                origin: Some(PAGE.into()),
                iat: now - 7200,
                exp: now - 60,
                sub: None,
                lang: None,
            })
            .unwrap();
        let refused = channel_auth(app, &expired, channel, Some(PAGE)).await;
        refused.expect(403);
        assert_eq!(refused.code(), "invalid_chat_token");

        // Missing.
        let no_token = app
            .client
            .post(app.url("/chat/v1/messages"))
            .json(&json!({ "text": "hi" }))
            .send()
            .await
            .unwrap();
        assert_eq!(no_token.status(), 403);

        let platform = audit_actions(app, "platform").await;
        let org = audit_actions(app, &s.org).await;
        let refusals = platform
            .iter()
            .chain(org.iter())
            .filter(|a| *a == "chat.token_refused")
            .count();
        assert!(
            refusals >= 5,
            "every refusal is audited: {platform:?} {org:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn chat_settings_validate_domains_and_need_write_permission() {
    each_backend(async |app| {
        let s = setup(app).await;
        let path = format!("/api/v1/orgs/{}/bots/{}/chat-settings", s.org, s.bot.id);
        for bad in ["com", "*.com", "exa mple.com", "https://shop.example.com"] {
            let refused = app
                .put(
                    &path,
                    &s.owner,
                    json!({ "greeting": "Hi", "fallback_reply": "Hm", "allowed_domains": [bad] }),
                )
                .await;
            refused.expect(422);
            assert_eq!(refused.code(), "invalid_domain", "{bad}");
        }
        let current: Value = app.get(&path, &s.owner).await.json();
        assert_eq!(
            current["allowed_domains"],
            json!(["shop.example.com", "*.shop.example.com"])
        );
        let anonymous = app
            .call(Method::GET, &path, &Credential::Anonymous, None)
            .await;
        anonymous.expect(401);
    })
    .await;
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

async fn put_restrictions(app: &TestApp, s: &Setup, restrictions: Value) -> Reply {
    app.put(
        &format!("/api/v1/orgs/{}/bots/{}/chat-settings", s.org, s.bot.id),
        &s.owner,
        json!({
            "greeting": "Welcome to the shop!",
            "fallback_reply": "Let me find someone who knows.",
            "allowed_domains": ["shop.example.com"],
            "restrictions": restrictions,
        }),
    )
    .await
}

#[tokio::test]
async fn ip_deny_and_allow_lists_decide_who_may_chat() {
    each_backend(async |app| {
        let s = setup(app).await;
        let body = start_chat(app, &s.bot.key, Some(PAGE)).await.json();
        let token = body["token"].as_str().unwrap().to_owned();

        // The test client is 127.0.0.1.
        put_restrictions(app, &s, json!({ "ip_deny": ["127.0.0.0/8"] }))
            .await
            .expect(200);
        let refused = start_chat(app, &s.bot.key, Some(PAGE)).await;
        refused.expect(403);
        assert_eq!(refused.code(), "ip_not_allowed");
        // A chat already open is cut off too.
        let refused = send(app, &token, "still there?").await;
        refused.expect(403);
        assert_eq!(refused.code(), "ip_not_allowed");
        assert!(
            audit_actions(app, &s.org)
                .await
                .iter()
                .any(|a| a == "chat.ip_refused")
        );

        put_restrictions(
            app,
            &s,
            json!({ "ip_allow": ["10.0.0.0/8", "2001:db8::/32"] }),
        )
        .await
        .expect(200);
        start_chat(app, &s.bot.key, Some(PAGE)).await.expect(403);

        put_restrictions(
            app,
            &s,
            json!({ "ip_allow": ["127.0.0.1"], "ip_deny": ["10.0.0.0/8"] }),
        )
        .await
        .expect(200);
        start_chat(app, &s.bot.key, Some(PAGE)).await.expect(201);

        let bad = put_restrictions(app, &s, json!({ "ip_deny": ["not-a-network"] })).await;
        bad.expect(422);
        assert_eq!(bad.code(), "invalid_restrictions");
    })
    .await;
}

#[tokio::test]
async fn outside_active_hours_a_chat_cannot_start_and_the_bots_message_is_shown() {
    each_backend(async |app| {
        let s = setup(app).await;
        let days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
        // 1970-01-01 was a Thursday (index 3 from Monday).
        let today = ((std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 86_400
            + 3)
            % 7) as usize;
        // Open all day, but only on a day that is not today (nor the days around it, in case the
        // test runs across midnight).
        let other_day = days[(today + 3) % 7];
        put_restrictions(
            app,
            &s,
            json!({
                "timezone": "UTC",
                "active_hours": [{ "day": other_day, "start": "00:00", "end": "24:00" }],
                "outside_hours_message": "We are open on another day. Write to help@shop.example.com.",
            }),
        )
        .await
        .expect(200);
        let refused = start_chat(app, &s.bot.key, Some(PAGE)).await;
        refused.expect(403);
        assert_eq!(refused.code(), "outside_active_hours");
        assert_eq!(
            refused.json()["error"]["message"],
            "We are open on another day. Write to help@shop.example.com."
        );

        let every_day: Vec<Value> = days
            .iter()
            .map(|d| json!({ "day": d, "start": "00:00", "end": "24:00" }))
            .collect();
        put_restrictions(app, &s, json!({ "timezone": "Pacific/Auckland", "active_hours": every_day }))
            .await
            .expect(200);
        start_chat(app, &s.bot.key, Some(PAGE)).await.expect(201);

        let bad = put_restrictions(app, &s, json!({ "timezone": "Mars/Olympus_Mons" })).await;
        bad.expect(422);
        assert_eq!(bad.code(), "invalid_timezone");
        let bad = put_restrictions(
            app,
            &s,
            json!({ "active_hours": [{ "day": "monday", "start": "24:00", "end": "09:00" }] }),
        )
        .await;
        bad.expect(422);
    })
    .await;
}

#[tokio::test]
async fn chats_from_crawlers_and_headless_browsers_are_flagged_for_statistics() {
    each_backend(async |app| {
        let s = setup(app).await;
        let mut flagged = Vec::new();
        for agent in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/131.0 Safari/537.36",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
        ] {
            let response = app
                .client
                .post(app.url(&format!("/chat/v1/{}/sessions", s.bot.key)))
                .header("origin", PAGE)
                .header("user-agent", agent)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let body = reply(response).await;
            body.expect(201);
            let chat = body.json()["chat_id"].as_str().unwrap().to_owned();
            let db = app.database().await;
            let (automated,): (Option<String>,) =
                sqlx::query_as("SELECT automated FROM conversations WHERE id = $1")
                    .bind(&chat)
                    .fetch_one(&db)
                    .await
                    .unwrap();
            db.close().await;
            flagged.push(automated);
        }
        assert_eq!(
            flagged,
            vec![Some("crawler".to_owned()), Some("headless".to_owned()), None]
        );
    })
    .await;
}

#[tokio::test]
async fn chats_are_rate_limited_per_chat_and_per_bot_whatever_the_address() {
    let configure = |config: &mut confide::config::Config| {
        config.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        config.rate_limits.messages_per_chat_per_minute = 3;
        config.rate_limits.chats_per_bot_per_minute = 3;
    };
    common::each_backend_with(configure, async |app| {
        let s = setup(app).await;
        let start_from = |ip: &'static str| {
            app.client
                .post(app.url(&format!("/chat/v1/{}/sessions", s.bot.key)))
                .header("origin", PAGE)
                .header("x-forwarded-for", ip)
                .json(&json!({}))
        };
        let first = app.send(start_from("203.0.113.1")).await;
        first.expect(201);
        let second = app.send(start_from("203.0.113.2")).await;
        second.expect(201);
        let token = first.json()["token"].as_str().unwrap().to_owned();
        let other = second.json()["token"].as_str().unwrap().to_owned();

        // Per chat: the fourth message within the minute is refused; another chat goes on.
        for i in 0..3 {
            send(app, &token, &format!("question {i}"))
                .await
                .expect(202);
        }
        let limited = send(app, &token, "question 3").await;
        limited.expect_error(429, "rate_limited");
        assert!(limited.header("retry-after").is_some());
        send(app, &other, "hello").await.expect(202);

        // Per bot: new chats from all addresses together.
        app.send(start_from("203.0.113.3")).await.expect(201);
        app.send(start_from("203.0.113.4"))
            .await
            .expect_error(429, "rate_limited");
        // Another bot of the shop is not affected.
        let other_bot = app.create_bot(&s.owner, &s.org, "Second helper").await;
        app.send(
            app.client
                .post(app.url(&format!("/chat/v1/{}/sessions", other_bot.key)))
                .header("x-forwarded-for", "203.0.113.4")
                .json(&json!({})),
        )
        .await
        .expect(201);
        let hits = audit_actions(app, "platform").await;
        assert!(
            hits.iter().filter(|a| *a == "rate_limit.hit").count() >= 2,
            "{hits:?}"
        );
    })
    .await;
}
