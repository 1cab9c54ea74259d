//! The read side of batch runs from the command line: `score RUN_DIR`, `export` and
//! `merge`, on run folders built here with the journal writer over the sample dataset.

use std::io::Write;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use echo_workbench::dataset::{MmadDataset, QuestionRef};
use echo_workbench::echo::PipelineSettings;
use echo_workbench::runs::journal::{
    AnswerQuestion, JOURNAL_FILE, JournalRecord, JournalWriter, RecordStatus, read_journal,
};
use echo_workbench::runs::manifest::{
    DatasetRef, EndpointSummary, MANIFEST_FORMAT, RunManifest, Selection, Shard,
};
use serde_json::Value;

use crate::common::bin;

fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/sample/mmad.json")
}

fn sample() -> MmadDataset {
    MmadDataset::load(&sample_path()).unwrap()
}

/// What the synthetic model did with a question.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Correct,
    Wrong,
    /// A reply with no letter in it (stored raw, as MMAD does).
    Invalid,
    Error,
}

/// A fixed, well-mixed outcome per question (about 55% correct, 20% wrong, 10%
/// invalid, 15% errors), so every test sees the same run.
fn outcome(index: usize) -> Outcome {
    match (index * 37 + 11) % 20 {
        0..=10 => Outcome::Correct,
        11..=14 => Outcome::Wrong,
        15 | 16 => Outcome::Invalid,
        _ => Outcome::Error,
    }
}

fn record(q: &QuestionRef<'_>) -> JournalRecord {
    let correct = q.question.answer.clone();
    let other = q
        .question
        .options
        .keys()
        .find(|k| **k != correct)
        .cloned()
        .unwrap_or_else(|| "E".into());
    let given = match outcome(q.index) {
        Outcome::Correct => correct.clone(),
        Outcome::Wrong => other,
        Outcome::Invalid => "The image is unclear".into(),
        Outcome::Error => {
            return JournalRecord::failed(
                q,
                format!("HTTP 503 on try 3 (question {})", q.index),
                3,
                900,
            );
        }
    };
    JournalRecord {
        image: q.key.to_string(),
        question: AnswerQuestion::from_question(q.question),
        question_type: q.question.qtype.as_str().to_string(),
        correct_answer: correct.clone(),
        gpt_answer: Some(given.clone()),
        index: q.index,
        turn: q.turn,
        status: RecordStatus::Ok,
        error: None,
        raw: Some(format!("Answer: {given}")),
        correct: Some(given == correct),
        attempts: 1,
        latency_ms: 40 + q.index as u64,
        usage: None,
        samples: Vec::new(),
        rotations: Vec::new(),
        confidence: None,
        endpoint: "local".into(),
        finished_at: "2026-11-22T08:30:00Z".into(),
        traces: Vec::new(),
    }
}

pub(crate) fn all_records() -> Vec<JournalRecord> {
    sample().questions().map(|q| record(&q)).collect()
}

pub(crate) fn manifest(question_count: usize) -> RunManifest {
    RunManifest {
        format: MANIFEST_FORMAT,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        started_at: "2026-11-22T08:00:00Z".into(),
        finished_at: Some("2026-11-22T09:00:00Z".into()),
        dataset: DatasetRef {
            path: "assets/sample/mmad.json".into(),
            sha256: echo_workbench::util::fsx::sha256_file(&sample_path()).unwrap(),
            root: "assets/sample".into(),
        },
        selection: Selection::default(),
        shard: None,
        question_count,
        pipeline: PipelineSettings::default(),
        template: "retrieved".into(),
        memory: None,
        knowledge: None,
        condensed: None,
        prompt_templates_hash: "p1".into(),
        endpoints: vec![EndpointSummary {
            name: "local".into(),
            base_url: "http://127.0.0.1:8000/v1".into(),
            model: "qwen2-vl-7b".into(),
            api_key_env: Some("OPENAI_API_KEY".into()),
            concurrency: 8,
            price: None,
            model_sha256: None,
        }],
        image_affinity: true,
        note: "sample run".into(),
        forced_from: Vec::new(),
        missing_inputs: None,
        placement: None,
        protocol: None,
    }
}

/// Writes a run folder; records go in in "finishing" order (a fixed shuffle), as a
/// concurrent runner writes them.
pub(crate) fn write_run(dir: &Path, manifest: &RunManifest, records: &[JournalRecord]) {
    std::fs::create_dir_all(dir).unwrap();
    manifest.save(&RunManifest::path_in(dir)).unwrap();
    let mut shuffled: Vec<&JournalRecord> = records.iter().collect();
    let n = shuffled.len();
    for i in 0..n {
        shuffled.swap(i, (i * 7919 + 13) % n);
    }
    let (mut w, _) = JournalWriter::open(&dir.join(JOURNAL_FILE)).unwrap();
    for r in shuffled {
        w.append(r).unwrap();
    }
}

/// MMAD's answers list for the answered records, in dataset order, built here by
/// hand (not by the exporter under test).
fn answers_file(path: &Path, records: &[JournalRecord]) {
    let mut ok: Vec<&JournalRecord> = records.iter().filter(|r| r.is_ok()).collect();
    ok.sort_by_key(|r| r.index);
    let list: Vec<Value> = ok
        .iter()
        .map(|r| {
            serde_json::json!({
                "image": r.image,
                "question": {"type": "text", "text": r.question.text, "options": r.question.options},
                "question_type": r.question_type,
                "correct_answer": r.correct_answer,
                "gpt_answer": r.gpt_answer,
            })
        })
        .collect();
    std::fs::write(path, serde_json::to_string_pretty(&list).unwrap()).unwrap();
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.assert().success().get_output().stdout.clone();
    String::from_utf8(out).unwrap()
}

fn stderr_of_failure(cmd: &mut Command) -> String {
    let out = cmd.assert().failure().get_output().stderr.clone();
    String::from_utf8(out).unwrap()
}

fn counts(records: &[JournalRecord]) -> (usize, usize) {
    let ok = records.iter().filter(|r| r.is_ok()).count();
    (ok, records.len() - ok)
}

#[test]
fn score_of_a_run_folder_equals_score_of_its_answers_list() {
    let tmp = tempfile::tempdir().unwrap();
    let records = all_records();
    let run = tmp.path().join("run");
    write_run(&run, &manifest(210), &records);
    let list = tmp.path().join("answers.json");
    answers_file(&list, &records);

    for flags in [
        &[][..],
        &["--mmad-compat", "--overkill-miss"][..],
        &["--detection-metrics"][..],
    ] {
        let from_run = stdout_of(
            bin()
                .arg("score")
                .arg(&run)
                .args(flags)
                .args(["--format", "csv"]),
        );
        let from_list = stdout_of(
            bin()
                .arg("score")
                .arg(&list)
                .args(flags)
                .args(["--format", "csv"]),
        );
        assert_eq!(from_run, from_list, "flags {flags:?}");
        assert!(from_run.starts_with(",Anomaly Detection,"), "{from_run}");
    }
    // The journal is out of order; without sorting, compat mode's skips would land
    // on other answers and the table would differ from the answers list's.
    let compat_json: Value = serde_json::from_str(&stdout_of(bin().arg("score").arg(&run).args([
        "--mmad-compat",
        "--format",
        "json",
    ])))
    .unwrap();
    assert!(compat_json["skipped"].as_u64().unwrap() > 0);
    // The run's journal named directly scores as the folder does.
    for flags in [&["--mmad-compat"][..], &[]] {
        let csv = |path: &Path| {
            stdout_of(
                bin()
                    .arg("score")
                    .arg(path)
                    .args(flags)
                    .args(["--format", "csv"]),
            )
        };
        assert_eq!(
            csv(&run.join("journal.jsonl")),
            csv(&run),
            "flags {flags:?}"
        );
        // And a copy of it away from its manifest, read by the question indices.
        let loose = run.with_file_name("loose-journal.jsonl");
        std::fs::copy(run.join("journal.jsonl"), &loose).unwrap();
        assert_eq!(csv(&loose), csv(&run), "flags {flags:?}");
    }
}

#[test]
fn score_of_a_run_folder_reports_coverage_and_lists_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut records = all_records();
    records.truncate(200); // 10 questions never answered
    let run = tmp.path().join("run");
    write_run(&run, &manifest(210), &records);
    let (ok, errors) = counts(&records);
    assert!(
        errors > 20,
        "the listing cap must be exercised ({errors} errors)"
    );

    let text = stdout_of(bin().arg("score").arg(&run));
    assert!(
        text.contains(&format!(
            "coverage: {ok} answered, {errors} error(s), 10 missing of 210 question(s)"
        )),
        "{text}"
    );
    let first_error = records.iter().find(|r| !r.is_ok()).unwrap();
    assert!(
        text.contains(&format!(
            "  #{} {}: HTTP 503 on try 3 (question {})",
            first_error.index, first_error.image, first_error.index
        )),
        "{text}"
    );
    assert_eq!(text.matches("HTTP 503 on try 3").count(), 20);
    assert!(
        text.contains(&format!("  ... and {} more", errors - 20)),
        "{text}"
    );

    let v: Value = serde_json::from_str(&stdout_of(
        bin().arg("score").arg(&run).args(["--format", "json"]),
    ))
    .unwrap();
    assert_eq!(v["coverage"]["answered"], ok);
    assert_eq!(v["coverage"]["errors"], errors);
    assert_eq!(v["coverage"]["missing"], 10);
    assert_eq!(v["coverage"]["question_count"], 210);
    assert_eq!(v["errors"].as_array().unwrap().len(), errors);
    assert_eq!(v["errors"][0]["index"], first_error.index);

    // CSV stays pure CSV: coverage goes to stderr.
    let out = bin()
        .arg("score")
        .arg(&run)
        .args(["--format", "csv"])
        .assert()
        .success();
    let o = out.get_output();
    assert!(!String::from_utf8_lossy(&o.stdout).contains("coverage"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("coverage: "));
}

#[test]
fn score_takes_several_inputs_and_names_each() {
    let tmp = tempfile::tempdir().unwrap();
    let records = all_records();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    write_run(&a, &manifest(210), &records);
    write_run(&b, &manifest(210), &records[..100]);
    let text = stdout_of(bin().arg("score").arg(&a).arg(&b));
    assert!(text.contains(&format!("==> {} <==", a.display())), "{text}");
    assert!(text.contains(&format!("==> {} <==", b.display())), "{text}");
    assert!(text.contains("110 missing of 210"), "{text}");

    let v: Value = serde_json::from_str(&stdout_of(
        bin()
            .arg("score")
            .arg(&a)
            .arg(&b)
            .args(["--format", "json"]),
    ))
    .unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["path"], b.display().to_string());
    assert_eq!(list[1]["coverage"]["missing"], 110);

    let empty = tmp.path().join("not-a-run");
    std::fs::create_dir_all(&empty).unwrap();
    let err = stderr_of_failure(bin().arg("score").arg(&a).arg(&empty));
    assert!(err.contains("not a run folder"), "{err}");
    assert!(err.contains("not-a-run"), "{err}");
}

#[test]
fn a_torn_last_line_is_tolerated_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let records = all_records();
    let run = tmp.path().join("run");
    write_run(&run, &manifest(210), &records[..50]);
    let half = serde_json::to_string(&records[50]).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(run.join(JOURNAL_FILE))
        .unwrap();
    f.write_all(&half.as_bytes()[..half.len() / 2]).unwrap();
    drop(f);
    let (ok, errors) = counts(&records[..50]);
    let text = stdout_of(bin().arg("score").arg(&run));
    assert!(text.contains("torn"), "{text}");
    assert!(
        text.contains(&format!(
            "coverage: {ok} answered, {errors} error(s), 160 missing"
        )),
        "{text}"
    );
}

#[test]
fn export_rescored_by_score_equals_the_run_and_csv_is_byte_equal() {
    let tmp = tempfile::tempdir().unwrap();
    let records = all_records();
    let run = tmp.path().join("run");
    write_run(&run, &manifest(210), &records);

    let out = stdout_of(bin().arg("export").arg(&run));
    let exports = run.join("exports");
    for name in ["answers.json", "answers_accuracy.csv", "report.html"] {
        assert!(exports.join(name).is_file(), "{name} missing; {out}");
        assert!(out.contains(name), "{out}");
    }
    let (ok, _) = counts(&records);
    let answers: Value =
        serde_json::from_str(&std::fs::read_to_string(exports.join("answers.json")).unwrap())
            .unwrap();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), ok);
    // Dataset order, although the journal was written shuffled.
    let want: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r.is_ok())
        .map(|r| (r.image.as_str(), r.question.text.as_str()))
        .collect();
    let got: Vec<(&str, &str)> = answers
        .iter()
        .map(|a| {
            (
                a["image"].as_str().unwrap(),
                a["question"]["text"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(answers[0]["question"]["type"], "text");

    let csv = std::fs::read_to_string(exports.join("answers_accuracy.csv")).unwrap();
    let rescored = stdout_of(
        bin()
            .arg("score")
            .arg(exports.join("answers.json"))
            .args(["--format", "csv"]),
    );
    assert_eq!(csv, rescored);
    let run_csv = stdout_of(bin().arg("score").arg(&run).args(["--format", "csv"]));
    assert_eq!(csv, run_csv);

    // Named files, compat scoring: only those files, same table as `score`.
    let named_answers = tmp.path().join("mine.json");
    let named_csv = tmp.path().join("mine_accuracy.csv");
    bin()
        .arg("export")
        .arg(&run)
        .arg("--mmad-answers")
        .arg(&named_answers)
        .arg("--csv")
        .arg(&named_csv)
        .args(["--mmad-compat", "--overkill-miss"])
        .assert()
        .success();
    assert!(!tmp.path().join("report.html").exists());
    let compat = stdout_of(bin().arg("score").arg(&named_answers).args([
        "--mmad-compat",
        "--overkill-miss",
        "--format",
        "csv",
    ]));
    assert_eq!(std::fs::read_to_string(&named_csv).unwrap(), compat);
    assert!(
        compat
            .lines()
            .next()
            .unwrap()
            .ends_with(",Average,Overkill,Miss")
    );
}

#[test]
fn html_report_is_self_contained_and_escapes_replies() {
    let tmp = tempfile::tempdir().unwrap();
    let mut records = all_records();
    let victim = records
        .iter_mut()
        .find(|r| r.is_ok() && r.correct == Some(false))
        .unwrap();
    victim.raw = Some("<script>alert('pwned')</script> B".into());
    let victim_index = victim.index;
    let run = tmp.path().join("run");
    let mut m = manifest(210);
    m.note = "R&D <ablation>".into();
    write_run(&run, &m, &records);
    let html_path = tmp.path().join("report.html");
    bin()
        .arg("export")
        .arg(&run)
        .arg("--html")
        .arg(&html_path)
        .assert()
        .success();
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(!html.contains("<script"), "markup from a reply got through");
    assert!(html.contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt; B"));
    assert!(html.contains("<h1>R&amp;D &lt;ablation&gt;</h1>"));
    assert!(html.contains(&format!("<summary>#{victim_index} · ")));
    // No external resources.
    assert!(!html.contains("<link") && !html.contains(" src="));
    let wrong = records
        .iter()
        .filter(|r| r.is_ok() && r.correct == Some(false))
        .count();
    assert_eq!(html.matches("<details class=\"q\">").count(), wrong);
    let (_, errors) = counts(&records);
    assert!(html.contains(&format!("<h2>Errors ({errors})</h2>")));
    assert!(html.contains("<tr class=\"avg\"><th>Average</th>"));
    assert!(html.contains("$OPENAI_API_KEY"));
    // The sample has object questions and the run used the echo preset.
    assert!(html.contains("outside Echo's scope"));
}

/// Shard by image, the way a sharded run keeps an image's questions together.
fn shard_of(image_position: usize) -> u32 {
    (image_position % 3) as u32
}

#[test]
fn merging_three_shards_gives_the_whole_run() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = sample();
    let records = all_records();
    let whole = tmp.path().join("whole");
    write_run(&whole, &manifest(210), &records);

    let image_position = |key: &str| ds.entries.get_index_of(key).unwrap();
    let mut shard_dirs = Vec::new();
    for s in 0..3u32 {
        let part: Vec<JournalRecord> = records
            .iter()
            .filter(|r| shard_of(image_position(&r.image)) == s)
            .cloned()
            .collect();
        let mut m = manifest(part.len());
        m.shard = Some(Shard { index: s, count: 3 });
        m.started_at = format!("2026-11-22T08:0{s}:00Z");
        m.endpoints[0].base_url = format!("http://10.0.0.{s}:8000/v1");
        let dir = tmp.path().join(format!("shard{s}"));
        write_run(&dir, &m, &part);
        shard_dirs.push(dir);
    }
    let merged = tmp.path().join("merged");
    let out = stdout_of(
        bin()
            .arg("merge")
            .args(&shard_dirs)
            .arg("--out")
            .arg(&merged),
    );
    assert!(out.contains("210 record(s)"), "{out}");

    let merged_records = read_journal(&merged.join(JOURNAL_FILE)).unwrap().records;
    assert_eq!(
        merged_records, records,
        "journal sorted by index, nothing lost"
    );
    let m = RunManifest::load(&RunManifest::path_in(&merged)).unwrap();
    assert_eq!(m.shard, None);
    assert_eq!(m.question_count, 210);
    assert_eq!(m.started_at, "2026-11-22T08:00:00Z");
    assert_eq!(m.fingerprint(), manifest(210).fingerprint());

    for flags in [
        &["--format", "json"][..],
        &["--mmad-compat", "--format", "csv"][..],
    ] {
        assert_eq!(
            stdout_of(bin().arg("score").arg(&merged).args(flags)),
            stdout_of(bin().arg("score").arg(&whole).args(flags)),
            "{flags:?}"
        );
    }

    // An existing non-empty output is refused unless forced.
    let err = stderr_of_failure(
        bin()
            .arg("merge")
            .args(&shard_dirs)
            .arg("--out")
            .arg(&merged),
    );
    assert!(err.contains("--force"), "{err}");
    bin()
        .arg("merge")
        .args(&shard_dirs)
        .arg("--out")
        .arg(&merged)
        .arg("--force")
        .assert()
        .success();

    // Two of three shards merge, and the gap is said.
    let partial = tmp.path().join("partial");
    let out = bin()
        .arg("merge")
        .args(&shard_dirs[..2])
        .arg("--out")
        .arg(&partial)
        .assert()
        .success();
    assert!(
        String::from_utf8_lossy(&out.get_output().stderr)
            .contains("note: no input holds --shard 2/3; those questions are not counted")
    );
}

#[test]
fn merge_rejects_overlap_and_different_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let records = all_records();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    write_run(&a, &manifest(100), &records[..100]);
    write_run(&b, &manifest(111), &records[99..]);
    let err = stderr_of_failure(
        bin()
            .arg("merge")
            .arg(&a)
            .arg(&b)
            .arg("--out")
            .arg(tmp.path().join("o")),
    );
    assert!(
        err.contains(&format!(
            "question index 99 is recorded in both {} and {}",
            a.display(),
            b.display()
        )),
        "{err}"
    );
    assert!(!tmp.path().join("o").exists());

    let c = tmp.path().join("c");
    let mut other = manifest(110);
    other.pipeline.preset = "mmad".into();
    other.prompt_templates_hash = "p2".into();
    write_run(&c, &other, &records[100..]);
    let err = stderr_of_failure(
        bin()
            .arg("merge")
            .arg(&a)
            .arg(&c)
            .arg("--out")
            .arg(tmp.path().join("o")),
    );
    assert!(
        err.contains(&format!(
            "{} differs from {} in pipeline settings, prompt templates",
            c.display(),
            a.display()
        )),
        "{err}"
    );

    // The same shard twice.
    let s0a = tmp.path().join("s0a");
    let s0b = tmp.path().join("s0b");
    let mut m = manifest(100);
    m.shard = Some(Shard { index: 0, count: 2 });
    write_run(&s0a, &m, &records[..100]);
    m.question_count = 110;
    write_run(&s0b, &m, &records[100..]);
    let err = stderr_of_failure(
        bin()
            .arg("merge")
            .arg(&s0a)
            .arg(&s0b)
            .arg("--out")
            .arg(tmp.path().join("o")),
    );
    assert!(
        err.contains(&format!(
            "{} and {} are both --shard 0/2",
            s0a.display(),
            s0b.display()
        )),
        "{err}"
    );
}

#[test]
fn merge_force_replaces_only_run_folders_that_no_run_is_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let records = all_records();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    write_run(&a, &manifest(100), &records[..100]);
    write_run(&b, &manifest(110), &records[100..]);
    let merge = |out: &Path| {
        let mut cmd = bin();
        cmd.arg("merge")
            .arg(&a)
            .arg(&b)
            .arg("--out")
            .arg(out)
            .arg("--force");
        cmd
    };

    // A folder of other files is not a run: refused, every file kept.
    let thesis = tmp.path().join("thesis");
    std::fs::create_dir_all(&thesis).unwrap();
    std::fs::write(thesis.join("main.tex"), "precious").unwrap();
    let err = stderr_of_failure(&mut merge(&thesis));
    assert!(err.contains("is not a run folder"), "{err}");
    assert_eq!(std::fs::read(thesis.join("main.tex")).unwrap(), b"precious");
    assert_eq!(std::fs::read_dir(&thesis).unwrap().count(), 1);

    // A run folder that a run holds is not replaced under it.
    let live = tmp.path().join("live");
    write_run(&live, &manifest(10), &records[..10]);
    let journal = std::fs::read(live.join(JOURNAL_FILE)).unwrap();
    let lock = echo_workbench::runs::lock::RunLock::acquire(&live).unwrap();
    let err = stderr_of_failure(&mut merge(&live));
    assert!(err.contains("is in use by another run"), "{err}");
    assert_eq!(std::fs::read(live.join(JOURNAL_FILE)).unwrap(), journal);
    drop(lock);

    // Once free, a run folder is replaced by the merge.
    stdout_of(&mut merge(&live));
    assert_eq!(
        read_journal(&live.join(JOURNAL_FILE)).unwrap().records,
        records
    );
}

#[test]
fn score_json_carries_seeded_intervals_around_every_cell() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    write_run(&run, &manifest(210), &all_records());
    let score = |extra: &[&str]| -> Value {
        let out = stdout_of(
            bin()
                .arg("score")
                .arg(&run)
                .args(["--format", "json"])
                .args(extra),
        );
        serde_json::from_str(&out).unwrap()
    };
    let v = score(&[]);
    assert_eq!(v["bootstrap"]["resamples"], 1000);
    assert_eq!(v["bootstrap"]["unit"], "image");
    let rows = v["index"].as_array().unwrap();
    let columns = v["columns"].as_array().unwrap();
    for row in rows {
        for column in columns {
            let (row, column) = (row.as_str().unwrap(), column.as_str().unwrap());
            let value = v["table"][row][column].as_f64().unwrap();
            let ci = &v["ci"][row][column];
            let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
            assert!(lo <= hi, "{row}/{column}: {ci}");
            // A percentile interval need not contain the estimate exactly at the
            // edges of [0, 100], but it must be near it.
            assert!(
                lo <= value + 1e-9 || value == 0.0,
                "{row}/{column} {value} {ci}"
            );
            assert!(
                value <= hi + 1e-9 || value == 100.0,
                "{row}/{column} {value} {ci}"
            );
        }
    }
    // Seeded: the same call gives the same intervals, another seed others.
    assert_eq!(score(&[])["ci"], v["ci"]);
    assert_ne!(score(&["--ci-seed", "3"])["ci"], v["ci"]);
    let off = score(&["--ci-resamples", "0"]);
    assert!(off.get("ci").is_none() && off.get("bootstrap").is_none());
    assert_eq!(off["table"], v["table"]);
}

#[test]
fn compare_reports_differences_flips_and_mcnemar() {
    let tmp = tempfile::tempdir().unwrap();
    let a_records = all_records();
    // B fixes every wrong answer to a Defect Classification question and breaks one
    // right Anomaly Detection answer.
    let mut fixed = 0;
    let mut broken = 0;
    let b_records: Vec<JournalRecord> = a_records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let letter = r.gpt_answer.clone().unwrap_or_default();
            let wrong_letter = r.is_ok() && letter.len() == 1 && letter != r.correct_answer;
            if r.question_type == "Defect Classification" && wrong_letter {
                r.gpt_answer = Some(r.correct_answer.clone());
                r.correct = Some(true);
                fixed += 1;
            } else if r.question_type == "Anomaly Detection"
                && r.correct == Some(true)
                && broken == 0
            {
                let other = r.question.options.keys().find(|k| **k != r.correct_answer);
                r.gpt_answer = other.cloned();
                r.correct = Some(false);
                broken += 1;
            }
            r
        })
        .collect();
    assert!(
        fixed >= 3,
        "the sample has wrong Defect Classification answers"
    );
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write_run(&a, &manifest(210), &a_records);
    write_run(&b, &manifest(210), &b_records);
    let out = stdout_of(
        bin()
            .arg("compare")
            .arg(&a)
            .arg(&b)
            .args(["--format", "json"]),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["flips"]["wrong_to_right"], fixed);
    assert_eq!(v["flips"]["right_to_wrong"], 1);
    let both =
        v["flips"]["both_right"].as_u64().unwrap() + v["flips"]["both_wrong"].as_u64().unwrap();
    // Answered with a letter by both: the records that are neither errors nor invalid.
    let lettered = a_records
        .iter()
        .filter(|r| r.is_ok() && r.gpt_answer.as_deref().is_some_and(|g| g.len() == 1))
        .count() as u64;
    assert_eq!(both + fixed as u64 + 1, lettered);
    // Exact McNemar on (1, fixed), n = fixed + 1: 2 * (C(n, 0) + C(n, 1)) / 2^n.
    let n = fixed as i32 + 1;
    let want = (2.0 * (1.0 + n as f64) / 2f64.powi(n)).min(1.0);
    let p = v["mcnemar"]["p"].as_f64().unwrap();
    assert!((p - want).abs() < 1e-12, "{p} vs {want}");
    let dc = v["mcnemar"]["per_column"]["Defect Classification"]
        .as_f64()
        .unwrap();
    assert!((dc - 2.0 / 2f64.powi(fixed as i32)).abs() < 1e-12);
    // Each cell: delta = b - a, its interval around it.
    let cell = &v["cells"]["Sample"]["Defect Classification"];
    let d = cell["delta"].as_f64().unwrap();
    assert!((d - (cell["b"].as_f64().unwrap() - cell["a"].as_f64().unwrap())).abs() < 1e-12);
    assert!(d > 0.0);
    let (lo, hi) = (
        cell["ci"][0].as_f64().unwrap(),
        cell["ci"][1].as_f64().unwrap(),
    );
    assert!(lo <= d && d <= hi && lo >= 0.0, "{cell}");
    assert_eq!(v["cells"]["Sample"]["Object Classification"]["delta"], 0.0);
    assert_eq!(v["changes"].as_array().unwrap().len(), fixed + 1);

    let text = stdout_of(bin().arg("compare").arg(&a).arg(&b));
    assert!(text.contains("McNemar"), "{text}");
    assert!(text.contains("R->W"), "{text}");
    assert!(
        text.contains("(better)") && text.contains("(worse)"),
        "{text}"
    );
}

#[test]
fn slices_add_up_to_the_tables_overkill_and_miss() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    write_run(&run, &manifest(210), &all_records());
    let out = stdout_of(bin().arg("score").arg(&run).args([
        "--slices",
        "--overkill-miss",
        "--ci-resamples",
        "0",
        "--format",
        "json",
    ]));
    let v: Value = serde_json::from_str(&out).unwrap();
    let slices = v["slices"].as_object().unwrap();
    assert!(slices.len() >= 3, "{slices:?}");
    // The sample is one dataset: pooling its categories gives the table's row.
    let (mut normal, mut normal_right, mut abnormal, mut abnormal_right) = (0, 0, 0, 0);
    for s in slices.values() {
        normal += s["normal"]["total"].as_u64().unwrap();
        normal_right += s["normal"]["correct"].as_u64().unwrap();
        abnormal += s["abnormal"]["total"].as_u64().unwrap();
        abnormal_right += s["abnormal"]["correct"].as_u64().unwrap();
        if s["normal"]["total"].as_u64().unwrap() > 0 {
            let want = (1.0
                - s["normal"]["correct"].as_f64().unwrap()
                    / s["normal"]["total"].as_f64().unwrap())
                * 100.0;
            assert!((s["overkill"].as_f64().unwrap() - want).abs() < 1e-9);
        }
    }
    let overkill = (1.0 - normal_right as f64 / normal as f64) * 100.0;
    let miss = (1.0 - abnormal_right as f64 / abnormal as f64) * 100.0;
    assert!((v["table"]["Sample"]["Overkill"].as_f64().unwrap() - overkill).abs() < 1e-9);
    assert!((v["table"]["Sample"]["Miss"].as_f64().unwrap() - miss).abs() < 1e-9);
    // Every answered Defect Classification question is in one confusion cell.
    let cells: u64 = slices
        .values()
        .flat_map(|s| s["confusion"].as_object().unwrap().values())
        .flat_map(|row| row.as_object().unwrap().values())
        .map(|n| n.as_u64().unwrap())
        .sum();
    let answered_dc = all_records()
        .iter()
        .filter(|r| r.is_ok() && r.question_type == "Defect Classification")
        .count() as u64;
    assert_eq!(cells, answered_dc);

    let text = stdout_of(bin().arg("score").arg(&run).arg("--slices"));
    assert!(
        text.contains("Overkill %") && text.contains("(true -> chosen"),
        "{text}"
    );
}
