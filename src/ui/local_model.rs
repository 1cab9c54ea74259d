//! The app's one loaded local model (issue 16): loaded when Settings' Load is
//! pressed or when Inspect first asks an endpoint `local:SPEC`, kept until
//! Unload or until another model is asked for, so a question after the first
//! costs no load. It lives outside the app state because Inspect's background
//! thread loads it and every later question reuses it; the UI only reads its
//! status, which never waits for a load in progress.

use std::sync::Mutex;
use std::time::Duration;

use eframe::egui;

use crate::echo::local_backend::LocalBackend;
use crate::local::{ModelSource, SamplingOptions, default_device, pool};

/// What the slot holds; [`status`] gives the UI a copy of the visible part.
enum Slot {
    Empty,
    Loading {
        spec: String,
    },
    Loaded {
        spec: String,
        backend: LocalBackend,
        load_ms: f64,
    },
    Failed {
        spec: String,
        message: String,
    },
}

static SLOT: Mutex<Slot> = Mutex::new(Slot::Empty);

fn slot() -> std::sync::MutexGuard<'static, Slot> {
    SLOT.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the status bar and Settings show.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalStatus {
    None,
    Loading(String),
    Loaded { spec: String, load_ms: f64 },
    Failed { spec: String, message: String },
}

pub fn status() -> LocalStatus {
    match &*slot() {
        Slot::Empty => LocalStatus::None,
        Slot::Loading { spec } => LocalStatus::Loading(spec.clone()),
        Slot::Loaded { spec, load_ms, .. } => LocalStatus::Loaded {
            spec: spec.clone(),
            load_ms: *load_ms,
        },
        Slot::Failed { spec, message } => LocalStatus::Failed {
            spec: spec.clone(),
            message: message.clone(),
        },
    }
}

/// `spec` (a folder or `hf:ORG/NAME`, without `local:`) ready to answer, with
/// counts of its own: the loaded model when it is that one, else loaded now
/// (blocking: call it from a background thread). Another thread loading the same
/// model is waited for rather than loaded twice; a different model replaces it.
pub fn get_or_load(spec: &str, max_tokens: usize) -> Result<LocalBackend, String> {
    loop {
        let mut s = slot();
        match &*s {
            Slot::Loaded {
                spec: loaded,
                backend,
                ..
            } if loaded == spec => return Ok(backend.recount()),
            Slot::Loading { spec: loading } if loading == spec => {
                drop(s);
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            _ => {
                *s = Slot::Loading {
                    spec: spec.to_owned(),
                };
                break;
            }
        }
    }
    // Through the pool: a Batch run holding this model already lends its copy.
    let loaded = default_device()
        .and_then(|device| pool::get_or_load(&ModelSource::parse(spec), None, &device))
        .map_err(|e| crate::util::error::chain(&e));
    let mut s = slot();
    match loaded {
        Ok(pooled) => {
            let (model, load_ms) = (pooled.model, pooled.load_ms);
            let options = SamplingOptions {
                max_tokens,
                ..SamplingOptions::default()
            };
            let backend = LocalBackend::shared(model, format!("local:{spec}"), options);
            let answer = backend.recount();
            *s = Slot::Loaded {
                spec: spec.to_owned(),
                backend,
                load_ms,
            };
            Ok(answer)
        }
        Err(message) => {
            *s = Slot::Failed {
                spec: spec.to_owned(),
                message: message.clone(),
            };
            Err(message)
        }
    }
}

/// Loads `spec` on a thread of its own (Settings' Load), repainting when done.
pub fn start_load(spec: String, max_tokens: usize, ctx: egui::Context) {
    let spawned = std::thread::Builder::new()
        .name("local-model-load".into())
        .spawn(move || {
            // The outcome lands in the slot, where the UI reads it.
            let _ = get_or_load(&spec, max_tokens);
            ctx.request_repaint();
        });
    if let Err(e) = spawned {
        *slot() = Slot::Failed {
            spec: String::new(),
            message: format!("cannot start the loading thread: {e}"),
        };
    }
}

/// Frees the loaded model (questions being answered keep their own handle until
/// they finish).
pub fn unload() {
    let mut s = slot();
    if !matches!(*s, Slot::Loading { .. }) {
        *s = Slot::Empty;
    }
}

/// The status bar's entry: nothing until a model was asked for.
pub fn status_label(ui: &mut egui::Ui) {
    let text = match status() {
        LocalStatus::None => return,
        LocalStatus::Loading(spec) => format!("Local model: loading {spec}…"),
        LocalStatus::Loaded { spec, load_ms } => {
            format!("Local model: {spec} (loaded in {:.1} s)", load_ms / 1000.0)
        }
        LocalStatus::Failed { spec, message } => {
            ui.separator();
            ui.colored_label(
                ui.visuals().error_fg_color,
                format!("Local model {spec}: {message}"),
            );
            return;
        }
    };
    ui.separator();
    ui.label(text);
}
