//! Scoring of MMAD answer lists, reproducing MMAD's own accuracy table.
//!
//! MMAD publishes its results as the CSV written by `caculate_accuracy_mmad` in
//! `evaluation/examples/helper/summary.py`. Numbers from this tool are only comparable
//! with the paper if they are computed the same way, quirks included, so this module
//! reimplements that function's semantics (not its code):
//!
//! * rows are datasets (first path component of `image`) and columns are question types
//!   (`Object Structure` and `Object Details` merged into `Object Analysis`), both in
//!   order of first appearance, taken before any answer is dropped;
//! * an answer whose `correct_answer` or `gpt_answer` is not exactly one of `A`..`E` is
//!   dropped. summary.py deletes it from the list it is iterating over, which makes the
//!   loop step over the following answer as well; [`ScoreOptions::mmad_compat`] keeps that
//!   flaw so published numbers can be reproduced, the default does not;
//! * a cell is `correct / total * 100` (0 without questions), except Anomaly Detection,
//!   which is the mean of the accuracies on normal and on abnormal images;
//! * `Average` is the mean of the type columns; optional detection metrics and
//!   Overkill/Miss follow it; a final `Average` row is the mean of every column.
//!
//! The table is built with the same "set a cell, create the column or row if it is new"
//! steps pandas performs for summary.py, so even odd inputs (a dataset called `Average`,
//! a question type called `Miss`) come out as MMAD's code would write them.
//! `scripts/crosscheck_summary.py` runs MMAD's real function on the fixtures under
//! `tests/fixtures/score/`, and the tests here compare against its output cell by cell
//! and byte by byte.

use indexmap::{IndexMap, IndexSet};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::util::pyfloat::py_float_repr;

mod answers;
mod frame;
pub mod interval;
pub mod published;
pub mod stats;

pub use answers::{
    AnswerFormat, EntryLocation, FailedQuestion, LoadedAnswers, ScoreError, load_answers,
    parse_answers,
};
use frame::build_frame;

/// Question type whose cell is the balanced (normal/abnormal) accuracy.
pub const ANOMALY_DETECTION: &str = "Anomaly Detection";
/// Column that `Object Structure` and `Object Details` are reported under.
pub const OBJECT_ANALYSIS: &str = "Object Analysis";
/// Name of the mean column and of the mean row.
pub const AVERAGE: &str = "Average";
/// An image is normal when its path contains this (case-sensitive, so `GoodsAD` does not).
pub const NORMAL_FLAG: &str = "good";
/// The only answers MMAD counts.
pub const VALID_LETTERS: [&str; 5] = ["A", "B", "C", "D", "E"];

const RECALL: &str = "Recall";
const PRECISION: &str = "Precision";
const F1: &str = "F1";
const OVERKILL: &str = "Overkill";
const MISS: &str = "Miss";

/// One entry of an MMAD answers file, reduced to the fields scoring reads.
///
/// The two answer fields stay raw JSON because MMAD files contain whatever the model
/// produced (text, and occasionally `null` or numbers); anything but a letter string is
/// an invalid answer, not a load error.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct AnswerRecord {
    /// Image key, e.g. `DS-MVTec/bottle/image/good/000.png`.
    pub image: String,
    /// Unmerged MMAD question type.
    pub question_type: String,
    /// Expected letter.
    pub correct_answer: Value,
    /// Letter extracted from the model's reply, or the raw reply.
    pub gpt_answer: Value,
}

impl AnswerRecord {
    /// Dataset this answer is reported under (first path component of the image key).
    pub fn dataset(&self) -> &str {
        dataset_of(&self.image)
    }

    /// Column this answer is reported under.
    pub fn column(&self) -> &str {
        merged_question_type(&self.question_type)
    }

    /// Whether both answers are letters MMAD counts.
    pub fn is_valid(&self) -> bool {
        is_valid_letter(&self.correct_answer) && is_valid_letter(&self.gpt_answer)
    }

    /// Whether the answer counts as correct (only meaningful when [`Self::is_valid`]).
    pub fn is_correct(&self) -> bool {
        self.correct_answer == self.gpt_answer
    }

    /// Whether the image is a normal (defect-free) sample, by MMAD's path rule.
    pub fn is_normal(&self) -> bool {
        self.image.contains(NORMAL_FLAG)
    }
}

/// Dataset name of an image key: everything before the first `/` (the whole key if none).
pub fn dataset_of(image: &str) -> &str {
    image.split_once('/').map_or(image, |(dataset, _)| dataset)
}

/// MMAD reports the two object-level types together.
pub fn merged_question_type(question_type: &str) -> &str {
    match question_type {
        "Object Structure" | "Object Details" => OBJECT_ANALYSIS,
        other => other,
    }
}

/// Exactly one of the strings `A`..`E`; case, whitespace and punctuation all disqualify.
pub fn is_valid_letter(value: &Value) -> bool {
    value.as_str().is_some_and(|s| VALID_LETTERS.contains(&s))
}

/// How to score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScoreOptions {
    /// Also drop the answer that follows each invalid one, as summary.py does by
    /// mutating the list it iterates. Needed to reproduce published MMAD numbers.
    pub mmad_compat: bool,
    /// Add `Overkill` and `Miss` columns (summary.py's `show_overkill_miss`).
    pub overkill_miss: bool,
    /// Add `Recall`, `Precision` and `F1` columns for Anomaly Detection (anomaly is the
    /// positive class), as in the CSVs MMAD published.
    pub detection_metrics: bool,
}

/// Correct and total question counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub correct: usize,
    pub total: usize,
}

impl Tally {
    /// Counts one more question.
    pub fn add(&mut self, correct: bool) {
        self.total += 1;
        self.correct += usize::from(correct);
    }

    /// Fraction correct, 0 without questions (MMAD's convention, not NaN).
    pub fn accuracy(self) -> f64 {
        ratio(self.correct, self.total)
    }

    /// Questions answered wrongly.
    pub fn wrong(self) -> usize {
        self.total - self.correct
    }
}

/// `num / den`, or 0 when `den` is 0, as summary.py writes it.
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// The counts behind one dataset's row, for drill-down views.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DatasetCounts {
    /// Per column (merged question type), in column order; every column is present.
    pub columns: IndexMap<String, Tally>,
    /// Anomaly Detection questions on normal images.
    pub normal: Tally,
    /// Anomaly Detection questions on abnormal images.
    pub abnormal: Tally,
}

impl DatasetCounts {
    /// Anomaly-positive confusion counts: (TP, FP, FN, TN).
    pub fn confusion(&self) -> (usize, usize, usize, usize) {
        (
            self.abnormal.correct,
            self.normal.wrong(),
            self.abnormal.wrong(),
            self.normal.correct,
        )
    }
}

/// Why an answer did not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DropReason {
    /// `correct_answer` or `gpt_answer` is not one of `A`..`E`.
    Invalid,
    /// Valid or not, it followed an invalid answer and summary.py steps over it
    /// (only with [`ScoreOptions::mmad_compat`]).
    SkippedAfterInvalid,
}

/// An answer that did not count, by its position in the scored slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Dropped {
    pub index: usize,
    pub reason: DropReason,
}

/// MMAD's accuracy table plus the counts it was computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreTable {
    /// Column names, in output order.
    pub columns: Vec<String>,
    /// Row names: datasets in first-appearance order, then `Average`.
    ///
    /// (Only if a dataset is itself named `Average` does that row get replaced in place,
    /// as pandas does for summary.py.)
    pub index: Vec<String>,
    /// `values[row][column]`, percentages. NaN only in the `Average` row of an empty table.
    pub values: Vec<Vec<f64>>,
    /// Examined answers that were invalid.
    pub invalid: usize,
    /// Answers never examined because they followed an invalid one (compat mode only).
    pub skipped: usize,
    /// Per dataset, in row order.
    pub counts: IndexMap<String, DatasetCounts>,
    /// Every answer that did not count, in order.
    pub dropped: Vec<Dropped>,
}

/// Score answers the way MMAD's summary.py does (see the module docs).
pub fn score(records: &[AnswerRecord], opts: ScoreOptions) -> ScoreTable {
    // Rows and columns come from every answer, before any is dropped.
    let mut datasets: IndexSet<&str> = IndexSet::new();
    let mut columns: IndexSet<&str> = IndexSet::new();
    for record in records {
        datasets.insert(record.dataset());
        columns.insert(record.column());
    }
    let mut counts: IndexMap<String, DatasetCounts> = datasets
        .iter()
        .map(|ds| {
            let per_column = columns
                .iter()
                .map(|c| ((*c).to_owned(), Tally::default()))
                .collect();
            (
                (*ds).to_owned(),
                DatasetCounts {
                    columns: per_column,
                    ..DatasetCounts::default()
                },
            )
        })
        .collect();

    let mut invalid = 0;
    let mut skipped = 0;
    let mut dropped = Vec::new();
    let mut i = 0;
    while i < records.len() {
        let record = &records[i];
        if !record.is_valid() {
            invalid += 1;
            dropped.push(Dropped {
                index: i,
                reason: DropReason::Invalid,
            });
            if opts.mmad_compat && i + 1 < records.len() {
                skipped += 1;
                dropped.push(Dropped {
                    index: i + 1,
                    reason: DropReason::SkippedAfterInvalid,
                });
                i += 1;
            }
            i += 1;
            continue;
        }
        i += 1;
        // Every dataset and column was registered in the first pass.
        let Some(ds) = counts.get_mut(record.dataset()) else {
            continue;
        };
        let correct = record.is_correct();
        if let Some(tally) = ds.columns.get_mut(record.column()) {
            tally.add(correct);
        }
        if record.column() == ANOMALY_DETECTION {
            if record.is_normal() {
                ds.normal.add(correct);
            } else {
                ds.abnormal.add(correct);
            }
        }
    }

    let frame = build_frame(&counts, opts);
    ScoreTable {
        columns: frame.columns,
        index: frame.index,
        values: frame.cells,
        invalid,
        skipped,
        counts,
        dropped,
    }
}

impl ScoreTable {
    /// Value of one cell, by row and column name.
    pub fn get(&self, row: &str, column: &str) -> Option<f64> {
        let r = self.index.iter().position(|x| x == row)?;
        let c = self.columns.iter().position(|x| x == column)?;
        self.values.get(r)?.get(c).copied()
    }

    /// MMAD's `_accuracy.csv`: what `DataFrame.to_csv` writes for summary.py's table.
    ///
    /// Unnamed index column, floats as Python's `repr`, NaN as an empty field, names
    /// quoted only when the csv module would, `\n` line endings.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let header = std::iter::once("").chain(self.columns.iter().map(String::as_str));
        push_csv_record(&mut out, header.map(csv_field));
        for (name, row) in self.index.iter().zip(&self.values) {
            let fields = std::iter::once(csv_field(name)).chain(row.iter().map(|&v| {
                if v.is_nan() {
                    String::new()
                } else {
                    py_float_repr(v)
                }
            }));
            push_csv_record(&mut out, fields);
        }
        out
    }

    /// `{"columns", "index", "table": {row: {column: value}}, "invalid", "skipped"}`;
    /// NaN (only possible for an empty table) becomes `null`.
    pub fn to_json(&self) -> Value {
        let mut table = serde_json::Map::new();
        for (name, row) in self.index.iter().zip(&self.values) {
            let cells: serde_json::Map<String, Value> = self
                .columns
                .iter()
                .zip(row)
                .map(|(c, &v)| {
                    let number = serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number);
                    (c.clone(), number)
                })
                .collect();
            table.insert(name.clone(), Value::Object(cells));
        }
        serde_json::json!({
            "columns": self.columns,
            "index": self.index,
            "table": table,
            "invalid": self.invalid,
            "skipped": self.skipped,
        })
    }

    /// Aligned table with one decimal, for terminals.
    pub fn to_text(&self) -> String {
        let cell = |v: f64| {
            if v.is_nan() {
                "-".to_owned()
            } else {
                format!("{v:.1}")
            }
        };
        let body: Vec<Vec<String>> = self
            .values
            .iter()
            .map(|row| row.iter().map(|&v| cell(v)).collect())
            .collect();
        let width = |s: &str| s.chars().count();
        let name_width = self.index.iter().map(|s| width(s)).max().unwrap_or(0);
        let col_widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(c, name)| {
                body.iter()
                    .map(|row| width(&row[c]))
                    .chain(std::iter::once(width(name)))
                    .max()
                    .unwrap_or(0)
            })
            .collect();

        let mut out = String::new();
        let mut line = " ".repeat(name_width);
        for (name, w) in self.columns.iter().zip(&col_widths) {
            line.push_str(&format!("  {name:>w$}"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
        for (name, row) in self.index.iter().zip(&body) {
            let mut line = format!("{name:<name_width$}");
            for (value, w) in row.iter().zip(&col_widths) {
                line.push_str(&format!("  {value:>w$}"));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        if self.invalid > 0 || self.skipped > 0 {
            out.push_str(&format!(
                "invalid answers: {}, skipped after an invalid answer: {}\n",
                self.invalid, self.skipped
            ));
        }
        out
    }
}

/// Quote a CSV field the way Python's csv module does with `QUOTE_MINIMAL`: when it
/// holds a comma, a quote or a line break, doubling inner quotes. (Python before 3.13
/// leaves a lone `\r` unquoted; quoting it keeps the file readable everywhere.)
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn push_csv_record(out: &mut String, fields: impl Iterator<Item = String>) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&field);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::frame::{SumOrder, numpy_pairwise_sum, pandas_mean};
    use super::*;
    use serde_json::json;
    use std::path::{Path, PathBuf};

    fn rec(image: &str, qtype: &str, correct: &str, given: &str) -> AnswerRecord {
        AnswerRecord {
            image: image.to_owned(),
            question_type: qtype.to_owned(),
            correct_answer: json!(correct),
            gpt_answer: json!(given),
        }
    }

    /// The worked example of the facts file, section 4.
    fn facts_fixture() -> Vec<AnswerRecord> {
        const B: &str = "DS-MVTec/bottle/image/broken_large/000.png";
        const B1: &str = "DS-MVTec/bottle/image/broken_large/001.png";
        const G: &str = "DS-MVTec/bottle/image/good/000.png";
        const V: &str = "VisA/candle/test/bad/000.JPG";
        vec![
            rec(G, "Anomaly Detection", "B", "B"),
            rec(
                "DS-MVTec/bottle/image/good/001.png",
                "Anomaly Detection",
                "B",
                "A",
            ),
            rec(B, "Anomaly Detection", "A", "A"),
            rec(B, "Defect Classification", "C", "C"),
            rec(B, "Defect Localization", "D", "A"),
            rec(B1, "Anomaly Detection", "A", "The image is unclear"),
            rec(B1, "Defect Classification", "D", "A"),
            rec(G, "Object Structure", "A", "A"),
            rec(G, "Object Details", "B", "C"),
            rec(
                "VisA/candle/test/good/0000.JPG",
                "Anomaly Detection",
                "B",
                "B",
            ),
            rec(V, "Anomaly Detection", "A", "B"),
            rec(V, "Defect Classification", "B", "B"),
            rec(V, "Object Classification", "A", "A"),
            rec(V, "Object Details", "C", "C"),
        ]
    }

    const FACTS_COLUMNS: [&str; 8] = [
        "Anomaly Detection",
        "Defect Classification",
        "Defect Localization",
        "Object Analysis",
        "Object Classification",
        "Average",
        "Overkill",
        "Miss",
    ];

    fn assert_rows(table: &ScoreTable, expected: &[(&str, [f64; 8])]) {
        assert_eq!(table.columns, FACTS_COLUMNS);
        let names: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
        assert_eq!(table.index, names);
        for (row, values) in expected {
            for (col, want) in FACTS_COLUMNS.iter().zip(values) {
                let got = table.get(row, col).unwrap();
                assert!((got - want).abs() < 1e-9, "{row}/{col}: {got} != {want}");
            }
        }
    }

    #[test]
    fn facts_fixture_compat_mode() {
        let opts = ScoreOptions {
            mmad_compat: true,
            overkill_miss: true,
            ..Default::default()
        };
        let table = score(&facts_fixture(), opts);
        assert_rows(
            &table,
            &[
                ("DS-MVTec", [75.0, 100.0, 0.0, 50.0, 0.0, 45.0, 50.0, 0.0]),
                ("VisA", [50.0, 100.0, 0.0, 100.0, 100.0, 70.0, 0.0, 100.0]),
                ("Average", [62.5, 100.0, 0.0, 75.0, 50.0, 57.5, 25.0, 50.0]),
            ],
        );
        assert_eq!((table.invalid, table.skipped), (1, 1));
        assert_eq!(
            table.dropped,
            [
                Dropped {
                    index: 5,
                    reason: DropReason::Invalid
                },
                Dropped {
                    index: 6,
                    reason: DropReason::SkippedAfterInvalid
                },
            ]
        );
        let ds = &table.counts["DS-MVTec"];
        assert_eq!(
            ds.columns["Defect Classification"],
            Tally {
                correct: 1,
                total: 1
            }
        );
        assert_eq!(
            ds.normal,
            Tally {
                correct: 1,
                total: 2
            }
        );
        assert_eq!(
            ds.abnormal,
            Tally {
                correct: 1,
                total: 1
            }
        );
    }

    #[test]
    fn facts_fixture_default_mode_counts_the_answer_after_an_invalid_one() {
        let opts = ScoreOptions {
            overkill_miss: true,
            ..Default::default()
        };
        let table = score(&facts_fixture(), opts);
        // Only Defect Classification changes (1 of 2 right), and the means through it.
        let avg = (75.0 + 50.0 + 0.0 + 50.0 + 0.0) / 5.0;
        assert_rows(
            &table,
            &[
                ("DS-MVTec", [75.0, 50.0, 0.0, 50.0, 0.0, avg, 50.0, 0.0]),
                ("VisA", [50.0, 100.0, 0.0, 100.0, 100.0, 70.0, 0.0, 100.0]),
                (
                    "Average",
                    [62.5, 75.0, 0.0, 75.0, 50.0, (avg + 70.0) / 2.0, 25.0, 50.0],
                ),
            ],
        );
        assert_eq!((table.invalid, table.skipped), (1, 0));
        assert_eq!(
            table.counts["DS-MVTec"].columns["Defect Classification"].total,
            2
        );
    }

    #[test]
    fn facts_fixture_csv_matches_mmad_output() {
        let opts = ScoreOptions {
            mmad_compat: true,
            overkill_miss: true,
            ..Default::default()
        };
        let csv = score(&facts_fixture(), opts).to_csv();
        assert_eq!(
            csv,
            ",Anomaly Detection,Defect Classification,Defect Localization,Object Analysis,\
             Object Classification,Average,Overkill,Miss\n\
             DS-MVTec,75.0,100.0,0.0,50.0,0.0,45.0,50.0,0.0\n\
             VisA,50.0,100.0,0.0,100.0,100.0,70.0,0.0,100.0\n\
             Average,62.5,100.0,0.0,75.0,50.0,57.5,25.0,50.0\n"
        );
    }

    #[test]
    fn consecutive_invalid_answers_in_compat_mode() {
        let mk = |given: &str| rec("VisA/c/test/bad/0.JPG", "Defect Analysis", "A", given);
        let records = vec![mk("x"), mk("y"), mk("z"), mk("A"), mk("A"), mk("q")];
        let compat = score(
            &records,
            ScoreOptions {
                mmad_compat: true,
                ..Default::default()
            },
        );
        // x examined (skips y), z examined (skips the first A), A counted, q examined.
        assert_eq!((compat.invalid, compat.skipped), (3, 2));
        assert_eq!(
            compat.counts["VisA"].columns["Defect Analysis"],
            Tally {
                correct: 1,
                total: 1
            }
        );
        let default = score(&records, ScoreOptions::default());
        assert_eq!((default.invalid, default.skipped), (4, 0));
        assert_eq!(
            default.counts["VisA"].columns["Defect Analysis"],
            Tally {
                correct: 2,
                total: 2
            }
        );
    }

    #[test]
    fn non_string_and_case_variants_are_invalid() {
        for bad in [
            json!(null),
            json!(1),
            json!(["A"]),
            json!("a"),
            json!(" A"),
            json!("F"),
            json!(true),
        ] {
            assert!(!is_valid_letter(&bad), "{bad}");
        }
        for good in VALID_LETTERS {
            assert!(is_valid_letter(&json!(good)));
        }
    }

    #[test]
    fn detection_metrics_follow_average_and_precede_overkill() {
        let g = "GoodsAD/x/test/good/1.jpg";
        let b = "GoodsAD/x/test/open/1.jpg";
        let records = vec![
            rec(g, "Anomaly Detection", "B", "B"),
            rec(g, "Anomaly Detection", "B", "A"),
            rec(g, "Anomaly Detection", "B", "B"),
            rec(b, "Anomaly Detection", "A", "A"),
            rec(b, "Anomaly Detection", "A", "A"),
            rec(b, "Anomaly Detection", "A", "B"),
            rec(b, "Defect Analysis", "A", "B"),
        ];
        let opts = ScoreOptions {
            overkill_miss: true,
            detection_metrics: true,
            ..Default::default()
        };
        let t = score(&records, opts);
        assert_eq!(
            t.columns,
            [
                "Anomaly Detection",
                "Defect Analysis",
                "Average",
                "Recall",
                "Precision",
                "F1",
                "Overkill",
                "Miss"
            ]
        );
        // TP 2, FN 1, FP 1, TN 2.
        let (p, r) = (2.0 / 3.0, 2.0 / 3.0);
        assert_eq!(t.get("GoodsAD", "Recall"), Some(r * 100.0));
        assert_eq!(t.get("GoodsAD", "Precision"), Some(p * 100.0));
        assert_eq!(t.get("GoodsAD", "F1"), Some(2.0 * p * r / (p + r) * 100.0));
        // Average is over the type columns only.
        assert_eq!(
            t.get("GoodsAD", "Average"),
            Some((2.0 / 3.0 + 2.0 / 3.0) / 2.0 * 100.0 / 2.0)
        );
    }

    /// Precision/Recall/F1 as defined here reproduce MMAD's published GPT-4o figures.
    #[test]
    fn detection_metrics_reproduce_published_gpt4o_row() {
        let ds = DatasetCounts {
            columns: IndexMap::new(),
            normal: Tally {
                correct: 349,
                total: 465,
            },
            abnormal: Tally {
                correct: 1074,
                total: 1226,
            },
        };
        let counts: IndexMap<String, DatasetCounts> =
            [("DS-MVTec".to_owned(), ds)].into_iter().collect();
        let opts = ScoreOptions {
            overkill_miss: true,
            detection_metrics: true,
            ..Default::default()
        };
        let frame = build_frame(&counts, opts);
        let row = &frame.cells[0];
        let reprs: Vec<String> = row.iter().skip(1).map(|&v| py_float_repr(v)).collect();
        // Recall, Precision, F1, Overkill, Miss as in all_result/answers_1_shot_gpt-4o_accuracy.csv.
        assert_eq!(
            reprs,
            [
                "87.60195758564437",
                "90.25210084033614",
                "88.90728476821192",
                "24.94623655913979",
                "12.398042414355626"
            ]
        );
    }

    #[test]
    fn empty_input_matches_pandas() {
        let t = score(
            &[],
            ScoreOptions {
                overkill_miss: true,
                ..Default::default()
            },
        );
        assert_eq!(t.to_csv(), ",Average\nAverage,\n");
        assert_eq!(t.to_json()["table"]["Average"]["Average"], Value::Null);
    }

    #[test]
    fn json_layout() {
        let t = score(
            &facts_fixture(),
            ScoreOptions {
                mmad_compat: true,
                ..Default::default()
            },
        );
        let j = t.to_json();
        let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["columns", "index", "table", "invalid", "skipped"]);
        assert_eq!(j["index"], json!(["DS-MVTec", "VisA", "Average"]));
        assert_eq!(j["table"]["VisA"]["Anomaly Detection"], json!(50.0));
        assert_eq!(j["columns"].as_array().unwrap().len(), 6);
        assert_eq!(
            (j["invalid"].clone(), j["skipped"].clone()),
            (json!(1), json!(1))
        );
        let row_keys: Vec<&String> = j["table"]["Average"].as_object().unwrap().keys().collect();
        assert_eq!(row_keys, t.columns.iter().collect::<Vec<_>>());
    }

    #[test]
    fn text_table_is_aligned_with_one_decimal() {
        let t = score(
            &facts_fixture(),
            ScoreOptions {
                mmad_compat: true,
                ..Default::default()
            },
        );
        let text = t.to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].trim_start().starts_with("Anomaly Detection"));
        assert!(lines[1].starts_with("DS-MVTec"));
        assert!(lines[1].ends_with("45.0"));
        assert!(lines[3].starts_with("Average "));
        // Right-aligned columns: the last cells end in the same place.
        assert_eq!(lines[1].len(), lines[2].len());
        assert_eq!(lines[0].len(), lines[1].len());
        assert!(text.contains("invalid answers: 1, skipped after an invalid answer: 1"));
    }

    #[test]
    fn csv_quotes_like_python() {
        assert_eq!(csv_field("plain name"), "plain name");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn means_sum_like_pandas() {
        use SumOrder::{InOrder, Pairwise};
        assert_eq!(
            pandas_mean(&[0.1, 0.2, 0.3], InOrder),
            (0.1 + 0.2 + 0.3) / 3.0
        );
        assert_eq!(pandas_mean(&[1.0, f64::NAN, 3.0], InOrder), 2.0);
        assert!(pandas_mean(&[], Pairwise).is_nan());
        assert!(pandas_mean(&[f64::NAN], InOrder).is_nan());
        // Below 8 values both orders are the same.
        let v = [0.1, 0.7, 0.3, 1e-17, 5.0, 0.2, 0.9];
        assert_eq!(pandas_mean(&v, InOrder), pandas_mean(&v, Pairwise));
        // From 8 on numpy keeps eight partial sums; checked against numpy 2.4:
        // np.array([1e16, 1.0, -1e16, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]).sum() == 5.0
        let v = [1e16, 1.0, -1e16, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        assert_eq!(numpy_pairwise_sum(&v), 5.0);
        assert_eq!(v.iter().fold(0.0, |s, x| s + x), 6.0);
        // Above 128 values it splits at a multiple of 8 and recurses.
        // np.array([(i * 37) % 101 / 9 for i in range(300)]).sum() == 1663.1111111111113
        // (in order: ...118; eight partial sums without the split: ...111).
        let v: Vec<f64> = (0..300).map(|i| f64::from((i * 37) % 101) / 9.0).collect();
        assert_eq!(py_float_repr(numpy_pairwise_sum(&v)), "1663.1111111111113");
    }

    #[test]
    fn names_colliding_with_added_columns_are_overwritten_in_place() {
        let records = vec![
            rec("Average/c/test/bad/1.png", "Anomaly Detection", "A", "B"),
            rec("VisA/c/test/good/1.png", "Miss", "A", "A"),
        ];
        let t = score(
            &records,
            ScoreOptions {
                overkill_miss: true,
                ..Default::default()
            },
        );
        assert_eq!(t.index, ["Average", "VisA"]);
        assert_eq!(
            t.columns,
            ["Anomaly Detection", "Miss", "Average", "Overkill"]
        );
    }

    // --- loader ---------------------------------------------------------------

    fn parse(text: &str, journal: bool) -> Result<LoadedAnswers, ScoreError> {
        let format = journal.then_some(AnswerFormat::Journal);
        parse_answers(text, Path::new("answers.json"), format)
    }

    #[test]
    fn loads_mmad_list_with_extra_fields_and_odd_answers() {
        let text = r#"[
          {"image": "VisA/c/test/good/1.JPG", "question": {"type": "text"}, "question_type": "Anomaly Detection",
           "correct_answer": "A", "gpt_answer": null},
          {"image": "VisA/c/test/bad/1.JPG", "question_type": "Defect Analysis", "correct_answer": "B", "gpt_answer": 3}
        ]"#;
        let loaded = parse(text, false).unwrap();
        assert_eq!(loaded.format, AnswerFormat::List);
        assert_eq!(loaded.records.len(), 2);
        assert_eq!(loaded.records[0].gpt_answer, Value::Null);
        assert!(!loaded.records[1].is_valid());
    }

    #[test]
    fn list_errors_name_the_entry_and_field() {
        let text = r#"[{"image": "a/b", "question_type": "X", "correct_answer": "A", "gpt_answer": "A"},
                       {"image": "a/b", "correct_answer": "A", "gpt_answer": "A"}]"#;
        let err = parse(text, false).unwrap_err();
        assert!(matches!(
            err,
            ScoreError::MissingField {
                at: EntryLocation::Index(1),
                field: "question_type",
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "answers.json: entry 1 (0-based): field `question_type` is missing"
        );

        let text =
            r#"[{"image": 7, "question_type": "X", "correct_answer": "A", "gpt_answer": "A"}]"#;
        let err = parse(text, false).unwrap_err().to_string();
        assert_eq!(
            err,
            "answers.json: entry 0 (0-based): field `image` must be a string, found a number"
        );

        let err = parse("[1]", false).unwrap_err();
        assert!(matches!(
            err,
            ScoreError::NotAnObject {
                at: EntryLocation::Index(0),
                ..
            }
        ));

        let err = parse("[\n{\"image\": }\n]", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "answers.json: invalid JSON at line 2, column 11: expected value"
        );
        assert!(
            matches!(
                err,
                ScoreError::Json {
                    line: 2,
                    column: 11,
                    ..
                }
            ),
            "{err}"
        );

        let err = parse("{\n  \"VisA/x.png\": {}\n}", false).unwrap_err();
        assert!(
            matches!(
                err,
                ScoreError::NotAnswers {
                    found: "an object",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn journal_skips_blank_lines_errors_and_a_torn_last_line() {
        let text = concat!(
            r#"{"image": "VisA/c/test/good/1.JPG", "question_type": "Anomaly Detection", "correct_answer": "A", "gpt_answer": "A", "status": "ok", "latency_ms": 12}"#,
            "\n\n",
            r#"{"image": "VisA/c/test/bad/1.JPG", "question_type": "Defect Analysis", "status": "error", "error": "HTTP 500"}"#,
            "\n",
            r#"{"image": "VisA/c/test/bad/2.JPG", "question_type": "Defect Analysis", "correct_answer": "B", "gpt_answer": "C"}"#,
            "\n",
            r#"{"image": "VisA/c/test/bad/3.JPG", "question_ty"#,
        );
        let loaded = parse(text, true).unwrap();
        assert_eq!(loaded.format, AnswerFormat::Journal);
        assert_eq!(loaded.records.len(), 2);
        assert!(loaded.torn_last_line);
        assert_eq!(
            loaded.errors,
            [FailedQuestion {
                line: 3,
                image: "VisA/c/test/bad/1.JPG".to_owned(),
                reason: "HTTP 500".to_owned()
            }]
        );
        // Without a file extension, the content decides.
        assert_eq!(parse(text, false).unwrap(), loaded);
    }

    #[test]
    fn an_indexed_journal_is_read_in_question_order_and_the_latest_line_counts() {
        let line = |index: usize, image: &str, given: &str| {
            format!(
                r#"{{"index": {index}, "image": "VisA/c/test/{image}", "question_type": "Anomaly Detection", "correct_answer": "A", "gpt_answer": "{given}", "status": "ok"}}"#
            )
        };
        let error = r#"{"index": 0, "image": "VisA/c/test/bad/0.JPG", "question_type": "Anomaly Detection", "status": "error", "error": "HTTP 500"}"#;
        // Finishing order 2, 0 (an error), 1, then question 0 retried.
        let text = [
            line(2, "bad/2.JPG", "A"),
            error.to_owned(),
            line(1, "bad/1.JPG", "B"),
            line(0, "bad/0.JPG", "A"),
        ]
        .join("\n");
        // Every line ends in a newline: one without is a write cut short.
        let text = format!("{text}\n");
        let loaded = parse(&text, true).unwrap();
        let images: Vec<&str> = loaded.records.iter().map(|r| r.image.as_str()).collect();
        assert_eq!(
            images,
            [
                "VisA/c/test/bad/0.JPG",
                "VisA/c/test/bad/1.JPG",
                "VisA/c/test/bad/2.JPG"
            ]
        );
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        // One line without an index: the file's own order is kept.
        let mixed = format!(
            "{text}{}\n",
            r#"{"image": "VisA/c/test/good/9.JPG", "question_type": "Anomaly Detection", "correct_answer": "B", "gpt_answer": "B"}"#
        );
        let loaded = parse(&mixed, true).unwrap();
        assert_eq!(loaded.records[0].image, "VisA/c/test/bad/2.JPG");
        assert_eq!(loaded.errors.len(), 1);
    }

    #[test]
    fn journal_errors_name_the_line() {
        let good =
            r#"{"image": "a/b", "question_type": "X", "correct_answer": "A", "gpt_answer": "A"}"#;
        let text = format!("{good}\n{{broken\n{good}\n");
        let err = parse(&text, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "answers.json: line 2, column 2: invalid JSON: key must be a string"
        );
        assert!(
            matches!(err, ScoreError::JournalLine { line: 2, .. }),
            "{err}"
        );

        let text = format!(
            "{good}\n{{\"image\": \"a/b\", \"question_type\": \"X\", \"gpt_answer\": \"A\"}}\n{good}"
        );
        let err = parse(&text, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "answers.json: line 2: field `correct_answer` is missing"
        );
    }

    #[test]
    fn empty_files_hold_no_answers() {
        assert!(parse("", true).unwrap().records.is_empty());
        assert!(parse("  \n", false).unwrap().records.is_empty());
        assert!(parse("[]", false).unwrap().records.is_empty());
    }

    #[test]
    fn load_answers_reads_files_and_reports_io_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.jsonl");
        std::fs::write(
            &path,
            "{\"image\": \"a/good\", \"question_type\": \"Anomaly Detection\", \"correct_answer\": \"A\", \"gpt_answer\": \"A\"}\n",
        )
        .unwrap();
        let loaded = load_answers(&path).unwrap();
        assert_eq!(loaded.records.len(), 1);
        assert!(!loaded.torn_last_line);
        let missing = dir.path().join("missing.json");
        assert!(matches!(load_answers(&missing), Err(ScoreError::Io { .. })));
    }

    // --- conformance with MMAD's summary.py -------------------------------------

    /// Minimal reader for the CSVs pandas writes (quoted fields may hold commas and
    /// doubled quotes; no quoted newlines occur in the fixtures).
    fn split_csv_line(line: &str) -> Vec<String> {
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => fields.push(std::mem::take(&mut field)),
                (c, _) => field.push(c),
            }
        }
        fields.push(field);
        fields
    }

    #[test]
    fn conformance_with_mmad_summary_py() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/score");
        let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with("case_") && name.ends_with(".json")
            })
            .collect();
        cases.sort();
        assert!(cases.len() >= 12, "fixtures missing in {}", dir.display());

        let opts = ScoreOptions {
            mmad_compat: true,
            overkill_miss: true,
            ..Default::default()
        };
        for case in &cases {
            let name = case.file_name().unwrap().to_string_lossy().into_owned();
            let answers = load_answers(case).unwrap_or_else(|e| panic!("{e}"));
            let table = score(&answers.records, opts);
            let expected = std::fs::read_to_string(
                case.with_file_name(name.replace(".json", "_accuracy.csv")),
            )
            .unwrap();

            let mut lines = expected.lines();
            let header = split_csv_line(lines.next().unwrap());
            assert_eq!(header[0], "", "{name}");
            assert_eq!(header[1..], table.columns[..], "{name}: columns");
            let rows: Vec<Vec<String>> = lines.map(split_csv_line).collect();
            let index: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
            assert_eq!(index, table.index, "{name}: index");
            for (r, row) in rows.iter().enumerate() {
                assert_eq!(row.len(), table.columns.len() + 1, "{name}: row {r} width");
                for (c, cell) in row[1..].iter().enumerate() {
                    let got = table.values[r][c];
                    if cell.is_empty() {
                        assert!(
                            got.is_nan(),
                            "{name}: [{}][{}] = {got}, want NaN",
                            index[r],
                            header[c + 1]
                        );
                        continue;
                    }
                    let want: f64 = cell.parse().unwrap();
                    assert!(
                        (got - want).abs() <= 1e-9,
                        "{name}: [{}][{}] = {got}, want {want}",
                        index[r],
                        header[c + 1]
                    );
                }
            }
            assert_eq!(table.to_csv(), expected, "{name}: CSV text");
        }
    }
}
