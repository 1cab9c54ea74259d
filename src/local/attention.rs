//! Scaled dot-product attention, with scores and softmax in f32 whatever the
//! weights' dtype.
//!
//! PyTorch's CPU attention kernel keeps the scores of bfloat16 (or f16) inputs
//! in float, rounds only the probabilities to the input dtype before they meet
//! the values, and accumulates the output in float. Rounding the scores to
//! bfloat16 as well (a plain `q.matmul(k)` in bf16) made this port's logits
//! drift two to three bfloat16 steps from transformers' on the tiny fixture;
//! computing as PyTorch does keeps them within the rounding of the result.
//! In f32 this is exactly the textbook computation.

use candle_core::{DType, Result, Tensor};

/// `softmax(q kᵀ · scale + mask) v` over the last two dimensions; `mask` (f32)
/// is added to the scores before the softmax.
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let dtype = q.dtype();
    // Widening bfloat16 to f32 is exact: an f32 product of the widened values
    // is a bfloat16 product accumulated in float.
    let scores = (q
        .to_dtype(DType::F32)?
        .matmul(&k.to_dtype(DType::F32)?.t()?)?
        * scale)?;
    let scores = match mask {
        Some(mask) => scores.broadcast_add(mask)?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let probs = if dtype == DType::F32 {
        probs
    } else {
        probs.to_dtype(dtype)?.to_dtype(DType::F32)?
    };
    probs.matmul(&v.to_dtype(DType::F32)?)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn tensor(seed: u32, shape: (usize, usize, usize, usize)) -> Tensor {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let values: Vec<f32> = (0..n as u32)
            .map(|i| {
                ((i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0)
                    - 0.5
            })
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn f32_is_the_textbook_computation_and_bf16_rounds_only_probabilities_and_output() {
        let (q, k, v) = (
            tensor(1, (1, 2, 5, 8)),
            tensor(2, (1, 2, 7, 8)),
            tensor(3, (1, 2, 7, 8)),
        );
        let mask = Tensor::from_vec(
            (0..35)
                .map(|i| if i % 7 > 4 { f32::NEG_INFINITY } else { 0.0 })
                .collect::<Vec<_>>(),
            (1, 1, 5, 7),
            &Device::Cpu,
        )
        .unwrap();
        let plain = candle_nn::ops::softmax_last_dim(
            &((q.matmul(&k.t().unwrap()).unwrap() * 0.5).unwrap())
                .broadcast_add(&mask)
                .unwrap(),
        )
        .unwrap()
        .matmul(&v)
        .unwrap();
        let ours = attend(&q, &k, &v, 0.5, Some(&mask)).unwrap();
        let diff = (ours - &plain).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);

        let to_bf16 = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
        let half = attend(&to_bf16(&q), &to_bf16(&k), &to_bf16(&v), 0.5, Some(&mask)).unwrap();
        assert_eq!(half.dtype(), DType::BF16);
        let err = (half.to_dtype(DType::F32).unwrap() - &plain)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // Inputs, probabilities and output each rounded once (2^-9 relative).
        assert!(err < 8e-3, "{err}");
    }
}
