//! HTTP parameter pollution: a repeated parameter name in the query string or in a urlencoded
//! body is refused outright, so no layer can disagree about which value counts. The one exception
//! is a list that is documented as repeatable, whose handler reads every value.

use std::collections::HashSet;

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Urlencoded bodies are small forms (channel auth); anything bigger is refused before parsing.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Parameters that may repeat: the chat log's `label` filter (a chat must carry every one).
const REPEATABLE: &[&str] = &["label"];

pub async fn reject_duplicate_parameters(request: Request, next: Next) -> Response {
    if let Some(query) = request.uri().query()
        && let Some(name) = first_duplicate(query.as_bytes())
    {
        return duplicate(&name);
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !is_form {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
        return ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is too large",
        )
        .into_response();
    };
    if let Some(name) = first_duplicate(&bytes) {
        return duplicate(&name);
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn duplicate(name: &str) -> Response {
    ApiError::bad_request(
        "duplicate_parameter",
        format!("the parameter {name:?} appears more than once"),
    )
    .into_response()
}

/// The first parameter name that occurs twice, compared after percent-decoding
/// (`a=1&%61=2` is a duplicate too).
fn first_duplicate(input: &[u8]) -> Option<String> {
    let mut seen = HashSet::new();
    for (name, _) in form_urlencoded::parse(input) {
        if !seen.insert(name.clone()) && !REPEATABLE.contains(&&*name) {
            let shown: String = name.chars().take(64).collect();
            return Some(shown);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_are_found_even_when_encoded_differently() {
        assert_eq!(first_duplicate(b"a=1&a=2").as_deref(), Some("a"));
        assert_eq!(first_duplicate(b"a=1&%61=2").as_deref(), Some("a"));
        assert_eq!(first_duplicate(b"a=1&b=2"), None);
        assert_eq!(first_duplicate(b"a&a").as_deref(), Some("a"));
        assert_eq!(first_duplicate(b"label=a&label=b&%6cabel=c"), None);
        assert_eq!(
            first_duplicate(b"label=a&limit=1&limit=2").as_deref(),
            Some("limit")
        );
    }
}
