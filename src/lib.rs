//! Echo Workbench: industrial visual inspection with multimodal LLMs.
//!
//! The library is everything but the window: MMAD formats ([`dataset`]), the
//! knowledge base ([`knowledge`]), the Echo pipeline ([`echo`]), run folders
//! ([`runs`]) and MMAD scoring ([`score`]). The GUI lives in [`ui`] behind the default `gui` feature and only
//! draws state and sends commands; all work happens here.

pub mod anomaly;
pub mod config;
pub mod curate;
pub mod dataset;
pub mod echo;
pub mod jobs;
pub mod knowledge;
pub mod memory;
pub mod mllm;
pub mod perf;
pub mod runs;
pub mod score;
pub mod util;
pub mod verdicts;
pub mod vision;
pub mod workspace;

#[cfg(feature = "gui")]
pub mod ui;

#[cfg(test)]
mod architecture_test;

/// Where the repository's bundled files live (sample dataset, knowledge, prompts).
///
/// A development checkout runs from the crate folder; an installed binary may sit
/// elsewhere, so the current directory and the executable's ancestors are tried too.
pub fn assets_dir() -> std::path::PathBuf {
    let mut candidates = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))];
    if let Ok(cwd) = std::env::current_dir() {
        candidates.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).map(|p| p.to_path_buf()));
    }
    candidates
        .into_iter()
        .map(|c| c.join("assets"))
        .find(|a| a.join("sample/mmad.json").is_file())
        .unwrap_or_else(|| std::path::PathBuf::from("assets"))
}

/// The bundled knowledge base folder (sibling of `assets/`).
pub fn bundled_knowledge_path() -> std::path::PathBuf {
    let assets = assets_dir();
    assets
        .parent()
        .map(|p| p.join("knowledge/domain_knowledge.json"))
        .unwrap_or_else(|| "knowledge/domain_knowledge.json".into())
}
