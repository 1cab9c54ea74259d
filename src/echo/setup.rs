//! Building a [`PipelineContext`] from files: knowledge base, Echo's condensed
//! knowledge and a reference memory with its embedder. `inspect` and batch runs
//! set up the pipeline the same way through [`load_context`], and a run records
//! what was loaded ([`LoadedContext`]) in its manifest.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::PipelineError;
use super::pipeline::{PipelineContext, PipelineSettings};
use crate::knowledge::{KnowledgeBase, KnowledgeError};
use crate::memory::{MemoryError, ReferenceMemory};
use crate::vision::ImageEmbedder;
use crate::vision::spec::{EmbedderSpec, SpecError};

/// Where the context's data comes from; `None` knowledge files mean the bundled
/// ones when they exist (and load), no memory means none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContextSources {
    pub knowledge: Option<PathBuf>,
    pub condensed: Option<PathBuf>,
    pub memory: Option<PathBuf>,
    /// Overrides the embedder recorded in the memory.
    pub embedder: Option<EmbedderSpec>,
}

/// A knowledge file in use and its content hash (the version).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedKnowledge {
    pub path: PathBuf,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoadedMemory {
    pub path: PathBuf,
    /// The embedder's id (what the vectors mean).
    pub embedder: String,
    pub items: usize,
}

/// The context and what went into it.
#[derive(Debug)]
pub struct LoadedContext {
    pub context: PipelineContext,
    pub knowledge: Option<LoadedKnowledge>,
    pub condensed: Option<LoadedKnowledge>,
    pub memory: Option<LoadedMemory>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("loading the {what}: {source}")]
    Knowledge {
        what: &'static str,
        #[source]
        source: KnowledgeError,
    },
    #[error("loading the reference memory {}: {source}", path.display())]
    Memory {
        path: PathBuf,
        #[source]
        source: MemoryError,
    },
    #[error("{} does not say how to load its embedder ({source}); pass the embedder explicitly", path.display())]
    EmbedderSpec {
        path: PathBuf,
        #[source]
        source: Box<SpecError>,
    },
    #[error("loading the embedder for {}: {source}", path.display())]
    Embedder {
        path: PathBuf,
        #[source]
        source: Box<SpecError>,
    },
}

/// The bundled knowledge base and condensed knowledge files.
pub fn bundled_knowledge_files() -> (PathBuf, PathBuf) {
    let kb = crate::bundled_knowledge_path();
    let condensed = kb.with_file_name("condensed.json");
    (kb, condensed)
}

fn load_kb(
    explicit: Option<&Path>,
    bundled: PathBuf,
    what: &'static str,
) -> Result<Option<(Arc<KnowledgeBase>, LoadedKnowledge)>, SetupError> {
    let loaded = |path: PathBuf, kb: KnowledgeBase| {
        let version = kb.content_hash();
        (Arc::new(kb), LoadedKnowledge { path, version })
    };
    match explicit {
        Some(p) => {
            let kb =
                KnowledgeBase::load(p).map_err(|source| SetupError::Knowledge { what, source })?;
            Ok(Some(loaded(p.to_path_buf(), kb)))
        }
        // The bundled file is a convenience: without it (or if it is damaged) the
        // Knowledge Guide reports the missing knowledge in its trace.
        None if bundled.is_file() => Ok(KnowledgeBase::load(&bundled)
            .ok()
            .map(|kb| loaded(bundled, kb))),
        None => Ok(None),
    }
}

/// Loads the experts table and prompts for `settings`, then the knowledge files and
/// the memory (with its embedder) named by `sources`.
pub fn load_context(
    settings: PipelineSettings,
    sources: &ContextSources,
) -> Result<LoadedContext, SetupError> {
    let mut ctx = PipelineContext::new(settings)?;
    let (kb_default, condensed_default) = bundled_knowledge_files();
    let knowledge = match load_kb(sources.knowledge.as_deref(), kb_default, "knowledge base")? {
        Some((kb, info)) => {
            ctx = ctx.with_knowledge(kb);
            Some(info)
        }
        None => None,
    };
    let condensed = match load_kb(
        sources.condensed.as_deref(),
        condensed_default,
        "condensed knowledge",
    )? {
        Some((kb, info)) => {
            ctx = ctx.with_condensed(kb);
            Some(info)
        }
        None => None,
    };
    let memory =
        match &sources.memory {
            Some(dir) => {
                let memory = ReferenceMemory::load(dir).map_err(|source| SetupError::Memory {
                    path: dir.clone(),
                    source,
                })?;
                let spec =
                    match &sources.embedder {
                        Some(s) => s.clone(),
                        None => memory.embedder_spec.parse().map_err(|source| {
                            SetupError::EmbedderSpec {
                                path: dir.clone(),
                                source: Box::new(source),
                            }
                        })?,
                    };
                let embedder: Arc<dyn ImageEmbedder> =
                    Arc::from(spec.load().map_err(|source| SetupError::Embedder {
                        path: dir.clone(),
                        source: Box::new(source),
                    })?);
                let info = LoadedMemory {
                    path: dir.clone(),
                    embedder: memory.embedder.clone(),
                    items: memory.len(),
                };
                ctx = ctx.with_memory(Arc::new(memory), embedder)?;
                Some(info)
            }
            None => None,
        };
    Ok(LoadedContext {
        context: ctx,
        knowledge,
        condensed,
        memory,
    })
}

/// A reference memory already loaded, with the embedder its vectors were made by.
#[derive(Clone)]
pub struct HeldMemory {
    pub memory: Arc<ReferenceMemory>,
    pub embedder: Arc<dyn ImageEmbedder>,
}

/// What a caller already holds in memory instead of files: the app loads its
/// knowledge base and reference memory once (a CLIP memory takes seconds) and
/// keeps them, so each question must not read them again.
#[derive(Clone, Default)]
pub struct HeldParts {
    /// `None`: no knowledge base (the Knowledge Guide's trace says so).
    pub knowledge: Option<Arc<KnowledgeBase>>,
    pub memory: Option<HeldMemory>,
}

/// [`load_context`] for a caller holding the knowledge base and memory: the
/// experts table and prompts for `settings`, and the condensed knowledge (the
/// file named, else the bundled one when it loads) come about the same way.
pub fn context_with(
    settings: PipelineSettings,
    condensed: Option<&Path>,
    held: HeldParts,
) -> Result<PipelineContext, SetupError> {
    let mut ctx = PipelineContext::new(settings)?;
    if let Some(kb) = held.knowledge {
        ctx = ctx.with_knowledge(kb);
    }
    let (_, condensed_default) = bundled_knowledge_files();
    if let Some((kb, _)) = load_kb(condensed, condensed_default, "condensed knowledge")? {
        ctx = ctx.with_condensed(kb);
    }
    if let Some(m) = held.memory {
        ctx = ctx.with_memory(m.memory, m.embedder)?;
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_files_must_load_and_are_recorded_with_their_version() {
        let sample = crate::assets_dir().join("sample/domain_knowledge.json");
        let loaded = load_context(
            PipelineSettings::default(),
            &ContextSources {
                knowledge: Some(sample.clone()),
                ..ContextSources::default()
            },
        )
        .unwrap();
        let k = loaded.knowledge.unwrap();
        assert_eq!(k.path, sample);
        assert_eq!(
            k.version,
            KnowledgeBase::load(&sample).unwrap().content_hash()
        );
        assert!(loaded.memory.is_none());

        let err = load_context(
            PipelineSettings::default(),
            &ContextSources {
                knowledge: Some("no/such/knowledge.json".into()),
                ..ContextSources::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("knowledge base"), "{err}");
        let err = load_context(
            PipelineSettings::default(),
            &ContextSources {
                memory: Some("no/such/memory".into()),
                ..ContextSources::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("no/such/memory"), "{err}");
    }

    #[test]
    fn held_parts_are_taken_as_they_are_and_a_named_condensed_file_must_load() {
        let sample = crate::assets_dir().join("sample/domain_knowledge.json");
        let kb = Arc::new(KnowledgeBase::load(&sample).unwrap());
        let held = HeldParts {
            knowledge: Some(kb.clone()),
            memory: None,
        };
        let ctx = context_with(PipelineSettings::default(), Some(&sample), held.clone()).unwrap();
        let shown = format!("{ctx:?}");
        assert!(shown.contains(&kb.content_hash()), "{shown}");
        assert!(!shown.contains("memory: Some"), "{shown}");

        let err = context_with(
            PipelineSettings::default(),
            Some(Path::new("no/such/condensed.json")),
            held,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                SetupError::Knowledge {
                    what: "condensed knowledge",
                    ..
                }
            ),
            "{err}"
        );
    }
}
