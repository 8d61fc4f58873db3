//! Tickets (Kindly's ticket webhooks): a conversation people still owe an answer after, or
//! without, a live handover. One per conversation, `open` -> `pending` -> `solved`; the visitor
//! writing again opens it. Made by an agent from a chat, or by the server when a handover request
//! waits longer than the bot's `ticket_after_seconds`. Every change is a `ticket.updated` webhook,
//! queued in the same transaction as the change.
//!
//! Tickets are conversation data: reading needs what reading the chat log needs, changing needs
//! what answering a handover needs (`authz::chats`, with the sharing policy).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::{
    BotId, ConversationId, Name, OrgId, TicketId, TicketReason, TicketStatus, UserId,
};
use confide_store::{Chatbot, Conversation, Sender, Ticket, TicketPosition};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::api::chat_log::{cursor_key, page_size, position_text, read_cursor};
use crate::api::handover::conversation;
use crate::api::timestamp;
use crate::audit::{self, org_chain, principal_label};
use crate::auth::Auth;
use crate::authz::{self, BotNeed};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PathParams, QueryParams, StrictJson};
use crate::state::{AppState, now_ms};

const DEFAULT_TICKETS: u32 = 25;
const MAX_TICKETS: u32 = 100;
/// Who changed a ticket when the server did (a handover request nobody took).
const SYSTEM: &str = "system";
/// Who changed a ticket when the visitor wrote again.
const VISITOR: &str = "visitor";
/// A ticket's subject when nothing better is known.
const DEFAULT_SUBJECT: &str = "Conversation with a visitor";

#[derive(Serialize, ToSchema)]
pub struct TicketView {
    pub id: TicketId,
    pub chat_id: ConversationId,
    pub status: TicketStatus,
    /// Plain text.
    pub subject: String,
    pub reason: TicketReason,
    /// `user:{id}` of the member it is assigned to.
    pub assignee: Option<String>,
    /// `user:{id}`, `api_key:{id}` or `system`.
    pub created_by: String,
    /// One more with every change; pass it back as `version` to refuse a change made from a stale
    /// read.
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
    pub solved_at: Option<String>,
}

impl From<&Ticket> for TicketView {
    fn from(t: &Ticket) -> Self {
        TicketView {
            id: t.id,
            chat_id: t.conversation_id,
            status: t.status,
            subject: t.subject.clone(),
            reason: t.reason,
            assignee: t.assignee.clone(),
            created_by: t.created_by.clone(),
            version: t.version,
            created_at: timestamp(t.created_at),
            updated_at: timestamp(t.updated_at),
            solved_at: t.solved_at.map(timestamp),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TicketPage {
    /// Oldest first.
    pub tickets: Vec<TicketView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TicketQuery {
    /// Only tickets in this status.
    pub status: Option<TicketStatus>,
    /// The previous page's `next_cursor`.
    #[param(min_length = 1, max_length = 512)]
    pub cursor: Option<String>,
    /// Tickets per page, 1 to 100 (25 by default).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTicket {
    /// The conversation the ticket is about; it has no ticket yet.
    pub chat_id: ConversationId,
    /// Plain text, 1 to 200 characters; by default the visitor's latest words.
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub subject: Option<String>,
    /// `open` by default.
    pub status: Option<TicketStatus>,
    /// A member who may answer the bot's chats.
    pub assignee_id: Option<UserId>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketChange {
    pub status: Option<TicketStatus>,
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub subject: Option<String>,
    /// A member who may answer the bot's chats; null unassigns; omitted: unchanged.
    #[serde(default, deserialize_with = "crate::extract::present")]
    #[schema(value_type = Option<UserId>)]
    pub assignee_id: Option<Option<UserId>>,
    /// The version the change was made from: refused with 409 `ticket_changed` when the ticket
    /// has changed since.
    #[serde(default, deserialize_with = "crate::extract::optional_whole_number")]
    #[schema(minimum = 1)]
    pub version: Option<u32>,
}

/// A ticket's subject when none is given: the visitor's latest words in the chat.
async fn default_subject(
    state: &AppState,
    conversation: &Conversation,
) -> confide_store::StoreResult<String> {
    let latest = state.store.list_messages(conversation.id, 50).await?;
    let words = latest
        .iter()
        .rev()
        .find(|m| m.sender == Sender::Visitor)
        .map(|m| m.text.as_str());
    Ok(confide_domain::ticket::subject_from(words, DEFAULT_SUBJECT))
}

fn subject(raw: &str) -> ApiResult<String> {
    Ok(Name::parse("subject", raw)?.into_inner())
}

/// `user:{id}`, once the member is checked to be someone who may answer the bot's chats.
async fn assignee(state: &AppState, bot: &Chatbot, user: UserId) -> ApiResult<String> {
    if !authz::may_answer_chats(state, bot, user).await? {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_assignee",
            "the assignee must be a member who may answer this bot's chats",
        ));
    }
    Ok(format!("user:{user}"))
}

/// `next` is `current` changed at `at`: the version bumped, `solved_at` following the status.
fn changed(current: &Ticket, mut next: Ticket, at: i64) -> Ticket {
    next.version = current.version + 1;
    next.updated_at = at;
    next.solved_at = match next.status {
        TicketStatus::Solved if current.status == TicketStatus::Solved => current.solved_at,
        TicketStatus::Solved => Some(at),
        _ => None,
    };
    next
}

/// Writes the ticket (new, or a change of `previous`) with its `ticket.updated` event; false
/// when it did not apply (the chat has a ticket already, or the ticket changed meanwhile).
async fn write(
    state: &AppState,
    bot: &Chatbot,
    conversation: &Conversation,
    ticket: &Ticket,
    previous: Option<&Ticket>,
    by: &str,
) -> ApiResult<bool> {
    let event = crate::webhooks::ticket_updated(
        &state.settings.public_url,
        bot,
        conversation,
        ticket,
        previous,
        by,
    );
    let Some(queued) = state.store.write_ticket(ticket, &event).await? else {
        return Ok(false);
    };
    state.webhooks.wake_if(queued);
    Ok(true)
}

/// The visitor wrote in the conversation: its ticket, if pending or solved, opens again.
pub(crate) async fn visitor_wrote(
    state: &AppState,
    bot: &Chatbot,
    conversation: &Conversation,
) -> ApiResult<()> {
    // The conversation as read for this message says whether it has a ticket waiting for the
    // visitor; most chats have none, and then nothing more is read.
    if conversation
        .ticket_status
        .and_then(TicketStatus::after_visitor_message)
        .is_none()
    {
        return Ok(());
    }
    // Twice at most: a change that lost a race is read again once (the winner may have opened
    // it already).
    for _ in 0..2 {
        let Some(current) = state.store.conversation_ticket(conversation.id).await? else {
            return Ok(());
        };
        let Some(status) = current.status.after_visitor_message() else {
            return Ok(());
        };
        let next = changed(
            &current,
            Ticket {
                status,
                ..current.clone()
            },
            now_ms(),
        );
        if write(state, bot, conversation, &next, Some(&current), VISITOR).await? {
            return Ok(());
        }
    }
    Ok(())
}

/// A handover request nobody took in time: the conversation's ticket is created (or opened
/// again), and the request marked so it is not escalated twice (by this call or another node's).
pub(crate) async fn escalate(
    state: &AppState,
    bot: &Chatbot,
    conversation: &Conversation,
) -> confide_store::StoreResult<()> {
    let at = now_ms();
    // The conversation as the sweeper read it says whether it has a ticket; one made since
    // makes the insert below a no-op and the mark roll back, so the next pass sees it.
    let current = match conversation.ticket_status {
        Some(_) => state.store.conversation_ticket(conversation.id).await?,
        None => None,
    };
    let next = match &current {
        None => Some(Ticket {
            id: TicketId::new(),
            org_id: bot.org_id,
            bot_id: bot.id,
            conversation_id: conversation.id,
            status: TicketStatus::Open,
            subject: default_subject(state, conversation).await?,
            reason: TicketReason::UnansweredHandover,
            assignee: None,
            created_by: SYSTEM.to_owned(),
            version: 1,
            created_at: at,
            updated_at: at,
            solved_at: None,
        }),
        Some(t) if t.status != TicketStatus::Open => Some(changed(
            t,
            Ticket {
                status: TicketStatus::Open,
                ..t.clone()
            },
            at,
        )),
        Some(_) => None,
    };
    let event = next.as_ref().map(|ticket| {
        crate::webhooks::ticket_updated(
            &state.settings.public_url,
            bot,
            conversation,
            ticket,
            current.as_ref(),
            SYSTEM,
        )
    });
    let change = next.as_ref().zip(event.as_ref());
    if let Some(queued) = state
        .store
        .escalate_handover(conversation, at, change)
        .await?
    {
        state.webhooks.wake_if(queued);
    }
    Ok(())
}

async fn ticket(state: &AppState, bot: BotId, id: TicketId) -> ApiResult<Ticket> {
    state
        .store
        .get_ticket(bot, id)
        .await?
        .ok_or_else(ApiError::not_found)
}

fn tickets_scope(bot: BotId) -> String {
    format!("tickets:{bot}")
}

fn ticket_position(at: i64, id: &str) -> Option<TicketPosition> {
    Some(TicketPosition {
        created_at: at,
        id: id.parse().ok()?,
    })
}

/// The bot's tickets, oldest first.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/tickets", tag = "tickets",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"), TicketQuery),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A page of tickets", body = TicketPage),
        (status = 403, description = "Not shared with you, or an API key without chats:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 422, description = "A bad status, limit or cursor", body = ErrorBody),
    ))]
pub async fn list_tickets(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
    QueryParams(query): QueryParams<TicketQuery>,
) -> ApiResult<Json<TicketPage>> {
    authz::chats(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    let limit = page_size(query.limit, DEFAULT_TICKETS, MAX_TICKETS)?;
    let scope = tickets_scope(bot_id);
    let after = match &query.cursor {
        Some(cursor) => {
            Some(read_cursor(&state, &auth, org_id, &scope, cursor, ticket_position).await?)
        }
        None => None,
    };
    let mut tickets = state
        .store
        .list_tickets(bot_id, query.status, after, limit + 1)
        .await?;
    let more = tickets.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    tickets.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = match tickets.last() {
        Some(last) if more => Some(confide_security::tokens::issue_cursor(
            cursor_key(&state),
            &scope,
            &position_text(last.created_at, last.id),
        )),
        _ => None,
    };
    Ok(Json(TicketPage {
        tickets: tickets.iter().map(TicketView::from).collect(),
        next_cursor,
    }))
}

/// One ticket.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/tickets/{ticket_id}", tag = "tickets",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("ticket_id" = TicketId, Path, description = "Ticket id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The ticket", body = TicketView),
        (status = 403, description = "Not shared with you, or an API key without chats:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn get_ticket(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, ticket_id)): PathParams<(OrgId, BotId, TicketId)>,
) -> ApiResult<Json<TicketView>> {
    authz::chats(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    Ok(Json((&ticket(&state, bot_id, ticket_id).await?).into()))
}

/// Make a ticket from a chat.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/tickets", tag = "tickets",
    request_body = NewTicket,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Created", body = TicketView),
        (status = 403, description = "No write permission, not shared with you, or an API key without chats:write", body = ErrorBody),
        (status = 404, description = "No such chat", body = ErrorBody),
        (status = 409, description = "The chat has a ticket already", body = ErrorBody),
        (status = 422, description = "A bad subject or assignee", body = ErrorBody),
    ))]
pub async fn create_ticket(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
    StrictJson(request): StrictJson<NewTicket>,
) -> ApiResult<(StatusCode, Json<TicketView>)> {
    let bot = authz::chats(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let conversation = conversation(&state, bot_id, request.chat_id).await?;
    let subject = match &request.subject {
        Some(raw) => subject(raw)?,
        None => default_subject(&state, &conversation).await?,
    };
    let assignee = match request.assignee_id {
        Some(user) => Some(assignee(&state, &bot, user).await?),
        None => None,
    };
    let at = now_ms();
    let status = request.status.unwrap_or(TicketStatus::Open);
    let by = principal_label(&auth.principal);
    let created = Ticket {
        id: TicketId::new(),
        org_id,
        bot_id,
        conversation_id: conversation.id,
        status,
        subject,
        reason: TicketReason::Agent,
        assignee,
        created_by: by.clone(),
        version: 1,
        created_at: at,
        updated_at: at,
        solved_at: (status == TicketStatus::Solved).then_some(at),
    };
    if !write(&state, &bot, &conversation, &created, None, &by).await? {
        return Err(ApiError::conflict(
            "ticket_exists",
            "the chat has a ticket already; change that one",
        ));
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "ticket.created",
        Some(format!("ticket:{}", created.id)),
        json!({ "bot_id": bot_id, "chat_id": conversation.id, "status": created.status }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json((&created).into())))
}

/// Change a ticket's status, subject or assignee.
#[utoipa::path(patch, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/tickets/{ticket_id}", tag = "tickets",
    request_body = TicketChange,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("ticket_id" = TicketId, Path, description = "Ticket id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Changed (or already so)", body = TicketView),
        (status = 403, description = "No write permission, not shared with you, or an API key without chats:write", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The ticket changed since `version`, or while this change was made", body = ErrorBody),
        (status = 422, description = "A bad subject or assignee", body = ErrorBody),
    ))]
pub async fn update_ticket(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, ticket_id)): PathParams<(OrgId, BotId, TicketId)>,
    StrictJson(request): StrictJson<TicketChange>,
) -> ApiResult<Json<TicketView>> {
    let bot = authz::chats(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let current = ticket(&state, bot_id, ticket_id).await?;
    let stale = || {
        ApiError::conflict(
            "ticket_changed",
            "the ticket changed since you read it; read it again",
        )
    };
    if request
        .version
        .is_some_and(|v| i64::from(v) != current.version)
    {
        return Err(stale());
    }
    let mut next = current.clone();
    if let Some(status) = request.status {
        next.status = status;
    }
    if let Some(raw) = &request.subject {
        next.subject = subject(raw)?;
    }
    if let Some(user) = request.assignee_id {
        next.assignee = match user {
            Some(user) => Some(assignee(&state, &bot, user).await?),
            None => None,
        };
    }
    if next == current {
        return Ok(Json((&current).into()));
    }
    let next = changed(&current, next, now_ms());
    let conversation = conversation(&state, bot_id, current.conversation_id).await?;
    let by = principal_label(&auth.principal);
    if !write(&state, &bot, &conversation, &next, Some(&current), &by).await? {
        return Err(stale());
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "ticket.updated",
        Some(format!("ticket:{ticket_id}")),
        json!({
            "bot_id": bot_id,
            "status": next.status,
            "previous_status": current.status,
            "assignee": next.assignee,
        }),
    )
    .await?;
    Ok(Json((&next).into()))
}
