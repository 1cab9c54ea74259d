//! Subcommand implementations. Each returns the process exit code, or an error
//! that `main` prints as one sentence.

pub mod anomaly;
pub mod bench;
pub mod compare;
pub mod dataset;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod knowledge;
pub mod memory;
pub mod merge;
pub mod mock_server;
pub mod model;
pub mod probe;
pub mod protocol;
pub mod run;
pub mod score;
pub mod workspace;

/// The command's one tokio runtime: made in its entry and handed down to the
/// library, which never starts one of its own.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `--concurrency N`: refused outside 1..=MAX_IN_FLIGHT by clap, so the message names
/// the flag and the value before anything is created.
pub fn parse_concurrency(text: &str) -> Result<usize, String> {
    let max = echo_workbench::mllm::MAX_IN_FLIGHT;
    match text.trim().parse::<u128>() {
        Ok(n) if (1..=max as u128).contains(&n) => Ok(n as usize),
        Ok(n) => Err(format!(
            "requests in flight per endpoint must be between 1 and {max}, not {n}"
        )),
        Err(e) => Err(format!("not a whole number ({e})")),
    }
}
