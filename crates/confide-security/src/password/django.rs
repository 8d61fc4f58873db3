//! Django's `pbkdf2_sha256` hashes, so users migrated from a Django deployment keep their passwords.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::Hmac;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Upper bound on iterations: a stored hash must not be able to make one login burn minutes.
const MAX_ITERATIONS: u32 = 10_000_000;
const MAX_SALT_BYTES: usize = 128;

/// A parsed `pbkdf2_sha256$<iterations>$<salt>$<base64 hash>` string.
pub(super) struct DjangoPbkdf2 {
    iterations: u32,
    salt: String,
    hash: [u8; 32],
}

impl DjangoPbkdf2 {
    pub(super) fn parse(encoded: &str) -> Option<Self> {
        let mut parts = encoded.split('$');
        let (Some("pbkdf2_sha256"), Some(iterations), Some(salt), Some(hash), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let iterations = parse_iterations(iterations)?;
        if salt.is_empty() || salt.len() > MAX_SALT_BYTES {
            return None;
        }
        let hash: [u8; 32] = STANDARD.decode(hash).ok()?.try_into().ok()?;
        Some(Self {
            iterations,
            salt: salt.to_owned(),
            hash,
        })
    }

    pub(super) fn verify(&self, password: &[u8]) -> bool {
        let mut computed = [0u8; 32];
        if pbkdf2::pbkdf2::<Hmac<Sha256>>(
            password,
            self.salt.as_bytes(),
            self.iterations,
            &mut computed,
        )
        .is_err()
        {
            return false;
        }
        computed.ct_eq(&self.hash).into()
    }
}

fn parse_iterations(text: &str) -> Option<u32> {
    let canonical = !text.is_empty()
        && text.len() <= 8
        && !text.starts_with('0')
        && text.bytes().all(|b| b.is_ascii_digit());
    let iterations: u32 = if canonical {
        text.parse().ok()?
    } else {
        return None;
    };
    (iterations <= MAX_ITERATIONS).then_some(iterations)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "5YGFAWS1Cu+xASixJYSbolqCUgtwAdKNxflr6PT+Mys=";

    #[test]
    fn a_well_formed_django_hash_parses() {
        let parsed = DjangoPbkdf2::parse(&format!("pbkdf2_sha256$1000000$seasalt${HASH}")).unwrap();
        assert_eq!(parsed.iterations, 1_000_000);
        assert_eq!(parsed.salt, "seasalt");
    }

    #[test]
    fn malformed_django_hashes_are_refused() {
        for bad in [
            "",
            "pbkdf2_sha256",
            "pbkdf2_sha256$$seasalt$5YGF",
            "pbkdf2_sha1$1000$seasalt$5YGFAWS1Cu+xASixJYSbolqCUgtwAdKNxflr6PT+Mys=",
            "pbkdf2_sha256$-1$seasalt$5YGFAWS1Cu+xASixJYSbolqCUgtwAdKNxflr6PT+Mys=",
            "pbkdf2_sha256$+10$seasalt$5YGFAWS1Cu+xASixJYSbolqCUgtwAdKNxflr6PT+Mys=",
            "pbkdf2_sha256$0$seasalt$5YGFAWS1Cu+xASixJYSbolqCUgtwAdKNxflr6PT+Mys=",
            "pbkdf2_sha256$99999999999$seasalt$5YGFAWS1Cu+xASixJYSbolqCUgtwAdKNxflr6PT+Mys=",
            "pbkdf2_sha256$1000$$5YGFAWS1Cu+xASixJYSbolqCUgtwAdKNxflr6PT+Mys=",
            "pbkdf2_sha256$1000$seasalt$not base64",
            "pbkdf2_sha256$1000$seasalt$5YGFAWS1Cu+xASixJYSbolqCUgtwAdKNxflr6PT+",
            "pbkdf2_sha256$1000$seasalt$5YGFAWS1Cu+xASixJYSbolqCUgtwAdKNxflr6PT+Mys=$extra",
        ] {
            assert!(
                DjangoPbkdf2::parse(bad).is_none(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn iteration_counts_above_ten_million_are_refused() {
        assert!(parse_iterations("10000000").is_some());
        assert!(parse_iterations("10000001").is_none());
        assert!(parse_iterations("4294967295").is_none());
    }
}
