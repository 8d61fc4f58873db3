//! Pattern dialogues (Kindly's semantics): regular expressions tried top to bottom; the first that
//! matches answers, and its first capture group is stored in the conversation's context memory
//! under the dialogue's key. Replies may use `{key}` placeholders from context memory; a reply
//! whose keys are not all known is skipped in favour of the next one.
//!
//! Patterns run on Rust's `regex`, which matches in linear time, with compiled-size limits, so no
//! pattern or input can stall a reply (no catastrophic backtracking exists in this engine).

use std::collections::BTreeMap;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::DialogueId;

/// Patterns one dialogue may have.
pub const MAX_PATTERNS: usize = 20;
/// Characters of one pattern.
pub const MAX_PATTERN_CHARS: usize = 500;
/// Replies (alternatives) one dialogue may have.
pub const MAX_REPLIES: usize = 10;
/// Characters of one reply.
pub const MAX_REPLY_CHARS: usize = 2000;
/// Compiled program and lazy-DFA cache bounds per pattern: generous for real patterns, small
/// enough that `(a{1000}){1000}` is refused on save instead of eating memory.
const COMPILED_SIZE_LIMIT: usize = 256 * 1024;
const DFA_SIZE_LIMIT: usize = 1024 * 1024;
const NEST_LIMIT: u32 = 32;
/// Context memory: key shape and bounds.
pub const MAX_CONTEXT_KEY_CHARS: usize = 64;
pub const MAX_CONTEXT_VALUE_CHARS: usize = 1000;
pub const MAX_CONTEXT_KEYS: usize = 100;

/// Why a dialogue was refused on save; the message is for the bot builder.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DialogueError {
    #[error("pattern {index}: {reason}")]
    Pattern { index: usize, reason: String },
    #[error("sample phrase {index} in {language}: {reason}")]
    Sample {
        language: String,
        index: usize,
        reason: String,
    },
    #[error("`{0}` is not a language code (two or three lowercase letters)")]
    Language(String),
    #[error("{0}")]
    Shape(String),
}

/// Compiles one pattern within the size limits.
pub fn compile_pattern(pattern: &str) -> Result<Regex, String> {
    if pattern.is_empty() || pattern.chars().count() > MAX_PATTERN_CHARS {
        return Err(format!("a pattern is 1 to {MAX_PATTERN_CHARS} characters"));
    }
    RegexBuilder::new(pattern)
        .size_limit(COMPILED_SIZE_LIMIT)
        .dfa_size_limit(DFA_SIZE_LIMIT)
        .nest_limit(NEST_LIMIT)
        .build()
        .map_err(|err| match err {
            regex::Error::CompiledTooBig(_) => "the pattern is too large once compiled".to_owned(),
            // The syntax error's own text names the position; keep its first lines only.
            other => other
                .to_string()
                .lines()
                .take(6)
                .collect::<Vec<_>>()
                .join("\n"),
        })
}

/// A context key: letters, digits, `_`, `-`, `.`; starting with a letter.
pub fn valid_context_key(key: &str) -> bool {
    let mut chars = key.chars();
    key.chars().count() <= MAX_CONTEXT_KEY_CHARS
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Why context entries from outside (the Application API's `new_context`, a webhook's answer)
/// were refused; the message names the first bad entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("at most {MAX_CONTEXT_KEYS} keys")]
    TooManyKeys,
    #[error(
        "key {0:?}: a key is 1 to {MAX_CONTEXT_KEY_CHARS} letters, digits, _ - or ., starting with a letter"
    )]
    Key(String),
    #[error(
        "the value of {0:?}: a value is a string of at most {MAX_CONTEXT_VALUE_CHARS} characters, a number or a boolean"
    )]
    Value(String),
}

/// Context entries from outside, checked: valid keys, and values that are strings within the
/// length bound, numbers or booleans (numbers and booleans are stored as their JSON text).
pub fn context_entries(
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<(String, String)>, ContextError> {
    use serde_json::Value;
    if map.len() > MAX_CONTEXT_KEYS {
        return Err(ContextError::TooManyKeys);
    }
    // A refused key or value is echoed back; keep that short.
    let shown = |key: &str| {
        key.chars()
            .take(MAX_CONTEXT_KEY_CHARS + 1)
            .collect::<String>()
    };
    map.iter()
        .map(|(key, value)| {
            if !valid_context_key(key) {
                return Err(ContextError::Key(shown(key)));
            }
            let text = match value {
                // No NUL: PostgreSQL cannot store it.
                Value::String(text)
                    if text.chars().count() <= MAX_CONTEXT_VALUE_CHARS && !text.contains('\0') =>
                {
                    text.clone()
                }
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                _ => return Err(ContextError::Value(shown(key))),
            };
            Ok((key.clone(), text))
        })
        .collect()
}

/// Checks a dialogue's parts as the API saves them. A dialogue answers on its patterns, its
/// sample phrases (`has_samples`, checked by [`crate::samples::validate`]) or both.
pub fn validate(
    patterns: &[String],
    has_samples: bool,
    context_key: Option<&str>,
    replies: &[String],
) -> Result<(), DialogueError> {
    if patterns.len() > MAX_PATTERNS || (patterns.is_empty() && !has_samples) {
        return Err(DialogueError::Shape(format!(
            "a dialogue has 1 to {MAX_PATTERNS} patterns, sample phrases, or both"
        )));
    }
    for (index, pattern) in patterns.iter().enumerate() {
        compile_pattern(pattern).map_err(|reason| DialogueError::Pattern { index, reason })?;
    }
    if let Some(key) = context_key
        && !valid_context_key(key)
    {
        return Err(DialogueError::Shape(format!(
            "the context key is 1 to {MAX_CONTEXT_KEY_CHARS} letters, digits, _ - or ., starting with a letter"
        )));
    }
    validate_replies(replies)
}

/// Checks one list of reply alternatives (the default one, or one language's).
pub fn validate_replies(replies: &[String]) -> Result<(), DialogueError> {
    if replies.is_empty() || replies.len() > MAX_REPLIES {
        return Err(DialogueError::Shape(format!(
            "a dialogue has 1 to {MAX_REPLIES} replies"
        )));
    }
    for reply in replies {
        if reply.trim().is_empty() || reply.chars().count() > MAX_REPLY_CHARS {
            return Err(DialogueError::Shape(format!(
                "a reply is 1 to {MAX_REPLY_CHARS} characters"
            )));
        }
    }
    Ok(())
}

/// The reply alternatives as stored: trimmed and sanitized to the formatting subset; refused when
/// one is only markup the subset removes.
pub fn formatted_replies(replies: &[String]) -> Result<Vec<String>, DialogueError> {
    replies
        .iter()
        .map(|reply| {
            let formatted = crate::markup::formatted(reply.trim());
            if formatted.trim().is_empty() {
                return Err(DialogueError::Shape(
                    "a reply has no text once markup outside the formatting subset is removed"
                        .to_owned(),
                ));
            }
            Ok(formatted.trim().to_owned())
        })
        .collect()
}

/// Buttons one dialogue may offer.
pub const MAX_BUTTONS: usize = 5;
/// Characters of a button's label.
pub const MAX_BUTTON_LABEL_CHARS: usize = 40;
/// Characters of a link button's URL.
pub const MAX_BUTTON_URL_CHARS: usize = 2000;

/// A button under a reply: pressing it answers with another dialogue of the bot (`dialogue_id`),
/// asks for a human (`handover: true`, as the fallback offers), or it opens a link (`url`, http
/// or https). Exactly one of the three.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Button {
    /// Plain text, 1 to 40 characters; it is also what the visitor is shown to have said.
    #[schema(min_length = 1, max_length = 40)]
    pub label: String,
    /// The dialogue that answers when the button is pressed (one of the same bot's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialogue_id: Option<DialogueId>,
    /// An absolute http or https link the button opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2000)]
    pub url: Option<String>,
    /// Pressing asks for a human, as `POST /chat/v1/handover` does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handover: bool,
}

/// A button's label as stored: plain text of 1 to 40 characters.
pub fn button_label(raw: &str) -> Result<String, String> {
    let label = crate::markup::plain(raw.trim())
        .map_err(|err| err.to_string())?
        .trim()
        .to_owned();
    if label.is_empty()
        || label.chars().count() > MAX_BUTTON_LABEL_CHARS
        || label.chars().any(char::is_control)
    {
        return Err(format!(
            "a label is 1 to {MAX_BUTTON_LABEL_CHARS} characters of text"
        ));
    }
    Ok(label)
}

/// The buttons as stored: labels plain text, each either a dialogue or an http(s) link. Whether a
/// dialogue is the bot's is the caller's to check (it has the store).
pub fn checked_buttons(buttons: &[Button]) -> Result<Vec<Button>, DialogueError> {
    if buttons.len() > MAX_BUTTONS {
        return Err(DialogueError::Shape(format!(
            "a dialogue has at most {MAX_BUTTONS} buttons"
        )));
    }
    buttons
        .iter()
        .enumerate()
        .map(|(index, button)| {
            let bad = |reason: &str| DialogueError::Shape(format!("button {index}: {reason}"));
            let label = button_label(&button.label).map_err(|reason| bad(&reason))?;
            let url = match (&button.dialogue_id, &button.url, button.handover) {
                (Some(_), None, false) | (None, None, true) => None,
                (None, Some(url), false) if link_url(url) => Some(url.clone()),
                (None, Some(_), false) => {
                    return Err(bad(&format!(
                        "a url is an absolute http or https link of at most \
                         {MAX_BUTTON_URL_CHARS} characters"
                    )));
                }
                _ => {
                    return Err(bad(
                        "a button has exactly one of a dialogue_id, a url or handover: true",
                    ));
                }
            };
            Ok(Button {
                label,
                dialogue_id: button.dialogue_id,
                url,
                handover: button.handover,
            })
        })
        .collect()
}

/// An absolute http(s) URL with a host and nothing a link should not carry (white space, control
/// characters, quotes or angle brackets).
fn link_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    url.chars().count() <= MAX_BUTTON_URL_CHARS
        && rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && !url.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>' | '\\')
        })
}

/// What a matching pattern found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternMatch {
    /// The first capture group, when the pattern has one and it took part in the match.
    pub captured: Option<String>,
}

/// Tries the patterns in order; the first that matches answers.
pub fn match_patterns(patterns: &[Regex], text: &str) -> Option<PatternMatch> {
    patterns.iter().find_map(|regex| {
        regex.captures(text).map(|captures| PatternMatch {
            captured: captures.get(1).map(|m| {
                m.as_str()
                    .chars()
                    .take(MAX_CONTEXT_VALUE_CHARS)
                    .collect::<String>()
            }),
        })
    })
}

/// The first reply whose placeholders are all in context, with them filled in.
pub fn render_reply(replies: &[String], context: &BTreeMap<String, String>) -> Option<String> {
    replies.iter().find_map(|reply| fill(reply, context))
}

/// The reply with each placeholder replaced by its value, in one left-to-right pass: a value is
/// text, escaped into the formatted reply (a value that looks like `{key}` or like markup stays
/// text); `None` when a key is unknown.
fn fill(reply: &str, context: &BTreeMap<String, String>) -> Option<String> {
    let mut out = String::with_capacity(reply.len());
    let mut rest = reply;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if valid_context_key(&after[..close]) => {
                out.push_str(&crate::markup::escape(context.get(&after[..close])?));
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn compiled(patterns: &[&str]) -> Vec<Regex> {
        patterns
            .iter()
            .map(|p| compile_pattern(p).unwrap())
            .collect()
    }

    #[test]
    fn the_first_matching_pattern_answers_and_its_first_group_is_captured() {
        let patterns = compiled(&[r"order (\d+)", r"my name is (\w+)", r"hello"]);
        assert_eq!(
            match_patterns(&patterns, "I am Ada, my name is Ada").unwrap(),
            PatternMatch {
                captured: Some("Ada".into())
            }
        );
        assert_eq!(
            match_patterns(&patterns, "hello there").unwrap(),
            PatternMatch { captured: None }
        );
        assert!(match_patterns(&patterns, "nothing").is_none());
    }

    #[test]
    fn a_reply_with_a_missing_key_is_skipped() {
        let replies = vec![
            "Your order {order} is on its way, {name}.".to_owned(),
            "Your order {order} is on its way.".to_owned(),
            "Which order?".to_owned(),
        ];
        let mut context = BTreeMap::new();
        assert_eq!(render_reply(&replies, &context).unwrap(), "Which order?");
        context.insert("order".to_owned(), "1234".to_owned());
        assert_eq!(
            render_reply(&replies, &context).unwrap(),
            "Your order 1234 is on its way."
        );
        context.insert("name".to_owned(), "Ada".to_owned());
        assert_eq!(
            render_reply(&replies, &context).unwrap(),
            "Your order 1234 is on its way, Ada."
        );
        // A value that looks like a placeholder is not expanded again.
        context.insert("name".to_owned(), "{order}".to_owned());
        assert_eq!(
            render_reply(&replies, &context).unwrap(),
            "Your order 1234 is on its way, {order}."
        );
        // Nor when the key it names comes later in the reply: the template's own placeholder
        // is filled, the value stays text.
        let later = vec!["Hi {name}, plan {plan}, {not a key}.".to_owned()];
        context.insert("name".to_owned(), "{plan}".to_owned());
        context.insert("plan".to_owned(), "gold".to_owned());
        assert_eq!(
            render_reply(&later, &context).unwrap(),
            "Hi {plan}, plan gold, {not a key}."
        );
        // A visitor's captured words are text in the formatted reply, never markup.
        context.insert(
            "name".to_owned(),
            "<a href=\"https://evil.example\">Ada</a> & co".to_owned(),
        );
        assert_eq!(
            render_reply(&later, &context).unwrap(),
            "Hi &lt;a href=&quot;https://evil.example&quot;&gt;Ada&lt;/a&gt; &amp; co, plan gold, {not a key}."
        );
    }

    #[test]
    fn buttons_lead_to_a_dialogue_a_human_or_an_http_link() {
        let to = DialogueId::new();
        let button = |label: &str, dialogue_id: Option<DialogueId>, url: Option<&str>| Button {
            label: label.to_owned(),
            dialogue_id,
            url: url.map(str::to_owned),
            handover: false,
        };
        let human = |label: &str, dialogue_id: Option<DialogueId>, url: Option<&str>| Button {
            handover: true,
            ..button(label, dialogue_id, url)
        };
        assert_eq!(
            checked_buttons(&[human(" Talk to <i>us</i>", None, None)]).unwrap(),
            vec![human("Talk to us", None, None)]
        );
        assert_eq!(
            checked_buttons(&[
                button(" <b>Track</b> order ", Some(to), None),
                button("Help", None, Some("https://help.example/a?b=1")),
            ])
            .unwrap(),
            vec![
                button("Track order", Some(to), None),
                button("Help", None, Some("https://help.example/a?b=1"))
            ]
        );
        for bad in [
            vec![button("Both", Some(to), Some("https://x.example"))],
            vec![button("Neither", None, None)],
            vec![button("", Some(to), None)],
            vec![button("<img src=x>", Some(to), None)],
            vec![button(&"x".repeat(41), Some(to), None)],
            vec![button("Js", None, Some("javascript:alert(1)"))],
            vec![button("Rel", None, Some("/relative"))],
            vec![button("Proto", None, Some("https:///x"))],
            vec![button("Quote", None, Some("https://x.example/\"onclick"))],
            vec![button("Many", Some(to), None); MAX_BUTTONS + 1],
            vec![human("Human and dialogue", Some(to), None)],
            vec![human("Human and link", None, Some("https://x.example"))],
        ] {
            assert!(checked_buttons(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn replies_are_stored_in_the_formatting_subset() {
        let raw = vec![
            " <b>Hi</b> {name}<script>x</script> ".to_owned(),
            "<a href=\"javascript:alert(1)\">link</a>".to_owned(),
        ];
        assert_eq!(
            formatted_replies(&raw).unwrap(),
            vec![
                "<b>Hi</b> {name}".to_owned(),
                "<a rel=\"noopener noreferrer nofollow\">link</a>".to_owned()
            ]
        );
        assert!(formatted_replies(&["<img src=x>".to_owned()]).is_err());
    }

    #[test]
    fn context_from_outside_is_checked_and_written_as_text() {
        let map = |value: serde_json::Value| value.as_object().unwrap().clone();
        assert_eq!(
            context_entries(&map(
                serde_json::json!({ "plan": "gold", "n": 3, "vip": true, "x": 1.5 })
            ))
            .unwrap(),
            [
                ("n".to_owned(), "3".to_owned()),
                ("plan".to_owned(), "gold".to_owned()),
                ("vip".to_owned(), "true".to_owned()),
                ("x".to_owned(), "1.5".to_owned()),
            ]
        );
        for bad in [
            serde_json::json!({ "9lives": "x" }),
            serde_json::json!({ "": "x" }),
            serde_json::json!({ "a b": "x" }),
        ] {
            assert!(matches!(
                context_entries(&map(bad)),
                Err(ContextError::Key(_))
            ));
        }
        for bad in [
            serde_json::json!({ "a": null }),
            serde_json::json!({ "a": [1] }),
            serde_json::json!({ "a": { "b": 1 } }),
            serde_json::json!({ "a": "x".repeat(MAX_CONTEXT_VALUE_CHARS + 1) }),
            serde_json::json!({ "a": "nul\u{0}" }),
        ] {
            assert!(matches!(
                context_entries(&map(bad)),
                Err(ContextError::Value(_))
            ));
        }
        let many: serde_json::Map<_, _> = (0..=MAX_CONTEXT_KEYS)
            .map(|i| (format!("k{i}"), serde_json::json!("v")))
            .collect();
        assert_eq!(context_entries(&many), Err(ContextError::TooManyKeys));
        assert_eq!(
            context_entries(&map(
                serde_json::json!({ "a": "x".repeat(MAX_CONTEXT_VALUE_CHARS) })
            ))
            .map(|e| e.len()),
            Ok(1)
        );
    }

    #[test]
    fn braces_that_are_not_keys_are_text() {
        let context = BTreeMap::from([
            ("a".to_owned(), "1".to_owned()),
            ("b_2".to_owned(), "2".to_owned()),
        ]);
        assert_eq!(
            render_reply(&["{a} {not a key} {b_2} {} {9x}".to_owned()], &context).unwrap(),
            "1 {not a key} 2 {} {9x}"
        );
    }

    #[test]
    fn patterns_are_validated_on_save_with_a_clear_error() {
        let err = validate(&["(unclosed".to_owned()], false, None, &["hi".to_owned()]).unwrap_err();
        assert!(
            matches!(&err, DialogueError::Pattern { index: 0, reason } if reason.contains("unclosed")),
            "{err}"
        );
        let huge = validate(
            &["(a{1000}){1000}".to_owned()],
            false,
            None,
            &["hi".to_owned()],
        );
        assert!(
            matches!(&huge, Err(DialogueError::Pattern { reason, .. }) if reason.contains("too large")),
            "{huge:?}"
        );
        assert!(validate(&[], false, None, &["hi".to_owned()]).is_err());
        // Sample phrases alone are enough to answer on.
        assert!(validate(&[], true, None, &["hi".to_owned()]).is_ok());
        assert!(validate(&["x".to_owned()], false, Some("9lives"), &["hi".to_owned()]).is_err());
        assert!(validate(&["x".to_owned()], false, Some("name"), &[" ".to_owned()]).is_err());
        assert!(
            validate(
                &["x".to_owned()],
                false,
                Some("name"),
                &["hi {name}".to_owned()]
            )
            .is_ok()
        );
    }

    #[test]
    fn a_pattern_that_backtracks_catastrophically_elsewhere_is_linear_here() {
        // Exponential in backtracking engines; Rust's regex answers in time linear in the input.
        let patterns = compiled(&[r"^(a+)+$", r"(x+x+)+y"]);
        let input = format!("{}!", "a".repeat(100_000));
        assert!(match_patterns(&patterns, &input).is_none());
        let input = "x".repeat(100_000);
        assert!(match_patterns(&patterns, &input).is_none());
    }
}
