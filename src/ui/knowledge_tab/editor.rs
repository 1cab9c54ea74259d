//! The editor of the selected category or entry: texts, rename, delete, and
//! which questions the category reaches.

use std::path::PathBuf;
use std::sync::Arc;

use eframe::egui;

use crate::curate::impact::impact;
use crate::knowledge::{EntryText, NORMAL_ENTRY, Problem, Severity, approx_tokens};

use super::examples::{example_keys, examples_ui};
use super::problems::problem_text;
use super::tree::exists;
use super::{EntryEdit, KnowledgeEnv, KnowledgeState, Selection, rerun};

impl KnowledgeState {
    pub(super) fn editor(&mut self, ui: &mut egui::Ui, env: &KnowledgeEnv<'_>) {
        let Some(sel) = self.selected.clone() else {
            ui.label("Pick a category or an entry on the left.");
            return;
        };
        let exists_now = self.doc.as_ref().is_some_and(|d| exists(&d.draft, &sel));
        if !exists_now {
            ui.label(format!("{} no longer exists.", sel.label()));
            return;
        }
        egui::ScrollArea::vertical()
            .id_salt("knowledge_editor")
            .auto_shrink([false, false])
            .show(ui, |ui| {
                self.category_section(ui, &sel);
                ui.separator();
                if let Some(entry) = &sel.entry {
                    self.entry_section(ui, &sel, entry, env);
                } else {
                    ui.label("Pick an entry of this category to edit its text.");
                }
                // Below the text: what an edit reaches, and measuring it on a run.
                ui.separator();
                self.impact_ui(ui, &sel, env);
            });
    }

    pub(super) fn category_section(&mut self, ui: &mut egui::Ui, sel: &Selection) {
        let Some(doc) = &mut self.doc else { return };
        let cat_sel = sel.category();
        ui.horizontal_wrapped(|ui| {
            ui.heading(format!("{} / {}", sel.dataset, sel.category));
            let renaming = self.rename.as_ref().is_some_and(|(s, _)| *s == cat_sel);
            if !renaming && ui.button("Rename category").clicked() {
                self.rename = Some((cat_sel.clone(), sel.category.clone()));
            }
            if ui.button("Delete category…").clicked() {
                self.confirm_delete = Some(cat_sel.clone());
            }
        });
        if let Some(renamed) = rename_ui(ui, &mut self.rename, &cat_sel, |name| {
            doc.draft
                .datasets
                .get(&sel.dataset)
                .is_some_and(|d| d.contains_key(name))
        }) && let Some(cats) = doc.draft.datasets.get_mut(&sel.dataset)
            && let Some(i) = cats.get_index_of(&sel.category)
        {
            let (_, entries) = cats.shift_remove_index(i).expect("index from get_index_of");
            cats.shift_insert(i, renamed.clone(), entries);
            doc.edited();
            self.selected = Some(Selection {
                category: renamed,
                ..sel.clone()
            });
            self.edit = None;
            return;
        }
        ui.horizontal(|ui| {
            let label = ui.label("New entry");
            ui.add(
                egui::TextEdit::singleline(&mut self.new_entry)
                    .hint_text("defect folder name, e.g. broken_large")
                    .desired_width(220.0),
            )
            .labelled_by(label.id);
            let name = self.new_entry.trim().to_string();
            let taken = doc
                .draft
                .entry(&sel.dataset, &sel.category, &name)
                .is_some();
            if ui
                .add_enabled(!name.is_empty() && !taken, egui::Button::new("Add entry"))
                .on_disabled_hover_text(if taken {
                    "An entry of that name exists"
                } else {
                    "Type a name"
                })
                .clicked()
                && let Some(cat) = doc
                    .draft
                    .datasets
                    .get_mut(&sel.dataset)
                    .and_then(|d| d.get_mut(&sel.category))
            {
                cat.insert(
                    name.clone(),
                    EntryText {
                        title: Some(crate::echo::prompt::human_name(&name)),
                        description: String::new(),
                    }
                    .compose(),
                );
                doc.edited();
                self.selected = Some(Selection::entry(&sel.dataset, &sel.category, &name));
                self.new_entry.clear();
            }
        });
    }

    pub(super) fn impact_ui(&mut self, ui: &mut egui::Ui, sel: &Selection, env: &KnowledgeEnv<'_>) {
        let Some(doc) = &self.doc else { return };
        let Some(d) = env.dataset else {
            ui.label("Load a dataset to see which questions this category reaches.");
            return;
        };
        let Some((_, ctx)) = &self.ctx else {
            match &self.ctx_error {
                Some(e) => ui.colored_label(
                    ui.visuals().error_fg_color,
                    format!("Impact unavailable: {e}"),
                ),
                None => ui.spinner(),
            };
            return;
        };
        let key = (
            sel.clone(),
            doc.rev,
            d.dataset.source.clone(),
            d.dataset.entries.len(),
        );
        if self.impact.as_ref().map(|(k, _)| k) != Some(&key) {
            let imp = impact(
                ctx,
                &d.dataset,
                &doc.draft,
                &sel.dataset,
                &sel.category,
                sel.entry.as_deref(),
            );
            self.impact = Some((key, Arc::new(imp)));
        }
        let Some(imp) = self.impact.as_ref().map(|(_, imp)| Arc::clone(imp)) else {
            return;
        };
        let heading = match &sel.entry {
            Some(e) => format!(
                "Impact with the current settings: {} of {} questions about {} get this category's knowledge (entry `{e}`: see the last column)",
                imp.with_category(),
                imp.questions(),
                sel.category
            ),
            None => format!(
                "Impact with the current settings: {} of {} questions about {} get this category's knowledge",
                imp.with_category(),
                imp.questions(),
                sel.category
            ),
        };
        egui::CollapsingHeader::new(heading)
            .id_salt("impact")
            .default_open(true)
            .show(ui, |ui| {
                if imp.per_type.is_empty() {
                    ui.label("The loaded dataset has no questions about this category.");
                    return;
                }
                egui::Grid::new("impact_grid").striped(true).show(ui, |ui| {
                    ui.strong("Question type");
                    ui.strong("Questions");
                    ui.strong("Knowledge mode");
                    ui.strong("Prompts with this category");
                    if sel.entry.is_some() {
                        ui.strong("with this entry");
                    }
                    ui.end_row();
                    for t in &imp.per_type {
                        ui.label(&t.qtype);
                        ui.label(t.questions.to_string());
                        ui.label(match t.mode {
                            None => "off for this type".to_string(),
                            Some(crate::echo::plan::KnowledgeMode::Condensed) => {
                                "condensed (reads condensed.json)".to_string()
                            }
                            Some(m) => m.to_string(),
                        });
                        ui.label(t.with_category.to_string());
                        if let Some(n) = t.with_entry {
                            ui.label(n.to_string());
                        }
                        ui.end_row();
                    }
                });
                ui.label(
                    egui::RichText::new(format!(
                        "From the pipeline's plan per question type (preset `{}`, as in Settings). A run records its own settings: the re-run below follows the chosen run's.",
                        env.pipeline.preset
                    ))
                    .small()
                    .weak(),
                );
                rerun::ui(self, ui, sel, env);
            });
    }

    pub(super) fn entry_section(
        &mut self,
        ui: &mut egui::Ui,
        sel: &Selection,
        entry: &str,
        env: &KnowledgeEnv<'_>,
    ) {
        let Some(doc) = &mut self.doc else { return };
        let Some(text) = doc.draft.entry(&sel.dataset, &sel.category, entry).cloned() else {
            return;
        };
        if self
            .edit
            .as_ref()
            .is_none_or(|e| e.at != *sel || e.rev > doc.rev)
        {
            let parsed = EntryText::parse(&text);
            self.edit = Some(EntryEdit {
                at: sel.clone(),
                rev: doc.rev,
                title: parsed.title.unwrap_or_default(),
                description: parsed.description,
            });
        }
        let Some(edit) = &mut self.edit else { return };
        ui.horizontal_wrapped(|ui| {
            let kind = if entry == NORMAL_ENTRY {
                "normal"
            } else {
                "defect"
            };
            ui.heading(format!("{entry} ({kind})"));
            ui.label(format!(
                "{} characters, about {} tokens",
                text.chars().count(),
                approx_tokens(&text)
            ))
            .on_hover_text("Tokens are estimated as characters / 4 (rounded up)");
            let renaming = self.rename.as_ref().is_some_and(|(s, _)| s == sel);
            if !renaming && ui.button("Rename entry").clicked() {
                self.rename = Some((sel.clone(), entry.to_string()));
            }
            if ui.button("Delete entry…").clicked() {
                self.confirm_delete = Some(sel.clone());
            }
        });
        if let Some(renamed) = rename_ui(ui, &mut self.rename, sel, |name| {
            doc.draft.entry(&sel.dataset, &sel.category, name).is_some()
        }) && let Some(cat) = doc
            .draft
            .datasets
            .get_mut(&sel.dataset)
            .and_then(|d| d.get_mut(&sel.category))
            && let Some(i) = cat.get_index_of(entry)
        {
            let (_, t) = cat.shift_remove_index(i).expect("index from get_index_of");
            cat.shift_insert(i, renamed.clone(), t);
            doc.edited();
            self.selected = Some(Selection::entry(&sel.dataset, &sel.category, &renamed));
            self.edit = None;
            return;
        }
        let wide = ui.available_width() > 760.0;
        let mut changed = false;
        let mut text_ui = |ui: &mut egui::Ui| {
            ui.horizontal(|ui| {
                let label = ui.label("Title");
                changed |= ui
                    .add(
                        egui::TextEdit::singleline(&mut edit.title)
                            .hint_text("the <Title> line")
                            .desired_width(f32::INFINITY),
                    )
                    .labelled_by(label.id)
                    .changed();
            });
            let label = ui.label("Description");
            changed |= ui
                .add(
                    egui::TextEdit::multiline(&mut edit.description)
                        .desired_rows(14)
                        .desired_width(f32::INFINITY),
                )
                .labelled_by(label.id)
                .changed();
        };
        let facts = self.facts.as_ref().map(|(_, f)| f.clone());
        let examples = example_keys(facts.as_deref(), sel, entry);
        if wide {
            ui.columns(2, |cols| {
                text_ui(&mut cols[0]);
                examples_ui(
                    &mut cols[1],
                    &mut self.thumbs,
                    env.dataset,
                    &examples,
                    entry,
                );
            });
        } else {
            text_ui(ui);
            ui.separator();
            examples_ui(ui, &mut self.thumbs, env.dataset, &examples, entry);
        }
        if changed {
            let title = edit.title.trim();
            let composed = EntryText {
                title: (!title.is_empty()).then(|| title.to_string()),
                description: edit.description.clone(),
            }
            .compose();
            if let Some(slot) = doc
                .draft
                .datasets
                .get_mut(&sel.dataset)
                .and_then(|d| d.get_mut(&sel.category))
                .and_then(|c| c.get_mut(entry))
            {
                *slot = composed;
                doc.edited();
                edit.rev = doc.rev;
            }
        }
        let own: Vec<&Problem> = self
            .problems
            .iter()
            .filter(|p| {
                p.dataset == sel.dataset
                    && p.category == sel.category
                    && p.entry.as_deref() == Some(entry)
            })
            .collect();
        for p in own {
            let color = match p.severity {
                Severity::Error => ui.visuals().error_fg_color,
                Severity::Warning => ui.visuals().warn_fg_color,
            };
            ui.colored_label(color, problem_text(p));
        }
    }

    pub(super) fn delete_dialog(&mut self, ctx: &egui::Context) {
        let Some(target) = self.confirm_delete.clone() else {
            return;
        };
        let mut decided = None;
        egui::Window::new("Confirm delete")
            .collapsible(false)
            .resizable(false)
            .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
            .show(ctx, |ui| {
                let what = match &target.entry {
                    Some(e) => format!("the entry `{e}` of {}/{}", target.dataset, target.category),
                    None => format!(
                        "the category {}/{} with all its entries",
                        target.dataset, target.category
                    ),
                };
                ui.label(format!("Delete {what}? Saved versions keep the old text."));
                ui.horizontal(|ui| {
                    if ui.button("Delete").clicked() {
                        decided = Some(true);
                    }
                    if ui.button("Cancel").clicked() {
                        decided = Some(false);
                    }
                });
            });
        match decided {
            Some(true) => {
                if let Some(doc) = &mut self.doc
                    && let Some(cats) = doc.draft.datasets.get_mut(&target.dataset)
                {
                    match &target.entry {
                        Some(e) => {
                            if let Some(c) = cats.get_mut(&target.category) {
                                c.shift_remove(e);
                            }
                        }
                        None => {
                            cats.shift_remove(&target.category);
                        }
                    }
                    doc.edited();
                }
                self.confirm_delete = None;
                self.selected = target.entry.is_some().then(|| target.category());
                self.after_replace();
            }
            Some(false) => self.confirm_delete = None,
            None => {}
        }
    }
}

/// An inline rename field; returns the new name once applied.
pub(super) fn rename_ui(
    ui: &mut egui::Ui,
    rename: &mut Option<(Selection, String)>,
    at: &Selection,
    taken: impl Fn(&str) -> bool,
) -> Option<String> {
    let (target, name) = rename.as_mut()?;
    if target != at {
        return None;
    }
    let mut result = None;
    let mut cancel = false;
    ui.horizontal(|ui| {
        let label = ui.label("New name");
        ui.add(egui::TextEdit::singleline(name).desired_width(200.0))
            .labelled_by(label.id);
        let trimmed = name.trim().to_string();
        let current = at.entry.clone().unwrap_or_else(|| at.category.clone());
        let clash = trimmed != current && taken(&trimmed);
        let ok = !trimmed.is_empty() && !clash;
        if ui
            .add_enabled(ok, egui::Button::new("Apply"))
            .on_disabled_hover_text(if clash {
                "That name is taken"
            } else {
                "Type a name"
            })
            .clicked()
        {
            if trimmed != current {
                result = Some(trimmed);
            }
            cancel = true;
        }
        if ui.button("Cancel").clicked() {
            cancel = true;
        }
    });
    if cancel {
        *rename = None;
    }
    result
}

/// What an impact count depends on: the selection, the draft's revision and the
/// dataset (its file and number of images).
pub(super) type ImpactKey = (Selection, u64, PathBuf, usize);
