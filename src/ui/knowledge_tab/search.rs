//! Searching the draft's entries, memoised per needle and draft revision.

use std::sync::Arc;

use crate::knowledge::KnowledgeBase;

use super::tree::ordered_names;
use super::{Doc, Selection};

pub(super) struct SearchHit {
    pub(super) at: Selection,
    pub(super) context: String,
}

/// The hits for one needle on one draft revision.
pub(super) struct SearchMemo {
    needle: String,
    rev: u64,
    pub(super) hits: Arc<Vec<SearchHit>>,
    pub(super) total: usize,
}

/// The search hits for `needle` on `doc`'s draft, computed once per needle and
/// revision.
pub(super) fn memoised_search<'m>(
    memo: &'m mut Option<SearchMemo>,
    doc: &Doc,
    needle: &str,
) -> &'m SearchMemo {
    let stale = memo
        .as_ref()
        .is_none_or(|m| m.rev != doc.rev || m.needle != needle);
    if stale {
        *memo = None;
    }
    memo.get_or_insert_with(|| {
        let (hits, total) = search(&doc.draft, needle, SEARCH_LISTED);
        SearchMemo {
            needle: needle.to_string(),
            rev: doc.rev,
            hits: Arc::new(hits),
            total,
        }
    })
}

/// Search hits listed at most; the count says how many there are in all.
pub(super) const SEARCH_LISTED: usize = 200;

/// Entries whose text or name holds `needle` (case-insensitively), the first
/// `limit` of them, and how many there are in all.
pub(super) fn search(kb: &KnowledgeBase, needle: &str, limit: usize) -> (Vec<SearchHit>, usize) {
    let needle = needle.trim().to_lowercase();
    let mut out = Vec::new();
    let mut total = 0;
    for (ds, cats) in &kb.datasets {
        for (cat, entries) in cats {
            for name in ordered_names(entries) {
                let text = &entries[name];
                let lower = text.to_lowercase();
                let context = if let Some(pos) = lower.find(&needle) {
                    snippet_around(text, &lower, pos, needle.len())
                } else if name.to_lowercase().contains(&needle)
                    || cat.to_lowercase().contains(&needle)
                {
                    "(name)".to_string()
                } else {
                    continue;
                };
                total += 1;
                if out.len() < limit {
                    out.push(SearchHit {
                        at: Selection::entry(ds, cat, name),
                        context,
                    });
                }
            }
        }
    }
    (out, total)
}

pub(super) fn snippet_around(text: &str, lower: &str, pos: usize, len: usize) -> String {
    // Lower-casing can change byte lengths; fall back to the start when it did.
    if lower.len() != text.len() {
        return text.chars().take(80).collect();
    }
    let mut start = pos.saturating_sub(30);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (pos + len + 40).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    let body = text[start..end].replace('\n', " ");
    format!(
        "{}{}{}",
        if start > 0 { "…" } else { "" },
        body.trim(),
        if end < text.len() { "…" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::knowledge_tab::Doc;

    #[test]
    fn search_counts_every_hit_and_lists_the_first() {
        let kb = KnowledgeBase::load(&crate::bundled_knowledge_path()).unwrap();
        let (all, total) = search(&kb, "the", usize::MAX);
        assert_eq!(all.len(), total);
        assert!(total > 5, "{total}");
        let (some, same_total) = search(&kb, "the", 5);
        assert_eq!(some.len(), 5);
        assert_eq!(same_total, total);
    }

    #[test]
    fn search_runs_once_per_needle_and_draft_revision() {
        let kb = KnowledgeBase::load(&crate::bundled_knowledge_path()).unwrap();
        let mut doc = Doc::new("k.json".into(), kb, String::new());
        let mut memo = None;
        let first = Arc::clone(&memoised_search(&mut memo, &doc, "the").hits);
        // Another frame, nothing changed: the very same hits, not a new search.
        let again = Arc::clone(&memoised_search(&mut memo, &doc, "the").hits);
        assert!(Arc::ptr_eq(&first, &again));
        // A new needle or an edit searches again.
        let other = Arc::clone(&memoised_search(&mut memo, &doc, "scratch").hits);
        assert!(!Arc::ptr_eq(&first, &other));
        doc.edited();
        let after_edit = Arc::clone(&memoised_search(&mut memo, &doc, "scratch").hits);
        assert!(!Arc::ptr_eq(&other, &after_edit));
        assert_eq!(other.len(), after_edit.len());
    }
}
