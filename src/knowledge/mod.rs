//! The knowledge base: per-category descriptions of normal parts and defects, in
//! MMAD's `domain_knowledge.json` shape `{dataset: {category: {entry: text}}}`.

pub mod diff;
pub mod facts;
pub mod markdown;
pub mod options;
mod validate;
pub mod versions;

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

use crate::util::pyjson::{self, JsonStyle};

pub use facts::{CategoryFacts, DatasetFacts};
pub use validate::{Problem, ProblemKind, Severity, ValidationOptions, approx_tokens, similarity};

/// Entry name -> text, in file order (`good` first by convention).
pub type CategoryKnowledge = IndexMap<String, String>;

/// The entry that describes a defect-free part.
pub const NORMAL_ENTRY: &str = "good";

#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON at line {line}, column {column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{path}: at `{at}`: {message} (expected {{dataset: {{category: {{entry: text}}}}}}, line {line}, column {column})"
    )]
    Shape {
        path: PathBuf,
        at: String,
        message: String,
        line: usize,
        column: usize,
    },
}

/// Where an entry lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct EntryRef {
    pub dataset: String,
    pub category: String,
    pub entry: String,
}

/// A knowledge base as loaded from (or about to be written to) disk.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KnowledgeBase {
    pub datasets: IndexMap<String, IndexMap<String, CategoryKnowledge>>,
    /// The on-disk layout to reproduce when saving.
    pub style: JsonStyle,
    /// Keys that appeared twice in the file (the later text won, as in Python).
    pub duplicate_keys: Vec<EntryRef>,
}

impl KnowledgeBase {
    pub fn load(path: &Path) -> Result<KnowledgeBase, KnowledgeError> {
        let text = crate::util::fsx::read_text_limited(path, crate::util::fsx::TEXT_FILE_LIMIT)
            .map_err(|source| KnowledgeError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        KnowledgeBase::from_json_str(&text, path)
    }

    pub fn from_json_str(text: &str, source: &Path) -> Result<KnowledgeBase, KnowledgeError> {
        let body = text.trim_start_matches('\u{feff}');
        let mut de = serde_json::Deserializer::from_str(body);
        let raw: Pairs<Pairs<Pairs<String>>> =
            serde_path_to_error::deserialize(&mut de).map_err(|e| shape_error(source, e))?;
        de.end().map_err(|e| syntax_error(source, &e))?;
        let mut kb = KnowledgeBase {
            style: JsonStyle::detect(body),
            ..Default::default()
        };
        for (dataset, categories) in raw.0 {
            let ds = kb.datasets.entry(dataset.clone()).or_default();
            for (category, entries) in categories.0 {
                let cat = ds.entry(category.clone()).or_default();
                for (entry, text) in entries.0 {
                    if cat.insert(entry.clone(), text).is_some() {
                        kb.duplicate_keys.push(EntryRef {
                            dataset: dataset.clone(),
                            category: category.clone(),
                            entry,
                        });
                    }
                }
            }
        }
        Ok(kb)
    }

    /// The JSON text in the file's own layout (MMAD's by default).
    pub fn to_json_string(&self) -> String {
        pyjson::to_string(&self.to_value(), self.style)
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(&self.datasets).unwrap_or(serde_json::Value::Null)
    }

    /// Writes atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<(), KnowledgeError> {
        crate::util::fsx::atomic_write(path, self.to_json_string().as_bytes()).map_err(|source| {
            KnowledgeError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// SHA-256 of the canonical content; runs record it as the knowledge version.
    pub fn content_hash(&self) -> String {
        crate::util::fsx::sha256_bytes(
            pyjson::to_string(&self.to_value(), JsonStyle::default()).as_bytes(),
        )
    }

    /// The entries for a query's dataset folder and category (DS-MVTec and
    /// MVTec-AD share MMAD's `MVTec` knowledge).
    pub fn category(&self, dataset_folder: &str, category: &str) -> Option<&CategoryKnowledge> {
        let key = knowledge_dataset_key(dataset_folder);
        self.datasets
            .get(key)
            .or_else(|| self.datasets.get(dataset_folder))
            .and_then(|d| d.get(category))
    }

    pub fn entry_count(&self) -> usize {
        self.datasets
            .values()
            .flat_map(|d| d.values())
            .map(|c| c.len())
            .sum()
    }

    pub fn category_count(&self) -> usize {
        self.datasets.values().map(|d| d.len()).sum()
    }

    /// Everything that is wrong or suspicious, errors first.
    pub fn validate(&self) -> Vec<Problem> {
        validate::validate(self, &ValidationOptions::default(), None)
    }

    /// Validation with a token budget and, when a dataset is loaded, the checks
    /// against its defect folders and question options.
    pub fn validate_with(
        &self,
        options: &ValidationOptions,
        facts: Option<&DatasetFacts>,
    ) -> Vec<Problem> {
        validate::validate(self, options, facts)
    }

    /// The text of one entry.
    pub fn entry(&self, dataset: &str, category: &str, entry: &str) -> Option<&String> {
        self.datasets.get(dataset)?.get(category)?.get(entry)
    }
}

/// The knowledge key MMAD uses for a dataset folder.
pub fn knowledge_dataset_key(dataset_folder: &str) -> &str {
    match dataset_folder {
        "DS-MVTec" | "MVTec-AD" | "MVTec" => "MVTec",
        other => other,
    }
}

/// A knowledge text split into MMAD's `<Title>` line and its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryText {
    pub title: Option<String>,
    pub description: String,
}

impl EntryText {
    /// Reads `<Title>\nDescription: ...` (MMAD's texts start with a space; that is tolerated).
    pub fn parse(text: &str) -> EntryText {
        let trimmed = text.trim_start();
        let (first, rest) = trimmed.split_once('\n').unwrap_or((trimmed, ""));
        let first_t = first.trim();
        if first_t.len() >= 2 && first_t.starts_with('<') && first_t.ends_with('>') {
            let title = first_t[1..first_t.len() - 1].trim().to_string();
            EntryText {
                title: Some(title),
                description: strip_description_label(rest),
            }
        } else {
            EntryText {
                title: None,
                description: strip_description_label(trimmed),
            }
        }
    }

    /// The canonical text form.
    pub fn compose(&self) -> String {
        match &self.title {
            Some(t) => format!("<{t}>\nDescription: {}", self.description),
            None => format!("Description: {}", self.description),
        }
    }
}

fn strip_description_label(s: &str) -> String {
    let t = s.trim();
    t.strip_prefix("Description:")
        .unwrap_or(t)
        .trim()
        .to_string()
}

/// Key/value pairs in file order, duplicates kept, so validation can report them.
struct Pairs<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Pairs<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PairsVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for PairsVisitor<V> {
            type Value = Pairs<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    out.push((k, v));
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(PairsVisitor(std::marker::PhantomData))
    }
}

fn syntax_error(path: &Path, e: &serde_json::Error) -> KnowledgeError {
    let msg = e.to_string();
    let message = match msg.rfind(" at line ") {
        Some(p) => msg[..p].to_string(),
        None => msg,
    };
    KnowledgeError::Syntax {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message,
    }
}

fn shape_error(path: &Path, e: serde_path_to_error::Error<serde_json::Error>) -> KnowledgeError {
    let inner = e.inner();
    if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        return syntax_error(path, inner);
    }
    let at = e.path().to_string();
    let KnowledgeError::Syntax {
        line,
        column,
        message,
        ..
    } = syntax_error(path, inner)
    else {
        unreachable!("syntax_error always builds Syntax")
    };
    KnowledgeError::Shape {
        path: path.to_path_buf(),
        at: if at == "." { "(top level)".into() } else { at },
        message,
        line,
        column,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MMAD_STYLE: &str = "{\n    \"MVTec\": {\n        \"bottle\": {\n            \"good\": \" <Normal Bottle>\\n Description: A round rim \\u00e9.\",\n            \"broken_large\": \" <Broken>\\n Description: A big chip.\"\n        }\n    },\n    \"VisA\": {}\n}";

    #[test]
    fn round_trip_is_byte_stable() {
        let kb = KnowledgeBase::from_json_str(MMAD_STYLE, Path::new("k.json")).unwrap();
        assert_eq!(kb.to_json_string(), MMAD_STYLE);
        let two_space = "{\n  \"A\": {\n    \"c\": {\n      \"good\": \"é\"\n    }\n  }\n}\n";
        let kb = KnowledgeBase::from_json_str(two_space, Path::new("k.json")).unwrap();
        assert_eq!(kb.to_json_string(), two_space);
    }

    #[test]
    fn keeps_order_and_maps_dataset_keys() {
        let kb = KnowledgeBase::from_json_str(MMAD_STYLE, Path::new("k.json")).unwrap();
        let bottle = kb.category("DS-MVTec", "bottle").unwrap();
        assert_eq!(bottle.keys().collect::<Vec<_>>(), ["good", "broken_large"]);
        assert!(kb.category("MVTec-AD", "bottle").is_some());
        assert!(kb.category("VisA", "bottle").is_none());
        assert_eq!((kb.entry_count(), kb.category_count()), (2, 1));
    }

    #[test]
    fn duplicate_keys_are_recorded() {
        let text = r#"{"D": {"c": {"good": "<G>\nDescription: a", "x": "1", "x": "2"}}}"#;
        let kb = KnowledgeBase::from_json_str(text, Path::new("k.json")).unwrap();
        assert_eq!(kb.datasets["D"]["c"]["x"], "2");
        assert_eq!(kb.duplicate_keys.len(), 1);
        assert_eq!(kb.duplicate_keys[0].entry, "x");
    }

    #[test]
    fn wrong_shape_names_location() {
        let text = "{\"D\": {\"c\": {\"good\": 5}}}";
        let err = KnowledgeBase::from_json_str(text, Path::new("k.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("D.c.good"), "{err}");
        let err =
            KnowledgeBase::from_json_str("{\"D\": {\"c\": ", Path::new("k.json")).unwrap_err();
        assert!(matches!(err, KnowledgeError::Syntax { .. }), "{err}");
        let err = KnowledgeBase::from_json_str("[]", Path::new("k.json")).unwrap_err();
        assert!(err.to_string().contains("(top level)"), "{err}");
    }

    #[test]
    fn entry_text_parses_titles() {
        let e = EntryText::parse(" <Broken Rim>\n Description: A chip in the rim.");
        assert_eq!(e.title.as_deref(), Some("Broken Rim"));
        assert_eq!(e.description, "A chip in the rim.");
        assert_eq!(e.compose(), "<Broken Rim>\nDescription: A chip in the rim.");
        let e = EntryText::parse("Just text");
        assert_eq!(e.title, None);
        assert_eq!(e.description, "Just text");
    }

    #[test]
    fn save_is_atomic_and_reloads() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("k.json");
        let mut kb = KnowledgeBase::from_json_str(MMAD_STYLE, Path::new("k.json")).unwrap();
        kb.datasets["MVTec"]["bottle"].insert("contamination".into(), "<C>\nDescription: d".into());
        kb.save(&p).unwrap();
        let back = KnowledgeBase::load(&p).unwrap();
        assert_eq!(back.datasets, kb.datasets);
        assert_ne!(back.content_hash(), KnowledgeBase::default().content_hash());
    }
}
