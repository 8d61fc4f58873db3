//! A client for the ClamAV daemon (clamd): files are streamed to it with `INSTREAM` over its
//! unix socket or TCP, and it answers with a [`Verdict`].
//!
//! The protocol: `zINSTREAM\0`, then the body in chunks, each prefixed by its length as four
//! big-endian bytes, then a zero-length chunk; the reply (ended by `\0`) is `stream: OK`,
//! `stream: <signature> FOUND`, or an error such as `INSTREAM size limit exceeded. ERROR`.
//! `zPING\0` is answered with `PONG`.
//!
//! Only those two replies are verdicts; everything else is an error, so nothing unexpected can
//! pass for clean. The errors say whether to wait or to give up ([`ScanError::is_unavailable`]):
//! a scanner that cannot be reached (refused, timed out, gone mid-scan) means the file waits and
//! is scanned again later, never processed unscanned; a scan that failed (the file is over
//! clamd's `StreamMaxLength`, clamd reported an error, its reply made no sense) will fail again.
//!
//! clamd's protocol has no authentication or encryption: reach it over a unix socket or
//! loopback (or a private network segment nobody else shares).

#[cfg(all(feature = "testing", unix))]
pub mod testing;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddress {
    /// A unix socket (`LocalSocket` in clamd.conf).
    Unix(PathBuf),
    /// A TCP address (`TCPSocket` and `TCPAddr`), usually `127.0.0.1:3310`.
    Tcp(SocketAddr),
}

impl FromStr for ClamdAddress {
    type Err = String;

    /// `unix:/run/clamav/clamd.ctl` or an absolute path; `tcp://127.0.0.1:3310` or
    /// `127.0.0.1:3310`. No host names: clamd is local.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            return Ok(ClamdAddress::Unix(PathBuf::from(path)));
        }
        if text.starts_with('/') {
            return Ok(ClamdAddress::Unix(PathBuf::from(text)));
        }
        let address = text.strip_prefix("tcp://").unwrap_or(text);
        address.parse().map(ClamdAddress::Tcp).map_err(|_| {
            format!(
                "{text:?} is not a clamd address: use unix:/path/to/clamd.ctl or tcp://127.0.0.1:3310"
            )
        })
    }
}

impl fmt::Display for ClamdAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClamdAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            ClamdAddress::Tcp(address) => write!(f, "tcp://{address}"),
        }
    }
}

/// How to reach clamd and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClamdConfig {
    pub address: ClamdAddress,
    /// Longest wait for a connection (default 2 s).
    pub connect_timeout: Duration,
    /// Longest wait for one write to clamd or one read of the body (default 10 s).
    pub io_timeout: Duration,
    /// Longest wait for the verdict once the body is sent, which includes scanning it
    /// (default 60 s).
    pub reply_timeout: Duration,
    /// Largest chunk sent at once (default 64 KiB).
    pub chunk_bytes: usize,
}

impl ClamdConfig {
    /// The defaults for `address`.
    pub fn new(address: ClamdAddress) -> Self {
        ClamdConfig {
            address,
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(60),
            chunk_bytes: 64 * 1024,
        }
    }
}

/// What clamd found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    Infected {
        /// The name of the signature that matched, as clamd reports it.
        signature: String,
    },
}

/// The step of a scan during which clamd could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Send,
    Reply,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connecting",
            Stage::Send => "sending",
            Stage::Reply => "waiting for the reply",
        })
    }
}

/// Why a scan gave no verdict.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// clamd cannot be reached, or went away or stalled before answering: keep the file
    /// waiting (`pending_scan`) and try again later.
    #[error("the virus scanner is unavailable ({stage}): {source}")]
    Unavailable {
        stage: Stage,
        #[source]
        source: io::Error,
    },
    /// The body is over clamd's `StreamMaxLength`.
    #[error("the file is larger than the virus scanner accepts")]
    SizeLimitExceeded,
    /// clamd answered with an error of its own.
    #[error("the virus scanner reported an error: {0}")]
    Scanner(String),
    /// clamd's answer is not one this client knows; never taken for clean.
    #[error("the virus scanner's reply was not understood: {0:?}")]
    UnexpectedReply(String),
    /// Reading the body to scan failed (the caller's reader, not clamd).
    #[error("reading the file to scan failed: {0}")]
    Body(#[source] io::Error),
}

impl ScanError {
    /// Whether the scanner could not be reached: wait and retry, rather than give up.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ScanError::Unavailable { .. })
    }

    /// Stable snake_case code for source states and logs.
    pub fn code(&self) -> &'static str {
        match self {
            ScanError::Unavailable { .. } => "scanner_unavailable",
            ScanError::SizeLimitExceeded => "scan_size_limit",
            ScanError::Scanner(_) => "scan_error",
            ScanError::UnexpectedReply(_) => "scan_unexpected_reply",
            ScanError::Body(_) => "scan_body_unreadable",
        }
    }
}

/// The longest reply read; a verdict is a few dozen bytes.
const MAX_REPLY_BYTES: usize = 4096;

/// A clamd client; cheap to clone, one connection per scan.
#[derive(Debug, Clone)]
pub struct ClamdClient {
    config: ClamdConfig,
}

impl ClamdClient {
    pub fn new(config: ClamdConfig) -> Self {
        ClamdClient { config }
    }

    pub fn config(&self) -> &ClamdConfig {
        &self.config
    }

    /// Whether clamd answers `PING` with `PONG`.
    pub async fn ping(&self) -> Result<(), ScanError> {
        match &self.config.address {
            ClamdAddress::Tcp(address) => {
                let stream = self.connect_tcp(*address).await?;
                self.ping_over(stream).await
            }
            ClamdAddress::Unix(path) => {
                let stream = self.connect_unix(path).await?;
                self.ping_over(stream).await
            }
        }
    }

    /// Scans `body`, read to its end in chunks of at most `chunk_bytes`.
    pub async fn scan<R: AsyncRead + Unpin>(&self, body: R) -> Result<Verdict, ScanError> {
        match &self.config.address {
            ClamdAddress::Tcp(address) => {
                let stream = self.connect_tcp(*address).await?;
                self.scan_over(stream, body).await
            }
            ClamdAddress::Unix(path) => {
                let stream = self.connect_unix(path).await?;
                self.scan_over(stream, body).await
            }
        }
    }

    /// Scans a body held in memory.
    pub async fn scan_bytes(&self, body: &[u8]) -> Result<Verdict, ScanError> {
        self.scan(body).await
    }

    async fn connect_tcp(&self, address: SocketAddr) -> Result<TcpStream, ScanError> {
        let stream = timeout(self.config.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| timed_out(Stage::Connect))?
            .map_err(|source| unavailable(Stage::Connect, source))?;
        // Chunk headers are small writes; do not wait to coalesce them.
        stream
            .set_nodelay(true)
            .map_err(|source| unavailable(Stage::Connect, source))?;
        Ok(stream)
    }

    #[cfg(unix)]
    async fn connect_unix(
        &self,
        path: &std::path::Path,
    ) -> Result<tokio::net::UnixStream, ScanError> {
        timeout(
            self.config.connect_timeout,
            tokio::net::UnixStream::connect(path),
        )
        .await
        .map_err(|_| timed_out(Stage::Connect))?
        .map_err(|source| unavailable(Stage::Connect, source))
    }

    #[cfg(not(unix))]
    async fn connect_unix(&self, _path: &std::path::Path) -> Result<TcpStream, ScanError> {
        Err(unavailable(
            Stage::Connect,
            io::Error::new(io::ErrorKind::Unsupported, "no unix sockets here"),
        ))
    }

    async fn ping_over<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
    ) -> Result<(), ScanError> {
        let io_timeout = self.config.io_timeout;
        timeout(io_timeout, stream.write_all(b"zPING\0"))
            .await
            .map_err(|_| timed_out(Stage::Send))?
            .map_err(|source| unavailable(Stage::Send, source))?;
        let reply = timeout(io_timeout, read_reply(&mut stream))
            .await
            .map_err(|_| timed_out(Stage::Reply))??;
        match reply {
            Reply::Complete(reply) if reply == b"PONG" => Ok(()),
            Reply::Complete(reply) => Err(ScanError::UnexpectedReply(reply_text(&reply))),
            Reply::Cut(reply) => Err(cut_short(&reply, Stage::Reply)),
        }
    }

    async fn scan_over<S, R>(&self, stream: S, body: R) -> Result<Verdict, ScanError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        R: AsyncRead + Unpin,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        // The reply is read while the body is sent: clamd answers early when it refuses the
        // stream (over its size limit) and may close the connection before reading the rest.
        let reply = read_reply(&mut reader);
        tokio::pin!(reply);
        let sent = {
            let send = self.send_body(&mut writer, body);
            tokio::pin!(send);
            tokio::select! {
                biased;
                early = &mut reply => return Err(early?.before_the_end()),
                sent = &mut send => sent,
            }
        };
        let wait = self.config.reply_timeout;
        match sent {
            Ok(()) => timeout(wait, &mut reply)
                .await
                .map_err(|_| timed_out(Stage::Reply))??
                .verdict(Stage::Reply),
            Err(Sending::Body(error)) => Err(ScanError::Body(error)),
            // The write failed: clamd may have said why before closing.
            Err(Sending::Clamd(error)) => match timeout(self.config.io_timeout, &mut reply).await {
                Ok(Ok(reply @ Reply::Complete(_))) => Err(reply.before_the_end()),
                _ => Err(error),
            },
        }
    }

    async fn send_body<W, R>(&self, writer: &mut W, mut body: R) -> Result<(), Sending>
    where
        W: AsyncWrite + Unpin,
        R: AsyncRead + Unpin,
    {
        let io_timeout = self.config.io_timeout;
        let mut chunk = vec![0u8; self.config.chunk_bytes.clamp(1, 1 << 24)];
        send_all(writer, b"zINSTREAM\0", io_timeout).await?;
        loop {
            let read = timeout(io_timeout, body.read(&mut chunk))
                .await
                .map_err(|_| {
                    Sending::Body(io::Error::new(io::ErrorKind::TimedOut, "the body stalled"))
                })?
                .map_err(Sending::Body)?;
            if read == 0 {
                break;
            }
            let length = u32::try_from(read).map_err(|_| {
                Sending::Body(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "chunk too large",
                ))
            })?;
            send_all(writer, &length.to_be_bytes(), io_timeout).await?;
            send_all(writer, &chunk[..read], io_timeout).await?;
        }
        send_all(writer, &[0, 0, 0, 0], io_timeout).await?;
        timeout(io_timeout, writer.flush())
            .await
            .map_err(|_| Sending::Clamd(timed_out(Stage::Send)))?
            .map_err(|source| Sending::Clamd(unavailable(Stage::Send, source)))
    }
}

/// Why sending stopped: the body could not be read, or clamd could not be written to.
enum Sending {
    Body(io::Error),
    Clamd(ScanError),
}

async fn send_all<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    io_timeout: Duration,
) -> Result<(), Sending> {
    timeout(io_timeout, writer.write_all(bytes))
        .await
        .map_err(|_| Sending::Clamd(timed_out(Stage::Send)))?
        .map_err(|source| Sending::Clamd(unavailable(Stage::Send, source)))
}

/// What came back from clamd.
enum Reply {
    /// A reply ended by its `\0` (without it).
    Complete(Vec<u8>),
    /// The connection ended first, after these bytes (none: clamd closed without a word).
    Cut(Vec<u8>),
}

impl Reply {
    /// The verdict or error this reply says; only a complete reply can be a verdict, so a
    /// reply cut short (`stream: OK` of `stream: OKAY.Sig FOUND`) cannot pass for clean.
    fn verdict(&self, stage: Stage) -> Result<Verdict, ScanError> {
        match self {
            Reply::Complete(reply) => parse_reply(reply),
            Reply::Cut(reply) => Err(cut_short(reply, stage)),
        }
    }

    /// What a reply that came before the whole body was sent means: an error clamd refused
    /// the stream with, or nonsense (a verdict cannot be about a file not yet sent).
    fn before_the_end(&self) -> ScanError {
        match self.verdict(Stage::Send) {
            Ok(verdict) => {
                ScanError::UnexpectedReply(format!("{verdict:?} before the end of the stream"))
            }
            Err(error) => error,
        }
    }
}

/// The error for a connection that ended before a reply's `\0`.
fn cut_short(reply: &[u8], stage: Stage) -> ScanError {
    if reply.is_empty() {
        unavailable(
            stage,
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "clamd closed the connection without a reply",
            ),
        )
    } else {
        ScanError::UnexpectedReply(format!("{} (cut short)", reply_text(reply)))
    }
}

/// Reads a reply up to its `\0` or the end of the connection.
async fn read_reply<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Reply, ScanError> {
    let mut reply = Vec::new();
    let mut buffer = [0u8; 256];
    loop {
        let read = match reader.read(&mut buffer).await {
            Ok(read) => read,
            Err(source) if reply.is_empty() => return Err(unavailable(Stage::Reply, source)),
            Err(_) => return Ok(Reply::Cut(reply)),
        };
        if read == 0 {
            return Ok(Reply::Cut(reply));
        }
        reply.extend_from_slice(&buffer[..read]);
        if let Some(end) = reply.iter().position(|b| *b == 0) {
            reply.truncate(end);
            return Ok(Reply::Complete(reply));
        }
        if reply.len() > MAX_REPLY_BYTES {
            return Err(ScanError::UnexpectedReply(format!(
                "{}… (longer than {MAX_REPLY_BYTES} bytes)",
                reply_text(&reply[..64])
            )));
        }
    }
}

/// The reply as text, without the line end non-`z` commands would add.
fn reply_text(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply).trim_end().to_owned()
}

/// The verdict or error a complete `INSTREAM` reply says.
fn parse_reply(reply: &[u8]) -> Result<Verdict, ScanError> {
    let text = reply_text(reply);
    if text == "stream: OK" {
        return Ok(Verdict::Clean);
    }
    if let Some(signature) = text
        .strip_prefix("stream: ")
        .and_then(|rest| rest.strip_suffix(" FOUND"))
    {
        let signature = signature.trim();
        if !signature.is_empty() && !signature.chars().any(char::is_control) {
            return Ok(Verdict::Infected {
                signature: signature.to_owned(),
            });
        }
    }
    if let Some(message) = text.strip_suffix(" ERROR") {
        if message.contains("size limit exceeded") {
            return Err(ScanError::SizeLimitExceeded);
        }
        let message = message.strip_prefix("stream: ").unwrap_or(message);
        return Err(ScanError::Scanner(message.trim().to_owned()));
    }
    Err(ScanError::UnexpectedReply(text))
}

fn unavailable(stage: Stage, source: io::Error) -> ScanError {
    ScanError::Unavailable { stage, source }
}

fn timed_out(stage: Stage) -> ScanError {
    unavailable(
        stage,
        io::Error::new(io::ErrorKind::TimedOut, "clamd did not answer in time"),
    )
}

#[cfg(test)]
mod tests;
