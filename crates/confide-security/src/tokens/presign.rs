//! Presigned download links: `<base64url principal>.<expiry>.<base64url MAC>`, bound to one file
//! and to the person who asked for it. The MAC covers the file's id (which is in the link's path,
//! not in the token), the principal and the expiry, so changing any part of a link, or using it
//! for another file, or after it expired, fails. `now` is passed in, as for the other tokens.

use super::signed::{Mac, Unverified, encode};

const DOMAIN: &[u8] = b"confide-presigned-file-v1";

fn presign_mac(
    key: &[u8; 32],
    file: &str,
    principal: &str,
    expires_at: i64,
) -> aws_lc_rs::hmac::Tag {
    let mut mac = Mac::new(key, DOMAIN);
    mac.field(file.as_bytes())
        .field(principal.as_bytes())
        .field(&expires_at.to_be_bytes());
    mac.finish()
}

/// A token letting `principal` (`user:<id>`) download `file` until `expires_at` (unix ms).
pub fn presign_file(key: &[u8; 32], file: &str, principal: &str, expires_at: i64) -> String {
    encode(
        principal,
        expires_at,
        &presign_mac(key, file, principal, expires_at),
    )
}

/// The principal a token was made for, if it is ours, for `file`, and not expired at `now`.
pub fn verify_presigned_file(key: &[u8; 32], file: &str, token: &str, now: i64) -> Option<String> {
    let token = Unverified::parse(token)?;
    let expected = presign_mac(key, file, &token.id, token.expires_at);
    token.is_authentic_at(&expected, now).then_some(token.id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];
    const NOW: i64 = 1_750_000_000_000;

    #[test]
    fn a_link_works_for_its_file_until_it_expires() {
        let token = presign_file(&KEY, "file-1", "user:alice", NOW + 60_000);
        assert_eq!(
            verify_presigned_file(&KEY, "file-1", &token, NOW).as_deref(),
            Some("user:alice")
        );
        assert_eq!(
            verify_presigned_file(&KEY, "file-1", &token, NOW + 59_999).as_deref(),
            Some("user:alice")
        );
        assert_eq!(
            verify_presigned_file(&KEY, "file-1", &token, NOW + 60_000),
            None
        );
        assert_eq!(verify_presigned_file(&KEY, "file-2", &token, NOW), None);
        assert_eq!(verify_presigned_file(&[8; 32], "file-1", &token, NOW), None);
    }

    #[test]
    fn changing_any_part_of_a_link_fails() {
        let token = presign_file(&KEY, "file-1", "user:alice", NOW + 60_000);
        let parts: Vec<&str> = token.split('.').collect();
        let other_user = presign_file(&KEY, "file-1", "user:mallory", NOW + 60_000);
        let mallory = other_user.split('.').next().unwrap();
        let forged = [
            // Someone else's name with Alice's MAC.
            format!("{mallory}.{}.{}", parts[1], parts[2]),
            // A later expiry.
            format!("{}.{}.{}", parts[0], NOW + 3_600_000, parts[2]),
            // The same expiry spelled differently.
            format!("{}.0{}.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}", parts[0], parts[1]),
            format!("{token}.x"),
            String::new(),
        ];
        for forged in forged {
            assert_eq!(
                verify_presigned_file(&KEY, "file-1", &forged, NOW),
                None,
                "{forged}"
            );
        }
        // Every single character changed.
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).unwrap();
            if changed != token {
                assert_eq!(
                    verify_presigned_file(&KEY, "file-1", &changed, NOW),
                    None,
                    "position {i}: {changed}"
                );
            }
        }
    }
}
