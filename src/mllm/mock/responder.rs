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
        if let Some(e) = candidates.iter().find(|e| {
            e.image_sha256
                .as_ref()
                .is_some_and(|h| image_sha256s.contains(h))
        }) {
            return Some(e.answer.clone());
        }
        let mut counts: IndexMap<&str, usize> = IndexMap::new();
        for e in &candidates {
            *counts.entry(e.answer.as_str()).or_default() += 1;
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
    text.lines().find_map(|line| {
        let line = line.trim_start();
        let line = line.strip_prefix('(').unwrap_or(line);
        let mut chars = line.chars();
        let letter = chars.next().filter(|c| ('A'..='E').contains(c))?;
        matches!(chars.next(), Some('.' | ':' | ')')).then(|| letter.to_string())
    })
}
