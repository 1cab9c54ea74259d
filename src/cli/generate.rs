//! `generate`: one user turn through a local model, printed as transformers
//! would give it (prompt ids, generated ids, text) with the time each phase took.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use echo_workbench::echo::LocalBackend;
use echo_workbench::jobs::CancelToken;
use echo_workbench::local::{LocalModel, ModelSource, SamplingOptions, StopReason};
use echo_workbench::vision::decode::{DecodeLimits, decode_rgb8};
use serde_json::json;

use crate::TextOrJson;

#[derive(Clone, Copy, ValueEnum)]
pub enum WeightDtype {
    F32,
    Bf16,
    F16,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// The model: `local:DIR` (a Hugging Face model folder) or
    /// `local:hf:ORG/NAME[@REV]` (from the local Hugging Face cache).
    #[arg(long)]
    model: String,
    /// An image of the turn; repeat for several (they come first, in order).
    #[arg(long = "image", value_name = "FILE")]
    images: Vec<PathBuf>,
    /// The text of the turn, after the images.
    #[arg(long)]
    prompt: String,
    /// Stop after this many generated tokens.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sample with this temperature (greedy when absent or 0).
    #[arg(long)]
    temperature: Option<f64>,
    /// Nucleus sampling: keep the smallest set of tokens this likely (with --temperature).
    #[arg(long)]
    top_p: Option<f64>,
    /// Seed of the sampler (with --temperature).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Weights dtype [default: as stored in config.json, f32 where it names none].
    #[arg(long, value_enum)]
    dtype: Option<WeightDtype>,
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    format: TextOrJson,
}

/// `local:SPEC` to where the model is.
fn source(model: &str) -> anyhow::Result<ModelSource> {
    match model.strip_prefix("local:") {
        Some(spec) if !spec.is_empty() => Ok(ModelSource::parse(spec)),
        _ => bail!("--model must be `local:DIR` or `local:hf:ORG/NAME`, not {model:?}"),
    }
}

fn device() -> anyhow::Result<candle_core::Device> {
    Ok(echo_workbench::local::default_device()?)
}

/// `local:SPEC` loaded (stored dtype, the GPU in a `cuda` build) behind the
/// pipeline's chat interface, greedy, at most `max_tokens` per reply.
pub fn local_backend(spec: &str, max_tokens: usize) -> anyhow::Result<LocalBackend> {
    let source = source(spec)?;
    let model = LocalModel::load(&source, None, &device()?)
        .with_context(|| format!("loading the model {source}"))?;
    eprintln!("loaded {spec} in {:.0} ms", model.load_ms);
    let options = SamplingOptions {
        max_tokens,
        ..SamplingOptions::default()
    };
    Ok(LocalBackend::new(model, spec, options))
}

pub fn run(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let source = source(&args.model)?;
    let images = args
        .images
        .iter()
        .map(|p| decode_rgb8(p, DecodeLimits::default()))
        .collect::<Result<Vec<_>, _>>()?;
    let dtype = args.dtype.map(|d| match d {
        WeightDtype::F32 => candle_core::DType::F32,
        WeightDtype::Bf16 => candle_core::DType::BF16,
        WeightDtype::F16 => candle_core::DType::F16,
    });
    let runtime = super::runtime()?;
    let cancel = CancelToken::new();
    watch_ctrl_c(runtime.handle(), cancel.clone());
    let mut model = LocalModel::load(&source, dtype, &device()?)
        .with_context(|| format!("loading the model {source}"))?;
    // Said before the first token, so a caller (or a test) knows Ctrl-C is now
    // answered by a clean stop.
    eprintln!("loaded {} in {:.0} ms", args.model, model.load_ms);
    let options = SamplingOptions {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
    };
    let streaming = matches!(args.format, TextOrJson::Text);
    let tokenizer = model.processor.tokenizer.clone();
    let mut so_far = Vec::new();
    let mut shown = String::new();
    let on_token = |token: u32| {
        if !streaming {
            return;
        }
        // Decoding the whole reply each time: a character split over
        // several byte tokens shows once it is complete.
        so_far.push(token);
        if let Ok(text) = tokenizer.decode_reply(&so_far)
            && let Some(new) = text.strip_prefix(shown.as_str())
            && !new.is_empty()
            && !new.ends_with('\u{fffd}')
        {
            print!("{new}");
            let _ = std::io::Write::flush(&mut std::io::stdout());
            shown = text;
        }
    };
    let reply = model.reply(&images, &args.prompt, &options, &cancel, on_token)?;
    let g = &reply.generation;
    match args.format {
        TextOrJson::Json => {
            let out = json!({
                "model": args.model,
                "prompt_tokens": reply.prompt_tokens,
                "tokens": g.tokens,
                "text": reply.text,
                "stop": g.stop,
                "ms": {"load": model.load_ms, "prefill": g.prefill_ms, "decode": g.decode_ms},
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        TextOrJson::Text => {
            // What streaming held back (an unfinished character) comes last.
            println!("{}", reply.text.strip_prefix(shown.as_str()).unwrap_or(""));
            eprintln!(
                "{} prompt tokens, {} generated; load {:.0} ms, prefill {:.0} ms, decode {:.0} ms",
                reply.prompt_tokens.len(),
                g.tokens.len(),
                model.load_ms,
                g.prefill_ms,
                g.decode_ms
            );
        }
    }
    if g.stop == StopReason::Cancelled {
        eprintln!("stopped by Ctrl-C after {} tokens", g.tokens.len());
        return Ok(ExitCode::from(super::run::EXIT_INTERRUPTED));
    }
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C once: stop before the next token or layer and print what was made;
/// twice: quit at once (a layer of a large model on a CPU can take seconds).
fn watch_ctrl_c(runtime: &tokio::runtime::Handle, cancel: CancelToken) {
    runtime.spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if cancel.is_cancelled() {
                std::process::exit(i32::from(super::run::EXIT_INTERRUPTED));
            }
            eprintln!("stopping (Ctrl-C again to quit at once)");
            cancel.cancel();
        }
    });
}
