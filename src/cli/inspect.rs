//! `inspect`: ask one question about one image through the Echo pipeline and show
//! every expert's work (reference and its score, knowledge snippet, reasoning,
//! the prompt's answer) as it happens.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use echo_workbench::anomaly::Backbone;
use echo_workbench::dataset::{DatasetRoot, MmadDataset, Question, QuestionType};
use echo_workbench::echo::pipeline::PipelineEvent;
use echo_workbench::echo::plan::{
    ExpertSwitches, KnowledgeMode, MapImage, Plan, ReasoningMode, ReferenceKind, ScopeMode,
};
use echo_workbench::echo::preflight::{QuestionInputs, check_inputs};
use echo_workbench::echo::query::Query;
use echo_workbench::echo::setup::{ContextSources, load_context};
use echo_workbench::echo::{
    ChatBackend, ExpertStatus, ExpertTrace, ExtractMode, MllmBackend, PipelineSettings,
    classify_question,
};
use echo_workbench::jobs::CancelToken;
use echo_workbench::mllm::EndpointConfig;
use echo_workbench::vision::spec::EmbedderSpec;
use indexmap::IndexMap;
use serde_json::{Value, json};

use super::workspace::{AppSettings, WorkspaceArg, override_endpoint};
use crate::TextOrJson;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl OnOff {
    fn get(v: Option<OnOff>) -> Option<bool> {
        v.map(|v| v == OnOff::On)
    }
}

/// The anomaly-map expert's switches, shared by `run` and `inspect` (issue 18):
/// each defaults to the preset's, so an ablation is two runs differing in one flag.
#[derive(Clone, Default, clap::Args)]
pub struct MapArgs {
    /// Switch the anomaly-map expert on or off for every type (default: the table;
    /// `echo+map` uses it). It needs a reference memory.
    #[arg(long, value_enum)]
    pub map_expert: Option<OnOff>,
    /// How many retrieved normals the map compares the query with (default: the
    /// preset's, else 4).
    #[arg(long, value_name = "K")]
    pub map_k: Option<usize>,
    /// Tell the Decision Maker the map's finding in a sentence (default: the preset's).
    #[arg(long, value_enum)]
    pub map_hint: Option<OnOff>,
    /// none | outline | crop: a third image for the Decision Maker (default: the preset's).
    #[arg(long, value_name = "IMAGE")]
    pub map_image: Option<MapImage>,
    /// The map's patch features: `descriptor` (weight-free, the default),
    /// `clip:PATH` / `clip:hf:ORG/NAME[@REV]` or `dinov2:PATH` /
    /// `dinov2:hf:ORG/NAME[@REV]`. Recorded in the manifest unless the descriptor.
    #[arg(long, value_name = "SPEC")]
    pub map_backbone: Option<Backbone>,
}

impl MapArgs {
    /// Writes the flags given over `settings`.
    pub fn apply(&self, settings: &mut PipelineSettings) {
        if let Some(on) = OnOff::get(self.map_expert) {
            settings.switches.anomaly_map = Some(on);
        }
        settings.map_k = self.map_k.or(settings.map_k);
        settings.map_hint = OnOff::get(self.map_hint).or(settings.map_hint);
        settings.map_image = self.map_image.or(settings.map_image);
        settings.map_backbone = self.map_backbone.clone().or(settings.map_backbone.take());
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TemplateArg {
    /// MMAD's `similar_templates[0]`.
    Similar,
    /// MMAD's `random_templates[0]` (MMAD's plain 1-shot).
    Random,
    /// No reference image.
    None,
}

#[derive(Args)]
pub struct InspectArgs {
    /// The image to inspect.
    image: PathBuf,
    /// The question to ask.
    #[arg(long)]
    question: String,
    /// An answer option as `LETTER=text`; repeat in order (`--option A=Yes --option B=No`).
    /// When the image is an MMAD entry and the question is one of its own, its options are used.
    #[arg(long = "option", value_name = "LETTER=TEXT", value_parser = parse_option)]
    options: Vec<(String, String)>,
    /// MMAD's question type (`Anomaly Detection`, ... or AD, DC, DL, DD, DA, OC, OS, OD);
    /// without it the type is classified from the text.
    #[arg(long = "type", value_name = "TYPE")]
    qtype: Option<String>,
    /// The correct letter, to mark the answer right or wrong.
    #[arg(long)]
    answer: Option<String>,
    /// Base URL of an OpenAI-compatible API [default: http://127.0.0.1:8000/v1, or
    /// the app's active endpoint with --workspace].
    #[arg(long)]
    endpoint: Option<String>,
    /// The model name the server expects [default: default].
    #[arg(long)]
    model: Option<String>,
    /// Environment variable holding the API key (the key itself is never written anywhere).
    #[arg(long, value_name = "VAR")]
    api_key_env: Option<String>,
    /// Seconds to wait for one reply [default: 120].
    #[arg(long)]
    timeout: Option<f64>,
    /// Most tokens per reply (default: the client's).
    #[arg(long)]
    max_tokens: Option<u32>,
    /// A reference memory folder (`memory build`); without it MMAD's templates are used
    /// when the image is an MMAD entry.
    #[arg(long)]
    memory: Option<PathBuf>,
    /// Override the embedder recorded in the memory.
    #[arg(long, requires = "memory")]
    embedder: Option<EmbedderSpec>,
    /// Without --memory: which of MMAD's templates is the reference (default: similar,
    /// or random for the mmad preset, when the image is an MMAD entry; else none).
    #[arg(long, value_enum, conflicts_with = "memory")]
    template: Option<TemplateArg>,
    /// The mmad.json the image belongs to (default: searched in the image's parent folders).
    #[arg(long, value_name = "FILE")]
    mmad: Option<PathBuf>,
    /// The knowledge base (default: the bundled knowledge/domain_knowledge.json).
    #[arg(long, value_name = "FILE")]
    knowledge: Option<PathBuf>,
    /// Echo's condensed knowledge (default: the bundled knowledge/condensed.json).
    #[arg(long, value_name = "FILE")]
    condensed: Option<PathBuf>,
    /// A preset of the experts table: echo, mmad, full (or one of your own) [default: echo].
    #[arg(long)]
    preset: Option<String>,
    /// category | condensed | options | llm | off (default: the preset's).
    #[arg(long, value_name = "MODE")]
    knowledge_mode: Option<KnowledgeMode>,
    /// inline | separate | off (default: the preset's).
    #[arg(long, value_name = "MODE")]
    reasoning: Option<ReasoningMode>,
    /// global (Echo) | category (only the query's category) [default: global].
    #[arg(long, value_name = "SCOPE")]
    scope: Option<ScopeMode>,
    /// Memory candidates kept in the trace.
    #[arg(long, default_value_t = 3)]
    k: usize,
    /// Switch the Reference Extractor on or off for every type (default: the table).
    #[arg(long, value_enum)]
    reference_expert: Option<OnOff>,
    /// Switch the Knowledge Guide on or off for every type (default: the table).
    #[arg(long, value_enum)]
    knowledge_expert: Option<OnOff>,
    /// Switch the Reasoning Expert on or off for every type (default: the table).
    #[arg(long, value_enum)]
    reasoning_expert: Option<OnOff>,
    /// Knowledge for Defect Description (one copy of Echo's code sends none).
    #[arg(long, value_enum)]
    dd_knowledge: Option<OnOff>,
    #[command(flatten)]
    map: MapArgs,
    /// structured | mmad-last | mmad-first.
    #[arg(long, value_name = "MODE", value_parser = parse_extract, default_value = "structured")]
    extract: ExtractMode,
    /// An experts table to use instead of the bundled one.
    #[arg(long, value_name = "FILE")]
    experts: Option<PathBuf>,
    /// A folder of prompt sets (`<dir>/<set>/<template>.txt`) overriding the bundled ones.
    #[arg(long, value_name = "DIR")]
    prompts: Option<PathBuf>,
    /// Keep model-selected knowledge (--knowledge-mode llm) in this folder across runs.
    #[arg(long, value_name = "DIR")]
    knowledge_cache: Option<PathBuf>,
    /// The dataset folder name, for knowledge (default: from the path).
    #[arg(long)]
    dataset: Option<String>,
    /// The category, for knowledge and category scope (default: from the path).
    #[arg(long)]
    category: Option<String>,
    /// Show which experts would run, then stop (no model call).
    #[arg(long)]
    plan: bool,
    /// Ask even though the plan reads knowledge (or memory images, or template files)
    /// that is not there for this image's category.
    #[arg(long)]
    allow_missing_knowledge: bool,
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    format: TextOrJson,
    #[command(flatten)]
    protocol: super::protocol::ProtocolArgs,
    #[command(flatten)]
    workspace: WorkspaceArg,
}

fn parse_option(s: &str) -> Result<(String, String), String> {
    let (letter, text) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not LETTER=TEXT"))?;
    let letter = letter.trim();
    if letter.is_empty() || text.trim().is_empty() {
        return Err(format!("`{s}` needs both a letter and a text"));
    }
    Ok((letter.to_string(), text.trim().to_string()))
}

fn parse_extract(s: &str) -> Result<ExtractMode, String> {
    serde_json::from_value(Value::String(s.to_string())).map_err(|_| {
        format!("unknown extraction mode `{s}`: use structured, mmad-last or mmad-first")
    })
}

/// MMAD's type names, case-insensitively, or their two-letter initials.
fn parse_type(s: &str) -> anyhow::Result<QuestionType> {
    let name = echo_workbench::runs::select::parse_type_name(s)?;
    Ok(QuestionType::parse(&name))
}

/// The MMAD entry an image belongs to, searching `mmad.json` upwards from it.
fn find_entry(
    image: &Path,
    mmad: Option<&Path>,
) -> anyhow::Result<Option<(DatasetRoot, String, MmadDataset)>> {
    let image = image
        .canonicalize()
        .with_context(|| format!("cannot read {}", image.display()))?;
    let candidates: Vec<PathBuf> = match mmad {
        Some(p) => vec![p.to_path_buf()],
        None => image
            .ancestors()
            .skip(1)
            .take(8)
            .map(|d| d.join("mmad.json"))
            .filter(|p| p.is_file())
            .collect(),
    };
    for file in candidates {
        // A named file must load; one met on the way up is only a guess.
        let dataset = match MmadDataset::load(&file) {
            Ok(d) => d,
            Err(e) if mmad.is_some() => return Err(e.into()),
            Err(_) => continue,
        };
        let root = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let Ok(root_abs) = root.canonicalize() else {
            continue;
        };
        let Ok(rel) = image.strip_prefix(&root_abs) else {
            continue;
        };
        let key = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        if dataset.entries.contains_key(&key) {
            return Ok(Some((DatasetRoot::new(root), key, dataset)));
        }
    }
    Ok(None)
}

pub fn run(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    if !args.image.is_file() {
        bail!("cannot read {}: no such file", args.image.display());
    }
    let app = args.workspace.load()?;
    let app_settings = app.as_ref().map(|a| &a.settings);
    // Where the image comes from: a named mmad.json, else one met going up from the
    // image, else the app's dataset.
    let mut found = find_entry(&args.image, args.mmad.as_deref())?;
    if found.is_none()
        && args.mmad.is_none()
        && let Some(s) = app_settings
        && s.dataset.mmad_json.is_file()
    {
        found = find_entry(&args.image, Some(&s.dataset.mmad_json))?;
    }
    let mut query = match &found {
        Some((root, key, dataset)) => Query::from_entry(root, key, &dataset.entries[key])?,
        None => Query::image(&args.image),
    };
    if let Some(d) = &args.dataset {
        query.dataset = Some(d.clone());
    }
    if let Some(c) = &args.category {
        query.category = Some(c.clone());
    }

    // The question: the entry's own when the text matches and no options are given.
    let own = found.as_ref().and_then(|(_, key, ds)| {
        ds.entries[key]
            .conversation
            .iter()
            .find(|q| q.text.trim().eq_ignore_ascii_case(args.question.trim()))
            .cloned()
    });
    let options: IndexMap<String, String> = if args.options.is_empty() {
        own.as_ref().map(|q| q.options.clone()).unwrap_or_default()
    } else {
        args.options.iter().cloned().collect()
    };
    let use_own = args.options.is_empty() && own.is_some();
    let (qtype, type_source) = match &args.qtype {
        Some(t) => (parse_type(t)?, vec!["given with --type".to_string()]),
        None if use_own => (
            own.as_ref()
                .map(|q| q.qtype.clone())
                .unwrap_or(QuestionType::AnomalyDetection),
            vec!["from the dataset entry".to_string()],
        ),
        None => {
            let (t, reasons) = classify_question(&args.question, &options);
            let mut why = vec!["classified from the text".to_string()];
            why.extend(reasons);
            (t, why)
        }
    };
    let answer = match &args.answer {
        Some(a) => a.trim().to_string(),
        None if use_own => own.as_ref().map(|q| q.answer.clone()).unwrap_or_default(),
        None => String::new(),
    };
    let question = Question {
        text: args.question.clone(),
        answer,
        options,
        qtype,
        annotation: None,
    };

    // Settings: the flags given, over the app's (with --workspace), over the defaults.
    let base = app_settings.map(|s| s.pipeline.clone()).unwrap_or_default();
    let switch = |flag: Option<OnOff>, app: Option<bool>| OnOff::get(flag).or(app);
    let mut settings = PipelineSettings {
        preset: args.preset.clone().unwrap_or(base.preset.clone()),
        switches: ExpertSwitches {
            reference: switch(args.reference_expert, base.switches.reference),
            knowledge: switch(args.knowledge_expert, base.switches.knowledge),
            reasoning: switch(args.reasoning_expert, base.switches.reasoning),
            anomaly_map: switch(args.map.map_expert, base.switches.anomaly_map),
        },
        map_k: args.map.map_k.or(base.map_k),
        map_hint: OnOff::get(args.map.map_hint).or(base.map_hint),
        map_image: args.map.map_image.or(base.map_image),
        map_backbone: args.map.map_backbone.clone().or(base.map_backbone.clone()),
        scope: args.scope.unwrap_or(base.scope),
        candidates: args.k.max(1),
        knowledge_mode: args.knowledge_mode.or(base.knowledge_mode),
        reasoning_mode: args.reasoning.or(base.reasoning_mode),
        extract: args.extract,
        experts_file: args.experts.clone().or(base.experts_file.clone()),
        prompts_dir: args.prompts.clone().or(base.prompts_dir.clone()),
        knowledge_cache_dir: args
            .knowledge_cache
            .clone()
            .or(base.knowledge_cache_dir.clone()),
        ..base
    };
    let memory = args
        .memory
        .clone()
        .or_else(|| app_settings.and_then(|s| s.reference.memory.clone()));
    let knowledge = args
        .knowledge
        .clone()
        .or_else(|| app_settings.and_then(|s| s.knowledge.clone()));
    if let Some(dd) = OnOff::get(args.dd_knowledge) {
        settings.type_switches.insert(
            QuestionType::DefectDescription.as_str().to_string(),
            ExpertSwitches {
                knowledge: Some(dd),
                ..Default::default()
            },
        );
    }
    if args.template.is_some_and(|t| t != TemplateArg::None) && query.entry.is_none() {
        bail!(
            "--template needs the image to be an entry of an mmad.json (none lists {}; pass --mmad)",
            args.image.display()
        );
    }
    let has_templates = query.entry.as_ref().is_some_and(|e| {
        !e.entry.similar_templates.is_empty() || !e.entry.random_templates.is_empty()
    });
    settings.reference = Some(match (&memory, args.template) {
        (Some(_), _) => ReferenceKind::Memory,
        (None, Some(TemplateArg::Similar)) => ReferenceKind::Similar,
        (None, Some(TemplateArg::Random)) => ReferenceKind::Random,
        (None, Some(TemplateArg::None)) => ReferenceKind::None,
        (None, None) if has_templates => {
            let preset_default = echo_workbench::echo::plan::ExpertTable::load_or_bundled(
                settings.experts_file.as_deref(),
            )?
            .preset(&settings.preset)?
            .reference;
            if preset_default == ReferenceKind::Random {
                ReferenceKind::Random
            } else {
                ReferenceKind::Similar
            }
        }
        (None, None) => ReferenceKind::None,
    });

    let protocol = args.protocol.protocol()?;
    if protocol.shuffle_options.is_some() {
        bail!(
            "--shuffle-options is for `run`: its order comes from a question's place in the dataset; use --circular to see every order here"
        );
    }
    let ctx = load_context(
        settings,
        &ContextSources {
            knowledge,
            condensed: args.condensed.clone(),
            memory,
            embedder: args.embedder.clone(),
        },
    )?
    .context
    .with_protocol(protocol);

    let plan = ctx.plan(&question.qtype);
    if args.plan {
        print_plan(&plan, &type_source, args.format)?;
        return Ok(ExitCode::SUCCESS);
    }

    let check = check_inputs(
        &ctx,
        &ctx.memory_categories(),
        query.entry.as_ref().map(|e| &e.root),
        [QuestionInputs {
            index: 0,
            qtype: &question.qtype,
            dataset: query.dataset.as_deref(),
            category: query.category.as_deref(),
            entry: query.entry.as_ref().map(|e| (e.key.as_str(), &e.entry)),
        }],
    );
    if !check.is_complete() {
        if !args.allow_missing_knowledge {
            bail!(
                "this question would run without an input its plan reads:\n{}\nnothing was asked; fix the inputs, or pass --allow-missing-knowledge to ask anyway",
                check.cli_report()
            );
        }
        eprintln!(
            "warning: asking without an input the plan reads (allowed by --allow-missing-knowledge):\n{}",
            check.cli_report()
        );
    }

    let backend: Box<dyn ChatBackend> = match args.endpoint.as_deref() {
        Some(spec) if spec.starts_with("local:") => Box::new(super::generate::local_backend(
            spec,
            args.max_tokens
                .map_or(EndpointConfig::default().max_tokens as usize, |n| {
                    n as usize
                }),
        )?),
        _ => Box::new(MllmBackend::new(http_endpoint(args, app.as_ref())?)?),
    };
    let runtime = super::runtime()?;
    let text = args.format == TextOrJson::Text;
    if text {
        print_header(&question, &plan, &type_source);
    }
    // Numbered as the plan lists them (the anomaly map only where it is used).
    let printed = std::sync::atomic::AtomicUsize::new(0);
    let events = move |e: PipelineEvent| {
        if let (true, PipelineEvent::ExpertFinished(trace)) = (text, e) {
            let n = printed.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            print_trace(&trace, n);
        }
    };
    let cancel = CancelToken::new();
    let asked = runtime.block_on(echo_workbench::echo::answer_protocol(
        &*backend, &ctx, &query, &question, 0, &events, &cancel,
    ))?;
    let decision = &asked.decision;
    match args.format {
        TextOrJson::Json => {
            let experts: Vec<Value> = decision
                .traces
                .iter()
                .map(|t| {
                    let output = match &t.status {
                        ExpertStatus::Done => t.output.to_value(),
                        ExpertStatus::Skipped { why } => json!({"skipped": why}),
                        ExpertStatus::Failed { error } => json!({"error": error}),
                    };
                    json!({"name": t.name, "input": t.input, "output": output, "ms": t.ms})
                })
                .collect();
            let mut out = json!({
                "type": decision.qtype,
                "experts": experts,
                "answer": {"letter": decision.letter, "text": decision.option_text, "raw": decision.raw},
            });
            // Plain questions keep the documented shape; a protocol adds its part.
            if !ctx.protocol().is_plain() {
                out["protocol"] = protocol_json(&asked);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        TextOrJson::Text => {
            let verdict = match decision.correct {
                Some(true) => " (correct)",
                Some(false) => " (wrong)",
                None => "",
            };
            if asked.orders.is_empty() {
                match (&decision.letter, &decision.option_text) {
                    (Some(l), Some(t)) => println!("\nAnswer: {l}: {t}{verdict}"),
                    (Some(l), None) => println!("\nAnswer: {l}{verdict}"),
                    (None, _) => println!("\nAnswer: no option letter in the reply{verdict}"),
                }
            } else {
                let verdict = match asked.correct {
                    Some(true) => " (correct in every rotation)",
                    Some(false) => " (wrong)",
                    None => "",
                };
                println!("\nAnswer: {}{verdict}", asked.gpt_answer);
            }
            print_protocol(&asked);
            if !decision.in_scope {
                println!(
                    "(this question type is outside the preset's scope: {})",
                    plan.note.as_deref().unwrap_or("plain prompt")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What the protocol adds to the JSON output (null fields when it added nothing).
fn protocol_json(a: &echo_workbench::echo::ProtocolAnswer) -> Value {
    json!({
        "gpt_answer": a.gpt_answer,
        "correct": a.correct,
        "samples": a.samples.iter().map(|s| json!({"raw": s.raw, "letter": s.letter})).collect::<Vec<_>>(),
        "rotations": a.orders.iter().map(|o| json!({
            "order": o.order, "raw": o.raw, "letter": o.letter, "original_letter": o.original_letter
        })).collect::<Vec<_>>(),
        "agreement": a.agreement,
        "letter_probs": a.letter_probs,
    })
}

fn print_protocol(a: &echo_workbench::echo::ProtocolAnswer) {
    for (i, s) in a.samples.iter().enumerate() {
        let letter = s.letter.as_deref().unwrap_or("-");
        println!("  sample {}: {letter}  {:?}", i + 1, s.raw);
    }
    for o in &a.orders {
        println!(
            "  order {}: {} (original {})  {:?}",
            o.order,
            o.letter.as_deref().unwrap_or("-"),
            o.original_letter.as_deref().unwrap_or("-"),
            o.raw
        );
    }
    if let Some(agreement) = a.agreement {
        println!("Agreement: {:.0}%", agreement * 100.0);
    }
    if let Some(probs) = &a.letter_probs {
        let each: Vec<String> = probs.iter().map(|(l, p)| format!("{l} {p:.3}")).collect();
        println!("Letter probabilities: {}", each.join(", "));
    }
}

fn print_header(question: &Question, plan: &Plan, type_source: &[String]) {
    println!("Question: {}", question.text);
    for (l, t) in &question.options {
        println!("  {l}: {t}");
    }
    println!("Type: {} ({})", question.qtype, type_source.join("; "));
    let scope = if plan.in_scope {
        "in scope"
    } else {
        "outside the method's scope"
    };
    println!(
        "Preset: {} ({scope}), prompt `{}/{}`",
        plan.preset, plan.prompts, plan.template
    );
    let _ = std::io::stdout().flush();
}

fn print_plan(plan: &Plan, type_source: &[String], format: TextOrJson) -> anyhow::Result<()> {
    match format {
        TextOrJson::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({"plan": plan, "type_source": type_source}))?
        ),
        TextOrJson::Text => {
            println!("Type: {} ({})", plan.qtype, type_source.join("; "));
            println!(
                "Preset: {}, prompt `{}/{}`",
                plan.preset, plan.prompts, plan.template
            );
            if let Some(n) = &plan.note {
                println!("Note: {n}");
            }
            for (i, s) in plan.steps.iter().enumerate() {
                let state = if s.runs {
                    format!("runs ({})", s.how)
                } else {
                    "skipped".into()
                };
                println!("[{}] {}: {state}: {}", i + 1, s.expert, s.why);
            }
        }
    }
    Ok(())
}

fn print_trace(t: &ExpertTrace, n: usize) {
    match &t.status {
        ExpertStatus::Skipped { why } => println!("\n[{n}] {}: skipped ({why})", t.name),
        ExpertStatus::Failed { error } => {
            println!("\n[{n}] {}: FAILED after {} ms: {error}", t.name, t.ms)
        }
        ExpertStatus::Done => {
            println!("\n[{n}] {} ({} ms): {}", t.name, t.ms, t.summary);
            match t.name {
                echo_workbench::echo::ExpertName::ReferenceExtractor => {
                    let found = t.output.reference();
                    for (i, c) in found.into_iter().flat_map(|f| &f.candidates).enumerate() {
                        let score = c
                            .score
                            .map(|s| format!("{s:.4}"))
                            .unwrap_or_else(|| "-".into());
                        let rerank = c
                            .rerank_score
                            .map(|s| format!(", rerank {s:.3}"))
                            .unwrap_or_default();
                        let used = if c.used { "  <- sent" } else { "" };
                        println!("    {}. {score}{rerank}  {}{used}", i + 1, c.path.display());
                    }
                    for note in found.into_iter().flat_map(|f| &f.notes) {
                        println!("    note: {note}");
                    }
                }
                echo_workbench::echo::ExpertName::AnomalyMap => {
                    if let Some(m) = t.output.map() {
                        for r in &m.regions {
                            println!(
                                "    {} ({} x {} at {}, {}), peak {:.3}",
                                r.grid, r.w, r.h, r.x, r.y, r.score
                            );
                        }
                        if let Some(hint) = &m.hint {
                            println!("    hint: {hint}");
                        }
                        // The descriptor's lines stay as they were before the choice.
                        if m.backbone != "descriptor" {
                            println!("    backbone: {}", m.backbone);
                        }
                        println!("    map computed in {} ms", m.map_ms);
                    }
                }
                echo_workbench::echo::ExpertName::KnowledgeGuide => {
                    let knowledge = t.output.knowledge();
                    for m in knowledge
                        .into_iter()
                        .flat_map(|k| k.matches.iter().flatten())
                    {
                        println!(
                            "    {} \"{}\" -> {}: {}",
                            m.letter, m.option, m.entry, m.why
                        );
                    }
                    print_block(knowledge.map_or("", |k| k.snippet.as_str()));
                }
                echo_workbench::echo::ExpertName::ReasoningExpert => {
                    print_block(t.output.reasoning().map_or("", |r| r.text()));
                }
                echo_workbench::echo::ExpertName::DecisionMaker => {
                    println!(
                        "    reply: {}",
                        t.output.raw_reply().unwrap_or_default().trim()
                    );
                }
            }
        }
    }
    let _ = std::io::stdout().flush();
}

fn print_block(text: &str) {
    for line in text.lines() {
        println!("    | {line}");
    }
}

/// The HTTP endpoint to ask: the flag's URL, or the app's active endpoint, with
/// the flags given taking precedence.
fn http_endpoint(args: &InspectArgs, app: Option<&AppSettings>) -> anyhow::Result<EndpointConfig> {
    let mut cfg = match (&args.endpoint, app) {
        (None, Some(app)) => app.active_endpoint()?,
        (url, _) => EndpointConfig {
            name: "inspect".into(),
            base_url: url
                .clone()
                .unwrap_or_else(|| "http://127.0.0.1:8000/v1".into()),
            model: "default".into(),
            timeout_s: 120.0,
            ..EndpointConfig::default()
        },
    };
    override_endpoint(
        &mut cfg,
        args.model.as_ref(),
        args.api_key_env.as_ref(),
        args.timeout,
    );
    if let Some(n) = args.max_tokens {
        cfg.max_tokens = n;
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_types_parse() {
        assert_eq!(parse_option("A=Yes").unwrap(), ("A".into(), "Yes".into()));
        assert_eq!(
            parse_option("B= a = b ").unwrap(),
            ("B".into(), "a = b".into())
        );
        assert!(parse_option("A").is_err() && parse_option("=x").is_err());
        assert_eq!(
            parse_type("dc").unwrap(),
            QuestionType::DefectClassification
        );
        assert_eq!(
            parse_type("object details").unwrap(),
            QuestionType::ObjectDetails
        );
        assert!(
            parse_type("XX")
                .unwrap_err()
                .to_string()
                .contains("Anomaly Detection")
        );
        assert_eq!(parse_extract("mmad-last").unwrap(), ExtractMode::MmadLast);
    }
}
