//! Chat tokens (seed 000, step 2): who may use which chat channel, until when, sealed
//! ([`crate::sealing`], AES-256-GCM) under the chat-token domain. The widget holds the token and
//! presents it to the channel auth endpoint and with every message; only the server can read or
//! mint one. Each token names its key id, so a key can rotate while chats started under the
//! previous key keep working until their tokens expire.

use serde::{Deserialize, Serialize};

use crate::sealing::{Domain, SealingKeys};
use crate::{Error, Result};

/// Tokens longer than this are refused before any decoding.
pub const MAX_CHAT_TOKEN_LEN: usize = 2048;

/// What a chat token grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatClaims {
    /// The organization the bot belongs to.
    pub org: String,
    /// The bot id.
    pub bot: String,
    /// The chat (conversation) id; the token opens only `private-chat-{chat}`.
    pub chat: String,
    /// The visitor's pseudonymous id.
    pub visitor: String,
    /// The page origin the chat was started from, if the browser sent one.
    pub origin: Option<String>,
    /// Issued and expiry times, Unix seconds.
    pub iat: i64,
    pub exp: i64,
    /// The verified identity (identity token `sub`) the chat belongs to, once verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The language the widget asked for when the chat started (a primary language subtag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
}

/// The current key (which seals) and retired keys (which still open older tokens).
pub struct ChatTokenKeys(SealingKeys);

impl ChatTokenKeys {
    pub fn new(current: &[u8; 32], previous: &[[u8; 32]]) -> ChatTokenKeys {
        ChatTokenKeys(SealingKeys::new(Domain::CHAT_TOKEN, current, previous))
    }

    pub fn current_kid(&self) -> &str {
        self.0.current_kid()
    }

    /// `v1.<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>`.
    pub fn seal(&self, claims: &ChatClaims) -> Result<String> {
        let plaintext = serde_json::to_vec(claims).map_err(|_| Error::Signing)?;
        self.0.seal(&plaintext, "")
    }

    /// Decrypts and checks expiry against `now` (Unix seconds). Tampered, foreign-key, malformed and
    /// expired tokens all fail; the caller then checks bot, chat and channel.
    pub fn open(&self, token: &str, now: i64) -> Result<ChatClaims> {
        const WHAT: &str = "chat token";
        if token.len() > MAX_CHAT_TOKEN_LEN {
            return Err(Error::InvalidToken(WHAT));
        }
        let plaintext = self.0.open(token, "", WHAT)?;
        let claims: ChatClaims =
            serde_json::from_slice(&plaintext).map_err(|_| Error::InvalidToken(WHAT))?;
        if claims.exp <= now {
            return Err(Error::TokenExpired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> ChatClaims {
        ChatClaims {
            org: "org-1".into(),
            bot: "bot-1".into(),
            chat: "chat-1".into(),
            visitor: "visitor-1".into(),
            origin: Some("https://shop.example.com".into()),
            iat: 1_000,
            exp,
            sub: None,
            lang: Some("nb".into()),
        }
    }

    #[test]
    fn a_sealed_token_opens_to_the_same_claims() {
        let keys = ChatTokenKeys::new(&[7; 32], &[]);
        let token = keys.seal(&claims(2_000)).unwrap();
        assert!(token.starts_with(&format!("v1.{}.", keys.current_kid())));
        assert_eq!(keys.open(&token, 1_500).unwrap(), claims(2_000));
    }

    #[test]
    fn two_tokens_for_the_same_chat_differ() {
        let keys = ChatTokenKeys::new(&[7; 32], &[]);
        assert_ne!(
            keys.seal(&claims(2_000)).unwrap(),
            keys.seal(&claims(2_000)).unwrap()
        );
    }

    #[test]
    fn an_expired_token_is_refused() {
        let keys = ChatTokenKeys::new(&[7; 32], &[]);
        let token = keys.seal(&claims(2_000)).unwrap();
        assert!(matches!(keys.open(&token, 2_000), Err(Error::TokenExpired)));
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let keys = ChatTokenKeys::new(&[7; 32], &[]);
        let token = keys.seal(&claims(2_000)).unwrap();
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            if let Ok(tampered) = String::from_utf8(bytes)
                && tampered != token
            {
                assert!(keys.open(&tampered, 1_500).is_err(), "byte {i}");
            }
        }
    }

    #[test]
    fn a_token_from_another_key_is_refused_and_a_retired_key_still_opens() {
        let old = ChatTokenKeys::new(&[1; 32], &[]);
        let token = old.seal(&claims(2_000)).unwrap();
        assert!(
            ChatTokenKeys::new(&[2; 32], &[])
                .open(&token, 1_500)
                .is_err()
        );
        let rotated = ChatTokenKeys::new(&[2; 32], &[[1; 32]]);
        assert_eq!(rotated.open(&token, 1_500).unwrap(), claims(2_000));
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let keys = ChatTokenKeys::new(&[7; 32], &[]);
        for junk in [
            "",
            "v1",
            "v1..",
            "v1.x.y",
            "v2.a.b",
            &"v1.a.".repeat(1000),
            "v1.00000000.AAAA",
        ] {
            assert!(keys.open(junk, 0).is_err());
        }
    }
}
