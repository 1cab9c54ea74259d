//! Measuring a knowledge edit on an earlier run: only the questions whose prompts
//! read the edited category are asked again, under the earlier run's settings with
//! the edited file, and the accuracy change per subtask is what the model did
//! differently. The mock model here answers from the key only when the prompt carries
//! a word the edit adds, so the effect of the edit is known in advance.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use echo_workbench::curate::impact::impact;
use echo_workbench::dataset::{DatasetRoot, MmadDataset};
use echo_workbench::echo::PipelineContext;
use echo_workbench::echo::PipelineSettings;
use echo_workbench::echo::plan::KnowledgeMode;
use echo_workbench::knowledge::KnowledgeBase;
use echo_workbench::mllm::EndpointConfig;
use echo_workbench::mllm::mock::{MockConfig, MockServer, Oracle, Responder};
use echo_workbench::runs::rerun::{EditedCategory, RerunError, measure_effect, plan_rerun};
use echo_workbench::runs::run_folder::RunFolder;
use echo_workbench::runs::runner::{RunControl, RunOutcome, RunSpec, run};
use echo_workbench::score::{AVERAGE, ScoreOptions};

use crate::common::sample_dir;

/// The word the curator's edit adds to the washer knowledge.
const MARKER: &str = "concentric-burr";

/// A model that knows the answers only when the prompt mentions [`MARKER`], and
/// otherwise picks the first option.
fn marker_server() -> MockServer {
    let sample = sample_dir();
    let dataset = MmadDataset::load(&sample.join("mmad.json")).unwrap();
    let root = DatasetRoot::new(&sample);
    let oracle = Responder::oracle(Oracle::from_mmad(&dataset, Some(&root)));
    MockServer::start(MockConfig {
        responder: Responder::only_when(MARKER, oracle),
        ..MockConfig::default()
    })
    .unwrap()
}

fn endpoint(server: &MockServer) -> EndpointConfig {
    EndpointConfig {
        name: "mock".into(),
        base_url: server.url(),
        model: "mock-vl".into(),
        max_in_flight: 4,
        retry_base_ms: 1,
        ..EndpointConfig::default()
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    dataset: PathBuf,
    knowledge: PathBuf,
    baseline: PathBuf,
    server: MockServer,
}

/// A baseline run of the whole sample under Echo's table with `mode`, its dataset
/// and knowledge copied into a scratch folder so the test may change them.
fn baseline(mode: KnowledgeMode) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let sample = sample_dir();
    let dataset = tmp.path().join("mmad.json");
    std::fs::copy(sample.join("mmad.json"), &dataset).unwrap();
    let knowledge = tmp.path().join("domain_knowledge.json");
    std::fs::copy(sample.join("domain_knowledge.json"), &knowledge).unwrap();
    let server = marker_server();
    let out = tmp.path().join("runs/baseline");
    let mut spec = RunSpec::new(&dataset, &sample, vec![endpoint(&server)], &out);
    spec.pipeline = PipelineSettings {
        preset: "echo".into(),
        knowledge_mode: Some(mode),
        ..PipelineSettings::default()
    };
    spec.knowledge = Some(knowledge.clone());
    let summary = run(
        &spec,
        &|_| {},
        &RunControl::new(),
        tokio::runtime::Runtime::new().unwrap().handle(),
    )
    .unwrap();
    assert_eq!(summary.outcome, RunOutcome::Finished);
    Setup {
        _tmp: tmp,
        dataset,
        knowledge,
        baseline: out,
        server,
    }
}

/// The curator's edit: every washer entry mentions the marker.
fn edit_washer(path: &Path) -> KnowledgeBase {
    let mut kb = KnowledgeBase::load(path).unwrap();
    for text in kb.datasets["Sample"]["washer"].values_mut() {
        text.push_str(&format!(" Look for a {MARKER} at the rim."));
    }
    kb.save(path).unwrap();
    KnowledgeBase::load(path).unwrap()
}

#[test]
fn a_rerun_asks_only_the_reached_questions_and_measures_the_edit() {
    let s = baseline(KnowledgeMode::Category);
    let before = RunFolder::open(&s.baseline).unwrap();
    // Unedited, the knowledge is the version the run read: the plan says so.
    let unedited = KnowledgeBase::load(&s.knowledge).unwrap();
    let same = EditedCategory {
        knowledge: &unedited,
        knowledge_path: &s.knowledge,
        dataset: "Sample",
        category: "washer",
    };
    let plan = plan_rerun(&before, same, &[], s.baseline.with_file_name("x")).unwrap();
    assert!(plan.same_knowledge(&unedited) && !plan.reads_other_file);
    let kb = edit_washer(&s.knowledge);
    let edited = EditedCategory {
        knowledge: &kb,
        knowledge_path: &s.knowledge,
        dataset: "Sample",
        category: "washer",
    };
    let out = s.baseline.with_file_name("rerun");
    let plan = plan_rerun(&before, edited, &[], out.clone()).unwrap();
    assert!(!plan.same_knowledge(&kb) && !plan.reads_other_file);

    // Exactly the washer questions of the types whose prompts carry knowledge: the
    // same count the Knowledge tab's impact table shows for this category.
    let settings = before.manifest.pipeline.clone();
    let ctx = PipelineContext::new(settings.clone()).unwrap();
    let dataset = MmadDataset::load(&s.dataset).unwrap();
    let reach = impact(&ctx, &dataset, &kb, "Sample", "washer", None);
    assert_eq!(plan.indices.len(), reach.with_category());
    assert!(!plan.indices.is_empty());
    let reached_types: BTreeSet<&str> = reach
        .per_type
        .iter()
        .filter(|t| t.with_category > 0)
        .map(|t| t.qtype.as_str())
        .collect();
    let expected: Vec<usize> = dataset
        .questions()
        .filter(|q| q.key.starts_with("Sample/washer/"))
        .filter(|q| reached_types.contains(q.question.qtype.as_str()))
        .map(|q| q.index)
        .collect();
    assert_eq!(plan.indices, expected);
    assert_eq!(plan.per_type.values().sum::<usize>(), expected.len());
    assert_eq!(plan.unreached, reach.questions() - reach.with_category());
    assert!(
        plan.unreached > 0,
        "Anomaly Detection reads no knowledge in Echo's table"
    );

    let spec = plan.spec.clone().unwrap();
    // The endpoint comes back from the manifest when the settings no longer have it.
    assert_eq!(spec.endpoints[0].base_url, s.server.url());
    let asked_before = s.server.chat_count();
    let summary = run(
        &spec,
        &|_| {},
        &RunControl::new(),
        tokio::runtime::Runtime::new().unwrap().handle(),
    )
    .unwrap();
    assert_eq!(summary.outcome, RunOutcome::Finished);
    assert_eq!(s.server.chat_count() - asked_before, expected.len());

    let after = RunFolder::open(&out).unwrap();
    let asked: Vec<usize> = after
        .records()
        .iter()
        .map(|r| r.index)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(asked, expected);
    // Same settings, other knowledge version.
    assert_eq!(after.manifest.pipeline, before.manifest.pipeline);
    assert_eq!(after.manifest.template, before.manifest.template);
    assert_ne!(
        after.manifest.knowledge.as_ref().unwrap().version,
        before.manifest.knowledge.as_ref().unwrap().version
    );
    assert!(after.manifest.note.contains("washer"));

    let effect = measure_effect(&before, &after, ScoreOptions::default());
    assert_eq!(effect.unanswered, 0);
    assert_eq!(effect.comparison.common, expected.len());
    // With the marker in every reached prompt the model answers from the key.
    for change in &effect.subtasks {
        assert_eq!(change.after, Some(100.0), "{change:?}");
    }
    let overall = effect
        .subtasks
        .iter()
        .find(|c| c.subtask == AVERAGE)
        .unwrap();
    assert_eq!(overall.questions, expected.len());
    // Before, the first option was right only sometimes; the difference is the edit's.
    let right_before = before
        .records()
        .iter()
        .filter(|r| expected.contains(&r.index) && r.correct == Some(true))
        .count();
    assert!(right_before < expected.len());
    assert_eq!(effect.comparison.better, expected.len() - right_before);
    assert_eq!(effect.comparison.worse, 0);
    let per_type_total: usize = effect
        .subtasks
        .iter()
        .filter(|c| c.subtask != AVERAGE)
        .map(|c| c.questions)
        .sum();
    assert_eq!(per_type_total, expected.len());
}

#[test]
fn a_condensed_run_has_nothing_to_rerun_and_a_changed_dataset_is_refused() {
    let s = baseline(KnowledgeMode::Condensed);
    let kb = edit_washer(&s.knowledge);
    let edited = EditedCategory {
        knowledge: &kb,
        knowledge_path: &s.knowledge,
        dataset: "Sample",
        category: "washer",
    };
    let before = RunFolder::open(&s.baseline).unwrap();
    let out = s.baseline.with_file_name("rerun");
    let plan = plan_rerun(&before, edited, &[], out.clone()).unwrap();
    assert!(plan.indices.is_empty() && plan.spec.is_none());
    let washer = before
        .records()
        .iter()
        .filter(|r| r.image.starts_with("Sample/washer/"))
        .count();
    assert_eq!(plan.unreached, washer);

    // Another category of the same run is not touched by a washer edit.
    let chip = plan_rerun(
        &before,
        EditedCategory {
            category: "chip",
            ..edited
        },
        &[],
        out.clone(),
    )
    .unwrap();
    assert!(chip.indices.is_empty());

    // The dataset file changed since the baseline: answers could not be matched.
    let mut text = std::fs::read_to_string(&s.dataset).unwrap();
    text.push('\n');
    std::fs::write(&s.dataset, text).unwrap();
    let e = plan_rerun(&before, edited, &[], out).unwrap_err();
    assert!(matches!(e, RerunError::DatasetChanged { .. }), "{e}");
    assert!(
        e.to_string().contains("changed since run `baseline`"),
        "{e}"
    );
}
