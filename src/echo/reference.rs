//! The Reference Extractor: finds the defect-free image(s) the query is compared
//! with, either in a reference memory (Echo) or among MMAD's template lists.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use super::pipeline::{PipelineError, Query};
use super::plan::ScopeMode;
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
) -> Result<(Value, ReferenceFound), PipelineError> {
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
            let input = json!({"source": field, "key": entry.key, "root": entry.root.path(), "images": images});
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
            let input = json!({
                "source": "memory",
                "memory": memory.root,
                "items": memory.len(),
                "embedder": memory.embedder,
                "scope": scope,
                "k": k,
                "rerank": memory.has_thumbs(),
                "images": images,
            });
            let (memory, embedder, image) = (memory.clone(), embedder.clone(), query.image.clone());
            let work = move || search(&memory, embedder.as_ref(), &image, k, &scope);
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
