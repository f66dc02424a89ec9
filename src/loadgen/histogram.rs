//! A latency histogram of fixed size: log-linear buckets in microseconds (exact below 64 µs,
//! then 32 buckets per power of two, so a percentile is within about 3 % of the true value),
//! however many requests are recorded.

use std::time::Duration;

const EXACT: usize = 64;
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = EXACT + (64 - 6) * SUB;

#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    count: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            count: 0,
            max: 0,
        }
    }
}

fn index(micros: u64) -> usize {
    if micros < EXACT as u64 {
        return micros as usize;
    }
    let exponent = 63 - micros.leading_zeros();
    let sub = (micros >> (exponent - SUB_BITS)) as usize & (SUB - 1);
    EXACT + (exponent as usize - 6) * SUB + sub
}

/// The middle of a bucket's range.
fn value(index: usize) -> u64 {
    if index < EXACT {
        return index as u64;
    }
    let exponent = ((index - EXACT) / SUB) as u32 + 6;
    let sub = ((index - EXACT) % SUB) as u64;
    let width = 1u64 << (exponent - SUB_BITS);
    (1u64 << exponent) + sub * width + width / 2
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        let micros = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        self.counts[index(micros)] += 1;
        self.count += 1;
        self.max = self.max.max(micros);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max)
    }

    /// The latency `q` (0..=1) of the requests are at or below.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_micros(value(i).min(self.max)));
            }
        }
        Some(self.max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_a_few_percent() {
        let mut h = Histogram::default();
        assert_eq!(h.percentile(0.5), None);
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 10_000);
        for (q, want) in [(0.5, 5_000.0), (0.9, 9_000.0), (0.99, 9_900.0)] {
            let got = h.percentile(q).unwrap().as_micros() as f64;
            assert!((got - want).abs() / want < 0.035, "p{q}: {got} vs {want}");
        }
        assert_eq!(h.percentile(1.0).unwrap(), Duration::from_micros(10_000));
        assert_eq!(h.max(), Duration::from_micros(10_000));
    }

    #[test]
    fn small_and_huge_values_land_in_range() {
        let mut h = Histogram::default();
        h.record(Duration::from_micros(3));
        h.record(Duration::from_secs(3_600));
        assert_eq!(h.percentile(0.5).unwrap(), Duration::from_micros(3));
        let top = h.percentile(1.0).unwrap().as_secs_f64();
        assert!((top - 3_600.0).abs() < 120.0, "{top}");
        assert!(index(u64::MAX) < BUCKETS);
    }
}
