//! Inbox backup through HTTP: an organization's owners and admins send a daily export of its
//! conversations (JSON lines) to the server's backup directory or to an S3-compatible bucket
//! (moto, speaking S3's wire protocol), never see the secret again, and cannot point the server at
//! the inside of the network; each day is written once however many nodes run the schedule. A key
//! that may only write is enough (moto checking keys and policies as AWS does).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::moto::{AccessKey, Moto, REGION};
use common::{Credential, Reply, TestApp, each_backend_with, email, utc_date};
use confide::config::Config;
use confide_store::Store as _;
use serde_json::{Value, json};

const KEY_ID: &str = "AKIAWRITEONLYEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYWRITEONLY";

/// A shop with one bot, whose owner speaks for it.
struct Shop {
    org: String,
    owner: Credential,
    bot_id: String,
    bot_key: String,
}

impl Shop {
    async fn open(app: &TestApp, name: &str) -> Shop {
        let (owner, session) = app.owner(&email("owner"), name).await;
        let bot = app
            .create_bot(&session.bearer(), &owner.org_id, "Helper")
            .await;
        // Visitors here all write from the test's address, faster than spam screening allows.
        app.post(
            &format!("/api/v1/orgs/{}/trusted-addresses", owner.org_id),
            &session.bearer(),
            json!({ "network": "127.0.0.0/8" }),
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

    fn backup(&self) -> String {
        format!("/api/v1/orgs/{}/inbox-backup", self.org)
    }

    async fn configure(&self, app: &TestApp, body: Value) -> Reply {
        app.put(&self.backup(), &self.owner, body).await
    }

    async fn run(&self, app: &TestApp, day: &str) -> Reply {
        app.post(
            &format!("{}/run", self.backup()),
            &self.owner,
            json!({ "day": day }),
        )
        .await
    }

    /// Waits for the day's latest run to finish; answers it.
    async fn finished(&self, app: &TestApp, day: &str) -> Value {
        for _ in 0..600 {
            let reply = app.get(&self.backup(), &self.owner).await;
            reply.expect(200);
            let run = reply.json()["runs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["day"] == day)
                .cloned();
            if let Some(run) = run
                && run["status"] != "running"
            {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the backup of {day} did not finish");
    }

    /// A visitor's chat where they wrote `texts`; answers its id.
    async fn chat(&self, app: &TestApp, texts: &[&str]) -> String {
        let start = app
            .send(
                app.client
                    .post(app.url(&format!("/chat/v1/{}/sessions", self.bot_key)))
                    .json(&json!({})),
            )
            .await;
        start.expect(201);
        let token = start.json()["token"].as_str().unwrap().to_owned();
        for text in texts {
            app.send(
                app.client
                    .post(app.url("/chat/v1/messages"))
                    .header("x-chat-token", &token)
                    .json(&json!({ "text": text })),
            )
            .await
            .expect(202);
        }
        start.json()["chat_id"].as_str().unwrap().to_owned()
    }
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn backup_dir(config: &Config) -> PathBuf {
    config.data_dir.with_file_name("backups")
}

fn with_backup_dir(config: &mut Config) {
    config.inbox_backup.local_dir = Some(backup_dir(config));
}

fn with_loopback_allowed(config: &mut Config) {
    config.outbound_allow = confide_outbound::Allowlist::parse(&["127.0.0.0/8"]).unwrap();
}

fn the_backup_dir(app: &TestApp) -> PathBuf {
    app.data_dir.with_file_name("backups")
}

/// The visitor's texts in one line, in order.
fn texts(line: &Value) -> Vec<String> {
    line["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_local_backup_holds_one_line_per_conversation_active_that_day() {
    each_backend_with(with_backup_dir, async |app| {
        let shop = Shop::open(app, "Lamp Shop").await;
        let other = Shop::open(app, "Other Shop").await;
        let dir = the_backup_dir(app);

        // Organizations never name a path: only the operator's directory, by organization id.
        shop.configure(app, json!({ "destination": "local", "path": "/etc" }))
            .await
            .expect_error(422, "invalid_body");
        shop.configure(
            app,
            json!({ "destination": "local", "prefix": "../../etc/" }),
        )
        .await
        .expect_error(422, "unexpected_field");
        app.post(&format!("{}/run", shop.backup()), &shop.owner, json!({}))
            .await
            .expect_error(404, "inbox_backup_not_configured");

        let saved = shop.configure(app, json!({ "destination": "local" })).await;
        saved.expect(200);
        let view = saved.json();
        assert_eq!(view["destination"], "local");
        assert_eq!(view["has_secret"], false);
        assert_eq!(
            view["object_key_pattern"],
            format!("{}/YYYY-MM-DD.jsonl", shop.org)
        );
        let org_dir = dir.join(&shop.org);
        assert!(
            org_dir.join(".confide-write-test").exists(),
            "the test write"
        );
        let mode = std::fs::metadata(&org_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "backups hold personal data");

        let lamp = shop.chat(app, &["Do you sell lamps?", "A red one"]).await;
        let quiet = shop.chat(app, &[]).await;
        app.put(
            &format!(
                "/api/v1/orgs/{}/bots/{}/chats/{lamp}/labels",
                shop.org,
                // The bot id is in the chat log; find it through the chat itself.
                app.get(&format!("/api/v1/chats/{lamp}"), &shop.owner)
                    .await
                    .json()["chat"]["bot_id"]
                    .as_str()
                    .unwrap()
            ),
            &shop.owner,
            json!({ "labels": ["Lamps"] }),
        )
        .await
        .expect(200);
        let foreign = other.chat(app, &["Not the lamp shop's"]).await;

        let today = utc_date(0);
        let started = shop.run(app, &today).await;
        started.expect(202);
        assert_eq!(started.json()["day"], today.as_str());
        let run = shop.finished(app, &today).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["conversations"], 2);
        // Today is not over: the schedule writes it whole after midnight.
        assert_eq!(run["complete"], false);
        assert_eq!(run["object_key"], format!("{}/{today}.jsonl", shop.org));

        let file = std::fs::read_to_string(org_dir.join(format!("{today}.jsonl"))).unwrap();
        let found = lines(&file);
        assert_eq!(found.len(), 2, "{file}");
        assert!(!file.contains(&foreign), "another organization's chat");
        let lamp_line = found.iter().find(|l| l["id"] == lamp.as_str()).unwrap();
        assert_eq!(lamp_line["day"], today.as_str());
        assert_eq!(lamp_line["org_id"], shop.org.as_str());
        assert_eq!(lamp_line["labels"], json!(["lamps"]));
        assert_eq!(lamp_line["state"], "bot");
        assert_eq!(lamp_line["handover"]["state"], "bot");
        assert_eq!(lamp_line["source"], "web");
        assert!(lamp_line.get("language_code").is_some());
        let said = texts(lamp_line);
        assert!(
            said.starts_with(&["Do you sell lamps?".to_owned()])
                && said.contains(&"A red one".to_owned()),
            "{said:?}"
        );
        assert!(lamp_line["messages"][0]["sender"] == "visitor");
        let quiet_line = found.iter().find(|l| l["id"] == quiet.as_str()).unwrap();
        assert_eq!(quiet_line["messages"], json!([]));

        // A day without activity is an empty file: the backup ran, nothing happened.
        let yesterday = utc_date(-1);
        shop.run(app, &yesterday).await.expect(202);
        let run = shop.finished(app, &yesterday).await;
        assert_eq!(run["status"], "succeeded");
        assert_eq!(run["conversations"], 0);
        assert_eq!(run["complete"], true);
        assert_eq!(
            std::fs::read_to_string(org_dir.join(format!("{yesterday}.jsonl"))).unwrap(),
            ""
        );
        // Days that have not begun, or are not days, are refused.
        for day in [utc_date(1), "2024-02-30".to_owned(), "yesterday".to_owned()] {
            shop.run(app, &day).await.expect_error(422, "invalid_day");
        }

        let view = app.get(&shop.backup(), &shop.owner).await.json();
        assert_eq!(view["last_success"]["day"], yesterday.as_str());
        assert!(view["last_failure"].is_null());
        let actions = app.audit_actions(&shop.owner, &shop.org).await;
        for action in [
            "inbox_backup.configured",
            "inbox_backup.run_requested",
            "inbox_backup.run_succeeded",
        ] {
            assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
        }

        // Removing the backup leaves what was written.
        app.delete(&shop.backup(), &shop.owner).await.expect(204);
        app.get(&shop.backup(), &shop.owner)
            .await
            .expect_error(404, "inbox_backup_not_configured");
        assert!(org_dir.join(format!("{today}.jsonl")).exists());
        assert!(
            app.audit_actions(&shop.owner, &shop.org)
                .await
                .contains(&"inbox_backup.removed".to_owned())
        );
    })
    .await;
}

/// The permission bits of a file or directory, in octal.
fn mode(path: &Path) -> String {
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    format!("{:o}", mode & 0o777)
}

#[tokio::test]
async fn only_the_servers_user_may_read_a_local_backup() {
    each_backend_with(with_backup_dir, async |app| {
        let shop = Shop::open(app, "Lamp Shop").await;
        let dir = the_backup_dir(app);
        shop.configure(app, json!({ "destination": "local" }))
            .await
            .expect(200);
        shop.chat(app, &["My address is 1 Lamp Street"]).await;
        let today = utc_date(0);
        shop.run(app, &today).await.expect(202);
        assert_eq!(shop.finished(app, &today).await["status"], "succeeded");

        let org_dir = dir.join(&shop.org);
        let export = org_dir.join(format!("{today}.jsonl"));
        assert!(
            std::fs::read_to_string(&export)
                .unwrap()
                .contains("1 Lamp Street")
        );
        assert_eq!(mode(&dir), "700");
        assert_eq!(mode(&org_dir), "700");
        assert_eq!(mode(&org_dir.join(".confide-write-test")), "600");
        assert_eq!(mode(&export), "600");

        // A day written again (here over a file someone opened up) is private again, and no
        // half-written file stays beside it.
        std::fs::set_permissions(&export, std::fs::Permissions::from_mode(0o644)).unwrap();
        shop.run(app, &today).await.expect(202);
        assert_eq!(shop.finished(app, &today).await["status"], "succeeded");
        assert_eq!(mode(&export), "600");
        let mut names: Vec<String> = std::fs::read_dir(&org_dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [".confide-write-test".to_owned(), format!("{today}.jsonl")]
        );
    })
    .await;
}

#[tokio::test]
async fn a_backup_reaches_an_s3_compatible_bucket_and_never_shows_its_secret() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    moto.create_bucket("lamp-backups").await;
    each_backend_with(with_loopback_allowed, async |app| {
        let shop = Shop::open(app, "Lamp Shop").await;
        let s3 = json!({
            "destination": "s3",
            "bucket": "lamp-backups",
            "region": REGION,
            "endpoint": moto.endpoint(),
            "prefix": format!("{}/nightly", app.backend),
            "access_key_id": KEY_ID,
            "secret_access_key": SECRET,
        });
        let saved = shop.configure(app, s3.clone()).await;
        saved.expect(200);
        let view = saved.json();
        assert_eq!(view["has_secret"], true);
        assert_eq!(view["access_key_id"], "AKIA…MPLE");
        assert_eq!(view["prefix"], format!("{}/nightly/", app.backend));
        let base = format!("{}/nightly/confide/inbox/{}/", app.backend, shop.org);
        assert_eq!(
            view["object_key_pattern"],
            format!("{base}YYYY-MM-DD.jsonl")
        );
        let marker = moto
            .object("lamp-backups", &format!("{base}.confide-write-test"))
            .await
            .expect("the test write reached the bucket");
        assert_eq!(
            serde_json::from_str::<Value>(&marker).unwrap()["organization"],
            shop.org.as_str()
        );

        let chat = shop.chat(app, &["Is the brass lamp in stock?"]).await;
        let today = utc_date(0);
        shop.run(app, &today).await.expect(202);
        let run = shop.finished(app, &today).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        let key = format!("{base}{today}.jsonl");
        assert_eq!(run["object_key"], key.as_str());
        let written = moto
            .object("lamp-backups", &key)
            .await
            .expect("the day's export in the bucket");
        let found = lines(&written);
        assert_eq!(found.len(), 1, "{written}");
        assert_eq!(found[0]["id"], chat.as_str());
        assert_eq!(texts(&found[0])[0], "Is the brass lamp in stock?");

        // Saved again without the secret, the stored one stays (for the same key id only).
        let mut again = s3.clone();
        again.as_object_mut().unwrap().remove("secret_access_key");
        again["enabled"] = json!(false);
        let saved = shop.configure(app, again.clone()).await;
        saved.expect(200);
        assert_eq!(saved.json()["has_secret"], true);
        assert_eq!(saved.json()["enabled"], false);
        again["access_key_id"] = json!("AKIAANOTHERKEYID0000");
        shop.configure(app, again)
            .await
            .expect_error(422, "secret_required");

        // A bucket that does not take the write is refused when saved, with the reason.
        let mut missing = s3.clone();
        missing["bucket"] = json!("no-such-bucket");
        let refused = shop.configure(app, missing.clone()).await;
        refused.expect_error(422, "destination_write_failed");
        assert!(
            refused.text.contains("bucket_not_found"),
            "{}",
            refused.text
        );
        // Saved without the test write, its runs fail and say why.
        missing["test_write"] = json!(false);
        shop.configure(app, missing).await.expect(200);
        shop.run(app, &today).await.expect(202);
        let run = shop.finished(app, &today).await;
        assert_eq!(run["status"], "failed", "{run}");
        assert_eq!(run["error_code"], "bucket_not_found");
        // The day's earlier success is still on record.
        assert_eq!(run["object_key"], key.as_str());
        assert_eq!(run["failures"], 1);
        let view = app.get(&shop.backup(), &shop.owner).await;
        assert_eq!(view.json()["last_failure"]["day"], today.as_str());
        assert!(
            app.audit_actions(&shop.owner, &shop.org)
                .await
                .contains(&"inbox_backup.run_failed".to_owned())
        );

        // Neither the secret nor the whole key id appears in any answer or in the audit log.
        let audit = app
            .get(
                &format!("/api/v1/orgs/{}/audit?limit=200", shop.org),
                &shop.owner,
            )
            .await;
        for text in [&view.text, &audit.text, &saved.text, &refused.text] {
            assert!(!text.contains(SECRET), "{text}");
            assert!(!text.contains(KEY_ID), "{text}");
        }
        assert!(audit.text.contains("inbox_backup.configured"));
    })
    .await;
    moto.stop().await;
}

#[tokio::test]
async fn only_owners_and_admins_see_or_change_the_backup() {
    each_backend_with(with_backup_dir, async |app| {
        let shop = Shop::open(app, "Lamp Shop").await;
        let member = app
            .member(&shop.owner, &shop.org, &email("member"), "member")
            .await
            .bearer();
        let admin = app
            .member(&shop.owner, &shop.org, &email("admin"), "admin")
            .await
            .bearer();
        let key = app
            .create_api_key(&shop.owner, &shop.org, &["bots:write", "chats:read"], None)
            .await
            .credential();
        shop.configure(app, json!({ "destination": "local" }))
            .await
            .expect(200);
        let run = format!("{}/run", shop.backup());
        for caller in [&member, &key] {
            for reply in [
                app.get(&shop.backup(), caller).await,
                app.put(&shop.backup(), caller, json!({ "destination": "local" }))
                    .await,
                app.post(&run, caller, json!({})).await,
                app.delete(&shop.backup(), caller).await,
            ] {
                assert_eq!(reply.status.as_u16(), 403, "{}", reply.text);
            }
        }
        app.get(&shop.backup(), &admin).await.expect(200);
        app.put(
            &shop.backup(),
            &admin,
            json!({ "destination": "local", "enabled": false }),
        )
        .await
        .expect(200);
        app.post(&run, &admin, json!({})).await.expect(202);
    })
    .await;
}

#[tokio::test]
async fn an_endpoint_inside_the_network_needs_the_operators_allowlist() {
    each_backend_with(
        |_| {},
        async |app| {
            let shop = Shop::open(app, "Lamp Shop").await;
            let s3 = |endpoint: &str| {
                json!({
                    "destination": "s3",
                    "bucket": "lamp-backups",
                    "region": REGION,
                    "endpoint": endpoint,
                    "access_key_id": KEY_ID,
                    "secret_access_key": SECRET,
                })
            };
            for (endpoint, code) in [
                ("http://127.0.0.1:9000", "address_not_allowed"),
                ("http://2130706433:9000", "address_not_allowed"),
                ("http://[::ffff:127.0.0.1]:9000", "address_not_allowed"),
                ("https://10.1.2.3", "address_not_allowed"),
                ("http://169.254.169.254", "address_not_allowed"),
                ("http://localhost:9000", "address_not_allowed"),
                ("ftp://127.0.0.1/", "scheme_not_allowed"),
                ("http://user:pass@s3.example.com", "invalid_url"),
            ] {
                shop.configure(app, s3(endpoint))
                    .await
                    .expect_error(422, code);
            }
            // Without a backup directory on this server, a local backup cannot be chosen.
            shop.configure(app, json!({ "destination": "local" }))
                .await
                .expect_error(409, "local_backup_unavailable");
            for (field, value, code) in [
                ("bucket", json!("Not_A_Bucket"), "invalid_bucket"),
                ("region", json!("EU North"), "invalid_region"),
                ("prefix", json!("/etc/"), "invalid_prefix"),
                ("prefix", json!("a/../b"), "invalid_prefix"),
                ("access_key_id", json!("has space"), "invalid_access_key_id"),
                (
                    "secret_access_key",
                    json!("x".repeat(65)),
                    "invalid_secret_access_key",
                ),
            ] {
                let mut body = s3("https://s3.example.com");
                body[field] = value;
                shop.configure(app, body).await.expect_error(422, code);
            }
            app.get(&shop.backup(), &shop.owner)
                .await
                .expect_error(404, "inbox_backup_not_configured");
            assert!(
                !app.audit_actions(&shop.owner, &shop.org)
                    .await
                    .contains(&"inbox_backup.configured".to_owned())
            );
        },
    )
    .await;
}

#[tokio::test]
async fn an_allowed_on_premises_endpoint_takes_plain_http_but_no_path() {
    each_backend_with(with_loopback_allowed, async |app| {
        let shop = Shop::open(app, "Lamp Shop").await;
        let body = |endpoint: &str| {
            json!({
                "destination": "s3",
                "bucket": "lamp-backups",
                "region": REGION,
                "endpoint": endpoint,
                "access_key_id": KEY_ID,
                "secret_access_key": SECRET,
                "test_write": false,
            })
        };
        shop.configure(app, body("http://127.0.0.1:9000/bucket"))
            .await
            .expect_error(422, "invalid_endpoint");
        let saved = shop.configure(app, body("http://127.0.0.1:9000/")).await;
        saved.expect(200);
        assert_eq!(saved.json()["endpoint"], "http://127.0.0.1:9000");
        // Nothing listens there: the test write says so, and nothing is saved.
        let mut tested = body("http://127.0.0.1:9");
        tested["test_write"] = json!(true);
        let refused = shop.configure(app, tested).await;
        refused.expect_error(422, "destination_write_failed");
        assert!(refused.text.contains("connect_failed"), "{}", refused.text);
        assert_eq!(
            app.get(&shop.backup(), &shop.owner).await.json()["endpoint"],
            "http://127.0.0.1:9000"
        );
    })
    .await;
}

#[tokio::test]
async fn the_stored_secret_goes_only_to_the_endpoint_bucket_and_region_it_was_given_for() {
    each_backend_with(with_loopback_allowed, async |app| {
        let shop = Shop::open(app, "Lamp Shop").await;
        let s3 = json!({
            "destination": "s3",
            "bucket": "lamp-backups",
            "region": REGION,
            "endpoint": "http://127.0.0.1:9000",
            "access_key_id": KEY_ID,
            "secret_access_key": SECRET,
            "test_write": false,
        });
        shop.configure(app, s3.clone()).await.expect(200);
        let mut kept = s3.clone();
        kept.as_object_mut().unwrap().remove("secret_access_key");
        kept["prefix"] = json!("nightly/");
        let saved = shop.configure(app, kept.clone()).await;
        saved.expect(200);
        assert_eq!(saved.json()["has_secret"], true);
        // Elsewhere, the secret must be given again: an admin cannot send the stored one to a
        // server of their own.
        for (field, value) in [
            ("endpoint", json!("http://127.0.0.2:9000")),
            ("bucket", json!("someone-elses-bucket")),
            ("region", json!("eu-north-1")),
        ] {
            let mut moved = kept.clone();
            moved[field] = value.clone();
            shop.configure(app, moved.clone())
                .await
                .expect_error(422, "secret_required");
            moved["secret_access_key"] = json!(SECRET);
            shop.configure(app, moved).await.expect(200);
            shop.configure(app, s3.clone()).await.expect(200);
        }
        // Leaving the endpoint out (AWS) is moving too.
        let mut to_aws = kept.clone();
        to_aws.as_object_mut().unwrap().remove("endpoint");
        shop.configure(app, to_aws)
            .await
            .expect_error(422, "secret_required");
        let view = app.get(&shop.backup(), &shop.owner).await.json();
        assert_eq!(view["endpoint"], "http://127.0.0.1:9000");
        assert_eq!(view["bucket"], "lamp-backups");
    })
    .await;
}

#[tokio::test]
async fn a_run_never_sends_plain_http_to_the_internet_whatever_the_store_holds() {
    each_backend_with(with_loopback_allowed, async |app| {
        let shop = Shop::open(app, "Lamp Shop").await;
        let body = |endpoint: &str| {
            json!({
                "destination": "s3",
                "bucket": "lamp-backups",
                "region": REGION,
                "endpoint": endpoint,
                "access_key_id": KEY_ID,
                "secret_access_key": SECRET,
                "test_write": false,
            })
        };
        // Saving refuses plain http to an address on the internet (not in the allowlist)...
        shop.configure(app, body("http://1.2.3.4:9000"))
            .await
            .expect_error(422, "https_required");
        shop.configure(app, body("http://127.0.0.1:9"))
            .await
            .expect(200);
        // ...and a run checks again: here the stored endpoint changes behind the API's back, as a
        // host name's DNS answer may change after it was saved.
        let store = confide_store::SqlStore::connect(&app.database_url)
            .await
            .unwrap();
        let mut backup = store
            .get_inbox_backup(shop.org.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        backup.endpoint = Some("http://1.2.3.4:9000".to_owned());
        store.put_inbox_backup(&backup).await.unwrap();

        shop.chat(app, &["My address is 1 Lamp Street"]).await;
        let today = utc_date(0);
        shop.run(app, &today).await.expect(202);
        let run = shop.finished(app, &today).await;
        assert_eq!(run["status"], "failed", "{run}");
        assert_eq!(run["error_code"], "https_required", "{run}");
        // Nothing was written: refused before any request went out.
        assert!(run["object_key"].is_null(), "{run}");
        assert!(run["conversations"].is_null(), "{run}");
        assert!(run["succeeded_at"].is_null(), "{run}");
    })
    .await;
}

/// Every node runs the schedule: a second node on the same database, looking just as often.
async fn second_node(
    app: &TestApp,
    configure: impl Fn(&mut Config),
) -> confide::server::RunningServer {
    loop {
        let mut config = common::test_config(common::free_port(), &app.data_dir, &app.database_url);
        configure(&mut config);
        if let Ok(server) = confide::server::start(config).await {
            common::wait_for_health(&app.client, &format!("http://{}", server.addr)).await;
            return server;
        }
    }
}

fn fast_schedule(config: &mut Config) {
    with_backup_dir(config);
    config.inbox_backup.poll = Duration::from_millis(100);
}

#[tokio::test]
async fn the_schedule_backs_up_yesterday_once_however_many_nodes_run_it() {
    each_backend_with(fast_schedule, async |app| {
        let other = second_node(app, fast_schedule).await;
        let shop = Shop::open(app, "Lamp Shop").await;
        shop.configure(app, json!({ "destination": "local" }))
            .await
            .expect(200);
        let yesterday = utc_date(-1);
        let run = shop.finished(app, &yesterday).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["cause"], "schedule");
        assert_eq!(run["complete"], true);
        let file: &Path = &the_backup_dir(app)
            .join(&shop.org)
            .join(format!("{yesterday}.jsonl"));
        assert!(file.exists());
        // Both nodes keep looking; neither backs the day up again.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let audit = app
            .get(
                &format!("/api/v1/orgs/{}/audit?limit=200", shop.org),
                &shop.owner,
            )
            .await;
        let json_runs: Vec<Value> = audit.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["action"]
                    .as_str()
                    .unwrap()
                    .starts_with("inbox_backup.run_")
            })
            .cloned()
            .collect();
        assert_eq!(json_runs.len(), 1, "{json_runs:?}");
        assert_eq!(json_runs[0]["action"], "inbox_backup.run_succeeded");
        assert_eq!(json_runs[0]["actor"], "system:inbox_backup");
        let view = app.get(&shop.backup(), &shop.owner).await.json();
        assert_eq!(view["runs"].as_array().unwrap().len(), 1, "{view}");
        other.stop().await.unwrap();
    })
    .await;
}

/// The policy docs/inbox-backup.md gives for a write-only key: objects under the exports' prefix
/// may be written (one PUT, or a multipart upload) and a failed multipart upload aborted; nothing
/// may be read, listed or deleted.
fn write_only_policy(bucket: &str, prefix: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ConfideInboxBackupWriteOnly",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
                "Resource": format!("arn:aws:s3:::{bucket}/{prefix}confide/inbox/*"),
            }
        ]
    })
}

/// An S3 destination in moto, written with `key`.
fn s3_destination(moto: &Moto, bucket: &str, prefix: &str, key: &AccessKey) -> Value {
    json!({
        "destination": "s3",
        "bucket": bucket,
        "region": REGION,
        "endpoint": moto.endpoint(),
        "prefix": prefix,
        "access_key_id": key.id,
        "secret_access_key": key.secret,
    })
}

#[tokio::test]
async fn a_backup_needs_nothing_but_a_key_that_may_only_write() {
    let Some(moto) = Moto::start_with_iam().await else {
        return;
    };
    moto.create_bucket("lamp-backups").await;
    each_backend_with(with_loopback_allowed, async |app| {
        let shop = Shop::open(app, "Lamp Shop").await;
        let prefix = format!("{}/chat/", app.backend);
        let policy = write_only_policy("lamp-backups", &prefix);
        let writer = moto
            .create_user(&format!("backup-writer-{}", app.backend), &policy)
            .await;

        // moto checks keys here as AWS does: one it does not know is refused.
        let stranger = AccessKey {
            id: KEY_ID.to_owned(),
            secret: SECRET.to_owned(),
        };
        let refused = shop
            .configure(
                app,
                s3_destination(&moto, "lamp-backups", &prefix, &stranger),
            )
            .await;
        refused.expect_error(422, "destination_write_failed");
        assert!(refused.text.contains("access_denied"), "{}", refused.text);
        // And signatures are checked: the right key id with another secret is refused too.
        let forged = AccessKey {
            id: writer.id.clone(),
            secret: SECRET.to_owned(),
        };
        let refused = shop
            .configure(app, s3_destination(&moto, "lamp-backups", &prefix, &forged))
            .await;
        refused.expect_error(422, "destination_write_failed");
        assert!(refused.text.contains("access_denied"), "{}", refused.text);

        // The write-only key takes the test write, and the run writes the day.
        shop.configure(app, s3_destination(&moto, "lamp-backups", &prefix, &writer))
            .await
            .expect(200);
        let base = format!("{prefix}confide/inbox/{}/", shop.org);
        assert!(
            moto.object("lamp-backups", &format!("{base}.confide-write-test"))
                .await
                .is_some(),
            "the test write"
        );
        let chat = shop.chat(app, &["Is the brass lamp in stock?"]).await;
        let today = utc_date(0);
        shop.run(app, &today).await.expect(202);
        let run = shop.finished(app, &today).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        let key = format!("{base}{today}.jsonl");
        let written = moto
            .object("lamp-backups", &key)
            .await
            .expect("the day's export in the bucket");
        let found = lines(&written);
        assert_eq!(found.len(), 1, "{written}");
        assert_eq!(found[0]["id"], chat.as_str());
        assert_eq!(texts(&found[0])[0], "Is the brass lamp in stock?");

        // The key really may do nothing else: moto refuses it every read, list and delete, and
        // writes outside the exports' prefix. It may abort a multipart upload it started (what
        // a failed large upload does) but not list its parts (which Confide never asks for).
        let tried = moto
            .boto3_as(
                &writer,
                &format!(
                    "bucket, key = 'lamp-backups', '{key}'\n\
                     def attempt(name, call):\n    \
                         try:\n        call()\n        print(name, 'allowed')\n    \
                         except ClientError as e:\n        \
                             status = e.response['ResponseMetadata']['HTTPStatusCode']\n        \
                             print(name, 'refused' if status == 403 else status)\n\
                     attempt('GetObject', lambda: s3.get_object(Bucket=bucket, Key=key))\n\
                     attempt('HeadObject', lambda: s3.head_object(Bucket=bucket, Key=key))\n\
                     attempt('ListBucket', lambda: s3.list_objects_v2(Bucket=bucket))\n\
                     attempt('ListMultipartUploads', \
                         lambda: s3.list_multipart_uploads(Bucket=bucket))\n\
                     attempt('DeleteObject', lambda: s3.delete_object(Bucket=bucket, Key=key))\n\
                     attempt('PutObject elsewhere', \
                         lambda: s3.put_object(Bucket=bucket, Key='elsewhere.txt', Body=b'x'))\n\
                     upload = s3.create_multipart_upload(Bucket=bucket, Key=key)['UploadId']\n\
                     s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, \
                         Body=b'x')\n\
                     attempt('ListParts', \
                         lambda: s3.list_parts(Bucket=bucket, Key=key, UploadId=upload))\n\
                     attempt('AbortMultipartUpload', lambda: s3.abort_multipart_upload(\
                         Bucket=bucket, Key=key, UploadId=upload))\n"
                ),
            )
            .await;
        assert_eq!(
            tried.lines().collect::<Vec<_>>(),
            [
                "GetObject refused",
                "HeadObject refused",
                "ListBucket refused",
                "ListMultipartUploads refused",
                "DeleteObject refused",
                "PutObject elsewhere refused",
                "ListParts refused",
                "AbortMultipartUpload allowed",
            ],
        );
        // Nothing was deleted on the way.
        assert_eq!(moto.object("lamp-backups", &key).await, Some(written));
    })
    .await;
    moto.stop().await;
}

/// What one upload holds before the export turns to a multipart upload (`UPLOAD_BUFFER`).
const SINGLE_UPLOAD_BYTES: u64 = 8 * 1024 * 1024;

#[tokio::test]
async fn a_day_larger_than_one_upload_goes_up_in_parts_and_arrives_whole() {
    let Some(moto) = Moto::start_with_iam().await else {
        return;
    };
    moto.create_bucket("lamp-backups").await;
    each_backend_with(with_loopback_allowed, async |app| {
        let shop = Shop::open(app, "Lamp Shop").await;
        let prefix = format!("{}/chat/", app.backend);
        let writer = moto
            .create_user(
                &format!("backup-writer-{}", app.backend),
                &write_only_policy("lamp-backups", &prefix),
            )
            .await;
        shop.configure(app, s3_destination(&moto, "lamp-backups", &prefix, &writer))
            .await
            .expect(200);

        // A busy day, sent the quickest way the product offers: a customer's backend sends its
        // users' longest messages through the Application API, and a dialogue answers each with
        // its longest reply. Four-byte characters fill each message's 2000 characters with 8000
        // bytes, so a few hundred exchanges make more than one upload holds.
        let bot = format!("/api/v1/orgs/{}/bots/{}", shop.org, shop.bot_id);
        let answer = app
            .post(
                &format!("{bot}/dialogues"),
                &shop.owner,
                json!({
                    "name": "Lamp light",
                    "patterns": ["(?i)^lamp light$"],
                    "replies": ["💡".repeat(2000)],
                }),
            )
            .await;
        answer.expect(201);
        let exchange = answer.json()["id"].as_str().unwrap().to_owned();
        let key = app
            .create_api_key(&shop.owner, &shop.org, &["chats:write"], Some(&shop.bot_id))
            .await
            .credential();
        const USERS: usize = 4;
        const EXCHANGES_PER_USER: usize = 150;
        let said = |user: usize, n: usize| {
            let head = format!("{user}:{n:03} ");
            let fill = "🪔".repeat(2000 - head.chars().count());
            format!("{head}{fill}")
        };
        futures_util::future::join_all((0..USERS).map(|user| {
            let (key, exchange) = (&key, &exchange);
            async move {
                for n in 0..EXCHANGES_PER_USER {
                    app.post(
                        "/api/v1/send",
                        key,
                        json!({
                            "user_id": format!("customer-{user}"),
                            "message": said(user, n),
                            "exchange_id": exchange,
                        }),
                    )
                    .await
                    .expect(202);
                }
            }
        }))
        .await;

        let today = utc_date(0);
        shop.run(app, &today).await.expect(202);
        let run = shop.finished(app, &today).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["conversations"], USERS);
        let bytes = run["bytes"].as_u64().unwrap();
        assert!(bytes > SINGLE_UPLOAD_BYTES, "{run}");

        // Uploaded in parts (S3 gives such an object the ETag `"…-<parts>"`), and whole.
        let object_key = format!("{prefix}confide/inbox/{}/{today}.jsonl", shop.org);
        let (size, etag) = moto.head("lamp-backups", &object_key).await;
        assert_eq!(size, bytes);
        let parts = etag.trim_matches('"').rsplit_once('-').map(|(_, n)| n);
        assert_eq!(
            parts,
            Some(bytes.div_ceil(SINGLE_UPLOAD_BYTES).to_string().as_str()),
            "{etag}"
        );
        let written = moto
            .object("lamp-backups", &object_key)
            .await
            .expect("the day's export in the bucket");
        assert_eq!(written.len() as u64, bytes);
        let found = lines(&written);
        assert_eq!(found.len(), USERS);
        for user in 0..USERS {
            let line = found
                .iter()
                .find(|l| l["messages"][0]["text"] == said(user, 0).as_str())
                .unwrap();
            let expected: Vec<String> = (0..EXCHANGES_PER_USER)
                .flat_map(|n| [said(user, n), "💡".repeat(2000)])
                .collect();
            assert!(texts(line) == expected, "customer-{user}'s messages differ");
        }
    })
    .await;
    moto.stop().await;
}
