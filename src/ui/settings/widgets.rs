//! Rows and frames every section draws with: paths with Browse…, text fields,
//! check results.

use std::path::{Path, PathBuf};

use eframe::egui;

use crate::ui::jobs::Job;

/// A framed group with a title and one or two sentences of help.
pub(super) fn section(
    ui: &mut egui::Ui,
    title: &str,
    help: &str,
    content: impl FnOnce(&mut egui::Ui),
) {
    egui::Frame::group(ui.style())
        .inner_margin(egui::Margin::same(12))
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            // Columns lay out justified; text and buttons read better left-aligned.
            ui.with_layout(egui::Layout::top_down(egui::Align::Min), |ui| {
                ui.label(egui::RichText::new(title).strong().size(16.0));
                ui.weak(help);
                ui.add_space(6.0);
                content(ui);
            });
        });
    ui.add_space(10.0);
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum PathKind {
    Folder,
    Json,
}

/// The file dialog of a Browse… button, open on its own thread so frames go on
/// drawing while it is up; at most one at a time, for the field that opened it.
#[derive(Default)]
pub(super) struct PathPicker {
    open: Option<(String, Job<Option<PathBuf>>)>,
}

impl PathPicker {
    pub(super) fn busy(&self) -> bool {
        self.open.is_some()
    }

    /// The path picked for the field `label`, once its dialog has closed.
    pub(super) fn picked_for(&mut self, label: &str) -> Option<PathBuf> {
        let (field, job) = self.open.as_mut()?;
        if field != label {
            return None;
        }
        let result = job.take()?;
        self.open = None;
        result.ok().flatten()
    }

    pub(super) fn start(&mut self, label: &str, current: &Path, kind: PathKind) {
        let start = current
            .parent()
            .filter(|_| kind == PathKind::Json)
            .or(Some(current))
            .filter(|p| p.is_dir())
            .map(Path::to_path_buf);
        let job = Job::spawn("file dialog", move || {
            let mut dialog = rfd::FileDialog::new();
            if let Some(dir) = start {
                dialog = dialog.set_directory(dir);
            }
            Ok(match kind {
                PathKind::Folder => dialog.pick_folder(),
                PathKind::Json => dialog.add_filter("JSON", &["json"]).pick_file(),
            })
        });
        self.open = Some((label.to_string(), job));
    }
}

/// A labelled text field for a path with a Browse… button; true when it changed.
/// Without a desktop portal the dialog returns nothing, so typing always works.
pub(super) fn path_row(
    ui: &mut egui::Ui,
    picker: &mut PathPicker,
    label: &str,
    path: &mut PathBuf,
    kind: PathKind,
    hint: &str,
) -> bool {
    let mut changed = false;
    if let Some(p) = picker.picked_for(label) {
        *path = p;
        changed = true;
    }
    let label_response = ui.label(label);
    ui.horizontal(|ui| {
        let mut text = path.display().to_string();
        if ui
            .add(
                egui::TextEdit::singleline(&mut text)
                    .hint_text(hint)
                    .desired_width(360.0),
            )
            .labelled_by(label_response.id)
            .changed()
        {
            *path = PathBuf::from(text.trim());
            changed = true;
        }
        let browse = ui
            .add_enabled(!picker.busy(), egui::Button::new("Browse…"))
            .on_disabled_hover_text("A file dialog is open");
        if browse.clicked() {
            picker.start(label, path, kind);
        }
    });
    ui.end_row();
    changed
}

/// A labelled one-line text field; true when it changed.
pub(super) fn text_row(ui: &mut egui::Ui, label: &str, text: &mut String, hint: &str) -> bool {
    let label = ui.label(label);
    let changed = ui
        .add(
            egui::TextEdit::singleline(text)
                .hint_text(hint)
                .desired_width(360.0),
        )
        .labelled_by(label.id)
        .changed();
    ui.end_row();
    changed
}

pub(super) fn check_line(ui: &mut egui::Ui, result: &Result<String, String>) {
    match result {
        Ok(text) => {
            ui.colored_label(ok_color(ui), format!("OK: {text}"));
        }
        Err(e) => {
            ui.colored_label(
                ui.visuals().error_fg_color,
                format!("Problem: {}", elide(e, 200)),
            )
            .on_hover_text(e.as_str());
        }
    }
}

pub(super) fn check_status(ui: &mut egui::Ui, result: Option<&Result<String, String>>, busy: bool) {
    match result {
        Some(r) => check_line(ui, r),
        None if busy => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.weak("checking…");
            });
        }
        None => {
            ui.weak("not checked yet");
        }
    }
}

pub(super) fn ok_color(ui: &egui::Ui) -> egui::Color32 {
    crate::ui::ok_color(ui)
}

pub(super) fn elide(text: &str, max: usize) -> String {
    crate::ui::elide(text, max)
}
