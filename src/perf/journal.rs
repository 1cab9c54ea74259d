//! What large journals cost: a generated run of 40,000 questions whose records
//! carry about 4 KB of traces each (what a real Echo run writes), measured where a
//! user waits on it.
//!
//! - Resume: peak resident memory (VmHWM) and time of a child process that resumes
//!   the run through [`crate::runs::runner::run`] as the Batch tab's Resume does (settings
//!   from the manifest). Every question has a record, so the child reads the
//!   journal, finds nothing to ask and ends; with `--retry-errors` it also rewrites
//!   the journal without its error records and asks those again (the endpoint is
//!   closed, so they fail at once). A child process, so the parent's own memory
//!   (generation, the other measurements) is not counted.
//! - Runs list: [`crate::runs::catalog::list`] over `runs` copies of the run, each
//!   with its summary; and one summary rebuilt from its journal (a run finished by
//!   an older version, or a journal changed behind the summary's back).
//! - Opening one question: reading its record (traces included) at the place a
//!   scan noted, and finding it by a scan when no place is known.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indexmap::IndexMap;
use serde_json::{Value, json};

use crate::echo::trace::{ExpertName, ExpertTrace, TraceInput, TraceOutput};
use crate::mllm::EndpointConfig;
use crate::runs::catalog;
use crate::runs::journal::{
    AnswerQuestion, JOURNAL_FILE, JournalError, JournalRecord, JournalWriter, RecordLocation,
    RecordStatus, RecordWithoutTraces, locate_record, read_journal_with, read_record_at,
};
use crate::runs::journal_summary::{self, SUMMARY_FILE, SummaryError};
use crate::runs::manifest::RunManifest;
use crate::runs::run_folder::RunFolderError;
use crate::runs::runner::{RunControl, RunError, RunSpec, TemplateSource, run};
use crate::score::ScoreOptions;

/// Where nothing listens: the generated run's endpoint. Nothing is asked unless
/// errors are retried, and then the refusal is immediate.
const CLOSED_ENDPOINT: &str = "http://127.0.0.1:9/v1";
/// One question in this many is recorded as an error (so `--retry-errors` has work).
const ERROR_EVERY: usize = 33;

#[derive(Debug, Clone)]
pub struct JournalBenchOptions {
    pub questions: usize,
    /// Approximate bytes of one journal line, traces included.
    pub record_bytes: usize,
    /// Run folders in the list.
    pub runs: usize,
    /// Records read back one by one for the per-question figure.
    pub reads: usize,
    /// Where the run folders go (default: a temporary folder, removed after).
    pub dir: Option<PathBuf>,
}

impl Default for JournalBenchOptions {
    fn default() -> Self {
        JournalBenchOptions {
            questions: 40_000,
            record_bytes: 4096,
            runs: 50,
            reads: 200,
            dir: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalBenchError {
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Summary(#[from] SummaryError),
    #[error(transparent)]
    RunFolder(#[from] RunFolderError),
    #[error("the resume child process failed: {0}")]
    Child(String),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JournalBenchError {
    let path = path.to_owned();
    move |source| JournalBenchError::Io { what, path, source }
}

/// A journal record of question `index` whose traces bring the line to about
/// `record_bytes`: a prompt and a reply, as an expert's trace holds them.
fn bench_record(
    index: usize,
    key: &str,
    qtype: &str,
    answer: &str,
    record_bytes: usize,
) -> JournalRecord {
    let failed = index % ERROR_EVERY == ERROR_EVERY - 1;
    // Mostly right, some wrong, so the score has something to compute.
    let given = if index % 7 == 3 { "D" } else { answer };
    let mut trace = ExpertTrace::skipped(ExpertName::DecisionMaker, "generated");
    // The rest of an answered record (question, options, reply, times) is about
    // 560 bytes; 1 in 33 records is a short error line.
    let filler: String = "The part shows a thin dark line near the lower edge; "
        .chars()
        .cycle()
        .take(record_bytes.saturating_sub(560))
        .collect();
    trace.input = TraceInput::Raw(json!({"prompt": filler, "images": [key]}));
    trace.output = TraceOutput::Raw(
        json!({"reply": format!("Answer: {given}. The visible line is consistent with a crack."), "letter": given}),
    );
    trace.summary = format!("answered {given}");
    trace.ms = 850 + (index % 400) as u64;
    JournalRecord {
        image: key.to_owned(),
        question: AnswerQuestion {
            kind: "text".into(),
            text: "What kind of defect is shown?".into(),
            options: IndexMap::from([
                ("A".into(), "Crack.".into()),
                ("B".into(), "Stain.".into()),
                ("C".into(), "Scratch.".into()),
                ("D".into(), "Hole.".into()),
            ]),
        },
        question_type: qtype.to_owned(),
        correct_answer: answer.to_owned(),
        gpt_answer: (!failed).then(|| given.to_owned()),
        index,
        turn: index % 5,
        status: if failed {
            RecordStatus::Error
        } else {
            RecordStatus::Ok
        },
        error: failed.then(|| "HTTP 503 after 4 attempts".into()),
        raw: (!failed).then(|| format!("Answer: {given}.")),
        correct: (!failed).then_some(given == answer),
        attempts: if failed { 4 } else { 1 },
        latency_ms: 900 + (index % 500) as u64,
        usage: None,
        samples: Vec::new(),
        rotations: Vec::new(),
        confidence: None,
        endpoint: "bench".into(),
        finished_at: "2026-11-22T08:30:00Z".into(),
        traces: if failed { Vec::new() } else { vec![trace] },
    }
}

/// Generates the dataset, one run folder with a complete journal and its summary,
/// and `runs - 1` more that share the journal (hard links where the file system has
/// them). Returns the first run's folder and the runs folder.
fn generate(
    dir: &Path,
    opts: &JournalBenchOptions,
    runtime: &tokio::runtime::Handle,
) -> Result<(PathBuf, PathBuf), JournalBenchError> {
    let images = opts.questions.div_ceil(5).max(1);
    let mmad = super::runner::write_bench_mmad(dir, images)
        .map_err(io_err("write the dataset in", dir))?;
    let runs_dir = dir.join("runs");
    let first = runs_dir.join("run-00");
    std::fs::create_dir_all(&first).map_err(io_err("create", &first))?;

    // The manifest comes from the runner itself, so a resume finds its own settings:
    // a run stopped before it asked anything.
    let endpoint = EndpointConfig {
        name: "bench".into(),
        base_url: CLOSED_ENDPOINT.into(),
        model: "bench-model".into(),
        max_in_flight: 8,
        max_retries: 0,
        ..EndpointConfig::default()
    };
    let mut spec = RunSpec::new(&mmad, dir, vec![endpoint], &first);
    spec.pipeline.preset = "mmad".into();
    spec.template = TemplateSource::None;
    spec.selection.limit = Some(opts.questions);
    let control = RunControl::new();
    control.stop.cancel();
    run(&spec, &|_| {}, &control, runtime)?;

    // Whatever the stopped run recorded is replaced by a complete journal.
    let journal = first.join(JOURNAL_FILE);
    let dataset = crate::dataset::MmadDataset::load(&mmad).map_err(|e| JournalBenchError::Io {
        what: "read the generated dataset",
        path: mmad.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    std::fs::remove_file(&journal)
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })
        .map_err(io_err("remove", &journal))?;
    let (mut writer, _) = JournalWriter::open(&journal)?;
    for q in dataset.questions().take(opts.questions) {
        writer.append(&bench_record(
            q.index,
            q.key,
            q.question.qtype.as_str(),
            &q.question.answer,
            opts.record_bytes,
        ))?;
    }
    writer.sync()?;
    drop(writer);
    journal_summary::write_summary(&first)?;

    for n in 1..opts.runs {
        let other = runs_dir.join(format!("run-{n:02}"));
        std::fs::create_dir_all(&other).map_err(io_err("create", &other))?;
        for name in [crate::runs::manifest::MANIFEST_FILE, SUMMARY_FILE] {
            std::fs::copy(first.join(name), other.join(name))
                .map_err(io_err("copy into", &other))?;
        }
        let target = other.join(JOURNAL_FILE);
        // A hard link has the journal's length and time, so the copied summary is
        // fresh; a copy gets a new time, and its summary is rebuilt on first listing.
        if std::fs::hard_link(&journal, &target).is_err() {
            std::fs::copy(&journal, &target).map_err(io_err("copy into", &other))?;
            journal_summary::write_summary(&other)?;
        }
    }
    Ok((first, runs_dir))
}

/// Runs the benchmark; `exe` is this program (the resume is measured in a child).
pub fn bench_journal(
    opts: &JournalBenchOptions,
    exe: &Path,
    runtime: &tokio::runtime::Handle,
) -> Result<Value, JournalBenchError> {
    let tmp;
    let dir = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(io_err("create", d))?;
            d.clone()
        }
        None => {
            tmp =
                tempfile::tempdir().map_err(io_err("create a folder in", &std::env::temp_dir()))?;
            tmp.path().to_path_buf()
        }
    };
    let start = Instant::now();
    let (first, runs_dir) = generate(&dir, opts, runtime)?;
    let generate_s = start.elapsed().as_secs_f64();
    let journal = first.join(JOURNAL_FILE);
    let journal_bytes = std::fs::metadata(&journal)
        .map_err(io_err("read", &journal))?
        .len();

    // The Runs list, every summary fresh.
    let start = Instant::now();
    let rows = catalog::list(&runs_dir, ScoreOptions::default())?;
    let list_s = start.elapsed().as_secs_f64();
    if let Some(broken) = rows.iter().find(|r| r.error.is_some()) {
        return Err(JournalBenchError::Child(format!(
            "the list could not read {}: {}",
            broken.name,
            broken.error.as_deref().unwrap_or_default()
        )));
    }
    // One summary rebuilt from the journal (the list is newest first).
    let last = rows.first().map_or(first.clone(), |r| r.dir.clone());
    std::fs::remove_file(last.join(SUMMARY_FILE)).map_err(io_err("remove", &last))?;
    let start = Instant::now();
    let rebuilt = journal_summary::summary(&last)?;
    let rebuild_s = start.elapsed().as_secs_f64();

    // Opening the run: every record without its traces, and where each line is.
    let start = Instant::now();
    let mut locations: HashMap<usize, RecordLocation> = HashMap::new();
    let mut kept = 0usize;
    read_journal_with(&journal, |line, r: RecordWithoutTraces| {
        let r = JournalRecord::from(r);
        kept += r.question.text.len();
        locations.insert(r.index, line.location());
    })?;
    let open_s = start.elapsed().as_secs_f64();
    // Opening questions spread over the journal, each read at its noted place.
    let mut indices: Vec<usize> = locations.keys().copied().collect();
    indices.sort_unstable();
    let step = (indices.len() / opts.reads.max(1)).max(1);
    let picked: Vec<usize> = indices.iter().step_by(step).copied().collect();
    let mut worst = 0f64;
    let start = Instant::now();
    let mut trace_bytes = 0usize;
    for index in &picked {
        let one = Instant::now();
        let record = read_record_at(&journal, locations[index])?;
        trace_bytes += record.traces.len();
        worst = worst.max(one.elapsed().as_secs_f64());
    }
    let read_mean_s = start.elapsed().as_secs_f64() / picked.len().max(1) as f64;
    // The same without a noted place (a record a live run just sent): one scan.
    let start = Instant::now();
    let last_index = indices.last().copied().unwrap_or(0);
    let found = locate_record(&journal, last_index)?;
    let locate_s = start.elapsed().as_secs_f64();

    let resume = resume_in_child(exe, &first, false)?;
    let retry = resume_in_child(exe, &first, true)?;

    Ok(json!({
        "questions": opts.questions,
        "journal_bytes": journal_bytes,
        "bytes_per_record": journal_bytes as f64 / opts.questions.max(1) as f64,
        "generate_s": generate_s,
        "resume": resume,
        "resume_retry_errors": retry,
        "runs_list": {
            "runs": rows.len(),
            "seconds": list_s,
            "summary_rebuild_s": rebuild_s,
            "rebuilt_answered": rebuilt.answered,
        },
        "open_run": {
            "seconds": open_s,
            "records": locations.len(),
            "question_text_bytes": kept,
        },
        "open_question": {
            "reads": picked.len(),
            "mean_ms": read_mean_s * 1000.0,
            "max_ms": worst * 1000.0,
            "traces_read": trace_bytes,
            "without_location_ms": locate_s * 1000.0,
            "found": found.is_some(),
        },
    }))
}

fn resume_in_child(
    exe: &Path,
    run_dir: &Path,
    retry_errors: bool,
) -> Result<Value, JournalBenchError> {
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["bench", "journal-resume", "--run"]).arg(run_dir);
    if retry_errors {
        cmd.arg("--retry-errors");
    }
    let out = cmd
        .output()
        .map_err(io_err("start the resume child", exe))?;
    if !out.status.success() {
        return Err(JournalBenchError::Child(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        JournalBenchError::Child(format!(
            "unreadable output ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })
}

/// The child's side: resumes `run_dir` with the settings of its manifest (as the
/// Batch tab's Resume does) and reports its own peak memory and time.
pub fn resume_child(
    run_dir: &Path,
    retry_errors: bool,
    runtime: &tokio::runtime::Handle,
) -> Result<Value, JournalBenchError> {
    let start = Instant::now();
    let manifest = RunManifest::load(&RunManifest::path_in(run_dir))
        .map_err(|e| JournalBenchError::Run(e.into()))?;
    let configured: Vec<EndpointConfig> = manifest
        .endpoints
        .iter()
        .map(|e| EndpointConfig {
            name: e.name.clone(),
            max_retries: 0,
            ..EndpointConfig::default()
        })
        .collect();
    let mut spec = RunSpec::from_manifest(&manifest, &configured, run_dir)?;
    spec.resume = true;
    spec.retry_errors = retry_errors;
    let summary = run(&spec, &|_| {}, &RunControl::new(), runtime)?;
    Ok(json!({
        "seconds": start.elapsed().as_secs_f64(),
        "peak_rss_mb": peak_rss_kb().map(|kb| kb as f64 / 1024.0),
        "already_done": summary.already_done,
        "asked": summary.written,
        "outcome": summary.outcome,
    }))
}

/// This process's peak resident set (VmHWM), in KiB; Linux only.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_run_is_complete_and_listed_from_its_summaries() {
        let dir = tempfile::tempdir().unwrap();
        let opts = JournalBenchOptions {
            questions: 60,
            record_bytes: 2000,
            runs: 3,
            reads: 5,
            dir: Some(dir.path().to_owned()),
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (first, runs_dir) = generate(dir.path(), &opts, runtime.handle()).unwrap();
        let folder = crate::runs::run_folder::RunFolder::open(&first).unwrap();
        assert_eq!(folder.records().len(), 60);
        assert_eq!(folder.manifest.question_count, 60);
        let errors = folder.error_count();
        assert_eq!(errors, 60 / ERROR_EVERY);
        let bytes = std::fs::metadata(first.join(JOURNAL_FILE)).unwrap().len();
        let per_line = bytes as f64 / 60.0;
        assert!((1500.0..2600.0).contains(&per_line), "{per_line}");

        let rows = catalog::list(&runs_dir, ScoreOptions::default()).unwrap();
        assert_eq!(rows.len(), 3);
        for row in &rows {
            assert_eq!(row.error, None);
            assert_eq!((row.answered, row.errors), (60 - errors, errors));
        }
        // The copies' summaries were fresh: none was rebuilt, so none was rewritten.
        let summary = std::fs::read(first.join(SUMMARY_FILE)).unwrap();
        assert_eq!(
            std::fs::read(runs_dir.join("run-02").join(SUMMARY_FILE)).unwrap(),
            summary
        );
    }

    #[test]
    fn resume_in_process_finds_nothing_to_ask_and_retry_asks_the_errors() {
        let dir = tempfile::tempdir().unwrap();
        let opts = JournalBenchOptions {
            questions: 40,
            record_bytes: 1500,
            runs: 1,
            reads: 1,
            dir: None,
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (first, _) = generate(dir.path(), &opts, runtime.handle()).unwrap();
        let plain = resume_child(&first, false, runtime.handle()).unwrap();
        assert_eq!(plain["already_done"], 40);
        assert_eq!(plain["asked"], 0);
        assert_eq!(plain["outcome"], "finished");
        let retry = resume_child(&first, true, runtime.handle()).unwrap();
        assert_eq!(retry["already_done"], 40 - 40 / ERROR_EVERY);
        assert_eq!(retry["asked"], 40 / ERROR_EVERY);
    }
}
