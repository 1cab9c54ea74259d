//! The CPU a benchmark ran on, and which matrix-multiply kernels candle's CPU
//! backend runs there, so a figure can be read against the hardware that
//! produced it (PyTorch picks AVX-512 kernels where the CPU has them; our side
//! may not).
//!
//! candle's CPU matmul (f16, f32, f64; bf16 is refused) calls the `gemm` crate,
//! which picks its kernel once, at the first call, from run-time CPU detection:
//! gemm-common's `gemm_def!` (and gemm-f16's own copy) returns the `avx512f`
//! kernel when the CPU has AVX-512F *and* gemm was compiled with its `x86-v4`
//! cargo feature, else the `fma` kernel (pulp's `V3`: AVX2 + FMA + F16C) when
//! the CPU has FMA, else a scalar one; on aarch64 `neon`. candle leaves `x86-v4`
//! off; our Cargo.toml turns it on, so on x86-64 both kernels are in the binary
//! and the CPU decides. Nothing in gemm uses AVX-512 BF16 or AMX. [`GemmKernels`] repeats that choice here;
//! gemm does not say which one it took.

use serde::Serialize;

use crate::vision::packed_matmul::MatmulChoice;

/// Whether gemm's AVX-512 kernels are compiled into this binary.
pub const GEMM_AVX512_COMPILED: bool = cfg!(target_arch = "x86_64");

#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// The CPU's brand string, when it tells one.
    pub model: Option<String>,
    pub arch: &'static str,
    pub logical_cpus: usize,
    /// x86 features that decide which kernels can run (false elsewhere).
    pub features: X86Features,
    pub gemm: GemmKernels,
    /// The kernel the CLIP tower's dense layers run here: this crate's packed
    /// one or gemm ([`crate::vision::packed_matmul`]; the CPU and
    /// `ECHO_WORKBENCH_MATMUL` decide). Attention's products always use gemm.
    pub clip_dense_f32: String,
}

/// Detected at run time (`is_x86_feature_detected!`; AMX from CPUID leaf 7,
/// because its detection macro is not stable Rust yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct X86Features {
    pub avx2: bool,
    pub fma: bool,
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vl: bool,
    pub avx512_bf16: bool,
    /// AMX tiles with BF16 (the CPU's CPUID bits; the OS must also grant it).
    pub amx: bool,
}

/// The kernels candle's matmul runs on this CPU with this binary.
#[derive(Debug, Clone, Serialize)]
pub struct GemmKernels {
    pub f32: &'static str,
    pub f16: &'static str,
    /// Whether the binary holds gemm's AVX-512 kernels (`x86-v4`).
    pub avx512_compiled: bool,
    /// Why a faster kernel is not used, when the CPU has one gemm lacks.
    pub note: Option<&'static str>,
}

pub fn report() -> CpuReport {
    let features = x86_features();
    CpuReport {
        model: model_name(),
        arch: std::env::consts::ARCH,
        logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        features,
        gemm: gemm_kernels(std::env::consts::ARCH, features, GEMM_AVX512_COMPILED),
        clip_dense_f32: match MatmulChoice::from_env() {
            Ok(choice) => choice.describe().to_string(),
            Err(e) => format!("none: {e}"),
        },
    }
}

/// gemm's choice (see the module documentation) for `arch` and `features`.
pub fn gemm_kernels(arch: &str, features: X86Features, avx512_compiled: bool) -> GemmKernels {
    let kernel = match arch {
        "x86_64" | "x86" if avx512_compiled && features.avx512f => "avx512f",
        "x86_64" | "x86" if features.fma => "fma (avx2)",
        "aarch64" => "neon",
        _ => "scalar",
    };
    let note = if features.avx512f && !avx512_compiled {
        Some(
            "the CPU has AVX-512F, but this binary was built without gemm's `x86-v4` cargo feature (its AVX-512 kernels)",
        )
    } else if features.amx || features.avx512_bf16 {
        Some("gemm has no AMX or AVX-512 BF16 kernel")
    } else {
        None
    };
    GemmKernels {
        f32: kernel,
        f16: kernel,
        avx512_compiled,
        note,
    }
}

#[cfg(target_arch = "x86_64")]
fn x86_features() -> X86Features {
    use std::arch::is_x86_feature_detected as has;
    // CPUID leaf 7, sub-leaf 0, EDX: bit 22 AMX-BF16, bit 24 AMX-TILE.
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    X86Features {
        avx2: has!("avx2"),
        fma: has!("fma"),
        avx512f: has!("avx512f"),
        avx512bw: has!("avx512bw"),
        avx512vl: has!("avx512vl"),
        avx512_bf16: has!("avx512bf16"),
        amx: leaf7.edx & (1 << 24) != 0 && leaf7.edx & (1 << 22) != 0,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn x86_features() -> X86Features {
    X86Features::default()
}

/// CPUID's brand string (leaves 0x8000_0002 to 0x8000_0004).
#[cfg(target_arch = "x86_64")]
fn model_name() -> Option<String> {
    use std::arch::x86_64::__cpuid;
    if __cpuid(0x8000_0000).eax < 0x8000_0004 {
        return None;
    }
    let bytes: Vec<u8> = (0x8000_0002u32..=0x8000_0004)
        .flat_map(|leaf| {
            let r = __cpuid(leaf);
            [r.eax, r.ebx, r.ecx, r.edx]
        })
        .flat_map(u32::to_le_bytes)
        .collect();
    let name = String::from_utf8_lossy(&bytes)
        .trim_matches(char::from(0))
        .trim()
        .to_string();
    (!name.is_empty()).then_some(name)
}

/// Linux's `/proc/cpuinfo` where CPUID is not at hand.
#[cfg(not(target_arch = "x86_64"))]
fn model_name() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Model"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_choice_follows_the_cpu_and_the_build() {
        let avx2 = X86Features {
            avx2: true,
            fma: true,
            ..X86Features::default()
        };
        let avx512 = X86Features {
            avx512f: true,
            avx512bw: true,
            avx512vl: true,
            ..avx2
        };
        let k = gemm_kernels("x86_64", avx2, true);
        assert_eq!((k.f32, k.note), ("fma (avx2)", None));
        let k = gemm_kernels("x86_64", avx512, false);
        assert_eq!(k.f32, "fma (avx2)");
        assert!(k.note.unwrap().contains("x86-v4"));
        let k = gemm_kernels("x86_64", avx512, true);
        assert_eq!((k.f32, k.f16, k.note), ("avx512f", "avx512f", None));
        let amx = X86Features {
            amx: true,
            ..avx512
        };
        assert!(
            gemm_kernels("x86_64", amx, true)
                .note
                .unwrap()
                .contains("AMX")
        );
        assert_eq!(
            gemm_kernels("x86_64", X86Features::default(), false).f32,
            "scalar"
        );
        assert_eq!(
            gemm_kernels("aarch64", X86Features::default(), false).f32,
            "neon"
        );
    }

    #[test]
    fn report_describes_this_machine() {
        let r = report();
        assert!(r.logical_cpus >= 1);
        assert_eq!(r.arch, std::env::consts::ARCH);
        assert_eq!(r.gemm.avx512_compiled, GEMM_AVX512_COMPILED);
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(r.features.avx2, std::arch::is_x86_feature_detected!("avx2"));
            assert_eq!(
                r.features.avx512f,
                std::arch::is_x86_feature_detected!("avx512f")
            );
            // Every x86-64 CPU from this century has a brand string.
            assert!(r.model.is_some());
        }
    }
}
