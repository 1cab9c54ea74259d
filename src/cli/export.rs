use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use echo_workbench::runs::export::{self, ExportTargets, ReportLimits};
use echo_workbench::runs::run_folder::RunFolder;

use crate::cli::score::ScoringArgs;

#[derive(Args)]
pub struct ExportArgs {
    /// The run folder to export.
    run_dir: PathBuf,
    /// Write MMAD's answers JSON (the answered questions, in dataset order) here.
    #[arg(long, value_name = "FILE")]
    mmad_answers: Option<PathBuf>,
    /// Write MMAD's accuracy table (`_accuracy.csv` layout) here.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Write the self-contained HTML report here.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Wrong answers whose traces the report shows (the rest are counted).
    #[arg(long, default_value_t = ReportLimits::default().wrong_traces)]
    max_traces: usize,
    #[command(flatten)]
    scoring: ScoringArgs,
}

pub fn run(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let run = RunFolder::open(&args.run_dir)?;
    let mut targets = ExportTargets {
        mmad_answers: args.mmad_answers.clone(),
        accuracy_csv: args.csv.clone(),
        html_report: args.html.clone(),
    };
    if targets.is_empty() {
        targets = ExportTargets::all_in(&run.exports_dir());
    }
    let limits = ReportLimits {
        wrong_traces: args.max_traces,
        ..ReportLimits::default()
    };
    let written = export::write_exports(&run, &targets, args.scoring.options(), limits)?;
    let c = run.coverage();
    println!(
        "{}: {} answered, {} error(s), {} missing of {} question(s)",
        run.name(),
        c.answered,
        c.errors,
        c.missing,
        c.question_count
    );
    for path in written {
        println!("wrote {}", path.display());
    }
    if run.torn_last_line {
        eprintln!("note: the journal's last line was torn (an interrupted write) and was ignored");
    }
    Ok(ExitCode::SUCCESS)
}
