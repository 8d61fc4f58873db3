//! Text out of the files bot owners teach their bots with: PDF, DOCX, HTML, Markdown, CSV and
//! plain text.
//!
//! [`extract`] parses in the calling process. The server never calls it on an uploaded file
//! itself: it runs [`crate::sandbox::run_extraction`], which re-executes the binary as a child
//! with memory, CPU and file limits and calls [`extract`] there. PDF parsing in particular
//! (`pdf-extract`) panics and aborts on malformed files by design, so it only ever runs in that
//! child. Calling [`extract`] in-process is for the child and for tests.
//!
//! What comes out is raw: [`crate::normalize`] sanitizes it (the child's output is untrusted).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod csv_rows;
mod docx;
mod html;
mod markdown;
mod pdf;
mod text;

/// A format Confide extracts text from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Pdf,
    Docx,
    Html,
    Markdown,
    Csv,
    Text,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Pdf,
        Kind::Docx,
        Kind::Html,
        Kind::Markdown,
        Kind::Csv,
        Kind::Text,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pdf => "pdf",
            Kind::Docx => "docx",
            Kind::Html => "html",
            Kind::Markdown => "markdown",
            Kind::Csv => "csv",
            Kind::Text => "text",
        }
    }

    /// The kind `as_str` names; nothing else is accepted.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(name: &str) -> Result<Kind, UnknownKind> {
        Kind::parse(name).ok_or(UnknownKind)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown kind (expected pdf, docx, html, markdown, csv or text)")]
pub struct UnknownKind;

/// The text of a document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    /// The document's own title (PDF metadata, DOCX core properties, HTML `<title>`).
    pub title: Option<String>,
    /// One entry per PDF page (page `n` is `pages[n - 1]`); a single entry for other formats.
    pub pages: Vec<String>,
    /// Text was left out because the document had more than `max_text_bytes` of it.
    pub truncated: bool,
}

/// Bounds on one extraction. The child process also has memory and CPU limits; these bound what
/// the parsers are given and what they may produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Larger inputs are refused as `too_large`.
    pub max_input_bytes: u64,
    /// Largest inflated XML part of a DOCX (`word/document.xml` and the notes).
    pub max_part_bytes: u64,
    /// Text beyond this many bytes is left out and the result is marked `truncated`.
    pub max_text_bytes: usize,
}

impl Default for ExtractLimits {
    fn default() -> ExtractLimits {
        ExtractLimits {
            max_input_bytes: 32 * 1024 * 1024,
            max_part_bytes: 64 * 1024 * 1024,
            max_text_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Why a file has no text to offer. These are the file's faults, never the server's.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("the file is encrypted")]
    Encrypted,
    /// The detail is for logs only: it may quote the file.
    #[error("the file cannot be read: {0}")]
    Unreadable(String),
    #[error("the file is larger than the extraction limit")]
    TooLarge,
}

impl ExtractError {
    /// Every code [`ExtractError::code`] returns.
    pub const CODES: [&'static str; 3] = ["encrypted", "unreadable", "too_large"];

    pub fn code(&self) -> &'static str {
        match self {
            ExtractError::Encrypted => "encrypted",
            ExtractError::Unreadable(_) => "unreadable",
            ExtractError::TooLarge => "too_large",
        }
    }

    /// The static code equal to `code`, if it is one of [`ExtractError::CODES`].
    pub fn known_code(code: &str) -> Option<&'static str> {
        ExtractError::CODES.into_iter().find(|known| *known == code)
    }
}

/// Extracts the text of `bytes` as a `kind` document, in this process. See the module
/// documentation for why the server goes through the sandbox instead.
pub fn extract(
    kind: Kind,
    bytes: &[u8],
    limits: &ExtractLimits,
) -> Result<Extracted, ExtractError> {
    if u64::try_from(bytes.len()).map_or(true, |len| len > limits.max_input_bytes) {
        return Err(ExtractError::TooLarge);
    }
    let mut out = Collector::new(limits.max_text_bytes);
    let title = match kind {
        Kind::Pdf => pdf::extract(bytes, &mut out)?,
        Kind::Docx => docx::extract(bytes, limits.max_part_bytes, &mut out)?,
        Kind::Html => html::extract(&text::decode_html(bytes), &mut out),
        Kind::Markdown => {
            markdown::extract(&text::decode(bytes), &mut out);
            None
        }
        Kind::Csv => {
            csv_rows::extract(&text::decode(bytes), &mut out)?;
            None
        }
        Kind::Text => {
            out.push_str(&text::decode(bytes));
            None
        }
    };
    Ok(out.finish(title))
}

/// Where the extractors write: pages of text under one byte budget, with runs of spaces and of
/// blank lines squeezed as they arrive (so indentation does not eat the budget).
pub(crate) struct Collector {
    pages: Vec<String>,
    current: String,
    used: usize,
    cap: usize,
    truncated: bool,
}

impl Collector {
    pub(crate) fn new(cap: usize) -> Collector {
        Collector {
            pages: Vec::new(),
            current: String::new(),
            used: 0,
            cap,
            truncated: false,
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.truncated
    }

    pub(crate) fn push_str(&mut self, text: &str) {
        for c in text.chars() {
            if self.truncated {
                return;
            }
            self.push(c);
        }
    }

    pub(crate) fn push(&mut self, c: char) {
        if self.truncated {
            return;
        }
        let last = self.current.chars().next_back();
        match c {
            ' ' | '\t' if matches!(last, None | Some(' ' | '\t' | '\n')) => return,
            '\n' if self.current.ends_with("\n\n") || last.is_none() => return,
            _ => {}
        }
        if c == '\n' && matches!(last, Some(' ' | '\t')) {
            self.current.pop();
            self.used -= 1;
        }
        if self.used + c.len_utf8() > self.cap {
            self.truncated = true;
            return;
        }
        self.used += c.len_utf8();
        self.current.push(c);
    }

    /// Ends a paragraph: a blank line, once.
    pub(crate) fn paragraph(&mut self) {
        self.push('\n');
        self.push('\n');
    }

    /// Ends a page (PDF); the next text starts a new one.
    pub(crate) fn end_page(&mut self) {
        self.pages.push(std::mem::take(&mut self.current));
    }

    fn finish(mut self, title: Option<String>) -> Extracted {
        if !self.current.is_empty() || self.pages.is_empty() {
            self.end_page();
        }
        Extracted {
            title: title.filter(|title| !title.trim().is_empty()),
            pages: self.pages,
            truncated: self.truncated,
        }
    }
}

/// Titles are one line, and short.
pub(crate) const MAX_TITLE_CHARS: usize = 300;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names_and_serde() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_string(&kind).ok(),
                Some(format!("\"{}\"", kind.as_str()))
            );
        }
        assert_eq!(Kind::parse("txt"), None);
        assert_eq!(Kind::parse("PDF"), None);
    }

    #[test]
    fn the_collector_squeezes_whitespace_and_stops_at_its_budget() {
        let mut out = Collector::new(12);
        out.push_str("  a  \t b \n\n\n\n c");
        out.paragraph();
        out.push_str("defghijklmnop");
        let extracted = out.finish(None);
        assert_eq!(extracted.pages, ["a b\n\nc\n\ndefg"]);
        assert!(extracted.truncated);
    }

    #[test]
    fn rejection_codes_are_known() {
        for error in [
            ExtractError::Encrypted,
            ExtractError::Unreadable("x".into()),
            ExtractError::TooLarge,
        ] {
            assert_eq!(ExtractError::known_code(error.code()), Some(error.code()));
        }
        assert_eq!(ExtractError::known_code("parser_crashed"), None);
    }
}
