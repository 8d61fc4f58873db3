//! Latency summaries from raw samples (every sample is kept; runs are short enough).

use serde::Serialize;

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// The value at quantile `q` of sorted `samples` (nearest rank).
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Summarises latencies given in microseconds.
pub fn summarize(mut samples_us: Vec<u64>) -> Latency {
    if samples_us.is_empty() {
        return Latency::default();
    }
    samples_us.sort_unstable();
    let sum: u128 = samples_us.iter().map(|&v| u128::from(v)).sum();
    Latency {
        count: samples_us.len(),
        mean_ms: sum as f64 / samples_us.len() as f64 / 1000.0,
        p50_ms: ms(quantile(&samples_us, 0.50)),
        p90_ms: ms(quantile(&samples_us, 0.90)),
        p99_ms: ms(quantile(&samples_us, 0.99)),
        p999_ms: ms(quantile(&samples_us, 0.999)),
        max_ms: ms(samples_us.last().copied().unwrap_or(0)),
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms p99.9={:.2} ms max={:.2} ms mean={:.2} ms",
            self.count,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            self.mean_ms
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<u64> = (1..=1000).map(|v| v * 1000).collect();
        let l = summarize(samples);
        assert_eq!(l.count, 1000);
        assert_eq!(l.p50_ms, 500.0);
        assert_eq!(l.p99_ms, 990.0);
        assert_eq!(l.p999_ms, 999.0);
        assert_eq!(l.max_ms, 1000.0);
        assert!((l.mean_ms - 500.5).abs() < 1e-9);
    }

    #[test]
    fn empty_and_single_sets_summarize() {
        assert_eq!(summarize(Vec::new()), Latency::default());
        let l = summarize(vec![1500]);
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (1.5, 1.5, 1.5));
    }
}
