//! PDF to text, page by page, with pdf-extract (and the lopdf it re-exports).
//!
//! pdf-extract panics, and can abort, on malformed files by design: this runs only in the
//! extraction child (see `sandbox`), never in the server. It is what
//! `pdf_extract::extract_text_from_mem_by_pages` does, except that a page that fails leaves an
//! empty page instead of silently ending the document, so later pages keep their numbers, and
//! that the title is read from the document information.

use pdf_extract::encryption::DecryptionError;
use pdf_extract::{Document, Error as PdfError, Object, PlainTextOutput};

use super::{Collector, ExtractError, MAX_TITLE_CHARS};

pub(crate) fn extract(bytes: &[u8], out: &mut Collector) -> Result<Option<String>, ExtractError> {
    let mut document = Document::load_mem(bytes).map_err(pdf_error)?;
    // Like pdf-extract: a document encrypted with an empty user password opens; any other
    // password is one we do not have.
    if document.is_encrypted() {
        document.decrypt("").map_err(|_| ExtractError::Encrypted)?;
    }
    let page_numbers: Vec<u32> = document.get_pages().into_keys().collect();
    if page_numbers.is_empty() {
        return Err(ExtractError::Unreadable("pdf: no pages".into()));
    }
    for number in page_numbers {
        if out.is_full() {
            break;
        }
        let mut text = String::new();
        let mut output = PlainTextOutput::new(&mut text);
        if pdf_extract::output_doc_page(&document, &mut output, number).is_ok() {
            out.push_str(&text);
        }
        out.end_page();
    }
    Ok(title(&document))
}

fn pdf_error(error: PdfError) -> ExtractError {
    match error {
        PdfError::Decryption(DecryptionError::IncorrectPassword) => ExtractError::Encrypted,
        error => ExtractError::Unreadable(format!("pdf: {error}")),
    }
}

/// `/Title` of the document information dictionary.
fn title(document: &Document) -> Option<String> {
    let info = document.trailer.get_deref(b"Info", document).ok()?;
    let Object::Dictionary(info) = info else {
        return None;
    };
    let title = info.get_deref(b"Title", document).ok()?;
    let title = pdf_extract::decode_text_string(title).ok()?;
    let title: String = title.chars().take(MAX_TITLE_CHARS).collect();
    Some(title.trim().to_owned()).filter(|title| !title.is_empty())
}
