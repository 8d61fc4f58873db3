//! Safe display names for uploaded files.
//!
//! An uploaded file's name is shown to people (in the dashboard, in a citation link's text) and
//! nothing else: objects are stored under random ids. Still, a name is hostile input, so it is
//! reduced to a display name that is safe to show and would be safe even if a later tool wrote
//! it to a disk: its basename (after both `/` and `\`), Unicode NFC, without control, bidi or
//! other invisible characters, without characters Windows reserves (replaced by `_`), without
//! leading or trailing dots and spaces, not a Windows device name, and at most
//! [`MAX_DISPLAY_NAME_BYTES`] bytes (cut at a character boundary, keeping the extension).
//!
//! A name that is a path trying to leave its folder is refused, not repaired, so the caller can
//! audit the attempt: `..` as a segment, an absolute path (`/…`, `\…`, `C:…`, `\\server\…`), or
//! either of those once percent-decoding (up to three rounds, for double encoding) or Unicode
//! compatibility folding (NFKC: fullwidth `．．／`) is applied. The display name itself is never
//! decoded: `%20` stays as it was sent. Decoded forms are only looked at, because a proxy, a
//! browser or a later tool may decode what we keep, and no real file name needs `%2e%2e%2f`.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

use super::Rejection;

/// The longest display name, in bytes of UTF-8 (the common file system limit).
pub const MAX_DISPLAY_NAME_BYTES: usize = 255;

/// Longer names are refused outright rather than processed.
const MAX_RAW_NAME_BYTES: usize = 4096;

/// When a long name is cut, an extension up to this long (with its dot) is kept.
const MAX_KEPT_EXTENSION_BYTES: usize = 16;

/// How a name tried to leave its folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Traversal {
    /// A `..` segment (`../x`, `a\..\x`).
    ParentSegment,
    /// An absolute path: `/x`, `\x`, `\\server\share\x`, `C:\x`, `C:x`.
    AbsolutePath,
    /// One of the above once percent-decoded or compatibility-folded (`%2e%2e%2f`, `．．／`).
    EncodedTraversal,
}

impl Traversal {
    /// Stable snake_case code for the audit log.
    pub fn code(self) -> &'static str {
        match self {
            Traversal::ParentSegment => "parent_segment",
            Traversal::AbsolutePath => "absolute_path",
            Traversal::EncodedTraversal => "encoded_traversal",
        }
    }
}

impl fmt::Display for Traversal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Traversal::ParentSegment => "it contains a `..` segment",
            Traversal::AbsolutePath => "it is an absolute path",
            Traversal::EncodedTraversal => "it contains an encoded `..` segment or absolute path",
        })
    }
}

/// Why a name cannot be made into a display name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilenameProblem {
    /// Nothing is left once unsafe characters, dots and spaces are removed.
    Empty,
    /// The name is absurdly long (over 4096 bytes) and is not processed.
    TooLong,
}

impl FilenameProblem {
    /// Stable snake_case code for the audit log.
    pub fn code(self) -> &'static str {
        match self {
            FilenameProblem::Empty => "empty",
            FilenameProblem::TooLong => "too_long",
        }
    }
}

impl fmt::Display for FilenameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FilenameProblem::Empty => "nothing is left of it once unsafe characters are removed",
            FilenameProblem::TooLong => "it is longer than 4096 bytes",
        })
    }
}

/// A name that is safe to show for an uploaded file. Never a storage path: objects are stored
/// under random ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DisplayName(String);

impl DisplayName {
    /// Reduces an uploaded file's name to a display name, or refuses it (a traversal attempt, or
    /// nothing usable left).
    pub fn parse(raw: &str) -> Result<DisplayName, Rejection> {
        if raw.len() > MAX_RAW_NAME_BYTES {
            return Err(Rejection::InvalidFilename(FilenameProblem::TooLong));
        }
        let visible = tidy(raw, Keep::Separators);
        if let Some(traversal) = traversal(raw, &visible) {
            return Err(Rejection::PathTraversal(traversal));
        }
        let basename = visible.rsplit(['/', '\\']).next().unwrap_or_default();
        let mut name = tidy(basename, Keep::Nothing);
        name = name.trim_matches(is_trimmed).to_owned();
        if is_device_name(&name) {
            name.insert(0, '_');
        }
        let name = limit_length(&name);
        if name.is_empty() {
            return Err(Rejection::InvalidFilename(FilenameProblem::Empty));
        }
        // A basename that decodes to a path (`a/%2fetc` leaves `%2fetc`).
        if traversal(&name, &name).is_some() {
            return Err(Rejection::PathTraversal(Traversal::EncodedTraversal));
        }
        Ok(DisplayName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The extension (after the last dot), as it is written.
    pub fn extension(&self) -> Option<&str> {
        self.0
            .rsplit_once('.')
            .filter(|(stem, extension)| !stem.is_empty() && !extension.is_empty())
            .map(|(_, extension)| extension)
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for DisplayName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    Separators,
    Nothing,
}

/// NFC, without invisible characters and (unless kept) with separators and reserved characters
/// replaced; repeated until stable, since removing a character can leave a pair NFC composes.
fn tidy(text: &str, keep: Keep) -> String {
    let mut current = text.to_owned();
    for _ in 0..4 {
        let next: String = current
            .nfc()
            .filter(|c| !is_invisible(*c))
            .map(|c| {
                if keep == Keep::Nothing && is_reserved(c) {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// Control characters, bidi controls and other characters that are invisible or reorder text,
/// so a name could look like something it is not (`invoice\u{202E}fdp.exe`).
fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{FFFE}'
                | '\u{FFFF}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

/// Path separators (and characters Windows' best-fit mapping turns into them) and the
/// characters Windows does not allow in names.
fn is_reserved(c: char) -> bool {
    matches!(
        c,
        '/' | '\\'
            | '<'
            | '>'
            | ':'
            | '"'
            | '|'
            | '?'
            | '*'
            | '\u{2044}'
            | '\u{2215}'
            | '\u{2216}'
            | '\u{29F5}'
            | '\u{29F8}'
            | '\u{29F9}'
            | '\u{FE68}'
            | '\u{FF0F}'
            | '\u{FF3C}'
    )
}

/// Trimmed from both ends: a leading dot hides a file, trailing dots and spaces vanish on Windows.
fn is_trimmed(c: char) -> bool {
    c == '.' || c.is_whitespace()
}

/// The DOS device names, which Windows treats as devices whatever their extension.
fn is_device_name(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or_default().trim_end();
    let stem = stem.to_ascii_uppercase();
    matches!(
        stem.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$" | "CLOCK$"
    ) || ["COM", "LPT"].iter().any(|prefix| {
        stem.strip_prefix(prefix).is_some_and(|digit| {
            matches!(
                digit,
                "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "¹" | "²" | "³"
            )
        })
    })
}

/// Cuts a name to [`MAX_DISPLAY_NAME_BYTES`] at a character boundary, keeping a short extension.
fn limit_length(name: &str) -> String {
    if name.len() <= MAX_DISPLAY_NAME_BYTES {
        return name.to_owned();
    }
    let (stem, extension) = match name.rsplit_once('.') {
        Some((stem, extension))
            if !stem.is_empty() && extension.len() < MAX_KEPT_EXTENSION_BYTES =>
        {
            (stem, Some(extension))
        }
        _ => (name, None),
    };
    let room = MAX_DISPLAY_NAME_BYTES - extension.map_or(0, |extension| extension.len() + 1);
    let mut end = room.min(stem.len());
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    let stem = stem[..end].trim_end_matches(is_trimmed);
    match extension {
        Some(extension) if !stem.is_empty() => format!("{stem}.{extension}"),
        _ => stem.to_owned(),
    }
}

/// How `raw` (and `visible`, the same without invisible characters) tries to leave its folder.
fn traversal(raw: &str, visible: &str) -> Option<Traversal> {
    if let Some(traversal) = direct_traversal(raw).or_else(|| direct_traversal(visible)) {
        return Some(traversal);
    }
    let mut form = visible.to_owned();
    for round in 0..=3 {
        if round > 0 {
            match percent_decoded(&form) {
                Some(decoded) => form = decoded,
                None => break,
            }
            if direct_traversal(&form).is_some() {
                return Some(Traversal::EncodedTraversal);
            }
        }
        let folded: String = form.nfkc().filter(|c| !is_invisible(*c)).collect();
        if direct_traversal(&folded).is_some() {
            return Some(Traversal::EncodedTraversal);
        }
    }
    None
}

fn direct_traversal(path: &str) -> Option<Traversal> {
    if path
        .split(['/', '\\'])
        .any(|segment| segment.trim() == "..")
    {
        return Some(Traversal::ParentSegment);
    }
    let path = path.trim_start();
    let mut chars = path.chars();
    let drive = matches!(
        (chars.next(), chars.next()),
        (Some(letter), Some(':')) if letter.is_ascii_alphabetic()
    );
    if path.starts_with(['/', '\\']) || drive {
        return Some(Traversal::AbsolutePath);
    }
    None
}

/// `text` with `%XX` escapes decoded (invalid UTF-8 replaced), or `None` when it has none.
pub(super) fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escape {
            Some(byte) => {
                decoded.push(byte);
                changed = true;
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    changed.then(|| String::from_utf8_lossy(&decoded).into_owned())
}
