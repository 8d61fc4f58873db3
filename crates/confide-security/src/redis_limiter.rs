//! The shared moving-window rate limiter: the same sliding window counter as
//! [`SlidingWindowLimiter`], with its state in Redis so a limit holds across every node.
//!
//! Each key is one Redis hash (`{prefix}:{key}`: window start, current and previous counts)
//! updated by one Lua script, so concurrent requests on several nodes are counted atomically.
//! Keys expire two windows after their last admitted request; refused requests only read.
//! The time is the caller's (`now_ms`), so nodes' clocks should be synchronized (NTP); a node
//! whose clock lags counts into the newest window as if at its start, which can only make the
//! limit stricter, never reset it.
//!
//! # When Redis is unreachable
//!
//! Failing closed (refusing everything) would take chat and login down with Redis; failing
//! open (allowing everything) would drop abuse protection exactly when someone may be
//! knocking Redis over. The limiter therefore falls back to an in-process
//! [`SlidingWindowLimiter`]: every node still enforces each quota on its own traffic (so a
//! client spreading requests over N nodes gets at most N times the quota), a warning is
//! logged (at most every 30 s), and Redis is tried again after a short, growing pause (one
//! probing decision at a time) so an outage does not add latency to every request. The
//! fallback also counts what Redis admitted on this node, so an outage does not hand out a
//! fresh quota; counts made only locally are not carried into Redis when it returns.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::limiter::{Decision, Quota, SlidingWindowLimiter};

/// How long one decision may wait for Redis before the fallback decides.
const DECISION_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause before Redis is tried again after a failure, doubling up to the maximum.
const MIN_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(15);
/// At most one warning per this interval while Redis keeps failing.
const WARNING_INTERVAL: Duration = Duration::from_secs(30);
/// Keys the in-process fallback tracks by default.
pub const DEFAULT_FALLBACK_KEYS: usize = 100_000;

/// The sliding window counter of [`SlidingWindowLimiter::decide`], in Lua.
/// KEYS[1]: the key's hash (s: window start, c: current count, p: previous count).
/// ARGV: limit, window_ms, now_ms. Returns {1, 0} when admitted, {0, retry_after_ms} when not.
const SCRIPT: &str = r"
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local aligned = now - (now % window)
local state = redis.call('HMGET', KEYS[1], 's', 'c', 'p')
local start = tonumber(state[1])
local current = tonumber(state[2]) or 0
local previous = tonumber(state[3]) or 0
if start == nil then
  start = aligned
  current = 0
  previous = 0
elseif aligned > start then
  if aligned - start == window then previous = current else previous = 0 end
  current = 0
  start = aligned
end
local elapsed = now - start
if elapsed < 0 then elapsed = 0 end
local overlap = (window - elapsed) / window
local estimate = previous * overlap + current
if estimate + 1 > limit then
  local retry
  if current < limit and previous > 0 then
    retry = math.ceil(((estimate + 1 - limit) / previous) * window)
    if retry < 1 then retry = 1 end
    if retry > window then retry = window end
  else
    retry = window - elapsed
  end
  return {0, retry}
end
redis.call('HSET', KEYS[1], 's', string.format('%.0f', start), 'c', string.format('%.0f', current + 1), 'p', string.format('%.0f', previous))
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', 2 * window))
return {1, 0}
";

/// Why a [`RedisLimiter`] could not be created.
#[derive(Debug, thiserror::Error)]
#[error("the Redis rate limiter is unavailable: {0}")]
pub struct RedisLimiterError(String);

/// Whether Redis is in use or paused after failures.
struct Health {
    /// While set and in the future, decisions go straight to the fallback.
    paused_until: Option<Instant>,
    pause: Duration,
    last_warning: Option<Instant>,
    failures_since_warning: u64,
}

/// A sliding-window limiter whose counts live in Redis, shared by every node using the same
/// Redis and key prefix. See the module documentation for what happens when Redis fails.
pub struct RedisLimiter {
    connection: ConnectionManager,
    script: redis::Script,
    key_prefix: String,
    fallback: SlidingWindowLimiter,
    health: Mutex<Health>,
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Connects to Redis at `url` (`redis://[:password@]host[:port][/db]`) and checks that it
    /// answers, so a wrong URL is noticed at startup. Keys are `{key_prefix}:{key}`.
    pub async fn connect(url: &str, key_prefix: &str) -> Result<RedisLimiter, RedisLimiterError> {
        let limiter = RedisLimiter::lazy(url, key_prefix)?;
        let mut connection = limiter.connection.clone();
        let answer: Result<String, _> = tokio::time::timeout(
            Duration::from_secs(5),
            redis::cmd("PING").query_async(&mut connection),
        )
        .await
        .map_err(|_| RedisLimiterError("connecting to Redis timed out".into()))?;
        answer.map_err(|e| RedisLimiterError(format!("cannot reach Redis: {e}")))?;
        Ok(limiter)
    }

    /// Like [`RedisLimiter::connect`] without contacting Redis: the connection is made on the
    /// first decision, and the fallback decides until Redis answers. Fails only on a malformed
    /// URL, or when called outside a Tokio runtime.
    pub fn lazy(url: &str, key_prefix: &str) -> Result<RedisLimiter, RedisLimiterError> {
        if tokio::runtime::Handle::try_current().is_err() {
            // The connection spawns its reader task on the current runtime.
            return Err(RedisLimiterError(
                "must be created within a Tokio runtime".into(),
            ));
        }
        let client = redis::Client::open(url)
            .map_err(|e| RedisLimiterError(format!("invalid Redis URL: {e}")))?;
        // No retry loop inside the connection: the pause in `Health` spaces the attempts.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(DECISION_TIMEOUT))
            .set_response_timeout(Some(DECISION_TIMEOUT))
            .set_number_of_retries(0);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| RedisLimiterError(format!("cannot set up the Redis connection: {e}")))?;
        Ok(RedisLimiter {
            connection,
            script: redis::Script::new(SCRIPT),
            key_prefix: key_prefix.to_owned(),
            fallback: SlidingWindowLimiter::new(DEFAULT_FALLBACK_KEYS),
            health: Mutex::new(Health {
                paused_until: None,
                pause: MIN_PAUSE,
                last_warning: None,
                failures_since_warning: 0,
            }),
        })
    }

    /// Replaces the in-process fallback (to bound it to `max_keys` keys).
    pub fn with_fallback(mut self, fallback: SlidingWindowLimiter) -> Self {
        self.fallback = fallback;
        self
    }

    /// Counts one request for `key` at `now_ms` (Unix ms) unless it would exceed the quota,
    /// across every node sharing this Redis and prefix.
    pub async fn decide(&self, key: &str, quota: Quota, now_ms: i64) -> Decision {
        if self.redis_in_use() {
            match tokio::time::timeout(DECISION_TIMEOUT, self.decide_in_redis(key, quota, now_ms))
                .await
            {
                Ok(Ok(decision)) => {
                    self.succeeded();
                    if decision == Decision::Allowed {
                        // Shadow count: if Redis fails later, this node's fallback already
                        // knows what this node admitted, so an outage does not hand out a
                        // fresh quota.
                        let _ = self.fallback.decide(key, quota, now_ms);
                    }
                    return decision;
                }
                Ok(Err(error)) => self.failed(&error.to_string()),
                Err(_) => self.failed("timed out"),
            }
        }
        self.fallback.decide(key, quota, now_ms)
    }

    async fn decide_in_redis(
        &self,
        key: &str,
        quota: Quota,
        now_ms: i64,
    ) -> redis::RedisResult<Decision> {
        let mut connection = self.connection.clone();
        let (admitted, retry_after_ms): (i64, i64) = self
            .script
            .key(format!("{}:{key}", self.key_prefix))
            .arg(quota.limit)
            .arg(quota.window_ms.max(1))
            .arg(now_ms)
            .invoke_async(&mut connection)
            .await?;
        Ok(if admitted == 1 {
            Decision::Allowed
        } else {
            Decision::Limited { retry_after_ms }
        })
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        // Nothing panics while the lock is held, so a poisoned lock still holds valid data.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this decision goes to Redis. After a failure only one decision probes Redis
    /// when the pause ends; the others keep using the fallback until it answers.
    fn redis_in_use(&self) -> bool {
        let mut health = self.health();
        match health.paused_until {
            None => true,
            Some(until) => {
                let now = Instant::now();
                if now < until {
                    return false;
                }
                health.paused_until = Some(now + DECISION_TIMEOUT);
                true
            }
        }
    }

    fn succeeded(&self) {
        let mut health = self.health();
        if health.paused_until.take().is_some() {
            tracing::info!(
                key_prefix = %self.key_prefix,
                "Redis answers again; rate limits are shared across nodes again"
            );
        }
        health.pause = MIN_PAUSE;
        health.failures_since_warning = 0;
    }

    fn failed(&self, error: &str) {
        let now = Instant::now();
        let mut health = self.health();
        health.paused_until = Some(now + health.pause);
        health.pause = (health.pause * 2).min(MAX_PAUSE);
        health.failures_since_warning += 1;
        if health
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= WARNING_INTERVAL)
        {
            tracing::warn!(
                key_prefix = %self.key_prefix,
                error,
                failures = health.failures_since_warning,
                "Redis rate limiter unavailable; limiting with this node's own counts meanwhile"
            );
            health.last_warning = Some(now);
            health.failures_since_warning = 0;
        }
    }
}

/// The rate limiter callers hold: in-process on one node, Redis-backed when several nodes share
/// the limits.
pub enum Limiter {
    Local(SlidingWindowLimiter),
    Redis(RedisLimiter),
}

impl Limiter {
    /// Counts one request for `key` at `now` (Unix ms) unless it would exceed the quota.
    pub async fn decide(&self, key: &str, quota: Quota, now: i64) -> Decision {
        match self {
            Limiter::Local(limiter) => limiter.decide(key, quota, now),
            Limiter::Redis(limiter) => limiter.decide(key, quota, now).await,
        }
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limiter::Local(_) => f.write_str("Limiter::Local"),
            Limiter::Redis(limiter) => f.debug_tuple("Limiter::Redis").field(limiter).finish(),
        }
    }
}

impl From<SlidingWindowLimiter> for Limiter {
    fn from(limiter: SlidingWindowLimiter) -> Self {
        Limiter::Local(limiter)
    }
}

impl From<RedisLimiter> for Limiter {
    fn from(limiter: RedisLimiter) -> Self {
        Limiter::Redis(limiter)
    }
}
