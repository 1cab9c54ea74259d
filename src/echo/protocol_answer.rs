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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::QuestionType;
    use crate::echo::plan::ReferenceKind;
    use crate::echo::{PipelineSettings, ScriptedBackend};

    /// MMAD's plain prompt with no reference: the final request is the only call.
    fn ctx(protocol: Protocol) -> PipelineContext {
        let settings = PipelineSettings {
            preset: "mmad".into(),
            reference: Some(ReferenceKind::None),
            ..PipelineSettings::default()
        };
        PipelineContext::new(settings)
            .unwrap()
            .with_protocol(protocol)
    }

    fn question() -> Question {
        Question {
            text: "Which defect is on the bottle?".into(),
            answer: "B".into(),
            options: [
                ("A", "scratch"),
                ("B", "crack"),
                ("C", "hole"),
                ("D", "stain"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            qtype: QuestionType::parse("Defect Classification"),
            annotation: None,
        }
    }

    fn ask(backend: &ScriptedBackend, ctx: &PipelineContext) -> ProtocolAnswer {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(answer_protocol(
                backend,
                ctx,
                &Query::image("bottle.png"),
                &question(),
                17,
                &|_| {},
                &CancelToken::new(),
            ))
            .unwrap()
    }

    /// The letter the prompt shows for `text` (lines like `A: crack` or `A. crack`).
    fn letter_of(
        text: &str,
    ) -> impl Fn(&crate::echo::backend::RecordedRequest) -> Result<String, String> {
        let text = text.to_string();
        move |req| {
            req.text()
                .lines()
                .map(str::trim)
                .find(|l| l.len() > 3 && l[1..].trim_start_matches(['.', ':']).trim() == text)
                .map(|l| l[..1].to_string())
                .ok_or_else(|| format!("`{text}` is not shown"))
        }
    }

    #[test]
    fn samples_take_the_majority_and_a_tie_goes_to_the_letter_seen_first() {
        let protocol = Protocol {
            samples: 4,
            temperature: Some(0.8),
            ..Protocol::default()
        };
        let backend = ScriptedBackend::constant("A")
            .then(Ok("C"))
            .then(Ok("A"))
            .then(Ok("A"))
            .then(Ok("C"));
        let a = ask(&backend, &ctx(protocol));
        assert_eq!(
            backend.requests().len(),
            4,
            "only the final request repeats"
        );
        let letters: Vec<_> = a.samples.iter().map(|s| s.letter.as_deref()).collect();
        assert_eq!(letters, [Some("C"), Some("A"), Some("A"), Some("C")]);
        assert_eq!(a.gpt_answer, "C", "C and A tie; C came first");
        assert_eq!(a.raw, "C");
        assert_eq!(a.agreement, Some(0.5));
        assert_eq!(a.correct, Some(false));
        assert!(a.orders.is_empty());
    }

    #[test]
    fn circular_runs_the_pipeline_per_rotation_and_is_right_only_when_all_are() {
        let c = ctx(Protocol {
            circular: true,
            ..Protocol::default()
        });
        let knows = ScriptedBackend::with(letter_of("crack"));
        let a = ask(&knows, &c);
        assert_eq!(knows.requests().len(), 4);
        let shown: Vec<_> = a.orders.iter().map(|o| o.letter.clone().unwrap()).collect();
        assert_eq!(
            shown,
            ["B", "A", "D", "C"],
            "crack moves one place up each rotation"
        );
        assert!(
            a.orders
                .iter()
                .all(|o| o.original_letter.as_deref() == Some("B"))
        );
        assert_eq!(
            (a.gpt_answer.as_str(), a.correct, a.agreement),
            ("B", Some(true), Some(1.0))
        );

        // Right in three rotations of four: wrong, with the wrong pick as the answer.
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let right = letter_of("crack");
        let wrong = letter_of("hole");
        let flaky = ScriptedBackend::with(move |req| {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 2 {
                wrong(req)
            } else {
                right(req)
            }
        });
        let a = ask(&flaky, &c);
        assert_eq!(a.correct, Some(false));
        assert_eq!(
            a.gpt_answer, "C",
            "the third rotation picked hole, originally C"
        );
        assert_eq!(a.raw, a.orders[2].raw);
        assert_eq!(a.agreement, Some(0.75));
    }

    #[test]
    fn a_shuffled_question_is_answered_in_its_original_letters() {
        let c = ctx(Protocol {
            shuffle_options: Some(5),
            ..Protocol::default()
        });
        let backend = ScriptedBackend::with(letter_of("crack"));
        let a = ask(&backend, &c);
        assert_eq!(a.orders.len(), 1);
        let order = crate::echo::protocol::shuffled(4, 5, 17);
        assert_eq!(a.orders[0].order, order_string(&question(), &order));
        assert_eq!((a.gpt_answer.as_str(), a.correct), ("B", Some(true)));
    }
}
