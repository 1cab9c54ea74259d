//! The CLIP tower's dense layers on the CPU: each weight matrix packed once,
//! at load, into panels of 16 columns, then multiplied by an AVX2 + FMA
//! kernel that keeps a 6 x 16 block of the output in registers.
//!
//! Why not gemm, which [`crate::vision::cpu_matmul`] and candle call: gemm
//! packs the right-hand side again on every call and picks its blocking for
//! any shape, while a ViT multiplies the same weights by about 200 rows on
//! every call. Packing the weights once and blocking for that shape made the
//! four products of a ViT-B/16 layer (197 rows; 768 -> 2304, 768 -> 768,
//! 768 -> 3072, 3072 -> 768) 1.09-1.16x faster on one thread and 1.10-1.25x
//! on two, on the AVX2 machine of the README's figures.
//!
//! Used only where that was measured: x86-64 with AVX2 and FMA and without
//! AVX-512F. On an AVX-512 machine (2-core Intel Xeon with AVX-512F/BW/VL)
//! gemm's 512-bit kernels ran those products at 172-202 GFLOP/s on one
//! thread, this kernel at 116-117, so [`MatmulChoice::Auto`] keeps gemm there.
//! A 12 x 32 AVX-512F version of this kernel was tried on that machine: 0.90-
//! 1.10x gemm per product, 0.89-0.99x on whole CLIP passes, so it was not
//! kept. `ECHO_WORKBENCH_MATMUL=packed` runs this kernel anyway (to compare),
//! and `=gemm` keeps gemm everywhere; `examples/dense_products.rs` times both.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// Rows of the output block the kernel keeps in registers.
const MR: usize = 6;
/// Columns of that block: two AVX registers of eight floats.
const NR: usize = 16;
/// Most of the inner dimension per pass: a 16-column slice of the weights
/// (24 KiB) stays in the 32 KiB L1 while every row block streams past it.
const KC_MAX: usize = 384;
/// Most rows per pass: their packed slice (at most 384 KiB) stays in L2.
const MC_MAX_PANELS: usize = 256 / MR + 1;
/// Below this many multiply-adds the product stays on the calling thread.
const PARALLEL_MIN_MADDS: usize = 1 << 20;

/// The environment variable that overrides [`MatmulChoice::Auto`].
pub const MATMUL_ENV: &str = "ECHO_WORKBENCH_MATMUL";

/// Which CPU matmul a tower's dense layers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulChoice {
    /// This module where it was measured faster (AVX2 + FMA, no AVX-512F),
    /// else gemm.
    Auto,
    /// This module wherever the CPU has AVX2 and FMA.
    Packed,
    /// gemm, as candle does.
    Gemm,
}

impl MatmulChoice {
    /// From [`MATMUL_ENV`] (`auto`, `packed` or `gemm`); unset is `Auto`.
    pub fn from_env() -> std::result::Result<Self, String> {
        match std::env::var(MATMUL_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(Self::Auto),
            Ok(v) => Self::parse(&v),
            Err(e) => Err(format!("{MATMUL_ENV}: {e}")),
        }
    }

    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Self::Auto),
            "packed" => Ok(Self::Packed),
            "gemm" => Ok(Self::Gemm),
            other => Err(format!(
                "{MATMUL_ENV}={other:?}: expected `auto`, `packed` or `gemm`"
            )),
        }
    }

    /// The kernel this choice runs on this CPU; `None` means gemm.
    fn kernel(self) -> Option<Kernel> {
        let kernel = Kernel::detect()?;
        match self {
            Self::Gemm => None,
            Self::Packed => Some(kernel),
            Self::Auto => (!kernel.cpu_has_wider()).then_some(kernel),
        }
    }

    /// What a benchmark reports: the kernel this choice runs here.
    pub fn describe(self) -> &'static str {
        match self.kernel() {
            Some(k) => k.name(),
            None => "gemm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

impl Kernel {
    fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if crate::vision::simd::has_avx2_fma() {
            return Some(Self::Avx2Fma);
        }
        None
    }

    /// Whether gemm has a wider kernel for this CPU than this one.
    fn cpu_has_wider(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => std::is_x86_feature_detected!("avx512f"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => "packed 6x16 (avx2+fma)",
        }
    }

    /// `out[r][c] (+)= sum_k a[k][r] * b[k][c]` for a full `MR x NR` block;
    /// `a` holds `kc x MR` values, `b` `kc x NR`, `out` rows `ld` apart.
    ///
    /// # Safety
    /// `a` and `b` are valid for those reads, `out` for `MR` rows of `NR`
    /// values `ld` apart, and the CPU has this kernel's features (a `Kernel`
    /// exists only where [`Kernel::detect`] found them).
    #[inline]
    unsafe fn block(
        self,
        kc: usize,
        a: *const f32,
        b: *const f32,
        out: *mut f32,
        ld: usize,
        accumulate: bool,
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller's contract, and `detect` saw AVX2 and FMA.
            Self::Avx2Fma => unsafe { avx2::block(kc, a, b, out, ld, accumulate) },
        }
    }
}

/// A `(k, n)` matrix (a dense layer's transposed weight) packed for the
/// kernel: `n` rounded up to panels of [`NR`] columns, each panel `k x NR`
/// values, row after row (columns past `n` are zero).
#[derive(Clone)]
pub struct PackedMatrix {
    k: usize,
    n: usize,
    panels: Vec<f32>,
    kernel: Kernel,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("k", &self.k)
            .field("n", &self.n)
            .field("kernel", &self.kernel.name())
            .finish()
    }
}

impl PackedMatrix {
    /// Packs `weight_t` (`(k, n)`, f32, on the CPU, any layout) when `choice`
    /// runs this module's kernel on this CPU; `None` means use gemm.
    pub fn pack(weight_t: &Tensor, choice: MatmulChoice) -> Result<Option<Self>> {
        let Some(kernel) = choice.kernel() else {
            return Ok(None);
        };
        if !weight_t.device().is_cpu() || weight_t.dtype() != DType::F32 {
            return Ok(None);
        }
        let (k, n) = weight_t.dims2()?;
        let values = weight_t.flatten_all()?.to_vec1::<f32>()?;
        Ok(Some(Self::from_rows(&values, k, n, kernel)))
    }

    fn from_rows(values: &[f32], k: usize, n: usize, kernel: Kernel) -> Self {
        debug_assert_eq!(values.len(), k * n);
        let mut panels = vec![0f32; n.div_ceil(NR) * k * NR];
        for (p, panel) in panels.chunks_exact_mut((k * NR).max(1)).enumerate() {
            let (c0, c1) = (p * NR, ((p + 1) * NR).min(n));
            for (row, packed) in values.chunks_exact(n).zip(panel.chunks_exact_mut(NR)) {
                packed[..c1 - c0].copy_from_slice(&row[c0..c1]);
            }
        }
        Self {
            k,
            n,
            panels,
            kernel,
        }
    }

    /// `(k, n)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// `lhs @ self` for `lhs` of `(m, k)`, f32 on the CPU, as a new
    /// contiguous `(m, n)` tensor; threads from the rayon pool it runs in.
    pub fn matmul(&self, lhs: &Tensor) -> Result<Tensor> {
        lhs.contiguous()?.apply_op1_no_bwd(self)
    }

    /// The product into `out` (`m x n`, row-major); `lhs` is `m x k`.
    fn product(&self, lhs: &[f32], m: usize, out: &mut [f32]) {
        let (k, n) = (self.k, self.n);
        debug_assert!(lhs.len() == m * k && out.len() == m * n);
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            out.fill(0.0);
            return;
        }
        let threads = rayon::current_num_threads();
        let parallel = threads > 1 && m * n * k >= PARALLEL_MIN_MADDS;
        let a = pack_rows(lhs, m, k, parallel);
        let col_panels = n.div_ceil(NR);
        let out = Out {
            ptr: out.as_mut_ptr(),
            m,
            n,
        };
        if parallel {
            let per = col_panels.div_ceil(threads.min(col_panels));
            (0..col_panels.div_ceil(per))
                .into_par_iter()
                .for_each(|t| self.columns(&a, &out, t * per..((t + 1) * per).min(col_panels)));
        } else {
            self.columns(&a, &out, 0..col_panels);
        }
    }

    /// The output's columns of panels `panels` (each thread its own range).
    fn columns(&self, a: &[f32], out: &Out, panels: std::ops::Range<usize>) {
        let (k, m, n) = (self.k, out.m, out.n);
        let row_panels = m.div_ceil(MR);
        let row_blocks = row_panels.div_ceil(MC_MAX_PANELS);
        let per_block = row_panels.div_ceil(row_blocks);
        let k_blocks = k.div_ceil(KC_MAX);
        let kc = k.div_ceil(k_blocks);
        let mut tile = [0f32; MR * NR];
        for k0 in (0..k).step_by(kc) {
            let kb = kc.min(k - k0);
            let accumulate = k0 > 0;
            for i0 in (0..row_panels).step_by(per_block) {
                for jp in panels.clone() {
                    let b = &self.panels[(jp * k + k0) * NR..][..kb * NR];
                    let cols = NR.min(n - jp * NR);
                    for ip in i0..(i0 + per_block).min(row_panels) {
                        let a = &a[(ip * k + k0) * MR..][..kb * MR];
                        let rows = MR.min(m - ip * MR);
                        if rows == MR && cols == NR {
                            // SAFETY: `a` and `b` hold kb x MR and kb x NR
                            // values (sliced above); the block's MR rows of NR
                            // columns at (ip * MR, jp * NR) lie inside the
                            // m x n output, in this thread's columns only.
                            unsafe {
                                self.kernel.block(
                                    kb,
                                    a.as_ptr(),
                                    b.as_ptr(),
                                    out.ptr.add(ip * MR * n + jp * NR),
                                    n,
                                    accumulate,
                                )
                            }
                        } else {
                            // An edge block: computed whole into `tile`, the
                            // part inside the output added or copied.
                            // SAFETY: as above; `tile` holds MR x NR values.
                            unsafe {
                                self.kernel.block(
                                    kb,
                                    a.as_ptr(),
                                    b.as_ptr(),
                                    tile.as_mut_ptr(),
                                    NR,
                                    false,
                                )
                            }
                            for (r, tile_row) in tile.chunks_exact(NR).take(rows).enumerate() {
                                // SAFETY: row ip * MR + r < m, columns
                                // jp * NR .. + cols <= n, this thread's.
                                let dst = unsafe {
                                    std::slice::from_raw_parts_mut(
                                        out.ptr.add((ip * MR + r) * n + jp * NR),
                                        cols,
                                    )
                                };
                                for (d, &t) in dst.iter_mut().zip(tile_row) {
                                    *d = if accumulate { *d + t } else { t };
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The output shared by the threads, each writing only its own columns.
struct Out {
    ptr: *mut f32,
    m: usize,
    n: usize,
}

// SAFETY: threads write disjoint column ranges of the buffer `ptr` points to,
// which outlives them (`product` waits for every thread before returning).
unsafe impl Sync for Out {}

/// `lhs` (`m x k`, row-major) in panels of [`MR`] rows, each `k x MR` values
/// (column after column; rows past `m` are zero).
fn pack_rows(lhs: &[f32], m: usize, k: usize, parallel: bool) -> Vec<f32> {
    let mut packed = vec![0f32; m.div_ceil(MR) * k * MR];
    let pack = |(p, panel): (usize, &mut [f32])| {
        for (r, row) in lhs.chunks_exact(k).skip(p * MR).take(MR).enumerate() {
            for (dst, &v) in panel[r..].iter_mut().step_by(MR).zip(row) {
                *dst = v;
            }
        }
    };
    if parallel {
        packed.par_chunks_mut(k * MR).enumerate().for_each(pack);
    } else {
        packed.chunks_mut(k * MR).enumerate().for_each(pack);
    }
    packed
}

impl CustomOp1 for PackedMatrix {
    fn name(&self) -> &'static str {
        "vision-packed-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(values) = storage else {
            bail!("packed matmul: expects f32 rows");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("packed matmul: expects contiguous rows");
        };
        let (m, k) = match layout.dims() {
            [m, k] => (*m, *k),
            dims => bail!("packed matmul: expects (rows, {}), got {dims:?}", self.k),
        };
        if k != self.k {
            bail!(
                "packed matmul: ({m}, {k}) @ ({}, {}) do not chain",
                self.k,
                self.n
            );
        }
        let mut out = vec![0f32; m * self.n];
        self.product(&values[start..end], m, &mut out);
        Ok((CpuStorage::F32(out), Shape::from((m, self.n))))
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    /// See [`super::Kernel::block`]; twelve accumulators, two weight loads and
    /// six broadcasts per step of the inner dimension, four steps per loop
    /// (one step per loop was 10-20% slower: the loop's own instructions
    /// crowded the FMAs out of the front end).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block(
        kc: usize,
        a: *const f32,
        b: *const f32,
        out: *mut f32,
        ld: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        // One step of the inner dimension at `a` and `b`.
        macro_rules! step {
            ($a:expr, $b:expr) => {{
                let (a, b): (*const f32, *const f32) = ($a, $b);
                let b0 = _mm256_loadu_ps(b);
                let b1 = _mm256_loadu_ps(b.add(8));
                for (r, row) in acc.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*a.add(r));
                    row[0] = _mm256_fmadd_ps(x, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(x, b1, row[1]);
                }
            }};
        }
        let unrolled = kc - kc % 4;
        // SAFETY: every step reads MR values at `a + step * MR` and NR at
        // `b + step * NR` for step < kc, within what the caller vouches for.
        unsafe {
            for s in (0..unrolled).step_by(4) {
                step!(a.add(s * MR), b.add(s * NR));
                step!(a.add((s + 1) * MR), b.add((s + 1) * NR));
                step!(a.add((s + 2) * MR), b.add((s + 2) * NR));
                step!(a.add((s + 3) * MR), b.add((s + 3) * NR));
            }
            for s in unrolled..kc {
                step!(a.add(s * MR), b.add(s * NR));
            }
        }
        for (r, row) in acc.iter().enumerate() {
            // SAFETY: row r < MR of NR values at `out`, as the caller vouches.
            unsafe {
                let p = out.add(r * ld);
                let (lo, hi) = if accumulate {
                    (
                        _mm256_add_ps(_mm256_loadu_ps(p), row[0]),
                        _mm256_add_ps(_mm256_loadu_ps(p.add(8)), row[1]),
                    )
                } else {
                    (row[0], row[1])
                };
                _mm256_storeu_ps(p, lo);
                _mm256_storeu_ps(p.add(8), hi);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// The product in f64, row by row.
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let sum: f64 = (0..k)
                    .map(|t| a[i * k + t] as f64 * b[t * n + j] as f64)
                    .sum();
                out[i * n + j] = sum as f32;
            }
        }
        out
    }

    fn packed(b: &[f32], k: usize, n: usize) -> Option<PackedMatrix> {
        let t = Tensor::from_slice(b, (k, n), &Device::Cpu).unwrap();
        let p = PackedMatrix::pack(&t, MatmulChoice::Packed).unwrap();
        if p.is_none() {
            eprintln!("skipped: this CPU has no AVX2 + FMA");
        }
        p
    }

    /// `lhs @ p`, flattened.
    fn product(p: &PackedMatrix, lhs: &Tensor) -> Vec<f32> {
        let out = p.matmul(lhs).unwrap();
        out.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn agrees(m: usize, k: usize, n: usize) {
        let (a, b) = (random(m * k, 1 + m as u64), random(k * n, 7 + n as u64));
        let Some(p) = packed(&b, k, n) else { return };
        let lhs = Tensor::from_slice(&a, (m, k), &Device::Cpu).unwrap();
        assert_eq!(p.matmul(&lhs).unwrap().dims(), &[m, n]);
        let got = product(&p, &lhs);
        let want = reference(&a, &b, m, k, n);
        let tol = 1e-5 * (k as f32).sqrt().max(1.0);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= tol,
                "({m}, {k}, {n}) at ({}, {}): {g} against {w}",
                i / n.max(1),
                i % n.max(1)
            );
        }
    }

    #[test]
    fn edges_of_every_kind_agree_with_an_f64_product() {
        // Rows and columns short of a block, one step of k, and k split into
        // uneven passes (KC_MAX + 1 gives two of 193 and 192).
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 3, 15),
            (6, 16, 16),
            (7, 17, 17),
            (13, 385, 33),
            (37, 64, 40),
        ] {
            agrees(m, k, n);
        }
    }

    #[test]
    fn a_vit_layers_shape_agrees_on_one_thread_and_on_several() {
        // 197 rows: 32 full row blocks and one of five; k of two passes.
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        pool(1).install(|| agrees(197, 768, 96));
        pool(3).install(|| agrees(197, 768, 200));
        // More rows than one row block holds, k of eight passes.
        pool(2).install(|| agrees(300, 3072, 48));
    }

    #[test]
    fn strided_rows_are_read_as_their_values() {
        let (m, k, n) = (9, 20, 24);
        let (a, b) = (random(m * k, 3), random(k * n, 4));
        let Some(p) = packed(&b, k, n) else { return };
        // `lhs` as the transpose of a (k, m) tensor: not contiguous.
        let at = Tensor::from_slice(&a, (m, k), &Device::Cpu)
            .unwrap()
            .t()
            .unwrap()
            .contiguous()
            .unwrap();
        let lhs = at.t().unwrap();
        assert!(!lhs.is_contiguous());
        let got = product(&p, &lhs);
        let want = reference(&a, &b, m, k, n);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{g} against {w}");
        }
    }

    #[test]
    fn empty_and_mismatched_operands() {
        let Some(p) = packed(&random(8 * 4, 5), 8, 4) else {
            return;
        };
        let zero_rows = Tensor::zeros((0, 8), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(p.matmul(&zero_rows).unwrap().dims(), &[0, 4]);
        let wrong = Tensor::zeros((3, 7), DType::F32, &Device::Cpu).unwrap();
        let err = p.matmul(&wrong).unwrap_err().to_string();
        assert!(err.contains("do not chain"), "{err}");
        let rank3 = Tensor::zeros((2, 3, 8), DType::F32, &Device::Cpu).unwrap();
        assert!(p.matmul(&rank3).is_err());
        let f64s = Tensor::zeros((3, 8), DType::F64, &Device::Cpu).unwrap();
        assert!(p.matmul(&f64s).is_err());
        // k = 0: a product of zeros.
        let Some(empty) = packed(&[], 0, 5) else {
            return;
        };
        let lhs = Tensor::zeros((2, 0), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(product(&empty, &lhs), vec![0f32; 10]);
    }

    #[test]
    fn the_choice_reads_three_words_and_gemm_packs_nothing() {
        assert_eq!(
            MatmulChoice::parse(" Packed ").unwrap(),
            MatmulChoice::Packed
        );
        assert_eq!(MatmulChoice::parse("gemm").unwrap(), MatmulChoice::Gemm);
        assert_eq!(MatmulChoice::parse("").unwrap(), MatmulChoice::Auto);
        let err = MatmulChoice::parse("mkl").unwrap_err();
        assert!(err.contains(MATMUL_ENV) && err.contains("mkl"), "{err}");
        let t = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(
            PackedMatrix::pack(&t, MatmulChoice::Gemm)
                .unwrap()
                .is_none()
        );
        assert_eq!(MatmulChoice::Gemm.describe(), "gemm");
        // f64 weights are left to gemm whatever the choice.
        let t = Tensor::zeros((4, 4), DType::F64, &Device::Cpu).unwrap();
        assert!(
            PackedMatrix::pack(&t, MatmulChoice::Packed)
                .unwrap()
                .is_none()
        );
    }
}
