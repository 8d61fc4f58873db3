//! Human handover (Kindly's Handover API): the queue of conversations whose visitors asked for a
//! human, taking one, replying through the visitor's own realtime channel, and ending it. Agents
//! are members with write permission on the bot (and, under `listed_members` sharing, listed), or
//! API keys with `chats:write`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::{BotId, ConversationId, OrgId, WebhookEvent};
use confide_store::{Chatbot, Conversation, HandoverState, Sender};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::api::chat::{MessageView, message_text, post_to_chat, publish};
use crate::api::timestamp;
use crate::audit::{self, org_chain, principal_label};
use crate::auth::Auth;
use crate::authz::{self, BotNeed};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PathParams, QueryParams, StrictJson};
use crate::state::{AppState, now_ms};
use crate::webhooks::handover_event;

/// The realtime event that tells the widget where the chat stands with the humans.
pub const HANDOVER_EVENT: &str = "handover";

#[derive(Serialize, ToSchema)]
pub struct HandoverView {
    pub chat_id: ConversationId,
    /// `requested`, `agent` or `ended` (`bot` before any request).
    pub state: String,
    /// `user:{id}` or `api_key:{id}` of the agent who took it.
    pub agent: Option<String>,
    pub visitor_id: String,
    /// The identity the owner's backend verified, if any.
    pub verified_user_id: Option<String>,
    pub requested_at: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub last_message_at: String,
}

impl From<&Conversation> for HandoverView {
    fn from(c: &Conversation) -> Self {
        HandoverView {
            chat_id: c.id,
            state: c.handover.state.as_str().to_owned(),
            agent: c.handover.agent.clone(),
            visitor_id: c.visitor_id.clone(),
            verified_user_id: c.verified_user_id.clone(),
            requested_at: c.handover.requested_at.map(timestamp),
            started_at: c.handover.started_at.map(timestamp),
            ended_at: c.handover.ended_at.map(timestamp),
            last_message_at: timestamp(c.last_message_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct HandoverList {
    /// Oldest request first.
    pub handovers: Vec<HandoverView>,
}

#[derive(Serialize, ToSchema)]
pub struct HandoverDetail {
    pub handover: HandoverView,
    /// The chat so far: its latest 500 messages at most, oldest first.
    pub messages: Vec<MessageView>,
}

#[derive(Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QueueFilter {
    /// Waiting for an agent.
    Requested,
    /// Taken by an agent.
    Agent,
    /// Both (the default).
    Open,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// Which handovers: `requested`, `agent` or `open` (both; the default).
    pub state: Option<QueueFilter>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentMessage {
    #[schema(min_length = 1, max_length = 2000, pattern = "\\S")]
    pub text: String,
}

/// Tells the visitor's widget the chat's new handover state.
pub(crate) async fn announce(
    state: &AppState,
    bot: &Chatbot,
    conversation: &Conversation,
    handover: HandoverState,
) -> ApiResult<()> {
    let data = json!({ "state": handover.as_str() }).to_string();
    publish(state, bot, conversation, HANDOVER_EVENT, &data).await
}

/// The bot's conversation, or 404.
pub(crate) async fn conversation(
    state: &AppState,
    bot: BotId,
    chat: ConversationId,
) -> ApiResult<Conversation> {
    state
        .store
        .get_conversation(bot, chat)
        .await?
        .ok_or_else(ApiError::not_found)
}

/// The queue: the bot's conversations waiting for or talking to a human.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/handovers", tag = "handover",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"), QueueQuery),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The queue", body = HandoverList),
        (status = 403, description = "No write permission, not shared with you, or an API key without chats:write", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn list_handovers(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
    QueryParams(query): QueryParams<QueueQuery>,
) -> ApiResult<Json<HandoverList>> {
    authz::chats(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let states: &[HandoverState] = match query.state.unwrap_or(QueueFilter::Open) {
        QueueFilter::Requested => &[HandoverState::Requested],
        QueueFilter::Agent => &[HandoverState::Agent],
        QueueFilter::Open => &[HandoverState::Requested, HandoverState::Agent],
    };
    let handovers = state.store.list_handovers(bot_id, states, 500).await?;
    Ok(Json(HandoverList {
        handovers: handovers.iter().map(HandoverView::from).collect(),
    }))
}

/// One conversation's handover and its messages, for the agent.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/handovers/{chat_id}", tag = "handover",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("chat_id" = ConversationId, Path, description = "Chat id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The handover and the chat so far", body = HandoverDetail),
        (status = 403, description = "No write permission, not shared with you, or an API key without chats:write", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn get_handover(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, chat_id)): PathParams<(OrgId, BotId, ConversationId)>,
) -> ApiResult<Json<HandoverDetail>> {
    authz::chats(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let chat = conversation(&state, bot_id, chat_id).await?;
    let messages = state.store.list_messages(chat.id, 500).await?;
    Ok(Json(HandoverDetail {
        handover: (&chat).into(),
        messages: messages.iter().map(MessageView::from).collect(),
    }))
}

/// Take a waiting conversation: from now on you answer the visitor.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/handovers/{chat_id}/take", tag = "handover",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("chat_id" = ConversationId, Path, description = "Chat id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Taken", body = HandoverView),
        (status = 403, description = "No write permission, not shared with you, or an API key without chats:write", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "Not waiting for an agent, or another agent has it", body = ErrorBody),
    ))]
pub async fn take_handover(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, chat_id)): PathParams<(OrgId, BotId, ConversationId)>,
) -> ApiResult<Json<HandoverView>> {
    let bot = authz::chats(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let agent = principal_label(&auth.principal);
    let chat = conversation(&state, bot_id, chat_id).await?;
    let at = now_ms();
    let event = handover_event(
        &state.settings.public_url,
        &bot,
        &chat,
        WebhookEvent::HandoverStarted,
        Some(&agent),
        at,
    );
    let Some(queued) = state
        .store
        .take_handover(bot_id, chat_id, &agent, at, &event)
        .await?
    else {
        return Err(ApiError::conflict(
            "not_available",
            "the conversation is not waiting for an agent, or another agent has it",
        ));
    };
    state.webhooks.wake_if(queued);
    // Read after the change, for the state as stored.
    let chat = conversation(&state, bot_id, chat_id).await?;
    announce(&state, &bot, &chat, HandoverState::Agent).await?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "handover.taken",
        Some(format!("chat:{chat_id}")),
        json!({ "bot_id": bot_id }),
    )
    .await?;
    Ok(Json((&chat).into()))
}

/// Reply to the visitor as the agent who took the conversation; the visitor receives it over the
/// chat's realtime channel.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/handovers/{chat_id}/messages", tag = "handover",
    request_body = AgentMessage,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("chat_id" = ConversationId, Path, description = "Chat id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Sent", body = MessageView),
        (status = 403, description = "No write permission, not shared with you, or an API key without chats:write", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "You have not taken this conversation", body = ErrorBody),
        (status = 422, description = "Empty or too long", body = ErrorBody),
    ))]
pub async fn send_agent_message(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, chat_id)): PathParams<(OrgId, BotId, ConversationId)>,
    StrictJson(request): StrictJson<AgentMessage>,
) -> ApiResult<(StatusCode, Json<MessageView>)> {
    let bot = authz::chats(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let text = message_text(&request.text)?;
    let chat = conversation(&state, bot_id, chat_id).await?;
    if chat.handover.state != HandoverState::Agent
        || chat.handover.agent.as_deref() != Some(principal_label(&auth.principal).as_str())
    {
        return Err(ApiError::conflict(
            "not_your_handover",
            "take the conversation before replying",
        ));
    }
    let message = post_to_chat(&state, &bot, &chat, Sender::Agent, text.to_owned()).await?;
    Ok((StatusCode::CREATED, Json((&message).into())))
}

/// End the handover: the bot answers the visitor again.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/handovers/{chat_id}/end", tag = "handover",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("chat_id" = ConversationId, Path, description = "Chat id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Ended", body = HandoverView),
        (status = 403, description = "No write permission, not shared with you, or an API key without chats:write", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "Not with humans", body = ErrorBody),
    ))]
pub async fn end_handover(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, chat_id)): PathParams<(OrgId, BotId, ConversationId)>,
) -> ApiResult<Json<HandoverView>> {
    let bot = authz::chats(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let chat = conversation(&state, bot_id, chat_id).await?;
    let at = now_ms();
    let event = handover_event(
        &state.settings.public_url,
        &bot,
        &chat,
        WebhookEvent::HandoverEnded,
        chat.handover.agent.as_deref(),
        at,
    );
    let Some(queued) = state
        .store
        .end_handover(bot_id, chat_id, at, &event)
        .await?
    else {
        return Err(ApiError::conflict(
            "not_with_humans",
            "the conversation is not waiting for or talking to an agent",
        ));
    };
    state.webhooks.wake_if(queued);
    let chat = conversation(&state, bot_id, chat_id).await?;
    announce(&state, &bot, &chat, HandoverState::Ended).await?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "handover.ended",
        Some(format!("chat:{chat_id}")),
        json!({ "bot_id": bot_id }),
    )
    .await?;
    Ok(Json((&chat).into()))
}
