use std::collections::HashSet;
use std::sync::LazyLock;

/// Fewest characters (Unicode scalar values) a new password may have (OWASP ASVS V2.1.1).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Most characters a new password may have: long passphrases are welcome (ASVS V2.1.2).
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Why a new password was refused; the web layer shows `message()` and returns `code()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PolicyViolation {
    /// Fewer than [`MIN_PASSWORD_CHARS`] characters.
    #[error("The password must be at least 12 characters long.")]
    TooShort,
    /// More than [`MAX_PASSWORD_CHARS`] characters.
    #[error("The password must be at most 128 characters long.")]
    TooLong,
    /// On the list of commonly used passwords, so the first ones an attacker tries.
    #[error("This password is too common. Choose one that is harder to guess.")]
    Common,
}

impl PolicyViolation {
    /// Stable snake_case code that API clients can rely on.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyViolation::TooShort => "password_too_short",
            PolicyViolation::TooLong => "password_too_long",
            PolicyViolation::Common => "password_too_common",
        }
    }

    /// Message a person can act on.
    pub fn message(&self) -> &'static str {
        match self {
            PolicyViolation::TooShort => "The password must be at least 12 characters long.",
            PolicyViolation::TooLong => "The password must be at most 128 characters long.",
            PolicyViolation::Common => {
                "This password is too common. Choose one that is harder to guess."
            }
        }
    }
}

static COMMON_PASSWORDS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    include_str!("../../data/common-passwords.txt")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with("# "))
        .map(str::to_lowercase)
        .collect()
});

/// Checks a new password against OWASP ASVS V2: length only, no composition rules, and not a
/// commonly used password. Any Unicode is allowed and nothing is truncated.
pub fn check_policy(password: &str) -> Result<(), PolicyViolation> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(PolicyViolation::TooShort);
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(PolicyViolation::TooLong);
    }
    let lower = password.to_lowercase();
    let mut distinct = lower.chars();
    let first = distinct.next();
    let one_repeated_character = distinct.all(|c| Some(c) == first);
    if one_repeated_character || COMMON_PASSWORDS.contains(&lower) {
        return Err(PolicyViolation::Common);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_unusual_passphrase_is_accepted() {
        assert_eq!(check_policy("purple tractor eats quiet moons"), Ok(()));
    }

    #[test]
    fn an_eleven_character_password_is_too_short() {
        assert_eq!(check_policy("abcdefghijk"), Err(PolicyViolation::TooShort));
        assert_eq!(check_policy(""), Err(PolicyViolation::TooShort));
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        // 11 characters but 33 bytes: still too short.
        assert_eq!(
            check_policy("日本語日本語日本語日本"),
            Err(PolicyViolation::TooShort)
        );
        // 12 characters of any script are enough.
        assert_eq!(
            check_policy("日本語のパスワードです"),
            Err(PolicyViolation::TooShort)
        );
        assert_eq!(check_policy("日本語のパスワードですよ"), Ok(()));
        assert_eq!(check_policy("🔐🦀🌍🎲🎯🧩🪐🛸🌋🍄🎻🧭"), Ok(()));
    }

    #[test]
    fn passwords_up_to_128_characters_are_accepted_and_longer_ones_refused() {
        let longest: String = "ab cd ef gh ".repeat(11)[..128].to_string();
        assert_eq!(longest.chars().count(), 128);
        assert_eq!(check_policy(&longest), Ok(()));
        let too_long = format!("{longest}x");
        assert_eq!(check_policy(&too_long), Err(PolicyViolation::TooLong));
        assert_eq!(
            check_policy(&"é".repeat(129)),
            Err(PolicyViolation::TooLong)
        );
    }

    #[test]
    fn no_composition_rules_apply() {
        assert_eq!(check_policy("only lowercase letters here"), Ok(()));
        assert_eq!(check_policy("839274619283746"), Ok(()));
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        for common in [
            "password1234",
            "123456789012",
            "qwertyuiopas",
            "iloveyou1234",
            "PassWord1234",
            "QWERTY123456",
            "1qaz2wsx3edc",
            "correct horse battery staple",
        ] {
            assert_eq!(
                check_policy(common),
                Err(PolicyViolation::Common),
                "{common} should be refused"
            );
        }
    }

    #[test]
    fn a_single_repeated_character_is_refused_as_common() {
        assert_eq!(
            check_policy("zzzzzzzzzzzzzzzzzz"),
            Err(PolicyViolation::Common)
        );
        assert_eq!(check_policy("ÉÉÉÉÉÉÉÉÉÉÉÉéé"), Err(PolicyViolation::Common));
    }

    #[test]
    fn the_common_password_list_is_large_and_clean() {
        assert!(COMMON_PASSWORDS.len() > 1000);
        assert!(
            COMMON_PASSWORDS
                .iter()
                .all(|p| p.chars().count() >= MIN_PASSWORD_CHARS)
        );
    }

    #[test]
    fn each_violation_has_a_stable_code_and_a_message() {
        assert_eq!(PolicyViolation::TooShort.code(), "password_too_short");
        assert_eq!(PolicyViolation::TooLong.code(), "password_too_long");
        assert_eq!(PolicyViolation::Common.code(), "password_too_common");
        for v in [
            PolicyViolation::TooShort,
            PolicyViolation::TooLong,
            PolicyViolation::Common,
        ] {
            assert_eq!(v.to_string(), v.message());
        }
    }
}
