//! Builders the crate's unit tests share: a run's manifest, its journal records and
//! a run folder on disk, so that every module's tests read the same kind of run.

use std::path::Path;

use indexmap::IndexMap;

use crate::echo::PipelineSettings;
use crate::runs::journal::{
    AnswerQuestion, JOURNAL_FILE, JournalRecord, JournalWriter, RecordStatus,
};
use crate::runs::manifest::{DatasetRef, EndpointSummary, MANIFEST_FORMAT, RunManifest, Selection};

/// The manifest of a finished run of `question_count` questions.
pub(crate) fn manifest(question_count: usize) -> RunManifest {
    RunManifest {
        format: MANIFEST_FORMAT,
        tool_version: "0.1.0".into(),
        started_at: "2026-11-22T08:00:00Z".into(),
        finished_at: Some("2026-11-22T09:00:00Z".into()),
        dataset: DatasetRef {
            path: "assets/sample/mmad.json".into(),
            sha256: "ab".repeat(32),
            root: "assets/sample".into(),
        },
        selection: Selection::default(),
        shard: None,
        question_count,
        pipeline: PipelineSettings::default(),
        template: "retrieved".into(),
        memory: None,
        knowledge: None,
        condensed: None,
        prompt_templates_hash: "p1".into(),
        endpoints: vec![EndpointSummary {
            name: "local".into(),
            base_url: "http://127.0.0.1:8000/v1".into(),
            model: "qwen2-vl-7b".into(),
            api_key_env: None,
            concurrency: 4,
            price: None,
            model_sha256: None,
        }],
        image_affinity: false,
        note: "unit".into(),
        forced_from: Vec::new(),
        missing_inputs: None,
        placement: None,
        protocol: None,
    }
}

/// A record for question `index`: `given` is the stored answer, `None` an error.
pub(crate) fn record(
    index: usize,
    image: &str,
    qtype: &str,
    correct: &str,
    given: Option<&str>,
) -> JournalRecord {
    JournalRecord {
        image: image.into(),
        question: AnswerQuestion {
            kind: "text".into(),
            text: "Is there any defect in the object?".into(),
            options: IndexMap::from([("A".into(), "Yes.".into()), ("B".into(), "No.".into())]),
        },
        question_type: qtype.into(),
        correct_answer: correct.into(),
        gpt_answer: given.map(str::to_owned),
        index,
        turn: 0,
        status: if given.is_some() {
            RecordStatus::Ok
        } else {
            RecordStatus::Error
        },
        error: given.is_none().then(|| "HTTP 503 after 3 attempts".into()),
        raw: given.map(str::to_owned),
        correct: given.map(|g| g == correct),
        attempts: 1,
        latency_ms: 5,
        usage: None,
        samples: Vec::new(),
        rotations: Vec::new(),
        confidence: None,
        endpoint: "local".into(),
        finished_at: "2026-11-22T08:30:00Z".into(),
        traces: Vec::new(),
    }
}

/// A run folder at `dir` holding `m` and `records`, as the runner leaves one.
pub(crate) fn write_run(dir: &Path, m: &RunManifest, records: &[JournalRecord]) {
    std::fs::create_dir_all(dir).unwrap();
    m.save(&RunManifest::path_in(dir)).unwrap();
    let (mut w, _) = JournalWriter::open(&dir.join(JOURNAL_FILE)).unwrap();
    for r in records {
        w.append(r).unwrap();
    }
}
