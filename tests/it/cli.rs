//! Drives the `echo-workbench` binary the way a user or a script does.

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

use crate::common::{bin, repo};

fn json_out(cmd: &mut Command) -> Value {
    let out = cmd.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).expect("stdout is JSON")
}

fn cell(v: &Value, row: &str, col: &str) -> f64 {
    v["table"][row][col]
        .as_f64()
        .unwrap_or_else(|| panic!("no cell {row}/{col} in {v}"))
}

#[test]
fn score_json_reproduces_mmad_in_both_modes() {
    let file = repo("tests/fixtures/facts_answers.json");
    let compat = json_out(bin().args(["score"]).arg(&file).args([
        "--mmad-compat",
        "--overkill-miss",
        "--format",
        "json",
    ]));
    assert_eq!(
        compat["columns"],
        serde_json::json!([
            "Anomaly Detection",
            "Defect Classification",
            "Defect Localization",
            "Object Analysis",
            "Object Classification",
            "Average",
            "Overkill",
            "Miss"
        ])
    );
    assert_eq!(
        compat["index"],
        serde_json::json!(["DS-MVTec", "VisA", "Average"])
    );
    let expect = [
        ("DS-MVTec", [75.0, 100.0, 0.0, 50.0, 0.0, 45.0, 50.0, 0.0]),
        ("VisA", [50.0, 100.0, 0.0, 100.0, 100.0, 70.0, 0.0, 100.0]),
        ("Average", [62.5, 100.0, 0.0, 75.0, 50.0, 57.5, 25.0, 50.0]),
    ];
    let cols: Vec<String> = serde_json::from_value(compat["columns"].clone()).unwrap();
    for (row, values) in expect {
        for (col, want) in cols.iter().zip(values) {
            assert!((cell(&compat, row, col) - want).abs() < 1e-9, "{row}/{col}");
        }
    }
    assert_eq!(
        (compat["invalid"].as_u64(), compat["skipped"].as_u64()),
        (Some(1), Some(1))
    );

    let default = json_out(bin().arg("score").arg(&file).args(["--format", "json"]));
    assert_eq!(cell(&default, "DS-MVTec", "Defect Classification"), 50.0);
    assert_eq!(cell(&default, "DS-MVTec", "Average"), 35.0);
    assert_eq!(
        (default["invalid"].as_u64(), default["skipped"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(default["table"]["DS-MVTec"].get("Overkill").is_none());
}

#[test]
fn score_csv_has_mmad_layout() {
    let file = repo("tests/fixtures/facts_answers.json");
    bin()
        .arg("score")
        .arg(&file)
        .args(["--mmad-compat", "--format", "csv"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with(
            ",Anomaly Detection,Defect Classification,Defect Localization,Object Analysis,Object Classification,Average\nDS-MVTec,75.0,100.0,0.0,50.0,0.0,45.0\n",
        ))
        .stdout(predicate::str::contains("\nAverage,62.5,100.0,0.0,75.0,50.0,57.5\n"));
}

#[test]
fn score_reads_a_journal_and_reports_errors_and_torn_line() {
    let file = repo("tests/fixtures/facts_journal.jsonl");
    let out = bin()
        .arg("score")
        .arg(&file)
        .args(["--format", "json"])
        .assert()
        .success();
    let output = out.get_output();
    let v: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(cell(&v, "DS-MVTec", "Defect Classification"), 50.0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("1 question(s) ended in an error"),
        "{stderr}"
    );
    assert!(stderr.contains("torn"), "{stderr}");
}

#[test]
fn score_table_is_readable_and_bad_files_fail_clearly() {
    let file = repo("tests/fixtures/facts_answers.json");
    bin()
        .arg("score")
        .arg(&file)
        .assert()
        .success()
        .stdout(predicate::str::contains("Anomaly Detection"))
        .stdout(predicate::str::contains("75.0"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "[{\"image\": \"a/b.png\", \"question_type\": ").unwrap();
    bin()
        .arg("score")
        .arg(&bad)
        .assert()
        .failure()
        .stderr(predicate::str::contains("bad.json"))
        .stderr(predicate::str::contains("line 1"));
    bin()
        .arg("score")
        .arg(dir.path().join("missing.json"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("missing.json"));
}

/// An error names its cause once: `cannot read X: No such file`, not the cause
/// repeated after itself.
#[test]
fn errors_name_their_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let out = bin()
        .arg("score")
        .arg(&missing)
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("missing.json"), "{text}");
    let cause = std::io::Error::from(std::io::ErrorKind::NotFound).to_string();
    let os = "(os error 2)";
    assert_eq!(text.matches(os).count(), 1, "{text}");
    assert!(text.matches(&cause).count() <= 1, "{text}");
    let out = bin()
        .args(["knowledge", "validate"])
        .arg(dir.path())
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let text = String::from_utf8_lossy(&out);
    // A folder is refused before it is opened, so the cause is ours, not the OS's.
    assert_eq!(text.matches("is a folder").count(), 1, "{text}");
    let folder = dir.path().display().to_string();
    assert_eq!(text.matches(folder.as_str()).count(), 1, "{text}");
}

#[test]
fn dataset_stats_on_the_sample() {
    let v = json_out(
        bin()
            .args(["dataset", "stats"])
            .arg(repo("assets/sample/mmad.json"))
            .arg("--root")
            .arg(repo("assets/sample"))
            .args(["--format", "json"]),
    );
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "images",
            "questions",
            "by_dataset",
            "normal_images",
            "abnormal_images",
            "missing"
        ]
    );
    let mmad: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(repo("assets/sample/mmad.json")).unwrap())
            .unwrap();
    let questions: usize = mmad
        .values()
        .map(|e| e["conversation"].as_array().unwrap().len())
        .sum();
    assert_eq!(v["images"].as_u64(), Some(mmad.len() as u64));
    assert_eq!(v["questions"].as_u64(), Some(questions as u64));
    let normal = mmad.keys().filter(|k| k.contains("good")).count() as u64;
    assert_eq!(v["normal_images"].as_u64(), Some(normal));
    assert_eq!(v["missing"], serde_json::json!([]));
    let types = v["by_dataset"]["Sample"].as_object().unwrap();
    assert_eq!(
        types.len(),
        8,
        "all eight question types in the sample: {types:?}"
    );
}

#[test]
fn dataset_stats_lists_missing_files_and_rejects_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("assets/sample/mmad.json")).unwrap();
    let file = dir.path().join("mmad.json");
    std::fs::write(&file, &text).unwrap();
    // An empty root: every image and template is missing.
    let v = json_out(
        bin()
            .args(["dataset", "stats"])
            .arg(&file)
            .arg("--root")
            .arg(dir.path())
            .args(["--format", "json"]),
    );
    assert!(v["missing"].as_array().unwrap().len() > 10);

    std::fs::write(&file, &text[..text.len() / 2]).unwrap();
    bin()
        .args(["dataset", "stats"])
        .arg(&file)
        .assert()
        .failure()
        .stderr(predicate::str::contains("not valid JSON at line"));

    let escaping = text.replacen("\"Sample/", "\"../Sample/", 1);
    std::fs::write(&file, escaping).unwrap();
    bin()
        .args(["dataset", "stats"])
        .arg(&file)
        .assert()
        .failure()
        .stderr(predicate::str::contains("escape the dataset root"));

    std::fs::write(
        &file,
        r#"{"Sample/x/test/good/0.png": {"conversation": [{"Question": 1}]}}"#,
    )
    .unwrap();
    bin()
        .args(["dataset", "stats"])
        .arg(&file)
        .assert()
        .failure()
        .stderr(predicate::str::contains("conversation[0].Question"));
}

#[test]
fn bundled_knowledge_validates() {
    bin()
        .args(["knowledge", "validate"])
        .arg(repo("knowledge/domain_knowledge.json"))
        .assert()
        .success()
        .stdout(predicate::str::contains("no problems found"));
    bin()
        .args(["knowledge", "validate"])
        .arg(repo("assets/sample/domain_knowledge.json"))
        .assert()
        .success();
}
