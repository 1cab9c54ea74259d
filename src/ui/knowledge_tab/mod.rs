//! Knowledge: browse and edit the knowledge base (tree, entry editor with example
//! images), see validation problems as you type, save versions with a note, diff
//! and revert them, see which questions a category reaches, preview what the
//! Knowledge Guide would send, and import or export files.
//!
//! The tab keeps its own draft of the file, so unsaved edits survive tab switches;
//! a save replaces the app's knowledge (what Inspect uses) only once it is on disk.
//!
//! This file holds the tab's state and its layout; each panel draws from its own
//! file (`tree`, `problems`, `header`, `editor` with `examples`, and the views
//! `history`, `preview`, `files`, `rerun`), `sync` keeps the draft and the file
//! on disk apart, `search` finds entries.

mod editor;
mod examples;
mod files;
mod header;
mod history;
mod preview;
mod problems;
mod rerun;
mod search;
mod sync;
mod tree;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui;

use super::jobs::Job;
use super::{Command, LoadedDataset};
use crate::curate::impact::Impact;
use crate::echo::pipeline::{PipelineContext, PipelineSettings};
use crate::knowledge::versions::VersionInfo;
use crate::knowledge::{DatasetFacts, KnowledgeBase, Problem, ValidationOptions};
use crate::mllm::EndpointConfig;
use editor::ImpactKey;
use examples::Thumb;
use search::SearchMemo;
use sync::{Loaded, SaveDone};

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
}
