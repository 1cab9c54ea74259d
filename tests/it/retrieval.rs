//! The Reference Extractor end to end through the CLI: build a memory of the
//! sample's normal training images, retrieve for every query, and fail clearly on
//! bad input.

use std::path::{Path, PathBuf};

use predicates::prelude::*;
use serde_json::Value;

use crate::common::{bin_with_scratch_home as bin, repo};

fn build(dir: &Path, index: &str) -> PathBuf {
    let out = dir.join(format!("sample-{index}.mem"));
    bin()
        .args(["memory", "build", "--root"])
        .arg(repo("assets/sample"))
        .args(["--index", index, "--out"])
        .arg(&out)
        .arg("--cache")
        .arg(dir.join("cache"))
        .assert()
        .success()
        .stdout(predicate::str::contains("24 images"));
    out
}

fn retrieve(memory: &Path, image: &Path, extra: &[&str]) -> Value {
    let out = bin()
        .arg("retrieve")
        .arg("--memory")
        .arg(memory)
        .arg(image)
        .args(extra)
        .args(["--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn every_sample_query_retrieves_a_normal_image_of_its_category() {
    let dir = tempfile::tempdir().unwrap();
    let mmad: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(repo("assets/sample/mmad.json")).unwrap())
            .unwrap();
    for index in ["hnsw", "exact"] {
        let memory = build(dir.path(), index);
        for key in mmad.keys() {
            let category = key.split('/').nth(1).unwrap();
            let image = repo("assets/sample").join(key);
            for scope in ["global", "category"] {
                let v = retrieve(&memory, &image, &["--k", "3", "--scope", scope]);
                assert_eq!(v["embedder"], "descriptor-v1");
                let top = &v["results"][0];
                assert_eq!(top["category"], category, "{key} ({index}, {scope}): {v}");
                let path = top["path"].as_str().unwrap();
                assert!(path.contains("/train/good/"), "{key}: {path}");
                assert!(top["score"].as_f64().unwrap() > 0.0);
                assert_eq!(v["results"].as_array().unwrap().len(), 3);
            }
        }
    }
}

#[test]
fn embed_prints_the_vector_and_rebuilds_use_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let img = repo("assets/sample/Sample/chip/test/crack/000.png");
    let out = bin()
        .arg("embed")
        .arg(&img)
        .args(["--embedder", "descriptor", "--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let n = v["dim"].as_u64().unwrap() as usize;
    assert_eq!(v["vector"].as_array().unwrap().len(), n);
    let norm: f64 = v["vector"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap().powi(2))
        .sum();
    assert!((norm - 1.0).abs() < 1e-4);
    build(dir.path(), "exact");
    bin()
        .args(["memory", "build", "--root"])
        .arg(repo("assets/sample"))
        .args(["--index", "exact", "--out"])
        .arg(dir.path().join("again.mem"))
        .arg("--cache")
        .arg(dir.path().join("cache"))
        .assert()
        .success()
        .stdout(predicate::str::contains("(0 embedded, 24 from cache)"));
}

#[test]
fn bad_inputs_fail_with_one_clear_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let not_image = dir.path().join("notes.png");
    std::fs::write(&not_image, "this is text").unwrap();
    bin()
        .arg("embed")
        .arg(&not_image)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "is not an image in a supported format",
        ));

    let memory = build(dir.path(), "exact");
    let query = repo("assets/sample/Sample/washer/test/good/000.png");
    let vectors = memory.join("vectors.f32");
    let mut bytes = std::fs::read(&vectors).unwrap();
    bytes[100] ^= 0x55;
    std::fs::write(&vectors, bytes).unwrap();
    bin()
        .arg("retrieve")
        .arg("--memory")
        .arg(&memory)
        .arg(&query)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "is damaged: vectors.f32 does not match its checksum",
        ));

    bin()
        .arg("retrieve")
        .arg("--memory")
        .arg(dir.path())
        .arg(&query)
        .assert()
        .failure()
        .stderr(predicate::str::contains("is not a reference memory"));

    bin()
        .arg("retrieve")
        .arg("--memory")
        .arg(build(dir.path(), "hnsw"))
        .arg(&not_image)
        .args(["--scope", "category"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("cannot tell the category"));
}

/// Every file under `dir` with its bytes, to prove a refused build kept them all.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn build_into(dir: &Path, out: &Path, index: &str) -> assert_cmd::assert::Assert {
    bin()
        .args(["memory", "build", "--root"])
        .arg(repo("assets/sample"))
        .args(["--index", index, "--out"])
        .arg(out)
        .arg("--cache")
        .arg(dir.join("cache"))
        .assert()
}

#[test]
fn memory_build_replaces_only_an_absent_or_empty_folder_or_an_old_memory() {
    let dir = tempfile::tempdir().unwrap();
    // A folder of the user's: refused before any embedding, every file kept.
    let thesis = dir.path().join("thesis");
    std::fs::create_dir_all(thesis.join("figures")).unwrap();
    std::fs::write(thesis.join("thesis.tex"), "\\chapter{Results}").unwrap();
    std::fs::write(thesis.join("figures/plot.png"), [1u8, 2, 3]).unwrap();
    let before = snapshot(&thesis);
    build_into(dir.path(), &thesis, "hnsw")
        .failure()
        .stderr(predicate::str::contains("refusing to write a memory to"))
        .stderr(predicate::str::contains("`thesis.tex`"));
    assert_eq!(snapshot(&thesis), before);
    assert!(
        !dir.path().join("cache").exists(),
        "the destination is checked before anything is embedded"
    );
    // A file in the way is refused too.
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "mine").unwrap();
    build_into(dir.path(), &file, "hnsw")
        .failure()
        .stderr(predicate::str::contains("it is a file"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");

    // An empty folder is filled; an old memory is replaced.
    let memory = dir.path().join("mem");
    std::fs::create_dir(&memory).unwrap();
    build_into(dir.path(), &memory, "exact")
        .success()
        .stdout(predicate::str::contains("24 images"));
    let index_of = |m: &Path| -> String {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(m.join("manifest.json")).unwrap())
                .unwrap();
        v["index"].as_str().unwrap().to_string()
    };
    assert_eq!(index_of(&memory), "exact");
    build_into(dir.path(), &memory, "hnsw")
        .success()
        .stdout(predicate::str::contains("24 images"));
    assert_eq!(index_of(&memory), "hnsw");
    let v = retrieve(
        &memory,
        &repo("assets/sample/Sample/washer/test/good/000.png"),
        &[],
    );
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
    // No staging or old folder is left beside it.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["cache", "mem", "notes.txt", "thesis"]);

    // A memory the user added a file to is theirs now: refused, file kept.
    std::fs::write(memory.join("README.md"), "which images").unwrap();
    build_into(dir.path(), &memory, "hnsw")
        .failure()
        .stderr(predicate::str::contains("`README.md`"));
    assert_eq!(
        std::fs::read_to_string(memory.join("README.md")).unwrap(),
        "which images"
    );
}

#[cfg(unix)]
#[test]
fn embedding_a_device_or_a_fifo_is_a_clear_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("camera.png");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    for image in [Path::new("/dev/zero"), fifo.as_path()] {
        bin()
            .arg("embed")
            .arg(image)
            .timeout(std::time::Duration::from_secs(30))
            .assert()
            .failure()
            .stderr(predicate::str::contains("not a regular file"));
    }
}
