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
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::dataset::{Question, QuestionRef};
use crate::echo::ExpertTrace;

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
            endpoint: String::new(),
            finished_at: String::new(),
            traces: Vec::new(),
        }
    }

    pub fn is_ok(&self) -> bool {
        self.status == RecordStatus::Ok
    }

    /// The record as scoring reads it.
    pub fn to_answer(&self) -> crate::bench::score::AnswerRecord {
        crate::bench::score::AnswerRecord {
            image: self.image.clone(),
            question_type: self.question_type.clone(),
            correct_answer: self.correct_answer.clone().into(),
            gpt_answer: self
                .gpt_answer
                .clone()
                .map_or(serde_json::Value::Null, Into::into),
        }
    }
}

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

/// Reads a journal; a missing file is an empty journal. A malformed line that is not
/// the last one is an error: it means the file was damaged, not interrupted.
pub fn read_journal(path: &Path) -> Result<JournalContents, JournalError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f
            .read_to_end(&mut bytes)
            .map_err(|source| JournalError::Read {
                path: path.to_owned(),
                source,
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(JournalContents::default());
        }
        Err(source) => {
            return Err(JournalError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    parse_journal_bytes(&bytes, path)
}

/// [`read_journal`] on bytes in memory; `path` is only used in messages.
pub fn parse_journal_bytes(bytes: &[u8], path: &Path) -> Result<JournalContents, JournalError> {
    let mut out = JournalContents::default();
    let mut offset = 0usize;
    let mut line_no = 0usize;
    while offset < bytes.len() {
        line_no += 1;
        let rest = &bytes[offset..];
        let (line, next, terminated) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], offset + i + 1, true),
            None => (rest, bytes.len(), false),
        };
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            if terminated {
                out.complete_len = next as u64;
            }
            offset = next;
            continue;
        }
        match serde_json::from_slice::<JournalRecord>(trimmed) {
            Ok(record) if terminated => {
                out.records.push(record);
                out.complete_len = next as u64;
            }
            // A record without its newline was still being written when the run
            // stopped: the write did not finish, so it does not count.
            Ok(_) => out.torn_last_line = true,
            // The newline is the last byte of every write, so only an unterminated
            // line can be a write cut short; anything else is damage.
            Err(_) if !terminated => out.torn_last_line = true,
            Err(e) => {
                return Err(JournalError::BadLine {
                    path: path.to_owned(),
                    line: line_no,
                    message: e.to_string(),
                });
            }
        }
        offset = next;
    }
    Ok(out)
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
    /// line so the next record starts on a line of its own.
    pub fn open(path: &Path) -> Result<(Self, JournalContents), JournalError> {
        let contents = read_journal(path)?;
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
        if len != contents.complete_len {
            file.set_len(contents.complete_len).map_err(write_err)?;
        }
        file.seek(SeekFrom::End(0)).map_err(write_err)?;
        Ok((
            JournalWriter {
                path: path.to_owned(),
                file,
                unsynced: 0,
                last_sync: Instant::now(),
                syncs: 0,
            },
            contents,
        ))
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
        assert!(before.records.is_empty());
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
        let scored = crate::bench::score::load_answers(&path).unwrap();
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
