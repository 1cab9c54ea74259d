//! Times the four dense products of a ViT-B/16 layer on each CPU matmul the
//! CLIP tower can use here: gemm (as the tower calls it, through
//! `vision::cpu_matmul`) and, where the CPU has AVX2 + FMA, the packed kernel
//! of `vision::packed_matmul`. The figures behind the kernel choice in the
//! README's performance section.
//!
//! Usage: `cargo run --release --example dense_products -- [ROWS] [RUNS]`
//! (default 197 rows, one image's tokens; 35 runs per product, median).
//! Prints, per product and thread count (1 and every core), the median
//! milliseconds and GFLOP/s of each kernel.

use std::time::Instant;

use candle_core::{Device, Tensor};
use echo_workbench::vision::cpu_matmul;
use echo_workbench::vision::packed_matmul::{MatmulChoice, PackedMatrix};

/// `(k, n)` of a ViT-B/16 layer's products: qkv, attention out, fc1, fc2.
const PRODUCTS: [(usize, usize); 4] = [(768, 2304), (768, 768), (768, 3072), (3072, 768)];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().map_or(Ok(197), |a| a.parse())?;
    let runs: usize = args.next().map_or(Ok(35), |a| a.parse())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // `Packed` is gemm too where the CPU has no AVX2 + FMA.
    let mut kernels = vec![MatmulChoice::Gemm];
    if MatmulChoice::Packed.describe() != "gemm" {
        kernels.push(MatmulChoice::Packed);
    }
    println!("{rows} rows, median of {runs} runs");
    for threads in [1, cores] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        for (k, n) in PRODUCTS {
            let lhs = Tensor::randn(0f32, 1.0, (rows, k), &Device::Cpu)?;
            let weight_t = Tensor::randn(0f32, 0.02, (k, n), &Device::Cpu)?;
            let flops = 2.0 * (rows * k * n) as f64;
            let mut line = format!("{threads} thread(s) {k:>4} -> {n:>4}:");
            for &choice in &kernels {
                let packed = PackedMatrix::pack(&weight_t, choice)?;
                let once = || match &packed {
                    Some(p) => p.matmul(&lhs),
                    None => cpu_matmul::matmul(&lhs, &weight_t),
                };
                let ms = pool.install(|| -> anyhow::Result<f64> {
                    for _ in 0..3 {
                        once()?;
                    }
                    let mut times = Vec::with_capacity(runs);
                    for _ in 0..runs {
                        let start = Instant::now();
                        std::hint::black_box(once()?);
                        times.push(start.elapsed().as_secs_f64() * 1e3);
                    }
                    times.sort_by(f64::total_cmp);
                    Ok(times[times.len() / 2])
                })?;
                line += &format!(
                    "  {} {ms:.3} ms {:.1} GFLOP/s",
                    choice.describe(),
                    flops / ms / 1e6
                );
            }
            println!("{line}");
        }
    }
    Ok(())
}
