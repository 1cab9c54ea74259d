//! What a loaded dataset says about each category: which defect folders its images
//! sit in, which normal images it has, and which option texts its questions offer.
//! Validation checks knowledge against it; the editor shows its images as examples.

use indexmap::{IndexMap, IndexSet};

use super::knowledge_dataset_key;
use crate::dataset::MmadDataset;

/// The facts of one category (all dataset folders that share its knowledge key).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CategoryFacts {
    /// Image keys of normal images, in file order.
    pub normal_images: Vec<String>,
    /// Defect folder name -> image keys in it, in file order.
    pub defect_images: IndexMap<String, Vec<String>>,
    /// Every distinct option text of the category's questions.
    pub option_texts: IndexSet<String>,
    pub question_count: usize,
}

/// Facts per (knowledge dataset key, category), e.g. `("MVTec", "bottle")` for
/// `DS-MVTec/bottle/...` images.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetFacts {
    pub categories: IndexMap<(String, String), CategoryFacts>,
}

impl DatasetFacts {
    pub fn from_dataset(dataset: &MmadDataset) -> DatasetFacts {
        let mut out = DatasetFacts::default();
        for (key, entry) in &dataset.entries {
            let ds = crate::dataset::dataset_of(key);
            let cat = crate::dataset::category_of(key);
            if ds.is_empty() || cat.is_empty() {
                continue;
            }
            let facts = out
                .categories
                .entry((knowledge_dataset_key(ds).to_string(), cat.to_string()))
                .or_default();
            if crate::dataset::is_normal_key(key) {
                facts.normal_images.push(key.clone());
            } else if let Some(folder) = defect_folder_of(key) {
                facts
                    .defect_images
                    .entry(folder.to_string())
                    .or_default()
                    .push(key.clone());
            }
            for q in &entry.conversation {
                facts.question_count += 1;
                for text in q.options.values() {
                    facts.option_texts.insert(text.clone());
                }
            }
        }
        out
    }

    /// The facts for a knowledge category, found the way the pipeline finds
    /// knowledge for a dataset folder (`MVTec` knowledge serves `DS-MVTec` images).
    pub fn category(&self, knowledge_dataset: &str, category: &str) -> Option<&CategoryFacts> {
        self.categories
            .get(&(knowledge_dataset.to_string(), category.to_string()))
            .or_else(|| {
                self.categories.get(&(
                    knowledge_dataset_key(knowledge_dataset).to_string(),
                    category.to_string(),
                ))
            })
    }
}

/// The defect folder of an image key: the folder right after the split folder
/// (`test`, `train`, or DS-MVTec's `image`), e.g. `broken_large` for
/// `DS-MVTec/bottle/image/broken_large/000.png`. `None` when the key has no such
/// folder (a file directly under the split folder).
pub fn defect_folder_of(key: &str) -> Option<&str> {
    let parts: Vec<&str> = key.split('/').collect();
    let split = parts
        .iter()
        .enumerate()
        .skip(2)
        .find(|(_, p)| matches!(**p, "test" | "train" | "image"))
        .map(|(i, _)| i)?;
    // The folder must be followed by at least a file name.
    (split + 1 < parts.len() - 1).then(|| parts[split + 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defect_folders_follow_the_layouts() {
        assert_eq!(
            defect_folder_of("DS-MVTec/bottle/image/broken_large/000.png"),
            Some("broken_large")
        );
        assert_eq!(
            defect_folder_of("VisA/candle/test/bad/002.JPG"),
            Some("bad")
        );
        assert_eq!(
            defect_folder_of("MVTec-LOCO/box/test/logical_anomalies/001.png"),
            Some("logical_anomalies")
        );
        assert_eq!(defect_folder_of("X/c/test/000.png"), None);
        assert_eq!(defect_folder_of("X/c/other/a/000.png"), None);
        assert_eq!(defect_folder_of("image/c/test/a/000.png"), Some("a"));
    }

    #[test]
    fn facts_of_the_sample_dataset() {
        let ds = MmadDataset::load(&crate::assets_dir().join("sample/mmad.json")).unwrap();
        let facts = DatasetFacts::from_dataset(&ds);
        let washer = facts.category("Sample", "washer").unwrap();
        assert_eq!(
            washer.defect_images.keys().collect::<Vec<_>>(),
            ["scratch", "notch", "stain"]
        );
        assert!(washer.normal_images.iter().all(|k| k.contains("/good/")));
        assert!(washer.option_texts.contains("Metal washer"));
        let total: usize = facts.categories.values().map(|c| c.question_count).sum();
        assert_eq!(total, ds.question_count());
    }
}
