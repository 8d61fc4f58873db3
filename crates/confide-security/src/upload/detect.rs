//! What a file's content is, from its magic bytes (and, for text, from all of it).

use std::io::{self, Read, Seek, SeekFrom};

/// What the content looks like, whatever its name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Content {
    Pdf,
    Png,
    Jpeg,
    Webp,
    /// A zip archive (a DOCX when it holds the entries a DOCX has).
    Zip,
    /// UTF-8 text that starts with HTML markup.
    Html,
    /// UTF-8 text (a BOM allowed) without NUL bytes.
    Text,
    /// None of the above.
    Other,
}

impl Content {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Content::Pdf => "a PDF document",
            Content::Png => "a PNG image",
            Content::Jpeg => "a JPEG image",
            Content::Webp => "a WebP image",
            Content::Zip => "a zip archive",
            Content::Html => "HTML",
            Content::Text => "plain text",
            Content::Other => "of no accepted type",
        }
    }
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
const HEAD_BYTES: u64 = 1024;
const TEXT_CHUNK_BYTES: usize = 64 * 1024;

/// Detects what `content` (of `size` bytes, read from its start) is.
pub(super) fn detect<R: Read + Seek>(content: &mut R, size: u64) -> io::Result<Content> {
    content.seek(SeekFrom::Start(0))?;
    let mut head = Vec::new();
    (&mut *content)
        .take(HEAD_BYTES.min(size))
        .read_to_end(&mut head)?;

    let magic = if head.starts_with(b"%PDF-") {
        Content::Pdf
    } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Content::Png
    } else if head.starts_with(b"\xFF\xD8\xFF") {
        Content::Jpeg
    } else if head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP" {
        Content::Webp
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Content::Zip
    } else {
        Content::Other
    };
    if magic != Content::Other {
        return Ok(magic);
    }

    let bom = if head.starts_with(UTF8_BOM) {
        UTF8_BOM.len() as u64
    } else {
        0
    };
    content.seek(SeekFrom::Start(bom))?;
    if !is_utf8_without_nul(&mut (&mut *content).take(size - bom))? {
        return Ok(Content::Other);
    }
    let text = head.get(bom as usize..).unwrap_or_default();
    Ok(if starts_with_html(text) {
        Content::Html
    } else {
        Content::Text
    })
}

/// Whether everything `reader` yields is UTF-8 without NUL, read in bounded chunks.
fn is_utf8_without_nul(reader: &mut impl Read) -> io::Result<bool> {
    let mut buffer = vec![0u8; TEXT_CHUNK_BYTES];
    // A character cut by a chunk boundary (at most three bytes) is carried to the next chunk.
    let mut carried: Vec<u8> = Vec::with_capacity(4);
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            return Ok(carried.is_empty());
        }
        let mut chunk = std::mem::take(&mut carried);
        chunk.extend_from_slice(&buffer[..read]);
        if chunk.contains(&0) {
            return Ok(false);
        }
        match std::str::from_utf8(&chunk) {
            Ok(_) => {}
            Err(error) if error.error_len().is_none() => {
                carried = chunk[error.valid_up_to()..].to_vec();
            }
            Err(_) => return Ok(false),
        }
    }
}

/// Whether text starts (after whitespace, and an XML declaration for XHTML) with one of the
/// markups the WHATWG MIME sniffing standard takes for HTML.
fn starts_with_html(text: &[u8]) -> bool {
    let mut text = trim_start(text);
    if starts_with_ignore_case(text, b"<?xml") {
        match text.windows(2).position(|pair| pair == b"?>") {
            Some(end) => text = trim_start(&text[end + 2..]),
            None => return false,
        }
    }
    const MARKUPS: &[&[u8]] = &[
        b"<!DOCTYPE HTML",
        b"<HTML",
        b"<HEAD",
        b"<SCRIPT",
        b"<IFRAME",
        b"<H1",
        b"<DIV",
        b"<FONT",
        b"<TABLE",
        b"<A",
        b"<STYLE",
        b"<TITLE",
        b"<B",
        b"<BODY",
        b"<BR",
        b"<P",
        b"<!--",
    ];
    MARKUPS.iter().any(|markup| {
        starts_with_ignore_case(text, markup) && matches!(text.get(markup.len()), Some(b' ' | b'>'))
    })
}

fn trim_start(text: &[u8]) -> &[u8] {
    let start = text
        .iter()
        .position(|byte| !matches!(byte, b'\t' | b'\n' | b'\x0C' | b'\r' | b' '))
        .unwrap_or(text.len());
    &text[start..]
}

fn starts_with_ignore_case(text: &[u8], prefix: &[u8]) -> bool {
    text.get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}
