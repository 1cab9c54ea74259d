//! Why the pipeline could not answer. Its own file so that the experts (the
//! Reference Extractor, the chat backend) and the pipeline that sequences them all
//! name it without importing each other.

use super::plan::PlanError;
use super::prompt::TemplateError;
use super::trace::{ExpertName, ExpertTrace};
use crate::mllm::MllmError;

/// Why the pipeline could not answer.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The model call failed. The client's error is kept whole (URL, HTTP status,
    /// whether a retry could help) so that the runner and the app can tell one
    /// failure from another; its message is the one recorded, unchanged.
    #[error(transparent)]
    Mllm(#[from] MllmError),
    /// The model run in-process failed (its folder, inputs or forward pass);
    /// boxed, as its paths would double the size of every result here.
    #[error(transparent)]
    Local(Box<crate::local::LocalError>),
    /// A backend without a client (a scripted one) failed; the message is its own.
    #[error("{message}")]
    Backend { message: String },
    #[error("the question was cancelled")]
    Cancelled { traces: Vec<ExpertTrace> },
    /// An expert failed and the pipeline stopped (always for the Decision Maker).
    #[error("the {expert} failed")]
    Expert {
        expert: ExpertName,
        traces: Vec<ExpertTrace>,
        #[source]
        source: Box<PipelineError>,
    },
    #[error("no reference: {message}")]
    Reference { message: String },
    #[error("no knowledge: {message}")]
    Knowledge { message: String },
    #[error("no anomaly map: {message}")]
    AnomalyMap { message: String },
    #[error("the model returned an empty reply")]
    EmptyReply,
    /// An expert's own failure, as its trace recorded it (strict runs stop on it).
    #[error("{message}")]
    Failed { message: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("the reference memory does not fit the embedder: {0}")]
    Memory(#[source] crate::memory::MemoryError),
}

impl From<crate::local::LocalError> for PipelineError {
    fn from(e: crate::local::LocalError) -> Self {
        PipelineError::Local(Box::new(e))
    }
}

impl PipelineError {
    /// The traces recorded before the failure (empty for setup errors).
    pub fn traces(&self) -> &[ExpertTrace] {
        match self {
            PipelineError::Cancelled { traces } | PipelineError::Expert { traces, .. } => traces,
            _ => &[],
        }
    }

    /// The model call's own error, when a model call is what failed (through the
    /// expert that made it).
    pub fn mllm(&self) -> Option<&MllmError> {
        match self {
            PipelineError::Mllm(e) => Some(e),
            PipelineError::Expert { source, .. } => source.mllm(),
            _ => None,
        }
    }

    pub(crate) fn is_cancel(&self) -> bool {
        matches!(self, PipelineError::Cancelled { .. })
    }
}
