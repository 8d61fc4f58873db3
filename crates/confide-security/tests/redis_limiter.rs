//! The shared rate limiter against a real Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`):
//! two limiters stand for two nodes. Skipped, with a note, when Redis does not answer (failed
//! instead with `CONFIDE_REQUIRE_REDIS=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use confide_security::limiter::{Decision, Quota, SlidingWindowLimiter};
use confide_security::redis_limiter::{Limiter, RedisLimiter};
use confide_security::testing::{TempRedis, skip_without_redis};

const QUOTA: Quota = Quota {
    limit: 10,
    window_ms: 60_000,
};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A prefix no other test (or earlier run) uses, so tests running in parallel do not share keys.
fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "confide-test:limiter:{test}:{}:{nanos}:{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Two nodes sharing one prefix, or `None` (with a note) when Redis is not there.
async fn two_nodes(test: &str) -> Option<(RedisLimiter, RedisLimiter)> {
    two_nodes_with_prefix(test).await.map(|(_, a, b)| (a, b))
}

async fn two_nodes_with_prefix(test: &str) -> Option<(String, RedisLimiter, RedisLimiter)> {
    let prefix = unique_prefix(test);
    let a = match RedisLimiter::connect(&redis_url(), &prefix).await {
        Ok(limiter) => limiter,
        Err(error) => {
            skip_without_redis(test, format_args!("Redis does not answer ({error})"));
            return None;
        }
    };
    let b = RedisLimiter::connect(&redis_url(), &prefix).await.unwrap();
    Some((prefix, a, b))
}

async fn allowed(limiter: &RedisLimiter, key: &str, now: i64) -> bool {
    limiter.decide(key, QUOTA, now).await == Decision::Allowed
}

#[tokio::test]
async fn the_limit_is_counted_across_nodes_and_keys_are_independent() {
    let Some((a, b)) = two_nodes("across_nodes").await else {
        return;
    };
    for i in 0..10 {
        let node = if i % 2 == 0 { &a } else { &b };
        assert!(allowed(node, "ip", 1_000 + i).await, "request {i}");
    }
    assert!(!allowed(&a, "ip", 2_000).await, "the eleventh on node a");
    assert!(!allowed(&b, "ip", 2_000).await, "the eleventh on node b");
    assert!(allowed(&b, "other", 2_000).await, "keys are independent");
    assert!(allowed(&a, "other", 2_000).await, "keys are independent");
}

#[tokio::test]
async fn concurrent_requests_on_both_nodes_never_exceed_the_limit() {
    let Some((a, b)) = two_nodes("concurrent").await else {
        return;
    };
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut tasks = Vec::new();
    for i in 0..60 {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            node.decide("ip", QUOTA, 5_000).await == Decision::Allowed
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        if task.await.unwrap() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10);
}

#[tokio::test]
async fn there_is_no_burst_at_the_window_edge() {
    let Some((a, b)) = two_nodes("window_edge").await else {
        return;
    };
    // Ten requests at the very end of one window, spread over both nodes...
    for i in 0..10 {
        let node = if i % 2 == 0 { &a } else { &b };
        assert!(allowed(node, "ip", 59_900).await);
    }
    // ...leave almost no room at the start of the next: a fixed window would allow ten more.
    assert!(!allowed(&a, "ip", 60_100).await);
    assert!(!allowed(&b, "ip", 60_100).await);
    // Half-way through the next window half of the previous count has slid out.
    let mut admitted = 0;
    for i in 0..10 {
        let node = if i % 2 == 0 { &b } else { &a };
        if allowed(node, "ip", 90_000).await {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
}

#[tokio::test]
async fn a_refusal_says_when_to_retry_like_the_local_limiter() {
    let Some((a, b)) = two_nodes("retry_after").await else {
        return;
    };
    let local = SlidingWindowLimiter::new(100);
    for _ in 0..10 {
        a.decide("ip", QUOTA, 10_000).await;
        local.decide("ip", QUOTA, 10_000);
    }
    assert_eq!(
        b.decide("ip", QUOTA, 10_000).await,
        Decision::Limited {
            retry_after_ms: 50_000
        }
    );
    // Retry-after while the previous window slides out agrees with the in-process limiter.
    for now in [60_000, 61_000, 75_000, 100_000] {
        assert_eq!(
            b.decide("ip", QUOTA, now).await,
            local.decide("ip", QUOTA, now),
            "at {now}"
        );
    }
    // The answer is exact: refused a millisecond before it, admitted at it.
    let fresh = unique_prefix("retry_after_edge");
    let c = RedisLimiter::connect(&redis_url(), &fresh).await.unwrap();
    for _ in 0..10 {
        c.decide("ip", QUOTA, 10_000).await;
    }
    let Decision::Limited { retry_after_ms } = c.decide("ip", QUOTA, 60_000).await else {
        panic!("should be limited at the start of the next window");
    };
    assert_eq!(retry_after_ms, 6_000);
    assert!(!allowed(&c, "ip", 60_000 + retry_after_ms - 1).await);
    assert!(allowed(&c, "ip", 60_000 + retry_after_ms).await);
}

#[tokio::test]
async fn a_node_whose_clock_lags_does_not_reset_the_count() {
    let Some((a, b)) = two_nodes("clock_skew").await else {
        return;
    };
    for _ in 0..10 {
        assert!(allowed(&a, "ip", 120_500).await);
    }
    // Node b's clock is a second behind, in the previous window: it must not start afresh.
    assert!(!allowed(&b, "ip", 119_500).await);
    assert!(!allowed(&a, "ip", 121_000).await);
}

#[tokio::test]
async fn keys_expire_in_redis() {
    let Some((prefix, a, _)) = two_nodes_with_prefix("expiry").await else {
        return;
    };
    assert!(allowed(&a, "ip", 1_000).await);
    // The key's time to live is two windows at most.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}:ip"))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 2 * QUOTA.window_ms, "ttl {ttl}");
}

#[tokio::test]
async fn without_redis_the_limit_still_holds_on_each_node() {
    // Nothing listens on port 1: every Redis call fails at once.
    let limiter =
        Limiter::from(RedisLimiter::lazy("redis://127.0.0.1:1", "confide-test:down").unwrap());
    let started = Instant::now();
    for i in 0..10 {
        assert_eq!(
            limiter.decide("ip", QUOTA, 1_000 + i).await,
            Decision::Allowed
        );
    }
    assert!(matches!(
        limiter.decide("ip", QUOTA, 2_000).await,
        Decision::Limited { .. }
    ));
    assert_eq!(
        limiter.decide("other", QUOTA, 2_000).await,
        Decision::Allowed
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "an outage must not slow every decision: {:?}",
        started.elapsed()
    );
    assert!(
        RedisLimiter::connect("redis://127.0.0.1:1", "confide-test:down")
            .await
            .is_err()
    );
    assert!(RedisLimiter::lazy("not a url", "p").is_err());
}

#[tokio::test]
async fn the_local_variant_is_the_in_process_limiter() {
    let limiter = Limiter::from(SlidingWindowLimiter::new(100));
    for i in 0..10 {
        assert_eq!(
            limiter.decide("ip", QUOTA, 1_000 + i).await,
            Decision::Allowed
        );
    }
    assert!(matches!(
        limiter.decide("ip", QUOTA, 2_000).await,
        Decision::Limited { .. }
    ));
}

#[tokio::test]
async fn an_outage_does_not_hand_out_a_fresh_quota_and_sharing_resumes_after_it() {
    let Some(mut redis) = TempRedis::start("the outage test") else {
        return;
    };
    let prefix = unique_prefix("outage");
    let a = RedisLimiter::connect(&redis.url(), &prefix).await.unwrap();
    let b = RedisLimiter::connect(&redis.url(), &prefix).await.unwrap();
    for i in 0..6 {
        let node = if i % 2 == 0 { &a } else { &b };
        assert!(allowed(node, "ip", 1_000 + i).await);
    }

    redis.stop();
    // Node a admitted three of those itself; on its own it allows seven more, not ten.
    let mut admitted = 0;
    for i in 0..12 {
        if allowed(&a, "ip", 2_000 + i).await {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 7);

    assert!(redis.spawn(), "redis-server restarts on the same port");
    // After a pause both limiters go back to Redis (empty after the restart) and share one
    // count again: ten on node a leave nothing for node b, whose own counts know nothing of
    // the key.
    let deadline = Instant::now() + Duration::from_secs(20);
    for attempt in 0.. {
        let key = format!("probe-{attempt}");
        for _ in 0..10 {
            let _ = a.decide(&key, QUOTA, 3_000).await;
        }
        if b.decide(&key, QUOTA, 3_000).await != Decision::Allowed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the limiter did not go back to Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn outside_a_runtime_the_limiter_is_refused_rather_than_panicking() {
    assert!(RedisLimiter::lazy("redis://127.0.0.1:6379", "p").is_err());
}
