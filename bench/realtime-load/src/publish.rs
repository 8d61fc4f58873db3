//! `publish`: N subscribers over M private channels; events published one channel at a time
//! through the signed HTTP events API at a fixed rate, each carrying its send time, and the
//! publish-to-receive latency measured at the subscribers.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

use crate::pusher::{self, Readers, Sources, Target, now_us};
use crate::stats;

const EVENT: &str = "bench";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server: http://127.0.0.1:PORT (the WebSocket endpoint is on the same address).
    #[arg(long)]
    url: String,
    /// The platform app's id.
    #[arg(long, default_value = "confide")]
    app_id: String,
    /// The platform app's key.
    #[arg(long)]
    key: String,
    /// The platform app's secret (signs subscriptions and API requests).
    #[arg(long, env = "REALTIME_LOAD_SECRET")]
    secret: String,
    /// Publishes per second.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Private channels; connection i subscribes to channel i mod M, publishes go round-robin.
    #[arg(long, default_value_t = 1000)]
    channels: usize,
    /// Subscribed connections.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Measured publishing time (after the warm-up).
    #[arg(long, default_value = "30s", value_parser = pusher::parse_duration)]
    duration: Duration,
    /// Publishing before the measurement starts; its samples are left out.
    #[arg(long, default_value = "2s", value_parser = pusher::parse_duration)]
    warmup: Duration,
    /// Wait after the last publish for deliveries still on their way.
    #[arg(long, default_value = "2s", value_parser = pusher::parse_duration)]
    drain: Duration,
    /// Connections per loopback source address (the hub's per-address limit is 200).
    #[arg(long, default_value_t = 200)]
    per_source: usize,
    #[arg(long, default_value = "127.0.0.1")]
    source_base: Ipv4Addr,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Publish requests in flight at most; a publish that finds none free is counted as skipped.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// The server's process id, to report its CPU use during the run.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A label for this run in the RESULT line.
    #[arg(long, default_value = "publish")]
    label: String,
}

#[derive(Deserialize)]
struct Stamp {
    t: u64,
}

#[derive(Default)]
struct Tally {
    /// (send time µs, latency µs) of every delivery.
    deliveries: Mutex<Vec<(u64, u64)>>,
    /// (send time µs, HTTP response time µs) of every accepted publish.
    responses: Mutex<Vec<(u64, u64)>>,
    statuses: Mutex<BTreeMap<String, usize>>,
    accepted: AtomicUsize,
    expected_deliveries: AtomicU64,
    skipped: AtomicUsize,
}

fn push<T>(list: &Mutex<Vec<T>>, item: T) {
    if let Ok(mut list) = list.lock() {
        list.push(item);
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.rate == 0 || args.connections == 0 || args.channels == 0 {
        bail!("--rate, --connections and --channels must be positive");
    }
    let target = Target::parse(&args.url)?;
    let secret = Arc::new(SecretString::from(args.secret.clone()));
    let key: Arc<str> = args.key.as_str().into();
    let channels = args.channels;
    let sources = Sources::new(args.source_base, args.per_source);
    let tally = Arc::new(Tally::default());
    let readers = Readers::new();
    // Subscribers per channel, for the deliveries each accepted publish should make.
    let mut subscribers = vec![0u64; channels];

    let open = pusher::open_many(0..args.connections, args.concurrency, |i| {
        let (secret, key, readers, tally) =
            (secret.clone(), key.clone(), readers.clone(), tally.clone());
        async move {
            let (mut ws, socket_id) =
                pusher::connect(target.addr, Some(sources.for_index(i)), &key).await?;
            let channel = format!("private-bench-{}", i % channels);
            let sig = confide_realtime::signature::private_channel(&secret, &socket_id, &channel);
            let auth = confide_realtime::signature::auth_string(&key, &sig);
            pusher::subscribe(&mut ws, &channel, &auth).await?;
            readers.spawn(ws, move |frame, at| {
                if frame.event != EVENT {
                    return;
                }
                let Value::String(data) = &frame.data else {
                    return;
                };
                if let Ok(stamp) = serde_json::from_str::<Stamp>(data) {
                    let received = pusher::instant_us(at);
                    push(
                        &tally.deliveries,
                        (stamp.t, received.saturating_sub(stamp.t)),
                    );
                }
            });
            Ok(())
        }
    })
    .await;
    println!(
        "publish: {} of {} connections subscribed over {} channels in {:.2} s ({:.0}/s), {} source addresses; refused {:?}, failed {}{}",
        open.opened,
        args.connections,
        channels,
        open.seconds,
        open.rate(),
        sources.used_by(args.connections),
        open.refused,
        open.failed,
        open.first_error
            .as_deref()
            .map_or(String::new(), |e| format!(" (first error: {e})"))
    );
    if open.opened == 0 {
        bail!("no connection could subscribe");
    }
    // Only connections that subscribed count towards the expected deliveries.
    // (Failures are rare; when there are some, the loss figure below is approximate.)
    for i in 0..args.connections {
        subscribers[i % channels] += 1;
    }
    let subscribers = Arc::new(subscribers);

    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.max_in_flight)
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let path = format!("/apps/{}/events", args.app_id);
    let url_base = format!("{}{}", target.http_base, path);
    let permits = Arc::new(Semaphore::new(args.max_in_flight.max(1)));

    let total = args.duration + args.warmup;
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let count = (total.as_secs_f64() * f64::from(args.rate)).round() as u64;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let cpu = pusher::CpuMeter::start(args.server_pid)?;
    let started_us = now_us();
    let started = Instant::now();
    let measure_from_us = started_us + pusher::micros(args.warmup);
    for seq in 0..count {
        ticker.tick().await;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tally.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let channel_index = usize::try_from(seq).unwrap_or(0) % channels;
        let (client, tally, secret, key, subscribers) = (
            client.clone(),
            tally.clone(),
            secret.clone(),
            key.clone(),
            subscribers.clone(),
        );
        let (path, url_base) = (path.clone(), url_base.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let t = now_us();
            // The sequence number makes every body, and so every signature, unique: the server
            // refuses a signature it has seen as a replay.
            let data = json!({ "seq": seq, "t": t }).to_string();
            let body = json!({
                "name": EVENT,
                "channel": format!("private-bench-{channel_index}"),
                "data": data,
            })
            .to_string();
            let query = confide_realtime::signature::signed_api_query(
                &key,
                &secret,
                "POST",
                &path,
                body.as_bytes(),
                unix_secs(),
                &[],
            );
            let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            let url = format!("{url_base}?{}", query.join("&"));
            let result = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            let status = match result {
                Ok(response) => {
                    let status = response.status();
                    let _ = response.bytes().await;
                    if status.is_success() {
                        push(&tally.responses, (t, now_us().saturating_sub(t)));
                        tally.accepted.fetch_add(1, Ordering::Relaxed);
                        tally
                            .expected_deliveries
                            .fetch_add(subscribers[channel_index], Ordering::Relaxed);
                    }
                    status.as_u16().to_string()
                }
                Err(err) if err.is_timeout() => "timeout".to_owned(),
                Err(_) => "connection error".to_owned(),
            };
            if let Ok(mut statuses) = tally.statuses.lock() {
                *statuses.entry(status).or_default() += 1;
            }
        });
    }
    let publishing = started.elapsed();
    // Wait for requests in flight, then for deliveries on their way.
    let _ = tokio::time::timeout(
        Duration::from_secs(15),
        permits.acquire_many(u32::try_from(args.max_in_flight.max(1)).unwrap_or(u32::MAX)),
    )
    .await;
    tokio::time::sleep(args.drain).await;
    let cpu = cpu.stop(started.elapsed())?;
    let endings = readers.endings();
    readers.shutdown(Duration::from_secs(20)).await;

    let deliveries = tally
        .deliveries
        .lock()
        .map(|d| d.clone())
        .unwrap_or_default();
    let responses = tally
        .responses
        .lock()
        .map(|d| d.clone())
        .unwrap_or_default();
    let measured: Vec<u64> = deliveries
        .iter()
        .filter(|(t, _)| *t >= measure_from_us)
        .map(|&(_, l)| l)
        .collect();
    let http: Vec<u64> = responses
        .iter()
        .filter(|(t, _)| *t >= measure_from_us)
        .map(|&(_, l)| l)
        .collect();
    let window = args.duration.as_secs_f64();
    let accepted_in_window = http.len();
    let latency = stats::summarize(measured);
    let http_latency = stats::summarize(http);
    let expected = tally.expected_deliveries.load(Ordering::Relaxed);
    let received = deliveries.len() as u64;
    let statuses = tally.statuses.lock().map(|s| s.clone()).unwrap_or_default();
    let skipped = tally.skipped.load(Ordering::Relaxed);
    let deliveries_per_sec = latency.count as f64 / window;
    let publishes_per_sec = accepted_in_window as f64 / window;
    println!(
        "  published {count} at {} /s over {:.1} s (target {:.1} s): accepted {}, statuses {:?}, skipped (generator saturated) {skipped}",
        args.rate,
        publishing.as_secs_f64(),
        total.as_secs_f64(),
        tally.accepted.load(Ordering::Relaxed),
        statuses,
    );
    println!(
        "  deliveries: received {received} of {expected} expected ({} lost); measured window {window:.0} s: {publishes_per_sec:.0} publishes/s, {deliveries_per_sec:.0} deliveries/s",
        expected.saturating_sub(received)
    );
    println!("  publish→receive latency: {latency}");
    println!("  HTTP API response time:  {http_latency}");
    println!("  CPU: {cpu}");
    if !endings.is_empty() {
        println!("  connections dropped during the run: {endings:?}");
    }
    println!(
        "RESULT {}",
        json!({
            "scenario": "publish",
            "label": args.label,
            "rate": args.rate,
            "channels": channels,
            "connections": args.connections,
            "subscribed": open.opened,
            "connections_per_sec": open.rate(),
            "duration_s": window,
            "published": count,
            "accepted": tally.accepted.load(Ordering::Relaxed),
            "statuses": statuses,
            "skipped": skipped,
            "expected_deliveries": expected,
            "received_deliveries": received,
            "publishes_per_sec": publishes_per_sec,
            "deliveries_per_sec": deliveries_per_sec,
            "latency": latency,
            "http_latency": http_latency,
            "cpu": cpu,
            "dropped": endings,
        })
    );
    Ok(())
}
