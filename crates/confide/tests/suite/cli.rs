//! The `confide` binary as an operator uses it: migrate, create the first owner, serve and stop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{
    PASSWORD, TestApp, confide_cli, each_backend, email, free_port, http_client, wait_for_health,
};
use serde_json::json;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every file below `dir`.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// The data directory is the owner's alone, and so is every key in it.
#[track_caller]
fn assert_keys_are_private(data_dir: &Path) {
    assert_eq!(
        mode(data_dir),
        0o700,
        "data directory {}",
        data_dir.display()
    );
    let keys_dir = data_dir.join("keys");
    assert!(keys_dir.is_dir(), "keys are kept in {}", keys_dir.display());
    let keys: Vec<PathBuf> = files_below(&keys_dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "key" || e == "pem"))
        .collect();
    assert!(
        keys.iter()
            .any(|p| p.extension().is_some_and(|e| e == "key")),
        "symmetric keys: {keys:?}"
    );
    assert!(
        keys.iter()
            .any(|p| p.extension().is_some_and(|e| e == "pem")),
        "signing keys: {keys:?}"
    );
    for key in &keys {
        assert_eq!(mode(key), 0o600, "{}", key.display());
    }
    for dir in files_below(&keys_dir).iter().filter_map(|p| p.parent()) {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
}

#[tokio::test]
async fn migrate_prepares_a_fresh_data_directory() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("fresh");
    let dir = data_dir.to_str().unwrap();
    for _ in 0..2 {
        let run = confide_cli(&["--data-dir", dir, "migrate"], None).await;
        run.expect_success();
        assert_eq!(run.json(), json!({ "migrated": true }));
    }
    assert_eq!(mode(&data_dir), 0o700);
    assert!(
        data_dir.join("confide.db").is_file(),
        "SQLite lives in the data directory"
    );

    // And against each configured backend's own fresh database.
    for (backend, db) in confide_store::testing::each_backend().await {
        let data_dir = root.path().join(backend);
        let run = confide_cli(
            &[
                "--data-dir",
                data_dir.to_str().unwrap(),
                "--database-url",
                &db.url(),
                "migrate",
            ],
            None,
        )
        .await;
        run.expect_success();
        assert_eq!(run.json(), json!({ "migrated": true }), "{backend}");
    }
}

#[tokio::test]
async fn create_owner_reads_the_password_from_stdin_and_refuses_weak_ones() {
    each_backend(async |app| {
        let address = email("first-owner");
        for weak in [
            "q1w2e3r4t5y6",
            "Q1W2E3R4T5Y6",
            "aaaaaaaaaaaaaaaa",
            "short pass",
            "",
        ] {
            let run = app
                .confide(
                    &[
                        "admin",
                        "create-owner",
                        "--email",
                        &address,
                        "--org",
                        "Weaklings",
                    ],
                    Some(weak),
                )
                .await;
            assert!(!run.success, "{weak:?} must be refused: {}", run.stdout);
            assert!(
                run.stdout.trim().is_empty(),
                "nothing is printed on refusal: {}",
                run.stdout
            );
        }
        let run = app
            .confide(
                &[
                    "admin",
                    "create-owner",
                    "--email",
                    &address,
                    "--org",
                    "Weaklings",
                ],
                Some("short pass"),
            )
            .await;
        assert!(
            run.stderr.contains("12 characters"),
            "say why: {}",
            run.stderr
        );
        let run = app
            .confide(
                &[
                    "admin",
                    "create-owner",
                    "--email",
                    &address,
                    "--org",
                    "Weaklings",
                ],
                Some("q1w2e3r4t5y6"),
            )
            .await;
        assert!(
            run.stderr.to_lowercase().contains("common"),
            "say why: {}",
            run.stderr
        );

        // Nothing was half-created: the same address still works, once.
        let owner = app.create_owner(&address, "Strong Ones", PASSWORD).await;
        let session = app.login(&address, PASSWORD).await;
        assert_eq!(session.user_id, owner.user_id);
        let me = app.get("/api/v1/me", &session.bearer()).await.json();
        assert_eq!(
            me["organizations"],
            json!([{ "id": owner.org_id, "name": "Strong Ones", "role": "owner" }])
        );
        let again = app
            .confide(
                &[
                    "admin",
                    "create-owner",
                    "--email",
                    &address,
                    "--org",
                    "Twice",
                ],
                Some(PASSWORD),
            )
            .await;
        assert!(!again.success, "an address is registered once");
        // The password never appears in the command's output.
        assert!(!again.stderr.contains(PASSWORD) && !again.stdout.contains(PASSWORD));
    })
    .await;
}

#[tokio::test]
async fn the_data_directory_keeps_its_keys_private() {
    each_backend(async |app: &TestApp| {
        assert_keys_are_private(&app.data_dir);
        // Development mail carries tokens: private as well.
        let (owner, session) = app.owner(&email("owner"), "Private Mail").await;
        app.invite(&session.bearer(), &owner.org_id, &email("guest"), "member")
            .await;
        let mails = files_below(&app.data_dir.join("mail"));
        assert!(!mails.is_empty());
        for mail in mails {
            assert_eq!(mode(&mail), 0o600, "{}", mail.display());
        }
    })
    .await;
}

/// Sends SIGTERM the way an init system does.
fn terminate(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}");
}

#[tokio::test]
async fn serve_answers_health_checks_and_exits_cleanly_on_sigterm() {
    for (backend, db) in confide_store::testing::each_backend().await {
        eprintln!("backend: {backend}");
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("data");
        let client = http_client();
        let mut attempt = 0;
        let (mut child, base) = loop {
            attempt += 1;
            let port = free_port();
            let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_confide"))
                .args([
                    "--data-dir",
                    data_dir.to_str().unwrap(),
                    "--database-url",
                    &db.url(),
                ])
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .env("CONFIDE_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("start confide serve");
            let base = format!("http://127.0.0.1:{port}");
            // Healthy, or exited (a lost race for the port): whichever comes first.
            let healthy = tokio::select! {
                () = wait_for_health(&client, &base) => true,
                _ = child.wait() => false,
            };
            if healthy {
                break (child, base);
            }
            let output = child.wait_with_output().await.unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            assert!(attempt < 3, "confide serve did not start: {stderr}");
        };

        let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(ready.status().as_u16(), 200);
        assert_keys_are_private(&data_dir);

        terminate(child.id().expect("the server is running"));
        let status = child.wait().await.expect("wait for the server");
        assert!(
            status.success(),
            "SIGTERM ends the server with exit 0, got {status:?}"
        );
        assert!(
            client.get(format!("{base}/healthz")).send().await.is_err(),
            "nothing listens after the stop"
        );
        eprintln!("backend: {backend} passed");
    }
}

#[tokio::test]
async fn an_operator_can_sign_a_user_out_everywhere() {
    each_backend(async |app| {
        let address = email("lost-laptop");
        app.create_owner(&address, "Stolen Goods", PASSWORD).await;
        let one = app.login(&address, PASSWORD).await;
        let two = app.login(&address, PASSWORD).await;
        let run = app
            .confide(&["admin", "revoke-sessions", "--email", &address], None)
            .await;
        run.expect_success();
        assert_eq!(run.json()["revoked"], json!(2));
        for session in [&one, &two] {
            app.get("/api/v1/me", &session.bearer()).await.expect(401);
            app.get("/api/v1/me", &session.cookie()).await.expect(401);
        }
        app.login(&address, PASSWORD).await;
    })
    .await;
}

#[tokio::test]
async fn a_rotated_signing_key_signs_new_tokens_while_old_ones_still_verify() {
    each_backend(async |app| {
        let address = email("rotator");
        app.create_owner(&address, "Key Ceremony", PASSWORD).await;
        let before = app.login(&address, PASSWORD).await;
        let jwks_before = app
            .get("/.well-known/jwks.json", &common::Credential::Anonymous)
            .await
            .json();
        let run = app.confide(&["admin", "rotate-signing-key"], None).await;
        run.expect_success();
        let kid = run.json()["active_kid"]
            .as_str()
            .expect("active_kid")
            .to_owned();
        assert!(
            !jwks_before.to_string().contains(&kid),
            "a new kid: {kid} was already in {jwks_before}"
        );
        // The old token keeps working after the rotation.
        app.get("/api/v1/me", &before.bearer()).await.expect(200);
        assert_keys_are_private(&app.data_dir);
    })
    .await;
}
