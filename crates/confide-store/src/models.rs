//! What the store keeps. Times are Unix milliseconds.

use confide_domain::{
    ApiKeyId, ApiScope, AuditEventId, BotId, BotPermission, ConversationId, InvitationId,
    MessageId, OrgId, OrgRole, Restrictions, SessionId, SharingPolicy, UserId,
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BotGrant {
    pub bot_id: BotId,
    pub user_id: UserId,
    pub permission: BotPermission,
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatSettings {
    /// Sent when the widget asks for a greeting (seed 000, steps 7-9).
    pub greeting: String,
    /// Sent when nothing else answers a message.
    pub fallback_reply: String,
    /// Domain patterns (`example.com`, `*.example.com`) that may embed the widget; empty = any.
    pub allowed_domains: Vec<String>,
    /// Active hours and IP rules.
    pub restrictions: Restrictions,
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings {
            greeting: "Hi! How can I help you today?".to_owned(),
            fallback_reply: "Sorry, I did not understand that. Could you put it another way?"
                .to_owned(),
            allowed_domains: Vec::new(),
            restrictions: Restrictions::default(),
        }
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
}
