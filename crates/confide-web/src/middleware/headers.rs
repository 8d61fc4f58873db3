//! Security headers on every response (seed 001: HSTS, CSP, frame protection, no sniffing).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;

pub async fn security_headers(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let cacheable = is_public_cacheable(request.uri().path());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    set(
        headers,
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    );
    set(headers, "x-frame-options", "DENY");
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "referrer-policy", "no-referrer");
    set(headers, "cross-origin-opener-policy", "same-origin");
    set(headers, "cross-origin-resource-policy", "same-origin");
    set(
        headers,
        "permissions-policy",
        "camera=(), microphone=(), geolocation=()",
    );
    if state.settings.hsts {
        set(
            headers,
            "strict-transport-security",
            "max-age=63072000; includeSubDomains",
        );
    }
    if !cacheable {
        set(headers, header::CACHE_CONTROL.as_str(), "no-store");
    }
    headers.remove(header::SERVER);
    response
}

/// Public documents that are the same for everyone may be cached briefly.
fn is_public_cacheable(path: &str) -> bool {
    matches!(
        path,
        "/.well-known/jwks.json" | "/api/openapi.json" | "/widget/v1/confide.js"
    )
}

/// Sets a header unless the handler chose its own (the widget script, a page with its own CSP).
fn set(headers: &mut HeaderMap, name: &'static str, value: &'static str) {
    headers
        .entry(name)
        .or_insert(HeaderValue::from_static(value));
}
