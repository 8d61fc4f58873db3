//! The Statistics API: sessions, messages, fallbacks and handovers per day, with flagged bot
//! traffic and chats without interaction left out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{TestApp, each_backend, email, utc_date};
use serde_json::{Value, json};

async fn chat(app: &TestApp, bot_key: &str, user_agent: &str) -> String {
    let reply = app
        .send(
            app.client
                .post(app.url(&format!("/chat/v1/{bot_key}/sessions")))
                .header("user-agent", user_agent)
                .json(&json!({})),
        )
        .await;
    reply.expect(201);
    reply.json()["token"].as_str().unwrap().to_owned()
}

async fn say(app: &TestApp, token: &str, text: &str) {
    app.send(
        app.client
            .post(app.url("/chat/v1/messages"))
            .header("x-chat-token", token)
            .json(&json!({ "text": text })),
    )
    .await
    .expect(202);
}

const BROWSER: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36";

#[tokio::test]
async fn statistics_count_real_visitors_only() {
    each_backend(async |app| {
        let (owner, session) = app.owner(&email("owner"), "Shop").await;
        let owner_credential = session.bearer();
        let bot = app
            .create_bot(&owner_credential, &owner.org_id, "Helper")
            .await;
        app.post(
            &format!("/api/v1/orgs/{}/bots/{}/dialogues", owner.org_id, bot.id),
            &owner_credential,
            json!({ "name": "Hours", "patterns": ["(?i)open"], "replies": ["9 to 5."] }),
        )
        .await
        .expect(201);

        // A visitor: one answered question, one fallback, then asks for a human.
        let visitor = chat(app, &bot.key, BROWSER).await;
        say(app, &visitor, "When are you open?").await;
        say(app, &visitor, "Do you sell anvils?").await;
        app.send(
            app.client
                .post(app.url("/chat/v1/handover"))
                .header("x-chat-token", &visitor),
        )
        .await
        .expect(202);
        say(app, &visitor, "Hello, anyone?").await;
        // A second visitor writes once.
        let second = chat(app, &bot.key, BROWSER).await;
        say(app, &second, "open today?").await;
        // A crawler chats too, and a page load that never writes: neither counts.
        let crawler = chat(app, &bot.key, "Mozilla/5.0 (compatible; Googlebot/2.1)").await;
        say(app, &crawler, "When are you open?").await;
        say(app, &crawler, "spam spam").await;
        chat(app, &bot.key, BROWSER).await;

        // Yesterday to tomorrow (UTC), so a run across midnight still sees everything.
        let (from, to) = (utc_date(-1), utc_date(1));
        let path = format!(
            "/api/v1/orgs/{}/bots/{}/statistics?from={from}&to={to}",
            owner.org_id, bot.id
        );
        let stats = app.get(&path, &owner_credential).await;
        stats.expect(200);
        let totals = &stats.json()["totals"];
        assert_eq!(totals["sessions"], 2, "{totals}");
        assert_eq!(totals["visitor_messages"], 4, "{totals}");
        // The message sent while waiting for a human got no bot reply.
        assert_eq!(totals["bot_messages"], 3, "{totals}");
        assert_eq!(totals["fallbacks"], 1, "{totals}");
        assert_eq!(totals["handovers"], 1, "{totals}");
        assert!((totals["fallback_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
        let days = stats.json()["days"].as_array().unwrap().clone();
        assert_eq!(days.len(), 3);
        assert_eq!(days[0]["date"], from.as_str());
        let per_day: i64 = days.iter().map(|d| d["sessions"].as_i64().unwrap()).sum();
        assert_eq!(per_day, 2);

        // A stats:read key reads them; bad ranges and zones are refused.
        let key = app
            .create_api_key(&owner_credential, &owner.org_id, &["stats:read"], None)
            .await;
        app.get(&path, &key.credential()).await.expect(200);
        let base = format!("/api/v1/orgs/{}/bots/{}/statistics", owner.org_id, bot.id);
        for (query, code) in [
            ("from=2026-02-01&to=2026-01-01", "invalid_range"),
            ("from=2025-01-01&to=2026-06-01", "invalid_range"),
            ("from=2026-13-01&to=2026-13-02", "invalid_date"),
            (
                "from=2026-01-01&to=2026-01-02&tz=Mars/Olympus",
                "invalid_timezone",
            ),
        ] {
            app.get(&format!("{base}?{query}"), &owner_credential)
                .await
                .expect_error(422, code);
        }
        // Days come in the asked time zone, every day listed.
        let week = app
            .get(
                &format!("{base}?from=2026-03-01&to=2026-03-07&tz=Pacific/Auckland"),
                &owner_credential,
            )
            .await;
        week.expect(200);
        let dates: Vec<Value> = week.json()["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["date"].clone())
            .collect();
        assert_eq!(dates.len(), 7);
        assert_eq!(dates[0], "2026-03-01");
    })
    .await;
}
