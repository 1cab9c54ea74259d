//! `score --calibration` on run folders whose records carry a confidence, written
//! here with the journal writer (the runs module's sample run, confidence added).

use echo_workbench::runs::journal::{Confidence, JournalRecord};
use indexmap::IndexMap;
use serde_json::Value;

use crate::common::bin;
use crate::runs::{all_records, manifest, write_run};

/// The sample run with every answer certain by agreement, and letter
/// probabilities on every third answer (0.6 on the chosen letter).
fn confident_records() -> Vec<JournalRecord> {
    let mut records = all_records();
    for r in records.iter_mut().filter(|r| r.is_ok()) {
        let chosen = r.gpt_answer.clone().unwrap();
        let probs =
            (r.index % 3 == 0).then(|| IndexMap::from([(chosen, 0.6), ("Z".to_owned(), 0.4)]));
        r.confidence = Some(Confidence {
            agreement: Some(1.0),
            letter_probs: probs,
        });
    }
    records
}

fn score_json(dir: &std::path::Path, extra: &[&str]) -> (Value, String) {
    let out = bin()
        .arg("score")
        .arg(dir)
        .args(["--format", "json", "--ci-resamples", "0"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn score_calibration_json_has_bins_ece_and_the_abstain_curve() {
    let dir = tempfile::tempdir().unwrap();
    let records = confident_records();
    write_run(dir.path(), &manifest(records.len()), &records);
    let answered: Vec<&JournalRecord> = records.iter().filter(|r| r.is_ok()).collect();
    let right = answered.iter().filter(|r| r.correct == Some(true)).count();
    let n = answered.len() as f64;

    // By agreement every answer is certain: ECE is the error rate.
    let (v, _) = score_json(
        dir.path(),
        &["--calibration", "--confidence-source", "agreement"],
    );
    let cal = &v["calibration"];
    assert_eq!(cal["source"], "agreement");
    assert_eq!(cal["all"]["answers"], answered.len());
    let ece = cal["all"]["ece"].as_f64().unwrap();
    assert!((ece - (1.0 - right as f64 / n)).abs() < 1e-12, "{ece}");
    assert_eq!(cal["all"]["bins"].as_array().unwrap().len(), 10);
    assert_eq!(cal["all"]["bins"][9]["count"], answered.len());
    assert!(cal["per_subtask"].as_object().unwrap().len() > 1);
    assert_eq!(cal["all"]["abstain"].as_array().unwrap().len(), 21);
    assert!(cal.get("abstain_below").is_none());

    // Auto takes the letter probability where there is one: those answers move to
    // the 0.6 bin, and abstaining below 0.7 sends exactly them to a person.
    let with_probs = answered.iter().filter(|r| r.index % 3 == 0).count();
    let (v, _) = score_json(dir.path(), &["--calibration", "--abstain-below", "0.7"]);
    let cal = &v["calibration"];
    assert_eq!(cal["source"], "auto");
    assert_eq!(cal["all"]["bins"][6]["count"], with_probs);
    let at = &cal["abstain_below"]["all"];
    assert_eq!(at["for_person"], with_probs);
    assert_eq!(at["kept"], answered.len() - with_probs);
    let kept_right = answered
        .iter()
        .filter(|r| r.index % 3 != 0 && r.correct == Some(true))
        .count();
    let acc = at["accuracy"].as_f64().unwrap();
    assert!((acc - kept_right as f64 / (answered.len() - with_probs) as f64).abs() < 1e-12);

    // Without the flag the JSON is what it was.
    let (plain, _) = score_json(dir.path(), &[]);
    assert!(plain.get("calibration").is_none());
    assert_eq!(plain["table"], v["table"]);
}

#[test]
fn a_run_without_confidence_says_so_instead_of_printing_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let records = all_records();
    write_run(dir.path(), &manifest(records.len()), &records);
    let (v, stderr) = score_json(dir.path(), &["--calibration"]);
    assert!(v["calibration"].is_null());
    assert!(stderr.contains("records no confidence"), "{stderr}");
    let text = bin()
        .arg("score")
        .arg(dir.path())
        .args(["--calibration", "--ci-resamples", "0"])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("calibration: this run records no confidence"),
        "{text}"
    );
    assert!(!text.contains("ECE"), "{text}");

    // A threshold outside [0, 1] is refused by name.
    let bad = bin()
        .arg("score")
        .arg(dir.path())
        .args(["--calibration", "--abstain-below", "1.5"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--abstain-below"));
}

#[test]
fn score_calibration_text_lists_subtasks_bins_and_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let records = confident_records();
    write_run(dir.path(), &manifest(records.len()), &records);
    let out = bin()
        .arg("score")
        .arg(dir.path())
        .args([
            "--calibration",
            "--abstain-below",
            "0.7",
            "--ci-resamples",
            "0",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "Calibration",
        "ECE %",
        "Reliability (all)",
        "0.9-1.0",
        "Abstain below",
        "Abstaining below 0.7:",
        "for a person",
        "confidence: auto",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

#[test]
fn the_html_report_of_a_confident_run_has_a_calibration_section() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let records = confident_records();
    write_run(&run, &manifest(records.len()), &records);
    let html = dir.path().join("report.html");
    let out = bin()
        .arg("export")
        .arg(&run)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&html).unwrap();
    for needle in [
        "<h2>Calibration</h2>",
        "aria-label=\"reliability diagram\"",
        "<h3>Abstain curve</h3>",
    ] {
        assert!(html.contains(needle), "{needle}");
    }
    // The sample run reports no tokens: no usage section rather than zeros.
    assert!(!html.contains("<h2>Usage</h2>"));
}
