//! Episode latency percentiles in fixed memory.
//!
//! A controller accepts episodes for as long as a run lasts, and `stats()` is polled while it
//! does: keeping the latencies and sorting them per call costs memory and time that grow with
//! the run. Here each latency is counted in a log-linear bucket (exact below 64 ms, then 32
//! buckets per power of two, so a percentile is within 1/32 ≈ 3% of the true value), and two
//! such histograms take turns: percentiles cover the last [`WINDOW`] to 2 × [`WINDOW`]
//! episodes, so they follow the run instead of its whole history. Recording is O(1), a
//! percentile reads a fixed number of buckets, nothing is allocated after start.

/// Episodes per histogram; percentiles cover the last `WINDOW` to `2 * WINDOW` of them.
pub const WINDOW: u64 = 10_000;

const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// Values below this are their own bucket.
const LINEAR: u64 = 2 * SUB as u64;
/// Exact buckets, then `SUB` per power of two from 2^(SUB_BITS+1) to 2^63.
const BUCKETS: usize = LINEAR as usize + (64 - SUB_BITS as usize - 1) * SUB;

fn bucket(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let top = 63 - v.leading_zeros(); // >= SUB_BITS + 1
    let sub = ((v >> (top - SUB_BITS)) as usize) & (SUB - 1);
    LINEAR as usize + (top - SUB_BITS - 1) as usize * SUB + sub
}

/// The smallest value of bucket `b`.
fn low(b: usize) -> u64 {
    if b < LINEAR as usize {
        return b as u64;
    }
    let i = b - LINEAR as usize;
    let top = (i / SUB) as u32 + SUB_BITS + 1;
    let sub = (i % SUB) as u64;
    (1u64 << top) | (sub << (top - SUB_BITS))
}

#[derive(Clone)]
struct Histogram {
    counts: Box<[u64]>,
    total: u64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
        }
    }
}

/// Latencies of the recent episodes, as two alternating histograms.
#[derive(Clone)]
pub struct Latencies {
    current: Histogram,
    previous: Histogram,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    /// Empty.
    pub fn new() -> Latencies {
        Latencies {
            current: Histogram::new(),
            previous: Histogram::new(),
        }
    }

    /// Counts one latency.
    pub fn record(&mut self, v: u64) {
        if self.current.total >= WINDOW {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.counts.fill(0);
            self.current.total = 0;
        }
        self.current.counts[bucket(v)] += 1;
        self.current.total += 1;
    }

    /// Episodes the percentiles cover.
    pub fn len(&self) -> u64 {
        self.current.total + self.previous.total
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `p`th percentile (the lower end of its bucket); 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        let n = self.len();
        if n == 0 {
            return 0;
        }
        // The same rank as a sorted list's `round(p/100 * (n-1))`, counted from 1.
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * (n as f64 - 1.0)).round() as u64 + 1;
        let mut seen = 0;
        for b in 0..BUCKETS {
            seen += self.current.counts[b] + self.previous.counts[b];
            if seen >= rank {
                return low(b);
            }
        }
        low(BUCKETS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(sorted: &[u64], p: f64) -> u64 {
        let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
        sorted[i]
    }

    #[test]
    fn buckets_cover_every_value_in_order_and_within_three_percent() {
        let mut last = 0;
        for v in (0..5000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let b = bucket(v);
            assert!(b < BUCKETS, "{v}");
            assert!(b >= last, "{v}");
            last = b;
            let lo = low(b);
            assert!(lo <= v, "{v} in bucket from {lo}");
            assert!(v - lo <= v / SUB as u64, "{v} in bucket from {lo}");
        }
    }

    #[test]
    fn percentiles_are_those_of_the_sorted_values_within_three_percent() {
        let mut h = Latencies::new();
        // A skewed spread: 1..=9000, every value once, plus a slow tail.
        let mut all: Vec<u64> = (1..=9000).chain((0..900).map(|i| 50_000 + i * 7)).collect();
        for v in &all {
            h.record(*v);
        }
        all.sort_unstable();
        for p in [0.0, 50.0, 90.0, 99.0, 100.0] {
            let (got, want) = (h.percentile(p), exact(&all, p));
            assert!(
                got <= want && want - got <= want / 32,
                "p{p}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn a_million_episodes_keep_fixed_memory_and_only_the_recent_window() {
        let mut h = Latencies::new();
        for _ in 0..1_000_000 {
            h.record(1_000);
        }
        // A change of regime shows once one window of new values is in.
        for _ in 0..WINDOW {
            h.record(10);
        }
        assert!(h.len() <= 2 * WINDOW);
        assert_eq!(h.percentile(25.0), 10);
        for _ in 0..WINDOW {
            h.record(10);
        }
        assert_eq!(h.percentile(99.0), 10);
        assert_eq!(h.current.counts.len(), BUCKETS);
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(Latencies::new().percentile(99.0), 0);
    }
}
