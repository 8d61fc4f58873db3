//! A bot as a document: exported with its settings, dialogues and nudges, imported into another
//! organization as a new bot that behaves the same, and refused whole when any part is wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{Credential, TestApp, each_backend, email};
use serde_json::{Value, json};

async fn say(app: &TestApp, bot_key: &str, text: &str) -> String {
    let session = app
        .send(
            app.client
                .post(app.url(&format!("/chat/v1/{bot_key}/sessions")))
                .json(&json!({})),
        )
        .await;
    session.expect(201);
    let token = session.json()["token"].as_str().unwrap().to_owned();
    let sent = app
        .send(
            app.client
                .post(app.url("/chat/v1/messages"))
                .header("x-chat-token", token)
                .json(&json!({ "text": text })),
        )
        .await;
    sent.expect(202);
    sent.json()["reply"]["text"].as_str().unwrap().to_owned()
}

/// The document without what differs between two bots with the same content: the export time
/// and the dialogues' ids (each bot has its own; buttons and follow-ups follow them).
fn without_time(mut document: Value) -> Value {
    document.as_object_mut().unwrap().remove("exported_at");
    for dialogue in document["dialogues"].as_array_mut().unwrap() {
        assert!(dialogue["id"].is_string(), "each dialogue has its id");
        dialogue.as_object_mut().unwrap().remove("id");
    }
    document
}

async fn bot_count(app: &TestApp, org: &str, who: &Credential) -> usize {
    let bots = app.get(&format!("/api/v1/orgs/{org}/bots"), who).await;
    bots.expect(200);
    bots.json()["bots"].as_array().unwrap().len()
}

#[tokio::test]
async fn an_exported_bot_imports_elsewhere_and_answers_the_same() {
    each_backend(async |app| {
        let (a, a_owner) = app.owner(&email("a"), "Exporter").await;
        let owner = a_owner.bearer();
        let bot = app.create_bot(&owner, &a.org_id, "Anvil Advisor").await;
        let base = format!("/api/v1/orgs/{}/bots/{}", a.org_id, bot.id);
        app.put(
            &format!("{base}/chat-settings"),
            &owner,
            json!({ "greeting": "Hello!", "fallback_reply": "Hm?", "allowed_domains": [],
                    "languages": ["en", "nb"], "greetings": { "nb": "Hei!" } }),
        )
        .await
        .expect(200);
        for dialogue in [
            json!({ "name": "Orders", "patterns": ["order (\\d+)"], "context_key": "order",
                    "replies": ["Order {order} is on its way."] }),
            json!({ "name": "Password", "samples": { "en": ["how do I reset my password"] },
                    "replies": ["Use the reset link."] }),
        ] {
            app.post(&format!("{base}/dialogues"), &owner, dialogue)
                .await
                .expect(201);
        }
        app.post(
            &format!("{base}/nudges"),
            &owner,
            json!({ "name": "Sale", "title": "Anvils half price", "text": "This week only.",
                    "rules": { "paths": ["/anvils/*"], "seconds_on_page": 5 } }),
        )
        .await
        .expect(201);
        let exported = app.get(&format!("{base}/export"), &owner).await;
        exported.expect(200);
        let document = exported.json();
        assert_eq!(document["format"], "confide.bot");
        assert_eq!(document["version"], 1);
        assert_eq!(document["dialogues"].as_array().unwrap().len(), 2);
        assert!(
            !exported.text.contains(&bot.key),
            "the widget key stays with the original bot"
        );

        let (b, b_owner) = app.owner(&email("b"), "Importer").await;
        let imported = app
            .post(
                &format!("/api/v1/orgs/{}/bots/import", b.org_id),
                &b_owner.bearer(),
                document.clone(),
            )
            .await;
        imported.expect(201);
        let copy = imported.json();
        assert_ne!(copy["id"], Value::from(bot.id.as_str()));
        assert_eq!(copy["name"], "Anvil Advisor");
        let copy_base = format!(
            "/api/v1/orgs/{}/bots/{}",
            b.org_id,
            copy["id"].as_str().unwrap()
        );
        let again = app
            .get(&format!("{copy_base}/export"), &b_owner.bearer())
            .await;
        again.expect(200);
        assert_eq!(without_time(again.json()), without_time(document));
        let copy_key = copy["key"].as_str().unwrap();
        assert_eq!(
            say(app, copy_key, "Where is order 42?").await,
            "Order 42 is on its way."
        );
        assert_eq!(
            say(app, copy_key, "How can I reset my password?").await,
            "Use the reset link."
        );
        let actions = app.audit_actions(&b_owner.bearer(), &b.org_id).await;
        assert!(actions.iter().any(|a| a == "bot.imported"));
    })
    .await;
}

#[tokio::test]
async fn a_document_with_any_bad_part_creates_nothing() {
    each_backend(async |app| {
        let (a, a_owner) = app.owner(&email("a"), "Importer").await;
        let owner = a_owner.bearer();
        let path = format!("/api/v1/orgs/{}/bots/import", a.org_id);
        let good = json!({
            "format": "confide.bot", "version": 1, "bot": { "name": "Copy" },
            "chat_settings": { "greeting": "Hi", "fallback_reply": "Hm", "allowed_domains": [] },
            "dialogues": [
                { "name": "Fine", "patterns": ["fine"], "replies": ["Fine."] },
                { "name": "Also fine", "patterns": ["ok"], "replies": ["OK."] },
            ],
            "nudges": [],
        });
        let mut newer = good.clone();
        newer["version"] = json!(2);
        let mut bad_pattern = good.clone();
        bad_pattern["dialogues"][1]["patterns"] = json!(["(unclosed"]);
        let mut bad_nudge = good.clone();
        bad_nudge["nudges"] = json!([{ "name": "N", "title": "T", "text": "X",
                                       "rules": { "paths": ["no-slash"] } }]);
        let mut identity = good.clone();
        identity["chat_settings"]["require_identity"] = json!(true);
        for (document, status, code, place) in [
            (newer, 422, "unsupported_document", ""),
            (bad_pattern, 422, "invalid_pattern", "dialogues[1]: "),
            (bad_nudge, 422, "invalid_rules", "nudges[0]: "),
            (identity, 409, "no_identity_keys", "chat_settings: "),
        ] {
            let refused = app.post(&path, &owner, document).await;
            refused.expect_error(status, code);
            assert!(
                refused.json()["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with(place),
                "{}",
                refused.text
            );
        }
        assert_eq!(
            bot_count(app, &a.org_id, &owner).await,
            0,
            "nothing remains"
        );
        // A member who may not create bots cannot import one either.
        let member = app.member(&owner, &a.org_id, &email("m"), "member").await;
        app.post(&path, &member.bearer(), good.clone())
            .await
            .expect_error(403, "forbidden");
        app.post(&path, &owner, good).await.expect(201);
        assert_eq!(bot_count(app, &a.org_id, &owner).await, 1);
    })
    .await;
}
