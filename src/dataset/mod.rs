//! Datasets: MMAD's `mmad.json`, plain MVTec-style folders, and the rules that keep
//! every path inside the dataset root.

pub mod folder;
pub mod mmad;
pub mod paths;
pub mod stats;

pub use folder::{FolderDataset, FolderImage, Split};
pub use mmad::{ImageEntry, MmadDataset, Question, QuestionType};
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

#[cfg(test)]
mod tests {
    use super::*;

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
