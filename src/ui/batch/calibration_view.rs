//! How far the current run's confidence can be trusted, and what it cost: the
//! reliability diagram, ECE per subtask, an abstain slider over the
//! accuracy/coverage curve with the count "for a person", and the usage (tokens,
//! latency, cost). Computed off the UI thread from a snapshot of the records (as
//! `score --calibration --usage` computes them); the last result stays on screen
//! while a newer one is computed.

use std::path::PathBuf;

use eframe::egui;

use super::super::jobs::Job;
use super::model::RunModel;
use super::usage_view::{self, Usage};
use crate::runs::calibration::{self, Calibration, ConfidenceSource, Reliability};

/// What one computation saw and found.
pub struct Computed {
    dir: PathBuf,
    generation: u64,
    source: ConfidenceSource,
    pub calibration: Option<Calibration>,
    pub usage: Usage,
}

pub struct CalibrationState {
    /// Shown under the table when on.
    pub enabled: bool,
    pub source: ConfidenceSource,
    /// Answers below this confidence go to a person.
    pub threshold: f64,
    pub last: Option<Computed>,
    pub error: Option<String>,
    job: Option<Job<Computed>>,
}

impl Default for CalibrationState {
    fn default() -> Self {
        CalibrationState {
            enabled: false,
            source: ConfidenceSource::Auto,
            threshold: 0.5,
            last: None,
            error: None,
            job: None,
        }
    }
}

impl CalibrationState {
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    pub fn poll(&mut self) {
        if let Some(r) = self.job.as_mut().and_then(Job::take) {
            self.job = None;
            match r {
                Ok(c) => {
                    self.last = Some(c);
                    self.error = None;
                }
                Err(e) => self.error = Some(e),
            }
        }
    }

    fn is_current(&self, model: &RunModel) -> bool {
        self.last.as_ref().is_some_and(|c| {
            c.dir == model.dir && c.generation == model.generation && c.source == self.source
        })
    }

    fn refresh(&mut self, model: &RunModel) {
        if self.job.is_some() || self.is_current(model) {
            return;
        }
        let records = model.records.clone();
        let manifest = model.manifest.clone();
        let (dir, generation, source) = (model.dir.clone(), model.generation, self.source);
        self.job = Some(Job::spawn("calibration and usage", move || {
            Ok(Computed {
                dir,
                generation,
                source,
                calibration: Calibration::of(&records, source),
                usage: Usage::of(&records, manifest.as_ref()),
            })
        }));
    }

    /// The toggle, then (when on) calibration and usage.
    pub fn ui(&mut self, ui: &mut egui::Ui, model: &RunModel) {
        let busy = self.job.is_some();
        if !super::precision::toggle_row(
            ui,
            &mut self.enabled,
            "Calibration and usage",
            "Reliability, expected calibration error and the abstain curve of the answers' confidence; tokens, latency and cost (as `score --calibration --usage`)",
            busy,
        ) {
            return;
        }
        self.refresh(model);
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        let Some(c) = self.last.as_ref().filter(|c| c.dir == model.dir) else {
            return;
        };
        if !self.is_current(model) {
            ui.weak("(from fewer answers or another confidence source; updating)");
        }
        ui.horizontal(|ui| {
            ui.label("Confidence from");
            for s in ConfidenceSource::ALL {
                ui.selectable_value(&mut self.source, s, s.name())
                    .on_hover_text(match s {
                        ConfidenceSource::Auto => {
                            "The letter's probability when the server sent one, else the agreement"
                        }
                        ConfidenceSource::Probs => {
                            "The probability of the chosen letter (--logprobs)"
                        }
                        ConfidenceSource::Agreement => {
                            "The share of samples or rotations that agreed (--samples, --circular)"
                        }
                    });
            }
        });
        match &c.calibration {
            None => {
                ui.colored_label(ui.visuals().warn_fg_color, calibration::NO_CONFIDENCE);
            }
            Some(cal) => calibration_ui(ui, cal, &mut self.threshold),
        }
        ui.add_space(6.0);
        usage_view::usage_ui(ui, &c.usage);
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{:.1}", v * 100.0))
}

fn calibration_ui(ui: &mut egui::Ui, cal: &Calibration, threshold: &mut f64) {
    ui.strong("Calibration");
    if cal.without_confidence > 0 {
        ui.weak(format!(
            "{} answer(s) without a confidence from this source are left out",
            cal.without_confidence
        ));
    }
    egui::Grid::new("calibration_grid")
        .striped(true)
        .show(ui, |ui| {
            for h in [
                "Subtask",
                "answers",
                "accuracy %",
                "mean confidence %",
                "ECE %",
            ] {
                ui.strong(h);
            }
            ui.end_row();
            let mut row = |name: &str, r: &Reliability| {
                ui.label(name);
                ui.label(r.answers.to_string());
                ui.label(pct(Some(r.accuracy)));
                ui.label(pct(Some(r.mean_confidence)));
                ui.label(format!("ECE {name}: {}", pct(Some(r.ece))));
                ui.end_row();
            };
            row("All", &cal.all);
            for (name, r) in &cal.per_subtask {
                row(name, r);
            }
        });
    ui.horizontal(|ui| {
        reliability_plot(ui, &cal.all);
        abstain_plot(ui, &cal.all, *threshold);
    });
    ui.add(
        egui::Slider::new(threshold, 0.0..=1.0)
            .step_by(0.05)
            .text("Abstain below"),
    );
    let p = cal.all.abstain_at(*threshold);
    ui.label(format!(
        "{} for a person · {} kept ({}% coverage) at {}% accuracy",
        p.for_person,
        p.kept,
        pct(Some(p.coverage)),
        pct(p.accuracy)
    ));
}

const PLOT_SIDE: f32 = 200.0;

/// A square plot area with a frame; `to_screen` maps [0, 1]² into it.
fn plot_area(ui: &mut egui::Ui, name: &str) -> (egui::Painter, egui::Rect) {
    let (response, painter) =
        ui.allocate_painter(egui::vec2(PLOT_SIDE, PLOT_SIDE), egui::Sense::hover());
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, name));
    let rect = response.rect.shrink(4.0);
    painter.rect_stroke(
        rect,
        0.0,
        ui.visuals().widgets.noninteractive.bg_stroke,
        egui::StrokeKind::Inside,
    );
    (painter, rect)
}

fn to_screen(rect: egui::Rect, x: f64, y: f64) -> egui::Pos2 {
    egui::pos2(
        rect.left() + x as f32 * rect.width(),
        rect.bottom() - y as f32 * rect.height(),
    )
}

/// Each bin's accuracy as a bar over its confidence range; the diagonal is where
/// a calibrated model's bars end.
fn reliability_plot(ui: &mut egui::Ui, r: &Reliability) {
    let (painter, rect) = plot_area(ui, "Reliability diagram");
    let fill = ui.visuals().selection.bg_fill;
    for b in r.bins.iter().filter(|b| b.count > 0) {
        let top_left = to_screen(rect, b.low, b.accuracy.unwrap_or(0.0));
        let bottom_right = to_screen(rect, b.high, 0.0);
        painter.rect_filled(
            egui::Rect::from_two_pos(top_left, bottom_right).shrink2(egui::vec2(1.0, 0.0)),
            0.0,
            fill,
        );
    }
    painter.line_segment(
        [to_screen(rect, 0.0, 0.0), to_screen(rect, 1.0, 1.0)],
        egui::Stroke::new(1.0, ui.visuals().warn_fg_color),
    );
}

/// Accuracy of the kept answers (solid) and coverage (faint) against the
/// threshold, with the slider's threshold marked.
fn abstain_plot(ui: &mut egui::Ui, r: &Reliability, threshold: f64) {
    let (painter, rect) = plot_area(ui, "Abstain curve");
    let accuracy: Vec<egui::Pos2> = r
        .abstain
        .iter()
        .filter_map(|p| Some(to_screen(rect, p.threshold, p.accuracy?)))
        .collect();
    let coverage: Vec<egui::Pos2> = r
        .abstain
        .iter()
        .map(|p| to_screen(rect, p.threshold, p.coverage))
        .collect();
    painter.add(egui::Shape::line(
        accuracy,
        egui::Stroke::new(2.0, ui.visuals().selection.bg_fill),
    ));
    painter.add(egui::Shape::line(
        coverage,
        egui::Stroke::new(1.0, ui.visuals().weak_text_color()),
    ));
    painter.line_segment(
        [
            to_screen(rect, threshold, 0.0),
            to_screen(rect, threshold, 1.0),
        ],
        egui::Stroke::new(1.0, ui.visuals().warn_fg_color),
    );
}
