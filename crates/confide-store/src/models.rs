//! What the store keeps. Times are Unix milliseconds.

use std::collections::BTreeMap;

pub use confide_domain::dialogue::Button;
use confide_domain::{
    AddressBlockId, ApiKeyId, ApiScope, AuditEventId, BotId, BotPermission, ConversationId,
    DialogueId, IdentityKeyId, InvitationId, MessageId, OrgId, OrgRole, Restrictions, SessionId,
    SharingPolicy, TrustedAddressId, UserId, WebhookDeliveryId, WebhookEvent, WebhookId,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organization {
    pub id: OrgId,
    pub name: String,
    pub created_at: i64,
}

#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    /// Normalized (trimmed, lower-case).
    pub email: String,
    /// A PHC string (argon2id), or an imported Django hash until the next successful login.
    pub password_hash: String,
    pub created_at: i64,
    pub password_changed_at: i64,
    pub last_login_at: Option<i64>,
}

// Never print a password hash, even in debug output.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub org_id: OrgId,
    pub user_id: UserId,
    pub role: OrgRole,
    pub created_at: i64,
}

/// A member as an organization's member list shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub user_id: UserId,
    pub email: String,
    pub role: OrgRole,
    pub joined_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    pub id: InvitationId,
    pub org_id: OrgId,
    pub email: String,
    pub role: OrgRole,
    pub invited_by: UserId,
    pub created_at: i64,
    pub expires_at: i64,
    pub accepted_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chatbot {
    pub id: BotId,
    pub org_id: OrgId,
    pub name: String,
    /// The public key the widget embeds; not a secret, but unguessable.
    pub widget_key: String,
    pub sharing_policy: SharingPolicy,
    pub created_at: i64,
    pub updated_at: i64,
    /// One more with every write to the bot's dialogues (same transaction): what a cache of them
    /// is checked against. New bots start at 0.
    pub dialogues_version: i64,
    /// One more with every change to the bot's ready knowledge chunks (same transaction): what
    /// a node's knowledge index is checked against.
    pub knowledge_version: i64,
    /// One more with every write of the bot's embeddings (same transaction): what a node's copy
    /// of the bot's vectors is checked against.
    pub embeddings_version: i64,
    /// The picture the widget shows for the bot, if it has one (columns of the bot's row).
    pub avatar: Option<BotAvatar>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BotGrant {
    pub bot_id: BotId,
    pub user_id: UserId,
    pub permission: BotPermission,
}

/// A bot's avatar: a checked, scanned image stored under a random key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BotAvatar {
    /// The stored object's key (random, never the uploaded name).
    pub object_key: String,
    /// What its content and its name agreed it is: `png`, `jpeg` or `webp`.
    pub kind: String,
    /// Lower-case hex SHA-256 of the content: its ETag, and the version in its URL.
    pub sha256: String,
    pub size: i64,
    pub width: i64,
    pub height: i64,
    /// `clean`, or `not_configured` when it was stored on a server without a virus scanner.
    pub scan: confide_domain::ScanState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    /// SHA-256 of the cookie value; the value itself is never stored.
    pub token_hash: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    /// The absolute end of the session, whatever the activity.
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub org_id: OrgId,
    pub name: String,
    /// The lookup part shown in listings (`cfk_<prefix>_...`).
    pub prefix: String,
    /// SHA-256 of the whole key.
    pub key_hash: String,
    pub scopes: Vec<ApiScope>,
    pub bot_id: Option<BotId>,
    pub created_by: UserId,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// A temporary refusal of logins for one subject (`email:<address>` or `ip:<address>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lockout {
    pub subject: String,
    /// How many lockouts in a row; each one lasts longer.
    pub level: i64,
    pub locked_until: i64,
    pub updated_at: i64,
}

/// The audit chain an event belongs to: one per organization, plus one for the platform itself
/// (events that belong to no organization, such as a login attempt for an unknown address).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AuditChain {
    Org(OrgId),
    Platform,
}

impl AuditChain {
    pub fn key(&self) -> String {
        match self {
            AuditChain::Org(id) => id.to_string(),
            AuditChain::Platform => "platform".to_owned(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct NewAuditEvent {
    pub chain: AuditChain,
    pub at: i64,
    /// `user:<id>`, `api_key:<id>`, `cli` or `anonymous`.
    pub actor: Option<String>,
    pub ip: Option<String>,
    /// Dotted snake_case, e.g. `auth.login_failed`, `api_key.created`.
    pub action: String,
    /// What the action touched, e.g. `bot:<id>`.
    pub target: Option<String>,
    pub details: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    pub id: AuditEventId,
    pub chain: String,
    pub seq: i64,
    pub at: i64,
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// Where an audit chain stops adding up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBreak {
    pub chain: String,
    pub seq: i64,
    pub reason: String,
}

/// How a bot behaves in the chat widget.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatSettings {
    /// Sent when the widget asks for a greeting (seed 000, steps 7-9), in the default language.
    pub greeting: String,
    /// Sent when nothing else answers a message, in the default language.
    pub fallback_reply: String,
    /// Language codes the bot speaks; the first is the default. Never empty.
    pub languages: Vec<String>,
    /// Detect a message's language when the visitor's widget or API call does not give one.
    pub detect_language: bool,
    /// Greetings in the bot's other languages (the default's is `greeting`).
    pub greetings: BTreeMap<String, String>,
    /// Fallback replies in the bot's other languages (the default's is `fallback_reply`).
    pub fallback_replies: BTreeMap<String, String>,
    /// The label of the button with which the fallback offers a human, in the default language;
    /// `None`: the fallback offers none.
    pub fallback_human_button: Option<String>,
    /// That label in the bot's other languages.
    pub fallback_human_buttons: BTreeMap<String, String>,
    /// The confidence (0..=1) a sample-phrase dialogue needs to answer.
    pub sample_threshold: f64,
    /// Domain patterns (`example.com`, `*.example.com`) that may embed the widget; empty = any.
    pub allowed_domains: Vec<String>,
    /// Active hours and IP rules.
    pub restrictions: Restrictions,
    /// Only visitors verified by the owner's identity token may chat.
    pub require_identity: bool,
    /// Seconds a handover request may wait for an agent before it becomes a ticket; 0: never.
    pub ticket_after_seconds: u32,
    /// Tokens generated answers may use per calendar month (UTC); `None`: the server's default,
    /// 0: no generated answers (the knowledge step answers with the passage itself).
    pub answer_tokens_per_month: Option<u64>,
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings {
            greeting: "Hi! How can I help you today?".to_owned(),
            fallback_reply: "Sorry, I did not understand that. Could you put it another way?"
                .to_owned(),
            languages: vec![confide_domain::language::DEFAULT_LANGUAGE.to_owned()],
            detect_language: false,
            greetings: BTreeMap::new(),
            fallback_replies: BTreeMap::new(),
            fallback_human_button: None,
            fallback_human_buttons: BTreeMap::new(),
            sample_threshold: confide_domain::samples::DEFAULT_THRESHOLD,
            ticket_after_seconds: 300,
            allowed_domains: Vec::new(),
            restrictions: Restrictions::default(),
            require_identity: false,
            answer_tokens_per_month: None,
        }
    }
}

impl ChatSettings {
    /// The default language: the first of the bot's.
    pub fn default_language(&self) -> &str {
        self.languages
            .first()
            .map_or(confide_domain::language::DEFAULT_LANGUAGE, String::as_str)
    }

    /// The greeting in `language`, or the default language's.
    pub fn greeting_in(&self, language: &str) -> &str {
        self.greetings.get(language).unwrap_or(&self.greeting)
    }

    /// The fallback reply in `language`, or the default language's.
    pub fn fallback_reply_in(&self, language: &str) -> &str {
        self.fallback_replies
            .get(language)
            .unwrap_or(&self.fallback_reply)
    }

    /// The button with which the fallback offers a human in `language`, if it offers one.
    pub fn fallback_human_button_in(&self, language: &str) -> Option<Button> {
        let default = self.fallback_human_button.as_ref()?;
        Some(Button {
            label: self
                .fallback_human_buttons
                .get(language)
                .unwrap_or(default)
                .clone(),
            dialogue_id: None,
            url: None,
            handover: true,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    pub id: ConversationId,
    pub org_id: OrgId,
    pub bot_id: BotId,
    pub visitor_id: String,
    pub origin: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: i64,
    pub last_message_at: i64,
    /// Why the chat looks automated (`crawler`, `headless`, ...); statistics exclude it.
    pub automated: Option<String>,
    /// When the visitor first wrote; a chat without it had no interaction.
    pub interacted_at: Option<i64>,
    /// The owner's user id (`sub`) once an identity token verified the visitor; from then on only
    /// that identity may use the chat.
    pub verified_user_id: Option<String>,
    pub verified_at: Option<i64>,
    pub handover: Handover,
    /// When the conversation ended after a quiet spell (`conversation.ended`); a new message
    /// opens it again.
    pub ended_at: Option<i64>,
    /// The conversation's language (`en`, `nb`, ...), once known.
    pub language_code: Option<String>,
    pub source: ConversationSource,
    /// The dialogue that answered the latest exchange (`None`: the fallback, or none yet).
    pub last_dialogue: Option<DialogueId>,
    /// Its ticket's status, if it has one (kept with every ticket change).
    pub ticket_status: Option<confide_domain::TicketStatus>,
}

/// A conversation as the chat log lists it: with its labels (normalized, sorted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatLogEntry {
    pub conversation: Conversation,
    pub labels: Vec<String>,
}

/// What the chat log narrows a bot's conversations to; `None` (or no labels) leaves a criterion
/// out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatLogFilter {
    /// Last activity at or after this time.
    pub active_from: Option<i64>,
    /// Last activity before this time.
    pub active_to: Option<i64>,
    pub state: Option<HandoverState>,
    /// Normalized labels, all of which a conversation must carry.
    pub labels: Vec<String>,
    /// Compared without regard to case.
    pub language_code: Option<String>,
    /// Whether the visitor's identity was verified.
    pub verified: Option<bool>,
    /// The verified identity's `sub`.
    pub verified_user_id: Option<String>,
}

/// Where a page of the chat log (newest activity first) ended: its last conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatLogPosition {
    pub last_message_at: i64,
    pub id: ConversationId,
}

/// Where a page of a conversation's messages (newest first) ended: its oldest message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessagePosition {
    pub created_at: i64,
    pub id: MessageId,
}

/// Where a conversation comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConversationSource {
    /// The chat widget on a web page.
    #[default]
    Web,
    /// The Application API (`POST /api/v1/send`): one conversation per bot and user id.
    Api,
}

impl ConversationSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationSource::Web => "web",
            ConversationSource::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "web" => Some(ConversationSource::Web),
            "api" => Some(ConversationSource::Api),
            _ => None,
        }
    }
}

/// Where a conversation stands with the humans behind the bot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HandoverState {
    /// The bot answers.
    #[default]
    Bot,
    /// The visitor asked for a human; the bot stays quiet until an agent takes it.
    Requested,
    /// An agent took it and answers.
    Agent,
    /// The agent ended it; the bot answers again (the visitor may ask again).
    Ended,
}

impl HandoverState {
    pub fn as_str(self) -> &'static str {
        match self {
            HandoverState::Bot => "bot",
            HandoverState::Requested => "requested",
            HandoverState::Agent => "agent",
            HandoverState::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bot" => Some(HandoverState::Bot),
            "requested" => Some(HandoverState::Requested),
            "agent" => Some(HandoverState::Agent),
            "ended" => Some(HandoverState::Ended),
            _ => None,
        }
    }

    /// Whether humans, not the bot, answer the visitor now.
    pub fn with_humans(self) -> bool {
        matches!(self, HandoverState::Requested | HandoverState::Agent)
    }
}

/// A conversation's handover: its state and who took it when.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Handover {
    pub state: HandoverState,
    /// `user:{id}` or `api_key:{id}`.
    pub agent: Option<String>,
    pub requested_at: Option<i64>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
}

/// A public key of a bot owner's backend, which signs identity tokens for their visitors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityKey {
    pub id: IdentityKeyId,
    pub bot_id: BotId,
    pub name: String,
    /// `RS256` or `ES256`.
    pub algorithm: String,
    /// Canonical SubjectPublicKeyInfo PEM.
    pub public_key_pem: String,
    /// SHA-256 of the key, hex.
    pub fingerprint: String,
    pub created_at: i64,
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    Visitor,
    Bot,
    Agent,
}

impl Sender {
    pub fn as_str(self) -> &'static str {
        match self {
            Sender::Visitor => "visitor",
            Sender::Bot => "bot",
            Sender::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "visitor" => Some(Sender::Visitor),
            "bot" => Some(Sender::Bot),
            "agent" => Some(Sender::Agent),
            _ => None,
        }
    }
}

/// A message, stored as plain text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub sender: Sender,
    pub text: String,
    pub created_at: i64,
    /// The buttons a bot message offered (empty for every other message).
    pub buttons: Vec<Button>,
}

/// An address or network refused on every chat endpoint of an organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressBlock {
    pub id: AddressBlockId,
    pub org_id: OrgId,
    /// Canonical address or CIDR block.
    pub network: String,
    /// `repeats`, `burst`, `links` (detection) or `manual`.
    pub reason: String,
    /// `automatic` or `manual`.
    pub source: String,
    pub note: Option<String>,
    pub created_at: i64,
    /// `None`: persistent (the blacklist).
    pub expires_at: Option<i64>,
    /// Who blocked it by hand.
    pub created_by: Option<UserId>,
}

/// An address or network an organization trusts: never blocked, never screened for spam.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedAddress {
    pub id: TrustedAddressId,
    pub org_id: OrgId,
    pub network: String,
    pub note: Option<String>,
    pub created_at: i64,
    pub created_by: Option<UserId>,
}

/// A dialogue: patterns tried in order and/or sample phrases per language, an optional context
/// key for a pattern's first capture group, and reply alternatives (the first whose placeholders
/// are all known is sent), per language where the bot has them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dialogue {
    pub id: DialogueId,
    pub bot_id: BotId,
    pub name: String,
    /// Lower positions are tried first.
    pub position: i64,
    pub patterns: Vec<String>,
    pub context_key: Option<String>,
    pub replies: Vec<String>,
    /// Sample phrases by language code.
    pub samples: BTreeMap<String, Vec<String>>,
    /// Replies in particular languages; a language without an entry gets `replies`.
    pub replies_by_language: BTreeMap<String, Vec<String>>,
    /// Offered under the reply: another dialogue of the bot to answer with, or a link.
    pub buttons: Vec<Button>,
    /// The dialogue this one follows up: it is tried only right after that one answered.
    pub follow_up_of: Option<DialogueId>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Dialogue {
    /// The reply alternatives for an answer in `language`.
    pub fn replies_in(&self, language: &str) -> &[String] {
        self.replies_by_language
            .get(language)
            .unwrap_or(&self.replies)
    }
}

/// Whose context memory entry it is: dialogues, the APIs and webhooks write `Bot`; the widget's
/// `context` option writes `Visitor`, which replies never read unasked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextNamespace {
    Bot,
    Visitor,
}

impl ContextNamespace {
    pub fn as_str(self) -> &'static str {
        match self {
            ContextNamespace::Bot => "bot",
            ContextNamespace::Visitor => "visitor",
        }
    }
}

/// A conversation's whole context memory, both namespaces, as one read gives it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextMemory {
    /// What dialogues, the APIs and webhooks wrote; replies read it.
    pub bot: BTreeMap<String, String>,
    /// What the page passed in the widget's `context` option; untrusted.
    pub visitor: BTreeMap<String, String>,
}

/// Counts of one bot in one UTC hour (`hour`: Unix ms of its start), or an increment to them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HourlyStatistics {
    pub hour: i64,
    /// Conversations whose visitor wrote (counted at the first message).
    pub sessions: i64,
    pub visitor_messages: i64,
    /// Replies of the bot to visitor messages.
    pub bot_messages: i64,
    /// Replies that came from the fallback.
    pub fallbacks: i64,
    /// Requests for a human.
    pub handovers: i64,
}

/// A webhook endpoint of a bot.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: WebhookId,
    pub org_id: OrgId,
    pub bot_id: BotId,
    pub url: String,
    pub events: Vec<WebhookEvent>,
    pub enabled: bool,
    /// Deliveries to this endpoint in flight at once, across all workers.
    pub max_concurrency: i64,
    /// The signing secret, sealed under the server's webhook key.
    pub secret_sealed: String,
    /// The secret being rotated out, which still signs until `previous_secret_expires_at`.
    pub previous_secret_sealed: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

// The sealed secrets stay out of debug output too.
impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("bot_id", &self.bot_id)
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// The fields of a webhook an update may change; `None` leaves one as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookUpdate {
    pub url: Option<String>,
    pub events: Option<Vec<WebhookEvent>>,
    pub enabled: Option<bool>,
    pub max_concurrency: Option<i64>,
}

/// An event to deliver to every enabled endpoint of the bot that subscribes to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    pub bot_id: BotId,
    /// The conversation the event is about, if any: erasing it drops the event's deliveries.
    pub conversation_id: Option<ConversationId>,
    pub event: WebhookEvent,
    /// What the event is about, e.g. the message id.
    pub event_id: String,
    /// The JSON body, sent byte for byte on every attempt.
    pub payload: String,
    pub at: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its next attempt (or being attempted).
    Pending,
    Delivered,
    /// Retries ran out: a dead letter, until someone asks for a redelivery.
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "dead" => Some(DeliveryState::Dead),
            _ => None,
        }
    }
}

/// One event for one endpoint, with the outcome of its latest attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// Also the `webhook-id` header.
    pub id: WebhookDeliveryId,
    pub webhook_id: WebhookId,
    pub event: WebhookEvent,
    pub event_id: String,
    pub payload: String,
    pub state: DeliveryState,
    pub attempts: i64,
    pub created_at: i64,
    pub retry_from: i64,
    pub next_attempt_at: i64,
    pub lease_until: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_latency_ms: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

/// What became of one attempt, and so of the delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    RetryAt(i64),
    Dead,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::RetryAt(_) => "retry",
            AttemptOutcome::Dead => "dead",
        }
    }
}

/// One attempt at a delivery, as the delivery log shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookAttempt {
    pub attempt: i64,
    pub started_at: i64,
    /// The HTTP status, when an answer came.
    pub status: Option<i64>,
    pub latency_ms: i64,
    /// Why it failed (`timeout`, `connect`, `status 500`, ...).
    pub error: Option<String>,
    /// `delivered`, `retry` or `dead`.
    pub outcome: String,
}

/// A nudge: shown to a visitor by the widget's rules or sent through the Nudge API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nudge {
    pub id: confide_domain::NudgeId,
    pub bot_id: BotId,
    /// For the bot's builders; never shown to visitors.
    pub name: String,
    pub title: String,
    pub text: String,
    pub form: Option<confide_domain::nudge::NudgeForm>,
    /// `None`: shown only when sent through the API.
    pub rules: Option<confide_domain::nudge::NudgeRules>,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A ticket: a conversation people still owe an answer (one per conversation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub id: confide_domain::TicketId,
    pub org_id: OrgId,
    pub bot_id: BotId,
    pub conversation_id: ConversationId,
    pub status: confide_domain::TicketStatus,
    /// Plain text.
    pub subject: String,
    pub reason: confide_domain::TicketReason,
    /// `user:{id}` of the member it is assigned to.
    pub assignee: Option<String>,
    /// `user:{id}`, `api_key:{id}` or `system`.
    pub created_by: String,
    /// 1 when created, one more with every change.
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// When it was last solved; cleared when it opens again.
    pub solved_at: Option<i64>,
}

/// Where a page of tickets ended: the next page starts after this ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TicketPosition {
    pub created_at: i64,
    pub id: confide_domain::TicketId,
}

/// Where an organization's inbox backups are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupDestination {
    /// An S3-compatible bucket, with the organization's own (write-only) credentials.
    S3,
    /// The operator's backup directory, under a subdirectory named by the organization's id.
    Local,
}

impl BackupDestination {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupDestination::S3 => "s3",
            BackupDestination::Local => "local",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "s3" => Some(BackupDestination::S3),
            "local" => Some(BackupDestination::Local),
            _ => None,
        }
    }
}

/// An organization's inbox backup: a daily export of its conversations. The S3 fields are set
/// for an S3 destination only.
#[derive(Clone, PartialEq, Eq)]
pub struct InboxBackup {
    pub org_id: OrgId,
    pub destination: BackupDestination,
    /// Paused backups keep their configuration and history but are not scheduled.
    pub enabled: bool,
    pub bucket: Option<String>,
    pub region: Option<String>,
    /// An S3-compatible service's base URL; `None` for AWS itself.
    pub endpoint: Option<String>,
    /// Put before every object key: empty, or ending with `/`.
    pub prefix: String,
    pub access_key_id: Option<String>,
    /// The secret access key, sealed under the server's key; never shown again.
    pub secret_sealed: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

// The sealed secret stays out of debug output, like every other secret.
impl std::fmt::Debug for InboxBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxBackup")
            .field("org_id", &self.org_id)
            .field("destination", &self.destination)
            .field("enabled", &self.enabled)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// How the last attempt of a backup run went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupRunStatus {
    /// Claimed by a node, which holds it until `lease_until`.
    Running,
    Succeeded,
    Failed,
}

impl BackupRunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupRunStatus::Running => "running",
            BackupRunStatus::Succeeded => "succeeded",
            BackupRunStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(BackupRunStatus::Running),
            "succeeded" => Some(BackupRunStatus::Succeeded),
            "failed" => Some(BackupRunStatus::Failed),
            _ => None,
        }
    }
}

/// Why a backup run was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupRunCause {
    /// The daily schedule (or its retry after a failure).
    Schedule,
    /// Someone asked for it (`POST .../inbox-backup/run`).
    Manual,
}

impl BackupRunCause {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupRunCause::Schedule => "schedule",
            BackupRunCause::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "schedule" => Some(BackupRunCause::Schedule),
            "manual" => Some(BackupRunCause::Manual),
            _ => None,
        }
    }
}

/// The backup of one organization's UTC day: one row, claimed by one node at a time, that keeps
/// its last success and its last failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxBackupRun {
    pub org_id: OrgId,
    /// `YYYY-MM-DD`, in UTC.
    pub day: String,
    pub status: BackupRunStatus,
    /// What started the latest attempt.
    pub cause: BackupRunCause,
    /// Failures since the last success, for the backoff.
    pub attempts: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    /// When the schedule tries again (after a failure, or once a day exported while still going on
    /// has ended).
    pub next_attempt_at: Option<i64>,
    /// When the latest attempt started.
    pub started_at: i64,
    pub succeeded_at: Option<i64>,
    /// Whether the last success started after the day had ended, and so holds all of it.
    pub complete: bool,
    /// Conversations, bytes and object key of the last success.
    pub conversations: Option<i64>,
    pub bytes: Option<i64>,
    pub object_key: Option<String>,
    pub failed_at: Option<i64>,
    /// A stable code and a message without secrets, of the last failure.
    pub error_code: Option<String>,
    pub error: Option<String>,
}

/// A node's claim on an organization's day: granted when nobody holds the day and, for the
/// schedule, when the day is not backed up whole yet and no retry is pending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupClaim {
    pub org_id: OrgId,
    pub day: String,
    pub cause: BackupRunCause,
    /// A token naming this attempt; only its holder can renew or finish it.
    pub owner: String,
    pub now: i64,
    pub lease_until: i64,
}

/// How a claimed backup run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupRunOutcome {
    Succeeded {
        at: i64,
        /// The run started after the day ended.
        complete: bool,
        /// For a day not over yet: when the schedule exports it again, whole.
        next_attempt_at: Option<i64>,
        conversations: i64,
        bytes: i64,
        object_key: String,
    },
    Failed {
        at: i64,
        /// When the schedule tries again.
        next_attempt_at: i64,
        code: String,
        message: String,
    },
}

/// A knowledge source of a bot: an uploaded file, an imported page, or a text or Q&A entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnowledgeSource {
    pub id: confide_domain::SourceId,
    pub org_id: OrgId,
    pub bot_id: BotId,
    pub kind: confide_domain::SourceKind,
    /// Plain text: the file's display name, the page's title, the entry's title or question.
    pub title: String,
    /// What the content is (`pdf`, `docx`, `txt`, `markdown`, `html`, `csv`), once known.
    pub file_kind: Option<String>,
    pub size: Option<i64>,
    /// The random key the content is stored under; never derived from its name.
    pub object_key: Option<String>,
    pub url: Option<String>,
    /// A text entry's text, or a Q&A entry's `{"question", "answer"}`.
    pub body: Option<String>,
    pub status: confide_domain::SourceStatus,
    /// A stable code when rejected (or why it is waiting).
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub scan: confide_domain::ScanState,
    pub language: Option<String>,
    pub chunk_count: i64,
    pub revision: i64,
    pub attempts: i64,
    pub next_attempt_at: i64,
    /// `user:{id}` or `api_key:{id}`.
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// A page found by a site import: that import, whose deletion deletes the page.
    pub parent_id: Option<confide_domain::SourceId>,
    /// A site import (`sitemap` or `crawl`): its limits and what its last run did.
    pub crawl: Option<confide_domain::Crawl>,
}

impl KnowledgeSource {
    /// A new source waiting for a worker, nothing known yet about its content.
    pub fn queued(
        org_id: OrgId,
        bot_id: BotId,
        kind: confide_domain::SourceKind,
        created_by: String,
        at: i64,
    ) -> KnowledgeSource {
        KnowledgeSource {
            id: confide_domain::SourceId::new(),
            org_id,
            bot_id,
            kind,
            title: String::new(),
            file_kind: None,
            size: None,
            object_key: None,
            url: None,
            body: None,
            status: confide_domain::SourceStatus::Queued,
            reason: None,
            detail: None,
            scan: confide_domain::ScanState::NotApplicable,
            language: None,
            chunk_count: 0,
            revision: 0,
            attempts: 0,
            next_attempt_at: at,
            created_by,
            created_at: at,
            updated_at: at,
            parent_id: None,
            crawl: None,
        }
    }
}

/// One passage of a ready source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnowledgeChunk {
    pub id: confide_domain::ChunkId,
    pub source_id: confide_domain::SourceId,
    pub bot_id: BotId,
    pub position: i64,
    /// 1-based; pages of a PDF, else 1.
    pub page: i64,
    pub text: String,
}

/// A worker's change to a source it holds the claim on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceStep {
    pub status: confide_domain::SourceStatus,
    pub scan: confide_domain::ScanState,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub attempts: i64,
    pub next_attempt_at: i64,
    /// Gives the claim up (the source waits, or is done); otherwise the worker keeps it.
    pub release: bool,
    pub at: i64,
    /// A site import's run so far, when it changed; `None` keeps what is stored.
    pub crawl: Option<confide_domain::Crawl>,
}
