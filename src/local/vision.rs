//! Qwen3-VL's vision tower: patches embedded, a learned position grid
//! bilinearly resized to each image's grid, ViT blocks with 2-D rotary
//! attention within each image, and mergers that fold `merge x merge` patches
//! into one language token (the last block's output, and the deepstack
//! features of chosen blocks).

use super::attention::attend;
use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{Activation, Embedding, Linear, VarBuilder, linear};

use super::config::VisionConfig;

const NORM_EPS: f64 = 1e-6;

/// LayerNorm with the variance taken about the mean (two passes), as torch
/// does: candle's fused kernel computes `E[x^2] - E[x]^2` in f32, which loses
/// digits whenever a row's mean is large beside its spread, as in the residual
/// streams of large ViTs.
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dtype = xs.dtype();
        let xs = xs.to_dtype(DType::F32)?;
        let centered = xs.broadcast_sub(&xs.mean_keepdim(D::Minus1)?)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        centered
            .broadcast_div(&(var + NORM_EPS)?.sqrt()?)?
            .to_dtype(dtype)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

fn norm(dim: usize, vb: VarBuilder) -> Result<LayerNorm> {
    Ok(LayerNorm {
        weight: vb.get(dim, "weight")?,
        bias: vb.get(dim, "bias")?,
    })
}

struct Mlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.apply(&self.fc1)?.apply(&self.act)?.apply(&self.fc2)
    }
}

struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    /// `xs` is `patches x hidden`; attention stays within each image
    /// (`bounds` are the images' first patch and the end).
    fn forward(&self, xs: &Tensor, cos: &Tensor, sin: &Tensor, bounds: &[usize]) -> Result<Tensor> {
        let n = xs.dim(0)?;
        let qkv = xs
            .apply(&self.qkv)?
            .reshape((1, n, 3, self.heads, self.head_dim))?;
        let part = |i: usize| qkv.narrow(2, i, 1)?.squeeze(2)?.contiguous();
        let q = candle_nn::rotary_emb::rope_thd(&part(0)?, cos, sin)?;
        let k = candle_nn::rotary_emb::rope_thd(&part(1)?, cos, sin)?;
        let v = part(2)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut outs = Vec::with_capacity(bounds.len());
        for w in bounds.windows(2) {
            let (start, len) = (w[0], w[1] - w[0]);
            let heads = |t: &Tensor| t.narrow(1, start, len)?.transpose(1, 2)?.contiguous();
            let (q, k, v) = (heads(&q)?, heads(&k)?, heads(&v)?);
            outs.push(
                attend(&q, &k, &v, scale, None)?
                    .transpose(1, 2)?
                    .reshape((len, self.heads * self.head_dim))?,
            );
        }
        Tensor::cat(&outs, 0)?.apply(&self.proj)
    }
}

struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    fn new(vb: VarBuilder, cfg: &VisionConfig) -> Result<Block> {
        let h = cfg.hidden_size;
        Ok(Block {
            norm1: norm(h, vb.pp("norm1"))?,
            attn: Attention {
                qkv: linear(h, 3 * h, vb.pp("attn").pp("qkv"))?,
                proj: linear(h, h, vb.pp("attn").pp("proj"))?,
                heads: cfg.num_heads,
                head_dim: h / cfg.num_heads,
            },
            norm2: norm(h, vb.pp("norm2"))?,
            mlp: Mlp {
                fc1: linear(h, cfg.intermediate_size, vb.pp("mlp").pp("linear_fc1"))?,
                fc2: linear(cfg.intermediate_size, h, vb.pp("mlp").pp("linear_fc2"))?,
                act: cfg.hidden_act,
            },
        })
    }

    fn forward(&self, xs: &Tensor, cos: &Tensor, sin: &Tensor, bounds: &[usize]) -> Result<Tensor> {
        let xs = (xs
            + self
                .attn
                .forward(&xs.apply(&self.norm1)?, cos, sin, bounds)?)?;
        let mlp = xs.apply(&self.norm2)?.apply(&self.mlp)?;
        xs + mlp
    }
}

/// Folds each `merge x merge` group of consecutive patches into one token.
struct Merger {
    norm: LayerNorm,
    /// The deepstack mergers normalise the folded vector; the final merger
    /// normalises each patch before folding.
    norm_after_fold: bool,
    fc1: Linear,
    fc2: Linear,
    folded: usize,
}

impl Merger {
    fn new(vb: VarBuilder, cfg: &VisionConfig, norm_after_fold: bool) -> Result<Merger> {
        let folded = cfg.hidden_size * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let norm_dim = if norm_after_fold {
            folded
        } else {
            cfg.hidden_size
        };
        Ok(Merger {
            norm: norm(norm_dim, vb.pp("norm"))?,
            norm_after_fold,
            fc1: linear(folded, folded, vb.pp("linear_fc1"))?,
            fc2: linear(folded, cfg.out_hidden_size, vb.pp("linear_fc2"))?,
            folded,
        })
    }
}

impl Module for Merger {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = if self.norm_after_fold {
            xs.reshape(((), self.folded))?.apply(&self.norm)?
        } else {
            xs.apply(&self.norm)?.reshape(((), self.folded))?
        };
        // nn.GELU() in transformers: the exact (erf) form, not the tanh one.
        xs.apply(&self.fc1)?.gelu_erf()?.apply(&self.fc2)
    }
}

/// The vision tower's output for a batch of images.
pub struct VisionOutput {
    /// One row per language token (`sum(t * h * w) / merge^2 x out_hidden`).
    pub embeds: Tensor,
    /// One tensor like `embeds` per deepstack block, in config order.
    pub deepstack: Vec<Tensor>,
}

pub struct VisionModel {
    patch_proj: Linear,
    pos_embed: Embedding,
    blocks: Vec<Block>,
    merger: Merger,
    deepstack: Vec<(usize, Merger)>,
    cfg: VisionConfig,
    grid_side: usize,
    inv_freq: Vec<f32>,
}

impl VisionModel {
    /// `vb` is `model.visual`.
    pub fn new(vb: VarBuilder, cfg: &VisionConfig) -> Result<VisionModel> {
        let h = cfg.hidden_size;
        let patch_dim = cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size * cfg.patch_size;
        // The Conv3d's kernel equals its stride, so it is a linear map of each
        // flattened (channel, frame, row, column) patch.
        let weight = vb
            .pp("patch_embed.proj")
            .get(
                (
                    h,
                    cfg.in_channels,
                    cfg.temporal_patch_size,
                    cfg.patch_size,
                    cfg.patch_size,
                ),
                "weight",
            )?
            .reshape((h, patch_dim))?;
        let bias = vb.pp("patch_embed.proj").get(h, "bias")?;
        let pos_embed = candle_nn::embedding(cfg.num_position_embeddings, h, vb.pp("pos_embed"))?;
        let blocks = (0..cfg.depth)
            .map(|i| Block::new(vb.pp("blocks").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let merger = Merger::new(vb.pp("merger"), cfg, false)?;
        let deepstack = cfg
            .deepstack_visual_indexes
            .iter()
            .enumerate()
            .map(|(i, &block)| {
                Ok((
                    block,
                    Merger::new(vb.pp("deepstack_merger_list").pp(i), cfg, true)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let rotary_dim = h / cfg.num_heads / 2;
        let inv_freq = (0..rotary_dim)
            .step_by(2)
            .map(|i| 1.0 / cfg.rope_theta.powf(i as f32 / rotary_dim as f32))
            .collect();
        Ok(VisionModel {
            patch_proj: Linear::new(weight, Some(bias)),
            pos_embed,
            blocks,
            merger,
            deepstack,
            cfg: cfg.clone(),
            grid_side: (cfg.num_position_embeddings as f64).sqrt() as usize,
            inv_freq,
        })
    }

    /// `pixel_values` is `patches x patch_dim`, the images' patches one after
    /// the other as the processor lays them out, `grids` each image's `[t, h, w]`.
    /// `None` when `interrupted` says so between blocks: on a CPU the tower can
    /// take minutes for large images, and Stop must not wait for all of it.
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        grids: &[[u32; 3]],
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Option<VisionOutput>> {
        let device = pixel_values.device();
        let dtype = self.pos_embed.embeddings().dtype();
        let xs = pixel_values.to_dtype(dtype)?.apply(&self.patch_proj)?;
        let mut xs = (xs + self.position_embeddings(grids, device)?)?;
        let (cos, sin) = self.rotary(grids, dtype, device)?;
        let mut bounds = vec![0usize];
        for &[t, h, w] in grids {
            for _ in 0..t {
                bounds.push(bounds[bounds.len() - 1] + (h * w) as usize);
            }
        }
        let mut deepstack = Vec::with_capacity(self.deepstack.len());
        for (i, block) in self.blocks.iter().enumerate() {
            if interrupted() {
                return Ok(None);
            }
            xs = block.forward(&xs, &cos, &sin, &bounds)?;
            for (_, merger) in self.deepstack.iter().filter(|(b, _)| *b == i) {
                deepstack.push(xs.apply(merger)?);
            }
        }
        Ok(Some(VisionOutput {
            embeds: xs.apply(&self.merger)?,
            deepstack,
        }))
    }

    /// The learned `side x side` position grid, bilinearly resampled to each
    /// image's `h x w` (corners aligned), repeated per frame and reordered into
    /// merge windows like the patches.
    fn position_embeddings(&self, grids: &[[u32; 3]], device: &Device) -> Result<Tensor> {
        let side = self.grid_side;
        let m = self.cfg.spatial_merge_size;
        let table = self.pos_embed.embeddings();
        let mut parts = Vec::with_capacity(grids.len());
        for &[t, h, w] in grids {
            let (t, h, w) = (t as usize, h as usize, w as usize);
            let rows = grid_source(side, h);
            let cols = grid_source(side, w);
            // Four corner indices and weights per (row, column), in merge-window order.
            let mut idx: [Vec<u32>; 4] = Default::default();
            let mut wts: [Vec<f32>; 4] = Default::default();
            for br in 0..h / m {
                for bc in 0..w / m {
                    for ir in 0..m {
                        for ic in 0..m {
                            let (r0, r1, rw) = taps(rows[br * m + ir], side);
                            let (c0, c1, cw) = taps(cols[bc * m + ic], side);
                            let corners = [
                                (r0, c0, rw[0] * cw[0]),
                                (r0, c1, rw[0] * cw[1]),
                                (r1, c0, rw[1] * cw[0]),
                                (r1, c1, rw[1] * cw[1]),
                            ];
                            for (k, (rr, cc, wt)) in corners.into_iter().enumerate() {
                                idx[k].push((rr * side + cc) as u32);
                                wts[k].push(wt);
                            }
                        }
                    }
                }
            }
            let n = h * w;
            let mut sum: Option<Tensor> = None;
            for k in 0..4 {
                let ids = Tensor::from_slice(&idx[k], n, device)?;
                let wt = Tensor::from_slice(&wts[k], (n, 1), device)?.to_dtype(table.dtype())?;
                let term = table.index_select(&ids, 0)?.broadcast_mul(&wt)?;
                sum = Some(match sum {
                    Some(s) => (s + term)?,
                    None => term,
                });
            }
            let one = sum.expect("four corners");
            parts.push(if t > 1 { one.repeat((t, 1))? } else { one });
        }
        Tensor::cat(&parts, 0)
    }

    /// Each patch's rotary angles: its row's frequencies then its column's,
    /// the patches in merge-window order.
    fn rotary(
        &self,
        grids: &[[u32; 3]],
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let m = self.cfg.spatial_merge_size;
        let quarter = self.inv_freq.len();
        let mut cos = Vec::new();
        let mut sin = Vec::new();
        for &[t, h, w] in grids {
            let (h, w) = (h as usize, w as usize);
            for _ in 0..t {
                for br in 0..h / m {
                    for bc in 0..w / m {
                        for ir in 0..m {
                            for ic in 0..m {
                                let pos = [(br * m + ir) as f32, (bc * m + ic) as f32];
                                for p in pos {
                                    for f in &self.inv_freq {
                                        let a = p * f;
                                        cos.push(a.cos());
                                        sin.push(a.sin());
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let n = cos.len() / (2 * quarter).max(1);
        let as_tensor = |v: Vec<f32>| -> Result<Tensor> {
            Tensor::from_vec(v, (n, 2 * quarter), device)?.to_dtype(dtype)
        };
        Ok((as_tensor(cos)?, as_tensor(sin)?))
    }
}

/// Where each of `size` target positions falls on the `side`-long source
/// axis with corners aligned, computed as transformers 5 does in float32:
/// `i * (side - 1) / max(size - 1, 1)`.
fn grid_source(side: usize, size: usize) -> Vec<f32> {
    let span = (side - 1) as f32;
    let denom = size.saturating_sub(1).max(1) as f32;
    (0..size).map(|i| i as f32 * span / denom).collect()
}

/// The two source taps around `src` (the upper one clamped to the edge) and
/// their linear weights, as `1 - |src - floor - offset|`.
fn taps(src: f32, side: usize) -> (usize, usize, [f32; 2]) {
    let floor = src.floor();
    let low = floor as usize;
    let high = (low + 1).min(side - 1);
    let d = src - floor;
    let w0 = (1.0 - d.abs()).max(0.0);
    let w1 = (1.0 - (d - 1.0).abs()).max(0.0);
    (low, high, [w0, w1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_source_aligns_corners() {
        assert_eq!(grid_source(8, 1), vec![0.0]);
        assert_eq!(grid_source(8, 2), vec![0.0, 7.0]);
        let v = grid_source(48, 7);
        assert_eq!((v[0], v[6]), (0.0, 47.0));
        assert!(v.windows(2).all(|w| w[1] > w[0]));
        assert_eq!(taps(47.0, 48), (47, 47, [1.0, 0.0]));
        let (lo, hi, [a, b]) = taps(2.25, 48);
        assert_eq!((lo, hi, a, b), (2, 3, 0.75, 0.25));
    }
}
