//! Knowledge sources through the public interface: uploads checked before anything is stored
//! (traversal names, wrong magic bytes, oversize files, zip bombs: each refused with its code
//! and audited), scanned by a real clamd whose only signature is EICAR (a clean file becomes
//! ready; EICAR alone or inside a DOCX is rejected and quarantined), nothing processed while
//! clamd is down, text extracted in the sandboxed child, entries, and deletes; with
//! `[knowledge.s3]`, all of it in an S3-compatible bucket (moto) under the configured prefix.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::io::Write as _;
use std::time::Duration;

use common::visitor::Visitor;
use common::{Credential, Reply, TestApp, each_backend_with, email, files_under, stopped_clamd};
use confide_security::antivirus::testing::{EICAR, TempClamd};
use serde_json::{Value, json};

struct Bot {
    org: String,
    owner: Credential,
    id: String,
    key: String,
}

impl Bot {
    fn path(&self, rest: &str) -> String {
        format!("/api/v1/orgs/{}/bots/{}/knowledge{rest}", self.org, self.id)
    }
}

async fn bot(app: &TestApp) -> Bot {
    let (owner, session) = app.owner(&email("owner"), "Library").await;
    let bot = app
        .create_bot(&session.bearer(), &owner.org_id, "Librarian")
        .await;
    Bot {
        org: owner.org_id,
        owner: session.bearer(),
        id: bot.id,
        key: bot.key,
    }
}

async fn upload_as(
    app: &TestApp,
    bot: &Bot,
    credential: &Credential,
    field: &str,
    filename: &str,
    bytes: &[u8],
) -> Reply {
    let file = (field, filename, bytes);
    app.send_file(reqwest::Method::POST, &bot.path("/files"), credential, file)
        .await
}

async fn upload(app: &TestApp, bot: &Bot, filename: &str, bytes: &[u8]) -> Reply {
    upload_as(app, bot, &bot.owner, "file", filename, bytes).await
}

/// Uploads and answers the new source's id.
async fn added(app: &TestApp, bot: &Bot, filename: &str, bytes: &[u8]) -> String {
    let reply = upload(app, bot, filename, bytes).await;
    reply.expect(202);
    let source = reply.json();
    assert_eq!(source["status"], "queued", "{source}");
    source["id"].as_str().unwrap().to_owned()
}

async fn source(app: &TestApp, bot: &Bot, id: &str) -> Value {
    let reply = app
        .get(&bot.path(&format!("/sources/{id}")), &bot.owner)
        .await;
    reply.expect(200);
    reply.json()
}

/// Polls the source until it is ready or rejected (at most 60 s).
async fn settled(app: &TestApp, bot: &Bot, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = source(app, bot, id).await;
        if s["status"] == "ready" || s["status"] == "rejected" {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the source never settled: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A DOCX: the two parts every one has, the text as one paragraph, and `extra` entries.
fn docx(text: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("[Content_Types].xml", options).unwrap();
    zip.write_all(
        br#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/></Types>"#,
    )
    .unwrap();
    zip.start_file("word/document.xml", options).unwrap();
    write!(
        zip,
        r#"<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body></w:document>"#
    )
    .unwrap();
    for (name, bytes) in extra {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
    out.into_inner()
}

/// A one-page PDF showing `text` in Helvetica, with a correct cross-reference table.
fn pdf(text: &str) -> Vec<u8> {
    let content = format!("BT /F1 12 Tf 72 712 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_owned(),
        format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_owned(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

fn small_uploads(config: &mut confide::config::Config) {
    config.knowledge.upload_limits.training_max_bytes = 256 * 1024;
}

#[tokio::test]
async fn refused_uploads_leave_nothing_behind_and_are_audited_with_their_reason() {
    each_backend_with(small_uploads, async |app| {
        let bot = bot(app).await;
        let text = b"Opening hours: nine to five.\n";

        // Each refusal answers its own stable code.
        upload(app, &bot, "../../etc/passwd.txt", text)
            .await
            .expect_error(422, "path_traversal");
        upload(app, &bot, "..%2F..%2Fsecret.txt", text)
            .await
            .expect_error(422, "path_traversal");
        upload(app, &bot, "report.pdf", b"this is not a PDF at all")
            .await
            .expect_error(422, "type_mismatch");
        upload(app, &bot, "notes.txt", &pdf("Hello"))
            .await
            .expect_error(422, "type_mismatch");
        upload(app, &bot, "big.txt", &vec![b'a'; 300 * 1024])
            .await
            .expect_error(413, "too_large");
        upload(
            app,
            &bot,
            "logo.svg",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
        )
        .await
        .expect_error(422, "unsupported_type");
        upload(app, &bot, "empty.txt", b"")
            .await
            .expect_error(422, "empty");
        // A zip bomb inside a DOCX: 200 MB of zeros in a few hundred kilobytes.
        let bomb = docx(
            "x",
            &[("word/media/zeros.bin", &vec![0u8; 200 * 1024 * 1024])],
        );
        assert!(
            bomb.len() < 256 * 1024,
            "the bomb fits under the size bound"
        );
        let reply = upload(app, &bot, "bomb.docx", &bomb).await;
        assert_eq!(reply.status, 422, "{}", reply.text);
        assert!(reply.code().starts_with("archive_"), "{}", reply.text);
        // Forms that are not one part named `file`.
        upload_as(app, &bot, &bot.owner, "document", "a.txt", text)
            .await
            .expect_error(422, "unexpected_field");
        let not_a_form = app
            .client
            .post(app.url(&bot.path("/files")))
            .header("content-type", "multipart/form-data; boundary=x")
            .body("garbage");
        app.send(app.authorize(not_a_form, &reqwest::Method::POST, &bot.owner))
            .await
            .expect_error(400, "invalid_multipart");

        let sources = app.get(&bot.path("/sources"), &bot.owner).await;
        sources.expect(200);
        assert_eq!(sources.json()["sources"], json!([]), "nothing was added");
        for area in ["incoming", "files", "quarantine"] {
            assert!(app.stored(area).is_empty(), "nothing was stored in {area}");
        }
        assert!(
            files_under(&app.data_dir.join("knowledge").join("scratch")).is_empty(),
            "no temporary file is left behind"
        );

        let actions = app.audit_actions(&bot.owner, &bot.org).await;
        let refused = actions
            .iter()
            .filter(|a| *a == "knowledge.upload_rejected")
            .count();
        assert_eq!(refused, 10, "{actions:?}");

        // Reading the bot is not enough to teach it.
        let key = app
            .create_api_key(&bot.owner, &bot.org, &["bots:read"], None)
            .await;
        let reply = upload_as(
            app,
            &bot,
            &Credential::Bearer(key.key.clone()),
            "file",
            "a.txt",
            text,
        )
        .await;
        assert_eq!(reply.status, 403, "{}", reply.text);
        app.get(&bot.path("/sources"), &Credential::Bearer(key.key))
            .await
            .expect(200);
    })
    .await;
}

#[tokio::test]
async fn clean_files_are_learned_and_infected_ones_rejected_and_quarantined() {
    let Some(clamd) = TempClamd::start(
        "clean_files_are_learned_and_infected_ones_rejected_and_quarantined",
        64 * 1024 * 1024,
    ) else {
        return;
    };
    let address = clamd.unix();
    each_backend_with(
        move |config| config.knowledge.clamd = Some(address.clone()),
        async |app| {
            let bot = bot(app).await;
            let files: [(&str, Vec<u8>, &str); 6] = [
                (
                    "hours.txt",
                    b"The library opens at nine and closes at five.".to_vec(),
                    "closes at five",
                ),
                (
                    "returns.md",
                    b"# Returns\n\nBooks go back within **three weeks**.".to_vec(),
                    "three weeks",
                ),
                (
                    "fees.html",
                    b"<html><head><title>Fees</title><script>alert(1)</script></head><body><p>Late fees are ten cents a day.</p></body></html>".to_vec(),
                    "ten cents a day",
                ),
                (
                    "rooms.csv",
                    b"room,seats\nReading room,40\nStudy room,6\n".to_vec(),
                    "Study room",
                ),
                (
                    "cards.docx",
                    docx("Library cards are free for residents.", &[]),
                    "free for residents",
                ),
                ("wifi.pdf", pdf("The wifi password is at the desk."), "wifi password"),
            ];
            let mut ids = Vec::new();
            for (name, bytes, _) in &files {
                ids.push(added(app, &bot, name, bytes).await);
            }
            let eicar = added(app, &bot, "eicar.txt", EICAR).await;
            let eicar_docx = added(
                app,
                &bot,
                "invoice.docx",
                &docx("Please pay", &[("word/media/payload.txt", EICAR)]),
            )
            .await;

            for (id, (name, _, _)) in ids.iter().zip(&files) {
                let s = settled(app, &bot, id).await;
                assert_eq!(s["status"], "ready", "{name}: {s}");
                assert_eq!(s["scan"], "clean", "{name}: {s}");
                assert_eq!(s["title"], *name);
                assert!(s["chunks"].as_i64().unwrap() >= 1, "{name}: {s}");
                assert_eq!(s["language"], "en", "{name}: {s}");
            }
            // Each format's text really came out: asking for its words finds its passage.
            let mut visitor = Visitor::start(app, &bot.key).await;
            for (name, _, words) in &files {
                let reply = ask(app, &mut visitor, words).await;
                assert!(reply.contains(words), "{name}: {reply}");
                assert!(reply.contains(name), "{name} is the source: {reply}");
            }
            for id in [&eicar, &eicar_docx] {
                let s = settled(app, &bot, id).await;
                assert_eq!(s["status"], "rejected", "{s}");
                assert_eq!(s["reason"], "infected", "{s}");
                assert_eq!(s["scan"], "infected", "{s}");
                assert!(
                    s["detail"].as_str().unwrap().contains("Confide.Test.EICAR"),
                    "{s}"
                );
                assert_eq!(s["chunks"], 0);
            }
            // Clean files lie under files/, the two infected ones in quarantine, none waits.
            assert_eq!(app.stored("files").len(), files.len());
            assert_eq!(app.stored("quarantine").len(), 2);
            assert!(app.stored("incoming").is_empty());
            let actions = app.audit_actions(&bot.owner, &bot.org).await;
            assert_eq!(
                actions.iter().filter(|a| *a == "knowledge.infected").count(),
                2,
                "{actions:?}"
            );

            // Deleting a source removes its file, quarantined or not.
            app.delete(&bot.path(&format!("/sources/{eicar}")), &bot.owner)
                .await
                .expect(204);
            assert_eq!(app.stored("quarantine").len(), 1);
            app.delete(&bot.path(&format!("/sources/{}", ids[0])), &bot.owner)
                .await
                .expect(204);
            assert_eq!(app.stored("files").len(), files.len() - 1);
            app.get(&bot.path(&format!("/sources/{}", ids[0])), &bot.owner)
                .await
                .expect_error(404, "not_found");
            app.delete(&bot.path(&format!("/sources/{}", ids[0])), &bot.owner)
                .await
                .expect_error(404, "not_found");
        },
    )
    .await;
}

#[tokio::test]
async fn while_clamd_is_down_nothing_is_processed_and_the_source_waits() {
    let Some((address, clamd)) =
        stopped_clamd("while_clamd_is_down_nothing_is_processed_and_the_source_waits")
    else {
        return;
    };
    each_backend_with(
        move |config| config.knowledge.clamd = Some(address.clone()),
        async |app| {
            clamd.lock().unwrap().stop();
            let bot = bot(app).await;
            let id = added(app, &bot, "hours.txt", b"The library opens at nine.").await;

            // Retried every few hundred milliseconds (each retry shows as `scanning` for a
            // moment); never processed, never stored for use.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let s = source(app, &bot, &id).await;
                if s["status"] == "pending_scan" {
                    assert_eq!(s["reason"], "scanner_unavailable", "{s}");
                    break;
                }
                assert!(s["status"] == "queued" || s["status"] == "scanning", "{s}");
                assert!(tokio::time::Instant::now() < deadline, "{s}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for _ in 0..15 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let s = source(app, &bot, &id).await;
                assert!(
                    s["status"] == "pending_scan" || s["status"] == "scanning",
                    "{s}"
                );
                assert_eq!(s["scan"], "pending", "{s}");
                assert_eq!(s["chunks"], 0, "{s}");
            }
            assert_eq!(app.stored("incoming").len(), 1);
            assert!(app.stored("files").is_empty());

            // Once clamd answers again the source goes through.
            clamd.lock().unwrap().restart().unwrap();
            let s = settled(app, &bot, &id).await;
            assert_eq!(s["status"], "ready", "{s}");
            assert_eq!(s["scan"], "clean", "{s}");
            assert!(app.stored("incoming").is_empty());
        },
    )
    .await;
}

#[tokio::test]
async fn without_a_scanner_sources_say_they_were_not_scanned() {
    each_backend_with(
        |_| {},
        async |app| {
            let bot = bot(app).await;
            let id = added(app, &bot, "hours.txt", b"The library opens at nine.").await;
            let s = settled(app, &bot, &id).await;
            assert_eq!(s["status"], "ready", "{s}");
            assert_eq!(s["scan"], "not_configured", "{s}");
        },
    )
    .await;
}

#[tokio::test]
async fn text_and_question_entries_are_learned_and_bad_ones_refused() {
    each_backend_with(
        |_| {},
        async |app| {
            let bot = bot(app).await;
            let reply = app
                .post(
                    &bot.path("/entries"),
                    &bot.owner,
                    json!({ "kind": "text", "title": "Parking", "text": "Parking is free after six." }),
                )
                .await;
            reply.expect(202);
            let text = reply.json();
            assert_eq!(text["kind"], "text");
            assert_eq!(text["scan"], "not_applicable");
            let reply = app
                .post(
                    &bot.path("/entries"),
                    &bot.owner,
                    json!({ "kind": "qa", "question": "Can I bring my dog?", "answer": "Only guide dogs." }),
                )
                .await;
            reply.expect(202);
            let qa = reply.json();
            assert_eq!(qa["title"], "Can I bring my dog?");
            for id in [&text["id"], &qa["id"]] {
                let s = settled(app, &bot, id.as_str().unwrap()).await;
                assert_eq!(s["status"], "ready", "{s}");
                assert_eq!(s["chunks"], 1, "{s}");
            }

            for bad in [
                json!({ "kind": "text", "title": "", "text": "x" }),
                json!({ "kind": "text", "title": "Empty", "text": "   " }),
                json!({ "kind": "qa", "question": "Why?", "answer": "" }),
                json!({ "kind": "qa", "question": "x".repeat(1001), "answer": "y" }),
                json!({ "kind": "text", "title": "Long", "text": "x".repeat(100_001) }),
            ] {
                let reply = app.post(&bot.path("/entries"), &bot.owner, bad.clone()).await;
                assert_eq!(reply.status, 422, "{bad}: {}", reply.text);
            }
            let reply = app
                .post(
                    &bot.path("/entries"),
                    &bot.owner,
                    json!({ "kind": "poem", "text": "x" }),
                )
                .await;
            assert_eq!(reply.status, 422, "{}", reply.text);
            let list = app.get(&bot.path("/sources"), &bot.owner).await;
            assert_eq!(list.json()["sources"].as_array().unwrap().len(), 2);
        },
    )
    .await;
}

/// The bot's reply to `question` as the widget receives it over the chat's channel.
async fn ask(app: &TestApp, visitor: &mut Visitor, question: &str) -> String {
    visitor
        .post(app, "/chat/v1/messages", json!({ "text": question }))
        .await
        .expect(202);
    loop {
        let (event, data) = visitor.next().await;
        if event == "message" && data["sender"] == "bot" {
            return data["text"].as_str().unwrap().to_owned();
        }
    }
}

#[tokio::test]
async fn a_visitor_is_answered_from_an_uploaded_document_over_the_realtime_channel() {
    each_backend_with(
        |_| {},
        async |app| {
            // Two organizations teach their bots overlapping material.
            let library = bot(app).await;
            let museum = bot(app).await;
            let hours = added(
                app,
                &library,
                "opening-hours.pdf",
                &pdf("The library closes at five on Saturdays."),
            )
            .await;
            let tickets = added(
                app,
                &library,
                "membership.docx",
                &docx("A membership card costs twelve euros a year.", &[]),
            )
            .await;
            let museum_hours = added(
                app,
                &museum,
                "visiting.txt",
                b"The museum closes at eight on Saturdays.",
            )
            .await;
            for (bot, id) in [
                (&library, &hours),
                (&library, &tickets),
                (&museum, &museum_hours),
            ] {
                assert_eq!(settled(app, bot, id).await["status"], "ready");
            }

            let mut visitor = Visitor::start(app, &library.key).await;
            let reply = ask(
                app,
                &mut visitor,
                "When does the library close on Saturdays?",
            )
            .await;
            assert!(reply.contains("closes at five"), "{reply}");
            assert!(
                reply.contains("opening-hours.pdf"),
                "the source is named: {reply}"
            );
            assert!(
                !reply.contains("museum"),
                "never the other bot's passage: {reply}"
            );
            let reply = ask(app, &mut visitor, "How much is a membership card?").await;
            assert!(reply.contains("twelve euros"), "{reply}");
            assert!(reply.contains("membership.docx"), "{reply}");

            // The other bot answers from its own material only.
            let mut museum_visitor = Visitor::start(app, &museum.key).await;
            let reply = ask(app, &mut museum_visitor, "When does it close on Saturdays?").await;
            assert!(reply.contains("eight"), "{reply}");
            assert!(!reply.contains("five"), "{reply}");
            let reply = ask(app, &mut museum_visitor, "How much is a membership card?").await;
            assert!(
                !reply.contains("twelve"),
                "the museum bot knows nothing of it: {reply}"
            );

            // Unrelated questions fall back; a deleted source no longer answers.
            let fallback = ask(app, &mut visitor, "Do you sell bicycles?").await;
            assert!(
                !fallback.contains("five") && !fallback.contains("twelve"),
                "{fallback}"
            );
            app.delete(&library.path(&format!("/sources/{hours}")), &library.owner)
                .await
                .expect(204);
            let reply = ask(
                app,
                &mut visitor,
                "When does the library close on Saturdays?",
            )
            .await;
            assert!(!reply.contains("closes at five"), "{reply}");
        },
    )
    .await;
}

#[tokio::test]
async fn import_urls_aimed_at_internal_addresses_are_refused_like_webhook_urls() {
    each_backend_with(
        |_| {},
        async |app| {
            let bot = bot(app).await;
            for url in common::INTERNAL_URLS {
                app.post(&bot.path("/imports"), &bot.owner, json!({ "url": url }))
                    .await
                    .expect_error(422, "import_url_not_allowed");
            }
            for url in [
                "ftp://files.example.com/a.txt",
                "not a url",
                "http://user:pw@example.com/",
            ] {
                app.post(&bot.path("/imports"), &bot.owner, json!({ "url": url }))
                    .await
                    .expect_error(422, "invalid_import_url");
            }
            let actions = app.audit_actions(&bot.owner, &bot.org).await;
            let refused = actions
                .iter()
                .filter(|a| *a == "knowledge.url_refused")
                .count();
            assert_eq!(refused, common::INTERNAL_URLS.len(), "{actions:?}");
            let list = app.get(&bot.path("/sources"), &bot.owner).await;
            assert_eq!(list.json()["sources"], json!([]));
        },
    )
    .await;
}

/// The tests' web sites are on 127.0.0.1; nothing else inward is allowed.
fn allow_loopback(config: &mut confide::config::Config) {
    config.outbound_allow = confide_outbound::Allowlist::parse(&["127.0.0.0/8"]).unwrap();
}

/// A small web site on 127.0.0.1 for the imports: a page, a virus, redirects inward, a picture,
/// and a notice whose text the test changes (the second value).
async fn web_site() -> (String, std::sync::Arc<std::sync::Mutex<String>>) {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let page = |content_type: &'static str, body: Vec<u8>| {
        move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, content_type)], body) }
        }
    };
    let redirect = |to: String| {
        move || {
            let to = to.clone();
            async move {
                let mut headers = HeaderMap::new();
                headers.insert(header::LOCATION, to.parse().unwrap());
                (StatusCode::FOUND, headers)
            }
        }
    };
    let notice = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let current = notice.clone();
    let app = axum::Router::new()
        .route(
            "/notice.txt",
            get(move || {
                let text = current.lock().unwrap().clone();
                async move { ([(header::CONTENT_TYPE, "text/plain")], text) }
            }),
        )
        .route(
            "/guide.html",
            get(page(
                "text/html; charset=utf-8",
                b"<html><head><title>Visitor guide</title><style>p{}</style></head>\
                  <body><nav>Home | About</nav><p>Strollers can be borrowed at the cloakroom.</p></body></html>"
                    .to_vec(),
            )),
        )
        .route("/eicar.txt", get(page("text/plain", EICAR.to_vec())))
        .route("/logo.png", get(page("image/png", b"\x89PNG\r\n\x1a\n".to_vec())))
        .route(
            "/to-private",
            get(redirect("http://10.1.2.3/secrets".to_owned())),
        )
        .route(
            "/to-metadata",
            get(redirect("http://169.254.169.254/latest/meta-data/".to_owned())),
        )
        .route(
            "/to-ipv6-loopback",
            get(redirect(format!("http://[::1]:{port}/guide.html"))),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://127.0.0.1:{port}"), notice)
}

#[tokio::test]
async fn an_imported_page_is_fetched_scanned_and_answers_and_inward_redirects_are_refused() {
    let Some(clamd) = TempClamd::start(
        "an_imported_page_is_fetched_scanned_and_answers_and_inward_redirects_are_refused",
        64 * 1024 * 1024,
    ) else {
        return;
    };
    let address = clamd.unix();
    each_backend_with(
        move |config| {
            config.knowledge.clamd = Some(address.clone());
            allow_loopback(config);
        },
        async |app| {
            let bot = bot(app).await;
            let (site, notice) = web_site().await;
            *notice.lock().unwrap() = "The cafe closes at four this week.".to_owned();
            let mut ids = Vec::new();
            for path in [
                "/guide.html",
                "/eicar.txt",
                "/logo.png",
                "/to-private",
                "/to-metadata",
                "/to-ipv6-loopback",
                "/notice.txt",
            ] {
                let reply = app
                    .post(
                        &bot.path("/imports"),
                        &bot.owner,
                        json!({ "url": format!("{site}{path}") }),
                    )
                    .await;
                reply.expect(202);
                assert_eq!(reply.json()["kind"], "url");
                ids.push(reply.json()["id"].as_str().unwrap().to_owned());
            }
            let guide = settled(app, &bot, &ids[0]).await;
            assert_eq!(guide["status"], "ready", "{guide}");
            assert_eq!(guide["scan"], "clean", "{guide}");
            assert_eq!(
                guide["title"], "Visitor guide",
                "the page's own title: {guide}"
            );
            assert_eq!(guide["file_kind"], "html");
            assert_eq!(guide["url"], format!("{site}/guide.html"));

            let eicar = settled(app, &bot, &ids[1]).await;
            assert_eq!(eicar["reason"], "infected", "{eicar}");
            assert_eq!(eicar["scan"], "infected", "{eicar}");
            let png = settled(app, &bot, &ids[2]).await;
            assert_eq!(png["reason"], "content_type_not_allowed", "{png}");
            for id in &ids[3..6] {
                let s = settled(app, &bot, id).await;
                assert_eq!(s["status"], "rejected", "{s}");
                assert_eq!(s["reason"], "address_not_allowed", "{s}");
                assert_eq!(s["scan"], "pending", "never fetched, never scanned: {s}");
            }
            assert_eq!(settled(app, &bot, &ids[6]).await["status"], "ready");
            assert_eq!(
                app.stored("files").len(),
                2,
                "only the clean pages are kept"
            );
            assert_eq!(app.stored("quarantine").len(), 1);
            let actions = app.audit_actions(&bot.owner, &bot.org).await;
            assert_eq!(
                actions
                    .iter()
                    .filter(|a| *a == "knowledge.url_refused")
                    .count(),
                3,
                "{actions:?}"
            );
            assert_eq!(
                actions
                    .iter()
                    .filter(|a| *a == "knowledge.infected")
                    .count(),
                1
            );

            // The page answers, linked to where it came from.
            let mut visitor = Visitor::start(app, &bot.key).await;
            let reply = ask(app, &mut visitor, "Can I borrow a stroller?").await;
            assert!(reply.contains("cloakroom"), "{reply}");
            assert!(!reply.contains("p{}"), "a style sheet is not text: {reply}");
            assert!(
                reply.contains(&format!("href=\"{site}/guide.html\"")),
                "{reply}"
            );

            // The page changed: refreshing it replaces what the bot knows from it.
            let reply = ask(app, &mut visitor, "When does the cafe close?").await;
            assert!(reply.contains("four"), "{reply}");
            *notice.lock().unwrap() = "The cafe closes at six from Monday.".to_owned();
            let refreshed = app
                .post(
                    &bot.path(&format!("/sources/{}/refresh", ids[6])),
                    &bot.owner,
                    json!({}),
                )
                .await;
            refreshed.expect(202);
            assert_eq!(refreshed.json()["status"], "queued");
            let s = settled(app, &bot, &ids[6]).await;
            assert_eq!(s["status"], "ready", "{s}");
            let reply = ask(app, &mut visitor, "When does the cafe close?").await;
            assert!(reply.contains("six") && !reply.contains("four"), "{reply}");
            assert_eq!(app.stored("files").len(), 2, "the old copy is gone");
            // A quarantined source is not processed again.
            app.post(
                &bot.path(&format!("/sources/{}/refresh", ids[1])),
                &bot.owner,
                json!({}),
            )
            .await
            .expect_error(409, "source_busy");
        },
    )
    .await;
}

#[tokio::test]
async fn a_download_link_works_for_sixty_seconds_for_its_file_and_its_person_only() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    let shift = Arc::new(AtomicI64::new(0));
    let clock = shift.clone();
    each_backend_with(
        move |config| config.clock = confide_web::state::Clock::shifted(clock.clone()),
        async |app| {
            shift.store(0, Ordering::SeqCst);
            let bot = bot(app).await;
            let body = b"Lockers are on the ground floor.";
            // Quotes are reserved in display names (they become `_`); the dash is not ASCII.
            let name = "lockers \u{2014} plan \"B\".txt";
            let id = added(app, &bot, name, body).await;
            let other = added(app, &bot, "other.txt", b"Something else.").await;
            for id in [&id, &other] {
                assert_eq!(settled(app, &bot, id).await["status"], "ready");
            }
            let link_for = async |credential: &Credential, id: &str| -> String {
                let reply = app
                    .post(
                        &bot.path(&format!("/sources/{id}/download")),
                        credential,
                        json!({}),
                    )
                    .await;
                reply.expect(200);
                let url = reply.json()["url"].as_str().unwrap().to_owned();
                url.strip_prefix(&app.base).unwrap().to_owned()
            };
            let link = link_for(&bot.owner, &id).await;

            // The link is the credential: no session needed.
            let got = app.get(&link, &Credential::Anonymous).await;
            got.expect(200);
            assert_eq!(got.text.as_bytes(), body);
            assert_eq!(
                got.header("content-disposition").unwrap(),
                "attachment; filename=\"lockers _ plan _B_.txt\"; \
                 filename*=UTF-8''lockers%20%E2%80%94%20plan%20_B_.txt"
            );
            assert_eq!(got.header("x-content-type-options").unwrap(), "nosniff");
            assert_eq!(
                got.header("content-security-policy").unwrap(),
                "sandbox; default-src 'none'"
            );
            assert_eq!(got.header("cache-control").unwrap(), "private, no-store");
            assert!(
                got.header("content-type")
                    .unwrap()
                    .starts_with("text/plain")
            );

            // Any change to it fails: another file's path, a changed token, a longer expiry.
            let token = link.split("?t=").nth(1).unwrap().to_owned();
            app.get(
                &format!("/api/v1/files/{other}?t={token}"),
                &Credential::Anonymous,
            )
            .await
            .expect_error(404, "not_found");
            let mut flipped = token.clone().into_bytes();
            let last = flipped.len() - 1;
            flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
            let flipped = String::from_utf8(flipped).unwrap();
            app.get(
                &format!("/api/v1/files/{id}?t={flipped}"),
                &Credential::Anonymous,
            )
            .await
            .expect_error(404, "not_found");
            let parts: Vec<&str> = token.split('.').collect();
            let later = parts[1].parse::<i64>().unwrap() + 3_600_000;
            app.get(
                &format!("/api/v1/files/{id}?t={}.{later}.{}", parts[0], parts[2]),
                &Credential::Anonymous,
            )
            .await
            .expect_error(404, "not_found");

            // Sixty seconds: still good at 59, gone at 61.
            shift.store(59_000, Ordering::SeqCst);
            app.get(&link, &Credential::Anonymous).await.expect(200);
            shift.store(61_000, Ordering::SeqCst);
            app.get(&link, &Credential::Anonymous)
                .await
                .expect_error(404, "not_found");
            shift.store(0, Ordering::SeqCst);

            // Bound to its person: once a member may no longer read the bot, their link fails.
            let member = app
                .member(&bot.owner, &bot.org, &email("reader"), "member")
                .await;
            app.grant(&bot.owner, &bot.org, &bot.id, &member.user_id, "read")
                .await;
            let members_link = link_for(&member.bearer(), &id).await;
            app.get(&members_link, &Credential::Anonymous)
                .await
                .expect(200);
            app.delete(
                &format!(
                    "/api/v1/orgs/{}/bots/{}/permissions/{}",
                    bot.org, bot.id, member.user_id
                ),
                &bot.owner,
            )
            .await
            .expect(204);
            app.get(&members_link, &Credential::Anonymous)
                .await
                .expect_error(404, "not_found");

            // API keys cannot mint links; entries have no file; a deleted source's link is dead.
            let key = app
                .create_api_key(&bot.owner, &bot.org, &["bots:read"], None)
                .await;
            let reply = app
                .post(
                    &bot.path(&format!("/sources/{id}/download")),
                    &Credential::Bearer(key.key),
                    json!({}),
                )
                .await;
            assert_eq!(reply.status, 403, "{}", reply.text);
            let entry = app
                .post(
                    &bot.path("/entries"),
                    &bot.owner,
                    json!({ "kind": "text", "title": "Note", "text": "A note." }),
                )
                .await
                .json();
            app.post(
                &bot.path(&format!(
                    "/sources/{}/download",
                    entry["id"].as_str().unwrap()
                )),
                &bot.owner,
                json!({}),
            )
            .await
            .expect_error(409, "no_file");
            app.delete(&bot.path(&format!("/sources/{id}")), &bot.owner)
                .await
                .expect(204);
            app.get(&link, &Credential::Anonymous)
                .await
                .expect_error(404, "not_found");

            let actions = app.audit_actions(&bot.owner, &bot.org).await;
            assert_eq!(
                actions
                    .iter()
                    .filter(|a| *a == "knowledge.file_downloaded")
                    .count(),
                3,
                "{actions:?}"
            );
            assert!(actions.iter().any(|a| a == "knowledge.download_refused"));
        },
    )
    .await;
}

#[tokio::test]
async fn a_verdict_recorded_only_by_where_the_file_lies_is_picked_up() {
    // A scanner that never answers: the source waits. Then the file is found where a worker that
    // stopped after moving it (before recording the verdict) left it.
    each_backend_with(
        |config| {
            config.knowledge.clamd = Some("unix:/nonexistent/clamd.ctl".parse().unwrap());
        },
        async |app| {
            let bot = bot(app).await;
            let clean = added(app, &bot, "clean.txt", b"The lift is on the left.").await;
            let infected = added(app, &bot, "bad.txt", b"Nothing to see.").await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            for id in [&clean, &infected] {
                loop {
                    let s = source(app, &bot, id).await;
                    if s["status"] == "pending_scan" {
                        break;
                    }
                    assert!(tokio::time::Instant::now() < deadline, "never waited: {s}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            let incoming = app.stored("incoming");
            assert_eq!(incoming.len(), 2);
            let root = app.data_dir.join("knowledge").join("files");
            for (path, area) in incoming.iter().zip(["files", "quarantine"]) {
                // Which file is whose does not matter for the pickup; the test checks both ends.
                std::fs::create_dir_all(root.join(area)).unwrap();
                std::fs::rename(path, root.join(area).join(path.file_name().unwrap())).unwrap();
            }
            let results = [
                settled(app, &bot, &clean).await,
                settled(app, &bot, &infected).await,
            ];
            let ready = results.iter().filter(|s| s["status"] == "ready").count();
            let rejected: Vec<&Value> = results
                .iter()
                .filter(|s| s["status"] == "rejected")
                .collect();
            assert_eq!(ready, 1, "{results:?}");
            assert_eq!(rejected.len(), 1, "{results:?}");
            assert_eq!(rejected[0]["reason"], "infected");
            assert_eq!(rejected[0]["scan"], "infected");
            assert!(results.iter().any(|s| s["scan"] == "clean"), "{results:?}");
        },
    )
    .await;
}

/// Facts only one page of a site knows: (page, the question, a word only its answer has).
const SITE_FACTS: [(&str, &str, &str); 4] = [
    (
        "The telescope is kept in the attic above the reading room.",
        "Where is the telescope kept?",
        "attic",
    ),
    (
        "Kayaks are rented out at the boathouse by the pier.",
        "Where are kayaks rented out?",
        "boathouse",
    ),
    (
        "Violin lessons take place on Tuesday evenings.",
        "When do violin lessons take place?",
        "Tuesday",
    ),
    (
        "The herb garden is watered by volunteers at dawn.",
        "Who waters the herb garden?",
        "volunteers",
    ),
];

/// A web site on 127.0.0.1 for site imports, counting the requests each path gets:
/// - `/sitemap.xml`: an index of `/pages.xml` (the fact pages, an EICAR page and two URLs aimed
///   at internal addresses) and `/more.xml` (one page, listed again);
/// - `/start.html` links to `/a.html` and `/b.html`, to itself, to the same path on `elsewhere`
///   (another port on 127.0.0.1) and to `mailto:`; `/a.html` links to `/deep.html`, which links to
///   `/deeper.html`.
struct Site {
    base: String,
    hits: SiteHits,
    pages: SitePages,
    /// Paths answered with a status of their own (a robots.txt that answers 503).
    failing: SiteFailing,
}

type SiteFailing = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u16>>>;

type SiteHits = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>;

type SitePages =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (&'static str, Vec<u8>)>>>;

impl Site {
    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Changes (or adds) an HTML page.
    fn set_page(&self, path: &str, title: &str, body: &str) {
        self.pages.lock().unwrap().insert(
            path.to_owned(),
            ("text/html", site_html(title, body).into_bytes()),
        );
    }

    /// Adds (or changes) a document of any type.
    fn set_file(&self, path: &str, media_type: &'static str, body: impl Into<Vec<u8>>) {
        self.pages
            .lock()
            .unwrap()
            .insert(path.to_owned(), (media_type, body.into()));
    }

    /// A `<urlset>` of these paths of the site.
    fn urlset(&self, paths: &[&str]) -> String {
        let entries: String = paths
            .iter()
            .map(|path| format!("<url><loc>{}/{path}</loc></url>", self.base))
            .collect();
        format!(r#"<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{entries}</urlset>"#)
    }
}

fn site_html(title: &str, body: &str) -> String {
    format!("<html><head><title>{title}</title></head><body>{body}</body></html>")
}

async fn serve_site(elsewhere: Option<&str>) -> Site {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits: SiteHits = std::sync::Arc::default();
    let elsewhere = elsewhere.unwrap_or("http://127.0.0.1:9").to_owned();
    let html = site_html;
    let mut pages: std::collections::HashMap<String, (&'static str, Vec<u8>)> =
        std::collections::HashMap::new();
    let mut listed = String::new();
    for (k, (fact, _, _)) in SITE_FACTS.iter().enumerate() {
        pages.insert(
            format!("page-{k}.html"),
            (
                "text/html",
                html(&format!("Fact {k}"), &format!("<p>{fact}</p>")).into_bytes(),
            ),
        );
        listed.push_str(&format!("<url><loc>{base}/page-{k}.html</loc></url>"));
    }
    pages.insert("eicar.txt".to_owned(), ("text/plain", EICAR.to_vec()));
    for loc in [
        format!("{base}/eicar.txt"),
        "http://10.0.0.8/secret".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("{base}/page-0.html#again"),
    ] {
        listed.push_str(&format!("<url><loc>{loc}</loc></url>"));
    }
    let urlset = |entries: &str| {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{entries}</urlset>"#
        )
        .into_bytes()
    };
    pages.insert("pages.xml".to_owned(), ("application/xml", urlset(&listed)));
    pages.insert(
        "more.xml".to_owned(),
        (
            "text/xml",
            urlset(&format!(
                "<url><loc>{base}/page-0.html</loc></url><url><loc>{base}/more.html</loc></url>"
            )),
        ),
    );
    pages.insert(
        "more.html".to_owned(),
        (
            "text/html",
            html("More", "<p>The cloakroom closes at noon.</p>").into_bytes(),
        ),
    );
    pages.insert(
        "sitemap.xml".to_owned(),
        (
            "application/xml",
            format!(
                r#"<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><sitemap><loc>{base}/pages.xml</loc></sitemap><sitemap><loc>{base}/more.xml</loc></sitemap></sitemapindex>"#
            )
            .into_bytes(),
        ),
    );
    let crawl_pages = [
        (
            "start.html",
            html(
                "Start",
                &format!(
                    r#"<p>{}</p><a href="/a.html">A</a> <a href="b.html#part">B</a>
                    <a href="/start.html">home</a> <a href="{elsewhere}/start.html">elsewhere</a>
                    <a href="mailto:desk@example.com">mail</a>"#,
                    SITE_FACTS[0].0
                ),
            ),
        ),
        (
            "a.html",
            html(
                "A",
                &format!(
                    r#"<p>{}</p><a href="/deep.html">deeper</a>"#,
                    SITE_FACTS[1].0
                ),
            ),
        ),
        ("b.html", html("B", &format!("<p>{}</p>", SITE_FACTS[2].0))),
        (
            "deep.html",
            html(
                "Deep",
                &format!(r#"<p>{}</p><a href="/deeper.html">on</a>"#, SITE_FACTS[3].0),
            ),
        ),
        (
            "deeper.html",
            html("Deeper", "<p>The bottom of the site.</p>"),
        ),
    ];
    for (path, body) in crawl_pages {
        pages.insert(path.to_owned(), ("text/html", body.into_bytes()));
    }
    let pages: SitePages = std::sync::Arc::new(std::sync::Mutex::new(pages));
    let failing = SiteFailing::default();
    let counted = hits.clone();
    let served = pages.clone();
    let app = axum::Router::new()
        .route(
            "/{path}",
            axum::routing::get(
                async |State((pages, hits, failing)): State<(SitePages, SiteHits, SiteFailing)>,
                       UrlPath(path): UrlPath<String>| {
                    *hits.lock().unwrap().entry(format!("/{path}")).or_default() += 1;
                    if let Some(status) = failing.lock().unwrap().get(&path) {
                        return StatusCode::from_u16(*status).unwrap().into_response();
                    }
                    let page = pages.lock().unwrap().get(&path).cloned();
                    match page {
                        Some((media, body)) => {
                            ([(header::CONTENT_TYPE, media)], body).into_response()
                        }
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                },
            ),
        )
        .with_state((served, counted, failing.clone()));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Site {
        base,
        hits,
        pages,
        failing,
    }
}

/// Polls until the site import and every page under it are ready or rejected (at most 90 s);
/// answers the import and its pages by URL.
async fn site_settled(
    app: &TestApp,
    bot: &Bot,
    id: &str,
) -> (Value, std::collections::BTreeMap<String, Value>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let list = app.get(&bot.path("/sources"), &bot.owner).await;
        list.expect(200);
        let sources = list.json()["sources"].as_array().unwrap().clone();
        let site = sources.iter().find(|s| s["id"] == id).unwrap().clone();
        let pages: std::collections::BTreeMap<String, Value> = sources
            .into_iter()
            .filter(|s| s["parent_id"] == id)
            .map(|s| (s["url"].as_str().unwrap().to_owned(), s))
            .collect();
        let settled = |s: &Value| s["status"] == "ready" || s["status"] == "rejected";
        if settled(&site) && pages.values().all(settled) {
            return (site, pages);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the import never settled: {site} {pages:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_sitemaps_pages_are_each_scanned_learned_and_cited_and_inward_urls_skipped_and_audited() {
    let Some(clamd) = TempClamd::start(
        "a_sitemaps_pages_are_each_scanned_learned_and_cited",
        64 * 1024 * 1024,
    ) else {
        return;
    };
    let address = clamd.unix();
    each_backend_with(
        move |config| {
            config.knowledge.clamd = Some(address.clone());
            allow_loopback(config);
        },
        async |app| {
            let bot = bot(app).await;
            let site = serve_site(None).await;
            let reply = app
                .post(
                    &bot.path("/imports"),
                    &bot.owner,
                    json!({ "url": format!("{}/sitemap.xml", site.base), "mode": "sitemap" }),
                )
                .await;
            reply.expect(202);
            let import = reply.json();
            assert_eq!(import["kind"], "sitemap", "{import}");
            assert_eq!(
                import["crawl"]["limits"]["max_pages"], 50,
                "the server's maximum"
            );
            let id = import["id"].as_str().unwrap();

            let (sitemap, pages) = site_settled(app, &bot, id).await;
            assert_eq!(sitemap["status"], "ready", "{sitemap}");
            let report = &sitemap["crawl"]["report"];
            // Four fact pages, the EICAR page, two inward URLs and more.html; page 0 listed
            // three times (once with a fragment) counts once.
            assert_eq!(report["found"], 8, "{report}");
            assert_eq!(report["queued"], 6, "{report}");
            assert_eq!(
                report["skipped"],
                json!({ "address_not_allowed": 2 }),
                "{report}"
            );
            assert_eq!(report["stopped"], Value::Null, "{report}");
            assert_eq!(pages.len(), 6, "{pages:?}");
            for k in 0..SITE_FACTS.len() {
                let page = &pages[&format!("{}/page-{k}.html", site.base)];
                assert_eq!(page["status"], "ready", "{page}");
                assert_eq!(page["kind"], "url");
                assert_eq!(page["scan"], "clean", "each page is scanned: {page}");
                assert_eq!(page["title"], format!("Fact {k}"));
                assert_eq!(site.hits(&format!("/page-{k}.html")), 1, "fetched once");
            }
            let eicar = &pages[&format!("{}/eicar.txt", site.base)];
            assert_eq!(eicar["reason"], "infected", "{eicar}");
            assert_eq!(app.stored("quarantine").len(), 1);

            // Inward URLs: never fetched, one audit record for the run with their count.
            let refused = audited(app, &bot, "knowledge.url_refused", "").await;
            assert_eq!(refused.len(), 1, "{refused:?}");
            assert!(
                refused[0].contains("\"count\":2") && refused[0].contains("10.0.0.8"),
                "{refused:?}"
            );

            // A visitor's question is answered from the page that knows, linked to it.
            let mut visitor = Visitor::start(app, &bot.key).await;
            for (k, (_, question, word)) in SITE_FACTS.iter().enumerate() {
                let reply = ask(app, &mut visitor, question).await;
                assert!(reply.contains(word), "{question}: {reply}");
                assert!(
                    reply.contains(&format!("href=\"{}/page-{k}.html\"", site.base)),
                    "{question}: {reply}"
                );
            }

            // Deleting the sitemap deletes its pages, their passages and their files.
            app.delete(&bot.path(&format!("/sources/{id}")), &bot.owner)
                .await
                .expect(204);
            let list = app.get(&bot.path("/sources"), &bot.owner).await;
            assert_eq!(list.json()["sources"], json!([]));
            assert!(app.stored("files").is_empty(), "{:?}", app.stored("files"));
            assert!(app.stored("quarantine").is_empty());
            let reply = ask(app, &mut visitor, SITE_FACTS[1].1).await;
            assert!(!reply.contains(SITE_FACTS[1].2), "{reply}");
        },
    )
    .await;
}

#[tokio::test]
async fn a_crawl_follows_same_site_links_within_its_depth_and_page_limits() {
    each_backend_with(allow_loopback, async |app| {
        let bot = bot(app).await;
        // Another site on another port of the same address: never part of the crawl.
        let elsewhere = serve_site(None).await;
        let site = serve_site(Some(&elsewhere.base)).await;
        let start = format!("{}/start.html", site.base);
        let crawl = |limits: Value| {
            let mut body = json!({ "url": start, "mode": "crawl" });
            body.as_object_mut()
                .unwrap()
                .extend(limits.as_object().unwrap().clone());
            body
        };

        // Depth 1: the start page and the two pages it links to; nothing deeper, nothing
        // elsewhere.
        let reply = app
            .post(
                &bot.path("/imports"),
                &bot.owner,
                crawl(json!({ "max_depth": 1 })),
            )
            .await;
        reply.expect(202);
        let id = reply.json()["id"].as_str().unwrap().to_owned();
        let (import, pages) = site_settled(app, &bot, &id).await;
        assert_eq!(import["status"], "ready", "{import}");
        assert_eq!(
            pages.keys().cloned().collect::<Vec<_>>(),
            ["a.html", "b.html", "start.html"]
                .map(|p| format!("{}/{p}", site.base))
                .to_vec()
        );
        assert!(pages.values().all(|p| p["status"] == "ready"), "{pages:?}");
        let report = &import["crawl"]["report"];
        assert_eq!(report["found"], 3, "{report}");
        assert_eq!(report["queued"], 3, "{report}");
        assert_eq!(report["stopped"], Value::Null, "{report}");
        assert_eq!(site.hits("/start.html"), 1, "fetched once, by the crawl");
        assert_eq!(site.hits("/deep.html"), 0, "beyond the depth");
        assert_eq!(
            elsewhere.hits("/start.html"),
            0,
            "another port is another site"
        );

        let mut visitor = Visitor::start(app, &bot.key).await;
        let reply = ask(app, &mut visitor, SITE_FACTS[2].1).await;
        assert!(reply.contains(SITE_FACTS[2].2), "{reply}");
        assert!(
            reply.contains(&format!("href=\"{}/b.html\"", site.base)),
            "{reply}"
        );

        // Two pages at most: breadth first, so the start page and its first link; the crawl
        // says the page limit stopped it.
        let reply = app
            .post(
                &bot.path("/imports"),
                &bot.owner,
                crawl(json!({ "max_pages": 2, "max_depth": 2 })),
            )
            .await;
        reply.expect(202);
        let limited = reply.json()["id"].as_str().unwrap().to_owned();
        let (import, pages) = site_settled(app, &bot, &limited).await;
        assert_eq!(
            import["crawl"]["report"]["stopped"], "max_pages",
            "{import}"
        );
        assert_eq!(
            pages.keys().cloned().collect::<Vec<_>>(),
            ["a.html", "start.html"]
                .map(|p| format!("{}/{p}", site.base))
                .to_vec()
        );
        assert_eq!(site.hits("/deep.html"), 0);

        // Depth 2 reaches deep.html, never deeper.html.
        let reply = app
            .post(
                &bot.path("/imports"),
                &bot.owner,
                crawl(json!({ "max_depth": 2 })),
            )
            .await;
        reply.expect(202);
        let deep = reply.json()["id"].as_str().unwrap().to_owned();
        let (import, pages) = site_settled(app, &bot, &deep).await;
        assert_eq!(import["status"], "ready", "{import}");
        assert_eq!(pages.len(), 4, "{pages:?}");
        assert_eq!(site.hits("/deep.html"), 1);
        assert_eq!(site.hits("/deeper.html"), 0);
        assert_eq!(elsewhere.hits("/start.html"), 0);
        let reply = ask(app, &mut visitor, SITE_FACTS[3].1).await;
        assert!(reply.contains(SITE_FACTS[3].2), "{reply}");

        // Deleting a crawl takes every passage of its pages out of the answers.
        for id in [&id, &limited, &deep] {
            app.delete(&bot.path(&format!("/sources/{id}")), &bot.owner)
                .await
                .expect(204);
        }
        let list = app.get(&bot.path("/sources"), &bot.owner).await;
        assert_eq!(list.json()["sources"], json!([]));
        for (_, question, word) in &SITE_FACTS[..] {
            let reply = ask(app, &mut visitor, question).await;
            assert!(!reply.contains(word), "{question}: {reply}");
        }
    })
    .await;
}

#[tokio::test]
async fn site_import_limits_are_checked_and_a_refresh_finds_pages_again() {
    each_backend_with(
        |config| {
            allow_loopback(config);
            config.knowledge.crawl.max_pages = 10;
            config.knowledge.max_sources_per_bot = 5;
        },
        async |app| {
            let bot = bot(app).await;
            let site = serve_site(None).await;
            let url = format!("{}/start.html", site.base);
            for (body, code) in [
                (
                    json!({ "url": url, "mode": "crawl", "max_pages": 11 }),
                    "crawl_limit_exceeded",
                ),
                (
                    json!({ "url": url, "mode": "crawl", "max_depth": 3 }),
                    "crawl_limit_exceeded",
                ),
                (
                    json!({ "url": url, "mode": "sitemap", "max_bytes": 1u64 << 40 }),
                    "crawl_limit_exceeded",
                ),
                (
                    json!({ "url": url, "mode": "crawl", "max_pages": 0 }),
                    "invalid_import_limits",
                ),
                (
                    json!({ "url": url, "max_pages": 2 }),
                    "invalid_import_limits",
                ),
                (
                    json!({ "url": url, "mode": "page", "max_depth": 1 }),
                    "invalid_import_limits",
                ),
                (
                    json!({ "url": "http://10.0.0.8/sitemap.xml", "mode": "sitemap" }),
                    "import_url_not_allowed",
                ),
            ] {
                app.post(&bot.path("/imports"), &bot.owner, body.clone())
                    .await
                    .expect_error(422, code);
            }
            let list = app.get(&bot.path("/sources"), &bot.owner).await;
            assert_eq!(list.json()["sources"], json!([]), "nothing half-written");

            // A sitemap that is no sitemap rejects the import.
            let reply = app
                .post(
                    &bot.path("/imports"),
                    &bot.owner,
                    json!({ "url": url, "mode": "sitemap" }),
                )
                .await;
            reply.expect(202);
            let rejected = reply.json()["id"].as_str().unwrap().to_owned();
            let (import, pages) = site_settled(app, &bot, &rejected).await;
            assert_eq!(import["status"], "rejected", "{import}");
            assert_eq!(import["reason"], "content_type_not_allowed", "{import}");
            assert!(pages.is_empty());
            app.delete(&bot.path(&format!("/sources/{rejected}")), &bot.owner)
                .await
                .expect(204);

            let reply = app
                .post(
                    &bot.path("/imports"),
                    &bot.owner,
                    json!({ "url": url, "mode": "crawl", "max_depth": 1 }),
                )
                .await;
            reply.expect(202);
            let id = reply.json()["id"].as_str().unwrap().to_owned();
            let (_, before) = site_settled(app, &bot, &id).await;
            assert_eq!(before.len(), 3, "{before:?}");

            // The site changed: a.html is no longer linked, more.html is. Refreshed, the crawl
            // fetches the pages it finds again (the same sources), adds the new one and removes
            // the one gone.
            site.set_page(
                "start.html",
                "Start",
                r#"<p>Welcome.</p><a href="/b.html">B</a> <a href="/more.html">more</a>"#,
            );
            app.post(
                &bot.path(&format!("/sources/{id}/refresh")),
                &bot.owner,
                json!({}),
            )
            .await
            .expect(202);
            let (import, after) = site_settled(app, &bot, &id).await;
            assert_eq!(import["status"], "ready", "{import}");
            let report = &import["crawl"]["report"];
            assert_eq!(report["queued"], 3, "{report}");
            assert_eq!(report["removed"], 1, "{report}");
            assert_eq!(
                after.keys().cloned().collect::<Vec<_>>(),
                ["b.html", "more.html", "start.html"]
                    .map(|p| format!("{}/{p}", site.base))
                    .to_vec()
            );
            for kept in ["b.html", "start.html"] {
                let url = format!("{}/{kept}", site.base);
                assert_eq!(after[&url]["id"], before[&url]["id"], "{kept} is renewed");
            }
            assert_eq!(
                site.hits("/start.html"),
                3,
                "as a sitemap, then once per run"
            );
            let mut visitor = Visitor::start(app, &bot.key).await;
            let reply = ask(app, &mut visitor, SITE_FACTS[0].1).await;
            assert!(
                !reply.contains(SITE_FACTS[0].2),
                "the old start page: {reply}"
            );
            let reply = ask(app, &mut visitor, SITE_FACTS[1].1).await;
            assert!(!reply.contains(SITE_FACTS[1].2), "a.html is gone: {reply}");

            // The bot's cap of five sources: room for one more page, and the crawl says so.
            site.set_page(
                "start.html",
                "Start",
                r#"<a href="/b.html">B</a> <a href="/more.html">more</a>
                   <a href="/a.html">A</a> <a href="/deep.html">deep</a>"#,
            );
            app.post(
                &bot.path(&format!("/sources/{id}/refresh")),
                &bot.owner,
                json!({}),
            )
            .await
            .expect(202);
            let (import, pages) = site_settled(app, &bot, &id).await;
            assert_eq!(
                import["crawl"]["report"]["stopped"], "source_limit",
                "{import}"
            );
            assert_eq!(pages.len(), 4, "{pages:?}");
        },
    )
    .await;
}

#[tokio::test]
async fn a_site_imports_sitemap_is_read_only_once_the_scanner_passes_it() {
    let Some(clamd) = TempClamd::start(
        "a_site_imports_sitemap_is_read_only_once_the_scanner_passes_it",
        64 * 1024 * 1024,
    ) else {
        return;
    };
    let address = clamd.tcp();
    let clamd = std::sync::Arc::new(std::sync::Mutex::new(clamd));
    each_backend_with(
        move |config| {
            config.knowledge.clamd = Some(address.clone());
            allow_loopback(config);
        },
        async |app| {
            let bot = bot(app).await;
            let site = serve_site(None).await;
            site.pages.lock().unwrap().insert(
                "infected.xml".to_owned(),
                ("application/xml", EICAR.to_vec()),
            );
            let imports = bot.path("/imports");
            let import = async |path: &str| {
                let url = format!("{}/{path}", site.base);
                app.post(
                    &imports,
                    &bot.owner,
                    json!({ "url": url, "mode": "sitemap" }),
                )
                .await
            };

            // An infected sitemap is never read: the import is rejected for it.
            let reply = import("infected.xml").await;
            reply.expect(202);
            let id = reply.json()["id"].as_str().unwrap().to_owned();
            let (infected, pages) = site_settled(app, &bot, &id).await;
            assert_eq!(infected["status"], "rejected", "{infected}");
            assert_eq!(infected["reason"], "infected", "{infected}");
            assert!(pages.is_empty(), "{pages:?}");

            // With clamd down the sitemap waits, and nothing it lists is fetched.
            clamd.lock().unwrap().stop();
            let reply = import("pages.xml").await;
            reply.expect(202);
            let id = reply.json()["id"].as_str().unwrap().to_owned();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let s = source(app, &bot, &id).await;
                if s["status"] == "pending_scan" {
                    assert_eq!(s["reason"], "scanner_unavailable", "{s}");
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "{s}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(site.hits("/page-0.html"), 0, "a listed page was fetched");
            clamd.lock().unwrap().restart().unwrap();
            let (sitemap, pages) = site_settled(app, &bot, &id).await;
            assert_eq!(sitemap["status"], "ready", "{sitemap}");
            assert_eq!(
                pages[&format!("{}/page-0.html", site.base)]["scan"],
                "clean"
            );

            // robots.txt is scanned before it is read: an infected one gives nothing of its
            // site, and says why.
            site.set_file("robots.txt", "text/plain", EICAR);
            let (crawl, pages) = import_of(app, &bot, &site, "start.html", "crawl").await;
            assert_eq!(crawl["status"], "rejected", "{crawl}");
            assert_eq!(crawl["reason"], "robots_unreachable", "{crawl}");
            assert!(
                crawl["detail"].as_str().unwrap().contains("virus scanner"),
                "{crawl}"
            );
            assert!(pages.is_empty(), "{pages:?}");
            assert_eq!(site.hits("/start.html"), 0);
        },
    )
    .await;
}

/// Runs a site import (`url`, `mode` and any limits) to its end; answers it and its pages.
async fn site_import(
    app: &TestApp,
    bot: &Bot,
    body: Value,
) -> (Value, std::collections::BTreeMap<String, Value>) {
    let reply = app.post(&bot.path("/imports"), &bot.owner, body).await;
    reply.expect(202);
    site_settled(app, bot, reply.json()["id"].as_str().unwrap()).await
}

/// Runs a `mode` import of `path` on `site` to its end; answers it and its pages.
async fn import_of(
    app: &TestApp,
    bot: &Bot,
    site: &Site,
    path: &str,
    mode: &str,
) -> (Value, std::collections::BTreeMap<String, Value>) {
    let url = format!("{}/{path}", site.base);
    site_import(app, bot, json!({ "url": url, "mode": mode })).await
}

/// The paths of a site import's pages, in order.
fn paths(site: &Site, pages: &std::collections::BTreeMap<String, Value>) -> Vec<String> {
    pages
        .keys()
        .map(|url| url.strip_prefix(&site.base).unwrap().to_owned())
        .collect()
}

/// The audit events with this action whose record mentions `needle`.
async fn audited(app: &TestApp, bot: &Bot, action: &str, needle: &str) -> Vec<String> {
    let audit = app
        .get(
            &format!("/api/v1/orgs/{}/audit?limit=200", bot.org),
            &bot.owner,
        )
        .await
        .json();
    audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .map(Value::to_string)
        .filter(|e| e.contains(needle))
        .collect()
}

#[tokio::test]
async fn site_imports_fetch_only_what_robots_txt_allows_confide_and_nothing_when_it_fails() {
    each_backend_with(allow_loopback, async |app| {
        let bot = bot(app).await;
        let site = serve_site(None).await;
        // Everyone else is disallowed everything and another crawler has its own group: ours
        // (any case, any version) decides, the longest rule winning.
        site.set_file(
            "robots.txt",
            "text/plain",
            "User-agent: *\nDisallow: /\n\n\
             User-agent: OtherBot\nDisallow: /a.html\n\n\
             user-agent: CONFIDE/9.9\nDisallow: /b.html\nDisallow: /page-\nAllow: /page-2\n\
             Disallow: /hidden # not this one either\n",
        );
        let (import, pages) = import_of(app, &bot, &site, "start.html", "crawl").await;
        let crawl = import["id"].as_str().unwrap().to_owned();
        assert_eq!(import["status"], "ready", "{import}");
        assert_eq!(
            paths(&site, &pages),
            ["/a.html", "/deep.html", "/start.html"]
        );
        let report = &import["crawl"]["report"];
        assert_eq!(report["found"], 4, "{report}");
        assert_eq!(report["queued"], 3, "{report}");
        assert_eq!(
            report["skipped"],
            json!({ "robots_disallowed": 1 }),
            "{report}"
        );
        assert_eq!(site.hits("/b.html"), 0, "disallowed, never fetched");
        assert_eq!(site.hits("/robots.txt"), 1, "read once per run");

        // A sitemap's pages: the inward ones refused as ever, page-2 allowed by the longer rule.
        let (import, pages) = import_of(app, &bot, &site, "sitemap.xml", "sitemap").await;
        assert_eq!(import["status"], "ready", "{import}");
        assert_eq!(
            paths(&site, &pages),
            ["/eicar.txt", "/more.html", "/page-2.html"]
        );
        assert_eq!(
            import["crawl"]["report"]["skipped"],
            json!({ "address_not_allowed": 2, "robots_disallowed": 3 }),
            "{import}"
        );
        for k in [0, 1, 3] {
            assert_eq!(site.hits(&format!("/page-{k}.html")), 0, "page-{k}");
        }
        assert_eq!(site.hits("/robots.txt"), 2);

        // A sitemap robots.txt disallows rejects its import, unread.
        site.set_file(
            "hidden.xml",
            "application/xml",
            site.urlset(&["page-2.html"]),
        );
        let (import, pages) = import_of(app, &bot, &site, "hidden.xml", "sitemap").await;
        assert_eq!(import["status"], "rejected", "{import}");
        assert_eq!(import["reason"], "robots_disallowed", "{import}");
        assert!(
            import["detail"].as_str().unwrap().contains("robots.txt"),
            "{import}"
        );
        assert!(pages.is_empty());
        assert_eq!(site.hits("/hidden.xml"), 0);

        // No robots.txt (a 404): everything is allowed.
        site.pages.lock().unwrap().remove("robots.txt");
        let refresh = bot.path(&format!("/sources/{crawl}/refresh"));
        app.post(&refresh, &bot.owner, json!({})).await.expect(202);
        let (import, pages) = site_settled(app, &bot, &crawl).await;
        assert_eq!(import["status"], "ready", "{import}");
        assert_eq!(
            paths(&site, &pages),
            ["/a.html", "/b.html", "/deep.html", "/start.html"]
        );
        assert_eq!(import["crawl"]["report"]["skipped"], json!({}), "{import}");

        // robots.txt unreachable (a 503): nothing is fetched; the import's own URL is tried
        // three times in all, then rejected with the reason.
        site.failing
            .lock()
            .unwrap()
            .insert("robots.txt".to_owned(), 503);
        let (robots_before, start_before) = (site.hits("/robots.txt"), site.hits("/start.html"));
        app.post(&refresh, &bot.owner, json!({})).await.expect(202);
        let (import, _) = site_settled(app, &bot, &crawl).await;
        assert_eq!(import["status"], "rejected", "{import}");
        assert_eq!(import["reason"], "robots_unreachable", "{import}");
        assert!(
            import["detail"].as_str().unwrap().contains("503"),
            "{import}"
        );
        assert_eq!(site.hits("/robots.txt"), robots_before + 3);
        assert_eq!(site.hits("/start.html"), start_before, "nothing fetched");

        // Pages listed by a sitemap elsewhere: skipped, and the report says why.
        let elsewhere = serve_site(None).await;
        elsewhere.set_file(
            "theirs.xml",
            "application/xml",
            site.urlset(&["page-2.html", "b.html"]),
        );
        let (import, pages) = import_of(app, &bot, &elsewhere, "theirs.xml", "sitemap").await;
        assert_eq!(import["status"], "rejected", "{import}");
        assert_eq!(import["reason"], "no_pages", "{import}");
        assert!(pages.is_empty(), "{pages:?}");
        assert_eq!(
            import["crawl"]["report"]["skipped"],
            json!({ "robots_unreachable": 2 }),
            "{import}"
        );
        assert!(
            import["detail"]
                .as_str()
                .unwrap()
                .contains("robots_unreachable"),
            "{import}"
        );
        assert_eq!(site.hits("/page-2.html"), 1, "only by the earlier sitemap");
    })
    .await;
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn gzipped_and_text_sitemaps_are_read_and_a_gzip_bomb_is_refused_and_audited() {
    // 60 MiB of XML whitespace in about 60 KiB: past the protocol's 50 MiB once inflated.
    let bomb = gzip(&vec![b' '; 60 * 1024 * 1024]);
    assert!(bomb.len() < 100 * 1024);
    each_backend_with(allow_loopback, async |app| {
        let bot = bot(app).await;
        let site = serve_site(None).await;
        let xml = site.urlset(&["page-0.html", "page-1.html"]);
        let gzipped = gzip(xml.as_bytes());
        site.set_file("sitemap.xml.gz", "application/gzip", gzipped.clone());
        site.set_file(
            "list.txt",
            "text/plain",
            format!(
                "{0}/page-2.html\r\n\n{0}/page-3.html\nnot a page\n{0}/page-2.html#again\n",
                site.base
            ),
        );
        site.set_file("bomb.xml.gz", "application/x-gzip", bomb.clone());
        site.set_file(
            "index.xml.gz",
            "application/octet-stream",
            gzip(
                format!(
                    r#"<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
                    <sitemap><loc>{0}/list.txt</loc></sitemap>
                    <sitemap><loc>{0}/bomb.xml.gz</loc></sitemap></sitemapindex>"#,
                    site.base
                )
                .as_bytes(),
            ),
        );

        // A gzipped sitemap is read inflated; the inflated bytes count towards the run's.
        let (import, pages) = import_of(app, &bot, &site, "sitemap.xml.gz", "sitemap").await;
        assert_eq!(import["status"], "ready", "{import}");
        assert_eq!(paths(&site, &pages), ["/page-0.html", "/page-1.html"]);
        assert!(pages.values().all(|p| p["status"] == "ready"), "{pages:?}");
        let page_bytes: usize = ["page-0.html", "page-1.html"]
            .iter()
            .map(|p| site.pages.lock().unwrap()[*p].1.len())
            .sum();
        assert_eq!(
            import["crawl"]["report"]["bytes"],
            gzipped.len() + xml.len() + page_bytes,
            "{import}"
        );

        // An index (gzipped, served as bytes) of a text sitemap and a gzip bomb: the bomb is
        // refused unread, skipped and audited; the text sitemap's pages are learned.
        let (import, pages) = import_of(app, &bot, &site, "index.xml.gz", "sitemap").await;
        assert_eq!(import["status"], "ready", "{import}");
        assert_eq!(paths(&site, &pages), ["/page-2.html", "/page-3.html"]);
        assert_eq!(
            import["crawl"]["report"]["skipped"],
            json!({ "invalid_url": 1, "sitemap_too_large": 1 }),
            "{import}"
        );
        let records = audited(app, &bot, "knowledge.rejected", "sitemap_too_large").await;
        assert_eq!(records.len(), 1, "{records:?}");
        assert!(
            records[0].contains("\"count\":1") && records[0].contains("bomb.xml.gz"),
            "{records:?}"
        );

        // The bomb as the import's own sitemap rejects it; with less of the run's bytes left
        // than it inflates to, the byte limit stops the run first.
        let bomb_url = format!("{}/bomb.xml.gz", site.base);
        let (import, _) = import_of(app, &bot, &site, "bomb.xml.gz", "sitemap").await;
        assert_eq!(import["status"], "rejected", "{import}");
        assert_eq!(import["reason"], "sitemap_too_large", "{import}");
        let limited = json!({ "url": bomb_url, "mode": "sitemap", "max_bytes": 1024 * 1024 });
        let (import, _) = site_import(app, &bot, limited).await;
        assert_eq!(import["reason"], "no_pages", "{import}");
        assert_eq!(
            import["crawl"]["report"]["stopped"], "max_bytes",
            "{import}"
        );

        // A text sitemap by itself; a generic binary type is a sitemap only with a .gz path.
        let (import, pages) = import_of(app, &bot, &site, "list.txt", "sitemap").await;
        assert_eq!(import["status"], "ready", "{import}");
        assert_eq!(paths(&site, &pages), ["/page-2.html", "/page-3.html"]);
        site.set_file(
            "binary.xml",
            "application/octet-stream",
            gzip(xml.as_bytes()),
        );
        let (import, _) = import_of(app, &bot, &site, "binary.xml", "sitemap").await;
        assert_eq!(import["reason"], "content_type_not_allowed", "{import}");
    })
    .await;
}

/// Waits (at most 30 s) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_node_builds_its_indexes_at_start_and_drops_those_of_deleted_bots() {
    each_backend_with(
        |_| {},
        async |app| {
            let library = bot(app).await;
            let id = added(app, &library, "hours.txt", b"The library closes at five.").await;
            assert_eq!(settled(app, &library, &id).await["status"], "ready");

            // Another node of the deployment, started after: it builds the bot's index before
            // anyone asks it anything.
            let data = tempfile::tempdir().unwrap();
            let dir = data.path().join("data");
            let index = dir.join("knowledge").join("index").join(&library.id);
            let node = common::start_node(&app.database_url, &dir, &|_| {}).await;
            eventually("the index is built at start", || {
                index.join("index").join("meta.json").exists()
            })
            .await;
            node.stop().await.unwrap();

            // The bot is deleted through the first node while the other is down: the other
            // removes its copy when it starts again.
            app.delete(
                &format!("/api/v1/orgs/{}/bots/{}", library.org, library.id),
                &library.owner,
            )
            .await
            .expect(204);
            assert!(index.exists());
            let node = common::start_node(&app.database_url, &dir, &|_| {}).await;
            eventually("the deleted bot's index is removed", || !index.exists()).await;
            node.stop().await.unwrap();
        },
    )
    .await;
}

const BUCKET_PREFIX: &str = "tenant-a/knowledge";

/// `[knowledge.s3]` for `bucket` at moto's `endpoint`, under [`BUCKET_PREFIX`].
fn knowledge_bucket(endpoint: &str, bucket: &str) -> confide_web::knowledge::BucketSettings {
    confide_web::knowledge::BucketSettings {
        bucket: bucket.to_owned(),
        region: common::moto::REGION.to_owned(),
        endpoint: Some(endpoint.to_owned()),
        prefix: Some(BUCKET_PREFIX.to_owned()),
        access_key_id: "confide".to_owned(),
        secret_access_key: "not-checked-by-moto".to_owned().into(),
    }
}

#[tokio::test]
async fn with_a_bucket_configured_files_live_in_it_under_the_prefix_and_never_on_disk() {
    use common::moto::Moto;
    const BUCKET: &str = "library-knowledge";
    let Some(moto) = Moto::start().await else {
        return;
    };
    let Some(clamd) = TempClamd::start(
        "with_a_bucket_configured_files_live_in_it_under_the_prefix_and_never_on_disk",
        64 * 1024 * 1024,
    ) else {
        return;
    };
    moto.create_bucket(BUCKET).await;
    let (endpoint, address) = (moto.endpoint(), clamd.unix());
    // The keys under the prefix, listed through S3's API rather than the server.
    let stored = async |area: &str| -> Vec<String> {
        let under = format!("{BUCKET_PREFIX}/{area}/");
        let mut keys = moto.keys(BUCKET).await;
        keys.retain(|key| key.starts_with(&under));
        keys
    };
    each_backend_with(
        move |config| {
            config.knowledge.clamd = Some(address.clone());
            config.knowledge.bucket = Some(knowledge_bucket(&endpoint, BUCKET));
        },
        async |app| {
            let bot = bot(app).await;
            let body = b"The reading room is on the second floor, next to the maps.";
            let id = added(app, &bot, "rooms.txt", body).await;
            assert_eq!(settled(app, &bot, &id).await["status"], "ready");

            let files = stored("files").await;
            assert_eq!(files.len(), 1, "{files:?}");
            assert_eq!(
                moto.object(BUCKET, &files[0]).await.unwrap().as_bytes(),
                body
            );
            assert!(stored("incoming").await.is_empty());
            assert!(
                !app.data_dir.join("knowledge").join("files").exists(),
                "nothing is stored on the node's disk"
            );

            let mut visitor = Visitor::start(app, &bot.key).await;
            let reply = ask(app, &mut visitor, "Where is the reading room?").await;
            assert!(reply.contains("second floor"), "{reply}");

            let link = app
                .post(
                    &bot.path(&format!("/sources/{id}/download")),
                    &bot.owner,
                    json!({}),
                )
                .await;
            link.expect(200);
            let url = link.json()["url"].as_str().unwrap().to_owned();
            let got = app
                .get(url.strip_prefix(&app.base).unwrap(), &Credential::Anonymous)
                .await;
            got.expect(200);
            assert_eq!(got.text.as_bytes(), body);

            let eicar = added(app, &bot, "eicar.txt", EICAR).await;
            let s = settled(app, &bot, &eicar).await;
            assert_eq!(s["reason"], "infected", "{s}");
            assert_eq!(stored("quarantine").await.len(), 1);
            assert_eq!(stored("files").await.len(), 1);

            // Deleting the sources removes their objects: nothing is left under the prefix.
            for id in [&id, &eicar] {
                app.delete(&bot.path(&format!("/sources/{id}")), &bot.owner)
                    .await
                    .expect(204);
            }
            let left: Vec<String> = moto
                .keys(BUCKET)
                .await
                .into_iter()
                .filter(|key| key.starts_with(BUCKET_PREFIX))
                .collect();
            assert!(left.is_empty(), "{left:?}");

            // A bucket that is not there stops a node at start, saying which, and not the secret.
            let mut config = common::test_config(
                common::free_port(),
                &app.data_dir.join("second-node"),
                &app.database_url,
            );
            config.knowledge.bucket = Some(knowledge_bucket(&moto.endpoint(), "no-such-bucket"));
            let err = confide::server::start(config)
                .await
                .err()
                .expect("the node does not start");
            let message = format!("{err:#}");
            assert!(
                message.contains("the knowledge bucket no-such-bucket at http://127.0.0.1:")
                    && message.contains("probe object"),
                "{message}"
            );
            assert!(!message.contains("not-checked-by-moto"), "{message}");
        },
    )
    .await;
    moto.stop().await;
}

#[tokio::test]
async fn sources_ready_together_reach_the_index_before_anyone_asks() {
    each_backend_with(
        |_| {},
        async |app| {
            let library = bot(app).await;
            let mut ids = Vec::new();
            for n in 0..6 {
                let text = format!("Room {n} opens at nine on weekdays.");
                ids.push(added(app, &library, &format!("room-{n}.txt"), text.as_bytes()).await);
            }
            for id in &ids {
                assert_eq!(settled(app, &library, id).await["status"], "ready");
            }
            // No question is asked: the node that processed them brings its index up to date by
            // itself, holding every source (what its last commit records).
            let meta = app
                .data_dir
                .join("knowledge")
                .join("index")
                .join(&library.id)
                .join("index")
                .join("meta.json");
            let held = || -> Vec<String> {
                let Ok(text) = std::fs::read_to_string(&meta) else {
                    return Vec::new();
                };
                let meta: Value = serde_json::from_str(&text).unwrap_or_default();
                let payload: Value = serde_json::from_str(meta["payload"].as_str().unwrap_or("{}"))
                    .unwrap_or_default();
                payload["sources"]
                    .as_object()
                    .map(|sources| sources.keys().cloned().collect())
                    .unwrap_or_default()
            };
            eventually("every ready source is in the index", || {
                let held = held();
                ids.iter().all(|id| held.contains(id))
            })
            .await;
        },
    )
    .await;
}
