//! The desktop app. It only draws state and turns clicks into [`Command`]s; loading,
//! decoding and scoring run on background threads through [`jobs::Job`].

mod batch;
pub mod browser;
pub mod compare;
mod inspect;
mod jobs;
mod knowledge_tab;
mod settings;
pub mod trace_view;

use std::path::PathBuf;
use std::sync::Arc;

use eframe::egui;

use crate::config::Settings;
use crate::dataset::{DatasetRoot, MmadDataset};
use crate::knowledge::KnowledgeBase;
use crate::memory::ReferenceMemory;
use crate::vision::ImageEmbedder;
use jobs::Job;

pub use batch::{BatchState, RunPhase};
pub use browser::{BrowserFilter, DatasetBrowser, ImageKind};
pub use compare::{CompareMode, ComparePanel, CompareView, ReferenceImage};
pub use inspect::{InspectEnv, InspectState, Slot};
pub use knowledge_tab::KnowledgeState;

pub const APP_NAME: &str = "Echo Workbench";

/// The four workspaces of the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Tab {
    #[default]
    Inspect,
    Batch,
    Knowledge,
    Settings,
}

impl Tab {
    pub const ALL: [Tab; 4] = [Tab::Inspect, Tab::Batch, Tab::Knowledge, Tab::Settings];

    pub fn label(self) -> &'static str {
        match self {
            Tab::Inspect => "Inspect",
            Tab::Batch => "Batch",
            Tab::Knowledge => "Knowledge",
            Tab::Settings => "Settings",
        }
    }
}

/// What survives a restart.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Persisted {
    pub tab: Tab,
    pub dataset_path: PathBuf,
    pub dataset_root: PathBuf,
    pub knowledge_path: PathBuf,
    pub dark_mode: bool,
    pub selected_image: Option<String>,
}

impl Default for Persisted {
    /// A fresh machine opens on the bundled sample dataset and knowledge.
    fn default() -> Self {
        let assets = crate::assets_dir();
        Persisted {
            tab: Tab::Inspect,
            dataset_path: assets.join("sample/mmad.json"),
            dataset_root: assets.join("sample"),
            knowledge_path: crate::bundled_knowledge_path(),
            dark_mode: true,
            selected_image: None,
        }
    }
}

/// Everything the UI asks the app to do; applied after the frame is drawn.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    SwitchTab(Tab),
    SelectImage(String),
    LoadDataset { path: PathBuf, root: PathBuf },
    LoadKnowledge(PathBuf),
    ScoreFile(PathBuf),
    SetDarkMode(bool),
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
    pub settings_draft: Persisted,
    pub show_help: bool,
    commands: Vec<Command>,
}

impl WorkbenchApp {
    /// The app on the default workspace (`$ECHO_WORKBENCH_HOME` or the user's data folder).
    pub fn new(persisted: Persisted) -> Self {
        Self::with_workspace(persisted, crate::workspace::default_dir())
    }

    /// Starts loading the persisted (or default) dataset and knowledge right away.
    pub fn with_workspace(persisted: Persisted, workspace: PathBuf) -> Self {
        let (settings, settings_error) = match Settings::load(&Settings::path_in(&workspace)) {
            Ok(s) => (s, None),
            Err(e) => (Settings::default(), Some(e.to_string())),
        };
        let mut app = WorkbenchApp {
            settings_draft: persisted.clone(),
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
            show_help: false,
            commands: Vec::new(),
        };
        let (path, root) = (
            app.persisted.dataset_path.clone(),
            app.persisted.dataset_root.clone(),
        );
        app.apply(Command::LoadDataset { path, root });
        app.apply(Command::LoadKnowledge(app.persisted.knowledge_path.clone()));
        if let Some(key) = app.persisted.selected_image.clone() {
            app.inspect.select(key);
        }
        app
    }

    pub fn from_creation_context(cc: &eframe::CreationContext<'_>) -> Self {
        let persisted = cc
            .storage
            .and_then(|s| eframe::get_value::<Persisted>(s, eframe::APP_KEY))
            .unwrap_or_default();
        cc.egui_ctx.set_theme(if persisted.dark_mode {
            egui::Theme::Dark
        } else {
            egui::Theme::Light
        });
        WorkbenchApp::new(persisted)
    }

    pub fn push(&mut self, command: Command) {
        self.commands.push(command);
    }

    /// Carries out one command. Long work is started here and finished by `poll`.
    pub fn apply(&mut self, command: Command) {
        match command {
            Command::SwitchTab(tab) => self.persisted.tab = tab,
            Command::SelectImage(key) => {
                self.persisted.selected_image = Some(key.clone());
                self.inspect.select(key);
            }
            Command::LoadDataset { path, root } => {
                self.persisted.dataset_path = path.clone();
                self.persisted.dataset_root = root.clone();
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
                self.persisted.knowledge_path = path.clone();
                self.knowledge_job = Some(Job::spawn("load knowledge", move || {
                    Ok(KnowledgeBase::load(&path)?)
                }));
            }
            Command::ScoreFile(path) => self.batch.start(path),
            Command::SetDarkMode(dark) => self.persisted.dark_mode = dark,
        }
    }

    /// Collects finished background work. Results replace the old value only
    /// when they arrive, so nothing flashes empty while a reload runs.
    pub fn poll(&mut self) {
        if let Some(result) = self.dataset_job.as_mut().and_then(Job::take) {
            self.dataset_job = None;
            match result {
                Ok(loaded) => {
                    // Open on something to look at rather than an empty pane.
                    let keep = self
                        .inspect
                        .selected
                        .as_ref()
                        .is_some_and(|k| loaded.dataset.entries.contains_key(k));
                    let first = loaded.dataset.entries.keys().next().cloned();
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
        let (inspect, env) = self.inspect_parts();
        inspect.poll(&env);
        self.batch.poll();
    }

    pub fn busy(&self) -> bool {
        self.dataset_job.is_some()
            || self.knowledge_job.is_some()
            || self.inspect.busy()
            || self.batch.busy()
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
        ui.horizontal(|ui| {
            match (&self.dataset, &self.dataset_error) {
                (_, Some(err)) => {
                    ui.colored_label(ui.visuals().error_fg_color, format!("Dataset: {err}"));
                }
                (Some(d), None) => {
                    ui.label(format!(
                        "Dataset: {} ({} images, {} questions)",
                        d.dataset.source.display(),
                        d.dataset.image_count(),
                        d.dataset.question_count()
                    ));
                }
                (None, None) => {
                    ui.label("Dataset: none");
                }
            }
            ui.separator();
            match (&self.knowledge, &self.knowledge_error) {
                (_, Some(err)) => {
                    ui.colored_label(ui.visuals().error_fg_color, format!("Knowledge: {err}"));
                }
                (Some(kb), None) => {
                    ui.label(format!(
                        "Knowledge: {} categories, {} entries",
                        kb.category_count(),
                        kb.entry_count()
                    ));
                }
                (None, None) => {
                    ui.label("Knowledge: none");
                }
            }
            if self.busy() {
                ui.separator();
                ui.spinner();
                let jobs: Vec<&str> = [
                    self.dataset_job.as_ref().map(|j| j.name()),
                    self.knowledge_job.as_ref().map(|j| j.name()),
                    self.inspect.busy().then_some("decode image"),
                    self.batch.busy_label(),
                ]
                .into_iter()
                .flatten()
                .collect();
                ui.label(jobs.join(", "));
            }
        });
    }

    fn help_window(&mut self, ctx: &egui::Context) {
        let mut open = self.show_help;
        egui::Window::new("Keyboard shortcuts")
            .open(&mut open)
            .resizable(false)
            .collapsible(false)
            .show(ctx, |ui| {
                egui::Grid::new("shortcuts").striped(true).show(ui, |ui| {
                    for (keys, what) in [
                        ("F1", "Show or hide this help"),
                        ("Ctrl+1 .. Ctrl+4", "Inspect, Batch, Knowledge, Settings"),
                        ("Up / Down", "Previous / next image in the browser"),
                    ] {
                        ui.monospace(keys);
                        ui.label(what);
                        ui.end_row();
                    }
                });
            });
        self.show_help = open;
    }

    fn shortcuts(&mut self, ctx: &egui::Context) {
        let (help, tab) = ctx.input(|i| {
            let tab = [
                egui::Key::Num1,
                egui::Key::Num2,
                egui::Key::Num3,
                egui::Key::Num4,
            ]
            .iter()
            .position(|k| i.modifiers.command && i.key_pressed(*k))
            .map(|n| Tab::ALL[n]);
            (i.key_pressed(egui::Key::F1), tab)
        });
        if help {
            self.show_help = !self.show_help;
        }
        if let Some(tab) = tab {
            self.push(Command::SwitchTab(tab));
        }
    }

    /// The Inspect tab with what it reads from the app (disjoint borrows).
    fn inspect_parts(&mut self) -> (&mut InspectState, InspectEnv<'_>) {
        let env = InspectEnv {
            dataset: self.dataset.as_ref(),
            dataset_error: self.dataset_error.as_deref(),
            reference: self.reference.as_ref(),
            reference_generation: self.reference_generation,
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
        self.shortcuts(&ctx);
        egui::Panel::top("top_bar").show(ui, |ui| self.top_bar(ui));
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
                    inspect_dataset: &self.persisted.dataset_path,
                };
                let cmds = self.batch.ui(ui, &cx);
                self.commands.extend(cmds);
            }
            Tab::Knowledge => self.knowledge_view.ui(
                ui,
                self.knowledge.as_ref(),
                self.knowledge_error.as_deref(),
                &self.persisted.knowledge_path,
            ),
            Tab::Settings => {
                let cmds = settings::ui(ui, &mut self.settings_draft, &self.persisted);
                self.commands.extend(cmds);
            }
        });
        self.help_window(&ctx);
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

/// Opens the main window.
pub fn run() -> anyhow::Result<std::process::ExitCode> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(APP_NAME)
            .with_inner_size([1440.0, 900.0])
            .with_min_inner_size([900.0, 600.0]),
        ..Default::default()
    };
    eframe::run_native(
        APP_NAME,
        options,
        Box::new(|cc| Ok(Box::new(WorkbenchApp::from_creation_context(cc)))),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))?;
    Ok(std::process::ExitCode::SUCCESS)
}
