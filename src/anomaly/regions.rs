//! The map's most anomalous regions as boxes, named as MMAD's localization
//! options name places ("top left" ... "bottom right").

use serde::Serialize;

/// How many regions are reported at most.
pub const MAX_REGIONS: usize = 5;
/// When nothing crosses the threshold, the region around the peak is the part of
/// the map within this fraction of the peak (so a hint can still say where the
/// most unusual place is).
const PEAK_FRACTION: f32 = 0.8;

/// A box in image pixels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    /// The map's maximum inside the region.
    pub score: f32,
    /// MMAD's nine-grid name of the box centre.
    pub grid: &'static str,
}

/// MMAD's nine places, by row then column.
const GRID_NAMES: [[&str; 3]; 3] = [
    ["top left", "top", "top right"],
    ["left", "center", "right"],
    ["bottom left", "bottom", "bottom right"],
];

/// The nine-grid name of point (`x`, `y`) in a `width` x `height` image: the
/// third of each side it falls in.
pub fn grid_name(x: f64, y: f64, width: f64, height: f64) -> &'static str {
    let third = |v: f64, n: f64| -> usize {
        if n <= 0.0 {
            return 1;
        }
        ((v / n * 3.0).floor().max(0.0) as usize).min(2)
    };
    GRID_NAMES[third(y, height)][third(x, width)]
}

/// Connected components (8-neighbour) of `map` (`side` x `side`) above
/// `threshold`, as boxes scaled to a `width` x `height` image, best first.
pub fn regions(map: &[f32], side: usize, threshold: f32, width: u32, height: u32) -> Vec<Region> {
    let peak = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if side == 0 || !peak.is_finite() {
        return Vec::new();
    }
    let level = if peak > threshold {
        threshold
    } else {
        peak * PEAK_FRACTION
    };
    let mut found = components(map, side, |v| v > level || v >= peak);
    found.sort_by(|a, b| b.4.total_cmp(&a.4));
    found.truncate(MAX_REGIONS);
    let sx = width as f64 / side as f64;
    let sy = height as f64 / side as f64;
    found
        .into_iter()
        .map(|(x0, y0, x1, y1, score)| {
            let left = (x0 as f64 * sx).floor();
            let top = (y0 as f64 * sy).floor();
            let right = ((x1 + 1) as f64 * sx).ceil().min(width as f64);
            let bottom = ((y1 + 1) as f64 * sy).ceil().min(height as f64);
            Region {
                x: left as u32,
                y: top as u32,
                w: (right - left).max(1.0) as u32,
                h: (bottom - top).max(1.0) as u32,
                score,
                grid: grid_name(
                    (left + right) / 2.0,
                    (top + bottom) / 2.0,
                    width as f64,
                    height as f64,
                ),
            }
        })
        .collect()
}

/// Bounding boxes (x0, y0, x1, y1 inclusive) and maxima of the 8-connected
/// components of the pixels `inside` accepts.
fn components(
    map: &[f32],
    side: usize,
    inside: impl Fn(f32) -> bool,
) -> Vec<(usize, usize, usize, usize, f32)> {
    let mut seen = vec![false; side * side];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..side * side {
        if seen[start] || !inside(map[start]) {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1) = (side, side, 0, 0);
        let mut best = f32::NEG_INFINITY;
        while let Some(i) = stack.pop() {
            let (y, x) = (i / side, i % side);
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
            best = best.max(map[i]);
            for ny in y.saturating_sub(1)..=(y + 1).min(side - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(side - 1) {
                    let j = ny * side + nx;
                    if !seen[j] && inside(map[j]) {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        out.push((x0, y0, x1, y1, best));
    }
    out
}

/// Labels of the 8-connected components of `mask` (`w` x `h`): 0 for background,
/// 1.. for each component; also returns how many there are.
pub fn label_components(mask: &[bool], w: usize, h: usize) -> (Vec<u32>, u32) {
    let mut labels = vec![0u32; w * h];
    let mut next = 0u32;
    let mut stack = Vec::new();
    for start in 0..w * h {
        if labels[start] != 0 || !mask[start] {
            continue;
        }
        next += 1;
        labels[start] = next;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (y, x) = (i / w, i % w);
            for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let j = ny * w + nx;
                    if labels[j] == 0 && mask[j] {
                        labels[j] = next;
                        stack.push(j);
                    }
                }
            }
        }
    }
    (labels, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_grid_names_follow_thirds() {
        assert_eq!(grid_name(10.0, 10.0, 300.0, 300.0), "top left");
        assert_eq!(grid_name(150.0, 10.0, 300.0, 300.0), "top");
        assert_eq!(grid_name(299.0, 10.0, 300.0, 300.0), "top right");
        assert_eq!(grid_name(10.0, 150.0, 300.0, 300.0), "left");
        assert_eq!(grid_name(150.0, 150.0, 300.0, 300.0), "center");
        assert_eq!(grid_name(250.0, 150.0, 300.0, 300.0), "right");
        assert_eq!(grid_name(0.0, 299.0, 300.0, 300.0), "bottom left");
        assert_eq!(grid_name(150.0, 250.0, 300.0, 300.0), "bottom");
        assert_eq!(grid_name(300.0, 300.0, 300.0, 300.0), "bottom right");
    }

    #[test]
    fn two_blobs_become_two_boxes_best_first() {
        let side = 10;
        let mut map = vec![0f32; side * side];
        map[side + 1] = 0.6; // (1, 1)
        map[side + 2] = 0.7; // (2, 1), joined with (1, 1)
        map[8 * side + 8] = 0.9; // (8, 8)
        let r = regions(&map, side, 0.5, 100, 200);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].x, r[0].y, r[0].w, r[0].h), (80, 160, 10, 20));
        assert_eq!(r[0].grid, "bottom right");
        assert_eq!(r[0].score, 0.9);
        assert_eq!((r[1].x, r[1].y, r[1].w, r[1].h), (10, 20, 20, 20));
        assert_eq!(r[1].grid, "top left");
    }

    #[test]
    fn below_threshold_still_names_the_peak() {
        let side = 6;
        let mut map = vec![0.1f32; side * side];
        map[3 * side + 5] = 0.3;
        let r = regions(&map, side, 0.5, 60, 60);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].grid, "right");
        assert!(regions(&[], 0, 0.5, 1, 1).is_empty());
    }

    #[test]
    fn labels_count_diagonal_neighbours_as_one() {
        let mask = [true, false, false, false, true, false, false, false, true];
        let (labels, n) = label_components(&mask, 3, 3);
        assert_eq!(n, 1);
        assert_eq!(labels[8], 1);
        let mask = [true, false, true, false, false, false, true, false, true];
        assert_eq!(label_components(&mask, 3, 3).1, 4);
    }
}
