//! Types and rules without I/O: typed ids, tenancy roles, permissions and validated inputs.
//! This crate knows no HTTP, no SQL and no clock; time is passed in.

pub mod access;
pub mod ids;
pub mod input;

pub use access::{ApiScope, BotAccess, BotPermission, OrgRole, Principal, SharingPolicy};
pub use ids::{ApiKeyId, AuditEventId, BotId, InvitationId, OrgId, SessionId, UserId};
pub use input::{Email, InputError, Name};
