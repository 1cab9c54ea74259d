//! The Inspect tab driven through egui_kittest: picking images (browser, typed path,
//! drag and drop), the retrieved reference, questions answered by the real pipeline
//! against the in-repo mock server, failures, verdicts and their CSV, and how long
//! an image takes to appear with its reference.
#![cfg(feature = "gui")]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use echo_workbench::dataset::{DatasetRoot, MmadDataset};
use echo_workbench::jobs::{CancelToken, NoProgress};
use echo_workbench::memory::{
    BuildOptions, IndexKind, ReferenceMemory, build_memory, collect_images,
};
use echo_workbench::mllm::EndpointConfig;
use echo_workbench::mllm::mock::{Fault, FaultPlan, MockConfig, MockServer, Oracle, Responder};
use echo_workbench::ui::trace_view::Outcome;
use echo_workbench::ui::{Command, LoadedReference, Persisted, Slot, WorkbenchApp};
use echo_workbench::verdicts::{ImageId, Verdict, VerdictStore};
use echo_workbench::vision::descriptor::DescriptorEmbedder;
use eframe::egui;
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};

use crate::common::repo;
use crate::drive::{alone as serial, wait_for};

/// The longest `frame_ui` call seen by any harness of this test binary, in µs.
static LONGEST_FRAME_US: AtomicU64 = AtomicU64::new(0);
/// Every `frame_ui` duration (µs) while recording is on (the timing test).
static FRAMES_US: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());
static RECORD_FRAMES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn harness_sized(app: WorkbenchApp, size: [f32; 2]) -> Harness<'static, WorkbenchApp> {
    Harness::builder().with_size(size).build_ui_state(
        |ui, app: &mut WorkbenchApp| {
            let t = Instant::now();
            app.frame_ui(ui);
            let us = t.elapsed().as_micros() as u64;
            LONGEST_FRAME_US.fetch_max(us, Ordering::Relaxed);
            if RECORD_FRAMES.load(Ordering::Relaxed) {
                FRAMES_US.lock().unwrap().push(us);
            }
        },
        app,
    )
}

fn harness(app: WorkbenchApp) -> Harness<'static, WorkbenchApp> {
    harness_sized(app, [1440.0, 900.0])
}

/// The sample's 24 normal training images, embedded with the weight-free
/// descriptor (with re-ranking thumbnails, as the CLI builds memories).
fn reference() -> LoadedReference {
    static MEM: OnceLock<Arc<ReferenceMemory>> = OnceLock::new();
    let memory = MEM
        .get_or_init(|| {
            let root = repo("assets/sample");
            let images = collect_images(&root, None).unwrap();
            let options = BuildOptions {
                index: IndexKind::Exact,
                thumbs: true,
                ..BuildOptions::default()
            };
            let (m, report) = build_memory(
                "descriptor",
                &root,
                &images,
                &DescriptorEmbedder,
                &options,
                &NoProgress,
                &CancelToken::new(),
            )
            .unwrap();
            assert_eq!(report.embedded, 24);
            Arc::new(m)
        })
        .clone();
    LoadedReference {
        memory,
        embedder: Arc::new(DescriptorEmbedder),
        origin: "sample normal images (test)".into(),
    }
}

/// An app on a fresh workspace, with the sample memory loaded as the shell would.
fn app(workspace: &Path) -> WorkbenchApp {
    let mut app = WorkbenchApp::with_workspace(Persisted::default(), workspace.to_path_buf());
    // The shell builds a memory of its own at start; let it land first, so it cannot
    // replace the test's memory half-way through a test.
    let start = Instant::now();
    while app.reference.is_none() && app.reference_service.error.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the start-up memory"
        );
        app.poll();
        std::thread::sleep(Duration::from_millis(5));
    }
    app.reference = Some(reference());
    app.reference_generation += 1;
    app
}

fn endpoint(url: String) -> EndpointConfig {
    EndpointConfig {
        name: "mock".into(),
        base_url: url,
        model: "mock-vl".into(),
        timeout_s: 20.0,
        max_retries: 0,
        ..EndpointConfig::default()
    }
}

/// The mock server answering from the sample's answer key (query images hashed).
fn oracle_server(faults: FaultPlan) -> MockServer {
    let dataset = MmadDataset::load(&repo("assets/sample/mmad.json")).unwrap();
    let root = DatasetRoot::new(repo("assets/sample"));
    MockServer::start(MockConfig {
        responder: Responder::oracle(Oracle::from_mmad(&dataset, Some(&root))),
        faults,
        ..MockConfig::default()
    })
    .unwrap()
}

fn select(h: &mut Harness<'static, WorkbenchApp>, key: &str) {
    wait_for(h, "dataset", |a| a.dataset.is_some());
    // The browser lists only the rows in view; others are picked as it would.
    match h.query_by_label_contains(key) {
        Some(row) => row.click(),
        None => h.state_mut().push(Command::SelectImage(key.to_string())),
    }
    let key = key.to_string();
    wait_for(h, "query and reference", move |a| {
        a.inspect.selected.as_deref() == Some(&key) && a.inspect.reference_shown()
    });
}

/// A node's text, whether accesskit keeps it as label or value.
fn text_of(node: &egui_kittest::Node<'_>) -> String {
    let n = node.accesskit_node();
    n.label().or_else(|| n.value()).unwrap_or_default()
}

fn run_finished(a: &WorkbenchApp, slot: Slot) -> bool {
    !a.inspect.running() && a.inspect.run(slot).is_some_and(|r| !r.is_running())
}

const SCRATCH: &str = "Sample/washer/test/scratch/000.png";

#[test]
fn selecting_an_image_shows_its_reference_and_the_top_k_strip() {
    let _serial = serial();
    let ws = tempfile::tempdir().unwrap();
    let mut h = harness(app(ws.path()));
    select(&mut h, SCRATCH);
    let r = h.state().inspect.retrieval.clone().expect("retrieved");
    assert!(r.image.ends_with(SCRATCH));
    assert_eq!(r.candidates.len(), 5, "settings.reference.top_k");
    let best = &r.candidates[0];
    assert_eq!(best.category.as_deref(), Some("washer"));
    assert!(
        best.rel_path.contains("washer/train/good/"),
        "{}",
        best.rel_path
    );
    assert_eq!(r.embedder, "descriptor-v1");
    // The caption names file, score, embedder and scope.
    let caption = r.caption(0);
    assert!(
        caption.contains(&best.rel_path)
            && caption.contains("cosine 0.")
            && caption.contains("global scope"),
        "{caption}"
    );
    // Shown in the strip (and by the compare panel).
    assert!(h.get_all_by_label(&caption).count() >= 1);
    h.get_by_label("Top 5:");
    // Another candidate becomes the reference when clicked.
    let second = r.caption(1);
    assert_eq!(h.query_all_by_label(&second).count(), 0);
    h.get_by_label_contains("2. ").click_accesskit();
    wait_for(&mut h, "second reference", |a| a.inspect.reference_shown());
    assert!(h.get_all_by_label(&second).count() >= 1);
    assert_eq!(h.query_all_by_label(&caption).count(), 0);
    // Its questions, each with its ground truth.
    h.get_by_label("Questions (6)");
    assert_eq!(h.get_all_by_label_contains("(ground truth)").count(), 6);

    // A new memory (generation bump) redoes the retrieval.
    h.state_mut().settings.reference.top_k = 2;
    h.state_mut().reference_generation += 1;
    wait_for(&mut h, "retrieval again", |a| {
        a.inspect.reference_shown()
            && a.inspect
                .retrieval
                .as_ref()
                .is_some_and(|r| r.candidates.len() == 2)
    });
    h.get_by_label("Top 2:");
}

#[test]
fn without_a_memory_the_tab_says_it_is_loading() {
    let _serial = serial();
    let ws = tempfile::tempdir().unwrap();
    let mut app = WorkbenchApp::with_workspace(Persisted::default(), ws.path().to_path_buf());
    app.reference = None;
    let mut h = harness(app);
    wait_for(&mut h, "first image", |a| a.inspect.shown_image().is_some());
    h.get_by_label_contains("Reference memory is loading…");
    assert!(h.state().inspect.retrieval.is_none());
    // It arrives: the reference appears without another click.
    h.state_mut().reference = Some(reference());
    h.state_mut().reference_generation += 1;
    wait_for(&mut h, "reference", |a| a.inspect.reference_shown());
    assert!(
        h.query_by_label_contains("Reference memory is loading")
            .is_none()
    );
    assert!(h.get_all_by_label_contains("cosine 0.").count() >= 1);
}

#[test]
fn a_question_fills_all_four_expert_cards_and_shows_the_answer() {
    let _serial = serial();
    let server = oracle_server(FaultPlan::none());
    let ws = tempfile::tempdir().unwrap();
    let mut app = app(ws.path());
    app.settings.endpoints = vec![endpoint(server.url())];
    let mut h = harness(app);
    select(&mut h, SCRATCH);
    // Defect Description: the Echo preset runs every expert for it.
    h.get_by_label("Run Q4").click_accesskit();
    wait_for(&mut h, "the answer", |a| run_finished(a, Slot::Mmad(3)));
    let run = h.state().inspect.run(Slot::Mmad(3)).unwrap().clone();
    let Some(Outcome::Answered(d)) = &run.outcome else {
        panic!("no answer: {:?}", run.outcome);
    };
    assert_eq!(d.letter.as_deref(), Some(run.question.answer.as_str()));
    assert_eq!(d.correct, Some(true));
    let text = d.option_text.clone().unwrap();
    h.get_by_label(&format!("Answer: {}. {text}", run.question.answer));
    assert!(
        h.get_all_by_label("correct").count() >= 2,
        "banner, summary and card badges"
    );
    for (n, name) in [
        "Reference Extractor",
        "Knowledge Guide",
        "Reasoning Expert",
        "Decision Maker",
    ]
    .iter()
    .enumerate()
    {
        h.get_by_label(&format!("{}. {name}", n + 1));
    }
    assert_eq!(h.get_all_by_label_contains("done in ").count(), 4);
    // Each card shows its expert's work.
    h.get_by_label_contains("Source: the reference memory; scope: global");
    h.get_by_label_contains("sent  Sample/washer/train/good/");
    h.get_by_label_contains("Defect knowledge for washer");
    h.get_by_label_contains("Mode: condensed");
    h.get_by_label_contains("Mode: inline scaffold");
    h.get_by_label_contains("Raw reply:");
    h.get_by_label_contains("Latency ");
    // What reached the model: the retrieved reference first, then the query.
    let body = server.requests().pop().unwrap();
    let images = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["type"] == "image_url")
        .count();
    assert_eq!(images, 2);
    // Copy buttons put the trace on the clipboard.
    h.get_by_label("Copy JSON").click_accesskit();
    h.step();
    let copied = h
        .output()
        .platform_output
        .commands
        .iter()
        .find_map(|c| match c {
            egui::OutputCommand::CopyText(t) => Some(t.clone()),
            _ => None,
        })
        .expect("copied");
    let v: serde_json::Value = serde_json::from_str(&copied).unwrap();
    assert_eq!(v["experts"].as_array().unwrap().len(), 4);
    assert_eq!(v["answer"]["correct"], true);
}

/// The anomaly map's card (issue 18): with `echo+map` it takes its turn between
/// the Reference Extractor and the Knowledge Guide, its card shows the score
/// against the category's threshold, the regions with their grid names and the
/// time, and the model got the hint and the outlined query as a third image.
#[test]
fn echo_plus_map_shows_the_anomaly_map_card() {
    let _serial = serial();
    let server = oracle_server(FaultPlan::none());
    let ws = tempfile::tempdir().unwrap();
    let mut app = app(ws.path());
    app.settings.endpoints = vec![endpoint(server.url())];
    app.settings.pipeline.preset = "echo+map".into();
    let mut h = harness(app);
    select(&mut h, SCRATCH);
    h.get_by_label("Run Q4").click_accesskit();
    wait_for(&mut h, "the answer", |a| run_finished(a, Slot::Mmad(3)));
    let run = h.state().inspect.run(Slot::Mmad(3)).unwrap().clone();
    assert!(
        matches!(run.outcome, Some(Outcome::Answered(_))),
        "{:?}",
        run.outcome
    );
    for (n, name) in [
        "Reference Extractor",
        "Anomaly Map",
        "Knowledge Guide",
        "Reasoning Expert",
        "Decision Maker",
    ]
    .iter()
    .enumerate()
    {
        h.get_by_label(&format!("{}. {name}", n + 1));
    }
    assert_eq!(h.get_all_by_label_contains("done in ").count(), 5);
    let map = run
        .traces()
        .find_map(|t| t.output.map().cloned())
        .expect("the map's trace");
    h.get_by_label_contains(&format!(
        "Score {:.3} against the `washer` threshold {:.3}",
        map.score, map.threshold
    ));
    h.get_by_label_contains(&format!("Region 1: {}", map.regions[0].grid));
    h.get_by_label_contains(&format!("map computed in {} ms", map.map_ms));
    h.get_by_label_contains("Told the Decision Maker: The most unusual region is at the ");
    let body = server.requests().pop().unwrap();
    let parts: Vec<serde_json::Value> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .collect();
    let images = parts.iter().filter(|p| p["type"] == "image_url").count();
    assert_eq!(images, 3, "reference, query and the outlined query");
    assert!(parts.iter().any(|p| {
        p["text"]
            .as_str()
            .is_some_and(|t| t.contains(map.hint.as_deref().unwrap()))
    }));
}

#[test]
fn run_all_answers_every_question_in_turn() {
    let _serial = serial();
    let server = oracle_server(FaultPlan::none());
    let ws = tempfile::tempdir().unwrap();
    let mut app = app(ws.path());
    app.settings.endpoints = vec![endpoint(server.url())];
    let mut h = harness_sized(app, [1024.0, 700.0]);
    select(&mut h, "Sample/chip/test/crack/001.png");
    h.get_by_label("Run all (6)").click_accesskit();
    h.step();
    assert!(h.state().inspect.running());
    wait_for(&mut h, "all answers", |a| {
        !a.inspect.running()
            && (0..6).all(|i| {
                a.inspect
                    .run(Slot::Mmad(i))
                    .is_some_and(|r| !r.is_running())
            })
    });
    for i in 0..6 {
        let run = h.state().inspect.run(Slot::Mmad(i)).unwrap();
        let d = run
            .decision()
            .unwrap_or_else(|| panic!("Q{}: {:?}", i + 1, run.outcome));
        assert_eq!(d.correct, Some(true), "Q{}", i + 1);
    }
    assert_eq!(
        server.chat_count(),
        6,
        "one call per question (inline reasoning, condensed knowledge)"
    );
}

#[test]
fn a_failing_endpoint_shows_its_error_in_the_decision_card() {
    let _serial = serial();
    let server = oracle_server(FaultPlan::always(Fault::Http500));
    let ws = tempfile::tempdir().unwrap();
    let mut app = app(ws.path());
    app.settings.endpoints = vec![endpoint(server.url())];
    let mut h = harness(app);
    select(&mut h, SCRATCH);
    h.get_by_label("Run Q1").click_accesskit();
    wait_for(&mut h, "the failure", |a| run_finished(a, Slot::Mmad(0)));
    let run = h.state().inspect.run(Slot::Mmad(0)).unwrap();
    let Some(Outcome::Failed(message)) = &run.outcome else {
        panic!("expected a failure: {:?}", run.outcome);
    };
    assert!(message.contains("500"), "{message}");
    h.get_by_label_contains("failed after");
    let card = h.get_by_label_contains("Failed: ");
    assert!(text_of(&card).contains("500"), "{:?}", text_of(&card));
    h.get_by_label_contains("No answer: ");
    // The Reference Extractor still did its work.
    assert_eq!(h.get_all_by_label_contains("done in ").count(), 1);

    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    h.state_mut().settings.endpoints = vec![endpoint(format!("http://127.0.0.1:{port}/v1"))];
    h.get_by_label("Run Q1").click_accesskit();
    h.step();
    assert!(h.state().inspect.running());
    wait_for(&mut h, "the second failure", |a| {
        run_finished(a, Slot::Mmad(0))
    });
    let card = h.get_by_label_contains("Failed: ");
    let text = text_of(&card);
    assert!(
        text.contains(&port.to_string()) || text.to_lowercase().contains("connect"),
        "{text}"
    );
}

#[test]
fn a_free_text_question_runs_through_the_pipeline() {
    let _serial = serial();
    let server = oracle_server(FaultPlan::none());
    let ws = tempfile::tempdir().unwrap();
    let mut app = app(ws.path());
    app.settings.endpoints = vec![endpoint(server.url())];
    let mut h = harness(app);
    select(&mut h, SCRATCH);
    h.get_by_label("Ask your own question").click_accesskit();
    h.run_steps(2);
    assert!(
        h.get_by_label("Run question")
            .accesskit_node()
            .is_disabled(),
        "no question yet"
    );
    let field = h.get_by_role_and_label(Role::MultilineTextInput, "Question");
    field.focus();
    h.step();
    h.get_by_role_and_label(Role::MultilineTextInput, "Question")
        .type_text("Is the rim of this washer bent?");
    h.run_steps(2);
    h.get_by_label("Type: Anomaly Detection (classified from the text)");
    h.get_by_label("Run question").click_accesskit();
    wait_for(&mut h, "the answer", |a| run_finished(a, Slot::Custom));
    let run = h.state().inspect.run(Slot::Custom).unwrap();
    let d = run.decision().expect("answered");
    assert_eq!(d.correct, None, "no ground truth for a free-text question");
    assert!(d.letter.is_some());
    h.get_by_label("no ground truth to compare with");
    let prompt = serde_json::to_string(&server.requests().pop().unwrap()).unwrap();
    assert!(
        prompt.contains("Is the rim of this washer bent?"),
        "{prompt}"
    );
}

#[test]
fn typed_and_dropped_paths_open_images() {
    let _serial = serial();
    let ws = tempfile::tempdir().unwrap();
    let loose = ws.path().join("part 7.png");
    std::fs::copy(repo("assets/sample").join(SCRATCH), &loose).unwrap();
    let mut h = harness(app(ws.path()));
    wait_for(&mut h, "dataset", |a| a.dataset.is_some());

    // A typed path inside the dataset opens the entry with its questions.
    let field = h.get_by_role_and_label(Role::TextInput, "Path");
    field.focus();
    h.step();
    let typed = repo("assets/sample").join("Sample/weave/test/hole/002.png");
    h.get_by_role_and_label(Role::TextInput, "Path")
        .type_text(&typed.display().to_string());
    h.step();
    h.get_by_label("Open").click();
    wait_for(&mut h, "typed image", |a| {
        a.inspect.selected.as_deref() == Some("Sample/weave/test/hole/002.png")
            && a.inspect.reference_shown()
    });
    h.get_by_label("Questions (6)");

    // A dropped file outside the dataset opens on its own, with the free-text form.
    #[derive(Debug)]
    struct Dropped(PathBuf);
    impl egui::DroppedFile for Dropped {
        fn path(&self) -> &Path {
            &self.0
        }
        fn bytes(&self) -> Result<Vec<u8>, String> {
            std::fs::read(&self.0).map_err(|e| e.to_string())
        }
    }
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(loose.clone())));
    let expected = loose.clone();
    wait_for(&mut h, "dropped image", move |a| {
        a.inspect.current_image() == Some(expected.as_path()) && a.inspect.reference_shown()
    });
    assert_eq!(h.state().inspect.selected, None);
    h.get_by_label("(not in the dataset)");
    // The next start reopens the dropped file, not the dataset image before it.
    assert_eq!(
        h.state().persisted.open_file.as_deref(),
        Some(loose.as_path())
    );
    let restarted =
        WorkbenchApp::with_workspace(h.state().persisted.clone(), ws.path().to_path_buf());
    let mut again = harness(restarted);
    let expected = loose.clone();
    wait_for(&mut again, "the dropped image after a restart", move |a| {
        a.inspect.current_image() == Some(expected.as_path())
    });
    drop(again);
    h.get_by_label("Run question");
    let r = h.state().inspect.retrieval.as_ref().unwrap();
    assert_eq!(
        r.candidates[0].category.as_deref(),
        Some("washer"),
        "a copy of a washer finds washers"
    );

    // A path that does not exist says so.
    h.state_mut().inspect.path_text = ws.path().join("missing.png").display().to_string();
    h.get_by_label("Open").click();
    let missing = ws.path().join("missing.png");
    wait_for(&mut h, "error", move |a| {
        a.inspect.current_image() == Some(missing.as_path()) && !a.inspect.busy()
    });
    assert!(
        h.get_all_by_label_contains("missing.png").count() >= 2,
        "title and error"
    );
    assert!(
        h.query_by_label_contains("No reference: ").is_some()
            || h.query_by_label_contains("cannot").is_some()
    );
}

/// RFC 4180 reader for the check (quoted fields, doubled quotes, CRLF).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

#[test]
fn verdicts_are_saved_reloaded_and_exported() {
    let _serial = serial();
    let ws = tempfile::tempdir().unwrap();
    let note = "scratch, \"deep\" near rim";
    {
        let mut h = harness(app(ws.path()));
        select(&mut h, SCRATCH);
        h.get_by_label("No verdict saved for this image yet.");
        h.get_by_label("Verdict Defect").click_accesskit();
        h.get_by_role_and_label(Role::TextInput, "Note").focus();
        h.step();
        h.get_by_role_and_label(Role::TextInput, "Note")
            .type_text(note);
        h.step();
        h.get_by_label("Save verdict").click_accesskit();
        let file = VerdictStore::path_in(ws.path());
        wait_for(&mut h, "saved file", move |a| {
            file.is_file() && !a.inspect.busy()
        });
        h.get_by_label_contains("Defect: saved 20");
    }
    let store = VerdictStore::load(&VerdictStore::path_in(ws.path())).unwrap();
    let id = ImageId::entry(&repo("assets/sample/mmad.json"), SCRATCH);
    let rec = store.get(&id).expect("keyed by dataset file and key");
    assert_eq!((rec.verdict, rec.note.as_str()), (Verdict::Defect, note));

    // A new app on the same workspace shows it when the image is opened again.
    let mut h = harness(app(ws.path()));
    select(&mut h, SCRATCH);
    h.get_by_label_contains("Defect: saved 20");
    assert_eq!(
        h.get_by_role_and_label(Role::TextInput, "Note")
            .value()
            .as_deref(),
        Some(note)
    );
    // Another image has none.
    select(&mut h, "Sample/washer/test/good/001.png");
    h.get_by_label("No verdict saved for this image yet.");

    // Exported to the typed path and read back.
    let csv_path = ws.path().join("reports/verdicts.csv");
    let field = h.get_by_role_and_label(Role::TextInput, "CSV path");
    field.focus();
    h.step();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.step();
    h.get_by_role_and_label(Role::TextInput, "CSV path")
        .type_text(&csv_path.display().to_string());
    h.step();
    h.get_by_label("Export").click_accesskit();
    let p = csv_path.clone();
    wait_for(&mut h, "export", move |a| p.is_file() && !a.inspect.busy());
    h.get_by_label_contains("Exported 1 verdict(s) to");
    let rows = parse_csv(&std::fs::read_to_string(&csv_path).unwrap());
    assert_eq!(rows[0], ["image", "verdict", "note", "saved_at"]);
    assert_eq!(rows.len(), 2);
    assert!(rows[1][0].ends_with(SCRATCH), "{:?}", rows[1]);
    assert_eq!(rows[1][1], "defect");
    assert_eq!(rows[1][2], note);
    assert_eq!(rows[1][3], rec.saved_at);
}

#[test]
fn a_malformed_verdicts_file_is_reported_and_never_overwritten() {
    let _serial = serial();
    let ws = tempfile::tempdir().unwrap();
    let file = VerdictStore::path_in(ws.path());
    std::fs::write(&file, "{ not json").unwrap();
    let mut h = harness(app(ws.path()));
    select(&mut h, SCRATCH);
    wait_for(&mut h, "load error", |a| !a.inspect.busy());
    h.get_by_label_contains("is not valid");
    h.get_by_label("Verdict Defect").click_accesskit();
    h.step();
    assert!(
        h.get_by_label("Save verdict")
            .accesskit_node()
            .is_disabled()
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "{ not json");
}

/// Time from picking an image (the command) until the query and its reference are
/// decoded and on screen, over all sample images, with the descriptor embedder and
/// no model; and the longest frame meanwhile, which shows no frame waits on I/O.
#[test]
fn an_image_and_its_reference_appear_quickly() {
    let _serial = serial();
    let ws = tempfile::tempdir().unwrap();
    let mut h = harness(app(ws.path()));
    wait_for(&mut h, "first image", |a| a.inspect.reference_shown());
    let keys: Vec<String> = h
        .state()
        .dataset
        .as_ref()
        .unwrap()
        .dataset
        .entries
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys.len(), 39);
    // Start from another image so that every pick changes the image.
    h.state_mut().apply(Command::SelectImage(keys[1].clone()));
    wait_for(&mut h, "warm-up", |a| a.inspect.reference_shown());
    LONGEST_FRAME_US.store(0, Ordering::Relaxed);
    RECORD_FRAMES.store(true, Ordering::Relaxed);
    let mut times = Vec::new();
    let mut retrieval_ms = Vec::new();
    for key in &keys {
        let t = Instant::now();
        h.state_mut().apply(Command::SelectImage(key.clone()));
        loop {
            h.step();
            let a = h.state();
            if a.inspect.selected.as_deref() == Some(key.as_str())
                && a.inspect.reference_shown()
                && a.inspect.current_image().is_some_and(|p| p.ends_with(key))
            {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{key} never appeared"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        times.push(t.elapsed());
        retrieval_ms.push(h.state().inspect.retrieval.as_ref().map_or(0, |r| r.ms));
    }
    RECORD_FRAMES.store(false, Ordering::Relaxed);
    let mut frames = std::mem::take(&mut *FRAMES_US.lock().unwrap());
    frames.sort();
    let pct = |p: f64| frames[((frames.len() - 1) as f64 * p) as usize] as f64 / 1e3;
    println!(
        "frame_ui over {} frames: median {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, {} over 50 ms",
        frames.len(),
        pct(0.5),
        pct(0.95),
        pct(0.99),
        frames.iter().filter(|&&f| f > 50_000).count()
    );
    retrieval_ms.sort();
    println!(
        "retrieval job alone: median {} ms, max {} ms",
        retrieval_ms[retrieval_ms.len() / 2],
        retrieval_ms.last().unwrap()
    );
    times.sort();
    let median = times[times.len() / 2];
    let max = *times.last().unwrap();
    let longest_frame = Duration::from_micros(LONGEST_FRAME_US.load(Ordering::Relaxed));
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "pick -> query and reference shown ({build} build, {} images): median {:.1} ms, max {:.1} ms; longest frame_ui {:.1} ms",
        times.len(),
        median.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        longest_frame.as_secs_f64() * 1e3
    );
    // The goal is 300 ms; debug builds on a loaded 2-core machine get room.
    let limit = if cfg!(debug_assertions) { 1500 } else { 300 };
    assert!(median < Duration::from_millis(limit), "median {median:?}");
    // A frame never waits for decoding or retrieval; the slowest single frames are
    // the scheduler on a loaded machine, so the bound is on the 95th percentile.
    let p95 = Duration::from_micros(frames[((frames.len() - 1) as f64 * 0.95) as usize]);
    let frame_limit = if cfg!(debug_assertions) { 250 } else { 50 };
    assert!(
        p95 < Duration::from_millis(frame_limit),
        "p95 frame {p95:?}"
    );
}

#[test]
fn cancel_stops_a_run_all_and_marks_what_did_not_run() {
    let _serial = serial();
    let dataset = MmadDataset::load(&repo("assets/sample/mmad.json")).unwrap();
    let server = MockServer::start(MockConfig {
        latency: Duration::from_millis(1500),
        responder: Responder::oracle(Oracle::from_mmad(&dataset, None)),
        ..MockConfig::default()
    })
    .unwrap();
    let ws = tempfile::tempdir().unwrap();
    let mut app = app(ws.path());
    app.settings.endpoints = vec![endpoint(server.url())];
    let mut h = harness(app);
    select(&mut h, SCRATCH);
    h.get_by_label("Run all (6)").click_accesskit();
    wait_for(&mut h, "the first model call", |a| {
        a.inspect.run(Slot::Mmad(0)).is_some_and(|r| {
            matches!(
                r.card(echo_workbench::echo::ExpertName::DecisionMaker),
                echo_workbench::ui::trace_view::CardState::Running { .. }
            )
        })
    });
    h.get_by_label_contains("Running 1 of 6");
    // The status bar names the work and offers its own Stop; the Cancel below is
    // the card's.
    h.get_by_label("ask the model (1 of 6)");
    let started = Instant::now();
    h.get_by_label("Cancel").click_accesskit();
    wait_for(&mut h, "the cancel", |a| !a.inspect.running());
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "cancel waits for no reply"
    );
    for i in 0..6 {
        let run = h.state().inspect.run(Slot::Mmad(i)).unwrap();
        assert_eq!(run.outcome, Some(Outcome::Cancelled), "Q{}", i + 1);
    }
    assert!(h.get_all_by_label("cancelled").count() >= 6);
}

#[test]
fn the_anomaly_view_shows_the_score_against_the_threshold() {
    let _serial = serial();
    let ws = tempfile::tempdir().unwrap();
    let mut h = harness(app(ws.path()));
    // A notched washer: plainly above its category's threshold (the faint
    // scratches of the sample sit just under it).
    select(&mut h, "Sample/washer/test/notch/000.png");
    // Nothing is computed until the view is opened.
    assert!(h.state().inspect.anomaly().result().is_none());
    assert!(!h.state().inspect.anomaly().busy());
    h.get_by_label("Anomaly").click();
    wait_for(&mut h, "the anomaly map", |a| {
        a.inspect.anomaly().result().is_some()
    });
    let s = h.state().inspect.anomaly().result().unwrap().clone();
    assert_eq!(s.category, "washer");
    assert_eq!((s.k, s.references.len()), (4, 4));
    assert!(
        s.references
            .iter()
            .all(|r| r.contains("washer/train/good/"))
    );
    assert!(s.has_threshold() && s.threshold > 0.0, "{s:?}");
    // The notch is flagged, and located.
    assert!(s.above(), "{s:?}");
    assert!(!s.regions.is_empty());
    let verdict = format!(
        "score {:.2} against the category threshold {:.2} (above: anomalous)",
        s.score, s.threshold
    );
    h.get_by_label_contains(&verdict);
    h.get_by_label(&format!("washer · k 4 · descriptor backbone · {} ms", s.ms));
    h.get_by_label(&format!("threshold {:.2}", s.threshold));

    // The opacity slider changes the view's state.
    let before = h.state().inspect.anomaly().opacity();
    h.get_by_role_and_label(Role::Slider, "Heatmap opacity")
        .focus();
    h.run_steps(1);
    h.key_press(egui::Key::ArrowRight);
    h.run_steps(2);
    let after = h.state().inspect.anomaly().opacity();
    assert!(after > before, "{before} -> {after}");

    // One more reference: computed again, against five.
    h.get_by_role_and_label(Role::SpinButton, "References")
        .set_value_accesskit(5.0);
    h.run_steps(2);
    assert_eq!(h.state().inspect.anomaly().k(), 5);
    wait_for(&mut h, "the map against five references", |a| {
        a.inspect.anomaly().result().is_some_and(|s| s.k == 5)
    });
    assert_eq!(
        h.state()
            .inspect
            .anomaly()
            .result()
            .unwrap()
            .references
            .len(),
        5
    );

    // Another image: the old map stays until the new one is ready.
    let good = "Sample/washer/test/good/001.png";
    h.state_mut().push(Command::SelectImage(good.to_string()));
    wait_for(&mut h, "the new map", |a| {
        a.inspect.anomaly().result().is_some_and(|s| !s.above())
            && a.inspect.current_image().is_some_and(|p| p.ends_with(good))
    });
    h.get_by_label_contains("(below: normal)");

    // The settings' map backbone: the same image computed again with it.
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_dinov2");
    let spec = format!("dinov2:{}", fixture.display());
    h.state_mut().settings.pipeline.map_backbone = Some(spec.parse().unwrap());
    wait_for(&mut h, "the map with DINOv2 patch tokens", |a| {
        a.inspect
            .anomaly()
            .result()
            .is_some_and(|s| s.backbone == spec)
    });
    let s = h.state().inspect.anomaly().result().unwrap().clone();
    assert_eq!((s.k, s.references.len()), (5, 5));
    h.get_by_label(&format!("washer · k 5 · {spec} backbone · {} ms", s.ms));
}

#[test]
fn without_a_memory_the_anomaly_view_says_so() {
    let _serial = serial();
    let ws = tempfile::tempdir().unwrap();
    let mut app = WorkbenchApp::with_workspace(Persisted::default(), ws.path().to_path_buf());
    app.reference = None;
    let mut h = harness(app);
    wait_for(&mut h, "first image", |a| a.inspect.shown_image().is_some());
    h.get_by_label("Anomaly").click();
    h.run_steps(2);
    h.get_by_label_contains("No reference memory yet");
    assert!(!h.state().inspect.anomaly().busy());
}

/// An endpoint `local:DIR` is the app's loaded model (issue 16): Inspect answers
/// with no server anywhere, the Decision Maker's request names the model, and the
/// status bar says it is loaded.
#[test]
fn a_local_model_answers_a_question_with_no_server() {
    let _serial = serial();
    let ws = tempfile::tempdir().unwrap();
    let fixture = repo("tests/fixtures/tiny_qwen3vl");
    let url = format!("local:{}", fixture.display());
    let mut app = app(ws.path());
    app.settings.endpoints = vec![EndpointConfig {
        name: "local".into(),
        max_tokens: 4,
        ..endpoint(url.clone())
    }];
    // A random model's reply holds U+FFFD (byte-level tokens decoded lossily),
    // which the app draws as a box (egui's default); the test harness would panic.
    let mut h = Harness::builder()
        .with_size([1440.0, 900.0])
        .allow_missing_glyphs()
        .build_ui_state(|ui, app: &mut WorkbenchApp| app.frame_ui(ui), app);
    select(&mut h, SCRATCH);
    h.get_by_label("Run Q1").click_accesskit();
    wait_for(&mut h, "the local model's answer", |a| {
        run_finished(a, Slot::Mmad(0))
    });
    let run = h.state().inspect.run(Slot::Mmad(0)).unwrap().clone();
    let Some(Outcome::Answered(d)) = &run.outcome else {
        panic!("no answer: {:?}", run.outcome);
    };
    let decision = d
        .traces
        .iter()
        .find(|t| t.name.key() == "decision_maker")
        .expect("a Decision Maker trace");
    let json = serde_json::to_value(decision).unwrap();
    assert_eq!(
        json["output"]["request_summary"]["model"], url,
        "asked the model in-process: {json}"
    );
    assert!(
        json["output"]["request_summary"]["prompt_tokens"]
            .as_u64()
            .unwrap()
            > 100
    );
    h.run_steps(2);
    h.get_by_label_contains(&format!("Local model: {} (loaded in", fixture.display()));
}
