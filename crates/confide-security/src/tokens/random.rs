use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Error, Result};

/// Largest token [`random_token`] makes; more entropy than this is never needed.
pub const MAX_RANDOM_TOKEN_BYTES: usize = 1024;

/// Fills `buf` from the OS, falling back to aws-lc's generator if the first source fails.
pub(crate) fn try_fill_random(buf: &mut [u8]) -> Result<()> {
    if getrandom::fill(buf).is_ok() {
        return Ok(());
    }
    aws_lc_rs::rand::fill(buf).map_err(|_| Error::Random)
}

/// Like [`try_fill_random`] for callers that cannot go on without randomness.
///
/// # Panics
/// Only if both the operating system and aws-lc cannot produce random bytes: no secure token
/// can be made then, and carrying on with a predictable one would be worse.
pub(crate) fn fill_random(buf: &mut [u8]) {
    if try_fill_random(buf).is_err() {
        panic!("no secure random number generator is available");
    }
}

/// A URL-safe random token (base64url, no padding) from `bytes` random bytes, for any opaque
/// secret that only has to be unguessable. `bytes` is capped at [`MAX_RANDOM_TOKEN_BYTES`].
///
/// # Panics
/// Only if no secure random source works at all (as do the other token makers here).
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes.min(MAX_RANDOM_TOKEN_BYTES)];
    fill_random(&mut buf);
    URL_SAFE_NO_PAD.encode(&buf)
}

/// Lower-case hex SHA-256, the form in which we store tokens so a database leak reveals none.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Compares secrets without leaking, through timing, where they first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_are_url_safe_and_never_repeat() {
        let a = random_token(32);
        let b = random_token(32);
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn absurd_token_sizes_are_capped_instead_of_exhausting_memory() {
        assert_eq!(random_token(0), "");
        assert_eq!(random_token(usize::MAX).len(), 1366);
    }

    #[test]
    fn sha256_hex_matches_the_standard_test_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn constant_time_eq_needs_equal_length_and_content() {
        assert!(constant_time_eq(b"same", b"same"));
        assert!(!constant_time_eq(b"same", b"sane"));
        assert!(!constant_time_eq(b"same", b"same!"));
        assert!(constant_time_eq(b"", b""));
    }
}
