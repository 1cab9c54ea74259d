//! The test-time protocols end to end against the mock server: samples, circular,
//! shuffled options and logprobs, each through the runner into a journal that
//! `score` reads; resume, shards and fingerprints with protocols; the CLI's flags.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use echo_workbench::dataset::{DatasetRoot, MmadDataset};
use echo_workbench::echo::protocol::{Protocol, majority};
use echo_workbench::mllm::EndpointConfig;
use echo_workbench::mllm::mock::{MockConfig, MockServer, Oracle, Responder};
use echo_workbench::runs::journal::{JOURNAL_FILE, JournalRecord, read_journal};
use echo_workbench::runs::manifest::{MANIFEST_FILE, RunManifest, Shard};
use echo_workbench::runs::runner::run;
use echo_workbench::runs::spec::{QuestionHook, RunControl, RunError, RunOutcome, RunSpec};
use echo_workbench::score::{ScoreOptions, ScoreTable, score};

use crate::common::repo;

fn oracle() -> Responder {
    static ORACLE: OnceLock<Oracle> = OnceLock::new();
    let oracle = ORACLE.get_or_init(|| {
        let dataset = MmadDataset::load(&repo("assets/sample/mmad.json")).unwrap();
        Oracle::from_mmad(&dataset, Some(&DatasetRoot::new(repo("assets/sample"))))
    });
    Responder::oracle(oracle.clone())
}

fn server(responder: Responder) -> MockServer {
    MockServer::start(MockConfig {
        responder,
        record_limit: 100_000,
        ..MockConfig::default()
    })
    .unwrap()
}

fn spec(server: &MockServer, out: &Path, limit: usize, protocol: Protocol) -> RunSpec {
    let sample = repo("assets/sample");
    let mut spec = RunSpec::new(
        sample.join("mmad.json"),
        &sample,
        vec![EndpointConfig {
            name: "mock".into(),
            base_url: server.url(),
            model: "mock-vl".into(),
            max_in_flight: 4,
            retry_base_ms: 1,
            ..EndpointConfig::default()
        }],
        out,
    );
    spec.knowledge = Some(sample.join("domain_knowledge.json"));
    spec.selection.limit = Some(limit);
    spec.protocol = protocol;
    spec
}

fn run_spec(spec: &RunSpec, control: &RunControl) -> Result<RunOutcome, RunError> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    run(spec, &|_| {}, control, runtime.handle()).map(|s| s.outcome)
}

fn records(out: &Path) -> Vec<JournalRecord> {
    let mut r = read_journal(&out.join(JOURNAL_FILE)).unwrap().records;
    r.sort_by_key(|r| r.index);
    r
}

fn table(out: &Path) -> ScoreTable {
    let answers: Vec<_> = records(out).iter().map(JournalRecord::to_answer).collect();
    score(&answers, ScoreOptions::default())
}

fn manifest_text(out: &Path) -> String {
    std::fs::read_to_string(out.join(MANIFEST_FILE)).unwrap()
}

fn circular() -> Protocol {
    Protocol {
        circular: true,
        ..Protocol::default()
    }
}

#[test]
fn circular_against_the_oracle_is_right_in_every_rotation() {
    let server = server(oracle());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run_spec(&spec(&server, &out, 24, circular()), &RunControl::new()).unwrap();
    let records = records(&out);
    assert_eq!(records.len(), 24);
    let mut requests_expected = 0;
    for r in &records {
        let n = r.question.options.len();
        assert_eq!(r.rotations.len(), n, "one rotation per option");
        assert_eq!(r.rotations[0].order.len(), n);
        assert_eq!(
            r.rotations[0].order,
            r.question.options.keys().cloned().collect::<String>(),
            "rotation 0 is the original order"
        );
        for rot in &r.rotations {
            assert_eq!(
                rot.original_letter.as_deref(),
                Some(r.correct_answer.as_str())
            );
        }
        assert_eq!(r.gpt_answer.as_deref(), Some(r.correct_answer.as_str()));
        assert_eq!(r.correct, Some(true));
        assert_eq!(r.confidence.as_ref().unwrap().agreement, Some(1.0));
        assert!(
            r.attempts >= n as u32,
            "every rotation's request is counted"
        );
        assert!(r.usage.unwrap().completion_tokens >= n as u64);
        requests_expected += n;
    }
    assert!(server.chat_count() >= requests_expected);
    assert!(manifest_text(&out).contains("\"circular\": true"));
}

#[test]
fn circular_counts_a_first_option_model_wrong_as_mmads_scorer_does() {
    // A model that always picks the first option shown picks a different original
    // option in every rotation: never right in all of them.
    let server = server(Responder::first_option());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run_spec(&spec(&server, &out, 24, circular()), &RunControl::new()).unwrap();
    let records = records(&out);
    for r in &records {
        assert_eq!(r.correct, Some(false), "{}", r.index);
        let first_wrong = r
            .rotations
            .iter()
            .find(|rot| rot.original_letter.as_deref() != Some(r.correct_answer.as_str()))
            .unwrap();
        assert_eq!(r.gpt_answer, first_wrong.original_letter);
        assert_ne!(r.gpt_answer.as_deref(), Some(r.correct_answer.as_str()));
        let n = r.rotations.len() as f64;
        assert_eq!(r.confidence.as_ref().unwrap().agreement, Some(1.0 / n));
    }
    // MMAD's scorer, reading gpt_answer, counts every question wrong.
    let t = table(&out);
    let avg = t.get("Average", "Average").unwrap_or(0.0);
    assert_eq!(avg, 0.0, "{}", t.to_csv());
}

#[test]
fn a_circular_run_stopped_halfway_and_resumed_scores_as_an_uninterrupted_one() {
    let server = server(Responder::random(5));
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    run_spec(&spec(&server, &whole, 30, circular()), &RunControl::new()).unwrap();

    let halves = dir.path().join("halves");
    let control = RunControl::new();
    let asked = std::sync::Arc::new(AtomicUsize::new(0));
    let mut first = spec(&server, &halves, 30, circular());
    let (stop, count) = (control.stop.clone(), asked.clone());
    first.before_question = Some(QuestionHook::new(move |_| {
        if count.fetch_add(1, Ordering::SeqCst) == 12 {
            stop.cancel();
        }
    }));
    assert_eq!(run_spec(&first, &control).unwrap(), RunOutcome::Stopped);
    let partial = records(&halves).len();
    assert!(partial > 0 && partial < 30, "{partial}");

    let mut resume = spec(&server, &halves, 30, circular());
    resume.resume = true;
    assert_eq!(
        run_spec(&resume, &RunControl::new()).unwrap(),
        RunOutcome::Finished
    );
    assert_eq!(table(&halves).to_csv(), table(&whole).to_csv());
    let key = |r: &JournalRecord| {
        (
            r.index,
            r.gpt_answer.clone(),
            r.correct,
            r.rotations.clone(),
        )
    };
    assert_eq!(
        records(&halves).iter().map(key).collect::<Vec<_>>(),
        records(&whole).iter().map(key).collect::<Vec<_>>()
    );
}

#[test]
fn samples_vote_by_majority_reproducibly_and_every_reply_is_kept() {
    let server = server(Responder::random(11));
    let dir = tempfile::tempdir().unwrap();
    let protocol = Protocol {
        samples: 5,
        temperature: Some(1.0),
        seed: Some(40),
        ..Protocol::default()
    };
    let out = dir.path().join("a");
    run_spec(
        &spec(&server, &out, 20, protocol.clone()),
        &RunControl::new(),
    )
    .unwrap();
    let a = records(&out);
    let mut split_votes = 0;
    for r in &a {
        assert_eq!(r.samples.len(), 5);
        let (letter, count) = majority(r.samples.iter().map(|s| s.letter.as_deref())).unwrap();
        assert_eq!(r.gpt_answer.as_deref(), Some(letter.as_str()));
        let first = r
            .samples
            .iter()
            .find(|s| s.letter.as_deref() == Some(&letter));
        assert_eq!(r.raw.as_deref(), first.map(|s| s.raw.as_str()));
        assert_eq!(
            r.confidence.as_ref().unwrap().agreement,
            Some(count as f64 / 5.0)
        );
        assert_eq!(r.correct, Some(letter == r.correct_answer));
        assert!(r.attempts >= 5);
        // One completion token per mock reply: every sample's usage is summed.
        assert!(r.usage.unwrap().completion_tokens >= 5);
        split_votes += usize::from(count < 5);
    }
    assert!(split_votes > 0, "random samples disagree somewhere");
    // Sample i went out with temperature 1 and seed 40 + i.
    let seeds: BTreeMap<u64, usize> = server
        .requests()
        .iter()
        .filter_map(|b| b.get("seed").and_then(|s| s.as_u64()))
        .fold(BTreeMap::new(), |mut m, s| {
            *m.entry(s).or_default() += 1;
            m
        });
    assert_eq!(
        seeds.keys().copied().collect::<Vec<_>>(),
        (40..45).collect::<Vec<_>>()
    );
    assert!(seeds.values().all(|n| *n == 20), "{seeds:?}");
    assert!(
        server
            .requests()
            .iter()
            .filter(|b| b.get("seed").is_some())
            .all(|b| b["temperature"] == 1.0)
    );

    // The same seed gives the same run.
    let again = dir.path().join("b");
    run_spec(&spec(&server, &again, 20, protocol), &RunControl::new()).unwrap();
    let answers = |r: &[JournalRecord]| {
        r.iter()
            .map(|r| (r.gpt_answer.clone(), r.samples.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(answers(&records(&again)), answers(&a));
    let m = manifest_text(&out);
    assert!(m.contains("\"tie_rule\": \"first_seen\""), "{m}");
}

#[test]
fn shuffled_orders_are_the_same_in_shards_and_map_back_to_the_original_letters() {
    let server = server(oracle());
    let dir = tempfile::tempdir().unwrap();
    let protocol = Protocol {
        shuffle_options: Some(9),
        ..Protocol::default()
    };
    let whole = dir.path().join("whole");
    run_spec(
        &spec(&server, &whole, 40, protocol.clone()),
        &RunControl::new(),
    )
    .unwrap();
    let mut orders: BTreeMap<usize, String> = BTreeMap::new();
    for i in 0..2 {
        let out = dir.path().join(format!("shard{i}"));
        let mut s = spec(&server, &out, 40, protocol.clone());
        s.shard = Some(Shard { index: i, count: 2 });
        run_spec(&s, &RunControl::new()).unwrap();
        for r in records(&out) {
            orders.insert(r.index, r.rotations[0].order.clone());
        }
    }
    // Merged, the shards are the unsharded run, protocol and all.
    let merged = dir.path().join("merged");
    echo_workbench::runs::merge::merge_dirs(
        &[dir.path().join("shard0"), dir.path().join("shard1")],
        &merged,
        false,
    )
    .unwrap();
    assert_eq!(table(&merged).to_csv(), table(&whole).to_csv());
    let m: RunManifest = serde_json::from_str(&manifest_text(&merged)).unwrap();
    assert_eq!(m.protocol.and_then(|p| p.shuffle_options), Some(9));
    let whole_records = records(&whole);
    assert_eq!(
        whole_records
            .iter()
            .map(|r| (r.index, r.rotations[0].order.clone()))
            .collect::<BTreeMap<_, _>>(),
        orders
    );
    let mut moved = 0;
    for r in &whole_records {
        assert_eq!(r.rotations.len(), 1);
        let rot = &r.rotations[0];
        let original: String = r.question.options.keys().cloned().collect();
        moved += usize::from(rot.order != original);
        // The oracle answers the shown letter of the right text; mapped back, it is
        // the original right letter.
        assert_eq!(r.gpt_answer.as_deref(), Some(r.correct_answer.as_str()));
        assert_eq!(
            rot.original_letter.as_deref(),
            Some(r.correct_answer.as_str())
        );
        assert_eq!(r.correct, Some(true));
    }
    assert!(
        moved > 10,
        "most questions are shown in another order ({moved})"
    );
}

#[test]
fn logprobs_give_letter_probabilities_in_the_original_letters() {
    let server = server(oracle());
    let dir = tempfile::tempdir().unwrap();
    let protocol = Protocol {
        logprobs: true,
        shuffle_options: Some(3),
        ..Protocol::default()
    };
    let out = dir.path().join("run");
    run_spec(&spec(&server, &out, 20, protocol), &RunControl::new()).unwrap();
    for r in records(&out) {
        let probs = r.confidence.as_ref().unwrap().letter_probs.clone().unwrap();
        assert_eq!(
            probs.keys().collect::<Vec<_>>(),
            r.question.options.keys().collect::<Vec<_>>()
        );
        let total: f64 = probs.values().sum();
        assert!((total - 1.0).abs() < 1e-9);
        let best = probs
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(l, _)| l.clone());
        assert_eq!(
            best, r.gpt_answer,
            "the mock puts the most mass on its answer"
        );
        assert_eq!(r.confidence.as_ref().unwrap().agreement, None);
    }
    assert!(
        server
            .requests()
            .iter()
            .any(|b| b["logprobs"] == true && b["top_logprobs"] == 20)
    );
}

#[test]
fn a_plain_run_records_no_protocol_and_a_resume_under_another_is_refused() {
    let server = server(oracle());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut plain = spec(&server, &out, 6, Protocol::default());
    run_spec(&plain, &RunControl::new()).unwrap();
    let manifest: RunManifest = serde_json::from_str(&manifest_text(&out)).unwrap();
    assert!(!manifest_text(&out).contains("\"protocol\""));
    assert_eq!(manifest.protocol, None);

    let mut other = spec(&server, &out, 6, circular());
    other.resume = true;
    match run_spec(&other, &RunControl::new()) {
        Err(RunError::SettingsDiffer { differences, .. }) => {
            assert_eq!(differences, ["test-time protocol"]);
        }
        r => panic!("expected a refusal, got {r:?}"),
    }
    other.force = true;
    run_spec(&other, &RunControl::new()).unwrap();
    let forced: RunManifest = serde_json::from_str(&manifest_text(&out)).unwrap();
    assert_ne!(forced.fingerprint(), manifest.fingerprint());
    assert!(forced.protocol.unwrap().circular);
    plain.resume = true;
    plain.force = false;
    assert!(matches!(
        run_spec(&plain, &RunControl::new()),
        Err(RunError::SettingsDiffer { .. })
    ));
}

#[test]
fn the_run_command_takes_the_protocol_flags_and_refuses_nonsense() {
    let server = server(oracle());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let base = |extra: &[&str]| {
        let mut cmd = crate::common::bin_with_scratch_home();
        cmd.arg("run")
            .arg("--dataset")
            .arg(repo("assets/sample/mmad.json"))
            .arg("--knowledge")
            .arg(repo("assets/sample/domain_knowledge.json"))
            .args([
                "--endpoint",
                &server.url(),
                "--model",
                "mock-vl",
                "--limit",
                "6",
            ])
            .arg("--out")
            .arg(&out)
            .args(extra);
        cmd
    };
    for (args, flag) in [
        (&["--samples", "0"][..], "--samples"),
        (&["--samples", "3"][..], "--temperature"),
        (&["--temperature=-0.5"][..], "--temperature"),
        (
            &["--circular", "--samples", "3", "--temperature", "1"][..],
            "--circular",
        ),
    ] {
        let output = base(args).output().unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(
            !out.exists(),
            "nothing is created before the flags are checked"
        );
    }
    let output = base(&["--circular", "--logprobs"]).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let r = records(&out);
    assert_eq!(r.len(), 6);
    assert!(
        r.iter()
            .all(|r| r.correct == Some(true) && !r.rotations.is_empty())
    );
}
