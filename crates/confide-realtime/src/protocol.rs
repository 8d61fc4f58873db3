//! Frames of the Pusher protocol: serialized once, shared by every recipient.

use axum::extract::ws::Utf8Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

/// One serialized text frame; cloning shares the bytes.
pub(crate) type Frame = Utf8Bytes;

/// Appends `s` as a JSON string literal.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => Some(""),
            _ => None,
        };
        let Some(escape) = escape else { continue };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// `s` as a JSON string literal.
pub(crate) fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_str(&mut out, s);
    out
}

/// `{"event":E,"channel":C,"data":D,"user_id":U}`; `data_json` is already JSON text.
pub(crate) fn event_frame(
    event: &str,
    channel: Option<&str>,
    data_json: &str,
    user_id: Option<&str>,
) -> Frame {
    let mut out = String::with_capacity(
        32 + event.len()
            + channel.map_or(0, str::len)
            + data_json.len()
            + user_id.map_or(0, str::len),
    );
    out.push_str("{\"event\":");
    push_json_str(&mut out, event);
    if let Some(channel) = channel {
        out.push_str(",\"channel\":");
        push_json_str(&mut out, channel);
    }
    out.push_str(",\"data\":");
    out.push_str(data_json);
    if let Some(user_id) = user_id {
        out.push_str(",\"user_id\":");
        push_json_str(&mut out, user_id);
    }
    out.push('}');
    Frame::from(out)
}

pub(crate) fn connection_established(socket_id: &str, activity_timeout: u64) -> Frame {
    let data = format!(
        "{{\"socket_id\":{},\"activity_timeout\":{activity_timeout}}}",
        json_str(socket_id)
    );
    event_frame(
        "pusher:connection_established",
        None,
        &json_str(&data),
        None,
    )
}

/// `pusher:error`; `code` None for errors that leave the connection open.
pub(crate) fn error(code: Option<u16>, message: &str) -> Frame {
    let code = code.map_or_else(|| "null".to_owned(), |c| c.to_string());
    let data = format!("{{\"code\":{code},\"message\":{}}}", json_str(message));
    event_frame("pusher:error", None, &data, None)
}

pub(crate) fn subscription_error(channel: &str, kind: &str, message: &str, status: u16) -> Frame {
    let data = format!(
        "{{\"type\":{},\"error\":{},\"status\":{status}}}",
        json_str(kind),
        json_str(message)
    );
    event_frame("pusher:subscription_error", Some(channel), &data, None)
}

pub(crate) fn subscription_succeeded(channel: &str) -> Frame {
    event_frame(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        "\"{}\"",
        None,
    )
}

pub(crate) fn ping() -> Frame {
    Frame::from_static("{\"event\":\"pusher:ping\",\"data\":{}}")
}

pub(crate) fn pong() -> Frame {
    Frame::from_static("{\"event\":\"pusher:pong\",\"data\":{}}")
}

/// A frame sent by a client.
#[derive(Deserialize)]
pub(crate) struct Inbound<'a> {
    pub event: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
}

/// The `data` of an inbound frame as `T`: an object, or (older clients) a string holding one.
pub(crate) fn parse_data<T: DeserializeOwned>(raw: Option<&RawValue>) -> Option<T> {
    let raw = raw?.get();
    if let Ok(value) = serde_json::from_str::<T>(raw) {
        return Some(value);
    }
    let inner: String = serde_json::from_str(raw).ok()?;
    serde_json::from_str(&inner).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_json() {
        let nasty = "a\"b\\c\nd\u{1}é\u{2028}";
        let encoded = json_str(nasty);
        let back: String = serde_json::from_str(&encoded).unwrap();
        assert_eq!(back, nasty);
    }

    #[test]
    fn connection_established_carries_a_string_with_socket_id_and_timeout() {
        let frame = connection_established("12.34", 120);
        let v: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
        assert_eq!(v["event"], "pusher:connection_established");
        let data: serde_json::Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["socket_id"], "12.34");
        assert_eq!(data["activity_timeout"], 120);
    }

    #[test]
    fn data_may_be_an_object_or_an_encoded_object() {
        #[derive(Deserialize)]
        struct D {
            channel: String,
        }
        let a: Inbound = serde_json::from_str(r#"{"event":"x","data":{"channel":"c"}}"#).unwrap();
        assert_eq!(parse_data::<D>(a.data).unwrap().channel, "c");
        let b: Inbound =
            serde_json::from_str(r#"{"event":"x","data":"{\"channel\":\"c\"}"}"#).unwrap();
        assert_eq!(parse_data::<D>(b.data).unwrap().channel, "c");
        let c: Inbound = serde_json::from_str(r#"{"event":"x","data":5}"#).unwrap();
        assert!(parse_data::<D>(c.data).is_none());
    }
}
