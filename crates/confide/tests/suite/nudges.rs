//! Nudges through the public interface: builders write them (validated), the widget reads the
//! ones it shows by itself, an agent sends one to a live chat and the visitor receives it over the
//! realtime channel, and a form answer reaches the `nudge.submitted` webhooks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::receiver::Receiver;
use common::visitor::Visitor;
use common::{TestApp, each_backend_with, email};
use serde_json::{Value, json};

fn allow_loopback(config: &mut confide::config::Config) {
    config.outbound_allow = confide_outbound::Allowlist::parse(&["127.0.0.0/8"]).unwrap();
}

struct Shop {
    org: String,
    bot: String,
    bot_key: String,
    owner: common::Credential,
}

impl Shop {
    fn nudges(&self) -> String {
        format!("/api/v1/orgs/{}/bots/{}/nudges", self.org, self.bot)
    }

    async fn nudge(&self, app: &TestApp, body: Value) -> String {
        let reply = app.post(&self.nudges(), &self.owner, body).await;
        reply.expect(201);
        reply.json()["id"].as_str().unwrap().to_owned()
    }
}

async fn shop(app: &TestApp, name: &str) -> Shop {
    let (owner, session) = app.owner(&email("owner"), name).await;
    let bot = app
        .create_bot(&session.bearer(), &owner.org_id, "Nudger")
        .await;
    Shop {
        org: owner.org_id,
        bot: bot.id,
        bot_key: bot.key,
        owner: session.bearer(),
    }
}

fn newsletter() -> Value {
    json!({
        "name": "Newsletter",
        "title": "Stay in the loop",
        "text": "News once a month.\nNo spam.",
        "form": { "label": "Your email", "input": "email", "button": "Sign up" },
        "rules": { "paths": ["/blog/*", "/pricing", "/blog/*"], "seconds_on_page": 10 },
    })
}

#[tokio::test]
async fn nudges_are_validated_and_only_writers_change_them() {
    each_backend_with(allow_loopback, async |app| {
        let s = shop(app, "Nudge Shop").await;
        let created = app.post(&s.nudges(), &s.owner, newsletter()).await;
        created.expect(201);
        let body = created.json();
        assert_eq!(body["rules"]["paths"], json!(["/blog/*", "/pricing"]));
        assert_eq!(body["text"], "News once a month.\nNo spam.");
        assert_eq!(body["enabled"], true);
        let id = body["id"].as_str().unwrap().to_owned();

        let mut bad_rules = newsletter();
        bad_rules["rules"]["paths"] = json!(["blog"]);
        let mut control = newsletter();
        control["title"] = json!("\rStay");
        let mut long_wait = newsletter();
        long_wait["rules"]["seconds_on_page"] = json!(3601);
        let mut bad_input = newsletter();
        bad_input["form"]["input"] = json!("phone");
        for (body, status, code) in [
            (bad_rules, 422, "invalid_rules"),
            (control, 422, "invalid_nudge"),
            (long_wait, 422, "invalid_rules"),
            (bad_input, 422, "invalid_body"),
        ] {
            app.post(&s.nudges(), &s.owner, body)
                .await
                .expect_error(status, code);
        }

        // A reader sees them but cannot change them.
        let reader = app
            .member(&s.owner, &s.org, &email("reader"), "member")
            .await;
        app.grant(&s.owner, &s.org, &s.bot, &reader.user_id, "read")
            .await;
        let list = app.get(&s.nudges(), &reader.bearer()).await;
        list.expect(200);
        assert_eq!(list.json()["nudges"].as_array().unwrap().len(), 1);
        app.put(
            &format!("{}/{id}", s.nudges()),
            &reader.bearer(),
            newsletter(),
        )
        .await
        .expect_error(403, "forbidden");

        let mut off = newsletter();
        off["enabled"] = json!(false);
        let saved = app
            .put(&format!("{}/{id}", s.nudges()), &s.owner, off)
            .await;
        saved.expect(200);
        assert_eq!(saved.json()["enabled"], false);
        app.delete(&format!("{}/{id}", s.nudges()), &s.owner)
            .await
            .expect(204);
        app.get(&format!("{}/{id}", s.nudges()), &s.owner)
            .await
            .expect_error(404, "not_found");
        let actions = app.audit_actions(&s.owner, &s.org).await;
        for action in ["nudge.created", "nudge.updated", "nudge.deleted"] {
            assert!(actions.iter().any(|a| a == action), "{action} audited");
        }
    })
    .await;
}

#[tokio::test]
async fn the_widget_gets_its_rules_an_agent_sends_one_and_answers_reach_the_webhook() {
    each_backend_with(allow_loopback, async |app| {
        let s = shop(app, "Nudge Shop").await;
        let (receiver, url) = Receiver::start().await;
        app.post(
            &format!("/api/v1/orgs/{}/bots/{}/webhooks", s.org, s.bot),
            &s.owner,
            json!({ "url": url, "events": ["nudge.submitted"] }),
        )
        .await
        .expect(201);
        let shown = s.nudge(app, newsletter()).await;
        let mut api_only = newsletter();
        api_only["name"] = json!("Survey");
        api_only["title"] = json!("How did we do?");
        api_only["form"] = json!({ "label": "Say it", "input": "text", "button": "Send" });
        api_only.as_object_mut().unwrap().remove("rules");
        let survey = s.nudge(app, api_only).await;
        let mut disabled = newsletter();
        disabled["enabled"] = json!(false);
        s.nudge(app, disabled).await;
        let mut no_form = newsletter();
        no_form.as_object_mut().unwrap().remove("form");
        let plain = s.nudge(app, no_form).await;

        let mut visitor = Visitor::start(app, &s.bot_key).await;
        // What the widget shows by itself; a page needs no chat to see it.
        let listed = app
            .get(
                &format!("/chat/v1/{}/nudges", s.bot_key),
                &common::Credential::Anonymous,
            )
            .await;
        listed.expect(200);
        let ids: Vec<&str> = listed.json()["nudges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap())
            .collect::<Vec<_>>()
            .into_iter()
            .map(|id| if id == shown { "shown" } else if id == plain { "plain" } else { "other" })
            .collect();
        assert_eq!(ids, vec!["shown", "plain"], "enabled nudges with rules only");

        // An agent sends the survey to this chat; it arrives over the channel.
        app.post(
            &format!("{}/{survey}/send", s.nudges()),
            &s.owner,
            json!({ "chat_id": visitor.chat_id }),
        )
        .await
        .expect(202);
        let (event, data) = visitor.next().await;
        assert_eq!(event, "nudge");
        assert_eq!(data["id"], survey.as_str());
        assert_eq!(data["title"], "How did we do?");
        assert_eq!(data["form"]["button"], "Send");
        // A chat of another bot is not this bot's to nudge.
        let other = shop(app, "Elsewhere").await;
        let stranger = Visitor::start(app, &other.bot_key).await;
        app.post(
            &format!("{}/{survey}/send", s.nudges()),
            &s.owner,
            json!({ "chat_id": stranger.chat_id }),
        )
        .await
        .expect_error(404, "not_found");

        let submit = async |visitor: &Visitor, nudge: &str, value: &str| {
            visitor
                .post(
                    app,
                    &format!("/chat/v1/nudges/{nudge}/submit"),
                    json!({ "value": value }),
                )
                .await
        };
        submit(&visitor, &shown, "not an address")
            .await
            .expect_error(422, "invalid_nudge");
        submit(&visitor, &plain, "ann@example.com")
            .await
            .expect_error(404, "not_found");
        submit(&stranger, &shown, "ann@example.com")
            .await
            .expect_error(404, "not_found");
        submit(&visitor, &shown, " ann@example.com ").await.expect(202);
        submit(&visitor, &survey, "Quick and kind").await.expect(202);

        let got = receiver
            .wait_for("two answers", |all| all.len() >= 2)
            .await;
        let mut answers: Vec<(String, String)> = got
            .iter()
            .map(|r| {
                let body = r.json();
                assert_eq!(body["type"], "nudge.submitted");
                assert_eq!(body["chat_id"], visitor.chat_id.as_str());
                assert_eq!(body["bot_id"], s.bot.as_str());
                (
                    body["nudge"]["id"].as_str().unwrap().to_owned(),
                    body["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        answers.sort();
        let mut expected = vec![
            (shown.clone(), "ann@example.com".to_owned()),
            (survey.clone(), "Quick and kind".to_owned()),
        ];
        expected.sort();
        assert_eq!(answers, expected);
        // Only for pages that may embed the bot.
        app.put(
            &format!("/api/v1/orgs/{}/bots/{}/chat-settings", s.org, s.bot),
            &s.owner,
            json!({ "greeting": "Hi", "fallback_reply": "Hm", "allowed_domains": ["shop.example.com"] }),
        )
        .await
        .expect(200);
        let foreign = app
            .send(
                app.client
                    .get(app.url(&format!("/chat/v1/{}/nudges", s.bot_key)))
                    .header("origin", "https://evil.example.net"),
            )
            .await;
        foreign.expect_error(403, "origin_not_allowed");
        let own = app
            .send(
                app.client
                    .get(app.url(&format!("/chat/v1/{}/nudges", s.bot_key)))
                    .header("origin", "https://shop.example.com"),
            )
            .await;
        own.expect(200);
    })
    .await;
}
