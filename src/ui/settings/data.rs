//! Dataset and knowledge paths, prompt templates and the workspace folder.

use std::path::PathBuf;

use eframe::egui;

use crate::anomaly::Backbone;
use crate::echo::plan::MapImage;
use crate::ui::Command;

use super::widgets::*;
use super::{SettingsEnv, SettingsState};

/// The anomaly map's switches (issue 18): each follows the preset until set, so a
/// settings file that never set them keeps none of them.
fn map_rows(ui: &mut egui::Ui, p: &mut crate::echo::PipelineSettings) {
    let on_off = [
        (None, "as the preset"),
        (Some(true), "on"),
        (Some(false), "off"),
    ];
    choice(ui, "Anomaly map", &mut p.switches.anomaly_map, &on_off);
    choice(ui, "Anomaly map hint", &mut p.map_hint, &on_off);
    choice(
        ui,
        "Anomaly map image",
        &mut p.map_image,
        &[
            (None, "as the preset"),
            (Some(MapImage::None), "none"),
            (Some(MapImage::Outline), "the query, region outlined"),
            (Some(MapImage::Crop), "a zoomed crop of the region"),
        ],
    );
}

/// The backbone a typed text names: empty or `descriptor` is the default
/// (`None`, so the settings file keeps no `map_backbone`).
pub(super) fn parse_backbone(text: &str) -> Result<Option<Backbone>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<Backbone>() {
        Ok(Backbone::Descriptor) => Ok(None),
        Ok(b) => Ok(Some(b)),
        Err(e) => Err(e.to_string()),
    }
}

/// The map's patch features, typed as `anomaly --backbone` takes them; the
/// draft changes only to a backbone that parses (its model is loaded by the
/// first map, in the background, so a wrong folder shows there).
fn backbone_row(ui: &mut egui::Ui, text: &mut String, p: &mut crate::echo::PipelineSettings) {
    if text_row(
        ui,
        "Anomaly map backbone",
        text,
        "descriptor, clip:PATH, dinov2:PATH or dinov2:hf:ORG/NAME",
    ) && let Ok(b) = parse_backbone(text)
    {
        p.map_backbone = b;
    }
    ui.label("");
    match parse_backbone(text) {
        Ok(None) => ui.weak("the weight-free descriptor"),
        Ok(Some(b)) => ui.weak(format!("{b} patch tokens")),
        Err(e) => ui.colored_label(ui.visuals().error_fg_color, e),
    };
    ui.end_row();
}

fn choice<T: Copy + PartialEq>(
    ui: &mut egui::Ui,
    label: &str,
    value: &mut Option<T>,
    options: &[(Option<T>, &str)],
) {
    let label = ui.label(label);
    let shown = options
        .iter()
        .find(|(v, _)| v == value)
        .map_or("as the preset", |(_, name)| name);
    egui::ComboBox::from_id_salt(label.id)
        .selected_text(shown)
        .show_ui(ui, |ui| {
            for (v, name) in options {
                ui.selectable_value(value, *v, *name);
            }
        })
        .response
        .labelled_by(label.id);
    ui.end_row();
}

impl SettingsState {
    pub(super) fn data_section(&mut self, ui: &mut egui::Ui) {
        section(
            ui,
            "Dataset and knowledge",
            "An MMAD-style mmad.json with the folder its image paths start from, and the \
             domain knowledge the Knowledge Guide quotes. The bundled sample works out of the box.",
            |ui| {
                egui::Grid::new("data_paths")
                    .num_columns(2)
                    .spacing([10.0, 6.0])
                    .show(ui, |ui| {
                        let d = &mut self.draft.dataset;
                        path_row(
                            ui,
                            &mut self.picker,
                            "Dataset file (mmad.json)",
                            &mut d.mmad_json,
                            PathKind::Json,
                            "mmad.json",
                        );
                        path_row(
                            ui,
                            &mut self.picker,
                            "Dataset root folder",
                            &mut d.root,
                            PathKind::Folder,
                            "the folder holding MVTec-AD, VisA, …",
                        );
                        let key = (d.mmad_json.clone(), d.root.clone());
                        ui.label("");
                        check_status(ui, self.dataset.for_key(&key), self.dataset.busy());
                        ui.end_row();
                        let mut kb = self.draft.knowledge.clone().unwrap_or_default();
                        let hint =
                            format!("bundled: {}", crate::bundled_knowledge_path().display());
                        if path_row(
                            ui,
                            &mut self.picker,
                            "Knowledge file",
                            &mut kb,
                            PathKind::Json,
                            &hint,
                        ) {
                            self.draft.knowledge = (!kb.as_os_str().is_empty()).then_some(kb);
                        }
                        ui.label("");
                        let key = self.draft.knowledge_path();
                        check_status(ui, self.knowledge.for_key(&key), self.knowledge.busy());
                        ui.end_row();
                    });
                if ui
                    .button("Use the bundled sample")
                    .on_hover_text(
                        "The small sample dataset and knowledge shipped with the program",
                    )
                    .clicked()
                {
                    self.draft.dataset = Default::default();
                    self.draft.knowledge = None;
                }
            },
        );
    }

    pub(super) fn prompts_section(&mut self, ui: &mut egui::Ui) {
        section(
            ui,
            "Prompts",
            "Which experts answer which question type (the preset), and the prompt templates \
             they fill in. Leave the folder empty to use the bundled templates.",
            |ui| {
                egui::Grid::new("prompts")
                    .num_columns(2)
                    .spacing([10.0, 6.0])
                    .show(ui, |ui| {
                        let label = ui.label("Preset");
                        let presets = self.presets();
                        let preset = &mut self.draft.pipeline.preset;
                        let shown = presets
                            .iter()
                            .find(|(n, _)| n == preset)
                            .map(|(n, d)| format!("{n}: {d}"))
                            .unwrap_or_else(|| preset.clone());
                        egui::ComboBox::from_id_salt("preset")
                            .selected_text(elide(&shown, 60))
                            .width(380.0)
                            .show_ui(ui, |ui| {
                                for (name, description) in &presets {
                                    ui.selectable_value(
                                        preset,
                                        name.clone(),
                                        format!("{name}: {description}"),
                                    );
                                }
                            })
                            .response
                            .labelled_by(label.id);
                        ui.end_row();
                        let mut dir = self.draft.pipeline.prompts_dir.clone().unwrap_or_default();
                        if path_row(
                            ui,
                            &mut self.picker,
                            "Prompt templates folder",
                            &mut dir,
                            PathKind::Folder,
                            "bundled templates",
                        ) {
                            self.draft.pipeline.prompts_dir =
                                (!dir.as_os_str().is_empty()).then_some(dir);
                        }
                        ui.label("");
                        let p = &self.draft.pipeline;
                        let key = (
                            p.experts_file.clone(),
                            p.prompts_dir.clone(),
                            p.preset.clone(),
                        );
                        let status = self.prompts.for_key(&key).map(|r| match r {
                            Ok(c) => c.status.clone(),
                            Err(e) => Err(e.clone()),
                        });
                        check_status(ui, status.as_ref(), self.prompts.busy());
                        ui.end_row();
                        map_rows(ui, &mut self.draft.pipeline);
                        backbone_row(ui, &mut self.map_backbone_text, &mut self.draft.pipeline);
                    });
            },
        );
    }

    pub(super) fn workspace_section(
        &mut self,
        ui: &mut egui::Ui,
        env: &SettingsEnv<'_>,
        commands: &mut Vec<Command>,
    ) {
        section(
            ui,
            "Workspace and appearance",
            "The workspace folder holds this settings file, the embedding cache, saved memories, \
             knowledge versions and runs. Switching starts over on the other folder's settings; \
             --workspace DIR and ECHO_WORKBENCH_HOME still win at start.",
            |ui| {
                ui.horizontal_wrapped(|ui| {
                    ui.label("Workspace folder:");
                    ui.add(
                        egui::Label::new(
                            egui::RichText::new(env.workspace.display().to_string()).monospace(),
                        )
                        .selectable(true),
                    );
                });
                egui::Grid::new("workspace_switch")
                    .num_columns(2)
                    .show(ui, |ui| {
                        let mut dir = PathBuf::from(self.workspace_text.trim());
                        if path_row(
                            ui,
                            &mut self.picker,
                            "Another workspace folder",
                            &mut dir,
                            PathKind::Folder,
                            "a folder (created if missing)",
                        ) {
                            self.workspace_text = dir.display().to_string();
                        }
                    });
                let target = PathBuf::from(self.workspace_text.trim());
                let can_switch = !target.as_os_str().is_empty() && target != env.workspace;
                if ui
                    .add_enabled(can_switch, egui::Button::new("Switch to this workspace"))
                    .on_hover_text("Unsaved settings here are dropped")
                    .clicked()
                {
                    commands.push(Command::SwitchWorkspace(target));
                }
                ui.horizontal(|ui| {
                    ui.label("Theme:");
                    let mut dark = env.dark_mode;
                    let before = dark;
                    ui.radio_value(&mut dark, true, "Dark");
                    ui.radio_value(&mut dark, false, "Light");
                    if dark != before {
                        commands.push(Command::SetDarkMode(dark));
                    }
                });
            },
        );
    }
}
