//! One WebSocket connection: a single task that reads the client's frames, writes what the hub
//! queued for it, and watches the client's liveness.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::{Instant, timeout};

use crate::app::App;
use crate::broker::Envelope;
use crate::hub::{Admission, Hub, JoinError, PresenceMember, Room};
use crate::names::{self, CHAT_CHANNEL_PREFIX, ChannelKind, SERVER_TO_USER_PREFIX, SocketId};
use crate::peer::{Close, Peer};
use crate::protocol::{self, Frame, Inbound, json_str, parse_data};
use crate::signature;

const RATE_LIMITED: Close = Close {
    code: 4301,
    message: "Client over rate limit",
};
const PONG_MISSING: Close = Close {
    code: 4201,
    message: "Pong reply not received",
};
const MESSAGE_TOO_BIG: Close = Close {
    code: 1009,
    message: "Message too large",
};

/// A token bucket: `rate` per second, at most `burst` at once.
struct Bucket {
    tokens: f32,
    last: Instant,
}

impl Bucket {
    fn full(burst: u32) -> Bucket {
        Bucket {
            tokens: burst as f32,
            last: Instant::now(),
        }
    }

    fn take(&mut self, rate: u32, burst: u32) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f32();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate as f32).min(burst as f32);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Session {
    hub: Arc<Hub>,
    room: Arc<Room>,
    app: Arc<App>,
    peer: Arc<Peer>,
    socket_id: Box<str>,
    user: Option<Box<str>>,
    inbound: Bucket,
    client_events: Bucket,
}

#[derive(Deserialize)]
struct SubscribeData {
    channel: String,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    channel_data: Option<String>,
}

#[derive(Deserialize)]
struct UnsubscribeData {
    channel: String,
}

#[derive(Deserialize)]
struct SigninData {
    user_data: String,
    auth: String,
}

#[derive(Deserialize)]
struct UserData {
    id: String,
}

#[derive(Deserialize)]
struct ChannelData {
    user_id: serde_json::Value,
    #[serde(default)]
    user_info: Option<Box<RawValue>>,
}

impl Session {
    fn say(&self, frame: Frame) {
        self.peer.push(frame);
    }

    fn complain(&self, message: &str) {
        self.say(protocol::error(None, message));
    }

    /// Counts an inbound frame; a client over its rate is closed with 4301.
    fn admit_frame(&mut self) -> bool {
        let config = &self.hub.config;
        let admitted = self.inbound.take(
            config.max_inbound_frames_per_sec,
            config.inbound_frame_burst,
        );
        if !admitted {
            self.peer.close(RATE_LIMITED);
        }
        admitted
    }

    /// Handles a text frame; a client event to relay comes back to be published.
    fn on_text(&mut self, text: &str) -> Option<Envelope> {
        if !self.admit_frame() {
            return None;
        }
        let Ok(frame) = serde_json::from_str::<Inbound>(text) else {
            self.complain("Invalid message: expected a JSON object with an \"event\"");
            return None;
        };
        match frame.event.as_str() {
            "pusher:ping" => self.say(protocol::pong()),
            "pusher:pong" => {}
            "pusher:subscribe" => self.subscribe(frame.data),
            "pusher:unsubscribe" => self.unsubscribe(frame.data),
            "pusher:signin" => self.sign_in(frame.data),
            event if event.starts_with("client-") => return self.client_event(&frame),
            _ => self.complain("Unsupported event"),
        }
        None
    }

    fn on_binary(&mut self) {
        if self.admit_frame() {
            self.complain("Binary messages are not supported");
        }
    }

    fn on_control(&mut self) {
        self.admit_frame();
    }

    fn subscribe(&mut self, data: Option<&RawValue>) {
        let config = &self.hub.config;
        let Some(request) = parse_data::<SubscribeData>(data) else {
            self.complain("Invalid subscribe: data must hold a \"channel\"");
            return;
        };
        let channel = request.channel.as_str();
        if !names::valid_channel_name(channel, config.max_channel_name_len) {
            self.say(protocol::subscription_error(
                channel,
                "InvalidChannel",
                "Invalid channel name",
                400,
            ));
            return;
        }
        // The channels the hub holds this socket in, a refused subscription no longer among them.
        let already = self.peer.is_in(channel);
        if !already && self.peer.channel_count() >= config.max_channels_per_connection {
            self.say(protocol::subscription_error(
                channel,
                "LimitReached",
                "Too many channels on this connection",
                4100,
            ));
            return;
        }
        let auth = request.auth.as_deref().unwrap_or("");
        let member = match ChannelKind::of(channel) {
            ChannelKind::Public => None,
            ChannelKind::Private | ChannelKind::PrivateEncrypted => {
                let expected =
                    signature::private_channel(&self.app.secret, &self.socket_id, channel);
                if !signature::auth_matches(auth, &self.app.key, &expected) {
                    self.refuse(channel);
                    return;
                }
                None
            }
            ChannelKind::Presence => {
                let Some(channel_data) = request.channel_data.as_deref() else {
                    self.refuse(channel);
                    return;
                };
                let expected = signature::presence_channel(
                    &self.app.secret,
                    &self.socket_id,
                    channel,
                    channel_data,
                );
                if !signature::auth_matches(auth, &self.app.key, &expected) {
                    self.refuse(channel);
                    return;
                }
                match self.member(channel_data) {
                    Some(member) => Some(member),
                    None => {
                        self.say(protocol::subscription_error(
                            channel,
                            "InvalidChannelData",
                            "channel_data needs a user_id and at most a small user_info",
                            400,
                        ));
                        return;
                    }
                }
            }
            ChannelKind::ServerToUser => {
                let owner = channel.strip_prefix(SERVER_TO_USER_PREFIX);
                if self.user.as_deref().is_none() || owner != self.user.as_deref() {
                    self.refuse(channel);
                    return;
                }
                None
            }
        };
        match self.hub.join(&self.room, &self.peer, channel, member) {
            Ok(()) => {}
            Err(JoinError::PresenceFull) => self.say(protocol::subscription_error(
                channel,
                "LimitReached",
                "The presence channel is full",
                4100,
            )),
        }
    }

    fn refuse(&self, channel: &str) {
        self.say(protocol::subscription_error(
            channel,
            "AuthError",
            "Invalid signature",
            401,
        ));
    }

    fn member(&self, channel_data: &str) -> Option<PresenceMember> {
        let config = &self.hub.config;
        let data: ChannelData = serde_json::from_str(channel_data).ok()?;
        let user_id = match data.user_id {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            _ => return None,
        };
        if user_id.is_empty() || user_id.chars().count() > config.max_user_id_len {
            return None;
        }
        if data
            .user_info
            .as_ref()
            .is_some_and(|i| i.get().len() > config.max_user_info_bytes)
        {
            return None;
        }
        Some(PresenceMember {
            user_id: user_id.into(),
            info: data.user_info,
        })
    }

    fn unsubscribe(&mut self, data: Option<&RawValue>) {
        let Some(request) = parse_data::<UnsubscribeData>(data) else {
            self.complain("Invalid unsubscribe: data must hold a \"channel\"");
            return;
        };
        self.hub.leave(&self.room, &self.peer, &request.channel);
    }

    fn sign_in(&mut self, data: Option<&RawValue>) {
        let refused = |message| Close {
            code: 4009,
            message,
        };
        let Some(request) = parse_data::<SigninData>(data) else {
            self.peer.close(refused("Invalid sign-in"));
            return;
        };
        let expected =
            signature::user_signin(&self.app.secret, &self.socket_id, &request.user_data);
        if !signature::auth_matches(&request.auth, &self.app.key, &expected) {
            self.peer.close(refused("Invalid signature"));
            return;
        }
        let id = match serde_json::from_str::<UserData>(&request.user_data) {
            Ok(user)
                if !user.id.is_empty()
                    && user.id.chars().count() <= self.hub.config.max_user_id_len =>
            {
                user.id
            }
            _ => {
                self.peer.close(refused("Invalid user data"));
                return;
            }
        };
        match self.user.as_deref() {
            Some(current) if current != id => {
                self.peer
                    .close(refused("Already signed in as another user"));
                return;
            }
            Some(_) => {}
            None => {
                self.room.sign_in(&id, &self.peer);
                self.user = Some(id.into());
            }
        }
        let data = format!("{{\"user_data\":{}}}", json_str(&request.user_data));
        self.say(protocol::event_frame(
            "pusher:signin_success",
            None,
            &json_str(&data),
            None,
        ));
    }

    fn client_event(&mut self, frame: &Inbound<'_>) -> Option<Envelope> {
        let config = &self.hub.config;
        let rate = config.client_events_per_sec;
        if !self.client_events.take(rate, rate.max(1)) {
            self.peer.close(RATE_LIMITED);
            return None;
        }
        if !self.app.client_events {
            self.complain("Client events are not enabled for this app");
            return None;
        }
        if !names::valid_event_name(&frame.event, config.max_event_name_len) {
            self.complain("Invalid event name");
            return None;
        }
        let Some(channel) = frame.channel.as_deref() else {
            self.complain("A client event needs a channel");
            return None;
        };
        // Only an answered subscription: one the cluster is still deciding on may be refused.
        let Some(user_id) = self.peer.answered_member(channel) else {
            self.complain("A client event needs a subscription to its channel");
            return None;
        };
        let allowed = matches!(
            ChannelKind::of(channel),
            ChannelKind::Private | ChannelKind::Presence
        ) && !channel.starts_with(CHAT_CHANNEL_PREFIX);
        if !allowed {
            self.complain("Client events are not allowed on this channel");
            return None;
        }
        let data = frame.data.map_or("null", RawValue::get);
        if data.len() > config.max_payload_bytes {
            self.complain("Event data is too large");
            return None;
        }
        Some(Envelope {
            app_id: self.app.id.clone(),
            channels: vec![channel.to_owned()],
            event: frame.event.clone(),
            data: data.to_owned(),
            exclude_socket_id: Some(self.socket_id.to_string()),
            user_id,
        })
    }

    fn leave_everything(&mut self) {
        for channel in self.peer.channels() {
            self.hub.leave(&self.room, &self.peer, &channel);
        }
        if let Some(user) = self.user.take() {
            self.room.sign_out(&user, &self.peer);
        }
    }
}

async fn write_frames(ws: &mut WebSocket, frames: VecDeque<Frame>, limit: Duration) -> bool {
    let write = async {
        for frame in frames {
            ws.send(Message::Text(frame)).await?;
        }
        Ok::<(), axum::Error>(())
    };
    matches!(timeout(limit, write).await, Ok(Ok(())))
}

/// Sends `pusher:error` and a close frame with its code, then waits briefly for the client's close.
pub(crate) async fn close_with(
    ws: &mut WebSocket,
    close: Close,
    write_limit: Duration,
    grace: Duration,
) {
    let send = async {
        ws.send(Message::Text(protocol::error(
            Some(close.code),
            close.message,
        )))
        .await?;
        ws.send(Message::Close(Some(CloseFrame {
            code: close.code,
            reason: close.message.into(),
        })))
        .await
    };
    if !matches!(timeout(write_limit, send).await, Ok(Ok(()))) {
        return;
    }
    let _ = timeout(grace, async {
        while let Some(Ok(message)) = ws.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

const INVALID_TEXT: Close = Close {
    code: 1007,
    message: "Text messages must be UTF-8",
};

/// The close a read error deserves, when the client can still be told.
fn close_for(error: axum::Error) -> Option<Close> {
    match error.into_inner().downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Some(MESSAGE_TOO_BIG),
        Some(tungstenite::Error::Utf8(_)) => Some(INVALID_TEXT),
        _ => None,
    }
}

/// Serves an admitted connection until it ends. Built outside the `async` block so the socket and
/// the session live in the task once (an `async fn` would keep a second copy of its arguments).
pub(crate) fn run(
    hub: Arc<Hub>,
    admission: Admission,
    ws: WebSocket,
) -> impl Future<Output = ()> + Send {
    let config = &hub.config;
    let socket_id = SocketId::random();
    let peer = Arc::new(Peer::new(
        hub.next_peer_id(),
        socket_id,
        config.outbound_queue_capacity,
    ));
    let activity = Duration::from_secs(config.activity_timeout_secs.max(1));
    let pong_wait = Duration::from_secs(config.pong_timeout_secs.max(1));
    let write_limit = Duration::from_secs(config.write_timeout_secs.max(1));
    let grace = Duration::from_millis(config.close_grace_ms);
    let mut session = Session {
        hub: Arc::clone(&hub),
        room: admission.room.clone(),
        app: admission.app.clone(),
        peer: peer.clone(),
        socket_id: socket_id.to_string().into(),
        user: None,
        inbound: Bucket::full(config.inbound_frame_burst),
        client_events: Bucket::full(config.client_events_per_sec.max(1)),
    };
    peer.push(protocol::connection_established(
        &session.socket_id,
        config.activity_timeout_secs,
    ));
    let mut ws = ws;
    async move {
        let mut last_seen = Instant::now();
        let mut awaiting_pong = false;
        // A refused message may still be partly unread in the socket.
        let mut unread = false;
        // The client sent its close frame; tungstenite has queued the echo (RFC 6455 5.5.1).
        let mut peer_closed = false;
        let idle = tokio::time::sleep(activity);
        tokio::pin!(idle);

        let ending = loop {
            // A client event to publish, awaited after the frame it came in is gone.
            let relay = tokio::select! {
                biased;
                () = peer.woken() => {
                    let pending = peer.take();
                    if !Box::pin(write_frames(&mut ws, pending.frames, write_limit)).await {
                        break None;
                    }
                    if let Some(close) = pending.close {
                        break Some(close);
                    }
                    None
                }
                message = ws.recv() => {
                    match message {
                        Some(Ok(message)) => {
                            last_seen = Instant::now();
                            awaiting_pong = false;
                            match message {
                                Message::Text(text) => session.on_text(text.as_str()),
                                Message::Binary(_) => {
                                    session.on_binary();
                                    None
                                }
                                Message::Ping(_) | Message::Pong(_) => {
                                    session.on_control();
                                    None
                                }
                                Message::Close(_) => {
                                    peer_closed = true;
                                    break None;
                                }
                            }
                        }
                        Some(Err(error)) => {
                            let close = close_for(error);
                            unread = close.is_some();
                            break close;
                        }
                        None => break None,
                    }
                }
                () = &mut idle => {
                    let now = Instant::now();
                    if awaiting_pong {
                        peer.close(PONG_MISSING);
                        idle.as_mut().reset(now + pong_wait);
                    } else if now >= last_seen + activity {
                        peer.push(protocol::ping());
                        awaiting_pong = true;
                        idle.as_mut().reset(now + pong_wait);
                    } else {
                        idle.as_mut().reset(last_seen + activity);
                    }
                    None
                }
            };
            if let Some(envelope) = relay
                && session.hub.relay(envelope).await.is_err()
            {
                session.complain("The event could not be delivered");
            }
        };
        session.leave_everything();
        // Anything still queued goes nowhere now.
        peer.close(Close {
            code: 1000,
            message: "",
        });
        if peer_closed {
            // Without this flush the queued echo never leaves, and the client sees 1006.
            let _ = timeout(
                write_limit,
                std::future::poll_fn(|cx| ws.poll_flush_unpin(cx)),
            )
            .await;
        } else if let Some(close) = ending {
            Box::pin(close_with(&mut ws, close, write_limit, grace)).await;
            if unread {
                // Closing a socket with unread input resets the connection, and the client would
                // lose our close frame: give it time to read it first.
                idle.as_mut().reset(Instant::now() + grace);
                (&mut idle).await;
            }
        }
        drop(admission);
    }
}

/// Refuses a connection the protocol's way: `pusher:error` with the code, then close.
pub(crate) async fn reject(
    mut ws: WebSocket,
    close: Close,
    write_limit: Duration,
    grace: Duration,
) {
    close_with(&mut ws, close, write_limit, grace).await;
}

#[cfg(test)]
mod tests {
    fn future_size<A, B, C, Fut, F: Fn(A, B, C) -> Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn a_connection_task_stays_small() {
        // Per-connection memory is a target (issue 3: <= 4 KiB a connection); the task is the
        // largest part of it after the socket buffers.
        let size = future_size(super::run);
        assert!(size <= 1152, "the connection task grew to {size} bytes");
    }
}
