//! `bench`: the measurements quoted in the README (scripts/bench.sh runs them next
//! to the Python references).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::runtime;
use echo_workbench::anomaly::Backbone;
use echo_workbench::memory::HnswParams;
use echo_workbench::perf::index::{self, VectorData};
use echo_workbench::vision::spec::EmbedderSpec;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// HNSW build time, queries/s and recall@1 against exact search.
    Hnsw(HnswArgs),
    /// Images/s for building a memory from generated 1024 x 1024 images.
    MemoryBuild(MemoryBuildArgs),
    /// Milliseconds per image for an anomaly map and score (weight-free backbone), or
    /// images/s with `--backbone clip:PATH` or `dinov2:PATH`.
    Anomaly(AnomalyBenchArgs),
    /// CLIP image-tower throughput (images/s) on this machine, per batch size.
    Clip(ClipArgs),
    /// Batch-runner throughput against the in-process mock server at a fixed latency,
    /// as a fraction of concurrency / latency, and the runner's CPU per question.
    Runner(RunnerArgs),
    /// Journals at scale: resume peak memory, the Runs list over many runs and opening
    /// one question's trace, on a generated run of 40,000 questions with ~4 KB traces.
    Journal(JournalArgs),
    /// The resume that `bench journal` measures, in a process of its own.
    #[command(hide = true)]
    JournalResume(JournalResumeArgs),
}

#[derive(Args)]
pub struct AnomalyBenchArgs {
    /// Side of the generated square images.
    #[arg(long, default_value_t = 1024)]
    size: u32,
    /// Normal references per query.
    #[arg(long, default_value_t = 4)]
    k: usize,
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// `descriptor`, `clip:PATH` / `clip:hf:ORG/NAME[@REV]` for CLIP patch tokens, or
    /// `dinov2:PATH` / `dinov2:hf:ORG/NAME[@REV]` for DINOv2 patch tokens.
    #[arg(long, default_value = "descriptor")]
    backbone: Backbone,
    /// CLIP or DINOv2 layers, e.g. `6,9` (defaults as for `anomaly`).
    #[arg(long, value_name = "L,L", value_parser = super::anomaly::parse_layers)]
    layers: Option<super::anomaly::Layers>,
    /// With `--backbone clip:PATH` or `dinov2:PATH`: also write the generated query
    /// and references here (query.png, reference_1.png, ...), e.g. for
    /// scripts/bench_anomaly_clip_torch.py.
    #[arg(long, value_name = "DIR")]
    write_images: Option<PathBuf>,
}

#[derive(Args)]
pub struct JournalArgs {
    #[arg(long, default_value_t = 40_000)]
    questions: usize,
    /// Approximate bytes of one journal line, traces included.
    #[arg(long, default_value_t = 4096)]
    record_bytes: usize,
    /// Run folders in the list.
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Where the generated run folders go (default: a temporary folder, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct JournalResumeArgs {
    #[arg(long)]
    run: PathBuf,
    #[arg(long)]
    retry_errors: bool,
}

#[derive(Args)]
pub struct RunnerArgs {
    /// The mock server's delay before every answer, in milliseconds.
    #[arg(long, default_value_t = 200)]
    latency_ms: u64,
    #[arg(long, value_delimiter = ',', default_value = "8,32,128", value_parser = super::parse_concurrency)]
    concurrency: Vec<usize>,
    /// Questions per level = concurrency x waves.
    #[arg(long, default_value_t = 10)]
    waves: usize,
    /// Side of the generated PNG images.
    #[arg(long, default_value_t = 1024)]
    size: u32,
    /// Where the generated dataset and run folders go (default: a temporary folder, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct ClipArgs {
    /// A CLIP folder in Hugging Face layout (scripts/bench_clip_torch.py writes a
    /// random-weight ViT-B/16 one).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch: Vec<usize>,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Images per forward pass (a batch runs as several); default: the whole batch.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    forward: Option<u64>,
    /// One image after another with every core on each matmul, instead of
    /// the default on a CPU: images side by side, one per core.
    #[arg(long)]
    one_image_at_a_time: bool,
}

#[derive(Args)]
pub struct HnswArgs {
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    #[arg(long, default_value_t = 512)]
    dim: usize,
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    #[arg(long, value_enum, default_value_t = VectorData::Random)]
    data: VectorData,
    #[arg(long, default_value_t = 16)]
    m: usize,
    #[arg(long, default_value_t = 100)]
    ef_construction: usize,
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
    ef_search: Vec<usize>,
    /// Also write base.f32 / queries.f32 here for scripts/bench_faiss.py.
    #[arg(long)]
    write_data: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Args)]
pub struct MemoryBuildArgs {
    /// Images in the memory (default: Echo's memory size, every train/good image
    /// of MVTec-AD and VisA).
    #[arg(long, default_value_t = 12_288)]
    images: usize,
    /// Side of the generated square PNG images (MMAD's are about 1024).
    #[arg(long, default_value_t = 1024)]
    size: u32,
    /// Where the generated images go, kept after the run (default: a temporary
    /// folder, removed after). scripts/bench_memory_build_torch.py reads them.
    #[arg(long, alias = "dir", value_name = "DIR", conflicts_with = "images_dir")]
    write_images: Option<PathBuf>,
    /// Build from images already under DIR (as `--write-images` lays them out)
    /// instead of generating new ones: the first `--images` of them.
    #[arg(long, value_name = "DIR")]
    images_dir: Option<PathBuf>,
    /// Draw only this many different images and hard-link the rest to them
    /// (default: all different); keeps 12,288 images of 1024 x 1024 off the disk.
    #[arg(long, default_value_t = 0, value_name = "K")]
    distinct: usize,
    /// `descriptor`, or `clip:PATH` / `clip:hf:ORG/NAME[@REV]` (as `memory build
    /// --embedder` takes it).
    #[arg(long, alias = "backbone", default_value = "descriptor")]
    embedder: EmbedderSpec,
}

pub fn run(cmd: &BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Hnsw(a) => {
            let (base, queries) = index::make_vectors(a.data, a.n, a.queries, a.dim, a.seed);
            if let Some(dir) = &a.write_data {
                std::fs::create_dir_all(dir)?;
                index::write_f32(&dir.join("base.f32"), &base)?;
                index::write_f32(&dir.join("queries.f32"), &queries)?;
            }
            let params = HnswParams {
                m: a.m,
                ef_construction: a.ef_construction,
                ef_search: a.ef_search.first().copied().unwrap_or(16),
            };
            let mut out = index::bench_hnsw(&base, &queries, a.dim, params, &a.ef_search)?;
            out["data"] = serde_json::to_value(a.data)?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchCommand::MemoryBuild(a) => {
            let tmp;
            let dir = match (&a.images_dir, &a.write_images) {
                (Some(d), _) => d.clone(),
                (None, written) => {
                    let dir = match written {
                        Some(d) => d.clone(),
                        None => {
                            tmp = tempfile::tempdir()?;
                            tmp.path().to_path_buf()
                        }
                    };
                    eprintln!("drawing {} images of {}x{} ...", a.images, a.size, a.size);
                    index::write_bench_images(&dir, a.images, a.size, a.distinct)?;
                    dir
                }
            };
            let embedder = a.embedder.load()?;
            let out = index::bench_memory_build(
                &dir,
                a.images,
                embedder.as_ref(),
                a.embedder.wants_thumbs(),
            )?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchCommand::Runner(a) => {
            eprintln!(
                "generating {}x{} images, then runs at concurrency {:?} ...",
                a.size, a.size, a.concurrency
            );
            let out = echo_workbench::perf::runner::bench_runner(
                &echo_workbench::perf::runner::RunnerBenchOptions {
                    latency_ms: a.latency_ms,
                    concurrency: a.concurrency.clone(),
                    waves: a.waves,
                    size: a.size,
                    dir: a.dir.clone(),
                },
                runtime()?.handle(),
            )?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchCommand::Journal(a) => {
            use echo_workbench::perf::journal::{JournalBenchOptions, bench_journal};
            eprintln!(
                "generating a run of {} questions ({} bytes a record) in {} folders ...",
                a.questions, a.record_bytes, a.runs
            );
            let exe = std::env::current_exe()?;
            let out = bench_journal(
                &JournalBenchOptions {
                    questions: a.questions,
                    record_bytes: a.record_bytes,
                    runs: a.runs.max(1),
                    dir: a.dir.clone(),
                    ..JournalBenchOptions::default()
                },
                &exe,
                runtime()?.handle(),
            )?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchCommand::JournalResume(a) => {
            let out = echo_workbench::perf::journal::resume_child(
                &a.run,
                a.retry_errors,
                runtime()?.handle(),
            )?;
            println!("{}", serde_json::to_string(&out)?);
        }
        BenchCommand::Anomaly(a) => match &a.backbone {
            Backbone::Descriptor => {
                if a.layers.is_some() || a.write_images.is_some() {
                    anyhow::bail!(
                        "--layers and --write-images are for CLIP or DINOv2 patch tokens: use \
                         them with `--backbone clip:PATH` or `dinov2:PATH`"
                    );
                }
                let out = echo_workbench::perf::anomaly::bench_anomaly(a.size, a.k, a.runs);
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Backbone::Clip { source, .. } => {
                let layers = a.layers.as_ref().map(|l| l.0.as_slice());
                let out = echo_workbench::perf::anomaly::bench_anomaly_clip(
                    source,
                    layers,
                    a.size,
                    a.k,
                    a.runs,
                    a.write_images.as_deref(),
                )?;
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Backbone::Dinov2 { source, .. } => {
                let layers = a.layers.as_ref().map(|l| l.0.as_slice());
                let out = echo_workbench::perf::anomaly::bench_anomaly_dinov2(
                    source,
                    layers,
                    a.size,
                    a.k,
                    a.runs,
                    a.write_images.as_deref(),
                )?;
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
        },
        BenchCommand::Clip(a) => {
            let out = echo_workbench::perf::clip::bench_clip(
                &a.model,
                &a.batch,
                a.runs,
                a.forward.map(|f| f as usize),
                !a.one_image_at_a_time,
            )?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
