//! One connected socket as the rest of the hub sees it: an id, a bounded outbox and the channels
//! it is in.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::names::SocketId;
use crate::protocol::Frame;

/// Why the server is closing a connection: a Pusher close code and its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Close {
    pub code: u16,
    pub message: &'static str,
}

pub(crate) const OVER_CAPACITY: Close = Close {
    code: 4100,
    message: "Over capacity: the client is not reading its messages fast enough",
};

struct Outbox {
    frames: VecDeque<Frame>,
    close: Option<Close>,
}

/// A channel a socket is in, or has asked to be in.
pub(crate) struct Subscription {
    pub channel: Box<str>,
    /// The member this socket is, on a presence channel.
    pub user_id: Option<Box<str>>,
    /// The subscription was answered with `subscription_succeeded`; on a clustered node it waits
    /// for the cluster's answer first, which may refuse it.
    pub answered: bool,
}

/// The shared half of a connection. Publishers push frames; the connection's task drains them.
pub(crate) struct Peer {
    pub id: u64,
    pub socket_id: SocketId,
    capacity: usize,
    outbox: Mutex<Outbox>,
    wake: Notify,
    /// Written only by the socket's room under its channel lock, so the connection sees the
    /// channels the hub holds it in: a subscription the cluster refused is gone from here too.
    subscriptions: Mutex<Vec<Subscription>>,
}

/// What the connection task takes out of the outbox in one go.
pub(crate) struct Pending {
    pub frames: VecDeque<Frame>,
    pub close: Option<Close>,
}

impl Peer {
    pub fn new(id: u64, socket_id: SocketId, capacity: usize) -> Peer {
        Peer {
            id,
            socket_id,
            capacity: capacity.max(1),
            outbox: Mutex::new(Outbox {
                frames: VecDeque::new(),
                close: None,
            }),
            wake: Notify::new(),
            subscriptions: Mutex::new(Vec::new()),
        }
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        // Nothing panics while holding this lock; a poisoned lock still holds a consistent queue.
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn subscriptions(&self) -> std::sync::MutexGuard<'_, Vec<Subscription>> {
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the socket is in `channel` or waiting for the answer to its subscription.
    pub fn is_in(&self, channel: &str) -> bool {
        self.subscriptions().iter().any(|s| &*s.channel == channel)
    }

    /// How many channels the socket is in or waiting for.
    pub fn channel_count(&self) -> usize {
        self.subscriptions().len()
    }

    /// The member the socket is on `channel` (`None` off presence channels), once its
    /// subscription was answered; `None` while it waits, or when it is not in the channel.
    pub fn answered_member(&self, channel: &str) -> Option<Option<String>> {
        self.subscriptions()
            .iter()
            .find(|s| s.answered && &*s.channel == channel)
            .map(|s| s.user_id.as_deref().map(str::to_owned))
    }

    /// The channels the socket is in or waiting for.
    pub fn channels(&self) -> Vec<Box<str>> {
        self.subscriptions()
            .iter()
            .map(|s| s.channel.clone())
            .collect()
    }

    /// Records a subscription; for the socket's room, under its channel lock.
    pub fn enter(&self, channel: &str, user_id: Option<Box<str>>, answered: bool) {
        self.subscriptions().push(Subscription {
            channel: channel.into(),
            user_id,
            answered,
        });
    }

    /// Marks a subscription answered; for the socket's room, under its channel lock.
    pub fn answer(&self, channel: &str) {
        if let Some(s) = self
            .subscriptions()
            .iter_mut()
            .find(|s| &*s.channel == channel)
        {
            s.answered = true;
        }
    }

    /// Removes a subscription, answered or refused; for the socket's room, under its channel lock.
    pub fn forget(&self, channel: &str) -> Option<Subscription> {
        let mut subscriptions = self.subscriptions();
        let i = subscriptions.iter().position(|s| &*s.channel == channel)?;
        Some(subscriptions.swap_remove(i))
    }

    /// Queues a frame. A full queue means the client cannot keep up: its backlog is dropped and
    /// the connection is closed with 4100 rather than buffering without bound.
    pub fn push(&self, frame: Frame) {
        {
            let mut outbox = self.outbox();
            if outbox.close.is_some() {
                return;
            }
            if outbox.frames.len() >= self.capacity {
                outbox.frames = VecDeque::new();
                outbox.close = Some(OVER_CAPACITY);
            } else {
                outbox.frames.push_back(frame);
            }
        }
        self.wake.notify_one();
    }

    /// Asks the connection to close after the frames already queued.
    pub fn close(&self, close: Close) {
        {
            let mut outbox = self.outbox();
            if outbox.close.is_none() {
                outbox.close = Some(close);
            }
        }
        self.wake.notify_one();
    }

    pub fn take(&self) -> Pending {
        let mut outbox = self.outbox();
        Pending {
            frames: std::mem::take(&mut outbox.frames),
            close: outbox.close,
        }
    }

    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}
