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
//! the matmul outputs (`model`'s `fused`), and the last layer computes the class
//! token only. The tests check the result against transformers' (fixtures) and
//! against candle-transformers' implementation.
//!
//! `source` finds and checks a checkpoint without building anything (so the
//! settings tab can check a path as it is typed), `model` is the tower itself,
//! `embedder` is what the rest of the crate calls.

mod embedder;
mod fused;
mod model;
mod source;

use std::path::PathBuf;

pub use embedder::{ClipEmbedder, ClipOptions, HiddenState, default_device};
pub use model::ClipModelConfig;
pub use source::ClipSource;
// The local language-model backend finds its folders in the same cache.
pub(crate) use source::{hf_cache_root, hf_snapshot};

use super::embed::EmbedError;

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
pub(super) trait CandleContext<T> {
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

#[cfg(test)]
mod test_support;
