//! The JSON API (`/api/v1`), its OpenAPI document, and the small system endpoints.

pub mod application;
pub mod audit_log;
pub mod auth;
pub mod avatar;
pub mod bot_transfer;
pub mod bots;
pub mod chat;
pub mod chat_log;
pub mod demo;
pub mod dialogues;
pub mod handover;
pub mod identity_keys;
pub mod inbox_backup;
pub mod keys;
pub mod knowledge;
pub mod language;
pub mod me;
pub mod nudges;
pub mod orgs;
pub mod spam;
pub mod statistics;
pub mod system;
pub mod tickets;
pub mod upload;
pub mod webhooks;
pub mod widget;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// RFC 3339 text for a Unix-millisecond time.
pub fn timestamp(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}
