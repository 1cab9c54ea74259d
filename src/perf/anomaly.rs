//! Speed of the anomaly map: one query against `k` normal references whose patch
//! features are already computed (the steady state of a run, where a category's
//! references are reused), on generated images of a given size.

use std::time::Instant;

use serde::Serialize;

use crate::anomaly::map::{self, Search};
use crate::anomaly::{features, regions};

#[derive(Debug, Clone, Serialize)]
pub struct AnomalyBench {
    pub size: u32,
    pub k: usize,
    pub runs: usize,
    /// Query features, nearest-neighbour map, smoothing, score and regions.
    pub ms_per_image: f64,
    /// The same plus stretching the map to the image's size (for a PNG or pixel
    /// metrics).
    pub ms_per_image_full_map: f64,
    pub release_build: bool,
}

/// A textured part on a dark background, shifted a little per `seed`.
fn generated(size: u32, seed: u32) -> image::RgbImage {
    let shift = (seed % 5) as f32 * size as f32 / 256.0;
    image::RgbImage::from_fn(size, size, |x, y| {
        let (fx, fy) = (x as f32 - shift, y as f32);
        let c = size as f32 / 2.0;
        let inside = (fx - c).powi(2) + (fy - c).powi(2) < (size as f32 * 0.35).powi(2);
        let n = ((x * 31 + y * 17 + seed) % 13) as u8;
        if inside {
            let v = (120.0 + 40.0 * (fx / 12.0).sin()) as u8;
            image::Rgb([v.saturating_add(n), 110, 90])
        } else {
            image::Rgb([30 + n, 30 + n, 35 + n])
        }
    })
}

pub fn bench_anomaly(size: u32, k: usize, runs: usize) -> AnomalyBench {
    let refs: Vec<features::PatchGrid> = (0..k.max(1) as u32)
        .map(|i| features::extract(&generated(size, i + 1)))
        .collect();
    let refs: Vec<&features::PatchGrid> = refs.iter().collect();
    let query = generated(size, 0);
    let runs = runs.max(1);
    let mut core = 0f64;
    let mut full = 0f64;
    for _ in 0..runs {
        let start = Instant::now();
        let grid = features::extract(&query);
        let m = map::score(&grid, &refs, Search::Near(map::DEFAULT_RADIUS));
        let r = regions::regions(&m.values, m.side, m.score * 0.5, size, size);
        std::hint::black_box(&r);
        let t_core = start.elapsed().as_secs_f64();
        let stretched = map::to_image_size(&m, size as usize, size as usize);
        std::hint::black_box(&stretched);
        core += t_core;
        full += start.elapsed().as_secs_f64();
    }
    AnomalyBench {
        size,
        k,
        runs,
        ms_per_image: core * 1000.0 / runs as f64,
        ms_per_image_full_map: full * 1000.0 / runs as f64,
        release_build: !cfg!(debug_assertions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_positive_times_for_the_asked_shape() {
        let b = bench_anomaly(64, 2, 1);
        assert_eq!((b.size, b.k, b.runs), (64, 2, 1));
        assert!(b.ms_per_image > 0.0);
        assert!(b.ms_per_image_full_map >= b.ms_per_image);
    }
}
