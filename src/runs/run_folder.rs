//! Reading a run folder back: its manifest, its journal, what it covers and how it
//! scores. The CLI (`score`, `export`, `merge`) and the runs catalog
//! ([`crate::runs::catalog`]) read runs through this, never by parsing the files
//! themselves.
//!
//! A journal may hold more than one record for a question (a resumed run that retried
//! failures appends a new record after the old one); the later record wins, since it
//! is what the run knows now.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::dataset::paths::{PathError, check_relative};
use crate::runs::journal::{JOURNAL_FILE, JournalError, JournalRecord, read_journal};
use crate::runs::manifest::{MANIFEST_FILE, ManifestError, RunManifest};
use crate::score::{self, AnswerRecord, ScoreOptions, ScoreTable};

/// Where `export` writes when no file is named.
pub const EXPORTS_DIR: &str = "exports";

#[derive(Debug, thiserror::Error)]
pub enum RunFolderError {
    #[error("{path} is not a folder")]
    NotAFolder { path: PathBuf },
    #[error("{path} is not a run folder: it has no {MANIFEST_FILE}")]
    NoManifest { path: PathBuf },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A record naming an image outside the dataset root: no run writes one, and
    /// whatever shows or re-asks the record would read that file.
    #[error("{}: the record of question {index}: {source}", journal.display())]
    BadImage {
        journal: PathBuf,
        index: usize,
        #[source]
        source: PathError,
    },
    #[error("cannot list the runs folder {path}: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How much of the run's questions have a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Coverage {
    /// Questions the run (this shard) was asked to cover, from the manifest.
    pub question_count: usize,
    /// Questions whose record holds an answer (right, wrong or unreadable).
    pub answered: usize,
    /// Questions whose record is an error (no answer after all retries).
    pub errors: usize,
    /// Questions without any record yet.
    pub missing: usize,
}

/// A run folder as read from disk.
#[derive(Debug, Clone)]
pub struct RunFolder {
    pub dir: PathBuf,
    pub manifest: RunManifest,
    /// One record per question, the latest written for it, in dataset order (index).
    records: Vec<JournalRecord>,
    /// Records in the journal that a later record for the same question replaced.
    pub superseded: usize,
    /// The journal's last line was cut short by an interrupted write and left out.
    pub torn_last_line: bool,
}

impl RunFolder {
    /// Reads `dir/manifest.json` and `dir/journal.jsonl` (a missing journal is a run
    /// that has not recorded anything yet).
    pub fn open(dir: &Path) -> Result<RunFolder, RunFolderError> {
        let manifest = open_manifest(dir)?;
        let journal_path = dir.join(JOURNAL_FILE);
        let journal = read_journal(&journal_path)?;
        for record in &journal.records {
            check_relative(&record.image).map_err(|source| RunFolderError::BadImage {
                journal: journal_path.clone(),
                index: record.index,
                source,
            })?;
        }
        let lines = journal.records.len();
        let mut by_index: BTreeMap<usize, JournalRecord> = BTreeMap::new();
        for record in journal.records {
            by_index.insert(record.index, record);
        }
        Ok(RunFolder {
            dir: dir.to_owned(),
            manifest,
            superseded: lines - by_index.len(),
            records: by_index.into_values().collect(),
            torn_last_line: journal.torn_last_line,
        })
    }

    /// Builds a run from records already in memory (merge, tests); the same rules
    /// as [`RunFolder::open`] apply to duplicates.
    pub fn from_parts(dir: PathBuf, manifest: RunManifest, records: Vec<JournalRecord>) -> Self {
        let lines = records.len();
        let by_index: BTreeMap<usize, JournalRecord> =
            records.into_iter().map(|r| (r.index, r)).collect();
        RunFolder {
            dir,
            manifest,
            superseded: lines - by_index.len(),
            records: by_index.into_values().collect(),
            torn_last_line: false,
        }
    }

    /// The folder's own name (what lists show).
    pub fn name(&self) -> String {
        folder_name(&self.dir)
    }

    /// One record per question, in dataset order.
    pub fn records(&self) -> &[JournalRecord] {
        &self.records
    }

    /// The record for a question, by its index in the dataset file.
    pub fn record(&self, index: usize) -> Option<&JournalRecord> {
        self.records
            .binary_search_by_key(&index, |r| r.index)
            .ok()
            .map(|i| &self.records[i])
    }

    pub fn ok_records(&self) -> impl Iterator<Item = &JournalRecord> {
        self.records.iter().filter(|r| r.is_ok())
    }

    pub fn error_records(&self) -> impl Iterator<Item = &JournalRecord> {
        self.records.iter().filter(|r| !r.is_ok())
    }

    pub fn ok_count(&self) -> usize {
        self.ok_records().count()
    }

    pub fn error_count(&self) -> usize {
        self.error_records().count()
    }

    pub fn coverage(&self) -> Coverage {
        let answered = self.ok_count();
        let errors = self.records.len() - answered;
        Coverage {
            question_count: self.manifest.question_count,
            answered,
            errors,
            missing: self
                .manifest
                .question_count
                .saturating_sub(self.records.len()),
        }
    }

    /// The answers list MMAD's scorer would read for this run: the answered
    /// questions in dataset order. Order matters to MMAD's table (rows and columns
    /// by first appearance, and the compat mode's skip), so it is the dataset's, not
    /// the order questions happened to finish in.
    pub fn answers(&self) -> Vec<AnswerRecord> {
        self.ok_records().map(JournalRecord::to_answer).collect()
    }

    pub fn score(&self, options: ScoreOptions) -> ScoreTable {
        score::score(&self.answers(), options)
    }

    /// The distinct model names of the run's endpoints, in manifest order.
    pub fn models(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in &self.manifest.endpoints {
            if !out.contains(&e.model) {
                out.push(e.model.clone());
            }
        }
        out
    }

    pub fn exports_dir(&self) -> PathBuf {
        self.dir.join(EXPORTS_DIR)
    }
}

/// The manifest of the run folder `dir`, with errors that say which of folder and
/// manifest is missing.
pub fn open_manifest(dir: &Path) -> Result<RunManifest, RunFolderError> {
    if !dir.is_dir() {
        return Err(RunFolderError::NotAFolder {
            path: dir.to_owned(),
        });
    }
    let manifest_path = RunManifest::path_in(dir);
    if !manifest_path.exists() {
        return Err(RunFolderError::NoManifest {
            path: dir.to_owned(),
        });
    }
    Ok(RunManifest::load(&manifest_path)?)
}

fn folder_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::test_support::{manifest, record, write_run};
    use std::io::Write;

    const GOOD: &str = "VisA/candle/test/good/0000.JPG";
    const BAD: &str = "VisA/candle/test/bad/000.JPG";
    const AD: &str = "Anomaly Detection";

    #[test]
    fn reads_records_in_dataset_order_and_counts_coverage() {
        let dir = tempfile::tempdir().unwrap();
        // Finished out of order, one error, one unreadable reply, two never asked.
        let records = [
            record(3, BAD, AD, "A", Some("A")),
            record(0, GOOD, AD, "B", Some("B")),
            record(2, BAD, "Defect Classification", "B", None),
            record(1, GOOD, AD, "B", Some("The image is unclear")),
        ];
        write_run(dir.path(), &manifest(6), &records);
        let run = RunFolder::open(dir.path()).unwrap();
        assert_eq!(
            run.records().iter().map(|r| r.index).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(
            run.coverage(),
            Coverage {
                question_count: 6,
                answered: 3,
                errors: 1,
                missing: 2
            }
        );
        assert_eq!((run.ok_count(), run.error_count()), (3, 1));
        assert_eq!(
            run.record(2).unwrap().error.as_deref(),
            Some("HTTP 503 after 3 attempts")
        );
        assert!(run.record(4).is_none());
        // Scoring reads the answered questions in dataset order.
        let answers = run.answers();
        assert_eq!(answers.len(), 3);
        assert_eq!(answers[0].image, GOOD);
        let table = run.score(ScoreOptions::default());
        assert_eq!(table.invalid, 1);
        // Normal: 1 of 1 valid correct; abnormal: 1 of 1.
        assert_eq!(table.get("VisA", AD), Some(100.0));
        let compat = run.score(ScoreOptions {
            mmad_compat: true,
            ..ScoreOptions::default()
        });
        // The invalid answer at position 1 makes MMAD skip the abnormal one after it.
        assert_eq!(compat.skipped, 1);
        assert_eq!(compat.get("VisA", AD), Some(50.0));
    }

    #[test]
    fn a_later_record_for_the_same_question_replaces_the_earlier() {
        let dir = tempfile::tempdir().unwrap();
        let records = [
            record(0, BAD, AD, "A", None),
            record(1, GOOD, AD, "B", Some("B")),
            record(0, BAD, AD, "A", Some("A")),
        ];
        write_run(dir.path(), &manifest(2), &records);
        let run = RunFolder::open(dir.path()).unwrap();
        assert_eq!(run.superseded, 1);
        assert_eq!(run.coverage().errors, 0);
        assert_eq!(run.coverage().answered, 2);
        assert_eq!(run.record(0).unwrap().gpt_answer.as_deref(), Some("A"));
    }

    #[test]
    fn a_torn_last_line_is_left_out_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_run(
            dir.path(),
            &manifest(3),
            &[record(0, GOOD, AD, "B", Some("B"))],
        );
        let half = serde_json::to_string(&record(1, BAD, AD, "A", Some("A"))).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL_FILE))
            .unwrap();
        f.write_all(&half.as_bytes()[..half.len() / 3]).unwrap();
        drop(f);
        let run = RunFolder::open(dir.path()).unwrap();
        assert!(run.torn_last_line);
        assert_eq!(run.coverage().answered, 1);
        assert_eq!(run.coverage().missing, 2);
    }

    /// `score FILE.jsonl` and the run folder read a journal through one reader, so
    /// they agree on its last line whatever state the writer left it in.
    #[test]
    fn score_of_the_journal_file_and_of_the_run_folder_agree_on_the_last_line() {
        let whole = |r: &JournalRecord| serde_json::to_string(r).unwrap();
        let first = record(0, GOOD, AD, "B", Some("B"));
        let last = record(1, BAD, AD, "A", Some("A"));
        let cases: [(&str, String, Option<usize>); 4] = [
            // A complete record whose newline was never written: the write did not
            // finish, so it does not count (resume asks it again).
            (
                "unterminated",
                format!("{}\n{}", whole(&first), whole(&last)),
                Some(1),
            ),
            (
                "cut short",
                format!("{}\n{}", whole(&first), &whole(&last)[..40]),
                Some(1),
            ),
            (
                "terminated",
                format!("{}\n{}\n", whole(&first), whole(&last)),
                Some(2),
            ),
            // A whole line that does not parse is damage, for both.
            (
                "bad whole line",
                format!("{}\n{{\"image\": 3}}\n", whole(&first)),
                None,
            ),
        ];
        for (name, text, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            write_run(dir.path(), &manifest(2), &[]);
            let journal = dir.path().join(JOURNAL_FILE);
            std::fs::write(&journal, &text).unwrap();
            let folder = RunFolder::open(dir.path());
            let file = score::load_answers(&journal);
            match expected {
                Some(n) => {
                    let folder = folder.unwrap();
                    let file = file.unwrap();
                    assert_eq!(folder.answers().len(), n, "{name}: run folder");
                    assert_eq!(file.records.len(), n, "{name}: score FILE.jsonl");
                    assert_eq!(file.records, folder.answers(), "{name}");
                    assert_eq!(folder.torn_last_line, n == 1, "{name}");
                    assert_eq!(file.torn_last_line, n == 1, "{name}");
                }
                None => {
                    assert!(folder.unwrap_err().to_string().contains("line 2"), "{name}");
                    assert!(file.unwrap_err().to_string().contains("line 2"), "{name}");
                }
            }
        }
    }

    #[test]
    fn errors_name_the_folder_and_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let err = RunFolder::open(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, RunFolderError::NotAFolder { .. }), "{err}");
        let err = RunFolder::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("no manifest.json"), "{err}");
        std::fs::write(RunManifest::path_in(dir.path()), "{").unwrap();
        let err = RunFolder::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("manifest.json"), "{err}");
        manifest(1).save(&RunManifest::path_in(dir.path())).unwrap();
        std::fs::write(dir.path().join(JOURNAL_FILE), "{\"x\":1}\n{}\n").unwrap();
        let err = RunFolder::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
