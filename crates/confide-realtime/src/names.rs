//! Channel and event names.

/// Channels the chat product owns: never open to client events, whatever the app allows.
pub const CHAT_CHANNEL_PREFIX: &str = "private-chat-";
/// The channel pusher-js subscribes to after sign-in to receive events sent to one user.
pub const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// What a channel's name makes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    Public,
    Private,
    /// `private-encrypted-`: authorized like private; payloads are end-to-end encrypted and relayed.
    PrivateEncrypted,
    Presence,
    /// `#server-to-user-{user_id}`: only the socket signed in as that user.
    ServerToUser,
}

impl ChannelKind {
    pub fn of(name: &str) -> ChannelKind {
        if name.starts_with(SERVER_TO_USER_PREFIX) {
            ChannelKind::ServerToUser
        } else if name.starts_with("presence-") {
            ChannelKind::Presence
        } else if name.starts_with("private-encrypted-") {
            ChannelKind::PrivateEncrypted
        } else if name.starts_with("private-") {
            ChannelKind::Private
        } else {
            ChannelKind::Public
        }
    }
}

fn allowed_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=' | b'@' | b',' | b'.' | b';')
}

/// `[A-Za-z0-9_\-=@,.;]{1,max}`, or `#server-to-user-` followed by such characters.
pub fn valid_channel_name(name: &str, max_len: usize) -> bool {
    if name.is_empty() || name.len() > max_len {
        return false;
    }
    let rest = name.strip_prefix(SERVER_TO_USER_PREFIX).unwrap_or(name);
    !rest.is_empty() && rest.bytes().all(allowed_char)
}

/// A non-empty event name of at most `max_len` characters without control characters.
pub fn valid_event_name(name: &str, max_len: usize) -> bool {
    !name.is_empty() && name.chars().count() <= max_len && !name.chars().any(char::is_control)
}

/// Names a publisher may not use: they would impersonate the protocol itself.
pub fn reserved_event_name(name: &str) -> bool {
    name.starts_with("pusher:") || name.starts_with("pusher_internal:")
}

/// A socket id: `^\d+\.\d+$` with each part fitting in a u64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketId {
    pub(crate) major: u64,
    pub(crate) minor: u64,
}

impl SocketId {
    pub fn parse(s: &str) -> Option<SocketId> {
        let (a, b) = s.split_once('.')?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 19 && p.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return None;
        }
        Some(SocketId {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }

    /// A fresh unguessable id; both parts stay below 2^53 so JavaScript reads them exactly.
    pub(crate) fn random() -> SocketId {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            // The OS generator is unavailable: fall back to std's randomly keyed SipHash.
            use std::hash::{BuildHasher, Hasher};
            let state = std::collections::hash_map::RandomState::new();
            for (i, chunk) in bytes.chunks_mut(8).enumerate() {
                let mut h = state.build_hasher();
                h.write_usize(i);
                h.write_u128(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos()),
                );
                chunk.copy_from_slice(&h.finish().to_le_bytes());
            }
        }
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&bytes[..8]);
        b.copy_from_slice(&bytes[8..]);
        const MASK: u64 = (1 << 53) - 1;
        SocketId {
            major: (u64::from_le_bytes(a) & MASK) % 1_000_000_000,
            minor: u64::from_le_bytes(b) & MASK,
        }
    }
}

impl std::fmt::Display for SocketId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_follow_the_protocol() {
        assert!(valid_channel_name("private-chat-0195", 200));
        assert!(valid_channel_name("a-b_c=d@e,f.g;h", 200));
        assert!(valid_channel_name("#server-to-user-42", 200));
        assert!(!valid_channel_name("#server-to-user-", 200));
        assert!(!valid_channel_name("", 200));
        assert!(!valid_channel_name("with space", 200));
        assert!(!valid_channel_name("ünï", 200));
        assert!(!valid_channel_name("#other", 200));
        assert!(!valid_channel_name(&"a".repeat(201), 200));
        assert!(valid_channel_name(&"a".repeat(200), 200));
    }

    #[test]
    fn socket_ids_round_trip() {
        let id = SocketId::random();
        assert_eq!(SocketId::parse(&id.to_string()), Some(id));
        assert_eq!(
            SocketId::parse("1.2"),
            Some(SocketId { major: 1, minor: 2 })
        );
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "a.1",
            "1.2.3",
            "-1.2",
            "99999999999999999999.1",
        ] {
            assert_eq!(SocketId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn kinds_come_from_prefixes() {
        assert_eq!(
            ChannelKind::of("private-encrypted-x"),
            ChannelKind::PrivateEncrypted
        );
        assert_eq!(ChannelKind::of("private-chat-x"), ChannelKind::Private);
        assert_eq!(ChannelKind::of("presence-x"), ChannelKind::Presence);
        assert_eq!(
            ChannelKind::of("#server-to-user-1"),
            ChannelKind::ServerToUser
        );
        assert_eq!(ChannelKind::of("news"), ChannelKind::Public);
    }
}
