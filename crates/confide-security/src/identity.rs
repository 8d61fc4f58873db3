//! End-user identity verification (Kindly's "Chat authentication"): a bot owner uploads the public
//! key of their own backend; that backend signs a short-lived JWT naming the signed-in visitor; the
//! widget hands it to us and we check it here before marking a chat as that visitor's.
//!
//! Only RS256 (RSA 2048-8192 bits) and ES256 (P-256) are accepted, and the algorithm is the key's,
//! never the token's choice: a token whose header names another algorithm is refused before any key
//! is touched.

use aws_lc_rs::rsa::PublicEncryptingKey;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ParsedPublicKey};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Longest accepted identity token, checked before any decoding.
pub const MAX_IDENTITY_TOKEN_LEN: usize = 8192;
/// Longest accepted public key PEM.
pub const MAX_PUBLIC_KEY_PEM_LEN: usize = 16 * 1024;
/// A token may not be valid for longer than this: identity tokens are minted per chat, on demand.
pub const MAX_IDENTITY_TOKEN_LIFETIME_SECS: i64 = 24 * 3600;
/// Clock difference tolerated between the customer's backend and us.
pub const IDENTITY_CLOCK_LEEWAY_SECS: i64 = 60;
/// Longest accepted `sub`.
pub const MAX_USER_ID_CHARS: usize = 255;

/// The signature algorithm of an uploaded key (and so of every token it verifies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityAlgorithm {
    Rs256,
    Es256,
}

impl IdentityAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityAlgorithm::Rs256 => "RS256",
            IdentityAlgorithm::Es256 => "ES256",
        }
    }

    pub fn parse(text: &str) -> Option<IdentityAlgorithm> {
        match text {
            "RS256" => Some(IdentityAlgorithm::Rs256),
            "ES256" => Some(IdentityAlgorithm::Es256),
            _ => None,
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            IdentityAlgorithm::Rs256 => Algorithm::RS256,
            IdentityAlgorithm::Es256 => Algorithm::ES256,
        }
    }
}

/// Why an uploaded key was refused; the message is safe to show to the uploader.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyProblem {
    #[error("expected one PEM block starting with -----BEGIN PUBLIC KEY-----")]
    NotPem,
    #[error("this is a private key: upload the public key only, and keep the private key secret")]
    PrivateKey,
    #[error("expected a PUBLIC KEY (SubjectPublicKeyInfo) block, found {0}")]
    WrongBlock(String),
    #[error("RSA keys must have 2048 to 8192 bits")]
    RsaSize,
    #[error("only RSA (RS256) and P-256 EC (ES256) public keys are supported")]
    Unsupported,
}

/// A validated public key, in the canonical PEM form we store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityPublicKey {
    pub algorithm: IdentityAlgorithm,
    /// Re-encoded from the parsed key, so nothing but the key itself is stored.
    pub pem: String,
    /// SHA-256 of the SubjectPublicKeyInfo, hex: shown so owners can tell keys apart.
    pub fingerprint: String,
}

impl IdentityPublicKey {
    pub fn parse_pem(text: &str) -> Result<IdentityPublicKey, PublicKeyProblem> {
        if text.len() > MAX_PUBLIC_KEY_PEM_LEN {
            return Err(PublicKeyProblem::NotPem);
        }
        let blocks = pem::parse_many(text).map_err(|_| PublicKeyProblem::NotPem)?;
        let [block] = blocks.as_slice() else {
            if blocks.iter().any(|b| b.tag().contains("PRIVATE")) {
                return Err(PublicKeyProblem::PrivateKey);
            }
            return Err(PublicKeyProblem::NotPem);
        };
        match block.tag() {
            "PUBLIC KEY" => {}
            tag if tag.contains("PRIVATE") => return Err(PublicKeyProblem::PrivateKey),
            tag => return Err(PublicKeyProblem::WrongBlock(tag.chars().take(40).collect())),
        }
        let der = block.contents();
        let algorithm = match PublicEncryptingKey::from_der(der) {
            Ok(_) => IdentityAlgorithm::Rs256,
            Err(rejected) if is_rsa_spki(der) => {
                tracing::debug!(%rejected, "RSA key refused");
                return Err(PublicKeyProblem::RsaSize);
            }
            Err(_) => {
                ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, der)
                    .map_err(|_| PublicKeyProblem::Unsupported)?;
                IdentityAlgorithm::Es256
            }
        };
        let pem = pem::encode_config(
            &pem::Pem::new("PUBLIC KEY", der.to_vec()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        );
        Ok(IdentityPublicKey {
            algorithm,
            pem,
            fingerprint: hex::encode(Sha256::digest(der)),
        })
    }
}

/// Whether a SubjectPublicKeyInfo names rsaEncryption (OID 1.2.840.113549.1.1.1), so a refused RSA
/// key gets the size message rather than "unsupported".
fn is_rsa_spki(der: &[u8]) -> bool {
    const RSA_OID: [u8; 11] = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    der.windows(RSA_OID.len()).take(32).any(|w| w == RSA_OID)
}

/// A stored key the token may be checked against.
pub struct TrustedIdentityKey<'a> {
    /// Our id of the key; a token may name it in `kid`.
    pub id: &'a str,
    pub algorithm: IdentityAlgorithm,
    pub pem: &'a str,
}

/// Who the customer's backend says the visitor is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// The token's `sub`.
    pub user_id: String,
    /// The token's `exp`.
    pub expires_at: i64,
}

/// Why an identity token was refused: for the audit log; the visitor only learns "invalid".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityRefusal {
    #[error("malformed")]
    Malformed,
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("no key matches")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("wrong audience")]
    Audience,
    #[error("missing or invalid subject")]
    Subject,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
    #[error("lifetime too long")]
    LifetimeTooLong,
    #[error("issued for another chat")]
    OtherChat,
}

impl IdentityRefusal {
    /// Stable reason for audit events.
    pub fn reason(self) -> &'static str {
        match self {
            IdentityRefusal::Malformed => "malformed",
            IdentityRefusal::Algorithm => "algorithm",
            IdentityRefusal::UnknownKey => "unknown_key",
            IdentityRefusal::Signature => "signature",
            IdentityRefusal::Audience => "audience",
            IdentityRefusal::Subject => "subject",
            IdentityRefusal::Expired => "expired",
            IdentityRefusal::NotYetValid => "not_yet_valid",
            IdentityRefusal::LifetimeTooLong => "lifetime",
            IdentityRefusal::OtherChat => "other_chat",
        }
    }
}

#[derive(Deserialize)]
struct IdentityClaims {
    sub: Option<serde_json::Value>,
    aud: Option<serde_json::Value>,
    exp: Option<i64>,
    iat: Option<i64>,
    nbf: Option<i64>,
    /// Optional: binds the token to the chat `getAuthToken(chatId)` was called for.
    chat_id: Option<String>,
}

/// Checks an identity token for a bot (`audience` is the bot's widget key) and chat.
pub fn verify_identity_token(
    token: &str,
    keys: &[TrustedIdentityKey<'_>],
    audience: &str,
    chat_id: &str,
    now: i64,
) -> Result<VerifiedIdentity, IdentityRefusal> {
    if token.len() > MAX_IDENTITY_TOKEN_LEN {
        return Err(IdentityRefusal::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| IdentityRefusal::Malformed)?;
    let algorithm = match header.alg {
        Algorithm::RS256 => IdentityAlgorithm::Rs256,
        Algorithm::ES256 => IdentityAlgorithm::Es256,
        _ => return Err(IdentityRefusal::Algorithm),
    };
    if header.crit.is_some() {
        return Err(IdentityRefusal::Malformed);
    }
    let candidates: Vec<&TrustedIdentityKey<'_>> = keys
        .iter()
        .filter(|k| k.algorithm == algorithm)
        .filter(|k| header.kid.as_deref().is_none_or(|kid| kid == k.id))
        .collect();
    if candidates.is_empty() {
        return Err(IdentityRefusal::UnknownKey);
    }
    let mut validation = Validation::new(algorithm.jwt());
    // Time and audience are checked below against our own clock and rules.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let mut claims = None;
    for key in candidates {
        let decoding = match algorithm {
            IdentityAlgorithm::Rs256 => DecodingKey::from_rsa_pem(key.pem.as_bytes()),
            IdentityAlgorithm::Es256 => DecodingKey::from_ec_pem(key.pem.as_bytes()),
        };
        let Ok(decoding) = decoding else {
            continue;
        };
        if let Ok(data) = jsonwebtoken::decode::<IdentityClaims>(token, &decoding, &validation) {
            claims = Some(data.claims);
            break;
        }
    }
    let claims = claims.ok_or(IdentityRefusal::Signature)?;
    let audience_matches = match &claims.aud {
        Some(serde_json::Value::String(aud)) => aud == audience,
        Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    };
    if !audience_matches {
        return Err(IdentityRefusal::Audience);
    }
    let user_id = match &claims.sub {
        Some(serde_json::Value::String(sub))
            if !sub.trim().is_empty()
                && sub.chars().count() <= MAX_USER_ID_CHARS
                && !sub.chars().any(char::is_control) =>
        {
            sub.clone()
        }
        _ => return Err(IdentityRefusal::Subject),
    };
    let exp = claims.exp.ok_or(IdentityRefusal::Expired)?;
    if now > exp.saturating_add(IDENTITY_CLOCK_LEEWAY_SECS) {
        return Err(IdentityRefusal::Expired);
    }
    let not_before = claims.nbf.into_iter().chain(claims.iat).max();
    if not_before.is_some_and(|nb| nb > now.saturating_add(IDENTITY_CLOCK_LEEWAY_SECS)) {
        return Err(IdentityRefusal::NotYetValid);
    }
    let issued = claims.iat.unwrap_or(now);
    if exp.saturating_sub(issued.min(now)) > MAX_IDENTITY_TOKEN_LIFETIME_SECS {
        return Err(IdentityRefusal::LifetimeTooLong);
    }
    if claims.chat_id.as_deref().is_some_and(|c| c != chat_id) {
        return Err(IdentityRefusal::OtherChat);
    }
    Ok(VerifiedIdentity {
        user_id,
        expires_at: exp,
    })
}

#[cfg(test)]
mod tests;
