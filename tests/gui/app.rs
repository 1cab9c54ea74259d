//! The app driven through egui_kittest: widgets are found by their labels, clicked,
//! and the app state is asserted. No display is needed.
#![cfg(feature = "gui")]

use std::path::Path;
use std::time::{Duration, Instant};

use echo_workbench::ui::{Persisted, Tab, WorkbenchApp};
use eframe::egui;
use egui_kittest::kittest::Queryable;

use crate::drive::{harness, wait_for};

fn sample_app() -> WorkbenchApp {
    // A workspace of its own, so the user's settings and caches are never touched.
    let workspace = tempfile::tempdir().unwrap().keep();
    WorkbenchApp::with_workspace(Persisted::default(), workspace)
}

#[test]
fn shell_opens_on_the_sample_dataset_with_all_tabs() {
    let mut h = harness(sample_app());
    wait_for(&mut h, "dataset and knowledge", |a| {
        a.dataset.is_some() && a.knowledge.is_some()
    });
    for tab in ["Inspect", "Batch", "Knowledge", "Settings"] {
        h.get_by_label(tab);
    }
    let images = h.state().dataset.as_ref().unwrap().dataset.image_count();
    h.get_by_label(&format!("{images} of {images} images"));
    h.get_by_label_contains("Dataset: ");
    // The first image is opened right away, so the screen is never empty.
    let first = h
        .state()
        .dataset
        .as_ref()
        .unwrap()
        .dataset
        .entries
        .keys()
        .next()
        .cloned();
    assert_eq!(h.state().inspect.selected, first);
    wait_for(&mut h, "first image", |a| a.inspect.shown_image().is_some());
    h.get_by_label(&first.unwrap());
}

#[test]
fn clicking_an_image_shows_it_with_its_questions() {
    let mut h = harness(sample_app());
    wait_for(&mut h, "dataset", |a| a.dataset.is_some());
    let key = "Sample/washer/test/notch/000.png";
    h.get_by_label_contains(key).click();
    wait_for(&mut h, "decoded image", |a| {
        a.inspect.shown_image().is_some_and(|(k, _)| k == key)
    });
    let (shown, size) = h.state().inspect.shown_image().unwrap();
    assert_eq!(shown, key);
    assert_eq!(size, [256, 256]);
    let n = h.state().dataset.as_ref().unwrap().dataset.entries[key]
        .conversation
        .len();
    h.get_by_label(&format!("Questions ({n})"));
    // Every question marks its correct option.
    assert_eq!(h.get_all_by_label_contains("(ground truth)").count(), n);
    assert_eq!(h.state().persisted.selected_image.as_deref(), Some(key));
}

#[test]
fn filters_narrow_the_browser() {
    let mut h = harness(sample_app());
    wait_for(&mut h, "dataset", |a| a.dataset.is_some());
    h.get_by_label("Normal").click();
    h.run_steps(2);
    let d = &h.state().dataset.as_ref().unwrap().dataset;
    let normal = d.entries.keys().filter(|k| k.contains("good")).count();
    let total = d.image_count();
    h.get_by_label(&format!("{normal} of {total} images"));
    assert!(
        h.query_by_label_contains("Sample/washer/test/notch/000.png")
            .is_none()
    );
}

#[test]
fn knowledge_tab_lists_the_bundled_base_without_problems() {
    let mut h = harness(sample_app());
    wait_for(&mut h, "knowledge", |a| a.knowledge.is_some());
    h.get_by_label("Knowledge").click();
    h.run_steps(2);
    assert_eq!(h.state().persisted.tab, Tab::Knowledge);
    wait_for(&mut h, "dataset", |a| a.dataset.is_some());
    h.run_steps(3);
    let problems = h.state().knowledge_view.problems.clone();
    assert!(problems.is_empty(), "{problems:?}");
    h.get_by_label("No problems");
    h.get_by_label("bottle (4)").click();
    h.run_steps(2);
    h.get_by_label("broken_large").click();
    h.run_steps(2);
    // The tree row and the editor's heading.
    assert!(h.get_all_by_label_contains("broken_large").count() >= 2);
}

/// A curator's loop on a copy of the knowledge file: an emptied description is a
/// problem at once, typing fixes it, Save with a note makes a version in the history.
#[test]
fn knowledge_edit_validates_as_you_type_and_saves_a_version() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("domain_knowledge.json");
    std::fs::copy(echo_workbench::bundled_knowledge_path(), &file).unwrap();
    let settings = echo_workbench::config::Settings {
        knowledge: Some(file.clone()),
        ..Default::default()
    };
    let workspace = dir.path().join("ws");
    settings
        .save(&echo_workbench::config::Settings::path_in(&workspace))
        .unwrap();
    let persisted = Persisted {
        tab: Tab::Knowledge,
        ..Persisted::default()
    };
    let mut h = harness(WorkbenchApp::with_workspace(persisted, workspace.clone()));
    wait_for(&mut h, "knowledge", |a| a.knowledge.is_some());
    h.run_steps(2);
    h.get_by_label("No problems");
    let before = std::fs::read(&file).unwrap();

    let description =
        h.get_by_role_and_label(egui::accesskit::Role::MultilineTextInput, "Description");
    description.focus();
    h.step();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.key_press(egui::Key::Backspace);
    h.run_steps(3);
    assert!(
        h.query_by_label("No problems").is_none(),
        "an empty description is a problem"
    );
    h.get_by_role_and_label(egui::accesskit::Role::MultilineTextInput, "Description")
        .type_text("A clean bottle rim, seen from above.");
    h.run_steps(3);
    h.get_by_label("No problems");
    // Nothing is written until Save.
    assert_eq!(std::fs::read(&file).unwrap(), before);

    let note = h.get_by_role_and_label(egui::accesskit::Role::TextInput, "Note");
    note.focus();
    h.step();
    h.get_by_role_and_label(egui::accesskit::Role::TextInput, "Note")
        .type_text("shorter bottle description");
    h.run_steps(2);
    h.get_by_label("Save").click();
    wait_for(&mut h, "the save", |a| a.knowledge_view.versions.len() == 1);
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(saved.contains("A clean bottle rim, seen from above."));
    h.get_by_label("History (1)").click();
    h.run_steps(2);
    h.get_by_label_contains("shorter bottle description");

    // Someone edits the file outside the app: detected, never silently overwritten.
    let outside = saved.replace(
        "A clean bottle rim, seen from above.",
        "Edited in another program.",
    );
    std::fs::write(&file, &outside).unwrap();
    wait_for(&mut h, "the external change", |a| {
        a.knowledge_view.external.is_some()
    });
    h.get_by_label("Keep mine and overwrite");
    h.get_by_label("Reload from disk").click();
    wait_for(&mut h, "the reload", |a| {
        a.knowledge_view.external.is_none()
    });
    assert_eq!(std::fs::read_to_string(&file).unwrap(), outside);

    // Revert to v0001 makes a new version whose content is v0001's.
    h.get_by_label("History (1)").click();
    h.run_steps(2);
    h.get_by_label("Revert to v0001").click();
    h.run_steps(2);
    if let Some(confirm) = h.query_by_label("Revert anyway") {
        confirm.click();
    }
    wait_for(&mut h, "the revert", |a| {
        a.knowledge_view.versions.len() == 2
    });
    assert_eq!(std::fs::read_to_string(&file).unwrap(), saved);
    assert_eq!(h.state().knowledge_view.versions[1].reverted_from, Some(1));
}

#[test]
fn batch_tab_scores_a_file_like_the_cli() {
    let mut h = harness(sample_app());
    h.get_by_label("Batch").click();
    h.run_steps(2);
    h.get_by_label("Score a file").click();
    h.run_steps(1);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/facts_answers.json");
    h.state_mut().batch.path_text = fixture.display().to_string();
    h.get_by_label("MMAD-compatible (reproduce summary.py's skip)")
        .click();
    h.run_steps(1);
    h.get_by_label("Score").click();
    wait_for(&mut h, "score", |a| {
        a.batch.result.is_some() || a.batch.error.is_some()
    });
    let table = &h.state().batch.result.as_ref().expect("scored").table;
    assert_eq!(table.get("Average", "Average"), Some(57.5));
    h.get_by_label("57.5");
    h.get_by_label_contains("1 invalid answer(s) dropped, 1 skipped");
}

#[test]
fn a_broken_dataset_shows_its_error_in_the_ui() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("mmad.json");
    std::fs::write(&bad, "{\"a/b/c.png\": {").unwrap();
    // The dataset is a setting (shared with the CLI), read from the workspace's file.
    let mut settings = echo_workbench::config::Settings::default();
    settings.dataset.mmad_json = bad;
    settings.dataset.root = dir.path().to_path_buf();
    let workspace = dir.path().join("ws");
    settings
        .save(&echo_workbench::config::Settings::path_in(&workspace))
        .unwrap();
    let mut h = harness(WorkbenchApp::with_workspace(
        Persisted::default(),
        workspace,
    ));
    wait_for(&mut h, "dataset error", |a| a.dataset_error.is_some());
    // Shown in the Inspect tab and in the status bar.
    h.get_by_label_contains("The dataset could not be loaded.");
    assert_eq!(
        h.get_all_by_label_contains("not valid JSON at line 1")
            .count(),
        2
    );
    h.get_by_label_contains("Dataset: ");
}

/// Thumbnails started on the Inspect tab finish while another tab is shown, so the
/// status bar never shows a job that is long done.
#[test]
fn work_started_on_inspect_finishes_behind_another_tab() {
    let mut h = harness(sample_app());
    // Not `wait_for`, whose extra frame could already collect the decodes: work
    // started while a frame draws the browser is collected no earlier than the next
    // frame, so stopping at the first frame that leaves Inspect busy always sees it.
    let start = Instant::now();
    loop {
        h.step();
        if h.state().dataset.is_some() && h.state().inspect.busy() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "Inspect never started its thumbnail decodes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    h.state_mut().persisted.tab = Tab::Settings;
    wait_for(&mut h, "inspect's background work", |a| !a.inspect.busy());
    assert!(h.query_by_label("decode image").is_none());
}
