//! Moving-window rate limits on the API, per client address: a general quota, and a tight one on
//! the endpoints that take secrets from anonymous callers (login, password reset, invitations).
//! A refusal is a 429 with `Retry-After`, and lands in the audit log (once per address and minute,
//! so a flood cannot flood the log too).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use confide_security::limiter::{Decision, Quota};
use confide_store::AuditChain;
use serde_json::json;

use crate::audit::{self, Actor};
use crate::error::ApiError;
use crate::middleware::ClientIp;
use crate::state::{AppState, now_ms};

const MINUTE_MS: i64 = 60_000;

/// Paths where an anonymous caller presents a secret: the tight quota applies.
fn is_credential_endpoint(path: &str) -> bool {
    matches!(
        path,
        "/api/v1/auth/login"
            | "/api/v1/auth/password-reset"
            | "/api/v1/auth/password-reset/confirm"
            | "/api/v1/invitations/accept"
    )
}

pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let ip = crate::middleware::recorded_client_ip(request.extensions());
    // Under `nest` the URI is relative to the nest point; the original one names the endpoint.
    let path = request
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map(|uri| uri.path().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let path = path.as_str();
    let limits = &state.settings.rate_limits;
    let (bucket, per_minute) = if is_credential_endpoint(path) {
        ("credentials", limits.credential_per_minute)
    } else {
        ("api", limits.api_per_minute)
    };
    let key = format!("{bucket}:{}", ip.0);
    let details = json!({ "bucket": bucket, "limit_per_minute": per_minute, "path": path });
    match check(&state, ip, key, per_minute, details).await {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

/// Every chat endpoint, per visitor address, in one place (handlers add per-bot and per-chat
/// limits). Preflights do not count.
pub async fn chat_rate_limit(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == axum::http::Method::OPTIONS {
        return next.run(request).await;
    }
    let ip = crate::middleware::recorded_client_ip(request.extensions());
    let per_minute = state.settings.rate_limits.chat_per_minute;
    let details = json!({ "bucket": "chat", "limit_per_minute": per_minute });
    match check(&state, ip, format!("chat-ip:{}", ip.0), per_minute, details).await {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

/// Counts one request for `key` against a per-minute moving window (shared between nodes when
/// Redis is configured). A refusal is a 429 with `Retry-After`, audited once per key and minute.
pub async fn check(
    state: &AppState,
    ip: ClientIp,
    key: String,
    per_minute: u32,
    details: serde_json::Value,
) -> Result<(), ApiError> {
    let quota = Quota {
        limit: per_minute,
        window_ms: MINUTE_MS,
    };
    let now = now_ms();
    let Decision::Limited { retry_after_ms } = state.limiter.decide(&key, quota, now).await else {
        return Ok(());
    };
    let first_this_minute = state
        .limiter
        .decide(
            &format!("audited:{key}"),
            Quota {
                limit: 1,
                window_ms: MINUTE_MS,
            },
            now,
        )
        .await
        == Decision::Allowed;
    if first_this_minute {
        audit::record_refusal(
            state,
            AuditChain::Platform,
            &Actor::anonymous(ip),
            "rate_limit.hit",
            Some(key),
            details,
        )
        .await;
    }
    let secs = u64::try_from((retry_after_ms + 999) / 1000).unwrap_or(1);
    let mut err = ApiError::too_many("rate_limited", secs);
    err.message = "too many requests; slow down".to_owned();
    Err(err)
}
