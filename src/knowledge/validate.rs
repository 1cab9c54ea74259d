//! Checks a curator (and the loader) relies on before knowledge reaches a model.
//!
//! Measures, so that a curator can reason about a warning:
//! * Token estimate: `ceil(characters / 4)`, the usual rule of thumb for English
//!   text with GPT-style BPE tokenisers: an estimate for budgeting, not a count.
//! * Near-duplicate: the word-level similarity ratio `2 * matched / (words_a + words_b)`
//!   (the measure of Python's `difflib.SequenceMatcher.ratio`, here over the words
//!   of a Myers diff from the `similar` crate) of the two texts after lower-casing and collapsing
//!   whitespace. Pairs at or above [`ValidationOptions::near_duplicate_ratio`] are
//!   reported; a cheap word-count bound skips pairs that cannot reach it.

use std::collections::HashMap;

use serde::Serialize;

use super::facts::DatasetFacts;
use super::{CategoryKnowledge, EntryText, KnowledgeBase, NORMAL_ENTRY};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    EmptyText,
    MissingTitle,
    EmptyDescription,
    MissingGood,
    EmptyCategory,
    DuplicateKey,
    DuplicateText,
    NearDuplicateText,
    OverBudget,
    /// A defect entry that no image folder and no question option of the dataset names.
    UnreferencedEntry,
    /// A defect folder of the dataset that has no entry.
    MissingEntry,
}

/// The tunable parts of validation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValidationOptions {
    /// Entries estimated above this many tokens get a warning.
    pub token_budget: usize,
    /// Word-level similarity at or above which two entries are near-duplicates.
    pub near_duplicate_ratio: f32,
}

impl Default for ValidationOptions {
    /// MMAD's longest texts run to about 3,100 characters (about 780 tokens), so
    /// 1,000 tokens flags only texts longer than anything in the benchmark's file.
    fn default() -> Self {
        ValidationOptions {
            token_budget: 1000,
            near_duplicate_ratio: 0.9,
        }
    }
}

/// Approximate tokens of a text: `ceil(chars / 4)` (see the module notes).
pub fn approx_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

/// Word-level similarity of two texts in `[0, 1]` after normalising case and
/// whitespace (see the module notes).
pub fn similarity(a: &str, b: &str) -> f32 {
    let (a, b) = (normalise(a), normalise(b));
    word_ratio(&a, &b)
}

fn word_ratio(a: &str, b: &str) -> f32 {
    WordIds::new([a, b]).ratio(0, 1)
}

/// The words of a category's texts as small integers, so that the pairwise
/// comparisons (run on every keystroke) compare integers, not strings.
struct WordIds {
    ids: Vec<Vec<u32>>,
    sorted: Vec<Vec<u32>>,
}

impl WordIds {
    fn new<'a>(texts: impl IntoIterator<Item = &'a str>) -> WordIds {
        let mut interner: HashMap<&str, u32> = HashMap::new();
        let ids: Vec<Vec<u32>> = texts
            .into_iter()
            .map(|t| {
                t.split(' ')
                    .filter(|w| !w.is_empty())
                    .map(|w| {
                        let next = interner.len() as u32;
                        *interner.entry(w).or_insert(next)
                    })
                    .collect()
            })
            .collect();
        let sorted = ids
            .iter()
            .map(|v| {
                let mut s = v.clone();
                s.sort_unstable();
                s
            })
            .collect();
        WordIds { ids, sorted }
    }

    /// `2 * matched / total` over a Myers diff of the word sequences.
    fn ratio(&self, i: usize, j: usize) -> f32 {
        let (a, b) = (&self.ids[i], &self.ids[j]);
        if a.is_empty() && b.is_empty() {
            return 1.0;
        }
        let ops = similar::capture_diff_slices(similar::Algorithm::Myers, a, b);
        similar::get_diff_ratio(&ops, a.len(), b.len())
    }

    /// An upper bound of [`WordIds::ratio`]: matched words can never exceed the
    /// multiset intersection of the two texts' words (nor the shorter text).
    fn bound(&self, i: usize, j: usize) -> f32 {
        let (a, b) = (&self.sorted[i], &self.sorted[j]);
        let total = a.len() + b.len();
        if total == 0 {
            return 1.0;
        }
        let (mut x, mut y, mut common) = (0, 0, 0usize);
        while x < a.len() && y < b.len() {
            match a[x].cmp(&b[y]) {
                std::cmp::Ordering::Less => x += 1,
                std::cmp::Ordering::Greater => y += 1,
                std::cmp::Ordering::Equal => {
                    common += 1;
                    x += 1;
                    y += 1;
                }
            }
        }
        (2 * common) as f32 / total as f32
    }
}

/// One validation finding, located precisely enough to jump to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    pub kind: ProblemKind,
    pub dataset: String,
    pub category: String,
    pub entry: Option<String>,
    pub message: String,
}

pub(super) fn validate(
    kb: &KnowledgeBase,
    options: &ValidationOptions,
    facts: Option<&DatasetFacts>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut push = |severity, kind, ds: &str, cat: &str, entry: Option<&str>, message: String| {
        out.push(Problem {
            severity,
            kind,
            dataset: ds.to_string(),
            category: cat.to_string(),
            entry: entry.map(str::to_string),
            message,
        })
    };
    for d in &kb.duplicate_keys {
        push(
            Severity::Error,
            ProblemKind::DuplicateKey,
            &d.dataset,
            &d.category,
            Some(&d.entry),
            format!(
                "{}/{}: entry `{}` appears more than once; only the last text is kept",
                d.dataset, d.category, d.entry
            ),
        );
    }
    for (ds, cats) in &kb.datasets {
        for (cat, entries) in cats {
            let loc = format!("{ds}/{cat}");
            if entries.is_empty() {
                push(
                    Severity::Error,
                    ProblemKind::EmptyCategory,
                    ds,
                    cat,
                    None,
                    format!("{loc}: category has no entries"),
                );
                continue;
            }
            if !entries.contains_key(NORMAL_ENTRY) {
                push(
                    Severity::Error,
                    ProblemKind::MissingGood,
                    ds,
                    cat,
                    None,
                    format!("{loc}: no `good` entry describing the normal part"),
                );
            }
            for (name, text) in entries {
                if text.trim().is_empty() {
                    push(
                        Severity::Error,
                        ProblemKind::EmptyText,
                        ds,
                        cat,
                        Some(name),
                        format!("{loc}/{name}: text is empty"),
                    );
                    continue;
                }
                let parsed = EntryText::parse(text);
                if parsed.title.is_none() {
                    push(
                        Severity::Warning,
                        ProblemKind::MissingTitle,
                        ds,
                        cat,
                        Some(name),
                        format!("{loc}/{name}: first line is not a `<Title>`"),
                    );
                }
                if parsed.description.is_empty() {
                    push(
                        Severity::Error,
                        ProblemKind::EmptyDescription,
                        ds,
                        cat,
                        Some(name),
                        format!("{loc}/{name}: title but no description"),
                    );
                }
            }
            let normalised: Vec<(String, &String)> = entries
                .iter()
                .filter(|(_, t)| !t.trim().is_empty())
                .map(|(n, t)| (normalise(t), n))
                .collect();
            let words = WordIds::new(normalised.iter().map(|(t, _)| t.as_str()));
            for (i, (text_i, name_i)) in normalised.iter().enumerate() {
                if let Some((_, first)) = normalised[..i].iter().find(|(t, _)| t == text_i) {
                    push(
                        Severity::Warning,
                        ProblemKind::DuplicateText,
                        ds,
                        cat,
                        Some(name_i),
                        format!("{loc}/{name_i}: same text as `{first}`"),
                    );
                } else if let Some((ratio, other)) = (0..i)
                    .filter(|&j| words.bound(i, j) >= options.near_duplicate_ratio)
                    .map(|j| (words.ratio(i, j), normalised[j].1))
                    .filter(|(r, _)| *r >= options.near_duplicate_ratio)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                {
                    push(
                        Severity::Warning,
                        ProblemKind::NearDuplicateText,
                        ds,
                        cat,
                        Some(name_i),
                        format!(
                            "{loc}/{name_i}: {:.0} % the same words as `{other}` (near-duplicate)",
                            ratio * 100.0
                        ),
                    );
                }
            }
            for (name, text) in entries {
                let tokens = approx_tokens(text);
                if tokens > options.token_budget {
                    push(
                        Severity::Warning,
                        ProblemKind::OverBudget,
                        ds,
                        cat,
                        Some(name),
                        format!(
                            "{loc}/{name}: about {tokens} tokens, over the budget of {}",
                            options.token_budget
                        ),
                    );
                }
            }
            if let Some(cf) = facts.and_then(|f| f.category(ds, cat)) {
                let referenced = referenced_by_options(entries, &cf.option_texts);
                for name in entries.keys().filter(|n| n.as_str() != NORMAL_ENTRY) {
                    if !cf.defect_images.contains_key(name) && !referenced.contains(name) {
                        push(
                            Severity::Warning,
                            ProblemKind::UnreferencedEntry,
                            ds,
                            cat,
                            Some(name),
                            format!(
                                "{loc}/{name}: no image folder and no question option of the dataset refers to this entry"
                            ),
                        );
                    }
                }
                for (folder, images) in &cf.defect_images {
                    if !entries.contains_key(folder) {
                        push(
                            Severity::Warning,
                            ProblemKind::MissingEntry,
                            ds,
                            cat,
                            None,
                            format!(
                                "{loc}: the dataset has a defect folder `{folder}` ({} images) with no entry",
                                images.len()
                            ),
                        );
                    }
                }
            }
        }
    }
    out.sort_by_key(|p| p.severity);
    out
}

/// Entry names that some option names, by the Knowledge Guide's own option matching.
fn referenced_by_options(
    entries: &CategoryKnowledge,
    option_texts: &indexmap::IndexSet<String>,
) -> std::collections::HashSet<String> {
    let options: indexmap::IndexMap<String, String> = option_texts
        .iter()
        .enumerate()
        .map(|(i, t)| (i.to_string(), t.clone()))
        .collect();
    super::options::select_by_options(entries, &options)
        .matches
        .into_iter()
        .map(|m| m.entry)
        .collect()
}

fn normalise(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use std::path::Path;

    #[test]
    fn finds_each_kind_of_problem() {
        let text = r#"{"D": {
            "ok": {"good": "<N>\nDescription: fine", "dent": "<Dent>\nDescription: a dent"},
            "bad": {"scratch": "", "hole": "no title here", "stain": "<Stain>\nDescription:  ",
                    "crack": "No  title here", "crack": "x"},
            "empty": {}
        }}"#;
        let kb = KnowledgeBase::from_json_str(text, Path::new("k.json")).unwrap();
        let problems = kb.validate();
        let kinds: Vec<(ProblemKind, Option<&str>)> = problems
            .iter()
            .map(|p| (p.kind, p.entry.as_deref()))
            .collect();
        assert!(kinds.contains(&(ProblemKind::DuplicateKey, Some("crack"))));
        assert!(kinds.contains(&(ProblemKind::MissingGood, None)));
        assert!(kinds.contains(&(ProblemKind::EmptyText, Some("scratch"))));
        assert!(kinds.contains(&(ProblemKind::MissingTitle, Some("hole"))));
        assert!(kinds.contains(&(ProblemKind::EmptyDescription, Some("stain"))));
        assert!(kinds.contains(&(ProblemKind::EmptyCategory, None)));
        assert!(!problems.iter().any(|p| p.category == "ok"));
        // Errors sort before warnings.
        let first_warning = problems
            .iter()
            .position(|p| p.severity == Severity::Warning)
            .unwrap();
        assert!(
            problems[first_warning..]
                .iter()
                .all(|p| p.severity == Severity::Warning)
        );
    }

    #[test]
    fn duplicate_text_is_a_warning() {
        let text =
            r#"{"D": {"c": {"good": "<G>\nDescription: same", "a": "<G>\nDescription:  SAME"}}}"#;
        let kb = KnowledgeBase::from_json_str(text, Path::new("k.json")).unwrap();
        let p = kb.validate();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].kind, ProblemKind::DuplicateText);
        assert_eq!(p[0].entry.as_deref(), Some("a"));
    }

    fn sample_facts() -> DatasetFacts {
        let ds = crate::dataset::MmadDataset::load(&crate::assets_dir().join("sample/mmad.json"))
            .unwrap();
        DatasetFacts::from_dataset(&ds)
    }

    fn sample_kb() -> KnowledgeBase {
        KnowledgeBase::load(&crate::assets_dir().join("sample/domain_knowledge.json")).unwrap()
    }

    #[test]
    fn sample_knowledge_fits_the_sample_dataset() {
        let p = sample_kb().validate_with(&ValidationOptions::default(), Some(&sample_facts()));
        assert!(p.is_empty(), "{p:#?}");
    }

    #[test]
    fn dataset_checks_find_missing_and_unreferenced_entries() {
        let mut kb = sample_kb();
        let washer = &mut kb.datasets["Sample"]["washer"];
        washer.shift_remove("notch");
        washer.insert(
            "burr".into(),
            "<Burr>\nDescription: a sharp raised edge".into(),
        );
        let p = kb.validate_with(&ValidationOptions::default(), Some(&sample_facts()));
        let missing = p
            .iter()
            .find(|p| p.kind == ProblemKind::MissingEntry)
            .unwrap();
        assert!(missing.message.contains("`notch`"), "{}", missing.message);
        assert_eq!(
            (missing.category.as_str(), missing.entry.as_deref()),
            ("washer", None)
        );
        let unref = p
            .iter()
            .find(|p| p.kind == ProblemKind::UnreferencedEntry)
            .unwrap();
        assert_eq!(unref.entry.as_deref(), Some("burr"));
        // Without a dataset these checks cannot run.
        assert!(!kb.validate().iter().any(|p| matches!(
            p.kind,
            ProblemKind::MissingEntry | ProblemKind::UnreferencedEntry
        )));
    }

    #[test]
    fn an_option_naming_an_entry_counts_as_a_reference() {
        let mut kb = sample_kb();
        // "Scratch" is offered as an option in washer questions; move the entry to a
        // name no folder has but the option still names.
        let washer = &mut kb.datasets["Sample"]["washer"];
        let text = washer.shift_remove("scratch").unwrap();
        washer.insert("scratches".into(), text);
        let p = kb.validate_with(&ValidationOptions::default(), Some(&sample_facts()));
        assert!(
            !p.iter().any(|p| p.kind == ProblemKind::UnreferencedEntry
                && p.entry.as_deref() == Some("scratches")),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|p| p.kind == ProblemKind::MissingEntry && p.message.contains("`scratch`"))
        );
    }

    #[test]
    fn budget_and_near_duplicates() {
        let base = "a thin dark line crosses the polished surface of the ring and catches the light at one end while the rest stays matte";
        let text = format!(
            r#"{{"D": {{"c": {{"good": "<G>\nDescription: {base}", "a": "<A>\nDescription: {base} again", "b": "<B>\nDescription: something else entirely"}}}}}}"#
        );
        let kb = KnowledgeBase::from_json_str(&text, Path::new("k.json")).unwrap();
        let p = kb.validate();
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].kind, ProblemKind::NearDuplicateText);
        assert_eq!(p[0].entry.as_deref(), Some("a"));
        assert!(p[0].message.contains("`good`"), "{}", p[0].message);
        let strict = ValidationOptions {
            token_budget: 20,
            near_duplicate_ratio: 1.0,
        };
        let p = kb.validate_with(&strict, None);
        let over: Vec<_> = p
            .iter()
            .filter(|p| p.kind == ProblemKind::OverBudget)
            .map(|p| p.entry.as_deref().unwrap())
            .collect();
        assert_eq!(over, ["good", "a"]);
        assert!(!p.iter().any(|p| p.kind == ProblemKind::NearDuplicateText));
        assert_eq!(approx_tokens("abcd"), 1);
        assert_eq!(approx_tokens("abcde"), 2);
        assert_eq!(approx_tokens("éééé"), 1);
    }

    #[test]
    fn similarity_is_word_level_and_bounded() {
        assert_eq!(similarity("A b  C", "a B c"), 1.0);
        assert_eq!(similarity("one two", "three four"), 0.0);
        let r = similarity("one two three four", "one two three five");
        assert!((r - 0.75).abs() < 1e-6, "{r}");
        for (a, b) in [("x y z", "z y x"), ("a a b", "a b b c"), ("", "a")] {
            let w = super::WordIds::new([a, b]);
            assert!(w.bound(0, 1) >= w.ratio(0, 1), "{a} / {b}");
        }
    }

    #[test]
    fn validation_of_the_bundled_file_is_fast() {
        let kb = KnowledgeBase::load(&crate::bundled_knowledge_path()).unwrap();
        let facts = sample_facts();
        // The fastest of several runs: a machine busy with other tests slows some
        // runs down, but only slower code slows all of them.
        let each = (0..7)
            .map(|_| {
                let start = std::time::Instant::now();
                kb.validate_with(&ValidationOptions::default(), Some(&facts));
                start.elapsed()
            })
            .min()
            .unwrap();
        // Re-run on every keystroke: it must stay well inside a frame even unoptimised.
        assert!(each < std::time::Duration::from_millis(50), "{each:?}");
    }
}
