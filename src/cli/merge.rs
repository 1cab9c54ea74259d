use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use echo_workbench::runs::merge;

#[derive(Args)]
pub struct MergeArgs {
    /// Run folders holding shards of one run (same settings fingerprint).
    #[arg(required = true, value_name = "RUN_DIR")]
    inputs: Vec<PathBuf>,
    /// The run folder to create.
    #[arg(long, value_name = "RUN_DIR")]
    out: PathBuf,
    /// Replace `--out` even if it holds files.
    #[arg(long)]
    force: bool,
}

pub fn run(args: &MergeArgs) -> anyhow::Result<ExitCode> {
    let merged = merge::merge_dirs(&args.inputs, &args.out, args.force)?;
    let errors = merged.records.iter().filter(|r| !r.is_ok()).count();
    println!(
        "merged {} run folder(s) into {}: {} record(s) ({} error(s)) for {} question(s)",
        args.inputs.len(),
        args.out.display(),
        merged.records.len(),
        errors,
        merged.manifest.question_count
    );
    if !merged.missing_shards.is_empty() {
        let count = merged.shard_count.unwrap_or_default();
        let names: Vec<String> = merged
            .missing_shards
            .iter()
            .map(|i| format!("--shard {i}/{count}"))
            .collect();
        eprintln!(
            "note: no input holds {}; those questions are not counted",
            names.join(", ")
        );
    }
    for path in &merged.torn_inputs {
        eprintln!(
            "note: {}'s journal ended in a torn line (an interrupted write), which was left out",
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
