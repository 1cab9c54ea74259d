//! The bar above the editor: the views, Save with its note, and the banner for
//! a file changed outside the app.

use eframe::egui;

use super::{Doc, KnowledgeEnv, KnowledgeState, View, history};

impl KnowledgeState {
    pub(super) fn header(&mut self, ui: &mut egui::Ui, env: &mut KnowledgeEnv<'_>) {
        let Some(doc) = &self.doc else { return };
        let in_use = doc.saved_content_hash.clone();
        let version = self
            .versions
            .iter()
            .rev()
            .find(|v| v.content_hash == in_use && v.saved_to == doc.path)
            .map(|v| v.number);
        let (path, dirty) = (doc.path.clone(), doc.dirty);
        ui.horizontal_wrapped(|ui| {
            ui.label(egui::RichText::new(path.display().to_string()).monospace());
            ui.separator();
            let text = match version {
                Some(n) => format!("Version in use: {} (v{n:04})", &in_use[..8]),
                None => format!("Version in use: {} (not saved from here yet)", &in_use[..8]),
            };
            ui.label(text).on_hover_text(format!(
                "Content hash {in_use}\nRun manifests record this hash as the knowledge version."
            ));
            if dirty {
                ui.colored_label(ui.visuals().warn_fg_color, "Unsaved changes");
            }
        });
        if path != env.path {
            ui.horizontal_wrapped(|ui| {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    format!(
                        "The app now uses {}; your unsaved edits to this file are kept until you save or discard them.",
                        env.path.display()
                    ),
                );
                if ui.button("Discard my edits and open it").clicked() {
                    self.doc = None;
                    self.start_load(env.path);
                }
            });
        }
        self.external_banner(ui, env);
        ui.horizontal(|ui| {
            let label = ui.label("Note");
            ui.add(
                egui::TextEdit::singleline(&mut self.note)
                    .hint_text("what changed and why")
                    .desired_width(260.0),
            )
            .labelled_by(label.id);
            let dirty = self.doc.as_ref().is_some_and(|d| d.dirty);
            let can_save = dirty && self.save_job.is_none() && self.external.is_none();
            let save = ui
                .add_enabled(can_save, egui::Button::new("Save"))
                .on_hover_text("Write the file and keep this content as a new version")
                .on_disabled_hover_text(if self.external.is_some() {
                    "The file changed on disk: choose in the banner above"
                } else {
                    "Nothing to save"
                });
            let shortcut = ui.input_mut(|i| i.consume_key(egui::Modifiers::COMMAND, egui::Key::S));
            if (save.clicked() || shortcut) && can_save {
                self.start_save(env.workspace, false);
            }
            if self.save_job.is_some() {
                ui.spinner();
            }
            if dirty && ui.button("Discard edits").clicked() {
                if let Some(doc) = &mut self.doc {
                    doc.draft = doc.saved.clone();
                    doc.edited();
                }
                self.after_replace();
            }
        });
        if let Some((is_error, text)) = &self.message {
            let color = if *is_error {
                ui.visuals().error_fg_color
            } else {
                egui::Color32::from_rgb(60, 170, 90)
            };
            ui.colored_label(color, text);
        }
        ui.horizontal(|ui| {
            for (view, label) in [
                (View::Edit, "Edit"),
                (View::History, "History"),
                (View::Preview, "Preview"),
                (View::Files, "Import / export"),
            ] {
                let label = if view == View::History {
                    format!("History ({})", self.versions.len())
                } else {
                    label.to_string()
                };
                if ui.selectable_label(self.view == view, label).clicked() {
                    self.view = view;
                }
            }
        });
    }

    pub(super) fn external_banner(&mut self, ui: &mut egui::Ui, env: &mut KnowledgeEnv<'_>) {
        let Some(ext) = &mut self.external else {
            return;
        };
        let mut reload = false;
        let mut overwrite = false;
        egui::Frame::new()
            .fill(ui.visuals().warn_fg_color.gamma_multiply(0.15))
            .inner_margin(6.0)
            .corner_radius(4.0)
            .show(ui, |ui| {
                ui.set_width(ui.available_width());
                match &ext.error {
                    Some(e) => ui.colored_label(
                        ui.visuals().warn_fg_color,
                        format!("The knowledge file cannot be read any more: {e}"),
                    ),
                    None => ui.colored_label(
                        ui.visuals().warn_fg_color,
                        "The knowledge file was changed outside the app since it was loaded. Saving will not overwrite it unless you choose to.",
                    ),
                };
                let unsaved = self.doc.as_ref().is_some_and(|d| d.dirty);
                ui.horizontal(|ui| {
                    // Reloading replaces the draft: with edits in it, the button says so.
                    let reload_label = if unsaved {
                        "Reload from disk, dropping my edits"
                    } else {
                        "Reload from disk"
                    };
                    if ext.disk.is_some() && ui.button(reload_label).clicked() {
                        reload = true;
                    }
                    if ui.button("Keep mine and overwrite").clicked() {
                        overwrite = true;
                    }
                    if ext.disk.is_some() {
                        let label = if ext.show_diff { "Hide diff" } else { "Show diff" };
                        if ui.button(label).clicked() {
                            ext.show_diff = !ext.show_diff;
                        }
                    }
                });
                if ext.show_diff
                    && let (Some(disk), Some(doc)) = (&ext.disk, &self.doc)
                {
                    ui.label("From your draft (left) to the file on disk (right):");
                    let rows = ext
                        .diff
                        .get_or_insert_with(|| history::diff_rows(&doc.draft, disk));
                    egui::ScrollArea::vertical()
                        .id_salt("external_diff")
                        .max_height(260.0)
                        .show(ui, |ui| history::changes_ui(ui, rows));
                }
            });
        if reload && let Some(ext) = self.external.take() {
            let (Some(kb), Some(doc)) = (ext.disk, &self.doc) else {
                return;
            };
            let path = doc.path.clone();
            self.doc = Some(Doc::new(path, kb.clone(), ext.file_hash));
            *env.knowledge = Some(kb);
            self.message = Some((false, "Reloaded from disk.".into()));
            self.after_replace();
        }
        if overwrite {
            self.external = None;
            self.start_save(env.workspace, true);
        }
    }
}
