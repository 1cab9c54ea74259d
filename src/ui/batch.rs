//! Batch: score an MMAD answers file or run journal with MMAD's metric and show
//! the table (runs themselves arrive with the batch runner).

use std::path::PathBuf;

use eframe::egui;

use super::Command;
use super::jobs::Job;
use crate::bench::score::{self, ScoreOptions, ScoreTable};

pub struct ScoreResult {
    pub path: PathBuf,
    pub table: ScoreTable,
    pub journal_errors: usize,
}

#[derive(Default)]
pub struct BatchState {
    pub path_text: String,
    pub options: ScoreOptions,
    pub result: Option<ScoreResult>,
    pub error: Option<String>,
    job: Option<Job<ScoreResult>>,
}

impl BatchState {
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    pub(super) fn start(&mut self, path: PathBuf) {
        let options = self.options;
        self.job = Some(Job::spawn("score", move || {
            let loaded = score::load_answers(&path)?;
            let table = score::score(&loaded.records, options);
            Ok(ScoreResult {
                path,
                table,
                journal_errors: loaded.errors.len(),
            })
        }));
    }

    pub(super) fn poll(&mut self) {
        if let Some(result) = self.job.as_mut().and_then(Job::take) {
            self.job = None;
            match result {
                Ok(r) => {
                    self.result = Some(r);
                    self.error = None;
                }
                Err(e) => self.error = Some(e),
            }
        }
    }

    pub(super) fn ui(&mut self, ui: &mut egui::Ui) -> Vec<Command> {
        let mut commands = Vec::new();
        ui.heading("Score answers with MMAD's metric");
        ui.label("An MMAD answers JSON (a list) or a run journal (.jsonl).");
        ui.horizontal(|ui| {
            let label = ui.label("Answers file");
            ui.add(egui::TextEdit::singleline(&mut self.path_text).desired_width(480.0))
                .labelled_by(label.id);
            if ui.button("Browse...").clicked()
                && let Some(p) = rfd::FileDialog::new()
                    .add_filter("Answers", &["json", "jsonl"])
                    .pick_file()
            {
                self.path_text = p.display().to_string();
            }
        });
        ui.horizontal(|ui| {
            ui.checkbox(
                &mut self.options.mmad_compat,
                "MMAD-compatible (reproduce summary.py's skip)",
            );
            ui.checkbox(&mut self.options.overkill_miss, "Overkill / Miss");
            ui.checkbox(
                &mut self.options.detection_metrics,
                "Recall / Precision / F1",
            );
        });
        let can_score = !self.path_text.trim().is_empty() && !self.busy();
        if ui
            .add_enabled(can_score, egui::Button::new("Score"))
            .clicked()
        {
            commands.push(Command::ScoreFile(PathBuf::from(self.path_text.trim())));
        }
        if self.busy() {
            ui.spinner();
        }
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        if let Some(r) = &self.result {
            ui.separator();
            ui.label(format!("{}", r.path.display()));
            ui.label(format!(
                "{} invalid answer(s) dropped, {} skipped by the MMAD-compatible flaw, {} journal error(s) excluded",
                r.table.invalid, r.table.skipped, r.journal_errors
            ));
            score_grid(ui, &r.table);
        }
        commands
    }
}

/// The datasets x subtasks table, cells coloured on a fixed 0-100 scale.
pub fn score_grid(ui: &mut egui::Ui, table: &ScoreTable) {
    egui::ScrollArea::horizontal().show(ui, |ui| {
        egui::Grid::new("score_grid")
            .striped(true)
            .spacing([12.0, 4.0])
            .show(ui, |ui| {
                ui.label("");
                for c in &table.columns {
                    ui.strong(c);
                }
                ui.end_row();
                for (r, row) in table.index.iter().enumerate() {
                    ui.strong(row);
                    for v in &table.values[r] {
                        let t = (*v as f32 / 100.0).clamp(0.0, 1.0);
                        let color = egui::Color32::from_rgb(
                            (220.0 * (1.0 - t) + 40.0 * t) as u8,
                            (80.0 * (1.0 - t) + 170.0 * t) as u8,
                            70,
                        );
                        ui.colored_label(color, format!("{v:.1}"));
                    }
                    ui.end_row();
                }
            });
    });
}
