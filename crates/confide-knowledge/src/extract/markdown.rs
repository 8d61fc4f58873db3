//! Markdown to text by walking pulldown-cmark's events (no tree, no recursion). HTML inside the
//! Markdown goes through the HTML extractor, so `<script>` text is dropped there too. Front
//! matter (YAML `---` or `+++` blocks) is metadata, not text.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use super::Collector;
use super::html::HtmlText;

pub(crate) fn extract(markdown: &str, out: &mut Collector) {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_DEFINITION_LIST
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS
        | Options::ENABLE_PLUSES_DELIMITED_METADATA_BLOCKS;
    let mut html = HtmlText::new();
    let mut in_metadata = false;
    for event in Parser::new_ext(markdown, options) {
        if out.is_full() {
            break;
        }
        match event {
            Event::Start(Tag::MetadataBlock(_)) => in_metadata = true,
            Event::End(TagEnd::MetadataBlock(_)) => in_metadata = false,
            Event::Text(text)
            | Event::Code(text)
            | Event::InlineMath(text)
            | Event::DisplayMath(text) => {
                if !in_metadata && !html.is_skipping() {
                    out.push_str(&text);
                }
            }
            Event::Html(markup) | Event::InlineHtml(markup) => html.feed(&markup, out),
            Event::SoftBreak => out.push(' '),
            Event::HardBreak => out.push('\n'),
            Event::Rule => out.paragraph(),
            Event::Start(tag) => {
                if is_block(&tag.to_end()) {
                    out.paragraph();
                }
            }
            Event::End(TagEnd::TableCell) => out.push('\t'),
            Event::End(TagEnd::TableHead | TagEnd::TableRow) => out.push('\n'),
            Event::End(end) => {
                if is_block(&end) {
                    out.paragraph();
                    // An element left open in inline HTML (`a <script> b`) drops text up to the
                    // end of its block, not to the end of the document.
                    if html.is_skipping() {
                        html.finish(out);
                        html = HtmlText::new();
                    }
                }
            }
            Event::FootnoteReference(_) | Event::TaskListMarker(_) => {}
        }
    }
    html.finish(out);
}

fn is_block(end: &TagEnd) -> bool {
    matches!(
        end,
        TagEnd::Paragraph
            | TagEnd::Heading(_)
            | TagEnd::BlockQuote(_)
            | TagEnd::CodeBlock
            | TagEnd::HtmlBlock
            | TagEnd::List(_)
            | TagEnd::Item
            | TagEnd::FootnoteDefinition
            | TagEnd::DefinitionList
            | TagEnd::DefinitionListTitle
            | TagEnd::DefinitionListDefinition
            | TagEnd::Table
    )
}
