//! The whole Qwen3-VL model over one conversation: weights memory-mapped from
//! the folder's safetensors, a prefill of the prompt (images through the vision
//! tower into their placeholder positions) and one-token steps after it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::LocalError;
use super::config::ModelConfig;
use super::model_dir::{CONFIG_FILE, ModelDir, WEIGHTS_INDEX_FILE};
use super::processor::ModelInputs;
use super::rope::{MropeTable, rope_index};
use super::text::{TextModel, rotary};
use super::vision::VisionModel;
use super::weights::ReleasingWeights;

/// A loaded model and the state of the conversation in its cache.
pub struct Qwen3Vl {
    pub config: ModelConfig,
    pub dtype: DType,
    pub device: Device,
    vision: VisionModel,
    text: TextModel,
    rope: MropeTable,
    /// The rotary position of the next token fed to [`Qwen3Vl::step`].
    next_position: u32,
}

fn model_err(what: &'static str) -> impl Fn(candle_core::Error) -> LocalError {
    move |source| LocalError::Model { what, source }
}

/// The dtype a checkpoint's `config.json` says its weights are stored in.
pub fn stored_dtype(config: &serde_json::Value) -> Option<DType> {
    let name = ["dtype", "torch_dtype"].iter().find_map(|key| {
        config
            .get(key)
            .or_else(|| config.get("text_config").and_then(|t| t.get(key)))
            .and_then(serde_json::Value::as_str)
    })?;
    match name {
        "float32" => Some(DType::F32),
        "bfloat16" => Some(DType::BF16),
        "float16" => Some(DType::F16),
        _ => None,
    }
}

/// The safetensors files of a checkpoint: the one file, or every shard the index names.
pub fn weight_files(weights: &Path) -> Result<Vec<PathBuf>, LocalError> {
    if weights.file_name().is_none_or(|n| n != WEIGHTS_INDEX_FILE) {
        return Ok(vec![weights.to_path_buf()]);
    }
    let text = std::fs::read_to_string(weights).map_err(|source| LocalError::Io {
        path: weights.to_path_buf(),
        source,
    })?;
    let index: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| LocalError::Json {
            path: weights.to_path_buf(),
            source,
        })?;
    let map = index
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| LocalError::Config {
            path: weights.to_path_buf(),
            detail: "no `weight_map` object".into(),
        })?;
    let folder = weights.parent().unwrap_or(Path::new("."));
    let mut names = BTreeSet::new();
    for file in map.values() {
        let name = file.as_str().unwrap_or_default();
        // A shard name is a file beside the index, never a path elsewhere.
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(LocalError::Config {
                path: weights.to_path_buf(),
                detail: format!("shard name {file} is not a file name"),
            });
        }
        names.insert(name.to_owned());
    }
    let files: Vec<PathBuf> = names.iter().map(|n| folder.join(n)).collect();
    let missing: Vec<String> = names
        .iter()
        .zip(&files)
        .filter(|(_, p)| !p.is_file())
        .map(|(n, _)| n.clone())
        .collect();
    if !missing.is_empty() {
        return Err(LocalError::MissingFiles {
            folder: folder.to_path_buf(),
            missing,
            repo: String::new(),
        });
    }
    Ok(files)
}

impl Qwen3Vl {
    /// Loads the model of `dir` in `dtype` (the stored one when `None`, f32
    /// where the config names none) onto `device`.
    pub fn load(
        dir: &ModelDir,
        dtype: Option<DType>,
        device: &Device,
    ) -> Result<Qwen3Vl, LocalError> {
        let config_path = dir.folder.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).map_err(|source| LocalError::Io {
            path: config_path.clone(),
            source,
        })?;
        let config = ModelConfig::from_json(&text).map_err(|detail| LocalError::Config {
            path: config_path.clone(),
            detail,
        })?;
        let raw: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| LocalError::Json {
                path: config_path.clone(),
                source,
            })?;
        let dtype = dtype.or_else(|| stored_dtype(&raw)).unwrap_or(DType::F32);
        let files = weight_files(&dir.weights()?).map_err(|e| match e {
            LocalError::MissingFiles {
                folder, missing, ..
            } => LocalError::MissingFiles {
                folder,
                missing,
                repo: dir.repo.clone(),
            },
            other => other,
        })?;
        // SAFETY: the files are mapped read-only; like every safetensors
        // reader, we rely on nobody truncating them while the model is loaded.
        let weights =
            unsafe { ReleasingWeights::open(&files) }.map_err(model_err("mapping the weights"))?;
        let vb = VarBuilder::from_backend(Box::new(weights), dtype, device.clone());
        let vision = VisionModel::new(vb.pp("model").pp("visual"), &config.vision)
            .map_err(model_err("loading the vision tower"))?;
        let text = TextModel::new(vb.clone(), &config.text)
            .map_err(model_err("loading the language model"))?;
        let t = &config.text;
        let rope = MropeTable::new(
            t.head_dim,
            t.rope_theta,
            t.mrope_section,
            t.mrope_interleaved,
        );
        Ok(Qwen3Vl {
            config,
            dtype,
            device: device.clone(),
            vision,
            text,
            rope,
            next_position: 0,
        })
    }

    /// Forgets the conversation and runs `inputs` from the start; returns the
    /// logits (f32) of the token that follows the prompt, or `None` when
    /// `interrupted` says so first (asked before each of the vision tower's
    /// blocks and each text layer, so a long prefill stops within one layer).
    pub fn prefill(
        &mut self,
        inputs: &ModelInputs,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Option<Vec<f32>>, LocalError> {
        self.text.clear_cache();
        let ids = &inputs.input_ids;
        if ids.is_empty() {
            return Err(LocalError::EmptyPrompt);
        }
        let merge = self.config.vision.spatial_merge_size as u32;
        let positions = rope_index(
            ids,
            self.config.image_token_id,
            &inputs.image_grid_thw,
            merge,
        )?;
        let err = model_err("the prefill");
        let id_tensor = Tensor::new(ids.as_slice(), &self.device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(&err)?;
        let text_embeds = self.text.embed(&id_tensor).map_err(&err)?;
        let (embeds, deepstack) = if inputs.image_grid_thw.is_empty() {
            (text_embeds, Vec::new())
        } else {
            match self.merge_images(ids, text_embeds, inputs, interrupted)? {
                Some(merged) => merged,
                None => return Ok(None),
            }
        };
        let [t, h, w] = &positions.rows;
        let (cos, sin) = self.rope.cos_sin(&[t, h, w]);
        let rot = rotary(cos, sin, self.rope.half_dim(), self.dtype, &self.device).map_err(&err)?;
        let Some(logits) = self
            .text
            .forward(&embeds, &rot, &deepstack, interrupted)
            .and_then(|l| l.map(|l| l.to_vec1::<f32>()).transpose())
            .map_err(&err)?
        else {
            return Ok(None);
        };
        self.next_position = positions.next;
        Ok(Some(logits))
    }

    /// Feeds one more token after the prefill (or the last step); returns the
    /// logits of the token after it.
    pub fn step(&mut self, token: u32) -> Result<Vec<f32>, LocalError> {
        let err = model_err("a decoding step");
        let id = Tensor::new(&[[token]], &self.device).map_err(&err)?;
        let embeds = self.text.embed(&id).map_err(&err)?;
        let p = [self.next_position];
        let (cos, sin) = self.rope.cos_sin(&[&p, &p, &p]);
        let rot = rotary(cos, sin, self.rope.half_dim(), self.dtype, &self.device).map_err(&err)?;
        let logits = self
            .text
            .forward(&embeds, &rot, &[], &|| false)
            .and_then(|l| l.map(|l| l.to_vec1::<f32>()).transpose())
            .map_err(&err)?
            .ok_or(LocalError::Model {
                what: "a decoding step",
                source: candle_core::Error::Msg("interrupted without a cancel".into()),
            })?;
        self.next_position += 1;
        Ok(logits)
    }

    /// Positions in the cache.
    pub fn cached(&self) -> usize {
        self.text.cached()
    }

    /// The prompt's embeddings with the vision tower's output in place of the
    /// image placeholders, and per deepstack layer what is added after it
    /// (visual features at image positions, zeros elsewhere).
    fn merge_images(
        &self,
        ids: &[u32],
        text_embeds: Tensor,
        inputs: &ModelInputs,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Option<(Tensor, Vec<Tensor>)>, LocalError> {
        let err = model_err("the vision tower");
        let rows = inputs.pixel_values.len() / inputs.patch_dim.max(1);
        let pixels =
            Tensor::from_slice(&inputs.pixel_values, (rows, inputs.patch_dim), &self.device)
                .map_err(&err)?;
        let Some(out) = self
            .vision
            .forward(&pixels, &inputs.image_grid_thw, interrupted)
            .map_err(&err)?
        else {
            return Ok(None);
        };
        let dtype = text_embeds.dtype();
        let hidden = self.config.text.hidden_size;
        let image = self.config.image_token_id;
        let err = model_err("placing the image features");
        let mut runs = Vec::new();
        let mut start = 0;
        while start < ids.len() {
            let is_image = ids[start] == image;
            let len = ids[start..]
                .iter()
                .take_while(|&&i| (i == image) == is_image)
                .count();
            runs.push((is_image, start, len));
            start += len;
        }
        let place = |visual: &Tensor, text: Option<&Tensor>| -> candle_core::Result<Tensor> {
            let visual = visual.to_dtype(dtype)?;
            let mut offset = 0;
            let mut parts = Vec::with_capacity(runs.len());
            for &(is_image, start, len) in &runs {
                if is_image {
                    parts.push(visual.narrow(0, offset, len)?);
                    offset += len;
                } else if let Some(text) = text {
                    parts.push(text.narrow(0, start, len)?);
                } else {
                    parts.push(Tensor::zeros((len, hidden), dtype, &self.device)?);
                }
            }
            Tensor::cat(&parts, 0)?.unsqueeze(0)
        };
        let text_rows = text_embeds.squeeze(0).map_err(&err)?;
        let embeds = place(&out.embeds, Some(&text_rows)).map_err(&err)?;
        let deepstack = out
            .deepstack
            .iter()
            .map(|d| place(d, None))
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(&err)?;
        Ok(Some((embeds, deepstack)))
    }
}
