//! Upload checks: is this file, with this name, acceptable for this purpose?
//!
//! [`check_upload`] takes what the caller streamed to a temporary file (under the purpose's size
//! bound) and answers with the file's kind and a safe display name, or a [`Rejection`] with a
//! stable code for the API and the audit log:
//!
//! - the name is reduced to a safe display name ([`DisplayName`]); traversal attempts are refused;
//! - the size is within the purpose's bound ([`UploadLimits`]);
//! - the extension is on the purpose's allowlist ([`Purpose::allows`]): training material is
//!   PDF, DOCX, text, Markdown, HTML or CSV; avatars are PNG, JPEG or WebP (never SVG);
//! - the content's magic bytes agree with the extension (a PNG named `.jpg` is refused);
//! - a DOCX (a zip) is bounded in entries, uncompressed size and compression ratio, from its
//!   central directory and again while every entry is really inflated ([`ArchiveLimits`]);
//! - an image's width and height, read from its header, are within the bound on a side
//!   ([`UploadLimits::image_max_side`]), so a small file cannot be a gigantic picture.
//!
//! The display name is for showing only. Stored objects are named by random ids, never by
//! anything the uploader chose, so no name can reach a storage path.
//!
//! The checks read and inflate the whole file: call them on the blocking pool
//! (`tokio::task::spawn_blocking`), not on the async runtime's threads.

mod archive;
mod detect;
mod filename;
mod image;

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};

use serde::{Deserialize, Serialize};

pub use archive::ArchiveLimits;
pub use filename::{DisplayName, FilenameProblem, MAX_DISPLAY_NAME_BYTES, Traversal};
pub use image::Dimensions;

use detect::Content;

/// What an upload is for; each purpose has its own allowlist and size bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Material a bot learns from (knowledge sources).
    Training,
    /// A bot's or a user's picture, shown in the widget and the dashboard.
    Avatar,
}

impl Purpose {
    /// The kinds of file this purpose accepts.
    pub fn allowed_kinds(self) -> &'static [FileKind] {
        match self {
            Purpose::Training => &[
                FileKind::Pdf,
                FileKind::Docx,
                FileKind::Txt,
                FileKind::Markdown,
                FileKind::Html,
                FileKind::Csv,
            ],
            // Never SVG: it is a document that can carry scripts, not a picture.
            Purpose::Avatar => &[FileKind::Png, FileKind::Jpeg, FileKind::Webp],
        }
    }

    /// Whether this purpose accepts `kind`.
    pub fn allows(self, kind: FileKind) -> bool {
        self.allowed_kinds().contains(&kind)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Training => "training",
            Purpose::Avatar => "avatar",
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind of file Confide accepts somewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Pdf,
    Docx,
    Txt,
    Markdown,
    Html,
    Csv,
    Png,
    Jpeg,
    Webp,
}

impl FileKind {
    /// The kind a (lower- or upper-case) extension names, if any.
    pub fn from_extension(extension: &str) -> Option<FileKind> {
        let kind = match extension.to_ascii_lowercase().as_str() {
            "pdf" => FileKind::Pdf,
            "docx" => FileKind::Docx,
            "txt" => FileKind::Txt,
            "md" | "markdown" => FileKind::Markdown,
            "html" | "htm" => FileKind::Html,
            "csv" => FileKind::Csv,
            "png" => FileKind::Png,
            "jpg" | "jpeg" => FileKind::Jpeg,
            "webp" => FileKind::Webp,
            _ => return None,
        };
        Some(kind)
    }

    /// Whether this is a picture (its pixel size is checked too).
    pub fn is_image(self) -> bool {
        matches!(self, FileKind::Png | FileKind::Jpeg | FileKind::Webp)
    }

    /// The media type to store and serve the file with.
    pub fn media_type(self) -> &'static str {
        match self {
            FileKind::Pdf => "application/pdf",
            FileKind::Docx => {
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            }
            FileKind::Txt => "text/plain; charset=utf-8",
            FileKind::Markdown => "text/markdown; charset=utf-8",
            FileKind::Html => "text/html; charset=utf-8",
            FileKind::Csv => "text/csv; charset=utf-8",
            FileKind::Png => "image/png",
            FileKind::Jpeg => "image/jpeg",
            FileKind::Webp => "image/webp",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Pdf => "pdf",
            FileKind::Docx => "docx",
            FileKind::Txt => "txt",
            FileKind::Markdown => "markdown",
            FileKind::Html => "html",
            FileKind::Csv => "csv",
            FileKind::Png => "png",
            FileKind::Jpeg => "jpeg",
            FileKind::Webp => "webp",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Size bounds per purpose and the bounds on archives inside formats; part of the server's
/// configuration, with defaults that suit most deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadLimits {
    /// Largest training file, in bytes (default 20 MiB).
    pub training_max_bytes: u64,
    /// Largest avatar, in bytes (default 2 MiB).
    pub avatar_max_bytes: u64,
    /// Largest width or height of an image (an avatar), in pixels, as its header declares it
    /// (default 4096).
    pub image_max_side: u32,
    /// Bounds on zip-based formats (DOCX).
    pub archive: ArchiveLimits,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            training_max_bytes: 20 * 1024 * 1024,
            avatar_max_bytes: 2 * 1024 * 1024,
            image_max_side: 4096,
            archive: ArchiveLimits::default(),
        }
    }
}

impl UploadLimits {
    /// The size bound for `purpose`, in bytes.
    pub fn max_bytes(&self, purpose: Purpose) -> u64 {
        match purpose {
            Purpose::Training => self.training_max_bytes,
            Purpose::Avatar => self.avatar_max_bytes,
        }
    }
}

/// An upload that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedUpload {
    /// What the file is, as its content and its name agree.
    pub kind: FileKind,
    /// The name to show; never a storage path.
    pub display_name: DisplayName,
    /// Its size in bytes.
    pub size: u64,
    /// An image's width and height; `None` for documents.
    pub dimensions: Option<Dimensions>,
}

/// Why an upload is refused: the uploader's doing, answered with a 4xx and audited with its code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The name cannot be made into a display name.
    #[error("the file name is not usable: {0}")]
    InvalidFilename(FilenameProblem),
    /// The name is a path that tries to leave its directory.
    #[error("the file name is a path that tries to leave its folder ({0})")]
    PathTraversal(Traversal),
    /// The file has no content.
    #[error("the file is empty")]
    Empty,
    /// The file is larger than the purpose allows.
    #[error("the file is {size} bytes; at most {limit} bytes are accepted for {purpose}")]
    TooLarge {
        purpose: Purpose,
        size: u64,
        limit: u64,
    },
    /// The extension is not on the purpose's allowlist (or there is none).
    #[error("{} are not accepted for {purpose}; accepted: {}", extension_label(.extension), kinds_label(*.purpose))]
    UnsupportedType {
        purpose: Purpose,
        /// The name's extension, lower-cased; `None` when it has none.
        extension: Option<String>,
    },
    /// The content is not what the name says.
    #[error("the file is named as {claimed} but its content is {found}")]
    TypeMismatch {
        /// What the extension says.
        claimed: FileKind,
        /// What the content looks like.
        found: &'static str,
    },
    /// An archive inside the format has more entries than allowed.
    #[error("the archive has {entries} entries; at most {limit} are accepted")]
    ArchiveTooManyEntries { entries: u64, limit: u64 },
    /// An archive inside the format unpacks to more than allowed.
    #[error("the archive unpacks to more than {limit} bytes")]
    ArchiveTooLarge { limit: u64 },
    /// An archive inside the format is compressed more than real documents are (a zip bomb).
    #[error("the archive is compressed more than {limit} to 1")]
    ArchiveRatio { limit: u64 },
    /// An archive inside the format is malformed, encrypted or uses what we do not read.
    #[error("the archive is not acceptable: {0}")]
    ArchiveInvalid(&'static str),
    /// An image whose header does not say its width and height.
    #[error("the image's header is missing or malformed")]
    InvalidImage,
    /// An image wider or taller than allowed.
    #[error("the image is {width}x{height} pixels; at most {limit} pixels a side are accepted")]
    ImageTooLarge { width: u32, height: u32, limit: u32 },
}

impl Rejection {
    /// Stable snake_case code for API error bodies and the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::InvalidFilename(_) => "invalid_filename",
            Rejection::PathTraversal(_) => "path_traversal",
            Rejection::Empty => "empty",
            Rejection::TooLarge { .. } => "too_large",
            Rejection::UnsupportedType { .. } => "unsupported_type",
            Rejection::TypeMismatch { .. } => "type_mismatch",
            Rejection::ArchiveTooManyEntries { .. } => "archive_too_many_entries",
            Rejection::ArchiveTooLarge { .. } => "archive_too_large",
            Rejection::ArchiveRatio { .. } => "archive_ratio",
            Rejection::ArchiveInvalid(_) => "archive_invalid",
            Rejection::InvalidImage => "invalid_image",
            Rejection::ImageTooLarge { .. } => "image_too_large",
        }
    }
}

fn extension_label(extension: &Option<String>) -> String {
    match extension {
        Some(extension) => format!(".{extension} files"),
        None => "files without an extension".to_owned(),
    }
}

fn kinds_label(purpose: Purpose) -> String {
    let names: Vec<&str> = purpose.allowed_kinds().iter().map(|k| k.as_str()).collect();
    names.join(", ")
}

/// What [`check_upload`] can fail with: a [`Rejection`] of the file, or the caller's reader
/// failing (a server fault, not the uploader's).
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("reading the uploaded file failed: {0}")]
    Io(#[from] io::Error),
}

impl UploadError {
    /// The rejection, when the file was refused (rather than unreadable).
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            UploadError::Rejected(rejection) => Some(rejection),
            UploadError::Io(_) => None,
        }
    }
}

/// Checks an upload held in memory; see [`check_upload`].
pub fn check_upload_bytes(
    purpose: Purpose,
    filename: &str,
    content: &[u8],
    limits: &UploadLimits,
) -> Result<CheckedUpload, UploadError> {
    check_upload(purpose, filename, &mut io::Cursor::new(content), limits)
}

/// Checks an upload: its name, size, type and (for zip-based formats) archive bounds.
///
/// `content` is the whole file as the caller stored it (a temporary file, streamed under the
/// purpose's size bound); it is read from its start and its position is left anywhere. Nothing
/// else is read or written. The name's problems come first, so a traversal attempt is reported
/// as one whatever the content.
pub fn check_upload<R: Read + Seek>(
    purpose: Purpose,
    filename: &str,
    content: &mut R,
    limits: &UploadLimits,
) -> Result<CheckedUpload, UploadError> {
    let display_name = DisplayName::parse(filename)?;

    let size = content.seek(SeekFrom::End(0))?;
    content.seek(SeekFrom::Start(0))?;
    if size == 0 {
        return Err(Rejection::Empty.into());
    }
    let limit = limits.max_bytes(purpose);
    if size > limit {
        return Err(Rejection::TooLarge {
            purpose,
            size,
            limit,
        }
        .into());
    }

    let extension = display_name.extension().map(str::to_ascii_lowercase);
    let claimed = extension
        .as_deref()
        .and_then(FileKind::from_extension)
        .filter(|kind| purpose.allows(*kind));
    let Some(claimed) = claimed else {
        return Err(Rejection::UnsupportedType { purpose, extension }.into());
    };

    let found = detect::detect(&mut *content, size)?;
    let agrees = match claimed {
        FileKind::Pdf => found == Content::Pdf,
        FileKind::Png => found == Content::Png,
        FileKind::Jpeg => found == Content::Jpeg,
        FileKind::Webp => found == Content::Webp,
        FileKind::Html => found == Content::Html,
        // Markdown may start with inline HTML (`<p align="center">` in many READMEs).
        FileKind::Markdown => matches!(found, Content::Text | Content::Html),
        // Text that a browser would sniff as HTML is not plain text or CSV.
        FileKind::Txt | FileKind::Csv => found == Content::Text,
        FileKind::Docx => found == Content::Zip,
    };
    if !agrees {
        return Err(Rejection::TypeMismatch {
            claimed,
            found: found.describe(),
        }
        .into());
    }
    if claimed == FileKind::Docx {
        archive::check_docx(&mut *content, size, &limits.archive)?;
    }
    let dimensions = if claimed.is_image() {
        let Some(found) = image::dimensions(claimed, &mut *content, size)? else {
            return Err(Rejection::InvalidImage.into());
        };
        let limit = limits.image_max_side;
        if found.width > limit || found.height > limit {
            return Err(Rejection::ImageTooLarge {
                width: found.width,
                height: found.height,
                limit,
            }
            .into());
        }
        Some(found)
    } else {
        None
    };

    Ok(CheckedUpload {
        kind: claimed,
        display_name,
        size,
        dimensions,
    })
}

#[cfg(test)]
mod tests;
