use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use echo_workbench::dataset::{DatasetRoot, DatasetStats, MmadDataset};

use crate::TextOrJson;

pub fn stats(
    mmad_json: &Path,
    root: Option<&Path>,
    format: TextOrJson,
) -> anyhow::Result<ExitCode> {
    let dataset = MmadDataset::load(mmad_json)?;
    for w in dataset.warnings().iter().take(20) {
        eprintln!("warning: {w}");
    }
    let root = root.map(DatasetRoot::new);
    if let Some(r) = &root
        && !r.path().is_dir()
    {
        anyhow::bail!("dataset root {} is not a folder", r.path().display());
    }
    let stats = DatasetStats::compute(&dataset, root.as_ref())
        .with_context(|| format!("{}: unsafe path", mmad_json.display()))?;
    match format {
        TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&stats)?),
        TextOrJson::Text => print!("{}", stats.to_text(root.is_some())),
    }
    Ok(ExitCode::SUCCESS)
}
