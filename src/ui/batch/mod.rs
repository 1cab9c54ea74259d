//! Batch: start benchmark runs and watch them fill the MMAD table, open any cell's
//! questions down to each expert's trace, browse, resume, export and compare runs,
//! and score an answers file.
//!
//! A run lives in [`BatchState`] (app state), not in the tab's drawing: it goes on
//! while other tabs are shown, and [`BatchState::shutdown`] stops it gracefully when
//! the app closes.

mod anomaly_view;
mod calibration_view;
mod chart;
mod compare_view;
mod cost_estimate;
mod drill;
mod model;
mod new_run;
mod precision;
mod protocol_form;
mod protocol_view;
mod table;
mod usage_view;

use std::path::{Path, PathBuf};
use std::time::Duration;

use eframe::egui;

use super::Command;
use super::jobs::Job;
use crate::config::Settings;
use crate::runs::catalog::{self, RunRow, TRASH_DIR, runs_dir};
use crate::score::{self, ScoreOptions, ScoreTable};

pub use compare_view::CompareState;
pub use drill::DrillState;
pub use model::{RunModel, RunPhase, SharedRun};
pub(super) use new_run::start as start_live_run;
pub use new_run::{LiveRun, NewRunForm};

pub struct ScoreResult {
    pub path: PathBuf,
    pub table: ScoreTable,
    pub journal_errors: usize,
}

/// Characters of a run's note shown in the runs table (the rest on hover).
const NOTE_CHARS: usize = 40;

/// The Batch tab's sub-views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchView {
    #[default]
    NewRun,
    Run,
    Runs,
    Compare,
    ScoreFile,
}

impl BatchView {
    pub const ALL: [BatchView; 5] = [
        BatchView::NewRun,
        BatchView::Run,
        BatchView::Runs,
        BatchView::Compare,
        BatchView::ScoreFile,
    ];

    pub fn label(self) -> &'static str {
        match self {
            BatchView::NewRun => "New run",
            BatchView::Run => "Current run",
            BatchView::Runs => "Runs",
            BatchView::Compare => "Compare",
            BatchView::ScoreFile => "Score a file",
        }
    }
}

/// What the tab needs from the rest of the app.
pub struct BatchContext<'a> {
    pub workspace: &'a Path,
    pub settings: &'a Settings,
    /// The dataset file Inspect has open (so "Open in Inspect" reloads only when needed).
    pub inspect_dataset: &'a Path,
    /// The endpoints' Test results (a token floor for cost estimates).
    pub probes: &'a crate::ui::services::EndpointProbes,
}

/// The run shown in "Current run": live (started here) or opened from its folder.
pub struct CurrentRun {
    pub shared: SharedRun,
    pub live: Option<LiveRun>,
}

/// A table re-scored in the background after the scoring options changed.
struct Rescored {
    dir: PathBuf,
    /// How many records it scored.
    records: usize,
    options: ScoreOptions,
    table: ScoreTable,
}

pub struct BatchState {
    pub view: BatchView,
    // Score a file.
    pub path_text: String,
    pub options: ScoreOptions,
    pub result: Option<ScoreResult>,
    pub error: Option<String>,
    job: Option<Job<ScoreResult>>,
    /// The Browse file dialog, open on its own thread so the UI keeps drawing.
    browse_job: Option<Job<Option<PathBuf>>>,
    /// What Browse opens: the OS file dialog (tests put a stand-in here).
    pick_answers_file: fn() -> Option<PathBuf>,
    // Runs.
    pub runs: Vec<RunRow>,
    pub runs_error: Option<String>,
    runs_job: Option<Job<Vec<RunRow>>>,
    runs_loaded: bool,
    /// A run waiting for the user to confirm its deletion.
    pub confirm_delete: Option<PathBuf>,
    /// What the last action on a run did (moved to trash, exported to ...).
    pub runs_message: Option<String>,
    runs_action: Option<Job<String>>,
    // The current run.
    pub current: Option<CurrentRun>,
    open_job: Option<Job<RunModel>>,
    rescore_job: Option<Job<Rescored>>,
    /// Scoring options of the current run's table.
    pub run_options: ScoreOptions,
    pub run_error: Option<String>,
    pub drill: DrillState,
    /// Index into [`chart::PUBLISHED`] shown beside the run's bars.
    pub published: Option<usize>,
    pub form: NewRunForm,
    pub compare: CompareState,
    /// The current run's intervals and per-category slices.
    pub precision: precision::PrecisionState,
    /// The current run's anomaly-map figures (runs that used the map).
    pub map_figures: anomaly_view::MapMetricsState,
    /// The current run's calibration and usage.
    pub calibration: calibration_view::CalibrationState,
}

impl Default for BatchState {
    fn default() -> Self {
        BatchState {
            view: BatchView::default(),
            path_text: String::new(),
            options: ScoreOptions::default(),
            result: None,
            error: None,
            job: None,
            browse_job: None,
            pick_answers_file: || {
                rfd::FileDialog::new()
                    .add_filter("Answers", &["json", "jsonl"])
                    .pick_file()
            },
            runs: Vec::new(),
            runs_error: None,
            runs_job: None,
            runs_loaded: false,
            confirm_delete: None,
            runs_message: None,
            runs_action: None,
            current: None,
            open_job: None,
            rescore_job: None,
            run_options: ScoreOptions {
                overkill_miss: true,
                ..ScoreOptions::default()
            },
            run_error: None,
            drill: DrillState::default(),
            published: Some(0),
            form: NewRunForm::default(),
            compare: CompareState::default(),
            precision: Default::default(),
            map_figures: Default::default(),
            calibration: Default::default(),
        }
    }
}

impl BatchState {
    /// Short background work is under way (the status bar shows a spinner).
    pub fn busy(&self) -> bool {
        self.job.is_some()
            || self.browse_job.is_some()
            || self.runs_job.is_some()
            || self.runs_action.is_some()
            || self.open_job.is_some()
            || self.rescore_job.is_some()
            || self.drill.busy()
            || self.compare.busy()
            || self.precision.busy()
            || self.map_figures.busy()
            || self.calibration.busy()
            || self.form.busy()
            || self.run_active()
    }

    /// What the status bar names while busy.
    pub fn busy_label(&self) -> Option<&'static str> {
        if self.run_active() {
            Some("batch run")
        } else if self.job.is_some() {
            Some("score")
        } else if self.busy() {
            Some("batch")
        } else {
            None
        }
    }

    /// A run started here is still going.
    pub fn run_active(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.live.as_ref().is_some_and(LiveRun::is_running))
    }

    pub(super) fn start(&mut self, path: PathBuf) {
        let options = self.options;
        self.job = Some(Job::spawn("score", move || {
            let loaded = score::load_answers(&path)?;
            let table = score::score(&loaded.records, options);
            Ok(ScoreResult {
                path,
                table,
                journal_errors: loaded.errors.len(),
            })
        }));
    }

    /// Stops a live run gracefully (in-flight answers are written), waiting at
    /// most `wait`. Called when the app closes.
    pub fn shutdown(&mut self, wait: Duration) {
        if let Some(live) = self.current.as_mut().and_then(|c| c.live.as_mut()) {
            live.stop_and_wait(wait);
        }
    }

    pub fn refresh_runs(&mut self, workspace: &Path) {
        let dir = runs_dir(workspace);
        let options = self.list_options();
        self.runs_job = Some(Job::spawn("list runs", move || {
            Ok(catalog::list(&dir, options)?)
        }));
        self.runs_loaded = true;
    }

    /// How the runs list scores and exports: MMAD's own table (compat or not), no
    /// extra columns, so exported CSVs have MMAD's layout.
    fn list_options(&self) -> ScoreOptions {
        ScoreOptions {
            mmad_compat: self.run_options.mmad_compat,
            ..ScoreOptions::default()
        }
    }

    /// Opens a run folder in "Current run" (unless a live run is going).
    pub fn open_run(&mut self, dir: PathBuf) {
        if self.run_active() {
            self.run_error =
                Some("A run is going; pause or cancel it before opening another.".into());
            return;
        }
        let options = self.run_options;
        self.open_job = Some(Job::spawn("open run", move || {
            RunModel::load(&dir, options)
        }));
        self.view = BatchView::Run;
        self.drill = DrillState::default();
        self.run_error = None;
    }

    pub(super) fn poll(&mut self) {
        self.precision.poll();
        self.map_figures.poll();
        self.calibration.poll();
        if let Some(result) = self.job.as_mut().and_then(Job::take) {
            self.job = None;
            match result {
                Ok(r) => {
                    self.result = Some(r);
                    self.error = None;
                }
                Err(e) => self.error = Some(e),
            }
        }
        if let Some(result) = self.browse_job.as_mut().and_then(Job::take) {
            self.browse_job = None;
            match result {
                Ok(Some(p)) => self.path_text = p.display().to_string(),
                Ok(None) => {}
                Err(e) => self.error = Some(e),
            }
        }
        if let Some(result) = self.runs_job.as_mut().and_then(Job::take) {
            self.runs_job = None;
            match result {
                Ok(rows) => {
                    self.runs = rows;
                    self.runs_error = None;
                }
                Err(e) => self.runs_error = Some(e),
            }
        }
        if let Some(result) = self.runs_action.as_mut().and_then(Job::take) {
            self.runs_action = None;
            self.runs_message = Some(result.unwrap_or_else(|e| e));
            self.runs_loaded = false;
        }
        if let Some(result) = self.open_job.as_mut().and_then(Job::take) {
            self.open_job = None;
            match result {
                Ok(model) => {
                    self.current = Some(CurrentRun {
                        shared: SharedRun::new(model),
                        live: None,
                    });
                }
                Err(e) => self.run_error = Some(e),
            }
        }
        if let Some(result) = self.rescore_job.as_mut().and_then(Job::take) {
            self.rescore_job = None;
            match result {
                Ok(done) => {
                    // Only onto the run it was made for, and only if no answer
                    // arrived meanwhile (the collector then scores with the new
                    // options itself).
                    if let Some(c) = &self.current {
                        let mut m = c.shared.lock();
                        if m.dir == done.dir
                            && m.options == done.options
                            && m.records.len() == done.records
                        {
                            m.table = done.table;
                        }
                    }
                }
                Err(e) => self.run_error = Some(e),
            }
        }
        let mut ended = false;
        if let Some(live) = self.current.as_mut().and_then(|c| c.live.as_mut()) {
            ended = live.poll();
        }
        if ended {
            // The run's folder changed: the list shows it as it now is.
            self.runs_loaded = false;
        }
        self.form.poll();
        self.compare.poll();
    }

    pub(super) fn ui(&mut self, ui: &mut egui::Ui, cx: &BatchContext<'_>) -> Vec<Command> {
        let mut commands = Vec::new();
        if !self.runs_loaded {
            self.refresh_runs(cx.workspace);
        }
        self.drill.poll(ui.ctx());
        self.compare.poll_textures(ui.ctx());
        ui.horizontal(|ui| {
            for view in BatchView::ALL {
                let mut text = egui::RichText::new(view.label());
                if view == BatchView::Run && self.run_active() {
                    text = text.strong();
                }
                if ui.selectable_label(self.view == view, text).clicked() {
                    self.view = view;
                }
            }
            if let Some(c) = &self.current {
                let m = c.shared.lock();
                if m.phase.is_active() {
                    ui.separator();
                    ui.label(format!(
                        "running: {} of {} answered",
                        m.progress.done, m.progress.total
                    ));
                }
            }
        });
        ui.separator();
        match self.view {
            BatchView::NewRun => self.new_run_ui(ui, cx),
            BatchView::Run => self.run_ui(ui, cx, &mut commands),
            BatchView::Runs => self.runs_ui(ui, cx),
            BatchView::Compare => {
                let runs = self.runs.clone();
                self.compare.ui(ui, &runs, cx, &mut commands);
            }
            BatchView::ScoreFile => self.score_file_ui(ui, &mut commands),
        }
        commands
    }

    fn new_run_ui(&mut self, ui: &mut egui::Ui, cx: &BatchContext<'_>) {
        let busy_run = self.run_active();
        if let Some(spec) = self.form.ui(ui, cx, &self.runs, busy_run) {
            match new_run::start(spec, self.run_options, Some(ui.ctx().clone())) {
                Ok((shared, live)) => {
                    self.current = Some(CurrentRun {
                        shared,
                        live: Some(live),
                    });
                    self.drill = DrillState::default();
                    self.view = BatchView::Run;
                    self.run_error = None;
                    self.runs_loaded = false;
                }
                Err(e) => self.form.error = Some(crate::util::error::chain(e.as_ref())),
            }
        }
    }

    /// Resumes the run in `dir`: its journal is loaded first, so the table starts
    /// from what it already has.
    /// With `retry_errors`, questions that ended in an error are asked again.
    pub fn resume(
        &mut self,
        dir: PathBuf,
        cx: &BatchContext<'_>,
        ctx: Option<egui::Context>,
        retry_errors: bool,
    ) {
        if self.run_active() {
            self.run_error = Some("A run is going; pause or cancel it first.".into());
            return;
        }
        let started = new_run::resume_spec(&dir, cx, retry_errors)
            .and_then(|spec| new_run::start(spec, self.run_options, ctx));
        match started {
            Ok((shared, live)) => {
                self.current = Some(CurrentRun {
                    shared,
                    live: Some(live),
                });
                self.drill = DrillState::default();
                self.view = BatchView::Run;
                self.run_error = None;
            }
            Err(e) => {
                self.run_error = Some(format!(
                    "Cannot resume {}: {}",
                    dir.display(),
                    crate::util::error::chain(e.as_ref())
                ))
            }
        }
    }

    fn run_ui(&mut self, ui: &mut egui::Ui, cx: &BatchContext<'_>, commands: &mut Vec<Command>) {
        if let Some(e) = &self.run_error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        if self.open_job.is_some() {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Reading the run...");
            });
            return;
        }
        let Some(current) = &self.current else {
            ui.label("No run yet: start one under \"New run\", or open one under \"Runs\".");
            return;
        };
        let shared = current.shared.clone();
        let mut resume_dir = None;
        let mut control = None;
        {
            let model = shared.lock();
            // Header: what this run is and what can be done with it.
            ui.horizontal(|ui| {
                let title = model
                    .dir
                    .file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned());
                ui.heading(title);
                if let Some(m) = &model.manifest
                    && !m.note.is_empty()
                {
                    ui.label(format!("\"{}\"", m.note));
                }
                match model.stopped_by {
                    Some(budget) if model.phase == RunPhase::Paused => {
                        ui.colored_label(ui.visuals().warn_fg_color, budget.explain());
                    }
                    _ => {
                        ui.label(phase_text(&model.phase));
                    }
                }
                if let Some(mixed) = model.manifest.as_ref().and_then(|m| m.mixed_settings_note())
                {
                    ui.colored_label(ui.visuals().warn_fg_color, "mixed settings")
                        .on_hover_text(mixed);
                }
                if let Some(m) = &model.manifest
                    && let Some(missing) = m.missing_inputs_note()
                {
                    let n = m.missing_inputs.as_ref().map_or(0, |c| c.questions);
                    ui.colored_label(
                        ui.visuals().warn_fg_color,
                        format!("{n} questions ran without their inputs"),
                    )
                    .on_hover_text(missing);
                }
                let live = current.live.as_ref();
                match &model.phase {
                    RunPhase::Running => {
                        if ui
                            .button("Pause")
                            .on_hover_text("Stop asking new questions; answers in flight are kept. Resume continues.")
                            .clicked()
                        {
                            control = Some(false);
                        }
                        if ui
                            .button("Cancel")
                            .on_hover_text("Stop the run; what was answered stays in its folder")
                            .clicked()
                        {
                            control = Some(true);
                        }
                    }
                    RunPhase::Stopping => {
                        ui.spinner();
                        ui.label("finishing the answers in flight...");
                    }
                    _ => {
                        let unfinished = model
                            .manifest
                            .as_ref()
                            .is_some_and(|m| model.answered_indices() < m.question_count);
                        let idle = live.is_none_or(|l| !l.is_running());
                        if unfinished && idle && ui.button("Resume").clicked() {
                            resume_dir = Some((model.dir.clone(), false));
                        }
                        if model.errors() > 0
                            && idle
                            && model.manifest.is_some()
                            && ui
                                .button("Retry errors")
                                .on_hover_text("Ask the questions that ended in an error again")
                                .clicked()
                        {
                            resume_dir = Some((model.dir.clone(), true));
                        }
                    }
                }
            });
            if let Some(m) = &model.manifest {
                ui.label(manifest_line(m));
            }
            for note in &model.notes {
                ui.colored_label(ui.visuals().warn_fg_color, note);
            }
            if let RunPhase::Failed(e) = &model.phase {
                ui.colored_label(ui.visuals().error_fg_color, format!("The run stopped: {e}"));
            }
            progress_ui(ui, &model);
        }
        if let Some(cancel) = control
            && let Some(live) = self.current.as_mut().and_then(|c| c.live.as_mut())
        {
            live.request_stop(cancel);
        }
        if let Some((dir, retry)) = resume_dir {
            self.resume(dir, cx, Some(ui.ctx().clone()), retry);
            return;
        }
        let mut model = shared.lock();
        egui::Panel::right("batch_drill")
            .resizable(true)
            .default_size(480.0)
            .min_size(320.0)
            .max_size(620.0)
            .show(ui, |ui| {
                self.drill.ui(ui, &model, cx.inspect_dataset, commands);
            });
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("run_main")
                .show(ui, |ui| {
                    ui.horizontal(|ui| {
                        let mut compat = self.run_options.mmad_compat;
                        if ui
                            .checkbox(&mut compat, "MMAD-compatible scoring")
                            .on_hover_text(
                                "Reproduce summary.py's skip of the answer after each invalid one",
                            )
                            .changed()
                        {
                            self.run_options.mmad_compat = compat;
                            self.runs_loaded = false;
                            // A live run's collector scores with these from its next
                            // answer on; the job re-scores what is here now.
                            model.options = self.run_options;
                            let records = model.records.clone();
                            let options = self.run_options;
                            let dir = model.dir.clone();
                            self.rescore_job = Some(Job::spawn("re-score", move || {
                                let table = score::score(&model::answers_of(&records), options);
                                Ok(Rescored {
                                    dir,
                                    records: records.len(),
                                    options,
                                    table,
                                })
                            }));
                        }
                        if self.rescore_job.is_some() {
                            ui.spinner();
                        }
                        ui.weak(format!(
                            "{} answers scored ({} invalid dropped{})",
                            model
                                .table
                                .counts
                                .values()
                                .map(|c| c.columns.values().map(|t| t.total).sum::<usize>())
                                .sum::<usize>(),
                            model.table.invalid,
                            if model.table.skipped > 0 {
                                format!(", {} skipped by the compat flaw", model.table.skipped)
                            } else {
                                String::new()
                            }
                        ));
                    });
                    let selected = self
                        .drill
                        .cell
                        .as_ref()
                        .map(|(r, c)| (r.as_str(), c.as_str()));
                    if let Some((r, c)) =
                        table::score_table(ui, "run_table", &model.table, selected)
                    {
                        self.drill.select_cell(r, c);
                    }
                    table::legend(ui);
                    self.precision.ui(ui, &model);
                    self.map_figures.ui(ui, &model);
                    self.calibration.ui(ui, &model);
                    ui.separator();
                    ui.strong("Accuracy per subtask");
                    chart::subtask_chart(ui, "run_chart", &model.table, &mut self.published);
                });
        });
    }

    fn runs_ui(&mut self, ui: &mut egui::Ui, cx: &BatchContext<'_>) {
        ui.horizontal(|ui| {
            ui.heading("Runs in this workspace");
            ui.label(runs_dir(cx.workspace).display().to_string());
            if ui.button("Refresh").clicked() {
                self.refresh_runs(cx.workspace);
            }
            if ui
                .checkbox(&mut self.run_options.mmad_compat, "MMAD-compatible scores")
                .on_hover_text("Score (and export) with summary.py's skip of the answer after each invalid one")
                .changed()
            {
                self.refresh_runs(cx.workspace);
            }
            if self.runs_job.is_some() || self.runs_action.is_some() {
                ui.spinner();
            }
        });
        if let Some(e) = &self.runs_error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        if let Some(m) = &self.runs_message {
            ui.label(m);
        }
        if let Some(e) = &self.run_error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        if self.runs.is_empty() && self.runs_job.is_none() {
            ui.label("No runs yet. Start one under \"New run\".");
            return;
        }
        let mut open = None;
        let mut resume = None;
        let mut export = None;
        let active = self.run_active();
        let live_dir = self
            .current
            .as_ref()
            .filter(|c| c.live.is_some())
            .map(|c| c.shared.lock().dir.clone());
        egui::ScrollArea::both()
            .id_salt("runs_list")
            .show(ui, |ui| {
                egui::Grid::new("runs_grid")
                    .striped(true)
                    .spacing([14.0, 6.0])
                    .show(ui, |ui| {
                        for h in [
                            "",
                            "Run",
                            "Note",
                            "Model",
                            "Preset",
                            "Dataset",
                            "Started",
                            "Questions",
                            "Answered",
                            "Errors",
                            "Accuracy (MMAD avg)",
                        ] {
                            ui.strong(h);
                        }
                        ui.end_row();
                        for row in &self.runs {
                            // Actions first, so they are on screen however wide the row gets.
                            ui.horizontal(|ui| {
                                let is_live = live_dir.as_ref() == Some(&row.dir) && active;
                                if named_button(ui, "Open", &row.name).clicked() {
                                    open = Some(row.dir.clone());
                                }
                                if row.unfinished()
                                    && !active
                                    && named_button(ui, "Resume", &row.name).clicked()
                                {
                                    resume = Some((row.dir.clone(), false));
                                }
                                if row.errors > 0
                                    && !active
                                    && named_button(ui, "Retry errors", &row.name).clicked()
                                {
                                    resume = Some((row.dir.clone(), true));
                                }
                                if row.manifest.is_some()
                                    && named_button(ui, "Export", &row.name).clicked()
                                {
                                    export = Some(row.dir.clone());
                                }
                                if is_live {
                                    ui.label("running");
                                } else if named_button(ui, "Delete", &row.name).clicked() {
                                    self.confirm_delete = Some(row.dir.clone());
                                }
                            });
                            ui.horizontal(|ui| {
                                ui.label(&row.name);
                                if let Some(e) = &row.error {
                                    ui.colored_label(ui.visuals().error_fg_color, "unreadable")
                                        .on_hover_text(e);
                                }
                            });
                            let m = row.manifest.as_ref();
                            let note = m.map_or("", |m| m.note.as_str());
                            // Long notes (a re-run's) would push the scores off the table.
                            if note.chars().count() > NOTE_CHARS {
                                let short: String = note.chars().take(NOTE_CHARS - 1).collect();
                                ui.label(format!("{short}…")).on_hover_text(note);
                            } else {
                                ui.label(note);
                            }
                            ui.label(row.models());
                            // The protocol beside the preset: two runs differing only by
                            // it must not look alike in the list.
                            let protocol = m.and_then(|m| m.protocol.as_ref());
                            let preset = m.map_or(String::new(), |m| m.pipeline.preset.clone());
                            match protocol.and_then(|p| p.tag().map(|t| (t, p.describe()))) {
                                Some((tag, full)) => {
                                    ui.label(format!("{preset} · {tag}")).on_hover_text(full);
                                }
                                None => {
                                    ui.label(preset);
                                }
                            }
                            ui.label(m.map_or(String::new(), |m| {
                                m.dataset
                                    .path
                                    .file_name()
                                    .map_or(String::new(), |n| n.to_string_lossy().into_owned())
                            }))
                            .on_hover_text(
                                m.map_or(String::new(), |m| m.dataset.path.display().to_string()),
                            );
                            // To the minute: the seconds and milliseconds are in the manifest.
                            let started = m.map_or("", |m| m.started_at.as_str());
                            ui.label(started.get(..16).unwrap_or(started).replace('T', " "))
                                .on_hover_text(started);
                            ui.label(row.question_count().to_string());
                            ui.label(row.answered.to_string());
                            ui.label(row.errors.to_string());
                            ui.label(row.accuracy.map_or("-".into(), |a| format!("{a:.2}")));
                            ui.end_row();
                        }
                    });
            });
        if let Some(dir) = open {
            if live_dir.as_ref() == Some(&dir) {
                self.view = BatchView::Run;
            } else {
                self.open_run(dir);
            }
        }
        if let Some((dir, retry)) = resume {
            self.resume(dir, cx, Some(ui.ctx().clone()), retry);
        }
        if let Some(dir) = export {
            let options = self.list_options();
            self.runs_action = Some(Job::spawn("export run", move || {
                new_run::export_run(&dir, options)
            }));
        }
        self.delete_dialog(ui);
    }

    fn delete_dialog(&mut self, ui: &mut egui::Ui) {
        let Some(dir) = self.confirm_delete.clone() else {
            return;
        };
        let mut close = false;
        egui::Window::new("Delete run?")
            .collapsible(false)
            .resizable(false)
            .show(ui.ctx(), |ui| {
                ui.label(format!(
                    "Move {} to the trash folder ({TRASH_DIR} inside the runs folder)? Nothing is erased; move it back to restore it.",
                    dir.display()
                ));
                ui.horizontal(|ui| {
                    if ui.button("Move to trash").clicked() {
                        let d = dir.clone();
                        self.runs_action = Some(Job::spawn("delete run", move || {
                            let to = catalog::move_to_trash(&d)?;
                            Ok(format!("Moved {} to {}", d.display(), to.display()))
                        }));
                        close = true;
                    }
                    if ui.button("Keep it").clicked() {
                        close = true;
                    }
                });
            });
        if close {
            self.confirm_delete = None;
        }
    }

    fn score_file_ui(&mut self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        ui.heading("Score answers with MMAD's metric");
        ui.label("An MMAD answers JSON (a list) or a run journal (.jsonl).");
        ui.horizontal(|ui| {
            let label = ui.label("Answers file");
            ui.add(egui::TextEdit::singleline(&mut self.path_text).desired_width(480.0))
                .labelled_by(label.id);
            if ui
                .add_enabled(self.browse_job.is_none(), egui::Button::new("Browse..."))
                .clicked()
            {
                let pick = self.pick_answers_file;
                self.browse_job = Some(Job::spawn("file dialog", move || Ok(pick())));
            }
        });
        ui.horizontal(|ui| {
            ui.checkbox(
                &mut self.options.mmad_compat,
                "MMAD-compatible (reproduce summary.py's skip)",
            );
            ui.checkbox(&mut self.options.overkill_miss, "Overkill / Miss");
            ui.checkbox(
                &mut self.options.detection_metrics,
                "Recall / Precision / F1",
            );
        });
        let can_score = !self.path_text.trim().is_empty() && self.job.is_none();
        if ui
            .add_enabled(can_score, egui::Button::new("Score"))
            .clicked()
        {
            commands.push(Command::ScoreFile(PathBuf::from(self.path_text.trim())));
        }
        if self.job.is_some() {
            ui.spinner();
        }
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        if let Some(r) = &self.result {
            ui.separator();
            ui.label(format!("{}", r.path.display()));
            ui.label(format!(
                "{} invalid answer(s) dropped, {} skipped by the MMAD-compatible flaw, {} journal error(s) excluded",
                r.table.invalid, r.table.skipped, r.journal_errors
            ));
            score_grid(ui, &r.table);
        }
    }
}

/// A short button whose accessible name also says which run it acts on.
fn named_button(ui: &mut egui::Ui, action: &str, run: &str) -> egui::Response {
    let name = format!("{action} {run}");
    let r = ui.small_button(action).on_hover_text(&name);
    r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, &name));
    r
}

fn phase_text(phase: &RunPhase) -> &'static str {
    match phase {
        RunPhase::Loaded => "(from its folder)",
        RunPhase::Running => "running",
        RunPhase::Stopping => "stopping",
        RunPhase::Paused => "paused",
        RunPhase::Finished => "finished",
        RunPhase::Failed(_) => "failed",
    }
}

fn manifest_line(m: &crate::runs::manifest::RunManifest) -> String {
    let models: Vec<&str> = m.endpoints.iter().map(|e| e.model.as_str()).collect();
    format!(
        "preset {}, references {}, model {}, dataset {}, {} questions, started {}",
        m.pipeline.preset,
        m.template,
        models.join(", "),
        m.dataset.path.display(),
        m.question_count,
        m.started_at
    ) + &m
        .protocol
        .as_ref()
        .map_or(String::new(), |p| format!(", protocol: {}", p.describe()))
}

fn progress_ui(ui: &mut egui::Ui, model: &RunModel) {
    let p = &model.progress;
    let total = p
        .total
        .max(model.manifest.as_ref().map_or(0, |m| m.question_count));
    let done = p.done.max(model.answered_indices());
    let fraction = if total == 0 {
        0.0
    } else {
        done as f32 / total as f32
    };
    ui.add(egui::ProgressBar::new(fraction).text(format!("{done} of {total} questions")));
    ui.horizontal(|ui| {
        if model.phase.is_active() {
            ui.label(format!("{:.2} questions/s", p.questions_per_s));
            ui.label(match p.eta_s {
                Some(s) => format!("about {} left", human_duration(s)),
                None => "time left: measuring".into(),
            });
            ui.label(format!("{} in flight", p.in_flight));
        }
        let errors = model.errors();
        let text = format!("{errors} error(s)");
        if errors > 0 {
            ui.colored_label(ui.visuals().error_fg_color, text);
        } else {
            ui.label(text);
        }
        if let Some(acc) = model.plain_accuracy() {
            ui.label(format!("{acc:.1}% of answers right"));
        }
    });
}

pub fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// The datasets x subtasks table as plain text cells (the score-a-file view).
pub fn score_grid(ui: &mut egui::Ui, table: &ScoreTable) {
    egui::ScrollArea::horizontal().show(ui, |ui| {
        egui::Grid::new("score_grid")
            .striped(true)
            .spacing([12.0, 4.0])
            .show(ui, |ui| {
                ui.label("");
                for c in &table.columns {
                    ui.strong(c);
                }
                ui.end_row();
                for (r, row) in table.index.iter().enumerate() {
                    ui.strong(row);
                    for (c, v) in table.values[r].iter().enumerate() {
                        let lower = matches!(table.columns[c].as_str(), "Overkill" | "Miss");
                        ui.colored_label(table::score_color(*v, lower), format!("{v:.1}"));
                    }
                    ui.end_row();
                }
            });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable;

    /// A file dialog the user takes a while to answer.
    fn slow_dialog() -> Option<PathBuf> {
        std::thread::sleep(Duration::from_millis(1500));
        Some(PathBuf::from("answers.jsonl"))
    }

    #[test]
    fn browse_keeps_the_ui_drawing_while_the_dialog_is_open() {
        let state = BatchState {
            pick_answers_file: slow_dialog,
            ..BatchState::default()
        };
        let mut h = Harness::builder().with_size([900.0, 400.0]).build_ui_state(
            |ui, s: &mut BatchState| {
                s.poll();
                let mut commands = Vec::new();
                s.score_file_ui(ui, &mut commands);
            },
            state,
        );
        h.run_steps(1);
        h.get_by_label("Browse...").click();
        let clicked = std::time::Instant::now();
        h.run_steps(2);
        // The frames after the click were drawn while the dialog was still open.
        assert!(
            clicked.elapsed() < Duration::from_millis(1000),
            "the UI waited {:?} for the dialog",
            clicked.elapsed()
        );
        assert!(h.state().browse_job.is_some());
        assert!(h.state().busy());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while h.state().path_text.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            h.run_steps(1);
        }
        assert_eq!(h.state().path_text, "answers.jsonl");
        assert!(h.state().browse_job.is_none());
    }
}
