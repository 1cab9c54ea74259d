//! The two test passes of CI (`cargo test`, then `cargo test --no-default-features`)
//! share every compiled dependency only while each crate gets the same features in
//! both. Cargo.toml's feature pins keep it so; this test names the crate whose pin is
//! missing or stale when a dependency change breaks that, instead of CI quietly
//! rebuilding a hundred crates (8 of its minutes when it last happened).

#![cfg(target_os = "linux")]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

type FeatureSets = BTreeMap<String, BTreeSet<BTreeSet<String>>>;

/// Every package of the dependency tree (normal, build and dev edges) with each
/// feature set it is built with, for one choice of this package's features.
fn feature_sets(extra_args: &[&str]) -> FeatureSets {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--locked", "--offline", "-e", "normal,build,dev"])
        .args(["--prefix", "none", "-f", "{p} [{f}]"])
        .args(extra_args)
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sets = FeatureSets::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "name vX.Y.Z (path or proc-macro ...) [f1,f2]"; the features come last.
        let (Some(open), Some(close)) = (line.rfind('['), line.rfind(']')) else {
            continue;
        };
        let mut words = line.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        let features = line[open + 1..close]
            .split(',')
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect();
        sets.entry(format!("{name} {version}"))
            .or_default()
            .insert(features);
    }
    sets
}

#[test]
fn the_core_builds_every_dependency_with_the_guis_features() {
    let gui = feature_sets(&[]);
    let core = feature_sets(&["--no-default-features"]);
    assert!(
        core.len() > 100 && gui.len() > core.len(),
        "cargo tree printed too little to compare ({} and {} packages)",
        core.len(),
        gui.len()
    );
    let mut differing = Vec::new();
    for (package, sets) in &core {
        if package.starts_with("echo-workbench ") {
            continue;
        }
        let with_gui = gui.get(package).cloned().unwrap_or_default();
        for features in sets.difference(&with_gui) {
            differing.push(format!(
                "{package}: [{}] without the GUI, {:?} with it",
                features.iter().cloned().collect::<Vec<_>>().join(","),
                with_gui
            ));
        }
    }
    assert!(
        differing.is_empty(),
        "these dependencies would be built twice in CI; pin the GUI's features in \
         Cargo.toml's feature pins:\n{}",
        differing.join("\n")
    );
}
