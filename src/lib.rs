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
pub mod local;
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

/// Environment variable naming the folder that holds `assets/` and `knowledge/`,
/// for a relocated install.
pub const DATA_DIR_VAR: &str = "ECHO_WORKBENCH_DATA";

/// Where the bundled files live (sample dataset, prompts, expert table; the bundled
/// knowledge sits beside it in `knowledge/`).
///
/// Looked for, in order: `$ECHO_WORKBENCH_DATA/assets`; the install layout beside the
/// executable (`<prefix>/bin/echo-workbench` with `<prefix>/share/echo-workbench/assets`,
/// as the Debian package and the AppImage lay it out); a checkout above the executable
/// (`target/release/echo-workbench` in the source tree); the source tree the binary was
/// built from. Never the current directory: a program started from `/` or from a
/// user's folder must find its own files, not whatever happens to be there.
pub fn assets_dir() -> std::path::PathBuf {
    assets_dir_from(
        std::env::var_os(DATA_DIR_VAR).map(std::path::PathBuf::from),
        std::env::current_exe().ok(),
    )
}

fn assets_dir_from(
    data_dir: Option<std::path::PathBuf>,
    exe: Option<std::path::PathBuf>,
) -> std::path::PathBuf {
    let mut candidates: Vec<std::path::PathBuf> = Vec::new();
    candidates.extend(data_dir);
    if let Some(exe) = exe {
        // Resolve a symlinked launcher (/usr/local/bin -> /opt/...) to the real install.
        let exe = exe.canonicalize().unwrap_or(exe);
        if let Some(prefix) = exe.parent().and_then(|bin| bin.parent()) {
            candidates.push(prefix.join("share/echo-workbench"));
        }
        candidates.extend(exe.ancestors().skip(1).map(|p| p.to_path_buf()));
    }
    candidates.push(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    candidates
        .into_iter()
        .map(|c| c.join("assets"))
        .find(|a| a.join("sample/mmad.json").is_file())
        .unwrap_or_else(|| std::path::PathBuf::from("assets"))
}

/// The version and the commit it was built from, as `--version` prints them.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ECHO_GIT_COMMIT"),
    ")"
);

/// The bundled knowledge base folder (sibling of `assets/`).
pub fn bundled_knowledge_path() -> std::path::PathBuf {
    let assets = assets_dir();
    assets
        .parent()
        .map(|p| p.join("knowledge/domain_knowledge.json"))
        .unwrap_or_else(|| "knowledge/domain_knowledge.json".into())
}

#[cfg(test)]
mod assets_tests {
    use super::*;

    fn layout(root: &std::path::Path, assets: &std::path::Path) {
        std::fs::create_dir_all(assets.join("sample")).unwrap();
        std::fs::write(assets.join("sample/mmad.json"), "{}").unwrap();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/echo-workbench"), "").unwrap();
    }

    #[test]
    fn an_installed_binary_finds_its_share_folder_not_the_current_one() {
        let tmp = tempfile::tempdir().unwrap();
        let prefix = tmp.path().join("usr");
        let installed = prefix.join("share/echo-workbench/assets");
        layout(&prefix, &installed);
        let found = assets_dir_from(None, Some(prefix.join("bin/echo-workbench")));
        assert_eq!(found, installed.canonicalize().unwrap_or(installed.clone()));
        // The variable wins over the install layout.
        let other = tmp.path().join("relocated/assets");
        std::fs::create_dir_all(other.join("sample")).unwrap();
        std::fs::write(other.join("sample/mmad.json"), "{}").unwrap();
        let found = assets_dir_from(
            Some(tmp.path().join("relocated")),
            Some(prefix.join("bin/echo-workbench")),
        );
        assert_eq!(found, other);
    }

    #[test]
    fn a_binary_in_a_checkout_finds_the_checkouts_assets() {
        let tmp = tempfile::tempdir().unwrap();
        let checkout = tmp.path().join("src-tree");
        layout(&checkout.join("target/release"), &checkout.join("assets"));
        let exe = checkout.join("target/release/bin/echo-workbench");
        let found = assets_dir_from(None, Some(exe));
        assert!(
            found.starts_with(checkout.canonicalize().unwrap()) || found.starts_with(&checkout),
            "{found:?}"
        );
        assert!(found.ends_with("assets"));
    }

    #[test]
    fn the_version_line_names_the_commit() {
        assert!(VERSION_LINE.starts_with(env!("CARGO_PKG_VERSION")));
        assert!(VERSION_LINE.contains("(commit "), "{VERSION_LINE}");
    }
}
