//! Where a checkpoint comes from: a folder or the local Hugging Face cache
//! layout, and reading what is in it (config, preprocessing, tensor headers,
//! the weights' digest) before anything is built.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_transformers::models::clip::text_model::Activation;
use candle_transformers::models::clip::vision_model::ClipVisionConfig;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::model::ClipModelConfig;
use super::{CandleContext, ClipError};
use crate::vision::preprocess::ClipPreprocess;

/// File names of a Hugging Face CLIP checkpoint.
pub(super) const CONFIG_FILE: &str = "config.json";
pub(super) const WEIGHTS_FILE: &str = "model.safetensors";
pub(super) const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

/// Where to find a CLIP checkpoint (`config.json` + `model.safetensors`, and
/// optionally `preprocessor_config.json`). Nothing is ever downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClipSource {
    /// A folder holding the checkpoint files.
    Folder(PathBuf),
    /// A model already in the local Hugging Face cache (as left by
    /// `hf download` or any `from_pretrained`).
    HfCache {
        /// Repository id, e.g. `openai/clip-vit-base-patch16`.
        repo: String,
        /// Branch, tag or commit; `main` when absent.
        revision: Option<String>,
        /// Cache root (the folder holding `models--ORG--NAME`); when absent,
        /// `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
        /// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`,
        /// the same order as `huggingface_hub`.
        cache_dir: Option<PathBuf>,
    },
}

impl ClipSource {
    /// The folder that holds the checkpoint files.
    pub fn resolve(&self) -> Result<PathBuf, ClipError> {
        match self {
            ClipSource::Folder(folder) => Ok(folder.clone()),
            ClipSource::HfCache {
                repo,
                revision,
                cache_dir,
            } => {
                let root = hf_cache_root(
                    cache_dir.as_deref(),
                    |name| std::env::var_os(name),
                    dirs::home_dir(),
                )
                .ok_or_else(|| ClipError::NotInHfCache {
                    repo: repo.clone(),
                    revision: revision.clone().unwrap_or_else(|| "main".into()),
                    detail: "no cache folder is configured (HF_HUB_CACHE and HF_HOME are \
                             unset and there is no home directory)"
                        .into(),
                })?;
                resolve_hf_snapshot(&root, repo, revision.as_deref())
            }
        }
    }
}

impl ClipSource {
    /// Checks a checkpoint without loading it: the folder resolves, `config.json`
    /// reads, and `model.safetensors` holds every tensor the config needs with the
    /// right shapes (its header only: no hashing, no copying). Fast enough to run as
    /// a path is typed; says what it found.
    pub fn check_files(&self) -> Result<String, ClipError> {
        let folder = self.resolve()?;
        let config_path = folder.join(CONFIG_FILE);
        let config = ClipModelConfig::from_hf_json(&read_json(&config_path)?, &config_path)?;
        let weights = folder.join(WEIGHTS_FILE);
        // SAFETY: as in `ClipEmbedder::load_with`; only the header is read here.
        let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::new(&weights) }
            .context(|| format!("cannot open {} as safetensors", weights.display()))?;
        verify_tensors(&tensors, &config, &weights)?;
        let v = &config.vision;
        Ok(format!(
            "{}: {}x{} images, patch {}, {} layers, {}-d embeddings",
            folder.display(),
            v.image_size,
            v.image_size,
            v.patch_size,
            v.num_hidden_layers,
            v.projection_dim
        ))
    }
}

impl fmt::Display for ClipSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClipSource::Folder(p) => write!(f, "{}", p.display()),
            ClipSource::HfCache { repo, revision, .. } => {
                write!(f, "hf:{repo}@{}", revision.as_deref().unwrap_or("main"))
            }
        }
    }
}

/// The Hugging Face hub cache root, in `huggingface_hub`'s order of precedence.
/// `env` and `home` are parameters so that tests need not touch the process
/// environment.
pub(crate) fn hf_cache_root(
    explicit: Option<&Path>,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    home: Option<PathBuf>,
) -> Option<PathBuf> {
    let non_empty = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    explicit
        .map(Path::to_path_buf)
        .or_else(|| non_empty("HF_HUB_CACHE"))
        .or_else(|| non_empty("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| non_empty("XDG_CACHE_HOME").map(|c| c.join("huggingface").join("hub")))
        .or_else(|| home.map(|h| h.join(".cache").join("huggingface").join("hub")))
}

/// `<root>/models--ORG--NAME/snapshots/<commit>` for `revision` (default `main`):
/// the commit is read from `refs/<revision>`, or `revision` is itself a commit
/// with a snapshot, or (no revision asked for, no `refs/main`) the only snapshot.
fn resolve_hf_snapshot(
    root: &Path,
    repo: &str,
    revision: Option<&str>,
) -> Result<PathBuf, ClipError> {
    hf_snapshot(root, repo, revision, &[CONFIG_FILE, WEIGHTS_FILE]).map_err(|detail| {
        ClipError::NotInHfCache {
            repo: repo.to_owned(),
            revision: revision.unwrap_or("main").to_owned(),
            detail,
        }
    })
}

/// [`resolve_hf_snapshot`] for any model: the snapshot folder, which must hold
/// every file in `required`; the error says what was looked for and not found.
pub(crate) fn hf_snapshot(
    root: &Path,
    repo: &str,
    revision: Option<&str>,
    required: &[&str],
) -> Result<PathBuf, String> {
    let rev = revision.unwrap_or("main");
    let fail = |detail: String| detail;
    let unsafe_part = |s: &str| s.is_empty() || s.split('/').any(|p| p.is_empty() || p == "..");
    if unsafe_part(repo) || unsafe_part(rev) || repo.contains('\\') || rev.contains('\\') {
        return Err(fail(
            "the repository id or revision is not a valid name".into(),
        ));
    }
    let model_dir = root.join(format!("models--{}", repo.replace('/', "--")));
    if !model_dir.is_dir() {
        return Err(fail(format!("{} does not exist", model_dir.display())));
    }
    let snapshots = model_dir.join("snapshots");
    let ref_file = model_dir.join("refs").join(rev);
    let commit = match std::fs::read_to_string(&ref_file) {
        Ok(text) => text.trim().to_owned(),
        Err(_) if snapshots.join(rev).is_dir() => rev.to_owned(),
        Err(_) if revision.is_none() => {
            let found = list_dirs(&snapshots);
            match found.as_slice() {
                [only] => only.clone(),
                [] => {
                    return Err(fail(format!(
                        "neither {} nor any snapshot in {} exists",
                        ref_file.display(),
                        snapshots.display()
                    )));
                }
                many => {
                    return Err(fail(format!(
                        "{} is missing and {} holds {} snapshots ({}); name the revision",
                        ref_file.display(),
                        snapshots.display(),
                        many.len(),
                        many.join(", ")
                    )));
                }
            }
        }
        Err(e) => return Err(fail(format!("cannot read {}: {e}", ref_file.display()))),
    };
    if unsafe_part(&commit) || commit.contains('/') {
        return Err(fail(format!(
            "{} does not hold a commit hash",
            ref_file.display()
        )));
    }
    let snapshot = snapshots.join(&commit);
    if !snapshot.is_dir() {
        return Err(fail(format!("{} does not exist", snapshot.display())));
    }
    for file in required {
        if !snapshot.join(file).is_file() {
            return Err(fail(format!(
                "{} is missing (only part of the model was fetched?)",
                snapshot.join(file).display()
            )));
        }
    }
    Ok(snapshot)
}

/// Names of the sub-folders of `dir`, sorted; empty when unreadable.
fn list_dirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

impl ClipModelConfig {
    /// Reads a `CLIPModel` config (`vision_config` plus a top-level
    /// `projection_dim`) or a `CLIPVisionModelWithProjection` config. Missing
    /// fields take transformers' defaults.
    ///
    /// In a full config the top-level `projection_dim` is the one that sized
    /// `visual_projection`: transformers also writes one inside `vision_config`
    /// that can be stale (its default, 512), so that one is ignored.
    pub fn from_hf_json(json: &Value, path: &Path) -> Result<Self, ClipError> {
        let bad = |message: String| ClipError::Config {
            path: path.to_owned(),
            message,
        };
        let root = json
            .as_object()
            .ok_or_else(|| bad("expected a JSON object".into()))?;
        let model_type = root.get("model_type").and_then(Value::as_str);
        if let Some(t) = model_type
            && !matches!(t, "clip" | "clip_vision_model")
        {
            return Err(bad(format!(
                "model_type is `{t}`, not a CLIP model (`clip` or `clip_vision_model`)"
            )));
        }
        let (vision, prefix) = match root.get("vision_config") {
            Some(Value::Object(v)) => (v, "vision_config."),
            Some(_) => return Err(bad("`vision_config` is not an object".into())),
            None => (root, ""),
        };
        let int = |key: &str, default: usize| -> Result<usize, ClipError> {
            match vision.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        bad(format!(
                            "`{prefix}{key}` must be a positive integer, found {v}"
                        ))
                    }),
            }
        };
        let projection_dim = match root.get("projection_dim") {
            None | Some(Value::Null) => 512,
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    bad(format!(
                        "`projection_dim` must be a positive integer, found {v}"
                    ))
                })?,
        };
        let activation = match vision.get("hidden_act") {
            None | Some(Value::Null) => "quick_gelu".to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        if activation != "quick_gelu" {
            return Err(ClipError::UnsupportedActivation {
                path: path.to_owned(),
                found: activation,
            });
        }
        let layer_norm_eps = match vision.get("layer_norm_eps") {
            None | Some(Value::Null) => 1e-5,
            Some(v) => v
                .as_f64()
                .filter(|e| *e > 0.0 && e.is_finite())
                .ok_or_else(|| {
                    bad(format!(
                        "`{prefix}layer_norm_eps` must be positive, found {v}"
                    ))
                })?,
        };
        let vision = ClipVisionConfig {
            embed_dim: int("hidden_size", 768)?,
            activation: Activation::QuickGelu,
            intermediate_size: int("intermediate_size", 3072)?,
            num_hidden_layers: int("num_hidden_layers", 12)?,
            num_attention_heads: int("num_attention_heads", 12)?,
            projection_dim,
            num_channels: int("num_channels", 3)?,
            image_size: int("image_size", 224)?,
            patch_size: int("patch_size", 32)?,
        };
        if !vision.embed_dim.is_multiple_of(vision.num_attention_heads) {
            return Err(bad(format!(
                "`{prefix}hidden_size` {} is not a multiple of `{prefix}num_attention_heads` {}",
                vision.embed_dim, vision.num_attention_heads
            )));
        }
        if vision.patch_size > vision.image_size {
            return Err(bad(format!(
                "`{prefix}patch_size` {} is larger than `{prefix}image_size` {}",
                vision.patch_size, vision.image_size
            )));
        }
        if vision.num_channels != 3 {
            return Err(bad(format!(
                "`{prefix}num_channels` is {}, but images are embedded as RGB",
                vision.num_channels
            )));
        }
        Ok(Self {
            vision,
            layer_norm_eps,
        })
    }
}

/// Finds the key prefix in front of `vision_model.` (empty for transformers'
/// own files, e.g. `clip.` or `model.` for checkpoints saved inside a wrapper)
/// and checks every required tensor's presence, dtype and shape, so that a
/// wrong file fails with one clear sentence instead of a random or garbled
/// model.
pub(super) fn verify_tensors(
    tensors: &candle_core::safetensors::MmapedSafetensors,
    cfg: &ClipModelConfig,
    path: &Path,
) -> Result<String, ClipError> {
    use crate::vision::tensor_check::{TensorProblem, check_tensors};
    check_tensors(
        tensors,
        "vision_model.embeddings.class_embedding",
        cfg.required_tensors(),
    )
    .map_err(|problem| match problem {
        TensorProblem::Missing { key } => ClipError::MissingTensor {
            path: path.to_owned(),
            key,
        },
        TensorProblem::SeveralModels { prefixes } => ClipError::Config {
            path: path.to_owned(),
            message: format!(
                "holds {} vision towers (key prefixes {prefixes:?}); keep one",
                prefixes.len()
            ),
        },
        TensorProblem::Dtype { key, dtype } => ClipError::TensorDtype {
            path: path.to_owned(),
            key,
            dtype,
        },
        TensorProblem::Shape {
            key,
            expected,
            found,
        } => ClipError::TensorShape {
            path: path.to_owned(),
            key,
            expected,
            found,
        },
    })
}

pub(super) fn read_json(path: &Path) -> Result<Value, ClipError> {
    let text = std::fs::read_to_string(path).map_err(|source| ClipError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ClipError::Json {
        path: path.to_owned(),
        source,
    })
}

/// The folder's `preprocessor_config.json` when there is one (its crop must be
/// the model's input size), else OpenAI's preprocessing at the model's input
/// size (OpenAI's `_transform(n_px)`: resize and crop to `n_px`).
pub(super) fn read_preprocess(
    folder: &Path,
    config: &ClipModelConfig,
) -> Result<ClipPreprocess, ClipError> {
    let path = folder.join(PREPROCESSOR_FILE);
    let size = config.vision.image_size;
    if !path.is_file() {
        let side = u32::try_from(size).map_err(|_| ClipError::Config {
            path: folder.join(CONFIG_FILE),
            message: format!("image_size {size} is too large"),
        })?;
        return Ok(ClipPreprocess {
            size: side,
            crop: side,
            ..ClipPreprocess::default()
        });
    }
    let preprocess =
        ClipPreprocess::from_hf_config(&read_json(&path)?).map_err(|e| ClipError::Config {
            path: path.clone(),
            message: e.to_string(),
        })?;
    if preprocess.crop as usize != size {
        return Err(ClipError::Config {
            path,
            message: format!(
                "the preprocessing crops to {c}x{c} but the model takes {size}x{size} images",
                c = preprocess.crop
            ),
        });
    }
    Ok(preprocess)
}

/// Hex SHA-256 of a file, streamed.
pub(super) fn sha256_file(path: &Path) -> Result<String, ClipError> {
    let io_err = |source| ClipError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::clip::ClipEmbedder;
    use crate::vision::clip::test_support::*;
    use crate::vision::embed::ImageEmbedder;
    use candle_core::{DType, Device, Tensor};
    use std::collections::HashMap;

    #[test]
    fn check_files_reads_headers_only_and_names_what_is_wrong() {
        let good = fixtures().join("full_p16_s32");
        let found = ClipSource::Folder(good.clone()).check_files().unwrap();
        assert!(found.contains("32x32 images, patch 16"), "{found}");
        assert!(found.ends_with("16-d embeddings"), "{found}");
        let tmp = tempfile::tempdir().unwrap();
        let err = ClipSource::Folder(tmp.path().to_path_buf())
            .check_files()
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.json"), "{err}");
        std::fs::copy(good.join(CONFIG_FILE), tmp.path().join(CONFIG_FILE)).unwrap();
        std::fs::write(tmp.path().join(WEIGHTS_FILE), b"not safetensors").unwrap();
        let err = ClipSource::Folder(tmp.path().to_path_buf())
            .check_files()
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.safetensors"), "{err}");
    }

    /// Builds `root/models--x--y` with blobs, symlinked (or copied) snapshot
    /// files and, optionally, `refs/main`.
    fn fake_hf_cache(root: &Path, commit: &str, with_ref: bool) {
        let model = root.join("models--x--y");
        let snapshot = model.join("snapshots").join(commit);
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(model.join("blobs")).unwrap();
        for (i, file) in [CONFIG_FILE, WEIGHTS_FILE, PREPROCESSOR_FILE]
            .iter()
            .enumerate()
        {
            let blob = model.join("blobs").join(format!("blob{i}"));
            std::fs::copy(fixtures().join("full_p16_s32").join(file), &blob).unwrap();
            #[cfg(unix)]
            std::os::unix::fs::symlink(&blob, snapshot.join(file)).unwrap();
            #[cfg(not(unix))]
            std::fs::copy(&blob, snapshot.join(file)).unwrap();
        }
        if with_ref {
            std::fs::create_dir_all(model.join("refs")).unwrap();
            std::fs::write(model.join("refs").join("main"), format!("{commit}\n")).unwrap();
        }
    }

    fn hf(cache: &Path, revision: Option<&str>) -> ClipSource {
        ClipSource::HfCache {
            repo: "x/y".into(),
            revision: revision.map(str::to_owned),
            cache_dir: Some(cache.to_owned()),
        }
    }

    #[test]
    fn loads_from_hf_cache_layout() {
        let cache = tempfile::tempdir().unwrap();
        fake_hf_cache(cache.path(), "0123abcd", true);
        let embedder = ClipEmbedder::load(&hf(cache.path(), None), &Device::Cpu).unwrap();
        assert_eq!(embedder.id(), load("full_p16_s32").id());
        let snapshot = cache.path().join("models--x--y/snapshots/0123abcd");
        assert_eq!(embedder.folder(), snapshot);
        // A commit hash works as a revision too.
        assert_eq!(
            hf(cache.path(), Some("0123abcd")).resolve().unwrap(),
            snapshot
        );
        let case = &reference("full_p16_s32")[0];
        let got = embedder.embed_pixel_values(&case.pixels).unwrap();
        assert!(max_abs_diff(&got[0], &case.embedding) < 1e-4);
    }

    #[test]
    fn hf_cache_without_refs_uses_the_only_snapshot() {
        let cache = tempfile::tempdir().unwrap();
        fake_hf_cache(cache.path(), "feed", false);
        let snapshot = cache.path().join("models--x--y/snapshots/feed");
        assert_eq!(hf(cache.path(), None).resolve().unwrap(), snapshot);
        // ...but not for an explicitly named revision, nor when it is ambiguous.
        let err = hf(cache.path(), Some("v2"))
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(err.contains("refs/v2") || err.contains("refs\\v2"), "{err}");
        fake_hf_cache(cache.path(), "beef", false);
        let err = hf(cache.path(), None).resolve().unwrap_err().to_string();
        assert!(err.contains("2 snapshots (beef, feed)"), "{err}");
    }

    #[test]
    fn missing_hf_cache_is_a_clear_error() {
        let cache = tempfile::tempdir().unwrap();
        let source = ClipSource::HfCache {
            repo: "openai/clip-vit-base-patch16".into(),
            revision: None,
            cache_dir: Some(cache.path().join("nowhere")),
        };
        let err = ClipEmbedder::load(&source, &Device::Cpu)
            .unwrap_err()
            .to_string();
        println!("{err}");
        assert!(
            err.contains("`openai/clip-vit-base-patch16` (revision main)"),
            "{err}"
        );
        assert!(
            err.contains("models--openai--clip-vit-base-patch16 does not exist"),
            "{err}"
        );
        assert!(err.contains("nothing is downloaded"), "{err}");
        // A snapshot without weights names the missing file.
        let model = cache.path().join("models--x--y");
        std::fs::create_dir_all(model.join("snapshots/abc")).unwrap();
        std::fs::create_dir_all(model.join("refs")).unwrap();
        std::fs::write(model.join("refs/main"), "abc").unwrap();
        std::fs::write(model.join("snapshots/abc").join(CONFIG_FILE), "{}").unwrap();
        let err = hf(cache.path(), None).resolve().unwrap_err().to_string();
        assert!(err.contains("model.safetensors is missing"), "{err}");
        let err = hf(cache.path(), Some("../x"))
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid name"), "{err}");
    }

    #[test]
    fn hf_cache_root_follows_huggingface_hub_precedence() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let home = Some(PathBuf::from("home"));
        let all = env(&[
            ("HF_HUB_CACHE", "hub"),
            ("HF_HOME", "hfhome"),
            ("XDG_CACHE_HOME", "xdg"),
        ]);
        let root = |explicit: Option<&Path>, e, h: Option<PathBuf>| hf_cache_root(explicit, e, h);
        assert_eq!(
            root(Some(Path::new("x")), all, home.clone()),
            Some("x".into())
        );
        assert_eq!(root(None, all, home.clone()), Some("hub".into()));
        let some = env(&[
            ("HF_HUB_CACHE", ""),
            ("HF_HOME", "hfhome"),
            ("XDG_CACHE_HOME", "xdg"),
        ]);
        assert_eq!(
            root(None, some, home.clone()),
            Some(Path::new("hfhome").join("hub"))
        );
        let xdg = env(&[("XDG_CACHE_HOME", "xdg")]);
        assert_eq!(
            root(None, xdg, home.clone()),
            Some(Path::new("xdg/huggingface/hub").into())
        );
        let none = env(&[]);
        assert_eq!(
            root(None, none, home),
            Some(Path::new("home/.cache/huggingface/hub").into())
        );
        assert_eq!(root(None, none, None), None);
    }

    /// Rewrites the fixture's weights with `edit` applied.
    fn edited_weights(
        name: &str,
        edit: impl FnOnce(&mut HashMap<String, Tensor>),
    ) -> tempfile::TempDir {
        let dir = copy_fixture(name);
        let path = dir.path().join(WEIGHTS_FILE);
        let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        edit(&mut tensors);
        candle_core::safetensors::save(&tensors, &path).unwrap();
        dir
    }

    #[test]
    fn wrong_shape_is_one_sentence_naming_the_key() {
        let key = "vision_model.encoder.layers.1.mlp.fc1.weight";
        let dir = edited_weights("full_p16_s32", |t| {
            t.insert(
                key.into(),
                Tensor::zeros((36, 32), DType::F32, &Device::Cpu).unwrap(),
            );
        });
        let err = load_err(dir.path());
        println!("{err}");
        assert!(err.contains(&format!("tensor `{key}`")), "{err}");
        assert!(
            err.contains("has shape [36, 32], but config.json implies [37, 32]"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn missing_class_embedding_is_an_error_not_random_values() {
        let dir = edited_weights("full_p16_s32", |t| {
            t.remove("vision_model.embeddings.class_embedding");
        });
        let err = load_err(dir.path());
        assert!(
            err.contains("no tensor `vision_model.embeddings.class_embedding`"),
            "{err}"
        );
        let dir = edited_weights("vision_p32_s64", |t| {
            t.remove("visual_projection.weight");
        });
        let err = load_err(dir.path());
        assert!(
            err.contains("no tensor `visual_projection.weight`"),
            "{err}"
        );
        let dir = edited_weights("vision_p32_s64", |t| {
            t.remove("vision_model.encoder.layers.1.self_attn.v_proj.bias");
        });
        let err = load_err(dir.path());
        assert!(
            err.contains("`vision_model.encoder.layers.1.self_attn.v_proj.bias`"),
            "{err}"
        );
    }

    #[test]
    fn integer_tensors_are_refused() {
        let key = "vision_model.post_layernorm.bias";
        let dir = edited_weights("vision_p32_s64", |t| {
            t.insert(
                key.into(),
                Tensor::zeros(16, DType::U8, &Device::Cpu).unwrap(),
            );
        });
        let err = load_err(dir.path());
        assert!(err.contains(key) && err.contains("dtype U8"), "{err}");
    }

    #[test]
    fn prefixed_keys_load() {
        let dir = edited_weights("vision_p32_s64", |t| {
            *t = t.drain().map(|(k, v)| (format!("clip.{k}"), v)).collect();
        });
        let embedder = ClipEmbedder::load(&ClipSource::Folder(dir.path().into()), &Device::Cpu);
        let embedder = embedder.unwrap();
        let case = &reference("vision_p32_s64")[1];
        let got = embedder.embed_pixel_values(&case.pixels).unwrap();
        assert!(max_abs_diff(&got[0], &case.embedding) < 1e-4);
    }

    fn edit_config(dir: &Path, edit: impl FnOnce(&mut Value)) {
        let path = dir.join(CONFIG_FILE);
        let mut json = read_json(&path).unwrap();
        edit(&mut json);
        std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
    }

    #[test]
    fn gelu_is_refused() {
        let dir = copy_fixture("full_p16_s32");
        edit_config(dir.path(), |j| {
            j["vision_config"]["hidden_act"] = "gelu".into()
        });
        let err = load_err(dir.path());
        println!("{err}");
        assert!(err.contains("`hidden_act: gelu`"), "{err}");
        assert!(
            err.contains("only `quick_gelu` (OpenAI CLIP) is implemented"),
            "{err}"
        );
        let dir = copy_fixture("vision_p32_s64");
        edit_config(dir.path(), |j| j["hidden_act"] = "gelu".into());
        assert!(load_err(dir.path()).contains("`hidden_act: gelu`"));
    }

    #[test]
    fn bad_configs_are_refused() {
        let dir = copy_fixture("full_p16_s32");
        edit_config(dir.path(), |j| j["model_type"] = "siglip".into());
        assert!(load_err(dir.path()).contains("model_type is `siglip`"));
        let dir = copy_fixture("full_p16_s32");
        edit_config(dir.path(), |j| {
            j["vision_config"]["num_attention_heads"] = 3.into()
        });
        assert!(load_err(dir.path()).contains("not a multiple"));
        let dir = copy_fixture("full_p16_s32");
        edit_config(dir.path(), |j| {
            j["vision_config"]["hidden_size"] = "big".into()
        });
        let err = load_err(dir.path());
        assert!(
            err.contains("`vision_config.hidden_size` must be a positive integer"),
            "{err}"
        );
        // The projection size is the top-level one, checked against the weights.
        let dir = copy_fixture("full_p16_s32");
        edit_config(dir.path(), |j| j["projection_dim"] = 512.into());
        let err = load_err(dir.path());
        assert!(
            err.contains("`visual_projection.weight`") && err.contains("[512, 32]"),
            "{err}"
        );
        let dir = copy_fixture("full_p16_s32");
        std::fs::write(dir.path().join(CONFIG_FILE), "{ nope").unwrap();
        assert!(load_err(dir.path()).contains("is not valid JSON"));
        let dir = tempfile::tempdir().unwrap();
        assert!(load_err(dir.path()).contains("cannot read"));
    }

    #[test]
    fn preprocessing_must_crop_to_the_model_size() {
        let dir = copy_fixture("full_p16_s32");
        let path = dir.path().join(PREPROCESSOR_FILE);
        let mut json = read_json(&path).unwrap();
        json["crop_size"] = 224.into();
        std::fs::write(&path, json.to_string()).unwrap();
        let err = load_err(dir.path());
        assert!(
            err.contains("crops to 224x224 but the model takes 32x32"),
            "{err}"
        );
        // Unsupported settings are refused by the preprocessing itself.
        json["crop_size"] = 32.into();
        json["resample"] = 2.into();
        std::fs::write(&path, json.to_string()).unwrap();
        let err = load_err(dir.path());
        assert!(
            err.contains("preprocessor_config.json") && err.contains("resample"),
            "{err}"
        );
        // Without the file: OpenAI's preprocessing at the model's size.
        std::fs::remove_file(&path).unwrap();
        let embedder = ClipEmbedder::load(&ClipSource::Folder(dir.path().into()), &Device::Cpu);
        let expected = ClipPreprocess {
            size: 32,
            crop: 32,
            ..ClipPreprocess::default()
        };
        assert_eq!(*embedder.unwrap().preprocess(), expected);
    }
}
