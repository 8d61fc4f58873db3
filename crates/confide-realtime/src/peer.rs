//! One connected socket as the rest of the hub sees it: an id and a bounded outbox.

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

/// The shared half of a connection. Publishers push frames; the connection's task drains them.
pub(crate) struct Peer {
    pub id: u64,
    pub socket_id: SocketId,
    capacity: usize,
    outbox: Mutex<Outbox>,
    wake: Notify,
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
        }
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        // Nothing panics while holding this lock; a poisoned lock still holds a consistent queue.
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
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
