//! Sealing: AES-256-GCM over what only the server may read, for every purpose that needs it
//! (chat tokens, webhook signing secrets).
//!
//! Each purpose seals under its own domain label, bound into the associated data, so what one
//! purpose sealed never opens as another's, even under the same key. A seal may also be bound to
//! what it belongs to (a webhook secret to its endpoint's id), so it opens only there. And each
//! purpose keeps the keys it was rotated from: the current key seals, and opening tries the
//! current key, then the previous ones, so an operator can change a key without losing what the
//! old one sealed.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::zeroize::Zeroizing;
use sha2::{Digest, Sha256};

use crate::tokens::try_fill_random;
use crate::{Error, Result};

/// The format's version. Seals made before this module (one copy of this code per purpose, no
/// domain label) had the same shape but do not open: they were never released.
const VERSION: &str = "v1";
const NONCE_LEN: usize = 12;

/// The purpose of a seal, bound into its associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Domain(&'static str);

impl Domain {
    pub const CHAT_TOKEN: Domain = Domain("chat-token");
    pub const WEBHOOK_SECRET: Domain = Domain("webhook-secret");
    pub const INBOX_BACKUP_SECRET: Domain = Domain("inbox-backup-secret");

    pub fn label(self) -> &'static str {
        self.0
    }
}

struct SealingKey {
    /// Names the key in each seal, so opening goes straight to it.
    kid: String,
    cipher: Aes256Gcm,
}

impl SealingKey {
    fn new(key: &[u8; 32]) -> SealingKey {
        let mut hasher = Sha256::new();
        hasher.update(b"confide-sealing-kid\n");
        hasher.update(key);
        SealingKey {
            kid: hex::encode(&hasher.finalize()[..4]),
            cipher: Aes256Gcm::new(key.into()),
        }
    }
}

/// One purpose's sealing keys: the current one seals, it and the previous ones open.
pub struct SealingKeys {
    domain: Domain,
    current: SealingKey,
    previous: Vec<SealingKey>,
}

impl SealingKeys {
    pub fn new(domain: Domain, current: &[u8; 32], previous: &[[u8; 32]]) -> SealingKeys {
        SealingKeys {
            domain,
            current: SealingKey::new(current),
            previous: previous.iter().map(SealingKey::new).collect(),
        }
    }

    /// The id of the key that seals now.
    pub fn current_kid(&self) -> &str {
        &self.current.kid
    }

    fn aad(&self, kid: &str, bound_to: &str) -> Vec<u8> {
        format!(
            "confide-sealed-{VERSION}\n{}\n{kid}\n{bound_to}",
            self.domain.label()
        )
        .into_bytes()
    }

    /// `v1.<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>`. `bound_to` (empty when the seal belongs
    /// to nothing in particular) must be given again to open it.
    pub fn seal(&self, plaintext: &[u8], bound_to: &str) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        try_fill_random(&mut nonce)?;
        let sealed = self
            .current
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &self.aad(&self.current.kid, bound_to),
                },
            )
            .map_err(|_| Error::Signing)?;
        let mut body = Vec::with_capacity(NONCE_LEN + sealed.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&sealed);
        Ok(format!(
            "{VERSION}.{}.{}",
            self.current.kid,
            URL_SAFE_NO_PAD.encode(body)
        ))
    }

    /// Opens what [`SealingKeys::seal`] sealed for this purpose and `bound_to`, with the current
    /// key or a previous one. Anything else (tampered, another purpose's, another owner's, under
    /// a key no longer kept, malformed) is `InvalidToken(what)`.
    pub fn open(
        &self,
        sealed: &str,
        bound_to: &str,
        what: &'static str,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let invalid = || Error::InvalidToken(what);
        let mut parts = sealed.splitn(3, '.');
        let (Some(VERSION), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| invalid())?;
        if body.len() <= NONCE_LEN {
            return Err(invalid());
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| invalid())?;
        let aad = self.aad(kid, bound_to);
        // Key ids are short: two keys may share one, so each key that has it is tried in turn.
        std::iter::once(&self.current)
            .chain(&self.previous)
            .filter(|key| key.kid == kid)
            .find_map(|key| {
                key.cipher
                    .decrypt(
                        &Nonce::from(nonce),
                        Payload {
                            msg: ciphertext,
                            aad: &aad,
                        },
                    )
                    .ok()
            })
            .map(Zeroizing::new)
            .ok_or_else(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHAT: &str = "sealed test value";

    #[test]
    fn a_seal_opens_to_what_was_sealed_and_differs_each_time() {
        let keys = SealingKeys::new(Domain::WEBHOOK_SECRET, &[7; 32], &[]);
        let a = keys.seal(b"the secret", "owner-1").unwrap();
        let b = keys.seal(b"the secret", "owner-1").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("v1.{}.", keys.current_kid())));
        assert_eq!(&*keys.open(&a, "owner-1", WHAT).unwrap(), b"the secret");
        assert_eq!(&*keys.open(&b, "owner-1", WHAT).unwrap(), b"the secret");
    }

    #[test]
    fn a_seal_of_one_purpose_does_not_open_as_another_even_under_the_same_key() {
        let webhook = SealingKeys::new(Domain::WEBHOOK_SECRET, &[7; 32], &[]);
        let chat = SealingKeys::new(Domain::CHAT_TOKEN, &[7; 32], &[]);
        let sealed = webhook.seal(b"whsec_x", "").unwrap();
        assert!(matches!(
            chat.open(&sealed, "", WHAT),
            Err(Error::InvalidToken(WHAT))
        ));
        let sealed = chat.seal(b"{}", "").unwrap();
        assert!(webhook.open(&sealed, "", WHAT).is_err());
    }

    #[test]
    fn a_seal_opens_only_for_what_it_is_bound_to() {
        let keys = SealingKeys::new(Domain::WEBHOOK_SECRET, &[7; 32], &[]);
        let sealed = keys.seal(b"the secret", "endpoint-1").unwrap();
        assert!(keys.open(&sealed, "endpoint-2", WHAT).is_err());
        assert!(keys.open(&sealed, "", WHAT).is_err());
    }

    #[test]
    fn after_a_key_rotation_the_previous_key_still_opens_and_a_dropped_one_does_not() {
        let old = SealingKeys::new(Domain::CHAT_TOKEN, &[1; 32], &[]);
        let sealed = old.seal(b"before", "x").unwrap();
        let rotated = SealingKeys::new(Domain::CHAT_TOKEN, &[2; 32], &[[1; 32]]);
        assert_eq!(&*rotated.open(&sealed, "x", WHAT).unwrap(), b"before");
        // New seals use the new key, which the old configuration cannot open.
        let fresh = rotated.seal(b"after", "x").unwrap();
        assert!(fresh.starts_with(&format!("v1.{}.", rotated.current_kid())));
        assert_ne!(rotated.current_kid(), old.current_kid());
        assert!(old.open(&fresh, "x", WHAT).is_err());
        let dropped = SealingKeys::new(Domain::CHAT_TOKEN, &[2; 32], &[]);
        assert!(dropped.open(&sealed, "x", WHAT).is_err());
    }

    #[test]
    fn any_changed_byte_and_any_garbage_is_refused_without_panicking() {
        let keys = SealingKeys::new(Domain::CHAT_TOKEN, &[7; 32], &[]);
        let sealed = keys.seal(b"payload", "").unwrap();
        let bytes = sealed.as_bytes();
        for i in 0..bytes.len() {
            for replacement in [b'A', b'.', b'-'] {
                if bytes[i] == replacement {
                    continue;
                }
                let mut tampered = bytes.to_vec();
                tampered[i] = replacement;
                let tampered = String::from_utf8(tampered).unwrap();
                assert!(keys.open(&tampered, "", WHAT).is_err(), "byte {i}");
            }
        }
        let other_version = sealed.replacen("v1.", "v2.", 1);
        for junk in [
            "",
            "v1",
            "v1.",
            "v1.x.y",
            "v1..",
            "v1.abcd.AAAA",
            &other_version,
        ] {
            assert!(keys.open(junk, "", WHAT).is_err(), "{junk}");
        }
    }
}
