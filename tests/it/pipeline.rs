//! The Echo pipeline end to end against a scripted backend that records every
//! request: which images and which knowledge reach the model for every question
//! type and preset, the prompt structure per type, the knowledge and reasoning
//! modes, the switches, the cache, failures, events and cancellation.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use echo_workbench::dataset::{DatasetRoot, MmadDataset, Question, QuestionType};
use echo_workbench::echo::backend::{RecordedPart, RecordedRequest};
use echo_workbench::echo::pipeline::PipelineEvent;
use echo_workbench::echo::plan::{
    ExpertSwitches, KnowledgeMode, ReasoningMode, ReferenceKind, ScopeMode,
};
use echo_workbench::echo::query::Query;
use echo_workbench::echo::{
    Decision, ExpertName, ExpertStatus, ExtractMethod, PipelineContext, PipelineError,
    PipelineSettings, ScriptedBackend, answer,
};
use echo_workbench::jobs::{CancelToken, NoProgress};
use echo_workbench::knowledge::KnowledgeBase;
use echo_workbench::memory::{
    BuildOptions, IndexKind, ReferenceMemory, build_memory, collect_images,
};
use echo_workbench::vision::ImageEmbedder;
use echo_workbench::vision::descriptor::DescriptorEmbedder;
use indexmap::IndexMap;

use crate::common::repo;

// Phrases of the bundled prompts that mark each block.
const REF_SENTENCE: &str = "Image 1 shows a defect-free";
const CONDENSED_LEAD: &str = "Defect knowledge for";
const CATEGORY_LEAD: &str = "Background knowledge about this product";
const FILTERED_LEAD: &str = "Knowledge that bears on this question";
const SCAFFOLD: &str = "Reason in three steps";
const QUESTION: &str = "Question:";
const INSTRUCTION: &str = "Reply with only the letter";
const OBSERVATIONS: &str = "Notes from a first comparison";
const REASONING_CALL: &str = "do not pick an option yet";
const SELECT_CALL: &str = "You prepare background knowledge";
const MMAD_ROLE: &str = "You are an industrial inspector";
const MMAD_SAMPLES: &str = "defect-free sample image(s)";
const MMAD_QUERY: &str = "The image to inspect:";

fn dataset() -> &'static MmadDataset {
    static DS: OnceLock<MmadDataset> = OnceLock::new();
    DS.get_or_init(|| MmadDataset::load(&repo("assets/sample/mmad.json")).unwrap())
}

fn root() -> DatasetRoot {
    DatasetRoot::new(repo("assets/sample"))
}

fn knowledge() -> Arc<KnowledgeBase> {
    static KB: OnceLock<Arc<KnowledgeBase>> = OnceLock::new();
    KB.get_or_init(|| {
        Arc::new(KnowledgeBase::load(&repo("assets/sample/domain_knowledge.json")).unwrap())
    })
    .clone()
}

fn condensed() -> Arc<KnowledgeBase> {
    static KB: OnceLock<Arc<KnowledgeBase>> = OnceLock::new();
    KB.get_or_init(|| Arc::new(KnowledgeBase::load(&repo("knowledge/condensed.json")).unwrap()))
        .clone()
}

/// The sample's 24 normal training images, embedded with the descriptor (with
/// re-ranking thumbnails, as the CLI builds it), exact index.
fn memory() -> (Arc<ReferenceMemory>, Arc<dyn ImageEmbedder>) {
    static MEM: OnceLock<Arc<ReferenceMemory>> = OnceLock::new();
    let mem = MEM
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
    (mem, Arc::new(DescriptorEmbedder))
}

fn context(settings: PipelineSettings) -> PipelineContext {
    let (m, e) = memory();
    PipelineContext::new(settings)
        .unwrap()
        .with_knowledge(knowledge())
        .with_condensed(condensed())
        .with_memory(m, e)
        .unwrap()
}

fn preset(name: &str) -> PipelineSettings {
    PipelineSettings {
        preset: name.into(),
        ..Default::default()
    }
}

/// A query and its question of the given type (an abnormal washer for defect
/// types, a normal one for the object types).
fn sample(qtype: &QuestionType) -> (Query, Question) {
    let key = if matches!(
        qtype,
        QuestionType::ObjectStructure | QuestionType::ObjectDetails
    ) {
        "Sample/washer/test/good/000.png"
    } else {
        "Sample/washer/test/scratch/000.png"
    };
    let entry = &dataset().entries[key];
    let q = entry
        .conversation
        .iter()
        .find(|q| &q.qtype == qtype)
        .unwrap_or_else(|| panic!("{key} has a {qtype} question"))
        .clone();
    (Query::from_entry(&root(), key, entry).unwrap(), q)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn run(
    backend: &ScriptedBackend,
    ctx: &PipelineContext,
    query: &Query,
    question: &Question,
) -> Result<Decision, PipelineError> {
    runtime().block_on(answer(
        backend,
        ctx,
        query,
        question,
        &|_| {},
        &CancelToken::new(),
    ))
}

fn last(backend: &ScriptedBackend) -> RecordedRequest {
    backend.requests().pop().expect("a request was sent")
}

fn pos(text: &str, marker: &str) -> usize {
    text.find(marker)
        .unwrap_or_else(|| panic!("`{marker}` is not in:\n{text}"))
}

fn rel(p: &Path) -> String {
    p.strip_prefix(repo("assets/sample"))
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Which images (in order) and which knowledge reach the model, for every type and preset.
#[test]
fn every_type_and_preset_sends_the_planned_images_and_knowledge() {
    use QuestionType::*;
    // (type, reference?, knowledge?, reasoning?) per preset, from the facts file.
    let echo = [
        (AnomalyDetection, true, false, false),
        (DefectClassification, true, true, false),
        (DefectLocalization, false, false, false),
        (DefectDescription, true, true, true),
        (DefectAnalysis, true, false, true),
        (ObjectClassification, true, false, false),
        (ObjectStructure, true, false, false),
        (ObjectDetails, true, false, false),
    ];
    let mmad = QuestionType::KNOWN.map(|t| (t, true, false, false));
    let full = QuestionType::KNOWN.map(|t| (t, true, true, true));
    for (name, table) in [("echo", echo), ("mmad", mmad), ("full", full)] {
        let ctx = context(preset(name));
        for (qtype, reference, knowledge, reasoning) in table {
            let backend = ScriptedBackend::constant("A");
            let (query, question) = sample(&qtype);
            let d = run(&backend, &ctx, &query, &question).unwrap();
            let what = format!("{name} / {qtype}");
            assert_eq!(backend.requests().len(), 1, "{what}: one model call");
            let req = last(&backend);
            let images: Vec<String> = req.images().iter().map(|p| rel(p)).collect();
            let entry = query.entry.as_ref().unwrap();
            let expected_ref = match (reference, name) {
                (false, _) => None,
                // MMAD's plain 1-shot: random_templates[0].
                (true, "mmad") => Some(entry.entry.random_templates[0].clone()),
                // Echo and full: the memory's top-1, as the trace says.
                _ => Some(rel(Path::new(
                    d.traces[0].output.to_value()["candidates"][0]["path"]
                        .as_str()
                        .unwrap(),
                ))),
            };
            let mut want = Vec::new();
            want.extend(expected_ref.clone());
            want.push(entry.key.clone());
            assert_eq!(images, want, "{what}: images in order, reference first");
            if let Some(r) = &expected_ref {
                assert!(r.starts_with("Sample/washer/train/good/"), "{what}: {r}");
            }
            let text = req.text();
            let has_knowledge = text.contains(CONDENSED_LEAD) || text.contains(CATEGORY_LEAD);
            assert_eq!(has_knowledge, knowledge, "{what}: knowledge\n{text}");
            if knowledge {
                // Echo's condensed text for the washer reached the model, not MMAD's good entry.
                let scratch = &condensed().datasets["Sample"]["washer"]["scratch"];
                assert!(text.contains(scratch.as_str()), "{what}");
                assert!(!text.contains("<Normal Washer>"), "{what}");
            }
            assert_eq!(
                text.contains(SCAFFOLD),
                reasoning,
                "{what}: reasoning\n{text}"
            );
            // The plan shown before running is what ran.
            let plan = ctx.plan(&qtype);
            for (step, trace) in plan.steps.iter().zip(&d.traces) {
                assert_eq!(step.expert, trace.name);
                assert_eq!(
                    step.runs,
                    trace.status == ExpertStatus::Done,
                    "{what}: {:?}",
                    trace
                );
            }
            assert_eq!(
                d.in_scope,
                // MMAD's protocol covers every type; Echo's method only the defect ones.
                name == "mmad" || qtype.is_defect_subtask(),
                "{what}"
            );
        }
    }
}

#[test]
fn echo_prompt_structure_per_type() {
    use QuestionType::*;
    let ctx = context(preset("echo"));
    for qtype in [
        AnomalyDetection,
        DefectClassification,
        DefectLocalization,
        DefectDescription,
        DefectAnalysis,
    ] {
        let backend = ScriptedBackend::constant("A");
        let (query, question) = sample(&qtype);
        run(&backend, &ctx, &query, &question).unwrap();
        let req = last(&backend);
        // Image parts first, then exactly one text part.
        let n = req.parts.len();
        assert!(
            req.parts[..n - 1]
                .iter()
                .all(|p| matches!(p, RecordedPart::Image(_))),
            "{qtype}"
        );
        let RecordedPart::Text(text) = &req.parts[n - 1] else {
            panic!("{qtype}: the last part is the text");
        };
        assert!(req.system.is_none());
        // Options as `A: text`, one per line, in file order.
        let lines: Vec<String> = question
            .options
            .iter()
            .map(|(l, t)| format!("{l}: {t}"))
            .collect();
        assert!(text.contains(&lines.join("\n")), "{qtype}:\n{text}");
        assert!(text.contains(&format!("{QUESTION} {}", question.text)));
        let (q, i) = (pos(text, QUESTION), pos(text, INSTRUCTION));
        assert!(q < i, "{qtype}");
        assert!(
            text.trim_end().ends_with("option."),
            "{qtype}: the instruction closes the text"
        );
        match qtype {
            AnomalyDetection => {
                assert!(pos(text, REF_SENTENCE) < q, "{qtype}");
                assert!(!text.contains(CONDENSED_LEAD) && !text.contains(SCAFFOLD));
            }
            DefectClassification => {
                let (r, k) = (pos(text, REF_SENTENCE), pos(text, CONDENSED_LEAD));
                assert!(q < r && r < k && k < i, "{qtype}:\n{text}");
                assert!(text.contains("Defect knowledge for washer:"));
                assert!(!text.contains(SCAFFOLD));
            }
            DefectLocalization => {
                assert!(
                    !text.contains(REF_SENTENCE)
                        && !text.contains(CONDENSED_LEAD)
                        && !text.contains(SCAFFOLD)
                );
                assert_eq!(req.images().len(), 1);
                // Question block and instruction only.
                assert_eq!(
                    text,
                    &format!(
                        "{QUESTION} {}\n{}\n{}",
                        question.text,
                        lines.join("\n"),
                        "Reply with only the letter of the correct option."
                    )
                );
            }
            DefectDescription => {
                let (k, r, s) = (
                    pos(text, CONDENSED_LEAD),
                    pos(text, REF_SENTENCE),
                    pos(text, SCAFFOLD),
                );
                assert!(k < r && r < s && s < q, "{qtype}:\n{text}");
            }
            DefectAnalysis => {
                let (r, s) = (pos(text, REF_SENTENCE), pos(text, SCAFFOLD));
                assert!(r < s && s < q, "{qtype}:\n{text}");
                assert!(!text.contains(CONDENSED_LEAD));
            }
            _ => unreachable!(),
        }
    }
}

#[test]
fn mmad_protocol_structure() {
    let mut settings = preset("mmad");
    settings.switches.knowledge = Some(true);
    let ctx = context(settings);
    let backend = ScriptedBackend::constant("B");
    let (query, question) = sample(&QuestionType::DefectClassification);
    run(&backend, &ctx, &query, &question).unwrap();
    let req = last(&backend);
    let entry = query.entry.as_ref().unwrap();
    // Lead-in text, template image, lead-in, query image, question with options.
    assert_eq!(req.parts.len(), 5, "{req:#?}");
    let RecordedPart::Text(head) = &req.parts[0] else {
        panic!()
    };
    assert!(pos(head, MMAD_ROLE) < pos(head, "Answer with the letter"));
    assert!(pos(head, "Answer with the letter") < pos(head, CATEGORY_LEAD));
    assert!(pos(head, CATEGORY_LEAD) < pos(head, MMAD_SAMPLES));
    assert!(head.contains("Here follow 1 defect-free"));
    assert_eq!(
        req.parts[1],
        RecordedPart::Image(root().resolve(&entry.entry.random_templates[0]).unwrap())
    );
    assert_eq!(req.parts[2], RecordedPart::Text(MMAD_QUERY.into()));
    assert_eq!(req.parts[3], RecordedPart::Image(query.image.clone()));
    let lines: Vec<String> = question
        .options
        .iter()
        .map(|(l, t)| format!("{l}. {t}"))
        .collect();
    assert_eq!(
        req.parts[4],
        RecordedPart::Text(format!("{}\n{}", question.text, lines.join("\n")))
    );
    // MMAD's knowledge run: every entry of the category, good first, in file order.
    let washer = &knowledge().datasets["Sample"]["washer"];
    let joined = washer.values().cloned().collect::<Vec<_>>().join("\n");
    assert!(head.contains(&joined));
    // Without the switch there is no knowledge, and no reasoning either way.
    let ctx = context(preset("mmad"));
    let backend = ScriptedBackend::constant("B");
    run(&backend, &ctx, &query, &question).unwrap();
    let text = last(&backend).text();
    assert!(!text.contains(CATEGORY_LEAD) && !text.contains(SCAFFOLD));
    // The similar variant uses similar_templates[0].
    let mut s = preset("mmad");
    s.reference = Some(ReferenceKind::Similar);
    let backend = ScriptedBackend::constant("B");
    run(&backend, &context(s), &query, &question).unwrap();
    assert_eq!(
        last(&backend).images()[0],
        root().resolve(&entry.entry.similar_templates[0]).unwrap()
    );
}

#[test]
fn object_types_in_echo_use_the_plain_mmad_prompt() {
    let ctx = context(preset("echo"));
    let backend = ScriptedBackend::constant("A");
    let (query, question) = sample(&QuestionType::ObjectDetails);
    let d = run(&backend, &ctx, &query, &question).unwrap();
    assert!(!d.in_scope);
    assert!(
        d.plan
            .note
            .as_deref()
            .unwrap()
            .contains("outside Echo's scope")
    );
    let text = last(&backend).text();
    assert!(text.contains(MMAD_ROLE) && text.contains(MMAD_SAMPLES));
    assert!(text.contains(&format!("A. {}", question.options["A"])));
}

#[test]
fn dd_knowledge_switch() {
    let mut settings = preset("echo");
    settings.type_switches.insert(
        "Defect Description".into(),
        ExpertSwitches {
            knowledge: Some(false),
            ..Default::default()
        },
    );
    let ctx = context(settings);
    let backend = ScriptedBackend::constant("A");
    let (query, question) = sample(&QuestionType::DefectDescription);
    let d = run(&backend, &ctx, &query, &question).unwrap();
    let text = last(&backend).text();
    assert!(
        !text.contains(CONDENSED_LEAD) && text.contains(SCAFFOLD) && text.contains(REF_SENTENCE)
    );
    assert_eq!(
        d.traces[1].status,
        ExpertStatus::Skipped {
            why: "switched off for this run".into()
        }
    );
    // Defect Classification keeps its knowledge.
    let (query, question) = sample(&QuestionType::DefectClassification);
    run(&backend, &ctx, &query, &question).unwrap();
    assert!(last(&backend).text().contains(CONDENSED_LEAD));
}

#[test]
fn ablation_switches_turn_each_expert_off() {
    let (query, question) = sample(&QuestionType::DefectDescription);
    for (switches, gone) in [
        (
            ExpertSwitches {
                reference: Some(false),
                ..Default::default()
            },
            REF_SENTENCE,
        ),
        (
            ExpertSwitches {
                knowledge: Some(false),
                ..Default::default()
            },
            CONDENSED_LEAD,
        ),
        (
            ExpertSwitches {
                reasoning: Some(false),
                ..Default::default()
            },
            SCAFFOLD,
        ),
    ] {
        let mut settings = preset("echo");
        settings.switches = switches;
        let backend = ScriptedBackend::constant("A");
        let d = run(&backend, &context(settings), &query, &question).unwrap();
        let req = last(&backend);
        assert!(!req.text().contains(gone), "{gone}");
        let off = d
            .traces
            .iter()
            .filter(|t| matches!(t.status, ExpertStatus::Skipped { .. }))
            .count();
        assert_eq!(off, 1, "{gone}");
        assert_eq!(req.images().len(), if gone == REF_SENTENCE { 1 } else { 2 });
    }
    // Switching on what the table leaves out: knowledge for Anomaly Detection.
    let mut settings = preset("echo");
    settings.switches.knowledge = Some(true);
    let backend = ScriptedBackend::constant("A");
    let (query, question) = sample(&QuestionType::AnomalyDetection);
    run(&backend, &context(settings), &query, &question).unwrap();
    assert!(last(&backend).text().contains(CONDENSED_LEAD));
}

#[test]
fn knowledge_modes() {
    let washer_full = &knowledge().datasets["Sample"]["washer"];
    let (query, question) = sample(&QuestionType::DefectClassification);
    let snippet = |mode: KnowledgeMode, question: &Question| {
        let mut s = preset("echo");
        s.knowledge_mode = Some(mode);
        let backend = ScriptedBackend::constant("A");
        let d = run(&backend, &context(s), &query, question).unwrap();
        let out = d.traces[1].output.to_value();
        let text = out["snippet"].as_str().unwrap().to_string();
        assert!(
            last(&backend).text().contains(&text),
            "the snippet is sent exactly"
        );
        (text, out)
    };
    // Category: all entries, good included, joined by newlines in file order.
    let (text, out) = snippet(KnowledgeMode::Category, &question);
    let joined = washer_full.values().cloned().collect::<Vec<_>>().join("\n");
    assert_eq!(
        text,
        format!("Background knowledge about this product and the defects it can have:\n{joined}")
    );
    assert_eq!(
        out["entries"],
        serde_json::json!(["good", "scratch", "notch", "stain"])
    );
    // Condensed: the category name, then its defect entries; no good.
    let (text, out) = snippet(KnowledgeMode::Condensed, &question);
    let c = &condensed().datasets["Sample"]["washer"];
    let lines: Vec<String> = c.iter().map(|(n, t)| format!("{n}: {t}")).collect();
    assert_eq!(
        text,
        format!("Defect knowledge for washer:\n{}", lines.join("\n"))
    );
    assert!(!text.contains("<Normal Washer>"));
    assert_eq!(
        out["entries"],
        serde_json::json!(["scratch", "notch", "stain"])
    );
    assert!(
        out["matched_terms"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("scratch"))
    );
    // Options: good plus the entries the options name, with the reasons.
    let mut q = question.clone();
    q.options = [("A", "Scratches"), ("B", "Dent"), ("C", "No defect")]
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .into_iter()
        .collect();
    let (text, out) = snippet(KnowledgeMode::Options, &q);
    assert_eq!(out["entries"], serde_json::json!(["good", "scratch"]));
    assert_eq!(
        text,
        format!(
            "{FILTERED_LEAD}:\n{}\n{}",
            washer_full["good"], washer_full["scratch"]
        )
    );
    assert_eq!(out["matches"][0]["letter"], "A");
    assert_eq!(out["matches"][0]["entry"], "scratch");
    assert!(
        out["matches"][0]["why"]
            .as_str()
            .unwrap()
            .contains("\"scratches\"")
    );
    assert_eq!(out["fallback_all"], false);
    let terms: Vec<&str> = out["matched_terms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        terms.contains(&"scratch") && terms.contains(&"Scratches"),
        "{terms:?}"
    );
}

#[test]
fn llm_knowledge_is_selected_once_and_cached() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = preset("echo");
    settings.knowledge_mode = Some(KnowledgeMode::Llm);
    settings.knowledge_cache_dir = Some(dir.path().to_path_buf());
    let ctx = context(settings.clone());
    let reply = |r: &RecordedRequest| {
        Ok(if r.text().contains(SELECT_CALL) {
            "Scratches are thin straight lines across the ring.".to_string()
        } else {
            "A".to_string()
        })
    };
    let backend = ScriptedBackend::with(reply);
    let (query, question) = sample(&QuestionType::DefectClassification);
    let first = run(&backend, &ctx, &query, &question).unwrap();
    let second = run(&backend, &ctx, &query, &question).unwrap();
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 3, "select + answer, then only the answer");
    assert!(reqs[0].text().contains(SELECT_CALL));
    // The selection call sees the question, its options and the whole category.
    assert!(reqs[0].text().contains(&question.text) && reqs[0].text().contains("<Normal Washer>"));
    assert!(reqs[0].images().is_empty());
    for (d, cached) in [(&first, false), (&second, true)] {
        let out = &d.traces[1].output.to_value();
        assert_eq!(out["cached"], cached);
        assert_eq!(
            out["snippet"],
            format!("{FILTERED_LEAD}:\nScratches are thin straight lines across the ring.")
        );
        assert_eq!(out["mentioned"], serde_json::json!(["scratch"]));
    }
    assert!(reqs[1].text().contains("Scratches are thin straight lines"));
    assert_eq!(second.timings.mllm_ms, 0);
    assert_eq!(ctx.knowledge_cache().len(), 1);
    // A fresh context with the same cache folder does not ask again.
    let backend = ScriptedBackend::with(reply);
    run(&backend, &context(settings), &query, &question).unwrap();
    assert_eq!(backend.requests().len(), 1);
    // A different question is a different key.
    let (query, other) = sample(&QuestionType::DefectDescription);
    let mut s = preset("echo");
    s.knowledge_mode = Some(KnowledgeMode::Llm);
    let backend = ScriptedBackend::with(reply);
    run(&backend, &context(s), &query, &other).unwrap();
    assert_eq!(backend.requests().len(), 2);
}

#[test]
fn separate_reasoning_passes_its_observations_on() {
    let mut settings = preset("echo");
    settings.reasoning_mode = Some(ReasoningMode::Separate);
    let backend = ScriptedBackend::with(|r| {
        Ok(if r.text().contains(REASONING_CALL) {
            "The reference ring is evenly grey; the query shows a thin bright line at the bottom."
                .into()
        } else {
            "A".into()
        })
    });
    let (query, question) = sample(&QuestionType::DefectDescription);
    let d = run(&backend, &context(settings), &query, &question).unwrap();
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[0].images(),
        reqs[1].images(),
        "the reasoning call sees reference and query"
    );
    assert_eq!(reqs[0].images().len(), 2);
    let final_text = reqs[1].text();
    assert!(pos(&final_text, OBSERVATIONS) < pos(&final_text, QUESTION));
    assert!(final_text.contains("thin bright line at the bottom"));
    assert!(!final_text.contains(SCAFFOLD));
    let trace = &d.traces[2];
    assert_eq!(trace.name, ExpertName::ReasoningExpert);
    assert!(
        trace.output.to_value()["observations"]
            .as_str()
            .unwrap()
            .contains("thin bright line")
    );
    assert!(
        trace.input.to_value()["request"]["parts"]
            .as_array()
            .unwrap()
            .len()
            >= 3
    );
    assert_eq!(d.letter.as_deref(), Some("A"));
    // A failing reasoning call leaves a Failed trace and the answer comes anyway.
    let mut settings = preset("echo");
    settings.reasoning_mode = Some(ReasoningMode::Separate);
    let backend = ScriptedBackend::with(|r| {
        if r.text().contains(REASONING_CALL) {
            Err("server busy".into())
        } else {
            Ok("A".into())
        }
    });
    let d = run(&backend, &context(settings.clone()), &query, &question).unwrap();
    assert!(d.traces[2].is_failed());
    assert!(!last(&backend).text().contains(OBSERVATIONS));
    // ...unless the run is strict.
    settings.strict = true;
    let err = run(&backend, &context(settings), &query, &question).unwrap_err();
    assert!(
        matches!(
            err,
            PipelineError::Expert {
                expert: ExpertName::ReasoningExpert,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.traces().len(), 3);
}

#[test]
fn backend_failure_fails_the_decision_maker_and_keeps_the_traces() {
    let backend = ScriptedBackend::with(|_| {
        Err("cannot reach the model server at http://127.0.0.1:9/v1".into())
    });
    let (query, question) = sample(&QuestionType::DefectDescription);
    let err = run(&backend, &context(preset("echo")), &query, &question).unwrap_err();
    let PipelineError::Expert { expert, traces, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*expert, ExpertName::DecisionMaker);
    let names: Vec<ExpertName> = traces.iter().map(|t| t.name).collect();
    assert_eq!(names, ExpertName::ECHO);
    assert!(traces[..3].iter().all(|t| t.is_done()), "{traces:#?}");
    let ExpertStatus::Failed { error } = &traces[3].status else {
        panic!("{:?}", traces[3]);
    };
    assert!(error.contains("cannot reach the model server"));
    // The request that was attempted is in the trace.
    assert!(
        traces[3].input.to_value()["request"]["parts"]
            .as_array()
            .unwrap()
            .len()
            == 3
    );
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert_eq!(
        chain,
        "the Decision Maker failed: cannot reach the model server at http://127.0.0.1:9/v1"
    );
}

#[test]
fn events_stream_in_pipeline_order() {
    let events = Mutex::new(Vec::new());
    let backend = ScriptedBackend::constant("A");
    let (query, question) = sample(&QuestionType::DefectClassification);
    let ctx = context(preset("echo"));
    let sink = |e: PipelineEvent| events.lock().unwrap().push(e);
    let d = runtime()
        .block_on(answer(
            &backend,
            &ctx,
            &query,
            &question,
            &sink,
            &CancelToken::new(),
        ))
        .unwrap();
    let events = events.into_inner().unwrap();
    assert_eq!(events.len(), 8);
    for (i, name) in ExpertName::ECHO.iter().enumerate() {
        assert_eq!(events[2 * i], PipelineEvent::ExpertStarted(*name));
        assert_eq!(
            events[2 * i + 1],
            PipelineEvent::ExpertFinished(d.traces[i].clone())
        );
    }
}

#[test]
fn cancellation_stops_before_the_next_expert() {
    let (query, question) = sample(&QuestionType::DefectDescription);
    let ctx = context(preset("echo"));
    // Cancelled before it starts: nothing is sent.
    let cancel = CancelToken::new();
    cancel.cancel();
    let backend = ScriptedBackend::constant("A");
    let err = runtime()
        .block_on(answer(&backend, &ctx, &query, &question, &|_| {}, &cancel))
        .unwrap_err();
    assert!(
        matches!(err, PipelineError::Cancelled { ref traces } if traces.is_empty()),
        "{err:?}"
    );
    assert!(backend.requests().is_empty());
    // Cancelled during the separate reasoning call: traces so far, no answer call.
    let mut s = preset("echo");
    s.reasoning_mode = Some(ReasoningMode::Separate);
    let ctx = context(s);
    let cancel = CancelToken::new();
    let backend = ScriptedBackend::constant("A").cancel_at(0, cancel.clone());
    let err = runtime()
        .block_on(answer(&backend, &ctx, &query, &question, &|_| {}, &cancel))
        .unwrap_err();
    let PipelineError::Cancelled { traces } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(traces.len(), 2);
    assert_eq!(backend.requests().len(), 1);
    assert_eq!(err.to_string(), "the question was cancelled");
}

#[test]
fn answers_are_read_and_scored() {
    let (query, question) = sample(&QuestionType::DefectClassification);
    assert_eq!(question.answer, "A");
    let ctx = context(preset("echo"));
    for (reply, letter, correct, method) in [
        ("A", "A", true, ExtractMethod::SingleLetter),
        (
            "The answer is C: Stain",
            "C",
            false,
            ExtractMethod::AnswerMarker,
        ),
        (
            "It looks like a stain to me",
            "C",
            false,
            ExtractMethod::OptionText,
        ),
    ] {
        let backend = ScriptedBackend::constant(reply);
        let d = run(&backend, &ctx, &query, &question).unwrap();
        assert_eq!(d.letter.as_deref(), Some(letter), "{reply}");
        assert_eq!(d.correct, Some(correct), "{reply}");
        assert_eq!(d.method, method, "{reply}");
        assert_eq!(d.gpt_answer, letter);
        assert_eq!(d.raw, reply);
        assert_eq!(
            d.option_text.as_deref(),
            Some(question.options[letter].as_str())
        );
        let dm = &d.traces[3].output.to_value();
        assert_eq!(dm["raw"], reply);
        assert_eq!(dm["letter"], letter);
        assert_eq!(dm["request_summary"]["images"], 2);
    }
    // No options to match: MMAD keeps the raw reply as its answer.
    let mut free = question.clone();
    free.options.clear();
    let d = run(
        &ScriptedBackend::constant("Looks fine"),
        &ctx,
        &query,
        &free,
    )
    .unwrap();
    assert_eq!(
        (d.letter, d.gpt_answer.as_str(), d.correct),
        (None, "Looks fine", Some(false))
    );
    // No ground truth: correctness is unknown.
    let mut q = question.clone();
    q.answer = String::new();
    let d = run(&ScriptedBackend::constant("B"), &ctx, &query, &q).unwrap();
    assert_eq!(d.correct, None);
}

#[test]
fn reference_sources_and_scopes() {
    let (query, question) = sample(&QuestionType::AnomalyDetection);
    // Category scope: every candidate from the query's category.
    let mut s = preset("echo");
    s.scope = ScopeMode::Category;
    s.candidates = 5;
    let d = run(
        &ScriptedBackend::constant("A"),
        &context(s),
        &query,
        &question,
    )
    .unwrap();
    let output = d.traces[0].output.to_value();
    let cands = output["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 5);
    assert!(cands.iter().all(|c| c["category"] == "washer"));
    assert_eq!(cands.iter().filter(|c| c["used"] == true).count(), 1);
    assert!(cands[0]["score"].as_f64().unwrap() > 0.0);
    assert!(cands[0]["rerank_score"].is_number());
    // A query that is itself in the memory is never its own reference.
    let own = Query::image(repo("assets/sample/Sample/washer/train/good/003.png"));
    let d = run(
        &ScriptedBackend::constant("A"),
        &context(preset("echo")),
        &own,
        &question,
    )
    .unwrap();
    assert!(
        d.traces[0].output.to_value()["notes"][0]
            .as_str()
            .unwrap()
            .contains("left out")
    );
    assert_ne!(
        d.traces[0].output.to_value()["candidates"][0]["rel_path"],
        "Sample/washer/train/good/003.png"
    );
    // MMAD templates need a dataset entry: a loose image gets a Failed reference
    // trace and is answered without one.
    let mut s = preset("echo");
    s.reference = Some(ReferenceKind::Random);
    let loose = Query::image(repo("assets/sample/Sample/washer/test/scratch/000.png"));
    let backend = ScriptedBackend::constant("A");
    let d = run(&backend, &context(s), &loose, &question).unwrap();
    assert!(d.traces[0].is_failed());
    assert_eq!(last(&backend).images().len(), 1);
    // No memory loaded: the plan warns and the step fails clearly.
    let ctx = PipelineContext::new(preset("echo")).unwrap();
    let plan = ctx.plan(&QuestionType::AnomalyDetection);
    assert!(
        plan.step(ExpertName::ReferenceExtractor)
            .how
            .contains("none is loaded")
    );
    let backend = ScriptedBackend::constant("A");
    let d = run(&backend, &ctx, &query, &question).unwrap();
    let ExpertStatus::Failed { error } = &d.traces[0].status else {
        panic!("{:?}", d.traces[0]);
    };
    assert!(error.contains("none is loaded"), "{error}");
    assert_eq!(last(&backend).images(), std::slice::from_ref(&query.image));
}

#[test]
fn odd_input_never_panics() {
    let ctx = context(preset("full"));
    let queries = [
        Query::image("/nonexistent/picture.png"),
        Query::image(repo("assets/sample/mmad.json")),
        sample(&QuestionType::AnomalyDetection).0,
    ];
    let questions = [
        Question {
            text: String::new(),
            answer: String::new(),
            options: IndexMap::new(),
            qtype: QuestionType::Other("Something New".into()),
            annotation: None,
        },
        Question {
            text: "{image:query} {question} }{".into(),
            answer: "Z".into(),
            options: [("A".to_string(), "{options}".to_string())]
                .into_iter()
                .collect(),
            qtype: QuestionType::DefectAnalysis,
            annotation: None,
        },
    ];
    for q in &queries {
        for question in &questions {
            let backend = ScriptedBackend::constant("");
            let d = run(&backend, &ctx, q, question).unwrap();
            assert_eq!(d.letter, None);
            // Values are never read as placeholders.
            if question.text.contains("{image:query}") {
                assert!(
                    last(&backend)
                        .text()
                        .contains("{image:query} {question} }{")
                );
                assert_eq!(
                    last(&backend)
                        .images()
                        .iter()
                        .filter(|p| **p == q.image)
                        .count(),
                    1
                );
            }
        }
    }
}

#[test]
fn user_templates_are_checked_where_they_would_lose_information() {
    let dir = tempfile::tempdir().unwrap();
    let echo = dir.path().join("echo");
    std::fs::create_dir(&echo).unwrap();
    // Drops the reference image: the Decision Maker refuses to send it.
    std::fs::write(
        echo.join("anomaly_detection.txt"),
        "{image:query}\n{question}\n{options}",
    )
    .unwrap();
    // Places no knowledge: the request goes out with a warning in the trace.
    std::fs::write(
        echo.join("defect_classification.txt"),
        "{image:reference}{image:query}\n{question}\n{options}\n{instruction}",
    )
    .unwrap();
    let mut settings = preset("echo");
    settings.prompts_dir = Some(dir.path().to_path_buf());
    let ctx = context(settings);
    let backend = ScriptedBackend::constant("A");
    let (query, question) = sample(&QuestionType::AnomalyDetection);
    let err = run(&backend, &ctx, &query, &question).unwrap_err();
    let traces = err.traces();
    assert_eq!(traces.len(), 4);
    assert!(
        format!("{:#}", anyhow::Error::from(err)).contains("places `{image:reference}` 0 times")
    );
    assert!(backend.requests().is_empty());
    let (query, question) = sample(&QuestionType::DefectClassification);
    let d = run(&backend, &ctx, &query, &question).unwrap();
    let input = d.traces[3].input.to_value();
    let warnings = input["warnings"].as_array().unwrap();
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("has no `{knowledge}`")
    );
    assert!(!last(&backend).text().contains(CONDENSED_LEAD));
    // The hash of the prompts in use changes with the files.
    assert_ne!(
        ctx.prompt_templates_hash(),
        context(preset("echo")).prompt_templates_hash()
    );
}

/// Every trace the pipeline writes, for every knowledge and reasoning mode, two
/// reference sources and four ways a question goes (answered, the first call
/// failing, an empty first reply, strict with category scope and two references),
/// exactly as the pipeline wrote them before the experts were split into files and
/// their traces typed (the fixture is that version's output; `ms` zeroed, the
/// repository root written `ROOT`). Journals store these lines, so a change here
/// is a change of the run folder format.
#[test]
fn traces_are_written_as_before_the_experts_were_split() {
    let expected =
        std::fs::read_to_string(repo("tests/fixtures/compat/pipeline_traces.txt")).unwrap();
    let root_prefix = format!("{}/", env!("CARGO_MANIFEST_DIR"));
    let qtype = QuestionType::DefectClassification;
    let (query, question) = sample(&qtype);
    let mut got = String::new();
    for km in [
        KnowledgeMode::Category,
        KnowledgeMode::Condensed,
        KnowledgeMode::Options,
        KnowledgeMode::Llm,
    ] {
        for rm in [ReasoningMode::Inline, ReasoningMode::Separate] {
            for rk in [None, Some(ReferenceKind::Similar)] {
                for way in 0..4 {
                    let mut s = preset("full");
                    s.knowledge_mode = Some(km);
                    s.reasoning_mode = Some(rm);
                    s.reference = rk;
                    s.switches.knowledge = Some(true);
                    if way == 3 {
                        s.scope = ScopeMode::Category;
                        s.reference_images = 2;
                        s.strict = true;
                    }
                    let ctx = context(s);
                    let backend = match way {
                        1 => ScriptedBackend::constant("B").then(Err("HTTP 500 after 4 attempts")),
                        2 => ScriptedBackend::constant("The answer is (C).").then(Ok("   ")),
                        _ => ScriptedBackend::constant("B. Scratch\nbecause"),
                    };
                    let result = run(&backend, &ctx, &query, &question);
                    let traces = match &result {
                        Ok(d) => d.traces.clone(),
                        Err(e) => e.traces().to_vec(),
                    };
                    for t in traces {
                        // Written as a journal writes it; only the time is zeroed.
                        let line = serde_json::to_string(&t).unwrap();
                        let (before_ms, _) = line.rsplit_once(",\"ms\":").unwrap();
                        got.push_str(&before_ms.replace(&root_prefix, "ROOT/"));
                        got.push_str(",\"ms\":0}\n");
                    }
                    let outcome = match &result {
                        Ok(d) => format!("{:?}", d.letter),
                        Err(e) => e.to_string(),
                    };
                    got.push_str(&format!(
                        "-- full {qtype} {km:?} {rm:?} {rk:?} {way} {outcome}\n"
                    ));
                }
            }
        }
    }
    for (n, (a, b)) in got.lines().zip(expected.lines()).enumerate() {
        assert_eq!(a, b, "line {}", n + 1);
    }
    assert_eq!(got.lines().count(), expected.lines().count());
}

/// The anomaly map in the pipeline itself: with a memory it runs second and the
/// Decision Maker's request carries the outlined query right after the query and
/// the hint after it (trace and request agree part for part); without one it fails
/// alone, saying why, and the question is still answered.
#[test]
fn the_anomaly_map_feeds_the_decision_maker_or_fails_alone() {
    let backend = ScriptedBackend::constant("A");
    let (query, question) = sample(&QuestionType::AnomalyDetection);
    let ctx = context(preset("echo+map"));
    let d = run(&backend, &ctx, &query, &question).unwrap();
    let names: Vec<ExpertName> = d.traces.iter().map(|t| t.name).collect();
    assert_eq!(names, ExpertName::ALL);
    let map = d.traces[1].output.map().unwrap();
    let hint = map.hint.clone().unwrap();
    let req = last(&backend);
    // Reference, query, then the map's picture and the hint.
    let n = req.parts.len();
    assert!(matches!(&req.parts[n - 1], RecordedPart::Text(t) if !t.contains(&hint)));
    let generated = req
        .parts
        .iter()
        .position(|p| matches!(p, RecordedPart::Generated { .. }))
        .expect("the outlined query is sent");
    assert_eq!(
        req.parts[generated - 2],
        RecordedPart::Image(query.image.clone())
    );
    let RecordedPart::Generated { bytes, .. } = &req.parts[generated] else {
        unreachable!()
    };
    let outlined = image::load_from_memory(bytes).unwrap().to_rgb8();
    let original = image::open(&query.image).unwrap().to_rgb8();
    assert_eq!(outlined.dimensions(), original.dimensions());
    let r = &map.regions[0];
    assert_eq!(*outlined.get_pixel(r.x, r.y), image::Rgb([255, 0, 0]));
    assert!(matches!(&req.parts[generated + 1], RecordedPart::Text(t) if t.contains(&hint)));
    let described = &d.traces[4].input.request().unwrap().parts;
    assert_eq!(described.len(), n, "the trace describes every part sent");

    let without = PipelineContext::new(preset("echo+map"))
        .unwrap()
        .with_knowledge(knowledge())
        .with_condensed(condensed());
    let d = run(&backend, &without, &query, &question).unwrap();
    let ExpertStatus::Failed { error } = &d.traces[1].status else {
        panic!("{:?}", d.traces[1]);
    };
    assert!(error.starts_with("no anomaly map: "), "{error}");
    assert!(error.contains("none is loaded"), "{error}");
    assert!(d.letter.is_some());
    assert!(!last(&backend).text().contains("most unusual region"));
}
