//! The shared shape of single-purpose signed tokens: `<base64url id>.<expiry>.<base64url MAC>`.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const MAC_LEN: usize = 32;
const MAX_ID_BYTES: usize = 256;
const MAX_TOKEN_LEN: usize = 512;

/// An HMAC-SHA256 over a domain tag and length-prefixed fields, so no two field lists (and no
/// two token kinds) can ever produce the same MAC input.
pub(crate) struct Mac(hmac::Context);

impl Mac {
    pub(crate) fn new(key: &[u8; 32], domain: &[u8]) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        let mut mac = Mac(hmac::Context::with_key(&key));
        mac.field(domain);
        mac
    }

    pub(crate) fn field(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        self.0.update(&len.to_be_bytes());
        self.0.update(bytes);
        self
    }

    pub(crate) fn finish(self) -> hmac::Tag {
        self.0.sign()
    }
}

pub(crate) fn encode(id: &str, expires_at: i64, mac: &hmac::Tag) -> String {
    format!(
        "{}.{expires_at}.{}",
        URL_SAFE_NO_PAD.encode(id),
        URL_SAFE_NO_PAD.encode(mac.as_ref())
    )
}

/// A token split into its parts; nothing is trusted until the MAC is checked.
pub(crate) struct Unverified {
    pub(crate) id: String,
    pub(crate) expires_at: i64,
    mac: [u8; MAC_LEN],
}

impl Unverified {
    pub(crate) fn parse(token: &str) -> Option<Self> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let mut parts = token.split('.');
        let (Some(id), Some(expires_at), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let id = String::from_utf8(URL_SAFE_NO_PAD.decode(id).ok()?).ok()?;
        if id.is_empty() || id.len() > MAX_ID_BYTES {
            return None;
        }
        let canonical_expiry = !expires_at.is_empty()
            && expires_at.len() <= 18
            && expires_at.bytes().all(|b| b.is_ascii_digit())
            && (expires_at == "0" || !expires_at.starts_with('0'));
        if !canonical_expiry {
            return None;
        }
        let expires_at = expires_at.parse().ok()?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?.try_into().ok()?;
        Some(Self {
            id,
            expires_at,
            mac,
        })
    }

    /// True if `expected` is this token's MAC (constant time) and it has not expired at `now`.
    pub(crate) fn is_authentic_at(&self, expected: &hmac::Tag, now: i64) -> bool {
        let authentic = super::constant_time_eq(expected.as_ref(), &self.mac);
        authentic && now < self.expires_at
    }
}
