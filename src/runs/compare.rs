//! Comparing two runs: the score table cell by cell (B minus A) and the questions
//! whose answer changed between them.
//!
//! Questions are matched by their dataset index (stable across runs of the same
//! dataset file). A record whose image or turn differs from the other run's record of
//! the same index means the runs used different dataset files: such indices are
//! reported as mismatched and left out of the changes rather than compared wrongly.

use std::collections::BTreeMap;

use indexmap::{IndexMap, IndexSet};
use serde::Serialize;

use crate::runs::journal::JournalRecord;
use crate::score::interval::{self, BootstrapOptions};
use crate::score::{self, AnswerRecord, ScoreOptions, ScoreTable};

/// Columns `score` appends after the subtasks.
const SUMMARY_COLUMNS: [&str; 6] = [
    score::AVERAGE,
    "Recall",
    "Precision",
    "F1",
    "Overkill",
    "Miss",
];

/// The two score tables aligned on the union of their rows and columns.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDiff {
    /// Rows of A in order, then rows only B has (`Average` stays last).
    pub rows: Vec<String>,
    /// Subtask columns of A in order, then those only B has, then the summary columns.
    pub columns: Vec<String>,
    /// `a[row][col]`: A's value, `None` where A has no such cell.
    pub a: Vec<Vec<Option<f64>>>,
    pub b: Vec<Vec<Option<f64>>>,
}

impl TableDiff {
    /// Lines up two tables. Cells one side lacks stay `None` (not 0: MMAD writes 0
    /// for an empty cell of a present row and column, which is a real value).
    pub fn new(a: &ScoreTable, b: &ScoreTable) -> TableDiff {
        let mut rows: IndexSet<String> = IndexSet::new();
        for r in a.index.iter().chain(&b.index) {
            if r != score::AVERAGE {
                rows.insert(r.clone());
            }
        }
        if a.index.iter().chain(&b.index).any(|r| r == score::AVERAGE) {
            rows.insert(score::AVERAGE.to_string());
        }
        // Subtask columns first, then the summary columns, as each table has them.
        let is_summary = |c: &String| SUMMARY_COLUMNS.contains(&c.as_str());
        let mut columns: IndexSet<String> = IndexSet::new();
        for c in a
            .columns
            .iter()
            .chain(&b.columns)
            .filter(|c| !is_summary(c))
        {
            columns.insert(c.clone());
        }
        for c in a.columns.iter().chain(&b.columns).filter(|c| is_summary(c)) {
            columns.insert(c.clone());
        }
        let grid = |t: &ScoreTable| -> Vec<Vec<Option<f64>>> {
            rows.iter()
                .map(|r| columns.iter().map(|c| t.get(r, c)).collect())
                .collect()
        };
        TableDiff {
            a: grid(a),
            b: grid(b),
            rows: rows.into_iter().collect(),
            columns: columns.into_iter().collect(),
        }
    }

    /// B minus A, where both have the cell and both values are numbers.
    pub fn delta(&self, row: usize, column: usize) -> Option<f64> {
        let a = self.a.get(row)?.get(column).copied().flatten()?;
        let b = self.b.get(row)?.get(column).copied().flatten()?;
        let d = b - a;
        d.is_finite().then_some(d)
    }

    pub fn delta_by_name(&self, row: &str, column: &str) -> Option<f64> {
        let r = self.rows.iter().position(|x| x == row)?;
        let c = self.columns.iter().position(|x| x == column)?;
        self.delta(r, c)
    }
}

/// How a question's outcome moved from A to B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Wrong (or no answer) in A, right in B.
    Better,
    /// Right in A, wrong (or no answer) in B.
    Worse,
    /// A different answer, equally wrong (or an error became a wrong answer, or back).
    Changed,
}

impl ChangeKind {
    pub fn label(self) -> &'static str {
        match self {
            ChangeKind::Better => "better",
            ChangeKind::Worse => "worse",
            ChangeKind::Changed => "changed",
        }
    }
}

/// One question answered differently by the two runs.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerChange {
    pub index: usize,
    pub image: String,
    pub question_type: String,
    pub question: String,
    pub correct_answer: String,
    /// The answer as the journal holds it; `None` for an error record.
    pub a_answer: Option<String>,
    pub b_answer: Option<String>,
    pub kind: ChangeKind,
}

/// How the questions both runs answered with a letter MMAD counts moved from A to B:
/// the 2x2 table McNemar's test reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Flips {
    pub right_to_wrong: usize,
    pub wrong_to_right: usize,
    pub both_right: usize,
    pub both_wrong: usize,
}

impl Flips {
    fn add(&mut self, a_right: bool, b_right: bool) {
        match (a_right, b_right) {
            (true, false) => self.right_to_wrong += 1,
            (false, true) => self.wrong_to_right += 1,
            (true, true) => self.both_right += 1,
            (false, false) => self.both_wrong += 1,
        }
    }

    /// Questions counted.
    pub fn total(&self) -> usize {
        self.right_to_wrong + self.wrong_to_right + self.both_right + self.both_wrong
    }

    /// McNemar's exact two-sided p-value: how likely this many or more lopsided
    /// flips are if the two runs were equally good.
    pub fn mcnemar_p(&self) -> f64 {
        score::stats::mcnemar_exact(self.right_to_wrong, self.wrong_to_right)
    }
}

/// Everything a comparison view shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub table: TableDiff,
    /// In dataset index order.
    pub changes: Vec<AnswerChange>,
    pub better: usize,
    pub worse: usize,
    /// Questions both runs answered (by index).
    pub common: usize,
    pub only_in_a: usize,
    pub only_in_b: usize,
    /// Indices whose image or turn differ between the runs (different dataset files).
    pub mismatched: Vec<usize>,
    /// Over the questions both runs answered with a letter MMAD counts (an error or
    /// an unreadable answer in either run leaves the question out, as the score
    /// table leaves it out).
    pub flips: Flips,
    /// The same per subtask column, in A's column order, then B's new ones.
    pub flips_by_column: IndexMap<String, Flips>,
}

/// Whether the question of `r` is one of those behind the score table's cell
/// (`row`, `column`): the drill-down of a cell. The `Average` row and column take
/// every dataset and subtask; `Overkill` holds the Anomaly Detection questions on
/// normal images, `Miss` those on abnormal images, the detection metrics all
/// Anomaly Detection questions.
pub fn cell_contains(row: &str, column: &str, image: &str, question_type: &str) -> bool {
    if row != score::AVERAGE && score::dataset_of(image) != row {
        return false;
    }
    let is_ad = question_type == score::ANOMALY_DETECTION;
    let normal = image.contains(score::NORMAL_FLAG);
    match column {
        score::AVERAGE => true,
        "Overkill" => is_ad && normal,
        "Miss" => is_ad && !normal,
        "Recall" | "Precision" | "F1" => is_ad,
        c => score::merged_question_type(question_type) == c,
    }
}

/// Whether a record counts as answered correctly, by MMAD's rule (valid letters only).
fn is_right(r: &JournalRecord) -> bool {
    r.is_ok()
        && r.gpt_answer
            .as_deref()
            .is_some_and(|g| score::VALID_LETTERS.contains(&g) && g == r.correct_answer)
}

/// Whether a record is an answer MMAD's table counts: answered, with letters.
fn counts_for_mmad(r: &JournalRecord) -> bool {
    r.is_ok()
        && r.gpt_answer
            .as_deref()
            .is_some_and(|g| score::VALID_LETTERS.contains(&g))
        && score::VALID_LETTERS.contains(&r.correct_answer.as_str())
}

fn is_summary_column(c: &str) -> bool {
    SUMMARY_COLUMNS.contains(&c)
}

/// 95% intervals of `B - A` for every cell both runs' tables have: the paired
/// bootstrap over images (see [`crate::score::interval`]) on the answers each run's
/// table counts.
pub fn delta_intervals(
    a: &[JournalRecord],
    b: &[JournalRecord],
    options: ScoreOptions,
    boot: BootstrapOptions,
) -> IndexMap<(String, String), (f64, f64)> {
    let answers = |records: &[JournalRecord]| -> Vec<AnswerRecord> {
        records
            .iter()
            .filter(|r| r.is_ok())
            .map(JournalRecord::to_answer)
            .collect()
    };
    let (a, b) = (answers(a), answers(b));
    let (ta, tb) = (score::score(&a, options), score::score(&b, options));
    interval::paired_intervals((&a, &ta), (&b, &tb), options, boot)
}

/// The last record of each index: a later line for the same question supersedes an
/// earlier one (a retried question, a merged shard).
pub(crate) fn latest_by_index(records: &[JournalRecord]) -> BTreeMap<usize, &JournalRecord> {
    records.iter().map(|r| (r.index, r)).collect()
}

/// Scores both runs (records in journal order, error records included) with
/// `options` and lists what changed.
pub fn compare(a: &[JournalRecord], b: &[JournalRecord], options: ScoreOptions) -> Comparison {
    let score_of = |records: &[JournalRecord]| {
        let answers: Vec<_> = records
            .iter()
            .filter(|r| r.is_ok())
            .map(JournalRecord::to_answer)
            .collect();
        score::score(&answers, options)
    };
    let table = TableDiff::new(&score_of(a), &score_of(b));
    let a_by = latest_by_index(a);
    let b_by = latest_by_index(b);
    let mut out = Comparison {
        table,
        changes: Vec::new(),
        better: 0,
        worse: 0,
        common: 0,
        only_in_a: a_by.keys().filter(|i| !b_by.contains_key(i)).count(),
        only_in_b: b_by.keys().filter(|i| !a_by.contains_key(i)).count(),
        mismatched: Vec::new(),
        flips: Flips::default(),
        flips_by_column: IndexMap::new(),
    };
    for column in out.table.columns.iter().filter(|c| !is_summary_column(c)) {
        out.flips_by_column.insert(column.clone(), Flips::default());
    }
    for (&index, ra) in &a_by {
        let Some(rb) = b_by.get(&index) else {
            continue;
        };
        if ra.image != rb.image || ra.turn != rb.turn {
            out.mismatched.push(index);
            continue;
        }
        out.common += 1;
        if counts_for_mmad(ra) && counts_for_mmad(rb) {
            let (a_right, b_right) = (is_right(ra), is_right(rb));
            out.flips.add(a_right, b_right);
            let column = score::merged_question_type(&ra.question_type);
            out.flips_by_column
                .entry(column.to_owned())
                .or_default()
                .add(a_right, b_right);
        }
        let a_answer = ra.is_ok().then(|| ra.gpt_answer.clone()).flatten();
        let b_answer = rb.is_ok().then(|| rb.gpt_answer.clone()).flatten();
        if a_answer == b_answer && ra.is_ok() == rb.is_ok() {
            continue;
        }
        let kind = match (is_right(ra), is_right(rb)) {
            (false, true) => ChangeKind::Better,
            (true, false) => ChangeKind::Worse,
            _ => ChangeKind::Changed,
        };
        match kind {
            ChangeKind::Better => out.better += 1,
            ChangeKind::Worse => out.worse += 1,
            ChangeKind::Changed => {}
        }
        out.changes.push(AnswerChange {
            index,
            image: ra.image.clone(),
            question_type: ra.question_type.clone(),
            question: ra.question.text.clone(),
            correct_answer: ra.correct_answer.clone(),
            a_answer,
            b_answer,
            kind,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::test_support::record;

    const GOOD: &str = "VisA/candle/test/good/0000.JPG";
    const BAD: &str = "VisA/candle/test/bad/0000.JPG";
    const MV: &str = "DS-MVTec/bottle/image/good/000.png";

    #[test]
    fn flips_count_only_questions_both_runs_answered_with_a_letter() {
        let a = vec![
            record(0, GOOD, "Anomaly Detection", "B", Some("B")), // right -> wrong
            record(1, BAD, "Anomaly Detection", "A", Some("B")),  // wrong -> right
            record(2, BAD, "Defect Classification", "C", Some("A")), // wrong -> wrong
            record(3, BAD, "Defect Localization", "A", Some("A")), // right -> right
            record(4, BAD, "Defect Description", "A", None),      // error in A: out
            record(5, BAD, "Defect Analysis", "A", Some("B")),    // error in B: out
            record(6, BAD, "Defect Analysis", "A", Some("A")),    // unreadable in B: out
        ];
        let mut b = vec![
            record(0, GOOD, "Anomaly Detection", "B", Some("A")),
            record(1, BAD, "Anomaly Detection", "A", Some("A")),
            record(2, BAD, "Defect Classification", "C", Some("B")),
            record(3, BAD, "Defect Localization", "A", Some("A")),
            record(4, BAD, "Defect Description", "A", Some("A")),
            record(5, BAD, "Defect Analysis", "A", None),
            record(6, BAD, "Defect Analysis", "A", Some("a lead")),
        ];
        b[6].correct = Some(false);
        let c = compare(&a, &b, ScoreOptions::default());
        let want = Flips {
            right_to_wrong: 1,
            wrong_to_right: 1,
            both_right: 1,
            both_wrong: 1,
        };
        assert_eq!(c.flips, want);
        assert_eq!(c.flips.total(), 4);
        assert_eq!(c.flips.mcnemar_p(), 1.0);
        let ad = c.flips_by_column["Anomaly Detection"];
        assert_eq!(
            (ad.right_to_wrong, ad.wrong_to_right, ad.total()),
            (1, 1, 2)
        );
        assert_eq!(c.flips_by_column["Defect Classification"].both_wrong, 1);
        assert_eq!(c.flips_by_column["Defect Localization"].both_right, 1);
        // Subtasks with no question both runs answered are listed, empty.
        assert_eq!(c.flips_by_column["Defect Description"].total(), 0);
        assert!(!c.flips_by_column.contains_key("Average"));
    }

    #[test]
    fn the_difference_interval_surrounds_the_difference() {
        // 300 questions on 300 images; B fixes 30 of A's wrong answers.
        let mut a = Vec::new();
        let mut b = Vec::new();
        for i in 0..300 {
            let image = format!("VisA/candle/test/bad/{i:04}.JPG");
            let right_in_a = i % 2 == 0;
            let right_in_b = right_in_a || i % 20 == 1;
            let given = |right: bool| Some(if right { "A" } else { "B" });
            a.push(record(
                i,
                &image,
                "Defect Classification",
                "A",
                given(right_in_a),
            ));
            b.push(record(
                i,
                &image,
                "Defect Classification",
                "A",
                given(right_in_b),
            ));
        }
        let d = delta_intervals(&a, &b, ScoreOptions::default(), BootstrapOptions::default());
        let (lo, hi) = d[&("VisA".to_string(), "Defect Classification".to_string())];
        // B - A = 15 / 300 = +5 points, and B never does worse: no resample below 0.
        assert!((0.0..5.0).contains(&lo) && 5.0 < hi, "{lo} {hi}");
        let c = compare(&a, &b, ScoreOptions::default());
        assert_eq!(c.flips.wrong_to_right, 15);
        assert_eq!(c.flips.right_to_wrong, 0);
        // 15 one-sided flips: p = 2 / 2^15.
        assert_eq!(c.flips.mcnemar_p(), 2.0 / 32768.0);
    }

    #[test]
    fn changes_are_classified_and_counted() {
        let a = vec![
            record(0, GOOD, "Anomaly Detection", "B", Some("B")), // right -> wrong: worse
            record(1, BAD, "Anomaly Detection", "A", Some("B")),  // wrong -> right: better
            record(2, BAD, "Defect Classification", "C", Some("A")), // wrong -> other wrong
            record(3, BAD, "Defect Localization", "A", Some("A")), // unchanged
            record(4, BAD, "Defect Description", "A", None),      // error -> right: better
            record(5, BAD, "Defect Analysis", "A", Some("B")),    // wrong -> error: changed
            record(6, MV, "Object Details", "A", Some("A")),      // only in A
        ];
        let b = vec![
            record(5, BAD, "Defect Analysis", "A", None),
            record(4, BAD, "Defect Description", "A", Some("A")),
            record(3, BAD, "Defect Localization", "A", Some("A")),
            record(2, BAD, "Defect Classification", "C", Some("B")),
            record(1, BAD, "Anomaly Detection", "A", Some("A")),
            record(0, GOOD, "Anomaly Detection", "B", Some("A")),
            record(9, MV, "Object Details", "A", Some("A")), // only in B
        ];
        let c = compare(&a, &b, ScoreOptions::default());
        let kinds: Vec<(usize, ChangeKind)> = c.changes.iter().map(|x| (x.index, x.kind)).collect();
        assert_eq!(
            kinds,
            [
                (0, ChangeKind::Worse),
                (1, ChangeKind::Better),
                (2, ChangeKind::Changed),
                (4, ChangeKind::Better),
                (5, ChangeKind::Changed),
            ]
        );
        assert_eq!((c.better, c.worse, c.common), (2, 1, 6));
        assert_eq!((c.only_in_a, c.only_in_b), (1, 1));
        let first = &c.changes[0];
        assert_eq!(first.a_answer.as_deref(), Some("B"));
        assert_eq!(first.b_answer.as_deref(), Some("A"));
        assert_eq!(first.correct_answer, "B");
        assert_eq!(c.changes[4].b_answer, None);
    }

    #[test]
    fn table_diff_is_b_minus_a_on_the_union_of_cells() {
        // A: VisA AD normal right, abnormal wrong -> 50; B: both right -> 100.
        let a = vec![
            record(0, GOOD, "Anomaly Detection", "B", Some("B")),
            record(1, BAD, "Anomaly Detection", "A", Some("B")),
        ];
        let b = vec![
            record(0, GOOD, "Anomaly Detection", "B", Some("B")),
            record(1, BAD, "Anomaly Detection", "A", Some("A")),
            record(2, MV, "Object Details", "A", Some("A")),
        ];
        let c = compare(&a, &b, ScoreOptions::default());
        let t = &c.table;
        assert_eq!(t.rows, ["VisA", "DS-MVTec", "Average"]);
        assert_eq!(
            t.columns,
            ["Anomaly Detection", "Object Analysis", "Average"]
        );
        assert_eq!(t.delta_by_name("VisA", "Anomaly Detection"), Some(50.0));
        // A has no DS-MVTec row and no Object Analysis column: no delta, not a fake 0.
        assert_eq!(t.delta_by_name("DS-MVTec", "Object Analysis"), None);
        assert_eq!(t.a[1][0], None);
        assert_eq!(t.b[1][1], Some(100.0));
    }

    #[test]
    fn cells_hold_their_questions() {
        assert!(cell_contains(
            "VisA",
            "Anomaly Detection",
            GOOD,
            "Anomaly Detection"
        ));
        assert!(!cell_contains(
            "DS-MVTec",
            "Anomaly Detection",
            GOOD,
            "Anomaly Detection"
        ));
        assert!(cell_contains(
            "Average",
            "Object Analysis",
            MV,
            "Object Details"
        ));
        assert!(cell_contains("VisA", "Average", BAD, "Defect Analysis"));
        assert!(cell_contains("VisA", "Overkill", GOOD, "Anomaly Detection"));
        assert!(!cell_contains("VisA", "Overkill", BAD, "Anomaly Detection"));
        assert!(cell_contains("VisA", "Miss", BAD, "Anomaly Detection"));
        assert!(!cell_contains("VisA", "Miss", BAD, "Defect Analysis"));
    }

    #[test]
    fn different_dataset_files_are_reported_not_compared() {
        let a = vec![record(0, GOOD, "Anomaly Detection", "B", Some("B"))];
        let b = vec![record(0, BAD, "Anomaly Detection", "A", Some("B"))];
        let c = compare(&a, &b, ScoreOptions::default());
        assert_eq!(c.mismatched, [0]);
        assert!(c.changes.is_empty());
        assert_eq!(c.common, 0);
    }

    #[test]
    fn a_later_record_of_the_same_index_supersedes_the_earlier() {
        let a = vec![record(0, GOOD, "Anomaly Detection", "B", Some("B"))];
        let b = vec![
            record(0, GOOD, "Anomaly Detection", "B", None),
            record(0, GOOD, "Anomaly Detection", "B", Some("B")),
        ];
        let c = compare(&a, &b, ScoreOptions::default());
        assert!(c.changes.is_empty());
        assert_eq!(c.common, 1);
    }
}
