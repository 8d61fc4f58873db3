//! A minimal Pusher protocol 7 client, and what the scenarios share: the clock, source
//! addresses, the reader tasks that hold connections open, and the server's /proc figures.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = WebSocketStream<TcpStream>;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Starts the clock that embedded send timestamps are measured on.
pub fn init_clock() {
    EPOCH.get_or_init(Instant::now);
}

/// Microseconds since the generator started: sender and receivers share this clock, so
/// publish-to-receive latency needs no clock synchronisation.
pub fn now_us() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// An instant on the [`now_us`] clock.
pub fn instant_us(at: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    micros(at.saturating_duration_since(epoch))
}

/// Microseconds in a duration, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `30s`, `500ms`, `2m`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (try 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit in {text:?} (ms, s or m)")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("duration out of range: {text:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The server's socket address and HTTP base URL from `ws://`, `http://` or a bare `host:port`.
pub struct Target {
    pub addr: SocketAddr,
    pub http_base: String,
}

impl Target {
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let with_scheme = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let parsed = reqwest::Url::parse(&with_scheme).with_context(|| format!("url {url:?}"))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| anyhow!("no host in {url:?}"))?;
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| anyhow!("no port in {url:?}"))?;
        let addr = (host, port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {host}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| anyhow!("{host} has no IPv4 address"))?;
        Ok(Target {
            addr,
            http_base: format!("http://{addr}"),
        })
    }
}

/// Which loopback address connection `i` is bound to: `per_source` connections per address from
/// `base` upwards. The hub limits connections per client address (200 by default, not
/// configurable from the CLI), and on Linux every 127.0.0.0/8 address is a distinct local address.
#[derive(Clone, Copy, Debug)]
pub struct Sources {
    base: Ipv4Addr,
    per_source: usize,
}

impl Sources {
    pub fn new(base: Ipv4Addr, per_source: usize) -> Sources {
        Sources {
            base,
            per_source: per_source.max(1),
        }
    }

    pub fn for_index(&self, i: usize) -> IpAddr {
        let offset = u32::try_from(i / self.per_source).unwrap_or(u32::MAX);
        IpAddr::V4(Ipv4Addr::from(u32::from(self.base).saturating_add(offset)))
    }

    /// How many distinct addresses `n` connections use.
    pub fn used_by(&self, n: usize) -> usize {
        n.div_ceil(self.per_source)
    }
}

/// The server refused the connection or subscription with a Pusher error code.
#[derive(Debug)]
pub struct Refused {
    pub code: u16,
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused with {}: {}", self.code, self.message)
    }
}

impl std::error::Error for Refused {}

/// A frame as the server sends it; `data` is usually a JSON string holding JSON.
#[derive(Debug, Deserialize)]
pub struct Frame {
    pub event: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub data: Value,
}

impl Frame {
    /// `data` decoded one level when it is a string of JSON.
    pub fn inner_data(&self) -> Option<Value> {
        match &self.data {
            Value::String(s) => serde_json::from_str(s).ok(),
            other => Some(other.clone()),
        }
    }
}

fn refused_from(frame: &Frame) -> Refused {
    let data = frame.inner_data().unwrap_or(Value::Null);
    Refused {
        code: data
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(0),
        message: data
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    }
}

/// The next protocol frame, answering `pusher:ping` on the way; a `pusher:error` is an error.
async fn next_frame(ws: &mut Ws) -> anyhow::Result<Frame> {
    loop {
        let message = ws
            .next()
            .await
            .ok_or_else(|| anyhow!("connection closed"))??;
        match message {
            Message::Text(text) => {
                let frame: Frame = serde_json::from_str(text.as_str())
                    .with_context(|| format!("bad frame {}", text.as_str()))?;
                match frame.event.as_str() {
                    "pusher:error" => return Err(refused_from(&frame).into()),
                    "pusher:ping" => ws.send(Message::text(PONG)).await?,
                    _ => return Ok(frame),
                }
            }
            Message::Close(close) => {
                let code = close.as_ref().map_or(1005, |c| u16::from(c.code));
                return Err(Refused {
                    code,
                    message: close.map(|c| c.reason.to_string()).unwrap_or_default(),
                }
                .into());
            }
            _ => {}
        }
    }
}

const PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

/// Opens a WebSocket to `/app/{key}` from `source` and waits for `connection_established`;
/// answers the socket and its `socket_id`.
pub async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    key: &str,
) -> anyhow::Result<(Ws, String)> {
    let socket = TcpSocket::new_v4()?;
    if let Some(source) = source {
        socket
            .bind(SocketAddr::new(source, 0))
            .with_context(|| format!("binding {source}"))?;
    }
    let stream = socket.connect(addr).await.context("connecting")?;
    stream.set_nodelay(true)?;
    let url =
        format!("ws://{addr}/app/{key}?protocol=7&client=realtime-load&version=0.1.0&flash=false");
    // Small buffers: the generator holds thousands of sockets, and frames here are small.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .context("WebSocket handshake")?;
    let frame = next_frame(&mut ws).await?;
    if frame.event != "pusher:connection_established" {
        bail!("expected connection_established, got {}", frame.event);
    }
    let socket_id = frame
        .inner_data()
        .and_then(|d| {
            d.get("socket_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .ok_or_else(|| anyhow!("connection_established without socket_id"))?;
    Ok((ws, socket_id))
}

/// Subscribes to `channel` with `auth` and waits for `subscription_succeeded`.
pub async fn subscribe(ws: &mut Ws, channel: &str, auth: &str) -> anyhow::Result<()> {
    let frame = json!({
        "event": "pusher:subscribe",
        "data": { "channel": channel, "auth": auth },
    });
    ws.send(Message::text(frame.to_string())).await?;
    loop {
        let frame = next_frame(ws).await?;
        match frame.event.as_str() {
            "pusher_internal:subscription_succeeded"
                if frame.channel.as_deref() == Some(channel) =>
            {
                return Ok(());
            }
            "pusher:subscription_error" => {
                let data = frame.inner_data().unwrap_or(Value::Null);
                return Err(Refused {
                    code: data
                        .get("status")
                        .and_then(Value::as_u64)
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or(0),
                    message: format!("subscription_error {data}"),
                }
                .into());
            }
            _ => {}
        }
    }
}

/// The reader tasks holding connections open: they answer pings, hand every other frame to the
/// scenario, and remember how connections ended that the generator did not end itself.
pub struct Readers {
    stop: watch::Sender<bool>,
    live: AtomicUsize,
    endings: Mutex<BTreeMap<String, usize>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Readers {
    pub fn new() -> Arc<Readers> {
        Arc::new(Readers {
            stop: watch::channel(false).0,
            live: AtomicUsize::new(0),
            endings: Mutex::new(BTreeMap::new()),
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// Connections still open.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// How connections ended unasked, by reason.
    pub fn endings(&self) -> BTreeMap<String, usize> {
        self.endings.lock().map(|e| e.clone()).unwrap_or_default()
    }

    fn ended(&self, reason: String) {
        if let Ok(mut endings) = self.endings.lock() {
            *endings.entry(reason).or_default() += 1;
        }
    }

    /// Reads `ws` until told to stop; `on_frame` gets each frame with the instant it was read.
    pub fn spawn<F>(self: &Arc<Self>, mut ws: Ws, mut on_frame: F)
    where
        F: FnMut(&Frame, Instant) + Send + 'static,
    {
        let readers = Arc::clone(self);
        let mut stop = self.stop.subscribe();
        readers.live.fetch_add(1, Ordering::AcqRel);
        let task = tokio::spawn(async move {
            let ending = loop {
                tokio::select! {
                    biased;
                    message = ws.next() => {
                        let at = Instant::now();
                        match message {
                            Some(Ok(Message::Text(text))) => {
                                let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
                                    continue;
                                };
                                match frame.event.as_str() {
                                    "pusher:ping" => {
                                        if ws.send(Message::text(PONG)).await.is_err() {
                                            break Some("write error".to_owned());
                                        }
                                    }
                                    "pusher:error" => {
                                        let refused = refused_from(&frame);
                                        readers.ended(format!("pusher:error {}", refused.code));
                                    }
                                    _ => on_frame(&frame, at),
                                }
                            }
                            Some(Ok(Message::Close(close))) => {
                                let code = close.as_ref().map_or(1005, |c| u16::from(c.code));
                                break Some(format!("closed by server ({code})"));
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => break Some(format!("read error: {e}")),
                            None => break Some("connection reset".to_owned()),
                        }
                    }
                    _ = stop.changed() => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                        break None;
                    }
                }
            };
            readers.live.fetch_sub(1, Ordering::AcqRel);
            if let Some(reason) = ending {
                readers.ended(reason);
            }
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }

    /// Closes every connection and waits (at most `limit`) for the readers to finish.
    pub async fn shutdown(&self, limit: Duration) {
        let _ = self.stop.send(true);
        let tasks = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        let _ = tokio::time::timeout(limit, async {
            for task in tasks {
                let _ = task.await;
            }
        })
        .await;
    }
}

/// Outcome of opening a batch of connections.
#[derive(Debug, Default, serde::Serialize)]
pub struct OpenReport {
    pub opened: usize,
    /// Refusals by Pusher close/error code (4100: over capacity, including the per-address limit).
    pub refused: BTreeMap<u16, usize>,
    pub failed: usize,
    pub first_error: Option<String>,
    pub seconds: f64,
}

impl OpenReport {
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.opened as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Runs `open(i)` for every `i` in `range`, `concurrency` at a time.
pub async fn open_many<F, Fut>(
    range: std::ops::Range<usize>,
    concurrency: usize,
    open: F,
) -> OpenReport
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let mut report = OpenReport::default();
    let mut results = futures_util::stream::iter(range.map(|i| {
        let attempt = open(i);
        async move {
            tokio::time::timeout(Duration::from_secs(30), attempt)
                .await
                .unwrap_or_else(|_| Err(anyhow!("timed out after 30 s")))
        }
    }))
    .buffer_unordered(concurrency.max(1));
    while let Some(result) = results.next().await {
        match result {
            Ok(()) => report.opened += 1,
            Err(err) => {
                if let Some(refused) = err.downcast_ref::<Refused>() {
                    *report.refused.entry(refused.code).or_default() += 1;
                } else {
                    report.failed += 1;
                }
                if report.first_error.is_none() {
                    report.first_error = Some(format!("{err:#}"));
                }
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// Resident memory of a process in KiB (VmRSS of /proc/PID/status).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?
            .parse::<f64>()?)
    };
    // USER_HZ is 100 on every Linux configuration that matters here.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// CPU seconds of the whole machine so far: (busy, total), from the first line of /proc/stat.
pub fn machine_cpu_seconds() -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .next()
        .filter(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow!("no cpu line in /proc/stat"))?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse::<f64>())
        .collect::<Result<_, _>>()?;
    let total: f64 = ticks.iter().take(8).sum();
    // idle and iowait are the 4th and 5th fields.
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    Ok(((total - idle) / 100.0, total / 100.0))
}

/// CPU use during a run: the server's, the generator's and everything else's, in CPU seconds.
pub struct CpuMeter {
    server_pid: Option<u32>,
    server: Option<f64>,
    own: f64,
    machine: (f64, f64),
}

#[derive(Debug, serde::Serialize)]
pub struct CpuUse {
    pub server_s: Option<f64>,
    pub generator_s: f64,
    /// Busy CPU time of processes other than the server and the generator (other work on the
    /// machine disturbs the figures).
    pub other_s: Option<f64>,
    pub wall_s: f64,
}

impl CpuMeter {
    pub fn start(server_pid: Option<u32>) -> anyhow::Result<CpuMeter> {
        Ok(CpuMeter {
            server_pid,
            server: server_pid.map(cpu_seconds).transpose()?,
            own: own_cpu_seconds()?,
            machine: machine_cpu_seconds()?,
        })
    }

    pub fn stop(&self, wall: Duration) -> anyhow::Result<CpuUse> {
        let server = match (self.server, self.server_pid) {
            (Some(before), Some(pid)) => Some(cpu_seconds(pid)? - before),
            _ => None,
        };
        let own = own_cpu_seconds()? - self.own;
        let (busy, _) = machine_cpu_seconds()?;
        let busy = busy - self.machine.0;
        Ok(CpuUse {
            server_s: server,
            generator_s: own,
            other_s: server.map(|s| (busy - s - own).max(0.0)),
            wall_s: wall.as_secs_f64(),
        })
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |s: f64| s / self.wall_s.max(1e-9) * 100.0;
        if let Some(server) = self.server_s {
            write!(
                f,
                "server {server:.1} s ({:.0}% of one core), ",
                pct(server)
            )?;
        }
        write!(
            f,
            "generator {:.1} s ({:.0}%)",
            self.generator_s,
            pct(self.generator_s)
        )?;
        if let Some(other) = self.other_s {
            write!(f, ", other processes {other:.1} s ({:.0}%)", pct(other))?;
        }
        write!(f, " over {:.1} s", self.wall_s)
    }
}

/// The generator's own CPU seconds.
pub fn own_cpu_seconds() -> anyhow::Result<f64> {
    cpu_seconds(std::process::id())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn sources_spread_connections_over_loopback_addresses() {
        let sources = Sources::new(Ipv4Addr::new(127, 0, 0, 1), 200);
        assert_eq!(sources.for_index(0), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(sources.for_index(199), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(sources.for_index(200), IpAddr::from([127, 0, 0, 2]));
        assert_eq!(sources.for_index(9999), IpAddr::from([127, 0, 0, 50]));
        assert_eq!(sources.used_by(10_000), 50);
        assert_eq!(sources.used_by(201), 2);
    }

    #[test]
    fn targets_parse_from_ws_and_http_urls() {
        let t = Target::parse("ws://127.0.0.1:8080").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.http_base, "http://127.0.0.1:8080");
        let t = Target::parse("127.0.0.1:9").unwrap();
        assert_eq!(t.addr.port(), 9);
    }

    #[test]
    fn own_proc_figures_read() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert!(own_cpu_seconds().unwrap() >= 0.0);
        let (busy, total) = machine_cpu_seconds().unwrap();
        assert!(busy > 0.0 && total >= busy);
    }
}
