//! The reference memory: embeddings of defect-free images, an index over them,
//! and for every vector the image it came from (path, dataset, category).
//!
//! On disk a memory is a folder: `manifest.json` (format version, embedder id,
//! items, checksums), `vectors.f32` (little-endian, row-major) and, for HNSW, the
//! graph files. A memory built by one embedder refuses queries from another.

pub mod build;
pub mod cache;
pub mod index;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use build::{BuildOptions, BuildReport, SourceImage, build_memory, collect_images};

pub use cache::EmbeddingCache;
pub use index::{ExactIndex, Hit, HnswIndex, HnswParams, IndexKind, VectorIndex};

use crate::vision::descriptor::{self, RerankThumb};

/// Bumped whenever the folder layout or manifest meaning changes.
pub const FORMAT_VERSION: u32 = 1;
const FORMAT_NAME: &str = "echo-workbench reference memory";
const HNSW_BASENAME: &str = "index";
const THUMBS_FILE: &str = "thumbs.bin";
/// How many vector-search candidates the SSIM + histogram re-ranking looks at.
pub const RERANK_POOL: usize = 10;

/// One remembered image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryItem {
    /// Relative to the memory's root, `/`-separated.
    pub path: String,
    pub dataset: String,
    pub category: String,
    /// SHA-256 of the file's bytes when it was embedded.
    pub sha256: String,
}

/// Where to look for the reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "scope", content = "category")]
pub enum Scope {
    /// The whole memory, as Echo does.
    Global,
    /// Only the query's category (our improvement: a bottle is never compared with a
    /// cable even when the two look alike).
    Category(String),
}

/// A retrieved reference with its similarity (cosine, higher is closer).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retrieved {
    pub id: usize,
    pub path: String,
    pub dataset: String,
    pub category: String,
    /// Cosine similarity of the embeddings.
    pub score: f32,
    /// SSIM minus histogram distance, when the memory keeps re-ranking thumbnails
    /// (the order then follows this score).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank_score: Option<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("{path} is not a reference memory (no readable manifest.json): {message}")]
    NotAMemory { path: PathBuf, message: String },
    #[error(
        "{path} was written by a different format version ({found}; this build reads {FORMAT_VERSION}); rebuild it"
    )]
    Version { path: PathBuf, found: u32 },
    #[error("{path} is damaged: {message}; rebuild it")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "{path} was built with embedder `{built}`, but the query was embedded with `{query}`; rebuild the memory or switch embedders"
    )]
    EmbedderMismatch {
        path: PathBuf,
        built: String,
        query: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Index(#[from] index::IndexError),
    #[error("no images to remember: {0}")]
    Empty(String),
    #[error("cannot list images under {path}: {message}")]
    Source { path: PathBuf, message: String },
    #[error(transparent)]
    Embed(#[from] crate::vision::EmbedError),
    #[error("embedding cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
    #[error("the memory build was cancelled")]
    Cancelled,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    tool_version: String,
    embedder: String,
    /// How to load the embedder again (e.g. `descriptor`, `clip:/models/clip`).
    #[serde(default)]
    embedder_spec: String,
    dim: usize,
    index: IndexKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hnsw: Option<HnswParams>,
    root: PathBuf,
    vectors_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thumbs_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    graph_sha256: Vec<(String, String)>,
    items: Vec<MemoryItem>,
}

/// Embeddings of normal images with the index to search them.
pub struct ReferenceMemory {
    pub embedder: String,
    /// How the embedder was specified when the memory was built.
    pub embedder_spec: String,
    pub dim: usize,
    /// The folder item paths are relative to.
    pub root: PathBuf,
    pub items: Vec<MemoryItem>,
    exact: ExactIndex,
    hnsw: Option<HnswIndex>,
    thumbs: Option<Vec<RerankThumb>>,
}

/// The raw material of a memory, before indexing.
#[derive(Debug, Clone)]
pub struct MemoryParts {
    pub embedder: String,
    pub embedder_spec: String,
    pub dim: usize,
    pub root: PathBuf,
    pub items: Vec<MemoryItem>,
    /// `items.len() * dim` values, row-major.
    pub vectors: Vec<f32>,
    /// One re-ranking thumbnail per item, or none.
    pub thumbs: Option<Vec<RerankThumb>>,
}

impl std::fmt::Debug for ReferenceMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferenceMemory")
            .field("embedder", &self.embedder)
            .field("dim", &self.dim)
            .field("items", &self.items.len())
            .field("index", &self.index_kind())
            .finish()
    }
}

impl ReferenceMemory {
    /// Indexes `parts`.
    pub fn new(
        parts: MemoryParts,
        index: IndexKind,
        hnsw: HnswParams,
    ) -> Result<Self, MemoryError> {
        let MemoryParts {
            embedder,
            embedder_spec,
            dim,
            root,
            items,
            vectors,
            thumbs,
        } = parts;
        if vectors.len() != items.len() * dim {
            return Err(MemoryError::Corrupt {
                path: root,
                message: format!(
                    "{} values for {} items of dimension {dim}",
                    vectors.len(),
                    items.len()
                ),
            });
        }
        if thumbs.as_ref().is_some_and(|t| t.len() != items.len()) {
            return Err(MemoryError::Corrupt {
                path: root,
                message: "one re-ranking thumbnail per item is required".into(),
            });
        }
        let hnsw = match index {
            IndexKind::Hnsw => Some(HnswIndex::build(dim, &vectors, hnsw)?),
            IndexKind::Exact => None,
        };
        Ok(ReferenceMemory {
            embedder,
            embedder_spec,
            dim,
            root,
            items,
            exact: ExactIndex::new(dim, vectors),
            hnsw,
            thumbs,
        })
    }

    /// Whether retrieval re-ranks candidates by SSIM and colour histogram.
    pub fn has_thumbs(&self) -> bool {
        self.thumbs.is_some()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn index_kind(&self) -> IndexKind {
        if self.hnsw.is_some() {
            IndexKind::Hnsw
        } else {
            IndexKind::Exact
        }
    }

    pub fn hnsw_params(&self) -> Option<HnswParams> {
        self.hnsw.as_ref().map(HnswIndex::params)
    }

    /// Changes the search breadth of the HNSW graph (no effect on exact search).
    pub fn set_ef_search(&mut self, ef: usize) {
        if let Some(h) = &mut self.hnsw {
            h.set_ef_search(ef);
        }
    }

    /// The categories present, in order of first appearance.
    pub fn categories(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for item in &self.items {
            if !out.contains(&item.category.as_str()) {
                out.push(&item.category);
            }
        }
        out
    }

    /// Refuses a query vector from another embedder (or of the wrong size).
    pub fn check_query(&self, embedder: &str, dim: usize) -> Result<(), MemoryError> {
        if embedder != self.embedder || dim != self.dim {
            return Err(MemoryError::EmbedderMismatch {
                path: self.root.clone(),
                built: self.embedder.clone(),
                query: embedder.to_string(),
            });
        }
        Ok(())
    }

    /// The `k` most similar remembered images in `scope`, best first.
    ///
    /// Category scope searches exactly among that category's vectors: a few hundred
    /// dot products are cheaper than a filtered graph walk and never miss.
    pub fn retrieve(&self, query: &[f32], k: usize, scope: &Scope) -> Vec<Retrieved> {
        let hits = match scope {
            Scope::Global => match &self.hnsw {
                Some(h) => h.search(query, k),
                None => self.exact.search(query, k),
            },
            Scope::Category(c) => {
                let ids: Vec<usize> = (0..self.items.len())
                    .filter(|&i| self.items[i].category == *c)
                    .collect();
                self.exact.search_among(query, k, &ids)
            }
        };
        hits.into_iter().map(|h| self.retrieved(h)).collect()
    }

    /// Exact global search, the reference answer for HNSW.
    pub fn retrieve_exact(&self, query: &[f32], k: usize) -> Vec<Retrieved> {
        self.exact
            .search(query, k)
            .into_iter()
            .map(|h| self.retrieved(h))
            .collect()
    }

    /// Like [`ReferenceMemory::retrieve`], then, when the memory keeps thumbnails
    /// and a query thumbnail is given, re-ranks the best [`RERANK_POOL`] candidates
    /// by SSIM and colour-histogram distance (how MMAD chose its own templates).
    pub fn retrieve_reranked(
        &self,
        query: &[f32],
        thumb: Option<&RerankThumb>,
        k: usize,
        scope: &Scope,
    ) -> Vec<Retrieved> {
        let (Some(thumbs), Some(q)) = (&self.thumbs, thumb) else {
            return self.retrieve(query, k, scope);
        };
        let pool = self.retrieve(query, k.max(RERANK_POOL), scope);
        let candidates: Vec<(usize, &RerankThumb)> =
            pool.iter().map(|r| (r.id, &thumbs[r.id])).collect();
        let order = descriptor::rerank(q, &candidates);
        order
            .into_iter()
            .take(k)
            .filter_map(|(id, score)| {
                let mut r = pool.iter().find(|r| r.id == id)?.clone();
                r.rerank_score = Some(score);
                Some(r)
            })
            .collect()
    }

    fn retrieved(&self, h: Hit) -> Retrieved {
        let item = &self.items[h.id];
        Retrieved {
            id: h.id,
            path: item.path.clone(),
            dataset: item.dataset.clone(),
            category: item.category.clone(),
            score: h.score,
            rerank_score: None,
        }
    }

    /// The vector of item `id`.
    pub fn vector(&self, id: usize) -> Option<&[f32]> {
        self.exact_vectors().get(id * self.dim..(id + 1) * self.dim)
    }

    fn exact_vectors(&self) -> &[f32] {
        self.exact.vectors()
    }

    /// Writes the memory folder atomically: a sibling temp folder is filled, then
    /// swapped in, so a crash never leaves a half-written memory.
    pub fn save(&self, dir: &Path) -> Result<(), MemoryError> {
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| MemoryError::Write { path, source }
        };
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(werr(&parent))?;
        let tmp = tempfile::Builder::new()
            .prefix(".echo-memory-")
            .tempdir_in(&parent)
            .map_err(werr(&parent))?;
        let bytes: Vec<u8> = self
            .exact_vectors()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        std::fs::write(tmp.path().join("vectors.f32"), &bytes).map_err(werr(dir))?;
        let thumbs_sha256 = match &self.thumbs {
            Some(thumbs) => {
                let bytes: Vec<u8> = thumbs.iter().flat_map(RerankThumb::to_bytes).collect();
                std::fs::write(tmp.path().join(THUMBS_FILE), &bytes).map_err(werr(dir))?;
                Some(crate::util::fsx::sha256_bytes(&bytes))
            }
            None => None,
        };
        let mut graph_sha256 = Vec::new();
        if let Some(h) = &self.hnsw {
            h.dump(tmp.path(), HNSW_BASENAME)?;
            for suffix in ["hnsw.graph", "hnsw.data"] {
                let name = format!("{HNSW_BASENAME}.{suffix}");
                let sum =
                    crate::util::fsx::sha256_file(&tmp.path().join(&name)).map_err(werr(dir))?;
                graph_sha256.push((name, sum));
            }
        }
        let manifest = Manifest {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            embedder: self.embedder.clone(),
            embedder_spec: self.embedder_spec.clone(),
            dim: self.dim,
            index: self.index_kind(),
            hnsw: self.hnsw_params(),
            root: self.root.clone(),
            vectors_sha256: crate::util::fsx::sha256_bytes(&bytes),
            thumbs_sha256,
            graph_sha256,
            items: self.items.clone(),
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| MemoryError::Write {
            path: dir.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(tmp.path().join("manifest.json"), json).map_err(werr(dir))?;
        let staged = tmp.keep();
        let old = parent.join(format!(
            ".echo-memory-old-{}",
            dir.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let had_old = dir.exists();
        if had_old {
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(dir, &old).map_err(werr(dir))?;
        }
        if let Err(e) = std::fs::rename(&staged, dir) {
            if had_old {
                let _ = std::fs::rename(&old, dir);
            }
            let _ = std::fs::remove_dir_all(&staged);
            return Err(MemoryError::Write {
                path: dir.to_path_buf(),
                source: e,
            });
        }
        if had_old {
            let _ = std::fs::remove_dir_all(&old);
        }
        Ok(())
    }

    /// Reads a memory folder, verifying every checksum before trusting a byte.
    pub fn load(dir: &Path) -> Result<Self, MemoryError> {
        let corrupt = |message: String| MemoryError::Corrupt {
            path: dir.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(dir.join("manifest.json")).map_err(|e| {
            MemoryError::NotAMemory {
                path: dir.to_path_buf(),
                message: e.to_string(),
            }
        })?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| MemoryError::NotAMemory {
                path: dir.to_path_buf(),
                message: format!("manifest.json: {e}"),
            })?;
        if manifest.format != FORMAT_NAME {
            return Err(MemoryError::NotAMemory {
                path: dir.to_path_buf(),
                message: format!("manifest.json describes `{}`", manifest.format),
            });
        }
        if manifest.version != FORMAT_VERSION {
            return Err(MemoryError::Version {
                path: dir.to_path_buf(),
                found: manifest.version,
            });
        }
        let bytes = std::fs::read(dir.join("vectors.f32"))
            .map_err(|e| corrupt(format!("vectors.f32: {e}")))?;
        if crate::util::fsx::sha256_bytes(&bytes) != manifest.vectors_sha256 {
            return Err(corrupt("vectors.f32 does not match its checksum".into()));
        }
        if bytes.len() != manifest.items.len() * manifest.dim * 4 {
            return Err(corrupt(format!(
                "vectors.f32 holds {} bytes, expected {} items x {} dims x 4",
                bytes.len(),
                manifest.items.len(),
                manifest.dim
            )));
        }
        let vectors: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let thumbs = match &manifest.thumbs_sha256 {
            None => None,
            Some(sum) => {
                let bytes = std::fs::read(dir.join(THUMBS_FILE))
                    .map_err(|e| corrupt(format!("{THUMBS_FILE}: {e}")))?;
                if &crate::util::fsx::sha256_bytes(&bytes) != sum
                    || bytes.len() != manifest.items.len() * RerankThumb::BYTES
                {
                    return Err(corrupt(format!(
                        "{THUMBS_FILE} does not match its checksum"
                    )));
                }
                let thumbs = bytes
                    .chunks_exact(RerankThumb::BYTES)
                    .map(RerankThumb::from_bytes)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| corrupt(e.to_string()))?;
                Some(thumbs)
            }
        };
        let hnsw = match manifest.index {
            IndexKind::Exact => None,
            IndexKind::Hnsw => {
                for (name, sum) in &manifest.graph_sha256 {
                    let actual = crate::util::fsx::sha256_file(&dir.join(name))
                        .map_err(|e| corrupt(format!("{name}: {e}")))?;
                    if &actual != sum {
                        return Err(corrupt(format!("{name} does not match its checksum")));
                    }
                }
                if manifest.graph_sha256.is_empty() {
                    return Err(corrupt("the HNSW graph files are not listed".into()));
                }
                let params = manifest.hnsw.unwrap_or_default();
                Some(HnswIndex::load(dir, HNSW_BASENAME, params)?)
            }
        };
        Ok(ReferenceMemory {
            embedder: manifest.embedder,
            embedder_spec: manifest.embedder_spec,
            dim: manifest.dim,
            root: manifest.root,
            items: manifest.items,
            exact: ExactIndex::new(manifest.dim, vectors),
            hnsw,
            thumbs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(kind: IndexKind) -> (ReferenceMemory, Vec<f32>) {
        let dim = 8;
        let mut vectors = Vec::new();
        let mut items = Vec::new();
        for i in 0..60 {
            let cat = ["bottle", "cable", "screw"][i % 3];
            let mut v = vec![0.05f32; dim];
            v[i % 3] = 1.0;
            v[3 + i % 5] += 0.2;
            crate::vision::l2_normalize(&mut v);
            vectors.extend(&v);
            items.push(MemoryItem {
                path: format!("MVTec-AD/{cat}/train/good/{i:03}.png"),
                dataset: "MVTec-AD".into(),
                category: cat.into(),
                sha256: format!("{i}"),
            });
        }
        let m = ReferenceMemory::new(
            MemoryParts {
                embedder: "test-embedder".into(),
                embedder_spec: "test".into(),
                dim,
                root: "/data".into(),
                items,
                vectors: vectors.clone(),
                thumbs: None,
            },
            kind,
            HnswParams {
                m: 8,
                ef_construction: 40,
                ef_search: 16,
            },
        )
        .unwrap();
        (m, vectors)
    }

    #[test]
    fn scopes_and_exact_agree() {
        for kind in [IndexKind::Exact, IndexKind::Hnsw] {
            let (m, v) = memory(kind);
            let q = &v[0..8]; // a bottle
            let global = m.retrieve(q, 3, &Scope::Global);
            assert_eq!(global[0].category, "bottle");
            assert!((global[0].score - 1.0).abs() < 1e-5);
            assert_eq!(global[0].score, m.retrieve_exact(q, 1)[0].score); // ids tie: equal vectors
            let cable = m.retrieve(q, 5, &Scope::Category("cable".into()));
            assert_eq!(cable.len(), 5);
            assert!(cable.iter().all(|r| r.category == "cable"));
            assert!(
                m.retrieve(q, 3, &Scope::Category("nothing".into()))
                    .is_empty()
            );
            assert_eq!(m.categories(), ["bottle", "cable", "screw"]);
        }
    }

    #[test]
    fn save_load_round_trip_and_checks() {
        for kind in [IndexKind::Exact, IndexKind::Hnsw] {
            let (m, v) = memory(kind);
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("mem");
            m.save(&p).unwrap();
            m.save(&p).unwrap(); // overwriting an existing memory works
            let back = ReferenceMemory::load(&p).unwrap();
            assert_eq!(back.items, m.items);
            assert_eq!(back.index_kind(), kind);
            assert_eq!(
                back.retrieve(&v[8..16], 4, &Scope::Global),
                m.retrieve(&v[8..16], 4, &Scope::Global)
            );
            assert!(back.check_query("test-embedder", 8).is_ok());
            let err = back
                .check_query("descriptor-v1", 8)
                .unwrap_err()
                .to_string();
            assert!(err.contains("built with embedder `test-embedder`"), "{err}");
            // Flip one byte: the checksum catches it.
            let vp = p.join("vectors.f32");
            let mut bytes = std::fs::read(&vp).unwrap();
            bytes[5] ^= 0xff;
            std::fs::write(&vp, bytes).unwrap();
            let err = ReferenceMemory::load(&p).unwrap_err().to_string();
            assert!(
                err.contains("is damaged") && err.contains("checksum"),
                "{err}"
            );
            let names: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names.len(), 1, "no temp folders left: {names:?}");
        }
    }

    #[test]
    fn not_a_memory_is_one_clear_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let err = ReferenceMemory::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not a reference memory"), "{err}");
        std::fs::write(dir.path().join("manifest.json"), "{\"format\": 3").unwrap();
        let err = ReferenceMemory::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("manifest.json"), "{err}");
    }
}
