//! The test harness: a real server on 127.0.0.1 per test and backend, the real `confide` binary for
//! operator tasks, and helpers that go only through the public interface (HTTP and the CLI).
//!
//! Every scenario runs on SQLite and, when `CONFIDE_TEST_DATABASE_URL` is set, on PostgreSQL too,
//! each time against a fresh database.

// Each test file uses a different part of the harness.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Tiny GeoIP country databases written by the tests themselves.
pub mod mmdb;
/// An S3-compatible service (Python's moto) on 127.0.0.1.
pub mod moto;
/// A webhook receiver on 127.0.0.1.
pub mod receiver;
/// A visitor with a realtime subscription to their chat.
pub mod visitor;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use confide::config::{Config, LogFormat};
use confide::server::{self, RunningServer};
use confide_store::testing::TestDatabase;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

pub const SESSION_COOKIE: &str = "__Host-confide_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A password that passes the policy; every account in the tests uses one like it.
pub const PASSWORD: &str = "violet tractor eats quiet moons";

/// Runs `test` once per configured backend, each time against a fresh server and database.
pub async fn each_backend(test: impl AsyncFn(&TestApp)) {
    each_backend_with(|_| {}, test).await;
}

/// Like [`each_backend`], with a chance to change the server's configuration first.
pub async fn each_backend_with(configure: impl Fn(&mut Config), test: impl AsyncFn(&TestApp)) {
    for (backend, db) in confide_store::testing::each_backend().await {
        eprintln!("backend: {backend}");
        let app = TestApp::spawn(backend, db, &configure).await;
        test(&app).await;
        app.stop().await;
        eprintln!("backend: {backend} passed");
    }
}

/// How a request proves who sends it.
#[derive(Clone, Debug)]
pub enum Credential {
    Anonymous,
    /// An access token or an API key, sent as `Authorization: Bearer`.
    Bearer(String),
    /// The session cookie; writes also carry the CSRF token and our own `Origin`.
    Cookie {
        session: String,
        csrf: String,
    },
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|err| {
            panic!("expected JSON ({err}), got {} {:?}", self.status, self.text)
        })
    }

    /// `error.code` of an error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {} {}", self.status, self.text))
            .to_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header is text").to_owned())
    }

    /// Panics with the body when the status is not `expected`.
    #[track_caller]
    pub fn expect(&self, expected: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            expected,
            "unexpected status; body: {}",
            self.text
        );
        self
    }

    /// Panics unless the answer is the error `status` with `code`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        self.expect(status);
        assert_eq!(
            self.code(),
            code,
            "unexpected error code; body: {}",
            self.text
        );
    }
}

/// What `confide admin create-owner` prints.
#[derive(Clone, Debug)]
pub struct Owner {
    pub user_id: String,
    pub org_id: String,
}

/// A signed-in user, from `POST /api/v1/auth/login`.
#[derive(Clone, Debug)]
pub struct SignedIn {
    pub user_id: String,
    pub session_id: String,
    pub access_token: String,
    pub expires_at: String,
    /// The raw value of the session cookie.
    pub cookie: String,
    pub csrf_token: String,
}

impl SignedIn {
    pub fn bearer(&self) -> Credential {
        Credential::Bearer(self.access_token.clone())
    }

    pub fn cookie(&self) -> Credential {
        Credential::Cookie {
            session: self.cookie.clone(),
            csrf: self.csrf_token.clone(),
        }
    }
}

/// A new API key, from `POST /api/v1/orgs/{org_id}/api-keys`.
#[derive(Clone, Debug)]
pub struct CreatedKey {
    pub id: String,
    pub prefix: String,
    /// The whole key, shown once.
    pub key: String,
}

impl CreatedKey {
    pub fn credential(&self) -> Credential {
        Credential::Bearer(self.key.clone())
    }
}

/// A new chatbot, from `POST /api/v1/orgs/{org_id}/bots`.
#[derive(Clone, Debug)]
pub struct CreatedBot {
    pub id: String,
    pub name: String,
    /// The public widget key.
    pub key: String,
}

/// What a `confide` command did.
#[derive(Debug)]
pub struct CliRun {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// The last JSON line the command printed.
    pub fn json(&self) -> Value {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_else(|| panic!("no output; stderr: {}", self.stderr));
        serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
    }

    #[track_caller]
    pub fn expect_success(&self) -> &Self {
        assert!(
            self.success,
            "confide failed ({:?})\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// A server on 127.0.0.1 with its own database and data directory.
pub struct TestApp {
    pub backend: &'static str,
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`: the public URL, and so also the origin CSRF checks accept.
    pub base: String,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub client: reqwest::Client,
    server: Option<RunningServer>,
    _data: TempDir,
    db: TestDatabase,
}

/// A port nobody listens on right now (the server binds it a moment later; a lost race retries).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

/// The configuration a test server starts with.
pub fn test_config(port: u16, data_dir: &Path, database_url: &str) -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        data_dir: data_dir.to_path_buf(),
        database_url: Some(SecretString::from(database_url.to_owned())),
        public_url: format!("http://127.0.0.1:{port}"),
        cors_origins: Vec::new(),
        trusted_proxies: Vec::new(),
        // Secure like production: the tests send the cookie header themselves over plain HTTP.
        cookie_secure: true,
        session_idle_minutes: 30,
        session_absolute_hours: 12,
        conversation_idle_seconds: 30 * 60,
        tls: None,
        sentry_dsn: None,
        log_format: LogFormat::Json,
        smtp: None,
        keys: confide_security::KeyOverrides::default(),
        demo_bot_key: None,
        redis_url: None,
        redis_prefix: "confide".to_owned(),
        hub: confide_realtime::HubConfig::default(),
        geoip_database: None,
        outbound_allow: confide_outbound::Allowlist::default(),
        webhooks: confide_web::webhooks::WebhookSettings::default(),
        inbox_backup: confide_web::inbox_backup::InboxBackupSettings::default(),
        knowledge: knowledge_settings(),
        clock: confide_web::state::Clock::default(),
        // Suites make many requests from one address; the limiter has tests of its own.
        rate_limits: confide_web::RateLimits {
            api_per_minute: 1_000_000,
            credential_per_minute: 1_000_000,
            chat_per_minute: 1_000_000,
            chats_per_bot_per_minute: 1_000_000,
            messages_per_chat_per_minute: 1_000_000,
        },
    }
}

/// URLs aimed at the platform's own network, in the spellings an attacker tries (decimal, hex,
/// octal and short IPv4 forms, IPv6 and IPv4-mapped loopback, private and shared ranges, cloud
/// metadata, the unspecified address): whatever takes a URL from a user refuses every one.
pub const INTERNAL_URLS: [&str; 13] = [
    "http://127.0.0.1:8080/hook",
    "http://2130706433/hook",
    "http://0x7f.1/hook",
    "http://0177.0.0.1/hook",
    "http://127.1/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://10.0.0.8/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/hook",
    "http://100.64.0.1/hook",
    "http://0.0.0.0/hook",
];

/// Knowledge as in production, except that the extraction child is the `confide` binary cargo
/// built (the tests' own executable is not it), and retries and polls come quickly.
pub fn knowledge_settings() -> confide_web::knowledge::KnowledgeSettings {
    let mut settings = confide_web::knowledge::KnowledgeSettings::default();
    settings.sandbox.program = PathBuf::from(env!("CARGO_BIN_EXE_confide"));
    settings.poll_ms = 100;
    settings.retry_first_ms = 200;
    settings.retry_max_ms = 1000;
    settings
}

/// A server on `database_url` with its own data directory (and so its own keys), configured by
/// the test: the first node of a test, or another node of the same deployment.
pub async fn start_node(
    database_url: &str,
    data_dir: &Path,
    configure: &impl Fn(&mut Config),
) -> server::RunningServer {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut config = test_config(free_port(), data_dir, database_url);
        configure(&mut config);
        match server::start(config).await {
            Ok(server) => return server,
            // Someone took the port between our look and the bind: pick another.
            Err(err) if attempt < 5 => eprintln!("server did not start ({err:#}); retrying"),
            Err(err) => panic!("the server did not start: {err:#}"),
        }
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build the HTTP client")
}

impl TestApp {
    pub async fn spawn(
        backend: &'static str,
        db: TestDatabase,
        configure: &impl Fn(&mut Config),
    ) -> TestApp {
        let data = tempfile::tempdir().expect("create the data directory");
        let data_dir = data.path().join("data");
        let database_url = db.url();
        let server = start_node(&database_url, &data_dir, configure).await;
        let addr = server.addr;
        let app = TestApp {
            backend,
            addr,
            base: format!("http://{addr}"),
            data_dir,
            database_url,
            client: http_client(),
            server: Some(server),
            _data: data,
            db,
        };
        app.wait_until_healthy().await;
        app
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("the server stops cleanly");
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.backend == "postgres"
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn wait_until_healthy(&self) {
        wait_for_health(&self.client, &self.base).await;
    }

    // ---- HTTP ----

    /// One request with a JSON body (or none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        credential: &Credential,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.client.request(method.clone(), self.url(path));
        request = self.authorize(request, &method, credential);
        if let Some(body) = body {
            request = request.json(body);
        }
        read(request.send().await.expect("send the request")).await
    }

    pub fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        method: &Method,
        credential: &Credential,
    ) -> reqwest::RequestBuilder {
        match credential {
            Credential::Anonymous => request,
            Credential::Bearer(token) => request.bearer_auth(token),
            Credential::Cookie { session, csrf } => {
                // reqwest's cookie store would not send a Secure cookie over http: set it by hand.
                let request = request.header(
                    reqwest::header::COOKIE,
                    format!("{SESSION_COOKIE}={session}"),
                );
                if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
                    request
                } else {
                    request
                        .header(CSRF_HEADER, csrf)
                        .header(reqwest::header::ORIGIN, &self.base)
                }
            }
        }
    }

    pub async fn get(&self, path: &str, credential: &Credential) -> Reply {
        self.call(Method::GET, path, credential, None).await
    }

    pub async fn post(&self, path: &str, credential: &Credential, body: Value) -> Reply {
        self.call(Method::POST, path, credential, Some(&body)).await
    }

    pub async fn patch(&self, path: &str, credential: &Credential, body: Value) -> Reply {
        self.call(Method::PATCH, path, credential, Some(&body))
            .await
    }

    pub async fn put(&self, path: &str, credential: &Credential, body: Value) -> Reply {
        self.call(Method::PUT, path, credential, Some(&body)).await
    }

    pub async fn delete(&self, path: &str, credential: &Credential) -> Reply {
        self.call(Method::DELETE, path, credential, None).await
    }

    /// A multipart form with one file part named `field`, as a browser uploads a file.
    pub async fn send_file(
        &self,
        method: Method,
        path: &str,
        credential: &Credential,
        (field, filename, bytes): (&str, &str, &[u8]),
    ) -> Reply {
        let part = reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(filename.to_owned());
        let form = reqwest::multipart::Form::new().part(field.to_owned(), part);
        let request = self
            .client
            .request(method.clone(), self.url(path))
            .multipart(form);
        self.send(self.authorize(request, &method, credential))
            .await
    }

    /// A request built by hand (headers, raw bodies), sent as is.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        read(request.send().await.expect("send the request")).await
    }

    // ---- people and organizations ----

    /// `confide admin create-owner`, the password on standard input.
    pub async fn create_owner(&self, email: &str, org: &str, password: &str) -> Owner {
        let run = self
            .confide(
                &["admin", "create-owner", "--email", email, "--org", org],
                Some(password),
            )
            .await;
        run.expect_success();
        let out = run.json();
        Owner {
            user_id: out["user_id"].as_str().expect("user_id").to_owned(),
            org_id: out["org_id"].as_str().expect("org_id").to_owned(),
        }
    }

    pub async fn try_login(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/api/v1/auth/login",
            &Credential::Anonymous,
            json!({ "email": email, "password": password }),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> SignedIn {
        let reply = self.try_login(email, password).await;
        reply.expect(200);
        let body = reply.json();
        let cookie = session_cookie_value(&reply.headers).expect("login sets the session cookie");
        let text = |name: &str| {
            body[name]
                .as_str()
                .unwrap_or_else(|| panic!("login answer lacks {name}: {body}"))
                .to_owned()
        };
        SignedIn {
            user_id: text("user_id"),
            session_id: text("session_id"),
            access_token: text("access_token"),
            expires_at: text("expires_at"),
            cookie,
            csrf_token: text("csrf_token"),
        }
    }

    /// Creates an owner through the CLI and signs them in.
    pub async fn owner(&self, email: &str, org: &str) -> (Owner, SignedIn) {
        let owner = self.create_owner(email, org, PASSWORD).await;
        let session = self.login(email, PASSWORD).await;
        (owner, session)
    }

    /// Invites `email` into `org` as `role`; answers the invitation's id.
    pub async fn invite(&self, by: &Credential, org: &str, email: &str, role: &str) -> String {
        let reply = self
            .post(
                &format!("/api/v1/orgs/{org}/invitations"),
                by,
                json!({ "email": email, "role": role }),
            )
            .await;
        reply.expect(201);
        reply.json()["id"]
            .as_str()
            .expect("invitation id")
            .to_owned()
    }

    /// Accepts the latest invitation mailed to `email` as a new account with `password`;
    /// answers the new user's id.
    pub async fn accept(&self, email: &str, password: &str) -> String {
        let token = self.wait_for_mail_token(email, "Invitation token:").await;
        let reply = self
            .post(
                "/api/v1/invitations/accept",
                &Credential::Anonymous,
                json!({ "token": token, "password": password }),
            )
            .await;
        reply.expect(200);
        reply.json()["user_id"]
            .as_str()
            .expect("user_id")
            .to_owned()
    }

    /// Invites a new person as `role`, lets them accept and sign in.
    pub async fn member(&self, by: &Credential, org: &str, email: &str, role: &str) -> SignedIn {
        self.invite(by, org, email, role).await;
        self.accept(email, PASSWORD).await;
        self.login(email, PASSWORD).await
    }

    pub async fn create_bot(&self, by: &Credential, org: &str, name: &str) -> CreatedBot {
        let reply = self
            .post(
                &format!("/api/v1/orgs/{org}/bots"),
                by,
                json!({ "name": name }),
            )
            .await;
        reply.expect(201);
        let bot = reply.json();
        CreatedBot {
            id: bot["id"].as_str().expect("bot id").to_owned(),
            name: bot["name"].as_str().expect("bot name").to_owned(),
            key: bot["key"].as_str().expect("widget key").to_owned(),
        }
    }

    pub async fn create_api_key(
        &self,
        by: &Credential,
        org: &str,
        scopes: &[&str],
        bot: Option<&str>,
    ) -> CreatedKey {
        let mut body = json!({ "name": format!("key for {}", scopes.join(" ")), "scopes": scopes });
        if let Some(bot) = bot {
            body["bot_id"] = json!(bot);
        }
        let reply = self
            .post(&format!("/api/v1/orgs/{org}/api-keys"), by, body)
            .await;
        reply.expect(201);
        let created = reply.json();
        CreatedKey {
            id: created["api_key"]["id"]
                .as_str()
                .expect("key id")
                .to_owned(),
            prefix: created["api_key"]["prefix"]
                .as_str()
                .expect("key prefix")
                .to_owned(),
            key: created["key"].as_str().expect("the key").to_owned(),
        }
    }

    pub async fn grant(&self, by: &Credential, org: &str, bot: &str, user: &str, permission: &str) {
        self.put(
            &format!("/api/v1/orgs/{org}/bots/{bot}/permissions/{user}"),
            by,
            json!({ "permission": permission }),
        )
        .await
        .expect(200);
    }

    /// The organization's audit events, newest first (the first page of 200).
    pub async fn audit_log(&self, by: &Credential, org: &str) -> Vec<Value> {
        let reply = self
            .get(&format!("/api/v1/orgs/{org}/audit?limit=200"), by)
            .await;
        reply.expect(200);
        match reply.json()["events"].take() {
            Value::Array(events) => events,
            other => panic!("no events in the audit log: {other}"),
        }
    }

    /// The organization's audit actions, newest first (the first page of 200).
    pub async fn audit_actions(&self, by: &Credential, org: &str) -> Vec<String> {
        self.audit_log(by, org)
            .await
            .iter()
            .map(|e| e["action"].as_str().expect("action").to_owned())
            .collect()
    }

    /// The organization's audit events with this action, newest first (of the first 200).
    pub async fn audit_events(&self, by: &Credential, org: &str, action: &str) -> Vec<Value> {
        let mut events = self.audit_log(by, org).await;
        events.retain(|e| e["action"] == action);
        events
    }

    // ---- stored files ----

    /// The objects stored in `area` (`incoming`, `files`, `quarantine`) of the node's file store.
    pub fn stored(&self, area: &str) -> Vec<PathBuf> {
        files_under(&self.data_dir.join("knowledge").join("files").join(area))
    }

    // ---- development mail ----

    /// Every mail written to `<data_dir>/mail` for `email`, oldest first.
    pub fn mail_to(&self, email: &str) -> Vec<String> {
        let dir = self.data_dir.join("mail");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .map(|e| e.expect("read the mail directory").path())
            .filter(|p| p.extension().is_some_and(|ext| ext == "eml"))
            .collect();
        // Names are UUID v7: sorting them sorts by time.
        files.sort();
        let to = format!("To: {email}");
        files
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter(|text| text.lines().any(|l| l.trim_end() == to))
            .collect()
    }

    /// The token on the line starting with `marker` in the latest such mail to `email`, waiting for
    /// the mail to be written (some are sent after the answer).
    pub async fn wait_for_mail_token(&self, email: &str, marker: &str) -> String {
        for _ in 0..2000 {
            let found = self.mail_to(email).iter().rev().find_map(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix(marker))
                    .map(|t| t.trim().to_owned())
            });
            if let Some(token) = found {
                return token;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no mail with {marker:?} reached {email}");
    }

    // ---- the CLI and the database ----

    /// Runs the `confide` binary against this server's data directory and database.
    pub async fn confide(&self, args: &[&str], stdin: Option<&str>) -> CliRun {
        let data_dir = self.data_dir.to_str().expect("UTF-8 path");
        let mut full = vec!["--data-dir", data_dir, "--database-url", &self.database_url];
        full.extend_from_slice(args);
        confide_cli(&full, stdin).await
    }

    /// A direct connection to the database, for what only an attacker or a bug would do.
    pub async fn database(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::pool::PoolOptions::<sqlx::Any>::new()
            .max_connections(1)
            .connect(&self.database_url)
            .await
            .expect("connect to the test database")
    }

    pub fn test_database(&self) -> &TestDatabase {
        &self.db
    }
}

/// Runs the `confide` binary with `args`, feeding `stdin` (closed afterwards).
pub async fn confide_cli(args: &[&str], stdin: Option<&str>) -> CliRun {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_confide"))
        .args(args)
        .env("CONFIDE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start confide");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input
            .write_all(format!("{text}\n").as_bytes())
            .await
            .expect("write to confide's stdin");
    }
    drop(input);
    let output = child.wait_with_output().await.expect("wait for confide");
    CliRun {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Polls `/healthz` until it answers 200.
pub async fn wait_for_health(client: &reqwest::Client, base: &str) {
    for _ in 0..2000 {
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await
            && response.status() == StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{base} never became healthy");
}

pub async fn read(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("read the body");
    Reply {
        status,
        headers,
        text,
    }
}

/// Every `Set-Cookie` for the session cookie.
pub fn session_set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v: &HeaderValue| v.to_str().ok())
        .filter(|v| v.starts_with(&format!("{SESSION_COOKIE}=")))
        .map(str::to_owned)
        .collect()
}

/// The value the server set for the session cookie, if it set one.
pub fn session_cookie_value(headers: &HeaderMap) -> Option<String> {
    session_set_cookies(headers).first().map(|cookie| {
        cookie
            .split(';')
            .next()
            .and_then(|pair| pair.split_once('='))
            .map(|(_, value)| value.to_owned())
            .unwrap_or_default()
    })
}

/// A unique address for a test account.
/// A clamd of the test's own that is stopped (restart it to have it answer), and its loopback
/// TCP address; `None` when the test is skipped for want of ClamAV.
#[track_caller]
pub fn stopped_clamd(
    test: &str,
) -> Option<(
    confide_security::antivirus::ClamdAddress,
    std::sync::Arc<std::sync::Mutex<confide_security::antivirus::testing::TempClamd>>,
)> {
    let mut clamd = confide_security::antivirus::testing::TempClamd::start(test, 64 * 1024 * 1024)?;
    let address = clamd.tcp();
    clamd.stop();
    Some((address, std::sync::Arc::new(std::sync::Mutex::new(clamd))))
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

pub fn email(who: &str) -> String {
    format!("{who}-{}@example.com", uuid::Uuid::now_v7().simple())
}

/// The UTC date `offset` days from today, `YYYY-MM-DD`.
pub fn utc_date(offset: i64) -> String {
    let days = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400) as i64
        + offset;
    // Civil-from-days (Howard Hinnant's algorithm), to stay free of a date dependency here.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
