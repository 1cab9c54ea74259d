//! Knowledge files as MMAD writes them survive import and export byte for byte, and
//! the Knowledge tab's preview is the pipeline's own selection.

use std::sync::Arc;

use echo_workbench::curate::preview::{ModeOutcome, outcome_of, preview_question};
use echo_workbench::dataset::{DatasetRoot, MmadDataset};
use echo_workbench::echo::backend::ScriptedBackend;
use echo_workbench::echo::pipeline::{PipelineSettings, answer};
use echo_workbench::echo::plan::{KnowledgeMode, ReferenceKind};
use echo_workbench::echo::query::Query;
use echo_workbench::echo::{ExpertName, PipelineContext};
use echo_workbench::jobs::CancelToken;
use echo_workbench::knowledge::KnowledgeBase;
use echo_workbench::knowledge::versions::VersionStore;

use crate::common::root as repo;

#[test]
fn import_then_export_is_byte_equal() {
    for rel in [
        "assets/sample/domain_knowledge.json",
        "knowledge/domain_knowledge.json",
        "knowledge/condensed.json",
    ] {
        let src = repo().join(rel);
        let original = std::fs::read(&src).unwrap();
        let kb = KnowledgeBase::load(&src).unwrap();
        let out = tempfile::tempdir().unwrap();
        // Export through the same path the app's Save uses (with a version).
        let target = out.path().join("exported.json");
        let store = VersionStore::in_workspace(out.path());
        store.save(&kb, &target, "export", None, None).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), original, "{rel}");
        let version = &store.list().unwrap()[0];
        assert_eq!(
            std::fs::read(store.dir().join(&version.file)).unwrap(),
            original,
            "{rel}: the version file"
        );
        assert_eq!(version.content_hash, kb.content_hash());
    }
}

fn sample() -> (
    MmadDataset,
    DatasetRoot,
    Arc<KnowledgeBase>,
    Arc<KnowledgeBase>,
) {
    let a = repo().join("assets/sample");
    (
        MmadDataset::load(&a.join("mmad.json")).unwrap(),
        DatasetRoot::new(&a),
        Arc::new(KnowledgeBase::load(&a.join("domain_knowledge.json")).unwrap()),
        Arc::new(KnowledgeBase::load(&repo().join("knowledge/condensed.json")).unwrap()),
    )
}

/// Runs the full pipeline (MMAD similar templates as references, the preset's
/// reasoning) and returns the Knowledge Guide's trace and the first request sent.
fn pipeline_selection(
    mode: KnowledgeMode,
    key: &str,
    turn: usize,
) -> (echo_workbench::echo::ExpertTrace, String) {
    let (ds, root, kb, condensed) = sample();
    let settings = PipelineSettings {
        knowledge_mode: Some(mode),
        reference: Some(ReferenceKind::Similar),
        ..Default::default()
    };
    let ctx = PipelineContext::new(settings)
        .unwrap()
        .with_knowledge(kb)
        .with_condensed(condensed);
    let entry = &ds.entries[key];
    let query = Query::from_entry(&root, key, entry).unwrap();
    let backend = ScriptedBackend::constant("A");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let d = rt
        .block_on(answer(
            &backend,
            &ctx,
            &query,
            &entry.conversation[turn],
            &|_| {},
            &CancelToken::new(),
        ))
        .unwrap();
    assert!(
        d.traces[0].is_done(),
        "the reference step ran: {:?}",
        d.traces[0]
    );
    let kg = d
        .traces
        .iter()
        .find(|t| t.name == ExpertName::KnowledgeGuide)
        .unwrap()
        .clone();
    (kg, backend.requests()[0].text())
}

#[test]
fn preview_equals_the_pipelines_selection_in_every_mode() {
    let (ds, root, kb, condensed) = sample();
    let mut checked = 0;
    for key in [
        "Sample/washer/test/notch/000.png",
        "Sample/chip/test/bent_pin/001.png",
        "Sample/weave/test/hole/000.png",
    ] {
        let entry = &ds.entries[key];
        for (turn, q) in entry.conversation.iter().enumerate() {
            if q.qtype.as_str() != "Defect Classification"
                && q.qtype.as_str() != "Defect Description"
            {
                continue;
            }
            let preview = preview_question(
                &PipelineSettings::default(),
                kb.clone(),
                Some(condensed.clone()),
                &root,
                key,
                entry,
                turn,
                tokio::runtime::Runtime::new().unwrap().handle(),
            )
            .unwrap();
            for m in &preview.modes {
                let (trace, first_request) = pipeline_selection(m.mode, key, turn);
                match &m.outcome {
                    ModeOutcome::NeedsModel { request_text } => {
                        assert_eq!(m.mode, KnowledgeMode::Llm);
                        assert_eq!(request_text, &first_request, "{key} {turn}");
                    }
                    snippet => {
                        assert!(
                            matches!(snippet, ModeOutcome::Snippet { .. }),
                            "{snippet:?}"
                        );
                        assert_eq!(snippet, &outcome_of(&trace), "{key} {turn} {}", m.mode);
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 12, "{checked}");
}

/// A knowledge file or settings file that is a symlink (into a dotfiles repository,
/// say) gets its target updated; the link stays a link.
#[cfg(unix)]
#[test]
fn saving_through_a_symlink_writes_the_links_target() {
    use echo_workbench::config::Settings;
    let ws = tempfile::tempdir().unwrap();
    let shared = ws.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let real = shared.join("domain_knowledge.json");
    std::fs::copy(repo().join("assets/sample/domain_knowledge.json"), &real).unwrap();
    let link = ws.path().join("domain_knowledge.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let mut kb = KnowledgeBase::load(&link).unwrap();
    let (ds, cats) = kb.datasets.iter_mut().next().unwrap();
    let ds = ds.clone();
    let (cat, entries) = cats.iter_mut().next().unwrap();
    let cat = cat.clone();
    let (_, text) = entries.iter_mut().next().unwrap();
    text.push_str(" Edited through the link.");
    VersionStore::in_workspace(ws.path())
        .save(&kb, &link, "through a link", None, None)
        .unwrap();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let reread = KnowledgeBase::load(&real).unwrap();
    let first = reread.datasets[&ds][&cat].values().next().unwrap();
    assert!(first.ends_with("Edited through the link."), "{first}");

    let real_settings = shared.join("settings.toml");
    std::fs::write(&real_settings, Settings::default().to_toml()).unwrap();
    let settings_link = ws.path().join("settings.toml");
    std::os::unix::fs::symlink(&real_settings, &settings_link).unwrap();
    let mut settings = Settings::load(&settings_link).unwrap();
    settings.active_endpoint = 0;
    settings.endpoints[0].model = "through-the-link".into();
    settings.save(&settings_link).unwrap();
    assert!(
        std::fs::symlink_metadata(&settings_link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::read_to_string(&real_settings)
            .unwrap()
            .contains("through-the-link")
    );
}
