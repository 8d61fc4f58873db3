//! Query strings: percent-decoded pairs, a repeated key refused.

/// Why a query string was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum QueryError {
    Malformed,
    Repeated(String),
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes (a `+` stays a `+`: Pusher's SDKs send values unencoded).
fn decode(s: &str) -> Result<String, QueryError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(QueryError::Malformed),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| QueryError::Malformed)
}

/// The pairs of a query string, in order. Keys that repeat (ignoring ASCII case) are refused:
/// which one was signed would be ambiguous.
pub(crate) fn parse(query: &str) -> Result<Vec<(String, String)>, QueryError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = decode(k)?;
        let v = decode(v)?;
        if pairs.iter().any(|(seen, _)| seen.eq_ignore_ascii_case(&k)) {
            return Err(QueryError::Repeated(k));
        }
        pairs.push((k, v));
    }
    Ok(pairs)
}

pub(crate) fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_decoded_and_repeats_refused() {
        let pairs = parse("a=1&info=user_count%2Csubscription_count&b=&c").unwrap();
        assert_eq!(get(&pairs, "info"), Some("user_count,subscription_count"));
        assert_eq!(get(&pairs, "b"), Some(""));
        assert_eq!(get(&pairs, "c"), Some(""));
        assert_eq!(parse("a=1&A=2"), Err(QueryError::Repeated("A".into())));
        assert_eq!(parse("a=%zz"), Err(QueryError::Malformed));
        assert_eq!(parse("a=%ff"), Err(QueryError::Malformed));
        assert_eq!(parse("a=%4"), Err(QueryError::Malformed));
    }
}
