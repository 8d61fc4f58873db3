//! Kindly's Application API: a customer's backend talks to its bot for its own users, without the
//! widget. A call carries an API key bound to one bot (with `chats:write`); each user id has one
//! conversation with that bot (source `api`), whose messages take the widget's path (engine,
//! statistics, `message.created` webhooks). The bot's replies reach the customer through its
//! webhooks, naming the message they answer in `reply_to_id`.
//!
//! The widget's visitor restrictions (allowed domains, active hours, address rules, spam screening
//! by address) are not applied: the caller is the customer's own server, authenticated by its key,
//! and rate limited per key and per conversation instead.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::dialogue::{
    self, MAX_CONTEXT_KEY_CHARS, MAX_CONTEXT_KEYS, MAX_CONTEXT_VALUE_CHARS,
};
use confide_domain::{ConversationId, DialogueId, MessageId};
use confide_store::{Chatbot, ContextNamespace, Conversation, ConversationSource, Sender};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};

use crate::api::chat::{Answerer, converse, message_text, post_message};
use crate::auth::Auth;
use crate::authz;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::StrictJson;
use crate::state::{AppState, now_ms};
use crate::webhooks::MessageOrigin;

/// Characters of a user id.
pub const MAX_USER_ID_CHARS: usize = 128;
/// Characters of a language code (BCP 47's recommended bound).
pub const MAX_LANGUAGE_CODE_CHARS: usize = 35;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Your id for the user: each user id has one conversation with the bot. No spaces or control
    /// characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x20\x7F-\x9F]+$"
    )]
    pub user_id: String,
    /// What the user wrote.
    #[schema(min_length = 1, max_length = 2000, pattern = "\\S")]
    pub message: String,
    /// The language of the message (`en`, `nb-NO`); sent on in the webhooks'
    /// `exchange.language_code`.
    #[schema(max_length = 35, pattern = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]
    pub language_code: Option<String>,
    /// Context memory entries written before the bot answers (see `new_context_schema`).
    #[schema(schema_with = new_context_schema)]
    pub new_context: Option<serde_json::Map<String, serde_json::Value>>,
    /// One of the bot's dialogues to answer with, instead of matching the message against them.
    pub exchange_id: Option<DialogueId>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GreetRequest {
    /// Your id for the user (see `POST /api/v1/send`).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x20\x7F-\x9F]+$"
    )]
    pub user_id: String,
    /// Sent on in the webhook's `exchange.language_code`.
    #[schema(max_length = 35, pattern = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]
    pub language_code: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Sent {
    /// The user's conversation with the bot.
    pub chat_id: ConversationId,
    /// The stored message; the bot's reply names it in its webhook's `reply_to_id`.
    pub message_id: MessageId,
    /// The same id under the name Kindly's Application API gives it.
    pub chatmessage_id: MessageId,
}

/// `new_context`: at most 100 keys shaped like context keys, each a short string, a number or a
/// boolean (or null for none at all).
pub(crate) fn new_context_schema() -> utoipa::openapi::schema::Object {
    let value = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_CONTEXT_VALUE_CHARS)),
        )
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Boolean));
    let key = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!(
            "^[A-Za-z][A-Za-z0-9_.-]{{0,{}}}$",
            MAX_CONTEXT_KEY_CHARS - 1
        )));
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .description(Some(
            "Written into the conversation's context memory before the bot answers, so its \
             replies can use the keys as `{key}` placeholders. Numbers and booleans are stored as \
             text; at most 100 keys per conversation.",
        ))
        .property_names(Some(key))
        .additional_properties(Some(utoipa::openapi::RefOr::<Schema>::from(value)))
        .max_properties(Some(MAX_CONTEXT_KEYS))
        .build()
}

fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// A user id: 1 to 128 characters, none of them a space or a control character.
fn user_id(raw: &str) -> ApiResult<&str> {
    let length = raw.chars().count();
    let bad = |c: char| c <= ' ' || ('\u{7f}'..='\u{9f}').contains(&c);
    if !(1..=MAX_USER_ID_CHARS).contains(&length) || raw.chars().any(bad) {
        return Err(invalid(
            "invalid_user_id",
            "user_id is 1 to 128 characters without spaces or control characters",
        ));
    }
    Ok(raw)
}

/// A language code as `^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$`, at most 35 characters.
fn language_code(raw: Option<&str>) -> ApiResult<Option<&str>> {
    let Some(code) = raw else {
        return Ok(None);
    };
    let mut parts = code.split('-');
    let primary = parts.next().unwrap_or_default();
    let valid = code.len() <= MAX_LANGUAGE_CODE_CHARS
        && (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_lowercase())
        && parts
            .all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !valid {
        return Err(invalid(
            "invalid_language_code",
            "language_code is a language like en, nb or en-GB",
        ));
    }
    Ok(Some(code))
}

/// Calls per key, and messages per conversation as in the widget.
async fn limit(state: &AppState, auth: &Auth, key: String, per_minute: u32) -> ApiResult<()> {
    crate::middleware::rate_limit::check(
        state,
        auth.ip,
        key,
        per_minute,
        json!({ "bucket": "application", "limit_per_minute": per_minute }),
    )
    .await
}

/// The bot this call speaks to, within the key's quota.
async fn application_bot(state: &AppState, auth: &Auth) -> ApiResult<Chatbot> {
    let bot = authz::application_bot(state, auth).await?;
    if let Some(key) = &auth.api_key {
        let per_minute = state.settings.rate_limits.api_per_minute;
        limit(
            state,
            auth,
            format!("application-key:{}", key.id),
            per_minute,
        )
        .await?;
    }
    Ok(bot)
}

/// The user's conversation with the bot (created on first contact), within its message quota.
async fn user_chat(
    state: &AppState,
    auth: &Auth,
    bot: &Chatbot,
    user_id: &str,
) -> ApiResult<Conversation> {
    let now = now_ms();
    let conversation = state
        .store
        .find_or_create_api_conversation(&Conversation {
            id: ConversationId::new(),
            org_id: bot.org_id,
            bot_id: bot.id,
            visitor_id: user_id.to_owned(),
            origin: None,
            ip: None,
            user_agent: None,
            created_at: now,
            last_message_at: now,
            automated: None,
            interacted_at: None,
            verified_user_id: None,
            verified_at: None,
            handover: Default::default(),
            ended_at: None,
            // Set by each exchange (the language it was answered in).
            language_code: None,
            source: ConversationSource::Api,
            last_dialogue: None,
            ticket_status: None,
        })
        .await?;
    let per_minute = state.settings.rate_limits.messages_per_chat_per_minute;
    limit(
        state,
        auth,
        crate::api::chat::per_chat_limit_key(conversation.id),
        per_minute,
    )
    .await?;
    Ok(conversation)
}

/// Send a user's message to the bot (Kindly's `POST /api/v1/send`). The bot's answer goes out to
/// the bot's webhooks as a `message.created` whose `reply_to_id` is this message's id.
#[utoipa::path(post, path = "/api/v1/send", tag = "application", request_body = SendRequest,
    security(("api_key" = [])),
    responses(
        (status = 202, description = "Stored; the reply goes out through the webhooks", body = Sent),
        (status = 403, description = "An API key that is not bound to one bot (`bot_key_required`) or lacks chats:write", body = ErrorBody),
        (status = 404, description = "The bot has no dialogue with this `exchange_id` (`unknown_exchange`), or the key's bot is gone", body = ErrorBody),
        (status = 422, description = "A bad user id, message, language code or context (`invalid_user_id`, `invalid_message`, `invalid_language_code`, `invalid_context`), or more context keys than a chat may hold (`context_full`)", body = ErrorBody),
    ))]
pub async fn send(
    State(state): State<AppState>,
    auth: Auth,
    StrictJson(request): StrictJson<SendRequest>,
) -> ApiResult<(StatusCode, Json<Sent>)> {
    let bot = application_bot(&state, &auth).await?;
    let user_id = user_id(&request.user_id)?;
    let text = message_text(&request.message)?;
    let language_code = language_code(request.language_code.as_deref())?;
    let new_context = match &request.new_context {
        Some(map) => dialogue::context_entries(map)
            .map_err(|err| invalid("invalid_context", format!("new_context: {err}")))?,
        None => Vec::new(),
    };
    let exchange = match request.exchange_id {
        Some(id) => Some(state.store.get_dialogue(bot.id, id).await?.ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_exchange",
                "the bot has no dialogue with this exchange_id",
            )
        })?),
        None => None,
    };
    let conversation = user_chat(&state, &auth, &bot, user_id).await?;
    if !new_context.is_empty()
        && !state
            .store
            .merge_context(
                conversation.id,
                ContextNamespace::Bot,
                &new_context,
                MAX_CONTEXT_KEYS,
                now_ms(),
            )
            .await?
    {
        return Err(invalid(
            "context_full",
            format!("a chat's context memory holds at most {MAX_CONTEXT_KEYS} keys"),
        ));
    }
    let settings = state.store.get_chat_settings(bot.id).await?;
    let exchanged = converse(
        &state,
        &bot,
        &conversation,
        &settings,
        text,
        exchange
            .as_ref()
            .map_or(Answerer::Engine, Answerer::Dialogue),
        language_code,
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Sent {
            chat_id: conversation.id,
            message_id: exchanged.message.id,
            chatmessage_id: exchanged.message.id,
        }),
    ))
}

/// Make the bot greet a user (Kindly's `POST /api/v1/greet`): the bot's greeting is stored in the
/// user's conversation and goes out to the webhooks as a bot `message.created`.
#[utoipa::path(post, path = "/api/v1/greet", tag = "application", request_body = GreetRequest,
    security(("api_key" = [])),
    responses(
        (status = 202, description = "The greeting is stored and goes out through the webhooks; `message_id` is the greeting's", body = Sent),
        (status = 403, description = "An API key that is not bound to one bot (`bot_key_required`) or lacks chats:write", body = ErrorBody),
        (status = 404, description = "The key's bot is gone", body = ErrorBody),
        (status = 422, description = "A bad user id or language code", body = ErrorBody),
    ))]
pub async fn greet(
    State(state): State<AppState>,
    auth: Auth,
    StrictJson(request): StrictJson<GreetRequest>,
) -> ApiResult<(StatusCode, Json<Sent>)> {
    let bot = application_bot(&state, &auth).await?;
    let user_id = user_id(&request.user_id)?;
    let language_code = language_code(request.language_code.as_deref())?;
    let conversation = user_chat(&state, &auth, &bot, user_id).await?;
    let settings = state.store.get_chat_settings(bot.id).await?;
    let origin = MessageOrigin {
        language_code: language_code.map(str::to_owned),
        ..MessageOrigin::default()
    };
    let greeting = post_message(
        &state,
        &bot,
        &conversation,
        Sender::Bot,
        crate::engine::greeting(&settings, language_code),
        &origin,
        &state.store.get_memory(conversation.id).await?,
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Sent {
            chat_id: conversation.id,
            message_id: greeting.id,
            chatmessage_id: greeting.id,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_codes_follow_the_documented_pattern() {
        for good in ["en", "nob", "en-GB", "zh-Hant-TW", "de-1996"] {
            assert_eq!(
                language_code(Some(good)).ok().flatten(),
                Some(good),
                "{good}"
            );
        }
        for bad in [
            "",
            "e",
            "EN",
            "engl",
            "en-",
            "en--GB",
            "en-G",
            "en-toolongsub",
            "en_GB",
            "en GB",
        ] {
            assert!(language_code(Some(bad)).is_err(), "{bad}");
        }
        let long = format!("en{}", "-abcdefgh".repeat(4));
        assert!(long.len() > MAX_LANGUAGE_CODE_CHARS);
        assert!(language_code(Some(&long)).is_err());
    }

    #[test]
    fn user_ids_are_printable_without_spaces() {
        for good in [
            "u-1",
            "ada@example.com",
            "Jörg",
            &"x".repeat(MAX_USER_ID_CHARS),
        ] {
            assert!(user_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a b",
            "a\n",
            "\u{85}",
            &"x".repeat(MAX_USER_ID_CHARS + 1),
        ] {
            assert!(user_id(bad).is_err(), "{bad:?}");
        }
    }
}
