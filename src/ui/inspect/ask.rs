//! Asking the model: the background job that answers the chosen questions one
//! after another through the Echo pipeline, the messages it sends back, and the
//! controls that show and cancel it.

use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use eframe::egui;

use super::{InspectEnv, InspectState};
use crate::config::Settings;
use crate::dataset::Question;
use crate::echo::backend::ChatBackend;
use crate::echo::pipeline::PipelineEvent;
use crate::echo::query::Query;
use crate::echo::setup::{HeldMemory, HeldParts, context_with};
use crate::echo::{MllmBackend, PipelineContext, PipelineError};
use crate::jobs::CancelToken;
use crate::knowledge::KnowledgeBase;
use crate::runs::endpoint::local_spec;
use crate::ui::LoadedReference;
use crate::ui::trace_view::{Outcome, QuestionRun};

/// Which question of the image a run answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The MMAD conversation's question at this index.
    Mmad(usize),
    /// The user's own question.
    Custom,
}

impl Slot {
    pub(super) fn label(self) -> String {
        match self {
            Slot::Mmad(i) => format!("Q{}", i + 1),
            Slot::Custom => "your question".into(),
        }
    }
}

enum RunMessage {
    Started(Slot),
    Event(Slot, PipelineEvent),
    /// A local model's reply so far.
    Streamed(Slot, String),
    Finished(Slot, Outcome),
    AllDone,
}

pub(super) struct ActiveRun {
    rx: mpsc::Receiver<RunMessage>,
    pub(super) cancel: CancelToken,
    pub(super) image: PathBuf,
    pub(super) slots: Vec<Slot>,
    pub(super) finished: usize,
    pub(super) current: Option<Slot>,
}

/// Everything a background run needs, cloned out of the app.
struct RunRequest {
    settings: Settings,
    knowledge: Option<Arc<KnowledgeBase>>,
    reference: Option<LoadedReference>,
    query: Query,
    questions: Vec<(Slot, Question)>,
}

impl InspectState {
    pub(super) fn poll_runs(&mut self) {
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
                Ok(RunMessage::Streamed(slot, text)) => {
                    if let Some(run) = self.runs.get_mut(&(active.image.clone(), slot)) {
                        run.streamed = text;
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

    pub(super) fn start_run(
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

    pub(super) fn run_controls(&mut self, ui: &mut egui::Ui) {
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
}

/// What Inspect asks: a server, or the app's loaded local model.
enum Asker {
    Http(MllmBackend),
    Local(crate::echo::local_backend::LocalBackend),
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
    // The same setup as `inspect` and `run` (experts table, prompts, condensed
    // knowledge), with the knowledge base and memory the app already holds.
    type Setup = (PipelineContext, Asker, tokio::runtime::Handle);
    let setup = || -> Result<Setup, String> {
        let endpoint = request
            .settings
            .active_endpoint()
            .cloned()
            .ok_or("no model endpoint is configured: add one in Settings")?;
        let held = HeldParts {
            knowledge: request.knowledge.clone(),
            memory: request.reference.as_ref().map(|r| HeldMemory {
                memory: r.memory.clone(),
                embedder: r.embedder.clone(),
            }),
        };
        let ctx = context_with(request.settings.pipeline.clone(), None, held)
            .map_err(|e| crate::util::error::chain(&e))?;
        // An endpoint `local:SPEC` is the app's loaded model (loaded here on the
        // first question, kept for the next ones).
        let backend = match local_spec(&endpoint.base_url) {
            Some(spec) => Asker::Local(crate::ui::local_model::get_or_load(
                spec,
                endpoint.max_tokens as usize,
            )?),
            None => {
                Asker::Http(MllmBackend::new(endpoint).map_err(|e| crate::util::error::chain(&e))?)
            }
        };
        Ok((ctx, backend, crate::ui::services::runtime()?))
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
        // A local model's reply shows in the Decision Maker's card as it comes.
        let streaming;
        let asker: &dyn ChatBackend = match &backend {
            Asker::Http(b) => b,
            Asker::Local(b) => {
                let (tx, repaint) = (tx.clone(), repaint.clone());
                streaming = b.recount().streaming(Arc::new(move |text: &str| {
                    let _ = tx.send(RunMessage::Streamed(slot, text.to_owned()));
                    repaint.request_repaint();
                }));
                &streaming
            }
        };
        let result = runtime.block_on(crate::echo::answer(
            asker,
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
