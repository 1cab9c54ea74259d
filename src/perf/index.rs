//! Performance measurements that back the README's figures. Each returns JSON so
//! a script can put it next to the Python reference measured in the same run.

use std::path::Path;
use std::time::Instant;

use serde_json::json;

use crate::jobs::{CancelToken, NoProgress};
use crate::memory::{
    BuildOptions, ExactIndex, HnswIndex, HnswParams, IndexKind, VectorIndex, build_memory,
    collect_images,
};
use crate::vision::ImageEmbedder;

/// Test vectors: `Random` is uniformly random directions (the worst case for any
/// graph index), `Clustered` is embedding-like (centres plus small noise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorData {
    Random,
    Clustered,
}

/// SplitMix64 mapped to approximately normal values (sum of uniforms), so data
/// is identical on every platform and can be written for the Python side.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normalish(&mut self) -> f32 {
        (0..4).map(|_| self.uniform()).sum::<f32>() - 2.0
    }
}

/// `n` data vectors and `q` query vectors of dimension `dim`, unit length.
pub fn make_vectors(
    data: VectorData,
    n: usize,
    q: usize,
    dim: usize,
    seed: u64,
) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng(seed);
    let centres: Vec<f32> = match data {
        VectorData::Random => Vec::new(),
        VectorData::Clustered => (0..1000 * dim).map(|_| rng.normalish()).collect(),
    };
    let one = |rng: &mut Rng, i: usize| {
        let mut v: Vec<f32> = match data {
            VectorData::Random => (0..dim).map(|_| rng.normalish()).collect(),
            VectorData::Clustered => {
                let c = (rng.next_u64() as usize ^ i) % 1000;
                centres[c * dim..(c + 1) * dim]
                    .iter()
                    .map(|x| x + 0.35 * rng.normalish())
                    .collect()
            }
        };
        crate::vision::l2_normalize(&mut v);
        v
    };
    let base: Vec<f32> = (0..n).flat_map(|i| one(&mut rng, i)).collect();
    let queries: Vec<f32> = (0..q).flat_map(|i| one(&mut rng, i + n)).collect();
    (base, queries)
}

/// Writes little-endian f32 rows (the Python side reads them with numpy.fromfile).
pub fn write_f32(path: &Path, values: &[f32]) -> std::io::Result<()> {
    let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes)
}

/// Build time, queries/s and recall@1 of HNSW against exact search.
pub fn bench_hnsw(
    base: &[f32],
    queries: &[f32],
    dim: usize,
    params: HnswParams,
    ef_values: &[usize],
) -> Result<serde_json::Value, crate::memory::index::IndexError> {
    let nq = queries.len() / dim;
    let exact = ExactIndex::new(dim, base.to_vec());
    let t = Instant::now();
    let truth: Vec<usize> = queries
        .chunks_exact(dim)
        .map(|q| exact.search(q, 1)[0].id)
        .collect();
    let exact_qps = nq as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut hnsw = HnswIndex::build(dim, base, params)?;
    let build_s = t.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    for &ef in ef_values {
        hnsw.set_ef_search(ef);
        let t = Instant::now();
        let found: Vec<usize> = queries
            .chunks_exact(dim)
            .map(|q| hnsw.search(q, 1).first().map_or(usize::MAX, |h| h.id))
            .collect();
        let secs = t.elapsed().as_secs_f64();
        let hits = found.iter().zip(&truth).filter(|(a, b)| a == b).count();
        rows.push(json!({
            "ef_search": ef,
            "queries_per_s": nq as f64 / secs,
            "recall_at_1": hits as f64 / nq as f64,
        }));
    }
    Ok(json!({
        "n": base.len() / dim,
        "dim": dim,
        "queries": nq,
        "m": params.m,
        "ef_construction": params.ef_construction,
        "build_s": build_s,
        "exact_queries_per_s": exact_qps,
        "search": rows,
        "threads": rayon::current_num_threads(),
    }))
}

fn bench_image_path(dir: &Path, i: usize) -> std::path::PathBuf {
    dir.join("Bench")
        .join(format!("cat{}", i % 10))
        .join("train")
        .join("good")
        .join(format!("{i:04}.png"))
}

/// Draws `count` part-like `size` x `size` PNG images into `dir`, of which the
/// first `distinct` (all when 0) are drawn and the rest are hard links to them
/// (copies where links fail): a 1024 x 1024 one takes about 2 MB, so Echo's
/// 12,288 would take 27 GB, while every file is still read and decoded.
pub fn write_bench_images(
    dir: &Path,
    count: usize,
    size: u32,
    distinct: usize,
) -> std::io::Result<()> {
    use rayon::prelude::*;
    let distinct = if distinct == 0 {
        count
    } else {
        distinct.min(count)
    };
    (0..distinct).into_par_iter().try_for_each(|i| {
        let path = bench_image_path(dir, i);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)?;
        }
        let mut rng = Rng(i as u64 * 7919 + 1);
        let (cx, cy) = (
            size as f32 * (0.4 + 0.2 * rng.uniform()),
            size as f32 * (0.4 + 0.2 * rng.uniform()),
        );
        let r = size as f32 * (0.2 + 0.05 * (i % 10) as f32);
        let tint = [(i % 10) as u8 * 20, 120, 255 - (i % 10) as u8 * 20];
        let img = image::RgbImage::from_fn(size, size, |x, y| {
            let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
            let n = ((x * 31 + y * 17 + i as u32) % 13) as u8;
            if d < r {
                image::Rgb([
                    tint[0].saturating_add(n),
                    tint[1].saturating_add(n),
                    tint[2].saturating_sub(n),
                ])
            } else {
                image::Rgb([30 + n, 30 + n, 35 + n])
            }
        });
        img.save(&path).map_err(std::io::Error::other)
    })?;
    for i in distinct..count {
        let (from, to) = (
            bench_image_path(dir, i % distinct),
            bench_image_path(dir, i),
        );
        if let Some(folder) = to.parent() {
            std::fs::create_dir_all(folder)?;
        }
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

/// Images per second for a memory build of the first `limit` images under
/// `root` (in path order, as `memory build` finds them): read, hash, decode,
/// preprocess, embed and index, as `memory build` does it.
pub fn bench_memory_build(
    root: &Path,
    limit: usize,
    embedder: &dyn ImageEmbedder,
    thumbs: bool,
) -> Result<serde_json::Value, crate::memory::MemoryError> {
    let mut images = collect_images(root, None)?;
    if images.len() < limit {
        return Err(crate::memory::MemoryError::Empty(format!(
            "only {} images under {}, {limit} asked for",
            images.len(),
            root.display()
        )));
    }
    images.truncate(limit);
    let options = BuildOptions {
        index: IndexKind::Hnsw,
        cache_dir: None,
        thumbs,
        ..BuildOptions::default()
    };
    let t = Instant::now();
    let (memory, _) = build_memory(
        "bench",
        root,
        &images,
        embedder,
        &options,
        &NoProgress,
        &CancelToken::new(),
    )?;
    let secs = t.elapsed().as_secs_f64();
    let hnsw = memory.hnsw_params();
    Ok(json!({
        "images": memory.len(),
        "index_vectors": memory.index_len(),
        "dim": memory.dim,
        "seconds": secs,
        "images_per_s": memory.len() as f64 / secs,
        "embedder": embedder.id(),
        "thumbs": thumbs,
        "hnsw": hnsw.map(|p| json!({
            "m": p.m,
            "ef_construction": p.ef_construction,
            "ef_search": p.ef_search,
        })),
        "threads": rayon::current_num_threads(),
        "cpu": super::cpu::report(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_unit_and_deterministic() {
        let (a, q) = make_vectors(VectorData::Clustered, 50, 5, 16, 3);
        let (b, _) = make_vectors(VectorData::Clustered, 50, 5, 16, 3);
        assert_eq!(a, b);
        assert_eq!((a.len(), q.len()), (800, 80));
        for v in a.chunks_exact(16) {
            let n: f32 = v.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-4);
        }
    }

    #[test]
    fn hnsw_bench_reports_recall() {
        let (base, queries) = make_vectors(VectorData::Clustered, 500, 50, 16, 1);
        let out = bench_hnsw(
            &base,
            &queries,
            16,
            HnswParams {
                m: 16,
                ef_construction: 100,
                ef_search: 16,
            },
            &[16, 64],
        )
        .unwrap();
        let recall = out["search"][1]["recall_at_1"].as_f64().unwrap();
        assert!(recall > 0.9, "{out}");
    }

    #[test]
    fn memory_build_bench_indexes_the_first_n_images() {
        let dir = tempfile::tempdir().unwrap();
        write_bench_images(dir.path(), 6, 48, 4).unwrap();
        let read = |i| std::fs::read(bench_image_path(dir.path(), i)).unwrap();
        assert_ne!(read(0), read(1));
        assert_eq!((read(4), read(5)), (read(0), read(1)));
        let embedder = crate::vision::descriptor::DescriptorEmbedder::new();
        let out = bench_memory_build(dir.path(), 4, &embedder, true).unwrap();
        assert_eq!(
            (out["images"].as_u64(), out["index_vectors"].as_u64()),
            (Some(4), Some(4))
        );
        assert_eq!(out["hnsw"]["m"].as_u64(), Some(HnswParams::ECHO.m as u64));
        assert!(out["images_per_s"].as_f64().unwrap() > 0.0);
        assert_eq!(
            out["cpu"]["gemm"]["f32"].as_str(),
            Some(crate::perf::cpu::report().gemm.f32)
        );
        let err = bench_memory_build(dir.path(), 7, &embedder, true).unwrap_err();
        assert!(err.to_string().contains("only 6 images"), "{err}");
    }
}
