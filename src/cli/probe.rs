//! `probe`: can this endpoint answer Echo's two-image questions?

use std::process::ExitCode;

use clap::Args;
use echo_workbench::mllm::{EndpointConfig, MllmClient};

use crate::TextOrJson;

#[derive(Args)]
pub struct ProbeArgs {
    /// Base URL of an OpenAI-compatible API, e.g. http://localhost:8000/v1.
    #[arg(long)]
    endpoint: String,
    #[arg(long)]
    model: String,
    /// Name of the environment variable that holds the API key (the key itself is
    /// never accepted on the command line).
    #[arg(long)]
    api_key_env: Option<String>,
    #[arg(long, default_value_t = 60.0)]
    timeout_s: f64,
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    format: TextOrJson,
}

pub fn run(args: &ProbeArgs) -> anyhow::Result<ExitCode> {
    let client = MllmClient::new(EndpointConfig {
        base_url: args.endpoint.clone(),
        model: args.model.clone(),
        api_key_env: args.api_key_env.clone(),
        timeout_s: args.timeout_s,
        max_retries: 0,
        ..EndpointConfig::default()
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
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
