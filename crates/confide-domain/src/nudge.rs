//! Nudges: short messages a bot shows a visitor before they write (a title, a text and maybe a
//! one-field form), either when an operator sends one through the Nudge API or when the widget's
//! rules say so (the page path and the seconds spent on it).

use serde::{Deserialize, Serialize};

/// Nudges one bot may have.
pub const MAX_NUDGES_PER_BOT: usize = 50;
pub const MAX_TITLE_CHARS: usize = 120;
pub const MAX_TEXT_CHARS: usize = 1000;
pub const MAX_LABEL_CHARS: usize = 80;
pub const MAX_PATHS: usize = 20;
pub const MAX_PATH_CHARS: usize = 200;
pub const MAX_SECONDS_ON_PAGE: u32 = 3600;
/// The longest answer a visitor may submit through a nudge's form.
pub const MAX_ANSWER_CHARS: usize = 500;

/// What the form's one input asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NudgeInput {
    Text,
    Email,
}

/// A form with one input and a button; what the visitor submits goes to `nudge.submitted`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NudgeForm {
    /// The input's label.
    #[schema(
        min_length = 1,
        max_length = 80,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub label: String,
    pub input: NudgeInput,
    /// The button's text.
    #[schema(
        min_length = 1,
        max_length = 80,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub button: String,
}

/// When the widget shows the nudge by itself: on a page whose path matches one of `paths` (all
/// pages when empty), after `seconds_on_page` there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NudgeRules {
    /// Exact paths (`/pricing`) or prefixes ending in `*` (`/docs/*`); each starts with `/`.
    #[serde(default)]
    #[schema(schema_with = paths_schema)]
    pub paths: Vec<String>,
    #[serde(default, deserialize_with = "crate::input::whole_number")]
    #[schema(minimum = 0, maximum = 3600)]
    pub seconds_on_page: u32,
}

/// `paths` as the checks below take them: at most 20, each `/` then no white space or control
/// character, `*` only at the end, at most 200 characters.
fn paths_schema() -> utoipa::openapi::schema::Array {
    let path = utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_PATH_CHARS))
        .pattern(Some(r"^/[^\s\x00-\x1F\x7F-\x9F*]*\*?$"))
        .build();
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(path)
        .max_items(Some(MAX_PATHS))
        .build()
}

/// Why a nudge was refused; `code()` is the stable error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NudgeError {
    #[error("{field} must be 1 to {max} characters without control characters, not only markup")]
    Text { field: &'static str, max: usize },
    #[error("rules: {0}")]
    Rules(String),
}

impl NudgeError {
    pub fn code(&self) -> &'static str {
        match self {
            NudgeError::Text { .. } => "invalid_nudge",
            NudgeError::Rules(_) => "invalid_rules",
        }
    }
}

/// How a nudge's text is kept: its one formatted text (the body), or a plain one (title, labels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// May have line breaks; sanitized to the formatting subset (`markup::formatted`).
    Formatted,
    /// One line, markup removed (`markup::plain`).
    Plain,
}

/// `raw` trimmed and sanitized, when it is 1..=max characters with no control characters (the
/// formatted text may have line breaks) and something is left once markup is removed.
pub fn text(field: &'static str, raw: &str, max: usize, kind: Kind) -> Result<String, NudgeError> {
    let trimmed = bounded(field, raw, max, kind == Kind::Formatted)?;
    let sanitized = match kind {
        Kind::Formatted => crate::markup::formatted(trimmed),
        Kind::Plain => {
            crate::markup::plain(trimmed).map_err(|_| NudgeError::Text { field, max })?
        }
    };
    if sanitized.trim().is_empty() {
        return Err(NudgeError::Text { field, max });
    }
    Ok(sanitized.trim().to_owned())
}

/// Checks a form's texts; answers it trimmed.
pub fn form(form: &NudgeForm) -> Result<NudgeForm, NudgeError> {
    Ok(NudgeForm {
        label: text("form.label", &form.label, MAX_LABEL_CHARS, Kind::Plain)?,
        input: form.input,
        button: text("form.button", &form.button, MAX_LABEL_CHARS, Kind::Plain)?,
    })
}

/// Checks rules: paths are absolute, printable, bounded and distinct.
pub fn rules(rules: &NudgeRules) -> Result<NudgeRules, NudgeError> {
    if rules.paths.len() > MAX_PATHS {
        return Err(NudgeError::Rules(format!("at most {MAX_PATHS} paths")));
    }
    if rules.seconds_on_page > MAX_SECONDS_ON_PAGE {
        return Err(NudgeError::Rules(format!(
            "seconds_on_page is 0 to {MAX_SECONDS_ON_PAGE}"
        )));
    }
    let mut paths: Vec<String> = Vec::new();
    for path in &rules.paths {
        let ok = path.starts_with('/')
            && path.chars().count() <= MAX_PATH_CHARS
            && !path.chars().any(|c| c.is_control() || c.is_whitespace())
            // A `*` only as the last character (cut by character: a path may end in any letter).
            && !path.strip_suffix('*').unwrap_or(path).contains('*');
        if !ok {
            return Err(NudgeError::Rules(format!(
                "a path starts with /, has no spaces, is at most {MAX_PATH_CHARS} characters \
                 and may end in * only: {:?}",
                path.chars().take(40).collect::<String>()
            )));
        }
        if !paths.contains(path) {
            paths.push(path.clone());
        }
    }
    Ok(NudgeRules {
        paths,
        seconds_on_page: rules.seconds_on_page,
    })
}

/// Whether a page path matches the rules' paths (every page when there are none).
pub fn path_matches(rules: &NudgeRules, page: &str) -> bool {
    rules.paths.is_empty()
        || rules.paths.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => page.starts_with(prefix),
            None => page == p,
        })
}

/// Trimmed `raw` when it is 1..=max characters with no control characters (line breaks allowed
/// when `multiline`).
fn bounded<'a>(
    field: &'static str,
    raw: &'a str,
    max: usize,
    multiline: bool,
) -> Result<&'a str, NudgeError> {
    let bad = |c: char| c.is_control() && !(multiline && (c == '\n' || c == '\r'));
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.chars().count() > max || raw.chars().any(bad) {
        return Err(NudgeError::Text { field, max });
    }
    Ok(trimmed)
}

/// A visitor's answer: trimmed, bounded, and shaped like an address when the form asks for one.
/// Kept as typed (it is the visitor's text, for the webhook), never shown as markup.
pub fn answer(form: &NudgeForm, raw: &str) -> Result<String, NudgeError> {
    let value = bounded("value", raw, MAX_ANSWER_CHARS, false)?.to_owned();
    if form.input == NudgeInput::Email && crate::Email::parse(&value).is_err() {
        return Err(NudgeError::Text {
            field: "value (an email address)",
            max: MAX_ANSWER_CHARS,
        });
    }
    Ok(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {

    #[test]
    fn a_path_may_end_in_any_letter() {
        let rules = |paths: &[&str]| NudgeRules {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            seconds_on_page: 0,
        };
        // Its last letter is four bytes long: cutting a byte off it must not panic.
        assert!(super::rules(&rules(&["/\u{b5}\u{6e5e3}", "/\u{6e5e3}*"])).is_ok());
        assert!(super::rules(&rules(&["/\u{6e5e3}*\u{6e5e3}"])).is_err());
    }

    #[test]
    fn seconds_on_page_is_a_whole_number_however_json_spells_it() {
        let read = |text: &str| serde_json::from_str::<NudgeRules>(text);
        assert_eq!(
            read(r#"{"seconds_on_page": 30.0}"#)
                .unwrap()
                .seconds_on_page,
            30
        );
        assert_eq!(
            read(r#"{"seconds_on_page": 30}"#).unwrap().seconds_on_page,
            30
        );
        assert_eq!(read("{}").unwrap().seconds_on_page, 0);
        assert!(read(r#"{"seconds_on_page": 30.5}"#).is_err());
        assert!(read(r#"{"seconds_on_page": -1}"#).is_err());
    }

    use super::*;

    fn rules_of(paths: &[&str]) -> NudgeRules {
        NudgeRules {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            seconds_on_page: 5,
        }
    }

    #[test]
    fn paths_are_exact_or_prefixes() {
        let r = rules(&rules_of(&["/pricing", "/docs/*", "/pricing"])).unwrap();
        assert_eq!(r.paths, vec!["/pricing", "/docs/*"]);
        assert!(path_matches(&r, "/pricing"));
        assert!(!path_matches(&r, "/pricing/enterprise"));
        assert!(path_matches(&r, "/docs/setup"));
        assert!(!path_matches(&r, "/blog"));
        assert!(path_matches(&rules_of(&[]), "/anything"));
    }

    #[test]
    fn bad_rules_and_texts_are_refused() {
        for bad in [&["pricing"][..], &["/a b"], &["/a*/b"], &["/x\u{7}"]] {
            assert_eq!(rules(&rules_of(bad)).unwrap_err().code(), "invalid_rules");
        }
        let long = NudgeRules {
            paths: vec![],
            seconds_on_page: MAX_SECONDS_ON_PAGE + 1,
        };
        assert!(rules(&long).is_err());
        assert!(text("title", "  ", 10, Kind::Plain).is_err());
        assert!(text("title", "\rHi", 10, Kind::Plain).is_err());
        assert!(text("title", "Hi\nthere", 10, Kind::Plain).is_err());
        assert_eq!(
            text("text", " Hi\nthere ", 10, Kind::Formatted).unwrap(),
            "Hi\nthere"
        );
    }

    #[test]
    fn titles_are_plain_and_texts_keep_the_formatting_subset() {
        assert_eq!(
            text("title", "<b>Hello</b> & welcome", 40, Kind::Plain).unwrap(),
            "Hello & welcome"
        );
        assert_eq!(
            text(
                "text",
                "<b>Hi</b><img src=x onerror=alert(1)> & bye",
                80,
                Kind::Formatted
            )
            .unwrap(),
            "<b>Hi</b> &amp; bye"
        );
        // Nothing left once the markup is gone: refused, not saved empty.
        assert!(text("title", "<img src=x>", 40, Kind::Plain).is_err());
        assert!(text("text", "<script>alert(1)</script>", 80, Kind::Formatted).is_err());
    }

    #[test]
    fn an_email_form_takes_only_addresses() {
        let f = NudgeForm {
            label: "Your email".into(),
            input: NudgeInput::Email,
            button: "Send".into(),
        };
        assert_eq!(answer(&f, " ann@example.com ").unwrap(), "ann@example.com");
        assert!(answer(&f, "not an address").is_err());
        let t = NudgeForm {
            input: NudgeInput::Text,
            ..f
        };
        assert!(answer(&t, "anything at all").is_ok());
        assert!(answer(&t, &"x".repeat(MAX_ANSWER_CHARS + 1)).is_err());
    }
}
