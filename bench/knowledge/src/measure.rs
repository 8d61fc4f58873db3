//! What the machine and this process did: peak memory, CPU (ours and everyone else's), disk.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

/// A `/proc/self/status` field in KiB (`VmHWM`, `VmRSS`).
pub fn status_kib(field: &str) -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no {field} in /proc/self/status"))
}

/// Resets `VmHWM` to the current RSS, so each phase reports its own peak. Returns whether the
/// kernel allowed it (then the peak is the process's since it started).
pub fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU time in clock ticks (USER_HZ, 100 on Linux): this process's, and the whole machine's
/// busy time.
#[derive(Clone, Copy)]
pub struct CpuSample {
    own: u64,
    machine_busy: u64,
}

const TICKS_PER_SECOND: f64 = 100.0;

impl CpuSample {
    pub fn now() -> Result<Self> {
        let stat = fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
        // The command name is in parentheses and may contain spaces: count fields after it.
        let after = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .ok_or_else(|| anyhow!("unexpected /proc/self/stat"))?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let tick = |at: usize| -> Result<u64> {
            fields
                .get(at)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow!("unexpected /proc/self/stat"))
        };
        let own = tick(11)? + tick(12)?;
        let machine = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let cpu = machine
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("cpu "))
            .ok_or_else(|| anyhow!("unexpected /proc/stat"))?;
        let values: Vec<u64> = cpu
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
        let machine_busy = values
            .iter()
            .enumerate()
            .filter(|(at, _)| !matches!(at, 3 | 4) && *at < 8)
            .map(|(_, v)| v)
            .sum();
        Ok(Self { own, machine_busy })
    }

    /// (our CPU seconds, everyone else's) since `earlier`.
    pub fn since(&self, earlier: &CpuSample) -> (f64, f64) {
        let own = self.own.saturating_sub(earlier.own) as f64 / TICKS_PER_SECOND;
        let busy = self.machine_busy.saturating_sub(earlier.machine_busy) as f64 / TICKS_PER_SECOND;
        (own, (busy - own).max(0.0))
    }
}

pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Bytes of every file under `dir`.
pub fn disk_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += disk_bytes(&entry.path())?;
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}

/// Nearest-rank percentiles of sorted samples.
pub struct Percentiles {
    sorted: Vec<Duration>,
}

impl Percentiles {
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self { sorted: samples }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn at(&self, p: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    pub fn max(&self) -> Duration {
        self.sorted.last().copied().unwrap_or_default()
    }

    pub fn mean(&self) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        self.sorted.iter().sum::<Duration>() / u32::try_from(self.sorted.len()).unwrap_or(u32::MAX)
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}
