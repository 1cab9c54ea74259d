//! A run folder's `manifest.json`: what the run asked, of which data, with what.
//!
//! [`RunManifest::fingerprint`] covers everything that changes answers (dataset
//! content, selection, pipeline settings, reference source, knowledge version, prompt
//! templates, models); resume refuses a different fingerprint unless forced, and merge
//! only joins shards of one fingerprint. Endpoint URLs, concurrency and times are not
//! part of it: moving a run to another server of the same model is fine.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::echo::PipelineSettings;
use crate::echo::preflight::InputCheck;
use crate::echo::protocol::Protocol;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRef {
    #[serde(with = "crate::util::serde_path")]
    pub path: PathBuf,
    /// SHA-256 of the mmad.json bytes.
    pub sha256: String,
    #[serde(with = "crate::util::serde_path")]
    pub root: PathBuf,
}

/// Which questions of the dataset the run covers (before sharding).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Selection {
    /// Dataset folders (`DS-MVTec`, `VisA`, ...); empty: all.
    pub datasets: Vec<String>,
    pub categories: Vec<String>,
    /// MMAD type names; empty: all.
    pub types: Vec<String>,
    pub limit: Option<usize>,
    /// Only these questions (dataset positions, as in the journal's `index`); empty:
    /// all. A knowledge re-run asks exactly the questions of an earlier run that an
    /// edit reaches. Left out of the file when empty, so the fingerprints of runs
    /// made before the field existed do not change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub indices: Vec<usize>,
}

/// `--shard I/N`: this run holds the images whose shard number is `index` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// Where a shard ran, when it took its shard from a job scheduler (`--shard auto`):
/// enough to find the job's own logs when a shard misbehaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The machine's host name.
    pub host: String,
    /// `slurm` or `kubernetes`.
    pub scheduler: String,
    /// The scheduler's job id (Slurm's `SLURM_ARRAY_JOB_ID`, Kubernetes' pod name),
    /// when it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

/// An endpoint as recorded: never its key, only the variable's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointSummary {
    pub name: String,
    pub base_url: String,
    pub model: String,
    #[serde(default)]
    pub api_key_env: Option<String>,
    pub concurrency: usize,
    /// The price the run used for this endpoint's tokens (cost, `--max-cost`);
    /// absent when none was known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<crate::mllm::Price>,
    /// For a model run in-process (`local:`), the SHA-256 of its folder's files
    /// (`local::folder_sha256`): part of the fingerprint, so a resume with other
    /// weights is refused. Absent for servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeRef {
    #[serde(with = "crate::util::serde_path")]
    pub path: PathBuf,
    /// The knowledge base's content hash (the version in use).
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryRef {
    #[serde(with = "crate::util::serde_path")]
    pub path: PathBuf,
    pub embedder: String,
    pub items: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    pub format: u32,
    pub tool_version: String,
    /// RFC 3339 UTC.
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    pub dataset: DatasetRef,
    pub selection: Selection,
    #[serde(default)]
    pub shard: Option<Shard>,
    /// Questions this run (this shard) covers.
    pub question_count: usize,
    pub pipeline: PipelineSettings,
    /// Where references come from: `retrieved`, `similar`, `random` or `none`.
    pub template: String,
    #[serde(default)]
    pub memory: Option<MemoryRef>,
    #[serde(default)]
    pub knowledge: Option<KnowledgeRef>,
    #[serde(default)]
    pub condensed: Option<KnowledgeRef>,
    pub prompt_templates_hash: String,
    pub endpoints: Vec<EndpointSummary>,
    /// Send every question of one image to the same endpoint.
    #[serde(default)]
    pub image_affinity: bool,
    /// A note for people (the GUI's run name, an ablation's purpose).
    #[serde(default)]
    pub note: String,
    /// Settings this folder was forced to continue from, oldest first. Records made
    /// before a forced resume answered under the earlier settings, so a run with
    /// entries here mixes settings and says so wherever it is shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forced_from: Vec<ForcedResume>,
    /// Selected questions whose plan reads an input that was not there (knowledge
    /// for their category, memory images, template files), asked anyway because
    /// the user allowed it. `None`: every question had its inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_inputs: Option<InputCheck>,
    /// Host and scheduler of a shard that took its shard from the environment.
    /// Not part of the fingerprint: shards of one run run on many machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// The test-time protocol (samples, rotations, shuffle, logprobs; see
    /// `echo::protocol`); absent for a plain run, so manifests written before
    /// protocols read, write and fingerprint as they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

/// One `--force` resume under settings that differ from the folder's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForcedResume {
    /// When the forced resume started (RFC 3339 UTC).
    pub at: String,
    /// The earlier settings' fingerprint; `None` when their manifest was unreadable.
    pub fingerprint: Option<String>,
    /// What differed, named for a person (see [`RunManifest::differences`]).
    pub differences: Vec<String>,
    /// Journal records at that moment, all made under earlier settings.
    pub records_before: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read the run manifest {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the run manifest {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "the run manifest names the {what} {}, which is not an absolute path free of `..` and NUL as a run records it; it is not followed",
        path.display()
    )]
    BadPath { what: &'static str, path: PathBuf },
    #[error("cannot write the run manifest {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What must be equal for a resume to continue, or for shards to merge.
#[derive(Serialize)]
struct Fingerprinted<'a> {
    dataset_sha256: &'a str,
    selection: &'a Selection,
    pipeline: &'a PipelineSettings,
    template: &'a str,
    memory: Option<(&'a str, usize)>,
    knowledge: Option<&'a str>,
    condensed: Option<&'a str>,
    prompt_templates_hash: &'a str,
    models: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<&'a Protocol>,
    /// Local models' folder hashes; empty (and absent, so fingerprints of runs
    /// against servers are unchanged) otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    local_models: Vec<&'a str>,
}

impl RunManifest {
    pub fn path_in(run_dir: &Path) -> PathBuf {
        run_dir.join(MANIFEST_FILE)
    }

    /// SHA-256 over the answer-changing settings (see the module docs).
    pub fn fingerprint(&self) -> String {
        let mut models: Vec<&str> = self.endpoints.iter().map(|e| e.model.as_str()).collect();
        models.sort_unstable();
        models.dedup();
        let mut local_models: Vec<&str> = self
            .endpoints
            .iter()
            .filter_map(|e| e.model_sha256.as_deref())
            .collect();
        local_models.sort_unstable();
        local_models.dedup();
        let f = Fingerprinted {
            dataset_sha256: &self.dataset.sha256,
            selection: &self.selection,
            pipeline: &self.pipeline,
            template: &self.template,
            memory: self.memory.as_ref().map(|m| (m.embedder.as_str(), m.items)),
            knowledge: self.knowledge.as_ref().map(|k| k.version.as_str()),
            condensed: self.condensed.as_ref().map(|k| k.version.as_str()),
            prompt_templates_hash: &self.prompt_templates_hash,
            models,
            protocol: self.protocol.as_ref(),
            local_models,
        };
        // Strings, numbers and paths (stored losslessly, see `util::serde_path`):
        // nothing here can fail to serialise.
        let bytes = serde_json::to_vec(&f).expect("manifest fields serialize");
        crate::util::fsx::sha256_bytes(&bytes)
    }

    /// For people, when questions were asked without an input their plan reads:
    /// how many, and what was missing for which category. `None` when none were.
    pub fn missing_inputs_note(&self) -> Option<String> {
        let check = self.missing_inputs.as_ref().filter(|c| c.questions > 0)?;
        let each: Vec<String> = check
            .gaps
            .iter()
            .map(|g| format!("{} ({} questions)", g.what(), g.questions))
            .collect();
        Some(format!(
            "{} of {} questions ran without an input their plan reads: {}",
            check.questions,
            self.question_count,
            each.join("; ")
        ))
    }

    /// For people, when the run mixes settings: each forced resume, when, after how
    /// many records, and what differed. `None` for a run made under one set.
    pub fn mixed_settings_note(&self) -> Option<String> {
        if self.forced_from.is_empty() {
            return None;
        }
        let each: Vec<String> = self
            .forced_from
            .iter()
            .map(|f| {
                format!(
                    "at {} after {} record(s) ({})",
                    f.at,
                    f.records_before,
                    f.differences.join(", ")
                )
            })
            .collect();
        Some(format!(
            "this run mixes settings: it was forced to continue under new ones {}; records made before were answered under the earlier settings",
            each.join("; ")
        ))
    }

    /// The settings that differ from `other` in a way that changes answers, named for
    /// a person (empty when the fingerprints agree).
    pub fn differences(&self, other: &RunManifest) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |what: &str, same: bool| {
            if !same {
                out.push(what.to_string());
            }
        };
        check(
            "dataset file content",
            self.dataset.sha256 == other.dataset.sha256,
        );
        check("question selection", self.selection == other.selection);
        check("pipeline settings", self.pipeline == other.pipeline);
        check("reference source", self.template == other.template);
        check(
            "reference memory",
            self.memory.as_ref().map(|m| (&m.embedder, m.items))
                == other.memory.as_ref().map(|m| (&m.embedder, m.items)),
        );
        check(
            "knowledge version",
            self.knowledge.as_ref().map(|k| &k.version)
                == other.knowledge.as_ref().map(|k| &k.version),
        );
        check(
            "condensed knowledge version",
            self.condensed.as_ref().map(|k| &k.version)
                == other.condensed.as_ref().map(|k| &k.version),
        );
        check(
            "prompt templates",
            self.prompt_templates_hash == other.prompt_templates_hash,
        );
        let models = |m: &RunManifest| {
            let mut v: Vec<String> = m.endpoints.iter().map(|e| e.model.clone()).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        check("models", models(self) == models(other));
        let local_models = |m: &RunManifest| {
            let mut v: Vec<Option<String>> =
                m.endpoints.iter().map(|e| e.model_sha256.clone()).collect();
            v.sort_unstable();
            v
        };
        check(
            "local model files",
            local_models(self) == local_models(other),
        );
        check("test-time protocol", self.protocol == other.protocol);
        out
    }

    /// The files a run read are recorded as absolute paths (canonical when they
    /// existed). A manifest naming anything else was edited or not written by a run,
    /// and what it names is refused before a new run reads it or sends from it.
    pub fn check_paths(&self) -> Result<(), ManifestError> {
        let mut named: Vec<(&'static str, &Path)> = vec![
            ("dataset file", &self.dataset.path),
            ("dataset root", &self.dataset.root),
        ];
        if let Some(m) = &self.memory {
            named.push(("reference memory", &m.path));
        }
        if let Some(k) = &self.knowledge {
            named.push(("knowledge file", &k.path));
        }
        if let Some(k) = &self.condensed {
            named.push(("condensed knowledge file", &k.path));
        }
        for (what, path) in named {
            let plain = path.is_absolute()
                && !path.components().any(|c| c == Component::ParentDir)
                && !path.as_os_str().as_encoded_bytes().contains(&0);
            if !plain {
                return Err(ManifestError::BadPath {
                    what,
                    path: path.to_owned(),
                });
            }
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<RunManifest, ManifestError> {
        let text = crate::util::fsx::read_text_limited(path, crate::util::fsx::TEXT_FILE_LIMIT)
            .map_err(|source| ManifestError::Read {
                path: path.to_owned(),
                source,
            })?;
        serde_json::from_str(&text).map_err(|e| ManifestError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Atomic: a reader sees the old manifest or the new one, never half of one.
    /// A symlink in the manifest's place is refused, never written through: a run
    /// folder holds no links of ours, so one there was planted.
    pub fn save(&self, path: &Path) -> Result<(), ManifestError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| ManifestError::Write {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?;
        bytes.push(b'\n');
        crate::util::fsx::atomic_write_no_follow(path, &bytes).map_err(|source| {
            ManifestError::Write {
                path: path.to_owned(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> RunManifest {
        RunManifest {
            format: MANIFEST_FORMAT,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            started_at: "2026-11-22T08:00:00Z".into(),
            finished_at: None,
            dataset: DatasetRef {
                path: "assets/sample/mmad.json".into(),
                sha256: "ab".repeat(32),
                root: "assets/sample".into(),
            },
            selection: Selection::default(),
            shard: None,
            question_count: 210,
            pipeline: PipelineSettings::default(),
            template: "retrieved".into(),
            memory: None,
            knowledge: Some(KnowledgeRef {
                path: "knowledge/domain_knowledge.json".into(),
                version: "k1".into(),
            }),
            condensed: None,
            prompt_templates_hash: "p1".into(),
            endpoints: vec![EndpointSummary {
                name: "local".into(),
                base_url: "http://127.0.0.1:8000/v1".into(),
                model: "m".into(),
                api_key_env: Some("OPENAI_API_KEY".into()),
                concurrency: 8,
                price: None,
                model_sha256: None,
            }],
            image_affinity: false,
            note: String::new(),
            forced_from: Vec::new(),
            missing_inputs: None,
            placement: None,
            protocol: None,
        }
    }

    #[test]
    fn a_plain_run_writes_no_protocol_and_a_protocol_changes_the_fingerprint() {
        let plain = sample();
        let text = serde_json::to_string_pretty(&plain).unwrap();
        assert!(!text.contains("protocol"), "{text}");
        let back: RunManifest = serde_json::from_str(&text).unwrap();
        assert_eq!(back.fingerprint(), plain.fingerprint());
        let mut circular = plain.clone();
        circular.protocol = Protocol {
            circular: true,
            ..Protocol::default()
        }
        .recorded();
        assert_ne!(circular.fingerprint(), plain.fingerprint());
        assert_eq!(plain.differences(&circular), ["test-time protocol"]);
        let mut sampled = plain.clone();
        sampled.protocol = Protocol {
            samples: 5,
            temperature: Some(0.7),
            seed: Some(1),
            ..Protocol::default()
        }
        .recorded();
        let mut reseeded = sampled.clone();
        reseeded.protocol.as_mut().unwrap().seed = Some(2);
        assert_ne!(sampled.fingerprint(), reseeded.fingerprint());
        let text = serde_json::to_string(&sampled).unwrap();
        let back: RunManifest = serde_json::from_str(&text).unwrap();
        assert_eq!(back.protocol, sampled.protocol);
        assert_eq!(back.fingerprint(), sampled.fingerprint());
    }

    #[test]
    fn an_empty_index_list_leaves_older_fingerprints_alone() {
        let plain = serde_json::to_string(&Selection::default()).unwrap();
        assert!(!plain.contains("indices"), "{plain}");
        let a = sample();
        let mut picked = a.clone();
        picked.selection.indices = vec![3, 5];
        assert_ne!(a.fingerprint(), picked.fingerprint());
        assert_eq!(a.differences(&picked), ["question selection"]);
        let back: Selection =
            serde_json::from_str(&serde_json::to_string(&picked.selection).unwrap()).unwrap();
        assert_eq!(back.indices, [3, 5]);
    }

    #[test]
    fn fingerprint_ignores_where_and_when_but_not_what() {
        let a = sample();
        let mut moved = a.clone();
        moved.endpoints[0].base_url = "http://10.0.0.2:8000/v1".into();
        moved.endpoints[0].concurrency = 64;
        moved.started_at = "2026-11-23T00:00:00Z".into();
        moved.shard = Some(Shard { index: 1, count: 4 });
        assert_eq!(a.fingerprint(), moved.fingerprint());
        assert!(a.differences(&moved).is_empty());

        let mut edited = a.clone();
        edited.knowledge.as_mut().unwrap().version = "k2".into();
        edited.pipeline.preset = "mmad".into();
        assert_ne!(a.fingerprint(), edited.fingerprint());
        assert_eq!(
            a.differences(&edited),
            ["pipeline settings", "knowledge version"]
        );
    }

    #[test]
    fn saves_and_loads_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = RunManifest::path_in(dir.path());
        let m = sample();
        m.save(&path).unwrap();
        assert_eq!(RunManifest::load(&path).unwrap(), m);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("OPENAI_API_KEY") && !text.contains("api_key\""));
    }
}
