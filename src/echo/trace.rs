//! What every expert leaves behind. Traces are the product: the GUI shows them,
//! runs store them in their journal and exports carry them, so they hold the real
//! inputs and outputs (paths, scores, the exact prompt text, the raw reply), not a
//! paraphrase.
//!
//! Each expert's input and output is a type of its own, laid out field by field as
//! the journal has always stored it (keys, their order, omissions, number
//! formatting), so a journal written before these types existed reads back and is
//! written out again byte for byte. A stored shape these types do not describe
//! exactly (an older journal, a benchmark's filler) is kept as [`TraceInput::Raw`] /
//! [`TraceOutput::Raw`] rather than refused or silently reshaped.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::extract::ExtractMethod;
pub use super::plan::ExpertName;
use super::plan::{KnowledgeMode, MapImage};
use crate::knowledge::options::OptionMatch;
use crate::memory::Scope;

/// How an expert's turn ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ExpertStatus {
    Done,
    /// The plan left it out (table, switch or mode); `why` says which.
    Skipped {
        why: String,
    },
    /// It was planned but could not do its work; the pipeline went on without it
    /// (or, for the Decision Maker, returned an error carrying all traces).
    Failed {
        error: String,
    },
}

/// One expert's record for one question.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpertTrace {
    pub name: ExpertName,
    pub status: ExpertStatus,
    /// What it worked from (settings, paths, the request it sent).
    pub input: TraceInput,
    /// What it produced (`null` when skipped).
    pub output: TraceOutput,
    /// One line for people.
    pub summary: String,
    /// Wall time of this expert, model calls included.
    pub ms: u64,
}

/// The journal's layout of a trace, before the input and output are typed by `name`.
/// What an older writer left out reads as empty rather than failing the record.
#[derive(Deserialize)]
struct StoredTrace {
    name: ExpertName,
    status: ExpertStatus,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    output: Value,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    ms: u64,
}

impl<'de> Deserialize<'de> for ExpertTrace {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = StoredTrace::deserialize(deserializer)?;
        Ok(ExpertTrace {
            input: TraceInput::read(stored.name, stored.input),
            output: TraceOutput::read(stored.name, stored.output),
            name: stored.name,
            status: stored.status,
            summary: stored.summary,
            ms: stored.ms,
        })
    }
}

impl ExpertTrace {
    pub(crate) fn skipped(name: ExpertName, why: impl Into<String>) -> Self {
        let why = why.into();
        ExpertTrace {
            name,
            summary: format!("skipped: {why}"),
            status: ExpertStatus::Skipped { why },
            input: TraceInput::None,
            output: TraceOutput::None,
            ms: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.status == ExpertStatus::Done
    }

    pub fn is_failed(&self) -> bool {
        matches!(self.status, ExpertStatus::Failed { .. })
    }
}

/// `value` as `T` when `T` writes it back exactly as stored; `None` otherwise, so a
/// shape that would be reshaped (a missing key filled in, a number reformatted)
/// stays raw.
fn exactly<T: Serialize + DeserializeOwned>(value: &Value) -> Option<T> {
    let typed = T::deserialize(value).ok()?;
    let again = serde_json::to_string(&typed).ok()?;
    (again == serde_json::to_string(value).ok()?).then_some(typed)
}

/// What an expert worked from, typed by the expert that recorded it.
#[derive(Debug, Clone, PartialEq)]
pub enum TraceInput {
    /// Nothing (`null`): a skipped expert.
    None,
    Reference(Box<ReferenceInput>),
    Map(Box<MapInput>),
    Knowledge(Box<KnowledgeInput>),
    Reasoning(Box<ReasoningInput>),
    Decision(Box<DecisionInput>),
    /// A stored shape this version does not describe, kept as it was.
    Raw(Value),
}

/// What an expert produced, typed by the expert that recorded it.
#[derive(Debug, Clone, PartialEq)]
pub enum TraceOutput {
    /// Nothing (`null`): skipped or failed.
    None,
    Reference(Box<ReferenceOutput>),
    Map(Box<MapOutput>),
    Knowledge(Box<KnowledgeOutput>),
    Reasoning(Box<ReasoningOutput>),
    Decision(Box<DecisionOutput>),
    /// A stored shape this version does not describe, kept as it was.
    Raw(Value),
}

impl TraceInput {
    fn read(name: ExpertName, value: Value) -> Self {
        let typed = match (name, &value) {
            (_, Value::Null) => Some(TraceInput::None),
            (ExpertName::ReferenceExtractor, v) => {
                exactly(v).map(|x| TraceInput::Reference(Box::new(x)))
            }
            (ExpertName::AnomalyMap, v) => exactly(v).map(|x| TraceInput::Map(Box::new(x))),
            (ExpertName::KnowledgeGuide, v) => {
                exactly(v).map(|x| TraceInput::Knowledge(Box::new(x)))
            }
            (ExpertName::ReasoningExpert, v) => {
                exactly(v).map(|x| TraceInput::Reasoning(Box::new(x)))
            }
            (ExpertName::DecisionMaker, v) => exactly(v).map(|x| TraceInput::Decision(Box::new(x))),
        };
        typed.unwrap_or(TraceInput::Raw(value))
    }

    /// As JSON, for views that show the whole record.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    pub fn reference(&self) -> Option<&ReferenceInput> {
        match self {
            TraceInput::Reference(x) => Some(x.as_ref()),
            _ => None,
        }
    }

    pub fn map(&self) -> Option<&MapInput> {
        match self {
            TraceInput::Map(x) => Some(x.as_ref()),
            _ => None,
        }
    }

    pub fn knowledge(&self) -> Option<&KnowledgeInput> {
        match self {
            TraceInput::Knowledge(x) => Some(x.as_ref()),
            _ => None,
        }
    }

    pub fn reasoning(&self) -> Option<&ReasoningInput> {
        match self {
            TraceInput::Reasoning(x) => Some(x.as_ref()),
            _ => None,
        }
    }

    pub fn decision(&self) -> Option<&DecisionInput> {
        match self {
            TraceInput::Decision(x) => Some(x.as_ref()),
            _ => None,
        }
    }

    /// The chat request the expert sent, whichever expert it was.
    pub fn request(&self) -> Option<&RequestTrace> {
        match self {
            TraceInput::Reasoning(r) => match r.as_ref() {
                ReasoningInput::Separate { request } => request.as_ref(),
                ReasoningInput::Inline { .. } => None,
            },
            TraceInput::Decision(d) => d.request.as_ref(),
            _ => None,
        }
    }
}

impl TraceOutput {
    fn read(name: ExpertName, value: Value) -> Self {
        let typed = match (name, &value) {
            (_, Value::Null) => Some(TraceOutput::None),
            (ExpertName::ReferenceExtractor, v) => {
                exactly(v).map(|x| TraceOutput::Reference(Box::new(x)))
            }
            (ExpertName::AnomalyMap, v) => exactly(v).map(|x| TraceOutput::Map(Box::new(x))),
            (ExpertName::KnowledgeGuide, v) => {
                exactly(v).map(|x| TraceOutput::Knowledge(Box::new(x)))
            }
            (ExpertName::ReasoningExpert, v) => {
                exactly(v).map(|x| TraceOutput::Reasoning(Box::new(x)))
            }
            (ExpertName::DecisionMaker, v) => {
                exactly(v).map(|x| TraceOutput::Decision(Box::new(x)))
            }
        };
        typed.unwrap_or(TraceOutput::Raw(value))
    }

    /// As JSON, for views that show the whole record.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    pub fn is_none(&self) -> bool {
        matches!(self, TraceOutput::None)
    }

    pub fn reference(&self) -> Option<&ReferenceOutput> {
        match self {
            TraceOutput::Reference(x) => Some(x.as_ref()),
            _ => None,
        }
    }

    pub fn map(&self) -> Option<&MapOutput> {
        match self {
            TraceOutput::Map(x) => Some(x.as_ref()),
            _ => None,
        }
    }

    pub fn knowledge(&self) -> Option<&KnowledgeOutput> {
        match self {
            TraceOutput::Knowledge(x) => Some(x.as_ref()),
            _ => None,
        }
    }

    pub fn reasoning(&self) -> Option<&ReasoningOutput> {
        match self {
            TraceOutput::Reasoning(x) => Some(x.as_ref()),
            _ => None,
        }
    }

    pub fn decision(&self) -> Option<&DecisionOutput> {
        match self {
            TraceOutput::Decision(x) => Some(x.as_ref()),
            _ => None,
        }
    }

    /// The reply's text as received, for the experts that asked the model.
    pub fn raw_reply(&self) -> Option<&str> {
        match self {
            TraceOutput::Reasoning(r) => match r.as_ref() {
                ReasoningOutput::Separate { raw, .. } => Some(raw),
                ReasoningOutput::Inline { .. } => None,
            },
            TraceOutput::Decision(d) => Some(&d.raw),
            TraceOutput::Knowledge(k) => k.raw.as_deref(),
            _ => None,
        }
    }
}

impl From<ReferenceInput> for TraceInput {
    fn from(x: ReferenceInput) -> Self {
        TraceInput::Reference(Box::new(x))
    }
}

impl From<MapInput> for TraceInput {
    fn from(x: MapInput) -> Self {
        TraceInput::Map(Box::new(x))
    }
}

impl From<KnowledgeInput> for TraceInput {
    fn from(x: KnowledgeInput) -> Self {
        TraceInput::Knowledge(Box::new(x))
    }
}

impl From<ReasoningInput> for TraceInput {
    fn from(x: ReasoningInput) -> Self {
        TraceInput::Reasoning(Box::new(x))
    }
}

impl From<DecisionInput> for TraceInput {
    fn from(x: DecisionInput) -> Self {
        TraceInput::Decision(Box::new(x))
    }
}

impl From<ReferenceOutput> for TraceOutput {
    fn from(x: ReferenceOutput) -> Self {
        TraceOutput::Reference(Box::new(x))
    }
}

impl From<MapOutput> for TraceOutput {
    fn from(x: MapOutput) -> Self {
        TraceOutput::Map(Box::new(x))
    }
}

impl From<KnowledgeOutput> for TraceOutput {
    fn from(x: KnowledgeOutput) -> Self {
        TraceOutput::Knowledge(Box::new(x))
    }
}

impl From<ReasoningOutput> for TraceOutput {
    fn from(x: ReasoningOutput) -> Self {
        TraceOutput::Reasoning(Box::new(x))
    }
}

impl From<DecisionOutput> for TraceOutput {
    fn from(x: DecisionOutput) -> Self {
        TraceOutput::Decision(Box::new(x))
    }
}

impl Serialize for TraceInput {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TraceInput::None => s.serialize_unit(),
            TraceInput::Reference(x) => x.serialize(s),
            TraceInput::Map(x) => x.serialize(s),
            TraceInput::Knowledge(x) => x.serialize(s),
            TraceInput::Reasoning(x) => x.serialize(s),
            TraceInput::Decision(x) => x.serialize(s),
            TraceInput::Raw(x) => x.serialize(s),
        }
    }
}

impl Serialize for TraceOutput {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TraceOutput::None => s.serialize_unit(),
            TraceOutput::Reference(x) => x.serialize(s),
            TraceOutput::Map(x) => x.serialize(s),
            TraceOutput::Knowledge(x) => x.serialize(s),
            TraceOutput::Reasoning(x) => x.serialize(s),
            TraceOutput::Decision(x) => x.serialize(s),
            TraceOutput::Raw(x) => x.serialize(s),
        }
    }
}

/// A chat request as sent: text verbatim, images by role and path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestTrace {
    /// The prompt set.
    pub prompts: String,
    pub template: String,
    pub system: Option<String>,
    pub parts: Vec<PromptPart>,
}

/// One part of a request, in the order sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PromptPart {
    Text {
        text: String,
    },
    Image {
        image: ImageRole,
        /// Which reference (references only).
        #[serde(skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
        path: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageRole {
    Reference,
    Query,
    /// The anomaly map's picture of the query (its `path` is the query's).
    #[serde(rename = "anomaly_map")]
    AnomalyMap,
}

/// What the Reference Extractor searched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReferenceInput {
    /// A reference memory (`source` is `memory`).
    Memory {
        source: String,
        memory: PathBuf,
        items: usize,
        embedder: String,
        scope: Scope,
        k: usize,
        rerank: bool,
        images: usize,
    },
    /// MMAD's template lists of the query's dataset entry.
    Templates {
        /// `similar_templates` or `random_templates`.
        source: String,
        key: String,
        root: PathBuf,
        images: usize,
    },
    /// Only the source, when the search could not start.
    Source { source: String },
}

/// What the Reference Extractor found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceOutput {
    pub source: String,
    pub candidates: Vec<CandidateTrace>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One reference candidate. Scores are the search's `f32`s widened, which is how
/// the journal has always written them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateTrace {
    pub path: PathBuf,
    pub rel_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank_score: Option<f64>,
    /// Sent to the model.
    pub used: bool,
}

/// What the Knowledge Guide read. Only `mode` is recorded when it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeInput {
    pub mode: KnowledgeMode,
    /// The dataset key as the knowledge file spells it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// `condensed knowledge` or `knowledge base`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The model selection's cache key (`llm` mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
}

/// What the Knowledge Guide sends on. The fields after `template` belong to one
/// mode each (`options`: matches; `llm`: the selection call) and are left out for
/// the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeOutput {
    pub snippet: String,
    pub matched_terms: Vec<String>,
    pub entries: Vec<String>,
    pub template: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<OptionMatch>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_all: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestTrace>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_summary: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_warning: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mentioned: Option<Vec<String>>,
}

/// A key that is there, even holding `null`, is `Some` (so it is written back).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// How the Reasoning Expert worked. Failures record the mode alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ReasoningInput {
    Inline {
        #[serde(skip_serializing_if = "Option::is_none")]
        template: Option<String>,
    },
    Separate {
        #[serde(skip_serializing_if = "Option::is_none")]
        request: Option<RequestTrace>,
    },
}

/// What the Reasoning Expert adds to the final request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ReasoningOutput {
    /// The scaffold's text.
    Inline { text: String },
    /// The separate call's observations and its reply.
    Separate {
        observations: String,
        raw: String,
        latency_ms: u64,
        attempts: u32,
        request_summary: Value,
    },
}

impl ReasoningOutput {
    /// The text the Decision Maker receives.
    pub fn text(&self) -> &str {
        match self {
            ReasoningOutput::Inline { text } => text,
            ReasoningOutput::Separate { observations, .. } => observations,
        }
    }
}

/// What the Decision Maker sent. `template` alone when the request could not be
/// built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionInput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestTrace>,
    /// Blocks an earlier expert produced that the template does not place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The final reply and the option read from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionOutput {
    pub raw: String,
    pub letter: Option<String>,
    pub option_text: Option<String>,
    pub gpt_answer: String,
    pub method: ExtractMethod,
    pub correct: Option<bool>,
    pub latency_ms: u64,
    pub attempts: u32,
    pub finish_reason: Option<String>,
    pub reasoning: Option<String>,
    pub request_summary: Value,
}

/// What the anomaly map worked with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapInput {
    /// The reference memory's folder.
    pub memory: PathBuf,
    /// The patch features compared (`descriptor`, ...).
    pub backbone: String,
    /// How many retrieved normal references the query is compared with.
    pub k: usize,
    /// Whether the Decision Maker gets the hint sentence.
    pub hint: bool,
    /// Which third image the Decision Maker gets.
    pub image: MapImage,
}

/// One of the map's most unusual regions, in the query's pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapRegion {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    /// The map's maximum inside the region.
    pub score: f64,
    /// MMAD's nine-grid name of its centre (`top left` ... `bottom right`).
    pub grid: String,
}

/// What the anomaly map found: the journal keeps this (not the map itself, which
/// the detector recomputes from the run's memory when a view needs it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapOutput {
    /// The image score (mean of the map's highest pixels).
    pub score: f64,
    /// The category's threshold from its normals alone (leave-one-out).
    pub threshold: f64,
    /// The memory's category the references came from.
    pub category: String,
    pub backbone: String,
    pub k: usize,
    /// Best first.
    pub regions: Vec<MapRegion>,
    /// Memory paths of the normals compared with.
    pub references: Vec<String>,
    /// The sentence given to the Decision Maker, when the hint is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Time of the detection itself (features, map, threshold on first use).
    pub map_ms: u64,
}

impl MapOutput {
    /// Whether the map calls the image anomalous (its score above the threshold).
    pub fn anomalous(&self) -> bool {
        self.score > self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPAT_JOURNAL: &str = include_str!("../../tests/fixtures/compat/run/journal.jsonl");

    /// Today's journals must read into the typed form and be written back byte for
    /// byte: a run folder from an earlier release re-exports identically.
    #[test]
    fn the_compat_journal_traces_type_and_write_back_byte_for_byte() {
        let mut typed = 0;
        for (n, line) in COMPAT_JOURNAL.lines().enumerate() {
            let record: Value = serde_json::from_str(line).unwrap();
            let traces = record["traces"].as_array().unwrap();
            assert!(!traces.is_empty(), "line {n} has traces");
            for stored in traces {
                let text = serde_json::to_string(stored).unwrap();
                assert!(
                    line.contains(&text),
                    "line {n}: {text} is the file's own bytes"
                );
                let trace: ExpertTrace = serde_json::from_str(&text).unwrap();
                assert!(
                    !matches!(trace.input, TraceInput::Raw(_))
                        && !matches!(trace.output, TraceOutput::Raw(_)),
                    "line {n}: {} stays raw: {text}",
                    trace.name
                );
                typed += usize::from(!trace.output.is_none());
                assert_eq!(serde_json::to_string(&trace).unwrap(), text, "line {n}");
            }
        }
        assert!(typed >= 12, "the fixture has done experts: {typed}");
    }

    #[test]
    fn every_expert_of_the_fixture_has_its_typed_output() {
        let mut seen = std::collections::HashSet::new();
        for line in COMPAT_JOURNAL.lines() {
            let record: Value = serde_json::from_str(line).unwrap();
            for stored in record["traces"].as_array().unwrap() {
                let trace: ExpertTrace = serde_json::from_value(stored.clone()).unwrap();
                let typed = match trace.name {
                    ExpertName::ReferenceExtractor => trace.output.reference().is_some(),
                    ExpertName::AnomalyMap => trace.output.map().is_some(),
                    ExpertName::KnowledgeGuide => trace.output.knowledge().is_some(),
                    ExpertName::ReasoningExpert => trace.output.reasoning().is_some(),
                    ExpertName::DecisionMaker => trace.output.decision().is_some(),
                };
                if typed {
                    seen.insert(trace.name);
                }
            }
        }
        assert!(seen.contains(&ExpertName::ReferenceExtractor), "{seen:?}");
        assert!(seen.contains(&ExpertName::DecisionMaker), "{seen:?}");
    }

    /// The anomaly map's line reads back typed and writes the same bytes; a map
    /// output from a later version with more keys stays raw.
    #[test]
    fn a_map_trace_reads_typed_and_writes_back_byte_for_byte() {
        let line = r#"{"name":"anomaly_map","status":{"state":"done"},"input":{"memory":"m","backbone":"descriptor","k":4,"hint":true,"image":"outline"},"output":{"score":0.8299999833106995,"threshold":0.41,"category":"washer","backbone":"descriptor","k":4,"regions":[{"x":1,"y":2,"w":30,"h":40,"score":0.9,"grid":"top left"}],"references":["Sample/washer/train/good/000.png"],"hint":"The most unusual region is at the top left, score 0.83 against a threshold of 0.41.","map_ms":12},"summary":"s","ms":13}"#;
        let trace: ExpertTrace = serde_json::from_str(line).unwrap();
        let out = trace.output.map().expect("typed");
        assert!(out.anomalous());
        assert_eq!(out.regions[0].grid, "top left");
        assert_eq!(trace.input.map().unwrap().image, MapImage::Outline);
        assert_eq!(serde_json::to_string(&trace).unwrap(), line);
        let later = line.replace("\"map_ms\":12", "\"map_ms\":12,\"pixels\":[1]");
        let trace: ExpertTrace = serde_json::from_str(&later).unwrap();
        assert!(matches!(trace.output, TraceOutput::Raw(_)));
        assert_eq!(serde_json::to_string(&trace).unwrap(), later);
    }

    /// Older or foreign shapes load (kept raw) and write back as they were; a
    /// trace without `input` or `output` reads them as `null`.
    #[test]
    fn unknown_shapes_stay_raw_and_never_fail_the_record() {
        let odd = r#"{"name":"decision_maker","status":{"state":"done"},"input":{"prompt":"p"},"output":{"reply":"A","letter":"A","extra":1.5},"summary":"s","ms":3}"#;
        let trace: ExpertTrace = serde_json::from_str(odd).unwrap();
        assert!(matches!(trace.input, TraceInput::Raw(_)));
        assert!(matches!(trace.output, TraceOutput::Raw(_)));
        assert_eq!(serde_json::to_string(&trace).unwrap(), odd);

        // A known shape with a key this version does not write stays raw too,
        // rather than losing the key.
        let more = r#"{"name":"knowledge_guide","status":{"state":"failed","error":"no knowledge: x"},"input":{"mode":"options","future":true},"output":null,"summary":"failed: no knowledge: x","ms":0}"#;
        let trace: ExpertTrace = serde_json::from_str(more).unwrap();
        assert!(matches!(trace.input, TraceInput::Raw(_)));
        assert!(trace.output.is_none() && trace.is_failed());
        assert_eq!(serde_json::to_string(&trace).unwrap(), more);

        let failed = r#"{"name":"knowledge_guide","status":{"state":"failed","error":"e"},"input":{"mode":"options"},"output":null,"summary":"failed: e","ms":0}"#;
        let trace: ExpertTrace = serde_json::from_str(failed).unwrap();
        assert_eq!(
            trace.input.knowledge().map(|k| k.mode),
            Some(KnowledgeMode::Options)
        );
        assert_eq!(serde_json::to_string(&trace).unwrap(), failed);

        let missing = r#"{"name":"reasoning_expert","status":{"state":"skipped","why":"w"},"summary":"skipped: w","ms":0}"#;
        let trace: ExpertTrace = serde_json::from_str(missing).unwrap();
        assert_eq!(
            trace,
            ExpertTrace::skipped(ExpertName::ReasoningExpert, "w")
        );
    }

    #[test]
    fn every_shape_the_experts_write_reads_back_typed() {
        let request = RequestTrace {
            prompts: "echo".into(),
            template: "defect_classification".into(),
            system: None,
            parts: vec![
                PromptPart::Text {
                    text: "Look".into(),
                },
                PromptPart::Image {
                    image: ImageRole::Reference,
                    index: Some(0),
                    path: "r.png".into(),
                },
                PromptPart::Image {
                    image: ImageRole::Query,
                    index: None,
                    path: "q.png".into(),
                },
            ],
        };
        let knowledge = KnowledgeOutput {
            snippet: "s".into(),
            matched_terms: vec!["scratch".into()],
            entries: vec!["scratch".into()],
            template: "knowledge_filtered".into(),
            matches: None,
            fallback_all: None,
            cached: Some(false),
            request: Some(request.clone()),
            latency_ms: Some(5),
            attempts: Some(1),
            request_summary: Some(Value::Null),
            cache_warning: Some("w".into()),
            raw: Some(" s ".into()),
            mentioned: Some(vec!["scratch".into()]),
        };
        let cases = [
            (
                ExpertName::ReferenceExtractor,
                TraceInput::Reference(Box::new(ReferenceInput::Memory {
                    source: "memory".into(),
                    memory: "m".into(),
                    items: 3,
                    embedder: "descriptor".into(),
                    scope: Scope::Category("bottle".into()),
                    k: 3,
                    rerank: true,
                    images: 1,
                })),
                TraceOutput::Reference(Box::new(ReferenceOutput {
                    source: "the reference memory".into(),
                    candidates: vec![CandidateTrace {
                        path: "m/a.png".into(),
                        rel_path: "a.png".into(),
                        category: Some("bottle".into()),
                        score: Some(f64::from(0.9f32)),
                        rerank_score: None,
                        used: true,
                    }],
                    notes: vec!["n".into()],
                })),
            ),
            (
                ExpertName::KnowledgeGuide,
                TraceInput::Knowledge(Box::new(KnowledgeInput {
                    mode: KnowledgeMode::Llm,
                    dataset: Some("MVTec".into()),
                    category: Some("bottle".into()),
                    source: Some("knowledge base".into()),
                    cache_key: Some("k".into()),
                })),
                TraceOutput::Knowledge(Box::new(knowledge)),
            ),
            (
                ExpertName::ReasoningExpert,
                TraceInput::Reasoning(Box::new(ReasoningInput::Separate {
                    request: Some(request.clone()),
                })),
                TraceOutput::Reasoning(Box::new(ReasoningOutput::Separate {
                    observations: "o".into(),
                    raw: " o".into(),
                    latency_ms: 2,
                    attempts: 1,
                    request_summary: serde_json::json!({"images": 2}),
                })),
            ),
            (
                ExpertName::DecisionMaker,
                TraceInput::Decision(Box::new(DecisionInput {
                    template: None,
                    request: Some(request),
                    warnings: vec!["w".into()],
                })),
                TraceOutput::Decision(Box::new(DecisionOutput {
                    raw: "B".into(),
                    letter: Some("B".into()),
                    option_text: None,
                    gpt_answer: "B".into(),
                    method: ExtractMethod::SingleLetter,
                    correct: Some(false),
                    latency_ms: 9,
                    attempts: 2,
                    finish_reason: None,
                    reasoning: None,
                    request_summary: Value::Null,
                })),
            ),
        ];
        for (name, input, output) in cases {
            let trace = ExpertTrace {
                name,
                status: ExpertStatus::Done,
                input,
                output,
                summary: "s".into(),
                ms: 1,
            };
            let text = serde_json::to_string(&trace).unwrap();
            let back: ExpertTrace = serde_json::from_str(&text).unwrap();
            assert_eq!(back, trace, "{text}");
        }
    }
}
