//! Element-wise epilogues fused into one in-place pass over a fresh matmul
//! output (CPU, f32): bias + QuickGELU, bias + residual, position embeddings.
//! candle would run each step as its own pass into a newly allocated tensor;
//! at batch 8 the MLP activations are ~19 MB, so those passes and the page
//! faults of the new buffers were about a fifth of the forward time. Other
//! devices and dtypes use the equivalent candle ops.

use candle_core::{
    CpuStorage, DType, InplaceOp1, InplaceOp2, InplaceOp3, Layout, Result, Tensor, bail,
};
use rayon::prelude::*;

use crate::vision::simd;

/// Elements per parallel task, large enough to amortise scheduling.
const TASK_ELEMENTS: usize = 1 << 15;

/// Activation applied after the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Act {
    Identity,
    /// `x * sigmoid(1.702 x)`, OpenAI CLIP's GELU approximation.
    QuickGelu,
}

#[inline(always)]
fn quick_gelu(x: f32) -> f32 {
    // Same operation order as transformers: x * sigmoid(1.702 * x).
    x * (1.0 / (1.0 + simd::exp(-(1.702f32 * x))))
}

fn fusable(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous()
}

/// `act(ys + pattern)`, where `pattern` (any shape) repeats over `ys`:
/// a bias over the last dimension, or per-image position embeddings.
pub(super) fn bias_act(ys: Tensor, pattern: &Tensor, act: Act) -> Result<Tensor> {
    if fusable(&ys) && fusable(pattern) {
        ys.inplace_op2(pattern, &BiasAct(act))?;
        return Ok(ys);
    }
    let ys = ys.broadcast_add(pattern)?;
    match act {
        Act::Identity => Ok(ys),
        Act::QuickGelu => &ys * candle_nn::ops::sigmoid(&(&ys * 1.702)?)?,
    }
}

/// Softmax over the last dimension, in place on a fresh tensor (attention
/// scores straight from their matmul).
pub(super) fn softmax_last_dim(xs: Tensor) -> Result<Tensor> {
    if fusable(&xs) {
        xs.inplace_op1(&SoftmaxLastDim)?;
        return Ok(xs);
    }
    candle_nn::ops::softmax_last_dim(&xs)
}

/// `ys + bias + residual` (in that order, as transformers adds them).
pub(super) fn bias_residual(ys: Tensor, bias: &Tensor, residual: &Tensor) -> Result<Tensor> {
    if fusable(&ys) && fusable(bias) && fusable(residual) && ys.shape() == residual.shape() {
        ys.inplace_op3(bias, residual, &BiasResidual)?;
        return Ok(ys);
    }
    ys.broadcast_add(bias)? + residual
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => bail!("{op}: expects contiguous f32 operands"),
    }
}

fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => bail!("{op}: expects contiguous f32 operands"),
    }
}

/// Rows of `pattern.len()` values per parallel task, or an error if `len`
/// values are not whole rows.
fn task_len(len: usize, pattern: usize, op: &str) -> Result<usize> {
    if pattern == 0 || !len.is_multiple_of(pattern) {
        bail!("{op}: {len} values do not repeat a pattern of {pattern}");
    }
    Ok(pattern * (TASK_ELEMENTS / pattern).max(1))
}

/// `dst[i] = act(dst[i] + pattern[i % n])` in parallel, `n = pattern.len()`.
fn repeat_apply(dst: &mut [f32], pattern: &[f32], op: &str, act: Act) -> Result<()> {
    let task = task_len(dst.len(), pattern.len(), op)?;
    dst.par_chunks_mut(task).for_each(|block| match act {
        Act::Identity => add_rows(block, pattern),
        Act::QuickGelu => add_gelu_rows_dispatch(block, pattern),
    });
    Ok(())
}

fn add_rows(block: &mut [f32], pattern: &[f32]) {
    for row in block.chunks_exact_mut(pattern.len()) {
        for (x, p) in row.iter_mut().zip(pattern) {
            *x += p;
        }
    }
}

// The kernels below that call `simd::exp` are `inline(always)` and get an
// AVX2 + FMA copy each: a `target_feature` function only vectorises with
// AVX2 what is inlined into it, and the inliner declines large closures.
// AVX-512F copies were tried on the README's AVX-512 machine and were slower
// than the AVX2 ones (QuickGELU 4.5% of a CLIP pass against 3.4%, softmax
// 3.6% against 3.0%), so there are none.

#[inline(always)]
fn add_gelu_rows(block: &mut [f32], pattern: &[f32]) {
    for row in block.chunks_exact_mut(pattern.len()) {
        for (x, p) in row.iter_mut().zip(pattern) {
            *x = quick_gelu(*x + p);
        }
    }
}

fn add_gelu_rows_dispatch(block: &mut [f32], pattern: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd::has_avx2_fma() {
        #[target_feature(enable = "avx2,fma")]
        fn avx2(block: &mut [f32], pattern: &[f32]) {
            add_gelu_rows(block, pattern)
        }
        // SAFETY: the CPU was just seen to have AVX2 and FMA.
        return unsafe { avx2(block, pattern) };
    }
    add_gelu_rows(block, pattern)
}

/// As candle's softmax kernel: subtract the row's maximum, exponentiate,
/// divide by the sum (summed in [`LANES`] interleaved partial sums, which
/// vectorises; candle's one running sum is a chain of dependent adds, and
/// that chain was most of this kernel's time).
#[inline(always)]
fn softmax_rows(block: &mut [f32], width: usize) {
    for row in block.chunks_exact_mut(width) {
        let max = lanes_fold(row, f32::NEG_INFINITY, |m, x| if x > m { x } else { m });
        for x in row.iter_mut() {
            *x = simd::exp(*x - max);
        }
        let sum = lanes_fold(row, 0.0, |s, x| s + x);
        for x in row.iter_mut() {
            *x /= sum;
        }
    }
}

/// Partial folds per lane of a wide register, the same on every CPU.
const LANES: usize = 16;

/// `xs` folded by `f` lane by lane ([`LANES`] accumulators starting at
/// `init`, element `i` into lane `i % LANES`), the lanes then folded in
/// order, then the elements past the last full group.
#[inline(always)]
fn lanes_fold(xs: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [init; LANES];
    let groups = xs.chunks_exact(LANES);
    let rest = groups.remainder();
    for group in groups {
        for (lane, &x) in lanes.iter_mut().zip(group) {
            *lane = f(*lane, x);
        }
    }
    let folded = lanes.into_iter().fold(init, &f);
    rest.iter().fold(folded, |acc, &x| f(acc, x))
}

fn softmax_rows_dispatch(block: &mut [f32], width: usize) {
    #[cfg(target_arch = "x86_64")]
    if simd::has_avx2_fma() {
        #[target_feature(enable = "avx2,fma")]
        fn avx2(block: &mut [f32], width: usize) {
            softmax_rows(block, width)
        }
        // SAFETY: the CPU was just seen to have AVX2 and FMA.
        return unsafe { avx2(block, width) };
    }
    softmax_rows(block, width)
}

struct SoftmaxLastDim;

impl InplaceOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "clip-softmax-last-dim"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let name = self.name();
        let width = layout.dims().last().copied().unwrap_or(0);
        let dst = f32_slice_mut(dst, layout, name)?;
        if dst.is_empty() {
            return Ok(());
        }
        let task = task_len(dst.len(), width, name)?;
        dst.par_chunks_mut(task)
            .for_each(|block| softmax_rows_dispatch(block, width));
        Ok(())
    }
}

struct BiasAct(Act);

impl InplaceOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "clip-bias-act"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        bias: &CpuStorage,
        bias_l: &Layout,
    ) -> Result<()> {
        let name = self.name();
        let bias = f32_slice(bias, bias_l, name)?;
        let dst = f32_slice_mut(dst, dst_l, name)?;
        repeat_apply(dst, bias, name, self.0)
    }
}

struct BiasResidual;

impl InplaceOp3 for BiasResidual {
    fn name(&self) -> &'static str {
        "clip-bias-residual"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        bias: &CpuStorage,
        bias_l: &Layout,
        residual: &CpuStorage,
        residual_l: &Layout,
    ) -> Result<()> {
        let name = self.name();
        let bias = f32_slice(bias, bias_l, name)?;
        let residual = f32_slice(residual, residual_l, name)?;
        let dst = f32_slice_mut(dst, dst_l, name)?;
        if residual.len() != dst.len() {
            bail!(
                "{name}: residual has {} values, not {}",
                residual.len(),
                dst.len()
            );
        }
        let task = task_len(dst.len(), bias.len(), name)?;
        dst.par_chunks_mut(task)
            .zip(residual.par_chunks(task))
            .for_each(|(block, res)| {
                let rows = block.chunks_exact_mut(bias.len());
                for (row, res) in rows.zip(res.chunks_exact(bias.len())) {
                    for ((x, b), r) in row.iter_mut().zip(bias).zip(res) {
                        *x = *x + b + r;
                    }
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * scale)
            .collect()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn softmax_matches_candles_and_its_vector_copy_matches_the_plain_one() {
        let (rows, width) = (37, 197);
        let scores = values(rows * width, 30.0);
        let t = Tensor::from_vec(scores.clone(), (rows, width), &Device::Cpu).unwrap();
        let expected = candle_nn::ops::softmax_last_dim(&t).unwrap();
        let ours = softmax_last_dim(t.copy().unwrap()).unwrap();
        let (expected, ours) = (
            expected.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(
            max_diff(&expected, &ours) < 1e-7,
            "{}",
            max_diff(&expected, &ours)
        );
        for row in ours.chunks(width) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        let mut plain = scores.clone();
        softmax_rows(&mut plain, width);
        let mut dispatched = scores;
        softmax_rows_dispatch(&mut dispatched, width);
        assert_eq!(plain, dispatched);
    }

    #[test]
    fn lane_folds_give_the_max_exactly_and_the_sum_closely() {
        for len in [0, 1, 15, 16, 17, 197] {
            let mut xs = values(len, 8.0);
            if len > 0 {
                // The largest value last, past every full group of lanes.
                xs[len - 1] = 100.0;
            }
            let max = lanes_fold(&xs, f32::NEG_INFINITY, |m, x| if x > m { x } else { m });
            let want = xs.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            assert_eq!(max, want, "len {len}");
            let sum = lanes_fold(&xs, 0.0, |s, x| s + x);
            let exact: f64 = xs.iter().map(|&x| x as f64).sum();
            assert!(
                (sum as f64 - exact).abs() < 1e-4,
                "len {len}: {sum} against {exact}"
            );
        }
    }

    #[test]
    fn bias_and_quick_gelu_match_candles_ops() {
        let (rows, width) = (21, 96);
        let ys = values(rows * width, 12.0);
        let bias = values(width, 2.0);
        let t = Tensor::from_vec(ys.clone(), (rows, width), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(bias.clone(), width, &Device::Cpu).unwrap();
        for act in [Act::Identity, Act::QuickGelu] {
            // A transposed view is not fusable: candle's ops give the reference.
            let strided = t.t().unwrap().contiguous().unwrap().t().unwrap();
            assert!(!strided.is_contiguous());
            let reference = bias_act(strided, &b, act).unwrap();
            let reference = reference.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let expected: Vec<f32> = ys
                .chunks(width)
                .flat_map(|row| {
                    row.iter().zip(&bias).map(|(y, b)| match act {
                        Act::Identity => y + b,
                        Act::QuickGelu => {
                            let x = y + b;
                            x * (1.0 / (1.0 + (-(1.702f32 * x)).exp()))
                        }
                    })
                })
                .collect();
            let fused = bias_act(t.copy().unwrap(), &b, act).unwrap();
            let fused = fused.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(max_diff(&fused, &expected) < 1e-6, "{act:?}");
            assert!(max_diff(&reference, &expected) < 1e-6, "{act:?}");
        }
        let mut plain = ys.clone();
        add_gelu_rows(&mut plain, &bias);
        let mut dispatched = ys;
        add_gelu_rows_dispatch(&mut dispatched, &bias);
        assert_eq!(plain, dispatched);
    }
}
