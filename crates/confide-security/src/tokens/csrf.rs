use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::random::fill_random;
use super::signed::Mac;

const DOMAIN: &[u8] = b"confide-csrf-v1";
const NONCE_LEN: usize = 16;
const MAX_TOKEN_LEN: usize = 128;

fn csrf_mac(key: &[u8; 32], session_hash: &str, nonce: &[u8]) -> aws_lc_rs::hmac::Tag {
    let mut mac = Mac::new(key, DOMAIN);
    mac.field(session_hash.as_bytes()).field(nonce);
    mac.finish()
}

/// A CSRF token bound to one session (signed double-submit): `<nonce>.<HMAC>` in base64url.
/// The random nonce makes every token different, so compression attacks learn nothing.
pub fn csrf_token(key: &[u8; 32], session_hash: &str) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    let mac = csrf_mac(key, session_hash, &nonce);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(nonce),
        URL_SAFE_NO_PAD.encode(mac.as_ref())
    )
}

/// Whether a presented CSRF token was made by us for this session (constant-time check).
pub fn verify_csrf_token(key: &[u8; 32], session_hash: &str, presented: &str) -> bool {
    if presented.len() > MAX_TOKEN_LEN {
        return false;
    }
    let Some((nonce, mac)) = presented.split_once('.') else {
        return false;
    };
    let (Ok(nonce), Ok(mac)) = (URL_SAFE_NO_PAD.decode(nonce), URL_SAFE_NO_PAD.decode(mac)) else {
        return false;
    };
    if nonce.len() != NONCE_LEN {
        return false;
    }
    super::constant_time_eq(csrf_mac(key, session_hash, &nonce).as_ref(), &mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [9; 32];
    const SESSION: &str = "4f6a1e0c9b7d3a2f8e5c1b0a9d8c7b6a5f4e3d2c1b0a99887766554433221100";

    #[test]
    fn a_csrf_token_verifies_for_its_own_session() {
        let token = csrf_token(&KEY, SESSION);
        assert!(verify_csrf_token(&KEY, SESSION, &token));
    }

    #[test]
    fn each_csrf_token_is_different() {
        assert_ne!(csrf_token(&KEY, SESSION), csrf_token(&KEY, SESSION));
    }

    #[test]
    fn a_csrf_token_from_another_session_is_refused() {
        let token = csrf_token(&KEY, "another session hash");
        assert!(!verify_csrf_token(&KEY, SESSION, &token));
    }

    #[test]
    fn a_csrf_token_made_with_another_key_is_refused() {
        let token = csrf_token(&[1; 32], SESSION);
        assert!(!verify_csrf_token(&KEY, SESSION, &token));
    }

    #[test]
    fn tampered_or_garbage_csrf_tokens_are_refused() {
        let token = csrf_token(&KEY, SESSION);
        let mut tampered = token.clone().into_bytes();
        tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        for bad in [
            "",
            ".",
            "abc",
            tampered.as_str(),
            &token[..token.len() - 1],
            &format!("{token}.x"),
            &"A".repeat(4096),
        ] {
            assert!(!verify_csrf_token(&KEY, SESSION, bad), "{bad:?}");
        }
    }
}
