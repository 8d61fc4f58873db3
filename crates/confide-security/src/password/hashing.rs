use std::sync::LazyLock;

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use secrecy::{ExposeSecret, SecretString};

use super::django::DjangoPbkdf2;
use crate::tokens::try_fill_random;
use crate::{Error, Result};

// OWASP Password Storage Cheat Sheet: argon2id, 19 MiB, 2 iterations, 1 lane.
const M_COST_KIB: u32 = 19_456;
const T_COST: u32 = 2;
const P_COST: u32 = 1;
const OUTPUT_LEN: usize = 32;
const SALT_LEN: usize = 16;

// Bounds for stored hashes, so a tampered or imported hash cannot exhaust memory or CPU.
// Django's default (m=102400, t=2, p=8) is well inside them.
const MAX_M_COST_KIB: u32 = 262_144;
const MAX_T_COST: u32 = 16;
const MAX_P_COST: u32 = 16;
const MAX_ENCODED_LEN: usize = 512;
/// Longer inputs are not passwords but attempts to make hashing expensive.
const MAX_PASSWORD_BYTES: usize = 4096;

/// Outcome of a login attempt; `needs_rehash` asks the caller to store a fresh [`hash_password`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Wrong password, unknown user, or unusable stored hash.
    Invalid,
    /// Right password; rehash when the stored hash is imported or uses outdated parameters.
    Valid {
        /// The stored hash should be replaced by one with the current algorithm and parameters.
        needs_rehash: bool,
    },
}

impl Verification {
    /// True for the right password, whatever the rehash advice.
    pub fn is_valid(&self) -> bool {
        matches!(self, Verification::Valid { .. })
    }
}

fn current_hasher() -> Result<Argon2<'static>> {
    let params =
        Params::new(M_COST_KIB, T_COST, P_COST, Some(OUTPUT_LEN)).map_err(|_| Error::Hashing)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password with argon2id and OWASP's parameters, as a PHC string to store.
/// CPU and memory heavy: from async code use [`super::hash_password_blocking`].
pub fn hash_password(password: &SecretString) -> Result<String> {
    let mut salt = [0u8; SALT_LEN];
    try_fill_random(&mut salt)?;
    let hash = current_hasher()?
        .hash_password_with_salt(password.expose_secret().as_bytes(), &salt)
        .map_err(|_| Error::Hashing)?;
    Ok(hash.to_string())
}

/// A stored hash in one of the formats we accept.
enum StoredHash {
    Argon2id {
        hash: Box<PasswordHash>,
        needs_rehash: bool,
    },
    DjangoPbkdf2(DjangoPbkdf2),
}

impl StoredHash {
    fn parse(encoded: &str) -> Option<Self> {
        if encoded.len() > MAX_ENCODED_LEN {
            return None;
        }
        if encoded.starts_with("$argon2id$") {
            let (hash, outdated) = parse_argon2id(encoded)?;
            return Some(StoredHash::Argon2id {
                hash: Box::new(hash),
                needs_rehash: outdated,
            });
        }
        // Django writes `argon2` + the PHC string.
        if let Some(phc) = encoded.strip_prefix("argon2")
            && phc.starts_with("$argon2id$")
        {
            let (hash, _) = parse_argon2id(phc)?;
            return Some(StoredHash::Argon2id {
                hash: Box::new(hash),
                needs_rehash: true,
            });
        }
        if encoded.starts_with("pbkdf2_sha256$") {
            return DjangoPbkdf2::parse(encoded).map(StoredHash::DjangoPbkdf2);
        }
        None
    }

    fn verify(&self, password: &[u8]) -> Verification {
        let (matches, needs_rehash) = match self {
            StoredHash::Argon2id { hash, needs_rehash } => (
                Argon2::default()
                    .verify_password(password, hash.as_ref())
                    .is_ok(),
                *needs_rehash,
            ),
            StoredHash::DjangoPbkdf2(hash) => (hash.verify(password), true),
        };
        if matches {
            Verification::Valid { needs_rehash }
        } else {
            Verification::Invalid
        }
    }
}

/// Parses a PHC argon2id string within our bounds; the flag says it differs from current parameters.
fn parse_argon2id(phc: &str) -> Option<(PasswordHash, bool)> {
    let hash = PasswordHash::new(phc).ok()?;
    if hash.algorithm.as_str() != "argon2id" || hash.version != Some(0x13) {
        return None;
    }
    let salt_len = hash.salt.as_ref()?.len();
    let output_len = hash.hash.as_ref()?.len();
    let params = Params::try_from(&hash).ok()?;
    let within_bounds = (8..=64).contains(&salt_len)
        && (16..=64).contains(&output_len)
        && params.m_cost() <= MAX_M_COST_KIB
        && params.t_cost() <= MAX_T_COST
        && params.p_cost() <= MAX_P_COST
        && params.keyid().is_empty()
        && params.data().is_empty();
    if !within_bounds {
        return None;
    }
    let outdated = params.m_cost() != M_COST_KIB
        || params.t_cost() != T_COST
        || params.p_cost() != P_COST
        || output_len != OUTPUT_LEN;
    Some((hash, outdated))
}

/// Computed once: verifying an unknown user against it costs as much as a real login.
static DUMMY_HASH: LazyLock<Option<PasswordHash>> = LazyLock::new(|| {
    let mut salt = [0u8; SALT_LEN];
    try_fill_random(&mut salt).ok()?;
    current_hasher()
        .ok()?
        .hash_password_with_salt(b"confide: no such user", &salt)
        .ok()
});

fn spend_time_like_a_real_verification(password: &[u8]) {
    if let Some(dummy) = DUMMY_HASH.as_ref() {
        let _ = Argon2::default().verify_password(password, dummy);
    }
}

/// Checks a password against a stored hash (ours or imported from Django) in constant time.
/// `None` is an unknown user: it costs the same as a real check and is always `Invalid`.
pub fn verify_password(password: &SecretString, stored: Option<&str>) -> Verification {
    let password = password.expose_secret().as_bytes();
    let stored = stored.and_then(StoredHash::parse);
    match stored {
        Some(stored) if password.len() <= MAX_PASSWORD_BYTES => stored.verify(password),
        _ => {
            let capped = password.get(..MAX_PASSWORD_BYTES).unwrap_or(password);
            spend_time_like_a_real_verification(capped);
            Verification::Invalid
        }
    }
}

/// Checks a hash handed to an import (e.g. users migrated from Django) before it is stored,
/// so a malformed or unsupported hash fails loudly at import and not silently at login.
pub fn validate_imported_hash(hash: &str) -> Result<()> {
    StoredHash::parse(hash)
        .map(|_| ())
        .ok_or(Error::MalformedHash)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Django 5.2: make_password("correct horse battery staple", salt="seasalt",
    // hasher="pbkdf2_sha256") with 1,000,000 iterations.
    const DJANGO_PBKDF2: &str =
        "pbkdf2_sha256$1000000$seasalt$5YGFAWS1Cu+xASixJYSbolqCUgtwAdKNxflr6PT+Mys=";
    // The same with 1,000 iterations (an old Django default is lower still), to keep tests quick.
    const DJANGO_PBKDF2_FEW: &str =
        "pbkdf2_sha256$1000$seasalt$3xmXbyk2QpiyNcnoBbzRPwEBsYPTbDlRdtmLyBvQltA=";
    // Django's Argon2PasswordHasher (argon2-cffi 25.1, time_cost=2, memory_cost=102400,
    // parallelism=8) for "correct horse battery staple".
    const DJANGO_ARGON2: &str = "argon2$argon2id$v=19$m=102400,t=2,p=8$wKNtRvxHUhaAkpjrtwLYVQ$xxFlIz8WtEkQHunSPWjVaWZ/6jCFAs+xX4hNXrOhdZU";
    // The same, for a password outside ASCII.
    const DJANGO_ARGON2_UNICODE: &str = "argon2$argon2id$v=19$m=102400,t=2,p=8$c20kIcwU1K+bTDzYmFqqXw$qC6w0pRI+0EHs1LPTWy/u58lqszvo/4rrvNdeSq/lsw";

    fn secret(s: &str) -> SecretString {
        SecretString::from(s)
    }

    #[test]
    fn a_fresh_hash_is_argon2id_with_owasp_parameters_and_verifies() {
        let stored = hash_password(&secret("a long and unusual passphrase")).unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert_eq!(
            verify_password(&secret("a long and unusual passphrase"), Some(&stored)),
            Verification::Valid {
                needs_rehash: false
            }
        );
    }

    #[test]
    fn the_wrong_password_is_invalid() {
        let stored = hash_password(&secret("a long and unusual passphrase")).unwrap();
        assert_eq!(
            verify_password(&secret("a long and unusual passphrasE"), Some(&stored)),
            Verification::Invalid
        );
    }

    #[test]
    fn two_hashes_of_one_password_differ_by_their_salt() {
        let a = hash_password(&secret("same password twice")).unwrap();
        let b = hash_password(&secret("same password twice")).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn an_unknown_user_is_invalid() {
        assert_eq!(
            verify_password(&secret("anything at all"), None),
            Verification::Invalid
        );
    }

    #[test]
    fn a_django_pbkdf2_hash_verifies_and_asks_to_be_rehashed() {
        assert_eq!(
            verify_password(&secret("correct horse battery staple"), Some(DJANGO_PBKDF2)),
            Verification::Valid { needs_rehash: true }
        );
    }

    #[test]
    fn the_wrong_password_against_a_django_pbkdf2_hash_is_invalid() {
        assert_eq!(
            verify_password(
                &secret("correct horse battery staple"),
                Some(DJANGO_PBKDF2_FEW)
            ),
            Verification::Valid { needs_rehash: true }
        );
        assert_eq!(
            verify_password(
                &secret("correct horse battery stapler"),
                Some(DJANGO_PBKDF2_FEW)
            ),
            Verification::Invalid
        );
    }

    #[test]
    fn a_django_argon2_hash_verifies_and_asks_to_be_rehashed() {
        assert_eq!(
            verify_password(&secret("correct horse battery staple"), Some(DJANGO_ARGON2)),
            Verification::Valid { needs_rehash: true }
        );
        assert_eq!(
            verify_password(
                &secret("Ünïcödé pässwörd ✓ 12"),
                Some(DJANGO_ARGON2_UNICODE)
            ),
            Verification::Valid { needs_rehash: true }
        );
    }

    #[test]
    fn an_argon2id_hash_with_older_parameters_verifies_and_asks_to_be_rehashed() {
        let params = Params::new(8192, 1, 1, Some(32)).unwrap();
        let old = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_with_salt(b"an older stored passphrase", b"0123456789abcdef")
            .unwrap()
            .to_string();
        assert_eq!(
            verify_password(&secret("an older stored passphrase"), Some(&old)),
            Verification::Valid { needs_rehash: true }
        );
    }

    #[test]
    fn other_argon2_variants_and_versions_are_refused() {
        let argon2i = "$argon2i$v=19$m=8192,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$oTq7QmVdJGr5d6Uk+sqm7pK4xs1ibGtRuKjqrOBtDTQ";
        let version_16 = "$argon2id$v=16$m=8192,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$oTq7QmVdJGr5d6Uk+sqm7pK4xs1ibGtRuKjqrOBtDTQ";
        for stored in [argon2i, version_16] {
            assert!(validate_imported_hash(stored).is_err(), "{stored}");
            assert_eq!(
                verify_password(&secret("whatever"), Some(stored)),
                Verification::Invalid
            );
        }
    }

    #[test]
    fn a_stored_hash_demanding_huge_memory_or_time_is_refused_without_running_it() {
        for stored in [
            "$argon2id$v=19$m=4294967295,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$oTq7QmVdJGr5d6Uk+sqm7pK4xs1ibGtRuKjqrOBtDTQ",
            "$argon2id$v=19$m=19456,t=4294967295,p=1$MDEyMzQ1Njc4OWFiY2RlZg$oTq7QmVdJGr5d6Uk+sqm7pK4xs1ibGtRuKjqrOBtDTQ",
            "$argon2id$v=19$m=19456,t=2,p=255$MDEyMzQ1Njc4OWFiY2RlZg$oTq7QmVdJGr5d6Uk+sqm7pK4xs1ibGtRuKjqrOBtDTQ",
            "pbkdf2_sha256$2000000000$seasalt$5YGFAWS1Cu+xASixJYSbolqCUgtwAdKNxflr6PT+Mys=",
        ] {
            assert!(validate_imported_hash(stored).is_err(), "{stored}");
            assert_eq!(
                verify_password(&secret("whatever"), Some(stored)),
                Verification::Invalid
            );
        }
    }

    #[test]
    fn malformed_stored_hashes_are_invalid_and_never_panic() {
        for stored in [
            "",
            "$",
            "$$$$$$",
            "argon2",
            "argon2$",
            "argon2$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$",
            "$argon2id$v=19$m=0,t=0,p=0$MDEyMzQ1Njc4OWFiY2RlZg$oTq7QmVdJGr5d6Uk+sqm7pK4xs1ibGtRuKjqrOBtDTQ",
            "$argon2id$v=19$m=19456,t=2,p=1,keyid=abc$MDEyMzQ1Njc4OWFiY2RlZg$oTq7QmVdJGr5d6Uk+sqm7pK4xs1ibGtRuKjqrOBtDTQ",
            "bcrypt$$2b$12$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
            "md5$seasalt$0123456789abcdef0123456789abcdef",
            "pbkdf2_sha256$1000000$seasalt$",
            "pbkdf2_sha256$1000000$seasalt$%%%%",
            "pbkdf2_sha256$abc$seasalt$5YGFAWS1Cu+xASixJYSbolqCUgtwAdKNxflr6PT+Mys=",
            "plaintext password",
            "\u{0}\u{1}\u{2}",
            &"$argon2id$".repeat(100),
        ] {
            assert!(validate_imported_hash(stored).is_err(), "{stored:?}");
        }
        // Verification parses the same way, then spends the time of a real check.
        for stored in [
            "",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            "pbkdf2_sha256$1000$x$%%",
        ] {
            assert_eq!(
                verify_password(&secret("whatever"), Some(stored)),
                Verification::Invalid,
                "{stored:?}"
            );
        }
    }

    #[test]
    fn imports_accept_exactly_our_format_and_djangos() {
        let ours = hash_password(&secret("a long and unusual passphrase")).unwrap();
        for good in [ours.as_str(), DJANGO_PBKDF2, DJANGO_ARGON2] {
            assert!(validate_imported_hash(good).is_ok(), "{good}");
        }
        assert!(matches!(
            validate_imported_hash("sha1$salt$abc"),
            Err(Error::MalformedHash)
        ));
    }

    #[test]
    fn an_absurdly_long_password_is_invalid_without_hashing_it_in_full() {
        let stored = hash_password(&secret("a long and unusual passphrase")).unwrap();
        let huge = secret(&"x".repeat(1 << 20));
        assert_eq!(verify_password(&huge, Some(&stored)), Verification::Invalid);
        assert_eq!(verify_password(&huge, None), Verification::Invalid);
    }
}
