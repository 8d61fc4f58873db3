//! `confide demo`: a sample host page embedding the widget, so a newcomer chats within a minute.
//! Served only when the server was started in demo mode.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::api::widget;
use crate::error::ApiError;
use crate::state::AppState;

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            other => other.to_string(),
        })
        .collect()
}

/// The demo host page, under a CSP as strict as a careful customer's: no inline script or style.
pub async fn page(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(bot_key) = state.settings.demo_bot_key.as_deref() else {
        return Err(ApiError::not_found());
    };
    let origin = &state.settings.public_origin;
    let ws_origin = origin.replacen("http", "ws", 1);
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>Confide demo</title>\n</head>\n<body>\n<h1>Confide demo</h1>\n\
         <p>This page embeds the Confide chat widget with one script tag. Open the bubble in the corner.</p>\n\
         <script src=\"{src}\" data-bot=\"{bot}\" integrity=\"{sri}\" crossorigin=\"anonymous\"></script>\n\
         </body>\n</html>\n",
        src = escape(&format!(
            "{}/widget/v1/confide.js",
            state.settings.public_url
        )),
        bot = escape(bot_key),
        sri = escape(widget::integrity()),
    );
    let csp = format!(
        "default-src 'none'; script-src {origin}; connect-src {origin} {ws_origin}; \
         style-src 'self'; img-src 'self' {origin} data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    );
    let mut response = html.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&csp).map_err(ApiError::internal)?,
    );
    Ok(response)
}
