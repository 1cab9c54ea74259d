//! The New run form's protocol controls and the drill-down's protocol replies,
//! driven through egui_kittest against the mock server's oracle.
#![cfg(feature = "gui")]

use std::time::Duration;

use echo_workbench::config::Settings;
use echo_workbench::dataset::{DatasetRoot, MmadDataset};
use echo_workbench::mllm::EndpointConfig;
use echo_workbench::mllm::mock::{MockConfig, MockServer, Oracle, Responder};
use echo_workbench::runs::journal::{JOURNAL_FILE, read_journal};
use echo_workbench::runs::run_folder::RunFolder;
use echo_workbench::ui::{Persisted, RunPhase, WorkbenchApp};
use egui_kittest::kittest::{NodeT, Queryable};

use crate::common::repo;
use crate::drive::{harness, wait_for_secs as wait_for};

#[test]
fn the_form_starts_a_circular_run_with_logprobs_and_the_drill_down_shows_its_rotations() {
    let dataset = MmadDataset::load(&repo("assets/sample/mmad.json")).unwrap();
    let root = DatasetRoot::new(repo("assets/sample"));
    let server = MockServer::start(MockConfig {
        latency: Duration::from_millis(1),
        responder: Responder::oracle(Oracle::from_mmad(&dataset, Some(&root))),
        record_limit: 0,
        ..MockConfig::default()
    })
    .unwrap();
    let ws = tempfile::tempdir().unwrap();
    Settings {
        endpoints: vec![EndpointConfig {
            name: "mock".into(),
            base_url: server.url(),
            model: "mock-vl".into(),
            max_in_flight: 4,
            retry_base_ms: 10,
            ..EndpointConfig::default()
        }],
        knowledge: Some(repo("assets/sample/domain_knowledge.json")),
        ..Settings::default()
    }
    .save(&Settings::path_in(ws.path()))
    .unwrap();
    let mut h = harness(WorkbenchApp::with_workspace(
        Persisted::default(),
        ws.path().to_path_buf(),
    ));
    h.get_by_label("Batch").click();
    h.run_steps(2);
    wait_for(&mut h, "the dataset in the form", 20, |a| {
        a.batch.form.facts.is_some()
    });
    h.state_mut().batch.form.limit_text = "6".into();
    h.run_steps(2);

    // Samples without a temperature are refused before Start, naming what to set.
    h.state_mut().batch.form.protocol.samples = 3;
    h.run_steps(2);
    h.get_by_label_contains("needs --temperature above 0");
    assert!(h.get_by_label("Start run").accesskit_node().is_disabled());
    h.state_mut().batch.form.protocol.samples = 1;

    h.get_by_label("circular").click();
    h.get_by_label("letter probabilities (logprobs)").click();
    h.run_steps(2);
    wait_for(&mut h, "the input check", 20, |a| {
        a.batch.form.inputs_checked()
    });
    assert!(!h.get_by_label("Start run").accesskit_node().is_disabled());
    h.get_by_label("Start run").click();
    h.run_steps(1);
    wait_for(&mut h, "the run to finish", 60, |a| {
        !a.batch.run_active()
            && a.batch.current.as_ref().is_some_and(|c| {
                let m = c.shared.lock();
                m.phase == RunPhase::Finished && m.scored_records == m.records.len()
            })
    });
    // The grid settles a frame after the last re-score (see batch.rs).
    h.run_steps(3);
    let dir = h
        .state()
        .batch
        .current
        .as_ref()
        .unwrap()
        .shared
        .lock()
        .dir
        .clone();
    let manifest = RunFolder::open(&dir).unwrap().manifest;
    let protocol = manifest.protocol.expect("the form's protocol is recorded");
    assert!(protocol.circular && protocol.logprobs);
    let records = read_journal(&dir.join(JOURNAL_FILE)).unwrap().records;
    assert_eq!(records.len(), 6);
    assert!(
        records
            .iter()
            .all(|r| r.rotations.len() == r.question.options.len())
    );

    // Down to one question: its rotations, each reply and letter, and confidence.
    h.get_by_label_contains("Sample / Anomaly Detection:")
        .click();
    h.run_steps(2);
    // A few frames for the list's rows to settle before a click lands on one.
    h.run_steps(5);
    h.get_all_by_label_contains("Open #")
        .next()
        .unwrap()
        .click();
    wait_for(&mut h, "the record", 20, |a| {
        a.batch
            .drill
            .open
            .as_ref()
            .is_some_and(|o| o.full.is_some())
    });
    let full = h
        .state()
        .batch
        .drill
        .open
        .as_ref()
        .unwrap()
        .full
        .clone()
        .unwrap()
        .unwrap();
    let n = full.rotations.len();
    h.get_by_label(&format!("Rotations ({n})"));
    h.get_by_label_contains(&format!("agreement 100% ({n} of {n})"));
    h.get_by_label_contains("letter probabilities: ");
    for rot in &full.rotations {
        h.get_by_label(&format!("order {}", rot.order));
        h.get_by_label(&format!(
            "shown {}, original {}",
            rot.letter.as_deref().unwrap(),
            full.correct_answer
        ));
    }
    assert_eq!(h.query_all_by_label("wrong").count(), 0);
}
