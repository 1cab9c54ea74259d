//! `echo-workbench inspect` against a tiny local OpenAI-compatible server: the JSON
//! shape, the text a person reads, the plan, and a server that is down.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use predicates::prelude::*;
use serde_json::Value;

use crate::common::{bin_with_scratch_home as bin, repo};

const SCRATCH: &str = "assets/sample/Sample/washer/test/scratch/000.png";

/// Answers every request with a chat completion whose content is `reply`, and
/// keeps the request bodies.
fn serve(reply: &'static str) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                seen.lock().unwrap().push(v);
            }
            let answer = serde_json::json!({
                "id": "cmpl-test", "object": "chat.completion", "created": 0, "model": "test",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            })
            .to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (url, bodies)
}

fn images_in(body: &Value) -> usize {
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["type"] == "image_url")
        .count()
}

#[test]
fn json_output_has_the_documented_shape() {
    let (url, bodies) = serve("A");
    let out = bin()
        .arg("inspect")
        .arg(repo(SCRATCH))
        .args(["--question", "What kind of defect does the washer have?"])
        .args(["--endpoint", &url, "--model", "test", "--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["type", "experts", "answer"]);
    // The entry's own question: its type and options are used.
    assert_eq!(v["type"], "Defect Classification");
    let names: Vec<&str> = v["experts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "reference_extractor",
            "knowledge_guide",
            "reasoning_expert",
            "decision_maker"
        ]
    );
    for e in v["experts"].as_array().unwrap() {
        let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["name", "input", "output", "ms"]);
    }
    // Without --memory the entry's similar template is the reference.
    assert_eq!(
        v["experts"][0]["output"]["source"],
        "MMAD similar_templates"
    );
    assert!(
        v["experts"][1]["output"]["snippet"]
            .as_str()
            .unwrap()
            .starts_with("Defect knowledge for washer:")
    );
    assert_eq!(
        v["experts"][2]["output"]["skipped"]
            .as_str()
            .map(|s| s.contains("leaves reasoning out")),
        Some(true)
    );
    assert_eq!(
        v["answer"],
        serde_json::json!({"letter": "A", "text": "Scratch", "raw": "A"})
    );
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 1);
    assert_eq!(images_in(&bodies[0]), 2);
    assert_eq!(bodies[0]["model"], "test");
}

#[test]
fn text_output_with_a_memory_and_options_knowledge() {
    let dir = tempfile::tempdir().unwrap();
    let mem = dir.path().join("sample.mem");
    bin()
        .args(["memory", "build", "--root"])
        .arg(repo("assets/sample"))
        .args(["--index", "exact", "--out"])
        .arg(&mem)
        .arg("--cache")
        .arg(dir.path().join("cache"))
        .assert()
        .success();
    let (url, bodies) = serve("A: Scratch");
    bin()
        .arg("inspect")
        .arg(repo(SCRATCH))
        .args([
            "--question",
            "Which defect is this?",
            "--option",
            "A=Scratch",
            "--option",
            "B=Dent",
        ])
        .args([
            "--type",
            "DC",
            "--answer",
            "A",
            "--knowledge-mode",
            "options",
            "--scope",
            "category",
        ])
        .arg("--memory")
        .arg(&mem)
        .args(["--endpoint", &url])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "Type: Defect Classification (given with --type)",
        ))
        .stdout(predicate::str::contains("[1] Reference Extractor"))
        .stdout(predicate::str::contains("Sample/washer/train/good/"))
        .stdout(predicate::str::contains("<- sent"))
        .stdout(predicate::str::contains(
            "A \"Scratch\" -> scratch: the option names scratch",
        ))
        .stdout(predicate::str::contains(
            "| Knowledge that bears on this question:",
        ))
        .stdout(predicate::str::contains("[3] Reasoning Expert: skipped"))
        .stdout(predicate::str::contains("reply: A: Scratch"))
        .stdout(predicate::str::contains("Answer: A: Scratch (correct)"));
    assert_eq!(images_in(&bodies.lock().unwrap()[0]), 2);
}

#[test]
fn a_server_that_is_down_is_one_sentence_and_a_failure() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = bin()
        .arg("inspect")
        .arg(repo(SCRATCH))
        .args([
            "--question",
            "Is there any defect?",
            "--option",
            "A=Yes",
            "--option",
            "B=No",
        ])
        .args([
            "--endpoint",
            &format!("http://127.0.0.1:{port}/v1"),
            "--timeout",
            "5",
            "--format",
            "json",
        ])
        .assert()
        .failure()
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: the Decision Maker failed: "),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn plan_shows_the_experts_without_calling_a_model() {
    bin()
        .arg("inspect")
        .arg(repo(SCRATCH))
        .args([
            "--question",
            "Where is the defect?",
            "--option",
            "A=Left",
            "--option",
            "B=Right",
            "--plan",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "Type: Defect Localization (classified from the text; mentions a defect",
        ))
        .stdout(predicate::str::contains("[1] Reference Extractor: skipped"))
        .stdout(predicate::str::contains(
            "[4] Decision Maker: runs (prompt `echo/defect_localization`)",
        ));
    bin()
        .arg("inspect")
        .arg(repo(SCRATCH))
        .args([
            "--question",
            "Describe it",
            "--type",
            "DD",
            "--preset",
            "echo",
            "--dd-knowledge",
            "off",
            "--plan",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "[2] Knowledge Guide: skipped: switched off for this run",
        ));
    bin()
        .arg("inspect")
        .arg(repo(SCRATCH))
        .args([
            "--question",
            "x",
            "--type",
            "AD",
            "--preset",
            "nope",
            "--plan",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no preset `nope`"));
    let loose = tempfile::tempdir().unwrap();
    let copy = loose.path().join("part.png");
    std::fs::copy(repo(SCRATCH), &copy).unwrap();
    bin()
        .arg("inspect")
        .arg(&copy)
        .args([
            "--question",
            "x",
            "--type",
            "AD",
            "--template",
            "similar",
            "--plan",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "--template needs the image to be an entry",
        ));
}

#[test]
fn a_question_without_its_knowledge_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    // A condensed file without `washer`, the scratch image's category.
    let text = std::fs::read_to_string(repo("assets/sample/domain_knowledge.json")).unwrap();
    let mut kb: Value = serde_json::from_str(&text).unwrap();
    kb["Sample"]
        .as_object_mut()
        .unwrap()
        .remove("washer")
        .unwrap();
    let condensed = dir.path().join("condensed.json");
    std::fs::write(&condensed, kb.to_string()).unwrap();
    let (url, bodies) = serve("A");
    let ask = || {
        let mut cmd = bin();
        cmd.arg("inspect")
            .arg(repo(SCRATCH))
            .args(["--question", "What kind of defect does the washer have?"])
            .args(["--endpoint", &url, "--model", "test", "--condensed"])
            .arg(&condensed);
        cmd
    };
    ask()
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "the condensed knowledge has no category `washer` (dataset `Sample`) (condensed mode reads it): 1 question (Defect Classification)",
        ))
        .stderr(predicate::str::contains("--knowledge-mode category"))
        .stderr(predicate::str::contains("--allow-missing-knowledge"));
    assert!(
        bodies.lock().unwrap().is_empty(),
        "a refused question was sent"
    );
    ask()
        .arg("--allow-missing-knowledge")
        .assert()
        .success()
        .stderr(predicate::str::contains("warning: asking without an input"))
        .stdout(predicate::str::contains("[2] Knowledge Guide: FAILED"));
    assert_eq!(bodies.lock().unwrap().len(), 1);
}

#[test]
fn protocols_add_their_replies_to_the_output() {
    let (url, bodies) = serve("A");
    let ask = |extra: &[&str]| {
        bin()
            .arg("inspect")
            .arg(repo(SCRATCH))
            .args(["--question", "What kind of defect does the washer have?"])
            .args(["--endpoint", &url, "--model", "test"])
            .args(extra)
            .assert()
    };
    let out = ask(&["--circular", "--format", "json"])
        .success()
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let rotations = v["protocol"]["rotations"].as_array().unwrap();
    let n = rotations.len();
    assert!(n >= 2, "{v}");
    assert_eq!(bodies.lock().unwrap().len(), n, "one request per rotation");
    // Always "A": a different original option in every rotation.
    let originals: std::collections::HashSet<&str> = rotations
        .iter()
        .map(|r| r["original_letter"].as_str().unwrap())
        .collect();
    assert_eq!(originals.len(), n);
    assert_eq!(v["protocol"]["correct"], false);
    assert_eq!(v["protocol"]["agreement"], 1.0 / n as f64);

    bodies.lock().unwrap().clear();
    ask(&["--samples", "3", "--temperature", "0.5", "--seed", "7"])
        .success()
        .stdout(predicate::str::contains("sample 3: A"))
        .stdout(predicate::str::contains("Agreement: 100%"));
    let seeds: Vec<u64> = bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| b["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds, [7, 8, 9]);

    ask(&["--shuffle-options", "1"])
        .failure()
        .stderr(predicate::str::contains("--shuffle-options is for `run`"));
}

/// `inspect` with the anomaly map switched on by flag in Echo's preset: its step
/// is second, its regions and hint are printed, and `--map-image crop` sends the
/// zoomed crop as a third image with the hint.
#[test]
fn the_map_flags_add_the_anomaly_map_to_an_inspection() {
    let dir = tempfile::tempdir().unwrap();
    let mem = dir.path().join("sample.mem");
    bin()
        .args([
            "memory",
            "build",
            "--no-cache",
            "--index",
            "exact",
            "--root",
        ])
        .arg(repo("assets/sample"))
        .arg("--out")
        .arg(&mem)
        .assert()
        .success();
    let (url, bodies) = serve("A");
    let out = bin()
        .arg("inspect")
        .arg(repo(SCRATCH))
        .args([
            "--question",
            "Is there any defect?",
            "--option",
            "A=Yes",
            "--option",
            "B=No",
        ])
        .args([
            "--type",
            "AD",
            "--map-expert",
            "on",
            "--map-image",
            "crop",
            "--map-k",
            "2",
        ])
        .arg("--memory")
        .arg(&mem)
        .args(["--endpoint", &url])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("[2] Anomaly Map ("), "{out}");
    assert!(out.contains("[3] Knowledge Guide: skipped"), "{out}");
    assert!(out.contains("[5] Decision Maker ("), "{out}");
    assert!(
        out.contains("    hint: The most unusual region is at the "),
        "{out}"
    );
    assert!(out.contains("map computed in "), "{out}");
    let body = &bodies.lock().unwrap()[0];
    assert_eq!(images_in(body), 3);
    let text = body.to_string();
    assert!(text.contains("most unusual region, enlarged"), "{text}");
    assert!(
        text.contains("The most unusual region is at the "),
        "{text}"
    );
    assert!(!out.contains("    backbone: "), "{out}");

    // `--map-backbone`: the map runs on DINOv2 patch tokens and says so.
    let backbone = format!("dinov2:{}", repo("tests/fixtures/tiny_dinov2").display());
    let (url, _) = serve("A");
    let out = bin()
        .arg("inspect")
        .arg(repo(SCRATCH))
        .args(["--question", "Is there any defect?", "--option", "A=Yes"])
        .args(["--option", "B=No", "--type", "AD", "--map-expert", "on"])
        .args(["--map-backbone", &backbone])
        .arg("--memory")
        .arg(&mem)
        .args(["--endpoint", &url])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains(&format!("    backbone: {backbone}\n")),
        "{out}"
    );
    assert!(out.contains("[2] Anomaly Map ("), "{out}");
}
