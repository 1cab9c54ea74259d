//! Checks a curator (and the loader) relies on before knowledge reaches a model.

use serde::Serialize;

use super::{EntryText, KnowledgeBase, NORMAL_ENTRY};

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

pub(super) fn validate(kb: &KnowledgeBase) -> Vec<Problem> {
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
                }
            }
        }
    }
    out.sort_by_key(|p| p.severity);
    out
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
}
