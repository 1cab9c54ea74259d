//! MMAD's `mmad.json`: one object mapping query-image paths to their questions.

use std::fmt;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::paths::{DatasetRoot, PathError, check_relative};

/// MMAD's question types. Types we do not know are kept verbatim (`Other`) so a
/// newer benchmark file still loads, scores and round-trips.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuestionType {
    AnomalyDetection,
    DefectClassification,
    DefectLocalization,
    DefectDescription,
    DefectAnalysis,
    ObjectClassification,
    ObjectStructure,
    ObjectDetails,
    Other(String),
}

impl QuestionType {
    /// The eight types, in MMAD's usual report order.
    pub const KNOWN: [QuestionType; 8] = [
        QuestionType::AnomalyDetection,
        QuestionType::DefectClassification,
        QuestionType::DefectLocalization,
        QuestionType::DefectDescription,
        QuestionType::DefectAnalysis,
        QuestionType::ObjectClassification,
        QuestionType::ObjectStructure,
        QuestionType::ObjectDetails,
    ];

    pub fn parse(s: &str) -> QuestionType {
        QuestionType::KNOWN
            .iter()
            .find(|t| t.as_str() == s)
            .cloned()
            .unwrap_or_else(|| QuestionType::Other(s.to_string()))
    }

    /// The exact string MMAD writes in `type` and `question_type`.
    pub fn as_str(&self) -> &str {
        match self {
            QuestionType::AnomalyDetection => "Anomaly Detection",
            QuestionType::DefectClassification => "Defect Classification",
            QuestionType::DefectLocalization => "Defect Localization",
            QuestionType::DefectDescription => "Defect Description",
            QuestionType::DefectAnalysis => "Defect Analysis",
            QuestionType::ObjectClassification => "Object Classification",
            QuestionType::ObjectStructure => "Object Structure",
            QuestionType::ObjectDetails => "Object Details",
            QuestionType::Other(s) => s,
        }
    }

    /// The column a report files this type under (MMAD merges the two object
    /// analysis types into one subtask).
    pub fn report_column(&self) -> &str {
        match self {
            QuestionType::ObjectStructure | QuestionType::ObjectDetails => "Object Analysis",
            other => other.as_str(),
        }
    }

    pub fn is_known(&self) -> bool {
        !matches!(self, QuestionType::Other(_))
    }

    /// The five subtasks about defects (Echo's scope).
    pub fn is_defect_subtask(&self) -> bool {
        matches!(
            self,
            QuestionType::AnomalyDetection
                | QuestionType::DefectClassification
                | QuestionType::DefectLocalization
                | QuestionType::DefectDescription
                | QuestionType::DefectAnalysis
        )
    }
}

impl fmt::Display for QuestionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for QuestionType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for QuestionType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(QuestionType::parse(&s))
    }
}

/// One multiple-choice question about an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    #[serde(rename = "Question")]
    pub text: String,
    /// The correct option's letter (a key of `options`).
    #[serde(rename = "Answer")]
    pub answer: String,
    /// Letter -> option text, in file order. The letter of "Yes" varies: never assume it.
    #[serde(rename = "Options")]
    pub options: IndexMap<String, String>,
    #[serde(rename = "type")]
    pub qtype: QuestionType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<bool>,
}

impl Question {
    /// The option text of the correct answer, when the answer is one of the options.
    pub fn answer_text(&self) -> Option<&str> {
        self.options.get(&self.answer).map(String::as_str)
    }
}

/// Everything MMAD records about one query image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageEntry {
    #[serde(default)]
    pub image_path: String,
    pub conversation: Vec<Question>,
    /// Relative to `<dataset>/<category>/`; empty for normal images.
    #[serde(default)]
    pub mask_path: String,
    /// Root-relative normal images MMAD found most similar to the query.
    #[serde(default)]
    pub similar_templates: Vec<String>,
    /// Root-relative random normal images of the same category.
    #[serde(default)]
    pub random_templates: Vec<String>,
}

/// Why an mmad.json could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {path}: {source}")]
    Io {
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
        "{path}: expected one JSON object mapping image paths to entries (MMAD's mmad.json), found {found}"
    )]
    NotAnObject { path: PathBuf, found: &'static str },
    #[error("{path}: entry `{key}`, field `{field}`: {message} (line {line}, column {column})")]
    Field {
        path: PathBuf,
        key: String,
        field: String,
        message: String,
        line: usize,
        column: usize,
    },
    #[error("{path}: entry `{key}`, field `{field}`: {source}")]
    UnsafePath {
        path: PathBuf,
        key: String,
        field: String,
        #[source]
        source: PathError,
    },
}

/// A loaded mmad.json, keys and options in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MmadDataset {
    /// Where it was read from (for messages and run manifests).
    pub source: PathBuf,
    pub entries: IndexMap<String, ImageEntry>,
}

/// One question with the image it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct QuestionRef<'a> {
    /// Position among all questions of the file (stable across runs of the same file).
    pub index: usize,
    pub key: &'a str,
    pub entry: &'a ImageEntry,
    /// Position inside the image's conversation.
    pub turn: usize,
    pub question: &'a Question,
}

impl MmadDataset {
    pub fn load(path: &Path) -> Result<MmadDataset, DatasetError> {
        let text = crate::util::fsx::read_text_limited(path, crate::util::fsx::TEXT_FILE_LIMIT)
            .map_err(|source| DatasetError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        MmadDataset::from_json_str(&text, path)
    }

    /// Parses mmad.json text; `source` names it in errors.
    pub fn from_json_str(text: &str, source: &Path) -> Result<MmadDataset, DatasetError> {
        let text = text.trim_start_matches('\u{feff}');
        let found = match text.trim_start().as_bytes().first() {
            Some(b'{') | None => None,
            Some(b'[') => Some("an array"),
            Some(b'"') => Some("a string"),
            Some(b't' | b'f') => Some("a boolean"),
            Some(b'n') => Some("null"),
            Some(_) => Some("a number or invalid text"),
        };
        if let Some(found) = found {
            // Give syntax errors priority: "not an object" would mislead for garbage.
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
                return Err(syntax_error(source, &e));
            }
            return Err(DatasetError::NotAnObject {
                path: source.to_path_buf(),
                found,
            });
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let entries: IndexMap<String, ImageEntry> =
            serde_path_to_error::deserialize(&mut de).map_err(|e| field_error(source, e))?;
        de.end().map_err(|e| syntax_error(source, &e))?;
        let dataset = MmadDataset {
            source: source.to_path_buf(),
            entries,
        };
        dataset.check_paths()?;
        Ok(dataset)
    }

    /// Every path in the file must stay under the dataset root.
    fn check_paths(&self) -> Result<(), DatasetError> {
        let err = |key: &str, field: String, source| DatasetError::UnsafePath {
            path: self.source.clone(),
            key: key.to_string(),
            field,
            source,
        };
        for (key, entry) in &self.entries {
            check_relative(key).map_err(|e| err(key, "(key)".into(), e))?;
            if !entry.mask_path.is_empty() {
                check_relative(&entry.mask_path).map_err(|e| err(key, "mask_path".into(), e))?;
            }
            if !entry.image_path.is_empty() {
                check_relative(&entry.image_path).map_err(|e| err(key, "image_path".into(), e))?;
            }
            for (field, list) in [
                ("similar_templates", &entry.similar_templates),
                ("random_templates", &entry.random_templates),
            ] {
                for (i, t) in list.iter().enumerate() {
                    check_relative(t).map_err(|e| err(key, format!("{field}[{i}]"), e))?;
                }
            }
        }
        Ok(())
    }

    pub fn image_count(&self) -> usize {
        self.entries.len()
    }

    pub fn question_count(&self) -> usize {
        self.entries.values().map(|e| e.conversation.len()).sum()
    }

    /// All questions in file order, each with a stable global index.
    pub fn questions(&self) -> impl Iterator<Item = QuestionRef<'_>> {
        self.entries
            .iter()
            .flat_map(|(key, entry)| {
                entry
                    .conversation
                    .iter()
                    .enumerate()
                    .map(move |(turn, question)| (key.as_str(), entry, turn, question))
            })
            .enumerate()
            .map(|(index, (key, entry, turn, question))| QuestionRef {
                index,
                key,
                entry,
                turn,
                question,
            })
    }

    /// Question types this build does not know, with how often each occurs.
    pub fn unknown_types(&self) -> IndexMap<String, usize> {
        let mut out = IndexMap::new();
        for q in self.questions() {
            if let QuestionType::Other(name) = &q.question.qtype {
                *out.entry(name.clone()).or_insert(0) += 1;
            }
        }
        out
    }

    /// Non-fatal problems worth telling the user: unknown types, answers that are
    /// not among the options, option counts outside MMAD's 2..=5.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, n) in self.unknown_types() {
            out.push(format!(
                "unknown question type `{name}` ({n} question(s)); kept and scored as its own column"
            ));
        }
        for q in self.questions() {
            if !q.question.options.contains_key(&q.question.answer) {
                out.push(format!(
                    "entry `{}`, conversation[{}]: answer `{}` is not one of the options ({})",
                    q.key,
                    q.turn,
                    q.question.answer,
                    q.question
                        .options
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            let n = q.question.options.len();
            if !(2..=5).contains(&n) {
                out.push(format!(
                    "entry `{}`, conversation[{}]: {n} options (MMAD uses 2 to 5)",
                    q.key, q.turn
                ));
            }
        }
        out
    }
}

impl ImageEntry {
    /// The query image on disk.
    pub fn image_file(root: &DatasetRoot, key: &str) -> Result<PathBuf, PathError> {
        root.resolve(key)
    }

    /// The ground-truth mask on disk (`<dataset>/<category>/<mask_path>`), if any.
    pub fn mask_file(&self, root: &DatasetRoot, key: &str) -> Result<Option<PathBuf>, PathError> {
        if self.mask_path.is_empty() {
            return Ok(None);
        }
        let ds = super::dataset_of(key);
        let cat = super::category_of(key);
        root.resolve(&format!("{ds}/{cat}/{}", self.mask_path))
            .map(Some)
    }
}

fn syntax_error(path: &Path, e: &serde_json::Error) -> DatasetError {
    DatasetError::Syntax {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    }
}

fn field_error(path: &Path, e: serde_path_to_error::Error<serde_json::Error>) -> DatasetError {
    use serde_path_to_error::Segment;
    let inner = e.inner();
    if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        return syntax_error(path, inner);
    }
    let mut segments = e.path().iter();
    let key = match segments.next() {
        Some(Segment::Map { key }) => key.clone(),
        _ => String::from("(top level)"),
    };
    let mut field = String::new();
    for seg in segments {
        match seg {
            Segment::Seq { index } => field.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(key);
            }
            Segment::Enum { variant } => {
                field.push_str(&format!("::{variant}"));
            }
            Segment::Unknown => field.push_str(".?"),
        }
    }
    if field.is_empty() {
        field.push_str("(entry)");
    }
    DatasetError::Field {
        path: path.to_path_buf(),
        key,
        field,
        message: strip_position(&inner.to_string()),
        line: inner.line(),
        column: inner.column(),
    }
}

/// serde_json appends " at line L column C"; we print the position ourselves.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(pos) => msg[..pos].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_device_as_mmad_json_is_an_error_not_an_out_of_memory() {
        // Off the test thread, so a regression fails the test instead of eating memory
        // until the machine gives up.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let loaded = MmadDataset::load(Path::new("/dev/zero"));
            let _ = tx.send(loaded.map(|_| ()).map_err(|e| e.to_string()));
        });
        let err = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading /dev/zero as mmad.json must fail at once")
            .unwrap_err();
        assert!(
            err.starts_with("cannot read /dev/zero") && err.contains("not a regular file"),
            "{err}"
        );
    }

    const SAMPLE: &str = r#"{
    "DS-MVTec/bottle/image/broken_large/000.png": {
        "image_path": "image/broken_large/000.png",
        "conversation": [
            {"Question": "Is there any defect?", "Answer": "B", "Options": {"A": "No", "B": "Yes"}, "type": "Anomaly Detection", "annotation": true},
            {"Question": "Which?", "Answer": "A", "Options": {"C": "x", "A": "y", "B": "z"}, "type": "Brand New Type", "annotation": true}
        ],
        "mask_path": "rbg_mask/broken_large/000_mask.png",
        "similar_templates": ["MVTec-AD/bottle/train/good/001.png", "MVTec-AD/bottle/train/good/002.png"],
        "random_templates": ["MVTec-AD/bottle/train/good/003.png", "MVTec-AD/bottle/train/good/004.png"]
    },
    "VisA/candle/test/good/0000.JPG": {
        "image_path": "test/good/0000.JPG",
        "conversation": [
            {"Question": "Q", "Answer": "A", "Options": {"A": "Yes", "B": "No"}, "type": "Object Details", "annotation": false}
        ],
        "mask_path": "",
        "similar_templates": [],
        "random_templates": []
    }
}"#;

    fn load(text: &str) -> Result<MmadDataset, DatasetError> {
        MmadDataset::from_json_str(text, Path::new("mmad.json"))
    }

    #[test]
    fn keeps_key_and_option_order_and_unknown_types() {
        let d = load(SAMPLE).unwrap();
        let keys: Vec<_> = d.entries.keys().collect();
        assert_eq!(
            keys,
            [
                "DS-MVTec/bottle/image/broken_large/000.png",
                "VisA/candle/test/good/0000.JPG"
            ]
        );
        let q = &d.entries[0].conversation[1];
        assert_eq!(q.options.keys().collect::<Vec<_>>(), ["C", "A", "B"]);
        assert_eq!(q.qtype, QuestionType::Other("Brand New Type".into()));
        assert_eq!(d.unknown_types()["Brand New Type"], 1);
        assert_eq!(d.question_count(), 3);
        let idx: Vec<_> = d.questions().map(|q| (q.index, q.turn)).collect();
        assert_eq!(idx, [(0, 0), (1, 1), (2, 0)]);
        // Round trip keeps the unknown type's exact spelling.
        let back = serde_json::to_string(&d.entries).unwrap();
        assert!(back.contains("\"type\":\"Brand New Type\""));
    }

    #[test]
    fn wrong_field_type_names_key_and_field() {
        let bad = SAMPLE.replace(
            r#""Answer": "A", "Options": {"C""#,
            r#""Answer": 3, "Options": {"C""#,
        );
        let err = load(&bad).unwrap_err().to_string();
        assert!(
            err.contains("DS-MVTec/bottle/image/broken_large/000.png"),
            "{err}"
        );
        assert!(err.contains("conversation[1].Answer"), "{err}");
        assert!(err.contains("line 6"), "{err}");
    }

    #[test]
    fn missing_field_is_named() {
        let bad = r#"{"a/b/c.png": {"image_path": "c.png"}}"#;
        let err = load(bad).unwrap_err().to_string();
        assert!(
            err.contains("`a/b/c.png`") && err.contains("conversation"),
            "{err}"
        );
    }

    #[test]
    fn truncated_json_reports_position() {
        let err = load(&SAMPLE[..300]).unwrap_err();
        assert!(matches!(err, DatasetError::Syntax { .. }), "{err}");
        assert!(err.to_string().contains("line"), "{err}");
    }

    #[test]
    fn top_level_list_is_rejected_clearly() {
        let err = load("[1, 2]").unwrap_err().to_string();
        assert!(err.contains("found an array"), "{err}");
        let err = load("[1, 2").unwrap_err();
        assert!(matches!(err, DatasetError::Syntax { .. }));
    }

    #[test]
    fn escaping_template_is_rejected_with_field() {
        let bad = SAMPLE.replace("MVTec-AD/bottle/train/good/002.png", "../../etc/passwd");
        let err = load(&bad).unwrap_err().to_string();
        assert!(err.contains("similar_templates[1]"), "{err}");
        assert!(err.contains("escape"), "{err}");
        let bad = SAMPLE.replace("\"VisA/candle/test/good/0000.JPG\"", "\"/abs/x.png\"");
        assert!(load(&bad).unwrap_err().to_string().contains("absolute"));
    }

    #[test]
    fn mask_resolves_under_dataset_and_category() {
        let d = load(SAMPLE).unwrap();
        let root = DatasetRoot::new("/r");
        let (key, e) = d.entries.get_index(0).unwrap();
        assert_eq!(
            e.mask_file(&root, key).unwrap().unwrap(),
            PathBuf::from("/r/DS-MVTec/bottle/rbg_mask/broken_large/000_mask.png")
        );
        let (key, e) = d.entries.get_index(1).unwrap();
        assert_eq!(e.mask_file(&root, key).unwrap(), None);
    }

    #[test]
    fn warnings_flag_answer_outside_options() {
        let bad = SAMPLE.replace(
            r#""Answer": "B", "Options": {"A": "No""#,
            r#""Answer": "E", "Options": {"A": "No""#,
        );
        let d = load(&bad).unwrap();
        let w = d.warnings();
        assert!(
            w.iter()
                .any(|w| w.contains("answer `E` is not one of the options")),
            "{w:?}"
        );
        assert!(w.iter().any(|w| w.contains("Brand New Type")));
    }
}
