use super::random::{random_token, sha256_hex};

/// 256 bits: guessing a live session must be hopeless.
const SESSION_TOKEN_BYTES: usize = 32;

/// A new session: the cookie value for the browser and the hash to store, so the database
/// never holds a usable session token.
pub fn new_session_token() -> (String, String) {
    let token = random_token(SESSION_TOKEN_BYTES);
    let hash = session_token_hash(&token);
    (token, hash)
}

/// The stored form of a session cookie value, to look the session up by.
pub fn session_token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_cookie_carries_256_bits_and_is_stored_only_as_its_hash() {
        let (token, hash) = new_session_token();
        assert_eq!(token.len(), 43);
        assert_eq!(hash.len(), 64);
        assert_ne!(token, hash);
        assert_eq!(session_token_hash(&token), hash);
    }

    #[test]
    fn two_sessions_never_share_a_token() {
        assert_ne!(new_session_token().0, new_session_token().0);
    }
}
