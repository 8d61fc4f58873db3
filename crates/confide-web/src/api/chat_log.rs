//! The Chat Log API: a bot's conversations with filters and cursor pagination, one conversation
//! with its messages (also at `/api/v1/chats/{chat_id}`, where the `message.created` webhook links),
//! labels on conversations, and erasing a conversation. The bot's conversation sharing policy
//! applies to all of it (`authz::chats`): members need read (write to change labels or erase) and,
//! under `listed_members`, to be listed; API keys need `chats:read` (`chats:write`).

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use confide_domain::{BotId, ConversationId, MAX_LABELS, MessageId, OrgId, parse_labels};
use confide_security::tokens::{issue_cursor, verify_cursor};
use confide_store::{ChatLogEntry, ChatLogFilter, ChatLogPosition, HandoverState, MessagePosition};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use crate::api::chat::MessageView;
use crate::api::timestamp;
use crate::audit::{self, org_chain};
use crate::auth::Auth;
use crate::authz::{self, BotNeed};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PathParams, QueryParams, StrictJson};
use crate::state::AppState;

/// Chats per page unless asked otherwise, and at most.
const DEFAULT_CHATS: u32 = 25;
const MAX_CHATS: u32 = 100;
/// Messages per page of one chat unless asked otherwise, and at most.
const DEFAULT_MESSAGES: u32 = 100;
const MAX_MESSAGES: u32 = 500;

/// Where a conversation stands with the humans behind the bot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChatState {
    /// The bot answers.
    Bot,
    /// The visitor asked for a human.
    Requested,
    /// An agent answers.
    Agent,
    /// The agent ended it; the bot answers again.
    Ended,
}

impl From<HandoverState> for ChatState {
    fn from(state: HandoverState) -> Self {
        match state {
            HandoverState::Bot => ChatState::Bot,
            HandoverState::Requested => ChatState::Requested,
            HandoverState::Agent => ChatState::Agent,
            HandoverState::Ended => ChatState::Ended,
        }
    }
}

impl From<ChatState> for HandoverState {
    fn from(state: ChatState) -> Self {
        match state {
            ChatState::Bot => HandoverState::Bot,
            ChatState::Requested => HandoverState::Requested,
            ChatState::Agent => HandoverState::Agent,
            ChatState::Ended => HandoverState::Ended,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ChatView {
    pub id: ConversationId,
    pub org_id: OrgId,
    pub bot_id: BotId,
    /// The widget's id for the visitor.
    pub visitor_id: String,
    /// The page origin the chat started on, when the browser sent one.
    pub origin: Option<String>,
    pub created_at: String,
    /// The last message (the start, before any): what the list is ordered and filtered by.
    pub last_message_at: String,
    pub state: ChatState,
    /// Normalized (lower-case), sorted.
    pub labels: Vec<String>,
    /// The conversation's language, once known.
    pub language_code: Option<String>,
    /// Whether the owner's backend verified the visitor's identity.
    pub verified: bool,
    /// The verified identity (the identity token's `sub`).
    pub user_id: Option<String>,
    /// Why the chat looks automated (`crawler`, `headless`, ...): flagged bot traffic, which
    /// statistics leave out. Null for people.
    pub automated: Option<String>,
}

impl From<&ChatLogEntry> for ChatView {
    fn from(entry: &ChatLogEntry) -> Self {
        let c = &entry.conversation;
        ChatView {
            id: c.id,
            org_id: c.org_id,
            bot_id: c.bot_id,
            visitor_id: c.visitor_id.clone(),
            origin: c.origin.clone(),
            created_at: timestamp(c.created_at),
            last_message_at: timestamp(c.last_message_at),
            state: c.handover.state.into(),
            labels: entry.labels.clone(),
            language_code: c.language_code.clone(),
            verified: c.verified_user_id.is_some(),
            user_id: c.verified_user_id.clone(),
            automated: c.automated.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ChatPage {
    /// Newest activity first.
    pub chats: Vec<ChatView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ChatDetail {
    pub chat: ChatView,
    /// The latest messages (before `before`, when given), oldest first.
    pub messages: Vec<MessageView>,
    /// Pass as `before` for the messages before these; null when they reach the chat's start.
    pub earlier_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChatListQuery {
    /// Last activity at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// Last activity before this time (RFC 3339).
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// The handover state.
    #[param(inline)]
    pub state: Option<ChatState>,
    /// Labels the chat must all carry: repeat the parameter or separate labels with commas.
    #[param(value_type = Option<Vec<String>>, style = Form, explode)]
    pub label: Option<String>,
    /// The conversation's language (`en`, `nb`, `pt-BR`, ...), without regard to case.
    #[param(
        min_length = 2,
        max_length = 35,
        pattern = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"
    )]
    pub language: Option<String>,
    /// Only chats whose visitor's identity was verified (`true`) or was not (`false`).
    pub verified: Option<bool>,
    /// Only chats of this verified identity (the identity token's `sub`).
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub user_id: Option<String>,
    /// Chats per page, 1 to 100 (default 25).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    #[param(min_length = 1, max_length = 512)]
    pub cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChatMessagesQuery {
    /// Messages at most, 1 to 500 (default 100): the latest ones.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// A previous answer's `earlier_cursor`: the messages before those.
    #[param(min_length = 1, max_length = 512)]
    pub before: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLabels {
    /// The chat's labels from now on (an empty list removes them all): each 1 to 40 letters, digits,
    /// spaces, `-` or `_`, stored trimmed, with single spaces, lower-case, once each.
    #[schema(
        max_items = 20,
        min_length = 1,
        max_length = 40,
        pattern = r"^[^\x00-\x1F!-,./:-@\[-\^`{-~\x7F-\x9F]*[^\x00-\x20!-,./:-@\[-\^`{-~\x7F-\x9F][^\x00-\x1F!-,./:-@\[-\^`{-~\x7F-\x9F]*$"
    )]
    pub labels: Vec<String>,
}

pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

fn label_error(err: confide_domain::LabelError) -> ApiError {
    invalid(err.code(), err.to_string())
}

/// Unix milliseconds of an RFC 3339 time. (The parser takes any date-time separator; the RFC's
/// grammar, and so the schema, only `T`.)
fn time_param(name: &str, text: Option<&str>) -> ApiResult<Option<i64>> {
    text.map(|text| {
        Some(text)
            .filter(|t| matches!(t.as_bytes().get(10), Some(b'T' | b't')))
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
            .ok_or_else(|| invalid("invalid_time", format!("{name} must be an RFC 3339 time")))
    })
    .transpose()
}

/// `en`, `nb`, `pt-BR`: two or three letters, then subtags of one to eight letters or digits.
fn is_language_code(code: &str) -> bool {
    let mut parts = code.split('-');
    let primary = parts.next().unwrap_or_default();
    code.len() <= 35
        && (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

pub(crate) fn page_size(limit: Option<u32>, default: u32, max: u32) -> ApiResult<i64> {
    match limit.unwrap_or(default) {
        n if (1..=max).contains(&n) => Ok(i64::from(n)),
        _ => Err(invalid("invalid_limit", format!("limit is 1 to {max}"))),
    }
}

/// The query with every `label` parameter joined into one comma list, so `label=a&label=b` and
/// `label=a,b` read the same. (`label` is the one parameter allowed to repeat.)
fn joined_labels(query: &str) -> String {
    let mut labels = Vec::new();
    let mut rest = form_urlencoded::Serializer::new(String::new());
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name == "label" {
            labels.push(value.into_owned());
        } else {
            rest.append_pair(&name, &value);
        }
    }
    if !labels.is_empty() {
        rest.append_pair("label", &labels.join(","));
    }
    rest.finish()
}

fn chats_scope(bot: BotId) -> String {
    format!("chats:{bot}")
}

fn messages_scope(chat: ConversationId) -> String {
    format!("messages:{chat}")
}

pub(crate) fn cursor_key(state: &AppState) -> &[u8; 32] {
    state.keys.presign_hmac_key.expose_secret()
}

/// `<time>.<id>`: where a page ended.
pub(crate) fn position_text(at: i64, id: impl std::fmt::Display) -> String {
    format!("{at}.{id}")
}

/// The position a cursor holds, or 422 `invalid_cursor` (audited: only a cursor someone altered or
/// made up, or took from another listing, fails).
pub(crate) async fn read_cursor<T>(
    state: &AppState,
    auth: &Auth,
    org_id: OrgId,
    scope: &str,
    cursor: &str,
    parse: fn(i64, &str) -> Option<T>,
) -> ApiResult<T> {
    let position = verify_cursor(cursor_key(state), scope, cursor).and_then(|text| {
        let (at, id) = text.split_once('.')?;
        parse(at.parse().ok()?, id)
    });
    match position {
        Some(position) => Ok(position),
        None => {
            audit::record_refusal(
                state,
                org_chain(org_id),
                &auth.actor(),
                "chat_log.cursor_refused",
                Some(scope.to_owned()),
                json!({ "reason": "invalid_cursor" }),
            )
            .await;
            Err(invalid(
                "invalid_cursor",
                "the cursor is not one this listing handed out",
            ))
        }
    }
}

fn chat_position(at: i64, id: &str) -> Option<ChatLogPosition> {
    Some(ChatLogPosition {
        last_message_at: at,
        id: id.parse().ok()?,
    })
}

fn message_position(at: i64, id: &str) -> Option<MessagePosition> {
    Some(MessagePosition {
        created_at: at,
        id: id.parse::<MessageId>().ok()?,
    })
}

/// The chat log filter a query asks for, checked.
fn filter_of(query: &ChatListQuery) -> ApiResult<ChatLogFilter> {
    let active_from = time_param("from", query.from.as_deref())?;
    let active_to = time_param("to", query.to.as_deref())?;
    if let (Some(from), Some(to)) = (active_from, active_to)
        && from > to
    {
        return Err(invalid("invalid_range", "from must not be after to"));
    }
    let pieces: Vec<&str> = query
        .label
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .filter(|piece| !piece.trim().is_empty())
        .collect();
    let labels = parse_labels(pieces).map_err(label_error)?;
    if let Some(code) = &query.language
        && !is_language_code(code)
    {
        return Err(invalid(
            "invalid_language",
            "language is a language code such as en or pt-BR",
        ));
    }
    if let Some(user) = &query.user_id
        && (user.is_empty() || user.chars().count() > 255 || user.chars().any(char::is_control))
    {
        return Err(invalid(
            "invalid_user_id",
            "user_id is 1 to 255 characters without control characters",
        ));
    }
    Ok(ChatLogFilter {
        active_from,
        active_to,
        state: query.state.map(HandoverState::from),
        labels: labels.into_iter().map(|l| l.into_inner()).collect(),
        language_code: query.language.clone(),
        verified: query.verified,
        verified_user_id: query.user_id.clone(),
    })
}

/// The bot's conversations, newest activity first, narrowed by the filters; flagged automated
/// chats are included and marked (`automated`).
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/chats", tag = "chat-log",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"), ChatListQuery),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A page of the chat log", body = ChatPage),
        (status = 403, description = "Not shared with you, or an API key without chats:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 422, description = "A bad filter, limit or cursor", body = ErrorBody),
    ))]
pub async fn list_chats(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<ChatPage>> {
    let query: ChatListQuery =
        serde_urlencoded::from_str(&joined_labels(raw.as_deref().unwrap_or_default()))
            .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    authz::chats(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    let filter = filter_of(&query)?;
    let limit = page_size(query.limit, DEFAULT_CHATS, MAX_CHATS)?;
    let scope = chats_scope(bot_id);
    let after = match &query.cursor {
        Some(cursor) => {
            Some(read_cursor(&state, &auth, org_id, &scope, cursor, chat_position).await?)
        }
        None => None,
    };
    // One more than asked tells whether there is a next page.
    let mut chats = state
        .store
        .list_chats(bot_id, &filter, after, limit + 1)
        .await?;
    let more = chats.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    chats.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = match chats.last() {
        Some(last) if more => Some(issue_cursor(
            cursor_key(&state),
            &scope,
            &position_text(last.conversation.last_message_at, last.conversation.id),
        )),
        _ => None,
    };
    Ok(Json(ChatPage {
        chats: chats.iter().map(ChatView::from).collect(),
        next_cursor,
    }))
}

/// The chat and a page of its messages; the caller is authorized already.
async fn detail(
    state: &AppState,
    auth: &Auth,
    entry: ChatLogEntry,
    query: &ChatMessagesQuery,
) -> ApiResult<ChatDetail> {
    let chat = &entry.conversation;
    let limit = page_size(query.limit, DEFAULT_MESSAGES, MAX_MESSAGES)?;
    let scope = messages_scope(chat.id);
    let before = match &query.before {
        Some(cursor) => {
            Some(read_cursor(state, auth, chat.org_id, &scope, cursor, message_position).await?)
        }
        None => None,
    };
    let mut messages = state
        .store
        .list_messages_before(chat.id, before, limit + 1)
        .await?;
    let more = messages.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    messages.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let earlier_cursor = match messages.last() {
        Some(oldest) if more => Some(issue_cursor(
            cursor_key(state),
            &scope,
            &position_text(oldest.created_at, oldest.id),
        )),
        _ => None,
    };
    messages.reverse();
    Ok(ChatDetail {
        chat: ChatView::from(&entry),
        messages: messages.iter().map(MessageView::from).collect(),
        earlier_cursor,
    })
}

/// One conversation of the bot and its latest messages.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/chats/{chat_id}", tag = "chat-log",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("chat_id" = ConversationId, Path, description = "Chat id"), ChatMessagesQuery),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The chat and its messages", body = ChatDetail),
        (status = 403, description = "Not shared with you, or an API key without chats:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 422, description = "A bad limit or cursor", body = ErrorBody),
    ))]
pub async fn get_chat(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, chat_id)): PathParams<(OrgId, BotId, ConversationId)>,
    QueryParams(query): QueryParams<ChatMessagesQuery>,
) -> ApiResult<Json<ChatDetail>> {
    authz::chats(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    let entry = state
        .store
        .get_chat(bot_id, chat_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(detail(&state, &auth, entry, &query).await?))
}

/// A conversation by its id alone (where the `message.created` webhook's `_links.chat` points),
/// with its latest messages. Authorized on the chat's own bot like the organization routes; a
/// chat you may not see is answered exactly like one that does not exist.
#[utoipa::path(get, path = "/api/v1/chats/{chat_id}", tag = "chat-log",
    params(("chat_id" = ConversationId, Path, description = "Chat id"), ChatMessagesQuery),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The chat and its messages", body = ChatDetail),
        (status = 404, description = "No such chat, or not one you may see", body = ErrorBody),
        (status = 422, description = "A bad limit or cursor", body = ErrorBody),
    ))]
pub async fn get_chat_by_id(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(chat_id): PathParams<ConversationId>,
    QueryParams(query): QueryParams<ChatMessagesQuery>,
) -> ApiResult<Json<ChatDetail>> {
    let chat = state
        .store
        .find_conversation(chat_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    // Refusals are audited by `authz`; the caller learns only "not found".
    authz::chats(&state, &auth, chat.org_id, chat.bot_id, BotNeed::Read)
        .await
        .map_err(|err| match err.status {
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => ApiError::not_found(),
            _ => err,
        })?;
    let entry = state
        .store
        .get_chat(chat.bot_id, chat_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(detail(&state, &auth, entry, &query).await?))
}

/// Replace a conversation's labels.
#[utoipa::path(put, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/chats/{chat_id}/labels", tag = "chat-log",
    request_body = SetLabels,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("chat_id" = ConversationId, Path, description = "Chat id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The chat with its new labels", body = ChatView),
        (status = 403, description = "No write permission, not shared with you, or an API key without chats:write", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 422, description = "A label that is empty, too long or has other characters, or more than 20", body = ErrorBody),
    ))]
pub async fn set_labels(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, chat_id)): PathParams<(OrgId, BotId, ConversationId)>,
    StrictJson(request): StrictJson<SetLabels>,
) -> ApiResult<Json<ChatView>> {
    authz::chats(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    // Counted before duplicates fold together too, as the schema says.
    if request.labels.len() > MAX_LABELS {
        return Err(label_error(confide_domain::LabelError::TooMany));
    }
    let labels: Vec<String> = parse_labels(request.labels.iter().map(String::as_str))
        .map_err(label_error)?
        .into_iter()
        .map(|l| l.into_inner())
        .collect();
    if !state
        .store
        .set_chat_labels(bot_id, chat_id, &labels)
        .await?
    {
        return Err(ApiError::not_found());
    }
    // How many, not which: a label may name a person, and the audit log outlives an erasure.
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "chat.labels_set",
        Some(format!("chat:{chat_id}")),
        json!({ "bot_id": bot_id, "labels": labels.len() }),
    )
    .await?;
    let entry = state
        .store
        .get_chat(bot_id, chat_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(ChatView::from(&entry)))
}

/// Erase a conversation (personal data erasure): its messages, context memory, labels and the
/// webhook deliveries that carry its messages go with it, in one transaction. The bot's
/// statistics, which hold nothing personal, stay.
#[utoipa::path(delete, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/chats/{chat_id}", tag = "chat-log",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("chat_id" = ConversationId, Path, description = "Chat id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Erased"),
        (status = 403, description = "No write permission, not shared with you, or an API key without chats:write", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn delete_chat(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, chat_id)): PathParams<(OrgId, BotId, ConversationId)>,
) -> ApiResult<StatusCode> {
    authz::chats(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    if !state.store.delete_conversation(bot_id, chat_id).await? {
        return Err(ApiError::not_found());
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "chat.deleted",
        Some(format!("chat:{chat_id}")),
        json!({ "bot_id": bot_id }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn repeated_labels_join_into_one_list_and_other_parameters_stay() {
        assert_eq!(
            joined_labels("label=vip&state=agent&label=needs%20call"),
            "state=agent&label=vip%2Cneeds+call"
        );
        assert_eq!(joined_labels("limit=5"), "limit=5");
        assert_eq!(joined_labels(""), "");
    }

    #[test]
    fn times_are_rfc_3339_in_any_offset() {
        for (text, ms) in [
            ("2026-01-01T00:00:00Z", 1_767_225_600_000),
            ("2026-01-01t01:00:00.5+01:00", 1_767_225_600_500),
            ("2025-12-31T23:59:60Z", 1_767_225_599_999),
        ] {
            assert_eq!(time_param("from", Some(text)).unwrap(), Some(ms), "{text}");
        }
        for bad in [
            "2026-01-01",
            "2026-01-01 00:00:00Z",
            "2026-01-01X00:00:00Z",
            "yesterday",
        ] {
            assert!(time_param("from", Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(time_param("from", None).unwrap(), None);
    }

    #[test]
    fn language_codes_are_two_or_three_letters_and_subtags() {
        for good in ["en", "nob", "pt-BR", "zh-Hant-TW", "EN"] {
            assert!(is_language_code(good), "{good}");
        }
        for bad in [
            "",
            "e",
            "english",
            "en-",
            "en--us",
            "e1",
            "en_US",
            "en-123456789",
        ] {
            assert!(!is_language_code(bad), "{bad}");
        }
    }
}
