//! The vision towers' f32 matmul on the CPU: gemm (the library candle's own
//! matmul calls), with the threading decided by the rayon pool the caller
//! runs in rather than by the process's core count.
//!
//! candle hands every CPU matmul to gemm with as many threads as the machine
//! has. Two cases make that a poor fit for a ViT:
//! - inside [`crate::vision::image_parallel`]'s single-thread pools, gemm
//!   still took its multi-threaded path (packing the whole right-hand side per
//!   call): 11.6% of a forward pass in its packing routine against 1.8% on its
//!   single-thread path;
//! - a batch of small products (attention's `q k^T` and `p v`, one per head)
//!   went one after another, each split across all threads. Here each product
//!   stays on one thread and the batch is spread over the threads instead.
//!
//! Other dtypes and devices use candle's matmul unchanged.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, bail};
use gemm::Parallelism;
use rayon::prelude::*;

/// Whether [`matmul`] runs `t` itself (CPU, f32) rather than through candle,
/// which needs some operands contiguous.
pub fn handles(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// `lhs @ rhs` for `lhs` of `(m, k)` or `(batch, m, k)` and `rhs` of `(k, n)`
/// (shared by the whole batch) or `(batch, k, n)`; any strides.
pub fn matmul(lhs: &Tensor, rhs: &Tensor) -> Result<Tensor> {
    if handles(lhs) && handles(rhs) {
        return lhs.apply_op2_no_bwd(rhs, &CpuMatmul);
    }
    if lhs.rank() == 3 && rhs.rank() == 2 {
        lhs.broadcast_matmul(rhs)
    } else {
        lhs.matmul(rhs)
    }
}

/// One operand seen as `(batch, rows, cols)` with element strides; a shared
/// operand has a batch stride of 0.
#[derive(Debug, Clone, Copy)]
struct Operand {
    batch: usize,
    rows: usize,
    cols: usize,
    batch_stride: usize,
    row_stride: usize,
    col_stride: usize,
    start: usize,
}

impl Operand {
    fn new(layout: &Layout, what: &str) -> Result<Self> {
        let (dims, strides) = (layout.dims(), layout.stride());
        let (batch, batch_stride, rest) = match dims.len() {
            2 => (1, 0, 0),
            3 => (dims[0], strides[0], 1),
            r => bail!("cpu matmul: {what} has rank {r}, expected 2 or 3"),
        };
        Ok(Self {
            batch,
            rows: dims[rest],
            cols: dims[rest + 1],
            batch_stride,
            row_stride: strides[rest],
            col_stride: strides[rest + 1],
            start: layout.start_offset(),
        })
    }

    /// Checks that every element addressed lies inside `len` values.
    fn check_within(&self, len: usize, what: &str) -> Result<()> {
        let last = |n: usize, stride: usize| n.saturating_sub(1) * stride;
        let end = self.start
            + last(self.batch, self.batch_stride)
            + last(self.rows, self.row_stride)
            + last(self.cols, self.col_stride);
        if end >= len {
            bail!("cpu matmul: {what} reaches value {end} of a {len}-value buffer");
        }
        Ok(())
    }
}

struct CpuMatmul;

impl CustomOp2 for CpuMatmul {
    fn name(&self) -> &'static str {
        "vision-cpu-matmul"
    }

    fn cpu_fwd(
        &self,
        lhs: &CpuStorage,
        lhs_l: &Layout,
        rhs: &CpuStorage,
        rhs_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(lhs), CpuStorage::F32(rhs)) = (lhs, rhs) else {
            bail!("cpu matmul: expects f32 operands");
        };
        let a = Operand::new(lhs_l, "the left operand")?;
        let b = Operand::new(rhs_l, "the right operand")?;
        let shared_rhs = rhs_l.dims().len() == 2;
        if !shared_rhs && b.batch != a.batch {
            bail!("cpu matmul: batches of {} and {} differ", a.batch, b.batch);
        }
        if a.cols != b.rows {
            bail!(
                "cpu matmul: ({}, {}) @ ({}, {}) do not chain",
                a.rows,
                a.cols,
                b.rows,
                b.cols
            );
        }
        let (batch, m, k, n) = (a.batch, a.rows, a.cols, b.cols);
        let shape: Shape = if lhs_l.dims().len() == 2 {
            (m, n).into()
        } else {
            (batch, m, n).into()
        };
        let mut dst = vec![0f32; batch * m * n];
        if dst.is_empty() || k == 0 {
            return Ok((CpuStorage::F32(dst), shape));
        }
        a.check_within(lhs.len(), "the left operand")?;
        b.check_within(rhs.len(), "the right operand")?;

        // Batch `i`'s product into `out`.
        let product = |i: usize, out: &mut [f32], parallelism: Parallelism| {
            let lhs_at = a.start + i * a.batch_stride;
            let rhs_at = b.start + i * b.batch_stride;
            // SAFETY: `check_within` showed every element of both operands'
            // batches (rows x cols at their strides) lies inside its buffer;
            // `out` holds exactly m x n values, written row-major; gemm
            // reads nothing outside those bounds. Strides fit in isize because
            // the buffers they index do.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    out.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    lhs.as_ptr().add(lhs_at),
                    a.col_stride as isize,
                    a.row_stride as isize,
                    rhs.as_ptr().add(rhs_at),
                    b.col_stride as isize,
                    b.row_stride as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                )
            }
        };
        let threads = rayon::current_num_threads();
        if threads > 1 && batch > 1 {
            // Many small products: one per thread at a time.
            dst.par_chunks_mut(m * n)
                .enumerate()
                .for_each(|(i, out)| product(i, out, Parallelism::None));
        } else {
            // One tall product stays whole: a band of rows per thread, each on
            // gemm's single-thread path, measured 4-11% slower and used 8-25%
            // more CPU time than gemm's own threading.
            let parallelism = if threads > 1 {
                Parallelism::Rayon(threads)
            } else {
                Parallelism::None
            };
            for (i, out) in dst.chunks_mut(m * n).enumerate() {
                product(i, out, parallelism);
            }
        }
        Ok((CpuStorage::F32(dst), shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let values: Vec<f32> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Every case in the global pool and in a single-thread pool, against
    /// candle's matmul.
    fn agrees(lhs: &Tensor, rhs: &Tensor) {
        let expected = if rhs.rank() == 2 && lhs.rank() == 3 {
            lhs.broadcast_matmul(rhs).unwrap()
        } else {
            lhs.matmul(rhs).unwrap()
        };
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        for got in [
            matmul(lhs, rhs).unwrap(),
            one.install(|| matmul(lhs, rhs)).unwrap(),
        ] {
            let diff = max_diff(&got, &expected);
            assert!(diff < 1e-5, "{:?} @ {:?}: {diff}", lhs.dims(), rhs.dims());
        }
    }

    #[test]
    fn plain_products_agree_with_candle() {
        agrees(&random(&[197, 96], 1), &random(&[96, 130], 2));
        agrees(&random(&[1, 7], 3), &random(&[7, 1], 4));
    }

    #[test]
    fn batched_and_shared_products_agree_with_candle() {
        // Attention's two products: q k^T with k transposed in place, then p v.
        let q = random(&[12, 50, 16], 5);
        let k = random(&[12, 50, 16], 6);
        agrees(&q, &k.t().unwrap());
        agrees(&random(&[12, 50, 50], 7), &random(&[12, 50, 16], 8));
        // A weight shared by a batch of row blocks.
        agrees(&random(&[3, 40, 24], 9), &random(&[24, 33], 10));
    }

    #[test]
    fn strided_views_agree_with_candle() {
        let wide = random(&[4, 30, 40], 11);
        let narrowed = wide.narrow(2, 5, 20).unwrap();
        let picked = random(&[3, 40, 9], 12).i(1).unwrap();
        agrees(&narrowed, &random(&[4, 20, 9], 13));
        agrees(&wide.i(2).unwrap().narrow(0, 3, 20).unwrap(), &picked);
    }

    #[test]
    fn empty_and_mismatched_shapes() {
        let empty = matmul(&random(&[0, 4], 14), &random(&[4, 3], 15)).unwrap();
        assert_eq!(empty.dims(), &[0, 3]);
        let zero_k = matmul(&random(&[2, 0], 16), &random(&[0, 3], 17)).unwrap();
        assert_eq!(
            zero_k.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0.0; 6]
        );
        let err = matmul(&random(&[2, 5], 18), &random(&[4, 3], 19)).unwrap_err();
        assert!(err.to_string().contains("do not chain"), "{err}");
        let err = matmul(&random(&[2, 3, 4], 20), &random(&[3, 4, 5], 21)).unwrap_err();
        assert!(err.to_string().contains("batches of 2 and 3"), "{err}");
    }

    #[test]
    fn other_dtypes_use_candles_matmul() {
        let lhs = random(&[6, 8], 22).to_dtype(DType::F16).unwrap();
        let rhs = random(&[8, 5], 23).to_dtype(DType::F16).unwrap();
        let got = matmul(&lhs, &rhs).unwrap();
        assert_eq!(got.dtype(), DType::F16);
        let expected = lhs.matmul(&rhs).unwrap();
        assert_eq!(
            max_diff(
                &got.to_dtype(DType::F32).unwrap(),
                &expected.to_dtype(DType::F32).unwrap()
            ),
            0.0
        );
    }
}
