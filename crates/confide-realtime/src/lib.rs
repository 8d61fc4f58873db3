//! The Pusher-protocol hub: our own server for Pusher Channels protocol 7, so the unmodified
//! `pusher-js` client and Pusher's server SDKs work against Confide.
//!
//! - [`Hub`] holds the channels of every app (an app is a namespace), publishes, and answers
//!   channel queries; [`routes`] serves the WebSocket endpoint `/app/{key}` and the signed HTTP
//!   API `/apps/{app_id}/...`.
//! - Apps come from an [`AppDirectory`] the web layer implements.
//! - Events travel through a [`Broker`]: [`LocalBroker`] in one process; [`RedisBroker`] carries
//!   them between nodes and also keeps presence, occupancy and per-app connection counts for the
//!   whole cluster.
//! - [`signature`] holds the protocol's signatures for the channel auth endpoint.
//!
//! Mounting: merge [`routes`] at the root of the server (the paths are fixed by the clients, and
//! HTTP API signatures cover the path as received), serve with
//! `into_make_service_with_connect_info::<SocketAddr>()`, and insert `confide_domain::ClientIp`
//! in a middleware when the server sits behind trusted proxies: per-address connection limits
//! use it, or the peer address without it.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod app;
mod broker;
mod cluster;
mod config;
mod connection;
mod http_api;
mod hub;
pub mod names;
mod peer;
mod protocol;
mod query;
mod redis_broker;
mod replay;
mod routes;
pub mod signature;

pub use app::{
    AddressPolicy, AddressRule, App, AppDirectory, ConnectionRefusal, OriginPolicy, OriginRule,
    StaticApps,
};
pub use broker::{Broker, BrokerError, Envelope, LocalBroker, LocalNode, SignatureRecord};
pub use cluster::{Cluster, ClusterTiming};
pub use config::HubConfig;
pub use hub::{ChannelInfo, Hub, PublishError};
pub use names::{ChannelKind, SocketId};
pub use redis_broker::RedisBroker;
pub use routes::routes;
