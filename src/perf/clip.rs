//! CLIP throughput benchmark (`echo-workbench bench clip --model DIR`).
//!
//! Times the forward pass (pixel values to normalised embeddings, no image
//! decoding or preprocessing) the same way `scripts/bench_clip_torch.py` times
//! PyTorch, so the two can be run on the same folder and compared. When the
//! folder holds the `bench_reference.json` that script writes, the embeddings
//! of those images are also checked against PyTorch's.

use std::path::Path;
use std::time::Instant;

use base64::Engine as _;
use candle_core::Device;
use serde_json::{Value, json};

use crate::vision::clip::{ClipEmbedder, ClipError, ClipOptions, ClipSource, default_device};
use crate::vision::embed::ImageEmbedder;

/// Benchmarks the default options (f32) on [`default_device`]: for each batch
/// size, one warm-up pass, then the median of `runs` passes. `forward` caps
/// the images per forward pass (a batch of 8 with `forward` 2 is four passes
/// of 2); `None` runs each batch in one pass. `parallel_images` is
/// [`ClipOptions::parallel_images`].
pub fn bench_clip(
    model_dir: &Path,
    batch_sizes: &[usize],
    runs: usize,
    forward: Option<usize>,
    parallel_images: bool,
) -> Result<Value, ClipError> {
    let options = ClipOptions {
        parallel_images,
        ..ClipOptions::default()
    };
    bench_clip_with(
        model_dir,
        batch_sizes,
        runs,
        forward,
        options,
        &default_device(),
    )
}

/// [`bench_clip`] with explicit options (`max_batch` is `forward`, or the
/// largest batch size so each timed pass is one forward) and device.
pub fn bench_clip_with(
    model_dir: &Path,
    batch_sizes: &[usize],
    runs: usize,
    forward: Option<usize>,
    options: ClipOptions,
    device: &Device,
) -> Result<Value, ClipError> {
    let runs = runs.max(1);
    let largest = batch_sizes.iter().copied().max().unwrap_or(1);
    let options = ClipOptions {
        max_batch: forward.unwrap_or(largest.max(options.max_batch)).max(1),
        ..options
    };
    let start = Instant::now();
    let embedder = ClipEmbedder::load_with(&ClipSource::Folder(model_dir.into()), device, options)?;
    let load_s = start.elapsed().as_secs_f64();

    let reference = compare_with_reference(&embedder, model_dir)?;
    let per_image = 3 * embedder.config().vision.image_size.pow(2);
    let mut results = Vec::new();
    for &batch in batch_sizes.iter().filter(|&&b| b > 0) {
        let pixels = pseudo_normal(batch * per_image, batch as u64);
        let mut times = Vec::with_capacity(runs);
        for i in 0..=runs {
            let start = Instant::now();
            embedder.embed_pixel_values(&pixels)?;
            if i > 0 {
                times.push(start.elapsed().as_secs_f64());
            }
        }
        let median = super::median(&mut times);
        results.push(json!({
            "batch": batch,
            "images_per_forward": batch.min(options.max_batch),
            "runs": runs,
            "median_s": median,
            "min_s": times[0],
            "images_per_s": batch as f64 / median,
        }));
    }
    let device_name = match device {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    };
    Ok(json!({
        "framework": "candle",
        "model": embedder.id(),
        "model_dir": model_dir.display().to_string(),
        "device": device_name,
        "dtype": options.dtype.as_str(),
        "parallel_images": options.parallel_images,
        "threads": candle_core::utils::get_num_threads(),
        "cpu": super::cpu::report(),
        "load_s": load_s,
        "reference": reference,
        "results": results,
    }))
}

/// Compares with `bench_reference.json` (PyTorch's pixel values and
/// embeddings) when present: largest absolute difference, and in how many
/// cases each image's nearest other image is the same (retrieval agreement).
fn compare_with_reference(embedder: &ClipEmbedder, model_dir: &Path) -> Result<Value, ClipError> {
    let path = model_dir.join("bench_reference.json");
    if !path.is_file() {
        return Ok(Value::Null);
    }
    let bad = |message: String| ClipError::Config {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ClipError::Io {
        path: path.clone(),
        source,
    })?;
    let json: Value = serde_json::from_str(&text).map_err(|source| ClipError::Json {
        path: path.clone(),
        source,
    })?;
    let mut pixels = Vec::new();
    let mut expected = Vec::new();
    for entry in json["images"].as_array().into_iter().flatten() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(
                entry["pixel_values_f32le_base64"]
                    .as_str()
                    .unwrap_or_default(),
            )
            .map_err(|e| bad(format!("bad pixel values: {e}")))?;
        pixels.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        let vector: Option<Vec<f32>> = entry["embedding"].as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_f64().map(|x| x as f32))
                .collect()
        });
        expected.push(vector.ok_or_else(|| bad("an entry has no embedding".into()))?);
    }
    let got = embedder.embed_pixel_values(&pixels)?;
    if got.len() != expected.len() {
        return Err(bad(format!(
            "{} embeddings for {} reference images",
            got.len(),
            expected.len()
        )));
    }
    let max_abs_diff = got
        .iter()
        .zip(&expected)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0.0f32, f32::max);
    let same_nearest = (0..got.len())
        .filter(|&i| nearest(&got, i) == nearest(&expected, i))
        .count();
    Ok(json!({
        "images": got.len(),
        "max_abs_diff": max_abs_diff,
        "same_nearest_neighbour": same_nearest,
    }))
}

/// Index of the vector most similar to `vectors[i]`, other than itself.
fn nearest(vectors: &[Vec<f32>], i: usize) -> Option<usize> {
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    (0..vectors.len())
        .filter(|&j| j != i)
        .max_by(|&a, &b| dot(&vectors[i], &vectors[a]).total_cmp(&dot(&vectors[i], &vectors[b])))
}

/// Deterministic stand-in pixel values (roughly standard normal, like
/// normalised images): the benchmark needs no images and no RNG crate.
fn pseudo_normal(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    };
    // Irwin-Hall: the sum of 4 uniforms, centred and scaled to unit variance.
    (0..len)
        .map(|_| ((0..4).map(|_| uniform()).sum::<f32>() - 2.0) * 3.0f32.sqrt())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benchmarks_a_tiny_model() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_clip/vision_p32_s64");
        let report =
            bench_clip_with(&dir, &[1, 2], 2, None, ClipOptions::default(), &Device::Cpu).unwrap();
        assert_eq!(report["framework"], "candle");
        assert_eq!(report["reference"], Value::Null);
        let results = report["results"].as_array().unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(results[1]["batch"], 2);
        assert!(results[1]["images_per_s"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn pseudo_normal_is_deterministic_and_centred() {
        let a = pseudo_normal(10_000, 3);
        assert_eq!(a, pseudo_normal(10_000, 3));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        let var = a.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.1, "{mean} {var}");
    }
}
