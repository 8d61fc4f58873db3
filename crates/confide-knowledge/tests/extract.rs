//! What each extractor takes out of a real file, in-process (the server itself only extracts in
//! the sandboxed child; see `crates/confide/tests/suite/extract_sandbox.rs`), and what it leaves out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fixtures;

use std::io::{Cursor, Write};

use confide_knowledge::extract::{ExtractError, ExtractLimits, Extracted, Kind, extract};
use confide_knowledge::normalize::normalize_extracted;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

fn limits() -> ExtractLimits {
    ExtractLimits::default()
}

/// Extracted and normalized, as the server stores it.
fn text_of(kind: Kind, bytes: &[u8]) -> Extracted {
    let extracted = extract(kind, bytes, &limits())
        .unwrap_or_else(|error| panic!("{kind}: {error} ({})", error.code()));
    normalize_extracted(extracted, 1 << 20)
}

fn one_page(kind: Kind, bytes: &[u8]) -> String {
    let extracted = text_of(kind, bytes);
    assert_eq!(extracted.pages.len(), 1, "{:?}", extracted.pages);
    extracted.pages.into_iter().next().unwrap()
}

fn refused(kind: Kind, bytes: &[u8], limits: &ExtractLimits) -> &'static str {
    match extract(kind, bytes, limits) {
        Ok(extracted) => panic!("{kind} accepted: {extracted:?}"),
        Err(error) => error.code(),
    }
}

// ---- plain text ----

#[test]
fn plain_text_loses_its_byte_order_mark_and_keeps_invalid_bytes_as_replacements() {
    assert_eq!(
        one_page(
            Kind::Text,
            b"\xEF\xBB\xBFOpening hours\r\n\r\nMonday caf\xE9"
        ),
        "Opening hours\n\nMonday caf\u{FFFD}"
    );
    // UTF-16 with its byte order mark, as Windows Notepad saves it.
    let utf16: Vec<u8> = b"\xFF\xFE"
        .iter()
        .copied()
        .chain("Öffnungszeiten".encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    assert_eq!(one_page(Kind::Text, &utf16), "Öffnungszeiten");
}

#[test]
fn input_over_the_limit_is_too_large() {
    let small = ExtractLimits {
        max_input_bytes: 10,
        ..limits()
    };
    assert_eq!(refused(Kind::Text, b"01234567890", &small), "too_large");
    assert!(extract(Kind::Text, b"0123456789", &small).is_ok());
}

#[test]
fn text_past_the_budget_is_cut_and_marked_truncated() {
    let small = ExtractLimits {
        max_text_bytes: 8,
        ..limits()
    };
    let extracted = extract(Kind::Text, b"abcd efgh ijkl", &small).unwrap();
    assert_eq!(extracted.pages, ["abcd efg"]);
    assert!(extracted.truncated);
    // A CSV whose headers repeat on every row cannot grow past the budget either.
    let mut csv = String::from("A very long header name,Another very long header name\n");
    for _ in 0..10_000 {
        csv.push_str("x,y\n");
    }
    let extracted = extract(Kind::Csv, csv.as_bytes(), &small).unwrap();
    assert!(extracted.truncated);
    assert!(extracted.pages.concat().len() <= 8);
}

// ---- HTML ----

#[test]
fn html_keeps_the_visible_text_and_the_title() {
    let html = br#"<!DOCTYPE html>
<html><head><title>Returns &amp; refunds</title>
<style>body { color: red } .hidden { display: none }</style>
<script>var secret = "<p>not text</p>"; if (a < b && c > d) {}</script>
<noscript><p>Enable JavaScript</p></noscript>
</head><body>
<h1>Returns</h1>
<p>You may return   an item
within <b>30</b>&nbsp;days.</p>
<template><p>template text</p></template>
<svg viewBox="0 0 10 10"><title>icon</title><text>svg text</text></svg>
<ul><li>Caf&eacute; &#x263A;</li><li>&lt;not a tag&gt;</li></ul>
<table><tr><td>Size</td><td>Price</td></tr><tr><td>S</td><td>10</td></tr></table>
line one<br>line two
<!-- a comment -->
<textarea>form default</textarea><iframe>frame text</iframe>
</body></html>"#;
    let extracted = text_of(Kind::Html, html);
    assert_eq!(extracted.title.as_deref(), Some("Returns & refunds"));
    assert_eq!(
        extracted.pages,
        [
            "Returns\n\nYou may return an item within 30 days.\n\nCafé ☺\n\n<not a tag>\n\n\
          Size Price\nS 10\n\nline one\nline two"
        ]
    );
}

#[test]
fn unclosed_svg_ends_where_a_browser_would_end_it() {
    let html = b"<p>before</p><svg><circle r=1><p>after</p>";
    assert_eq!(one_page(Kind::Html, html), "before\n\nafter");
}

#[test]
fn preformatted_html_keeps_its_line_breaks() {
    let html = b"<p>one\ntwo</p><pre>three\nfour</pre>";
    assert_eq!(one_page(Kind::Html, html), "one two\n\nthree\nfour");
}

#[test]
fn html_may_declare_a_legacy_charset() {
    let html =
        b"<meta charset=\"windows-1252\"><title>Men\xFC</title><p>Cr\xE8me br\xFBl\xE9e \x80 5";
    let extracted = text_of(Kind::Html, html);
    assert_eq!(extracted.title.as_deref(), Some("Menü"));
    assert_eq!(extracted.pages, ["Crème brûlée € 5"]);
}

#[test]
fn deeply_nested_html_does_not_overflow_the_stack() {
    const DEPTH: usize = 100_000;
    let mut html = String::with_capacity(DEPTH * 11 + 32);
    for _ in 0..DEPTH {
        html.push_str("<div><b>");
    }
    html.push_str("deep text");
    for _ in 0..DEPTH {
        html.push_str("</b></div>");
    }
    // On a thread with a small stack, so that a recursive walk would certainly overflow.
    let text = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || one_page(Kind::Html, html.as_bytes()))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(text, "deep text");
}

// ---- Markdown ----

#[test]
fn markdown_keeps_text_and_drops_markup_front_matter_and_scripts() {
    let markdown = "---
title: internal metadata
---
# Shipping

We ship to **Norway** and [Sweden](https://example.com).
A soft break joins lines.

- first
  - nested
- second

```
code stays
```

<script>alert('no')</script>

| Size | Price |
|------|-------|
| S    | 10    |

Inline <span>html</span> and <style>p { x }</style> then text.
";
    assert_eq!(
        one_page(Kind::Markdown, markdown.as_bytes()),
        "Shipping\n\nWe ship to Norway and Sweden. A soft break joins lines.\n\nfirst\n\n\
         nested\n\nsecond\n\ncode stays\n\nSize Price\nS 10\n\nInline html and then text."
    );
}

#[test]
fn an_unclosed_inline_script_in_markdown_drops_only_the_rest_of_its_paragraph() {
    let markdown = "Use the <script> tag for code.\n\nThe next paragraph is kept.\n";
    assert_eq!(
        one_page(Kind::Markdown, markdown.as_bytes()),
        "Use the\n\nThe next paragraph is kept."
    );
}

#[test]
fn deeply_nested_markdown_does_not_overflow_the_stack() {
    let quotes = format!("{} deep quote\n", ">".repeat(10_000));
    let brackets = format!("{}text{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let emphasis = format!("{}strong{}\n", "*".repeat(10_000), "*".repeat(10_000));
    let lists = (0..2_000)
        .map(|depth| format!("{}- item {depth}\n", "  ".repeat(depth)))
        .collect::<String>();
    for markdown in [quotes, brackets, emphasis, lists] {
        let text = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || text_of(Kind::Markdown, markdown.as_bytes()))
            .unwrap()
            .join()
            .unwrap();
        assert!(!text.pages.is_empty());
    }
}

// ---- CSV ----

#[test]
fn each_csv_row_is_one_paragraph_of_header_value_pairs() {
    let csv = "Product,Price,Notes\n\
               \"Chair, oak\",120,\"Seats one;\nassembled\"\n\
               Table,,\n\
               Lamp,30,ok,extra\n\
               ,,\n";
    assert_eq!(
        one_page(Kind::Csv, csv.as_bytes()),
        "Product: Chair, oak; Price: 120; Notes: Seats one; assembled\n\n\
         Product: Table\n\n\
         Product: Lamp; Price: 30; Notes: ok; extra"
    );
}

#[test]
fn semicolon_and_tab_separated_files_are_read_as_such() {
    assert_eq!(
        one_page(Kind::Csv, "Name;City\nÅse;\"Bergen; Norway\"\n".as_bytes()),
        "Name: Åse; City: Bergen; Norway"
    );
    assert_eq!(
        one_page(Kind::Csv, b"Name\tAge\nBob\t41\n"),
        "Name: Bob; Age: 41"
    );
}

// ---- DOCX ----

fn run(text: &str) -> String {
    format!("<w:r><w:t xml:space=\"preserve\">{text}</w:t></w:r>")
}

fn paragraph(runs: &str) -> String {
    format!(
        "<w:p><w:pPr><w:tabs><w:tab w:val=\"left\" w:pos=\"720\"/></w:tabs></w:pPr>{runs}</w:p>"
    )
}

#[test]
fn docx_text_comes_from_runs_without_deleted_text_or_field_codes() {
    let body = [
        paragraph(&format!(
            "{}<w:del><w:r><w:delText>deleted words</w:delText></w:r></w:del>{}",
            run("Our opening hours are "),
            run("9 to 5 &amp; &#233;t&#xE9; &lt;always&gt;.")
        )),
        paragraph(&format!(
            "<w:r><w:fldChar w:fldCharType=\"begin\"/></w:r><w:r><w:instrText>HYPERLINK \"https://x\"</w:instrText></w:r>{}<w:r><w:tab/><w:t>after a tab</w:t><w:br/><w:t>next line</w:t></w:r>",
            run("a link")
        )),
        "<w:tbl><w:tr><w:tc>".to_owned()
            + &paragraph(&run("Size"))
            + "</w:tc><w:tc>"
            + &paragraph(&run("Price"))
            + "</w:tc></w:tr></w:tbl>",
        paragraph(&format!(
            "<mc:AlternateContent><mc:Choice Requires=\"wps\">{}</mc:Choice><mc:Fallback>{}</mc:Fallback></mc:AlternateContent>",
            run("text box"),
            run("text box again")
        )),
        paragraph(&run("<![CDATA[cdata text]]>")),
    ]
    .concat();
    let footnotes = r#"<?xml version="1.0" encoding="UTF-8"?><w:footnotes xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:footnote w:id="1"><w:p><w:r><w:t>A footnote.</w:t></w:r></w:p></w:footnote></w:footnotes>"#;
    let docx = fixtures::docx(
        &body,
        &[
            ("word/footnotes.xml", footnotes.to_owned()),
            ("docProps/core.xml", fixtures::core_xml("Staff &amp; Hours")),
        ],
    );
    let extracted = text_of(Kind::Docx, &docx);
    assert_eq!(extracted.title.as_deref(), Some("Staff & Hours"));
    assert_eq!(
        extracted.pages,
        ["Our opening hours are 9 to 5 & été <always>.\n\n\
          a link after a tab\nnext line\n\n\
          Size\n\nPrice\n\n\
          text box\n\n\
          cdata text\n\n\
          A footnote."]
    );
}

/// A DOCX compressed as Word does (deflate), through the zip crate.
fn deflated_docx(document: &str) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    writer.start_file("word/document.xml", options).unwrap();
    writer.write_all(document.as_bytes()).unwrap();
    writer.finish().unwrap().into_inner()
}

#[test]
fn a_deflated_docx_part_larger_than_the_limit_is_too_large() {
    let document = fixtures::document_xml(&paragraph(&run(&"word ".repeat(100_000))));
    let docx = deflated_docx(&document);
    assert!(docx.len() < 10_000, "{}", docx.len());
    let tight = ExtractLimits {
        max_part_bytes: 100_000,
        ..limits()
    };
    assert_eq!(refused(Kind::Docx, &docx, &tight), "too_large");
    assert!(extract(Kind::Docx, &docx, &limits()).is_ok());
}

#[test]
fn broken_and_protected_docx_files_are_refused_with_their_reason() {
    assert_eq!(
        refused(Kind::Docx, &fixtures::encrypted_office_file(), &limits()),
        "encrypted"
    );
    assert_eq!(
        refused(Kind::Docx, b"PK\x03\x04 not a zip", &limits()),
        "unreadable"
    );
    let no_document = fixtures::stored_zip(&[("word/other.xml", b"<x/>")]);
    assert_eq!(refused(Kind::Docx, &no_document, &limits()), "unreadable");
    let bad_xml =
        fixtures::stored_zip(&[("word/document.xml", b"<w:document><w:body></w:document>")]);
    assert_eq!(refused(Kind::Docx, &bad_xml, &limits()), "unreadable");
}

#[test]
fn docx_entities_are_never_expanded_from_a_dtd() {
    let document = r#"<?xml version="1.0"?>
<!DOCTYPE w:document [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>a &lol2; b</w:t></w:r></w:p></w:body></w:document>"#;
    let docx = fixtures::stored_zip(&[("word/document.xml", document.as_bytes())]);
    assert_eq!(one_page(Kind::Docx, &docx), "a b");
}

// ---- PDF (in-process only in tests: the server runs it in the sandbox) ----

#[test]
fn pdf_text_comes_page_by_page_with_the_title() {
    let pdf = fixtures::pdf(
        "Employee Handbook",
        &["Welcome to the handbook", "Holidays (paid)\nare 25 days"],
    );
    let extracted = text_of(Kind::Pdf, &pdf);
    assert_eq!(extracted.title.as_deref(), Some("Employee Handbook"));
    assert_eq!(extracted.pages.len(), 2, "{:?}", extracted.pages);
    assert_eq!(extracted.pages[0], "Welcome to the handbook");
    assert_eq!(extracted.pages[1], "Holidays (paid)\nare 25 days");
}

#[test]
fn a_pdf_page_without_text_keeps_the_next_pages_number() {
    let pdf = fixtures::pdf("", &["first", "", "third"]);
    let extracted = text_of(Kind::Pdf, &pdf);
    assert_eq!(extracted.pages, ["first", "", "third"]);
    assert_eq!(extracted.title, None);
}

#[test]
fn garbage_is_an_unreadable_pdf() {
    assert_eq!(
        refused(Kind::Pdf, b"%PDF-1.7\nnothing else", &limits()),
        "unreadable"
    );
    assert_eq!(refused(Kind::Pdf, b"", &limits()), "unreadable");
}

#[test]
fn a_pdf_locked_with_a_password_is_encrypted_and_one_without_opens() {
    use pdf_extract::encryption::{EncryptionState, EncryptionVersion, Permissions};

    let encrypted = |user_password: &str| {
        let mut document =
            pdf_extract::Document::load_mem(&fixtures::pdf("Secret", &["classified text"]))
                .unwrap();
        document.trailer.set(
            "ID",
            pdf_extract::Object::Array(vec![
                pdf_extract::Object::string_literal("0123456789abcdef"),
                pdf_extract::Object::string_literal("0123456789abcdef"),
            ]),
        );
        let version = EncryptionVersion::V2 {
            document: &document,
            owner_password: "owner",
            user_password,
            key_length: 128,
            permissions: Permissions::all(),
        };
        let state = EncryptionState::try_from(version).unwrap();
        document.encrypt(&state).unwrap();
        let mut bytes = Vec::new();
        document.save_to(&mut bytes).unwrap();
        bytes
    };
    assert_eq!(
        refused(Kind::Pdf, &encrypted("hunter2"), &limits()),
        "encrypted"
    );
    let open = text_of(Kind::Pdf, &encrypted(""));
    assert_eq!(open.pages, ["classified text"]);
}

#[test]
fn rejections_say_why_without_the_files_content_in_the_code() {
    let error = extract(Kind::Docx, b"nonsense", &limits()).unwrap_err();
    assert!(matches!(error, ExtractError::Unreadable(_)));
    assert!(ExtractError::CODES.contains(&error.code()));
}
