//! The SSRF-safe HTTP client every outbound request of the platform goes through: webhooks now,
//! URL imports and other integrations later.
//!
//! - Only `http` and `https` URLs, without credentials; numeric host spellings are normalized
//!   by the URL parser before anything is checked.
//! - Every address a name resolves to is checked before connecting, and the connection goes to
//!   those checked addresses ([`resolve`]); address literals are checked directly.
//! - Non-public addresses (loopback, private, link-local, shared, multicast, reserved, and IPv6
//!   forms carrying them) are reached only through the operator's [`Allowlist`]; cloud metadata
//!   services never.
//! - Webhook posts never follow redirects; fetches follow a bounded number, each hop checked.
//! - Connect and total timeouts, body size limits enforced while reading, no proxies, no
//!   automatic decompression.

pub mod address;
mod client;
mod error;
pub mod policy;
pub mod resolve;
pub mod target;

pub use address::{Embedding, NonPublic, Range, classify};
pub use client::{
    FetchOptions, OutboundClient, OutboundConfig, OutboundResponse, StreamingResponse, describe,
};
pub use error::OutboundError;
pub use policy::{AllowEntry, Allowlist};
pub use resolve::DnsConfig;
pub use url::Url;
