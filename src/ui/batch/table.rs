//! The MMAD score table as a grid of coloured, clickable cells, and the difference
//! table of a comparison.

use eframe::egui;

use indexmap::IndexMap;

use crate::runs::compare::TableDiff;
use crate::score::{self, ScoreTable};

const CELL_SIZE: egui::Vec2 = egui::vec2(86.0, 24.0);
const HEADER_WIDTH: f32 = 100.0;

/// Columns where a lower value is better; their colour runs the other way.
fn lower_is_better(column: &str) -> bool {
    matches!(column, "Overkill" | "Miss")
}

/// A fixed 0-100 scale (red, amber, green), the same for every run so colours
/// compare across runs and over the course of one.
pub fn score_color(value: f64, lower_better: bool) -> egui::Color32 {
    if !value.is_finite() {
        return egui::Color32::from_gray(90);
    }
    let mut t = (value / 100.0).clamp(0.0, 1.0) as f32;
    if lower_better {
        t = 1.0 - t;
    }
    let red = egui::Color32::from_rgb(196, 64, 52);
    let amber = egui::Color32::from_rgb(214, 168, 48);
    let green = egui::Color32::from_rgb(52, 156, 84);
    if t < 0.5 {
        lerp(red, amber, t * 2.0)
    } else {
        lerp(amber, green, (t - 0.5) * 2.0)
    }
}

fn lerp(a: egui::Color32, b: egui::Color32, t: f32) -> egui::Color32 {
    let mix = |x: u8, y: u8| (f32::from(x) + (f32::from(y) - f32::from(x)) * t).round() as u8;
    egui::Color32::from_rgb(mix(a.r(), b.r()), mix(a.g(), b.g()), mix(a.b(), b.b()))
}

/// Green for gains, red for losses; full strength at 20 points.
pub fn delta_color(delta: f64) -> egui::Color32 {
    let t = (delta.abs() / 20.0).clamp(0.0, 1.0) as f32;
    let base = egui::Color32::from_gray(70);
    if delta > 0.0 {
        lerp(base, egui::Color32::from_rgb(40, 160, 80), t)
    } else {
        lerp(base, egui::Color32::from_rgb(200, 60, 50), t)
    }
}

/// One painted cell; its accessible label names row, column and value so screen
/// readers (and tests) can find it.
fn cell(
    ui: &mut egui::Ui,
    fill: egui::Color32,
    text: &str,
    accessible: String,
    selected: bool,
    clickable: bool,
) -> egui::Response {
    let sense = if clickable {
        egui::Sense::click()
    } else {
        egui::Sense::hover()
    };
    let (rect, response) = ui.allocate_exact_size(CELL_SIZE, sense);
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, clickable, &accessible));
    if ui.is_rect_visible(rect) {
        let painter = ui.painter();
        painter.rect_filled(rect.shrink(1.0), 3.0, fill);
        if selected || response.hovered() && clickable {
            let stroke = egui::Stroke::new(2.0, ui.visuals().strong_text_color());
            painter.rect_stroke(rect.shrink(1.0), 3.0, stroke, egui::StrokeKind::Inside);
        }
        painter.text(
            rect.center(),
            egui::Align2::CENTER_CENTER,
            text,
            egui::FontId::monospace(13.0),
            egui::Color32::from_gray(15),
        );
    }
    response
}

fn header(ui: &mut egui::Ui, text: &str, width: f32) {
    ui.add_sized(
        [width, CELL_SIZE.y],
        egui::Label::new(egui::RichText::new(text).strong()).truncate(),
    )
    .on_hover_text(text);
}

/// Short column titles so seven subtasks fit; the full name is on hover.
pub fn short_column(column: &str) -> &str {
    match column {
        "Anomaly Detection" => "Anomaly Det.",
        "Defect Classification" => "Defect Class.",
        "Defect Localization" => "Defect Loc.",
        "Defect Description" => "Defect Desc.",
        "Defect Analysis" => "Defect Anal.",
        "Object Classification" => "Object Class.",
        "Object Analysis" => "Object Anal.",
        other => other,
    }
}

/// The score table; returns the cell clicked (row, column) if any. `selected` is
/// outlined.
pub fn score_table(
    ui: &mut egui::Ui,
    id: &str,
    table: &ScoreTable,
    selected: Option<(&str, &str)>,
) -> Option<(String, String)> {
    let mut clicked = None;
    if table.index.len() <= 1 && table.columns.iter().all(|c| c == score::AVERAGE) {
        ui.weak("No answers yet.");
        return None;
    }
    egui::ScrollArea::horizontal().id_salt(id).show(ui, |ui| {
        egui::Grid::new(id)
            .spacing([2.0, 2.0])
            .min_col_width(0.0)
            .show(ui, |ui| {
                header(ui, "", HEADER_WIDTH);
                for c in &table.columns {
                    header(ui, short_column(c), CELL_SIZE.x);
                }
                ui.end_row();
                for (r, row) in table.index.iter().enumerate() {
                    header(ui, row, HEADER_WIDTH);
                    for (c, column) in table.columns.iter().enumerate() {
                        let v = table.values[r][c];
                        let text = if v.is_finite() {
                            format!("{v:.1}")
                        } else {
                            "-".into()
                        };
                        let is_sel = selected == Some((row.as_str(), column.as_str()));
                        let resp = cell(
                            ui,
                            score_color(v, lower_is_better(column)),
                            &text,
                            format!("{row} / {column}: {text}"),
                            is_sel,
                            true,
                        );
                        if resp
                            .on_hover_text(format!(
                                "{row} / {column}: {text}\nClick for its questions"
                            ))
                            .clicked()
                        {
                            clicked = Some((row.clone(), column.clone()));
                        }
                    }
                    ui.end_row();
                }
            });
    });
    clicked
}

/// The fixed colour scale, drawn once under the table.
pub fn legend(ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        ui.weak("Colour scale (fixed):");
        for v in [0.0, 25.0, 50.0, 75.0, 100.0] {
            let (rect, _) = ui.allocate_exact_size(egui::vec2(40.0, 16.0), egui::Sense::hover());
            ui.painter().rect_filled(rect, 2.0, score_color(v, false));
            ui.painter().text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                format!("{v:.0}"),
                egui::FontId::monospace(11.0),
                egui::Color32::from_gray(15),
            );
        }
        ui.weak("Overkill and Miss: lower is better, colours reversed.");
    });
}

/// B - A per cell; returns the cell clicked.
/// `intervals`: the 95% interval of B - A per (row, column), where computed; a cell
/// whose interval leaves out 0 is marked `*` (a change beyond resampling noise).
pub fn diff_table(
    ui: &mut egui::Ui,
    id: &str,
    diff: &TableDiff,
    intervals: &IndexMap<(String, String), (f64, f64)>,
) -> Option<(String, String)> {
    let mut clicked = None;
    egui::ScrollArea::horizontal().id_salt(id).show(ui, |ui| {
        egui::Grid::new(id)
            .spacing([2.0, 2.0])
            .min_col_width(0.0)
            .show(ui, |ui| {
                header(ui, "", HEADER_WIDTH);
                for c in &diff.columns {
                    header(ui, short_column(c), CELL_SIZE.x);
                }
                ui.end_row();
                for (r, row) in diff.rows.iter().enumerate() {
                    header(ui, row, HEADER_WIDTH);
                    for (c, column) in diff.columns.iter().enumerate() {
                        let interval = intervals.get(&(row.clone(), column.clone()));
                        let beyond_noise = interval.is_some_and(|&(lo, hi)| lo > 0.0 || hi < 0.0);
                        let (fill, text) = match diff.delta(r, c) {
                            Some(d) => {
                                let d_shown = if lower_is_better(column) { -d } else { d };
                                let mark = if beyond_noise { "*" } else { "" };
                                (delta_color(d_shown), format!("{d:+.1}{mark}"))
                            }
                            None => (egui::Color32::from_gray(90), "n/a".into()),
                        };
                        let interval_line = interval.map_or(String::new(), |(lo, hi)| {
                            let verdict = if beyond_noise {
                                "leaves out 0: a change beyond resampling noise"
                            } else {
                                "includes 0: could be noise"
                            };
                            format!("\n95% interval of B - A: {lo:+.1} to {hi:+.1} ({verdict})")
                        });
                        let a = diff.a[r][c].map_or("none".into(), |v| format!("{v:.1}"));
                        let b = diff.b[r][c].map_or("none".into(), |v| format!("{v:.1}"));
                        let resp = cell(
                            ui,
                            fill,
                            &text,
                            format!("{row} / {column}: B - A {text}"),
                            false,
                            true,
                        );
                        if resp
                            .on_hover_text(format!(
                                "{row} / {column}\nA: {a}\nB: {b}\nB - A: {text}{interval_line}"
                            ))
                            .clicked()
                        {
                            clicked = Some((row.clone(), column.clone()));
                        }
                    }
                    ui.end_row();
                }
            });
    });
    clicked
}
