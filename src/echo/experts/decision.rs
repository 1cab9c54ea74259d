//! The Decision Maker: fills the earlier experts' blocks into the question type's
//! main template, sends the final request and reads the chosen option from the
//! reply. Its failure stops the question (there is no answer without it).

use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use super::{Expert, Findings, Step, Turn};
use crate::echo::error::PipelineError;
use crate::echo::extract::{ExtractMethod, extract_answer};
use crate::echo::prompt::{PromptSet, Segment, TemplateError, Vars, names};
use crate::echo::protocol::{Sample, letter_probs, majority};
use crate::echo::request::{BuiltRequest, build_request};
use crate::echo::trace::{
    DecisionInput, DecisionOutput, ExpertName, ImageRole, PromptPart, TraceInput, TraceOutput,
};
use crate::mllm::Part;

pub struct DecisionMaker;

/// The option the reply chose, and against the question's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub letter: Option<String>,
    pub option_text: Option<String>,
    /// The reply exactly as received.
    pub raw: String,
    /// MMAD's `gpt_answer`: the letter, or the raw reply when none was found.
    pub gpt_answer: String,
    pub correct: Option<bool>,
    pub method: ExtractMethod,
    /// Every reply when the protocol samples (empty for one reply).
    pub samples: Vec<Sample>,
    /// Share of the samples that gave the answer's letter (`None` for one reply).
    pub agreement: Option<f64>,
    /// Option letters' probabilities in the answer's reply, when asked for and sent.
    pub letter_probs: Option<IndexMap<String, f64>>,
}

impl Expert for DecisionMaker {
    const NAME: ExpertName = ExpertName::DecisionMaker;
    const REQUIRED: bool = true;

    async fn run(&self, step: &Step<'_>, found: &mut Findings) -> Result<Turn, PipelineError> {
        let Step {
            backend,
            ctx,
            plan,
            set,
            query,
            question,
            cancel,
        } = *step;
        let built = decision_request(
            set,
            &plan.template,
            std::mem::take(&mut found.vars),
            &found.knowledge,
            std::mem::take(&mut found.reasoning),
            &found.references,
            &query.image,
        );
        let built = match built {
            Ok(mut b) => {
                if let Some(map) = found.map.take() {
                    add_map(&mut b, map, &query.image);
                }
                b
            }
            Err(e) => {
                return Ok(Turn::Failed {
                    input: TraceInput::from(DecisionInput {
                        template: Some(plan.template.clone()),
                        request: None,
                        warnings: Vec::new(),
                    }),
                    error: e.into(),
                });
            }
        };
        let mut warnings = Vec::new();
        for (block, on) in [
            ("knowledge", !found.knowledge.is_empty()),
            ("reasoning", found.reasoning_done),
        ] {
            if on && !set.template_uses(&plan.template, block) {
                warnings.push(format!(
                    "the template `{}/{}` has no `{{{block}}}`: that expert's output is not sent",
                    set.name, plan.template
                ));
            }
        }
        let input = TraceInput::from(DecisionInput {
            template: None,
            request: Some(built.summary),
            warnings,
        });
        // A protocol's samples repeat only this request; the experts before ran once.
        let protocol = ctx.protocol();
        let n = protocol.samples.max(1);
        let mut replies = Vec::with_capacity(n as usize);
        for i in 0..n {
            let mut request = built.request.clone();
            request.decoding = protocol.decoding(i);
            let reply = match backend.chat(&request, cancel).await {
                Ok(r) => r,
                Err(e) if e.is_cancel() || cancel.is_cancelled() => {
                    return Err(PipelineError::Cancelled { traces: Vec::new() });
                }
                Err(error) => return Ok(Turn::Failed { input, error }),
            };
            found.mllm_ms += reply.latency_ms;
            let extraction = extract_answer(&reply.text, &question.options, ctx.settings().extract);
            replies.push((reply, extraction));
        }
        let (chosen, agreement) = if n > 1 {
            let top = majority(replies.iter().map(|(_, e)| e.letter.as_deref()));
            let count = top.as_ref().map_or(0, |(_, c)| *c);
            let first = top
                .and_then(|(l, _)| {
                    replies
                        .iter()
                        .position(|(_, e)| e.letter.as_deref() == Some(l.as_str()))
                })
                .unwrap_or(0);
            (first, Some(count as f64 / f64::from(n)))
        } else {
            (0, None)
        };
        let samples: Vec<Sample> = if n > 1 {
            replies
                .iter()
                .map(|(r, e)| Sample {
                    raw: r.text.clone(),
                    letter: e.letter.clone(),
                })
                .collect()
        } else {
            Vec::new()
        };
        let (reply, extraction) = replies.swap_remove(chosen);
        let letter_probs = if protocol.logprobs {
            let letters: Vec<String> = question.options.keys().cloned().collect();
            reply
                .logprobs
                .as_deref()
                .and_then(|tokens| letter_probs(tokens, &letters))
        } else {
            None
        };
        let option_text = extraction
            .letter
            .as_ref()
            .and_then(|l| question.options.get(l))
            .cloned();
        let has_truth = !question.answer.trim().is_empty();
        let correct =
            has_truth.then(|| extraction.letter.as_deref() == Some(question.answer.trim()));
        let summary = match (&extraction.letter, &option_text) {
            (Some(l), Some(text)) => format!("answered {l} ({text})"),
            (Some(l), None) => format!("answered {l}"),
            (None, _) => "no option letter found in the reply".into(),
        } + match correct {
            Some(true) => ", correct",
            Some(false) => ", wrong",
            None => "",
        };
        let output = DecisionOutput {
            raw: reply.text.clone(),
            letter: extraction.letter.clone(),
            option_text: option_text.clone(),
            gpt_answer: extraction.answer.clone(),
            method: extraction.method.clone(),
            correct,
            latency_ms: reply.latency_ms,
            attempts: reply.attempts,
            finish_reason: reply.finish_reason,
            reasoning: reply.reasoning,
            request_summary: reply.request_summary,
        };
        found.answer = Some(Answer {
            letter: extraction.letter,
            option_text,
            raw: reply.text,
            gpt_answer: extraction.answer,
            correct,
            method: extraction.method,
            samples,
            agreement,
            letter_probs,
        });
        Ok(Turn::Done {
            input,
            output: TraceOutput::from(output),
            summary,
        })
    }
}

/// Puts what the anomaly map found right after the query image: the templates are
/// Echo's and MMAD's own, with no place for it, and next to the query is where a
/// model reads it as being about the query. The picture first, then the sentence
/// that explains it.
fn add_map(built: &mut BuiltRequest, map: super::anomaly_map::MapFinding, query: &Path) {
    let after_query = |parts: &[PromptPart]| {
        parts
            .iter()
            .position(|p| {
                matches!(
                    p,
                    PromptPart::Image {
                        image: ImageRole::Query,
                        ..
                    }
                )
            })
            .map_or(parts.len(), |i| i + 1)
    };
    let at = after_query(&built.summary.parts);
    let mut described = Vec::new();
    let mut parts = Vec::new();
    if let Some((name, bytes)) = map.picture {
        let text = format!("\nThe anomaly map's view ({name}):\n");
        described.push(PromptPart::Text { text: text.clone() });
        parts.push(Part::Text(text));
        described.push(PromptPart::Image {
            image: ImageRole::AnomalyMap,
            index: None,
            path: query.to_path_buf(),
        });
        parts.push(Part::Generated { name, bytes });
    }
    if let Some(hint) = map.hint {
        let text = format!("\nAn anomaly map comparing the query with normal samples: {hint}\n");
        described.push(PromptPart::Text { text: text.clone() });
        parts.push(Part::Text(text));
    }
    // The request's parts follow the description's one for one.
    built.summary.parts.splice(at..at, described);
    built.request.parts.splice(at..at, parts);
}

/// Fills the blocks into the main template and places the images.
fn decision_request(
    set: &PromptSet,
    template: &str,
    mut vars: Vars,
    knowledge: &str,
    reasoning: Vec<Segment>,
    references: &[PathBuf],
    query: &Path,
) -> Result<BuiltRequest, TemplateError> {
    vars.set("knowledge", knowledge);
    vars.set_segments("reasoning", reasoning);
    let reference = if references.is_empty() {
        Vec::new()
    } else {
        let mut v = vars.clone();
        v.reference_images = references.len();
        v.query_image = true;
        set.render(names::REFERENCE, &v)?
    };
    vars.set_segments("reference", reference);
    let instruction = set.render(names::INSTRUCTION, &vars)?;
    vars.set_segments("instruction", instruction);
    build_request(set, template, &vars, references, query, true)
}
