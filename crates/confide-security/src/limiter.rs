//! A moving-window rate limiter (sliding window counter): the count of the previous fixed window is
//! weighted by how much of it still overlaps the moving window, so there is no burst at window
//! edges as with fixed windows, in constant memory per key.
//!
//! This is the in-process limiter; a shared (Redis) one for several nodes implements the same
//! `decide` contract.

use std::collections::HashMap;
use std::sync::Mutex;

/// How many requests per window one key may make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub window_ms: i64,
}

/// The limiter's answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Refused; retry after this many milliseconds.
    Limited {
        retry_after_ms: i64,
    },
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: i64,
    current: u32,
    previous: u32,
}

/// Keys are bounded so a flood of distinct keys cannot grow memory without limit.
pub struct SlidingWindowLimiter {
    windows: Mutex<HashMap<String, Window>>,
    max_keys: usize,
}

impl SlidingWindowLimiter {
    pub fn new(max_keys: usize) -> Self {
        SlidingWindowLimiter {
            windows: Mutex::new(HashMap::new()),
            max_keys: max_keys.max(1),
        }
    }

    /// Counts one request for `key` at `now` (Unix ms) unless it would exceed the quota.
    pub fn decide(&self, key: &str, quota: Quota, now: i64) -> Decision {
        let window_ms = quota.window_ms.max(1);
        let Ok(mut windows) = self.windows.lock() else {
            // A poisoned lock means a panic elsewhere; refusing is the safe answer.
            return Decision::Limited {
                retry_after_ms: window_ms,
            };
        };
        if windows.len() >= self.max_keys && !windows.contains_key(key) {
            windows.retain(|_, w| now - w.start < 2 * window_ms);
            if windows.len() >= self.max_keys {
                return Decision::Limited {
                    retry_after_ms: window_ms,
                };
            }
        }
        let aligned = now - now.rem_euclid(window_ms);
        let entry = windows.entry(key.to_owned()).or_insert(Window {
            start: aligned,
            current: 0,
            previous: 0,
        });
        if aligned != entry.start {
            entry.previous = if aligned - entry.start == window_ms {
                entry.current
            } else {
                0
            };
            entry.current = 0;
            entry.start = aligned;
        }
        let elapsed = now - entry.start;
        let overlap = (window_ms - elapsed) as f64 / window_ms as f64;
        let estimate = f64::from(entry.previous) * overlap + f64::from(entry.current);
        if estimate + 1.0 > f64::from(quota.limit) {
            // The estimate falls as the previous window slides out; when it has fully slid out
            // only the current count remains.
            let retry_after_ms = if entry.current < quota.limit && entry.previous > 0 {
                let needed = (estimate + 1.0 - f64::from(quota.limit)) / f64::from(entry.previous);
                ((needed * window_ms as f64).ceil() as i64).clamp(1, window_ms)
            } else {
                window_ms - elapsed
            };
            return Decision::Limited { retry_after_ms };
        }
        entry.current += 1;
        Decision::Allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTA: Quota = Quota {
        limit: 10,
        window_ms: 60_000,
    };

    fn allowed(limiter: &SlidingWindowLimiter, key: &str, now: i64) -> bool {
        limiter.decide(key, QUOTA, now) == Decision::Allowed
    }

    #[test]
    fn the_limit_holds_within_a_window() {
        let limiter = SlidingWindowLimiter::new(100);
        for i in 0..10 {
            assert!(allowed(&limiter, "ip", 1_000 + i));
        }
        assert!(!allowed(&limiter, "ip", 2_000));
        assert!(allowed(&limiter, "other", 2_000), "keys are independent");
    }

    #[test]
    fn there_is_no_burst_at_the_window_edge() {
        let limiter = SlidingWindowLimiter::new(100);
        // Ten requests at the very end of one window...
        for _ in 0..10 {
            assert!(allowed(&limiter, "ip", 59_900));
        }
        // ...leave almost no room at the start of the next: a fixed window would allow ten more.
        assert!(!allowed(&limiter, "ip", 60_100));
        // Half-way through the next window half of the previous count has slid out.
        let mut admitted = 0;
        for _ in 0..10 {
            if allowed(&limiter, "ip", 90_000) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
    }

    #[test]
    fn a_refusal_says_when_to_retry() {
        let limiter = SlidingWindowLimiter::new(100);
        for _ in 0..10 {
            limiter.decide("ip", QUOTA, 10_000);
        }
        match limiter.decide("ip", QUOTA, 10_000) {
            Decision::Limited { retry_after_ms } => assert_eq!(retry_after_ms, 50_000),
            Decision::Allowed => panic!("should be limited"),
        }
        assert!(allowed(&limiter, "ip", 60_000 + 10_000 + 1));
    }

    #[test]
    fn memory_is_bounded_by_the_number_of_keys() {
        let limiter = SlidingWindowLimiter::new(3);
        for key in ["a", "b", "c"] {
            assert!(allowed(&limiter, key, 0));
        }
        assert!(!allowed(&limiter, "d", 1));
        // Once the old windows are stale they make room.
        assert!(allowed(&limiter, "d", 2 * 60_000 + 1));
    }
}
