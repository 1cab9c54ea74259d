use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use echo_workbench::bench::score::{self, ScoreOptions};

#[derive(Args)]
pub struct ScoreArgs {
    /// An MMAD answers JSON (a list) or a run journal (.jsonl, one answer per line).
    file: PathBuf,
    /// Reproduce MMAD summary.py exactly, including its flaw of skipping the entry
    /// after each invalid one.
    #[arg(long)]
    mmad_compat: bool,
    /// Add Overkill (normal parts called defective) and Miss (defects not found).
    #[arg(long)]
    overkill_miss: bool,
    /// Add Recall, Precision and F1 with anomaly as the positive class.
    #[arg(long)]
    detection_metrics: bool,
    #[arg(long, value_enum, default_value_t = ScoreFormat::Table)]
    format: ScoreFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScoreFormat {
    /// An aligned table for people.
    Table,
    /// MMAD's `_accuracy.csv` layout.
    Csv,
    /// {"columns", "index", "table", "invalid", "skipped"}.
    Json,
}

pub fn run(args: &ScoreArgs) -> anyhow::Result<ExitCode> {
    let loaded = score::load_answers(&args.file)?;
    let options = ScoreOptions {
        mmad_compat: args.mmad_compat,
        overkill_miss: args.overkill_miss,
        detection_metrics: args.detection_metrics,
    };
    let table = score::score(&loaded.records, options);
    match args.format {
        ScoreFormat::Json => println!("{}", serde_json::to_string_pretty(&table.to_json())?),
        ScoreFormat::Csv => print!("{}", table.to_csv()),
        ScoreFormat::Table => print!("{}", table.to_text()),
    }
    if table.invalid > 0 {
        eprintln!(
            "note: {} answer(s) were not a single letter A-E and were dropped{}",
            table.invalid,
            if args.mmad_compat {
                format!(
                    "; {} following answer(s) were skipped as MMAD's summary.py does",
                    table.skipped
                )
            } else {
                String::new()
            }
        );
    }
    if !loaded.errors.is_empty() {
        eprintln!(
            "note: {} question(s) ended in an error and are not scored:",
            loaded.errors.len()
        );
        for e in loaded.errors.iter().take(10) {
            eprintln!("  line {}: {} ({})", e.line, e.image, e.reason);
        }
    }
    if loaded.torn_last_line {
        eprintln!("note: the journal's last line was torn (an interrupted write) and was ignored");
    }
    Ok(ExitCode::SUCCESS)
}
