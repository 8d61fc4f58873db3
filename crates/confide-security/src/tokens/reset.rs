use sha2::{Digest, Sha256};

use super::signed::{self, Mac, Unverified};

const DOMAIN: &[u8] = b"confide-password-reset-v1";

fn reset_mac(
    key: &[u8; 32],
    user_id: &str,
    expires_at: i64,
    password_hash: &str,
    last_login: Option<i64>,
) -> aws_lc_rs::hmac::Tag {
    let last_login = match last_login {
        Some(at) => [&[1u8][..], &at.to_be_bytes()].concat(),
        None => vec![0u8],
    };
    let mut mac = Mac::new(key, DOMAIN);
    mac.field(user_id.as_bytes())
        .field(&expires_at.to_be_bytes())
        .field(&Sha256::digest(password_hash.as_bytes()))
        .field(&last_login);
    mac.finish()
}

/// A URL-safe password reset token for a user. It is bound to the current password hash and
/// last login, so it works once (the reset changes the hash) and dies if either changes.
pub fn issue_reset_token(
    key: &[u8; 32],
    user_id: &str,
    password_hash: &str,
    last_login: Option<i64>,
    expires_at: i64,
) -> String {
    let mac = reset_mac(key, user_id, expires_at, password_hash, last_login);
    signed::encode(user_id, expires_at, &mac)
}

/// The user id and expiry a reset token claims, unverified: the caller loads that user and
/// then calls [`verify_reset_token`] with the user's current password hash and last login.
pub fn parse_reset_token(token: &str) -> Option<(String, i64)> {
    Unverified::parse(token).map(|t| (t.id, t.expires_at))
}

/// Whether a reset token is authentic, unexpired at `now`, and still matches the user's
/// current password hash and last login (so it cannot be replayed after a reset).
pub fn verify_reset_token(
    key: &[u8; 32],
    token: &str,
    password_hash: &str,
    last_login: Option<i64>,
    now: i64,
) -> bool {
    let Some(token) = Unverified::parse(token) else {
        return false;
    };
    let expected = reset_mac(key, &token.id, token.expires_at, password_hash, last_login);
    token.is_authentic_at(&expected, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];
    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA";
    const NOW: i64 = 1_750_000_000;

    fn token() -> String {
        issue_reset_token(&KEY, "user-42", HASH, Some(NOW - 3600), NOW + 3600)
    }

    #[test]
    fn a_fresh_reset_token_names_its_user_and_verifies() {
        let token = token();
        assert_eq!(
            parse_reset_token(&token),
            Some(("user-42".to_owned(), NOW + 3600))
        );
        assert!(verify_reset_token(
            &KEY,
            &token,
            HASH,
            Some(NOW - 3600),
            NOW
        ));
    }

    #[test]
    fn a_reset_token_is_url_safe() {
        assert!(
            token()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
    }

    #[test]
    fn a_reset_token_stops_working_once_the_password_changed() {
        let token = token();
        let new_hash = "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA";
        assert!(!verify_reset_token(
            &KEY,
            &token,
            new_hash,
            Some(NOW - 3600),
            NOW
        ));
    }

    #[test]
    fn a_reset_token_stops_working_after_a_new_login() {
        assert!(!verify_reset_token(
            &KEY,
            &token(),
            HASH,
            Some(NOW - 10),
            NOW
        ));
        assert!(!verify_reset_token(&KEY, &token(), HASH, None, NOW));
    }

    #[test]
    fn an_expired_reset_token_fails() {
        assert!(!verify_reset_token(
            &KEY,
            &token(),
            HASH,
            Some(NOW - 3600),
            NOW + 3600
        ));
        assert!(!verify_reset_token(
            &KEY,
            &token(),
            HASH,
            Some(NOW - 3600),
            NOW + 7200
        ));
    }

    #[test]
    fn a_reset_token_for_another_user_or_with_a_moved_expiry_fails() {
        let token = token();
        let (_, rest) = token.split_once('.').unwrap();
        let other_user = format!("{}.{rest}", signed_id("user-43"));
        assert!(!verify_reset_token(
            &KEY,
            &other_user,
            HASH,
            Some(NOW - 3600),
            NOW
        ));
        let mut parts: Vec<&str> = token.split('.').collect();
        let later = (NOW + 999_999).to_string();
        parts[1] = &later;
        assert!(!verify_reset_token(
            &KEY,
            &parts.join("."),
            HASH,
            Some(NOW - 3600),
            NOW
        ));
    }

    #[test]
    fn a_reset_token_signed_with_another_key_fails() {
        let forged = issue_reset_token(&[8; 32], "user-42", HASH, Some(NOW - 3600), NOW + 3600);
        assert!(!verify_reset_token(
            &KEY,
            &forged,
            HASH,
            Some(NOW - 3600),
            NOW
        ));
    }

    #[test]
    fn garbage_is_not_a_reset_token() {
        for bad in [
            "",
            ".",
            "..",
            "a.b.c",
            "dXNlcg.-5.AAAA",
            "dXNlcg.01.AAAA",
            "x.1.y.z",
        ] {
            assert_eq!(parse_reset_token(bad), None, "{bad:?}");
            assert!(!verify_reset_token(&KEY, bad, HASH, None, NOW));
        }
        assert_eq!(parse_reset_token(&"a".repeat(10_000)), None);
    }

    fn signed_id(id: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
    }
}
