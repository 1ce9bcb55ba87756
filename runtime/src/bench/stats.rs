//! Percentiles of a set of samples, and the Markdown rows the benchmarks print.

use std::time::Duration;

/// Sorted samples of one measurement.
#[derive(Clone, Debug)]
pub struct Samples {
    /// What was measured.
    pub name: String,
    sorted: Vec<Duration>,
}

impl Samples {
    /// Sorts `samples`.
    pub fn new(name: impl Into<String>, mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Samples {
            name: name.into(),
            sorted: samples,
        }
    }

    /// The `p`-th percentile (0..=100), nearest rank.
    pub fn pct(&self, p: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * (self.sorted.len() as f64 - 1.0)).round() as usize;
        self.sorted[rank.min(self.sorted.len() - 1)]
    }

    /// The median.
    pub fn p50(&self) -> Duration {
        self.pct(50.0)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

/// Formats a duration in µs with one decimal, or ms above 10 ms.
pub fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

/// The header of a latency table.
pub fn header() -> String {
    "| path | n | p50 | p90 | p99 | p50 ratio to baseline |\n| --- | ---: | ---: | ---: | ---: | ---: |".to_string()
}

/// One row; `baseline` is the row the ratio is taken against.
pub fn row(s: &Samples, baseline: Option<&Samples>) -> String {
    let ratio = match baseline {
        Some(b) if b.p50() > Duration::ZERO => {
            format!("{:.2}×", s.p50().as_secs_f64() / b.p50().as_secs_f64())
        }
        _ => "baseline".to_string(),
    };
    format!(
        "| {} | {} | {} | {} | {} | {} |",
        s.name,
        s.len(),
        fmt(s.p50()),
        fmt(s.pct(90.0)),
        fmt(s.pct(99.0)),
        ratio
    )
}
