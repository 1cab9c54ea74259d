//! Drill-down: the questions behind a table cell, and one question in full with
//! every expert's trace. Thumbnails decode on background threads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use eframe::egui;

use super::super::jobs::Job;
use super::super::trace_view::{self, QuestionRun};
use super::super::{Command, Tab};
use super::model::RunModel;
use crate::dataset::{DatasetRoot, category_of, defect_type_of};
use crate::runs::compare::cell_contains;
use crate::runs::journal::{self, JournalRecord, RecordLocation};
use crate::score;
use crate::vision::{DecodeLimits, decode_rgb8};

/// Thumbnails kept decoded; older ones are dropped (and decoded again if needed).
const THUMB_CAPACITY: usize = 400;
/// Decodes running at once, so a fast scroll does not queue thousands.
const THUMB_PARALLEL: usize = 4;
pub const THUMB_SMALL: u32 = 96;
pub const THUMB_LARGE: u32 = 320;

struct Thumb {
    rgb: Vec<u8>,
    size: [usize; 2],
}

enum ThumbState {
    Decoding(Job<Thumb>),
    Ready(egui::TextureHandle),
    Failed(String),
}

/// Decoded, downscaled images by (image key, size).
#[derive(Default)]
pub struct ThumbCache {
    items: HashMap<(String, u32), ThumbState>,
    order: Vec<(String, u32)>,
}

impl ThumbCache {
    fn decoding(&self) -> usize {
        self.items
            .values()
            .filter(|t| matches!(t, ThumbState::Decoding(_)))
            .count()
    }

    pub fn busy(&self) -> bool {
        self.decoding() > 0
    }

    /// Turns finished decodes into textures.
    pub fn poll(&mut self, ctx: &egui::Context) {
        for ((key, side), state) in &mut self.items {
            if let ThumbState::Decoding(job) = state
                && let Some(result) = job.take()
            {
                *state = match result {
                    Ok(t) => ThumbState::Ready(ctx.load_texture(
                        format!("thumb:{side}:{key}"),
                        egui::ColorImage::from_rgb(t.size, &t.rgb),
                        egui::TextureOptions::LINEAR,
                    )),
                    Err(e) => ThumbState::Failed(e),
                };
            }
        }
    }

    /// Draws the image at most `max` points a side, starting its decode if needed.
    pub fn show(&mut self, ui: &mut egui::Ui, root: Option<&Path>, key: &str, side: u32, max: f32) {
        let id = (key.to_string(), side);
        if !self.items.contains_key(&id) {
            let Some(root) = root else {
                placeholder(ui, max, "no dataset root");
                return;
            };
            if self.decoding() >= THUMB_PARALLEL {
                placeholder(ui, max, "");
                return;
            }
            let path = DatasetRoot::new(root).resolve(key);
            let state = match path {
                Ok(path) => ThumbState::Decoding(Job::spawn("thumbnail", move || {
                    let img = decode_rgb8(&path, DecodeLimits::default())?;
                    let small = image::imageops::thumbnail(&img, side, side);
                    let size = [small.width() as usize, small.height() as usize];
                    Ok(Thumb {
                        rgb: small.into_raw(),
                        size,
                    })
                })),
                Err(e) => ThumbState::Failed(e.to_string()),
            };
            self.items.insert(id.clone(), state);
            self.order.push(id.clone());
            if self.order.len() > THUMB_CAPACITY {
                let old = self.order.remove(0);
                self.items.remove(&old);
            }
        }
        match self.items.get(&id) {
            Some(ThumbState::Ready(tex)) => {
                let size = tex.size_vec2();
                let scale = (max / size.x.max(size.y)).min(1.0);
                ui.add(egui::Image::new((tex.id(), size * scale)));
            }
            Some(ThumbState::Failed(e)) => {
                placeholder(ui, max, "no image").on_hover_text(e.as_str());
            }
            _ => {
                placeholder(ui, max, "");
            }
        }
    }
}

fn placeholder(ui: &mut egui::Ui, max: f32, text: &str) -> egui::Response {
    let (rect, resp) = ui.allocate_exact_size(egui::vec2(max, max), egui::Sense::hover());
    ui.painter()
        .rect_filled(rect, 2.0, ui.visuals().faint_bg_color);
    if !text.is_empty() {
        ui.painter().text(
            rect.center(),
            egui::Align2::CENTER_CENTER,
            text,
            egui::FontId::proportional(10.0),
            ui.visuals().weak_text_color(),
        );
    }
    resp
}

/// How a record came out.
pub fn outcome(r: &JournalRecord) -> &'static str {
    if !r.is_ok() {
        "error"
    } else if !r
        .gpt_answer
        .as_deref()
        .is_some_and(|g| score::VALID_LETTERS.contains(&g))
    {
        "no letter"
    } else if r.correct == Some(true) {
        "right"
    } else {
        "wrong"
    }
}

fn outcome_color(ui: &egui::Ui, outcome: &str) -> egui::Color32 {
    match outcome {
        "right" => egui::Color32::from_rgb(70, 170, 90),
        "wrong" => egui::Color32::from_rgb(220, 90, 70),
        _ => ui.visuals().warn_fg_color,
    }
}

/// A question opened in full.
pub struct OpenQuestion {
    pub index: usize,
    /// The record with its traces, read back from the journal.
    pub full: Option<Result<JournalRecord, String>>,
    job: Option<Job<JournalRecord>>,
}

impl OpenQuestion {
    /// Reads question `index`'s full record: the one line at `location` when the
    /// run was loaded (so a 40,000-question journal is not read for one trace),
    /// otherwise by a scan that parses only each line's index.
    pub fn open(run_dir: &Path, index: usize, location: Option<RecordLocation>) -> Self {
        let path = run_dir.join(journal::JOURNAL_FILE);
        OpenQuestion {
            index,
            full: None,
            job: Some(Job::spawn("read trace", move || {
                // A place that no longer holds the question's record (a retry
                // rewrote the journal since it was read) falls back to the scan.
                let at_place = location
                    .and_then(|at| journal::read_record_at(&path, at).ok())
                    .filter(|r| r.index == index);
                if let Some(record) = at_place {
                    return Ok(record);
                }
                let at = journal::locate_record(&path, index)?.ok_or_else(|| {
                    anyhow::anyhow!("question {index} is not in {}", path.display())
                })?;
                Ok(journal::read_record_at(&path, at)?)
            })),
        }
    }

    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    pub fn poll(&mut self) {
        if let Some(r) = self.job.as_mut().and_then(Job::take) {
            self.job = None;
            self.full = Some(r);
        }
    }
}

/// What the list was computed for: cell, filters and the records' generation.
type ListKey = (
    String,
    String,
    bool,
    bool,
    Option<String>,
    Option<String>,
    u64,
);

/// Counts per value, in order of first appearance.
fn counts<'a>(values: impl Iterator<Item = &'a str>) -> Vec<(String, usize)> {
    let mut out: indexmap::IndexMap<&str, usize> = indexmap::IndexMap::new();
    for v in values {
        *out.entry(v).or_default() += 1;
    }
    out.into_iter().map(|(k, n)| (k.to_owned(), n)).collect()
}

/// The drill-down of one table cell.
#[derive(Default)]
pub struct DrillState {
    pub cell: Option<(String, String)>,
    pub wrong_only: bool,
    pub errors_only: bool,
    /// Only this category / defect type (the cell gives dataset and question type).
    pub category: Option<String>,
    pub defect: Option<String>,
    /// Questions per category and per defect type under the other filters, in
    /// order of first appearance: what each choice would list.
    pub category_counts: Vec<(String, usize)>,
    pub defect_counts: Vec<(String, usize)>,
    /// Positions in the model's records of the listed questions.
    pub listed: Vec<usize>,
    listed_for: Option<ListKey>,
    pub open: Option<OpenQuestion>,
    pub thumbs: ThumbCache,
}

impl DrillState {
    pub fn select_cell(&mut self, row: String, column: String) {
        self.cell = Some((row, column));
        self.open = None;
        self.category = None;
        self.defect = None;
    }

    pub fn busy(&self) -> bool {
        self.thumbs.busy() || self.open.as_ref().is_some_and(OpenQuestion::busy)
    }

    pub fn poll(&mut self, ctx: &egui::Context) {
        self.thumbs.poll(ctx);
        if let Some(o) = &mut self.open {
            o.poll();
        }
    }

    /// Recomputes the list when the cell, the filters or the records changed.
    pub fn refresh(&mut self, model: &RunModel) {
        let Some((row, column)) = &self.cell else {
            self.listed.clear();
            return;
        };
        let key = (
            row.clone(),
            column.clone(),
            self.wrong_only,
            self.errors_only,
            self.category.clone(),
            self.defect.clone(),
            model.generation,
        );
        if self.listed_for.as_ref() == Some(&key) {
            return;
        }
        let mut base: Vec<usize> = model
            .records
            .iter()
            .enumerate()
            .filter(|(_, r)| cell_contains(row, column, &r.image, &r.question_type))
            .filter(|(_, r)| !self.errors_only || !r.is_ok())
            .filter(|(_, r)| !self.wrong_only || outcome(r) != "right")
            .map(|(i, _)| i)
            .collect();
        base.sort_by_key(|&i| model.records[i].index);
        let image = |i: &usize| model.records[*i].image.as_str();
        let in_category = |i: &usize| {
            self.category
                .as_deref()
                .is_none_or(|c| category_of(image(i)) == c)
        };
        let in_defect = |i: &usize| {
            self.defect
                .as_deref()
                .is_none_or(|d| defect_type_of(image(i)) == d)
        };
        self.category_counts = counts(
            base.iter()
                .filter(|i| in_defect(i))
                .map(|i| category_of(image(i))),
        );
        self.defect_counts = counts(
            base.iter()
                .filter(|i| in_category(i))
                .map(|i| defect_type_of(image(i))),
        );
        self.listed = base
            .iter()
            .copied()
            .filter(|i| in_category(i) && in_defect(i))
            .collect();
        self.listed_for = Some(key);
    }

    /// The list of the selected cell's questions, or the opened question.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        model: &RunModel,
        inspect_dataset: &Path,
        commands: &mut Vec<Command>,
    ) {
        let root = model.manifest.as_ref().map(|m| m.dataset.root.clone());
        if let Some(open) = &self.open {
            let index = open.index;
            if ui.button("< Back to the list").clicked() {
                self.open = None;
                return;
            }
            let record = model.records.iter().rev().find(|r| r.index == index);
            match (&open.full, record) {
                (Some(Ok(full)), _) => {
                    let full = full.clone();
                    question_detail(
                        ui,
                        &full,
                        root.as_deref(),
                        &mut self.thumbs,
                        model,
                        inspect_dataset,
                        commands,
                    );
                }
                (Some(Err(e)), rec) => {
                    ui.colored_label(
                        ui.visuals().error_fg_color,
                        format!("Cannot read the trace: {e}"),
                    );
                    if let Some(r) = rec {
                        let r = r.clone();
                        question_detail(
                            ui,
                            &r,
                            root.as_deref(),
                            &mut self.thumbs,
                            model,
                            inspect_dataset,
                            commands,
                        );
                    }
                }
                (None, _) => {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label("Reading the trace from the journal...");
                    });
                }
            }
            return;
        }
        let Some((row, column)) = self.cell.clone() else {
            ui.weak("Click a cell of the table to list its questions.");
            return;
        };
        self.refresh(model);
        ui.heading(format!("{row} / {column}"));
        ui.horizontal(|ui| {
            ui.checkbox(&mut self.wrong_only, "wrong only");
            ui.checkbox(&mut self.errors_only, "errors only");
            ui.label(format!("{} question(s)", self.listed.len()));
        });
        ui.horizontal(|ui| {
            facet(ui, "Category", &mut self.category, &self.category_counts);
            facet(ui, "Defect type", &mut self.defect, &self.defect_counts);
        });
        ui.separator();
        let row_height = 64.0;
        let listed = self.listed.clone();
        egui::ScrollArea::vertical()
            .id_salt("drill_list")
            .auto_shrink([false, false])
            .show_rows(ui, row_height, listed.len(), |ui, range| {
                for &pos in &listed[range] {
                    let Some(r) = model.records.get(pos) else {
                        continue;
                    };
                    let clicked = ui
                        .horizontal(|ui| {
                            ui.set_height(row_height - 4.0);
                            self.thumbs
                                .show(ui, root.as_deref(), &r.image, THUMB_SMALL, 56.0);
                            ui.vertical(|ui| {
                                let o = outcome(r);
                                let open = ui
                                    .horizontal(|ui| {
                                        let open = ui.button(format!("Open #{}", r.index));
                                        ui.colored_label(outcome_color(ui, o), o);
                                        ui.label(format!(
                                            "correct {}, given {}",
                                            r.correct_answer,
                                            r.gpt_answer.as_deref().unwrap_or("none")
                                        ));
                                        open.clicked()
                                    })
                                    .inner;
                                ui.add(egui::Label::new(&r.question.text).truncate())
                                    .on_hover_text(format!("{}\n{}", r.image, r.question.text));
                                ui.add(
                                    egui::Label::new(egui::RichText::new(&r.image).weak().small())
                                        .truncate(),
                                );
                                open
                            })
                            .inner
                        })
                        .inner;
                    if clicked {
                        self.open = Some(OpenQuestion::open(
                            &model.dir,
                            r.index,
                            model.location(r.index),
                        ));
                    }
                }
            });
    }
}

/// A filter choice with how many questions each value holds.
fn facet(ui: &mut egui::Ui, name: &str, chosen: &mut Option<String>, counts: &[(String, usize)]) {
    let label = ui.label(name);
    let all: usize = counts.iter().map(|(_, n)| n).sum();
    let shown = match chosen {
        Some(c) => {
            let n = counts.iter().find(|(v, _)| v == c).map_or(0, |(_, n)| *n);
            format!("{c} ({n})")
        }
        None => format!("all ({all})"),
    };
    egui::ComboBox::from_id_salt(("facet", name))
        .selected_text(shown)
        .show_ui(ui, |ui| {
            ui.selectable_value(chosen, None, format!("all ({all})"));
            for (value, n) in counts {
                ui.selectable_value(chosen, Some(value.clone()), format!("{value} ({n})"));
            }
        })
        .response
        .labelled_by(label.id);
}

/// One question in full: image, question, answers, and each expert's trace.
pub fn question_detail(
    ui: &mut egui::Ui,
    r: &JournalRecord,
    root: Option<&Path>,
    thumbs: &mut ThumbCache,
    model: &RunModel,
    inspect_dataset: &Path,
    commands: &mut Vec<Command>,
) {
    egui::ScrollArea::vertical()
        .id_salt("question_detail")
        .auto_shrink([false, false])
        .show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.strong(format!("Question #{}", r.index));
                let o = outcome(r);
                ui.colored_label(outcome_color(ui, o), o);
                if ui
                    .button("Open in Inspect")
                    .on_hover_text("Show this image in the Inspect tab")
                    .clicked()
                {
                    open_in_inspect(model, &r.image, inspect_dataset, commands);
                }
            });
            ui.label(egui::RichText::new(&r.image).monospace());
            thumbs.show(ui, root, &r.image, THUMB_LARGE, 260.0);
            ui.label(&r.question.text);
            for (letter, text) in &r.question.options {
                let mut line = format!("{letter}. {text}");
                if *letter == r.correct_answer {
                    line.push_str("   (correct)");
                }
                if r.gpt_answer.as_deref() == Some(letter.as_str()) {
                    line.push_str("   (given)");
                }
                ui.label(line);
            }
            egui::Grid::new("answer_facts")
                .num_columns(2)
                .show(ui, |ui| {
                    let mut fact = |k: &str, v: String| {
                        ui.weak(k);
                        ui.label(v);
                        ui.end_row();
                    };
                    fact("type", r.question_type.clone());
                    fact("correct", r.correct_answer.clone());
                    fact(
                        "given",
                        r.gpt_answer.clone().unwrap_or_else(|| "none".into()),
                    );
                    if let Some(e) = &r.error {
                        fact("error", e.clone());
                    }
                    fact("attempts", r.attempts.to_string());
                    fact("latency", format!("{} ms", r.latency_ms));
                    if !r.endpoint.is_empty() {
                        fact("endpoint", r.endpoint.clone());
                    }
                });
            if let Some(raw) = &r.raw {
                ui.collapsing("Raw reply", |ui| {
                    ui.add(egui::Label::new(egui::RichText::new(raw).monospace()).wrap());
                });
            }
            super::protocol_view::replies(ui, r);
            ui.separator();
            ui.strong("Expert traces");
            if r.traces.is_empty() {
                ui.weak("This record has no traces.");
            }
            // The same cards as the Inspect tab, filled from the journal.
            // Shown, never opened; still only ever a path under the root.
            let image = root
                .and_then(|root| DatasetRoot::new(root).resolve(&r.image).ok())
                .unwrap_or_else(|| PathBuf::from(&r.image));
            let run = QuestionRun::from_record(r, image);
            let id = ui.make_persistent_id(("recorded", r.index));
            trace_view::run_ui(ui, &run, id);
            ui.collapsing("Raw JSON of the record", |ui| {
                let text = serde_json::to_string_pretty(r).unwrap_or_default();
                ui.add(egui::Label::new(egui::RichText::new(text).monospace().small()).wrap());
            });
        });
}

/// Switches to Inspect on `image`, loading the run's dataset there first when
/// Inspect has another one open.
pub fn open_in_inspect(
    model: &RunModel,
    image: &str,
    inspect_dataset: &Path,
    commands: &mut Vec<Command>,
) {
    if let Some(m) = &model.manifest
        && m.dataset.path != inspect_dataset
    {
        commands.push(Command::LoadDataset {
            path: m.dataset.path.clone(),
            root: m.dataset.root.clone(),
        });
    }
    commands.push(Command::SwitchTab(Tab::Inspect));
    commands.push(Command::SelectImage(image.to_string()));
}
