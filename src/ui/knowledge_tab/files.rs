//! Import and export: MMAD's domain_knowledge.json (byte-stable both ways) and a
//! Markdown copy per category for review.

use std::path::PathBuf;

use eframe::egui;

use super::{KnowledgeEnv, KnowledgeState};
use crate::knowledge::KnowledgeBase;
use crate::ui::jobs::Job;

pub enum FileOutcome {
    Imported { kb: KnowledgeBase, from: PathBuf },
    Exported(String),
}

#[derive(Default)]
pub struct FilesView {
    pub import_path: String,
    pub export_path: String,
    pub markdown_dir: String,
    /// The file the suggested paths were made for: they are suggested once, so a
    /// field the user empties stays empty.
    suggested_for: Option<PathBuf>,
    /// The Browse… dialog open now, and the field it fills.
    dialog: Option<(&'static str, Job<Option<PathBuf>>)>,
    job: Option<Job<FileOutcome>>,
    pub message: Option<(bool, String)>,
}

impl FilesView {
    pub fn busy(&self) -> bool {
        self.job.is_some() || self.dialog.is_some()
    }
}

pub fn poll(state: &mut KnowledgeState) {
    let Some(result) = state.files.job.as_mut().and_then(Job::take) else {
        return;
    };
    state.files.job = None;
    match result {
        Ok(FileOutcome::Imported { kb, from }) => {
            state.files.message = Some((
                false,
                format!(
                    "Imported {} categories, {} entries from {} into the draft. Save to keep it as a new version.",
                    kb.category_count(),
                    kb.entry_count(),
                    from.display()
                ),
            ));
            state.replace_draft(kb);
        }
        Ok(FileOutcome::Exported(m)) => state.files.message = Some((false, m)),
        Err(e) => state.files.message = Some((true, e)),
    }
}

/// A path field with a Browse… button whose dialog runs on its own thread (frames
/// go on drawing); the picked path lands in the field it was opened for.
fn path_row(
    ui: &mut egui::Ui,
    dialog: &mut Option<(&'static str, Job<Option<PathBuf>>)>,
    label: &'static str,
    value: &mut String,
    pick: impl FnOnce() -> Option<PathBuf> + Send + 'static,
) {
    if let Some((field, job)) = dialog
        && *field == label
        && let Some(result) = job.take()
    {
        if let Ok(Some(p)) = result {
            *value = p.display().to_string();
        }
        *dialog = None;
    }
    ui.horizontal(|ui| {
        let l = ui.label(label);
        ui.add(egui::TextEdit::singleline(value).desired_width(420.0))
            .labelled_by(l.id);
        if ui
            .add_enabled(dialog.is_none(), egui::Button::new("Browse…"))
            .on_hover_text(format!("Choose: {label}"))
            .clicked()
        {
            *dialog = Some((label, Job::spawn("file dialog", move || Ok(pick()))));
        }
    });
}

pub fn ui(state: &mut KnowledgeState, ui: &mut egui::Ui, _env: &KnowledgeEnv<'_>) {
    let Some(doc) = &state.doc else { return };
    let busy = state.files.job.is_some();
    let v = &mut state.files;
    if v.suggested_for.as_ref() != Some(&doc.path) {
        v.suggested_for = Some(doc.path.clone());
        v.export_path = doc
            .path
            .with_file_name("domain_knowledge.export.json")
            .display()
            .to_string();
        v.markdown_dir = doc
            .path
            .with_file_name("knowledge-review")
            .display()
            .to_string();
    }
    ui.heading("Import MMAD domain_knowledge.json");
    ui.label("Replaces the draft with the file's content (its layout is kept). Nothing is written until you Save.");
    path_row(ui, &mut v.dialog, "Import from", &mut v.import_path, || {
        rfd::FileDialog::new()
            .add_filter("JSON", &["json"])
            .pick_file()
    });
    let import = PathBuf::from(v.import_path.trim());
    if ui
        .add_enabled(
            !busy && !v.import_path.trim().is_empty(),
            egui::Button::new("Import"),
        )
        .clicked()
    {
        v.job = Some(Job::spawn("import knowledge", move || {
            let kb = KnowledgeBase::load(&import)?;
            Ok(FileOutcome::Imported { kb, from: import })
        }));
    }
    ui.add_space(10.0);
    ui.heading("Export MMAD domain_knowledge.json");
    ui.label("Writes the draft as shown (unsaved edits included) in the file's own layout; an unedited file exports byte for byte.");
    path_row(ui, &mut v.dialog, "Export to", &mut v.export_path, || {
        rfd::FileDialog::new()
            .add_filter("JSON", &["json"])
            .set_file_name("domain_knowledge.json")
            .save_file()
    });
    let target = PathBuf::from(v.export_path.trim());
    if ui
        .add_enabled(
            !busy && !v.export_path.trim().is_empty(),
            egui::Button::new("Export JSON"),
        )
        .clicked()
    {
        let text = doc.draft.to_json_string();
        v.job = Some(Job::spawn("export knowledge", move || {
            crate::util::fsx::atomic_write(&target, text.as_bytes())
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", target.display()))?;
            Ok(FileOutcome::Exported(format!(
                "Exported to {}",
                target.display()
            )))
        }));
    }
    ui.add_space(10.0);
    ui.heading("Export Markdown for review");
    ui.label("One file per category (<folder>/<dataset>/<category>.md): each product's texts go to whoever knows that product, and a change shows up as a change to one file.");
    path_row(
        ui,
        &mut v.dialog,
        "Markdown folder",
        &mut v.markdown_dir,
        || rfd::FileDialog::new().pick_folder(),
    );
    let dir = PathBuf::from(v.markdown_dir.trim());
    if ui
        .add_enabled(
            !busy && !v.markdown_dir.trim().is_empty(),
            egui::Button::new("Export Markdown"),
        )
        .clicked()
    {
        let kb = doc.draft.clone();
        v.job = Some(Job::spawn("export markdown", move || {
            let files = crate::knowledge::markdown::export_markdown(&kb, &dir)?;
            Ok(FileOutcome::Exported(format!(
                "Wrote {} Markdown file(s) under {}",
                files.len(),
                dir.display()
            )))
        }));
    }
    ui.add_space(8.0);
    if busy {
        ui.spinner();
    }
    if let Some((is_error, text)) = &v.message {
        let color = if *is_error {
            ui.visuals().error_fg_color
        } else {
            egui::Color32::from_rgb(60, 170, 90)
        };
        ui.colored_label(color, text);
    }
}
