//! Qwen3's RMS norm, rounded where transformers rounds it.
//!
//! transformers normalises in float, rounds the result to the weights' dtype
//! and only then multiplies by the weight (a second rounding in bfloat16).
//! candle's fused `rms_norm` multiplies in float and rounds once, which in
//! bfloat16 lands one step away from transformers on about one value in four;
//! through the layers that showed in the logits. In f32 the fused kernel is used
//! (the roundings coincide there).

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dtype = xs.dtype();
        if dtype == DType::F32 {
            return candle_nn::ops::rms_norm(&xs.contiguous()?, &self.weight, self.eps as f32);
        }
        let wide = xs.to_dtype(DType::F32)?;
        let mean_square = wide.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = wide.broadcast_div(&(mean_square + self.eps)?.sqrt()?)?;
        normed.to_dtype(dtype)?.broadcast_mul(&self.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn bf16_rounds_before_the_weight_and_f32_is_candles() {
        let device = Device::Cpu;
        let xs: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 64) as f32 - 31.5) / 7.0)
            .collect();
        let w: Vec<f32> = (0..16).map(|i| 0.5 + i as f32 / 9.0).collect();
        let xs = Tensor::from_vec(xs, (4, 16), &device).unwrap();
        let weight = Tensor::from_vec(w, 16, &device).unwrap();
        let f32_norm = RmsNorm {
            weight: weight.clone(),
            eps: 1e-6,
        };
        let theirs = candle_nn::ops::rms_norm(&xs, &weight, 1e-6).unwrap();
        let ours = f32_norm.forward(&xs).unwrap();
        assert_eq!(
            ours.to_vec2::<f32>().unwrap(),
            theirs.to_vec2::<f32>().unwrap()
        );

        let bf = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
        let bf16_norm = RmsNorm {
            weight: bf(&weight),
            eps: 1e-6,
        };
        let got = bf16_norm.forward(&bf(&xs)).unwrap();
        // By hand: normalise in f32, round, multiply in float and round again
        // (a bfloat16 product of two bfloat16 values is the rounded float one).
        let wide = bf(&xs)
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let round = |v: Vec<f32>| {
            Tensor::from_vec(v, 16, &device)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let wv = round(weight.to_vec1::<f32>().unwrap());
        let got = got.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
        for (row, got_row) in wide.iter().zip(got) {
            let rms = (row.iter().map(|v| v * v).sum::<f32>() / 16.0 + 1e-6).sqrt();
            let normed = round(row.iter().map(|v| v / rms).collect());
            let expected = round(normed.iter().zip(&wv).map(|(n, w)| n * w).collect());
            assert_eq!(got_row, expected);
        }
    }
}
