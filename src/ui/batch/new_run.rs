//! The New run form and a run going on in the background.
//!
//! The runner ([`crate::runs::runner::run`]) blocks on the app's async runtime
//! ([`crate::ui::services::runtime`]), so it gets a thread; its events go through a channel to the collector
//! thread of [`super::model::collect`], which keeps the shared [`RunModel`] current.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use eframe::egui;

use super::super::jobs::Job;
use super::BatchContext;
use super::model::{BudgetStop, LiveEvent, LiveProgress, RunModel, RunPhase, SharedRun, collect};
use crate::dataset::{MmadDataset, category_of, dataset_of};
use crate::echo::KnowledgeMode;
use crate::echo::plan::ExpertTable;
use crate::echo::preflight::InputCheck;
use crate::jobs::CancelToken;
use crate::mllm::EndpointConfig;
use crate::runs::catalog::{self, RunRow};
use crate::runs::endpoint::local_spec;
use crate::runs::export::{ExportTargets, ReportLimits, write_exports};
use crate::runs::manifest::{RunManifest, Selection};
use crate::runs::run_folder::RunFolder;
use crate::runs::runner::{
    RunControl, RunEvent, RunOutcome, RunSpec, TemplateSource, check_spec_inputs,
};
use crate::runs::select;
use crate::score::ScoreOptions;

/// Seconds per question assumed for the estimate when no earlier run of the same
/// model has measured it (a 7B vision model on one GPU, two images per question).
pub const ASSUMED_SECONDS_PER_QUESTION: f64 = 3.0;

/// What a dataset file offers to select from.
pub struct DatasetFacts {
    pub path: PathBuf,
    pub dataset: MmadDataset,
    pub datasets: Vec<String>,
    pub categories: Vec<String>,
    pub types: Vec<String>,
}

fn distinct<'a>(it: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in it {
        if !out.iter().any(|x| x == s) {
            out.push(s.to_string());
        }
    }
    out
}

/// One endpoint of the settings as the form offers it. Matched to the settings by
/// name and URL, so adding, removing or reordering endpoints in Settings never moves
/// a tick or a concurrency onto another endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointChoice {
    pub name: String,
    pub base_url: String,
    pub on: bool,
    pub concurrency: usize,
}

pub struct NewRunForm {
    initialized: bool,
    pub dataset_path: String,
    pub root: String,
    facts_job: Option<Job<DatasetFacts>>,
    pub facts: Option<Arc<DatasetFacts>>,
    pub facts_error: Option<String>,
    pub datasets: BTreeSet<String>,
    pub categories: BTreeSet<String>,
    pub types: BTreeSet<String>,
    pub limit_text: String,
    pub presets: Vec<String>,
    pub preset: String,
    pub template: TemplateSource,
    pub knowledge_mode: KnowledgeMode,
    /// Per settings endpoint, in the settings' order: used in this run, and its
    /// concurrency (kept in step with Settings by [`Self::sync_endpoints`]).
    pub endpoints: Vec<EndpointChoice>,
    /// The settings' dataset file when the form last took it, to follow a change
    /// made in Settings unless the form's own field was edited since.
    settings_dataset: PathBuf,
    pub name: String,
    pub note: String,
    pub error: Option<String>,
    /// The selection's question count, cached with the selection it was counted for.
    count: Option<(Selection, Result<usize, String>)>,
    /// The check of every selected question's plan inputs, for the form as it was
    /// when the check started (see [`InputsKey`]).
    inputs_job: Option<(InputsKey, Job<InputCheck>)>,
    inputs: Option<(InputsKey, Result<InputCheck, String>)>,
    /// The user chose to ask questions that lack an input (for the check shown).
    pub allow_missing_inputs: bool,
    pub protocol: super::protocol_form::ProtocolForm,
    /// The dataset file dialog, open on a thread of its own: the native dialog
    /// blocks its caller until closed, and the app must keep drawing meanwhile.
    browse_job: Option<Job<Option<PathBuf>>>,
    /// Why Browse gave no file, shown by the field.
    pub browse_note: Option<String>,
    /// What Browse opens (the native dialog; tests script it).
    pub pick_dataset: DatasetPicker,
    pub cost: super::cost_estimate::CostForm,
}

/// Picks a dataset file, given the folder to start in; `None` when the user
/// cancelled or no dialog can open. Called off the UI thread.
pub type DatasetPicker = Arc<dyn Fn(Option<PathBuf>) -> Option<PathBuf> + Send + Sync>;

fn native_dataset_picker() -> DatasetPicker {
    Arc::new(|start| {
        let mut dialog = rfd::FileDialog::new().add_filter("mmad.json", &["json"]);
        if let Some(dir) = start {
            dialog = dialog.set_directory(dir);
        }
        dialog.pick_file()
    })
}

/// What the input check depends on: a change of any of it checks again.
#[derive(Debug, Clone, PartialEq)]
struct InputsKey {
    /// The file the dataset was read from (not the field, which may be ahead of it).
    dataset: PathBuf,
    root: PathBuf,
    selection: Selection,
    pipeline: crate::echo::PipelineSettings,
    template: TemplateSource,
    memory: Option<PathBuf>,
    knowledge: Option<PathBuf>,
    condensed: Option<PathBuf>,
    shard: Option<crate::runs::manifest::Shard>,
}

impl InputsKey {
    fn of(spec: &RunSpec, facts: &DatasetFacts) -> InputsKey {
        InputsKey {
            dataset: facts.path.clone(),
            root: spec.root.clone(),
            selection: spec.selection.clone(),
            pipeline: spec.pipeline.clone(),
            template: spec.template,
            memory: spec.memory.clone(),
            knowledge: spec.knowledge.clone(),
            condensed: spec.condensed.clone(),
            shard: spec.shard,
        }
    }
}

impl Default for NewRunForm {
    fn default() -> Self {
        NewRunForm {
            initialized: false,
            dataset_path: String::new(),
            root: String::new(),
            facts_job: None,
            facts: None,
            facts_error: None,
            datasets: BTreeSet::new(),
            categories: BTreeSet::new(),
            types: BTreeSet::new(),
            limit_text: String::new(),
            presets: Vec::new(),
            preset: "echo".into(),
            template: TemplateSource::Similar,
            knowledge_mode: KnowledgeMode::default(),
            endpoints: Vec::new(),
            settings_dataset: PathBuf::new(),
            name: String::new(),
            note: String::new(),
            error: None,
            count: None,
            inputs_job: None,
            inputs: None,
            allow_missing_inputs: false,
            protocol: Default::default(),
            browse_job: None,
            browse_note: None,
            pick_dataset: native_dataset_picker(),
            cost: Default::default(),
        }
    }
}

impl NewRunForm {
    /// The input check for the form as it was last drawn has finished.
    pub fn inputs_checked(&self) -> bool {
        self.inputs_job.is_none() && self.inputs.is_some()
    }

    pub fn busy(&self) -> bool {
        self.facts_job.is_some() || self.inputs_job.is_some() || self.browse_job.is_some()
    }

    /// The dataset file dialog is open.
    pub fn browsing(&self) -> bool {
        self.browse_job.is_some()
    }

    fn browse(&mut self) {
        let start = Path::new(self.dataset_path.trim())
            .parent()
            .filter(|p| p.is_dir())
            .map(Path::to_path_buf);
        let pick = self.pick_dataset.clone();
        self.browse_note = None;
        self.browse_job = Some(Job::spawn("file dialog", move || Ok(pick(start))));
    }

    pub fn poll(&mut self) {
        if let Some(result) = self.browse_job.as_mut().and_then(Job::take) {
            self.browse_job = None;
            match result {
                Ok(Some(p)) => {
                    self.dataset_path = p.display().to_string();
                    if let Some(parent) = p.parent() {
                        self.root = parent.display().to_string();
                    }
                    self.load_facts();
                }
                Ok(None) => {
                    self.browse_note = Some(
                        "No file chosen (or no file dialog is available here): type the dataset file's path and press Read."
                            .into(),
                    )
                }
                Err(e) => self.browse_note = Some(e),
            }
        }
        if let Some((key, job)) = &mut self.inputs_job
            && let Some(r) = job.take()
        {
            let key = key.clone();
            self.inputs_job = None;
            let changed = self
                .inputs
                .as_ref()
                .is_none_or(|(_, old)| old.as_ref().ok() != r.as_ref().ok());
            if changed {
                // Consent was given for the questions shown, not for others.
                self.allow_missing_inputs = false;
            }
            self.inputs = Some((key, r));
        }
        if let Some(r) = self.facts_job.as_mut().and_then(Job::take) {
            self.facts_job = None;
            match r {
                Ok(f) => {
                    // Keep only choices the new file still has.
                    self.datasets.retain(|d| f.datasets.contains(d));
                    self.categories.retain(|c| f.categories.contains(c));
                    self.types.retain(|t| f.types.contains(t));
                    self.facts = Some(Arc::new(f));
                    self.facts_error = None;
                    self.count = None;
                    // The file may have changed under the same name: check again.
                    self.inputs = None;
                }
                Err(e) => {
                    self.facts = None;
                    self.facts_error = Some(e);
                }
            }
        }
    }

    /// Fills the form from the settings the first time it is shown; afterwards
    /// follows what Settings changes (endpoints always, the dataset file while the
    /// form's own field still shows the settings' one).
    fn init(&mut self, cx: &BatchContext<'_>) {
        let s = cx.settings;
        self.sync_endpoints(s);
        if self.initialized {
            let shown = PathBuf::from(self.dataset_path.trim());
            if s.dataset.mmad_json != self.settings_dataset && shown == self.settings_dataset {
                self.settings_dataset = s.dataset.mmad_json.clone();
                self.dataset_path = s.dataset.mmad_json.display().to_string();
                self.root = s.dataset.root.display().to_string();
                self.load_facts();
            }
            return;
        }
        self.initialized = true;
        self.settings_dataset = s.dataset.mmad_json.clone();
        self.dataset_path = s.dataset.mmad_json.display().to_string();
        self.root = s.dataset.root.display().to_string();
        self.preset = s.pipeline.preset.clone();
        self.knowledge_mode = s.pipeline.knowledge_mode.unwrap_or_default();
        self.template = TemplateSource::default_for(s.reference.memory.is_some());
        self.presets = match ExpertTable::load_or_bundled(s.pipeline.experts_file.as_deref()) {
            Ok(t) => t.presets.keys().cloned().collect(),
            Err(e) => {
                self.error = Some(e.to_string());
                vec![self.preset.clone()]
            }
        };
        self.load_facts();
    }

    /// One choice per settings endpoint, in the settings' order: a known endpoint
    /// keeps its choice, a new one starts ticked only if it is the active endpoint.
    pub fn sync_endpoints(&mut self, s: &crate::config::Settings) {
        let same = self.endpoints.len() == s.endpoints.len()
            && self
                .endpoints
                .iter()
                .zip(&s.endpoints)
                .all(|(c, e)| c.name == e.name && c.base_url == e.base_url);
        if same {
            return;
        }
        let first_time = self.endpoints.is_empty();
        let mut old = std::mem::take(&mut self.endpoints);
        self.endpoints = s
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let known = old
                    .iter()
                    .position(|c| c.name == e.name && c.base_url == e.base_url)
                    .or_else(|| old.iter().position(|c| c.name == e.name));
                match known {
                    Some(at) => {
                        let mut c = old.swap_remove(at);
                        c.base_url = e.base_url.clone();
                        c
                    }
                    None => EndpointChoice {
                        name: e.name.clone(),
                        base_url: e.base_url.clone(),
                        on: first_time && i == s.active_endpoint,
                        concurrency: e.max_in_flight.max(1),
                    },
                }
            })
            .collect();
    }

    fn load_facts(&mut self) {
        let path = PathBuf::from(self.dataset_path.trim());
        self.facts_job = Some(Job::spawn("read dataset", move || {
            let dataset = MmadDataset::load(&path)?;
            let keys = || dataset.entries.keys().map(String::as_str);
            let datasets = distinct(keys().map(dataset_of));
            let categories = distinct(keys().map(category_of));
            let types = distinct(dataset.questions().map(|q| q.question.qtype.as_str()));
            Ok(DatasetFacts {
                path,
                datasets,
                categories,
                types,
                dataset,
            })
        }));
    }

    pub fn selection(&self) -> Result<Selection, String> {
        let limit = match self.limit_text.trim() {
            "" => None,
            t => Some(
                t.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("the limit `{t}` is not a positive whole number"))?,
            ),
        };
        Ok(Selection {
            datasets: self.datasets.iter().cloned().collect(),
            categories: self.categories.iter().cloned().collect(),
            types: self.types.iter().cloned().collect(),
            limit,
            ..Selection::default()
        })
    }

    /// Questions the run would ask (the runner's own selection rules).
    fn question_count(&mut self) -> Option<Result<usize, String>> {
        let facts = self.facts.clone()?;
        let selection = match self.selection() {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        if let Some((s, n)) = &self.count
            && *s == selection
        {
            return Some(n.clone());
        }
        let n = select::select(&facts.dataset, &selection, None)
            .map(|q| q.len())
            .map_err(|e| e.to_string());
        self.count = Some((selection, n.clone()));
        Some(n)
    }

    fn chosen_endpoints(&self, cx: &BatchContext<'_>) -> Vec<EndpointConfig> {
        cx.settings
            .endpoints
            .iter()
            .zip(&self.endpoints)
            .filter(|(e, c)| c.on && c.name == e.name)
            .map(|(e, c)| EndpointConfig {
                max_in_flight: c.concurrency.max(1),
                ..e.clone()
            })
            .collect()
    }

    /// Draws the form; returns a run to start when Start is clicked and valid.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        cx: &BatchContext<'_>,
        runs: &[RunRow],
        run_going: bool,
    ) -> Option<RunSpec> {
        self.init(cx);
        let mut start = None;
        egui::ScrollArea::vertical().id_salt("new_run").show(ui, |ui| {
            ui.heading("New run");
            egui::Grid::new("new_run_grid")
                .num_columns(2)
                .spacing([12.0, 8.0])
                .show(ui, |ui| {
                    let label = ui.label("Dataset file");
                    ui.horizontal(|ui| {
                        let r = ui
                            .add(egui::TextEdit::singleline(&mut self.dataset_path).desired_width(520.0))
                            .labelled_by(label.id);
                        if ui.add_enabled(self.browse_job.is_none(), egui::Button::new("Browse...")).clicked() {
                            self.browse();
                        }
                        if r.lost_focus() || ui.button("Read").clicked() {
                            let changed = self
                                .facts
                                .as_ref()
                                .is_none_or(|f| f.path != Path::new(self.dataset_path.trim()));
                            if changed {
                                self.load_facts();
                            }
                        }
                        if self.facts_job.is_some() || self.browse_job.is_some() {
                            ui.spinner();
                        }
                    });
                    ui.end_row();
                    if let Some(note) = &self.browse_note {
                        ui.label("");
                        ui.weak(note.as_str());
                        ui.end_row();
                    }
                    let label = ui.label("Image root");
                    ui.add(egui::TextEdit::singleline(&mut self.root).desired_width(520.0))
                        .labelled_by(label.id)
                        .on_hover_text("The folder the dataset's image paths are relative to");
                    ui.end_row();
                    if let Some(e) = &self.facts_error {
                        ui.label("");
                        ui.colored_label(ui.visuals().error_fg_color, e);
                        ui.end_row();
                    }
                    if let Some(f) = self.facts.clone() {
                        ui.label("Datasets");
                        chips(ui, &f.datasets, &mut self.datasets);
                        ui.end_row();
                        ui.label("Categories");
                        chips(ui, &f.categories, &mut self.categories);
                        ui.end_row();
                        ui.label("Question types");
                        chips(ui, &f.types, &mut self.types);
                        ui.end_row();
                    }
                    let label = ui.label("Limit");
                    ui.horizontal(|ui| {
                        ui.add(
                            egui::TextEdit::singleline(&mut self.limit_text)
                                .desired_width(80.0)
                                .hint_text("all"),
                        )
                        .labelled_by(label.id);
                        ui.weak("first N selected questions, in file order (empty: all)");
                    });
                    ui.end_row();
                    ui.label("Preset");
                    ui.horizontal(|ui| {
                        for p in self.presets.clone() {
                            ui.selectable_value(&mut self.preset, p.clone(), p);
                        }
                    });
                    ui.end_row();
                    ui.label("Reference images");
                    ui.horizontal(|ui| {
                        for (t, text, tip) in [
                            (TemplateSource::Retrieved, "retrieved", "From the reference memory (Echo's Reference Extractor); needs a memory in Settings"),
                            (TemplateSource::Similar, "similar", "MMAD's similar_templates[0]"),
                            (TemplateSource::Random, "random", "MMAD's random_templates[0] (MMAD's plain 1-shot)"),
                            (TemplateSource::None, "none", "No reference image"),
                        ] {
                            ui.selectable_value(&mut self.template, t, text).on_hover_text(tip);
                        }
                    });
                    ui.end_row();
                    ui.label("Knowledge");
                    ui.horizontal(|ui| {
                        for (m, text) in [
                            (KnowledgeMode::Condensed, "condensed (Echo)"),
                            (KnowledgeMode::Category, "whole category (MMAD)"),
                            (KnowledgeMode::Options, "entries the options name"),
                            (KnowledgeMode::Llm, "chosen by the model"),
                            (KnowledgeMode::Off, "off"),
                        ] {
                            ui.selectable_value(&mut self.knowledge_mode, m, text);
                        }
                    });
                    ui.end_row();
                    ui.label("Endpoints");
                    ui.vertical(|ui| {
                        if cx.settings.endpoints.is_empty() {
                            ui.colored_label(ui.visuals().warn_fg_color, "No endpoint in the settings: add one in Settings.");
                        }
                        for (e, c) in cx.settings.endpoints.iter().zip(self.endpoints.iter_mut()) {
                            ui.horizontal(|ui| {
                                let shown = crate::mllm::url_without_secrets(&e.base_url);
                                ui.checkbox(&mut c.on, format!("{} ({}, {shown})", e.name, e.model));
                                let label = ui.label("concurrency");
                                ui.add(egui::DragValue::new(&mut c.concurrency).range(1..=256)).labelled_by(label.id);
                            });
                        }
                    });
                    ui.end_row();
                    self.protocol.rows(ui);
                    let label = ui.label("Run name");
                    ui.add(egui::TextEdit::singleline(&mut self.name).desired_width(300.0).hint_text("e.g. echo-qwen7b"))
                        .labelled_by(label.id);
                    ui.end_row();
                    let label = ui.label("Note");
                    ui.add(egui::TextEdit::singleline(&mut self.note).desired_width(520.0).hint_text("what this run is for"))
                        .labelled_by(label.id);
                    ui.end_row();
                });
            ui.separator();
            let endpoints = self.chosen_endpoints(cx);
            // Saturating: a hand-edited settings file may hold any count here, and
            // the runner, not this estimate, is where it is refused.
            // A local model answers one question at a time, whatever its setting.
            let in_flight = |e: &EndpointConfig| match local_spec(&e.base_url) {
                Some(_) => 1,
                None => e.max_in_flight,
            };
            let concurrency = endpoints
                .iter()
                .fold(0usize, |sum, e| sum.saturating_add(in_flight(e)));
            let local = endpoints.iter().any(|e| local_spec(&e.base_url).is_some());
            let count = self.question_count();
            let mut ready = !run_going && !endpoints.is_empty();
            match &count {
                None => {
                    ready = false;
                    ui.label("Reading the dataset...");
                }
                Some(Err(e)) => {
                    ready = false;
                    ui.colored_label(ui.visuals().error_fg_color, e);
                }
                Some(Ok(n)) => {
                    let models: Vec<&str> = endpoints.iter().map(|e| e.model.as_str()).collect();
                    let measured = runs.iter().find_map(|r| {
                        let m = r.manifest.as_ref()?;
                        let same = m.endpoints.iter().any(|e| models.contains(&e.model.as_str()));
                        let s = r.mean_latency_s?;
                        same.then(|| (s, r.name.clone()))
                    });
                    let (spq, source) = match &measured {
                        Some((s, name)) => (*s, format!("measured in run {name}")),
                        None => (ASSUMED_SECONDS_PER_QUESTION, "assumed".to_string()),
                    };
                    let secs = *n as f64 * spq / concurrency.max(1) as f64;
                    ui.label(format!(
                        "{n} questions. Estimate: {n} x {spq:.1} s per question ({source}) / {} concurrent = about {}",
                        concurrency.max(1),
                        super::human_duration(secs)
                    ));
                    if local {
                        ui.label(
                            "A local model answers one question at a time (it holds the \
                             machine's cores or its GPU); the run uses the app's loaded copy \
                             when it is the same model, and Inspect's questions take turns \
                             with the run's.",
                        );
                    }
                    ready &= self.cost.ui(ui, *n, &endpoints, runs, cx.probes);
                }
            }
            if endpoints.is_empty() {
                ui.colored_label(ui.visuals().warn_fg_color, "Choose at least one endpoint.");
            }
            if self.template == TemplateSource::Retrieved && cx.settings.reference.memory.is_none() {
                ready = false;
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    "Retrieved references need a reference memory: choose one in Settings, or pick similar, random or none.",
                );
            }
            if matches!(count, Some(Ok(_))) && !self.inputs_ui(ui, cx) {
                ready = false;
            }
            if let Err(e) = self.protocol.protocol() {
                ready = false;
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            if run_going {
                ui.colored_label(ui.visuals().warn_fg_color, "A run is going: pause or cancel it to start another.");
            }
            if let Some(e) = &self.error {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            if ui.add_enabled(ready, egui::Button::new("Start run")).clicked() {
                match self.spec(cx, endpoints) {
                    Ok(spec) => {
                        self.error = None;
                        start = Some(spec);
                    }
                    Err(e) => self.error = Some(e),
                }
            }
        });
        start
    }

    /// Checks (in the background) that every selected question has the inputs its
    /// plan reads, and shows the result; false while Start must wait: the check
    /// is still going, or it found questions without and the user has not allowed
    /// asking them.
    fn inputs_ui(&mut self, ui: &mut egui::Ui, cx: &BatchContext<'_>) -> bool {
        let (Some(facts), Ok(spec)) = (self.facts.clone(), self.spec(cx, Vec::new())) else {
            return true;
        };
        let key = InputsKey::of(&spec, &facts);
        let current = self.inputs.as_ref().filter(|(k, _)| *k == key);
        let checking = self.inputs_job.as_ref().is_some_and(|(k, _)| *k == key);
        let Some((_, result)) = current else {
            if !checking {
                self.inputs_job = Some((
                    key,
                    Job::spawn("check the run's inputs", move || {
                        Ok(check_spec_inputs(&spec, &facts.dataset)?)
                    }),
                ));
            }
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Checking that every question has its knowledge and references...");
            });
            return false;
        };
        match result {
            Err(e) => {
                ui.colored_label(
                    ui.visuals().error_fg_color,
                    format!("Cannot check the run's inputs: {e}"),
                );
                false
            }
            Ok(check) if check.is_complete() => {
                ui.weak("Every selected question has the knowledge and references its plan reads.");
                true
            }
            Ok(check) => {
                let warn = ui.visuals().warn_fg_color;
                ui.colored_label(
                    warn,
                    format!(
                        "{} questions would run without an input their plan reads:",
                        check.questions
                    ),
                );
                for gap in &check.gaps {
                    ui.colored_label(warn, format!("  - {}", gap.settings_line()));
                }
                ui.checkbox(
                    &mut self.allow_missing_inputs,
                    "Ask them anyway (the run records how many ran without)",
                );
                self.allow_missing_inputs
            }
        }
    }

    fn spec(
        &self,
        cx: &BatchContext<'_>,
        endpoints: Vec<EndpointConfig>,
    ) -> Result<RunSpec, String> {
        let selection = self.selection()?;
        let name = if self.name.trim().is_empty() {
            self.preset.clone()
        } else {
            self.name.trim().to_string()
        };
        let folder = catalog::run_folder_name(&crate::util::time::now_seconds(), &name);
        let out = catalog::runs_dir(cx.workspace).join(folder);
        let mut spec = RunSpec::new(self.dataset_path.trim(), self.root.trim(), endpoints, out);
        spec.selection = selection;
        spec.pipeline = cx.settings.pipeline.clone();
        spec.pipeline.preset = self.preset.clone();
        spec.pipeline.knowledge_mode = Some(self.knowledge_mode);
        spec.template = self.template;
        spec.memory = cx.settings.reference.memory.clone();
        spec.knowledge = cx.settings.knowledge.clone();
        spec.allow_missing_inputs = self.allow_missing_inputs;
        spec.protocol = self.protocol.protocol()?;
        spec.max_cost = self.cost.max_cost()?;
        spec.note = if self.note.trim().is_empty() {
            name
        } else {
            format!("{name}: {}", self.note.trim())
        };
        Ok(spec)
    }
}

/// Toggle buttons for a multi-select; none selected means all.
fn chips(ui: &mut egui::Ui, all: &[String], chosen: &mut BTreeSet<String>) {
    ui.horizontal_wrapped(|ui| {
        if ui.selectable_label(chosen.is_empty(), "all").clicked() {
            chosen.clear();
        }
        for item in all {
            let on = chosen.contains(item);
            if ui.selectable_label(on, item).clicked() {
                if on {
                    chosen.remove(item);
                } else {
                    chosen.insert(item.clone());
                }
            }
        }
    });
}

/// A run going on in the background.
pub struct LiveRun {
    control: RunControl,
    runner: Option<JoinHandle<()>>,
    collector: Option<JoinHandle<()>>,
    shared: SharedRun,
    pub dir: PathBuf,
}

impl LiveRun {
    /// The token that pauses the run gracefully (what a status bar's Stop cancels).
    pub fn stop_token(&self) -> CancelToken {
        self.control.stop.clone()
    }

    pub fn is_running(&self) -> bool {
        self.runner.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Pause (`abandon` false): stop asking, record what is in flight. Cancel
    /// (`abandon` true): stop now, dropping answers in flight (a resume asks them
    /// again). Either way the folder stays resumable.
    pub fn request_stop(&mut self, abandon: bool) {
        self.control.stop.cancel();
        if abandon {
            self.control.abandon.cancel();
        }
        let mut m = self.shared.lock();
        if m.phase == RunPhase::Running {
            m.phase = RunPhase::Stopping;
        }
    }

    /// Joins the threads once the runner has returned; true the first time.
    pub fn poll(&mut self) -> bool {
        if self.runner.as_ref().is_some_and(JoinHandle::is_finished) {
            if let Some(h) = self.runner.take() {
                let _ = h.join();
            }
            if let Some(h) = self.collector.take() {
                let _ = h.join();
            }
            return true;
        }
        false
    }

    /// Stops gracefully and waits up to `wait`; past that, abandons the answers in
    /// flight and waits one more second. Whatever was recorded stays recorded.
    pub fn stop_and_wait(&mut self, wait: Duration) {
        if !self.is_running() {
            self.poll();
            return;
        }
        self.request_stop(false);
        let deadline = Instant::now() + wait;
        while self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.is_running() {
            self.control.abandon.cancel();
            let deadline = Instant::now() + Duration::from_secs(1);
            while self.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.poll();
    }
}

impl Drop for LiveRun {
    /// The app may be dropped without `on_exit` (tests, a panic elsewhere): a run
    /// still going is stopped the same way.
    fn drop(&mut self) {
        if self.is_running() {
            self.stop_and_wait(Duration::from_secs(10));
        }
    }
}

fn to_live(e: RunEvent) -> LiveEvent {
    match e {
        RunEvent::Started {
            total,
            already_done,
            ..
        } => LiveEvent::Started {
            total,
            already_done,
        },
        RunEvent::Record(r) => LiveEvent::Record(r),
        RunEvent::Progress(p) => LiveEvent::Progress(LiveProgress {
            done: p.done,
            errors: p.errors,
            total: p.total,
            questions_per_s: p.questions_per_s,
            eta_s: p.eta_s,
            in_flight: p.in_flight,
        }),
        RunEvent::Finished(s) => LiveEvent::Ended {
            finished: s.outcome == RunOutcome::Finished,
            budget: if s.max_cost_reached {
                Some(BudgetStop::Cost)
            } else if s.budget_reached {
                Some(BudgetStop::Tokens)
            } else {
                None
            },
        },
    }
}

/// Starts `spec` on its own thread. With `spec.resume`, the folder's journal is
/// read first (on that thread) so the table starts from what the run already has.
pub fn start(
    spec: RunSpec,
    options: ScoreOptions,
    ctx: Option<egui::Context>,
) -> anyhow::Result<(SharedRun, LiveRun)> {
    let dir = spec.out.clone();
    let mut model = RunModel::new(dir.clone(), None, options);
    model.phase = RunPhase::Running;
    let shared = SharedRun::new(model);
    let control = RunControl::new();
    let (tx, rx) = mpsc::channel::<LiveEvent>();
    let repaint = move || {
        if let Some(c) = &ctx {
            c.request_repaint();
        }
    };
    let collector = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("run-collector".into())
            .spawn(move || collect(&shared, rx, &repaint))?
    };
    let runner = {
        let shared = shared.clone();
        let control = control.clone();
        std::thread::Builder::new()
            .name("run".into())
            .spawn(move || {
                if spec.resume
                    && let Ok(loaded) = RunModel::load(&spec.out, options)
                {
                    let mut m = shared.lock();
                    let phase = m.phase.clone();
                    *m = loaded;
                    m.phase = phase;
                }
                let events = |e: RunEvent| {
                    let started = matches!(e, RunEvent::Started { .. });
                    let _ = tx.send(to_live(e));
                    // The manifest exists once the runner has started: show what it says.
                    if started && let Ok(m) = RunManifest::load(&RunManifest::path_in(&spec.out)) {
                        shared.lock().manifest = Some(m);
                    }
                };
                let ran = crate::ui::services::runtime().and_then(|runtime| {
                    crate::runs::runner::run(&spec, &events, &control, &runtime)
                        .map_err(|e| e.to_string())
                });
                if let Err(e) = ran {
                    let _ = tx.send(LiveEvent::Failed(e));
                }
                if let Ok(m) = RunManifest::load(&RunManifest::path_in(&spec.out)) {
                    shared.lock().manifest = Some(m);
                }
            })?
    };
    Ok((
        shared.clone(),
        LiveRun {
            control,
            runner: Some(runner),
            collector: Some(collector),
            shared,
            dir,
        },
    ))
}

/// The spec that continues the run in `dir` with the settings it was started with.
/// Endpoints are matched to the settings by name (for timeouts, retries, keys'
/// variables); one no longer in the settings is rebuilt from the manifest.
/// With `retry_errors`, the journal's error records are dropped and asked again.
pub fn resume_spec(
    dir: &Path,
    cx: &BatchContext<'_>,
    retry_errors: bool,
) -> anyhow::Result<RunSpec> {
    let m = RunManifest::load(&RunManifest::path_in(dir))?;
    let mut spec = RunSpec::from_manifest(&m, &cx.settings.endpoints, dir)?;
    spec.resume = true;
    spec.retry_errors = retry_errors;
    Ok(spec)
}

/// Writes the MMAD answers JSON, the accuracy CSV and the HTML report into the
/// run's exports folder; says where.
pub fn export_run(dir: &Path, options: ScoreOptions) -> anyhow::Result<String> {
    let run = RunFolder::open(dir)?;
    let written = write_exports(
        &run,
        &ExportTargets::all_in(&run.exports_dir()),
        options,
        ReportLimits::default(),
    )?;
    let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    Ok(format!("Exported {}", names.join(", ")))
}
