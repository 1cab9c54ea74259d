//! Per-subtask bars of a run, with the figures the papers published beside them
//! (outlined, labelled "published (paper)") where the run covers the same dataset
//! and subtask. Published numbers are only drawn; they never enter a run's scores.

use eframe::egui;
use egui_plot::{Bar, BarChart, Plot};

use crate::score::{self, ScoreTable};

/// A published set of per-dataset, per-subtask accuracies.
pub struct PublishedSet {
    pub label: &'static str,
    /// (dataset row as MMAD names it, subtask column, value).
    pub cells: &'static [(&'static str, &'static str, f64)],
}

const AD: &str = "Anomaly Detection";
const DC: &str = "Defect Classification";
const DL: &str = "Defect Localization";
const DD: &str = "Defect Description";
const DA: &str = "Defect Analysis";
const MV: &str = "DS-MVTec";
const VISA: &str = "VisA";

/// The Echo paper's tables (MMAD's DS-MVTec and VisA, five anomaly subtasks) and
/// MMAD's own Qwen2-VL-7B 1-shot Anomaly Detection cells.
pub const PUBLISHED: [PublishedSet; 3] = [
    PublishedSet {
        label: "Qwen2-VL-7B + Echo (Echo paper)",
        cells: &[
            (MV, AD, 89.65),
            (MV, DC, 72.86),
            (MV, DL, 76.11),
            (MV, DD, 85.57),
            (MV, DA, 93.20),
            (VISA, AD, 76.79),
            (VISA, DC, 62.35),
            (VISA, DL, 63.41),
            (VISA, DD, 74.03),
            (VISA, DA, 79.11),
        ],
    },
    PublishedSet {
        label: "Qwen2-VL-7B without Echo (Echo paper)",
        cells: &[
            (MV, AD, 82.26),
            (MV, DC, 68.46),
            (MV, DL, 76.11),
            (MV, DD, 82.19),
            (MV, DA, 92.28),
            (VISA, AD, 73.00),
            (VISA, DC, 57.06),
            (VISA, DL, 63.41),
            (VISA, DD, 74.71),
            (VISA, DA, 77.82),
        ],
    },
    PublishedSet {
        label: "Qwen2-VL-7B 1-shot (MMAD paper)",
        cells: &[(MV, AD, 85.45), (VISA, AD, 71.94)],
    },
];

/// Summary columns that are not subtasks.
fn is_subtask(column: &str) -> bool {
    !matches!(
        column,
        score::AVERAGE | "Overkill" | "Miss" | "Recall" | "Precision" | "F1"
    )
}

const PALETTE: [egui::Color32; 6] = [
    egui::Color32::from_rgb(86, 156, 214),
    egui::Color32::from_rgb(220, 140, 60),
    egui::Color32::from_rgb(120, 190, 100),
    egui::Color32::from_rgb(190, 110, 200),
    egui::Color32::from_rgb(210, 200, 90),
    egui::Color32::from_rgb(100, 200, 200),
];

/// The published cells a run's table has a counterpart for.
pub fn covered<'a>(
    table: &ScoreTable,
    set: &'a PublishedSet,
) -> Vec<&'a (&'static str, &'static str, f64)> {
    set.cells
        .iter()
        .filter(|(row, col, _)| {
            table.index.iter().any(|r| r == row) && table.columns.iter().any(|c| c == col)
        })
        .collect()
}

/// Draws the chart; `published` picks a set from [`PUBLISHED`] (None: none).
pub fn subtask_chart(
    ui: &mut egui::Ui,
    id: &str,
    table: &ScoreTable,
    published: &mut Option<usize>,
) {
    let subtasks: Vec<&str> = table
        .columns
        .iter()
        .map(String::as_str)
        .filter(|c| is_subtask(c))
        .collect();
    let datasets: Vec<&str> = table
        .index
        .iter()
        .map(String::as_str)
        .filter(|r| *r != score::AVERAGE)
        .collect();
    ui.horizontal(|ui| {
        let label = ui.label("Published figures");
        let shown = published.map_or("none", |i| PUBLISHED[i].label);
        egui::ComboBox::from_id_salt((id, "published"))
            .selected_text(shown)
            .show_ui(ui, |ui| {
                ui.selectable_value(published, None, "none");
                for (i, set) in PUBLISHED.iter().enumerate() {
                    ui.selectable_value(published, Some(i), set.label);
                }
            })
            .response
            .labelled_by(label.id);
    });
    if subtasks.is_empty() || datasets.is_empty() {
        ui.weak("The chart appears with the first answers.");
        return;
    }
    let set = published.map(|i| &PUBLISHED[i]);
    let reference = set.map(|s| covered(table, s)).unwrap_or_default();
    let ref_rows: Vec<&str> = datasets
        .iter()
        .copied()
        .filter(|d| reference.iter().any(|(r, _, _)| r == d))
        .collect();
    let series = datasets.len() + ref_rows.len();
    let group = 0.8;
    let width = group / series as f64;
    let offset = |k: usize| -group / 2.0 + width * (k as f64 + 0.5);
    let mut charts = Vec::new();
    // (label, colour, published): drawn above the plot, where it hides no bar.
    let mut legend: Vec<(String, egui::Color32, bool)> = Vec::new();
    for (k, dataset) in datasets.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        legend.push((format!("this run: {dataset}"), color, false));
        let bars: Vec<Bar> = subtasks
            .iter()
            .enumerate()
            .filter_map(|(i, col)| {
                let v = table.get(dataset, col)?;
                Some(
                    Bar::new(i as f64 + offset(k), v)
                        .width(width * 0.95)
                        .fill(color)
                        .name(format!("{dataset} / {col}")),
                )
            })
            .collect();
        charts.push(BarChart::new(format!("this run: {dataset}"), bars).color(color));
    }
    if let Some(set) = set {
        for (j, dataset) in ref_rows.iter().enumerate() {
            let k = datasets.len() + j;
            let color =
                PALETTE[datasets.iter().position(|d| d == dataset).unwrap_or(0) % PALETTE.len()];
            legend.push((
                format!("published (paper): {}, {dataset}", set.label),
                color,
                true,
            ));
            let bars: Vec<Bar> = subtasks
                .iter()
                .enumerate()
                .filter_map(|(i, col)| {
                    let (_, _, v) = reference
                        .iter()
                        .find(|(r, c, _)| r == dataset && c == col)?;
                    Some(
                        Bar::new(i as f64 + offset(k), *v)
                            .width(width * 0.95)
                            .fill(color.gamma_multiply(0.15))
                            .stroke(egui::Stroke::new(1.5, color))
                            .name(format!("published (paper) {dataset} / {col}")),
                    )
                })
                .collect();
            charts.push(
                BarChart::new(format!("published (paper): {}, {dataset}", set.label), bars)
                    .color(color.gamma_multiply(0.4)),
            );
        }
    }
    let names: Vec<String> = subtasks
        .iter()
        .map(|s| super::table::short_column(s).to_string())
        .collect();
    ui.horizontal_wrapped(|ui| {
        for (label, color, published) in &legend {
            let (rect, _) = ui.allocate_exact_size(egui::vec2(14.0, 14.0), egui::Sense::hover());
            if *published {
                ui.painter()
                    .rect_filled(rect, 2.0, color.gamma_multiply(0.15));
                ui.painter().rect_stroke(
                    rect,
                    2.0,
                    egui::Stroke::new(1.5, *color),
                    egui::StrokeKind::Inside,
                );
            } else {
                ui.painter().rect_filled(rect, 2.0, *color);
            }
            ui.label(label);
            ui.add_space(10.0);
        }
    });
    Plot::new(id)
        .height(240.0)
        .include_y(0.0)
        .include_y(100.0)
        .allow_zoom(false)
        .allow_drag(false)
        .allow_scroll(false)
        .y_axis_label("accuracy %")
        .x_axis_formatter(move |mark, _| {
            let i = mark.value.round();
            if (mark.value - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .show(ui, |plot| {
            for chart in charts {
                plot.bar_chart(chart);
            }
        });
    if set.is_some() && reference.is_empty() {
        ui.weak("The selected published figures cover DS-MVTec and VisA only; this run has none of their cells.");
    } else if set.is_some() {
        ui.weak("Outlined bars: published (paper) figures for reference; they are not part of this run's scores.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::{AnswerRecord, ScoreOptions, score};

    fn answer(image: &str, qtype: &str) -> AnswerRecord {
        AnswerRecord {
            image: image.into(),
            question_type: qtype.into(),
            correct_answer: "A".into(),
            gpt_answer: "A".into(),
        }
    }

    #[test]
    fn published_cells_are_shown_only_where_the_run_has_the_same_cell() {
        let table = score(
            &[
                answer("VisA/candle/test/bad/000.JPG", AD),
                answer("VisA/candle/test/bad/000.JPG", DC),
                answer("Sample/washer/test/good/000.png", AD),
            ],
            ScoreOptions::default(),
        );
        let echo = covered(&table, &PUBLISHED[0]);
        assert_eq!(
            echo.iter()
                .map(|(r, c, v)| (*r, *c, *v))
                .collect::<Vec<_>>(),
            [(VISA, AD, 76.79), (VISA, DC, 62.35)]
        );
        // MMAD's paper published only Anomaly Detection cells.
        assert_eq!(covered(&table, &PUBLISHED[2]).len(), 1);
        let sample_only = score(
            &[answer("Sample/washer/test/good/000.png", AD)],
            ScoreOptions::default(),
        );
        assert!(covered(&sample_only, &PUBLISHED[0]).is_empty());
    }
}
