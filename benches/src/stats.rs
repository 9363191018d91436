//! Small statistics helpers: percentiles over measured samples.

use std::time::Duration;

/// The `q`-quantile (0.0..=1.0) of `samples` by nearest rank; `None` when empty.
pub fn quantile(samples: &mut [Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let q = q.clamp(0.0, 1.0);
    // Nearest-rank: ceil(q * n), 1-based, clamped into range.
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples.get(rank - 1).copied()
}

/// Median of plain numbers (e.g. per-repetition throughputs); `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// Microseconds as `f64`, for JSON output.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(quantile(&mut v, 0.5), Some(Duration::from_micros(50)));
        assert_eq!(quantile(&mut v, 0.99), Some(Duration::from_micros(99)));
        assert_eq!(quantile(&mut v, 1.0), Some(Duration::from_micros(100)));
        assert_eq!(quantile(&mut [], 0.5), None);
    }

    #[test]
    fn median_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
