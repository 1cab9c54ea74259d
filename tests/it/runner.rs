//! The `run` command as a user drives it, against the mock server in this process:
//! killed at random moments and resumed, through injected server faults, two runs
//! on one folder, resumes under changed settings, shards, and retrying errors.
//! Every scenario checks that each selected question ends up in the journal
//! exactly once, and that the answers equal those of an uninterrupted run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use echo_workbench::dataset::{DatasetRoot, MmadDataset};
use echo_workbench::mllm::mock::{Fault, FaultPlan, MockConfig, MockServer, Oracle, Responder};
use echo_workbench::runs::journal::{JOURNAL_FILE, JournalRecord, read_journal};
use echo_workbench::runs::manifest::RunManifest;
use echo_workbench::score::{ScoreOptions, ScoreTable, score};

use crate::common::repo;

const SAMPLE_QUESTIONS: usize = 210;

/// The sample's answer key, so that every question has its own right letter and an
/// answer filed under the wrong question shows as a wrong answer.
fn oracle() -> Responder {
    static ORACLE: OnceLock<Oracle> = OnceLock::new();
    let oracle = ORACLE.get_or_init(|| {
        let dataset = MmadDataset::load(&repo("assets/sample/mmad.json")).unwrap();
        Oracle::from_mmad(&dataset, Some(&DatasetRoot::new(repo("assets/sample"))))
    });
    Responder::oracle(oracle.clone())
}

fn server(latency_ms: u64, faults: FaultPlan) -> MockServer {
    MockServer::start(MockConfig {
        latency: Duration::from_millis(latency_ms),
        faults,
        responder: oracle(),
        record_limit: 0,
        ..MockConfig::default()
    })
    .unwrap()
}

/// `echo-workbench run` on the sample dataset against `url`, into `out`.
fn run_cmd(url: &str, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("echo-workbench"));
    cmd.arg("run")
        .arg("--dataset")
        .arg(repo("assets/sample/mmad.json"))
        .arg("--knowledge")
        .arg(repo("assets/sample/domain_knowledge.json"))
        .args(["--endpoint", url, "--model", "mock-vl", "--out"])
        .arg(out)
        .args(extra)
        .stdin(Stdio::null());
    if !extra.contains(&"--progress-every-s") {
        cmd.args(["--progress-every-s", "60"]);
    }
    cmd
}

fn run_to_end(url: &str, out: &Path, extra: &[&str]) -> Output {
    let output = run_cmd(url, out, extra).output().unwrap();
    assert!(
        output.status.success(),
        "run {extra:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn records(out: &Path) -> Vec<JournalRecord> {
    let contents = read_journal(&out.join(JOURNAL_FILE)).unwrap();
    assert!(
        !contents.torn_last_line,
        "a finished run leaves whole lines"
    );
    contents.records
}

/// Every index of `expected` exactly once, nothing else.
fn assert_exactly_once(records: &[JournalRecord], expected: &BTreeSet<usize>) {
    let mut seen = BTreeSet::new();
    for r in records {
        assert!(seen.insert(r.index), "index {} recorded twice", r.index);
    }
    assert_eq!(
        &seen, expected,
        "recorded questions differ from the selection"
    );
}

fn answers(records: &[JournalRecord]) -> BTreeMap<usize, Option<String>> {
    records
        .iter()
        .map(|r| (r.index, r.gpt_answer.clone()))
        .collect()
}

/// MMAD's table over the ok records in file order, as `score` computes it.
fn table(records: &[JournalRecord]) -> ScoreTable {
    let mut ok: Vec<&JournalRecord> = records.iter().filter(|r| r.is_ok()).collect();
    ok.sort_by_key(|r| r.index);
    let scored: Vec<_> = ok.iter().map(|r| r.to_answer()).collect();
    score(&scored, ScoreOptions::default())
}

fn all_questions() -> BTreeSet<usize> {
    (0..SAMPLE_QUESTIONS).collect()
}

/// An uninterrupted run of the whole sample against a healthy server.
fn baseline() -> &'static Vec<JournalRecord> {
    static BASELINE: OnceLock<Vec<JournalRecord>> = OnceLock::new();
    BASELINE.get_or_init(|| {
        let server = server(2, FaultPlan::none());
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("baseline");
        run_to_end(&server.url(), &out, &["--concurrency", "8"]);
        let recs = records(&out);
        assert_exactly_once(&recs, &all_questions());
        assert!(recs.iter().all(JournalRecord::is_ok));
        let wrong: Vec<usize> = recs
            .iter()
            .filter(|r| r.gpt_answer.as_deref() != Some(r.correct_answer.as_str()))
            .map(|r| r.index)
            .collect();
        assert!(wrong.is_empty(), "the oracle got questions {wrong:?} wrong");
        recs
    })
}

fn assert_same_answers_as_baseline(recs: &[JournalRecord]) {
    assert_exactly_once(recs, &all_questions());
    assert!(recs.iter().all(JournalRecord::is_ok), "error records left");
    assert_eq!(answers(recs), answers(baseline()));
    assert_eq!(table(recs), table(baseline()));
}

#[test]
fn killed_at_random_moments_and_resumed_it_answers_each_question_once() {
    let base = baseline();
    let server = server(20, FaultPlan::none());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut rng = fastrand::Rng::with_seed(20261122);
    let mut progress = Vec::new();
    for _ in 0..6 {
        let mut child = run_cmd(&server.url(), &out, &["--resume", "--concurrency", "4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill once this run has recorded something, at a random moment after it.
        let before = progress.last().copied().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while journal_len(&out) <= before && Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.u64(0..400)));
        // SIGKILL: no chance to clean up, the lock and the journal must cope.
        let _ = child.kill();
        child.wait().unwrap();
        let contents = read_journal(&out.join(JOURNAL_FILE)).unwrap();
        let mut seen = BTreeSet::new();
        assert!(contents.records.iter().all(|r| seen.insert(r.index)));
        progress.push(contents.records.len());
    }
    assert!(
        progress.iter().any(|&n| n > 0 && n < SAMPLE_QUESTIONS),
        "no kill landed mid-run: {progress:?}"
    );
    // A write cut short by a kill leaves an unterminated line; resuming cuts it.
    let mut journal = std::fs::OpenOptions::new()
        .append(true)
        .open(out.join(JOURNAL_FILE))
        .unwrap();
    journal
        .write_all(br#"{"image":"Sample/washer/test/good/000.png","question":{"ty"#)
        .unwrap();
    drop(journal);
    for _ in 0..3 {
        let status = run_cmd(&server.url(), &out, &["--resume", "--concurrency", "4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        if status.success() {
            break;
        }
    }
    let recs = records(&out);
    assert_same_answers_as_baseline(&recs);
    assert_eq!(table(&recs), table(base));
}

/// Records in the journal so far (a torn last line not counted).
fn journal_len(out: &Path) -> usize {
    read_journal(&out.join(JOURNAL_FILE)).map_or(0, |c| c.records.len())
}

#[test]
fn ctrl_c_keeps_the_answers_in_flight_and_exits_130() {
    baseline();
    let server = server(400, FaultPlan::none());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let child = run_cmd(&server.url(), &out, &["--concurrency", "6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while journal_len(&out) < 6 {
        assert!(Instant::now() < deadline, "the run never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Mid-wave: six requests are at the server.
    std::thread::sleep(Duration::from_millis(200));
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("stopping: finishing the questions in flight"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("continue with --resume"), "{stdout}");
    // Every request the server saw was answered and recorded: none were in flight
    // when the run ended, none were dropped.
    let recs = records(&out);
    assert_eq!(
        recs.len(),
        server.chat_count(),
        "answers in flight were lost"
    );
    assert!(
        recs.len() < SAMPLE_QUESTIONS,
        "the run was not stopped early"
    );
    assert!(recs.iter().all(JournalRecord::is_ok));
    // And the stopped run finishes on resume, each question once.
    run_to_end(&server_fast().url(), &out, &["--resume"]);
    assert_same_answers_as_baseline(&records(&out));
}

fn server_fast() -> MockServer {
    server(1, FaultPlan::none())
}

#[test]
fn two_endpoints_share_the_run_and_image_affinity_keeps_an_image_on_one() {
    baseline();
    let (a, b) = (server(5, FaultPlan::none()), server(5, FaultPlan::none()));
    let dir = tempfile::tempdir().unwrap();
    let b_url = b.url();
    for affinity in [false, true] {
        let out = dir.path().join(format!("run-{affinity}"));
        let mut flags = vec!["--endpoint", b_url.as_str(), "--concurrency", "3"];
        if affinity {
            flags.push("--image-affinity");
        }
        let (a0, b0) = (a.chat_count(), b.chat_count());
        run_to_end(&a.url(), &out, &flags);
        let recs = records(&out);
        assert_same_answers_as_baseline(&recs);
        let (sent_a, sent_b) = (a.chat_count() - a0, b.chat_count() - b0);
        assert_eq!(sent_a + sent_b, SAMPLE_QUESTIONS);
        assert!(
            sent_a > 30 && sent_b > 30,
            "one endpoint idled: {sent_a} vs {sent_b}"
        );
        let names: BTreeSet<&str> = recs.iter().map(|r| r.endpoint.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let manifest = RunManifest::load(&out.join("manifest.json")).unwrap();
        assert_eq!(manifest.endpoints.len(), 2);
        let mut owner: HashMap<&str, &str> = HashMap::new();
        let mut split = 0;
        for r in &recs {
            if *owner.entry(&r.image).or_insert(&r.endpoint) != r.endpoint {
                split += 1;
            }
        }
        if affinity {
            assert_eq!(split, 0, "an image's questions went to both endpoints");
        }
    }
}

#[test]
fn without_a_terminal_progress_comes_as_plain_lines() {
    let server = server(20, FaultPlan::none());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let output = run_cmd(
        &server.url(),
        &out,
        &[
            "--limit",
            "40",
            "--concurrency",
            "2",
            "--progress-every-s",
            "0.1",
        ],
    )
    .output()
    .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("run folder {}: 40 questions", out.display())),
        "{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(" done, ")).collect();
    assert!(lines.len() >= 2, "{stderr}");
    // `N/40 done, E errors, R questions/s, ETA T, accuracy A%, K in flight`; a line
    // before the first answer (a slow machine) has no accuracy yet.
    let progress = regex::Regex::new(
        r"^(\d+)/40 done, 0 errors, \d+\.\d questions/s(, ETA \d+ s)?(, accuracy 100\.0%)?, \d+ in flight$",
    )
    .unwrap();
    for line in &lines {
        let caps = progress.captures(line).unwrap_or_else(|| panic!("{line}"));
        let done: usize = caps[1].parse().unwrap();
        assert_eq!(caps.get(3).is_some(), done > 0, "{line}");
    }
    assert!(lines.iter().any(|l| l.contains(", ETA ")), "{stderr}");
    // No terminal: no bar's control characters.
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("answered 40, errors 0"), "{stdout}");
    assert!(stdout.contains("accuracy 100.00%"), "{stdout}");
}

#[test]
fn faults_at_thirty_percent_are_all_answered_after_one_retry_pass() {
    const LIMIT: usize = 80;
    const MAX_RETRIES: u32 = 4;
    let faults = FaultPlan::random(
        vec![
            (Fault::Http500, 0.075),
            (
                Fault::Http429 {
                    retry_after_s: None,
                },
                0.075,
            ),
            (Fault::Garbage, 0.075),
            (Fault::Hang, 0.075),
        ],
        5,
    );
    let server = server(2, faults);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let max_retries = MAX_RETRIES.to_string();
    let limit = LIMIT.to_string();
    let flags = [
        "--limit",
        &limit,
        "--concurrency",
        "8",
        "--timeout-s",
        "1",
        "--max-retries",
        &max_retries,
        "--retry-base-ms",
        "2",
    ];
    run_to_end(&server.url(), &out, &flags);
    let first = records(&out);
    let selection: BTreeSet<usize> = (0..LIMIT).collect();
    assert_exactly_once(&first, &selection);
    // Every try is counted in some record: at least every request the server saw
    // (one model call per question under the echo preset). A try that timed out
    // before the server read it counts too, so under load there may be more.
    let tries: u32 = first.iter().map(|r| r.attempts).sum();
    assert!(
        tries as usize >= server.chat_count(),
        "{tries} tries recorded, {} requests served",
        server.chat_count()
    );
    // A question fails only once every try allowed failed: a gateway's HTML 200
    // is retried like a 5xx, not an error on the first sight of it.
    for r in first.iter().filter(|r| !r.is_ok()) {
        assert_eq!(
            r.attempts,
            MAX_RETRIES + 1,
            "question {} gave up early: {:?}",
            r.index,
            r.error
        );
    }
    assert!(first.iter().any(|r| r.is_ok() && r.attempts > 1));

    if first.iter().any(|r| !r.is_ok()) {
        let mut retry_flags = flags.to_vec();
        retry_flags.extend(["--resume", "--retry-errors"]);
        run_to_end(&server.url(), &out, &retry_flags);
    }
    let last = records(&out);
    assert_exactly_once(&last, &selection);
    let unanswered: Vec<(usize, Option<&String>)> = last
        .iter()
        .filter(|r| !r.is_ok())
        .map(|r| (r.index, r.error.as_ref()))
        .collect();
    assert!(unanswered.is_empty(), "{unanswered:?}");
    // The oracle knows every answer: faults must not have mixed any up.
    assert!(
        last.iter()
            .all(|r| r.gpt_answer.as_deref() == Some(r.correct_answer.as_str()))
    );
}

#[test]
fn a_second_run_on_a_busy_folder_is_refused_and_a_killed_run_leaves_no_lock() {
    let slow = server(300, FaultPlan::none());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut first = run_cmd(&slow.url(), &out, &["--concurrency", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !out.join("manifest.json").is_file() {
        assert!(Instant::now() < deadline, "the first run never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = run_cmd(&slow.url(), &out, &["--resume"]).output().unwrap();
    let _ = first.kill();
    first.wait().unwrap();
    assert_eq!(second.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!(
            "run folder {} is in use by another run (pid {})",
            out.display(),
            first.id()
        )),
        "{stderr}"
    );
    // The OS dropped the killed run's lock: a resume goes through.
    let fast = server(1, FaultPlan::none());
    run_to_end(&fast.url(), &out, &["--resume"]);
    assert_exactly_once(&records(&out), &all_questions());
}

#[test]
fn resume_under_other_settings_needs_force_and_a_used_folder_needs_resume() {
    let server = server(1, FaultPlan::none());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run_to_end(&server.url(), &out, &["--limit", "20"]);

    let again = run_cmd(&server.url(), &out, &["--limit", "20"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("already holds a run (20 records"),
        "{stderr}"
    );

    let changed = ["--resume", "--limit", "30", "--preset", "mmad"];
    let refused = run_cmd(&server.url(), &out, &changed).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("different settings")
            && stderr.contains("question selection")
            && stderr.contains("pipeline settings")
            && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(records(&out).len(), 20, "a refused resume writes nothing");

    let mut forced = changed.to_vec();
    forced.push("--force");
    run_to_end(&server.url(), &out, &forced);
    assert_exactly_once(&records(&out), &(0..30).collect());
    let manifest = RunManifest::load(&out.join("manifest.json")).unwrap();
    assert_eq!(manifest.pipeline.preset, "mmad");
    assert_eq!(manifest.selection.limit, Some(30));
}

#[test]
fn shards_partition_the_unsharded_selection_by_image() {
    let server = server(1, FaultPlan::none());
    let dir = tempfile::tempdir().unwrap();
    let select = ["--types", "AD,DC,OC", "--limit", "70"];
    let whole_dir = dir.path().join("whole");
    run_to_end(&server.url(), &whole_dir, &select);
    let whole: BTreeSet<usize> = records(&whole_dir).iter().map(|r| r.index).collect();
    assert_eq!(whole.len(), 70);

    let mut union = BTreeSet::new();
    let mut image_shard: HashMap<String, usize> = HashMap::new();
    for i in 0..3 {
        let out = dir.path().join(format!("shard{i}"));
        let shard = format!("{i}/3");
        let mut flags = select.to_vec();
        flags.extend(["--shard", &shard]);
        run_to_end(&server.url(), &out, &flags);
        let recs = records(&out);
        assert!(!recs.is_empty(), "shard {shard} is empty");
        for r in &recs {
            assert!(union.insert(r.index), "question {} in two shards", r.index);
            let owner = *image_shard.entry(r.image.clone()).or_insert(i);
            assert_eq!(owner, i, "image {} split across shards", r.image);
        }
        let manifest = RunManifest::load(&out.join("manifest.json")).unwrap();
        let s = manifest.shard.unwrap();
        assert_eq!((s.index, s.count), (i as u32, 3));
        assert_eq!(manifest.question_count, recs.len());
    }
    assert_eq!(union, whole);
}

/// `--shard auto` as a job scheduler starts it: four processes, each with only its
/// scheduler's variables (two as Slurm array tasks, two as Kubernetes Indexed Job
/// pods), then `merge`: the merged run answers and scores as the unsharded one.
#[test]
fn four_scheduled_shards_merge_into_the_unsharded_run() {
    let server = server(1, FaultPlan::none());
    let dir = tempfile::tempdir().unwrap();
    let whole_dir = dir.path().join("whole");
    run_to_end(&server.url(), &whole_dir, &[]);

    let scheduler_vars = [
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_ARRAY_JOB_ID",
        "SLURMD_NODENAME",
        "JOB_COMPLETION_INDEX",
        "ECHO_SHARD_COUNT",
    ];
    let mut children = Vec::new();
    let mut shard_dirs = Vec::new();
    for task in 0..4u32 {
        let out = dir.path().join(format!("shard-{task}"));
        let mut cmd = run_cmd(&server.url(), &out, &["--shard", "auto"]);
        for var in scheduler_vars {
            cmd.env_remove(var);
        }
        if task < 2 {
            // sbatch --array=1-4: tasks 1 and 2 of a job array starting at 1.
            cmd.env("SLURM_ARRAY_TASK_ID", (task + 1).to_string())
                .env("SLURM_ARRAY_TASK_MIN", "1")
                .env("SLURM_ARRAY_TASK_COUNT", "4")
                .env("SLURM_ARRAY_JOB_ID", "4242")
                .env("SLURMD_NODENAME", format!("node{task}"));
        } else {
            cmd.env("JOB_COMPLETION_INDEX", task.to_string())
                .env("ECHO_SHARD_COUNT", "4")
                .env("HOSTNAME", format!("mmad-{task}-pod"));
        }
        children.push(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        shard_dirs.push(out);
    }
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for (task, out) in shard_dirs.iter().enumerate() {
        let manifest = RunManifest::load(&out.join("manifest.json")).unwrap();
        let shard = manifest.shard.unwrap();
        assert_eq!((shard.index, shard.count), (task as u32, 4));
        let placement = manifest.placement.unwrap();
        if task < 2 {
            assert_eq!(placement.scheduler, "slurm");
            assert_eq!(placement.host, format!("node{task}"));
            assert_eq!(placement.job.as_deref(), Some("4242"));
        } else {
            assert_eq!(placement.scheduler, "kubernetes");
            assert_eq!(placement.host, format!("mmad-{task}-pod"));
        }
    }

    let merged = dir.path().join("merged");
    let status = Command::new(assert_cmd::cargo::cargo_bin("echo-workbench"))
        .arg("merge")
        .args(&shard_dirs)
        .arg("--out")
        .arg(&merged)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let whole = records(&whole_dir);
    let joined = records(&merged);
    assert_exactly_once(&joined, &(0..SAMPLE_QUESTIONS).collect());
    assert_eq!(answers(&joined), answers(&whole));
    // In dataset order, as `score` reads a run folder (journals are in finish order).
    let score_csv = |out: &Path| {
        echo_workbench::runs::run_folder::RunFolder::open(out)
            .unwrap()
            .score(ScoreOptions::default())
            .to_csv()
    };
    assert_eq!(score_csv(&merged), score_csv(&whole_dir));
    let merged_manifest = RunManifest::load(&merged.join("manifest.json")).unwrap();
    assert_eq!(merged_manifest.shard, None);
}

#[test]
fn retry_errors_rewrites_the_journal_without_them_and_never_duplicates() {
    let failing = server(1, FaultPlan::script(vec![Fault::Status(400); 12]));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let flags = ["--limit", "40", "--concurrency", "2"];
    run_to_end(&failing.url(), &out, &flags);
    let before = records(&out);
    assert_exactly_once(&before, &(0..40).collect());
    let failed: BTreeSet<usize> = before
        .iter()
        .filter(|r| !r.is_ok())
        .map(|r| r.index)
        .collect();
    assert_eq!(failed.len(), 12);
    let kept_lines: Vec<String> = std::fs::read_to_string(out.join(JOURNAL_FILE))
        .unwrap()
        .lines()
        .filter(|l| l.contains(r#""status":"ok""#))
        .map(str::to_string)
        .collect();

    let healthy = server(1, FaultPlan::none());
    let mut retry = flags.to_vec();
    retry.push("--retry-errors");
    let output = run_to_end(&healthy.url(), &out, &retry);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("answered 40, errors 0"), "{stdout}");
    let after = records(&out);
    assert_exactly_once(&after, &(0..40).collect());
    assert!(after.iter().all(JournalRecord::is_ok));
    // The ok lines survive byte for byte, first; the retried ones follow.
    let text = std::fs::read_to_string(out.join(JOURNAL_FILE)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..kept_lines.len()], kept_lines[..]);
    let retried: BTreeSet<usize> = after[kept_lines.len()..].iter().map(|r| r.index).collect();
    assert_eq!(retried, failed);
}

/// A workspace whose settings.toml names `url` as its active endpoint (second of
/// two), the sample dataset and the sample's knowledge, as the app saves it.
fn app_workspace(url: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = echo_workbench::config::Settings {
        knowledge: Some(repo("assets/sample/domain_knowledge.json")),
        ..Default::default()
    };
    settings.endpoints = vec![
        echo_workbench::mllm::EndpointConfig {
            name: "unused".into(),
            base_url: "http://127.0.0.1:9/v1".into(),
            ..Default::default()
        },
        echo_workbench::mllm::EndpointConfig {
            name: "vision box".into(),
            base_url: url.into(),
            model: "served-vl".into(),
            max_in_flight: 3,
            ..Default::default()
        },
    ];
    settings.active_endpoint = 1;
    settings.pipeline.preset = "mmad".into();
    settings
        .save(&echo_workbench::config::Settings::path_in(dir.path()))
        .unwrap();
    dir
}

fn bare_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("echo-workbench"));
    cmd.args(args).stdin(Stdio::null());
    cmd
}

#[test]
fn run_probe_and_inspect_take_what_the_flags_leave_out_from_the_apps_settings() {
    let server = server(1, FaultPlan::none());
    let ws = app_workspace(&server.url());
    let ws_arg = ws.path().to_str().unwrap();
    let out = ws.path().join("run");
    let output = bare_cmd(&["run", "--workspace", ws_arg, "--limit", "6", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("settings: "), "{stderr}");
    let manifest = RunManifest::load(&out.join("manifest.json")).unwrap();
    let e = &manifest.endpoints[..];
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].name.as_str(), e[0].model.as_str(), e[0].concurrency),
        ("vision box", "served-vl", 3)
    );
    assert_eq!(manifest.pipeline.preset, "mmad");
    assert_eq!(
        manifest.knowledge.unwrap().path,
        repo("assets/sample/domain_knowledge.json")
    );
    assert_eq!(manifest.question_count, 6);
    assert_eq!(server.chat_count(), 6);
    // A flag still wins over the settings.
    let out2 = ws.path().join("run2");
    let output = bare_cmd(&[
        "run",
        "--workspace",
        ws_arg,
        "--limit",
        "2",
        "--preset",
        "echo",
        "--model",
        "other",
        "--out",
    ])
    .arg(&out2)
    .output()
    .unwrap();
    assert!(output.status.success());
    let manifest = RunManifest::load(&out2.join("manifest.json")).unwrap();
    assert_eq!(manifest.pipeline.preset, "echo");
    assert_eq!(manifest.endpoints[0].model, "other");

    let probe = bare_cmd(&["probe", "--workspace", ws_arg])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&probe.stdout);
    assert!(stdout.contains("two images: yes"), "{stdout}");

    let before = server.chat_count();
    let inspect = bare_cmd(&["inspect", "--workspace", ws_arg])
        .arg(repo("assets/sample/Sample/washer/test/notch/001.png"))
        .args(["--question", "Is there any defect in the object?"])
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    assert_eq!(
        server.chat_count(),
        before + 1,
        "inspect did not ask the settings' endpoint"
    );

    // Asked for, the settings must be there; without them the flags are required.
    let missing = bare_cmd(&["probe", "--workspace"])
        .arg(ws.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no settings file at"));
    let bare = bare_cmd(&["run", "--out"])
        .arg(ws.path().join("r3"))
        .output()
        .unwrap();
    assert_eq!(bare.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bare.stderr)
            .contains("--endpoint URL and --model M are required (or --workspace"),
        "{}",
        String::from_utf8_lossy(&bare.stderr)
    );
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A failure with a message, not a panic (Rust's panics exit with 101).
fn assert_refused(output: &Output) -> String {
    let err = stderr(output);
    assert!(!output.status.success(), "succeeded: {err}");
    assert_ne!(output.status.code(), Some(101), "panicked: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[cfg(unix)]
#[test]
fn a_dataset_and_knowledge_under_a_non_utf8_name_run_resume_and_score() {
    use std::os::unix::ffi::OsStrExt;
    let server = server(1, FaultPlan::none());
    let dir = tempfile::tempdir().unwrap();
    let odd = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9 data"));
    std::fs::create_dir_all(&odd).unwrap();
    let dataset = odd.join("mmad.json");
    std::fs::copy(repo("assets/sample/mmad.json"), &dataset).unwrap();
    let knowledge = odd.join(std::ffi::OsStr::from_bytes(b"kn\xf6wledge.json"));
    std::fs::copy(repo("assets/sample/domain_knowledge.json"), &knowledge).unwrap();
    let out = dir.path().join("run");
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("echo-workbench"));
        cmd.arg("run")
            .arg("--dataset")
            .arg(&dataset)
            .arg("--root")
            .arg(repo("assets/sample"))
            .arg("--knowledge")
            .arg(&knowledge)
            .args(["--endpoint", &server.url(), "--model", "mock-vl"])
            .args(["--progress-every-s", "60", "--out"])
            .arg(&out)
            .args(extra)
            .stdin(Stdio::null());
        cmd.output().unwrap()
    };
    let output = run(&["--limit", "3"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(text.contains("\"unix_bytes_hex\""), "{text}");
    let manifest = RunManifest::load(&out.join("manifest.json")).unwrap();
    assert_eq!(manifest.dataset.path, dataset.canonicalize().unwrap());
    assert_eq!(
        manifest.knowledge.unwrap().path,
        knowledge.canonicalize().unwrap()
    );
    assert_eq!(records(&out).len(), 3);
    // The manifest reads back as the same settings, so the run resumes (with
    // nothing left to ask) instead of calling them different.
    let output = run(&["--limit", "3", "--resume"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_exactly_once(&records(&out), &(0..3).collect());
    let score = bare_cmd(&["score"]).arg(&out).output().unwrap();
    assert!(score.status.success(), "{}", stderr(&score));
}

#[test]
fn an_absurd_concurrency_is_refused_naming_the_flag_or_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let output = run_cmd(
        "http://127.0.0.1:9/v1",
        &out,
        &["--concurrency", "4000000000000000000"],
    )
    .output()
    .unwrap();
    let err = assert_refused(&output);
    assert!(
        err.contains("--concurrency") && err.contains("between 1 and 1024"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is created for a refused run");

    // The same number in the app's settings file.
    let ws = app_workspace("http://127.0.0.1:9/v1");
    let settings_path = echo_workbench::config::Settings::path_in(ws.path());
    let mut settings = echo_workbench::config::Settings::load(&settings_path).unwrap();
    settings.endpoints[1].max_in_flight = 4_000_000_000_000_000_000;
    settings.save(&settings_path).unwrap();
    let output = bare_cmd(&["run", "--workspace"])
        .arg(ws.path())
        .args(["--limit", "2", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = assert_refused(&output);
    assert!(
        err.contains("max_in_flight = 4000000000000000000")
            && err.contains("settings.toml")
            && err.contains("between 1 and 1024"),
        "{err}"
    );
    assert!(!out.exists());
    // Commands that ask one endpoint refuse it too.
    let output = bare_cmd(&["inspect", "--workspace"])
        .arg(ws.path())
        .arg(repo("assets/sample/Sample/washer/test/notch/001.png"))
        .args(["--question", "Is there any defect in the object?"])
        .output()
        .unwrap();
    let err = assert_refused(&output);
    assert!(err.contains("max_in_flight"), "{err}");
}

#[cfg(unix)]
#[test]
fn a_symlinked_journal_or_manifest_is_refused_and_what_it_points_at_kept() {
    let server = server(1, FaultPlan::none());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run_to_end(&server.url(), &out, &["--limit", "4"]);

    // The journal, linked to a file of the user's that happens to hold an error record.
    let mut recs = records(&out);
    recs[1].status = echo_workbench::runs::journal::RecordStatus::Error;
    recs[1].gpt_answer = None;
    recs[1].error = Some("HTTP 500".into());
    let mut text = String::new();
    for r in &recs {
        text.push_str(&serde_json::to_string(r).unwrap());
        text.push('\n');
    }
    let victim = dir.path().join("precious.jsonl");
    std::fs::write(&victim, &text).unwrap();
    std::fs::remove_file(out.join(JOURNAL_FILE)).unwrap();
    std::os::unix::fs::symlink(&victim, out.join(JOURNAL_FILE)).unwrap();
    for flags in [
        &["--limit", "4", "--resume"][..],
        &["--limit", "4", "--retry-errors"][..],
        &["--limit", "4", "--resume", "--retry-errors"][..],
    ] {
        let output = run_cmd(&server.url(), &out, flags).output().unwrap();
        let err = assert_refused(&output);
        assert!(err.contains("symlink"), "{flags:?}: {err}");
        assert!(
            std::fs::read_to_string(&victim).unwrap() == text,
            "{flags:?}: the file the journal links to was rewritten"
        );
        assert!(
            std::fs::symlink_metadata(out.join(JOURNAL_FILE))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    // The manifest, linked to a copy kept elsewhere.
    std::fs::remove_file(out.join(JOURNAL_FILE)).unwrap();
    std::fs::write(out.join(JOURNAL_FILE), &text).unwrap();
    let kept = dir.path().join("kept-manifest.json");
    std::fs::rename(out.join("manifest.json"), &kept).unwrap();
    std::os::unix::fs::symlink(&kept, out.join("manifest.json")).unwrap();
    let before = std::fs::read(&kept).unwrap();
    let output = run_cmd(&server.url(), &out, &["--limit", "4", "--retry-errors"])
        .output()
        .unwrap();
    let err = assert_refused(&output);
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(std::fs::read(&kept).unwrap(), before);
    // Nothing in the folder was rewritten either.
    assert_eq!(
        std::fs::read_to_string(out.join(JOURNAL_FILE)).unwrap(),
        text
    );
}

/// The bundled sample's knowledge base with `drop` left out, written into `dir`.
fn knowledge_without(dir: &Path, drop: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo("assets/sample/domain_knowledge.json")).unwrap();
    let mut kb: serde_json::Value = serde_json::from_str(&text).unwrap();
    kb["Sample"].as_object_mut().unwrap().remove(drop).unwrap();
    let path = dir.join(format!("without-{drop}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&kb).unwrap()).unwrap();
    path
}

#[test]
fn knowledge_missing_for_a_category_is_refused_before_asking_unless_allowed() {
    let server = server(1, FaultPlan::none());
    let dir = tempfile::tempdir().unwrap();
    // Echo's preset reads the condensed file for Defect Classification and
    // Description; this one has no `chip`, the knowledge base (the sample's) has.
    let condensed = knowledge_without(dir.path(), "chip");
    let condensed_arg = condensed.to_str().unwrap();
    let out = dir.path().join("run");
    let refused = run_cmd(&server.url(), &out, &["--condensed", condensed_arg])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("18 of the 210 questions to ask would run without an input"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "the condensed knowledge has no category `chip` (dataset `Sample`) (condensed mode reads it): 18 questions (Defect Classification, Defect Description)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("--condensed FILE")
            && stderr.contains("--knowledge-mode category (the knowledge base has this category)")
            && stderr.contains("--allow-missing-knowledge"),
        "{stderr}"
    );
    assert_eq!(server.chat_count(), 0, "a refused run asks nothing");
    assert!(
        !out.join(JOURNAL_FILE).exists() && !out.join("manifest.json").exists(),
        "a refused run writes nothing"
    );

    // Allowed: it runs, and the manifest, the summary and the report say how many
    // questions ran without.
    let output = run_to_end(
        &server.url(),
        &out,
        &["--condensed", condensed_arg, "--allow-missing-knowledge"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("18 questions of 210 without an input their plan reads"),
        "{stdout}"
    );
    assert_exactly_once(&records(&out), &all_questions());
    let manifest = RunManifest::load(&out.join("manifest.json")).unwrap();
    let missing = manifest.missing_inputs.as_ref().unwrap();
    assert_eq!(missing.questions, 18);
    assert_eq!(missing.gaps.len(), 1);
    assert_eq!(missing.gaps[0].category, "chip");
    // Those are exactly the questions whose trace says the knowledge failed.
    let failed_knowledge: BTreeSet<usize> = records(&out)
        .iter()
        .filter(|r| {
            r.traces.iter().any(|t| {
                t.name == echo_workbench::echo::ExpertName::KnowledgeGuide
                    && matches!(t.status, echo_workbench::echo::ExpertStatus::Failed { .. })
            })
        })
        .map(|r| r.index)
        .collect();
    assert_eq!(failed_knowledge.len(), 18);
    let report = dir.path().join("report.html");
    let export = bare_cmd(&["export"])
        .arg(&out)
        .arg("--html")
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains("18 of 210 questions ran without an input their plan reads"),
        "the report does not say it"
    );
    // The flag the refusal named fixes it: no refusal, nothing recorded as missing.
    let fixed = dir.path().join("fixed");
    run_to_end(
        &server.url(),
        &fixed,
        &[
            "--condensed",
            condensed_arg,
            "--knowledge-mode",
            "category",
            "--limit",
            "30",
        ],
    );
    let manifest = RunManifest::load(&fixed.join("manifest.json")).unwrap();
    assert!(manifest.missing_inputs.is_none());
}

/// The runner's fault seam from outside the crate: questions whose task panics are
/// recorded as errors while the run goes on to the end, and a retry of the errors
/// asks exactly those questions again, each once.
#[test]
fn questions_whose_task_panics_are_recorded_as_errors_and_retried_alone() {
    use echo_workbench::mllm::EndpointConfig;
    use echo_workbench::runs::runner::{QuestionHook, RunControl, RunSpec, run};
    use std::sync::{Arc, Mutex};

    let server = server(0, FaultPlan::none());
    let dir = tempfile::tempdir().unwrap();
    let endpoint = EndpointConfig {
        name: "mock".into(),
        base_url: server.url(),
        model: "mock-vl".into(),
        max_in_flight: 2,
        ..EndpointConfig::default()
    };
    let mut spec = RunSpec::new(
        repo("assets/sample/mmad.json"),
        repo("assets/sample"),
        vec![endpoint],
        dir.path().join("run"),
    );
    spec.knowledge = Some(repo("assets/sample/domain_knowledge.json"));
    spec.selection.limit = Some(8);
    let failing = BTreeSet::from([3, 5]);
    let fail = failing.clone();
    spec.before_question = Some(QuestionHook::new(move |index| {
        if fail.contains(&index) {
            panic!("injected panic for question {index}");
        }
    }));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let summary = run(&spec, &|_| {}, &RunControl::new(), runtime.handle()).unwrap();
    assert_eq!((summary.written, summary.errors), (8, 2));
    let first = records(&spec.out);
    let errors: BTreeSet<usize> = first
        .iter()
        .filter(|r| !r.is_ok())
        .map(|r| r.index)
        .collect();
    assert_eq!(errors, failing);
    for r in first.iter().filter(|r| !r.is_ok()) {
        let message = r.error.as_deref().unwrap();
        assert!(message.contains("injected panic"), "{message}");
    }

    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    spec.before_question = Some(QuestionHook::new(move |index| {
        seen.lock().unwrap().push(index);
    }));
    spec.retry_errors = true;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let summary = run(&spec, &|_| {}, &RunControl::new(), runtime.handle()).unwrap();
    assert_eq!((summary.written, summary.errors), (2, 0));
    let mut asked = asked.lock().unwrap().clone();
    asked.sort();
    assert_eq!(asked, [3, 5]);
    let all: BTreeSet<usize> = first.iter().map(|r| r.index).collect();
    assert_exactly_once(&records(&spec.out), &all);
}

/// Tokens are recorded per question as the server reports them; a token budget
/// stops the run gracefully (exit code 3, resumable), earlier sessions' tokens count
/// on resume, and `score --usage` adds up what the journal holds.
#[test]
fn a_token_budget_stops_the_run_and_a_larger_one_continues_it() {
    let server = server(1, FaultPlan::none());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let flags = ["--limit", "40", "--concurrency", "1"];
    // One question costs a few hundred tokens here (256 per image plus the prompt).
    let mut budgeted = flags.to_vec();
    budgeted.extend(["--max-tokens-total", "2000"]);
    let output = run_cmd(&server.url(), &out, &budgeted).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("token budget is spent"), "{stdout}");
    let first = records(&out);
    assert!(!first.is_empty() && first.len() < 40, "{}", first.len());
    let spent: u64 = first.iter().map(|r| r.usage.unwrap().total()).sum();
    assert!(
        spent >= 2000,
        "it stops only once the budget is reached: {spent}"
    );
    // With one question in flight, it overshoots by at most that question.
    let most = first
        .iter()
        .map(|r| r.usage.unwrap().total())
        .max()
        .unwrap();
    assert!(spent < 2000 + most, "{spent}");

    // The same budget again: the journal's tokens count, nothing more is asked.
    let mut resumed = budgeted.clone();
    resumed.push("--resume");
    let again = run_cmd(&server.url(), &out, &resumed).output().unwrap();
    assert_eq!(again.status.code(), Some(3));
    assert_eq!(records(&out).len(), first.len());

    // A larger budget finishes it.
    let mut larger = flags.to_vec();
    larger.extend(["--max-tokens-total", "100000000", "--resume"]);
    run_to_end(&server.url(), &out, &larger);
    let all = records(&out);
    assert_exactly_once(&all, &(0..40).collect());
    let total: u64 = all.iter().map(|r| r.usage.unwrap().total()).sum();

    let score = Command::new(assert_cmd::cargo::cargo_bin("echo-workbench"))
        .arg("score")
        .arg(&out)
        .args(["--usage", "--ci-resamples", "0", "--format", "json"])
        .args(["--price-prompt", "1", "--price-completion", "1"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&score.stdout).unwrap();
    let tokens = &v["tokens"]["all"];
    assert_eq!(tokens["questions"], 40);
    assert_eq!(
        tokens["prompt"].as_u64().unwrap() + tokens["completion"].as_u64().unwrap(),
        total
    );
    // A million tokens at 1 each: the cost is the token count over a million.
    assert!((v["cost"]["total"].as_f64().unwrap() - total as f64 / 1e6).abs() < 1e-12);
    assert_eq!(v["latency"]["all"]["questions"], 40);
}
