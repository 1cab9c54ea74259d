//! The desktop app. It only draws state and turns clicks into [`Command`]s; loading,
//! decoding and scoring run on background threads through [`jobs::Job`].

mod batch;
pub mod browser;
pub mod compare;
mod inspect;
mod jobs;
mod knowledge_tab;
mod local_model;
mod services;
mod settings;
mod status;
pub mod trace_view;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use eframe::egui;

use crate::config::Settings;
use crate::dataset::{DatasetRoot, MmadDataset};
use crate::knowledge::KnowledgeBase;
use crate::memory::ReferenceMemory;
use crate::mllm::EndpointConfig;
use crate::vision::ImageEmbedder;
use jobs::Job;

pub use batch::{BatchState, RunPhase};
pub use browser::{BrowserFilter, DatasetBrowser, ImageKind};
pub use compare::{CompareMode, ComparePanel, CompareView, QueryOverlay, ReferenceImage};
pub use inspect::{AnomalySummary, AnomalyView, InspectEnv, InspectState, Slot};
pub use knowledge_tab::{KnowledgeState, Selection as KnowledgeSelection, View as KnowledgeView};
pub use services::{EndpointProbes, ProbeState, ReferencePlan, ReferenceService};
pub use settings::SettingsState;

pub const APP_NAME: &str = "Echo Workbench";

/// The four workspaces of the app. The one list of tabs: the top bar, the Ctrl+N
/// shortcuts, the help overlay and `echo-workbench gui --tab` all read it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
pub enum Tab {
    #[default]
    Inspect,
    Batch,
    Knowledge,
    Settings,
}

impl Tab {
    pub const ALL: [Tab; 4] = [Tab::Inspect, Tab::Batch, Tab::Knowledge, Tab::Settings];
    /// Ctrl+<key> opens the tab at the same place in [`Tab::ALL`]; a tab added there
    /// does not compile until it has a key here.
    const KEYS: [egui::Key; Tab::ALL.len()] = [
        egui::Key::Num1,
        egui::Key::Num2,
        egui::Key::Num3,
        egui::Key::Num4,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Tab::Inspect => "Inspect",
            Tab::Batch => "Batch",
            Tab::Knowledge => "Knowledge",
            Tab::Settings => "Settings",
        }
    }
}

/// The window's own state that survives a restart (eframe storage). What the CLI
/// also needs (dataset, knowledge, endpoints, embedder, memory, preset) lives in the
/// workspace's settings file instead. Fields older versions stored here (dataset and
/// knowledge paths) are ignored when read back.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Persisted {
    pub tab: Tab,
    pub dark_mode: bool,
    pub selected_image: Option<String>,
    /// An image opened from a file (dialog, drop, typed path) rather than picked
    /// from the dataset; reopened at the next start when it still exists.
    pub open_file: Option<PathBuf>,
    /// The workspace chosen in Settings; `--workspace` and `ECHO_WORKBENCH_HOME`
    /// still take precedence at start.
    pub workspace: Option<PathBuf>,
}

impl Default for Persisted {
    fn default() -> Self {
        Persisted {
            tab: Tab::Inspect,
            dark_mode: true,
            selected_image: None,
            open_file: None,
            workspace: None,
        }
    }
}

/// Choices from the command line (`echo-workbench gui --tab .. --image .. --workspace ..`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaunchOptions {
    /// Open on this tab instead of the last one.
    pub tab: Option<Tab>,
    /// Open this dataset image (its key in mmad.json).
    pub image: Option<String>,
    /// The workspace folder (default: `$ECHO_WORKBENCH_HOME` or the user's data folder).
    pub workspace: Option<PathBuf>,
}

/// Everything the UI asks the app to do; applied after the frame is drawn.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    SwitchTab(Tab),
    SelectImage(String),
    LoadDataset {
        path: PathBuf,
        root: PathBuf,
    },
    LoadKnowledge(PathBuf),
    ScoreFile(PathBuf),
    SetDarkMode(bool),
    /// Write the settings file and start using these settings.
    SaveSettings(Box<Settings>),
    /// Build a memory from the normal images under `root` now, optionally saving it.
    BuildReference {
        root: PathBuf,
        embedder: String,
        save_to: Option<PathBuf>,
    },
    /// Load a memory folder now.
    LoadReference {
        folder: PathBuf,
        embedder: String,
    },
    CancelReference,
    /// Run the capability probe of an endpoint.
    TestEndpoint(Box<EndpointConfig>),
    /// Show a run folder in Batch's current-run view.
    OpenRun(PathBuf),
    /// Use another workspace folder from now on (and at the next start).
    SwitchWorkspace(PathBuf),
}

/// The Reference Extractor's memory with the embedder that made it; Inspect retrieves
/// from it and the pipeline sends its best match as the reference image.
#[derive(Clone)]
pub struct LoadedReference {
    pub memory: Arc<ReferenceMemory>,
    pub embedder: Arc<dyn ImageEmbedder>,
    /// Where it came from, for people: a memory folder, or what it was built from.
    pub origin: String,
}

/// The loaded dataset with the root its paths resolve against.
pub struct LoadedDataset {
    pub dataset: MmadDataset,
    pub root: DatasetRoot,
    pub warnings: Vec<String>,
}

pub struct WorkbenchApp {
    pub persisted: Persisted,
    /// The workspace folder: settings file, caches, memories, knowledge versions, runs.
    pub workspace: PathBuf,
    /// The settings file's contents, shared with the CLI.
    pub settings: Settings,
    /// Why the settings file could not be read (the defaults are in use meanwhile).
    pub settings_error: Option<String>,
    /// The reference memory in use; `None` until one is loaded or built.
    pub reference: Option<LoadedReference>,
    /// Bumped whenever `reference` changes, so views can redo their retrieval.
    pub reference_generation: u64,
    pub dataset: Option<LoadedDataset>,
    pub dataset_job: Option<Job<LoadedDataset>>,
    pub dataset_error: Option<String>,
    pub knowledge: Option<KnowledgeBase>,
    pub knowledge_job: Option<Job<KnowledgeBase>>,
    pub knowledge_error: Option<String>,
    pub inspect: InspectState,
    pub batch: BatchState,
    pub knowledge_view: KnowledgeState,
    pub settings_view: SettingsState,
    /// Loads or builds `reference`.
    pub reference_service: ReferenceService,
    /// What "Test" found out about endpoints.
    pub probes: EndpointProbes,
    settings_save_job: Option<Job<Settings>>,
    /// Why the settings file could not be written.
    pub settings_save_error: Option<String>,
    /// The image asked for with `--image`, until the dataset has been checked for it.
    requested_image: Option<String>,
    /// Something about the start-up the user should know (e.g. an unknown `--image`).
    pub launch_notice: Option<String>,
    pub show_help: bool,
    commands: Vec<Command>,
}

impl WorkbenchApp {
    /// The app on the default workspace (`$ECHO_WORKBENCH_HOME` or the user's data folder).
    pub fn new(persisted: Persisted) -> Self {
        Self::with_workspace(persisted, crate::workspace::default_dir())
    }

    /// Starts loading the dataset, knowledge and reference memory of the workspace's
    /// settings (on a first start: the bundled sample) right away.
    pub fn with_workspace(persisted: Persisted, workspace: PathBuf) -> Self {
        let (settings, settings_error) = match Settings::load(&Settings::path_in(&workspace)) {
            Ok(s) => (s, None),
            Err(e) => (Settings::default(), Some(e.to_string())),
        };
        let mut app = WorkbenchApp {
            settings_view: SettingsState::new(&settings),
            persisted,
            workspace,
            settings,
            settings_error,
            reference: None,
            reference_generation: 0,
            dataset: None,
            dataset_job: None,
            dataset_error: None,
            knowledge: None,
            knowledge_job: None,
            knowledge_error: None,
            inspect: InspectState::default(),
            batch: BatchState::default(),
            knowledge_view: KnowledgeState::default(),
            reference_service: ReferenceService::default(),
            probes: EndpointProbes::default(),
            settings_save_job: None,
            settings_save_error: None,
            requested_image: None,
            launch_notice: None,
            show_help: false,
            commands: Vec::new(),
        };
        let dataset = app.settings.dataset.clone();
        app.apply(Command::LoadDataset {
            path: dataset.mmad_json,
            root: dataset.root,
        });
        app.apply(Command::LoadKnowledge(app.settings.knowledge_path()));
        app.reference_service
            .follow_settings(&app.settings, &app.workspace);
        match (&app.persisted.open_file, &app.persisted.selected_image) {
            (Some(file), _) if file.is_file() => app.inspect.open_file(file.clone()),
            (_, Some(key)) => app.inspect.select(key.clone()),
            _ => {}
        }
        app
    }

    /// The app with command-line choices applied over the persisted state.
    pub fn launch(mut persisted: Persisted, options: LaunchOptions) -> Self {
        if let Some(tab) = options.tab {
            persisted.tab = tab;
        }
        if let Some(key) = &options.image {
            persisted.selected_image = Some(key.clone());
            persisted.open_file = None;
        }
        let from_env = std::env::var_os(crate::workspace::WORKSPACE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let workspace = options
            .workspace
            .or(from_env)
            .or_else(|| persisted.workspace.clone())
            .unwrap_or_else(crate::workspace::default_dir);
        let mut app = WorkbenchApp::with_workspace(persisted, workspace);
        app.requested_image = options.image;
        app
    }

    pub fn from_creation_context(cc: &eframe::CreationContext<'_>, options: LaunchOptions) -> Self {
        let persisted = cc
            .storage
            .and_then(|s| eframe::get_value::<Persisted>(s, eframe::APP_KEY))
            .unwrap_or_default();
        cc.egui_ctx.set_theme(if persisted.dark_mode {
            egui::Theme::Dark
        } else {
            egui::Theme::Light
        });
        WorkbenchApp::launch(persisted, options)
    }

    pub fn push(&mut self, command: Command) {
        self.commands.push(command);
    }

    /// Carries out one command. Long work is started here and finished by `poll`.
    pub fn apply(&mut self, command: Command) {
        match command {
            Command::SwitchTab(tab) => self.persisted.tab = tab,
            Command::SwitchWorkspace(dir) => self.switch_workspace(dir),
            Command::OpenRun(dir) => {
                self.batch.open_run(dir);
                self.persisted.tab = Tab::Batch;
            }
            Command::SelectImage(key) => {
                self.persisted.selected_image = Some(key.clone());
                self.persisted.open_file = None;
                self.inspect.select(key);
            }
            Command::LoadDataset { path, root } => {
                self.dataset_job = Some(Job::spawn("load dataset", move || {
                    let dataset = MmadDataset::load(&path)?;
                    let warnings = dataset.warnings();
                    Ok(LoadedDataset {
                        dataset,
                        root: DatasetRoot::new(root),
                        warnings,
                    })
                }));
            }
            Command::LoadKnowledge(path) => {
                self.knowledge_job = Some(Job::spawn("load knowledge", move || {
                    Ok(KnowledgeBase::load(&path)?)
                }));
            }
            Command::ScoreFile(path) => self.batch.start(path),
            Command::SetDarkMode(dark) => self.persisted.dark_mode = dark,
            Command::SaveSettings(settings) => {
                let path = Settings::path_in(&self.workspace);
                // A file that could not be read is kept beside the new one: it may
                // hold choices worth copying back by hand.
                let keep_old = self.settings_error.is_some();
                self.settings_save_error = None;
                self.settings_save_job = Some(Job::spawn("save settings", move || {
                    if keep_old && path.is_file() {
                        let backup = path.with_extension("toml.bak");
                        std::fs::copy(&path, &backup).with_context(|| {
                            format!("keeping the unreadable settings as {}", backup.display())
                        })?;
                    }
                    settings.save(&path)?;
                    Ok(*settings)
                }));
            }
            Command::BuildReference {
                root,
                embedder,
                save_to,
            } => self.reference_service.start(
                ReferencePlan::Build { root, embedder },
                &self.workspace,
                save_to,
            ),
            Command::LoadReference { folder, embedder } => self.reference_service.start(
                ReferencePlan::Load { folder, embedder },
                &self.workspace,
                None,
            ),
            Command::CancelReference => self.reference_service.cancel(),
            Command::TestEndpoint(cfg) => self.probes.start(*cfg),
        }
    }

    /// Starts using freshly saved settings: reloads what they changed.
    fn use_settings(&mut self, new: Settings) {
        let old = std::mem::replace(&mut self.settings, new);
        if old.dataset != self.settings.dataset {
            let d = self.settings.dataset.clone();
            self.apply(Command::LoadDataset {
                path: d.mmad_json,
                root: d.root,
            });
        }
        if old.knowledge_path() != self.settings.knowledge_path() {
            self.apply(Command::LoadKnowledge(self.settings.knowledge_path()));
        }
        self.reference_service
            .follow_settings(&self.settings, &self.workspace);
        // The file now holds good settings; the defaults banner no longer applies.
        self.settings_error = None;
    }

    /// Starts over on another workspace: its settings, caches, memories and runs.
    /// Refused while a batch run writes into the current one.
    fn switch_workspace(&mut self, dir: PathBuf) {
        if self.batch.run_active() {
            self.launch_notice = Some(
                "A batch run is going on in this workspace: pause or cancel it before switching."
                    .into(),
            );
            return;
        }
        if let Err(e) = std::fs::create_dir_all(&dir) {
            self.launch_notice = Some(format!(
                "Cannot use {} as the workspace: {e}",
                dir.display()
            ));
            return;
        }
        let mut persisted = self.persisted.clone();
        persisted.workspace = Some(dir.clone());
        persisted.tab = Tab::Settings;
        *self = WorkbenchApp::with_workspace(persisted, dir.clone());
        self.launch_notice = Some(format!(
            "Now using the workspace {} (also at the next start).",
            dir.display()
        ));
    }

    /// Collects finished background work. Results replace the old value only
    /// when they arrive, so nothing flashes empty while a reload runs.
    pub fn poll(&mut self) {
        if let Some(result) = self.dataset_job.as_mut().and_then(Job::take) {
            self.dataset_job = None;
            match result {
                Ok(loaded) => {
                    // Open on something to look at rather than an empty pane.
                    let keep = self.inspect.has_loose_file()
                        || self
                            .inspect
                            .selected
                            .as_ref()
                            .is_some_and(|k| loaded.dataset.entries.contains_key(k));
                    let first = loaded.dataset.entries.keys().next().cloned();
                    if let Some(key) = self.requested_image.take()
                        && !loaded.dataset.entries.contains_key(&key)
                    {
                        self.launch_notice = Some(format!(
                            "The image `{key}` (--image) is not in {}; showing the first image instead.",
                            loaded.dataset.source.display()
                        ));
                    }
                    self.dataset = Some(loaded);
                    self.dataset_error = None;
                    if !keep && let Some(key) = first {
                        self.apply(Command::SelectImage(key));
                    }
                }
                Err(e) => self.dataset_error = Some(e),
            }
        }
        if let Some(result) = self.knowledge_job.as_mut().and_then(Job::take) {
            self.knowledge_job = None;
            match result {
                Ok(kb) => {
                    self.knowledge = Some(kb);
                    self.knowledge_error = None;
                }
                Err(e) => self.knowledge_error = Some(e),
            }
        }
        if let Some(result) = self.settings_save_job.as_mut().and_then(Job::take) {
            self.settings_save_job = None;
            match result {
                Ok(saved) => self.use_settings(saved),
                Err(e) => self.settings_save_error = Some(e),
            }
        }
        if let Some(reference) = self.reference_service.poll() {
            self.reference = Some(reference);
            self.reference_generation += 1;
            if let Some(ReferencePlan::Load { folder, .. }) = &self.reference_service.plan {
                self.settings_view.memory_saved(folder);
            }
        }
        self.probes.poll();
        self.settings_view.poll();
        let (inspect, env) = self.inspect_parts();
        inspect.poll(&env);
        self.batch.poll();
    }

    pub fn busy(&self) -> bool {
        self.dataset_job.is_some()
            || self.knowledge_job.is_some()
            || self.settings_save_job.is_some()
            || self.reference_service.busy()
            || self.probes.busy()
            || self.settings_view.busy()
            || self.inspect.busy()
            || self.batch.busy()
    }

    /// Whether the settings file is being written.
    pub fn saving_settings(&self) -> bool {
        self.settings_save_job.is_some()
    }

    fn top_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading(APP_NAME);
            ui.separator();
            for tab in Tab::ALL {
                if ui
                    .selectable_label(self.persisted.tab == tab, tab.label())
                    .clicked()
                {
                    self.push(Command::SwitchTab(tab));
                }
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui
                    .button("?")
                    .on_hover_text("Keyboard shortcuts (F1)")
                    .clicked()
                {
                    self.show_help = !self.show_help;
                }
                let dark = self.persisted.dark_mode;
                let label = if dark { "Light theme" } else { "Dark theme" };
                if ui.button(label).clicked() {
                    self.push(Command::SetDarkMode(!dark));
                }
            });
        });
    }

    fn status_bar(&mut self, ui: &mut egui::Ui) {
        let error = ui.visuals().error_fg_color;
        ui.horizontal_wrapped(|ui| {
            self.endpoint_status(ui);
            ui.separator();
            // The memory in use answers with its own embedder, whatever the settings
            // say until it is rebuilt or reloaded.
            let embedder = self.reference.as_ref().map_or_else(
                || self.settings.reference.embedder.clone(),
                |r| r.embedder.id(),
            );
            ui.label(format!("Embedder: {embedder}")).on_hover_text(
                "Turns images into vectors for the reference memory (Settings, Reference images)",
            );
            ui.separator();
            self.memory_status(ui);
            local_model::status_label(ui);
            ui.separator();
            match (&self.dataset, &self.dataset_error) {
                (_, Some(err)) => {
                    ui.colored_label(error, format!("Dataset: {err}"));
                }
                (Some(d), None) => {
                    let name = d
                        .dataset
                        .source
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    ui.label(format!(
                        "Dataset: {name} ({} images, {} questions)",
                        d.dataset.image_count(),
                        d.dataset.question_count()
                    ))
                    .on_hover_text(d.dataset.source.display().to_string());
                }
                (None, None) => {
                    ui.label("Dataset: loading…");
                }
            }
            ui.separator();
            match (&self.knowledge, &self.knowledge_error) {
                (_, Some(err)) => {
                    ui.colored_label(error, format!("Knowledge: {err}"));
                }
                (Some(kb), None) => {
                    ui.label(format!(
                        "Knowledge: {} categories, {} entries",
                        kb.category_count(),
                        kb.entry_count()
                    ));
                }
                (None, None) => {
                    ui.label("Knowledge: loading…");
                }
            }
            let activities = self.activities();
            if !activities.is_empty() {
                ui.separator();
                for activity in &activities {
                    status::activity_row(ui, activity);
                }
            }
        });
    }

    /// Every background job running now, for the status bar.
    pub fn activities(&self) -> Vec<status::Activity> {
        let mut out: Vec<status::Activity> = [
            self.dataset_job.as_ref().map(|j| j.name()),
            self.knowledge_job.as_ref().map(|j| j.name()),
            self.settings_save_job.as_ref().map(|j| j.name()),
            self.batch.busy_label(),
        ]
        .into_iter()
        .flatten()
        .map(status::Activity::named)
        .collect();
        out.extend(self.inspect.activities());
        out.extend(self.reference_service.activity());
        out.extend(self.probes.activities());
        out.extend(self.settings_view.activities());
        out.extend(self.knowledge_view.activity());
        out
    }

    fn endpoint_status(&mut self, ui: &mut egui::Ui) {
        let Some(endpoint) = self.settings.active_endpoint().cloned() else {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                "Endpoint: none (add one in Settings)",
            );
            return;
        };
        ui.label(format!("Endpoint: {} · {}", endpoint.name, endpoint.model))
            .on_hover_text(endpoint.base_url.clone());
        let response = match self.probes.state(&endpoint) {
            ProbeState::Untested => ui
                .add(
                    egui::Label::new(egui::RichText::new("untested").weak())
                        .sense(egui::Sense::click()),
                )
                .on_hover_text("Click to test this endpoint (or use Test in Settings)"),
            ProbeState::Probing => {
                ui.spinner();
                ui.label("probing…")
            }
            ProbeState::Done(report) if report.ok => {
                let text = if report.model_listed {
                    format!("OK, serves {}", endpoint.model)
                } else {
                    "OK (model not listed)".to_string()
                };
                ui.add(
                    egui::Label::new(egui::RichText::new(text).color(ok_color(ui)))
                        .sense(egui::Sense::click()),
                )
                .on_hover_text(format!("{}\nClick to test again.", report.message))
            }
            ProbeState::Done(report) => ui
                .add(
                    egui::Label::new(
                        egui::RichText::new(format!("failed: {}", elide(&report.message, 70)))
                            .color(ui.visuals().error_fg_color),
                    )
                    .sense(egui::Sense::click()),
                )
                .on_hover_text(format!("{}\nClick to test again.", report.message)),
        };
        if response.clicked() {
            self.push(Command::TestEndpoint(Box::new(endpoint)));
        }
    }

    fn memory_status(&mut self, ui: &mut egui::Ui) {
        let service = &self.reference_service;
        match (&self.reference, &service.error) {
            (Some(r), error) => {
                let text = format!(
                    "Memory: {} images, {}",
                    r.memory.len(),
                    elide(&r.origin, 48)
                );
                let mut hover = format!(
                    "{} images embedded with {}\n{}",
                    r.memory.len(),
                    r.memory.embedder,
                    r.origin
                );
                if let Some(note) = &service.note {
                    hover.push_str(&format!("\n{note}"));
                }
                ui.label(text).on_hover_text(hover);
                if let Some(e) = error {
                    ui.colored_label(ui.visuals().error_fg_color, "(last change failed)")
                        .on_hover_text(e.as_str());
                }
            }
            (None, Some(e)) => {
                ui.colored_label(ui.visuals().error_fg_color, format!("Memory: {e}"));
            }
            (None, None) if service.busy() => {
                ui.label("Memory: being made…");
            }
            (None, None) => {
                ui.label("Memory: none");
            }
        }
    }

    fn banners(&mut self, ui: &mut egui::Ui) {
        let warn = ui.visuals().warn_fg_color;
        if let Some(e) = self.settings_error.clone() {
            ui.horizontal_wrapped(|ui| {
                ui.colored_label(
                    warn,
                    format!("Settings problem: {e}. Using defaults until you save settings again."),
                );
                if ui.small_button("Open Settings").clicked() {
                    self.push(Command::SwitchTab(Tab::Settings));
                }
                if ui.small_button("Dismiss").clicked() {
                    self.settings_error = None;
                }
            });
        }
        if let Some(notice) = self.launch_notice.clone() {
            ui.horizontal_wrapped(|ui| {
                ui.colored_label(warn, notice);
                if ui.small_button("Dismiss").clicked() {
                    self.launch_notice = None;
                }
            });
        }
    }

    fn help_window(&mut self, ctx: &egui::Context) {
        let mut open = self.show_help;
        egui::Window::new("Keyboard shortcuts")
            .open(&mut open)
            .resizable(false)
            .collapsible(false)
            .anchor(egui::Align2::CENTER_CENTER, egui::Vec2::ZERO)
            .show(ctx, |ui| {
                egui::Grid::new("shortcuts").striped(true).show(ui, |ui| {
                    for (tab, key) in Tab::ALL.iter().zip(Tab::KEYS) {
                        ui.monospace(format!("Ctrl+{}", key.symbol_or_name()));
                        ui.label(format!("{} tab", tab.label()));
                        ui.end_row();
                    }
                    for (keys, what) in SHORTCUTS {
                        ui.monospace(*keys);
                        ui.label(*what);
                        ui.end_row();
                    }
                });
                ui.add_space(6.0);
                ui.label("Start options for screenshots and scripts:");
                ui.monospace("echo-workbench gui --tab settings --image KEY --workspace DIR");
            });
        self.show_help = open;
    }

    fn shortcuts(&mut self, ctx: &egui::Context) {
        let (help, close, tab, save, theme) = ctx.input(|i| {
            let tab = Tab::KEYS
                .iter()
                .position(|k| i.modifiers.command && i.key_pressed(*k))
                .map(|n| Tab::ALL[n]);
            (
                i.key_pressed(egui::Key::F1),
                i.key_pressed(egui::Key::Escape),
                tab,
                i.modifiers.command && !i.modifiers.shift && i.key_pressed(egui::Key::S),
                i.modifiers.command && i.modifiers.shift && i.key_pressed(egui::Key::D),
            )
        });
        if help {
            self.show_help = !self.show_help;
        } else if close && self.show_help {
            self.show_help = false;
        }
        if let Some(tab) = tab {
            self.push(Command::SwitchTab(tab));
        }
        if save && self.settings_view.draft != self.settings && !self.saving_settings() {
            self.push(Command::SaveSettings(Box::new(
                self.settings_view.draft.clone(),
            )));
        }
        if theme {
            self.push(Command::SetDarkMode(!self.persisted.dark_mode));
        }
    }

    /// The Inspect tab with what it reads from the app (disjoint borrows).
    fn inspect_parts(&mut self) -> (&mut InspectState, InspectEnv<'_>) {
        let env = InspectEnv {
            dataset: self.dataset.as_ref(),
            dataset_error: self.dataset_error.as_deref(),
            reference: self.reference.as_ref(),
            reference_generation: self.reference_generation,
            reference_error: self.reference_service.error.as_deref(),
            settings: &self.settings,
            knowledge: self.knowledge.as_ref(),
            workspace: &self.workspace,
        };
        (&mut self.inspect, env)
    }

    /// Draws one frame into `ui` and applies what it asked for.
    pub fn frame_ui(&mut self, ui: &mut egui::Ui) {
        self.poll();
        let ctx = ui.ctx().clone();
        if self.persisted.tab != Tab::Inspect {
            self.inspect.poll_hidden(&ctx);
        }
        self.shortcuts(&ctx);
        egui::Panel::top("top_bar").show(ui, |ui| self.top_bar(ui));
        if self.settings_error.is_some() || self.launch_notice.is_some() {
            egui::Panel::top("banners").show(ui, |ui| self.banners(ui));
        }
        egui::Panel::bottom("status_bar").show(ui, |ui| self.status_bar(ui));
        egui::CentralPanel::default().show(ui, |ui| match self.persisted.tab {
            Tab::Inspect => {
                let (inspect, env) = self.inspect_parts();
                let cmds = inspect.ui(ui, &env);
                self.commands.extend(cmds);
            }
            Tab::Batch => {
                let cx = batch::BatchContext {
                    workspace: &self.workspace,
                    settings: &self.settings,
                    inspect_dataset: &self.settings.dataset.mmad_json,
                    probes: &self.probes,
                };
                let cmds = self.batch.ui(ui, &cx);
                self.commands.extend(cmds);
            }
            Tab::Knowledge => {
                let cmds = self.knowledge_view.ui(
                    ui,
                    knowledge_tab::KnowledgeEnv {
                        knowledge: &mut self.knowledge,
                        path: &self.settings.knowledge_path(),
                        workspace: &self.workspace,
                        dataset: self.dataset.as_ref(),
                        pipeline: &self.settings.pipeline,
                        endpoints: &self.settings.endpoints,
                    },
                );
                self.commands.extend(cmds);
            }
            Tab::Settings => {
                let env = settings::SettingsEnv {
                    saved: &self.settings,
                    workspace: &self.workspace,
                    settings_error: self.settings_error.as_deref(),
                    saving: self.settings_save_job.is_some(),
                    save_error: self.settings_save_error.as_deref(),
                    reference: self.reference.as_ref(),
                    reference_service: &self.reference_service,
                    probes: &self.probes,
                    dark_mode: self.persisted.dark_mode,
                };
                let cmds = self.settings_view.ui(ui, &env);
                self.commands.extend(cmds);
            }
        });
        self.help_window(&ctx);
        // What Inspect shows is what the next start reopens, however it was opened.
        if let Some(file) = self.inspect.loose_file() {
            if self.persisted.open_file.as_deref() != Some(file) {
                self.persisted.open_file = Some(file.to_path_buf());
            }
        } else if let Some(key) = &self.inspect.selected
            && (self.persisted.selected_image.as_ref() != Some(key)
                || self.persisted.open_file.is_some())
        {
            self.persisted.selected_image = Some(key.clone());
            self.persisted.open_file = None;
        }
        for command in std::mem::take(&mut self.commands) {
            if let Command::SetDarkMode(dark) = command {
                ctx.set_theme(if dark {
                    egui::Theme::Dark
                } else {
                    egui::Theme::Light
                });
            }
            self.apply(command);
        }
        if self.busy() {
            // Background threads finish without an input event; keep polling.
            ctx.request_repaint_after(std::time::Duration::from_millis(50));
        }
    }
}

impl eframe::App for WorkbenchApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.frame_ui(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.persisted);
    }

    /// A batch run still going stops gracefully (answers in flight are written) and
    /// can be resumed from the runs browser next time.
    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.batch.shutdown(std::time::Duration::from_secs(10));
    }
}

/// Keys and what they do, as the help overlay (F1) lists them.
const SHORTCUTS: &[(&str, &str)] = &[
    ("F1", "Show or hide this help (Esc closes it)"),
    ("Ctrl+S", "Save the settings being edited"),
    ("Ctrl+Shift+D", "Switch between the dark and light theme"),
    ("Up / Down", "Previous / next image in the browser"),
    ("Space", "Flicker mode: show the other image"),
    (
        "Wheel / drag",
        "Zoom toward the pointer / pan, both images together",
    ),
    ("Double-click", "Fit both images to their panes"),
    ("Enter", "In the Path field: open the typed image"),
];

/// Green that reads on both themes, for "works".
fn ok_color(ui: &egui::Ui) -> egui::Color32 {
    if ui.visuals().dark_mode {
        egui::Color32::from_rgb(110, 200, 120)
    } else {
        egui::Color32::from_rgb(20, 120, 40)
    }
}

/// `text` shortened to about `max` characters by cutting out its middle, which
/// keeps both the start and the file name of a long path readable.
fn elide(text: &str, max: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max || max < 5 {
        return text.to_string();
    }
    let head = (max - 1) / 2;
    let tail = max - 1 - head;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// The file eframe keeps the window state in: inside the workspace, so that
/// every workspace (e.g. one for screenshots) has its own.
pub const GUI_STATE_FILE: &str = "gui-state.ron";

/// Opens the main window.
pub fn run(options: LaunchOptions) -> anyhow::Result<std::process::ExitCode> {
    let workspace = options
        .workspace
        .clone()
        .unwrap_or_else(crate::workspace::default_dir);
    if let Err(e) = std::fs::create_dir_all(&workspace) {
        // The app still opens; saving settings will say what is wrong.
        tracing::warn!("cannot create the workspace {}: {e}", workspace.display());
    }
    let launch = LaunchOptions {
        workspace: Some(workspace.clone()),
        ..options
    };
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(APP_NAME)
            .with_inner_size([1440.0, 900.0])
            .with_min_inner_size([900.0, 600.0]),
        persistence_path: Some(workspace.join(GUI_STATE_FILE)),
        ..Default::default()
    };
    eframe::run_native(
        APP_NAME,
        native,
        Box::new(move |cc| Ok(Box::new(WorkbenchApp::from_creation_context(cc, launch)))),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))?;
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elide_keeps_both_ends() {
        assert_eq!(elide("short", 10), "short");
        let long = "built from /home/someone/datasets/MMAD/root";
        let e = elide(long, 21);
        assert_eq!(e.chars().count(), 21);
        assert!(
            e.starts_with("built from") && e.ends_with("MMAD/root"),
            "{e}"
        );
    }

    #[test]
    fn old_persisted_state_with_paths_still_reads() {
        // Written by the first GUI version, which kept the dataset paths here.
        let old = r#"(tab: Knowledge, dataset_path: "a/mmad.json", dataset_root: "a", knowledge_path: "k.json", dark_mode: false, selected_image: Some("x.png"))"#;
        struct Stored(&'static str);
        impl eframe::Storage for Stored {
            fn get_string(&self, _: &str) -> Option<String> {
                Some(self.0.to_string())
            }
            fn set_string(&mut self, _: &str, _: String) {}
            fn remove_string(&mut self, _: &str) {}
            fn flush(&mut self) {}
        }
        let p: Persisted =
            eframe::get_value(&Stored(old), eframe::APP_KEY).expect("old state reads");
        assert_eq!(p.tab, Tab::Knowledge);
        assert!(!p.dark_mode);
        assert_eq!(p.selected_image.as_deref(), Some("x.png"));
    }
}
