//! A category's threshold from its normal images alone: each normal is scored
//! against the others (leave-one-out), and a high percentile of those scores is
//! where "unusual" starts. No labelled defect is needed.

use super::features::PatchGrid;
use super::map::{Search, score};

/// The default percentile: the largest leave-one-out score. The memories hold few
/// normals per category (five in the sample, a few hundred in MMAD), so any lower
/// percentile would call some normal images anomalous by construction.
pub const DEFAULT_PERCENTILE: f64 = 100.0;

/// Leave-one-out image scores: normal `i` against the `k` others closest to it in
/// `order_of(i)` (the retrieval order a query would see), or all others when fewer.
pub fn leave_one_out_scores(
    normals: &[PatchGrid],
    k: usize,
    search: Search,
    order_of: &dyn Fn(usize) -> Vec<usize>,
) -> Vec<f32> {
    (0..normals.len())
        .filter_map(|i| {
            let refs: Vec<&PatchGrid> = order_of(i)
                .into_iter()
                .filter(|&j| j != i && j < normals.len())
                .take(k.max(1))
                .map(|j| &normals[j])
                .collect();
            (!refs.is_empty()).then(|| score(&normals[i], &refs, search).score)
        })
        .collect()
}

/// The `p`-th percentile with linear interpolation between order statistics
/// (numpy's default), or `None` for no scores.
pub fn percentile(scores: &[f32], p: f64) -> Option<f32> {
    let mut sorted: Vec<f64> = scores.iter().map(|&s| s as f64).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    Some((sorted[lo] + (sorted[hi] - sorted[lo]) * frac) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::features::{DIM, GRID};

    fn flat(v: f32) -> PatchGrid {
        PatchGrid {
            side: GRID,
            dim: DIM,
            values: vec![v; GRID * GRID * DIM],
        }
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&s, 100.0), Some(4.0));
        assert_eq!(percentile(&s, 0.0), Some(1.0));
        assert_eq!(percentile(&s, 50.0), Some(2.5));
        assert!((percentile(&s, 99.0).unwrap() - 3.97).abs() < 1e-5);
        assert_eq!(percentile(&[], 99.0), None);
    }

    #[test]
    fn the_outlier_normal_sets_the_threshold() {
        let normals = vec![flat(0.0), flat(0.0), flat(1.0)];
        let all = |_: usize| vec![0, 1, 2];
        let scores = leave_one_out_scores(&normals, 1, Search::Near(1), &all);
        // 0 is compared with 1 (identical), 1 with 0, 2 with 0 (distance sqrt(DIM)).
        assert_eq!(scores[0], 0.0);
        assert_eq!(scores[1], 0.0);
        assert!((scores[2] - (DIM as f32).sqrt()).abs() < 1e-3);
        let threshold = percentile(&scores, DEFAULT_PERCENTILE).unwrap();
        assert_eq!(threshold, scores[2]);
    }

    #[test]
    fn a_single_normal_gives_no_score() {
        let scores = leave_one_out_scores(&[flat(0.0)], 4, Search::All, &|_| vec![0]);
        assert!(scores.is_empty());
    }
}
