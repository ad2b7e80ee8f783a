//! Repeated measurements and their median, plus number formatting for the report.

use serde::Serialize;

/// The figures of one measurement repeated over several runs; the median is the one reported.
#[derive(Clone, Debug, Serialize)]
pub struct Samples {
    /// Median of the runs.
    pub median: f64,
    /// Slowest run's figure.
    pub min: f64,
    /// Fastest run's figure.
    pub max: f64,
    /// Every run's figure, in run order.
    pub runs: Vec<f64>,
}

impl Samples {
    /// Summarises the figures of the runs (at least one).
    pub fn new(runs: Vec<f64>) -> Self {
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Self {
            median,
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            runs,
        }
    }

    /// Microseconds per operation at the median rate (ops/s).
    pub fn us_per_op(&self) -> f64 {
        1e6 / self.median
    }
}

/// Operations per second.
pub fn rate(ops: usize, elapsed: std::time::Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// A number rounded to an integer with thousands separators: `12,345`.
pub fn int(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    let s = format!("{:.0}", x.abs());
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 && out != "0" { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(Samples::new(vec![3.0, 1.0, 2.0]).median, 2.0);
        assert_eq!(Samples::new(vec![4.0, 1.0, 2.0, 3.0]).median, 2.5);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(int(0.4), "0");
        assert_eq!(int(999.0), "999");
        assert_eq!(int(1234.0), "1,234");
        assert_eq!(int(1_234_567.6), "1,234,568");
    }
}
