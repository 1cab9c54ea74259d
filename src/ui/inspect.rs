//! Inspect: pick a part image (dataset browser, file dialog, typed path or drag and
//! drop), see it beside the most similar defect-free reference from the memory, ask
//! its questions through the Echo pipeline and watch each expert's card fill in,
//! then record a verdict.
//!
//! Nothing here waits: retrieval, decoding, pipeline runs, dialogs and verdict files
//! run on their own threads and report back through jobs and channels; results keep
//! their last value until the new one arrives, so nothing flashes empty.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use eframe::egui;
use indexmap::IndexMap;

use super::browser::DatasetBrowser;
use super::compare::{ComparePanel, ReferenceImage};
use super::jobs::Job;
use super::trace_view::{self, Outcome, QuestionRun};
use super::{Command, LoadedDataset, LoadedReference};
use crate::config::Settings;
use crate::dataset::{DatasetRoot, ImageEntry, Question, is_normal_key};
use crate::echo::pipeline::PipelineEvent;
use crate::echo::plan::ScopeMode;
use crate::echo::query::Query;
use crate::echo::reference::{Candidate, ReferenceSource};
use crate::echo::{MllmBackend, PipelineContext, PipelineError, classify_question};
use crate::jobs::CancelToken;
use crate::knowledge::KnowledgeBase;
use crate::verdicts::{ImageId, Verdict, VerdictStore};

/// What the Inspect tab reads from the app each frame.
pub struct InspectEnv<'a> {
    pub dataset: Option<&'a LoadedDataset>,
    pub dataset_error: Option<&'a str>,
    pub reference: Option<&'a LoadedReference>,
    pub reference_generation: u64,
    /// Why the reference memory failed to load or build, shown instead of the loading spinner.
    pub reference_error: Option<&'a str>,
    pub settings: &'a Settings,
    pub knowledge: Option<&'a KnowledgeBase>,
    pub workspace: &'a Path,
}

/// How an image was picked.
#[derive(Debug, Clone, PartialEq)]
enum Pick {
    Key(String),
    File(PathBuf),
}

/// The image being inspected.
#[derive(Debug, Clone)]
struct Current {
    path: PathBuf,
    key: Option<String>,
    entry: Option<ImageEntry>,
    root: Option<DatasetRoot>,
    verdict_id: ImageId,
}

impl Current {
    fn title(&self) -> String {
        match &self.key {
            Some(k) => k.clone(),
            None => self.path.display().to_string(),
        }
    }

    fn query(&self) -> Query {
        match (&self.key, &self.entry, &self.root) {
            (Some(key), Some(entry), Some(root)) => {
                Query::from_entry(root, key, entry).unwrap_or_else(|_| Query::image(&self.path))
            }
            _ => Query::image(&self.path),
        }
    }
}

/// The references found for the current image.
#[derive(Debug, Clone)]
pub struct Retrieval {
    pub image: PathBuf,
    pub candidates: Vec<Candidate>,
    pub notes: Vec<String>,
    pub embedder: String,
    /// `global`, `category washer`, or `global (category unknown)`.
    pub scope: String,
    pub ms: u64,
    target: RetrievalTarget,
}

impl Retrieval {
    /// The caption under a reference: file, score, embedder, scope.
    pub fn caption(&self, i: usize) -> String {
        let Some(c) = self.candidates.get(i) else {
            return String::new();
        };
        let score = c
            .score
            .map(|s| format!("cosine {s:.3}"))
            .unwrap_or_default();
        let rerank = c
            .rerank_score
            .map(|s| format!(", rerank {s:.3}"))
            .unwrap_or_default();
        format!(
            "{} · {score}{rerank} · {} · {} scope",
            c.rel_path, self.embedder, self.scope
        )
    }
}

/// What a retrieval was asked for; a change in any part redoes it.
#[derive(Debug, Clone, PartialEq)]
struct RetrievalTarget {
    image: PathBuf,
    generation: u64,
    scope: ScopeMode,
    category: Option<String>,
    k: usize,
}

/// Which question of the image a run answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The MMAD conversation's question at this index.
    Mmad(usize),
    /// The user's own question.
    Custom,
}

impl Slot {
    fn label(self) -> String {
        match self {
            Slot::Mmad(i) => format!("Q{}", i + 1),
            Slot::Custom => "your question".into(),
        }
    }
}

enum RunMessage {
    Started(Slot),
    Event(Slot, PipelineEvent),
    Finished(Slot, Outcome),
    AllDone,
}

struct ActiveRun {
    rx: mpsc::Receiver<RunMessage>,
    cancel: CancelToken,
    image: PathBuf,
    slots: Vec<Slot>,
    finished: usize,
    current: Option<Slot>,
}

/// Everything a background run needs, cloned out of the app.
struct RunRequest {
    settings: Settings,
    knowledge: Option<Arc<KnowledgeBase>>,
    reference: Option<LoadedReference>,
    query: Query,
    questions: Vec<(Slot, Question)>,
}

/// The user's own question and its options as typed.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomQuestion {
    pub text: String,
    pub options: String,
}

impl Default for CustomQuestion {
    fn default() -> Self {
        CustomQuestion {
            text: String::new(),
            options: "A. Yes\nB. No".into(),
        }
    }
}

/// Options typed one per line as `A. text` (also `A) text` or `A: text`).
pub fn parse_options(text: &str) -> Result<IndexMap<String, String>, String> {
    let mut options = IndexMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut chars = line.chars();
        let letter = chars.next().filter(char::is_ascii_alphabetic);
        let sep = chars.next();
        let rest = chars.as_str().trim();
        match (letter, sep) {
            (Some(l), Some('.' | ')' | ':')) if !rest.is_empty() => {
                let l = l.to_ascii_uppercase().to_string();
                if options.contains_key(&l) {
                    return Err(format!("line {}: the letter {l} is used twice", n + 1));
                }
                options.insert(l, rest.to_string());
            }
            _ => {
                return Err(format!(
                    "line {} `{line}` is not `LETTER. text` (e.g. `A. Yes`)",
                    n + 1
                ));
            }
        }
    }
    if options.len() < 2 {
        return Err("give at least two options, one per line (e.g. `A. Yes`)".into());
    }
    Ok(options)
}

/// The verdict bar's state: the store, the draft for the current image, saving and exporting.
#[derive(Default)]
struct VerdictPanel {
    loaded_for: Option<PathBuf>,
    store: Option<VerdictStore>,
    load_job: Option<Job<VerdictStore>>,
    load_error: Option<String>,
    save_job: Option<Job<()>>,
    save_again: bool,
    save_error: Option<String>,
    draft_for: Option<ImageId>,
    choice: Option<Verdict>,
    note: String,
    export_path: String,
    export_job: Option<Job<(PathBuf, usize)>>,
    export_message: Option<Result<String, String>>,
    dialog_job: Option<Job<Option<PathBuf>>>,
}

impl VerdictPanel {
    fn busy(&self) -> bool {
        self.load_job.is_some()
            || self.save_job.is_some()
            || self.export_job.is_some()
            || self.dialog_job.is_some()
    }

    fn poll(&mut self, workspace: &Path, current: Option<&ImageId>) {
        if self.loaded_for.as_deref() != Some(workspace) {
            self.loaded_for = Some(workspace.to_path_buf());
            self.export_path = workspace.join("verdicts.csv").display().to_string();
            let path = VerdictStore::path_in(workspace);
            self.load_job = Some(Job::spawn("load verdicts", move || {
                Ok(VerdictStore::load(&path)?)
            }));
        }
        if let Some(result) = self.load_job.as_mut().and_then(Job::take) {
            self.load_job = None;
            match result {
                Ok(store) => {
                    self.store = Some(store);
                    self.load_error = None;
                    self.draft_for = None;
                }
                Err(e) => self.load_error = Some(e),
            }
        }
        if let Some(result) = self.save_job.as_mut().and_then(Job::take) {
            self.save_job = None;
            self.save_error = result.err();
            if std::mem::take(&mut self.save_again) {
                self.start_save();
            }
        }
        if let Some(result) = self.export_job.as_mut().and_then(Job::take) {
            self.export_job = None;
            self.export_message =
                Some(result.map(|(p, n)| format!("Exported {n} verdict(s) to {}", p.display())));
        }
        if let Some(result) = self.dialog_job.as_mut().and_then(Job::take) {
            self.dialog_job = None;
            match result {
                Ok(Some(path)) => {
                    self.export_path = path.display().to_string();
                    self.start_export();
                }
                Ok(None) => {
                    self.export_message = Some(Err(
                        "No file chosen (or no file dialog is available here): type a path and press Export."
                            .into(),
                    ))
                }
                Err(e) => self.export_message = Some(Err(e)),
            }
        }
        // Show the saved verdict when coming back to an image.
        if let (Some(id), Some(store)) = (current, &self.store)
            && self.draft_for.as_ref() != Some(id)
        {
            self.draft_for = Some(id.clone());
            match store.get(id) {
                Some(r) => {
                    self.choice = Some(r.verdict);
                    self.note = r.note.clone();
                }
                None => {
                    self.choice = None;
                    self.note.clear();
                }
            }
        }
    }

    fn start_save(&mut self) {
        if self.save_job.is_some() {
            // One writer at a time; the newest state is written when it finishes.
            self.save_again = true;
            return;
        }
        if let Some(store) = self.store.clone() {
            self.save_job = Some(Job::spawn("save verdicts", move || Ok(store.save()?)));
        }
    }

    fn start_export(&mut self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let path = PathBuf::from(self.export_path.trim());
        if path.as_os_str().is_empty() {
            self.export_message = Some(Err("Type the path of the CSV file first.".into()));
            return;
        }
        self.export_message = None;
        self.export_job = Some(Job::spawn("export verdicts", move || {
            store.export_csv(&path)?;
            Ok((path, store.len()))
        }));
    }

    fn ui(&mut self, ui: &mut egui::Ui, current: Option<&Current>) {
        ui.horizontal_wrapped(|ui| {
            ui.strong("Verdict");
            for v in Verdict::ALL {
                let r = ui.selectable_label(self.choice == Some(v), v.label());
                // Screen readers (and tests) tell these apart from the browser's filters.
                let selected = self.choice == Some(v);
                r.widget_info(|| {
                    egui::WidgetInfo::selected(
                        egui::Role::Button,
                        true,
                        selected,
                        format!("Verdict {}", v.label()),
                    )
                });
                if r.clicked() {
                    self.choice = Some(v);
                }
            }
            let label = ui.label("Note");
            ui.add(
                egui::TextEdit::singleline(&mut self.note)
                    .desired_width(180.0)
                    .hint_text("what you saw"),
            )
            .labelled_by(label.id);
            let can_save = current.is_some() && self.choice.is_some() && self.store.is_some();
            if ui
                .add_enabled(can_save, egui::Button::new("Save verdict"))
                .on_disabled_hover_text("Pick OK, Defect or Unsure first")
                .clicked()
                && let (Some(cur), Some(choice), Some(store)) =
                    (current, self.choice, self.store.as_mut())
            {
                store.set(cur.verdict_id.clone(), &cur.path, choice, self.note.trim());
                self.save_error = None;
                self.start_save();
            }
        });
        ui.horizontal_wrapped(|ui| {
            if let Some(e) = self.load_error.as_ref().or(self.save_error.as_ref()) {
                ui.colored_label(ui.visuals().error_fg_color, e);
            } else if let (Some(cur), Some(store)) = (current, &self.store) {
                match store.get(&cur.verdict_id) {
                    Some(r) => {
                        let state = if self.save_job.is_some() {
                            "saving…"
                        } else {
                            "saved"
                        };
                        ui.weak(format!("{}: {state} {}", r.verdict.label(), r.saved_at));
                    }
                    None => {
                        ui.weak("No verdict saved for this image yet.");
                    }
                }
            } else if self.load_job.is_some() {
                ui.spinner();
            }
        });
        ui.horizontal_wrapped(|ui| {
            let have = self.store.as_ref().is_some_and(|s| !s.is_empty());
            if ui
                .add_enabled(
                    have && self.dialog_job.is_none(),
                    egui::Button::new("Export verdicts CSV…"),
                )
                .on_hover_text("Choose where to write every saved verdict as CSV")
                .clicked()
            {
                let start = PathBuf::from(self.export_path.trim());
                self.dialog_job = Some(Job::spawn("file dialog", move || {
                    let mut dialog = rfd::FileDialog::new()
                        .add_filter("CSV", &["csv"])
                        .set_file_name("verdicts.csv");
                    if let Some(dir) = start.parent().filter(|d| d.is_dir()) {
                        dialog = dialog.set_directory(dir);
                    }
                    Ok(dialog.save_file())
                }));
            }
            let label = ui.label("CSV path");
            ui.add(egui::TextEdit::singleline(&mut self.export_path).desired_width(200.0))
                .labelled_by(label.id);
            if ui
                .add_enabled(
                    have && self.export_job.is_none(),
                    egui::Button::new("Export"),
                )
                .clicked()
            {
                self.start_export();
            }
        });
        match &self.export_message {
            Some(Ok(m)) => {
                ui.colored_label(trace_view::ok_color(ui), m);
            }
            Some(Err(e)) => {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            None => {}
        }
    }
}

#[derive(Default)]
pub struct InspectState {
    /// The dataset key being inspected (`None` for a loose image).
    pub selected: Option<String>,
    pending: Option<Pick>,
    current: Option<Current>,
    pub image_error: Option<String>,
    browser: DatasetBrowser,
    compare: ComparePanel,
    size_job: Option<Job<(PathBuf, [usize; 2])>>,
    size: Option<(PathBuf, [usize; 2])>,
    retrieval_job: Option<Job<Retrieval>>,
    retrieval_target: Option<RetrievalTarget>,
    /// The last retrieval; kept while a newer one runs.
    pub retrieval: Option<Retrieval>,
    pub retrieval_error: Option<String>,
    chosen_reference: usize,
    /// The "Open" field.
    pub path_text: String,
    open_job: Option<Job<Option<PathBuf>>>,
    open_message: Option<String>,
    pub custom: CustomQuestion,
    runs: HashMap<(PathBuf, Slot), QuestionRun>,
    focused: Option<Slot>,
    active: Option<ActiveRun>,
    verdicts: VerdictPanel,
    scroll_to_trace: bool,
}

impl InspectState {
    /// Inspects a dataset entry (resolved once the dataset is loaded).
    pub fn select(&mut self, key: String) {
        if self.selected.as_deref() != Some(&key) || self.current.is_none() {
            self.selected = Some(key.clone());
            self.pending = Some(Pick::Key(key));
            self.image_error = None;
        }
    }

    /// Inspects an image file that is not (known to be) part of the dataset.
    pub fn open_file(&mut self, path: PathBuf) {
        self.selected = None;
        self.pending = Some(Pick::File(path));
        self.image_error = None;
    }

    /// Collects the widgets' finished decodes while another tab is on screen (the
    /// tab's own drawing does it otherwise).
    pub fn poll_hidden(&mut self, ctx: &egui::Context) {
        self.browser.collect_thumbnails(ctx);
        self.compare.poll(ctx);
    }

    pub fn busy(&self) -> bool {
        self.retrieval_job.is_some()
            || self.size_job.is_some()
            || self.open_job.is_some()
            || self.active.is_some()
            || self.compare.busy()
            || self.browser.busy()
            || self.verdicts.busy()
    }

    /// What Inspect is doing in the background, for the status bar: a question run
    /// with its progress and a Stop, and the image work by name.
    pub fn activities(&self) -> Vec<crate::ui::status::Activity> {
        use crate::jobs::Progress;
        use crate::ui::status::Activity;
        let mut out = Vec::new();
        if let Some(run) = &self.active {
            let total = run.slots.len().max(1);
            out.push(Activity {
                label: if total == 1 {
                    "ask the model".into()
                } else {
                    format!("ask the model ({} of {total})", run.finished + 1)
                },
                progress: Some(Progress {
                    stage: "questions",
                    done: run.finished,
                    total,
                }),
                cancel: Some(run.cancel.clone()),
            });
        }
        let named = [
            (self.retrieval_job.is_some(), "retrieve the reference"),
            (
                self.open_job.is_some() || self.size_job.is_some(),
                "read the image",
            ),
            (self.compare.busy(), "decode images"),
            (self.browser.busy(), "thumbnails"),
            (self.verdicts.busy(), "verdicts"),
        ];
        out.extend(
            named
                .into_iter()
                .filter(|(on, _)| *on)
                .map(|(_, label)| Activity::named(label)),
        );
        out
    }

    /// The image being inspected when it was opened from a file, not picked from
    /// the dataset.
    pub fn loose_file(&self) -> Option<&Path> {
        self.current
            .as_ref()
            .filter(|c| c.key.is_none())
            .map(|c| c.path.as_path())
    }

    /// True when a file (not a dataset image) is shown or about to be.
    pub fn has_loose_file(&self) -> bool {
        matches!(self.pending, Some(Pick::File(_)))
            || (self.pending.is_none() && self.loose_file().is_some())
    }

    /// The path of the image being inspected.
    pub fn current_image(&self) -> Option<&Path> {
        self.current.as_ref().map(|c| c.path.as_path())
    }

    /// The dataset key and pixel size of the query, once it is decoded and shown.
    pub fn shown_image(&self) -> Option<(&str, [usize; 2])> {
        let cur = self.current.as_ref()?;
        let (path, size) = self.size.as_ref()?;
        (self.pending.is_none() && self.compare.ready() && *path == cur.path)
            .then_some((cur.key.as_deref()?, *size))
    }

    /// True when the query and its best reference are both decoded and on screen.
    pub fn reference_shown(&self) -> bool {
        let Some(cur) = &self.current else {
            return false;
        };
        self.pending.is_none()
            && self.retrieval_job.is_none()
            && self.compare.ready()
            && self.retrieval.as_ref().is_some_and(|r| r.image == cur.path)
    }

    /// The run of a question of the current image, if it was asked.
    pub fn run(&self, slot: Slot) -> Option<&QuestionRun> {
        let cur = self.current.as_ref()?;
        self.runs.get(&(cur.path.clone(), slot))
    }

    pub fn running(&self) -> bool {
        self.active.is_some()
    }

    pub fn compare(&self) -> &ComparePanel {
        &self.compare
    }

    pub(super) fn poll(&mut self, env: &InspectEnv<'_>) {
        if let Some(pick) = self.pending.take() {
            self.resolve(pick, env);
        }
        if let Some(result) = self.size_job.as_mut().and_then(Job::take) {
            self.size_job = None;
            if let Ok(size) = result {
                self.size = Some(size);
            }
        }
        self.poll_retrieval(env);
        self.poll_runs();
        let id = self.current.as_ref().map(|c| &c.verdict_id);
        self.verdicts.poll(env.workspace, id);
        if let Some(result) = self.open_job.as_mut().and_then(Job::take) {
            self.open_job = None;
            match result {
                Ok(Some(path)) => {
                    self.path_text = path.display().to_string();
                    self.open_path(path, env.dataset, &mut Vec::new());
                }
                Ok(None) => {
                    self.open_message = Some(
                        "No file chosen (or no file dialog is available here): type the image's path and press Open."
                            .into(),
                    )
                }
                Err(e) => self.open_message = Some(e),
            }
        }
    }

    fn resolve(&mut self, pick: Pick, env: &InspectEnv<'_>) {
        let current = match pick {
            Pick::Key(key) => {
                let Some(d) = env.dataset else {
                    // Keep the request until a dataset arrives.
                    self.pending = Some(Pick::Key(key));
                    return;
                };
                let Some(entry) = d.dataset.entries.get(&key) else {
                    self.image_error = Some(format!("{key} is not in this dataset"));
                    return;
                };
                let path = match d.root.resolve(&key) {
                    Ok(p) => p,
                    Err(e) => {
                        self.image_error = Some(format!("{key}: {e}"));
                        return;
                    }
                };
                Current {
                    verdict_id: ImageId::entry(&d.dataset.source, key.clone()),
                    path,
                    key: Some(key),
                    entry: Some(entry.clone()),
                    root: Some(d.root.clone()),
                }
            }
            Pick::File(path) => Current {
                verdict_id: ImageId::file(&path),
                path,
                key: None,
                entry: None,
                root: None,
            },
        };
        let caption = current.title().to_string();
        self.compare.set_query(current.path.clone(), caption);
        let mask = match (&current.entry, &current.root, &current.key) {
            (Some(e), Some(root), Some(key)) => e.mask_file(root, key).ok().flatten(),
            _ => None,
        };
        self.compare.set_mask(mask);
        let path = current.path.clone();
        self.size_job = Some(Job::spawn("read image size", move || {
            let (w, h) = image::image_dimensions(&path)?;
            Ok((path, [w as usize, h as usize]))
        }));
        self.focused = None;
        self.image_error = None;
        self.current = Some(current);
    }

    fn poll_retrieval(&mut self, env: &InspectEnv<'_>) {
        if let Some(result) = self.retrieval_job.as_mut().and_then(Job::take) {
            self.retrieval_job = None;
            match result {
                Ok(r) if Some(&r.target) == self.retrieval_target.as_ref() => {
                    self.chosen_reference = 0;
                    self.compare
                        .set_reference(r.candidates.first().map(|c| ReferenceImage {
                            path: c.path.clone(),
                            caption: r.caption(0),
                        }));
                    self.retrieval = Some(r);
                    self.retrieval_error = None;
                }
                Ok(_) => {}
                Err(e) => self.retrieval_error = Some(e),
            }
        }
        let (Some(cur), Some(reference)) = (&self.current, env.reference) else {
            return;
        };
        let query = cur.query();
        let target = RetrievalTarget {
            image: cur.path.clone(),
            generation: env.reference_generation,
            scope: env.settings.pipeline.scope,
            category: query.category.clone(),
            k: env.settings.reference.top_k.max(1),
        };
        if self.retrieval_target.as_ref() == Some(&target) {
            return;
        }
        self.retrieval_target = Some(target.clone());
        let reference = reference.clone();
        // A newer request replaces the old job; its result is simply dropped.
        self.retrieval_job = Some(Job::spawn("find reference", move || {
            retrieve(reference, query, target)
        }));
    }

    fn poll_runs(&mut self) {
        let Some(active) = &mut self.active else {
            return;
        };
        let mut ended = false;
        loop {
            match active.rx.try_recv() {
                Ok(RunMessage::Started(slot)) => {
                    active.current = Some(slot);
                    if let Some(run) = self.runs.get_mut(&(active.image.clone(), slot)) {
                        run.started = Instant::now();
                    }
                }
                Ok(RunMessage::Event(slot, event)) => {
                    if let Some(run) = self.runs.get_mut(&(active.image.clone(), slot)) {
                        run.apply(event);
                    }
                }
                Ok(RunMessage::Finished(slot, outcome)) => {
                    active.finished += 1;
                    if let Some(run) = self.runs.get_mut(&(active.image.clone(), slot)) {
                        run.finish(outcome);
                    }
                }
                Ok(RunMessage::AllDone) | Err(mpsc::TryRecvError::Disconnected) => {
                    ended = true;
                    break;
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        if ended {
            for slot in &active.slots {
                if let Some(run) = self.runs.get_mut(&(active.image.clone(), *slot))
                    && run.is_running()
                {
                    run.finish(Outcome::Failed("the run stopped unexpectedly".into()));
                }
            }
            self.active = None;
        }
    }

    fn start_run(
        &mut self,
        ctx: &egui::Context,
        env: &InspectEnv<'_>,
        questions: Vec<(Slot, Question)>,
    ) {
        let Some(cur) = &self.current else {
            return;
        };
        if self.active.is_some() || questions.is_empty() {
            return;
        }
        for (slot, q) in &questions {
            self.runs.insert(
                (cur.path.clone(), *slot),
                QuestionRun::new(q.clone(), cur.path.clone()),
            );
        }
        self.focused = questions.first().map(|(s, _)| *s);
        self.scroll_to_trace = true;
        let (tx, rx) = mpsc::channel();
        let cancel = CancelToken::new();
        let request = RunRequest {
            settings: env.settings.clone(),
            knowledge: env.knowledge.cloned().map(Arc::new),
            reference: env.reference.cloned(),
            query: cur.query(),
            questions: questions.clone(),
        };
        self.active = Some(ActiveRun {
            rx,
            cancel: cancel.clone(),
            image: cur.path.clone(),
            slots: questions.iter().map(|(s, _)| *s).collect(),
            finished: 0,
            current: None,
        });
        let repaint = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name("inspect-run".into())
            .spawn(move || {
                let worker =
                    std::panic::AssertUnwindSafe(|| run_questions(request, &tx, &cancel, &repaint));
                if std::panic::catch_unwind(worker).is_err() {
                    tracing::error!("the Inspect run panicked");
                }
                let _ = tx.send(RunMessage::AllDone);
                repaint.request_repaint();
            });
        if let Err(e) = spawned {
            let image = cur.path.clone();
            for (slot, _) in &questions {
                if let Some(run) = self.runs.get_mut(&(image.clone(), *slot)) {
                    run.finish(Outcome::Failed(format!("cannot start a thread: {e}")));
                }
            }
            self.active = None;
        }
    }

    fn open_path(
        &mut self,
        path: PathBuf,
        dataset: Option<&LoadedDataset>,
        commands: &mut Vec<Command>,
    ) {
        self.open_message = None;
        // An image of the loaded dataset opens as its entry, with its questions.
        if let Some(d) = dataset
            && let (Ok(abs), Ok(root)) = (
                std::path::absolute(&path),
                std::path::absolute(d.root.path()),
            )
            && let Ok(rel) = abs.strip_prefix(&root)
        {
            let key = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            if d.dataset.entries.contains_key(&key) {
                commands.push(Command::SelectImage(key));
                return;
            }
        }
        self.open_file(path);
    }

    pub(super) fn ui(&mut self, ui: &mut egui::Ui, env: &InspectEnv<'_>) -> Vec<Command> {
        let mut commands = Vec::new();
        let ctx = ui.ctx().clone();
        self.compare.poll(&ctx);
        let dropped: Option<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .next()
        });
        if let Some(path) = dropped {
            self.path_text = path.display().to_string();
            self.open_path(path, env.dataset, &mut commands);
        }
        let hovering = ctx.input(|i| !i.raw.hovered_files.is_empty());

        let width = ui.available_width();
        egui::Panel::left("inspect_browser")
            .resizable(true)
            .default_size((width * 0.2).clamp(210.0, 320.0))
            // Bounded by the window, so that a size kept from a larger window never
            // squeezes the images out.
            .size_range(180.0..=(width * 0.25).max(200.0))
            .show(ui, |ui| self.left_panel(ui, env, &mut commands));
        egui::Panel::right("inspect_questions")
            .resizable(true)
            .default_size((width * 0.36).clamp(340.0, 560.0))
            .size_range(300.0..=(width * 0.4).max(320.0))
            .show(ui, |ui| self.right_panel(ui, &ctx, env));
        egui::CentralPanel::default().show(ui, |ui| self.centre(ui, env));
        if hovering {
            let rect = ctx.content_rect();
            let painter = ctx.layer_painter(egui::LayerId::new(
                egui::Order::Foreground,
                egui::Id::unique("drop_hint"),
            ));
            painter.rect_filled(rect, 0.0, egui::Color32::from_black_alpha(160));
            painter.text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                "Drop the image to inspect it",
                egui::FontId::proportional(24.0),
                egui::Color32::WHITE,
            );
        }
        commands
    }

    fn left_panel(&mut self, ui: &mut egui::Ui, env: &InspectEnv<'_>, commands: &mut Vec<Command>) {
        ui.add_space(4.0);
        ui.horizontal(|ui| {
            ui.heading("Images");
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui
                    .add_enabled(self.open_job.is_none(), egui::Button::new("Open image…"))
                    .on_hover_text("Inspect an image file from disk")
                    .clicked()
                {
                    self.open_job = Some(Job::spawn("file dialog", || {
                        Ok(rfd::FileDialog::new()
                            .add_filter(
                                "Images",
                                &["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp"],
                            )
                            .pick_file())
                    }));
                }
            });
        });
        ui.horizontal(|ui| {
            let label = ui.label("Path");
            let edit = ui
                .add(
                    egui::TextEdit::singleline(&mut self.path_text)
                        .desired_width(ui.available_width() - 52.0)
                        .hint_text("type or paste an image path"),
                )
                .labelled_by(label.id);
            let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            let text = self.path_text.trim().to_string();
            if (ui
                .add_enabled(!text.is_empty(), egui::Button::new("Open"))
                .clicked()
                || enter)
                && !text.is_empty()
            {
                self.open_path(PathBuf::from(text), env.dataset, commands);
            }
        });
        ui.weak("…or drop an image file onto the window.");
        if let Some(m) = &self.open_message {
            ui.colored_label(ui.visuals().warn_fg_color, m);
        }
        ui.separator();
        match (env.dataset, env.dataset_error) {
            (_, Some(e)) => {
                ui.colored_label(
                    ui.visuals().error_fg_color,
                    format!(
                        "The dataset could not be loaded.\n{e}\nChoose another one in Settings."
                    ),
                );
            }
            (Some(d), None) => {
                if let Some(key) = self.browser.ui(ui, d, self.selected.as_deref()) {
                    commands.push(Command::SelectImage(key));
                }
            }
            (None, None) => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Loading the dataset…");
                });
            }
        }
    }

    fn centre(&mut self, ui: &mut egui::Ui, env: &InspectEnv<'_>) {
        let Some(cur) = self.current.clone() else {
            ui.centered_and_justified(|ui| match &self.image_error {
                Some(e) => {
                    ui.colored_label(ui.visuals().error_fg_color, e);
                }
                None => {
                    ui.label(
                        "Pick an image on the left, open a file, or drop one here to inspect it.",
                    );
                }
            });
            return;
        };
        ui.horizontal(|ui| {
            ui.heading(cur.title());
            if let Some(key) = &cur.key {
                if is_normal_key(key) {
                    trace_view::badge(ui, "normal", trace_view::ok_color(ui));
                } else {
                    trace_view::badge(ui, "defect", egui::Color32::from_rgb(220, 110, 60));
                }
            } else {
                ui.weak("(not in the dataset)");
            }
        });
        for e in [self.image_error.as_deref(), self.compare.error()]
            .into_iter()
            .flatten()
        {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        egui::Panel::bottom("inspect_topk")
            .resizable(false)
            .show(ui, |ui| self.reference_strip(ui, env));
        egui::CentralPanel::default().show(ui, |ui| self.compare.ui(ui));
    }

    fn reference_strip(&mut self, ui: &mut egui::Ui, env: &InspectEnv<'_>) {
        ui.add_space(4.0);
        if env.reference.is_none() {
            if let Some(e) = env.reference_error {
                ui.colored_label(
                    ui.visuals().error_fg_color,
                    format!("Reference memory failed: {e} (fix it in Settings)"),
                );
                return;
            }
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Reference memory is loading… (see Settings for the memory in use)");
            });
            return;
        }
        if let Some(e) = &self.retrieval_error {
            ui.colored_label(ui.visuals().error_fg_color, format!("No reference: {e}"));
        }
        let loading = self.retrieval_job.is_some();
        let Some(r) = &self.retrieval else {
            if loading {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Finding the most similar defect-free image…");
                });
            }
            return;
        };
        ui.horizontal_wrapped(|ui| {
            ui.strong("Reference:");
            ui.label(r.caption(self.chosen_reference));
            if loading {
                ui.spinner();
            }
        });
        let mut pick = None;
        egui::ScrollArea::horizontal()
            .id_salt("topk")
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    ui.weak(format!("Top {}:", r.candidates.len()));
                    for (i, c) in r.candidates.iter().enumerate() {
                        let name = Path::new(&c.rel_path)
                            .iter()
                            .rev()
                            .take(3)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect::<PathBuf>();
                        let score = c.score.map(|s| format!("{s:.3}")).unwrap_or_default();
                        let text = format!("{}. {}  {score}", i + 1, name.display());
                        if ui
                            .selectable_label(i == self.chosen_reference, text)
                            .on_hover_text(r.caption(i))
                            .clicked()
                        {
                            pick = Some(i);
                        }
                    }
                });
            });
        for note in &r.notes {
            ui.weak(note);
        }
        ui.weak(format!(
            "Found in {} ms. The pipeline sends its own best match to the model; these buttons only change the view.",
            r.ms
        ));
        if let Some(i) = pick
            && let Some(c) = r.candidates.get(i)
        {
            self.compare.set_reference(Some(ReferenceImage {
                path: c.path.clone(),
                caption: r.caption(i),
            }));
            self.chosen_reference = i;
        }
    }

    fn right_panel(&mut self, ui: &mut egui::Ui, ctx: &egui::Context, env: &InspectEnv<'_>) {
        let current = self.current.clone();
        egui::Panel::bottom("inspect_verdict").show(ui, |ui| {
            ui.add_space(4.0);
            self.verdicts.ui(ui, current.as_ref());
            ui.add_space(2.0);
        });
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("inspect_right")
                .auto_shrink([false, false])
                .show(ui, |ui| {
                    let Some(cur) = current else {
                        ui.weak("Questions appear when an image is open.");
                        return;
                    };
                    self.questions(ui, ctx, env, &cur);
                });
        });
    }

    fn run_controls(&mut self, ui: &mut egui::Ui) {
        let Some(active) = &self.active else {
            return;
        };
        ui.horizontal(|ui| {
            ui.spinner();
            let n = active.slots.len();
            let now = active
                .current
                .map(Slot::label)
                .unwrap_or_else(|| "starting".into());
            if active.cancel.is_cancelled() {
                ui.label("Cancelling…");
            } else if n > 1 {
                ui.label(format!(
                    "Running {} of {n}: {now}",
                    (active.finished + 1).min(n)
                ));
            } else {
                ui.label(format!("Running {now}"));
            }
            if ui
                .add_enabled(!active.cancel.is_cancelled(), egui::Button::new("Cancel"))
                .clicked()
            {
                active.cancel.cancel();
            }
        });
        if active.slots.len() > 1 {
            ui.add(
                egui::ProgressBar::new(active.finished as f32 / active.slots.len() as f32)
                    .show_percentage(),
            );
        }
    }

    fn questions(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &egui::Context,
        env: &InspectEnv<'_>,
        cur: &Current,
    ) {
        let conversation: Vec<Question> = cur
            .entry
            .as_ref()
            .map(|e| e.conversation.clone())
            .unwrap_or_default();
        let endpoint = env.settings.active_endpoint();
        let can_run = self.active.is_none() && endpoint.is_some();
        let mut to_run: Vec<(Slot, Question)> = Vec::new();
        ui.horizontal(|ui| {
            ui.heading(format!("Questions ({})", conversation.len()));
            if !conversation.is_empty()
                && ui
                    .add_enabled(
                        can_run,
                        egui::Button::new(format!("Run all ({})", conversation.len())),
                    )
                    .on_hover_text(
                        "Ask every question in turn (Echo answers one question per call)",
                    )
                    .clicked()
            {
                to_run = conversation
                    .iter()
                    .cloned()
                    .enumerate()
                    .map(|(i, q)| (Slot::Mmad(i), q))
                    .collect();
            }
        });
        match endpoint {
            Some(e) => {
                ui.weak(format!(
                    "Model: {} at {} · preset {}",
                    e.model, e.base_url, env.settings.pipeline.preset
                ));
            }
            None => {
                ui.colored_label(
                    ui.visuals().error_fg_color,
                    "No model endpoint is configured: add one in Settings.",
                );
            }
        }
        self.run_controls(ui);
        for (i, q) in conversation.iter().enumerate() {
            let slot = Slot::Mmad(i);
            let run = self.runs.get(&(cur.path.clone(), slot));
            let focused = self.focused == Some(slot);
            let frame = egui::Frame::group(ui.style()).stroke(if focused {
                ui.visuals().selection.stroke
            } else {
                ui.visuals().widgets.noninteractive.bg_stroke
            });
            frame.show(ui, |ui| {
                ui.set_width(ui.available_width());
                ui.horizontal(|ui| {
                    ui.strong(format!("Q{}", i + 1));
                    ui.label(egui::RichText::new(q.qtype.as_str()).italics());
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        if ui
                            .add_enabled(can_run, egui::Button::new(format!("Run Q{}", i + 1)))
                            .clicked()
                        {
                            to_run = vec![(slot, q.clone())];
                        }
                        if run.is_some() && ui.selectable_label(focused, "Trace").clicked() {
                            self.focused = Some(slot);
                            self.scroll_to_trace = true;
                        }
                    });
                });
                ui.label(&q.text);
                ui.horizontal_wrapped(|ui| {
                    for (letter, text) in &q.options {
                        if *letter == q.answer {
                            ui.label(
                                egui::RichText::new(format!("{letter}. {text} (ground truth)"))
                                    .strong(),
                            );
                        } else {
                            ui.label(format!("{letter}. {text}"));
                        }
                    }
                });
                if let Some(run) = run {
                    run_summary(ui, run);
                }
            });
        }
        self.custom_question(ui, cur, can_run, &mut to_run);
        if !to_run.is_empty() {
            self.start_run(ctx, env, to_run);
        }
        if let Some(slot) = self.focused
            && let Some(run) = self.runs.get(&(cur.path.clone(), slot))
        {
            ui.add_space(6.0);
            ui.separator();
            let heading = ui.heading(format!("Trace of {}", slot.label()));
            // Bring the cards into view when a run starts or a trace is chosen.
            if std::mem::take(&mut self.scroll_to_trace) {
                heading.scroll_to_me(Some(egui::Align::TOP));
            }
            ui.label(egui::RichText::new(&run.question.text).italics());
            trace_view::run_ui(ui, run, ui.make_persistent_id(("trace", &cur.path, slot)));
        }
    }

    fn custom_question(
        &mut self,
        ui: &mut egui::Ui,
        cur: &Current,
        can_run: bool,
        to_run: &mut Vec<(Slot, Question)>,
    ) {
        // Open by default for loose images, which have no questions of their own; the
        // two cases keep their own open state.
        let loose = cur.entry.is_none();
        egui::CollapsingHeader::new(egui::RichText::new("Ask your own question").strong())
            .id_salt(("custom_question", loose))
            .default_open(loose)
            .show(ui, |ui| {
                let label = ui.label("Question");
                ui.add(
                    egui::TextEdit::multiline(&mut self.custom.text)
                        .desired_rows(2)
                        .desired_width(f32::INFINITY)
                        .hint_text("e.g. Is there a scratch on the rim?"),
                )
                .labelled_by(label.id);
                let label = ui.label("Options, one per line (A. Yes)");
                ui.add(
                    egui::TextEdit::multiline(&mut self.custom.options)
                        .desired_rows(3)
                        .desired_width(f32::INFINITY),
                )
                .labelled_by(label.id);
                let parsed = parse_options(&self.custom.options);
                let text = self.custom.text.trim().to_string();
                let question = match &parsed {
                    Ok(options) if !text.is_empty() => {
                        let (qtype, _) = classify_question(&text, options);
                        ui.weak(format!(
                            "Type: {} (classified from the text)",
                            qtype.as_str()
                        ));
                        Some(Question {
                            text: text.clone(),
                            answer: String::new(),
                            options: options.clone(),
                            qtype,
                            annotation: None,
                        })
                    }
                    Ok(_) => None,
                    Err(e) => {
                        ui.colored_label(ui.visuals().error_fg_color, e);
                        None
                    }
                };
                ui.horizontal(|ui| {
                    if ui
                        .add_enabled(
                            can_run && question.is_some(),
                            egui::Button::new("Run question"),
                        )
                        .clicked()
                        && let Some(q) = question
                    {
                        *to_run = vec![(Slot::Custom, q)];
                    }
                    if self.runs.contains_key(&(cur.path.clone(), Slot::Custom))
                        && ui
                            .selectable_label(self.focused == Some(Slot::Custom), "Trace")
                            .clicked()
                    {
                        self.focused = Some(Slot::Custom);
                        self.scroll_to_trace = true;
                    }
                });
                if let Some(run) = self.runs.get(&(cur.path.clone(), Slot::Custom)) {
                    run_summary(ui, run);
                }
            });
    }
}

/// One line under a question: its answer, or that it runs or failed.
fn run_summary(ui: &mut egui::Ui, run: &QuestionRun) {
    ui.horizontal_wrapped(|ui| match &run.outcome {
        None => {
            ui.spinner();
            ui.weak("running…");
        }
        Some(Outcome::Answered(d)) => {
            let text = match (&d.letter, &d.option_text) {
                (Some(l), Some(t)) => format!("Answered {l}. {t}"),
                (Some(l), None) => format!("Answered {l}"),
                (None, _) => "No option letter in the reply".into(),
            };
            match d.correct {
                Some(true) => trace_view::badge(ui, "correct", trace_view::ok_color(ui)),
                Some(false) => trace_view::badge(ui, "wrong", ui.visuals().error_fg_color),
                None => {}
            }
            ui.strong(text);
            ui.weak(format!("({} ms)", d.timings.total_ms));
        }
        Some(Outcome::Recorded(r)) => {
            ui.strong(format!("Answered {}", r.given));
        }
        Some(Outcome::Failed(e)) => {
            ui.colored_label(ui.visuals().error_fg_color, format!("failed: {e}"));
        }
        Some(Outcome::Cancelled) => {
            ui.colored_label(ui.visuals().warn_fg_color, "cancelled");
        }
    });
}

/// Decodes and embeds the query with the memory's embedder and searches the memory,
/// exactly as the pipeline's Reference Extractor does (same code, same scope rules).
fn retrieve(
    reference: LoadedReference,
    mut query: Query,
    target: RetrievalTarget,
) -> anyhow::Result<Retrieval> {
    let start = Instant::now();
    let (scope, scope_text) = match (target.scope, &target.category) {
        (ScopeMode::Category, Some(c)) => (ScopeMode::Category, format!("category {c}")),
        (ScopeMode::Category, None) => (ScopeMode::Global, "global (category unknown)".to_string()),
        (ScopeMode::Global, _) => (ScopeMode::Global, "global".to_string()),
    };
    query.category = target.category.clone();
    let source = ReferenceSource::Memory {
        memory: reference.memory.clone(),
        embedder: reference.embedder.clone(),
        scope,
        k: target.k,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let (_, found) = runtime
        .block_on(crate::echo::reference::find(&source, &query, 1))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Retrieval {
        image: target.image.clone(),
        candidates: found.candidates,
        notes: found.notes,
        embedder: reference.memory.embedder.clone(),
        scope: scope_text,
        ms: start.elapsed().as_millis() as u64,
        target,
    })
}

/// The background side of a run: sets up the pipeline once, then answers the
/// questions one after another, reporting every event.
fn run_questions(
    request: RunRequest,
    tx: &mpsc::Sender<RunMessage>,
    cancel: &CancelToken,
    repaint: &egui::Context,
) {
    let send = |m: RunMessage| {
        let _ = tx.send(m);
        repaint.request_repaint();
    };
    let fail_all = |message: String| {
        for (slot, _) in &request.questions {
            send(RunMessage::Finished(
                *slot,
                Outcome::Failed(message.clone()),
            ));
        }
    };
    let setup = || -> Result<(PipelineContext, MllmBackend, tokio::runtime::Runtime), String> {
        let endpoint = request
            .settings
            .active_endpoint()
            .cloned()
            .ok_or("no model endpoint is configured: add one in Settings")?;
        let mut ctx = PipelineContext::new(request.settings.pipeline.clone())
            .map_err(|e| crate::util::error::chain(&e))?;
        if let Some(kb) = &request.knowledge {
            ctx = ctx.with_knowledge(kb.clone());
        }
        let condensed = crate::bundled_knowledge_path().with_file_name("condensed.json");
        if condensed.is_file() {
            let kb = KnowledgeBase::load(&condensed).map_err(|e| {
                format!(
                    "cannot load the condensed knowledge {}: {e}",
                    condensed.display()
                )
            })?;
            ctx = ctx.with_condensed(Arc::new(kb));
        }
        if let Some(r) = &request.reference {
            ctx = ctx
                .with_memory(r.memory.clone(), r.embedder.clone())
                .map_err(|e| crate::util::error::chain(&e))?;
        }
        let backend = MllmBackend::new(endpoint).map_err(|e| crate::util::error::chain(&e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        Ok((ctx, backend, runtime))
    };
    let (ctx, backend, runtime) = match setup() {
        Ok(s) => s,
        Err(e) => return fail_all(e),
    };
    for (slot, question) in &request.questions {
        if cancel.is_cancelled() {
            send(RunMessage::Finished(*slot, Outcome::Cancelled));
            continue;
        }
        send(RunMessage::Started(*slot));
        let slot = *slot;
        let events = |e: PipelineEvent| send(RunMessage::Event(slot, e));
        let result = runtime.block_on(crate::echo::answer(
            &backend,
            &ctx,
            &request.query,
            question,
            &events,
            cancel,
        ));
        let outcome = match result {
            Ok(d) => Outcome::Answered(Box::new(d)),
            Err(PipelineError::Cancelled { .. }) => Outcome::Cancelled,
            Err(e) => Outcome::Failed(crate::util::error::chain(&e)),
        };
        send(RunMessage::Finished(slot, outcome));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_one_per_line() {
        let o = parse_options("A. Yes\n b) No \n\nc: Maybe so").unwrap();
        assert_eq!(
            o.into_iter().collect::<Vec<_>>(),
            [
                ("A".to_string(), "Yes".to_string()),
                ("B".to_string(), "No".to_string()),
                ("C".to_string(), "Maybe so".to_string()),
            ]
        );
        let e = parse_options("A. Yes\nNo").unwrap_err();
        assert!(e.contains("line 2 `No`"), "{e}");
        assert!(
            parse_options("A. Yes\na. No")
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            parse_options("A. Yes")
                .unwrap_err()
                .contains("at least two")
        );
        assert!(parse_options("A.\nB. No").is_err());
    }
}
