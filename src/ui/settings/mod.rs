//! Settings: edits a draft of the workspace's settings file. Save writes it and the
//! app starts using it; Revert drops the draft. Checks (endpoint test, model list,
//! embedder, dataset, knowledge, prompts) run in background jobs.

use std::path::{Path, PathBuf};

use eframe::egui;

use super::jobs::Job;
use super::services::{self, EndpointProbes, ProbeState, ReferenceService};
use super::status::{Activity, TrackedJob, progress_text};
use super::{Command, LoadedReference};
use crate::config::Settings;
use crate::dataset::{DatasetRoot, MmadDataset};
use crate::echo::ScopeMode;
use crate::echo::plan::ExpertTable;
use crate::echo::prompt::PromptSet;
use crate::knowledge::KnowledgeBase;
use crate::mllm::EndpointConfig;
use crate::vision::spec::EmbedderSpec;

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

/// A check that runs in the background for one input; a result for an older input
/// is kept until the new one arrives, and marked as stale by its key.
struct Check<K: PartialEq + Clone + Send + 'static, V: Send + 'static = String> {
    result: Option<(K, Result<V, String>)>,
    job: Option<(K, Job<V>)>,
}

impl<K: PartialEq + Clone + Send + 'static, V: Send + 'static> Default for Check<K, V> {
    fn default() -> Self {
        Check {
            result: None,
            job: None,
        }
    }
}

impl<K: PartialEq + Clone + Send + 'static, V: Send + 'static> Check<K, V> {
    /// Starts checking `key` unless it is checked, or being checked, already.
    fn want(
        &mut self,
        name: &'static str,
        key: &K,
        work: impl FnOnce(K) -> anyhow::Result<V> + Send + 'static,
    ) {
        let done = self.result.as_ref().is_some_and(|(k, _)| k == key);
        let running = self.job.as_ref().is_some_and(|(k, _)| k == key);
        if done || running || self.job.is_some() {
            // One at a time: a newer input is checked when the current job ends.
            return;
        }
        let k = key.clone();
        self.job = Some((key.clone(), Job::spawn(name, move || work(k))));
    }

    /// Forgets the result so the next `want` runs again.
    fn again(&mut self) {
        self.result = None;
    }

    fn poll(&mut self) {
        if let Some(result) = self.job.as_mut().and_then(|(_, j)| j.take()) {
            let (key, _) = self.job.take().expect("job present");
            self.result = Some((key, result));
        }
    }

    fn busy(&self) -> bool {
        self.job.is_some()
    }

    fn name(&self) -> Option<&'static str> {
        self.job.as_ref().map(|(_, j)| j.name())
    }

    /// The result for `key`, if it has one.
    fn for_key(&self, key: &K) -> Option<&Result<V, String>> {
        self.result
            .as_ref()
            .filter(|(k, _)| k == key)
            .map(|(_, r)| r)
    }
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
    }

    pub(super) fn busy(&self) -> bool {
        self.models_job.is_some()
            || self.embedder.busy()
            || self.dataset.busy()
            || self.knowledge.busy()
            || self.prompts.busy()
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

    /// Drops the draft.
    pub fn revert(&mut self, saved: &Settings) {
        self.draft = saved.clone();
        // A hand-edited file may name an endpoint that is not there.
        self.selected_endpoint = saved
            .active_endpoint
            .min(saved.endpoints.len().saturating_sub(1));
        self.memory_notice = None;
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
                        self.data_section(&mut cols[1]);
                        self.prompts_section(&mut cols[1]);
                        self.workspace_section(&mut cols[1], env, &mut commands);
                    });
                } else {
                    self.endpoints_section(ui, env, &mut commands);
                    self.reference_section(ui, env, &mut commands);
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

    fn endpoints_section(
        &mut self,
        ui: &mut egui::Ui,
        env: &SettingsEnv<'_>,
        commands: &mut Vec<Command>,
    ) {
        section(
            ui,
            "Model endpoints",
            "The OpenAI-compatible server that answers the questions: vLLM, Ollama, llama.cpp, \
             LM Studio or a hosted API. Inspect asks the active one; batch runs can use several.",
            |ui| {
                ui.horizontal_wrapped(|ui| {
                    for (i, e) in self.draft.endpoints.iter().enumerate() {
                        let mut text = e.name.clone();
                        if text.trim().is_empty() {
                            text = format!("endpoint {}", i + 1);
                        }
                        if i == self.draft.active_endpoint {
                            text.push_str(" (active)");
                        }
                        if ui
                            .selectable_label(i == self.selected_endpoint, text)
                            .clicked()
                        {
                            self.selected_endpoint = i;
                        }
                    }
                    ui.separator();
                    if ui.button("Add endpoint").clicked() {
                        let n = self.draft.endpoints.len() + 1;
                        self.draft.endpoints.push(EndpointConfig {
                            name: format!("endpoint {n}"),
                            ..EndpointConfig::default()
                        });
                        self.selected_endpoint = self.draft.endpoints.len() - 1;
                    }
                    let can_remove = !self.draft.endpoints.is_empty();
                    if ui
                        .add_enabled(can_remove, egui::Button::new("Remove endpoint"))
                        .on_hover_text("Remove the endpoint shown below")
                        .clicked()
                    {
                        let i = self.selected_endpoint;
                        self.draft.endpoints.remove(i);
                        let active = &mut self.draft.active_endpoint;
                        if *active > i || *active >= self.draft.endpoints.len() {
                            *active = active.saturating_sub(1);
                        }
                        self.selected_endpoint = i.saturating_sub(1);
                    }
                });
                if self.draft.endpoints.is_empty() {
                    ui.colored_label(
                        ui.visuals().warn_fg_color,
                        "No endpoint: Inspect and Batch cannot ask a model until you add one.",
                    );
                    return;
                }
                ui.add_space(4.0);
                self.endpoint_editor(ui, env, commands);
            },
        );
    }

    fn endpoint_editor(
        &mut self,
        ui: &mut egui::Ui,
        env: &SettingsEnv<'_>,
        commands: &mut Vec<Command>,
    ) {
        let i = self
            .selected_endpoint
            .min(self.draft.endpoints.len().saturating_sub(1));
        self.selected_endpoint = i;
        let models_key = {
            let e = &self.draft.endpoints[i];
            (e.base_url.trim().to_string(), e.api_key_env.clone())
        };
        let probe = env.probes.state(&self.draft.endpoints[i]);
        let mut known_models: Vec<String> = Vec::new();
        let mut models_error = None;
        if let Some((_, r)) = self.served_models.iter().find(|(k, _)| *k == models_key) {
            match r {
                Ok(list) => known_models.extend(list.iter().cloned()),
                Err(e) => models_error = Some(e.clone()),
            }
        }
        if let ProbeState::Done(report) = &probe {
            for m in &report.models {
                if !known_models.contains(m) {
                    known_models.push(m.clone());
                }
            }
        }
        let mut list_models = false;
        egui::Grid::new("endpoint_editor")
            .num_columns(2)
            .spacing([10.0, 6.0])
            .show(ui, |ui| {
                let e = &mut self.draft.endpoints[i];
                text_row(ui, "Endpoint name", &mut e.name, "e.g. local vLLM");
                let label = ui.label("Base URL");
                ui.vertical(|ui| {
                    ui.add(
                        egui::TextEdit::singleline(&mut e.base_url)
                            .hint_text("http://localhost:8000/v1")
                            .desired_width(360.0),
                    )
                    .labelled_by(label.id);
                    ui.weak("vLLM :8000/v1 · Ollama :11434/v1 · llama.cpp :8080/v1 · LM Studio :1234/v1");
                });
                ui.end_row();
                let label = ui.label("Model");
                ui.horizontal(|ui| {
                    ui.add(
                        egui::TextEdit::singleline(&mut e.model)
                            .hint_text("the name the server expects")
                            .desired_width(260.0),
                    )
                    .labelled_by(label.id);
                    let served = egui::ComboBox::from_id_salt("served_models")
                        .selected_text("Served models")
                        .width(130.0)
                        .show_ui(ui, |ui| {
                            if known_models.is_empty() {
                                ui.weak("Press List models to ask the server");
                            }
                            for m in &known_models {
                                ui.selectable_value(&mut e.model, m.clone(), m);
                            }
                        });
                    // A combo box has no name of its own; screen readers and tests need one.
                    served.response.widget_info(|| {
                        egui::WidgetInfo::labeled(egui::Role::ComboBox, true, "Served models")
                    });
                    let listing = self.models_job.is_some();
                    if ui
                        .add_enabled(!listing, egui::Button::new("List models"))
                        .on_hover_text("Ask the server which models it serves")
                        .clicked()
                    {
                        list_models = true;
                    }
                    if listing {
                        ui.spinner();
                    }
                });
                ui.end_row();
                if let Some(err) = &models_error {
                    ui.label("");
                    ui.colored_label(ui.visuals().error_fg_color, elide(err, 160))
                        .on_hover_text(err.as_str());
                    ui.end_row();
                }
                let label = ui.label("API key variable");
                ui.horizontal(|ui| {
                    let mut var = e.api_key_env.clone().unwrap_or_default();
                    if ui
                        .add(
                            egui::TextEdit::singleline(&mut var)
                                .hint_text("none: no key is sent")
                                .desired_width(200.0),
                        )
                        .labelled_by(label.id)
                        .on_hover_text(
                            "The NAME of the environment variable that holds the key \
                             (e.g. OPENAI_API_KEY), never the key itself",
                        )
                        .changed()
                    {
                        e.api_key_env = (!var.trim().is_empty()).then(|| var.trim().to_string());
                    }
                    match e.api_key_env.as_deref() {
                        None => {
                            ui.weak("no key is sent");
                        }
                        Some(v) if services::api_key_is_set(v) => {
                            ui.colored_label(ok_color(ui), format!("{v} is set"));
                        }
                        Some(v) => {
                            ui.colored_label(
                                ui.visuals().error_fg_color,
                                format!("{v} is not set"),
                            )
                            .on_hover_text(
                                "Export it in the shell that starts the workbench, then restart",
                            );
                        }
                    }
                });
                ui.end_row();
                let label = ui.label("Timeout");
                ui.add(
                    egui::DragValue::new(&mut e.timeout_s)
                        .range(1.0..=3600.0)
                        .speed(1.0)
                        .suffix(" s"),
                )
                .labelled_by(label.id)
                .on_hover_text("Limit for one request, reply included");
                ui.end_row();
                let label = ui.label("Requests at once");
                ui.add(egui::DragValue::new(&mut e.max_in_flight).range(1..=256))
                    .labelled_by(label.id)
                    .on_hover_text("How many requests a batch run keeps open on this endpoint");
                ui.end_row();
                let label = ui.label("Retries");
                ui.add(egui::DragValue::new(&mut e.max_retries).range(0..=10))
                    .labelled_by(label.id)
                    .on_hover_text(
                        "Further attempts after connection failures, timeouts, 429, 5xx and 200s that are not JSON",
                    );
                ui.end_row();
            });
        if list_models {
            let cfg = self.draft.endpoints[i].clone();
            let label = format!("list models of {}", cfg.name);
            self.models_job = Some((
                models_key,
                TrackedJob::spawn("list models", label, move |_, cancel| {
                    services::list_models(cfg, cancel)
                }),
            ));
        }
        ui.add_space(4.0);
        ui.horizontal(|ui| {
            if i == self.draft.active_endpoint {
                ui.weak("Inspect uses this endpoint.");
            } else if ui
                .button("Use for Inspect")
                .on_hover_text("Make this the active endpoint")
                .clicked()
            {
                self.draft.active_endpoint = i;
            }
            let probing = matches!(probe, ProbeState::Probing);
            if ui
                .add_enabled(!probing, egui::Button::new("Test"))
                .on_hover_text(
                    "Ask the server for its models and send one request with two small images, \
                     as Echo does (the settings as typed, saved or not)",
                )
                .clicked()
            {
                commands.push(Command::TestEndpoint(Box::new(
                    self.draft.endpoints[i].clone(),
                )));
            }
        });
        probe_result(ui, &probe);
    }

    fn reference_section(
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

    fn embedder_editor(&mut self, ui: &mut egui::Ui) {
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

    fn memory_editor(
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

    fn data_section(&mut self, ui: &mut egui::Ui) {
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

    fn prompts_section(&mut self, ui: &mut egui::Ui) {
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
                    });
            },
        );
    }

    fn workspace_section(
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

/// A framed group with a title and one or two sentences of help.
fn section(ui: &mut egui::Ui, title: &str, help: &str, content: impl FnOnce(&mut egui::Ui)) {
    egui::Frame::group(ui.style())
        .inner_margin(egui::Margin::same(12))
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            // Columns lay out justified; text and buttons read better left-aligned.
            ui.with_layout(egui::Layout::top_down(egui::Align::Min), |ui| {
                ui.label(egui::RichText::new(title).strong().size(16.0));
                ui.weak(help);
                ui.add_space(6.0);
                content(ui);
            });
        });
    ui.add_space(10.0);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmbedderKind {
    Descriptor,
    ClipFolder,
    ClipHf,
}

fn embedder_kind(spec: &str) -> EmbedderKind {
    let spec = spec.trim();
    if spec.starts_with("clip:hf:") {
        EmbedderKind::ClipHf
    } else if spec.starts_with("clip:") {
        EmbedderKind::ClipFolder
    } else {
        EmbedderKind::Descriptor
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Folder,
    Json,
}

/// The file dialog of a Browse… button, open on its own thread so frames go on
/// drawing while it is up; at most one at a time, for the field that opened it.
#[derive(Default)]
pub(super) struct PathPicker {
    open: Option<(String, Job<Option<PathBuf>>)>,
}

impl PathPicker {
    fn busy(&self) -> bool {
        self.open.is_some()
    }

    /// The path picked for the field `label`, once its dialog has closed.
    fn picked_for(&mut self, label: &str) -> Option<PathBuf> {
        let (field, job) = self.open.as_mut()?;
        if field != label {
            return None;
        }
        let result = job.take()?;
        self.open = None;
        result.ok().flatten()
    }

    fn start(&mut self, label: &str, current: &Path, kind: PathKind) {
        let start = current
            .parent()
            .filter(|_| kind == PathKind::Json)
            .or(Some(current))
            .filter(|p| p.is_dir())
            .map(Path::to_path_buf);
        let job = Job::spawn("file dialog", move || {
            let mut dialog = rfd::FileDialog::new();
            if let Some(dir) = start {
                dialog = dialog.set_directory(dir);
            }
            Ok(match kind {
                PathKind::Folder => dialog.pick_folder(),
                PathKind::Json => dialog.add_filter("JSON", &["json"]).pick_file(),
            })
        });
        self.open = Some((label.to_string(), job));
    }
}

/// A labelled text field for a path with a Browse… button; true when it changed.
/// Without a desktop portal the dialog returns nothing, so typing always works.
fn path_row(
    ui: &mut egui::Ui,
    picker: &mut PathPicker,
    label: &str,
    path: &mut PathBuf,
    kind: PathKind,
    hint: &str,
) -> bool {
    let mut changed = false;
    if let Some(p) = picker.picked_for(label) {
        *path = p;
        changed = true;
    }
    let label_response = ui.label(label);
    ui.horizontal(|ui| {
        let mut text = path.display().to_string();
        if ui
            .add(
                egui::TextEdit::singleline(&mut text)
                    .hint_text(hint)
                    .desired_width(360.0),
            )
            .labelled_by(label_response.id)
            .changed()
        {
            *path = PathBuf::from(text.trim());
            changed = true;
        }
        let browse = ui
            .add_enabled(!picker.busy(), egui::Button::new("Browse…"))
            .on_disabled_hover_text("A file dialog is open");
        if browse.clicked() {
            picker.start(label, path, kind);
        }
    });
    ui.end_row();
    changed
}

/// A labelled one-line text field; true when it changed.
fn text_row(ui: &mut egui::Ui, label: &str, text: &mut String, hint: &str) -> bool {
    let label = ui.label(label);
    let changed = ui
        .add(
            egui::TextEdit::singleline(text)
                .hint_text(hint)
                .desired_width(360.0),
        )
        .labelled_by(label.id)
        .changed();
    ui.end_row();
    changed
}

fn check_line(ui: &mut egui::Ui, result: &Result<String, String>) {
    match result {
        Ok(text) => {
            ui.colored_label(ok_color(ui), format!("OK: {text}"));
        }
        Err(e) => {
            ui.colored_label(
                ui.visuals().error_fg_color,
                format!("Problem: {}", elide(e, 200)),
            )
            .on_hover_text(e.as_str());
        }
    }
}

fn check_status(ui: &mut egui::Ui, result: Option<&Result<String, String>>, busy: bool) {
    match result {
        Some(r) => check_line(ui, r),
        None if busy => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.weak("checking…");
            });
        }
        None => {
            ui.weak("not checked yet");
        }
    }
}

/// What the last Test of this endpoint found: each capability and the reason.
fn probe_result(ui: &mut egui::Ui, probe: &ProbeState) {
    match probe {
        ProbeState::Untested => {
            ui.weak(
                "Not tested yet: press Test to check the server, the model and two-image requests.",
            );
        }
        ProbeState::Probing => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Testing…");
            });
        }
        ProbeState::Done(report) => {
            let (mark, color) = if report.ok {
                ("Works", ok_color(ui))
            } else {
                ("Failed", ui.visuals().error_fg_color)
            };
            egui::Frame::group(ui.style()).show(ui, |ui| {
                ui.set_width(ui.available_width());
                ui.colored_label(color, format!("{mark}: {}", report.message));
                let yes_no = |b: bool| if b { "yes" } else { "no" };
                ui.weak(format!(
                    "model listed by the server: {} · two-image request answered: {} · {} ms",
                    yes_no(report.model_listed),
                    yes_no(report.two_images_ok),
                    report.latency_ms
                ));
                if !report.models.is_empty() {
                    ui.weak(elide(
                        &format!("served models: {}", report.models.join(", ")),
                        200,
                    ));
                }
                if let Some(reply) = &report.reply {
                    ui.weak(elide(&format!("reply: {}", reply.trim()), 200));
                }
            });
        }
    }
}

fn preset_list(table: &ExpertTable) -> Vec<(String, String)> {
    table
        .presets
        .iter()
        .map(|(n, p)| (n.clone(), p.description.clone()))
        .collect()
}

fn ok_color(ui: &egui::Ui) -> egui::Color32 {
    super::ok_color(ui)
}

fn elide(text: &str, max: usize) -> String {
    super::elide(text, max)
}

/// Loads the embedder the way a memory build would and says what it is.
fn check_embedder(spec: &str) -> anyhow::Result<String> {
    let parsed: EmbedderSpec = spec.parse()?;
    let embedder = parsed.load()?;
    Ok(format!("{}: {} dimensions", embedder.id(), embedder.dim()))
}

/// Images the dataset check looks for under the root (a spot check, not all).
const DATASET_SPOT_CHECK: usize = 50;

fn check_dataset(path: &Path, root: &Path) -> anyhow::Result<String> {
    let dataset = MmadDataset::load(path)?;
    if !root.is_dir() {
        anyhow::bail!("the dataset root {} is not a folder", root.display());
    }
    let root_dir = DatasetRoot::new(root);
    let keys: Vec<&String> = dataset.entries.keys().take(DATASET_SPOT_CHECK).collect();
    let found = keys
        .iter()
        .filter(|k| root_dir.resolve(k).is_ok_and(|p| p.is_file()))
        .count();
    if !keys.is_empty() && found == 0 {
        anyhow::bail!(
            "none of the first {} images (e.g. {}) is under {}: is this the right root?",
            keys.len(),
            keys[0],
            root.display()
        );
    }
    let mut text = format!(
        "{} images, {} questions",
        dataset.image_count(),
        dataset.question_count()
    );
    if found < keys.len() {
        text.push_str(&format!(
            "; {} of the first {} images are missing under the root",
            keys.len() - found,
            keys.len()
        ));
    }
    Ok(text)
}

fn check_knowledge(path: &Path) -> anyhow::Result<String> {
    let kb = KnowledgeBase::load(path)?;
    Ok(format!(
        "{} categories, {} entries",
        kb.category_count(),
        kb.entry_count()
    ))
}

/// The experts table's presets, and whether the chosen preset's prompts load.
struct PromptsCheck {
    presets: Vec<(String, String)>,
    status: Result<String, String>,
}

fn check_prompts(
    experts: Option<&Path>,
    dir: Option<&Path>,
    preset: &str,
) -> anyhow::Result<PromptsCheck> {
    let table = ExpertTable::load_or_bundled(experts)?;
    let presets = preset_list(&table);
    let status = (|| -> anyhow::Result<String> {
        if let Some(d) = dir
            && !d.is_dir()
        {
            anyhow::bail!(
                "the prompt templates folder {} is not a folder",
                d.display()
            );
        }
        let def = table.preset(preset)?;
        let mut parts = Vec::new();
        for set in def.prompt_sets() {
            let loaded = PromptSet::load(set, dir)?;
            parts.push(format!("{set} ({} templates)", loaded.templates().count()));
        }
        Ok(format!(
            "preset `{preset}` uses prompt set {}",
            parts.join(", ")
        ))
    })()
    .map_err(|e| crate::util::error::chain(e.as_ref()));
    Ok(PromptsCheck { presets, status })
}
