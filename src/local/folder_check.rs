//! What a local model source holds, file by file, and the memory its weights
//! will need: the report behind `model check` and the Settings section, which
//! must say what is there and what is missing rather than stop at the first gap.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::LocalError;
use super::model_dir::{
    CONFIG_FILE, PREPROCESSOR_FILE, PROCESSOR_FILE, TEMPLATE_JINJA_FILE, TEMPLATE_JSON_FILE,
    TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, WEIGHTS_INDEX_FILE,
};
use super::{ModelDir, ModelSource};

/// The peak memory of a loaded model is bounded by this many times its weights in
/// the chosen dtype (issue 16's budget); the report states it as an upper bound.
pub const MEMORY_FACTOR: f64 = 1.3;

/// A safetensors header larger than this is not a header we can trust.
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// The dtype the weights will be loaded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadDtype {
    /// As the file stores each tensor.
    #[default]
    Stored,
    F32,
    Bf16,
}

impl LoadDtype {
    pub fn parse(text: &str) -> Option<LoadDtype> {
        match text.to_ascii_lowercase().as_str() {
            "stored" | "auto" => Some(LoadDtype::Stored),
            "f32" | "float32" => Some(LoadDtype::F32),
            "bf16" | "bfloat16" => Some(LoadDtype::Bf16),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LoadDtype::Stored => "stored",
            LoadDtype::F32 => "f32",
            LoadDtype::Bf16 => "bf16",
        }
    }
}

/// One kind of file a model folder needs, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFile {
    /// `config`, `tokenizer`, `template`, `image processor`, `weights`.
    pub role: &'static str,
    pub path: PathBuf,
}

/// The weights' size and what they will take in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsSummary {
    /// The safetensors files (one, or the shards an index names).
    pub files: Vec<PathBuf>,
    /// Bytes on disk of all of them.
    pub bytes: u64,
    /// Elements over all tensors.
    pub parameters: u64,
    /// The dtypes stored, as safetensors names them (`BF16`, `F32`, ...).
    pub stored_dtypes: Vec<String>,
    /// Bytes of the tensors in the dtype asked for.
    pub bytes_in_dtype: u64,
    /// [`MEMORY_FACTOR`] times `bytes_in_dtype`: an upper bound, not a measurement.
    pub memory_upper_bound: u64,
}

/// What a source holds. `problem` is set when the folder itself could not be found.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderReport {
    pub source: String,
    pub folder: Option<PathBuf>,
    /// The Hugging Face repository to fetch missing files from.
    pub repo: Option<String>,
    /// The source names a repository in the HF cache, so a download can complete it.
    pub from_hub: bool,
    pub found: Vec<FoundFile>,
    pub missing: Vec<String>,
    pub weights: Option<WeightsSummary>,
    pub problem: Option<String>,
}

impl FolderReport {
    /// The report as lines for people: what was found, the weights and the
    /// memory they need, what is missing and where to get it.
    pub fn lines(&self, dtype: LoadDtype) -> Vec<String> {
        let mut out = vec![format!("model: {}", self.source)];
        if let Some(folder) = &self.folder {
            out.push(format!("folder: {}", folder.display()));
        }
        if let Some(problem) = &self.problem {
            out.push(format!("problem: {problem}"));
        }
        for found in &self.found {
            out.push(format!("found {}: {}", found.role, found.path.display()));
        }
        if let Some(w) = &self.weights {
            out.push(format!(
                "weights: {} in {} file(s), {} parameters stored as {}",
                human_bytes(w.bytes),
                w.files.len(),
                w.parameters,
                w.stored_dtypes.join(", ")
            ));
            out.push(format!(
                "memory needed: at most {} ({} of weights in {} x {MEMORY_FACTOR}, an upper bound)",
                human_bytes(w.memory_upper_bound),
                human_bytes(w.bytes_in_dtype),
                dtype.name()
            ));
        }
        for missing in &self.missing {
            out.push(format!("missing: {missing}"));
        }
        if !self.complete()
            && let Some(repo) = &self.repo
        {
            out.push(if self.from_hub {
                format!("fetch it with: echo-workbench model download hf:{repo}")
            } else {
                format!("the missing files are in the Hugging Face repository {repo}")
            });
        }
        out
    }

    /// Everything the model needs is present and readable.
    pub fn complete(&self) -> bool {
        self.problem.is_none() && self.missing.is_empty() && self.weights.is_some()
    }
}

/// The source a model setting names: `local:X` and `X` are the same, `hf:` names
/// the Hugging Face cache, anything else is a folder.
pub fn model_source(spec: &str) -> ModelSource {
    let spec = spec.trim();
    ModelSource::parse(spec.strip_prefix("local:").unwrap_or(spec))
}

/// Checks `source` file by file; never fails: what it cannot read it reports.
pub fn check_folder(source: &ModelSource, dtype: LoadDtype) -> FolderReport {
    let mut report = FolderReport {
        source: source.to_string(),
        folder: None,
        repo: None,
        from_hub: matches!(source, ModelSource::HfCache { .. }),
        found: Vec::new(),
        missing: Vec::new(),
        weights: None,
        problem: None,
    };
    let folder = match ModelDir::open(source) {
        Ok(dir) => {
            report.repo = Some(dir.repo.clone());
            dir.folder
        }
        Err(LocalError::MissingFiles {
            folder,
            missing: _,
            repo,
        }) => {
            report.repo = Some(repo);
            folder
        }
        Err(e) => {
            if let ModelSource::HfCache { repo, .. } = source {
                report.repo = Some(repo.clone());
            }
            report.problem = Some(crate::util::error::chain(&e));
            return report;
        }
    };
    let present = |name: &str| Some(folder.join(name)).filter(|p| p.is_file());
    let mut need = |role: &'static str, names: &[&str], missing: String| match names
        .iter()
        .find_map(|n| present(n))
    {
        Some(path) => report.found.push(FoundFile { role, path }),
        None => report.missing.push(missing),
    };
    need("config", &[CONFIG_FILE], CONFIG_FILE.into());
    need("tokenizer", &[TOKENIZER_FILE], TOKENIZER_FILE.into());
    need(
        "image processor",
        &[PREPROCESSOR_FILE, PROCESSOR_FILE],
        format!("{PREPROCESSOR_FILE} (or {PROCESSOR_FILE})"),
    );
    let template = [TEMPLATE_JINJA_FILE, TEMPLATE_JSON_FILE]
        .iter()
        .find_map(|n| present(n))
        .or_else(|| {
            present(TOKENIZER_CONFIG_FILE)
                .filter(|p| read_json(p).is_some_and(|j| j.get("chat_template").is_some()))
        });
    match template {
        Some(path) => report.found.push(FoundFile {
            role: "template",
            path,
        }),
        None => report.missing.push(format!(
            "a chat template ({TEMPLATE_JINJA_FILE}, {TEMPLATE_JSON_FILE}, or `chat_template` in {TOKENIZER_CONFIG_FILE})"
        )),
    }
    match weight_files(&folder) {
        Ok(files) => match summarize(&files, dtype) {
            Ok(summary) => {
                report.found.push(FoundFile {
                    role: "weights",
                    path: present(WEIGHTS_FILE)
                        .or_else(|| present(WEIGHTS_INDEX_FILE))
                        .unwrap_or_else(|| folder.join(WEIGHTS_FILE)),
                });
                report.weights = Some(summary);
            }
            Err(problem) => report.missing.push(problem),
        },
        Err(missing) => report.missing.extend(missing),
    }
    report.folder = Some(folder);
    report
}

/// The safetensors files: `model.safetensors`, or every shard the index names
/// (the missing ones listed).
fn weight_files(folder: &Path) -> Result<Vec<PathBuf>, Vec<String>> {
    let single = folder.join(WEIGHTS_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = folder.join(WEIGHTS_INDEX_FILE);
    if !index.is_file() {
        return Err(vec![format!(
            "{WEIGHTS_FILE} (or {WEIGHTS_INDEX_FILE} and its shards)"
        )]);
    }
    let Some(json) = read_json(&index) else {
        return Err(vec![format!("{WEIGHTS_INDEX_FILE} (not readable JSON)")]);
    };
    let shards: BTreeSet<String> = json
        .get("weight_map")
        .and_then(Value::as_object)
        .map(|map| {
            map.values()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if shards.is_empty() {
        return Err(vec![format!("{WEIGHTS_INDEX_FILE} (no `weight_map`)")]);
    }
    let bad_name = |s: &str| s.contains('/') || s.contains('\\') || s == ".." || s.is_empty();
    let missing: Vec<String> = shards
        .iter()
        .filter(|s| bad_name(s) || !folder.join(s).is_file())
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    Ok(shards.iter().map(|s| folder.join(s)).collect())
}

fn summarize(files: &[PathBuf], dtype: LoadDtype) -> Result<WeightsSummary, String> {
    let mut bytes = 0u64;
    let mut parameters = 0u64;
    let mut stored_bytes = 0u64;
    let mut dtypes = BTreeSet::new();
    for file in files {
        bytes += std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        let header = read_header(file)
            .map_err(|e| format!("{} (unreadable safetensors header: {e})", file.display()))?;
        for (name, tensor) in header.iter().filter(|(k, _)| *k != "__metadata__") {
            let dt = tensor.get("dtype").and_then(Value::as_str);
            let shape = tensor.get("shape").and_then(Value::as_array);
            let (Some(dt), Some(shape)) = (dt, shape) else {
                return Err(format!(
                    "{} (tensor `{name}` has no dtype or shape)",
                    file.display()
                ));
            };
            let count = shape
                .iter()
                .try_fold(1u64, |n, d| d.as_u64().and_then(|d| n.checked_mul(d)))
                .ok_or_else(|| format!("{} (tensor `{name}` has a bad shape)", file.display()))?;
            parameters = parameters.saturating_add(count);
            stored_bytes = stored_bytes.saturating_add(count.saturating_mul(dtype_bytes(dt)));
            dtypes.insert(dt.to_owned());
        }
    }
    let bytes_in_dtype = match dtype {
        LoadDtype::Stored => stored_bytes,
        LoadDtype::F32 => parameters.saturating_mul(4),
        LoadDtype::Bf16 => parameters.saturating_mul(2),
    };
    Ok(WeightsSummary {
        files: files.to_vec(),
        bytes,
        parameters,
        stored_dtypes: dtypes.into_iter().collect(),
        bytes_in_dtype,
        memory_upper_bound: (bytes_in_dtype as f64 * MEMORY_FACTOR).ceil() as u64,
    })
}

fn dtype_bytes(dtype: &str) -> u64 {
    match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        _ => 1,
    }
}

/// The JSON header of a safetensors file: an 8-byte little-endian length, then JSON.
fn read_header(path: &Path) -> Result<serde_json::Map<String, Value>, String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| e.to_string())?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER_BYTES {
        return Err(format!("a header of {len} bytes"));
    }
    let mut text = vec![0u8; len as usize];
    file.read_exact(&mut text).map_err(|e| e.to_string())?;
    serde_json::from_slice(&text).map_err(|e| e.to_string())
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// `1.5 GB`-style sizes for people (powers of 1,000, as disk tools show them).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_qwen3vl")
    }

    #[test]
    fn the_fixture_folder_is_complete_and_its_memory_bound_follows_the_dtype() {
        let source = ModelSource::Folder(fixture());
        let report = check_folder(&source, LoadDtype::F32);
        assert!(report.complete(), "{report:?}");
        let roles: Vec<&str> = report.found.iter().map(|f| f.role).collect();
        assert_eq!(
            roles,
            [
                "config",
                "tokenizer",
                "image processor",
                "template",
                "weights"
            ]
        );
        let w = report.weights.unwrap();
        assert_eq!(
            w.bytes,
            std::fs::metadata(fixture().join(WEIGHTS_FILE))
                .unwrap()
                .len()
        );
        assert!(w.parameters > 0);
        assert_eq!(w.bytes_in_dtype, w.parameters * 4);
        assert_eq!(
            w.memory_upper_bound,
            (w.parameters as f64 * 4.0 * MEMORY_FACTOR).ceil() as u64
        );
        let bf16 = check_folder(&source, LoadDtype::Bf16).weights.unwrap();
        assert_eq!(bf16.bytes_in_dtype, w.parameters * 2);
    }

    #[test]
    fn a_partial_folder_lists_every_missing_file_and_the_sharded_weights_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(fixture().join(CONFIG_FILE), dir.path().join(CONFIG_FILE)).unwrap();
        std::fs::write(
            dir.path().join(WEIGHTS_INDEX_FILE),
            r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let report = check_folder(&ModelSource::Folder(dir.path().into()), LoadDtype::Stored);
        assert!(!report.complete());
        assert_eq!(report.found.len(), 1);
        let missing = report.missing.join("\n");
        for name in [
            TOKENIZER_FILE,
            PREPROCESSOR_FILE,
            "chat template",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
        ] {
            assert!(missing.contains(name), "{name} in {missing}");
        }
        let gone = check_folder(
            &ModelSource::Folder(dir.path().join("nope")),
            LoadDtype::Stored,
        );
        assert!(gone.problem.unwrap().contains("does not exist"));
    }

    #[test]
    fn weights_with_a_broken_header_are_reported_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            CONFIG_FILE,
            TOKENIZER_FILE,
            PROCESSOR_FILE,
            TEMPLATE_JINJA_FILE,
        ] {
            std::fs::copy(fixture().join(name), dir.path().join(name)).unwrap();
        }
        let source = ModelSource::Folder(dir.path().into());
        let mut bytes = u64::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        for garbage in [&b"abc"[..], &bytes, &[2, 0, 0, 0, 0, 0, 0, 0, b'[', b']']] {
            std::fs::write(dir.path().join(WEIGHTS_FILE), garbage).unwrap();
            let report = check_folder(&source, LoadDtype::F32);
            assert!(!report.complete());
            assert!(report.weights.is_none());
            assert!(
                report
                    .missing
                    .iter()
                    .any(|m| m.contains("unreadable safetensors header")),
                "{report:?}"
            );
        }
    }

    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
        assert_eq!(human_bytes(4_400_000_000), "4.4 GB");
    }
}
