//! DINOv2 ViT patch tokens on candle, from a Hugging Face `Dinov2Model` folder
//! or the local Hugging Face cache (never the network).
//!
//! The tower is implemented here rather than taken from
//! `candle_transformers::models::dinov2` because that one does not fit
//! transformers' checkpoints or numbers: it reads the original repository's
//! tensor names (`blocks.N.attn.qkv`, `ls1.gamma`) rather than transformers'
//! (`encoder.layer.N.attention.attention.query`, `layer_scale1.lambda1`),
//! hard-codes a 518-pixel, patch-14 model with a 1000-class head, uses a
//! layer-norm epsilon of 1e-5 (transformers' DINOv2 uses the config's
//! `layer_norm_eps`, 1e-6), the tanh approximation of GELU (transformers' `gelu`
//! is the exact one), and interpolates the position embeddings by nearest
//! neighbour where transformers uses bicubic (`align_corners=False`), which
//! every input other than the pre-training size goes through (a 224-pixel input
//! of a 518-pixel checkpoint included). Here all of them follow the config, and
//! `tests/fixtures/tiny_dinov2` (made by `scripts/make_tiny_dinov2.py`) checks
//! pixel values and hidden states against transformers.
//!
//! Supported: `model_type: dinov2` with the MLP feed-forward (small, base,
//! large). Refused with a message: the SwiGLU feed-forward (giant) and the
//! register variant (`dinov2_with_registers`), whose token layout differs.
//!
//! `source` finds and checks a checkpoint (files, config, tensor shapes),
//! `model` is the tower, [`Dinov2`] is what the rest of the crate calls.

mod model;
mod source;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

pub use model::Dinov2Config;
pub use source::Dinov2Source;

use crate::vision::preprocess::{ClipPreprocess, clip_pixel_values, clip_pixel_values_stretched};

/// Why a DINOv2 model could not be loaded or run. Each message names the file,
/// key or value at fault and, for missing files, what to fetch.
#[derive(Debug, thiserror::Error)]
pub enum Dinov2Error {
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
    #[error(
        "{} is missing: a DINOv2 folder needs {}, as transformers' `save_pretrained` \
         writes them (fetch them with e.g. `hf download facebook/dinov2-small`)",
        path.display(),
        source::REQUIRED_FILES.join(", ")
    )]
    MissingFile { path: PathBuf },
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
        "{} has no tensor `{key}`, which a DINOv2 model needs (is it a `Dinov2Model` \
         checkpoint?)",
        path.display()
    )]
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

/// Adds context to candle errors.
trait CandleContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Dinov2Error>;
}

impl<T> CandleContext<T> for candle_core::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Dinov2Error> {
        self.map_err(|source| Dinov2Error::Candle {
            context: what(),
            source,
        })
    }
}

/// One encoder output of one image, as transformers' `hidden_states[layer]`:
/// the class token first, then the patches row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct Dinov2State {
    /// 0 is the embeddings, `n` the output of encoder layer `n` (1-based).
    pub layer: usize,
    pub hidden: usize,
    /// `(1 + patches) * hidden` values.
    pub tokens: Vec<f32>,
}

impl Dinov2State {
    /// The patch tokens, without the class token.
    pub fn patches(&self) -> &[f32] {
        self.tokens.get(self.hidden..).unwrap_or(&[])
    }
}

/// A loaded DINOv2 tower with its preprocessing.
pub struct Dinov2 {
    model: model::Dinov2Model,
    config: Dinov2Config,
    preprocess: ClipPreprocess,
    device: Device,
    folder: PathBuf,
}

impl Dinov2 {
    /// Loads the checkpoint `source` names, in f32.
    pub fn load(source: &Dinov2Source, device: &Device) -> Result<Self, Dinov2Error> {
        let folder = source.resolve()?;
        let checked = source::check_folder(&folder)?;
        let weights = folder.join(source::WEIGHTS_FILE);
        // SAFETY: the map is only read while the model is built (every tensor is
        // copied out); a model folder in use is not truncated meanwhile.
        let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::new(&weights) }
            .context(|| format!("cannot open {} as safetensors", weights.display()))?;
        let mut vb = VarBuilder::from_backend(Box::new(tensors), DType::F32, device.clone());
        if let Some(p) = checked.prefix.strip_suffix('.') {
            vb = vb.pp(p);
        }
        let model = model::Dinov2Model::new(vb, &checked.config)
            .context(|| format!("cannot build the DINOv2 model from {}", weights.display()))?;
        Ok(Dinov2 {
            model,
            config: checked.config,
            preprocess: checked.preprocess,
            device: device.clone(),
            folder,
        })
    }

    pub fn config(&self) -> &Dinov2Config {
        &self.config
    }

    /// The folder's preprocessing (`preprocessor_config.json`).
    pub fn preprocess(&self) -> &ClipPreprocess {
        &self.preprocess
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// transformers' `BitImageProcessor` output for `image`: shortest edge
    /// resized (Pillow bicubic), centre crop, rescale, normalise; CHW of
    /// `crop x crop`.
    pub fn pixel_values(&self, image: &RgbImage) -> Vec<f32> {
        clip_pixel_values(image, &self.preprocess)
    }

    /// The whole image squeezed to `side x side` (no crop), normalised as
    /// [`Dinov2::pixel_values`].
    pub fn pixel_values_stretched(&self, image: &RgbImage, side: u32) -> Vec<f32> {
        clip_pixel_values_stretched(image, side, &self.preprocess)
    }

    /// The hidden states of `layers` (0 = embeddings, `n` = after encoder layer
    /// `n`) for a batch of CHW images of `height x width` pixels (multiples of
    /// the patch size), per image then per layer in the order asked.
    pub fn hidden_states(
        &self,
        pixels: &[f32],
        height: usize,
        width: usize,
        layers: &[usize],
    ) -> Result<Vec<Vec<Dinov2State>>, Dinov2Error> {
        let depth = self.config.num_hidden_layers;
        if let Some(bad) = layers.iter().find(|&&l| l > depth) {
            return Err(Dinov2Error::Input(format!(
                "layer {bad} asked for, but {} has {depth} layers",
                self.folder.display()
            )));
        }
        let p = self.config.patch_size;
        if height == 0 || width == 0 || !height.is_multiple_of(p) || !width.is_multiple_of(p) {
            return Err(Dinov2Error::Input(format!(
                "a {width} x {height} input is not a whole number of {p}-pixel patches"
            )));
        }
        let plane = 3 * height * width;
        if pixels.is_empty() || !pixels.len().is_multiple_of(plane) {
            return Err(Dinov2Error::Input(format!(
                "{} pixel values are not a batch of 3 x {height} x {width} images",
                pixels.len()
            )));
        }
        let batch = pixels.len() / plane;
        let input = Tensor::from_slice(pixels, (batch, 3, height, width), &self.device)
            .context(|| "cannot hold the pixel values".into())?;
        let states = self
            .model
            .hidden_states(&input, layers)
            .context(|| format!("running DINOv2 from {}", self.folder.display()))?;
        let hidden = self.config.hidden_size;
        let mut out: Vec<Vec<Dinov2State>> = (0..batch).map(|_| Vec::new()).collect();
        for (&layer, state) in layers.iter().zip(states) {
            let values: Vec<Vec<f32>> = state
                .to_dtype(DType::F32)
                .and_then(|t| t.flatten_from(1))
                .and_then(|t| t.to_vec2())
                .context(|| format!("reading layer {layer}'s hidden states"))?;
            for (per_image, tokens) in out.iter_mut().zip(values) {
                per_image.push(Dinov2State {
                    layer,
                    hidden,
                    tokens,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
