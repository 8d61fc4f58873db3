//! Bot avatars through the public interface: a PNG, JPEG or WebP is checked (type from its magic
//! bytes agreeing with its name, size and pixel size bounded, no SVG, no traversal names), then
//! scanned by a real clamd whose only signature is EICAR before anything is stored; it is served
//! back byte for byte to any page with safe headers and a URL versioned by its content, and the
//! widget's session says where it is. Every refusal is answered with its code and audited; an
//! infected image is quarantined; while clamd is down nothing is stored; other organizations
//! cannot touch it; replacing, removing and deleting the bot remove the old image.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use common::{Credential, Reply, TestApp, each_backend_with, email, files_under, stopped_clamd};
use confide_security::antivirus::testing::{EICAR, TempClamd};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Real images (made by a PNG encoder, `cjpeg` and `cwebp`), each 3x2 pixels.
const PNG: &[u8] = include_bytes!("../../../confide-security/tests/data/avatar-3x2.png");
const JPEG: &[u8] = include_bytes!("../../../confide-security/tests/data/avatar-3x2.jpg");
const WEBP: &[u8] = include_bytes!("../../../confide-security/tests/data/avatar-3x2.webp");

struct Bot {
    org: String,
    owner: Credential,
    id: String,
    key: String,
}

impl Bot {
    fn avatar(&self) -> String {
        format!("/api/v1/orgs/{}/bots/{}/avatar", self.org, self.id)
    }

    fn public(&self) -> String {
        format!("/widget/v1/bots/{}/avatar", self.key)
    }
}

async fn bot(app: &TestApp, org_name: &str) -> Bot {
    let (owner, session) = app.owner(&email("owner"), org_name).await;
    let bot = app
        .create_bot(&session.bearer(), &owner.org_id, "Greeter")
        .await;
    Bot {
        org: owner.org_id,
        owner: session.bearer(),
        id: bot.id,
        key: bot.key,
    }
}

async fn put_as(
    app: &TestApp,
    bot: &Bot,
    credential: &Credential,
    field: &str,
    filename: &str,
    bytes: &[u8],
) -> Reply {
    let file = (field, filename, bytes);
    app.send_file(reqwest::Method::PUT, &bot.avatar(), credential, file)
        .await
}

async fn put(app: &TestApp, bot: &Bot, filename: &str, bytes: &[u8]) -> Reply {
    put_as(app, bot, &bot.owner, "file", filename, bytes).await
}

/// Sets the avatar and answers its view.
async fn set(app: &TestApp, bot: &Bot, filename: &str, bytes: &[u8]) -> Value {
    let reply = put(app, bot, filename, bytes).await;
    reply.expect(200);
    reply.json()
}

/// `path` (absolute URL or path) with optional request headers, as a browser's `<img>` asks.
async fn fetch(app: &TestApp, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let url = if url.starts_with("http") {
        url.to_owned()
    } else {
        app.url(url)
    };
    let mut request = app.client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// The avatar URL the widget's session carries.
async fn session_avatar(app: &TestApp, bot: &Bot) -> Value {
    let reply = app
        .send(
            app.client
                .post(app.url(&format!("/chat/v1/{}/sessions", bot.key)))
                .json(&json!({})),
        )
        .await;
    reply.expect(201);
    reply.json()["avatar_url"].clone()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The bot's organization's audit events with this action, newest first.
async fn audited(app: &TestApp, bot: &Bot, action: &str) -> Vec<Value> {
    app.audit_events(&bot.owner, &bot.org, action).await
}

/// A served avatar: the exact bytes, its type, and the headers that keep it a picture.
async fn assert_served(app: &TestApp, url: &str, bytes: &[u8], media_type: &str) {
    let response = fetch(app, url, &[]).await;
    assert_eq!(response.status(), 200, "{url}");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(header("content-type").as_deref(), Some(media_type));
    assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(
        header("content-security-policy").as_deref(),
        Some("default-src 'none'; sandbox")
    );
    assert_eq!(
        header("cross-origin-resource-policy").as_deref(),
        Some("cross-origin"),
        "pages of other sites may show it"
    );
    assert_eq!(header("etag"), Some(format!("\"{}\"", sha256_hex(bytes))));
    assert_eq!(
        header("cache-control").as_deref(),
        Some("public, max-age=31536000, immutable"),
        "its versioned URL may be kept"
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), bytes, "{url}");
}

fn with_clamd(
    address: confide_security::antivirus::ClamdAddress,
) -> impl Fn(&mut confide::config::Config) {
    move |config| config.knowledge.clamd = Some(address.clone())
}

#[tokio::test]
async fn an_avatar_of_each_type_is_scanned_stored_and_served_back_byte_for_byte() {
    let Some(clamd) = TempClamd::start(
        "an_avatar_of_each_type_is_scanned_stored_and_served_back_byte_for_byte",
        64 * 1024 * 1024,
    ) else {
        return;
    };
    each_backend_with(with_clamd(clamd.unix()), async |app| {
        let bot = bot(app, "Bakery").await;
        app.get(&bot.avatar(), &bot.owner)
            .await
            .expect_error(404, "no_avatar");
        let none = app.get(&bot.public(), &Credential::Anonymous).await;
        none.expect_error(404, "no_avatar");
        assert_eq!(session_avatar(app, &bot).await, Value::Null);

        let mut urls = Vec::new();
        for (name, bytes, kind, media_type) in [
            ("logo.png", PNG, "png", "image/png"),
            ("Logo Final.JPEG", JPEG, "jpeg", "image/jpeg"),
            ("logo.webp", WEBP, "webp", "image/webp"),
        ] {
            let view = set(app, &bot, name, bytes).await;
            assert_eq!(view["kind"], kind, "{view}");
            assert_eq!(view["media_type"], media_type, "{view}");
            assert_eq!(view["size"], bytes.len(), "{view}");
            assert_eq!(
                (view["width"].clone(), view["height"].clone()),
                (json!(3), json!(2))
            );
            assert_eq!(view["scan"], "clean", "{view}");
            assert_eq!(view["sha256"], sha256_hex(bytes), "{view}");
            let url = view["url"].as_str().unwrap().to_owned();
            assert!(
                url.starts_with(&app.url(&format!("{}?v=", bot.public()))),
                "{url}"
            );
            assert_eq!(app.get(&bot.avatar(), &bot.owner).await.json(), view);
            assert_served(app, &url, bytes, media_type).await;
            // The widget's session shows the current one.
            assert_eq!(session_avatar(app, &bot).await, json!(url));
            // One stored object: a replaced image goes, and none keeps its name.
            let files = app.stored("files");
            assert_eq!(files.len(), 1, "{files:?}");
            assert_eq!(std::fs::read(&files[0]).unwrap(), bytes);
            assert!(!files[0].to_string_lossy().contains("logo"), "{files:?}");
            urls.push(url);
        }
        // A replaced avatar has a new URL; an old one (or none) is revalidated, not kept.
        assert_eq!(
            urls.iter().collect::<std::collections::HashSet<_>>().len(),
            3
        );
        for url in [urls[0].clone(), app.url(&bot.public())] {
            let stale = fetch(app, &url, &[]).await;
            assert_eq!(stale.status(), 200);
            assert_eq!(stale.headers()["cache-control"], "public, no-cache");
            assert_eq!(stale.headers()["content-type"], "image/webp");
            assert_eq!(stale.bytes().await.unwrap().as_ref(), WEBP);
        }
        let etag = format!("\"{}\"", sha256_hex(WEBP));
        let unchanged = fetch(app, &urls[2], &[("if-none-match", etag.as_str())]).await;
        assert_eq!(unchanged.status(), 304);
        assert_eq!(unchanged.headers()["etag"], etag.as_str());
        assert!(unchanged.bytes().await.unwrap().is_empty());
        let changed = fetch(app, &urls[2], &[("if-none-match", "\"elsewhere\"")]).await;
        assert_eq!(changed.status(), 200);

        assert_eq!(audited(app, &bot, "bot.avatar_set").await.len(), 3);

        // Removing it removes its image; the widget shows none.
        app.delete(&bot.avatar(), &bot.owner).await.expect(204);
        assert!(app.stored("files").is_empty());
        app.get(&bot.public(), &Credential::Anonymous)
            .await
            .expect_error(404, "no_avatar");
        assert_eq!(session_avatar(app, &bot).await, Value::Null);
        app.delete(&bot.avatar(), &bot.owner)
            .await
            .expect_error(404, "no_avatar");
        assert_eq!(audited(app, &bot, "bot.avatar_removed").await.len(), 1);

        // Deleting the bot removes its avatar's image too.
        set(app, &bot, "logo.png", PNG).await;
        assert_eq!(app.stored("files").len(), 1);
        app.delete(
            &format!("/api/v1/orgs/{}/bots/{}", bot.org, bot.id),
            &bot.owner,
        )
        .await
        .expect(204);
        assert!(app.stored("files").is_empty());
        app.get(&bot.public(), &Credential::Anonymous)
            .await
            .expect_error(404, "unknown_bot");
    })
    .await;
}

fn small_avatars(config: &mut confide::config::Config) {
    config.knowledge.upload_limits.avatar_max_bytes = 64 * 1024;
}

/// A PNG whose header says `width` x `height`.
fn png_of(width: u32, height: u32) -> Vec<u8> {
    let mut png = PNG.to_vec();
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    png
}

#[tokio::test]
async fn refused_avatars_are_answered_with_their_code_audited_and_leave_nothing() {
    each_backend_with(small_avatars, async |app| {
        let bot = bot(app, "Florist").await;
        let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>";
        let mut oversize = PNG.to_vec();
        oversize.resize(64 * 1024 + 1, 0);
        let cases: [(&str, &[u8], u16, &str); 9] = [
            ("logo.svg", svg, 422, "unsupported_type"),
            // A PNG named as a JPEG, and text named as a PNG.
            ("logo.jpg", PNG, 422, "type_mismatch"),
            (
                "logo.png",
                b"<html><script>alert(1)</script></html>",
                422,
                "type_mismatch",
            ),
            ("logo.png", &oversize, 413, "too_large"),
            // A few dozen bytes that would be a 20000x20000 picture.
            ("logo.png", &png_of(20_000, 20_000), 422, "image_too_large"),
            ("logo.png", &PNG[..20], 422, "invalid_image"),
            ("../../etc/logo.png", PNG, 422, "path_traversal"),
            ("..%2F..%2Flogo.png", PNG, 422, "path_traversal"),
            ("logo.png", b"", 422, "empty"),
        ];
        for (name, bytes, status, code) in cases {
            let reply = put(app, &bot, name, bytes).await;
            assert_eq!(
                (reply.status.as_u16(), reply.code()),
                (status, code.to_owned()),
                "{name}: {}",
                reply.text
            );
        }
        put_as(app, &bot, &bot.owner, "image", "logo.png", PNG)
            .await
            .expect_error(422, "unexpected_field");
        let not_a_form = app
            .client
            .put(app.url(&bot.avatar()))
            .header("content-type", "multipart/form-data; boundary=x")
            .body("garbage");
        app.send(app.authorize(not_a_form, &reqwest::Method::PUT, &bot.owner))
            .await
            .expect_error(400, "invalid_multipart");

        // Each refusal is in the audit log with its reason and the name as sent.
        let refused = audited(app, &bot, "bot.avatar_rejected").await;
        let mut reasons: Vec<&str> = refused
            .iter()
            .map(|e| e["details"]["reason"].as_str().unwrap())
            .collect();
        reasons.sort_unstable();
        let mut expected: Vec<&str> = cases.iter().map(|c| c.3).collect();
        expected.extend(["unexpected_field", "invalid_multipart"]);
        expected.sort_unstable();
        assert_eq!(reasons, expected);
        assert!(
            refused
                .iter()
                .any(|e| e["details"]["filename"] == "../../etc/logo.png"),
            "{refused:?}"
        );
        assert!(
            refused
                .iter()
                .all(|e| e["target"] == format!("bot:{}", bot.id))
        );

        // Nothing was kept, and the bot still has no avatar.
        for area in ["incoming", "files", "quarantine"] {
            assert!(app.stored(area).is_empty(), "nothing was stored in {area}");
        }
        assert!(
            files_under(&app.data_dir.join("knowledge").join("scratch")).is_empty(),
            "no temporary file is left behind"
        );
        app.get(&bot.avatar(), &bot.owner)
            .await
            .expect_error(404, "no_avatar");
    })
    .await;
}

#[tokio::test]
async fn an_infected_avatar_is_refused_and_quarantined() {
    let Some(clamd) = TempClamd::start(
        "an_infected_avatar_is_refused_and_quarantined",
        64 * 1024 * 1024,
    ) else {
        return;
    };
    each_backend_with(with_clamd(clamd.tcp()), async |app| {
        let bot = bot(app, "Chemist").await;
        set(app, &bot, "logo.png", PNG).await;
        // A valid picture with a payload after its end, where image decoders do not look.
        let payload = [PNG, EICAR].concat();
        let reply = put(app, &bot, "logo.png", &payload).await;
        reply.expect_error(422, "infected");
        assert!(reply.text.contains("Confide.Test.EICAR"), "{}", reply.text);

        // Kept in quarantine for the admins, never among the served files.
        let quarantined = app.stored("quarantine");
        assert_eq!(quarantined.len(), 1);
        assert_eq!(std::fs::read(&quarantined[0]).unwrap(), payload);
        let files = app.stored("files");
        assert_eq!(files.len(), 1);
        assert_eq!(
            std::fs::read(&files[0]).unwrap(),
            PNG,
            "the old avatar stays"
        );
        let served = fetch(app, &bot.public(), &[]).await;
        assert_eq!(served.bytes().await.unwrap().as_ref(), PNG);

        let refused = audited(app, &bot, "bot.avatar_rejected").await;
        assert_eq!(refused.len(), 1, "{refused:?}");
        let details = &refused[0]["details"];
        assert_eq!(details["reason"], "infected");
        assert!(
            details["signature"]
                .as_str()
                .unwrap()
                .starts_with("Confide.Test.EICAR"),
            "{details}"
        );
        let key = details["quarantine_key"].as_str().unwrap();
        assert!(quarantined[0].ends_with(key), "{quarantined:?} {key}");
    })
    .await;
}

#[tokio::test]
async fn while_clamd_is_down_avatars_are_refused_and_nothing_is_stored() {
    let Some((address, clamd)) =
        stopped_clamd("while_clamd_is_down_avatars_are_refused_and_nothing_is_stored")
    else {
        return;
    };
    each_backend_with(with_clamd(address), async |app| {
        clamd.lock().unwrap().stop();
        let bot = bot(app, "Optician").await;
        put(app, &bot, "logo.png", PNG)
            .await
            .expect_error(503, "scanner_unavailable");
        for area in ["incoming", "files", "quarantine"] {
            assert!(app.stored(area).is_empty(), "nothing was stored in {area}");
        }
        app.get(&bot.avatar(), &bot.owner)
            .await
            .expect_error(404, "no_avatar");
        let refused = audited(app, &bot, "bot.avatar_rejected").await;
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0]["details"]["reason"], "scanner_unavailable");

        // Once clamd answers again, the same image goes through.
        clamd.lock().unwrap().restart().unwrap();
        assert_eq!(set(app, &bot, "logo.png", PNG).await["scan"], "clean");
        assert_eq!(app.stored("files").len(), 1);
    })
    .await;
}

#[tokio::test]
async fn only_those_who_may_change_the_bot_set_or_remove_its_avatar() {
    each_backend_with(
        |_| {},
        async |app| {
            let bot = bot(app, "Library").await;
            // Without a scanner the image is stored, and says it was not scanned.
            let view = set(app, &bot, "logo.png", PNG).await;
            assert_eq!(view["scan"], "not_configured");

            // Another organization's owner: as if the bot did not exist.
            let (_, stranger) = app.owner(&email("stranger"), "Elsewhere").await;
            let stranger = stranger.bearer();
            app.get(&bot.avatar(), &stranger)
                .await
                .expect_error(404, "not_found");
            put_as(app, &bot, &stranger, "file", "mine.jpg", JPEG)
                .await
                .expect_error(404, "not_found");
            app.delete(&bot.avatar(), &stranger)
                .await
                .expect_error(404, "not_found");

            // Reading the bot is not enough to change its avatar.
            let key = app
                .create_api_key(&bot.owner, &bot.org, &["bots:read"], None)
                .await;
            let reader = Credential::Bearer(key.key);
            assert_eq!(app.get(&bot.avatar(), &reader).await.json(), view);
            put_as(app, &bot, &reader, "file", "mine.jpg", JPEG)
                .await
                .expect(403);
            app.delete(&bot.avatar(), &reader).await.expect(403);
            app.delete(&bot.avatar(), &Credential::Anonymous)
                .await
                .expect(401);

            // Still the owner's picture, and only it is stored.
            let files = app.stored("files");
            assert_eq!(files.len(), 1);
            assert_eq!(std::fs::read(&files[0]).unwrap(), PNG);
            assert_served(app, view["url"].as_str().unwrap(), PNG, "image/png").await;
            let denied = audited(app, &bot, "authz.denied").await;
            assert!(denied.len() >= 2, "{denied:?}");
        },
    )
    .await;
}
