//! The current run's anomaly-map figures (issue 18), for runs whose preset or
//! switches used the map: image AUROC, pixel AUROC and AUPRO per category and
//! mean, the map's Overkill and Miss at its threshold beside the model's, and how
//! often the two disagree. `runs::anomaly_metrics` computes them on a background
//! job from the run folder (the table's records carry no traces), recomputing the
//! maps for the pixel figures; the last result stays on screen while a newer one
//! is computed.

use std::path::PathBuf;

use eframe::egui;

use super::super::jobs::Job;
use super::model::RunModel;
use crate::jobs::CancelToken;
use crate::runs::anomaly_metrics::{CategoryMap, MapMetrics, add_pixel_metrics, map_metrics};
use crate::runs::run_folder::RunFolder;

/// What one computation found.
pub struct MapFigures {
    pub dir: PathBuf,
    /// The model's generation it was computed from.
    pub generation: u64,
    /// `None`: no question of the run has a map yet.
    pub metrics: Option<MapMetrics>,
}

#[derive(Default)]
pub struct MapMetricsState {
    /// Shown under the table when on (the pixel figures recompute every map, a
    /// second or so per image, so they run only when asked).
    pub enabled: bool,
    pub last: Option<MapFigures>,
    pub error: Option<String>,
    job: Option<Job<MapFigures>>,
}

/// Whether the run used the anomaly map: its manifest records the map's options
/// only then.
pub fn run_has_map(model: &RunModel) -> bool {
    model
        .manifest
        .as_ref()
        .is_some_and(|m| m.pipeline.map_k.is_some())
}

impl MapMetricsState {
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    pub fn poll(&mut self) {
        if let Some(r) = self.job.as_mut().and_then(Job::take) {
            self.job = None;
            match r {
                Ok(f) => {
                    self.last = Some(f);
                    self.error = None;
                }
                Err(e) => self.error = Some(e),
            }
        }
    }

    fn start(&mut self, model: &RunModel) {
        let (dir, generation) = (model.dir.clone(), model.generation);
        self.job = Some(Job::spawn("anomaly-map figures", move || {
            let folder = RunFolder::open(&dir)?;
            let mut metrics = map_metrics(folder.records());
            if let Some(m) = metrics.as_mut() {
                add_pixel_metrics(m, &folder.manifest, &CancelToken::new()).map_err(|e| {
                    anyhow::Error::new(e)
                        .context(format!("the anomaly-map figures of {}", dir.display()))
                })?;
            }
            Ok(MapFigures {
                dir,
                generation,
                metrics,
            })
        }));
    }

    /// The toggle, then (when on) the figures.
    pub fn ui(&mut self, ui: &mut egui::Ui, model: &RunModel) {
        if !run_has_map(model) {
            return;
        }
        ui.horizontal(|ui| {
            ui.checkbox(&mut self.enabled, "Anomaly-map figures")
                .on_hover_text(
                    "Image AUROC, pixel AUROC and AUPRO, the map's Overkill and Miss beside the model's, as `score --anomaly` (the pixel figures recompute every map from the run's memory)",
                );
            if self.job.is_some() {
                ui.spinner();
            }
        });
        if !self.enabled {
            return;
        }
        let shown = self.last.as_ref().filter(|f| f.dir == model.dir);
        if self.job.is_none() && self.error.is_none() && shown.is_none() {
            self.start(model);
        }
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        let stale = match self.last.as_ref().filter(|f| f.dir == model.dir) {
            Some(f) => f.generation != model.generation,
            None => return,
        };
        if stale
            && self.job.is_none()
            && ui
                .button("Recompute")
                .on_hover_text("The figures are from fewer answers than the table")
                .clicked()
        {
            self.error = None;
            self.start(model);
        }
        let Some(f) = self.last.as_ref() else {
            return;
        };
        match &f.metrics {
            Some(m) => figures_grid(ui, m),
            None => {
                ui.weak("No question of this run has an anomaly map yet.");
            }
        }
    }
}

fn figures_grid(ui: &mut egui::Ui, m: &MapMetrics) {
    let auc = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
    let pct = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}%"));
    egui::ScrollArea::horizontal()
        .id_salt("map_figures_scroll")
        .show(ui, |ui| {
            egui::Grid::new("map_figures_grid")
                .striped(true)
                .show(ui, |ui| {
                    for h in [
                        "Category",
                        "Images",
                        "Image AUROC",
                        "Pixel AUROC",
                        "AUPRO",
                        "Map Overkill",
                        "Map Miss",
                        "Model Overkill",
                        "Model Miss",
                        "Disagree",
                    ] {
                        ui.strong(h);
                    }
                    ui.end_row();
                    let row = |ui: &mut egui::Ui, name: &str, c: &CategoryMap, aucs: [Option<f64>; 3]| {
                        ui.label(name);
                        ui.label(c.images.to_string());
                        for a in aucs {
                            ui.label(auc(a));
                        }
                        ui.label(pct(c.map_overkill()));
                        ui.label(pct(c.map_miss()));
                        ui.label(pct(c.model_overkill()));
                        ui.label(pct(c.model_miss()));
                        ui.label(format!("{} ({}/{})", pct(c.disagreement()), c.disagree, c.compared))
                            .on_hover_text("Anomaly Detection questions where the map's verdict at its threshold and the model's answer differ");
                        ui.end_row();
                    };
                    for (name, c) in &m.categories {
                        row(ui, name, c, [c.image_auroc, c.pixel_auroc, c.aupro]);
                    }
                    row(
                        ui,
                        "Mean",
                        &m.total,
                        [m.mean.image_auroc, m.mean.pixel_auroc, m.mean.aupro],
                    );
                });
        });
}
