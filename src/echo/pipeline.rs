//! The Echo pipeline: plan, then Reference Extractor, the anomaly map (only where
//! the preset or the run uses it), Knowledge Guide, Reasoning Expert and Decision
//! Maker (one file each under `experts/`), each leaving an [`ExpertTrace`]. This file only sequences them: events, timings and the failure
//! policy.
//!
//! Failure policy: an expert that cannot do its work leaves a `Failed` trace and the
//! pipeline answers without it (unless [`PipelineSettings::strict`]); a failing
//! Decision Maker is an error that still carries every trace, so a run journal or
//! the GUI can show what happened up to the failure.

use std::time::Instant;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::backend::ChatBackend;
pub use super::context::{PipelineContext, PipelineSettings};
use super::error::PipelineError;
use super::experts::{
    self, AnomalyMapExpert, DecisionMaker, Expert, Findings, KnowledgeGuide, ReasoningExpert,
    ReferenceExtractor, Step, Turn,
};
use super::extract::ExtractMethod;
use super::plan::Plan;
use super::protocol::Sample;
use super::query::Query;
use super::trace::{ExpertName, ExpertStatus, ExpertTrace, TraceOutput};
use crate::dataset::{Question, QuestionType};
use crate::jobs::CancelToken;

/// Sent as each expert starts and finishes, in pipeline order.
// Eight events per question: boxing the trace would cost every consumer a deref
// for no measurable gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum PipelineEvent {
    ExpertStarted(ExpertName),
    ExpertFinished(ExpertTrace),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timings {
    pub total_ms: u64,
    /// Time spent waiting for model calls (all experts together).
    pub mllm_ms: u64,
}

/// The pipeline's answer with everything that led to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub qtype: QuestionType,
    pub letter: Option<String>,
    pub option_text: Option<String>,
    /// The reply exactly as received.
    pub raw: String,
    /// MMAD's `gpt_answer`: the letter, or the raw reply when none was found.
    pub gpt_answer: String,
    /// Against the question's answer, when it has one.
    pub correct: Option<bool>,
    pub method: ExtractMethod,
    /// False for types outside the preset's method (Echo: the object types).
    pub in_scope: bool,
    pub plan: Plan,
    pub traces: Vec<ExpertTrace>,
    pub timings: Timings,
    /// Every reply of the final request when the protocol samples it (empty for
    /// one reply); `letter` is the majority letter of these.
    pub samples: Vec<Sample>,
    /// Share of the samples that gave `letter` (`None` for one reply).
    pub agreement: Option<f64>,
    /// Option letters' probabilities where the answer's reply states it (`None`
    /// unless the protocol asks for logprobs and the server sends them).
    pub letter_probs: Option<IndexMap<String, f64>>,
}

fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
}

/// Answers one question about one image.
///
/// `events` receives `ExpertStarted` and `ExpertFinished` for each expert the plan
/// lists, in order (skipped ones included), as they happen. Never panics on bad
/// input: problems become `Failed` traces or errors.
pub async fn answer(
    backend: &dyn ChatBackend,
    ctx: &PipelineContext,
    query: &Query,
    question: &Question,
    events: &(dyn Fn(PipelineEvent) + Sync),
    cancel: &CancelToken,
) -> Result<Decision, PipelineError> {
    let start = Instant::now();
    let plan = ctx.plan(&question.qtype);
    let set = ctx
        .prompt_set(&plan.prompts)
        .expect("PipelineContext::new loads every set the preset uses");
    let step = Step {
        backend,
        ctx,
        plan: &plan,
        set,
        query,
        question,
        cancel,
    };
    let mut run = Run {
        traces: Vec::new(),
        events,
        strict: ctx.settings().strict,
    };
    let mut found = Findings::default();

    run.turn(ReferenceExtractor, &step, &mut found).await?;
    // Only plans of presets or runs that use the map list it, so Echo's and MMAD's
    // traces have their four experts as before.
    if plan.lists(ExpertName::AnomalyMap) {
        run.turn(AnomalyMapExpert, &step, &mut found).await?;
    }
    // Every later template may name these; a bad options template stops here.
    found.vars = experts::base_vars(set, query, question, found.references.len())?;
    run.turn(KnowledgeGuide, &step, &mut found).await?;
    run.turn(ReasoningExpert, &step, &mut found).await?;
    run.turn(DecisionMaker, &step, &mut found).await?;

    let Some(answer) = found.answer else {
        return Err(PipelineError::Failed {
            message: "the Decision Maker left no answer".into(),
        });
    };
    Ok(Decision {
        qtype: question.qtype.clone(),
        letter: answer.letter,
        option_text: answer.option_text,
        raw: answer.raw,
        gpt_answer: answer.gpt_answer,
        correct: answer.correct,
        method: answer.method,
        samples: answer.samples,
        agreement: answer.agreement,
        letter_probs: answer.letter_probs,
        in_scope: plan.in_scope,
        plan,
        traces: run.traces,
        timings: Timings {
            total_ms: ms_since(start),
            mllm_ms: found.mllm_ms,
        },
    })
}

/// Bookkeeping shared by the experts' turns.
struct Run<'a> {
    traces: Vec<ExpertTrace>,
    events: &'a (dyn Fn(PipelineEvent) + Sync),
    strict: bool,
}

impl Run<'_> {
    /// One expert's turn: its events, its trace, and whether the question goes on.
    async fn turn<E: Expert>(
        &mut self,
        expert: E,
        step: &Step<'_>,
        found: &mut Findings,
    ) -> Result<(), PipelineError> {
        if step.cancel.is_cancelled() {
            return Err(self.cancelled());
        }
        (self.events)(PipelineEvent::ExpertStarted(E::NAME));
        let t = Instant::now();
        let turn = match expert.run(step, found).await {
            Ok(turn) => turn,
            Err(e) if e.is_cancel() => return Err(self.cancelled()),
            Err(e) => return Err(e),
        };
        let (trace, error) = match turn {
            Turn::Done {
                input,
                output,
                summary,
            } => (
                ExpertTrace {
                    name: E::NAME,
                    status: ExpertStatus::Done,
                    input,
                    output,
                    summary,
                    ms: ms_since(t),
                },
                None,
            ),
            Turn::Failed { input, error } => {
                let message = error.to_string();
                let trace = ExpertTrace {
                    name: E::NAME,
                    summary: format!("failed: {message}"),
                    status: ExpertStatus::Failed { error: message },
                    input,
                    output: TraceOutput::None,
                    ms: ms_since(t),
                };
                (trace, Some(error))
            }
            Turn::Skipped => (
                ExpertTrace::skipped(E::NAME, step.plan.step(E::NAME).why.clone()),
                None,
            ),
        };
        (self.events)(PipelineEvent::ExpertFinished(trace.clone()));
        self.traces.push(trace);
        let source = match error {
            Some(error) if E::REQUIRED => error,
            Some(error) if self.strict => PipelineError::Failed {
                message: error.to_string(),
            },
            _ => return Ok(()),
        };
        Err(PipelineError::Expert {
            expert: E::NAME,
            traces: std::mem::take(&mut self.traces),
            source: Box::new(source),
        })
    }

    fn cancelled(&mut self) -> PipelineError {
        PipelineError::Cancelled {
            traces: std::mem::take(&mut self.traces),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;

    /// The GUI and the batch runner spawn `answer` on a multi-threaded runtime.
    #[test]
    fn the_answer_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let ctx = PipelineContext::new(PipelineSettings::default()).unwrap();
        let backend = crate::echo::ScriptedBackend::constant("A");
        let question = Question {
            text: "Is there any defect?".into(),
            answer: String::new(),
            options: IndexMap::new(),
            qtype: QuestionType::AnomalyDetection,
            annotation: None,
        };
        let query = Query::image("x.png");
        let cancel = CancelToken::new();
        let fut = answer(&backend, &ctx, &query, &question, &|_| {}, &cancel);
        assert_send(&fut);
    }

    #[test]
    fn dataset_and_category_from_paths() {
        let q = Query::image("/data/mmad/MVTec-AD/bottle/test/broken_large/000.png");
        assert_eq!(q.dataset.as_deref(), Some("MVTec-AD"));
        assert_eq!(q.category.as_deref(), Some("bottle"));
        let q = Query::image("photo.png");
        assert_eq!((q.dataset, q.category), (None, None));
        let q = Query::image("bottle/test/x.png");
        assert_eq!(
            (q.dataset.as_deref(), q.category.as_deref()),
            (None, Some("bottle"))
        );
    }

    /// Stands in for any expert: the failure policy and the trace stamping live in
    /// `Run::turn`, not in the experts, so a new expert gets them by implementing
    /// `Expert` alone.
    struct Scripted<const REQUIRED: bool> {
        fail: bool,
    }

    impl<const R: bool> Expert for Scripted<R> {
        const NAME: ExpertName = ExpertName::KnowledgeGuide;
        const REQUIRED: bool = R;

        async fn run(&self, _: &Step<'_>, found: &mut Findings) -> Result<Turn, PipelineError> {
            found.knowledge.push_str("seen");
            Ok(if self.fail {
                Turn::Failed {
                    input: crate::echo::trace::TraceInput::None,
                    error: PipelineError::Knowledge {
                        message: "nothing loaded".into(),
                    },
                }
            } else {
                Turn::Skipped
            })
        }
    }

    fn turn_of<const R: bool>(
        strict: bool,
        fail: bool,
    ) -> (
        Result<(), PipelineError>,
        Vec<ExpertTrace>,
        Vec<PipelineEvent>,
    ) {
        let ctx = PipelineContext::new(PipelineSettings::default()).unwrap();
        let plan = ctx.plan(&QuestionType::AnomalyDetection);
        let question = Question {
            text: "Is there any defect?".into(),
            answer: String::new(),
            options: IndexMap::new(),
            qtype: QuestionType::AnomalyDetection,
            annotation: None,
        };
        let backend = crate::echo::ScriptedBackend::constant("A");
        let query = Query::image("x.png");
        let cancel = CancelToken::new();
        let step = Step {
            backend: &backend,
            ctx: &ctx,
            plan: &plan,
            set: ctx.prompt_set(&plan.prompts).unwrap(),
            query: &query,
            question: &question,
            cancel: &cancel,
        };
        let events = std::sync::Mutex::new(Vec::new());
        let record = |e: PipelineEvent| events.lock().unwrap().push(e);
        let mut run = Run {
            traces: Vec::new(),
            events: &record,
            strict,
        };
        let mut found = Findings::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let result = runtime.block_on(run.turn(Scripted::<R> { fail }, &step, &mut found));
        assert_eq!(found.knowledge, "seen");
        let traces = match &result {
            Ok(()) => run.traces,
            Err(e) => e.traces().to_vec(),
        };
        (result, traces, events.into_inner().unwrap())
    }

    #[test]
    fn a_turn_stamps_the_trace_and_applies_the_failure_policy() {
        // Lenient: the failure is recorded and the question goes on.
        let (result, traces, events) = turn_of::<false>(false, true);
        assert!(result.is_ok());
        assert_eq!(traces.len(), 1);
        assert_eq!(traces[0].name, ExpertName::KnowledgeGuide);
        assert_eq!(traces[0].summary, "failed: no knowledge: nothing loaded");
        assert!(traces[0].is_failed() && traces[0].output.is_none());
        assert_eq!(
            events,
            [
                PipelineEvent::ExpertStarted(ExpertName::KnowledgeGuide),
                PipelineEvent::ExpertFinished(traces[0].clone()),
            ]
        );

        // Strict: the same failure stops the question, keeping the trace.
        let (result, traces, _) = turn_of::<false>(true, true);
        match result {
            Err(PipelineError::Expert { expert, source, .. }) => {
                assert_eq!(expert, ExpertName::KnowledgeGuide);
                assert!(matches!(*source, PipelineError::Failed { ref message }
                    if message == "no knowledge: nothing loaded"));
            }
            other => panic!("{other:?}"),
        }
        assert!(traces[0].is_failed());

        // A required expert stops even a lenient run, with its own error as cause.
        let (result, _, _) = turn_of::<true>(false, true);
        assert!(matches!(
            result,
            Err(PipelineError::Expert { ref source, .. })
                if matches!(**source, PipelineError::Knowledge { .. })
        ));

        // Skipped: the plan's reason becomes the trace.
        let (result, traces, _) = turn_of::<false>(true, false);
        assert!(result.is_ok());
        let ctx = PipelineContext::new(PipelineSettings::default()).unwrap();
        let plan = ctx.plan(&QuestionType::AnomalyDetection);
        let why = &plan.step(ExpertName::KnowledgeGuide).why;
        assert_eq!(
            traces,
            [ExpertTrace::skipped(
                ExpertName::KnowledgeGuide,
                why.clone()
            )]
        );
    }
}
