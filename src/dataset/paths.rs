//! Resolving dataset-relative paths without ever leaving the dataset root.

use std::path::{Path, PathBuf};

/// A relative path from a dataset file that we refuse to follow.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("empty path")]
    Empty,
    #[error("path `{0}` is absolute; dataset paths must be relative to the dataset root")]
    Absolute(String),
    #[error("path `{0}` contains `..` and would escape the dataset root")]
    ParentComponent(String),
    #[error("path `{0}` contains a NUL byte")]
    Nul(String),
}

/// The folder that mmad.json's paths are relative to.
///
/// The check is lexical (no `..`, not absolute, no drive prefix) rather than
/// canonical: real MMAD setups often symlink `MVTec-AD` or `VisA` into the root,
/// and following those links is the user's intent, not an escape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRoot {
    root: PathBuf,
}

impl DatasetRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DatasetRoot { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Joins a root-relative path after checking it stays under the root.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf, PathError> {
        check_relative(rel)?;
        let mut out = self.root.clone();
        for part in rel
            .split(['/', '\\'])
            .filter(|p| !p.is_empty() && *p != ".")
        {
            out.push(part);
        }
        Ok(out)
    }
}

/// Rejects paths that are empty, absolute, carry a drive prefix or a `..` component.
pub fn check_relative(rel: &str) -> Result<(), PathError> {
    if rel.trim().is_empty() {
        return Err(PathError::Empty);
    }
    if rel.contains('\0') {
        return Err(PathError::Nul(rel.to_string()));
    }
    let bytes = rel.as_bytes();
    let has_drive = bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic();
    if rel.starts_with('/') || rel.starts_with('\\') || has_drive || Path::new(rel).is_absolute() {
        return Err(PathError::Absolute(rel.to_string()));
    }
    if rel.split(['/', '\\']).any(|p| p == "..") {
        return Err(PathError::ParentComponent(rel.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_inside_root() {
        let r = DatasetRoot::new("/data/mmad");
        assert_eq!(
            r.resolve("MVTec-AD/bottle/train/good/001.png").unwrap(),
            PathBuf::from("/data/mmad/MVTec-AD/bottle/train/good/001.png")
        );
        assert_eq!(
            r.resolve("./VisA//candle/x.JPG").unwrap(),
            PathBuf::from("/data/mmad/VisA/candle/x.JPG")
        );
    }

    #[test]
    fn rejects_escapes() {
        let r = DatasetRoot::new("/data/mmad");
        assert!(matches!(
            r.resolve("../etc/passwd"),
            Err(PathError::ParentComponent(_))
        ));
        assert!(matches!(
            r.resolve("a/../../b"),
            Err(PathError::ParentComponent(_))
        ));
        assert!(matches!(
            r.resolve("a\\..\\..\\b"),
            Err(PathError::ParentComponent(_))
        ));
        assert!(matches!(
            r.resolve("/etc/passwd"),
            Err(PathError::Absolute(_))
        ));
        assert!(matches!(
            r.resolve("\\\\server\\share"),
            Err(PathError::Absolute(_))
        ));
        assert!(matches!(
            r.resolve("C:\\x.png"),
            Err(PathError::Absolute(_))
        ));
        assert!(matches!(r.resolve(""), Err(PathError::Empty)));
        assert!(matches!(r.resolve("a\0b"), Err(PathError::Nul(_))));
        // A name that merely contains dots is fine.
        assert!(r.resolve("a/..b/c...png").is_ok());
    }
}
