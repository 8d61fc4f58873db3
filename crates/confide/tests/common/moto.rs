//! An S3-compatible service on 127.0.0.1 for the tests: Python's `moto` in server mode, a fake of
//! AWS S3 that speaks its real wire protocol (SigV4-signed REST, XML errors, multipart uploads).
//!
//! The Python that has moto is `CONFIDE_TEST_PYTHON`, else the repository's `.venv` (where
//! `.ci/run` installs it), else `python3`. Without moto a test skips loudly, unless
//! `CONFIDE_REQUIRE_MOTO=1` (set by CI) turns that into a failure.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The credentials the tests give moto (it accepts any).
pub const REGION: &str = "us-east-1";

pub struct Moto {
    python: PathBuf,
    pub port: u16,
    child: Child,
}

fn python() -> PathBuf {
    if let Ok(python) = std::env::var("CONFIDE_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

async fn has_moto(python: &PathBuf) -> bool {
    Command::new(python)
        .args(["-c", "import moto.server, boto3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success())
}

impl Moto {
    /// A fresh moto server, or `None` (with a loud note) when moto is not installed here.
    pub async fn start() -> Option<Moto> {
        let python = python();
        if !has_moto(&python).await {
            let required = std::env::var("CONFIDE_REQUIRE_MOTO").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "CONFIDE_REQUIRE_MOTO=1 but {} cannot import moto and boto3 \
                 (pip install 'moto[server]')",
                python.display()
            );
            eprintln!(
                "\n!!! SKIPPED: the S3 wire-protocol test needs Python's moto \
                 (pip install 'moto[server]' into .venv, or set CONFIDE_TEST_PYTHON) !!!\n"
            );
            return None;
        }
        for _ in 0..5 {
            let port = super::free_port();
            let child = Command::new(&python)
                .args([
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start moto");
            let moto = Moto {
                python: python.clone(),
                port,
                child,
            };
            if moto.wait_until_ready().await {
                return Some(moto);
            }
        }
        panic!("moto did not start");
    }

    async fn wait_until_ready(&self) -> bool {
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(answer) = client
                .get(format!("{}/moto-api/", self.endpoint()))
                .send()
                .await
                && answer.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs a boto3 script with `s3`, a client of this server, in scope; answers its stdout.
    pub async fn boto3(&self, script: &str) -> String {
        let program = format!(
            "import boto3, sys\n\
             s3 = boto3.client('s3', endpoint_url='{}', region_name='{REGION}', \
             aws_access_key_id='test-admin', aws_secret_access_key='test-admin-secret')\n{script}",
            self.endpoint()
        );
        let output = Command::new(&self.python)
            .args(["-c", &program])
            .output()
            .await
            .expect("run python");
        assert!(
            output.status.success(),
            "boto3 failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    pub async fn create_bucket(&self, bucket: &str) {
        self.boto3(&format!("s3.create_bucket(Bucket='{bucket}')"))
            .await;
    }

    /// The object's content, or `None` when there is no such key.
    pub async fn object(&self, bucket: &str, key: &str) -> Option<String> {
        let out = self
            .boto3(&format!(
                "try:\n    body = s3.get_object(Bucket='{bucket}', Key='{key}')['Body'].read()\n    \
                 sys.stdout.write('found\\n' + body.decode())\n\
                 except s3.exceptions.NoSuchKey:\n    sys.stdout.write('missing\\n')"
            ))
            .await;
        out.strip_prefix("found\n").map(str::to_owned)
    }

    /// Every key in the bucket.
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        self.boto3(&format!(
            "for o in s3.list_objects_v2(Bucket='{bucket}').get('Contents', []):\n    print(o['Key'])"
        ))
        .await
        .lines()
        .map(str::to_owned)
        .collect()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
