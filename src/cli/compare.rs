//! `echo-workbench compare RUN_A RUN_B`: is B better than A, by how much, and can the
//! difference be told from chance.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use echo_workbench::runs::compare::{self, Comparison, Flips};
use echo_workbench::runs::journal::JOURNAL_FILE;
use echo_workbench::runs::run_folder::RunFolder;
use indexmap::IndexMap;
use serde_json::{Value, json};

use crate::cli::score::{IntervalArgs, ScoringArgs, bootstrap_json};

#[derive(Args)]
pub struct CompareArgs {
    /// The baseline run (a run folder or its journal.jsonl).
    #[arg(value_name = "RUN_A")]
    a: PathBuf,
    /// The run compared with it.
    #[arg(value_name = "RUN_B")]
    b: PathBuf,
    #[command(flatten)]
    scoring: ScoringArgs,
    #[command(flatten)]
    intervals: IntervalArgs,
    /// Changed questions listed in the text output (JSON lists them all).
    #[arg(long, default_value_t = 20, value_name = "N")]
    changes: usize,
    #[arg(long, value_enum, default_value_t = CompareFormat::Table)]
    format: CompareFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CompareFormat {
    /// Tables for people.
    Table,
    /// {"a", "b", "columns", "index", "cells", "flips", "flips_by_column", "mcnemar",
    /// "common", "only_in_a", "only_in_b", "mismatched", "bootstrap", "changes"}.
    Json,
}

fn open_run(path: &Path) -> anyhow::Result<RunFolder> {
    let dir = if path.file_name() == Some(JOURNAL_FILE.as_ref()) {
        path.parent().unwrap_or(Path::new("."))
    } else {
        path
    };
    Ok(RunFolder::open(dir)?)
}

pub fn run(args: &CompareArgs) -> anyhow::Result<ExitCode> {
    let a = open_run(&args.a)?;
    let b = open_run(&args.b)?;
    let options = args.scoring.options();
    let comparison = compare::compare(a.records(), b.records(), options);
    let boot = args.intervals.options();
    let deltas = boot
        .map(|boot| compare::delta_intervals(a.records(), b.records(), options, boot))
        .unwrap_or_default();
    match args.format {
        CompareFormat::Json => {
            let mut v = to_json(&comparison, &deltas);
            v["a"] = Value::String(args.a.display().to_string());
            v["b"] = Value::String(args.b.display().to_string());
            if let Some(boot) = &boot {
                v["bootstrap"] = bootstrap_json(boot);
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        CompareFormat::Table => print!("{}", to_text(&comparison, &deltas, args)),
    }
    if !comparison.mismatched.is_empty() {
        eprintln!(
            "warning: {} question(s) hold different images or turns in the two runs (different dataset files?) and were left out",
            comparison.mismatched.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

type Deltas = IndexMap<(String, String), (f64, f64)>;

fn number(v: Option<f64>) -> Value {
    v.and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn delta(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

fn to_json(c: &Comparison, deltas: &Deltas) -> Value {
    let t = &c.table;
    let mut cells = serde_json::Map::new();
    for (r, row) in t.rows.iter().enumerate() {
        let mut per_column = serde_json::Map::new();
        for (col, column) in t.columns.iter().enumerate() {
            let (a, b) = (t.a[r][col], t.b[r][col]);
            let ci = deltas
                .get(&(row.clone(), column.clone()))
                .map_or(Value::Null, |(lo, hi)| json!([lo, hi]));
            per_column.insert(
                column.clone(),
                json!({"a": number(a), "b": number(b), "delta": number(delta(a, b)), "ci": ci}),
            );
        }
        cells.insert(row.clone(), Value::Object(per_column));
    }
    let per_column_p: serde_json::Map<String, Value> = c
        .flips_by_column
        .iter()
        .map(|(col, f)| (col.clone(), json!(f.mcnemar_p())))
        .collect();
    let changes: Vec<Value> = c
        .changes
        .iter()
        .map(|ch| {
            json!({
                "index": ch.index,
                "image": ch.image,
                "question_type": ch.question_type,
                "correct_answer": ch.correct_answer,
                "a": ch.a_answer,
                "b": ch.b_answer,
                "kind": ch.kind.label(),
            })
        })
        .collect();
    json!({
        "columns": t.columns,
        "index": t.rows,
        "cells": cells,
        "flips": c.flips,
        "flips_by_column": c.flips_by_column,
        "mcnemar": {"p": c.flips.mcnemar_p(), "per_column": per_column_p},
        "common": c.common,
        "only_in_a": c.only_in_a,
        "only_in_b": c.only_in_b,
        "mismatched": c.mismatched.len(),
        "changes": changes,
    })
}

fn flips_line(f: &Flips) -> String {
    format!(
        "{:>6} {:>6} {:>6} {:>6}  p = {}",
        f.right_to_wrong,
        f.wrong_to_right,
        f.both_right,
        f.both_wrong,
        p_text(f.mcnemar_p())
    )
}

/// Three significant figures, small values in scientific notation.
fn p_text(p: f64) -> String {
    if p >= 0.001 {
        format!("{p:.3}")
    } else {
        format!("{p:.2e}")
    }
}

fn to_text(c: &Comparison, deltas: &Deltas, args: &CompareArgs) -> String {
    let t = &c.table;
    let mut out = String::new();
    out += &format!(
        "B - A, points (A: {}, B: {}); [95% interval of the difference]\n",
        args.a.display(),
        args.b.display()
    );
    let cell = |r: usize, col: usize| -> String {
        let Some(d) = delta(t.a[r][col], t.b[r][col]) else {
            return "-".into();
        };
        match deltas.get(&(t.rows[r].clone(), t.columns[col].clone())) {
            Some((lo, hi)) => format!("{d:+.1} [{lo:+.1}, {hi:+.1}]"),
            None => format!("{d:+.1}"),
        }
    };
    let body: Vec<Vec<String>> = (0..t.rows.len())
        .map(|r| (0..t.columns.len()).map(|col| cell(r, col)).collect())
        .collect();
    let name_width = t.rows.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = t
        .columns
        .iter()
        .enumerate()
        .map(|(col, name)| {
            body.iter()
                .map(|r| r[col].chars().count())
                .chain([name.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    out += &format!("{:name_width$}", "");
    for (name, w) in t.columns.iter().zip(&widths) {
        out += &format!("  {name:>w$}");
    }
    out.push('\n');
    for (name, row) in t.rows.iter().zip(&body) {
        out += &format!("{name:name_width$}");
        for (v, w) in row.iter().zip(&widths) {
            out += &format!("  {v:>w$}");
        }
        out.push('\n');
    }
    out += &format!(
        "\nQuestions both runs answered with a letter: {} (also in A only: {}, in B only: {})\n",
        c.flips.total(),
        c.only_in_a,
        c.only_in_b
    );
    let col_width = c
        .flips_by_column
        .keys()
        .map(|k| k.chars().count())
        .chain(["All subtasks".len()])
        .max()
        .unwrap_or(0);
    out += &format!(
        "{:col_width$}  {:>6} {:>6} {:>6} {:>6}  McNemar (exact)\n",
        "", "R->W", "W->R", "R,R", "W,W"
    );
    out += &format!("{:col_width$}  {}\n", "All subtasks", flips_line(&c.flips));
    for (column, f) in &c.flips_by_column {
        out += &format!("{column:col_width$}  {}\n", flips_line(f));
    }
    if !c.changes.is_empty() {
        out += &format!(
            "\nChanged answers: {} ({} better, {} worse)\n",
            c.changes.len(),
            c.better,
            c.worse
        );
        for ch in c.changes.iter().take(args.changes) {
            out += &format!(
                "  #{} {} [{}] correct {}: {} -> {} ({})\n",
                ch.index,
                ch.image,
                ch.question_type,
                ch.correct_answer,
                ch.a_answer.as_deref().unwrap_or("error"),
                ch.b_answer.as_deref().unwrap_or("error"),
                ch.kind.label()
            );
        }
        if c.changes.len() > args.changes {
            out += &format!("  ... and {} more\n", c.changes.len() - args.changes);
        }
    }
    out
}
