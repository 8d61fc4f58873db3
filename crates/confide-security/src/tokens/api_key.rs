use secrecy::SecretString;
use sha2::{Digest, Sha256};

use super::random::{constant_time_eq, fill_random};

const SCHEME: &str = "cfk_";
const LOOKUP_LEN: usize = 8;
const LOOKUP_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// 256 bits as lower-case hex: its alphabet cannot contain the `_` separator.
const SECRET_HEX_LEN: usize = 64;
/// Length of every API key: `cfk_` + 8-character lookup prefix + `_` + 64 hex digits.
pub const API_KEY_LEN: usize = SCHEME.len() + LOOKUP_LEN + 1 + SECRET_HEX_LEN;

/// A freshly made API key: show `full` once, store `prefix` (to find the key) and `hash`.
#[derive(Debug)]
pub struct NewApiKey {
    /// `cfk_<prefix>_<secret>`, shown to its owner exactly once.
    pub full: SecretString,
    /// Eight characters `[a-z0-9]` to look the key up by; not secret.
    pub prefix: String,
    /// Lower-case hex SHA-256 of `full`; the only form that is stored.
    pub hash: String,
}

/// Makes a new API key with a random lookup prefix and a 256-bit secret.
pub fn new_api_key() -> NewApiKey {
    let prefix = random_lookup_prefix();
    let mut secret = [0u8; SECRET_HEX_LEN / 2];
    fill_random(&mut secret);
    let full = format!("{SCHEME}{prefix}_{}", hex::encode(secret));
    let hash = hex::encode(Sha256::digest(full.as_bytes()));
    NewApiKey {
        full: SecretString::from(full),
        prefix,
        hash,
    }
}

fn random_lookup_prefix() -> String {
    let mut prefix = String::with_capacity(LOOKUP_LEN);
    let mut pool = [0u8; 32];
    while prefix.len() < LOOKUP_LEN {
        fill_random(&mut pool);
        // Rejection sampling: 252 = 7 * 36, so every character is equally likely.
        for byte in pool.iter().filter(|b| **b < 252) {
            if prefix.len() == LOOKUP_LEN {
                break;
            }
            prefix.push(char::from(LOOKUP_ALPHABET[usize::from(*byte) % 36]));
        }
    }
    prefix
}

/// The lookup prefix of a presented key if it has exactly our format, so malformed keys are
/// refused before any database lookup.
pub fn parse_api_key(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(SCHEME)?;
    if presented.len() != API_KEY_LEN {
        return None;
    }
    let (prefix, rest) = rest.split_at_checked(LOOKUP_LEN)?;
    let secret = rest.strip_prefix('_')?;
    let prefix_ok = prefix
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let secret_ok = secret.len() == SECRET_HEX_LEN
        && secret
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (prefix_ok && secret_ok).then_some(prefix)
}

/// Whether a presented key is the one whose hash was stored, compared in constant time.
pub fn api_key_matches(presented: &str, stored_hash: &str) -> bool {
    if parse_api_key(presented).is_none() {
        return false;
    }
    let Ok(stored) = hex::decode(stored_hash) else {
        return false;
    };
    constant_time_eq(&Sha256::digest(presented.as_bytes()), &stored)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn a_new_api_key_has_the_documented_shape() {
        let key = new_api_key();
        let full = key.full.expose_secret();
        assert_eq!(full.len(), API_KEY_LEN);
        assert!(full.starts_with(&format!("cfk_{}_", key.prefix)));
        assert_eq!(parse_api_key(full), Some(key.prefix.as_str()));
        assert_eq!(key.hash.len(), 64);
    }

    #[test]
    fn the_key_matches_its_stored_hash_and_nothing_else_does() {
        let key = new_api_key();
        let other = new_api_key();
        assert!(api_key_matches(key.full.expose_secret(), &key.hash));
        assert!(!api_key_matches(other.full.expose_secret(), &key.hash));
        assert!(!api_key_matches(key.full.expose_secret(), "not hex"));
        assert!(!api_key_matches(key.full.expose_secret(), ""));
    }

    #[test]
    fn the_upper_case_version_of_a_key_is_refused() {
        let key = new_api_key();
        let upper = key
            .full
            .expose_secret()
            .to_uppercase()
            .replace("CFK_", "cfk_");
        assert!(!api_key_matches(&upper, &key.hash));
    }

    #[test]
    fn malformed_keys_are_refused_before_any_lookup() {
        let good = format!("cfk_abcd1234_{}", "0f".repeat(32));
        assert_eq!(parse_api_key(&good), Some("abcd1234"));
        for bad in [
            String::new(),
            "cfk_".to_owned(),
            good.replace("cfk_", "cfx_"),
            format!("{good}0"),
            good[..good.len() - 1].to_owned(),
            format!("cfk_abcd123_{}0", "0f".repeat(32)),
            format!("cfk_ABCD1234_{}", "0f".repeat(32)),
            format!("cfk_abcd-234_{}", "0f".repeat(32)),
            format!("cfk_abcd1234-{}", "0f".repeat(32)),
            format!("cfk_abcd1234_{}", "0F".repeat(32)),
            format!("cfk_abcd1234_{}_", "0f".repeat(31)),
            format!("cfk_abcd1234_{}é", "0f".repeat(31)),
            format!("cfk_abcdé234_{}", "0f".repeat(31)),
        ] {
            assert_eq!(parse_api_key(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lookup_prefixes_use_only_lower_case_letters_and_digits() {
        for _ in 0..50 {
            let prefix = random_lookup_prefix();
            assert_eq!(prefix.len(), LOOKUP_LEN);
            assert!(
                prefix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            );
        }
    }
}
