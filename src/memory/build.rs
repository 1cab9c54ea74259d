//! Building a memory: list normal images, embed them (reusing cached vectors),
//! and index the result, with progress and cancellation.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{
    EmbeddingCache, HnswParams, IndexKind, MemoryError, MemoryItem, MemoryParts, ReferenceMemory,
};
use crate::dataset::folder::is_image_file;
use crate::jobs::{CancelToken, Progress, ProgressSink};
use crate::vision::descriptor::{self, RerankThumb};
use crate::vision::{DecodeLimits, ImageEmbedder};

/// One image after reading: its hash and either a cached vector or its pixels.
type Loaded = (
    String,
    Option<Vec<f32>>,
    Option<image::RgbImage>,
    Option<RerankThumb>,
);

/// An image to remember, before it is embedded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceImage {
    /// Relative to the memory root, `/`-separated.
    pub rel_path: String,
    pub dataset: String,
    pub category: String,
}

/// The glob that selects an MMAD root's defect-free training images.
pub const MMAD_TRAIN_GOOD: &str = "*/*/train/good/*";
/// The same for a single MVTec-style dataset folder.
pub const MVTEC_TRAIN_GOOD: &str = "*/train/good/*";

/// Lists the images to remember under `root`.
///
/// With no pattern: `<root>/*/*/train/good/*` (an MMAD root); if that finds
/// nothing, `<root>/*/train/good/*` (one MVTec-style dataset). Dataset and
/// category come from the path: the two components before `train`/`test`, or the
/// root's name and the first component.
pub fn collect_images(root: &Path, pattern: Option<&str>) -> Result<Vec<SourceImage>, MemoryError> {
    let patterns: Vec<&str> = match pattern {
        Some(p) => vec![p],
        None => vec![MMAD_TRAIN_GOOD, MVTEC_TRAIN_GOOD],
    };
    let root_name = root
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "dataset".into());
    for pat in patterns {
        if pat.starts_with('/') || pat.split('/').any(|c| c == "..") {
            return Err(MemoryError::Source {
                path: root.to_path_buf(),
                message: format!("the pattern `{pat}` must stay inside the root"),
            });
        }
        let full = format!("{}/{pat}", glob::Pattern::escape(&root.to_string_lossy()));
        let paths = glob::glob(&full).map_err(|e| MemoryError::Source {
            path: root.to_path_buf(),
            message: format!("bad pattern `{pat}`: {e}"),
        })?;
        let mut out = Vec::new();
        for entry in paths {
            let path = entry.map_err(|e| MemoryError::Source {
                path: root.to_path_buf(),
                message: e.to_string(),
            })?;
            if !path.is_file() || !is_image_file(&path) {
                continue;
            }
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let (dataset, category) = layout_of(&rel, &root_name);
            out.push(SourceImage {
                rel_path: rel.join("/"),
                dataset,
                category,
            });
        }
        if !out.is_empty() {
            out.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
            return Ok(out);
        }
    }
    Err(MemoryError::Empty(format!(
        "no images matched under {} (looked for {})",
        root.display(),
        pattern.map_or_else(
            || format!("`{MMAD_TRAIN_GOOD}` and `{MVTEC_TRAIN_GOOD}`"),
            |p| format!("`{p}`")
        )
    )))
}

fn layout_of(rel: &[String], root_name: &str) -> (String, String) {
    let split = rel
        .iter()
        .position(|c| c == "train" || c == "test" || c == "image");
    match split {
        Some(i) if i >= 2 => (rel[i - 2].clone(), rel[i - 1].clone()),
        Some(1) => (root_name.to_string(), rel[0].clone()),
        _ if rel.len() >= 3 => (rel[0].clone(), rel[1].clone()),
        _ if rel.len() == 2 => (root_name.to_string(), rel[0].clone()),
        _ => (root_name.to_string(), String::new()),
    }
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub index: IndexKind,
    pub hnsw: HnswParams,
    /// Images decoded and embedded per step (also the progress granularity).
    pub chunk: usize,
    /// Folder of embedding caches; `None` embeds everything.
    pub cache_dir: Option<PathBuf>,
    pub limits: DecodeLimits,
    /// Keep SSIM/histogram thumbnails for re-ranking (decodes every image, even
    /// when its vector is cached).
    pub thumbs: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            index: IndexKind::Hnsw,
            hnsw: HnswParams::ECHO,
            chunk: 32,
            cache_dir: None,
            limits: DecodeLimits::default(),
            thumbs: false,
        }
    }
}

/// What a build did besides producing the memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildReport {
    pub embedded: usize,
    pub from_cache: usize,
    /// Images that could not be read or decoded, with the reason; they are left out.
    pub skipped: Vec<(String, String)>,
}

/// Embeds `images` and indexes them.
pub fn build_memory(
    embedder_spec: &str,
    root: &Path,
    images: &[SourceImage],
    embedder: &dyn ImageEmbedder,
    options: &BuildOptions,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<(ReferenceMemory, BuildReport), MemoryError> {
    let id = embedder.id();
    let dim = embedder.dim();
    let mut cache = match &options.cache_dir {
        Some(dir) => Some(EmbeddingCache::open(dir, &id, dim)?),
        None => None,
    };
    let mut report = BuildReport::default();
    let mut items = Vec::with_capacity(images.len());
    let mut vectors = Vec::with_capacity(images.len() * dim);
    let mut thumbs = Vec::new();
    let total = images.len();
    progress.report(Progress {
        stage: "embedding",
        done: 0,
        total,
    });
    for (chunk_no, chunk) in images.chunks(options.chunk.max(1)).enumerate() {
        if cancel.is_cancelled() {
            return Err(MemoryError::Cancelled);
        }
        // Read and hash in parallel; decode only what the cache does not know.
        let loaded: Vec<Result<Loaded, String>> = chunk
            .par_iter()
            .map(|img| {
                let path = root.join(&img.rel_path);
                let bytes =
                    crate::vision::decode::read_image_file(&path, options.limits.max_file_bytes)
                        .map_err(|e| e.to_string())?;
                let sha = crate::util::fsx::sha256_bytes(&bytes);
                let cached = cache
                    .as_ref()
                    .and_then(|c| c.get(&sha))
                    .map(<[f32]>::to_vec);
                if cached.is_some() && !options.thumbs {
                    return Ok((sha, cached, None, None));
                }
                let rgb = crate::vision::decode::decode_rgb8_bytes(&bytes, &path, options.limits)
                    .map_err(|e| e.to_string())?;
                let thumb = options.thumbs.then(|| descriptor::thumb(&rgb));
                Ok(match cached {
                    Some(v) => (sha, Some(v), None, thumb),
                    None => (sha, None, Some(rgb), thumb),
                })
            })
            .collect();
        let to_embed: Vec<image::RgbImage> = loaded
            .iter()
            .filter_map(|r| r.as_ref().ok().and_then(|(_, _, img, _)| img.clone()))
            .collect();
        let mut fresh = embedder.embed_batch(&to_embed)?.into_iter();
        for (img, result) in chunk.iter().zip(loaded) {
            match result {
                Err(reason) => report.skipped.push((img.rel_path.clone(), reason)),
                Ok((sha, cached, decoded, thumb)) => {
                    let v = match (cached, decoded) {
                        (Some(v), _) => {
                            report.from_cache += 1;
                            v
                        }
                        (None, Some(_)) => {
                            let v = fresh.next().ok_or_else(|| {
                                MemoryError::Embed(crate::vision::EmbedError::Compute {
                                    what: img.rel_path.clone(),
                                    message: "the embedder returned too few vectors".into(),
                                })
                            })?;
                            if let Some(c) = cache.as_mut() {
                                c.put(&sha, &v)?;
                            }
                            report.embedded += 1;
                            v
                        }
                        (None, None) => continue,
                    };
                    if v.len() != dim {
                        return Err(MemoryError::Embed(crate::vision::EmbedError::Compute {
                            what: img.rel_path.clone(),
                            message: format!("vector of length {} instead of {dim}", v.len()),
                        }));
                    }
                    vectors.extend_from_slice(&v);
                    if let Some(t) = thumb {
                        thumbs.push(t);
                    }
                    items.push(MemoryItem {
                        path: img.rel_path.clone(),
                        dataset: img.dataset.clone(),
                        category: img.category.clone(),
                        sha256: sha,
                    });
                }
            }
        }
        if let Some(c) = cache.as_mut() {
            c.flush()?;
        }
        progress.report(Progress {
            stage: "embedding",
            done: ((chunk_no + 1) * options.chunk.max(1)).min(total),
            total,
        });
    }
    if items.is_empty() {
        return Err(MemoryError::Empty(format!(
            "none of the {total} images under {} could be read",
            root.display()
        )));
    }
    if cancel.is_cancelled() {
        return Err(MemoryError::Cancelled);
    }
    progress.report(Progress {
        stage: "indexing",
        done: 0,
        total: items.len(),
    });
    let memory = ReferenceMemory::new(
        MemoryParts {
            embedder: id,
            embedder_spec: embedder_spec.to_string(),
            dim,
            root: root.to_path_buf(),
            items,
            vectors,
            thumbs: options.thumbs.then_some(thumbs),
        },
        options.index,
        options.hnsw,
    )?;
    progress.report(Progress {
        stage: "indexing",
        done: memory.len(),
        total: memory.len(),
    });
    Ok((memory, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::EmbedError;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Mean colour as a 3-d unit vector; counts how many images it embedded.
    struct MeanColour(AtomicUsize);
    impl ImageEmbedder for MeanColour {
        fn id(&self) -> String {
            "mean-colour-test".into()
        }
        fn dim(&self) -> usize {
            3
        }
        fn embed_batch(&self, images: &[image::RgbImage]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.0.fetch_add(images.len(), Ordering::SeqCst);
            Ok(images
                .iter()
                .map(|img| {
                    let mut v = [0f32; 3];
                    for p in img.pixels() {
                        for c in 0..3 {
                            v[c] += p[c] as f32 + 1.0;
                        }
                    }
                    let mut v = v.to_vec();
                    crate::vision::l2_normalize(&mut v);
                    v
                })
                .collect())
        }
    }

    fn write_png(path: &Path, rgb: [u8; 3]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(8, 8, image::Rgb(rgb))
            .save(path)
            .unwrap();
    }

    #[test]
    fn collects_mmad_and_mvtec_layouts() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write_png(&r.join("MVTec-AD/bottle/train/good/000.png"), [1, 2, 3]);
        write_png(&r.join("VisA/candle/train/good/000.JPG"), [1, 2, 3]);
        write_png(&r.join("VisA/candle/test/bad/000.png"), [1, 2, 3]);
        std::fs::write(r.join("MVTec-AD/bottle/train/good/readme.txt"), b"x").unwrap();
        let imgs = collect_images(r, None).unwrap();
        assert_eq!(imgs.len(), 2);
        assert_eq!(imgs[0].rel_path, "MVTec-AD/bottle/train/good/000.png");
        assert_eq!(
            (imgs[1].dataset.as_str(), imgs[1].category.as_str()),
            ("VisA", "candle")
        );
        let mvtec = collect_images(&r.join("MVTec-AD"), None).unwrap();
        assert_eq!(mvtec[0].rel_path, "bottle/train/good/000.png");
        assert_eq!(
            (mvtec[0].dataset.as_str(), mvtec[0].category.as_str()),
            ("MVTec-AD", "bottle")
        );
        let bad = collect_images(r, Some("*/*/test/*/*")).unwrap();
        assert_eq!(bad[0].category, "candle");
        assert!(matches!(
            collect_images(r, Some("../*")),
            Err(MemoryError::Source { .. })
        ));
        assert!(matches!(
            collect_images(r, Some("nothing/*")),
            Err(MemoryError::Empty(_))
        ));
    }

    #[test]
    fn builds_with_cache_skips_broken_files_and_cancels() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("root");
        write_png(&r.join("D/red/train/good/0.png"), [200, 10, 10]);
        write_png(&r.join("D/red/train/good/1.png"), [190, 20, 10]);
        write_png(&r.join("D/blue/train/good/0.png"), [10, 10, 200]);
        std::fs::write(r.join("D/blue/train/good/1.png"), b"not a png").unwrap();
        let images = collect_images(&r, None).unwrap();
        let emb = MeanColour(AtomicUsize::new(0));
        let opts = BuildOptions {
            index: IndexKind::Exact,
            chunk: 2,
            cache_dir: Some(t.path().join("cache")),
            ..BuildOptions::default()
        };
        let reports = std::sync::Mutex::new(Vec::new());
        let sink = |p: Progress| reports.lock().unwrap().push(p);
        let (mem, rep) =
            build_memory("test", &r, &images, &emb, &opts, &sink, &CancelToken::new()).unwrap();
        assert_eq!(mem.len(), 3);
        assert_eq!(rep.embedded, 3);
        assert_eq!(rep.skipped.len(), 1);
        assert!(rep.skipped[0].0.ends_with("blue/train/good/1.png"));
        let last = reports.lock().unwrap().last().cloned().unwrap();
        assert_eq!(last.stage, "indexing");
        // A rebuild embeds nothing new.
        let (_, rep2) = build_memory(
            "test",
            &r,
            &images,
            &emb,
            &opts,
            &crate::jobs::NoProgress,
            &CancelToken::new(),
        )
        .unwrap();
        assert_eq!((rep2.embedded, rep2.from_cache), (0, 3));
        assert_eq!(emb.0.load(Ordering::SeqCst), 3);
        // Retrieval: a reddish query finds a red reference.
        let q = emb
            .embed(&image::RgbImage::from_pixel(
                4,
                4,
                image::Rgb([180, 30, 20]),
            ))
            .unwrap();
        assert_eq!(
            mem.retrieve(&q, 1, &super::super::Scope::Global)[0].category,
            "red"
        );
        let cancel = CancelToken::new();
        cancel.cancel();
        assert!(matches!(
            build_memory(
                "test",
                &r,
                &images,
                &emb,
                &opts,
                &crate::jobs::NoProgress,
                &cancel
            ),
            Err(MemoryError::Cancelled)
        ));
    }
}
