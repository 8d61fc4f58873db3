//! `confide knowledge import`: a client of a running server's public API. Files are streamed as
//! multipart uploads, a URL is handed to the server to fetch, and each new source is followed
//! until it is ready or rejected, with a progress bar on a terminal and one line per state
//! change otherwise (CI logs).
//!
//! Exit codes: 0 every source is ready; 1 the server refused a file at upload (413/422) or
//! rejected it while processing, the other files still imported; 2 the import could not run
//! (bad arguments or key, an HTTP error such as 401/403/404/409/5xx, the network, a timeout).

use std::fs::File;
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use confide_domain::{BotId, OrgId, SourceId};
use http_body::{Frame, SizeHint};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use tokio::io::{AsyncRead as _, ReadBuf};

use crate::cli::{KnowledgeCommand, KnowledgeImport};

const POLL_EVERY: Duration = Duration::from_millis(250);
const REDRAW_EVERY: Duration = Duration::from_millis(100);
const KEY_FILE_MAX_BYTES: u64 = 4096;
const GROUP_OR_OTHER: u32 = 0o077;
const BAR_CELLS: u64 = 20;

pub async fn run(command: KnowledgeCommand) -> ExitCode {
    match command {
        KnowledgeCommand::Import(args) => {
            let mut progress = Progress::new(std::io::stderr().is_terminal());
            let result = import(&args, &mut progress).await;
            progress.end_line();
            match result {
                Ok(Verdict::AllReady) => ExitCode::SUCCESS,
                Ok(Verdict::SomeRefused) => ExitCode::from(1),
                Err(err) => {
                    eprintln!("error: {}", printable(&format!("{err:#}")));
                    ExitCode::from(2)
                }
            }
        }
    }
}

enum Verdict {
    AllReady,
    SomeRefused,
}

async fn import(args: &KnowledgeImport, progress: &mut Progress) -> anyhow::Result<Verdict> {
    let key = api_key(args.api_key_file.as_deref())?;
    let files = if is_url(&args.path_or_url) {
        Vec::new()
    } else {
        files_to_import(Path::new(&args.path_or_url))?
    };
    let api = Api::new(&args.server, args.org, args.bot, key)?;
    let timeout = Duration::from_secs(args.timeout);
    let mut all_ready = true;
    if is_url(&args.path_or_url) {
        let url = args.path_or_url.as_str();
        let accepted = api.import_url(url).await;
        all_ready &= settle(&api, &printable(url), accepted, timeout, progress).await?;
    } else {
        for path in files {
            let name = file_name(&path)?;
            let accepted = api.upload(&path, &name, progress).await;
            all_ready &= settle(&api, &printable(&name), accepted, timeout, progress).await?;
        }
    }
    Ok(if all_ready {
        Verdict::AllReady
    } else {
        Verdict::SomeRefused
    })
}

/// Follows an accepted source to its end and prints its summary line; `false` when the server
/// refused or rejected it.
async fn settle(
    api: &Api,
    name: &str,
    accepted: Result<Source, Failure>,
    timeout: Duration,
    progress: &mut Progress,
) -> anyhow::Result<bool> {
    let source = match accepted {
        Ok(source) => source,
        Err(Failure::Stop(err)) => return Err(err),
        Err(Failure::Refused(refusal)) => {
            let why = format!(
                " {}: {}",
                printable(&refusal.code),
                printable(&refusal.message)
            );
            progress.done(&format!("{name} refused{why}"));
            println!("refused {name}{why}");
            return Ok(false);
        }
    };
    let source = follow(api, name, source, timeout, progress).await?;
    let status = printable(&source.status);
    let outcome = source.outcome();
    progress.done(&format!("{name} {status}{outcome}"));
    println!("{status} {name}{outcome}");
    Ok(source.status == "ready")
}

/// Polls the source until it is ready or rejected, showing each state it is seen in.
async fn follow(
    api: &Api,
    name: &str,
    mut source: Source,
    timeout: Duration,
    progress: &mut Progress,
) -> anyhow::Result<Source> {
    let started = tokio::time::Instant::now();
    let mut shown: Option<String> = None;
    loop {
        if source.is_settled() {
            return Ok(source);
        }
        let state = source.state();
        let changed = shown.as_deref() != Some(state.as_str());
        progress.state(name, &state, changed, started.elapsed());
        shown = Some(state);
        if started.elapsed() >= timeout {
            bail!(
                "timed_out: {name} is still {} after {} s (--timeout)",
                source.state(),
                timeout.as_secs()
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
        source = match api.source(source.id).await {
            Ok(source) => source,
            Err(Failure::Stop(err) | Failure::Refused(HttpRefusal { err, .. })) => return Err(err),
        };
    }
}

// ---- the API ----

/// A source as the server shows it; the status is kept as text so states added later still show.
#[derive(Debug, Deserialize)]
struct Source {
    id: SourceId,
    status: String,
    reason: Option<String>,
    detail: Option<String>,
    #[serde(default)]
    chunks: i64,
}

impl Source {
    fn is_settled(&self) -> bool {
        self.status == "ready" || self.status == "rejected"
    }

    /// `pending_scan (scanner_unavailable)`, `extracting`.
    fn state(&self) -> String {
        match &self.reason {
            Some(reason) => format!("{} ({})", printable(&self.status), printable(reason)),
            None => printable(&self.status),
        }
    }

    /// What follows the name in the summary: ` 12 passages`, ` no_text: detail`.
    fn outcome(&self) -> String {
        if self.status == "ready" {
            let unit = if self.chunks == 1 {
                "passage"
            } else {
                "passages"
            };
            return format!(" {} {unit}", self.chunks);
        }
        let mut text = String::new();
        if let Some(reason) = &self.reason {
            text.push(' ');
            text.push_str(&printable(reason));
        }
        if let Some(detail) = &self.detail {
            text.push_str(": ");
            text.push_str(&printable(&detail.chars().take(300).collect::<String>()));
        }
        text
    }
}

/// An error answer: `{"error": {"code", "message", "id"?}}`.
#[derive(Debug)]
struct HttpError {
    status: StatusCode,
    code: String,
    message: String,
}

impl HttpError {
    fn from_body(status: StatusCode, body: &str) -> HttpError {
        #[derive(Deserialize)]
        struct Body {
            error: Detail,
        }
        #[derive(Deserialize)]
        struct Detail {
            code: String,
            message: String,
            id: Option<String>,
        }
        match serde_json::from_str::<Body>(body) {
            Ok(Body { error }) => HttpError {
                status,
                code: error.code,
                message: match error.id {
                    Some(id) => format!("{} (error id {id})", error.message),
                    None => error.message,
                },
            },
            Err(_) => HttpError {
                status,
                code: "http_error".to_owned(),
                message: status
                    .canonical_reason()
                    .unwrap_or("unexpected answer")
                    .to_owned(),
            },
        }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (HTTP {})",
            self.code,
            self.message,
            self.status.as_u16()
        )
    }
}

impl std::error::Error for HttpError {}

/// A file the server would not take (413 or 422 at upload): reported, and the next file goes.
struct HttpRefusal {
    code: String,
    message: String,
    err: anyhow::Error,
}

enum Failure {
    Refused(HttpRefusal),
    /// Nothing more can be imported: exit 2.
    Stop(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure::Stop(err)
    }
}

impl From<reqwest::Error> for Failure {
    fn from(err: reqwest::Error) -> Self {
        Failure::Stop(anyhow::Error::new(err).context("talking to the server"))
    }
}

struct Api {
    client: reqwest::Client,
    /// `https://host/api/v1/orgs/{org}/bots/{bot}/knowledge`
    knowledge: String,
    key: SecretString,
}

impl Api {
    fn new(server: &str, org: OrgId, bot: BotId, key: SecretString) -> anyhow::Result<Api> {
        let url = reqwest::Url::parse(server)
            .with_context(|| format!("--server {server:?} is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("--server must be an http:// or https:// URL");
        }
        if !url.username().is_empty() || url.password().is_some() {
            bail!("--server must not carry credentials; the API key is sent as a bearer token");
        }
        if url.query().is_some() || url.fragment().is_some() {
            bail!("--server must be the server's base URL, without a query or fragment");
        }
        if url.scheme() == "http" && !is_loopback(&url) {
            eprintln!(
                "warning: the API key goes to {} unencrypted; use https://",
                printable(url.host_str().unwrap_or_default())
            );
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("confide-cli/", env!("CARGO_PKG_VERSION")))
            // An API answers where it is asked; a redirect would only move the key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        let base = url.as_str().trim_end_matches('/');
        Ok(Api {
            client,
            knowledge: format!("{base}/api/v1/orgs/{org}/bots/{bot}/knowledge"),
            key,
        })
    }

    fn post(&self, rest: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{rest}", self.knowledge))
            .bearer_auth(self.key.expose_secret())
    }

    /// Streams the file as the form's `file` part, redrawing the bar as it goes.
    async fn upload(
        &self,
        path: &Path,
        name: &str,
        progress: &mut Progress,
    ) -> Result<Source, Failure> {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let size = file
            .metadata()
            .await
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        let sent = Arc::new(AtomicU64::new(0));
        let body = reqwest::Body::wrap(CountedFile::new(file, size, Arc::clone(&sent)));
        let part = Part::stream_with_length(body, size).file_name(name.to_owned());
        let request = self
            .post("/files")
            .multipart(Form::new().part("file", part))
            .send();
        let shown = printable(name);
        progress.upload_started(&shown, size);
        tokio::pin!(request);
        let mut redraw = tokio::time::interval(REDRAW_EVERY);
        let response = loop {
            tokio::select! {
                response = &mut request => break response,
                _ = redraw.tick() => progress.uploading(&shown, sent.load(Ordering::Relaxed), size),
            }
        };
        progress.uploading(&shown, sent.load(Ordering::Relaxed), size);
        answer(response?, true).await
    }

    async fn import_url(&self, url: &str) -> Result<Source, Failure> {
        let response = self
            .post("/imports")
            .timeout(Duration::from_secs(60))
            .json(&serde_json::json!({ "url": url }))
            .send()
            .await?;
        answer(response, true).await
    }

    async fn source(&self, id: SourceId) -> Result<Source, Failure> {
        let response = self
            .client
            .get(format!("{}/sources/{id}", self.knowledge))
            .bearer_auth(self.key.expose_secret())
            .timeout(Duration::from_secs(30))
            .send()
            .await?;
        answer(response, false).await
    }
}

/// The source in a success answer; an error answer as the server's code and message. With
/// `refusable`, a 413 or 422 is about the file itself.
async fn answer(response: reqwest::Response, refusable: bool) -> Result<Source, Failure> {
    let status = response.status();
    if status.is_success() {
        return response
            .json::<Source>()
            .await
            .context("reading the server's answer")
            .map_err(Failure::Stop);
    }
    let body = response.text().await.unwrap_or_default();
    let error = HttpError::from_body(status, &body);
    let about_the_file = matches!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNPROCESSABLE_ENTITY
    );
    if refusable && about_the_file {
        Err(Failure::Refused(HttpRefusal {
            code: error.code.clone(),
            message: error.message.clone(),
            err: error.into(),
        }))
    } else {
        Err(Failure::Stop(error.into()))
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// A file as a request body that counts the bytes it hands over, so the bar shows the upload.
struct CountedFile {
    file: tokio::fs::File,
    left: u64,
    sent: Arc<AtomicU64>,
    buf: Box<[u8]>,
}

impl CountedFile {
    fn new(file: tokio::fs::File, size: u64, sent: Arc<AtomicU64>) -> CountedFile {
        CountedFile {
            file,
            left: size,
            sent,
            buf: vec![0; 64 * 1024].into_boxed_slice(),
        }
    }
}

impl http_body::Body for CountedFile {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.left)
            .unwrap_or(usize::MAX)
            .min(this.buf.len());
        let mut read = ReadBuf::new(&mut this.buf[..want]);
        match Pin::new(&mut this.file).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(err)) => Poll::Ready(Some(Err(err))),
            Poll::Ready(Ok(())) => {
                let chunk = read.filled();
                if chunk.is_empty() {
                    // The length was announced in the form; a shorter file cannot be sent.
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file became shorter while it was sent",
                    ))));
                }
                let n = chunk.len() as u64;
                this.left -= n;
                this.sent.fetch_add(n, Ordering::Relaxed);
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(chunk)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

// ---- what to import, and with which key ----

fn is_url(text: &str) -> bool {
    let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// The file itself, or a directory's files: not hidden ones, not subdirectories, by name.
fn files_to_import(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !meta.is_dir() {
        bail!("{} is neither a file nor a directory", path.display());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
        let entry = entry.with_context(|| format!("listing {}", path.display()))?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        let path = entry.path();
        if !hidden && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        bail!("{} has no files to import", path.display());
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

fn file_name(path: &Path) -> anyhow::Result<String> {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .with_context(|| format!("{} has no file name", path.display()))
}

/// The key from CONFIDE_API_KEY or the file named by --api-key-file, never from argv.
fn api_key(file: Option<&Path>) -> anyhow::Result<SecretString> {
    let from_env = std::env::var("CONFIDE_API_KEY").ok().map(Zeroizing::new);
    let text = match (from_env, file) {
        (Some(_), Some(_)) => bail!("set CONFIDE_API_KEY or pass --api-key-file, not both"),
        (Some(key), None) => key,
        (None, Some(path)) => read_key_file(path)?,
        (None, None) => bail!("no API key: set CONFIDE_API_KEY or pass --api-key-file"),
    };
    let key = text.trim();
    if key.is_empty() {
        bail!("the API key is empty");
    }
    Ok(SecretString::from(key.to_owned()))
}

/// Like the server's own secret files: refused when group or others may read or change it.
fn read_key_file(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let file =
        File::open(path).with_context(|| format!("opening the API key file {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading the API key file {}", path.display()))?;
    if !meta.is_file() {
        bail!("the API key file {} is not a file", path.display());
    }
    let mode = meta.permissions().mode();
    if mode & GROUP_OR_OTHER != 0 {
        bail!(
            "the API key file {} is open to group or others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    if meta.len() > KEY_FILE_MAX_BYTES {
        bail!(
            "the API key file {} is larger than {KEY_FILE_MAX_BYTES} bytes",
            path.display()
        );
    }
    let mut text = Zeroizing::new(String::new());
    file.take(KEY_FILE_MAX_BYTES)
        .read_to_string(&mut text)
        .with_context(|| format!("reading the API key file {}", path.display()))?;
    Ok(text)
}

// ---- progress ----

/// On a terminal one line redrawn with `\r`; otherwise one line per state change.
struct Progress {
    tty: bool,
    /// A line is drawn and not yet ended.
    drawn: bool,
}

impl Progress {
    fn new(tty: bool) -> Progress {
        Progress { tty, drawn: false }
    }

    fn draw(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
        self.drawn = true;
    }

    fn upload_started(&mut self, name: &str, size: u64) {
        if self.tty {
            self.uploading(name, 0, size);
        } else {
            eprintln!("{name} uploading {}", human_size(size));
        }
    }

    fn uploading(&mut self, name: &str, sent: u64, size: u64) {
        if self.tty {
            self.draw(&upload_bar(name, sent, size));
        }
    }

    fn state(&mut self, name: &str, state: &str, changed: bool, waited: Duration) {
        if self.tty {
            self.draw(&format!("{name} {state}… {} s", waited.as_secs()));
        } else if changed {
            eprintln!("{name} {state}");
        }
    }

    /// The source's last line: it stays on screen.
    fn done(&mut self, line: &str) {
        if self.tty {
            self.draw(line);
        } else {
            eprintln!("{line}");
        }
        self.end_line();
    }

    fn end_line(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

/// `[#########...........] 45% report.pdf uploading 1.0/2.3 MB`
fn upload_bar(name: &str, sent: u64, size: u64) -> String {
    let sent = sent.min(size);
    let percent = sent.saturating_mul(100).checked_div(size).unwrap_or(100);
    let filled = percent * BAR_CELLS / 100;
    let bar: String = (0..BAR_CELLS)
        .map(|cell| if cell < filled { '#' } else { '.' })
        .collect();
    let (unit, divisor) = size_unit(size);
    let amount = if divisor == 1 {
        format!("{sent}/{size} {unit}")
    } else {
        format!(
            "{:.1}/{:.1} {unit}",
            sent as f64 / divisor as f64,
            size as f64 / divisor as f64
        )
    };
    format!("[{bar}] {percent}% {name} uploading {amount}")
}

fn size_unit(size: u64) -> (&'static str, u64) {
    match size {
        0..1_000 => ("B", 1),
        1_000..1_000_000 => ("kB", 1_000),
        1_000_000..1_000_000_000 => ("MB", 1_000_000),
        _ => ("GB", 1_000_000_000),
    }
}

fn human_size(size: u64) -> String {
    match size_unit(size) {
        (unit, 1) => format!("{size} {unit}"),
        (unit, divisor) => format!("{:.1} {unit}", size as f64 / divisor as f64),
    }
}

/// Names and messages as the terminal should show them: control characters (an escape
/// sequence in a file name or an answer) and bidirectional overrides become `?`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || bidi { '?' } else { c }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_shows_how_much_of_the_file_is_sent() {
        assert_eq!(
            upload_bar("report.pdf", 1_200_000, 2_300_000),
            "[##########..........] 52% report.pdf uploading 1.2/2.3 MB"
        );
        assert_eq!(
            upload_bar("a.txt", 29, 29),
            "[####################] 100% a.txt uploading 29/29 B"
        );
        assert_eq!(
            upload_bar("empty.txt", 0, 0),
            "[####################] 100% empty.txt uploading 0/0 B"
        );
        assert_eq!(human_size(1_500), "1.5 kB");
    }

    #[test]
    fn a_file_name_cannot_write_to_the_terminal() {
        assert_eq!(printable("a\x1b[2Jb\r\n.txt"), "a?[2Jb??.txt");
        assert_eq!(printable("evil\u{202e}txt.exe"), "evil?txt.exe");
        assert_eq!(printable("Ünïcode résumé.pdf"), "Ünïcode résumé.pdf");
    }

    #[test]
    fn urls_are_told_apart_from_paths() {
        assert!(is_url("https://example.com/page"));
        assert!(is_url("HTTP://example.com"));
        assert!(!is_url("http"));
        assert!(!is_url("./https:/x"));
    }
}
