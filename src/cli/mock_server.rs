//! `echo-workbench mock-server`: a local OpenAI-compatible server for demos,
//! benchmarks of the pipeline itself, and trying settings without a GPU.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use echo_workbench::dataset::mmad::MmadDataset;
use echo_workbench::dataset::paths::DatasetRoot;
use echo_workbench::mllm::mock::{Fault, FaultPlan, MockConfig, MockServer, Oracle, Responder};

#[derive(Args, Debug)]
pub struct MockServerArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Delay before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Fraction of chat requests answered with HTTP 500 (0 to 1), to watch retries.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Refuse requests with more images, as vLLM does without --limit-mm-per-prompt.
    #[arg(long)]
    max_images: Option<usize>,
    /// How to answer: `fixed:TEXT`, `first` (the first option's letter),
    /// `oracle:MMAD_JSON` (the correct letter from the answer key, found by the
    /// option's text so rotated options are answered right: a demo, not a model), or
    /// `random:SEED` (a guess among the options shown, the same for the same prompt
    /// unless the request samples with temperature above 0 and its own seed).
    #[arg(long, default_value = "first")]
    answer: AnswerPolicy,
    /// Dataset root for `oracle:`, to tell identical questions about different images
    /// apart by the query image's hash (default: the folder holding the mmad.json).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Answer by --answer only when the prompt contains this text, else with the first
    /// option's letter: with `oracle:`, a stand-in model that gets better once the
    /// knowledge mentions the word (to try measuring a knowledge edit without a GPU).
    #[arg(long, value_name = "TEXT")]
    only_when: Option<String>,
    /// Model names listed by GET /v1/models (any name is accepted in requests).
    #[arg(long = "model", default_values_t = vec!["mock-vl".to_string()])]
    models: Vec<String>,
    /// Seed for the random failures.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// The `--answer` policy.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerPolicy {
    Fixed(String),
    First,
    Oracle(PathBuf),
    Random(u64),
}

impl FromStr for AnswerPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "first" {
            Ok(AnswerPolicy::First)
        } else if let Some(text) = s.strip_prefix("fixed:") {
            Ok(AnswerPolicy::Fixed(text.to_string()))
        } else if let Some(path) = s.strip_prefix("oracle:").filter(|p| !p.is_empty()) {
            Ok(AnswerPolicy::Oracle(PathBuf::from(path)))
        } else if let Some(seed) = s.strip_prefix("random:").and_then(|n| n.parse().ok()) {
            Ok(AnswerPolicy::Random(seed))
        } else {
            Err(format!(
                "`{s}` is not an answer policy: use fixed:TEXT, first, oracle:MMAD_JSON or random:SEED"
            ))
        }
    }
}

pub fn run(args: &MockServerArgs) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.fail_rate) {
        bail!(
            "--fail-rate must be between 0 and 1, not {}",
            args.fail_rate
        );
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("echo_workbench=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let responder = match &args.answer {
        AnswerPolicy::First => Responder::first_option(),
        AnswerPolicy::Fixed(text) => Responder::fixed(text.clone()),
        AnswerPolicy::Random(seed) => Responder::random(*seed),
        AnswerPolicy::Oracle(path) => {
            let dataset = MmadDataset::load(path)?;
            let root = args
                .root
                .clone()
                .or_else(|| path.parent().map(std::path::Path::to_path_buf))
                .filter(|r| r.is_dir())
                .map(DatasetRoot::new);
            if root.is_some() {
                eprintln!("hashing the query images of {} ...", path.display());
            }
            Responder::oracle(Oracle::from_mmad(&dataset, root.as_ref()))
        }
    };
    let responder = match &args.only_when {
        Some(word) if !word.is_empty() => Responder::only_when(word.clone(), responder),
        Some(_) => bail!("--only-when needs some text"),
        None => responder,
    };
    let faults = if args.fail_rate > 0.0 {
        FaultPlan::random(vec![(Fault::Http500, args.fail_rate)], args.seed)
    } else {
        FaultPlan::none()
    };
    let answers = responder.name().to_string();
    let mut server = MockServer::start(MockConfig {
        port: args.port,
        latency: Duration::from_millis(args.latency_ms),
        models: args.models.clone(),
        max_images: args.max_images,
        faults,
        responder,
        record_limit: 0,
        ..MockConfig::default()
    })
    .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    println!("mock MLLM server at {}", server.url());
    println!(
        "answers: {answers}; models: {}; Ctrl-C stops it",
        args.models.join(", ")
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(tokio::signal::ctrl_c())
        .context("cannot wait for Ctrl-C")?;
    server.stop();
    eprintln!("stopped after {} chat requests", server.chat_count());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_policies_parse() {
        assert_eq!("first".parse(), Ok(AnswerPolicy::First));
        assert_eq!("fixed:B".parse(), Ok(AnswerPolicy::Fixed("B".to_string())));
        assert_eq!(
            "oracle:data/mmad.json".parse(),
            Ok(AnswerPolicy::Oracle("data/mmad.json".into()))
        );
        assert!("oracle:".parse::<AnswerPolicy>().is_err());
        assert!("random".parse::<AnswerPolicy>().is_err());
        assert_eq!("random:7".parse(), Ok(AnswerPolicy::Random(7)));
        assert!("random:x".parse::<AnswerPolicy>().is_err());
    }
}
