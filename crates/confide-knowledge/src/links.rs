//! Where a site import goes next: the `<loc>` entries of a sitemap (or sitemap index), the lines
//! of a text sitemap, and the `<a href>` links of an HTML page. Pure parsing of untrusted input,
//! bounded in what it keeps (a gzipped sitemap is inflated only up to a bound); every URL it
//! answers is still to be checked by the SSRF-safe client before it is fetched.
//!
//! Answered URLs are absolute, `http` or `https`, without a fragment, and each appears once.
//! Other schemes (`mailto:`, `javascript:`, `tel:`) are not pages and are left out.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::Read as _;

use html5ever::TokenizerResult;
use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};
use quick_xml::Reader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use url::Url;

/// Entries kept from one sitemap: the protocol's own maximum.
pub const MAX_SITEMAP_ENTRIES: usize = 50_000;
/// The most a sitemap may be, uncompressed: the protocol's own maximum (50 MiB).
pub const MAX_SITEMAP_BYTES: u64 = 52_428_800;
/// The media types a sitemap is fetched as (see [`sitemap_format`]).
pub const SITEMAP_MEDIA_TYPES: [&str; 6] = [
    "application/xml",
    "text/xml",
    "text/plain",
    "application/gzip",
    "application/x-gzip",
    "application/octet-stream",
];
/// Links kept from one page.
pub const MAX_PAGE_LINKS: usize = 10_000;
/// Longer URLs are not kept (the outbound client refuses them too).
const MAX_URL_BYTES: usize = 2048;

/// What a sitemap document lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SitemapKind {
    /// `<urlset>`: pages.
    Pages,
    /// `<sitemapindex>`: more sitemaps.
    Index,
}

/// A parsed sitemap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sitemap {
    pub kind: SitemapKind,
    /// The entries' URLs in document order, each once.
    pub locations: Vec<Url>,
    /// Entries that are no absolute http(s) URL (skipped).
    pub invalid: usize,
    /// The document listed more than [`MAX_SITEMAP_ENTRIES`]; the rest was not read.
    pub truncated: bool,
}

impl Sitemap {
    /// A sitemap of pages with no entry (yet).
    fn listing_nothing() -> Sitemap {
        Sitemap {
            kind: SitemapKind::Pages,
            locations: Vec::new(),
            invalid: 0,
            truncated: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SitemapError {
    #[error("not a sitemap: the document is neither a <urlset> nor a <sitemapindex>")]
    NotASitemap,
    #[error("not a sitemap: no line of the text is an absolute http(s) URL")]
    NoUrlLines,
    #[error("the sitemap is not well-formed XML: {0}")]
    Malformed(String),
}

/// How a fetched sitemap is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SitemapFormat {
    Xml,
    /// Text, or XML served as text (read as [`parse_sitemap_document`] says).
    Text,
    /// Either of the others, gzipped (see [`gunzip`]).
    Gzip,
}

/// A fetched sitemap's format by its media type (see [`SITEMAP_MEDIA_TYPES`]): the generic
/// `application/octet-stream` only for a `.gz` path; `None` for anything else.
pub fn sitemap_format(media_type: &str, url: &Url) -> Option<SitemapFormat> {
    match media_type {
        "application/xml" | "text/xml" => Some(SitemapFormat::Xml),
        "text/plain" => Some(SitemapFormat::Text),
        "application/gzip" | "application/x-gzip" => Some(SitemapFormat::Gzip),
        "application/octet-stream" if url.path().to_ascii_lowercase().ends_with(".gz") => {
            Some(SitemapFormat::Gzip)
        }
        _ => None,
    }
}

/// Why a gzipped sitemap could not be inflated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GzipError {
    /// Inflating would go past the bound: a sitemap too large, or a gzip bomb.
    #[error("the gzipped sitemap inflates to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the sitemap is not valid gzip: {0}")]
    Invalid(String),
}

/// Inflates a gzipped sitemap, holding at most `limit` bytes of it (and one more, to know it is
/// larger): a gzip bomb is refused once past the bound, never inflated whole.
pub fn gunzip(compressed: &[u8], limit: u64) -> Result<Vec<u8>, GzipError> {
    if !compressed.starts_with(&[0x1f, 0x8b]) {
        return Err(GzipError::Invalid(
            "it does not start as gzip does".to_owned(),
        ));
    }
    let mut inflated = Vec::new();
    flate2::read::MultiGzDecoder::new(compressed)
        .take(limit.saturating_add(1))
        .read_to_end(&mut inflated)
        .map_err(|e| GzipError::Invalid(e.to_string()))?;
    if inflated.len() as u64 > limit {
        return Err(GzipError::TooLarge { limit });
    }
    Ok(inflated)
}

/// Reads a (inflated) sitemap of a format: XML when its type says so; text, or what was gzipped,
/// as XML when it starts with `<` (servers label sitemaps loosely), as a text sitemap otherwise.
pub fn parse_sitemap_document(
    document: &[u8],
    format: SitemapFormat,
) -> Result<Sitemap, SitemapError> {
    let start = document.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(document);
    let markup = start.trim_ascii_start().starts_with(b"<");
    if format == SitemapFormat::Xml || markup {
        parse_sitemap(document)
    } else {
        parse_text_sitemap(start)
    }
}

/// Reads a text sitemap (sitemaps.org): one absolute URL a line, each a page. Blank lines are
/// passed over; a text in which no line is a URL is no sitemap.
pub fn parse_text_sitemap(text: &[u8]) -> Result<Sitemap, SitemapError> {
    let mut seen = HashSet::new();
    let mut sitemap = Sitemap::listing_nothing();
    for line in text.split(|b| *b == b'\n').map(<[u8]>::trim_ascii) {
        if line.is_empty() {
            continue;
        }
        if sitemap.locations.len() >= MAX_SITEMAP_ENTRIES {
            sitemap.truncated = true;
            break;
        }
        match std::str::from_utf8(line).ok().and_then(absolute) {
            Some(url) if seen.insert(url.clone()) => sitemap.locations.push(url),
            Some(_) => {}
            None => sitemap.invalid += 1,
        }
    }
    if sitemap.locations.is_empty() && sitemap.invalid > 0 {
        return Err(SitemapError::NoUrlLines);
    }
    Ok(sitemap)
}

/// Reads a sitemap (`<urlset>`) or sitemap index (`<sitemapindex>`), namespaced or not. Only a
/// `<loc>` directly inside an entry (`<url>` or `<sitemap>`) counts: an image's or video's
/// `<image:loc>` further down does not. No DTD is read, so no entity is ever expanded beyond
/// XML's five and character references.
pub fn parse_sitemap(xml: &[u8]) -> Result<Sitemap, SitemapError> {
    let malformed = |e: &dyn std::fmt::Display| SitemapError::Malformed(e.to_string());
    let mut reader = Reader::from_reader(xml);
    let mut kind = None;
    let mut depth = 0_usize;
    // Inside an entry at depth 2, inside its `<loc>` at depth 3.
    let mut in_entry = false;
    let mut loc: Option<String> = None;
    let mut seen = HashSet::new();
    let mut sitemap = Sitemap::listing_nothing();
    loop {
        match reader.read_event().map_err(|e| malformed(&e))? {
            Event::Start(element) => {
                depth += 1;
                let name = element.local_name();
                match (depth, name.as_ref(), kind) {
                    (1, b"urlset", _) => kind = Some(SitemapKind::Pages),
                    (1, b"sitemapindex", _) => kind = Some(SitemapKind::Index),
                    (1, _, _) => return Err(SitemapError::NotASitemap),
                    (2, b"url", Some(SitemapKind::Pages))
                    | (2, b"sitemap", Some(SitemapKind::Index)) => in_entry = true,
                    (3, b"loc", _) if in_entry => loc = Some(String::new()),
                    _ => {}
                }
            }
            Event::Empty(element) if depth == 0 => {
                // `<urlset/>`: a sitemap that lists nothing.
                kind = match element.local_name().as_ref() {
                    b"urlset" => Some(SitemapKind::Pages),
                    b"sitemapindex" => Some(SitemapKind::Index),
                    _ => return Err(SitemapError::NotASitemap),
                };
            }
            Event::End(_) => {
                if depth == 3
                    && let Some(text) = loc.take()
                {
                    if sitemap.locations.len() >= MAX_SITEMAP_ENTRIES {
                        sitemap.truncated = true;
                        break;
                    }
                    match absolute(text.trim()) {
                        Some(url) if seen.insert(url.clone()) => sitemap.locations.push(url),
                        Some(_) => {}
                        None => sitemap.invalid += 1,
                    }
                }
                if depth == 2 {
                    in_entry = false;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(text) => {
                if let Some(loc) = loc.as_mut().filter(|l| l.len() <= MAX_URL_BYTES) {
                    loc.push_str(&text.xml10_content().map_err(|e| malformed(&e))?);
                }
            }
            Event::CData(text) => {
                if let Some(loc) = loc.as_mut().filter(|l| l.len() <= MAX_URL_BYTES) {
                    loc.push_str(&text.decode().map_err(|e| malformed(&e))?);
                }
            }
            Event::GeneralRef(reference) => {
                if let Some(loc) = loc.as_mut() {
                    if let Some(c) = reference.resolve_char_ref().map_err(|e| malformed(&e))? {
                        loc.push(c);
                    } else if let Some(text) =
                        resolve_predefined_entity(&reference.decode().map_err(|e| malformed(&e))?)
                    {
                        loc.push_str(text);
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    sitemap.kind = kind.ok_or(SitemapError::NotASitemap)?;
    Ok(sitemap)
}

/// An absolute http(s) URL without its fragment; `None` for anything else.
fn absolute(text: &str) -> Option<Url> {
    if text.len() > MAX_URL_BYTES {
        return None;
    }
    let mut url = Url::parse(text).ok()?;
    page_form(&mut url).then_some(url)
}

/// Keeps http(s) URLs with a host, dropping the fragment (never sent, the same page).
fn page_form(url: &mut Url) -> bool {
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return false;
    }
    url.set_fragment(None);
    url.as_str().len() <= MAX_URL_BYTES
}

/// Whether two URLs are on the same site: the same scheme, host and port (the scheme's default
/// when none is written).
pub fn same_site(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host() == b.host()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The `<a href>` (and `<area href>`) links of an HTML page fetched from `page`, resolved against
/// it (or against the page's first `<base href>`), in document order, each once, at most
/// [`MAX_PAGE_LINKS`]. Links inside `<script>`, `<style>`, `<template>` and other raw text are
/// not links; `rel="nofollow"` ones are left out.
pub fn page_links(html: &str, page: &Url) -> Vec<Url> {
    let sink = LinkSink::default();
    let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
    let queue = BufferQueue::default();
    let mut rest = html;
    while !rest.is_empty() && tokenizer.sink.state.borrow().hrefs.len() < MAX_PAGE_LINKS {
        let mut end = rest.len().min(64 * 1024);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        queue.push_back(StrTendril::from_slice(piece));
        while !matches!(tokenizer.feed(&queue), TokenizerResult::Done) {}
    }
    tokenizer.end();
    let state = tokenizer.sink.state.into_inner();
    let base = state
        .base
        .as_deref()
        .and_then(|base| page.join(base).ok())
        .filter(|base| matches!(base.scheme(), "http" | "https"))
        .unwrap_or_else(|| page.clone());
    let mut seen = HashSet::new();
    let mut links = Vec::new();
    for href in &state.hrefs {
        let Ok(mut url) = base.join(href.trim()) else {
            continue;
        };
        if page_form(&mut url) && seen.insert(url.clone()) {
            links.push(url);
        }
    }
    links
}

#[derive(Default)]
struct LinkSink {
    state: RefCell<LinkState>,
}

#[derive(Default)]
struct LinkState {
    hrefs: Vec<String>,
    /// The first `<base href>`.
    base: Option<String>,
    template_depth: u32,
}

impl TokenSink for LinkSink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        match token {
            Token::TagToken(tag) => self.state.borrow_mut().tag(&tag),
            _ => TokenSinkResult::Continue,
        }
    }
}

impl LinkState {
    fn tag(&mut self, tag: &Tag) -> TokenSinkResult<()> {
        let name: &str = &tag.name;
        if tag.kind == TagKind::EndTag {
            if name == "template" {
                self.template_depth = self.template_depth.saturating_sub(1);
            }
            return TokenSinkResult::Continue;
        }
        let attribute = |wanted: &str| {
            tag.attrs
                .iter()
                .find(|a| &*a.name.local == wanted)
                .map(|a| a.value.to_string())
        };
        match name {
            // Their content is text, not markup, as the tree builder would have it.
            "script" => TokenSinkResult::RawData(RawKind::ScriptData),
            "style" | "noscript" | "iframe" | "noembed" | "noframes" | "xmp" => {
                TokenSinkResult::RawData(RawKind::Rawtext)
            }
            "textarea" | "title" => TokenSinkResult::RawData(RawKind::Rcdata),
            "plaintext" => TokenSinkResult::Plaintext,
            "template" => {
                self.template_depth += 1;
                TokenSinkResult::Continue
            }
            "base" if self.base.is_none() && self.template_depth == 0 => {
                self.base = attribute("href");
                TokenSinkResult::Continue
            }
            "a" | "area" if self.template_depth == 0 && self.hrefs.len() < MAX_PAGE_LINKS => {
                let nofollow = attribute("rel").is_some_and(|rel| {
                    rel.split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("nofollow"))
                });
                if let Some(href) = attribute("href").filter(|h| h.len() <= MAX_URL_BYTES)
                    && !nofollow
                {
                    self.hrefs.push(href);
                }
                TokenSinkResult::Continue
            }
            _ => TokenSinkResult::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn urls(list: &[Url]) -> Vec<&str> {
        list.iter().map(Url::as_str).collect()
    }

    #[test]
    fn a_sitemap_lists_its_pages_once_each_without_fragments() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
            <urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"
                    xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">
              <url><loc> https://example.com/a?x=1&amp;y=2 </loc><lastmod>2024-01-01</lastmod></url>
              <url><loc>https://example.com/b#top</loc>
                   <image:image><image:loc>https://cdn.example.com/b.png</image:loc></image:image></url>
              <url><loc>https://example.com/b</loc></url>
              <url><loc><![CDATA[https://example.com/c]]></loc></url>
              <url><loc>&#104;ttps://example.com/d</loc></url>
              <url><loc>ftp://example.com/e</loc></url>
              <url><loc>/relative</loc></url>
              <loc>https://example.com/not-in-an-entry</loc>
            </urlset>"#;
        let sitemap = parse_sitemap(xml).unwrap();
        assert_eq!(sitemap.kind, SitemapKind::Pages);
        assert_eq!(
            urls(&sitemap.locations),
            [
                "https://example.com/a?x=1&y=2",
                "https://example.com/b",
                "https://example.com/c",
                "https://example.com/d",
            ]
        );
        assert_eq!(sitemap.invalid, 2, "ftp and a relative URL");
        assert!(!sitemap.truncated);
    }

    #[test]
    fn a_sitemap_index_lists_sitemaps_and_anything_else_is_refused() {
        let index = br#"<sm:sitemapindex xmlns:sm="http://www.sitemaps.org/schemas/sitemap/0.9">
            <sm:sitemap><sm:loc>https://example.com/pages.xml</sm:loc></sm:sitemap>
            <sm:sitemap><sm:loc>https://example.com/news.xml</sm:loc></sm:sitemap>
            </sm:sitemapindex>"#;
        let sitemap = parse_sitemap(index).unwrap();
        assert_eq!(sitemap.kind, SitemapKind::Index);
        assert_eq!(
            urls(&sitemap.locations),
            [
                "https://example.com/pages.xml",
                "https://example.com/news.xml"
            ]
        );
        // A <url> entry inside an index is not a sitemap of it.
        let mixed = br#"<sitemapindex><url><loc>https://example.com/x</loc></url></sitemapindex>"#;
        assert_eq!(parse_sitemap(mixed).unwrap().locations, []);
        assert_eq!(
            parse_sitemap(b"<urlset/>").unwrap(),
            Sitemap {
                kind: SitemapKind::Pages,
                locations: Vec::new(),
                invalid: 0,
                truncated: false
            }
        );

        assert_eq!(
            parse_sitemap(b"<html><body>hello</body></html>"),
            Err(SitemapError::NotASitemap)
        );
        assert_eq!(parse_sitemap(b""), Err(SitemapError::NotASitemap));
        assert_eq!(parse_sitemap(b"just text"), Err(SitemapError::NotASitemap));
        assert!(matches!(
            parse_sitemap(b"<urlset><url><loc>https://a.example/</url></urlset>"),
            Err(SitemapError::Malformed(_))
        ));
    }

    #[test]
    fn a_sitemap_declaring_entities_expands_none_of_them() {
        let xml = br#"<?xml version="1.0"?>
            <!DOCTYPE urlset [
              <!ENTITY secret SYSTEM "file:///etc/passwd">
              <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
              <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
            ]>
            <urlset><url><loc>https://example.com/&secret;&b;</loc></url></urlset>"#;
        let sitemap = parse_sitemap(xml).unwrap();
        assert_eq!(urls(&sitemap.locations), ["https://example.com/"]);
    }

    #[test]
    fn a_sitemap_is_read_up_to_the_protocols_maximum() {
        let mut xml = String::from("<urlset>");
        for i in 0..=MAX_SITEMAP_ENTRIES {
            xml.push_str(&format!("<url><loc>https://example.com/{i}</loc></url>"));
        }
        xml.push_str("</urlset>");
        let sitemap = parse_sitemap(xml.as_bytes()).unwrap();
        assert_eq!(sitemap.locations.len(), MAX_SITEMAP_ENTRIES);
        assert!(sitemap.truncated);
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_gzipped_sitemap_inflates_within_its_bound_and_a_bomb_is_refused() {
        let xml = b"<urlset><url><loc>https://example.com/a</loc></url></urlset>";
        let inflated = gunzip(&gzip(xml), MAX_SITEMAP_BYTES).unwrap();
        assert_eq!(inflated, xml);
        assert_eq!(
            gunzip(&gzip(xml), xml.len() as u64).unwrap(),
            xml,
            "exactly the bound"
        );
        // Two gzip members, as `cat a.gz b.gz` makes: both are read.
        let mut two = gzip(b"https://example.com/a\n");
        two.extend(gzip(b"https://example.com/b\n"));
        assert_eq!(
            gunzip(&two, 1024).unwrap(),
            b"https://example.com/a\nhttps://example.com/b\n"
        );

        // 64 MiB of zeros in about 64 KiB: refused once past the bound, whatever is left.
        let bomb = gzip(&vec![0; 64 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024, "{}", bomb.len());
        assert_eq!(
            gunzip(&bomb, MAX_SITEMAP_BYTES),
            Err(GzipError::TooLarge {
                limit: MAX_SITEMAP_BYTES
            })
        );
        assert_eq!(
            gunzip(&gzip(xml), 10),
            Err(GzipError::TooLarge { limit: 10 })
        );

        assert!(matches!(gunzip(xml, 1024), Err(GzipError::Invalid(_))));
        assert!(matches!(gunzip(b"", 1024), Err(GzipError::Invalid(_))));
        let mut cut = gzip(xml);
        cut.truncate(cut.len() / 2);
        assert!(matches!(gunzip(&cut, 1024), Err(GzipError::Invalid(_))));
    }

    #[test]
    fn a_sitemaps_format_follows_its_type_and_a_gz_path() {
        let plain = Url::parse("https://example.com/sitemap.xml").unwrap();
        let gz = Url::parse("https://example.com/sitemap.XML.GZ").unwrap();
        for (media, url, format) in [
            ("application/xml", &plain, Some(SitemapFormat::Xml)),
            ("text/xml", &plain, Some(SitemapFormat::Xml)),
            ("text/plain", &plain, Some(SitemapFormat::Text)),
            ("application/gzip", &plain, Some(SitemapFormat::Gzip)),
            ("application/x-gzip", &gz, Some(SitemapFormat::Gzip)),
            ("application/octet-stream", &gz, Some(SitemapFormat::Gzip)),
            ("application/octet-stream", &plain, None),
            ("text/html", &gz, None),
        ] {
            assert_eq!(sitemap_format(media, url), format, "{media} {url}");
        }
        for media in SITEMAP_MEDIA_TYPES {
            assert!(sitemap_format(media, &gz).is_some(), "{media}");
        }
    }

    #[test]
    fn a_text_sitemap_lists_one_page_a_line() {
        let text = b"\xEF\xBB\xBFhttps://example.com/a\r\n\n  https://example.com/b#top  \n\
            https://example.com/a\nftp://example.com/c\nnot a url\n\xFF\xFE\n";
        let sitemap = parse_sitemap_document(text, SitemapFormat::Text).unwrap();
        assert_eq!(sitemap.kind, SitemapKind::Pages);
        assert_eq!(
            urls(&sitemap.locations),
            ["https://example.com/a", "https://example.com/b"]
        );
        assert_eq!(
            sitemap.invalid, 3,
            "ftp, words and bytes that are not UTF-8"
        );
        assert_eq!(
            parse_sitemap_document(b"", SitemapFormat::Text)
                .unwrap()
                .locations,
            []
        );
        assert_eq!(
            parse_sitemap_document(b"Hello,\nthis is a letter.\n", SitemapFormat::Text),
            Err(SitemapError::NoUrlLines)
        );
        // XML served as text (or gzipped) is read as XML; XML is never read as text.
        let xml = b"  <urlset><url><loc>https://example.com/x</loc></url></urlset>";
        for format in [SitemapFormat::Text, SitemapFormat::Gzip, SitemapFormat::Xml] {
            let sitemap = parse_sitemap_document(xml, format).unwrap();
            assert_eq!(urls(&sitemap.locations), ["https://example.com/x"]);
        }
        assert_eq!(
            parse_sitemap_document(b"https://example.com/x", SitemapFormat::Xml),
            Err(SitemapError::NotASitemap)
        );

        let mut many = String::new();
        for i in 0..=MAX_SITEMAP_ENTRIES {
            many.push_str(&format!("https://example.com/{i}\n"));
        }
        let sitemap = parse_text_sitemap(many.as_bytes()).unwrap();
        assert_eq!(sitemap.locations.len(), MAX_SITEMAP_ENTRIES);
        assert!(sitemap.truncated);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn any_bytes_as_a_sitemap_never_panic_and_stay_bounded(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
        ) {
            for format in [SitemapFormat::Xml, SitemapFormat::Text, SitemapFormat::Gzip] {
                if let Ok(sitemap) = parse_sitemap_document(&body, format) {
                    proptest::prop_assert!(sitemap.locations.len() <= MAX_SITEMAP_ENTRIES);
                    proptest::prop_assert!(
                        sitemap.locations.iter().all(|u| u.fragment().is_none())
                    );
                }
            }
            if let Ok(inflated) = gunzip(&body, 4096) {
                proptest::prop_assert!(inflated.len() <= 4096);
            }
            let mut gzipped = gzip(&body);
            gzipped.truncate(gzipped.len().saturating_sub(body.len() % 7));
            if let Ok(inflated) = gunzip(&gzipped, 100) {
                proptest::prop_assert!(inflated.len() <= 100);
            }
        }
    }

    #[test]
    fn a_pages_links_are_resolved_once_each_and_only_real_links_count() {
        let page = Url::parse("https://example.com/docs/intro.html?lang=en").unwrap();
        let html = r##"<html><head><title><a href="/in-title">x</a></title>
            <style>a[href="/in-style"] {}</style>
            <script>document.write('<a href="/in-script">x</a>')</script></head>
            <body>
              <a href="guide.html">Guide</a>
              <a href="guide.html#part-2">Guide, part 2</a>
              <A HREF="../faq?q=1">FAQ</A>
              <a href=" https://other.example/page ">elsewhere</a>
              <a href="//example.com:8443/port">another port</a>
              <a href="mailto:desk@example.com">mail</a>
              <a href="javascript:alert(1)">js</a>
              <a href="#top">top</a>
              <a href="/private" rel="external NoFollow">no</a>
              <a>no href</a>
              <template><a href="/in-template">x</a></template>
              <map><area href="/area" alt=""></map>
              <textarea><a href="/in-textarea"></a></textarea>
            </body></html>"##;
        assert_eq!(
            urls(&page_links(html, &page)),
            [
                "https://example.com/docs/guide.html",
                "https://example.com/faq?q=1",
                "https://other.example/page",
                "https://example.com:8443/port",
                "https://example.com/docs/intro.html?lang=en",
                "https://example.com/area",
            ]
        );
    }

    #[test]
    fn the_first_base_element_moves_where_relative_links_point() {
        let page = Url::parse("https://example.com/a/b.html").unwrap();
        let html = r#"<base href="https://example.com/root/"><base href="/ignored/">
            <a href="page">p</a>"#;
        assert_eq!(
            urls(&page_links(html, &page)),
            ["https://example.com/root/page"]
        );
        // A base that is no http(s) URL is ignored.
        let html = r#"<base href="javascript:x"><a href="page">p</a>"#;
        assert_eq!(
            urls(&page_links(html, &page)),
            ["https://example.com/a/page"]
        );
    }

    #[test]
    fn hostile_markup_gives_no_more_than_the_bound_and_never_panics() {
        let page = Url::parse("http://example.com/").unwrap();
        let mut html = String::new();
        for i in 0..MAX_PAGE_LINKS + 50 {
            html.push_str(&format!("<a href=/p{i}>"));
        }
        assert_eq!(page_links(&html, &page).len(), MAX_PAGE_LINKS);
        let long = format!("<a href=\"/{}\">", "x".repeat(5000));
        assert!(page_links(&long, &page).is_empty());
        for junk in [
            "<a href",
            "<a href='",
            "<<<>>><a href=\"\u{0}\">",
            "\u{feff}<a",
        ] {
            let _ = page_links(junk, &page);
        }
    }

    #[test]
    fn the_same_site_means_scheme_host_and_port() {
        let site = Url::parse("https://example.com/start").unwrap();
        for (other, same) in [
            ("https://example.com/other?x", true),
            ("https://example.com:443/explicit-default-port", true),
            ("https://EXAMPLE.com/case", true),
            ("http://example.com/", false),
            ("https://example.com:8443/", false),
            ("https://www.example.com/", false),
            ("https://example.com.evil.test/", false),
        ] {
            assert_eq!(
                same_site(&site, &Url::parse(other).unwrap()),
                same,
                "{other}"
            );
        }
    }
}
