//! Outbound webhook signatures and the signing secrets behind them.
//!
//! One secret per endpoint, shown once as `whsec_<base64 of 32 random bytes>`, signs both schemes:
//! - Standard Webhooks: the key is the base64-decoded part after `whsec_` (the 32 bytes), and
//!   `webhook-signature` is `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`.
//! - Kindly-HMAC (seed 002): the key is the secret exactly as shown, `whsec_` included, as UTF-8
//!   bytes (what a receiver pasting the key into Kindly's sample code uses), and `Kindly-HMAC` is
//!   `base64(HMAC-SHA256(key, body))`.
//!
//! At rest a secret is sealed ([`crate::sealing`], AES-256-GCM) under the webhook-secret domain,
//! bound to its endpoint's id.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

use crate::sealing::{Domain, SealingKeys};
use crate::tokens::try_fill_random;
use crate::{Error, Result};

/// The prefix Standard Webhooks gives its secrets.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret (Standard Webhooks allows 24 to 64).
pub const SECRET_BYTES: usize = 32;
/// The value of `Kindly-HMAC-algorithm`.
pub const KINDLY_HMAC_ALGORITHM: &str = "HMAC-SHA-256 (base64 encoded)";

/// An endpoint's signing secret; never printed.
pub struct WebhookSecret(SecretString);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    /// A fresh secret from the system's random source.
    pub fn generate() -> Result<WebhookSecret> {
        let mut key = Zeroizing::new([0u8; SECRET_BYTES]);
        try_fill_random(key.as_mut())?;
        Ok(WebhookSecret(SecretString::from(format!(
            "{SECRET_PREFIX}{}",
            STANDARD.encode(key.as_ref())
        ))))
    }

    /// A secret in its shown form; `None` unless it is `whsec_` + base64 of 24 to 64 bytes.
    pub fn parse(text: &str) -> Option<WebhookSecret> {
        let key = Zeroizing::new(STANDARD.decode(text.strip_prefix(SECRET_PREFIX)?).ok()?);
        (24..=64)
            .contains(&key.len())
            .then(|| WebhookSecret(SecretString::from(text.to_owned())))
    }

    /// The secret as shown to its owner (once, at creation or rotation).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The Standard Webhooks key: the decoded bytes after `whsec_`.
    fn standard_key(&self) -> Zeroizing<Vec<u8>> {
        let encoded = self
            .expose()
            .strip_prefix(SECRET_PREFIX)
            .unwrap_or_default();
        // `parse` and `generate` guarantee valid base64; an empty key would never verify anyway.
        Zeroizing::new(STANDARD.decode(encoded).unwrap_or_default())
    }

    /// `Kindly-HMAC`: base64(HMAC-SHA256(the shown secret's UTF-8 bytes, body)).
    pub fn kindly_hmac(&self, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.expose().as_bytes());
        STANDARD.encode(hmac::sign(&key, body).as_ref())
    }

    /// One `webhook-signature` entry: `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`.
    pub fn standard_signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.standard_key());
        let mut context = hmac::Context::with_key(&key);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
    }
}

/// The signature headers of one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureHeaders {
    pub webhook_id: String,
    pub webhook_timestamp: String,
    /// Space-separated `v1,` signatures, one per active secret (newest first).
    pub webhook_signature: String,
    /// Made with the newest secret only.
    pub kindly_hmac: String,
}

/// Signs `body` for delivery `id` at `timestamp` (Unix seconds). `previous` is the secret being
/// rotated out, still within its overlap window: it adds a second Standard Webhooks signature.
pub fn sign(
    current: &WebhookSecret,
    previous: Option<&WebhookSecret>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> SignatureHeaders {
    let mut signatures = vec![current.standard_signature(id, timestamp, body)];
    if let Some(previous) = previous {
        signatures.push(previous.standard_signature(id, timestamp, body));
    }
    SignatureHeaders {
        webhook_id: id.to_owned(),
        webhook_timestamp: timestamp.to_string(),
        webhook_signature: signatures.join(" "),
        kindly_hmac: current.kindly_hmac(body),
    }
}

/// Seals webhook secrets for storage: the current key seals, it and the previous ones open, so
/// the server key can rotate.
pub struct WebhookSecretCipher(SealingKeys);

impl WebhookSecretCipher {
    pub fn new(current: &[u8; 32], previous: &[[u8; 32]]) -> WebhookSecretCipher {
        WebhookSecretCipher(SealingKeys::new(Domain::WEBHOOK_SECRET, current, previous))
    }

    /// `v1.<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>`; `owner` (the endpoint id) must be given
    /// again to open it, so a sealed secret copied onto another endpoint's row does not open.
    pub fn seal(&self, secret: &WebhookSecret, owner: &str) -> Result<String> {
        self.0.seal(secret.expose().as_bytes(), owner)
    }

    /// The secret, unless it was sealed for another endpoint, under a key no longer kept, or was
    /// tampered with.
    pub fn open(&self, sealed: &str, owner: &str) -> Result<WebhookSecret> {
        const WHAT: &str = "sealed webhook secret";
        let plaintext = self.0.open(sealed, owner, WHAT)?;
        let text = std::str::from_utf8(&plaintext).map_err(|_| Error::InvalidToken(WHAT))?;
        WebhookSecret::parse(text).ok_or(Error::InvalidToken(WHAT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification's reference tests.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn the_standard_signature_matches_the_specification_example() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        assert_eq!(
            secret.standard_signature(SPEC_ID, SPEC_TS, SPEC_BODY),
            SPEC_SIGNATURE
        );
    }

    #[test]
    fn kindly_hmac_keys_on_the_shown_secret_text() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        let key = hmac::Key::new(hmac::HMAC_SHA256, SPEC_SECRET.as_bytes());
        let expected = STANDARD.encode(hmac::sign(&key, SPEC_BODY).as_ref());
        assert_eq!(secret.kindly_hmac(SPEC_BODY), expected);
        // Not the decoded bytes: those are the Standard Webhooks key.
        let decoded = STANDARD
            .decode(SPEC_SECRET.trim_start_matches(SECRET_PREFIX))
            .unwrap();
        let other = hmac::Key::new(hmac::HMAC_SHA256, &decoded);
        assert_ne!(
            secret.kindly_hmac(SPEC_BODY),
            STANDARD.encode(hmac::sign(&other, SPEC_BODY).as_ref())
        );
    }

    #[test]
    fn during_a_rotation_both_secrets_sign_and_kindly_uses_the_new_one() {
        let old = WebhookSecret::generate().unwrap();
        let new = WebhookSecret::generate().unwrap();
        let headers = sign(&new, Some(&old), "id-1", 100, b"{}");
        let parts: Vec<&str> = headers.webhook_signature.split(' ').collect();
        assert_eq!(
            parts,
            [
                new.standard_signature("id-1", 100, b"{}"),
                old.standard_signature("id-1", 100, b"{}")
            ]
        );
        assert_eq!(headers.kindly_hmac, new.kindly_hmac(b"{}"));
        assert_eq!(
            sign(&new, None, "id-1", 100, b"{}").webhook_signature,
            parts[0]
        );
    }

    #[test]
    fn generated_secrets_have_the_standard_shape_and_differ() {
        let a = WebhookSecret::generate().unwrap();
        let b = WebhookSecret::generate().unwrap();
        assert!(a.expose().starts_with(SECRET_PREFIX));
        assert_eq!(a.standard_key().len(), SECRET_BYTES);
        assert_ne!(a.expose(), b.expose());
        assert!(WebhookSecret::parse(a.expose()).is_some());
        for bad in [
            "whsec_",
            "whsec_!!!!",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_AAAA",
        ] {
            assert!(WebhookSecret::parse(bad).is_none(), "{bad}");
        }
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_endpoint_and_key() {
        let cipher = WebhookSecretCipher::new(&[7; 32], &[]);
        let secret = WebhookSecret::generate().unwrap();
        let sealed = cipher.seal(&secret, "endpoint-1").unwrap();
        assert!(!sealed.contains(secret.expose()));
        assert_eq!(
            cipher.open(&sealed, "endpoint-1").unwrap().expose(),
            secret.expose()
        );
        assert!(cipher.open(&sealed, "endpoint-2").is_err());
        assert!(
            WebhookSecretCipher::new(&[8; 32], &[])
                .open(&sealed, "endpoint-1")
                .is_err()
        );
        // After the server key is rotated, the key it was rotated from still opens it.
        assert_eq!(
            WebhookSecretCipher::new(&[8; 32], &[[7; 32]])
                .open(&sealed, "endpoint-1")
                .unwrap()
                .expose(),
            secret.expose()
        );
        for junk in ["", "v1", "v1.x.y", &sealed.replace("v1.", "v2.")] {
            assert!(cipher.open(junk, "endpoint-1").is_err());
        }
    }
}
