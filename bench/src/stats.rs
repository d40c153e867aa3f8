//! Latency statistics. Every sample is kept (8 bytes each: a 10 s window at
//! 50,000 ops/s is 4 MB), so percentiles are exact rather than bucketed, and
//! no histogram dependency is needed.

use std::time::Duration;

/// Latency samples of one operation, in nanoseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    nanos: Vec<u64>,
}

impl Samples {
    pub fn record(&mut self, latency: Duration) {
        self.nanos
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    pub fn merge(&mut self, other: Samples) {
        self.nanos.extend(other.nanos);
    }

    /// Sorts the samples and summarises them; `None` when there are none.
    pub fn summarize(&mut self) -> Option<Summary> {
        self.nanos.sort_unstable();
        summarize_sorted(&self.nanos)
    }
}

/// What the report prints for one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

/// Summarises sorted nanosecond samples.
pub fn summarize_sorted(sorted: &[u64]) -> Option<Summary> {
    let max = *sorted.last()?;
    let sum: u128 = sorted.iter().map(|&n| u128::from(n)).sum();
    let mean = u64::try_from(sum / sorted.len() as u128).unwrap_or(u64::MAX);
    Some(Summary {
        count: sorted.len(),
        p50: Duration::from_nanos(percentile(sorted, 50.0)?),
        p99: Duration::from_nanos(percentile(sorted, 99.0)?),
        max: Duration::from_nanos(max),
        mean: Duration::from_nanos(mean),
    })
}

/// Nearest-rank percentile of sorted samples: the smallest sample such that
/// at least `p` percent of the samples are less than or equal to it. It is
/// always an observed value, never an interpolation.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let p = if p.is_nan() {
        100.0
    } else {
        p.clamp(0.0, 100.0)
    };
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Median of a few run results (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if mid * 2 == sorted.len() {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// Milliseconds with microsecond resolution, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_one_to_hundred() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&v, 0.5), Some(1));
        assert_eq!(percentile(&v, 99.5), Some(100));
    }

    #[test]
    fn percentile_of_small_sets() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 50.0), Some(7));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2], 50.0), Some(1));
        assert_eq!(percentile(&[1, 2], 51.0), Some(2));
        assert_eq!(percentile(&[1, 2, 3], 50.0), Some(2));
    }

    #[test]
    fn p99_sees_the_tail() {
        // 990 fast samples and 10 slow ones: p99 is the last fast one, the
        // 991st sample is the first slow one.
        let mut v = vec![10u64; 990];
        v.extend(vec![1000u64; 10]);
        assert_eq!(percentile(&v, 99.0), Some(10));
        assert_eq!(percentile(&v, 99.1), Some(1000));
    }

    #[test]
    fn summary_sorts_and_merges() {
        let mut a = Samples::default();
        for n in [5u64, 1, 4] {
            a.record(Duration::from_nanos(n));
        }
        let mut b = Samples::default();
        for n in [3u64, 2] {
            b.record(Duration::from_nanos(n));
        }
        a.merge(b);
        assert_eq!(a.len(), 5);
        let s = a.summarize().unwrap();
        assert_eq!(s.count, 5);
        assert_eq!(s.p50, Duration::from_nanos(3));
        assert_eq!(s.p99, Duration::from_nanos(5));
        assert_eq!(s.max, Duration::from_nanos(5));
        assert_eq!(s.mean, Duration::from_nanos(3));
        assert!(Samples::default().summarize().is_none());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
