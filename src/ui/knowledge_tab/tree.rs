//! The tree of datasets, categories and entries, with search and Add category.

use eframe::egui;

use crate::knowledge::{EntryText, KnowledgeBase, NORMAL_ENTRY, approx_tokens};

use super::search::memoised_search;
use super::{KnowledgeState, Selection};

impl KnowledgeState {
    pub(super) fn tree_panel(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let label = ui.label("Search");
            ui.add(
                egui::TextEdit::singleline(&mut self.search)
                    .hint_text("names and texts")
                    .desired_width(f32::INFINITY),
            )
            .labelled_by(label.id);
        });
        egui::CollapsingHeader::new("Add a category")
            .id_salt("add_category")
            .show(ui, |ui| self.add_category_ui(ui));
        let Some(doc) = &self.doc else { return };
        let reveal = self.reveal.take();
        let mut select = None;
        if !self.search.trim().is_empty() {
            let memo = memoised_search(&mut self.search_hits, doc, &self.search);
            let (hits, total) = (&memo.hits, memo.total);
            let mut count = format!("{total} match{}", if total == 1 { "" } else { "es" });
            if total > hits.len() {
                count.push_str(&format!(" (the first {} listed)", hits.len()));
            }
            ui.label(count);
            egui::ScrollArea::vertical()
                .auto_shrink([false, false])
                .show(ui, |ui| {
                    for hit in hits.iter() {
                        let sel = self.selected.as_ref() == Some(&hit.at);
                        let r =
                            ui.selectable_label(sel, egui::RichText::new(hit.at.label()).strong());
                        ui.label(egui::RichText::new(&hit.context).small().weak());
                        if r.clicked() {
                            select = Some(hit.at.clone());
                        }
                    }
                });
        } else {
            egui::ScrollArea::vertical()
                .auto_shrink([false, false])
                .show(ui, |ui| {
                    for (ds, cats) in &doc.draft.datasets {
                        egui::CollapsingHeader::new(format!("{ds} ({})", cats.len()))
                            .id_salt(("kds", ds))
                            .default_open(true)
                            .show(ui, |ui| {
                                for (cat, entries) in cats {
                                    let open = self
                                        .selected
                                        .as_ref()
                                        .is_some_and(|s| &s.dataset == ds && &s.category == cat);
                                    let header = egui::CollapsingHeader::new(format!(
                                        "{cat} ({})",
                                        entries.len()
                                    ))
                                    .id_salt(("kcat", ds, cat));
                                    let show = reveal
                                        .as_ref()
                                        .is_some_and(|s| &s.dataset == ds && &s.category == cat);
                                    let header = if show {
                                        header.open(Some(true))
                                    } else {
                                        header
                                    };
                                    let r = header.show(ui, |ui| {
                                        for name in ordered_names(entries) {
                                            let at = Selection::entry(ds, cat, name);
                                            let sel = self.selected.as_ref() == Some(&at);
                                            let tokens = approx_tokens(&entries[name]);
                                            if ui
                                                .selectable_label(sel, name.as_str())
                                                .on_hover_text(format!("about {tokens} tokens"))
                                                .clicked()
                                            {
                                                select = Some(at);
                                            }
                                        }
                                    });
                                    if r.header_response.clicked() && !open {
                                        select = Some(Selection {
                                            dataset: ds.clone(),
                                            category: cat.clone(),
                                            entry: None,
                                        });
                                    }
                                }
                            });
                    }
                });
        }
        if let Some(s) = select {
            self.select(s);
        }
    }

    /// Selects and unfolds the tree down to it.
    pub fn select(&mut self, at: Selection) {
        self.reveal = Some(at.clone());
        self.selected = Some(at);
    }

    pub(super) fn add_category_ui(&mut self, ui: &mut egui::Ui) {
        let Some(doc) = &mut self.doc else { return };
        ui.label(egui::RichText::new("New category").strong());
        if self.new_category_dataset.is_empty()
            && let Some(first) = doc.draft.datasets.keys().next()
        {
            self.new_category_dataset = first.clone();
        }
        ui.horizontal(|ui| {
            let label = ui.label("Dataset");
            ui.add(egui::TextEdit::singleline(&mut self.new_category_dataset).desired_width(90.0))
                .labelled_by(label.id);
        });
        ui.horizontal(|ui| {
            let label = ui.label("Name");
            ui.add(egui::TextEdit::singleline(&mut self.new_category).desired_width(90.0))
                .labelled_by(label.id);
            let name = self.new_category.trim().to_string();
            let ds = self.new_category_dataset.trim().to_string();
            let taken = doc
                .draft
                .datasets
                .get(&ds)
                .is_some_and(|d| d.contains_key(&name));
            let ok = !name.is_empty() && !ds.is_empty() && !taken;
            if ui
                .add_enabled(ok, egui::Button::new("Add category"))
                .on_disabled_hover_text(if taken {
                    "A category of that name exists"
                } else {
                    "Type a dataset and a name"
                })
                .clicked()
            {
                let mut entries = crate::knowledge::CategoryKnowledge::new();
                entries.insert(
                    NORMAL_ENTRY.to_string(),
                    EntryText {
                        title: Some(format!("Normal {}", crate::echo::prompt::human_name(&name))),
                        description: String::new(),
                    }
                    .compose(),
                );
                doc.draft
                    .datasets
                    .entry(ds.clone())
                    .or_default()
                    .insert(name.clone(), entries);
                doc.edited();
                self.selected = Some(Selection::entry(&ds, &name, NORMAL_ENTRY));
                self.new_category.clear();
            }
        });
    }
}

/// `good` first, then the defects in file order.
pub(super) fn ordered_names(entries: &crate::knowledge::CategoryKnowledge) -> Vec<&String> {
    entries
        .keys()
        .filter(|n| n.as_str() == NORMAL_ENTRY)
        .chain(entries.keys().filter(|n| n.as_str() != NORMAL_ENTRY))
        .collect()
}

pub(super) fn exists(kb: &KnowledgeBase, sel: &Selection) -> bool {
    let Some(cat) = kb
        .datasets
        .get(&sel.dataset)
        .and_then(|d| d.get(&sel.category))
    else {
        return false;
    };
    sel.entry.as_ref().is_none_or(|e| cat.contains_key(e))
}

pub(super) fn first_entry(kb: &KnowledgeBase) -> Option<Selection> {
    let (ds, cats) = kb.datasets.iter().find(|(_, c)| !c.is_empty())?;
    let (cat, entries) = cats.first()?;
    Some(match ordered_names(entries).first() {
        Some(e) => Selection::entry(ds, cat, e),
        None => Selection {
            dataset: ds.clone(),
            category: cat.clone(),
            entry: None,
        },
    })
}
