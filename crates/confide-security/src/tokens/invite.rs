use super::signed::{self, Mac, Unverified};

const DOMAIN: &[u8] = b"confide-invitation-v1";

fn invite_mac(key: &[u8; 32], invitation_id: &str, expires_at: i64) -> aws_lc_rs::hmac::Tag {
    let mut mac = Mac::new(key, DOMAIN);
    mac.field(invitation_id.as_bytes())
        .field(&expires_at.to_be_bytes());
    mac.finish()
}

/// A URL-safe invitation link token that proves the invitation was issued by us and expires.
pub fn issue_invite_token(key: &[u8; 32], invitation_id: &str, expires_at: i64) -> String {
    signed::encode(
        invitation_id,
        expires_at,
        &invite_mac(key, invitation_id, expires_at),
    )
}

/// The invitation id and expiry a token claims, unverified (e.g. to show a useful error page).
pub fn parse_invite_token(token: &str) -> Option<(String, i64)> {
    Unverified::parse(token).map(|t| (t.id, t.expires_at))
}

/// The invitation id if the token is authentic and unexpired at `now`; the caller still checks
/// that the invitation exists and is not used yet.
pub fn verify_invite_token(key: &[u8; 32], token: &str, now: i64) -> Option<String> {
    let token = Unverified::parse(token)?;
    let expected = invite_mac(key, &token.id, token.expires_at);
    token.is_authentic_at(&expected, now).then_some(token.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [3; 32];
    const NOW: i64 = 1_750_000_000;

    #[test]
    fn an_invitation_token_verifies_until_it_expires() {
        let token = issue_invite_token(&KEY, "0190f0b4-invite", NOW + 60);
        assert_eq!(
            parse_invite_token(&token),
            Some(("0190f0b4-invite".to_owned(), NOW + 60))
        );
        assert_eq!(
            verify_invite_token(&KEY, &token, NOW + 59).as_deref(),
            Some("0190f0b4-invite")
        );
        assert_eq!(verify_invite_token(&KEY, &token, NOW + 60), None);
    }

    #[test]
    fn an_invitation_token_signed_with_another_key_fails() {
        let token = issue_invite_token(&[4; 32], "0190f0b4-invite", NOW + 60);
        assert_eq!(verify_invite_token(&KEY, &token, NOW), None);
    }

    #[test]
    fn a_password_reset_token_is_not_an_invitation() {
        let reset = super::super::issue_reset_token(&KEY, "0190f0b4-invite", "", None, NOW + 60);
        assert_eq!(verify_invite_token(&KEY, &reset, NOW), None);
    }
}
