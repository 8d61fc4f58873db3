//! Spam protection through HTTP: repeats, bursts and link floods earn the sender's address a
//! temporary block that escalates to the persistent blacklist; an organization's trusted
//! addresses always win; owners and admins manage both lists, and everything is audited.
//!
//! Visitors are told apart by `X-Forwarded-For`, which the server honours from the test client
//! because 127.0.0.0/8 is configured as a trusted proxy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{Credential, Reply, TestApp, each_backend_with, email};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Frame;

const PAGE: &str = "https://shop.example.com";

struct Shop {
    org: String,
    owner: Credential,
    bot_id: String,
    bot_key: String,
}

async fn shop(app: &TestApp, name: &str) -> Shop {
    let (owner, session) = app.owner(&email(name), name).await;
    let bot = app
        .create_bot(&session.bearer(), &owner.org_id, "Helper")
        .await;
    Shop {
        org: owner.org_id,
        owner: session.bearer(),
        bot_id: bot.id,
        bot_key: bot.key,
    }
}

/// One visitor at one address.
struct Visitor<'a> {
    app: &'a TestApp,
    ip: &'static str,
}

impl Visitor<'_> {
    async fn start(&self, bot_key: &str) -> Reply {
        self.app
            .send(
                self.app
                    .client
                    .post(self.app.url(&format!("/chat/v1/{bot_key}/sessions")))
                    .header("origin", PAGE)
                    .header("x-forwarded-for", self.ip)
                    .json(&json!({})),
            )
            .await
    }

    async fn chat(&self, bot_key: &str) -> String {
        let reply = self.start(bot_key).await;
        reply.expect(201);
        reply.json()["token"].as_str().unwrap().to_owned()
    }

    async fn say(&self, token: &str, text: &str) -> Reply {
        self.app
            .send(
                self.app
                    .client
                    .post(self.app.url("/chat/v1/messages"))
                    .header("origin", PAGE)
                    .header("x-forwarded-for", self.ip)
                    .header("x-chat-token", token)
                    .json(&json!({ "text": text })),
            )
            .await
    }
}

fn trusting_loopback(config: &mut confide::config::Config) {
    config.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
}

async fn blocks(app: &TestApp, s: &Shop) -> Vec<Value> {
    let reply = app
        .get(
            &format!("/api/v1/orgs/{}/blocked-addresses", s.org),
            &s.owner,
        )
        .await;
    reply.expect(200);
    reply.json()["blocks"].as_array().unwrap().clone()
}

/// Audit events of the organization with this action, oldest first.
async fn audited(app: &TestApp, s: &Shop, action: &str) -> Vec<Value> {
    let reply = app
        .get(&format!("/api/v1/orgs/{}/audit?limit=200", s.org), &s.owner)
        .await;
    reply.expect(200);
    let mut events: Vec<Value> = reply.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect();
    events.reverse();
    events
}

/// Lets every block of the organization run out, as if its time had passed.
async fn expire_blocks(app: &TestApp) {
    let db = app.database().await;
    sqlx::query("UPDATE address_blocks SET expires_at = created_at WHERE expires_at IS NOT NULL")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
}

#[tokio::test]
async fn the_same_message_over_and_over_gets_the_address_blocked_for_a_while() {
    each_backend_with(trusting_loopback, async |app| {
        let s = shop(app, "Shop").await;
        let spammer = Visitor {
            app,
            ip: "203.0.113.5",
        };
        let neighbour = Visitor {
            app,
            ip: "203.0.113.6",
        };
        let token = spammer.chat(&s.bot_key).await;
        let other_token = neighbour.chat(&s.bot_key).await;
        for _ in 0..3 {
            spammer.say(&token, "Cheap  watches!").await.expect(202);
        }
        // Case and spacing do not make it a new message.
        spammer
            .say(&token, "cheap watches!")
            .await
            .expect_error(403, "spam_detected");

        // From now on the address is refused everywhere, even for a new chat.
        spammer
            .say(&token, "hello?")
            .await
            .expect_error(403, "address_blocked");
        spammer
            .start(&s.bot_key)
            .await
            .expect_error(403, "address_blocked");
        // Other visitors chat on.
        neighbour
            .say(&other_token, "Cheap watches!")
            .await
            .expect(202);

        let listed = blocks(app, &s).await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["network"], "203.0.113.5/32");
        assert_eq!(listed[0]["reason"], "repeats");
        assert_eq!(listed[0]["source"], "automatic");
        assert_eq!(listed[0]["persistent"], false);
        let spam = audited(app, &s, "chat.spam_blocked").await;
        assert_eq!(spam.len(), 1);
        assert_eq!(spam[0]["details"]["reason"], "repeats");
        assert_eq!(spam[0]["details"]["minutes"], 10);
        assert!(!audited(app, &s, "chat.address_refused").await.is_empty());

        // When the block runs out, the address may chat again.
        expire_blocks(app).await;
        spammer
            .say(&token, "sorry, a real question")
            .await
            .expect(202);
        assert!(blocks(app, &s).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn link_floods_and_bursts_are_spam_too() {
    each_backend_with(trusting_loopback, async |app| {
        let s = shop(app, "Shop").await;
        let linker = Visitor {
            app,
            ip: "198.51.100.1",
        };
        let token = linker.chat(&s.bot_key).await;
        linker
            .say(&token, "see https://a.example and http://b.example")
            .await
            .expect(202);
        linker
            .say(
                &token,
                "https://a.example https://b.example www.c.example http://d.example",
            )
            .await
            .expect_error(403, "spam_detected");

        let chatty = Visitor {
            app,
            ip: "198.51.100.2",
        };
        let first = chatty.chat(&s.bot_key).await;
        let second = chatty.chat(&s.bot_key).await;
        // Eight messages in a few seconds, spread over two chats, are still a person typing fast.
        for i in 0..8 {
            let token = if i % 2 == 0 { &first } else { &second };
            chatty
                .say(token, &format!("question {i}"))
                .await
                .expect(202);
        }
        chatty
            .say(&first, "question 8")
            .await
            .expect_error(403, "spam_detected");

        let reasons: Vec<String> = audited(app, &s, "chat.spam_blocked")
            .await
            .iter()
            .map(|e| e["details"]["reason"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(reasons, ["links", "burst"]);
    })
    .await;
}

#[tokio::test]
async fn repeated_blocks_escalate_to_the_persistent_blacklist() {
    each_backend_with(trusting_loopback, async |app| {
        let s = shop(app, "Shop").await;
        let spammer = Visitor {
            app,
            ip: "2001:db8::7",
        };
        let token = spammer.chat(&s.bot_key).await;
        for _ in 0..3 {
            spammer.say(&token, "buy now").await.expect(202);
        }
        let mut minutes = Vec::new();
        for round in 0..3 {
            spammer
                .say(&token, "buy now")
                .await
                .expect_error(403, "spam_detected");
            let listed = blocks(app, &s).await;
            assert_eq!(listed.len(), 1, "round {round}: {listed:?}");
            assert_eq!(listed[0]["network"], "2001:db8::7/128");
            minutes.push(listed[0]["persistent"].clone());
            expire_blocks(app).await;
        }
        assert_eq!(minutes, [json!(false), json!(false), json!(true)]);
        let spam: Vec<Value> = audited(app, &s, "chat.spam_blocked")
            .await
            .iter()
            .map(|e| e["details"]["minutes"].clone())
            .collect();
        assert_eq!(spam, [json!(10), json!(60)]);
        assert_eq!(audited(app, &s, "chat.address_blacklisted").await.len(), 1);
        // Blacklisted: time does not help.
        spammer
            .start(&s.bot_key)
            .await
            .expect_error(403, "address_blocked");

        // An admin can lift it.
        let id = blocks(app, &s).await[0]["id"].as_str().unwrap().to_owned();
        app.delete(
            &format!("/api/v1/orgs/{}/blocked-addresses/{id}", s.org),
            &s.owner,
        )
        .await
        .expect(204);
        spammer.start(&s.bot_key).await.expect(201);
        assert_eq!(audited(app, &s, "spam.block_lifted").await.len(), 1);
    })
    .await;
}

#[tokio::test]
async fn trusted_addresses_always_win() {
    each_backend_with(trusting_loopback, async |app| {
        let s = shop(app, "Shop").await;
        let office = Visitor {
            app,
            ip: "192.0.2.44",
        };
        let token = office.chat(&s.bot_key).await;
        // A manual block of the whole network, and the office inside it trusted.
        app.post(
            &format!("/api/v1/orgs/{}/blocked-addresses", s.org),
            &s.owner,
            json!({ "network": "192.0.2.0/24", "note": "abuse reports" }),
        )
        .await
        .expect(201);
        office
            .say(&token, "hello")
            .await
            .expect_error(403, "address_blocked");
        let trusted = app
            .post(
                &format!("/api/v1/orgs/{}/trusted-addresses", s.org),
                &s.owner,
                json!({ "network": "192.0.2.40/29", "note": "Head office" }),
            )
            .await;
        trusted.expect(201);
        assert_eq!(trusted.json()["network"], "192.0.2.40/29");
        // Trusted: not blocked, and never screened (a test script repeating itself).
        for _ in 0..12 {
            office.say(&token, "ping").await.expect(202);
        }
        // Still blocked: the rest of the network.
        Visitor {
            app,
            ip: "192.0.2.1",
        }
        .start(&s.bot_key)
        .await
        .expect_error(403, "address_blocked");

        // Removing the trust brings the block back.
        let id = trusted.json()["id"].as_str().unwrap().to_owned();
        app.delete(
            &format!("/api/v1/orgs/{}/trusted-addresses/{id}", s.org),
            &s.owner,
        )
        .await
        .expect(204);
        office
            .say(&token, "ping")
            .await
            .expect_error(403, "address_blocked");
        let list = app
            .get(
                &format!("/api/v1/orgs/{}/trusted-addresses", s.org),
                &s.owner,
            )
            .await;
        list.expect(200);
        assert_eq!(list.json()["trusted"], json!([]));
        let actions = app.audit_actions(&s.owner, &s.org).await;
        for action in [
            "spam.block_added",
            "spam.trusted_added",
            "spam.trusted_removed",
        ] {
            assert!(
                actions.contains(&action.to_owned()),
                "{action}: {actions:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn lists_are_validated_and_belong_to_one_organization() {
    each_backend_with(trusting_loopback, async |app| {
        let s = shop(app, "Shop").await;
        let other = shop(app, "Other").await;
        let path = format!("/api/v1/orgs/{}/blocked-addresses", s.org);
        for (body, code) in [
            (json!({ "network": "not-an-ip" }), "invalid_network"),
            (json!({ "network": "10.0.0.0/33" }), "invalid_network"),
            (
                json!({ "network": "10.0.0.1", "duration_minutes": 0 }),
                "invalid_duration",
            ),
            (
                json!({ "network": "10.0.0.1", "note": "a\u{7}b" }),
                "invalid_note",
            ),
            // Trimming must not hide a control character at either end.
            (
                json!({ "network": "10.0.0.1", "note": "\rnote\n" }),
                "invalid_note",
            ),
        ] {
            app.post(&path, &s.owner, body)
                .await
                .expect_error(422, code);
        }
        let timed = app
            .post(
                &path,
                &s.owner,
                json!({ "network": "10.1.2.3/16", "duration_minutes": 30 }),
            )
            .await;
        timed.expect(201);
        assert_eq!(timed.json()["network"], "10.1.0.0/16");
        assert_eq!(timed.json()["persistent"], false);
        let trusted_path = format!("/api/v1/orgs/{}/trusted-addresses", s.org);
        app.post(&trusted_path, &s.owner, json!({ "network": "10.9.0.0/16" }))
            .await
            .expect(201);
        app.post(&trusted_path, &s.owner, json!({ "network": "10.9.1.1/16" }))
            .await
            .expect_error(409, "already_trusted");

        // The block is the organization's own: another shop's visitors from there chat on.
        Visitor {
            app,
            ip: "10.1.200.200",
        }
        .start(&s.bot_key)
        .await
        .expect_error(403, "address_blocked");
        Visitor {
            app,
            ip: "10.1.200.200",
        }
        .start(&other.bot_key)
        .await
        .expect(201);
        assert!(blocks(app, &other).await.is_empty());
        // And another organization's owner cannot see or lift it.
        let id = timed.json()["id"].as_str().unwrap().to_owned();
        app.delete(&format!("{path}/{id}"), &other.owner)
            .await
            .expect_error(404, "not_found");
    })
    .await;
}

#[tokio::test]
async fn the_same_nudge_answer_over_and_over_is_spam_too() {
    each_backend_with(trusting_loopback, async |app| {
        let s = shop(app, "Shop").await;
        let bots = app
            .get(&format!("/api/v1/orgs/{}/bots", s.org), &s.owner)
            .await;
        let bot = bots.json()["bots"][0]["id"].as_str().unwrap().to_owned();
        let nudge = app
            .post(
                &format!("/api/v1/orgs/{}/bots/{bot}/nudges", s.org),
                &s.owner,
                json!({ "name": "Survey", "title": "Tell us", "text": "Anything?",
                        "form": { "label": "Say it", "input": "text", "button": "Send" } }),
            )
            .await;
        nudge.expect(201);
        let id = nudge.json()["id"].as_str().unwrap().to_owned();
        let spammer = Visitor {
            app,
            ip: "203.0.113.7",
        };
        let token = spammer.chat(&s.bot_key).await;
        let answer = async |value: &str| {
            app.send(
                app.client
                    .post(app.url(&format!("/chat/v1/nudges/{id}/submit")))
                    .header("origin", PAGE)
                    .header("x-forwarded-for", spammer.ip)
                    .header("x-chat-token", &token)
                    .json(&json!({ "value": value })),
            )
            .await
        };
        for _ in 0..3 {
            answer("Cheap watches!").await.expect(202);
        }
        answer("cheap  watches!")
            .await
            .expect_error(403, "spam_detected");
        spammer
            .say(&token, "hello?")
            .await
            .expect_error(403, "address_blocked");
    })
    .await;
}

/// Opens the bot's widget socket from 127.0.0.1; answers the close code the server ends it with.
async fn handshake_closed_with(app: &TestApp, bot_key: &str) -> u16 {
    let url = app
        .url(&format!(
            "/app/{bot_key}?protocol=7&client=test&version=1.0"
        ))
        .replacen("http://", "ws://", 1);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), socket.next())
            .await
            .expect("the server answers the handshake");
        match frame {
            Some(Ok(Frame::Close(close))) => return close.map_or(1005, |c| u16::from(c.code)),
            Some(Ok(Frame::Text(text))) => {
                let event: Value = serde_json::from_str(text.as_str()).unwrap();
                assert_eq!(event["event"], "pusher:error", "{event}");
            }
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_blocked_address_is_refused_its_widget_socket_and_audited_a_few_times_a_minute() {
    each_backend_with(
        |_| {},
        async |app| {
            let s = shop(app, "sockets").await;
            app.post(
                &format!("/api/v1/orgs/{}/blocked-addresses", s.org),
                &s.owner,
                json!({ "network": "127.0.0.0/8" }),
            )
            .await
            .expect(201);
            // A client that reconnects in a loop.
            for _ in 0..7 {
                assert_eq!(handshake_closed_with(app, &s.bot_key).await, 4009);
            }
            let refused = audited(app, &s, "realtime.address_refused").await;
            assert_eq!(refused.len(), 5, "{refused:?}");
            for event in &refused {
                assert_eq!(event["actor"], "anonymous", "{event}");
                assert_eq!(event["ip"], "127.0.0.1", "{event}");
                assert_eq!(event["target"], format!("bot:{}", s.bot_id), "{event}");
                assert_eq!(event["details"], json!({ "reason": "blocked" }), "{event}");
            }
        },
    )
    .await;
}
