//! Reference images: the embedder and the reference memory (load, build, save).

use std::path::PathBuf;

use eframe::egui;

use crate::echo::ScopeMode;
use crate::ui::Command;
use crate::ui::services;
use crate::ui::status::progress_text;
use crate::vision::spec::EmbedderSpec;

use super::check::*;
use super::widgets::*;
use super::{SettingsEnv, SettingsState};

impl SettingsState {
    pub(super) fn reference_section(
        &mut self,
        ui: &mut egui::Ui,
        env: &SettingsEnv<'_>,
        commands: &mut Vec<Command>,
    ) {
        section(
            ui,
            "Reference images",
            "Echo shows the model the most similar defect-free image next to the part. The \
             embedder turns images into vectors; the memory holds the vectors of the normal images.",
            |ui| {
                self.embedder_editor(ui);
                ui.add_space(8.0);
                self.memory_editor(ui, env, commands);
            },
        );
    }

    pub(super) fn embedder_editor(&mut self, ui: &mut egui::Ui) {
        ui.strong("Embedder");
        let spec = &mut self.draft.reference.embedder;
        let kind = embedder_kind(spec);
        ui.horizontal_wrapped(|ui| {
            for (k, label, hover) in [
                (
                    EmbedderKind::Descriptor,
                    "Weight-free descriptor",
                    "Colour, layout and edge statistics: works on any machine, no model files",
                ),
                (
                    EmbedderKind::ClipFolder,
                    "CLIP from a folder",
                    "OpenAI CLIP (as Echo uses) from a folder with config.json and model.safetensors",
                ),
                (
                    EmbedderKind::ClipHf,
                    "CLIP from the Hugging Face cache",
                    "A CLIP model already downloaded to the local Hugging Face cache; nothing is downloaded",
                ),
            ] {
                if ui.radio(kind == k, label).on_hover_text(hover).clicked() && kind != k {
                    *spec = match k {
                        EmbedderKind::Descriptor => "descriptor".into(),
                        EmbedderKind::ClipFolder => "clip:".into(),
                        EmbedderKind::ClipHf => "clip:hf:openai/clip-vit-base-patch16".into(),
                    };
                }
            }
        });
        match embedder_kind(spec) {
            EmbedderKind::Descriptor => {}
            EmbedderKind::ClipFolder => {
                let mut folder = PathBuf::from(spec.strip_prefix("clip:").unwrap_or_default());
                egui::Grid::new("clip_folder")
                    .num_columns(2)
                    .show(ui, |ui| {
                        if path_row(
                            ui,
                            &mut self.picker,
                            "CLIP folder",
                            &mut folder,
                            PathKind::Folder,
                            "a folder with config.json and model.safetensors",
                        ) {
                            *spec = format!("clip:{}", folder.display());
                        }
                    });
            }
            EmbedderKind::ClipHf => {
                let mut name = spec
                    .strip_prefix("clip:hf:")
                    .unwrap_or_default()
                    .to_string();
                egui::Grid::new("clip_hf").num_columns(2).show(ui, |ui| {
                    if text_row(
                        ui,
                        "Hugging Face model",
                        &mut name,
                        "ORG/NAME, e.g. openai/clip-vit-base-patch16",
                    ) {
                        *spec = format!("clip:hf:{}", name.trim());
                    }
                });
            }
        }
        let spec = self.draft.reference.embedder.clone();
        if spec.starts_with("clip:") {
            check_status(ui, self.clip_files.for_key(&spec), self.clip_files.busy());
        }
        ui.horizontal(|ui| {
            let valid = spec.parse::<EmbedderSpec>().is_ok();
            let checking = self.embedder.busy();
            if ui
                .add_enabled(valid && !checking, egui::Button::new("Check embedder"))
                .on_hover_text(
                    "Load it (for CLIP: read and verify the weights) and report its vector size",
                )
                .clicked()
            {
                self.embedder.again();
                self.embedder
                    .want("check embedder", &spec, |s| check_embedder(&s));
            }
            if checking {
                ui.spinner();
                ui.label("loading…");
            }
            if let Some(r) = self.embedder.for_key(&spec) {
                check_line(ui, r);
            }
        });
    }

    pub(super) fn memory_editor(
        &mut self,
        ui: &mut egui::Ui,
        env: &SettingsEnv<'_>,
        commands: &mut Vec<Command>,
    ) {
        ui.strong("Memory");
        let reference = &mut self.draft.reference;
        let loading_folder = reference.memory.is_some();
        ui.horizontal_wrapped(|ui| {
            if ui
                .radio(!loading_folder, "Build from normal images at start")
                .on_hover_text("Embed the defect-free training images (train/good) when the app starts; vectors are cached in the workspace")
                .clicked()
            {
                reference.memory = None;
            }
            if ui
                .radio(loading_folder, "Load a saved memory folder")
                .on_hover_text("A folder written by Build now (with Save) or by `echo-workbench memory build`")
                .clicked()
                && !loading_folder
            {
                reference.memory = Some(PathBuf::new());
            }
        });
        egui::Grid::new("memory_paths")
            .num_columns(2)
            .spacing([10.0, 6.0])
            .show(ui, |ui| match &mut reference.memory {
                Some(folder) => {
                    path_row(
                        ui,
                        &mut self.picker,
                        "Memory folder",
                        folder,
                        PathKind::Folder,
                        "a folder with manifest.json",
                    );
                }
                None => {
                    let mut root = reference.build_root.clone().unwrap_or_default();
                    let hint = format!("the dataset root: {}", self.draft.dataset.root.display());
                    if path_row(
                        ui,
                        &mut self.picker,
                        "Images folder",
                        &mut root,
                        PathKind::Folder,
                        &hint,
                    ) {
                        reference.build_root = (!root.as_os_str().is_empty()).then_some(root);
                    }
                }
            });
        ui.add_space(4.0);
        // What is in use now, and what is being made.
        ui.horizontal_wrapped(|ui| {
            ui.label("In use:");
            match env.reference {
                Some(r) => {
                    ui.label(format!(
                        "{} images ({}), {}",
                        r.memory.len(),
                        r.memory.embedder,
                        r.origin
                    ));
                }
                None => {
                    ui.weak("no memory yet");
                }
            }
        });
        let service = env.reference_service;
        if service.busy() {
            ui.horizontal(|ui| {
                match service.progress() {
                    Some(p) if p.total > 0 => {
                        ui.add(
                            egui::ProgressBar::new(p.fraction())
                                .desired_width(260.0)
                                .show_percentage(),
                        );
                        ui.label(progress_text(&p));
                    }
                    _ => {
                        ui.spinner();
                        ui.label("starting…");
                    }
                }
                if ui.button("Cancel").clicked() {
                    commands.push(Command::CancelReference);
                }
            });
        } else if let Some(e) = &service.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        } else if let Some(note) = &service.note {
            ui.weak(note);
        }
        if let Some(n) = &self.memory_notice {
            ui.colored_label(ok_color(ui), n);
        }
        ui.add_space(4.0);
        let spec_ok = self
            .draft
            .reference
            .embedder
            .parse::<EmbedderSpec>()
            .is_ok();
        ui.horizontal(|ui| {
            let root = self.draft.reference_build_root();
            let save_to = services::memory_folder(env.workspace, &self.memory_name);
            let save_ok = !self.save_memory || save_to.is_ok();
            if ui
                .add_enabled(
                    spec_ok && save_ok && !service.busy(),
                    egui::Button::new("Build now"),
                )
                .on_hover_text(format!(
                    "Embed the normal images under {} with the embedder above and use them right away",
                    root.display()
                ))
                .clicked()
            {
                let save_to = if self.save_memory { save_to.ok() } else { None };
                self.pending_memory_folder = save_to.clone();
                self.memory_notice = None;
                commands.push(Command::BuildReference {
                    root,
                    embedder: self.draft.reference.embedder.clone(),
                    save_to,
                });
            }
            let save_label = ui.checkbox(&mut self.save_memory, "Save it in the workspace as");
            let name = ui
                .add_enabled(
                    self.save_memory,
                    egui::TextEdit::singleline(&mut self.memory_name).desired_width(140.0),
                )
                .labelled_by(save_label.id);
            if self.save_memory {
                match services::memory_folder(env.workspace, &self.memory_name) {
                    Ok(folder) => {
                        name.on_hover_text(folder.display().to_string());
                    }
                    Err(e) => {
                        ui.colored_label(ui.visuals().error_fg_color, e);
                    }
                }
            }
        });
        if let Some(folder) = self
            .draft
            .reference
            .memory
            .clone()
            .filter(|f| !f.as_os_str().is_empty())
            && ui
                .add_enabled(!service.busy(), egui::Button::new("Load now"))
                .on_hover_text("Load the memory folder above and use it right away")
                .clicked()
        {
            commands.push(Command::LoadReference {
                folder,
                embedder: self.draft.reference.embedder.clone(),
            });
        }
        ui.add_space(6.0);
        egui::Grid::new("memory_search")
            .num_columns(2)
            .spacing([10.0, 6.0])
            .show(ui, |ui| {
                ui.label("Search in");
                ui.horizontal(|ui| {
                    let scope = &mut self.draft.pipeline.scope;
                    ui.radio_value(scope, ScopeMode::Global, "the whole memory (Echo)")
                        .on_hover_text("Any category may supply the reference, as Echo does");
                    ui.radio_value(scope, ScopeMode::Category, "the part's category only")
                        .on_hover_text("A bottle is only ever compared with bottles");
                });
                ui.end_row();
                let label = ui.label("References kept (top-k)");
                ui.add(egui::DragValue::new(&mut self.draft.reference.top_k).range(1..=50))
                    .labelled_by(label.id)
                    .on_hover_text("How many similar references the strip and the trace show");
                ui.end_row();
            });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EmbedderKind {
    Descriptor,
    ClipFolder,
    ClipHf,
}

pub(super) fn embedder_kind(spec: &str) -> EmbedderKind {
    let spec = spec.trim();
    if spec.starts_with("clip:hf:") {
        EmbedderKind::ClipHf
    } else if spec.starts_with("clip:") {
        EmbedderKind::ClipFolder
    } else {
        EmbedderKind::Descriptor
    }
}
