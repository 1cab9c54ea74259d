//! Knowledge versions: every save writes the knowledge file atomically and keeps an
//! immutable copy `<workspace>/knowledge/versions/<NNNN>-<hash8>.json` listed in
//! `index.json` (note, RFC 3339 time, content hash, where it was saved). Reverting
//! saves an old version's content as a new version; nothing is ever deleted.
//!
//! The content hash is [`KnowledgeBase::content_hash`], the value run manifests
//! record as the knowledge version, so a run can be traced to its version here.
//! Change detection uses the hash of the file's bytes instead: it also notices edits
//! that only change the layout.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{KnowledgeBase, KnowledgeError};
use crate::util::fsx::{atomic_write, sha256_bytes};

pub const INDEX_FILE: &str = "index.json";

/// The versions folder of a workspace.
pub fn versions_dir(workspace: &Path) -> PathBuf {
    workspace.join("knowledge").join("versions")
}

#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error(transparent)]
    Knowledge(#[from] KnowledgeError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a version index: {message}")]
    BadIndex { path: PathBuf, message: String },
    #[error("version {number} is not in {index}")]
    NoSuchVersion { number: u32, index: PathBuf },
    #[error(
        "{path} was changed outside the app since it was loaded (its content hash is now {disk_hash8}); \
         reload it, or overwrite it on purpose"
    )]
    ChangedOnDisk { path: PathBuf, disk_hash8: String },
}

/// One saved version, as listed in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub number: u32,
    /// The version file's name inside the versions folder.
    pub file: String,
    pub note: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// [`KnowledgeBase::content_hash`] of the content.
    pub content_hash: String,
    /// The knowledge file this save wrote.
    pub saved_to: PathBuf,
    /// Set when the version was made by reverting to an older one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_from: Option<u32>,
}

impl VersionInfo {
    pub fn hash8(&self) -> &str {
        // Checked to be hex when the index is read; stay panic-free regardless.
        self.content_hash.get(..8).unwrap_or(&self.content_hash)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    versions: Vec<VersionInfo>,
}

/// The hash the change detection compares: SHA-256 of the file's bytes.
pub fn file_hash(path: &Path) -> Result<String, VersionError> {
    let bytes = crate::util::fsx::read_limited(path, crate::util::fsx::TEXT_FILE_LIMIT).map_err(
        |source| VersionError::Read {
            path: path.to_path_buf(),
            source,
        },
    )?;
    Ok(sha256_bytes(&bytes))
}

/// A version file is named by us as `NNNN-hash8.json`; an index entry that names
/// anything but a plain file name in the versions folder is refused.
fn check_version_file_name(name: &str) -> Result<(), String> {
    crate::dataset::paths::check_relative(name).map_err(|e| format!("file {e}"))?;
    if name.contains(['/', '\\']) || name == "." || name == INDEX_FILE {
        return Err(format!(
            "file `{name}` is not a version file name (a plain `NNNN-hash.json` in the versions folder)"
        ));
    }
    Ok(())
}

/// What a save produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub version: VersionInfo,
    /// The new [`file_hash`] of the knowledge file.
    pub file_hash: String,
}

/// The versions of one workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionStore {
    dir: PathBuf,
}

impl VersionStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        VersionStore { dir: dir.into() }
    }

    pub fn in_workspace(workspace: &Path) -> Self {
        VersionStore::new(versions_dir(workspace))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join(INDEX_FILE)
    }

    /// Every version, oldest first; an absent index means none yet.
    pub fn list(&self) -> Result<Vec<VersionInfo>, VersionError> {
        let path = self.index_path();
        let text =
            match crate::util::fsx::read_text_limited(&path, crate::util::fsx::TEXT_FILE_LIMIT) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(source) => return Err(VersionError::Read { path, source }),
            };
        let index: Index = serde_json::from_str(&text).map_err(|e| VersionError::BadIndex {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // The index is a file anyone can edit: a version's `file` must name a file
        // inside the versions folder, or a "version" could load any file on disk.
        for v in &index.versions {
            let bad = |message: String| VersionError::BadIndex {
                path: path.clone(),
                message: format!("version {}: {message}", v.number),
            };
            check_version_file_name(&v.file).map_err(bad)?;
            if v.content_hash.len() != 64 || !v.content_hash.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(bad(format!(
                    "content_hash `{}` is not a SHA-256 in hex",
                    v.content_hash
                )));
            }
        }
        Ok(index.versions)
    }

    /// The content of one version.
    pub fn load(&self, number: u32) -> Result<KnowledgeBase, VersionError> {
        let info = self
            .list()?
            .into_iter()
            .find(|v| v.number == number)
            .ok_or_else(|| VersionError::NoSuchVersion {
                number,
                index: self.index_path(),
            })?;
        Ok(KnowledgeBase::load(&self.dir.join(&info.file))?)
    }

    /// Saves `kb` to `path` and records it as a new version.
    ///
    /// `expected_file_hash` is the [`file_hash`] of the file when it was loaded:
    /// when the file now has other bytes, nothing is written and
    /// [`VersionError::ChangedOnDisk`] is returned. `None` overwrites whatever is
    /// there (the user chose to).
    pub fn save(
        &self,
        kb: &KnowledgeBase,
        path: &Path,
        note: &str,
        expected_file_hash: Option<&str>,
        reverted_from: Option<u32>,
    ) -> Result<Saved, VersionError> {
        if let Some(expected) = expected_file_hash {
            match file_hash(path) {
                Ok(now) if now != expected => {
                    return Err(VersionError::ChangedOnDisk {
                        path: path.to_path_buf(),
                        disk_hash8: now[..8].to_string(),
                    });
                }
                Ok(_) => {}
                // Deleted since loading: writing it back loses nothing.
                Err(VersionError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let text = kb.to_json_string();
        let mut versions = self.list()?;
        let content_hash = kb.content_hash();
        let mut number = versions.iter().map(|v| v.number).max().unwrap_or(0) + 1;
        std::fs::create_dir_all(&self.dir).map_err(|source| VersionError::Write {
            path: self.dir.clone(),
            source,
        })?;
        // The version file first: an index entry never points at a missing file.
        // `create_new` keeps an existing version file immutable even if two
        // processes race for the same number.
        let file = loop {
            let name = format!("{number:04}-{}.json", &content_hash[..8]);
            let p = self.dir.join(&name);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    f.write_all(text.as_bytes())
                        .and_then(|_| f.sync_all())
                        .and_then(|_| crate::util::fsx::sync_dir(&self.dir))
                        .map_err(|source| VersionError::Write { path: p, source })?;
                    break name;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => number += 1,
                Err(source) => return Err(VersionError::Write { path: p, source }),
            }
        };
        let version = VersionInfo {
            number,
            file,
            note: note.trim().to_string(),
            time: now_rfc3339(),
            content_hash,
            saved_to: path.to_path_buf(),
            reverted_from,
        };
        // The index before the file: a saved file whose version is missing from the
        // index would be content no run could name. Should the file then fail, the
        // index is put back and the new version file removed.
        let previous = versions.clone();
        versions.push(version.clone());
        self.write_index(versions)?;
        if let Err(e) = kb.save(path) {
            let _ = self.write_index(previous);
            let _ = std::fs::remove_file(self.dir.join(&version.file));
            return Err(e.into());
        }
        Ok(Saved {
            version,
            file_hash: sha256_bytes(text.as_bytes()),
        })
    }

    fn write_index(&self, versions: Vec<VersionInfo>) -> Result<(), VersionError> {
        let index = serde_json::to_string_pretty(&Index { versions }).map_err(|e| {
            VersionError::BadIndex {
                path: self.index_path(),
                message: e.to_string(),
            }
        })?;
        atomic_write(&self.index_path(), index.as_bytes()).map_err(|source| VersionError::Write {
            path: self.index_path(),
            source,
        })
    }

    /// Saves version `number`'s content as a new version (nothing is deleted).
    pub fn revert(
        &self,
        number: u32,
        path: &Path,
        expected_file_hash: Option<&str>,
    ) -> Result<(KnowledgeBase, Saved), VersionError> {
        let kb = self.load(number)?;
        let saved = self.save(
            &kb,
            path,
            &format!("revert to version {number}"),
            expected_file_hash,
            Some(number),
        )?;
        Ok((kb, saved))
    }
}

fn now_rfc3339() -> String {
    // Whole seconds read better in a history list.
    crate::util::time::now_seconds()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kb(text: &str) -> KnowledgeBase {
        KnowledgeBase::from_json_str(
            &format!("{{\n    \"D\": {{\n        \"c\": {{\n            \"good\": \"{text}\"\n        }}\n    }}\n}}"),
            Path::new("k.json"),
        )
        .unwrap()
    }

    #[test]
    fn an_index_naming_a_file_outside_the_versions_folder_is_refused() {
        let ws = tempfile::tempdir().unwrap();
        let secret = ws.path().join("secret.json");
        std::fs::write(&secret, r#"{"D": {"c": {"good": "private"}}}"#).unwrap();
        let store = VersionStore::in_workspace(ws.path());
        let file = ws.path().join("domain_knowledge.json");
        store
            .save(&kb("first"), &file, "first", None, None)
            .unwrap();
        let index_path = store.dir().join(INDEX_FILE);
        let good = std::fs::read_to_string(&index_path).unwrap();
        let first_file = store.list().unwrap()[0].file.clone();
        for evil in [
            "../../secret.json".to_string(),
            secret.display().to_string(),
            "sub/0001-x.json".to_string(),
            "0001\0.json".to_string(),
        ] {
            let json_evil = serde_json::to_string(&evil).unwrap();
            let text = good.replace(&format!("\"{first_file}\""), &json_evil);
            std::fs::write(&index_path, &text).unwrap();
            let err = store.load(1).unwrap_err().to_string();
            assert!(
                err.contains("index.json") && err.contains("version 1"),
                "{evil}: {err}"
            );
            assert!(!err.contains("private"), "{err}");
        }
    }

    #[test]
    fn a_file_that_cannot_be_written_leaves_no_version_behind() {
        let ws = tempfile::tempdir().unwrap();
        let file = ws.path().join("domain_knowledge.json");
        let store = VersionStore::in_workspace(ws.path());
        store
            .save(&kb("first"), &file, "first", None, None)
            .unwrap();
        // A folder where the file should go: the write fails after the version file
        // and the index were written, and both are taken back.
        let blocked = ws.path().join("blocked.json");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        let err = store.save(&kb("second"), &blocked, "second", None, None);
        assert!(err.is_err());
        let list = store.list().unwrap();
        assert_eq!(list.len(), 1, "{list:?}");
        let files = std::fs::read_dir(store.dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("0002-")
            })
            .count();
        assert_eq!(files, 0, "the version file of the failed save is left");
    }

    #[test]
    fn saves_make_numbered_immutable_versions() {
        let ws = tempfile::tempdir().unwrap();
        let file = ws.path().join("domain_knowledge.json");
        let store = VersionStore::in_workspace(ws.path());
        assert!(store.list().unwrap().is_empty());
        let one = store
            .save(&kb("first"), &file, " first ", None, None)
            .unwrap();
        assert_eq!(one.version.number, 1);
        assert_eq!(one.version.note, "first");
        assert_eq!(one.file_hash, file_hash(&file).unwrap());
        let two = store
            .save(&kb("second"), &file, "second", Some(&one.file_hash), None)
            .unwrap();
        let list = store.list().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[1].file,
            format!("0002-{}.json", &kb("second").content_hash()[..8])
        );
        assert_eq!(list[1].content_hash, kb("second").content_hash());
        assert!(
            list[1].time.parse::<jiff::Timestamp>().is_ok(),
            "{}",
            list[1].time
        );
        assert_eq!(list[1].saved_to, file);
        // Version files hold the bytes that were saved.
        assert_eq!(
            std::fs::read_to_string(store.dir().join(&list[0].file)).unwrap(),
            kb("first").to_json_string()
        );
        assert_eq!(store.load(1).unwrap().datasets, kb("first").datasets);
        // Revert: a third version with the first one's content.
        let (back, three) = store.revert(1, &file, Some(&two.file_hash)).unwrap();
        assert_eq!(three.version.number, 3);
        assert_eq!(three.version.reverted_from, Some(1));
        assert_eq!(three.version.content_hash, list[0].content_hash);
        assert_eq!(KnowledgeBase::load(&file).unwrap().datasets, back.datasets);
        assert_eq!(store.list().unwrap().len(), 3);
        assert!(matches!(
            store.load(9),
            Err(VersionError::NoSuchVersion { number: 9, .. })
        ));
    }

    #[test]
    fn a_file_changed_on_disk_is_not_overwritten() {
        let ws = tempfile::tempdir().unwrap();
        let file = ws.path().join("k.json");
        let store = VersionStore::in_workspace(ws.path());
        let saved = store.save(&kb("mine"), &file, "", None, None).unwrap();
        std::fs::write(&file, kb("theirs").to_json_string()).unwrap();
        let err = store
            .save(&kb("mine again"), &file, "", Some(&saved.file_hash), None)
            .unwrap_err();
        assert!(matches!(err, VersionError::ChangedOnDisk { .. }), "{err}");
        assert!(err.to_string().contains("k.json"), "{err}");
        assert_eq!(
            KnowledgeBase::load(&file).unwrap().datasets,
            kb("theirs").datasets
        );
        assert_eq!(store.list().unwrap().len(), 1);
        // Overwriting on purpose works.
        store
            .save(&kb("mine again"), &file, "", None, None)
            .unwrap();
        assert_eq!(
            KnowledgeBase::load(&file).unwrap().datasets,
            kb("mine again").datasets
        );
    }

    #[test]
    fn a_damaged_index_is_an_error_naming_it() {
        let ws = tempfile::tempdir().unwrap();
        let store = VersionStore::in_workspace(ws.path());
        std::fs::create_dir_all(store.dir()).unwrap();
        std::fs::write(store.dir().join(INDEX_FILE), "{oops").unwrap();
        let err = store.list().unwrap_err().to_string();
        assert!(err.contains(INDEX_FILE), "{err}");
    }
}
