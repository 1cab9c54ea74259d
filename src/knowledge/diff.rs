//! Differences between two knowledge bases: which categories and entries were added,
//! removed or changed, and for a changed text which lines and words.

use serde::Serialize;

use super::KnowledgeBase;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

/// One difference. `entry` is `None` when a whole category was added or removed
/// (its entries are not listed again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub dataset: String,
    pub category: String,
    pub entry: Option<String>,
    pub old: Option<String>,
    pub new: Option<String>,
}

impl Change {
    pub fn location(&self) -> String {
        match &self.entry {
            Some(e) => format!("{}/{}/{e}", self.dataset, self.category),
            None => format!("{}/{}", self.dataset, self.category),
        }
    }
}

/// Every difference from `old` to `new`, in `new`'s order with removals where they were.
pub fn diff(old: &KnowledgeBase, new: &KnowledgeBase) -> Vec<Change> {
    let mut out = Vec::new();
    let mut datasets: Vec<&String> = old.datasets.keys().collect();
    for d in new.datasets.keys() {
        if !datasets.contains(&d) {
            datasets.push(d);
        }
    }
    for ds in datasets {
        let empty = Default::default();
        let old_cats = old.datasets.get(ds).unwrap_or(&empty);
        let new_cats = new.datasets.get(ds).unwrap_or(&empty);
        let mut cats: Vec<&String> = old_cats.keys().collect();
        for c in new_cats.keys() {
            if !cats.contains(&c) {
                cats.push(c);
            }
        }
        for cat in cats {
            let change =
                |kind, entry: Option<&String>, old: Option<&String>, new: Option<&String>| Change {
                    kind,
                    dataset: ds.clone(),
                    category: cat.clone(),
                    entry: entry.cloned(),
                    old: old.cloned(),
                    new: new.cloned(),
                };
            match (old_cats.get(cat), new_cats.get(cat)) {
                (Some(_), None) => out.push(change(ChangeKind::Removed, None, None, None)),
                (None, Some(_)) => out.push(change(ChangeKind::Added, None, None, None)),
                (Some(o), Some(n)) => {
                    let mut names: Vec<&String> = o.keys().collect();
                    for e in n.keys() {
                        if !names.contains(&e) {
                            names.push(e);
                        }
                    }
                    for name in names {
                        match (o.get(name), n.get(name)) {
                            (Some(a), None) => {
                                out.push(change(ChangeKind::Removed, Some(name), Some(a), None))
                            }
                            (None, Some(b)) => {
                                out.push(change(ChangeKind::Added, Some(name), None, Some(b)))
                            }
                            (Some(a), Some(b)) if a != b => {
                                out.push(change(ChangeKind::Changed, Some(name), Some(a), Some(b)))
                            }
                            _ => {}
                        }
                    }
                }
                (None, None) => {}
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanTag {
    Same,
    Removed,
    Inserted,
}

/// A run of text with one tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    pub tag: SpanTag,
    pub text: String,
}

/// The two sides of a word-level diff: the old text as `Same`/`Removed` spans and
/// the new one as `Same`/`Inserted` spans (adjacent spans of a tag merged), for a
/// side-by-side view. Whitespace is kept, so each side joins back to its text.
pub fn word_diff(old: &str, new: &str) -> (Vec<Span>, Vec<Span>) {
    let d = similar::TextDiff::from_words(old, new);
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for change in d.iter_all_changes() {
        let text = change.value();
        match change.tag() {
            similar::ChangeTag::Equal => {
                push(&mut left, SpanTag::Same, text);
                push(&mut right, SpanTag::Same, text);
            }
            similar::ChangeTag::Delete => push(&mut left, SpanTag::Removed, text),
            similar::ChangeTag::Insert => push(&mut right, SpanTag::Inserted, text),
        }
    }
    (left, right)
}

/// A line-level diff: each line of either text once, tagged.
pub fn line_diff(old: &str, new: &str) -> Vec<Span> {
    let d = similar::TextDiff::from_lines(old, new);
    d.iter_all_changes()
        .map(|c| Span {
            tag: match c.tag() {
                similar::ChangeTag::Equal => SpanTag::Same,
                similar::ChangeTag::Delete => SpanTag::Removed,
                similar::ChangeTag::Insert => SpanTag::Inserted,
            },
            text: c.value().trim_end_matches('\n').to_string(),
        })
        .collect()
}

fn push(spans: &mut Vec<Span>, tag: SpanTag, text: &str) {
    match spans.last_mut() {
        Some(last) if last.tag == tag => last.text.push_str(text),
        _ => spans.push(Span {
            tag,
            text: text.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn kb(json: &str) -> KnowledgeBase {
        KnowledgeBase::from_json_str(json, Path::new("k.json")).unwrap()
    }

    #[test]
    fn lists_added_removed_and_changed() {
        let a = kb(r#"{"D": {"c": {"good": "g", "x": "old x", "y": "y"}, "gone": {"good": "g"}}}"#);
        let b =
            kb(r#"{"D": {"c": {"good": "g", "x": "new x", "z": "z"}, "fresh": {"good": "g"}}}"#);
        let d = diff(&a, &b);
        let got: Vec<(ChangeKind, String)> = d.iter().map(|c| (c.kind, c.location())).collect();
        assert_eq!(
            got,
            [
                (ChangeKind::Changed, "D/c/x".to_string()),
                (ChangeKind::Removed, "D/c/y".to_string()),
                (ChangeKind::Added, "D/c/z".to_string()),
                (ChangeKind::Removed, "D/gone".to_string()),
                (ChangeKind::Added, "D/fresh".to_string()),
            ]
        );
        assert_eq!(d[0].old.as_deref(), Some("old x"));
        assert_eq!(d[0].new.as_deref(), Some("new x"));
        assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn word_diff_marks_words_and_rebuilds_both_texts() {
        let (l, r) = word_diff("a round rim, smooth", "a square rim, smooth and clean");
        let join = |s: &[Span]| s.iter().map(|x| x.text.as_str()).collect::<String>();
        assert_eq!(join(&l), "a round rim, smooth");
        assert_eq!(join(&r), "a square rim, smooth and clean");
        assert!(
            l.iter()
                .any(|s| s.tag == SpanTag::Removed && s.text == "round")
        );
        assert!(
            r.iter()
                .any(|s| s.tag == SpanTag::Inserted && s.text == "square")
        );
        assert!(
            r.iter()
                .any(|s| s.tag == SpanTag::Inserted && s.text.contains("clean"))
        );
        let lines = line_diff("one\ntwo\n", "one\nthree\n");
        let tags: Vec<(SpanTag, &str)> = lines.iter().map(|s| (s.tag, s.text.as_str())).collect();
        assert_eq!(
            tags,
            [
                (SpanTag::Same, "one"),
                (SpanTag::Removed, "two"),
                (SpanTag::Inserted, "three")
            ]
        );
    }
}
