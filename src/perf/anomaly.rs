//! Speed of the anomaly map: one query against `k` normal references whose patch
//! features are already computed (the steady state of a run, where a category's
//! references are reused), on generated images of a given size; with the
//! weight-free descriptor (ms per image) or CLIP or DINOv2 patch tokens
//! (images/s).

use std::path::Path;
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
    pub cpu: super::cpu::CpuReport,
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
        cpu: super::cpu::report(),
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
    /// The same without the regions: what `scripts/bench_anomaly_clip_torch.py`
    /// computes (its PyTorch side stops at the image score).
    pub images_per_s_to_score: f64,
    /// The same from the median pass instead of the mean, as the PyTorch side
    /// reports its `images_per_s`: one slow pass (a neighbour on the machine)
    /// moves a mean but not a median.
    pub images_per_s_to_score_median: f64,
    /// The query's image score, for checking the PyTorch reference on the same
    /// images (`--write-images`).
    pub score: f32,
    /// candle's CPU threads.
    pub threads: usize,
    pub release_build: bool,
    /// The CPU's features and the matmul kernels candle runs on it.
    pub cpu: super::cpu::CpuReport,
}

/// File names of the generated images that [`write_anomaly_images`] writes.
pub const QUERY_FILE: &str = "query.png";
pub fn reference_file(i: usize) -> String {
    format!("reference_{i}.png")
}

#[derive(Debug, thiserror::Error)]
pub enum AnomalyBenchError {
    #[error(transparent)]
    Clip(#[from] ClipError),
    #[error(transparent)]
    Dinov2(#[from] Dinov2Error),
    #[error("cannot write the benchmark image {}", path.display())]
    WriteImage {
        path: std::path::PathBuf,
        #[source]
        source: image::ImageError,
    },
}

/// The query and `k` references the token benchmarks time, as PNG (lossless, so
/// a reference implementation reading them sees the same pixels).
fn write_anomaly_images(
    dir: &Path,
    query: &image::RgbImage,
    refs: &[image::RgbImage],
) -> Result<(), AnomalyBenchError> {
    std::fs::create_dir_all(dir).map_err(|e| AnomalyBenchError::WriteImage {
        path: dir.to_path_buf(),
        source: e.into(),
    })?;
    let named = std::iter::once((QUERY_FILE.to_string(), query)).chain(
        refs.iter()
            .enumerate()
            .map(|(i, r)| (reference_file(i + 1), r)),
    );
    for (name, img) in named {
        let path = dir.join(name);
        img.save(&path)
            .map_err(|source| AnomalyBenchError::WriteImage { path, source })?;
    }
    Ok(())
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
    write_images: Option<&Path>,
) -> Result<AnomalyTokensBench, AnomalyBenchError>
where
    AnomalyBenchError: From<E>,
{
    let ref_images: Vec<image::RgbImage> = (0..k.max(1) as u32)
        .map(|i| generated(size, i + 1))
        .collect();
    let query = generated(size, 0);
    if let Some(dir) = write_images {
        write_anomaly_images(dir, &query, &ref_images)?;
    }
    // References are extracted once and reused, as a run reuses a category's.
    let refs = ref_images
        .iter()
        .map(|img| (b.extract)(img))
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&features::PatchGrid> = refs.iter().collect();
    let search = Search::Near(map::radius_for_grid(b.side));
    // One untimed pass: the first forward pays for allocations and page faults.
    let score = map::score(&(b.extract)(&query)?, &refs, search).score;
    let runs = runs.max(1);
    let (mut total, mut feats, mut to_score) = (0f64, 0f64, 0f64);
    let mut to_score_each = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let grid = (b.extract)(&query)?;
        feats += start.elapsed().as_secs_f64();
        let m = map::score(&grid, &refs, search);
        let scored = start.elapsed().as_secs_f64();
        to_score += scored;
        to_score_each.push(scored);
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
        images_per_s_to_score: runs as f64 / to_score.max(1e-12),
        images_per_s_to_score_median: 1.0 / super::median(&mut to_score_each).max(1e-12),
        score,
        threads: candle_core::utils::get_num_threads(),
        release_build: !cfg!(debug_assertions),
        cpu: super::cpu::report(),
    })
}

pub fn bench_anomaly_clip(
    source: &ClipSource,
    layers: Option<&[usize]>,
    size: u32,
    k: usize,
    runs: usize,
    write_images: Option<&Path>,
) -> Result<AnomalyTokensBench, AnomalyBenchError> {
    let patches = ClipPatches::load(source, layers)?;
    let backbone = TokenBackbone {
        name: crate::vision::spec::EmbedderSpec::Clip(source.clone()).to_string(),
        layers: patches.layers().to_vec(),
        side: patches.side(),
        dim: patches.dim(),
        extract: &|image| patches.extract(image),
    };
    bench_tokens(backbone, size, k, runs, write_images)
}

/// As [`bench_anomaly_clip`] with DINOv2 patch tokens (`--backbone dinov2:PATH`).
pub fn bench_anomaly_dinov2(
    source: &Dinov2Source,
    layers: Option<&[usize]>,
    size: u32,
    k: usize,
    runs: usize,
    write_images: Option<&Path>,
) -> Result<AnomalyTokensBench, AnomalyBenchError> {
    let patches = Dinov2Patches::load(source, layers)?;
    let backbone = TokenBackbone {
        name: format!("dinov2:{source}"),
        layers: patches.layers().to_vec(),
        side: patches.side(),
        dim: patches.dim(),
        extract: &|image| patches.extract(image),
    };
    bench_tokens(backbone, size, k, runs, write_images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_bench_reports_the_model_and_a_rate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tiny_clip/full_p8_s40_f16");
        let images = tempfile::tempdir().unwrap();
        let b = bench_anomaly_clip(
            &ClipSource::Folder(dir.clone()),
            Some(&[2]),
            96,
            2,
            2,
            Some(images.path()),
        )
        .unwrap();
        assert_eq!((b.layers.as_slice(), b.grid, b.dim), (&[2usize][..], 5, 24));
        assert_eq!((b.size, b.k, b.runs), (96, 2, 2));
        assert!(b.images_per_s > 0.0 && b.ms_features <= b.ms_per_image);
        assert!(b.backbone.starts_with("clip:"));
        assert!(b.images_per_s_to_score >= b.images_per_s && b.threads > 0);
        assert_eq!(b.cpu.features, crate::perf::cpu::report().features);
        // The written images are the ones scored: re-scoring them from the files
        // gives the reported score exactly (PNG is lossless).
        let patches = ClipPatches::load(&ClipSource::Folder(dir), Some(&[2])).unwrap();
        let read = |name: &str| image::open(images.path().join(name)).unwrap().to_rgb8();
        let refs: Vec<_> = (1..=2)
            .map(|i| patches.extract(&read(&reference_file(i))).unwrap())
            .collect();
        let query = patches.extract(&read(QUERY_FILE)).unwrap();
        let refs: Vec<&features::PatchGrid> = refs.iter().collect();
        let search = Search::Near(map::radius_for_grid(patches.side()));
        assert_eq!(map::score(&query, &refs, search).score, b.score);
        assert!(!images.path().join(reference_file(3)).exists());
        let missing = ClipSource::Folder("no-such-clip-folder".into());
        assert!(bench_anomaly_clip(&missing, None, 64, 1, 1, None).is_err());
    }

    #[test]
    fn dinov2_bench_reports_the_model_and_a_rate() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_dinov2");
        let images = tempfile::tempdir().unwrap();
        let b = bench_anomaly_dinov2(
            &Dinov2Source::Folder(dir),
            Some(&[1, 3]),
            80,
            2,
            2,
            Some(images.path()),
        )
        .unwrap();
        assert_eq!(
            (b.layers.as_slice(), b.grid, b.dim),
            (&[1usize, 3][..], 3, 64)
        );
        assert!(b.images_per_s > 0.0 && b.ms_features <= b.ms_per_image);
        assert!(b.backbone.starts_with("dinov2:"), "{}", b.backbone);
        assert!(b.score.is_finite() && b.score >= 0.0);
        assert!(images.path().join(QUERY_FILE).is_file());
        assert!(images.path().join(reference_file(2)).is_file());
        let missing = Dinov2Source::Folder("no-such-dinov2-folder".into());
        assert!(matches!(
            bench_anomaly_dinov2(&missing, None, 64, 1, 1, None),
            Err(AnomalyBenchError::Dinov2(_))
        ));
    }

    #[test]
    fn reports_positive_times_for_the_asked_shape() {
        let b = bench_anomaly(64, 2, 1);
        assert_eq!((b.size, b.k, b.runs), (64, 2, 1));
        assert!(b.ms_per_image > 0.0);
        assert!(b.ms_per_image_full_map >= b.ms_per_image);
    }
}
