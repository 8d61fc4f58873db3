//! The chat widget's API (seed 000's eleven steps): start a chat, authorize its private channel,
//! ask for the greeting, send messages. Callers are anonymous visitors on customers' pages; what
//! they hold is the chat token, and every step re-checks the bot's allowed domains.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use confide_domain::{
    AllowedDomain, BotId, ClientIp, ConversationId, MessageId, OrgId, Restrictions, Weekday,
    origin_allowed,
};
use confide_realtime::signature;
use confide_security::chat_token::ChatClaims;
use confide_store::{
    AuditChain, Button, ChatSettings, Chatbot, ContextMemory, ContextNamespace, Conversation,
    Dialogue, Message, Sender,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::timestamp;
use crate::audit::{self, Actor};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PathParams, StrictJson};
use crate::state::{AppState, now_ms};
use crate::webhooks::MessageOrigin;

/// The header that carries the chat token.
pub const CHAT_TOKEN_HEADER: &str = "x-chat-token";
/// Visitor messages are plain text of at most this many characters.
pub const MAX_MESSAGE_CHARS: usize = 2000;
/// The realtime event that carries every chat message.
pub const MESSAGE_EVENT: &str = "message";

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartChatRequest {
    /// A pseudonymous id the widget keeps for the visitor (generated when absent).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub visitor_id: Option<String>,
    /// The visitor's language (`en`, `nb-NO`): the greeting and replies are in it when the bot
    /// speaks it.
    #[schema(
        max_length = 39,
        pattern = r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{1,8}){0,4}$"
    )]
    pub language_code: Option<String>,
    /// The widget's `context` option: facts the page passes about the visitor (plan, page
    /// section). Kept apart from the bot's own context memory as untrusted, and sent to the
    /// webhooks as `visitor_context`.
    #[schema(schema_with = crate::api::application::new_context_schema)]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A requested language tag's primary subtag; a malformed tag is refused.
fn requested_language(tag: Option<&str>) -> ApiResult<Option<String>> {
    tag.map(|tag| {
        confide_domain::language::requested_code(tag).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_language_code",
                "language_code is a language tag such as en or nb-NO",
            )
        })
    })
    .transpose()
}

#[derive(Serialize, ToSchema)]
pub struct RealtimeParams {
    /// The Pusher app key to connect with (the bot's public key).
    pub app_key: String,
    pub host: String,
    pub port: u16,
    /// Connect with wss.
    pub tls: bool,
    /// Where pusher-js sends channel authorization requests (with the chat token in `X-Chat-Token`).
    pub auth_endpoint: String,
}

#[derive(Serialize, ToSchema)]
pub struct ChatSession {
    pub chat_id: ConversationId,
    /// `private-chat-{chat_id}`.
    pub channel: String,
    /// The chat token: send it as `X-Chat-Token`.
    pub token: String,
    pub expires_at: String,
    pub visitor_id: String,
    pub realtime: RealtimeParams,
    /// The bot serves verified visitors only: verify through `POST /chat/v1/identity` first.
    pub identity_required: bool,
    /// The bot's picture for the widget to show (versioned by its content); null when it has
    /// none.
    pub avatar_url: Option<String>,
}

fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

fn parsed_domains(settings: &ChatSettings) -> Vec<AllowedDomain> {
    settings
        .allowed_domains
        .iter()
        .filter_map(|d| AllowedDomain::parse(d).ok())
        .collect()
}

/// Counts a chat request against a moving-window quota (see `middleware::rate_limit::check`).
async fn limit(state: &AppState, ip: ClientIp, key: String, per_minute: u32) -> ApiResult<()> {
    crate::middleware::rate_limit::check(state, ip, key, per_minute, json!({ "bucket": "chat" }))
        .await
}

async fn refuse(
    state: &AppState,
    chain: AuditChain,
    ip: ClientIp,
    action: &str,
    reason: &str,
    err: ApiError,
) -> ApiError {
    audit::record_refusal(
        state,
        chain,
        &Actor::anonymous(ip),
        action,
        None,
        json!({ "reason": reason }),
    )
    .await;
    err
}

/// Whether this address may reach the bot at all: its IP and country lists, then the
/// organization's blocked addresses (trusted ones win). Every chat endpoint asks here.
async fn admit_address(
    state: &AppState,
    settings: &ChatSettings,
    org: OrgId,
    ip: ClientIp,
) -> ApiResult<()> {
    check_ip(state, settings, org, ip).await?;
    crate::spam::check_blocked(state, org, ip).await
}

/// The bot's IP and country allow and deny lists; refusals are audited in the bot's organization.
async fn check_ip(
    state: &AppState,
    settings: &ChatSettings,
    org: OrgId,
    ip: ClientIp,
) -> ApiResult<()> {
    use crate::geo::{NetworkRefusal, network_admission};
    let refusal = match network_admission(&settings.restrictions, state.geoip.as_deref(), ip.0) {
        Ok(()) => return Ok(()),
        Err(refusal) => refusal,
    };
    let (action, details, err) = match refusal {
        NetworkRefusal::Ip => (
            "chat.ip_refused",
            json!({ "reason": "ip" }),
            ApiError::forbidden(
                "ip_not_allowed",
                "chats are not available from this network",
            ),
        ),
        NetworkRefusal::Country(country) => (
            "chat.country_refused",
            json!({ "reason": "country", "country": country }),
            ApiError::forbidden(
                "country_not_allowed",
                "chats are not available from this country",
            ),
        ),
        NetworkRefusal::GeoIpUnavailable => {
            // The operator's doing, not the visitor's: say so in the log, and stay closed.
            tracing::error!(%org, "a bot has country rules but no GeoIP database is loaded");
            (
                "chat.country_refused",
                json!({ "reason": "geoip_unavailable" }),
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "geoip_unavailable",
                    "chats with this bot are unavailable right now",
                ),
            )
        }
    };
    audit::record_refusal(
        state,
        AuditChain::Org(org),
        &Actor::anonymous(ip),
        action,
        None,
        details,
    )
    .await;
    Err(err)
}

/// Whether now, in the bot's time zone, falls inside its active hours.
fn within_active_hours(restrictions: &Restrictions) -> bool {
    if restrictions.active_hours.is_empty() {
        return true;
    }
    let Ok(zone) = jiff::tz::TimeZone::get(&restrictions.timezone) else {
        // Validated on save; a zone unknown now (tz data changed) closes rather than opens.
        return false;
    };
    let local = jiff::Timestamp::now().to_zoned(zone);
    let day = local.weekday().to_monday_zero_offset();
    let minute =
        u16::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute())).unwrap_or(0);
    u8::try_from(day)
        .ok()
        .and_then(Weekday::from_monday_index)
        .is_some_and(|day| restrictions.active_at(day, minute))
}

fn realtime_params(state: &AppState, bot: &Chatbot) -> RealtimeParams {
    let url = &state.settings.public_url;
    let tls = url.starts_with("https://");
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (
            host.to_owned(),
            port.parse().unwrap_or(if tls { 443 } else { 80 }),
        ),
        None => (authority.to_owned(), if tls { 443 } else { 80 }),
    };
    RealtimeParams {
        app_key: bot.widget_key.clone(),
        host,
        port,
        tls,
        auth_endpoint: format!("{url}/chat/v1/auth"),
    }
}

/// The bot a page embeds, if this page (its origin) and this visitor (their address) may use it.
pub(crate) async fn admit_page(
    state: &AppState,
    ip: ClientIp,
    headers: &HeaderMap,
    bot_key: &str,
) -> ApiResult<(Chatbot, ChatSettings)> {
    let unknown = || ApiError::new(StatusCode::NOT_FOUND, "unknown_bot", "no bot has this key");
    if bot_key.len() > 64 {
        return Err(unknown());
    }
    let bot = state
        .store
        .get_bot_by_widget_key(bot_key)
        .await?
        .ok_or_else(unknown)?;
    let settings = state.store.get_chat_settings(bot.id).await?;
    if !origin_allowed(&parsed_domains(&settings), origin(headers)) {
        let err = ApiError::forbidden("origin_not_allowed", "this page may not embed the bot");
        return Err(refuse(
            state,
            AuditChain::Org(bot.org_id),
            ip,
            "chat.origin_refused",
            "origin",
            err,
        )
        .await);
    }
    admit_address(state, &settings, bot.org_id, ip).await?;
    Ok((bot, settings))
}

/// Start a chat with a bot (seed 000, steps 1-2). Checks the bot's restrictions and returns the
/// chat token and how to reach its private channel.
#[utoipa::path(post, path = "/chat/v1/{bot_key}/sessions", tag = "chat", request_body = StartChatRequest,
    params(("bot_key" = String, Path, description = "The bot's public widget key")),
    responses(
        (status = 201, description = "A new chat", body = ChatSession),
        (status = 403, description = "The page's origin may not embed this bot", body = ErrorBody),
        (status = 404, description = "No such bot", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    ))]
pub async fn start_chat(
    State(state): State<AppState>,
    axum::Extension(ip): axum::Extension<ClientIp>,
    headers: HeaderMap,
    PathParams(bot_key): PathParams<String>,
    StrictJson(request): StrictJson<StartChatRequest>,
) -> ApiResult<(StatusCode, Json<ChatSession>)> {
    let limits = state.settings.rate_limits;
    let (bot, settings) = admit_page(&state, ip, &headers, &bot_key).await?;
    if !within_active_hours(&settings.restrictions) {
        let message = if settings.restrictions.outside_hours_message.is_empty() {
            "the chat is closed right now".to_owned()
        } else {
            settings.restrictions.outside_hours_message.clone()
        };
        return Err(ApiError::forbidden("outside_active_hours", message));
    }
    limit(
        &state,
        ip,
        format!("chat-bot:{}", bot.id),
        limits.chats_per_bot_per_minute,
    )
    .await?;
    let visitor_id = match request.visitor_id {
        Some(id)
            if (1..=64).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            id
        }
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_visitor_id",
                "visitor_id must be 1-64 letters, digits, - or _",
            ));
        }
        None => confide_security::tokens::random_token(16),
    };
    let language = requested_language(request.language_code.as_deref())?;
    let visitor_context = match &request.context {
        Some(map) => confide_domain::dialogue::context_entries(map).map_err(|err| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_context",
                format!("context: {err}"),
            )
        })?,
        None => Vec::new(),
    };
    let now = now_ms();
    let conversation = Conversation {
        id: ConversationId::new(),
        org_id: bot.org_id,
        bot_id: bot.id,
        visitor_id: visitor_id.clone(),
        origin: origin(&headers).map(|o| o.chars().take(256).collect()),
        ip: Some(ip.0.to_string()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect()),
        created_at: now,
        last_message_at: now,
        verified_user_id: None,
        verified_at: None,
        handover: Default::default(),
        ended_at: None,
        last_dialogue: None,
        ticket_status: None,
        source: confide_store::ConversationSource::Web,
        automated: confide_domain::traffic::automated_by_user_agent(
            headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        )
        .map(str::to_owned),
        interacted_at: None,
        // The requested language when the bot speaks it, else its default; each exchange may
        // change it (the chat log filters on it).
        language_code: Some(
            language
                .as_ref()
                .filter(|code| settings.languages.contains(code))
                .cloned()
                .unwrap_or_else(|| settings.default_language().to_owned()),
        ),
    };
    state.store.create_conversation(&conversation).await?;
    if !visitor_context.is_empty() {
        state
            .store
            .merge_context(
                conversation.id,
                ContextNamespace::Visitor,
                &visitor_context,
                confide_domain::dialogue::MAX_CONTEXT_KEYS,
                now,
            )
            .await?;
    }
    let avatar_url = bot
        .avatar
        .as_ref()
        .map(|avatar| crate::api::avatar::url(&state, &bot.widget_key, avatar));
    let expires_at = now / 1000 + state.settings.chat_token_ttl_secs;
    let token = state
        .chat_tokens
        .seal(&ChatClaims {
            org: bot.org_id.to_string(),
            bot: bot.id.to_string(),
            chat: conversation.id.to_string(),
            visitor: visitor_id.clone(),
            origin: conversation.origin.clone(),
            iat: now / 1000,
            exp: expires_at,
            sub: None,
            lang: language,
        })
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(ChatSession {
            chat_id: conversation.id,
            channel: format!("private-chat-{}", conversation.id),
            token,
            expires_at: timestamp(expires_at * 1000),
            visitor_id,
            realtime: realtime_params(&state, &bot),
            identity_required: settings.require_identity,
            avatar_url,
        }),
    ))
}

/// A chat token that opened and still matches a live bot, conversation and allowed origin.
pub(crate) struct ChatContext {
    pub(crate) bot: Chatbot,
    pub(crate) conversation: Conversation,
    /// Read once per request: the checks and the replies both use it.
    pub(crate) settings: ChatSettings,
    /// The language the widget asked for when the chat started (the token's `lang`).
    pub(crate) language: Option<String>,
}

/// What a chat request needs of the visitor's identity.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdentityCheck {
    /// Every chat request: a verified chat opens only with a token of that identity, and a bot
    /// that requires identity serves only verified chats.
    Enforce,
    /// The identity endpoint itself: the identity token is what proves who the visitor is.
    Verifying,
}

/// The rate-limit key of one chat's messages, whichever door they come through (widget or API).
pub(crate) fn per_chat_limit_key(conversation: ConversationId) -> String {
    format!("chat-conv:{conversation}")
}

impl ChatContext {
    /// Messages and greeting requests per chat, on top of the per-address layer.
    pub(crate) async fn limit_messages(&self, state: &AppState, ip: ClientIp) -> ApiResult<()> {
        limit(
            state,
            ip,
            per_chat_limit_key(self.conversation.id),
            state.settings.rate_limits.messages_per_chat_per_minute,
        )
        .await
    }
}

pub(crate) async fn chat_context(
    state: &AppState,
    ip: ClientIp,
    headers: &HeaderMap,
    identity: IdentityCheck,
) -> ApiResult<ChatContext> {
    let invalid =
        || ApiError::forbidden("invalid_chat_token", "the chat token is invalid or expired");
    let Some(token) = headers.get(CHAT_TOKEN_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(refuse(
            state,
            AuditChain::Platform,
            ip,
            "chat.token_refused",
            "missing",
            invalid(),
        )
        .await);
    };
    let claims = match state.chat_tokens.open(token, now_ms() / 1000) {
        Ok(claims) => claims,
        Err(err) => {
            let reason = if matches!(err, confide_security::Error::TokenExpired) {
                "expired"
            } else {
                "invalid"
            };
            return Err(refuse(
                state,
                AuditChain::Platform,
                ip,
                "chat.token_refused",
                reason,
                invalid(),
            )
            .await);
        }
    };
    let (Ok(org), Ok(bot_id), Ok(chat)) = (
        claims.org.parse::<OrgId>(),
        claims.bot.parse::<BotId>(),
        claims.chat.parse::<ConversationId>(),
    ) else {
        return Err(refuse(
            state,
            AuditChain::Platform,
            ip,
            "chat.token_refused",
            "claims",
            invalid(),
        )
        .await);
    };
    let Some(bot) = state.store.get_bot(org, bot_id).await? else {
        return Err(refuse(
            state,
            AuditChain::Platform,
            ip,
            "chat.token_refused",
            "bot_gone",
            invalid(),
        )
        .await);
    };
    let Some(conversation) = state.store.get_conversation(bot.id, chat).await? else {
        return Err(refuse(
            state,
            AuditChain::Org(org),
            ip,
            "chat.token_refused",
            "chat_gone",
            invalid(),
        )
        .await);
    };
    let settings = state.store.get_chat_settings(bot.id).await?;
    if !origin_allowed(&parsed_domains(&settings), origin(headers)) {
        let err = ApiError::forbidden("origin_not_allowed", "this page may not embed the bot");
        return Err(refuse(
            state,
            AuditChain::Org(org),
            ip,
            "chat.origin_refused",
            "origin",
            err,
        )
        .await);
    }
    admit_address(state, &settings, org, ip).await?;
    if identity == IdentityCheck::Enforce {
        if claims.sub != conversation.verified_user_id {
            // Unverified (or other-identity) tokens never open a verified visitor's chat.
            let err = ApiError::forbidden(
                "identity_mismatch",
                "this chat belongs to a verified visitor; verify again",
            );
            return Err(refuse(
                state,
                AuditChain::Org(org),
                ip,
                "chat.identity_refused",
                "token_not_verified",
                err,
            )
            .await);
        }
        if settings.require_identity && conversation.verified_user_id.is_none() {
            return Err(ApiError::forbidden(
                "identity_required",
                "this chat is for signed-in visitors only",
            ));
        }
    }
    Ok(ChatContext {
        bot,
        conversation,
        settings,
        language: claims.lang,
    })
}

#[derive(Serialize, ToSchema)]
pub struct ChannelAuth {
    /// `key:hex(HMAC-SHA256(secret, "socket_id:channel"))`, as pusher-js expects.
    pub auth: String,
}

/// What pusher-js posts to authorize a channel.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelAuthForm {
    #[schema(pattern = "^[0-9]{1,19}\\.[0-9]{1,19}$")]
    pub socket_id: String,
    #[schema(
        pattern = "^private-chat-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    pub channel_name: String,
}

/// Authorize the chat's private channel (seed 000, steps 4-5): pusher-js posts `socket_id` and
/// `channel_name` as a form, with the chat token in `X-Chat-Token`.
#[utoipa::path(post, path = "/chat/v1/auth", tag = "chat",
    request_body(content = ChannelAuthForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The signed subscription", body = ChannelAuth),
        (status = 403, description = "Invalid, expired or foreign token, or another channel", body = ErrorBody),
        (status = 415, description = "Not a form", body = ErrorBody),
        (status = 422, description = "Malformed form", body = ErrorBody),
    ))]
pub async fn channel_auth(
    State(state): State<AppState>,
    axum::Extension(ip): axum::Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<ChannelAuth>> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be a form",
        ));
    }
    let form: ChannelAuthForm = serde_urlencoded::from_bytes(&body).map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "expected socket_id and channel_name",
        )
    })?;
    if confide_realtime::SocketId::parse(&form.socket_id).is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_socket_id",
            "socket_id must look like 123.456",
        ));
    }
    let context = chat_context(&state, ip, &headers, IdentityCheck::Enforce).await?;
    let expected = format!("private-chat-{}", context.conversation.id);
    if form.channel_name != expected {
        let err = ApiError::forbidden("channel_mismatch", "the chat token is for another channel");
        return Err(refuse(
            &state,
            AuditChain::Org(context.bot.org_id),
            ip,
            "chat.token_refused",
            "channel_mismatch",
            err,
        )
        .await);
    }
    let secret = state.realtime_keys.bot_secret(context.bot.id);
    let signature = signature::private_channel(&secret, &form.socket_id, &form.channel_name);
    Ok(Json(ChannelAuth {
        auth: signature::auth_string(&context.bot.widget_key, &signature),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct MessageView {
    pub id: MessageId,
    /// `visitor`, `bot` or `agent`.
    pub sender: String,
    pub text: String,
    pub created_at: String,
    /// The buttons a bot message offers: press one by sending its `label` with
    /// `button: {message_id, index}`; a button with a `url` is a link.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<Button>,
}

impl From<&Message> for MessageView {
    fn from(m: &Message) -> Self {
        MessageView {
            id: m.id,
            sender: m.sender.as_str().to_owned(),
            text: m.text.clone(),
            created_at: timestamp(m.created_at),
            buttons: m.buttons.clone(),
        }
    }
}

/// Stores a message with its `message.created` webhook deliveries (one transaction), sends it over
/// the chat's channel and wakes the webhook worker.
pub(crate) async fn post_to_chat(
    state: &AppState,
    bot: &Chatbot,
    conversation: &Conversation,
    sender: Sender,
    text: String,
) -> ApiResult<Message> {
    let memory = state.store.get_memory(conversation.id).await?;
    post_message(
        state,
        bot,
        conversation,
        sender,
        text,
        &MessageOrigin::default(),
        &memory,
    )
    .await
}

/// [`post_to_chat`], saying how the message came about; its event also carries `memory`, the
/// chat's context memory as the caller read it for this exchange.
pub(crate) async fn post_message(
    state: &AppState,
    bot: &Chatbot,
    conversation: &Conversation,
    sender: Sender,
    text: String,
    origin: &MessageOrigin,
    memory: &ContextMemory,
) -> ApiResult<Message> {
    let message = Message {
        id: origin.message_id.unwrap_or_default(),
        conversation_id: conversation.id,
        sender,
        text,
        created_at: now_ms(),
        buttons: origin.buttons.clone(),
    };
    let event = crate::webhooks::message_created(
        &state.settings.public_url,
        bot,
        conversation,
        &message,
        origin,
        &memory.bot,
        &memory.visitor,
    );
    let queued = state.store.add_message_with_event(&message, &event).await?;
    state.webhooks.wake_if(queued);
    let data = serde_json::to_string(&MessageView::from(&message)).map_err(ApiError::internal)?;
    publish(state, bot, conversation, MESSAGE_EVENT, &data).await?;
    Ok(message)
}

/// A user's message text: at most 2000 characters with at least one that is neither white space
/// nor a control character, and no NUL (PostgreSQL cannot store it); answered trimmed.
pub(crate) fn message_text(raw: &str) -> ApiResult<&str> {
    let visible = raw.chars().any(|c| !c.is_whitespace() && !c.is_control());
    if !visible || raw.contains('\0') || raw.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_message",
            "a message is 1 to 2000 characters",
        ));
    }
    Ok(raw.trim())
}

/// A user's message and the bot's reply, if it gave one.
pub(crate) struct Exchanged {
    pub message: Message,
    pub reply: Option<Message>,
}

/// Who answers a user's message.
pub(crate) enum Answerer<'a> {
    /// The engine's steps.
    Engine,
    /// The dialogue the caller named: a pressed button's, or the Application API's `exchange_id`.
    Dialogue(&'a Dialogue),
    /// No bot: the message asked for a human (a pressed handover button).
    Nobody,
}

/// The one path every user message takes, from the widget or the Application API: stored with
/// its event, answered as `answerer` says, the reply stored with its own event naming the message
/// it answers, and both counted for the statistics.
pub(crate) async fn converse(
    state: &AppState,
    bot: &Chatbot,
    conversation: &Conversation,
    settings: &ChatSettings,
    text: &str,
    answerer: Answerer<'_>,
    language_code: Option<&str>,
) -> ApiResult<Exchanged> {
    let origin = MessageOrigin {
        language_code: language_code.map(str::to_owned),
        ..MessageOrigin::default()
    };
    // Read once for the whole exchange: both messages' events carry it, the engine fills it.
    let mut memory = state.store.get_memory(conversation.id).await?;
    let message = post_message(
        state,
        bot,
        conversation,
        Sender::Visitor,
        text.to_owned(),
        &origin,
        &memory,
    )
    .await?;
    // The visitor writing is the visitor's turn taken: a pending or solved ticket opens again.
    crate::api::tickets::visitor_wrote(state, bot, conversation).await?;
    let answer = match answerer {
        Answerer::Nobody => None,
        Answerer::Dialogue(dialogue) => crate::engine::answer_with(
            conversation,
            settings,
            &memory.bot,
            dialogue,
            language_code,
            text,
        )?,
        Answerer::Engine => {
            crate::engine::answer(
                state,
                bot,
                conversation,
                settings,
                &mut memory.bot,
                text,
                language_code,
            )
            .await?
        }
    };
    // The chat's language is the one its latest exchange was answered in; its follow-ups and
    // buttons are those of the dialogue that answered.
    if let Some(answer) = &answer
        && (conversation.language_code.as_deref() != Some(answer.language.as_str())
            || conversation.last_dialogue != answer.answered_by.dialogue())
    {
        state
            .store
            .set_conversation_exchange(
                bot.id,
                conversation.id,
                Some(&answer.language),
                answer.answered_by.dialogue(),
            )
            .await?;
    }
    let fallback = answer
        .as_ref()
        .is_some_and(|a| a.answered_by == crate::engine::AnsweredBy::Fallback);
    let reply = match answer {
        Some(answer) => {
            let origin = MessageOrigin {
                reply_to: Some(message.id),
                exchange: answer.answered_by.dialogue(),
                language_code: Some(answer.language.clone()),
                buttons: answer.buttons,
                message_id: answer.message_id,
            };
            Some(
                post_message(
                    state,
                    bot,
                    conversation,
                    Sender::Bot,
                    answer.text,
                    &origin,
                    &memory,
                )
                .await?,
            )
        }
        None => None,
    };
    crate::statistics::count(
        state,
        conversation,
        confide_store::HourlyStatistics {
            sessions: i64::from(conversation.interacted_at.is_none()),
            visitor_messages: 1,
            bot_messages: i64::from(reply.is_some()),
            fallbacks: i64::from(fallback),
            ..Default::default()
        },
    )
    .await;
    Ok(Exchanged { message, reply })
}

/// Sends an event over the chat's private channel.
pub(crate) async fn publish(
    state: &AppState,
    bot: &Chatbot,
    conversation: &Conversation,
    event: &str,
    data: &str,
) -> ApiResult<()> {
    state
        .hub
        .publish(
            &bot.id.to_string(),
            &[format!("private-chat-{}", conversation.id)],
            event,
            data,
            None,
        )
        .await
        .map_err(ApiError::internal)
}

#[derive(Serialize, ToSchema)]
pub struct Posted {
    /// The stored message.
    pub message: MessageView,
    /// The bot's reply, also sent over the channel; absent while humans answer (handover).
    pub reply: Option<MessageView>,
}

/// Ask for the bot's greeting (seed 000, steps 7-9); it arrives over the channel.
#[utoipa::path(post, path = "/chat/v1/greeting", tag = "chat",
    responses(
        (status = 202, description = "The greeting is on its way", body = Posted),
        (status = 403, description = "Invalid or expired chat token", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    ))]
pub async fn greeting(
    State(state): State<AppState>,
    axum::Extension(ip): axum::Extension<ClientIp>,
    headers: HeaderMap,
) -> ApiResult<(StatusCode, Json<Posted>)> {
    let context = chat_context(&state, ip, &headers, IdentityCheck::Enforce).await?;
    context.limit_messages(&state, ip).await?;
    let greeting = crate::engine::greeting(&context.settings, context.language.as_deref());
    let message = post_to_chat(
        &state,
        &context.bot,
        &context.conversation,
        Sender::Bot,
        greeting,
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Posted {
            message: (&message).into(),
            reply: None,
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    #[schema(min_length = 1, max_length = 2000, pattern = "\\S")]
    pub text: String,
    /// The message's language (`en`, `nb-NO`), when the widget knows it; else the chat's, else
    /// detected when the bot detects languages, else the bot's default.
    #[schema(
        max_length = 39,
        pattern = r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{1,8}){0,4}$"
    )]
    pub language_code: Option<String>,
    /// A pressed button of a bot message in this chat: its dialogue answers, and what the visitor
    /// is recorded to have said is the button's label (whatever `text` says).
    pub button: Option<PressedButton>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PressedButton {
    /// The bot message that offered it.
    pub message_id: MessageId,
    /// Its place among the message's buttons, 0 first.
    #[schema(minimum = 0, maximum = 4)]
    pub index: u8,
}

/// The dialogue a pressed button leads to, and its label: only a button a bot message of this
/// chat offered, that leads to a dialogue the bot still has.
/// What a pressed button does.
enum Pressed {
    /// Answers with this dialogue.
    Dialogue(Box<Dialogue>),
    /// Asks for a human.
    Handover,
}

/// The button the chat was offered, what it does, and its label (what the visitor said).
async fn pressed(
    state: &AppState,
    conversation: &Conversation,
    button: &PressedButton,
) -> ApiResult<(Pressed, String)> {
    let unavailable = || {
        ApiError::conflict(
            "button_unavailable",
            "that button is not one this chat was offered, or it leads nowhere now",
        )
    };
    let message = state
        .store
        .get_message(conversation.id, button.message_id)
        .await?
        .filter(|m| m.sender == Sender::Bot)
        .ok_or_else(unavailable)?;
    let offered = message
        .buttons
        .get(usize::from(button.index))
        .ok_or_else(unavailable)?;
    if offered.handover {
        return Ok((Pressed::Handover, offered.label.clone()));
    }
    let target = offered.dialogue_id.ok_or_else(unavailable)?;
    let dialogue = state
        .store
        .get_dialogue(conversation.bot_id, target)
        .await?
        .ok_or_else(unavailable)?;
    Ok((Pressed::Dialogue(Box::new(dialogue)), offered.label.clone()))
}

/// Send a visitor's message (seed 000, steps 10-11): stored as plain text, then answered by the
/// bot over the channel.
#[utoipa::path(post, path = "/chat/v1/messages", tag = "chat", request_body = SendMessage,
    responses(
        (status = 202, description = "Stored; the reply is on its way", body = Posted),
        (status = 403, description = "Invalid or expired chat token", body = ErrorBody),
        (status = 409, description = "A pressed button this chat was not offered, or one that leads nowhere now", body = ErrorBody),
        (status = 422, description = "Empty or too long", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    ))]
pub async fn send_message(
    State(state): State<AppState>,
    axum::Extension(ip): axum::Extension<ClientIp>,
    headers: HeaderMap,
    StrictJson(request): StrictJson<SendMessage>,
) -> ApiResult<(StatusCode, Json<Posted>)> {
    let text = message_text(&request.text)?;
    let requested = requested_language(request.language_code.as_deref())?;
    let context = chat_context(&state, ip, &headers, IdentityCheck::Enforce).await?;
    context.limit_messages(&state, ip).await?;
    let button = match &request.button {
        Some(button) => Some(pressed(&state, &context.conversation, button).await?),
        None => None,
    };
    // What is stored and answered: a pressed button's label, else the text.
    let text = button.as_ref().map_or(text, |(_, label)| label.as_str());
    crate::spam::screen_message(&state, context.bot.org_id, ip, text).await?;
    // The message's language when the bot speaks it, else the one the chat started with.
    let requested = [requested, context.language.clone()]
        .into_iter()
        .flatten()
        .find(|code| context.settings.languages.contains(code));
    let answerer = match &button {
        None => Answerer::Engine,
        Some((Pressed::Dialogue(dialogue), _)) => Answerer::Dialogue(dialogue),
        // The visitor's words are the button's; no bot answers them: the humans will.
        Some((Pressed::Handover, _)) => Answerer::Nobody,
    };
    let asks_for_human = matches!(answerer, Answerer::Nobody);
    let exchanged = converse(
        &state,
        &context.bot,
        &context.conversation,
        &context.settings,
        text,
        answerer,
        requested.as_deref(),
    )
    .await?;
    if asks_for_human {
        ask_for_human(&state, &context.bot, &context.conversation).await?;
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Posted {
            message: (&exchanged.message).into(),
            reply: exchanged.reply.as_ref().map(MessageView::from),
        }),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct MessageList {
    /// Oldest first.
    pub messages: Vec<MessageView>,
}

/// The chat so far, for a widget catching up after a reconnect (events sent while it was offline
/// are not replayed by the realtime channel).
#[utoipa::path(get, path = "/chat/v1/messages", tag = "chat",
    responses(
        (status = 200, description = "The chat's messages, the latest 500 at most, oldest first", body = MessageList),
        (status = 403, description = "Invalid or expired chat token", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    ))]
pub async fn list_messages(
    State(state): State<AppState>,
    axum::Extension(ip): axum::Extension<ClientIp>,
    headers: HeaderMap,
) -> ApiResult<Json<MessageList>> {
    let context = chat_context(&state, ip, &headers, IdentityCheck::Enforce).await?;
    let messages = state
        .store
        .list_messages(context.conversation.id, 500)
        .await?;
    Ok(Json(MessageList {
        messages: messages.iter().map(MessageView::from).collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyIdentityRequest {
    /// The JWT your backend signed for the signed-in visitor (RS256 or ES256 with a key the bot
    /// trusts): `aud` = the bot's widget key, `sub` = your user id, `exp` within 24 hours, and
    /// optionally `chat_id` = this chat.
    #[schema(min_length = 1, max_length = 8192)]
    pub token: String,
}

#[derive(Serialize, ToSchema)]
pub struct VerifiedChat {
    /// A new chat token bound to the identity: use it from now on; the old one no longer opens
    /// this chat.
    pub token: String,
    pub expires_at: String,
    /// The identity token's `sub`.
    pub user_id: String,
    pub verified: bool,
}

/// Verify the visitor's identity (the widget's `getAuthToken`): marks the chat as this
/// identity's for good and returns a chat token bound to it.
#[utoipa::path(post, path = "/chat/v1/identity", tag = "chat", request_body = VerifyIdentityRequest,
    responses(
        (status = 200, description = "Verified", body = VerifiedChat),
        (status = 403, description = "Invalid chat or identity token, or the chat is another identity's", body = ErrorBody),
        (status = 409, description = "The bot has no identity keys", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    ))]
pub async fn verify_identity(
    State(state): State<AppState>,
    axum::Extension(ip): axum::Extension<ClientIp>,
    headers: HeaderMap,
    StrictJson(request): StrictJson<VerifyIdentityRequest>,
) -> ApiResult<Json<VerifiedChat>> {
    let context = chat_context(&state, ip, &headers, IdentityCheck::Verifying).await?;
    context.limit_messages(&state, ip).await?;
    let org = context.bot.org_id;
    let stored = state.store.list_identity_keys(context.bot.id).await?;
    if stored.is_empty() {
        return Err(ApiError::conflict(
            "identity_not_configured",
            "this bot does not verify visitors",
        ));
    }
    let ids: Vec<String> = stored.iter().map(|k| k.id.to_string()).collect();
    let trusted: Vec<_> = stored
        .iter()
        .zip(&ids)
        .filter_map(|(k, id)| {
            Some(confide_security::identity::TrustedIdentityKey {
                id,
                algorithm: confide_security::identity::IdentityAlgorithm::parse(&k.algorithm)?,
                pem: &k.public_key_pem,
            })
        })
        .collect();
    let now = now_ms();
    let verified = match confide_security::identity::verify_identity_token(
        &request.token,
        &trusted,
        &context.bot.widget_key,
        &context.conversation.id.to_string(),
        now / 1000,
    ) {
        Ok(verified) => verified,
        Err(refusal) => {
            let err = ApiError::forbidden(
                "invalid_identity_token",
                "the identity token is invalid or expired",
            );
            return Err(refuse(
                &state,
                AuditChain::Org(org),
                ip,
                "chat.identity_refused",
                refusal.reason(),
                err,
            )
            .await);
        }
    };
    let owned = state
        .store
        .verify_conversation(
            context.bot.id,
            context.conversation.id,
            &verified.user_id,
            now,
        )
        .await?;
    if !owned {
        let err = ApiError::forbidden(
            "identity_mismatch",
            "this chat belongs to another verified visitor",
        );
        return Err(refuse(
            &state,
            AuditChain::Org(org),
            ip,
            "chat.identity_refused",
            "other_identity",
            err,
        )
        .await);
    }
    audit::record(
        &state,
        AuditChain::Org(org),
        &Actor::anonymous(ip),
        "chat.identity_verified",
        Some(format!("chat:{}", context.conversation.id)),
        json!({ "bot_id": context.bot.id, "user_id": verified.user_id }),
    )
    .await?;
    let expires_at = now / 1000 + state.settings.chat_token_ttl_secs;
    let token = state
        .chat_tokens
        .seal(&ChatClaims {
            org: org.to_string(),
            bot: context.bot.id.to_string(),
            chat: context.conversation.id.to_string(),
            visitor: context.conversation.visitor_id.clone(),
            origin: context.conversation.origin.clone(),
            iat: now / 1000,
            exp: expires_at,
            sub: Some(verified.user_id.clone()),
            lang: context.language.clone(),
        })
        .map_err(ApiError::internal)?;
    Ok(Json(VerifiedChat {
        token,
        expires_at: timestamp(expires_at * 1000),
        user_id: verified.user_id,
        verified: true,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct HandoverStatus {
    /// `bot`, `requested`, `agent` or `ended`.
    pub state: String,
}

/// Ask for a human (the visitor): the bot stays quiet until an agent takes the chat or ends the
/// request. The widget also receives a `handover` event with the new state.
#[utoipa::path(post, path = "/chat/v1/handover", tag = "chat",
    responses(
        (status = 202, description = "Requested (or already with humans)", body = HandoverStatus),
        (status = 403, description = "Invalid or expired chat token", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    ))]
pub async fn request_handover(
    State(state): State<AppState>,
    axum::Extension(ip): axum::Extension<ClientIp>,
    headers: HeaderMap,
) -> ApiResult<(StatusCode, Json<HandoverStatus>)> {
    let context = chat_context(&state, ip, &headers, IdentityCheck::Enforce).await?;
    context.limit_messages(&state, ip).await?;
    let current = ask_for_human(&state, &context.bot, &context.conversation).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(HandoverStatus {
            state: current.as_str().to_owned(),
        }),
    ))
}

/// The visitor asks for a human (the widget's button, or a button offering one): the chat moves
/// to `requested` unless it is with humans already. Answers where the chat now stands.
async fn ask_for_human(
    state: &AppState,
    bot: &Chatbot,
    conversation: &Conversation,
) -> ApiResult<confide_store::HandoverState> {
    let at = now_ms();
    let event = crate::webhooks::handover_event(
        &state.settings.public_url,
        bot,
        conversation,
        confide_domain::WebhookEvent::HandoverRequested,
        None,
        at,
    );
    let queued = state
        .store
        .request_handover(bot.id, conversation.id, at, &event)
        .await?;
    let requested = queued.is_some();
    state.webhooks.wake_if(queued.unwrap_or(0));
    let current = if requested {
        confide_store::HandoverState::Requested
    } else {
        conversation.handover.state
    };
    if requested {
        crate::api::handover::announce(state, bot, conversation, current).await?;
        crate::statistics::count(
            state,
            conversation,
            confide_store::HourlyStatistics {
                handovers: 1,
                ..Default::default()
            },
        )
        .await;
    }
    Ok(current)
}
