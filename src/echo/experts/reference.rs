//! The Reference Extractor's turn: the defect-free image(s) the query is compared
//! with. The search itself (memory or MMAD's template lists) is `echo::reference`.

use super::{Expert, Findings, Step, Turn};
use crate::echo::error::PipelineError;
use crate::echo::plan::ReferenceKind;
use crate::echo::reference::{self, ReferenceFound};
use crate::echo::trace::{
    CandidateTrace, ExpertName, ReferenceInput, ReferenceOutput, TraceInput, TraceOutput,
};

pub struct ReferenceExtractor;

impl Expert for ReferenceExtractor {
    const NAME: ExpertName = ExpertName::ReferenceExtractor;

    async fn run(&self, step: &Step<'_>, found: &mut Findings) -> Result<Turn, PipelineError> {
        let Some(kind) = step.plan.reference else {
            return Ok(Turn::Skipped);
        };
        if kind == ReferenceKind::Memory && !step.ctx.has_memory() {
            return Ok(Turn::Failed {
                input: source_only("memory".into()),
                error: PipelineError::Reference {
                    message: "the preset searches a reference memory but none is loaded (build \
                              one with `memory build`, or use MMAD's templates)"
                        .into(),
                },
            });
        }
        let source = step.ctx.reference_source();
        let images = step.ctx.settings().reference_images;
        Ok(match reference::find(&source, step.query, images).await {
            Ok((input, hits)) => {
                found.references = hits.images();
                Turn::Done {
                    input: TraceInput::from(input),
                    output: TraceOutput::from(output_of(&hits)),
                    summary: hits.summary(),
                }
            }
            Err(error) => Turn::Failed {
                input: source_only(source.describe()),
                error,
            },
        })
    }
}

fn source_only(source: String) -> TraceInput {
    TraceInput::from(ReferenceInput::Source { source })
}

/// The trace's record of what was found.
pub fn output_of(found: &ReferenceFound) -> ReferenceOutput {
    ReferenceOutput {
        source: found.source.clone(),
        candidates: found
            .candidates
            .iter()
            .map(|c| CandidateTrace {
                path: c.path.clone(),
                rel_path: c.rel_path.clone(),
                category: c.category.clone(),
                score: c.score.map(f64::from),
                rerank_score: c.rerank_score.map(f64::from),
                used: c.used,
            })
            .collect(),
        notes: found.notes.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::reference::Candidate;

    /// Journals have always stored the search's `f32` scores widened to `f64`
    /// (through a JSON value); the typed output must write the same digits.
    #[test]
    fn the_output_writes_what_the_found_references_always_wrote() {
        let found = ReferenceFound {
            source: "the reference memory".into(),
            candidates: vec![
                Candidate {
                    path: "m/a.png".into(),
                    rel_path: "a.png".into(),
                    category: Some("bottle".into()),
                    score: Some(0.9),
                    rerank_score: Some(0.123_456_79),
                    used: true,
                },
                Candidate {
                    path: "m/b.png".into(),
                    rel_path: "b.png".into(),
                    category: None,
                    score: Some(-0.1),
                    rerank_score: None,
                    used: false,
                },
            ],
            notes: vec!["the query itself was skipped".into()],
        };
        let before = serde_json::to_string(&serde_json::to_value(&found).unwrap()).unwrap();
        let now = serde_json::to_string(&output_of(&found)).unwrap();
        assert_eq!(now, before);
        assert!(now.contains("0.8999999761581421"), "{now}");
        let without_notes = ReferenceFound {
            notes: Vec::new(),
            ..found
        };
        assert_eq!(
            serde_json::to_string(&output_of(&without_notes)).unwrap(),
            serde_json::to_string(&serde_json::to_value(&without_notes).unwrap()).unwrap()
        );
    }
}
