//! Decision planning: which experts run for which question type.
//!
//! The mapping is data (`assets/experts.toml`, user-editable) rather than code, so
//! that ablations and new presets need no rebuild, and so that a run manifest can
//! record exactly which table was used. Three presets are bundled:
//!
//! * `echo`: the table of Echo's own code (see the facts file), object types answered
//!   with a plain MMAD-style prompt and marked out of Echo's scope;
//! * `mmad`: MMAD's evaluation protocol (one normal template, no reasoning,
//!   knowledge only when a run switches it on);
//! * `full`: every expert for every type;
//! * `echo+map`: Echo with the anomaly-map expert (issue 18) handing the Decision
//!   Maker a hint and the query with its most unusual region outlined.
//!
//! [`ExpertSwitches`] override the table for a run (globally or per type), which is
//! how ablations switch an expert off, or how an MMAD run adds its knowledge block.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::dataset::QuestionType;

/// The bundled table, used when no file is given or the file is missing.
pub const BUNDLED_EXPERTS_TOML: &str = include_str!("../../assets/experts.toml");

/// The experts, in the order the pipeline runs them: Echo's four and the anomaly map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpertName {
    ReferenceExtractor,
    /// Issue 18's anomaly map; only presets and runs that use it give it a turn.
    AnomalyMap,
    KnowledgeGuide,
    ReasoningExpert,
    DecisionMaker,
}

impl ExpertName {
    /// All experts in pipeline order.
    pub const ALL: [ExpertName; 5] = [
        ExpertName::ReferenceExtractor,
        ExpertName::AnomalyMap,
        ExpertName::KnowledgeGuide,
        ExpertName::ReasoningExpert,
        ExpertName::DecisionMaker,
    ];

    /// Echo's four experts, every one of which takes a turn in every plan.
    pub const ECHO: [ExpertName; 4] = [
        ExpertName::ReferenceExtractor,
        ExpertName::KnowledgeGuide,
        ExpertName::ReasoningExpert,
        ExpertName::DecisionMaker,
    ];

    /// The name people read (`Reference Extractor`).
    pub fn label(self) -> &'static str {
        match self {
            ExpertName::ReferenceExtractor => "Reference Extractor",
            ExpertName::AnomalyMap => "Anomaly Map",
            ExpertName::KnowledgeGuide => "Knowledge Guide",
            ExpertName::ReasoningExpert => "Reasoning Expert",
            ExpertName::DecisionMaker => "Decision Maker",
        }
    }

    /// The serialised name (`reference_extractor`).
    pub fn key(self) -> &'static str {
        match self {
            ExpertName::ReferenceExtractor => "reference_extractor",
            ExpertName::AnomalyMap => "anomaly_map",
            ExpertName::KnowledgeGuide => "knowledge_guide",
            ExpertName::ReasoningExpert => "reasoning_expert",
            ExpertName::DecisionMaker => "decision_maker",
        }
    }
}

impl std::fmt::Display for ExpertName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Where the reference image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReferenceKind {
    /// Nearest normal image in a reference memory (Echo).
    #[default]
    Memory,
    /// MMAD's `similar_templates` of the query's dataset entry.
    Similar,
    /// MMAD's `random_templates` (MMAD's plain 1-shot setting).
    Random,
    /// No reference at all.
    None,
}

/// How the Knowledge Guide chooses the knowledge text.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum KnowledgeMode {
    /// MMAD's knowledge run: every entry of the category, `good` included.
    Category,
    /// Echo's condensed per-category defect descriptions.
    #[default]
    Condensed,
    /// `good` plus the defect entries the options name.
    Options,
    /// An MLLM call picks and condenses what matters for this question (cached).
    Llm,
    /// No knowledge.
    Off,
}

/// How the Reasoning Expert contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningMode {
    /// Echo's observe/compare/decide scaffold inside the final prompt.
    #[default]
    Inline,
    /// A separate MLLM call whose observations are handed to the Decision Maker.
    Separate,
    /// No reasoning step.
    Off,
}

/// Which picture of the anomaly map the Decision Maker gets besides the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapImage {
    /// No third image.
    #[default]
    None,
    /// The query with its most unusual region outlined.
    Outline,
    /// A zoomed crop of the most unusual region.
    Crop,
}

/// Where in the memory to search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScopeMode {
    /// The whole memory, as Echo does.
    #[default]
    Global,
    /// Only the query's category (our improvement).
    Category,
}

macro_rules! lowercase_from_str {
    ($ty:ty, $what:literal, [$($name:literal => $value:expr),+ $(,)?]) => {
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($name => Ok($value),)+
                    other => Err(format!(
                        concat!("unknown ", $what, " `{}`: use one of {}"),
                        other,
                        [$($name),+].join(", ")
                    )),
                }
            }
        }
        impl $ty {
            /// The name used in settings files and on the command line.
            pub fn as_str(self) -> &'static str {
                $(if self == $value { return $name; })+
                unreachable!("every variant has a name")
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

lowercase_from_str!(ReferenceKind, "reference source", [
    "memory" => ReferenceKind::Memory,
    "similar" => ReferenceKind::Similar,
    "random" => ReferenceKind::Random,
    "none" => ReferenceKind::None,
]);
lowercase_from_str!(KnowledgeMode, "knowledge mode", [
    "category" => KnowledgeMode::Category,
    "condensed" => KnowledgeMode::Condensed,
    "options" => KnowledgeMode::Options,
    "llm" => KnowledgeMode::Llm,
    "off" => KnowledgeMode::Off,
]);
lowercase_from_str!(ReasoningMode, "reasoning mode", [
    "inline" => ReasoningMode::Inline,
    "separate" => ReasoningMode::Separate,
    "off" => ReasoningMode::Off,
]);
lowercase_from_str!(MapImage, "anomaly-map image", [
    "none" => MapImage::None,
    "outline" => MapImage::Outline,
    "crop" => MapImage::Crop,
]);
lowercase_from_str!(ScopeMode, "scope", [
    "global" => ScopeMode::Global,
    "category" => ScopeMode::Category,
]);

/// One row of the table: what a question type gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeRow {
    /// The Decision Maker's main template (a file name in the prompt set, no `.txt`).
    pub template: String,
    /// The prompt set for this type when it differs from the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<String>,
    pub reference: bool,
    pub knowledge: bool,
    pub reasoning: bool,
    /// Whether the anomaly-map expert runs (left out: it does not).
    #[serde(default, skip_serializing_if = "is_false")]
    pub anomaly_map: bool,
    /// False for types outside the method's scope (reports say so).
    #[serde(default = "yes")]
    pub in_scope: bool,
    /// Shown with the plan (e.g. why a switch exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn yes() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How the anomaly-map expert runs, where a preset or a run uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MapOptions {
    /// How many retrieved normal references the query is compared with.
    pub k: usize,
    /// Whether the Decision Maker's prompt gets a sentence on the map's finding.
    pub hint: bool,
    /// Which third image the Decision Maker gets.
    pub image: MapImage,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            k: crate::anomaly::map::DEFAULT_K,
            hint: true,
            image: MapImage::None,
        }
    }
}

/// A named column set of the table plus the modes its experts run in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetDef {
    #[serde(default)]
    pub description: String,
    /// The prompt set (folder under `assets/prompts/`).
    pub prompts: String,
    pub reference: ReferenceKind,
    pub knowledge_mode: KnowledgeMode,
    pub reasoning_mode: ReasoningMode,
    /// The anomaly map's options where a row (or a run's switch) turns it on;
    /// a preset that uses it names them (`[presets.NAME.anomaly_map]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly_map: Option<MapOptions>,
    /// Rows keyed by MMAD's exact type names.
    #[serde(default)]
    pub types: IndexMap<String, TypeRow>,
    /// The row for types the table does not list.
    pub default: TypeRow,
}

/// Why the table could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read the experts table {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the experts table {source_name} is not valid: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error(
        "the experts table {source_name}, preset `{preset}`: unknown question type `{name}` (use MMAD's exact names, e.g. `Anomaly Detection`)"
    )]
    UnknownType {
        source_name: String,
        preset: String,
        name: String,
    },
    #[error("there is no preset `{name}` in the experts table {source_name} (it has: {known})")]
    UnknownPreset {
        name: String,
        source_name: String,
        known: String,
    },
}

/// The loaded table.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertTable {
    /// Preset name -> definition, in file order.
    pub presets: IndexMap<String, PresetDef>,
    /// Where it came from (`bundled` or a path), for messages.
    pub source_name: String,
    /// The exact text, hashed into run manifests.
    pub text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpertsFile {
    presets: IndexMap<String, PresetDef>,
}

impl ExpertTable {
    /// The table shipped with the program.
    pub fn bundled() -> ExpertTable {
        ExpertTable::from_toml_str(BUNDLED_EXPERTS_TOML, "bundled assets/experts.toml")
            .expect("the bundled experts table is valid (checked by tests)")
    }

    /// Reads a user's table.
    pub fn load(path: &Path) -> Result<ExpertTable, PlanError> {
        let text = crate::util::fsx::read_text_limited(path, crate::util::fsx::TEXT_FILE_LIMIT)
            .map_err(|source| PlanError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        ExpertTable::from_toml_str(&text, &path.display().to_string())
    }

    /// `path` when given, else the bundled table.
    pub fn load_or_bundled(path: Option<&Path>) -> Result<ExpertTable, PlanError> {
        match path {
            Some(p) => ExpertTable::load(p),
            None => Ok(ExpertTable::bundled()),
        }
    }

    pub fn from_toml_str(text: &str, source_name: &str) -> Result<ExpertTable, PlanError> {
        let file: ExpertsFile = toml::from_str(text).map_err(|e| PlanError::Parse {
            source_name: source_name.to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        for (preset, def) in &file.presets {
            if let Some(name) = def
                .types
                .keys()
                .find(|n| !QuestionType::parse(n).is_known())
            {
                return Err(PlanError::UnknownType {
                    source_name: source_name.to_string(),
                    preset: preset.clone(),
                    name: name.clone(),
                });
            }
        }
        Ok(ExpertTable {
            presets: file.presets,
            source_name: source_name.to_string(),
            text: text.to_string(),
        })
    }

    pub fn preset(&self, name: &str) -> Result<&PresetDef, PlanError> {
        self.presets
            .get(name)
            .ok_or_else(|| PlanError::UnknownPreset {
                name: name.to_string(),
                source_name: self.source_name.clone(),
                known: self
                    .presets
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl PresetDef {
    /// The row for a type (the `default` row for types the table does not list).
    pub fn row(&self, qtype: &QuestionType) -> &TypeRow {
        self.types.get(qtype.as_str()).unwrap_or(&self.default)
    }

    /// Whether any row runs the anomaly map.
    pub fn uses_map(&self) -> bool {
        self.types
            .values()
            .chain([&self.default])
            .any(|r| r.anomaly_map)
    }

    /// Every prompt set the preset's rows use, preset's own first.
    pub fn prompt_sets(&self) -> Vec<&str> {
        let mut out = vec![self.prompts.as_str()];
        for row in self.types.values().chain([&self.default]) {
            if let Some(p) = row.prompts.as_deref()
                && !out.contains(&p)
            {
                out.push(p);
            }
        }
        out
    }
}

/// Per-run overrides of the table. `None` follows the table; `Some(false)` switches
/// the expert off (ablation); `Some(true)` switches it on even where the table
/// leaves it out (e.g. MMAD's knowledge-augmented run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ExpertSwitches {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knowledge: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly_map: Option<bool>,
}

impl ExpertSwitches {
    /// `self` where set, else `fallback`.
    pub fn or(self, fallback: ExpertSwitches) -> ExpertSwitches {
        ExpertSwitches {
            reference: self.reference.or(fallback.reference),
            knowledge: self.knowledge.or(fallback.knowledge),
            reasoning: self.reasoning.or(fallback.reasoning),
            anomaly_map: self.anomaly_map.or(fallback.anomaly_map),
        }
    }
}

/// One expert's place in a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedStep {
    pub expert: ExpertName,
    pub runs: bool,
    /// How it will run (`memory, global scope, top 3`), empty when it does not.
    pub how: String,
    /// Why it runs or not (table, switch, mode).
    pub why: String,
}

/// What will happen for one question type, shown before running.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub qtype: QuestionType,
    pub preset: String,
    /// The prompt set and main template the Decision Maker uses.
    pub prompts: String,
    pub template: String,
    /// False for types outside the method's scope (Echo: the object types).
    pub in_scope: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `None` when the expert does not run.
    pub reference: Option<ReferenceKind>,
    pub knowledge: Option<KnowledgeMode>,
    pub reasoning: Option<ReasoningMode>,
    /// How the anomaly map runs (`None`: it does not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly_map: Option<MapOptions>,
    /// The experts in order: Echo's four always, the anomaly map only where the
    /// preset or the run can use it (so Echo's and MMAD's traces stay as they were).
    pub steps: Vec<PlannedStep>,
}

impl Plan {
    pub fn step(&self, expert: ExpertName) -> &PlannedStep {
        self.steps
            .iter()
            .find(|s| s.expert == expert)
            .expect("a plan lists every expert it gives a turn")
    }

    /// Whether `expert` takes a turn (done or skipped) for this question.
    pub fn lists(&self, expert: ExpertName) -> bool {
        self.steps.iter().any(|s| s.expert == expert)
    }
}

/// The choices that turn a table row into a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanInputs<'a> {
    pub switches: ExpertSwitches,
    pub reference: ReferenceKind,
    pub knowledge_mode: KnowledgeMode,
    pub reasoning_mode: ReasoningMode,
    /// Human description of the reference source, e.g. `memory, global scope, top 3`.
    pub reference_how: &'a str,
    /// The anomaly map's options after the run's settings.
    pub map: MapOptions,
}

/// Applies switches and modes to the preset's row for `qtype`.
pub fn resolve(
    preset_name: &str,
    preset: &PresetDef,
    qtype: &QuestionType,
    inputs: PlanInputs,
) -> Plan {
    let row = preset.row(qtype);
    let listed = preset.types.contains_key(qtype.as_str());
    let table_says = |on: bool, what: &str| {
        let row_name = if listed {
            format!("`{}`", qtype.as_str())
        } else {
            "its default row".to_string()
        };
        if on {
            format!("the `{preset_name}` table uses {what} for {row_name}")
        } else {
            format!("the `{preset_name}` table leaves {what} out for {row_name}")
        }
    };
    let decide = |table: bool, switch: Option<bool>, what: &str| -> (bool, String) {
        match switch {
            Some(true) if !table => (
                true,
                format!("switched on for this run ({})", table_says(false, what)),
            ),
            Some(false) if table => (false, "switched off for this run".to_string()),
            _ => (table, table_says(table, what)),
        }
    };

    let (mut ref_on, mut ref_why) = decide(row.reference, inputs.switches.reference, "a reference");
    if ref_on && inputs.reference == ReferenceKind::None {
        ref_on = false;
        ref_why = "no reference source is configured".into();
    }
    let (mut kn_on, mut kn_why) = decide(row.knowledge, inputs.switches.knowledge, "knowledge");
    if kn_on && inputs.knowledge_mode == KnowledgeMode::Off {
        kn_on = false;
        kn_why = "the knowledge mode is `off`".into();
    }
    let (mut rs_on, mut rs_why) = decide(row.reasoning, inputs.switches.reasoning, "reasoning");
    if rs_on && inputs.reasoning_mode == ReasoningMode::Off {
        rs_on = false;
        rs_why = "the reasoning mode is `off`".into();
    }
    let map_listed = preset.uses_map()
        || preset.anomaly_map.is_some()
        || inputs.switches.anomaly_map == Some(true);
    let (map_on, map_why) = decide(
        row.anomaly_map,
        inputs.switches.anomaly_map,
        "the anomaly map",
    );
    let prompts = row
        .prompts
        .clone()
        .unwrap_or_else(|| preset.prompts.clone());
    let mut steps = vec![
        PlannedStep {
            expert: ExpertName::ReferenceExtractor,
            runs: ref_on,
            how: if ref_on {
                inputs.reference_how.to_string()
            } else {
                String::new()
            },
            why: ref_why,
        },
        PlannedStep {
            expert: ExpertName::KnowledgeGuide,
            runs: kn_on,
            how: if kn_on {
                inputs.knowledge_mode.to_string()
            } else {
                String::new()
            },
            why: kn_why,
        },
        PlannedStep {
            expert: ExpertName::ReasoningExpert,
            runs: rs_on,
            how: if rs_on {
                inputs.reasoning_mode.to_string()
            } else {
                String::new()
            },
            why: rs_why,
        },
        PlannedStep {
            expert: ExpertName::DecisionMaker,
            runs: true,
            how: format!("prompt `{prompts}/{}`", row.template),
            why: "always: it makes the model call that answers".into(),
        },
    ];
    if map_listed {
        let how = if map_on {
            let m = inputs.map;
            format!(
                "{} nearest normals, hint {}, image {}",
                m.k,
                if m.hint { "on" } else { "off" },
                m.image
            )
        } else {
            String::new()
        };
        steps.insert(
            1,
            PlannedStep {
                expert: ExpertName::AnomalyMap,
                runs: map_on,
                how,
                why: map_why,
            },
        );
    }
    Plan {
        qtype: qtype.clone(),
        preset: preset_name.to_string(),
        prompts,
        template: row.template.clone(),
        in_scope: row.in_scope,
        note: row.note.clone(),
        reference: ref_on.then_some(inputs.reference),
        knowledge: kn_on.then_some(inputs.knowledge_mode),
        reasoning: rs_on.then_some(inputs.reasoning_mode),
        anomaly_map: map_on.then_some(inputs.map),
        steps,
    }
}

/// Which file a knowledge mode reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KnowledgeSource {
    /// Echo's condensed file (`condensed` mode).
    Condensed,
    /// The full knowledge base (`category`, `options` and `llm` modes).
    Base,
}

impl KnowledgeSource {
    pub fn for_mode(mode: KnowledgeMode) -> KnowledgeSource {
        if mode == KnowledgeMode::Condensed {
            KnowledgeSource::Condensed
        } else {
            KnowledgeSource::Base
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KnowledgeSource::Condensed => "condensed knowledge",
            KnowledgeSource::Base => "knowledge base",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(switches: ExpertSwitches) -> PlanInputs<'static> {
        PlanInputs {
            switches,
            reference: ReferenceKind::Memory,
            knowledge_mode: KnowledgeMode::Condensed,
            reasoning_mode: ReasoningMode::Inline,
            reference_how: "memory",
            map: MapOptions::default(),
        }
    }

    fn flags(p: &Plan) -> (bool, bool, bool) {
        (
            p.reference.is_some(),
            p.knowledge.is_some(),
            p.reasoning.is_some(),
        )
    }

    #[test]
    fn echo_table_matches_the_facts_file() {
        let table = ExpertTable::bundled();
        let echo = table.preset("echo").unwrap();
        use QuestionType::*;
        let expect = [
            (AnomalyDetection, (true, false, false)),
            (DefectClassification, (true, true, false)),
            (DefectLocalization, (false, false, false)),
            (DefectDescription, (true, true, true)),
            (DefectAnalysis, (true, false, true)),
        ];
        for (t, want) in expect {
            let p = resolve("echo", echo, &t, inputs(ExpertSwitches::default()));
            assert_eq!(flags(&p), want, "{t}");
            assert!(p.in_scope, "{t}");
            assert_eq!(p.prompts, "echo");
        }
        for t in [
            ObjectClassification,
            ObjectStructure,
            ObjectDetails,
            Other("New".into()),
        ] {
            let p = resolve("echo", echo, &t, inputs(ExpertSwitches::default()));
            assert!(!p.in_scope, "{t}");
            assert_eq!((p.prompts.as_str(), p.template.as_str()), ("mmad", "plain"));
            assert_eq!(flags(&p), (true, false, false), "{t}");
        }
        assert_eq!(echo.reference, ReferenceKind::Memory);
        assert_eq!(echo.knowledge_mode, KnowledgeMode::Condensed);
        assert_eq!(echo.reasoning_mode, ReasoningMode::Inline);
    }

    #[test]
    fn mmad_and_full_presets() {
        let table = ExpertTable::bundled();
        let mmad = table.preset("mmad").unwrap();
        let full = table.preset("full").unwrap();
        assert_eq!(mmad.reference, ReferenceKind::Random);
        assert_eq!(mmad.knowledge_mode, KnowledgeMode::Category);
        for t in QuestionType::KNOWN {
            let p = resolve("mmad", mmad, &t, inputs(ExpertSwitches::default()));
            assert_eq!(flags(&p), (true, false, false), "{t}");
            assert_eq!((p.prompts.as_str(), p.template.as_str()), ("mmad", "plain"));
            // Knowledge is optional per run.
            let on = ExpertSwitches {
                knowledge: Some(true),
                ..Default::default()
            };
            let p = resolve("mmad", mmad, &t, inputs(on));
            assert_eq!(flags(&p), (true, true, false), "{t}");
            assert!(
                p.step(ExpertName::KnowledgeGuide)
                    .why
                    .contains("switched on")
            );
            let p = resolve("full", full, &t, inputs(ExpertSwitches::default()));
            assert_eq!(flags(&p), (true, true, true), "{t}");
            assert_eq!(p.in_scope, t.is_defect_subtask(), "{t}");
        }
    }

    #[test]
    fn echo_plus_map_is_echo_with_the_map_on_the_defect_types() {
        let table = ExpertTable::bundled();
        let map = table.preset("echo+map").unwrap();
        let echo = table.preset("echo").unwrap();
        let options = map.anomaly_map.unwrap();
        assert_eq!(
            (options.k, options.hint, options.image),
            (4, true, MapImage::Outline)
        );
        let with = |opts: MapOptions, switches| PlanInputs {
            map: opts,
            ..inputs(switches)
        };
        for t in QuestionType::KNOWN {
            let p = resolve(
                "echo+map",
                map,
                &t,
                with(options, ExpertSwitches::default()),
            );
            let e = resolve("echo", echo, &t, inputs(ExpertSwitches::default()));
            // Echo's experts run as in `echo`.
            assert_eq!(flags(&p), flags(&e), "{t}");
            assert_eq!((&p.prompts, &p.template), (&e.prompts, &e.template), "{t}");
            let names: Vec<ExpertName> = p.steps.iter().map(|s| s.expert).collect();
            assert_eq!(names, ExpertName::ALL, "{t}");
            assert_eq!(p.anomaly_map.is_some(), t.is_defect_subtask(), "{t}");
            assert_eq!(p.step(ExpertName::AnomalyMap).runs, t.is_defect_subtask());
            // Echo's plans do not list the map at all.
            assert!(!e.lists(ExpertName::AnomalyMap), "{t}");
            assert_eq!(e.steps.len(), 4);
        }
        let ad = QuestionType::AnomalyDetection;
        let p = resolve(
            "echo+map",
            map,
            &ad,
            with(options, ExpertSwitches::default()),
        );
        assert_eq!(
            p.step(ExpertName::AnomalyMap).how,
            "4 nearest normals, hint on, image outline"
        );
        // A run switches it off (listed, skipped) or on in a preset without it.
        let off = ExpertSwitches {
            anomaly_map: Some(false),
            ..Default::default()
        };
        let p = resolve("echo+map", map, &ad, with(options, off));
        assert_eq!(p.anomaly_map, None);
        assert_eq!(
            p.step(ExpertName::AnomalyMap).why,
            "switched off for this run"
        );
        let on = ExpertSwitches {
            anomaly_map: Some(true),
            ..Default::default()
        };
        let p = resolve("echo", echo, &ad, inputs(on));
        assert_eq!(p.anomaly_map, Some(MapOptions::default()));
        assert!(p.step(ExpertName::AnomalyMap).why.contains("switched on"));
        assert_eq!("crop".parse::<MapImage>().unwrap(), MapImage::Crop);
    }

    #[test]
    fn switches_and_modes_turn_experts_off() {
        let table = ExpertTable::bundled();
        let echo = table.preset("echo").unwrap();
        let dd = QuestionType::DefectDescription;
        let off = ExpertSwitches {
            reference: Some(false),
            knowledge: Some(false),
            reasoning: Some(false),
            anomaly_map: None,
        };
        let p = resolve("echo", echo, &dd, inputs(off));
        assert_eq!(flags(&p), (false, false, false));
        assert_eq!(
            p.step(ExpertName::KnowledgeGuide).why,
            "switched off for this run"
        );
        assert!(p.step(ExpertName::DecisionMaker).runs);
        let mut i = inputs(ExpertSwitches::default());
        i.knowledge_mode = KnowledgeMode::Off;
        i.reasoning_mode = ReasoningMode::Off;
        i.reference = ReferenceKind::None;
        let p = resolve("echo", echo, &dd, i);
        assert_eq!(flags(&p), (false, false, false));
        assert!(
            p.step(ExpertName::ReasoningExpert)
                .why
                .contains("mode is `off`")
        );
        assert!(
            p.step(ExpertName::ReferenceExtractor)
                .why
                .contains("no reference source")
        );
    }

    #[test]
    fn bad_tables_fail_with_a_clear_message() {
        let err = ExpertTable::from_toml_str("[presets.x]\nprompts = 3", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the experts table t.toml is not valid"),
            "{err}"
        );
        let text = BUNDLED_EXPERTS_TOML.replace(
            "[presets.echo.types.\"Anomaly Detection\"]",
            "[presets.echo.types.\"Anomaly detection\"]",
        );
        let err = ExpertTable::from_toml_str(&text, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown question type `Anomaly detection`"),
            "{err}"
        );
        let err = ExpertTable::bundled()
            .preset("nope")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no preset `nope`") && err.contains("mmad"),
            "{err}"
        );
        let err = ExpertTable::load(Path::new("/nonexistent/experts.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read the experts table"), "{err}");
    }

    #[test]
    fn modes_parse_and_print() {
        for m in ["category", "condensed", "options", "llm", "off"] {
            assert_eq!(m.parse::<KnowledgeMode>().unwrap().as_str(), m);
        }
        assert_eq!(
            "Separate".parse::<ReasoningMode>().unwrap(),
            ReasoningMode::Separate
        );
        assert!(
            "sometimes"
                .parse::<ScopeMode>()
                .unwrap_err()
                .contains("global, category")
        );
        assert_eq!(
            "similar".parse::<ReferenceKind>().unwrap(),
            ReferenceKind::Similar
        );
        let v = serde_json::to_value(KnowledgeMode::Llm).unwrap();
        assert_eq!(v, "llm");
    }
}
