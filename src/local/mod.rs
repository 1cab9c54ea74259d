//! A vision-language model run in-process (Qwen3-VL): finding its folder (and,
//! only when the user asks, fetching it into the Hugging Face cache), turning a
//! user turn (images, then text) into exactly the inputs transformers'
//! `Qwen3VLProcessor` gives the model, and running the model itself: vision
//! tower, M-RoPE text model with a KV cache, greedy or sampled decoding.

pub mod attention;
pub mod config;
pub mod download;
pub mod engine;
pub mod folder_check;
pub mod generate;
pub mod image_processor;
pub mod model;
pub mod model_dir;
pub mod norm;
pub mod pool;
pub mod processor;
pub mod rope;
pub mod template;
pub mod text;
pub mod tokenizer;
pub mod vision;
pub mod weights;

use std::path::PathBuf;

pub use config::ModelConfig;
pub use engine::{LocalModel, Reply, default_device, folder_sha256};
pub use generate::{Generation, SamplingOptions, StopReason, generate};
pub use image_processor::{ImageConfigError, ImagePatches, ImageProcessorConfig, ImageSizeError};
pub use model::Qwen3Vl;
pub use model_dir::{ModelDir, ModelSource};
pub use processor::{ModelInputs, Processor};
pub use rope::RopeIndexError;
pub use template::{ChatTemplate, TemplateError, TurnPart};
pub use tokenizer::{PromptTokenizer, TokenizerError};

/// What failed while opening a local model or building its inputs.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("the model folder {} does not exist", folder.display())]
    NoFolder { folder: PathBuf },
    #[error(
        "{repo}@{revision} is not in the local Hugging Face cache: {detail}; fetch it with `hf download {repo}`"
    )]
    NotInHfCache {
        repo: String,
        revision: String,
        detail: String,
    },
    #[error(
        "the model folder {} lacks {}; fetch them from the Hugging Face repository {repo} (for example `hf download {repo}`)",
        folder.display(),
        missing.join(", ")
    )]
    MissingFiles {
        folder: PathBuf,
        missing: Vec<String>,
        repo: String,
    },
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid JSON", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {detail}", path.display())]
    Config { path: PathBuf, detail: String },
    #[error("{}: image processor settings", path.display())]
    ImageConfig {
        path: PathBuf,
        #[source]
        source: ImageConfigError,
    },
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("image {index} of the turn")]
    Image {
        index: usize,
        #[source]
        source: ImageSizeError,
    },
    #[error(
        "the chat template {} wrote {placeholders} image placeholder(s) for {images} image(s)",
        template.display()
    )]
    ImageCount {
        template: PathBuf,
        placeholders: usize,
        images: usize,
    },
    #[error("{what}")]
    Model {
        what: &'static str,
        #[source]
        source: candle_core::Error,
    },
    #[error("image {index} of the turn ({})", path.display())]
    ReadImage {
        index: usize,
        path: PathBuf,
        #[source]
        source: crate::vision::decode::DecodeError,
    },
    #[error("the prompt has no tokens")]
    EmptyPrompt,
    #[error("the prompt's image placeholders do not match its images")]
    RopeIndex(#[from] RopeIndexError),
}
