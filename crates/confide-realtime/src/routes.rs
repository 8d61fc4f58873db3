//! The router the web layer mounts: the WebSocket endpoint and the HTTP API.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::{get, post};
use confide_domain::ClientIp;

use crate::app::ConnectionRefusal;
use crate::connection;
use crate::http_api;
use crate::hub::Hub;
use crate::peer::Close;
use crate::query;

/// The client's address: the web layer's [`ClientIp`] when present, else the peer address.
struct ClientAddress(IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(ClientIp(ip)) = parts.extensions.get::<ClientIp>() {
            return Ok(ClientAddress(*ip));
        }
        if let Some(ConnectInfo(addr)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            return Ok(ClientAddress(addr.ip().to_canonical()));
        }
        tracing::warn!(
            "realtime: no ClientIp or ConnectInfo on the request; counting it as 0.0.0.0"
        );
        Ok(ClientAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
    }
}

const UNKNOWN_APP: Close = Close {
    code: 4001,
    message: "Application does not exist",
};

/// `GET /app/{key}?protocol=7&client=..&version=..`
async fn connect(
    State(hub): State<Arc<Hub>>,
    Path(key): Path<String>,
    RawQuery(raw_query): RawQuery,
    ClientAddress(ip): ClientAddress,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let config = &hub.config;
    let max = config.max_ws_message_bytes();
    let upgrade = upgrade
        .read_buffer_size(config.ws_read_buffer_size)
        .write_buffer_size(0)
        .max_message_size(max)
        .max_frame_size(max);
    let write_limit = Duration::from_secs(config.write_timeout_secs.max(1));
    let grace = Duration::from_millis(config.close_grace_ms);

    let params = query::parse(raw_query.as_deref().unwrap_or("")).unwrap_or_default();
    let origin = headers
        .get(header::ORIGIN)
        // An Origin that is not text matches no allowed origin.
        .map(|o| o.to_str().unwrap_or(""));

    let admitted = match query::get(&params, "protocol") {
        None => Err(Close {
            code: 4008,
            message: "No protocol version supplied",
        }),
        // Keys are short; a long one is not worth a directory lookup.
        Some("7") if key.len() > 256 => Err(UNKNOWN_APP),
        Some("7") => match hub.directory.by_key(&key).await {
            None => Err(UNKNOWN_APP),
            Some(app) => {
                let refusal = if !app.origins.allows(origin) {
                    Some(ConnectionRefusal::Origin)
                } else {
                    app.addresses.refusal(ip).map(ConnectionRefusal::Address)
                };
                match refusal {
                    None => hub.admit(app, ip).await,
                    Some(refusal) => {
                        hub.directory.connection_refused(&app, ip, refusal).await;
                        Err(match refusal {
                            ConnectionRefusal::Origin => Close {
                                code: 4009,
                                message: "Origin not allowed for this application",
                            },
                            ConnectionRefusal::Address(_) => Close {
                                code: 4009,
                                message: "Address not allowed for this application",
                            },
                        })
                    }
                }
            }
        },
        Some(_) => Err(Close {
            code: 4007,
            message: "Unsupported protocol version",
        }),
    };
    match admitted {
        Ok(admission) => upgrade.on_upgrade(move |socket| connection::run(hub, admission, socket)),
        Err(close) => {
            tracing::debug!(code = close.code, "realtime: connection refused");
            upgrade.on_upgrade(move |socket| connection::reject(socket, close, write_limit, grace))
        }
    }
}

/// The hub's routes, to be merged at the root of the server (Pusher clients and SDKs use the
/// fixed paths `/app/{key}` and `/apps/{app_id}/...`, and API signatures cover the path).
pub fn routes(hub: Arc<Hub>) -> Router {
    let body_limit = hub.config.max_http_body_bytes;
    Router::new()
        .route("/app/{key}", get(connect))
        .route("/apps/{app_id}/events", post(http_api::events))
        .route("/apps/{app_id}/batch_events", post(http_api::batch_events))
        .route("/apps/{app_id}/channels", get(http_api::channels))
        .route(
            "/apps/{app_id}/channels/{channel_name}",
            get(http_api::channel),
        )
        .route(
            "/apps/{app_id}/channels/{channel_name}/users",
            get(http_api::users),
        )
        .route(
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            post(http_api::terminate_user),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(hub)
}
