//! The `anomaly` and `anomaly-eval` commands, driven as a user would, against a
//! memory of the sample dataset's normal training images.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

use crate::common::{bin, repo};

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

fn json_of(cmd: &mut Command) -> Value {
    let out = cmd.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).expect("stdout is JSON")
}

fn anomaly(memory: &Path, image: &Path, extra: &[&str]) -> Value {
    json_of(
        bin()
            .arg("anomaly")
            .arg(image)
            .arg("--memory")
            .arg(memory)
            .args(["--format", "json"])
            .args(extra),
    )
}

#[test]
fn a_painted_defect_scores_above_the_threshold_where_it_was_painted() {
    let dir = tempfile::tempdir().unwrap();
    let memory = sample_memory(dir.path());
    let good = repo("assets/sample/Sample/washer/test/good/001.png");

    let normal = anomaly(&memory, &good, &[]);
    let (score, threshold) = (
        normal["score"].as_f64().unwrap(),
        normal["threshold"].as_f64().unwrap(),
    );
    assert!(score < threshold, "a normal image flagged: {normal}");
    assert_eq!(normal["backbone"], "descriptor");
    assert_eq!(normal["k"], 4);
    assert!(normal["ms"].as_f64().unwrap() > 0.0);

    let mut img = image::open(&good).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    for y in h * 2 / 3 + 10..h * 2 / 3 + 40 {
        for x in w * 2 / 3 + 10..w * 2 / 3 + 40 {
            img.put_pixel(x, y, image::Rgb([220, 30, 30]));
        }
    }
    let painted = dir.path().join("painted.png");
    img.save(&painted).unwrap();
    let map_file = dir.path().join("map.png");
    let out = anomaly(
        &memory,
        &painted,
        &["--out-map", map_file.to_str().unwrap(), "--k", "2"],
    );
    assert_eq!(out["k"], 2);
    assert!(
        out["score"].as_f64().unwrap() > out["threshold"].as_f64().unwrap(),
        "{out}"
    );
    let top = &out["regions"][0];
    assert_eq!(top["grid"], "bottom right", "{out}");
    let (x, y) = (top["x"].as_u64().unwrap(), top["y"].as_u64().unwrap());
    assert!(x <= (w * 2 / 3 + 40) as u64 && y <= (h * 2 / 3 + 40) as u64);

    let map = image::open(&map_file).unwrap();
    assert_eq!(map.color(), image::ColorType::L8);
    let map = map.to_luma8();
    assert_eq!(map.dimensions(), (w, h));
    let inside = map.get_pixel(w * 2 / 3 + 25, h * 2 / 3 + 25).0[0];
    let far = map.get_pixel(w / 6, h / 6).0[0];
    assert!(inside > 128 && inside > far, "inside {inside}, far {far}");
}

#[test]
fn text_output_names_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let memory = sample_memory(dir.path());
    let out = bin()
        .arg("anomaly")
        .arg(repo("assets/sample/Sample/chip/test/good/001.png"))
        .arg("--memory")
        .arg(&memory)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("threshold"), "{text}");
    assert!(text.contains("category chip"), "{text}");
}

#[test]
fn bad_inputs_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let good = repo("assets/sample/Sample/washer/test/good/000.png");
    let fails = |cmd: &mut Command| -> String {
        let out = cmd.assert().failure().get_output().clone();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    let missing = dir.path().join("no-memory");
    let err = fails(
        bin()
            .arg("anomaly")
            .arg(&good)
            .arg("--memory")
            .arg(&missing),
    );
    assert!(err.contains("no-memory"), "{err}");

    let memory = sample_memory(dir.path());
    let not_image = dir.path().join("notes.png");
    std::fs::write(&not_image, b"not a picture").unwrap();
    let err = fails(
        bin()
            .arg("anomaly")
            .arg(&not_image)
            .arg("--memory")
            .arg(&memory),
    );
    assert!(err.contains("notes.png"), "{err}");

    let err = fails(
        bin()
            .arg("anomaly")
            .arg(&good)
            .arg("--memory")
            .arg(&memory)
            .args(["--k", "0"]),
    );
    assert!(err.contains("--k"), "{err}");
    let err = fails(
        bin()
            .arg("anomaly")
            .arg(&good)
            .arg("--memory")
            .arg(&memory)
            .args(["--backbone", "resnet"]),
    );
    assert!(err.contains("resnet"), "{err}");

    let err = fails(
        bin()
            .args(["anomaly-eval", "--dataset"])
            .arg(dir.path().join("missing.json"))
            .arg("--root")
            .arg(repo("assets/sample"))
            .arg("--memory")
            .arg(&memory),
    );
    assert!(err.contains("missing.json"), "{err}");
}

#[test]
fn eval_reports_every_category_and_the_mean() {
    let dir = tempfile::tempdir().unwrap();
    let memory = sample_memory(dir.path());
    let v = json_of(
        bin()
            .args(["anomaly-eval", "--format", "json", "--dataset"])
            .arg(repo("assets/sample/mmad.json"))
            .arg("--root")
            .arg(repo("assets/sample"))
            .arg("--memory")
            .arg(&memory),
    );
    for metric in ["image_auroc", "pixel_auroc", "aupro"] {
        let table = v[metric].as_object().unwrap_or_else(|| panic!("{v}"));
        let names: Vec<&str> = table.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["Sample/washer", "Sample/weave", "Sample/chip", "mean"],
            "{metric}"
        );
        for (name, x) in table {
            let x = x.as_f64().unwrap_or_else(|| panic!("{metric} {name}: {x}"));
            assert!((0.0..=1.0).contains(&x), "{metric} {name}: {x}");
        }
    }
    // Floors well below what the sample gives, so a broken map fails and noise does not.
    assert!(
        v["image_auroc"]["mean"].as_f64().unwrap() >= MIN_IMAGE_AUROC,
        "{v}"
    );
    assert!(
        v["pixel_auroc"]["mean"].as_f64().unwrap() >= MIN_PIXEL_AUROC,
        "{v}"
    );
}

const MIN_IMAGE_AUROC: f64 = 0.8;
const MIN_PIXEL_AUROC: f64 = 0.8;

/// The tiny random CLIP fixture: its maps mean nothing, but every step of the
/// `clip:PATH` backbone runs (load, patch tokens, threshold, regions, metrics).
fn tiny_clip() -> String {
    format!(
        "clip:{}",
        repo("tests/fixtures/tiny_clip/full_p8_s40_f16").display()
    )
}

#[test]
fn clip_backbone_scores_with_the_chosen_layers() {
    let dir = tempfile::tempdir().unwrap();
    let memory = sample_memory(dir.path());
    let good = repo("assets/sample/Sample/washer/test/good/001.png");
    let backbone = tiny_clip();
    let map_file = dir.path().join("map.png");
    let out = anomaly(
        &memory,
        &good,
        &[
            "--backbone",
            &backbone,
            "--out-map",
            map_file.to_str().unwrap(),
        ],
    );
    assert_eq!(out["backbone"], backbone.as_str());
    // Three blocks: half and three quarters of the depth.
    assert_eq!(out["layers"], serde_json::json!([1, 3]));
    let score = out["score"].as_f64().unwrap();
    let threshold = out["threshold"].as_f64().unwrap();
    assert!(score.is_finite() && score >= 0.0, "{out}");
    assert!(threshold.is_finite() && threshold >= 0.0, "{out}");
    assert!(out["regions"].is_array(), "{out}");
    let (w, h) = image::image_dimensions(&good).unwrap();
    assert_eq!(image::image_dimensions(&map_file).unwrap(), (w, h));

    let one = anomaly(&memory, &good, &["--backbone", &backbone, "--layers", "2"]);
    assert_eq!(one["layers"], serde_json::json!([2]));
    assert_ne!(one["score"], out["score"], "other layers, other features");
    // The descriptor's output has no layers field, as before.
    assert!(anomaly(&memory, &good, &[]).get("layers").is_none());

    let fails = |extra: &[&str]| -> String {
        let out = bin()
            .arg("anomaly")
            .arg(&good)
            .arg("--memory")
            .arg(&memory)
            .args(extra)
            .assert()
            .failure()
            .get_output()
            .clone();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    // The dense layers' CPU kernel: gemm gives the same map; a wrong name is
    // refused, naming the variable.
    let with_gemm = json_of(
        bin()
            .env("ECHO_WORKBENCH_MATMUL", "gemm")
            .arg("anomaly")
            .arg(&good)
            .arg("--memory")
            .arg(&memory)
            .args(["--format", "json", "--backbone", &backbone]),
    );
    let gap = (with_gemm["score"].as_f64().unwrap() - score).abs();
    assert!(gap < 1e-5, "{with_gemm} against {out}");
    let out = bin()
        .env("ECHO_WORKBENCH_MATMUL", "mkl")
        .arg("anomaly")
        .arg(&good)
        .arg("--memory")
        .arg(&memory)
        .args(["--backbone", &backbone])
        .assert()
        .failure()
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("ECHO_WORKBENCH_MATMUL") && err.contains("mkl"),
        "{err}"
    );

    let err = fails(&["--backbone", &backbone, "--layers", "1,7"]);
    assert!(err.contains("layer 7"), "{err}");
    let err = fails(&["--layers", "1"]);
    assert!(err.contains("--layers"), "{err}");
    let err = fails(&["--backbone", "clip:/nonexistent/clip-folder"]);
    assert!(err.contains("nonexistent/clip-folder"), "{err}");
    let err = fails(&["--backbone", "dinov2:/nonexistent/dino"]);
    assert!(
        err.contains("nonexistent/dino")
            && err.contains("config.json")
            && err.contains("hf download"),
        "{err}"
    );
}

/// The tiny random DINOv2 fixture: as [`tiny_clip`], every step of the
/// `dinov2:PATH` backbone runs; its maps mean nothing.
fn tiny_dinov2() -> String {
    format!("dinov2:{}", repo("tests/fixtures/tiny_dinov2").display())
}

#[test]
fn dinov2_backbone_scores_and_writes_the_map() {
    let dir = tempfile::tempdir().unwrap();
    let memory = sample_memory(dir.path());
    let good = repo("assets/sample/Sample/weave/test/good/001.png");
    let backbone = tiny_dinov2();
    let map_file = dir.path().join("map.png");
    let out = anomaly(
        &memory,
        &good,
        &[
            "--backbone",
            &backbone,
            "--out-map",
            map_file.to_str().unwrap(),
        ],
    );
    assert_eq!(out["backbone"], backbone.as_str());
    assert_eq!(out["k"], 4);
    // Three layers: the default is three quarters of the depth and the last,
    // which coincide.
    assert_eq!(out["layers"], serde_json::json!([3]));
    let score = out["score"].as_f64().unwrap();
    let threshold = out["threshold"].as_f64().unwrap();
    assert!(score.is_finite() && score >= 0.0, "{out}");
    assert!(threshold.is_finite() && threshold >= 0.0, "{out}");
    assert!(out["ms"].as_f64().unwrap() > 0.0, "{out}");
    let (w, h) = image::image_dimensions(&good).unwrap();
    for region in out["regions"].as_array().unwrap() {
        let (x, y) = (region["x"].as_u64().unwrap(), region["y"].as_u64().unwrap());
        let (rw, rh) = (region["w"].as_u64().unwrap(), region["h"].as_u64().unwrap());
        assert!(x + rw <= u64::from(w) && y + rh <= u64::from(h), "{region}");
        assert!(
            region["grid"].as_str().is_some() && region["score"].is_number(),
            "{region}"
        );
    }
    let map = image::open(&map_file).unwrap();
    assert_eq!((map.width(), map.height()), (w, h));
    assert!(
        matches!(map, image::DynamicImage::ImageLuma8(_)),
        "greyscale"
    );

    let other = anomaly(&memory, &good, &["--backbone", &backbone, "--layers", "1"]);
    assert_eq!(other["layers"], serde_json::json!([1]));
    assert_ne!(other["score"], out["score"], "other layers, other features");
    let err = String::from_utf8(
        bin()
            .arg("anomaly")
            .arg(&good)
            .arg("--memory")
            .arg(&memory)
            .args(["--backbone", &backbone, "--layers", "2,4"])
            .assert()
            .failure()
            .get_output()
            .stderr
            .clone(),
    )
    .unwrap();
    assert!(
        err.contains("layer 4") && !err.contains("panicked"),
        "{err}"
    );

    let v = json_of(
        bin()
            .args(["anomaly-eval", "--format", "json", "--dataset"])
            .arg(repo("assets/sample/mmad.json"))
            .arg("--root")
            .arg(repo("assets/sample"))
            .arg("--memory")
            .arg(&memory)
            .args(["--backbone", &backbone]),
    );
    for metric in ["image_auroc", "pixel_auroc", "aupro"] {
        let x = v[metric]["mean"].as_f64().unwrap_or_else(|| panic!("{v}"));
        assert!((0.0..=1.0).contains(&x), "{metric}: {x}");
    }
}

#[test]
fn bench_anomaly_times_the_dinov2_backbone() {
    let v = json_of(
        bin()
            .args([
                "bench",
                "anomaly",
                "--size",
                "64",
                "--k",
                "1",
                "--runs",
                "1",
                "--backbone",
            ])
            .arg(tiny_dinov2())
            .args(["--layers", "2,3"]),
    );
    assert_eq!(v["backbone"], tiny_dinov2().as_str());
    assert_eq!(v["layers"], serde_json::json!([2, 3]));
    assert_eq!((v["grid"].as_u64(), v["dim"].as_u64()), (Some(3), Some(64)));
    assert!(v["images_per_s"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn eval_runs_with_the_clip_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let memory = sample_memory(dir.path());
    let v = json_of(
        bin()
            .args(["anomaly-eval", "--format", "json", "--dataset"])
            .arg(repo("assets/sample/mmad.json"))
            .arg("--root")
            .arg(repo("assets/sample"))
            .arg("--memory")
            .arg(&memory)
            .args(["--backbone", &tiny_clip(), "--layers", "1,2"]),
    );
    for metric in ["image_auroc", "pixel_auroc", "aupro"] {
        let table = v[metric].as_object().unwrap_or_else(|| panic!("{v}"));
        let names: Vec<&str> = table.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["Sample/washer", "Sample/weave", "Sample/chip", "mean"],
            "{metric}"
        );
        for (name, x) in table {
            let x = x.as_f64().unwrap_or_else(|| panic!("{metric} {name}: {x}"));
            assert!((0.0..=1.0).contains(&x), "{metric} {name}: {x}");
        }
    }
}
