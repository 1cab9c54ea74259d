//! A person's verdicts on images (OK, defect, unsure, with a note), kept in the
//! workspace as `verdicts.json` and exported as CSV for a report.
//!
//! A dataset image is identified by its dataset file and MMAD key, so the same key in
//! two datasets never shares a verdict; a loose image by its absolute path.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// The file's name inside the workspace.
pub const VERDICTS_FILE: &str = "verdicts.json";
const FORMAT_NAME: &str = "echo-workbench verdicts";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum VerdictError {
    #[error("cannot read the verdicts file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the verdicts file {path} is not valid ({message}); it was left untouched: fix or move it to record verdicts again"
    )]
    Parse { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a person decided about an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Defect,
    Unsure,
}

impl Verdict {
    pub const ALL: [Verdict; 3] = [Verdict::Ok, Verdict::Defect, Verdict::Unsure];

    /// The word in the file and the CSV (`ok`, `defect`, `unsure`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Defect => "defect",
            Verdict::Unsure => "unsure",
        }
    }

    /// The word people read on buttons.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Defect => "Defect",
            Verdict::Unsure => "Unsure",
        }
    }
}

/// Which image a verdict is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageId {
    /// An entry of an MMAD dataset: the dataset file (absolute) and the entry's key.
    Entry { dataset: PathBuf, key: String },
    /// An image opened on its own, by absolute path.
    File(PathBuf),
}

impl ImageId {
    /// A dataset entry; the dataset path is made absolute so that the same file opened
    /// from another working folder finds its verdicts.
    pub fn entry(dataset: &Path, key: impl Into<String>) -> ImageId {
        ImageId::Entry {
            dataset: absolute(dataset),
            key: key.into(),
        }
    }

    /// A loose image file.
    pub fn file(path: &Path) -> ImageId {
        ImageId::File(absolute(path))
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// One saved verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictRecord {
    pub verdict: Verdict,
    pub note: String,
    /// The image file when the verdict was saved (what the CSV's `image` column shows).
    pub path: PathBuf,
    /// UTC, RFC 3339 (`2026-05-01T12:00:00Z`).
    pub saved_at: String,
}

/// The file's rows (a list, not a map, so that paths never need escaping as keys).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRow {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::util::serde_path::option"
    )]
    dataset: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(with = "crate::util::serde_path")]
    path: PathBuf,
    verdict: Verdict,
    #[serde(default)]
    note: String,
    saved_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBody {
    format: String,
    version: u32,
    verdicts: Vec<FileRow>,
}

/// All verdicts of a workspace, in the order they were first saved.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VerdictStore {
    path: PathBuf,
    records: IndexMap<ImageId, VerdictRecord>,
}

impl VerdictStore {
    /// The verdicts file of a workspace.
    pub fn path_in(workspace: &Path) -> PathBuf {
        workspace.join(VERDICTS_FILE)
    }

    /// An empty store that will be saved at `path`.
    pub fn empty(path: impl Into<PathBuf>) -> Self {
        VerdictStore {
            path: path.into(),
            records: IndexMap::new(),
        }
    }

    /// Reads `path`; a missing file is an empty store.
    pub fn load(path: &Path) -> Result<Self, VerdictError> {
        let text =
            match crate::util::fsx::read_text_limited(path, crate::util::fsx::TEXT_FILE_LIMIT) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(VerdictStore::empty(path));
                }
                Err(source) => {
                    return Err(VerdictError::Read {
                        path: path.to_owned(),
                        source,
                    });
                }
            };
        let parse = |message: String| VerdictError::Parse {
            path: path.to_owned(),
            message,
        };
        let de = &mut serde_json::Deserializer::from_str(&text);
        let body: FileBody = serde_path_to_error::deserialize(de).map_err(|e| {
            let inner = e.inner();
            let at = e.path().to_string();
            let place = format!("line {}, column {}", inner.line(), inner.column());
            if at == "." || at.is_empty() {
                parse(format!("{place}: {inner}"))
            } else {
                parse(format!("at `{at}`, {place}: {inner}"))
            }
        })?;
        if body.format != FORMAT_NAME {
            return Err(parse(format!(
                "`format` is `{}`, expected `{FORMAT_NAME}`",
                body.format
            )));
        }
        if body.version != FORMAT_VERSION {
            return Err(parse(format!(
                "version {} (this build reads {FORMAT_VERSION})",
                body.version
            )));
        }
        let mut records = IndexMap::new();
        for (i, row) in body.verdicts.into_iter().enumerate() {
            let id = match (row.dataset, row.key) {
                (Some(dataset), Some(key)) => ImageId::Entry { dataset, key },
                (None, None) => ImageId::File(row.path.clone()),
                _ => {
                    return Err(parse(format!(
                        "verdict {i} has only one of `dataset` and `key` (both or neither are needed)"
                    )));
                }
            };
            records.insert(
                id,
                VerdictRecord {
                    verdict: row.verdict,
                    note: row.note,
                    path: row.path,
                    saved_at: row.saved_at,
                },
            );
        }
        Ok(VerdictStore {
            path: path.to_owned(),
            records,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn get(&self, id: &ImageId) -> Option<&VerdictRecord> {
        self.records.get(id)
    }

    pub fn records(&self) -> impl Iterator<Item = (&ImageId, &VerdictRecord)> {
        self.records.iter()
    }

    /// Records (or replaces) the verdict on `id`, stamped now; returns the record.
    pub fn set(
        &mut self,
        id: ImageId,
        path: &Path,
        verdict: Verdict,
        note: impl Into<String>,
    ) -> &VerdictRecord {
        let record = VerdictRecord {
            verdict,
            note: note.into(),
            path: absolute(path),
            saved_at: utc_now_rfc3339(),
        };
        let (index, _) = self.records.insert_full(id, record);
        &self.records[index]
    }

    /// The file's text.
    pub fn to_json(&self) -> String {
        let body = FileBody {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            verdicts: self
                .records
                .iter()
                .map(|(id, r)| {
                    let (dataset, key) = match id {
                        ImageId::Entry { dataset, key } => {
                            (Some(dataset.clone()), Some(key.clone()))
                        }
                        ImageId::File(_) => (None, None),
                    };
                    FileRow {
                        dataset,
                        key,
                        path: r.path.clone(),
                        verdict: r.verdict,
                        note: r.note.clone(),
                        saved_at: r.saved_at.clone(),
                    }
                })
                .collect(),
        };
        serde_json::to_string_pretty(&body).expect("verdicts always serialize") + "\n"
    }

    /// Writes the file atomically (a crash leaves the old or the new file, whole).
    pub fn save(&self) -> Result<(), VerdictError> {
        crate::util::fsx::atomic_write(&self.path, self.to_json().as_bytes()).map_err(|source| {
            VerdictError::Write {
                path: self.path.clone(),
                source,
            }
        })
    }

    /// The CSV text: a header `image,verdict,note,saved_at`, then one row per verdict.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("image,verdict,note,saved_at\r\n");
        for r in self.records.values() {
            let image = r.path.to_string_lossy();
            let fields = [image.as_ref(), r.verdict.as_str(), &r.note, &r.saved_at];
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&line.join(","));
            out.push_str("\r\n");
        }
        out
    }

    /// Writes [`VerdictStore::to_csv`] to `path` atomically.
    pub fn export_csv(&self, path: &Path) -> Result<(), VerdictError> {
        crate::util::fsx::atomic_write(path, self.to_csv().as_bytes()).map_err(|source| {
            VerdictError::Write {
                path: path.to_owned(),
                source,
            }
        })
    }
}

/// One CSV field as RFC 4180 writes it: quoted when it holds a comma, a quote or a
/// line break (or starts or ends with a space, which some readers trim), with quotes
/// doubled inside.
pub fn csv_field(s: &str) -> String {
    let needs = s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ');
    if needs {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The current time in UTC as RFC 3339 with seconds (`2026-05-01T12:00:00Z`).
pub fn utc_now_rfc3339() -> String {
    crate::util::time::now_seconds()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_entries_and_loose_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = VerdictStore::path_in(dir.path());
        let mut store = VerdictStore::load(&path).unwrap();
        assert!(store.is_empty(), "a missing file is an empty store");
        let a = ImageId::entry(Path::new("/data/a/mmad.json"), "DS/cat/test/x/000.png");
        let b = ImageId::entry(Path::new("/data/b/mmad.json"), "DS/cat/test/x/000.png");
        let loose = ImageId::file(Path::new("/photos/part 7.png"));
        store.set(
            a.clone(),
            Path::new("/data/a/DS/cat/test/x/000.png"),
            Verdict::Defect,
            "scratch, left",
        );
        store.set(
            b.clone(),
            Path::new("/data/b/DS/cat/test/x/000.png"),
            Verdict::Ok,
            "",
        );
        store.set(
            loose.clone(),
            Path::new("/photos/part 7.png"),
            Verdict::Unsure,
            "line1\nline2",
        );
        store.save().unwrap();
        let back = VerdictStore::load(&path).unwrap();
        assert_eq!(back, store);
        assert_eq!(back.get(&a).unwrap().verdict, Verdict::Defect);
        assert_eq!(
            back.get(&b).unwrap().verdict,
            Verdict::Ok,
            "same key, other dataset"
        );
        assert_eq!(back.get(&loose).unwrap().note, "line1\nline2");
        // Replacing keeps one record per image.
        store.set(
            a.clone(),
            Path::new("/data/a/DS/cat/test/x/000.png"),
            Verdict::Ok,
            "fine after all",
        );
        assert_eq!(store.len(), 3);
        assert_eq!(store.get(&a).unwrap().note, "fine after all");
    }

    #[test]
    fn a_malformed_file_names_itself_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(VERDICTS_FILE);
        std::fs::write(
            &path,
            "{\"format\": \"echo-workbench verdicts\", \"version\": 1, \"verdicts\": [{",
        )
        .unwrap();
        let e = VerdictStore::load(&path).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("line 1"),
            "{e}"
        );
        std::fs::write(
            &path,
            r#"{"format": "echo-workbench verdicts", "version": 1, "verdicts": [{"path": "/x.png", "verdict": "maybe", "saved_at": ""}]}"#,
        )
        .unwrap();
        let e = VerdictStore::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("verdicts[0].verdict") && e.contains("maybe"),
            "{e}"
        );
        std::fs::write(
            &path,
            r#"{"format": "something else", "version": 1, "verdicts": []}"#,
        )
        .unwrap();
        let e = VerdictStore::load(&path).unwrap_err().to_string();
        assert!(e.contains("something else"), "{e}");
        std::fs::write(
            &path,
            r#"{"format": "echo-workbench verdicts", "version": 1, "verdicts": [{"key": "k", "path": "/x.png", "verdict": "ok", "saved_at": ""}]}"#,
        )
        .unwrap();
        let e = VerdictStore::load(&path).unwrap_err().to_string();
        assert!(e.contains("verdict 0") && e.contains("dataset"), "{e}");
        // Loading never rewrote it.
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("\"key\": \"k\"")
        );
    }

    #[test]
    fn csv_quotes_commas_quotes_and_line_breaks() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("cr\rhere"), "\"cr\rhere\"");
        assert_eq!(csv_field(" padded"), "\" padded\"");
        assert_eq!(csv_field(""), "");
        let dir = tempfile::tempdir().unwrap();
        let mut store = VerdictStore::empty(dir.path().join(VERDICTS_FILE));
        store.set(
            ImageId::file(Path::new("/p/a,b.png")),
            Path::new("/p/a,b.png"),
            Verdict::Defect,
            "scratch \"deep\", near rim\nsecond line",
        );
        let csv = store.to_csv();
        let mut lines = csv.split("\r\n");
        assert_eq!(lines.next(), Some("image,verdict,note,saved_at"));
        let row = lines.next().unwrap();
        assert!(
            row.starts_with(
                "\"/p/a,b.png\",defect,\"scratch \"\"deep\"\", near rim\nsecond line\","
            ),
            "{row}"
        );
        let out = dir.path().join("out/verdicts.csv");
        store.export_csv(&out).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), csv);
    }

    #[cfg(unix)]
    #[test]
    fn images_under_a_non_utf8_name_are_saved_and_read_back_exactly() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
        let dataset = odd.join("mmad.json");
        let loose = odd.join(std::ffi::OsStr::from_bytes(b"\xff.png"));
        let path = VerdictStore::path_in(dir.path());
        let mut store = VerdictStore::empty(&path);
        let entry = ImageId::entry(&dataset, "DS/cat/test/x/000.png");
        store.set(entry.clone(), &odd.join("000.png"), Verdict::Defect, "burr");
        store.set(ImageId::file(&loose), &loose, Verdict::Ok, "");
        store.save().unwrap();
        let back = VerdictStore::load(&path).unwrap();
        assert_eq!(back, store);
        assert_eq!(back.get(&entry).unwrap().path, odd.join("000.png"));
        assert_eq!(
            back.get(&ImageId::file(&loose)).unwrap().verdict,
            Verdict::Ok
        );
    }
}
