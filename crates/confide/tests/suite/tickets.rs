//! Tickets through the public interface: an agent makes one from a chat, every change (theirs,
//! the visitor writing again, the server's) arrives as a signed `ticket.updated` webhook; a
//! handover request nobody takes within the bot's `ticket_after_seconds` becomes a ticket once;
//! tickets follow the chats' permissions and go when the chat is erased.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::time::Duration;

use common::receiver::{Received, Receiver, kindly_ok, standard_ok};
use common::visitor::Visitor;
use common::{Credential, SignedIn, TestApp, each_backend_with, email};
use serde_json::{Value, json};

/// The receivers listen on 127.0.0.1, which the SSRF-safe client refuses unless allowed.
fn allow_loopback(config: &mut confide::config::Config) {
    config.outbound_allow = confide_outbound::Allowlist::parse(&["127.0.0.0/8"]).unwrap();
}

struct Shop {
    org: String,
    owner: Credential,
    bot_id: String,
    bot_key: String,
    /// A member with write permission on the bot.
    agent: SignedIn,
}

impl Shop {
    fn tickets(&self) -> String {
        format!("/api/v1/orgs/{}/bots/{}/tickets", self.org, self.bot_id)
    }

    fn ticket(&self, id: &str) -> String {
        format!("{}/{id}", self.tickets())
    }

    fn settings(&self) -> String {
        format!(
            "/api/v1/orgs/{}/bots/{}/chat-settings",
            self.org, self.bot_id
        )
    }

    /// A webhook for `events` on the receiver; answers its secret.
    async fn webhook(&self, app: &TestApp, url: &str, events: &[&str]) -> String {
        let reply = app
            .post(
                &format!("/api/v1/orgs/{}/bots/{}/webhooks", self.org, self.bot_id),
                &self.owner,
                json!({ "url": url, "events": events }),
            )
            .await;
        reply.expect(201);
        reply.json()["secret"].as_str().unwrap().to_owned()
    }
}

async fn shop(app: &TestApp, ticket_after_seconds: u32) -> Shop {
    let (owner, session) = app.owner(&email("owner"), "Shop").await;
    let bot = app
        .create_bot(&session.bearer(), &owner.org_id, "Helper")
        .await;
    let agent = app
        .member(&session.bearer(), &owner.org_id, &email("agent"), "member")
        .await;
    app.grant(
        &session.bearer(),
        &owner.org_id,
        &bot.id,
        &agent.user_id,
        "write",
    )
    .await;
    let s = Shop {
        org: owner.org_id,
        owner: session.bearer(),
        bot_id: bot.id,
        bot_key: bot.key,
        agent,
    };
    app.put(
        &s.settings(),
        &s.owner,
        json!({ "greeting": "Hi!", "fallback_reply": "I am only a bot.", "allowed_domains": [],
                "ticket_after_seconds": ticket_after_seconds }),
    )
    .await
    .expect(200);
    s
}

fn tickets_in(got: &[Received]) -> Vec<Value> {
    got.iter()
        .map(Received::json)
        .filter(|body| body["type"] == "ticket.updated")
        .collect()
}

#[tokio::test]
async fn an_agents_ticket_and_each_change_to_it_arrive_as_signed_ticket_updated_webhooks() {
    each_backend_with(allow_loopback, async |app| {
        let s = shop(app, 0).await;
        let agent = s.agent.bearer();
        let (receiver, url) = Receiver::start().await;
        receiver.answer_with("ok");
        let secret = s.webhook(app, &url, &["ticket.updated"]).await;

        let visitor = Visitor::start(app, &s.bot_key).await;
        visitor
            .post(
                app,
                "/chat/v1/messages",
                json!({ "text": "My parcel\nnever came" }),
            )
            .await
            .expect(202);

        let created = app
            .post(&s.tickets(), &agent, json!({ "chat_id": visitor.chat_id }))
            .await;
        created.expect(201);
        let ticket = created.json();
        let id = ticket["id"].as_str().unwrap().to_owned();
        assert_eq!(ticket["chat_id"], visitor.chat_id.as_str());
        assert_eq!(ticket["status"], "open");
        assert_eq!(ticket["reason"], "agent");
        // The visitor's latest words, on one line.
        assert_eq!(ticket["subject"], "My parcel never came");
        assert_eq!(
            ticket["created_by"],
            format!("user:{}", s.agent.user_id).as_str()
        );
        assert_eq!(ticket["version"], 1);
        assert_eq!(ticket["assignee"], Value::Null);
        // One ticket per chat.
        app.post(
            &s.tickets(),
            &s.owner,
            json!({ "chat_id": visitor.chat_id }),
        )
        .await
        .expect_error(409, "ticket_exists");

        // Waiting for the visitor, assigned to the agent.
        let pending = app
            .patch(
                &s.ticket(&id),
                &agent,
                json!({ "status": "pending", "assignee_id": s.agent.user_id, "version": 1 }),
            )
            .await;
        pending.expect(200);
        assert_eq!(pending.json()["status"], "pending");
        assert_eq!(pending.json()["version"], 2);
        let assignee = format!("user:{}", s.agent.user_id);
        assert_eq!(pending.json()["assignee"], assignee.as_str());
        // A change made from the first version is refused, not applied over the second.
        app.patch(
            &s.ticket(&id),
            &s.owner,
            json!({ "status": "solved", "version": 1 }),
        )
        .await
        .expect_error(409, "ticket_changed");
        // The same values again change nothing.
        let same = app
            .patch(&s.ticket(&id), &agent, json!({ "status": "pending" }))
            .await;
        same.expect(200);
        assert_eq!(same.json()["version"], 2);

        // The visitor writing again is the team's turn again.
        visitor
            .post(app, "/chat/v1/messages", json!({ "text": "Still nothing" }))
            .await
            .expect(202);
        let reopened = app.get(&s.ticket(&id), &agent).await;
        reopened.expect(200);
        assert_eq!(reopened.json()["status"], "open");
        assert_eq!(reopened.json()["version"], 3);

        let solved = app
            .patch(
                &s.ticket(&id),
                &agent,
                json!({ "status": "solved", "subject": "<b>Lost</b> parcel" }),
            )
            .await;
        solved.expect(200);
        let solved = solved.json();
        assert_eq!(solved["status"], "solved");
        assert_eq!(solved["subject"], "Lost parcel");
        assert!(solved["solved_at"].is_string());
        // Spelled markup in a plain text is refused, not stored.
        app.patch(
            &s.ticket(&id),
            &agent,
            json!({ "subject": "&lt;script&gt;" }),
        )
        .await
        .expect_error(422, "markup_not_allowed");

        let got = receiver
            .wait_for("four ticket changes", |all| tickets_in(all).len() >= 4)
            .await;
        for delivery in &got {
            assert!(kindly_ok(&secret, delivery), "Kindly-HMAC verifies");
            assert!(standard_ok(&secret, delivery), "webhook-signature verifies");
        }
        let mut events = tickets_in(&got);
        events.sort_by_key(|e| e["ticket"]["version"].as_i64());
        let seen: Vec<(Value, Value, Value, Value)> = events
            .iter()
            .map(|e| {
                (
                    e["ticket"]["version"].clone(),
                    e["ticket"]["status"].clone(),
                    e["previous"]["status"].clone(),
                    e["changed_by"].clone(),
                )
            })
            .collect();
        let agent_label = json!(format!("user:{}", s.agent.user_id));
        assert_eq!(
            seen,
            vec![
                (json!(1), json!("open"), Value::Null, agent_label.clone()),
                (
                    json!(2),
                    json!("pending"),
                    json!("open"),
                    agent_label.clone()
                ),
                (json!(3), json!("open"), json!("pending"), json!("visitor")),
                (json!(4), json!("solved"), json!("open"), agent_label),
            ]
        );
        for event in &events {
            assert_eq!(event["organization_id"], s.org.as_str());
            assert_eq!(event["bot_id"], s.bot_id.as_str());
            assert_eq!(event["chat_id"], visitor.chat_id.as_str());
            assert_eq!(event["ticket"]["id"], id.as_str());
            assert!(
                event["_links"]["ticket"]
                    .as_str()
                    .unwrap()
                    .ends_with(&s.ticket(&id))
            );
        }
        // One delivery per change: distinct ids.
        let mut ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 4);
        let actions = app.audit_actions(&s.owner, &s.org).await;
        assert!(actions.iter().any(|a| a == "ticket.created"));
        assert_eq!(actions.iter().filter(|a| *a == "ticket.updated").count(), 2);
    })
    .await;
}

#[tokio::test]
async fn tickets_page_by_status_with_cursors_only_this_listing_handed_out() {
    each_backend_with(allow_loopback, async |app| {
        let s = shop(app, 0).await;
        let mut ids = Vec::new();
        for n in 0..3 {
            let visitor = Visitor::start(app, &s.bot_key).await;
            let created = app
                .post(
                    &s.tickets(),
                    &s.owner,
                    json!({ "chat_id": visitor.chat_id, "subject": format!("Case {n}"),
                            "status": if n == 1 { "solved" } else { "open" } }),
                )
                .await;
            created.expect(201);
            ids.push(created.json()["id"].as_str().unwrap().to_owned());
        }
        // A chat without any visitor words gets the default subject.
        let quiet = Visitor::start(app, &s.bot_key).await;
        let default = app
            .post(&s.tickets(), &s.owner, json!({ "chat_id": quiet.chat_id }))
            .await;
        default.expect(201);
        assert_eq!(default.json()["subject"], "Conversation with a visitor");
        ids.push(default.json()["id"].as_str().unwrap().to_owned());

        let first = app.get(&format!("{}?limit=2", s.tickets()), &s.owner).await;
        first.expect(200);
        let page: Vec<Value> = first.json()["tickets"].as_array().unwrap().clone();
        assert_eq!(page.len(), 2);
        assert_eq!(page[0]["id"], ids[0].as_str());
        assert_eq!(page[1]["id"], ids[1].as_str());
        let cursor = first.json()["next_cursor"].as_str().unwrap().to_owned();
        let second = app
            .get(
                &format!("{}?limit=2&cursor={cursor}", s.tickets()),
                &s.owner,
            )
            .await;
        second.expect(200);
        let second_page = second.json();
        let rest: Vec<&str> = second_page["tickets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert_eq!(rest, [ids[2].as_str(), ids[3].as_str()]);
        assert_eq!(second.json()["next_cursor"], Value::Null);

        let solved = app
            .get(&format!("{}?status=solved", s.tickets()), &s.owner)
            .await;
        solved.expect(200);
        let solved = solved.json()["tickets"].as_array().unwrap().clone();
        assert_eq!(solved.len(), 1);
        assert_eq!(solved[0]["id"], ids[1].as_str());
        assert!(solved[0]["solved_at"].is_string());

        let mut altered = cursor.clone();
        altered.pop();
        altered.push(if cursor.ends_with('A') { 'B' } else { 'A' });
        app.get(
            &format!("{}?limit=2&cursor={altered}", s.tickets()),
            &s.owner,
        )
        .await
        .expect_error(422, "invalid_cursor");
        app.get(&format!("{}?status=closed", s.tickets()), &s.owner)
            .await
            .expect_error(400, "invalid_query");
        app.get(&format!("{}?limit=101", s.tickets()), &s.owner)
            .await
            .expect_error(422, "invalid_limit");
    })
    .await;
}

#[tokio::test]
async fn a_handover_request_nobody_takes_in_time_becomes_a_ticket_once() {
    each_backend_with(allow_loopback, async |app| {
        let s = shop(app, 1).await;
        let (receiver, url) = Receiver::start().await;
        receiver.answer_with("ok");
        let secret = s.webhook(app, &url, &["ticket.updated"]).await;
        // A bot that never turns requests into tickets.
        let patient = shop(app, 0).await;

        let mut visitor = Visitor::start(app, &s.bot_key).await;
        visitor
            .post(
                app,
                "/chat/v1/messages",
                json!({ "text": "I need to change my delivery address" }),
            )
            .await
            .expect(202);
        visitor
            .post(app, "/chat/v1/handover", json!({}))
            .await
            .expect(202);
        let other = Visitor::start(app, &patient.bot_key).await;
        other
            .post(app, "/chat/v1/handover", json!({}))
            .await
            .expect(202);

        let got = receiver
            .wait_for("the unanswered request's ticket", |all| {
                !tickets_in(all).is_empty()
            })
            .await;
        assert!(
            got.iter()
                .all(|r| kindly_ok(&secret, r) && standard_ok(&secret, r))
        );
        let event = &tickets_in(&got)[0];
        assert_eq!(event["chat_id"], visitor.chat_id.as_str());
        assert_eq!(event["ticket"]["status"], "open");
        assert_eq!(event["ticket"]["reason"], "unanswered_handover");
        assert_eq!(event["ticket"]["created_by"], "system");
        assert_eq!(event["changed_by"], "system");
        assert_eq!(
            event["ticket"]["subject"],
            "I need to change my delivery address"
        );
        let id = event["ticket"]["id"].as_str().unwrap().to_owned();

        // Several sweeps later: still one ticket, one event; the request still waits for an agent.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(tickets_in(&receiver.all()).len(), 1);
        let listed = app.get(&s.tickets(), &s.owner).await;
        listed.expect(200);
        assert_eq!(listed.json()["tickets"].as_array().unwrap().len(), 1);
        let queue = app
            .get(
                &format!("/api/v1/orgs/{}/bots/{}/handovers", s.org, s.bot_id),
                &s.owner,
            )
            .await;
        queue.expect(200);
        assert_eq!(queue.json()["handovers"][0]["state"], "requested");
        // ticket_after_seconds = 0: the other bot's request never became one.
        let none = app.get(&patient.tickets(), &patient.owner).await;
        none.expect(200);
        assert_eq!(none.json()["tickets"], json!([]));

        // Solved, then a new request nobody takes: the same ticket opens again.
        app.patch(&s.ticket(&id), &s.owner, json!({ "status": "solved" }))
            .await
            .expect(200);
        let chat = format!(
            "/api/v1/orgs/{}/bots/{}/handovers/{}",
            s.org, s.bot_id, visitor.chat_id
        );
        let agent = s.agent.bearer();
        app.post(&format!("{chat}/take"), &agent, json!({}))
            .await
            .expect(200);
        app.post(&format!("{chat}/end"), &agent, json!({}))
            .await
            .expect(200);
        // Drain the realtime events so far.
        loop {
            let (event, data) = visitor.next().await;
            if event == "handover" && data["state"] == "ended" {
                break;
            }
        }
        visitor
            .post(app, "/chat/v1/handover", json!({}))
            .await
            .expect(202);
        let got = receiver
            .wait_for("the ticket opened again", |all| tickets_in(all).len() >= 3)
            .await;
        let mut events = tickets_in(&got);
        events.sort_by_key(|e| e["ticket"]["version"].as_i64());
        let last = events.last().unwrap();
        assert_eq!(last["ticket"]["id"], id.as_str());
        assert_eq!(last["ticket"]["version"], 3);
        assert_eq!(last["ticket"]["status"], "open");
        assert_eq!(last["previous"]["status"], "solved");
        assert_eq!(last["changed_by"], "system");
        assert_eq!(last["ticket"]["solved_at"], Value::Null);
    })
    .await;
}

#[tokio::test]
async fn tickets_follow_the_chats_permissions_and_go_with_an_erased_chat() {
    each_backend_with(allow_loopback, async |app| {
        let s = shop(app, 0).await;
        let visitor = Visitor::start(app, &s.bot_key).await;
        let created = app
            .post(
                &s.tickets(),
                &s.owner,
                json!({ "chat_id": visitor.chat_id }),
            )
            .await;
        created.expect(201);
        let id = created.json()["id"].as_str().unwrap().to_owned();

        // Read permission: the tickets can be read, not changed, and a reader is no assignee.
        let reader = app
            .member(&s.owner, &s.org, &email("reader"), "member")
            .await;
        app.grant(&s.owner, &s.org, &s.bot_id, &reader.user_id, "read")
            .await;
        app.get(&s.ticket(&id), &reader.bearer()).await.expect(200);
        app.patch(
            &s.ticket(&id),
            &reader.bearer(),
            json!({ "status": "solved" }),
        )
        .await
        .expect_error(403, "forbidden");
        app.patch(
            &s.ticket(&id),
            &s.owner,
            json!({ "assignee_id": reader.user_id }),
        )
        .await
        .expect_error(422, "invalid_assignee");
        // Nor is someone from outside the organization.
        let (_, stranger) = app.owner(&email("stranger"), "Elsewhere").await;
        app.patch(
            &s.ticket(&id),
            &s.owner,
            json!({ "assignee_id": stranger.user_id }),
        )
        .await
        .expect_error(422, "invalid_assignee");
        // Another organization cannot even see the ticket exists.
        app.get(&s.ticket(&id), &stranger.bearer())
            .await
            .expect(404);
        // Tickets of a chat of another bot are not this bot's.
        let other = app.create_bot(&s.owner, &s.org, "Other").await;
        let elsewhere = format!("/api/v1/orgs/{}/bots/{}/tickets/{id}", s.org, other.id);
        app.get(&elsewhere, &s.owner).await.expect(404);
        let foreign = Visitor::start(app, &other.key).await;
        app.post(
            &s.tickets(),
            &s.owner,
            json!({ "chat_id": foreign.chat_id }),
        )
        .await
        .expect(404);

        // Listed members only: an unlisted writer sees nothing of the tickets.
        app.put(
            &format!("/api/v1/orgs/{}/bots/{}/sharing", s.org, s.bot_id),
            &s.owner,
            json!({ "policy": "listed_members", "members": [] }),
        )
        .await
        .expect(200);
        let agent = s.agent.bearer();
        app.get(&s.tickets(), &agent)
            .await
            .expect_error(403, "conversations_not_shared");
        app.patch(&s.ticket(&id), &agent, json!({ "status": "pending" }))
            .await
            .expect_error(403, "conversations_not_shared");
        // ...and cannot be assigned one.
        app.patch(
            &s.ticket(&id),
            &s.owner,
            json!({ "assignee_id": s.agent.user_id }),
        )
        .await
        .expect_error(422, "invalid_assignee");

        // API keys: chats:read lists, chats:write changes.
        let read_key = app
            .create_api_key(&s.owner, &s.org, &["chats:read"], Some(&s.bot_id))
            .await;
        app.get(&s.tickets(), &read_key.credential())
            .await
            .expect(200);
        app.patch(
            &s.ticket(&id),
            &read_key.credential(),
            json!({ "status": "pending" }),
        )
        .await
        .expect_error(403, "insufficient_scope");
        let write_key = app
            .create_api_key(&s.owner, &s.org, &["chats:write"], Some(&s.bot_id))
            .await;
        let changed = app
            .patch(
                &s.ticket(&id),
                &write_key.credential(),
                json!({ "status": "pending" }),
            )
            .await;
        changed.expect(200);
        assert_eq!(changed.json()["status"], "pending");

        // Erasing the chat erases its ticket.
        app.delete(
            &format!(
                "/api/v1/orgs/{}/bots/{}/chats/{}",
                s.org, s.bot_id, visitor.chat_id
            ),
            &s.owner,
        )
        .await
        .expect(204);
        app.get(&s.ticket(&id), &s.owner).await.expect(404);
    })
    .await;
}

#[tokio::test]
async fn ticket_after_seconds_is_a_checked_chat_setting() {
    each_backend_with(allow_loopback, async |app| {
        let s = shop(app, 0).await;
        let (owner, session) = app.owner(&email("fresh"), "Fresh").await;
        let bot = app
            .create_bot(&session.bearer(), &owner.org_id, "New")
            .await;
        let fresh = app
            .get(
                &format!(
                    "/api/v1/orgs/{}/bots/{}/chat-settings",
                    owner.org_id, bot.id
                ),
                &session.bearer(),
            )
            .await;
        fresh.expect(200);
        assert_eq!(fresh.json()["ticket_after_seconds"], 300);

        let base = json!({ "greeting": "Hi!", "fallback_reply": "Bot.", "allowed_domains": [] });
        let mut too_long = base.clone();
        too_long["ticket_after_seconds"] = json!(86_401);
        app.put(&s.settings(), &s.owner, too_long)
            .await
            .expect_error(422, "invalid_ticket_after");
        // Omitted: unchanged.
        let kept = app.put(&s.settings(), &s.owner, base.clone()).await;
        kept.expect(200);
        assert_eq!(kept.json()["ticket_after_seconds"], 0);
        // A whole number written as JSON Schema allows (`45.0`) is one; a fraction is not.
        let mut whole = base.clone();
        whole["ticket_after_seconds"] = json!(45.0);
        let saved = app.put(&s.settings(), &s.owner, whole).await;
        saved.expect(200);
        assert_eq!(saved.json()["ticket_after_seconds"], 45);
        let mut fraction = base;
        fraction["ticket_after_seconds"] = json!(45.5);
        app.put(&s.settings(), &s.owner, fraction)
            .await
            .expect_error(422, "invalid_body");
    })
    .await;
}
