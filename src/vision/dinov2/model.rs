//! The DINOv2 tower as transformers' `Dinov2Model` computes it: patch
//! convolution, class token, bicubically interpolated position embeddings,
//! pre-norm layers with layer scale, exact GELU.

use candle_core::{DType, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, LayerNorm, Linear, VarBuilder};

/// The hyper-parameters of a `Dinov2Model` (config.json).
#[derive(Debug, Clone, PartialEq)]
pub struct Dinov2Config {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// `int(hidden_size * mlp_ratio)`, as transformers sizes `fc1`.
    pub intermediate_size: usize,
    pub layer_norm_eps: f64,
    /// The pre-training input side, which sizes the position embeddings.
    pub image_size: usize,
    pub patch_size: usize,
    pub qkv_bias: bool,
}

impl Dinov2Config {
    /// Position embeddings per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Every tensor a checkpoint must hold (without the key prefix), with its
    /// shape.
    pub(super) fn required_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (h, m, p, g) = (
            self.hidden_size,
            self.intermediate_size,
            self.patch_size,
            self.grid(),
        );
        let mut out = vec![
            ("embeddings.cls_token".to_string(), vec![1, 1, h]),
            (
                "embeddings.position_embeddings".to_string(),
                vec![1, g * g + 1, h],
            ),
            (
                "embeddings.patch_embeddings.projection.weight".to_string(),
                vec![h, 3, p, p],
            ),
            (
                "embeddings.patch_embeddings.projection.bias".to_string(),
                vec![h],
            ),
        ];
        for i in 0..self.num_hidden_layers {
            let l = format!("encoder.layer.{i}");
            let mut add = |key: &str, shape: Vec<usize>| out.push((format!("{l}.{key}"), shape));
            for name in ["query", "key", "value"] {
                add(&format!("attention.attention.{name}.weight"), vec![h, h]);
                if self.qkv_bias {
                    add(&format!("attention.attention.{name}.bias"), vec![h]);
                }
            }
            add("attention.output.dense.weight", vec![h, h]);
            add("attention.output.dense.bias", vec![h]);
            for norm in ["norm1", "norm2"] {
                add(&format!("{norm}.weight"), vec![h]);
                add(&format!("{norm}.bias"), vec![h]);
            }
            add("layer_scale1.lambda1", vec![h]);
            add("layer_scale2.lambda1", vec![h]);
            add("mlp.fc1.weight", vec![m, h]);
            add("mlp.fc1.bias", vec![m]);
            add("mlp.fc2.weight", vec![h, m]);
            add("mlp.fc2.bias", vec![h]);
        }
        out
    }
}

/// PyTorch's cubic convolution coefficient (`A = -0.75`).
const CUBIC_A: f64 = -0.75;

/// The four tap weights of PyTorch's bicubic kernel at fraction `t`.
fn cubic_weights(t: f64) -> [f64; 4] {
    let near = |x: f64| ((CUBIC_A + 2.0) * x - (CUBIC_A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((CUBIC_A * x - 5.0 * CUBIC_A) * x + 8.0 * CUBIC_A) * x - 4.0 * CUBIC_A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// For each output index, the four clamped input indices and their weights, as
/// `torch.nn.functional.interpolate(mode="bicubic", align_corners=False)` with
/// an output size (scale `input / output`; the source coordinate is not clamped
/// below zero for cubic, the taps are clamped to the edge).
fn cubic_taps(input: usize, output: usize) -> Vec<([usize; 4], [f64; 4])> {
    let scale = input as f64 / output as f64;
    let last = input as i64 - 1;
    (0..output)
        .map(|o| {
            let src = scale * (o as f64 + 0.5) - 0.5;
            let base = src.floor();
            let weights = cubic_weights(src - base);
            let base = base as i64;
            let index = |k: i64| (base - 1 + k).clamp(0, last) as usize;
            ([index(0), index(1), index(2), index(3)], weights)
        })
        .collect()
}

/// Bicubic resampling of a `grid x grid` map of `dim`-vectors (row-major) to
/// `rows x cols`, as transformers' `interpolate_pos_encoding` does it.
pub(super) fn interpolate_positions(
    values: &[f32],
    grid: usize,
    dim: usize,
    rows: usize,
    cols: usize,
) -> Vec<f32> {
    let ys = cubic_taps(grid, rows);
    let xs = cubic_taps(grid, cols);
    let mut out = vec![0f32; rows * cols * dim];
    let mut acc = vec![0f64; dim];
    for (r, (yi, yw)) in ys.iter().enumerate() {
        for (c, (xi, xw)) in xs.iter().enumerate() {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for (&y, &wy) in yi.iter().zip(yw) {
                for (&x, &wx) in xi.iter().zip(xw) {
                    let w = wy * wx;
                    let src = &values[(y * grid + x) * dim..][..dim];
                    for (a, &v) in acc.iter_mut().zip(src) {
                        *a += w * f64::from(v);
                    }
                }
            }
            let dst = &mut out[(r * cols + c) * dim..][..dim];
            for (d, a) in dst.iter_mut().zip(&acc) {
                *d = *a as f32;
            }
        }
    }
    out
}

#[derive(Debug)]
struct Embeddings {
    projection: Conv2d,
    cls_token: Tensor,
    /// `position_embeddings[0]`, shape `(1, 1, hidden)`.
    cls_position: Tensor,
    /// `position_embeddings[1..]` row-major, for interpolation.
    patch_positions: Vec<f32>,
    /// The same as a tensor `(1, grid * grid, hidden)`, used as is when the
    /// input is the pre-training size.
    patch_positions_tensor: Tensor,
    grid: usize,
    hidden: usize,
    patch: usize,
}

impl Embeddings {
    fn new(vb: VarBuilder, cfg: &Dinov2Config) -> candle_core::Result<Self> {
        let (h, g, p) = (cfg.hidden_size, cfg.grid(), cfg.patch_size);
        let conv = Conv2dConfig {
            stride: p,
            ..Default::default()
        };
        let projection =
            candle_nn::conv2d(3, h, p, conv, vb.pp("patch_embeddings").pp("projection"))?;
        let cls_token = vb.get((1, 1, h), "cls_token")?;
        let positions = vb.get((1, g * g + 1, h), "position_embeddings")?;
        let cls_position = positions.narrow(1, 0, 1)?.contiguous()?;
        let patch_positions_tensor = positions.narrow(1, 1, g * g)?.contiguous()?;
        let patch_positions = patch_positions_tensor.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self {
            projection,
            cls_token,
            cls_position,
            patch_positions,
            patch_positions_tensor,
            grid: g,
            hidden: h,
            patch: p,
        })
    }

    fn forward(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, _, height, width) = pixels.dims4()?;
        let (rows, cols) = (height / self.patch, width / self.patch);
        let patches = self
            .projection
            .forward(pixels)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let positions = if rows == self.grid && cols == self.grid {
            self.patch_positions_tensor.clone()
        } else {
            let values =
                interpolate_positions(&self.patch_positions, self.grid, self.hidden, rows, cols);
            Tensor::from_vec(values, (1, rows * cols, self.hidden), pixels.device())?
        };
        let cls = (&self.cls_token + &self.cls_position)?.broadcast_as((batch, 1, self.hidden))?;
        let patches = patches.broadcast_add(&positions)?;
        Tensor::cat(&[&cls, &patches], 1)
    }
}

#[derive(Debug)]
struct Layer {
    norm1: LayerNorm,
    /// Query, key and value as one matmul.
    qkv: Linear,
    output: Linear,
    scale1: Tensor,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    scale2: Tensor,
    heads: usize,
    head_dim: usize,
}

fn norm(vb: VarBuilder, dim: usize, eps: f64) -> candle_core::Result<LayerNorm> {
    let weight = vb.get(dim, "weight")?;
    let bias = vb.get(dim, "bias")?;
    Ok(LayerNorm::new(weight, bias, eps))
}

fn linear(vb: VarBuilder, input: usize, output: usize) -> candle_core::Result<Linear> {
    let weight = vb.get((output, input), "weight")?;
    let bias = vb.get(output, "bias")?;
    Ok(Linear::new(weight, Some(bias)))
}

impl Layer {
    fn new(vb: VarBuilder, cfg: &Dinov2Config) -> candle_core::Result<Self> {
        let (h, m, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let attn = vb.pp("attention").pp("attention");
        let mut weights = Vec::with_capacity(3);
        let mut biases = Vec::with_capacity(3);
        for name in ["query", "key", "value"] {
            weights.push(attn.pp(name).get((h, h), "weight")?);
            biases.push(if cfg.qkv_bias {
                attn.pp(name).get(h, "bias")?
            } else {
                Tensor::zeros(h, DType::F32, vb.device())?
            });
        }
        let qkv = Linear::new(Tensor::cat(&weights, 0)?, Some(Tensor::cat(&biases, 0)?));
        Ok(Self {
            norm1: norm(vb.pp("norm1"), h, eps)?,
            qkv,
            output: linear(vb.pp("attention").pp("output").pp("dense"), h, h)?,
            scale1: vb.pp("layer_scale1").get(h, "lambda1")?,
            norm2: norm(vb.pp("norm2"), h, eps)?,
            fc1: linear(vb.pp("mlp").pp("fc1"), h, m)?,
            fc2: linear(vb.pp("mlp").pp("fc2"), m, h)?,
            scale2: vb.pp("layer_scale2").get(h, "lambda1")?,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, h) = xs.dims3()?;
        let qkv = self
            .qkv
            .forward(&self.norm1.forward(xs)?)?
            .reshape((b, n, 3, self.heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        // transformers scales the scores after the product, not the queries.
        let scores = (q.matmul(&k.t()?)? * (self.head_dim as f64).powf(-0.5))?;
        let attention = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = attention.matmul(&v)?.transpose(1, 2)?.reshape((b, n, h))?;
        let attended = self.output.forward(&context)?.broadcast_mul(&self.scale1)?;
        let xs = (attended + xs)?;
        let mlp = self
            .fc2
            .forward(&self.fc1.forward(&self.norm2.forward(&xs)?)?.gelu_erf()?)?
            .broadcast_mul(&self.scale2)?;
        mlp + xs
    }
}

/// The tower, without the final layer norm (hidden states are read before it,
/// as transformers' `output_hidden_states` gives them).
#[derive(Debug)]
pub(super) struct Dinov2Model {
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

impl Dinov2Model {
    pub(super) fn new(vb: VarBuilder, cfg: &Dinov2Config) -> candle_core::Result<Self> {
        let embeddings = Embeddings::new(vb.pp("embeddings"), cfg)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(vb.pp("encoder").pp("layer").pp(i.to_string()), cfg))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { embeddings, layers })
    }

    /// `(batch, tokens, hidden)` for each of `layers` in the order asked, running
    /// only as deep as the deepest one.
    pub(super) fn hidden_states(
        &self,
        pixels: &Tensor,
        layers: &[usize],
    ) -> candle_core::Result<Vec<Tensor>> {
        let deepest = layers.iter().copied().max().unwrap_or(0);
        if deepest > self.layers.len() {
            candle_core::bail!(
                "layer {deepest} asked for of a {}-layer model",
                self.layers.len()
            );
        }
        let mut states = Vec::with_capacity(deepest + 1);
        let mut xs = self.embeddings.forward(pixels)?;
        states.push(xs.clone());
        for layer in &self.layers[..deepest] {
            xs = layer.forward(&xs)?;
            states.push(xs.clone());
        }
        Ok(layers.iter().map(|&l| states[l].clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_taps_follow_torch_at_the_edges_and_sum_to_one() {
        // 4 -> 3 (shrinking): source centres at 0.1667, 1.5, 2.8333.
        let taps = cubic_taps(4, 3);
        assert_eq!(taps[0].0, [0, 0, 1, 2]);
        assert_eq!(taps[2].0, [1, 2, 3, 3]);
        for (_, w) in &taps {
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        // Same size: the identity (the fraction is 0, weights 0, 1, 0, 0).
        let values: Vec<f32> = (0..2 * 2 * 3).map(|v| v as f32).collect();
        assert_eq!(interpolate_positions(&values, 2, 3, 2, 2), values);
        // A constant map stays constant whatever the output shape.
        let flat = vec![0.5f32; 4 * 4 * 2];
        let out = interpolate_positions(&flat, 4, 2, 3, 7);
        assert_eq!(out.len(), 3 * 7 * 2);
        assert!(out.iter().all(|v| (v - 0.5).abs() < 1e-6));
        // Negative source coordinates are not clamped for cubic (torch's rule):
        // upsampling 2 -> 4 puts output 0 at -0.25, so its weights differ from
        // output 1's (+0.25) mirrored.
        let up = cubic_taps(2, 4);
        assert_eq!(up[0].0, [0, 0, 0, 1]);
        assert!((up[0].1[1] - cubic_weights(0.75)[1]).abs() < 1e-12);
    }
}
