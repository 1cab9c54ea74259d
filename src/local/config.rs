//! `config.json` of a Qwen3-VL checkpoint: the text and vision towers' sizes and
//! the rotary settings, in both layouts transformers has written them
//! (`rope_parameters` in transformers 5, `rope_scaling` plus `rope_theta` in the
//! released checkpoints).

use candle_nn::Activation;
use serde::Deserialize;
use serde_json::Value;

/// The language model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub hidden_act: Activation,
    pub attention_bias: bool,
    pub rope_theta: f32,
    /// How many of the `head_dim / 2` frequencies each of the temporal, height
    /// and width positions drives.
    pub mrope_section: [usize; 3],
    /// Qwen3-VL interleaves the three axes' frequencies (T, H, W, T, H, W, ...)
    /// where Qwen2-VL gave each a contiguous block.
    pub mrope_interleaved: bool,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
}

/// The vision tower's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub hidden_act: Activation,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub in_channels: usize,
    pub patch_size: usize,
    pub spatial_merge_size: usize,
    pub temporal_patch_size: usize,
    pub out_hidden_size: usize,
    pub num_position_embeddings: usize,
    /// Vision blocks whose output, merged, is added to the first language
    /// layers' hidden states at the image positions.
    pub deepstack_visual_indexes: Vec<usize>,
    pub rope_theta: f32,
}

/// The whole model's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub image_token_id: u32,
    pub video_token_id: u32,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
}

#[derive(Deserialize)]
struct RawText {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_text_act")]
    hidden_act: Activation,
    #[serde(default)]
    attention_bias: bool,
    rope_theta: Option<f32>,
    rope_parameters: Option<Value>,
    rope_scaling: Option<Value>,
    tie_word_embeddings: Option<bool>,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
}

#[derive(Deserialize)]
struct RawVision {
    depth: usize,
    hidden_size: usize,
    #[serde(default = "default_vision_act")]
    hidden_act: Activation,
    intermediate_size: usize,
    num_heads: usize,
    #[serde(default = "default_in_channels")]
    in_channels: usize,
    patch_size: usize,
    #[serde(default = "default_merge")]
    spatial_merge_size: usize,
    #[serde(default = "default_merge")]
    temporal_patch_size: usize,
    out_hidden_size: usize,
    num_position_embeddings: usize,
    #[serde(default)]
    deepstack_visual_indexes: Vec<usize>,
    rope_parameters: Option<Value>,
    rope_theta: Option<f32>,
}

#[derive(Deserialize)]
struct RawConfig {
    text_config: RawText,
    vision_config: RawVision,
    image_token_id: u32,
    video_token_id: u32,
    vision_start_token_id: u32,
    vision_end_token_id: u32,
    tie_word_embeddings: Option<bool>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_text_act() -> Activation {
    Activation::Silu
}
fn default_vision_act() -> Activation {
    Activation::GeluPytorchTanh
}
fn default_max_positions() -> usize {
    262_144
}
fn default_in_channels() -> usize {
    3
}
fn default_merge() -> usize {
    2
}

impl ModelConfig {
    /// Parses `config.json`'s text; the error says which setting is wrong.
    pub fn from_json(text: &str) -> Result<ModelConfig, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let t = raw.text_config;
        // transformers 5 keeps everything in `rope_parameters`; the released
        // checkpoints split it into `rope_scaling` and a top-level `rope_theta`.
        let rope = t.rope_parameters.or(t.rope_scaling).unwrap_or(Value::Null);
        let rope_type = rope
            .get("rope_type")
            .or_else(|| rope.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if rope_type != "default" {
            return Err(format!(
                "text_config: rope_type `{rope_type}` is not supported (only `default`)"
            ));
        }
        let rope_theta = rope
            .get("rope_theta")
            .and_then(Value::as_f64)
            .map(|v| v as f32)
            .or(t.rope_theta)
            .ok_or("text_config: no rope_theta")?;
        let section: Vec<usize> = match rope.get("mrope_section") {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| format!("text_config: mrope_section: {e}"))?,
            None => return Err("text_config: no mrope_section".into()),
        };
        let mrope_section: [usize; 3] = section.try_into().map_err(|s: Vec<usize>| {
            format!("text_config: mrope_section has {} entries, not 3", s.len())
        })?;
        let head_dim = t
            .head_dim
            .unwrap_or(t.hidden_size / t.num_attention_heads.max(1));
        if mrope_section.iter().sum::<usize>() != head_dim / 2 {
            return Err(format!(
                "text_config: mrope_section {mrope_section:?} does not add up to head_dim / 2 = {}",
                head_dim / 2
            ));
        }
        let num_key_value_heads = t.num_key_value_heads.unwrap_or(t.num_attention_heads);
        if t.num_attention_heads == 0
            || num_key_value_heads == 0
            || !t.num_attention_heads.is_multiple_of(num_key_value_heads)
        {
            return Err(format!(
                "text_config: {} attention heads cannot share {num_key_value_heads} key/value heads",
                t.num_attention_heads
            ));
        }
        let v = raw.vision_config;
        if v.num_heads == 0 || !v.hidden_size.is_multiple_of(v.num_heads) {
            return Err(format!(
                "vision_config: hidden_size {} is not a multiple of num_heads {}",
                v.hidden_size, v.num_heads
            ));
        }
        let side = (v.num_position_embeddings as f64).sqrt() as usize;
        if side * side != v.num_position_embeddings || side == 0 {
            return Err(format!(
                "vision_config: num_position_embeddings {} is not a square",
                v.num_position_embeddings
            ));
        }
        if let Some(&bad) = v.deepstack_visual_indexes.iter().find(|&&i| i >= v.depth) {
            return Err(format!(
                "vision_config: deepstack index {bad} is past the last block ({})",
                v.depth
            ));
        }
        if v.deepstack_visual_indexes.len() > t.num_hidden_layers {
            return Err("vision_config: more deepstack mergers than language layers".into());
        }
        if v.spatial_merge_size == 0 || v.temporal_patch_size == 0 || v.patch_size == 0 {
            return Err("vision_config: patch, merge and temporal sizes must be positive".into());
        }
        let vision_theta = v
            .rope_parameters
            .as_ref()
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
            .map(|x| x as f32)
            .or(v.rope_theta)
            .unwrap_or(10_000.0);
        Ok(ModelConfig {
            text: TextConfig {
                vocab_size: t.vocab_size,
                hidden_size: t.hidden_size,
                intermediate_size: t.intermediate_size,
                num_hidden_layers: t.num_hidden_layers,
                num_attention_heads: t.num_attention_heads,
                num_key_value_heads,
                head_dim,
                rms_norm_eps: t.rms_norm_eps,
                hidden_act: t.hidden_act,
                attention_bias: t.attention_bias,
                rope_theta,
                mrope_section,
                mrope_interleaved: rope
                    .get("mrope_interleaved")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                tie_word_embeddings: raw
                    .tie_word_embeddings
                    .or(t.tie_word_embeddings)
                    .unwrap_or(false),
                max_position_embeddings: t.max_position_embeddings,
            },
            vision: VisionConfig {
                depth: v.depth,
                hidden_size: v.hidden_size,
                hidden_act: v.hidden_act,
                intermediate_size: v.intermediate_size,
                num_heads: v.num_heads,
                in_channels: v.in_channels,
                patch_size: v.patch_size,
                spatial_merge_size: v.spatial_merge_size,
                temporal_patch_size: v.temporal_patch_size,
                out_hidden_size: v.out_hidden_size,
                num_position_embeddings: v.num_position_embeddings,
                deepstack_visual_indexes: v.deepstack_visual_indexes,
                rope_theta: vision_theta,
            },
            image_token_id: raw.image_token_id,
            video_token_id: raw.video_token_id,
            vision_start_token_id: raw.vision_start_token_id,
            vision_end_token_id: raw.vision_end_token_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASED: &str = r#"{
      "image_token_id": 151655, "video_token_id": 151656,
      "vision_start_token_id": 151652, "vision_end_token_id": 151653,
      "tie_word_embeddings": true,
      "text_config": {
        "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
        "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
        "head_dim": 128, "rms_norm_eps": 1e-6, "hidden_act": "silu",
        "rope_scaling": {"mrope_interleaved": true, "mrope_section": [24, 20, 20], "rope_type": "default"},
        "rope_theta": 5000000, "tie_word_embeddings": true
      },
      "vision_config": {
        "depth": 24, "hidden_size": 1024, "hidden_act": "gelu_pytorch_tanh",
        "intermediate_size": 4096, "num_heads": 16, "in_channels": 3, "patch_size": 16,
        "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 2048,
        "num_position_embeddings": 2304, "deepstack_visual_indexes": [5, 11, 17]
      }
    }"#;

    #[test]
    fn reads_the_released_layout() {
        let c = ModelConfig::from_json(RELEASED).unwrap();
        assert_eq!(c.text.rope_theta, 5_000_000.0);
        assert_eq!(c.text.mrope_section, [24, 20, 20]);
        assert!(c.text.mrope_interleaved);
        assert!(c.text.tie_word_embeddings);
        assert_eq!(c.vision.hidden_act, Activation::GeluPytorchTanh);
        assert_eq!(c.vision.deepstack_visual_indexes, vec![5, 11, 17]);
        assert_eq!(c.vision.rope_theta, 10_000.0);
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        let yarn = RELEASED.replace(r#""rope_type": "default""#, r#""rope_type": "yarn""#);
        assert!(ModelConfig::from_json(&yarn).unwrap_err().contains("yarn"));
        let bad = RELEASED.replace("[24, 20, 20]", "[24, 20, 21]");
        assert!(
            ModelConfig::from_json(&bad)
                .unwrap_err()
                .contains("mrope_section")
        );
        let deep = RELEASED.replace("[5, 11, 17]", "[5, 11, 24]");
        assert!(
            ModelConfig::from_json(&deep)
                .unwrap_err()
                .contains("deepstack")
        );
    }
}
