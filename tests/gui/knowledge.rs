//! The Knowledge tab as a curator uses it, driven through egui_kittest: measuring an
//! edit on an earlier run, the diff of two versions and of a file changed outside the
//! app, and the preview of what the Knowledge Guide selects, checked against the
//! pipeline's own functions.
#![cfg(feature = "gui")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use echo_workbench::config::Settings;
use echo_workbench::curate::impact::impact;
use echo_workbench::curate::preview::{ModeOutcome, preview_question};
use echo_workbench::dataset::{DatasetRoot, MmadDataset};
use echo_workbench::echo::PipelineContext;
use echo_workbench::echo::PipelineSettings;
use echo_workbench::echo::plan::KnowledgeMode;
use echo_workbench::knowledge::KnowledgeBase;
use echo_workbench::knowledge::options::select_by_options;
use echo_workbench::mllm::EndpointConfig;
use echo_workbench::mllm::mock::{MockConfig, MockServer, Oracle, Responder};
use echo_workbench::runs::runner::{RunControl, RunOutcome, RunSpec, run};
use echo_workbench::ui::{Persisted, Tab, WorkbenchApp};
use eframe::egui;
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

use crate::common::sample_dir;
use crate::drive::{harness_sized, wait_until as wait_for};

/// The word the curator's edit adds; the mock model knows the answers only when a
/// prompt carries it.
const MARKER: &str = "concentric-burr";

/// Tall enough that the versions list, the diff and the preview are all drawn.
fn harness(app: WorkbenchApp) -> Harness<'static, WorkbenchApp> {
    harness_sized(app, [1440.0, 1800.0])
}

fn wait_for_label(h: &mut Harness<'static, WorkbenchApp>, text: &str) {
    wait_for(h, text, |h| h.query_by_label_contains(text).is_some());
}

/// A workspace whose settings point at a copy of the sample knowledge (so the test
/// may edit it) and at `endpoint`.
fn workspace(dir: &Path, endpoint: Option<EndpointConfig>) -> (PathBuf, PathBuf) {
    let file = dir.join("domain_knowledge.json");
    std::fs::copy(sample_dir().join("domain_knowledge.json"), &file).unwrap();
    let mut settings = Settings {
        knowledge: Some(file.clone()),
        ..Settings::default()
    };
    if let Some(e) = endpoint {
        settings.endpoints = vec![e];
    }
    let ws = dir.join("ws");
    settings.save(&Settings::path_in(&ws)).unwrap();
    (ws, file)
}

fn knowledge_app(ws: &Path) -> Harness<'static, WorkbenchApp> {
    let persisted = Persisted {
        tab: Tab::Knowledge,
        ..Persisted::default()
    };
    let mut h = harness(WorkbenchApp::with_workspace(persisted, ws.to_path_buf()));
    wait_for(&mut h, "knowledge and dataset", |h| {
        h.state().knowledge.is_some() && h.state().dataset.is_some()
    });
    h.run_steps(2);
    h
}

/// Replaces the text of a text field found by its label.
fn retype(h: &mut Harness<'static, WorkbenchApp>, role: Role, label: &str, text: &str) {
    h.get_by_role_and_label(role, label).focus();
    h.run_steps(2);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.step();
    h.key_press(egui::Key::Backspace);
    h.step();
    h.get_by_role_and_label(role, label).type_text(text);
    h.run_steps(2);
}

fn save_with_note(h: &mut Harness<'static, WorkbenchApp>, note: &str, versions: usize) {
    retype(h, Role::TextInput, "Note", note);
    h.get_by_label("Save").click();
    wait_for(h, "the save", |h| {
        h.state().knowledge_view.versions.len() == versions
    });
}

fn marker_server(latency: Duration) -> MockServer {
    let sample = sample_dir();
    let dataset = MmadDataset::load(&sample.join("mmad.json")).unwrap();
    let oracle = Responder::oracle(Oracle::from_mmad(
        &dataset,
        Some(&DatasetRoot::new(&sample)),
    ));
    MockServer::start(MockConfig {
        latency,
        responder: Responder::only_when(MARKER, oracle),
        ..MockConfig::default()
    })
    .unwrap()
}

#[test]
fn a_curator_fixes_a_description_and_measures_it_on_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = marker_server(Duration::from_millis(40));
    let endpoint = EndpointConfig {
        name: "mock".into(),
        base_url: server.url(),
        model: "mock-vl".into(),
        max_in_flight: 4,
        retry_base_ms: 1,
        ..EndpointConfig::default()
    };
    let (ws, file) = workspace(dir.path(), Some(endpoint.clone()));
    // The baseline: the whole sample under Echo's table, knowledge in category mode.
    let sample = sample_dir();
    let mut spec = RunSpec::new(
        sample.join("mmad.json"),
        &sample,
        vec![endpoint],
        ws.join("runs/20261122T080000-baseline"),
    );
    spec.pipeline = PipelineSettings {
        preset: "echo".into(),
        knowledge_mode: Some(KnowledgeMode::Category),
        ..PipelineSettings::default()
    };
    spec.knowledge = Some(file.clone());
    spec.note = "category knowledge".into();
    let summary = run(
        &spec,
        &|_| {},
        &RunControl::new(),
        tokio::runtime::Runtime::new().unwrap().handle(),
    )
    .unwrap();
    assert_eq!(summary.outcome, RunOutcome::Finished);
    let reached = {
        let ctx = PipelineContext::new(spec.pipeline.clone()).unwrap();
        let dataset = MmadDataset::load(&sample.join("mmad.json")).unwrap();
        let kb = KnowledgeBase::load(&file).unwrap();
        impact(&ctx, &dataset, &kb, "Sample", "washer", None).with_category()
    };
    assert!(reached > 0);

    let mut h = knowledge_app(&ws);
    // The first entry, washer's `good`, is open; the runs are listed below it.
    h.get_by_label("Sample / washer");
    wait_for_label(&mut h, "20261122T080000-baseline");
    wait_for_label(
        &mut h,
        &format!("{reached} answered questions of `20261122T080000-baseline` about washer"),
    );

    // Nothing edited yet: the run read this very version, and the tab says so.
    h.get_by_label_contains("The saved knowledge is the version this run read");

    // An edit: validation goes green, and the re-run waits for a save.
    retype(
        &mut h,
        Role::MultilineTextInput,
        "Description",
        &format!("A flat metal ring; a {MARKER} on the inner rim is normal."),
    );
    h.get_by_label("No problems");
    h.get_by_label_contains("Save first");
    let button = format!("Re-run {reached} questions with the saved knowledge");
    save_with_note(&mut h, "burrs on the rim are normal", 1);
    wait_for(&mut h, "the plan for the saved version", |h| {
        h.query_by_label_contains("Save first").is_none()
            && h.query_by_label_contains("Working out").is_none()
            && h.query_by_label(&button).is_some()
    });
    assert!(
        h.query_by_label_contains("is the version this run read")
            .is_none()
    );
    h.get_by_label(&button).click();
    h.step();
    if let Some(e) = h.query_by_label_contains("Cannot start") {
        panic!("{e:?}");
    }
    assert!(h.state().knowledge_view.rerun.running());
    // The status bar (drawn before the tab) shows the re-run from the next frame on.
    h.step();
    h.get_by_label_contains("re-run washer questions");
    wait_for(&mut h, "the measurement", |h| {
        h.state().knowledge_view.rerun.result.is_some()
    });

    let measured = match h.state().knowledge_view.rerun.result.as_ref().unwrap() {
        Ok(m) => m,
        Err(e) => panic!("the re-run was not measured: {e}"),
    };
    let effect = &measured.effect;
    assert_eq!(effect.comparison.common, reached);
    assert_eq!(effect.unanswered, 0);
    assert!(
        effect.subtasks.iter().all(|s| s.after == Some(100.0)),
        "{:?}",
        effect.subtasks
    );
    let better = effect.comparison.better;
    let rerun_dir = measured.rerun_dir.clone();
    assert!(rerun_dir.starts_with(ws.join("runs")));
    // What the table shows is what was measured.
    h.get_by_label_contains(&format!("Effect on {reached} questions about washer"));
    h.get_by_label_contains(&format!("{better} answers became right, 0 became wrong"));
    assert!(h.get_all_by_label("100.0%").count() >= effect.subtasks.len());
    let average = effect
        .subtasks
        .iter()
        .find(|s| s.subtask == "Average")
        .unwrap();
    h.get_by_label(&format!("{:+.1} points", average.delta().unwrap()));

    // The re-run is a run like any other: open it in Batch.
    let name = rerun_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let open_label = format!("Open {name} in Batch");
    h.get_by_label(&open_label).click();
    h.run_steps(2);
    assert_eq!(h.state().persisted.tab, Tab::Batch);
}

#[test]
fn versions_and_an_outside_change_show_their_diffs() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, file) = workspace(dir.path(), None);
    let mut h = knowledge_app(&ws);
    retype(
        &mut h,
        Role::MultilineTextInput,
        "Description",
        "A flat ring with a round hole.",
    );
    save_with_note(&mut h, "first wording", 1);
    retype(
        &mut h,
        Role::MultilineTextInput,
        "Description",
        "A flat steel ring with a round hole.",
    );
    save_with_note(&mut h, "say the material", 2);

    h.get_by_label("History (2)").click();
    h.run_steps(2);
    h.get_by_label("Changes in v0002").click();
    wait_for_label(&mut h, "From v0001 (left) to v0002 (right): 1 change(s)");
    h.get_by_label("changed entry Sample/washer/good");
    // Both sides of the entry, word by word.
    h.get_by_label_contains("A flat ring with a round hole.");
    h.get_by_label_contains("A flat steel ring with a round hole.");

    // Another program rewrites a defect entry: the banner's diff names it.
    let mut kb = KnowledgeBase::load(&file).unwrap();
    kb.datasets["Sample"]["washer"]["notch"] = "Notch\nA V-shaped cut in the outer edge.".into();
    kb.save(&file).unwrap();
    wait_for(&mut h, "the outside change", |h| {
        h.state().knowledge_view.external.is_some()
    });
    h.get_by_label("Edit").click();
    h.run_steps(2);
    h.get_by_label("Show diff").click();
    h.run_steps(2);
    h.get_by_label("From your draft (left) to the file on disk (right):");
    h.get_by_label("changed entry Sample/washer/notch");
    h.get_by_label_contains("A V-shaped cut in the outer edge.");
    assert_eq!(
        h.get_all_by_label_contains("changed entry").count(),
        1,
        "the banner lists only the notch entry (the good entry is saved and unchanged)"
    );
}

#[test]
fn the_preview_shows_what_the_pipeline_selects_for_the_question() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, file) = workspace(dir.path(), None);
    let mut h = knowledge_app(&ws);
    h.get_by_label("washer (4)").click();
    h.run_steps(2);
    h.get_by_label("notch").click();
    h.run_steps(2);
    h.get_by_label("Preview").click();
    wait_for_label(&mut h, "Mode options");
    wait_for(&mut h, "the preview", |h| {
        h.query_by_label_contains("Running the Knowledge Guide")
            .is_none()
    });

    // The panel picks a notch image and its Defect Classification question.
    let sample = sample_dir();
    let dataset = MmadDataset::load(&sample.join("mmad.json")).unwrap();
    let (key, entry) = dataset
        .entries
        .iter()
        .find(|(k, _)| k.starts_with("Sample/washer/test/notch/"))
        .unwrap();
    let turn = entry
        .conversation
        .iter()
        .position(|q| q.qtype.as_str() == "Defect Classification")
        .unwrap();
    let chosen = |h: &Harness<'static, WorkbenchApp>, combo: &str| {
        format!("{:?}", h.get_by_role_and_label(Role::ComboBox, combo))
    };
    assert!(chosen(&h, "Image").contains(&format!("value: {key:?}")));
    let question = format!("{}. Defect Classification: ", turn + 1);
    assert!(
        chosen(&h, "Question").contains(&question),
        "{}",
        chosen(&h, "Question")
    );

    // Every mode's block as the pipeline builds it from the file.
    let kb = Arc::new(KnowledgeBase::load(&file).unwrap());
    let settings = Settings::load(&Settings::path_in(&ws)).unwrap().pipeline;
    let preview = preview_question(
        &settings,
        kb.clone(),
        None,
        &DatasetRoot::new(&sample),
        key,
        entry,
        turn,
        tokio::runtime::Runtime::new().unwrap().handle(),
    )
    .unwrap();
    let mut snippets = 0;
    for m in &preview.modes {
        if let ModeOutcome::Snippet { text, entries, .. } = &m.outcome {
            // Two modes may pick the same entries; each block is shown.
            assert!(
                h.query_all_by_label(text.as_str()).count() >= 1,
                "{}: {text}",
                m.mode
            );
            let line = format!(
                "Entries: {} · {} characters",
                entries.join(", "),
                text.chars().count()
            );
            assert!(h.query_all_by_label_contains(&line).count() >= 1, "{line}");
            snippets += 1;
        }
    }
    assert!(snippets >= 2, "category and options modes give blocks");
    // Options mode keeps `good` plus the entries the options name, as the guide does.
    let options = &entry.conversation[turn].options;
    let picked = select_by_options(&kb.datasets["Sample"]["washer"], options).entries;
    assert!(picked.iter().any(|e| e == "notch"), "{picked:?}");
    let options_line = format!("Entries: {} ·", picked.join(", "));
    assert!(
        h.query_all_by_label_contains(&options_line).count() >= 1,
        "{options_line}"
    );
    // ... and says which option picked which entry.
    let letter = options
        .iter()
        .find(|(_, text)| text.to_lowercase().contains("notch"))
        .map(|(l, _)| l.clone())
        .unwrap();
    h.get_by_label_contains(&format!("{letter} \"{}\" picks notch", options[&letter]));
}

/// The draft's entry names of a category, in order.
fn entries_of(h: &Harness<'static, WorkbenchApp>, category: &str) -> Vec<String> {
    h.state()
        .knowledge_view
        .doc
        .as_ref()
        .unwrap()
        .draft
        .datasets["Sample"]
        .get(category)
        .map(|c| c.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn entries_and_categories_are_added_renamed_and_deleted_found_and_exported() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, file) = workspace(dir.path(), None);
    let original = std::fs::read(&file).unwrap();
    let mut h = knowledge_app(&ws);

    // A new entry for a defect the dataset does not have: an empty description and
    // an entry nothing refers to, both listed; the problem opens the entry.
    h.get_by_label("washer (4)").click();
    h.run_steps(2);
    retype(&mut h, Role::TextInput, "New entry", "dent");
    h.get_by_label("Add entry").click();
    h.run_steps(3);
    assert_eq!(
        entries_of(&h, "washer"),
        ["good", "scratch", "notch", "stain", "dent"]
    );
    // Select something else first (washer's `good` in the tree), so that the
    // problem's click is what opens `dent`.
    h.get_all_by_label("good").next().unwrap().click();
    h.run_steps(2);
    assert_eq!(
        h.state()
            .knowledge_view
            .selected
            .as_ref()
            .unwrap()
            .entry
            .as_deref(),
        Some("good")
    );
    h.get_by_label("error: washer/dent: title but no description")
        .click();
    h.get_by_label_contains("warning: washer/dent: ");
    h.run_steps(2);
    let sel = h.state().knowledge_view.selected.clone().unwrap();
    assert_eq!(sel.entry.as_deref(), Some("dent"));

    h.get_by_label("Rename entry").click();
    h.run_steps(2);
    retype(&mut h, Role::TextInput, "New name", "dent_mark");
    h.get_by_label("Apply").click();
    h.run_steps(2);
    assert_eq!(entries_of(&h, "washer")[4], "dent_mark");
    h.get_by_label("Delete entry…").click();
    h.run_steps(2);
    h.get_by_label("Delete").click();
    h.run_steps(2);
    assert_eq!(
        entries_of(&h, "washer"),
        ["good", "scratch", "notch", "stain"]
    );

    // A category: added with its `good` entry, renamed, deleted.
    h.get_by_label("Add a category").click();
    h.run_steps(2);
    retype(&mut h, Role::TextInput, "Name", "bolt");
    h.get_by_label("Add category").click();
    h.run_steps(3);
    assert_eq!(entries_of(&h, "bolt"), ["good"]);
    h.get_by_label("Rename category").click();
    h.run_steps(2);
    retype(&mut h, Role::TextInput, "New name", "screw");
    h.get_by_label("Apply").click();
    h.run_steps(2);
    assert!(entries_of(&h, "bolt").is_empty());
    assert_eq!(entries_of(&h, "screw"), ["good"]);
    h.get_by_label("Delete category…").click();
    h.run_steps(2);
    h.get_by_label("Delete").click();
    h.run_steps(3);
    assert!(entries_of(&h, "screw").is_empty());
    assert!(
        !h.state().knowledge_view.doc.as_ref().unwrap().dirty,
        "back to the file"
    );

    // Search across all knowledge: the hit opens its entry.
    retype(&mut h, Role::TextInput, "Search", "rust-like");
    h.get_by_label("1 match");
    h.get_by_label("Sample/washer/stain").click();
    h.run_steps(2);
    let sel = h.state().knowledge_view.selected.clone().unwrap();
    assert_eq!(
        (sel.category.as_str(), sel.entry.as_deref()),
        ("washer", Some("stain"))
    );
    retype(&mut h, Role::TextInput, "Search", "");

    // Export MMAD's JSON (byte for byte, the draft being the file), Markdown per
    // category, and import the export back.
    h.get_by_label("Import / export").click();
    h.run_steps(2);
    let exported = dir.path().join("out/domain_knowledge.json");
    std::fs::create_dir_all(exported.parent().unwrap()).unwrap();
    retype(
        &mut h,
        Role::TextInput,
        "Export to",
        &exported.display().to_string(),
    );
    h.get_by_label("Export JSON").click();
    wait_for_label(&mut h, "Exported to");
    assert_eq!(std::fs::read(&exported).unwrap(), original);
    let md = dir.path().join("review");
    retype(
        &mut h,
        Role::TextInput,
        "Markdown folder",
        &md.display().to_string(),
    );
    h.get_by_label("Export Markdown").click();
    wait_for_label(&mut h, "Wrote 3 Markdown file(s)");
    let washer = std::fs::read_to_string(md.join("Sample/washer.md")).unwrap();
    assert!(washer.contains("rust-like"), "{washer}");
    retype(
        &mut h,
        Role::TextInput,
        "Import from",
        &exported.display().to_string(),
    );
    h.get_by_label("Import").click();
    wait_for_label(&mut h, "Imported 3 categories, 12 entries");
}
