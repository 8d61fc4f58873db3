//! HTML to text with html5ever's tokenizer and our own sink: a stream of tags and text, no DOM
//! and no recursion, so nesting depth costs nothing (a DOM walked recursively overflows the
//! stack on deeply nested input).
//!
//! Dropped: the text of `script`, `style`, `noscript`, `iframe`, `noembed`, `noframes`,
//! `textarea`, `template` and SVG/MathML. The head holds no other text (its `title` is kept as
//! the title). Block elements end paragraphs, `br` and table rows end lines.

use std::cell::RefCell;

use html5ever::TokenizerResult;
use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};

use super::{Collector, MAX_TITLE_CHARS};

/// Fed this many bytes at a time, the tokenizer's pending text stays small.
const PIECE_BYTES: usize = 64 * 1024;

pub(crate) fn extract(html: &str, out: &mut Collector) -> Option<String> {
    let mut text = HtmlText::new();
    text.feed(html, out);
    text.finish(out)
}

/// A tokenizer that keeps its state between pieces of HTML (Markdown interleaves them with its
/// own text).
pub(crate) struct HtmlText {
    tokenizer: Tokenizer<Sink>,
    queue: BufferQueue,
}

impl HtmlText {
    pub(crate) fn new() -> HtmlText {
        HtmlText {
            tokenizer: Tokenizer::new(Sink::default(), TokenizerOpts::default()),
            queue: BufferQueue::default(),
        }
    }

    pub(crate) fn feed(&mut self, html: &str, out: &mut Collector) {
        let mut rest = html;
        while !rest.is_empty() && !out.is_full() {
            let mut end = rest.len().min(PIECE_BYTES);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            let (piece, tail) = rest.split_at(end);
            rest = tail;
            self.queue.push_back(StrTendril::from_slice(piece));
            while !matches!(self.tokenizer.feed(&self.queue), TokenizerResult::Done) {}
            self.drain(out);
        }
    }

    /// Inside an element whose text is dropped (Markdown drops its own text there too).
    pub(crate) fn is_skipping(&self) -> bool {
        self.tokenizer.sink.state.borrow().is_skipping()
    }

    pub(crate) fn finish(self, out: &mut Collector) -> Option<String> {
        self.tokenizer.end();
        self.drain(out);
        let state = self.tokenizer.sink.state.into_inner();
        state.title.map(|title| title.trim().to_owned())
    }

    fn drain(&self, out: &mut Collector) {
        let pending = std::mem::take(&mut self.tokenizer.sink.state.borrow_mut().pending);
        out.push_str(&pending);
    }
}

#[derive(Default)]
struct Sink {
    state: RefCell<SinkState>,
}

#[derive(Default)]
struct SinkState {
    pending: String,
    /// The first `<title>`'s text.
    title: Option<String>,
    in_title: bool,
    /// In the first `<title>` outside templates.
    collecting_title: bool,
    /// Inside a raw-text element whose text is dropped, until its end tag.
    in_dropped_raw: bool,
    template_depth: u32,
    /// Inside `<svg>` or `<math>`.
    foreign_depth: u32,
    /// Inside `<pre>`, where line breaks in the text are kept; elsewhere they are spaces.
    preformatted_depth: u32,
}

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let mut state = self.state.borrow_mut();
        match token {
            Token::TagToken(tag) => state.tag(&tag),
            Token::CharacterTokens(text) => {
                state.text(&text);
                TokenSinkResult::Continue
            }
            _ => TokenSinkResult::Continue,
        }
    }
}

impl SinkState {
    fn is_skipping(&self) -> bool {
        self.in_dropped_raw || self.template_depth > 0 || self.foreign_depth > 0
    }

    fn text(&mut self, text: &str) {
        if self.in_title {
            if self.collecting_title
                && let Some(title) = &mut self.title
            {
                let room = MAX_TITLE_CHARS.saturating_sub(title.chars().count());
                title.extend(text.chars().take(room));
            }
        } else if !self.is_skipping() {
            if self.preformatted_depth > 0 {
                self.pending.push_str(text);
            } else {
                let collapsed = text
                    .chars()
                    .map(|c| if c.is_whitespace() { ' ' } else { c });
                self.pending.extend(collapsed);
            }
        }
    }

    fn tag(&mut self, tag: &Tag) -> TokenSinkResult<()> {
        let name: &str = &tag.name;
        if tag.kind == TagKind::EndTag {
            self.end_tag(name);
            return TokenSinkResult::Continue;
        }
        if self.foreign_depth > 0 {
            // As browsers do, these HTML elements end SVG/MathML content that was never closed.
            if !breaks_out_of_foreign_content(name) {
                if matches!(name, "svg" | "math") && !tag.self_closing {
                    self.foreign_depth += 1;
                }
                return TokenSinkResult::Continue;
            }
            self.foreign_depth = 0;
        }
        match name {
            "svg" | "math" => {
                if !tag.self_closing {
                    self.foreign_depth = 1;
                }
                TokenSinkResult::Continue
            }
            "template" => {
                self.template_depth += 1;
                TokenSinkResult::Continue
            }
            "script" => {
                self.in_dropped_raw = true;
                TokenSinkResult::RawData(RawKind::ScriptData)
            }
            "style" | "noscript" | "iframe" | "noembed" | "noframes" => {
                self.in_dropped_raw = true;
                TokenSinkResult::RawData(RawKind::Rawtext)
            }
            "textarea" => {
                self.in_dropped_raw = true;
                TokenSinkResult::RawData(RawKind::Rcdata)
            }
            "title" => {
                self.in_title = true;
                self.collecting_title = self.title.is_none() && self.template_depth == 0;
                if self.collecting_title {
                    self.title = Some(String::new());
                }
                TokenSinkResult::RawData(RawKind::Rcdata)
            }
            "xmp" => {
                self.paragraph();
                self.preformatted_depth += 1;
                TokenSinkResult::RawData(RawKind::Rawtext)
            }
            "plaintext" => {
                self.paragraph();
                self.preformatted_depth += 1;
                TokenSinkResult::Plaintext
            }
            "pre" | "listing" => {
                self.paragraph();
                self.preformatted_depth += 1;
                TokenSinkResult::Continue
            }
            "br" => {
                self.line();
                TokenSinkResult::Continue
            }
            _ => {
                if is_block(name) {
                    self.paragraph();
                }
                TokenSinkResult::Continue
            }
        }
    }

    fn end_tag(&mut self, name: &str) {
        if self.foreign_depth > 0 {
            if matches!(name, "svg" | "math") {
                self.foreign_depth -= 1;
            }
            return;
        }
        match name {
            "template" => self.template_depth = self.template_depth.saturating_sub(1),
            "script" | "style" | "noscript" | "iframe" | "noembed" | "noframes" | "textarea" => {
                self.in_dropped_raw = false;
            }
            "title" => {
                self.in_title = false;
                self.collecting_title = false;
            }
            "pre" | "listing" | "xmp" => {
                self.preformatted_depth = self.preformatted_depth.saturating_sub(1);
                self.paragraph();
            }
            "tr" => self.line(),
            "td" | "th" if !self.is_skipping() => self.pending.push('\t'),
            _ if is_block(name) => self.paragraph(),
            _ => {}
        }
    }

    fn paragraph(&mut self) {
        if !self.is_skipping() {
            self.pending.push_str("\n\n");
        }
    }

    fn line(&mut self) {
        if !self.is_skipping() {
            self.pending.push('\n');
        }
    }
}

fn is_block(name: &str) -> bool {
    matches!(
        name,
        "address"
            | "article"
            | "aside"
            | "blockquote"
            | "caption"
            | "center"
            | "dd"
            | "details"
            | "dialog"
            | "dir"
            | "div"
            | "dl"
            | "dt"
            | "fieldset"
            | "figcaption"
            | "figure"
            | "footer"
            | "form"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "header"
            | "hgroup"
            | "hr"
            | "legend"
            | "li"
            | "listing"
            | "main"
            | "menu"
            | "nav"
            | "ol"
            | "p"
            | "pre"
            | "section"
            | "summary"
            | "table"
            | "tbody"
            | "tfoot"
            | "thead"
            | "ul"
            | "xmp"
    )
}

/// The HTML standard's list of start tags that end foreign content (`font` only with some
/// attributes; it is left out).
fn breaks_out_of_foreign_content(name: &str) -> bool {
    matches!(
        name,
        "b" | "big"
            | "blockquote"
            | "body"
            | "br"
            | "center"
            | "code"
            | "dd"
            | "div"
            | "dl"
            | "dt"
            | "em"
            | "embed"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "head"
            | "hr"
            | "i"
            | "img"
            | "li"
            | "listing"
            | "menu"
            | "meta"
            | "nobr"
            | "ol"
            | "p"
            | "pre"
            | "ruby"
            | "s"
            | "small"
            | "span"
            | "strong"
            | "strike"
            | "sub"
            | "sup"
            | "table"
            | "tt"
            | "u"
            | "ul"
            | "var"
    )
}
