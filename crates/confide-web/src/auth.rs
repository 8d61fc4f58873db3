//! Who is calling: a typed extractor that accepts a bearer access token (RS256 JWT), an API key
//! (`cfk_...`), or the session cookie (with CSRF protection on state-changing requests).
//! Tokens never reach a log line: everything here is `#[instrument(skip_all)]`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, header};
use confide_domain::{ApiKeyId, OrgId, Principal, SessionId, UserId};
use confide_security::tokens;
use confide_store::{ApiKey, AuditChain, Session};
use secrecy::ExposeSecret;
use serde_json::json;
use tracing::instrument;

use crate::audit::{self, Actor};
use crate::error::ApiError;
use crate::middleware::ClientIp;
use crate::state::{AppState, now_ms};

/// The session cookie. The `__Host-` prefix makes browsers insist on Secure, Path=/ and no Domain,
/// so a sibling subdomain cannot plant or overwrite it.
pub const SESSION_COOKIE: &str = "__Host-confide_session";
/// The name used when `cookie_secure` is off (plain HTTP on loopback only): browsers refuse a
/// `__Host-` cookie without Secure.
pub const INSECURE_SESSION_COOKIE: &str = "confide_session";

/// The session cookie's name under the given settings.
pub fn session_cookie_name(settings: &crate::state::WebSettings) -> &'static str {
    if settings.cookie_secure {
        SESSION_COOKIE
    } else {
        INSECURE_SESSION_COOKIE
    }
}
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Sessions are touched at most this often, so reads do not turn into writes.
const TOUCH_EVERY_MS: i64 = 30_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    Cookie,
    Bearer,
    ApiKey,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Auth {
    pub principal: Principal,
    pub method: AuthMethod,
    pub ip: ClientIp,
    /// The session behind a cookie or bearer token.
    pub session: Option<Session>,
    pub api_key: Option<ApiKey>,
}

impl Auth {
    pub fn actor(&self) -> Actor {
        Actor::principal(&self.principal, self.ip)
    }

    /// The signed-in person, or 403 for API keys on endpoints that act as a person.
    pub fn user(&self) -> Result<(UserId, SessionId), ApiError> {
        match &self.principal {
            Principal::User {
                user_id,
                session_id,
            } => Ok((*user_id, *session_id)),
            Principal::ApiKey { .. } => Err(ApiError::forbidden(
                "user_required",
                "this endpoint needs a signed-in user, not an API key",
            )),
        }
    }
}

/// An optional caller: `None` when no credentials were sent; bad credentials still fail.
pub struct MaybeAuth(pub Option<Auth>);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    #[instrument(skip_all)]
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match authenticate(parts, state).await? {
            Some(auth) => Ok(auth),
            None => Err(ApiError::unauthorized()),
        }
    }
}

impl FromRequestParts<AppState> for MaybeAuth {
    type Rejection = ApiError;

    #[instrument(skip_all)]
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state).await.map(MaybeAuth)
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Option<Auth>, ApiError> {
    let ip = crate::middleware::recorded_client_ip(&parts.extensions);
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let credential = value
            .to_str()
            .ok()
            .and_then(bearer_credential)
            .ok_or_else(ApiError::unauthorized)?;
        let auth = if credential.starts_with("cfk_") {
            api_key_auth(state, credential, ip).await?
        } else {
            bearer_auth(state, credential, ip).await?
        };
        return Ok(Some(auth));
    }
    match session_cookie(&parts.headers, session_cookie_name(&state.settings)) {
        Some(cookie) => cookie_auth(parts, state, &cookie, ip).await.map(Some),
        None => Ok(None),
    }
}

/// `Bearer <credential>`, scheme case-insensitive.
fn bearer_credential(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let credential = rest.trim();
    (!credential.is_empty()).then_some(credential)
}

/// The session cookie's value, if the request carries exactly one.
pub fn session_cookie(headers: &axum::http::HeaderMap, cookie_name: &str) -> Option<String> {
    let mut found = None;
    for header_value in headers.get_all(header::COOKIE) {
        let Ok(text) = header_value.to_str() else {
            continue;
        };
        for pair in text.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=')
                && name == cookie_name
            {
                if found.is_some() {
                    // Two session cookies means someone planted one; trust neither.
                    return None;
                }
                found = Some(value.to_owned());
            }
        }
    }
    found
}

async fn rejected(state: &AppState, ip: ClientIp, reason: &str) -> ApiError {
    audit::record_refusal(
        state,
        AuditChain::Platform,
        &Actor::anonymous(ip),
        "auth.credential_rejected",
        None,
        json!({ "reason": reason }),
    )
    .await;
    ApiError::unauthorized()
}

/// A session that is not revoked, not past its absolute end and not idle too long.
fn session_is_live(state: &AppState, session: &Session, now: i64) -> bool {
    session.revoked_at.is_none()
        && session.expires_at > now
        && session.last_seen_at + state.settings.session_idle_ms > now
}

async fn live_session(
    state: &AppState,
    session: Option<Session>,
    ip: ClientIp,
) -> Result<Session, ApiError> {
    let now = now_ms();
    match session {
        Some(session) if session_is_live(state, &session, now) => {
            if now - session.last_seen_at > TOUCH_EVERY_MS {
                state.store.touch_session(session.id, now).await?;
            }
            Ok(session)
        }
        _ => Err(rejected(state, ip, "session_not_live").await),
    }
}

async fn bearer_auth(state: &AppState, token: &str, ip: ClientIp) -> Result<Auth, ApiError> {
    let verified = {
        let keys = state
            .jwt
            .read()
            .map_err(|_| ApiError::internal("jwt key lock poisoned"))?;
        keys.verify(
            token,
            &state.settings.public_url,
            &state.settings.audience,
            now_ms() / 1000,
        )
    };
    let Ok(claims) = verified else {
        return Err(rejected(state, ip, "invalid_access_token").await);
    };
    let (Ok(user_id), Ok(session_id)) = (
        claims.sub.parse::<UserId>(),
        claims.sid.parse::<SessionId>(),
    ) else {
        return Err(rejected(state, ip, "invalid_access_token").await);
    };
    // Revocation takes effect on the very next request: every token is checked against its session.
    let session = state.store.get_session(session_id).await?;
    let session = live_session(state, session.filter(|s| s.user_id == user_id), ip).await?;
    Ok(Auth {
        principal: Principal::User {
            user_id,
            session_id,
        },
        method: AuthMethod::Bearer,
        ip,
        session: Some(session),
        api_key: None,
    })
}

async fn api_key_auth(state: &AppState, presented: &str, ip: ClientIp) -> Result<Auth, ApiError> {
    let Some(prefix) = tokens::parse_api_key(presented) else {
        return Err(rejected(state, ip, "malformed_api_key").await);
    };
    let key = state.store.get_api_key_by_prefix(prefix).await?;
    let now = now_ms();
    let key = match key {
        Some(key)
            if tokens::api_key_matches(presented, &key.key_hash)
                && key.revoked_at.is_none()
                && key.expires_at.is_none_or(|exp| exp > now) =>
        {
            key
        }
        _ => return Err(rejected(state, ip, "invalid_api_key").await),
    };
    if key.last_used_at.is_none_or(|t| now - t > TOUCH_EVERY_MS) {
        state.store.touch_api_key(key.id, now).await?;
    }
    Ok(Auth {
        principal: Principal::ApiKey {
            key_id: key.id,
            org_id: key.org_id,
            scopes: key.scopes.clone(),
            bot_id: key.bot_id,
        },
        method: AuthMethod::ApiKey,
        ip,
        session: None,
        api_key: Some(key),
    })
}

async fn cookie_auth(
    parts: &Parts,
    state: &AppState,
    cookie: &str,
    ip: ClientIp,
) -> Result<Auth, ApiError> {
    let hash = tokens::session_token_hash(cookie);
    let session = state.store.get_session_by_token_hash(&hash).await?;
    let session = live_session(state, session, ip).await?;
    if !is_safe_method(&parts.method) {
        check_csrf(parts, state, &session, ip).await?;
    }
    Ok(Auth {
        principal: Principal::User {
            user_id: session.user_id,
            session_id: session.id,
        },
        method: AuthMethod::Cookie,
        ip,
        session: Some(session),
        api_key: None,
    })
}

fn is_safe_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Cookie-authenticated writes need a token bound to the session and must come from our own
/// origin (or an allowed one): the browser's `Origin`, else `Sec-Fetch-Site`.
async fn check_csrf(
    parts: &Parts,
    state: &AppState,
    session: &Session,
    ip: ClientIp,
) -> Result<(), ApiError> {
    let origin_ok = match parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    {
        Some(origin) => {
            origin == state.settings.public_origin
                || state.settings.cors_origins.iter().any(|o| o == origin)
        }
        None => parts
            .headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_none_or(|site| site == "same-origin" || site == "none"),
    };
    let token_ok = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|presented| {
            tokens::verify_csrf_token(
                state.keys.csrf_hmac_key.expose_secret(),
                &session.token_hash,
                presented,
            )
        });
    if origin_ok && token_ok {
        return Ok(());
    }
    let reason = if origin_ok {
        "bad_token"
    } else {
        "cross_origin"
    };
    audit::record_for_user(
        state,
        Some(session.user_id),
        &Actor::user(session.user_id, ip),
        "csrf.rejected",
        json!({ "reason": reason, "method": parts.method.as_str(), "path": parts.uri.path() }),
    )
    .await
    .ok();
    Err(ApiError::forbidden(
        "csrf_failed",
        "this request needs a valid CSRF token from the same origin",
    ))
}

/// Ids an API key is bound to, for handlers that need them.
pub fn api_key_scope(auth: &Auth) -> Option<(ApiKeyId, OrgId)> {
    match &auth.principal {
        Principal::ApiKey { key_id, org_id, .. } => Some((*key_id, *org_id)),
        Principal::User { .. } => None,
    }
}
