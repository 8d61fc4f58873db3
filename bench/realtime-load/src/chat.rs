//! `chat`: the widget's round trip. Starts chats (`POST /chat/v1/{bot_key}/sessions`), connects
//! to each chat's private channel authorized through `/chat/v1/auth`, then posts visitor messages
//! (`POST /chat/v1/messages`) at a fixed rate spread over the chats and times each from the POST
//! to the bot's reply event (`message` with sender `bot`) on the chat's channel.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

use crate::pusher::{self, Readers, Sources, Target};
use crate::stats;

const TOKEN_HEADER: &str = "x-chat-token";
/// The server's default limit of messages per chat and minute (not configurable from the CLI).
const MESSAGES_PER_CHAT_PER_MINUTE: f64 = 30.0;
/// The server's default limit of new chats per bot and minute (not configurable from the CLI).
const CHATS_PER_BOT_PER_MINUTE: usize = 600;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server: http://127.0.0.1:PORT.
    #[arg(long)]
    url: String,
    /// The bot's public widget key.
    #[arg(long)]
    bot_key: String,
    /// Visitor messages per second, over all chats.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Measured sending time (after the warm-up).
    #[arg(long, default_value = "30s", value_parser = pusher::parse_duration)]
    duration: Duration,
    /// Sending before the measurement starts; its samples are left out.
    #[arg(long, default_value = "2s", value_parser = pusher::parse_duration)]
    warmup: Duration,
    /// Wait after the last message for replies on their way.
    #[arg(long, default_value = "3s", value_parser = pusher::parse_duration)]
    drain: Duration,
    /// Chats to spread the messages over; by default enough to stay under the server's
    /// 30 messages per chat and minute with a margin.
    #[arg(long)]
    chats: Option<usize>,
    /// WebSocket connections per loopback source address (the hub's per-address limit is 200).
    #[arg(long, default_value_t = 200)]
    per_source: usize,
    #[arg(long, default_value = "127.0.0.1")]
    source_base: Ipv4Addr,
    /// Chats being set up at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Message requests in flight at most; a message that finds none free is counted as skipped.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// The server's process id, to report its CPU use during the run.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A label for this run in the RESULT line.
    #[arg(long, default_value = "chat")]
    label: String,
}

#[derive(Deserialize)]
struct Realtime {
    app_key: String,
}

#[derive(Deserialize)]
struct Session {
    channel: String,
    token: String,
    realtime: Realtime,
}

#[derive(Deserialize)]
struct MessageView {
    id: String,
    sender: String,
}

#[derive(Deserialize)]
struct Posted {
    reply: Option<MessageView>,
}

#[derive(Deserialize)]
struct Auth {
    auth: String,
}

struct Chat {
    token: String,
}

/// A bot reply seen from one side only so far: its event, or the POST that caused it.
enum Slot {
    Arrived(Instant),
    Waiting { sent: Instant, measured: bool },
}

#[derive(Default)]
struct Tally {
    slots: Mutex<HashMap<String, Slot>>,
    /// Round trips: POST sent → reply event received, µs; only measured messages.
    round_trips: Mutex<Vec<u64>>,
    /// POST sent → response received, µs; only measured messages.
    responses: Mutex<Vec<u64>>,
    statuses: Mutex<BTreeMap<String, usize>>,
    skipped: AtomicUsize,
}

impl Tally {
    fn record(&self, list: &Mutex<Vec<u64>>, d: Duration) {
        if let Ok(mut list) = list.lock() {
            list.push(pusher::micros(d));
        }
    }

    /// The reply's event arrived.
    fn arrived(&self, id: String, at: Instant) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        match slots.remove(&id) {
            Some(Slot::Waiting { sent, measured }) => {
                drop(slots);
                if measured {
                    self.record(&self.round_trips, at.saturating_duration_since(sent));
                }
            }
            Some(Slot::Arrived(first)) => {
                slots.insert(id, Slot::Arrived(first));
            }
            None => {
                slots.insert(id, Slot::Arrived(at));
            }
        }
    }

    /// The POST answered with the reply's id.
    fn answered(&self, id: String, sent: Instant, measured: bool) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        match slots.remove(&id) {
            Some(Slot::Arrived(at)) => {
                drop(slots);
                if measured {
                    self.record(&self.round_trips, at.saturating_duration_since(sent));
                }
            }
            _ => {
                slots.insert(id, Slot::Waiting { sent, measured });
            }
        }
    }

    fn status(&self, status: String) {
        if let Ok(mut statuses) = self.statuses.lock() {
            *statuses.entry(status).or_default() += 1;
        }
    }
}

async fn expect_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    what: &str,
) -> anyhow::Result<T> {
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("{what}: {status} {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: {text}"))
}

async fn start_chat(
    client: &reqwest::Client,
    target: &Target,
    bot_key: &str,
    source: std::net::IpAddr,
    readers: &Arc<Readers>,
    tally: &Arc<Tally>,
) -> anyhow::Result<Chat> {
    let session: Session = expect_json(
        client
            .post(format!("{}/chat/v1/{bot_key}/sessions", target.http_base))
            .json(&json!({}))
            .send()
            .await?,
        "starting a chat",
    )
    .await?;
    let (mut ws, socket_id) =
        pusher::connect(target.addr, Some(source), &session.realtime.app_key).await?;
    let auth: Auth = expect_json(
        client
            .post(format!("{}/chat/v1/auth", target.http_base))
            .header(TOKEN_HEADER, &session.token)
            .form(&[
                ("socket_id", socket_id.as_str()),
                ("channel_name", session.channel.as_str()),
            ])
            .send()
            .await?,
        "authorizing the channel",
    )
    .await?;
    pusher::subscribe(&mut ws, &session.channel, &auth.auth).await?;
    let tally = tally.clone();
    let channel = session.channel.clone();
    readers.spawn(ws, move |frame, at| {
        if frame.event != "message" || frame.channel.as_deref() != Some(channel.as_str()) {
            return;
        }
        let Value::String(data) = &frame.data else {
            return;
        };
        if let Ok(message) = serde_json::from_str::<MessageView>(data)
            && message.sender == "bot"
        {
            tally.arrived(message.id, at);
        }
    });
    Ok(Chat {
        token: session.token,
    })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.rate == 0 {
        bail!("--rate must be positive");
    }
    let target = Arc::new(Target::parse(&args.url)?);
    let total = args.duration + args.warmup;
    // Messages one chat gets in any minute must stay under the per-chat limit.
    let per_minute_window = total.as_secs_f64().min(60.0) + 1.0;
    let needed = (f64::from(args.rate) * per_minute_window / (MESSAGES_PER_CHAT_PER_MINUTE * 0.8))
        .ceil() as usize;
    let chats_wanted = args.chats.unwrap_or(needed).max(1);
    if chats_wanted > CHATS_PER_BOT_PER_MINUTE {
        println!(
            "chat: warning: {chats_wanted} chats exceed the server's {CHATS_PER_BOT_PER_MINUTE} new chats per bot and minute"
        );
    }
    let sources = Sources::new(args.source_base, args.per_source);
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.max_in_flight)
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let readers = Readers::new();
    let tally = Arc::new(Tally::default());

    let started = Instant::now();
    let mut results = Vec::with_capacity(chats_wanted);
    {
        use futures_util::StreamExt;
        let mut setups = futures_util::stream::iter((0..chats_wanted).map(|i| {
            let (client, target, readers, tally) = (&client, &target, &readers, &tally);
            let bot_key = args.bot_key.as_str();
            async move {
                tokio::time::timeout(
                    Duration::from_secs(30),
                    start_chat(
                        client,
                        target,
                        bot_key,
                        sources.for_index(i),
                        readers,
                        tally,
                    ),
                )
                .await
                .unwrap_or_else(|_| Err(anyhow!("timed out")))
            }
        }))
        .buffer_unordered(args.concurrency.max(1));
        while let Some(result) = setups.next().await {
            results.push(result);
        }
    }
    let setup_secs = started.elapsed().as_secs_f64();
    let mut chats = Vec::new();
    let mut failures = 0usize;
    let mut first_error = None;
    for result in results {
        match result {
            Ok(chat) => chats.push(chat),
            Err(err) => {
                failures += 1;
                first_error.get_or_insert_with(|| format!("{err:#}"));
            }
        }
    }
    println!(
        "chat: {} of {chats_wanted} chats started, connected and authorized in {setup_secs:.2} s ({:.0}/s); failed {failures}{}",
        chats.len(),
        chats.len() as f64 / setup_secs.max(1e-9),
        first_error
            .as_deref()
            .map_or(String::new(), |e| format!(" (first error: {e})"))
    );
    if chats.is_empty() {
        bail!("no chat could be set up");
    }
    let chats: Arc<Vec<Chat>> = Arc::new(chats);
    let url = Arc::<str>::from(format!("{}/chat/v1/messages", target.http_base));
    let permits = Arc::new(Semaphore::new(args.max_in_flight.max(1)));
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let count = (total.as_secs_f64() * f64::from(args.rate)).round() as u64;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let cpu = pusher::CpuMeter::start(args.server_pid)?;
    let sending = Instant::now();
    let measure_from = sending + args.warmup;
    for seq in 0..count {
        ticker.tick().await;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tally.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (client, tally, chats, url) =
            (client.clone(), tally.clone(), chats.clone(), url.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let chat = &chats[usize::try_from(seq).unwrap_or(0) % chats.len()];
            let sent = Instant::now();
            let measured = sent >= measure_from;
            let result = client
                .post(&*url)
                .header(TOKEN_HEADER, &chat.token)
                .json(&json!({ "text": format!("bench message {seq}") }))
                .send()
                .await;
            match result {
                Ok(response) => {
                    let status = response.status();
                    let body = response.bytes().await.unwrap_or_default();
                    let answered = sent.elapsed();
                    if status.is_success() {
                        if measured {
                            tally.record(&tally.responses, answered);
                        }
                        match serde_json::from_slice::<Posted>(&body)
                            .ok()
                            .and_then(|p| p.reply)
                        {
                            Some(reply) => tally.answered(reply.id, sent, measured),
                            None => tally.status("2xx without a reply".to_owned()),
                        }
                    }
                    tally.status(status.as_u16().to_string());
                }
                Err(err) if err.is_timeout() => tally.status("timeout".to_owned()),
                Err(_) => tally.status("connection error".to_owned()),
            }
        });
    }
    let sending_secs = sending.elapsed().as_secs_f64();
    let _ = tokio::time::timeout(
        Duration::from_secs(15),
        permits.acquire_many(u32::try_from(args.max_in_flight.max(1)).unwrap_or(u32::MAX)),
    )
    .await;
    tokio::time::sleep(args.drain).await;
    let cpu = cpu.stop(sending.elapsed())?;
    let endings = readers.endings();
    readers.shutdown(Duration::from_secs(20)).await;

    let round_trips = tally
        .round_trips
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let responses = tally
        .responses
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let (missing_events, unanswered) = tally
        .slots
        .lock()
        .map(|slots| {
            slots
                .values()
                .fold((0usize, 0usize), |(w, a), slot| match slot {
                    Slot::Waiting { .. } => (w + 1, a),
                    Slot::Arrived(_) => (w, a + 1),
                })
        })
        .unwrap_or_default();
    let statuses = tally.statuses.lock().map(|s| s.clone()).unwrap_or_default();
    let window = args.duration.as_secs_f64();
    let round_trip = stats::summarize(round_trips);
    let http = stats::summarize(responses);
    let messages_per_sec = http.count as f64 / window;
    let skipped = tally.skipped.load(Ordering::Relaxed);
    println!(
        "  sent {count} messages at {} /s over {sending_secs:.1} s (target {:.1} s) to {} chats: statuses {statuses:?}, skipped (generator saturated) {skipped}",
        args.rate,
        total.as_secs_f64(),
        chats.len()
    );
    println!(
        "  measured window {window:.0} s: {messages_per_sec:.0} messages/s answered; replies never received {missing_events}, reply events without an answered POST {unanswered}"
    );
    println!("  POST → bot reply event: {round_trip}");
    println!("  POST → HTTP response:   {http}");
    println!("  CPU: {cpu}");
    if !endings.is_empty() {
        println!("  connections dropped during the run: {endings:?}");
    }
    println!(
        "RESULT {}",
        json!({
            "scenario": "chat",
            "label": args.label,
            "rate": args.rate,
            "chats": chats.len(),
            "chat_setup_failures": failures,
            "chat_setups_per_sec": chats.len() as f64 / setup_secs.max(1e-9),
            "duration_s": window,
            "sent": count,
            "statuses": statuses,
            "skipped": skipped,
            "messages_per_sec": messages_per_sec,
            "replies_missing": missing_events,
            "round_trip": round_trip,
            "http_latency": http,
            "cpu": cpu,
            "dropped": endings,
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_reply_is_timed_whichever_side_comes_first() {
        let tally = Tally::default();
        let sent = Instant::now();
        let later = sent + Duration::from_millis(3);
        // The event before the HTTP response (the usual order: the reply is published first).
        tally.arrived("a".into(), later);
        tally.answered("a".into(), sent, true);
        // The HTTP response first.
        tally.answered("b".into(), sent, true);
        tally.arrived("b".into(), later);
        // A warm-up message is matched but not measured.
        tally.answered("c".into(), sent, false);
        tally.arrived("c".into(), later);
        assert_eq!(*tally.round_trips.lock().unwrap(), vec![3000, 3000]);
        assert!(tally.slots.lock().unwrap().is_empty());
    }
}
