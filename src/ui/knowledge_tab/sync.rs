//! The draft against the file on disk: loading, saving a version, reverting,
//! noticing changes made outside the app, and validating the draft.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use eframe::egui;

use crate::echo::pipeline::PipelineContext;
use crate::knowledge::versions::{self, VersionStore};
use crate::knowledge::{DatasetFacts, KnowledgeBase};
use crate::ui::jobs::Job;

use super::tree::{exists, first_entry};
use super::{
    Doc, ExternalChange, KnowledgeEnv, KnowledgeState, WATCH_EVERY, files, history, preview, rerun,
};

impl KnowledgeState {
    /// Collects background results and starts what the current state needs.
    pub(super) fn poll(&mut self, ctx: &egui::Context, env: &mut KnowledgeEnv<'_>) {
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

    pub(super) fn start_load(&mut self, path: &Path) {
        let p = path.to_path_buf();
        self.load_job = Some(Job::spawn("load knowledge", move || read_knowledge(&p)));
    }

    pub(super) fn start_versions(&mut self, workspace: &Path) {
        let store = VersionStore::in_workspace(workspace);
        self.versions_job = Some(Job::spawn("read knowledge versions", move || {
            Ok(store.list()?)
        }));
    }

    /// Resets what depends on the draft's content after it was replaced wholesale.
    pub(super) fn after_replace(&mut self) {
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
    pub(super) fn replace_draft(&mut self, kb: KnowledgeBase) {
        if let Some(doc) = &mut self.doc {
            doc.draft = kb;
            doc.edited();
        }
        self.after_replace();
    }

    /// Saves the draft with the note; `overwrite` skips the changed-on-disk check.
    pub(super) fn start_save(&mut self, workspace: &Path, overwrite: bool) {
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

    pub(super) fn start_revert(&mut self, workspace: &Path, number: u32) {
        let Some(doc) = &self.doc else { return };
        let path = doc.path.clone();
        let expected = doc.file_hash.clone();
        let store = VersionStore::in_workspace(workspace);
        self.save_job = Some(Job::spawn("revert knowledge", move || {
            let (kb, saved) = store.revert(number, &path, Some(&expected))?;
            Ok(SaveDone { saved, kb })
        }));
    }

    pub(super) fn poll_save(&mut self, env: &mut KnowledgeEnv<'_>) {
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

    pub(super) fn poll_watch(&mut self) {
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
    pub(super) fn validate(&mut self) {
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
}

pub(super) struct Loaded {
    kb: KnowledgeBase,
    file_hash: String,
}

pub(super) fn read_knowledge(path: &Path) -> anyhow::Result<Loaded> {
    let bytes = crate::util::fsx::read_limited(path, crate::util::fsx::TEXT_FILE_LIMIT)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))?;
    Ok(Loaded {
        kb: KnowledgeBase::from_json_str(&text, path)?,
        file_hash: crate::util::fsx::sha256_bytes(&bytes),
    })
}

pub(super) struct SaveDone {
    saved: versions::Saved,
    kb: KnowledgeBase,
}
