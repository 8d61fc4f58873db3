//! Nudges (Kindly's Nudge API): a bot's builders write them; the widget shows those with rules by
//! itself (page path, seconds on the page); agents and systems send one to a live chat through the
//! API. A nudge's form answer goes to the `nudge.submitted` webhooks.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use confide_domain::nudge::{self, Kind, NudgeError, NudgeForm, NudgeRules};
use confide_domain::{BotId, ClientIp, ConversationId, Name, NudgeId, OrgId};
use confide_store::Nudge;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::chat::{IdentityCheck, admit_page, chat_context, publish};
use crate::api::timestamp;
use crate::audit::{self, org_chain};
use crate::auth::Auth;
use crate::authz::{self, BotNeed};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PathParams, StrictJson};
use crate::state::{AppState, now_ms};

/// The realtime event that shows a nudge in the widget.
pub const NUDGE_EVENT: &str = "nudge";

#[derive(Serialize, ToSchema)]
pub struct NudgeView {
    pub id: NudgeId,
    pub name: String,
    pub title: String,
    pub text: String,
    pub form: Option<NudgeForm>,
    /// Absent: shown only when sent through the API.
    pub rules: Option<NudgeRules>,
    pub enabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Nudge> for NudgeView {
    fn from(n: Nudge) -> Self {
        NudgeView {
            id: n.id,
            name: n.name,
            title: n.title,
            text: n.text,
            form: n.form,
            rules: n.rules,
            enabled: n.enabled,
            created_at: timestamp(n.created_at),
            updated_at: timestamp(n.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct NudgeList {
    /// Oldest first.
    pub nudges: Vec<NudgeView>,
}

/// A nudge as saved (creating or replacing). Texts are plain text.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NudgeRequest {
    /// For the bot's builders; visitors never see it.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: String,
    #[schema(
        min_length = 1,
        max_length = 120,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub title: String,
    /// May hold line breaks.
    #[schema(
        min_length = 1,
        max_length = 1000,
        pattern = r"^[^\x00-\x09\x0B\x0C\x0E-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x09\x0B\x0C\x0E-\x1F\x7F-\x9F]*$"
    )]
    pub text: String,
    pub form: Option<NudgeForm>,
    pub rules: Option<NudgeRules>,
    /// Default true.
    pub enabled: Option<bool>,
}

fn refused(err: NudgeError) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        err.code(),
        err.to_string(),
    )
}

/// The request checked: every text within bounds, rules well formed.
struct Checked {
    name: String,
    title: String,
    text: String,
    form: Option<NudgeForm>,
    rules: Option<NudgeRules>,
}

fn checked(request: &NudgeRequest) -> ApiResult<Checked> {
    let name = Name::parse("name", &request.name)?.into_inner();
    let title = nudge::text("title", &request.title, nudge::MAX_TITLE_CHARS, Kind::Plain)
        .map_err(refused)?;
    let text = nudge::text(
        "text",
        &request.text,
        nudge::MAX_TEXT_CHARS,
        Kind::Formatted,
    )
    .map_err(refused)?;
    let form = request
        .form
        .as_ref()
        .map(nudge::form)
        .transpose()
        .map_err(refused)?;
    let rules = request
        .rules
        .as_ref()
        .map(nudge::rules)
        .transpose()
        .map_err(refused)?;
    Ok(Checked {
        name,
        title,
        text,
        form,
        rules,
    })
}

async fn find(state: &AppState, bot: BotId, id: NudgeId) -> ApiResult<Nudge> {
    state
        .store
        .get_nudge(bot, id)
        .await?
        .ok_or_else(ApiError::not_found)
}

/// The bot's nudges.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/nudges", tag = "nudges",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The nudges", body = NudgeList),
        (status = 403, description = "API key without bots:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn list_nudges(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
) -> ApiResult<Json<NudgeList>> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    let nudges = state.store.list_nudges(bot_id).await?;
    Ok(Json(NudgeList {
        nudges: nudges.into_iter().map(NudgeView::from).collect(),
    }))
}

/// Add a nudge (write permission).
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/nudges", tag = "nudges",
    request_body = NudgeRequest,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Added", body = NudgeView),
        (status = 403, description = "Read-only access", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The bot has the most nudges it may have", body = ErrorBody),
        (status = 422, description = "A text out of bounds, or bad rules", body = ErrorBody),
    ))]
pub async fn create_nudge(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
    StrictJson(request): StrictJson<NudgeRequest>,
) -> ApiResult<(StatusCode, Json<NudgeView>)> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let c = checked(&request)?;
    if state.store.list_nudges(bot_id).await?.len() >= nudge::MAX_NUDGES_PER_BOT {
        return Err(ApiError::conflict(
            "too_many_nudges",
            format!("a bot has at most {} nudges", nudge::MAX_NUDGES_PER_BOT),
        ));
    }
    let now = now_ms();
    let created = Nudge {
        id: NudgeId::new(),
        bot_id,
        name: c.name,
        title: c.title,
        text: c.text,
        form: c.form,
        rules: c.rules,
        enabled: request.enabled.unwrap_or(true),
        created_at: now,
        updated_at: now,
    };
    state.store.create_nudge(&created).await?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "nudge.created",
        Some(format!("nudge:{}", created.id)),
        json!({ "bot_id": bot_id }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// One nudge.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/nudges/{nudge_id}", tag = "nudges",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("nudge_id" = NudgeId, Path, description = "Nudge id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The nudge", body = NudgeView),
        (status = 403, description = "API key without bots:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn get_nudge(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, nudge_id)): PathParams<(OrgId, BotId, NudgeId)>,
) -> ApiResult<Json<NudgeView>> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    Ok(Json(find(&state, bot_id, nudge_id).await?.into()))
}

/// Replace a nudge (write permission).
#[utoipa::path(put, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/nudges/{nudge_id}", tag = "nudges",
    request_body = NudgeRequest,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("nudge_id" = NudgeId, Path, description = "Nudge id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Saved", body = NudgeView),
        (status = 403, description = "Read-only access", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 422, description = "A text out of bounds, or bad rules", body = ErrorBody),
    ))]
pub async fn update_nudge(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, nudge_id)): PathParams<(OrgId, BotId, NudgeId)>,
    StrictJson(request): StrictJson<NudgeRequest>,
) -> ApiResult<Json<NudgeView>> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let c = checked(&request)?;
    let current = find(&state, bot_id, nudge_id).await?;
    let saved = Nudge {
        name: c.name,
        title: c.title,
        text: c.text,
        form: c.form,
        rules: c.rules,
        enabled: request.enabled.unwrap_or(current.enabled),
        updated_at: now_ms(),
        ..current
    };
    if !state.store.update_nudge(&saved).await? {
        return Err(ApiError::not_found());
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "nudge.updated",
        Some(format!("nudge:{nudge_id}")),
        json!({ "bot_id": bot_id }),
    )
    .await?;
    Ok(Json(saved.into()))
}

/// Delete a nudge (write permission).
#[utoipa::path(delete, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/nudges/{nudge_id}", tag = "nudges",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("nudge_id" = NudgeId, Path, description = "Nudge id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Read-only access", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn delete_nudge(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, nudge_id)): PathParams<(OrgId, BotId, NudgeId)>,
) -> ApiResult<StatusCode> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    if !state.store.delete_nudge(bot_id, nudge_id).await? {
        return Err(ApiError::not_found());
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "nudge.deleted",
        Some(format!("nudge:{nudge_id}")),
        json!({ "bot_id": bot_id }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendNudge {
    /// The live chat to show it in.
    pub chat_id: ConversationId,
}

/// What the widget gets to show a nudge.
#[derive(Serialize, ToSchema)]
pub struct ShownNudge {
    pub id: NudgeId,
    pub title: String,
    pub text: String,
    pub form: Option<NudgeForm>,
    pub rules: Option<NudgeRules>,
}

impl From<&Nudge> for ShownNudge {
    fn from(n: &Nudge) -> Self {
        ShownNudge {
            id: n.id,
            title: n.title.clone(),
            text: n.text.clone(),
            form: n.form.clone(),
            rules: n.rules.clone(),
        }
    }
}

/// Show a nudge in a live chat (agents, or API keys with `chats:write`); the visitor's widget
/// receives it over the chat's realtime channel, enabled or not.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/nudges/{nudge_id}/send", tag = "nudges",
    request_body = SendNudge,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("nudge_id" = NudgeId, Path, description = "Nudge id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "Sent to the chat's channel"),
        (status = 403, description = "No write permission, not shared with you, or an API key without chats:write", body = ErrorBody),
        (status = 404, description = "No such nudge or chat", body = ErrorBody),
    ))]
pub async fn send_nudge(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, nudge_id)): PathParams<(OrgId, BotId, NudgeId)>,
    StrictJson(request): StrictJson<SendNudge>,
) -> ApiResult<StatusCode> {
    let bot = authz::chats(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let shown = find(&state, bot_id, nudge_id).await?;
    let chat = state
        .store
        .get_conversation(bot_id, request.chat_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let data = serde_json::to_string(&ShownNudge::from(&shown)).map_err(ApiError::internal)?;
    publish(&state, &bot, &chat, NUDGE_EVENT, &data).await?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "nudge.sent",
        Some(format!("chat:{}", chat.id)),
        json!({ "bot_id": bot_id, "nudge_id": nudge_id }),
    )
    .await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Serialize, ToSchema)]
pub struct ChatNudges {
    /// The bot's enabled nudges that have rules, for the widget to apply.
    pub nudges: Vec<ShownNudge>,
}

/// The nudges the widget shows by itself (enabled, with rules), for a page that may embed the
/// bot; no chat is needed to see them.
#[utoipa::path(get, path = "/chat/v1/{bot_key}/nudges", tag = "chat",
    params(("bot_key" = String, Path, description = "The bot's widget key")),
    responses(
        (status = 200, description = "The nudges and their rules", body = ChatNudges),
        (status = 403, description = "The page's origin or the visitor's address may not use this bot", body = ErrorBody),
        (status = 404, description = "No such bot", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    ))]
pub async fn chat_nudges(
    State(state): State<AppState>,
    axum::Extension(ip): axum::Extension<ClientIp>,
    headers: HeaderMap,
    PathParams(bot_key): PathParams<String>,
) -> ApiResult<Json<ChatNudges>> {
    let (bot, _) = admit_page(&state, ip, &headers, &bot_key).await?;
    let nudges = state.store.list_nudges(bot.id).await?;
    Ok(Json(ChatNudges {
        nudges: nudges
            .iter()
            .filter(|n| n.enabled && n.rules.is_some())
            .map(ShownNudge::from)
            .collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NudgeAnswer {
    /// What the visitor entered; an email address when the form asks for one.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub value: String,
}

/// Submit a nudge's form (the visitor): the answer goes to the `nudge.submitted` webhooks.
#[utoipa::path(post, path = "/chat/v1/nudges/{nudge_id}/submit", tag = "chat",
    request_body = NudgeAnswer,
    params(("nudge_id" = NudgeId, Path, description = "Nudge id")),
    responses(
        (status = 202, description = "Accepted"),
        (status = 403, description = "Invalid or expired chat token", body = ErrorBody),
        (status = 404, description = "No such nudge with a form for this bot", body = ErrorBody),
        (status = 422, description = "An empty, too long or (for an email form) malformed answer", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    ))]
pub async fn submit_nudge(
    State(state): State<AppState>,
    axum::Extension(ip): axum::Extension<ClientIp>,
    PathParams(nudge_id): PathParams<NudgeId>,
    headers: HeaderMap,
    StrictJson(request): StrictJson<NudgeAnswer>,
) -> ApiResult<StatusCode> {
    let context = chat_context(&state, ip, &headers, IdentityCheck::Enforce).await?;
    context.limit_messages(&state, ip).await?;
    let found = find(&state, context.bot.id, nudge_id).await?;
    let Some(form) = &found.form else {
        return Err(ApiError::not_found());
    };
    let value = nudge::answer(form, &request.value).map_err(refused)?;
    // Visitor text bound for the customer's systems, like a chat message: the same screening.
    crate::spam::screen_message(&state, context.bot.org_id, ip, &value).await?;
    let event = crate::webhooks::nudge_submitted(
        &state.settings.public_url,
        &context.bot,
        &context.conversation,
        &found,
        &value,
        now_ms(),
    );
    let queued = state.store.enqueue_event(&event).await?;
    state.webhooks.wake_if(queued);
    Ok(StatusCode::ACCEPTED)
}
