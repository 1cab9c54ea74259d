//! Joining the shards of one run (`run --shard i/n` on several machines) into one
//! run folder that scores, exports and resumes like a run made in one go.
//!
//! Shards only join when they answered the same questions the same way: equal
//! manifest fingerprints, one shard count, no shard twice, and no question recorded
//! by two inputs (which would mean two answers to choose between).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::runs::journal::{JOURNAL_FILE, JournalError, JournalRecord, JournalWriter};
use crate::runs::lock::{LOCK_FILE, LockError, RunLock};
use crate::runs::manifest::{EndpointSummary, ManifestError, RunManifest, Shard};
use crate::runs::run_folder::{RunFolder, RunFolderError};
use crate::util::fsx::sync_dir;

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("nothing to merge: give at least one run folder")]
    NoInputs,
    #[error(transparent)]
    Open(#[from] RunFolderError),
    #[error(transparent)]
    Busy(#[from] LockError),
    #[error(
        "these runs were made with different settings and cannot be merged: {}",
        describe_mismatches(.reference, .mismatches)
    )]
    Settings {
        reference: PathBuf,
        /// Each folder that differs from `reference`, with what differs.
        mismatches: Vec<(PathBuf, Vec<String>)>,
    },
    #[error(
        "{a} is --shard {a_shard} but {b} is --shard {b_shard}: shards of one run share the shard count"
    )]
    ShardCount {
        a: PathBuf,
        a_shard: Shard,
        b: PathBuf,
        b_shard: Shard,
    },
    #[error("{a} and {b} are both --shard {shard}")]
    DuplicateShard {
        shard: Shard,
        a: PathBuf,
        b: PathBuf,
    },
    #[error("question index {index} is recorded in both {a} and {b}")]
    Overlap {
        index: usize,
        a: PathBuf,
        b: PathBuf,
    },
    #[error("the output {path} is one of the inputs or holds one; merge into a new folder")]
    OutIsInput { path: PathBuf },
    #[error(
        "the output {path} already exists and is not an empty folder (use --force to replace it)"
    )]
    OutNotEmpty { path: PathBuf },
    #[error("the output {path} exists and is not a folder")]
    OutNotAFolder { path: PathBuf },
    #[error(
        "the output {path} is a symlink; refusing to replace it (give the folder it points to, or a new one)"
    )]
    OutIsSymlink { path: PathBuf },
    #[error(
        "the output {path} holds files but is not a run folder (no readable manifest.json: {reason}); --force only replaces an empty folder or a run folder, so it was left untouched"
    )]
    OutNotARun { path: PathBuf, reason: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot write the merged run {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn describe_mismatches(reference: &Path, mismatches: &[(PathBuf, Vec<String>)]) -> String {
    mismatches
        .iter()
        .map(|(path, diffs)| {
            let what = if diffs.is_empty() {
                "its settings fingerprint".to_owned()
            } else {
                diffs.join(", ")
            };
            format!(
                "{} differs from {} in {what}",
                path.display(),
                reference.display()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A merged run, not yet written.
#[derive(Debug, Clone)]
pub struct Merged {
    pub manifest: RunManifest,
    /// Sorted by question index.
    pub records: Vec<JournalRecord>,
    /// Shards of the shared shard count that no input holds (empty when unsharded or
    /// complete).
    pub missing_shards: Vec<u32>,
    /// The inputs' shard count (`None` when none of them is a shard).
    pub shard_count: Option<u32>,
    /// Inputs whose journal ended in a torn line (left out, as it never counted).
    pub torn_inputs: Vec<PathBuf>,
}

/// Checks that `inputs` are parts of one run and joins them (see the module docs).
pub fn merge_runs(inputs: &[RunFolder]) -> Result<Merged, MergeError> {
    let first = inputs.first().ok_or(MergeError::NoInputs)?;

    let fingerprint = first.manifest.fingerprint();
    let mismatches: Vec<(PathBuf, Vec<String>)> = inputs[1..]
        .iter()
        .filter(|run| run.manifest.fingerprint() != fingerprint)
        .map(|run| (run.dir.clone(), first.manifest.differences(&run.manifest)))
        .collect();
    if !mismatches.is_empty() {
        return Err(MergeError::Settings {
            reference: first.dir.clone(),
            mismatches,
        });
    }

    let mut shards: BTreeMap<u32, (&Path, Shard)> = BTreeMap::new();
    let mut shard_count: Option<(&Path, Shard)> = None;
    for run in inputs {
        let Some(shard) = run.manifest.shard else {
            continue;
        };
        match shard_count {
            Some((a, a_shard)) if a_shard.count != shard.count => {
                return Err(MergeError::ShardCount {
                    a: a.to_owned(),
                    a_shard,
                    b: run.dir.clone(),
                    b_shard: shard,
                });
            }
            None => shard_count = Some((&run.dir, shard)),
            Some(_) => {}
        }
        if let Some((a, _)) = shards.insert(shard.index, (&run.dir, shard)) {
            return Err(MergeError::DuplicateShard {
                shard,
                a: a.to_owned(),
                b: run.dir.clone(),
            });
        }
    }
    let missing_shards = shard_count.map_or_else(Vec::new, |(_, s)| {
        (0..s.count).filter(|i| !shards.contains_key(i)).collect()
    });

    let mut by_index: BTreeMap<usize, (&Path, &JournalRecord)> = BTreeMap::new();
    for run in inputs {
        for record in run.records() {
            if let Some((a, _)) = by_index.insert(record.index, (&run.dir, record)) {
                return Err(MergeError::Overlap {
                    index: record.index,
                    a: a.to_owned(),
                    b: run.dir.clone(),
                });
            }
        }
    }

    let mut manifest = first.manifest.clone();
    manifest.shard = None;
    // Where each shard ran stays in its own folder; the merged run ran nowhere.
    manifest.placement = None;
    manifest.question_count = inputs.iter().map(|r| r.manifest.question_count).sum();
    manifest.started_at = inputs
        .iter()
        .map(|r| r.manifest.started_at.as_str())
        .min_by_key(|t| timestamp_key(t))
        .unwrap_or_default()
        .to_owned();
    let finished: Option<Vec<&str>> = inputs
        .iter()
        .map(|r| r.manifest.finished_at.as_deref())
        .collect();
    manifest.finished_at = finished
        .and_then(|all| all.into_iter().max_by_key(|t| timestamp_key(t)))
        .map(str::to_owned);
    let mut endpoints: Vec<EndpointSummary> = Vec::new();
    for e in inputs.iter().flat_map(|r| &r.manifest.endpoints) {
        let known = endpoints
            .iter()
            .any(|k| k.name == e.name && k.base_url == e.base_url && k.model == e.model);
        if !known {
            endpoints.push(e.clone());
        }
    }
    manifest.endpoints = endpoints;
    let mut notes: Vec<&str> = Vec::new();
    for r in inputs {
        let note = r.manifest.note.as_str();
        if !note.is_empty() && !notes.contains(&note) {
            notes.push(note);
        }
    }
    manifest.note = notes.join(" + ");
    // A shard forced onto other settings mixes them; the merged run says so too.
    manifest.forced_from = inputs
        .iter()
        .flat_map(|r| r.manifest.forced_from.iter().cloned())
        .collect();
    // Each shard counted its own questions without their inputs; the whole run
    // holds them all.
    manifest.missing_inputs = crate::echo::preflight::InputCheck::combined(
        inputs
            .iter()
            .filter_map(|r| r.manifest.missing_inputs.as_ref()),
    );

    Ok(Merged {
        manifest,
        records: by_index.into_values().map(|(_, r)| r.clone()).collect(),
        missing_shards,
        shard_count: shard_count.map(|(_, s)| s.count),
        torn_inputs: inputs
            .iter()
            .filter(|r| r.torn_last_line)
            .map(|r| r.dir.clone())
            .collect(),
    })
}

/// RFC 3339 times sort as text once the fraction is padded: `10:00:00Z` must come
/// after `10:00:00.5Z`'s second, not before it.
/// The times come from manifests a person may have edited, so the cut is moved back
/// to a character boundary rather than trusted to fall on one.
fn timestamp_key(t: &str) -> (String, String) {
    let cut = (0..=t.len().min(19))
        .rev()
        .find(|&i| t.is_char_boundary(i))
        .unwrap_or(0);
    let (secs, rest) = t.split_at(cut);
    let fraction: String = rest
        .strip_prefix('.')
        .map(|f| f.chars().take_while(char::is_ascii_digit).collect())
        .unwrap_or_default();
    (secs.to_owned(), format!("{fraction:0<9}"))
}

/// Opens the `inputs`, merges them and writes the result to `out` atomically: the
/// run is assembled in a hidden sibling folder and renamed into place, so `out` is
/// never half written. An existing `out` must be empty unless `force`.
pub fn merge_dirs(inputs: &[PathBuf], out: &Path, force: bool) -> Result<Merged, MergeError> {
    if inputs.is_empty() {
        return Err(MergeError::NoInputs);
    }
    // A shard still being written would be merged half done: hold each input's lock
    // (refused at once while a run holds it) until the merged folder is in place.
    let _locks = inputs
        .iter()
        .filter(|p| p.is_dir())
        .map(|p| RunLock::acquire(p))
        .collect::<Result<Vec<_>, _>>()?;
    let runs = inputs
        .iter()
        .map(|p| RunFolder::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    let merged = merge_runs(&runs)?;

    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| MergeError::Write { path, source }
    };
    // A symlink would be renamed aside and deleted below, leaving its target
    // dangling from wherever else it is linked; `exists()` alone also follows it.
    let out_meta = match std::fs::symlink_metadata(out) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(write_err(out)(e)),
    };
    let mut out_lock = None;
    if let Some(meta) = &out_meta {
        if meta.file_type().is_symlink() {
            return Err(MergeError::OutIsSymlink {
                path: out.to_owned(),
            });
        }
        if !meta.is_dir() {
            return Err(MergeError::OutNotAFolder {
                path: out.to_owned(),
            });
        }
        let canonical_out = out.canonicalize().map_err(write_err(out))?;
        for input in inputs {
            // Replacing a folder that holds an input would delete that input too.
            let inside = input
                .canonicalize()
                .is_ok_and(|input| input.starts_with(&canonical_out));
            if inside {
                return Err(MergeError::OutIsInput {
                    path: out.to_owned(),
                });
            }
        }
        // Looked at before locking, so that a folder we will not replace never even
        // gets a `.lock` file from us...
        check_replaceable(out, force)?;
        // ...and again once locked: a run writing into `out` would go on writing into
        // a folder we delete, so its lock is held (refused at once while a run holds
        // it) until the swap is done, and no run can add files after this look.
        out_lock = Some(RunLock::acquire(out)?);
        check_replaceable(out, force)?;
    }

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(write_err(&parent))?;
    let staging = tempfile::Builder::new()
        .prefix(".merge-tmp-")
        .tempdir_in(&parent)
        .map_err(write_err(&parent))?;
    // Locked from birth, so the merged folder is never open to a run until we are done.
    let _staging_lock = RunLock::acquire(staging.path())?;
    merged
        .manifest
        .save(&RunManifest::path_in(staging.path()))?;
    let (mut writer, _) = JournalWriter::open(&staging.path().join(JOURNAL_FILE))?;
    for record in &merged.records {
        writer.append(record)?;
    }
    writer.sync()?;
    drop(writer);
    // The journal's entry must be durable before the folder is published under `out`.
    sync_dir(staging.path()).map_err(write_err(staging.path()))?;

    if out_meta.is_some() {
        // Move the old folder aside first so that a failure leaves it recoverable;
        // it is deleted only once the new one is in place.
        let old = tempfile::Builder::new()
            .prefix(".merge-old-")
            .tempdir_in(&parent)
            .map_err(write_err(&parent))?;
        let old_path = old.path().join("previous");
        std::fs::rename(out, &old_path).map_err(write_err(out))?;
        if let Err(source) = std::fs::rename(staging.path(), out) {
            let _ = std::fs::rename(&old_path, out);
            return Err(MergeError::Write {
                path: out.to_owned(),
                source,
            });
        }
        sync_dir(&parent).map_err(write_err(&parent))?;
        drop(out_lock);
        drop(old);
    } else {
        std::fs::rename(staging.path(), out).map_err(write_err(out))?;
        sync_dir(&parent).map_err(write_err(&parent))?;
    }
    // The staging folder is now `out`; nothing is left to clean up.
    let _ = staging.keep();
    Ok(merged)
}

/// An existing output may be replaced when it is empty, or, with `force`, when it
/// is a run folder (its manifest reads as one): never a folder of other files.
fn check_replaceable(out: &Path, force: bool) -> Result<(), MergeError> {
    let empty = holds_only_a_lock(out).map_err(|source| MergeError::Write {
        path: out.to_owned(),
        source,
    })?;
    if empty {
        return Ok(());
    }
    if !force {
        return Err(MergeError::OutNotEmpty {
            path: out.to_owned(),
        });
    }
    match RunManifest::load(&RunManifest::path_in(out)) {
        Ok(_) => Ok(()),
        Err(e) => Err(MergeError::OutNotARun {
            path: out.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Whether a folder is empty but for a `.lock` (which a run leaves behind, and which
/// taking the folder's lock creates).
fn holds_only_a_lock(dir: &Path) -> std::io::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        if entry?.file_name() != LOCK_FILE {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::journal::read_journal;
    use crate::runs::test_support::{manifest, record};

    const GOOD: &str = "VisA/candle/test/good/0000.JPG";
    const AD: &str = "Anomaly Detection";

    fn shard(index: u32, count: u32, indices: &[usize], started: &str) -> RunFolder {
        let mut m = manifest(indices.len());
        m.shard = Some(Shard { index, count });
        m.started_at = started.into();
        m.finished_at = Some(format!("2026-11-2{}T10:00:00Z", 2 + index));
        m.endpoints[0].base_url = format!("http://10.0.0.{index}:8000/v1");
        RunFolder::from_parts(
            format!("shard{index}").into(),
            m,
            indices
                .iter()
                .map(|&i| record(i, GOOD, AD, "B", Some("B")))
                .collect(),
        )
    }

    #[test]
    fn joins_shards_in_index_order_with_a_whole_run_manifest() {
        let runs = [
            shard(1, 3, &[1, 4], "2026-11-22T08:00:00Z"),
            shard(0, 3, &[0, 3], "2026-11-22T07:59:59.5Z"),
            shard(2, 3, &[2, 5], "2026-11-22T08:00:00.25Z"),
        ];
        let merged = merge_runs(&runs).unwrap();
        assert_eq!(
            merged.records.iter().map(|r| r.index).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5]
        );
        let m = &merged.manifest;
        assert_eq!(m.shard, None);
        assert_eq!(m.question_count, 6);
        assert_eq!(m.started_at, "2026-11-22T07:59:59.5Z");
        assert_eq!(m.finished_at.as_deref(), Some("2026-11-24T10:00:00Z"));
        assert_eq!(m.endpoints.len(), 3);
        assert_eq!(m.fingerprint(), runs[0].manifest.fingerprint());
        assert!(merged.missing_shards.is_empty());
    }

    #[test]
    fn times_that_are_not_ascii_merge_without_a_panic() {
        // The 19th byte falls inside `é` (bytes 18..20) and inside `日`.
        let a = shard(0, 2, &[0], "2026-11-22T08:00:0é5Z");
        let mut b = shard(1, 2, &[1], "2026-11-22T08:00:日");
        b.manifest.finished_at = Some("ünïcödé-finish-time".into());
        let merged = merge_runs(&[a, b]).unwrap();
        assert_eq!(merged.manifest.started_at, "2026-11-22T08:00:日");
        assert_eq!(
            merged.manifest.finished_at.as_deref(),
            Some("ünïcödé-finish-time")
        );
        assert_eq!(timestamp_key("é").0, "é");
        assert_eq!(timestamp_key("").0, "");
    }

    #[test]
    fn questions_without_their_inputs_add_up_over_shards() {
        use crate::echo::preflight::{Fix, InputCheck, InputGap, KnowledgeSource, MissingInput};
        let gap = |category: &str, questions: usize, qtype: &str| InputGap {
            missing: MissingInput::Knowledge {
                source: KnowledgeSource::Condensed,
                mode: crate::echo::KnowledgeMode::Condensed,
                loaded: true,
            },
            dataset: Some("GoodsAD".into()),
            category: category.into(),
            questions,
            types: vec![qtype.into()],
            fixes: vec![Fix::CondensedFile],
            indices: Vec::new(),
        };
        let mut runs = [
            shard(0, 3, &[0, 3], "2026-11-22T08:00:00Z"),
            shard(1, 3, &[1, 4], "2026-11-22T08:00:00Z"),
            shard(2, 3, &[2, 5], "2026-11-22T08:00:00Z"),
        ];
        runs[0].manifest.missing_inputs = Some(InputCheck {
            questions: 2,
            gaps: vec![gap("drink_bottle", 2, "Defect Classification")],
        });
        runs[2].manifest.missing_inputs = Some(InputCheck {
            questions: 3,
            gaps: vec![
                gap("drink_bottle", 1, "Defect Description"),
                gap("food_box", 2, "Defect Classification"),
            ],
        });
        let merged = merge_runs(&runs).unwrap().manifest.missing_inputs.unwrap();
        assert_eq!(merged.questions, 5);
        assert_eq!(merged.gaps.len(), 2);
        let bottle = &merged.gaps[0];
        assert_eq!(
            (bottle.category.as_str(), bottle.questions),
            ("drink_bottle", 3)
        );
        assert_eq!(
            bottle.types,
            ["Defect Classification", "Defect Description"]
        );
        // No shard lacking anything: the merged run lacks nothing either.
        for r in &mut runs {
            r.manifest.missing_inputs = None;
        }
        assert!(merge_runs(&runs).unwrap().manifest.missing_inputs.is_none());
    }

    #[test]
    fn an_unfinished_shard_leaves_the_merge_unfinished_and_gaps_are_named() {
        let mut a = shard(0, 3, &[0], "2026-11-22T08:00:00Z");
        a.manifest.finished_at = None;
        let b = shard(2, 3, &[2], "2026-11-22T08:00:00Z");
        let merged = merge_runs(&[a, b]).unwrap();
        assert_eq!(merged.manifest.finished_at, None);
        assert_eq!(merged.missing_shards, [1]);
    }

    #[test]
    fn refuses_what_is_not_one_run() {
        let a = shard(0, 2, &[0, 2], "t");
        let mut other = shard(1, 2, &[1], "t");
        other.manifest.pipeline.preset = "mmad".into();
        other.manifest.endpoints[0].model = "llava".into();
        let err = merge_runs(&[a.clone(), other]).unwrap_err().to_string();
        assert!(
            err.contains("shard1 differs from shard0 in pipeline settings, models"),
            "{err}"
        );

        let err = merge_runs(&[a.clone(), shard(0, 2, &[1], "t")])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "shard0 and shard0 are both --shard 0/2");

        let err = merge_runs(&[a.clone(), shard(1, 3, &[1], "t")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "shard0 is --shard 0/2 but shard1 is --shard 1/3: shards of one run share the shard count"
        );

        let err = merge_runs(&[a.clone(), shard(1, 2, &[1, 2], "t")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "question index 2 is recorded in both shard0 and shard1"
        );

        // Unsharded parts join when they do not overlap.
        let mut whole = shard(0, 1, &[5], "t");
        whole.manifest.shard = None;
        assert!(merge_runs(&[a, whole]).is_ok());
    }

    #[test]
    fn writes_atomically_and_guards_the_output_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let mut inputs = Vec::new();
        for (i, run) in [
            shard(0, 2, &[0, 2], "2026-11-22T08:00:00Z"),
            shard(1, 2, &[1], "2026-11-22T08:00:00Z"),
        ]
        .into_iter()
        .enumerate()
        {
            let dir = tmp.path().join(format!("in{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            run.manifest.save(&RunManifest::path_in(&dir)).unwrap();
            let (mut w, _) = JournalWriter::open(&dir.join(JOURNAL_FILE)).unwrap();
            for r in run.records() {
                w.append(r).unwrap();
            }
            inputs.push(dir);
        }
        let out = tmp.path().join("merged");
        merge_dirs(&inputs, &out, false).unwrap();
        let back = read_journal(&out.join(JOURNAL_FILE)).unwrap();
        assert_eq!(
            back.records.iter().map(|r| r.index).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(
            RunManifest::load(&RunManifest::path_in(&out))
                .unwrap()
                .question_count,
            3
        );
        // No staging folders left behind.
        let hidden = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count();
        assert_eq!(hidden, 0);

        let err = merge_dirs(&inputs, &out, false).unwrap_err();
        assert!(matches!(err, MergeError::OutNotEmpty { .. }), "{err}");
        std::fs::write(out.join("stale.txt"), "x").unwrap();
        merge_dirs(&inputs, &out, true).unwrap();
        assert!(!out.join("stale.txt").exists());
        let err = merge_dirs(&inputs, &inputs[0], true).unwrap_err();
        assert!(matches!(err, MergeError::OutIsInput { .. }), "{err}");

        // A shard that a run is still writing is not merged half done.
        let busy = RunLock::acquire(&inputs[1]).unwrap();
        let err = merge_dirs(&inputs, &tmp.path().join("while-busy"), false).unwrap_err();
        assert!(matches!(err, MergeError::Busy(_)), "{err}");
        assert!(
            err.to_string().contains("is in use by another run"),
            "{err}"
        );
        assert!(!tmp.path().join("while-busy").exists());
        drop(busy);

        let empty = tmp.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        merge_dirs(&inputs, &empty, false).unwrap();
        assert!(empty.join(JOURNAL_FILE).is_file());
    }

    /// Two shards written as run folders under `root`, as `merge` reads them.
    fn shard_dirs(root: &Path) -> Vec<PathBuf> {
        let mut inputs = Vec::new();
        for (i, run) in [
            shard(0, 2, &[0, 2], "2026-11-22T08:00:00Z"),
            shard(1, 2, &[1], "2026-11-22T08:00:00Z"),
        ]
        .into_iter()
        .enumerate()
        {
            let dir = root.join(format!("in{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            run.manifest.save(&RunManifest::path_in(&dir)).unwrap();
            let (mut w, _) = JournalWriter::open(&dir.join(JOURNAL_FILE)).unwrap();
            for r in run.records() {
                w.append(r).unwrap();
            }
            inputs.push(dir);
        }
        inputs
    }

    #[test]
    fn force_never_replaces_a_folder_a_run_is_writing() {
        let tmp = tempfile::tempdir().unwrap();
        let inputs = shard_dirs(tmp.path());
        let out = tmp.path().join("live");
        merge_dirs(&inputs, &out, false).unwrap();
        let journal_before = std::fs::read(out.join(JOURNAL_FILE)).unwrap();
        let writing = RunLock::acquire(&out).unwrap();
        let err = merge_dirs(&inputs, &out, true).unwrap_err();
        assert!(matches!(err, MergeError::Busy(_)), "{err}");
        assert!(err.to_string().contains("in use by another run"), "{err}");
        assert_eq!(
            std::fs::read(out.join(JOURNAL_FILE)).unwrap(),
            journal_before
        );
        drop(writing);
        // Once the run lets go, the same merge replaces it.
        merge_dirs(&inputs, &out, true).unwrap();
    }

    #[test]
    fn force_replaces_only_a_run_folder_or_an_empty_one() {
        let tmp = tempfile::tempdir().unwrap();
        let inputs = shard_dirs(tmp.path());
        let thesis = tmp.path().join("thesis");
        std::fs::create_dir_all(thesis.join("figures")).unwrap();
        std::fs::write(thesis.join("main.tex"), "precious").unwrap();
        std::fs::write(thesis.join("figures/a.png"), "png").unwrap();
        let err = merge_dirs(&inputs, &thesis, true).unwrap_err();
        assert!(matches!(err, MergeError::OutNotARun { .. }), "{err}");
        assert!(err.to_string().contains("not a run folder"), "{err}");
        let mut names: Vec<_> = std::fs::read_dir(&thesis)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        // Not even a `.lock` of ours was left in it.
        assert_eq!(names, ["figures", "main.tex"]);
        assert_eq!(std::fs::read(thesis.join("main.tex")).unwrap(), b"precious");

        // A folder holding only a `.lock` (a run that failed before writing) is empty.
        let stub = tmp.path().join("stub");
        std::fs::create_dir_all(&stub).unwrap();
        std::fs::write(stub.join(LOCK_FILE), "1\n").unwrap();
        merge_dirs(&inputs, &stub, false).unwrap();
        assert!(stub.join(JOURNAL_FILE).is_file());

        // A run folder is replaced whole, whatever else it held.
        std::fs::write(stub.join("old-export.csv"), "x").unwrap();
        merge_dirs(&inputs, &stub, true).unwrap();
        assert!(!stub.join("old-export.csv").exists());
        assert_eq!(
            read_journal(&stub.join(JOURNAL_FILE))
                .unwrap()
                .records
                .len(),
            3
        );
        // Nothing hidden is left beside it.
        let hidden = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count();
        assert_eq!(hidden, 0);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_output_is_refused_and_its_target_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let inputs = shard_dirs(tmp.path());
        let target = tmp.path().join("target");
        merge_dirs(&inputs, &target, false).unwrap();
        std::fs::write(target.join("notes.txt"), "mine").unwrap();
        // A folder holding an input is never replaced (the input would go with it),
        // even one that reads as a run folder.
        shard(0, 2, &[0], "t")
            .manifest
            .save(&RunManifest::path_in(tmp.path()))
            .unwrap();
        let err = merge_dirs(&inputs, tmp.path(), true).unwrap_err();
        assert!(matches!(err, MergeError::OutIsInput { .. }), "{err}");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = merge_dirs(&inputs, &link, true).unwrap_err();
        assert!(matches!(err, MergeError::OutIsSymlink { .. }), "{err}");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(target.join("notes.txt")).unwrap(), b"mine");
    }
}
