//! The app shell and the Settings tab driven through egui_kittest: the reference
//! memory is built at start, settings survive a restart through the settings file,
//! endpoint tests run against the in-repo mock server, and errors are shown.
#![cfg(feature = "gui")]

use std::path::Path;
use std::time::{Duration, Instant};

use echo_workbench::config::Settings;
use echo_workbench::memory::collect_images;
use echo_workbench::mllm::mock::{MockConfig, MockServer};
use echo_workbench::ui::{LaunchOptions, Persisted, ProbeState, Tab, WorkbenchApp};
use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

use crate::drive::{harness, wait_for, wait_until};

fn app_on(workspace: &Path, tab: Tab) -> WorkbenchApp {
    let persisted = Persisted {
        tab,
        ..Persisted::default()
    };
    WorkbenchApp::with_workspace(persisted, workspace.to_path_buf())
}

/// Replaces the text of the field labelled `label` as a user does: focus, select
/// all, type.
fn set_text(h: &mut Harness<'static, WorkbenchApp>, label: &str, text: &str) {
    h.get_by_role_and_label(egui::accesskit::Role::TextInput, label)
        .focus();
    h.step();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.step();
    h.get_by_role_and_label(egui::accesskit::Role::TextInput, label)
        .type_text(text);
    h.run_steps(2);
}

#[test]
fn shell_opens_on_the_sample_and_builds_the_reference_memory() {
    let ws = tempfile::tempdir().unwrap();
    let mut h = harness(app_on(ws.path(), Tab::Inspect));
    wait_for(&mut h, "the reference memory", |a| a.reference.is_some());
    let settings = Settings::default();
    let expected = collect_images(&settings.dataset.root, None).unwrap().len();
    let app = h.state();
    let reference = app.reference.as_ref().unwrap();
    assert_eq!(reference.memory.len(), expected);
    assert_eq!(app.reference_generation, 1);
    assert!(
        reference.origin.contains("built from"),
        "{}",
        reference.origin
    );
    assert!(app.reference_service.error.is_none());
    h.get_by_label_contains(&format!("Memory: {expected} images"));
    h.get_by_label("Embedder: descriptor-v1");
    h.get_by_label_contains("Endpoint: local vLLM");
    h.get_by_label("untested");
    // The vectors went to the workspace's embedding cache, for the next start.
    let cache = echo_workbench::workspace::embedding_cache_dir(ws.path());
    let files: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(files.len(), 1, "one cache file in {}", cache.display());
}

#[test]
fn a_setting_edited_in_the_ui_survives_a_restart() {
    let ws = tempfile::tempdir().unwrap();
    let mut h = harness(app_on(ws.path(), Tab::Inspect));
    h.get_by_label("Settings").click();
    h.run_steps(2);
    assert_eq!(h.state().persisted.tab, Tab::Settings);
    h.get_by_label("All changes saved");
    set_text(&mut h, "Endpoint name", "vision box");
    h.get_by_label("Unsaved changes");
    // Revert drops the edit ...
    h.get_by_label("Revert").click();
    h.run_steps(2);
    assert_eq!(
        h.state().settings_view.draft.endpoints[0].name,
        "local vLLM"
    );
    h.get_by_label("All changes saved");
    // ... and Save keeps it.
    set_text(&mut h, "Endpoint name", "vision box");
    h.get_by_label("Timeout").set_value_accesskit(45.0);
    h.run_steps(2);
    h.get_by_label("Save").click();
    wait_for(&mut h, "the save", |a| {
        !a.saving_settings() && a.settings.endpoints[0].name == "vision box"
    });
    h.get_by_label("All changes saved");
    assert!(h.state().settings_save_error.is_none());

    let path = Settings::path_in(ws.path());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("name = \"vision box\""), "{text}");
    let saved = Settings::load(&path).unwrap();
    assert_eq!(saved.endpoints[0].name, "vision box");
    assert_eq!(saved.endpoints[0].timeout_s, 45.0);

    let mut again = harness(app_on(ws.path(), Tab::Settings));
    again.run_steps(2);
    assert!(again.state().settings_error.is_none());
    again.get_by_label("vision box (active)");
    assert_eq!(
        again.get_by_label("Endpoint name").value().as_deref(),
        Some("vision box")
    );
}

#[test]
fn endpoint_test_against_the_mock_server_reports_what_works() {
    let server = MockServer::start(MockConfig {
        models: vec!["mock-vl".into()],
        ..MockConfig::default()
    })
    .unwrap();
    let ws = tempfile::tempdir().unwrap();
    let mut h = harness(app_on(ws.path(), Tab::Settings));
    h.run_steps(2);
    h.get_by_label_contains("Not tested yet");
    set_text(&mut h, "Base URL", &server.url());
    set_text(&mut h, "Model", "mock-vl");
    h.get_by_label("Test").click();
    h.run_steps(1);
    wait_for(&mut h, "the probe", |a| {
        matches!(
            a.probes.state(&a.settings_view.draft.endpoints[0]),
            ProbeState::Done(_)
        )
    });
    let shown = h.get_by_label_contains("serves `mock-vl`");
    assert!(format!("{shown:?}").contains("Works: "), "{shown:?}");
    h.get_by_label_contains("model listed by the server: yes · two-image request answered: yes");
    assert!(server.chat_count() >= 1, "the probe sent a chat request");
    // Not saved yet: the status bar speaks of the saved endpoint, still untested.
    h.get_by_label("untested");
    h.get_by_label("Save").click();
    wait_for(&mut h, "the save", |a| {
        !a.saving_settings() && a.settings_view.draft == a.settings
    });
    h.get_by_label("OK, serves mock-vl");
}

#[test]
fn endpoint_test_against_a_closed_port_says_why() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ws = tempfile::tempdir().unwrap();
    let mut h = harness(app_on(ws.path(), Tab::Settings));
    h.run_steps(2);
    set_text(&mut h, "Base URL", &format!("http://127.0.0.1:{port}/v1"));
    h.get_by_label("Test").click();
    h.run_steps(1);
    wait_for(&mut h, "the probe", |a| {
        matches!(
            a.probes.state(&a.settings_view.draft.endpoints[0]),
            ProbeState::Done(_)
        )
    });
    let at = format!("127.0.0.1:{port}");
    let shown = h.get_by_label_contains(&at);
    assert!(format!("{shown:?}").contains("Failed: "), "{shown:?}");
    let ProbeState::Done(report) = h
        .state()
        .probes
        .state(&h.state().settings_view.draft.endpoints[0])
    else {
        unreachable!()
    };
    assert!(!report.ok && !report.two_images_ok);
}

#[test]
fn api_key_check_says_set_or_not_set_and_never_shows_the_value() {
    let ws = tempfile::tempdir().unwrap();
    let mut h = harness(app_on(ws.path(), Tab::Settings));
    h.run_steps(2);
    h.get_by_label("no key is sent");
    let unset = "ECHO_WORKBENCH_TEST_KEY_THAT_IS_NEVER_SET";
    assert!(std::env::var_os(unset).is_none());
    set_text(&mut h, "API key variable", unset);
    h.get_by_label(&format!("{unset} is not set"));
    assert_eq!(
        h.state().settings_view.draft.endpoints[0]
            .api_key_env
            .as_deref(),
        Some(unset)
    );
    // PATH is set in every test environment; its value must appear nowhere.
    let value = std::env::var("PATH").unwrap();
    assert!(value.len() > 3);
    set_text(&mut h, "API key variable", "PATH");
    h.get_by_label("PATH is set");
    assert!(h.query_by_label_contains(&value).is_none());
    assert!(
        h.query_all_by_value(&value).next().is_none(),
        "no field holds the variable's value"
    );
}

#[test]
fn a_broken_settings_file_shows_a_banner_and_uses_defaults() {
    let ws = tempfile::tempdir().unwrap();
    let path = Settings::path_in(ws.path());
    let broken = "[reference]\ntop_k = \"five\"\n";
    std::fs::write(&path, broken).unwrap();
    let mut h = harness(app_on(ws.path(), Tab::Inspect));
    h.run_steps(2);
    assert_eq!(h.state().settings, Settings::default());
    let banner = format!(
        "{:?}",
        h.get_by_label_contains("Using defaults until you save settings again")
    );
    assert!(
        banner.contains("top_k") && banner.contains("settings.toml"),
        "{banner}"
    );
    // Saving good settings keeps the unreadable file beside them and clears the banner.
    h.get_by_label("Open Settings").click();
    h.run_steps(2);
    set_text(&mut h, "Endpoint name", "fixed");
    h.get_by_label("Save").click();
    wait_for(&mut h, "the save", |a| {
        !a.saving_settings() && a.settings.endpoints[0].name == "fixed"
    });
    assert!(
        h.query_by_label_contains("Using defaults until you save")
            .is_none()
    );
    let backup = std::fs::read_to_string(path.with_extension("toml.bak")).unwrap();
    assert_eq!(backup, broken);
    assert_eq!(Settings::load(&path).unwrap().endpoints[0].name, "fixed");
}

#[test]
fn build_now_saves_a_memory_that_the_next_start_loads() {
    let ws = tempfile::tempdir().unwrap();
    let mut h = harness(app_on(ws.path(), Tab::Settings));
    wait_for(&mut h, "the start-up memory", |a| a.reference.is_some());
    h.get_by_role_and_label(
        egui::accesskit::Role::CheckBox,
        "Save it in the workspace as",
    )
    .click();
    h.run_steps(1);
    h.get_by_label("Build now").click();
    h.run_steps(1);
    wait_for(&mut h, "the saved memory", |a| a.reference_generation == 2);
    let folder = ws.path().join("memories/reference");
    assert!(folder.join("manifest.json").is_file());
    let app = h.state();
    assert_eq!(
        app.settings_view.draft.reference.memory.as_deref(),
        Some(folder.as_path())
    );
    assert!(
        app.reference
            .as_ref()
            .unwrap()
            .origin
            .contains("memory folder")
    );
    h.get_by_label("Unsaved changes");
    h.get_by_label("Save").click();
    wait_for(&mut h, "the save", |a| {
        !a.saving_settings() && a.settings_view.draft == a.settings
    });
    // Saving the settings does not reload what is already in use.
    assert_eq!(h.state().reference_generation, 2);

    let mut again = harness(app_on(ws.path(), Tab::Inspect));
    wait_for(&mut again, "the loaded memory", |a| a.reference.is_some());
    let r = again.state().reference.as_ref().unwrap();
    assert_eq!(r.origin, format!("memory folder {}", folder.display()));
    again.get_by_label_contains("Memory: ");
}

#[test]
fn a_missing_memory_folder_is_an_error_in_the_status_bar_and_settings() {
    let ws = tempfile::tempdir().unwrap();
    let mut s = Settings::default();
    let missing = ws.path().join("no-such-memory");
    s.reference.memory = Some(missing.clone());
    s.save(&Settings::path_in(ws.path())).unwrap();
    let mut h = harness(app_on(ws.path(), Tab::Settings));
    wait_for(&mut h, "the load", |a| !a.reference_service.busy());
    assert!(h.state().reference.is_none());
    // In the status bar and in the Settings tab, naming the folder.
    h.get_by_label_contains(&format!(
        "Memory: {} is not a reference memory",
        missing.display()
    ));
    assert_eq!(
        h.get_all_by_label_contains("is not a reference memory")
            .count(),
        2
    );
    // The Inspect tab says why it has no reference, instead of waiting forever.
    let mut inspect = Harness::builder()
        .with_size([1440.0, 900.0])
        .build_ui_state(
            |ui, app: &mut WorkbenchApp| app.frame_ui(ui),
            app_on(ws.path(), Tab::Inspect),
        );
    wait_for(&mut inspect, "the load", |a| !a.reference_service.busy());
    inspect.get_by_label_contains("Reference memory failed: ");
    assert!(
        inspect
            .query_by_label_contains("Reference memory is loading")
            .is_none()
    );
}

#[test]
fn launch_options_pick_the_tab_and_report_an_unknown_image() {
    let ws = tempfile::tempdir().unwrap();
    let app = WorkbenchApp::launch(
        Persisted::default(),
        LaunchOptions {
            tab: Some(Tab::Knowledge),
            image: Some("Nowhere/none/test/good/000.png".into()),
            workspace: Some(ws.path().to_path_buf()),
        },
    );
    assert_eq!(app.workspace, ws.path());
    let mut h = harness(app);
    wait_for(&mut h, "dataset", |a| a.dataset.is_some());
    assert_eq!(h.state().persisted.tab, Tab::Knowledge);
    h.get_by_label_contains("The image `Nowhere/none/test/good/000.png` (--image) is not in");
    h.get_by_label("Dismiss").click();
    h.run_steps(2);
    assert!(h.state().launch_notice.is_none());

    let key = "Sample/washer/test/notch/000.png";
    let app = WorkbenchApp::launch(
        Persisted::default(),
        LaunchOptions {
            tab: None,
            image: Some(key.into()),
            workspace: Some(ws.path().to_path_buf()),
        },
    );
    let mut h = harness(app);
    wait_for(&mut h, "dataset", |a| a.dataset.is_some());
    assert_eq!(h.state().inspect.selected.as_deref(), Some(key));
    assert!(h.state().launch_notice.is_none());
}

#[test]
fn help_overlay_lists_the_shortcuts() {
    let ws = tempfile::tempdir().unwrap();
    let mut h = harness(app_on(ws.path(), Tab::Inspect));
    h.key_press(egui::Key::F1);
    h.run_steps(2);
    assert!(h.state().show_help);
    h.get_by_label("Keyboard shortcuts");
    h.get_by_label("Save the settings being edited");
    // One row per tab, read from the tab list itself, with the key that opens it.
    for (n, tab) in Tab::ALL.iter().enumerate() {
        h.get_by_label(&format!("Ctrl+{}", n + 1));
        h.get_by_label(&format!("{} tab", tab.label()));
    }
    h.key_press(egui::Key::Escape);
    h.run_steps(2);
    assert!(!h.state().show_help);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Num4);
    h.run_steps(2);
    assert_eq!(h.state().persisted.tab, Tab::Settings);
}

#[test]
fn endpoints_are_added_and_removed_and_revert_survives_a_hand_edited_file() {
    let ws = tempfile::tempdir().unwrap();
    // One endpoint, and an active index that a hand edit left pointing past it.
    let text = Settings::default()
        .to_toml()
        .replace("active_endpoint = 0", "active_endpoint = 3");
    assert!(text.contains("active_endpoint = 3"));
    std::fs::write(Settings::path_in(ws.path()), text).unwrap();
    let mut h = harness(app_on(ws.path(), Tab::Settings));
    h.run_steps(3);
    h.get_by_label("Add endpoint").click();
    h.run_steps(2);
    assert_eq!(h.state().settings_view.draft.endpoints.len(), 2);
    h.get_by_label("Remove endpoint").click();
    h.run_steps(2);
    assert_eq!(h.state().settings_view.draft.endpoints.len(), 1);
    h.get_by_label("Add endpoint").click();
    h.run_steps(2);
    h.get_by_label("Revert").click();
    h.run_steps(3);
    let app = h.state();
    assert_eq!(app.settings_view.draft.endpoints.len(), 1);
    assert_eq!(app.settings_view.selected_endpoint, 0);
}

#[test]
fn the_theme_switches_from_the_top_bar_and_is_remembered() {
    let ws = tempfile::tempdir().unwrap();
    let mut h = harness(app_on(ws.path(), Tab::Inspect));
    h.run_steps(2);
    assert!(h.state().persisted.dark_mode);
    assert!((h.ctx.theme() == egui::Theme::Dark));
    h.get_by_label("Light theme").click();
    h.run_steps(3);
    assert!(!h.state().persisted.dark_mode);
    assert!(
        !(h.ctx.theme() == egui::Theme::Dark),
        "the visuals did not change"
    );
    h.get_by_label("Dark theme").click();
    h.run_steps(3);
    assert!(h.state().persisted.dark_mode);
    assert!((h.ctx.theme() == egui::Theme::Dark));
}

#[test]
fn switching_the_workspace_starts_over_on_its_settings_and_is_remembered() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let other = Settings {
        endpoints: vec![echo_workbench::mllm::EndpointConfig {
            name: "other workspace's box".into(),
            ..Default::default()
        }],
        ..Settings::default()
    };
    other.save(&Settings::path_in(second.path())).unwrap();
    let mut h = harness(app_on(first.path(), Tab::Settings));
    h.run_steps(2);
    set_text(
        &mut h,
        "Another workspace folder",
        &second.path().display().to_string(),
    );
    h.get_by_label("Switch to this workspace").click();
    h.run_steps(3);
    let app = h.state();
    assert_eq!(app.workspace, second.path());
    assert_eq!(app.persisted.workspace.as_deref(), Some(second.path()));
    assert_eq!(app.settings.endpoints[0].name, "other workspace's box");
    h.get_by_label_contains("Now using the workspace");
    h.get_by_label_contains("Endpoint: other workspace's box");
    // The next start opens there unless told otherwise.
    let restarted = WorkbenchApp::launch(h.state().persisted.clone(), LaunchOptions::default());
    if std::env::var_os("ECHO_WORKBENCH_HOME").is_none() {
        assert_eq!(restarted.workspace, second.path());
    }
    let told = WorkbenchApp::launch(
        h.state().persisted.clone(),
        LaunchOptions {
            workspace: Some(first.path().to_path_buf()),
            ..LaunchOptions::default()
        },
    );
    assert_eq!(told.workspace, first.path());
}

#[test]
fn a_clip_folder_is_checked_as_it_is_typed() {
    let ws = tempfile::tempdir().unwrap();
    let mut h = harness(app_on(ws.path(), Tab::Settings));
    h.state_mut().settings_view.draft.reference.embedder =
        format!("clip:{}", ws.path().join("no such model").display());
    h.run_steps(2);
    let start = Instant::now();
    while h.query_by_label_contains("no such model").is_none()
        || h.query_by_label_contains("Problem: ").is_none()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no problem shown"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_clip/full_p16_s32");
    set_text(&mut h, "CLIP folder", &model.display().to_string());
    let start = Instant::now();
    while h.query_by_label_contains("16-d embeddings").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the folder was not checked"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    h.get_by_label_contains(&format!("OK: {}: 32x32 images", model.display()));
    assert_eq!(
        h.state().settings_view.draft.reference.embedder,
        format!("clip:{}", model.display())
    );
}

/// The anomaly map's switches (issue 18) follow the preset until set: a saved
/// file has none of them until one is chosen, and then only that one.
#[test]
fn the_anomaly_map_switches_are_saved_only_once_chosen() {
    let ws = tempfile::tempdir().unwrap();
    let mut h = harness(app_on(ws.path(), Tab::Settings));
    h.run_steps(2);
    let combo = egui::accesskit::Role::ComboBox;
    h.get_by_role_and_label(combo, "Anomaly map hint").click();
    h.run_steps(2);
    h.get_by_label("off").click();
    h.run_steps(2);
    assert_eq!(h.state().settings_view.draft.pipeline.map_hint, Some(false));
    assert_eq!(h.state().settings_view.draft.pipeline.map_image, None);
    h.get_by_label("Save").click();
    wait_for(&mut h, "the save", |a| {
        !a.saving_settings() && a.settings.pipeline.map_hint == Some(false)
    });
    let text = std::fs::read_to_string(Settings::path_in(ws.path())).unwrap();
    assert!(text.contains("map_hint = false"), "{text}");
    assert!(
        !text.contains("map_image") && !text.contains("anomaly_map"),
        "{text}"
    );
}

/// The map's backbone (issue 18): a typed text that the draft takes once it
/// parses; a wrong one is said and blocks Save; the descriptor is saved as
/// nothing at all.
#[test]
fn the_anomaly_map_backbone_is_taken_once_it_parses() {
    let ws = tempfile::tempdir().unwrap();
    let mut h = harness(app_on(ws.path(), Tab::Settings));
    h.run_steps(2);
    h.get_by_label("the weight-free descriptor");
    set_text(&mut h, "Anomaly map backbone", "dino");
    // Said beside the field and in the list of what blocks Save.
    assert_eq!(
        h.get_all_by_label_contains("unknown backbone `dino`")
            .count(),
        2
    );
    assert_eq!(h.state().settings_view.draft.pipeline.map_backbone, None);
    assert!(
        h.state()
            .settings_view
            .problems()
            .iter()
            .any(|p| p.starts_with("anomaly map backbone: unknown backbone")),
        "{:?}",
        h.state().settings_view.problems()
    );
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_dinov2");
    let spec = format!("dinov2:{}", fixture.display());
    set_text(&mut h, "Anomaly map backbone", &spec);
    h.get_by_label(&format!("{spec} patch tokens"));
    assert_eq!(
        h.state()
            .settings_view
            .draft
            .pipeline
            .map_backbone
            .as_ref()
            .map(ToString::to_string),
        Some(spec.clone())
    );
    assert!(h.state().settings_view.problems().is_empty());
    h.get_by_label("Save").click();
    wait_for(&mut h, "the save", |a| {
        !a.saving_settings() && a.settings.pipeline.map_backbone.is_some()
    });
    let text = std::fs::read_to_string(Settings::path_in(ws.path())).unwrap();
    assert!(
        text.contains(&format!("map_backbone = \"{spec}\"")),
        "{text}"
    );

    set_text(&mut h, "Anomaly map backbone", "descriptor");
    assert_eq!(h.state().settings_view.draft.pipeline.map_backbone, None);
    h.get_by_label("Save").click();
    wait_for(&mut h, "the save", |a| {
        !a.saving_settings() && a.settings.pipeline.map_backbone.is_none()
    });
    let text = std::fs::read_to_string(Settings::path_in(ws.path())).unwrap();
    assert!(!text.contains("map_backbone"), "{text}");
}

#[test]
fn the_local_model_field_is_checked_as_typed_and_names_what_is_missing() {
    let ws = tempfile::tempdir().unwrap();
    let mut h = harness(app_on(ws.path(), Tab::Settings));
    h.run_steps(2);
    h.get_by_label("No local model chosen.");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_qwen3vl");
    set_text(
        &mut h,
        "Model folder or hf: name",
        &fixture.display().to_string(),
    );
    wait_until(&mut h, "the fixture folder's check", |h| {
        h.query_by_label_contains("found weights").is_some()
    });
    for line in [
        "found config",
        "found tokenizer",
        "found template",
        "found image processor",
        "memory needed: at most",
    ] {
        h.get_by_label_contains(line);
    }
    h.get_by_label("Ready: every file the model needs is there.");
    assert!(
        h.query_by_label("Download").is_none(),
        "a folder is never downloaded"
    );
    assert_eq!(
        h.state().settings_view.draft.local_model.as_deref(),
        Some(fixture.display().to_string().as_str())
    );

    let partial = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture.join("config.json"),
        partial.path().join("config.json"),
    )
    .unwrap();
    set_text(
        &mut h,
        "Model folder or hf: name",
        &partial.path().display().to_string(),
    );
    wait_until(&mut h, "the partial folder's check", |h| {
        h.query_by_label_contains("missing: tokenizer.json")
            .is_some()
    });
    h.get_by_label_contains("found config");
    h.get_by_label_contains("missing: model.safetensors");
    assert!(h.query_by_label_contains("found weights").is_none());

    // A hub name that is not in the cache offers Download, and nothing is fetched
    // until it is pressed.
    set_text(
        &mut h,
        "Model folder or hf: name",
        "hf:nobody-org/not-cached-model",
    );
    wait_until(&mut h, "the hub name's check", |h| {
        h.query_by_label_contains("fetch it with: echo-workbench model download")
            .is_some()
    });
    h.get_by_label("Download");
    h.run_steps(3);
    assert!(
        h.query_by_label_contains("Downloading").is_none(),
        "no download runs unasked"
    );
}

#[test]
fn download_fetches_a_hub_name_into_the_cache_only_when_pressed() {
    use crate::common::fake_hub::{FakeHub, HubState, REPO};
    let fake = FakeHub::start(HubState::new());
    let hub = fake.hub(None);
    let ws = tempfile::tempdir().unwrap();
    let mut app = app_on(ws.path(), Tab::Settings);
    app.settings_view.use_hub(hub.clone());
    let mut h = harness(app);
    h.run_steps(2);
    // The cache is a fresh folder, so the check reports the name as not cached.
    let spec = format!("hf:{REPO}");
    set_text(&mut h, "Model folder or hf: name", &spec);
    wait_until(&mut h, "the hub name's check", |h| {
        h.query_by_label("Download").is_some()
    });
    assert!(fake.seen().is_empty(), "typing a name fetches nothing");
    // The section may be below the fold: press it as assistive technology does.
    h.get_by_label("Download").click_accesskit();
    wait_until(&mut h, "the download", |h| {
        h.query_by_label_contains("Downloaded 7 files into")
            .is_some()
    });
    h.get_by_label_contains(&format!(
        "Downloaded 7 files into {}",
        hub.cache_root.display()
    ));
    assert!(!fake.seen().is_empty());
    // The name is checked again once the files are there, in the same cache.
    wait_until(&mut h, "the check after the download", |h| {
        h.query_by_label("Ready: every file the model needs is there.")
            .is_some()
    });
    h.get_by_label_contains("found weights");
    assert!(h.query_by_label("Download").is_none());
    assert!(hub.repo_folder(REPO).join("refs/main").is_file());
}

/// A complete local model folder can be made the endpoint Inspect asks, loaded
/// ahead of the first question, and unloaded again.
#[test]
fn a_local_model_is_made_the_active_endpoint_loaded_and_unloaded() {
    // The app's loaded model is one per process: no other test may load or
    // unload it meanwhile.
    let _alone = crate::drive::alone();
    let ws = tempfile::tempdir().unwrap();
    let mut h = harness(app_on(ws.path(), Tab::Settings));
    h.run_steps(2);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_qwen3vl");
    set_text(
        &mut h,
        "Model folder or hf: name",
        &fixture.display().to_string(),
    );
    wait_until(&mut h, "the fixture folder's check", |h| {
        h.query_by_label("Answer with it").is_some()
    });
    h.get_by_label("Answer with it").click_accesskit();
    h.run_steps(2);
    let url = format!("local:{}", fixture.display());
    let draft = &h.state().settings_view.draft;
    let active = draft.active_endpoint().unwrap();
    assert_eq!(active.base_url, url);
    assert_eq!(active.max_in_flight, 1);
    h.get_by_label("Inspect answers with it (the active endpoint).");
    let count = h.state().settings_view.draft.endpoints.len();

    if h.query_by_label("Load").is_some() {
        h.get_by_label("Load").click_accesskit();
    }
    wait_until(&mut h, "the model to load", |h| {
        h.query_by_label_contains("Loaded in").is_some()
    });
    h.get_by_label("Unload").click_accesskit();
    h.run_steps(2);
    h.get_by_label("Load");
    assert_eq!(h.state().settings_view.draft.endpoints.len(), count);
}
