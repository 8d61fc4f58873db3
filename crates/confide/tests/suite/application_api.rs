//! Kindly's Application API through HTTP: a customer's backend sends its users' messages with an
//! API key bound to one bot, and the bot's replies reach the customer's webhook (a real receiver
//! on 127.0.0.1) naming the message they answer. Context memory is fed by the call's
//! `new_context` and by the webhook's answer, and replies use both.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use common::receiver::{Received, Receiver};
use common::{CreatedBot, Credential, TestApp, each_backend_with, email, utc_date};
use serde_json::{Value, json};

const GREETING: &str = "Welcome to the anvil shop!";
const FALLBACK: &str = "Sorry, I did not get that.";

/// Receivers listen on loopback, which the SSRF-safe client allows only when the operator says so;
/// the worker polls often so events arrive quickly.
fn allow_loopback(config: &mut confide::config::Config) {
    config.outbound_allow = confide_outbound::Allowlist::parse(&["127.0.0.0/8"]).unwrap();
    config.webhooks.poll_ms = 20;
}

struct Shop {
    org: String,
    owner: Credential,
    bot: CreatedBot,
    /// An API key bound to the bot, with `chats:write`.
    key: Credential,
    receiver: Receiver,
    hook: String,
}

impl Shop {
    fn bot_path(&self, rest: &str) -> String {
        format!("/api/v1/orgs/{}/bots/{}{rest}", self.org, self.bot.id)
    }

    async fn dialogue(&self, app: &TestApp, body: Value) -> String {
        let reply = app
            .post(&self.bot_path("/dialogues"), &self.owner, body)
            .await;
        reply.expect(201);
        reply.json()["id"].as_str().unwrap().to_owned()
    }

    /// `POST /api/v1/send` with this shop's key; answers the reply.
    async fn send(&self, app: &TestApp, body: Value) -> common::Reply {
        app.post("/api/v1/send", &self.key, body).await
    }

    /// Sends and answers `(chat_id, message_id)`.
    async fn say(&self, app: &TestApp, user: &str, text: &str) -> (String, String) {
        let reply = self
            .send(app, json!({ "user_id": user, "message": text }))
            .await;
        reply.expect(202);
        let body = reply.json();
        assert_eq!(body["chatmessage_id"], body["message_id"]);
        (
            body["chat_id"].as_str().unwrap().to_owned(),
            body["message_id"].as_str().unwrap().to_owned(),
        )
    }

    /// The `message.created` event of the bot's reply to `message_id`, once it arrives.
    async fn reply_to(&self, message_id: &str) -> Value {
        let found = |all: &[Received]| {
            all.iter()
                .map(Received::json)
                .find(|e| e["sender"] == "bot" && e["reply_to_id"] == message_id)
        };
        let all = self
            .receiver
            .wait_for("the bot's reply", |all| found(all).is_some())
            .await;
        found(&all).unwrap()
    }

    /// The event of the message with this id, once it arrives.
    async fn event_of(&self, message_id: &str) -> Value {
        let found = |all: &[Received]| {
            all.iter()
                .map(Received::json)
                .find(|e| e["message_id"] == message_id)
        };
        let all = self
            .receiver
            .wait_for("the message's event", |all| found(all).is_some())
            .await;
        found(&all).unwrap()
    }

    /// How many events were queued for the webhook (stored with their messages, so exact).
    async fn queued(&self, app: &TestApp) -> usize {
        let reply = app
            .get(
                &self.bot_path(&format!("/webhooks/{}/deliveries", self.hook)),
                &self.owner,
            )
            .await;
        reply.expect(200);
        reply.json()["deliveries"].as_array().unwrap().len()
    }

    /// Waits until every queued event was delivered (their answers' `new_context` written).
    async fn all_delivered(&self, app: &TestApp) {
        for _ in 0..3000 {
            let reply = app
                .get(
                    &self.bot_path(&format!("/webhooks/{}/deliveries", self.hook)),
                    &self.owner,
                )
                .await;
            let deliveries = reply.json()["deliveries"].as_array().unwrap().clone();
            if deliveries.iter().all(|d| d["state"] == "delivered") {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the deliveries never all arrived");
    }

    /// The chat's messages as an agent sees them (`sender: text`), oldest first.
    async fn messages(&self, app: &TestApp, chat: &str) -> Vec<String> {
        let reply = app
            .get(&self.bot_path(&format!("/handovers/{chat}")), &self.key)
            .await;
        reply.expect(200);
        reply.json()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                format!(
                    "{}: {}",
                    m["sender"].as_str().unwrap(),
                    m["text"].as_str().unwrap()
                )
            })
            .collect()
    }
}

async fn shop(app: &TestApp, name: &str) -> Shop {
    let (owner, session) = app.owner(&email(name), name).await;
    let credential = session.bearer();
    let bot = app.create_bot(&credential, &owner.org_id, "Helper").await;
    app.put(
        &format!(
            "/api/v1/orgs/{}/bots/{}/chat-settings",
            owner.org_id, bot.id
        ),
        &credential,
        json!({ "greeting": GREETING, "fallback_reply": FALLBACK, "allowed_domains": [] }),
    )
    .await
    .expect(200);
    let key = app
        .create_api_key(&credential, &owner.org_id, &["chats:write"], Some(&bot.id))
        .await;
    let (receiver, url) = Receiver::start().await;
    // Until a test says otherwise, the receiver's answers carry no context.
    receiver.answer_with("ok");
    let reply = app
        .post(
            &format!("/api/v1/orgs/{}/bots/{}/webhooks", owner.org_id, bot.id),
            &credential,
            json!({ "url": url, "events": ["message.created"] }),
        )
        .await;
    reply.expect(201);
    Shop {
        org: owner.org_id,
        owner: credential,
        bot,
        key: key.credential(),
        receiver,
        hook: reply.json()["webhook"]["id"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test]
async fn a_sent_message_is_answered_at_the_webhook_naming_the_message_it_replies_to() {
    each_backend_with(allow_loopback, async |app| {
        let s = shop(app, "Anvils").await;
        let reply = s
            .send(
                app,
                json!({ "user_id": "customer-42", "message": "Do you sell anvils?", "language_code": "en-GB" }),
            )
            .await;
        reply.expect(202);
        let chat = reply.json()["chat_id"].as_str().unwrap().to_owned();
        let message_id = reply.json()["message_id"].as_str().unwrap().to_owned();

        let sent = s.event_of(&message_id).await;
        assert_eq!(sent["sender"], "visitor");
        assert_eq!(sent["message"], "Do you sell anvils?");
        assert_eq!(sent["user_id"], "customer-42");
        assert_eq!(sent["chat_id"], chat.as_str());
        assert_eq!(sent["source"], "api");
        assert_eq!(sent["reply_to_id"], Value::Null);
        assert_eq!(sent["exchange"]["language_code"], "en-GB");
        assert_eq!(sent["web_host"], Value::Null);

        let answer = s.reply_to(&message_id).await;
        assert_eq!(answer["message"], FALLBACK);
        assert_eq!(answer["chat_id"], chat.as_str());
        assert_eq!(answer["user_id"], "customer-42");
        assert_eq!(answer["source"], "api");
        // The fallback is no dialogue; the reply names the bot language it was answered in
        // (en-GB is English to a bot that speaks en).
        assert_eq!(
            answer["exchange"],
            json!({ "id": null, "language_code": "en" })
        );
        assert_eq!(answer["context"], json!({}));

        // The same user keeps one conversation; another user has their own.
        let (again, _) = s.say(app, "customer-42", "Hello?").await;
        assert_eq!(again, chat);
        let (other, _) = s.say(app, "customer-43", "Hello?").await;
        assert_ne!(other, chat);
        assert_eq!(
            s.messages(app, &chat).await,
            [
                "visitor: Do you sell anvils?".to_owned(),
                format!("bot: {FALLBACK}"),
                "visitor: Hello?".to_owned(),
                format!("bot: {FALLBACK}"),
            ]
        );

        // Counted like widget messages: two users wrote three messages, all answered by the fallback.
        let stats = app
            .get(
                &s.bot_path(&format!(
                    "/statistics?from={}&to={}",
                    utc_date(-1),
                    utc_date(1)
                )),
                &s.owner,
            )
            .await;
        stats.expect(200);
        let totals = &stats.json()["totals"];
        assert_eq!(totals["sessions"], 2, "{totals}");
        assert_eq!(totals["visitor_messages"], 3, "{totals}");
        assert_eq!(totals["bot_messages"], 3, "{totals}");
        assert_eq!(totals["fallbacks"], 3, "{totals}");
    })
    .await;
}

#[tokio::test]
async fn greeting_a_user_sends_the_bots_greeting_to_the_webhook() {
    each_backend_with(allow_loopback, async |app| {
        let s = shop(app, "Greeters").await;
        let reply = app
            .post(
                "/api/v1/greet",
                &s.key,
                json!({ "user_id": "new-user", "language_code": "nb" }),
            )
            .await;
        reply.expect(202);
        let chat = reply.json()["chat_id"].as_str().unwrap().to_owned();
        let greeting = s
            .event_of(reply.json()["message_id"].as_str().unwrap())
            .await;
        assert_eq!(greeting["type"], "message.created");
        assert_eq!(greeting["sender"], "bot");
        assert_eq!(greeting["message"], GREETING);
        assert_eq!(greeting["chat_id"], chat.as_str());
        assert_eq!(greeting["user_id"], "new-user");
        assert_eq!(greeting["source"], "api");
        assert_eq!(greeting["reply_to_id"], Value::Null);
        assert_eq!(
            greeting["exchange"],
            json!({ "id": null, "language_code": "nb" })
        );
        // The user's later messages land in the same conversation.
        let (later, _) = s.say(app, "new-user", "Hi!").await;
        assert_eq!(later, chat);
        app.post("/api/v1/greet", &s.key, json!({ "user_id": "a b" }))
            .await
            .expect_error(422, "invalid_user_id");
    })
    .await;
}

#[tokio::test]
async fn new_context_in_a_send_is_used_by_the_reply_and_exchange_id_picks_the_dialogue() {
    each_backend_with(allow_loopback, async |app| {
        let s = shop(app, "Plans").await;
        let plan = s
            .dialogue(
                app,
                json!({
                    "name": "Plan",
                    "patterns": ["(?i)my plan"],
                    "replies": ["You are on {plan} with {seats} seats, {vip}.", "Which plan are you on?"],
                }),
            )
            .await;
        let upgrade = s
            .dialogue(
                app,
                json!({ "name": "Upgrade", "patterns": ["(?i)^upgrade$"], "replies": ["Upgrading {plan} now."] }),
            )
            .await;

        // Without context, the reply that needs none answers.
        let (_, first) = s.say(app, "ada", "What is my plan?").await;
        assert_eq!(s.reply_to(&first).await["message"], "Which plan are you on?");

        // The call's context is in memory before the bot answers, numbers and booleans as text.
        let reply = s
            .send(
                app,
                json!({
                    "user_id": "ada",
                    "message": "And now, my plan?",
                    "new_context": { "plan": "gold", "seats": 3, "vip": true },
                }),
            )
            .await;
        reply.expect(202);
        let answer = s
            .reply_to(reply.json()["message_id"].as_str().unwrap())
            .await;
        assert_eq!(answer["message"], "You are on gold with 3 seats, true.");
        assert_eq!(answer["exchange"]["id"], plan.as_str());
        assert_eq!(
            answer["context"],
            json!({ "plan": "gold", "seats": "3", "vip": "true" })
        );

        // exchange_id answers with that dialogue, whatever the message says.
        let reply = s
            .send(
                app,
                json!({ "user_id": "ada", "message": "my plan", "exchange_id": upgrade }),
            )
            .await;
        reply.expect(202);
        let answer = s
            .reply_to(reply.json()["message_id"].as_str().unwrap())
            .await;
        assert_eq!(answer["message"], "Upgrading gold now.");
        assert_eq!(answer["exchange"]["id"], upgrade.as_str());

        // A dialogue the bot does not have is refused, and nothing is stored.
        let before = s.queued(app).await;
        let other = shop(app, "Elsewhere").await;
        let foreign = other
            .dialogue(
                app,
                json!({ "name": "Theirs", "patterns": ["x"], "replies": ["theirs"] }),
            )
            .await;
        for exchange in [foreign, uuid::Uuid::now_v7().to_string()] {
            s.send(
                app,
                json!({ "user_id": "ada", "message": "hi", "exchange_id": exchange }),
            )
            .await
            .expect_error(404, "unknown_exchange");
        }
        assert_eq!(s.queued(app).await, before);
    })
    .await;
}

#[tokio::test]
async fn a_webhooks_new_context_answer_is_used_by_a_later_reply() {
    each_backend_with(allow_loopback, async |app| {
        let s = shop(app, "Tiers").await;
        s.dialogue(
            app,
            json!({
                "name": "Tier",
                "patterns": ["(?i)what tier"],
                "replies": ["Your tier is {tier} ({points} points).", "I do not know your tier yet."],
            }),
        )
        .await;
        let (_, first) = s.say(app, "grace", "What tier am I?").await;
        assert_eq!(
            s.reply_to(&first).await["message"],
            "I do not know your tier yet."
        );
        s.all_delivered(app).await;

        // The customer's backend answers the next events with context for the chat.
        s.receiver
            .answer_with(r#"{"new_context": {"tier": "platinum", "points": 1200}}"#);
        let (chat, hello) = s.say(app, "grace", "Hello").await;
        s.reply_to(&hello).await;
        s.all_delivered(app).await;
        let (_, asked) = s.say(app, "grace", "What tier am I?").await;
        let answer = s.reply_to(&asked).await;
        assert_eq!(answer["message"], "Your tier is platinum (1200 points).");
        assert_eq!(answer["context"]["tier"], "platinum");
        s.all_delivered(app).await;

        // An answer whose context is malformed is dropped whole; the delivery still counts.
        s.receiver
            .answer_with(r#"{"new_context": {"tier": ["bronze"], "points": 1}}"#);
        let (_, hello) = s.say(app, "grace", "Hello again").await;
        s.reply_to(&hello).await;
        s.all_delivered(app).await;
        let (_, asked) = s.say(app, "grace", "What tier am I?").await;
        assert_eq!(
            s.reply_to(&asked).await["message"],
            "Your tier is platinum (1200 points)."
        );
        // Only that user's chat got the context.
        s.all_delivered(app).await;
        s.receiver.answer_with("ok");
        let (other, asked) = s.say(app, "linus", "What tier am I?").await;
        assert_ne!(other, chat);
        assert_eq!(
            s.reply_to(&asked).await["message"],
            "I do not know your tier yet."
        );
    })
    .await;
}

#[tokio::test]
async fn only_an_api_key_bound_to_one_bot_with_chats_write_may_call_and_refusals_are_audited() {
    each_backend_with(allow_loopback, async |app| {
        let s = shop(app, "Keys").await;
        let body = json!({ "user_id": "u1", "message": "hi" });
        let org_wide = app
            .create_api_key(&s.owner, &s.org, &["chats:write"], None)
            .await;
        for path in ["/api/v1/send", "/api/v1/greet"] {
            let body = if path.ends_with("greet") {
                json!({ "user_id": "u1" })
            } else {
                body.clone()
            };
            app.post(path, &org_wide.credential(), body.clone())
                .await
                .expect_error(403, "bot_key_required");
            // People use the dashboard, not the Application API.
            app.post(path, &s.owner, body.clone())
                .await
                .expect_error(403, "bot_key_required");
            app.post(path, &Credential::Anonymous, body.clone())
                .await
                .expect_error(401, "unauthenticated");
        }
        let read_only = app
            .create_api_key(&s.owner, &s.org, &["chats:read"], Some(&s.bot.id))
            .await;
        app.post("/api/v1/send", &read_only.credential(), body.clone())
            .await
            .expect_error(403, "insufficient_scope");
        let audit = app.audit_actions(&s.owner, &s.org).await;
        assert!(
            audit.iter().filter(|a| *a == "authz.denied").count() >= 3,
            "{audit:?}"
        );
        assert_eq!(s.queued(app).await, 0, "nothing refused was stored");
    })
    .await;
}

#[tokio::test]
async fn a_key_for_another_bot_cannot_reach_this_bots_chats() {
    each_backend_with(allow_loopback, async |app| {
        let s = shop(app, "Victim").await;
        let (chat, _) = s.say(app, "shared-id", "my secret order").await;
        // A second bot of the same organization, and a bot of another organization.
        let sibling_bot = app.create_bot(&s.owner, &s.org, "Sibling").await;
        let sibling = app
            .create_api_key(&s.owner, &s.org, &["chats:write"], Some(&sibling_bot.id))
            .await
            .credential();
        let stranger = shop(app, "Stranger").await;
        for key in [&sibling, &stranger.key] {
            // The same user id reaches the key's own bot, never this one.
            let reply = app
                .post(
                    "/api/v1/send",
                    key,
                    json!({ "user_id": "shared-id", "message": "intruding" }),
                )
                .await;
            reply.expect(202);
            assert_ne!(reply.json()["chat_id"], chat.as_str());
            // Nor can it read this bot's chat.
            app.get(&s.bot_path(&format!("/handovers/{chat}")), key)
                .await
                .expect(404);
        }
        assert_eq!(
            s.messages(app, &chat).await,
            [
                "visitor: my secret order".to_owned(),
                format!("bot: {FALLBACK}")
            ]
        );
        // This bot's webhook heard only of its own chat.
        assert_eq!(s.queued(app).await, 2);
        let stranger_events = stranger
            .receiver
            .wait_for("the stranger's own events", |all| all.len() >= 2)
            .await;
        assert!(
            stranger_events
                .iter()
                .all(|e| e.json()["bot_id"] == stranger.bot.id.as_str())
        );
        assert!(
            s.receiver
                .all()
                .iter()
                .all(|e| e.json()["chat_id"] == chat.as_str())
        );
    })
    .await;
}

#[tokio::test]
async fn bad_bodies_are_refused_with_codes_and_nothing_is_stored() {
    each_backend_with(allow_loopback, async |app| {
        let s = shop(app, "Strict").await;
        let many: serde_json::Map<String, Value> =
            (0..101).map(|i| (format!("k{i}"), json!("v"))).collect();
        let cases = [
            (json!({ "user_id": "", "message": "hi" }), "invalid_user_id"),
            (json!({ "user_id": "a b", "message": "hi" }), "invalid_user_id"),
            (json!({ "user_id": "x".repeat(129), "message": "hi" }), "invalid_user_id"),
            (json!({ "user_id": "u", "message": " \n\t" }), "invalid_message"),
            (json!({ "user_id": "u", "message": "x".repeat(2001) }), "invalid_message"),
            (json!({ "user_id": "u", "message": "nul \u{0}" }), "invalid_message"),
            (
                json!({ "user_id": "u", "message": "hi", "language_code": "EN" }),
                "invalid_language_code",
            ),
            (
                json!({ "user_id": "u", "message": "hi", "language_code": "en-" }),
                "invalid_language_code",
            ),
            (
                json!({ "user_id": "u", "message": "hi", "new_context": { "9lives": "x" } }),
                "invalid_context",
            ),
            (
                json!({ "user_id": "u", "message": "hi", "new_context": { "a": [1] } }),
                "invalid_context",
            ),
            (
                json!({ "user_id": "u", "message": "hi", "new_context": { "a": null } }),
                "invalid_context",
            ),
            (
                json!({ "user_id": "u", "message": "hi", "new_context": { "a": "nul \u{0}" } }),
                "invalid_context",
            ),
            (
                json!({ "user_id": "u", "message": "hi", "new_context": { "a": "x".repeat(1001) } }),
                "invalid_context",
            ),
            (
                json!({ "user_id": "u", "message": "hi", "new_context": many }),
                "invalid_context",
            ),
            (
                json!({ "user_id": "u", "message": "hi", "exchange_id": "not-an-id" }),
                "invalid_body",
            ),
            (json!({ "user_id": "u" }), "invalid_body"),
            (json!({ "user_id": "u", "message": "hi", "extra": 1 }), "invalid_body"),
        ];
        for (body, code) in cases {
            let reply = s.send(app, body.clone()).await;
            assert_eq!(reply.status.as_u16(), 422, "{body}: {}", reply.text);
            assert_eq!(reply.code(), code, "{body}");
        }
        assert_eq!(s.queued(app).await, 0);

        // A chat's context memory holds 100 keys: a call that would pass that is refused whole.
        let full: serde_json::Map<String, Value> =
            (0..100).map(|i| (format!("k{i}"), json!(i))).collect();
        let reply = s
            .send(
                app,
                json!({ "user_id": "u", "message": "hi", "new_context": full }),
            )
            .await;
        reply.expect(202);
        let chat = reply.json()["chat_id"].as_str().unwrap().to_owned();
        s.send(
            app,
            json!({ "user_id": "u", "message": "more", "new_context": { "k0": "new", "k100": "x" } }),
        )
        .await
        .expect_error(422, "context_full");
        assert_eq!(s.messages(app, &chat).await.len(), 2);
        // Existing keys can still change.
        let reply = s
            .send(
                app,
                json!({ "user_id": "u", "message": "again", "new_context": { "k0": "changed" } }),
            )
            .await;
        reply.expect(202);
        let answer = s
            .reply_to(reply.json()["message_id"].as_str().unwrap())
            .await;
        assert_eq!(answer["context"]["k0"], "changed");
        assert_eq!(answer["context"].as_object().unwrap().len(), 100);
    })
    .await;
}

#[tokio::test]
async fn each_users_conversation_is_rate_limited_like_a_widget_chat() {
    each_backend_with(
        |config| {
            allow_loopback(config);
            config.rate_limits.messages_per_chat_per_minute = 3;
        },
        async |app| {
            let s = shop(app, "Busy").await;
            for i in 0..3 {
                s.say(app, "chatty", &format!("message {i}")).await;
            }
            let reply = s
                .send(app, json!({ "user_id": "chatty", "message": "one more" }))
                .await;
            reply.expect_error(429, "rate_limited");
            assert!(reply.header("retry-after").is_some());
            // Another user is not held back.
            s.say(app, "quiet", "hello").await;
            assert_eq!(s.queued(app).await, 8);
        },
    )
    .await;
}

#[tokio::test]
async fn a_regional_language_tag_gets_the_bots_language() {
    each_backend_with(allow_loopback, async |app| {
        let s = shop(app, "Nordic").await;
        app.put(
            &s.bot_path("/chat-settings"),
            &s.owner,
            json!({ "greeting": GREETING, "fallback_reply": FALLBACK, "allowed_domains": [],
                    "languages": ["en", "nb"], "greetings": { "nb": "Hei!" },
                    "fallback_replies": { "nb": "Beklager?" } }),
        )
        .await
        .expect(200);
        let sent = s
            .send(
                app,
                json!({ "user_id": "kari", "message": "Hvor er pakken?", "language_code": "nb-NO" }),
            )
            .await;
        sent.expect(202);
        let answer = s
            .reply_to(sent.json()["message_id"].as_str().unwrap())
            .await;
        assert_eq!(answer["message"], "Beklager?");
        assert_eq!(answer["exchange"]["language_code"], "nb");
        let greeted = app
            .post(
                "/api/v1/greet",
                &s.key,
                json!({ "user_id": "ola", "language_code": "nb-NO" }),
            )
            .await;
        greeted.expect(202);
        let greeting = s
            .event_of(greeted.json()["message_id"].as_str().unwrap())
            .await;
        assert_eq!(greeting["message"], "Hei!");
    })
    .await;
}
