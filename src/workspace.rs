//! The workspace folder: settings, caches, memories, knowledge versions and runs.

use std::path::PathBuf;

/// Environment variable that overrides the workspace location.
pub const WORKSPACE_ENV: &str = "ECHO_WORKBENCH_HOME";

/// `$ECHO_WORKBENCH_HOME`, else the user's data folder (`~/.local/share/echo-workbench`
/// on Linux), else `.echo-workbench` in the current folder.
pub fn default_dir() -> PathBuf {
    if let Some(p) = std::env::var_os(WORKSPACE_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    dirs::data_dir()
        .map(|d| d.join("echo-workbench"))
        .unwrap_or_else(|| PathBuf::from(".echo-workbench"))
}

/// Where embedding caches live inside a workspace.
pub fn embedding_cache_dir(workspace: &std::path::Path) -> PathBuf {
    workspace.join("cache").join("embeddings")
}
