//! Outbound webhooks: what an event's body looks like, and the worker that delivers the outbox
//! (`delivery`). Which URLs an endpoint may have is the SSRF-safe client's call
//! (`confide-outbound`), on save and at every delivery.

pub mod delivery;

use std::collections::BTreeMap;

use confide_domain::{BotId, ConversationId, DialogueId, MessageId, WebhookEvent};
use confide_security::webhook::WebhookSecretCipher;
use confide_store::{Chatbot, Conversation, Message, OutboxEvent};
use serde_json::json;
use tokio::sync::Notify;

use crate::api::timestamp;

pub use confide_domain::RetrySchedule;

/// How deliveries are made; the binary sets these from the configuration.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    pub retry: RetrySchedule,
    /// How long a worker's claim on a delivery lasts; after a crash, that long until a retry.
    pub lease_ms: i64,
    /// How often the worker looks for due deliveries when nothing wakes it.
    pub poll_ms: u64,
    /// Deliveries in flight at once on this node (each endpoint also has its own limit).
    pub max_in_flight: usize,
    pub connect_timeout_ms: u64,
    /// The whole request, answer included; kept below the lease.
    pub request_timeout_ms: u64,
    /// Bytes of an answer read at most; a longer one is cut (its status still counts) and its
    /// `new_context` ignored.
    pub max_response_bytes: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            retry: RetrySchedule::default(),
            lease_ms: 60_000,
            poll_ms: 1_000,
            max_in_flight: 32,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 15_000,
            max_response_bytes: 64 * 1024,
        }
    }
}

impl WebhookSettings {
    /// Keeps a request's time below half its claim's lease, so a slow receiver cannot outlive the
    /// claim and get the delivery attempted twice at once.
    pub fn apply_lease_to_timeouts(&mut self) {
        let half = u64::try_from(self.lease_ms / 2).unwrap_or(0).max(100);
        self.request_timeout_ms = self.request_timeout_ms.min(half);
        self.connect_timeout_ms = self.connect_timeout_ms.min(self.request_timeout_ms);
    }
}

/// What handlers and the worker share: the secrets' cipher and a bell that wakes the worker.
pub struct WebhookRuntime {
    pub cipher: WebhookSecretCipher,
    /// Rung when a delivery is queued or a slot frees up, so it goes out without waiting for a poll.
    pub wake: Notify,
}

impl WebhookRuntime {
    /// `previous`: the keys the sealing key was rotated from, which still open secrets.
    pub fn new(key: &[u8; 32], previous: &[[u8; 32]]) -> WebhookRuntime {
        WebhookRuntime {
            cipher: WebhookSecretCipher::new(key, previous),
            wake: Notify::new(),
        }
    }

    /// Wakes the worker when a write queued deliveries.
    pub fn wake_if(&self, queued: u64) {
        if queued > 0 {
            self.wake.notify_one();
        }
    }
}

/// The host of a page origin (`https://shop.example.com:8443` -> `shop.example.com:8443`).
fn web_host(origin: Option<&str>) -> Option<String> {
    let (_, rest) = origin?.split_once("://")?;
    let host = rest.split('/').next()?;
    (!host.is_empty()).then(|| host.to_owned())
}

/// How a message came about, as its `message.created` event tells it.
#[derive(Clone, Debug, Default)]
pub struct MessageOrigin {
    /// The message this one answers: a bot's reply names the user message (Kindly's
    /// `reply_to_id`).
    pub reply_to: Option<MessageId>,
    /// The dialogue that answered; none for the fallback, the greeting and people.
    pub exchange: Option<DialogueId>,
    /// The language the caller gave for the exchange (the Application API's `language_code`).
    pub language_code: Option<String>,
    /// The buttons a bot's reply offers.
    pub buttons: Vec<confide_store::Button>,
    /// The id the message was announced under before it was stored (a streamed answer's);
    /// a new one when there was none.
    pub message_id: Option<MessageId>,
}

/// `message.created` in the shape of Kindly's chatlog webhook, with the chat's context memory
/// (bot namespace) as it stood when the message was stored. `web_path` is null: the widget
/// reports only its origin today.
pub fn message_created(
    public_url: &str,
    bot: &Chatbot,
    conversation: &Conversation,
    message: &Message,
    origin: &MessageOrigin,
    context: &BTreeMap<String, String>,
    visitor_context: &BTreeMap<String, String>,
) -> OutboxEvent {
    let body = json!({
        "type": WebhookEvent::MessageCreated.as_str(),
        "timestamp": timestamp(message.created_at),
        "organization_id": bot.org_id,
        "bot_id": bot.id,
        "chat_id": conversation.id,
        "user_id": conversation.visitor_id,
        // The owner's id for the visitor, once an identity token verified them.
        "verified_user_id": conversation.verified_user_id,
        "exchange": { "id": origin.exchange, "language_code": origin.language_code },
        "message": message.text,
        "buttons": message.buttons,
        "message_id": message.id,
        "reply_to_id": origin.reply_to,
        "sender": message.sender.as_str(),
        "created_at": timestamp(message.created_at),
        "context": context,
        // What the page passed in the widget's `context` option: untrusted, as the visitor
        // controls the page it runs in.
        "visitor_context": visitor_context,
        "_links": { "chat": format!("{public_url}/api/v1/chats/{}", conversation.id) },
        "source": conversation.source.as_str(),
        "web_host": web_host(conversation.origin.as_deref()),
        "web_path": null,
    });
    OutboxEvent {
        bot_id: bot.id,
        conversation_id: Some(conversation.id),
        event: WebhookEvent::MessageCreated,
        event_id: message.id.to_string(),
        payload: body.to_string(),
        at: message.created_at,
    }
}

/// A chat lifecycle event being built: what every one carries (which chat of which bot, and its
/// visitor), then its own fields, then the outbox row.
struct ChatEvent {
    bot: BotId,
    chat: ConversationId,
    event: WebhookEvent,
    at: i64,
    body: serde_json::Map<String, serde_json::Value>,
}

impl ChatEvent {
    fn new(
        public_url: &str,
        bot: &Chatbot,
        conversation: &Conversation,
        event: WebhookEvent,
        at: i64,
    ) -> ChatEvent {
        let mut body = serde_json::Map::new();
        body.insert("type".into(), event.as_str().into());
        body.insert("timestamp".into(), timestamp(at).into());
        body.insert("organization_id".into(), json!(bot.org_id));
        body.insert("bot_id".into(), json!(bot.id));
        body.insert("chat_id".into(), json!(conversation.id));
        body.insert("user_id".into(), conversation.visitor_id.clone().into());
        body.insert("source".into(), conversation.source.as_str().into());
        body.insert(
            "verified_user_id".into(),
            json!(conversation.verified_user_id),
        );
        body.insert(
            "_links".into(),
            json!({ "chat": format!("{public_url}/api/v1/chats/{}", conversation.id) }),
        );
        ChatEvent {
            bot: bot.id,
            chat: conversation.id,
            event,
            at,
            body,
        }
    }

    fn with(mut self, key: &str, value: serde_json::Value) -> ChatEvent {
        self.body.insert(key.to_owned(), value);
        self
    }

    fn link(mut self, name: &str, url: String) -> ChatEvent {
        if let Some(links) = self.body.get_mut("_links").and_then(|l| l.as_object_mut()) {
            links.insert(name.to_owned(), url.into());
        }
        self
    }

    /// The outbox row; `event_id` is the same for every retry of this one event.
    fn outbox(self, event_id: String) -> OutboxEvent {
        OutboxEvent {
            bot_id: self.bot,
            conversation_id: Some(self.chat),
            event: self.event,
            event_id,
            payload: serde_json::Value::Object(self.body).to_string(),
            at: self.at,
        }
    }
}

/// `handover.requested`, `handover.started` (with the agent) or `handover.ended`, at `at`.
pub fn handover_event(
    public_url: &str,
    bot: &Chatbot,
    conversation: &Conversation,
    event: WebhookEvent,
    agent: Option<&str>,
    at: i64,
) -> OutboxEvent {
    ChatEvent::new(public_url, bot, conversation, event, at)
        .with("agent", json!(agent))
        // One event per transition: a chat may be handed over more than once.
        .outbox(format!("{}:{}:{at}", conversation.id, event.as_str()))
}

/// `conversation.ended`: the chat went quiet; `last_message_at` tells since when.
pub fn conversation_ended(
    public_url: &str,
    bot: &Chatbot,
    conversation: &Conversation,
    at: i64,
) -> OutboxEvent {
    ChatEvent::new(
        public_url,
        bot,
        conversation,
        WebhookEvent::ConversationEnded,
        at,
    )
    .with("started_at", timestamp(conversation.created_at).into())
    .with(
        "last_message_at",
        timestamp(conversation.last_message_at).into(),
    )
    .with("web_host", json!(web_host(conversation.origin.as_deref())))
    .outbox(format!(
        "{}:ended:{}",
        conversation.id, conversation.last_message_at
    ))
}

/// `nudge.submitted`: what a visitor entered in a nudge's form.
pub fn nudge_submitted(
    public_url: &str,
    bot: &Chatbot,
    conversation: &Conversation,
    nudge: &confide_store::Nudge,
    value: &str,
    at: i64,
) -> OutboxEvent {
    ChatEvent::new(
        public_url,
        bot,
        conversation,
        WebhookEvent::NudgeSubmitted,
        at,
    )
    .with(
        "nudge",
        json!({ "id": nudge.id, "name": nudge.name, "title": nudge.title }),
    )
    .with("value", value.into())
    .outbox(format!("{}:nudge:{}:{at}", conversation.id, nudge.id))
}

/// `ticket.updated`: a ticket was created or changed. Carries the ticket as it now is, what it was
/// before (`previous`: null when created) and who changed it (`user:{id}`, `api_key:{id}`,
/// `visitor` or `system`). One event per version of the ticket.
pub fn ticket_updated(
    public_url: &str,
    bot: &Chatbot,
    conversation: &Conversation,
    ticket: &confide_store::Ticket,
    previous: Option<&confide_store::Ticket>,
    by: &str,
) -> OutboxEvent {
    let previous = previous
        .map(|p| json!({ "status": p.status, "subject": p.subject, "assignee": p.assignee }));
    ChatEvent::new(
        public_url,
        bot,
        conversation,
        WebhookEvent::TicketUpdated,
        ticket.updated_at,
    )
    .with(
        "ticket",
        json!(crate::api::tickets::TicketView::from(ticket)),
    )
    .with("previous", json!(previous))
    .with("changed_by", by.into())
    .link(
        "ticket",
        format!(
            "{public_url}/api/v1/orgs/{}/bots/{}/tickets/{}",
            bot.org_id, bot.id, ticket.id
        ),
    )
    .outbox(format!("{}:{}", ticket.id, ticket.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_web_host_is_the_origins_authority() {
        assert_eq!(
            web_host(Some("https://shop.example.com:8443")).as_deref(),
            Some("shop.example.com:8443")
        );
        assert_eq!(web_host(Some("null")), None);
        assert_eq!(web_host(None), None);
    }
}
