//! `connections`: N subscribed private-channel connections in steps; after each step the
//! server's RSS. Memory per connection is the RSS slope between steps, which leaves out what the
//! process holds anyway (runtime, database pool, caches).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use secrecy::SecretString;
use serde::Serialize;
use serde_json::json;

use crate::pusher::{self, OpenReport, Readers, Sources, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server: ws://127.0.0.1:PORT (or http://, or host:port).
    #[arg(long)]
    url: String,
    /// The platform app's key (`confide admin realtime-credentials`).
    #[arg(long)]
    key: String,
    /// The platform app's secret: subscriptions are signed locally with it.
    #[arg(long, env = "REALTIME_LOAD_SECRET")]
    secret: String,
    /// Cumulative connection counts to step through.
    #[arg(long, value_delimiter = ',', default_value = "2000,5000,10000")]
    counts: Vec<usize>,
    /// Private channels the connections are spread over (connection i: channel i mod M).
    #[arg(long, default_value_t = 1000)]
    channels: usize,
    /// The server's process id, for /proc/PID/status.
    #[arg(long)]
    server_pid: u32,
    /// Connections per loopback source address (the hub's per-address limit is 200).
    #[arg(long, default_value_t = 200)]
    per_source: usize,
    /// The first source address; the next ones count up from it.
    #[arg(long, default_value = "127.0.0.1")]
    source_base: Ipv4Addr,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Wait after each step before reading the RSS.
    #[arg(long, default_value = "3s", value_parser = pusher::parse_duration)]
    settle: Duration,
    /// A label for this run in the RESULT line.
    #[arg(long, default_value = "connections")]
    label: String,
}

#[derive(Debug, Serialize)]
struct Step {
    target: usize,
    /// Connections open and subscribed when the RSS was read.
    live: usize,
    rss_kib: u64,
    /// KiB per connection against the previous step (the first step: against the baseline).
    slope_kib_per_conn: Option<f64>,
    source_addresses: usize,
    open: OpenReport,
    connections_per_sec: f64,
}

fn slope(rss_a: u64, live_a: usize, rss_b: u64, live_b: usize) -> Option<f64> {
    (live_b > live_a).then(|| (rss_b as f64 - rss_a as f64) / (live_b - live_a) as f64)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.counts.is_empty() || args.counts.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--counts must be increasing");
    }
    let target = Target::parse(&args.url)?;
    let secret = Arc::new(SecretString::from(args.secret.clone()));
    let key: Arc<str> = args.key.as_str().into();
    let channels = args.channels.max(1);
    let sources = Sources::new(args.source_base, args.per_source);
    let readers = Readers::new();

    let baseline = pusher::rss_kib(args.server_pid)?;
    println!(
        "connections: server pid {} baseline RSS {baseline} KiB; {} per source address from {}",
        args.server_pid, args.per_source, args.source_base
    );
    let mut steps: Vec<Step> = Vec::new();
    let mut opened_upto = 0usize;
    let (mut prev_rss, mut prev_live) = (baseline, 0usize);
    for &count in &args.counts {
        let report = pusher::open_many(opened_upto..count, args.concurrency, |i| {
            let (secret, key, readers) = (secret.clone(), key.clone(), readers.clone());
            async move {
                let (mut ws, socket_id) =
                    pusher::connect(target.addr, Some(sources.for_index(i)), &key).await?;
                let channel = format!("private-bench-{}", i % channels);
                let sig =
                    confide_realtime::signature::private_channel(&secret, &socket_id, &channel);
                let auth = confide_realtime::signature::auth_string(&key, &sig);
                pusher::subscribe(&mut ws, &channel, &auth).await?;
                readers.spawn(ws, |_, _| {});
                Ok(())
            }
        })
        .await;
        opened_upto = count;
        tokio::time::sleep(args.settle).await;
        let rss = pusher::rss_kib(args.server_pid)?;
        let live = readers.live();
        let step = Step {
            target: count,
            live,
            rss_kib: rss,
            slope_kib_per_conn: slope(prev_rss, prev_live, rss, live),
            source_addresses: sources.used_by(count),
            connections_per_sec: report.rate(),
            open: report,
        };
        println!(
            "  step {count:>6}: live {live:>6}  RSS {rss:>8} KiB  slope {}  opened {} in {:.2} s ({:.0}/s)  refused {:?}  failed {}{}",
            step.slope_kib_per_conn
                .map_or("   n/a".to_owned(), |s| format!("{s:6.2} KiB/conn")),
            step.open.opened,
            step.open.seconds,
            step.connections_per_sec,
            step.open.refused,
            step.open.failed,
            step.open
                .first_error
                .as_deref()
                .map_or(String::new(), |e| format!("  first error: {e}")),
        );
        (prev_rss, prev_live) = (rss, live);
        steps.push(step);
    }

    // The slope over all steps after the first: the marginal cost once the process is warm.
    let overall = match (steps.first(), steps.last()) {
        (Some(a), Some(b)) => slope(a.rss_kib, a.live, b.rss_kib, b.live),
        _ => None,
    };
    let from_baseline = steps
        .last()
        .and_then(|b| slope(baseline, 0, b.rss_kib, b.live));
    let endings = readers.endings();
    println!(
        "  slope first→last step: {}; last step against the baseline: {}; dropped while held: {:?}",
        overall.map_or("n/a".to_owned(), |s| format!("{s:.2} KiB/conn")),
        from_baseline.map_or("n/a".to_owned(), |s| format!("{s:.2} KiB/conn")),
        endings
    );
    let rate_total: f64 = {
        let (opened, secs) = steps.iter().fold((0usize, 0f64), |(o, s), st| {
            (o + st.open.opened, s + st.open.seconds)
        });
        if secs > 0.0 {
            opened as f64 / secs
        } else {
            0.0
        }
    };
    println!(
        "  connection rate over all steps: {rate_total:.0}/s (connect + handshake + subscribe)"
    );
    readers.shutdown(Duration::from_secs(20)).await;
    println!(
        "RESULT {}",
        json!({
            "scenario": "connections",
            "label": args.label,
            "baseline_rss_kib": baseline,
            "channels": channels,
            "per_source": args.per_source,
            "steps": steps,
            "slope_first_to_last_kib_per_conn": overall,
            "slope_from_baseline_kib_per_conn": from_baseline,
            "connections_per_sec": rate_total,
            "dropped": endings,
        })
    );
    Ok(())
}
