//! Background work the status bar can show: a [`Job`] that also carries live
//! progress and a cancel token, and the row the status bar draws for it.

use std::sync::{Arc, Mutex};

use eframe::egui;

use super::jobs::Job;
use crate::jobs::{CancelToken, Progress, ProgressSink};

/// The latest progress report of one running job, written by its thread and read
/// by the UI every frame.
#[derive(Clone, Default)]
pub struct SharedProgress(Arc<Mutex<Option<Progress>>>);

impl SharedProgress {
    pub fn get(&self) -> Option<Progress> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ProgressSink for SharedProgress {
    fn report(&self, progress: Progress) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(progress);
    }
}

/// A running background job as people see it in the status bar.
#[derive(Clone)]
pub struct Activity {
    /// What it does, in a few words ("build reference memory").
    pub label: String,
    pub progress: Option<Progress>,
    /// Present when the job stops on request.
    pub cancel: Option<CancelToken>,
}

impl Activity {
    /// A job with neither progress nor cancel (shown with a spinner).
    pub fn named(label: impl Into<String>) -> Self {
        Activity {
            label: label.into(),
            progress: None,
            cancel: None,
        }
    }
}

/// A [`Job`] whose work reports progress and looks at a cancel token.
pub struct TrackedJob<T: Send + 'static> {
    job: Job<T>,
    label: String,
    progress: SharedProgress,
    cancel: CancelToken,
}

impl<T: Send + 'static> TrackedJob<T> {
    pub fn spawn(
        name: &'static str,
        label: impl Into<String>,
        work: impl FnOnce(&SharedProgress, &CancelToken) -> anyhow::Result<T> + Send + 'static,
    ) -> Self {
        let progress = SharedProgress::default();
        let cancel = CancelToken::new();
        let (p, c) = (progress.clone(), cancel.clone());
        TrackedJob {
            job: Job::spawn(name, move || work(&p, &c)),
            label: label.into(),
            progress,
            cancel,
        }
    }

    /// The result, once, when the work has finished.
    pub fn take(&mut self) -> Option<Result<T, String>> {
        self.job.take()
    }

    /// Asks the work to stop; its result (usually a "cancelled" error) still arrives.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    pub fn progress(&self) -> Option<Progress> {
        self.progress.get()
    }

    pub fn activity(&self) -> Activity {
        Activity {
            label: self.label.clone(),
            progress: self.progress.get(),
            cancel: Some(self.cancel.clone()),
        }
    }
}

/// One running job in the status bar: a progress bar (or a spinner while the total
/// is unknown), its name, and a cancel button when it can stop.
pub fn activity_row(ui: &mut egui::Ui, activity: &Activity) {
    match &activity.progress {
        Some(p) if p.total > 0 => {
            ui.add(
                egui::ProgressBar::new(p.fraction())
                    .desired_width(110.0)
                    .text(format!("{} {}/{}", p.stage, p.done, p.total)),
            );
        }
        _ => {
            ui.spinner();
        }
    }
    ui.label(&activity.label);
    if let Some(cancel) = &activity.cancel {
        if cancel.is_cancelled() {
            ui.weak("stopping…");
        } else if ui
            .small_button("Stop")
            .on_hover_text(format!("Stop: {}", activity.label))
            .clicked()
        {
            cancel.cancel();
        }
    }
}

/// A short sentence for a progress report, e.g. "embedding 12 of 24 images".
pub fn progress_text(p: &Progress) -> String {
    if p.total == 0 {
        p.stage.to_string()
    } else {
        format!("{}: {} of {}", p.stage, p.done, p.total)
    }
}
