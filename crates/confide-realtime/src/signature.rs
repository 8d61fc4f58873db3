//! The signatures of the Pusher protocol, as pure functions. The web layer's channel auth endpoint
//! signs with these; the hub verifies with them.
//!
//! Every signature is hex(HMAC-SHA256(app secret, message)); an auth string is `key:hexsig`.

use base64::Engine as _;
use md5::Md5;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const BLOCK: usize = 64;

/// HMAC-SHA256 (RFC 2104) over the concatenation of `parts`. Written out over `sha2` because it
/// cannot fail for any key length, so no error path can ever produce a guessable "signature".
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        let digest = Sha256::digest(key);
        block[..digest.len()].copy_from_slice(&digest);
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut ipad = [0x36u8; BLOCK];
    let mut opad = [0x5cu8; BLOCK];
    for ((i, o), k) in ipad.iter_mut().zip(opad.iter_mut()).zip(block.iter()) {
        *i ^= k;
        *o ^= k;
    }
    let mut inner = Sha256::new();
    inner.update(ipad);
    for part in parts {
        inner.update(part);
    }
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(opad);
    outer.update(inner);
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer.finalize());
    out
}

fn sign_parts(secret: &SecretString, parts: &[&str]) -> String {
    let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    hex::encode(hmac_sha256(secret.expose_secret().as_bytes(), &bytes))
}

/// hex(HMAC-SHA256(secret, message)).
pub fn sign(secret: &SecretString, message: &str) -> String {
    sign_parts(secret, &[message])
}

/// Signature of a private (or `private-encrypted-`) channel subscription: `socket_id:channel`.
pub fn private_channel(secret: &SecretString, socket_id: &str, channel: &str) -> String {
    sign_parts(secret, &[socket_id, ":", channel])
}

/// Signature of a presence channel subscription: `socket_id:channel:channel_data`, over the exact
/// `channel_data` string the client will send.
pub fn presence_channel(
    secret: &SecretString,
    socket_id: &str,
    channel: &str,
    channel_data: &str,
) -> String {
    sign_parts(secret, &[socket_id, ":", channel, ":", channel_data])
}

/// Signature of a user sign-in: `socket_id::user::user_data`.
pub fn user_signin(secret: &SecretString, socket_id: &str, user_data: &str) -> String {
    sign_parts(secret, &[socket_id, "::user::", user_data])
}

/// The `auth` value a client sends: `key:hexsig`.
pub fn auth_string(key: &str, hex_signature: &str) -> String {
    format!("{key}:{hex_signature}")
}

/// Whether `auth` equals `key:expected_hex`, compared in constant time.
pub fn auth_matches(auth: &str, key: &str, expected_hex: &str) -> bool {
    let expected = auth_string(key, expected_hex);
    constant_time_eq(auth.as_bytes(), expected.as_bytes())
}

/// Constant-time equality (the length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The `shared_secret` of a `private-encrypted-` channel's auth response:
/// base64(SHA-256(channel_name ‖ 32-byte master key)), as Pusher's server SDKs compute it.
pub fn shared_secret(channel: &str, master_key: &[u8; 32]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(channel.as_bytes());
    hasher.update(master_key);
    base64::engine::general_purpose::STANDARD.encode(hasher.finalize())
}

/// hex(MD5(body)): the `body_md5` query parameter of an HTTP API request.
pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// The string an HTTP API request signs: `METHOD\npath\nk=v&k=v`, the query parameters without
/// `auth_signature`, keys lowercased and sorted, values as they were decoded.
pub fn api_string_to_sign(method: &str, path: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, &str)> = params
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .filter(|(k, _)| k != "auth_signature")
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!("{}\n{}\n{}", method.to_ascii_uppercase(), path, query)
}

/// `auth_signature` of an HTTP API request.
pub fn api_signature(
    secret: &SecretString,
    method: &str,
    path: &str,
    params: &[(String, String)],
) -> String {
    sign(secret, &api_string_to_sign(method, path, params))
}

/// `(name, value)` pairs of a signed HTTP API query for `method path` with `body` (empty for none)
/// at `timestamp` (Unix seconds), `extra` parameters included, `auth_signature` last. For clients
/// and tests; values are not percent-encoded.
pub fn signed_api_query(
    key: &str,
    secret: &SecretString,
    method: &str,
    path: &str,
    body: &[u8],
    timestamp: u64,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = vec![
        ("auth_key".into(), key.into()),
        ("auth_timestamp".into(), timestamp.to_string()),
        ("auth_version".into(), "1.0".into()),
    ];
    if !body.is_empty() {
        params.push(("body_md5".into(), body_md5(body)));
    }
    params.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let signature = api_signature(secret, method, path, &params);
    params.push(("auth_signature".into(), signature));
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 and test case 6 (a key longer than the block).
        assert_eq!(
            sign(&secret("Jefe"), "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let long_key = SecretString::from(String::from_utf8_lossy(&[0xaa; 131]).into_owned());
        // The lossy conversion changes the bytes, so compare against the reference implementation.
        let reference = {
            use hmac::{Hmac, KeyInit, Mac};
            let mut mac =
                <Hmac<Sha256> as KeyInit>::new_from_slice(long_key.expose_secret().as_bytes())
                    .unwrap();
            mac.update(b"Test Using Larger Than Block-Size Key - Hash Key First");
            hex::encode(mac.finalize().into_bytes())
        };
        assert_eq!(
            sign(
                &long_key,
                "Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            reference
        );
    }

    #[test]
    fn pusher_documentation_example_signs_a_private_channel() {
        // From Pusher's "authorizing users" documentation.
        let secret = secret("7ad3773142a6692b25b8");
        let sig = private_channel(&secret, "1234.1234", "private-foobar");
        assert_eq!(
            sig,
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert!(auth_matches(
            &format!("278d425bdf160c739803:{sig}"),
            "278d425bdf160c739803",
            &sig
        ));
        assert!(!auth_matches(
            "278d425bdf160c739803:",
            "278d425bdf160c739803",
            &sig
        ));
    }

    #[test]
    fn presence_and_signin_sign_their_documented_strings() {
        let s = secret("7ad3773142a6692b25b8");
        assert_eq!(
            presence_channel(&s, "1234.1234", "presence-foobar", "{\"user_id\":10}"),
            sign(&s, "1234.1234:presence-foobar:{\"user_id\":10}")
        );
        assert_eq!(
            user_signin(&s, "1234.1234", "{\"id\":\"1\"}"),
            sign(&s, "1234.1234::user::{\"id\":\"1\"}")
        );
    }

    #[test]
    fn api_requests_sign_the_sorted_query_without_the_signature() {
        let params = vec![
            ("auth_version".to_owned(), "1.0".to_owned()),
            ("auth_key".to_owned(), "278d425bdf160c739803".to_owned()),
            (
                "body_md5".to_owned(),
                "ec365a775a4cd0599faeb73354201b6f".to_owned(),
            ),
            ("auth_timestamp".to_owned(), "1353088179".to_owned()),
            ("auth_signature".to_owned(), "ignored".to_owned()),
        ];
        assert_eq!(
            api_string_to_sign("post", "/apps/3/events", &params),
            "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
        );
        // Pusher's documented example (REST API reference, "Generating authentication signatures").
        assert_eq!(
            body_md5(br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#),
            "ec365a775a4cd0599faeb73354201b6f"
        );
        assert_eq!(
            api_signature(
                &secret("7ad3773142a6692b25b8"),
                "POST",
                "/apps/3/events",
                &params
            ),
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    #[test]
    fn shared_secret_is_base64_of_sha256_of_channel_then_key() {
        let key = [7u8; 32];
        let mut hasher = Sha256::new();
        hasher.update(b"private-encrypted-x");
        hasher.update(key);
        let expected = base64::engine::general_purpose::STANDARD.encode(hasher.finalize());
        assert_eq!(shared_secret("private-encrypted-x", &key), expected);
        assert_eq!(shared_secret("private-encrypted-x", &key).len(), 44);
    }
}
