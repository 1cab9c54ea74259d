//! What the mock answers: a function of the request body, from a fixed letter to
//! an oracle that knows a dataset's answers.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::dataset::mmad::MmadDataset;
use crate::dataset::paths::DatasetRoot;
use crate::vision::decode::DecodeLimits;

type AnswerFn = dyn Fn(&Value) -> String + Send + Sync;

/// How the mock answers a valid chat request: a function of the request body.
#[derive(Clone)]
pub struct Responder {
    name: String,
    answer: Arc<AnswerFn>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Responder").field(&self.name).finish()
    }
}

impl Default for Responder {
    fn default() -> Self {
        Responder::first_option()
    }
}

impl Responder {
    /// Any function of the request body.
    pub fn custom(
        name: impl Into<String>,
        answer: impl Fn(&Value) -> String + Send + Sync + 'static,
    ) -> Self {
        Responder {
            name: name.into(),
            answer: Arc::new(answer),
        }
    }

    /// Always the same text.
    pub fn fixed(text: impl Into<String>) -> Self {
        let text = text.into();
        Responder::custom(format!("fixed text {text:?}"), move |_| text.clone())
    }

    /// The letter of the first option listed in the prompt (a line starting `A.`,
    /// `A:` or `(A)`), or `A` when there is none: a model that always picks the first
    /// option, the baseline every benchmark must beat.
    pub fn first_option() -> Self {
        Responder::custom("first option letter", |body| {
            first_option_letter(&request_text(body)).unwrap_or_else(|| "A".into())
        })
    }

    /// DEMO ONLY: answers from the answer key. It finds the question in the prompt
    /// (and, when the key has them, the query image by hash) and replies with the
    /// correct letter, so a demo shows a perfect score; it measures nothing.
    pub fn oracle(oracle: Oracle) -> Self {
        let oracle = Arc::new(oracle);
        Responder::custom(
            format!("oracle over {} questions (demo only)", oracle.len()),
            move |body| {
                let text = request_text(body);
                oracle
                    .answer(&text, &image_hashes(body))
                    .or_else(|| first_option_letter(&text))
                    .unwrap_or_else(|| "A".into())
            },
        )
    }

    /// A model that guesses: a letter among the options the prompt shows, drawn from
    /// `seed`, the prompt's text and, when the request samples (`temperature` above
    /// 0), the request's own `seed`. Greedy requests (temperature 0 or none) get the
    /// same guess for the same prompt, as a greedy model would; sampled requests
    /// with different seeds get independent guesses, so `--samples` has something to
    /// vote over and a seeded run repeats itself.
    pub fn random(seed: u64) -> Self {
        Responder::custom(format!("random option letter (seed {seed})"), move |body| {
            let text = request_text(body);
            let letters: Vec<String> = shown_options(&text).into_iter().map(|(l, _)| l).collect();
            if letters.is_empty() {
                return "A".into();
            }
            let sampled = body
                .get("temperature")
                .and_then(Value::as_f64)
                .is_some_and(|t| t > 0.0);
            let request_seed = body
                .get("seed")
                .filter(|_| sampled)
                .map(Value::to_string)
                .unwrap_or_default();
            let draw = hash_u64(&[
                &seed.to_le_bytes(),
                request_seed.as_bytes(),
                text.as_bytes(),
            ]);
            letters[(draw % letters.len() as u64) as usize].clone()
        })
    }

    /// `inner` when the prompt contains `word`, else the first option: a model that
    /// knows the answers only once told something, to watch a knowledge edit work.
    pub fn only_when(word: impl Into<String>, inner: Responder) -> Self {
        let word = word.into();
        let first = Responder::first_option();
        Responder::custom(
            format!(
                "{} when the prompt says {word:?}, else the first option",
                inner.name
            ),
            move |body| {
                if request_text(body).contains(&word) {
                    inner.answer(body)
                } else {
                    first.answer(body)
                }
            },
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn answer(&self, body: &Value) -> String {
        (self.answer)(body)
    }
}

/// One question of the answer key behind [`Responder::oracle`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OracleEntry {
    pub question: String,
    /// Option texts; all must appear in the prompt for the entry to match.
    pub options: Vec<String>,
    pub answer: String,
    /// The correct option's text: with it the oracle answers with the letter the
    /// prompt shows for that text, so rotated or shuffled options get the right
    /// letter too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_text: Option<String>,
    /// SHA-256 of the query image file, to tell apart identical questions about
    /// different images (matches when the client sends files unchanged).
    pub image_sha256: Option<String>,
}

/// An answer key, searchable by question text.
#[derive(Debug, Clone, Default)]
pub struct Oracle {
    entries: Vec<OracleEntry>,
    /// Distinct question texts, longest first, with the entries that ask them.
    texts: Vec<(String, Vec<usize>)>,
}

impl Oracle {
    pub fn new(entries: Vec<OracleEntry>) -> Self {
        let mut by_text: IndexMap<String, Vec<usize>> = IndexMap::new();
        for (i, e) in entries.iter().enumerate() {
            if !e.question.trim().is_empty() {
                by_text.entry(e.question.clone()).or_default().push(i);
            }
        }
        let mut texts: Vec<(String, Vec<usize>)> = by_text.into_iter().collect();
        texts.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        Oracle { entries, texts }
    }

    /// The key of an MMAD dataset. With `root`, query images are hashed so that the
    /// many identical questions ("Is there any defect in the object?") are told
    /// apart; without it, such questions get their most common answer.
    pub fn from_mmad(dataset: &MmadDataset, root: Option<&DatasetRoot>) -> Self {
        use rayon::prelude::*;
        let hashes: HashMap<&str, String> = match root {
            Some(root) => {
                let keys: Vec<&str> = dataset.entries.keys().map(String::as_str).collect();
                keys.par_iter()
                    .filter_map(|&key| {
                        let path = root.resolve(key).ok()?;
                        let bytes = crate::vision::decode::read_image_file(
                            &path,
                            DecodeLimits::default().max_file_bytes,
                        )
                        .ok()?;
                        Some((key, hex::encode(Sha256::digest(&bytes))))
                    })
                    .collect()
            }
            None => HashMap::new(),
        };
        let entries = dataset
            .questions()
            .map(|q| OracleEntry {
                question: q.question.text.trim().to_string(),
                options: q
                    .question
                    .options
                    .values()
                    .map(|t| t.trim().to_string())
                    .collect(),
                answer: q.question.answer.clone(),
                answer_text: q
                    .question
                    .options
                    .get(&q.question.answer)
                    .map(|t| t.trim().to_string()),
                image_sha256: hashes.get(q.key).cloned(),
            })
            .collect();
        Oracle::new(entries)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The answer for a prompt: the longest known question found in `text` whose
    /// options all appear too; among entries asking it, the one whose image is in
    /// `image_sha256s`, else the most common answer.
    pub fn answer(&self, text: &str, image_sha256s: &[String]) -> Option<String> {
        let candidates: Vec<&OracleEntry> = self
            .texts
            .iter()
            .filter(|(q, _)| text.contains(q.as_str()))
            .map(|(_, ids)| {
                ids.iter()
                    .map(|&i| &self.entries[i])
                    .filter(|e| e.options.iter().all(|o| text.contains(o.as_str())))
                    .collect::<Vec<_>>()
            })
            .find(|c| !c.is_empty())?;
        let shown = shown_options(text);
        // The letter the prompt shows for the right option's text (rotated or
        // shuffled options move it), else the key's own letter.
        let letter_of = |e: &OracleEntry| -> String {
            e.answer_text
                .as_ref()
                .and_then(|t| shown.iter().find(|(_, shown)| shown == t))
                .map_or_else(|| e.answer.clone(), |(l, _)| l.clone())
        };
        if let Some(e) = candidates.iter().find(|e| {
            e.image_sha256
                .as_ref()
                .is_some_and(|h| image_sha256s.contains(h))
        }) {
            return Some(letter_of(e));
        }
        let mut counts: IndexMap<String, usize> = IndexMap::new();
        for e in &candidates {
            *counts.entry(letter_of(e)).or_default() += 1;
        }
        let best = counts.values().copied().max()?;
        counts
            .into_iter()
            .find(|(_, n)| *n == best)
            .map(|(a, _)| a.to_string())
    }
}

/// Every text part of every message, one per line.
pub fn request_text(body: &Value) -> String {
    let mut out = Vec::new();
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match m.get("content") {
            Some(Value::String(s)) => out.push(s.as_str()),
            Some(Value::Array(parts)) => out.extend(
                parts
                    .iter()
                    .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                    .filter_map(|p| p.get("text").and_then(Value::as_str)),
            ),
            _ => {}
        }
    }
    out.join("\n")
}

/// SHA-256 (hex) of the bytes of every data-URL image in the request, in order.
pub fn image_hashes(body: &Value) -> Vec<String> {
    image_urls(body)
        .filter_map(|url| {
            let (_, b64) = url.split_once(',')?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            Some(hex::encode(Sha256::digest(&bytes)))
        })
        .collect()
}

pub(super) fn image_urls(body: &Value) -> impl Iterator<Item = &str> {
    body.get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .filter_map(|p| p.get("image_url")?.get("url")?.as_str())
}

/// The letter of the first line that starts like an option: `A.`, `A:`, `A)`, `(A)`.
pub(super) fn first_option_letter(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| option_line(line).map(|(l, _)| l))
}

/// A line that starts like an option (`A.`, `A:`, `A)`, `(A)`): its letter and text.
fn option_line(line: &str) -> Option<(String, &str)> {
    let line = line.trim_start();
    let line = line.strip_prefix('(').unwrap_or(line);
    let mut chars = line.chars();
    let letter = chars.next().filter(|c| ('A'..='E').contains(c))?;
    matches!(chars.next(), Some('.' | ':' | ')')).then(|| (letter.to_string(), line[2..].trim()))
}

/// The options the prompt shows, letter and trimmed text, in order; a letter shown
/// twice counts once (the first).
pub(super) fn shown_options(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (letter, option) in text.lines().filter_map(option_line) {
        if !out.iter().any(|(l, _)| *l == letter) {
            out.push((letter, option.to_string()));
        }
    }
    out
}

fn hash_u64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
}

/// `choices[0].logprobs` for a reply `answer`, as OpenAI shapes it: one token, the
/// reply, with `top` alternatives. When the reply is one of the letters the prompt
/// shows, the alternatives are those letters with a plausible distribution: the
/// reply between 0.40 (at least 0.05 above an even share) and 0.95, drawn from the
/// prompt so it varies by question and repeats, the rest sharing what is left.
pub(super) fn mock_logprobs(body: &Value, answer: &str, top: usize) -> Value {
    let text = request_text(body);
    let letters: Vec<String> = shown_options(&text).into_iter().map(|(l, _)| l).collect();
    let mut alternatives: Vec<(String, f64)> = if letters.iter().any(|l| l == answer) {
        let u = (hash_u64(&[text.as_bytes(), answer.as_bytes()]) % 1000) as f64 / 1000.0;
        // Always the most likely letter, even of two.
        let lowest = (1.0 / letters.len() as f64 + 0.05).max(0.40);
        let p = lowest + (0.95 - lowest) * u;
        let rest = (1.0 - p) / (letters.len() - 1).max(1) as f64;
        std::iter::once((answer.to_string(), p))
            .chain(
                letters
                    .iter()
                    .filter(|l| *l != answer)
                    .map(|l| (l.clone(), rest)),
            )
            .collect()
    } else {
        vec![(answer.to_string(), 0.95)]
    };
    let chosen = alternatives[0].1.ln();
    alternatives.truncate(top);
    let top: Vec<Value> = alternatives
        .into_iter()
        .map(|(token, p)| serde_json::json!({"token": token, "logprob": p.ln()}))
        .collect();
    serde_json::json!({"content": [{"token": answer, "logprob": chosen, "top_logprobs": top}]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(prompt: &str, extra: Value) -> Value {
        let mut v = json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}]});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    const ROTATED: &str = "Is there any defect?\nA. scratch\nB. good\nC. crack";

    #[test]
    fn the_oracle_finds_the_right_option_by_its_text_wherever_it_is_shown() {
        let oracle = Oracle::new(vec![OracleEntry {
            question: "Is there any defect?".into(),
            options: vec!["good".into(), "crack".into(), "scratch".into()],
            answer: "B".into(),
            answer_text: Some("crack".into()),
            image_sha256: None,
        }]);
        assert_eq!(oracle.answer(ROTATED, &[]).as_deref(), Some("C"));
        let original = "Is there any defect?\nA: good\nB: crack\nC: scratch";
        assert_eq!(oracle.answer(original, &[]).as_deref(), Some("B"));
    }

    #[test]
    fn random_guesses_repeat_when_greedy_and_vary_with_the_seed_when_sampled() {
        let r = Responder::random(3);
        let greedy: Vec<String> = (0..8)
            .map(|s| r.answer(&body(ROTATED, json!({"seed": s}))))
            .collect();
        assert!(greedy.iter().all(|a| *a == greedy[0]), "{greedy:?}");
        let sampled: Vec<String> = (0..32)
            .map(|s| r.answer(&body(ROTATED, json!({"seed": s, "temperature": 1.0}))))
            .collect();
        assert!(
            sampled
                .iter()
                .all(|a| ["A", "B", "C"].contains(&a.as_str()))
        );
        let distinct: std::collections::HashSet<&String> = sampled.iter().collect();
        assert_eq!(distinct.len(), 3, "{sampled:?}");
        let again: Vec<String> = (0..32)
            .map(|s| r.answer(&body(ROTATED, json!({"seed": s, "temperature": 1.0}))))
            .collect();
        assert_eq!(sampled, again, "a seeded request repeats itself");
    }

    #[test]
    fn logprobs_spread_over_the_shown_letters_and_sum_to_one() {
        let lp = mock_logprobs(&body(ROTATED, json!({})), "B", 20);
        let content = lp["content"].as_array().unwrap();
        assert_eq!(content[0]["token"], "B");
        let top = content[0]["top_logprobs"].as_array().unwrap();
        let letters: Vec<&str> = top.iter().map(|t| t["token"].as_str().unwrap()).collect();
        assert_eq!(letters, ["B", "A", "C"]);
        let total: f64 = top
            .iter()
            .map(|t| t["logprob"].as_f64().unwrap().exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        let p_b = top[0]["logprob"].as_f64().unwrap().exp();
        assert!((0.40..=0.95).contains(&p_b), "{p_b}");
        assert_eq!(
            mock_logprobs(&body(ROTATED, json!({})), "B", 1)["content"][0]["top_logprobs"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}
