//! What a run leaves for others: MMAD's answers JSON (so MMAD's own summary script
//! scores it), MMAD's `_accuracy.csv`, and one self-contained HTML report with the
//! table, the failures and the traces of every wrong answer.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::echo::trace::ExpertStatus;
use crate::runs::journal::JournalRecord;
use crate::runs::run_folder::RunFolder;
use crate::score::interval::{BootstrapOptions, cell_intervals};
use crate::score::{AVERAGE, OBJECT_ANALYSIS, ScoreOptions, ScoreTable};
use crate::util::pyjson::{self, JsonStyle};

/// File names `export` uses inside `RUN_DIR/exports/` when none are given.
pub const ANSWERS_FILE: &str = "answers.json";
pub const REPORT_FILE: &str = "report.html";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Which files to write; `None` skips that file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportTargets {
    pub mmad_answers: Option<PathBuf>,
    pub accuracy_csv: Option<PathBuf>,
    pub html_report: Option<PathBuf>,
}

impl ExportTargets {
    /// All three files in the run's `exports/` folder, the CSV named after the
    /// answers file as MMAD's summary names it.
    pub fn all_in(dir: &Path) -> Self {
        ExportTargets {
            mmad_answers: Some(dir.join(ANSWERS_FILE)),
            accuracy_csv: Some(dir.join(accuracy_csv_name(ANSWERS_FILE))),
            html_report: Some(dir.join(REPORT_FILE)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.mmad_answers.is_none() && self.accuracy_csv.is_none() && self.html_report.is_none()
    }
}

/// The name MMAD's summary gives the table of an answers file: `.json` replaced by
/// `_accuracy.csv` (appended when the name has no `.json`).
pub fn accuracy_csv_name(answers_file_name: &str) -> String {
    match answers_file_name.strip_suffix(".json") {
        Some(stem) => format!("{stem}_accuracy.csv"),
        None => format!("{answers_file_name}_accuracy.csv"),
    }
}

/// Limits that keep the report openable for a full MMAD run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportLimits {
    /// Wrong answers shown with their traces; the rest are counted.
    pub wrong_traces: usize,
    /// Failed questions listed; the rest are counted.
    pub errors: usize,
}

impl Default for ReportLimits {
    fn default() -> Self {
        ReportLimits {
            wrong_traces: 500,
            errors: 1000,
        }
    }
}

/// The run's answered questions as MMAD's answers list, in dataset order.
pub fn mmad_answers(run: &RunFolder) -> Value {
    Value::Array(run.ok_records().map(mmad_answer).collect())
}

fn mmad_answer(r: &JournalRecord) -> Value {
    serde_json::json!({
        "image": r.image,
        "question": {
            "type": r.question.kind,
            "text": r.question.text,
            "options": r.question.options,
        },
        "question_type": r.question_type,
        "correct_answer": r.correct_answer,
        "gpt_answer": r.gpt_answer,
    })
}

/// The answers list laid out as MMAD writes it (`json.dump(..., indent=4)`).
pub fn mmad_answers_json(run: &RunFolder) -> String {
    pyjson::to_string(&mmad_answers(run), JsonStyle::default())
}

/// Writes the requested files, each atomically; returns the paths written.
pub fn write_exports(
    run: &RunFolder,
    targets: &ExportTargets,
    options: ScoreOptions,
    limits: ReportLimits,
) -> Result<Vec<PathBuf>, ExportError> {
    let table = run.score(options);
    let mut written = Vec::new();
    let exports = run.exports_dir();
    let mut put = |path: &Path, bytes: &[u8]| {
        let write_err = |source| ExportError::Write {
            path: path.to_owned(),
            source,
        };
        // A file the user named is theirs to have linked anywhere; inside the run's
        // own exports folder nothing of ours is a link, so a link there (or the
        // folder itself as one) was planted and is refused, not written through.
        if path.starts_with(&exports) {
            crate::util::fsx::refuse_non_regular_dir(&exports).map_err(write_err)?;
            crate::util::fsx::atomic_write_no_follow(path, bytes).map_err(write_err)?;
        } else {
            crate::util::fsx::atomic_write(path, bytes).map_err(write_err)?;
        }
        written.push(path.to_owned());
        Ok::<_, ExportError>(())
    };
    if let Some(path) = &targets.mmad_answers {
        put(path, mmad_answers_json(run).as_bytes())?;
    }
    if let Some(path) = &targets.accuracy_csv {
        put(path, table.to_csv().as_bytes())?;
    }
    if let Some(path) = &targets.html_report {
        put(path, html_report(run, &table, options, limits).as_bytes())?;
    }
    Ok(written)
}

// ---------------------------------------------------------------------------
// HTML report

pub use crate::util::html::escape as html_escape;

/// Columns whose higher value is worse (coloured on the inverted scale).
const LOWER_IS_BETTER: [&str; 2] = ["Overkill", "Miss"];
/// Columns the scorer adds after the subtasks; not subtasks themselves.
const ADDED_COLUMNS: [&str; 6] = [AVERAGE, "Recall", "Precision", "F1", "Overkill", "Miss"];

/// Background for a percentage on a fixed 0-100 scale (red to green), so the same
/// colour means the same accuracy in every report.
fn cell_colour(value: f64, lower_is_better: bool) -> String {
    if value.is_nan() {
        return "#eeeeee".into();
    }
    let v = value.clamp(0.0, 100.0);
    let goodness = if lower_is_better { 100.0 - v } else { v };
    format!("hsl({:.0}, 70%, 82%)", goodness * 1.2)
}

fn fmt_cell(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.2}")
    }
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;line-height:1.4;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
table.score td.num{text-align:right;font-variant-numeric:tabular-nums;min-width:60px}
table.score tr.avg td,table.score tr.avg th{font-weight:bold;border-top:2px solid #888}
table.score td.avgcol{font-weight:bold}
th{background:#f4f4f4}
.kv th{width:220px}
pre{background:#f7f7f7;border:1px solid #e2e2e2;padding:8px;overflow-x:auto;white-space:pre-wrap;word-break:break-word;max-height:480px;overflow-y:auto;font-size:12px}
details{border:1px solid #ddd;border-radius:4px;margin:6px 0;padding:4px 8px}
details>summary{cursor:pointer}
details.trace{margin-left:16px;background:#fcfcfc}
.wrong{color:#b00020;font-weight:bold}.right{color:#1b7f3b;font-weight:bold}
.note{color:#8a5a00}
.opts li.correct{color:#1b7f3b}.opts li.given{color:#b00020}
";

/// The whole report as one HTML document: inline CSS and SVG, no scripts, nothing
/// fetched. Every string that comes from the run is escaped.
pub fn html_report(
    run: &RunFolder,
    table: &ScoreTable,
    options: ScoreOptions,
    limits: ReportLimits,
) -> String {
    let m = &run.manifest;
    let e = html_escape;
    let models = run.models().join(", ");
    let dataset_name = m
        .dataset
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| m.dataset.path.display().to_string());
    let heading = if m.note.is_empty() {
        run.name()
    } else {
        m.note.clone()
    };

    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} · {} · {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        e(&heading),
        e(&models),
        e(&dataset_name)
    );
    let _ = writeln!(h, "<h1>{}</h1>", e(&heading));
    let _ = writeln!(
        h,
        "<p class=\"sub\">Model {} on {} · run folder <code>{}</code></p>",
        e(&models),
        e(&dataset_name),
        e(&run.name())
    );
    // Plain runs say nothing here, so their reports stay as they were.
    if let Some(protocol) = &m.protocol {
        let _ = writeln!(
            h,
            "<p class=\"sub\">Protocol: {}</p>",
            e(&protocol.describe())
        );
    }

    push_coverage(&mut h, run, table, options);
    push_score_table(&mut h, table);
    push_intervals(&mut h, run, table, options);
    let object_columns = table
        .columns
        .iter()
        .any(|c| c == "Object Classification" || c == OBJECT_ANALYSIS);
    if object_columns && m.pipeline.preset == "echo" && m.pipeline.experts_file.is_none() {
        h.push_str("<p class=\"note\">Object Classification and Object Analysis are outside Echo's scope: the echo preset answers them with a plain MMAD-style prompt.</p>\n");
    }
    push_bars(&mut h, table);
    super::report_sections::push_calibration(&mut h, run);
    super::report_sections::push_usage(&mut h, run);
    super::report_sections::push_slices(&mut h, run);
    push_settings(&mut h, run);
    push_errors(&mut h, run, limits);
    push_wrong_answers(&mut h, run, limits);

    h.push_str("</body>\n</html>\n");
    h
}

fn push_coverage(h: &mut String, run: &RunFolder, table: &ScoreTable, options: ScoreOptions) {
    let c = run.coverage();
    let _ = writeln!(h, "<h2>Coverage</h2>\n<table class=\"kv\">");
    let rows = [
        ("Questions in the run", c.question_count.to_string()),
        ("Answered", c.answered.to_string()),
        ("Errors (no answer)", c.errors.to_string()),
        ("Missing (no record)", c.missing.to_string()),
        (
            "Invalid answers (not a letter A-E)",
            table.invalid.to_string(),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(h, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    if options.mmad_compat {
        let _ = writeln!(
            h,
            "<tr><th>Skipped after an invalid answer</th><td>{} (MMAD summary.py's behaviour, reproduced)</td></tr>",
            table.skipped
        );
    }
    h.push_str("</table>\n");
    if run.torn_last_line {
        h.push_str("<p class=\"note\">The journal's last line was cut short by an interrupted write and is not counted.</p>\n");
    }
    if run.superseded > 0 {
        let _ = writeln!(
            h,
            "<p class=\"note\">{} earlier record(s) were replaced by a later record for the same question.</p>",
            run.superseded
        );
    }
}

fn push_score_table(h: &mut String, table: &ScoreTable) {
    h.push_str("<h2>MMAD accuracy (%)</h2>\n");
    if table.index.is_empty() {
        h.push_str("<p>No answered questions yet.</p>\n");
        return;
    }
    h.push_str("<table class=\"score\">\n<tr><th></th>");
    for c in &table.columns {
        let _ = write!(h, "<th>{}</th>", html_escape(c));
    }
    h.push_str("</tr>\n");
    let last = table.index.len() - 1;
    for (r, (name, row)) in table.index.iter().zip(&table.values).enumerate() {
        // The scorer appends the Average row last.
        let class = if r == last && name == AVERAGE {
            " class=\"avg\""
        } else {
            ""
        };
        let _ = write!(h, "<tr{class}><th>{}</th>", html_escape(name));
        for (column, &v) in table.columns.iter().zip(row) {
            let lower = LOWER_IS_BETTER.contains(&column.as_str());
            let avg = if column == AVERAGE { " avgcol" } else { "" };
            let _ = write!(
                h,
                "<td class=\"num{avg}\" style=\"background:{}\">{}</td>",
                cell_colour(v, lower),
                fmt_cell(v)
            );
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n<p class=\"sub\">Cells coloured on a fixed scale: red 0 to green 100 (Overkill and Miss reversed).</p>\n");
}

/// Each cell's 95% interval (bootstrap over images), so a reader sees how far a
/// number can be trusted before comparing it with another.
fn push_intervals(h: &mut String, run: &RunFolder, table: &ScoreTable, options: ScoreOptions) {
    if table.index.is_empty() {
        return;
    }
    let boot = BootstrapOptions::default();
    let ci = cell_intervals(&run.answers(), table, options, boot);
    h.push_str("<h3>95% intervals</h3>\n<table class=\"score\">\n<tr><th></th>");
    for c in &ci.columns {
        let _ = write!(h, "<th>{}</th>", html_escape(c));
    }
    h.push_str("</tr>\n");
    for (name, row) in ci.index.iter().zip(&ci.bounds) {
        let _ = write!(h, "<tr><th>{}</th>", html_escape(name));
        for b in row {
            match b {
                Some((lo, hi)) => {
                    let _ = write!(h, "<td class=\"num\">{lo:.1}&ndash;{hi:.1}</td>");
                }
                None => h.push_str("<td class=\"num\">-</td>"),
            }
        }
        h.push_str("</tr>\n");
    }
    let _ = writeln!(
        h,
        "</table>\n<p class=\"sub\">Percentile bootstrap: {} resamples of the images within each dataset (an image's questions together), seed {}. Two runs differ reliably only where <code>echo-workbench compare</code> says so.</p>",
        boot.resamples, boot.seed
    );
}

/// One group of horizontal bars per subtask, one bar per dataset and the average.
fn push_bars(h: &mut String, table: &ScoreTable) {
    let subtasks: Vec<(usize, &String)> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !ADDED_COLUMNS.contains(&c.as_str()))
        .collect();
    if subtasks.is_empty() || table.index.is_empty() {
        return;
    }
    const LABEL_W: f64 = 200.0;
    const BAR_W: f64 = 480.0;
    const BAR_H: f64 = 14.0;
    const GAP: f64 = 4.0;
    const HEAD_H: f64 = 22.0;
    let rows = table.index.len() as f64;
    let group_h = HEAD_H + rows * (BAR_H + GAP) + 8.0;
    let height = group_h * subtasks.len() as f64;
    let width = LABEL_W + BAR_W + 70.0;
    h.push_str("<h2>Per subtask</h2>\n");
    let _ = writeln!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\" role=\"img\">"
    );
    for (g, (c, name)) in subtasks.iter().enumerate() {
        let top = g as f64 * group_h;
        let _ = writeln!(
            h,
            "<text x=\"0\" y=\"{}\" font-weight=\"bold\" font-size=\"13\">{}</text>",
            top + 15.0,
            html_escape(name)
        );
        // The 0-100 frame, so bar lengths compare across groups.
        let frame_top = top + HEAD_H - 2.0;
        let frame_h = rows * (BAR_H + GAP);
        let _ = writeln!(
            h,
            "<rect x=\"{LABEL_W}\" y=\"{frame_top}\" width=\"{BAR_W}\" height=\"{frame_h}\" fill=\"#fafafa\" stroke=\"#ddd\"/>"
        );
        for (r, (row_name, row)) in table.index.iter().zip(&table.values).enumerate() {
            let v = row[*c];
            let y = top + HEAD_H + r as f64 * (BAR_H + GAP);
            let _ = writeln!(
                h,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                LABEL_W - 6.0,
                y + BAR_H - 3.0,
                html_escape(row_name)
            );
            let len = if v.is_nan() {
                0.0
            } else {
                v.clamp(0.0, 100.0) / 100.0 * BAR_W
            };
            let _ = writeln!(
                h,
                "<rect x=\"{LABEL_W}\" y=\"{y}\" width=\"{len:.1}\" height=\"{BAR_H}\" fill=\"{}\" stroke=\"#999\" stroke-width=\"0.5\"/>",
                cell_colour(v, false)
            );
            let _ = writeln!(
                h,
                "<text x=\"{}\" y=\"{}\">{}</text>",
                LABEL_W + len + 4.0,
                y + BAR_H - 3.0,
                fmt_cell(v)
            );
        }
    }
    h.push_str("</svg>\n");
}

fn push_settings(h: &mut String, run: &RunFolder) {
    let m = &run.manifest;
    let e = html_escape;
    h.push_str("<h2>Settings</h2>\n<table class=\"kv\">\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", e(k), e(&v));
    };
    row("Note", m.note.clone());
    if let Some(mixed) = m.mixed_settings_note() {
        row("Mixed settings", mixed);
    }
    if let Some(missing) = m.missing_inputs_note() {
        row("Missing inputs", missing);
    }
    row("Tool version", m.tool_version.clone());
    row("Started", m.started_at.clone());
    row(
        "Finished",
        m.finished_at
            .clone()
            .unwrap_or_else(|| "not finished".into()),
    );
    row("Dataset file", m.dataset.path.display().to_string());
    row("Dataset SHA-256", m.dataset.sha256.clone());
    row("Dataset root", m.dataset.root.display().to_string());
    let sel = &m.selection;
    let list = |v: &[String]| {
        if v.is_empty() {
            "all".to_owned()
        } else {
            v.join(", ")
        }
    };
    row(
        "Selection",
        format!(
            "datasets: {}; categories: {}; types: {}; limit: {}",
            list(&sel.datasets),
            list(&sel.categories),
            list(&sel.types),
            sel.limit.map_or("none".into(), |l| l.to_string())
        ),
    );
    row(
        "Shard",
        m.shard.map_or("whole run".into(), |s| {
            format!("--shard {s} (shards are numbered from 0)")
        }),
    );
    row("Questions", m.question_count.to_string());
    row("Reference source", m.template.clone());
    row(
        "Reference memory",
        m.memory.as_ref().map_or("none".into(), |mem| {
            format!(
                "{} ({} items, {})",
                mem.path.display(),
                mem.items,
                mem.embedder
            )
        }),
    );
    row(
        "Knowledge",
        m.knowledge.as_ref().map_or("none".into(), |k| {
            format!("{} (version {})", k.path.display(), k.version)
        }),
    );
    row(
        "Condensed knowledge",
        m.condensed.as_ref().map_or("none".into(), |k| {
            format!("{} (version {})", k.path.display(), k.version)
        }),
    );
    row("Prompt templates hash", m.prompt_templates_hash.clone());
    row(
        "Same endpoint per image",
        if m.image_affinity { "yes" } else { "no" }.into(),
    );
    row("Fingerprint", m.fingerprint());
    h.push_str("</table>\n");

    h.push_str("<h3>Endpoints</h3>\n<table>\n<tr><th>Name</th><th>URL</th><th>Model</th><th>Key from</th><th>Concurrency</th></tr>\n");
    for ep in &m.endpoints {
        let key = ep
            .api_key_env
            .as_deref()
            .map_or("no key".into(), |v| format!("${v}"));
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e(&ep.name),
            e(&crate::mllm::url_without_secrets(&ep.base_url)),
            e(&ep.model),
            e(&key),
            ep.concurrency
        );
    }
    h.push_str("</table>\n");
    let pipeline = serde_json::to_string_pretty(&m.pipeline).unwrap_or_default();
    let _ = writeln!(
        h,
        "<details><summary>Pipeline settings</summary><pre>{}</pre></details>",
        e(&pipeline)
    );
}

fn push_errors(h: &mut String, run: &RunFolder, limits: ReportLimits) {
    let errors: Vec<&JournalRecord> = run.error_records().collect();
    let _ = writeln!(h, "<h2>Errors ({})</h2>", errors.len());
    if errors.is_empty() {
        h.push_str("<p>None: every recorded question has an answer.</p>\n");
        return;
    }
    h.push_str("<table>\n<tr><th>Index</th><th>Image</th><th>Type</th><th>Attempts</th><th>Reason</th></tr>\n");
    for r in errors.iter().take(limits.errors) {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.index,
            html_escape(&r.image),
            html_escape(&r.question_type),
            r.attempts,
            html_escape(r.error.as_deref().unwrap_or("unknown error"))
        );
    }
    h.push_str("</table>\n");
    if errors.len() > limits.errors {
        let _ = writeln!(
            h,
            "<p class=\"note\">{} more not listed; all are in journal.jsonl.</p>",
            errors.len() - limits.errors
        );
    }
}

/// Whether an answered record counts as wrong by MMAD's rule (invalid included).
fn is_wrong(r: &JournalRecord) -> bool {
    let a = r.to_answer();
    !(a.is_valid() && a.is_correct())
}

fn push_wrong_answers(h: &mut String, run: &RunFolder, limits: ReportLimits) {
    let wrong: Vec<&JournalRecord> = run.ok_records().filter(|r| is_wrong(r)).collect();
    let e = html_escape;
    let _ = writeln!(h, "<h2>Wrong answers ({})</h2>", wrong.len());
    if wrong.is_empty() {
        h.push_str("<p>None.</p>\n");
        return;
    }
    for r in wrong.iter().take(limits.wrong_traces) {
        let given = r.gpt_answer.as_deref().unwrap_or("(none)");
        let _ = writeln!(
            h,
            "<details class=\"q\"><summary>#{} · {} · {} · correct <span class=\"right\">{}</span>, given <span class=\"wrong\">{}</span></summary>",
            r.index,
            e(&r.image),
            e(&r.question_type),
            e(&r.correct_answer),
            e(&shorten(given, 80))
        );
        let _ = writeln!(h, "<p><b>Question:</b> {}</p>", e(&r.question.text));
        h.push_str("<ul class=\"opts\">\n");
        for (letter, text) in &r.question.options {
            let mut classes = Vec::new();
            let mut marks = Vec::new();
            if *letter == r.correct_answer {
                classes.push("correct");
                marks.push("correct");
            }
            if r.gpt_answer.as_deref() == Some(letter.as_str()) {
                classes.push("given");
                marks.push("given");
            }
            let mark = if marks.is_empty() {
                String::new()
            } else {
                format!(" <b>({})</b>", marks.join(", "))
            };
            let _ = writeln!(
                h,
                "<li class=\"{}\">{}. {}{mark}</li>",
                classes.join(" "),
                e(letter),
                e(text)
            );
        }
        h.push_str("</ul>\n");
        let _ = writeln!(
            h,
            "<p><b>Correct:</b> {} · <b>Given:</b> {} · attempts {} · {} ms · endpoint {}</p>",
            e(&r.correct_answer),
            e(given),
            r.attempts,
            r.latency_ms,
            e(&r.endpoint)
        );
        let _ = writeln!(
            h,
            "<p><b>Raw reply:</b></p><pre>{}</pre>",
            e(r.raw.as_deref().unwrap_or("(not recorded)"))
        );
        for t in &r.traces {
            let status = match &t.status {
                ExpertStatus::Done => "done".to_owned(),
                ExpertStatus::Skipped { why } => format!("skipped: {why}"),
                ExpertStatus::Failed { error } => format!("failed: {error}"),
            };
            let _ = writeln!(
                h,
                "<details class=\"trace\"><summary>{} · {} · {} ms · {}</summary>",
                e(t.name.label()),
                e(&status),
                t.ms,
                e(&t.summary)
            );
            for (label, value) in [
                ("Input", t.input.to_value()),
                ("Output", t.output.to_value()),
            ] {
                if value.is_null() {
                    continue;
                }
                let pretty = serde_json::to_string_pretty(&without_inline_images(&value))
                    .unwrap_or_default();
                let _ = writeln!(h, "<p><b>{label}</b></p><pre>{}</pre>", e(&pretty));
            }
            h.push_str("</details>\n");
        }
        h.push_str("</details>\n");
    }
    if wrong.len() > limits.wrong_traces {
        let _ = writeln!(
            h,
            "<p class=\"note\">{} more wrong answers not shown; their traces are in journal.jsonl.</p>",
            wrong.len() - limits.wrong_traces
        );
    }
}

fn shorten(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max_chars).collect();
        out.push('…');
        out
    }
}

/// A trace may carry the request it sent; base64 images in it would make the report
/// megabytes per question and say nothing to a reader.
fn without_inline_images(value: &Value) -> Value {
    match value {
        Value::String(s) if s.starts_with("data:") && s.len() > 256 => {
            match s.split_once(";base64,") {
                Some((kind, data)) => Value::String(format!(
                    "{kind};base64,… ({} characters left out)",
                    data.len()
                )),
                None => value.clone(),
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(without_inline_images).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), without_inline_images(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::trace::{ExpertName, ExpertTrace};
    use crate::runs::test_support::{manifest, record};

    const GOOD: &str = "VisA/candle/test/good/0000.JPG";
    const BAD: &str = "VisA/candle/test/bad/000.JPG";
    const AD: &str = "Anomaly Detection";

    fn sample_run() -> RunFolder {
        let mut wrong = record(2, BAD, AD, "A", Some("B"));
        wrong.raw = Some("B <script>alert(1)</script>".into());
        wrong.traces = vec![ExpertTrace {
            name: ExpertName::DecisionMaker,
            status: ExpertStatus::Done,
            input: crate::echo::trace::TraceInput::Raw(serde_json::json!({
                "prompt": "Is there a defect? <b>",
                "image": format!("data:image/png;base64,{}", "A".repeat(5000)),
            })),
            output: crate::echo::trace::TraceOutput::Raw(serde_json::json!({"letter": "B"})),
            summary: "answered B & stopped".into(),
            ms: 12,
        }];
        let mut m = manifest(5);
        m.note = "ablation <no knowledge>".into();
        m.endpoints[0].base_url = "https://user:s3cret@api.example.test/v1?key=s3cret".into();
        RunFolder::from_parts(
            "runs/r1".into(),
            m,
            vec![
                record(0, GOOD, AD, "B", Some("B")),
                record(1, "DS-MVTec/bottle/image/good/000.png", AD, "B", Some("B")),
                wrong,
                record(3, BAD, "Defect Classification", "B", None),
            ],
        )
    }

    #[test]
    fn answers_list_is_mmad_shaped_in_dataset_order_and_layout() {
        let run = sample_run();
        let text = mmad_answers_json(&run);
        // MMAD's json.dump(indent=4): four-space indent, ASCII only, no final newline.
        assert!(text.starts_with("[\n    {\n        \"image\": \"VisA/candle/test/good/0000.JPG\",\n        \"question\": {\n            \"type\": \"text\","), "{text}");
        assert!(!text.ends_with('\n'));
        let v: Value = serde_json::from_str(&text).unwrap();
        let list = v.as_array().unwrap();
        // The error record is not an answer.
        assert_eq!(list.len(), 3);
        let keys: Vec<&str> = list[0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "image",
                "question",
                "question_type",
                "correct_answer",
                "gpt_answer"
            ]
        );
        assert_eq!(list[2]["gpt_answer"], "B");
        assert_eq!(list[2]["question"]["options"]["A"], "Yes.");
        // Scoring the export equals scoring the run.
        let loaded = crate::score::parse_answers(&text, Path::new("a.json"), None).unwrap();
        let opts = ScoreOptions::default();
        assert_eq!(
            crate::score::score(&loaded.records, opts).to_csv(),
            run.score(opts).to_csv()
        );
    }

    #[test]
    fn the_header_states_a_protocol_and_a_plain_run_says_nothing_of_one() {
        let mut run = sample_run();
        let opts = ScoreOptions::default();
        let plain = html_report(&run, &run.score(opts), opts, ReportLimits::default());
        assert!(!plain.contains("Protocol:"));
        run.manifest.protocol = crate::echo::protocol::Protocol {
            samples: 5,
            temperature: Some(0.7),
            seed: Some(3),
            ..Default::default()
        }
        .recorded();
        let html = html_report(&run, &run.score(opts), opts, ReportLimits::default());
        let line = html.lines().find(|l| l.contains("Protocol:")).unwrap();
        assert!(
            line.contains("5 samples, majority letter (ties: first seen)"),
            "{line}"
        );
        assert!(
            line.contains("temperature 0.7") && line.contains("seed 3"),
            "{line}"
        );
        assert!(
            html.find("Protocol:").unwrap() < html.find("<table").unwrap(),
            "stated in the header, before the tables"
        );
    }

    #[test]
    fn csv_name_follows_mmad() {
        assert_eq!(accuracy_csv_name("answers.json"), "answers_accuracy.csv");
        assert_eq!(
            accuracy_csv_name("answers_1_shot_qwen.json"),
            "answers_1_shot_qwen_accuracy.csv"
        );
        assert_eq!(accuracy_csv_name("run"), "run_accuracy.csv");
    }

    #[test]
    fn report_escapes_data_hides_secrets_and_shows_every_part() {
        let run = sample_run();
        let opts = ScoreOptions {
            overkill_miss: true,
            ..ScoreOptions::default()
        };
        let html = html_report(&run, &run.score(opts), opts, ReportLimits::default());
        assert!(!html.contains("<script>"), "a reply's markup must not run");
        assert!(html.contains("B &lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("ablation &lt;no knowledge&gt;"));
        assert!(html.contains("answered B &amp; stopped"));
        assert!(!html.contains("s3cret"), "credentials leaked");
        assert!(html.contains("https://api.example.test/v1"));
        assert!(!html.contains(&"A".repeat(1000)), "inline image kept");
        assert!(html.contains("5000 characters left out"));
        // Nothing external, nothing executable.
        for banned in ["<script", "<link", "src=\"http", "@import"] {
            assert!(!html.contains(banned), "{banned}");
        }
        // Table with both datasets and the Average row; one error; one wrong answer.
        assert!(
            html.contains("<th>DS-MVTec</th>")
                && html.contains("<tr class=\"avg\"><th>Average</th>")
        );
        assert!(html.contains("<h2>Errors (1)</h2>"));
        assert!(html.contains("HTTP 503 after 3 attempts"));
        assert!(html.contains("<h2>Wrong answers (1)</h2>"));
        assert_eq!(html.matches("<details class=\"q\">").count(), 1);
        assert_eq!(html.matches("<details class=\"trace\">").count(), 1);
        assert!(html.contains("<svg"));
        // Every cell's interval, computed as `score` computes it.
        let ci = cell_intervals(
            &run.answers(),
            &run.score(opts),
            opts,
            BootstrapOptions::default(),
        );
        assert!(html.contains("<h3>95% intervals</h3>"));
        let (lo, hi) = ci.get("Average", "Average").unwrap();
        assert!(html.contains(&format!("<td class=\"num\">{lo:.1}&ndash;{hi:.1}</td>")));
        assert!(html.contains("1000 resamples"));
        // Only anomaly subtasks here: no out-of-scope note.
        assert!(!html.contains("outside Echo's scope"));
        // Overkill and Miss are coloured on the reversed scale.
        assert_eq!(cell_colour(0.0, true), cell_colour(100.0, false));
        assert_eq!(cell_colour(100.0, false), "hsl(120, 70%, 82%)");
        assert_eq!(cell_colour(0.0, false), "hsl(0, 70%, 82%)");
    }

    #[test]
    fn report_caps_long_lists_and_says_how_many_are_left() {
        let records: Vec<_> = (0..7)
            .map(|i| {
                if i % 2 == 0 {
                    record(i, BAD, AD, "A", Some("B"))
                } else {
                    record(i, BAD, AD, "A", None)
                }
            })
            .collect();
        let run = RunFolder::from_parts("r".into(), manifest(7), records);
        let limits = ReportLimits {
            wrong_traces: 2,
            errors: 1,
        };
        let opts = ScoreOptions::default();
        let html = html_report(&run, &run.score(opts), opts, limits);
        assert_eq!(html.matches("<details class=\"q\">").count(), 2);
        assert!(html.contains("2 more wrong answers not shown"));
        assert!(html.contains("2 more not listed"));
    }

    #[test]
    fn write_exports_writes_only_what_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let run = sample_run();
        let targets = ExportTargets {
            accuracy_csv: Some(dir.path().join("t_accuracy.csv")),
            ..ExportTargets::default()
        };
        let written = write_exports(
            &run,
            &targets,
            ScoreOptions::default(),
            ReportLimits::default(),
        )
        .unwrap();
        assert_eq!(written, [dir.path().join("t_accuracy.csv")]);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("t_accuracy.csv")]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("t_accuracy.csv")).unwrap(),
            run.score(ScoreOptions::default()).to_csv()
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_runs_exports_folder_is_never_written_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let run_dir = tmp.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        let sample = sample_run();
        let run = RunFolder::from_parts(
            run_dir.clone(),
            sample.manifest.clone(),
            sample.records().to_vec(),
        );
        let mine = tmp.path().join("mine");
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::write(mine.join(ANSWERS_FILE), "my own answers").unwrap();
        let targets = ExportTargets::all_in(&run.exports_dir());

        // The exports folder planted as a link to a folder of the user's.
        std::os::unix::fs::symlink(&mine, run.exports_dir()).unwrap();
        let err = write_exports(
            &run,
            &targets,
            ScoreOptions::default(),
            ReportLimits::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_eq!(
            std::fs::read_to_string(mine.join(ANSWERS_FILE)).unwrap(),
            "my own answers"
        );
        assert_eq!(std::fs::read_dir(&mine).unwrap().count(), 1);

        // One export file planted as a link.
        std::fs::remove_file(run.exports_dir()).unwrap();
        std::fs::create_dir_all(run.exports_dir()).unwrap();
        std::os::unix::fs::symlink(
            mine.join(ANSWERS_FILE),
            run.exports_dir().join(ANSWERS_FILE),
        )
        .unwrap();
        let err = write_exports(
            &run,
            &targets,
            ScoreOptions::default(),
            ReportLimits::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_eq!(
            std::fs::read_to_string(mine.join(ANSWERS_FILE)).unwrap(),
            "my own answers"
        );

        // A file the user names elsewhere may be a link: its target is written.
        let linked = tmp.path().join("linked.json");
        std::os::unix::fs::symlink(mine.join(ANSWERS_FILE), &linked).unwrap();
        let named = ExportTargets {
            mmad_answers: Some(linked.clone()),
            ..ExportTargets::default()
        };
        write_exports(
            &run,
            &named,
            ScoreOptions::default(),
            ReportLimits::default(),
        )
        .unwrap();
        assert!(
            std::fs::read_to_string(mine.join(ANSWERS_FILE))
                .unwrap()
                .starts_with('[')
        );
        assert!(
            std::fs::symlink_metadata(&linked)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
