//! What a bot's builders write is sanitized on save with `ammonia`, so what is stored is already
//! safe to show (seed 001: sanitize what users write, on write).
//!
//! Two kinds of text:
//! - **Formatted** (greetings, fallbacks, dialogue replies, nudge texts: what the bot says): HTML
//!   reduced to the small subset the widget renders, [`RICH_TAGS`], with links to http, https,
//!   mailto and tel only. Everything else is removed (`<script>` and `<style>` with their content).
//! - **Plain** (names, titles, labels, messages shown beside the chat): no markup at all. Tags are
//!   removed and the text is kept as text, so `a < b & c` stays exactly that.
//!
//! Triggers (patterns, sample phrases, page paths) are never shown; they are validated instead.
//! Visitors' and agents' messages are plain text and always shown as text.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use ammonia::{Builder, UrlRelative};

/// The tags a formatted text may keep; the widget builds exactly these and shows anything else
/// as text.
pub const RICH_TAGS: [&str; 11] = [
    "a", "b", "br", "code", "em", "i", "li", "ol", "p", "strong", "ul",
];
/// Link schemes a formatted text may keep.
pub const LINK_SCHEMES: [&str; 4] = ["http", "https", "mailto", "tel"];

static RICH: LazyLock<Builder<'static>> = LazyLock::new(|| {
    let mut builder = Builder::empty();
    builder
        .tags(RICH_TAGS.into_iter().collect())
        .tag_attributes(HashMap::from([("a", HashSet::from(["href"]))]))
        .generic_attributes(HashSet::new())
        .url_schemes(LINK_SCHEMES.into_iter().collect())
        // A relative link would point into whatever page embeds the widget.
        .url_relative(UrlRelative::Deny)
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean_content_tags(HashSet::from(["script", "style"]));
    builder
});

static PLAIN: LazyLock<Builder<'static>> = LazyLock::new(|| {
    let mut builder = Builder::empty();
    builder
        .generic_attributes(HashSet::new())
        .clean_content_tags(HashSet::from(["script", "style"]));
    builder
});

/// A formatted text reduced to the subset: the HTML to store and send.
pub fn formatted(raw: &str) -> String {
    RICH.clean(raw).to_string()
}

/// Why a plain text was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("plain text only: character references that spell markup are not allowed")]
pub struct SpelledMarkup;

/// A plain text with its markup removed: tags go, the text between them stays, and `&`, `<` and
/// `>` that are text stay as typed. Refused when what is left would itself read as markup
/// (`&lt;b&gt;`), so what is stored is the same whether a reader treats it as text or as HTML.
pub fn plain(raw: &str) -> Result<String, SpelledMarkup> {
    let text = unescape(&PLAIN.clean(raw).to_string());
    if unescape(&PLAIN.clean(&text).to_string()) != text {
        return Err(SpelledMarkup);
    }
    Ok(text)
}

/// Text made safe to place inside a formatted text (a context value filling a placeholder).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The references ammonia's serializer writes in text (`&amp;` last, so `&amp;lt;` reads `&lt;`).
fn unescape(html: &str) -> String {
    html.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn formatted_text_keeps_the_subset_and_drops_the_rest() {
        assert_eq!(
            formatted("<img src=x onerror=alert(1)><b>bold</b> & <script>alert(1)</script>"),
            "<b>bold</b> &amp; "
        );
        assert_eq!(
            formatted(
                "<p onclick=x title=t>Hi <em>{name}</em><br>\n<table><tr><td>cell</td></tr></table>"
            ),
            // (HTML's own parsing: a table closes the paragraph.)
            "<p>Hi <em>{name}</em><br>\n</p>cell"
        );
        assert_eq!(formatted("<B>loud</B><style>p{}</style>"), "<b>loud</b>");
    }

    #[test]
    fn links_keep_safe_absolute_targets_only() {
        assert_eq!(
            formatted("<a href=\"https://example.com/o?a=1&b=2\" target=_top>order</a>"),
            "<a href=\"https://example.com/o?a=1&amp;b=2\" rel=\"noopener noreferrer nofollow\">order</a>"
        );
        for bad in [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,x",
            "vbscript:x",
            "/relative",
            "//evil.example",
            "{url}",
        ] {
            let out = formatted(&format!("<a href=\"{bad}\">x</a>"));
            assert!(!out.contains("href"), "{bad}: {out}");
        }
        assert!(formatted("<a href=\"mailto:help@example.com\">mail</a>").contains("href"));
    }

    #[test]
    fn formatting_twice_changes_nothing() {
        for raw in [
            "a < b & c > d",
            "<b>x</b> <a href=\"https://e.com/?q=1&r=2\">l</a>",
            "<p>unclosed <i>italic",
            "\u{a0}spaced",
        ] {
            let once = formatted(raw);
            assert_eq!(formatted(&once), once, "{raw}");
        }
    }

    #[test]
    fn plain_text_loses_tags_and_keeps_its_characters() {
        assert_eq!(plain("Q&A <b>bot</b>").unwrap(), "Q&A bot");
        assert_eq!(
            plain("a < b && c > d \"q\" 'x'").unwrap(),
            "a < b && c > d \"q\" 'x'"
        );
        assert_eq!(
            plain("<script>alert(1)</script>Support").unwrap(),
            "Support"
        );
        assert_eq!(plain("<img src=x onerror=alert(1)>").unwrap(), "");
        assert_eq!(plain("AT&T").unwrap(), "AT&T");
    }

    #[test]
    fn plain_text_cannot_spell_markup_in_references() {
        assert_eq!(
            plain("&lt;script&gt;alert(1)&lt;/script&gt;"),
            Err(SpelledMarkup)
        );
        assert_eq!(plain("&lt;b&gt;x"), Err(SpelledMarkup));
        // A reference that spells text is kept as the text it spells, once.
        let amp = plain("&amp;").unwrap();
        assert_eq!(plain(&amp).unwrap(), amp);
    }

    #[test]
    fn escaped_values_stay_text_inside_formatted_text() {
        let value = "<a href=\"javascript:x\">'hi'</a> & more";
        let escaped = escape(value);
        assert!(!escaped.contains('<') && !escaped.contains('"') && !escaped.contains('\''));
        assert_eq!(unescape(&formatted(&escaped)).replace("&#39;", "'"), value);
    }
}
