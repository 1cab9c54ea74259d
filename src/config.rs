//! The settings file (`settings.toml` in the workspace), shared by the CLI and the GUI.
//!
//! It holds choices, never secrets: an endpoint names the environment variable that
//! holds its API key ([`EndpointConfig::api_key_env`]), not the key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::echo::PipelineSettings;
use crate::mllm::EndpointConfig;

/// The settings file's name inside the workspace.
pub const SETTINGS_FILE: &str = "settings.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the settings file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the settings file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write the settings file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The dataset the app opens and runs use by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetSettings {
    /// An MMAD-style `mmad.json`.
    #[serde(with = "crate::util::serde_path")]
    pub mmad_json: PathBuf,
    /// The folder its image keys are relative to.
    #[serde(with = "crate::util::serde_path")]
    pub root: PathBuf,
}

impl Default for DatasetSettings {
    /// The bundled sample dataset.
    fn default() -> Self {
        let sample = crate::assets_dir().join("sample");
        DatasetSettings {
            mmad_json: sample.join("mmad.json"),
            root: sample,
        }
    }
}

/// The Reference Extractor's embedder and memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReferenceSettings {
    /// An [`crate::vision::EmbedderSpec`]: `descriptor` (weight-free), `clip:FOLDER` or
    /// `clip:hf:ORG/NAME` (from the local Hugging Face cache).
    pub embedder: String,
    /// A memory folder built with `memory build`; `None` builds one in memory from the
    /// dataset's normal images when it is first needed.
    #[serde(with = "crate::util::serde_path::option")]
    pub memory: Option<PathBuf>,
    /// The folder whose defect-free images the in-memory build embeds (MMAD root
    /// layout `*/*/train/good/*`, or one MVTec-style dataset); `None`: the dataset root.
    #[serde(with = "crate::util::serde_path::option")]
    pub build_root: Option<PathBuf>,
    /// How many references the top-k strip and the trace keep.
    pub top_k: usize,
}

impl Default for ReferenceSettings {
    fn default() -> Self {
        ReferenceSettings {
            embedder: "descriptor".into(),
            memory: None,
            build_root: None,
            top_k: 5,
        }
    }
}

/// Everything the settings file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub dataset: DatasetSettings,
    /// The knowledge base (default: the bundled one).
    #[serde(with = "crate::util::serde_path::option")]
    pub knowledge: Option<PathBuf>,
    /// Endpoints in the order the user listed them; runs may use several.
    pub endpoints: Vec<EndpointConfig>,
    /// The endpoint Inspect asks (an index into `endpoints`).
    pub active_endpoint: usize,
    /// The local vision-language model chosen in Settings: a folder, or
    /// `hf:ORG/NAME[@REV]` in the Hugging Face cache. Absent in files written
    /// before local models, and then not written, so they re-save unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_model: Option<String>,
    pub reference: ReferenceSettings,
    pub pipeline: PipelineSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            dataset: DatasetSettings::default(),
            knowledge: None,
            endpoints: vec![EndpointConfig::default()],
            active_endpoint: 0,
            local_model: None,
            reference: ReferenceSettings::default(),
            pipeline: PipelineSettings::default(),
        }
    }
}

impl Settings {
    /// The settings file of a workspace.
    pub fn path_in(workspace: &Path) -> PathBuf {
        workspace.join(SETTINGS_FILE)
    }

    /// Reads a settings file; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text =
            match crate::util::fsx::read_text_limited(path, crate::util::fsx::TEXT_FILE_LIMIT) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Settings::default());
                }
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: path.to_owned(),
                        source,
                    });
                }
            };
        Self::from_toml(&text, path)
    }

    /// Parses settings text; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Settings, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("settings always serialize to TOML")
    }

    /// Writes the file atomically (a crash leaves the old or the new file, whole).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let write_err = |source| ConfigError::Write {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(write_err)?;
        }
        // Not `to_toml`: a value TOML cannot hold must be an error here, never a panic.
        let text = toml::to_string_pretty(self).map_err(|e| write_err(std::io::Error::other(e)))?;
        crate::util::fsx::atomic_write(path, text.as_bytes()).map_err(write_err)
    }

    /// The endpoint Inspect asks, if any is configured.
    pub fn active_endpoint(&self) -> Option<&EndpointConfig> {
        self.endpoints
            .get(self.active_endpoint)
            .or_else(|| self.endpoints.first())
    }

    /// The folder a memory is built from when no memory folder is set.
    pub fn reference_build_root(&self) -> PathBuf {
        self.reference
            .build_root
            .clone()
            .unwrap_or_else(|| self.dataset.root.clone())
    }

    /// The knowledge base to load: the chosen file or the bundled one.
    pub fn knowledge_path(&self) -> PathBuf {
        self.knowledge
            .clone()
            .unwrap_or_else(crate::bundled_knowledge_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_toml() {
        let mut s = Settings::default();
        s.endpoints.push(EndpointConfig {
            name: "hosted".into(),
            base_url: "https://example.invalid/v1".into(),
            model: "gpt-4o".into(),
            api_key_env: Some("OPENAI_API_KEY".into()),
            ..EndpointConfig::default()
        });
        s.active_endpoint = 1;
        s.reference.memory = Some("memories/mvtec".into());
        s.pipeline.preset = "mmad".into();
        let text = s.to_toml();
        let back = Settings::from_toml(&text, Path::new("settings.toml")).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.active_endpoint().unwrap().name, "hosted");
    }

    #[test]
    fn an_endpoint_price_is_optional_and_left_out_when_unset() {
        let plain = Settings::default().to_toml();
        assert!(!plain.contains("price"), "{plain}");
        let mut s = Settings::default();
        s.endpoints[0].price_prompt_per_million = Some(2.5);
        s.endpoints[0].price_completion_per_million = Some(10.0);
        let text = s.to_toml();
        assert!(text.contains("price_prompt_per_million = 2.5"), "{text}");
        let back = Settings::from_toml(&text, Path::new("settings.toml")).unwrap();
        let price = back.endpoints[0].price().unwrap();
        assert_eq!(
            (price.prompt_per_million, price.completion_per_million),
            (2.5, 10.0)
        );
        // Half a price is no price: a cost from one half would be silently low.
        s.endpoints[0].price_completion_per_million = None;
        assert!(s.endpoints[0].price().is_none());
    }

    #[test]
    fn the_local_model_is_written_only_once_chosen_and_read_back() {
        let default_text = Settings::default().to_toml();
        assert!(!default_text.contains("local_model"), "{default_text}");
        let s = Settings {
            local_model: Some("hf:Qwen/Qwen3-VL-2B-Instruct".into()),
            ..Settings::default()
        };
        let text = s.to_toml();
        assert!(
            text.contains("local_model = \"hf:Qwen/Qwen3-VL-2B-Instruct\""),
            "{text}"
        );
        assert_eq!(Settings::from_toml(&text, Path::new("s.toml")).unwrap(), s);
    }

    #[test]
    fn missing_file_gives_defaults_and_save_is_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = Settings::path_in(&dir.path().join("ws"));
        assert_eq!(Settings::load(&path).unwrap(), Settings::default());
        let mut s = Settings::default();
        s.reference.top_k = 9;
        s.save(&path).unwrap();
        assert_eq!(Settings::load(&path).unwrap().reference.top_k, 9);
    }

    #[test]
    fn a_bad_file_names_itself_and_the_field() {
        let err = Settings::from_toml(
            "[reference]\ntop_k = \"five\"\n",
            Path::new("ws/settings.toml"),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("ws/settings.toml") && msg.contains("top_k"),
            "{msg}"
        );
    }

    #[test]
    fn no_key_is_ever_part_of_the_file() {
        let text = Settings::default().to_toml();
        assert!(!text.to_lowercase().contains("api_key ="), "{text}");
    }

    #[cfg(unix)]
    #[test]
    fn paths_under_a_non_utf8_name_are_saved_and_read_back_exactly() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
        let mut s = Settings::default();
        s.dataset.mmad_json = odd.join("mmad.json");
        s.dataset.root = odd.clone();
        s.knowledge = Some(odd.join(std::ffi::OsStr::from_bytes(b"k\xf6.json")));
        s.reference.memory = Some(odd.join("memory"));
        s.pipeline.prompts_dir = Some(odd.join("prompts"));
        let path = Settings::path_in(dir.path());
        s.save(&path).unwrap();
        assert_eq!(Settings::load(&path).unwrap(), s);
        // Plain paths stay plain strings, as files written before read.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("unix_bytes_hex"), "{text}");
        let plain = Settings::default().to_toml();
        assert!(!plain.contains("unix_bytes_hex"), "{plain}");
    }
}
