//! DOCX to text: the zip's `word/document.xml` (then the footnotes and endnotes) read with
//! quick-xml, each part inflated through `take(limit)` so a lying header cannot make it larger.
//! Only the text of `w:t` elements counts: deleted text (`w:delText`), field codes
//! (`w:instrText`) and the fallback copy of text boxes (`mc:Fallback`) are left out. quick-xml
//! never expands DTD entities, so entity bombs have nothing to expand.

use std::io::{Cursor, Read};

use quick_xml::Reader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesRef, Event};
use zip::ZipArchive;
use zip::result::ZipError;

use super::{Collector, ExtractError, MAX_TITLE_CHARS};

const TEXT_PARTS: [&str; 3] = [
    "word/document.xml",
    "word/footnotes.xml",
    "word/endnotes.xml",
];
const CORE_PROPERTIES: &str = "docProps/core.xml";
const MAX_CORE_PROPERTIES_BYTES: u64 = 1024 * 1024;

/// Office saves a password-protected DOCX as an OLE compound file holding the encrypted zip.
const COMPOUND_FILE_MAGIC: &[u8] = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1";

pub(crate) fn extract(
    bytes: &[u8],
    max_part_bytes: u64,
    out: &mut Collector,
) -> Result<Option<String>, ExtractError> {
    if bytes.starts_with(COMPOUND_FILE_MAGIC) {
        return Err(if names_an_encryption_stream(bytes) {
            ExtractError::Encrypted
        } else {
            ExtractError::Unreadable("an OLE compound file, not a zip".into())
        });
    }
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(zip_error)?;
    for (at, name) in TEXT_PARTS.into_iter().enumerate() {
        match read_part(&mut archive, name, max_part_bytes)? {
            Some(xml) => part_text(&xml, out)?,
            None if at == 0 => {
                return Err(ExtractError::Unreadable("no word/document.xml".into()));
            }
            None => {}
        }
        out.paragraph();
    }
    // The title is a nicety: a damaged core.xml does not make the document unreadable.
    let title = read_part(&mut archive, CORE_PROPERTIES, MAX_CORE_PROPERTIES_BYTES)
        .ok()
        .flatten()
        .and_then(|xml| core_title(&xml));
    Ok(title)
}

/// The part's inflated bytes, `None` if the archive has no such part.
fn read_part(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    name: &str,
    max_bytes: u64,
) -> Result<Option<Vec<u8>>, ExtractError> {
    let entry = match archive.by_name(name) {
        Ok(entry) => entry,
        Err(ZipError::FileNotFound) => return Ok(None),
        Err(error) => return Err(zip_error(error)),
    };
    let mut xml = Vec::new();
    entry
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut xml)
        .map_err(|error| ExtractError::Unreadable(format!("{name}: {error}")))?;
    if u64::try_from(xml.len()).map_or(true, |len| len > max_bytes) {
        return Err(ExtractError::TooLarge);
    }
    Ok(Some(xml))
}

fn zip_error(error: ZipError) -> ExtractError {
    match error {
        ZipError::UnsupportedArchive(ZipError::PASSWORD_REQUIRED) | ZipError::InvalidPassword => {
            ExtractError::Encrypted
        }
        error => ExtractError::Unreadable(format!("zip: {error}")),
    }
}

fn xml_error(error: impl std::fmt::Display) -> ExtractError {
    ExtractError::Unreadable(format!("xml: {error}"))
}

/// The compound file's directory names its streams in UTF-16LE; an encrypted Office document
/// has an `EncryptionInfo` stream.
fn names_an_encryption_stream(bytes: &[u8]) -> bool {
    let name: Vec<u8> = "EncryptionInfo"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    bytes.windows(name.len()).any(|window| window == name)
}

fn part_text(xml: &[u8], out: &mut Collector) -> Result<(), ExtractError> {
    let mut reader = Reader::from_reader(xml);
    // Depths: inside a `w:t`, inside tab stop definitions (`w:tabs`, whose `w:tab`s are not tab
    // characters), inside `mc:Fallback` (a second copy of what `mc:Choice` holds).
    let (mut text, mut tab_stops, mut fallback) = (0u32, 0u32, 0u32);
    while !out.is_full() {
        match reader.read_event().map_err(xml_error)? {
            Event::Start(element) => match element.local_name().as_ref() {
                b"Fallback" => fallback += 1,
                _ if fallback > 0 => {}
                b"t" => text += 1,
                b"tabs" => tab_stops += 1,
                name => inline_mark(name, tab_stops, out),
            },
            Event::Empty(element) if fallback == 0 => {
                inline_mark(element.local_name().as_ref(), tab_stops, out);
            }
            Event::End(element) => match element.local_name().as_ref() {
                b"Fallback" => fallback = fallback.saturating_sub(1),
                _ if fallback > 0 => {}
                b"t" => text = text.saturating_sub(1),
                b"tabs" => tab_stops = tab_stops.saturating_sub(1),
                b"p" => out.paragraph(),
                b"tc" => out.push('\t'),
                b"tr" => out.push('\n'),
                _ => {}
            },
            Event::Text(content) if text > 0 && fallback == 0 => {
                out.push_str(&content.xml10_content().map_err(xml_error)?);
            }
            Event::CData(content) if text > 0 && fallback == 0 => {
                out.push_str(&content.decode().map_err(xml_error)?);
            }
            Event::GeneralRef(reference) if text > 0 && fallback == 0 => {
                push_reference(&reference, out)?;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(())
}

/// Marks inside a run that stand for characters.
fn inline_mark(name: &[u8], tab_stops: u32, out: &mut Collector) {
    match name {
        b"tab" if tab_stops == 0 => out.push('\t'),
        b"br" | b"cr" => out.push('\n'),
        b"noBreakHyphen" => out.push('-'),
        _ => {}
    }
}

/// `&amp;`, `&#233;`; any other entity would need a DTD, which is never read.
fn push_reference(reference: &BytesRef<'_>, out: &mut Collector) -> Result<(), ExtractError> {
    if let Some(c) = reference.resolve_char_ref().map_err(xml_error)? {
        out.push(c);
    } else if let Some(text) = resolve_predefined_entity(&reference.decode().map_err(xml_error)?) {
        out.push_str(text);
    }
    Ok(())
}

/// `dc:title` of the core properties.
fn core_title(xml: &[u8]) -> Option<String> {
    let mut reader = Reader::from_reader(xml);
    let mut in_title = false;
    let mut title = Collector::new(MAX_TITLE_CHARS * 4);
    loop {
        match reader.read_event().ok()? {
            Event::Start(element) if element.local_name().as_ref() == b"title" => in_title = true,
            Event::End(element) if element.local_name().as_ref() == b"title" => break,
            Event::Text(content) if in_title => title.push_str(&content.xml10_content().ok()?),
            Event::GeneralRef(reference) if in_title => {
                push_reference(&reference, &mut title).ok()?
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let title: String = title
        .finish(None)
        .pages
        .concat()
        .chars()
        .take(MAX_TITLE_CHARS)
        .collect();
    Some(title.trim().to_owned()).filter(|title| !title.is_empty())
}
