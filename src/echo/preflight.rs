//! Before asking anything: does every selected question have the inputs its plan
//! reads?
//!
//! A plan that reads knowledge for a category the knowledge file lacks, searches a
//! memory scope with no image of the category, or sends MMAD template images that
//! are not on disk still produces an answer: the expert fails, the pipeline goes on
//! without it, and only the per-question trace says so. On a dataset the files were
//! not made for, that silently turns a knowledge run into a run without knowledge
//! for whole categories. [`check_inputs`] finds every such question up front so a
//! run can refuse (or, when the user allows it, record how many ran without).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::guide;
use super::pipeline::PipelineContext;
use super::plan::{KnowledgeMode, ReferenceKind, ScopeMode};
use crate::dataset::{DatasetRoot, ImageEntry, QuestionType};
use crate::knowledge::KnowledgeBase;

pub use super::plan::KnowledgeSource;

/// What a group of questions would run without.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum MissingInput {
    /// The knowledge file the plan reads has no entry for the category (or none is
    /// loaded). `mode` is the knowledge mode the plan runs in.
    Knowledge {
        source: KnowledgeSource,
        mode: KnowledgeMode,
        loaded: bool,
    },
    /// The plan searches the reference memory, and none is loaded.
    Memory,
    /// Category-scope search in a memory with no image of the category.
    MemoryCategory,
    /// The anomaly map compares the query with a memory's normals, and none is
    /// loaded.
    MapMemory,
    /// MMAD's template list (`similar_templates` or `random_templates`) is empty or
    /// names a file that is not there.
    Templates { field: String },
}

/// One way to give the questions their input, for a person to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fix {
    Category,
    CondensedFile,
    KnowledgeModeCategory,
    KnowledgeModeCategoryAndFile,
    KnowledgeModeCondensed,
    KnowledgeFile,
    Memory,
    ScopeGlobal,
    TemplateNone,
    MapOff,
}

impl Fix {
    /// As command-line flags.
    pub fn flag(self) -> &'static str {
        match self {
            Fix::Category => "--category NAME (the image's path does not name it)",
            Fix::CondensedFile => "--condensed FILE (a condensed file with this category)",
            Fix::KnowledgeModeCategory => {
                "--knowledge-mode category (the knowledge base has this category)"
            }
            Fix::KnowledgeModeCategoryAndFile => {
                "--knowledge-mode category --knowledge FILE (a knowledge base with this category)"
            }
            Fix::KnowledgeModeCondensed => {
                "--knowledge-mode condensed (the condensed file has this category)"
            }
            Fix::KnowledgeFile => "--knowledge FILE (a knowledge base with this category)",
            Fix::Memory => "--memory DIR (a memory holding this category's normal images)",
            Fix::ScopeGlobal => "--scope global (search the whole memory)",
            Fix::TemplateNone => "--template none, or a memory (--memory DIR)",
            Fix::MapOff => "--map-expert off (or a preset without the anomaly map)",
        }
    }

    /// As the app's settings name them.
    pub fn setting(self) -> &'static str {
        match self {
            Fix::Category => "a dataset whose image paths name their category",
            Fix::CondensedFile => "a condensed knowledge file with this category",
            Fix::KnowledgeModeCategory => {
                "Knowledge: whole category (the knowledge base has this category)"
            }
            Fix::KnowledgeModeCategoryAndFile => {
                "Knowledge: whole category, with a knowledge base that has this category (Settings)"
            }
            Fix::KnowledgeModeCondensed => {
                "Knowledge: condensed (the condensed file has this category)"
            }
            Fix::KnowledgeFile => "a knowledge base with this category (Settings)",
            Fix::Memory => "a reference memory holding this category (Settings)",
            Fix::ScopeGlobal => "global memory scope (Settings)",
            Fix::TemplateNone => "Reference images: none, or retrieved from a memory",
            Fix::MapOff => "a preset without the anomaly map",
        }
    }
}

/// Questions of one category that would run without one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputGap {
    #[serde(flatten)]
    pub missing: MissingInput,
    /// The dataset folder, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// The category (`(unknown)` when the question's category is not known).
    pub category: String,
    /// How many questions.
    pub questions: usize,
    /// Their MMAD types, sorted.
    pub types: Vec<String>,
    pub fixes: Vec<Fix>,
    /// The questions (dataset positions, as in the journal's `index`).
    #[serde(skip)]
    pub indices: Vec<usize>,
}

impl InputGap {
    /// What is missing, for a person: `the condensed knowledge has no category
    /// `gear` (dataset `GoodsAD`)`.
    pub fn what(&self) -> String {
        let place = match &self.dataset {
            Some(d) => format!("`{}` (dataset `{d}`)", self.category),
            None => format!("`{}`", self.category),
        };
        match &self.missing {
            MissingInput::Knowledge {
                source,
                loaded: false,
                ..
            } => format!(
                "no {} is loaded, needed for category {place}",
                source.name()
            ),
            MissingInput::Knowledge { source, mode, .. } => format!(
                "the {} has no category {place} ({mode} mode reads it)",
                source.name()
            ),
            MissingInput::Memory => {
                format!("no reference memory is loaded, needed for category {place}")
            }
            MissingInput::MemoryCategory => {
                format!("the reference memory holds no image of category {place} (category scope)")
            }
            MissingInput::MapMemory => format!(
                "the anomaly map compares each image with a reference memory's normals, and none \
                 is loaded, needed for category {place}"
            ),
            MissingInput::Templates { field } => {
                format!("MMAD's {field} are missing or not on disk for category {place}")
            }
        }
    }

    fn line(&self, fix: impl Fn(Fix) -> &'static str) -> String {
        let count = if self.questions == 1 {
            "1 question".to_string()
        } else {
            format!("{} questions", self.questions)
        };
        let fixes: Vec<&str> = self.fixes.iter().map(|f| fix(*f)).collect();
        format!(
            "{}: {count} ({}); fix: {}",
            self.what(),
            self.types.join(", "),
            fixes.join(", or ")
        )
    }

    /// One line with the command-line flags that fix it.
    pub fn cli_line(&self) -> String {
        self.line(Fix::flag)
    }

    /// One line with the app settings that fix it.
    pub fn settings_line(&self) -> String {
        self.line(Fix::setting)
    }
}

/// What [`check_inputs`] found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputCheck {
    /// Questions that lack at least one input (each counted once).
    pub questions: usize,
    /// By what is missing, dataset and category.
    pub gaps: Vec<InputGap>,
}

impl InputCheck {
    pub fn is_complete(&self) -> bool {
        self.gaps.is_empty()
    }

    /// The questions that lack an input.
    pub fn indices(&self) -> BTreeSet<usize> {
        self.gaps
            .iter()
            .flat_map(|g| g.indices.iter().copied())
            .collect()
    }

    /// Only the gaps of the questions in `keep`, recounted.
    pub fn restricted_to(&self, keep: &HashSet<usize>) -> InputCheck {
        let mut gaps = Vec::new();
        for g in &self.gaps {
            let indices: Vec<usize> = g
                .indices
                .iter()
                .copied()
                .filter(|i| keep.contains(i))
                .collect();
            if !indices.is_empty() {
                gaps.push(InputGap {
                    questions: indices.len(),
                    indices,
                    ..g.clone()
                });
            }
        }
        let mut check = InputCheck { questions: 0, gaps };
        check.questions = check.indices().len();
        check
    }

    /// The checks of disjoint sets of questions (a run's shards) as one: gaps of
    /// the same input, dataset and category add up. `None` when none lacks any.
    pub fn combined<'a>(checks: impl IntoIterator<Item = &'a InputCheck>) -> Option<InputCheck> {
        let mut out = InputCheck::default();
        for check in checks {
            out.questions += check.questions;
            for gap in &check.gaps {
                match out.gaps.iter_mut().find(|g| {
                    g.missing == gap.missing
                        && g.dataset == gap.dataset
                        && g.category == gap.category
                }) {
                    Some(g) => {
                        g.questions += gap.questions;
                        g.indices.extend(&gap.indices);
                        for t in &gap.types {
                            if !g.types.contains(t) {
                                g.types.push(t.clone());
                            }
                        }
                        g.types.sort();
                    }
                    None => out.gaps.push(gap.clone()),
                }
            }
        }
        out.gaps.sort_by_key(|g| std::cmp::Reverse(g.questions));
        (!out.gaps.is_empty()).then_some(out)
    }

    /// Lines for a refusal on the command line, one per gap.
    pub fn cli_report(&self) -> String {
        self.gaps
            .iter()
            .map(|g| format!("  - {}", g.cli_line()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One question to check.
#[derive(Debug, Clone, Copy)]
pub struct QuestionInputs<'a> {
    /// The dataset position (the journal's `index`).
    pub index: usize,
    pub qtype: &'a QuestionType,
    pub dataset: Option<&'a str>,
    pub category: Option<&'a str>,
    /// The MMAD entry with its key, for the template lists.
    pub entry: Option<(&'a str, &'a ImageEntry)>,
}

/// The reference memory's categories, when one is loaded.
pub type MemoryCategories = Option<HashSet<String>>;

/// Finds every question whose plan reads an input that is not there: knowledge for
/// its category in the mode its plan reads, memory images of its category under
/// category scope, MMAD template images (checked under `root`).
pub fn check_inputs<'a>(
    ctx: &PipelineContext,
    memory_categories: &MemoryCategories,
    root: Option<&DatasetRoot>,
    questions: impl IntoIterator<Item = QuestionInputs<'a>>,
) -> InputCheck {
    let mut plans = HashMap::new();
    // (missing, dataset, category) -> (indices, types)
    type Groups = BTreeMap<(MissingInput, Option<String>, String), (Vec<usize>, BTreeSet<String>)>;
    let mut groups: Groups = BTreeMap::new();
    let mut has_category: HashMap<(KnowledgeSource, Option<String>, String), bool> = HashMap::new();
    let mut templates_ok: HashMap<(&str, bool), bool> = HashMap::new();
    let images = ctx.settings().reference_images.max(1);
    for q in questions {
        let plan = plans
            .entry(q.qtype.as_str().to_string())
            .or_insert_with(|| ctx.plan(q.qtype));
        let category = q.category.filter(|c| !c.is_empty());
        let mut missing = Vec::new();
        if let Some(mode) = plan.knowledge.filter(|m| *m != KnowledgeMode::Off) {
            let source = KnowledgeSource::for_mode(mode);
            let kb = ctx.knowledge_source(source);
            let found = match (kb, category) {
                (Some(kb), Some(c)) => *has_category
                    .entry((source, q.dataset.map(str::to_string), c.to_string()))
                    .or_insert_with(|| guide::find_category(kb, q.dataset, c).is_some()),
                _ => false,
            };
            if !found {
                missing.push(MissingInput::Knowledge {
                    source,
                    mode,
                    loaded: kb.is_some(),
                });
            }
        }
        match plan.reference {
            Some(ReferenceKind::Memory) => match memory_categories {
                None => missing.push(MissingInput::Memory),
                Some(cats) if ctx.settings().scope == ScopeMode::Category => {
                    if !category.is_some_and(|c| cats.contains(c)) {
                        missing.push(MissingInput::MemoryCategory);
                    }
                }
                Some(_) => {}
            },
            Some(kind @ (ReferenceKind::Similar | ReferenceKind::Random)) => {
                let similar = kind == ReferenceKind::Similar;
                let ok = match (q.entry, root) {
                    (Some((key, entry)), Some(root)) => *templates_ok
                        .entry((key, similar))
                        .or_insert_with(|| templates_present(entry, root, similar, images)),
                    // A loose image has no template lists at all.
                    _ => false,
                };
                if !ok {
                    missing.push(MissingInput::Templates {
                        field: if similar {
                            "similar_templates"
                        } else {
                            "random_templates"
                        }
                        .into(),
                    });
                }
            }
            _ => {}
        }
        if plan.anomaly_map.is_some() && memory_categories.is_none() {
            missing.push(MissingInput::MapMemory);
        }
        for m in missing {
            let (indices, types) = groups
                .entry((
                    m,
                    q.dataset.map(str::to_string),
                    category.unwrap_or(UNKNOWN_CATEGORY).to_string(),
                ))
                .or_default();
            indices.push(q.index);
            types.insert(q.qtype.as_str().to_string());
        }
    }
    let mut gaps: Vec<InputGap> = groups
        .into_iter()
        .map(|((missing, dataset, category), (indices, types))| {
            let fixes = fixes_for(ctx, &missing, dataset.as_deref(), &category);
            InputGap {
                missing,
                dataset,
                category,
                questions: indices.len(),
                types: types.into_iter().collect(),
                fixes,
                indices,
            }
        })
        .collect();
    // Largest first: the line a person reads first is the one that matters most.
    gaps.sort_by_key(|g| std::cmp::Reverse(g.questions));
    let mut check = InputCheck { questions: 0, gaps };
    check.questions = check.indices().len();
    check
}

/// What a gap names when the questions' category is not known.
const UNKNOWN_CATEGORY: &str = "(unknown)";

/// The first `images` entries of the list exist under `root`.
fn templates_present(entry: &ImageEntry, root: &DatasetRoot, similar: bool, images: usize) -> bool {
    let list = if similar {
        &entry.similar_templates
    } else {
        &entry.random_templates
    };
    !list.is_empty()
        && list
            .iter()
            .take(images)
            .all(|rel| root.resolve(rel).is_ok_and(|p| p.is_file()))
}

fn fixes_for(
    ctx: &PipelineContext,
    missing: &MissingInput,
    dataset: Option<&str>,
    category: &str,
) -> Vec<Fix> {
    let other_has = |source: KnowledgeSource| {
        ctx.knowledge_source(source)
            .is_some_and(|kb: &KnowledgeBase| guide::find_category(kb, dataset, category).is_some())
    };
    let needs_category = !matches!(
        missing,
        MissingInput::Templates { .. } | MissingInput::MapMemory
    );
    if category == UNKNOWN_CATEGORY && needs_category {
        return vec![Fix::Category];
    }
    match missing {
        MissingInput::Knowledge {
            source: KnowledgeSource::Condensed,
            ..
        } => {
            if other_has(KnowledgeSource::Base) {
                vec![Fix::CondensedFile, Fix::KnowledgeModeCategory]
            } else {
                vec![Fix::CondensedFile, Fix::KnowledgeModeCategoryAndFile]
            }
        }
        MissingInput::Knowledge {
            source: KnowledgeSource::Base,
            ..
        } => {
            let mut fixes = vec![Fix::KnowledgeFile];
            if other_has(KnowledgeSource::Condensed) {
                fixes.push(Fix::KnowledgeModeCondensed);
            }
            fixes
        }
        MissingInput::Memory => vec![Fix::Memory, Fix::TemplateNone],
        MissingInput::MemoryCategory => vec![Fix::Memory, Fix::ScopeGlobal],
        MissingInput::MapMemory => vec![Fix::Memory, Fix::MapOff],
        MissingInput::Templates { .. } => vec![Fix::TemplateNone],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{MmadDataset, QuestionRef, category_of, dataset_of};
    use crate::echo::PipelineSettings;

    fn sample() -> MmadDataset {
        MmadDataset::load(&crate::assets_dir().join("sample/mmad.json")).unwrap()
    }

    fn inputs<'a>(q: &QuestionRef<'a>) -> QuestionInputs<'a> {
        QuestionInputs {
            index: q.index,
            qtype: &q.question.qtype,
            dataset: Some(dataset_of(q.key)),
            category: Some(category_of(q.key)),
            entry: Some((q.key, q.entry)),
        }
    }

    fn context(reference: ReferenceKind, scope: ScopeMode) -> PipelineContext {
        PipelineContext::new(PipelineSettings {
            reference: Some(reference),
            scope,
            knowledge_mode: Some(KnowledgeMode::Off),
            ..PipelineSettings::default()
        })
        .unwrap()
    }

    #[test]
    fn category_scope_needs_the_category_in_the_memory() {
        let dataset = sample();
        let questions: Vec<QuestionRef<'_>> = dataset.questions().collect();
        let ctx = context(ReferenceKind::Memory, ScopeMode::Category);
        let washer_weave: MemoryCategories =
            Some(["washer", "weave"].map(String::from).into_iter().collect());
        let check = check_inputs(&ctx, &washer_weave, None, questions.iter().map(inputs));
        // Echo's table sends a reference for every type but Defect Localization:
        // chip's 70 questions less its 9 localisation ones.
        assert_eq!(check.questions, 61);
        assert_eq!(check.gaps.len(), 1);
        let gap = &check.gaps[0];
        assert_eq!(gap.missing, MissingInput::MemoryCategory);
        assert_eq!(gap.category, "chip");
        assert_eq!(gap.fixes, [Fix::Memory, Fix::ScopeGlobal]);
        assert!(
            gap.cli_line().contains("--scope global"),
            "{}",
            gap.cli_line()
        );
        // Global scope reads the whole memory; no memory at all lacks everywhere.
        let global = context(ReferenceKind::Memory, ScopeMode::Global);
        let check = check_inputs(&global, &washer_weave, None, questions.iter().map(inputs));
        assert!(check.is_complete());
        let check = check_inputs(&global, &None, None, questions.iter().map(inputs));
        assert_eq!((check.questions, check.gaps.len()), (183, 3));
        assert!(check.gaps.iter().all(|g| g.missing == MissingInput::Memory));
    }

    #[test]
    fn the_anomaly_map_needs_a_memory() {
        let dataset = sample();
        let questions: Vec<QuestionRef<'_>> = dataset.questions().collect();
        let ctx = PipelineContext::new(PipelineSettings {
            preset: "echo+map".into(),
            reference: Some(ReferenceKind::None),
            knowledge_mode: Some(KnowledgeMode::Off),
            ..PipelineSettings::default()
        })
        .unwrap();
        let check = check_inputs(&ctx, &None, None, questions.iter().map(inputs));
        // Anomaly Detection and the four defect types: 39 + 4 x 27 questions.
        assert_eq!(check.questions, 147);
        assert!(
            check
                .gaps
                .iter()
                .all(|g| g.missing == MissingInput::MapMemory)
        );
        assert_eq!(check.gaps[0].fixes, [Fix::Memory, Fix::MapOff]);
        assert!(check.gaps[0].cli_line().contains("--map-expert off"));
        let memory: MemoryCategories = Some(["chip"].map(String::from).into_iter().collect());
        // Any memory will do: the map searches it whole when the category is not there.
        assert!(check_inputs(&ctx, &memory, None, questions.iter().map(inputs)).is_complete());
    }

    #[test]
    fn template_images_must_be_on_disk() {
        let dataset = sample();
        let questions: Vec<QuestionRef<'_>> = dataset.questions().collect();
        let ctx = context(ReferenceKind::Similar, ScopeMode::Global);
        let root = DatasetRoot::new(crate::assets_dir().join("sample"));
        let check = check_inputs(&ctx, &None, Some(&root), questions.iter().map(inputs));
        assert!(check.is_complete(), "{check:?}");
        let elsewhere = tempfile::tempdir().unwrap();
        let empty = DatasetRoot::new(elsewhere.path().to_path_buf());
        let check = check_inputs(&ctx, &None, Some(&empty), questions.iter().map(inputs));
        assert_eq!(check.questions, 183);
        assert!(check.gaps.iter().all(|g| g.missing
            == MissingInput::Templates {
                field: "similar_templates".into()
            }
            && g.fixes == [Fix::TemplateNone]));
        // Only the gaps of the questions still to ask.
        let first_ten: HashSet<usize> = (0..10).collect();
        let some = check.restricted_to(&first_ten);
        assert!(some.questions <= 10 && some.questions > 0);
        assert_eq!(
            some.gaps.iter().map(|g| g.questions).sum::<usize>(),
            some.questions
        );
    }

    #[test]
    fn a_question_of_unknown_category_is_told_to_name_it() {
        let ctx = PipelineContext::new(PipelineSettings {
            reference: Some(ReferenceKind::None),
            ..PipelineSettings::default()
        })
        .unwrap();
        let dc = QuestionType::DefectClassification;
        let loose = QuestionInputs {
            index: 0,
            qtype: &dc,
            dataset: None,
            category: None,
            entry: None,
        };
        let check = check_inputs(&ctx, &None, None, [loose]);
        assert_eq!(check.gaps.len(), 1);
        let gap = &check.gaps[0];
        assert_eq!(gap.category, "(unknown)");
        assert_eq!(gap.fixes, [Fix::Category]);
        assert!(
            gap.cli_line().contains("--category NAME"),
            "{}",
            gap.cli_line()
        );
        // Anomaly Detection reads no knowledge under Echo's table: nothing missing.
        let ad = QuestionType::AnomalyDetection;
        let check = check_inputs(
            &ctx,
            &None,
            None,
            [QuestionInputs {
                qtype: &ad,
                ..loose
            }],
        );
        assert!(check.is_complete());
    }
}
