//! `model download` (fetch a repository into the HF cache, on request only) and
//! `model check` (what a local model source holds and the memory it will need).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use echo_workbench::jobs::CancelToken;
use echo_workbench::local::ModelSource;
use echo_workbench::local::download::{DownloadProgress, Hub, download};
use echo_workbench::local::folder_check::{LoadDtype, check_folder, human_bytes, model_source};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Fetch a model from the Hugging Face hub into the local HF cache (HF_ENDPOINT,
    /// HF_HOME / HF_HUB_CACHE and HF_TOKEN are honoured); an interrupted download
    /// continues where it stopped.
    Download(DownloadArgs),
    /// Show what a local model holds (config, tokenizer, template, weights) and the
    /// memory it will need; exits 2 naming the files that are missing.
    Check(CheckArgs),
}

#[derive(Args)]
pub struct DownloadArgs {
    /// hf:ORG/NAME[@REVISION], e.g. hf:Qwen/Qwen3-VL-2B-Instruct.
    model: String,
}

#[derive(Args)]
pub struct CheckArgs {
    /// local:PATH, local:hf:ORG/NAME[@REV], hf:ORG/NAME[@REV] or a folder.
    model: String,
    /// The dtype the memory estimate assumes: stored, f32 or bf16.
    #[arg(long, default_value = "stored", value_parser = parse_dtype)]
    dtype: LoadDtype,
}

fn parse_dtype(text: &str) -> Result<LoadDtype, String> {
    LoadDtype::parse(text).ok_or_else(|| format!("`{text}` is not one of stored, f32, bf16"))
}

pub fn run(command: &ModelCommand) -> anyhow::Result<ExitCode> {
    match command {
        ModelCommand::Download(args) => run_download(args),
        ModelCommand::Check(args) => run_check(args),
    }
}

fn run_download(args: &DownloadArgs) -> anyhow::Result<ExitCode> {
    let ModelSource::HfCache { repo, revision, .. } = model_source(&args.model) else {
        bail!(
            "`{}` is not a hub name: give hf:ORG/NAME[@REVISION]",
            args.model
        );
    };
    let hub = Hub::from_env()?;
    eprintln!(
        "fetching {repo}@{} from {} into {}",
        revision.as_deref().unwrap_or("main"),
        hub.endpoint,
        hub.cache_root.display()
    );
    let runtime = super::runtime()?;
    let last_line = Mutex::new(Instant::now() - Duration::from_secs(1));
    let show = |p: &DownloadProgress| {
        let mut last = last_line.lock().unwrap_or_else(|e| e.into_inner());
        let finished = p.file_done == p.file_total;
        if !finished && last.elapsed() < Duration::from_millis(250) {
            return;
        }
        *last = Instant::now();
        let percent = if p.total == 0 {
            100.0
        } else {
            p.done as f64 * 100.0 / p.total as f64
        };
        eprint!(
            "\r\x1b[2K{percent:5.1}%  {} of {}  {} ({} of {})",
            human_bytes(p.done),
            human_bytes(p.total),
            p.file,
            human_bytes(p.file_done),
            human_bytes(p.file_total)
        );
        let _ = std::io::stderr().flush();
    };
    let started = Instant::now();
    let done = download(
        runtime.handle(),
        &hub,
        &repo,
        revision.as_deref(),
        &CancelToken::new(),
        &show,
    );
    eprintln!();
    let done = done.with_context(|| format!("downloading {repo}"))?;
    println!(
        "{} files in {} ({} fetched in {:.1} s, {} already cached)",
        done.files.len(),
        done.snapshot.display(),
        human_bytes(done.fetched_bytes),
        started.elapsed().as_secs_f64(),
        human_bytes(done.total_bytes.saturating_sub(done.fetched_bytes))
    );
    println!("use it as local:hf:{repo}");
    Ok(ExitCode::SUCCESS)
}

fn run_check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let report = check_folder(&model_source(&args.model), args.dtype);
    for line in report.lines(args.dtype) {
        println!("{line}");
    }
    Ok(if report.complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
