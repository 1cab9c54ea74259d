//! Where a local model comes from (a folder, or a repository in the local
//! Hugging Face cache) and which of its files hold what: the chat template and
//! the image processor settings each live in one of several files depending on
//! how the folder was saved.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::LocalError;
use crate::vision::clip::{hf_cache_root, hf_snapshot};

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// transformers 5's `save_pretrained`.
pub const TEMPLATE_JINJA_FILE: &str = "chat_template.jinja";
/// Released Qwen checkpoints.
pub const TEMPLATE_JSON_FILE: &str = "chat_template.json";
/// Released Qwen checkpoints.
pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";
/// transformers 5's `save_pretrained` (settings under `image_processor`).
pub const PROCESSOR_FILE: &str = "processor_config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";

/// The repository named in errors when a folder does not say where it came from.
pub const DEFAULT_REPO: &str = "Qwen/Qwen3-VL-2B-Instruct";

/// Where to find a local model. Nothing is ever downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Folder(PathBuf),
    /// A repository in the local Hugging Face cache, found as
    /// [`crate::vision::clip::ClipSource::HfCache`] finds CLIP checkpoints.
    HfCache {
        repo: String,
        /// Branch, tag or commit; `main` when absent.
        revision: Option<String>,
        /// The cache root; when absent, the environment's as `huggingface_hub` reads it.
        cache_dir: Option<PathBuf>,
    },
}

impl ModelSource {
    /// `hf:ORG/NAME[@REVISION]` names a cached repository; anything else is a folder.
    pub fn parse(spec: &str) -> ModelSource {
        match spec.strip_prefix("hf:") {
            Some(rest) => {
                let (repo, revision) = match rest.split_once('@') {
                    Some((repo, rev)) => (repo, Some(rev.to_owned())),
                    None => (rest, None),
                };
                ModelSource::HfCache {
                    repo: repo.to_owned(),
                    revision,
                    cache_dir: None,
                }
            }
            None => ModelSource::Folder(PathBuf::from(spec)),
        }
    }

    /// The Hugging Face repository to fetch missing files from, when known.
    fn repo(&self) -> Option<&str> {
        match self {
            ModelSource::Folder(_) => None,
            ModelSource::HfCache { repo, .. } => Some(repo),
        }
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Folder(p) => write!(f, "{}", p.display()),
            ModelSource::HfCache { repo, revision, .. } => {
                write!(f, "hf:{repo}@{}", revision.as_deref().unwrap_or("main"))
            }
        }
    }
}

/// A model folder whose input-side files are all present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDir {
    pub folder: PathBuf,
    /// The Hugging Face repository it is (or claims to be) a copy of.
    pub repo: String,
    pub template_file: PathBuf,
    pub processor_file: PathBuf,
}

impl ModelDir {
    /// Resolves `source` and checks that it holds everything needed to build
    /// the model's inputs (the weights are checked by [`ModelDir::weights`]); a
    /// missing file is named together with the repository to fetch it from.
    pub fn open(source: &ModelSource) -> Result<ModelDir, LocalError> {
        let folder = match source {
            ModelSource::Folder(folder) => {
                if !folder.is_dir() {
                    return Err(LocalError::NoFolder {
                        folder: folder.clone(),
                    });
                }
                folder.clone()
            }
            ModelSource::HfCache {
                repo,
                revision,
                cache_dir,
            } => {
                let fail = |detail: String| LocalError::NotInHfCache {
                    repo: repo.clone(),
                    revision: revision.clone().unwrap_or_else(|| "main".into()),
                    detail,
                };
                let root = hf_cache_root(
                    cache_dir.as_deref(),
                    |name| std::env::var_os(name),
                    dirs::home_dir(),
                )
                .ok_or_else(|| {
                    fail("no cache folder is configured (HF_HUB_CACHE and HF_HOME are unset and there is no home directory)".into())
                })?;
                hf_snapshot(&root, repo, revision.as_deref(), &[CONFIG_FILE]).map_err(fail)?
            }
        };
        let repo = source
            .repo()
            .map(str::to_owned)
            .or_else(|| name_in_config(&folder))
            .unwrap_or_else(|| DEFAULT_REPO.to_owned());
        let first = |names: &[&str]| names.iter().map(|n| folder.join(n)).find(|p| p.is_file());
        let mut missing = Vec::new();
        for required in [CONFIG_FILE, TOKENIZER_FILE] {
            if !folder.join(required).is_file() {
                missing.push(required.to_owned());
            }
        }
        let processor_file = first(&[PREPROCESSOR_FILE, PROCESSOR_FILE]);
        if processor_file.is_none() {
            missing.push(format!("{PREPROCESSOR_FILE} (or {PROCESSOR_FILE})"));
        }
        let template_file = first(&[TEMPLATE_JINJA_FILE, TEMPLATE_JSON_FILE])
            .or_else(|| first(&[TOKENIZER_CONFIG_FILE]).filter(|p| has_template(p)));
        if template_file.is_none() {
            missing.push(format!(
                "a chat template ({TEMPLATE_JINJA_FILE}, {TEMPLATE_JSON_FILE}, or `chat_template` in {TOKENIZER_CONFIG_FILE})"
            ));
        }
        match (template_file, processor_file) {
            (Some(template_file), Some(processor_file)) if missing.is_empty() => Ok(ModelDir {
                folder,
                repo,
                template_file,
                processor_file,
            }),
            _ => Err(LocalError::MissingFiles {
                folder,
                missing,
                repo,
            }),
        }
    }

    /// The weights: `model.safetensors`, or the shard index of a sharded checkpoint.
    pub fn weights(&self) -> Result<PathBuf, LocalError> {
        [WEIGHTS_FILE, WEIGHTS_INDEX_FILE]
            .iter()
            .map(|n| self.folder.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| LocalError::MissingFiles {
                folder: self.folder.clone(),
                missing: vec![format!(
                    "{WEIGHTS_FILE} (or {WEIGHTS_INDEX_FILE} and its shards)"
                )],
                repo: self.repo.clone(),
            })
    }

    /// The chat template's source text.
    pub fn chat_template(&self) -> Result<String, LocalError> {
        let path = &self.template_file;
        if path.extension().is_some_and(|e| e == "jinja") {
            return read_text(path);
        }
        let json = read_json(path)?;
        template_in(&json).ok_or_else(|| LocalError::Config {
            path: path.clone(),
            detail:
                "`chat_template` is missing or is not a string (or a list with a `default` entry)"
                    .into(),
        })
    }

    /// The image processor settings object: the whole of
    /// `preprocessor_config.json`, or `image_processor` in `processor_config.json`.
    pub fn image_processor_json(&self) -> Result<Value, LocalError> {
        let json = read_json(&self.processor_file)?;
        if self
            .processor_file
            .file_name()
            .is_some_and(|n| n == PROCESSOR_FILE)
        {
            return json
                .get("image_processor")
                .cloned()
                .ok_or_else(|| LocalError::Config {
                    path: self.processor_file.clone(),
                    detail: "no `image_processor` object".into(),
                });
        }
        Ok(json)
    }

    /// `tokenizer_config.json`, or an empty object where the folder has none.
    pub fn tokenizer_config(&self) -> Result<Value, LocalError> {
        let path = self.folder.join(TOKENIZER_CONFIG_FILE);
        if path.is_file() {
            read_json(&path)
        } else {
            Ok(Value::Object(Default::default()))
        }
    }
}

/// `chat_template` as a string, or the `default` one of a list of named templates.
fn template_in(json: &Value) -> Option<String> {
    match json.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(named) => named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

fn has_template(tokenizer_config: &Path) -> bool {
    read_json(tokenizer_config).is_ok_and(|j| template_in(&j).is_some())
}

/// `_name_or_path` from config.json when it looks like a hub id (`ORG/NAME`).
fn name_in_config(folder: &Path) -> Option<String> {
    let json = read_json(&folder.join(CONFIG_FILE)).ok()?;
    let name = json.get("_name_or_path")?.as_str()?;
    let parts: Vec<&str> = name.split('/').collect();
    (parts.len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != ".." && *p != "."))
    .then(|| name.to_owned())
}

pub(super) fn read_text(path: &Path) -> Result<String, LocalError> {
    std::fs::read_to_string(path).map_err(|source| LocalError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn read_json(path: &Path) -> Result<Value, LocalError> {
    serde_json::from_str(&read_text(path)?).map_err(|source| LocalError::Json {
        path: path.to_path_buf(),
        source,
    })
}
