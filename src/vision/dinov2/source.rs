//! Where a DINOv2 checkpoint comes from (a folder or the local Hugging Face
//! cache) and what is in it: config, preprocessing, tensor names and shapes,
//! checked before anything is built.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::model::Dinov2Config;
use super::{CandleContext, Dinov2Error};
use crate::vision::clip::{hf_cache_root, hf_snapshot};
use crate::vision::preprocess::ClipPreprocess;

pub(super) const CONFIG_FILE: &str = "config.json";
pub(super) const WEIGHTS_FILE: &str = "model.safetensors";
pub(super) const PREPROCESSOR_FILE: &str = "preprocessor_config.json";
/// The preprocessing is required too: without it transformers'
/// `BitImageProcessor` falls back to OpenAI CLIP's mean and a 224 resize, not
/// DINOv2's ImageNet statistics and 256 resize.
pub(super) const REQUIRED_FILES: [&str; 3] = [CONFIG_FILE, WEIGHTS_FILE, PREPROCESSOR_FILE];

/// Where to find a DINOv2 checkpoint. Nothing is ever downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dinov2Source {
    /// A folder holding the checkpoint files.
    Folder(PathBuf),
    /// A model already in the local Hugging Face cache, found as CLIP's are
    /// (`HF_HUB_CACHE`, `HF_HOME`, ... in `huggingface_hub`'s order).
    HfCache {
        /// Repository id, e.g. `facebook/dinov2-small`.
        repo: String,
        /// Branch, tag or commit; `main` when absent.
        revision: Option<String>,
    },
}

impl Dinov2Source {
    /// Reads `PATH` or `hf:ORG/NAME[@REVISION]` (what follows `dinov2:`).
    pub fn parse(text: &str) -> Option<Self> {
        if let Some(repo) = text.strip_prefix("hf:") {
            let (repo, revision) = match repo.split_once('@') {
                Some((r, rev)) if !rev.is_empty() => (r, Some(rev.to_string())),
                Some(_) => return None,
                None => (repo, None),
            };
            if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) {
                return None;
            }
            return Some(Dinov2Source::HfCache {
                repo: repo.to_string(),
                revision,
            });
        }
        (!text.is_empty()).then(|| Dinov2Source::Folder(PathBuf::from(text)))
    }

    /// The folder that holds the checkpoint files.
    pub fn resolve(&self) -> Result<PathBuf, Dinov2Error> {
        match self {
            Dinov2Source::Folder(folder) => Ok(folder.clone()),
            Dinov2Source::HfCache { repo, revision } => {
                let not_cached = |detail: String| Dinov2Error::NotInHfCache {
                    repo: repo.clone(),
                    revision: revision.clone().unwrap_or_else(|| "main".into()),
                    detail,
                };
                let root = hf_cache_root(None, |name| std::env::var_os(name), dirs::home_dir())
                    .ok_or_else(|| {
                        not_cached(
                            "no cache folder is configured (HF_HUB_CACHE and HF_HOME are \
                             unset and there is no home directory)"
                                .into(),
                        )
                    })?;
                hf_snapshot(&root, repo, revision.as_deref(), &REQUIRED_FILES).map_err(not_cached)
            }
        }
    }
}

impl fmt::Display for Dinov2Source {
    /// As [`Dinov2Source::parse`] reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dinov2Source::Folder(p) => write!(f, "{}", p.display()),
            Dinov2Source::HfCache {
                repo,
                revision: Some(r),
            } => write!(f, "hf:{repo}@{r}"),
            Dinov2Source::HfCache {
                repo,
                revision: None,
            } => write!(f, "hf:{repo}"),
        }
    }
}

/// What [`check_folder`] found.
#[derive(Debug)]
pub(super) struct Checked {
    pub config: Dinov2Config,
    pub preprocess: ClipPreprocess,
    /// Key prefix in front of `embeddings.` (`dinov2.` in a classifier's file).
    pub prefix: String,
}

/// Checks a checkpoint folder without building the model: every file is
/// there, the config and preprocessing are ones this module computes, and the
/// weights' header holds every tensor with the shape the config implies.
pub(super) fn check_folder(folder: &Path) -> Result<Checked, Dinov2Error> {
    for file in REQUIRED_FILES {
        if !folder.join(file).is_file() {
            return Err(Dinov2Error::MissingFile {
                path: folder.join(file),
            });
        }
    }
    let config_path = folder.join(CONFIG_FILE);
    let config = config_from_json(&read_json(&config_path)?, &config_path)?;
    let pre_path = folder.join(PREPROCESSOR_FILE);
    let preprocess = ClipPreprocess::from_hf_config(&read_json(&pre_path)?).map_err(|e| {
        Dinov2Error::Config {
            path: pre_path.clone(),
            message: e.to_string(),
        }
    })?;
    if preprocess.crop < config.patch_size as u32 {
        return Err(Dinov2Error::Config {
            path: pre_path,
            message: format!(
                "the crop ({}) is smaller than one {}-pixel patch",
                preprocess.crop, config.patch_size
            ),
        });
    }
    let weights = folder.join(WEIGHTS_FILE);
    // SAFETY: only the header is read; the file is not modified meanwhile.
    let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::new(&weights) }
        .context(|| format!("cannot open {} as safetensors", weights.display()))?;
    let prefix = verify_tensors(&tensors, &config, &weights)?;
    Ok(Checked {
        config,
        preprocess,
        prefix,
    })
}

fn read_json(path: &Path) -> Result<Value, Dinov2Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Dinov2Error::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| Dinov2Error::Json {
        path: path.to_owned(),
        source,
    })
}

/// Reads a `Dinov2Config`; missing keys take transformers' defaults
/// (DINOv2-base: 768 wide, 12 layers and heads, MLP ratio 4, exact GELU,
/// epsilon 1e-6, 224-pixel input in patches of 14).
pub(super) fn config_from_json(json: &Value, path: &Path) -> Result<Dinov2Config, Dinov2Error> {
    let bad = |message: String| Dinov2Error::Config {
        path: path.to_owned(),
        message,
    };
    let root = json
        .as_object()
        .ok_or_else(|| bad("expected a JSON object".into()))?;
    match root.get("model_type").and_then(Value::as_str) {
        Some("dinov2") | None => {}
        Some("dinov2_with_registers") => {
            return Err(bad(
                "this is DINOv2 with registers (`dinov2_with_registers`), whose register \
                 tokens are not implemented; use a register-free DINOv2 \
                 (e.g. facebook/dinov2-small)"
                    .into(),
            ));
        }
        Some(other) => {
            return Err(bad(format!(
                "model_type is `{other}`, not a DINOv2 model (`dinov2`)"
            )));
        }
    }
    // Far above any real model, low enough that no size computed from these
    // overflows.
    const LIMIT: u64 = 1 << 20;
    let int = |key: &str, default: usize| -> Result<usize, Dinov2Error> {
        match root.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0 && n <= LIMIT)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "`{key}` must be a positive integer up to {LIMIT}, found {v}"
                    ))
                }),
        }
    };
    let float = |key: &str, default: f64| -> Result<f64, Dinov2Error> {
        match root.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| *x > 0.0 && x.is_finite())
                .ok_or_else(|| bad(format!("`{key}` must be a positive number, found {v}"))),
        }
    };
    let flag = |key: &str, default: bool| -> Result<bool, Dinov2Error> {
        match root.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| bad(format!("`{key}` must be true or false, found {v}"))),
        }
    };
    if flag("use_swiglu_ffn", false)? {
        return Err(bad(
            "`use_swiglu_ffn` is true (DINOv2-giant's SwiGLU feed-forward), which is not \
             implemented; use dinov2-small, -base or -large"
                .into(),
        ));
    }
    match root.get("hidden_act") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "gelu" => {}
        Some(v) => {
            return Err(bad(format!(
                "`hidden_act` is {v}, but only `gelu` (DINOv2's exact GELU) is implemented"
            )));
        }
    }
    if int("num_channels", 3)? != 3 {
        return Err(bad(
            "`num_channels` must be 3: images are read as RGB".into()
        ));
    }
    let hidden_size = int("hidden_size", 768)?;
    let num_attention_heads = int("num_attention_heads", 12)?;
    if !hidden_size.is_multiple_of(num_attention_heads) {
        return Err(bad(format!(
            "`hidden_size` {hidden_size} is not a multiple of `num_attention_heads` \
             {num_attention_heads}"
        )));
    }
    let mlp_ratio = float("mlp_ratio", 4.0)?;
    // Python's `int(hidden_size * mlp_ratio)` truncates.
    let intermediate_size = (hidden_size as f64 * mlp_ratio) as usize;
    if intermediate_size == 0 || intermediate_size as u64 > LIMIT {
        return Err(bad(format!(
            "`mlp_ratio` {mlp_ratio} gives an MLP width outside 1 to {LIMIT}"
        )));
    }
    let image_size = int("image_size", 224)?;
    let patch_size = int("patch_size", 14)?;
    if patch_size > image_size {
        return Err(bad(format!(
            "`patch_size` {patch_size} is larger than `image_size` {image_size}"
        )));
    }
    Ok(Dinov2Config {
        hidden_size,
        num_hidden_layers: int("num_hidden_layers", 12)?,
        num_attention_heads,
        intermediate_size,
        layer_norm_eps: float("layer_norm_eps", 1e-6)?,
        image_size,
        patch_size,
        qkv_bias: flag("qkv_bias", true)?,
    })
}

/// Finds the key prefix in front of `embeddings.cls_token` and checks every
/// required tensor's presence, dtype and shape.
fn verify_tensors(
    tensors: &candle_core::safetensors::MmapedSafetensors,
    cfg: &Dinov2Config,
    path: &Path,
) -> Result<String, Dinov2Error> {
    use crate::vision::tensor_check::{TensorProblem, check_tensors};
    check_tensors(tensors, "embeddings.cls_token", cfg.required_tensors()).map_err(|problem| {
        match problem {
            TensorProblem::Missing { key } => Dinov2Error::MissingTensor {
                path: path.to_owned(),
                key,
            },
            TensorProblem::SeveralModels { prefixes } => Dinov2Error::Config {
                path: path.to_owned(),
                message: format!(
                    "holds {} models (key prefixes {prefixes:?}); keep one",
                    prefixes.len()
                ),
            },
            TensorProblem::Dtype { key, dtype } => Dinov2Error::TensorDtype {
                path: path.to_owned(),
                key,
                dtype,
            },
            TensorProblem::Shape {
                key,
                expected,
                found,
            } => Dinov2Error::TensorShape {
                path: path.to_owned(),
                key,
                expected,
                found,
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sources_parse_and_print_back() {
        for text in ["some/folder", "hf:facebook/dinov2-small", "hf:a/b@abc"] {
            let s = Dinov2Source::parse(text).unwrap();
            assert_eq!(s.to_string(), text);
        }
        assert!(matches!(
            Dinov2Source::parse("hf:a/b@r"),
            Some(Dinov2Source::HfCache { revision: Some(ref r), .. }) if r == "r"
        ));
        for bad in ["", "hf:noslash", "hf:a/b/c", "hf:a/", "hf:a/b@"] {
            assert!(Dinov2Source::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn config_takes_defaults_and_refuses_what_is_not_implemented() {
        let p = Path::new("config.json");
        let c = config_from_json(
            &json!({"model_type": "dinov2", "hidden_size": 384,
            "num_attention_heads": 6}),
            p,
        )
        .unwrap();
        assert_eq!((c.hidden_size, c.intermediate_size), (384, 1536));
        assert_eq!((c.image_size, c.patch_size, c.grid()), (224, 14, 16));
        assert_eq!(c.layer_norm_eps, 1e-6);
        assert!(c.qkv_bias);
        for (bad, says) in [
            (json!({"model_type": "dinov2_with_registers"}), "registers"),
            (json!({"model_type": "vit"}), "not a DINOv2"),
            (json!({"use_swiglu_ffn": true}), "SwiGLU"),
            (json!({"hidden_act": "relu"}), "hidden_act"),
            (
                json!({"hidden_size": 10, "num_attention_heads": 3}),
                "multiple",
            ),
            (json!({"layer_norm_eps": -1.0}), "layer_norm_eps"),
            (
                json!({"image_size": u64::MAX, "patch_size": 1}),
                "image_size",
            ),
            (json!({"mlp_ratio": 1e300}), "mlp_ratio"),
            (json!([1]), "object"),
        ] {
            let err = config_from_json(&bad, p).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("config.json"), "{err}");
        }
    }

    #[test]
    fn a_missing_file_is_named_with_what_to_fetch() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "{}").unwrap();
        let err = check_folder(dir.path()).unwrap_err();
        assert!(matches!(err, Dinov2Error::MissingFile { .. }));
        let text = err.to_string();
        assert!(
            text.contains(WEIGHTS_FILE) && text.contains("hf download"),
            "{text}"
        );
    }
}
