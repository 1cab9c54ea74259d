//! A vision-language model run in-process (Qwen3-VL): finding its folder and
//! turning a user turn (images, then text) into exactly the inputs
//! transformers' `Qwen3VLProcessor` gives the model: the prompt rendered by the
//! model's own chat template, its token ids with each image's placeholder
//! expanded to one token per merged patch, and the images' patches and grids.

pub mod download;
pub mod folder_check;
pub mod image_processor;
pub mod model_dir;
pub mod processor;
pub mod template;
pub mod tokenizer;

use std::path::PathBuf;

pub use image_processor::{ImageConfigError, ImagePatches, ImageProcessorConfig, ImageSizeError};
pub use model_dir::{ModelDir, ModelSource};
pub use processor::{ModelInputs, Processor};
pub use template::{ChatTemplate, TemplateError};
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
}
