//! The Reasoning Expert: the reasoning block of the final prompt, either Echo's
//! inline three-step scaffold or the observations of a separate model call that
//! looks at the images first.

use super::{Expert, Findings, Step, Turn};
use crate::echo::error::PipelineError;
use crate::echo::plan::ReasoningMode;
use crate::echo::prompt::{names, text_of};
use crate::echo::request::build_request;
use crate::echo::trace::{ExpertName, ReasoningInput, ReasoningOutput, TraceInput, TraceOutput};

pub struct ReasoningExpert;

impl Expert for ReasoningExpert {
    const NAME: ExpertName = ExpertName::ReasoningExpert;

    async fn run(&self, step: &Step<'_>, found: &mut Findings) -> Result<Turn, PipelineError> {
        let turn = match step.plan.reasoning {
            Some(ReasoningMode::Inline) => inline(step, found),
            Some(ReasoningMode::Separate) => separate(step, found).await?,
            Some(ReasoningMode::Off) | None => Turn::Skipped,
        };
        found.reasoning_done = matches!(turn, Turn::Done { .. });
        Ok(turn)
    }
}

fn inline(step: &Step<'_>, found: &mut Findings) -> Turn {
    match step.set.render(names::SCAFFOLD, &found.vars) {
        Ok(segments) => {
            let text = text_of(&segments);
            found.reasoning = segments;
            Turn::Done {
                input: TraceInput::from(ReasoningInput::Inline {
                    template: Some(names::SCAFFOLD.to_string()),
                }),
                summary: format!(
                    "inline three-step scaffold ({} characters)",
                    text.chars().count()
                ),
                output: TraceOutput::from(ReasoningOutput::Inline { text }),
            }
        }
        Err(e) => Turn::Failed {
            input: TraceInput::from(ReasoningInput::Inline { template: None }),
            error: e.into(),
        },
    }
}

/// The separate call; only a cancellation is an `Err`.
async fn separate(step: &Step<'_>, found: &mut Findings) -> Result<Turn, PipelineError> {
    let (input, output, observations, latency_ms) = match call(step, found).await {
        Ok(done) => done,
        Err(e) if e.is_cancel() => return Err(e),
        Err(error) => {
            return Ok(Turn::Failed {
                input: TraceInput::from(ReasoningInput::Separate { request: None }),
                error,
            });
        }
    };
    found.mllm_ms += latency_ms;
    let mut v = found.vars.clone();
    v.set("observations", observations.as_str());
    let input = TraceInput::from(input);
    Ok(match step.set.render(names::OBSERVATIONS, &v) {
        Ok(segments) => {
            found.reasoning = segments;
            Turn::Done {
                input,
                summary: format!(
                    "separate call: {} characters of observations",
                    observations.chars().count()
                ),
                output: TraceOutput::from(output),
            }
        }
        Err(e) => Turn::Failed {
            input,
            error: e.into(),
        },
    })
}

/// Asks the model to look at the images and describe what it sees; returns the
/// trace's input and output, the observations and the call's latency.
async fn call(
    step: &Step<'_>,
    found: &Findings,
) -> Result<(ReasoningInput, ReasoningOutput, String, u64), PipelineError> {
    let set = step.set;
    let mut v = found.vars.clone();
    if !found.references.is_empty() {
        let mut rv = found.vars.clone();
        rv.reference_images = found.references.len();
        rv.query_image = true;
        v.set_segments("reference", set.render(names::REFERENCE, &rv)?);
    }
    let built = build_request(
        set,
        names::REASONING_CALL,
        &v,
        &found.references,
        &step.query.image,
        true,
    )?;
    let input = ReasoningInput::Separate {
        request: Some(built.summary),
    };
    let reply = step.backend.chat(&built.request, step.cancel).await?;
    let observations = reply.text.trim().to_string();
    if observations.is_empty() {
        return Err(PipelineError::EmptyReply);
    }
    let latency_ms = reply.latency_ms;
    let output = ReasoningOutput::Separate {
        observations: observations.clone(),
        raw: reply.text,
        latency_ms: reply.latency_ms,
        attempts: reply.attempts,
        request_summary: reply.request_summary,
    };
    Ok((input, output, observations, latency_ms))
}
