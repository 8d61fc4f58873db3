//! The seam between nodes: every published event goes to the broker, and the broker hands it to
//! every node's local delivery (this process's included). In-process by default.

use std::sync::{OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::hub::Hub;

/// One event on its way to subscribers, in the form brokers carry between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub app_id: String,
    pub channels: Vec<String>,
    pub event: String,
    /// The frame's `data` as JSON text: a JSON string for server events, the client's own JSON
    /// for client events.
    pub data: String,
    /// This socket does not receive the event (the sender of a client event, or the publisher's
    /// `socket_id`).
    pub exclude_socket_id: Option<String>,
    /// The sender of a client event on a presence channel.
    pub user_id: Option<String>,
}

/// Why a broker could not take an event.
#[derive(Debug, thiserror::Error)]
#[error("the realtime broker is unavailable: {0}")]
pub struct BrokerError(pub String);

/// This node's delivery to its own sockets; brokers call it for every envelope they receive.
#[derive(Clone)]
pub struct LocalNode {
    pub(crate) hub: Weak<Hub>,
}

impl LocalNode {
    /// Delivers to the subscribers connected to this node.
    pub fn deliver(&self, envelope: &Envelope) {
        if let Some(hub) = self.hub.upgrade() {
            hub.deliver_local(envelope);
        }
    }

    pub(crate) fn same_hub(&self, other: &LocalNode) -> bool {
        self.hub.ptr_eq(&other.hub)
    }

    /// The cluster answered a subscription (`peer`; `None`: every socket on the channel), with
    /// the roster of a presence channel.
    pub(crate) fn answer_subscription(
        &self,
        app_id: &str,
        channel: &str,
        peer: Option<u64>,
        roster: Option<Vec<String>>,
    ) {
        if let Some(hub) = self.hub.upgrade() {
            hub.answer_subscription(app_id, channel, peer, roster);
        }
    }

    /// Redis did not answer a subscription: this node's own view answers it.
    pub(crate) fn answer_alone(
        &self,
        app_id: &str,
        channel: &str,
        peer: u64,
        announce: Option<&str>,
    ) {
        if let Some(hub) = self.hub.upgrade() {
            hub.answer_alone(app_id, channel, peer, announce);
        }
    }

    /// The cluster's presence channel is full: the pending subscription is refused.
    pub(crate) fn refuse_pending(&self, app_id: &str, channel: &str, peer: u64) {
        if let Some(hub) = self.hub.upgrade() {
            hub.refuse_pending(app_id, channel, peer);
        }
    }

    /// Redis did not take a member's departure: this node's subscribers hear of it.
    pub(crate) fn member_left_alone(&self, app_id: &str, channel: &str, user_id: &str) {
        if let Some(hub) = self.hub.upgrade() {
            hub.member_left_alone(app_id, channel, user_id);
        }
    }
}

/// What the record shared by all nodes says about a verified HTTP API signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureRecord {
    /// No node has seen it; it is now recorded for all of them.
    New,
    /// A node (this one or another) has already accepted it: a replay.
    Seen,
    /// There is no shared record (one node) or it cannot be reached: the node's own cache decides.
    Unavailable,
}

/// Carries published events to every node.
#[async_trait]
pub trait Broker: Send + Sync {
    /// Called once when the hub is created, with the delivery of this node.
    fn attach(&self, node: LocalNode);
    /// Sends an envelope to every node, this one included.
    async fn publish(&self, envelope: Envelope) -> Result<(), BrokerError>;
    /// Records a verified HTTP API signature for every node, for `ttl` (the rest of its window),
    /// so a request accepted by one node cannot be replayed to another.
    async fn record_signature(
        &self,
        _app_id: &str,
        _signature: &[u8; 32],
        _ttl: Duration,
    ) -> SignatureRecord {
        SignatureRecord::Unavailable
    }
    /// The presence rosters, occupancy and connection counts every node shares, when the
    /// broker keeps them (one node: none, the hub's own view is the whole truth).
    fn cluster(&self) -> Option<&Cluster> {
        None
    }
}

/// Single-process broker: delivers directly.
#[derive(Default)]
pub struct LocalBroker {
    node: OnceLock<LocalNode>,
}

impl LocalBroker {
    pub fn new() -> Self {
        LocalBroker::default()
    }
}

#[async_trait]
impl Broker for LocalBroker {
    fn attach(&self, node: LocalNode) {
        let _ = self.node.set(node);
    }

    async fn publish(&self, envelope: Envelope) -> Result<(), BrokerError> {
        match self.node.get() {
            Some(node) => {
                node.deliver(&envelope);
                Ok(())
            }
            None => Err(BrokerError("not attached to a hub".into())),
        }
    }
}
