//! Bytes to text: a byte order mark decides (UTF-8, UTF-16LE, UTF-16BE), else UTF-8 with
//! replacement characters for invalid sequences. HTML may also name its charset in a `<meta>`.

use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE, WINDOWS_1252, X_USER_DEFINED};

/// Text files, Markdown and CSV.
pub(crate) fn decode(bytes: &[u8]) -> String {
    match Encoding::for_bom(bytes) {
        Some((encoding, bom)) => decode_with(encoding, &bytes[bom..]),
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// HTML files: a byte order mark, else a charset declared in the first 1024 bytes (as browsers
/// pre-scan), else UTF-8.
pub(crate) fn decode_html(bytes: &[u8]) -> String {
    if let Some((encoding, bom)) = Encoding::for_bom(bytes) {
        return decode_with(encoding, &bytes[bom..]);
    }
    match declared_charset(&bytes[..bytes.len().min(1024)]) {
        Some(encoding) => decode_with(encoding, bytes),
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

fn decode_with(encoding: &'static Encoding, bytes: &[u8]) -> String {
    encoding.decode_without_bom_handling(bytes).0.into_owned()
}

/// `charset=LABEL` (as in `<meta charset="..">` or `content="text/html; charset=.."`).
fn declared_charset(head: &[u8]) -> Option<&'static Encoding> {
    const NEEDLE: &[u8] = b"charset";
    let at = head
        .windows(NEEDLE.len())
        .position(|window| window.eq_ignore_ascii_case(NEEDLE))?;
    let rest = &head[at + NEEDLE.len()..];
    let rest = trim_start(rest).strip_prefix(b"=")?;
    let rest = trim_start(rest);
    let rest = rest
        .strip_prefix(b"\"")
        .or_else(|| rest.strip_prefix(b"'"))
        .unwrap_or(rest);
    let end = rest
        .iter()
        .position(|b| matches!(b, b'"' | b'\'' | b';' | b'>' | b'/') || b.is_ascii_whitespace())
        .unwrap_or(rest.len());
    let encoding = Encoding::for_label(&rest[..end])?;
    // As the HTML standard's pre-scan: a declared UTF-16 means UTF-8 (the bytes were not
    // UTF-16, or there would have been a byte order mark), x-user-defined means windows-1252.
    Some(if encoding == UTF_16BE || encoding == UTF_16LE {
        UTF_8
    } else if encoding == X_USER_DEFINED {
        WINDOWS_1252
    } else {
        encoding
    })
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_order_mark_decides_the_encoding_and_is_dropped() {
        assert_eq!(decode(b"\xEF\xBB\xBFcaf\xC3\xA9"), "café");
        assert_eq!(decode(b"\xFF\xFEc\0a\0f\0\xE9\0"), "café");
        assert_eq!(decode(b"\xFE\xFF\0c\0a\0f\0\xE9"), "café");
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(decode(b"caf\xE9!"), "caf\u{FFFD}!");
    }

    #[test]
    fn html_may_declare_its_charset() {
        assert_eq!(
            decode_html(b"<meta charset=\"windows-1252\"><p>caf\xE9"),
            "<meta charset=\"windows-1252\"><p>café"
        );
        assert_eq!(
            decode_html(
                b"<meta http-equiv=content-type content='text/html; CHARSET=iso-8859-1'>\xE9"
            ),
            "<meta http-equiv=content-type content='text/html; CHARSET=iso-8859-1'>é"
        );
        // A declared UTF-16 without a byte order mark is read as UTF-8.
        assert_eq!(
            decode_html(b"<meta charset=utf-16>caf\xC3\xA9"),
            "<meta charset=utf-16>café"
        );
        assert_eq!(
            decode_html(b"<meta charset=nonsense>\xE9"),
            "<meta charset=nonsense>\u{FFFD}"
        );
    }
}
