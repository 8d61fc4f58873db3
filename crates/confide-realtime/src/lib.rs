//! The Pusher-protocol hub.
