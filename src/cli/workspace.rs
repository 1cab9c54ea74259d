//! `--workspace [DIR]`: the commands that talk to a model read the desktop app's
//! settings file for whatever their flags leave out, so a run started from a
//! terminal asks the endpoint, with the knowledge and memory, that the app uses.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use echo_workbench::config::Settings;
use echo_workbench::mllm::EndpointConfig;

#[derive(Args, Debug, Clone, Default)]
pub struct WorkspaceArg {
    /// Take what the flags leave out (endpoint, model, dataset, knowledge, memory,
    /// pipeline settings) from the app's settings: DIR/settings.toml, or, without
    /// DIR, the app's own workspace ($ECHO_WORKBENCH_HOME or the user's data folder).
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "")]
    workspace: Option<PathBuf>,
}

/// The settings file a command read, and what it holds.
pub struct AppSettings {
    pub path: PathBuf,
    pub settings: Settings,
}

impl WorkspaceArg {
    /// The settings, when `--workspace` was given; a missing or malformed file is an
    /// error (the user asked for it).
    pub fn load(&self) -> anyhow::Result<Option<AppSettings>> {
        let Some(dir) = &self.workspace else {
            return Ok(None);
        };
        let dir = if dir.as_os_str().is_empty() {
            echo_workbench::workspace::default_dir()
        } else {
            dir.clone()
        };
        let path = Settings::path_in(&dir);
        if !path.is_file() {
            bail!(
                "no settings file at {}: save the settings in the app's Settings tab first, or name the workspace with --workspace DIR",
                path.display()
            );
        }
        let settings = Settings::load(&path)?;
        eprintln!(
            "settings: {} (for what the flags leave out)",
            path.display()
        );
        Ok(Some(AppSettings { path, settings }))
    }
}

impl AppSettings {
    /// The endpoint the app's Inspect tab asks.
    pub fn active_endpoint(&self) -> anyhow::Result<EndpointConfig> {
        self.settings
            .active_endpoint()
            .cloned()
            .with_context(|| format!("{} lists no endpoint", self.path.display()))
    }
}

/// Endpoint flags a command was given, over whatever endpoint it starts from.
pub fn override_endpoint(
    cfg: &mut EndpointConfig,
    model: Option<&String>,
    api_key_env: Option<&String>,
    timeout_s: Option<f64>,
) {
    if let Some(m) = model {
        cfg.model = m.clone();
    }
    if let Some(k) = api_key_env {
        cfg.api_key_env = Some(k.clone());
    }
    if let Some(t) = timeout_s {
        cfg.timeout_s = t;
    }
}
