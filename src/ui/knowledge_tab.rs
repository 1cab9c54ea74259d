//! Knowledge: the tree of datasets, categories and entries, each text, and the
//! validation problems of the loaded base.

use std::path::Path;

use eframe::egui;

use crate::knowledge::{EntryText, KnowledgeBase, NORMAL_ENTRY, Severity};

#[derive(Debug, Default)]
pub struct KnowledgeState {
    pub selected: Option<(String, String, String)>,
    pub search: String,
}

impl KnowledgeState {
    pub(super) fn ui(
        &mut self,
        ui: &mut egui::Ui,
        kb: Option<&KnowledgeBase>,
        error: Option<&str>,
        path: &Path,
    ) {
        let Some(kb) = kb else {
            match error {
                Some(e) => {
                    ui.colored_label(
                        ui.visuals().error_fg_color,
                        format!("Knowledge could not be loaded: {e}"),
                    );
                }
                None => {
                    ui.spinner();
                }
            }
            return;
        };
        egui::Panel::left("knowledge_tree")
            .resizable(true)
            .default_size(300.0)
            .show(ui, |ui| self.tree(ui, kb));
        egui::CentralPanel::default().show(ui, |ui| {
            ui.label(format!("File: {}", path.display()));
            let problems = kb.validate();
            if problems.is_empty() {
                ui.colored_label(
                    egui::Color32::from_rgb(60, 170, 90),
                    "Validation: no problems",
                );
            } else {
                egui::CollapsingHeader::new(format!("Validation: {} problem(s)", problems.len()))
                    .default_open(true)
                    .show(ui, |ui| {
                        egui::ScrollArea::vertical()
                            .max_height(160.0)
                            .show(ui, |ui| {
                                for p in &problems {
                                    let color = match p.severity {
                                        Severity::Error => ui.visuals().error_fg_color,
                                        Severity::Warning => ui.visuals().warn_fg_color,
                                    };
                                    let clicked = ui
                                        .add(
                                            egui::Label::new(
                                                egui::RichText::new(&p.message).color(color),
                                            )
                                            .sense(egui::Sense::click()),
                                        )
                                        .clicked();
                                    if clicked && let Some(entry) = &p.entry {
                                        self.selected = Some((
                                            p.dataset.clone(),
                                            p.category.clone(),
                                            entry.clone(),
                                        ));
                                    }
                                }
                            });
                    });
            }
            ui.separator();
            self.entry_view(ui, kb);
        });
    }

    fn tree(&mut self, ui: &mut egui::Ui, kb: &KnowledgeBase) {
        ui.horizontal(|ui| {
            let label = ui.label("Search");
            ui.text_edit_singleline(&mut self.search)
                .labelled_by(label.id);
        });
        let needle = self.search.to_lowercase();
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .show(ui, |ui| {
                for (ds, cats) in &kb.datasets {
                    egui::CollapsingHeader::new(format!("{ds} ({})", cats.len()))
                        .default_open(!needle.is_empty())
                        .show(ui, |ui| {
                            for (cat, entries) in cats {
                                let names: Vec<&String> = std::iter::once(NORMAL_ENTRY)
                                    .filter_map(|g| entries.get_key_value(g).map(|(k, _)| k))
                                    .chain(entries.keys().filter(|k| *k != NORMAL_ENTRY))
                                    .filter(|name| {
                                        needle.is_empty()
                                            || cat.to_lowercase().contains(&needle)
                                            || name.to_lowercase().contains(&needle)
                                            || entries[*name].to_lowercase().contains(&needle)
                                    })
                                    .collect();
                                if names.is_empty() {
                                    continue;
                                }
                                egui::CollapsingHeader::new(cat)
                                    .id_salt((ds, cat))
                                    .default_open(!needle.is_empty())
                                    .show(ui, |ui| {
                                        for name in names {
                                            let key = (ds.clone(), cat.clone(), name.clone());
                                            let sel = self.selected.as_ref() == Some(&key);
                                            if ui.selectable_label(sel, name.as_str()).clicked() {
                                                self.selected = Some(key);
                                            }
                                        }
                                    });
                            }
                        });
                }
            });
    }

    fn entry_view(&self, ui: &mut egui::Ui, kb: &KnowledgeBase) {
        let Some((ds, cat, entry)) = &self.selected else {
            ui.label("Pick an entry on the left to read it.");
            return;
        };
        let Some(text) = kb
            .datasets
            .get(ds)
            .and_then(|c| c.get(cat))
            .and_then(|e| e.get(entry))
        else {
            ui.label("This entry no longer exists.");
            return;
        };
        let parsed = EntryText::parse(text);
        ui.heading(format!("{ds} / {cat} / {entry}"));
        ui.label(
            egui::RichText::new(parsed.title.as_deref().unwrap_or("(no title line)")).strong(),
        );
        ui.label(format!(
            "{} characters, about {} tokens",
            text.chars().count(),
            text.len() / 4
        ));
        egui::ScrollArea::vertical().show(ui, |ui| {
            ui.label(&parsed.description);
        });
    }
}
