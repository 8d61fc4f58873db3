//! The Chat Log API through HTTP: a bot's conversations filtered by time, handover state, labels,
//! language and verified identity, walked page by page with cursors; one chat with its messages;
//! labels; the sharing policy; and erasing a conversation while its statistics stay.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::collections::BTreeSet;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use common::{CreatedBot, Credential, Reply, TestApp, each_backend, each_backend_with, email};
use confide_store::Store as _;
use serde_json::{Value, json};

const BROWSER: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36";
const CRAWLER: &str = "Mozilla/5.0 (compatible; Googlebot/2.1)";

/// A shop with one bot, as its owner sees it.
struct Shop {
    org: String,
    owner: Credential,
    bot: CreatedBot,
}

impl Shop {
    async fn open(app: &TestApp) -> Shop {
        let (owner, session) = app.owner(&email("owner"), "Chatty Shop").await;
        let bot = app
            .create_bot(&session.bearer(), &owner.org_id, "Helper")
            .await;
        // Every visitor here writes from the test's own address, faster than spam screening
        // allows one address to: the shop trusts it like its own office.
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
            bot,
        }
    }

    fn chats(&self) -> String {
        format!("/api/v1/orgs/{}/bots/{}/chats", self.org, self.bot.id)
    }

    fn chat(&self, chat: &str) -> String {
        format!("{}/{chat}", self.chats())
    }

    async fn set_labels(&self, app: &TestApp, chat: &str, labels: &[&str]) -> Reply {
        app.put(
            &format!("{}/labels", self.chat(chat)),
            &self.owner,
            json!({ "labels": labels }),
        )
        .await
    }
}

/// A visitor's chat: its id and token.
struct Chat {
    id: String,
    token: String,
}

async fn start(app: &TestApp, bot_key: &str, user_agent: &str) -> Chat {
    let reply = app
        .send(
            app.client
                .post(app.url(&format!("/chat/v1/{bot_key}/sessions")))
                .header("user-agent", user_agent)
                .json(&json!({})),
        )
        .await;
    reply.expect(201);
    Chat {
        id: reply.json()["chat_id"].as_str().unwrap().to_owned(),
        token: reply.json()["token"].as_str().unwrap().to_owned(),
    }
}

async fn visitor_post(app: &TestApp, chat: &Chat, path: &str, body: Value) -> Reply {
    app.send(
        app.client
            .post(app.url(path))
            .header("x-chat-token", &chat.token)
            .json(&body),
    )
    .await
}

async fn say(app: &TestApp, chat: &Chat, text: &str) {
    visitor_post(app, chat, "/chat/v1/messages", json!({ "text": text }))
        .await
        .expect(202);
}

/// A chat whose visitor wrote once.
async fn talk(app: &TestApp, shop: &Shop, text: &str) -> Chat {
    let chat = start(app, &shop.bot.key, BROWSER).await;
    say(app, &chat, text).await;
    chat
}

/// The chat ids of one answer, in order.
fn ids(page: &Value) -> Vec<String> {
    page["chats"]
        .as_array()
        .unwrap_or_else(|| panic!("no chats in {page}"))
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The ids of every chat the query finds, in one page of up to 100.
async fn find(app: &TestApp, shop: &Shop, query: &str) -> BTreeSet<String> {
    let reply = app
        .get(&format!("{}?limit=100&{query}", shop.chats()), &shop.owner)
        .await;
    reply.expect(200);
    assert!(reply.json()["next_cursor"].is_null(), "{}", reply.text);
    ids(&reply.json()).into_iter().collect()
}

fn set(chats: &[&Chat]) -> BTreeSet<String> {
    chats.iter().map(|c| c.id.clone()).collect()
}

/// The customer's backend, which signs identity tokens for its signed-in users.
struct IdentityBackend {
    encoding: jsonwebtoken::EncodingKey,
    public_pem: String,
}

impl IdentityBackend {
    fn new() -> IdentityBackend {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        IdentityBackend {
            encoding: jsonwebtoken::EncodingKey::from_ec_der(pair.to_pkcs8v1().unwrap().as_ref()),
            public_pem: pem::encode(&pem::Pem::new(
                "PUBLIC KEY",
                pair.public_key().as_der().unwrap().as_ref().to_vec(),
            )),
        }
    }

    fn token_for(&self, sub: &str, audience: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &json!({ "sub": sub, "aud": audience, "iat": now, "exp": now + 300 }),
            &self.encoding,
        )
        .unwrap()
    }
}

#[tokio::test]
async fn each_filter_narrows_the_chat_log() {
    each_backend(async |app| {
        let shop = Shop::open(app).await;
        let backend = IdentityBackend::new();
        app.post(
            &format!(
                "/api/v1/orgs/{}/bots/{}/identity-keys",
                shop.org, shop.bot.id
            ),
            &shop.owner,
            json!({ "name": "Shop backend", "public_key_pem": backend.public_pem }),
        )
        .await
        .expect(201);

        let plain = talk(app, &shop, "Just looking").await;
        let requested = talk(app, &shop, "I want a human").await;
        let with_agent = talk(app, &shop, "Me too").await;
        let ended = talk(app, &shop, "And me").await;
        for chat in [&requested, &with_agent, &ended] {
            visitor_post(app, chat, "/chat/v1/handover", json!({}))
                .await
                .expect(202);
        }
        let handover = |chat: &Chat, step: &str| {
            format!(
                "/api/v1/orgs/{}/bots/{}/handovers/{}/{step}",
                shop.org, shop.bot.id, chat.id
            )
        };
        for (chat, steps) in [(&with_agent, &["take"][..]), (&ended, &["take", "end"][..])] {
            for step in steps {
                app.post(&handover(chat, step), &shop.owner, json!({}))
                    .await
                    .expect(200);
            }
        }
        let crawler = start(app, &shop.bot.key, CRAWLER).await;
        say(app, &crawler, "index me").await;
        let verified = start(app, &shop.bot.key, BROWSER).await;
        let identity = visitor_post(
            app,
            &verified,
            "/chat/v1/identity",
            json!({ "token": backend.token_for("customer-7", &shop.bot.key) }),
        )
        .await;
        identity.expect(200);
        let verified = Chat {
            token: identity.json()["token"].as_str().unwrap().to_owned(),
            ..verified
        };
        say(app, &verified, "Where is my order?").await;
        let norwegian = talk(app, &shop, "Hei, har dere ambolter?").await;
        let vip = talk(app, &shop, "Big order").await;
        let vip_billing = talk(app, &shop, "Invoice please").await;
        shop.set_labels(app, &vip.id, &["VIP"]).await.expect(200);
        shop.set_labels(app, &vip_billing.id, &["vip", "Billing"])
            .await
            .expect(200);
        // Language detection is another part of the engine; it records what it finds through this
        // store call, which the test makes in its place.
        let store = confide_store::SqlStore::connect(&app.database_url)
            .await
            .unwrap();
        assert!(
            store
                .set_conversation_exchange(
                    shop.bot.id.parse().unwrap(),
                    norwegian.id.parse().unwrap(),
                    Some("nb"),
                    None,
                )
                .await
                .unwrap()
        );
        store.close().await;

        let all = [
            &plain,
            &requested,
            &with_agent,
            &ended,
            &crawler,
            &verified,
            &norwegian,
            &vip,
            &vip_billing,
        ];
        assert_eq!(find(app, &shop, "").await, set(&all));

        // Handover state.
        assert_eq!(
            find(app, &shop, "state=requested").await,
            set(&[&requested])
        );
        assert_eq!(find(app, &shop, "state=agent").await, set(&[&with_agent]));
        assert_eq!(find(app, &shop, "state=ended").await, set(&[&ended]));
        assert_eq!(
            find(app, &shop, "state=bot").await,
            set(&[&plain, &crawler, &verified, &norwegian, &vip, &vip_billing])
        );

        // Labels: every one asked for, repeated or as a list, in any case.
        assert_eq!(
            find(app, &shop, "label=vip").await,
            set(&[&vip, &vip_billing])
        );
        for query in [
            "label=vip&label=billing",
            "label=billing,VIP",
            "label=%20Billing%20&label=vip",
        ] {
            assert_eq!(
                find(app, &shop, query).await,
                set(&[&vip_billing]),
                "{query}"
            );
        }
        assert_eq!(find(app, &shop, "label=nobody").await, BTreeSet::new());
        assert_eq!(
            find(app, &shop, "label=vip&label=nobody").await,
            BTreeSet::new()
        );

        // Language, without regard to case.
        assert_eq!(find(app, &shop, "language=nb").await, set(&[&norwegian]));
        assert_eq!(find(app, &shop, "language=NB").await, set(&[&norwegian]));
        // Every other chat speaks the bot's default language.
        let mut english = find(app, &shop, "").await;
        english.remove(&norwegian.id);
        assert_eq!(find(app, &shop, "language=en").await, english);
        assert_eq!(find(app, &shop, "language=de").await, BTreeSet::new());

        // Verified identity.
        assert_eq!(find(app, &shop, "verified=true").await, set(&[&verified]));
        let unverified: Vec<&Chat> = all
            .iter()
            .copied()
            .filter(|c| c.id != verified.id)
            .collect();
        assert_eq!(find(app, &shop, "verified=false").await, set(&unverified));
        assert_eq!(
            find(app, &shop, "user_id=customer-7").await,
            set(&[&verified])
        );
        assert_eq!(
            find(app, &shop, "user_id=customer-8").await,
            BTreeSet::new()
        );

        // Filters combine.
        assert_eq!(
            find(app, &shop, "state=bot&verified=false&label=vip").await,
            set(&[&vip, &vip_billing])
        );

        // Last activity: `from` is inclusive, `to` exclusive, around a chat in the middle.
        let everything = app
            .get(&format!("{}?limit=100", shop.chats()), &shop.owner)
            .await;
        let listed = everything.json()["chats"].as_array().unwrap().clone();
        let activity = |c: &Value| c["last_message_at"].as_str().unwrap().to_owned();
        let pivot = &listed[listed.len() / 2];
        let at = activity(pivot);
        let index = |id: &str| listed.iter().position(|c| c["id"] == id).unwrap();
        let pivot_index = index(pivot["id"].as_str().unwrap());
        let (mut since, mut before) = (BTreeSet::new(), BTreeSet::new());
        for (i, chat) in listed.iter().enumerate() {
            let id = chat["id"].as_str().unwrap().to_owned();
            // Newest first: the pivot and everything above it, plus any chat in the same millisecond.
            if i <= pivot_index || activity(chat) == at {
                since.insert(id);
            } else {
                before.insert(id);
            }
        }
        let encoded = at.replace('+', "%2B");
        assert_eq!(find(app, &shop, &format!("from={encoded}")).await, since);
        assert_eq!(find(app, &shop, &format!("to={encoded}")).await, before);
        assert_eq!(
            find(app, &shop, &format!("from={encoded}&to={encoded}")).await,
            BTreeSet::new()
        );
        assert_eq!(
            find(app, &shop, "from=2000-01-01T01:00:00%2B01:00").await,
            set(&all)
        );
        assert_eq!(
            find(app, &shop, "to=2000-01-01T00:00:00Z").await,
            BTreeSet::new()
        );

        // Flagged automated chats are there, and marked.
        for chat in &listed {
            let expected = if chat["id"] == crawler.id.as_str() {
                json!("crawler")
            } else {
                Value::Null
            };
            assert_eq!(chat["automated"], expected, "{chat}");
        }
        let shown = listed
            .iter()
            .find(|c| c["id"] == verified.id.as_str())
            .unwrap();
        assert_eq!(shown["verified"], json!(true));
        assert_eq!(shown["user_id"], json!("customer-7"));
        assert_eq!(shown["state"], json!("bot"));
        let shown = listed
            .iter()
            .find(|c| c["id"] == norwegian.id.as_str())
            .unwrap();
        assert_eq!(shown["language_code"], json!("nb"));
        assert_eq!(shown["verified"], json!(false));

        // Filters that make no sense are refused, each with its code.
        for (query, status, code) in [
            ("from=yesterday", 422, "invalid_time"),
            ("to=2026-01-01", 422, "invalid_time"),
            (
                "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
                422,
                "invalid_range",
            ),
            ("state=lost", 400, "invalid_query"),
            ("verified=maybe", 400, "invalid_query"),
            ("label=a;b", 422, "invalid_label"),
            ("language=english", 422, "invalid_language"),
            ("user_id=%07bell", 422, "invalid_user_id"),
            ("limit=0", 422, "invalid_limit"),
            ("limit=101", 422, "invalid_limit"),
            ("colour=red", 400, "invalid_query"),
            ("limit=1&limit=2", 400, "duplicate_parameter"),
        ] {
            app.get(&format!("{}?{query}", shop.chats()), &shop.owner)
                .await
                .expect_error(status, code);
        }
        let many: Vec<String> = (0..21).map(|i| format!("label=l{i}")).collect();
        app.get(&format!("{}?{}", shop.chats(), many.join("&")), &shop.owner)
            .await
            .expect_error(422, "too_many_labels");
    })
    .await;
}

#[tokio::test]
async fn pages_walk_every_chat_exactly_once_in_a_stable_order() {
    each_backend(async |app| {
        let shop = Shop::open(app).await;
        let mut chats = Vec::new();
        for i in 0..7 {
            chats.push(talk(app, &shop, &format!("Question {i}")).await);
        }
        // Another bot's chat never shows up here.
        let other = app.create_bot(&shop.owner, &shop.org, "Other helper").await;
        start(app, &other.key, BROWSER).await;

        let walk = async |query: &str| {
            let mut seen = Vec::new();
            let mut pages = Vec::new();
            let mut path = format!("{}?limit=3{query}", shop.chats());
            loop {
                let reply = app.get(&path, &shop.owner).await;
                reply.expect(200);
                let page = reply.json();
                pages.push(ids(&page).len());
                seen.extend(ids(&page));
                match page["next_cursor"].as_str() {
                    Some(cursor) => {
                        path = format!("{}?limit=3{query}&cursor={cursor}", shop.chats());
                    }
                    None => break,
                }
            }
            (seen, pages)
        };
        let everyone = set(&chats.iter().collect::<Vec<_>>());
        let (seen, pages) = walk("").await;
        assert_eq!(pages, vec![3, 3, 1]);
        assert_eq!(seen.len(), 7, "{seen:?}");
        assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), everyone);
        // Newest activity first: the last chat that spoke leads.
        assert_eq!(seen[0], chats[6].id);
        let one_page = app
            .get(&format!("{}?limit=100", shop.chats()), &shop.owner)
            .await;
        assert_eq!(
            ids(&one_page.json()),
            seen,
            "pages follow the one-page order"
        );

        // A chat that speaks again moves to the top.
        say(app, &chats[0], "Me again").await;
        let (seen, _) = walk("").await;
        assert_eq!(seen[0], chats[0].id);

        // With every chat active in the same millisecond, ties go by id, highest first, and the
        // walk still meets each chat once.
        let db = app.database().await;
        sqlx::query("UPDATE conversations SET last_message_at = $1 WHERE bot_id = $2")
            .bind(1_750_000_000_000_i64)
            .bind(&shop.bot.id)
            .execute(&db)
            .await
            .unwrap();
        db.close().await;
        let (seen, pages) = walk("").await;
        assert_eq!(pages, vec![3, 3, 1]);
        let mut by_id: Vec<String> = everyone.iter().cloned().collect();
        by_id.sort();
        by_id.reverse();
        assert_eq!(seen, by_id);

        // Pages of a filtered log hold only what the filter lets through.
        for chat in &chats[..4] {
            shop.set_labels(app, &chat.id, &["returns"])
                .await
                .expect(200);
        }
        let (seen, pages) = walk("&label=returns").await;
        assert_eq!(pages, vec![3, 1]);
        assert_eq!(
            seen.into_iter().collect::<BTreeSet<_>>(),
            set(&chats[..4].iter().collect::<Vec<_>>())
        );

        // Cursors are ours and this listing's: altered, made up or another bot's are refused.
        let first = app
            .get(&format!("{}?limit=3", shop.chats()), &shop.owner)
            .await
            .json();
        let cursor = first["next_cursor"].as_str().unwrap().to_owned();
        let (position, mac) = cursor.split_once('.').unwrap();
        let altered_position = {
            use base64::Engine as _;
            let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let text = String::from_utf8(engine.decode(position).unwrap()).unwrap();
            let (at, id) = text.split_once('.').unwrap();
            let later = at.parse::<i64>().unwrap() + 1;
            format!("{}.{mac}", engine.encode(format!("{later}.{id}")))
        };
        let other_bot = format!("/api/v1/orgs/{}/bots/{}/chats", shop.org, other.id);
        for (path, bad) in [
            (shop.chats(), altered_position.as_str()),
            (shop.chats(), "garbage"),
            (shop.chats(), "Zm9v.YmFy"),
            (other_bot.clone(), cursor.as_str()),
        ] {
            app.get(&format!("{path}?cursor={bad}"), &shop.owner)
                .await
                .expect_error(422, "invalid_cursor");
        }
        let actions = app.audit_actions(&shop.owner, &shop.org).await;
        assert_eq!(
            actions
                .iter()
                .filter(|a| *a == "chat_log.cursor_refused")
                .count(),
            4,
            "{actions:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_long_chat_pages_back_through_its_messages() {
    each_backend(async |app| {
        let shop = Shop::open(app).await;
        let chat = talk(app, &shop, "one").await;
        for text in ["two", "three", "four"] {
            say(app, &chat, text).await;
        }
        let detail = app.get(&shop.chat(&chat.id), &shop.owner).await;
        detail.expect(200);
        let full: Vec<Value> = detail.json()["messages"].as_array().unwrap().clone();
        // Each question and the bot's fallback reply, oldest first.
        assert_eq!(full.len(), 8, "{}", detail.text);
        assert_eq!(full[0]["text"], "one");
        assert_eq!(full[0]["sender"], "visitor");
        assert_eq!(full[1]["sender"], "bot");
        assert!(detail.json()["earlier_cursor"].is_null());
        assert_eq!(detail.json()["chat"]["id"], chat.id.as_str());

        let mut pages = Vec::new();
        let mut path = format!("{}?limit=3", shop.chat(&chat.id));
        loop {
            let reply = app.get(&path, &shop.owner).await;
            reply.expect(200);
            let page = reply.json();
            pages.push(page["messages"].as_array().unwrap().clone());
            match page["earlier_cursor"].as_str() {
                Some(cursor) => path = format!("{}?limit=3&before={cursor}", shop.chat(&chat.id)),
                None => break,
            }
        }
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![3, 3, 2]
        );
        let stitched: Vec<Value> = pages.into_iter().rev().flatten().collect();
        assert_eq!(stitched, full);

        // The link in the `message.created` webhook gives the same to the same caller.
        let linked = app
            .get(&format!("/api/v1/chats/{}", chat.id), &shop.owner)
            .await;
        linked.expect(200);
        assert_eq!(linked.json(), detail.json());

        // A cursor of one chat does not page another.
        let other = talk(app, &shop, "hello").await;
        let page = app
            .get(&format!("{}?limit=1", shop.chat(&chat.id)), &shop.owner)
            .await
            .json();
        let cursor = page["earlier_cursor"].as_str().unwrap();
        app.get(
            &format!("{}?before={cursor}", shop.chat(&other.id)),
            &shop.owner,
        )
        .await
        .expect_error(422, "invalid_cursor");
        for query in ["limit=0", "limit=501"] {
            app.get(&format!("{}?{query}", shop.chat(&chat.id)), &shop.owner)
                .await
                .expect_error(422, "invalid_limit");
        }
        // A chat of another bot, or none at all, is not found.
        let other_bot = app.create_bot(&shop.owner, &shop.org, "Second").await;
        app.get(
            &format!(
                "/api/v1/orgs/{}/bots/{}/chats/{}",
                shop.org, other_bot.id, chat.id
            ),
            &shop.owner,
        )
        .await
        .expect_error(404, "not_found");
        app.get(
            &format!("/api/v1/chats/{}", uuid::Uuid::now_v7()),
            &shop.owner,
        )
        .await
        .expect_error(404, "not_found");
    })
    .await;
}

#[tokio::test]
async fn labels_are_normalized_replaced_whole_and_checked() {
    each_backend(async |app| {
        let shop = Shop::open(app).await;
        let chat = talk(app, &shop, "Can I return this?").await;
        let labels = format!("{}/labels", shop.chat(&chat.id));

        let reply = shop
            .set_labels(
                app,
                &chat.id,
                &[" Needs   Call ", "VIP", "vip", "Kundeservice Ø"],
            )
            .await;
        reply.expect(200);
        let expected = json!(["kundeservice ø", "needs call", "vip"]);
        assert_eq!(reply.json()["labels"], expected);
        let detail = app.get(&shop.chat(&chat.id), &shop.owner).await.json();
        assert_eq!(detail["chat"]["labels"], expected);
        let list = app.get(&shop.chats(), &shop.owner).await.json();
        assert_eq!(list["chats"][0]["labels"], expected);
        assert_eq!(
            find(app, &shop, "label=Kundeservice%20%C3%98").await,
            set(&[&chat])
        );

        // A new list replaces the old one; an empty list clears it.
        shop.set_labels(app, &chat.id, &["returns"])
            .await
            .expect(200);
        let detail = app.get(&shop.chat(&chat.id), &shop.owner).await.json();
        assert_eq!(detail["chat"]["labels"], json!(["returns"]));
        assert_eq!(find(app, &shop, "label=vip").await, BTreeSet::new());
        shop.set_labels(app, &chat.id, &[]).await.expect(200);
        let detail = app.get(&shop.chat(&chat.id), &shop.owner).await.json();
        assert_eq!(detail["chat"]["labels"], json!([]));

        // Bad labels change nothing.
        shop.set_labels(app, &chat.id, &["keep"]).await.expect(200);
        let twenty_one: Vec<String> = (0..21).map(|i| format!("l{i}")).collect();
        let long = "a".repeat(41);
        for (body, code) in [
            (json!({ "labels": ["a,b"] }), "invalid_label"),
            (json!({ "labels": ["<b>"] }), "invalid_label"),
            (json!({ "labels": [""] }), "invalid_label"),
            (json!({ "labels": ["   "] }), "invalid_label"),
            (json!({ "labels": [long] }), "invalid_label"),
            (json!({ "labels": twenty_one }), "too_many_labels"),
            (json!({ "labels": "vip" }), "invalid_body"),
            (
                json!({ "labels": ["vip"], "colour": "red" }),
                "invalid_body",
            ),
        ] {
            app.put(&labels, &shop.owner, body.clone())
                .await
                .expect_error(422, code);
        }
        let detail = app.get(&shop.chat(&chat.id), &shop.owner).await.json();
        assert_eq!(detail["chat"]["labels"], json!(["keep"]));

        // Changing labels takes write on the bot, or chats:write.
        let reader = app
            .member(&shop.owner, &shop.org, &email("reader"), "member")
            .await;
        app.grant(
            &shop.owner,
            &shop.org,
            &shop.bot.id,
            &reader.user_id,
            "read",
        )
        .await;
        app.put(&labels, &reader.bearer(), json!({ "labels": ["mine"] }))
            .await
            .expect_error(403, "forbidden");
        let read_key = app
            .create_api_key(&shop.owner, &shop.org, &["chats:read"], None)
            .await;
        app.put(
            &labels,
            &read_key.credential(),
            json!({ "labels": ["mine"] }),
        )
        .await
        .expect_error(403, "insufficient_scope");
        let write_key = app
            .create_api_key(&shop.owner, &shop.org, &["chats:write"], None)
            .await;
        let reply = app
            .put(
                &labels,
                &write_key.credential(),
                json!({ "labels": ["Keyed"] }),
            )
            .await;
        reply.expect(200);
        assert_eq!(reply.json()["labels"], json!(["keyed"]));
        // A chat of another bot is not this bot's to label.
        let other = app.create_bot(&shop.owner, &shop.org, "Second").await;
        app.put(
            &format!(
                "/api/v1/orgs/{}/bots/{}/chats/{}/labels",
                shop.org, other.id, chat.id
            ),
            &shop.owner,
            json!({ "labels": ["stray"] }),
        )
        .await
        .expect_error(404, "not_found");

        let actions = app.audit_actions(&shop.owner, &shop.org).await;
        assert!(
            actions.iter().filter(|a| *a == "chat.labels_set").count() >= 5,
            "{actions:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_sharing_policy_decides_who_reads_the_chat_log() {
    each_backend(async |app| {
        let shop = Shop::open(app).await;
        let chat = talk(app, &shop, "Private matter").await;
        let linked = format!("/api/v1/chats/{}", chat.id);
        let stranger = app
            .member(&shop.owner, &shop.org, &email("stranger"), "member")
            .await;
        let reader = app
            .member(&shop.owner, &shop.org, &email("reader"), "member")
            .await;
        app.grant(
            &shop.owner,
            &shop.org,
            &shop.bot.id,
            &reader.user_id,
            "read",
        )
        .await;

        // Without a grant, the bot and its chats do not exist.
        for path in [shop.chats(), shop.chat(&chat.id), linked.clone()] {
            let reply = app.get(&path, &stranger.bearer()).await;
            reply.expect_error(404, "not_found");
            assert!(!reply.text.contains("Private matter"));
        }
        // Read on the bot is enough under the default policy.
        for path in [shop.chats(), shop.chat(&chat.id), linked.clone()] {
            app.get(&path, &reader.bearer()).await.expect(200);
        }

        // Shared with listed members only: the reader is not listed.
        let sharing = format!("/api/v1/orgs/{}/bots/{}/sharing", shop.org, shop.bot.id);
        app.put(
            &sharing,
            &shop.owner,
            json!({ "policy": "listed_members", "members": [] }),
        )
        .await
        .expect(200);
        for path in [shop.chats(), shop.chat(&chat.id)] {
            app.get(&path, &reader.bearer())
                .await
                .expect_error(403, "conversations_not_shared");
        }
        let reply = app.get(&linked, &reader.bearer()).await;
        reply.expect_error(404, "not_found");
        assert!(!reply.text.contains("Private matter"));
        // The owner always sees them; once listed, so does the reader.
        app.get(&shop.chats(), &shop.owner).await.expect(200);
        app.put(
            &sharing,
            &shop.owner,
            json!({ "policy": "listed_members", "members": [reader.user_id] }),
        )
        .await
        .expect(200);
        for path in [shop.chats(), shop.chat(&chat.id), linked.clone()] {
            app.get(&path, &reader.bearer()).await.expect(200);
        }

        // API keys need chats:read, and the bot if they are bound to one.
        let bots_key = app
            .create_api_key(&shop.owner, &shop.org, &["bots:write"], None)
            .await;
        app.get(&shop.chats(), &bots_key.credential())
            .await
            .expect_error(403, "insufficient_scope");
        app.get(&linked, &bots_key.credential())
            .await
            .expect_error(404, "not_found");
        let chats_key = app
            .create_api_key(&shop.owner, &shop.org, &["chats:read"], None)
            .await;
        for path in [shop.chats(), shop.chat(&chat.id), linked.clone()] {
            app.get(&path, &chats_key.credential()).await.expect(200);
        }
        let other = app.create_bot(&shop.owner, &shop.org, "Second").await;
        let bound = app
            .create_api_key(&shop.owner, &shop.org, &["chats:read"], Some(&other.id))
            .await;
        for path in [shop.chats(), linked] {
            app.get(&path, &bound.credential())
                .await
                .expect_error(404, "not_found");
        }
        let actions = app.audit_actions(&shop.owner, &shop.org).await;
        assert!(actions.contains(&"authz.denied".to_owned()), "{actions:?}");
    })
    .await;
}

#[tokio::test]
async fn the_sharing_policy_also_decides_who_changes_a_chat() {
    each_backend(async |app| {
        let shop = Shop::open(app).await;
        let chat = talk(app, &shop, "Keep this between us").await;
        let writer = app
            .member(&shop.owner, &shop.org, &email("writer"), "member")
            .await;
        app.grant(
            &shop.owner,
            &shop.org,
            &shop.bot.id,
            &writer.user_id,
            "write",
        )
        .await;
        let sharing = format!("/api/v1/orgs/{}/bots/{}/sharing", shop.org, shop.bot.id);
        let labels = format!("{}/labels", shop.chat(&chat.id));
        let handover = format!(
            "/api/v1/orgs/{}/bots/{}/handovers/{}",
            shop.org, shop.bot.id, chat.id
        );
        app.put(
            &sharing,
            &shop.owner,
            json!({ "policy": "listed_members", "members": [] }),
        )
        .await
        .expect(200);

        // Write permission on the bot is not enough when the chats are not shared with the writer.
        app.put(&labels, &writer.bearer(), json!({ "labels": ["vip"] }))
            .await
            .expect_error(403, "conversations_not_shared");
        let reply = app.get(&handover, &writer.bearer()).await;
        reply.expect_error(403, "conversations_not_shared");
        assert!(!reply.text.contains("Keep this between us"));
        app.delete(&shop.chat(&chat.id), &writer.bearer())
            .await
            .expect_error(403, "conversations_not_shared");
        // The chat is untouched.
        let detail = app.get(&shop.chat(&chat.id), &shop.owner).await;
        detail.expect(200);
        assert_eq!(detail.json()["chat"]["labels"], json!([]));

        // Once listed, the same writer may.
        app.put(
            &sharing,
            &shop.owner,
            json!({ "policy": "listed_members", "members": [writer.user_id] }),
        )
        .await
        .expect(200);
        app.put(&labels, &writer.bearer(), json!({ "labels": ["vip"] }))
            .await
            .expect(200);
        app.delete(&shop.chat(&chat.id), &writer.bearer())
            .await
            .expect(204);
        let actions = app.audit_actions(&shop.owner, &shop.org).await;
        assert!(actions.contains(&"authz.denied".to_owned()), "{actions:?}");
    })
    .await;
}

/// Webhook receivers in this test would listen on 127.0.0.1; here the endpoint is a closed port
/// there, so deliveries stay pending while they are retried.
fn allow_loopback(config: &mut confide::config::Config) {
    config.outbound_allow = confide_outbound::Allowlist::parse(&["127.0.0.0/8"]).unwrap();
}

/// What erasing a conversation must leave nothing of, straight from the database.
const ERASED: [(&str, &str); 5] = [
    (
        "conversations",
        "SELECT COUNT(*) AS n FROM conversations WHERE id = $1",
    ),
    (
        "messages",
        "SELECT COUNT(*) AS n FROM messages WHERE conversation_id = $1",
    ),
    (
        "context memory",
        "SELECT COUNT(*) AS n FROM conversation_context WHERE conversation_id = $1",
    ),
    (
        "labels",
        "SELECT COUNT(*) AS n FROM conversation_labels WHERE conversation_id = $1",
    ),
    (
        "webhook deliveries",
        "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE conversation_id = $1",
    ),
];

async fn rows(db: &sqlx::AnyPool, statement: &'static str, chat: &str) -> i64 {
    let row = sqlx::query(statement)
        .bind(chat)
        .fetch_one(db)
        .await
        .unwrap();
    sqlx::Row::get::<i64, _>(&row, "n")
}

/// The message ids of a chat, through the chat log.
async fn message_ids(app: &TestApp, shop: &Shop, chat: &Chat) -> BTreeSet<String> {
    let detail = app.get(&shop.chat(&chat.id), &shop.owner).await;
    detail.expect(200);
    detail.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn erasing_a_chat_removes_everything_of_it_and_statistics_stay() {
    each_backend_with(allow_loopback, async |app| {
        let shop = Shop::open(app).await;
        app.post(
            &format!("/api/v1/orgs/{}/bots/{}/dialogues", shop.org, shop.bot.id),
            &shop.owner,
            json!({
                "name": "Orders",
                "patterns": ["order (\\d+)"],
                "context_key": "order",
                "replies": ["Order {order} is on its way."],
            }),
        )
        .await
        .expect(201);
        let hooks = format!("/api/v1/orgs/{}/bots/{}/webhooks", shop.org, shop.bot.id);
        let hook = app
            .post(
                &hooks,
                &shop.owner,
                json!({ "url": "http://127.0.0.1:9/hook", "events": ["message.created"] }),
            )
            .await;
        hook.expect(201);
        let hook = hook.json()["webhook"]["id"].as_str().unwrap().to_owned();

        let doomed = talk(app, &shop, "Where is order 1234?").await;
        say(app, &doomed, "My name is Ada Lovelace").await;
        visitor_post(app, &doomed, "/chat/v1/handover", json!({}))
            .await
            .expect(202);
        let kept = talk(app, &shop, "Where is order 99?").await;
        for chat in [&doomed, &kept] {
            shop.set_labels(app, &chat.id, &["orders"])
                .await
                .expect(200);
        }

        let date = |offset| common::utc_date(offset);
        let statistics = format!(
            "/api/v1/orgs/{}/bots/{}/statistics?from={}&to={}",
            shop.org,
            shop.bot.id,
            date(-1),
            date(1)
        );
        let before = app.get(&statistics, &shop.owner).await;
        before.expect(200);
        assert_eq!(before.json()["totals"]["sessions"], 2, "{}", before.text);
        assert_eq!(before.json()["totals"]["handovers"], 1, "{}", before.text);

        let db = app.database().await;
        // Everything there is to erase exists before, so the counts after are not vacuous.
        for (what, statement) in ERASED {
            assert!(rows(&db, statement, &doomed.id).await > 0, "{what}");
        }
        let (doomed_messages, kept_messages) = (
            message_ids(app, &shop, &doomed).await,
            message_ids(app, &shop, &kept).await,
        );
        let deliveries = format!("{hooks}/{hook}/deliveries");
        let about = async |messages: &BTreeSet<String>| {
            let list = app.get(&deliveries, &shop.owner).await;
            list.expect(200);
            list.json()["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| messages.contains(d["event_id"].as_str().unwrap()))
                .count()
        };
        assert!(about(&doomed_messages).await > 0);
        let kept_deliveries = about(&kept_messages).await;
        assert!(kept_deliveries > 0);

        // Read-only callers cannot erase.
        let reader = app
            .member(&shop.owner, &shop.org, &email("reader"), "member")
            .await;
        app.grant(
            &shop.owner,
            &shop.org,
            &shop.bot.id,
            &reader.user_id,
            "read",
        )
        .await;
        app.delete(&shop.chat(&doomed.id), &reader.bearer())
            .await
            .expect_error(403, "forbidden");
        let read_key = app
            .create_api_key(&shop.owner, &shop.org, &["chats:read"], None)
            .await;
        app.delete(&shop.chat(&doomed.id), &read_key.credential())
            .await
            .expect_error(403, "insufficient_scope");
        assert_eq!(rows(&db, ERASED[0].1, &doomed.id).await, 1);

        app.delete(&shop.chat(&doomed.id), &shop.owner)
            .await
            .expect(204);

        for (what, statement) in ERASED {
            assert_eq!(rows(&db, statement, &doomed.id).await, 0, "{what}");
            assert!(
                rows(&db, statement, &kept.id).await > 0,
                "{what} of the other chat"
            );
        }
        db.close().await;
        app.get(&shop.chat(&doomed.id), &shop.owner)
            .await
            .expect_error(404, "not_found");
        app.get(&format!("/api/v1/chats/{}", doomed.id), &shop.owner)
            .await
            .expect_error(404, "not_found");
        assert_eq!(find(app, &shop, "").await, set(&[&kept]));
        assert_eq!(about(&doomed_messages).await, 0);
        assert_eq!(about(&kept_messages).await, kept_deliveries);
        // The visitor's token opens nothing any more.
        visitor_post(
            app,
            &doomed,
            "/chat/v1/messages",
            json!({ "text": "hello?" }),
        )
        .await
        .expect_error(403, "invalid_chat_token");

        // The statistics answer exactly as before.
        let after = app.get(&statistics, &shop.owner).await;
        after.expect(200);
        assert_eq!(after.json(), before.json());

        // Gone is gone; erasing is audited.
        app.delete(&shop.chat(&doomed.id), &shop.owner)
            .await
            .expect_error(404, "not_found");
        let actions = app.audit_actions(&shop.owner, &shop.org).await;
        assert_eq!(
            actions.iter().filter(|a| *a == "chat.deleted").count(),
            1,
            "{actions:?}"
        );
    })
    .await;
}
