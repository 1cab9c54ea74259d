//! The few pandas operations summary.py's table goes through, reproduced to the last
//! digit: cells set one by one (columns and rows created on first use), row means
//! summed in order, column means summed pairwise as numpy does.

use indexmap::IndexMap;

use super::{
    ANOMALY_DETECTION, AVERAGE, DatasetCounts, F1, MISS, OVERKILL, PRECISION, RECALL, ScoreOptions,
    ratio,
};

/// Fill the table cell by cell in summary.py's order, with pandas' enlargement rules.
pub(super) fn build_frame(counts: &IndexMap<String, DatasetCounts>, opts: ScoreOptions) -> Frame {
    let mut frame = Frame::with_index(counts.keys().cloned().collect());
    for (row, ds) in counts.values().enumerate() {
        for (column, tally) in &ds.columns {
            let value = if column == ANOMALY_DETECTION {
                (ds.normal.accuracy() + ds.abnormal.accuracy()) / 2.0 * 100.0
            } else {
                tally.accuracy() * 100.0
            };
            frame.set(row, column, value);
        }
    }

    let row_means: Vec<f64> = frame
        .cells
        .iter()
        .map(|r| pandas_mean(r, SumOrder::InOrder))
        .collect();
    frame.set_column(AVERAGE, row_means);

    for (row, ds) in counts.values().enumerate() {
        if opts.detection_metrics {
            let (tp, fp, fn_, _) = ds.confusion();
            let precision = ratio(tp, tp + fp);
            let recall = ratio(tp, tp + fn_);
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            frame.set(row, RECALL, recall * 100.0);
            frame.set(row, PRECISION, precision * 100.0);
            frame.set(row, F1, f1 * 100.0);
        }
        if opts.overkill_miss {
            frame.set(row, OVERKILL, (1.0 - ds.normal.accuracy()) * 100.0);
            frame.set(row, MISS, (1.0 - ds.abnormal.accuracy()) * 100.0);
        }
    }

    let column_means: Vec<f64> = (0..frame.columns.len())
        .map(|c| {
            let column: Vec<f64> = frame.cells.iter().map(|r| r[c]).collect();
            pandas_mean(&column, SumOrder::Pairwise)
        })
        .collect();
    frame.set_row(AVERAGE, column_means);
    frame
}

/// How pandas adds up the values it averages; the two orders can differ in the last
/// digit, which shows in the CSV. Measured against pandas 2.2 and 3.1 on numpy 2.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SumOrder {
    /// Left to right: `DataFrame.mean(axis=1)`, whose reduction runs across columns.
    /// (pandas 2.x alone sums pairwise when the frame has a single row; that differs
    /// from this by at most an ulp, and only with 8 or more question types.)
    InOrder,
    /// numpy's pairwise summation: `DataFrame.mean()` down one column, which numpy
    /// reduces as a contiguous array.
    Pairwise,
}

/// pandas' `mean` with its default `skipna=True`: NaN cells count as 0 in the sum and are
/// left out of the divisor; NaN when every cell is NaN (or there are none).
pub(super) fn pandas_mean(values: &[f64], order: SumOrder) -> f64 {
    let filled: Vec<f64> = values
        .iter()
        .map(|&v| if v.is_nan() { 0.0 } else { v })
        .collect();
    let n = values.iter().filter(|v| !v.is_nan()).count();
    if n == 0 {
        return f64::NAN;
    }
    let sum = match order {
        SumOrder::InOrder => filled.iter().fold(0.0, |s, v| s + v),
        SumOrder::Pairwise => numpy_pairwise_sum(&filled),
    };
    sum / n as f64
}

/// numpy's `pairwise_sum` for float64: in order below 8 values, eight interleaved
/// partial sums up to 128, halves (split at a multiple of 8) above that.
pub(super) fn numpy_pairwise_sum(a: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        a.iter().fold(-0.0, |s, v| s + v)
    } else if n <= BLOCK {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let whole = n - n % 8;
        for chunk in a[8..whole].chunks_exact(8) {
            for (acc, v) in r.iter_mut().zip(chunk) {
                *acc += v;
            }
        }
        let head = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        a[whole..].iter().fold(head, |s, v| s + v)
    } else {
        let half = n / 2;
        let half = half - half % 8;
        numpy_pairwise_sum(&a[..half]) + numpy_pairwise_sum(&a[half..])
    }
}

/// The few DataFrame operations summary.py relies on.
pub(super) struct Frame {
    pub(super) columns: Vec<String>,
    pub(super) index: Vec<String>,
    pub(super) cells: Vec<Vec<f64>>,
}

impl Frame {
    fn with_index(index: Vec<String>) -> Self {
        let cells = vec![Vec::new(); index.len()];
        Self {
            columns: Vec::new(),
            index,
            cells,
        }
    }

    fn column_position(&mut self, name: &str) -> usize {
        if let Some(pos) = self.columns.iter().position(|c| c == name) {
            return pos;
        }
        // `df.at[row, new_column] = v` adds the column with NaN elsewhere.
        self.columns.push(name.to_owned());
        for row in &mut self.cells {
            row.push(f64::NAN);
        }
        self.columns.len() - 1
    }

    fn set(&mut self, row: usize, column: &str, value: f64) {
        let c = self.column_position(column);
        self.cells[row][c] = value;
    }

    /// `df[name] = values`: replaces an existing column in place, else appends.
    fn set_column(&mut self, name: &str, values: Vec<f64>) {
        let c = self.column_position(name);
        for (row, v) in self.cells.iter_mut().zip(values) {
            row[c] = v;
        }
    }

    /// `df.loc[name] = values`: replaces an existing row in place, else appends.
    fn set_row(&mut self, name: &str, values: Vec<f64>) {
        match self.index.iter().position(|r| r == name) {
            Some(r) => self.cells[r] = values,
            None => {
                self.index.push(name.to_owned());
                self.cells.push(values);
            }
        }
    }
}
