//! The verdict bar: a person's verdict and note on the current image, saved to the
//! workspace's verdicts file and exported as CSV.

use std::path::{Path, PathBuf};

use eframe::egui;

use super::Current;
use crate::ui::jobs::Job;
use crate::ui::trace_view::{self};
use crate::verdicts::{ImageId, Verdict, VerdictStore};

/// The verdict bar's state: the store, the draft for the current image, saving and exporting.
#[derive(Default)]
pub(super) struct VerdictPanel {
    loaded_for: Option<PathBuf>,
    store: Option<VerdictStore>,
    load_job: Option<Job<VerdictStore>>,
    load_error: Option<String>,
    save_job: Option<Job<()>>,
    save_again: bool,
    save_error: Option<String>,
    draft_for: Option<ImageId>,
    choice: Option<Verdict>,
    note: String,
    export_path: String,
    export_job: Option<Job<(PathBuf, usize)>>,
    export_message: Option<Result<String, String>>,
    dialog_job: Option<Job<Option<PathBuf>>>,
}

impl VerdictPanel {
    pub(super) fn busy(&self) -> bool {
        self.load_job.is_some()
            || self.save_job.is_some()
            || self.export_job.is_some()
            || self.dialog_job.is_some()
    }

    pub(super) fn poll(&mut self, workspace: &Path, current: Option<&ImageId>) {
        if self.loaded_for.as_deref() != Some(workspace) {
            self.loaded_for = Some(workspace.to_path_buf());
            self.export_path = workspace.join("verdicts.csv").display().to_string();
            let path = VerdictStore::path_in(workspace);
            self.load_job = Some(Job::spawn("load verdicts", move || {
                Ok(VerdictStore::load(&path)?)
            }));
        }
        if let Some(result) = self.load_job.as_mut().and_then(Job::take) {
            self.load_job = None;
            match result {
                Ok(store) => {
                    self.store = Some(store);
                    self.load_error = None;
                    self.draft_for = None;
                }
                Err(e) => self.load_error = Some(e),
            }
        }
        if let Some(result) = self.save_job.as_mut().and_then(Job::take) {
            self.save_job = None;
            self.save_error = result.err();
            if std::mem::take(&mut self.save_again) {
                self.start_save();
            }
        }
        if let Some(result) = self.export_job.as_mut().and_then(Job::take) {
            self.export_job = None;
            self.export_message =
                Some(result.map(|(p, n)| format!("Exported {n} verdict(s) to {}", p.display())));
        }
        if let Some(result) = self.dialog_job.as_mut().and_then(Job::take) {
            self.dialog_job = None;
            match result {
                Ok(Some(path)) => {
                    self.export_path = path.display().to_string();
                    self.start_export();
                }
                Ok(None) => {
                    self.export_message = Some(Err(
                        "No file chosen (or no file dialog is available here): type a path and press Export."
                            .into(),
                    ))
                }
                Err(e) => self.export_message = Some(Err(e)),
            }
        }
        // Show the saved verdict when coming back to an image.
        if let (Some(id), Some(store)) = (current, &self.store)
            && self.draft_for.as_ref() != Some(id)
        {
            self.draft_for = Some(id.clone());
            match store.get(id) {
                Some(r) => {
                    self.choice = Some(r.verdict);
                    self.note = r.note.clone();
                }
                None => {
                    self.choice = None;
                    self.note.clear();
                }
            }
        }
    }

    fn start_save(&mut self) {
        if self.save_job.is_some() {
            // One writer at a time; the newest state is written when it finishes.
            self.save_again = true;
            return;
        }
        if let Some(store) = self.store.clone() {
            self.save_job = Some(Job::spawn("save verdicts", move || Ok(store.save()?)));
        }
    }

    fn start_export(&mut self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let path = PathBuf::from(self.export_path.trim());
        if path.as_os_str().is_empty() {
            self.export_message = Some(Err("Type the path of the CSV file first.".into()));
            return;
        }
        self.export_message = None;
        self.export_job = Some(Job::spawn("export verdicts", move || {
            store.export_csv(&path)?;
            Ok((path, store.len()))
        }));
    }

    pub(super) fn ui(&mut self, ui: &mut egui::Ui, current: Option<&Current>) {
        ui.horizontal_wrapped(|ui| {
            ui.strong("Verdict");
            for v in Verdict::ALL {
                let r = ui.selectable_label(self.choice == Some(v), v.label());
                // Screen readers (and tests) tell these apart from the browser's filters.
                let selected = self.choice == Some(v);
                r.widget_info(|| {
                    egui::WidgetInfo::selected(
                        egui::Role::Button,
                        true,
                        selected,
                        format!("Verdict {}", v.label()),
                    )
                });
                if r.clicked() {
                    self.choice = Some(v);
                }
            }
            let label = ui.label("Note");
            ui.add(
                egui::TextEdit::singleline(&mut self.note)
                    .desired_width(180.0)
                    .hint_text("what you saw"),
            )
            .labelled_by(label.id);
            let can_save = current.is_some() && self.choice.is_some() && self.store.is_some();
            if ui
                .add_enabled(can_save, egui::Button::new("Save verdict"))
                .on_disabled_hover_text("Pick OK, Defect or Unsure first")
                .clicked()
                && let (Some(cur), Some(choice), Some(store)) =
                    (current, self.choice, self.store.as_mut())
            {
                store.set(cur.verdict_id.clone(), &cur.path, choice, self.note.trim());
                self.save_error = None;
                self.start_save();
            }
        });
        ui.horizontal_wrapped(|ui| {
            if let Some(e) = self.load_error.as_ref().or(self.save_error.as_ref()) {
                ui.colored_label(ui.visuals().error_fg_color, e);
            } else if let (Some(cur), Some(store)) = (current, &self.store) {
                match store.get(&cur.verdict_id) {
                    Some(r) => {
                        let state = if self.save_job.is_some() {
                            "saving…"
                        } else {
                            "saved"
                        };
                        ui.weak(format!("{}: {state} {}", r.verdict.label(), r.saved_at));
                    }
                    None => {
                        ui.weak("No verdict saved for this image yet.");
                    }
                }
            } else if self.load_job.is_some() {
                ui.spinner();
            }
        });
        ui.horizontal_wrapped(|ui| {
            let have = self.store.as_ref().is_some_and(|s| !s.is_empty());
            if ui
                .add_enabled(
                    have && self.dialog_job.is_none(),
                    egui::Button::new("Export verdicts CSV…"),
                )
                .on_hover_text("Choose where to write every saved verdict as CSV")
                .clicked()
            {
                let start = PathBuf::from(self.export_path.trim());
                self.dialog_job = Some(Job::spawn("file dialog", move || {
                    let mut dialog = rfd::FileDialog::new()
                        .add_filter("CSV", &["csv"])
                        .set_file_name("verdicts.csv");
                    if let Some(dir) = start.parent().filter(|d| d.is_dir()) {
                        dialog = dialog.set_directory(dir);
                    }
                    Ok(dialog.save_file())
                }));
            }
            let label = ui.label("CSV path");
            ui.add(egui::TextEdit::singleline(&mut self.export_path).desired_width(200.0))
                .labelled_by(label.id);
            if ui
                .add_enabled(
                    have && self.export_job.is_none(),
                    egui::Button::new("Export"),
                )
                .clicked()
            {
                self.start_export();
            }
        });
        match &self.export_message {
            Some(Ok(m)) => {
                ui.colored_label(trace_view::ok_color(ui), m);
            }
            Some(Err(e)) => {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            None => {}
        }
    }
}
