//! Limits and timings of the hub. The defaults follow Pusher's documented limits.

/// Settings of a [`crate::Hub`].
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Seconds of client silence before the server pings; also sent in `connection_established`.
    pub activity_timeout_secs: u64,
    /// Seconds to wait for any frame after a server ping before closing with 4201.
    pub pong_timeout_secs: u64,
    /// Seconds one outbound write may take before the connection is dropped as dead.
    pub write_timeout_secs: u64,
    /// Milliseconds to wait for the client's close frame after ours.
    pub close_grace_ms: u64,
    /// Connections on this node (handshakes included); above it: 4100.
    pub max_connections: usize,
    /// Connections from one client address; above it: 4100.
    pub max_connections_per_ip: usize,
    /// Connections of one app: on every node when the broker shares state (Redis), else on
    /// this node; above it: 4004.
    pub max_connections_per_app: usize,
    /// Sustained inbound frames per second and connection; above it: 4301.
    pub max_inbound_frames_per_sec: u32,
    /// Inbound frames a connection may send at once: above `max_channels_per_connection`, so a
    /// reconnecting client can resubscribe to all its channels in one go.
    pub inbound_frame_burst: u32,
    /// Client events per second and connection (Pusher: 10); above it: 4301.
    pub client_events_per_sec: u32,
    /// Messages waiting for one connection; a consumer that falls further behind is closed (4100).
    pub outbound_queue_capacity: usize,
    /// Event data bytes (Pusher: 10 KB).
    pub max_payload_bytes: usize,
    /// Members of one presence channel, across nodes like the per-app quota (Pusher: 100).
    pub presence_max_members: usize,
    /// Bytes of a presence member's `user_info` (Pusher: 1 KB).
    pub max_user_info_bytes: usize,
    /// Characters of a user id (presence and sign-in).
    pub max_user_id_len: usize,
    /// Characters of a channel name.
    pub max_channel_name_len: usize,
    /// Characters of an event name.
    pub max_event_name_len: usize,
    /// Channels one trigger may name.
    pub max_channels_per_trigger: usize,
    /// Events in one `batch_events` request.
    pub max_batch_events: usize,
    /// Channels one connection may be subscribed to at once.
    pub max_channels_per_connection: usize,
    /// Seconds an HTTP API request's `auth_timestamp` may be away from now, either way.
    pub signature_window_secs: u64,
    /// Signatures remembered to refuse replays; when full of live entries, requests get 429. A
    /// signature is kept for about `signature_window_secs`, so this over the window is the signed
    /// request rate the HTTP API sustains (4,000,000 / 600 s: 6,666/s, some 15 bytes each).
    pub replay_cache_capacity: usize,
    /// Bytes of an HTTP API request body.
    pub max_http_body_bytes: usize,
    /// Initial read buffer of a WebSocket (grows for larger frames).
    pub ws_read_buffer_size: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            activity_timeout_secs: 120,
            pong_timeout_secs: 30,
            write_timeout_secs: 10,
            close_grace_ms: 2_000,
            max_connections: 50_000,
            max_connections_per_ip: 200,
            max_connections_per_app: 20_000,
            max_inbound_frames_per_sec: 20,
            inbound_frame_burst: 60,
            client_events_per_sec: 10,
            outbound_queue_capacity: 64,
            max_payload_bytes: 10 * 1024,
            presence_max_members: 100,
            max_user_info_bytes: 1024,
            max_user_id_len: 128,
            max_channel_name_len: 200,
            max_event_name_len: 200,
            max_channels_per_trigger: 100,
            max_batch_events: 10,
            max_channels_per_connection: 50,
            signature_window_secs: 600,
            replay_cache_capacity: 4_000_000,
            max_http_body_bytes: 256 * 1024,
            ws_read_buffer_size: 512,
        }
    }
}

impl HubConfig {
    /// The largest WebSocket message accepted: a full payload plus the envelope around it
    /// (event and channel names, presence `channel_data`, JSON escaping).
    pub(crate) fn max_ws_message_bytes(&self) -> usize {
        self.max_payload_bytes + self.max_user_info_bytes + 4096
    }
}
