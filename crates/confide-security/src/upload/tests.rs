//! Display names and content detection, case by case. The public behaviour (types, sizes,
//! archives, properties of names) is tested in `tests/upload_checks.rs`.

use super::*;

fn name(raw: &str) -> String {
    match DisplayName::parse(raw) {
        Ok(name) => name.into_string(),
        Err(rejection) => panic!("{raw:?} was refused: {rejection}"),
    }
}

fn refusal(raw: &str) -> Rejection {
    match DisplayName::parse(raw) {
        Ok(name) => panic!("{raw:?} was accepted as {name:?}"),
        Err(rejection) => rejection,
    }
}

#[test]
fn an_ordinary_name_is_kept_as_it_is() {
    assert_eq!(
        name("Quarterly report 2024 (final).pdf"),
        "Quarterly report 2024 (final).pdf"
    );
    assert_eq!(name("Prix à l’unité.csv"), "Prix à l’unité.csv");
    assert_eq!(name("100%.txt"), "100%.txt");
    assert_eq!(name("v1..2.md"), "v1..2.md");
}

#[test]
fn only_the_last_segment_of_a_path_is_kept_whichever_the_separator() {
    assert_eq!(name("docs/handbook/intro.md"), "intro.md");
    assert_eq!(name("docs\\handbook\\intro.md"), "intro.md");
    assert_eq!(name("docs/handbook\\intro.md"), "intro.md");
}

#[test]
fn names_are_unicode_nfc() {
    // "é" as e + combining acute becomes the one precomposed character.
    assert_eq!(name("cafe\u{301}.txt"), "caf\u{e9}.txt");
    // Removing an invisible character between the two still composes them.
    assert_eq!(name("cafe\u{200B}\u{301}.txt"), "caf\u{e9}.txt");
}

#[test]
fn control_and_bidi_characters_are_removed() {
    // The right-to-left override would show "invoiceexe.pdf".
    assert_eq!(name("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
    assert_eq!(
        name("a\u{0}b\u{7}c\u{1b}[31m\u{7f}\u{85}.txt"),
        "abc[31m.txt"
    );
    assert_eq!(name("\u{2066}left\u{2069}\u{200F}\u{FEFF}.txt"), "left.txt");
    assert_eq!(name("line\nbreak\r\u{2028}.txt"), "linebreak.txt");
}

#[test]
fn characters_windows_reserves_and_look_alike_slashes_become_underscores() {
    assert_eq!(name("a<b>c:d\"e|f?g*h.txt"), "a_b_c_d_e_f_g_h.txt");
    assert_eq!(name("a\u{FF0F}b\u{2215}c\u{FF3C}d.txt"), "a_b_c_d.txt");
}

#[test]
fn leading_and_trailing_dots_and_spaces_are_trimmed() {
    assert_eq!(name(".htaccess.txt"), "htaccess.txt");
    assert_eq!(name("  notes.md .. "), "notes.md");
    assert_eq!(name("...pdf"), "pdf");
}

#[test]
fn windows_device_names_are_prefixed() {
    assert_eq!(name("CON"), "_CON");
    assert_eq!(name("con.txt"), "_con.txt");
    assert_eq!(name("Com1.tar.gz"), "_Com1.tar.gz");
    assert_eq!(name("LPT9 .pdf"), "_LPT9 .pdf");
    assert_eq!(name("console.txt"), "console.txt");
    assert_eq!(name("COM10.txt"), "COM10.txt");
}

#[test]
fn a_long_name_is_cut_at_a_character_boundary_keeping_its_extension() {
    let long = format!("{}.pdf", "é".repeat(300));
    let cut = name(&long);
    assert!(cut.len() <= MAX_DISPLAY_NAME_BYTES, "{} bytes", cut.len());
    assert!(cut.len() >= MAX_DISPLAY_NAME_BYTES - 1);
    assert!(cut.ends_with(".pdf"));
    assert!(cut.trim_end_matches(".pdf").chars().all(|c| c == 'é'));

    // An "extension" too long to be one is cut like the rest.
    let no_extension = format!("a.{}", "b".repeat(400));
    assert_eq!(name(&no_extension).len(), MAX_DISPLAY_NAME_BYTES);

    // Cutting does not leave trailing spaces or dots before the extension.
    let spaced = format!("{}{}.txt", "a".repeat(250), " ".repeat(20));
    assert_eq!(name(&spaced), format!("{}.txt", "a".repeat(250)));
}

#[test]
fn a_name_with_nothing_left_is_refused() {
    for raw in [
        "",
        " ",
        "...",
        ".",
        "\u{202E}",
        "\u{0}\u{0}",
        "dir/",
        "a/. . .",
    ] {
        assert_eq!(
            refusal(raw),
            Rejection::InvalidFilename(FilenameProblem::Empty),
            "{raw:?}"
        );
    }
    assert_eq!(refusal(&"a".repeat(5000)).code(), "invalid_filename");
}

#[test]
fn traversal_attempts_are_refused_with_their_reason() {
    let cases = [
        ("../etc/passwd", Traversal::ParentSegment),
        ("..", Traversal::ParentSegment),
        ("docs/../../secret.pdf", Traversal::ParentSegment),
        ("..\\..\\windows\\win.ini", Traversal::ParentSegment),
        ("a/ .. /b.txt", Traversal::ParentSegment),
        // Hidden by a character that is removed from the name.
        (".\u{0}./x.txt", Traversal::ParentSegment),
        (".\u{202E}./x.txt", Traversal::ParentSegment),
        ("/etc/passwd", Traversal::AbsolutePath),
        ("\\windows\\win.ini", Traversal::AbsolutePath),
        ("\\\\server\\share\\x.pdf", Traversal::AbsolutePath),
        ("C:\\Users\\x.pdf", Traversal::AbsolutePath),
        ("c:x.pdf", Traversal::AbsolutePath),
        ("%2e%2e%2fetc%2fpasswd", Traversal::EncodedTraversal),
        ("%2E%2E%5Cwin.ini", Traversal::EncodedTraversal),
        ("..%2fx.txt", Traversal::EncodedTraversal),
        ("%2fetc%2fpasswd", Traversal::EncodedTraversal),
        ("%252e%252e%252fx.txt", Traversal::EncodedTraversal),
        ("%25252e%25252e%25252fx.txt", Traversal::EncodedTraversal),
        ("\u{FF0E}\u{FF0E}\u{FF0F}x.txt", Traversal::EncodedTraversal),
        ("\u{2025}/x.txt", Traversal::EncodedTraversal),
        // Only the basename decodes to a path.
        ("%25/%2F", Traversal::EncodedTraversal),
        ("notes/%2e%2e", Traversal::EncodedTraversal),
    ];
    for (raw, expected) in cases {
        assert_eq!(refusal(raw), Rejection::PathTraversal(expected), "{raw:?}");
    }
    assert_eq!(refusal("../x").code(), "path_traversal");
}

#[test]
fn what_only_looks_like_traversal_is_not_refused() {
    assert_eq!(name("..pdf"), "pdf");
    assert_eq!(name("a..b/c..d.txt"), "c..d.txt");
    assert_eq!(name("%2e.txt"), "%2e.txt");
    assert_eq!(name("%zz%2.txt"), "%zz%2.txt");
    // "%+1" is not an escape (a sign is not a hex digit).
    assert_eq!(name("%+1%+1%+f.txt"), "%+1%+1%+f.txt");
}

#[test]
fn the_extension_is_what_follows_the_last_dot() {
    let parsed = DisplayName::parse("archive.tar.GZ").unwrap();
    assert_eq!(parsed.extension(), Some("GZ"));
    assert_eq!(DisplayName::parse("README").unwrap().extension(), None);
    assert_eq!(DisplayName::parse("notes.").unwrap().extension(), None);
}

#[test]
fn percent_decoding_decodes_only_escapes() {
    assert_eq!(filename_percent("a%2Fb"), Some("a/b".to_owned()));
    assert_eq!(filename_percent("a%2"), None);
    assert_eq!(filename_percent("plain"), None);
    assert_eq!(filename_percent("%C3%A9"), Some("é".to_owned()));
}

fn filename_percent(text: &str) -> Option<String> {
    filename::percent_decoded(text)
}

fn detected(content: &[u8]) -> detect::Content {
    detect::detect(&mut io::Cursor::new(content), content.len() as u64).unwrap()
}

#[test]
fn magic_bytes_decide_binary_kinds() {
    use detect::Content;
    assert_eq!(detected(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"), Content::Pdf);
    assert_eq!(detected(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Content::Png);
    assert_eq!(detected(b"\xFF\xD8\xFF\xE0\0\x10JFIF\0"), Content::Jpeg);
    assert_eq!(detected(b"RIFF\x24\0\0\0WEBPVP8 "), Content::Webp);
    assert_eq!(detected(b"RIFF\x24\0\0\0WAVEfmt "), Content::Other);
    assert_eq!(detected(b"PK\x03\x04\x14\0\0\0"), Content::Zip);
    assert_eq!(detected(b"MZ\x90\0\x03\0\0\0"), Content::Other);
    // Almost PDF.
    assert_eq!(detected(b" %PDF-1.7"), Content::Text);
    assert_eq!(detected(b"%PDF"), Content::Text);
}

#[test]
fn text_is_utf8_without_nul_and_html_is_told_by_its_leading_markup() {
    use detect::Content;
    assert_eq!(detected(b"hello, world\n"), Content::Text);
    assert_eq!(
        detected("\u{FEFF}name,price\nthé,3\n".as_bytes()),
        Content::Text
    );
    assert_eq!(detected(b"hello\0world"), Content::Other);
    assert_eq!(detected(b"caf\xe9"), Content::Other);
    // UTF-16 (with its BOM) is not UTF-8.
    assert_eq!(detected(b"\xFF\xFEh\0i\0"), Content::Other);
    // A character cut at the end of the file.
    assert_eq!(detected(b"caf\xc3"), Content::Other);

    assert_eq!(detected(b"<!DOCTYPE html>\n<html>"), Content::Html);
    assert_eq!(detected(b"\n  <!doctype HTML>"), Content::Html);
    assert_eq!(detected(b"<html lang=en>"), Content::Html);
    assert_eq!(detected(b"<p>hi</p>"), Content::Html);
    assert_eq!(detected(b"<!-- generated -->\n<div>"), Content::Html);
    assert_eq!(detected("\u{FEFF}<HTML>".as_bytes()), Content::Html);
    assert_eq!(
        detected(b"<?xml version=\"1.0\"?>\n<!DOCTYPE html PUBLIC>\n<html>"),
        Content::Html
    );
    assert_eq!(
        detected(b"<svg xmlns=\"http://www.w3.org/2000/svg\">"),
        Content::Text
    );
    assert_eq!(detected(b"<?xml version=\"1.0\"?><svg>"), Content::Text);
    assert_eq!(detected(b"<pre>"), Content::Text);
    assert_eq!(detected(b"# Title\n<p>later</p>"), Content::Text);
}

#[test]
fn a_character_cut_by_a_chunk_boundary_is_still_text() {
    // 'é' is two bytes; put one on each side of the 64 KiB boundary, then many more.
    let mut text = "a".repeat(64 * 1024 - 1);
    text.push_str(&"é".repeat(70_000));
    assert_eq!(detected(text.as_bytes()), detect::Content::Text);
    let mut broken = text.into_bytes();
    broken[64 * 1024 - 1] = 0xC3;
    broken[64 * 1024] = b'a';
    assert_eq!(detected(&broken), detect::Content::Other);
}

#[test]
fn every_rejection_has_a_distinct_snake_case_code_and_a_message() {
    let rejections = [
        Rejection::InvalidFilename(FilenameProblem::Empty),
        Rejection::PathTraversal(Traversal::ParentSegment),
        Rejection::Empty,
        Rejection::TooLarge {
            purpose: Purpose::Avatar,
            size: 3,
            limit: 2,
        },
        Rejection::UnsupportedType {
            purpose: Purpose::Avatar,
            extension: Some("svg".to_owned()),
        },
        Rejection::TypeMismatch {
            claimed: FileKind::Jpeg,
            found: "a PNG image",
        },
        Rejection::ArchiveTooManyEntries {
            entries: 2,
            limit: 1,
        },
        Rejection::ArchiveTooLarge { limit: 1 },
        Rejection::ArchiveRatio { limit: 100 },
        Rejection::ArchiveInvalid("an entry is encrypted"),
        Rejection::InvalidImage,
        Rejection::ImageTooLarge {
            width: 5000,
            height: 1,
            limit: 4096,
        },
    ];
    let mut codes: Vec<&str> = rejections.iter().map(Rejection::code).collect();
    for code in &codes {
        assert!(
            code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{code}"
        );
    }
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), rejections.len());
    for rejection in &rejections {
        assert!(!rejection.to_string().is_empty());
    }
    assert_eq!(
        rejections[4].to_string(),
        ".svg files are not accepted for avatar; accepted: png, jpeg, webp"
    );
    assert_eq!(
        Rejection::UnsupportedType {
            purpose: Purpose::Training,
            extension: None
        }
        .to_string(),
        "files without an extension are not accepted for training; accepted: pdf, docx, txt, markdown, html, csv"
    );
}

#[test]
fn limits_have_the_documented_defaults_and_deserialize_partially() {
    let limits = UploadLimits::default();
    assert_eq!(limits.max_bytes(Purpose::Training), 20 * 1024 * 1024);
    assert_eq!(limits.max_bytes(Purpose::Avatar), 2 * 1024 * 1024);
    assert_eq!(limits.archive.max_entries, 1_000);
    assert_eq!(limits.image_max_side, 4096);
    let parsed: UploadLimits =
        serde_json::from_str(r#"{"avatar_max_bytes": 1024, "archive": {"max_ratio": 50}}"#)
            .unwrap();
    assert_eq!(parsed.avatar_max_bytes, 1024);
    assert_eq!(parsed.training_max_bytes, 20 * 1024 * 1024);
    assert_eq!(parsed.archive.max_ratio, 50);
    assert_eq!(parsed.archive.max_entries, 1_000);
    assert!(serde_json::from_str::<UploadLimits>(r#"{"avatar_max_byte": 1}"#).is_err());
}
