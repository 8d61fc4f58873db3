//! RS256 access tokens: short-lived, signed by a key in the data directory, verified against
//! published keys only, with key rotation that never breaks tokens already handed out.

mod keyring;

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::tokens::random_token;
use crate::{Error, Result};

/// Longest lifetime of an access token; refresh goes through the session instead.
pub const MAX_ACCESS_TOKEN_TTL_SECS: i64 = 900;
/// Clock skew tolerated between the issuing and the verifying server.
pub const CLOCK_LEEWAY_SECS: i64 = 60;
/// A retired key stays published this long, so every token it signed can still be verified.
const RETIRED_KEY_LIFETIME_SECS: i64 = MAX_ACCESS_TOKEN_TTL_SECS + CLOCK_LEEWAY_SECS;
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The claims of a Confide access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer: the server's public URL.
    pub iss: String,
    /// Audience: who the token is for (e.g. the API).
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The session id, so revoking a session revokes its tokens.
    pub sid: String,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Expires at (unix seconds).
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
}

/// What a presented token may carry: `nbf` is honoured if present, never issued.
#[derive(Deserialize)]
struct PresentedClaims {
    #[serde(flatten)]
    claims: AccessClaims,
    nbf: Option<i64>,
}

struct PublishedKey {
    kid: String,
    n: Vec<u8>,
    e: Vec<u8>,
    decoding: DecodingKey,
}

/// The signing key and every key still published for verification (the JWKS).
pub struct JwtKeys {
    active_kid: String,
    signing: EncodingKey,
    /// Active key first, then retired ones, newest first.
    published: Vec<PublishedKey>,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("active_kid", &self.active_kid)
            .field(
                "published",
                &self.published.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn system_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl JwtKeys {
    /// Loads the keys from `dir/keys/jwt/`, generating a 2048-bit RSA key on first start.
    pub fn load_or_generate(dir: &Path) -> Result<Self> {
        Self::load_or_generate_at(dir, system_now())
    }

    /// [`JwtKeys::load_or_generate`] at a given time (unix seconds), for tests and callers that
    /// own the clock. Keys retired long enough ago are deleted here.
    pub fn load_or_generate_at(dir: &Path, now: i64) -> Result<Self> {
        let active = match keyring::active_kid(dir)? {
            Some(kid) => kid,
            None => keyring::rotate(dir, now)?,
        };
        let mut stored = keyring::load(
            dir,
            &active,
            now,
            now.saturating_sub(RETIRED_KEY_LIFETIME_SECS),
        )?;
        stored.sort_by_key(|k| std::cmp::Reverse(k.retired_at.unwrap_or(i64::MAX)));
        let signing_pem = stored
            .iter()
            .find(|k| k.kid == active)
            .map(|k| k.pem.clone())
            .ok_or_else(|| Error::InvalidKey {
                name: keyring::jwt_dir(dir).join("active").display().to_string(),
                reason: "names a key that is not in the directory",
            })?;
        let signing =
            EncodingKey::from_rsa_pem(signing_pem.as_bytes()).map_err(|_| Error::InvalidKey {
                name: active.clone(),
                reason: "not a usable RSA private key",
            })?;
        let published = stored
            .into_iter()
            .map(|k| PublishedKey {
                decoding: DecodingKey::from_rsa_raw_components(&k.public.n, &k.public.e),
                kid: k.kid,
                n: k.public.n,
                e: k.public.e,
            })
            .collect();
        Ok(Self {
            active_kid: active,
            signing,
            published,
        })
    }

    /// Re-reads the keys (cheap), so a long-running server picks up a rotation done elsewhere.
    pub fn reload(&mut self, dir: &Path, now: i64) -> Result<()> {
        *self = Self::load_or_generate_at(dir, now)?;
        Ok(())
    }

    /// Starts signing with a new key; the previous one stays published for verification until
    /// the tokens it signed have expired. Returns the new kid.
    pub fn rotate(dir: &Path, now: i64) -> Result<String> {
        keyring::rotate(dir, now)
    }

    /// The kid new tokens are signed with.
    pub fn active_kid(&self) -> &str {
        &self.active_kid
    }

    /// Signs an access token for a user's session; `ttl_secs` is capped at 15 minutes.
    /// Returns the token and its expiry.
    pub fn issue(
        &self,
        sub: &str,
        sid: &str,
        issuer: &str,
        audience: &str,
        now: i64,
        ttl_secs: i64,
    ) -> Result<(String, i64)> {
        if ttl_secs <= 0 {
            return Err(Error::Signing);
        }
        let exp = now
            .checked_add(ttl_secs.min(MAX_ACCESS_TOKEN_TTL_SECS))
            .ok_or(Error::Signing)?;
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".to_owned());
        header.kid = Some(self.active_kid.clone());
        let claims = AccessClaims {
            iss: issuer.to_owned(),
            aud: audience.to_owned(),
            sub: sub.to_owned(),
            sid: sid.to_owned(),
            iat: now,
            exp,
            jti: random_token(16),
        };
        let token =
            jsonwebtoken::encode(&header, &claims, &self.signing).map_err(|_| Error::Signing)?;
        Ok((token, exp))
    }

    /// Verifies an access token at `now`: RS256 only, a published kid, our issuer and audience,
    /// and its time window (with [`CLOCK_LEEWAY_SECS`]).
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        now: i64,
    ) -> Result<AccessClaims> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::InvalidToken("too long"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| Error::InvalidToken("malformed"))?;
        // Decided before any key is touched: the token never chooses how it is checked.
        if header.alg != Algorithm::RS256 {
            return Err(Error::InvalidToken("algorithm not allowed"));
        }
        if header.crit.is_some() {
            return Err(Error::InvalidToken("unsupported critical header"));
        }
        let kid = header.kid.ok_or(Error::InvalidToken("no key id"))?;
        let key = self
            .published
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(Error::InvalidToken("unknown key id"))?;

        let mut validation = Validation::new(Algorithm::RS256);
        // jsonwebtoken reads the system clock; time is checked below against `now` instead.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        let presented = jsonwebtoken::decode::<PresentedClaims>(token, &key.decoding, &validation)
            .map_err(|_| Error::InvalidToken("bad signature or claims"))?
            .claims;
        let PresentedClaims { claims, nbf } = presented;

        if claims.iss != issuer || claims.aud != audience {
            return Err(Error::InvalidToken("wrong issuer or audience"));
        }
        if claims.exp.saturating_sub(claims.iat) > MAX_ACCESS_TOKEN_TTL_SECS {
            return Err(Error::InvalidToken("lifetime too long"));
        }
        if claims.iat > now.saturating_add(CLOCK_LEEWAY_SECS)
            || nbf.is_some_and(|nbf| nbf > now.saturating_add(CLOCK_LEEWAY_SECS))
        {
            return Err(Error::InvalidToken("not valid yet"));
        }
        if now > claims.exp.saturating_add(CLOCK_LEEWAY_SECS) {
            return Err(Error::TokenExpired);
        }
        Ok(claims)
    }

    /// The published keys as a JWKS document, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .published
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kty": "RSA",
                    "use": "sig",
                    "alg": "RS256",
                    "kid": k.kid,
                    "n": URL_SAFE_NO_PAD.encode(&k.n),
                    "e": URL_SAFE_NO_PAD.encode(&k.e),
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests;
