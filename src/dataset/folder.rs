//! A plain MVTec-style folder as a dataset without questions:
//! `<root>/<category>/train/good/*`, `<root>/<category>/test/<defect or good>/*`,
//! `<root>/<category>/ground_truth/<defect>/<stem>_mask.png`.

use std::path::{Path, PathBuf};

/// File extensions we decode (compared case-insensitively: VisA uses `.JPG`).
pub const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp"];

pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

/// One image of a folder dataset.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FolderImage {
    /// Root-relative, `/`-separated.
    pub rel_path: String,
    pub category: String,
    pub split: Split,
    /// `good` or the defect folder's name.
    pub label: String,
    /// Root-relative mask, when a matching `ground_truth` file exists.
    pub mask: Option<String>,
}

impl FolderImage {
    pub fn is_normal(&self) -> bool {
        self.label == "good"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("cannot read folder {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{0} has no MVTec-style layout: expected <category>/train/good/ or <category>/test/<label>/ folders"
    )]
    NoLayout(PathBuf),
}

/// The images of an MVTec-style folder, sorted by path.
#[derive(Debug, Clone, Default)]
pub struct FolderDataset {
    pub root: PathBuf,
    pub images: Vec<FolderImage>,
}

impl FolderDataset {
    /// Scans `root`. A root that itself holds `train`/`test` is one category named
    /// after the folder; otherwise each subfolder with `train` or `test` is a category.
    pub fn scan(root: &Path) -> Result<FolderDataset, FolderError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FolderError::Io { path, source }
        };
        let mut images = Vec::new();
        let single = root.join("train").is_dir() || root.join("test").is_dir();
        let categories: Vec<(String, PathBuf, String)> = if single {
            let name = root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "category".into());
            vec![(name, root.to_path_buf(), String::new())]
        } else {
            let mut dirs = Vec::new();
            for entry in std::fs::read_dir(root).map_err(io(root))? {
                let entry = entry.map_err(io(root))?;
                let p = entry.path();
                if p.join("train").is_dir() || p.join("test").is_dir() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    dirs.push((name.clone(), p, format!("{name}/")));
                }
            }
            dirs.sort();
            dirs
        };
        for (category, dir, prefix) in &categories {
            for (split, split_name) in [(Split::Train, "train"), (Split::Test, "test")] {
                let split_dir = dir.join(split_name);
                if !split_dir.is_dir() {
                    continue;
                }
                for label in sorted_subdirs(&split_dir).map_err(io(&split_dir))? {
                    let label_dir = split_dir.join(&label);
                    for file in sorted_images(&label_dir).map_err(io(&label_dir))? {
                        let rel = format!("{prefix}{split_name}/{label}/{file}");
                        let mask = (label != "good")
                            .then(|| mask_for(dir, prefix, &label, &file))
                            .flatten();
                        images.push(FolderImage {
                            rel_path: rel,
                            category: category.clone(),
                            split,
                            label: label.clone(),
                            mask,
                        });
                    }
                }
            }
        }
        if images.is_empty() {
            return Err(FolderError::NoLayout(root.to_path_buf()));
        }
        Ok(FolderDataset {
            root: root.to_path_buf(),
            images,
        })
    }

    pub fn categories(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for img in &self.images {
            if !out.contains(&img.category.as_str()) {
                out.push(&img.category);
            }
        }
        out
    }
}

fn sorted_subdirs(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.path().is_dir() {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

fn sorted_images(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let p = entry.path();
        if p.is_file() && is_image_file(&p) {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

fn mask_for(cat_dir: &Path, prefix: &str, label: &str, file: &str) -> Option<String> {
    let stem = Path::new(file).file_stem()?.to_string_lossy().into_owned();
    let gt = cat_dir.join("ground_truth").join(label);
    for name in [format!("{stem}_mask.png"), format!("{stem}.png")] {
        if gt.join(&name).is_file() {
            return Some(format!("{prefix}ground_truth/{label}/{name}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn scans_mvtec_layout_with_masks() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        touch(&r.join("bottle/train/good/001.png"));
        touch(&r.join("bottle/train/good/000.png"));
        touch(&r.join("bottle/test/good/000.png"));
        touch(&r.join("bottle/test/broken_large/000.png"));
        touch(&r.join("bottle/ground_truth/broken_large/000_mask.png"));
        touch(&r.join("candle/test/bad/000.JPG"));
        touch(&r.join("candle/test/bad/notes.txt"));
        touch(&r.join("readme/info.txt"));
        let d = FolderDataset::scan(r).unwrap();
        let paths: Vec<_> = d.images.iter().map(|i| i.rel_path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bottle/train/good/000.png",
                "bottle/train/good/001.png",
                "bottle/test/broken_large/000.png",
                "bottle/test/good/000.png",
                "candle/test/bad/000.JPG"
            ]
        );
        assert_eq!(
            d.images[2].mask.as_deref(),
            Some("bottle/ground_truth/broken_large/000_mask.png")
        );
        assert!(d.images[3].is_normal() && d.images[3].mask.is_none());
        assert_eq!(d.categories(), ["bottle", "candle"]);
    }

    #[test]
    fn single_category_root_and_empty_root() {
        let t = tempfile::tempdir().unwrap();
        let cat = t.path().join("screw");
        touch(&cat.join("train/good/a.bmp"));
        let d = FolderDataset::scan(&cat).unwrap();
        assert_eq!(d.images[0].rel_path, "train/good/a.bmp");
        assert_eq!(d.images[0].category, "screw");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            FolderDataset::scan(empty.path()),
            Err(FolderError::NoLayout(_))
        ));
        assert!(matches!(
            FolderDataset::scan(&empty.path().join("missing")),
            Err(FolderError::Io { .. })
        ));
    }
}
