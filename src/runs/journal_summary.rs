//! A small summary beside each journal (`summary.json`): its counts and the
//! figures a run list shows, so listing 50 runs of 40,000 questions reads 50 small
//! files instead of gigabytes of traces.
//!
//! The summary names the journal it was built from by byte length and
//! modification time. A summary that is missing, unreadable, of another format or
//! stale (the journal was appended to, rewritten by `--retry-errors`, or replaced)
//! is rebuilt by streaming the journal once and saved again; it is a cache, so
//! failing to save it (a read-only folder) costs only the next rebuild.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::mllm::Usage;
use crate::runs::journal::{JOURNAL_FILE, JournalError, RecordRow, read_journal_with};
use crate::score::{self, AVERAGE, AnswerRecord, ScoreOptions};

/// The summary's file name inside a run folder.
pub const SUMMARY_FILE: &str = "summary.json";
/// Bumped when the fields change, so an old summary is rebuilt, not misread.
pub const SUMMARY_FORMAT: u32 = 2;
/// Largest summary file read; a real one is a few hundred bytes.
const MAX_SUMMARY_BYTES: u64 = 1 << 20;

/// Which journal a summary describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStamp {
    /// Byte length (0 when there is no journal yet).
    pub len: u64,
    /// Modification time; `None` when there is no journal or the OS gives none.
    pub modified: Option<SystemTime>,
}

impl JournalStamp {
    /// The journal's stamp as it is now.
    pub fn of(journal: &Path) -> Result<JournalStamp, JournalError> {
        match std::fs::metadata(journal) {
            Ok(m) => Ok(JournalStamp {
                len: m.len(),
                modified: m.modified().ok(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(JournalStamp {
                len: 0,
                modified: None,
            }),
            Err(source) => Err(JournalError::Read {
                path: journal.to_owned(),
                source,
            }),
        }
    }
}

/// What a run list needs of a journal. Counts are over questions (the latest
/// record of each, as [`crate::runs::run_folder::RunFolder`] reads them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalSummary {
    pub format: u32,
    /// The journal this summary was built from.
    pub journal: JournalStamp,
    /// Complete record lines in the journal.
    pub lines: usize,
    /// Lines a later line for the same question replaced.
    pub superseded: usize,
    /// Questions whose latest record holds an answer (right, wrong or unreadable).
    pub answered: usize,
    /// Questions whose latest record is an error.
    pub errors: usize,
    /// Answered questions whose answer matched.
    pub correct: usize,
    /// Sum of the answered questions' latencies, for a mean time per question.
    pub answered_latency_ms: u64,
    /// MMAD's overall Average, default scoring; `None` without a valid answer.
    pub mmad_average: Option<f64>,
    /// The same with MMAD's summary.py skip reproduced (`--mmad-compat`).
    pub mmad_compat_average: Option<f64>,
    /// The journal's last line was cut short and is not counted.
    pub torn_last_line: bool,
    /// Tokens the servers reported over the questions' latest records, and how many
    /// of those records report them: a new run's cost estimate per question.
    #[serde(default)]
    pub usage: Usage,
    #[serde(default)]
    pub usage_questions: usize,
}

impl JournalSummary {
    /// Streams the journal once (each line read into a small row, its traces
    /// skipped) and computes the summary.
    pub fn build(journal: &Path) -> Result<JournalSummary, JournalError> {
        // Taken first: if the journal grows while it is read, the stamp is older
        // than the content and the next look rebuilds, never the other way round.
        let stamp = JournalStamp::of(journal)?;
        let mut latest: BTreeMap<usize, RecordRow> = BTreeMap::new();
        let scan = read_journal_with(journal, |_, row: RecordRow| {
            latest.insert(row.index, row);
        })?;
        let mut summary = JournalSummary {
            format: SUMMARY_FORMAT,
            journal: stamp,
            lines: scan.lines,
            superseded: scan.lines - latest.len(),
            answered: 0,
            errors: 0,
            correct: 0,
            answered_latency_ms: 0,
            mmad_average: None,
            mmad_compat_average: None,
            torn_last_line: scan.torn_last_line,
            usage: Usage::default(),
            usage_questions: 0,
        };
        // Dataset order, as scoring a run folder reads it (MMAD's table depends on order).
        let mut answers: Vec<AnswerRecord> = Vec::with_capacity(latest.len());
        for row in latest.values() {
            if let Some(u) = row.usage {
                summary.usage.add(u);
                summary.usage_questions += 1;
            }
            if row.is_ok() {
                summary.answered += 1;
                summary.correct += usize::from(row.correct == Some(true));
                summary.answered_latency_ms =
                    summary.answered_latency_ms.saturating_add(row.latency_ms);
                answers.push(row.to_answer());
            } else {
                summary.errors += 1;
            }
        }
        drop(latest);
        let average = |mmad_compat| {
            score::score(
                &answers,
                ScoreOptions {
                    mmad_compat,
                    ..ScoreOptions::default()
                },
            )
            .get(AVERAGE, AVERAGE)
            .filter(|v| v.is_finite())
        };
        summary.mmad_average = average(false);
        summary.mmad_compat_average = average(true);
        Ok(summary)
    }

    /// MMAD's overall Average as a list scores it.
    pub fn average(&self, mmad_compat: bool) -> Option<f64> {
        if mmad_compat {
            self.mmad_compat_average
        } else {
            self.mmad_average
        }
    }

    /// Mean tokens per question that reported any, `None` when none did.
    pub fn tokens_per_question(&self) -> Option<TokensPerQuestion> {
        let n = self.usage_questions as f64;
        (self.usage_questions > 0).then(|| TokensPerQuestion {
            prompt: self.usage.prompt_tokens as f64 / n,
            completion: self.usage.completion_tokens as f64 / n,
        })
    }

    /// Mean seconds per answered question.
    pub fn mean_latency_s(&self) -> Option<f64> {
        (self.answered > 0).then(|| self.answered_latency_ms as f64 / 1000.0 / self.answered as f64)
    }
}

/// Mean tokens a question took.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokensPerQuestion {
    pub prompt: f64,
    pub completion: f64,
}

impl TokensPerQuestion {
    pub fn total(self) -> f64 {
        self.prompt + self.completion
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot write the journal summary {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn summary_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SUMMARY_FILE)
}

/// The saved summary when it still describes the journal as it is now.
pub fn load_fresh(run_dir: &Path) -> Result<Option<JournalSummary>, JournalError> {
    let stamp = JournalStamp::of(&run_dir.join(JOURNAL_FILE))?;
    let Ok(bytes) = crate::util::fsx::read_limited(&summary_path(run_dir), MAX_SUMMARY_BYTES)
    else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<JournalSummary>(&bytes)
        .ok()
        .filter(|s| s.format == SUMMARY_FORMAT && s.journal == stamp))
}

/// Rebuilds the summary from the journal and saves it atomically.
pub fn write_summary(run_dir: &Path) -> Result<JournalSummary, SummaryError> {
    let summary = JournalSummary::build(&run_dir.join(JOURNAL_FILE))?;
    save(run_dir, &summary)?;
    Ok(summary)
}

fn save(run_dir: &Path, summary: &JournalSummary) -> Result<(), SummaryError> {
    let path = summary_path(run_dir);
    let mut text = serde_json::to_vec_pretty(summary).map_err(|e| SummaryError::Write {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    text.push(b'\n');
    crate::util::fsx::atomic_write(&path, &text)
        .map_err(|source| SummaryError::Write { path, source })
}

/// The journal's summary: the saved one when fresh, otherwise rebuilt and saved
/// (a failed save is logged and otherwise ignored: the summary is only a cache).
pub fn summary(run_dir: &Path) -> Result<JournalSummary, JournalError> {
    if let Some(s) = load_fresh(run_dir)? {
        return Ok(s);
    }
    let built = JournalSummary::build(&run_dir.join(JOURNAL_FILE))?;
    if let Err(e) = save(run_dir, &built) {
        tracing::debug!("{}", crate::util::error::chain(&e));
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::journal::JournalWriter;
    use crate::runs::run_folder::RunFolder;
    use crate::runs::test_support::{manifest, record};
    use std::io::Write;

    const GOOD: &str = "VisA/candle/test/good/0000.JPG";
    const BAD: &str = "VisA/candle/test/bad/000.JPG";
    const AD: &str = "Anomaly Detection";

    fn write_run(dir: &Path, records: &[crate::runs::journal::JournalRecord]) {
        manifest(4)
            .save(&crate::runs::manifest::RunManifest::path_in(dir))
            .unwrap();
        let (mut w, _) = JournalWriter::open(&dir.join(JOURNAL_FILE)).unwrap();
        for r in records {
            w.append(r).unwrap();
        }
    }

    #[test]
    fn the_summary_matches_the_run_folder_read_in_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut slow = record(1, BAD, AD, "A", Some("B"));
        slow.latency_ms = 3000;
        slow.usage = Some(crate::mllm::Usage {
            prompt_tokens: 900,
            completion_tokens: 30,
        });
        let mut billed_error = record(2, BAD, AD, "A", None);
        billed_error.usage = Some(crate::mllm::Usage {
            prompt_tokens: 700,
            completion_tokens: 10,
        });
        write_run(
            dir.path(),
            &[
                record(0, GOOD, AD, "B", Some("B")),
                billed_error,
                slow,
                record(3, BAD, AD, "A", None),
                // A retried error: the later record replaces the earlier.
                record(3, BAD, AD, "A", Some("A")),
            ],
        );
        let s = summary(dir.path()).unwrap();
        let run = RunFolder::open(dir.path()).unwrap();
        let coverage = run.coverage();
        assert_eq!(
            (s.answered, s.errors, s.superseded, s.lines),
            (coverage.answered, coverage.errors, run.superseded, 5)
        );
        assert_eq!((s.answered, s.errors, s.correct), (3, 1, 2));
        for compat in [false, true] {
            let options = ScoreOptions {
                mmad_compat: compat,
                ..ScoreOptions::default()
            };
            assert_eq!(
                s.average(compat),
                run.score(options).get(AVERAGE, AVERAGE),
                "compat {compat}"
            );
        }
        assert_eq!(
            s.mean_latency_s(),
            Some((5 + 3000 + 5) as f64 / 1000.0 / 3.0)
        );
        // Tokens per question over the records that report any, errors included
        // (a failed call may still be billed).
        let t = s.tokens_per_question().unwrap();
        assert_eq!((t.prompt, t.completion), (800.0, 20.0));
        // Saved beside the journal, and read back as is while the journal is unchanged.
        assert_eq!(load_fresh(dir.path()).unwrap(), Some(s));
    }

    #[test]
    fn a_stale_or_damaged_summary_is_rebuilt_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        write_run(dir.path(), &[record(0, GOOD, AD, "B", Some("B"))]);
        let first = summary(dir.path()).unwrap();
        assert_eq!(first.answered, 1);

        // The run goes on: an appended record makes the saved summary stale.
        let (mut w, _) = JournalWriter::open(&dir.path().join(JOURNAL_FILE)).unwrap();
        w.append(&record(1, BAD, AD, "A", None)).unwrap();
        drop(w);
        assert_eq!(load_fresh(dir.path()).unwrap(), None);
        let second = summary(dir.path()).unwrap();
        assert_eq!((second.answered, second.errors), (1, 1));
        assert_eq!(load_fresh(dir.path()).unwrap(), Some(second.clone()));

        // A summary that lies about its journal (edited, copied from another run)
        // does not match the journal's stamp and is rebuilt.
        let mut forged = second.clone();
        forged.answered = 999;
        forged.journal.len += 1;
        std::fs::write(
            summary_path(dir.path()),
            serde_json::to_vec(&forged).unwrap(),
        )
        .unwrap();
        assert_eq!(summary(dir.path()).unwrap(), second);

        // Garbage is rebuilt too.
        std::fs::write(summary_path(dir.path()), b"\x00{not json").unwrap();
        assert_eq!(summary(dir.path()).unwrap(), second);

        // A torn last line is not counted, and says so.
        let half = serde_json::to_string(&record(2, BAD, AD, "A", Some("A"))).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL_FILE))
            .unwrap();
        f.write_all(&half.as_bytes()[..half.len() / 2]).unwrap();
        drop(f);
        let torn = summary(dir.path()).unwrap();
        assert!(torn.torn_last_line);
        assert_eq!((torn.answered, torn.errors), (1, 1));
    }

    #[test]
    fn a_run_without_a_journal_has_an_empty_summary() {
        let dir = tempfile::tempdir().unwrap();
        let s = summary(dir.path()).unwrap();
        assert_eq!((s.lines, s.answered, s.errors), (0, 0, 0));
        assert_eq!(s.mmad_average, None);
        assert_eq!(s.journal.len, 0);
    }
}
