//! The version history: every saved version with its note, side-by-side diffs of
//! any two versions (or a version and the draft), and revert.

use eframe::egui;

use super::{KnowledgeEnv, KnowledgeState};
use crate::knowledge::KnowledgeBase;
use crate::knowledge::diff::{Change, ChangeKind, Span, SpanTag, diff, word_diff};
use crate::knowledge::versions::VersionStore;
use crate::ui::jobs::Job;

/// One side of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Version(u32),
    Draft,
}

impl Side {
    fn label(self) -> String {
        match self {
            Side::Version(n) => format!("v{n:04}"),
            Side::Draft => "current draft".into(),
        }
    }
}

/// A change with its word-level diff when both texts exist.
pub struct DiffRow {
    pub change: Change,
    pub words: Option<(Vec<Span>, Vec<Span>)>,
}

pub fn diff_rows(old: &KnowledgeBase, new: &KnowledgeBase) -> Vec<DiffRow> {
    diff(old, new)
        .into_iter()
        .map(|change| {
            let words = match (&change.old, &change.new) {
                (Some(a), Some(b)) => Some(word_diff(a, b)),
                _ => None,
            };
            DiffRow { change, words }
        })
        .collect()
}

pub struct DiffResult {
    pub from: Side,
    pub to: Side,
    pub rows: Vec<DiffRow>,
}

#[derive(Default)]
pub struct HistoryView {
    pub from: Option<Side>,
    pub to: Option<Side>,
    job: Option<Job<DiffResult>>,
    pub result: Option<Result<DiffResult, String>>,
    confirm_revert: Option<u32>,
}

impl HistoryView {
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }
}

pub fn poll(state: &mut KnowledgeState) {
    if let Some(r) = state.history.job.as_mut().and_then(Job::take) {
        state.history.job = None;
        state.history.result = Some(r);
    }
}

fn start_diff(state: &mut KnowledgeState, workspace: &std::path::Path, from: Side, to: Side) {
    let Some(doc) = &state.doc else { return };
    let draft = doc.draft.clone();
    let store = VersionStore::in_workspace(workspace);
    state.history.from = Some(from);
    state.history.to = Some(to);
    state.history.result = None;
    state.history.job = Some(Job::spawn("diff knowledge versions", move || {
        let load = |side: Side| -> anyhow::Result<KnowledgeBase> {
            Ok(match side {
                Side::Version(n) => store.load(n)?,
                Side::Draft => draft.clone(),
            })
        };
        let (a, b) = (load(from)?, load(to)?);
        Ok(DiffResult {
            from,
            to,
            rows: diff_rows(&a, &b),
        })
    }));
}

pub fn ui(state: &mut KnowledgeState, ui: &mut egui::Ui, env: &KnowledgeEnv<'_>) {
    let store_dir = crate::knowledge::versions::versions_dir(env.workspace);
    ui.label(
        egui::RichText::new(format!(
            "Versions are kept in {} and never deleted; reverting saves the old content as a new version.",
            store_dir.display()
        ))
        .small()
        .weak(),
    );
    if let Some(e) = &state.versions_error {
        ui.colored_label(
            ui.visuals().error_fg_color,
            format!("Cannot read the versions: {e}"),
        );
    }
    if state.versions.is_empty() {
        ui.label("No versions yet: the first Save makes version 1.");
    }
    let dirty = state.dirty();
    let mut diff_request = None;
    let mut revert = None;
    let numbers: Vec<u32> = state.versions.iter().map(|v| v.number).collect();
    // Any two versions, or a version and the draft.
    if !numbers.is_empty() {
        ui.horizontal(|ui| {
            let from = state.history.from.unwrap_or(Side::Version(numbers[0]));
            let to = state.history.to.unwrap_or(Side::Draft);
            let mut from_sel = from;
            let mut to_sel = to;
            egui::ComboBox::from_label("compared with")
                .selected_text(from_sel.label())
                .show_ui(ui, |ui| {
                    for n in &numbers {
                        ui.selectable_value(
                            &mut from_sel,
                            Side::Version(*n),
                            Side::Version(*n).label(),
                        );
                    }
                });
            egui::ComboBox::from_id_salt("diff_to")
                .selected_text(to_sel.label())
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut to_sel, Side::Draft, Side::Draft.label());
                    for n in &numbers {
                        ui.selectable_value(
                            &mut to_sel,
                            Side::Version(*n),
                            Side::Version(*n).label(),
                        );
                    }
                });
            state.history.from = Some(from_sel);
            state.history.to = Some(to_sel);
            if ui.button("Show diff").clicked() {
                diff_request = Some((from_sel, to_sel));
            }
        });
    }
    egui::ScrollArea::vertical()
        .id_salt("versions")
        .max_height(220.0)
        .auto_shrink([false, true])
        .show(ui, |ui| {
            egui::Grid::new("versions_grid")
                .striped(true)
                .num_columns(5)
                .show(ui, |ui| {
                    for (i, v) in state.versions.iter().enumerate().rev() {
                        ui.monospace(format!("v{:04}", v.number));
                        ui.label(&v.time);
                        ui.monospace(v.hash8()).on_hover_text(format!(
                            "content hash {}\nsaved to {}",
                            v.content_hash,
                            v.saved_to.display()
                        ));
                        let note = match (v.note.is_empty(), v.reverted_from) {
                            (true, Some(n)) => format!("(revert to v{n:04})"),
                            (true, None) => "(no note)".to_string(),
                            (false, _) => v.note.clone(),
                        };
                        ui.label(note);
                        ui.horizontal(|ui| {
                            if i > 0 && ui.button(format!("Changes in v{:04}", v.number)).clicked()
                            {
                                diff_request = Some((
                                    Side::Version(state.versions[i - 1].number),
                                    Side::Version(v.number),
                                ));
                            }
                            if ui.button(format!("Revert to v{:04}", v.number)).clicked() {
                                revert = Some(v.number);
                            }
                        });
                        ui.end_row();
                    }
                });
        });
    if let Some(n) = revert {
        if dirty {
            state.history.confirm_revert = Some(n);
        } else {
            state.start_revert(env.workspace, n);
        }
    }
    if let Some(n) = state.history.confirm_revert {
        ui.horizontal_wrapped(|ui| {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!("Reverting to v{n:04} replaces your unsaved edits."),
            );
            if ui.button("Revert anyway").clicked() {
                state.history.confirm_revert = None;
                state.start_revert(env.workspace, n);
            }
            if ui.button("Keep editing").clicked() {
                state.history.confirm_revert = None;
            }
        });
    }
    if let Some((from, to)) = diff_request {
        start_diff(state, env.workspace, from, to);
    }
    ui.separator();
    if state.history.job.is_some() {
        ui.spinner();
    }
    match &state.history.result {
        None => {}
        Some(Err(e)) => {
            ui.colored_label(ui.visuals().error_fg_color, format!("Diff failed: {e}"));
        }
        Some(Ok(r)) => {
            ui.strong(format!(
                "From {} (left) to {} (right): {} change(s)",
                r.from.label(),
                r.to.label(),
                r.rows.len()
            ));
            egui::ScrollArea::vertical()
                .id_salt("diff_rows")
                .auto_shrink([false, false])
                .show(ui, |ui| changes_ui(ui, &r.rows));
        }
    }
}

/// The changes, each with its old and new text side by side.
pub fn changes_ui(ui: &mut egui::Ui, rows: &[DiffRow]) {
    if rows.is_empty() {
        ui.label("No differences.");
        return;
    }
    let removed = egui::Color32::from_rgba_unmultiplied(220, 60, 60, 90);
    let inserted = egui::Color32::from_rgba_unmultiplied(60, 170, 90, 90);
    for (i, row) in rows.iter().enumerate() {
        let c = &row.change;
        let (tag, color) = match c.kind {
            ChangeKind::Added => ("added", egui::Color32::from_rgb(60, 170, 90)),
            ChangeKind::Removed => ("removed", egui::Color32::from_rgb(220, 80, 80)),
            ChangeKind::Changed => ("changed", ui.visuals().warn_fg_color),
        };
        let what = if c.entry.is_some() {
            "entry"
        } else {
            "category"
        };
        ui.colored_label(color, format!("{tag} {what} {}", c.location()));
        if c.entry.is_none() {
            continue;
        }
        ui.push_id(i, |ui| {
            ui.columns(2, |cols| match &row.words {
                Some((left, right)) => {
                    spans_label(&mut cols[0], left, SpanTag::Removed, removed);
                    spans_label(&mut cols[1], right, SpanTag::Inserted, inserted);
                }
                None => {
                    if let Some(old) = &c.old {
                        cols[0].label(egui::RichText::new(old).background_color(removed));
                    }
                    if let Some(new) = &c.new {
                        cols[1].label(egui::RichText::new(new).background_color(inserted));
                    }
                }
            });
        });
        ui.separator();
    }
}

fn spans_label(ui: &mut egui::Ui, spans: &[Span], mark: SpanTag, color: egui::Color32) {
    let mut job = egui::text::LayoutJob::default();
    let font = egui::TextStyle::Body.resolve(ui.style());
    let text_color = ui.visuals().text_color();
    for s in spans {
        let mut format = egui::TextFormat::simple(font.clone(), text_color);
        if s.tag == mark {
            format.background = color;
            format.strikethrough = if mark == SpanTag::Removed {
                egui::Stroke::new(1.0, text_color)
            } else {
                egui::Stroke::NONE
            };
        }
        job.append(&s.text, 0.0, format);
    }
    job.wrap.max_width = ui.available_width();
    ui.label(job);
}
