//! The CLIP vision tower and its visual projection, layer by layer in
//! candle's style: a config struct, `new(vb, &cfg)` per layer, chained
//! `forward`s.

use candle_core::{D, DType, IndexOp, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::vision_model::ClipVisionConfig;

use super::fused;
use crate::vision::cpu_matmul;
use crate::vision::packed_matmul::{MatmulChoice, PackedMatrix};

/// Vision-tower hyper-parameters: candle's config plus the layer-norm epsilon,
/// which candle's own CLIP hard-codes.
#[derive(Debug, Clone)]
pub struct ClipModelConfig {
    pub vision: ClipVisionConfig,
    pub layer_norm_eps: f64,
}

impl ClipModelConfig {
    /// Patches per side (transformers' stride-`patch_size` convolution drops
    /// any remainder).
    pub(super) fn grid(&self) -> usize {
        self.vision.image_size / self.vision.patch_size
    }

    /// Every tensor the vision tower needs, with its shape, relative to the
    /// checkpoint's `vision_model.` / `visual_projection.` root.
    pub(super) fn required_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let c = &self.vision;
        let (h, i) = (c.embed_dim, c.intermediate_size);
        let p = c.patch_size;
        let e = "vision_model.embeddings";
        let mut keys = vec![
            (format!("{e}.class_embedding"), vec![h]),
            (
                format!("{e}.patch_embedding.weight"),
                vec![h, c.num_channels, p, p],
            ),
            (
                format!("{e}.position_embedding.weight"),
                vec![self.grid().pow(2) + 1, h],
            ),
            ("vision_model.pre_layrnorm.weight".into(), vec![h]),
            ("vision_model.pre_layrnorm.bias".into(), vec![h]),
        ];
        for l in 0..c.num_hidden_layers {
            let l = format!("vision_model.encoder.layers.{l}");
            for norm in ["layer_norm1", "layer_norm2"] {
                keys.push((format!("{l}.{norm}.weight"), vec![h]));
                keys.push((format!("{l}.{norm}.bias"), vec![h]));
            }
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                keys.push((format!("{l}.self_attn.{proj}.weight"), vec![h, h]));
                keys.push((format!("{l}.self_attn.{proj}.bias"), vec![h]));
            }
            keys.push((format!("{l}.mlp.fc1.weight"), vec![i, h]));
            keys.push((format!("{l}.mlp.fc1.bias"), vec![i]));
            keys.push((format!("{l}.mlp.fc2.weight"), vec![h, i]));
            keys.push((format!("{l}.mlp.fc2.bias"), vec![h]));
        }
        keys.push(("vision_model.post_layernorm.weight".into(), vec![h]));
        keys.push(("vision_model.post_layernorm.bias".into(), vec![h]));
        keys.push(("visual_projection.weight".into(), vec![c.projection_dim, h]));
        keys
    }
}

/// How the tower's layers are built: the dtype of weights and activations,
/// and which CPU matmul the dense layers use.
#[derive(Debug, Clone, Copy)]
pub(super) struct Build {
    pub dtype: DType,
    pub matmul: MatmulChoice,
}

/// A dense layer's weight, stored transposed `(in, out)`: packed for
/// [`PackedMatrix`] where that kernel runs, else contiguous so gemm streams
/// it row by row (one copy either way).
#[derive(Debug, Clone)]
enum Weight {
    Packed(PackedMatrix),
    Plain(Tensor),
}

#[derive(Debug, Clone)]
struct Dense {
    weight_t: Weight,
    bias: Option<Tensor>,
}

impl Dense {
    /// From a transformers `(out, in)` weight and optional bias, in f32.
    fn from_f32(weight: &Tensor, bias: Option<Tensor>, build: Build) -> candle_core::Result<Self> {
        let weight_t = weight.t()?.contiguous()?.to_dtype(build.dtype)?;
        let weight_t = match PackedMatrix::pack(&weight_t, build.matmul)? {
            Some(packed) => Weight::Packed(packed),
            None => Weight::Plain(weight_t),
        };
        Ok(Self {
            weight_t,
            bias: bias.map(|b| b.to_dtype(build.dtype)).transpose()?,
        })
    }

    fn new(
        vb: &VarBuilder,
        out_dim: usize,
        in_dim: usize,
        build: Build,
    ) -> candle_core::Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = vb.get(out_dim, "bias")?;
        Self::from_f32(&weight, Some(bias), build)
    }

    /// `xs @ W^T` without the bias, shaped like `xs` with the last dimension
    /// replaced (a fresh tensor, so epilogues may work in place).
    fn matmul(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let dims = xs.dims();
        let in_dim = dims.last().copied().unwrap_or(1);
        let rows = xs.elem_count() / in_dim.max(1);
        let mut out_dims = dims.to_vec();
        let rows_in = xs.reshape((rows, in_dim))?;
        let ys = match &self.weight_t {
            Weight::Packed(w) if cpu_matmul::handles(xs) => w.matmul(&rows_in)?,
            Weight::Packed(w) => {
                // Only a CPU f32 input meets packed weights (they are made
                // for those alone); anything else is a caller's mistake.
                candle_core::bail!(
                    "dense layer ({:?}): packed f32 weights met a {:?} input on {:?}",
                    w.dims(),
                    xs.dtype(),
                    xs.device().location()
                )
            }
            Weight::Plain(w) => cpu_matmul::matmul(&rows_in, w)?,
        };
        if let Some(last) = out_dims.last_mut() {
            *last = ys.dim(1)?;
        }
        ys.reshape(out_dims)
    }

    /// `act(xs @ W^T + b)`.
    fn forward_act(&self, xs: &Tensor, act: fused::Act) -> candle_core::Result<Tensor> {
        let ys = self.matmul(xs)?;
        let zeros;
        let bias = match &self.bias {
            Some(b) => b,
            None => {
                zeros = Tensor::zeros(ys.dim(D::Minus1)?, ys.dtype(), ys.device())?;
                &zeros
            }
        };
        fused::bias_act(ys, bias, act)
    }

    /// `xs @ W^T + b + residual`.
    fn forward_residual(&self, xs: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        let ys = self.matmul(xs)?;
        match &self.bias {
            Some(b) => fused::bias_residual(ys, b, residual),
            None => ys + residual,
        }
    }
}

impl Module for Dense {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match &self.bias {
            Some(_) => self.forward_act(xs, fused::Act::Identity),
            None => self.matmul(xs),
        }
    }
}

/// Layer norm over the last dimension (candle's fused kernel).
#[derive(Debug, Clone)]
struct Norm(candle_nn::LayerNorm);

impl Norm {
    fn new(vb: &VarBuilder, dim: usize, eps: f64, dtype: DType) -> candle_core::Result<Self> {
        let weight = vb.get(dim, "weight")?.to_dtype(dtype)?;
        let bias = vb.get(dim, "bias")?.to_dtype(dtype)?;
        Ok(Self(candle_nn::LayerNorm::new(weight, bias, eps)))
    }
}

impl Module for Norm {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.0.forward(&xs.contiguous()?)
    }
}

/// Patch, class and position embeddings.
#[derive(Debug, Clone)]
struct Embeddings {
    /// The stride-`patch` convolution as a matmul over flattened patches.
    patch: Dense,
    /// `class_embedding + position_embedding[0]`, shape `(1, 1, hidden)`.
    class_with_position: Tensor,
    /// `position_embedding[1..]`, shape `(patches, hidden)`.
    patch_positions: Tensor,
    patch_size: usize,
    grid: usize,
    channels: usize,
}

impl Embeddings {
    fn new(vb: VarBuilder, cfg: &ClipModelConfig, build: Build) -> candle_core::Result<Self> {
        let dtype = build.dtype;
        let c = &cfg.vision;
        let (h, p, grid) = (c.embed_dim, c.patch_size, cfg.grid());
        let class = vb.get(h, "class_embedding")?;
        let positions = vb.get((grid * grid + 1, h), "position_embedding.weight")?;
        let conv = vb.get((h, c.num_channels, p, p), "patch_embedding.weight")?;
        let conv = conv.reshape((h, c.num_channels * p * p))?;
        Ok(Self {
            patch: Dense::from_f32(&conv, None, build)?,
            class_with_position: (class + positions.get(0)?)?
                .reshape((1, 1, h))?
                .to_dtype(dtype)?,
            patch_positions: positions.narrow(0, 1, grid * grid)?.to_dtype(dtype)?,
            patch_size: p,
            grid,
            channels: c.num_channels,
        })
    }
}

impl Module for Embeddings {
    /// `(batch, channels, size, size)` pixels to `(batch, 1 + patches, hidden)`.
    fn forward(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let (b, _, _, _) = pixels.dims4()?;
        let (p, g) = (self.patch_size, self.grid);
        // im2col for a stride == kernel convolution is a pure re-layout.
        let patches = pixels
            .narrow(2, 0, g * p)?
            .narrow(3, 0, g * p)?
            .reshape((b, self.channels, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, g * g, self.channels * p * p))?;
        let patches = fused::bias_act(
            self.patch.matmul(&patches)?,
            &self.patch_positions,
            fused::Act::Identity,
        )?;
        let hidden = self.class_with_position.dim(2)?;
        let class = self.class_with_position.broadcast_as((b, 1, hidden))?;
        Tensor::cat(&[&class, &patches], 1)
    }
}

/// Multi-head self-attention with q, k and v fused into one matmul and the
/// `head_dim^-0.5` scale folded into the q weights.
#[derive(Debug, Clone)]
struct Attention {
    qkv: Dense,
    out: Dense,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(vb: VarBuilder, cfg: &ClipModelConfig, build: Build) -> candle_core::Result<Self> {
        let h = cfg.vision.embed_dim;
        let heads = cfg.vision.num_attention_heads;
        let head_dim = h / heads;
        let scale = (head_dim as f64).powf(-0.5);
        let get = |name: &str| -> candle_core::Result<(Tensor, Tensor)> {
            Ok((
                vb.get((h, h), &format!("{name}.weight"))?,
                vb.get(h, &format!("{name}.bias"))?,
            ))
        };
        let (qw, qb) = get("q_proj")?;
        let (kw, kb) = get("k_proj")?;
        let (vw, vbias) = get("v_proj")?;
        let weight = Tensor::cat(&[&(qw * scale)?, &kw, &vw], 0)?;
        let bias = Tensor::cat(&[&(qb * scale)?, &kb, &vbias], 0)?;
        Ok(Self {
            qkv: Dense::from_f32(&weight, Some(bias), build)?,
            out: Dense::new(&vb.pp("out_proj"), h, h, build)?,
            heads,
            head_dim,
        })
    }

    /// `residual + attention(xs)` for `xs` of `(batch, tokens, hidden)`. With
    /// `class_only`, only the class token's output is computed
    /// (`(batch, 1, hidden)`, `residual` likewise): that is all the last layer
    /// needs for the pooled output.
    fn forward(
        &self,
        xs: &Tensor,
        residual: &Tensor,
        class_only: bool,
    ) -> candle_core::Result<Tensor> {
        let (b, t, h) = xs.dims3()?;
        let (nh, hd) = (self.heads, self.head_dim);
        let q_tokens = if class_only { 1 } else { t };
        let qkv = self.qkv.forward_act(xs, fused::Act::Identity)?;
        // (batch x heads, tokens, head_dim) each.
        let (q, k, v) = if b == 1 && cpu_matmul::handles(&qkv) {
            // Strided views into the qkv output, no copies: the CPU matmul
            // takes any strides.
            let heads = qkv.reshape((t, 3, nh, hd))?;
            let part = |i: usize| heads.i((.., i))?.transpose(0, 1);
            (part(0)?.narrow(1, 0, q_tokens)?, part(1)?, part(2)?)
        } else {
            // (3, batch, heads, tokens, head_dim)
            let qkv = qkv.reshape((b, t, 3, nh, hd))?.permute((2, 0, 3, 1, 4))?;
            let part = |i: usize, tokens: usize| {
                qkv.get(i)?
                    .narrow(2, 0, tokens)?
                    .contiguous()?
                    .reshape((b * nh, tokens, hd))
            };
            (part(0, q_tokens)?, part(1, t)?, part(2, t)?)
        };
        let weights = fused::softmax_last_dim(cpu_matmul::matmul(&q, &k.t()?)?)?;
        let attended = cpu_matmul::matmul(&weights, &v)?
            .reshape((b, nh, q_tokens, hd))?
            .transpose(1, 2)?
            .reshape((b, q_tokens, h))?;
        self.out.forward_residual(&attended, residual)
    }
}

/// The feed-forward block.
#[derive(Debug, Clone)]
struct Mlp {
    fc1: Dense,
    fc2: Dense,
}

impl Mlp {
    fn new(vb: VarBuilder, cfg: &ClipModelConfig, build: Build) -> candle_core::Result<Self> {
        let (h, i) = (cfg.vision.embed_dim, cfg.vision.intermediate_size);
        Ok(Self {
            fc1: Dense::new(&vb.pp("fc1"), i, h, build)?,
            fc2: Dense::new(&vb.pp("fc2"), h, i, build)?,
        })
    }
}

impl Mlp {
    /// `residual + fc2(quick_gelu(fc1(xs)))`.
    fn forward(&self, xs: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        let hidden = self.fc1.forward_act(xs, fused::Act::QuickGelu)?;
        self.fc2.forward_residual(&hidden, residual)
    }
}

/// Pre-norm transformer block.
#[derive(Debug, Clone)]
struct EncoderLayer {
    norm1: Norm,
    attention: Attention,
    norm2: Norm,
    mlp: Mlp,
}

impl EncoderLayer {
    fn new(vb: VarBuilder, cfg: &ClipModelConfig, build: Build) -> candle_core::Result<Self> {
        let dtype = build.dtype;
        let (h, eps) = (cfg.vision.embed_dim, cfg.layer_norm_eps);
        Ok(Self {
            norm1: Norm::new(&vb.pp("layer_norm1"), h, eps, dtype)?,
            attention: Attention::new(vb.pp("self_attn"), cfg, build)?,
            norm2: Norm::new(&vb.pp("layer_norm2"), h, eps, dtype)?,
            mlp: Mlp::new(vb.pp("mlp"), cfg, build)?,
        })
    }

    fn forward(&self, xs: &Tensor, class_only: bool) -> candle_core::Result<Tensor> {
        let residual = if class_only {
            xs.narrow(1, 0, 1)?.contiguous()?
        } else {
            xs.clone()
        };
        let xs = self
            .attention
            .forward(&self.norm1.forward(xs)?, &residual, class_only)?;
        self.mlp.forward(&self.norm2.forward(&xs)?, &xs)
    }
}

/// CLIP vision tower plus `visual_projection`: pixels to image embeddings
/// (not normalised).
#[derive(Debug, Clone)]
pub(super) struct VisionModel {
    embeddings: Embeddings,
    pre_norm: Norm,
    layers: Vec<EncoderLayer>,
    post_norm: Norm,
    projection: Dense,
    dtype: DType,
}

impl VisionModel {
    /// `vb` is rooted where `vision_model.` and `visual_projection.` start and
    /// yields f32; weights are converted to `dtype` after any f32 arithmetic.
    pub(super) fn new(
        vb: VarBuilder,
        cfg: &ClipModelConfig,
        dtype: DType,
        matmul: MatmulChoice,
    ) -> candle_core::Result<Self> {
        let build = Build { dtype, matmul };
        let (h, eps) = (cfg.vision.embed_dim, cfg.layer_norm_eps);
        let vm = vb.pp("vision_model");
        let layers = (0..cfg.vision.num_hidden_layers)
            .map(|l| EncoderLayer::new(vm.pp("encoder.layers").pp(l.to_string()), cfg, build))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let projection = vb
            .pp("visual_projection")
            .get((cfg.vision.projection_dim, h), "weight")?;
        Ok(Self {
            embeddings: Embeddings::new(vm.pp("embeddings"), cfg, build)?,
            pre_norm: Norm::new(&vm.pp("pre_layrnorm"), h, eps, dtype)?,
            layers,
            post_norm: Norm::new(&vm.pp("post_layernorm"), h, eps, dtype)?,
            projection: Dense::from_f32(&projection, None, build)?,
            dtype,
        })
    }

    /// The hidden states after the given encoder blocks, numbered as
    /// transformers' `output_hidden_states` tuple: 0 is the embeddings after
    /// `pre_layrnorm`, `l` the output of block `l` (1-based). Each is
    /// `(batch, 1 + patches, hidden)` f32, class token first, in the order of
    /// `layers`. Blocks past the deepest one asked for are not run, and every
    /// block computes all tokens (the embedding path's class-only shortcut in
    /// the last block does not apply).
    pub(super) fn hidden_states(
        &self,
        pixels: &Tensor,
        layers: &[usize],
    ) -> candle_core::Result<Vec<Tensor>> {
        let deepest = layers.iter().copied().max().unwrap_or(0);
        if deepest > self.layers.len() {
            candle_core::bail!(
                "hidden state {deepest} asked for, but the model has {} layers",
                self.layers.len()
            );
        }
        let mut states: Vec<Option<Tensor>> = vec![None; layers.len()];
        let mut keep = |depth: usize, xs: &Tensor| -> candle_core::Result<()> {
            for (slot, _) in states.iter_mut().zip(layers).filter(|(_, l)| **l == depth) {
                *slot = Some(xs.to_dtype(DType::F32)?);
            }
            Ok(())
        };
        let mut xs = self
            .pre_norm
            .forward(&self.embeddings.forward(&pixels.to_dtype(self.dtype)?)?)?;
        keep(0, &xs)?;
        for (i, layer) in self.layers.iter().take(deepest).enumerate() {
            xs = layer.forward(&xs, false)?;
            keep(i + 1, &xs)?;
        }
        states
            .into_iter()
            .map(|s| s.ok_or_else(|| candle_core::Error::Msg("hidden state not computed".into())))
            .collect()
    }

    /// `(batch, 3, size, size)` f32 pixels to `(batch, projection_dim)` f32.
    pub(super) fn forward(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let mut xs = self
            .pre_norm
            .forward(&self.embeddings.forward(&pixels.to_dtype(self.dtype)?)?)?;
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            xs = layer.forward(&xs, i == last)?;
        }
        let pooled = xs.i((.., 0, ..))?;
        self.projection
            .forward(&self.post_norm.forward(&pooled)?)?
            .to_dtype(DType::F32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::clip::source::WEIGHTS_FILE;
    use crate::vision::clip::test_support::*;
    use crate::vision::l2_normalize;
    use candle_core::Device;

    /// Our vision tower against candle-transformers' (the fixtures with
    /// candle's fixed layer-norm epsilon).
    #[test]
    fn matches_candle_transformers_clip() {
        use candle_transformers::models::clip::vision_model::ClipVisionTransformer;
        for name in ["full_p16_s32", "vision_p32_s64"] {
            let embedder = load(name);
            let bytes = std::fs::read(fixtures().join(name).join(WEIGHTS_FILE)).unwrap();
            let vb =
                VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu).unwrap();
            let cfg = &embedder.config().vision;
            let stock = ClipVisionTransformer::new(vb.pp("vision_model"), cfg).unwrap();
            let projection = candle_nn::linear_no_bias(
                cfg.embed_dim,
                cfg.projection_dim,
                vb.pp("visual_projection"),
            )
            .unwrap();
            let cases = reference(name);
            let pixels: Vec<f32> = cases.iter().flat_map(|c| c.pixels.clone()).collect();
            let s = cfg.image_size;
            let input = Tensor::from_vec(pixels.clone(), (cases.len(), 3, s, s), &Device::Cpu);
            let theirs = projection
                .forward(&stock.forward(&input.unwrap()).unwrap())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let ours = embedder.embed_pixel_values(&pixels).unwrap();
            for (mut t, o) in theirs.into_iter().zip(ours) {
                l2_normalize(&mut t);
                assert!(max_abs_diff(&t, &o) < 1e-5);
            }
        }
    }

    /// Every hidden state against candle-transformers' `output_hidden_states`
    /// (which lists blocks 1..=n), and the last one, pooled and projected, is
    /// exactly the embedding `forward` gives.
    #[test]
    fn hidden_states_match_candle_transformers_and_the_embedding() {
        use candle_transformers::models::clip::vision_model::ClipVisionTransformer;
        for name in ["full_p16_s32", "vision_p32_s64"] {
            let embedder = load(name);
            let bytes = std::fs::read(fixtures().join(name).join(WEIGHTS_FILE)).unwrap();
            let vb =
                VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu).unwrap();
            let cfg = embedder.config().vision.clone();
            let stock = ClipVisionTransformer::new(vb.pp("vision_model"), &cfg).unwrap();
            // Both dense-layer matmuls; `Packed` is gemm where the CPU lacks AVX2.
            for matmul in [MatmulChoice::Packed, MatmulChoice::Gemm] {
                let ours = VisionModel::new(vb.clone(), embedder.config(), DType::F32, matmul);
                let ours = ours.unwrap();
                let packed = matches!(ours.layers[0].mlp.fc1.weight_t, Weight::Packed(_));
                assert_eq!(packed, matmul.describe() != "gemm", "{matmul:?}");
                hidden_states_agree(name, &embedder, &stock, &ours);
            }
        }
    }

    fn hidden_states_agree(
        name: &str,
        embedder: &crate::vision::clip::ClipEmbedder,
        stock: &candle_transformers::models::clip::vision_model::ClipVisionTransformer,
        ours: &VisionModel,
    ) {
        {
            let cfg = embedder.config().vision.clone();
            let cases = reference(name);
            let pixels: Vec<f32> = cases.iter().flat_map(|c| c.pixels.clone()).collect();
            let s = cfg.image_size;
            let input = Tensor::from_vec(pixels, (cases.len(), 3, s, s), &Device::Cpu).unwrap();
            let theirs = stock.output_hidden_states(&input).unwrap();
            let n = cfg.num_hidden_layers;
            let layers: Vec<usize> = (1..=n).rev().collect();
            let states = ours.hidden_states(&input, &layers).unwrap();
            for (state, &l) in states.iter().zip(&layers) {
                let a = state.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let b = theirs[l - 1]
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                assert!(max_abs_diff(&a, &b) < 1e-5, "{name} layer {l}");
            }
            let pooled = states[0].i((.., 0, ..)).unwrap();
            let projected = ours
                .projection
                .forward(&ours.post_norm.forward(&pooled).unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let embedded = ours.forward(&input).unwrap().flatten_all().unwrap();
            let embedded = embedded.to_vec1::<f32>().unwrap();
            assert!(max_abs_diff(&projected, &embedded) < 1e-5, "{name}");
            assert!(ours.hidden_states(&input, &[n + 1]).is_err());
            let embeddings = ours.hidden_states(&input, &[0]).unwrap();
            let grid = embedder.config().grid();
            assert_eq!(
                embeddings[0].dims(),
                &[cases.len(), grid * grid + 1, cfg.embed_dim]
            );
        }
    }

    #[test]
    fn fused_epilogues_match_candle_ops() {
        let dev = Device::Cpu;
        let ys = Tensor::randn(0f32, 2.0, (3, 5, 16), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 16, &dev).unwrap();
        let residual = Tensor::randn(0f32, 1.0, (3, 5, 16), &dev).unwrap();
        let positions = Tensor::randn(0f32, 1.0, (5, 16), &dev).unwrap();
        let close = |a: &Tensor, b: &Tensor| {
            let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(max_abs_diff(&a, &b) < 1e-6);
        };
        let biased = ys.broadcast_add(&bias).unwrap();
        let gelu =
            (&biased * candle_nn::ops::sigmoid(&(&biased * 1.702).unwrap()).unwrap()).unwrap();
        close(
            &fused::bias_act(ys.copy().unwrap(), &bias, fused::Act::QuickGelu).unwrap(),
            &gelu,
        );
        close(
            &fused::bias_act(ys.copy().unwrap(), &bias, fused::Act::Identity).unwrap(),
            &biased,
        );
        let expected = ys.broadcast_add(&positions).unwrap();
        let got = fused::bias_act(ys.copy().unwrap(), &positions, fused::Act::Identity).unwrap();
        close(&got, &expected);
        let expected = (&biased + &residual).unwrap();
        close(
            &fused::bias_residual(ys.copy().unwrap(), &bias, &residual).unwrap(),
            &expected,
        );
        // The inputs were copied: the originals are untouched.
        close(&ys.broadcast_add(&bias).unwrap(), &biased);
        // A pattern that does not tile the output is an error, not a panic.
        let odd = Tensor::zeros(7, DType::F32, &dev).unwrap();
        assert!(fused::bias_act(ys.copy().unwrap(), &odd, fused::Act::Identity).is_err());
    }
}
