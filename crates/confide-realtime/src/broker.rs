//! The seam between nodes: every published event goes to the broker, and the broker hands it to
//! every node's local delivery (this process's included). In-process by default.

use std::sync::{OnceLock, Weak};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

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
}

/// Carries published events to every node.
#[async_trait]
pub trait Broker: Send + Sync {
    /// Called once when the hub is created, with the delivery of this node.
    fn attach(&self, node: LocalNode);
    /// Sends an envelope to every node, this one included.
    async fn publish(&self, envelope: Envelope) -> Result<(), BrokerError>;
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
