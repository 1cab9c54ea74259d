//! What both test binaries share. Each uses only part of it.
#![allow(dead_code)]

pub mod fake_hub;

use std::path::{Path, PathBuf};

/// The repository root: the sample dataset, assets and fixtures are read in place.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A path inside the repository.
pub fn repo(p: &str) -> PathBuf {
    root().join(p)
}

/// The bundled sample dataset's folder.
pub fn sample_dir() -> PathBuf {
    repo("assets/sample")
}

/// The command-line binary, as a user runs it.
pub fn bin() -> assert_cmd::Command {
    assert_cmd::Command::new(env!("CARGO_BIN_EXE_echo-workbench"))
}

/// [`bin`] with its caches in a scratch home, never the user's workspace.
pub fn bin_with_scratch_home() -> assert_cmd::Command {
    let mut c = bin();
    c.env(
        "ECHO_WORKBENCH_HOME",
        std::env::temp_dir().join("echo-workbench-tests"),
    );
    c
}
