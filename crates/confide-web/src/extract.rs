//! Request extractors that fail with our error body instead of axum's plain-text rejections:
//! strict JSON (content type, depth, string length, unknown fields), typed path ids and queries.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Nesting deeper than this is refused before parsing.
pub const MAX_JSON_DEPTH: usize = 32;
/// No JSON string may be longer than this many bytes of JSON text; fields have tighter limits of
/// their own, in characters. Escaped, one character can take 12 bytes (`\ud83d\ude00`), so this
/// leaves room for the longest field (a 1024-character password) however it is written.
pub const MAX_JSON_STRING_BYTES: usize = 16 * 1024;
/// Bodies above this are refused; routes that take only credentials allow less.
pub const MAX_JSON_BODY_BYTES: usize = 64 * 1024;
/// Login, password and token bodies are a few short strings (at most ~16 KiB fully escaped).
pub const MAX_CREDENTIAL_BODY_BYTES: usize = 32 * 1024;

/// A JSON body: `application/json` only (else 415), bounded size, depth and string lengths,
/// and unknown fields refused by the target type's `deny_unknown_fields`.
pub struct StrictJson<T>(pub T);

impl<T, S> FromRequest<S> for StrictJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| ct.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be application/json",
            ));
        }
        // `Bytes` honours the route's `DefaultBodyLimit`, so each route can be smaller still.
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        "the request body is too large",
                    )
                } else {
                    ApiError::bad_request("unreadable_body", "the request body could not be read")
                }
            })?;
        check_shape(&bytes)?;
        // Every request body is an object; serde would otherwise read `[..]` as a struct's fields.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "the body must be a JSON object",
            ));
        }
        serde_json::from_slice(&bytes).map(StrictJson).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!(
                    "the body does not match the expected shape: {}",
                    public_reason(&e)
                ),
            )
        })
    }
}

/// serde's message without echoing long input back.
fn public_reason(err: &serde_json::Error) -> String {
    let text = err.to_string();
    text.chars().take(200).collect()
}

/// One pass over the raw bytes: depth and string length, before serde allocates anything.
fn check_shape(bytes: &[u8]) -> Result<(), ApiError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut string_len = 0usize;
    for &b in bytes {
        if in_string {
            string_len += 1;
            if string_len > MAX_JSON_STRING_BYTES {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "string_too_long",
                    format!("strings are limited to {MAX_JSON_STRING_BYTES} bytes"),
                ));
            }
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                string_len = 0;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(ApiError::bad_request(
                        "json_too_deep",
                        format!("JSON nesting is limited to {MAX_JSON_DEPTH} levels"),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Path parameters; a value that cannot be an id answers 404 like any id we do not have.
pub struct PathParams<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| PathParams(v))
            .map_err(|_| ApiError::not_found())
    }
}

/// Query parameters, with unknown or malformed ones refused as 400 `invalid_query`.
pub struct QueryParams<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map(QueryParams)
            .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))
    }
}

pub use confide_domain::input::optional_whole_number;

/// For `#[serde(default, deserialize_with = "present")]` on an `Option<Option<T>>` field: present
/// (even as null) is `Some`, only absent is `None`, so a request can clear a value or leave it.
pub fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = "[".repeat(MAX_JSON_DEPTH + 1);
        assert!(check_shape(deep.as_bytes()).is_err());
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        assert!(check_shape(ok.as_bytes()).is_ok());
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let s = format!("{{\"a\":\"{}\"}}", "[".repeat(100));
        assert!(check_shape(s.as_bytes()).is_ok());
    }

    #[test]
    fn overlong_strings_are_refused() {
        let s = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_JSON_STRING_BYTES + 1));
        assert!(check_shape(s.as_bytes()).is_err());
    }
}
