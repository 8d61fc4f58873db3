//! Human handover end to end: a visitor asks for a human, an agent (a member with write permission
//! on the bot) finds the chat in the queue, takes it and replies through the API, and the visitor
//! receives the reply over the chat's realtime channel; the bot stays quiet meanwhile and answers
//! again once the agent ends it. Members without the right permission, or outside the sharing
//! policy, cannot see the queue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::visitor::Visitor;
use common::{Credential, TestApp, each_backend, email};
use serde_json::{Value, json};

struct Shop {
    org: String,
    owner: Credential,
    bot_id: String,
    bot_key: String,
}

impl Shop {
    fn handovers(&self) -> String {
        format!("/api/v1/orgs/{}/bots/{}/handovers", self.org, self.bot_id)
    }
}

async fn shop(app: &TestApp) -> Shop {
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
        json!({ "greeting": "Hi!", "fallback_reply": "I am only a bot.", "allowed_domains": [] }),
    )
    .await
    .expect(200);
    Shop {
        org: owner.org_id,
        owner: session.bearer(),
        bot_id: bot.id,
        bot_key: bot.key,
    }
}

#[tokio::test]
async fn an_agent_takes_over_and_the_visitor_hears_them_over_the_channel() {
    each_backend(async |app| {
        let s = shop(app).await;
        let agent = app
            .member(&s.owner, &s.org, &email("agent"), "member")
            .await;
        app.grant(&s.owner, &s.org, &s.bot_id, &agent.user_id, "write")
            .await;
        let agent = agent.bearer();

        let mut visitor = Visitor::start(app, &s.bot_key).await;
        let asked = visitor.post(app, "/chat/v1/handover", json!({})).await;
        asked.expect(202);
        assert_eq!(asked.json()["state"], "requested");
        assert_eq!(
            visitor.next().await,
            ("handover".to_owned(), json!({ "state": "requested" }))
        );

        // While waiting, the bot stays quiet and the message is for the agents.
        let sent = visitor
            .post(
                app,
                "/chat/v1/messages",
                json!({ "text": "My parcel never came" }),
            )
            .await;
        sent.expect(202);
        assert_eq!(sent.json()["reply"], Value::Null);
        let (event, message) = visitor.next().await;
        assert_eq!(
            (event.as_str(), message["sender"].as_str()),
            ("message", Some("visitor"))
        );

        let queue = app.get(&s.handovers(), &agent).await;
        queue.expect(200);
        let queued = queue.json()["handovers"].as_array().unwrap().clone();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0]["chat_id"], visitor.chat_id.as_str());
        assert_eq!(queued[0]["state"], "requested");
        let chat_path = format!("{}/{}", s.handovers(), visitor.chat_id);
        let detail = app.get(&chat_path, &agent).await;
        detail.expect(200);
        assert_eq!(detail.json()["messages"][0]["text"], "My parcel never came");

        // Replying needs taking first; taking is one agent's.
        app.post(
            &format!("{chat_path}/messages"),
            &agent,
            json!({ "text": "Hello" }),
        )
        .await
        .expect_error(409, "not_your_handover");
        let taken = app
            .post(&format!("{chat_path}/take"), &agent, json!({}))
            .await;
        taken.expect(200);
        assert_eq!(taken.json()["state"], "agent");
        assert_eq!(
            visitor.next().await,
            ("handover".to_owned(), json!({ "state": "agent" }))
        );
        app.post(&format!("{chat_path}/take"), &s.owner, json!({}))
            .await
            .expect_error(409, "not_available");

        let reply = app
            .post(
                &format!("{chat_path}/messages"),
                &agent,
                json!({ "text": "Sorry about that - I am resending it today." }),
            )
            .await;
        reply.expect(201);
        let (event, message) = visitor.next().await;
        assert_eq!(event, "message");
        assert_eq!(message["sender"], "agent");
        assert_eq!(
            message["text"],
            "Sorry about that - I am resending it today."
        );

        // Ending hands the chat back to the bot.
        app.post(&format!("{chat_path}/end"), &agent, json!({}))
            .await
            .expect(200);
        assert_eq!(
            visitor.next().await,
            ("handover".to_owned(), json!({ "state": "ended" }))
        );
        let sent = visitor
            .post(app, "/chat/v1/messages", json!({ "text": "Thanks!" }))
            .await;
        sent.expect(202);
        assert_eq!(sent.json()["reply"]["text"], "I am only a bot.");
        let queue = app.get(&s.handovers(), &agent).await;
        assert_eq!(queue.json()["handovers"], json!([]));
        let actions = app.audit_actions(&s.owner, &s.org).await;
        assert!(actions.contains(&"handover.taken".to_owned()));
        assert!(actions.contains(&"handover.ended".to_owned()));
    })
    .await;
}

#[tokio::test]
async fn only_agents_the_bot_and_its_sharing_policy_allow_see_the_queue() {
    each_backend(async |app| {
        let s = shop(app).await;
        let mut visitor = Visitor::start(app, &s.bot_key).await;
        visitor
            .post(app, "/chat/v1/handover", json!({}))
            .await
            .expect(202);
        visitor.next().await;

        let stranger = app
            .member(&s.owner, &s.org, &email("stranger"), "member")
            .await
            .bearer();
        let reader = app
            .member(&s.owner, &s.org, &email("reader"), "member")
            .await;
        app.grant(&s.owner, &s.org, &s.bot_id, &reader.user_id, "read")
            .await;
        let writer = app
            .member(&s.owner, &s.org, &email("writer"), "member")
            .await;
        app.grant(&s.owner, &s.org, &s.bot_id, &writer.user_id, "write")
            .await;

        app.get(&s.handovers(), &stranger)
            .await
            .expect_error(404, "not_found");
        app.get(&s.handovers(), &reader.bearer())
            .await
            .expect_error(403, "forbidden");
        app.get(&s.handovers(), &writer.bearer()).await.expect(200);

        // Conversations shared with listed members only: the writer is not listed.
        app.put(
            &format!("/api/v1/orgs/{}/bots/{}/sharing", s.org, s.bot_id),
            &s.owner,
            json!({ "policy": "listed_members", "members": [] }),
        )
        .await
        .expect(200);
        let chat_path = format!("{}/{}", s.handovers(), visitor.chat_id);
        for refused in [
            app.get(&s.handovers(), &writer.bearer()).await,
            app.post(&format!("{chat_path}/take"), &writer.bearer(), json!({}))
                .await,
        ] {
            refused.expect_error(403, "conversations_not_shared");
        }
        // The owner always sees them; a key needs chats:write.
        app.get(&s.handovers(), &s.owner).await.expect(200);
        let bots_key = app
            .create_api_key(&s.owner, &s.org, &["bots:write"], None)
            .await;
        app.get(&s.handovers(), &bots_key.credential())
            .await
            .expect_error(403, "insufficient_scope");
        let chats_key = app
            .create_api_key(&s.owner, &s.org, &["chats:write"], None)
            .await;
        let taken = app
            .post(
                &format!("{chat_path}/take"),
                &chats_key.credential(),
                json!({}),
            )
            .await;
        taken.expect(200);
        assert!(
            taken.json()["agent"]
                .as_str()
                .unwrap()
                .starts_with("api_key:")
        );
    })
    .await;
}

#[tokio::test]
async fn the_fallback_can_offer_a_human_and_pressing_that_button_asks_for_one() {
    each_backend(async |app| {
        let s = shop(app).await;
        let settings = format!("/api/v1/orgs/{}/bots/{}/chat-settings", s.org, s.bot_id);
        // Off by default: the fallback offers nothing.
        let fresh = app.get(&settings, &s.owner).await;
        fresh.expect(200);
        assert_eq!(fresh.json()["fallback_human_button"], Value::Null);
        let mut visitor = Visitor::start(app, &s.bot_key).await;
        let plain = visitor
            .post(app, "/chat/v1/messages", json!({ "text": "qwerty" }))
            .await;
        plain.expect(202);
        assert_eq!(plain.json()["reply"]["text"], "I am only a bot.");
        assert!(
            plain.json()["reply"]["buttons"]
                .as_array()
                .is_none_or(Vec::is_empty)
        );

        let base = json!({ "greeting": "Hi!", "fallback_reply": "I am only a bot.",
                           "allowed_domains": [], "languages": ["en", "nb"] });
        for (field, value, code) in [
            ("fallback_human_button", json!("<i></i>"), "invalid_text"),
            (
                "fallback_human_button",
                json!("x".repeat(41)),
                "invalid_text",
            ),
            (
                "fallback_human_buttons",
                json!({ "de": "Mensch" }),
                "unknown_language",
            ),
            (
                "fallback_human_buttons",
                json!({ "en": "Human" }),
                "invalid_language",
            ),
        ] {
            let mut body = base.clone();
            body[field] = value;
            app.put(&settings, &s.owner, body)
                .await
                .expect_error(422, code);
        }
        let mut body = base.clone();
        body["fallback_human_button"] = json!(" Talk to a <b>person</b> ");
        body["fallback_human_buttons"] = json!({ "nb": "Snakk med et menneske" });
        let saved = app.put(&settings, &s.owner, body).await;
        saved.expect(200);
        assert_eq!(saved.json()["fallback_human_button"], "Talk to a person");
        // Omitted: unchanged.
        let kept = app.put(&settings, &s.owner, base.clone()).await;
        kept.expect(200);
        assert_eq!(kept.json()["fallback_human_button"], "Talk to a person");

        let unsure = visitor
            .post(app, "/chat/v1/messages", json!({ "text": "asdfgh" }))
            .await;
        unsure.expect(202);
        let reply = unsure.json()["reply"].clone();
        assert_eq!(reply["text"], "I am only a bot.");
        assert_eq!(
            reply["buttons"],
            json!([{ "label": "Talk to a person", "handover": true }])
        );
        // In the visitor's language when the bot has the label in it.
        let norsk = visitor
            .post(
                app,
                "/chat/v1/messages",
                json!({ "text": "hmm", "language_code": "nb" }),
            )
            .await;
        norsk.expect(202);
        assert_eq!(
            norsk.json()["reply"]["buttons"][0]["label"],
            "Snakk med et menneske"
        );

        // Pressing it: the label is the visitor's message, nobody answers it, the chat waits for
        // a human and the agents' queue has it.
        let pressed = visitor
            .post(
                app,
                "/chat/v1/messages",
                json!({ "text": "ignored", "button": { "message_id": reply["id"], "index": 0 } }),
            )
            .await;
        pressed.expect(202);
        assert_eq!(pressed.json()["message"]["text"], "Talk to a person");
        assert_eq!(pressed.json()["reply"], Value::Null);
        loop {
            let (event, data) = visitor.next().await;
            if event == "handover" {
                assert_eq!(data, json!({ "state": "requested" }));
                break;
            }
        }
        let queue = app.get(&s.handovers(), &s.owner).await;
        queue.expect(200);
        assert_eq!(
            queue.json()["handovers"][0]["chat_id"],
            visitor.chat_id.as_str()
        );
        assert_eq!(queue.json()["handovers"][0]["state"], "requested");

        // Turned off again (null): the fallback offers nothing.
        let mut off = base.clone();
        off["fallback_human_button"] = Value::Null;
        let off = app.put(&settings, &s.owner, off).await;
        off.expect(200);
        assert_eq!(off.json()["fallback_human_button"], Value::Null);
    })
    .await;
}
