//! Pattern dialogues through HTTP: a bot owner saves patterns (validated on save), a visitor's
//! message is answered by the first matching one, its capture lands in the chat's context memory,
//! and later replies use it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{Credential, TestApp, each_backend, email};
use serde_json::{Value, json};

struct Shop {
    org: String,
    owner: Credential,
    bot_id: String,
    bot_key: String,
}

impl Shop {
    fn dialogues(&self) -> String {
        format!("/api/v1/orgs/{}/bots/{}/dialogues", self.org, self.bot_id)
    }

    async fn add(&self, app: &TestApp, dialogue: Value) -> Value {
        let reply = app.post(&self.dialogues(), &self.owner, dialogue).await;
        reply.expect(201);
        reply.json()
    }
}

async fn shop(app: &TestApp, name: &str) -> Shop {
    let (owner, session) = app.owner(&email(name), name).await;
    let bot = app
        .create_bot(&session.bearer(), &owner.org_id, "Helper")
        .await;
    app.put(
        &format!("/api/v1/orgs/{}/bots/{}/chat-settings", owner.org_id, bot.id),
        &session.bearer(),
        json!({ "greeting": "Hi!", "fallback_reply": "Sorry, I did not get that.", "allowed_domains": [] }),
    )
    .await
    .expect(200);
    // Every visitor here writes from the test's own address, faster than spam screening allows
    // one address to: the shop trusts it like its own office.
    app.post(
        &format!("/api/v1/orgs/{}/trusted-addresses", owner.org_id),
        &session.bearer(),
        json!({ "network": "127.0.0.0/8", "note": "Where the tests run" }),
    )
    .await
    .expect(201);
    Shop {
        org: owner.org_id,
        owner: session.bearer(),
        bot_id: bot.id,
        bot_key: bot.key,
    }
}

async fn chat(app: &TestApp, bot_key: &str) -> String {
    let reply = app
        .send(
            app.client
                .post(app.url(&format!("/chat/v1/{bot_key}/sessions")))
                .json(&json!({})),
        )
        .await;
    reply.expect(201);
    reply.json()["token"].as_str().unwrap().to_owned()
}

/// The bot's answer to a visitor message.
async fn ask(app: &TestApp, token: &str, text: &str) -> String {
    let reply = app
        .send(
            app.client
                .post(app.url("/chat/v1/messages"))
                .header("x-chat-token", token)
                .json(&json!({ "text": text })),
        )
        .await;
    reply.expect(202);
    reply.json()["reply"]["text"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_pattern_captures_into_context_and_a_later_reply_uses_it() {
    each_backend(async |app| {
        let s = shop(app, "Shop").await;
        s.add(
            app,
            json!({
                "name": "Introduction",
                "patterns": ["(?i)my name is (\\w+)", "(?i)call me (\\w+)"],
                "context_key": "name",
                "replies": ["Nice to meet you, {name}!"],
            }),
        )
        .await;
        s.add(
            app,
            json!({
                "name": "Who am I",
                "patterns": ["(?i)what is my name"],
                "replies": ["You are {name}.", "You have not told me yet."],
            }),
        )
        .await;

        let token = chat(app, &s.bot_key).await;
        assert_eq!(
            ask(app, &token, "What is my name?").await,
            "You have not told me yet."
        );
        assert_eq!(
            ask(app, &token, "Hello, call me Ada").await,
            "Nice to meet you, Ada!"
        );
        assert_eq!(ask(app, &token, "what is my name").await, "You are Ada.");
        assert_eq!(
            ask(app, &token, "My name is Grace").await,
            "Nice to meet you, Grace!"
        );
        assert_eq!(ask(app, &token, "what is my name").await, "You are Grace.");
        // Nothing matches: the fallback.
        assert_eq!(
            ask(app, &token, "the weather?").await,
            "Sorry, I did not get that."
        );

        // Context memory is per chat: another visitor is a stranger.
        let other = chat(app, &s.bot_key).await;
        assert_eq!(
            ask(app, &other, "what is my name").await,
            "You have not told me yet."
        );
    })
    .await;
}

#[tokio::test]
async fn dialogues_are_tried_in_position_order_and_belong_to_their_bot() {
    each_backend(async |app| {
        let s = shop(app, "Shop").await;
        let other = shop(app, "Other").await;
        let general = s
            .add(app, json!({ "name": "General", "patterns": ["order"], "replies": ["Which order?"] }))
            .await;
        s.add(
            app,
            json!({ "name": "Specific", "patterns": ["order (\\d+)"], "context_key": "order",
                    "replies": ["Order {order} ships today."], "position": 0 }),
        )
        .await;
        other
            .add(app, json!({ "name": "Theirs", "patterns": ["."], "replies": ["Other shop!"] }))
            .await;
        let listed = app.get(&s.dialogues(), &s.owner).await;
        listed.expect(200);
        let names: Vec<_> = listed.json()["dialogues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["Specific", "General"]);

        let token = chat(app, &s.bot_key).await;
        assert_eq!(ask(app, &token, "about order 77").await, "Order 77 ships today.");
        assert_eq!(ask(app, &token, "about my order").await, "Which order?");

        // Moving the general one first changes who answers; deleting it hands over.
        let path = format!("{}/{}", s.dialogues(), general["id"].as_str().unwrap());
        app.put(
            &path,
            &s.owner,
            json!({ "name": "General", "patterns": ["order"], "replies": ["Which one?"], "position": -0 }),
        )
        .await
        .expect(200);
        assert_eq!(ask(app, &token, "about order 77").await, "Which one?");
        app.delete(&path, &s.owner).await.expect(204);
        assert_eq!(ask(app, &token, "about order 77").await, "Order 77 ships today.");
        app.get(&path, &s.owner).await.expect_error(404, "not_found");
        // Another organization cannot read them.
        app.get(&s.dialogues(), &other.owner)
            .await
            .expect_error(404, "not_found");
    })
    .await;
}

/// Each node keeps the bot's dialogues it read; a change made through another node reaches its
/// very next answer (the bot's dialogue version moves with every change, in the same transaction).
#[tokio::test]
async fn a_dialogue_changed_through_one_node_answers_on_another_at_once() {
    each_backend(async |app| {
        let s = shop(app, "Shop").await;
        let hours = s
            .add(
                app,
                json!({ "name": "Hours", "patterns": ["hours"], "replies": ["9 to 5."] }),
            )
            .await;
        let data = tempfile::tempdir().unwrap();
        let node = common::start_node(&app.database_url, &data.path().join("data"), &|_| {}).await;
        let client = common::http_client();
        let base = format!("http://{}", node.addr);
        common::wait_for_health(&client, &base).await;
        let session = common::read(
            client
                .post(format!("{base}/chat/v1/{}/sessions", s.bot_key))
                .json(&json!({}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        session.expect(201);
        let token = session.json()["token"].as_str().unwrap().to_owned();
        let ask_node = async |text: &str| {
            let reply = common::read(
                client
                    .post(format!("{base}/chat/v1/messages"))
                    .header("x-chat-token", &token)
                    .json(&json!({ "text": text }))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            reply.expect(202);
            reply.json()["reply"]["text"].as_str().unwrap().to_owned()
        };
        assert_eq!(ask_node("your hours?").await, "9 to 5.");

        // Changed, added and deleted through the first node: the second answers with each at once.
        let path = format!("{}/{}", s.dialogues(), hours["id"].as_str().unwrap());
        app.put(
            &path,
            &s.owner,
            json!({ "name": "Hours", "patterns": ["hours"], "replies": ["8 to 4."] }),
        )
        .await
        .expect(200);
        assert_eq!(ask_node("your hours?").await, "8 to 4.");
        s.add(
            app,
            json!({ "name": "Shipping", "patterns": ["ship"], "replies": ["Tomorrow."] }),
        )
        .await;
        assert_eq!(ask_node("when do you ship?").await, "Tomorrow.");
        app.delete(&path, &s.owner).await.expect(204);
        assert_eq!(ask_node("your hours?").await, "Sorry, I did not get that.");
        node.stop().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn patterns_are_checked_on_save_and_none_can_stall_a_reply() {
    each_backend(async |app| {
        let s = shop(app, "Shop").await;
        let refused = app
            .post(
                &s.dialogues(),
                &s.owner,
                json!({ "name": "Broken", "patterns": ["fine", "(unclosed"], "replies": ["x"] }),
            )
            .await;
        refused.expect_error(422, "invalid_pattern");
        assert!(refused.text.contains("pattern 1"), "{}", refused.text);
        app.post(
            &s.dialogues(),
            &s.owner,
            json!({ "name": "Huge", "patterns": ["(a{1000}){1000}"], "replies": ["x"] }),
        )
        .await
        .expect_error(422, "invalid_pattern");
        for (body, code) in [
            (json!({ "name": "K", "patterns": ["x"], "context_key": "9lives", "replies": ["x"] }), "invalid_dialogue"),
            (json!({ "name": "R", "patterns": ["x"], "replies": [] }), "invalid_dialogue"),
            (json!({ "name": "P", "patterns": [], "replies": ["x"] }), "invalid_dialogue"),
        ] {
            app.post(&s.dialogues(), &s.owner, body).await.expect_error(422, code);
        }

        // Patterns that take exponential time in backtracking engines.
        s.add(
            app,
            json!({ "name": "Evil", "patterns": ["^(a+)+$", "^(\\w+\\s?)*$x"], "replies": ["matched"] }),
        )
        .await;
        let token = chat(app, &s.bot_key).await;
        let attack = format!("{}!", "a".repeat(1999));
        assert_eq!(ask(app, &token, &attack).await, "Sorry, I did not get that.");
        let words = "word ".repeat(399);
        assert_eq!(ask(app, &token, &words).await, "Sorry, I did not get that.");
    })
    .await;
}

#[tokio::test]
async fn what_builders_write_is_sanitized_on_save_and_visitors_words_stay_text() {
    each_backend(async |app| {
        let s = shop(app, "Sanitized").await;
        let base = format!("/api/v1/orgs/{}/bots/{}", s.org, s.bot_id);

        // Replies keep the formatting subset; script, handlers and unsafe links are gone.
        let dialogue = s
            .add(
                app,
                json!({
                    "name": "<b>Orders</b> & returns",
                    "patterns": ["(?i)my order is (.+)"],
                    "context_key": "order",
                    "replies": ["<b>Thanks</b> <img src=x onerror=alert(1)>for {order}<script>alert(2)</script> \
                                 <a href=\"javascript:alert(3)\">help</a> <a href=\"https://shop.example/o\" onclick=\"x\">track</a>"],
                }),
            )
            .await;
        assert_eq!(dialogue["name"], "Orders & returns");
        let stored = "<b>Thanks</b> for {order} <a rel=\"noopener noreferrer nofollow\">help</a> \
                      <a href=\"https://shop.example/o\" rel=\"noopener noreferrer nofollow\">track</a>";
        assert_eq!(dialogue["replies"], json!([stored]));
        let listed = app.get(&s.dialogues(), &s.owner).await.json();
        assert_eq!(listed["dialogues"][0]["replies"], json!([stored]));

        // The visitor's captured words fill the reply as text.
        let token = chat(app, &s.bot_key).await;
        assert_eq!(
            ask(app, &token, "my order is <i>42</i> & \"7\"").await,
            "<b>Thanks</b> for &lt;i&gt;42&lt;/i&gt; &amp; &quot;7&quot; \
             <a rel=\"noopener noreferrer nofollow\">help</a> \
             <a href=\"https://shop.example/o\" rel=\"noopener noreferrer nofollow\">track</a>"
        );

        // A reply that is only markup the subset removes is refused, not saved empty.
        let empty = app
            .post(
                &s.dialogues(),
                &s.owner,
                json!({ "name": "Empty", "patterns": ["x"], "replies": ["<script>alert(1)</script>"] }),
            )
            .await;
        empty.expect(422);
        assert_eq!(empty.json()["error"]["code"], "invalid_dialogue");

        // Greeting and fallback keep the subset; the out-of-hours message is plain text.
        let settings = app
            .put(
                &format!("{base}/chat-settings"),
                &s.owner,
                json!({
                    "greeting": "<p>Hi <strong>there</strong><iframe src=\"https://x.example\"></iframe></p>",
                    "fallback_reply": "Sorry <style>*{}</style>& goodbye",
                    "allowed_domains": [],
                    "restrictions": { "outside_hours_message": "<b>Closed</b> & back at 9" },
                }),
            )
            .await;
        settings.expect(200);
        let settings = settings.json();
        assert_eq!(settings["greeting"], "<p>Hi <strong>there</strong></p>");
        assert_eq!(settings["fallback_reply"], "Sorry &amp; goodbye");
        assert_eq!(
            settings["restrictions"]["outside_hours_message"],
            "Closed & back at 9"
        );

        // Names are plain text; a name that spells markup in references is refused.
        let bot = app
            .post(
                &format!("/api/v1/orgs/{}/bots", s.org),
                &s.owner,
                json!({ "name": "<i>Sales</i> bot" }),
            )
            .await;
        bot.expect(201);
        assert_eq!(bot.json()["name"], "Sales bot");
        let spelled = app
            .post(
                &format!("/api/v1/orgs/{}/bots", s.org),
                &s.owner,
                json!({ "name": "&lt;script&gt;alert(1)&lt;/script&gt;" }),
            )
            .await;
        spelled.expect(422);
        assert_eq!(spelled.json()["error"]["code"], "markup_not_allowed");

        // Nudges: plain title and labels, formatted text.
        let nudge = app
            .post(
                &format!("{base}/nudges"),
                &s.owner,
                json!({
                    "name": "Survey",
                    "title": "<u>How</u> are we doing?",
                    "text": "<b>Tell us</b><svg onload=alert(1)></svg>",
                    "form": { "label": "<i>Email</i>", "input": "email", "button": "Send" },
                }),
            )
            .await;
        nudge.expect(201);
        let nudge = nudge.json();
        assert_eq!(nudge["title"], "How are we doing?");
        assert_eq!(nudge["text"], "<b>Tell us</b>");
        assert_eq!(nudge["form"]["label"], "Email");
    })
    .await;
}

/// Posts a visitor message body; answers the status and the JSON answer.
async fn post_message(app: &TestApp, token: &str, body: Value) -> (u16, Value) {
    let reply = app
        .send(
            app.client
                .post(app.url("/chat/v1/messages"))
                .header("x-chat-token", token)
                .json(&body),
        )
        .await;
    (reply.status.as_u16(), reply.json())
}

#[tokio::test]
async fn buttons_answer_with_their_dialogue_and_follow_ups_wait_for_their_parent() {
    each_backend(async |app| {
        let s = shop(app, "Buttons").await;
        let generic = s
            .add(
                app,
                json!({ "name": "Yes", "patterns": ["(?i)^yes$"], "replies": ["Yes to what?"] }),
            )
            .await;
        let order = s
            .add(
                app,
                json!({ "name": "Order", "patterns": ["(?i)order"], "replies": ["Shall I track it?"] }),
            )
            .await;
        let track = s
            .add(
                app,
                json!({
                    "name": "Track", "patterns": ["(?i)^yes$"], "replies": ["Tracking your parcel."],
                    "follow_up_of": order["id"],
                }),
            )
            .await;
        let order_url = format!("{}/{}", s.dialogues(), order["id"].as_str().unwrap());
        let saved = app
            .put(
                &order_url,
                &s.owner,
                json!({
                    "name": "Order", "patterns": ["(?i)order"], "replies": ["Shall I track it?"],
                    "buttons": [
                        { "label": "<b>Track</b> it", "dialogue_id": track["id"] },
                        { "label": "Help", "url": "https://help.example/orders" },
                    ],
                }),
            )
            .await;
        saved.expect(200);
        assert_eq!(saved.json()["buttons"][0]["label"], "Track it");

        // A follow-up is not tried at the top level.
        let token = chat(app, &s.bot_key).await;
        assert_eq!(ask(app, &token, "yes").await, "Yes to what?");
        // Right after its parent answered, it is tried first; once it has answered, the top level
        // is back.
        let (status, asked) = post_message(app, &token, json!({ "text": "my order" })).await;
        assert_eq!(status, 202);
        assert_eq!(asked["reply"]["text"], "Shall I track it?");
        assert_eq!(
            asked["reply"]["buttons"],
            json!([
                { "label": "Track it", "dialogue_id": track["id"] },
                { "label": "Help", "url": "https://help.example/orders" },
            ])
        );
        assert_eq!(ask(app, &token, "YES").await, "Tracking your parcel.");
        assert_eq!(ask(app, &token, "yes").await, "Yes to what?");

        // Pressing a button: its dialogue answers, and the visitor said its label.
        let offered = asked["reply"]["id"].clone();
        let (status, pressed) = post_message(
            app,
            &token,
            json!({ "text": "whatever", "button": { "message_id": offered, "index": 0 } }),
        )
        .await;
        assert_eq!(status, 202, "{pressed}");
        assert_eq!(pressed["message"]["text"], "Track it");
        assert_eq!(pressed["reply"]["text"], "Tracking your parcel.");
        // Only buttons this chat was offered that lead to a dialogue.
        let visitor_message = pressed["message"]["id"].clone();
        for (i, button) in [
            json!({ "message_id": offered, "index": 1 }),
            json!({ "message_id": offered, "index": 4 }),
            json!({ "message_id": visitor_message, "index": 0 }),
        ]
        .into_iter()
        .enumerate()
        {
            let text = format!("press {i}");
            let (status, refused) =
                post_message(app, &token, json!({ "text": text, "button": button })).await;
            assert_eq!(status, 409, "{button}");
            assert_eq!(refused["error"]["code"], "button_unavailable");
        }
        let other = chat(app, &s.bot_key).await;
        let (status, refused) = post_message(
            app,
            &other,
            json!({ "text": "press", "button": { "message_id": offered, "index": 0 } }),
        )
        .await;
        assert_eq!(status, 409, "another chat's button: {refused}");

        // Links between dialogues are checked on save and kept whole.
        let unknown = app
            .post(
                &s.dialogues(),
                &s.owner,
                json!({ "name": "Lost", "patterns": ["x"], "replies": ["x"],
                        "buttons": [{ "label": "Go", "dialogue_id": "00000000-0000-7000-8000-000000000000" }] }),
            )
            .await;
        unknown.expect(422);
        assert_eq!(unknown.json()["error"]["code"], "unknown_dialogue");
        let looped = app
            .put(
                &order_url,
                &s.owner,
                json!({ "name": "Order", "patterns": ["(?i)order"], "replies": ["x"], "follow_up_of": track["id"] }),
            )
            .await;
        looped.expect(422);
        assert_eq!(looped.json()["error"]["code"], "invalid_follow_up");
        let in_use = app
            .delete(
                &format!("{}/{}", s.dialogues(), track["id"].as_str().unwrap()),
                &s.owner,
            )
            .await;
        in_use.expect(409);
        assert_eq!(in_use.json()["error"]["code"], "dialogue_in_use");
        app.delete(
            &format!("{}/{}", s.dialogues(), generic["id"].as_str().unwrap()),
            &s.owner,
        )
        .await
        .expect(204);

        // Export and import: the new bot's buttons and follow-ups lead to its own dialogues.
        let document = app
            .get(
                &format!("/api/v1/orgs/{}/bots/{}/export", s.org, s.bot_id),
                &s.owner,
            )
            .await;
        document.expect(200);
        let imported = app
            .post(
                &format!("/api/v1/orgs/{}/bots/import", s.org),
                &s.owner,
                document.json(),
            )
            .await;
        imported.expect(201);
        let copy = imported.json()["id"].as_str().unwrap().to_owned();
        let copied = app
            .get(
                &format!("/api/v1/orgs/{}/bots/{copy}/dialogues", s.org),
                &s.owner,
            )
            .await
            .json();
        let dialogues = copied["dialogues"].as_array().unwrap();
        let (new_order, new_track) = (&dialogues[0], &dialogues[1]);
        assert_eq!(new_order["name"], "Order");
        assert_ne!(new_order["id"], order["id"]);
        assert_eq!(new_order["buttons"][0]["dialogue_id"], new_track["id"]);
        assert_eq!(new_order["buttons"][1]["url"], "https://help.example/orders");
        assert_eq!(new_track["follow_up_of"], new_order["id"]);
    })
    .await;
}
