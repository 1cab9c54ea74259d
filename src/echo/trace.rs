//! What every expert leaves behind. Traces are the product: the GUI shows them,
//! runs store them in their journal and exports carry them, so they hold the real
//! inputs and outputs (paths, scores, the exact prompt text, the raw reply), not a
//! paraphrase.

use serde::{Deserialize, Serialize};

/// The four experts of Echo, in the order the pipeline runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpertName {
    ReferenceExtractor,
    KnowledgeGuide,
    ReasoningExpert,
    DecisionMaker,
}

impl ExpertName {
    /// All experts in pipeline order.
    pub const ALL: [ExpertName; 4] = [
        ExpertName::ReferenceExtractor,
        ExpertName::KnowledgeGuide,
        ExpertName::ReasoningExpert,
        ExpertName::DecisionMaker,
    ];

    /// The name people read (`Reference Extractor`).
    pub fn label(self) -> &'static str {
        match self {
            ExpertName::ReferenceExtractor => "Reference Extractor",
            ExpertName::KnowledgeGuide => "Knowledge Guide",
            ExpertName::ReasoningExpert => "Reasoning Expert",
            ExpertName::DecisionMaker => "Decision Maker",
        }
    }

    /// The serialised name (`reference_extractor`).
    pub fn key(self) -> &'static str {
        match self {
            ExpertName::ReferenceExtractor => "reference_extractor",
            ExpertName::KnowledgeGuide => "knowledge_guide",
            ExpertName::ReasoningExpert => "reasoning_expert",
            ExpertName::DecisionMaker => "decision_maker",
        }
    }
}

impl std::fmt::Display for ExpertName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// How an expert's turn ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ExpertStatus {
    Done,
    /// The plan left it out (table, switch or mode); `why` says which.
    Skipped {
        why: String,
    },
    /// It was planned but could not do its work; the pipeline went on without it
    /// (or, for the Decision Maker, returned an error carrying all traces).
    Failed {
        error: String,
    },
}

/// One expert's record for one question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpertTrace {
    pub name: ExpertName,
    pub status: ExpertStatus,
    /// What it worked from (settings, paths, the request it sent).
    pub input: serde_json::Value,
    /// What it produced (`null` when skipped).
    pub output: serde_json::Value,
    /// One line for people.
    pub summary: String,
    /// Wall time of this expert, model calls included.
    pub ms: u64,
}

impl ExpertTrace {
    pub(crate) fn skipped(name: ExpertName, why: impl Into<String>) -> Self {
        let why = why.into();
        ExpertTrace {
            name,
            summary: format!("skipped: {why}"),
            status: ExpertStatus::Skipped { why },
            input: serde_json::Value::Null,
            output: serde_json::Value::Null,
            ms: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.status == ExpertStatus::Done
    }

    pub fn is_failed(&self) -> bool {
        matches!(self.status, ExpertStatus::Failed { .. })
    }
}
