//! The "Local model" section: a model folder or `hf:ORG/NAME` name, checked as
//! typed on a background job (which files are there, the weights' size, the
//! memory they need), and a Download button for hub names that fetches into the
//! Hugging Face cache only when clicked, with progress and Cancel.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use eframe::egui;

use super::SettingsState;
use super::check::Check;
use super::widgets::{PathKind, path_row, section};
use crate::jobs::CancelToken;
use crate::local::ModelSource;
use crate::local::download::{DownloadProgress, Downloaded, Hub, download};
use crate::local::folder_check::{
    FolderReport, LoadDtype, check_folder, human_bytes, model_source,
};
use crate::mllm::EndpointConfig;
use crate::runs::endpoint::LOCAL_PREFIX;
use crate::ui::jobs::Job;
use crate::ui::local_model::{self, LocalStatus};

/// The field's label (also its accessibility name, which tests find it by).
const FIELD: &str = "Model folder or hf: name";

/// A download started by the Download button.
pub(super) struct DownloadRun {
    /// The `hf:` name being fetched.
    spec: String,
    job: Job<Downloaded>,
    cancel: CancelToken,
    progress: Arc<Mutex<Option<DownloadProgress>>>,
}

/// The section's state beside the draft's `local_model`.
#[derive(Default)]
pub(super) struct LocalModelState {
    pub(super) files: Check<String, FolderReport>,
    pub(super) download: Option<DownloadRun>,
    /// The last download's outcome, for the name it fetched.
    pub(super) downloaded: Option<(String, Result<String, String>)>,
    /// The hub Download fetches from; the environment's (`HF_ENDPOINT`, ...) when
    /// unset. Tests point it at a local fake hub.
    pub(super) hub: Option<Hub>,
}

impl LocalModelState {
    pub(super) fn poll(&mut self) {
        self.files.poll();
        let finished = self.download.as_mut().and_then(|run| run.job.take());
        if let Some(result) = finished {
            let run = self.download.take().expect("download present");
            let outcome = result.map(|done| {
                format!(
                    "Downloaded {} files into {} ({} fetched).",
                    done.files.len(),
                    done.snapshot.display(),
                    human_bytes(done.fetched_bytes)
                )
            });
            self.downloaded = Some((run.spec, outcome));
            // The files on disk changed: check the name again.
            self.files.again();
        }
    }

    pub(super) fn busy(&self) -> bool {
        self.files.busy() || self.download.is_some()
    }

    pub(super) fn activity_names(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = self.files.name().into_iter().collect();
        if let Some(run) = &self.download {
            out.push(run.job.name());
        }
        out
    }

    /// Starts checking the typed name, unless it is empty. A hub name is looked
    /// up in the cache Download writes to.
    pub(super) fn start_check(&mut self, spec: Option<&str>) {
        let Some(spec) = spec.map(str::trim).filter(|s| !s.is_empty()) else {
            return;
        };
        let cache_root = self.hub.as_ref().map(|h| h.cache_root.clone());
        self.files
            .want("check local model files", &spec.to_owned(), move |spec| {
                let mut source = model_source(&spec);
                if let ModelSource::HfCache { cache_dir, .. } = &mut source
                    && cache_dir.is_none()
                {
                    *cache_dir = cache_root;
                }
                Ok(check_folder(&source, LoadDtype::Stored))
            });
    }

    fn start_download(&mut self, spec: &str) {
        let ModelSource::HfCache { repo, revision, .. } = model_source(spec) else {
            return;
        };
        let cancel = CancelToken::new();
        let progress = Arc::new(Mutex::new(None));
        let (job_cancel, job_progress) = (cancel.clone(), progress.clone());
        let chosen_hub = self.hub.clone();
        let job = Job::spawn("download model", move || {
            let hub = match chosen_hub {
                Some(hub) => hub,
                None => Hub::from_env()?,
            };
            let handle = crate::ui::services::runtime().map_err(anyhow::Error::msg)?;
            let report = |p: &DownloadProgress| {
                if let Ok(mut last) = job_progress.lock() {
                    *last = Some(p.clone());
                }
            };
            Ok(download(
                &handle,
                &hub,
                &repo,
                revision.as_deref(),
                &job_cancel,
                &report,
            )?)
        });
        self.downloaded = None;
        self.download = Some(DownloadRun {
            spec: spec.to_owned(),
            job,
            cancel,
            progress,
        });
    }
}

impl SettingsState {
    pub(super) fn local_model_section(&mut self, ui: &mut egui::Ui) {
        section(
            ui,
            "Local model",
            "A vision-language model run on this machine (Qwen3-VL): a folder with its \
             config, tokenizer, chat template and safetensors weights, or hf:ORG/NAME from \
             the local Hugging Face cache. Nothing is downloaded unless you press Download.",
            |ui| {
                let mut path = PathBuf::from(self.draft.local_model.clone().unwrap_or_default());
                egui::Grid::new("local_model")
                    .num_columns(2)
                    .show(ui, |ui| {
                        if path_row(
                            ui,
                            &mut self.picker,
                            FIELD,
                            &mut path,
                            PathKind::Folder,
                            "a folder, or hf:Qwen/Qwen3-VL-2B-Instruct",
                        ) {
                            let text = path.to_string_lossy().trim().to_owned();
                            self.draft.local_model = (!text.is_empty()).then_some(text);
                        }
                    });
                self.local_model_status(ui);
                self.local_model_use(ui);
            },
        );
    }

    fn local_model_status(&mut self, ui: &mut egui::Ui) {
        let Some(spec) = self.draft.local_model.clone() else {
            ui.weak("No local model chosen.");
            return;
        };
        let state = &mut self.local_model;
        let error = ui.visuals().error_fg_color;
        match state.files.for_key(&spec) {
            Some(Ok(report)) => {
                for line in report.lines(LoadDtype::Stored) {
                    if line.starts_with("missing") || line.starts_with("problem") {
                        ui.colored_label(error, line);
                    } else {
                        ui.label(line);
                    }
                }
                if report.complete() {
                    ui.label("Ready: every file the model needs is there.");
                }
            }
            Some(Err(e)) => {
                ui.colored_label(error, e);
            }
            None => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.weak("Checking the model's files…");
                });
            }
        }
        let is_hub = matches!(model_source(&spec), ModelSource::HfCache { .. });
        let complete = state
            .files
            .for_key(&spec)
            .is_some_and(|r| r.as_ref().is_ok_and(FolderReport::complete));
        if let Some(run) = &state.download {
            let last = run.progress.lock().ok().and_then(|p| p.clone());
            let (fraction, text) = match &last {
                Some(p) if p.total > 0 => (
                    p.done as f32 / p.total as f32,
                    format!(
                        "{} of {} · {}",
                        human_bytes(p.done),
                        human_bytes(p.total),
                        p.file
                    ),
                ),
                _ => (0.0, "Asking the hub for the file list…".to_owned()),
            };
            ui.label(format!("Downloading {}", run.spec));
            ui.horizontal(|ui| {
                ui.add(
                    egui::ProgressBar::new(fraction)
                        .text(text)
                        .desired_width(360.0),
                );
                if ui
                    .button("Cancel")
                    .on_hover_text("Stop; what arrived is kept and the next Download continues it")
                    .clicked()
                {
                    run.cancel.cancel();
                }
            });
        } else if is_hub && !complete {
            let download = ui.button("Download").on_hover_text(
                "Fetch the model's files from the Hugging Face hub into the local cache \
                 (HF_ENDPOINT, HF_HOME and HF_TOKEN are honoured; resumable)",
            );
            if download.clicked() {
                state.start_download(&spec);
            }
        }
        if let Some((name, outcome)) = &state.downloaded
            && *name == spec
        {
            match outcome {
                Ok(text) => {
                    ui.label(text);
                }
                Err(e) => {
                    ui.colored_label(error, format!("Download failed: {e}"));
                }
            }
        }
    }

    /// Load / Unload, and making the model the endpoint Inspect asks: only once
    /// every file it needs is there.
    fn local_model_use(&mut self, ui: &mut egui::Ui) {
        let Some(spec) = self.draft.local_model.clone() else {
            return;
        };
        let complete = self
            .local_model
            .files
            .for_key(&spec)
            .is_some_and(|r| r.as_ref().is_ok_and(FolderReport::complete));
        if !complete {
            return;
        }
        let url = format!("{LOCAL_PREFIX}{spec}");
        let max_tokens = self
            .draft
            .active_endpoint()
            .map_or(EndpointConfig::default().max_tokens, |e| e.max_tokens)
            as usize;
        let status = local_model::status();
        ui.horizontal(|ui| {
            match &status {
                LocalStatus::Loading(loading) => {
                    ui.spinner();
                    ui.label(format!("Loading {loading}…"));
                }
                LocalStatus::Loaded {
                    spec: loaded,
                    load_ms,
                } if *loaded == spec => {
                    ui.label(format!("Loaded in {:.1} s.", load_ms / 1000.0));
                    if ui
                        .button("Unload")
                        .on_hover_text("Free the model's memory; the next question loads it again")
                        .clicked()
                    {
                        local_model::unload();
                    }
                }
                _ => {
                    if ui
                        .button("Load")
                        .on_hover_text("Read the weights now, so the first question does not wait")
                        .clicked()
                    {
                        local_model::start_load(spec.clone(), max_tokens, ui.ctx().clone());
                    }
                }
            }
            let active = self
                .draft
                .active_endpoint()
                .is_some_and(|e| e.base_url == url);
            if active {
                ui.label("Inspect answers with it (the active endpoint).");
            } else if ui
                .button("Answer with it")
                .on_hover_text(
                    "Add it as an endpoint and make that the active one: Inspect, and Batch \
                     runs on that endpoint, then need no server",
                )
                .clicked()
            {
                self.use_local_endpoint(&url);
            }
        });
        if let LocalStatus::Failed {
            spec: failed,
            message,
        } = &status
            && *failed == spec
        {
            ui.colored_label(ui.visuals().error_fg_color, message);
        }
    }

    /// The endpoint `local:SPEC` (added once, named after the model) becomes the
    /// active one in the draft; Save keeps it.
    fn use_local_endpoint(&mut self, url: &str) {
        let position = self.draft.endpoints.iter().position(|e| e.base_url == url);
        let index = position.unwrap_or_else(|| {
            let name = url.rsplit(['/', '\\']).next().unwrap_or(url).to_owned();
            self.draft.endpoints.push(EndpointConfig {
                name: format!("local {name}"),
                base_url: url.to_owned(),
                model: name,
                // One question at a time: the model holds every core.
                max_in_flight: 1,
                ..EndpointConfig::default()
            });
            self.draft.endpoints.len() - 1
        });
        self.draft.active_endpoint = index;
    }
}
