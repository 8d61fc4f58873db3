//! A bot's webhook endpoints (write permission to change, read to look), their signing secrets
//! (shown once; rotation keeps the old one signing for an overlap window) and the delivery log.
//! An endpoint receives the bot's chats, so aiming one (creating it, changing it, sending a
//! delivery again) also needs the right to read them.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::{BotId, OrgId, WebhookDeliveryId, WebhookEvent, WebhookId};
use confide_outbound::{OutboundError, Url};
use confide_security::webhook::WebhookSecret;
use confide_store::{DeliveryState, Webhook, WebhookAttempt, WebhookDelivery, WebhookUpdate};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::api::timestamp;
use crate::audit::{self, org_chain};
use crate::auth::Auth;
use crate::authz::{self, BotNeed};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PathParams, QueryParams, StrictJson, optional_whole_number};
use crate::state::{AppState, now_ms};

/// Endpoints one bot may have.
pub const MAX_WEBHOOKS_PER_BOT: usize = 10;
/// Deliveries in flight at once to one endpoint, at most (default 4).
pub const MAX_CONCURRENCY: u32 = 50;
const DEFAULT_CONCURRENCY: u32 = 4;
/// How long the old secret keeps signing after a rotation, at most (default 24 hours).
pub const MAX_OVERLAP_SECONDS: u32 = 7 * 24 * 60 * 60;
const DEFAULT_OVERLAP_SECONDS: u32 = 24 * 60 * 60;

#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    pub id: WebhookId,
    pub bot_id: BotId,
    pub url: String,
    pub events: Vec<WebhookEvent>,
    pub enabled: bool,
    pub max_concurrency: i64,
    /// Until then the previous secret also signs (`webhook-signature` carries both).
    pub previous_secret_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl WebhookView {
    fn of(webhook: &Webhook, now: i64) -> WebhookView {
        WebhookView {
            id: webhook.id,
            bot_id: webhook.bot_id,
            url: webhook.url.clone(),
            events: webhook.events.clone(),
            enabled: webhook.enabled,
            max_concurrency: webhook.max_concurrency,
            previous_secret_expires_at: webhook
                .previous_secret_expires_at
                .filter(|at| *at > now)
                .map(timestamp),
            created_at: timestamp(webhook.created_at),
            updated_at: timestamp(webhook.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookWithSecret {
    pub webhook: WebhookView,
    /// `whsec_` + base64 of 32 random bytes, shown only now. The Standard Webhooks key is the
    /// decoded bytes after `whsec_`; the `Kindly-HMAC` key is this whole text as UTF-8 bytes.
    pub secret: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where deliveries are posted: an absolute http(s) URL without credentials.
    #[schema(min_length = 1, max_length = 2048)]
    pub url: String,
    #[schema(min_items = 1, max_items = 7)]
    pub events: Vec<WebhookEvent>,
    /// Default true.
    pub enabled: Option<bool>,
    /// 1 to 50, default 4.
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 50)]
    pub max_concurrency: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookRequest {
    #[schema(min_length = 1, max_length = 2048)]
    pub url: Option<String>,
    #[schema(min_items = 1, max_items = 7)]
    pub events: Option<Vec<WebhookEvent>>,
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 50)]
    pub max_concurrency: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretRequest {
    /// How long the previous secret keeps signing: 0 to 604800 seconds (7 days), default 86400.
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 604800)]
    pub overlap_seconds: Option<u32>,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// The URL as the shared outbound client parses and checks it at every delivery: its shape (http
/// or https, a host, no credentials, at most 2048 bytes; the fragment, never sent, dropped) and,
/// for an address literal, the address in every spelling. Names are resolved and checked at each
/// delivery, so saving needs no DNS. A refused address is audited: it is how one would probe the
/// internal network.
async fn checked_url(state: &AppState, auth: &Auth, org_id: OrgId, url: &str) -> ApiResult<Url> {
    match state.outbound.check_url(url) {
        Ok(url) => Ok(url),
        Err(err @ OutboundError::AddressNotAllowed { .. }) => {
            audit::record_refusal(
                state,
                org_chain(org_id),
                &auth.actor(),
                "webhook.url_refused",
                None,
                serde_json::json!({ "reason": err.code() }),
            )
            .await;
            Err(invalid("webhook_url_not_allowed", err.to_string()))
        }
        Err(err) => Err(invalid("invalid_webhook_url", err.to_string())),
    }
}

fn checked_events(events: &[WebhookEvent]) -> ApiResult<Vec<WebhookEvent>> {
    let mut events = events.to_vec();
    events.sort();
    events.dedup();
    if events.is_empty() {
        return Err(invalid("invalid_events", "subscribe to at least one event"));
    }
    Ok(events)
}

fn checked_concurrency(value: Option<u32>) -> ApiResult<Option<i64>> {
    match value {
        Some(n) if !(1..=MAX_CONCURRENCY).contains(&n) => Err(invalid(
            "invalid_max_concurrency",
            format!("max_concurrency is 1 to {MAX_CONCURRENCY}"),
        )),
        other => Ok(other.map(i64::from)),
    }
}

/// Whoever decides where the bot's chats are sent (creating or changing an endpoint, sending a
/// delivery again) or holds what signs them (a rotated secret: with it, anyone can sign a
/// "chat" the receiver trusts) may change the bot and read its chats: the conversation sharing policy for
/// people, `chats:read` for API keys. Otherwise `bots:write` alone would export what
/// `chats:read` guards.
async fn may_send_chats(
    state: &AppState,
    auth: &Auth,
    org_id: OrgId,
    bot_id: BotId,
) -> ApiResult<()> {
    authz::bot(state, auth, org_id, bot_id, BotNeed::Write).await?;
    authz::chats(state, auth, org_id, bot_id, BotNeed::Read).await?;
    Ok(())
}

async fn find(state: &AppState, org: OrgId, bot: BotId, id: WebhookId) -> ApiResult<Webhook> {
    state
        .store
        .get_webhook(org, bot, id)
        .await?
        .ok_or_else(ApiError::not_found)
}

/// The bot's webhook endpoints (read permission).
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks", tag = "webhooks",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The endpoints, oldest first", body = WebhookList),
        (status = 403, description = "API key without bots:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
) -> ApiResult<Json<WebhookList>> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    let now = now_ms();
    let webhooks = state.store.list_webhooks(org_id, bot_id).await?;
    Ok(Json(WebhookList {
        webhooks: webhooks.iter().map(|w| WebhookView::of(w, now)).collect(),
    }))
}

/// Add a webhook endpoint (write permission, and read on the bot's chats). The answer carries its
/// signing secret, the only time it is shown.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks", tag = "webhooks",
    request_body = CreateWebhookRequest,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Created; the secret is shown once", body = WebhookWithSecret),
        (status = 403, description = "Read-only access, or the bot's chats are not the caller's to read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The bot has the most endpoints it may have", body = ErrorBody),
        (status = 422, description = "A URL, event list or limit that is not accepted", body = ErrorBody),
    ))]
pub async fn create_webhook(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
    StrictJson(request): StrictJson<CreateWebhookRequest>,
) -> ApiResult<(StatusCode, Json<WebhookWithSecret>)> {
    may_send_chats(&state, &auth, org_id, bot_id).await?;
    let url = checked_url(&state, &auth, org_id, &request.url).await?;
    // Only the host goes to the audit log: a query string may carry the receiver's own token.
    let host = url.host_str().map(str::to_owned);
    let events = checked_events(&request.events)?;
    let max_concurrency =
        checked_concurrency(request.max_concurrency)?.unwrap_or(i64::from(DEFAULT_CONCURRENCY));
    if state.store.list_webhooks(org_id, bot_id).await?.len() >= MAX_WEBHOOKS_PER_BOT {
        return Err(ApiError::conflict(
            "too_many_webhooks",
            format!("a bot has at most {MAX_WEBHOOKS_PER_BOT} webhook endpoints"),
        ));
    }
    let id = WebhookId::new();
    let secret = WebhookSecret::generate().map_err(ApiError::internal)?;
    let sealed = state
        .webhooks
        .cipher
        .seal(&secret, &id.to_string())
        .map_err(ApiError::internal)?;
    let now = now_ms();
    let webhook = Webhook {
        id,
        org_id,
        bot_id,
        url: url.into(),
        events,
        enabled: request.enabled.unwrap_or(true),
        max_concurrency,
        secret_sealed: sealed,
        previous_secret_sealed: None,
        previous_secret_expires_at: None,
        created_at: now,
        updated_at: now,
    };
    state.store.create_webhook(&webhook).await?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "webhook.created",
        Some(format!("bot:{bot_id}")),
        json!({
            "webhook_id": id,
            "host": host,
            "events": webhook.events,
            "enabled": webhook.enabled,
        }),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookWithSecret {
            webhook: WebhookView::of(&webhook, now),
            secret: secret.expose().to_owned(),
        }),
    ))
}

/// One endpoint (read permission); never its secret.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}", tag = "webhooks",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("webhook_id" = WebhookId, Path, description = "Webhook id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The endpoint", body = WebhookView),
        (status = 403, description = "API key without bots:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn get_webhook(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, id)): PathParams<(OrgId, BotId, WebhookId)>,
) -> ApiResult<Json<WebhookView>> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    let webhook = find(&state, org_id, bot_id, id).await?;
    Ok(Json(WebhookView::of(&webhook, now_ms())))
}

/// Change an endpoint's URL, events, state or concurrency (write permission, and read on the
/// bot's chats). Deliveries already queued go to the new URL.
#[utoipa::path(patch, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}", tag = "webhooks",
    request_body = UpdateWebhookRequest,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("webhook_id" = WebhookId, Path, description = "Webhook id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Changed", body = WebhookView),
        (status = 403, description = "Read-only access, or the bot's chats are not the caller's to read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 422, description = "A URL, event list or limit that is not accepted", body = ErrorBody),
    ))]
pub async fn update_webhook(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, id)): PathParams<(OrgId, BotId, WebhookId)>,
    StrictJson(request): StrictJson<UpdateWebhookRequest>,
) -> ApiResult<Json<WebhookView>> {
    may_send_chats(&state, &auth, org_id, bot_id).await?;
    let url = match request.url.as_deref() {
        Some(url) => Some(checked_url(&state, &auth, org_id, url).await?),
        None => None,
    };
    let host = url.as_ref().and_then(|u| u.host_str().map(str::to_owned));
    let update = WebhookUpdate {
        url: url.map(String::from),
        events: request.events.as_deref().map(checked_events).transpose()?,
        enabled: request.enabled,
        max_concurrency: checked_concurrency(request.max_concurrency)?,
    };
    let now = now_ms();
    let webhook = state
        .store
        .update_webhook(org_id, bot_id, id, &update, now)
        .await?
        .ok_or_else(ApiError::not_found)?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "webhook.updated",
        Some(format!("bot:{bot_id}")),
        json!({
            "webhook_id": id,
            "host": host,
            "events": update.events,
            "enabled": update.enabled,
            "max_concurrency": update.max_concurrency,
        }),
    )
    .await?;
    if update.enabled == Some(true) {
        // Deliveries that waited while it was off can go now.
        state.webhooks.wake.notify_one();
    }
    Ok(Json(WebhookView::of(&webhook, now)))
}

/// Remove an endpoint (write permission), with its queued deliveries and their log.
#[utoipa::path(delete, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}", tag = "webhooks",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("webhook_id" = WebhookId, Path, description = "Webhook id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Read-only access", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, id)): PathParams<(OrgId, BotId, WebhookId)>,
) -> ApiResult<StatusCode> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    if !state.store.delete_webhook(org_id, bot_id, id).await? {
        return Err(ApiError::not_found());
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "webhook.deleted",
        Some(format!("bot:{bot_id}")),
        json!({ "webhook_id": id }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct RotatedSecret {
    pub webhook: WebhookView,
    /// The new secret, shown only now. It signs from now on (`Kindly-HMAC` with it alone).
    pub secret: String,
}

/// Issue a new signing secret (write permission). Until `previous_secret_expires_at` deliveries
/// carry a Standard Webhooks signature of both the old and the new secret; `Kindly-HMAC` uses the
/// new one. A second rotation within the window retires the oldest secret at once.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}/rotate-secret", tag = "webhooks",
    request_body = RotateSecretRequest,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("webhook_id" = WebhookId, Path, description = "Webhook id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Rotated; the new secret is shown once", body = RotatedSecret),
        (status = 403, description = "Read-only access, chats not shared with you, or an API key without chats:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 422, description = "An overlap outside 0..=604800 seconds", body = ErrorBody),
    ))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, id)): PathParams<(OrgId, BotId, WebhookId)>,
    StrictJson(request): StrictJson<RotateSecretRequest>,
) -> ApiResult<Json<RotatedSecret>> {
    may_send_chats(&state, &auth, org_id, bot_id).await?;
    let overlap = request.overlap_seconds.unwrap_or(DEFAULT_OVERLAP_SECONDS);
    if overlap > MAX_OVERLAP_SECONDS {
        return Err(invalid(
            "invalid_overlap",
            format!("overlap_seconds is 0 to {MAX_OVERLAP_SECONDS}"),
        ));
    }
    find(&state, org_id, bot_id, id).await?;
    let secret = WebhookSecret::generate().map_err(ApiError::internal)?;
    let sealed = state
        .webhooks
        .cipher
        .seal(&secret, &id.to_string())
        .map_err(ApiError::internal)?;
    let now = now_ms();
    let expires = now + i64::from(overlap) * 1000;
    let webhook = state
        .store
        .rotate_webhook_secret(org_id, bot_id, id, &sealed, expires, now)
        .await?
        .ok_or_else(ApiError::not_found)?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "webhook.secret_rotated",
        Some(format!("bot:{bot_id}")),
        json!({ "webhook_id": id, "overlap_seconds": overlap }),
    )
    .await?;
    Ok(Json(RotatedSecret {
        webhook: WebhookView::of(&webhook, now),
        secret: secret.expose().to_owned(),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    /// Also the `webhook-id` header, the same on every attempt.
    pub id: WebhookDeliveryId,
    pub event: WebhookEvent,
    /// What the event is about (the message id of `message.created`).
    pub event_id: String,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    pub attempts: i64,
    pub created_at: String,
    /// When a pending delivery is tried next.
    pub next_attempt_at: Option<String>,
    pub last_attempt_at: Option<String>,
    /// The HTTP status of the latest answer.
    pub last_status: Option<i64>,
    pub last_latency_ms: Option<i64>,
    /// Why the latest attempt failed (`status 500`, `timeout`, `connect: ...`).
    pub last_error: Option<String>,
    pub delivered_at: Option<String>,
}

impl From<&WebhookDelivery> for DeliveryView {
    fn from(d: &WebhookDelivery) -> Self {
        DeliveryView {
            id: d.id,
            event: d.event,
            event_id: d.event_id.clone(),
            state: d.state.as_str().to_owned(),
            attempts: d.attempts,
            created_at: timestamp(d.created_at),
            next_attempt_at: (d.state == DeliveryState::Pending)
                .then(|| timestamp(d.next_attempt_at)),
            last_attempt_at: d.last_attempt_at.map(timestamp),
            last_status: d.last_status,
            last_latency_ms: d.last_latency_ms,
            last_error: d.last_error.clone(),
            delivered_at: d.delivered_at.map(timestamp),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    /// Newest first.
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<WebhookDeliveryId>,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: i64,
    pub started_at: String,
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    /// `delivered`, `retry` or `dead`.
    pub outcome: String,
}

impl From<WebhookAttempt> for AttemptView {
    fn from(a: WebhookAttempt) -> Self {
        AttemptView {
            attempt: a.attempt,
            started_at: timestamp(a.started_at),
            status: a.status,
            latency_ms: a.latency_ms,
            error: a.error,
            outcome: a.outcome,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryDetail {
    pub delivery: DeliveryView,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptView>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only deliveries in this state: `pending`, `delivered` or `dead`.
    #[param(pattern = "^(pending|delivered|dead)$")]
    pub state: Option<String>,
    /// Only deliveries older than this one.
    pub before: Option<WebhookDeliveryId>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// The endpoint's delivery log (read permission).
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("webhook_id" = WebhookId, Path, description = "Webhook id"), DeliveryQuery),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryPage),
        (status = 403, description = "API key without bots:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, id)): PathParams<(OrgId, BotId, WebhookId)>,
    QueryParams(query): QueryParams<DeliveryQuery>,
) -> ApiResult<Json<DeliveryPage>> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    let limit = query.limit.unwrap_or(50);
    let filter = match query.state.as_deref() {
        None => None,
        Some(text) => Some(DeliveryState::parse(text).ok_or_else(|| {
            ApiError::bad_request("invalid_query", "state is pending, delivered or dead")
        })?),
    };
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be 1..=200",
        ));
    }
    find(&state, org_id, bot_id, id).await?;
    let deliveries = state
        .store
        .list_deliveries(id, filter, query.before, limit)
        .await?;
    let next_before = if deliveries.len() as i64 == limit {
        deliveries.last().map(|d| d.id)
    } else {
        None
    };
    Ok(Json(DeliveryPage {
        deliveries: deliveries.iter().map(DeliveryView::from).collect(),
        next_before,
    }))
}

/// One delivery with every attempt (read permission).
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}/deliveries/{delivery_id}", tag = "webhooks",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("webhook_id" = WebhookId, Path, description = "Webhook id"),
        ("delivery_id" = WebhookDeliveryId, Path, description = "Delivery id (the webhook-id header)")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The delivery and its attempts", body = DeliveryDetail),
        (status = 403, description = "API key without bots:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn get_delivery(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, id, delivery_id)): PathParams<(
        OrgId,
        BotId,
        WebhookId,
        WebhookDeliveryId,
    )>,
) -> ApiResult<Json<DeliveryDetail>> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    find(&state, org_id, bot_id, id).await?;
    let delivery = state
        .store
        .get_delivery(id, delivery_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let attempts = state.store.list_attempts(delivery_id).await?;
    Ok(Json(DeliveryDetail {
        delivery: (&delivery).into(),
        attempts: attempts.into_iter().map(AttemptView::from).collect(),
    }))
}

/// Send a delivered or dead delivery again (write permission, and read on the bot's chats): same
/// body, same `webhook-id`, a fresh 24-hour retry window.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", tag = "webhooks",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("webhook_id" = WebhookId, Path, description = "Webhook id"),
        ("delivery_id" = WebhookDeliveryId, Path, description = "Delivery id (the webhook-id header)")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "Queued again", body = DeliveryView),
        (status = 403, description = "Read-only access, or the bot's chats are not the caller's to read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The delivery is still pending", body = ErrorBody),
    ))]
pub async fn redeliver(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, id, delivery_id)): PathParams<(
        OrgId,
        BotId,
        WebhookId,
        WebhookDeliveryId,
    )>,
) -> ApiResult<(StatusCode, Json<DeliveryView>)> {
    may_send_chats(&state, &auth, org_id, bot_id).await?;
    find(&state, org_id, bot_id, id).await?;
    let now = now_ms();
    if !state.store.redeliver(id, delivery_id, now).await? {
        return Err(match state.store.get_delivery(id, delivery_id).await? {
            Some(_) => ApiError::conflict(
                "delivery_pending",
                "the delivery is still pending; it is retried on its own",
            ),
            None => ApiError::not_found(),
        });
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "webhook.redelivery_requested",
        Some(format!("bot:{bot_id}")),
        json!({ "webhook_id": id, "delivery_id": delivery_id }),
    )
    .await?;
    state.webhooks.wake.notify_one();
    let delivery = state
        .store
        .get_delivery(id, delivery_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok((StatusCode::ACCEPTED, Json((&delivery).into())))
}
