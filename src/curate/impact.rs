//! Which questions of a dataset an edit to a category (or one entry) reaches, as the
//! pipeline would run them: each question type's plan ([`PipelineContext::plan`],
//! from the experts table, the preset and the run's switches) says whether the
//! Knowledge Guide runs and in which mode, and the guide's own lookup and option
//! matching say whether the category and the entry end up in the prompt.

use indexmap::IndexMap;
use serde::Serialize;

use crate::dataset::{MmadDataset, QuestionType};
use crate::echo::guide;
use crate::echo::pipeline::PipelineContext;
use crate::echo::plan::KnowledgeMode;
use crate::knowledge::{KnowledgeBase, NORMAL_ENTRY};

/// The reach for one question type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeImpact {
    pub qtype: String,
    /// Questions of this type about images of the category.
    pub questions: usize,
    /// The Knowledge Guide's mode for this type, `None` when it does not run.
    pub mode: Option<KnowledgeMode>,
    /// Questions whose prompt would include text of this category from the edited
    /// file (zero in `condensed` mode, which reads the condensed file instead).
    pub with_category: usize,
    /// Of those, the questions whose prompt would include the chosen entry (options
    /// mode picks per question; llm mode offers every entry to the model).
    pub with_entry: Option<usize>,
}

/// The reach of one category (and optionally one entry of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Impact {
    pub dataset: String,
    pub category: String,
    pub entry: Option<String>,
    pub per_type: Vec<TypeImpact>,
}

impl Impact {
    pub fn questions(&self) -> usize {
        self.per_type.iter().map(|t| t.questions).sum()
    }

    pub fn with_category(&self) -> usize {
        self.per_type.iter().map(|t| t.with_category).sum()
    }
}

/// Counts, per question type in dataset order, the questions whose prompts would
/// include `category` of `kb` (and `entry`, when given).
pub fn impact(
    ctx: &PipelineContext,
    dataset: &MmadDataset,
    kb: &KnowledgeBase,
    knowledge_dataset: &str,
    category: &str,
    entry: Option<&str>,
) -> Impact {
    let mut per_type: IndexMap<String, TypeImpact> = IndexMap::new();
    let mut modes: IndexMap<String, Option<KnowledgeMode>> = IndexMap::new();
    let entries = kb
        .datasets
        .get(knowledge_dataset)
        .and_then(|d| d.get(category));
    for q in dataset.questions() {
        let (ds, cat) = (
            crate::dataset::dataset_of(q.key),
            crate::dataset::category_of(q.key),
        );
        if cat != category {
            continue;
        }
        if !served_by(kb, knowledge_dataset, ds, cat) {
            continue;
        }
        let qtype = q.question.qtype.as_str().to_string();
        let mode = *modes.entry(qtype.clone()).or_insert_with(|| {
            ctx.plan(&q.question.qtype)
                .knowledge
                .filter(|m| *m != KnowledgeMode::Off)
        });
        let row = per_type.entry(qtype.clone()).or_insert_with(|| TypeImpact {
            qtype,
            questions: 0,
            mode,
            with_category: 0,
            with_entry: entry.map(|_| 0),
        });
        row.questions += 1;
        if !mode.is_some_and(reads_knowledge_file) {
            continue;
        }
        row.with_category += 1;
        if let (Some(name), Some(count)) = (entry, row.with_entry.as_mut()) {
            let included = match mode {
                Some(KnowledgeMode::Options) => entries.is_some_and(|e| {
                    name == NORMAL_ENTRY
                        || crate::knowledge::options::select_by_options(e, &q.question.options)
                            .entries
                            .iter()
                            .any(|n| n == name)
                }),
                _ => true,
            };
            if included {
                *count += 1;
            }
        }
    }
    Impact {
        dataset: knowledge_dataset.to_string(),
        category: category.to_string(),
        entry: entry.map(str::to_string),
        per_type: per_type.into_values().collect(),
    }
}

/// True when a question about `image_key` of type `qtype` gets text of `category`
/// (of `knowledge_dataset` in `kb`) in its prompt under `ctx`'s plan: the Knowledge
/// Guide runs for the type in a mode that reads the knowledge file, and the guide's
/// lookup serves the image from that category.
pub fn prompt_reads_category(
    ctx: &PipelineContext,
    kb: &KnowledgeBase,
    knowledge_dataset: &str,
    category: &str,
    image_key: &str,
    qtype: &QuestionType,
) -> bool {
    let (ds, cat) = (
        crate::dataset::dataset_of(image_key),
        crate::dataset::category_of(image_key),
    );
    cat == category
        && served_by(kb, knowledge_dataset, ds, cat)
        && ctx.plan(qtype).knowledge.is_some_and(reads_knowledge_file)
}

/// Modes whose prompt text comes from the knowledge file (`condensed` reads its own
/// file, `off` reads none).
fn reads_knowledge_file(mode: KnowledgeMode) -> bool {
    matches!(
        mode,
        KnowledgeMode::Category | KnowledgeMode::Options | KnowledgeMode::Llm
    )
}

/// The pipeline's own lookup decides which knowledge category serves an image.
fn served_by(kb: &KnowledgeBase, knowledge_dataset: &str, ds: &str, cat: &str) -> bool {
    matches!(
        guide::find_category(kb, Some(ds).filter(|d| !d.is_empty()), cat),
        Some((key, _)) if key == knowledge_dataset
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::pipeline::PipelineSettings;

    fn sample() -> (MmadDataset, KnowledgeBase) {
        let a = crate::assets_dir().join("sample");
        (
            MmadDataset::load(&a.join("mmad.json")).unwrap(),
            KnowledgeBase::load(&a.join("domain_knowledge.json")).unwrap(),
        )
    }

    fn ctx(preset: &str, mode: Option<KnowledgeMode>) -> PipelineContext {
        PipelineContext::new(PipelineSettings {
            preset: preset.into(),
            knowledge_mode: mode,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn counts_follow_the_plan_per_type() {
        let (ds, kb) = sample();
        let c = ctx("echo", Some(KnowledgeMode::Category));
        let imp = impact(&c, &ds, &kb, "Sample", "washer", None);
        let washer_questions = ds
            .questions()
            .filter(|q| q.key.starts_with("Sample/washer/"))
            .count();
        assert_eq!(imp.questions(), washer_questions);
        for t in &imp.per_type {
            let planned = c
                .plan(&crate::dataset::QuestionType::parse(&t.qtype))
                .knowledge;
            assert_eq!(t.mode, planned.filter(|m| *m != KnowledgeMode::Off));
            let expect = if planned.is_some() { t.questions } else { 0 };
            assert_eq!(t.with_category, expect, "{}", t.qtype);
        }
        // Echo's table sends knowledge for Defect Classification but not Anomaly Detection.
        let by = |n: &str| imp.per_type.iter().find(|t| t.qtype == n).unwrap();
        assert!(by("Defect Classification").with_category > 0);
        assert_eq!(by("Anomaly Detection").with_category, 0);
        // In condensed mode (Echo's default) edits to this file reach no prompt.
        let cond = impact(&ctx("echo", None), &ds, &kb, "Sample", "washer", None);
        assert_eq!(cond.with_category(), 0);
        assert_eq!(cond.questions(), washer_questions);
    }

    #[test]
    fn options_mode_counts_the_entry_only_where_an_option_names_it() {
        let (ds, kb) = sample();
        let c = ctx("echo", Some(KnowledgeMode::Options));
        let imp = impact(&c, &ds, &kb, "Sample", "washer", Some("notch"));
        let dc = imp
            .per_type
            .iter()
            .find(|t| t.qtype == "Defect Classification")
            .unwrap();
        let with = dc.with_entry.unwrap();
        assert!(with > 0 && with <= dc.with_category, "{dc:?}");
        let good = impact(&c, &ds, &kb, "Sample", "washer", Some("good"));
        for t in &good.per_type {
            assert_eq!(t.with_entry, Some(t.with_category));
        }
        // Another dataset's category of the same name is not counted.
        let none = impact(&c, &ds, &kb, "Elsewhere", "washer", None);
        assert_eq!(none.questions(), 0);
    }
}
