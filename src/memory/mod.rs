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
/// Must match [`HNSW_FILES`].
const HNSW_BASENAME: &str = "index";
/// What `HnswIndex::dump` writes for [`HNSW_BASENAME`], sorted.
const HNSW_FILES: [&str; 2] = ["index.hnsw.data", "index.hnsw.graph"];
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
    #[error(
        "refusing to write a memory to {path}: {reason}; choose a new or empty folder, or an existing memory to replace"
    )]
    Destination { path: PathBuf, reason: String },
}

/// What a memory's destination folder holds before it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Absent,
    Empty,
    /// A reference memory (its manifest says so) holding only a memory's files.
    Memory,
}

/// The files a memory folder consists of. A folder holding anything else is not
/// ours to delete, even when its manifest says it is a memory.
const MEMORY_FILES: [&str; 5] = [
    "manifest.json",
    "vectors.f32",
    THUMBS_FILE,
    "index.hnsw.graph",
    "index.hnsw.data",
];

/// The largest manifest we read (a million items is about 300 MB of JSON).
const MANIFEST_LIMIT: u64 = 1 << 30;

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

    /// Vectors in the index searched first (the HNSW graph when there is one).
    pub fn index_len(&self) -> usize {
        match &self.hnsw {
            Some(h) => h.len(),
            None => self.exact.len(),
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
        hits.into_iter().filter_map(|h| self.retrieved(h)).collect()
    }

    /// Exact global search, the reference answer for HNSW.
    pub fn retrieve_exact(&self, query: &[f32], k: usize) -> Vec<Retrieved> {
        self.exact
            .search(query, k)
            .into_iter()
            .filter_map(|h| self.retrieved(h))
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
        let candidates: Vec<(usize, &RerankThumb)> = pool
            .iter()
            .filter_map(|r| Some((r.id, thumbs.get(r.id)?)))
            .collect();
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

    /// The item a hit names; `None` only if an index disagrees with the items,
    /// which [`ReferenceMemory::load`] rules out (a wrong hit is dropped, not a panic).
    fn retrieved(&self, h: Hit) -> Option<Retrieved> {
        let item = self.items.get(h.id)?;
        Some(Retrieved {
            id: h.id,
            path: item.path.clone(),
            dataset: item.dataset.clone(),
            category: item.category.clone(),
            score: h.score,
            rerank_score: None,
        })
    }

    /// The vector of item `id`.
    pub fn vector(&self, id: usize) -> Option<&[f32]> {
        self.exact_vectors().get(id * self.dim..(id + 1) * self.dim)
    }

    fn exact_vectors(&self) -> &[f32] {
        self.exact.vectors()
    }

    /// Whether `dir` may receive a memory: it must be absent, an empty folder, or an
    /// existing memory holding nothing but a memory's files. Anything else (a dataset,
    /// a folder with a thesis in it, a file) is refused before any work is done, and
    /// again just before the swap, so a user's files are never replaced.
    pub fn check_destination(dir: &Path) -> Result<Destination, MemoryError> {
        let refuse = |reason: String| MemoryError::Destination {
            path: dir.to_path_buf(),
            reason,
        };
        let meta = match std::fs::symlink_metadata(dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Destination::Absent),
            Err(e) => return Err(refuse(format!("cannot inspect it: {e}"))),
        };
        if meta.file_type().is_symlink() {
            return Err(refuse(
                "it is a symlink (name the folder it points to instead)".into(),
            ));
        }
        if !meta.is_dir() {
            return Err(refuse("it is a file, not a folder".into()));
        }
        let mut names = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| refuse(format!("cannot list it: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| refuse(format!("cannot list it: {e}")))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        if names.is_empty() {
            return Ok(Destination::Empty);
        }
        names.sort();
        if !names.iter().any(|n| n == "manifest.json") {
            return Err(refuse(format!(
                "it is not a reference memory (no manifest.json) and holds {}: {}",
                plural(names.len(), "entry", "entries"),
                sample(&names)
            )));
        }
        let manifest = crate::util::fsx::read_limited(&dir.join("manifest.json"), MANIFEST_LIMIT)
            .map_err(|e| refuse(format!("its manifest.json cannot be read: {e}")))?;
        #[derive(Deserialize)]
        struct Head {
            format: String,
        }
        match serde_json::from_slice::<Head>(&manifest) {
            Ok(head) if head.format == FORMAT_NAME => {}
            Ok(head) => {
                return Err(refuse(format!(
                    "its manifest.json describes `{}`, not a reference memory",
                    head.format
                )));
            }
            Err(e) => {
                return Err(refuse(format!(
                    "its manifest.json is not a reference memory's: {e}"
                )));
            }
        }
        let foreign: Vec<String> = names
            .into_iter()
            .filter(|n| !MEMORY_FILES.contains(&n.as_str()))
            .collect();
        if !foreign.is_empty() {
            return Err(refuse(format!(
                "it is a memory, but also holds {} a memory does not write: {}",
                plural(foreign.len(), "entry", "entries"),
                sample(&foreign)
            )));
        }
        Ok(Destination::Memory)
    }

    /// Writes the memory folder so that nothing is ever lost: the destination is
    /// checked with [`ReferenceMemory::check_destination`]; the memory is written into
    /// a sibling staging folder, every file and the folder flushed to disk, and loaded
    /// back to verify it; only then is it swapped in, and only after the swap is the
    /// old memory removed. A crash at any point leaves either the old or the new
    /// memory in place (and at worst a hidden `.echo-*` folder beside it).
    pub fn save(&self, dir: &Path) -> Result<(), MemoryError> {
        Self::check_destination(dir)?;
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
        self.write_files(tmp.path()).map_err(|e| match e {
            MemoryError::Write { source, .. } => MemoryError::Write {
                path: dir.to_path_buf(),
                source,
            },
            other => other,
        })?;
        let back = ReferenceMemory::load(tmp.path()).map_err(|e| MemoryError::Write {
            path: dir.to_path_buf(),
            source: std::io::Error::other(format!("the written memory does not read back: {e}")),
        })?;
        if !self.same_content(&back) {
            return Err(MemoryError::Write {
                path: dir.to_path_buf(),
                source: std::io::Error::other("the written memory reads back different"),
            });
        }
        drop(back);
        // The build may have taken hours; look again right before replacing anything.
        Self::check_destination(dir)?;
        let staged = tmp.keep();
        match crate::util::dirswap::swap_in_dir(&staged, dir) {
            Ok(old) => {
                if let Some(old) = old {
                    // The new memory is durable in place; a failure here leaves only a
                    // hidden leftover, never a missing memory.
                    let _ = std::fs::remove_dir_all(&old);
                    let _ = crate::util::fsx::sync_dir(&parent);
                }
                Ok(())
            }
            Err(e) => {
                // Once swapped, the old memory is the only other copy: keep it.
                if !e.swapped {
                    let _ = std::fs::remove_dir_all(&staged);
                }
                Err(MemoryError::Write {
                    path: dir.to_path_buf(),
                    source: e.source,
                })
            }
        }
    }

    /// Fills the empty folder `dir` with this memory's files, each flushed to disk,
    /// and the folder's entries too.
    fn write_files(&self, dir: &Path) -> Result<(), MemoryError> {
        let werr = |path: PathBuf| move |source| MemoryError::Write { path, source };
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            write_synced(&path, bytes).map_err(werr(path))
        };
        let bytes: Vec<u8> = self
            .exact_vectors()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        write("vectors.f32", &bytes)?;
        let thumbs_sha256 = match &self.thumbs {
            Some(thumbs) => {
                let bytes: Vec<u8> = thumbs.iter().flat_map(RerankThumb::to_bytes).collect();
                write(THUMBS_FILE, &bytes)?;
                Some(crate::util::fsx::sha256_bytes(&bytes))
            }
            None => None,
        };
        let mut graph_sha256 = Vec::new();
        if let Some(h) = &self.hnsw {
            h.dump(dir, HNSW_BASENAME)?;
            for name in HNSW_FILES {
                let path = dir.join(name);
                std::fs::File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(werr(path.clone()))?;
                let sum = crate::util::fsx::sha256_file(&path).map_err(werr(path))?;
                graph_sha256.push((name.to_string(), sum));
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
            path: dir.join("manifest.json"),
            source: std::io::Error::other(e),
        })?;
        write("manifest.json", &json)?;
        crate::util::fsx::sync_dir(dir).map_err(werr(dir.to_path_buf()))
    }

    /// Whether `other` holds the same items, vectors and thumbnails.
    fn same_content(&self, other: &ReferenceMemory) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        self.embedder == other.embedder
            && self.dim == other.dim
            && self.items == other.items
            && self.index_kind() == other.index_kind()
            && bits(self.exact_vectors()) == bits(other.exact_vectors())
            && self.thumbs == other.thumbs
    }

    /// Reads a memory folder, verifying every checksum before trusting a byte.
    pub fn load(dir: &Path) -> Result<Self, MemoryError> {
        let corrupt = |message: String| MemoryError::Corrupt {
            path: dir.to_path_buf(),
            message,
        };
        let text = crate::util::fsx::read_limited(&dir.join("manifest.json"), MANIFEST_LIMIT)
            .map_err(|e| MemoryError::NotAMemory {
                path: dir.to_path_buf(),
                message: e.to_string(),
            })?;
        let manifest: Manifest =
            serde_json::from_slice(&text).map_err(|e| MemoryError::NotAMemory {
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
        // Item paths are joined to the root and the images sent to models: one that
        // leaves the root would hand any image on the disk to a remote endpoint.
        for (i, item) in manifest.items.iter().enumerate() {
            crate::dataset::paths::check_relative(&item.path)
                .map_err(|e| corrupt(format!("item {i} in manifest.json: {e}")))?;
        }
        if manifest.dim == 0 && !manifest.items.is_empty() {
            return Err(corrupt("manifest.json gives dimension 0".into()));
        }
        let vector_bytes = manifest
            .items
            .len()
            .checked_mul(manifest.dim)
            .and_then(|n| n.checked_mul(4))
            .ok_or_else(|| {
                corrupt(format!(
                    "{} items of dimension {} cannot be held in memory",
                    manifest.items.len(),
                    manifest.dim
                ))
            })?;
        // Reading no more than the manifest promises keeps a swapped-in huge file
        // from filling memory; a longer file fails the size check below.
        let bytes = crate::util::fsx::read_limited(&dir.join("vectors.f32"), vector_bytes as u64)
            .map_err(|e| corrupt(format!("vectors.f32: {e}")))?;
        if bytes.len() != vector_bytes {
            return Err(corrupt(format!(
                "vectors.f32 holds {} bytes, expected {} items x {} dims x 4",
                bytes.len(),
                manifest.items.len(),
                manifest.dim
            )));
        }
        if crate::util::fsx::sha256_bytes(&bytes) != manifest.vectors_sha256 {
            return Err(corrupt("vectors.f32 does not match its checksum".into()));
        }
        let vectors: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let thumbs = match &manifest.thumbs_sha256 {
            None => None,
            Some(sum) => {
                let expected = manifest.items.len().saturating_mul(RerankThumb::BYTES);
                let bytes = crate::util::fsx::read_limited(&dir.join(THUMBS_FILE), expected as u64)
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
                // Every graph file must be named, each once, and nothing else: an
                // unlisted file would be trusted unchecked, a listed path elsewhere
                // would be read from outside the memory.
                let mut names: Vec<&str> = manifest
                    .graph_sha256
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect();
                names.sort_unstable();
                if names != HNSW_FILES {
                    return Err(corrupt(format!(
                        "the checksums must name the graph files {} once each, but name [{}]",
                        HNSW_FILES.join(" and "),
                        names.join(", ")
                    )));
                }
                for (name, sum) in &manifest.graph_sha256 {
                    let actual = crate::util::fsx::sha256_file(&dir.join(name))
                        .map_err(|e| corrupt(format!("{name}: {e}")))?;
                    if &actual != sum {
                        return Err(corrupt(format!("{name} does not match its checksum")));
                    }
                }
                let params = manifest.hnsw.unwrap_or_default();
                let graph = HnswIndex::load(dir, HNSW_BASENAME, params)?;
                // A graph over other points than the items would hand out ids with no
                // item (a panic at query time) or the wrong image.
                graph
                    .check_points(manifest.items.len(), manifest.dim)
                    .map_err(|e| {
                        corrupt(format!("the HNSW graph does not match the items: {e}"))
                    })?;
                Some(graph)
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

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A few names for an error message, so a huge folder does not flood it.
fn sample(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut out: Vec<String> = names.iter().take(SHOWN).map(|n| format!("`{n}`")).collect();
    if names.len() > SHOWN {
        out.push(format!("and {} more", names.len() - SHOWN));
    }
    out.join(", ")
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

    fn rewrite_manifest(dir: &Path, change: impl FnOnce(&mut Manifest)) {
        let path = dir.join("manifest.json");
        let mut manifest: Manifest =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        change(&mut manifest);
        std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    }

    #[test]
    fn item_paths_that_leave_the_root_are_refused_at_load() {
        let (m, _) = memory(IndexKind::Exact);
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "../../../home/someone/private.png",
            "MVTec-AD/bottle/../../../x.png",
            "/etc/passwd",
            "a\\..\\..\\b.png",
            "a\0b.png",
            "",
        ] {
            let p = dir.path().join("mem");
            m.save(&p).unwrap();
            rewrite_manifest(&p, |man| man.items[7].path = bad.into());
            let err = ReferenceMemory::load(&p).unwrap_err().to_string();
            assert!(
                err.contains("is damaged: item 7 in manifest.json") && err.contains(bad),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn a_graph_that_does_not_match_the_items_is_refused_at_load() {
        let (m, v) = memory(IndexKind::Hnsw);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mem");
        // Fewer items than graph points, with vectors and checksum made consistent:
        // only the graph disagrees, and a query near item 55 would name no item.
        m.save(&p).unwrap();
        let kept = 50;
        let bytes: Vec<u8> = v[..kept * 8].iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(p.join("vectors.f32"), &bytes).unwrap();
        rewrite_manifest(&p, |man| {
            man.items.truncate(kept);
            man.vectors_sha256 = crate::util::fsx::sha256_bytes(&bytes);
        });
        let err = ReferenceMemory::load(&p).unwrap_err().to_string();
        assert!(
            err.contains("the HNSW graph does not match the items")
                && err.contains("60 points for 50 items"),
            "{err}"
        );
        // Checksums that leave a graph file unchecked, or name a file elsewhere.
        for names in [
            vec!["index.hnsw.data"],
            vec!["index.hnsw.data", "index.hnsw.data"],
            vec!["index.hnsw.data", "../index.hnsw.graph"],
            vec!["index.hnsw.data", "index.hnsw.graph", "vectors.f32"],
        ] {
            m.save(&p).unwrap();
            rewrite_manifest(&p, |man| {
                let sums: std::collections::HashMap<String, String> =
                    man.graph_sha256.iter().cloned().collect();
                man.graph_sha256 = names
                    .iter()
                    .map(|n| {
                        let sum = sums.get(*n).cloned().unwrap_or_default();
                        (n.to_string(), sum)
                    })
                    .collect();
            });
            let err = ReferenceMemory::load(&p).unwrap_err().to_string();
            assert!(
                err.contains("the checksums must name the graph files"),
                "{names:?}: {err}"
            );
        }
        // The untampered memory loads and answers.
        m.save(&p).unwrap();
        let back = ReferenceMemory::load(&p).unwrap();
        let top = &back.retrieve(&v[55 * 8..56 * 8], 1, &Scope::Global)[0];
        assert!(top.score > 0.999 && top.id % 15 == 55 % 15, "{top:?}");
    }

    #[cfg(unix)]
    #[test]
    fn only_absent_empty_or_memory_folders_are_destinations() {
        let (m, _) = memory(IndexKind::Exact);
        let dir = tempfile::tempdir().unwrap();
        let check = |p: &Path| ReferenceMemory::check_destination(p);
        let absent = dir.path().join("absent");
        assert_eq!(check(&absent).unwrap(), Destination::Absent);
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert_eq!(check(&empty).unwrap(), Destination::Empty);
        m.save(&empty).unwrap();
        assert_eq!(check(&empty).unwrap(), Destination::Memory);
        // A dataset folder: refused by save too, and every byte kept.
        let data = dir.path().join("dataset");
        std::fs::create_dir_all(data.join("bottle/train/good")).unwrap();
        std::fs::write(data.join("mmad.json"), "{}").unwrap();
        std::fs::write(data.join("bottle/train/good/000.png"), [9u8; 16]).unwrap();
        let err = m.save(&data).unwrap_err().to_string();
        assert!(
            err.contains("refusing to write a memory to")
                && err.contains("not a reference memory (no manifest.json) and holds 2 entries")
                && err.contains("`bottle`, `mmad.json`"),
            "{err}"
        );
        assert_eq!(std::fs::read(data.join("mmad.json")).unwrap(), b"{}");
        assert_eq!(
            std::fs::read(data.join("bottle/train/good/000.png")).unwrap(),
            [9u8; 16]
        );
        // Another tool's manifest, a memory the user added to, a file, a symlink.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("manifest.json"), r#"{"format": "a run"}"#).unwrap();
        assert!(
            check(&other)
                .unwrap_err()
                .to_string()
                .contains("describes `a run`")
        );
        std::fs::write(empty.join("notes.md"), "mine").unwrap();
        let err = check(&empty).unwrap_err().to_string();
        assert!(
            err.contains("also holds 1 entry") && err.contains("`notes.md`"),
            "{err}"
        );
        assert!(m.save(&empty).is_err());
        assert_eq!(
            std::fs::read_to_string(empty.join("notes.md")).unwrap(),
            "mine"
        );
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(check(&file).unwrap_err().to_string().contains("is a file"));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&absent, &link).unwrap();
        assert!(check(&link).unwrap_err().to_string().contains("symlink"));
    }
}
