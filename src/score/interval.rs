//! 95% intervals for every cell of the score table: a bootstrap over images.
//!
//! An image's questions are not independent (the same picture, often the same
//! mistake), so the resampling unit is the image with all its questions, not the
//! question. Images are drawn with replacement *within each dataset* (a stratified
//! cluster bootstrap): each resample keeps every row of the table and its image
//! count, so the `Average` row always averages the same datasets. A resample is
//! scored exactly as the table was (same columns, same Anomaly Detection balance, same
//! answers dropped as invalid), and a cell's interval is the 2.5th and 97.5th
//! percentile of its resampled values (numpy's linear interpolation).
//!
//! The resamples are drawn from a seed, one generator per resample derived from it
//! in order, so the same answers, options and seed give the same interval on any
//! machine and any number of threads.
//!
//! [`paired_intervals`] does the same for the difference of two runs: both runs'
//! answers on the same drawn images, so what the runs share (hard images) cancels.

use indexmap::IndexMap;
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

use super::frame::build_frame;
use super::stats::percentile_interval;
use super::{ANOMALY_DETECTION, AnswerRecord, DatasetCounts, ScoreOptions, ScoreTable, Tally};

/// What the intervals are drawn from; recorded beside them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BootstrapOptions {
    /// Number of resamples (1,000 by default).
    pub resamples: usize,
    /// Seed of the first generator.
    pub seed: u64,
    /// Central coverage of the interval.
    pub level: f64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self {
            resamples: 1000,
            seed: 0,
            level: 0.95,
        }
    }
}

/// `[low, high]` per cell, in the table's own row and column order; `None` where the
/// cell has no value in any resample (only an empty table's `Average` row).
#[derive(Debug, Clone, PartialEq)]
pub struct CellIntervals {
    pub index: Vec<String>,
    pub columns: Vec<String>,
    pub bounds: Vec<Vec<Option<(f64, f64)>>>,
    pub options: BootstrapOptions,
}

impl CellIntervals {
    /// The interval of one cell, by row and column name.
    pub fn get(&self, row: &str, column: &str) -> Option<(f64, f64)> {
        let r = self.index.iter().position(|x| x == row)?;
        let c = self.columns.iter().position(|x| x == column)?;
        self.bounds.get(r)?.get(c).copied().flatten()
    }

    /// `{"<row>": {"<column>": [lo, hi]}}`, `null` for a cell without one.
    pub fn to_json(&self) -> Value {
        let mut rows = serde_json::Map::new();
        for (name, row) in self.index.iter().zip(&self.bounds) {
            let cells: serde_json::Map<String, Value> = self
                .columns
                .iter()
                .zip(row)
                .map(|(c, b)| (c.clone(), bounds_json(*b)))
                .collect();
            rows.insert(name.clone(), Value::Object(cells));
        }
        Value::Object(rows)
    }
}

pub(crate) fn bounds_json(b: Option<(f64, f64)>) -> Value {
    match b {
        Some((lo, hi)) => serde_json::json!([lo, hi]),
        None => Value::Null,
    }
}

/// Intervals for `table`, which must be `score(records, opts)`.
pub fn cell_intervals(
    records: &[AnswerRecord],
    table: &ScoreTable,
    opts: ScoreOptions,
    boot: BootstrapOptions,
) -> CellIntervals {
    let side = Side::new(table);
    let mut strata: IndexMap<&str, IndexMap<&str, Cluster>> = IndexMap::new();
    side.add_to(&mut strata, 0, records, table);
    let strata = flatten(strata, 1);
    let samples = resample(&strata, &[&side], opts, boot);
    // samples[b][0] is one resampled table's cells, in the table's layout.
    let rows = table.index.len();
    let cols = table.columns.len();
    let bounds = (0..rows)
        .map(|r| {
            (0..cols)
                .map(|c| {
                    let mut values: Vec<f64> = samples.iter().map(|s| s[0][r][c]).collect();
                    percentile_interval(&mut values, boot.level)
                })
                .collect()
        })
        .collect();
    CellIntervals {
        index: table.index.clone(),
        columns: table.columns.clone(),
        bounds,
        options: boot,
    }
}

/// Intervals for `B - A` in every cell both tables have, keyed by (row, column).
pub fn paired_intervals(
    a: (&[AnswerRecord], &ScoreTable),
    b: (&[AnswerRecord], &ScoreTable),
    opts: ScoreOptions,
    boot: BootstrapOptions,
) -> IndexMap<(String, String), (f64, f64)> {
    let side_a = Side::new(a.1);
    let side_b = Side::new(b.1);
    let mut strata: IndexMap<&str, IndexMap<&str, Cluster>> = IndexMap::new();
    side_a.add_to(&mut strata, 0, a.0, a.1);
    side_b.add_to(&mut strata, 1, b.0, b.1);
    let strata = flatten(strata, 2);
    let samples = resample(&strata, &[&side_a, &side_b], opts, boot);
    let mut out = IndexMap::new();
    for (ra, row) in a.1.index.iter().enumerate() {
        let Some(rb) = b.1.index.iter().position(|r| r == row) else {
            continue;
        };
        for (ca, column) in a.1.columns.iter().enumerate() {
            let Some(cb) = b.1.columns.iter().position(|c| c == column) else {
                continue;
            };
            let mut deltas: Vec<f64> = samples
                .iter()
                .map(|s| s[1][rb][cb] - s[0][ra][ca])
                .collect();
            if let Some(bounds) = percentile_interval(&mut deltas, boot.level) {
                out.insert((row.clone(), column.clone()), bounds);
            }
        }
    }
    out
}

/// How one counted answer adds to its table.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    dataset: usize,
    column: usize,
    /// `Some(normal)` for Anomaly Detection, which also counts per normal/abnormal.
    detection: Option<bool>,
    correct: bool,
}

/// One image's counted answers, per side (run).
#[derive(Debug, Clone, Default)]
struct Cluster {
    outcomes: Vec<Vec<Outcome>>,
}

/// One run's table shape: the counts the resamples fill.
struct Side {
    template: IndexMap<String, DatasetCounts>,
}

impl Side {
    fn new(table: &ScoreTable) -> Side {
        let mut template = table.counts.clone();
        for ds in template.values_mut() {
            for tally in ds.columns.values_mut() {
                *tally = Tally::default();
            }
            ds.normal = Tally::default();
            ds.abnormal = Tally::default();
        }
        Side { template }
    }

    /// Files every answer `table` counted under its dataset and image.
    fn add_to<'r>(
        &self,
        strata: &mut IndexMap<&'r str, IndexMap<&'r str, Cluster>>,
        side: usize,
        records: &'r [AnswerRecord],
        table: &ScoreTable,
    ) {
        let dropped: std::collections::HashSet<usize> =
            table.dropped.iter().map(|d| d.index).collect();
        for (i, record) in records.iter().enumerate() {
            if dropped.contains(&i) {
                continue;
            }
            let Some(dataset) = self.template.get_index_of(record.dataset()) else {
                continue;
            };
            let Some(column) = self.template[dataset].columns.get_index_of(record.column()) else {
                continue;
            };
            let detection = (record.column() == ANOMALY_DETECTION).then(|| record.is_normal());
            let cluster = strata
                .entry(record.dataset())
                .or_default()
                .entry(record.image.as_str())
                .or_default();
            cluster
                .outcomes
                .resize(cluster.outcomes.len().max(side + 1), Vec::new());
            cluster.outcomes[side].push(Outcome {
                dataset,
                column,
                detection,
                correct: record.is_correct(),
            });
        }
    }

    /// Counts of one resample, shaped like the table's.
    fn counts(&self, drawn: &[&Cluster], side: usize) -> IndexMap<String, DatasetCounts> {
        // Flat tallies first (this loop runs resamples x answers times), then one
        // pass into the table's shape.
        let width = self
            .template
            .values()
            .map(|d| d.columns.len())
            .max()
            .unwrap_or(0);
        let mut cells = vec![Tally::default(); self.template.len() * width];
        let mut normal = vec![Tally::default(); self.template.len()];
        let mut abnormal = vec![Tally::default(); self.template.len()];
        for cluster in drawn {
            for o in cluster.outcomes.get(side).into_iter().flatten() {
                cells[o.dataset * width + o.column].add(o.correct);
                match o.detection {
                    Some(true) => normal[o.dataset].add(o.correct),
                    Some(false) => abnormal[o.dataset].add(o.correct),
                    None => {}
                }
            }
        }
        let mut counts = self.template.clone();
        for (d, ds) in counts.values_mut().enumerate() {
            for (c, tally) in ds.columns.values_mut().enumerate() {
                *tally = cells[d * width + c];
            }
            ds.normal = normal[d];
            ds.abnormal = abnormal[d];
        }
        counts
    }
}

/// Strata as lists, each cluster with one outcome list per side.
fn flatten(strata: IndexMap<&str, IndexMap<&str, Cluster>>, sides: usize) -> Vec<Vec<Cluster>> {
    strata
        .into_values()
        .map(|images| {
            images
                .into_values()
                .map(|mut c| {
                    c.outcomes.resize(sides, Vec::new());
                    c
                })
                .collect()
        })
        .collect()
}

/// `out[b][side][row][column]`: every side's cells in resample `b`.
fn resample(
    strata: &[Vec<Cluster>],
    sides: &[&Side],
    opts: ScoreOptions,
    boot: BootstrapOptions,
) -> Vec<Vec<Vec<Vec<f64>>>> {
    // One seed per resample, drawn in order from the run's seed, so the result does
    // not depend on how rayon splits the work.
    let mut master = fastrand::Rng::with_seed(boot.seed);
    let seeds: Vec<u64> = (0..boot.resamples).map(|_| master.u64(..)).collect();
    seeds
        .into_par_iter()
        .map(|seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut drawn: Vec<&Cluster> = Vec::new();
            for images in strata {
                for _ in 0..images.len() {
                    drawn.push(&images[rng.usize(..images.len())]);
                }
            }
            sides
                .iter()
                .enumerate()
                .map(|(s, side)| build_frame(&side.counts(&drawn, s), opts).cells)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::score;
    use serde_json::json;

    fn rec(image: &str, qtype: &str, right: bool) -> AnswerRecord {
        AnswerRecord {
            image: image.to_owned(),
            question_type: qtype.to_owned(),
            correct_answer: json!("A"),
            gpt_answer: json!(if right { "A" } else { "B" }),
        }
    }

    /// `n` images, `per_image` questions each, the first `right` images all right.
    fn synthetic(n: usize, per_image: usize, right: usize) -> Vec<AnswerRecord> {
        let mut out = Vec::new();
        // Interleave right and wrong images so no stratum order hides a bug.
        for i in 0..n {
            let is_right = (i * right) / n != ((i + 1) * right) / n;
            for _ in 0..per_image {
                out.push(rec(
                    &format!("DS/cat/test/bad/{i:05}.png"),
                    "Defect Classification",
                    is_right,
                ));
            }
        }
        out
    }

    fn half_width(ci: &CellIntervals, row: &str, column: &str) -> f64 {
        let (lo, hi) = ci.get(row, column).unwrap();
        (hi - lo) / 2.0
    }

    #[test]
    fn a_large_run_matches_the_normal_closed_form() {
        // p = 0.7 over 10,000 one-question images: the interval of a proportion,
        // 1.96 * sqrt(p (1 - p) / n) * 100 = 0.898 points either side.
        let records = synthetic(10_000, 1, 7_000);
        let opts = ScoreOptions::default();
        let table = score(&records, opts);
        let ci = cell_intervals(&records, &table, opts, BootstrapOptions::default());
        let want = 1.96 * (0.7f64 * 0.3 / 10_000.0).sqrt() * 100.0;
        let got = half_width(&ci, "DS", "Defect Classification");
        assert!((got - want).abs() < 0.08 * want, "{got} vs {want}");
        let (lo, hi) = ci.get("DS", "Defect Classification").unwrap();
        assert!(lo < 70.0 && 70.0 < hi);
        // The Average row of one dataset is that dataset.
        assert_eq!(
            ci.get("Average", "Defect Classification"),
            ci.get("DS", "Defect Classification")
        );
    }

    #[test]
    fn an_images_questions_are_resampled_together() {
        // 2,000 images of 5 questions that are all right or all wrong: the effective
        // sample is the 2,000 images, not the 10,000 questions. Resampling questions
        // would give a half-width sqrt(5) times too small.
        let records = synthetic(2_000, 5, 1_400);
        let opts = ScoreOptions::default();
        let table = score(&records, opts);
        let ci = cell_intervals(&records, &table, opts, BootstrapOptions::default());
        let by_image = 1.96 * (0.21f64 / 2_000.0).sqrt() * 100.0;
        let got = half_width(&ci, "DS", "Defect Classification");
        assert!(
            (got - by_image).abs() < 0.1 * by_image,
            "{got} vs {by_image}"
        );
    }

    #[test]
    fn anomaly_detection_is_the_balanced_accuracy_interval() {
        // Normal accuracy 0.9 over 4,000 images, abnormal 0.6 over 4,000: the cell is
        // their mean, its standard error 0.5 * sqrt(0.09/4000 + 0.24/4000).
        let mut records = Vec::new();
        for i in 0..4_000 {
            records.push(rec(
                &format!("DS/cat/test/good/{i:05}.png"),
                ANOMALY_DETECTION,
                i % 10 != 0,
            ));
            records.push(rec(
                &format!("DS/cat/test/bad/{i:05}.png"),
                ANOMALY_DETECTION,
                i % 5 < 3,
            ));
        }
        let opts = ScoreOptions::default();
        let table = score(&records, opts);
        assert!((table.get("DS", ANOMALY_DETECTION).unwrap() - 75.0).abs() < 1e-9);
        let ci = cell_intervals(&records, &table, opts, BootstrapOptions::default());
        let want = 1.96 * 0.5 * ((0.09 + 0.24) / 4_000f64).sqrt() * 100.0;
        let got = half_width(&ci, "DS", ANOMALY_DETECTION);
        assert!((got - want).abs() < 0.1 * want, "{got} vs {want}");
    }

    #[test]
    fn the_same_seed_gives_the_same_interval_and_another_seed_another() {
        let records = synthetic(500, 2, 300);
        let opts = ScoreOptions::default();
        let table = score(&records, opts);
        let boot = BootstrapOptions::default();
        let a = cell_intervals(&records, &table, opts, boot);
        let b = cell_intervals(&records, &table, opts, boot);
        assert_eq!(a, b);
        let c = cell_intervals(&records, &table, opts, BootstrapOptions { seed: 7, ..boot });
        assert_ne!(a.bounds, c.bounds);
    }

    #[test]
    fn invalid_answers_stay_out_of_every_resample() {
        // All counted answers are right; the invalid ones would pull the interval
        // below 100 if a resample counted them.
        let mut records = synthetic(200, 1, 200);
        for i in 0..50 {
            let mut r = rec(
                &format!("DS/cat/test/bad/x{i}.png"),
                "Defect Classification",
                true,
            );
            r.gpt_answer = json!("no idea");
            records.push(r);
        }
        let opts = ScoreOptions::default();
        let table = score(&records, opts);
        let ci = cell_intervals(&records, &table, opts, BootstrapOptions::default());
        assert_eq!(ci.get("DS", "Defect Classification"), Some((100.0, 100.0)));
    }

    #[test]
    fn the_difference_of_two_runs_on_the_same_images_is_paired() {
        // B answers exactly what A answers plus 100 more images right (of 5,000):
        // the paired difference is +2 points and, because the shared answers cancel,
        // its interval is far narrower than either run's own.
        let a = synthetic(5_000, 1, 3_000);
        let mut b = a.clone();
        let mut flipped = 0;
        for r in b.iter_mut() {
            if r.gpt_answer == json!("B") && flipped < 100 {
                r.gpt_answer = json!("A");
                flipped += 1;
            }
        }
        let opts = ScoreOptions::default();
        let (ta, tb) = (score(&a, opts), score(&b, opts));
        let boot = BootstrapOptions::default();
        let d = paired_intervals((&a, &ta), (&b, &tb), opts, boot);
        let (lo, hi) = d[&("DS".to_string(), "Defect Classification".to_string())];
        assert!(lo > 0.0 && hi < 4.0 && lo < 2.0 && 2.0 < hi, "{lo} {hi}");
        // Only the 100 discordant images vary: sd of the mean of 100 ones among
        // 5,000 draws is sqrt(0.02 * 0.98 / 5000) = 0.198 points.
        let want = 1.96 * (0.02f64 * 0.98 / 5_000.0).sqrt() * 100.0;
        assert!(
            ((hi - lo) / 2.0 - want).abs() < 0.12 * want,
            "{lo} {hi} vs ±{want}"
        );
        let own = cell_intervals(&a, &ta, opts, boot);
        assert!(hi - lo < half_width(&own, "DS", "Defect Classification"));
    }
}
