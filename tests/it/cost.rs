//! `run --max-cost`: a cost budget at the endpoints' prices stops a run like the
//! token budget (exit 3, resumable, earlier sessions count), and a run without a
//! price is refused before anything is asked.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use echo_workbench::config::Settings;
use echo_workbench::mllm::EndpointConfig;
use echo_workbench::mllm::mock::{MockConfig, MockServer};
use echo_workbench::runs::journal::{JOURNAL_FILE, JournalRecord, read_journal};
use echo_workbench::runs::manifest::RunManifest;

use crate::common::repo;

fn server() -> MockServer {
    MockServer::start(MockConfig {
        latency: Duration::from_millis(1),
        record_limit: 0,
        ..MockConfig::default()
    })
    .unwrap()
}

fn run(args: &[&str], out: &Path) -> Output {
    Command::new(assert_cmd::cargo::cargo_bin("echo-workbench"))
        .arg("run")
        .args(args)
        .arg("--out")
        .arg(out)
        .args(["--progress-every-s", "60"])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn on_sample<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--endpoint",
        url,
        "--model",
        "mock-vl",
        "--limit",
        "40",
        "--concurrency",
        "1",
    ];
    args.extend(extra);
    args
}

fn dataset_args() -> Vec<String> {
    vec![
        "--dataset".into(),
        repo("assets/sample/mmad.json").display().to_string(),
        "--knowledge".into(),
        repo("assets/sample/domain_knowledge.json")
            .display()
            .to_string(),
    ]
}

fn with_dataset<'a>(args: &'a [String], rest: Vec<&'a str>) -> Vec<&'a str> {
    args.iter().map(String::as_str).chain(rest).collect()
}

fn records(out: &Path) -> Vec<JournalRecord> {
    read_journal(&out.join(JOURNAL_FILE)).unwrap().records
}

fn tokens(records: &[JournalRecord]) -> u64 {
    records.iter().map(|r| r.usage.unwrap().total()).sum()
}

#[test]
fn a_cost_budget_stops_the_run_with_exit_3_and_a_larger_one_continues_it() {
    let server = server();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let data = dataset_args();

    // No price anywhere: refused before the folder is made.
    let refused = run(
        &with_dataset(&data, on_sample(&url, &["--max-cost", "0.002"])),
        &out,
    );
    assert!(!refused.status.success());
    assert_ne!(
        refused.status.code(),
        Some(3),
        "a refusal is not a spent budget"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("has no price"), "{stderr}");
    assert!(stderr.contains("--price-prompt"), "{stderr}");
    assert!(!out.join(JOURNAL_FILE).exists());

    // A million tokens at 1 each: 0.002 is 2,000 tokens.
    let priced = [
        "--price-prompt",
        "1",
        "--price-completion",
        "1",
        "--max-cost",
        "0.002",
    ];
    let first = run(&with_dataset(&data, on_sample(&url, &priced)), &out);
    assert_eq!(
        first.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("cost budget is spent"), "{stdout}");
    assert!(stdout.contains("--max-cost"), "{stdout}");
    let recorded = records(&out);
    assert!(
        !recorded.is_empty() && recorded.len() < 40,
        "{}",
        recorded.len()
    );
    let spent = tokens(&recorded);
    let most = recorded
        .iter()
        .map(|r| r.usage.unwrap().total())
        .max()
        .unwrap();
    assert!(spent >= 2000, "stops only once spent: {spent}");
    assert!(
        spent < 2000 + most,
        "one question in flight overshoots by one: {spent}"
    );
    let manifest = RunManifest::load(&RunManifest::path_in(&out)).unwrap();
    let price = manifest.endpoints[0].price.unwrap();
    assert_eq!(
        (price.prompt_per_million, price.completion_per_million),
        (1.0, 1.0)
    );

    // Resumed under the same budget: the earlier records' cost counts.
    let mut again = priced.to_vec();
    again.push("--resume");
    let second = run(&with_dataset(&data, on_sample(&url, &again)), &out);
    assert_eq!(second.status.code(), Some(3));
    assert_eq!(records(&out).len(), recorded.len());

    // A larger budget finishes it, each question once.
    let larger = [
        "--price-prompt",
        "1",
        "--price-completion",
        "1",
        "--max-cost",
        "100",
        "--resume",
    ];
    let last = run(&with_dataset(&data, on_sample(&url, &larger)), &out);
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    let all = records(&out);
    let seen: BTreeSet<usize> = all.iter().map(|r| r.index).collect();
    assert_eq!((all.len(), seen.len()), (40, 40));
    let cost_line = format!(
        "cost {:.4} for {} tokens",
        tokens(&all) as f64 / 1e6,
        tokens(&all)
    );
    let stdout = String::from_utf8_lossy(&last.stdout);
    assert!(stdout.contains(&cost_line), "{cost_line}: {stdout}");

    // After the run, `score --usage` costs it at the price its manifest records.
    let score = Command::new(assert_cmd::cargo::cargo_bin("echo-workbench"))
        .arg("score")
        .arg(&out)
        .args(["--usage", "--ci-resamples", "0", "--format", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&score.stdout).unwrap();
    let total = v["cost"]["total"].as_f64().unwrap();
    assert!((total - tokens(&all) as f64 / 1e6).abs() < 1e-12, "{total}");
    let prices = v["cost"]["prices"].as_object().unwrap();
    assert_eq!(prices.len(), 1, "{prices:?}");
    assert_eq!(prices.values().next().unwrap()["prompt_per_million"], 1.0);
}

#[test]
fn the_settings_price_of_the_endpoint_serves_a_cost_budget() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        knowledge: Some(repo("assets/sample/domain_knowledge.json")),
        ..Default::default()
    };
    settings.endpoints = vec![EndpointConfig {
        name: "priced box".into(),
        base_url: server.url(),
        model: "served-vl".into(),
        max_in_flight: 1,
        price_prompt_per_million: Some(1.0),
        price_completion_per_million: Some(1.0),
        ..Default::default()
    }];
    settings.pipeline.preset = "mmad".into();
    settings.save(&Settings::path_in(dir.path())).unwrap();
    let out = dir.path().join("run");
    let ws = dir.path().to_str().unwrap();
    let stopped = run(
        &["--workspace", ws, "--limit", "30", "--max-cost", "0.001"],
        &out,
    );
    assert_eq!(
        stopped.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert!(tokens(&records(&out)) >= 1000);
    let manifest = RunManifest::load(&RunManifest::path_in(&out)).unwrap();
    assert_eq!(manifest.endpoints[0].price.unwrap().prompt_per_million, 1.0);
}
