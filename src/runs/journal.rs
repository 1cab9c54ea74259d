//! The run journal: one JSON line per finished question, appended as each finishes.
//!
//! A line counts once it has been written whole and flushed; a run killed mid-write
//! leaves at most one torn last line, which readers skip and [`JournalWriter::open`]
//! cuts off before appending, so the file never holds a broken line in the middle.
//!
//! Durability: every record is flushed to the OS as it is written, so a killed
//! process loses nothing it recorded. Against a power cut the journal is fsynced at
//! most [`SYNC_EVERY_RECORDS`] records or [`SYNC_EVERY`] apart (whichever comes
//! first), and always when a run finishes, is stopped or abandoned, or fails: a power
//! cut costs at most the answers of the last second (or 64 records), never a torn
//! line in the middle, since an unterminated last line is cut on the next open.
//!
//! Each line carries MMAD's answer fields under MMAD's names (`image`, `question`,
//! `question_type`, `correct_answer`, `gpt_answer`), so `score` and MMAD's own tools
//! read a journal as they read an answers file, followed by what we know besides.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::dataset::{Question, QuestionRef};
use crate::echo::ExpertTrace;
use crate::mllm::Usage;

/// The file name of the journal inside a run folder.
pub const JOURNAL_FILE: &str = "journal.jsonl";

/// Most records appended between two fsyncs of a journal. An fsync per record would
/// cap a fast run at the disk's sync rate (tens a second on a laptop disk) for no
/// gain a person notices.
pub const SYNC_EVERY_RECORDS: usize = 64;
/// Longest time appended records stay unsynced while the run goes on.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// MMAD's `question` object of an answers entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerQuestion {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    pub options: IndexMap<String, String>,
}

impl AnswerQuestion {
    pub fn from_question(q: &Question) -> Self {
        AnswerQuestion {
            kind: "text".into(),
            text: q.text.clone(),
            options: q.options.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordStatus {
    /// The pipeline produced an answer (which may still be wrong or invalid).
    Ok,
    /// No answer after all retries; excluded from accuracy, listed by `score`.
    Error,
}

/// One reply of a question asked several times (`--samples N`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleReply {
    /// The reply exactly as received.
    pub raw: String,
    /// The option letter read from it (MMAD's extraction), `None` when none was.
    pub letter: Option<String>,
}

/// One rotation of a question's options (`--circular`), or the one seeded order of
/// `--shuffle-options`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotationReply {
    /// The original letters in the order they were shown, e.g. `"BCDA"`: the option
    /// shown as A was the original B.
    pub order: String,
    pub raw: String,
    /// The letter picked, as shown to the model.
    pub letter: Option<String>,
    /// The same pick in the question's original letters.
    pub original_letter: Option<String>,
}

/// How sure an answer is, from what the protocol and the server gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Confidence {
    /// Share of samples or rotations that picked the recorded answer (in original
    /// letters); absent for a single plain reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    /// Probability of each option letter at the answer position, from the server's
    /// `logprobs` / `top_logprobs` (renormalised over the options); absent when the
    /// server sent none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub letter_probs: Option<IndexMap<String, f64>>,
}

/// One finished question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    // MMAD's answer fields, under MMAD's names.
    pub image: String,
    pub question: AnswerQuestion,
    pub question_type: String,
    pub correct_answer: String,
    /// The extracted letter, or the raw reply when none was found (MMAD's rule);
    /// `null` on error lines.
    pub gpt_answer: Option<String>,

    /// Position among all questions of the dataset file (stable across runs and shards).
    pub index: usize,
    /// Position inside the image's conversation.
    pub turn: usize,
    pub status: RecordStatus,
    /// Why the question has no answer (error lines only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The model's final reply exactly as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// Against `correct_answer`; `None` on error lines.
    #[serde(default)]
    pub correct: Option<bool>,
    /// Attempts made for this question (1 when the first one succeeded).
    pub attempts: u32,
    /// Wall time from the question's start to its record, in milliseconds.
    pub latency_ms: u64,
    /// Tokens the server reported for this question's calls, summed; absent when it
    /// reported none (and in journals written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Every reply when the question was sampled several times (`--samples`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<SampleReply>,
    /// Every rotation when the options were rotated (`--circular`) or shuffled
    /// (`--shuffle-options`, one entry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rotations: Vec<RotationReply>,
    /// How sure the answer is; absent when nothing says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<Confidence>,
    /// Which endpoint answered (its name from the manifest, never its key).
    #[serde(default)]
    pub endpoint: String,
    /// When the record was written, RFC 3339 UTC.
    #[serde(default)]
    pub finished_at: String,
    /// The expert traces in pipeline order (what was sent, what came back).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traces: Vec<ExpertTrace>,
}

impl JournalRecord {
    /// An error record for a question that got no answer.
    pub fn failed(q: &QuestionRef<'_>, error: String, attempts: u32, latency_ms: u64) -> Self {
        JournalRecord {
            image: q.key.to_string(),
            question: AnswerQuestion::from_question(q.question),
            question_type: q.question.qtype.as_str().to_string(),
            correct_answer: q.question.answer.clone(),
            gpt_answer: None,
            index: q.index,
            turn: q.turn,
            status: RecordStatus::Error,
            error: Some(error),
            raw: None,
            correct: None,
            attempts,
            latency_ms,
            usage: None,
            samples: Vec::new(),
            rotations: Vec::new(),
            confidence: None,
            endpoint: String::new(),
            finished_at: String::new(),
            traces: Vec::new(),
        }
    }

    pub fn is_ok(&self) -> bool {
        self.status == RecordStatus::Ok
    }

    /// The record as scoring reads it.
    pub fn to_answer(&self) -> crate::score::AnswerRecord {
        answer_record(
            &self.image,
            &self.question_type,
            &self.correct_answer,
            self.gpt_answer.as_deref(),
        )
    }
}

/// A journal line's answer fields as scoring reads them (a missing answer is
/// JSON null, as in MMAD's answers files).
fn answer_record(
    image: &str,
    question_type: &str,
    correct_answer: &str,
    gpt_answer: Option<&str>,
) -> crate::score::AnswerRecord {
    crate::score::AnswerRecord {
        image: image.to_owned(),
        question_type: question_type.to_owned(),
        correct_answer: correct_answer.into(),
        gpt_answer: gpt_answer.map_or(serde_json::Value::Null, Into::into),
    }
}

/// A journal line without its prompts, replies and traces: what resume, the Runs
/// list and scoring read. Parsing into it skips the rest of the line without
/// storing it, so a 4 KB record costs about a hundred bytes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RecordRow {
    pub index: usize,
    pub status: RecordStatus,
    #[serde(default)]
    pub correct: Option<bool>,
    pub image: String,
    pub question_type: String,
    pub correct_answer: String,
    pub gpt_answer: Option<String>,
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub confidence: Option<Confidence>,
    /// Which endpoint answered: its tokens are priced at that endpoint's price.
    #[serde(default)]
    pub endpoint: String,
}

impl RecordRow {
    pub fn is_ok(&self) -> bool {
        self.status == RecordStatus::Ok
    }

    /// The row as scoring reads it (the same as [`JournalRecord::to_answer`]).
    pub fn to_answer(&self) -> crate::score::AnswerRecord {
        answer_record(
            &self.image,
            &self.question_type,
            &self.correct_answer,
            self.gpt_answer.as_deref(),
        )
    }
}

/// A journal record read without its traces (what a table of questions shows):
/// parsing into it skips the traces, most of a record's bytes, without storing
/// them; they are fetched per question with [`read_record_at`].
#[derive(Deserialize)]
pub struct RecordWithoutTraces {
    image: String,
    question: AnswerQuestion,
    question_type: String,
    correct_answer: String,
    gpt_answer: Option<String>,
    index: usize,
    turn: usize,
    status: RecordStatus,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    raw: Option<String>,
    #[serde(default)]
    correct: Option<bool>,
    attempts: u32,
    latency_ms: u64,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    samples: Vec<SampleReply>,
    #[serde(default)]
    rotations: Vec<RotationReply>,
    #[serde(default)]
    confidence: Option<Confidence>,
    #[serde(default)]
    endpoint: String,
    #[serde(default)]
    finished_at: String,
}

impl From<RecordWithoutTraces> for JournalRecord {
    fn from(r: RecordWithoutTraces) -> Self {
        JournalRecord {
            image: r.image,
            question: r.question,
            question_type: r.question_type,
            correct_answer: r.correct_answer,
            gpt_answer: r.gpt_answer,
            index: r.index,
            turn: r.turn,
            status: r.status,
            error: r.error,
            raw: r.raw,
            correct: r.correct,
            attempts: r.attempts,
            latency_ms: r.latency_ms,
            usage: r.usage,
            samples: r.samples,
            rotations: r.rotations,
            confidence: r.confidence,
            endpoint: r.endpoint,
            finished_at: r.finished_at,
            traces: Vec::new(),
        }
    }
}

pub use crate::util::jsonl::{
    JournalLine, JournalScan, MAX_LINE_BYTES, RecordLocation, scan_lines,
};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot read the journal {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the journal {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, line {line}: not a journal record: {message}")]
    BadLine {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}, byte {offset}: not a journal record: {message}")]
    BadRecordAt {
        path: PathBuf,
        offset: u64,
        message: String,
    },
}

/// A journal as read back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JournalContents {
    /// Records in file order.
    pub records: Vec<JournalRecord>,
    /// Byte length of the complete lines (where the next append belongs).
    pub complete_len: u64,
    /// The last line was cut short (the writer was killed) and was left out.
    pub torn_last_line: bool,
}

/// Opens a journal for a streaming read; `None` when there is none yet. Symlinks
/// are followed (a journal may be linked in) but only a regular file is read, so a
/// FIFO or device named `journal.jsonl` cannot hang or flood the reader.
pub fn open_journal(path: &Path) -> Result<Option<BufReader<File>>, JournalError> {
    match crate::util::fsx::open_regular_for_read(path) {
        Ok(f) => Ok(Some(BufReader::with_capacity(1 << 16, f))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(JournalError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Streams a journal, parsing each complete line as `T` (a record, or a few of its
/// fields: serde skips the rest without keeping it). A missing file is an empty
/// journal; a line that does not parse is damage, an error naming it.
pub fn read_journal_with<T: DeserializeOwned>(
    path: &Path,
    each: impl FnMut(JournalLine<'_>, T),
) -> Result<JournalScan, JournalError> {
    match open_journal(path)? {
        Some(reader) => parse_journal_with(reader, path, each),
        None => Ok(JournalScan::default()),
    }
}

/// [`read_journal_with`] over any reader; `path` is only used in messages.
pub fn parse_journal_with<R: BufRead, T: DeserializeOwned>(
    reader: R,
    path: &Path,
    mut each: impl FnMut(JournalLine<'_>, T),
) -> Result<JournalScan, JournalError> {
    scan_lines(
        reader,
        |line| match serde_json::from_slice::<T>(line.text) {
            Ok(value) => {
                each(line, value);
                Ok(())
            }
            Err(e) => Err(JournalError::BadLine {
                path: path.to_owned(),
                line: line.number,
                message: e.to_string(),
            }),
        },
        |source| JournalError::Read {
            path: path.to_owned(),
            source,
        },
    )
}

/// Reads a journal whole; a missing file is an empty journal. A malformed line that
/// is not the last one is an error: it means the file was damaged, not interrupted.
/// Holds every record with its traces: use [`read_journal_with`] where a few fields
/// are enough.
pub fn read_journal(path: &Path) -> Result<JournalContents, JournalError> {
    let mut records = Vec::new();
    let scan = read_journal_with(path, |_, r: JournalRecord| records.push(r))?;
    Ok(JournalContents {
        records,
        complete_len: scan.complete_len,
        torn_last_line: scan.torn_last_line,
    })
}

/// [`read_journal`] on bytes in memory; `path` is only used in messages.
pub fn parse_journal_bytes(bytes: &[u8], path: &Path) -> Result<JournalContents, JournalError> {
    let mut records = Vec::new();
    let scan = parse_journal_with(bytes, path, |_, r: JournalRecord| records.push(r))?;
    Ok(JournalContents {
        records,
        complete_len: scan.complete_len,
        torn_last_line: scan.torn_last_line,
    })
}

/// Reads the one line at `offset` (`len` bytes, newline included) and parses it:
/// how a question's full record is fetched without reading the rest of the journal.
pub fn read_record_at(path: &Path, at: RecordLocation) -> Result<JournalRecord, JournalError> {
    let RecordLocation { offset, len } = at;
    let read_err = |source| JournalError::Read {
        path: path.to_owned(),
        source,
    };
    if len > MAX_LINE_BYTES as u64 + 1 {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a record of {len} bytes at byte {offset} is longer than any journal line"),
        )));
    }
    let mut file = crate::util::fsx::open_regular_for_read(path).map_err(read_err)?;
    file.seek(SeekFrom::Start(offset)).map_err(read_err)?;
    let mut bytes = Vec::with_capacity(len as usize);
    (&mut file)
        .take(len)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 != len || bytes.last() != Some(&b'\n') {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("no whole record at byte {offset}: the journal changed since it was read"),
        )));
    }
    serde_json::from_slice(bytes.trim_ascii()).map_err(|e| JournalError::BadRecordAt {
        path: path.to_owned(),
        offset,
        message: e.to_string(),
    })
}

/// Where the latest record of question `index` is, by one streaming pass that
/// parses only each line's `index` (for a record whose place is not known yet, such
/// as one a live run just wrote).
pub fn locate_record(path: &Path, index: usize) -> Result<Option<RecordLocation>, JournalError> {
    #[derive(Deserialize)]
    struct IndexOnly {
        index: usize,
    }
    let mut found = None;
    read_journal_with(path, |line, row: IndexOnly| {
        if row.index == index {
            found = Some(line.location());
        }
    })?;
    Ok(found)
}

/// Appends records to a journal, one whole line per write, flushed before returning
/// and synced to disk as the module docs say.
pub struct JournalWriter {
    path: PathBuf,
    file: File,
    /// Records appended since the last fsync.
    unsynced: usize,
    last_sync: Instant,
    /// fsyncs done, for tests of the policy.
    syncs: u64,
}

impl JournalWriter {
    /// Opens (or creates) the journal for appending, first cutting off a torn last
    /// line so the next record starts on a line of its own. The journal is checked
    /// line by line (damage in the middle is an error) without keeping any record.
    pub fn open(path: &Path) -> Result<(Self, JournalScan), JournalError> {
        let scan = read_journal_with(path, |_, _: serde::de::IgnoredAny| {})?;
        Ok((Self::open_scanned(path, scan.complete_len)?, scan))
    }

    /// Opens the journal for appending after the caller has scanned it (holding the
    /// run lock, so it cannot have changed): everything past `complete_len`, a torn
    /// last line, is cut off.
    pub fn open_scanned(path: &Path, complete_len: u64) -> Result<Self, JournalError> {
        let write_err = |source| JournalError::Write {
            path: path.to_owned(),
            source,
        };
        // Never through a symlink: a planted link must not get its target cut.
        let mut file = crate::util::fsx::open_regular_for_write(
            path,
            OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .truncate(false),
        )
        .map_err(write_err)?;
        let len = file.metadata().map_err(write_err)?.len();
        if len != complete_len {
            file.set_len(complete_len).map_err(write_err)?;
        }
        file.seek(SeekFrom::End(0)).map_err(write_err)?;
        Ok(JournalWriter {
            path: path.to_owned(),
            file,
            unsynced: 0,
            last_sync: Instant::now(),
            syncs: 0,
        })
    }

    /// Writes one record as a single line and flushes it to the OS; fsyncs when
    /// [`SYNC_EVERY_RECORDS`] records or [`SYNC_EVERY`] have gone by unsynced.
    pub fn append(&mut self, record: &JournalRecord) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(record).map_err(|e| JournalError::Write {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(|source| JournalError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.unsynced += 1;
        if self.unsynced >= SYNC_EVERY_RECORDS {
            return self.sync();
        }
        self.sync_if_due()
    }

    /// Fsyncs when records have waited [`SYNC_EVERY`] unsynced; a run calls it on
    /// its clock too, so a record written just before a long wait is not left
    /// unsynced for the length of that wait.
    pub fn sync_if_due(&mut self) -> Result<(), JournalError> {
        if self.unsynced > 0 && self.last_sync.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// Forces what was written onto the disk (end of a run, stop, failure).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.file
            .sync_data()
            .map_err(|source| JournalError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.unsynced = 0;
        self.last_sync = Instant::now();
        self.syncs += 1;
        Ok(())
    }

    /// Records appended since the last fsync.
    pub fn unsynced(&self) -> usize {
        self.unsynced
    }

    /// How many fsyncs this writer has done.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: usize, status: RecordStatus) -> JournalRecord {
        JournalRecord {
            image: format!("VisA/candle/test/good/{index:04}.JPG"),
            question: AnswerQuestion {
                kind: "text".into(),
                text: "Is there any defect in the object?".into(),
                options: IndexMap::from([("A".into(), "Yes.".into()), ("B".into(), "No.".into())]),
            },
            question_type: "Anomaly Detection".into(),
            correct_answer: "B".into(),
            gpt_answer: (status == RecordStatus::Ok).then(|| "B".into()),
            index,
            turn: 0,
            status,
            error: (status == RecordStatus::Error).then(|| "HTTP 500".into()),
            raw: None,
            correct: (status == RecordStatus::Ok).then_some(true),
            attempts: 1,
            latency_ms: 10,
            usage: None,
            samples: Vec::new(),
            rotations: Vec::new(),
            confidence: None,
            endpoint: "local".into(),
            finished_at: "2026-11-22T08:00:00Z".into(),
            traces: Vec::new(),
        }
    }

    #[test]
    fn writes_whole_lines_and_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let (mut w, before) = JournalWriter::open(&path).unwrap();
        assert_eq!(before, JournalScan::default());
        w.append(&record(0, RecordStatus::Ok)).unwrap();
        w.append(&record(1, RecordStatus::Error)).unwrap();
        drop(w);
        let back = read_journal(&path).unwrap();
        assert_eq!(
            back.records,
            vec![record(0, RecordStatus::Ok), record(1, RecordStatus::Error)]
        );
        assert!(!back.torn_last_line);
        // MMAD's field names are on every line, so `score` reads the journal too.
        let scored = crate::score::load_answers(&path).unwrap();
        assert_eq!(scored.records.len(), 1);
        assert_eq!(scored.errors.len(), 1);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_cut_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let (mut w, _) = JournalWriter::open(&path).unwrap();
        w.append(&record(0, RecordStatus::Ok)).unwrap();
        drop(w);
        let whole = serde_json::to_string(&record(1, RecordStatus::Ok)).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&whole.as_bytes()[..whole.len() / 2]).unwrap();
        drop(f);

        let torn = read_journal(&path).unwrap();
        assert_eq!(torn.records.len(), 1);
        assert!(torn.torn_last_line);

        let (mut w, seen) = JournalWriter::open(&path).unwrap();
        assert!(seen.torn_last_line);
        w.append(&record(1, RecordStatus::Ok)).unwrap();
        drop(w);
        let healed = read_journal(&path).unwrap();
        assert_eq!(
            healed.records.iter().map(|r| r.index).collect::<Vec<_>>(),
            [0, 1]
        );
        assert!(!healed.torn_last_line);
    }

    #[test]
    fn a_complete_record_without_its_newline_does_not_count() {
        let line = serde_json::to_string(&record(0, RecordStatus::Ok)).unwrap();
        let got = parse_journal_bytes(line.as_bytes(), Path::new("j")).unwrap();
        assert!(got.records.is_empty());
        assert!(got.torn_last_line);
        assert_eq!(got.complete_len, 0);
    }

    fn with_trace(index: usize) -> JournalRecord {
        let mut r = record(index, RecordStatus::Ok);
        let mut trace = ExpertTrace::skipped(crate::echo::ExpertName::DecisionMaker, "test");
        trace.input = crate::echo::trace::TraceInput::Raw(serde_json::json!({
            "prompt": format!("prompt of question {index}")
        }));
        r.traces = vec![trace];
        r
    }

    #[test]
    fn one_record_is_read_at_its_place_without_reading_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let (mut w, _) = JournalWriter::open(&path).unwrap();
        for i in 0..3 {
            w.append(&with_trace(i)).unwrap();
        }
        drop(w);
        let mut places = Vec::new();
        let mut rows = Vec::new();
        read_journal_with(&path, |line, r: RecordWithoutTraces| {
            places.push(line.location());
            rows.push(JournalRecord::from(r));
        })
        .unwrap();
        // The rows leave the traces out; the record read at its place has them.
        assert!(rows.iter().all(|r| r.traces.is_empty()));
        assert_eq!(
            rows[2],
            JournalRecord {
                traces: Vec::new(),
                ..with_trace(2)
            }
        );
        assert_eq!(read_record_at(&path, places[2]).unwrap(), with_trace(2));
        assert_eq!(locate_record(&path, 1).unwrap(), Some(places[1]));
        assert_eq!(locate_record(&path, 7).unwrap(), None);

        // Damage the first line in place: a whole-journal read now fails, but the
        // third record is still read, since nothing else is.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[..10].copy_from_slice(b"##########");
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_journal(&path).is_err());
        assert_eq!(read_record_at(&path, places[2]).unwrap(), with_trace(2));
        // A place that is not a whole line (the journal changed) is an error.
        let inside = RecordLocation {
            offset: places[2].offset + 1,
            len: places[2].len - 1,
        };
        assert!(read_record_at(&path, inside).is_err());
        let past = RecordLocation {
            offset: bytes.len() as u64,
            len: 10,
        };
        assert!(read_record_at(&path, past).is_err());
    }

    #[test]
    fn lines_stream_with_their_places_and_the_rule_for_the_last_one() {
        let text = "\u{feff}{\"a\":1}\r\n\n  \n{\"a\":2}\n{\"a\":3}";
        let mut seen = Vec::new();
        let scan = scan_lines(
            text.as_bytes(),
            |l| {
                seen.push((
                    l.number,
                    l.offset,
                    l.len,
                    String::from_utf8_lossy(l.text).into_owned(),
                ));
                Ok::<(), std::io::Error>(())
            },
            |e| e,
        )
        .unwrap();
        assert_eq!(
            seen,
            [
                (1, 0, 12, "{\"a\":1}".to_owned()),
                (4, 16, 8, "{\"a\":2}".to_owned()),
            ]
        );
        assert_eq!(
            scan,
            JournalScan {
                complete_len: 24,
                torn_last_line: true,
                lines: 2
            }
        );
        // Trailing blanks without a newline are not a torn line.
        let scan = scan_lines("{}\n  ".as_bytes(), |_| Ok::<(), ()>(()), |_| ()).unwrap();
        assert!(!scan.torn_last_line);
        assert_eq!(scan.complete_len, 3);
    }

    #[test]
    fn damage_in_the_middle_is_an_error_naming_the_line() {
        let good = serde_json::to_string(&record(0, RecordStatus::Ok)).unwrap();
        let text = format!("{good}\n{{\"image\": 3}}\n{good}\n");
        let err = parse_journal_bytes(text.as_bytes(), Path::new("run/journal.jsonl")).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn syncs_every_64_records_or_after_a_second_and_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let (mut w, _) = JournalWriter::open(&path).unwrap();
        for i in 0..(2 * SYNC_EVERY_RECORDS + 5) {
            w.append(&record(i, RecordStatus::Ok)).unwrap();
        }
        // Fast appends: synced at 64 and 128, five waiting.
        assert_eq!((w.syncs(), w.unsynced()), (2, 5));
        // Nothing is due before the second is up...
        w.sync_if_due().unwrap();
        assert_eq!((w.syncs(), w.unsynced()), (2, 5));
        // ...and the clock alone syncs the rest once it is.
        w.last_sync -= SYNC_EVERY;
        w.sync_if_due().unwrap();
        assert_eq!((w.syncs(), w.unsynced()), (3, 0));
        // With nothing waiting, the clock does not sync.
        w.last_sync -= SYNC_EVERY;
        w.sync_if_due().unwrap();
        assert_eq!(w.syncs(), 3);
        // A slow record (the second already up) is synced as it is written.
        w.append(&record(999, RecordStatus::Ok)).unwrap();
        assert_eq!((w.syncs(), w.unsynced()), (4, 0));
        w.append(&record(1000, RecordStatus::Ok)).unwrap();
        w.sync().unwrap();
        assert_eq!((w.syncs(), w.unsynced()), (5, 0));
    }
}
