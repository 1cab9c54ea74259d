//! `run`: a batch run of an MMAD dataset through the Echo pipeline into a run
//! folder (manifest + journal), with progress, Ctrl-C handling and resume.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use echo_workbench::echo::plan::{KnowledgeMode, ReasoningMode, ScopeMode};
use echo_workbench::mllm::EndpointConfig;
use echo_workbench::runs::manifest::{Selection, Shard};
use echo_workbench::runs::runner::{
    self, RunControl, RunEvent, RunOutcome, RunProgress, RunSpec, RunSummary, TemplateSource,
};
use echo_workbench::runs::select::parse_type_name;
use echo_workbench::vision::spec::EmbedderSpec;

use super::workspace::{AppSettings, WorkspaceArg};

/// The exit code of a run stopped by its token or cost budget (`--max-tokens-total`,
/// `--max-cost`).
const EXIT_BUDGET: u8 = 3;

/// The exit code of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

/// `--shard I/N` or `--shard auto`.
#[derive(Debug, Clone, Copy)]
pub enum ShardArg {
    Fixed(Shard),
    Auto,
}

impl std::str::FromStr for ShardArg {
    type Err = echo_workbench::runs::select::SelectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("auto") {
            Ok(ShardArg::Auto)
        } else {
            s.parse().map(ShardArg::Fixed)
        }
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// The MMAD-format mmad.json to run (or the app's, with --workspace).
    #[arg(long, value_name = "MMAD_JSON")]
    dataset: Option<PathBuf>,
    /// The folder the dataset's image paths are relative to (default: the folder
    /// holding the mmad.json).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// The run folder (manifest.json, journal.jsonl).
    #[arg(long, value_name = "RUN_DIR")]
    out: PathBuf,
    /// Base URL of an OpenAI-compatible API; repeat to spread the run over several
    /// (with --workspace and no --endpoint: the app's active endpoint).
    #[arg(long = "endpoint", value_name = "URL")]
    endpoints: Vec<String>,
    /// The model name the server expects: once for every endpoint, or once per
    /// --endpoint in the same order.
    #[arg(long = "model", value_name = "M")]
    models: Vec<String>,
    /// Environment variable holding the API key (once, or once per --endpoint); the
    /// key itself is never written anywhere.
    #[arg(long = "api-key-env", value_name = "VAR")]
    api_key_envs: Vec<String>,
    /// Requests in flight per endpoint (once, or once per --endpoint) [default: 8].
    #[arg(long = "concurrency", value_name = "N", value_parser = super::parse_concurrency)]
    concurrency: Vec<usize>,
    /// Seconds to wait for one HTTP attempt [default: 120].
    #[arg(long, value_name = "S")]
    timeout_s: Option<f64>,
    /// Further attempts after a connection failure, timeout, HTTP 429 or 5xx, or a 200
    /// whose body is not JSON [default: 3].
    #[arg(long)]
    max_retries: Option<u32>,
    /// Backoff scale between attempts, in milliseconds [default: 500].
    #[arg(long)]
    retry_base_ms: Option<u64>,
    /// Most tokens per reply (default: the client's, MMAD's 128).
    #[arg(long)]
    max_tokens: Option<u32>,
    /// A preset of the experts table: echo, mmad, full (or one of your own) [default: echo].
    #[arg(long)]
    preset: Option<String>,
    /// Where reference images come from (default: retrieved with --memory, else
    /// MMAD's similar_templates).
    #[arg(long, value_enum)]
    template: Option<TemplateSource>,
    /// A reference memory folder (`memory build`), for --template retrieved.
    #[arg(long, value_name = "DIR")]
    memory: Option<PathBuf>,
    /// Override the embedder recorded in the memory.
    #[arg(long, requires = "memory")]
    embedder: Option<EmbedderSpec>,
    /// The knowledge base (default: the bundled knowledge/domain_knowledge.json).
    #[arg(long, value_name = "FILE")]
    knowledge: Option<PathBuf>,
    /// Echo's condensed knowledge (default: the bundled knowledge/condensed.json).
    #[arg(long, value_name = "FILE")]
    condensed: Option<PathBuf>,
    /// category | condensed | options | llm | off (default: the preset's).
    #[arg(long, value_name = "MODE")]
    knowledge_mode: Option<KnowledgeMode>,
    /// inline | separate | off (default: the preset's).
    #[arg(long, value_name = "MODE")]
    reasoning: Option<ReasoningMode>,
    /// Memory search scope: global (Echo) | category [default: global].
    #[arg(long, value_name = "SCOPE")]
    scope: Option<ScopeMode>,
    #[command(flatten)]
    map: super::inspect::MapArgs,
    /// Only these dataset folders (comma-separated or repeated), e.g. DS-MVTec,VisA.
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    datasets: Vec<String>,
    /// Only these categories, e.g. bottle,candle.
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    categories: Vec<String>,
    /// Only these question types (MMAD's names or initials: AD, DC, DL, DD, DA, OC, OS, OD).
    #[arg(long, value_delimiter = ',', value_name = "TYPE")]
    types: Vec<String>,
    /// The first N selected questions, in file order.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Run one of N shards of the selected images (0-based), e.g. 0/4; `auto` takes
    /// it from a Slurm job array or a Kubernetes Indexed Job.
    #[arg(long, value_name = "I/N|auto")]
    shard: Option<ShardArg>,
    /// The shard count for `--shard auto` under Kubernetes (the Job's completions;
    /// or set ECHO_SHARD_COUNT).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    shard_count: Option<u32>,
    /// Send every question about one image to the same endpoint.
    #[arg(long)]
    image_affinity: bool,
    /// Continue the run in --out, skipping the questions it has recorded.
    #[arg(long)]
    resume: bool,
    /// Resume even though the settings differ from the run folder's.
    #[arg(long)]
    force: bool,
    /// Ask the questions recorded as errors again (implies --resume).
    #[arg(long)]
    retry_errors: bool,
    /// Ask questions whose plan reads knowledge (or memory images, or template files)
    /// that is not there, instead of refusing the run; the manifest and the summary
    /// say how many.
    #[arg(long)]
    allow_missing_knowledge: bool,
    /// Stop gracefully once the journal's questions have used this many tokens (as
    /// the servers report them; earlier sessions count). Resume with a larger budget
    /// to continue. Exit code 3 when the budget stopped the run.
    #[arg(long, value_name = "TOKENS")]
    max_tokens_total: Option<u64>,
    #[command(flatten)]
    protocol: super::protocol::ProtocolArgs,
    /// Stop gracefully once the journal's tokens cost this much (earlier sessions
    /// count), at the endpoints' prices: --price-prompt/--price-completion, or the
    /// prices the app's settings give the endpoint; refused without one. Resume with
    /// a larger budget to continue. Exit code 3 when the budget stopped the run.
    #[arg(long, value_name = "DOLLARS", value_parser = non_negative)]
    max_cost: Option<f64>,
    /// Price of a million prompt tokens at every endpoint of the run (overrides
    /// the settings'); recorded in the manifest.
    #[arg(long, value_name = "PRICE", requires = "price_completion", value_parser = non_negative)]
    price_prompt: Option<f64>,
    /// Price of a million completion tokens at every endpoint of the run.
    #[arg(long, value_name = "PRICE", requires = "price_prompt", value_parser = non_negative)]
    price_completion: Option<f64>,
    /// A note stored in the manifest (the run's purpose).
    #[arg(long, default_value = "")]
    note: String,
    /// Seconds between progress lines when stderr is not a terminal.
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    progress_every_s: f64,
    #[command(flatten)]
    workspace: WorkspaceArg,
}

fn non_negative(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!(
            "{s} is not an amount of money (a number, 0 or more)"
        ))
    }
}

/// One value for all endpoints, or one per endpoint.
fn per_endpoint<T: Clone>(values: &[T], endpoints: usize, flag: &str) -> anyhow::Result<Vec<T>> {
    match values.len() {
        1 => Ok(vec![values[0].clone(); endpoints]),
        n if n == endpoints => Ok(values.to_vec()),
        n => bail!(
            "{flag} was given {n} times for {endpoints} --endpoint: give it once for all, or once per endpoint"
        ),
    }
}

/// `host:port` of a URL, the endpoint's name in records.
fn endpoint_name(url: &str, i: usize) -> String {
    reqwest::Url::parse(url.trim())
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port_or_known_default() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            })
        })
        .unwrap_or_else(|| format!("endpoint {}", i + 1))
}

const DEFAULT_CONCURRENCY: usize = 8;
const DEFAULT_TIMEOUT_S: f64 = 120.0;
const DEFAULT_MAX_RETRIES: u32 = 3;
const DEFAULT_RETRY_BASE_MS: u64 = 500;

/// The endpoints named by --endpoint, with the flags' settings.
fn endpoints_from_flags(args: &RunArgs) -> anyhow::Result<Vec<EndpointConfig>> {
    let n = args.endpoints.len();
    if args.models.is_empty() {
        bail!("--model is required with --endpoint (the model name the server expects)");
    }
    let models = per_endpoint(&args.models, n, "--model")?;
    let concurrency = if args.concurrency.is_empty() {
        vec![DEFAULT_CONCURRENCY; n]
    } else {
        per_endpoint(&args.concurrency, n, "--concurrency")?
    };
    let keys: Vec<Option<String>> = if args.api_key_envs.is_empty() {
        vec![None; n]
    } else {
        per_endpoint(&args.api_key_envs, n, "--api-key-env")?
            .into_iter()
            .map(Some)
            .collect()
    };
    Ok(args
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let mut cfg = EndpointConfig {
                name: endpoint_name(url, i),
                base_url: url.clone(),
                model: models[i].clone(),
                api_key_env: keys[i].clone(),
                timeout_s: args.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S),
                max_in_flight: concurrency[i],
                max_retries: args.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
                retry_base_ms: args.retry_base_ms.unwrap_or(DEFAULT_RETRY_BASE_MS),
                ..EndpointConfig::default()
            };
            if let Some(t) = args.max_tokens {
                cfg.max_tokens = t;
            }
            cfg
        })
        .collect())
}

/// The app's active endpoint as its settings describe it, with any flag given
/// taking precedence.
fn endpoint_from_settings(args: &RunArgs, app: &AppSettings) -> anyhow::Result<EndpointConfig> {
    let mut cfg = app.active_endpoint()?;
    let one = |values: usize, flag: &str| {
        if values > 1 {
            bail!("{flag} was given {values} times for the one endpoint of the settings");
        }
        Ok(())
    };
    one(args.models.len(), "--model")?;
    one(args.concurrency.len(), "--concurrency")?;
    one(args.api_key_envs.len(), "--api-key-env")?;
    if let Some(m) = args.models.first() {
        cfg.model = m.clone();
    }
    if let Some(&c) = args.concurrency.first() {
        cfg.max_in_flight = c;
    }
    if let Some(k) = args.api_key_envs.first() {
        cfg.api_key_env = Some(k.clone());
    }
    cfg.timeout_s = args.timeout_s.unwrap_or(cfg.timeout_s);
    cfg.max_retries = args.max_retries.unwrap_or(cfg.max_retries);
    cfg.retry_base_ms = args.retry_base_ms.unwrap_or(cfg.retry_base_ms);
    if let Some(t) = args.max_tokens {
        cfg.max_tokens = t;
    }
    Ok(cfg)
}

fn spec_from(args: &RunArgs) -> anyhow::Result<RunSpec> {
    let app = args.workspace.load()?;
    let endpoints = match &app {
        _ if !args.endpoints.is_empty() => endpoints_from_flags(args)?,
        Some(app) => vec![endpoint_from_settings(args, app)?],
        None => bail!(
            "--endpoint URL and --model M are required (or --workspace, to use the app's endpoint)"
        ),
    };
    let max = echo_workbench::mllm::MAX_IN_FLIGHT;
    if let Some(e) = endpoints
        .iter()
        .find(|e| !(1..=max).contains(&e.max_in_flight))
    {
        // Flags are refused by their parser, so this value came from the settings.
        let from = app
            .as_ref()
            .map(|a| format!(" in {}", a.path.display()))
            .unwrap_or_default();
        bail!(
            "endpoint `{}` has max_in_flight = {}{from}; it must be between 1 and {max} (set it there, or pass --concurrency N)",
            e.name,
            e.max_in_flight
        );
    }
    let (dataset, root) = match (&args.dataset, &app) {
        (Some(d), _) => {
            let root = args.root.clone().unwrap_or_else(|| {
                d.parent()
                    .map(|p| p.to_path_buf())
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or_else(|| PathBuf::from("."))
            });
            (d.clone(), root)
        }
        (None, Some(app)) => (
            app.settings.dataset.mmad_json.clone(),
            args.root
                .clone()
                .unwrap_or_else(|| app.settings.dataset.root.clone()),
        ),
        (None, None) => {
            bail!("--dataset MMAD_JSON is required (or --workspace, to use the app's dataset)")
        }
    };
    let types = args
        .types
        .iter()
        .map(|t| parse_type_name(t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut endpoints = endpoints;
    if let (Some(prompt), Some(completion)) = (args.price_prompt, args.price_completion) {
        for e in &mut endpoints {
            e.set_price(Some(echo_workbench::mllm::Price {
                prompt_per_million: prompt,
                completion_per_million: completion,
            }));
        }
    }
    let mut spec = RunSpec::new(&dataset, root, endpoints, &args.out);
    spec.selection = Selection {
        datasets: args.datasets.clone(),
        categories: args.categories.clone(),
        types,
        limit: args.limit,
        ..Selection::default()
    };
    match args.shard {
        Some(ShardArg::Fixed(shard)) => spec.shard = Some(shard),
        Some(ShardArg::Auto) => {
            let env = |name: &str| std::env::var(name).ok();
            let (shard, placement) =
                echo_workbench::runs::scheduler::shard_from_environment(&env, args.shard_count)?;
            eprintln!(
                "shard {shard} from {} on {}",
                placement.scheduler, placement.host
            );
            spec.shard = Some(shard);
            spec.placement = Some(placement);
        }
        None => {}
    }
    let mut pipeline = app
        .as_ref()
        .map(|a| a.settings.pipeline.clone())
        .unwrap_or_default();
    if let Some(p) = &args.preset {
        pipeline.preset = p.clone();
    }
    if let Some(scope) = args.scope {
        pipeline.scope = scope;
    }
    if args.knowledge_mode.is_some() {
        pipeline.knowledge_mode = args.knowledge_mode;
    }
    if args.reasoning.is_some() {
        pipeline.reasoning_mode = args.reasoning;
    }
    args.map.apply(&mut pipeline);
    spec.pipeline = pipeline;
    let settings = app.as_ref().map(|a| &a.settings);
    spec.memory = args
        .memory
        .clone()
        .or_else(|| settings.and_then(|s| s.reference.memory.clone()));
    spec.template = args
        .template
        .unwrap_or(TemplateSource::default_for(spec.memory.is_some()));
    spec.embedder = args.embedder.clone();
    spec.knowledge = args
        .knowledge
        .clone()
        .or_else(|| settings.and_then(|s| s.knowledge.clone()));
    spec.condensed = args.condensed.clone();
    spec.image_affinity = args.image_affinity;
    spec.resume = args.resume || args.retry_errors;
    spec.force = args.force;
    spec.retry_errors = args.retry_errors;
    spec.allow_missing_inputs = args.allow_missing_knowledge;
    spec.max_tokens_total = args.max_tokens_total;
    spec.protocol = args.protocol.protocol()?;
    spec.max_cost = args.max_cost;
    spec.note = args.note.clone();
    Ok(spec)
}

fn progress_text(p: &RunProgress) -> String {
    let eta = p
        .eta_s
        .map(|s| format!(", ETA {}", human_duration(s)))
        .unwrap_or_default();
    let accuracy = p
        .running_accuracy
        .map(|a| format!(", accuracy {:.1}%", a * 100.0))
        .unwrap_or_default();
    format!(
        "{} errors, {:.1} questions/s{eta}{accuracy}, {} in flight",
        p.errors, p.questions_per_s, p.in_flight
    )
}

fn human_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// Where progress goes: a bar on a terminal, a line every few seconds otherwise.
enum Display {
    Bar(indicatif::ProgressBar),
    Lines {
        every: Duration,
        last: Mutex<Option<Instant>>,
    },
}

impl Display {
    fn new(every_s: f64) -> Display {
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(0);
            let style =
                indicatif::ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            Display::Bar(bar)
        } else {
            Display::Lines {
                every: Duration::from_secs_f64(every_s.max(0.1)),
                last: Mutex::new(None),
            }
        }
    }

    fn event(&self, event: &RunEvent) {
        match (self, event) {
            (
                _,
                RunEvent::Started {
                    total,
                    already_done,
                    retrying,
                    run_dir,
                },
            ) => {
                let mut line = format!("run folder {}: {total} questions", run_dir.display());
                if *already_done > 0 {
                    line.push_str(&format!(", {already_done} already recorded"));
                }
                if *retrying > 0 {
                    line.push_str(&format!(", {retrying} errors asked again"));
                }
                match self {
                    Display::Bar(bar) => {
                        bar.println(line);
                        bar.set_length(*total as u64);
                        bar.set_position(*already_done as u64);
                    }
                    Display::Lines { .. } => eprintln!("{line}"),
                }
            }
            (Display::Bar(bar), RunEvent::Progress(p)) => {
                bar.set_position(p.done as u64);
                bar.set_message(progress_text(p));
            }
            (Display::Lines { every, last }, RunEvent::Progress(p)) => {
                let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                if last.is_none_or(|t| t.elapsed() >= *every) {
                    *last = Some(Instant::now());
                    eprintln!("{}/{} done, {}", p.done, p.total, progress_text(p));
                }
            }
            (Display::Bar(bar), RunEvent::Finished(_)) => bar.finish_and_clear(),
            _ => {}
        }
    }

    fn println(&self, line: &str) {
        match self {
            Display::Bar(bar) => bar.println(line),
            Display::Lines { .. } => eprintln!("{line}"),
        }
    }
}

fn questions(n: usize) -> String {
    if n == 1 {
        "1 question".into()
    } else {
        format!("{n} questions")
    }
}

fn print_summary(s: &RunSummary) {
    println!(
        "answered {}, errors {}, of {} questions ({} recorded now, {} before)",
        s.answered, s.errors, s.total, s.written, s.already_done
    );
    let accuracy = match (s.accuracy, s.mmad_average) {
        (Some(a), Some(m)) => format!("accuracy {:.2}% (MMAD average {m:.2})", a * 100.0),
        (Some(a), None) => format!("accuracy {:.2}%", a * 100.0),
        _ => "accuracy -".into(),
    };
    println!(
        "{accuracy}, elapsed {:.1} s, {:.2} questions/s",
        s.elapsed_s, s.questions_per_s
    );
    if let Some(cost) = s.cost {
        println!("cost {cost:.4} for {} tokens reported", s.tokens);
    }
    if s.without_inputs > 0 {
        println!(
            "{} of {} without an input their plan reads (allowed by --allow-missing-knowledge; the manifest's missing_inputs lists them by category)",
            questions(s.without_inputs),
            s.total
        );
    }
    match s.outcome {
        RunOutcome::Finished if s.errors > 0 => println!(
            "{} failed after retries; ask them again with --retry-errors",
            questions(s.errors)
        ),
        RunOutcome::Finished => {}
        RunOutcome::Stopped if s.max_cost_reached => println!(
            "stopped: the cost budget is spent ({:.4} for {} tokens reported); {} of {} questions have a record; continue with --resume and a larger --max-cost",
            s.cost.unwrap_or_default(),
            s.tokens,
            s.answered + s.errors,
            s.total
        ),
        RunOutcome::Stopped if s.budget_reached => println!(
            "stopped: the token budget is spent ({} tokens reported); {} of {} questions have a record; continue with --resume and a larger --max-tokens-total",
            s.tokens,
            s.answered + s.errors,
            s.total
        ),
        RunOutcome::Stopped => println!(
            "stopped: {} of {} questions have a record; continue with --resume",
            s.answered + s.errors,
            s.total
        ),
        RunOutcome::Abandoned => println!(
            "abandoned: {} in flight not recorded; continue with --resume",
            questions(s.dropped)
        ),
    }
}

/// Ctrl-C once: stop after the questions in flight; twice: abandon them. Listens
/// on the command's runtime for as long as it runs.
fn watch_ctrl_c(
    runtime: &tokio::runtime::Handle,
    control: RunControl,
    notify: impl Fn(&str) + Send + 'static,
) {
    runtime.spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if control.stop.is_cancelled() {
                notify("abandoning the questions in flight (they will not be recorded)");
            } else {
                notify(
                    "stopping: finishing the questions in flight (Ctrl-C again to abandon them)",
                );
            }
            control.interrupt();
        }
    });
}

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let spec = spec_from(args)?;
    let display = std::sync::Arc::new(Display::new(args.progress_every_s));
    let control = RunControl::new();
    let runtime = super::runtime()?;
    let shown = display.clone();
    watch_ctrl_c(runtime.handle(), control.clone(), move |msg| {
        shown.println(msg)
    });
    let events = |e: RunEvent| display.event(&e);
    let summary = runner::run(&spec, &events, &control, runtime.handle())?;
    print_summary(&summary);
    Ok(match summary.outcome {
        RunOutcome::Finished => ExitCode::SUCCESS,
        RunOutcome::Stopped if summary.budget_reached || summary.max_cost_reached => {
            ExitCode::from(EXIT_BUDGET)
        }
        RunOutcome::Stopped | RunOutcome::Abandoned => ExitCode::from(EXIT_INTERRUPTED),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_endpoint_values_repeat_or_match() {
        assert_eq!(per_endpoint(&[4], 3, "--c").unwrap(), [4, 4, 4]);
        assert_eq!(per_endpoint(&[1, 2], 2, "--c").unwrap(), [1, 2]);
        let e = per_endpoint(&[1, 2], 3, "--concurrency").unwrap_err();
        assert!(
            e.to_string().contains("--concurrency was given 2 times"),
            "{e}"
        );
    }

    #[test]
    fn endpoint_names_show_host_and_port_only() {
        assert_eq!(
            endpoint_name("http://user:pw@10.0.0.2:8000/v1", 0),
            "10.0.0.2:8000"
        );
        assert_eq!(
            endpoint_name("https://api.example.org/v1", 0),
            "api.example.org:443"
        );
        assert_eq!(endpoint_name("not a url", 1), "endpoint 2");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(5.4), "5 s");
        assert_eq!(human_duration(125.0), "2 min 5 s");
        assert_eq!(human_duration(7260.0), "2 h 1 min");
    }
}
