//! Knowledge: browse and edit the knowledge base (tree, entry editor with example
//! images), see validation problems as you type, save versions with a note, diff
//! and revert them, see which questions a category reaches, preview what the
//! Knowledge Guide would send, and import or export files.
//!
//! The tab keeps its own draft of the file, so unsaved edits survive tab switches;
//! a save replaces the app's knowledge (what Inspect uses) only once it is on disk.

mod files;
mod history;
mod preview;
mod rerun;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui;

use super::jobs::Job;
use super::{Command, LoadedDataset};
use crate::curate::impact::{Impact, impact};
use crate::echo::pipeline::{PipelineContext, PipelineSettings};
use crate::knowledge::versions::{self, VersionInfo, VersionStore};
use crate::knowledge::{
    DatasetFacts, EntryText, KnowledgeBase, NORMAL_ENTRY, Problem, Severity, ValidationOptions,
    approx_tokens,
};
use crate::mllm::EndpointConfig;
use crate::vision::{DecodeLimits, decode_rgb8};

/// How often the knowledge file is checked for changes made outside the app.
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// Example images shown per category or defect.
const EXAMPLES: usize = 4;
const THUMB_PX: u32 = 112;

/// What the tab works with, lent by the app for one frame.
pub struct KnowledgeEnv<'a> {
    /// The app's knowledge (what Inspect and runs use); replaced after a save.
    pub knowledge: &'a mut Option<KnowledgeBase>,
    pub path: &'a Path,
    pub workspace: &'a Path,
    pub dataset: Option<&'a LoadedDataset>,
    pub pipeline: &'a PipelineSettings,
    /// The configured endpoints (a re-run matches its baseline's to these by name).
    pub endpoints: &'a [EndpointConfig],
}

/// Where the tree's selection is: a category, or one entry of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selection {
    pub dataset: String,
    pub category: String,
    pub entry: Option<String>,
}

impl Selection {
    fn entry(dataset: &str, category: &str, entry: &str) -> Self {
        Selection {
            dataset: dataset.into(),
            category: category.into(),
            entry: Some(entry.into()),
        }
    }

    fn category(&self) -> Selection {
        Selection {
            entry: None,
            ..self.clone()
        }
    }

    fn label(&self) -> String {
        match &self.entry {
            Some(e) => format!("{}/{}/{e}", self.dataset, self.category),
            None => format!("{}/{}", self.dataset, self.category),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    #[default]
    Edit,
    History,
    Preview,
    Files,
}

/// The file being edited: what is on disk and the draft.
pub struct Doc {
    pub path: PathBuf,
    /// The content as last loaded or saved.
    pub saved: KnowledgeBase,
    pub draft: KnowledgeBase,
    /// SHA-256 of the file's bytes as last loaded or saved.
    pub file_hash: String,
    /// [`KnowledgeBase::content_hash`] of `saved`: the version in use.
    pub saved_content_hash: String,
    /// A revision number unique across every draft of this process: bumped on every
    /// edit, and new for a draft loaded, reloaded or reverted, so that what was
    /// computed from an earlier draft (the preview) never passes for this one.
    pub rev: u64,
    pub dirty: bool,
}

impl Doc {
    fn new(path: PathBuf, kb: KnowledgeBase, file_hash: String) -> Doc {
        Doc {
            path,
            saved_content_hash: kb.content_hash(),
            draft: kb.clone(),
            saved: kb,
            file_hash,
            rev: next_revision(),
            dirty: false,
        }
    }

    fn edited(&mut self) {
        self.rev = next_revision();
        self.dirty = self.draft.to_json_string() != self.saved.to_json_string();
    }
}

fn next_revision() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The file changed on disk since it was loaded or saved.
pub struct ExternalChange {
    pub file_hash: String,
    /// The draft-to-disk diff, computed when first shown.
    diff: Option<Vec<history::DiffRow>>,
    /// The file's content now (`None` when it no longer parses or exists).
    pub disk: Option<KnowledgeBase>,
    pub error: Option<String>,
    pub show_diff: bool,
}

struct Loaded {
    kb: KnowledgeBase,
    file_hash: String,
}

fn read_knowledge(path: &Path) -> anyhow::Result<Loaded> {
    let bytes = crate::util::fsx::read_limited(path, crate::util::fsx::TEXT_FILE_LIMIT)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))?;
    Ok(Loaded {
        kb: KnowledgeBase::from_json_str(&text, path)?,
        file_hash: crate::util::fsx::sha256_bytes(&bytes),
    })
}

struct SaveDone {
    saved: versions::Saved,
    kb: KnowledgeBase,
}

enum Thumb {
    Loading(Job<(Vec<u8>, [usize; 2])>),
    Ready(egui::TextureHandle),
    Failed(String),
}

/// A text edit's buffers for the selected entry. Kept apart from the draft so that
/// typing is never re-parsed under the cursor (trailing spaces would vanish).
struct EntryEdit {
    at: Selection,
    rev: u64,
    title: String,
    description: String,
}

#[derive(Default)]
pub struct KnowledgeState {
    pub doc: Option<Doc>,
    load_job: Option<Job<Loaded>>,
    load_error: Option<String>,
    pub selected: Option<Selection>,
    /// A selection made outside the tree, to unfold there on the next frame.
    reveal: Option<Selection>,
    pub search: String,
    /// The hits of `search` on the draft of one revision: searching every entry on
    /// every frame made typing lag on a large knowledge file.
    search_hits: Option<SearchMemo>,
    pub view: View,
    // Validation, re-run whenever the draft, the budget or the dataset changes.
    pub options: ValidationOptions,
    pub problems: Vec<Problem>,
    validated: Option<(u64, usize, usize)>,
    facts: Option<(PathBuf, Arc<DatasetFacts>)>,
    facts_job: Option<(PathBuf, Job<DatasetFacts>)>,
    // Saving and versions.
    pub note: String,
    save_job: Option<Job<SaveDone>>,
    pub message: Option<(bool, String)>,
    pub versions: Vec<VersionInfo>,
    versions_error: Option<String>,
    versions_job: Option<Job<Vec<VersionInfo>>>,
    history: history::HistoryView,
    // Changes made outside the app.
    watch_job: Option<Job<Option<Loaded>>>,
    last_watch: Option<Instant>,
    pub external: Option<ExternalChange>,
    // The editor.
    edit: Option<EntryEdit>,
    thumbs: HashMap<PathBuf, Thumb>,
    confirm_delete: Option<Selection>,
    rename: Option<(Selection, String)>,
    new_entry: String,
    new_category: String,
    new_category_dataset: String,
    // Impact: the pipeline context is built once per settings (it reads prompt files).
    ctx: Option<(PipelineSettings, Arc<PipelineContext>)>,
    ctx_job: Option<(PipelineSettings, Job<PipelineContext>)>,
    ctx_error: Option<String>,
    /// Computed once per selection, draft revision and dataset (by its file and its
    /// number of images), not on every frame.
    impact: Option<(ImpactKey, Arc<Impact>)>,
    preview: preview::PreviewView,
    files: files::FilesView,
    pub rerun: rerun::RerunView,
    /// Asked of the app by this frame's drawing.
    commands: Vec<Command>,
}

impl std::fmt::Debug for KnowledgeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnowledgeState")
            .field("path", &self.doc.as_ref().map(|d| &d.path))
            .field("selected", &self.selected)
            .field("view", &self.view)
            .finish()
    }
}

impl KnowledgeState {
    /// True while the tab waits for background work.
    pub fn busy(&self) -> bool {
        self.load_job.is_some()
            || self.save_job.is_some()
            || self.versions_job.is_some()
            || self.watch_job.is_some()
            || self.facts_job.is_some()
            || self.ctx_job.is_some()
            || self.thumbs.values().any(|t| matches!(t, Thumb::Loading(_)))
            || self.history.busy()
            || self.preview.busy()
            || self.files.busy()
            || self.rerun.busy()
    }

    /// The status bar's row for a re-run going on.
    pub fn activity(&self) -> Option<crate::ui::status::Activity> {
        self.rerun.activity()
    }

    /// The draft has edits that are not saved.
    pub fn dirty(&self) -> bool {
        self.doc.as_ref().is_some_and(|d| d.dirty)
    }

    /// Versions as last read from the index, oldest first.
    pub fn versions(&self) -> &[VersionInfo] {
        &self.versions
    }

    pub(super) fn ui(&mut self, ui: &mut egui::Ui, mut env: KnowledgeEnv<'_>) -> Vec<Command> {
        let ctx = ui.ctx().clone();
        self.poll(&ctx, &mut env);
        if self.busy() {
            ui.ctx().request_repaint_after(Duration::from_millis(50));
        } else {
            ui.ctx().request_repaint_after(WATCH_EVERY);
        }
        if self.doc.is_none() {
            ui.centered_and_justified(|ui| match &self.load_error {
                Some(e) => {
                    ui.colored_label(
                        ui.visuals().error_fg_color,
                        format!(
                            "Knowledge could not be loaded: {e}\nChoose another file in Settings."
                        ),
                    );
                }
                None => {
                    ui.spinner();
                }
            });
            return std::mem::take(&mut self.commands);
        }
        egui::Panel::left("knowledge_tree")
            .resizable(true)
            .default_size(260.0)
            .show(ui, |ui| self.tree_panel(ui));
        egui::Panel::right("knowledge_problems")
            .resizable(true)
            .default_size(300.0)
            .show(ui, |ui| self.problems_panel(ui));
        egui::CentralPanel::default().show(ui, |ui| {
            self.header(ui, &mut env);
            ui.separator();
            match self.view {
                View::Edit => self.editor(ui, &env),
                View::History => history::ui(self, ui, &env),
                View::Preview => preview::ui(self, ui, &env),
                View::Files => files::ui(self, ui, &env),
            }
        });
        self.delete_dialog(ui.ctx());
        std::mem::take(&mut self.commands)
    }

    /// Collects background results and starts what the current state needs.
    fn poll(&mut self, ctx: &egui::Context, env: &mut KnowledgeEnv<'_>) {
        // The file to edit: the app's knowledge path. A new path opens it, unless
        // the draft has unsaved edits (the header offers to discard them).
        let wants_load = match &self.doc {
            None => self.load_error.is_none(),
            Some(d) => d.path != env.path && !d.dirty,
        };
        if wants_load && self.load_job.is_none() {
            self.start_load(env.path);
        }
        if let Some(result) = self.load_job.as_mut().and_then(Job::take) {
            self.load_job = None;
            match result {
                Ok(l) => {
                    self.doc = Some(Doc::new(env.path.to_path_buf(), l.kb, l.file_hash));
                    self.after_replace();
                    self.load_error = None;
                    self.external = None;
                    self.start_versions(env.workspace);
                }
                Err(e) => self.load_error = Some(e),
            }
        }
        // Dataset facts, once per loaded dataset.
        let ds_source = env.dataset.map(|d| d.dataset.source.clone());
        let have = self.facts.as_ref().map(|(p, _)| p.clone());
        let pending = self.facts_job.as_ref().map(|(p, _)| p.clone());
        if let (Some(src), Some(d)) = (&ds_source, env.dataset)
            && have.as_ref() != Some(src)
            && pending.as_ref() != Some(src)
        {
            let dataset = d.dataset.clone();
            self.facts_job = Some((
                src.clone(),
                Job::spawn("index dataset for knowledge", move || {
                    Ok(DatasetFacts::from_dataset(&dataset))
                }),
            ));
        }
        if ds_source.is_none() {
            self.facts = None;
        }
        if let Some((src, job)) = &mut self.facts_job
            && let Some(result) = job.take()
        {
            let src = src.clone();
            self.facts_job = None;
            match result {
                Ok(f) => self.facts = Some((src, Arc::new(f))),
                Err(e) => self.message = Some((true, format!("Dataset index failed: {e}"))),
            }
        }
        // The pipeline context for impact counts.
        let settings = env.pipeline.clone();
        let stale = self.ctx.as_ref().map(|(s, _)| s) != Some(&settings);
        let building = self.ctx_job.as_ref().map(|(s, _)| s) == Some(&settings);
        if stale && !building {
            let s = settings.clone();
            self.ctx_job = Some((
                settings,
                Job::spawn("load experts table", move || Ok(PipelineContext::new(s)?)),
            ));
        }
        if let Some((s, job)) = &mut self.ctx_job
            && let Some(result) = job.take()
        {
            let s = s.clone();
            self.ctx_job = None;
            match result {
                Ok(c) => {
                    self.ctx = Some((s, Arc::new(c)));
                    self.ctx_error = None;
                    self.impact = None;
                }
                Err(e) => self.ctx_error = Some(e),
            }
        }
        self.poll_save(env);
        if let Some(result) = self.versions_job.as_mut().and_then(Job::take) {
            self.versions_job = None;
            match result {
                Ok(v) => {
                    self.versions = v;
                    self.versions_error = None;
                }
                Err(e) => self.versions_error = Some(e),
            }
        }
        self.poll_watch();
        self.poll_thumbs(ctx);
        self.validate();
        history::poll(self);
        preview::poll(self);
        files::poll(self);
        rerun::poll(self);
    }

    fn start_load(&mut self, path: &Path) {
        let p = path.to_path_buf();
        self.load_job = Some(Job::spawn("load knowledge", move || read_knowledge(&p)));
    }

    fn start_versions(&mut self, workspace: &Path) {
        let store = VersionStore::in_workspace(workspace);
        self.versions_job = Some(Job::spawn("read knowledge versions", move || {
            Ok(store.list()?)
        }));
    }

    /// Resets what depends on the draft's content after it was replaced wholesale.
    fn after_replace(&mut self) {
        self.edit = None;
        self.validated = None;
        self.impact = None;
        if let (Some(sel), Some(doc)) = (&self.selected, &self.doc)
            && !exists(&doc.draft, sel)
        {
            self.selected = None;
        }
        if self.selected.is_none()
            && let Some(doc) = &self.doc
        {
            self.selected = first_entry(&doc.draft);
        }
    }

    /// Replaces the draft (import, revert) keeping the file's baseline.
    fn replace_draft(&mut self, kb: KnowledgeBase) {
        if let Some(doc) = &mut self.doc {
            doc.draft = kb;
            doc.edited();
        }
        self.after_replace();
    }

    /// Saves the draft with the note; `overwrite` skips the changed-on-disk check.
    fn start_save(&mut self, workspace: &Path, overwrite: bool) {
        let Some(doc) = &self.doc else { return };
        let kb = doc.draft.clone();
        let path = doc.path.clone();
        let expected = (!overwrite).then(|| doc.file_hash.clone());
        let note = self.note.clone();
        let store = VersionStore::in_workspace(workspace);
        self.save_job = Some(Job::spawn("save knowledge", move || {
            let saved = store.save(&kb, &path, &note, expected.as_deref(), None)?;
            Ok(SaveDone { saved, kb })
        }));
    }

    fn start_revert(&mut self, workspace: &Path, number: u32) {
        let Some(doc) = &self.doc else { return };
        let path = doc.path.clone();
        let expected = doc.file_hash.clone();
        let store = VersionStore::in_workspace(workspace);
        self.save_job = Some(Job::spawn("revert knowledge", move || {
            let (kb, saved) = store.revert(number, &path, Some(&expected))?;
            Ok(SaveDone { saved, kb })
        }));
    }

    fn poll_save(&mut self, env: &mut KnowledgeEnv<'_>) {
        let Some(result) = self.save_job.as_mut().and_then(Job::take) else {
            return;
        };
        self.save_job = None;
        match result {
            Ok(done) => {
                let v = &done.saved.version;
                self.message = Some((
                    false,
                    format!(
                        "Saved as version {} ({}) to {}",
                        v.number,
                        v.hash8(),
                        v.saved_to.display()
                    ),
                ));
                let reverted = v.reverted_from.is_some();
                let path = self
                    .doc
                    .as_ref()
                    .map(|d| d.path.clone())
                    .unwrap_or_default();
                let mut doc = Doc::new(path, done.kb.clone(), done.saved.file_hash.clone());
                if !reverted && let Some(old) = self.doc.take() {
                    // Edits made while the save ran stay in the draft.
                    doc.draft = old.draft;
                    doc.rev = old.rev;
                    doc.edited();
                }
                self.doc = Some(doc);
                if reverted {
                    self.after_replace();
                }
                self.note.clear();
                self.external = None;
                *env.knowledge = Some(done.kb);
                self.start_versions(env.workspace);
            }
            Err(e) => {
                if e.contains("was changed outside the app") {
                    // Show the banner at once rather than on the next poll.
                    self.last_watch = None;
                }
                self.message = Some((true, format!("Not saved: {e}")));
            }
        }
    }

    fn poll_watch(&mut self) {
        if let Some(result) = self.watch_job.as_mut().and_then(Job::take) {
            self.watch_job = None;
            let Some(doc) = &self.doc else { return };
            match result {
                Ok(None) => {}
                Ok(Some(l)) if l.file_hash == doc.file_hash => self.external = None,
                Ok(Some(l)) => {
                    let known = self
                        .external
                        .as_ref()
                        .is_some_and(|x| x.file_hash == l.file_hash);
                    if !known {
                        self.external = Some(ExternalChange {
                            diff: None,
                            file_hash: l.file_hash,
                            disk: Some(l.kb),
                            error: None,
                            show_diff: false,
                        });
                    }
                }
                Err(e) => {
                    let hash = format!("error:{e}");
                    if self.external.as_ref().map(|x| &x.file_hash) != Some(&hash) {
                        self.external = Some(ExternalChange {
                            diff: None,
                            file_hash: hash,
                            disk: None,
                            error: Some(e),
                            show_diff: false,
                        });
                    }
                }
            }
        }
        let due = self.last_watch.is_none_or(|t| t.elapsed() >= WATCH_EVERY);
        if due
            && self.watch_job.is_none()
            && self.save_job.is_none()
            && self.load_job.is_none()
            && let Some(doc) = &self.doc
        {
            self.last_watch = Some(Instant::now());
            let path = doc.path.clone();
            let known = doc.file_hash.clone();
            self.watch_job = Some(Job::spawn("watch knowledge file", move || {
                // Hash first; parse only when the bytes differ.
                let hash = versions::file_hash(&path)?;
                if hash == known {
                    return Ok(None);
                }
                read_knowledge(&path).map(Some)
            }));
        }
    }

    /// Re-validates when the draft, the budget or the dataset changed.
    fn validate(&mut self) {
        let Some(doc) = &self.doc else { return };
        let facts = self.facts.as_ref().map(|(_, f)| f.clone());
        let key = (
            doc.rev,
            self.options.token_budget,
            facts.as_ref().map_or(0, |f| Arc::as_ptr(f) as usize),
        );
        if self.validated == Some(key) {
            return;
        }
        self.problems = doc.draft.validate_with(&self.options, facts.as_deref());
        self.validated = Some(key);
    }

    fn header(&mut self, ui: &mut egui::Ui, env: &mut KnowledgeEnv<'_>) {
        let Some(doc) = &self.doc else { return };
        let in_use = doc.saved_content_hash.clone();
        let version = self
            .versions
            .iter()
            .rev()
            .find(|v| v.content_hash == in_use && v.saved_to == doc.path)
            .map(|v| v.number);
        let (path, dirty) = (doc.path.clone(), doc.dirty);
        ui.horizontal_wrapped(|ui| {
            ui.label(egui::RichText::new(path.display().to_string()).monospace());
            ui.separator();
            let text = match version {
                Some(n) => format!("Version in use: {} (v{n:04})", &in_use[..8]),
                None => format!("Version in use: {} (not saved from here yet)", &in_use[..8]),
            };
            ui.label(text).on_hover_text(format!(
                "Content hash {in_use}\nRun manifests record this hash as the knowledge version."
            ));
            if dirty {
                ui.colored_label(ui.visuals().warn_fg_color, "Unsaved changes");
            }
        });
        if path != env.path {
            ui.horizontal_wrapped(|ui| {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    format!(
                        "The app now uses {}; your unsaved edits to this file are kept until you save or discard them.",
                        env.path.display()
                    ),
                );
                if ui.button("Discard my edits and open it").clicked() {
                    self.doc = None;
                    self.start_load(env.path);
                }
            });
        }
        self.external_banner(ui, env);
        ui.horizontal(|ui| {
            let label = ui.label("Note");
            ui.add(
                egui::TextEdit::singleline(&mut self.note)
                    .hint_text("what changed and why")
                    .desired_width(260.0),
            )
            .labelled_by(label.id);
            let dirty = self.doc.as_ref().is_some_and(|d| d.dirty);
            let can_save = dirty && self.save_job.is_none() && self.external.is_none();
            let save = ui
                .add_enabled(can_save, egui::Button::new("Save"))
                .on_hover_text("Write the file and keep this content as a new version")
                .on_disabled_hover_text(if self.external.is_some() {
                    "The file changed on disk: choose in the banner above"
                } else {
                    "Nothing to save"
                });
            let shortcut = ui.input_mut(|i| i.consume_key(egui::Modifiers::COMMAND, egui::Key::S));
            if (save.clicked() || shortcut) && can_save {
                self.start_save(env.workspace, false);
            }
            if self.save_job.is_some() {
                ui.spinner();
            }
            if dirty && ui.button("Discard edits").clicked() {
                if let Some(doc) = &mut self.doc {
                    doc.draft = doc.saved.clone();
                    doc.edited();
                }
                self.after_replace();
            }
        });
        if let Some((is_error, text)) = &self.message {
            let color = if *is_error {
                ui.visuals().error_fg_color
            } else {
                egui::Color32::from_rgb(60, 170, 90)
            };
            ui.colored_label(color, text);
        }
        ui.horizontal(|ui| {
            for (view, label) in [
                (View::Edit, "Edit"),
                (View::History, "History"),
                (View::Preview, "Preview"),
                (View::Files, "Import / export"),
            ] {
                let label = if view == View::History {
                    format!("History ({})", self.versions.len())
                } else {
                    label.to_string()
                };
                if ui.selectable_label(self.view == view, label).clicked() {
                    self.view = view;
                }
            }
        });
    }

    fn external_banner(&mut self, ui: &mut egui::Ui, env: &mut KnowledgeEnv<'_>) {
        let Some(ext) = &mut self.external else {
            return;
        };
        let mut reload = false;
        let mut overwrite = false;
        egui::Frame::new()
            .fill(ui.visuals().warn_fg_color.gamma_multiply(0.15))
            .inner_margin(6.0)
            .corner_radius(4.0)
            .show(ui, |ui| {
                ui.set_width(ui.available_width());
                match &ext.error {
                    Some(e) => ui.colored_label(
                        ui.visuals().warn_fg_color,
                        format!("The knowledge file cannot be read any more: {e}"),
                    ),
                    None => ui.colored_label(
                        ui.visuals().warn_fg_color,
                        "The knowledge file was changed outside the app since it was loaded. Saving will not overwrite it unless you choose to.",
                    ),
                };
                let unsaved = self.doc.as_ref().is_some_and(|d| d.dirty);
                ui.horizontal(|ui| {
                    // Reloading replaces the draft: with edits in it, the button says so.
                    let reload_label = if unsaved {
                        "Reload from disk, dropping my edits"
                    } else {
                        "Reload from disk"
                    };
                    if ext.disk.is_some() && ui.button(reload_label).clicked() {
                        reload = true;
                    }
                    if ui.button("Keep mine and overwrite").clicked() {
                        overwrite = true;
                    }
                    if ext.disk.is_some() {
                        let label = if ext.show_diff { "Hide diff" } else { "Show diff" };
                        if ui.button(label).clicked() {
                            ext.show_diff = !ext.show_diff;
                        }
                    }
                });
                if ext.show_diff
                    && let (Some(disk), Some(doc)) = (&ext.disk, &self.doc)
                {
                    ui.label("From your draft (left) to the file on disk (right):");
                    let rows = ext
                        .diff
                        .get_or_insert_with(|| history::diff_rows(&doc.draft, disk));
                    egui::ScrollArea::vertical()
                        .id_salt("external_diff")
                        .max_height(260.0)
                        .show(ui, |ui| history::changes_ui(ui, rows));
                }
            });
        if reload && let Some(ext) = self.external.take() {
            let (Some(kb), Some(doc)) = (ext.disk, &self.doc) else {
                return;
            };
            let path = doc.path.clone();
            self.doc = Some(Doc::new(path, kb.clone(), ext.file_hash));
            *env.knowledge = Some(kb);
            self.message = Some((false, "Reloaded from disk.".into()));
            self.after_replace();
        }
        if overwrite {
            self.external = None;
            self.start_save(env.workspace, true);
        }
    }

    fn tree_panel(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let label = ui.label("Search");
            ui.add(
                egui::TextEdit::singleline(&mut self.search)
                    .hint_text("names and texts")
                    .desired_width(f32::INFINITY),
            )
            .labelled_by(label.id);
        });
        egui::CollapsingHeader::new("Add a category")
            .id_salt("add_category")
            .show(ui, |ui| self.add_category_ui(ui));
        let Some(doc) = &self.doc else { return };
        let reveal = self.reveal.take();
        let mut select = None;
        if !self.search.trim().is_empty() {
            let memo = memoised_search(&mut self.search_hits, doc, &self.search);
            let (hits, total) = (&memo.hits, memo.total);
            let mut count = format!("{total} match{}", if total == 1 { "" } else { "es" });
            if total > hits.len() {
                count.push_str(&format!(" (the first {} listed)", hits.len()));
            }
            ui.label(count);
            egui::ScrollArea::vertical()
                .auto_shrink([false, false])
                .show(ui, |ui| {
                    for hit in hits.iter() {
                        let sel = self.selected.as_ref() == Some(&hit.at);
                        let r =
                            ui.selectable_label(sel, egui::RichText::new(hit.at.label()).strong());
                        ui.label(egui::RichText::new(&hit.context).small().weak());
                        if r.clicked() {
                            select = Some(hit.at.clone());
                        }
                    }
                });
        } else {
            egui::ScrollArea::vertical()
                .auto_shrink([false, false])
                .show(ui, |ui| {
                    for (ds, cats) in &doc.draft.datasets {
                        egui::CollapsingHeader::new(format!("{ds} ({})", cats.len()))
                            .id_salt(("kds", ds))
                            .default_open(true)
                            .show(ui, |ui| {
                                for (cat, entries) in cats {
                                    let open = self
                                        .selected
                                        .as_ref()
                                        .is_some_and(|s| &s.dataset == ds && &s.category == cat);
                                    let header = egui::CollapsingHeader::new(format!(
                                        "{cat} ({})",
                                        entries.len()
                                    ))
                                    .id_salt(("kcat", ds, cat));
                                    let show = reveal
                                        .as_ref()
                                        .is_some_and(|s| &s.dataset == ds && &s.category == cat);
                                    let header = if show {
                                        header.open(Some(true))
                                    } else {
                                        header
                                    };
                                    let r = header.show(ui, |ui| {
                                        for name in ordered_names(entries) {
                                            let at = Selection::entry(ds, cat, name);
                                            let sel = self.selected.as_ref() == Some(&at);
                                            let tokens = approx_tokens(&entries[name]);
                                            if ui
                                                .selectable_label(sel, name.as_str())
                                                .on_hover_text(format!("about {tokens} tokens"))
                                                .clicked()
                                            {
                                                select = Some(at);
                                            }
                                        }
                                    });
                                    if r.header_response.clicked() && !open {
                                        select = Some(Selection {
                                            dataset: ds.clone(),
                                            category: cat.clone(),
                                            entry: None,
                                        });
                                    }
                                }
                            });
                    }
                });
        }
        if let Some(s) = select {
            self.select(s);
        }
    }

    /// Selects and unfolds the tree down to it.
    pub fn select(&mut self, at: Selection) {
        self.reveal = Some(at.clone());
        self.selected = Some(at);
    }

    fn add_category_ui(&mut self, ui: &mut egui::Ui) {
        let Some(doc) = &mut self.doc else { return };
        ui.label(egui::RichText::new("New category").strong());
        if self.new_category_dataset.is_empty()
            && let Some(first) = doc.draft.datasets.keys().next()
        {
            self.new_category_dataset = first.clone();
        }
        ui.horizontal(|ui| {
            let label = ui.label("Dataset");
            ui.add(egui::TextEdit::singleline(&mut self.new_category_dataset).desired_width(90.0))
                .labelled_by(label.id);
        });
        ui.horizontal(|ui| {
            let label = ui.label("Name");
            ui.add(egui::TextEdit::singleline(&mut self.new_category).desired_width(90.0))
                .labelled_by(label.id);
            let name = self.new_category.trim().to_string();
            let ds = self.new_category_dataset.trim().to_string();
            let taken = doc
                .draft
                .datasets
                .get(&ds)
                .is_some_and(|d| d.contains_key(&name));
            let ok = !name.is_empty() && !ds.is_empty() && !taken;
            if ui
                .add_enabled(ok, egui::Button::new("Add category"))
                .on_disabled_hover_text(if taken {
                    "A category of that name exists"
                } else {
                    "Type a dataset and a name"
                })
                .clicked()
            {
                let mut entries = crate::knowledge::CategoryKnowledge::new();
                entries.insert(
                    NORMAL_ENTRY.to_string(),
                    EntryText {
                        title: Some(format!("Normal {}", crate::echo::prompt::human_name(&name))),
                        description: String::new(),
                    }
                    .compose(),
                );
                doc.draft
                    .datasets
                    .entry(ds.clone())
                    .or_default()
                    .insert(name.clone(), entries);
                doc.edited();
                self.selected = Some(Selection::entry(&ds, &name, NORMAL_ENTRY));
                self.new_category.clear();
            }
        });
    }

    fn problems_panel(&mut self, ui: &mut egui::Ui) {
        let errors = self
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count();
        let warnings = self.problems.len() - errors;
        ui.heading("Problems");
        ui.horizontal(|ui| {
            let label = ui.label("Token budget per entry");
            ui.add(
                egui::DragValue::new(&mut self.options.token_budget)
                    .range(50..=20_000)
                    .speed(10.0),
            )
            .labelled_by(label.id)
            .on_hover_text("Tokens are estimated as characters / 4 (rounded up)");
        });
        ui.label(
            egui::RichText::new(format!(
                "Near-duplicates: {:.0} % or more of the same words in order (word-level diff ratio). {}",
                self.options.near_duplicate_ratio * 100.0,
                if self.facts.is_some() {
                    "Checked against the loaded dataset's folders and options."
                } else {
                    "Load a dataset to check entries against its folders and options."
                }
            ))
            .small()
            .weak(),
        );
        if self.problems.is_empty() {
            ui.colored_label(egui::Color32::from_rgb(60, 170, 90), "No problems");
            return;
        }
        ui.label(format!("{errors} error(s), {warnings} warning(s)"));
        let mut select = None;
        egui::ScrollArea::vertical()
            .id_salt("problems")
            .auto_shrink([false, false])
            .show(ui, |ui| {
                for p in &self.problems {
                    let (tag, color) = match p.severity {
                        Severity::Error => ("error", ui.visuals().error_fg_color),
                        Severity::Warning => ("warning", ui.visuals().warn_fg_color),
                    };
                    let at = Selection {
                        dataset: p.dataset.clone(),
                        category: p.category.clone(),
                        entry: p.entry.clone(),
                    };
                    let sel = self.selected.as_ref() == Some(&at);
                    let text =
                        egui::RichText::new(format!("{tag}: {}", problem_text(p))).color(color);
                    if ui
                        .selectable_label(sel, text)
                        .on_hover_text(&p.message)
                        .clicked()
                    {
                        select = Some(at);
                    }
                }
            });
        if let Some(s) = select {
            self.select(s);
            self.view = View::Edit;
        }
    }

    fn editor(&mut self, ui: &mut egui::Ui, env: &KnowledgeEnv<'_>) {
        let Some(sel) = self.selected.clone() else {
            ui.label("Pick a category or an entry on the left.");
            return;
        };
        let exists_now = self.doc.as_ref().is_some_and(|d| exists(&d.draft, &sel));
        if !exists_now {
            ui.label(format!("{} no longer exists.", sel.label()));
            return;
        }
        egui::ScrollArea::vertical()
            .id_salt("knowledge_editor")
            .auto_shrink([false, false])
            .show(ui, |ui| {
                self.category_section(ui, &sel);
                ui.separator();
                if let Some(entry) = &sel.entry {
                    self.entry_section(ui, &sel, entry, env);
                } else {
                    ui.label("Pick an entry of this category to edit its text.");
                }
                // Below the text: what an edit reaches, and measuring it on a run.
                ui.separator();
                self.impact_ui(ui, &sel, env);
            });
    }

    fn category_section(&mut self, ui: &mut egui::Ui, sel: &Selection) {
        let Some(doc) = &mut self.doc else { return };
        let cat_sel = sel.category();
        ui.horizontal_wrapped(|ui| {
            ui.heading(format!("{} / {}", sel.dataset, sel.category));
            let renaming = self.rename.as_ref().is_some_and(|(s, _)| *s == cat_sel);
            if !renaming && ui.button("Rename category").clicked() {
                self.rename = Some((cat_sel.clone(), sel.category.clone()));
            }
            if ui.button("Delete category…").clicked() {
                self.confirm_delete = Some(cat_sel.clone());
            }
        });
        if let Some(renamed) = rename_ui(ui, &mut self.rename, &cat_sel, |name| {
            doc.draft
                .datasets
                .get(&sel.dataset)
                .is_some_and(|d| d.contains_key(name))
        }) && let Some(cats) = doc.draft.datasets.get_mut(&sel.dataset)
            && let Some(i) = cats.get_index_of(&sel.category)
        {
            let (_, entries) = cats.shift_remove_index(i).expect("index from get_index_of");
            cats.shift_insert(i, renamed.clone(), entries);
            doc.edited();
            self.selected = Some(Selection {
                category: renamed,
                ..sel.clone()
            });
            self.edit = None;
            return;
        }
        ui.horizontal(|ui| {
            let label = ui.label("New entry");
            ui.add(
                egui::TextEdit::singleline(&mut self.new_entry)
                    .hint_text("defect folder name, e.g. broken_large")
                    .desired_width(220.0),
            )
            .labelled_by(label.id);
            let name = self.new_entry.trim().to_string();
            let taken = doc
                .draft
                .entry(&sel.dataset, &sel.category, &name)
                .is_some();
            if ui
                .add_enabled(!name.is_empty() && !taken, egui::Button::new("Add entry"))
                .on_disabled_hover_text(if taken {
                    "An entry of that name exists"
                } else {
                    "Type a name"
                })
                .clicked()
                && let Some(cat) = doc
                    .draft
                    .datasets
                    .get_mut(&sel.dataset)
                    .and_then(|d| d.get_mut(&sel.category))
            {
                cat.insert(
                    name.clone(),
                    EntryText {
                        title: Some(crate::echo::prompt::human_name(&name)),
                        description: String::new(),
                    }
                    .compose(),
                );
                doc.edited();
                self.selected = Some(Selection::entry(&sel.dataset, &sel.category, &name));
                self.new_entry.clear();
            }
        });
    }

    fn impact_ui(&mut self, ui: &mut egui::Ui, sel: &Selection, env: &KnowledgeEnv<'_>) {
        let Some(doc) = &self.doc else { return };
        let Some(d) = env.dataset else {
            ui.label("Load a dataset to see which questions this category reaches.");
            return;
        };
        let Some((_, ctx)) = &self.ctx else {
            match &self.ctx_error {
                Some(e) => ui.colored_label(
                    ui.visuals().error_fg_color,
                    format!("Impact unavailable: {e}"),
                ),
                None => ui.spinner(),
            };
            return;
        };
        let key = (
            sel.clone(),
            doc.rev,
            d.dataset.source.clone(),
            d.dataset.entries.len(),
        );
        if self.impact.as_ref().map(|(k, _)| k) != Some(&key) {
            let imp = impact(
                ctx,
                &d.dataset,
                &doc.draft,
                &sel.dataset,
                &sel.category,
                sel.entry.as_deref(),
            );
            self.impact = Some((key, Arc::new(imp)));
        }
        let Some(imp) = self.impact.as_ref().map(|(_, imp)| Arc::clone(imp)) else {
            return;
        };
        let heading = match &sel.entry {
            Some(e) => format!(
                "Impact with the current settings: {} of {} questions about {} get this category's knowledge (entry `{e}`: see the last column)",
                imp.with_category(),
                imp.questions(),
                sel.category
            ),
            None => format!(
                "Impact with the current settings: {} of {} questions about {} get this category's knowledge",
                imp.with_category(),
                imp.questions(),
                sel.category
            ),
        };
        egui::CollapsingHeader::new(heading)
            .id_salt("impact")
            .default_open(true)
            .show(ui, |ui| {
                if imp.per_type.is_empty() {
                    ui.label("The loaded dataset has no questions about this category.");
                    return;
                }
                egui::Grid::new("impact_grid").striped(true).show(ui, |ui| {
                    ui.strong("Question type");
                    ui.strong("Questions");
                    ui.strong("Knowledge mode");
                    ui.strong("Prompts with this category");
                    if sel.entry.is_some() {
                        ui.strong("with this entry");
                    }
                    ui.end_row();
                    for t in &imp.per_type {
                        ui.label(&t.qtype);
                        ui.label(t.questions.to_string());
                        ui.label(match t.mode {
                            None => "off for this type".to_string(),
                            Some(crate::echo::plan::KnowledgeMode::Condensed) => {
                                "condensed (reads condensed.json)".to_string()
                            }
                            Some(m) => m.to_string(),
                        });
                        ui.label(t.with_category.to_string());
                        if let Some(n) = t.with_entry {
                            ui.label(n.to_string());
                        }
                        ui.end_row();
                    }
                });
                ui.label(
                    egui::RichText::new(format!(
                        "From the pipeline's plan per question type (preset `{}`, as in Settings). A run records its own settings: the re-run below follows the chosen run's.",
                        env.pipeline.preset
                    ))
                    .small()
                    .weak(),
                );
                rerun::ui(self, ui, sel, env);
            });
    }

    fn entry_section(
        &mut self,
        ui: &mut egui::Ui,
        sel: &Selection,
        entry: &str,
        env: &KnowledgeEnv<'_>,
    ) {
        let Some(doc) = &mut self.doc else { return };
        let Some(text) = doc.draft.entry(&sel.dataset, &sel.category, entry).cloned() else {
            return;
        };
        if self
            .edit
            .as_ref()
            .is_none_or(|e| e.at != *sel || e.rev > doc.rev)
        {
            let parsed = EntryText::parse(&text);
            self.edit = Some(EntryEdit {
                at: sel.clone(),
                rev: doc.rev,
                title: parsed.title.unwrap_or_default(),
                description: parsed.description,
            });
        }
        let Some(edit) = &mut self.edit else { return };
        ui.horizontal_wrapped(|ui| {
            let kind = if entry == NORMAL_ENTRY {
                "normal"
            } else {
                "defect"
            };
            ui.heading(format!("{entry} ({kind})"));
            ui.label(format!(
                "{} characters, about {} tokens",
                text.chars().count(),
                approx_tokens(&text)
            ))
            .on_hover_text("Tokens are estimated as characters / 4 (rounded up)");
            let renaming = self.rename.as_ref().is_some_and(|(s, _)| s == sel);
            if !renaming && ui.button("Rename entry").clicked() {
                self.rename = Some((sel.clone(), entry.to_string()));
            }
            if ui.button("Delete entry…").clicked() {
                self.confirm_delete = Some(sel.clone());
            }
        });
        if let Some(renamed) = rename_ui(ui, &mut self.rename, sel, |name| {
            doc.draft.entry(&sel.dataset, &sel.category, name).is_some()
        }) && let Some(cat) = doc
            .draft
            .datasets
            .get_mut(&sel.dataset)
            .and_then(|d| d.get_mut(&sel.category))
            && let Some(i) = cat.get_index_of(entry)
        {
            let (_, t) = cat.shift_remove_index(i).expect("index from get_index_of");
            cat.shift_insert(i, renamed.clone(), t);
            doc.edited();
            self.selected = Some(Selection::entry(&sel.dataset, &sel.category, &renamed));
            self.edit = None;
            return;
        }
        let wide = ui.available_width() > 760.0;
        let mut changed = false;
        let mut text_ui = |ui: &mut egui::Ui| {
            ui.horizontal(|ui| {
                let label = ui.label("Title");
                changed |= ui
                    .add(
                        egui::TextEdit::singleline(&mut edit.title)
                            .hint_text("the <Title> line")
                            .desired_width(f32::INFINITY),
                    )
                    .labelled_by(label.id)
                    .changed();
            });
            let label = ui.label("Description");
            changed |= ui
                .add(
                    egui::TextEdit::multiline(&mut edit.description)
                        .desired_rows(14)
                        .desired_width(f32::INFINITY),
                )
                .labelled_by(label.id)
                .changed();
        };
        let facts = self.facts.as_ref().map(|(_, f)| f.clone());
        let examples = example_keys(facts.as_deref(), sel, entry);
        if wide {
            ui.columns(2, |cols| {
                text_ui(&mut cols[0]);
                examples_ui(
                    &mut cols[1],
                    &mut self.thumbs,
                    env.dataset,
                    &examples,
                    entry,
                );
            });
        } else {
            text_ui(ui);
            ui.separator();
            examples_ui(ui, &mut self.thumbs, env.dataset, &examples, entry);
        }
        if changed {
            let title = edit.title.trim();
            let composed = EntryText {
                title: (!title.is_empty()).then(|| title.to_string()),
                description: edit.description.clone(),
            }
            .compose();
            if let Some(slot) = doc
                .draft
                .datasets
                .get_mut(&sel.dataset)
                .and_then(|d| d.get_mut(&sel.category))
                .and_then(|c| c.get_mut(entry))
            {
                *slot = composed;
                doc.edited();
                edit.rev = doc.rev;
            }
        }
        let own: Vec<&Problem> = self
            .problems
            .iter()
            .filter(|p| {
                p.dataset == sel.dataset
                    && p.category == sel.category
                    && p.entry.as_deref() == Some(entry)
            })
            .collect();
        for p in own {
            let color = match p.severity {
                Severity::Error => ui.visuals().error_fg_color,
                Severity::Warning => ui.visuals().warn_fg_color,
            };
            ui.colored_label(color, problem_text(p));
        }
    }

    fn delete_dialog(&mut self, ctx: &egui::Context) {
        let Some(target) = self.confirm_delete.clone() else {
            return;
        };
        let mut decided = None;
        egui::Window::new("Confirm delete")
            .collapsible(false)
            .resizable(false)
            .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
            .show(ctx, |ui| {
                let what = match &target.entry {
                    Some(e) => format!("the entry `{e}` of {}/{}", target.dataset, target.category),
                    None => format!(
                        "the category {}/{} with all its entries",
                        target.dataset, target.category
                    ),
                };
                ui.label(format!("Delete {what}? Saved versions keep the old text."));
                ui.horizontal(|ui| {
                    if ui.button("Delete").clicked() {
                        decided = Some(true);
                    }
                    if ui.button("Cancel").clicked() {
                        decided = Some(false);
                    }
                });
            });
        match decided {
            Some(true) => {
                if let Some(doc) = &mut self.doc
                    && let Some(cats) = doc.draft.datasets.get_mut(&target.dataset)
                {
                    match &target.entry {
                        Some(e) => {
                            if let Some(c) = cats.get_mut(&target.category) {
                                c.shift_remove(e);
                            }
                        }
                        None => {
                            cats.shift_remove(&target.category);
                        }
                    }
                    doc.edited();
                }
                self.confirm_delete = None;
                self.selected = target.entry.is_some().then(|| target.category());
                self.after_replace();
            }
            Some(false) => self.confirm_delete = None,
            None => {}
        }
    }

    fn poll_thumbs(&mut self, ctx: &egui::Context) {
        for thumb in self.thumbs.values_mut() {
            if let Thumb::Loading(job) = thumb
                && let Some(result) = job.take()
            {
                *thumb = match result {
                    Ok((rgb, size)) => Thumb::Ready(ctx.load_texture(
                        "knowledge-example",
                        egui::ColorImage::from_rgb(size, &rgb),
                        Default::default(),
                    )),
                    Err(e) => Thumb::Failed(e),
                };
            }
        }
    }
}

/// Image keys to show beside an entry: normal images for `good` (and for a
/// category), the defect folder's images for a defect entry.
fn example_keys(facts: Option<&DatasetFacts>, sel: &Selection, entry: &str) -> Vec<String> {
    let Some(cf) = facts.and_then(|f| f.category(&sel.dataset, &sel.category)) else {
        return Vec::new();
    };
    let list = if entry == NORMAL_ENTRY {
        Some(&cf.normal_images)
    } else {
        cf.defect_images.get(entry)
    };
    list.map(|l| l.iter().take(EXAMPLES).cloned().collect())
        .unwrap_or_default()
}

fn examples_ui(
    ui: &mut egui::Ui,
    thumbs: &mut HashMap<PathBuf, Thumb>,
    dataset: Option<&LoadedDataset>,
    keys: &[String],
    entry: &str,
) {
    let Some(d) = dataset else {
        ui.label("Load a dataset to see example images.");
        return;
    };
    if keys.is_empty() {
        ui.label(format!(
            "No images of `{entry}` in the loaded dataset (no folder of that name)."
        ));
        return;
    }
    ui.label(if entry == NORMAL_ENTRY {
        "Normal images of this category".to_string()
    } else {
        format!("Images in the `{entry}` folder")
    });
    ui.horizontal_wrapped(|ui| {
        for key in keys {
            // By file, not by key: another dataset (or root) may use the same keys.
            let path = match d.root.resolve(key) {
                Ok(path) => path,
                Err(e) => {
                    ui.colored_label(ui.visuals().error_fg_color, format!("{key}: {e}"));
                    continue;
                }
            };
            let thumb = thumbs.entry(path.clone()).or_insert_with(|| {
                Thumb::Loading(Job::spawn("decode example", move || {
                    let img = decode_rgb8(&path, DecodeLimits::default())?;
                    let small = image::imageops::thumbnail(&img, THUMB_PX, THUMB_PX);
                    let size = [small.width() as usize, small.height() as usize];
                    Ok((small.into_raw(), size))
                }))
            });
            match thumb {
                Thumb::Ready(tex) => {
                    let [w, h] = tex.size();
                    ui.add(
                        egui::Image::new((tex.id(), egui::vec2(w as f32, h as f32)))
                            .corner_radius(3.0),
                    )
                    .on_hover_text(key);
                }
                Thumb::Loading(_) => {
                    ui.add_sized([THUMB_PX as f32, THUMB_PX as f32], egui::Spinner::new());
                }
                Thumb::Failed(e) => {
                    ui.colored_label(ui.visuals().error_fg_color, format!("{key}: {e}"));
                }
            }
        }
    });
}

/// An inline rename field; returns the new name once applied.
fn rename_ui(
    ui: &mut egui::Ui,
    rename: &mut Option<(Selection, String)>,
    at: &Selection,
    taken: impl Fn(&str) -> bool,
) -> Option<String> {
    let (target, name) = rename.as_mut()?;
    if target != at {
        return None;
    }
    let mut result = None;
    let mut cancel = false;
    ui.horizontal(|ui| {
        let label = ui.label("New name");
        ui.add(egui::TextEdit::singleline(name).desired_width(200.0))
            .labelled_by(label.id);
        let trimmed = name.trim().to_string();
        let current = at.entry.clone().unwrap_or_else(|| at.category.clone());
        let clash = trimmed != current && taken(&trimmed);
        let ok = !trimmed.is_empty() && !clash;
        if ui
            .add_enabled(ok, egui::Button::new("Apply"))
            .on_disabled_hover_text(if clash {
                "That name is taken"
            } else {
                "Type a name"
            })
            .clicked()
        {
            if trimmed != current {
                result = Some(trimmed);
            }
            cancel = true;
        }
        if ui.button("Cancel").clicked() {
            cancel = true;
        }
    });
    if cancel {
        *rename = None;
    }
    result
}

/// `good` first, then the defects in file order.
fn ordered_names(entries: &crate::knowledge::CategoryKnowledge) -> Vec<&String> {
    entries
        .keys()
        .filter(|n| n.as_str() == NORMAL_ENTRY)
        .chain(entries.keys().filter(|n| n.as_str() != NORMAL_ENTRY))
        .collect()
}

fn exists(kb: &KnowledgeBase, sel: &Selection) -> bool {
    let Some(cat) = kb
        .datasets
        .get(&sel.dataset)
        .and_then(|d| d.get(&sel.category))
    else {
        return false;
    };
    sel.entry.as_ref().is_none_or(|e| cat.contains_key(e))
}

fn first_entry(kb: &KnowledgeBase) -> Option<Selection> {
    let (ds, cats) = kb.datasets.iter().find(|(_, c)| !c.is_empty())?;
    let (cat, entries) = cats.first()?;
    Some(match ordered_names(entries).first() {
        Some(e) => Selection::entry(ds, cat, e),
        None => Selection {
            dataset: ds.clone(),
            category: cat.clone(),
            entry: None,
        },
    })
}

/// The problem without its location prefix (the list is grouped by location anyway).
fn problem_text(p: &Problem) -> String {
    let at = match &p.entry {
        Some(e) => format!("{}/{}/{e}: ", p.dataset, p.category),
        None => format!("{}/{}: ", p.dataset, p.category),
    };
    let short = p.message.strip_prefix(&at).unwrap_or(&p.message);
    match &p.entry {
        Some(e) => format!("{}/{e}: {short}", p.category),
        None => format!("{}: {short}", p.category),
    }
}

struct SearchHit {
    at: Selection,
    context: String,
}

/// What an impact count depends on: the selection, the draft's revision and the
/// dataset (its file and number of images).
type ImpactKey = (Selection, u64, PathBuf, usize);

/// The hits for one needle on one draft revision.
struct SearchMemo {
    needle: String,
    rev: u64,
    hits: Arc<Vec<SearchHit>>,
    total: usize,
}

/// The search hits for `needle` on `doc`'s draft, computed once per needle and
/// revision.
fn memoised_search<'m>(
    memo: &'m mut Option<SearchMemo>,
    doc: &Doc,
    needle: &str,
) -> &'m SearchMemo {
    let stale = memo
        .as_ref()
        .is_none_or(|m| m.rev != doc.rev || m.needle != needle);
    if stale {
        *memo = None;
    }
    memo.get_or_insert_with(|| {
        let (hits, total) = search(&doc.draft, needle, SEARCH_LISTED);
        SearchMemo {
            needle: needle.to_string(),
            rev: doc.rev,
            hits: Arc::new(hits),
            total,
        }
    })
}

/// Search hits listed at most; the count says how many there are in all.
const SEARCH_LISTED: usize = 200;

/// Entries whose text or name holds `needle` (case-insensitively), the first
/// `limit` of them, and how many there are in all.
fn search(kb: &KnowledgeBase, needle: &str, limit: usize) -> (Vec<SearchHit>, usize) {
    let needle = needle.trim().to_lowercase();
    let mut out = Vec::new();
    let mut total = 0;
    for (ds, cats) in &kb.datasets {
        for (cat, entries) in cats {
            for name in ordered_names(entries) {
                let text = &entries[name];
                let lower = text.to_lowercase();
                let context = if let Some(pos) = lower.find(&needle) {
                    snippet_around(text, &lower, pos, needle.len())
                } else if name.to_lowercase().contains(&needle)
                    || cat.to_lowercase().contains(&needle)
                {
                    "(name)".to_string()
                } else {
                    continue;
                };
                total += 1;
                if out.len() < limit {
                    out.push(SearchHit {
                        at: Selection::entry(ds, cat, name),
                        context,
                    });
                }
            }
        }
    }
    (out, total)
}

fn snippet_around(text: &str, lower: &str, pos: usize, len: usize) -> String {
    // Lower-casing can change byte lengths; fall back to the start when it did.
    if lower.len() != text.len() {
        return text.chars().take(80).collect();
    }
    let mut start = pos.saturating_sub(30);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (pos + len + 40).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    let body = text[start..end].replace('\n', " ");
    format!(
        "{}{}{}",
        if start > 0 { "…" } else { "" },
        body.trim(),
        if end < text.len() { "…" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_draft_gets_a_revision_of_its_own() {
        let path = crate::bundled_knowledge_path();
        let kb = KnowledgeBase::load(&path).unwrap();
        // The same content loaded twice (a reload, a revert) is not the same draft:
        // a preview made for the first must not pass for the second.
        let first = Doc::new(path.clone(), kb.clone(), "h".into());
        let mut second = Doc::new(path, kb, "h".into());
        assert_ne!(first.rev, second.rev);
        let before = second.rev;
        second.edited();
        assert!(second.rev > before);
        assert_ne!(second.rev, first.rev);
    }

    #[test]
    fn search_counts_every_hit_and_lists_the_first() {
        let kb = KnowledgeBase::load(&crate::bundled_knowledge_path()).unwrap();
        let (all, total) = search(&kb, "the", usize::MAX);
        assert_eq!(all.len(), total);
        assert!(total > 5, "{total}");
        let (some, same_total) = search(&kb, "the", 5);
        assert_eq!(some.len(), 5);
        assert_eq!(same_total, total);
    }

    #[test]
    fn search_runs_once_per_needle_and_draft_revision() {
        let kb = KnowledgeBase::load(&crate::bundled_knowledge_path()).unwrap();
        let mut doc = Doc::new("k.json".into(), kb, String::new());
        let mut memo = None;
        let first = Arc::clone(&memoised_search(&mut memo, &doc, "the").hits);
        // Another frame, nothing changed: the very same hits, not a new search.
        let again = Arc::clone(&memoised_search(&mut memo, &doc, "the").hits);
        assert!(Arc::ptr_eq(&first, &again));
        // A new needle or an edit searches again.
        let other = Arc::clone(&memoised_search(&mut memo, &doc, "scratch").hits);
        assert!(!Arc::ptr_eq(&first, &other));
        doc.edited();
        let after_edit = Arc::clone(&memoised_search(&mut memo, &doc, "scratch").hits);
        assert!(!Arc::ptr_eq(&other, &after_edit));
        assert_eq!(other.len(), after_edit.len());
    }
}
