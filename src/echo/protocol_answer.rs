//! One question asked under its context's [`Protocol`]: once per order the protocol
//! names (every rotation for `--circular`, one seeded shuffle, or the file's order),
//! each a whole pipeline run, scored back in the question's original letters. See
//! `echo::protocol` for the rules.

use indexmap::IndexMap;

use super::backend::ChatBackend;
use super::error::PipelineError;
use super::pipeline::{Decision, PipelineContext, PipelineEvent, answer};
use super::protocol::{
    AskedOrder, Protocol, Sample, circular_verdict, order_string, reorder, to_original,
};
use super::query::Query;
use crate::dataset::Question;
use crate::jobs::CancelToken;

/// A question's answer under a protocol, in its original letters.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolAnswer {
    /// The pipeline run whose traces the record keeps: the original order's for
    /// circular (rotation 0), the only one otherwise.
    pub decision: Decision,
    /// MMAD's `gpt_answer` in the original letters.
    pub gpt_answer: String,
    /// The reply that gave `gpt_answer`.
    pub raw: String,
    pub correct: Option<bool>,
    /// The final request's samples (letters as shown).
    pub samples: Vec<Sample>,
    /// Each order asked, when the options were rotated or shuffled; empty when the
    /// question was asked in its file order.
    pub orders: Vec<AskedOrder>,
    /// Share of samples or rotations agreeing with the most common pick.
    pub agreement: Option<f64>,
    /// Option probabilities in the original letters.
    pub letter_probs: Option<IndexMap<String, f64>>,
}

/// Asks `question` as `ctx.protocol()` says; `dataset_index` seeds its shuffle.
/// A failure of any order is the question's failure.
pub async fn answer_protocol(
    backend: &dyn ChatBackend,
    ctx: &PipelineContext,
    query: &Query,
    question: &Question,
    dataset_index: usize,
    events: &(dyn Fn(PipelineEvent) + Sync),
    cancel: &CancelToken,
) -> Result<ProtocolAnswer, PipelineError> {
    let protocol: &Protocol = ctx.protocol();
    let orders = protocol.orders(question.options.len(), dataset_index);
    let reordered = protocol.circular || protocol.shuffle_options.is_some();
    if !reordered {
        let d = answer(backend, ctx, query, question, events, cancel).await?;
        return Ok(ProtocolAnswer {
            gpt_answer: d.gpt_answer.clone(),
            raw: d.raw.clone(),
            correct: d.correct,
            samples: d.samples.clone(),
            orders: Vec::new(),
            agreement: d.agreement,
            letter_probs: d.letter_probs.clone(),
            decision: d,
        });
    }
    let mut asked = Vec::with_capacity(orders.len());
    let mut decisions = Vec::with_capacity(orders.len());
    for order in &orders {
        let shown = reorder(question, order);
        let d = answer(backend, ctx, query, &shown, events, cancel).await?;
        let original_letter = d
            .letter
            .as_deref()
            .and_then(|l| to_original(question, order, l));
        asked.push(AskedOrder {
            order: order_string(question, order),
            raw: d.raw.clone(),
            letter: d.letter.clone(),
            gpt_answer: original_letter
                .clone()
                .unwrap_or_else(|| d.gpt_answer.clone()),
            original_letter,
        });
        decisions.push(d);
    }
    let has_truth = !question.answer.trim().is_empty();
    let first = decisions.swap_remove(0);
    if protocol.circular {
        let verdict = circular_verdict(&question.answer, &asked);
        return Ok(ProtocolAnswer {
            gpt_answer: verdict.gpt_answer,
            raw: asked[verdict.from].raw.clone(),
            correct: verdict.correct,
            samples: Vec::new(),
            agreement: Some(verdict.agreement),
            // Rotation 0 shows the original order: its letters need no mapping.
            letter_probs: first.letter_probs.clone(),
            orders: asked,
            decision: first,
        });
    }
    let order = &orders[0];
    let one = &asked[0];
    let letter_probs = first.letter_probs.as_ref().map(|probs| {
        let mut original: IndexMap<String, f64> =
            question.options.keys().map(|k| (k.clone(), 0.0)).collect();
        for (shown, p) in probs {
            if let Some(slot) =
                to_original(question, order, shown).and_then(|l| original.get_mut(&l))
            {
                *slot += p;
            }
        }
        original
    });
    Ok(ProtocolAnswer {
        gpt_answer: one.gpt_answer.clone(),
        raw: one.raw.clone(),
        correct: has_truth.then(|| one.original_letter.as_deref() == Some(question.answer.trim())),
        samples: first.samples.clone(),
        agreement: first.agreement,
        letter_probs,
        orders: asked,
        decision: first,
    })
}
