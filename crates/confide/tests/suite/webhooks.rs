//! Outbound webhooks through the public interface, received by a real HTTP server on 127.0.0.1:
//! every chat message arrives signed with Kindly-HMAC and Standard Webhooks, failures are retried
//! with the same webhook-id until they are dead letters, dead letters can be redelivered, and a
//! rotated secret keeps signing beside the new one for its overlap window.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::receiver::{Received, Receiver, kindly_ok, standard_ok};
use common::{Credential, TestApp, each_backend_with, email};
use confide_security::webhook::{WebhookSecret, WebhookSecretCipher};
use secrecy::SecretString;
use serde_json::{Value, json};

/// Webhook receivers in these tests listen on 127.0.0.1, which the SSRF-safe client refuses unless
/// the operator allows it (`outbound_allow`), as an on-premises deployment would.
fn allow_loopback(config: &mut confide::config::Config) {
    config.outbound_allow = confide_outbound::Allowlist::parse(&["127.0.0.0/8"]).unwrap();
}

const PAGE: &str = "https://shop.example.com";

struct Setup {
    org: String,
    bot: String,
    bot_key: String,
    owner: Credential,
}

async fn setup(app: &TestApp) -> Setup {
    let (owner, session) = app.owner(&email("owner"), "Hooked Inc").await;
    let bot = app
        .create_bot(&session.bearer(), &owner.org_id, "Hook Bot")
        .await;
    Setup {
        org: owner.org_id,
        bot: bot.id,
        bot_key: bot.key,
        owner: session.bearer(),
    }
}

impl Setup {
    fn hooks(&self) -> String {
        format!("/api/v1/orgs/{}/bots/{}/webhooks", self.org, self.bot)
    }

    async fn create_webhook(&self, app: &TestApp, url: &str) -> (String, String) {
        let reply = app
            .post(
                &self.hooks(),
                &self.owner,
                json!({ "url": url, "events": ["message.created"] }),
            )
            .await;
        reply.expect(201);
        let body = reply.json();
        (
            body["webhook"]["id"].as_str().unwrap().to_owned(),
            body["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// Starts a chat and sends one visitor message (the bot answers): two events.
    async fn chat(&self, app: &TestApp, text: &str) -> String {
        let session = app
            .send(
                app.client
                    .post(app.url(&format!("/chat/v1/{}/sessions", self.bot_key)))
                    .header("origin", PAGE)
                    .json(&json!({ "visitor_id": "visitor-7" })),
            )
            .await;
        session.expect(201);
        let session = session.json();
        let token = session["token"].as_str().unwrap();
        app.send(
            app.client
                .post(app.url("/chat/v1/messages"))
                .header("x-chat-token", token)
                .header("origin", PAGE)
                .json(&json!({ "text": text })),
        )
        .await
        .expect(202);
        session["chat_id"].as_str().unwrap().to_owned()
    }

    async fn deliveries(&self, app: &TestApp, hook: &str) -> Vec<Value> {
        let reply = app
            .get(&format!("{}/{hook}/deliveries", self.hooks()), &self.owner)
            .await;
        reply.expect(200);
        reply.json()["deliveries"].as_array().unwrap().clone()
    }

    async fn delivery(&self, app: &TestApp, hook: &str, id: &str) -> Value {
        let reply = app
            .get(
                &format!("{}/{hook}/deliveries/{id}", self.hooks()),
                &self.owner,
            )
            .await;
        reply.expect(200);
        reply.json()
    }

    /// Waits until the delivery is in `state` according to the delivery log.
    async fn wait_for_state(&self, app: &TestApp, hook: &str, id: &str, state: &str) -> Value {
        for _ in 0..3000 {
            let detail = self.delivery(app, hook, id).await;
            if detail["delivery"]["state"] == state {
                return detail;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("delivery {id} never became {state}");
    }
}

/// Fast retries, so a day's schedule fits in a test: waits of 20-80 ms, given up after 600 ms.
fn quick_retries(config: &mut confide::config::Config) {
    config.webhooks.retry.first_delay_ms = 40;
    config.webhooks.retry.max_delay_ms = 80;
    config.webhooks.retry.horizon_ms = 600;
    config.webhooks.poll_ms = 20;
    allow_loopback(config);
}

#[tokio::test]
async fn every_chat_message_reaches_the_receiver_signed_both_ways_in_the_chatlog_shape() {
    each_backend_with(quick_retries, async |app| {
        let s = setup(app).await;
        let (receiver, url) = Receiver::start().await;
        // No new_context in the answers: each event's context is then the empty memory.
        receiver.answer_with("ok");
        let (hook, secret) = s.create_webhook(app, &url).await;
        assert!(secret.starts_with("whsec_"));
        let chat = s.chat(app, "Where is my anvil?").await;

        let got = receiver
            .wait_for("two messages", |all| all.len() >= 2)
            .await;
        let mut by_sender = HashMap::new();
        for delivery in &got {
            assert!(kindly_ok(&secret, delivery), "Kindly-HMAC verifies");
            assert!(standard_ok(&secret, delivery), "webhook-signature verifies");
            assert_eq!(delivery.header("content-type"), "application/json");
            let body = delivery.json();
            assert_eq!(body["type"], "message.created");
            assert_eq!(body["organization_id"], s.org.as_str());
            assert_eq!(body["bot_id"], s.bot.as_str());
            assert_eq!(body["chat_id"], chat.as_str());
            assert_eq!(body["user_id"], "visitor-7");
            assert_eq!(body["source"], "web");
            assert_eq!(body["web_host"], "shop.example.com");
            // The bot's reply names the language it answered in; the widget gave none.
            let language = if body["sender"] == "bot" {
                json!("en")
            } else {
                Value::Null
            };
            assert_eq!(
                body["exchange"],
                json!({ "id": null, "language_code": language })
            );
            assert_eq!(body["context"], json!({}));
            assert!(
                body["_links"]["chat"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("/chats/{chat}"))
            );
            by_sender.insert(body["sender"].as_str().unwrap().to_owned(), body.clone());
            // The timestamp is the attempt's, in seconds, close to our clock.
            let ts: i64 = delivery.header("webhook-timestamp").parse().unwrap();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            assert!((now - ts).abs() < 300);
        }
        assert_eq!(by_sender["visitor"]["message"], "Where is my anvil?");
        assert_eq!(by_sender["visitor"]["reply_to_id"], Value::Null);
        // The bot's reply names the message it answers.
        assert_eq!(
            by_sender["bot"]["reply_to_id"],
            by_sender["visitor"]["message_id"]
        );
        // A wrong secret does not verify: the checks above are not vacuous.
        let (_, other_secret) = s.create_webhook(app, &url).await;
        assert!(!kindly_ok(&other_secret, &got[0]));
        assert!(!standard_ok(&other_secret, &got[0]));

        // The delivery log agrees, and the ids are the webhook-id headers.
        let ids: Vec<String> = got
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        for id in &ids {
            let detail = s.wait_for_state(app, &hook, id, "delivered").await;
            assert_eq!(detail["delivery"]["attempts"], 1);
            assert_eq!(detail["delivery"]["last_status"], 200);
            assert!(detail["delivery"]["last_latency_ms"].as_i64().unwrap() >= 0);
            assert_eq!(detail["attempts"].as_array().unwrap().len(), 1);
            assert_eq!(detail["attempts"][0]["outcome"], "delivered");
        }
        assert_eq!(s.deliveries(app, &hook).await.len(), 2);

        // The secret is shown once: never in a listing or a read.
        for path in [s.hooks(), format!("{}/{hook}", s.hooks())] {
            let reply = app.get(&path, &s.owner).await;
            reply.expect(200);
            assert!(!reply.text.contains(&secret), "{path}");
        }
        // Nor in the database in plain text.
        let stored: Vec<(String,)> = sqlx::query_as("SELECT secret_sealed FROM webhooks")
            .fetch_all(&app.database().await)
            .await
            .unwrap();
        assert!(stored.iter().all(|(s,)| !s.contains(&secret[6..])));
        let audit = app.audit_actions(&s.owner, &s.org).await;
        assert!(audit.contains(&"webhook.created".to_owned()));
    })
    .await;
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_with_the_same_webhook_id_then_dead_lettered_and_redelivered()
{
    each_backend_with(quick_retries, async |app| {
        let s = setup(app).await;
        let (receiver, url) = Receiver::start().await;
        let (hook, secret) = s.create_webhook(app, &url).await;
        // Each event fails twice, then goes through.
        receiver.answer(&[500, 503], 200);
        s.chat(app, "first").await;
        let got = receiver
            .wait_for("two events, each tried three times", |all| all.len() >= 6)
            .await;
        let mut per_id: HashMap<String, Vec<&Received>> = HashMap::new();
        for r in &got {
            per_id
                .entry(r.header("webhook-id").to_owned())
                .or_default()
                .push(r);
        }
        assert_eq!(per_id.len(), 2);
        assert!(per_id.values().all(|tries| tries.len() == 3));
        // The same id and body every time, each attempt freshly signed.
        for tries in per_id.values() {
            assert!(tries.iter().all(|r| r.body == tries[0].body));
            assert!(
                tries
                    .iter()
                    .all(|r| standard_ok(&secret, r) && kindly_ok(&secret, r))
            );
        }
        let retried = per_id.keys().next().unwrap();
        let detail = s.wait_for_state(app, &hook, retried, "delivered").await;
        assert_eq!(detail["delivery"]["attempts"], 3);
        let log: Vec<(i64, Value, String)> = detail["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["attempt"].as_i64().unwrap(),
                    a["status"].clone(),
                    a["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            log,
            [
                (1, json!(500), "retry".to_owned()),
                (2, json!(503), "retry".to_owned()),
                (3, json!(200), "delivered".to_owned()),
            ]
        );

        // An endpoint that never answers well: retries run out at the horizon.
        receiver.answer(&[], 500);
        let before = receiver.all().len();
        s.chat(app, "second").await;
        receiver
            .wait_for("the new events", |all| all.len() > before)
            .await;
        let fresh = receiver.all()[before].header("webhook-id").to_owned();
        let dead = s.wait_for_state(app, &hook, &fresh, "dead").await;
        let attempts = dead["delivery"]["attempts"].as_i64().unwrap();
        assert!(attempts >= 2, "retried before giving up: {dead}");
        assert_eq!(dead["delivery"]["last_error"], "status 500");
        assert_eq!(dead["attempts"].as_array().unwrap().len() as i64, attempts);
        assert_eq!(
            dead["attempts"].as_array().unwrap().last().unwrap()["outcome"],
            "dead"
        );
        assert!(dead["delivery"]["next_attempt_at"].is_null());
        let tried = receiver
            .all()
            .iter()
            .filter(|r| r.header("webhook-id") == fresh)
            .count() as i64;
        assert_eq!(tried, attempts);
        assert!(
            app.audit_actions(&s.owner, &s.org)
                .await
                .contains(&"webhook.delivery_dead".to_owned())
        );
        let dead_list = app
            .get(
                &format!("{}/{hook}/deliveries?state=dead", s.hooks()),
                &s.owner,
            )
            .await;
        dead_list.expect(200);
        assert!(
            dead_list.json()["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["id"] == fresh.as_str())
        );

        // The receiver is fixed; a manual redelivery sends the same id again.
        receiver.answer(&[], 200);
        let redeliver = format!("{}/{hook}/deliveries/{fresh}/redeliver", s.hooks());
        let reply = app.post(&redeliver, &s.owner, json!({})).await;
        reply.expect(202);
        let done = s.wait_for_state(app, &hook, &fresh, "delivered").await;
        assert_eq!(done["delivery"]["attempts"].as_i64().unwrap(), attempts + 1);
        assert_eq!(done["delivery"]["last_status"], 200);
        assert!(
            app.audit_actions(&s.owner, &s.org)
                .await
                .contains(&"webhook.redelivery_requested".to_owned())
        );
        // A delivery that is not the endpoint's is not found.
        let elsewhere = format!(
            "{}/{hook}/deliveries/{}/redeliver",
            s.hooks(),
            uuid::Uuid::now_v7()
        );
        app.post(&elsewhere, &s.owner, json!({}))
            .await
            .expect_error(404, "not_found");
    })
    .await;
}

#[tokio::test]
async fn after_a_rotation_the_old_and_new_secrets_both_sign_until_the_overlap_ends() {
    each_backend_with(quick_retries, async |app| {
        let s = setup(app).await;
        let (receiver, url) = Receiver::start().await;
        let (hook, first) = s.create_webhook(app, &url).await;
        let rotate = format!("{}/{hook}/rotate-secret", s.hooks());

        let reply = app
            .post(&rotate, &s.owner, json!({ "overlap_seconds": 3600 }))
            .await;
        reply.expect(200);
        let second = reply.json()["secret"].as_str().unwrap().to_owned();
        assert_ne!(first, second);
        assert!(reply.json()["webhook"]["previous_secret_expires_at"].is_string());
        s.chat(app, "during the overlap").await;
        let got = receiver.wait_for("two events", |all| all.len() >= 2).await;
        for r in &got {
            assert_eq!(r.header("webhook-signature").split(' ').count(), 2);
            assert!(standard_ok(&first, r), "the old secret still verifies");
            assert!(standard_ok(&second, r), "the new secret verifies");
            assert!(kindly_ok(&second, r), "Kindly-HMAC uses the new secret");
            assert!(!kindly_ok(&first, r));
        }

        // No overlap: the previous secret stops signing at once.
        let reply = app
            .post(&rotate, &s.owner, json!({ "overlap_seconds": 0 }))
            .await;
        reply.expect(200);
        let third = reply.json()["secret"].as_str().unwrap().to_owned();
        assert!(reply.json()["webhook"]["previous_secret_expires_at"].is_null());
        s.chat(app, "after the overlap").await;
        let got = receiver.wait_for("two more", |all| all.len() >= 4).await;
        for r in &got[2..] {
            assert_eq!(r.header("webhook-signature").split(' ').count(), 1);
            assert!(standard_ok(&third, r) && kindly_ok(&third, r));
            assert!(!standard_ok(&second, r) && !standard_ok(&first, r));
        }

        app.post(&rotate, &s.owner, json!({ "overlap_seconds": 604_801 }))
            .await
            .expect_error(422, "invalid_overlap");
        let audit = app.audit_actions(&s.owner, &s.org).await;
        assert_eq!(
            audit
                .iter()
                .filter(|a| *a == "webhook.secret_rotated")
                .count(),
            2
        );
    })
    .await;
}

#[tokio::test]
async fn endpoints_are_validated_changed_and_removed_by_writers_and_read_by_readers() {
    each_backend_with(quick_retries, async |app| {
        let s = setup(app).await;
        let hooks = s.hooks();
        let too_long = format!("https://example.com/{}", "a".repeat(2048));
        for (body, code) in [
            (json!({ "url": "ftp://example.com/in", "events": ["message.created"] }), "invalid_webhook_url"),
            (json!({ "url": "file:///etc/passwd", "events": ["message.created"] }), "invalid_webhook_url"),
            (json!({ "url": "https://user:pw@example.com/in", "events": ["message.created"] }), "invalid_webhook_url"),
            (json!({ "url": "not a url", "events": ["message.created"] }), "invalid_webhook_url"),
            (json!({ "url": "/relative", "events": ["message.created"] }), "invalid_webhook_url"),
            (json!({ "url": "https://", "events": ["message.created"] }), "invalid_webhook_url"),
            (json!({ "url": too_long, "events": ["message.created"] }), "invalid_webhook_url"),
            (json!({ "url": "https://example.com/in", "events": [] }), "invalid_events"),
            (json!({ "url": "https://example.com/in", "events": ["message.created"], "max_concurrency": 0 }), "invalid_max_concurrency"),
            (json!({ "url": "https://example.com/in", "events": ["message.created"], "max_concurrency": 51 }), "invalid_max_concurrency"),
        ] {
            let reply = app.post(&hooks, &s.owner, body.clone()).await;
            reply.expect_error(422, code);
        }
        // An unknown event name is not part of the schema.
        app.post(
            &hooks,
            &s.owner,
            json!({ "url": "https://example.com/in", "events": ["message.deleted"] }),
        )
        .await
        .expect(422);
        assert!(app.get(&hooks, &s.owner).await.json()["webhooks"]
            .as_array()
            .unwrap()
            .is_empty());

        // Disabled endpoints get nothing queued; the unreachable URL is never tried.
        let created = app
            .post(
                &hooks,
                &s.owner,
                json!({
                    "url": "http://127.0.0.1:9/never",
                    "events": ["message.created", "handover.requested", "message.created"],
                    "enabled": false,
                    "max_concurrency": 2
                }),
            )
            .await;
        created.expect(201);
        let view = created.json()["webhook"].clone();
        let id = view["id"].as_str().unwrap().to_owned();
        assert_eq!(view["events"], json!(["message.created", "handover.requested"]));
        assert_eq!(view["enabled"], false);
        assert_eq!(view["max_concurrency"], 2);
        s.chat(app, "nobody listens").await;
        assert!(s.deliveries(app, &id).await.is_empty());

        let changed = app
            .patch(
                &format!("{hooks}/{id}"),
                &s.owner,
                json!({ "events": ["conversation.ended"], "max_concurrency": 7 }),
            )
            .await;
        changed.expect(200);
        assert_eq!(changed.json()["events"], json!(["conversation.ended"]));
        assert_eq!(changed.json()["max_concurrency"], 7);
        app.patch(
            &format!("{hooks}/{id}"),
            &s.owner,
            json!({ "url": "gopher://example.com" }),
        )
        .await
        .expect_error(422, "invalid_webhook_url");
        // A fragment is never sent, so it is not kept: the URL saved is the one posted to.
        let moved = app
            .patch(
                &format!("{hooks}/{id}"),
                &s.owner,
                json!({ "url": "http://127.0.0.1:9/never#part" }),
            )
            .await;
        moved.expect(200);
        assert_eq!(moved.json()["url"], "http://127.0.0.1:9/never");

        // A member who may read the bot sees its endpoints but cannot change them.
        let reader = app
            .member(&s.owner, &s.org, &email("reader"), "member")
            .await;
        app.grant(&s.owner, &s.org, &s.bot, &reader.user_id, "read")
            .await;
        app.get(&format!("{hooks}/{id}"), &reader.bearer())
            .await
            .expect(200);
        app.get(&format!("{hooks}/{id}/deliveries"), &reader.bearer())
            .await
            .expect(200);
        app.delete(&format!("{hooks}/{id}"), &reader.bearer())
            .await
            .expect_error(403, "forbidden");
        app.post(
            &format!("{hooks}/{id}/rotate-secret"),
            &reader.bearer(),
            json!({}),
        )
        .await
        .expect_error(403, "forbidden");

        app.delete(&format!("{hooks}/{id}"), &s.owner)
            .await
            .expect(204);
        app.get(&format!("{hooks}/{id}"), &s.owner)
            .await
            .expect_error(404, "not_found");
        let audit = app.audit_actions(&s.owner, &s.org).await;
        for action in ["webhook.created", "webhook.updated", "webhook.deleted"] {
            assert!(audit.contains(&action.to_owned()), "{action}");
        }
    })
    .await;
}

#[tokio::test]
async fn webhook_urls_aimed_at_internal_addresses_are_refused_and_audited() {
    // The operator allows nothing: the platform's default.
    each_backend_with(
        |_| {},
        async |app| {
            let s = setup(app).await;
            let path = format!("/api/v1/orgs/{}/bots/{}/webhooks", s.org, s.bot);
            for url in common::INTERNAL_URLS {
                let refused = app
                    .post(
                        &path,
                        &s.owner,
                        json!({ "url": url, "events": ["message.created"] }),
                    )
                    .await;
                refused.expect_error(422, "webhook_url_not_allowed");
            }
            let audited = app
                .audit_actions(&s.owner, &s.org)
                .await
                .iter()
                .filter(|a| *a == "webhook.url_refused")
                .count();
            assert_eq!(audited, 13);
            let listed = app.get(&path, &s.owner).await;
            listed.expect(200);
            assert_eq!(listed.json()["webhooks"], json!([]));
        },
    )
    .await;
}

#[tokio::test]
async fn a_receiver_that_answers_at_length_has_the_event_once() {
    each_backend_with(quick_retries, async |app| {
        let s = setup(app).await;
        let (receiver, url) = Receiver::start().await;
        // Far past the answer bound (64 KiB): the 200 still means the event arrived.
        *receiver.body.lock().unwrap() = "x".repeat(1024 * 1024);
        let (hook, _) = s.create_webhook(app, &url).await;
        s.chat(app, "Hello").await;
        receiver
            .wait_for("two messages", |all| all.len() >= 2)
            .await;
        let deliveries = s.deliveries(app, &hook).await;
        for delivery in &deliveries {
            let id = delivery["id"].as_str().unwrap();
            let done = s.wait_for_state(app, &hook, id, "delivered").await;
            assert_eq!(done["delivery"]["attempts"], 1, "{done}");
            assert_eq!(done["delivery"]["last_status"], 200, "{done}");
        }
        // Delivered is final: each event came exactly once.
        assert_eq!(receiver.all().len(), deliveries.len());
    })
    .await;
}

#[tokio::test]
async fn a_url_that_turned_internal_is_refused_at_delivery_and_dead_at_once() {
    each_backend_with(quick_retries, async |app| {
        let s = setup(app).await;
        let (receiver, url) = Receiver::start().await;
        let (hook, _) = s.create_webhook(app, &url).await;
        // Rewritten behind the API's back (a restored backup, a hand edit): the worker's own
        // check is what stands between the outbox and the internal network.
        let db = app.database().await;
        sqlx::query("UPDATE webhooks SET url = $1 WHERE id = $2")
            .bind("http://10.255.0.8/hook")
            .bind(&hook)
            .execute(&db)
            .await
            .unwrap();
        db.close().await;
        s.chat(app, "Hello").await;
        let deliveries = s.deliveries(app, &hook).await;
        assert!(!deliveries.is_empty());
        for delivery in &deliveries {
            let id = delivery["id"].as_str().unwrap();
            let dead = s.wait_for_state(app, &hook, id, "dead").await;
            assert_eq!(dead["delivery"]["attempts"], 1, "{dead}");
            let error = dead["delivery"]["last_error"].as_str().unwrap();
            assert!(error.contains("address_not_allowed"), "{error}");
        }
        assert!(receiver.all().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_delivery_is_reached_only_through_its_own_endpoint_and_organization() {
    each_backend_with(quick_retries, async |app| {
        let s = setup(app).await;
        let (receiver, url) = Receiver::start().await;
        let (hook, _) = s.create_webhook(app, &url).await;
        let (other_hook, _) = s.create_webhook(app, &url).await;
        s.chat(app, "Hello").await;
        receiver
            .wait_for("the deliveries", |all| all.len() >= 4)
            .await;
        let id = s.deliveries(app, &hook).await[0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        // Another endpoint of the same bot does not have it.
        let wrong = format!("{}/{other_hook}/deliveries/{id}", s.hooks());
        app.get(&wrong, &s.owner)
            .await
            .expect_error(404, "not_found");
        app.post(&format!("{wrong}/redeliver"), &s.owner, json!({}))
            .await
            .expect_error(404, "not_found");
        // Another organization's owner gets nothing on the right path either.
        let (_, stranger) = app.owner(&email("stranger"), "Elsewhere").await;
        let right = format!("{}/{hook}/deliveries/{id}", s.hooks());
        app.get(&right, &stranger.bearer())
            .await
            .expect_error(404, "not_found");
        app.post(&format!("{right}/redeliver"), &stranger.bearer(), json!({}))
            .await
            .expect_error(404, "not_found");
        // And the owner does.
        s.delivery(app, &hook, &id).await;
    })
    .await;
}

#[tokio::test]
async fn only_those_who_may_read_the_chats_aim_a_webhook_at_them() {
    each_backend_with(quick_retries, async |app| {
        let s = setup(app).await;
        let (receiver, url) = Receiver::start().await;
        let (hook, _) = s.create_webhook(app, &url).await;
        s.chat(app, "Hello").await;
        receiver
            .wait_for("the deliveries", |all| all.len() >= 2)
            .await;
        let delivery = s.deliveries(app, &hook).await[0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        s.wait_for_state(app, &hook, &delivery, "delivered").await;
        let hook_path = format!("{}/{hook}", s.hooks());
        let redeliver = format!("{hook_path}/deliveries/{delivery}/redeliver");
        let rotate = format!("{hook_path}/rotate-secret");
        let elsewhere = format!("{url}/elsewhere");

        // A writer on the bot, while its chats are shared with listed members only and they
        // are not listed.
        let writer = app
            .member(&s.owner, &s.org, &email("writer"), "member")
            .await;
        app.grant(&s.owner, &s.org, &s.bot, &writer.user_id, "write")
            .await;
        let sharing = format!("/api/v1/orgs/{}/bots/{}/sharing", s.org, s.bot);
        app.put(
            &sharing,
            &s.owner,
            json!({ "policy": "listed_members", "members": [] }),
        )
        .await
        .expect(200);
        // An API key that may change the bot but not read its chats.
        let bots_key = app
            .create_api_key(&s.owner, &s.org, &["bots:write"], None)
            .await;
        for (caller, code) in [
            (writer.bearer(), "conversations_not_shared"),
            (bots_key.credential(), "insufficient_scope"),
        ] {
            app.post(
                &s.hooks(),
                &caller,
                json!({ "url": elsewhere, "events": ["message.created"] }),
            )
            .await
            .expect_error(403, code);
            app.patch(&hook_path, &caller, json!({ "url": elsewhere }))
                .await
                .expect_error(403, code);
            app.patch(&hook_path, &caller, json!({ "enabled": false }))
                .await
                .expect_error(403, code);
            app.post(&redeliver, &caller, json!({}))
                .await
                .expect_error(403, code);
            app.post(&rotate, &caller, json!({}))
                .await
                .expect_error(403, code);
        }
        // Nothing changed, nothing was sent again.
        let hooks = app.get(&s.hooks(), &s.owner).await.json()["webhooks"].clone();
        assert_eq!(hooks.as_array().unwrap().len(), 1, "{hooks}");
        assert_eq!(hooks[0]["url"], url.as_str());
        assert_eq!(hooks[0]["enabled"], true);
        let detail = s.delivery(app, &hook, &delivery).await;
        assert_eq!(detail["delivery"]["state"], "delivered");
        assert_eq!(detail["delivery"]["attempts"], 1);

        // Listed, the writer may; so may a key that also holds chats:read.
        app.put(
            &sharing,
            &s.owner,
            json!({ "policy": "listed_members", "members": [writer.user_id] }),
        )
        .await
        .expect(200);
        let chats_key = app
            .create_api_key(&s.owner, &s.org, &["bots:write", "chats:read"], None)
            .await;
        for caller in [writer.bearer(), chats_key.credential()] {
            app.post(
                &s.hooks(),
                &caller,
                json!({ "url": elsewhere, "events": ["message.created"], "enabled": false }),
            )
            .await
            .expect(201);
            app.patch(&hook_path, &caller, json!({ "max_concurrency": 3 }))
                .await
                .expect(200);
        }
        app.post(&redeliver, &writer.bearer(), json!({}))
            .await
            .expect(202);
        let again = s.wait_for_state(app, &hook, &delivery, "delivered").await;
        assert_eq!(again["delivery"]["attempts"], 2, "{again}");
        app.post(&rotate, &chats_key.credential(), json!({}))
            .await
            .expect(200);
    })
    .await;
}

/// Retries come quickly but, unlike `quick_retries`, go on for the default 24 hours: a delivery
/// that is dead at once was not retried.
fn retries_for_a_day(config: &mut confide::config::Config) {
    config.webhooks.retry.first_delay_ms = 40;
    config.webhooks.retry.max_delay_ms = 80;
    config.webhooks.poll_ms = 20;
    allow_loopback(config);
}

/// Replaces an endpoint's sealed secret behind the API's back.
async fn reseal(app: &TestApp, hook: &str, sealed: &str) {
    let db = app.database().await;
    sqlx::query("UPDATE webhooks SET secret_sealed = $1 WHERE id = $2")
        .bind(sealed)
        .bind(hook)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
}

#[tokio::test]
async fn a_webhook_whose_secret_the_server_cannot_unseal_is_dead_at_once() {
    each_backend_with(retries_for_a_day, async |app| {
        let s = setup(app).await;
        let (receiver, url) = Receiver::start().await;
        let (hook, _) = s.create_webhook(app, &url).await;
        // Sealed under a key this server does not have: the sealing key was changed without
        // keeping the old one among the previous keys.
        let lost = WebhookSecretCipher::new(&[9; 32], &[])
            .seal(&WebhookSecret::generate().unwrap(), &hook)
            .unwrap();
        reseal(app, &hook, &lost).await;
        s.chat(app, "Hello").await;
        let deliveries = s.deliveries(app, &hook).await;
        assert!(!deliveries.is_empty());
        for delivery in &deliveries {
            let id = delivery["id"].as_str().unwrap();
            let dead = s.wait_for_state(app, &hook, id, "dead").await;
            assert_eq!(dead["delivery"]["attempts"], 1, "{dead}");
            let error = dead["delivery"]["last_error"].as_str().unwrap();
            assert!(error.contains("cannot unseal"), "{error}");
            assert!(error.contains("rotate the secret"), "{error}");
        }
        assert!(receiver.all().is_empty());
        assert!(
            app.audit_actions(&s.owner, &s.org)
                .await
                .contains(&"webhook.delivery_dead".to_owned())
        );

        // A new secret, and the dead letter goes out signed with it.
        let rotated = app
            .post(
                &format!("{}/{hook}/rotate-secret", s.hooks()),
                &s.owner,
                json!({ "overlap_seconds": 0 }),
            )
            .await;
        rotated.expect(200);
        let secret = rotated.json()["secret"].as_str().unwrap().to_owned();
        let id = deliveries[0]["id"].as_str().unwrap();
        app.post(
            &format!("{}/{hook}/deliveries/{id}/redeliver", s.hooks()),
            &s.owner,
            json!({}),
        )
        .await
        .expect(202);
        let got = receiver
            .wait_for("the redelivery", |all| !all.is_empty())
            .await;
        assert!(standard_ok(&secret, &got[0]) && kindly_ok(&secret, &got[0]));
    })
    .await;
}

#[tokio::test]
async fn after_the_sealing_key_is_rotated_secrets_sealed_under_the_previous_key_still_sign() {
    let (old_key, new_key) = ([21u8; 32], [22u8; 32]);
    let rotated = move |config: &mut confide::config::Config| {
        quick_retries(config);
        config.keys.webhook_secret_key = Some(SecretString::from(STANDARD.encode(new_key)));
        config.keys.webhook_secret_previous_keys =
            Some(SecretString::from(STANDARD.encode(old_key)));
    };
    each_backend_with(rotated, async |app| {
        let s = setup(app).await;
        let (receiver, url) = Receiver::start().await;
        let (hook, _) = s.create_webhook(app, &url).await;
        // The endpoint's secret as the server sealed it before the rotation.
        let secret = WebhookSecret::generate().unwrap();
        let sealed = WebhookSecretCipher::new(&old_key, &[])
            .seal(&secret, &hook)
            .unwrap();
        reseal(app, &hook, &sealed).await;
        s.chat(app, "Hello").await;
        let got = receiver
            .wait_for("two messages", |all| all.len() >= 2)
            .await;
        assert!(
            got.iter()
                .all(|r| standard_ok(secret.expose(), r) && kindly_ok(secret.expose(), r))
        );
    })
    .await;
}

fn quiet_after_two_seconds(config: &mut confide::config::Config) {
    quick_retries(config);
    config.conversation_idle_seconds = 2;
}

fn of_type<'a>(all: &'a [Received], kind: &str) -> Vec<&'a Received> {
    all.iter().filter(|r| r.json()["type"] == kind).collect()
}

#[tokio::test]
async fn handover_and_conversation_end_events_reach_their_subscribers() {
    each_backend_with(quiet_after_two_seconds, async |app| {
        let s = setup(app).await;
        let (receiver, url) = Receiver::start().await;
        let reply = app
            .post(
                &s.hooks(),
                &s.owner,
                json!({ "url": url, "events": [
                    "handover.requested", "handover.started", "handover.ended",
                    "conversation.ended"
                ] }),
            )
            .await;
        reply.expect(201);
        let secret = reply.json()["secret"].as_str().unwrap().to_owned();

        let session = app
            .send(
                app.client
                    .post(app.url(&format!("/chat/v1/{}/sessions", s.bot_key)))
                    .header("origin", PAGE)
                    .json(&json!({ "visitor_id": "visitor-9" })),
            )
            .await;
        session.expect(201);
        let session = session.json();
        let token = session["token"].as_str().unwrap().to_owned();
        let chat = session["chat_id"].as_str().unwrap().to_owned();
        let visitor = async |path: &str, body: Value| {
            app.send(
                app.client
                    .post(app.url(path))
                    .header("x-chat-token", &token)
                    .header("origin", PAGE)
                    .json(&body),
            )
            .await
        };
        visitor("/chat/v1/messages", json!({ "text": "A human, please" }))
            .await
            .expect(202);
        visitor("/chat/v1/handover", json!({})).await.expect(202);
        let handover = format!("/api/v1/orgs/{}/bots/{}/handovers/{chat}", s.org, s.bot);
        let taken = app
            .post(&format!("{handover}/take"), &s.owner, json!({}))
            .await;
        taken.expect(200);
        let agent = taken.json()["agent"].as_str().unwrap().to_owned();
        // Taking it again changes nothing and tells nobody.
        app.post(&format!("{handover}/take"), &s.owner, json!({}))
            .await
            .expect(200);
        app.post(&format!("{handover}/end"), &s.owner, json!({}))
            .await
            .expect(200);

        let got = receiver
            .wait_for("the handover events and the end", |all| {
                of_type(all, "handover.ended").len() == 1
                    && of_type(all, "conversation.ended").len() == 1
            })
            .await;
        for kind in ["handover.requested", "handover.started", "handover.ended"] {
            let events = of_type(&got, kind);
            assert_eq!(events.len(), 1, "{kind} once");
            assert!(kindly_ok(&secret, events[0]) && standard_ok(&secret, events[0]));
            let body = events[0].json();
            assert_eq!(body["chat_id"], chat.as_str());
            assert_eq!(body["bot_id"], s.bot.as_str());
            assert_eq!(body["organization_id"], s.org.as_str());
            assert_eq!(body["user_id"], "visitor-9");
            let expected_agent = if kind == "handover.requested" {
                Value::Null
            } else {
                Value::from(agent.as_str())
            };
            assert_eq!(body["agent"], expected_agent, "{kind}");
        }
        assert!(
            got.iter().all(|r| r.json()["type"] != "message.created"),
            "only the subscribed events arrive"
        );
        let ended = of_type(&got, "conversation.ended")[0].json();
        assert_eq!(ended["chat_id"], chat.as_str());
        assert_eq!(ended["web_host"], "shop.example.com");
        assert!(ended["_links"]["chat"].as_str().unwrap().ends_with(&chat));

        // A new message opens the conversation again; it ends once more, with a new event.
        visitor("/chat/v1/messages", json!({ "text": "One more thing" }))
            .await
            .expect(202);
        let got = receiver
            .wait_for("the second end", |all| {
                of_type(all, "conversation.ended").len() == 2
            })
            .await;
        let ids: Vec<&str> = of_type(&got, "conversation.ended")
            .iter()
            .map(|r| r.header("webhook-id"))
            .collect();
        assert_ne!(ids[0], ids[1]);
        // A quiet conversation ends once, however many sweeps pass over it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(of_type(&receiver.all(), "conversation.ended").len(), 2);
    })
    .await;
}

#[tokio::test]
async fn the_widgets_context_reaches_the_webhooks_apart_from_the_bots_own_memory() {
    each_backend_with(quick_retries, async |app| {
        let s = setup(app).await;
        let (receiver, url) = Receiver::start().await;
        s.create_webhook(app, &url).await;
        // A reply that would use `plan` if the page's context counted as the bot's memory.
        app.post(
            &format!("/api/v1/orgs/{}/bots/{}/dialogues", s.org, s.bot),
            &s.owner,
            json!({ "name": "Plan", "patterns": ["my plan"],
                    "replies": ["You are on {plan}.", "Which plan are you on?"] }),
        )
        .await
        .expect(201);
        let start = async |context: Value| {
            app.send(
                app.client
                    .post(app.url(&format!("/chat/v1/{}/sessions", s.bot_key)))
                    .header("origin", PAGE)
                    .json(&json!({ "context": context })),
            )
            .await
        };
        start(json!({ "1st": "no" }))
            .await
            .expect_error(422, "invalid_context");
        start(json!({ "plan": { "nested": true } }))
            .await
            .expect_error(422, "invalid_context");
        let session = start(json!({ "plan": "gold", "seats": 3, "trial": false })).await;
        session.expect(201);
        let token = session.json()["token"].as_str().unwrap().to_owned();
        let sent = app
            .send(
                app.client
                    .post(app.url("/chat/v1/messages"))
                    .header("x-chat-token", &token)
                    .header("origin", PAGE)
                    .json(&json!({ "text": "What is my plan?" })),
            )
            .await;
        sent.expect(202);
        assert_eq!(sent.json()["reply"]["text"], "Which plan are you on?");
        let got = receiver
            .wait_for("both messages", |all| all.len() >= 2)
            .await;
        for delivery in &got {
            let body = delivery.json();
            assert_eq!(
                body["visitor_context"],
                json!({ "plan": "gold", "seats": "3", "trial": "false" })
            );
            assert_eq!(body["context"], json!({}), "the bot's own memory is apart");
        }
    })
    .await;
}
