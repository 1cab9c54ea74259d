//! The Echo pipeline: decision planning, the four experts (Reference Extractor,
//! Knowledge Guide, Reasoning Expert, Decision Maker) and the anomaly map that
//! presets such as `echo+map` add, prompt templates and reading the chosen option
//! from a reply.

pub mod difflib;
pub mod extract;

pub use extract::{ExtractMethod, ExtractMode, Extraction, extract_answer};

pub mod backend;
pub mod classify;
pub mod context;
pub mod error;
pub mod experts;
pub mod guide;
pub mod local_backend;
pub mod pipeline;
pub mod plan;
pub mod preflight;
pub mod prompt;
pub mod protocol;
pub mod protocol_answer;
pub mod query;
pub mod reference;
pub mod request;
pub mod setup;
pub mod trace;

pub use backend::{ChatBackend, MllmBackend, ScriptedBackend};
pub use classify::classify_question;
pub use error::PipelineError;
pub use local_backend::LocalBackend;
pub use pipeline::{Decision, PipelineContext, PipelineEvent, PipelineSettings, answer};
pub use plan::{
    ExpertSwitches, ExpertTable, KnowledgeMode, Plan, ReasoningMode, ReferenceKind, ScopeMode,
};
pub use protocol::{Protocol, ProtocolError};
pub use protocol_answer::{ProtocolAnswer, answer_protocol};
pub use query::{Query, QueryEntry};
pub use trace::{ExpertName, ExpertStatus, ExpertTrace};
