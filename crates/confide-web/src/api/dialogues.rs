//! A bot's pattern dialogues: regular expressions tried in position order; the first match stores
//! its first capture group under the dialogue's context key and answers with a reply.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::dialogue::{self, DialogueError};
use confide_domain::{BotId, DialogueId, Name, OrgId};
use confide_store::Dialogue;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::timestamp;
use crate::audit::{self, org_chain};
use crate::auth::Auth;
use crate::authz::{self, BotNeed};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PathParams, StrictJson};
use crate::state::{AppState, now_ms};

/// Dialogues one bot may have.
pub const MAX_DIALOGUES_PER_BOT: usize = 500;

#[derive(Serialize, ToSchema)]
pub struct DialogueView {
    pub id: DialogueId,
    pub name: String,
    /// Lower positions are tried first.
    pub position: i64,
    pub patterns: Vec<String>,
    pub context_key: Option<String>,
    pub replies: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Dialogue> for DialogueView {
    fn from(d: Dialogue) -> Self {
        DialogueView {
            id: d.id,
            name: d.name,
            position: d.position,
            patterns: d.patterns,
            context_key: d.context_key,
            replies: d.replies,
            created_at: timestamp(d.created_at),
            updated_at: timestamp(d.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DialogueList {
    /// In the order they are tried.
    pub dialogues: Vec<DialogueView>,
}

/// A pattern dialogue as saved (creating or replacing).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DialogueRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: String,
    /// Rust `regex` syntax, tried top to bottom; validated on save.
    #[schema(schema_with = patterns_schema)]
    pub patterns: Vec<String>,
    /// Where the first capture group is stored in the chat's context memory.
    #[schema(pattern = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    pub context_key: Option<String>,
    /// Alternatives; the first whose `{key}` placeholders are all known is sent.
    #[schema(schema_with = replies_schema)]
    pub replies: Vec<String>,
    /// Where it is tried, 0 first: the dialogue moves there and the others make room. Omitted:
    /// last when creating, unchanged when replacing.
    #[schema(minimum = 0, maximum = 1000000)]
    pub position: Option<i64>,
}

fn string_list(
    min_length: usize,
    max_length: usize,
    pattern: Option<&str>,
    max_items: usize,
) -> utoipa::openapi::schema::Array {
    let item = utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(min_length))
        .max_length(Some(max_length))
        .pattern(pattern)
        .build();
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(item)
        .min_items(Some(1))
        .max_items(Some(max_items))
        .build()
}

fn patterns_schema() -> utoipa::openapi::schema::Array {
    string_list(1, dialogue::MAX_PATTERN_CHARS, None, dialogue::MAX_PATTERNS)
}

fn replies_schema() -> utoipa::openapi::schema::Array {
    string_list(
        1,
        dialogue::MAX_REPLY_CHARS,
        Some("\\S"),
        dialogue::MAX_REPLIES,
    )
}

/// Moves `id` to `position` (or the end) among the bot's dialogues and renumbers them densely.
async fn place(
    state: &AppState,
    bot_id: BotId,
    id: DialogueId,
    position: Option<i64>,
) -> ApiResult<()> {
    let mut order: Vec<DialogueId> = state
        .store
        .list_dialogues(bot_id)
        .await?
        .into_iter()
        .map(|d| d.id)
        .filter(|d| *d != id)
        .collect();
    let index = position
        .and_then(|p| usize::try_from(p).ok())
        .map_or(order.len(), |p| p.min(order.len()));
    order.insert(index, id);
    state.store.reorder_dialogues(bot_id, &order).await?;
    Ok(())
}

fn invalid(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// The request's parts, checked: name, patterns (compiled within limits), key and replies.
fn checked(request: &DialogueRequest) -> ApiResult<(String, Vec<String>)> {
    let name = Name::parse("name", &request.name)?;
    if request
        .position
        .is_some_and(|p| !(0..=1_000_000).contains(&p))
    {
        return Err(invalid(
            "invalid_position",
            "position is 0 to 1000000".to_owned(),
        ));
    }
    let replies: Vec<String> = request
        .replies
        .iter()
        .map(|r| r.trim().to_owned())
        .collect();
    dialogue::validate(&request.patterns, request.context_key.as_deref(), &replies).map_err(
        |err| match err {
            DialogueError::Pattern { .. } => invalid("invalid_pattern", err.to_string()),
            DialogueError::Shape(message) => invalid("invalid_dialogue", message),
        },
    )?;
    Ok((name.as_str().to_owned(), replies))
}

/// The bot's pattern dialogues, in the order they are tried.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/dialogues", tag = "dialogues",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The dialogues", body = DialogueList),
        (status = 403, description = "API key without bots:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn list_dialogues(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
) -> ApiResult<Json<DialogueList>> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    let dialogues = state.store.list_dialogues(bot_id).await?;
    Ok(Json(DialogueList {
        dialogues: dialogues.into_iter().map(DialogueView::from).collect(),
    }))
}

/// Add a pattern dialogue (write permission); patterns are compiled and checked on save.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/dialogues", tag = "dialogues",
    request_body = DialogueRequest,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Added", body = DialogueView),
        (status = 403, description = "Read-only access", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The bot has the most dialogues it may have", body = ErrorBody),
        (status = 422, description = "A pattern that does not compile or is too large, or a bad key or reply", body = ErrorBody),
    ))]
pub async fn create_dialogue(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
    StrictJson(request): StrictJson<DialogueRequest>,
) -> ApiResult<(StatusCode, Json<DialogueView>)> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let (name, replies) = checked(&request)?;
    let existing = state.store.list_dialogues(bot_id).await?;
    if existing.len() >= MAX_DIALOGUES_PER_BOT {
        return Err(ApiError::conflict(
            "too_many_dialogues",
            format!("a bot has at most {MAX_DIALOGUES_PER_BOT} dialogues"),
        ));
    }
    let now = now_ms();
    let last = existing.iter().map(|d| d.position).max().unwrap_or(-1);
    let mut dialogue = Dialogue {
        id: DialogueId::new(),
        bot_id,
        name,
        position: last.saturating_add(1),
        patterns: request.patterns,
        context_key: request.context_key,
        replies,
        created_at: now,
        updated_at: now,
    };
    state.store.create_dialogue(&dialogue).await?;
    if request.position.is_some() {
        place(&state, bot_id, dialogue.id, request.position).await?;
        dialogue.position = state
            .store
            .get_dialogue(bot_id, dialogue.id)
            .await?
            .map_or(dialogue.position, |d| d.position);
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "dialogue.created",
        Some(format!("dialogue:{}", dialogue.id)),
        json!({ "bot_id": bot_id, "patterns": dialogue.patterns.len() }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(dialogue.into())))
}

/// One dialogue.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/dialogues/{dialogue_id}", tag = "dialogues",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("dialogue_id" = DialogueId, Path, description = "Dialogue id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The dialogue", body = DialogueView),
        (status = 403, description = "API key without bots:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn get_dialogue(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, dialogue_id)): PathParams<(OrgId, BotId, DialogueId)>,
) -> ApiResult<Json<DialogueView>> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    let dialogue = state
        .store
        .get_dialogue(bot_id, dialogue_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(dialogue.into()))
}

/// Replace a dialogue (write permission).
#[utoipa::path(put, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/dialogues/{dialogue_id}", tag = "dialogues",
    request_body = DialogueRequest,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("dialogue_id" = DialogueId, Path, description = "Dialogue id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Saved", body = DialogueView),
        (status = 403, description = "Read-only access", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 422, description = "A pattern that does not compile or is too large, or a bad key or reply", body = ErrorBody),
    ))]
pub async fn update_dialogue(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, dialogue_id)): PathParams<(OrgId, BotId, DialogueId)>,
    StrictJson(request): StrictJson<DialogueRequest>,
) -> ApiResult<Json<DialogueView>> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let (name, replies) = checked(&request)?;
    let current = state
        .store
        .get_dialogue(bot_id, dialogue_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let mut dialogue = Dialogue {
        name,
        position: current.position,
        patterns: request.patterns,
        context_key: request.context_key,
        replies,
        // Strictly later, so the compiled-pattern cache sees a new version.
        updated_at: now_ms().max(current.updated_at + 1),
        ..current
    };
    if !state.store.update_dialogue(&dialogue).await? {
        return Err(ApiError::not_found());
    }
    if request.position.is_some() {
        place(&state, bot_id, dialogue_id, request.position).await?;
        dialogue.position = state
            .store
            .get_dialogue(bot_id, dialogue_id)
            .await?
            .map_or(dialogue.position, |d| d.position);
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "dialogue.updated",
        Some(format!("dialogue:{dialogue_id}")),
        json!({ "bot_id": bot_id, "patterns": dialogue.patterns.len() }),
    )
    .await?;
    Ok(Json(dialogue.into()))
}

/// Delete a dialogue (write permission).
#[utoipa::path(delete, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/dialogues/{dialogue_id}", tag = "dialogues",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("dialogue_id" = DialogueId, Path, description = "Dialogue id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Read-only access", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn delete_dialogue(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, dialogue_id)): PathParams<(OrgId, BotId, DialogueId)>,
) -> ApiResult<StatusCode> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    if !state.store.delete_dialogue(bot_id, dialogue_id).await? {
        return Err(ApiError::not_found());
    }
    state.dialogue_cache.forget(dialogue_id);
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "dialogue.deleted",
        Some(format!("dialogue:{dialogue_id}")),
        json!({ "bot_id": bot_id }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
