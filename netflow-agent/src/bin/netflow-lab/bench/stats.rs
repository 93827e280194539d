//! Medians and their confidence intervals, for rounds of noisy measurements.

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// A 95% percentile-bootstrap interval of the median of `values` (2000
/// resamples, a fixed seed: the same data gives the same interval).
pub fn median_interval(values: &[f64]) -> (f64, f64) {
    if values.len() < 2 {
        let only = values.first().copied().unwrap_or(f64::NAN);
        return (only, only);
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        // xorshift64*: enough for resampling indices.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut medians: Vec<f64> = (0..2000)
        .map(|_| {
            let sample: Vec<f64> = (0..values.len())
                .map(|_| values[(next() % values.len() as u64) as usize])
                .collect();
            median(&sample)
        })
        .collect();
    medians.sort_by(f64::total_cmp);
    (medians[49], medians[1949])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_intervals() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let (low, high) = median_interval(&[10.0, 11.0, 9.0, 10.5, 9.5, 10.0]);
        assert!(low <= 10.0 && high >= 10.0 && low >= 9.0 && high <= 11.0);
        assert_eq!(median_interval(&[5.0]), (5.0, 5.0));
    }
}
