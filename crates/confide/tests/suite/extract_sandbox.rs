//! Extraction through the real child process (`confide extract`), as the server runs it: files
//! that parse give their text; files that do not are refused as the file's fault; each limit
//! (memory, CPU, wall clock, output) ends a child that hits it, and the child is reaped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../confide-knowledge/tests/fixtures/mod.rs"]
mod fixtures;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use confide_knowledge::extract::Kind;
use confide_knowledge::sandbox::{
    ExtractFailure, SandboxConfig, SelfTest, run_extraction, run_self_test,
};
use tempfile::NamedTempFile;

fn config() -> SandboxConfig {
    SandboxConfig {
        program: PathBuf::from(env!("CARGO_BIN_EXE_confide")),
        memory_mib: 512,
        cpu_seconds: 10,
        wall_seconds: 30,
        ..SandboxConfig::default()
    }
}

fn file_with(bytes: &[u8]) -> NamedTempFile {
    let file = NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    file
}

async fn failure(config: &SandboxConfig, kind: Kind, bytes: &[u8]) -> ExtractFailure {
    let file = file_with(bytes);
    match run_extraction(config, kind, file.path()).await {
        Ok(extracted) => panic!("{kind} extracted: {extracted:?}"),
        Err(failure) => failure,
    }
}

async fn self_test(config: &SandboxConfig, test: SelfTest) -> ExtractFailure {
    match run_self_test(config, test).await {
        Ok(extracted) => panic!("self-test {test:?} extracted: {extracted:?}"),
        Err(failure) => failure,
    }
}

#[tokio::test]
async fn a_pdf_gives_its_pages_and_title_through_the_child() {
    let pdf = fixtures::pdf(
        "Employee Handbook",
        &["Welcome to the handbook", "Holidays are 25 days"],
    );
    let file = file_with(&pdf);
    let extracted = run_extraction(&config(), Kind::Pdf, file.path())
        .await
        .unwrap();
    assert_eq!(extracted.title.as_deref(), Some("Employee Handbook"));
    assert_eq!(
        extracted.pages,
        ["Welcome to the handbook", "Holidays are 25 days"]
    );
    assert!(!extracted.truncated);
}

#[tokio::test]
async fn a_docx_gives_its_text_through_the_child() {
    let docx = fixtures::docx(
        "<w:p><w:r><w:t>Our opening hours are 9 to 5.</w:t></w:r></w:p>\
         <w:p><w:r><w:t>Closed on Sundays.</w:t></w:r></w:p>",
        &[("docProps/core.xml", fixtures::core_xml("Hours"))],
    );
    let file = file_with(&docx);
    let extracted = run_extraction(&config(), Kind::Docx, file.path())
        .await
        .unwrap();
    assert_eq!(extracted.title.as_deref(), Some("Hours"));
    assert_eq!(
        extracted.pages,
        ["Our opening hours are 9 to 5.\n\nClosed on Sundays."]
    );
}

#[tokio::test]
async fn the_childs_text_is_normalized_again_by_the_parent() {
    let file = file_with("pay\u{202E}txt.exe\u{200B} now\r\n\r\n\r\n\u{1B}[2Jdone".as_bytes());
    let extracted = run_extraction(&config(), Kind::Text, file.path())
        .await
        .unwrap();
    assert_eq!(extracted.pages, ["paytxt.exe now\n\n[2Jdone"]);
}

#[tokio::test]
async fn a_truncated_or_garbage_pdf_is_the_files_fault() {
    let pdf = fixtures::pdf("Cut", &["Some text on a page", "And another page"]);
    let truncated = &pdf[..pdf.len() / 2];
    let mut garbage = b"%PDF-1.7\n".to_vec();
    garbage.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    for bytes in [truncated, &garbage[..]] {
        let failure = failure(&config(), Kind::Pdf, bytes).await;
        assert!(
            matches!(
                failure,
                ExtractFailure::Rejected("unreadable") | ExtractFailure::ParserCrashed
            ),
            "{failure:?}"
        );
        assert!(!failure.is_server_fault());
    }
}

#[tokio::test]
async fn a_password_protected_document_is_refused_as_encrypted() {
    let failure = failure(&config(), Kind::Docx, &fixtures::encrypted_office_file()).await;
    assert!(
        matches!(failure, ExtractFailure::Rejected("encrypted")),
        "{failure:?}"
    );
    assert_eq!(failure.code(), "encrypted");
}

#[tokio::test]
async fn a_file_over_the_input_limit_is_refused_before_a_child_starts() {
    let config = SandboxConfig {
        max_input_bytes: 10,
        // A child would fail to start: the refusal must come first.
        program: PathBuf::from("/nonexistent/confide"),
        ..config()
    };
    let failure = failure(&config, Kind::Text, b"eleven bytes").await;
    assert!(
        matches!(failure, ExtractFailure::Rejected("too_large")),
        "{failure:?}"
    );
}

#[tokio::test]
async fn the_memory_self_test_hits_the_memory_limit() {
    let config = SandboxConfig {
        memory_mib: 256,
        ..config()
    };
    let failure = self_test(&config, SelfTest::Memory).await;
    assert!(
        matches!(failure, ExtractFailure::MemoryLimit),
        "{failure:?}"
    );
    assert!(!failure.is_server_fault());
}

#[tokio::test]
async fn the_cpu_self_test_hits_the_cpu_limit() {
    // The wall clock is far off: only the CPU limit can end the spin before the self-test
    // gives up on its own (at 5 s of CPU past the limit) and says the limit is not enforced.
    let config = SandboxConfig {
        cpu_seconds: 1,
        wall_seconds: 600,
        ..config()
    };
    let failure = self_test(&config, SelfTest::Cpu).await;
    assert!(matches!(failure, ExtractFailure::TimeLimit), "{failure:?}");
}

#[tokio::test]
async fn the_panic_self_test_is_a_crashed_parser() {
    let failure = self_test(&config(), SelfTest::Panic).await;
    assert!(
        matches!(failure, ExtractFailure::ParserCrashed),
        "{failure:?}"
    );
    assert!(!failure.is_server_fault());
}

/// The pid of a process whose command line holds `needle`, if any.
fn process_with_argument(needle: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|&b| b == 0)
            .any(|argument| argument == needle.as_bytes())
        {
            return Some(pid);
        }
    }
    None
}

#[tokio::test]
async fn a_child_past_the_wall_clock_is_killed_and_reaped() {
    // A CPU limit far away, a wall clock near: only the parent's timeout can end it. An unusual
    // text limit marks this test's child among the processes.
    let marker = 7_654_321u64;
    let config = SandboxConfig {
        cpu_seconds: 120,
        wall_seconds: 1,
        max_text_bytes: marker,
        ..config()
    };
    let started = Instant::now();
    let run = tokio::spawn(async move { run_self_test(&config, SelfTest::Cpu).await });
    let mut pid = None;
    while pid.is_none() && started.elapsed() < Duration::from_secs(5) {
        pid = process_with_argument(&marker.to_string());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = pid.expect("the child was never seen running");
    let result = run.await.unwrap();
    assert!(
        matches!(result, Err(ExtractFailure::TimeLimit)),
        "{result:?}"
    );
    // Not the CPU limit, which could end it only after 120 s of CPU: however busy the machine,
    // the wall clock of 1 s ended it well before.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    // Reaped: not even a zombie is left.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} is still there"
    );
}

#[tokio::test]
async fn output_over_the_limit_is_too_large() {
    let config = SandboxConfig {
        max_output_bytes: 100,
        ..config()
    };
    let text = "A sentence of the document. ".repeat(100);
    let failure = failure(&config, Kind::Text, text.as_bytes()).await;
    assert!(
        matches!(failure, ExtractFailure::OutputTooLarge),
        "{failure:?}"
    );
    assert!(!failure.is_server_fault());
}

#[tokio::test]
async fn a_sandbox_that_cannot_start_is_the_servers_fault() {
    let config = SandboxConfig {
        program: PathBuf::from("/nonexistent/confide"),
        ..config()
    };
    let failure = failure(&config, Kind::Text, b"hello").await;
    assert!(matches!(failure, ExtractFailure::Sandbox(_)), "{failure:?}");
    assert!(failure.is_server_fault());
    assert_eq!(failure.code(), "sandbox_unavailable");
}
