//! Datasets: MMAD's `mmad.json`, plain MVTec-style folders, and the rules that keep
//! every path inside the dataset root.

pub mod folder;
pub mod mmad;
pub mod paths;
pub mod stats;

pub use folder::{FolderDataset, FolderImage, Split};
pub use mmad::{ImageEntry, MmadDataset, Question, QuestionRef, QuestionType};
pub use paths::{DatasetRoot, PathError};
pub use stats::DatasetStats;

/// The substring MMAD uses to tell normal images from abnormal ones. It is
/// case-sensitive on purpose: `GoodsAD/...` must not count as normal.
pub const NORMAL_FLAG: &str = "good";

/// True when MMAD counts this image key as defect-free.
pub fn is_normal_key(key: &str) -> bool {
    key.contains(NORMAL_FLAG)
}

/// The dataset folder (first path component) of a root-relative key.
pub fn dataset_of(key: &str) -> &str {
    key.split('/').next().unwrap_or("")
}

/// The category (second path component) of a root-relative key.
pub fn category_of(key: &str) -> &str {
    key.split('/').nth(1).unwrap_or("")
}

/// The defect type of a root-relative key: the folder holding the image
/// (`DS-MVTec/bottle/image/broken_large/000.png` -> `broken_large`; `good` for normal
/// images in MMAD's layout), or `""` for a key with fewer than three components.
pub fn defect_type_of(key: &str) -> &str {
    let mut parts = key.rsplit('/');
    parts.next();
    match parts.next() {
        Some(folder) if key.split('/').count() >= 3 => folder,
        _ => "",
    }
}

/// The path's components and the position of its split folder (`train`, `test`,
/// or DS-MVTec's `image`), the anchor of the MMAD and MVTec layouts.
fn layout_split(path: &std::path::Path) -> Option<(Vec<String>, usize)> {
    let parts: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let split = parts
        .iter()
        .rposition(|c| c == "train" || c == "test" || c == "image")?;
    Some((parts, split))
}

/// The category of an image whose path follows the MMAD or MVTec layout: the
/// folder just before `train`, `test` or `image` (DS-MVTec's query folder).
pub fn category_from_path(path: &std::path::Path) -> Option<String> {
    let (parts, split) = layout_split(path)?;
    (split >= 1).then(|| parts[split - 1].clone())
}

/// The dataset folder of such an image: the folder before its category.
pub fn dataset_from_path(path: &std::path::Path) -> Option<String> {
    let (parts, split) = layout_split(path)?;
    (split >= 2).then(|| parts[split - 2].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defect_types_are_the_folder_holding_the_image() {
        assert_eq!(
            defect_type_of("DS-MVTec/bottle/image/broken_large/000.png"),
            "broken_large"
        );
        assert_eq!(defect_type_of("VisA/candle/test/good/0000.JPG"), "good");
        assert_eq!(defect_type_of("a/b.png"), "");
        assert_eq!(defect_type_of("x.png"), "");
    }

    #[test]
    fn category_from_layouts() {
        use std::path::Path;
        let c = |p: &str| category_from_path(Path::new(p));
        assert_eq!(
            c("/d/MVTec-AD/bottle/test/broken_large/000.png").as_deref(),
            Some("bottle")
        );
        assert_eq!(
            c("DS-MVTec/cable/image/good/001.png").as_deref(),
            Some("cable")
        );
        assert_eq!(c("VisA/candle/test/bad/002.JPG").as_deref(), Some("candle"));
        assert_eq!(c("photo.png"), None);
        assert_eq!(c("test/x.png"), None);
        assert_eq!(
            dataset_from_path(Path::new("/d/VisA/candle/test/bad/002.JPG")).as_deref(),
            Some("VisA")
        );
        assert_eq!(
            dataset_from_path(Path::new("candle/test/bad/002.JPG")),
            None
        );
    }

    #[test]
    fn normal_flag_is_case_sensitive_substring() {
        assert!(is_normal_key("DS-MVTec/bottle/image/good/000.png"));
        assert!(!is_normal_key("GoodsAD/cigarette_box/test/opened/003.jpg"));
        assert!(is_normal_key("GoodsAD/cigarette_box/test/good/003_001.jpg"));
        assert!(!is_normal_key("VisA/candle/test/bad/002.JPG"));
    }

    #[test]
    fn dataset_and_category() {
        assert_eq!(dataset_of("VisA/candle/test/bad/002.JPG"), "VisA");
        assert_eq!(category_of("VisA/candle/test/bad/002.JPG"), "candle");
        assert_eq!(category_of("VisA"), "");
    }
}
