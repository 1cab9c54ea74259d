//! A user turn to model inputs, as `Qwen3VLProcessor` does it: render the chat
//! template, replace each image's single placeholder with one placeholder per
//! merged patch, tokenize, and preprocess the images.

use image::RgbImage;

use super::LocalError;
use super::image_processor::{ImageProcessorConfig, preprocess};
use super::model_dir::{ModelDir, ModelSource, TOKENIZER_FILE};
use super::template::{ChatTemplate, TurnPart};
use super::tokenizer::PromptTokenizer;

/// The placeholder Qwen's processors expand, one per image.
pub const IMAGE_TOKEN: &str = "<|image_pad|>";

/// Everything the model's forward pass takes for one user turn.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInputs {
    /// The rendered prompt, before image placeholders are expanded.
    pub prompt: String,
    pub input_ids: Vec<u32>,
    /// All images' patches, one after the other: `sum(t * h * w)` rows of
    /// `patch_dim` values.
    pub pixel_values: Vec<f32>,
    pub patch_dim: usize,
    /// `[t, h, w]` per image, in patches.
    pub image_grid_thw: Vec<[u32; 3]>,
}

/// The input side of a local model: template, tokenizer and image settings.
#[derive(Debug)]
pub struct Processor {
    pub dir: ModelDir,
    pub template: ChatTemplate,
    pub tokenizer: PromptTokenizer,
    pub image_config: ImageProcessorConfig,
}

impl Processor {
    pub fn load(source: &ModelSource) -> Result<Processor, LocalError> {
        let dir = ModelDir::open(source)?;
        let mut template = ChatTemplate::new(dir.chat_template()?, &dir.template_file);
        let tokenizer_config = dir.tokenizer_config()?;
        // transformers hands the template the tokenizer's named special tokens.
        for name in ["bos_token", "eos_token", "pad_token", "unk_token"] {
            if let Some(token) = special_token(&tokenizer_config, name) {
                template.special_tokens.push((name.to_owned(), token));
            }
        }
        let tokenizer = PromptTokenizer::load(&dir.folder.join(TOKENIZER_FILE))?;
        tokenizer.token_id(IMAGE_TOKEN)?;
        let image_config = ImageProcessorConfig::from_hf_json(&dir.image_processor_json()?)
            .map_err(|source| LocalError::ImageConfig {
                path: dir.processor_file.clone(),
                source,
            })?;
        Ok(Processor {
            dir,
            template,
            tokenizer,
            image_config,
        })
    }

    /// The prompt for one user turn: `images` image parts, then `text`.
    pub fn render_prompt(&self, images: usize, text: &str) -> Result<String, LocalError> {
        Ok(self.template.render_user_turn(images, text)?)
    }

    /// The model inputs for one user turn with these images (in order) and text.
    pub fn prepare(&self, images: &[RgbImage], text: &str) -> Result<ModelInputs, LocalError> {
        let prompt = self.render_prompt(images.len(), text)?;
        self.inputs_for(prompt, images)
    }

    /// The model inputs for an optional system message and one user turn of
    /// `parts` in order, `images` being the turn's images in the order of its
    /// image parts.
    pub fn prepare_turn(
        &self,
        system: Option<&str>,
        parts: &[TurnPart],
        images: &[RgbImage],
    ) -> Result<ModelInputs, LocalError> {
        let prompt = self.template.render_turn(system, parts)?;
        self.inputs_for(prompt, images)
    }

    fn inputs_for(&self, prompt: String, images: &[RgbImage]) -> Result<ModelInputs, LocalError> {
        let placeholders = prompt.matches(IMAGE_TOKEN).count();
        if placeholders != images.len() {
            return Err(LocalError::ImageCount {
                template: self.template.path.clone(),
                placeholders,
                images: images.len(),
            });
        }
        let mut pixel_values = Vec::new();
        let mut image_grid_thw = Vec::with_capacity(images.len());
        let mut expanded = String::with_capacity(prompt.len());
        let mut pieces = prompt.split(IMAGE_TOKEN);
        expanded.push_str(pieces.next().unwrap_or_default());
        for (index, (img, after)) in images.iter().zip(pieces).enumerate() {
            let patches = preprocess(img, &self.image_config)
                .map_err(|source| LocalError::Image { index, source })?;
            let tokens = patches.token_count(self.image_config.merge_size);
            expanded.reserve(tokens * IMAGE_TOKEN.len() + after.len());
            for _ in 0..tokens {
                expanded.push_str(IMAGE_TOKEN);
            }
            expanded.push_str(after);
            pixel_values.extend_from_slice(&patches.pixel_values);
            image_grid_thw.push(patches.grid_thw);
        }
        let input_ids = self.tokenizer.encode(&expanded)?;
        Ok(ModelInputs {
            prompt,
            input_ids,
            pixel_values,
            patch_dim: self.image_config.patch_dim(),
            image_grid_thw,
        })
    }
}

/// A special token as tokenizer_config.json writes it: a string, or an object
/// with `content`.
fn special_token(config: &serde_json::Value, name: &str) -> Option<String> {
    match config.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => other.get("content")?.as_str().map(str::to_owned),
    }
}
