//! The chat widget script, served with its Subresource Integrity hash so host pages can pin it.

use std::sync::LazyLock;

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha384};
use utoipa::ToSchema;

/// The script, compiled into the binary: what is served is exactly what was reviewed.
pub const WIDGET_JS: &str = include_str!("../../../../web/widget/confide.js");

static INTEGRITY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha384::digest(WIDGET_JS.as_bytes()))
    )
});

/// The `integrity` attribute value for the current widget.
pub fn integrity() -> &'static str {
    &INTEGRITY
}

/// The chat widget (plain JavaScript). Embed with
/// `<script src=".../widget/v1/confide.js" data-bot="BOT_KEY" integrity="sha384-..." crossorigin="anonymous">`.
#[utoipa::path(get, path = "/widget/v1/confide.js", tag = "widget",
    responses((status = 200, description = "The widget script", content_type = "text/javascript", body = String)))]
pub async fn script() -> Response {
    let mut response = WIDGET_JS.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    // Any page may load it (with crossorigin for SRI); it carries no credentials.
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", integrity())) {
        headers.insert(header::ETAG, etag);
    }
    response
}

#[derive(Serialize, ToSchema)]
pub struct Integrity {
    /// The value for the script tag's `integrity` attribute.
    pub integrity: String,
    pub src: &'static str,
}

/// The widget's Subresource Integrity hash.
#[utoipa::path(get, path = "/widget/v1/integrity", tag = "widget",
    responses((status = 200, description = "The SRI hash of /widget/v1/confide.js", body = Integrity)))]
pub async fn integrity_json() -> Json<Integrity> {
    Json(Integrity {
        integrity: integrity().to_owned(),
        src: "/widget/v1/confide.js",
    })
}
