//! The runs browser: every run folder under `<workspace>/runs`, with what it asked
//! and how far it got; open, resume, export, delete (to a trash folder).

use std::path::{Path, PathBuf};

use crate::runs::journal_summary;
use crate::runs::manifest::RunManifest;
use crate::runs::run_folder::open_manifest;
use crate::score::ScoreOptions;

/// Runs live here inside the workspace.
pub const RUNS_DIR: &str = "runs";
/// Deleted runs are moved here, never removed.
pub const TRASH_DIR: &str = ".trash";

pub fn runs_dir(workspace: &Path) -> PathBuf {
    workspace.join(RUNS_DIR)
}

/// One run as listed.
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
            row.accuracy = summary.average(options.mmad_compat);
            row.manifest = Some(manifest);
        }
        Err(e) => row.error = Some(e.to_string()),
    }
    row
}

/// Every run folder under `runs_dir`, newest first (folder names start with their
/// start time), scored with `options`. Hidden folders (the trash) are left out; a
/// missing folder is no runs.
pub fn list(runs_dir: &Path, options: ScoreOptions) -> anyhow::Result<Vec<RunRow>> {
    let entries = match std::fs::read_dir(runs_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => anyhow::bail!("cannot list the runs folder {}: {e}", runs_dir.display()),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| anyhow::anyhow!("cannot list {}: {e}", runs_dir.display()))?;
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

/// Moves a run folder into `<runs>/.trash/`, under a free name; returns where it went.
pub fn move_to_trash(run_dir: &Path) -> anyhow::Result<PathBuf> {
    let runs = run_dir
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no parent folder", run_dir.display()))?;
    let trash = runs.join(TRASH_DIR);
    std::fs::create_dir_all(&trash)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", trash.display()))?;
    let name = run_dir
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{} has no folder name", run_dir.display()))?;
    let mut target = trash.join(name);
    let mut n = 1;
    while target.exists() {
        target = trash.join(format!("{}-{n}", name.to_string_lossy()));
        n += 1;
    }
    std::fs::rename(run_dir, &target).map_err(|e| {
        anyhow::anyhow!(
            "cannot move {} to {}: {e}",
            run_dir.display(),
            target.display()
        )
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
}
