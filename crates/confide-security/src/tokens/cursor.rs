//! Page cursors: an opaque position in one listing, `<base64url position>.<base64url MAC>`. The MAC
//! covers the listing's scope too, so a cursor made up, altered, or taken from another listing
//! (another bot's chat log, another chat's messages) is refused rather than read.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::signed::Mac;

const DOMAIN: &[u8] = b"confide-page-cursor-v1";
const MAX_CURSOR_LEN: usize = 512;
const MAX_POSITION_BYTES: usize = 256;

fn cursor_mac(key: &[u8; 32], scope: &str, position: &str) -> aws_lc_rs::hmac::Tag {
    let mut mac = Mac::new(key, DOMAIN);
    mac.field(scope.as_bytes()).field(position.as_bytes());
    mac.finish()
}

/// A cursor for `position` in the listing named by `scope` (e.g. `chats:<bot id>`).
pub fn issue_cursor(key: &[u8; 32], scope: &str, position: &str) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(position),
        URL_SAFE_NO_PAD.encode(cursor_mac(key, scope, position).as_ref())
    )
}

/// The position a cursor holds, if we issued it for this `scope`.
pub fn verify_cursor(key: &[u8; 32], scope: &str, cursor: &str) -> Option<String> {
    if cursor.len() > MAX_CURSOR_LEN {
        return None;
    }
    let (position, mac) = cursor.split_once('.')?;
    let position = String::from_utf8(URL_SAFE_NO_PAD.decode(position).ok()?).ok()?;
    if position.len() > MAX_POSITION_BYTES {
        return None;
    }
    let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
    let expected = cursor_mac(key, scope, &position);
    super::constant_time_eq(expected.as_ref(), &mac).then_some(position)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [9; 32];

    #[test]
    fn a_cursor_gives_back_its_position_in_its_own_listing_only() {
        let cursor = issue_cursor(&KEY, "chats:bot-1", "1750000000000.abc");
        assert_eq!(
            verify_cursor(&KEY, "chats:bot-1", &cursor).as_deref(),
            Some("1750000000000.abc")
        );
        assert_eq!(verify_cursor(&KEY, "chats:bot-2", &cursor), None);
        assert_eq!(verify_cursor(&[8; 32], "chats:bot-1", &cursor), None);
    }

    #[test]
    fn altered_or_garbage_cursors_are_refused() {
        let cursor = issue_cursor(&KEY, "s", "1750000000000.abc");
        let (_, mac) = cursor.split_once('.').unwrap();
        let forged = format!("{}.{mac}", URL_SAFE_NO_PAD.encode("1750000000001.abc"));
        for bad in [
            forged.as_str(),
            "",
            ".",
            "garbage",
            "a.b.c",
            &cursor[..cursor.len() - 1],
            &format!("{cursor}A"),
        ] {
            assert_eq!(verify_cursor(&KEY, "s", bad), None, "{bad:?}");
        }
        assert_eq!(verify_cursor(&KEY, "s", &"A".repeat(4096)), None);
    }
}
