//! How far the current run's numbers can be trusted, and where they come from: each
//! cell's 95% interval and, per category, Overkill, Miss and which defect was taken
//! for which. Computed in the background from a snapshot of the records; the last
//! result stays on screen (marked as older) while a newer one is computed.

use std::path::PathBuf;

use eframe::egui;
use indexmap::IndexMap;

use super::super::jobs::Job;
use super::model::{RunModel, answers_of};
use crate::runs::slices::{CategorySlice, category_slices};
use crate::score::interval::{BootstrapOptions, CellIntervals, cell_intervals};
use crate::score::{self, ScoreOptions};

/// What one computation saw and found.
pub struct Precision {
    pub dir: PathBuf,
    /// The model's generation and options it was computed from.
    pub generation: u64,
    pub options: ScoreOptions,
    pub intervals: CellIntervals,
    pub slices: IndexMap<String, CategorySlice>,
}

#[derive(Default)]
pub struct PrecisionState {
    /// Shown under the table when on (the bootstrap costs a second on a large run,
    /// so it runs only when asked).
    pub enabled: bool,
    pub last: Option<Precision>,
    pub error: Option<String>,
    job: Option<Job<Precision>>,
}

impl PrecisionState {
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    pub fn poll(&mut self) {
        if let Some(r) = self.job.as_mut().and_then(Job::take) {
            self.job = None;
            match r {
                Ok(p) => {
                    self.last = Some(p);
                    self.error = None;
                }
                Err(e) => self.error = Some(e),
            }
        }
    }

    /// Starts a computation when the shown one is not of this model's records.
    fn refresh(&mut self, model: &RunModel) {
        if self.job.is_some() || self.is_current(model) {
            return;
        }
        let records = model.records.clone();
        let (dir, generation, options) = (model.dir.clone(), model.generation, model.options);
        self.job = Some(Job::spawn("intervals and slices", move || {
            let answers = answers_of(&records);
            let table = score::score(&answers, options);
            let intervals = cell_intervals(&answers, &table, options, BootstrapOptions::default());
            Ok(Precision {
                dir,
                generation,
                options,
                intervals,
                slices: category_slices(&records),
            })
        }));
    }

    fn is_current(&self, model: &RunModel) -> bool {
        self.last.as_ref().is_some_and(|p| {
            p.dir == model.dir && p.generation == model.generation && p.options == model.options
        })
    }

    /// The toggle, then (when on) the intervals table and the per-category slices.
    pub fn ui(&mut self, ui: &mut egui::Ui, model: &RunModel) {
        let busy = self.job.is_some();
        if !toggle_row(
            ui,
            &mut self.enabled,
            "95% intervals and per-category slices",
            "Bootstrap over images (1,000 resamples, seed 0), as `score --show-intervals --slices`",
            busy,
        ) {
            return;
        }
        self.refresh(model);
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        let Some(p) = self.last.as_ref().filter(|p| p.dir == model.dir) else {
            return;
        };
        if !self.is_current(model) {
            ui.weak("(from fewer answers or other options; updating)");
        }
        intervals_grid(ui, &p.intervals);
        slices_ui(ui, &p.slices);
    }
}

fn intervals_grid(ui: &mut egui::Ui, ci: &CellIntervals) {
    egui::ScrollArea::horizontal()
        .id_salt("intervals_scroll")
        .show(ui, |ui| {
            egui::Grid::new("intervals_grid")
                .striped(true)
                .show(ui, |ui| {
                    ui.strong("95% interval");
                    for c in &ci.columns {
                        ui.strong(c);
                    }
                    ui.end_row();
                    for (row, bounds) in ci.index.iter().zip(&ci.bounds) {
                        ui.strong(row);
                        for (column, b) in ci.columns.iter().zip(bounds) {
                            let text =
                                b.map_or("-".to_owned(), |(lo, hi)| format!("{lo:.1}-{hi:.1}"));
                            ui.label(text).on_hover_text(format!(
                                "{row} / {column}: 95% interval {}",
                                b.map_or("none".into(), |(lo, hi)| format!("{lo:.1} to {hi:.1}"))
                            ));
                        }
                        ui.end_row();
                    }
                });
        });
}

fn slices_ui(ui: &mut egui::Ui, slices: &IndexMap<String, CategorySlice>) {
    if slices.is_empty() {
        return;
    }
    let pct = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}%"));
    ui.add_space(4.0);
    ui.strong("Per category");
    egui::Grid::new("slices_grid").striped(true).show(ui, |ui| {
        for h in [
            "Category",
            "Normal parts",
            "Overkill",
            "Defective parts",
            "Miss",
            "Defect Classification right",
        ] {
            ui.strong(h);
        }
        ui.end_row();
        for (category, s) in slices {
            let dc = s.classification();
            ui.label(category);
            ui.label(s.normal.total.to_string());
            ui.label(pct(s.overkill()));
            ui.label(s.abnormal.total.to_string());
            ui.label(pct(s.miss()));
            ui.label(format!("{}/{}", dc.correct, dc.total));
            ui.end_row();
        }
    });
    for (category, s) in slices {
        if s.confusion.is_empty() {
            continue;
        }
        egui::CollapsingHeader::new(format!("Defect Classification confusion: {category}"))
            .id_salt(("confusion", category))
            .show(ui, |ui| confusion_grid(ui, category, s));
    }
}

/// Rows: the true defect; columns: what was chosen; the diagonal is right.
fn confusion_grid(ui: &mut egui::Ui, category: &str, s: &CategorySlice) {
    let mut columns: Vec<&String> = Vec::new();
    for row in s.confusion.values() {
        for chosen in row.keys() {
            if !columns.contains(&chosen) {
                columns.push(chosen);
            }
        }
    }
    egui::Grid::new(("confusion_grid", category))
        .striped(true)
        .show(ui, |ui| {
            ui.strong("true \\ chosen");
            for c in &columns {
                ui.strong(c.as_str());
            }
            ui.end_row();
            for (truth, row) in &s.confusion {
                ui.strong(truth);
                for chosen in &columns {
                    let n = row.get(*chosen).copied().unwrap_or(0);
                    let text = if n == 0 { String::new() } else { n.to_string() };
                    if *chosen == truth {
                        ui.colored_label(egui::Color32::from_rgb(70, 170, 90), text);
                    } else if n > 0 {
                        ui.colored_label(egui::Color32::from_rgb(220, 90, 70), text);
                    } else {
                        ui.label(text);
                    }
                }
                ui.end_row();
            }
        });
}

/// A view's on/off checkbox with a spinner while its background job runs (the
/// Batch tab's optional views share it); whether the view is on.
pub(super) fn toggle_row(
    ui: &mut egui::Ui,
    enabled: &mut bool,
    label: &str,
    hover: &str,
    busy: bool,
) -> bool {
    ui.horizontal(|ui| {
        ui.checkbox(enabled, label).on_hover_text(hover);
        if busy {
            ui.spinner();
        }
    });
    *enabled
}
