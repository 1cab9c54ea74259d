//! Per-subtask bars of a run, with the figures the papers published beside them
//! (outlined, labelled "published (paper)") where the run covers the same dataset
//! and subtask. Published numbers are only drawn; they never enter a run's scores.

use eframe::egui;
use egui_plot::{Bar, BarChart, HLine, Plot};

use crate::score::published::{PUBLISHED, PublishedSet};
use crate::score::{self, ScoreTable};

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
    let mut ref_rows: Vec<&str> = datasets
        .iter()
        .copied()
        .filter(|d| reference.iter().any(|(r, _, _)| r == d))
        .collect();
    // Figures over all of MMAD sit beside every dataset's bars as one more series.
    if reference.iter().any(|(r, _, _)| *r == score::AVERAGE) {
        ref_rows.push(score::AVERAGE);
    }
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
            let color = match datasets.iter().position(|d| d == dataset) {
                Some(k) => PALETTE[k % PALETTE.len()],
                None => egui::Color32::from_gray(160),
            };
            let shown_row = if *dataset == score::AVERAGE {
                "all of MMAD"
            } else {
                dataset
            };
            legend.push((
                format!("published (paper): {}, {shown_row}", set.label),
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
    let average_line = set.and_then(|s| s.average);
    if let (Some(set), Some(average)) = (set, average_line) {
        legend.push((
            format!(
                "published: {}, average {average:.2} (dashed line)",
                set.label
            ),
            egui::Color32::from_gray(170),
            true,
        ));
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
            if let Some(average) = average_line {
                plot.hline(
                    HLine::new(format!("published average {average:.2}"), average)
                        .color(egui::Color32::from_gray(170))
                        .style(egui_plot::LineStyle::dashed_loose()),
                );
            }
        });
    match set {
        Some(s) if reference.is_empty() && s.average.is_none() => {
            ui.weak("The selected published figures cover DS-MVTec and VisA only; this run has none of their cells.");
        }
        Some(s) => {
            let mut note = String::from("Outlined bars");
            if let Some(average) = s.average {
                note += &format!(
                    " and the dashed line (the average over MMAD's seven subtasks, {average:.2}; compare it with this run's Average column)"
                );
            }
            note += ": published figures for reference; they are not part of this run's scores.";
            ui.weak(note);
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::{AnswerRecord, ScoreOptions, score};

    const AD: &str = "Anomaly Detection";
    const DC: &str = "Defect Classification";
    const VISA: &str = "VisA";

    fn answer(image: &str, qtype: &str) -> AnswerRecord {
        AnswerRecord {
            image: image.into(),
            question_type: qtype.into(),
            correct_answer: "A".into(),
            gpt_answer: "A".into(),
        }
    }

    #[test]
    fn figures_over_all_of_mmad_are_shown_beside_any_run() {
        // A run on our own sample shares no dataset with the papers, but the human
        // expert's figures are over all of MMAD: they sit on the Average row.
        let table = score(
            &[
                answer("Sample/washer/test/good/000.png", AD),
                answer("Sample/washer/test/bad/000.png", DC),
            ],
            ScoreOptions::default(),
        );
        let expert = PUBLISHED
            .iter()
            .find(|s| s.label.starts_with("Human expert"))
            .unwrap();
        let shown = covered(&table, expert);
        assert_eq!(
            shown.iter().map(|(r, c, _)| (*r, *c)).collect::<Vec<_>>(),
            [(score::AVERAGE, AD), (score::AVERAGE, DC)]
        );
        assert_eq!(expert.average, Some(86.65));
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
