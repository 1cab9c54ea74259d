//! Qwen3-VL's language model: Qwen3 decoder layers (RMS-normed queries and
//! keys, grouped key/value heads) whose rotary angles come from three position
//! axes, with a key/value cache, and the deepstack visual features added after
//! the first layers.

use super::attention::attend;
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_nn::{Activation, Embedding, Linear, VarBuilder, linear_b};

use super::norm::RmsNorm;

use super::config::TextConfig;

/// Rotary angles for a run of positions, `positions x head_dim / 2`.
pub struct Rotary {
    pub cos: Tensor,
    pub sin: Tensor,
}

struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    act: Activation,
}

impl Mlp {
    fn new(vb: VarBuilder, cfg: &TextConfig) -> Result<Mlp> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Mlp {
            gate_proj: linear_b(h, i, false, vb.pp("gate_proj"))?,
            up_proj: linear_b(h, i, false, vb.pp("up_proj"))?,
            down_proj: linear_b(i, h, false, vb.pp("down_proj"))?,
            act: cfg.hidden_act,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate = xs.apply(&self.gate_proj)?.apply(&self.act)?;
        (gate * xs.apply(&self.up_proj)?)?.apply(&self.down_proj)
    }
}

struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    cache: KvCache,
}

impl Attention {
    fn new(vb: VarBuilder, cfg: &TextConfig) -> Result<Attention> {
        let (h, d, bias) = (cfg.hidden_size, cfg.head_dim, cfg.attention_bias);
        let q = cfg.num_attention_heads * d;
        let kv = cfg.num_key_value_heads * d;
        Ok(Attention {
            q_proj: linear_b(h, q, bias, vb.pp("q_proj"))?,
            k_proj: linear_b(h, kv, bias, vb.pp("k_proj"))?,
            v_proj: linear_b(h, kv, bias, vb.pp("v_proj"))?,
            o_proj: linear_b(q, h, bias, vb.pp("o_proj"))?,
            q_norm: RmsNorm::new(d, cfg.rms_norm_eps, vb.pp("q_norm"))?,
            k_norm: RmsNorm::new(d, cfg.rms_norm_eps, vb.pp("k_norm"))?,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: d,
            // Grows by this many positions whenever it fills up.
            cache: KvCache::new(2, 512),
        })
    }

    fn forward(&mut self, xs: &Tensor, rotary: &Rotary, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, len, _) = xs.dims3()?;
        let heads = |t: Tensor, n: usize| -> Result<Tensor> {
            t.reshape((b, len, n, self.head_dim))?.transpose(1, 2)
        };
        let q = heads(xs.apply(&self.q_proj)?, self.heads)?.apply(&self.q_norm)?;
        let k = heads(xs.apply(&self.k_proj)?, self.kv_heads)?.apply(&self.k_norm)?;
        let v = heads(xs.apply(&self.v_proj)?, self.kv_heads)?.contiguous()?;
        let q = candle_nn::rotary_emb::rope(&q.contiguous()?, &rotary.cos, &rotary.sin)?;
        let k = candle_nn::rotary_emb::rope(&k.contiguous()?, &rotary.cos, &rotary.sin)?;
        let (k, v) = self.cache.append(&k, &v)?;
        let groups = self.heads / self.kv_heads;
        let k = candle_transformers::utils::repeat_kv(k, groups)?.contiguous()?;
        let v = candle_transformers::utils::repeat_kv(v, groups)?.contiguous()?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        attend(&q, &k, &v, scale, mask)?
            .transpose(1, 2)?
            .reshape((b, len, self.heads * self.head_dim))?
            .apply(&self.o_proj)
    }
}

struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(vb: VarBuilder, cfg: &TextConfig) -> Result<DecoderLayer> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(DecoderLayer {
            input_layernorm: RmsNorm::new(h, eps, vb.pp("input_layernorm"))?,
            self_attn: Attention::new(vb.pp("self_attn"), cfg)?,
            post_attention_layernorm: RmsNorm::new(h, eps, vb.pp("post_attention_layernorm"))?,
            mlp: Mlp::new(vb.pp("mlp"), cfg)?,
        })
    }

    fn forward(&mut self, xs: &Tensor, rotary: &Rotary, mask: Option<&Tensor>) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&xs.apply(&self.input_layernorm)?, rotary, mask)?;
        let xs = (xs + attn)?;
        let mlp = xs.apply(&self.post_attention_layernorm)?.apply(&self.mlp)?;
        xs + mlp
    }
}

/// The language model with its cache; one sequence at a time.
pub struct TextModel {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    /// Positions already in the cache.
    cached: usize,
}

impl TextModel {
    /// `vb` is the checkpoint's root: the layers live under
    /// `model.language_model`, the head at `lm_head` unless tied.
    pub fn new(vb: VarBuilder, cfg: &TextConfig) -> Result<TextModel> {
        let vb_m = vb.pp("model").pp("language_model");
        let embed_tokens =
            candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, vb_m.pp("embed_tokens"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(vb_m.pp("layers").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, vb_m.pp("norm"))?;
        let lm_head = if cfg.tie_word_embeddings || !vb.contains_tensor("lm_head.weight") {
            Linear::new(embed_tokens.embeddings().clone(), None)
        } else {
            linear_b(cfg.hidden_size, cfg.vocab_size, false, vb.pp("lm_head"))?
        };
        Ok(TextModel {
            embed_tokens,
            layers,
            norm,
            lm_head,
            cached: 0,
        })
    }

    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed_tokens.forward(ids)
    }

    /// Positions already in the cache.
    pub fn cached(&self) -> usize {
        self.cached
    }

    pub fn clear_cache(&mut self) {
        for layer in &mut self.layers {
            layer.self_attn.cache.reset();
        }
        self.cached = 0;
    }

    /// Runs `embeds` (`1 x len x hidden`) after what the cache holds and
    /// returns the logits of the last position (`vocab`, f32). `deepstack[i]`,
    /// when given, is added to the hidden states after layer `i` (zero rows at
    /// text positions). `None` when `interrupted` says so between layers (the
    /// cache is then half written: the next prefill clears it).
    pub fn forward(
        &mut self,
        embeds: &Tensor,
        rotary: &Rotary,
        deepstack: &[Tensor],
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Option<Tensor>> {
        let (_, len, _) = embeds.dims3()?;
        let mask = if len > 1 {
            Some(causal_mask(len, self.cached, embeds.device())?)
        } else {
            None
        };
        let mut xs = embeds.clone();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            if interrupted() {
                return Ok(None);
            }
            xs = layer.forward(&xs, rotary, mask.as_ref())?;
            if let Some(visual) = deepstack.get(i) {
                xs = xs.broadcast_add(visual)?;
            }
        }
        self.cached += len;
        xs.narrow(1, len - 1, 1)?
            .apply(&self.norm)?
            .apply(&self.lm_head)?
            .flatten_all()?
            .to_dtype(DType::F32)
            .map(Some)
    }
}

/// `len x (cached + len)`: a query sees the cache and itself and what precedes it.
/// f32 whatever the weights' dtype: the scores it is added to are f32 (`attention`).
fn causal_mask(len: usize, cached: usize, device: &Device) -> Result<Tensor> {
    let total = cached + len;
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > cached + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (len, total), device)?
        .unsqueeze(0)?
        .unsqueeze(0)
}

/// The angles as tensors for `rope`.
pub fn rotary(
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    dtype: DType,
    device: &Device,
) -> Result<Rotary> {
    let n = cos.len() / half.max(1);
    Ok(Rotary {
        cos: Tensor::from_vec(cos, (n, half), device)?.to_dtype(dtype)?,
        sin: Tensor::from_vec(sin, (n, half), device)?.to_dtype(dtype)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_hides_only_later_positions() {
        let m = causal_mask(2, 3, &Device::Cpu).unwrap();
        let rows = m.squeeze(0).unwrap().squeeze(0).unwrap();
        let rows = rows.to_vec2::<f32>().unwrap();
        assert_eq!(rows[0], vec![0.0, 0.0, 0.0, 0.0, f32::NEG_INFINITY]);
        assert_eq!(rows[1], vec![0.0; 5]);
    }
}
