//! Figures the papers published, shown beside a run's own for reference. They are
//! never mixed into a run's numbers: the chart outlines them and labels each with
//! its source.
//!
//! Cells are (dataset row as MMAD names it, subtask column, value); a row of
//! [`AVERAGE`] means over all of MMAD (its 1-shot protocol). `average` is the
//! seven-subtask average a paper reports for all of MMAD.

use super::AVERAGE;

/// A published set of accuracies, labelled with where it was published.
pub struct PublishedSet {
    pub label: &'static str,
    /// (dataset row, subtask column, value).
    pub cells: &'static [(&'static str, &'static str, f64)],
    /// The average over MMAD's seven subtasks, where the source gives it.
    pub average: Option<f64>,
}

const AD: &str = "Anomaly Detection";
const DC: &str = "Defect Classification";
const DL: &str = "Defect Localization";
const DD: &str = "Defect Description";
const DA: &str = "Defect Analysis";
const OC: &str = "Object Classification";
const OA: &str = "Object Analysis";
const MV: &str = "DS-MVTec";
const VISA: &str = "VisA";

/// The Echo paper's tables (MMAD's DS-MVTec and VisA, five anomaly subtasks), MMAD's
/// own rows, people, and the best published models we can cite.
pub const PUBLISHED: [PublishedSet; 9] = [
    PublishedSet {
        label: "Qwen2-VL-7B + Echo (Echo paper)",
        cells: &[
            (MV, AD, 89.65),
            (MV, DC, 72.86),
            (MV, DL, 76.11),
            (MV, DD, 85.57),
            (MV, DA, 93.20),
            (VISA, AD, 76.79),
            (VISA, DC, 62.35),
            (VISA, DL, 63.41),
            (VISA, DD, 74.03),
            (VISA, DA, 79.11),
        ],
        average: None,
    },
    PublishedSet {
        label: "Qwen2-VL-7B without Echo (Echo paper)",
        cells: &[
            (MV, AD, 82.26),
            (MV, DC, 68.46),
            (MV, DL, 76.11),
            (MV, DD, 82.19),
            (MV, DA, 92.28),
            (VISA, AD, 73.00),
            (VISA, DC, 57.06),
            (VISA, DL, 63.41),
            (VISA, DD, 74.71),
            (VISA, DA, 77.82),
        ],
        average: None,
    },
    PublishedSet {
        label: "Qwen2-VL-7B 1-shot (MMAD paper)",
        cells: &[(MV, AD, 85.45), (VISA, AD, 71.94)],
        average: Some(73.38),
    },
    PublishedSet {
        label: "Human expert (MMAD paper)",
        cells: &[
            (AVERAGE, AD, 95.24),
            (AVERAGE, DC, 75.00),
            (AVERAGE, DL, 92.31),
            (AVERAGE, DD, 83.33),
            (AVERAGE, DA, 94.20),
            (AVERAGE, OC, 86.11),
            (AVERAGE, OA, 80.37),
        ],
        average: Some(86.65),
    },
    PublishedSet {
        label: "Ordinary human (MMAD paper)",
        cells: &[],
        average: Some(78.69),
    },
    PublishedSet {
        label: "GPT-4o 1-shot (MMAD paper)",
        cells: &[],
        average: Some(74.92),
    },
    PublishedSet {
        label: "Qwen2.5-VL-7B 1-shot (MMAD repository's CSV)",
        cells: &[],
        average: Some(72.19),
    },
    PublishedSet {
        label: "Gemini-2.5-pro (JUDO paper's table)",
        cells: &[],
        average: Some(81.19),
    },
    PublishedSet {
        label: "Random choice (MMAD paper)",
        cells: &[],
        average: Some(28.57),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_set_says_where_it_was_published_and_holds_percentages() {
        for set in &PUBLISHED {
            assert!(set.label.ends_with(')'), "{}: no source", set.label);
            assert!(
                !set.cells.is_empty() || set.average.is_some(),
                "{}",
                set.label
            );
            for (_, _, v) in set.cells {
                assert!((0.0..=100.0).contains(v), "{}", set.label);
            }
        }
        // The human expert's average is the mean of its seven subtasks (to the
        // paper's rounding).
        let expert = &PUBLISHED[3];
        let mean = expert.cells.iter().map(|c| c.2).sum::<f64>() / 7.0;
        assert!((mean - expert.average.unwrap()).abs() < 0.01, "{mean}");
    }
}
