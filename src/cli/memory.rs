//! `embed`, `memory build` and `retrieve`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use echo_workbench::jobs::{CancelToken, Progress};
use echo_workbench::memory::{
    BuildOptions, HnswParams, IndexKind, ReferenceMemory, Scope, build_memory, collect_images,
};
use echo_workbench::vision::descriptor;
use echo_workbench::vision::spec::EmbedderSpec;
use echo_workbench::vision::{DecodeLimits, decode_rgb8};

use crate::TextOrJson;

#[derive(Args)]
pub struct EmbedArgs {
    image: PathBuf,
    /// `descriptor` (weight-free), `clip:PATH` or `clip:hf:ORG/NAME[@REV]`.
    #[arg(long, default_value = "descriptor")]
    embedder: EmbedderSpec,
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    format: TextOrJson,
}

pub fn embed(args: &EmbedArgs) -> anyhow::Result<ExitCode> {
    let embedder = args.embedder.load()?;
    let image = decode_rgb8(&args.image, DecodeLimits::default())?;
    let vector = embedder.embed(&image)?;
    match args.format {
        TextOrJson::Json => println!(
            "{}",
            serde_json::json!({"embedder": embedder.id(), "dim": vector.len(), "vector": vector})
        ),
        TextOrJson::Text => {
            let head: Vec<String> = vector.iter().take(8).map(|x| format!("{x:.4}")).collect();
            println!(
                "{}: {} values from {} [{} ...]",
                args.image.display(),
                vector.len(),
                embedder.id(),
                head.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct BuildArgs {
    /// The dataset root (MMAD root: `*/*/train/good/*`; or one MVTec-style dataset).
    #[arg(long)]
    root: PathBuf,
    /// Which images, as a glob relative to the root (default: the normal training images).
    #[arg(long)]
    images: Option<String>,
    #[arg(long, default_value = "descriptor")]
    embedder: EmbedderSpec,
    #[arg(long, value_enum, default_value_t = IndexKind::Hnsw)]
    index: IndexKind,
    /// The memory folder to write.
    #[arg(long)]
    out: PathBuf,
    /// HNSW neighbours per node (Echo: 64).
    #[arg(long, default_value_t = HnswParams::ECHO.m)]
    m: usize,
    /// HNSW construction breadth (Echo: 40).
    #[arg(long, default_value_t = HnswParams::ECHO.ef_construction)]
    ef_construction: usize,
    /// HNSW search breadth (Echo: 16).
    #[arg(long, default_value_t = HnswParams::ECHO.ef_search)]
    ef_search: usize,
    /// Embedding cache folder (default: inside the workspace).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Embed every image again instead of reusing cached vectors.
    #[arg(long)]
    no_cache: bool,
}

pub fn build(args: &BuildArgs) -> anyhow::Result<ExitCode> {
    // Refuse a destination that is not ours to replace before hours of embedding.
    ReferenceMemory::check_destination(&args.out)?;
    let images = collect_images(&args.root, args.images.as_deref())?;
    let embedder = args.embedder.load()?;
    let cache_dir = (!args.no_cache).then(|| {
        args.cache.clone().unwrap_or_else(|| {
                echo_workbench::workspace::embedding_cache_dir(
                    &echo_workbench::workspace::default_dir(),
                )
            })
    });
    let options = BuildOptions {
        index: args.index,
        hnsw: HnswParams {
            m: args.m,
            ef_construction: args.ef_construction,
            ef_search: args.ef_search,
        },
        cache_dir,
        thumbs: args.embedder.wants_thumbs(),
        ..BuildOptions::default()
    };
    let cancel = CancelToken::new();
    let start = std::time::Instant::now();
    let tty = std::io::stderr().is_terminal();
    let last_tenth = std::sync::atomic::AtomicUsize::new(usize::MAX);
    let progress = |p: Progress| {
        if tty {
            eprint!("\r{}: {}/{}   ", p.stage, p.done, p.total);
        } else {
            let tenth = (p.fraction() * 10.0) as usize;
            let key = tenth + if p.stage == "indexing" { 100 } else { 0 };
            if last_tenth.swap(key, std::sync::atomic::Ordering::Relaxed) != key {
                eprintln!("{}: {}/{}", p.stage, p.done, p.total);
            }
        }
    };
    let (memory, report) = build_memory(
        &args.embedder.to_string(),
        &args.root,
        &images,
        embedder.as_ref(),
        &options,
        &progress,
        &cancel,
    )?;
    if tty {
        eprintln!();
    }
    memory
        .save(&args.out)
        .with_context(|| format!("saving the memory to {}", args.out.display()))?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}: {} images ({} embedded, {} from cache) with {}, {} index, {:.1} s ({:.1} images/s)",
        args.out.display(),
        memory.len(),
        report.embedded,
        report.from_cache,
        memory.embedder,
        match memory.index_kind() {
            IndexKind::Hnsw => "HNSW",
            IndexKind::Exact => "exact",
        },
        secs,
        memory.len() as f64 / secs.max(1e-9)
    );
    for (path, reason) in report.skipped.iter().take(20) {
        eprintln!("skipped {path}: {reason}");
    }
    if report.skipped.len() > 20 {
        eprintln!("... and {} more skipped", report.skipped.len() - 20);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// The whole memory, as Echo does.
    Global,
    /// Only the query's category (ours).
    Category,
}

#[derive(Args)]
pub struct RetrieveArgs {
    #[arg(long)]
    memory: PathBuf,
    image: PathBuf,
    #[arg(long, default_value_t = 1)]
    k: usize,
    #[arg(long, value_enum, default_value_t = ScopeArg::Global)]
    scope: ScopeArg,
    /// The category for `--scope category` (default: read from the image's path).
    #[arg(long)]
    category: Option<String>,
    /// Override the embedder recorded in the memory (e.g. weights moved).
    #[arg(long)]
    embedder: Option<EmbedderSpec>,
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    format: TextOrJson,
}

pub fn retrieve(args: &RetrieveArgs) -> anyhow::Result<ExitCode> {
    let memory = ReferenceMemory::load(&args.memory)?;
    let spec = match &args.embedder {
        Some(s) => s.clone(),
        None => memory.embedder_spec.parse().with_context(|| {
            format!(
                "{} does not say how to load its embedder; pass --embedder",
                args.memory.display()
            )
        })?,
    };
    let embedder = spec.load()?;
    memory.check_query(&embedder.id(), embedder.dim())?;
    let scope = match args.scope {
        ScopeArg::Global => Scope::Global,
        ScopeArg::Category => Scope::Category(category_for(&args.image, args.category.as_deref())?),
    };
    let image = decode_rgb8(&args.image, DecodeLimits::default())?;
    let vector = embedder.embed(&image)?;
    let thumb = memory.has_thumbs().then(|| descriptor::thumb(&image));
    let results = memory.retrieve_reranked(&vector, thumb.as_ref(), args.k, &scope);
    match args.format {
        TextOrJson::Json => {
            let results: Vec<serde_json::Value> = results
                .iter()
                .map(|r| {
                    let mut v = serde_json::json!({
                        "path": r.path, "dataset": r.dataset, "category": r.category, "score": r.score,
                    });
                    if let Some(s) = r.rerank_score {
                        v["rerank_score"] = s.into();
                    }
                    v
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"embedder": memory.embedder, "results": results})
                )?
            );
        }
        TextOrJson::Text => {
            println!("embedder: {}", memory.embedder);
            for (i, r) in results.iter().enumerate() {
                let rerank = r
                    .rerank_score
                    .map(|s| format!(", rerank {s:.3}"))
                    .unwrap_or_default();
                println!(
                    "{:>2}. {:.4}{rerank}  {}",
                    i + 1,
                    r.score,
                    memory.root.join(&r.path).display()
                );
            }
            if results.is_empty() {
                println!("no reference found in this scope");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn category_for(image: &Path, explicit: Option<&str>) -> anyhow::Result<String> {
    if let Some(c) = explicit {
        return Ok(c.to_string());
    }
    echo_workbench::dataset::category_from_path(image).with_context(|| {
        format!(
            "cannot tell the category of {} from its path (no MMAD/MVTec layout); pass --category",
            image.display()
        )
    })
}
