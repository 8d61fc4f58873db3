//! `confide knowledge import` as a bot builder runs it against a running server: the real binary,
//! an API key with `bots:write` in a private file, a file or a directory uploaded and followed to
//! ready, files the server refuses reported with their code (exit 1) while the others still go,
//! and a wrong key or a key file others can read stopping the import (exit 2).
//!
//! Standard error is not a terminal here, so it holds one line per state change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{CliRun, Credential, TestApp, each_backend, each_backend_with, email};
use serde_json::Value;

/// A bot to teach, its owner, and an API key that may write it, kept in a 0600 file.
struct Builder {
    org: String,
    bot: String,
    owner: Credential,
    key: String,
    key_file: PathBuf,
    files: tempfile::TempDir,
}

async fn builder(app: &TestApp) -> Builder {
    let (owner, session) = app.owner(&email("builder"), "Library").await;
    let bot = app
        .create_bot(&session.bearer(), &owner.org_id, "Librarian")
        .await;
    let key = app
        .create_api_key(&session.bearer(), &owner.org_id, &["bots:write"], None)
        .await;
    let files = tempfile::tempdir().unwrap();
    let key_file = files.path().join("api-key");
    std::fs::write(&key_file, format!("{}\n", key.key)).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    Builder {
        org: owner.org_id,
        bot: bot.id,
        owner: session.bearer(),
        key: key.key,
        key_file,
        files,
    }
}

impl Builder {
    /// A directory of its own for the files of one import.
    fn dir(&self, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let dir = self.files.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        for (file, bytes) in files {
            std::fs::write(dir.join(file), bytes).unwrap();
        }
        dir
    }

    /// `confide knowledge import` with the key from the file, then `extra` and `target`.
    async fn import(&self, app: &TestApp, target: &Path) -> CliRun {
        let key_file = self.key_file.to_str().unwrap();
        self.run(
            app,
            &["--api-key-file", key_file, target.to_str().unwrap()],
            None,
        )
        .await
    }

    async fn run(&self, app: &TestApp, args: &[&str], env_key: Option<&str>) -> CliRun {
        let mut full = vec![
            "knowledge",
            "import",
            "--server",
            &app.base,
            "--org",
            &self.org,
            "--bot",
            &self.bot,
            "--timeout",
            "60",
        ];
        full.extend_from_slice(args);
        run_confide(&full, env_key).await
    }

    async fn sources(&self, app: &TestApp) -> Vec<Value> {
        let path = format!(
            "/api/v1/orgs/{}/bots/{}/knowledge/sources",
            self.org, self.bot
        );
        let reply = app.get(&path, &self.owner).await;
        reply.expect(200);
        reply.json()["sources"].as_array().unwrap().clone()
    }
}

/// The binary with nothing from the caller's environment that would change its mind.
async fn run_confide(args: &[&str], api_key: Option<&str>) -> CliRun {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_confide"));
    command
        .args(args)
        .env_remove("CONFIDE_API_KEY")
        .env_remove("CONFIDE_SERVER")
        .env("CONFIDE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(key) = api_key {
        command.env("CONFIDE_API_KEY", key);
    }
    let child = command.spawn().expect("start confide");
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the import ends within two minutes")
        .expect("wait for confide");
    CliRun {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[track_caller]
fn expect_code(run: &CliRun, code: i32) {
    assert_eq!(
        run.code,
        Some(code),
        "exit code\nstdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
}

/// The states stderr showed for `name`, in order.
fn states_of(stderr: &str, name: &str) -> Vec<String> {
    let prefix = format!("{name} ");
    stderr
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|rest| rest.split(' ').next().unwrap().to_owned())
        .collect()
}

/// The states come in the order a source goes through them; polling may miss short ones.
#[track_caller]
fn assert_states_in_order(stderr: &str, name: &str) {
    const ORDER: [&str; 8] = [
        "uploading",
        "queued",
        "pending_scan",
        "scanning",
        "extracting",
        "indexing",
        "ready",
        "rejected",
    ];
    let states = states_of(stderr, name);
    assert_eq!(
        states.first().map(String::as_str),
        Some("uploading"),
        "{stderr}"
    );
    assert_eq!(
        states.get(1).map(String::as_str),
        Some("queued"),
        "{stderr}"
    );
    assert_eq!(states.last().map(String::as_str), Some("ready"), "{stderr}");
    let positions: Vec<usize> = states
        .iter()
        .map(|s| {
            ORDER
                .iter()
                .position(|o| o == s)
                .unwrap_or_else(|| panic!("unknown state {s}: {stderr}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "each state once, in order: {stderr}"
    );
}

/// `ready NAME N passages`: the number of passages.
#[track_caller]
fn ready_passages(line: &str, name: &str) -> u64 {
    let rest = line
        .strip_prefix(&format!("ready {name} "))
        .unwrap_or_else(|| panic!("not ready {name}: {line:?}"));
    let (count, unit) = rest.split_once(' ').unwrap();
    assert!(unit == "passage" || unit == "passages", "{line:?}");
    count.parse().unwrap()
}

const HOURS: &[u8] = b"Opening hours: the library opens at nine and closes at five on weekdays.\n";
const FAQ: &[u8] = b"# Borrowing\n\nA reader may borrow up to six books for three weeks.\n";

#[tokio::test]
async fn a_text_file_is_uploaded_and_followed_until_its_passages_are_ready() {
    each_backend(async |app| {
        let builder = builder(app).await;
        let dir = builder.dir("one", &[("hours.txt", HOURS)]);
        let run = builder.import(app, &dir.join("hours.txt")).await;
        expect_code(&run, 0);

        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "one summary line: {}", run.stdout);
        assert!(ready_passages(lines[0], "hours.txt") >= 1, "{}", run.stdout);

        assert!(
            run.stderr
                .lines()
                .next()
                .is_some_and(|l| l == format!("hours.txt uploading {} B", HOURS.len())),
            "{}",
            run.stderr
        );
        assert_states_in_order(&run.stderr, "hours.txt");
        assert!(
            !run.stderr.contains('\r'),
            "no bar is drawn when stderr is not a terminal: {:?}",
            run.stderr
        );

        let sources = builder.sources(app).await;
        assert_eq!(sources.len(), 1, "{sources:?}");
        assert_eq!(sources[0]["title"], "hours.txt");
        assert_eq!(sources[0]["status"], "ready");
        assert!(
            !run.stderr.contains(&builder.key) && !run.stdout.contains(&builder.key),
            "the key is never printed"
        );
    })
    .await;
}

#[tokio::test]
async fn a_directory_imports_its_files_one_after_another_in_name_order() {
    each_backend(async |app| {
        let builder = builder(app).await;
        let dir = builder.dir(
            "library",
            &[
                ("b-borrowing.md", FAQ),
                ("a-hours.txt", HOURS),
                (".hidden-notes.txt", b"Not for the bot.\n"),
            ],
        );
        std::fs::create_dir(dir.join("archive")).unwrap();
        std::fs::write(dir.join("archive").join("old.txt"), b"Old hours.\n").unwrap();

        // The key from the environment this time.
        let run = builder
            .run(app, &[dir.to_str().unwrap()], Some(&builder.key))
            .await;
        expect_code(&run, 0);
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{}", run.stdout);
        ready_passages(lines[0], "a-hours.txt");
        ready_passages(lines[1], "b-borrowing.md");
        assert_states_in_order(&run.stderr, "a-hours.txt");
        assert_states_in_order(&run.stderr, "b-borrowing.md");
        // One after another: the first is ready before the second is uploaded.
        let first_ready = run.stderr.find("a-hours.txt ready").unwrap();
        let second_upload = run.stderr.find("b-borrowing.md uploading").unwrap();
        assert!(first_ready < second_upload, "{}", run.stderr);

        let titles: Vec<Value> = builder
            .sources(app)
            .await
            .iter()
            .map(|s| s["title"].clone())
            .collect();
        assert_eq!(
            titles,
            vec![Value::from("a-hours.txt"), Value::from("b-borrowing.md")],
            "hidden files and subdirectories stay home"
        );
    })
    .await;
}

/// A file the server refuses at the door (422 with its code) or rejects while processing is
/// reported on its own line and the exit code is 1; the other files are still imported.
#[tokio::test]
async fn refused_and_rejected_files_are_reported_with_their_code_and_the_rest_still_go() {
    each_backend(async |app| {
        let builder = builder(app).await;
        let dir = builder.dir(
            "mixed",
            &[
                ("%2e%2e%2fsecret.txt", HOURS),
                ("hours.txt", HOURS),
                ("report.pdf", b"this is not a PDF at all"),
                (
                    "scan.pdf",
                    b"%PDF-1.4\nnothing a reader could find here\n%%EOF\n",
                ),
            ],
        );
        let run = builder.import(app, &dir).await;
        expect_code(&run, 1);
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), 4, "{}", run.stdout);
        assert!(
            lines[0].starts_with("refused %2e%2e%2fsecret.txt path_traversal: "),
            "{}",
            run.stdout
        );
        ready_passages(lines[1], "hours.txt");
        assert!(
            lines[2].starts_with("refused report.pdf type_mismatch: "),
            "{}",
            run.stdout
        );
        assert!(lines[3].starts_with("rejected scan.pdf "), "{}", run.stdout);

        let sources = builder.sources(app).await;
        let statuses: Vec<(Value, Value)> = sources
            .iter()
            .map(|s| (s["title"].clone(), s["status"].clone()))
            .collect();
        assert_eq!(
            statuses,
            vec![
                (Value::from("hours.txt"), Value::from("ready")),
                (Value::from("scan.pdf"), Value::from("rejected")),
            ],
            "refused files were never stored"
        );
    })
    .await;
}

#[tokio::test]
async fn a_wrong_key_stops_the_import_with_the_servers_code() {
    each_backend(async |app| {
        let builder = builder(app).await;
        let dir = builder.dir("one", &[("hours.txt", HOURS), ("more.txt", FAQ)]);
        let run = builder
            .run(
                app,
                &[dir.to_str().unwrap()],
                Some("cfk_not-a-key-this-server-ever-made"),
            )
            .await;
        expect_code(&run, 2);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
        let last = run.stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: unauthenticated: ") && last.ends_with("(HTTP 401)"),
            "{}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("more.txt"),
            "nothing more is tried: {}",
            run.stderr
        );

        // A key that may only read the bot is refused by the server the same way.
        let reader = app
            .create_api_key(&builder.owner, &builder.org, &["bots:read"], None)
            .await;
        let run = builder
            .run(app, &[dir.to_str().unwrap()], Some(&reader.key))
            .await;
        expect_code(&run, 2);
        assert!(run.stderr.contains("(HTTP 403)"), "{}", run.stderr);
        assert!(builder.sources(app).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_key_file_others_can_read_is_refused_before_anything_is_sent() {
    each_backend(async |app| {
        let builder = builder(app).await;
        let dir = builder.dir("one", &[("hours.txt", HOURS)]);
        std::fs::set_permissions(&builder.key_file, std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let run = builder.import(app, &dir).await;
        expect_code(&run, 2);
        assert!(
            run.stderr.contains("open to group or others (mode 644)")
                && run.stderr.contains("chmod 600"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("uploading"), "{}", run.stderr);

        // Both a key in the environment and a key file: which one was meant is not guessed.
        std::fs::set_permissions(&builder.key_file, std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let key_file = builder.key_file.to_str().unwrap();
        let run = builder
            .run(
                app,
                &["--api-key-file", key_file, dir.to_str().unwrap()],
                Some(&builder.key),
            )
            .await;
        expect_code(&run, 2);
        assert!(run.stderr.contains("not both"), "{}", run.stderr);
        assert!(builder.sources(app).await.is_empty());
    })
    .await;
}

/// A page on this machine, as a customer's help site would serve it.
async fn serve_page(body: &'static str) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route(
        "/help/hours",
        axum::routing::get(move || async move {
            (
                [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
                body,
            )
        }),
    );
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (format!("http://{addr}/help/hours"), server)
}

fn allow_loopback(config: &mut confide::config::Config) {
    config.outbound_allow = confide_outbound::Allowlist::parse(&["127.0.0.0/8"]).unwrap();
}

/// `POST .../knowledge/imports` answers with the same source as an upload; the server fetches
/// the page (here allowed to reach this machine) and the CLI follows it like a file.
#[tokio::test]
async fn a_url_is_fetched_by_the_server_and_followed_until_ready() {
    let (url, page) = serve_page(
        "<html><head><title>Opening hours</title></head><body><p>The library opens at nine \
         and closes at five on weekdays.</p></body></html>",
    )
    .await;
    each_backend_with(allow_loopback, async |app| {
        let builder = builder(app).await;
        let run = builder.run(app, &[&url], Some(&builder.key)).await;
        expect_code(&run, 0);
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{}", run.stdout);
        ready_passages(lines[0], &url);
        let states = states_of(&run.stderr, &url);
        assert_eq!(
            states.first().map(String::as_str),
            Some("queued"),
            "{}",
            run.stderr
        );
        assert_eq!(
            states.last().map(String::as_str),
            Some("ready"),
            "{}",
            run.stderr
        );
    })
    .await;
    page.abort();
}

/// Without the operator's leave the server fetches nothing on this machine: refused, exit 1.
#[tokio::test]
async fn a_url_the_server_may_not_fetch_is_refused_with_its_code() {
    each_backend(async |app| {
        let builder = builder(app).await;
        let run = builder
            .run(app, &["http://127.0.0.1:9/admin"], Some(&builder.key))
            .await;
        expect_code(&run, 1);
        assert!(
            run.stdout
                .starts_with("refused http://127.0.0.1:9/admin import_url_not_allowed: "),
            "{}",
            run.stdout
        );
        assert!(builder.sources(app).await.is_empty());
    })
    .await;
}
