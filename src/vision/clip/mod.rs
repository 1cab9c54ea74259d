//! OpenAI CLIP image embeddings (the Echo paper retrieves references with CLIP
//! ViT-B/16) computed locally with candle.
//!
//! Weights come from a folder or from the local Hugging Face cache, never from
//! the network. The vision tower is implemented here rather than taken from
//! `candle_transformers::models::clip` because that one silently replaces a
//! missing `class_embedding` by random values, hard-codes the layer-norm epsilon,
//! and is markedly slower on CPU: it runs q, k and v as three matmuls, a generic
//! softmax, every element-wise step (bias, QuickGELU, residual) as its own pass
//! into a new buffer, and all tokens through the last layer although only the
//! class token is pooled. Here q/k/v are one matmul, the softmax is candle's
//! fused last-dimension kernel, the element-wise steps are fused in place into
//! the matmul outputs (module `fused`), and the last layer computes the class
//! token only. The tests check the result against transformers' (fixtures) and
//! against candle-transformers' implementation.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, IndexOp, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::Activation;
use candle_transformers::models::clip::vision_model::ClipVisionConfig;
use image::RgbImage;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::embed::{EmbedError, ImageEmbedder, l2_normalize};
use super::preprocess::{ClipPreprocess, clip_pixel_values};

/// File names of a Hugging Face CLIP checkpoint.
const CONFIG_FILE: &str = "config.json";
const WEIGHTS_FILE: &str = "model.safetensors";
const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

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
fn hf_cache_root(
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
    let rev = revision.unwrap_or("main");
    let fail = |detail: String| ClipError::NotInHfCache {
        repo: repo.to_owned(),
        revision: rev.to_owned(),
        detail,
    };
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
    for file in [CONFIG_FILE, WEIGHTS_FILE] {
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

/// Why a CLIP model could not be loaded or run. Each message is one sentence
/// naming the file, key or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error(
        "Hugging Face model `{repo}` (revision {revision}) is not in the local cache: \
         {detail}; nothing is downloaded, so fetch it beforehand (e.g. `hf download {repo}`) \
         or give the model folder instead"
    )]
    NotInHfCache {
        repo: String,
        revision: String,
        detail: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error(
        "{}: the vision tower uses `hidden_act: {found}`, but only `quick_gelu` (OpenAI CLIP) \
         is implemented",
        path.display()
    )]
    UnsupportedActivation { path: PathBuf, found: String },
    #[error("{} has no tensor `{key}`, which a CLIP vision model needs", path.display())]
    MissingTensor { path: PathBuf, key: String },
    #[error(
        "tensor `{key}` in {} has shape {found:?}, but config.json implies {expected:?}",
        path.display()
    )]
    TensorShape {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error(
        "tensor `{key}` in {} has dtype {dtype}, but only F32, F16 and BF16 weights can be loaded",
        path.display()
    )]
    TensorDtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },
    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },
    #[error("{0}")]
    Input(String),
}

impl From<ClipError> for EmbedError {
    fn from(e: ClipError) -> Self {
        EmbedError::Compute {
            what: "CLIP".into(),
            message: e.to_string(),
        }
    }
}

/// Adds context to candle errors.
trait CandleContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, ClipError>;
}

impl<T> CandleContext<T> for candle_core::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, ClipError> {
        self.map_err(|source| ClipError::Candle {
            context: what(),
            source,
        })
    }
}

/// Vision-tower hyper-parameters: candle's config plus the layer-norm epsilon,
/// which candle's own CLIP hard-codes.
#[derive(Debug, Clone)]
pub struct ClipModelConfig {
    pub vision: ClipVisionConfig,
    pub layer_norm_eps: f64,
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

    /// Patches per side (transformers' stride-`patch_size` convolution drops
    /// any remainder).
    fn grid(&self) -> usize {
        self.vision.image_size / self.vision.patch_size
    }

    /// Every tensor the vision tower needs, with its shape, relative to the
    /// checkpoint's `vision_model.` / `visual_projection.` root.
    fn required_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let c = &self.vision;
        let (h, i) = (c.embed_dim, c.intermediate_size);
        let p = c.patch_size;
        let e = "vision_model.embeddings";
        let mut keys = vec![
            (format!("{e}.class_embedding"), vec![h]),
            (
                format!("{e}.patch_embedding.weight"),
                vec![h, c.num_channels, p, p],
            ),
            (
                format!("{e}.position_embedding.weight"),
                vec![self.grid().pow(2) + 1, h],
            ),
            ("vision_model.pre_layrnorm.weight".into(), vec![h]),
            ("vision_model.pre_layrnorm.bias".into(), vec![h]),
        ];
        for l in 0..c.num_hidden_layers {
            let l = format!("vision_model.encoder.layers.{l}");
            for norm in ["layer_norm1", "layer_norm2"] {
                keys.push((format!("{l}.{norm}.weight"), vec![h]));
                keys.push((format!("{l}.{norm}.bias"), vec![h]));
            }
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                keys.push((format!("{l}.self_attn.{proj}.weight"), vec![h, h]));
                keys.push((format!("{l}.self_attn.{proj}.bias"), vec![h]));
            }
            keys.push((format!("{l}.mlp.fc1.weight"), vec![i, h]));
            keys.push((format!("{l}.mlp.fc1.bias"), vec![i]));
            keys.push((format!("{l}.mlp.fc2.weight"), vec![h, i]));
            keys.push((format!("{l}.mlp.fc2.bias"), vec![h]));
        }
        keys.push(("vision_model.post_layernorm.weight".into(), vec![h]));
        keys.push(("vision_model.post_layernorm.bias".into(), vec![h]));
        keys.push(("visual_projection.weight".into(), vec![c.projection_dim, h]));
        keys
    }
}

/// Finds the key prefix in front of `vision_model.` (empty for transformers'
/// own files, e.g. `clip.` or `model.` for checkpoints saved inside a wrapper)
/// and checks every required tensor's presence, dtype and shape, so that a
/// wrong file fails with one clear sentence instead of a random or garbled
/// model.
fn verify_tensors(
    tensors: &candle_core::safetensors::MmapedSafetensors,
    cfg: &ClipModelConfig,
    path: &Path,
) -> Result<String, ClipError> {
    const ANCHOR: &str = "vision_model.embeddings.class_embedding";
    let mut anchors: Vec<String> = tensors
        .tensors()
        .into_iter()
        .filter_map(|(name, _)| name.strip_suffix(ANCHOR).map(str::to_owned))
        .filter(|prefix| prefix.is_empty() || prefix.ends_with('.'))
        .collect();
    anchors.sort();
    let prefix = match anchors.as_slice() {
        [] => {
            return Err(ClipError::MissingTensor {
                path: path.to_owned(),
                key: ANCHOR.into(),
            });
        }
        [one] => one.clone(),
        many => {
            return Err(ClipError::Config {
                path: path.to_owned(),
                message: format!(
                    "holds {} vision towers (key prefixes {many:?}); keep one",
                    many.len()
                ),
            });
        }
    };
    for (key, expected) in cfg.required_tensors() {
        let key = format!("{prefix}{key}");
        let view = tensors.get(&key).map_err(|_| ClipError::MissingTensor {
            path: path.to_owned(),
            key: key.clone(),
        })?;
        let dtype = format!("{:?}", view.dtype());
        if !matches!(dtype.as_str(), "F32" | "F16" | "BF16") {
            return Err(ClipError::TensorDtype {
                path: path.to_owned(),
                key,
                dtype,
            });
        }
        if view.shape() != expected.as_slice() {
            return Err(ClipError::TensorShape {
                path: path.to_owned(),
                key,
                expected,
                found: view.shape().to_vec(),
            });
        }
    }
    Ok(prefix)
}

/// A dense layer with its weight stored transposed, `(in, out)` and
/// contiguous, so the CPU matmul streams it row by row.
#[derive(Debug, Clone)]
struct Dense {
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl Dense {
    /// From a transformers `(out, in)` weight and optional bias, in f32.
    fn from_f32(weight: &Tensor, bias: Option<Tensor>, dtype: DType) -> candle_core::Result<Self> {
        Ok(Self {
            weight_t: weight.t()?.contiguous()?.to_dtype(dtype)?,
            bias: bias.map(|b| b.to_dtype(dtype)).transpose()?,
        })
    }

    fn new(
        vb: &VarBuilder,
        out_dim: usize,
        in_dim: usize,
        dtype: DType,
    ) -> candle_core::Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = vb.get(out_dim, "bias")?;
        Self::from_f32(&weight, Some(bias), dtype)
    }

    /// `xs @ W^T` without the bias, shaped like `xs` with the last dimension
    /// replaced (a fresh tensor, so epilogues may work in place).
    fn matmul(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let dims = xs.dims();
        let in_dim = dims.last().copied().unwrap_or(1);
        let rows = xs.elem_count() / in_dim.max(1);
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = self.weight_t.dim(1)?;
        }
        xs.reshape((rows, in_dim))?
            .matmul(&self.weight_t)?
            .reshape(out_dims)
    }

    /// `act(xs @ W^T + b)`.
    fn forward_act(&self, xs: &Tensor, act: fused::Act) -> candle_core::Result<Tensor> {
        let ys = self.matmul(xs)?;
        let zeros;
        let bias = match &self.bias {
            Some(b) => b,
            None => {
                zeros = Tensor::zeros(ys.dim(D::Minus1)?, ys.dtype(), ys.device())?;
                &zeros
            }
        };
        fused::bias_act(ys, bias, act)
    }

    /// `xs @ W^T + b + residual`.
    fn forward_residual(&self, xs: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        let ys = self.matmul(xs)?;
        match &self.bias {
            Some(b) => fused::bias_residual(ys, b, residual),
            None => ys + residual,
        }
    }
}

impl Module for Dense {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match &self.bias {
            Some(_) => self.forward_act(xs, fused::Act::Identity),
            None => self.matmul(xs),
        }
    }
}

/// Element-wise epilogues fused into one in-place pass over a fresh matmul
/// output (CPU, f32): bias + QuickGELU, bias + residual, position embeddings.
/// candle would run each step as its own pass into a newly allocated tensor;
/// at batch 8 the MLP activations are ~19 MB, so those passes and the page
/// faults of the new buffers were about a fifth of the forward time. Other
/// devices and dtypes use the equivalent candle ops.
mod fused {
    use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Result, Tensor, bail};
    use rayon::prelude::*;

    /// Elements per parallel task, large enough to amortise scheduling.
    const TASK_ELEMENTS: usize = 1 << 15;

    /// Activation applied after the bias.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Act {
        Identity,
        /// `x * sigmoid(1.702 x)`, OpenAI CLIP's GELU approximation.
        QuickGelu,
    }

    fn quick_gelu(x: f32) -> f32 {
        // Same operation order as transformers: x * sigmoid(1.702 * x).
        x * (1.0 / (1.0 + (-(1.702f32 * x)).exp()))
    }

    fn fusable(t: &Tensor) -> bool {
        t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous()
    }

    /// `act(ys + pattern)`, where `pattern` (any shape) repeats over `ys`:
    /// a bias over the last dimension, or per-image position embeddings.
    pub(super) fn bias_act(ys: Tensor, pattern: &Tensor, act: Act) -> Result<Tensor> {
        if fusable(&ys) && fusable(pattern) {
            ys.inplace_op2(pattern, &BiasAct(act))?;
            return Ok(ys);
        }
        let ys = ys.broadcast_add(pattern)?;
        match act {
            Act::Identity => Ok(ys),
            Act::QuickGelu => &ys * candle_nn::ops::sigmoid(&(&ys * 1.702)?)?,
        }
    }

    /// `ys + bias + residual` (in that order, as transformers adds them).
    pub(super) fn bias_residual(ys: Tensor, bias: &Tensor, residual: &Tensor) -> Result<Tensor> {
        if fusable(&ys) && fusable(bias) && fusable(residual) && ys.shape() == residual.shape() {
            ys.inplace_op3(bias, residual, &BiasResidual)?;
            return Ok(ys);
        }
        ys.broadcast_add(bias)? + residual
    }

    fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
            _ => bail!("{op}: expects contiguous f32 operands"),
        }
    }

    fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> Result<&'a mut [f32]> {
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
            _ => bail!("{op}: expects contiguous f32 operands"),
        }
    }

    /// Rows of `pattern.len()` values per parallel task, or an error if `len`
    /// values are not whole rows.
    fn task_len(len: usize, pattern: usize, op: &str) -> Result<usize> {
        if pattern == 0 || !len.is_multiple_of(pattern) {
            bail!("{op}: {len} values do not repeat a pattern of {pattern}");
        }
        Ok(pattern * (TASK_ELEMENTS / pattern).max(1))
    }

    /// `dst[i] = f(dst[i], pattern[i % n])` in parallel, `n = pattern.len()`.
    fn repeat_apply(
        dst: &mut [f32],
        pattern: &[f32],
        op: &str,
        f: impl Fn(f32, f32) -> f32 + Sync,
    ) -> Result<()> {
        let task = task_len(dst.len(), pattern.len(), op)?;
        dst.par_chunks_mut(task).for_each(|block| {
            for row in block.chunks_exact_mut(pattern.len()) {
                for (x, p) in row.iter_mut().zip(pattern) {
                    *x = f(*x, *p);
                }
            }
        });
        Ok(())
    }

    struct BiasAct(Act);

    impl InplaceOp2 for BiasAct {
        fn name(&self) -> &'static str {
            "clip-bias-act"
        }

        fn cpu_fwd(
            &self,
            dst: &mut CpuStorage,
            dst_l: &Layout,
            bias: &CpuStorage,
            bias_l: &Layout,
        ) -> Result<()> {
            let name = self.name();
            let bias = f32_slice(bias, bias_l, name)?;
            let dst = f32_slice_mut(dst, dst_l, name)?;
            match self.0 {
                Act::Identity => repeat_apply(dst, bias, name, |x, b| x + b),
                Act::QuickGelu => repeat_apply(dst, bias, name, |x, b| quick_gelu(x + b)),
            }
        }
    }

    struct BiasResidual;

    impl InplaceOp3 for BiasResidual {
        fn name(&self) -> &'static str {
            "clip-bias-residual"
        }

        fn cpu_fwd(
            &self,
            dst: &mut CpuStorage,
            dst_l: &Layout,
            bias: &CpuStorage,
            bias_l: &Layout,
            residual: &CpuStorage,
            residual_l: &Layout,
        ) -> Result<()> {
            let name = self.name();
            let bias = f32_slice(bias, bias_l, name)?;
            let residual = f32_slice(residual, residual_l, name)?;
            let dst = f32_slice_mut(dst, dst_l, name)?;
            if residual.len() != dst.len() {
                bail!(
                    "{name}: residual has {} values, not {}",
                    residual.len(),
                    dst.len()
                );
            }
            let task = task_len(dst.len(), bias.len(), name)?;
            dst.par_chunks_mut(task)
                .zip(residual.par_chunks(task))
                .for_each(|(block, res)| {
                    let rows = block.chunks_exact_mut(bias.len());
                    for (row, res) in rows.zip(res.chunks_exact(bias.len())) {
                        for ((x, b), r) in row.iter_mut().zip(bias).zip(res) {
                            *x = *x + b + r;
                        }
                    }
                });
            Ok(())
        }
    }
}

/// Layer norm over the last dimension (candle's fused kernel).
#[derive(Debug, Clone)]
struct Norm(candle_nn::LayerNorm);

impl Norm {
    fn new(vb: &VarBuilder, dim: usize, eps: f64, dtype: DType) -> candle_core::Result<Self> {
        let weight = vb.get(dim, "weight")?.to_dtype(dtype)?;
        let bias = vb.get(dim, "bias")?.to_dtype(dtype)?;
        Ok(Self(candle_nn::LayerNorm::new(weight, bias, eps)))
    }
}

impl Module for Norm {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.0.forward(&xs.contiguous()?)
    }
}

/// Patch, class and position embeddings.
#[derive(Debug, Clone)]
struct Embeddings {
    /// The stride-`patch` convolution as a matmul over flattened patches.
    patch: Dense,
    /// `class_embedding + position_embedding[0]`, shape `(1, 1, hidden)`.
    class_with_position: Tensor,
    /// `position_embedding[1..]`, shape `(patches, hidden)`.
    patch_positions: Tensor,
    patch_size: usize,
    grid: usize,
    channels: usize,
}

impl Embeddings {
    fn new(vb: VarBuilder, cfg: &ClipModelConfig, dtype: DType) -> candle_core::Result<Self> {
        let c = &cfg.vision;
        let (h, p, grid) = (c.embed_dim, c.patch_size, cfg.grid());
        let class = vb.get(h, "class_embedding")?;
        let positions = vb.get((grid * grid + 1, h), "position_embedding.weight")?;
        let conv = vb.get((h, c.num_channels, p, p), "patch_embedding.weight")?;
        let conv = conv.reshape((h, c.num_channels * p * p))?;
        Ok(Self {
            patch: Dense::from_f32(&conv, None, dtype)?,
            class_with_position: (class + positions.get(0)?)?
                .reshape((1, 1, h))?
                .to_dtype(dtype)?,
            patch_positions: positions.narrow(0, 1, grid * grid)?.to_dtype(dtype)?,
            patch_size: p,
            grid,
            channels: c.num_channels,
        })
    }
}

impl Module for Embeddings {
    /// `(batch, channels, size, size)` pixels to `(batch, 1 + patches, hidden)`.
    fn forward(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let (b, _, _, _) = pixels.dims4()?;
        let (p, g) = (self.patch_size, self.grid);
        // im2col for a stride == kernel convolution is a pure re-layout.
        let patches = pixels
            .narrow(2, 0, g * p)?
            .narrow(3, 0, g * p)?
            .reshape((b, self.channels, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, g * g, self.channels * p * p))?;
        let patches = fused::bias_act(
            self.patch.matmul(&patches)?,
            &self.patch_positions,
            fused::Act::Identity,
        )?;
        let hidden = self.class_with_position.dim(2)?;
        let class = self.class_with_position.broadcast_as((b, 1, hidden))?;
        Tensor::cat(&[&class, &patches], 1)
    }
}

/// Multi-head self-attention with q, k and v fused into one matmul and the
/// `head_dim^-0.5` scale folded into the q weights.
#[derive(Debug, Clone)]
struct Attention {
    qkv: Dense,
    out: Dense,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(vb: VarBuilder, cfg: &ClipModelConfig, dtype: DType) -> candle_core::Result<Self> {
        let h = cfg.vision.embed_dim;
        let heads = cfg.vision.num_attention_heads;
        let head_dim = h / heads;
        let scale = (head_dim as f64).powf(-0.5);
        let get = |name: &str| -> candle_core::Result<(Tensor, Tensor)> {
            Ok((
                vb.get((h, h), &format!("{name}.weight"))?,
                vb.get(h, &format!("{name}.bias"))?,
            ))
        };
        let (qw, qb) = get("q_proj")?;
        let (kw, kb) = get("k_proj")?;
        let (vw, vbias) = get("v_proj")?;
        let weight = Tensor::cat(&[&(qw * scale)?, &kw, &vw], 0)?;
        let bias = Tensor::cat(&[&(qb * scale)?, &kb, &vbias], 0)?;
        Ok(Self {
            qkv: Dense::from_f32(&weight, Some(bias), dtype)?,
            out: Dense::new(&vb.pp("out_proj"), h, h, dtype)?,
            heads,
            head_dim,
        })
    }

    /// `residual + attention(xs)` for `xs` of `(batch, tokens, hidden)`. With
    /// `class_only`, only the class token's output is computed
    /// (`(batch, 1, hidden)`, `residual` likewise): that is all the last layer
    /// needs for the pooled output.
    fn forward(
        &self,
        xs: &Tensor,
        residual: &Tensor,
        class_only: bool,
    ) -> candle_core::Result<Tensor> {
        let (b, t, h) = xs.dims3()?;
        let (nh, hd) = (self.heads, self.head_dim);
        // (3, batch, heads, tokens, head_dim)
        let qkv = self
            .qkv
            .forward_act(xs, fused::Act::Identity)?
            .reshape((b, t, 3, nh, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q_tokens = if class_only { 1 } else { t };
        let q =
            qkv.get(0)?
                .narrow(2, 0, q_tokens)?
                .contiguous()?
                .reshape((b * nh, q_tokens, hd))?;
        let k = qkv.get(1)?.contiguous()?.reshape((b * nh, t, hd))?;
        let v = qkv.get(2)?.contiguous()?.reshape((b * nh, t, hd))?;
        let weights = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let attended = weights
            .matmul(&v)?
            .reshape((b, nh, q_tokens, hd))?
            .transpose(1, 2)?
            .reshape((b, q_tokens, h))?;
        self.out.forward_residual(&attended, residual)
    }
}

/// The feed-forward block.
#[derive(Debug, Clone)]
struct Mlp {
    fc1: Dense,
    fc2: Dense,
}

impl Mlp {
    fn new(vb: VarBuilder, cfg: &ClipModelConfig, dtype: DType) -> candle_core::Result<Self> {
        let (h, i) = (cfg.vision.embed_dim, cfg.vision.intermediate_size);
        Ok(Self {
            fc1: Dense::new(&vb.pp("fc1"), i, h, dtype)?,
            fc2: Dense::new(&vb.pp("fc2"), h, i, dtype)?,
        })
    }
}

impl Mlp {
    /// `residual + fc2(quick_gelu(fc1(xs)))`.
    fn forward(&self, xs: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        let hidden = self.fc1.forward_act(xs, fused::Act::QuickGelu)?;
        self.fc2.forward_residual(&hidden, residual)
    }
}

/// Pre-norm transformer block.
#[derive(Debug, Clone)]
struct EncoderLayer {
    norm1: Norm,
    attention: Attention,
    norm2: Norm,
    mlp: Mlp,
}

impl EncoderLayer {
    fn new(vb: VarBuilder, cfg: &ClipModelConfig, dtype: DType) -> candle_core::Result<Self> {
        let (h, eps) = (cfg.vision.embed_dim, cfg.layer_norm_eps);
        Ok(Self {
            norm1: Norm::new(&vb.pp("layer_norm1"), h, eps, dtype)?,
            attention: Attention::new(vb.pp("self_attn"), cfg, dtype)?,
            norm2: Norm::new(&vb.pp("layer_norm2"), h, eps, dtype)?,
            mlp: Mlp::new(vb.pp("mlp"), cfg, dtype)?,
        })
    }

    fn forward(&self, xs: &Tensor, class_only: bool) -> candle_core::Result<Tensor> {
        let residual = if class_only {
            xs.narrow(1, 0, 1)?.contiguous()?
        } else {
            xs.clone()
        };
        let xs = self
            .attention
            .forward(&self.norm1.forward(xs)?, &residual, class_only)?;
        self.mlp.forward(&self.norm2.forward(&xs)?, &xs)
    }
}

/// CLIP vision tower plus `visual_projection`: pixels to image embeddings
/// (not normalised).
#[derive(Debug, Clone)]
struct VisionModel {
    embeddings: Embeddings,
    pre_norm: Norm,
    layers: Vec<EncoderLayer>,
    post_norm: Norm,
    projection: Dense,
    dtype: DType,
}

impl VisionModel {
    /// `vb` is rooted where `vision_model.` and `visual_projection.` start and
    /// yields f32; weights are converted to `dtype` after any f32 arithmetic.
    fn new(vb: VarBuilder, cfg: &ClipModelConfig, dtype: DType) -> candle_core::Result<Self> {
        let (h, eps) = (cfg.vision.embed_dim, cfg.layer_norm_eps);
        let vm = vb.pp("vision_model");
        let layers = (0..cfg.vision.num_hidden_layers)
            .map(|l| EncoderLayer::new(vm.pp("encoder.layers").pp(l.to_string()), cfg, dtype))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let projection = vb
            .pp("visual_projection")
            .get((cfg.vision.projection_dim, h), "weight")?;
        Ok(Self {
            embeddings: Embeddings::new(vm.pp("embeddings"), cfg, dtype)?,
            pre_norm: Norm::new(&vm.pp("pre_layrnorm"), h, eps, dtype)?,
            layers,
            post_norm: Norm::new(&vm.pp("post_layernorm"), h, eps, dtype)?,
            projection: Dense::from_f32(&projection, None, dtype)?,
            dtype,
        })
    }

    /// `(batch, 3, size, size)` f32 pixels to `(batch, projection_dim)` f32.
    fn forward(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let mut xs = self
            .pre_norm
            .forward(&self.embeddings.forward(&pixels.to_dtype(self.dtype)?)?)?;
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            xs = layer.forward(&xs, i == last)?;
        }
        let pooled = xs.i((.., 0, ..))?;
        self.projection
            .forward(&self.post_norm.forward(&pooled)?)?
            .to_dtype(DType::F32)
    }
}

/// Loading and running options. Defaults: f32 and batches of 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClipOptions {
    /// Weight and activation type. F32 matches transformers to ~1e-6. F16 halves
    /// the weights' memory but moves normalised embeddings by ~1e-3 and is about
    /// 2.5x slower on CPU (no native f16 matmul there); BF16 is CUDA only
    /// (candle's CPU matmul has no bf16). Vectors from other dtypes get their
    /// own [`ImageEmbedder::id`], so caches never mix them.
    pub dtype: DType,
    /// Images per forward pass (at least 1); larger batches use more memory.
    pub max_batch: usize,
}

impl Default for ClipOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            max_batch: 8,
        }
    }
}

/// The device CLIP should run on: the first CUDA GPU when built with the `cuda`
/// feature and one is present, else the CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        Device::cuda_if_available(0).unwrap_or(Device::Cpu)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Device::Cpu
    }
}

/// CLIP image embedder: OpenAI preprocessing, vision tower, visual projection,
/// L2 normalisation.
#[derive(Debug)]
pub struct ClipEmbedder {
    model: VisionModel,
    config: ClipModelConfig,
    preprocess: ClipPreprocess,
    device: Device,
    options: ClipOptions,
    folder: PathBuf,
    id: String,
}

impl ClipEmbedder {
    /// Loads with the default [`ClipOptions`].
    pub fn load(source: &ClipSource, device: &Device) -> Result<Self, ClipError> {
        Self::load_with(source, device, ClipOptions::default())
    }

    /// Loads `config.json`, `model.safetensors` (memory-mapped; tensors are
    /// checked against the config before anything is built) and, when present,
    /// `preprocessor_config.json`.
    pub fn load_with(
        source: &ClipSource,
        device: &Device,
        options: ClipOptions,
    ) -> Result<Self, ClipError> {
        if device.is_cpu() && options.dtype == DType::BF16 {
            return Err(ClipError::Input(
                "bf16 needs a CUDA device: candle's CPU matmul supports f32 and f16 only".into(),
            ));
        }
        if !matches!(options.dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(ClipError::Input(format!(
                "CLIP runs in f32, f16 or bf16, not {}",
                options.dtype.as_str()
            )));
        }
        let folder = source.resolve()?;
        let config_path = folder.join(CONFIG_FILE);
        let config = ClipModelConfig::from_hf_json(&read_json(&config_path)?, &config_path)?;
        let preprocess = read_preprocess(&folder, &config)?;

        let weights = folder.join(WEIGHTS_FILE);
        let digest = sha256_file(&weights)?;
        // SAFETY: the map is only read during this function (every tensor is
        // copied out by `VisionModel::new`); as with any mmap, the file must not
        // be truncated meanwhile, which a model folder in use never is.
        let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::new(&weights) }
            .context(|| format!("cannot open {} as safetensors", weights.display()))?;
        let prefix = verify_tensors(&tensors, &config, &weights)?;
        let mut vb = VarBuilder::from_backend(Box::new(tensors), DType::F32, device.clone());
        if let Some(p) = prefix.strip_suffix('.') {
            vb = vb.pp(p);
        }
        let model = VisionModel::new(vb, &config, options.dtype)
            .context(|| format!("cannot build the CLIP model from {}", weights.display()))?;

        let v = &config.vision;
        let mut id = format!(
            "clip:{}/{}/{}x{}:{}",
            v.image_size,
            v.patch_size,
            v.embed_dim,
            v.num_hidden_layers,
            &digest[..12]
        );
        // Reduced precision gives slightly different vectors: keep them apart.
        if options.dtype != DType::F32 {
            id.push_str(&format!(":{}", options.dtype.as_str()));
        }
        Ok(Self {
            model,
            config,
            preprocess,
            device: device.clone(),
            options: ClipOptions {
                max_batch: options.max_batch.max(1),
                ..options
            },
            folder,
            id,
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ClipModelConfig {
        &self.config
    }

    /// The preprocessing applied by [`ImageEmbedder::embed_batch`].
    pub fn preprocess(&self) -> &ClipPreprocess {
        &self.preprocess
    }

    /// The folder the checkpoint was read from.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    pub fn options(&self) -> ClipOptions {
        self.options
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Embeds already preprocessed images: `pixels` holds `count` CHW f32 images
    /// of `3 x image_size x image_size`, back to back. Runs in chunks of
    /// `max_batch`; returns L2-normalised vectors.
    pub fn embed_pixel_values(&self, pixels: &[f32]) -> Result<Vec<Vec<f32>>, ClipError> {
        let per_image = self.pixels_per_image();
        if !pixels.len().is_multiple_of(per_image) {
            return Err(ClipError::Input(format!(
                "got {} pixel values, not a whole number of {} x {s} x {s} images",
                pixels.len(),
                self.config.vision.num_channels,
                s = self.config.vision.image_size
            )));
        }
        let mut out = Vec::with_capacity(pixels.len() / per_image);
        for chunk in pixels.chunks(per_image * self.options.max_batch) {
            out.extend(self.forward_chunk(chunk.to_vec())?);
        }
        Ok(out)
    }

    fn pixels_per_image(&self) -> usize {
        let v = &self.config.vision;
        v.num_channels * v.image_size * v.image_size
    }

    /// One forward pass over `pixels` (whole images, at most `max_batch`).
    fn forward_chunk(&self, pixels: Vec<f32>) -> Result<Vec<Vec<f32>>, ClipError> {
        let v = &self.config.vision;
        let n = pixels.len() / self.pixels_per_image();
        let shape = (n, v.num_channels, v.image_size, v.image_size);
        let vectors = Tensor::from_vec(pixels, shape, &self.device)
            .and_then(|t| self.model.forward(&t))
            .and_then(|t| t.to_vec2::<f32>())
            .context(|| format!("CLIP forward pass on {n} image(s) failed"))?;
        Ok(vectors
            .into_iter()
            .map(|mut v| {
                l2_normalize(&mut v);
                v
            })
            .collect())
    }
}

impl ImageEmbedder for ClipEmbedder {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn dim(&self) -> usize {
        self.config.vision.projection_dim
    }

    fn embed_batch(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let per_image = self.pixels_per_image();
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.options.max_batch) {
            // One buffer per batch, handed to candle without another copy.
            let mut pixels = Vec::with_capacity(per_image * chunk.len());
            for image in chunk {
                let values = clip_pixel_values(image, &self.preprocess);
                if values.len() != per_image {
                    return Err(ClipError::Input(format!(
                        "preprocessing gave {} values per image, the model takes {per_image}",
                        values.len()
                    ))
                    .into());
                }
                pixels.extend_from_slice(&values);
            }
            out.extend(self.forward_chunk(pixels)?);
        }
        Ok(out)
    }
}

fn read_json(path: &Path) -> Result<Value, ClipError> {
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
fn read_preprocess(folder: &Path, config: &ClipModelConfig) -> Result<ClipPreprocess, ClipError> {
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
fn sha256_file(path: &Path) -> Result<String, ClipError> {
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
    //! Conformance against transformers on tiny random-weight models generated
    //! by `scripts/make_tiny_clip.py` (committed fixtures; no Python needed).

    use super::*;
    use base64::Engine as _;
    use std::collections::HashMap;

    const CONFIGS: [&str; 3] = ["full_p16_s32", "vision_p32_s64", "full_p8_s40_f16"];

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_clip")
    }

    struct Case {
        image: String,
        pixels: Vec<f32>,
        embedding: Vec<f32>,
    }

    fn reference(name: &str) -> Vec<Case> {
        let json = read_json(&fixtures().join(name).join("reference.json")).unwrap();
        json["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(entry["pixel_values_f32le_base64"].as_str().unwrap())
                    .unwrap();
                let pixels = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                let embedding = entry["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect();
                Case {
                    image: entry["image"].as_str().unwrap().to_owned(),
                    pixels,
                    embedding,
                }
            })
            .collect()
    }

    fn load(name: &str) -> ClipEmbedder {
        ClipEmbedder::load(&ClipSource::Folder(fixtures().join(name)), &Device::Cpu).unwrap()
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Copies a fixture's files into a fresh temporary folder.
    fn copy_fixture(name: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in [CONFIG_FILE, WEIGHTS_FILE, PREPROCESSOR_FILE] {
            std::fs::copy(fixtures().join(name).join(file), dir.path().join(file)).unwrap();
        }
        dir
    }

    fn load_err(folder: &Path) -> String {
        ClipEmbedder::load(&ClipSource::Folder(folder.to_owned()), &Device::Cpu)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn reference_pixel_values_give_reference_embeddings() {
        for name in CONFIGS {
            let embedder = load(name);
            for case in reference(name) {
                let got = embedder.embed_pixel_values(&case.pixels).unwrap();
                let diff = max_abs_diff(&got[0], &case.embedding);
                println!("{name} {} pixel_values max abs diff {diff:e}", case.image);
                assert!(diff < 1e-4, "{name} {}: {diff}", case.image);
            }
        }
    }

    #[test]
    fn decoded_images_give_reference_embeddings() {
        for name in CONFIGS {
            let embedder = load(name);
            for case in reference(name) {
                let path = fixtures().join("images").join(&case.image);
                let image = image::open(&path).unwrap().to_rgb8();
                let pixels = clip_pixel_values(&image, embedder.preprocess());
                let pixel_diff = max_abs_diff(&pixels, &case.pixels);
                let got = embedder.embed(&image).unwrap();
                let diff = max_abs_diff(&got, &case.embedding);
                println!(
                    "{name} {} full path: pixel max abs diff {pixel_diff:e}, embedding {diff:e}",
                    case.image
                );
                // The preprocessing ports Pillow and transformers bit for bit.
                assert_eq!(pixel_diff, 0.0, "{name} {}", case.image);
                assert!(diff < 1e-4, "{name} {}: {diff}", case.image);
            }
        }
    }

    #[test]
    fn batches_equal_singles() {
        let folder = fixtures().join("full_p16_s32");
        let options = ClipOptions {
            max_batch: 3,
            ..ClipOptions::default()
        };
        let embedder =
            ClipEmbedder::load_with(&ClipSource::Folder(folder), &Device::Cpu, options).unwrap();
        let images: Vec<RgbImage> = reference("full_p16_s32")
            .iter()
            .map(|c| {
                let path = fixtures().join("images").join(&c.image);
                image::open(path).unwrap().to_rgb8()
            })
            .collect();
        // 4 images with batches of 3: one full and one partial batch.
        let batched = embedder.embed_batch(&images).unwrap();
        assert_eq!(batched.len(), images.len());
        for (image, vector) in images.iter().zip(&batched) {
            let single = embedder.embed(image).unwrap();
            assert!(max_abs_diff(&single, vector) < 1e-6);
            let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
        }
        assert!(embedder.embed_batch(&[]).unwrap().is_empty());
    }

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

    #[test]
    fn id_and_dim_describe_the_model() {
        let embedder = load("full_p16_s32");
        // The stale `vision_config.projection_dim` (512) must not win.
        assert_eq!(embedder.dim(), 16);
        let digest = sha256_file(&fixtures().join("full_p16_s32").join(WEIGHTS_FILE)).unwrap();
        assert_eq!(embedder.id(), format!("clip:32/16/32x2:{}", &digest[..12]));
        assert_eq!(load("vision_p32_s64").dim(), 8);
        assert!(load("full_p8_s40_f16").id().starts_with("clip:40/8/24x3:"));
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

    /// Our vision tower against candle-transformers' (the fixtures with
    /// candle's fixed layer-norm epsilon).
    #[test]
    fn matches_candle_transformers_clip() {
        use candle_transformers::models::clip::vision_model::ClipVisionTransformer;
        for name in ["full_p16_s32", "vision_p32_s64"] {
            let embedder = load(name);
            let bytes = std::fs::read(fixtures().join(name).join(WEIGHTS_FILE)).unwrap();
            let vb =
                VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu).unwrap();
            let cfg = &embedder.config().vision;
            let stock = ClipVisionTransformer::new(vb.pp("vision_model"), cfg).unwrap();
            let projection = candle_nn::linear_no_bias(
                cfg.embed_dim,
                cfg.projection_dim,
                vb.pp("visual_projection"),
            )
            .unwrap();
            let cases = reference(name);
            let pixels: Vec<f32> = cases.iter().flat_map(|c| c.pixels.clone()).collect();
            let s = cfg.image_size;
            let input = Tensor::from_vec(pixels.clone(), (cases.len(), 3, s, s), &Device::Cpu);
            let theirs = projection
                .forward(&stock.forward(&input.unwrap()).unwrap())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let ours = embedder.embed_pixel_values(&pixels).unwrap();
            for (mut t, o) in theirs.into_iter().zip(ours) {
                l2_normalize(&mut t);
                assert!(max_abs_diff(&t, &o) < 1e-5);
            }
        }
    }

    #[test]
    fn wrong_pixel_count_is_an_error() {
        let err = load("full_p16_s32")
            .embed_pixel_values(&[0.0; 10])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("not a whole number of 3 x 32 x 32 images")
        );
    }

    #[test]
    fn fused_epilogues_match_candle_ops() {
        let dev = Device::Cpu;
        let ys = Tensor::randn(0f32, 2.0, (3, 5, 16), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 16, &dev).unwrap();
        let residual = Tensor::randn(0f32, 1.0, (3, 5, 16), &dev).unwrap();
        let positions = Tensor::randn(0f32, 1.0, (5, 16), &dev).unwrap();
        let close = |a: &Tensor, b: &Tensor| {
            let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(max_abs_diff(&a, &b) < 1e-6);
        };
        let biased = ys.broadcast_add(&bias).unwrap();
        let gelu =
            (&biased * candle_nn::ops::sigmoid(&(&biased * 1.702).unwrap()).unwrap()).unwrap();
        close(
            &fused::bias_act(ys.copy().unwrap(), &bias, fused::Act::QuickGelu).unwrap(),
            &gelu,
        );
        close(
            &fused::bias_act(ys.copy().unwrap(), &bias, fused::Act::Identity).unwrap(),
            &biased,
        );
        let expected = ys.broadcast_add(&positions).unwrap();
        let got = fused::bias_act(ys.copy().unwrap(), &positions, fused::Act::Identity).unwrap();
        close(&got, &expected);
        let expected = (&biased + &residual).unwrap();
        close(
            &fused::bias_residual(ys.copy().unwrap(), &bias, &residual).unwrap(),
            &expected,
        );
        // The inputs were copied: the originals are untouched.
        close(&ys.broadcast_add(&bias).unwrap(), &biased);
        // A pattern that does not tile the output is an error, not a panic.
        let odd = Tensor::zeros(7, DType::F32, &dev).unwrap();
        assert!(fused::bias_act(ys.copy().unwrap(), &odd, fused::Act::Identity).is_err());
    }

    #[test]
    fn embedder_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ClipEmbedder>();
    }

    #[test]
    fn unsupported_dtypes_are_refused() {
        let source = ClipSource::Folder(fixtures().join("full_p16_s32"));
        for (dtype, expected) in [
            (DType::BF16, "bf16 needs a CUDA device"),
            (DType::U8, "not u8"),
        ] {
            let options = ClipOptions {
                dtype,
                ..ClipOptions::default()
            };
            let err = ClipEmbedder::load_with(&source, &Device::Cpu, options).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[test]
    fn half_precision_stays_close() {
        let folder = fixtures().join("full_p16_s32");
        let options = ClipOptions {
            dtype: DType::F16,
            ..ClipOptions::default()
        };
        let embedder =
            ClipEmbedder::load_with(&ClipSource::Folder(folder), &Device::Cpu, options).unwrap();
        assert!(embedder.id().ends_with(":f16"));
        for case in reference("full_p16_s32") {
            let got = embedder.embed_pixel_values(&case.pixels).unwrap();
            let diff = max_abs_diff(&got[0], &case.embedding);
            println!("f16 {} max abs diff {diff:e}", case.image);
            assert!(diff < 2e-2, "{diff}");
        }
    }
}
