//! Small exact statistics the score tables need: percentiles of a bootstrap sample
//! and McNemar's exact test.

/// The `q` quantile (0..=1) of `sorted` (ascending, no NaN) by linear interpolation
/// between the two nearest ranks: numpy's default (`method="linear"`), so an interval
/// printed here can be checked with `numpy.percentile` on the same sample.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// The central `level` interval (e.g. 0.95: the 2.5th and 97.5th percentiles) of a
/// sample, NaN values left out; `None` when nothing is left.
pub fn percentile_interval(sample: &mut Vec<f64>, level: f64) -> Option<(f64, f64)> {
    sample.retain(|v| !v.is_nan());
    sample.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Some((
        quantile_sorted(sample, tail)?,
        quantile_sorted(sample, 1.0 - tail)?,
    ))
}

/// McNemar's exact test for paired right/wrong outcomes: the two-sided binomial test
/// of the discordant pairs, `right_to_wrong` against `wrong_to_right`, with p = 1/2.
///
/// `p = min(1, 2 * P(X <= min(b, c)))` for `X ~ Binomial(b + c, 1/2)`, which is what
/// `scipy.stats.binomtest(min(b, c), b + c).pvalue` gives (the distribution is
/// symmetric, so doubling one tail is the exact two-sided value). No discordant pair
/// at all is no evidence of a difference: p = 1.
///
/// Summed directly up to 1,000 discordant pairs and in log space above (2^-n
/// underflows from n = 1075 on), so it stays accurate to rounding for any run size.
pub fn mcnemar_exact(right_to_wrong: usize, wrong_to_right: usize) -> f64 {
    let n = right_to_wrong + wrong_to_right;
    let k = right_to_wrong.min(wrong_to_right);
    if n == 0 {
        return 1.0;
    }
    if 2 * k == n {
        return 1.0;
    }
    let tail = if n <= 1000 {
        // 2^-n is a normal double and each term an exact multiple of it while the
        // binomial coefficients stay below 2^53, so small runs come out exact.
        let mut term = 0.5f64.powi(n as i32);
        let mut sum = 0.0;
        for i in 0..=k {
            sum += term;
            term = term * (n - i) as f64 / (i + 1) as f64;
        }
        sum
    } else {
        // ln C(n, i) built up term by term: C(n, i + 1) = C(n, i) * (n - i) / (i + 1).
        let ln2 = std::f64::consts::LN_2;
        let mut ln_choose = 0.0_f64;
        let mut terms = Vec::with_capacity(k + 1);
        for i in 0..=k {
            if i > 0 {
                ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
            }
            terms.push(ln_choose - n as f64 * ln2);
        }
        let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        max.exp() * terms.iter().map(|t| (t - max).exp()).sum::<f64>()
    };
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact value as a fraction, with integers: 2 * sum C(n, i) / 2^n.
    fn exact(b: usize, c: usize) -> f64 {
        let n = (b + c) as u32;
        let k = b.min(c) as u128;
        let mut choose: u128 = 1;
        let mut sum: u128 = 0;
        for i in 0..=k {
            if let Some(step) = (choose * (n as u128 - i + 1)).checked_div(i) {
                choose = step;
            }
            sum += choose;
        }
        (2.0 * sum as f64 / 2f64.powi(n as i32)).min(1.0)
    }

    #[test]
    fn mcnemar_matches_the_binomial_sum() {
        // Hand-checked: n = 13, P(X <= 3) = (1 + 13 + 78 + 286) / 8192.
        assert_eq!(mcnemar_exact(3, 10), 2.0 * 378.0 / 8192.0);
        assert_eq!(mcnemar_exact(10, 3), 2.0 * 378.0 / 8192.0);
        assert_eq!(mcnemar_exact(0, 5), 0.0625);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        assert_eq!(mcnemar_exact(7, 7), 1.0);
        // Near-balanced counts: the doubled tail passes 1 and is capped.
        assert_eq!(mcnemar_exact(6, 7), 1.0);
        for b in 0..=60 {
            for c in [0, 1, 2, 5, 17, 40, 60] {
                let got = mcnemar_exact(b, c);
                let want = exact(b, c);
                assert!(
                    (got - want).abs() <= 1e-12 * want.max(1e-300),
                    "b={b} c={c}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn mcnemar_stays_finite_on_large_runs() {
        // 2^-4000 underflows; the log-space sum must not.
        let p = mcnemar_exact(1900, 2100);
        assert!(p > 0.0 && p < 0.01, "{p}");
        // Normal approximation with continuity correction for the same counts:
        // z = (|b - c| - 1) / sqrt(b + c) = 199 / sqrt(4000) = 3.1464, two-sided p ~ 0.00165.
        assert!((p - 0.00165).abs() < 0.0002, "{p}");
        assert_eq!(mcnemar_exact(20_000, 20_000), 1.0);
        assert!(mcnemar_exact(0, 5000) == 0.0 || mcnemar_exact(0, 5000) < 1e-300);
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let s = [1.0, 2.0, 3.0, 4.0];
        // numpy.percentile([1, 2, 3, 4], [2.5, 50, 97.5]) = [1.075, 2.5, 3.925]
        assert!((quantile_sorted(&s, 0.025).unwrap() - 1.075).abs() < 1e-12);
        assert_eq!(quantile_sorted(&s, 0.5), Some(2.5));
        assert!((quantile_sorted(&s, 0.975).unwrap() - 3.925).abs() < 1e-12);
        assert_eq!(quantile_sorted(&[], 0.5), None);
        let mut v = vec![f64::NAN, 4.0, 1.0, 3.0, 2.0];
        let (lo, hi) = percentile_interval(&mut v, 0.95).unwrap();
        assert!((lo - 1.075).abs() < 1e-12 && (hi - 3.925).abs() < 1e-12);
        assert_eq!(percentile_interval(&mut vec![f64::NAN], 0.95), None);
    }
}
