//! The anomaly-detection literature's metrics, with anomalib's definitions:
//! image AUROC (one score per image), pixel AUROC (every pixel of every image of a
//! category pooled), and AUPRO (the mean per-region overlap against the false
//! positive rate of the defect-free pixels, integrated up to FPR 0.3 and divided
//! by 0.3). Every distinct score is a threshold (no binning).

/// anomalib's default FPR limit for AUPRO.
pub const AUPRO_FPR_LIMIT: f64 = 0.3;

/// Area under the ROC curve by the trapezoidal rule over every distinct score
/// (tied scores move along a diagonal, so all-tied scores give 0.5). `None` when
/// either class is missing.
pub fn auroc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 || scores.len() != labels.len() {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let (mut prev_tpr, mut prev_fpr) = (0f64, 0f64);
    let mut area = 0f64;
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if labels[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let tpr = tp as f64 / positives as f64;
        let fpr = fp as f64 / negatives as f64;
        area += (fpr - prev_fpr) * (tpr + prev_tpr) / 2.0;
        prev_tpr = tpr;
        prev_fpr = fpr;
    }
    Some(area)
}

/// One image's map and ground truth, both `width` x `height`, row-major.
pub struct PixelSample<'a> {
    pub map: &'a [f32],
    pub mask: &'a [bool],
    pub width: usize,
    pub height: usize,
}

/// Pixel AUROC over all the samples' pixels pooled.
pub fn pixel_auroc(samples: &[PixelSample<'_>]) -> Option<f64> {
    let scores: Vec<f32> = samples.iter().flat_map(|s| s.map.iter().copied()).collect();
    let labels: Vec<bool> = samples
        .iter()
        .flat_map(|s| s.mask.iter().copied())
        .collect();
    auroc(&scores, &labels)
}

/// AUPRO up to `fpr_limit`, normalised by it. Regions are the 8-connected
/// components of each image's mask. `None` without any defect region or without
/// any defect-free pixel.
pub fn aupro(samples: &[PixelSample<'_>], fpr_limit: f64) -> Option<f64> {
    // Each pixel: its score and, for defect pixels, 1 / its region's area.
    let mut pixels: Vec<(f32, f64)> = Vec::new();
    let mut regions = 0usize;
    let mut background = 0usize;
    for s in samples {
        let (labels, n) = super::regions::label_components(s.mask, s.width, s.height);
        let mut areas = vec![0usize; n as usize + 1];
        for &l in &labels {
            areas[l as usize] += 1;
        }
        regions += n as usize;
        background += areas[0];
        pixels.extend(s.map.iter().zip(&labels).map(|(&v, &l)| {
            let share = if l == 0 {
                0.0
            } else {
                1.0 / areas[l as usize] as f64
            };
            (v, share)
        }));
    }
    if regions == 0 || background == 0 {
        return None;
    }
    pixels.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut overlap_sum, mut false_pos) = (0f64, 0usize);
    let (mut prev_fpr, mut prev_pro) = (0f64, 0f64);
    let mut area = 0f64;
    let mut i = 0;
    while i < pixels.len() {
        let s = pixels[i].0;
        while i < pixels.len() && pixels[i].0 == s {
            if pixels[i].1 == 0.0 {
                false_pos += 1;
            } else {
                overlap_sum += pixels[i].1;
            }
            i += 1;
        }
        let fpr = false_pos as f64 / background as f64;
        let pro = overlap_sum / regions as f64;
        if fpr >= fpr_limit {
            // The segment crossing the limit counts up to the limit, interpolated.
            let t = if fpr > prev_fpr {
                (fpr_limit - prev_fpr) / (fpr - prev_fpr)
            } else {
                0.0
            };
            let pro_at_limit = prev_pro + (pro - prev_pro) * t;
            area += (fpr_limit - prev_fpr) * (prev_pro + pro_at_limit) / 2.0;
            return Some(area / fpr_limit);
        }
        area += (fpr - prev_fpr) * (pro + prev_pro) / 2.0;
        prev_fpr = fpr;
        prev_pro = pro;
    }
    Some(area / fpr_limit)
}

/// The mean of the values present.
pub fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .fold((0f64, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// A ground-truth mask as defect pixels (brighter than mid grey), stretched to a
/// `w` x `h` image by nearest neighbour when its size differs.
pub fn read_mask(
    path: &std::path::Path,
    w: usize,
    h: usize,
) -> Result<Vec<bool>, crate::vision::DecodeError> {
    let mask = crate::vision::decode_rgb8(path, crate::vision::DecodeLimits::default())?;
    let (mw, mh) = (mask.width() as usize, mask.height() as usize);
    let mut out = vec![false; w * h];
    for y in 0..h {
        let my = (y * mh / h.max(1)).min(mh.saturating_sub(1));
        for x in 0..w {
            let mx = (x * mw / w.max(1)).min(mw.saturating_sub(1));
            out[y * w + x] = mask
                .get_pixel(mx as u32, my as u32)
                .0
                .iter()
                .any(|&c| c > 127);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_of_separable_inverted_and_tied_scores() {
        let labels = [false, false, true, true];
        assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
        assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &labels), Some(0.0));
        assert_eq!(auroc(&[0.5; 4], &labels), Some(0.5));
        // One negative above one positive: 3 of 4 pairs ordered right.
        assert_eq!(auroc(&[0.1, 0.85, 0.8, 0.9], &labels), Some(0.75));
        // A tie between a positive and a negative counts half.
        assert_eq!(auroc(&[0.1, 0.8, 0.8, 0.9], &labels), Some(0.875));
        assert_eq!(auroc(&[0.1, 0.2], &[false, false]), None);
    }

    #[test]
    fn pixel_auroc_pools_images() {
        let (m1, k1) = ([0.1, 0.9], [false, true]);
        let (m2, k2) = ([0.2, 0.3], [false, false]);
        let samples = [
            PixelSample {
                map: &m1,
                mask: &k1,
                width: 2,
                height: 1,
            },
            PixelSample {
                map: &m2,
                mask: &k2,
                width: 2,
                height: 1,
            },
        ];
        assert_eq!(pixel_auroc(&samples), Some(1.0));
    }

    #[test]
    fn aupro_of_a_perfect_map_is_one_and_of_a_hand_computed_case() {
        // 1 x 4 image: one region of two pixels, two background pixels.
        let mask = [true, true, false, false];
        let perfect = [0.9, 0.8, 0.1, 0.2];
        let s = [PixelSample {
            map: &perfect,
            mask: &mask,
            width: 4,
            height: 1,
        }];
        assert!((aupro(&s, AUPRO_FPR_LIMIT).unwrap() - 1.0).abs() < 1e-12);

        // Thresholds 0.9, 0.8, 0.7, 0.6: (fpr, pro) = (0, .5), (.5, .5), (.5, 1), (1, 1).
        // Up to FPR 0.3 the first segment rises from (0, 0) to (0, .5) (no area),
        // then PRO stays .5 to FPR .5: area up to .3 = .3 * .5, normalised = .5.
        let map = [0.9, 0.7, 0.8, 0.6];
        let s = [PixelSample {
            map: &map,
            mask: &mask,
            width: 4,
            height: 1,
        }];
        assert!((aupro(&s, AUPRO_FPR_LIMIT).unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn aupro_averages_regions_not_pixels() {
        // Two regions: a large one found first, a single pixel found late.
        // 1 x 8: [R1 R1 R1 R1 B B B R2] with R1 scored highest, then one
        // background pixel, then R2, then the rest of the background.
        let mask = [true, true, true, true, false, false, false, true];
        let map = [0.9, 0.9, 0.9, 0.9, 0.8, 0.1, 0.1, 0.5];
        let s = [PixelSample {
            map: &map,
            mask: &mask,
            width: 8,
            height: 1,
        }];
        // Thresholds: .9 -> (0, .5); .8 -> (1/3, .5); .5 -> (1/3, 1); .1 -> (1, 1).
        // Up to .3: PRO .5 from 0 to .3 (the step to 1/3 is interpolated on the
        // flat .5 segment) = .15 -> normalised .5.
        assert!((aupro(&s, AUPRO_FPR_LIMIT).unwrap() - 0.5).abs() < 1e-12);
        // Without a region there is nothing to overlap.
        let none = [false; 8];
        let s = [PixelSample {
            map: &map,
            mask: &none,
            width: 8,
            height: 1,
        }];
        assert_eq!(aupro(&s, AUPRO_FPR_LIMIT), None);
    }

    #[test]
    fn mean_skips_nothing_and_handles_empty() {
        assert_eq!(mean([1.0, 0.5]), Some(0.75));
        assert_eq!(mean(std::iter::empty()), None);
    }
}
