//! The runs catalog: every run folder under `<workspace>/runs`, with what it asked
//! and how far it got, as the app's Runs list, the Knowledge tab's re-run and the
//! benchmarks see them; where a new run's folder goes, and where a deleted one is
//! moved (a trash folder: nothing is erased).

use std::path::{Path, PathBuf};

use crate::runs::journal_summary::{self, TokensPerQuestion};
use crate::runs::manifest::RunManifest;
use crate::runs::run_folder::{RunFolderError, open_manifest};
use crate::score::ScoreOptions;

/// Runs live here inside the workspace.
pub const RUNS_DIR: &str = "runs";
/// Deleted runs are moved here, never removed.
pub const TRASH_DIR: &str = ".trash";

pub fn runs_dir(workspace: &Path) -> PathBuf {
    workspace.join(RUNS_DIR)
}

/// One run as listed. A folder that cannot be read is still listed, with `error`
/// saying why and the other fields empty.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub dir: PathBuf,
    pub name: String,
    pub manifest: Option<RunManifest>,
    /// Distinct questions with an answer record.
    pub answered: usize,
    pub errors: usize,
    /// MMAD's overall Average (scored as the list was asked to).
    pub accuracy: Option<f64>,
    /// Mean time per answered question, for estimates of new runs.
    pub mean_latency_s: Option<f64>,
    /// Mean tokens per question, for cost estimates of new runs.
    pub tokens_per_question: Option<TokensPerQuestion>,
    /// Why the folder could not be read (listed anyway).
    pub error: Option<String>,
}

impl RunRow {
    pub fn question_count(&self) -> usize {
        self.manifest.as_ref().map_or(0, |m| m.question_count)
    }

    /// Some questions have no record yet: Resume can continue it.
    pub fn unfinished(&self) -> bool {
        self.manifest.is_some() && self.answered + self.errors < self.question_count()
    }

    /// The note the run was started with; empty when there is none or the folder
    /// cannot be read.
    pub fn note(&self) -> &str {
        self.manifest.as_ref().map_or("", |m| m.note.as_str())
    }

    pub fn models(&self) -> String {
        self.manifest.as_ref().map_or(String::new(), |m| {
            let mut v: Vec<&str> = m.endpoints.iter().map(|e| e.model.as_str()).collect();
            v.dedup();
            v.join(", ")
        })
    }
}

fn read_row(dir: &Path, options: ScoreOptions) -> RunRow {
    let name = dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut row = RunRow {
        dir: dir.to_path_buf(),
        name,
        manifest: None,
        answered: 0,
        errors: 0,
        accuracy: None,
        mean_latency_s: None,
        tokens_per_question: None,
        error: None,
    };
    // The manifest and the journal's summary: a list of 50 runs of 40,000 questions
    // must not read their journals (hundreds of MB each) every time it is shown.
    let read = open_manifest(dir).and_then(|m| Ok((m, journal_summary::summary(dir)?)));
    match read {
        Ok((manifest, summary)) => {
            row.answered = summary.answered;
            row.errors = summary.errors;
            row.mean_latency_s = summary.mean_latency_s();
            row.tokens_per_question = summary.tokens_per_question();
            row.accuracy = summary.average(options.mmad_compat);
            row.manifest = Some(manifest);
        }
        Err(e) => row.error = Some(e.to_string()),
    }
    row
}

/// Every run folder directly under `runs_dir`, newest first (folder names start
/// with their start time), scored with `options`. Hidden folders (the trash, a
/// merge still being written) are left out. A `runs_dir` that does not exist holds
/// no runs; one that exists but cannot be listed is an error.
pub fn list(runs_dir: &Path, options: ScoreOptions) -> Result<Vec<RunRow>, RunFolderError> {
    let list_err = |source| RunFolderError::List {
        path: runs_dir.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(runs_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(list_err(e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(list_err)?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && entry.path().is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    dirs.reverse();
    // In parallel: a run whose summary is missing or stale is rebuilt from its
    // journal (seconds for a large one), and each is independent of the others.
    use rayon::prelude::*;
    Ok(dirs.par_iter().map(|d| read_row(d, options)).collect())
}

/// Why a run folder could not be moved to the trash.
#[derive(Debug, thiserror::Error)]
pub enum TrashError {
    #[error("{} has no parent folder", path.display())]
    NoParent { path: PathBuf },
    #[error("{} has no folder name", path.display())]
    NoName { path: PathBuf },
    #[error("cannot create {}: {source}", path.display())]
    CreateTrash {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot move {} to {}: {source}", from.display(), to.display())]
    Move {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Moves a run folder into `<runs>/.trash/`, under a free name; returns where it went.
pub fn move_to_trash(run_dir: &Path) -> Result<PathBuf, TrashError> {
    let runs = run_dir.parent().ok_or_else(|| TrashError::NoParent {
        path: run_dir.to_owned(),
    })?;
    let trash = runs.join(TRASH_DIR);
    std::fs::create_dir_all(&trash).map_err(|source| TrashError::CreateTrash {
        path: trash.clone(),
        source,
    })?;
    let name = run_dir.file_name().ok_or_else(|| TrashError::NoName {
        path: run_dir.to_owned(),
    })?;
    let mut target = trash.join(name);
    let mut n = 1;
    while target.exists() {
        target = trash.join(format!("{}-{n}", name.to_string_lossy()));
        n += 1;
    }
    std::fs::rename(run_dir, &target).map_err(|source| TrashError::Move {
        from: run_dir.to_owned(),
        to: target.clone(),
        source,
    })?;
    Ok(target)
}

/// `<timestamp>-<name>`: sortable by start, readable, and safe as a folder name.
pub fn run_folder_name(started: &str, name: &str) -> String {
    let stamp: String = started
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .take(15)
        .collect();
    let clean: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(60)
        .collect();
    let clean = clean.trim_matches('-');
    if clean.is_empty() {
        stamp
    } else {
        format!("{stamp}-{clean}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::test_support::{manifest, record, write_run};

    const GOOD: &str = "VisA/candle/test/good/0000.JPG";
    const BAD: &str = "VisA/candle/test/bad/000.JPG";
    const AD: &str = "Anomaly Detection";

    #[test]
    fn folder_names_are_sortable_and_safe() {
        assert_eq!(
            run_folder_name("2026-11-22T08:53:13Z", "echo / qwen 7B"),
            "20261122T085313-echo---qwen-7B"
        );
        assert_eq!(
            run_folder_name("2026-11-22T08:53:13Z", "../"),
            "20261122T085313"
        );
    }

    #[test]
    fn trash_keeps_both_runs_of_the_same_name() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..2 {
            let run = dir.path().join("r1");
            std::fs::create_dir_all(&run).unwrap();
            std::fs::write(run.join("journal.jsonl"), "").unwrap();
            move_to_trash(&run).unwrap();
            assert!(!run.exists());
        }
        assert!(dir.path().join(".trash/r1/journal.jsonl").exists());
        assert!(dir.path().join(".trash/r1-1/journal.jsonl").exists());
        assert!(
            list(dir.path(), ScoreOptions::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn trash_errors_name_both_folders() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone");
        let err = move_to_trash(&missing).unwrap_err();
        assert!(matches!(err, TrashError::Move { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with("cannot move "), "{text}");
        assert!(text.contains(&missing.display().to_string()), "{text}");
        assert!(
            text.contains(
                &dir.path()
                    .join(TRASH_DIR)
                    .join("gone")
                    .display()
                    .to_string()
            )
        );
    }

    #[test]
    fn list_shows_good_and_broken_folders_newest_first() {
        let runs = tempfile::tempdir().unwrap();
        let mut m = manifest(2);
        m.note = "baseline".into();
        write_run(
            &runs.path().join("b-run"),
            &m,
            &[
                record(0, GOOD, AD, "B", Some("B")),
                record(1, BAD, AD, "A", None),
            ],
        );
        std::fs::create_dir_all(runs.path().join("a-broken")).unwrap();
        std::fs::write(runs.path().join("a-broken/manifest.json"), "not json").unwrap();
        std::fs::create_dir_all(runs.path().join(".merge-tmp")).unwrap();
        std::fs::write(runs.path().join("stray.txt"), "x").unwrap();

        let rows = list(runs.path(), ScoreOptions::default()).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["b-run", "a-broken"]
        );
        let broken = &rows[1];
        assert!(broken.error.as_deref().unwrap().contains("manifest.json"));
        assert_eq!((broken.note(), broken.question_count()), ("", 0));
        let ok = &rows[0];
        assert_eq!(ok.error, None);
        assert_eq!(ok.note(), "baseline");
        assert_eq!(ok.models(), "qwen2-vl-7b");
        assert_eq!((ok.question_count(), ok.answered, ok.errors), (2, 1, 1));
        assert!(!ok.unfinished());
        // One normal AD question answered right, no abnormal one: (100 + 0) / 2.
        assert_eq!(ok.accuracy, Some(50.0));
        assert_eq!(
            ok.manifest.as_ref().and_then(|m| m.finished_at.as_deref()),
            Some("2026-11-22T09:00:00Z")
        );

        let options = ScoreOptions::default();
        assert!(
            list(&runs.path().join("missing"), options)
                .unwrap()
                .is_empty()
        );
        let err = list(&runs.path().join("stray.txt"), options).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot list the runs folder"),
            "{err}"
        );
    }
}
