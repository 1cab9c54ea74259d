//! A run as the Batch tab shows it: the records received so far, the score table
//! computed from them, and the runner's progress. A live run fills it from a
//! collector thread (scoring happens there, throttled, never on the UI thread); a
//! finished run is loaded into the same shape, so the table, chart and drill-down
//! serve both.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::runs::journal::{
    JOURNAL_FILE, JournalRecord, RecordLocation, RecordWithoutTraces, read_journal_with,
};
use crate::runs::manifest::RunManifest;
use crate::runs::run_folder::open_manifest;
use crate::score::{self, AnswerRecord, ScoreOptions, ScoreTable};

/// How often a live run's table is re-scored at most. Scoring 40k records takes
/// milliseconds, but a run delivers answers far faster than anyone reads a table.
pub const RESCORE_INTERVAL: Duration = Duration::from_millis(250);
/// Events applied under one lock at most.
const MAX_BATCH: usize = 1024;

/// What the runner reported last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveProgress {
    pub done: usize,
    pub errors: usize,
    pub total: usize,
    pub questions_per_s: f64,
    pub eta_s: Option<f64>,
    pub in_flight: usize,
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq)]
pub enum RunPhase {
    /// Read from its folder (not running in this app).
    Loaded,
    Running,
    /// Pause or cancel asked; in-flight answers are being written.
    Stopping,
    /// Stopped before the end; Resume continues it.
    Paused,
    Finished,
    Failed(String),
}

impl RunPhase {
    pub fn is_active(&self) -> bool {
        matches!(self, RunPhase::Running | RunPhase::Stopping)
    }
}

/// Which budget stopped a run (the run summary's flags, for the phase line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetStop {
    Tokens,
    Cost,
}

impl BudgetStop {
    /// Why the run is paused, and what Resume does about it: the app resumes
    /// without a budget (the CLI's `--resume` takes a larger one).
    pub fn explain(self) -> &'static str {
        match self {
            BudgetStop::Tokens => {
                "paused: the token budget (--max-tokens-total) was reached; Resume continues without a budget"
            }
            BudgetStop::Cost => {
                "paused: the cost budget (--max-cost) was reached; Resume continues without a budget"
            }
        }
    }
}

/// What the collector receives (from the runner's event callback).
#[derive(Debug)]
pub enum LiveEvent {
    Started {
        total: usize,
        already_done: usize,
    },
    Record(Box<JournalRecord>),
    Progress(LiveProgress),
    /// The runner returned: completely answered (`finished`) or stopped early,
    /// by a person or by the budget named in `budget`.
    Ended {
        finished: bool,
        budget: Option<BudgetStop>,
    },
    Failed(String),
}

pub struct RunModel {
    pub dir: PathBuf,
    pub manifest: Option<RunManifest>,
    /// Journal order, traces dropped (they are read back from the journal when a
    /// question is opened, so a 40k-question run does not hold every prompt).
    pub records: Vec<JournalRecord>,
    /// Where each question's record is in `records` (one record per question: a
    /// later one, e.g. a retried error, replaces the earlier in place).
    positions: HashMap<usize, usize>,
    /// Where each loaded question's record is in the journal, so opening it reads
    /// that one line. Records a live run sends have none (found by a scan instead).
    locations: HashMap<usize, RecordLocation>,
    /// Bumped by every added or replaced record, so views know to refresh.
    pub generation: u64,
    pub table: ScoreTable,
    pub options: ScoreOptions,
    /// Records the table was computed from (it lags `records` by one throttle step).
    pub scored_records: usize,
    /// How long the last scoring took.
    pub last_score: Duration,
    pub progress: LiveProgress,
    pub phase: RunPhase,
    /// The budget that paused the run, when one did.
    pub stopped_by: Option<BudgetStop>,
    /// Non-fatal problems (a torn last journal line, unreadable lines).
    pub notes: Vec<String>,
}

impl RunModel {
    pub fn new(dir: PathBuf, manifest: Option<RunManifest>, options: ScoreOptions) -> Self {
        let total = manifest.as_ref().map_or(0, |m| m.question_count);
        RunModel {
            dir,
            manifest,
            records: Vec::new(),
            positions: HashMap::new(),
            locations: HashMap::new(),
            generation: 0,
            table: score::score(&[], options),
            options,
            scored_records: 0,
            last_score: Duration::ZERO,
            progress: LiveProgress {
                total,
                ..LiveProgress::default()
            },
            phase: RunPhase::Loaded,
            stopped_by: None,
            notes: Vec::new(),
        }
    }

    /// Reads a run folder (its latest record per question, in dataset order) and
    /// scores it as the CLI does. The journal streams through once; each record is
    /// kept without its traces, with where its line is for opening it later.
    pub fn load(dir: &Path, options: ScoreOptions) -> anyhow::Result<RunModel> {
        let manifest = open_manifest(dir)?;
        let mut model = RunModel::new(dir.to_path_buf(), Some(manifest), options);
        let mut latest: BTreeMap<usize, (JournalRecord, RecordLocation)> = BTreeMap::new();
        let scan = read_journal_with(
            &dir.join(JOURNAL_FILE),
            |line, record: RecordWithoutTraces| {
                let record = JournalRecord::from(record);
                latest.insert(record.index, (record, line.location()));
            },
        )?;
        if scan.torn_last_line {
            model.notes.push(
                "the journal's last line was cut short (the run was killed while writing); it is left out and will be asked again on resume".into(),
            );
        }
        for (record, location) in latest.into_values() {
            let index = record.index;
            model.push(record);
            model.locations.insert(index, location);
        }
        model.rescore_now();
        model.progress.done = model.records.len();
        model.progress.errors = model.errors();
        Ok(model)
    }

    /// Where question `index`'s record is in the journal, when known.
    pub fn location(&self, index: usize) -> Option<RecordLocation> {
        self.locations.get(&index).copied()
    }

    /// Adds a record (without its traces), replacing an earlier one of the same
    /// question.
    pub fn push(&mut self, mut record: JournalRecord) {
        record.traces = Vec::new();
        self.generation += 1;
        // A newer record than the one loaded: its line is elsewhere.
        self.locations.remove(&record.index);
        match self.positions.get(&record.index) {
            Some(&pos) => self.records[pos] = record,
            None => {
                self.positions.insert(record.index, self.records.len());
                self.records.push(record);
            }
        }
    }

    /// Distinct questions with a record.
    pub fn answered_indices(&self) -> usize {
        self.records.len()
    }

    /// Scores every record now (used on load and for re-scoring with new options).
    pub fn rescore_now(&mut self) {
        let answers = answers_of(&self.records);
        let start = Instant::now();
        self.table = score::score(&answers, self.options);
        self.last_score = start.elapsed();
        self.scored_records = self.records.len();
    }

    pub fn errors(&self) -> usize {
        self.records.iter().filter(|r| !r.is_ok()).count()
    }

    /// Overall accuracy over answered questions (valid or not), in percent.
    pub fn plain_accuracy(&self) -> Option<f64> {
        let ok: Vec<&JournalRecord> = self.records.iter().filter(|r| r.is_ok()).collect();
        (!ok.is_empty()).then(|| {
            let right = ok.iter().filter(|r| r.correct == Some(true)).count();
            right as f64 * 100.0 / ok.len() as f64
        })
    }
}

/// The answers scoring reads, as the CLI scores a run folder: the latest record of
/// each question, answered ones only, in dataset order (MMAD's table depends on
/// order, and questions finish in any order).
pub fn answers_of(records: &[JournalRecord]) -> Vec<AnswerRecord> {
    let mut latest: BTreeMap<usize, &JournalRecord> = BTreeMap::new();
    for r in records {
        latest.insert(r.index, r);
    }
    latest
        .values()
        .filter(|r| r.is_ok())
        .map(|r| r.to_answer())
        .collect()
}

/// A run model shared between the collector thread and the UI.
#[derive(Clone)]
pub struct SharedRun(Arc<Mutex<RunModel>>);

impl SharedRun {
    pub fn new(model: RunModel) -> Self {
        SharedRun(Arc::new(Mutex::new(model)))
    }

    /// The model; a panic elsewhere while holding it leaves data that is still
    /// readable (records are only added or replaced whole), so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, RunModel> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Applies events to `run` until the sender hangs up, re-scoring at most every
/// [`RESCORE_INTERVAL`] (and once at the end). `repaint` is called after each change
/// the UI should show. Runs on its own thread.
pub fn collect(run: &SharedRun, events: Receiver<LiveEvent>, repaint: &(dyn Fn() + Send + Sync)) {
    // Latest answer per question (None: its latest record is an error).
    let mut answers: BTreeMap<usize, Option<AnswerRecord>> = BTreeMap::new();
    let mut record_count = 0usize;
    let mut last_score: Option<Instant> = None;
    let mut dirty = false;
    let rescore = |answers: &BTreeMap<usize, Option<AnswerRecord>>, record_count: usize| {
        // Read each time: the user may switch the scoring while the run goes on.
        let options = run.lock().options;
        let start = Instant::now();
        let ordered: Vec<AnswerRecord> = answers.values().flatten().cloned().collect();
        let table = score::score(&ordered, options);
        let took = start.elapsed();
        let mut m = run.lock();
        m.table = table;
        m.last_score = took;
        m.scored_records = record_count;
    };
    loop {
        let first = match events.recv_timeout(RESCORE_INTERVAL) {
            Ok(e) => Some(e),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Everything already waiting goes in under one lock, so the UI (which holds
        // the lock while it draws) is not slowed by one hand-over per answer.
        let mut batch: Vec<LiveEvent> = first.into_iter().collect();
        while batch.len() < MAX_BATCH {
            match events.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let mut m = run.lock();
            for event in batch {
                match event {
                    LiveEvent::Started {
                        total,
                        already_done,
                    } => {
                        m.progress.total = total;
                        m.progress.done = already_done;
                        m.phase = RunPhase::Running;
                        // Records of earlier sessions (resume) are already in the model.
                        answers = m
                            .records
                            .iter()
                            .map(|r| (r.index, r.is_ok().then(|| r.to_answer())))
                            .collect();
                        record_count = m.records.len();
                        dirty = true;
                    }
                    LiveEvent::Record(record) => {
                        answers.insert(record.index, record.is_ok().then(|| record.to_answer()));
                        m.push(*record);
                        record_count = m.records.len();
                        dirty = true;
                    }
                    LiveEvent::Progress(p) => m.progress = p,
                    LiveEvent::Ended { finished, budget } => {
                        m.stopped_by = budget;
                        m.phase = if finished {
                            RunPhase::Finished
                        } else {
                            RunPhase::Paused
                        };
                        m.progress.in_flight = 0;
                        m.progress.questions_per_s = 0.0;
                        m.progress.eta_s = None;
                    }
                    LiveEvent::Failed(message) => {
                        m.phase = RunPhase::Failed(message);
                        m.progress.in_flight = 0;
                    }
                }
            }
        }
        if dirty && last_score.is_none_or(|t| t.elapsed() >= RESCORE_INTERVAL) {
            rescore(&answers, record_count);
            last_score = Some(Instant::now());
            dirty = false;
        }
        repaint();
    }
    if dirty {
        rescore(&answers, record_count);
    }
    {
        // Every way the runner returns sends Ended or Failed first; a channel that
        // closed without either means its thread died (a panic). The run is not
        // going on, and what it wrote stays in its journal, so it is a failed run
        // that Resume continues, not one shown as running forever.
        let mut m = run.lock();
        if m.phase.is_active() {
            m.phase = RunPhase::Failed(RUNNER_DIED.into());
            m.progress.in_flight = 0;
            m.progress.questions_per_s = 0.0;
            m.progress.eta_s = None;
        }
    }
    repaint();
}

/// What a run whose runner thread died says.
pub const RUNNER_DIED: &str = "the runner stopped unexpectedly (an internal error) without finishing; what it recorded is kept, and Resume continues the run";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::test_support::record;
    use std::sync::mpsc;

    fn rec(index: usize, qtype: &str, given: Option<&str>) -> JournalRecord {
        let image = format!("VisA/candle/test/bad/{index:03}.JPG");
        record(index, &image, qtype, "A", given)
    }

    #[test]
    fn a_later_record_replaces_the_earlier_and_scoring_follows_dataset_order() {
        let mut m = RunModel::new(PathBuf::from("run"), None, ScoreOptions::default());
        m.push(rec(5, "Defect Classification", Some("A")));
        m.push(rec(2, "Anomaly Detection", None));
        m.push(rec(2, "Anomaly Detection", Some("B")));
        assert_eq!(m.records.len(), 2);
        assert_eq!(m.errors(), 0);
        let answers = answers_of(&m.records);
        // Index order, whatever the finishing order was.
        assert_eq!(answers[0].question_type, "Anomaly Detection");
        m.rescore_now();
        assert_eq!(m.table.columns[0], "Anomaly Detection");
        assert_eq!(m.table.get("VisA", "Defect Classification"), Some(100.0));
    }

    /// A run model with its collector thread going, told that `total` questions
    /// started.
    fn collecting(
        total: usize,
    ) -> (
        SharedRun,
        mpsc::Sender<LiveEvent>,
        std::thread::JoinHandle<()>,
    ) {
        let run = SharedRun::new(RunModel::new(
            PathBuf::from("run"),
            None,
            ScoreOptions::default(),
        ));
        let (tx, rx) = mpsc::channel();
        let shared = run.clone();
        let handle = std::thread::spawn(move || collect(&shared, rx, &|| {}));
        tx.send(LiveEvent::Started {
            total,
            already_done: 0,
        })
        .unwrap();
        (run, tx, handle)
    }

    #[test]
    fn a_runner_that_dies_without_a_word_is_a_failed_run_not_a_running_one() {
        let (run, tx, handle) = collecting(3);
        tx.send(LiveEvent::Record(Box::new(rec(
            0,
            "Anomaly Detection",
            Some("A"),
        ))))
        .unwrap();
        // The runner thread panics: its sender is dropped with no Ended or Failed.
        let runner = std::thread::spawn(move || {
            let _tx = tx;
            panic!("runner bug");
        });
        assert!(runner.join().is_err());
        handle.join().unwrap();
        let m = run.lock();
        assert_eq!(m.phase, RunPhase::Failed(RUNNER_DIED.into()));
        assert!(!m.phase.is_active());
        assert_eq!(m.progress.in_flight, 0);
        // What it recorded is kept (and scored), so Resume continues from there.
        assert_eq!(m.records.len(), 1);
        assert_eq!(m.scored_records, 1);
    }

    #[test]
    fn a_stop_that_ends_in_a_dead_runner_is_failed_too_and_an_ended_run_stays_ended() {
        let (run, tx, handle) = collecting(2);
        // Pause was asked (the UI sets Stopping), then the runner died.
        run.lock().phase = RunPhase::Stopping;
        drop(tx);
        handle.join().unwrap();
        assert_eq!(run.lock().phase, RunPhase::Failed(RUNNER_DIED.into()));

        let (run, tx, handle) = collecting(2);
        tx.send(LiveEvent::Ended {
            finished: false,
            budget: Some(BudgetStop::Cost),
        })
        .unwrap();
        drop(tx);
        handle.join().unwrap();
        assert_eq!(run.lock().phase, RunPhase::Paused);
        assert_eq!(run.lock().stopped_by, Some(BudgetStop::Cost));
    }

    #[test]
    fn the_collector_applies_events_and_leaves_a_final_table() {
        let (run, tx, handle) = collecting(3);
        for r in [
            rec(0, "Anomaly Detection", Some("A")),
            rec(1, "Anomaly Detection", Some("B")),
            rec(2, "Anomaly Detection", None),
        ] {
            tx.send(LiveEvent::Record(Box::new(r))).unwrap();
        }
        tx.send(LiveEvent::Ended {
            finished: true,
            budget: None,
        })
        .unwrap();
        drop(tx);
        handle.join().unwrap();
        let m = run.lock();
        assert_eq!(m.phase, RunPhase::Finished);
        assert_eq!(m.records.len(), 3);
        assert_eq!(m.scored_records, 3);
        assert_eq!(m.errors(), 1);
        // Two abnormal AD answers, one right: 50% abnormal, no normal part.
        assert_eq!(m.table.get("VisA", "Anomaly Detection"), Some(25.0));
    }

    #[test]
    fn scoring_options_changed_mid_run_are_used_from_then_on() {
        let (run, tx, handle) = collecting(4);
        // An answer that is no letter, then a right one: MMAD's compat mode skips
        // the right one along with it.
        for r in [
            rec(0, "Defect Classification", Some("unclear")),
            rec(1, "Defect Classification", Some("A")),
        ] {
            tx.send(LiveEvent::Record(Box::new(r))).unwrap();
        }
        // The user switches to MMAD-compatible scoring while the run goes on.
        run.lock().options.mmad_compat = true;
        tx.send(LiveEvent::Record(Box::new(rec(
            2,
            "Defect Classification",
            Some("B"),
        ))))
        .unwrap();
        tx.send(LiveEvent::Ended {
            finished: true,
            budget: None,
        })
        .unwrap();
        drop(tx);
        handle.join().unwrap();
        let m = run.lock();
        assert!(m.options.mmad_compat);
        assert_eq!(m.table.skipped, 1, "scored without the compat skip");
        // Only question 2 (wrong) is scored; default scoring would give 50%.
        assert_eq!(m.table.get("VisA", "Defect Classification"), Some(0.0));
    }
}
