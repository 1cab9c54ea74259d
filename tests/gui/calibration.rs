//! The Batch tab's calibration and usage view, on a run folder written here with
//! a confidence and tokens on every answer, and the New run form's cost estimate
//! and budget, which read that run's tokens per question. Widgets are found by
//! their labels.
#![cfg(feature = "gui")]

use std::path::{Path, PathBuf};

use echo_workbench::config::Settings;
use echo_workbench::echo::PipelineSettings;
use echo_workbench::mllm::{EndpointConfig, Price, Usage};
use echo_workbench::runs::catalog::runs_dir;
use echo_workbench::runs::journal::{
    AnswerQuestion, Confidence, JOURNAL_FILE, JournalRecord, JournalWriter, RecordStatus,
};
use echo_workbench::runs::manifest::{
    DatasetRef, EndpointSummary, MANIFEST_FORMAT, RunManifest, Selection,
};
use echo_workbench::ui::{Persisted, WorkbenchApp};
use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use indexmap::IndexMap;

use crate::common::repo;
use crate::drive::{harness, wait_for};

const MODEL: &str = "calibrated-vl";

/// Ten answers: five at confidence 0.9, all right; five at 0.3, one right. ECE is
/// 0.5 * |1.0 - 0.9| + 0.5 * |0.2 - 0.3| = 0.1. Each reports 1,000 prompt and 10
/// completion tokens.
fn records() -> Vec<JournalRecord> {
    (0..10)
        .map(|i| {
            let (confidence, right) = if i < 5 { (0.9, true) } else { (0.3, i == 5) };
            let given = if right { "A" } else { "B" };
            JournalRecord {
                image: format!("DS/cat/test/bad/{i}.png"),
                question: AnswerQuestion {
                    kind: "text".into(),
                    text: "Is there any defect in the object?".into(),
                    options: IndexMap::from([
                        ("A".into(), "Yes.".into()),
                        ("B".into(), "No.".into()),
                    ]),
                },
                question_type: "Anomaly Detection".into(),
                correct_answer: "A".into(),
                gpt_answer: Some(given.into()),
                index: i,
                turn: 0,
                status: RecordStatus::Ok,
                error: None,
                raw: Some(given.into()),
                correct: Some(right),
                attempts: 1,
                latency_ms: 100 * (i as u64 + 1),
                usage: Some(Usage {
                    prompt_tokens: 1_000,
                    completion_tokens: 10,
                }),
                samples: Vec::new(),
                rotations: Vec::new(),
                confidence: Some(Confidence {
                    agreement: Some(confidence),
                    letter_probs: None,
                }),
                endpoint: "priced".into(),
                finished_at: "2026-11-22T08:30:00Z".into(),
                traces: Vec::new(),
            }
        })
        .collect()
}

fn price() -> Price {
    Price {
        prompt_per_million: 2.0,
        completion_per_million: 10.0,
    }
}

fn write_run(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let manifest = RunManifest {
        format: MANIFEST_FORMAT,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        started_at: "2026-11-22T08:00:00Z".into(),
        finished_at: Some("2026-11-22T09:00:00Z".into()),
        dataset: DatasetRef {
            path: repo("assets/sample/mmad.json"),
            sha256: "ab".repeat(32),
            root: repo("assets/sample"),
        },
        selection: Selection::default(),
        shard: None,
        question_count: 10,
        pipeline: PipelineSettings::default(),
        template: "similar".into(),
        memory: None,
        knowledge: None,
        condensed: None,
        prompt_templates_hash: "p1".into(),
        endpoints: vec![EndpointSummary {
            name: "priced".into(),
            base_url: "http://127.0.0.1:9/v1".into(),
            model: MODEL.into(),
            api_key_env: None,
            concurrency: 2,
            price: Some(price()),
            model_sha256: None,
        }],
        image_affinity: false,
        note: "calibrated".into(),
        forced_from: Vec::new(),
        missing_inputs: None,
        placement: None,
        protocol: None,
    };
    manifest.save(&RunManifest::path_in(dir)).unwrap();
    let (mut w, _) = JournalWriter::open(&dir.join(JOURNAL_FILE)).unwrap();
    for r in records() {
        w.append(&r).unwrap();
    }
}

/// A workspace whose one endpoint serves `MODEL` at `price`, holding the run.
fn workspace(priced: bool) -> (tempfile::TempDir, PathBuf) {
    let ws = tempfile::tempdir().unwrap();
    let mut endpoint = EndpointConfig {
        name: "priced".into(),
        base_url: "http://127.0.0.1:9/v1".into(),
        model: MODEL.into(),
        max_in_flight: 2,
        ..EndpointConfig::default()
    };
    if priced {
        endpoint.set_price(Some(price()));
    }
    let settings = Settings {
        endpoints: vec![endpoint],
        knowledge: Some(repo("assets/sample/domain_knowledge.json")),
        ..Settings::default()
    };
    settings.save(&Settings::path_in(ws.path())).unwrap();
    let run = runs_dir(ws.path()).join("2026-11-22_080000_calibrated");
    write_run(&run);
    (ws, run)
}

fn app_harness(ws: &Path) -> Harness<'static, WorkbenchApp> {
    harness(WorkbenchApp::with_workspace(
        Persisted::default(),
        ws.to_path_buf(),
    ))
}

#[test]
fn the_calibration_view_shows_ece_and_the_slider_moves_answers_to_a_person() {
    let (ws, run) = workspace(true);
    let mut h = app_harness(ws.path());
    h.get_by_label("Batch").click();
    h.run_steps(2);
    h.state_mut().batch.open_run(run);
    wait_for(&mut h, "the run to open", |a| {
        a.batch
            .current
            .as_ref()
            .is_some_and(|c| c.shared.lock().records.len() == 10)
    });
    h.run_steps(2);
    h.get_by_label("Calibration and usage").click();
    wait_for(&mut h, "calibration to be computed", |a| {
        a.batch.calibration.last.is_some() && !a.batch.calibration.busy()
    });
    h.run_steps(2);
    h.get_by_label("ECE All: 10.0");
    h.get_by_label("Reliability diagram");
    h.get_by_label("Abstain curve");
    // At the default 0.5 the five answers at 0.3 go to a person.
    h.get_by_label("5 for a person · 5 kept (50.0% coverage) at 100.0% accuracy");
    h.get_by_role_and_label(egui::accesskit::Role::Slider, "Abstain below")
        .set_value_accesskit(0.0);
    h.run_steps(2);
    h.get_by_label("0 for a person · 10 kept (100.0% coverage) at 60.0% accuracy");
    assert_eq!(h.state().batch.calibration.threshold, 0.0);
    h.get_by_role_and_label(egui::accesskit::Role::Slider, "Abstain below")
        .set_value_accesskit(0.95);
    h.run_steps(2);
    h.get_by_label("10 for a person · 0 kept (0.0% coverage) at -% accuracy");

    // Usage: 10 x (1,000 x 2 + 10 x 10) / 1e6 = 0.021 at the manifest's price.
    h.get_by_label("cost All: 0.0210");

    // Letter probabilities are asked for, and this run has none: it says so.
    h.get_by_label("probs").click();
    wait_for(&mut h, "the probs calibration", |a| {
        a.batch
            .calibration
            .last
            .as_ref()
            .is_some_and(|c| c.calibration.is_none())
    });
    h.run_steps(2);
    h.get_by_label_contains("this run records no confidence");
}

#[test]
fn the_new_run_form_estimates_cost_from_the_earlier_run_and_checks_the_budget() {
    let (ws, _run) = workspace(true);
    let mut h = app_harness(ws.path());
    h.get_by_label("Batch").click();
    h.run_steps(2);
    wait_for(&mut h, "the runs list", |a| a.batch.runs.len() == 1);
    h.get_by_label("Limit").focus();
    h.get_by_label("Limit").type_text("20");
    h.run_steps(3);
    // 20 questions x 1,010 tokens, at 2 and 10 per million: 20 x 0.0021.
    h.get_by_label_contains(
        "Estimated tokens: 20200 (1000 prompt + 10 completion per question, as in run 2026-11-22_080000_calibrated); cost about 0.0420",
    );
    h.get_by_label("Stop at cost").focus();
    h.get_by_label("Stop at cost").type_text("ten");
    h.run_steps(3);
    h.get_by_label_contains("is not an amount");
    assert!(h.get_by_label("Start run").accesskit_node().is_disabled());

    // Without a price the estimate gives tokens only, and a budget is refused.
    let (ws, _run) = workspace(false);
    let mut h = app_harness(ws.path());
    h.get_by_label("Batch").click();
    h.run_steps(2);
    wait_for(&mut h, "the runs list", |a| a.batch.runs.len() == 1);
    h.run_steps(3);
    h.get_by_label_contains("cost no cost: set the endpoint's price in Settings");
    h.get_by_label("Stop at cost").focus();
    h.get_by_label("Stop at cost").type_text("1");
    h.run_steps(3);
    h.get_by_label_contains("A cost budget needs every chosen endpoint's price");
    assert!(h.get_by_label("Start run").accesskit_node().is_disabled());
}

#[test]
fn an_endpoint_price_is_edited_in_settings_and_saved() {
    let (ws, _run) = workspace(false);
    let mut h = harness(WorkbenchApp::with_workspace(
        Persisted {
            tab: echo_workbench::ui::Tab::Settings,
            ..Persisted::default()
        },
        ws.path().to_path_buf(),
    ));
    h.run_steps(2);
    h.get_by_label("no cost is shown for runs on it");
    h.get_by_label("Priced").click();
    h.run_steps(2);
    h.get_by_label("prompt per 1M").set_value_accesskit(2.5);
    h.get_by_label("completion per 1M")
        .set_value_accesskit(10.0);
    h.run_steps(2);
    h.get_by_label("Save").click();
    wait_for(&mut h, "the save", |a| {
        !a.saving_settings() && a.settings.endpoints[0].price().is_some()
    });
    let saved = Settings::load(&Settings::path_in(ws.path())).unwrap();
    let price = saved.endpoints[0].price().unwrap();
    assert_eq!(
        (price.prompt_per_million, price.completion_per_million),
        (2.5, 10.0)
    );
}
