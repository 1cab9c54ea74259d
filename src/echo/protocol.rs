//! Test-time protocols: how one question is asked when a single greedy reply is not
//! the whole story (issue 17).
//!
//! - **Samples** (`--samples N`, with `--temperature`, `--seed`, `--top-p`): the
//!   Decision Maker's final request is sent N times; the Reference Extractor,
//!   Knowledge Guide and Reasoning Expert run once, so the samples differ only in
//!   the final decoding. Sample `i` (0-based) is sent with seed `seed + i` (seed 0
//!   when none is given), so every sample differs and a rerun repeats them. The
//!   answer is the majority letter; a tie goes to the tied letter that appeared
//!   first among the samples ([`TieRule::FirstSeen`], recorded in the manifest).
//!   Replies with no letter vote for nothing; when none has a letter the first
//!   sample's reply is the answer (MMAD's rule: the raw reply). The recorded `raw`
//!   is the first sample that gave the majority letter; the agreement is the
//!   majority count over N.
//! - **Circular** (`--circular`, MMBench's CircularEval): a question with n options
//!   is asked n times, rotation `i` showing the option texts shifted by `i` under
//!   the same letters (rotation 0 is the original order). The whole pipeline runs
//!   per rotation (the options block every template renders is built from the
//!   rotated options; MMAD's question texts do not list the options themselves). The
//!   question is right only when every rotation picks the right option. `gpt_answer`
//!   in the original letters is the right letter when all agree on it, otherwise
//!   the first rotation's wrong pick (its raw reply when it named no letter), so
//!   MMAD's own scorer counts it wrong too. The record's `raw` is the reply that
//!   gave `gpt_answer`; its expert traces are rotation 0's (every rotation's reply
//!   and letter are in `rotations`); usage and attempts add up over all rotations.
//!   Samples are refused with circular: a rotation is one greedy reply, as in
//!   MMBench.
//! - **Shuffle** (`--shuffle-options SEED`): one permutation per question, drawn
//!   from SEED and the question's dataset index (so shards and resumes agree), asked
//!   once; the answer is mapped back to the original letters. Samples may be
//!   combined with it: their letters are then as shown, the one recorded order maps
//!   them back.
//! - **Logprobs** (`--logprobs`): the request asks for `logprobs` with 20
//!   `top_logprobs`; see [`letter_probs`] for how option probabilities are read.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::dataset::Question;
use crate::mllm::{Decoding, TokenLogprob};

/// The most replies one question may be sampled for.
pub const MAX_SAMPLES: u32 = 64;
/// `top_logprobs` asked for: OpenAI's maximum, and enough to hold five letters
/// beside the spellings a tokenizer gives them (`A`, ` A`, `(A`).
pub const TOP_LOGPROBS: u8 = 20;

/// How ties between sampled letters are broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TieRule {
    /// The tied letter that appeared first among the samples.
    FirstSeen,
}

/// A run's test-time protocol, as its manifest records it. Every field is left out
/// of the file at its default, and a plain run records no protocol at all, so
/// manifests and fingerprints of plain runs are what they were before protocols.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Protocol {
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub samples: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub circular: bool,
    /// The seed of `--shuffle-options`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shuffle_options: Option<u64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub logprobs: bool,
    /// Set whenever `samples` is above 1 (see [`Protocol::recorded`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_rule: Option<TieRule>,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol {
            samples: 1,
            temperature: None,
            top_p: None,
            seed: None,
            circular: false,
            shuffle_options: None,
            logprobs: false,
            tie_rule: None,
        }
    }
}

/// A protocol that makes no sense, named by the flag to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    #[error("--samples must be from 1 to {MAX_SAMPLES}, not {0}")]
    Samples(u32),
    #[error("--temperature must be a number from 0 to 2, not {0}")]
    Temperature(f64),
    #[error("--top-p must be above 0 and at most 1, not {0}")]
    TopP(f64),
    #[error(
        "--samples {0} needs --temperature above 0: greedy decoding gives the same reply every time"
    )]
    SamplesNeedTemperature(u32),
    #[error(
        "--circular and --shuffle-options cannot be combined: circular already asks every rotation of the options"
    )]
    CircularWithShuffle,
    #[error(
        "--samples {0} cannot be combined with --circular: each rotation is one reply (MMBench's CircularEval); use one of them"
    )]
    SamplesWithCircular(u32),
}

impl Protocol {
    /// Refuses settings that make no sense, naming the flag.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        if self.samples == 0 || self.samples > MAX_SAMPLES {
            return Err(ProtocolError::Samples(self.samples));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(ProtocolError::Temperature(t));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(ProtocolError::TopP(p));
        }
        if self.samples > 1 && self.temperature.is_none_or(|t| t <= 0.0) {
            return Err(ProtocolError::SamplesNeedTemperature(self.samples));
        }
        if self.circular && self.shuffle_options.is_some() {
            return Err(ProtocolError::CircularWithShuffle);
        }
        if self.circular && self.samples > 1 {
            return Err(ProtocolError::SamplesWithCircular(self.samples));
        }
        Ok(())
    }

    /// Asks each question once, greedily, in the original order.
    pub fn is_plain(&self) -> bool {
        *self == Protocol::default()
    }

    /// What a manifest records: nothing for a plain run, else the protocol with its
    /// tie rule named when it samples.
    pub fn recorded(&self) -> Option<Protocol> {
        let mut p = self.clone();
        p.tie_rule = (p.samples > 1).then_some(TieRule::FirstSeen);
        (!p.is_plain()).then_some(p)
    }

    /// The request keys of sample `i` (0-based).
    pub fn decoding(&self, i: u32) -> Decoding {
        let seed = match self.seed {
            Some(s) => Some(s.wrapping_add(u64::from(i))),
            None if self.samples > 1 => Some(u64::from(i)),
            None => None,
        };
        Decoding {
            temperature: self.temperature,
            top_p: self.top_p,
            seed,
            top_logprobs: self.logprobs.then_some(TOP_LOGPROBS),
        }
    }

    /// One line for people (reports, the Runs list): `plain` for a plain run.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.samples > 1 {
            parts.push(format!(
                "{} samples, majority letter (ties: first seen)",
                self.samples
            ));
        }
        if let Some(t) = self.temperature {
            parts.push(format!("temperature {t}"));
        }
        if let Some(p) = self.top_p {
            parts.push(format!("top-p {p}"));
        }
        if let Some(s) = self.seed {
            parts.push(format!("seed {s}"));
        }
        if self.circular {
            parts.push("circular (right only when every rotation is)".into());
        }
        if let Some(s) = self.shuffle_options {
            parts.push(format!("options shuffled (seed {s})"));
        }
        if self.logprobs {
            parts.push("letter probabilities from logprobs".into());
        }
        if parts.is_empty() {
            "plain (one greedy reply, options in file order)".into()
        } else {
            parts.join(", ")
        }
    }

    /// The orders a question with `n` options is asked in: entry `j` of an order is
    /// the original position of the option shown at position `j`.
    pub fn orders(&self, n: usize, dataset_index: usize) -> Vec<Vec<usize>> {
        if self.circular {
            (0..n).map(|i| rotation(n, i)).collect()
        } else if let Some(seed) = self.shuffle_options {
            vec![shuffled(n, seed, dataset_index)]
        } else {
            vec![(0..n).collect()]
        }
    }
}

/// Rotation `i` of `n` options: position `j` shows the original option `j + i`.
pub fn rotation(n: usize, i: usize) -> Vec<usize> {
    (0..n).map(|j| (j + i) % n).collect()
}

/// SplitMix64: written out (not a crate's generator) because a recorded seed must
/// give the same permutation in every later version, whatever a dependency does.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seeded permutation of `n` options for the question at `dataset_index`
/// (Fisher-Yates over SplitMix64 seeded from both): the same on every machine, in
/// every shard and every resume.
pub fn shuffled(n: usize, seed: u64, dataset_index: usize) -> Vec<usize> {
    let mut state = seed ^ (dataset_index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (splitmix64(&mut state) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// The question as shown in `order`: the same letters in the same places, the
/// option texts moved, the answer moved with its text.
pub fn reorder(question: &Question, order: &[usize]) -> Question {
    let keys: Vec<&String> = question.options.keys().collect();
    let texts: Vec<&String> = question.options.values().collect();
    let options: IndexMap<String, String> = keys
        .iter()
        .zip(order)
        .map(|(k, &from)| ((*k).clone(), texts[from].clone()))
        .collect();
    let answer = keys
        .iter()
        .position(|k| **k == question.answer)
        .and_then(|orig| order.iter().position(|&from| from == orig))
        .map_or_else(|| question.answer.clone(), |j| keys[j].clone());
    Question {
        text: question.text.clone(),
        answer,
        options,
        qtype: question.qtype.clone(),
        annotation: question.annotation,
    }
}

/// The original letters in the order shown, e.g. `"BCDA"`.
pub fn order_string(question: &Question, order: &[usize]) -> String {
    let keys: Vec<&String> = question.options.keys().collect();
    order.iter().map(|&i| keys[i].as_str()).collect()
}

/// A letter as shown in `order`, in the question's original letters; `None` for a
/// letter that is not one of its options.
pub fn to_original(question: &Question, order: &[usize], shown: &str) -> Option<String> {
    let keys: Vec<&String> = question.options.keys().collect();
    let j = keys.iter().position(|k| *k == shown)?;
    keys.get(*order.get(j)?).map(|k| (*k).clone())
}

/// The majority letter and its count; ties go to the tied letter seen first
/// ([`TieRule::FirstSeen`]). Replies without a letter vote for nothing; `None`
/// when no reply had one.
pub fn majority<'a>(letters: impl IntoIterator<Item = Option<&'a str>>) -> Option<(String, usize)> {
    let mut counts: IndexMap<&str, usize> = IndexMap::new();
    for l in letters.into_iter().flatten() {
        *counts.entry(l).or_default() += 1;
    }
    let best = counts.values().copied().max()?;
    // IndexMap keeps first-seen order, so the first maximum is the tie rule's pick.
    counts
        .into_iter()
        .find(|(_, n)| *n == best)
        .map(|(l, n)| (l.to_string(), n))
}

/// The probability of each option letter where the reply states its answer.
///
/// The answer position is the first generated token whose text, trimmed of
/// whitespace and punctuation, is one of `letters` (exactly, so `A` in "A scratch"
/// counts, as a letter-first reply's would; a reply that talks before answering
/// may be read at a word instead, which is why the Decision Maker's prompts ask
/// for the letter first). There, each alternative of `top_logprobs` whose trimmed
/// text is an option letter adds `exp(logprob)` to that letter (` A` and `A` are
/// one letter), letters not listed get 0, and the sums are renormalised over the
/// options. When the server listed no alternatives, the token's own probability
/// stands for its letter. `None` when no token names a letter or nothing is left
/// to normalise.
pub fn letter_probs(tokens: &[TokenLogprob], letters: &[String]) -> Option<IndexMap<String, f64>> {
    let trim = |t: &str| {
        t.trim_matches(|c: char| c.is_whitespace() || c.is_ascii_punctuation())
            .to_string()
    };
    let at = tokens.iter().find(|t| letters.contains(&trim(&t.token)))?;
    let mut probs: IndexMap<String, f64> = letters.iter().map(|l| (l.clone(), 0.0)).collect();
    if at.top.is_empty() {
        let p = at.logprob?.exp();
        *probs.get_mut(&trim(&at.token))? += p;
    } else {
        for alt in &at.top {
            if let Some(p) = probs.get_mut(&trim(&alt.token)) {
                *p += alt.logprob.exp();
            }
        }
    }
    let total: f64 = probs.values().sum();
    if !(total.is_finite() && total > 0.0) {
        return None;
    }
    probs.values_mut().for_each(|p| *p /= total);
    Some(probs)
}

/// One reply of a sampled question.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub raw: String,
    /// The letter read from it, as shown.
    pub letter: Option<String>,
}

/// One order a question was asked in and what came back.
#[derive(Debug, Clone, PartialEq)]
pub struct AskedOrder {
    /// The original letters in the order shown (see [`order_string`]).
    pub order: String,
    pub raw: String,
    /// The letter picked, as shown.
    pub letter: Option<String>,
    /// The pick in the original letters.
    pub original_letter: Option<String>,
    /// MMAD's `gpt_answer` of this asking in the original letters: the letter, or
    /// the raw reply when none was found.
    pub gpt_answer: String,
}

/// What a circular question scores as.
#[derive(Debug, Clone, PartialEq)]
pub struct CircularVerdict {
    pub gpt_answer: String,
    /// Which rotation gave `gpt_answer` (its raw reply is the record's).
    pub from: usize,
    /// Every rotation right; `None` when the question has no answer to check.
    pub correct: Option<bool>,
    /// Share of rotations that picked the most common original letter.
    pub agreement: f64,
}

/// Scores the rotations of one question as CircularEval does (see the module docs).
/// `rotations` must not be empty.
pub fn circular_verdict(correct_answer: &str, rotations: &[AskedOrder]) -> CircularVerdict {
    let truth = correct_answer.trim();
    let wrong = rotations
        .iter()
        .position(|r| r.original_letter.as_deref() != Some(truth));
    let from = wrong.unwrap_or(0);
    let gpt_answer = match wrong {
        None => truth.to_string(),
        Some(i) => rotations[i].gpt_answer.clone(),
    };
    let agreement = majority(rotations.iter().map(|r| r.original_letter.as_deref()))
        .map_or(0.0, |(_, n)| n as f64 / rotations.len().max(1) as f64);
    CircularVerdict {
        gpt_answer,
        from,
        correct: (!truth.is_empty()).then_some(wrong.is_none()),
        agreement,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::QuestionType;
    use crate::mllm::TopLogprob;

    fn question() -> Question {
        Question {
            text: "Which defect?".into(),
            answer: "B".into(),
            options: [
                ("A", "scratch"),
                ("B", "crack"),
                ("C", "hole"),
                ("D", "good"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            qtype: QuestionType::parse("Defect Classification"),
            annotation: None,
        }
    }

    fn asked(order: &str, original: Option<&str>, raw: &str) -> AskedOrder {
        AskedOrder {
            order: order.into(),
            raw: raw.into(),
            letter: None,
            original_letter: original.map(str::to_string),
            gpt_answer: original.map_or_else(|| raw.to_string(), str::to_string),
        }
    }

    #[test]
    fn majority_counts_letters_and_ties_go_to_the_first_seen() {
        let votes = |v: &[Option<&'static str>]| majority(v.iter().copied());
        assert_eq!(
            votes(&[Some("B"), Some("A"), Some("B")]),
            Some(("B".into(), 2))
        );
        assert_eq!(
            votes(&[Some("C"), Some("A"), Some("A"), Some("C")]),
            Some(("C".into(), 2)),
            "C and A tie at 2; C was seen first"
        );
        assert_eq!(
            votes(&[None, Some("D"), None, None]),
            Some(("D".into(), 1)),
            "replies without a letter vote for nothing"
        );
        assert_eq!(votes(&[None, None]), None);
    }

    #[test]
    fn rotations_move_texts_and_the_answer_with_them() {
        let q = question();
        let p = Protocol {
            circular: true,
            ..Protocol::default()
        };
        let orders = p.orders(4, 7);
        assert_eq!(orders.len(), 4);
        assert_eq!(orders[0], vec![0, 1, 2, 3], "rotation 0 is the original");
        let r1 = reorder(&q, &orders[1]);
        assert_eq!(order_string(&q, &orders[1]), "BCDA");
        assert_eq!(
            r1.options.values().collect::<Vec<_>>(),
            ["crack", "hole", "good", "scratch"]
        );
        assert_eq!(r1.answer, "A", "crack is shown as A");
        assert_eq!(to_original(&q, &orders[1], "A").as_deref(), Some("B"));
        assert_eq!(to_original(&q, &orders[1], "D").as_deref(), Some("A"));
        assert_eq!(to_original(&q, &orders[1], "F"), None);
        assert_eq!(reorder(&q, &orders[0]), q);
    }

    #[test]
    fn a_shuffle_is_a_permutation_fixed_by_seed_and_question_alone() {
        let a = shuffled(5, 11, 1234);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
        assert_eq!(
            a,
            shuffled(5, 11, 1234),
            "same seed and question, same order"
        );
        // Pinned: a recorded seed must give this order in every later version.
        assert_eq!(shuffled(4, 7, 0), shuffled(4, 7, 0));
        assert_eq!(shuffled(4, 7, 3), vec![1, 2, 0, 3]);
        let distinct: std::collections::HashSet<Vec<usize>> =
            (0..50).map(|i| shuffled(4, 7, i)).collect();
        assert!(distinct.len() > 10, "questions get different orders");
        assert_ne!(
            (0..20).map(|i| shuffled(4, 7, i)).collect::<Vec<_>>(),
            (0..20).map(|i| shuffled(4, 8, i)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn circular_scores_as_mmads_scorer_would() {
        let all_right: Vec<AskedOrder> = ["ABCD", "BCDA", "CDAB", "DABC"]
            .iter()
            .map(|o| asked(o, Some("B"), "x"))
            .collect();
        let v = circular_verdict("B", &all_right);
        assert_eq!(
            (v.gpt_answer.as_str(), v.correct, v.agreement),
            ("B", Some(true), 1.0)
        );

        // Right in 3 of 4: wrong, and gpt_answer is the wrong pick, which MMAD's
        // exact comparison counts wrong.
        let mut three = all_right.clone();
        three[2] = asked("CDAB", Some("D"), "D");
        let v = circular_verdict("B", &three);
        assert_eq!(v.gpt_answer, "D");
        assert_eq!(v.from, 2);
        assert_eq!(v.correct, Some(false));
        assert_eq!(v.agreement, 0.75);
        assert_ne!(v.gpt_answer, "B");

        // The first wrong rotation wins, even if a later one is wrong differently;
        // a rotation with no letter gives its raw reply.
        let mut two = all_right.clone();
        two[1] = asked("BCDA", None, "I cannot tell");
        two[3] = asked("DABC", Some("A"), "A");
        let v = circular_verdict("B", &two);
        assert_eq!((v.gpt_answer.as_str(), v.from), ("I cannot tell", 1));
        assert_eq!(v.agreement, 0.5);
    }

    #[test]
    fn letter_probs_read_the_answer_position_and_renormalise_over_the_options() {
        let tok = |t: &str, top: &[(&str, f64)]| TokenLogprob {
            token: t.into(),
            logprob: Some(-0.1),
            top: top
                .iter()
                .map(|(t, p)| TopLogprob {
                    token: (*t).into(),
                    logprob: p.ln(),
                })
                .collect(),
        };
        let letters: Vec<String> = ["A", "B", "C"].map(String::from).to_vec();
        let tokens = vec![
            tok("Answer", &[("Answer", 0.9)]),
            tok(":", &[(":", 0.9)]),
            tok(" B", &[(" B", 0.5), ("B", 0.1), (" A", 0.2), (" Z", 0.1)]),
            tok(".", &[]),
        ];
        let p = letter_probs(&tokens, &letters).unwrap();
        assert!((p["B"] - 0.75).abs() < 1e-12, "{p:?}");
        assert!((p["A"] - 0.25).abs() < 1e-12);
        assert_eq!(p["C"], 0.0);
        assert_eq!(p.keys().collect::<Vec<_>>(), ["A", "B", "C"]);
        // No alternatives: the token's own probability stands for its letter.
        let bare = vec![TokenLogprob {
            token: "(C)".into(),
            logprob: Some(-0.5),
            top: Vec::new(),
        }];
        assert_eq!(letter_probs(&bare, &letters).unwrap()["C"], 1.0);
        // No letter anywhere, or nothing usable there: none.
        assert_eq!(
            letter_probs(&[tok("Maybe", &[("Maybe", 1.0)])], &letters),
            None
        );
        let junk = vec![TokenLogprob {
            token: "A".into(),
            logprob: None,
            top: Vec::new(),
        }];
        assert_eq!(letter_probs(&junk, &letters), None);
        assert_eq!(letter_probs(&[], &letters), None);
    }

    #[test]
    fn nonsense_is_refused_naming_the_flag() {
        let bad = |p: Protocol| p.validate().unwrap_err().to_string();
        let p = Protocol::default;
        assert!(bad(Protocol { samples: 0, ..p() }).contains("--samples"));
        assert!(bad(Protocol { samples: 65, ..p() }).contains("--samples"));
        assert!(
            bad(Protocol {
                temperature: Some(-0.1),
                ..p()
            })
            .contains("--temperature")
        );
        assert!(
            bad(Protocol {
                temperature: Some(f64::NAN),
                ..p()
            })
            .contains("--temperature")
        );
        assert!(
            bad(Protocol {
                top_p: Some(0.0),
                ..p()
            })
            .contains("--top-p")
        );
        assert!(bad(Protocol { samples: 5, ..p() }).contains("--temperature above 0"));
        assert!(
            bad(Protocol {
                circular: true,
                shuffle_options: Some(1),
                ..p()
            })
            .contains("--shuffle-options")
        );
        assert!(
            bad(Protocol {
                circular: true,
                samples: 3,
                temperature: Some(1.0),
                ..p()
            })
            .contains("--circular")
        );
        Protocol {
            samples: 64,
            temperature: Some(0.7),
            seed: Some(3),
            ..p()
        }
        .validate()
        .unwrap();
        Protocol {
            samples: 3,
            temperature: Some(1.0),
            shuffle_options: Some(2),
            ..p()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn a_plain_protocol_records_nothing_and_samples_record_their_tie_rule() {
        assert_eq!(Protocol::default().recorded(), None);
        let sampled = Protocol {
            samples: 5,
            temperature: Some(0.7),
            ..Protocol::default()
        };
        let recorded = sampled.recorded().unwrap();
        assert_eq!(recorded.tie_rule, Some(TieRule::FirstSeen));
        assert_eq!(
            serde_json::to_string(&recorded).unwrap(),
            r#"{"samples":5,"temperature":0.7,"tie_rule":"first_seen"}"#
        );
        let back: Protocol = serde_json::from_str(r#"{"circular":true}"#).unwrap();
        assert_eq!(back.samples, 1);
        assert!(back.circular);
        // Seeds: seed + i, or i without a seed; none for one unseeded reply.
        assert_eq!(sampled.decoding(3).seed, Some(3));
        let seeded = Protocol {
            seed: Some(100),
            ..sampled.clone()
        };
        assert_eq!(seeded.decoding(0).seed, Some(100));
        assert_eq!(seeded.decoding(4).seed, Some(104));
        assert_eq!(Protocol::default().decoding(0), Decoding::default());
        let lp = Protocol {
            logprobs: true,
            ..Protocol::default()
        };
        assert_eq!(lp.decoding(0).top_logprobs, Some(TOP_LOGPROBS));
    }
}
