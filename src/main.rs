//! `echo-workbench`: with no subcommand it opens the desktop app; subcommands are
//! the same core run from a terminal or a script.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod cli;

#[derive(Parser)]
#[command(
    name = "echo-workbench",
    version = echo_workbench::VERSION_LINE,
    about = "Industrial visual inspection with multimodal LLMs: Echo on MMAD",
    long_about = "Industrial visual inspection with multimodal LLMs.\n\nWithout a subcommand the desktop app opens on the bundled sample dataset."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Score MMAD answers (answers JSON list, run journal .jsonl, or run folder) with MMAD's metric.
    Score(cli::score::ScoreArgs),
    /// Compare two runs: each cell's difference with a 95% interval, the questions
    /// that flipped, and McNemar's exact test.
    Compare(cli::compare::CompareArgs),
    /// Export a run: MMAD's answers JSON, MMAD's accuracy CSV and an HTML report.
    Export(cli::export::ExportArgs),
    /// Merge the shards of one run into one run folder.
    Merge(cli::merge::MergeArgs),
    /// Embed one image and print the vector.
    Embed(cli::memory::EmbedArgs),
    /// Build reference memories of defect-free images.
    #[command(subcommand)]
    Memory(MemoryCommand),
    /// Find the most similar defect-free references for an image.
    Retrieve(cli::memory::RetrieveArgs),
    /// An anomaly map of one image against normal references: score, threshold, regions.
    Anomaly(Box<cli::anomaly::AnomalyArgs>),
    /// Image AUROC, pixel AUROC and AUPRO of the anomaly maps over an MMAD dataset.
    AnomalyEval(cli::anomaly::AnomalyEvalArgs),
    /// Measure speed (the figures quoted in the README).
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
    /// Ask one question about one image through the Echo pipeline, showing every expert.
    Inspect(Box<cli::inspect::InspectArgs>),
    /// Local vision-language models: fetch one into the HF cache, or check a folder.
    #[command(subcommand)]
    Model(cli::model::ModelCommand),
    /// Run a local OpenAI-compatible server that answers without a model (tests, demos).
    MockServer(cli::mock_server::MockServerArgs),
    /// One user turn through a local model (Qwen3-VL): prompt and generated token
    /// ids, text and timings, to check against transformers.
    Generate(Box<cli::generate::GenerateArgs>),
    /// Check that an endpoint lists the model and accepts two images per request.
    Probe(cli::probe::ProbeArgs),
    /// Run an MMAD dataset through the pipeline into a run folder (resumable, shardable).
    Run(Box<cli::run::RunArgs>),
    /// Inspect MMAD-format datasets.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Check a knowledge base (MMAD's domain_knowledge.json shape).
    #[command(subcommand)]
    Knowledge(KnowledgeCommand),
    /// Open the desktop app (the default when no subcommand is given).
    #[cfg(feature = "gui")]
    Gui(GuiArgs),
}

#[cfg(feature = "gui")]
#[derive(clap::Args)]
struct GuiArgs {
    /// Open on this tab instead of the last one used.
    #[arg(long, value_enum)]
    tab: Option<echo_workbench::ui::Tab>,
    /// Open this dataset image (its key in mmad.json, e.g. MVTec-AD/bottle/test/good/000.png).
    #[arg(long, value_name = "KEY")]
    image: Option<String>,
    /// The workspace folder (settings, caches, memories, runs); the same as setting
    /// ECHO_WORKBENCH_HOME.
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
}

#[cfg(feature = "gui")]
impl From<GuiArgs> for echo_workbench::ui::LaunchOptions {
    fn from(args: GuiArgs) -> Self {
        echo_workbench::ui::LaunchOptions {
            tab: args.tab,
            image: args.image,
            workspace: args.workspace,
        }
    }
}

/// Rust ignores SIGPIPE, so `echo-workbench score RUN | head` would panic in
/// `println!` once `head` exits. A command-line tool should end quietly instead, as
/// `cat` does: the default action, which terminates the process.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; setting a signal's
    // disposition to its default has no other effect on the process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Images, questions, counts per dataset and type, and missing files.
    Stats {
        /// An MMAD-format mmad.json (default: the bundled sample dataset, with its
        /// files checked).
        mmad_json: Option<PathBuf>,
        /// The dataset root; when given, image and template files are checked.
        #[arg(long)]
        root: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
        format: TextOrJson,
    },
}

#[derive(Subcommand)]
enum MemoryCommand {
    /// Embed normal images and index them into a memory folder.
    Build(cli::memory::BuildArgs),
}

#[derive(Subcommand)]
enum KnowledgeCommand {
    /// List validation problems; exits non-zero when there are errors.
    Validate {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
        format: TextOrJson,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TextOrJson {
    Text,
    Json,
}

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Score(args)) => cli::score::run(&args),
        Some(Command::Compare(args)) => cli::compare::run(&args),
        Some(Command::Export(args)) => cli::export::run(&args),
        Some(Command::Merge(args)) => cli::merge::run(&args),
        Some(Command::Embed(args)) => cli::memory::embed(&args),
        Some(Command::Anomaly(args)) => cli::anomaly::run(&args),
        Some(Command::AnomalyEval(args)) => cli::anomaly::eval(&args),
        Some(Command::Bench(cmd)) => cli::bench::run(&cmd),
        Some(Command::Memory(MemoryCommand::Build(args))) => cli::memory::build(&args),
        Some(Command::Retrieve(args)) => cli::memory::retrieve(&args),
        Some(Command::Inspect(args)) => cli::inspect::run(&args),
        Some(Command::Model(cmd)) => cli::model::run(&cmd),
        Some(Command::MockServer(args)) => cli::mock_server::run(&args),
        Some(Command::Probe(args)) => cli::probe::run(&args),
        Some(Command::Generate(args)) => cli::generate::run(&args),
        Some(Command::Run(args)) => cli::run::run(&args),
        Some(Command::Dataset(DatasetCommand::Stats {
            mmad_json,
            root,
            format,
        })) => match mmad_json {
            Some(file) => cli::dataset::stats(&file, root.as_deref(), format),
            None => {
                let sample = echo_workbench::assets_dir().join("sample");
                eprintln!("the bundled sample: {}", sample.display());
                let root = root.unwrap_or_else(|| sample.clone());
                cli::dataset::stats(&sample.join("mmad.json"), Some(&root), format)
            }
        },
        Some(Command::Knowledge(KnowledgeCommand::Validate { file, format })) => {
            cli::knowledge::validate(&file, format)
        }
        #[cfg(feature = "gui")]
        Some(Command::Gui(args)) => echo_workbench::ui::run(args.into()),
        #[cfg(feature = "gui")]
        None => echo_workbench::ui::run(Default::default()),
        #[cfg(not(feature = "gui"))]
        None => Err(anyhow::anyhow!(
            "this build has no GUI (built without the `gui` feature); run `echo-workbench --help` for the commands"
        )),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", echo_workbench::util::error::chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}
