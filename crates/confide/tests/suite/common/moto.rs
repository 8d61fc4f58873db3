//! An S3-compatible service on 127.0.0.1 for the tests: Python's `moto` in server mode, a fake of
//! AWS S3 that speaks its real wire protocol (SigV4-signed REST, XML errors, multipart uploads).
//!
//! The Python that has moto is `CONFIDE_TEST_PYTHON`, else the repository's `.venv` (where
//! `.ci/run` installs it), else `python3`. Without moto a test skips loudly, unless
//! `CONFIDE_REQUIRE_MOTO=1` (set by CI) turns that into a failure.
//!
//! [`Moto::start_with_iam`] also checks every request against moto's IAM, as AWS does: the
//! signature with the key's secret, then the user's policies, so a key allowed only to write is
//! refused anything else.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub const REGION: &str = "us-east-1";

/// An access key: any pair while moto does not check them, an IAM user's once it does.
#[derive(Clone, Debug)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

pub struct Moto {
    python: PathBuf,
    pub port: u16,
    child: Child,
    /// What the helpers below sign with: allowed everything.
    admin: AccessKey,
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
                admin: AccessKey {
                    id: "test-admin".to_owned(),
                    secret: "test-admin-secret".to_owned(),
                },
            };
            if moto.wait_until_ready().await {
                return Some(moto);
            }
        }
        panic!("moto did not start");
    }

    /// A fresh moto server that authorizes every request against its IAM: an admin user allowed
    /// everything is made first, and the helpers below use its key.
    pub async fn start_with_iam() -> Option<Moto> {
        let mut moto = Moto::start().await?;
        let everything = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{ "Effect": "Allow", "Action": "*", "Resource": "*" }],
        });
        moto.admin = moto.create_user("confide-test-admin", &everything).await;
        // moto's INITIAL_NO_AUTH_ACTION_COUNT (requests let through unchecked) set to 0 now, with
        // the admin in place, through the endpoint moto's own `set_initial_no_auth_action_count`
        // uses in server mode: from here on every request is checked.
        let answer = reqwest::Client::new()
            .post(format!("{}/moto-api/reset-auth", moto.endpoint()))
            .body("0")
            .send()
            .await
            .expect("reach moto");
        assert!(answer.status().is_success(), "moto did not turn on IAM");
        Some(moto)
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

    /// Runs a boto3 script with `s3` and `iam`, clients of this server, in scope; answers its
    /// stdout.
    pub async fn boto3(&self, script: &str) -> String {
        self.boto3_as(&self.admin, script).await
    }

    /// Like [`Moto::boto3`], signing with `key`.
    pub async fn boto3_as(&self, key: &AccessKey, script: &str) -> String {
        let program = format!(
            "import boto3, sys\n\
             from botocore.exceptions import ClientError\n\
             def client(service):\n    \
             return boto3.client(service, endpoint_url='{}', region_name='{REGION}', \
             aws_access_key_id='{}', aws_secret_access_key='{}')\n\
             s3, iam = client('s3'), client('iam')\n{script}",
            self.endpoint(),
            key.id,
            key.secret,
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

    /// An IAM user allowed what `policy` (an IAM policy document) allows, and its access key.
    pub async fn create_user(&self, name: &str, policy: &serde_json::Value) -> AccessKey {
        // The policy's JSON, quoted by `{:?}`, is a Python string literal.
        let out = self
            .boto3(&format!(
                "iam.create_user(UserName='{name}')\n\
                 iam.put_user_policy(UserName='{name}', PolicyName='{name}', \
                 PolicyDocument={policy:?})\n\
                 key = iam.create_access_key(UserName='{name}')['AccessKey']\n\
                 print(key['AccessKeyId'])\nprint(key['SecretAccessKey'])",
                policy = policy.to_string(),
            ))
            .await;
        let mut lines = out.lines().map(str::to_owned);
        AccessKey {
            id: lines.next().expect("the key id"),
            secret: lines.next().expect("the secret"),
        }
    }

    /// The object's size and ETag (`"…-N"` for an object uploaded in N parts).
    pub async fn head(&self, bucket: &str, key: &str) -> (u64, String) {
        let out = self
            .boto3(&format!(
                "head = s3.head_object(Bucket='{bucket}', Key='{key}')\n\
                 print(head['ContentLength'])\nprint(head['ETag'])"
            ))
            .await;
        let mut lines = out.lines();
        let size = lines.next().and_then(|l| l.parse().ok()).expect("a size");
        (size, lines.next().expect("an ETag").to_owned())
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
