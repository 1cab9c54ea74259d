//! Inspect: pick a part image (dataset browser, file dialog, typed path or drag and
//! drop), see it beside the most similar defect-free reference from the memory, ask
//! its questions through the Echo pipeline and watch each expert's card fill in,
//! then record a verdict.
//!
//! Nothing here waits: retrieval, decoding, pipeline runs, dialogs and verdict files
//! run on their own threads and report back through jobs and channels; results keep
//! their last value until the new one arrives, so nothing flashes empty.

mod anomaly_view;
mod ask;
mod questions;
mod retrieval;
mod verdicts;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use eframe::egui;

use super::browser::DatasetBrowser;
use super::compare::{CompareMode, ComparePanel};
use super::jobs::Job;
use super::trace_view::{self, QuestionRun};
use super::{Command, LoadedDataset, LoadedReference};
use crate::config::Settings;
use crate::dataset::{DatasetRoot, ImageEntry, is_normal_key};
use crate::echo::query::Query;
use crate::knowledge::KnowledgeBase;
use crate::verdicts::ImageId;

pub use anomaly_view::{AnomalySummary, AnomalyView};
use ask::ActiveRun;
pub use ask::Slot;
pub use questions::CustomQuestion;
pub use retrieval::Retrieval;
use retrieval::RetrievalTarget;
use verdicts::VerdictPanel;

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
    anomaly: AnomalyView,
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
            || self.anomaly.busy()
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
            (self.anomaly.busy(), "anomaly map"),
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

    /// The Anomaly view (its map, once computed, and its controls).
    pub fn anomaly(&self) -> &AnomalyView {
        &self.anomaly
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
        let visible = self.compare.view().mode == CompareMode::Anomaly;
        let category = cur.query().category;
        self.anomaly.update(
            ui.ctx(),
            Some((cur.path.as_path(), category.as_deref())),
            env.reference,
            env.reference_error,
            env.reference_generation,
            &env.settings
                .pipeline
                .map_backbone
                .clone()
                .unwrap_or_default(),
            visible,
        );
        egui::CentralPanel::default()
            .show(ui, |ui| self.compare.ui_with(ui, Some(&mut self.anomaly)));
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
}
