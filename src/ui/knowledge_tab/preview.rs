//! Preview: for one question of the loaded dataset, what the Knowledge Guide would
//! put into the prompt in each mode, computed by the pipeline itself on the draft.

use std::sync::Arc;

use eframe::egui;

use super::{KnowledgeEnv, KnowledgeState};
use crate::curate::preview::{ModeOutcome, Preview, preview_question};
use crate::echo::pipeline::PipelineSettings;
use crate::knowledge::KnowledgeBase;
use crate::ui::jobs::Job;

/// What a preview was computed from; a change recomputes it.
#[derive(Debug, Clone, PartialEq)]
struct Inputs {
    key: String,
    turn: usize,
    rev: u64,
    settings: PipelineSettings,
}

#[derive(Default)]
pub struct PreviewView {
    pub key: Option<String>,
    pub turn: usize,
    job: Option<(Inputs, Job<Preview>)>,
    shown: Option<(Inputs, Result<Preview, String>)>,
}

impl PreviewView {
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }
}

pub fn poll(state: &mut KnowledgeState) {
    if let Some((inputs, job)) = &mut state.preview.job
        && let Some(r) = job.take()
    {
        let inputs = inputs.clone();
        state.preview.job = None;
        state.preview.shown = Some((inputs, r));
    }
}

pub fn ui(state: &mut KnowledgeState, ui: &mut egui::Ui, env: &KnowledgeEnv<'_>) {
    let Some(d) = env.dataset else {
        ui.label("Load a dataset to preview what the Knowledge Guide selects for its questions.");
        return;
    };
    let Some(doc) = &state.doc else { return };
    ui.label(
        egui::RichText::new(
            "What the Knowledge Guide would put into the prompt for one question, in each mode, from the draft (unsaved edits included). \
             It is computed by running the pipeline with a scripted model, so it is exactly what a run would send.",
        )
        .small()
        .weak(),
    );
    // Images of the selected category first, then everything.
    let cat = state.selected.as_ref().map(|s| s.category.clone());
    let mut keys: Vec<&String> = d
        .dataset
        .entries
        .keys()
        .filter(|k| {
            cat.as_deref()
                .is_none_or(|c| crate::dataset::category_of(k) == c)
        })
        .collect();
    if keys.is_empty() {
        keys = d.dataset.entries.keys().collect();
    }
    let fits = state
        .preview
        .key
        .as_ref()
        .is_some_and(|k| keys.contains(&k));
    if !fits {
        // A defect image of the selected entry when there is one.
        let entry = state.selected.as_ref().and_then(|s| s.entry.clone());
        let pick = entry
            .as_ref()
            .and_then(|e| {
                keys.iter()
                    .find(|k| crate::knowledge::facts::defect_folder_of(k) == Some(e.as_str()))
            })
            .or(keys.first())
            .map(|k| k.to_string());
        state.preview.turn = pick
            .as_ref()
            .and_then(|k| d.dataset.entries.get(k))
            .and_then(|e| {
                e.conversation
                    .iter()
                    .position(|q| q.qtype.as_str() == "Defect Classification")
            })
            .unwrap_or(0);
        state.preview.key = pick;
    }
    let Some(key) = state.preview.key.clone() else {
        ui.label("The dataset has no images.");
        return;
    };
    let Some(entry) = d.dataset.entries.get(&key) else {
        return;
    };
    ui.horizontal(|ui| {
        let mut chosen = key.clone();
        egui::ComboBox::from_label("Image")
            .selected_text(&chosen)
            .width(360.0)
            .show_ui(ui, |ui| {
                for k in &keys {
                    ui.selectable_value(&mut chosen, k.to_string(), k.as_str());
                }
            });
        if chosen != key {
            state.preview.key = Some(chosen);
            state.preview.turn = 0;
        }
    });
    let turn = state
        .preview
        .turn
        .min(entry.conversation.len().saturating_sub(1));
    let q_label = |i: usize| {
        entry
            .conversation
            .get(i)
            .map(|q| format!("{}. {}: {}", i + 1, q.qtype.as_str(), q.text))
            .unwrap_or_else(|| "(no questions)".into())
    };
    ui.horizontal(|ui| {
        let mut t = turn;
        egui::ComboBox::from_label("Question")
            .selected_text(q_label(t))
            .width(520.0)
            .show_ui(ui, |ui| {
                for i in 0..entry.conversation.len() {
                    ui.selectable_value(&mut t, i, q_label(i));
                }
            });
        state.preview.turn = t;
    });
    if entry.conversation.is_empty() {
        return;
    }
    let inputs = Inputs {
        key: key.clone(),
        turn: state.preview.turn,
        rev: doc.rev,
        settings: env.pipeline.clone(),
    };
    let current = state.preview.shown.as_ref().map(|(i, _)| i) == Some(&inputs);
    let running = state.preview.job.as_ref().map(|(i, _)| i) == Some(&inputs);
    if !current && !running && state.preview.job.is_none() {
        let kb = Arc::new(doc.draft.clone());
        let path = doc.path.clone();
        let root = d.root.clone();
        let image = entry.clone();
        let i = inputs.clone();
        state.preview.job = Some((
            inputs.clone(),
            Job::spawn("preview knowledge", move || {
                // The pipeline reads condensed knowledge from the file beside the
                // knowledge base (as the CLI does); the draft serves when it is that file.
                let condensed = if path.file_name().is_some_and(|n| n == "condensed.json") {
                    Some(kb.clone())
                } else {
                    let p = path.with_file_name("condensed.json");
                    p.exists()
                        .then(|| KnowledgeBase::load(&p).map(Arc::new))
                        .transpose()?
                };
                Ok(preview_question(
                    &i.settings,
                    kb,
                    condensed,
                    &root,
                    &i.key,
                    &image,
                    i.turn,
                    &crate::ui::services::runtime().map_err(anyhow::Error::msg)?,
                )?)
            }),
        ));
    }
    if state.preview.job.is_some() {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Running the Knowledge Guide…");
        });
    }
    let Some((_, result)) = &state.preview.shown else {
        return;
    };
    let p = match result {
        Ok(p) => p,
        Err(e) => {
            ui.colored_label(ui.visuals().error_fg_color, format!("Preview failed: {e}"));
            return;
        }
    };
    ui.separator();
    ui.label(match p.planned {
        Some(m) => format!(
            "With the current settings (preset `{}`), questions of type {} get the `{m}` mode.",
            env.pipeline.preset, p.qtype
        ),
        None => format!(
            "With the current settings (preset `{}`), questions of type {} get no knowledge; the modes below show what each would send if it were on.",
            env.pipeline.preset, p.qtype
        ),
    });
    egui::ScrollArea::vertical()
        .id_salt("preview_modes")
        .auto_shrink([false, false])
        .show(ui, |ui| {
            for m in &p.modes {
                let used = p.planned == Some(m.mode);
                let title = format!(
                    "Mode {}{}",
                    m.mode,
                    if used { " (used for this question)" } else { "" }
                );
                egui::CollapsingHeader::new(title)
                    .id_salt(("preview_mode", m.mode.as_str()))
                    .default_open(true)
                    .show(ui, |ui| match &m.outcome {
                        ModeOutcome::Snippet {
                            text,
                            entries,
                            matches,
                            fallback_all,
                        } => {
                            ui.label(format!(
                                "Entries: {} · {} characters, about {} tokens",
                                entries.join(", "),
                                text.chars().count(),
                                crate::knowledge::approx_tokens(text)
                            ));
                            for x in matches.iter().flatten() {
                                ui.label(format!(
                                    "{} \"{}\" picks {}: {}",
                                    x.letter, x.option, x.entry, x.why
                                ));
                            }
                            if *fallback_all {
                                ui.label("No option names a defect entry, so every entry is kept.");
                            }
                            snippet_box(ui, text);
                        }
                        ModeOutcome::NeedsModel { request_text } => {
                            ui.label(
                                "Needs the model: it condenses the category's entries for this question. \
                                 The guide would send this request (the candidates are its entries):",
                            );
                            snippet_box(ui, request_text);
                        }
                        ModeOutcome::Failed { message } => {
                            ui.colored_label(ui.visuals().warn_fg_color, message);
                        }
                    });
            }
        });
}

fn snippet_box(ui: &mut egui::Ui, text: &str) {
    egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.set_width(ui.available_width());
        ui.add(egui::Label::new(egui::RichText::new(text).monospace()).selectable(true));
    });
}
