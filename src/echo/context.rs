//! What a run sets up once for all its questions: the pipeline settings (saved in
//! settings files and run manifests) and the context built from them (experts
//! table, prompt sets, knowledge, memory, the model-selection cache). Its own file
//! so that the experts read it without importing the pipeline that sequences them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::error::PipelineError;
use super::extract::ExtractMode;
use super::guide::KnowledgeCache;
use super::plan::{
    ExpertSwitches, ExpertTable, KnowledgeMode, KnowledgeSource, MapImage, MapOptions, Plan,
    PlanError, PlanInputs, ReasoningMode, ReferenceKind, ScopeMode,
};
use super::prompt::PromptSet;
use super::protocol::Protocol;
use super::reference::ReferenceSource;
use crate::anomaly::{Backbone, Detector, References};
use crate::dataset::QuestionType;
use crate::knowledge::KnowledgeBase;
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
    /// The anomaly map's number of normal references (default: the preset's, or 4).
    /// This and the two below are left out of files when unset, so the settings
    /// and manifests of runs without the map read and write as before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_k: Option<usize>,
    /// Whether the Decision Maker's prompt gets the map's finding as a sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_hint: Option<bool>,
    /// Which picture of the map's finding the Decision Maker gets as a third image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_image: Option<MapImage>,
    /// The map's patch features (default: the weight-free descriptor). Written
    /// only when it is another backbone, so files of descriptor runs and
    /// settings stay as they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_backbone: Option<Backbone>,
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
            map_k: None,
            map_hint: None,
            map_image: None,
            map_backbone: None,
        }
    }
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
    /// The anomaly map's detector, made on its first question: it keeps every
    /// category's threshold and the references' features, so a run computes each
    /// once. A lock, because a detection updates those caches; detections are short
    /// next to a model call, so questions waiting on it cost little.
    detector: OnceLock<Result<Arc<Mutex<Detector>>, String>>,
    protocol: Protocol,
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
            detector: OnceLock::new(),
            protocol: Protocol::default(),
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

    /// How the Decision Maker samples its final request (the rest of a protocol,
    /// rotations and shuffles, is the caller's: see `echo::protocol_answer`).
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    pub fn protocol(&self) -> &Protocol {
        &self.protocol
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

    /// The knowledge file a mode reads with its content hash, when one is loaded.
    pub(crate) fn knowledge_with_hash(
        &self,
        source: KnowledgeSource,
    ) -> Option<(&KnowledgeBase, &str)> {
        match source {
            KnowledgeSource::Condensed => self.condensed.as_ref(),
            KnowledgeSource::Base => self.knowledge.as_ref(),
        }
        .map(|(kb, hash)| (kb.as_ref(), hash.as_str()))
    }

    pub(crate) fn has_memory(&self) -> bool {
        self.memory.is_some()
    }

    /// The anomaly map's options after this run's settings.
    pub fn map_options(&self) -> MapOptions {
        let preset = self.preset().anomaly_map.unwrap_or_default();
        MapOptions {
            k: self.settings.map_k.unwrap_or(preset.k).max(1),
            hint: self.settings.map_hint.unwrap_or(preset.hint),
            image: self.settings.map_image.unwrap_or(preset.image),
        }
    }

    /// Whether some question type of this run can get the anomaly map.
    pub fn uses_map(&self) -> bool {
        let preset = self.preset();
        let switched = |s: &ExpertSwitches| s.anomaly_map;
        match switched(&self.settings.switches) {
            Some(true) => true,
            Some(false) => self
                .settings
                .type_switches
                .values()
                .any(|s| switched(s) == Some(true)),
            None => {
                preset.uses_map()
                    || self
                        .settings
                        .type_switches
                        .values()
                        .any(|s| switched(s) == Some(true))
            }
        }
    }

    /// The settings as a run manifest records them: with the map's options
    /// written out where the run uses the map (so an ablation's two manifests say
    /// what differed), and exactly as given otherwise.
    pub fn recorded_settings(&self) -> PipelineSettings {
        let mut s = self.settings.clone();
        if s.map_backbone == Some(Backbone::Descriptor) {
            s.map_backbone = None;
        }
        if self.uses_map() {
            let m = self.map_options();
            s.map_k = Some(m.k);
            s.map_hint = Some(m.hint);
            s.map_image = Some(m.image);
        }
        s
    }

    /// The anomaly map's patch features.
    pub fn map_backbone(&self) -> Backbone {
        self.settings.map_backbone.clone().unwrap_or_default()
    }

    /// The anomaly map's detector over the loaded memory (made once per context).
    pub(crate) fn map_detector(&self) -> Result<Arc<Mutex<Detector>>, String> {
        self.detector
            .get_or_init(|| {
                let Some((memory, embedder)) = &self.memory else {
                    return Err(
                        "the anomaly map compares the query with normals of a reference \
                                memory, and none is loaded (build one with `memory build`)"
                            .into(),
                    );
                };
                Detector::shared(
                    memory.clone(),
                    embedder.clone(),
                    self.map_backbone(),
                    References::Nearest(self.map_options().k),
                )
                .map(|d| Arc::new(Mutex::new(d)))
                .map_err(|e| crate::util::error::chain(&e))
            })
            .clone()
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
                map: self.map_options(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::trace::ExpertName;

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

    /// A run's manifest spells the map's options out only where the run uses
    /// the map, so Echo's and MMAD's settings serialise as before.
    #[test]
    fn recorded_settings_name_the_map_only_when_it_is_used() {
        let echo = PipelineContext::new(PipelineSettings::default()).unwrap();
        assert_eq!(echo.recorded_settings(), PipelineSettings::default());
        assert!(
            !serde_json::to_string(&echo.recorded_settings())
                .unwrap()
                .contains("map")
        );
        let map = PipelineContext::new(PipelineSettings {
            preset: "echo+map".into(),
            map_hint: Some(false),
            ..Default::default()
        })
        .unwrap();
        let s = map.recorded_settings();
        assert_eq!(
            (s.map_k, s.map_hint, s.map_image),
            (Some(4), Some(false), Some(MapImage::Outline))
        );
        let text = toml::to_string(&s).unwrap();
        assert!(!text.contains("map_backbone"), "{text}");
        let back: PipelineSettings = toml::from_str(&text).unwrap();
        assert_eq!(back, s);
        // The descriptor, said explicitly, is recorded as if unsaid; another
        // backbone is recorded and reads back.
        let said = |backbone: &str| {
            PipelineContext::new(PipelineSettings {
                preset: "echo+map".into(),
                map_hint: Some(false),
                map_backbone: Some(backbone.parse().unwrap()),
                ..Default::default()
            })
            .unwrap()
        };
        let descriptor = said("descriptor");
        assert_eq!(descriptor.recorded_settings(), s);
        assert_eq!(descriptor.map_backbone(), Backbone::Descriptor);
        let dino = said("dinov2:hf:facebook/dinov2-small");
        let recorded = dino.recorded_settings();
        let json = serde_json::to_string(&recorded).unwrap();
        assert!(
            json.contains(r#""map_backbone":"dinov2:hf:facebook/dinov2-small""#),
            "{json}"
        );
        let back: PipelineSettings = serde_json::from_str(&json).unwrap();
        assert_eq!(back.map_backbone, Some(dino.map_backbone()));
        let text = toml::to_string(&recorded).unwrap();
        assert_eq!(toml::from_str::<PipelineSettings>(&text).unwrap(), recorded);
        let bad = serde_json::from_str::<PipelineSettings>(r#"{"map_backbone":"dino"}"#);
        assert!(bad.unwrap_err().to_string().contains("unknown backbone"));
        // Without a memory, the map's turn fails with a clear reason.
        let e = map.map_detector().err().unwrap();
        assert!(e.contains("none is loaded"), "{e}");
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
