//! The batch runner: every selected question of an MMAD dataset through the Echo
//! pipeline, across any number of endpoints, into a run folder that survives
//! crashes.
//!
//! A run folder holds `manifest.json` (what the run asked, see
//! [`RunManifest`]) and `journal.jsonl` (one record per finished question). The
//! runner is the journal's only writer: answers come back from concurrent tasks to
//! one loop that appends each record as a whole flushed line before counting it, so
//! a run killed at any moment leaves at most a torn last line, cut on the next
//! open. Resuming skips every index already in the journal, so no question is ever
//! recorded twice. A `.lock` held with an OS file lock keeps a second writer out.
//!
//! Dispatch sends each question to the endpoint with the fewest requests
//! outstanding among those below their concurrency limit ([`Dispatcher`]); with
//! image affinity, all questions about one image go to the endpoint that got its
//! first one, so a server's prefix cache sees the image once.
//!
//! Stopping: the first stop request ends dispatching and waits for the questions
//! in flight, which are recorded; abandoning (a second Ctrl-C) drops those, and
//! they are simply not recorded (a resume asks them again).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::budget::{Budget, Prices, endpoint_names};
use super::endpoint::EndpointBackend;
use super::journal::{
    AnswerQuestion, Confidence, JOURNAL_FILE, JournalRecord, JournalWriter, RecordRow,
    RecordStatus, RotationReply, SampleReply, read_journal_with,
};
use super::lock::RunLock;
use super::manifest::{
    DatasetRef, EndpointSummary, ForcedResume, KnowledgeRef, MANIFEST_FILE, MANIFEST_FORMAT,
    MemoryRef, RunManifest,
};
use super::select::select;
use crate::dataset::{DatasetRoot, MmadDataset, QuestionRef};
use crate::echo::error::PipelineError;
use crate::echo::preflight::{InputCheck, QuestionInputs, check_inputs};
use crate::echo::query::Query;
use crate::echo::setup::{ContextSources, SetupError, load_context};
use crate::echo::{PipelineContext, ProtocolAnswer, answer_protocol};
use crate::jobs::CancelToken;
use crate::mllm::Usage;
use crate::score::{AnswerRecord, ScoreOptions, score};

pub use super::dispatch::Dispatcher;
pub use super::spec::{
    QuestionHook, RunControl, RunError, RunEvent, RunOutcome, RunProgress, RunSpec, RunSummary,
    TemplateSource,
};

/// How often the run loop looks at its stop tokens and reports progress.
const TICK: Duration = Duration::from_millis(50);
/// Least time between two progress events.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// How far down the queue dispatch looks for a question whose image's endpoint
/// (under image affinity) has room, so one busy endpoint does not idle the others.
const LOOKAHEAD: usize = 256;

/// The current time as RFC 3339 UTC with milliseconds, e.g. `2026-11-22T08:00:00.123Z`.
pub fn rfc3339_now() -> String {
    crate::util::time::now_millis()
}

/// The base URL as the manifest records it: no credentials, no query (see [`crate::mllm::url_without_secrets`]).
fn shown_url(url: &str) -> String {
    let url = url.trim();
    let normalised = reqwest::Url::parse(url).map_or_else(|_| url.to_string(), |u| u.to_string());
    crate::mllm::url_without_secrets(&normalised)
        .trim_end_matches('/')
        .to_string()
}

/// One endpoint with the name records give it.
struct Endpoint {
    /// Named `model at URL`, as the pipeline's knowledge cache keys name a backend;
    /// each question asks through a [`EndpointBackend::recount`] of it.
    backend: EndpointBackend,
    /// The name recorded in journal lines and the manifest.
    name: String,
}

/// Shared by every question task.
struct Shared {
    dataset: MmadDataset,
    root: DatasetRoot,
    context: PipelineContext,
    endpoints: Vec<Endpoint>,
    before_question: Option<QuestionHook>,
}

/// A question waiting to be asked.
#[derive(Debug, Clone)]
struct Work {
    index: usize,
    key: Arc<str>,
    turn: usize,
}

enum Outcome {
    Answered(Box<ProtocolAnswer>),
    Failed(Failure),
    Abandoned,
}

/// Why a question gets an error record.
#[derive(Debug)]
enum Failure {
    /// The pipeline's error, kept typed (a model call's URL and HTTP status, the
    /// traces so far) up to the record, which writes its cause chain.
    Pipeline(PipelineError),
    /// The runner's own sentence: no such entry, an unusable image path, a panic.
    Runner(String),
}

impl Failure {
    /// The record's `error` text.
    fn message(&self) -> String {
        match self {
            Failure::Pipeline(e) => crate::util::error::chain(e),
            Failure::Runner(message) => message.clone(),
        }
    }

    /// The traces of the experts that ran before the failure.
    fn traces(&self) -> Vec<crate::echo::ExpertTrace> {
        match self {
            Failure::Pipeline(e) => e.traces().to_vec(),
            Failure::Runner(_) => Vec::new(),
        }
    }
}

struct Finished {
    work: Work,
    endpoint: usize,
    outcome: Outcome,
    attempts: u32,
    latency: Duration,
    /// Tokens the server reported for this question's calls.
    usage: Option<Usage>,
}

async fn ask(shared: Arc<Shared>, work: Work, e: usize, abandon: CancelToken) -> Finished {
    let start = Instant::now();
    if let Some(hook) = &shared.before_question {
        hook.call(work.index);
    }
    let backend = shared.endpoints[e].backend.recount();
    let outcome = match shared.dataset.entries.get(&*work.key) {
        None => Outcome::Failed(Failure::Runner(format!(
            "the dataset has no entry `{}`",
            work.key
        ))),
        Some(entry) => match Query::from_entry(&shared.root, &work.key, entry) {
            Err(e) => Outcome::Failed(Failure::Runner(format!("image `{}`: {e}", work.key))),
            Ok(query) => {
                let question = &entry.conversation[work.turn];
                match answer_protocol(
                    backend.chat(),
                    &shared.context,
                    &query,
                    question,
                    work.index,
                    &|_| {},
                    &abandon,
                )
                .await
                {
                    Ok(d) => Outcome::Answered(Box::new(d)),
                    Err(PipelineError::Cancelled { .. }) => Outcome::Abandoned,
                    Err(_) if abandon.is_cancelled() => Outcome::Abandoned,
                    Err(err) => Outcome::Failed(Failure::Pipeline(err)),
                }
            }
        },
    };
    Finished {
        work,
        endpoint: e,
        outcome,
        attempts: backend.attempts().max(1),
        latency: start.elapsed(),
        usage: backend.usage(),
    }
}

/// Everything checked and loaded before the first question is sent.
struct Prepared {
    shared: Arc<Shared>,
    manifest: RunManifest,
    manifest_path: PathBuf,
    writer: JournalWriter,
    _lock: RunLock,
    /// Selected questions without a record, in file order.
    pending: Vec<Work>,
    total: usize,
    /// What the journal says of the selection's questions, by index (the latest
    /// line of each wins).
    previous: BTreeMap<usize, RecordRow>,
    retrying: usize,
}

fn prepare(spec: &RunSpec) -> Result<Prepared, RunError> {
    if spec.endpoints.is_empty() {
        return Err(RunError::NoEndpoint);
    }
    if spec.template == TemplateSource::Retrieved && spec.memory.is_none() {
        return Err(RunError::RetrievedNeedsMemory);
    }
    spec.protocol.validate()?;
    if !spec.root.is_dir() {
        return Err(RunError::NoRoot(spec.root.clone()));
    }
    let dataset = MmadDataset::load(&spec.dataset_path)?;
    let dataset_sha256 = crate::util::fsx::sha256_file(&spec.dataset_path).map_err(|source| {
        RunError::DatasetRead {
            path: spec.dataset_path.clone(),
            source,
        }
    })?;
    let selected: Vec<Work> = select(&dataset, &spec.selection, spec.shard)?
        .iter()
        .map(|q| Work {
            index: q.index,
            key: Arc::from(q.key),
            turn: q.turn,
        })
        .collect();

    // Endpoint settings are checked before the folder is created or locked, so a
    // bad `max_in_flight` or URL leaves nothing behind.
    let mut endpoints = Vec::with_capacity(spec.endpoints.len());
    let mut model_hashes = Vec::with_capacity(spec.endpoints.len());
    for (cfg, name) in spec.endpoints.iter().zip(endpoint_names(spec)) {
        if spec.max_cost.is_some() && cfg.price().is_none() {
            return Err(RunError::NoPrice { name });
        }
        let label = format!("{} at {}", cfg.model, shown_url(&cfg.base_url));
        let opened = EndpointBackend::open(cfg, label).map_err(|message| RunError::Endpoint {
            name: name.clone(),
            message,
        })?;
        model_hashes.push(opened.model_sha256);
        endpoints.push(Endpoint {
            backend: opened.backend,
            name,
        });
    }

    // Taken before the slow part of the setup (a CLIP memory loads for seconds), so
    // a second run on a busy folder is refused at once; everything that reads or
    // writes the folder happens with it held.
    let lock = RunLock::acquire(&spec.out)?;

    let mut settings = spec.pipeline.clone();
    settings.reference = Some(spec.template.reference_kind());
    let loaded = load_context(
        settings,
        &ContextSources {
            knowledge: spec.knowledge.clone(),
            condensed: spec.condensed.clone(),
            memory: spec.memory.clone(),
            embedder: spec.embedder.clone(),
        },
    )?;

    let absolute = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let context = loaded.context.with_protocol(spec.protocol.clone());
    let mut manifest = RunManifest {
        format: MANIFEST_FORMAT,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        started_at: rfc3339_now(),
        finished_at: None,
        dataset: DatasetRef {
            path: absolute(&spec.dataset_path),
            sha256: dataset_sha256,
            root: absolute(&spec.root),
        },
        selection: spec.selection.clone(),
        shard: spec.shard,
        question_count: selected.len(),
        pipeline: context.recorded_settings(),
        template: spec.template.as_str().into(),
        memory: loaded.memory.map(|m| MemoryRef {
            path: absolute(&m.path),
            embedder: m.embedder,
            items: m.items,
        }),
        knowledge: loaded.knowledge.map(|k| KnowledgeRef {
            path: absolute(&k.path),
            version: k.version,
        }),
        condensed: loaded.condensed.map(|k| KnowledgeRef {
            path: absolute(&k.path),
            version: k.version,
        }),
        prompt_templates_hash: context.prompt_templates_hash(),
        endpoints: spec
            .endpoints
            .iter()
            .zip(&endpoints)
            .zip(model_hashes)
            .map(|((cfg, ep), model_sha256)| EndpointSummary {
                name: ep.name.clone(),
                base_url: shown_url(&cfg.base_url),
                model: cfg.model.clone(),
                api_key_env: cfg.api_key_env.clone(),
                // A local model takes one question at a time, whatever was asked.
                concurrency: match ep.backend {
                    EndpointBackend::Local(_) => 1,
                    EndpointBackend::Http(_) => cfg.max_in_flight,
                },
                price: cfg.price(),
                model_sha256,
            })
            .collect(),
        image_affinity: spec.image_affinity,
        note: spec.note.clone(),
        forced_from: Vec::new(),
        missing_inputs: None,
        placement: spec.placement.clone(),
        protocol: spec.protocol.recorded(),
    };

    let journal_path = spec.out.join(JOURNAL_FILE);
    let manifest_path = spec.out.join(MANIFEST_FILE);
    // Checked before anything is read or rewritten: a journal or manifest that is a
    // symlink (or a FIFO, a folder) is not ours, and whatever it points at is kept.
    for path in [&journal_path, &manifest_path] {
        crate::util::fsx::refuse_non_regular(path).map_err(|source| RunError::NotARunFile {
            dir: spec.out.clone(),
            source,
        })?;
    }
    // One streaming pass: a 40,000-question journal with traces is hundreds of MB,
    // and resume needs only each line's question, status and answer fields.
    let selected_indices: HashSet<usize> = selected.iter().map(|w| w.index).collect();
    let mut previous: BTreeMap<usize, RecordRow> = BTreeMap::new();
    let mut error_lines: Vec<(u64, u64)> = Vec::new();
    let existing = read_journal_with(&journal_path, |line, row: RecordRow| {
        let is_error = row.status == RecordStatus::Error;
        if is_error {
            error_lines.push((line.offset, line.len));
        }
        // Retrying drops every error line below, so they cannot count as done.
        if selected_indices.contains(&row.index) && !(is_error && spec.retry_errors) {
            previous.insert(row.index, row);
        }
    })?;
    let has_run = existing.lines > 0;
    let continuing = spec.resume || spec.retry_errors;
    if has_run && !continuing {
        return Err(RunError::AlreadyStarted {
            dir: spec.out.clone(),
            records: existing.lines,
        });
    }
    if has_run {
        match RunManifest::load(&manifest_path) {
            Ok(old) => {
                let mut differences = old.differences(&manifest);
                if old.shard != manifest.shard {
                    differences.push("shard".into());
                }
                if !differences.is_empty() && !spec.force {
                    return Err(RunError::SettingsDiffer {
                        dir: spec.out.clone(),
                        differences,
                    });
                }
                manifest.forced_from = old.forced_from.clone();
                if !differences.is_empty() {
                    manifest.forced_from.push(ForcedResume {
                        at: rfc3339_now(),
                        fingerprint: Some(old.fingerprint()),
                        differences,
                        records_before: existing.lines,
                    });
                }
                manifest.started_at = old.started_at;
            }
            Err(e) if !spec.force => {
                return Err(RunError::NoManifest {
                    dir: spec.out.clone(),
                    reason: e.to_string(),
                });
            }
            Err(e) => manifest.forced_from.push(ForcedResume {
                at: rfc3339_now(),
                fingerprint: None,
                differences: vec![format!("unreadable manifest ({e})")],
                records_before: existing.lines,
            }),
        }
    }
    // Before anything is written: a refusal leaves the folder as it was.
    let input_check = check_selection(&dataset, &selected, &context, &spec.root);
    if !input_check.is_complete() {
        // `previous` holds what is recorded and will not be asked again.
        let to_ask: HashSet<usize> = selected
            .iter()
            .map(|w| w.index)
            .filter(|i| !previous.contains_key(i))
            .collect();
        let lacking = input_check.restricted_to(&to_ask);
        if !lacking.is_complete() && !spec.allow_missing_inputs {
            return Err(RunError::MissingInputs {
                check: lacking,
                to_ask: to_ask.len(),
            });
        }
        manifest.missing_inputs = Some(input_check);
    }
    let mut complete_len = existing.complete_len;
    let retrying = if spec.retry_errors && has_run {
        if !error_lines.is_empty() || existing.torn_last_line {
            complete_len = drop_lines(&journal_path, existing.complete_len, &error_lines)?;
        }
        error_lines.len()
    } else {
        0
    };

    // The lock is held, so the journal is as scanned (or as just rewritten).
    let writer = JournalWriter::open_scanned(&journal_path, complete_len)?;
    let total = selected.len();
    let pending = selected
        .into_iter()
        .filter(|w| !previous.contains_key(&w.index))
        .collect();
    manifest.save(&manifest_path)?;
    Ok(Prepared {
        shared: Arc::new(Shared {
            dataset,
            root: DatasetRoot::new(spec.root.clone()),
            context,
            endpoints,
            before_question: spec.before_question.clone(),
        }),
        manifest,
        manifest_path,
        writer,
        _lock: lock,
        pending,
        total,
        previous,
        retrying,
    })
}

/// What [`run`] would find missing before asking anything (see [`check_inputs`]),
/// for a form to show before its Start: the spec's selection of `dataset`, with
/// the spec's knowledge files and, under category scope, its memory's categories.
/// Loads no embedder, so it is cheap enough to run on every change of the form.
pub fn check_spec_inputs(spec: &RunSpec, dataset: &MmadDataset) -> Result<InputCheck, RunError> {
    let selected: Vec<Work> = select(dataset, &spec.selection, spec.shard)?
        .iter()
        .map(|q| Work {
            index: q.index,
            key: Arc::from(q.key),
            turn: q.turn,
        })
        .collect();
    let mut settings = spec.pipeline.clone();
    settings.reference = Some(spec.template.reference_kind());
    let loaded = load_context(
        settings,
        &ContextSources {
            knowledge: spec.knowledge.clone(),
            condensed: spec.condensed.clone(),
            memory: None,
            embedder: None,
        },
    )?;
    let memory_categories = match &spec.memory {
        None => None,
        Some(dir) if spec.pipeline.scope == crate::echo::ScopeMode::Category => {
            let memory =
                crate::memory::ReferenceMemory::load(dir).map_err(|source| SetupError::Memory {
                    path: dir.clone(),
                    source,
                })?;
            Some(
                memory
                    .categories()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            )
        }
        // Global scope reads every image: only the memory's presence matters.
        Some(_) => Some(HashSet::new()),
    };
    let root = DatasetRoot::new(spec.root.clone());
    Ok(check_inputs(
        &loaded.context,
        &memory_categories,
        Some(&root),
        question_inputs(dataset, &selected),
    ))
}

fn question_inputs<'a>(
    dataset: &'a MmadDataset,
    selected: &'a [Work],
) -> impl Iterator<Item = QuestionInputs<'a>> {
    selected.iter().filter_map(|w| {
        let (key, entry) = dataset.entries.get_key_value(&*w.key)?;
        let question = entry.conversation.get(w.turn)?;
        Some(QuestionInputs {
            index: w.index,
            qtype: &question.qtype,
            dataset: Some(crate::dataset::dataset_of(key)).filter(|d| !d.is_empty()),
            category: Some(crate::dataset::category_of(key)).filter(|c| !c.is_empty()),
            entry: Some((key.as_str(), entry)),
        })
    })
}

/// Every selected question's plan inputs (see [`check_inputs`]).
fn check_selection(
    dataset: &MmadDataset,
    selected: &[Work],
    context: &PipelineContext,
    root: &Path,
) -> InputCheck {
    let root = DatasetRoot::new(root.to_path_buf());
    check_inputs(
        context,
        &context.memory_categories(),
        Some(&root),
        question_inputs(dataset, selected),
    )
}

/// Rewrites the journal without the lines at `drop` (offset, length: its error
/// records, found by the resume scan) and without anything past `complete_len` (a
/// torn last line), atomically: a crash leaves the old journal or the new one, so a
/// retried question never has two lines. The copy streams; nothing is parsed again.
/// Returns the new journal's length.
fn drop_lines(path: &Path, complete_len: u64, drop: &[(u64, u64)]) -> Result<u64, RunError> {
    use std::io::{Read, Write};
    let rewrite_err = |source| RunError::Rewrite {
        path: path.to_path_buf(),
        source,
    };
    let mut source = crate::util::fsx::open_regular_for_read(path).map_err(rewrite_err)?;
    let mut written = 0u64;
    // Published by rename with the folder fsynced, and never through a link: a
    // journal symlinked to another file must not get that file rewritten.
    crate::util::fsx::atomic_write_no_follow_with(path, |out| {
        let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
        let mut position = 0u64;
        let mut keep = |from: u64, to: u64, source: &mut std::fs::File| -> std::io::Result<()> {
            let n = std::io::copy(&mut source.take(to - from), &mut out)?;
            if n != to - from {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the journal got shorter while it was rewritten",
                ));
            }
            written += n;
            Ok(())
        };
        for &(offset, len) in drop {
            keep(position, offset, &mut source)?;
            std::io::copy(&mut (&mut source).take(len), &mut std::io::sink())?;
            position = offset + len;
        }
        keep(position, complete_len, &mut source)?;
        out.flush()
    })
    .map_err(rewrite_err)?;
    Ok(written)
}

/// Counts over the selection's records, earlier sessions included.
#[derive(Default)]
struct Tallies {
    done: usize,
    errors: usize,
    answered: usize,
    correct: usize,
    /// Ok records as scoring reads them, by index (file order for `score`).
    scored: BTreeMap<usize, AnswerRecord>,
    /// Tokens the servers reported, over every record counted.
    tokens: u64,
    /// What those tokens cost, when every endpoint has a price.
    cost: f64,
    prices: Option<Prices>,
}

impl Tallies {
    fn add(&mut self, r: &JournalRecord) {
        self.count_usage(&r.endpoint, r.usage);
        self.add_outcome(r.index, r.is_ok(), r.correct, || r.to_answer());
    }

    fn add_previous(&mut self, r: &RecordRow) {
        self.count_usage(&r.endpoint, r.usage);
        self.add_outcome(r.index, r.is_ok(), r.correct, || r.to_answer());
    }

    fn count_usage(&mut self, endpoint: &str, usage: Option<Usage>) {
        self.tokens += usage.map_or(0, Usage::total);
        if let Some(p) = &self.prices {
            self.cost += p.cost(endpoint, usage);
        }
    }

    fn add_outcome(
        &mut self,
        index: usize,
        ok: bool,
        correct: Option<bool>,
        answer: impl FnOnce() -> AnswerRecord,
    ) {
        self.done += 1;
        if ok {
            self.answered += 1;
            if correct == Some(true) {
                self.correct += 1;
            }
            self.scored.insert(index, answer());
        } else {
            self.errors += 1;
        }
    }

    fn accuracy(&self) -> Option<f64> {
        (self.answered > 0).then(|| self.correct as f64 / self.answered as f64)
    }
}

/// What a failed task says: the panic's message when it has one.
fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

fn record_for(shared: &Shared, f: Finished) -> Option<JournalRecord> {
    let entry = shared.dataset.entries.get(&*f.work.key)?;
    let question = entry.conversation.get(f.work.turn)?;
    let qref = QuestionRef {
        index: f.work.index,
        key: &f.work.key,
        entry,
        turn: f.work.turn,
        question,
    };
    let latency_ms = f.latency.as_millis().try_into().unwrap_or(u64::MAX);
    let endpoint = shared.endpoints[f.endpoint].name.clone();
    let mut record = match f.outcome {
        Outcome::Abandoned => return None,
        Outcome::Failed(failure) => {
            let mut r = JournalRecord::failed(&qref, failure.message(), f.attempts, latency_ms);
            r.traces = failure.traces();
            r.usage = f.usage;
            r
        }
        Outcome::Answered(a) => {
            let a = *a;
            let confidence =
                (a.agreement.is_some() || a.letter_probs.is_some()).then(|| Confidence {
                    agreement: a.agreement,
                    letter_probs: a.letter_probs,
                });
            JournalRecord {
                image: qref.key.to_string(),
                question: AnswerQuestion::from_question(question),
                question_type: question.qtype.as_str().to_string(),
                correct_answer: question.answer.clone(),
                gpt_answer: Some(a.gpt_answer),
                index: qref.index,
                turn: qref.turn,
                status: RecordStatus::Ok,
                error: None,
                raw: Some(a.raw),
                correct: a.correct,
                attempts: f.attempts,
                latency_ms,
                usage: f.usage,
                samples: a
                    .samples
                    .into_iter()
                    .map(|s| SampleReply {
                        raw: s.raw,
                        letter: s.letter,
                    })
                    .collect(),
                rotations: a
                    .orders
                    .into_iter()
                    .map(|o| RotationReply {
                        order: o.order,
                        raw: o.raw,
                        letter: o.letter,
                        original_letter: o.original_letter,
                    })
                    .collect(),
                confidence,
                endpoint: String::new(),
                finished_at: String::new(),
                traces: a.decision.traces,
            }
        }
    };
    record.endpoint = endpoint;
    record.finished_at = rfc3339_now();
    Some(record)
}

/// Runs (or resumes) a batch run to its end or until stopped; blocking, on the
/// caller's `runtime` (one per command, or the app's). It must be a multi-thread
/// runtime, whose workers drive the questions while this thread waits, and this
/// must not be called from one of its tasks. Setup problems are errors before any
/// question is sent; questions that fail after the client's retries become error
/// records.
pub fn run(
    spec: &RunSpec,
    events: &(dyn Fn(RunEvent) + Sync),
    control: &RunControl,
    runtime: &tokio::runtime::Handle,
) -> Result<RunSummary, RunError> {
    let prepared = prepare(spec)?;
    let image_affinity = spec.image_affinity;
    let budget = Budget::of(spec);
    runtime.block_on(execute(
        prepared,
        spec.out.clone(),
        image_affinity,
        budget,
        events,
        control,
    ))
}

async fn execute(
    mut p: Prepared,
    run_dir: PathBuf,
    image_affinity: bool,
    budget: Budget,
    events: &(dyn Fn(RunEvent) + Sync),
    control: &RunControl,
) -> Result<RunSummary, RunError> {
    let start = Instant::now();
    let mut tallies = Tallies {
        prices: budget.prices.clone(),
        ..Tallies::default()
    };
    for r in p.previous.values() {
        tallies.add_previous(r);
    }
    let already_done = tallies.done;
    events(RunEvent::Started {
        total: p.total,
        already_done,
        retrying: p.retrying,
        run_dir: run_dir.clone(),
    });

    let capacity = p
        .shared
        .endpoints
        .iter()
        .map(|e| e.backend.max_in_flight())
        .collect();
    let mut dispatcher = Dispatcher::new(capacity, image_affinity);
    let mut pending: VecDeque<Work> = std::mem::take(&mut p.pending).into();
    let mut tasks = tokio::task::JoinSet::new();
    // What each task asks, to record a question whose task panicked.
    let mut in_flight: HashMap<tokio::task::Id, (Work, usize, Instant)> = HashMap::new();
    let abandon = control.abandon.clone();
    let mut written = 0usize;
    let mut last_progress = Instant::now();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failure: Option<RunError> = None;
    let mut abandoned = false;

    let total = p.total;
    let progress = |tallies: &Tallies, written: usize, in_flight: usize| {
        let elapsed = start.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            written as f64 / elapsed
        } else {
            0.0
        };
        let remaining = total.saturating_sub(tallies.done);
        RunProgress {
            done: tallies.done,
            errors: tallies.errors,
            total,
            questions_per_s: rate,
            eta_s: (rate > 0.0).then(|| remaining as f64 / rate),
            running_accuracy: tallies.accuracy(),
            in_flight,
            elapsed_s: elapsed,
        }
    };

    loop {
        if control.abandon.is_cancelled() {
            abandoned = true;
            break;
        }
        // A spent budget stops like a first Ctrl-C: nothing new is asked, what is in
        // flight is recorded, and the folder resumes (a larger budget continues it).
        let budget_reached = budget.tokens_spent(tallies.tokens) || budget.cost_spent(tallies.cost);
        let stopping = control.stop.is_cancelled() || budget_reached;
        if !stopping {
            while dispatcher.has_room() {
                let Some((pos, e)) = pending
                    .iter()
                    .take(LOOKAHEAD)
                    .enumerate()
                    .find_map(|(pos, w)| dispatcher.pick(&w.key).map(|e| (pos, e)))
                else {
                    break;
                };
                let Some(work) = pending.remove(pos) else {
                    dispatcher.release(e);
                    break;
                };
                let started = (work.clone(), e, Instant::now());
                let handle = tasks.spawn(ask(p.shared.clone(), work, e, abandon.clone()));
                in_flight.insert(handle.id(), started);
            }
        }
        if tasks.is_empty() && (pending.is_empty() || stopping) {
            break;
        }
        tokio::select! {
            joined = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let Some(joined) = joined else { continue };
                let finished = match joined {
                    Ok((id, f)) => {
                        in_flight.remove(&id);
                        f
                    }
                    // A panicking question must not take the run down: it is recorded
                    // as an error (so --retry-errors asks it again) and its endpoint
                    // slot is freed.
                    Err(e) => {
                        let Some((work, endpoint, started)) = in_flight.remove(&e.id()) else {
                            tracing::error!("a question task failed: {e}");
                            continue;
                        };
                        tracing::error!("question {} failed inside the workbench: {e}", work.index);
                        Finished {
                            work,
                            endpoint,
                            outcome: Outcome::Failed(Failure::Runner(format!(
                                "internal error while answering: {}",
                                panic_message(e)
                            ))),
                            attempts: 1,
                            latency: started.elapsed(),
                            usage: None,
                        }
                    }
                };
                dispatcher.release(finished.endpoint);
                let Some(record) = record_for(&p.shared, finished) else { continue };
                if let Err(e) = p.writer.append(&record) {
                    // Nothing more can be recorded: drop what is in flight.
                    failure = Some(e.into());
                    break;
                }
                written += 1;
                tallies.add(&record);
                events(RunEvent::Record(Box::new(record)));
                if last_progress.elapsed() >= PROGRESS_EVERY {
                    last_progress = Instant::now();
                    events(RunEvent::Progress(progress(&tallies, written, dispatcher.in_flight())));
                }
            }
            _ = ticker.tick() => {
                if let Err(e) = p.writer.sync_if_due() {
                    failure = Some(e.into());
                    break;
                }
                if last_progress.elapsed() >= PROGRESS_EVERY {
                    last_progress = Instant::now();
                    events(RunEvent::Progress(progress(&tallies, written, dispatcher.in_flight())));
                }
            }
        }
    }

    let dropped = if abandoned || failure.is_some() {
        let n = tasks.len();
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        n
    } else {
        0
    };
    // Whatever ended the loop (all done, stop, abandon, a failed write), what was
    // recorded goes to disk before anything is reported; a failure is reported as
    // itself, not as the sync that may fail after it.
    let synced = p.writer.sync();
    // Run lists read this instead of the journal. It is a cache, rebuilt whenever it
    // is missing or stale, so failing to write it does not fail the run.
    if let Err(e) = super::journal_summary::write_summary(&run_dir) {
        tracing::warn!("{}", crate::util::error::chain(&e));
    }
    if let Some(e) = failure {
        return Err(e);
    }
    synced?;
    let outcome = if tallies.done >= p.total && pending.is_empty() && !abandoned {
        RunOutcome::Finished
    } else if abandoned {
        RunOutcome::Abandoned
    } else {
        RunOutcome::Stopped
    };
    if outcome == RunOutcome::Finished {
        p.manifest.finished_at = Some(rfc3339_now());
        p.manifest.save(&p.manifest_path)?;
    }
    events(RunEvent::Progress(progress(&tallies, written, 0)));
    let scored: Vec<AnswerRecord> = tallies.scored.values().cloned().collect();
    let mmad_average = (!scored.is_empty())
        .then(|| score(&scored, ScoreOptions::default()).get("Average", "Average"))
        .flatten()
        .filter(|v| v.is_finite());
    let elapsed_s = start.elapsed().as_secs_f64();
    let summary = RunSummary {
        run_dir,
        outcome,
        total: p.total,
        already_done,
        written,
        dropped,
        answered: tallies.answered,
        errors: tallies.errors,
        correct: tallies.correct,
        accuracy: tallies.accuracy(),
        mmad_average,
        elapsed_s,
        questions_per_s: if elapsed_s > 0.0 {
            written as f64 / elapsed_s
        } else {
            0.0
        },
        without_inputs: p
            .manifest
            .missing_inputs
            .as_ref()
            .map_or(0, |c| c.questions),
        tokens: tallies.tokens,
        budget_reached: outcome == RunOutcome::Stopped && budget.tokens_spent(tallies.tokens),
        cost: budget.prices.is_some().then_some(tallies.cost),
        max_cost_reached: outcome == RunOutcome::Stopped && budget.cost_spent(tallies.cost),
    };
    events(RunEvent::Finished(summary.clone()));
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::mllm::EndpointConfig;
    use crate::mllm::mock::{Fault, FaultPlan, MockConfig, MockServer};
    use crate::runs::journal::read_journal;

    fn key(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn dispatch_goes_to_the_least_outstanding_endpoint_with_room() {
        let mut d = Dispatcher::new(vec![2, 4], false);
        let picks: Vec<usize> = (0..6)
            .map(|i| d.pick(&key(&format!("i{i}"))).unwrap())
            .collect();
        // Ties go to the first; the small endpoint fills at 2, the rest go to the big one.
        assert_eq!(picks, [0, 1, 0, 1, 1, 1]);
        assert!(!d.has_room());
        assert_eq!(d.pick(&key("x")), None);
        d.release(1);
        assert_eq!(d.pick(&key("x")), Some(1));
        d.release(0);
        d.release(0);
        d.release(1);
        // Endpoint 0 now has 0 outstanding, endpoint 1 has 3.
        assert_eq!(d.outstanding(), [0, 3]);
        assert_eq!(d.pick(&key("y")), Some(0));
        assert_eq!(d.in_flight(), 4);
    }

    #[test]
    fn image_affinity_keeps_an_image_on_its_endpoint_and_waits_for_it() {
        let mut d = Dispatcher::new(vec![1, 1], true);
        assert_eq!(d.pick(&key("a")), Some(0));
        assert_eq!(d.pick(&key("b")), Some(1));
        // `a` is bound to endpoint 0, which is full: wait even though nothing else is free.
        assert_eq!(d.pick(&key("a")), None);
        d.release(1);
        assert_eq!(d.pick(&key("a")), None, "endpoint 1 is free but not a's");
        assert_eq!(d.pick(&key("b")), Some(1));
        d.release(0);
        assert_eq!(d.pick(&key("a")), Some(0));
    }

    #[test]
    fn credentials_never_reach_the_manifest() {
        assert_eq!(
            shown_url("http://user:secret@127.0.0.1:8000/v1/"),
            "http://127.0.0.1:8000/v1"
        );
        assert_eq!(
            shown_url(" https://host.test/v1?key=abc "),
            "https://host.test/v1"
        );
    }

    /// The runner on a runtime of the test's own, as a command's entry makes one.
    fn run(
        spec: &RunSpec,
        events: &(dyn Fn(RunEvent) + Sync),
        control: &RunControl,
    ) -> Result<RunSummary, RunError> {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        super::run(spec, events, control, runtime.handle())
    }

    fn sample_spec(server: &MockServer, out: &Path) -> RunSpec {
        let sample = crate::assets_dir().join("sample");
        let mut spec = RunSpec::new(
            sample.join("mmad.json"),
            &sample,
            vec![EndpointConfig {
                name: "mock".into(),
                base_url: server.url(),
                model: "mock-vl".into(),
                max_in_flight: 4,
                retry_base_ms: 1,
                ..EndpointConfig::default()
            }],
            out,
        );
        spec.knowledge = Some(sample.join("domain_knowledge.json"));
        spec
    }

    #[test]
    fn a_model_failure_stays_typed_up_to_the_record_which_keeps_its_sentence() {
        let server = MockServer::start(MockConfig {
            faults: FaultPlan {
                then: Fault::Http500,
                ..FaultPlan::default()
            },
            ..MockConfig::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut spec = sample_spec(&server, &dir.path().join("run"));
        spec.endpoints[0].max_retries = 2;
        spec.selection.limit = Some(1);
        let prepared = prepare(&spec).unwrap();
        let work = prepared.pending[0].clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let finished = runtime.block_on(ask(prepared.shared.clone(), work, 0, CancelToken::new()));
        // Every try of the one adapter is counted, the failed ones included.
        assert_eq!(finished.attempts, 3);
        let Outcome::Failed(Failure::Pipeline(err)) = &finished.outcome else {
            panic!("expected the pipeline's error");
        };
        assert!(matches!(
            err,
            PipelineError::Expert {
                expert: crate::echo::ExpertName::DecisionMaker,
                ..
            }
        ));
        let Some(crate::mllm::MllmError::Http {
            url,
            status,
            body_head,
        }) = err.mllm()
        else {
            panic!("the HTTP failure was flattened: {err:?}");
        };
        assert_eq!(*status, 500);
        assert!(
            body_head.contains("mock: internal server error"),
            "{body_head}"
        );
        let cause = format!("{url} answered HTTP 500: {body_head}");
        let traces = err.traces().len();

        // The record says it exactly as journals always have.
        let record = record_for(&prepared.shared, finished).unwrap();
        assert_eq!(
            record.error,
            Some(format!("the Decision Maker failed: {cause}"))
        );
        assert_eq!(record.attempts, 3);
        assert_eq!(record.traces.len(), traces);
        let decision = record.traces.last().unwrap();
        assert_eq!(
            decision.status,
            crate::echo::ExpertStatus::Failed { error: cause }
        );
    }

    #[test]
    fn a_run_records_every_selected_question_once_and_resume_adds_only_the_rest() {
        let server = MockServer::start(MockConfig::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let mut spec = sample_spec(&server, &out);
        spec.selection.limit = Some(12);
        let seen = Mutex::new(Vec::new());
        let events = |e: RunEvent| {
            if let RunEvent::Record(r) = e {
                seen.lock().unwrap().push(r.index);
            }
        };
        let summary = run(&spec, &events, &RunControl::new()).unwrap();
        assert_eq!(summary.outcome, RunOutcome::Finished);
        assert_eq!(
            (summary.total, summary.written, summary.answered),
            (12, 12, 12)
        );
        let journal = read_journal(&out.join(JOURNAL_FILE)).unwrap();
        let mut indices: Vec<usize> = journal.records.iter().map(|r| r.index).collect();
        indices.sort_unstable();
        assert_eq!(indices, (0..12).collect::<Vec<_>>());
        let r = &journal.records[0];
        assert_eq!(r.endpoint, "mock");
        assert!(r.raw.is_some() && r.attempts >= 1 && !r.traces.is_empty());
        let manifest = RunManifest::load(&out.join(MANIFEST_FILE)).unwrap();
        assert!(manifest.finished_at.is_some());
        assert_eq!(manifest.question_count, 12);

        // Without --resume the folder is refused; with it and a larger selection,
        // only the new questions are asked (after forcing the changed selection).
        let e = run(&spec, &|_| {}, &RunControl::new()).unwrap_err();
        assert!(
            matches!(e, RunError::AlreadyStarted { records: 12, .. }),
            "{e}"
        );
        spec.resume = true;
        spec.selection.limit = Some(20);
        let e = run(&spec, &|_| {}, &RunControl::new()).unwrap_err();
        assert!(e.to_string().contains("question selection"), "{e}");
        spec.force = true;
        let before = server.chat_count();
        let summary = run(&spec, &|_| {}, &RunControl::new()).unwrap();
        assert_eq!((summary.already_done, summary.written), (12, 8));
        assert_eq!(server.chat_count() - before, 8);
        // The forced resume is on record: the first 12 answers came under other settings.
        let forced = RunManifest::load(&out.join(MANIFEST_FILE)).unwrap();
        assert_eq!(forced.forced_from.len(), 1);
        let f = &forced.forced_from[0];
        assert_eq!(f.records_before, 12);
        assert_eq!(f.differences, ["question selection"]);
        assert_eq!(
            f.fingerprint.as_deref(),
            Some(manifest.fingerprint().as_str())
        );
        let note = forced.mixed_settings_note().unwrap();
        assert!(
            note.contains("after 12 record(s) (question selection)"),
            "{note}"
        );
        // Resuming under the same settings again adds nothing to that history.
        spec.force = false;
        run(&spec, &|_| {}, &RunControl::new()).unwrap();
        let again = RunManifest::load(&out.join(MANIFEST_FILE)).unwrap();
        assert_eq!(again.forced_from, forced.forced_from);
        assert!(manifest.mixed_settings_note().is_none());
    }

    #[test]
    fn a_panicking_question_is_recorded_as_an_error_and_frees_its_slot() {
        let server = MockServer::start(MockConfig::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let mut spec = sample_spec(&server, &out);
        spec.selection.limit = Some(6);
        // One slot: a slot lost with the panic would leave the run waiting forever.
        spec.endpoints[0].max_in_flight = 1;
        spec.before_question = Some(QuestionHook::new(|index| {
            if index == 2 {
                panic!("injected panic for question {index}");
            }
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        let s = spec.clone();
        std::thread::spawn(move || {
            let _ = tx.send(run(&s, &|_| {}, &RunControl::new()));
        });
        let summary = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the run ends after a panicking question")
            .unwrap();
        assert_eq!((summary.written, summary.errors), (6, 1));
        let journal = read_journal(&out.join(JOURNAL_FILE)).unwrap();
        let failed = journal.records.iter().find(|r| r.index == 2).unwrap();
        assert_eq!(failed.status, RecordStatus::Error);
        let message = failed.error.as_deref().unwrap();
        assert!(
            message.contains("internal error while answering: injected panic for question 2"),
            "{message}"
        );
        // It is asked again like any error.
        spec.before_question = None;
        spec.retry_errors = true;
        let summary = run(&spec, &|_| {}, &RunControl::new()).unwrap();
        assert_eq!((summary.written, summary.errors), (1, 0));
    }

    #[test]
    fn errors_are_recorded_and_retry_errors_asks_only_them_again() {
        let failing = MockServer::start(MockConfig {
            faults: FaultPlan::script(vec![Fault::Status(400); 3]),
            ..MockConfig::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let mut spec = sample_spec(&failing, &out);
        spec.selection.limit = Some(10);
        spec.endpoints[0].max_in_flight = 1;
        let summary = run(&spec, &|_| {}, &RunControl::new()).unwrap();
        assert_eq!((summary.answered, summary.errors), (7, 3));
        let journal = read_journal(&out.join(JOURNAL_FILE)).unwrap();
        let failed: Vec<&JournalRecord> = journal.records.iter().filter(|r| !r.is_ok()).collect();
        assert_eq!(failed.len(), 3);
        assert!(
            failed[0].error.as_deref().unwrap().contains("400"),
            "{:?}",
            failed[0].error
        );
        assert_eq!(failed[0].gpt_answer, None);

        let healthy = MockServer::start(MockConfig::default()).unwrap();
        spec.endpoints[0].base_url = healthy.url();
        spec.retry_errors = true;
        let summary = run(&spec, &|_| {}, &RunControl::new()).unwrap();
        assert_eq!(
            (summary.already_done, summary.written, summary.errors),
            (7, 3, 0)
        );
        assert_eq!(healthy.chat_count(), 3);
        let journal = read_journal(&out.join(JOURNAL_FILE)).unwrap();
        let mut indices: Vec<usize> = journal.records.iter().map(|r| r.index).collect();
        indices.sort_unstable();
        assert_eq!(indices, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn attempts_count_every_http_try_of_a_question() {
        // First question: 500, 500, then a 400 that ends it. Second: 503 then an answer.
        let server = MockServer::start(MockConfig {
            faults: FaultPlan::script(vec![
                Fault::Status(500),
                Fault::Status(500),
                Fault::Status(400),
                Fault::Status(503),
            ]),
            ..MockConfig::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let mut spec = sample_spec(&server, &out);
        spec.selection.limit = Some(3);
        spec.endpoints[0].max_in_flight = 1;
        spec.endpoints[0].max_retries = 4;
        run(&spec, &|_| {}, &RunControl::new()).unwrap();
        let journal = read_journal(&out.join(JOURNAL_FILE)).unwrap();
        let attempts: Vec<(bool, u32)> = journal
            .records
            .iter()
            .map(|r| (r.is_ok(), r.attempts))
            .collect();
        assert_eq!(attempts, [(false, 3), (true, 2), (true, 1)]);
        assert_eq!(server.chat_count(), 6);
    }

    #[test]
    fn a_stop_keeps_the_answers_in_flight_and_abandon_drops_them() {
        let server = MockServer::start(MockConfig {
            latency: Duration::from_millis(300),
            ..MockConfig::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let spec = sample_spec(&server, &out);

        // Stop as soon as the run starts: the 4 questions already sent are kept.
        // Once only: a second progress line before the slow replies arrive (a busy
        // machine) would otherwise interrupt again, which abandons them.
        let control = RunControl::new();
        let events = |e: RunEvent| {
            if let RunEvent::Progress(p) = e
                && p.in_flight > 0
                && !control.stop.is_cancelled()
            {
                control.interrupt();
            }
        };
        let summary = run(&spec, &events, &control).unwrap();
        assert_eq!(summary.outcome, RunOutcome::Stopped);
        assert_eq!(summary.written, 4);
        assert_eq!(
            read_journal(&out.join(JOURNAL_FILE)).unwrap().records.len(),
            4
        );

        // Abandon: nothing of what was in flight is written.
        let control = RunControl::new();
        let mut spec = spec;
        spec.resume = true;
        let events = |e: RunEvent| {
            if let RunEvent::Progress(p) = e
                && p.in_flight > 0
            {
                control.interrupt();
                control.interrupt();
            }
        };
        let summary = run(&spec, &events, &control).unwrap();
        assert_eq!(summary.outcome, RunOutcome::Abandoned);
        assert_eq!((summary.written, summary.dropped), (0, 4));
        assert_eq!(
            read_journal(&out.join(JOURNAL_FILE)).unwrap().records.len(),
            4
        );
    }
}
