//! The anomaly-map expert (issue 18) in a real run: `run --preset echo+map` on the
//! sample against the mock server, what the journal keeps, what the model was sent
//! (the hint sentence and the third image, read from the request bodies the server
//! received), the ablation's switches in the manifest, and the refusal without a
//! memory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use echo_workbench::dataset::{DatasetRoot, MmadDataset};
use echo_workbench::echo::ExpertName;
use echo_workbench::mllm::mock::{MockConfig, MockServer, Oracle, Responder};
use echo_workbench::runs::journal::{JOURNAL_FILE, JournalRecord, read_journal};
use echo_workbench::runs::manifest::RunManifest;
use serde_json::Value;

use crate::common::{bin, repo};

const HINT_LEAD: &str = "The most unusual region is at the ";

fn server() -> MockServer {
    let dataset = MmadDataset::load(&repo("assets/sample/mmad.json")).unwrap();
    let oracle = Oracle::from_mmad(&dataset, Some(&DatasetRoot::new(repo("assets/sample"))));
    MockServer::start(MockConfig {
        latency: Duration::from_millis(0),
        responder: Responder::oracle(oracle),
        ..MockConfig::default()
    })
    .unwrap()
}

fn sample_memory(dir: &Path) -> PathBuf {
    let out = dir.join("memory");
    bin()
        .args([
            "memory",
            "build",
            "--index",
            "exact",
            "--no-cache",
            "--root",
        ])
        .arg(repo("assets/sample"))
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    out
}

fn run(url: &str, out: &Path, extra: &[&str]) -> Output {
    Command::new(assert_cmd::cargo::cargo_bin("echo-workbench"))
        .arg("run")
        .arg("--dataset")
        .arg(repo("assets/sample/mmad.json"))
        .args(["--endpoint", url, "--model", "mock-vl", "--out"])
        .arg(out)
        .args(["--progress-every-s", "60"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn records(out: &Path) -> Vec<JournalRecord> {
    read_journal(&out.join(JOURNAL_FILE)).unwrap().records
}

/// The text and the number of images of a chat request body's user message.
fn sent(body: &Value) -> (String, usize) {
    let mut text = String::new();
    let mut images = 0;
    for message in body["messages"].as_array().unwrap() {
        if let Some(parts) = message["content"].as_array() {
            for p in parts {
                match p["type"].as_str() {
                    Some("text") => text.push_str(p["text"].as_str().unwrap_or_default()),
                    Some("image_url") => images += 1,
                    _ => {}
                }
            }
        }
    }
    (text, images)
}

#[test]
fn echo_plus_map_records_the_map_and_sends_its_hint_and_outlined_image() {
    let dir = tempfile::tempdir().unwrap();
    let memory = sample_memory(dir.path());
    let memory_arg = memory.to_str().unwrap();
    let server = server();
    let url = server.url();

    let with_map = dir.path().join("with-map");
    let types = ["--types", "AD,DL", "--categories", "washer"];
    let output = run(
        &url,
        &with_map,
        &[
            &["--preset", "echo+map", "--memory", memory_arg][..],
            &types,
        ]
        .concat(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let recs = records(&with_map);
    // 13 washer images: 13 Anomaly Detection and 9 Defect Localization questions.
    assert_eq!(recs.len(), 22);
    for r in &recs {
        let names: Vec<ExpertName> = r.traces.iter().map(|t| t.name).collect();
        assert_eq!(names, ExpertName::ALL, "{}", r.image);
        let map = &r.traces[1];
        assert!(map.is_done(), "{map:?}");
        let out = map.output.map().expect("a typed map output");
        assert_eq!((out.k, out.backbone.as_str()), (4, "descriptor"));
        assert_eq!(out.category, "washer");
        assert!(out.threshold > 0.0 && out.score > 0.0, "{out:?}");
        assert!(!out.regions.is_empty());
        let hint = out.hint.as_deref().unwrap();
        assert!(hint.starts_with(HINT_LEAD), "{hint}");
        assert!(hint.contains(&out.regions[0].grid), "{hint}");
        // The journal line keeps the output as written, regions with grid names.
        let line = serde_json::to_value(map).unwrap();
        assert_eq!(line["output"]["regions"][0]["grid"], out.regions[0].grid);
    }
    // The map, on this sample, calls the defective washers anomalous and the good
    // ones normal more often than not: every good one, the stains and two of the
    // notches (the faint scratches score under the threshold its normals set).
    let right = recs
        .iter()
        .filter(|r| r.question_type == "Anomaly Detection")
        .filter(|r| {
            let anomalous = r.traces[1].output.map().unwrap().anomalous();
            anomalous != r.image.contains("/good/")
        })
        .count();
    assert!(right >= 9, "the map was right on {right} of 13 images");

    let bodies = server.requests();
    assert_eq!(bodies.len(), 22);
    let mut image_counts = Vec::new();
    for body in &bodies {
        let (text, images) = sent(body);
        assert!(text.contains(HINT_LEAD), "no hint sent:\n{text}");
        assert!(text.contains("most unusual region outlined"), "{text}");
        image_counts.push(images);
    }
    // Anomaly Detection: reference, query, map; Defect Localization (no reference
    // in Echo's table): query, map.
    image_counts.sort_unstable();
    assert_eq!(image_counts, [[2; 9].as_slice(), &[3; 13]].concat());
    let manifest = RunManifest::load(&with_map.join("manifest.json")).unwrap();
    assert_eq!(manifest.pipeline.preset, "echo+map");
    assert_eq!(manifest.pipeline.map_k, Some(4));
    assert_eq!(manifest.pipeline.map_hint, Some(true));
    assert_eq!(
        manifest.pipeline.map_image.map(|m| m.as_str()),
        Some("outline")
    );

    check_score_anomaly(&with_map, &recs, &memory);

    // The ablation: the same preset, the map's hint off and no third image.
    let ablated = dir.path().join("ablated");
    let before = bodies.len();
    let output = run(
        &url,
        &ablated,
        &[
            &[
                "--preset",
                "echo+map",
                "--memory",
                memory_arg,
                "--map-hint",
                "off",
                "--map-image",
                "none",
            ][..],
            &types,
        ]
        .concat(),
    );
    assert!(output.status.success());
    let bodies = server.requests();
    for body in &bodies[before..] {
        let (text, images) = sent(body);
        assert!(!text.contains(HINT_LEAD), "{text}");
        assert!(images <= 2, "{text}");
    }
    let manifest = RunManifest::load(&ablated.join("manifest.json")).unwrap();
    assert_eq!(manifest.pipeline.map_hint, Some(false));
    assert_eq!(
        manifest.pipeline.map_image.map(|m| m.as_str()),
        Some("none")
    );
    // The map still ran and was recorded: only what the model gets changed.
    assert!(records(&ablated).iter().all(|r| r.traces[1].is_done()));
}

#[test]
fn echo_and_mmad_runs_have_no_map_and_their_manifests_no_map_fields() {
    let dir = tempfile::tempdir().unwrap();
    let server = server();
    let out = dir.path().join("mmad");
    let output = run(
        &server.url(),
        &out,
        &["--preset", "mmad", "--template", "similar", "--limit", "4"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for r in records(&out) {
        assert!(r.traces.iter().all(|t| t.name != ExpertName::AnomalyMap));
        assert_eq!(r.traces.len(), 4);
    }
    let text = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(!text.contains("map_"), "{text}");
    for body in &server.requests() {
        assert!(!sent(body).0.contains(HINT_LEAD));
    }
}

#[test]
fn echo_plus_map_without_a_memory_is_refused_before_asking() {
    let dir = tempfile::tempdir().unwrap();
    let server = server();
    let output = run(
        &server.url(),
        &dir.path().join("no-memory"),
        &[
            "--preset",
            "echo+map",
            "--template",
            "similar",
            "--limit",
            "3",
        ],
    );
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("the anomaly map compares each image with a reference memory"),
        "{err}"
    );
    assert!(err.contains("--map-expert off"), "{err}");
    assert_eq!(server.chat_count(), 0);
}

/// `score RUN --anomaly` against figures counted here from the journal, and its
/// pixel figures against `anomaly-eval` of the same memory (the maps recomputed
/// are the ones the run made).
fn check_score_anomaly(run_dir: &Path, recs: &[JournalRecord], memory: &Path) {
    let out = bin()
        .arg("score")
        .arg(run_dir)
        .args(["--anomaly", "--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let washer = &v["anomaly_map"]["categories"]["Sample/washer"];
    // One map per image: (score, defective, the model's AD answer right?).
    let mut images: Vec<(f64, bool, bool)> = Vec::new();
    let mut threshold = 0.0;
    for r in recs
        .iter()
        .filter(|r| r.question_type == "Anomaly Detection")
    {
        let m = r.traces[1].output.map().unwrap();
        threshold = m.threshold;
        images.push((
            m.score,
            !r.image.contains("/good/"),
            r.correct == Some(true),
        ));
    }
    assert_eq!(images.len(), 13);
    assert_eq!(washer["images"], 13);
    // Image AUROC as the share of (defective, normal) pairs ranked right, ties half.
    let (mut pairs, mut right) = (0.0, 0.0);
    for a in images.iter().filter(|i| i.1) {
        for b in images.iter().filter(|i| !i.1) {
            pairs += 1.0;
            right += if a.0 > b.0 {
                1.0
            } else if a.0 == b.0 {
                0.5
            } else {
                0.0
            };
        }
    }
    let auroc = washer["image_auroc"].as_f64().unwrap();
    assert!(
        (auroc - right / pairs).abs() < 1e-12,
        "{auroc} vs {}",
        right / pairs
    );
    let normals = images.iter().filter(|i| !i.1).count() as f64;
    let defects = images.len() as f64 - normals;
    let overkill = images.iter().filter(|i| !i.1 && i.0 > threshold).count() as f64;
    let miss = images.iter().filter(|i| i.1 && i.0 <= threshold).count() as f64;
    let close = |key: &str, want: f64| {
        let got = washer[key].as_f64().unwrap();
        assert!((got - want).abs() < 1e-9, "{key}: {got} vs {want}");
    };
    close("map_overkill", overkill / normals * 100.0);
    close("map_miss", miss / defects * 100.0);
    // The oracle answers every question right: the model never errs, so map and
    // model disagree exactly where the map does.
    assert!(images.iter().all(|i| i.2));
    close("model_overkill", 0.0);
    close("model_miss", 0.0);
    close(
        "disagreement",
        (overkill + miss) / images.len() as f64 * 100.0,
    );

    let eval = bin()
        .args(["anomaly-eval", "--dataset"])
        .arg(repo("assets/sample/mmad.json"))
        .arg("--root")
        .arg(repo("assets/sample"))
        .arg("--memory")
        .arg(memory)
        .args(["--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let eval: Value = serde_json::from_slice(&eval).unwrap();
    for (ours, theirs) in [
        ("image_auroc", "image_auroc"),
        ("pixel_auroc", "pixel_auroc"),
        ("aupro", "aupro"),
    ] {
        let a = washer[ours].as_f64().unwrap();
        let b = eval[theirs]["Sample/washer"].as_f64().unwrap();
        assert!((a - b).abs() < 1e-12, "{ours}: {a} vs anomaly-eval {b}");
    }
    assert_eq!(
        v["anomaly_map"]["mean"]["pixel_auroc"],
        washer["pixel_auroc"]
    );
}

/// `--map-backbone`: the map runs on the backbone asked for, the trace and the
/// manifest say which, and `score --anomaly` recomputes the maps with it.
#[test]
fn map_backbone_is_used_recorded_and_rescored_with() {
    let dir = tempfile::tempdir().unwrap();
    let memory = sample_memory(dir.path());
    let memory_arg = memory.to_str().unwrap();
    let server = server();
    let url = server.url();
    let backbone = format!("dinov2:{}", repo("tests/fixtures/tiny_dinov2").display());
    let out = dir.path().join("dino");
    let output = run(
        &url,
        &out,
        &[
            "--preset",
            "echo+map",
            "--memory",
            memory_arg,
            "--map-backbone",
            &backbone,
            "--types",
            "AD",
            "--categories",
            "washer",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let recs = records(&out);
    assert_eq!(recs.len(), 13);
    for r in &recs {
        let map = &r.traces[1];
        assert!(map.is_done(), "{map:?}");
        let m = map.output.map().unwrap();
        assert_eq!(m.backbone, backbone);
        assert_eq!(map.input.map().unwrap().backbone, backbone);
    }
    let manifest = RunManifest::load(&out.join("manifest.json")).unwrap();
    assert_eq!(
        manifest
            .pipeline
            .map_backbone
            .as_ref()
            .map(|b| b.to_string()),
        Some(backbone.clone())
    );
    let scored: Value = serde_json::from_slice(
        &bin()
            .arg("score")
            .arg(&out)
            .args(["--anomaly", "--format", "json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    )
    .unwrap();
    let eval: Value = serde_json::from_slice(
        &bin()
            .args(["anomaly-eval", "--dataset"])
            .arg(repo("assets/sample/mmad.json"))
            .arg("--root")
            .arg(repo("assets/sample"))
            .arg("--memory")
            .arg(&memory)
            .args(["--format", "json", "--backbone", &backbone])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    )
    .unwrap();
    let ours = scored["anomaly_map"]["categories"]["Sample/washer"]["pixel_auroc"]
        .as_f64()
        .unwrap();
    let theirs = eval["pixel_auroc"]["Sample/washer"].as_f64().unwrap();
    assert!(
        (ours - theirs).abs() < 1e-12,
        "{ours} vs anomaly-eval {theirs}"
    );

    // Naming the descriptor is the same as not naming a backbone: the manifest
    // has no `map_backbone`, as before the option existed.
    let plain = dir.path().join("plain");
    let output = run(
        &url,
        &plain,
        &[
            "--preset",
            "echo+map",
            "--memory",
            memory_arg,
            "--map-backbone",
            "descriptor",
            "--limit",
            "1",
        ],
    );
    assert!(output.status.success());
    let text = std::fs::read_to_string(plain.join("manifest.json")).unwrap();
    assert!(!text.contains("map_backbone"), "{text}");
    let output = run(&url, &plain, &["--map-backbone", "dino"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown backbone"));
}
