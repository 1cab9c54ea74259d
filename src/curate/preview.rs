//! What the Knowledge Guide would put into the prompt for one question, in each mode.
//!
//! The preview runs the pipeline itself ([`crate::echo::answer`]) against a
//! [`ScriptedBackend`] with the Reference Extractor and the Reasoning Expert
//! switched off, and reads the Knowledge Guide's trace: the snippet shown is the
//! one the pipeline builds, by construction. In `llm` mode the selection needs the
//! model, so the preview shows the request the guide would send it instead.

use std::sync::Arc;

use crate::knowledge::options::OptionMatch;
use serde::Serialize;

use crate::dataset::{DatasetRoot, ImageEntry};
use crate::echo::backend::ScriptedBackend;
use crate::echo::error::PipelineError;
use crate::echo::pipeline::{PipelineContext, PipelineSettings};
use crate::echo::plan::{ExpertSwitches, KnowledgeMode};
use crate::echo::query::Query;
use crate::echo::trace::{ExpertName, ExpertStatus, ExpertTrace};
use crate::jobs::CancelToken;
use crate::knowledge::KnowledgeBase;

/// The modes a preview shows, in the order the pipeline documents them.
pub const PREVIEW_MODES: [KnowledgeMode; 4] = [
    KnowledgeMode::Category,
    KnowledgeMode::Condensed,
    KnowledgeMode::Options,
    KnowledgeMode::Llm,
];

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("question {turn} of {key} does not exist")]
    NoQuestion { key: String, turn: usize },
    #[error("cannot set up the pipeline for the preview: {0}")]
    Pipeline(#[from] PipelineError),
    #[error("the image path {key} is not usable: {message}")]
    Path { key: String, message: String },
}

/// What one mode would send.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ModeOutcome {
    /// The knowledge block exactly as it goes into the prompt.
    Snippet {
        text: String,
        /// Entry names the block is made of.
        entries: Vec<String>,
        /// Options mode: why each entry was picked.
        matches: Option<Vec<OptionMatch>>,
        /// Options mode: no option named a defect, so every entry was kept.
        fallback_all: bool,
    },
    /// `llm` mode: the selection request's text (the candidates the model would see).
    NeedsModel { request_text: String },
    /// The guide could not run (no condensed file, no such category, ...).
    Failed { message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModePreview {
    pub mode: KnowledgeMode,
    pub outcome: ModeOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preview {
    pub key: String,
    pub turn: usize,
    pub question: String,
    pub qtype: String,
    /// The mode the run's settings use for this question's type (`None`: no knowledge).
    pub planned: Option<KnowledgeMode>,
    pub modes: Vec<ModePreview>,
}

/// Previews question `turn` of image `key` in every mode of [`PREVIEW_MODES`],
/// blocking on `runtime` (the caller's; not from one of its tasks).
#[allow(clippy::too_many_arguments)]
pub fn preview_question(
    settings: &PipelineSettings,
    knowledge: Arc<KnowledgeBase>,
    condensed: Option<Arc<KnowledgeBase>>,
    root: &DatasetRoot,
    key: &str,
    entry: &ImageEntry,
    turn: usize,
    runtime: &tokio::runtime::Handle,
) -> Result<Preview, PreviewError> {
    let question = entry
        .conversation
        .get(turn)
        .ok_or_else(|| PreviewError::NoQuestion {
            key: key.to_string(),
            turn,
        })?;
    let planned = PipelineContext::new(settings.clone())?
        .plan(&question.qtype)
        .knowledge
        .filter(|m| *m != KnowledgeMode::Off);
    let query = Query::from_entry(root, key, entry).map_err(|e| PreviewError::Path {
        key: key.to_string(),
        message: e.to_string(),
    })?;
    let mut modes = Vec::new();
    for mode in PREVIEW_MODES {
        let mut s = settings.clone();
        s.knowledge_mode = Some(mode);
        // Only the Knowledge Guide matters here: no memory search, no extra call.
        s.switches = ExpertSwitches {
            anomaly_map: None,
            reference: Some(false),
            knowledge: Some(true),
            reasoning: Some(false),
        };
        s.type_switches.clear();
        s.knowledge_cache_dir = None;
        s.strict = false;
        let mut ctx = PipelineContext::new(s)?.with_knowledge(knowledge.clone());
        if let Some(c) = &condensed {
            ctx = ctx.with_condensed(c.clone());
        }
        let backend = ScriptedBackend::constant("A");
        let result = runtime.block_on(crate::echo::answer(
            &backend,
            &ctx,
            &query,
            question,
            &|_| {},
            &CancelToken::new(),
        ));
        let traces: Vec<ExpertTrace> = match &result {
            Ok(d) => d.traces.clone(),
            Err(e) => e.traces().to_vec(),
        };
        let outcome = match traces.iter().find(|t| t.name == ExpertName::KnowledgeGuide) {
            Some(t) if mode == KnowledgeMode::Llm && t.is_done() => {
                let request_text = backend
                    .requests()
                    .first()
                    .map(|r| r.text())
                    .unwrap_or_default();
                ModeOutcome::NeedsModel { request_text }
            }
            Some(t) => outcome_of(t),
            None => ModeOutcome::Failed {
                message: match result {
                    Err(e) => e.to_string(),
                    Ok(_) => "the pipeline recorded no Knowledge Guide step".into(),
                },
            },
        };
        modes.push(ModePreview { mode, outcome });
    }
    Ok(Preview {
        key: key.to_string(),
        turn,
        question: question.text.clone(),
        qtype: question.qtype.as_str().to_string(),
        planned,
        modes,
    })
}

/// The snippet and selection a Knowledge Guide trace records.
pub fn outcome_of(trace: &ExpertTrace) -> ModeOutcome {
    match &trace.status {
        ExpertStatus::Done => match trace.output.knowledge() {
            Some(k) => ModeOutcome::Snippet {
                text: k.snippet.clone(),
                entries: k.entries.clone(),
                matches: k.matches.clone(),
                fallback_all: k.fallback_all.unwrap_or(false),
            },
            None => ModeOutcome::Failed {
                message: "the Knowledge Guide's trace records no snippet".into(),
            },
        },
        ExpertStatus::Failed { error } => ModeOutcome::Failed {
            message: error.clone(),
        },
        ExpertStatus::Skipped { why } => ModeOutcome::Failed {
            message: format!("skipped: {why}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::MmadDataset;

    #[test]
    fn every_mode_is_previewed() {
        let a = crate::assets_dir().join("sample");
        let ds = MmadDataset::load(&a.join("mmad.json")).unwrap();
        let kb = Arc::new(KnowledgeBase::load(&a.join("domain_knowledge.json")).unwrap());
        let (key, entry) = ds
            .entries
            .iter()
            .find(|(k, _)| k.contains("washer/test/notch"))
            .unwrap();
        let turn = entry
            .conversation
            .iter()
            .position(|q| q.qtype.as_str() == "Defect Classification")
            .unwrap();
        let p = preview_question(
            &PipelineSettings::default(),
            kb.clone(),
            None,
            &DatasetRoot::new(&a),
            key,
            entry,
            turn,
            tokio::runtime::Runtime::new().unwrap().handle(),
        )
        .unwrap();
        assert_eq!(p.planned, Some(KnowledgeMode::Condensed));
        assert_eq!(p.modes.len(), 4);
        let washer = &kb.datasets["Sample"]["washer"];
        match &p.modes[0].outcome {
            ModeOutcome::Snippet { text, entries, .. } => {
                assert_eq!(entries, &washer.keys().cloned().collect::<Vec<_>>());
                assert!(text.contains(washer["good"].as_str()), "{text}");
                assert!(text.contains(washer["notch"].as_str()));
            }
            other => panic!("{other:?}"),
        }
        // No condensed file was given: the guide says so.
        match &p.modes[1].outcome {
            ModeOutcome::Failed { message } => assert!(message.contains("condensed"), "{message}"),
            other => panic!("{other:?}"),
        }
        match &p.modes[2].outcome {
            ModeOutcome::Snippet {
                entries, matches, ..
            } => {
                assert_eq!(entries[0], "good");
                assert!(entries.iter().any(|e| e == "notch"), "{entries:?}");
                assert!(matches.as_ref().is_some_and(|m| !m.is_empty()));
            }
            other => panic!("{other:?}"),
        }
        match &p.modes[3].outcome {
            ModeOutcome::NeedsModel { request_text } => {
                assert!(
                    request_text.contains(washer["stain"].trim()),
                    "{request_text}"
                );
                assert!(request_text.contains(&entry.conversation[turn].text));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            preview_question(
                &PipelineSettings::default(),
                kb,
                None,
                &DatasetRoot::new(&a),
                key,
                entry,
                99,
                tokio::runtime::Runtime::new().unwrap().handle(),
            ),
            Err(PreviewError::NoQuestion { turn: 99, .. })
        ));
    }
}
