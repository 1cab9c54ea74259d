use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use echo_workbench::jobs::CancelToken;
use echo_workbench::runs::anomaly_metrics::{
    CategoryMap, MapMetrics, add_pixel_metrics, map_metrics,
};
use echo_workbench::runs::calibration::{self, Calibration, ConfidenceSource, Reliability};
use echo_workbench::runs::journal::JOURNAL_FILE;
use echo_workbench::runs::manifest::MANIFEST_FILE;
use echo_workbench::runs::run_folder::{Coverage, RunFolder};
use echo_workbench::runs::slices::{CategorySlice, category_slices};
use echo_workbench::runs::usage::{
    Latency, Price, RunCost, RunLatency, RunTokens, Tokens, manifest_price, run_cost, run_latency,
    run_tokens,
};
use echo_workbench::score::interval::{self, BootstrapOptions, CellIntervals};
use echo_workbench::score::{self, AnswerRecord, LoadedAnswers, ScoreOptions, ScoreTable};
use indexmap::IndexMap;
use serde_json::Value;

#[derive(Args)]
pub struct ScoreArgs {
    /// MMAD answers JSON files (a list), run journals (.jsonl, one answer per line) or
    /// run folders (scored over their answered questions in dataset order).
    #[arg(required = true, value_name = "FILE_OR_RUN_DIR")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    scoring: ScoringArgs,
    #[command(flatten)]
    intervals: IntervalArgs,
    /// Print each cell's 95% interval under the table (text format; JSON always has them).
    #[arg(long)]
    show_intervals: bool,
    /// Per category: Overkill, Miss and the Defect Classification confusion matrix
    /// (run folders and their journals; JSON adds "slices").
    #[arg(long)]
    slices: bool,
    /// For runs with the anomaly map (issue 18): image AUROC, pixel AUROC and AUPRO
    /// per category and mean, the map's Overkill/Miss at its threshold beside the
    /// model's, and how often they disagree (JSON adds "anomaly_map"). The pixel
    /// figures recompute each map from the run's memory.
    #[arg(long)]
    anomaly: bool,
    /// Latency of the answered questions (p50 / p95 / max) and the tokens the
    /// servers reported, for the run and per subtask (run folders; JSON adds
    /// "latency" and "tokens").
    #[arg(long)]
    usage: bool,
    /// With --usage: price of a million prompt tokens, for a cost (JSON adds "cost").
    /// Without it, a run whose manifest records its endpoints' prices is costed at
    /// those.
    #[arg(long, value_name = "PRICE", requires = "price_completion")]
    price_prompt: Option<f64>,
    /// With --usage: price of a million completion tokens.
    #[arg(long, value_name = "PRICE", requires = "price_prompt")]
    price_completion: Option<f64>,
    /// How far the answers' confidence can be trusted (runs made with --samples,
    /// --circular or --logprobs): reliability bins, expected calibration error and
    /// the abstain curve, for the run and per subtask (run folders; JSON adds
    /// "calibration").
    #[arg(long)]
    calibration: bool,
    /// With --calibration: an answer's confidence is the probability of its letter
    /// (probs), the agreement over samples or rotations (agreement), or the first
    /// of these the record has (auto).
    #[arg(long, value_enum, default_value_t = SourceArg::Auto, requires = "calibration")]
    confidence_source: SourceArg,
    /// With --calibration: answers below this confidence go to a person; prints how
    /// many, and the coverage and accuracy of the rest (JSON adds "abstain_below").
    #[arg(long, value_name = "T", requires = "calibration", value_parser = unit_interval)]
    abstain_below: Option<f64>,
    #[arg(long, value_enum, default_value_t = ScoreFormat::Table)]
    format: ScoreFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SourceArg {
    Auto,
    Probs,
    Agreement,
}

impl From<SourceArg> for ConfidenceSource {
    fn from(s: SourceArg) -> Self {
        match s {
            SourceArg::Auto => ConfidenceSource::Auto,
            SourceArg::Probs => ConfidenceSource::Probs,
            SourceArg::Agreement => ConfidenceSource::Agreement,
        }
    }
}

fn unit_interval(s: &str) -> Result<f64, String> {
    let t: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&t) {
        Ok(t)
    } else {
        Err(format!("{t} is not a confidence between 0 and 1"))
    }
}

/// How the 95% intervals are drawn; shared by `score` and `compare`.
#[derive(Args, Clone, Copy)]
pub struct IntervalArgs {
    /// Bootstrap resamples behind each 95% interval (resampled by image within each
    /// dataset); 0 leaves the intervals out.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    ci_resamples: usize,
    /// Seed of the resamples: the same answers and seed give the same intervals.
    #[arg(long, default_value_t = 0, value_name = "SEED")]
    ci_seed: u64,
}

impl IntervalArgs {
    /// `None` when the intervals are switched off.
    pub fn options(self) -> Option<BootstrapOptions> {
        (self.ci_resamples > 0).then_some(BootstrapOptions {
            resamples: self.ci_resamples,
            seed: self.ci_seed,
            ..BootstrapOptions::default()
        })
    }
}

/// How the intervals were drawn, beside them in JSON output.
pub fn bootstrap_json(boot: &BootstrapOptions) -> Value {
    serde_json::json!({
        "resamples": boot.resamples,
        "seed": boot.seed,
        "level": boot.level,
        "unit": "image",
        "strata": "dataset",
        "method": "percentile",
    })
}

/// How to score; shared by `score` and `export` so both compute the same table.
#[derive(Args, Clone, Copy)]
pub struct ScoringArgs {
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
}

impl ScoreArgs {
    fn price(&self) -> Option<Price> {
        Some(Price {
            prompt_per_million: self.price_prompt?,
            completion_per_million: self.price_completion?,
        })
    }
}

impl ScoringArgs {
    pub fn options(self) -> ScoreOptions {
        ScoreOptions {
            mmad_compat: self.mmad_compat,
            overkill_miss: self.overkill_miss,
            detection_metrics: self.detection_metrics,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScoreFormat {
    /// An aligned table for people.
    Table,
    /// MMAD's `_accuracy.csv` layout.
    Csv,
    /// {"columns", "index", "table", "invalid", "skipped", "ci", "bootstrap"}; run
    /// folders add "coverage" and "errors"; several inputs give a list of these with
    /// "path".
    Json,
}

/// Failed questions listed before the rest are only counted.
const ERRORS_LISTED: usize = 20;

enum Input {
    Answers(LoadedAnswers),
    Run(Box<RunFolder>),
}

impl Input {
    fn load(path: &Path) -> anyhow::Result<Input> {
        // A run's own journal is read with its manifest, so coverage and the
        // list of errors come out as for the folder.
        let run_dir = path.parent().filter(|dir| {
            path.file_name() == Some(JOURNAL_FILE.as_ref()) && dir.join(MANIFEST_FILE).is_file()
        });
        if let Some(dir) = path.is_dir().then_some(path).or(run_dir) {
            let run = RunFolder::open(dir)?;
            Ok(Input::Run(Box::new(run)))
        } else {
            Ok(Input::Answers(score::load_answers(path)?))
        }
    }
}

pub fn run(args: &ScoreArgs) -> anyhow::Result<ExitCode> {
    // Read everything first: a bad input stops the command before any table is out.
    let inputs = args
        .files
        .iter()
        .map(|p| Input::load(p).map(|input| (p, input)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = args.scoring.options();
    let several = inputs.len() > 1;

    let mut json_list = Vec::new();
    for (n, (path, input)) in inputs.iter().enumerate() {
        let answers: std::borrow::Cow<[AnswerRecord]> = match input {
            Input::Answers(loaded) => (&loaded.records[..]).into(),
            Input::Run(run) => run.answers().into(),
        };
        let table = score::score(&answers, options);
        let wants_intervals = args.format == ScoreFormat::Json || args.show_intervals;
        let intervals = args
            .intervals
            .options()
            .filter(|_| wants_intervals)
            .map(|boot| interval::cell_intervals(&answers, &table, options, boot));
        match args.format {
            ScoreFormat::Json => {
                let mut v = table.to_json();
                if let Some(ci) = &intervals {
                    v["ci"] = ci.to_json();
                    v["bootstrap"] = bootstrap_json(&ci.options);
                }
                if let Input::Run(run) = input {
                    add_run_json(&mut v, run)?;
                    if args.slices {
                        v["slices"] = slices_json(&category_slices(run.records()));
                    }
                    if args.anomaly {
                        v["anomaly_map"] = match run_map_metrics(run)? {
                            Some(m) => map_json(&m),
                            None => Value::Null,
                        };
                    }
                    if args.calibration {
                        let cal = Calibration::of(run.records(), args.confidence_source.into());
                        if cal.is_none() {
                            eprintln!("{}", calibration::NO_CONFIDENCE);
                        }
                        v["calibration"] = calibration_json(cal.as_ref(), args.abstain_below)?;
                    }
                    if args.usage {
                        v["latency"] = serde_json::to_value(run_latency(run.records()))?;
                        let tokens = run_tokens(run.records());
                        v["tokens"] = serde_json::to_value(&tokens)?;
                        if let Some(price) = args.price() {
                            v["cost"] = serde_json::json!({
                                "total": tokens.all.cost(price),
                                "price": price,
                                "per_subtask": tokens.per_subtask.iter()
                                    .map(|(k, t)| (k.clone(), serde_json::json!(t.cost(price))))
                                    .collect::<serde_json::Map<_, _>>(),
                            });
                        } else if let Some(cost) = manifest_cost(run) {
                            v["cost"] = serde_json::json!({
                                "total": cost.total,
                                "prices": run.manifest.endpoints.iter()
                                    .map(|e| (e.name.clone(), serde_json::json!(e.price)))
                                    .collect::<serde_json::Map<_, _>>(),
                                "per_subtask": cost.per_subtask,
                            });
                        }
                    }
                }
                if several {
                    v["path"] = Value::String(path.display().to_string());
                    json_list.push(v);
                } else {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
            }
            ScoreFormat::Csv | ScoreFormat::Table => {
                if several {
                    if n > 0 {
                        println!();
                    }
                    println!("==> {} <==", path.display());
                }
                if args.format == ScoreFormat::Csv {
                    print!("{}", table.to_csv());
                } else {
                    print!("{}", table.to_text());
                }
                if let Some(ci) = intervals.as_ref().filter(|_| args.show_intervals) {
                    print_intervals(ci, args.format == ScoreFormat::Csv);
                }
                if args.usage {
                    let text = match input {
                        Input::Run(run) => {
                            let mut text = latency_text(&run_latency(run.records()))
                                + &tokens_text(&run_tokens(run.records()), args.price());
                            if let Some(cost) =
                                manifest_cost(run).filter(|_| args.price().is_none())
                            {
                                text += &format!(
                                    "cost at the prices the run recorded: {:.4}\n",
                                    cost.total
                                );
                            }
                            text
                        }
                        Input::Answers(_) => {
                            "\nlatency needs a run folder (an answers list keeps no timings)\n"
                                .into()
                        }
                    };
                    print_extra(&text, args.format == ScoreFormat::Csv);
                }
                if args.calibration {
                    let text = match input {
                        Input::Run(run) => calibration_text(
                            Calibration::of(run.records(), args.confidence_source.into()).as_ref(),
                            args.abstain_below,
                        ),
                        Input::Answers(_) => {
                            "\ncalibration needs a run folder (an answers list keeps no confidence)\n"
                                .into()
                        }
                    };
                    print_extra(&text, args.format == ScoreFormat::Csv);
                }
                if args.slices {
                    let text = match input {
                        Input::Run(run) => slices_text(&category_slices(run.records())),
                        Input::Answers(_) => {
                            "\nslices need a run folder (an answers list keeps no option texts)\n"
                                .into()
                        }
                    };
                    print_extra(&text, args.format == ScoreFormat::Csv);
                }
                if args.anomaly {
                    let text = match input {
                        Input::Run(run) => match run_map_metrics(run)? {
                            Some(m) => map_text(&m),
                            None => "\nno question of this run has an anomaly map\n".into(),
                        },
                        Input::Answers(_) => {
                            "\nanomaly-map figures need a run folder (an answers list keeps no traces)\n"
                                .into()
                        }
                    };
                    print_extra(&text, args.format == ScoreFormat::Csv);
                }
            }
        }
        notes(args, path, input, &table);
    }
    if args.format == ScoreFormat::Json && several {
        println!("{}", serde_json::to_string_pretty(&json_list)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn run_map_metrics(run: &RunFolder) -> anyhow::Result<Option<MapMetrics>> {
    let Some(mut m) = map_metrics(run.records()) else {
        return Ok(None);
    };
    add_pixel_metrics(&mut m, &run.manifest, &CancelToken::new())
        .with_context(|| format!("the anomaly-map figures of {}", run.dir.display()))?;
    Ok(Some(m))
}

fn map_row_json(c: &CategoryMap) -> Value {
    serde_json::json!({
        "images": c.images,
        "image_auroc": c.image_auroc,
        "pixel_auroc": c.pixel_auroc,
        "aupro": c.aupro,
        "map_overkill": c.map_overkill(),
        "map_miss": c.map_miss(),
        "model_overkill": c.model_overkill(),
        "model_miss": c.model_miss(),
        "compared": c.compared,
        "disagree": c.disagree,
        "disagreement": c.disagreement(),
    })
}

fn map_json(m: &MapMetrics) -> Value {
    serde_json::json!({
        "categories": m.categories.iter()
            .map(|(k, c)| (k.clone(), map_row_json(c)))
            .collect::<serde_json::Map<_, _>>(),
        "mean": m.mean,
        "total": map_row_json(&m.total),
    })
}

fn map_text(m: &MapMetrics) -> String {
    let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
    let p = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1}"));
    let width = m
        .categories
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max(8);
    let mut out = format!(
        "\nAnomaly map (Overkill, Miss and disagreement in %, on Anomaly Detection)\n{:<width$} {:>6} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
        "category",
        "images",
        "img AUC",
        "pix AUC",
        "AUPRO",
        "map OK",
        "map Miss",
        "model OK",
        "model Mis",
        "disagree"
    );
    let mut row = |name: &str, c: &CategoryMap, aucs: [Option<f64>; 3]| {
        out.push_str(&format!(
            "{name:<width$} {:>6} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
            c.images,
            f(aucs[0]),
            f(aucs[1]),
            f(aucs[2]),
            p(c.map_overkill()),
            p(c.map_miss()),
            p(c.model_overkill()),
            p(c.model_miss()),
            p(c.disagreement()),
        ));
    };
    for (name, c) in &m.categories {
        row(name, c, [c.image_auroc, c.pixel_auroc, c.aupro]);
    }
    row(
        "mean",
        &m.total,
        [m.mean.image_auroc, m.mean.pixel_auroc, m.mean.aupro],
    );
    out
}

/// What the run's tokens cost at the prices its manifest records; `None` when it
/// records none (a run made before prices, or on an endpoint without one).
fn manifest_cost(run: &RunFolder) -> Option<RunCost> {
    let m = &run.manifest;
    if m.endpoints.iter().all(|e| e.price.is_none()) {
        return None;
    }
    run_cost(run.records(), |e| manifest_price(m, e))
}

fn tokens_text(t: &RunTokens, price: Option<Price>) -> String {
    if t.all.questions == 0 {
        return "\ntokens: the servers reported none for this run\n".into();
    }
    let width = t
        .per_subtask
        .keys()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0)
        .max(9);
    let cost = |x: &Tokens| price.map_or(String::new(), |p| format!("  {:>10.4}", x.cost(p)));
    let line = |name: &str, x: &Tokens| {
        format!(
            "{name:width$}  {:>9}  {:>12}  {:>12}  {:>10.0}{}\n",
            x.questions,
            x.prompt,
            x.completion,
            x.total() as f64 / x.questions.max(1) as f64,
            cost(x)
        )
    };
    let mut out = format!(
        "\n{:width$}  {:>9}  {:>12}  {:>12}  {:>10}{}\n",
        "Tokens",
        "questions",
        "prompt",
        "completion",
        "per quest.",
        if price.is_some() { "        cost" } else { "" }
    );
    out += &line("All", &t.all);
    for (subtask, x) in &t.per_subtask {
        out += &line(subtask, x);
    }
    out
}

/// `null` for a run without confidence (the message goes to stderr), so a reader
/// never mistakes an empty calibration for a perfect one.
fn calibration_json(
    cal: Option<&Calibration>,
    abstain_below: Option<f64>,
) -> anyhow::Result<Value> {
    let Some(cal) = cal else {
        return Ok(Value::Null);
    };
    let mut v = serde_json::to_value(cal).context("calibration as JSON")?;
    if let Some(t) = abstain_below {
        v["abstain_below"] = serde_json::json!({
            "threshold": t,
            "all": cal.all.abstain_at(t),
            "per_subtask": cal.per_subtask.iter()
                .map(|(k, r)| Ok((k.clone(), serde_json::to_value(r.abstain_at(t))?)))
                .collect::<serde_json::Result<serde_json::Map<_, _>>>()?,
        });
    }
    Ok(v)
}

fn calibration_text(cal: Option<&Calibration>, abstain_below: Option<f64>) -> String {
    let Some(cal) = cal else {
        return format!("\ncalibration: {}\n", calibration::NO_CONFIDENCE);
    };
    let pct = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{:.1}", v * 100.0));
    let width = cal
        .per_subtask
        .keys()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0)
        .max(11);
    let mut out = format!(
        "\n{:width$}  {:>7}  {:>10}  {:>11}  {:>6}\n",
        "Calibration", "answers", "accuracy %", "mean conf %", "ECE %"
    );
    let line = |name: &str, r: &Reliability| {
        format!(
            "{name:width$}  {:>7}  {:>10}  {:>11}  {:>6}\n",
            r.answers,
            pct(Some(r.accuracy)),
            pct(Some(r.mean_confidence)),
            pct(Some(r.ece))
        )
    };
    out += &line("All", &cal.all);
    for (subtask, r) in &cal.per_subtask {
        out += &line(subtask, r);
    }
    out += &format!(
        "confidence: {}{}\n",
        cal.source.name(),
        if cal.without_confidence > 0 {
            format!(
                "; {} answer(s) without one left out",
                cal.without_confidence
            )
        } else {
            String::new()
        }
    );
    out += "\nReliability (all)  answers  mean conf %  accuracy %\n";
    for b in &cal.all.bins {
        out += &format!(
            "{:>17}  {:>7}  {:>11}  {:>10}\n",
            format!("{:.1}-{:.1}", b.low, b.high),
            b.count,
            pct(b.mean_confidence),
            pct(b.accuracy)
        );
    }
    out += "\nAbstain below  coverage %  accuracy %  for a person\n";
    for p in cal.all.abstain.iter().step_by(2) {
        out += &format!(
            "{:>13.2}  {:>10}  {:>10}  {:>12}\n",
            p.threshold,
            pct(Some(p.coverage)),
            pct(p.accuracy),
            p.for_person
        );
    }
    if let Some(t) = abstain_below {
        out += &format!(
            "\nAbstaining below {t}:\n{:width$}  {:>4}  {:>12}  {:>10}  {:>10}\n",
            "", "kept", "for a person", "coverage %", "accuracy %"
        );
        let at = |name: &str, r: &Reliability| {
            let p = r.abstain_at(t);
            format!(
                "{name:width$}  {:>4}  {:>12}  {:>10}  {:>10}\n",
                p.kept,
                p.for_person,
                pct(Some(p.coverage)),
                pct(p.accuracy)
            )
        };
        out += &at("All", &cal.all);
        for (subtask, r) in &cal.per_subtask {
            out += &at(subtask, r);
        }
    }
    out
}

fn latency_text(l: &RunLatency) -> String {
    let Some(all) = l.all else {
        return "\nlatency: no answered question\n".into();
    };
    let width = l
        .per_subtask
        .keys()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0)
        .max(9);
    let line = |name: &str, x: &Latency| {
        format!(
            "{name:width$}  {:>9}  {:>8.0}  {:>8.0}  {:>8}\n",
            x.questions, x.p50_ms, x.p95_ms, x.max_ms
        )
    };
    let mut out = format!(
        "\n{:width$}  {:>9}  {:>8}  {:>8}  {:>8}\n",
        "Latency", "questions", "p50 ms", "p95 ms", "max ms"
    );
    out += &line("All", &all);
    for (subtask, x) in &l.per_subtask {
        out += &line(subtask, x);
    }
    out
}

fn slices_json(slices: &IndexMap<String, CategorySlice>) -> Value {
    let per: serde_json::Map<String, Value> = slices
        .iter()
        .map(|(category, s)| {
            (
                category.clone(),
                serde_json::json!({
                    "overkill": s.overkill(),
                    "miss": s.miss(),
                    "normal": s.normal,
                    "abnormal": s.abnormal,
                    "confusion": s.confusion,
                }),
            )
        })
        .collect();
    Value::Object(per)
}

fn slices_text(slices: &IndexMap<String, CategorySlice>) -> String {
    let pct = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let width = slices
        .keys()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut out = format!(
        "\nPer category{:pad$}  normal  Overkill %  defective  Miss %  DC right\n",
        "",
        pad = width.saturating_sub(12)
    );
    for (category, s) in slices {
        let dc = s.classification();
        out += &format!(
            "{category:width$}  {:>6}  {:>10}  {:>9}  {:>6}  {:>8}\n",
            s.normal.total,
            pct(s.overkill()),
            s.abnormal.total,
            pct(s.miss()),
            format!("{}/{}", dc.correct, dc.total),
        );
    }
    for (category, s) in slices {
        let dc = s.classification();
        if dc.total == dc.correct {
            continue;
        }
        out += &format!("\nDefect Classification, {category} (true -> chosen: questions)\n");
        for (truth, row) in &s.confusion {
            let picks: Vec<String> = row
                .iter()
                .map(|(chosen, n)| {
                    let mark = if chosen == truth { " (right)" } else { "" };
                    format!("{chosen}{mark}: {n}")
                })
                .collect();
            out += &format!("  {truth} -> {}\n", picks.join(", "));
        }
    }
    out
}

/// The intervals as a second table, `lo-hi` with one decimal.
fn print_intervals(ci: &CellIntervals, to_stderr: bool) {
    print_extra(&interval_text(ci), to_stderr);
}

/// Tables printed after the score table: to stdout with the text table, to stderr
/// with CSV, so the CSV on stdout stays MMAD's layout.
fn print_extra(text: &str, to_stderr: bool) {
    if to_stderr {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
}

fn interval_text(ci: &CellIntervals) -> String {
    let cell = |b: Option<(f64, f64)>| match b {
        Some((lo, hi)) => format!("{lo:.1}-{hi:.1}"),
        None => "-".to_owned(),
    };
    let name_width = ci
        .index
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0);
    let cells: Vec<Vec<String>> = ci
        .bounds
        .iter()
        .map(|row| row.iter().map(|b| cell(*b)).collect())
        .collect();
    let widths: Vec<usize> = ci
        .columns
        .iter()
        .enumerate()
        .map(|(c, name)| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .chain([name.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!(
        "\n95% intervals (bootstrap over images within each dataset, {} resamples, seed {}):\n",
        ci.options.resamples, ci.options.seed
    );
    out += &format!("{:name_width$}", "");
    for (name, w) in ci.columns.iter().zip(&widths) {
        out += &format!("  {name:>w$}");
    }
    out.push('\n');
    for (name, row) in ci.index.iter().zip(&cells) {
        out += &format!("{name:name_width$}");
        for (v, w) in row.iter().zip(&widths) {
            out += &format!("  {v:>w$}");
        }
        out.push('\n');
    }
    out
}

fn add_run_json(v: &mut Value, run: &RunFolder) -> anyhow::Result<()> {
    let errors: Vec<Value> = run
        .error_records()
        .map(|r| {
            serde_json::json!({
                "index": r.index,
                "image": r.image,
                "question_type": r.question_type,
                "reason": r.error.as_deref().unwrap_or("unknown error"),
            })
        })
        .collect();
    v["coverage"] = serde_json::to_value(run.coverage()).context("coverage as JSON")?;
    v["errors"] = Value::Array(errors);
    v["torn_last_line"] = Value::Bool(run.torn_last_line);
    Ok(())
}

/// What a person should know besides the table: coverage and failures of a run,
/// dropped answers. Printed to stdout with the text table, to stderr otherwise so
/// that CSV and JSON stay machine-readable.
fn notes(args: &ScoreArgs, path: &Path, input: &Input, table: &ScoreTable) {
    let to_stdout = args.format == ScoreFormat::Table;
    let say = |line: String| {
        if to_stdout {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    };
    let prefix = if args.files.len() > 1 {
        format!("{}: ", path.display())
    } else {
        String::new()
    };
    if table.invalid > 0 {
        eprintln!(
            "{prefix}note: {} answer(s) were not a single letter A-E and were dropped{}",
            table.invalid,
            if args.scoring.mmad_compat {
                format!(
                    "; {} following answer(s) were skipped as MMAD's summary.py does",
                    table.skipped
                )
            } else {
                String::new()
            }
        );
    }
    match input {
        Input::Answers(loaded) => {
            if !loaded.errors.is_empty() {
                eprintln!(
                    "{prefix}note: {} question(s) ended in an error and are not scored:",
                    loaded.errors.len()
                );
                for e in loaded.errors.iter().take(10) {
                    eprintln!("  line {}: {} ({})", e.line, e.image, e.reason);
                }
            }
            if loaded.torn_last_line {
                // Files written by hand or by other tools often lack the final newline;
                // say how to get that line counted.
                eprintln!(
                    "{prefix}note: the journal's last line has no newline, so it is taken as torn (an interrupted write) and ignored, as a run folder reads it; if that line is complete, end the file with a newline"
                );
            }
        }
        Input::Run(run) => {
            if args.format == ScoreFormat::Json {
                // Coverage and errors are in the JSON itself.
                if run.torn_last_line {
                    eprintln!(
                        "{prefix}note: the journal's last line was torn (an interrupted write) and was ignored"
                    );
                }
                return;
            }
            let Coverage {
                question_count,
                answered,
                errors,
                missing,
            } = run.coverage();
            say(format!(
                "{prefix}coverage: {answered} answered, {errors} error(s), {missing} missing of {question_count} question(s)"
            ));
            if let Some(mixed) = run.manifest.mixed_settings_note() {
                say(format!("{prefix}warning: {mixed}"));
            }
            if let Some(missing) = run.manifest.missing_inputs_note() {
                say(format!("{prefix}warning: {missing}"));
            }
            if run.torn_last_line {
                say(format!(
                    "{prefix}note: the journal's last line was torn (an interrupted write) and was ignored"
                ));
            }
            if run.superseded > 0 {
                say(format!(
                    "{prefix}note: {} earlier record(s) were replaced by a later one for the same question",
                    run.superseded
                ));
            }
            if errors > 0 {
                say(format!("{prefix}errors (not scored):"));
                for r in run.error_records().take(ERRORS_LISTED) {
                    say(format!(
                        "  #{} {}: {}",
                        r.index,
                        r.image,
                        r.error.as_deref().unwrap_or("unknown error")
                    ));
                }
                if errors > ERRORS_LISTED {
                    say(format!("  ... and {} more", errors - ERRORS_LISTED));
                }
            }
        }
    }
}
