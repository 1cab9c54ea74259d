//! Speed of the anomaly map: one query against `k` normal references whose patch
//! features are already computed (the steady state of a run, where a category's
//! references are reused), on generated images of a given size; with the
//! weight-free descriptor (ms per image) or CLIP or DINOv2 patch tokens
//! (images/s).

use std::time::Instant;

use serde::Serialize;

use crate::anomaly::clip_patches::ClipPatches;
use crate::anomaly::dinov2_patches::Dinov2Patches;
use crate::anomaly::map::{self, Search};
use crate::anomaly::{features, regions};
use crate::vision::clip::{ClipError, ClipSource};
use crate::vision::dinov2::{Dinov2Error, Dinov2Source};

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

/// Throughput of the map with ViT patch tokens (`--backbone clip:PATH` or
/// `dinov2:PATH`).
#[derive(Debug, Clone, Serialize)]
pub struct AnomalyTokensBench {
    pub backbone: String,
    pub layers: Vec<usize>,
    /// Patches per side and values per patch.
    pub grid: usize,
    pub dim: usize,
    pub size: u32,
    pub k: usize,
    pub runs: usize,
    /// Query patch tokens, nearest-neighbour map, smoothing, score and regions.
    pub images_per_s: f64,
    pub ms_per_image: f64,
    /// Of which the model's forward (preprocessing and tokens).
    pub ms_features: f64,
    pub release_build: bool,
    /// SIMD the CPU offers, as detected at run time.
    pub cpu_features: Vec<&'static str>,
}

/// What the timing loop needs of a token backbone.
struct TokenBackbone<'a, E> {
    name: String,
    layers: Vec<usize>,
    side: usize,
    dim: usize,
    extract: &'a dyn Fn(&image::RgbImage) -> Result<features::PatchGrid, E>,
}

fn bench_tokens<E>(
    b: TokenBackbone<'_, E>,
    size: u32,
    k: usize,
    runs: usize,
) -> Result<AnomalyTokensBench, E> {
    let refs = (0..k.max(1) as u32)
        .map(|i| (b.extract)(&generated(size, i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&features::PatchGrid> = refs.iter().collect();
    let query = generated(size, 0);
    let search = Search::Near(map::radius_for_grid(b.side));
    // One untimed pass: the first forward pays for allocations and page faults.
    std::hint::black_box((b.extract)(&query)?);
    let runs = runs.max(1);
    let (mut total, mut feats) = (0f64, 0f64);
    for _ in 0..runs {
        let start = Instant::now();
        let grid = (b.extract)(&query)?;
        feats += start.elapsed().as_secs_f64();
        let m = map::score(&grid, &refs, search);
        let r = regions::regions(&m.values, m.side, m.score * 0.5, size, size);
        std::hint::black_box(&r);
        total += start.elapsed().as_secs_f64();
    }
    Ok(AnomalyTokensBench {
        backbone: b.name,
        layers: b.layers,
        grid: b.side,
        dim: b.dim,
        size,
        k,
        runs,
        images_per_s: runs as f64 / total.max(1e-12),
        ms_per_image: total * 1000.0 / runs as f64,
        ms_features: feats * 1000.0 / runs as f64,
        release_build: !cfg!(debug_assertions),
        cpu_features: cpu_features(),
    })
}

pub fn bench_anomaly_clip(
    source: &ClipSource,
    layers: Option<&[usize]>,
    size: u32,
    k: usize,
    runs: usize,
) -> Result<AnomalyTokensBench, ClipError> {
    let patches = ClipPatches::load(source, layers)?;
    let backbone = TokenBackbone {
        name: crate::vision::spec::EmbedderSpec::Clip(source.clone()).to_string(),
        layers: patches.layers().to_vec(),
        side: patches.side(),
        dim: patches.dim(),
        extract: &|image| patches.extract(image),
    };
    bench_tokens(backbone, size, k, runs)
}

pub fn bench_anomaly_dinov2(
    source: &Dinov2Source,
    layers: Option<&[usize]>,
    size: u32,
    k: usize,
    runs: usize,
) -> Result<AnomalyTokensBench, Dinov2Error> {
    let patches = Dinov2Patches::load(source, layers)?;
    let backbone = TokenBackbone {
        name: format!("dinov2:{source}"),
        layers: patches.layers().to_vec(),
        side: patches.side(),
        dim: patches.dim(),
        extract: &|image| patches.extract(image),
    };
    bench_tokens(backbone, size, k, runs)
}

fn cpu_features() -> Vec<&'static str> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            out.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("fma") {
            out.push("fma");
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            out.push("avx512f");
        }
    }
    #[cfg(target_arch = "aarch64")]
    out.push("neon");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_bench_reports_the_model_and_a_rate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tiny_clip/full_p8_s40_f16");
        let b = bench_anomaly_clip(&ClipSource::Folder(dir), Some(&[2]), 96, 2, 2).unwrap();
        assert_eq!((b.layers.as_slice(), b.grid, b.dim), (&[2usize][..], 5, 24));
        assert_eq!((b.size, b.k, b.runs), (96, 2, 2));
        assert!(b.images_per_s > 0.0 && b.ms_features <= b.ms_per_image);
        assert!(b.backbone.starts_with("clip:"));
        let missing = ClipSource::Folder("no-such-clip-folder".into());
        assert!(bench_anomaly_clip(&missing, None, 64, 1, 1).is_err());
    }

    #[test]
    fn dinov2_bench_reports_the_model_and_a_rate() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_dinov2");
        let b = bench_anomaly_dinov2(&Dinov2Source::Folder(dir), Some(&[1, 3]), 80, 2, 2).unwrap();
        assert_eq!(
            (b.layers.as_slice(), b.grid, b.dim),
            (&[1usize, 3][..], 3, 64)
        );
        assert!(b.images_per_s > 0.0 && b.ms_features <= b.ms_per_image);
        assert!(b.backbone.starts_with("dinov2:"), "{}", b.backbone);
        let missing = Dinov2Source::Folder("no-such-dinov2-folder".into());
        assert!(bench_anomaly_dinov2(&missing, None, 64, 1, 1).is_err());
    }

    #[test]
    fn reports_positive_times_for_the_asked_shape() {
        let b = bench_anomaly(64, 2, 1);
        assert_eq!((b.size, b.k, b.runs), (64, 2, 1));
        assert!(b.ms_per_image > 0.0);
        assert!(b.ms_per_image_full_map >= b.ms_per_image);
    }
}
