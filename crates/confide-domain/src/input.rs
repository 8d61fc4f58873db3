//! Inputs validated when parsed: once a value has one of these types, it is known to be well formed.

use std::fmt;

use serde::Serialize;

/// Why an input was refused; `code()` is the stable error code clients see.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} must be at most {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("{field} contains control characters")]
    ControlCharacters { field: &'static str },
    #[error("not a valid email address")]
    InvalidEmail,
    #[error("{field}: {source}")]
    Markup {
        field: &'static str,
        source: crate::markup::SpelledMarkup,
    },
}

impl InputError {
    pub fn code(&self) -> &'static str {
        match self {
            InputError::Empty { .. } => "field_empty",
            InputError::TooLong { .. } => "field_too_long",
            InputError::ControlCharacters { .. } => "field_invalid_characters",
            InputError::InvalidEmail => "invalid_email",
            InputError::Markup { .. } => "markup_not_allowed",
        }
    }
}

/// The longest name or search string accepted anywhere (seed 001: length constraints on inputs).
pub const MAX_NAME_CHARS: usize = 200;

/// A display name (organization, bot, API key): plain text (markup removed, see `markup::plain`),
/// trimmed, 1..=200 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub fn parse(field: &'static str, raw: &str) -> Result<Name, InputError> {
        let plain =
            crate::markup::plain(raw).map_err(|source| InputError::Markup { field, source })?;
        let trimmed = plain.trim();
        if trimmed.is_empty() {
            return Err(InputError::Empty { field });
        }
        if trimmed.chars().count() > MAX_NAME_CHARS {
            return Err(InputError::TooLong {
                field,
                max: MAX_NAME_CHARS,
            });
        }
        // The whole input: trimming must not hide a control character at either end.
        if raw.chars().any(char::is_control) {
            return Err(InputError::ControlCharacters { field });
        }
        Ok(Name(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An email address, trimmed and lower-cased so one mailbox is one account.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

/// RFC 5321 caps a path at 254 octets.
pub const MAX_EMAIL_LEN: usize = 254;

impl Email {
    pub fn parse(raw: &str) -> Result<Email, InputError> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err(InputError::Empty { field: "email" });
        }
        if email.len() > MAX_EMAIL_LEN {
            return Err(InputError::TooLong {
                field: "email",
                max: MAX_EMAIL_LEN,
            });
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err(InputError::InvalidEmail);
        };
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.contains('@')
            && !local.chars().any(|c| c.is_control() || c.is_whitespace());
        if !domain_ok || !local_ok {
            return Err(InputError::InvalidEmail);
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Addresses are personal data: keep them out of debug output by default.
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(..)")
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// JSON Schema counts `1250.0` as an integer; serde's integer types do not. Integer body fields
/// use this so both spellings of a whole number are accepted and anything else is refused.
pub fn optional_whole_number<'de, D>(deserializer: D) -> Result<Option<u32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(n) = number.as_u64() {
        return u32::try_from(n).map(Some).map_err(D::Error::custom);
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) =>
        {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(Some(f as u32))
        }
        _ => Err(D::Error::custom("expected a whole number")),
    }
}

/// [`optional_whole_number`] for a field that must be there when it is read (with `#[serde(default)]`
/// an absent one keeps its default).
pub fn whole_number<'de, D>(deserializer: D) -> Result<u32, D::Error>
where
    D: serde::Deserializer<'de>,
{
    optional_whole_number(deserializer)?
        .ok_or_else(|| <D::Error as serde::de::Error>::custom("expected a whole number"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            Name::parse("name", "  Support bot ").map(Name::into_inner),
            Ok("Support bot".into())
        );
        assert!(Name::parse("name", "   ").is_err());
        assert!(Name::parse("name", &"x".repeat(201)).is_err());
        assert!(Name::parse("name", &"é".repeat(200)).is_ok());
        assert!(Name::parse("name", "bad\u{0}name").is_err());
        assert!(Name::parse("name", "\rname\n").is_err());
        assert!(Name::parse("name", "\tname").is_err());
    }

    #[test]
    fn names_are_plain_text() {
        let name = |raw: &str| Name::parse("name", raw).map(Name::into_inner);
        assert_eq!(name("<b>Support</b> & sales").unwrap(), "Support & sales");
        assert_eq!(name("a < b").unwrap(), "a < b");
        assert_eq!(
            name("<img src=x onerror=alert(1)>").unwrap_err().code(),
            "field_empty"
        );
        assert_eq!(
            name("&lt;script&gt;").unwrap_err().code(),
            "markup_not_allowed"
        );
    }

    #[test]
    fn emails_are_normalized() {
        assert_eq!(
            Email::parse(" Ada@Example.COM ").map(|e| e.as_str().to_owned()),
            Ok("ada@example.com".into())
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "a b@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }
}
