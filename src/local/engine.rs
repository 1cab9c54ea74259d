//! A local model ready to answer: its processor (template, tokenizer, image
//! settings), its weights and where its replies end.

use std::time::Instant;

use candle_core::{DType, Device};
use image::RgbImage;

use super::LocalError;
use super::generate::{Generation, SamplingOptions, generate, stop_tokens};
use super::model::Qwen3Vl;
use super::model_dir::ModelSource;
use super::processor::Processor;
use super::template::TurnPart;
use crate::jobs::CancelToken;

/// What one user turn produced.
#[derive(Debug, Clone)]
pub struct Reply {
    pub prompt_tokens: Vec<u32>,
    pub generation: Generation,
    /// The generated tokens decoded, special tokens left out.
    pub text: String,
}

/// A loaded local model; one conversation turn at a time.
pub struct LocalModel {
    pub processor: Processor,
    pub model: Qwen3Vl,
    pub stop: Vec<u32>,
    /// How long loading took, in milliseconds.
    pub load_ms: f64,
}

impl LocalModel {
    /// Opens the folder, checks its files and maps its weights in `dtype`
    /// (the stored one when `None`).
    pub fn load(
        source: &ModelSource,
        dtype: Option<DType>,
        device: &Device,
    ) -> Result<LocalModel, LocalError> {
        let started = Instant::now();
        let processor = Processor::load(source)?;
        let stop = stop_tokens(&processor.dir)?;
        let model = Qwen3Vl::load(&processor.dir, dtype, device)?;
        Ok(LocalModel {
            processor,
            model,
            stop,
            load_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// Answers one user turn: `images` (in order), then `text`.
    pub fn reply(
        &mut self,
        images: &[RgbImage],
        text: &str,
        options: &SamplingOptions,
        cancel: &CancelToken,
        on_token: impl FnMut(u32),
    ) -> Result<Reply, LocalError> {
        let inputs = self.processor.prepare(images, text)?;
        self.reply_to(inputs, options, cancel, on_token)
    }

    /// Answers an optional system message and one user turn of `parts` in
    /// order (`images` are its image parts' images, in order).
    pub fn reply_turn(
        &mut self,
        system: Option<&str>,
        parts: &[TurnPart],
        images: &[RgbImage],
        options: &SamplingOptions,
        cancel: &CancelToken,
        on_token: impl FnMut(u32),
    ) -> Result<Reply, LocalError> {
        let inputs = self.processor.prepare_turn(system, parts, images)?;
        self.reply_to(inputs, options, cancel, on_token)
    }

    fn reply_to(
        &mut self,
        inputs: super::processor::ModelInputs,
        options: &SamplingOptions,
        cancel: &CancelToken,
        on_token: impl FnMut(u32),
    ) -> Result<Reply, LocalError> {
        let generation = generate(
            &mut self.model,
            &inputs,
            &self.stop,
            options,
            cancel,
            on_token,
        )?;
        let text = self.processor.tokenizer.decode_reply(&generation.tokens)?;
        Ok(Reply {
            prompt_tokens: inputs.input_ids,
            generation,
            text,
        })
    }
}

/// The device a local model runs on: the first GPU in a `cuda` build, else the CPU.
pub fn default_device() -> Result<Device, LocalError> {
    #[cfg(feature = "cuda")]
    {
        Device::cuda_if_available(0).map_err(|source| LocalError::Model {
            what: "opening the GPU",
            source,
        })
    }
    #[cfg(not(feature = "cuda"))]
    {
        Ok(Device::Cpu)
    }
}

/// SHA-256 over a model folder's regular files (names sorted, each name and its
/// content's SHA-256), read through the HF cache's symlinks: what a run's manifest
/// records, so that a resume with other weights or another template is refused.
/// It reads every byte of the weights once (about 2 s per GB on this kind of disk).
pub fn folder_sha256(folder: &std::path::Path) -> Result<String, LocalError> {
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| LocalError::Io { path, source }
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(io(folder))? {
        let entry = entry.map_err(io(folder))?;
        let path = entry.path();
        // metadata() follows the snapshot's symlinks into blobs/.
        if std::fs::metadata(&path).map_err(io(&path))?.is_file() {
            names.push(entry.file_name());
        }
    }
    names.sort();
    let mut material = String::new();
    for name in names {
        let path = folder.join(&name);
        let digest = crate::util::fsx::sha256_file(&path).map_err(io(&path))?;
        material.push_str(&format!("{}\0{digest}\0", name.to_string_lossy()));
    }
    Ok(crate::util::fsx::sha256_bytes(material.as_bytes()))
}
