//! Compare two runs: the table of differences (B - A) and the questions whose
//! answer changed, each openable down to its traces.

use std::path::PathBuf;

use eframe::egui;

use super::super::Command;
use super::super::jobs::Job;
use super::BatchContext;
use super::drill::{OpenQuestion, ThumbCache, question_detail};
use super::model::RunModel;
use super::table;
use indexmap::IndexMap;

use crate::runs::catalog::RunRow;
use crate::runs::compare::{self, ChangeKind, Comparison, Flips};
use crate::score::ScoreOptions;
use crate::score::interval::BootstrapOptions;

pub struct Compared {
    pub a: RunModel,
    pub b: RunModel,
    pub comparison: Comparison,
    /// 95% intervals of B - A per (row, column): the paired bootstrap over images.
    pub deltas: IndexMap<(String, String), (f64, f64)>,
}

#[derive(Default)]
pub struct CompareState {
    pub a: Option<PathBuf>,
    pub b: Option<PathBuf>,
    pub mmad_compat: bool,
    pub result: Option<Compared>,
    pub error: Option<String>,
    job: Option<Job<Compared>>,
    /// Show only changes of this kind.
    pub filter: Option<ChangeKind>,
    /// Restrict the change list to one cell of the difference table.
    pub cell: Option<(String, String)>,
    /// The opened question and which run's record it shows (false: A, true: B).
    pub open: Option<(OpenQuestion, bool)>,
    thumbs: ThumbCache,
}

impl CompareState {
    pub fn busy(&self) -> bool {
        self.job.is_some()
            || self.open.as_ref().is_some_and(|(o, _)| o.busy())
            || self.thumbs.busy()
    }

    pub fn start(&mut self, a: PathBuf, b: PathBuf) {
        let options = ScoreOptions {
            mmad_compat: self.mmad_compat,
            overkill_miss: true,
            ..ScoreOptions::default()
        };
        self.job = Some(Job::spawn("compare runs", move || {
            let a = RunModel::load(&a, options)?;
            let b = RunModel::load(&b, options)?;
            let comparison = compare::compare(&a.records, &b.records, options);
            let deltas = compare::delta_intervals(
                &a.records,
                &b.records,
                options,
                BootstrapOptions::default(),
            );
            Ok(Compared {
                a,
                b,
                comparison,
                deltas,
            })
        }));
        self.open = None;
        self.cell = None;
    }

    pub fn poll(&mut self) {
        if let Some(r) = self.job.as_mut().and_then(Job::take) {
            self.job = None;
            match r {
                Ok(c) => {
                    self.result = Some(c);
                    self.error = None;
                }
                Err(e) => self.error = Some(e),
            }
        }
        if let Some((o, _)) = &mut self.open {
            o.poll();
        }
    }

    pub fn poll_textures(&mut self, ctx: &egui::Context) {
        self.thumbs.poll(ctx);
    }

    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        runs: &[RunRow],
        cx: &BatchContext<'_>,
        commands: &mut Vec<Command>,
    ) {
        ui.heading("Compare two runs");
        // The usual question is "what did my last change do": start from the two
        // newest runs (the list is newest first).
        let readable: Vec<&RunRow> = runs.iter().filter(|r| r.manifest.is_some()).collect();
        if self.a.is_none() && self.b.is_none() && readable.len() >= 2 {
            self.b = Some(readable[0].dir.clone());
            self.a = Some(readable[1].dir.clone());
        }
        ui.horizontal(|ui| {
            for (which, slot) in [("Run A", &mut self.a), ("Run B", &mut self.b)] {
                let label = ui.label(which);
                let shown = slot
                    .as_ref()
                    .and_then(|p| p.file_name())
                    .map_or("choose...".to_string(), |n| {
                        n.to_string_lossy().into_owned()
                    });
                egui::ComboBox::from_id_salt(which)
                    .selected_text(shown)
                    .width(300.0)
                    .show_ui(ui, |ui| {
                        for r in runs.iter().filter(|r| r.manifest.is_some()) {
                            let text = match r.manifest.as_ref().map(|m| m.note.as_str()) {
                                Some(n) if !n.is_empty() => format!("{} ({n})", r.name),
                                _ => r.name.clone(),
                            };
                            ui.selectable_value(slot, Some(r.dir.clone()), text);
                        }
                    })
                    .response
                    .labelled_by(label.id);
            }
            ui.checkbox(&mut self.mmad_compat, "MMAD-compatible scoring");
            let ready = self.a.is_some() && self.b.is_some() && self.job.is_none();
            if ui
                .add_enabled(ready, egui::Button::new("Compare runs"))
                .clicked()
                && let (Some(a), Some(b)) = (self.a.clone(), self.b.clone())
            {
                self.start(a, b);
            }
            if self.job.is_some() {
                ui.spinner();
            }
        });
        if runs.len() < 2 {
            ui.weak("Comparing needs two runs in the runs folder.");
        }
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        let Some(res) = &self.result else {
            return;
        };
        let c = &res.comparison;
        let mut text = format!(
            "{} questions in both runs: {} better in B, {} worse, {} changed otherwise",
            c.common,
            c.better,
            c.worse,
            c.changes.len() - c.better - c.worse
        );
        if c.only_in_a + c.only_in_b > 0 {
            text.push_str(&format!(
                "; {} only in A, {} only in B",
                c.only_in_a, c.only_in_b
            ));
        }
        ui.label(text);
        if !c.mismatched.is_empty() {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!(
                    "{} question index(es) hold different images in the two runs (different dataset files); they are left out",
                    c.mismatched.len()
                ),
            );
        }
        let (a_fp, b_fp) = (res.a.manifest.as_ref(), res.b.manifest.as_ref());
        if let (Some(a), Some(b)) = (a_fp, b_fp) {
            let diff = a.differences(b);
            if !diff.is_empty() {
                ui.label(format!("Runs differ in: {}", diff.join(", ")));
            }
        }
        ui.strong("B - A per cell (* beyond resampling noise; click a cell to list its changed questions)");
        if let Some(cell) = table::diff_table(ui, "compare_table", &c.table, &res.deltas) {
            self.cell = if self.cell.as_ref() == Some(&cell) {
                None
            } else {
                Some(cell)
            };
            self.open = None;
        }
        significance(ui, c, &res.deltas);
        ui.separator();
        if let Some((open, show_b)) = &mut self.open {
            let index = open.index;
            let mut back = false;
            let mut switch = None;
            ui.horizontal(|ui| {
                back = ui.button("< Back to the changes").clicked();
                if ui.selectable_label(!*show_b, "Run A's trace").clicked() {
                    switch = Some(false);
                }
                if ui.selectable_label(*show_b, "Run B's trace").clicked() {
                    switch = Some(true);
                }
            });
            if let Some(ch) = c.changes.iter().find(|x| x.index == index) {
                ui.label(format!(
                    "A answered {}, B answered {}, correct {}: {}",
                    ch.a_answer.as_deref().unwrap_or("error"),
                    ch.b_answer.as_deref().unwrap_or("error"),
                    ch.correct_answer,
                    ch.kind.label()
                ));
            }
            let model = if *show_b { &res.b } else { &res.a };
            match &open.full {
                Some(Ok(full)) => {
                    let root = model.manifest.as_ref().map(|m| m.dataset.root.clone());
                    question_detail(
                        ui,
                        full,
                        root.as_deref(),
                        &mut self.thumbs,
                        model,
                        cx.inspect_dataset,
                        commands,
                    );
                }
                Some(Err(e)) => {
                    ui.colored_label(ui.visuals().error_fg_color, e);
                }
                None => {
                    ui.spinner();
                }
            }
            if back {
                self.open = None;
            } else if let Some(b) = switch {
                let dir = if b { &res.b.dir } else { &res.a.dir };
                self.open = Some((OpenQuestion::open(dir, index, None), b));
            }
            return;
        }
        ui.horizontal(|ui| {
            ui.label("Show");
            ui.selectable_value(&mut self.filter, None, "all changes");
            ui.selectable_value(&mut self.filter, Some(ChangeKind::Better), "better");
            ui.selectable_value(&mut self.filter, Some(ChangeKind::Worse), "worse");
            ui.selectable_value(
                &mut self.filter,
                Some(ChangeKind::Changed),
                "changed, still wrong",
            );
            if let Some((r, col)) = &self.cell {
                ui.label(format!("in {r} / {col}"));
                if ui.small_button("all cells").clicked() {
                    self.cell = None;
                }
            }
        });
        let shown: Vec<_> = c
            .changes
            .iter()
            .filter(|x| self.filter.is_none_or(|f| f == x.kind))
            .filter(|x| {
                self.cell.as_ref().is_none_or(|(r, col)| {
                    compare::cell_contains(r, col, &x.image, &x.question_type)
                })
            })
            .collect();
        let mut open = None;
        egui::ScrollArea::vertical()
            .id_salt("changes")
            .auto_shrink([false, false])
            .show_rows(ui, 22.0, shown.len(), |ui, range| {
                egui::Grid::new("changes_grid")
                    .striped(true)
                    .num_columns(7)
                    .show(ui, |ui| {
                        for ch in &shown[range] {
                            if ui.button(format!("Open #{}", ch.index)).clicked() {
                                open = Some(ch.index);
                            }
                            let color = match ch.kind {
                                ChangeKind::Better => egui::Color32::from_rgb(70, 170, 90),
                                ChangeKind::Worse => egui::Color32::from_rgb(220, 90, 70),
                                ChangeKind::Changed => ui.visuals().warn_fg_color,
                            };
                            ui.colored_label(color, ch.kind.label());
                            ui.label(format!("A: {}", ch.a_answer.as_deref().unwrap_or("error")));
                            ui.label(format!("B: {}", ch.b_answer.as_deref().unwrap_or("error")));
                            ui.label(format!("correct: {}", ch.correct_answer));
                            ui.label(&ch.question_type);
                            ui.add(egui::Label::new(&ch.image).truncate())
                                .on_hover_text(&ch.question);
                            ui.end_row();
                        }
                    });
            });
        if let Some(index) = open {
            self.open = Some((OpenQuestion::open(&res.b.dir, index, None), true));
        }
    }
}

/// "Is B really different?": the verdict on the Average in one sentence, then the flip
/// matrix and McNemar's exact test per subtask.
fn significance(
    ui: &mut egui::Ui,
    c: &Comparison,
    deltas: &IndexMap<(String, String), (f64, f64)>,
) {
    let average = crate::score::AVERAGE;
    let delta = c.table.delta_by_name(average, average);
    let interval = deltas.get(&(average.to_owned(), average.to_owned()));
    let p = c.flips.mcnemar_p();
    let mut sentence = match (delta, interval) {
        (Some(d), Some((lo, hi))) => {
            format!("Average B - A: {d:+.1} points, 95% interval {lo:+.1} to {hi:+.1}; ")
        }
        (Some(d), None) => format!("Average B - A: {d:+.1} points; "),
        _ => String::new(),
    };
    sentence += &format!(
        "{} questions flipped right to wrong, {} wrong to right: McNemar p = {}",
        c.flips.right_to_wrong,
        c.flips.wrong_to_right,
        p_text(p)
    );
    sentence += if p < 0.05 {
        " (the runs differ beyond chance)"
    } else {
        " (no difference beyond chance)"
    };
    ui.label(sentence);
    egui::CollapsingHeader::new("Flips and McNemar per subtask")
        .id_salt("flips")
        .show(ui, |ui| {
            egui::Grid::new("flips_grid")
                .striped(true)
                .num_columns(6)
                .show(ui, |ui| {
                    for h in [
                        "Subtask",
                        "Right to wrong",
                        "Wrong to right",
                        "Both right",
                        "Both wrong",
                        "McNemar p",
                    ] {
                        ui.strong(h);
                    }
                    ui.end_row();
                    let rows = std::iter::once(("All subtasks", &c.flips))
                        .chain(c.flips_by_column.iter().map(|(k, f)| (k.as_str(), f)));
                    for (name, f) in rows {
                        flips_row(ui, name, f);
                    }
                });
        });
}

fn flips_row(ui: &mut egui::Ui, name: &str, f: &Flips) {
    ui.label(name);
    ui.label(f.right_to_wrong.to_string());
    ui.label(f.wrong_to_right.to_string());
    ui.label(f.both_right.to_string());
    ui.label(f.both_wrong.to_string());
    ui.label(p_text(f.mcnemar_p()));
    ui.end_row();
}

fn p_text(p: f64) -> String {
    if p >= 0.001 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}
