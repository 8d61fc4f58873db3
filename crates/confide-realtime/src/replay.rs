//! Remembers the HTTP API signatures seen inside the timestamp window, so a captured request
//! cannot be sent again.
//!
//! Signatures are kept in one set per second of expiry. A signature covers its `auth_timestamp`,
//! so a replay always carries the same timestamp and lands in the same set: a check looks in one
//! set only, and a second whose window has passed is dropped whole. Memory is bounded: when full
//! of live entries, new requests are refused (fail closed) rather than forgetting signatures that
//! could then be replayed.

use std::collections::{BTreeMap, HashSet};

pub(crate) struct ReplayGuard {
    /// Unix second after which a timestamp is outside the window → first 8 bytes of the verified
    /// signatures with that expiry (HMAC output, so uniformly spread).
    by_expiry: BTreeMap<u64, HashSet<u64>>,
    len: usize,
    capacity: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReplayVerdict {
    Fresh,
    Replayed,
    Full,
}

/// The part of a signature the guard keeps.
pub(crate) fn fingerprint(signature: &[u8; 32]) -> u64 {
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&signature[..8]);
    u64::from_le_bytes(prefix)
}

impl ReplayGuard {
    pub fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard {
            by_expiry: BTreeMap::new(),
            len: 0,
            capacity: capacity.max(1),
        }
    }

    /// Signatures remembered now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Records a verified signature valid until `expires` (Unix seconds).
    pub fn check(&mut self, signature: &[u8; 32], expires: u64, now: u64) -> ReplayVerdict {
        self.forget_before(now);
        if expires < now {
            // Already outside the window: it cannot be replayed, and is not worth a place.
            return ReplayVerdict::Fresh;
        }
        let fingerprint = fingerprint(signature);
        if self
            .by_expiry
            .get(&expires)
            .is_some_and(|seen| seen.contains(&fingerprint))
        {
            return ReplayVerdict::Replayed;
        }
        if self.len >= self.capacity {
            return ReplayVerdict::Full;
        }
        self.by_expiry
            .entry(expires)
            .or_default()
            .insert(fingerprint);
        self.len += 1;
        ReplayVerdict::Fresh
    }

    /// Drops every second whose window has passed; each set goes once, whole.
    fn forget_before(&mut self, now: u64) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if *entry.key() >= now {
                break;
            }
            self.len -= entry.remove().len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(n: u64) -> [u8; 32] {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&n.to_le_bytes());
        s
    }

    #[test]
    fn a_fresh_signature_is_accepted_once() {
        let mut guard = ReplayGuard::new(10);
        assert_eq!(guard.check(&sig(1), 100, 10), ReplayVerdict::Fresh);
        assert_eq!(guard.check(&sig(2), 100, 10), ReplayVerdict::Fresh);
        assert_eq!(guard.len(), 2);
    }

    #[test]
    fn a_replayed_signature_is_refused_until_its_window_ends() {
        let mut guard = ReplayGuard::new(10);
        assert_eq!(guard.check(&sig(1), 100, 10), ReplayVerdict::Fresh);
        assert_eq!(guard.check(&sig(1), 100, 11), ReplayVerdict::Replayed);
        // The last second of the window still counts.
        assert_eq!(guard.check(&sig(1), 100, 100), ReplayVerdict::Replayed);
    }

    #[test]
    fn an_expired_second_is_dropped_whole_and_frees_its_places() {
        let mut guard = ReplayGuard::new(10);
        for n in 0..5 {
            assert_eq!(guard.check(&sig(n), 50, 10), ReplayVerdict::Fresh);
        }
        assert_eq!(guard.check(&sig(9), 80, 10), ReplayVerdict::Fresh);
        assert_eq!(guard.len(), 6);
        assert_eq!(guard.check(&sig(10), 80, 51), ReplayVerdict::Fresh);
        assert_eq!(guard.len(), 2);
        assert_eq!(guard.by_expiry.len(), 1);
        // A request whose window has already passed is never stored.
        assert_eq!(guard.check(&sig(11), 40, 51), ReplayVerdict::Fresh);
        assert_eq!(guard.len(), 2);
    }

    #[test]
    fn a_full_guard_refuses_new_signatures_but_still_knows_replays() {
        let mut guard = ReplayGuard::new(2);
        assert_eq!(guard.check(&sig(1), 100, 10), ReplayVerdict::Fresh);
        assert_eq!(guard.check(&sig(2), 50, 12), ReplayVerdict::Fresh);
        assert_eq!(guard.check(&sig(3), 100, 13), ReplayVerdict::Full);
        assert_eq!(guard.check(&sig(1), 100, 13), ReplayVerdict::Replayed);
        // Once the second of sig(2) has passed, its place is free again.
        assert_eq!(guard.check(&sig(3), 100, 51), ReplayVerdict::Fresh);
        assert_eq!(guard.check(&sig(1), 100, 52), ReplayVerdict::Replayed);
        assert_eq!(guard.check(&sig(4), 100, 52), ReplayVerdict::Full);
    }

    #[test]
    fn the_same_fingerprint_with_another_expiry_is_another_request() {
        // The signature covers the timestamp: equal prefixes with other timestamps are collisions.
        let mut guard = ReplayGuard::new(10);
        assert_eq!(guard.check(&sig(1), 100, 10), ReplayVerdict::Fresh);
        assert_eq!(guard.check(&sig(1), 101, 10), ReplayVerdict::Fresh);
    }
}
