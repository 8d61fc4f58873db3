//! Bounds on the zip archive inside a DOCX: entry count, uncompressed size, compression ratio.
//!
//! Every bound is checked on what the central directory declares; then each entry is inflated and
//! must come out at exactly its declared size (inflating stops one byte past it). The real bytes
//! are thus no more than the declared ones, so the bounds hold for them too, and a header that
//! lies about sizes gets no further than one byte past its own claim.

use std::io::{self, Read, Seek, SeekFrom};

use serde::{Deserialize, Serialize};
use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

use super::{FileKind, Rejection, UploadError};

/// Bounds on archives inside formats (a DOCX is a zip). The defaults follow Apache POI's
/// (a ratio of 100 to 1) with room for large real documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveLimits {
    /// Most entries (default 1000; a long Word document with pictures has a few dozen).
    pub max_entries: u64,
    /// Most bytes all entries inflate to together (default 100 MiB).
    pub max_uncompressed_bytes: u64,
    /// Highest compression ratio, uncompressed to compressed, of one entry and of the whole
    /// archive (default 100).
    pub max_ratio: u64,
    /// Entries (and archives) that inflate to no more than this are not held to the ratio
    /// (default 1 MiB): small, very regular parts are harmless.
    pub ratio_grace_bytes: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_entries: 1_000,
            max_uncompressed_bytes: 100 * 1024 * 1024,
            max_ratio: 100,
            ratio_grace_bytes: 1024 * 1024,
        }
    }
}

/// The entries every DOCX has (ECMA-376 part 2: the content types and the main document part).
const DOCX_ENTRIES: [&str; 2] = ["[Content_Types].xml", "word/document.xml"];

/// Checks that the zip `content` (`size` bytes) is a DOCX within `limits`.
pub(super) fn check_docx<R: Read + Seek>(
    content: &mut R,
    size: u64,
    limits: &ArchiveLimits,
) -> Result<(), UploadError> {
    // Before the zip reader parses (and allocates for) every entry of the central directory.
    match declared_entries(content, size)? {
        Some(entries) if entries > limits.max_entries => {
            return Err(too_many(entries, limits));
        }
        Some(_) => {}
        None => return Err(invalid("it has no readable central directory")),
    }
    content.seek(SeekFrom::Start(0))?;
    let mut archive = ZipArchive::new(&mut *content).map_err(zip_error)?;
    let entries = archive.len() as u64;
    if entries > limits.max_entries {
        return Err(too_many(entries, limits));
    }
    if archive.has_duplicate_names() {
        return Err(invalid("two entries have the same name"));
    }

    // What the central directory declares.
    let mut declared_total: u64 = 0;
    for index in 0..archive.len() {
        let entry = archive.by_index_data(index).map_err(zip_error)?;
        if entry.encrypted() {
            return Err(invalid("an entry is encrypted"));
        }
        if !matches!(
            entry.compression(),
            CompressionMethod::Stored | CompressionMethod::Deflated
        ) {
            return Err(invalid(
                "an entry uses a compression method other than deflate",
            ));
        }
        if entry.enclosed_name().is_none() {
            return Err(invalid("an entry's path leaves the archive"));
        }
        declared_total = declared_total.saturating_add(entry.size());
        if declared_total > limits.max_uncompressed_bytes {
            return Err(too_large(limits));
        }
        // No entry has more compressed bytes than the file, whatever its header says.
        if over_ratio(entry.size(), entry.compressed_size().min(size), limits) {
            return Err(ratio(limits));
        }
    }
    if over_ratio(declared_total, size, limits) {
        return Err(ratio(limits));
    }
    // Entries that share compressed data (the overlapping "better zip bomb").
    if archive.has_overlapping_files().map_err(zip_error)? {
        return Err(invalid("entries overlap"));
    }
    if DOCX_ENTRIES
        .iter()
        .any(|name| archive.index_for_name(name).is_none())
    {
        return Err(Rejection::TypeMismatch {
            claimed: FileKind::Docx,
            found: "a zip archive that is not a Word document",
        }
        .into());
    }

    // What really comes out, whatever the headers said: exactly the declared size, so the
    // declared bounds above are the real ones.
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(zip_error)?;
        let declared = entry.size();
        let inflated = match io::copy(
            &mut (&mut entry).take(declared.saturating_add(1)),
            &mut io::sink(),
        ) {
            Ok(inflated) => inflated,
            Err(error) if is_content_error(&error) => {
                return Err(invalid("an entry cannot be decompressed"));
            }
            Err(error) => return Err(error.into()),
        };
        if inflated > declared {
            return Err(invalid("an entry is larger than its header says"));
        }
        if inflated < declared {
            return Err(invalid("an entry is smaller than its header says"));
        }
    }
    Ok(())
}

fn over_ratio(uncompressed: u64, compressed: u64, limits: &ArchiveLimits) -> bool {
    uncompressed > limits.ratio_grace_bytes
        && uncompressed > compressed.max(1).saturating_mul(limits.max_ratio)
}

fn too_many(entries: u64, limits: &ArchiveLimits) -> UploadError {
    Rejection::ArchiveTooManyEntries {
        entries,
        limit: limits.max_entries,
    }
    .into()
}

fn too_large(limits: &ArchiveLimits) -> UploadError {
    Rejection::ArchiveTooLarge {
        limit: limits.max_uncompressed_bytes,
    }
    .into()
}

fn ratio(limits: &ArchiveLimits) -> UploadError {
    Rejection::ArchiveRatio {
        limit: limits.max_ratio,
    }
    .into()
}

fn invalid(why: &'static str) -> UploadError {
    Rejection::ArchiveInvalid(why).into()
}

/// Errors that say the archive's bytes are wrong, rather than that reading them failed.
fn is_content_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof
    )
}

fn zip_error(error: ZipError) -> UploadError {
    match error {
        ZipError::Io(error) if !is_content_error(&error) => error.into(),
        _ => invalid("its zip structure is malformed"),
    }
}

/// The entry count the end of central directory record declares (the zip64 one when the
/// classic field overflows); `None` when there is no such record where it must be.
fn declared_entries<R: Read + Seek>(content: &mut R, size: u64) -> io::Result<Option<u64>> {
    const EOCD: &[u8; 4] = b"PK\x05\x06";
    const EOCD_BYTES: u64 = 22;
    const ZIP64_LOCATOR: &[u8; 4] = b"PK\x06\x07";
    const ZIP64_LOCATOR_BYTES: u64 = 20;
    const ZIP64_EOCD: &[u8; 4] = b"PK\x06\x06";
    const ZIP64_EOCD_BYTES: u64 = 56;
    const MAX_COMMENT_BYTES: u64 = 65_535;

    if size < EOCD_BYTES {
        return Ok(None);
    }
    let tail_start = size - size.min(EOCD_BYTES + MAX_COMMENT_BYTES);
    content.seek(SeekFrom::Start(tail_start))?;
    let mut tail = Vec::new();
    (&mut *content)
        .take(size - tail_start)
        .read_to_end(&mut tail)?;
    let last_start = tail.len().saturating_sub(EOCD_BYTES as usize);
    let Some(at) = (0..=last_start)
        .rev()
        .find(|&at| tail.get(at..at + 4) == Some(EOCD.as_slice()))
    else {
        return Ok(None);
    };
    let field = |offset: usize| {
        tail.get(at + offset..at + offset + 2)
            .map(|bytes| u16::from_le_bytes([bytes[0], bytes[1]]))
    };
    let (Some(on_disk), Some(total)) = (field(8), field(10)) else {
        return Ok(None);
    };
    if on_disk != u16::MAX && total != u16::MAX {
        return Ok(Some(u64::from(on_disk.max(total))));
    }

    // Zip64: a locator right before the record points at the zip64 record.
    let eocd_at = tail_start + at as u64;
    let Some(locator_at) = eocd_at.checked_sub(ZIP64_LOCATOR_BYTES) else {
        return Ok(None);
    };
    let mut locator = [0u8; ZIP64_LOCATOR_BYTES as usize];
    content.seek(SeekFrom::Start(locator_at))?;
    content.read_exact(&mut locator)?;
    if &locator[..4] != ZIP64_LOCATOR {
        return Ok(None);
    }
    let record_at = u64::from_le_bytes(u64_field(&locator, 8));
    if record_at.saturating_add(ZIP64_EOCD_BYTES) > locator_at {
        return Ok(None);
    }
    let mut record = [0u8; ZIP64_EOCD_BYTES as usize];
    content.seek(SeekFrom::Start(record_at))?;
    content.read_exact(&mut record)?;
    if &record[..4] != ZIP64_EOCD {
        return Ok(None);
    }
    let on_disk = u64::from_le_bytes(u64_field(&record, 24));
    let total = u64::from_le_bytes(u64_field(&record, 32));
    Ok(Some(on_disk.max(total)))
}

fn u64_field(bytes: &[u8], offset: usize) -> [u8; 8] {
    let mut field = [0u8; 8];
    field.copy_from_slice(&bytes[offset..offset + 8]);
    field
}
