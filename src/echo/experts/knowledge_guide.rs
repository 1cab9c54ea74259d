//! The Knowledge Guide: the knowledge block of the final prompt, chosen from the
//! condensed file or the knowledge base by the plan's mode (every entry of the
//! category, the entries the options name, or a model's selection, cached).

use super::{Expert, Findings, Step, Turn};
use crate::echo::error::PipelineError;
use crate::echo::guide::{self, CachedSelection};
use crate::echo::plan::{KnowledgeMode, KnowledgeSource};
use crate::echo::prompt::names;
use crate::echo::request::build_request;
use crate::echo::trace::{ExpertName, KnowledgeInput, KnowledgeOutput, TraceInput, TraceOutput};
use crate::knowledge::NORMAL_ENTRY;
use crate::knowledge::options::OptionMatch;

pub struct KnowledgeGuide;

impl Expert for KnowledgeGuide {
    const NAME: ExpertName = ExpertName::KnowledgeGuide;

    async fn run(&self, step: &Step<'_>, found: &mut Findings) -> Result<Turn, PipelineError> {
        let Some(mode) = step.plan.knowledge else {
            return Ok(Turn::Skipped);
        };
        match guide_knowledge(step, found, mode).await {
            Ok((input, output, summary)) => {
                // Counted only when the block is used, as the time of a model call.
                found.mllm_ms += output.latency_ms.unwrap_or(0);
                found.knowledge = output.snippet.clone();
                Ok(Turn::Done {
                    input: TraceInput::from(input),
                    output: TraceOutput::from(output),
                    summary,
                })
            }
            Err(e) if e.is_cancel() => Err(e),
            Err(error) => Ok(Turn::Failed {
                input: TraceInput::from(KnowledgeInput {
                    mode,
                    dataset: None,
                    category: None,
                    source: None,
                    cache_key: None,
                }),
                error,
            }),
        }
    }
}

/// What one mode chose, before the snippet is rendered.
struct Chosen {
    template: &'static str,
    entries: Vec<String>,
    /// `options` mode: why each entry was chosen.
    options: Option<(Vec<OptionMatch>, bool)>,
    /// `llm` mode: the selection call.
    llm: Option<LlmSelection>,
}

/// The model's selection as the trace records it.
struct LlmSelection {
    cached: bool,
    call: Option<SelectionCall>,
    cache_warning: Option<String>,
    raw: String,
    mentioned: Vec<String>,
}

/// The selection call, when it was made (not served from the cache).
struct SelectionCall {
    request: crate::echo::trace::RequestTrace,
    latency_ms: u64,
    attempts: u32,
    request_summary: serde_json::Value,
}

async fn guide_knowledge(
    step: &Step<'_>,
    found: &Findings,
    mode: KnowledgeMode,
) -> Result<(KnowledgeInput, KnowledgeOutput, String), PipelineError> {
    let Step {
        backend,
        ctx,
        set,
        query,
        question,
        cancel,
        ..
    } = *step;
    let vars = &found.vars;
    let fail = |message: String| PipelineError::Knowledge { message };
    let category = query
        .category
        .as_deref()
        .ok_or_else(|| fail("the query's category is unknown".into()))?;
    let (source, which) = if mode == KnowledgeMode::Condensed {
        (KnowledgeSource::Condensed, "condensed knowledge")
    } else {
        (KnowledgeSource::Base, "knowledge base")
    };
    let (kb, kb_hash) = ctx
        .knowledge_with_hash(source)
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
    let mut input = KnowledgeInput {
        mode,
        dataset: Some(ds_key.clone()),
        category: Some(category.to_string()),
        source: Some(which.to_string()),
        cache_key: None,
    };
    let mut v = vars.clone();
    let chosen = match mode {
        KnowledgeMode::Category => {
            v.set("entries", guide::join_texts(entries));
            Chosen {
                template: names::KNOWLEDGE_CATEGORY,
                entries: entries.keys().cloned().collect(),
                options: None,
                llm: None,
            }
        }
        KnowledgeMode::Condensed => {
            let defects = entries.iter().filter(|(n, _)| n.as_str() != NORMAL_ENTRY);
            v.set("entries", guide::name_lines(defects));
            Chosen {
                template: names::KNOWLEDGE_CONDENSED,
                entries: entries
                    .keys()
                    .filter(|n| n.as_str() != NORMAL_ENTRY)
                    .cloned()
                    .collect(),
                options: None,
                llm: None,
            }
        }
        KnowledgeMode::Options => {
            let sel = crate::knowledge::options::select_by_options(entries, &question.options);
            let picked = entries.iter().filter(|(n, _)| sel.entries.contains(n));
            v.set("entries", guide::join_texts(picked));
            Chosen {
                template: names::KNOWLEDGE_FILTERED,
                entries: sel.entries,
                options: Some((sel.matches, sel.fallback_all)),
                llm: None,
            }
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
            input.cache_key = Some(key.clone());
            let cache = ctx.knowledge_cache();
            let (selection, call, cache_warning) = match cache.get(&key) {
                Some(hit) => (hit, None, None),
                None => {
                    let mut sv = vars.clone();
                    sv.set("entries", guide::join_texts(entries));
                    let built = build_request(
                        set,
                        names::KNOWLEDGE_SELECT,
                        &sv,
                        &found.references,
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
                    let cache_warning = cache.put(sel.clone()).err().map(|e| {
                        format!("the selection could not be saved to the cache folder: {e}")
                    });
                    let call = SelectionCall {
                        request: built.summary,
                        latency_ms: reply.latency_ms,
                        attempts: reply.attempts,
                        request_summary: reply.request_summary,
                    };
                    (sel, Some(call), cache_warning)
                }
            };
            v.set("entries", selection.text.as_str());
            let mentioned = guide::mentioned_terms(entries, &selection.text);
            Chosen {
                template: names::KNOWLEDGE_FILTERED,
                entries: entries.keys().cloned().collect(),
                options: None,
                llm: Some(LlmSelection {
                    cached: call.is_none(),
                    call,
                    cache_warning,
                    raw: selection.raw,
                    mentioned,
                }),
            }
        }
        KnowledgeMode::Off => return Err(fail("the knowledge mode is `off`".into())),
    };
    let snippet = set.render_text(chosen.template, &v)?;
    let matched_terms: Vec<String> = match &chosen.llm {
        Some(llm) => llm.mentioned.clone(),
        None => {
            let mut terms =
                guide::entry_terms(entries.iter().filter(|(n, _)| chosen.entries.contains(n)));
            for m in chosen.options.iter().flat_map(|(ms, _)| ms) {
                if !terms.iter().any(|t| t.eq_ignore_ascii_case(&m.option)) {
                    terms.push(m.option.clone());
                }
            }
            terms
        }
    };
    let summary = match &chosen.llm {
        Some(llm) => format!(
            "{} knowledge for {category} selected by the model{} ({} characters)",
            mode,
            if llm.cached { ", from the cache" } else { "" },
            snippet.chars().count()
        ),
        None => format!(
            "{mode} knowledge for {category}: {} entries, {} characters",
            chosen.entries.len(),
            snippet.chars().count()
        ),
    };
    let (matches, fallback_all) = match chosen.options {
        Some((m, f)) => (Some(m), Some(f)),
        None => (None, None),
    };
    let mut output = KnowledgeOutput {
        snippet,
        matched_terms,
        entries: chosen.entries,
        template: chosen.template.to_string(),
        matches,
        fallback_all,
        cached: None,
        request: None,
        latency_ms: None,
        attempts: None,
        request_summary: None,
        cache_warning: None,
        raw: None,
        mentioned: None,
    };
    if let Some(llm) = chosen.llm {
        output.cached = Some(llm.cached);
        if let Some(call) = llm.call {
            output.request = Some(call.request);
            output.latency_ms = Some(call.latency_ms);
            output.attempts = Some(call.attempts);
            output.request_summary = Some(call.request_summary);
        }
        output.cache_warning = llm.cache_warning;
        output.raw = Some(llm.raw);
        output.mentioned = Some(llm.mentioned);
    }
    Ok((input, output, summary))
}
