//! Few-shot PatchCore-style scoring: every query patch's distance to its nearest
//! reference patch, smoothed and stretched to the image.

use rayon::prelude::*;

use super::features::{PatchGrid, WORK};

/// How many retrieved normal references a query is compared with by default.
pub const DEFAULT_K: usize = 4;
/// PatchCore's Gaussian, in working pixels (its 224-pixel input is close to ours).
pub const SIGMA: f32 = 4.0;
/// How far (in grid steps) a reference may be shifted to line it up with the query:
/// three steps (24 working pixels) absorb the shifts of parts on a line. Each
/// reference is first shifted as a whole to where it matches the query best, and
/// then each query patch is compared with the one reference patch at its place.
/// Registering first and comparing in place is stricter than letting every patch
/// search its own neighbourhood (which let a missing pin match the gap beside
/// it): on the sample it raised image AUROC from 0.935 to 0.991 (chip 0.861 to
/// 0.972, washer 0.944 to 1.0) for a pixel AUROC of 0.994 instead of 0.996.
pub const DEFAULT_RADIUS: usize = 3;
/// [`DEFAULT_RADIUS`] for a patch grid of `side` per side: the same share of
/// the image (3 of the descriptor's 32 steps), at least one step.
pub fn radius_for_grid(side: usize) -> usize {
    let grid = super::features::GRID;
    ((DEFAULT_RADIUS * side) as f64 / grid as f64)
        .round()
        .max(1.0) as usize
}

/// The image score is the mean of this many highest working pixels of the
/// smoothed map (1/512 of it, a spot about 11 pixels across): a single noisy
/// maximum ranked normals above defects more often on the sample than this.
pub const TOP_PIXELS: usize = 128;

/// Where a query patch looks for its nearest neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    /// Each reference shifted as a whole by at most this many grid steps to where
    /// it lines up best with the query, then the patch at the same place.
    Near(usize),
    /// Every patch of every reference (PatchCore's memory bank).
    All,
}

/// An anomaly map at working resolution (`WORK` x `WORK`) and the image score.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyMap {
    pub side: usize,
    pub values: Vec<f32>,
    /// The mean of the map's [`TOP_PIXELS`] highest values.
    pub score: f32,
}

/// Nearest-neighbour distance of every query patch, on the patch grid.
pub fn patch_distances(query: &PatchGrid, references: &[&PatchGrid], search: Search) -> Vec<f32> {
    let side = query.side;
    let mut out = vec![0f32; side * side];
    if references.is_empty() {
        return out;
    }
    let shifts: Vec<(isize, isize)> = references
        .par_iter()
        .map(|r| match search {
            Search::Near(radius) => best_shift(query, r, radius),
            Search::All => (0, 0),
        })
        .collect();
    out.par_chunks_mut(side).enumerate().for_each(|(row, out)| {
        for (col, out) in out.iter_mut().enumerate() {
            let q = query.patch(row, col);
            let mut best = f32::INFINITY;
            for (r, &(dy, dx)) in references.iter().zip(&shifts) {
                let (r0, r1, c0, c1) = match search {
                    Search::Near(_) => {
                        // Off the reference's edge after the shift: its nearest
                        // edge patch stands in.
                        let at = |i: usize, d: isize| {
                            (i as isize + d).clamp(0, r.side as isize - 1) as usize
                        };
                        let (rr, rc) = (at(row, dy), at(col, dx));
                        (rr, rr + 1, rc, rc + 1)
                    }
                    Search::All => (0, r.side, 0, r.side),
                };
                for rr in r0..r1 {
                    for rc in c0..c1 {
                        best = best.min(squared(q, r.patch(rr, rc)));
                    }
                }
            }
            *out = if best.is_finite() { best.sqrt() } else { 0.0 };
        }
    });
    out
}

/// Distance of every query patch to its nearest patch in a flat memory bank
/// (`dim` values per patch), e.g. a coreset.
pub fn bank_distances(query: &PatchGrid, bank: &[f32]) -> Vec<f32> {
    let dim = query.dim;
    (0..query.len())
        .into_par_iter()
        .map(|i| {
            let q = &query.values[i * dim..(i + 1) * dim];
            let best = bank
                .chunks_exact(dim)
                .map(|b| squared(q, b))
                .fold(f32::INFINITY, f32::min);
            if best.is_finite() { best.sqrt() } else { 0.0 }
        })
        .collect()
}

/// The whole-grid shift (at most `radius` steps each way) that best lines
/// `reference` up with `query`: the smallest mean squared patch distance over
/// their overlap. Ties keep the smaller shift (no shift first).
fn best_shift(query: &PatchGrid, reference: &PatchGrid, radius: usize) -> (isize, isize) {
    let side = query.side.min(reference.side) as isize;
    let r = radius.min(query.side.saturating_sub(1)) as isize;
    let mut order: Vec<(isize, isize)> = (-r..=r)
        .flat_map(|dy| (-r..=r).map(move |dx| (dy, dx)))
        .collect();
    order.sort_by_key(|&(dy, dx)| dy.abs() + dx.abs());
    let mut best = (f32::INFINITY, (0, 0));
    for (dy, dx) in order {
        let (mut sum, mut n) = (0f32, 0usize);
        for row in (-dy).max(0)..(side - dy).min(side) {
            for col in (-dx).max(0)..(side - dx).min(side) {
                sum += squared(
                    query.patch(row as usize, col as usize),
                    reference.patch((row + dy) as usize, (col + dx) as usize),
                );
                n += 1;
            }
        }
        let mean = sum / n.max(1) as f32;
        if mean < best.0 {
            best = (mean, (dy, dx));
        }
    }
    best.1
}

/// Squared Euclidean distance. Eight running sums instead of one let the
/// compiler keep them in vector registers (a single f32 sum must add in order);
/// the result differs from the one-sum order only by rounding.
fn squared(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut sums = [0f32; LANES];
    let (a8, b8) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..LANES {
            let d = x[i] - y[i];
            sums[i] += d * d;
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// The full scoring: patch distances, bilinear upsampling to the working size,
/// the Gaussian; the score is the mean of the smoothed map's top pixels.
pub fn score(query: &PatchGrid, references: &[&PatchGrid], search: Search) -> AnomalyMap {
    from_patch_distances(&patch_distances(query, references, search), query.side)
}

/// Upsamples and smooths a grid of patch distances.
pub fn from_patch_distances(grid: &[f32], side: usize) -> AnomalyMap {
    let values = gaussian_blur(&bilinear(grid, side, side, WORK, WORK), WORK, WORK, SIGMA);
    let score = top_mean(&values, TOP_PIXELS);
    AnomalyMap {
        side: WORK,
        values,
        score,
    }
}

/// The mean of the `n` largest values (all of them when fewer).
pub fn top_mean(values: &[f32], n: usize) -> f32 {
    if values.is_empty() || n == 0 {
        return 0.0;
    }
    let n = n.min(values.len());
    let mut v = values.to_vec();
    v.select_nth_unstable_by(n - 1, |a, b| b.total_cmp(a));
    v[..n].iter().sum::<f32>() / n as f32
}

/// Bilinear resampling with pixel centres aligned (`align_corners=False`, as
/// PatchCore's `F.interpolate` does).
pub fn bilinear(src: &[f32], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f32> {
    let mut out = vec![0f32; dw * dh];
    if sw == 0 || sh == 0 {
        return out;
    }
    let coords = |d: usize, s: usize| -> Vec<(usize, usize, f32)> {
        (0..d)
            .map(|i| {
                let x = ((i as f32 + 0.5) * s as f32 / d as f32 - 0.5).max(0.0);
                let x0 = (x.floor() as usize).min(s - 1);
                let x1 = (x0 + 1).min(s - 1);
                (x0, x1, x - x0 as f32)
            })
            .collect()
    };
    let xs = coords(dw, sw);
    let ys = coords(dh, sh);
    for (y, &(y0, y1, fy)) in ys.iter().enumerate() {
        for (x, &(x0, x1, fx)) in xs.iter().enumerate() {
            let top = src[y0 * sw + x0] * (1.0 - fx) + src[y0 * sw + x1] * fx;
            let bottom = src[y1 * sw + x0] * (1.0 - fx) + src[y1 * sw + x1] * fx;
            out[y * dw + x] = top * (1.0 - fy) + bottom * fy;
        }
    }
    out
}

/// Separable Gaussian, truncated at four sigma, edges reflected (as
/// `scipy.ndimage.gaussian_filter`'s default mode).
pub fn gaussian_blur(src: &[f32], w: usize, h: usize, sigma: f32) -> Vec<f32> {
    let radius = (4.0 * sigma + 0.5) as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    if w == 0 || h == 0 {
        return vec![0f32; w * h];
    }
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        let mut i = i;
        // Repeated reflection keeps kernels wider than the image in range.
        loop {
            if i < 0 {
                i = -i - 1;
            } else if i >= n {
                i = 2 * n - i - 1;
            } else {
                return i as usize;
            }
        }
    };
    // Both passes add the taps in kernel order for every pixel, so the sums are
    // the ones a per-pixel loop gives; running the taps outermost over a whole
    // row lets the compiler vectorise along it, and rows go to the threads.
    let taps = kernel.len();
    let mut tmp = vec![0f32; w * h];
    tmp.par_chunks_mut(w)
        .zip(src.par_chunks(w))
        .for_each(|(out, row)| {
            let padded: Vec<f32> = (0..w + taps - 1)
                .map(|i| row[reflect(i as isize - radius, w)])
                .collect();
            for (k, &weight) in kernel.iter().enumerate() {
                for (o, &v) in out.iter_mut().zip(&padded[k..k + w]) {
                    *o += weight * v;
                }
            }
        });
    let mut out = vec![0f32; w * h];
    out.par_chunks_mut(w).enumerate().for_each(|(y, out)| {
        for (k, &weight) in kernel.iter().enumerate() {
            let at = reflect(y as isize + k as isize - radius, h) * w;
            for (o, &v) in out.iter_mut().zip(&tmp[at..at + w]) {
                *o += weight * v;
            }
        }
    });
    out
}

/// The map stretched to `width` x `height` (bilinear), for an image of that size.
pub fn to_image_size(map: &AnomalyMap, width: usize, height: usize) -> Vec<f32> {
    bilinear(&map.values, map.side, map.side, width, height)
}

/// PatchCore's greedy k-center coreset: `n` patches chosen so that every patch of
/// the bank is as close as possible to a chosen one. Starts from patch 0, so the
/// result is deterministic.
pub fn coreset(bank: &[f32], dim: usize, n: usize) -> Vec<f32> {
    let total = bank.len().checked_div(dim).unwrap_or(0);
    if n >= total {
        return bank.to_vec();
    }
    let row = |i: usize| &bank[i * dim..(i + 1) * dim];
    let mut chosen = Vec::with_capacity(n * dim);
    let mut nearest = vec![f32::INFINITY; total];
    let mut next = 0usize;
    for _ in 0..n {
        chosen.extend_from_slice(row(next));
        let c = row(next);
        let mut far = (0usize, -1f32);
        for (i, d) in nearest.iter_mut().enumerate() {
            *d = d.min(squared(row(i), c));
            if *d > far.1 {
                far = (i, *d);
            }
        }
        next = far.0;
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::features::{DIM, GRID, STRIDE};

    fn grid(f: impl Fn(usize, usize) -> f32) -> PatchGrid {
        let mut values = Vec::new();
        for r in 0..GRID {
            for c in 0..GRID {
                values.extend(std::iter::repeat_n(f(r, c), DIM));
            }
        }
        PatchGrid {
            side: GRID,
            dim: DIM,
            values,
        }
    }

    /// A reference that is the query moved by a few grid steps is lined up first:
    /// the overlap scores zero, and a patch that differs at its place is found
    /// even where the same values sit one step beside it (what a per-patch search
    /// would have matched).
    #[test]
    fn a_shifted_reference_is_lined_up_before_patches_are_compared() {
        // A pattern with no repeats, so only the true shift lines it up.
        let f = |r: usize, c: usize| ((r * 31 + c * 17) % 97) as f32;
        let query = grid(f);
        let reference = grid(|r, c| f(r.saturating_sub(2), (c + 1).min(GRID - 1)));
        assert_eq!(best_shift(&query, &reference, DEFAULT_RADIUS), (2, -1));
        let aligned = patch_distances(&query, &[&reference], Search::Near(DEFAULT_RADIUS));
        for row in 0..GRID - 2 {
            for col in 1..GRID {
                assert_eq!(aligned[row * GRID + col], 0.0, "({row}, {col})");
            }
        }
        // A "missing pin": the query's patch takes its right neighbour's values.
        let mut odd = query.clone();
        let (row, col) = (10, 10);
        let (at, beside) = ((row * GRID + col) * DIM, (row * GRID + col + 1) * DIM);
        let neighbour = odd.values[beside..beside + DIM].to_vec();
        odd.values[at..at + DIM].copy_from_slice(&neighbour);
        let d = patch_distances(&odd, &[&reference], Search::Near(DEFAULT_RADIUS));
        assert!(d[row * GRID + col] > 0.0, "compared at its own place");
    }

    #[test]
    fn identical_images_score_zero_and_a_changed_patch_peaks_there() {
        let normal = grid(|r, c| (r * 7 + c * 3) as f32);
        let same = score(&normal, &[&normal], Search::Near(DEFAULT_RADIUS));
        assert_eq!(same.score, 0.0);
        let mut odd = normal.clone();
        let at = (5 * GRID + 25) * DIM;
        odd.values[at..at + DIM]
            .iter_mut()
            .for_each(|v| *v += 1000.0);
        let map = score(&odd, &[&normal], Search::Near(DEFAULT_RADIUS));
        assert!(map.score > 10.0);
        let peak = map
            .values
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        let (py, px) = (peak / WORK, peak % WORK);
        assert_eq!((py / STRIDE, px / STRIDE), (5, 25));
    }

    #[test]
    fn the_neighbourhood_absorbs_a_small_shift_but_not_a_large_one() {
        let normal = grid(|r, c| (r * GRID + c) as f32);
        let shifted = grid(|r, c| (r * GRID + (c + 1).min(GRID - 1)) as f32);
        let near = patch_distances(&shifted, &[&normal], Search::Near(2));
        assert!(near.iter().all(|d| *d == 0.0));
        let exact = patch_distances(&shifted, &[&normal], Search::Near(0));
        assert!(exact.iter().any(|d| *d > 0.0));
    }

    #[test]
    fn nearest_reference_wins_and_all_equals_bank() {
        let a = grid(|_, _| 0.0);
        let b = grid(|_, _| 10.0);
        let q = grid(|_, _| 9.0);
        let d = patch_distances(&q, &[&a, &b], Search::All);
        let expected = (DIM as f32).sqrt();
        assert!(d.iter().all(|x| (x - expected).abs() < 1e-4));
        let mut bank = a.values.clone();
        bank.extend(&b.values);
        assert_eq!(bank_distances(&q, &bank), d);
    }

    #[test]
    fn gaussian_keeps_mass_and_bilinear_keeps_constants() {
        let mut img = vec![0f32; 31 * 31];
        img[15 * 31 + 15] = 1.0;
        let out = gaussian_blur(&img, 31, 31, 4.0);
        let sum: f32 = out.iter().sum();
        assert!((sum - 1.0).abs() < 1e-3, "{sum}");
        assert!(out[15 * 31 + 15] > out[15 * 31 + 16]);
        let up = bilinear(&[3.0; 4], 2, 2, 7, 5);
        assert!(up.iter().all(|v| (*v - 3.0).abs() < 1e-6));
        let ramp = bilinear(&[0.0, 1.0], 2, 1, 4, 1);
        assert_eq!(ramp, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn gaussian_gives_the_per_pixel_sums_exactly() {
        // Not square and narrower than the kernel (33 taps), so reflections repeat.
        let (w, h) = (23, 9);
        let img: Vec<f32> = (0..w * h).map(|i| ((i * 37) % 101) as f32 / 7.0).collect();
        let sigma = 4.0f32;
        let radius = (4.0 * sigma + 0.5) as isize;
        let kernel: Vec<f32> = (-radius..=radius)
            .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
            .collect();
        let total: f32 = kernel.iter().sum();
        let reflect = |mut i: isize, n: isize| loop {
            if i < 0 {
                i = -i - 1;
            } else if i >= n {
                i = 2 * n - i - 1;
            } else {
                break i as usize;
            }
        };
        let pass = |src: &[f32], along_x: bool| -> Vec<f32> {
            let mut out = vec![0f32; w * h];
            for y in 0..h {
                for x in 0..w {
                    let mut acc = 0f32;
                    for (k, weight) in kernel.iter().enumerate() {
                        let d = k as isize - radius;
                        let (sx, sy) = if along_x {
                            (reflect(x as isize + d, w as isize), y)
                        } else {
                            (x, reflect(y as isize + d, h as isize))
                        };
                        acc += weight / total * src[sy * w + sx];
                    }
                    out[y * w + x] = acc;
                }
            }
            out
        };
        let expected = pass(&pass(&img, true), false);
        assert_eq!(gaussian_blur(&img, w, h, sigma), expected);
        assert!(gaussian_blur(&[], 0, 0, sigma).is_empty());
    }

    #[test]
    fn squared_distance_matches_the_plain_sum() {
        for len in [0usize, 1, 7, 8, 9, 768, 1537] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                .sum();
            let got = squared(&a, &b) as f64;
            assert!(
                (got - plain).abs() <= 1e-5 * plain.max(1.0),
                "{len}: {got} vs {plain}"
            );
        }
    }

    #[test]
    fn score_is_the_mean_of_the_top_pixels() {
        let mut v = vec![0f32; 1000];
        v[3] = 10.0;
        v[500] = 6.0;
        assert_eq!(top_mean(&v, 2), 8.0);
        assert_eq!(top_mean(&v, 1), 10.0);
        assert_eq!(top_mean(&[1.0, 3.0], 9), 2.0);
        assert_eq!(top_mean(&[], 4), 0.0);
    }

    #[test]
    fn coreset_picks_far_apart_points() {
        let bank = vec![0.0, 0.1, 10.0, 10.1, 5.0];
        assert_eq!(coreset(&bank, 1, 3), vec![0.0, 10.1, 5.0]);
        assert_eq!(coreset(&bank, 1, 9), bank);
    }
}
