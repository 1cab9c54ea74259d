//! `probe`: can this endpoint answer Echo's two-image questions?

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use echo_workbench::mllm::{EndpointConfig, MllmClient};

use super::workspace::{WorkspaceArg, override_endpoint};
use crate::TextOrJson;

#[derive(Args)]
pub struct ProbeArgs {
    /// Base URL of an OpenAI-compatible API, e.g. http://localhost:8000/v1 (with
    /// --workspace and no --endpoint: the app's active endpoint).
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long)]
    model: Option<String>,
    /// Name of the environment variable that holds the API key (the key itself is
    /// never accepted on the command line).
    #[arg(long)]
    api_key_env: Option<String>,
    /// Seconds to wait for each request [default: 60].
    #[arg(long)]
    timeout_s: Option<f64>,
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    format: TextOrJson,
    #[command(flatten)]
    workspace: WorkspaceArg,
}

/// The endpoint to probe: the flags', or the app's active one with the flags given
/// taking precedence.
fn endpoint(args: &ProbeArgs) -> anyhow::Result<EndpointConfig> {
    let mut cfg = match (&args.endpoint, args.workspace.load()?) {
        (Some(url), _) => EndpointConfig {
            base_url: url.clone(),
            model: args
                .model
                .clone()
                .context("--model is required with --endpoint")?,
            timeout_s: 60.0,
            ..EndpointConfig::default()
        },
        (None, Some(app)) => app.active_endpoint()?,
        (None, None) => bail!(
            "--endpoint URL and --model M are required (or --workspace, to probe the app's endpoint)"
        ),
    };
    override_endpoint(
        &mut cfg,
        args.model.as_ref(),
        args.api_key_env.as_ref(),
        args.timeout_s,
    );
    // One answer is the finding: a retry would only hide what the server does.
    cfg.max_retries = 0;
    Ok(cfg)
}

pub fn run(args: &ProbeArgs) -> anyhow::Result<ExitCode> {
    let client = MllmClient::new(endpoint(args)?)?;
    let runtime = super::runtime()?;
    let report = runtime.block_on(client.probe());
    match args.format {
        TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        TextOrJson::Text => {
            println!("{}", report.message);
            if !report.models.is_empty() {
                println!("models: {}", report.models.join(", "));
            }
            println!(
                "model listed: {}, two images: {}, {} ms",
                yes(report.model_listed),
                yes(report.two_images_ok),
                report.latency_ms
            );
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
