//! Nothing a user has changes: a run folder, a reference memory, a knowledge
//! workspace with its versions and settings files, all written by the release before
//! the restructuring of issue 15, read, score, export and save back byte for byte as
//! that release did. The expected files under `tests/fixtures/compat/expected` are
//! that release's own outputs; regenerate them only for a change meant to alter a
//! format, and say so in the commit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use echo_workbench::config::Settings;
use echo_workbench::knowledge::KnowledgeBase;
use echo_workbench::knowledge::versions::{VersionStore, file_hash, versions_dir};

use crate::common::repo;

const COMPAT: &str = "tests/fixtures/compat";

fn compat(p: &str) -> PathBuf {
    repo(COMPAT).join(p)
}

fn expected(name: &str) -> Vec<u8> {
    let path = compat("expected").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs the binary from the repository root with relative paths, as the expected
/// outputs were made, so that the paths it prints are the same on every machine.
fn workbench(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_echo-workbench"))
        .args(args)
        .current_dir(repo(""))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[track_caller]
fn assert_same_bytes(what: &str, actual: &[u8], expected: &[u8]) {
    if actual != expected {
        panic!(
            "{what} differs from the release's output\n--- now\n{}\n--- then\n{}",
            String::from_utf8_lossy(actual),
            String::from_utf8_lossy(expected)
        );
    }
}

#[test]
fn score_prints_what_the_release_printed_for_a_run_folder_and_its_journal() {
    let run = "tests/fixtures/compat/run";
    let journal = "tests/fixtures/compat/run/journal.jsonl";
    let cases: [(&[&str], &str); 6] = [
        (&["score", run, "--format", "json"], "score.json"),
        (&["score", run, "--format", "table"], "score.txt"),
        (&["score", run, "--format", "csv"], "score.csv"),
        (
            &[
                "score",
                run,
                "--format",
                "json",
                "--mmad-compat",
                "--overkill-miss",
                "--detection-metrics",
            ],
            "score_all_metrics.json",
        ),
        (
            &[
                "score",
                run,
                "--format",
                "table",
                "--overkill-miss",
                "--detection-metrics",
            ],
            "score_all_metrics.txt",
        ),
        (
            &["score", journal, "--format", "json"],
            "score_journal.json",
        ),
    ];
    for (args, file) in cases {
        if file.ends_with(".json") {
            // Since the release, JSON output also carries each cell's 95% interval
            // ("ci") and how it was drawn ("bootstrap"). With the intervals switched
            // off it is the release's byte for byte; with them on, everything else is.
            let mut off = args.to_vec();
            off.extend(["--ci-resamples", "0"]);
            assert_same_bytes(file, &workbench(&off).stdout, &expected(file));
            let mut now: serde_json::Value =
                serde_json::from_slice(&workbench(args).stdout).unwrap();
            assert!(now["ci"].is_object(), "{file}: no intervals");
            let added = now.as_object_mut().unwrap();
            added.remove("ci");
            added.remove("bootstrap");
            let release: serde_json::Value = serde_json::from_slice(&expected(file)).unwrap();
            assert_eq!(now, release, "{file}: more than the intervals changed");
        } else {
            assert_same_bytes(file, &workbench(args).stdout, &expected(file));
        }
    }
}

/// The report's additions since the release: the intervals under the score
/// table (from their heading to the note that ends them) and the per-category
/// section "Where the errors are" (to the next section's heading).
fn without_intervals(html: &[u8]) -> Vec<u8> {
    let html = String::from_utf8(html.to_vec()).unwrap();
    let start = html
        .find("<h3>95% intervals</h3>")
        .expect("the report shows the intervals");
    let end_note = "</code> says so.</p>\n";
    let end = html[start..].find(end_note).expect("the intervals' note") + start + end_note.len();
    let html = format!("{}{}", &html[..start], &html[end..]);
    let start = html
        .find("<h2>Where the errors are</h2>")
        .expect("the report shows where the errors are");
    let end = html[start + 1..].find("<h2>").expect("a section after it") + start + 1;
    format!("{}{}", &html[..start], &html[end..]).into_bytes()
}

/// The HTML report embeds no clock or build version of its own (the times and
/// tool version it shows are the manifest's), so it is compared unnormalised but
/// for the sections added since the release (the cells' intervals, where the
/// errors are).
#[test]
fn export_writes_the_releases_answers_csv_and_html() {
    let out = tempfile::tempdir().unwrap();
    let file = |name: &str| out.path().join(name).to_str().unwrap().to_owned();
    let printed = workbench(&[
        "export",
        "tests/fixtures/compat/run",
        "--mmad-answers",
        &file("answers.json"),
        "--csv",
        &file("accuracy.csv"),
        "--html",
        &file("report.html"),
    ]);
    for name in ["answers.json", "accuracy.csv", "report.html"] {
        let mut written = std::fs::read(out.path().join(name)).unwrap();
        if name == "report.html" {
            written = without_intervals(&written);
        }
        assert_same_bytes(name, &written, &expected(name));
    }
    // Its messages name the files it wrote; the folder is this test's own.
    let stdout = String::from_utf8(printed.stdout).unwrap();
    let stdout = stdout.replace(out.path().to_str().unwrap(), "{OUT}");
    assert_same_bytes(
        "export's messages",
        stdout.as_bytes(),
        &expected("export_stdout.txt"),
    );
}

#[test]
fn retrieve_from_the_releases_memory_finds_the_same_references() {
    let memory = "tests/fixtures/compat/memory";
    let global = workbench(&[
        "retrieve",
        "--memory",
        memory,
        "--k",
        "3",
        "assets/sample/Sample/chip/test/good/000.png",
    ]);
    assert_same_bytes("retrieve", &global.stdout, &expected("retrieve.txt"));
    let category = workbench(&[
        "retrieve",
        "--memory",
        memory,
        "--k",
        "5",
        "--scope",
        "category",
        "--format",
        "json",
        "assets/sample/Sample/washer/test/good/000.png",
    ]);
    assert_same_bytes(
        "retrieve --scope category --format json",
        &category.stdout,
        &expected("retrieve_category.json"),
    );
}

#[test]
fn settings_saved_by_the_release_save_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let original = compat("settings/settings.toml");
    let settings = Settings::load(&original).unwrap();
    assert_eq!(settings.endpoints.len(), 3);
    let again = dir.path().join("settings.toml");
    settings.save(&again).unwrap();
    assert_same_bytes(
        "settings.toml saved again",
        &std::fs::read(&again).unwrap(),
        &std::fs::read(&original).unwrap(),
    );
}

#[test]
fn hand_written_settings_save_in_the_releases_layout() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::load(&compat("settings/hand_edited.toml")).unwrap();
    let saved = dir.path().join("settings.toml");
    settings.save(&saved).unwrap();
    assert_same_bytes(
        "hand-written settings saved",
        &std::fs::read(&saved).unwrap(),
        &expected("hand_edited_resaved.toml"),
    );
}

#[test]
fn the_releases_knowledge_versions_list_and_load_as_written() {
    let workspace = compat("knowledge");
    let store = VersionStore::in_workspace(&workspace);
    let list = store.list().unwrap();
    assert_same_bytes(
        "versions list",
        serde_json::to_string_pretty(&list).unwrap().as_bytes(),
        &expected("knowledge_versions_list.json"),
    );
    // Each version file is its content exactly as the release serialised it.
    for v in &list {
        let content = store.load(v.number).unwrap();
        assert_eq!(
            content.content_hash(),
            v.content_hash,
            "version {}",
            v.number
        );
        assert_same_bytes(
            &v.file,
            content.to_json_string().as_bytes(),
            &std::fs::read(versions_dir(&workspace).join(&v.file)).unwrap(),
        );
    }
    let current = KnowledgeBase::load(&workspace.join("domain_knowledge.json")).unwrap();
    assert_eq!(current.content_hash(), list[2].content_hash);
}

#[test]
fn restoring_a_releases_version_writes_what_the_release_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("ws");
    copy_dir(&compat("knowledge"), &workspace);
    let knowledge = workspace.join("domain_knowledge.json");
    let store = VersionStore::in_workspace(&workspace);
    let (_, saved) = store
        .revert(2, &knowledge, Some(&file_hash(&knowledge).unwrap()))
        .unwrap();
    assert_eq!(saved.version.file, "0004-1db61e51.json");
    assert_same_bytes(
        "the restored knowledge file",
        &std::fs::read(&knowledge).unwrap(),
        &expected("knowledge_restored.json"),
    );
    // The new entry's time and folder are this run's own.
    let index = std::fs::read_to_string(versions_dir(&workspace).join("index.json"))
        .unwrap()
        .replace(
            &format!("\"time\": \"{}\"", saved.version.time),
            "\"time\": \"{TIME}\"",
        )
        .replace(workspace.to_str().unwrap(), "{WORKSPACE}");
    assert_same_bytes(
        "the version index after restoring",
        index.as_bytes(),
        &expected("knowledge_restored_index.json"),
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
