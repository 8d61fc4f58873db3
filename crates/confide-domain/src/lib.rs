//! Types and rules without I/O: typed ids, tenancy roles, permissions and validated inputs.
//! This crate knows no HTTP, no SQL and no clock; time is passed in.

pub mod access;
pub mod dialogue;
pub mod ids;
pub mod input;
pub mod knowledge;
pub mod labels;
pub mod language;
pub mod markup;
pub mod network;
pub mod nudge;
pub mod origins;
pub mod restrictions;
pub mod samples;
pub mod spam;
pub mod ticket;
pub mod traffic;
pub mod webhooks;

pub use access::{ApiScope, BotAccess, BotPermission, OrgRole, Principal, SharingPolicy};
pub use ids::{
    AddressBlockId, ApiKeyId, AuditEventId, BotId, ChunkId, ConversationId, DialogueId,
    IdentityKeyId, InvitationId, MessageId, NudgeId, OrgId, SessionId, SourceId, TicketId,
    TrustedAddressId, UserId, WebhookDeliveryId, WebhookId,
};
pub use input::{Email, InputError, Name};
pub use knowledge::{
    Crawl, CrawlLimits, CrawlReport, CrawlStop, ScanState, SourceKind, SourceStatus,
};
pub use labels::{ChatLabel, LabelError, MAX_LABELS, parse_labels};
pub use origins::{AllowedDomain, origin_allowed};
pub use restrictions::{ActiveWindow, Restrictions, Weekday};
pub use ticket::{TicketReason, TicketStatus};
pub use webhooks::{RetryDecision, RetrySchedule, WebhookEvent};

/// The client's address as the web layer resolved it (the peer, or the forwarded address when the
/// peer is a trusted proxy). Every layer that limits or records by address uses this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientIp(pub std::net::IpAddr);
