//! Bot languages and sample-phrase dialogues through HTTP: a bot owner lists the languages the bot
//! speaks, greetings and fallback replies per language, and dialogues with sample phrases and
//! replies per language; a visitor is answered in the language the widget gives or, when the bot
//! detects languages, the one they write in.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{Credential, TestApp, each_backend, email};
use serde_json::{Value, json};

struct Bot {
    org: String,
    owner: Credential,
    id: String,
    key: String,
}

impl Bot {
    fn settings(&self) -> String {
        format!("/api/v1/orgs/{}/bots/{}/chat-settings", self.org, self.id)
    }

    fn dialogues(&self) -> String {
        format!("/api/v1/orgs/{}/bots/{}/dialogues", self.org, self.id)
    }

    async fn add(&self, app: &TestApp, dialogue: Value) -> Value {
        let reply = app.post(&self.dialogues(), &self.owner, dialogue).await;
        reply.expect(201);
        reply.json()
    }
}

const FALLBACK: &str = "Sorry, I did not get that.";

/// A bot with its chat settings saved as an owner of the old API would (no language fields).
async fn bot(app: &TestApp, name: &str) -> Bot {
    let (owner, session) = app.owner(&email(name), name).await;
    let created = app
        .create_bot(&session.bearer(), &owner.org_id, "Helper")
        .await;
    let bot = Bot {
        org: owner.org_id,
        owner: session.bearer(),
        id: created.id,
        key: created.key,
    };
    app.put(
        &bot.settings(),
        &bot.owner,
        json!({ "greeting": "Hi!", "fallback_reply": FALLBACK, "allowed_domains": [] }),
    )
    .await
    .expect(200);
    bot
}

/// A bot that speaks English (default), Norwegian and German.
async fn multilingual(app: &TestApp, detect: bool) -> Bot {
    let b = bot(app, "Nordic").await;
    app.put(
        &b.settings(),
        &b.owner,
        json!({
            "greeting": "Hi!", "fallback_reply": FALLBACK, "allowed_domains": [],
            "languages": ["en", "nb", "de"], "detect_language": detect,
            "greetings": { "nb": "Hei!", "de": "Hallo!" },
            "fallback_replies": { "nb": "Beklager, det forsto jeg ikke.", "de": "Wie bitte?" },
        }),
    )
    .await
    .expect(200);
    b.add(
        app,
        json!({
            "name": "Password",
            "samples": {
                "en": ["how do I reset my password", "I forgot my password"],
                "nb": ["hvordan tilbakestiller jeg passordet", "jeg har glemt passordet mitt"],
                "de": ["wie setze ich mein Passwort zurück", "ich habe mein Passwort vergessen"],
            },
            "replies": ["Use “Forgot password” on the sign-in page."],
            "replies_by_language": {
                "nb": ["Bruk «Glemt passord» på innloggingssiden."],
                "de": ["Nutzen Sie „Passwort vergessen“ auf der Anmeldeseite."],
            },
        }),
    )
    .await;
    b
}

/// Starts a chat; `session` is the session request's body.
async fn chat(app: &TestApp, bot_key: &str, session: Value) -> String {
    let reply = app
        .send(
            app.client
                .post(app.url(&format!("/chat/v1/{bot_key}/sessions")))
                .json(&session),
        )
        .await;
    reply.expect(201);
    reply.json()["token"].as_str().unwrap().to_owned()
}

async fn greeting(app: &TestApp, token: &str) -> String {
    let reply = app
        .send(
            app.client
                .post(app.url("/chat/v1/greeting"))
                .header("x-chat-token", token),
        )
        .await;
    reply.expect(202);
    reply.json()["message"]["text"].as_str().unwrap().to_owned()
}

/// The bot's answer to a visitor message (`body` holds `text` and maybe `language_code`).
async fn ask(app: &TestApp, token: &str, body: Value) -> String {
    let reply = app
        .send(
            app.client
                .post(app.url("/chat/v1/messages"))
                .header("x-chat-token", token)
                .json(&body),
        )
        .await;
    reply.expect(202);
    reply.json()["reply"]["text"].as_str().unwrap().to_owned()
}

const PASSWORD_EN: &str = "Use “Forgot password” on the sign-in page.";
const PASSWORD_NB: &str = "Bruk «Glemt passord» på innloggingssiden.";
const PASSWORD_DE: &str = "Nutzen Sie „Passwort vergessen“ auf der Anmeldeseite.";

#[tokio::test]
async fn a_sample_dialogue_answers_a_paraphrase_and_not_unrelated_text() {
    each_backend(async |app| {
        let b = bot(app, "Shop").await;
        let saved = b
            .add(
                app,
                json!({
                    "name": "Password",
                    "samples": { "en": ["How do I reset my password?", "  I forgot my password  "] },
                    "replies": ["Use “Forgot password” on the sign-in page."],
                }),
            )
            .await;
        assert_eq!(
            saved["samples"],
            json!({ "en": ["How do I reset my password?", "I forgot my password"] })
        );
        assert_eq!(saved["patterns"], json!([]));
        b.add(
            app,
            json!({ "name": "Hours", "samples": { "en": ["what are your opening hours"] },
                    "replies": ["We are open 9 to 5."] }),
        )
        .await;
        // A pattern dialogue is tried before every sample dialogue.
        b.add(
            app,
            json!({ "name": "Order", "patterns": ["(?i)order (\\d+)"], "replies": ["Checking."] }),
        )
        .await;

        let token = chat(app, &b.key, json!({})).await;
        let ask_en = async |text: &str| ask(app, &token, json!({ "text": text })).await;
        assert_eq!(ask_en("Resetting passwords?").await, PASSWORD_EN);
        assert_eq!(ask_en("Hi, how can I reset my password please").await, PASSWORD_EN);
        assert_eq!(ask_en("When are your opening hours?").await, "We are open 9 to 5.");
        assert_eq!(ask_en("Can I pay with a credit card?").await, FALLBACK);
        assert_eq!(ask_en("what is the weather like in Oslo").await, FALLBACK);
        assert_eq!(ask_en("order 12: reset my password").await, "Checking.");

        // The bot's threshold decides: at 1 only the very words answer.
        let strict = json!({ "greeting": "Hi!", "fallback_reply": FALLBACK, "allowed_domains": [],
                             "sample_threshold": 1.0 });
        let saved = app.put(&b.settings(), &b.owner, strict).await;
        saved.expect(200);
        assert_eq!(saved.json()["sample_threshold"], json!(1.0));
        assert_eq!(ask_en("Hi, how can I reset my password please").await, FALLBACK);
        assert_eq!(ask_en("I forgot my password!").await, PASSWORD_EN);
    })
    .await;
}

#[tokio::test]
async fn a_visitor_is_greeted_and_answered_in_the_language_the_widget_gives() {
    each_backend(async |app| {
        let b = multilingual(app, false).await;

        // The session's language: greeting, sample replies and fallback in Norwegian.
        let norwegian = chat(app, &b.key, json!({ "language_code": "nb-NO" })).await;
        assert_eq!(greeting(app, &norwegian).await, "Hei!");
        let hvordan = json!({ "text": "Hvordan tilbakestiller jeg passord?" });
        assert_eq!(ask(app, &norwegian, hvordan).await, PASSWORD_NB);
        let unknown = json!({ "text": "Selger dere sykler?" });
        assert_eq!(
            ask(app, &norwegian, unknown).await,
            "Beklager, det forsto jeg ikke."
        );
        // A message's own language_code wins over the session's.
        let german = json!({ "text": "Ich habe mein Passwort vergessen", "language_code": "de" });
        assert_eq!(ask(app, &norwegian, german).await, PASSWORD_DE);
        // One the bot does not speak is passed over: the session's language answers.
        let french = json!({ "text": "glemt passordet mitt", "language_code": "fr" });
        assert_eq!(ask(app, &norwegian, french).await, PASSWORD_NB);

        // Languages do not mix: German words in an English chat are not German samples.
        let english = chat(app, &b.key, json!({ "language_code": "en" })).await;
        assert_eq!(greeting(app, &english).await, "Hi!");
        let in_german = json!({ "text": "Ich habe mein Passwort vergessen" });
        assert_eq!(ask(app, &english, in_german).await, FALLBACK);

        // A language the bot does not speak, or none: the default.
        let swedish = chat(app, &b.key, json!({ "language_code": "sv" })).await;
        assert_eq!(greeting(app, &swedish).await, "Hi!");
        let plain = chat(app, &b.key, json!({})).await;
        let forgot = json!({ "text": "I forgot my password" });
        assert_eq!(ask(app, &plain, forgot).await, PASSWORD_EN);
    })
    .await;
}

#[tokio::test]
async fn a_bot_that_detects_languages_answers_in_the_one_the_visitor_writes() {
    each_backend(async |app| {
        let b = multilingual(app, true).await;
        let token = chat(app, &b.key, json!({})).await;
        assert_eq!(greeting(app, &token).await, "Hi!");
        let german = "Hallo, ich habe mein Passwort vergessen und komme nicht mehr hinein";
        assert_eq!(
            ask(app, &token, json!({ "text": german })).await,
            PASSWORD_DE
        );
        let chats_in = async |code: &str| {
            let path = format!("/api/v1/orgs/{}/bots/{}/chats?language={code}", b.org, b.id);
            let reply = app.get(&path, &b.owner).await;
            reply.expect(200);
            reply.json()["chats"].as_array().unwrap().len()
        };
        // The chat log knows the chat by the language of its latest exchange.
        assert_eq!((chats_in("de").await, chats_in("nb").await), (1, 0));
        let norwegian = "Hei, jeg har glemt passordet mitt og kommer ikke inn lenger";
        assert_eq!(
            ask(app, &token, json!({ "text": norwegian })).await,
            PASSWORD_NB
        );
        assert_eq!((chats_in("de").await, chats_in("nb").await), (0, 1));
        let bicycles = "Hei, selger dere også sykler og sykkelhjelmer i butikken deres?";
        assert_eq!(
            ask(app, &token, json!({ "text": bicycles })).await,
            "Beklager, det forsto jeg ikke."
        );
        // Too short to tell: the default language.
        assert_eq!(ask(app, &token, json!({ "text": "ok?" })).await, FALLBACK);

        // The same bot without detection answers German text in its default language.
        let off = json!({ "greeting": "Hi!", "fallback_reply": FALLBACK, "allowed_domains": [],
                          "detect_language": false });
        app.put(&b.settings(), &b.owner, off).await.expect(200);
        assert_eq!(ask(app, &token, json!({ "text": german })).await, FALLBACK);
    })
    .await;
}

#[tokio::test]
async fn a_pattern_dialogue_replies_in_the_messages_language() {
    each_backend(async |app| {
        let b = multilingual(app, false).await;
        b.add(
            app,
            json!({ "name": "Name", "patterns": ["(?i)(?:my name is|jeg heter) (\\w+)"],
                    "context_key": "name", "replies": ["Nice to meet you, {name}!"],
                    "replies_by_language": { "nb": ["Hyggelig å møte deg, {name}!"] } }),
        )
        .await;
        let token = chat(app, &b.key, json!({ "language_code": "nb" })).await;
        let heter = json!({ "text": "Jeg heter Kari" });
        assert_eq!(ask(app, &token, heter).await, "Hyggelig å møte deg, Kari!");
        // German has no replies of its own: the default ones.
        let german = json!({ "text": "my name is Kari", "language_code": "de" });
        assert_eq!(ask(app, &token, german).await, "Nice to meet you, Kari!");
    })
    .await;
}

#[tokio::test]
async fn language_settings_are_checked_and_kept_when_an_older_client_saves() {
    each_backend(async |app| {
        let b = multilingual(app, true).await;
        let base = json!({ "greeting": "Hi!", "fallback_reply": FALLBACK, "allowed_domains": [] });
        let with = |extra: Value| {
            let mut body = base.clone();
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            body
        };
        let too_many: Vec<String> = (0..21)
            .map(|i| format!("l{}", (b'a' + i) as char))
            .collect();
        for (extra, code) in [
            (json!({ "languages": [] }), "invalid_language"),
            (json!({ "languages": ["en", "en"] }), "invalid_language"),
            (json!({ "languages": ["EN"] }), "invalid_language"),
            (json!({ "languages": ["english"] }), "invalid_language"),
            (json!({ "languages": too_many }), "invalid_language"),
            (
                json!({ "greetings": { "fr": "Bonjour !" } }),
                "unknown_language",
            ),
            (
                json!({ "greetings": { "en": "Hello!" } }),
                "invalid_language",
            ),
            (
                json!({ "fallback_replies": { "nb": "   " } }),
                "invalid_text",
            ),
            (json!({ "sample_threshold": 0.0 }), "invalid_threshold"),
            (json!({ "sample_threshold": 1.5 }), "invalid_threshold"),
        ] {
            let refused = app.put(&b.settings(), &b.owner, with(extra.clone())).await;
            refused.expect(422);
            assert_eq!(refused.code(), code, "{extra}: {}", refused.text);
        }
        // Norwegian is still used by a dialogue: it cannot be dropped.
        let without_nb = with(
            json!({ "languages": ["en", "de"], "greetings": { "de": "Hallo!" },
                                      "fallback_replies": {} }),
        );
        let refused = app.put(&b.settings(), &b.owner, without_nb).await;
        refused.expect_error(409, "language_in_use");
        assert!(refused.text.contains("Password"), "{}", refused.text);

        // An older client's save (no language fields) keeps them all.
        app.put(&b.settings(), &b.owner, base.clone())
            .await
            .expect(200);
        let kept = app.get(&b.settings(), &b.owner).await;
        kept.expect(200);
        let kept = kept.json();
        assert_eq!(kept["languages"], json!(["en", "nb", "de"]));
        assert_eq!(kept["detect_language"], json!(true));
        assert_eq!(kept["greetings"], json!({ "nb": "Hei!", "de": "Hallo!" }));
        assert_eq!(kept["sample_threshold"], json!(0.4));

        // A new bot speaks English and detects nothing until told otherwise.
        let fresh = bot(app, "Fresh").await;
        let settings = app.get(&fresh.settings(), &fresh.owner).await.json();
        assert_eq!(settings["languages"], json!(["en"]));
        assert_eq!(settings["detect_language"], json!(false));
    })
    .await;
}

#[tokio::test]
async fn dialogue_samples_and_languages_are_checked_on_save() {
    each_backend(async |app| {
        let b = multilingual(app, false).await;
        let many: Vec<String> = (0..51).map(|i| format!("phrase number {i}")).collect();
        for (body, code) in [
            (
                json!({ "name": "Neither", "replies": ["x"] }),
                "invalid_dialogue",
            ),
            (
                json!({ "name": "S", "samples": { "fr": ["bonjour"] }, "replies": ["x"] }),
                "unknown_language",
            ),
            (
                json!({ "name": "S", "samples": { "EN": ["hello"] }, "replies": ["x"] }),
                "invalid_language",
            ),
            (
                json!({ "name": "S", "samples": { "en": ["?!"] }, "replies": ["x"] }),
                "invalid_sample",
            ),
            (
                json!({ "name": "S", "samples": { "en": ["x".repeat(301)] }, "replies": ["x"] }),
                "invalid_sample",
            ),
            (
                json!({ "name": "S", "samples": { "en": [] }, "replies": ["x"] }),
                "invalid_dialogue",
            ),
            (
                json!({ "name": "S", "samples": { "en": many }, "replies": ["x"] }),
                "invalid_dialogue",
            ),
            (
                json!({ "name": "S", "samples": { "en": ["hello"] }, "replies": ["x"],
                     "replies_by_language": { "sv": ["Hej"] } }),
                "unknown_language",
            ),
            (
                json!({ "name": "S", "samples": { "en": ["hello"] }, "replies": ["x"],
                     "replies_by_language": { "nb": [] } }),
                "invalid_dialogue",
            ),
        ] {
            let refused = app.post(&b.dialogues(), &b.owner, body.clone()).await;
            refused.expect(422);
            assert_eq!(refused.code(), code, "{body}: {}", refused.text);
        }

        // The widget's language tag is shape-checked.
        for bad in ["english", "e", "en US"] {
            app.send(
                app.client
                    .post(app.url(&format!("/chat/v1/{}/sessions", b.key)))
                    .json(&json!({ "language_code": bad })),
            )
            .await
            .expect_error(422, "invalid_language_code");
        }
        let token = chat(app, &b.key, json!({})).await;
        app.send(
            app.client
                .post(app.url("/chat/v1/messages"))
                .header("x-chat-token", &token)
                .json(&json!({ "text": "hello", "language_code": "en_" })),
        )
        .await
        .expect_error(422, "invalid_language_code");
    })
    .await;
}
