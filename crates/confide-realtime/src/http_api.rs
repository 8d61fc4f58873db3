//! The HTTP API of Pusher Channels: signed requests that publish events and query channels.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::broker::SignatureRecord;
use crate::hub::{Hub, PublishError, lock};
use crate::names::{ChannelKind, SocketId};
use crate::query::{self, QueryError};
use crate::replay::ReplayVerdict;
use crate::signature;

/// An HTTP API refusal: `{"error":{"code","message"}}` with a status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn unauthorized(code: &'static str, message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

impl From<PublishError> for ApiError {
    fn from(error: PublishError) -> ApiError {
        let message = error.to_string();
        match error {
            PublishError::PayloadTooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
            }
            PublishError::Broker(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker_unavailable",
                "The event could not be delivered; try again",
            ),
            PublishError::InvalidChannel(name) => ApiError::bad_request(
                "invalid_channel",
                format!(
                    "Invalid channel name: {:?}",
                    name.chars().take(210).collect::<String>()
                ),
            ),
            PublishError::NoChannels | PublishError::TooManyChannels { .. } => {
                ApiError::bad_request("invalid_channels", message)
            }
            PublishError::InvalidEventName | PublishError::ReservedEventName => {
                ApiError::bad_request("invalid_event_name", message)
            }
            PublishError::InvalidSocketId => ApiError::bad_request("invalid_socket_id", message),
        }
    }
}

type ApiResult = Result<Response, ApiError>;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks the request signature and answers the app and the decoded query parameters.
async fn authenticate(
    hub: &Hub,
    app_id: &str,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> Result<(App, Vec<(String, String)>), ApiError> {
    let app = hub
        .directory
        .by_id(app_id)
        .await
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_app", "No such app"))?;
    let params = query::parse(uri.query().unwrap_or("")).map_err(|e| match e {
        QueryError::Malformed => ApiError::bad_request("invalid_query", "Malformed query string"),
        QueryError::Repeated(_) => {
            ApiError::bad_request("invalid_query", "A query parameter is repeated")
        }
    })?;
    let get = |k: &str| query::get(&params, k);

    let key = get("auth_key").unwrap_or("");
    if !signature::constant_time_eq(key.as_bytes(), app.key.as_bytes()) {
        return Err(ApiError::unauthorized(
            "invalid_auth_key",
            "auth_key is missing or is not this app's key",
        ));
    }
    if get("auth_version") != Some("1.0") {
        return Err(ApiError::unauthorized(
            "invalid_auth_version",
            "auth_version must be 1.0",
        ));
    }
    let window = hub.config.signature_window_secs;
    let now = unix_now();
    let timestamp = get("auth_timestamp")
        .filter(|t| !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::unauthorized("invalid_timestamp", "auth_timestamp must be Unix seconds")
        })?;
    if timestamp.abs_diff(now) > window {
        return Err(ApiError::unauthorized(
            "stale_timestamp",
            &format!("auth_timestamp is not within {window} s of the server's time"),
        ));
    }
    let md5 = get("body_md5");
    if !body.is_empty() || md5.is_some() {
        let expected = signature::body_md5(body);
        let given = md5.unwrap_or("").to_ascii_lowercase();
        if !signature::constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return Err(ApiError::unauthorized(
                "invalid_body_md5",
                "body_md5 is missing or does not match the body",
            ));
        }
    }
    let mut given = [0u8; 32];
    let well_formed = get("auth_signature")
        .is_some_and(|s| hex::decode_to_slice(s.to_ascii_lowercase(), &mut given).is_ok());
    let expected = signature::api_signature(&app.secret, method.as_str(), uri.path(), &params);
    let mut expected_bytes = [0u8; 32];
    let decoded = hex::decode_to_slice(&expected, &mut expected_bytes).is_ok();
    if !well_formed || !decoded || !signature::constant_time_eq(&given, &expected_bytes) {
        return Err(ApiError::unauthorized(
            "invalid_signature",
            "auth_signature does not match the request",
        ));
    }
    let replayed =
        || ApiError::unauthorized("replayed_signature", "This signature was already used");
    let expires = timestamp + window;
    // This node's cache answers replays to it without a round trip; the shared record then
    // catches a request replayed to another node.
    let verdict = lock(&hub.replay).check(&given, expires, now);
    match verdict {
        ReplayVerdict::Fresh => {}
        ReplayVerdict::Replayed => return Err(replayed()),
        ReplayVerdict::Full => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "Too many signed requests; try again shortly",
            ));
        }
    }
    let ttl = Duration::from_secs(expires.saturating_sub(now).max(1));
    match hub.record_signature(&app.id, &given, ttl).await {
        SignatureRecord::Seen => Err(replayed()),
        SignatureRecord::New | SignatureRecord::Unavailable => Ok((app, params)),
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("Invalid JSON body: {e}")))
}

/// `user_count`/`subscription_count` asked for in an `info` parameter; others are ignored.
#[derive(Clone, Copy, Default)]
struct Attributes {
    user_count: bool,
    subscription_count: bool,
}

impl Attributes {
    fn parse(info: Option<&str>) -> Attributes {
        let mut attrs = Attributes::default();
        for item in info.unwrap_or("").split(',').map(str::trim) {
            match item {
                "user_count" => attrs.user_count = true,
                "subscription_count" => attrs.subscription_count = true,
                _ => {}
            }
        }
        attrs
    }

    fn any(self) -> bool {
        self.user_count || self.subscription_count
    }

    async fn describe(self, hub: &Hub, app_id: &str, channel: &str) -> Value {
        let info = hub.channel_occupancy(app_id, channel).await;
        let mut out = Map::new();
        if self.user_count && ChannelKind::of(channel) == ChannelKind::Presence {
            let users = info.as_ref().and_then(|i| i.user_count).unwrap_or(0);
            out.insert("user_count".into(), users.into());
        }
        if self.subscription_count {
            let subs = info.as_ref().map_or(0, |i| i.subscription_count);
            out.insert("subscription_count".into(), subs.into());
        }
        Value::Object(out)
    }
}

/// An event in a request body; `data` must be a string, as Pusher's API defines it.
#[derive(Deserialize)]
struct TriggerRequest {
    name: String,
    data: Value,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
}

struct Trigger {
    name: String,
    data: String,
    channels: Vec<String>,
    socket_id: Option<String>,
    attributes: Attributes,
}

impl TriggerRequest {
    fn check(self, hub: &Hub) -> Result<Trigger, ApiError> {
        let Value::String(data) = self.data else {
            return Err(ApiError::bad_request(
                "invalid_data",
                "data must be a string (JSON-encode objects)",
            ));
        };
        let channels = match (self.channels, self.channel) {
            (Some(list), None) => list,
            (None, Some(one)) => vec![one],
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_channels",
                    "Give either channels or channel",
                ));
            }
        };
        if let Some(id) = &self.socket_id
            && SocketId::parse(id).is_none()
        {
            return Err(PublishError::InvalidSocketId.into());
        }
        hub.check_event(&channels, &self.name, &data, self.socket_id.as_deref())?;
        Ok(Trigger {
            name: self.name,
            data,
            channels,
            socket_id: self.socket_id,
            attributes: Attributes::parse(self.info.as_deref()),
        })
    }
}

async fn publish(hub: &Hub, app_id: &str, trigger: &Trigger) -> Result<(), ApiError> {
    hub.publish(
        app_id,
        &trigger.channels,
        &trigger.name,
        &trigger.data,
        trigger.socket_id.as_deref(),
    )
    .await?;
    Ok(())
}

/// `POST /apps/{app_id}/events`
pub(crate) async fn events(
    State(hub): State<Arc<Hub>>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> ApiResult {
    let (app, _) = authenticate(&hub, &app_id, &method, &uri, &body).await?;
    let trigger = parse_body::<TriggerRequest>(&body)?.check(&hub)?;
    publish(&hub, &app.id, &trigger).await?;
    if !trigger.attributes.any() {
        return Ok(Json(json!({})).into_response());
    }
    let mut channels = Map::new();
    for ch in &trigger.channels {
        let info = trigger.attributes.describe(&hub, &app.id, ch).await;
        channels.insert(ch.clone(), info);
    }
    Ok(Json(json!({ "channels": channels })).into_response())
}

#[derive(Deserialize)]
struct BatchRequest {
    batch: Vec<BatchItem>,
}

#[derive(Deserialize)]
struct BatchItem {
    channel: String,
    name: String,
    data: Value,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
}

/// `POST /apps/{app_id}/batch_events`: every event is checked before any is published.
pub(crate) async fn batch_events(
    State(hub): State<Arc<Hub>>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> ApiResult {
    let (app, _) = authenticate(&hub, &app_id, &method, &uri, &body).await?;
    let request = parse_body::<BatchRequest>(&body)?;
    let max = hub.config.max_batch_events;
    if request.batch.is_empty() || request.batch.len() > max {
        return Err(ApiError::bad_request(
            "invalid_batch",
            format!("A batch holds 1 to {max} events"),
        ));
    }
    let mut triggers = Vec::with_capacity(request.batch.len());
    for item in request.batch {
        let trigger = TriggerRequest {
            name: item.name,
            data: item.data,
            channels: None,
            channel: Some(item.channel),
            socket_id: item.socket_id,
            info: item.info,
        }
        .check(&hub)?;
        triggers.push(trigger);
    }
    for trigger in &triggers {
        publish(&hub, &app.id, trigger).await?;
    }
    if !triggers.iter().any(|t| t.attributes.any()) {
        return Ok(Json(json!({})).into_response());
    }
    let mut batch = Vec::with_capacity(triggers.len());
    for t in &triggers {
        batch.push(t.attributes.describe(&hub, &app.id, &t.channels[0]).await);
    }
    Ok(Json(json!({ "batch": batch })).into_response())
}

/// `GET /apps/{app_id}/channels?filter_by_prefix=&info=`
pub(crate) async fn channels(
    State(hub): State<Arc<Hub>>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
) -> ApiResult {
    let (app, params) = authenticate(&hub, &app_id, &method, &uri, &[]).await?;
    let prefix = query::get(&params, "filter_by_prefix").unwrap_or("");
    let attributes = Attributes::parse(query::get(&params, "info"));
    if attributes.user_count && !prefix.starts_with("presence-") {
        return Err(ApiError::bad_request(
            "invalid_info",
            "user_count needs filter_by_prefix=presence-",
        ));
    }
    let mut channels = Map::new();
    for info in hub.occupied_channels(&app.id, prefix).await {
        let mut attrs = Map::new();
        if attributes.user_count {
            attrs.insert("user_count".into(), info.user_count.unwrap_or(0).into());
        }
        if attributes.subscription_count {
            attrs.insert("subscription_count".into(), info.subscription_count.into());
        }
        channels.insert(info.name, Value::Object(attrs));
    }
    Ok(Json(json!({ "channels": channels })).into_response())
}

fn checked_channel(hub: &Hub, name: &str) -> Result<(), ApiError> {
    if hub.valid_channel_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_channel",
            "Invalid channel name",
        ))
    }
}

/// `GET /apps/{app_id}/channels/{channel_name}?info=`
pub(crate) async fn channel(
    State(hub): State<Arc<Hub>>,
    Path((app_id, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
) -> ApiResult {
    let (app, params) = authenticate(&hub, &app_id, &method, &uri, &[]).await?;
    checked_channel(&hub, &name)?;
    let attributes = Attributes::parse(query::get(&params, "info"));
    let presence = ChannelKind::of(&name) == ChannelKind::Presence;
    if attributes.user_count && !presence {
        return Err(ApiError::bad_request(
            "invalid_info",
            "user_count is only available for presence channels",
        ));
    }
    let info = hub.channel_occupancy(&app.id, &name).await;
    let mut out = Map::new();
    out.insert("occupied".into(), info.is_some().into());
    if attributes.user_count {
        let users = info.as_ref().and_then(|i| i.user_count).unwrap_or(0);
        out.insert("user_count".into(), users.into());
    }
    if attributes.subscription_count {
        let subs = info.as_ref().map_or(0, |i| i.subscription_count);
        out.insert("subscription_count".into(), subs.into());
    }
    Ok(Json(Value::Object(out)).into_response())
}

/// `GET /apps/{app_id}/channels/{channel_name}/users`
pub(crate) async fn users(
    State(hub): State<Arc<Hub>>,
    Path((app_id, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
) -> ApiResult {
    let (app, _) = authenticate(&hub, &app_id, &method, &uri, &[]).await?;
    checked_channel(&hub, &name)?;
    if ChannelKind::of(&name) != ChannelKind::Presence {
        return Err(ApiError::bad_request(
            "not_a_presence_channel",
            "Users are only listed for presence channels",
        ));
    }
    let users: Vec<Value> = hub
        .present_users(&app.id, &name)
        .await
        .into_iter()
        .map(|id| json!({ "id": id }))
        .collect();
    Ok(Json(json!({ "users": users })).into_response())
}

/// `POST /apps/{app_id}/users/{user_id}/terminate_connections`
pub(crate) async fn terminate_user(
    State(hub): State<Arc<Hub>>,
    Path((app_id, user_id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> ApiResult {
    let (app, _) = authenticate(&hub, &app_id, &method, &uri, &body).await?;
    hub.terminate_user_connections(&app.id, &user_id);
    Ok(Json(json!({})).into_response())
}
