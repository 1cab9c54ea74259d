//! The Reference Extractor: finds the defect-free image(s) the query is compared
//! with, either in a reference memory (Echo) or among MMAD's template lists.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use super::error::PipelineError;
use super::plan::ScopeMode;
use super::query::Query;
use super::trace::ReferenceInput;
use crate::memory::{ReferenceMemory, Scope};
use crate::vision::{DecodeLimits, ImageEmbedder, decode_rgb8, descriptor};

/// Where references come from, with what a memory search needs.
#[derive(Clone)]
pub enum ReferenceSource {
    /// Nearest neighbours in a memory; the top `k` are kept in the trace.
    Memory {
        memory: Arc<ReferenceMemory>,
        embedder: Arc<dyn ImageEmbedder>,
        scope: ScopeMode,
        k: usize,
    },
    /// The query entry's `similar_templates`.
    MmadSimilar,
    /// The query entry's `random_templates`.
    MmadRandom,
    None,
}

impl std::fmt::Debug for ReferenceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl ReferenceSource {
    /// One line for plans and traces.
    pub fn describe(&self) -> String {
        match self {
            ReferenceSource::Memory {
                memory, scope, k, ..
            } => format!(
                "memory of {} images ({} scope, top {k} kept)",
                memory.len(),
                scope.as_str()
            ),
            ReferenceSource::MmadSimilar => "MMAD similar_templates".into(),
            ReferenceSource::MmadRandom => "MMAD random_templates".into(),
            ReferenceSource::None => "none".into(),
        }
    }
}

/// One candidate reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub path: PathBuf,
    /// As stored (memory item path or MMAD template path).
    pub rel_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Cosine similarity (memory only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// SSIM + histogram re-ranking score (memories with thumbnails).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank_score: Option<f32>,
    /// Whether it is sent to the model.
    pub used: bool,
}

/// What the Reference Extractor found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReferenceFound {
    pub source: String,
    pub candidates: Vec<Candidate>,
    /// Remarks worth seeing (e.g. the query itself was in the memory and skipped).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl ReferenceFound {
    /// The images sent to the model, best first.
    pub fn images(&self) -> Vec<PathBuf> {
        self.candidates
            .iter()
            .filter(|c| c.used)
            .map(|c| c.path.clone())
            .collect()
    }

    pub fn summary(&self) -> String {
        let Some(top) = self.candidates.iter().find(|c| c.used) else {
            return "no reference".into();
        };
        let mut s = top.rel_path.clone();
        match (top.score, top.rerank_score) {
            (Some(sc), Some(rr)) => s.push_str(&format!(" (cosine {sc:.3}, rerank {rr:.3})")),
            (Some(sc), None) => s.push_str(&format!(" (cosine {sc:.3})")),
            _ => {}
        }
        let used = self.candidates.iter().filter(|c| c.used).count();
        if used > 1 {
            s.push_str(&format!(" and {} more", used - 1));
        }
        format!("{s} from {}", self.source)
    }
}

/// Runs the extractor. `images` is how many references are sent.
pub(crate) async fn find(
    source: &ReferenceSource,
    query: &Query,
    images: usize,
) -> Result<(ReferenceInput, ReferenceFound), PipelineError> {
    let fail = |message: String| PipelineError::Reference { message };
    let images = images.max(1);
    match source {
        ReferenceSource::None => Err(fail("no reference source is configured".into())),
        ReferenceSource::MmadSimilar | ReferenceSource::MmadRandom => {
            let similar = matches!(source, ReferenceSource::MmadSimilar);
            let field = if similar {
                "similar_templates"
            } else {
                "random_templates"
            };
            let entry = query.entry.as_ref().ok_or_else(|| {
                fail(format!(
                    "the query is not an entry of an MMAD dataset, so it has no {field}; use a reference memory"
                ))
            })?;
            let list = if similar {
                &entry.entry.similar_templates
            } else {
                &entry.entry.random_templates
            };
            let input = ReferenceInput::Templates {
                source: field.into(),
                key: entry.key.clone(),
                root: entry.root.path().to_path_buf(),
                images,
            };
            if list.is_empty() {
                return Err(fail(format!("the entry `{}` lists no {field}", entry.key)));
            }
            let mut candidates = Vec::new();
            for (i, rel) in list.iter().enumerate() {
                let path = entry
                    .root
                    .resolve(rel)
                    .map_err(|e| fail(format!("{field}[{i}] of `{}`: {e}", entry.key)))?;
                let used = i < images;
                if used && !path.is_file() {
                    return Err(fail(format!(
                        "{field}[{i}] `{rel}` is not a file under {}",
                        entry.root.path().display()
                    )));
                }
                candidates.push(Candidate {
                    path,
                    rel_path: rel.clone(),
                    category: Some(crate::dataset::category_of(rel).to_string())
                        .filter(|c| !c.is_empty()),
                    score: None,
                    rerank_score: None,
                    used,
                });
            }
            let found = ReferenceFound {
                source: format!("MMAD {field}"),
                candidates,
                notes: Vec::new(),
            };
            Ok((input, found))
        }
        ReferenceSource::Memory {
            memory,
            embedder,
            scope,
            k,
        } => {
            let scope = match scope {
                ScopeMode::Global => Scope::Global,
                ScopeMode::Category => {
                    Scope::Category(query.category.clone().ok_or_else(|| {
                        fail("category scope needs the query's category, which is unknown".into())
                    })?)
                }
            };
            let k = (*k).max(images);
            let input = ReferenceInput::Memory {
                source: "memory".into(),
                memory: memory.root.clone(),
                items: memory.len(),
                embedder: memory.embedder.clone(),
                scope: scope.clone(),
                k,
                rerank: memory.has_thumbs(),
                images,
            };
            let (memory, embedder, image) = (memory.clone(), embedder.clone(), query.image.clone());
            // Waiting here holds no thread; the permit then travels with the blocking
            // work, so it is released when the decode ends even if this future is dropped.
            let slot = search_slots()
                .acquire_owned()
                .await
                .map_err(|_| fail("the reference search pool is closed".into()))?;
            let work = move || {
                let _slot = slot;
                search(&memory, embedder.as_ref(), &image, k, &scope)
            };
            let (hits, notes) = match tokio::runtime::Handle::try_current() {
                Ok(handle) => handle
                    .spawn_blocking(work)
                    .await
                    .map_err(|e| fail(format!("the search task stopped: {e}")))??,
                Err(_) => work()?,
            };
            if hits.is_empty() {
                return Err(fail("the memory holds no image in this scope".into()));
            }
            let candidates = hits
                .into_iter()
                .enumerate()
                .map(|(i, c)| Candidate {
                    used: i < images,
                    ..c
                })
                .collect();
            Ok((
                input,
                ReferenceFound {
                    source: "the reference memory".into(),
                    candidates,
                    notes,
                },
            ))
        }
    }
}

/// How many query decodes + embeddings may run at once: one per core. Each holds a
/// decoded image (about 200 MB for a 64 MP one) and keeps a core busy, so more at
/// once than cores would only raise peak memory with `--concurrency`, never speed.
pub(crate) fn search_slot_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Shared by every pipeline in the process, so several runs together stay bounded too.
fn search_slots() -> Arc<tokio::sync::Semaphore> {
    static SLOTS: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    SLOTS
        .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(search_slot_count())))
        .clone()
}

/// Embeds the query and searches; blocking (decode + embed), run off the async threads.
fn search(
    memory: &ReferenceMemory,
    embedder: &dyn ImageEmbedder,
    image: &Path,
    k: usize,
    scope: &Scope,
) -> Result<(Vec<Candidate>, Vec<String>), PipelineError> {
    let fail = |message: String| PipelineError::Reference { message };
    memory
        .check_query(&embedder.id(), embedder.dim())
        .map_err(|e| fail(e.to_string()))?;
    let rgb = decode_rgb8(image, DecodeLimits::default()).map_err(|e| fail(e.to_string()))?;
    let vector = embedder.embed(&rgb).map_err(|e| fail(e.to_string()))?;
    let thumb = memory.has_thumbs().then(|| descriptor::thumb(&rgb));
    // One extra in case the query itself is remembered (it must not be its own reference).
    let hits = memory.retrieve_reranked(&vector, thumb.as_ref(), k + 1, scope);
    let own = image.canonicalize().ok();
    let mut notes = Vec::new();
    let mut out = Vec::new();
    for h in hits {
        let path = memory.root.join(&h.path);
        if own.is_some() && path.canonicalize().ok() == own {
            notes.push(format!(
                "the query itself is in the memory ({}); it was left out",
                h.path
            ));
            continue;
        }
        out.push(Candidate {
            path,
            rel_path: h.path,
            category: Some(h.category),
            score: Some(h.score),
            rerank_score: h.rerank_score,
            used: false,
        });
    }
    out.truncate(k);
    Ok((out, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{HnswParams, IndexKind, MemoryItem, MemoryParts};
    use crate::vision::EmbedError;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Records how many embeddings run at the same moment.
    #[derive(Default)]
    struct Counting {
        now: AtomicUsize,
        peak: AtomicUsize,
    }

    impl ImageEmbedder for Counting {
        fn id(&self) -> String {
            "counting-test".into()
        }
        fn dim(&self) -> usize {
            2
        }
        fn embed_batch(&self, images: &[image::RgbImage]) -> Result<Vec<Vec<f32>>, EmbedError> {
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(15));
            self.now.fetch_sub(1, Ordering::SeqCst);
            Ok(images.iter().map(|_| vec![1.0, 0.0]).collect())
        }
    }

    #[test]
    fn memory_searches_in_flight_never_exceed_one_per_core() {
        let dir = tempfile::tempdir().unwrap();
        let query = dir.path().join("query.png");
        image::RgbImage::from_pixel(4, 4, image::Rgb([9, 9, 9]))
            .save(&query)
            .unwrap();
        let item = |name: &str| MemoryItem {
            path: name.into(),
            dataset: "D".into(),
            category: "c".into(),
            sha256: String::new(),
        };
        let memory = ReferenceMemory::new(
            MemoryParts {
                embedder: "counting-test".into(),
                embedder_spec: String::new(),
                dim: 2,
                root: dir.path().to_path_buf(),
                items: vec![item("a.png"), item("b.png")],
                vectors: vec![1.0, 0.0, 0.0, 1.0],
                thumbs: None,
            },
            IndexKind::Exact,
            HnswParams::default(),
        )
        .unwrap();
        let embedder = Arc::new(Counting::default());
        let source = ReferenceSource::Memory {
            memory: Arc::new(memory),
            embedder: embedder.clone(),
            scope: ScopeMode::Global,
            k: 1,
        };
        let calls = 8 * search_slot_count() + 8;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let found = runtime.block_on(async {
            let tasks: Vec<_> = (0..calls)
                .map(|_| {
                    let (source, query) = (source.clone(), Query::image(&query));
                    tokio::spawn(async move { find(&source, &query, 1).await })
                })
                .collect();
            let mut found = Vec::new();
            for t in tasks {
                found.push(t.await.unwrap().unwrap().1);
            }
            found
        });
        assert_eq!(found.len(), calls);
        assert!(found.iter().all(|f| f.candidates[0].rel_path == "a.png"));
        let peak = embedder.peak.load(Ordering::SeqCst);
        assert!(
            (1..=search_slot_count()).contains(&peak),
            "{peak} searches at once with {} slots",
            search_slot_count()
        );
    }
}
