//! The audit log's hash chain: each entry commits to the one before, so deleting or editing an
//! entry breaks every hash after it.

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry in a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const DOMAIN: &[u8] = b"confide-audit-v1\n";

/// Hex SHA-256 linking an event to its predecessor; domain-separated so no other hash we
/// compute can be passed off as an audit link.
pub fn chain_hash(prev_hash: &str, canonical_event: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical_event);
    hex::encode(hasher.finalize())
}

/// Index of the first entry whose stored hash does not follow from the chain so far, or `None`
/// if the whole chain (given as `(canonical_event, stored_hash)` in order) is intact.
pub fn first_broken_link<'a>(
    entries: impl IntoIterator<Item = (&'a [u8], &'a str)>,
) -> Option<usize> {
    let mut prev = GENESIS_HASH.to_owned();
    for (index, (event, stored)) in entries.into_iter().enumerate() {
        let expected = chain_hash(&prev, event);
        if !crate::tokens::constant_time_eq(expected.as_bytes(), stored.as_bytes()) {
            return Some(index);
        }
        prev = expected;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(events: &[&'static [u8]]) -> Vec<String> {
        let mut prev = GENESIS_HASH.to_owned();
        events
            .iter()
            .map(|event| {
                prev = chain_hash(&prev, event);
                prev.clone()
            })
            .collect()
    }

    #[test]
    fn the_genesis_hash_is_64_zeros() {
        assert_eq!(GENESIS_HASH.len(), 64);
        assert!(GENESIS_HASH.bytes().all(|b| b == b'0'));
    }

    #[test]
    fn a_link_is_sha256_over_the_domain_the_previous_hash_and_the_event() {
        let expected = crate::tokens::sha256_hex(
            format!("confide-audit-v1\n{GENESIS_HASH}\n{{\"a\":1}}").as_bytes(),
        );
        assert_eq!(chain_hash(GENESIS_HASH, b"{\"a\":1}"), expected);
    }

    #[test]
    fn an_intact_chain_verifies() {
        let events: [&[u8]; 3] = [b"login", b"role changed", b"logout"];
        let hashes = chain(&events);
        let entries = events
            .iter()
            .copied()
            .zip(hashes.iter().map(String::as_str));
        assert_eq!(first_broken_link(entries), None);
    }

    #[test]
    fn editing_or_deleting_an_entry_is_detected_where_it_happened() {
        let events: [&[u8]; 3] = [b"login", b"role changed", b"logout"];
        let hashes = chain(&events);
        let edited: [&[u8]; 3] = [b"login", b"role unchanged", b"logout"];
        let entries = edited
            .iter()
            .copied()
            .zip(hashes.iter().map(String::as_str));
        assert_eq!(first_broken_link(entries), Some(1));

        let without_second = [
            (events[0], hashes[0].as_str()),
            (events[2], hashes[2].as_str()),
        ];
        assert_eq!(first_broken_link(without_second), Some(1));
    }
}
