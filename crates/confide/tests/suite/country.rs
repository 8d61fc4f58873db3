//! Country allow and deny lists: the server places a visitor's address (behind a trusted proxy,
//! from `X-Forwarded-For`) with the operator's MaxMind-format database, which these tests write
//! themselves (`common::mmdb`), and refuses chats its bot's rules exclude, audited.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::mmdb::{MmdbWriter, Value};
use common::{Credential, Reply, TestApp, each_backend, each_backend_with, email};
use confide_web::geo::{CountryDatabase, GeoIpError};
use serde_json::json;

const PAGE: &str = "https://shop.example.com";

const NORWAY: &str = "192.0.2.10";
const RUSSIA: &str = "198.51.100.7";
/// Its block is registered in Sweden; the record says nothing of where it is.
const SWEDEN_REGISTERED: &str = "203.0.113.9";
/// In the database, but its record names no country.
const NO_COUNTRY: &str = "203.0.113.200";
const SWEDEN_V6: &str = "2001:db8:5e::1";
/// Not in the database at all.
const UNPLACED: &str = "100.64.0.1";

fn countries() -> Vec<u8> {
    MmdbWriter::new("GeoLite2-Country")
        .country("192.0.2.0/24", "NO")
        .country("198.51.100.0/24", "RU")
        .insert(
            "203.0.113.0/25",
            Value::iso_code("registered_country", "SE"),
        )
        .insert(
            "203.0.113.128/25",
            Value::map([("continent", Value::map([("code", "EU".into())]))]),
        )
        .country("2001:db8:5e::/48", "SE")
        .build()
}

/// A directory holding `countries.mmdb`, kept for the test's duration.
fn geoip_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countries.mmdb");
    std::fs::write(&path, countries()).unwrap();
    (dir, path)
}

/// Runs `test` per backend on a server with the test database and the test client as its proxy.
async fn each_backend_with_geoip(test: impl AsyncFn(&TestApp)) {
    let (_dir, path) = geoip_file();
    each_backend_with(
        |config| {
            config.geoip_database = Some(path.clone());
            config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        },
        test,
    )
    .await;
}

async fn reply(response: reqwest::Response) -> Reply {
    common::read(response).await
}

async fn start_chat(app: &TestApp, bot_key: &str, from: &str) -> Reply {
    reply(
        app.client
            .post(app.url(&format!("/chat/v1/{bot_key}/sessions")))
            .header("origin", PAGE)
            .header("x-forwarded-for", from)
            .json(&json!({}))
            .send()
            .await
            .expect("request"),
    )
    .await
}

async fn send(app: &TestApp, token: &str, from: &str, text: &str) -> Reply {
    reply(
        app.client
            .post(app.url("/chat/v1/messages"))
            .header("x-chat-token", token)
            .header("origin", PAGE)
            .header("x-forwarded-for", from)
            .json(&json!({ "text": text }))
            .send()
            .await
            .expect("request"),
    )
    .await
}

async fn channel_auth(app: &TestApp, token: &str, channel: &str, from: &str) -> Reply {
    reply(
        app.client
            .post(app.url("/chat/v1/auth"))
            .header("x-chat-token", token)
            .header("origin", PAGE)
            .header("x-forwarded-for", from)
            .form(&[("socket_id", "1234.5678"), ("channel_name", channel)])
            .send()
            .await
            .expect("request"),
    )
    .await
}

struct Setup {
    org: String,
    owner: Credential,
    bot: common::CreatedBot,
}

async fn setup(app: &TestApp) -> Setup {
    let (owner, session) = app.owner(&email("owner"), "Shop").await;
    let bot = app
        .create_bot(&session.bearer(), &owner.org_id, "Helper")
        .await;
    let s = Setup {
        org: owner.org_id,
        owner: session.bearer(),
        bot,
    };
    put_restrictions(app, &s, json!({})).await.expect(200);
    s
}

async fn put_restrictions(app: &TestApp, s: &Setup, restrictions: serde_json::Value) -> Reply {
    app.put(
        &format!("/api/v1/orgs/{}/bots/{}/chat-settings", s.org, s.bot.id),
        &s.owner,
        json!({
            "greeting": "Welcome to the shop!",
            "fallback_reply": "Let me find someone who knows.",
            "allowed_domains": ["shop.example.com"],
            "restrictions": restrictions,
        }),
    )
    .await
}

/// The organization's audit events with `action`, newest first.
async fn audited(app: &TestApp, s: &Setup, action: &str) -> Vec<serde_json::Value> {
    app.audit_events(&s.owner, &s.org, action).await
}

#[test]
fn the_test_database_places_addresses_as_a_geoip_reader_sees_them() {
    let db = CountryDatabase::from_bytes(countries()).unwrap();
    assert_eq!(db.database_type(), "GeoLite2-Country");
    let country = |ip: &str| db.country(ip.parse().unwrap()).unwrap();
    assert_eq!(country(NORWAY), Some("NO"));
    assert_eq!(country("::ffff:192.0.2.200"), Some("NO"), "IPv4-mapped");
    assert_eq!(country(RUSSIA), Some("RU"));
    assert_eq!(country(SWEDEN_REGISTERED), Some("SE"));
    assert_eq!(country(SWEDEN_V6), Some("SE"));
    assert_eq!(country(NO_COUNTRY), None);
    assert_eq!(country(UNPLACED), None);
    assert_eq!(country("2001:db8:5f::1"), None);
    assert_eq!(country("127.0.0.1"), None);
}

#[test]
fn a_city_layout_with_long_values_is_read_too() {
    // Names past 28 and 284 bytes take the format's longer size encodings.
    let long = "Kautokeino ".repeat(30);
    let city = MmdbWriter::new("GeoIP2-City")
        .insert(
            "192.0.2.0/24",
            Value::map([
                (
                    "city",
                    Value::map([("names", Value::map([("en", long.as_str().into())]))]),
                ),
                (
                    "country",
                    Value::map([
                        ("iso_code", "NO".into()),
                        (
                            "names",
                            Value::map([("en", "Kingdom of Norway (Kongeriket Norge)".into())]),
                        ),
                    ]),
                ),
                (
                    "location",
                    Value::map([("accuracy_radius", Value::U16(500))]),
                ),
            ]),
        )
        .build();
    let db = CountryDatabase::from_bytes(city).unwrap();
    assert_eq!(db.country(NORWAY.parse().unwrap()).unwrap(), Some("NO"));
}

#[test]
fn a_database_without_countries_is_refused() {
    let asn = MmdbWriter::new("GeoLite2-ASN")
        .insert(
            "192.0.2.0/24",
            Value::map([("autonomous_system_number", Value::U32(64_496))]),
        )
        .build();
    assert!(matches!(
        CountryDatabase::from_bytes(asn),
        Err(GeoIpError::NoCountries)
    ));
    let mut truncated = countries();
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(
        CountryDatabase::from_bytes(truncated),
        Err(GeoIpError::Invalid(_))
    ));
}

#[tokio::test]
async fn a_visitor_from_a_denied_country_cannot_chat_and_the_refusal_is_audited() {
    each_backend_with_geoip(async |app| {
        let s = setup(app).await;
        // Without the rule, Russia may chat: what follows is the rule's doing.
        let session = start_chat(app, &s.bot.key, RUSSIA).await;
        session.expect(201);
        let token = session.json()["token"].as_str().unwrap().to_owned();
        let channel = session.json()["channel"].as_str().unwrap().to_owned();

        let saved = put_restrictions(app, &s, json!({ "country_deny": ["ru", "RU"] })).await;
        saved.expect(200);
        assert_eq!(saved.json()["restrictions"]["country_deny"], json!(["RU"]));

        start_chat(app, &s.bot.key, RUSSIA)
            .await
            .expect_error(403, "country_not_allowed");
        // A chat already open is cut off too, at every step.
        send(app, &token, RUSSIA, "still there?")
            .await
            .expect_error(403, "country_not_allowed");
        channel_auth(app, &token, &channel, RUSSIA)
            .await
            .expect_error(403, "country_not_allowed");
        let refusals = audited(app, &s, "chat.country_refused").await;
        assert_eq!(refusals.len(), 3, "{refusals:?}");
        assert!(refusals.iter().all(|e| e["details"]["country"] == "RU"
            && e["details"]["reason"] == "country"
            && e["ip"] == RUSSIA));

        // Only Russia: others, and addresses the database cannot place, may chat.
        start_chat(app, &s.bot.key, NORWAY).await.expect(201);
        start_chat(app, &s.bot.key, UNPLACED).await.expect(201);
        send(app, &token, NORWAY, "from the cabin")
            .await
            .expect(202);

        put_restrictions(app, &s, json!({})).await.expect(200);
        start_chat(app, &s.bot.key, RUSSIA).await.expect(201);
    })
    .await;
}

#[tokio::test]
async fn only_visitors_from_allowed_countries_may_chat() {
    each_backend_with_geoip(async |app| {
        let s = setup(app).await;
        start_chat(app, &s.bot.key, UNPLACED).await.expect(201);

        put_restrictions(app, &s, json!({ "country_allow": ["no", "se"] }))
            .await
            .expect(200);
        start_chat(app, &s.bot.key, NORWAY).await.expect(201);
        start_chat(app, &s.bot.key, "::ffff:192.0.2.44")
            .await
            .expect(201);
        start_chat(app, &s.bot.key, SWEDEN_REGISTERED)
            .await
            .expect(201);
        start_chat(app, &s.bot.key, SWEDEN_V6).await.expect(201);
        for elsewhere in [RUSSIA, UNPLACED, NO_COUNTRY, "2001:db8:5f::1"] {
            start_chat(app, &s.bot.key, elsewhere)
                .await
                .expect_error(403, "country_not_allowed");
        }
        let refusals = audited(app, &s, "chat.country_refused").await;
        assert_eq!(refusals.len(), 4);
        assert_eq!(
            refusals
                .iter()
                .filter(|e| e["details"]["country"].is_null())
                .count(),
            3,
            "unplaced addresses are refused as unknown: {refusals:?}"
        );

        // Deny wins over allow.
        put_restrictions(
            app,
            &s,
            json!({ "country_allow": ["NO", "SE"], "country_deny": ["SE"] }),
        )
        .await
        .expect(200);
        start_chat(app, &s.bot.key, NORWAY).await.expect(201);
        start_chat(app, &s.bot.key, SWEDEN_V6)
            .await
            .expect_error(403, "country_not_allowed");

        // IP rules still come first.
        put_restrictions(
            app,
            &s,
            json!({ "country_allow": ["NO"], "ip_deny": ["192.0.2.10"] }),
        )
        .await
        .expect(200);
        start_chat(app, &s.bot.key, NORWAY)
            .await
            .expect_error(403, "ip_not_allowed");
    })
    .await;
}

#[tokio::test]
async fn country_codes_are_checked_and_normalized_on_save() {
    each_backend_with_geoip(async |app| {
        let s = setup(app).await;
        let saved = put_restrictions(app, &s, json!({ "country_allow": ["xk", "No"] })).await;
        saved.expect(200);
        assert_eq!(
            saved.json()["restrictions"]["country_allow"],
            json!(["XK", "NO"])
        );
        let read = app
            .get(
                &format!("/api/v1/orgs/{}/bots/{}/chat-settings", s.org, s.bot.id),
                &s.owner,
            )
            .await;
        read.expect(200);
        assert_eq!(
            read.json()["restrictions"]["country_allow"],
            json!(["XK", "NO"])
        );

        let uk = put_restrictions(app, &s, json!({ "country_deny": ["UK"] })).await;
        uk.expect_error(422, "invalid_country");
        assert!(
            uk.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("GB")
        );
        for bad in [json!(["ZZ"]), json!(["NOR"]), json!([""]), json!(["n😀"])] {
            put_restrictions(app, &s, json!({ "country_allow": bad }))
                .await
                .expect_error(422, "invalid_country");
        }
        let too_many: Vec<String> = (0..251).map(|_| "NO".to_owned()).collect();
        put_restrictions(app, &s, json!({ "country_deny": too_many }))
            .await
            .expect_error(422, "invalid_restrictions");
        // Nothing half-written: the last good rules stand.
        let read = app
            .get(
                &format!("/api/v1/orgs/{}/bots/{}/chat-settings", s.org, s.bot.id),
                &s.owner,
            )
            .await;
        assert_eq!(
            read.json()["restrictions"]["country_allow"],
            json!(["XK", "NO"])
        );
    })
    .await;
}

#[tokio::test]
async fn without_a_geoip_database_country_rules_cannot_be_saved() {
    each_backend(async |app| {
        let s = setup(app).await;
        put_restrictions(app, &s, json!({ "country_deny": ["RU"] }))
            .await
            .expect_error(409, "geoip_unavailable");
        put_restrictions(app, &s, json!({ "country_allow": ["NO"] }))
            .await
            .expect_error(409, "geoip_unavailable");
        put_restrictions(app, &s, json!({ "ip_deny": ["198.51.100.0/24"] }))
            .await
            .expect(200);

        // The API document says what is accepted.
        let doc = app.get("/api/openapi.json", &Credential::Anonymous).await;
        doc.expect(200);
        let restrictions = &doc.json()["components"]["schemas"]["Restrictions"]["properties"];
        for list in ["country_allow", "country_deny"] {
            assert_eq!(restrictions[list]["maxItems"], 250, "{list}");
            assert_eq!(restrictions[list]["items"]["pattern"], "^[A-Za-z]{2}$");
        }
    })
    .await;
}

#[tokio::test]
async fn a_node_without_the_geoip_database_keeps_country_rules_closed() {
    each_backend_with_geoip(async |app| {
        let s = setup(app).await;
        put_restrictions(app, &s, json!({ "country_deny": ["RU"] }))
            .await
            .expect(200);
        let open = app.create_bot(&s.owner, &s.org, "Open").await;
        let open_setup = Setup {
            org: s.org.clone(),
            owner: s.owner.clone(),
            bot: open,
        };
        put_restrictions(app, &open_setup, json!({}))
            .await
            .expect(200);

        // A second node on the same database, started without `geoip_database`.
        let data = tempfile::tempdir().unwrap();
        let node = common::start_node(&app.database_url, &data.path().join("data"), &|config| {
            config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        })
        .await;
        let node_app = NodeClient {
            base: format!("http://{}", node.addr),
            client: common::http_client(),
        };
        common::wait_for_health(&node_app.client, &node_app.base).await;

        let refused = node_app.start_chat(&s.bot.key, NORWAY).await;
        refused.expect_error(503, "geoip_unavailable");
        node_app
            .start_chat(&open_setup.bot.key, NORWAY)
            .await
            .expect(201);
        let refusals = audited(app, &s, "chat.country_refused").await;
        assert_eq!(refusals.len(), 1);
        assert_eq!(refusals[0]["details"]["reason"], "geoip_unavailable");
        node.stop().await.unwrap();
    })
    .await;
}

struct NodeClient {
    base: String,
    client: reqwest::Client,
}

impl NodeClient {
    async fn start_chat(&self, bot_key: &str, from: &str) -> Reply {
        reply(
            self.client
                .post(format!("{}/chat/v1/{bot_key}/sessions", self.base))
                .header("origin", PAGE)
                .header("x-forwarded-for", from)
                .json(&json!({}))
                .send()
                .await
                .expect("request"),
        )
        .await
    }
}

/// `confide serve` with `CONFIDE_GEOIP_DATABASE` pointing at `database`; answers its stderr once
/// it has exited, which it must do on its own.
async fn serve_with_geoip(database: &Path) -> (bool, String) {
    let data = tempfile::tempdir().unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_confide"))
        .args(["--data-dir", data.path().join("data").to_str().unwrap()])
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .env("CONFIDE_GEOIP_DATABASE", database)
        .env("CONFIDE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start confide");
    // A guard, not a measurement: a server that wrongly starts would otherwise hang the suite.
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("confide serve should refuse to start, not run")
        .expect("wait for confide");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn confide_serve_refuses_to_start_with_a_missing_or_damaged_geoip_database() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.mmdb");
    std::fs::write(&garbage, b"<html>404 Not Found</html>").unwrap();
    let truncated = dir.path().join("truncated.mmdb");
    let whole = countries();
    std::fs::write(&truncated, &whole[..whole.len() - 40]).unwrap();
    let asn = dir.path().join("asn.mmdb");
    std::fs::write(
        &asn,
        MmdbWriter::new("GeoLite2-ASN")
            .insert(
                "192.0.2.0/24",
                Value::map([("autonomous_system_number", Value::U32(64_496))]),
            )
            .build(),
    )
    .unwrap();
    let missing = dir.path().join("missing.mmdb");

    for (file, reason) in [
        (&garbage, "not a valid MaxMind DB file"),
        (&truncated, "not a valid MaxMind DB file"),
        (&asn, "no country.iso_code"),
        (&missing, "cannot read"),
    ] {
        let (success, stderr) = serve_with_geoip(file).await;
        assert!(!success, "{} was accepted", file.display());
        assert!(
            stderr.contains("loading the GeoIP database")
                && stderr.contains(file.to_str().unwrap())
                && stderr.contains(reason),
            "{}: unclear message: {stderr}",
            file.display()
        );
    }
}
