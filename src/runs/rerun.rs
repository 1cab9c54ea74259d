//! Measuring a knowledge edit: ask again, as a new run, only the questions of an
//! earlier run whose prompts read the edited category, then set the two runs'
//! accuracy side by side per subtask on exactly those questions.
//!
//! Everything but the knowledge file stays as the earlier run had it (its manifest's
//! pipeline settings, reference source, models), so a change in the answers is the
//! edit's doing and not a settings drift.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use super::compare::{Comparison, compare, latest_by_index};
use super::journal::JournalRecord;
use super::manifest::{KnowledgeRef, ManifestError, Selection};
use super::run_folder::{RunFolder, RunFolderError};
use super::runner::{RunError, RunSpec};
use crate::curate::impact::prompt_reads_category;
use crate::dataset::QuestionType;
use crate::echo::PipelineContext;
use crate::echo::error::PipelineError;
use crate::knowledge::KnowledgeBase;
use crate::mllm::EndpointConfig;
use crate::score::{AVERAGE, ScoreOptions, merged_question_type};

#[derive(Debug, thiserror::Error)]
pub enum RerunError {
    #[error(transparent)]
    Folder(#[from] RunFolderError),
    #[error("cannot read the dataset file {} of run `{run}`: {source}", path.display())]
    DatasetRead {
        run: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the dataset file {} changed since run `{run}` was made, so its answers cannot be matched question by question",
        path.display()
    )]
    DatasetChanged { run: String, path: PathBuf },
    #[error("run `{run}`: its pipeline settings no longer load: {source}")]
    Pipeline {
        run: String,
        #[source]
        source: Box<PipelineError>,
    },
    #[error(transparent)]
    Spec(Box<RunError>),
    #[error("run `{run}`: {source}")]
    Manifest {
        run: String,
        #[source]
        source: ManifestError,
    },
}

/// The category whose knowledge was edited, and the file holding the edit.
#[derive(Debug, Clone, Copy)]
pub struct EditedCategory<'a> {
    pub knowledge: &'a KnowledgeBase,
    /// The saved file the re-run reads (unsaved edits cannot be measured).
    pub knowledge_path: &'a Path,
    /// The knowledge file's dataset key (`MVTec`, `VisA`, ...).
    pub dataset: &'a str,
    pub category: &'a str,
}

/// What a re-run would ask, worked out before anything is sent.
#[derive(Debug, Clone)]
pub struct RerunPlan {
    pub baseline: PathBuf,
    pub baseline_name: String,
    /// Dataset positions of the baseline's answered questions that the edit
    /// reaches, ascending.
    pub indices: Vec<usize>,
    /// Those questions per type, in the order the baseline first meets the type.
    pub per_type: IndexMap<String, usize>,
    /// Answered questions of the baseline about the category whose prompts do not
    /// read the file (types whose plan skips the Knowledge Guide, `condensed` mode).
    pub unreached: usize,
    /// Questions of the category the baseline holds only as errors (nothing to
    /// compare against, so not asked again).
    pub errors_left_out: usize,
    /// The run to start; `None` when no question is reached.
    pub spec: Option<RunSpec>,
    /// The knowledge the baseline read (its file and content hash).
    pub baseline_knowledge: Option<KnowledgeRef>,
    /// The baseline read another file than the edited one.
    pub reads_other_file: bool,
}

impl RerunPlan {
    /// The edited knowledge has the very content the baseline read: a re-run would
    /// measure only how much the model's answers vary.
    pub fn same_knowledge(&self, edited: &KnowledgeBase) -> bool {
        self.baseline_knowledge
            .as_ref()
            .is_some_and(|k| k.version == edited.content_hash())
    }
}

/// Works out which of the baseline's questions the edit reaches and the spec that
/// asks exactly those again into `out`, with the baseline's settings and the edited
/// knowledge file. `configured` are the endpoints of the settings (matched to the
/// baseline's by name, see [`RunSpec::from_manifest`]).
pub fn plan_rerun(
    baseline: &RunFolder,
    edited: EditedCategory<'_>,
    configured: &[EndpointConfig],
    out: PathBuf,
) -> Result<RerunPlan, RerunError> {
    let m = &baseline.manifest;
    let run = baseline.name();
    // Before the dataset file it names is even hashed.
    m.check_paths().map_err(|source| RerunError::Manifest {
        run: run.clone(),
        source,
    })?;
    let sha = crate::util::fsx::sha256_file(&m.dataset.path).map_err(|source| {
        RerunError::DatasetRead {
            run: run.clone(),
            path: m.dataset.path.clone(),
            source,
        }
    })?;
    if sha != m.dataset.sha256 {
        return Err(RerunError::DatasetChanged {
            run,
            path: m.dataset.path.clone(),
        });
    }
    let ctx = PipelineContext::new(m.pipeline.clone()).map_err(|source| RerunError::Pipeline {
        run: run.clone(),
        source: Box::new(source),
    })?;
    let latest = latest_by_index(baseline.records());
    let answered: HashSet<usize> = latest
        .values()
        .filter(|r| r.is_ok())
        .map(|r| r.index)
        .collect();
    let mut plan = RerunPlan {
        baseline: baseline.dir.clone(),
        baseline_name: run,
        indices: Vec::new(),
        per_type: IndexMap::new(),
        unreached: 0,
        errors_left_out: 0,
        spec: None,
        baseline_knowledge: m.knowledge.clone(),
        reads_other_file: m.knowledge.as_ref().is_some_and(|k| {
            let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            real(&k.path) != real(edited.knowledge_path)
        }),
    };
    for r in latest.values() {
        if crate::dataset::category_of(&r.image) != edited.category {
            continue;
        }
        let reached = prompt_reads_category(
            &ctx,
            edited.knowledge,
            edited.dataset,
            edited.category,
            &r.image,
            &QuestionType::parse(&r.question_type),
        );
        match (reached, answered.contains(&r.index)) {
            (true, true) => {
                plan.indices.push(r.index);
                *plan.per_type.entry(r.question_type.clone()).or_default() += 1;
            }
            (true, false) => plan.errors_left_out += 1,
            (false, true) => plan.unreached += 1,
            (false, false) => {}
        }
    }
    if plan.indices.is_empty() {
        return Ok(plan);
    }
    let mut spec =
        RunSpec::from_manifest(m, configured, out).map_err(|e| RerunError::Spec(Box::new(e)))?;
    spec.selection = Selection {
        indices: plan.indices.clone(),
        limit: None,
        ..m.selection.clone()
    };
    // The indices come from this shard's journal already.
    spec.shard = None;
    spec.knowledge = Some(edited.knowledge_path.to_path_buf());
    spec.note = format!(
        "re-run of {} for knowledge {}/{}",
        plan.baseline_name, edited.dataset, edited.category
    );
    plan.spec = Some(spec);
    Ok(plan)
}

/// One subtask's accuracy before and after, over the questions both runs answered.
#[derive(Debug, Clone, PartialEq)]
pub struct SubtaskChange {
    pub subtask: String,
    /// Questions of this subtask in the comparison.
    pub questions: usize,
    /// Accuracy in percent, as the score table has it.
    pub before: Option<f64>,
    pub after: Option<f64>,
}

impl SubtaskChange {
    pub fn delta(&self) -> Option<f64> {
        Some(self.after? - self.before?)
    }
}

/// The effect of the edit, measured.
#[derive(Debug, Clone)]
pub struct RerunEffect {
    /// Per subtask (MMAD's column order), then the overall average.
    pub subtasks: Vec<SubtaskChange>,
    /// The question-by-question comparison (baseline as A, re-run as B).
    pub comparison: Comparison,
    /// Questions of the re-run still without an answer (stopped early, errors).
    pub unanswered: usize,
}

/// Scores the baseline and the re-run on the questions both answered.
pub fn measure_effect(
    baseline: &RunFolder,
    rerun: &RunFolder,
    options: ScoreOptions,
) -> RerunEffect {
    let rerun_latest = latest_by_index(rerun.records());
    let answered_after: HashSet<usize> = rerun_latest
        .values()
        .filter(|r| r.is_ok())
        .map(|r| r.index)
        .collect();
    let unanswered = rerun
        .manifest
        .question_count
        .saturating_sub(answered_after.len());
    let both = |records: &[JournalRecord]| -> Vec<JournalRecord> {
        latest_by_index(records)
            .into_values()
            .filter(|r| r.is_ok() && answered_after.contains(&r.index))
            .cloned()
            .collect()
    };
    let a = both(baseline.records());
    let common: HashSet<usize> = a.iter().map(|r| r.index).collect();
    let b: Vec<JournalRecord> = both(rerun.records())
        .into_iter()
        .filter(|r| common.contains(&r.index))
        .collect();
    let comparison = compare(&a, &b, options);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &b {
        *counts
            .entry(merged_question_type(&r.question_type))
            .or_default() += 1;
    }
    let table = &comparison.table;
    let subtasks = match table.rows.iter().position(|r| r == AVERAGE) {
        Some(row) => table
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| *c == AVERAGE || counts.contains_key(c.as_str()))
            .map(|(col, name)| SubtaskChange {
                subtask: name.clone(),
                questions: if name == AVERAGE {
                    b.len()
                } else {
                    counts[name.as_str()]
                },
                before: table.a[row][col],
                after: table.b[row][col],
            })
            .collect(),
        None => Vec::new(),
    };
    RerunEffect {
        subtasks,
        comparison,
        unanswered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::test_support::{manifest, record, write_run};

    const AD: &str = "Anomaly Detection";

    #[test]
    fn a_run_whose_records_name_images_outside_the_root_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for (i, image) in [
            "../../etc/passwd",
            "Sample/washer/../../../../etc/passwd",
            "/etc/passwd",
            "Sample/washer/a\0.png",
        ]
        .into_iter()
        .enumerate()
        {
            let dir = tmp.path().join(format!("run{i}"));
            let records = [
                record(0, "Sample/washer/test/good/000.png", AD, "B", Some("B")),
                record(1, image, AD, "A", Some("A")),
            ];
            write_run(&dir, &manifest(2), &records);
            let err = RunFolder::open(&dir).unwrap_err();
            assert!(
                matches!(err, RunFolderError::BadImage { index: 1, .. }),
                "{err}"
            );
            let text = err.to_string();
            assert!(
                text.contains("journal.jsonl: the record of question 1: path `"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_manifest_naming_files_by_escaping_paths_is_refused_before_any_is_read() {
        let kb = KnowledgeBase::default();
        let edited = EditedCategory {
            knowledge: &kb,
            knowledge_path: Path::new("k.json"),
            dataset: "Sample",
            category: "washer",
        };
        let mut m = manifest(1);
        m.dataset.path = "/data/mmad/../../etc/passwd".into();
        m.dataset.root = "/data/mmad".into();
        let run = RunFolder::from_parts("baseline".into(), m.clone(), Vec::new());
        let err = plan_rerun(&run, edited, &[], "out".into()).unwrap_err();
        assert!(matches!(err, RerunError::Manifest { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("run `baseline`: the run manifest names the dataset file /data/mmad/../../etc/passwd"),
            "{err}"
        );
        // A relative path would be read against whatever folder the app runs in.
        m.dataset.path = "/data/mmad/mmad.json".into();
        m.knowledge = Some(KnowledgeRef {
            path: "k.json".into(),
            version: "v".into(),
        });
        let err = RunSpec::from_manifest(&m, &[], "out").unwrap_err();
        assert!(err.to_string().contains("knowledge file k.json"), "{err}");
    }
}
