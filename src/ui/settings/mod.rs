//! Settings: edits a draft of the workspace's settings file. Save writes it and the
//! app starts using it; Revert drops the draft. Checks (endpoint test, model list,
//! embedder, dataset, knowledge, prompts) run in background jobs.
//!
//! This file holds the tab's state, its header and the order of its sections;
//! each section draws from its own file (`endpoints`, `reference`, `data`), the
//! background checks are in `check` and the rows they share in `widgets`.

mod check;
mod data;
mod endpoints;
mod local_model;
mod reference;
mod widgets;

use std::path::{Path, PathBuf};

use eframe::egui;

use super::services::{EndpointProbes, ReferenceService};
use super::status::{Activity, TrackedJob};
use super::{Command, LoadedReference};
use crate::config::Settings;
use crate::echo::plan::ExpertTable;
use crate::vision::spec::EmbedderSpec;
use check::*;
use local_model::LocalModelState;
use reference::{EmbedderKind, embedder_kind};
use widgets::*;

/// What the Settings tab reads from the rest of the app.
pub(super) struct SettingsEnv<'a> {
    pub saved: &'a Settings,
    pub workspace: &'a Path,
    pub settings_error: Option<&'a str>,
    pub saving: bool,
    pub save_error: Option<&'a str>,
    pub reference: Option<&'a LoadedReference>,
    pub reference_service: &'a ReferenceService,
    pub probes: &'a EndpointProbes,
    pub dark_mode: bool,
}

/// Which server a model list belongs to: base URL and API key variable name.
type ServerKey = (String, Option<String>);

/// The Settings tab: the draft and the checks run on it.
pub struct SettingsState {
    /// The settings being edited; Save writes them.
    pub draft: Settings,
    /// The endpoint shown in the editor (an index into `draft.endpoints`).
    pub selected_endpoint: usize,
    /// Model lists by (base URL, key variable).
    served_models: Vec<(ServerKey, Result<Vec<String>, String>)>,
    models_job: Option<(ServerKey, TrackedJob<Vec<String>>)>,
    /// Embedder checks run only on request (CLIP loads its weights).
    embedder: Check<String>,
    /// A CLIP checkpoint's files, checked as the folder or name is typed (headers
    /// only).
    clip_files: Check<String>,
    dataset: Check<(PathBuf, PathBuf)>,
    knowledge: Check<PathBuf>,
    prompts: Check<(Option<PathBuf>, Option<PathBuf>, String), PromptsCheck>,
    /// "Save to the workspace" for Build now, and the name to save under.
    pub save_memory: bool,
    pub memory_name: String,
    /// The folder a Build now is saving to, until it is done.
    pending_memory_folder: Option<PathBuf>,
    /// Said once a built memory was saved.
    memory_notice: Option<String>,
    /// The Browse… dialog open now, if any.
    picker: PathPicker,
    /// The folder typed for "Switch to this workspace".
    pub workspace_text: String,
    /// The local model's file check and its download.
    local_model: LocalModelState,
    /// The anomaly map's backbone as typed; the draft takes it once it parses.
    pub map_backbone_text: String,
}

/// The settings' map backbone as the text field shows it (empty: the default).
fn backbone_text(settings: &Settings) -> String {
    settings
        .pipeline
        .map_backbone
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

impl SettingsState {
    pub fn new(settings: &Settings) -> Self {
        SettingsState {
            draft: settings.clone(),
            selected_endpoint: settings.active_endpoint,
            served_models: Vec::new(),
            models_job: None,
            embedder: Check::default(),
            clip_files: Check::default(),
            dataset: Check::default(),
            knowledge: Check::default(),
            prompts: Check::default(),
            save_memory: false,
            memory_name: "reference".into(),
            pending_memory_folder: None,
            memory_notice: None,
            picker: PathPicker::default(),
            workspace_text: String::new(),
            local_model: LocalModelState::default(),
            map_backbone_text: backbone_text(settings),
        }
    }

    pub(super) fn poll(&mut self) {
        if let Some(result) = self.models_job.as_mut().and_then(|(_, j)| j.take()) {
            let (key, _) = self.models_job.take().expect("job present");
            self.served_models.retain(|(k, _)| *k != key);
            self.served_models.push((key, result));
        }
        self.embedder.poll();
        self.clip_files.poll();
        self.dataset.poll();
        self.knowledge.poll();
        self.prompts.poll();
        self.local_model.poll();
    }

    pub(super) fn busy(&self) -> bool {
        self.models_job.is_some()
            || self.embedder.busy()
            || self.dataset.busy()
            || self.knowledge.busy()
            || self.prompts.busy()
            || self.local_model.busy()
    }

    pub(super) fn activities(&self) -> Vec<Activity> {
        let mut out: Vec<Activity> = self.models_job.iter().map(|(_, j)| j.activity()).collect();
        for name in [
            self.embedder.name(),
            self.clip_files.name(),
            self.dataset.name(),
            self.knowledge.name(),
            self.prompts.name(),
        ]
        .into_iter()
        .flatten()
        .chain(self.local_model.activity_names())
        {
            out.push(Activity::named(name));
        }
        if self.picker.busy() {
            out.push(Activity::named("file dialog"));
        }
        out
    }

    /// A memory built with "save" has been written to `folder`: the draft now loads
    /// that folder at start (once saved).
    pub(super) fn memory_saved(&mut self, folder: &Path) {
        if self.pending_memory_folder.as_deref() == Some(folder) {
            self.pending_memory_folder = None;
            self.draft.reference.memory = Some(folder.to_path_buf());
            self.memory_notice = Some(format!(
                "Saved to {}. Save the settings to load it at every start.",
                folder.display()
            ));
        }
    }

    /// Makes the local model's Download fetch from `hub` instead of the hub the
    /// environment names (a mirror chosen in code, or a test's fake hub).
    pub fn use_hub(&mut self, hub: crate::local::download::Hub) {
        self.local_model.hub = Some(hub);
    }

    /// Drops the draft.
    pub fn revert(&mut self, saved: &Settings) {
        self.draft = saved.clone();
        // A hand-edited file may name an endpoint that is not there.
        self.selected_endpoint = saved
            .active_endpoint
            .min(saved.endpoints.len().saturating_sub(1));
        self.memory_notice = None;
        self.map_backbone_text = backbone_text(saved);
    }

    /// Why the draft cannot be saved as it is, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, e) in self.draft.endpoints.iter().enumerate() {
            let who = if e.name.trim().is_empty() {
                format!("endpoint {}", i + 1)
            } else {
                format!("endpoint `{}`", e.name)
            };
            let url = e.base_url.trim();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                out.push(format!(
                    "{who}: the base URL must start with http:// or https://"
                ));
            }
            if e.model.trim().is_empty() {
                out.push(format!("{who}: type the model name"));
            }
        }
        if let Err(e) = self.draft.reference.embedder.parse::<EmbedderSpec>() {
            out.push(match embedder_kind(&self.draft.reference.embedder) {
                EmbedderKind::ClipFolder => "embedder: type or choose the CLIP model folder".into(),
                EmbedderKind::ClipHf => {
                    "embedder: type the Hugging Face model as ORG/NAME (e.g. openai/clip-vit-base-patch16)".into()
                }
                EmbedderKind::Descriptor => format!("embedder: {e}"),
            });
        }
        if self
            .draft
            .reference
            .memory
            .as_ref()
            .is_some_and(|m| m.as_os_str().is_empty())
        {
            out.push("reference memory: type or choose the memory folder to load".into());
        }
        if let Err(e) = data::parse_backbone(&self.map_backbone_text) {
            out.push(format!("anomaly map backbone: {e}"));
        }
        out
    }

    pub(super) fn ui(&mut self, ui: &mut egui::Ui, env: &SettingsEnv<'_>) -> Vec<Command> {
        let mut commands = Vec::new();
        self.selected_endpoint = self
            .selected_endpoint
            .min(self.draft.endpoints.len().saturating_sub(1));
        self.start_checks();
        self.header(ui, env, &mut commands);
        ui.separator();
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .show(ui, |ui| {
                ui.add_space(4.0);
                if ui.available_width() >= 1200.0 {
                    ui.columns(2, |cols| {
                        self.endpoints_section(&mut cols[0], env, &mut commands);
                        self.reference_section(&mut cols[0], env, &mut commands);
                        self.local_model_section(&mut cols[0]);
                        self.data_section(&mut cols[1]);
                        self.prompts_section(&mut cols[1]);
                        self.workspace_section(&mut cols[1], env, &mut commands);
                    });
                } else {
                    self.endpoints_section(ui, env, &mut commands);
                    self.reference_section(ui, env, &mut commands);
                    self.local_model_section(ui);
                    self.data_section(ui);
                    self.prompts_section(ui);
                    self.workspace_section(ui, env, &mut commands);
                }
            });
        commands
    }

    /// Starts the cheap checks of what the draft now says (files are read off the
    /// UI thread; a changed path is checked once the previous check is done).
    fn start_checks(&mut self) {
        self.local_model
            .start_check(self.draft.local_model.as_deref());
        let d = &self.draft;
        if let Ok(EmbedderSpec::Clip(source)) = d.reference.embedder.parse::<EmbedderSpec>() {
            self.clip_files
                .want("check CLIP files", &d.reference.embedder, move |_| {
                    Ok(source.check_files()?)
                });
        }
        let key = (d.dataset.mmad_json.clone(), d.dataset.root.clone());
        self.dataset.want("check dataset", &key, |(path, root)| {
            check_dataset(&path, &root)
        });
        let kb = d.knowledge_path();
        self.knowledge
            .want("check knowledge", &kb, |path| check_knowledge(&path));
        let key = (
            d.pipeline.experts_file.clone(),
            d.pipeline.prompts_dir.clone(),
            d.pipeline.preset.clone(),
        );
        self.prompts
            .want("check prompts", &key, |(experts, dir, preset)| {
                check_prompts(experts.as_deref(), dir.as_deref(), &preset)
            });
    }

    /// Presets of the experts table in use (the bundled one needs no file).
    fn presets(&self) -> Vec<(String, String)> {
        let p = &self.draft.pipeline;
        match &p.experts_file {
            None => preset_list(&ExpertTable::bundled()),
            Some(_) => {
                let key = (
                    p.experts_file.clone(),
                    p.prompts_dir.clone(),
                    p.preset.clone(),
                );
                match self
                    .prompts
                    .for_key(&key)
                    .or(self.prompts.result.as_ref().map(|(_, r)| r))
                {
                    Some(Ok(c)) => c.presets.clone(),
                    _ => Vec::new(),
                }
            }
        }
    }

    fn header(&mut self, ui: &mut egui::Ui, env: &SettingsEnv<'_>, commands: &mut Vec<Command>) {
        let dirty = self.draft != *env.saved;
        let problems = self.problems();
        ui.horizontal(|ui| {
            ui.heading("Settings");
            ui.add_space(12.0);
            if env.saving {
                ui.spinner();
                ui.label("Saving…");
            } else if dirty {
                ui.colored_label(ui.visuals().warn_fg_color, "Unsaved changes");
            } else {
                ui.weak("All changes saved");
            }
            ui.add_space(12.0);
            let can_save = dirty && problems.is_empty() && !env.saving;
            let save = ui
                .add_enabled(can_save, egui::Button::new("Save"))
                .on_hover_text("Write settings.toml and start using these settings (Ctrl+S)");
            if save.clicked() {
                commands.push(Command::SaveSettings(Box::new(self.draft.clone())));
            }
            if ui
                .add_enabled(dirty, egui::Button::new("Revert"))
                .on_hover_text("Drop the changes and go back to what is saved")
                .clicked()
            {
                self.revert(env.saved);
            }
        });
        ui.weak(format!(
            "Stored in {}; `echo-workbench run|inspect|probe --workspace` read the same file.",
            Settings::path_in(env.workspace).display()
        ));
        let error = ui.visuals().error_fg_color;
        if let Some(e) = env.settings_error {
            ui.colored_label(
                error,
                format!("{e}. Using defaults; Save replaces the file (the unreadable one is kept as settings.toml.bak)."),
            );
        }
        if let Some(e) = env.save_error {
            ui.colored_label(error, format!("Not saved: {e}"));
        }
        for p in &problems {
            ui.colored_label(error, format!("Fix before saving: {p}"));
        }
    }
}
