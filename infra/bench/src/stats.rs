//! Summaries of timing samples (nearest-rank percentiles, in milliseconds).

use std::time::Duration;

use serde::Serialize;

/// Count, percentiles and extremes of a set of durations.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Milliseconds, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`-th percentile (0–100) of sorted values, by nearest rank.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises `samples` (milliseconds); `None` when there are none.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(Summary {
        count: sorted.len(),
        p50_ms: percentile(&sorted, 50.0),
        p99_ms: percentile(&sorted, 99.0),
        min_ms: sorted[0],
        max_ms: sorted[sorted.len() - 1],
        mean_ms: sorted.iter().sum::<f64>() / sorted.len() as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        let s = summarize(&samples).expect("samples");
        assert_eq!((s.count, s.p50_ms, s.p99_ms), (200, 100.0, 198.0));
        assert_eq!((s.min_ms, s.max_ms, s.mean_ms), (1.0, 200.0, 100.5));
        let one = summarize(&[3.0]).expect("one sample");
        assert_eq!((one.p50_ms, one.p99_ms), (3.0, 3.0));
        assert_eq!(summarize(&[]), None);
    }
}
