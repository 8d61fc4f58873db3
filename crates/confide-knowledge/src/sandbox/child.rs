//! The extraction child: `confide extract`, run by the server (the command is hidden). It must
//! be dispatched from `main` before a runtime or telemetry exists, so that it is one small
//! single-threaded process. Its standard output and error must be pipes or a terminal: with
//! `RLIMIT_FSIZE` at 0, writing to a regular file kills it (SIGXFSZ).

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rlimit::Resource;

use super::{
    EXIT_IO, EXIT_REJECTED, EXIT_SANDBOX, EXIT_SELF_TEST_SURVIVED, FRAME_VERSION, Frame, Outcome,
};
use crate::extract::{ExtractLimits, Kind, extract};
use crate::normalize::normalize_extracted;

/// The child's arguments (the CLI builds them from `confide extract …`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtractArgs {
    /// What standard input holds. Required unless `self_test` is given.
    pub kind: Option<Kind>,
    pub self_test: Option<SelfTest>,
    pub memory_mib: u64,
    pub cpu_seconds: u64,
    pub max_input_bytes: u64,
    pub max_text_bytes: u64,
}

/// A diagnostic that must end by hitting one limit: "are the limits enforced on this kernel?"
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfTest {
    /// Allocates without end: the address-space limit must stop it.
    Memory,
    /// Spins: the CPU limit must stop it.
    Cpu,
    /// Panics, as a parser may.
    Panic,
}

impl SelfTest {
    pub const ALL: [SelfTest; 3] = [SelfTest::Memory, SelfTest::Cpu, SelfTest::Panic];

    pub fn as_str(self) -> &'static str {
        match self {
            SelfTest::Memory => "memory",
            SelfTest::Cpu => "cpu",
            SelfTest::Panic => "panic",
        }
    }

    pub fn parse(name: &str) -> Option<SelfTest> {
        SelfTest::ALL.into_iter().find(|test| test.as_str() == name)
    }
}

/// Limits itself, then extracts standard input and writes one frame, or runs a self-test.
pub fn child_main(args: &ExtractArgs) -> ExitCode {
    if let Err(error) = limit_self(args) {
        eprintln!("extract: cannot set the limits: {error}");
        return ExitCode::from(EXIT_SANDBOX);
    }
    if let Some(test) = args.self_test {
        return self_test(test, args);
    }
    let Some(kind) = args.kind else {
        eprintln!("extract: --kind or --self-test is required");
        return ExitCode::from(EXIT_SANDBOX);
    };
    let mut input = Vec::new();
    if let Err(error) = io::stdin()
        .lock()
        .take(args.max_input_bytes.saturating_add(1))
        .read_to_end(&mut input)
    {
        eprintln!("extract: cannot read standard input: {error}");
        return ExitCode::from(EXIT_IO);
    }
    let max_text_bytes = usize::try_from(args.max_text_bytes).unwrap_or(usize::MAX);
    let limits = ExtractLimits {
        max_input_bytes: args.max_input_bytes,
        max_text_bytes,
        ..ExtractLimits::default()
    };
    let (outcome, exit) = match extract(kind, &input, &limits) {
        Ok(extracted) => {
            // Normalized here too, so the frame is no larger than it needs to be.
            let extracted = normalize_extracted(extracted, max_text_bytes);
            let outcome = Outcome::Extracted {
                title: extracted.title,
                pages: extracted.pages,
                truncated: extracted.truncated,
            };
            (outcome, ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("extract: {error}");
            let code = error.code().to_owned();
            (Outcome::Rejected { code }, ExitCode::from(EXIT_REJECTED))
        }
    };
    let frame = Frame {
        v: FRAME_VERSION,
        outcome,
    };
    let written = serde_json::to_vec(&frame)
        .map_err(io::Error::from)
        .and_then(|bytes| {
            let mut stdout = io::stdout().lock();
            stdout.write_all(&bytes)?;
            stdout.flush()
        });
    match written {
        Ok(()) => exit,
        Err(error) => {
            eprintln!("extract: cannot write the result: {error}");
            ExitCode::from(EXIT_IO)
        }
    }
}

/// Hard limits equal the soft ones (CPU: one second more, so SIGXCPU comes first), so the
/// parser cannot raise them again. None is raised above what this process already has.
fn limit_self(args: &ExtractArgs) -> io::Result<()> {
    let memory = args.memory_mib.saturating_mul(1024 * 1024);
    let cpu = args.cpu_seconds.max(1);
    lower(Resource::CORE, 0, 0)?;
    lower(Resource::FSIZE, 0, 0)?;
    lower(Resource::NOFILE, 16, 16)?;
    lower(Resource::CPU, cpu, cpu.saturating_add(1))?;
    lower(Resource::AS, memory, memory)
}

fn lower(resource: Resource, soft: u64, hard: u64) -> io::Result<()> {
    let (_, current_hard) = rlimit::getrlimit(resource)?;
    let hard = hard.min(current_hard);
    rlimit::setrlimit(resource, soft.min(hard), hard)
}

/// The CPU time this process has used: the first field of `/proc/self/schedstat`, in
/// nanoseconds; `None` where the kernel does not provide it.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    let nanos = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

fn self_test(test: SelfTest, args: &ExtractArgs) -> ExitCode {
    match test {
        SelfTest::Memory => {
            // Far past the limit without the process ever touching the pages (calloc'd zeroes
            // stay virtual), so a machine without the limit is not hurt by the test.
            const BLOCK: usize = 16 * 1024 * 1024;
            let enough = args.memory_mib.saturating_mul(2).saturating_add(1024) / 16;
            let mut blocks: Vec<Vec<u8>> = Vec::new();
            for _ in 0..enough {
                blocks.push(std::hint::black_box(vec![0u8; BLOCK]));
            }
            eprintln!(
                "extract: self-test memory: allocated {} MiB above a {} MiB limit",
                blocks.len() * 16,
                args.memory_mib
            );
        }
        SelfTest::Cpu => {
            // Spins until it has used 5 s of CPU more than the limit: the limit is enforced when
            // SIGXCPU ends it first. CPU time, not the wall clock, so a busy machine that gives
            // the child little CPU cannot make it give up before reaching its limit.
            let limit = Duration::from_secs(args.cpu_seconds.saturating_add(5));
            let wall_deadline = Instant::now() + Duration::from_secs(3600);
            let mut spins = 0u64;
            loop {
                for _ in 0..1_000_000 {
                    spins = std::hint::black_box(spins.wrapping_add(1));
                }
                match cpu_time() {
                    Some(used) if used >= limit => break,
                    Some(_) => {}
                    // No CPU clock to read: the wall clock, generously.
                    None if Instant::now() >= wall_deadline => break,
                    None => {}
                }
            }
            eprintln!(
                "extract: self-test cpu: spun past a {} s limit",
                args.cpu_seconds
            );
        }
        SelfTest::Panic => panic!("extract: self-test panic, as asked"),
    }
    ExitCode::from(EXIT_SELF_TEST_SURVIVED)
}
