//! The experts, one file each, behind one signature: [`Expert::run`] receives the
//! question with everything set up for it ([`Step`]) and what the experts before
//! it produced ([`Findings`]), records its own product there for the experts after
//! it, and returns its [`Turn`]: the typed input and output its trace keeps (or why
//! it failed, or that the plan left it out). `pipeline::answer` only sequences them,
//! sends the events, stamps each trace with its name and time, and applies the
//! failure policy.
//!
//! Adding an expert (as issue 18's anomaly map was added) takes:
//!
//! 1. a file here with a unit struct implementing [`Expert`]: `NAME`, whether its
//!    failure stops the question (`REQUIRED`), and `run`, which returns
//!    `Turn::Skipped` when the plan leaves it out, reads what it needs from `Step`
//!    and `Findings`, and adds its product to a new `Findings` field;
//! 2. a variant of `ExpertName` (its label, key and place in `ALL`) in
//!    `echo/plan.rs`, and in `echo/trace.rs` its input and output types (as the
//!    journal will store them) with a `TraceInput` / `TraceOutput` variant each;
//! 3. a column in `assets/experts.toml` (`anomaly_map = true` in a row), read as a
//!    `TypeRow` field and turned into the plan's `PlannedStep` by `plan::resolve`;
//! 4. one `run.turn(AnomalyMap, ..)` line in `pipeline::answer`, where it belongs in
//!    the order.
//!
//! The compiler then lists the matches on `ExpertName` that need an arm: reading a
//! stored trace (`trace.rs`), the trace view's card (`ui/trace_view.rs`, where
//! `raw_body` shows any trace as its JSON) and `inspect`'s text output.

pub mod anomaly_map;
pub mod decision;
pub mod knowledge_guide;
pub mod reasoning;
pub mod reference;

use std::path::PathBuf;

use super::backend::ChatBackend;
use super::context::PipelineContext;
use super::error::PipelineError;
use super::plan::Plan;
use super::prompt::{PromptSet, Segment, TemplateError, Vars, human_name};
use super::query::Query;
use super::trace::{ExpertName, TraceInput, TraceOutput};
use crate::dataset::Question;
use crate::jobs::CancelToken;

pub use anomaly_map::AnomalyMapExpert;
pub use decision::DecisionMaker;
pub use knowledge_guide::KnowledgeGuide;
pub use reasoning::ReasoningExpert;
pub use reference::ReferenceExtractor;

/// One question with everything set up for it; the same for every expert.
pub struct Step<'a> {
    pub backend: &'a dyn ChatBackend,
    pub ctx: &'a PipelineContext,
    pub plan: &'a Plan,
    /// The prompt set the plan names.
    pub set: &'a PromptSet,
    pub query: &'a Query,
    pub question: &'a Question,
    pub cancel: &'a CancelToken,
}

/// What the experts so far produced, for the ones after them.
#[derive(Debug, Default)]
pub struct Findings {
    /// Reference Extractor: the images sent to the model, best first.
    pub references: Vec<PathBuf>,
    /// Values every template may use; set once the references are known.
    pub vars: Vars,
    /// Anomaly map: what the Decision Maker gets from it.
    pub map: Option<anomaly_map::MapFinding>,
    /// Knowledge Guide: the knowledge block (empty without one).
    pub knowledge: String,
    /// Reasoning Expert: the reasoning block (empty without one).
    pub reasoning: Vec<Segment>,
    /// Whether the Reasoning Expert did its work (the Decision Maker warns when the
    /// template leaves its block out).
    pub reasoning_done: bool,
    /// Decision Maker: the answer.
    pub answer: Option<decision::Answer>,
    /// Time spent waiting for model calls, all experts together.
    pub mllm_ms: u64,
}

/// How an expert's turn ended.
#[derive(Debug)]
pub enum Turn {
    Done {
        input: TraceInput,
        output: TraceOutput,
        summary: String,
    },
    /// It could not do its work; `input` is what it had got to.
    Failed {
        input: TraceInput,
        error: PipelineError,
    },
    /// The plan leaves it out for this question.
    Skipped,
}

/// The one signature every expert implements.
///
/// An `Err` stops the question at once: a cancellation (any error for which
/// cancelling is the cause), never a failure of the expert's own work, which is a
/// [`Turn::Failed`].
pub trait Expert {
    const NAME: ExpertName;
    /// A failure stops the question even in a lenient run (the Decision Maker).
    const REQUIRED: bool = false;

    #[allow(async_fn_in_trait)] // Called with static dispatch only; `answer` stays Send.
    async fn run(&self, step: &Step<'_>, found: &mut Findings) -> Result<Turn, PipelineError>;
}

/// Values every template may use; `k` is the number of references sent.
pub(crate) fn base_vars(
    set: &PromptSet,
    query: &Query,
    question: &Question,
    k: usize,
) -> Result<Vars, TemplateError> {
    let mut v = Vars::default();
    let category = query
        .category
        .as_deref()
        .map(human_name)
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "product".into());
    v.set("question", question.text.trim())
        .set("options", set.options_text(&question.options)?)
        .set(
            "letters",
            question
                .options
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        )
        .set("category", category)
        .set("dataset", query.dataset.clone().unwrap_or_default())
        .set("type", question.qtype.as_str())
        .set("k", k.to_string());
    Ok(v)
}
