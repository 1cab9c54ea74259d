//! The Echo pipeline: plan, then Reference Extractor, Knowledge Guide, Reasoning
//! Expert and Decision Maker, each leaving an [`ExpertTrace`].
//!
//! Failure policy: an expert that cannot do its work leaves a `Failed` trace and the
//! pipeline answers without it (unless [`PipelineSettings::strict`]); a failing
//! Decision Maker is an error that still carries every trace, so a run journal or
//! the GUI can show what happened up to the failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::backend::ChatBackend;
use super::error::PipelineError;
use super::extract::{ExtractMethod, ExtractMode, extract_answer};
use super::guide::{self, CachedSelection, KnowledgeCache};
use super::plan::{
    ExpertSwitches, ExpertTable, KnowledgeMode, KnowledgeSource, Plan, PlanError, PlanInputs,
    ReasoningMode, ReferenceKind, ScopeMode,
};
use super::prompt::{PromptSet, TemplateError, Vars, human_name, names};
use super::query::Query;
use super::reference::{self, ReferenceSource};
use super::request::build_request;
use super::trace::{ExpertName, ExpertStatus, ExpertTrace};
use crate::dataset::{Question, QuestionType};
use crate::jobs::CancelToken;
use crate::knowledge::{KnowledgeBase, NORMAL_ENTRY};
use crate::memory::ReferenceMemory;
use crate::vision::ImageEmbedder;

/// Everything a run chooses about the pipeline; saved in settings files and run
/// manifests. `None` fields follow the preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSettings {
    /// A preset of the experts table (`echo`, `mmad`, `full`, or a user's).
    pub preset: String,
    /// Overrides of the table for every type.
    pub switches: ExpertSwitches,
    /// Overrides for single types (MMAD's type names), applied over `switches`;
    /// e.g. `{"Defect Description": {"knowledge": false}}` reproduces the copy of
    /// Echo's code that sends no knowledge there.
    pub type_switches: IndexMap<String, ExpertSwitches>,
    /// Where references come from (default: the preset's).
    pub reference: Option<ReferenceKind>,
    /// Memory search scope (Echo: global).
    pub scope: ScopeMode,
    /// How many memory candidates the trace keeps.
    pub candidates: usize,
    /// How many reference images are sent (Echo and MMAD's default: 1).
    pub reference_images: usize,
    pub knowledge_mode: Option<KnowledgeMode>,
    pub reasoning_mode: Option<ReasoningMode>,
    pub extract: ExtractMode,
    /// A user's experts table (default: the bundled one).
    #[serde(with = "crate::util::serde_path::option")]
    pub experts_file: Option<PathBuf>,
    /// A folder of prompt sets overriding the bundled ones file by file.
    #[serde(with = "crate::util::serde_path::option")]
    pub prompts_dir: Option<PathBuf>,
    /// Where model-selected knowledge is cached across runs (default: memory only).
    #[serde(with = "crate::util::serde_path::option")]
    pub knowledge_cache_dir: Option<PathBuf>,
    /// Stop at the first failing expert instead of answering without it.
    pub strict: bool,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            preset: "echo".into(),
            switches: ExpertSwitches::default(),
            type_switches: IndexMap::new(),
            reference: None,
            scope: ScopeMode::Global,
            candidates: 3,
            reference_images: 1,
            knowledge_mode: None,
            reasoning_mode: None,
            extract: ExtractMode::Structured,
            experts_file: None,
            prompts_dir: None,
            knowledge_cache_dir: None,
            strict: false,
        }
    }
}

/// Sent as each expert starts and finishes, in pipeline order.
// Eight events per question: boxing the trace would cost every consumer a deref
// for no measurable gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum PipelineEvent {
    ExpertStarted(ExpertName),
    ExpertFinished(ExpertTrace),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timings {
    pub total_ms: u64,
    /// Time spent waiting for model calls (all experts together).
    pub mllm_ms: u64,
}

/// The pipeline's answer with everything that led to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub qtype: QuestionType,
    pub letter: Option<String>,
    pub option_text: Option<String>,
    /// The reply exactly as received.
    pub raw: String,
    /// MMAD's `gpt_answer`: the letter, or the raw reply when none was found.
    pub gpt_answer: String,
    /// Against the question's answer, when it has one.
    pub correct: Option<bool>,
    pub method: ExtractMethod,
    /// False for types outside the preset's method (Echo: the object types).
    pub in_scope: bool,
    pub plan: Plan,
    pub traces: Vec<ExpertTrace>,
    pub timings: Timings,
}

/// What the pipeline works with: settings, the loaded table and prompts, knowledge,
/// memory, and the model-selection cache. Shared by every question of a run.
pub struct PipelineContext {
    settings: PipelineSettings,
    table: ExpertTable,
    prompts: IndexMap<String, PromptSet>,
    knowledge: Option<(Arc<KnowledgeBase>, String)>,
    condensed: Option<(Arc<KnowledgeBase>, String)>,
    memory: Option<(Arc<ReferenceMemory>, Arc<dyn ImageEmbedder>)>,
    cache: KnowledgeCache,
}

impl std::fmt::Debug for PipelineContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineContext")
            .field("settings", &self.settings)
            .field("prompts", &self.prompts.keys().collect::<Vec<_>>())
            .field("knowledge", &self.knowledge.as_ref().map(|k| &k.1))
            .field("condensed", &self.condensed.as_ref().map(|k| &k.1))
            .field("memory", &self.memory.as_ref().map(|m| m.0.len()))
            .finish()
    }
}

impl PipelineContext {
    /// Loads the experts table and every prompt set the preset uses, and checks that
    /// each row's template exists, so that nothing about the setup can fail later.
    pub fn new(settings: PipelineSettings) -> Result<Self, PipelineError> {
        let table = ExpertTable::load_or_bundled(settings.experts_file.as_deref())?;
        let preset = table.preset(&settings.preset)?;
        let mut prompts = IndexMap::new();
        for name in preset.prompt_sets() {
            prompts.insert(
                name.to_string(),
                PromptSet::load(name, settings.prompts_dir.as_deref())?,
            );
        }
        for row in preset.types.values().chain([&preset.default]) {
            let set = row.prompts.as_deref().unwrap_or(&preset.prompts);
            prompts[set].get(&row.template)?;
        }
        for qtype in settings.type_switches.keys() {
            if !QuestionType::parse(qtype).is_known() {
                return Err(PlanError::UnknownType {
                    source_name: "the pipeline settings (type_switches)".into(),
                    preset: settings.preset.clone(),
                    name: qtype.clone(),
                }
                .into());
            }
        }
        let cache = KnowledgeCache::new(settings.knowledge_cache_dir.clone());
        Ok(PipelineContext {
            settings,
            table,
            prompts,
            knowledge: None,
            condensed: None,
            memory: None,
            cache,
        })
    }

    /// The full knowledge base (MMAD's domain_knowledge.json shape).
    pub fn with_knowledge(mut self, kb: Arc<KnowledgeBase>) -> Self {
        let hash = kb.content_hash();
        self.knowledge = Some((kb, hash));
        self
    }

    /// Echo's condensed knowledge (same shape, defect entries only).
    pub fn with_condensed(mut self, kb: Arc<KnowledgeBase>) -> Self {
        let hash = kb.content_hash();
        self.condensed = Some((kb, hash));
        self
    }

    /// The reference memory and the embedder for queries (refused if they differ).
    pub fn with_memory(
        mut self,
        memory: Arc<ReferenceMemory>,
        embedder: Arc<dyn ImageEmbedder>,
    ) -> Result<Self, PipelineError> {
        memory
            .check_query(&embedder.id(), embedder.dim())
            .map_err(PipelineError::Memory)?;
        self.memory = Some((memory, embedder));
        Ok(self)
    }

    pub fn settings(&self) -> &PipelineSettings {
        &self.settings
    }

    pub fn table(&self) -> &ExpertTable {
        &self.table
    }

    pub fn prompt_set(&self, name: &str) -> Option<&PromptSet> {
        self.prompts.get(name)
    }

    /// The knowledge file a mode reads, when one is loaded.
    pub fn knowledge_source(&self, source: KnowledgeSource) -> Option<&KnowledgeBase> {
        match source {
            KnowledgeSource::Condensed => self.condensed.as_ref(),
            KnowledgeSource::Base => self.knowledge.as_ref(),
        }
        .map(|(kb, _)| kb.as_ref())
    }

    /// The categories of the loaded reference memory (`None` without one).
    pub fn memory_categories(&self) -> Option<std::collections::HashSet<String>> {
        self.memory
            .as_ref()
            .map(|(m, _)| m.categories().into_iter().map(str::to_string).collect())
    }

    pub fn knowledge_cache(&self) -> &KnowledgeCache {
        &self.cache
    }

    /// SHA-256 over the experts table and every prompt set in use: a run manifest
    /// records it so that results are never compared across different prompts.
    pub fn prompt_templates_hash(&self) -> String {
        let mut material = format!("experts\0{}\0", self.table.text);
        for (name, set) in &self.prompts {
            material.push_str(&format!("{name}\0{}\0", set.hash()));
        }
        crate::util::fsx::sha256_bytes(material.as_bytes())
    }

    fn preset(&self) -> &super::plan::PresetDef {
        self.table
            .preset(&self.settings.preset)
            .expect("checked in PipelineContext::new")
    }

    fn reference_kind(&self) -> ReferenceKind {
        self.settings.reference.unwrap_or(self.preset().reference)
    }

    /// The runtime reference source the settings ask for.
    pub fn reference_source(&self) -> ReferenceSource {
        match self.reference_kind() {
            ReferenceKind::Memory => match &self.memory {
                Some((memory, embedder)) => ReferenceSource::Memory {
                    memory: memory.clone(),
                    embedder: embedder.clone(),
                    scope: self.settings.scope,
                    k: self.settings.candidates.max(self.settings.reference_images),
                },
                None => ReferenceSource::None,
            },
            ReferenceKind::Similar => ReferenceSource::MmadSimilar,
            ReferenceKind::Random => ReferenceSource::MmadRandom,
            ReferenceKind::None => ReferenceSource::None,
        }
    }

    /// Which experts will run for `qtype`, and why (shown before running).
    pub fn plan(&self, qtype: &QuestionType) -> Plan {
        let preset = self.preset();
        let mut switches = self.settings.switches;
        if let Some(t) = self.settings.type_switches.get(qtype.as_str()) {
            switches = t.or(switches);
        }
        let kind = self.reference_kind();
        let how = match (kind, &self.memory) {
            (ReferenceKind::Memory, None) => {
                "memory (none is loaded: the step will fail)".to_string()
            }
            _ => self.reference_source().describe(),
        };
        super::plan::resolve(
            &self.settings.preset,
            preset,
            qtype,
            PlanInputs {
                switches,
                reference: kind,
                knowledge_mode: self
                    .settings
                    .knowledge_mode
                    .unwrap_or(preset.knowledge_mode),
                reasoning_mode: self
                    .settings
                    .reasoning_mode
                    .unwrap_or(preset.reasoning_mode),
                reference_how: &how,
            },
        )
    }
}

/// Values every template may use.
fn base_vars(
    set: &PromptSet,
    query: &Query,
    question: &Question,
    k: usize,
) -> Result<Vars, TemplateError> {
    let mut v = Vars::default();
    let category = query
        .category
        .as_deref()
        .map(human_name)
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "product".into());
    v.set("question", question.text.trim())
        .set("options", set.options_text(&question.options)?)
        .set(
            "letters",
            question
                .options
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        )
        .set("category", category)
        .set("dataset", query.dataset.clone().unwrap_or_default())
        .set("type", question.qtype.as_str())
        .set("k", k.to_string());
    Ok(v)
}

fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
}

/// Answers one question about one image.
///
/// `events` receives `ExpertStarted` and `ExpertFinished` for each of the four
/// experts in order (skipped ones included), as they happen. Never panics on bad
/// input: problems become `Failed` traces or errors.
pub async fn answer(
    backend: &dyn ChatBackend,
    ctx: &PipelineContext,
    query: &Query,
    question: &Question,
    events: &(dyn Fn(PipelineEvent) + Sync),
    cancel: &CancelToken,
) -> Result<Decision, PipelineError> {
    let start = Instant::now();
    let plan = ctx.plan(&question.qtype);
    let set = ctx
        .prompt_set(&plan.prompts)
        .expect("PipelineContext::new loads every set the preset uses");
    let mut run = Run {
        traces: Vec::new(),
        mllm_ms: 0,
        events,
        strict: ctx.settings.strict,
    };

    // 1. Reference Extractor.
    run.check_cancel(cancel)?;
    events(PipelineEvent::ExpertStarted(ExpertName::ReferenceExtractor));
    let t = Instant::now();
    let mut references: Vec<PathBuf> = Vec::new();
    let trace = if plan.reference == Some(ReferenceKind::Memory) && ctx.memory.is_none() {
        let e = PipelineError::Reference {
            message: "the preset searches a reference memory but none is loaded (build one with \
                      `memory build`, or use MMAD's templates)"
                .into(),
        };
        failed(
            ExpertName::ReferenceExtractor,
            json!({"source": "memory"}),
            &e,
            t,
        )
    } else if plan.reference.is_some() {
        let source = ctx.reference_source();
        match reference::find(&source, query, ctx.settings.reference_images).await {
            Ok((input, found)) => {
                references = found.images();
                done(
                    ExpertName::ReferenceExtractor,
                    input,
                    to_value(&found),
                    found.summary(),
                    t,
                )
            }
            Err(e) => failed(
                ExpertName::ReferenceExtractor,
                json!({"source": source.describe()}),
                &e,
                t,
            ),
        }
    } else {
        ExpertTrace::skipped(
            ExpertName::ReferenceExtractor,
            plan.step(ExpertName::ReferenceExtractor).why.clone(),
        )
    };
    run.finish(trace)?;

    // 2. Knowledge Guide.
    run.check_cancel(cancel)?;
    events(PipelineEvent::ExpertStarted(ExpertName::KnowledgeGuide));
    let t = Instant::now();
    let vars = base_vars(set, query, question, references.len())?;
    let mut knowledge = String::new();
    let trace = match plan.knowledge {
        Some(mode) => {
            match knowledge_guide(
                backend,
                ctx,
                set,
                &vars,
                mode,
                query,
                question,
                &references,
                cancel,
            )
            .await
            {
                Ok(k) => {
                    run.mllm_ms += k.mllm_ms;
                    knowledge = k.snippet.clone();
                    done(ExpertName::KnowledgeGuide, k.input, k.output, k.summary, t)
                }
                Err(e) if e.is_cancel() => return Err(run.cancelled()),
                Err(e) => failed(ExpertName::KnowledgeGuide, json!({"mode": mode}), &e, t),
            }
        }
        None => ExpertTrace::skipped(
            ExpertName::KnowledgeGuide,
            plan.step(ExpertName::KnowledgeGuide).why.clone(),
        ),
    };
    run.finish(trace)?;

    // 3. Reasoning Expert.
    run.check_cancel(cancel)?;
    events(PipelineEvent::ExpertStarted(ExpertName::ReasoningExpert));
    let t = Instant::now();
    let mut reasoning_block = Vec::new();
    let trace = match plan.reasoning {
        Some(ReasoningMode::Inline) => match set.render(names::SCAFFOLD, &vars) {
            Ok(segs) => {
                let text = super::prompt::text_of(&segs);
                reasoning_block = segs;
                done(
                    ExpertName::ReasoningExpert,
                    json!({"mode": "inline", "template": names::SCAFFOLD}),
                    json!({"mode": "inline", "text": text}),
                    format!(
                        "inline three-step scaffold ({} characters)",
                        text.chars().count()
                    ),
                    t,
                )
            }
            Err(e) => failed(
                ExpertName::ReasoningExpert,
                json!({"mode": "inline"}),
                &e.into(),
                t,
            ),
        },
        Some(ReasoningMode::Separate) => {
            match separate_reasoning(backend, set, &vars, &references, query, cancel).await {
                Ok((input, output, observations, latency)) => {
                    run.mllm_ms += latency;
                    let mut v = vars.clone();
                    v.set("observations", observations.as_str());
                    match set.render(names::OBSERVATIONS, &v) {
                        Ok(segs) => {
                            reasoning_block = segs;
                            done(
                                ExpertName::ReasoningExpert,
                                input,
                                output,
                                format!(
                                    "separate call: {} characters of observations",
                                    observations.chars().count()
                                ),
                                t,
                            )
                        }
                        Err(e) => failed(ExpertName::ReasoningExpert, input, &e.into(), t),
                    }
                }
                Err(e) if e.is_cancel() => return Err(run.cancelled()),
                Err(e) => failed(
                    ExpertName::ReasoningExpert,
                    json!({"mode": "separate"}),
                    &e,
                    t,
                ),
            }
        }
        Some(ReasoningMode::Off) | None => ExpertTrace::skipped(
            ExpertName::ReasoningExpert,
            plan.step(ExpertName::ReasoningExpert).why.clone(),
        ),
    };
    run.finish(trace)?;

    // 4. Decision Maker.
    run.check_cancel(cancel)?;
    events(PipelineEvent::ExpertStarted(ExpertName::DecisionMaker));
    let t = Instant::now();
    let built = decision_request(
        set,
        &plan.template,
        vars,
        &knowledge,
        reasoning_block,
        &references,
        &query.image,
    );
    let built = match built {
        Ok(b) => b,
        Err(e) => {
            let e = PipelineError::from(e);
            let trace = failed(
                ExpertName::DecisionMaker,
                json!({"template": plan.template}),
                &e,
                t,
            );
            return Err(run.fail_decision(trace, e));
        }
    };
    let mut warnings = Vec::new();
    for (block, on) in [
        ("knowledge", !knowledge.is_empty()),
        ("reasoning", run.traces[2].is_done()),
    ] {
        if on && !set.template_uses(&plan.template, block) {
            warnings.push(format!(
                "the template `{}/{}` has no `{{{block}}}`: that expert's output is not sent",
                set.name, plan.template
            ));
        }
    }
    let mut input = json!({"request": built.summary});
    if !warnings.is_empty() {
        input["warnings"] = json!(warnings);
    }
    let reply = match backend.chat(&built.request, cancel).await {
        Ok(r) => r,
        Err(e) if e.is_cancel() || cancel.is_cancelled() => return Err(run.cancelled()),
        Err(e) => {
            let trace = failed(ExpertName::DecisionMaker, input, &e, t);
            return Err(run.fail_decision(trace, e));
        }
    };
    run.mllm_ms += reply.latency_ms;
    let extraction = extract_answer(&reply.text, &question.options, ctx.settings.extract);
    let option_text = extraction
        .letter
        .as_ref()
        .and_then(|l| question.options.get(l))
        .cloned();
    let has_truth = !question.answer.trim().is_empty();
    let correct = has_truth.then(|| extraction.letter.as_deref() == Some(question.answer.trim()));
    let summary = match (&extraction.letter, &option_text) {
        (Some(l), Some(text)) => format!("answered {l} ({text})"),
        (Some(l), None) => format!("answered {l}"),
        (None, _) => "no option letter found in the reply".into(),
    } + match correct {
        Some(true) => ", correct",
        Some(false) => ", wrong",
        None => "",
    };
    let output = json!({
        "raw": reply.text,
        "letter": extraction.letter,
        "option_text": option_text,
        "gpt_answer": extraction.answer,
        "method": extraction.method,
        "correct": correct,
        "latency_ms": reply.latency_ms,
        "attempts": reply.attempts,
        "finish_reason": reply.finish_reason,
        "reasoning": reply.reasoning,
        "request_summary": reply.request_summary,
    });
    let trace = done(ExpertName::DecisionMaker, input, output, summary, t);
    run.finish(trace)?;
    Ok(Decision {
        qtype: question.qtype.clone(),
        letter: extraction.letter,
        option_text,
        raw: reply.text,
        gpt_answer: extraction.answer,
        correct,
        method: extraction.method,
        in_scope: plan.in_scope,
        plan,
        traces: run.traces,
        timings: Timings {
            total_ms: ms_since(start),
            mllm_ms: run.mllm_ms,
        },
    })
}

/// Fills the blocks into the main template and places the images.
fn decision_request(
    set: &PromptSet,
    template: &str,
    mut vars: Vars,
    knowledge: &str,
    reasoning: Vec<super::prompt::Segment>,
    references: &[PathBuf],
    query: &Path,
) -> Result<super::request::BuiltRequest, TemplateError> {
    vars.set("knowledge", knowledge);
    vars.set_segments("reasoning", reasoning);
    let reference = if references.is_empty() {
        Vec::new()
    } else {
        let mut v = vars.clone();
        v.reference_images = references.len();
        v.query_image = true;
        set.render(names::REFERENCE, &v)?
    };
    vars.set_segments("reference", reference);
    let instruction = set.render(names::INSTRUCTION, &vars)?;
    vars.set_segments("instruction", instruction);
    build_request(set, template, &vars, references, query, true)
}

/// Bookkeeping shared by the four steps.
struct Run<'a> {
    traces: Vec<ExpertTrace>,
    mllm_ms: u64,
    events: &'a (dyn Fn(PipelineEvent) + Sync),
    strict: bool,
}

impl Run<'_> {
    fn check_cancel(&mut self, cancel: &CancelToken) -> Result<(), PipelineError> {
        if cancel.is_cancelled() {
            return Err(self.cancelled());
        }
        Ok(())
    }

    fn cancelled(&mut self) -> PipelineError {
        PipelineError::Cancelled {
            traces: std::mem::take(&mut self.traces),
        }
    }

    /// Records a finished trace; in strict mode a failure stops the pipeline.
    fn finish(&mut self, trace: ExpertTrace) -> Result<(), PipelineError> {
        (self.events)(PipelineEvent::ExpertFinished(trace.clone()));
        let failure = match &trace.status {
            ExpertStatus::Failed { error } if self.strict => Some((trace.name, error.clone())),
            _ => None,
        };
        self.traces.push(trace);
        match failure {
            Some((expert, message)) => Err(PipelineError::Expert {
                expert,
                traces: std::mem::take(&mut self.traces),
                source: Box::new(PipelineError::Failed { message }),
            }),
            None => Ok(()),
        }
    }

    fn fail_decision(&mut self, trace: ExpertTrace, source: PipelineError) -> PipelineError {
        (self.events)(PipelineEvent::ExpertFinished(trace.clone()));
        self.traces.push(trace);
        PipelineError::Expert {
            expert: ExpertName::DecisionMaker,
            traces: std::mem::take(&mut self.traces),
            source: Box::new(source),
        }
    }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn done(name: ExpertName, input: Value, output: Value, summary: String, t: Instant) -> ExpertTrace {
    ExpertTrace {
        name,
        status: ExpertStatus::Done,
        input,
        output,
        summary,
        ms: ms_since(t),
    }
}

fn failed(name: ExpertName, input: Value, error: &PipelineError, t: Instant) -> ExpertTrace {
    let error = error.to_string();
    ExpertTrace {
        name,
        summary: format!("failed: {error}"),
        status: ExpertStatus::Failed { error },
        input,
        output: Value::Null,
        ms: ms_since(t),
    }
}

struct KnowledgeResult {
    snippet: String,
    input: Value,
    output: Value,
    summary: String,
    mllm_ms: u64,
}

#[allow(clippy::too_many_arguments)]
async fn knowledge_guide(
    backend: &dyn ChatBackend,
    ctx: &PipelineContext,
    set: &PromptSet,
    vars: &Vars,
    mode: KnowledgeMode,
    query: &Query,
    question: &Question,
    references: &[PathBuf],
    cancel: &CancelToken,
) -> Result<KnowledgeResult, PipelineError> {
    let fail = |message: String| PipelineError::Knowledge { message };
    let category = query
        .category
        .as_deref()
        .ok_or_else(|| fail("the query's category is unknown".into()))?;
    let (source, which) = if mode == KnowledgeMode::Condensed {
        (&ctx.condensed, "condensed knowledge")
    } else {
        (&ctx.knowledge, "knowledge base")
    };
    let (kb, kb_hash) = source
        .as_ref()
        .ok_or_else(|| fail(format!("no {which} is loaded")))?;
    let (ds_key, entries) = guide::find_category(kb, query.dataset.as_deref(), category)
        .ok_or_else(|| {
            fail(format!(
                "the {which} has no category `{category}`{}",
                query
                    .dataset
                    .as_deref()
                    .map(|d| format!(" for dataset `{d}`"))
                    .unwrap_or_default()
            ))
        })?;
    let mut input = json!({"mode": mode, "dataset": ds_key, "category": category, "source": which});
    let mut v = vars.clone();
    let (template, chosen, extra, mllm_ms): (&str, Vec<String>, Value, u64) = match mode {
        KnowledgeMode::Category => {
            v.set("entries", guide::join_texts(entries));
            (
                names::KNOWLEDGE_CATEGORY,
                entries.keys().cloned().collect(),
                Value::Null,
                0,
            )
        }
        KnowledgeMode::Condensed => {
            let defects = entries.iter().filter(|(n, _)| n.as_str() != NORMAL_ENTRY);
            v.set("entries", guide::name_lines(defects));
            let names = entries
                .keys()
                .filter(|n| n.as_str() != NORMAL_ENTRY)
                .cloned()
                .collect();
            (names::KNOWLEDGE_CONDENSED, names, Value::Null, 0)
        }
        KnowledgeMode::Options => {
            let sel = crate::knowledge::options::select_by_options(entries, &question.options);
            let picked = entries.iter().filter(|(n, _)| sel.entries.contains(n));
            v.set("entries", guide::join_texts(picked));
            let extra = json!({"matches": sel.matches, "fallback_all": sel.fallback_all});
            (names::KNOWLEDGE_FILTERED, sel.entries, extra, 0)
        }
        KnowledgeMode::Llm => {
            let select = set.get(names::KNOWLEDGE_SELECT)?;
            let key = guide::selection_key(
                &question.text,
                &question.options,
                &ds_key,
                category,
                kb_hash,
                &select.text,
                &backend.describe(),
            );
            input["cache_key"] = json!(key);
            let (selection, call, ms) = match ctx.cache.get(&key) {
                Some(hit) => (hit, json!({"cached": true}), 0),
                None => {
                    let mut sv = vars.clone();
                    sv.set("entries", guide::join_texts(entries));
                    let built = build_request(
                        set,
                        names::KNOWLEDGE_SELECT,
                        &sv,
                        references,
                        &query.image,
                        false,
                    )?;
                    let reply = backend.chat(&built.request, cancel).await?;
                    let text = reply.text.trim().to_string();
                    if text.is_empty() {
                        return Err(PipelineError::EmptyReply);
                    }
                    let sel = CachedSelection {
                        key: key.clone(),
                        text,
                        raw: reply.text.clone(),
                        backend: backend.describe(),
                    };
                    let mut call = json!({
                        "cached": false,
                        "request": built.summary,
                        "latency_ms": reply.latency_ms,
                        "attempts": reply.attempts,
                        "request_summary": reply.request_summary,
                    });
                    if let Err(e) = ctx.cache.put(sel.clone()) {
                        call["cache_warning"] = json!(format!(
                            "the selection could not be saved to the cache folder: {e}"
                        ));
                    }
                    (sel, call, reply.latency_ms)
                }
            };
            v.set("entries", selection.text.as_str());
            let mut extra = call;
            extra["raw"] = json!(selection.raw);
            let mentioned = guide::mentioned_terms(entries, &selection.text);
            extra["mentioned"] = json!(mentioned);
            (
                names::KNOWLEDGE_FILTERED,
                entries.keys().cloned().collect(),
                extra,
                ms,
            )
        }
        KnowledgeMode::Off => return Err(fail("the knowledge mode is `off`".into())),
    };
    let snippet = set.render_text(template, &v)?;
    let matched_terms: Vec<String> = match mode {
        KnowledgeMode::Llm => extra["mentioned"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        _ => {
            let mut terms = guide::entry_terms(entries.iter().filter(|(n, _)| chosen.contains(n)));
            if let Some(ms) = extra["matches"].as_array() {
                for m in ms {
                    if let Some(o) = m["option"].as_str()
                        && !terms.iter().any(|t| t.eq_ignore_ascii_case(o))
                    {
                        terms.push(o.to_string());
                    }
                }
            }
            terms
        }
    };
    let cached = extra["cached"].as_bool();
    let summary = match mode {
        KnowledgeMode::Llm => format!(
            "{} knowledge for {category} selected by the model{} ({} characters)",
            mode,
            if cached == Some(true) {
                ", from the cache"
            } else {
                ""
            },
            snippet.chars().count()
        ),
        _ => format!(
            "{mode} knowledge for {category}: {} entries, {} characters",
            chosen.len(),
            snippet.chars().count()
        ),
    };
    let mut output = json!({
        "snippet": snippet,
        "matched_terms": matched_terms,
        "entries": chosen,
        "template": template,
    });
    if let Value::Object(extra) = extra {
        for (k, val) in extra {
            output[k] = val;
        }
    }
    Ok(KnowledgeResult {
        snippet,
        input,
        output,
        summary,
        mllm_ms,
    })
}

async fn separate_reasoning(
    backend: &dyn ChatBackend,
    set: &PromptSet,
    vars: &Vars,
    references: &[PathBuf],
    query: &Query,
    cancel: &CancelToken,
) -> Result<(Value, Value, String, u64), PipelineError> {
    let mut v = vars.clone();
    if !references.is_empty() {
        let mut rv = vars.clone();
        rv.reference_images = references.len();
        rv.query_image = true;
        v.set_segments("reference", set.render(names::REFERENCE, &rv)?);
    }
    let built = build_request(
        set,
        names::REASONING_CALL,
        &v,
        references,
        &query.image,
        true,
    )?;
    let input = json!({"mode": "separate", "request": built.summary});
    let reply = backend.chat(&built.request, cancel).await?;
    let observations = reply.text.trim().to_string();
    if observations.is_empty() {
        return Err(PipelineError::EmptyReply);
    }
    let output = json!({
        "mode": "separate",
        "observations": observations,
        "raw": reply.text,
        "latency_ms": reply.latency_ms,
        "attempts": reply.attempts,
        "request_summary": reply.request_summary,
    });
    Ok((input, output, observations, reply.latency_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GUI and the batch runner spawn `answer` on a multi-threaded runtime.
    #[test]
    fn the_answer_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let ctx = PipelineContext::new(PipelineSettings::default()).unwrap();
        let backend = crate::echo::ScriptedBackend::constant("A");
        let question = Question {
            text: "Is there any defect?".into(),
            answer: String::new(),
            options: IndexMap::new(),
            qtype: QuestionType::AnomalyDetection,
            annotation: None,
        };
        let query = Query::image("x.png");
        let cancel = CancelToken::new();
        let fut = answer(&backend, &ctx, &query, &question, &|_| {}, &cancel);
        assert_send(&fut);
    }

    #[test]
    fn dataset_and_category_from_paths() {
        let q = Query::image("/data/mmad/MVTec-AD/bottle/test/broken_large/000.png");
        assert_eq!(q.dataset.as_deref(), Some("MVTec-AD"));
        assert_eq!(q.category.as_deref(), Some("bottle"));
        let q = Query::image("photo.png");
        assert_eq!((q.dataset, q.category), (None, None));
        let q = Query::image("bottle/test/x.png");
        assert_eq!(
            (q.dataset.as_deref(), q.category.as_deref()),
            (None, Some("bottle"))
        );
    }

    #[test]
    fn settings_round_trip_and_default_to_echo() {
        let s = PipelineSettings::default();
        assert_eq!(s.preset, "echo");
        let text = serde_json::to_string(&s).unwrap();
        let back: PipelineSettings = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        let partial: PipelineSettings = serde_json::from_str(
            r#"{"preset": "mmad", "switches": {"knowledge": true}, "type_switches": {"Defect Description": {"knowledge": false}}}"#,
        )
        .unwrap();
        assert_eq!(partial.switches.knowledge, Some(true));
        assert_eq!(partial.candidates, 3);
        let toml_text = toml::to_string(&partial).unwrap();
        let back: PipelineSettings = toml::from_str(&toml_text).unwrap();
        assert_eq!(back, partial);
        assert!(serde_json::from_str::<PipelineSettings>(r#"{"prest": "echo"}"#).is_err());
    }

    #[test]
    fn context_checks_its_setup() {
        let bad = PipelineSettings {
            preset: "nope".into(),
            ..Default::default()
        };
        let e = PipelineContext::new(bad).unwrap_err().to_string();
        assert!(e.contains("no preset `nope`"), "{e}");
        let mut s = PipelineSettings::default();
        s.type_switches
            .insert("Defect description".into(), ExpertSwitches::default());
        assert!(
            PipelineContext::new(s)
                .unwrap_err()
                .to_string()
                .contains("Defect description")
        );
        let a = PipelineContext::new(PipelineSettings::default()).unwrap();
        let b = PipelineContext::new(PipelineSettings {
            preset: "mmad".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(a.prompt_templates_hash().len(), 64);
        assert_ne!(a.prompt_templates_hash(), b.prompt_templates_hash());
        // The echo preset needs the mmad prompts for the object types.
        assert!(a.prompt_set("mmad").is_some());
    }

    #[test]
    fn plan_follows_switches_per_type() {
        let mut s = PipelineSettings::default();
        s.type_switches.insert(
            "Defect Description".into(),
            ExpertSwitches {
                knowledge: Some(false),
                ..Default::default()
            },
        );
        let ctx = PipelineContext::new(s).unwrap();
        let dd = ctx.plan(&QuestionType::DefectDescription);
        assert_eq!(dd.knowledge, None);
        assert!(dd.reasoning.is_some() && dd.reference.is_some());
        let dc = ctx.plan(&QuestionType::DefectClassification);
        assert_eq!(dc.knowledge, Some(KnowledgeMode::Condensed));
        // No memory loaded: the plan says the step will fail.
        assert!(
            dc.step(ExpertName::ReferenceExtractor)
                .how
                .contains("none is loaded")
        );
    }
}
