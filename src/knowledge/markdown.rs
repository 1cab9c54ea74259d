//! A Markdown rendering of the knowledge for people who review it.
//!
//! One file per category (`<dataset>/<category>.md` under the chosen folder): a
//! category's texts are reviewed by whoever knows that product, files of a few
//! kilobytes are read in one go, and a change to one product shows up as a change
//! to one file in a review tool. The export is for reading only; the JSON file
//! stays the source of truth.

use std::path::{Path, PathBuf};

use super::{CategoryKnowledge, EntryText, KnowledgeBase, NORMAL_ENTRY};

#[derive(Debug, thiserror::Error)]
pub enum MarkdownError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{name}` cannot be used as a file name")]
    BadName { name: String },
}

/// One category as Markdown: `good` first, then the defects in file order.
pub fn category_markdown(dataset: &str, category: &str, entries: &CategoryKnowledge) -> String {
    let mut out = format!("# {dataset} / {category}\n\n");
    let names = entries
        .keys()
        .filter(|n| n.as_str() == NORMAL_ENTRY)
        .chain(entries.keys().filter(|n| n.as_str() != NORMAL_ENTRY));
    for name in names {
        let parsed = EntryText::parse(&entries[name]);
        let kind = if name == NORMAL_ENTRY {
            "normal"
        } else {
            "defect"
        };
        out.push_str(&format!("## `{name}` ({kind})\n\n"));
        match &parsed.title {
            Some(t) => out.push_str(&format!("**{t}**\n\n")),
            None => out.push_str("*(no title line)*\n\n"),
        }
        let body = if parsed.description.is_empty() {
            "*(empty description)*".to_string()
        } else {
            parsed.description.clone()
        };
        out.push_str(&body);
        out.push_str("\n\n");
    }
    out
}

/// Writes one Markdown file per category under `dir`; returns the files written.
pub fn export_markdown(kb: &KnowledgeBase, dir: &Path) -> Result<Vec<PathBuf>, MarkdownError> {
    let mut written = Vec::new();
    for (ds, cats) in &kb.datasets {
        for (cat, entries) in cats {
            let path = dir
                .join(safe_name(ds)?)
                .join(format!("{}.md", safe_name(cat)?));
            crate::util::fsx::atomic_write(&path, category_markdown(ds, cat, entries).as_bytes())
                .map_err(|source| MarkdownError::Write {
                path: path.clone(),
                source,
            })?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Dataset and category names become path components: refuse anything that could
/// leave the folder or is not a plain name.
fn safe_name(name: &str) -> Result<&str, MarkdownError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| matches!(c, '/' | '\\' | ':' | '\0') || c.is_control());
    if bad {
        Err(MarkdownError::BadName {
            name: name.to_string(),
        })
    } else {
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_per_category_with_good_first() {
        let kb = KnowledgeBase::from_json_str(
            r#"{"D": {"c": {"hole": " <Hole>\n Description: a hole.", "good": "<Fine>\nDescription: fine.", "x": "<X>\nDescription: "}}, "E": {"d": {"good": "plain"}}}"#,
            Path::new("k.json"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = export_markdown(&kb, dir.path()).unwrap();
        assert_eq!(
            files,
            [dir.path().join("D/c.md"), dir.path().join("E/d.md")]
        );
        let c = std::fs::read_to_string(&files[0]).unwrap();
        assert!(c.starts_with("# D / c\n"), "{c}");
        let good = c.find("## `good` (normal)").unwrap();
        let hole = c.find("## `hole` (defect)").unwrap();
        assert!(good < hole);
        assert!(c.contains("**Hole**\n\na hole."), "{c}");
        assert!(c.contains("*(empty description)*"), "{c}");
        let d = std::fs::read_to_string(&files[1]).unwrap();
        assert!(d.contains("*(no title line)*\n\nplain"), "{d}");
    }

    #[test]
    fn unsafe_names_are_refused() {
        let kb =
            KnowledgeBase::from_json_str(r#"{"D": {"../up": {"good": "g"}}}"#, Path::new("k.json"))
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = export_markdown(&kb, dir.path()).unwrap_err();
        assert!(err.to_string().contains("../up"), "{err}");
    }
}
