//! Remembers the HTTP API signatures seen inside the timestamp window, so a captured request
//! cannot be sent again. Memory is bounded: when full of live entries, new requests are refused
//! (fail closed) rather than forgetting signatures that could then be replayed.

use std::collections::HashMap;

/// Seconds between sweeps of expired entries.
const SWEEP_EVERY: u64 = 10;

pub(crate) struct ReplayGuard {
    /// First 8 bytes of a verified signature (HMAC output, so uniformly spread) → Unix second
    /// after which its timestamp is outside the window anyway.
    seen: HashMap<u64, u64>,
    capacity: usize,
    last_sweep: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReplayVerdict {
    Fresh,
    Replayed,
    Full,
}

impl ReplayGuard {
    pub fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard {
            seen: HashMap::new(),
            capacity: capacity.max(1),
            last_sweep: 0,
        }
    }

    /// Records a verified signature valid until `expires` (Unix seconds).
    pub fn check(&mut self, signature: &[u8; 32], expires: u64, now: u64) -> ReplayVerdict {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&signature[..8]);
        let fingerprint = u64::from_le_bytes(prefix);
        if self
            .seen
            .get(&fingerprint)
            .is_some_and(|&until| until >= now)
        {
            return ReplayVerdict::Replayed;
        }
        if self.seen.len() >= self.capacity || now >= self.last_sweep + SWEEP_EVERY {
            self.seen.retain(|_, until| *until >= now);
            self.last_sweep = now;
            if self.seen.len() >= self.capacity {
                return ReplayVerdict::Full;
            }
        }
        self.seen.insert(fingerprint, expires);
        ReplayVerdict::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_accepted_once_and_memory_stays_bounded() {
        let mut guard = ReplayGuard::new(2);
        let a = [1u8; 32];
        let b = [2u8; 32];
        let c = [3u8; 32];
        assert_eq!(guard.check(&a, 100, 10), ReplayVerdict::Fresh);
        assert_eq!(guard.check(&a, 100, 11), ReplayVerdict::Replayed);
        assert_eq!(guard.check(&b, 50, 12), ReplayVerdict::Fresh);
        assert_eq!(guard.check(&c, 100, 13), ReplayVerdict::Full);
        // Once b's window is over, its place is free again.
        assert_eq!(guard.check(&c, 100, 60), ReplayVerdict::Fresh);
        assert_eq!(guard.check(&a, 100, 61), ReplayVerdict::Replayed);
    }
}
