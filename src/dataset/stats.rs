//! `dataset stats`: counts per dataset and type, and which files are missing.

use indexmap::IndexMap;
use serde::Serialize;

use super::{DatasetRoot, MmadDataset, PathError, dataset_of, is_normal_key};

/// Counts for one mmad.json. Field names and order are the CLI's JSON contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetStats {
    pub images: usize,
    pub questions: usize,
    /// dataset -> question type -> count, both in order of first appearance.
    pub by_dataset: IndexMap<String, IndexMap<String, usize>>,
    pub normal_images: usize,
    pub abnormal_images: usize,
    /// Root-relative image and template files that do not exist (only with a root).
    pub missing: Vec<String>,
}

impl DatasetStats {
    pub fn compute(dataset: &MmadDataset, root: Option<&DatasetRoot>) -> Result<Self, PathError> {
        let mut by_dataset: IndexMap<String, IndexMap<String, usize>> = IndexMap::new();
        let mut normal = 0;
        for (key, entry) in &dataset.entries {
            let per_type = by_dataset.entry(dataset_of(key).to_string()).or_default();
            for q in &entry.conversation {
                *per_type.entry(q.qtype.as_str().to_string()).or_insert(0) += 1;
            }
            if is_normal_key(key) {
                normal += 1;
            }
        }
        let mut missing = Vec::new();
        if let Some(root) = root {
            let mut seen = std::collections::HashSet::new();
            for (key, entry) in &dataset.entries {
                let files = std::iter::once(key)
                    .chain(&entry.similar_templates)
                    .chain(&entry.random_templates);
                for rel in files {
                    if seen.insert(rel.as_str()) && !root.resolve(rel)?.is_file() {
                        missing.push(rel.clone());
                    }
                }
            }
        }
        Ok(DatasetStats {
            images: dataset.image_count(),
            questions: dataset.question_count(),
            by_dataset,
            normal_images: normal,
            abnormal_images: dataset.image_count() - normal,
            missing,
        })
    }

    /// A report for people: totals, a dataset x type table, and missing files.
    pub fn to_text(&self, checked_files: bool) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} images ({} normal, {} abnormal), {} questions",
            self.images, self.normal_images, self.abnormal_images, self.questions
        );
        let mut types: Vec<&str> = Vec::new();
        for per in self.by_dataset.values() {
            for t in per.keys() {
                if !types.contains(&t.as_str()) {
                    types.push(t);
                }
            }
        }
        let first = self
            .by_dataset
            .keys()
            .map(|k| k.len())
            .chain([7])
            .max()
            .unwrap_or(7);
        let _ = write!(out, "\n{:first$}", "");
        for t in &types {
            let _ = write!(out, "  {t:>w$}", w = t.len().max(5));
        }
        let _ = writeln!(out, "  {:>7}", "total");
        for (ds, per) in &self.by_dataset {
            let _ = write!(out, "{ds:first$}");
            for t in &types {
                let n = per.get(*t).copied().unwrap_or(0);
                let _ = write!(out, "  {n:>w$}", w = t.len().max(5));
            }
            let _ = writeln!(out, "  {:>7}", per.values().sum::<usize>());
        }
        if checked_files {
            if self.missing.is_empty() {
                let _ = writeln!(out, "\nall image and template files are present");
            } else {
                let _ = writeln!(out, "\n{} missing file(s):", self.missing.len());
                for m in &self.missing {
                    let _ = writeln!(out, "  {m}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn counts_and_missing_files() {
        let text = r#"{
          "DS-MVTec/bottle/image/good/000.png": {"conversation": [
              {"Question": "q", "Answer": "A", "Options": {"A": "Yes", "B": "No"}, "type": "Anomaly Detection"},
              {"Question": "q", "Answer": "A", "Options": {"A": "x", "B": "y"}, "type": "Object Details"}],
            "similar_templates": ["MVTec-AD/bottle/train/good/000.png"], "random_templates": ["MVTec-AD/bottle/train/good/000.png"]},
          "GoodsAD/box/test/opened/000.jpg": {"conversation": [
              {"Question": "q", "Answer": "B", "Options": {"A": "Yes", "B": "No"}, "type": "Anomaly Detection"}]}
        }"#;
        let d = MmadDataset::from_json_str(text, Path::new("m.json")).unwrap();
        let t = tempfile::tempdir().unwrap();
        let present = t.path().join("DS-MVTec/bottle/image/good/000.png");
        std::fs::create_dir_all(present.parent().unwrap()).unwrap();
        std::fs::write(&present, b"x").unwrap();
        let s = DatasetStats::compute(&d, Some(&DatasetRoot::new(t.path()))).unwrap();
        assert_eq!((s.images, s.questions), (2, 3));
        assert_eq!((s.normal_images, s.abnormal_images), (1, 1));
        assert_eq!(s.by_dataset["DS-MVTec"]["Object Details"], 1);
        assert_eq!(s.by_dataset["GoodsAD"]["Anomaly Detection"], 1);
        assert_eq!(
            s.missing,
            [
                "MVTec-AD/bottle/train/good/000.png",
                "GoodsAD/box/test/opened/000.jpg"
            ]
        );
        let json = serde_json::to_value(&s).unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "images",
                "questions",
                "by_dataset",
                "normal_images",
                "abnormal_images",
                "missing"
            ]
        );
        assert!(s.to_text(true).contains("2 missing file(s)"));
    }
}
