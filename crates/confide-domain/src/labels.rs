//! Conversation labels: short tags that operators put on chats to find them again in the chat log.

use std::collections::BTreeSet;
use std::fmt;

/// Labels one conversation carries at most.
pub const MAX_LABELS: usize = 20;
/// Characters in one label at most, before and after normalization.
pub const MAX_LABEL_CHARS: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("a label is 1 to 40 characters")]
    Length,
    #[error("a label holds only letters, digits, spaces, - and _")]
    Characters,
    #[error("a conversation carries at most 20 labels")]
    TooMany,
}

impl LabelError {
    pub fn code(self) -> &'static str {
        match self {
            LabelError::Length | LabelError::Characters => "invalid_label",
            LabelError::TooMany => "too_many_labels",
        }
    }
}

/// One label, normalized: trimmed, inner runs of spaces made one, lower-case. Letters and digits
/// are those of any script.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChatLabel(String);

impl ChatLabel {
    pub fn parse(raw: &str) -> Result<ChatLabel, LabelError> {
        if raw.chars().count() > MAX_LABEL_CHARS {
            return Err(LabelError::Length);
        }
        let normalized = raw
            .split(' ')
            .filter(|word| !word.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        // Checked after lower-casing, which can add characters: every stored label parses again.
        let length = normalized.chars().count();
        if length == 0 || length > MAX_LABEL_CHARS {
            return Err(LabelError::Length);
        }
        if !normalized
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        {
            return Err(LabelError::Characters);
        }
        Ok(ChatLabel(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Display for ChatLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A set of labels: each one parsed, the same label (after normalization) kept once, sorted;
/// at most [`MAX_LABELS`].
pub fn parse_labels<'a>(
    raw: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<ChatLabel>, LabelError> {
    let mut labels = BTreeSet::new();
    for text in raw {
        labels.insert(ChatLabel::parse(text)?);
        if labels.len() > MAX_LABELS {
            return Err(LabelError::TooMany);
        }
    }
    Ok(labels.into_iter().collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn texts(labels: &[ChatLabel]) -> Vec<&str> {
        labels.iter().map(ChatLabel::as_str).collect()
    }

    #[test]
    fn labels_are_trimmed_lower_cased_and_their_spaces_collapsed() {
        for (raw, expected) in [
            ("VIP", "vip"),
            ("  Needs   follow-up ", "needs follow-up"),
            ("order_42", "order_42"),
            ("Kundeservice Ø", "kundeservice ø"),
            ("x", "x"),
        ] {
            assert_eq!(ChatLabel::parse(raw).unwrap().as_str(), expected, "{raw:?}");
        }
    }

    #[test]
    fn empty_long_or_punctuated_labels_are_refused() {
        for raw in [
            "",
            "   ",
            "a,b",
            "tab\there",
            "emoji 😀",
            "semi;colon",
            "new\nline",
        ] {
            assert!(ChatLabel::parse(raw).is_err(), "{raw:?}");
        }
        assert_eq!(ChatLabel::parse(&"a".repeat(41)), Err(LabelError::Length));
        assert_eq!(
            ChatLabel::parse(&"é".repeat(40)).unwrap().as_str(),
            "é".repeat(40)
        );
        // Forty characters after trimming is not enough: the raw text is bounded too.
        assert_eq!(
            ChatLabel::parse(&format!(" {}", "a".repeat(40))),
            Err(LabelError::Length)
        );
    }

    #[test]
    fn a_normalized_label_parses_to_itself() {
        for raw in ["İstanbul", "Straße", "ÅÄÖ team"] {
            if let Ok(label) = ChatLabel::parse(raw) {
                assert_eq!(ChatLabel::parse(label.as_str()), Ok(label.clone()));
            }
        }
    }

    #[test]
    fn a_set_drops_duplicates_and_holds_at_most_twenty() {
        let labels = parse_labels(["b", "A", "a", " B "]).unwrap();
        assert_eq!(texts(&labels), ["a", "b"]);
        let twenty: Vec<String> = (0..20).map(|i| format!("l{i}")).collect();
        assert_eq!(
            parse_labels(twenty.iter().map(String::as_str))
                .unwrap()
                .len(),
            20
        );
        let mut many = twenty.clone();
        many.push("one more".to_owned());
        assert_eq!(
            parse_labels(many.iter().map(String::as_str)),
            Err(LabelError::TooMany)
        );
        // Repeats do not count twice.
        let mut repeated = twenty;
        repeated.push("L0".to_owned());
        assert!(parse_labels(repeated.iter().map(String::as_str)).is_ok());
    }
}
