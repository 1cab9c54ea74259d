//! What a batch run is asked to do ([`RunSpec`]), how it is steered while it runs
//! ([`RunControl`]), what it reports ([`RunEvent`], [`RunProgress`],
//! [`RunSummary`]) and how it can fail ([`RunError`]): the runner's interface,
//! apart from the machinery in [`super::runner`].

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::journal::{JournalError, JournalRecord};
use super::lock::LockError;
use super::manifest::{ManifestError, Placement, RunManifest, Selection, Shard};
use super::select::SelectError;
use crate::dataset::mmad::DatasetError;
use crate::echo::PipelineSettings;
use crate::echo::plan::ReferenceKind;
use crate::echo::preflight::InputCheck;
use crate::echo::protocol::{Protocol, ProtocolError};
use crate::echo::setup::SetupError;
use crate::jobs::CancelToken;
use crate::mllm::EndpointConfig;
use crate::vision::spec::EmbedderSpec;

/// Where the reference images come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TemplateSource {
    /// Retrieved from a reference memory (Echo's Reference Extractor).
    Retrieved,
    /// MMAD's `similar_templates[0]`.
    Similar,
    /// MMAD's `random_templates[0]` (MMAD's plain 1-shot).
    Random,
    /// No reference image.
    None,
}

impl TemplateSource {
    /// The name recorded in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateSource::Retrieved => "retrieved",
            TemplateSource::Similar => "similar",
            TemplateSource::Random => "random",
            TemplateSource::None => "none",
        }
    }

    pub fn reference_kind(self) -> ReferenceKind {
        match self {
            TemplateSource::Retrieved => ReferenceKind::Memory,
            TemplateSource::Similar => ReferenceKind::Similar,
            TemplateSource::Random => ReferenceKind::Random,
            TemplateSource::None => ReferenceKind::None,
        }
    }

    /// The source a manifest names (see [`TemplateSource::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        [
            TemplateSource::Retrieved,
            TemplateSource::Similar,
            TemplateSource::Random,
            TemplateSource::None,
        ]
        .into_iter()
        .find(|t| t.as_str() == name)
    }

    /// `retrieved` when a memory is given, else MMAD's `similar_templates`.
    pub fn default_for(memory: bool) -> Self {
        if memory {
            TemplateSource::Retrieved
        } else {
            TemplateSource::Similar
        }
    }
}

/// Everything a run needs. Endpoints' `max_in_flight` is their concurrency.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub dataset_path: PathBuf,
    /// The folder the dataset's image keys are relative to.
    pub root: PathBuf,
    pub selection: Selection,
    pub shard: Option<Shard>,
    /// Host and scheduler when the shard came from the environment (`--shard auto`).
    pub placement: Option<Placement>,
    pub pipeline: PipelineSettings,
    pub template: TemplateSource,
    pub memory: Option<PathBuf>,
    /// Overrides the embedder recorded in the memory.
    pub embedder: Option<EmbedderSpec>,
    /// Default: the bundled knowledge base (when present).
    pub knowledge: Option<PathBuf>,
    /// Default: the bundled condensed knowledge (when present).
    pub condensed: Option<PathBuf>,
    pub endpoints: Vec<EndpointConfig>,
    pub image_affinity: bool,
    /// The run folder.
    pub out: PathBuf,
    /// Continue the run in `out`, skipping questions already recorded.
    pub resume: bool,
    /// Resume even when the settings differ from the folder's manifest.
    pub force: bool,
    /// Drop the journal's error records and ask those questions again (implies resume).
    pub retry_errors: bool,
    /// Ask questions whose plan reads an input that is not there (knowledge for
    /// their category, memory images of it, template files) instead of refusing;
    /// the manifest and the summary then say how many.
    pub allow_missing_inputs: bool,
    /// Stop gracefully (resumable) once the journal's questions have used this many
    /// tokens as the servers report them (`--max-tokens-total`); earlier sessions'
    /// records count too. `None`: no budget.
    pub max_tokens_total: Option<u64>,
    /// How each question is asked: samples, rotations, shuffle, logprobs (plain by
    /// default). Recorded in the manifest and part of its fingerprint.
    pub protocol: Protocol,
    /// Stop gracefully (resumable) once the journal's tokens cost this much at the
    /// endpoints' prices (`--max-cost`; every endpoint needs a price, or the run is
    /// refused); earlier sessions' records count too. `None`: no budget.
    pub max_cost: Option<f64>,
    pub note: String,
    /// Called on a question's task just before the question is asked. Production
    /// leaves it unset; tests inject faults through it (a panic, a delay) to check
    /// that a run survives what no real endpoint can be made to do on cue.
    pub before_question: Option<QuestionHook>,
}

/// A function of a question's dataset index (its `index` in the journal), run on the
/// question's own task before the pipeline is called: what it does there (panic,
/// sleep, count) the run meets as if the question had done it.
#[derive(Clone)]
pub struct QuestionHook(Arc<dyn Fn(usize) + Send + Sync>);

impl QuestionHook {
    pub fn new(hook: impl Fn(usize) + Send + Sync + 'static) -> Self {
        QuestionHook(Arc::new(hook))
    }

    pub fn call(&self, index: usize) {
        (self.0)(index)
    }
}

impl std::fmt::Debug for QuestionHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuestionHook(..)")
    }
}

impl RunSpec {
    /// A run of the whole dataset with the default pipeline and MMAD's similar
    /// templates; adjust the fields for anything else.
    pub fn new(
        dataset_path: impl Into<PathBuf>,
        root: impl Into<PathBuf>,
        endpoints: Vec<EndpointConfig>,
        out: impl Into<PathBuf>,
    ) -> Self {
        RunSpec {
            dataset_path: dataset_path.into(),
            root: root.into(),
            selection: Selection::default(),
            shard: None,
            placement: None,
            pipeline: PipelineSettings::default(),
            template: TemplateSource::Similar,
            memory: None,
            embedder: None,
            knowledge: None,
            condensed: None,
            endpoints,
            image_affinity: false,
            out: out.into(),
            resume: false,
            force: false,
            retry_errors: false,
            allow_missing_inputs: false,
            max_tokens_total: None,
            protocol: Protocol::default(),
            max_cost: None,
            note: String::new(),
            before_question: None,
        }
    }
}

impl RunSpec {
    /// The spec that asks again what the run with manifest `m` asked, with the same
    /// settings, into `out`. Endpoints are matched to `configured` by name (for
    /// timeouts, retries and keys' variables); one no longer configured is rebuilt
    /// from the manifest alone.
    pub fn from_manifest(
        m: &RunManifest,
        configured: &[EndpointConfig],
        out: impl Into<PathBuf>,
    ) -> Result<RunSpec, RunError> {
        m.check_paths()?;
        let endpoints = m
            .endpoints
            .iter()
            .map(|e| {
                let base = configured
                    .iter()
                    .find(|s| s.name == e.name)
                    .cloned()
                    .unwrap_or_default();
                EndpointConfig {
                    name: e.name.clone(),
                    base_url: e.base_url.clone(),
                    model: e.model.clone(),
                    api_key_env: e.api_key_env.clone(),
                    max_in_flight: e.concurrency.max(1),
                    ..base
                }
            })
            .collect();
        let mut spec = RunSpec::new(&m.dataset.path, &m.dataset.root, endpoints, out);
        spec.selection = m.selection.clone();
        spec.shard = m.shard;
        spec.pipeline = m.pipeline.clone();
        spec.template =
            TemplateSource::parse(&m.template).ok_or_else(|| RunError::UnknownTemplate {
                name: m.template.clone(),
            })?;
        spec.memory = m.memory.as_ref().map(|r| r.path.clone());
        spec.knowledge = m.knowledge.as_ref().map(|r| r.path.clone());
        spec.condensed = m.condensed.as_ref().map(|r| r.path.clone());
        spec.image_affinity = m.image_affinity;
        spec.protocol = m.protocol.clone().unwrap_or_default();
        // The run was started knowing some questions lack inputs: going on with it
        // is the same choice.
        spec.allow_missing_inputs = m.missing_inputs.is_some();
        spec.note = m.note.clone();
        Ok(spec)
    }
}

/// Stop requests for a running [`run`]: `stop` finishes the questions in flight
/// and records them; `abandon` drops them.
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    pub stop: CancelToken,
    pub abandon: CancelToken,
}

impl RunControl {
    pub fn new() -> Self {
        Self::default()
    }

    /// What Ctrl-C does: the first call stops gracefully, the next one abandons.
    pub fn interrupt(&self) {
        if self.stop.is_cancelled() {
            self.abandon.cancel();
        } else {
            self.stop.cancel();
        }
    }
}

/// Sent while a run goes on.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The folder is locked and prepared; `already_done` of `total` have records.
    Started {
        total: usize,
        already_done: usize,
        /// Error records removed by `retry_errors`, asked again in this run.
        retrying: usize,
        run_dir: PathBuf,
    },
    /// A record has been written to the journal.
    Record(Box<JournalRecord>),
    Progress(RunProgress),
    Finished(RunSummary),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunProgress {
    /// Questions of the selection with a record (earlier sessions included).
    pub done: usize,
    /// Of those, error records.
    pub errors: usize,
    pub total: usize,
    /// Records written per second in this session.
    pub questions_per_s: f64,
    pub eta_s: Option<f64>,
    /// Correct among the answered (ok) records so far; plain accuracy, not MMAD's
    /// balanced metric.
    pub running_accuracy: Option<f64>,
    pub in_flight: usize,
    pub elapsed_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    /// Every selected question has a record.
    Finished,
    /// Stopped on request after recording the questions in flight.
    Stopped,
    /// Abandoned: the questions in flight were dropped.
    Abandoned,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub outcome: RunOutcome,
    /// Questions selected (this shard's).
    pub total: usize,
    /// Records found in the folder when the run started.
    pub already_done: usize,
    /// Records written by this session.
    pub written: usize,
    /// Questions in flight when the run was abandoned (not recorded).
    pub dropped: usize,
    /// Ok records of the selection, all sessions together.
    pub answered: usize,
    /// Error records of the selection, all sessions together.
    pub errors: usize,
    pub correct: usize,
    /// `correct / answered`.
    pub accuracy: Option<f64>,
    /// MMAD's metric (the Average/Average cell) over the answered records.
    pub mmad_average: Option<f64>,
    pub elapsed_s: f64,
    /// `written / elapsed_s`.
    pub questions_per_s: f64,
    /// Questions of the selection asked without an input their plan reads
    /// (allowed by [`RunSpec::allow_missing_inputs`]; see the manifest's
    /// `missing_inputs`).
    pub without_inputs: usize,
    /// Tokens the servers reported over the journal's records, all sessions.
    pub tokens: u64,
    /// The run stopped because `max_tokens_total` was reached.
    pub budget_reached: bool,
    /// What the journal's tokens cost, all sessions, when every endpoint has a price.
    pub cost: Option<f64>,
    /// The run stopped because `max_cost` was reached.
    pub max_cost_reached: bool,
}

impl RunSummary {
    pub fn is_complete(&self) -> bool {
        self.outcome == RunOutcome::Finished
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no endpoint to send questions to: give at least one")]
    NoEndpoint,
    #[error(
        "endpoint `{name}` has no price, so a cost budget cannot be counted: give --price-prompt and --price-completion, or set the endpoint's prices in the Settings tab"
    )]
    NoPrice { name: String },
    #[error(
        "the `retrieved` template needs a reference memory (build one with `memory build` and pass its folder)"
    )]
    RetrievedNeedsMemory,
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error("cannot read the dataset file {}: {source}", path.display())]
    DatasetRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the dataset root {} is not a folder", .0.display())]
    NoRoot(PathBuf),
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error(transparent)]
    Setup(Box<SetupError>),
    #[error("endpoint `{name}`: {message}")]
    Endpoint { name: String, message: String },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(
        "run folder {} already holds a run ({records} records in its journal); resume it (--resume, or --resume --retry-errors), or choose another folder",
        dir.display()
    )]
    AlreadyStarted { dir: PathBuf, records: usize },
    #[error(
        "run folder {} was started with different settings ({}); resume with the same settings, or force it (--force) to continue under the new ones",
        dir.display(), differences.join(", ")
    )]
    SettingsDiffer {
        dir: PathBuf,
        differences: Vec<String>,
    },
    #[error(
        "run folder {} has a journal but no readable manifest.json ({reason}); force it (--force) to resume anyway",
        dir.display()
    )]
    NoManifest { dir: PathBuf, reason: String },
    #[error("cannot rewrite the journal {} without its error records: {source}", path.display())]
    Rewrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("run folder {}: {source}", dir.display())]
    NotARunFile {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("the run's manifest names an unknown reference source `{name}`")]
    UnknownTemplate { name: String },
    #[error(
        "{} of the {to_ask} questions to ask would run without an input their plan reads:\n{}\nnothing was asked; fix the inputs, or pass --allow-missing-knowledge to ask them anyway (the run then records how many ran without)",
        check.questions, check.cli_report()
    )]
    MissingInputs { check: InputCheck, to_ask: usize },
}

impl From<SetupError> for RunError {
    fn from(e: SetupError) -> Self {
        RunError::Setup(Box::new(e))
    }
}
