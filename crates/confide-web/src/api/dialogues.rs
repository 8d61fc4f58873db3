//! A bot's dialogues: regular expressions tried in position order (the first match stores its
//! first capture group under the dialogue's context key) and sample phrases per language matched
//! by similarity; a match answers with a reply in the message's language.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::dialogue::{self, Button, DialogueError};
use confide_domain::samples::{self, Samples};
use confide_domain::{BotId, DialogueId, Name, OrgId, language::MAX_LANGUAGES};
use confide_store::Dialogue;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::{language, timestamp};
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
    /// Sample phrases by language code.
    pub samples: BTreeMap<String, Vec<String>>,
    pub context_key: Option<String>,
    pub replies: Vec<String>,
    /// Replies in particular languages; a language without an entry gets `replies`.
    pub replies_by_language: BTreeMap<String, Vec<String>>,
    /// Offered under the reply.
    pub buttons: Vec<Button>,
    /// The dialogue this one follows up, if any.
    pub follow_up_of: Option<DialogueId>,
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
            samples: d.samples,
            context_key: d.context_key,
            replies: d.replies,
            replies_by_language: d.replies_by_language,
            buttons: d.buttons,
            follow_up_of: d.follow_up_of,
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

/// A dialogue as saved (creating or replacing): patterns, sample phrases, or both.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DialogueRequest {
    /// In a bot document (export and import): the dialogue's id in the exported bot, which its
    /// buttons and follow-ups refer to; the imported dialogue gets a new one. The dialogue routes
    /// assign ids themselves and ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<DialogueId>,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: String,
    /// Rust `regex` syntax, tried top to bottom; validated on save.
    #[serde(default)]
    #[schema(schema_with = patterns_schema)]
    pub patterns: Vec<String>,
    /// Sample phrases by language code (one of the bot's languages), matched by similarity:
    /// `{"en": ["how do I reset my password"]}`.
    #[serde(default)]
    #[schema(schema_with = samples_schema)]
    pub samples: Samples,
    /// Where the first capture group is stored in the chat's context memory.
    #[schema(pattern = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    pub context_key: Option<String>,
    /// Alternatives; the first whose `{key}` placeholders are all known is sent.
    #[schema(schema_with = replies_schema)]
    pub replies: Vec<String>,
    /// Alternatives in particular languages (the bot's), used instead of `replies` for a message
    /// in that language.
    #[serde(default)]
    #[schema(schema_with = replies_by_language_schema)]
    pub replies_by_language: BTreeMap<String, Vec<String>>,
    /// Up to 5 buttons under the reply: each answers with another dialogue of this bot
    /// (`dialogue_id`) when pressed, or opens an http(s) link (`url`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 5)]
    pub buttons: Vec<Button>,
    /// Makes this a follow-up of another dialogue of the bot: it is tried only for the message
    /// right after that dialogue answered, and then before every other dialogue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_up_of: Option<DialogueId>,
    /// Where it is tried, 0 first: the dialogue moves there and the others make room. Omitted:
    /// last when creating, unchanged when replacing.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000000)]
    pub position: Option<i64>,
}

fn string_list(
    min_length: usize,
    max_length: usize,
    pattern: Option<&str>,
    (min_items, max_items): (usize, usize),
) -> utoipa::openapi::schema::Array {
    let item = utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(min_length))
        .max_length(Some(max_length))
        .pattern(pattern)
        .build();
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(item)
        .min_items(Some(min_items))
        .max_items(Some(max_items))
        .build()
}

fn patterns_schema() -> utoipa::openapi::schema::Array {
    string_list(
        1,
        dialogue::MAX_PATTERN_CHARS,
        None,
        (0, dialogue::MAX_PATTERNS),
    )
}

fn replies_schema() -> utoipa::openapi::schema::Array {
    string_list(
        1,
        dialogue::MAX_REPLY_CHARS,
        Some("\\S"),
        (1, dialogue::MAX_REPLIES),
    )
}

fn samples_schema() -> utoipa::openapi::schema::Object {
    let phrases = string_list(
        1,
        samples::MAX_SAMPLE_CHARS,
        Some("\\S"),
        (1, samples::MAX_SAMPLES_PER_LANGUAGE),
    );
    language::by_language_schema(phrases, MAX_LANGUAGES, false)
}

fn replies_by_language_schema() -> utoipa::openapi::schema::Object {
    language::by_language_schema(replies_schema(), MAX_LANGUAGES, false)
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

fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// A request's parts, checked and trimmed.
struct Checked {
    name: String,
    buttons: Vec<Button>,
    replies: Vec<String>,
    samples: Samples,
    replies_by_language: BTreeMap<String, Vec<String>>,
}

fn trimmed(texts: &[String]) -> Vec<String> {
    texts.iter().map(|t| t.trim().to_owned()).collect()
}

/// The request's parts, checked: name, patterns (compiled within limits), samples and replies
/// (in languages the bot speaks) and key.
fn checked(request: &DialogueRequest, languages: &[String]) -> ApiResult<Checked> {
    let name = Name::parse("name", &request.name)?;
    if request
        .position
        .is_some_and(|p| !(0..=1_000_000).contains(&p))
    {
        return Err(invalid("invalid_position", "position is 0 to 1000000"));
    }
    let refused = |err: DialogueError| match err {
        DialogueError::Pattern { .. } => invalid("invalid_pattern", err.to_string()),
        DialogueError::Sample { .. } => invalid("invalid_sample", err.to_string()),
        DialogueError::Language(_) => invalid("invalid_language", err.to_string()),
        DialogueError::Shape(message) => invalid("invalid_dialogue", message),
    };
    samples::validate(&request.samples).map_err(refused)?;
    dialogue::validate(
        &request.patterns,
        !request.samples.is_empty(),
        request.context_key.as_deref(),
        &request.replies,
    )
    .map_err(refused)?;
    for (code, alternatives) in &request.replies_by_language {
        dialogue::validate_replies(alternatives).map_err(refused)?;
        language::spoken(languages, "replies_by_language", code)?;
    }
    for code in request.samples.keys() {
        language::spoken(languages, "samples", code)?;
    }
    let samples = request
        .samples
        .iter()
        .map(|(code, texts)| (code.clone(), trimmed(texts)))
        .collect();
    let mut replies_by_language = BTreeMap::new();
    for (code, texts) in &request.replies_by_language {
        replies_by_language.insert(
            code.clone(),
            dialogue::formatted_replies(texts).map_err(refused)?,
        );
    }
    Ok(Checked {
        name: name.as_str().to_owned(),
        buttons: dialogue::checked_buttons(&request.buttons).map_err(refused)?,
        replies: dialogue::formatted_replies(&request.replies).map_err(refused)?,
        samples,
        replies_by_language,
    })
}

/// Refuses buttons and a follow-up that name a dialogue the bot does not have, and a follow-up
/// chain that would come back to `me` (a loop of follow-ups none of which could ever start).
fn within_bot(
    dialogues: &[Dialogue],
    me: DialogueId,
    buttons: &[Button],
    follow_up_of: Option<DialogueId>,
) -> ApiResult<()> {
    let known = |id: DialogueId| id == me || dialogues.iter().any(|d| d.id == id);
    if let Some((index, button)) = buttons
        .iter()
        .enumerate()
        .find(|(_, b)| b.dialogue_id.is_some_and(|id| !known(id)))
    {
        return Err(invalid(
            "unknown_dialogue",
            format!(
                "button {index}: {} is not a dialogue of this bot",
                button
                    .dialogue_id
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            ),
        ));
    }
    let mut parent = follow_up_of;
    // Every step moves to another dialogue; more steps than dialogues would be a loop.
    for _ in 0..=dialogues.len() {
        let Some(id) = parent else {
            return Ok(());
        };
        if id == me {
            return Err(invalid(
                "invalid_follow_up",
                "follow_up_of would make this dialogue follow up itself",
            ));
        }
        let Some(found) = dialogues.iter().find(|d| d.id == id) else {
            return Err(invalid(
                "unknown_dialogue",
                format!("follow_up_of: {id} is not a dialogue of this bot"),
            ));
        };
        parent = found.follow_up_of;
    }
    Err(invalid(
        "invalid_follow_up",
        "follow_up_of leads into a loop",
    ))
}

/// Refuses a dialogue whose samples would take the bot past its sample budget.
fn within_sample_budget(others: &[Dialogue], mine: DialogueId, samples: &Samples) -> ApiResult<()> {
    let count = |s: &Samples| s.values().map(Vec::len).sum::<usize>();
    let total = others
        .iter()
        .filter(|d| d.id != mine)
        .map(|d| count(&d.samples))
        .sum::<usize>()
        + count(samples);
    if total > samples::MAX_SAMPLES_PER_BOT {
        return Err(ApiError::conflict(
            "too_many_samples",
            format!(
                "a bot has at most {} sample phrases over all its dialogues",
                samples::MAX_SAMPLES_PER_BOT
            ),
        ));
    }
    Ok(())
}

/// The bot's dialogues, in the order they are tried.
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

/// Add a dialogue (write permission); patterns are compiled and checked on save, and sample
/// phrases and per-language replies must be in languages the bot speaks.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/dialogues", tag = "dialogues",
    request_body = DialogueRequest,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Added", body = DialogueView),
        (status = 403, description = "Read-only access", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The bot has the most dialogues or sample phrases it may have", body = ErrorBody),
        (status = 422, description = "A pattern that does not compile or is too large, a bad key, reply or sample phrase, or a language the bot does not speak", body = ErrorBody),
    ))]
pub async fn create_dialogue(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
    StrictJson(request): StrictJson<DialogueRequest>,
) -> ApiResult<(StatusCode, Json<DialogueView>)> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let settings = state.store.get_chat_settings(bot_id).await?;
    let parts = checked(&request, &settings.languages)?;
    let existing = state.store.list_dialogues(bot_id).await?;
    if existing.len() >= MAX_DIALOGUES_PER_BOT {
        return Err(ApiError::conflict(
            "too_many_dialogues",
            format!("a bot has at most {MAX_DIALOGUES_PER_BOT} dialogues"),
        ));
    }
    let id = DialogueId::new();
    within_sample_budget(&existing, id, &parts.samples)?;
    within_bot(&existing, id, &parts.buttons, request.follow_up_of)?;
    let now = now_ms();
    let last = existing.iter().map(|d| d.position).max().unwrap_or(-1);
    let mut dialogue = Dialogue {
        id,
        bot_id,
        name: parts.name,
        position: last.saturating_add(1),
        patterns: request.patterns,
        context_key: request.context_key,
        replies: parts.replies,
        samples: parts.samples,
        replies_by_language: parts.replies_by_language,
        buttons: parts.buttons,
        follow_up_of: request.follow_up_of,
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
        json!({ "bot_id": bot_id, "patterns": dialogue.patterns.len(),
                "sample_languages": dialogue.samples.keys().collect::<Vec<_>>() }),
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
        (status = 409, description = "The bot has the most sample phrases it may have", body = ErrorBody),
        (status = 422, description = "A pattern that does not compile or is too large, a bad key, reply or sample phrase, or a language the bot does not speak", body = ErrorBody),
    ))]
pub async fn update_dialogue(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, dialogue_id)): PathParams<(OrgId, BotId, DialogueId)>,
    StrictJson(request): StrictJson<DialogueRequest>,
) -> ApiResult<Json<DialogueView>> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let settings = state.store.get_chat_settings(bot_id).await?;
    let parts = checked(&request, &settings.languages)?;
    let current = state
        .store
        .get_dialogue(bot_id, dialogue_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let others = state.store.list_dialogues(bot_id).await?;
    within_sample_budget(&others, dialogue_id, &parts.samples)?;
    within_bot(&others, dialogue_id, &parts.buttons, request.follow_up_of)?;
    let mut dialogue = Dialogue {
        name: parts.name,
        position: current.position,
        patterns: request.patterns,
        context_key: request.context_key,
        replies: parts.replies,
        samples: parts.samples,
        replies_by_language: parts.replies_by_language,
        buttons: parts.buttons,
        follow_up_of: request.follow_up_of,
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
        json!({ "bot_id": bot_id, "patterns": dialogue.patterns.len(),
                "sample_languages": dialogue.samples.keys().collect::<Vec<_>>() }),
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
        (status = 409, description = "Another dialogue's button or follow-up leads to it", body = ErrorBody),
    ))]
pub async fn delete_dialogue(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, dialogue_id)): PathParams<(OrgId, BotId, DialogueId)>,
) -> ApiResult<StatusCode> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let dialogues = state.store.list_dialogues(bot_id).await?;
    if let Some(user) = dialogues.iter().find(|d| {
        d.id != dialogue_id
            && (d.follow_up_of == Some(dialogue_id)
                || d.buttons.iter().any(|b| b.dialogue_id == Some(dialogue_id)))
    }) {
        // Its buttons would lead nowhere, its follow-ups would never be tried.
        return Err(ApiError::conflict(
            "dialogue_in_use",
            format!(
                "the dialogue \"{}\" has a button or follow-up leading to it",
                user.name
            ),
        ));
    }
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
