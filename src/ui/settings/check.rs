//! Checks of what the draft says, each on a background job keyed by its input.

use std::path::Path;

use crate::dataset::{DatasetRoot, MmadDataset};
use crate::echo::plan::ExpertTable;
use crate::echo::prompt::PromptSet;
use crate::knowledge::KnowledgeBase;
use crate::ui::jobs::Job;
use crate::vision::spec::EmbedderSpec;

/// A check that runs in the background for one input; a result for an older input
/// is kept until the new one arrives, and marked as stale by its key.
pub(super) struct Check<K: PartialEq + Clone + Send + 'static, V: Send + 'static = String> {
    pub(super) result: Option<(K, Result<V, String>)>,
    pub(super) job: Option<(K, Job<V>)>,
}

impl<K: PartialEq + Clone + Send + 'static, V: Send + 'static> Default for Check<K, V> {
    fn default() -> Self {
        Check {
            result: None,
            job: None,
        }
    }
}

impl<K: PartialEq + Clone + Send + 'static, V: Send + 'static> Check<K, V> {
    /// Starts checking `key` unless it is checked, or being checked, already.
    pub(super) fn want(
        &mut self,
        name: &'static str,
        key: &K,
        work: impl FnOnce(K) -> anyhow::Result<V> + Send + 'static,
    ) {
        let done = self.result.as_ref().is_some_and(|(k, _)| k == key);
        let running = self.job.as_ref().is_some_and(|(k, _)| k == key);
        if done || running || self.job.is_some() {
            // One at a time: a newer input is checked when the current job ends.
            return;
        }
        let k = key.clone();
        self.job = Some((key.clone(), Job::spawn(name, move || work(k))));
    }

    /// Forgets the result so the next `want` runs again.
    pub(super) fn again(&mut self) {
        self.result = None;
    }

    pub(super) fn poll(&mut self) {
        if let Some(result) = self.job.as_mut().and_then(|(_, j)| j.take()) {
            let (key, _) = self.job.take().expect("job present");
            self.result = Some((key, result));
        }
    }

    pub(super) fn busy(&self) -> bool {
        self.job.is_some()
    }

    pub(super) fn name(&self) -> Option<&'static str> {
        self.job.as_ref().map(|(_, j)| j.name())
    }

    /// The result for `key`, if it has one.
    pub(super) fn for_key(&self, key: &K) -> Option<&Result<V, String>> {
        self.result
            .as_ref()
            .filter(|(k, _)| k == key)
            .map(|(_, r)| r)
    }
}

pub(super) fn preset_list(table: &ExpertTable) -> Vec<(String, String)> {
    table
        .presets
        .iter()
        .map(|(n, p)| (n.clone(), p.description.clone()))
        .collect()
}

/// Loads the embedder the way a memory build would and says what it is.
pub(super) fn check_embedder(spec: &str) -> anyhow::Result<String> {
    let parsed: EmbedderSpec = spec.parse()?;
    let embedder = parsed.load()?;
    Ok(format!("{}: {} dimensions", embedder.id(), embedder.dim()))
}

/// Images the dataset check looks for under the root (a spot check, not all).
pub(super) const DATASET_SPOT_CHECK: usize = 50;

pub(super) fn check_dataset(path: &Path, root: &Path) -> anyhow::Result<String> {
    let dataset = MmadDataset::load(path)?;
    if !root.is_dir() {
        anyhow::bail!("the dataset root {} is not a folder", root.display());
    }
    let root_dir = DatasetRoot::new(root);
    let keys: Vec<&String> = dataset.entries.keys().take(DATASET_SPOT_CHECK).collect();
    let found = keys
        .iter()
        .filter(|k| root_dir.resolve(k).is_ok_and(|p| p.is_file()))
        .count();
    if !keys.is_empty() && found == 0 {
        anyhow::bail!(
            "none of the first {} images (e.g. {}) is under {}: is this the right root?",
            keys.len(),
            keys[0],
            root.display()
        );
    }
    let mut text = format!(
        "{} images, {} questions",
        dataset.image_count(),
        dataset.question_count()
    );
    if found < keys.len() {
        text.push_str(&format!(
            "; {} of the first {} images are missing under the root",
            keys.len() - found,
            keys.len()
        ));
    }
    Ok(text)
}

pub(super) fn check_knowledge(path: &Path) -> anyhow::Result<String> {
    let kb = KnowledgeBase::load(path)?;
    Ok(format!(
        "{} categories, {} entries",
        kb.category_count(),
        kb.entry_count()
    ))
}

/// The experts table's presets, and whether the chosen preset's prompts load.
pub(super) struct PromptsCheck {
    pub(super) presets: Vec<(String, String)>,
    pub(super) status: Result<String, String>,
}

pub(super) fn check_prompts(
    experts: Option<&Path>,
    dir: Option<&Path>,
    preset: &str,
) -> anyhow::Result<PromptsCheck> {
    let table = ExpertTable::load_or_bundled(experts)?;
    let presets = preset_list(&table);
    let status = (|| -> anyhow::Result<String> {
        if let Some(d) = dir
            && !d.is_dir()
        {
            anyhow::bail!(
                "the prompt templates folder {} is not a folder",
                d.display()
            );
        }
        let def = table.preset(preset)?;
        let mut parts = Vec::new();
        for set in def.prompt_sets() {
            let loaded = PromptSet::load(set, dir)?;
            parts.push(format!("{set} ({} templates)", loaded.templates().count()));
        }
        Ok(format!(
            "preset `{preset}` uses prompt set {}",
            parts.join(", ")
        ))
    })()
    .map_err(|e| crate::util::error::chain(e.as_ref()));
    Ok(PromptsCheck { presets, status })
}
