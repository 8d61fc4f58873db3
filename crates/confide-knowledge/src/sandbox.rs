//! Extraction in a child process with limits: the parsers (pdf-extract above all) see hostile
//! files, may panic, abort, loop or allocate without end, and none of that may touch the server.
//!
//! The server re-executes its own binary as `confide extract --kind K` ([`run_extraction`]).
//! The child ([`child_main`], dispatched before any runtime is built) limits itself with
//! `setrlimit` before it reads a byte: address space, CPU seconds, no core dumps, no files
//! written, few descriptors. It reads the file from standard input (bounded), extracts,
//! normalizes, and writes one JSON frame to standard output at the very end. The parent reads
//! both pipes bounded, kills the child when the wall clock runs out, and turns how the child
//! ended into an [`ExtractFailure`]: a file's fault (rejected, crashed the parser, hit a limit)
//! or the server's (the sandbox could not be set up).
//!
//! Self-limiting needs no `unsafe` `pre_exec` and has no race: until it starts parsing, the child
//! is our own code. `confide extract --self-test memory|cpu|panic` proves each limit on the
//! machine at hand ([`run_self_test`]).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::extract::{ExtractError, Extracted, Kind};
use crate::normalize::normalize_extracted;

mod child;

pub use child::{ExtractArgs, SelfTest, child_main};

/// The child's exit codes besides 0 (extracted). A panic exits with 101.
const EXIT_REJECTED: u8 = 3;
const EXIT_SANDBOX: u8 = 4;
const EXIT_IO: u8 = 5;
const EXIT_SELF_TEST_SURVIVED: u8 = 6;
/// clap's exit code for arguments it does not accept.
const EXIT_USAGE: i32 = 2;
const EXIT_PANIC: i32 = 101;

/// Signal numbers (Linux on x86 and ARM).
const SIGABRT: i32 = 6;
const SIGKILL: i32 = 9;
const SIGXCPU: i32 = 24;

/// The start of the child's standard error that is kept (for the logs and to recognize an
/// allocation failure); the rest is read and dropped so the child never blocks on it.
const STDERR_KEPT_BYTES: usize = 4096;

const FRAME_VERSION: u32 = 1;

/// How the server runs the extraction child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxConfig {
    /// The `confide` binary to run as `PROGRAM extract …`.
    pub program: PathBuf,
    /// Address space of the child (`RLIMIT_AS`), binary and libraries included.
    pub memory_mib: u64,
    /// CPU time of the child (`RLIMIT_CPU`).
    pub cpu_seconds: u64,
    /// Wall-clock time after which the child is killed (it may be blocked, not computing).
    pub wall_seconds: u64,
    /// Larger files are rejected (`too_large`) without starting a child.
    pub max_input_bytes: u64,
    /// The child's frame may be at most this long; longer is `output_too_large`.
    pub max_output_bytes: u64,
    /// Text the child keeps (after normalizing); the rest is cut and the result `truncated`.
    pub max_text_bytes: u64,
}

impl SandboxConfig {
    /// This very binary. `/proc/self/exe` still names it when the file was replaced on disk
    /// (an upgrade): the child is always the server's own version.
    pub fn default_program() -> PathBuf {
        if cfg!(target_os = "linux") {
            PathBuf::from("/proc/self/exe")
        } else {
            std::env::current_exe().unwrap_or_else(|_| PathBuf::from("confide"))
        }
    }
}

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            program: SandboxConfig::default_program(),
            memory_mib: 1024,
            cpu_seconds: 30,
            wall_seconds: 60,
            max_input_bytes: 32 * 1024 * 1024,
            max_output_bytes: 64 * 1024 * 1024,
            max_text_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Why the child gave no text.
#[derive(Debug, thiserror::Error)]
pub enum ExtractFailure {
    /// The parser refused the file; the code is one of [`ExtractError::CODES`].
    #[error("the file was refused: {0}")]
    Rejected(&'static str),
    #[error("the file made the parser crash")]
    ParserCrashed,
    #[error("the file needed more memory than extraction may use")]
    MemoryLimit,
    #[error("the file took longer to extract than allowed")]
    TimeLimit,
    #[error("the file gave more text than extraction may return")]
    OutputTooLarge,
    /// Something other than one well-formed frame came out (a library printing to standard
    /// output, say): refused rather than guessed at.
    #[error("the extraction child's output was not a valid frame")]
    Malformed,
    /// The child could not be started or could not limit itself: this server's fault, not the
    /// file's; try again later or elsewhere.
    #[error("the extraction sandbox is not available: {0}")]
    Sandbox(String),
}

impl ExtractFailure {
    pub fn code(&self) -> &'static str {
        match self {
            ExtractFailure::Rejected(code) => code,
            ExtractFailure::ParserCrashed => "parser_crashed",
            ExtractFailure::MemoryLimit => "memory_limit",
            ExtractFailure::TimeLimit => "time_limit",
            ExtractFailure::OutputTooLarge => "output_too_large",
            ExtractFailure::Malformed => "malformed_output",
            ExtractFailure::Sandbox(_) => "sandbox_unavailable",
        }
    }

    /// The server failed, not the file: the source should be retried, not rejected.
    pub fn is_server_fault(&self) -> bool {
        matches!(self, ExtractFailure::Sandbox(_))
    }
}

/// What the child writes to standard output, once, at the end.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Frame {
    v: u32,
    outcome: Outcome,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum Outcome {
    Extracted {
        title: Option<String>,
        pages: Vec<String>,
        truncated: bool,
    },
    Rejected {
        code: String,
    },
}

/// Extracts the text of the `kind` file at `input` in a child process with the configured
/// limits. The text is normalized again here (the child's output is untrusted) and capped at
/// `max_text_bytes`.
pub async fn run_extraction(
    config: &SandboxConfig,
    kind: Kind,
    input: &Path,
) -> Result<Extracted, ExtractFailure> {
    let file = tokio::fs::File::open(input)
        .await
        .map_err(|error| sandbox_error("cannot open the file to extract", error))?;
    let size = file
        .metadata()
        .await
        .map_err(|error| sandbox_error("cannot read the file's size", error))?
        .len();
    if size > config.max_input_bytes {
        return Err(ExtractFailure::Rejected(ExtractError::TooLarge.code()));
    }
    // The file itself is the child's standard input: no pipe to feed, so no deadlock.
    let stdin = Stdio::from(file.into_std().await);
    let extracted = run_child(config, &["--kind", kind.as_str()], stdin).await?;
    Ok(normalize_extracted(
        extracted,
        usize::try_from(config.max_text_bytes).unwrap_or(usize::MAX),
    ))
}

/// Runs `confide extract --self-test TEST` under `config`'s limits. Each test ends only by
/// hitting its limit: `memory` gives [`ExtractFailure::MemoryLimit`], `cpu`
/// [`ExtractFailure::TimeLimit`], `panic` [`ExtractFailure::ParserCrashed`]. A limit that is
/// not enforced gives [`ExtractFailure::Sandbox`].
pub async fn run_self_test(
    config: &SandboxConfig,
    test: SelfTest,
) -> Result<Extracted, ExtractFailure> {
    run_child(config, &["--self-test", test.as_str()], Stdio::null()).await
}

async fn run_child(
    config: &SandboxConfig,
    args: &[&str],
    stdin: Stdio,
) -> Result<Extracted, ExtractFailure> {
    let mut command = Command::new(&config.program);
    command
        .arg("extract")
        .args(args)
        .arg("--memory-mib")
        .arg(config.memory_mib.to_string())
        .arg("--cpu-seconds")
        .arg(config.cpu_seconds.to_string())
        .arg("--max-input-bytes")
        .arg(config.max_input_bytes.to_string())
        .arg("--max-text-bytes")
        .arg(config.max_text_bytes.to_string())
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear()
        .current_dir("/")
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|error| {
        sandbox_error(&format!("cannot start {}", config.program.display()), error)
    })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        kill(&mut child).await;
        return Err(ExtractFailure::Sandbox(
            "the child has no output pipes".into(),
        ));
    };
    let max_output = usize::try_from(config.max_output_bytes).unwrap_or(usize::MAX);
    let work = async {
        let (output, errors) = tokio::try_join!(read_bounded(stdout, max_output), async {
            Ok(read_start(stderr, STDERR_KEPT_BYTES).await)
        })?;
        let status = child
            .wait()
            .await
            .map_err(|error| sandbox_error("cannot wait for the child", error))?;
        Ok::<_, ExtractFailure>((output, errors, status))
    };
    let wall_clock = Duration::from_secs(config.wall_seconds);
    match tokio::time::timeout(wall_clock, work).await {
        Err(_elapsed) => {
            kill(&mut child).await;
            Err(ExtractFailure::TimeLimit)
        }
        Ok(Err(failure)) => {
            kill(&mut child).await;
            Err(failure)
        }
        Ok(Ok((output, errors, status))) => {
            let result = outcome(status, &output, &errors);
            if let Err(failure) = &result {
                tracing::debug!(
                    code = failure.code(),
                    ?status,
                    stderr = %String::from_utf8_lossy(&errors).escape_debug(),
                    "extraction failed"
                );
            }
            result
        }
    }
}

/// Kills the child and reaps it, so no zombie and no stray process is left.
async fn kill(child: &mut Child) {
    if let Err(error) = child.start_kill() {
        tracing::debug!(%error, "the extraction child had already ended");
    }
    if let Err(error) = child.wait().await {
        tracing::warn!(%error, "cannot reap the extraction child");
    }
}

fn sandbox_error(what: &str, error: std::io::Error) -> ExtractFailure {
    ExtractFailure::Sandbox(format!("{what}: {error}"))
}

/// All of `reader`, or `OutputTooLarge` as soon as it passes `max` bytes.
async fn read_bounded(
    reader: impl AsyncRead + Unpin,
    max: usize,
) -> Result<Vec<u8>, ExtractFailure> {
    let mut output = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut output)
        .await
        .map_err(|error| sandbox_error("cannot read the child's output", error))?;
    if output.len() > max {
        return Err(ExtractFailure::OutputTooLarge);
    }
    Ok(output)
}

/// The first `keep` bytes of `reader`, reading (and dropping) the rest to its end.
async fn read_start(mut reader: impl AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = keep.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buffer[..room]);
            }
        }
    }
}

/// How the child ended, as the parent sees it.
fn outcome(status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> Result<Extracted, ExtractFailure> {
    if let Some(signal) = status.signal() {
        return Err(match signal {
            SIGXCPU => ExtractFailure::TimeLimit,
            // The allocator aborts when the address space is exhausted, after saying so.
            SIGABRT if says_allocation_failed(stderr) => ExtractFailure::MemoryLimit,
            // Not our kill (that is handled before): the kernel's out-of-memory killer.
            SIGKILL => ExtractFailure::MemoryLimit,
            _ => ExtractFailure::ParserCrashed,
        });
    }
    let code = status.code().unwrap_or(EXIT_PANIC);
    if code == 0 {
        return match frame(stdout)? {
            Outcome::Extracted {
                title,
                pages,
                truncated,
            } => Ok(Extracted {
                title,
                pages,
                truncated,
            }),
            Outcome::Rejected { .. } => Err(ExtractFailure::Malformed),
        };
    }
    match u8::try_from(code) {
        Ok(EXIT_REJECTED) => match frame(stdout)? {
            Outcome::Rejected { code } => Err(ExtractError::known_code(&code)
                .map_or(ExtractFailure::Malformed, ExtractFailure::Rejected)),
            Outcome::Extracted { .. } => Err(ExtractFailure::Malformed),
        },
        Ok(EXIT_SANDBOX) => Err(ExtractFailure::Sandbox(
            "the extraction child could not set its limits".into(),
        )),
        Ok(EXIT_IO) => Err(ExtractFailure::Sandbox(
            "the extraction child could not read its input or write its output".into(),
        )),
        Ok(EXIT_SELF_TEST_SURVIVED) => Err(ExtractFailure::Sandbox(
            "a limit is not enforced: the self-test outlived it".into(),
        )),
        _ if code == EXIT_USAGE => Err(ExtractFailure::Sandbox(
            "the extraction program refused its arguments (is it this version of confide?)".into(),
        )),
        _ => Err(ExtractFailure::ParserCrashed),
    }
}

fn frame(stdout: &[u8]) -> Result<Outcome, ExtractFailure> {
    // One JSON document and nothing else: stray output before or after it fails here.
    let frame: Frame = serde_json::from_slice(stdout).map_err(|_| ExtractFailure::Malformed)?;
    if frame.v != FRAME_VERSION {
        return Err(ExtractFailure::Malformed);
    }
    Ok(frame.outcome)
}

fn says_allocation_failed(stderr: &[u8]) -> bool {
    const MESSAGE: &[u8] = b"memory allocation of ";
    stderr
        .windows(MESSAGE.len())
        .any(|window| window == MESSAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn signalled(signal: i32) -> ExitStatus {
        ExitStatus::from_raw(signal)
    }

    fn frame_of(outcome: Outcome) -> Vec<u8> {
        serde_json::to_vec(&Frame {
            v: FRAME_VERSION,
            outcome,
        })
        .unwrap_or_default()
    }

    fn code(result: Result<Extracted, ExtractFailure>) -> &'static str {
        match result {
            Ok(_) => "extracted",
            Err(failure) => failure.code(),
        }
    }

    #[test]
    fn a_clean_exit_with_one_frame_is_the_text() {
        let stdout = frame_of(Outcome::Extracted {
            title: Some("T".into()),
            pages: vec!["a".into(), "b".into()],
            truncated: true,
        });
        let extracted = outcome(exited(0), &stdout, b"");
        assert_eq!(
            extracted.ok(),
            Some(Extracted {
                title: Some("T".into()),
                pages: vec!["a".into(), "b".into()],
                truncated: true,
            })
        );
    }

    #[test]
    fn anything_but_exactly_one_frame_is_malformed() {
        let good = frame_of(Outcome::Extracted {
            title: None,
            pages: vec![],
            truncated: false,
        });
        let mut printed_before = b"debug: font\n".to_vec();
        printed_before.extend_from_slice(&good);
        let mut printed_after = good.clone();
        printed_after.extend_from_slice(b"{}");
        let wrong_version = String::from_utf8_lossy(&good).replace("\"v\":1", "\"v\":2");
        let unknown_field = String::from_utf8_lossy(&good).replace("\"v\":1", "\"v\":1,\"x\":0");
        for stdout in [
            printed_before,
            printed_after,
            wrong_version.into_bytes(),
            unknown_field.into_bytes(),
            b"".to_vec(),
        ] {
            assert_eq!(code(outcome(exited(0), &stdout, b"")), "malformed_output");
        }
        // A rejection frame with a clean exit, or the other way round, is malformed too.
        let rejected = frame_of(Outcome::Rejected {
            code: "encrypted".into(),
        });
        assert_eq!(code(outcome(exited(0), &rejected, b"")), "malformed_output");
        assert_eq!(
            code(outcome(exited(i32::from(EXIT_REJECTED)), &good, b"")),
            "malformed_output"
        );
    }

    #[test]
    fn a_rejection_carries_only_known_codes() {
        let rejected = |code: &str| {
            frame_of(Outcome::Rejected {
                code: code.to_owned(),
            })
        };
        let status = exited(i32::from(EXIT_REJECTED));
        assert_eq!(
            code(outcome(status, &rejected("encrypted"), b"")),
            "encrypted"
        );
        assert_eq!(
            code(outcome(status, &rejected("too_large"), b"")),
            "too_large"
        );
        assert_eq!(
            code(outcome(status, &rejected("<script>"), b"")),
            "malformed_output"
        );
    }

    #[test]
    fn how_the_child_died_names_the_limit_it_hit() {
        let oom = b"memory allocation of 1048576 bytes failed\n";
        assert_eq!(code(outcome(signalled(SIGXCPU), b"", b"")), "time_limit");
        assert_eq!(code(outcome(signalled(SIGABRT), b"", oom)), "memory_limit");
        assert_eq!(
            code(outcome(signalled(SIGABRT), b"", b"")),
            "parser_crashed"
        );
        assert_eq!(code(outcome(signalled(SIGKILL), b"", b"")), "memory_limit");
        assert_eq!(code(outcome(signalled(11), b"", b"")), "parser_crashed");
        assert_eq!(
            code(outcome(exited(EXIT_PANIC), b"", b"")),
            "parser_crashed"
        );
        assert_eq!(code(outcome(exited(1), b"", b"")), "parser_crashed");
    }

    #[test]
    fn only_a_sandbox_that_cannot_run_is_the_servers_fault() {
        for (status, server_fault) in [
            (exited(i32::from(EXIT_SANDBOX)), true),
            (exited(i32::from(EXIT_IO)), true),
            (exited(i32::from(EXIT_SELF_TEST_SURVIVED)), true),
            (exited(EXIT_USAGE), true),
            (exited(EXIT_PANIC), false),
            (signalled(SIGXCPU), false),
        ] {
            let failure = outcome(status, b"", b"").err();
            assert_eq!(
                failure.as_ref().map(ExtractFailure::is_server_fault),
                Some(server_fault),
                "{failure:?}"
            );
        }
        assert!(!ExtractFailure::Malformed.is_server_fault());
        assert!(!ExtractFailure::OutputTooLarge.is_server_fault());
        assert!(!ExtractFailure::Rejected("unreadable").is_server_fault());
    }
}
