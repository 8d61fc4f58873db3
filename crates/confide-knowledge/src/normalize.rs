//! Extracted text as it is stored, indexed and shown: sanitized, because the extraction child's
//! output is as untrusted as the file it read.
//!
//! - NFC, so the same words compare equal however they were encoded;
//! - `\r\n` and `\r` become `\n`; so do the other line and paragraph separators (VT, FF, NEL,
//!   U+2028, U+2029), which would otherwise glue words together when dropped;
//! - dropped: the other C0 and C1 controls (`\t` stays, as a space), the bidi embeddings,
//!   overrides and isolates U+202A–U+202E and U+2066–U+2069 (the "Trojan Source" characters
//!   that make text read differently than it is stored), the zero-width space U+200B and
//!   U+FEFF (a byte order mark); the zero-width non-joiner and joiner (U+200C, U+200D) stay,
//!   since Persian words and emoji sequences are spelled with them;
//! - spaces (any Unicode space, tabs too) collapse to one, lines are trimmed, and there is at
//!   most one blank line in a row;
//! - capped at a byte budget, on a character boundary.

use unicode_normalization::UnicodeNormalization;

use crate::extract::{Extracted, MAX_TITLE_CHARS};

/// `text` normalized and cut to at most `max_bytes` bytes.
pub fn normalize(text: &str, max_bytes: usize) -> String {
    normalize_within(text, max_bytes).0
}

/// Each page normalized; the budget is shared by all pages, in order. An empty page in the
/// middle stays (as an empty string) so that page numbers still count from the document's first
/// page; empty pages at the end are dropped, so a document without text has no pages. Text cut
/// by the budget marks the result `truncated`. The title becomes one line of at most 300
/// characters, or `None` if nothing is left of it.
pub fn normalize_extracted(extracted: Extracted, max_bytes: usize) -> Extracted {
    let mut budget = max_bytes;
    let mut truncated = extracted.truncated;
    let mut pages = Vec::with_capacity(extracted.pages.len());
    for page in &extracted.pages {
        if budget == 0 {
            truncated |= page.chars().any(is_kept);
            if truncated {
                break;
            }
            continue;
        }
        let (text, cut) = normalize_within(page, budget);
        truncated |= cut;
        budget -= text.len();
        pages.push(text);
        if cut {
            break;
        }
    }
    while pages.last().is_some_and(String::is_empty) {
        pages.pop();
    }
    let title = extracted.title.and_then(|title| {
        let line = title.replace(['\n', '\r'], " ");
        let title: String = normalize(&line, MAX_TITLE_CHARS * 4)
            .chars()
            .take(MAX_TITLE_CHARS)
            .collect();
        Some(title.trim_end().to_owned()).filter(|title| !title.is_empty())
    });
    Extracted {
        title,
        pages,
        truncated,
    }
}

/// Whether `c` survives normalization as a visible character (not whitespace, not dropped).
fn is_kept(c: char) -> bool {
    !c.is_whitespace() && !is_dropped(c)
}

fn is_dropped(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}' | '\u{FEFF}'
    ) || (c.is_control() && !is_line_break(c) && c != '\t')
}

fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// The normalized text and whether the budget cut it.
fn normalize_within(text: &str, max_bytes: usize) -> (String, bool) {
    let mut out = String::with_capacity(text.len().min(max_bytes));
    // Whitespace seen since the last kept character: a space, or line breaks (at most 2).
    let mut space = false;
    let mut breaks = 0usize;
    let mut after_cr = false;
    // Dropped first, so that what they separated can compose.
    for c in text.chars().filter(|&c| !is_dropped(c)).nfc() {
        let was_cr = std::mem::replace(&mut after_cr, c == '\r');
        if is_line_break(c) {
            if !(c == '\n' && was_cr) {
                breaks = (breaks + 1).min(2);
            }
            continue;
        }
        if c.is_whitespace() {
            space = true;
            continue;
        }
        let separator = if out.is_empty() {
            ""
        } else if breaks == 2 {
            "\n\n"
        } else if breaks == 1 {
            "\n"
        } else if space {
            " "
        } else {
            ""
        };
        if out.len() + separator.len() + c.len_utf8() > max_bytes {
            return (out, true);
        }
        out.push_str(separator);
        out.push(c);
        space = false;
        breaks = 0;
    }
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings_become_newlines_and_blank_lines_collapse() {
        assert_eq!(
            normalize("a\r\nb\rc\n\n\n\nd\r\n\r\n\r\ne", 100),
            "a\nb\nc\n\nd\n\ne"
        );
        assert_eq!(normalize("a\u{0C}b\u{2028}c\u{85}d", 100), "a\nb\nc\nd");
    }

    #[test]
    fn spaces_and_tabs_collapse_and_lines_are_trimmed() {
        assert_eq!(
            normalize("  one \t two\u{00A0}\u{3000}three  \n   four   ", 100),
            "one two three\nfour"
        );
        assert_eq!(normalize(" \t\n\n ", 100), "");
    }

    #[test]
    fn trojan_source_bidi_controls_are_removed() {
        let stored = "access\u{202E} \u{2066}// check if admin\u{2069} \u{2066}";
        assert_eq!(normalize(stored, 100), "access // check if admin");
        for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
            assert_eq!(normalize(&format!("a{c}b"), 100), "ab", "{:?}", c);
        }
    }

    #[test]
    fn zero_width_characters_and_controls_are_removed() {
        assert_eq!(normalize("in\u{200B}visible\u{FEFF}", 100), "invisible");
        // The joiners spell words and emoji: "می‌خواهم" (Persian) and a family.
        assert_eq!(
            normalize("می\u{200C}خواهم 👨\u{200D}👩\u{200D}👧", 100),
            "می\u{200C}خواهم 👨\u{200D}👩\u{200D}👧"
        );
        assert_eq!(
            normalize("bell\u{07}\u{00}\u{1B}[31m\u{7F}\u{9B}x", 100),
            "bell[31mx"
        );
    }

    #[test]
    fn text_is_nfc() {
        // "e" + combining acute, and the Angstrom sign, compose.
        assert_eq!(normalize("cafe\u{301} \u{212B}", 100), "caf\u{E9} \u{C5}");
    }

    #[test]
    fn the_cap_is_in_bytes_and_never_splits_a_character() {
        assert_eq!(normalize("ééééé", 5), "éé");
        assert_eq!(normalize("日本語", 8), "日本");
        assert_eq!(normalize("a b", 2), "a");
        assert_eq!(normalize("abc", 0), "");
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        let once = normalize(
            " x\u{202E}\r\n\r\n\r\n y\t\tz\u{200B} e\u{200B}\u{301} ",
            100,
        );
        assert!(once.ends_with('\u{E9}'), "{once:?}");
        assert_eq!(normalize(&once, 100), once);
    }

    #[test]
    fn pages_share_the_budget_and_keep_their_numbers() {
        let extracted = Extracted {
            title: Some("  The\n\u{202E}Guide  ".into()),
            pages: vec![
                "one".into(),
                " \u{200B} ".into(),
                "three".into(),
                "".into(),
                "\n".into(),
            ],
            truncated: false,
        };
        let normalized = normalize_extracted(extracted.clone(), 100);
        assert_eq!(normalized.pages, ["one", "", "three"]);
        assert_eq!(normalized.title.as_deref(), Some("The Guide"));
        assert!(!normalized.truncated);

        let capped = normalize_extracted(extracted, 6);
        assert_eq!(capped.pages, ["one", "", "thr"]);
        assert!(capped.truncated);
    }

    #[test]
    fn a_document_of_whitespace_has_no_pages_and_no_title() {
        let extracted = Extracted {
            title: Some("\u{200B} ".into()),
            pages: vec![" ".into(), "\u{FEFF}".into()],
            truncated: false,
        };
        let normalized = normalize_extracted(extracted, 100);
        assert!(normalized.pages.is_empty());
        assert_eq!(normalized.title, None);
    }

    #[test]
    fn a_budget_used_up_exactly_is_not_truncation_unless_text_remains() {
        let pages = |pages: &[&str]| Extracted {
            title: None,
            pages: pages.iter().map(|p| p.to_string()).collect(),
            truncated: false,
        };
        let exact = normalize_extracted(pages(&["abc", " "]), 3);
        assert_eq!(exact.pages, ["abc"]);
        assert!(!exact.truncated);
        let more = normalize_extracted(pages(&["abc", "d"]), 3);
        assert_eq!(more.pages, ["abc"]);
        assert!(more.truncated);
    }
}
