//! The Knowledge Guide's selection rules: which knowledge text a question gets.
//!
//! * `category`: MMAD's knowledge run. Every entry of the query's category, `good`
//!   included, texts joined by newlines in file order, behind a one-line lead-in.
//! * `condensed`: Echo's condensed file (defect entries only), rendered as the
//!   category name and then one `name: text` line per entry.
//! * `options`: `good` plus the defect entries the options name, matched after
//!   normalising both sides (lower case, `_` as space, simple stemming, a small
//!   synonym table). Every match is listed with its reason.
//! * `llm`: a model call condenses the category's entries for this question; the
//!   result is cached (memory, optionally disk) so a benchmark asks once per
//!   distinct question.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::prompt::human_name;
use crate::knowledge::{CategoryKnowledge, EntryText, KnowledgeBase, NORMAL_ENTRY};

/// Finds a category's entries: by the query's dataset folder when it is known (and
/// present), else in the one dataset that has a category of that name.
pub fn find_category<'a>(
    kb: &'a KnowledgeBase,
    dataset: Option<&str>,
    category: &str,
) -> Option<(String, &'a CategoryKnowledge)> {
    if let Some(ds) = dataset
        && let Some(c) = kb.category(ds, category)
    {
        let key = crate::knowledge::knowledge_dataset_key(ds);
        let key = if kb.datasets.contains_key(key) {
            key
        } else {
            ds
        };
        return Some((key.to_string(), c));
    }
    let mut found = kb
        .datasets
        .iter()
        .filter_map(|(ds, cats)| cats.get(category).map(|c| (ds.clone(), c)));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// The texts joined as MMAD does: verbatim, one after another, newline-separated.
pub fn join_texts<'a>(entries: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    entries
        .into_iter()
        .map(|(_, t)| t.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Condensed entries as `name: text` lines (names as people write them).
pub fn name_lines<'a>(entries: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    entries
        .into_iter()
        .map(|(n, t)| format!("{}: {}", human_name(n), t.trim()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Words worth highlighting for a set of entries: their names and titles.
pub fn entry_terms<'a>(entries: impl IntoIterator<Item = (&'a String, &'a String)>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (name, text) in entries {
        if name == NORMAL_ENTRY {
            continue;
        }
        let mut push = |s: String| {
            if !s.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(&s)) {
                out.push(s);
            }
        };
        push(human_name(name));
        if let Some(title) = EntryText::parse(text).title {
            push(title);
        }
    }
    out
}

/// A model's selection, as cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedSelection {
    pub key: String,
    /// The condensed knowledge (the reply, trimmed).
    pub text: String,
    /// The reply exactly.
    pub raw: String,
    /// Which backend wrote it.
    pub backend: String,
}

/// Selections by cache key: in memory for a run, and in a folder across runs when
/// one is configured (one small JSON file per key, written atomically).
#[derive(Debug, Default)]
pub struct KnowledgeCache {
    memory: Mutex<HashMap<String, CachedSelection>>,
    dir: Option<PathBuf>,
}

impl KnowledgeCache {
    pub fn new(dir: Option<PathBuf>) -> Self {
        KnowledgeCache {
            memory: Mutex::new(HashMap::new()),
            dir,
        }
    }

    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }

    fn file(&self, key: &str) -> Option<PathBuf> {
        // Keys are hex digests; anything else never touches the disk.
        let safe = !key.is_empty() && key.chars().all(|c| c.is_ascii_hexdigit());
        self.dir
            .as_ref()
            .filter(|_| safe)
            .map(|d| d.join(format!("{key}.json")))
    }

    /// The cached selection, from memory or disk. A damaged file counts as a miss.
    pub fn get(&self, key: &str) -> Option<CachedSelection> {
        if let Some(hit) = self.lock().get(key) {
            return Some(hit.clone());
        }
        let path = self.file(key)?;
        let text =
            crate::util::fsx::read_text_limited(&path, crate::util::fsx::TEXT_FILE_LIMIT).ok()?;
        let sel: CachedSelection = serde_json::from_str(&text).ok()?;
        if sel.key != key {
            return None;
        }
        self.lock().insert(key.to_string(), sel.clone());
        Some(sel)
    }

    /// Remembers a selection; a disk write failure is returned but the memory copy stays.
    pub fn put(&self, sel: CachedSelection) -> std::io::Result<()> {
        let file = self.file(&sel.key);
        let json = serde_json::to_vec_pretty(&sel).map_err(std::io::Error::other);
        self.lock().insert(sel.key.clone(), sel);
        match file {
            Some(path) => crate::util::fsx::atomic_write(&path, &json?),
            None => Ok(()),
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedSelection>> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The cache key of a model selection: everything that can change its answer.
pub fn selection_key(
    question: &str,
    options: &IndexMap<String, String>,
    dataset: &str,
    category: &str,
    knowledge_hash: &str,
    template_text: &str,
    backend: &str,
) -> String {
    let opts: Vec<[&str; 2]> = options
        .iter()
        .map(|(l, t)| [l.as_str(), t.as_str()])
        .collect();
    let material = serde_json::json!([
        question,
        opts,
        dataset,
        category,
        knowledge_hash,
        template_text,
        backend
    ]);
    crate::util::fsx::sha256_bytes(material.to_string().as_bytes())
}

/// Names and titles of entries that a model's reply mentions (for highlighting).
pub fn mentioned_terms(entries: &CategoryKnowledge, reply: &str) -> Vec<String> {
    let lower = reply.to_lowercase();
    entry_terms(entries)
        .into_iter()
        .filter(|t| lower.contains(&t.to_lowercase()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> IndexMap<String, String> {
        list.iter()
            .enumerate()
            .map(|(i, o)| (((b'A' + i as u8) as char).to_string(), o.to_string()))
            .collect()
    }

    #[test]
    fn category_lookup_maps_and_searches() {
        let text = r#"{"MVTec": {"bottle": {"good": "g"}}, "VisA": {"candle": {"good": "c"}}, "X": {"candle": {"good": "x"}}}"#;
        let kb = KnowledgeBase::from_json_str(text, std::path::Path::new("k.json")).unwrap();
        assert_eq!(
            find_category(&kb, Some("DS-MVTec"), "bottle").unwrap().0,
            "MVTec"
        );
        assert_eq!(find_category(&kb, None, "bottle").unwrap().0, "MVTec");
        assert_eq!(
            find_category(&kb, Some("VisA"), "candle").unwrap().0,
            "VisA"
        );
        // Ambiguous without a dataset.
        assert!(find_category(&kb, None, "candle").is_none());
        assert!(find_category(&kb, Some("Elsewhere"), "nothing").is_none());
    }

    #[test]
    fn cache_round_trips_through_disk_and_ignores_damage() {
        let dir = tempfile::tempdir().unwrap();
        let key = selection_key("Q?", &opts(&["Yes"]), "D", "c", "h", "t", "b");
        assert_eq!(key.len(), 64);
        assert_ne!(
            key,
            selection_key("Q?", &opts(&["Yes"]), "D", "other", "h", "t", "b")
        );
        let cache = KnowledgeCache::new(Some(dir.path().to_path_buf()));
        assert!(cache.get(&key).is_none());
        let sel = CachedSelection {
            key: key.clone(),
            text: "short".into(),
            raw: " short ".into(),
            backend: "b".into(),
        };
        cache.put(sel.clone()).unwrap();
        let fresh = KnowledgeCache::new(Some(dir.path().to_path_buf()));
        assert_eq!(fresh.get(&key), Some(sel));
        std::fs::write(dir.path().join(format!("{key}.json")), "{broken").unwrap();
        assert!(
            KnowledgeCache::new(Some(dir.path().to_path_buf()))
                .get(&key)
                .is_none()
        );
        assert!(cache.get("../../etc/passwd").is_none());
    }

    #[test]
    fn renderings() {
        let c: CategoryKnowledge = [
            ("good", " <Normal>\n Description: fine."),
            ("scratch_head", "A line."),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .into_iter()
        .collect();
        assert_eq!(join_texts(&c), " <Normal>\n Description: fine.\nA line.");
        assert_eq!(name_lines(c.iter().skip(1)), "scratch head: A line.");
        assert_eq!(entry_terms(&c), ["scratch head"]);
        assert_eq!(
            mentioned_terms(&c, "Look for a Scratch Head mark"),
            ["scratch head"]
        );
    }
}
