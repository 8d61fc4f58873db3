//! Upload checks through the public API: what a bot owner's training file or a user's avatar
//! must be to be accepted, and the hostile files that are refused (wrong magic bytes, oversize,
//! zip bombs built here, traversal names), plus properties of display names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Cursor, Seek, SeekFrom, Write};

use confide_security::upload::{
    ArchiveLimits, Dimensions, DisplayName, FileKind, MAX_DISPLAY_NAME_BYTES, Purpose, Rejection,
    Traversal, UploadError, UploadLimits, check_upload, check_upload_bytes,
};
use proptest::prelude::*;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

const PDF: &[u8] =
    b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";
const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
// SOI, a JFIF header, a baseline frame header (1x1, one component), EOI.
const JPEG: &[u8] = b"\xFF\xD8\xFF\xE0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0\
    \xFF\xC0\0\x0B\x08\0\x01\0\x01\x01\x01\x11\0\xFF\xD9";
const WEBP: &[u8] =
    b"RIFF\x1a\0\0\0WEBPVP8L\x0d\0\0\0\x2f\0\0\0\x10\x07\x10\x11\x11\x88\x88\xfe\x07\0";
const SVG: &[u8] = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>";

const CONTENT_TYPES: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"#;
const RELS: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>"#;
const DOCUMENT: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>Our opening hours are 9 to 5.</w:t></w:r></w:p></w:body></w:document>"#;

fn limits() -> UploadLimits {
    UploadLimits::default()
}

fn check(purpose: Purpose, name: &str, content: &[u8]) -> Result<FileKind, Rejection> {
    check_with(purpose, name, content, &limits())
}

fn check_with(
    purpose: Purpose,
    name: &str,
    content: &[u8],
    limits: &UploadLimits,
) -> Result<FileKind, Rejection> {
    match check_upload_bytes(purpose, name, content, limits) {
        Ok(checked) => Ok(checked.kind),
        Err(UploadError::Rejected(rejection)) => Err(rejection),
        Err(UploadError::Io(error)) => panic!("reading from memory failed: {error}"),
    }
}

fn code(result: Result<FileKind, Rejection>) -> &'static str {
    match result {
        Ok(kind) => panic!("accepted as {kind}"),
        Err(rejection) => rejection.code(),
    }
}

fn deflated() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
}

/// A zip of `entries` (name, content), deflated.
fn zip_of<'a>(entries: impl IntoIterator<Item = (&'a str, Vec<u8>)>) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, content) in entries {
        writer.start_file(name, deflated()).unwrap();
        writer.write_all(&content).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// The three parts of a minimal Word document, then `extra` entries.
fn docx_with<'a>(extra: impl IntoIterator<Item = (&'a str, Vec<u8>)>) -> Vec<u8> {
    let parts = [
        ("[Content_Types].xml", CONTENT_TYPES.as_bytes().to_vec()),
        ("_rels/.rels", RELS.as_bytes().to_vec()),
        ("word/document.xml", DOCUMENT.as_bytes().to_vec()),
    ];
    zip_of(parts.into_iter().chain(extra))
}

fn docx() -> Vec<u8> {
    docx_with([])
}

/// Rewrites fields of `name`'s local header and central directory record (found through the
/// end of central directory record, not by searching): a header that lies.
fn patch_entry(zip: &mut [u8], name: &str, patch: impl Fn(&mut [u8], Header)) {
    let eocd = (0..=zip.len() - 22)
        .rev()
        .find(|&at| zip[at..at + 4] == *b"PK\x05\x06")
        .unwrap();
    let entries = u16_at(zip, eocd + 10);
    let mut at = u32_at(zip, eocd + 16) as usize;
    let mut patched = false;
    for _ in 0..entries {
        assert_eq!(&zip[at..at + 4], b"PK\x01\x02");
        let name_len = u16_at(zip, at + 28) as usize;
        let extra_len = u16_at(zip, at + 30) as usize;
        let comment_len = u16_at(zip, at + 32) as usize;
        let local = u32_at(zip, at + 42) as usize;
        if &zip[at + 46..at + 46 + name_len] == name.as_bytes() {
            patch(&mut zip[at..], Header::Central);
            assert_eq!(&zip[local..local + 4], b"PK\x03\x04");
            patch(&mut zip[local..], Header::Local);
            patched = true;
        }
        at += 46 + name_len + extra_len + comment_len;
    }
    assert!(patched, "no entry {name}");
}

#[derive(Clone, Copy)]
enum Header {
    Local,
    Central,
}

impl Header {
    /// Offsets of (flags, compressed size, uncompressed size).
    fn offsets(self) -> (usize, usize, usize) {
        match self {
            Header::Local => (6, 18, 22),
            Header::Central => (8, 20, 24),
        }
    }
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn set_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

// --- What is accepted -------------------------------------------------------------------------

#[test]
fn training_material_of_each_allowed_type_is_accepted_when_its_name_agrees() {
    let docx = docx();
    let cases: [(&str, &[u8], FileKind); 10] = [
        ("handbook.pdf", PDF, FileKind::Pdf),
        ("Handbook.PDF", PDF, FileKind::Pdf),
        ("handbook.docx", &docx, FileKind::Docx),
        ("notes.txt", b"Opening hours: 9 to 5.\n", FileKind::Txt),
        (
            "notes.md",
            b"# Opening hours\n\n9 to 5.\n",
            FileKind::Markdown,
        ),
        ("notes.markdown", b"# Opening hours\n", FileKind::Markdown),
        // Markdown may start with inline HTML, as many READMEs do.
        (
            "README.md",
            b"<p align=\"center\">logo</p>\n# Title\n",
            FileKind::Markdown,
        ),
        (
            "prices.csv",
            "\u{FEFF}item,price\nthé,3\n".as_bytes(),
            FileKind::Csv,
        ),
        (
            "faq.html",
            b"<!DOCTYPE html><html><body>FAQ</body></html>",
            FileKind::Html,
        ),
        ("faq.htm", b"<html><body>FAQ</body></html>", FileKind::Html),
    ];
    for (name, content, kind) in cases {
        assert_eq!(check(Purpose::Training, name, content), Ok(kind), "{name}");
    }
}

#[test]
fn avatars_of_each_allowed_type_are_accepted_when_their_name_agrees() {
    for (name, content, kind) in [
        ("me.png", PNG, FileKind::Png),
        ("me.jpg", JPEG, FileKind::Jpeg),
        ("me.JPEG", JPEG, FileKind::Jpeg),
        ("me.webp", WEBP, FileKind::Webp),
    ] {
        assert_eq!(check(Purpose::Avatar, name, content), Ok(kind), "{name}");
    }
}

#[test]
fn the_result_carries_the_display_name_size_and_media_type() {
    let checked = check_upload_bytes(
        Purpose::Training,
        "C-drive/Kundenhandbuch\u{202E}.pdf",
        PDF,
        &limits(),
    )
    .unwrap();
    assert_eq!(checked.display_name.as_str(), "Kundenhandbuch.pdf");
    assert_eq!(checked.size, PDF.len() as u64);
    assert_eq!(checked.kind.media_type(), "application/pdf");
}

#[test]
fn a_file_the_caller_streamed_to_disk_is_checked_from_its_start() {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&docx()).unwrap();
    // Wherever the caller left the position.
    file.seek(SeekFrom::Start(7)).unwrap();
    let checked = check_upload(Purpose::Training, "policy.docx", &mut file, &limits()).unwrap();
    assert_eq!(checked.kind, FileKind::Docx);
}

// --- Types: allowlists and magic bytes -------------------------------------------------------

#[test]
fn a_type_not_on_the_purposes_allowlist_is_refused() {
    assert_eq!(
        code(check(Purpose::Avatar, "logo.svg", SVG)),
        "unsupported_type"
    );
    assert_eq!(
        code(check(Purpose::Avatar, "scan.pdf", PDF)),
        "unsupported_type"
    );
    assert_eq!(
        code(check(Purpose::Training, "photo.png", PNG)),
        "unsupported_type"
    );
    assert_eq!(
        code(check(Purpose::Training, "run.exe", b"MZ\x90\0")),
        "unsupported_type"
    );
    assert_eq!(
        code(check(Purpose::Training, "notes", b"text")),
        "unsupported_type"
    );
    assert_eq!(
        code(check(Purpose::Training, "bundle.zip", &docx())),
        "unsupported_type"
    );
    // The last extension counts.
    assert_eq!(
        code(check(Purpose::Training, "notes.pdf.exe", PDF)),
        "unsupported_type"
    );
}

#[test]
fn content_whose_magic_bytes_disagree_with_its_name_is_refused() {
    let docx = docx();
    let cases: [(Purpose, &str, &[u8]); 12] = [
        (Purpose::Avatar, "me.jpg", PNG),
        (Purpose::Avatar, "me.png", JPEG),
        (Purpose::Avatar, "me.webp", b"RIFF\x1a\0\0\0WAVEfmt "),
        // An SVG renamed to get past the allowlist.
        (Purpose::Avatar, "me.png", SVG),
        (Purpose::Training, "report.docx", PDF),
        (Purpose::Training, "report.pdf", &docx),
        (Purpose::Training, "report.pdf", b"not a pdf at all"),
        (Purpose::Training, "notes.txt", PDF),
        (
            Purpose::Training,
            "notes.txt",
            b"MZ\x90\0\x03\0\0\0 an executable",
        ),
        (Purpose::Training, "notes.txt", b"valid text\0with a NUL"),
        (Purpose::Training, "notes.csv", b"caf\xe9,latin-1"),
        // Text a browser would sniff as HTML is not plain text or CSV ...
        (Purpose::Training, "notes.txt", b"<script>alert(1)</script>"),
    ];
    for (purpose, name, content) in cases {
        assert_eq!(
            code(check(purpose, name, content)),
            "type_mismatch",
            "{name}"
        );
    }
    // ... and HTML must look like HTML.
    assert_eq!(
        code(check(Purpose::Training, "faq.html", b"just words")),
        "type_mismatch"
    );
    let rejection = check(Purpose::Avatar, "me.jpg", PNG).unwrap_err();
    assert_eq!(
        rejection.to_string(),
        "the file is named as jpeg but its content is a PNG image"
    );
}

#[test]
fn a_zip_named_docx_without_a_word_document_inside_is_refused() {
    let zip = zip_of([("[Content_Types].xml", CONTENT_TYPES.as_bytes().to_vec())]);
    assert_eq!(
        code(check(Purpose::Training, "fake.docx", &zip)),
        "type_mismatch"
    );
    let zip = zip_of([("word/document.xml", DOCUMENT.as_bytes().to_vec())]);
    assert_eq!(
        code(check(Purpose::Training, "fake.docx", &zip)),
        "type_mismatch"
    );
}

// --- Sizes -----------------------------------------------------------------------------------

#[test]
fn a_file_over_its_purposes_size_bound_is_refused() {
    // Default bounds: an avatar of 2 MiB and one byte.
    let mut big_png = PNG.to_vec();
    big_png.resize(2 * 1024 * 1024 + 1, 0);
    let rejection = check(Purpose::Avatar, "me.png", &big_png).unwrap_err();
    assert_eq!(
        rejection,
        Rejection::TooLarge {
            purpose: Purpose::Avatar,
            size: 2 * 1024 * 1024 + 1,
            limit: 2 * 1024 * 1024
        }
    );
    big_png.truncate(2 * 1024 * 1024);
    assert_eq!(
        check(Purpose::Avatar, "me.png", &big_png),
        Ok(FileKind::Png)
    );

    // Configured bounds.
    let small = UploadLimits {
        training_max_bytes: 100,
        ..UploadLimits::default()
    };
    let text = "a".repeat(101);
    assert_eq!(
        code(check_with(
            Purpose::Training,
            "a.txt",
            text.as_bytes(),
            &small
        )),
        "too_large"
    );
    assert_eq!(
        check_with(Purpose::Training, "a.txt", &text.as_bytes()[..100], &small),
        Ok(FileKind::Txt)
    );
}

#[test]
fn an_empty_file_is_refused() {
    assert_eq!(code(check(Purpose::Training, "notes.txt", b"")), "empty");
}

// --- Pixel sizes of images ------------------------------------------------------------------

/// Real files made by `cjpeg` and `cwebp` (and a hand-built PNG), each 3x2 pixels but the
/// extended WebP (5x4, with alpha).
const REAL_IMAGES: [(&str, &[u8], u32, u32); 5] = [
    ("a.png", include_bytes!("data/avatar-3x2.png"), 3, 2),
    ("a.jpg", include_bytes!("data/avatar-3x2.jpg"), 3, 2),
    ("a.webp", include_bytes!("data/avatar-3x2.webp"), 3, 2),
    (
        "lossless.webp",
        include_bytes!("data/avatar-3x2-lossless.webp"),
        3,
        2,
    ),
    (
        "alpha.webp",
        include_bytes!("data/avatar-5x4-alpha.webp"),
        5,
        4,
    ),
];

fn dimensions_of(name: &str, content: &[u8]) -> Dimensions {
    check_upload_bytes(Purpose::Avatar, name, content, &limits())
        .unwrap()
        .dimensions
        .unwrap()
}

fn png_of(width: u32, height: u32) -> Vec<u8> {
    let mut png = PNG.to_vec();
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    png
}

/// A JPEG whose frame header says `width` x `height`, after an APP1 segment and fill bytes.
fn jpeg_of(width: u16, height: u16) -> Vec<u8> {
    let mut jpeg = b"\xFF\xD8\xFF\xE1\0\x08Exif\0\0\xFF\xFF\xFF\xC2\0\x0B\x08".to_vec();
    jpeg.extend_from_slice(&height.to_be_bytes());
    jpeg.extend_from_slice(&width.to_be_bytes());
    jpeg.extend_from_slice(b"\x01\x01\x11\0\xFF\xD9");
    jpeg
}

/// An extended WebP whose canvas is `width` x `height`.
fn webp_of(width: u32, height: u32) -> Vec<u8> {
    let mut webp = b"RIFF\x16\0\0\0WEBPVP8X\x0a\0\0\0\x10\0\0\0".to_vec();
    webp.extend_from_slice(&(width - 1).to_le_bytes()[..3]);
    webp.extend_from_slice(&(height - 1).to_le_bytes()[..3]);
    webp
}

#[test]
fn an_images_width_and_height_are_read_from_its_header() {
    for (name, content, width, height) in REAL_IMAGES {
        assert_eq!(
            dimensions_of(name, content),
            Dimensions { width, height },
            "{name}"
        );
    }
    assert_eq!(
        dimensions_of("a.jpg", &jpeg_of(640, 480)),
        Dimensions {
            width: 640,
            height: 480
        }
    );
    // Documents have none.
    let checked = check_upload_bytes(Purpose::Training, "a.pdf", PDF, &limits()).unwrap();
    assert_eq!(checked.dimensions, None);
}

#[test]
fn an_image_larger_than_the_bound_on_a_side_is_refused_however_small_the_file() {
    for (name, content) in [
        ("wide.png", png_of(4097, 1)),
        ("tall.png", png_of(1, 100_000)),
        ("huge.png", png_of(u32::MAX, u32::MAX)),
        ("wide.jpg", jpeg_of(4097, 16)),
        ("tall.jpg", jpeg_of(16, u16::MAX)),
        ("wide.webp", webp_of(4097, 1)),
        ("huge.webp", webp_of(1 << 24, 1 << 24)),
    ] {
        assert!(content.len() < 100, "{name} is tiny");
        let rejection = check(Purpose::Avatar, name, &content).unwrap_err();
        assert_eq!(rejection.code(), "image_too_large", "{name}");
    }
    assert_eq!(
        check(Purpose::Avatar, "wide.png", &png_of(5000, 20)).unwrap_err(),
        Rejection::ImageTooLarge {
            width: 5000,
            height: 20,
            limit: 4096
        }
    );
    // At the bound, and under a configured one.
    assert_eq!(
        check(Purpose::Avatar, "edge.png", &png_of(4096, 4096)),
        Ok(FileKind::Png)
    );
    let small = UploadLimits {
        image_max_side: 512,
        ..UploadLimits::default()
    };
    assert_eq!(
        code(check_with(
            Purpose::Avatar,
            "a.webp",
            &webp_of(513, 10),
            &small
        )),
        "image_too_large"
    );
}

#[test]
fn an_image_whose_header_does_not_say_its_size_is_refused() {
    let mut no_ihdr = PNG.to_vec();
    no_ihdr[12..16].copy_from_slice(b"tEXt");
    let mut lossy_not_a_key_frame = REAL_IMAGES[2].1.to_vec();
    lossy_not_a_key_frame[20] |= 1;
    for (name, content) in [
        ("cut.png", PNG[..20].to_vec()),
        ("no-ihdr.png", no_ihdr),
        ("zero.png", png_of(0, 10)),
        // A scan, or the end, before any frame header.
        (
            "no-frame.jpg",
            b"\xFF\xD8\xFF\xE0\0\x04\0\0\xFF\xD9".to_vec(),
        ),
        ("scan-first.jpg", b"\xFF\xD8\xFF\xDA\0\x02\xFF\xD9".to_vec()),
        // A segment whose length runs past the end, or is less than its own two bytes.
        ("long-segment.jpg", b"\xFF\xD8\xFF\xE1\xFF\xFF\0\0".to_vec()),
        ("short-segment.jpg", b"\xFF\xD8\xFF\xE1\0\x01\0\0".to_vec()),
        ("no-marker.jpg", b"\xFF\xD8\xFF\x00\x12".to_vec()),
        ("zero-height.jpg", jpeg_of(10, 0)),
        ("cut.webp", REAL_IMAGES[2].1[..24].to_vec()),
        ("not-a-key-frame.webp", lossy_not_a_key_frame),
        (
            "unknown-chunk.webp",
            b"RIFF\x16\0\0\0WEBPVP9 \x0a\0\0\0\0\0\0\0\0\0\0\0\0\0".to_vec(),
        ),
    ] {
        assert_eq!(
            code(check(Purpose::Avatar, name, &content)),
            "invalid_image",
            "{name}"
        );
    }
}

proptest! {
    /// Whatever follows an image's magic bytes, the check answers (never panics or loops).
    #[test]
    fn any_bytes_after_an_images_magic_are_answered(
        magic in prop::sample::select(vec![
            ("x.png", b"\x89PNG\r\n\x1a\n".to_vec()),
            ("x.jpg", b"\xFF\xD8\xFF".to_vec()),
            ("x.webp", b"RIFF\0\0\0\0WEBP".to_vec()),
        ]),
        tail in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let (name, mut content) = magic;
        content.extend_from_slice(&tail);
        match check_upload_bytes(Purpose::Avatar, name, &content, &limits()) {
            Ok(checked) => {
                let found = checked.dimensions.unwrap();
                prop_assert!(found.width >= 1 && found.width <= 4096);
                prop_assert!(found.height >= 1 && found.height <= 4096);
            }
            Err(UploadError::Rejected(rejection)) => prop_assert!(
                matches!(rejection.code(), "invalid_image" | "image_too_large"),
                "{rejection}"
            ),
            Err(UploadError::Io(error)) => panic!("reading from memory failed: {error}"),
        }
    }
}

// --- Names -----------------------------------------------------------------------------------

#[test]
fn a_traversal_name_is_refused_with_its_reason_whatever_the_content() {
    for (name, reason) in [
        ("../../etc/cron.d/x.txt", Traversal::ParentSegment),
        ("..\\..\\boot.ini.txt", Traversal::ParentSegment),
        ("/var/lib/confide/keys.txt", Traversal::AbsolutePath),
        ("%2e%2e%2f%2e%2e%2fnotes.txt", Traversal::EncodedTraversal),
    ] {
        assert_eq!(
            check(Purpose::Training, name, b"fine text"),
            Err(Rejection::PathTraversal(reason)),
            "{name}"
        );
    }
    assert_eq!(
        code(check(Purpose::Training, "\u{202E}", b"text")),
        "invalid_filename"
    );
}

// --- Archives inside DOCX -------------------------------------------------------------------

#[test]
fn a_zip_bomb_with_one_highly_compressed_entry_is_refused() {
    // 50 MiB of zeros deflate to about 50 KiB: a ratio near 1000 to 1.
    let bomb = docx_with([("word/media/zeros.bin", vec![0u8; 50 * 1024 * 1024])]);
    assert!(bomb.len() < 200 * 1024, "{} bytes", bomb.len());
    assert_eq!(
        code(check(Purpose::Training, "bomb.docx", &bomb)),
        "archive_ratio"
    );
}

#[test]
fn a_zip_bomb_whose_headers_lie_about_its_size_is_refused_while_inflating() {
    let mut bomb = docx_with([("word/media/zeros.bin", vec![0u8; 50 * 1024 * 1024])]);
    // Both headers now claim 1000 bytes: nothing in the central directory is out of bounds.
    patch_entry(&mut bomb, "word/media/zeros.bin", |header, kind| {
        let (_, _, uncompressed) = kind.offsets();
        set_u32(header, uncompressed, 1000);
    });
    // Stopped as soon as more comes out than the header said.
    assert_eq!(
        code(check(Purpose::Training, "bomb.docx", &bomb)),
        "archive_invalid"
    );
}

#[test]
fn sizes_the_central_directory_declares_are_refused_before_anything_is_inflated() {
    // An honest small entry whose headers claim more: inflating it would only find it short
    // (`archive_invalid`); these codes come from the declared sizes alone.
    let claim = |uncompressed: u32| {
        let mut archive = docx_with([("word/media/a.bin", vec![7u8; 4096])]);
        patch_entry(&mut archive, "word/media/a.bin", |header, kind| {
            let (_, _, offset) = kind.offsets();
            set_u32(header, offset, uncompressed);
        });
        check(Purpose::Training, "claims.docx", &archive)
    };
    // 50 MiB from a few bytes: over the ratio, under the total.
    assert_eq!(code(claim(50 * 1024 * 1024)), "archive_ratio");
    // 4 GiB: over the total.
    assert_eq!(code(claim(u32::MAX)), "archive_too_large");
    assert_eq!(code(claim(4095)), "archive_invalid");
}

#[test]
fn many_entries_that_each_stay_small_are_refused_by_the_overall_ratio() {
    // Each entry stays under the 1 MiB grace; together 20 MiB come out of ~20 KiB.
    let entries: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("word/media/part{i}.bin"), vec![0u8; 1024 * 1024]))
        .collect();
    let bomb = docx_with(
        entries
            .iter()
            .map(|(name, data)| (name.as_str(), data.clone())),
    );
    assert_eq!(
        code(check(Purpose::Training, "parts.docx", &bomb)),
        "archive_ratio"
    );
}

#[test]
fn an_archive_with_too_many_entries_is_refused() {
    let entries: Vec<String> = (0..1_200).map(|i| format!("word/media/e{i}.xml")).collect();
    let many = docx_with(entries.iter().map(|name| (name.as_str(), Vec::new())));
    let rejection = check(Purpose::Training, "many.docx", &many).unwrap_err();
    assert_eq!(
        rejection,
        Rejection::ArchiveTooManyEntries {
            entries: 1_203,
            limit: 1_000
        }
    );
    // The same archive under a configured bound that allows it.
    let roomy = UploadLimits {
        archive: ArchiveLimits {
            max_entries: 2_000,
            ..ArchiveLimits::default()
        },
        ..UploadLimits::default()
    };
    assert_eq!(
        check_with(Purpose::Training, "many.docx", &many, &roomy),
        Ok(FileKind::Docx)
    );
}

#[test]
fn an_archive_that_unpacks_to_more_than_the_bound_is_refused_declared_or_not() {
    // Incompressible content, so only the total can refuse it.
    let noise: Vec<u8> = (0u32..600 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let archive = docx_with([
        ("word/media/a.bin", noise.clone()),
        ("word/media/b.bin", noise),
    ]);
    let tight = UploadLimits {
        archive: ArchiveLimits {
            max_uncompressed_bytes: 1024 * 1024,
            ..ArchiveLimits::default()
        },
        ..UploadLimits::default()
    };
    assert_eq!(
        code(check_with(Purpose::Training, "big.docx", &archive, &tight)),
        "archive_too_large"
    );

    // Headers that claim tiny sizes do not get it past: the real bytes are counted.
    let mut lying = archive.clone();
    for name in ["word/media/a.bin", "word/media/b.bin"] {
        patch_entry(&mut lying, name, |header, kind| {
            let (_, _, uncompressed) = kind.offsets();
            set_u32(header, uncompressed, 10);
        });
    }
    assert!(check_with(Purpose::Training, "big.docx", &lying, &tight).is_err());
    assert!(check_with(Purpose::Training, "big.docx", &lying, &limits()).is_err());
    assert_eq!(
        check_with(Purpose::Training, "big.docx", &archive, &limits()),
        Ok(FileKind::Docx)
    );
}

#[test]
fn an_encrypted_or_escaping_entry_is_refused() {
    let mut encrypted = docx();
    patch_entry(&mut encrypted, "word/document.xml", |header, kind| {
        let (flags, _, _) = kind.offsets();
        header[flags] |= 1;
    });
    assert_eq!(
        check(Purpose::Training, "secret.docx", &encrypted),
        Err(Rejection::ArchiveInvalid("an entry is encrypted"))
    );

    let escaping = docx_with([("../../evil.xml", b"<x/>".to_vec())]);
    assert_eq!(
        check(Purpose::Training, "evil.docx", &escaping),
        Err(Rejection::ArchiveInvalid(
            "an entry's path leaves the archive"
        ))
    );
}

#[test]
fn a_corrupted_docx_is_refused_not_accepted() {
    let mut broken = docx();
    let middle = broken.len() / 2;
    broken.truncate(middle);
    assert_eq!(
        code(check(Purpose::Training, "broken.docx", &broken)),
        "archive_invalid"
    );

    // A flipped byte inside the deflated document: decompression or the checksum fails.
    let mut flipped = docx();
    let at = flipped
        .windows(17)
        .position(|w| w == b"word/document.xml")
        .unwrap()
        + 17;
    for byte in &mut flipped[at..at + 40] {
        *byte ^= 0x5a;
    }
    assert_eq!(
        code(check(Purpose::Training, "flipped.docx", &flipped)),
        "archive_invalid"
    );
}

#[test]
fn a_docx_with_stored_entries_is_accepted() {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    for (name, content) in [
        ("[Content_Types].xml", CONTENT_TYPES),
        ("_rels/.rels", RELS),
        ("word/document.xml", DOCUMENT),
    ] {
        writer.start_file(name, stored).unwrap();
        writer.write_all(content.as_bytes()).unwrap();
    }
    let docx = writer.finish().unwrap().into_inner();
    assert_eq!(
        check(Purpose::Training, "plain.docx", &docx),
        Ok(FileKind::Docx)
    );
}

// --- Properties of display names --------------------------------------------------------------

/// Names built from the pieces traversal and spoofing attempts are made of.
fn hostile_name() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("/".to_owned()),
        Just("\\".to_owned()),
        Just(" ".to_owned()),
        Just("%2e".to_owned()),
        Just("%2F".to_owned()),
        Just("%5c".to_owned()),
        Just("%25".to_owned()),
        Just("C:".to_owned()),
        Just("CON".to_owned()),
        Just("\u{0}".to_owned()),
        Just("\u{202E}".to_owned()),
        Just("\u{2066}".to_owned()),
        Just("\u{200B}".to_owned()),
        Just("\u{301}".to_owned()),
        Just("\u{FF0E}".to_owned()),
        Just("\u{FF0F}".to_owned()),
        Just("\u{2025}".to_owned()),
        Just(":".to_owned()),
        Just("*".to_owned()),
        Just(".pdf".to_owned()),
        Just("é".to_owned()),
        "[a-z]{1,8}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

fn assert_safe(name: &DisplayName) {
    let name = name.as_str();
    assert!(!name.is_empty());
    assert!(name.len() <= MAX_DISPLAY_NAME_BYTES, "{} bytes", name.len());
    assert!(!name.contains(['/', '\\']), "{name:?}");
    assert!(!name.chars().any(char::is_control), "{name:?}");
    assert!(
        !name
            .chars()
            .any(|c| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')),
        "{name:?}"
    );
    assert!(
        !name.contains(['<', '>', ':', '"', '|', '?', '*']),
        "{name:?}"
    );
    assert!(
        name.split(['/', '\\'])
            .all(|segment| segment != ".." && segment != ".")
    );
    assert!(!name.starts_with('.') && !name.ends_with('.'), "{name:?}");
    assert!(name.trim() == name, "{name:?}");
    assert!(unicode_normalization::is_nfc(name), "{name:?}");
    // Reducing a display name again changes nothing.
    assert_eq!(DisplayName::parse(name).unwrap().as_str(), name);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_display_name_is_always_safe_or_the_name_is_refused(raw in hostile_name()) {
        match DisplayName::parse(&raw) {
            Ok(name) => assert_safe(&name),
            Err(rejection) => prop_assert!(
                matches!(rejection.code(), "invalid_filename" | "path_traversal"),
                "{rejection:?}"
            ),
        }
    }

    #[test]
    fn any_string_gives_a_safe_display_name_or_a_refusal(raw in any::<String>()) {
        match DisplayName::parse(&raw) {
            Ok(name) => assert_safe(&name),
            Err(rejection) => prop_assert!(
                matches!(rejection.code(), "invalid_filename" | "path_traversal"),
                "{rejection:?}"
            ),
        }
    }

    #[test]
    fn long_names_are_cut_to_the_limit_and_keep_their_extension(
        stem in "[a-zA-Zéß漢😀 ._-]{200,400}",
        extension in prop_oneof![Just("pdf"), Just("docx"), Just("md")],
    ) {
        let raw = format!("x{stem}.{extension}");
        let name = DisplayName::parse(&raw).unwrap();
        assert_safe(&name);
        prop_assert_eq!(name.extension(), Some(extension));
    }

    #[test]
    fn a_parent_segment_anywhere_is_refused(
        before in prop::collection::vec("[a-z]{1,6}", 0..4),
        after in prop::collection::vec("[a-z]{1,6}", 0..4),
        separator in prop_oneof![Just("/"), Just("\\"), Just("%2f"), Just("%5C"), Just("%252f")],
    ) {
        let mut segments = before;
        segments.push("..".to_owned());
        segments.extend(after);
        segments.push("x.txt".to_owned());
        let raw = segments.join(separator);
        let rejection = DisplayName::parse(&raw).unwrap_err();
        prop_assert_eq!(rejection.code(), "path_traversal");
    }
}
