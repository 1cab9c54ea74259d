//! How far a run's confidence can be trusted: reliability bins, expected calibration
//! error and the abstain curve, for the run and per subtask column.
//!
//! **An answer's confidence** is read off its record's [`Confidence`]:
//! - `letter_probs` (the server's probabilities of the option letters): the
//!   probability of the letter the answer chose; a chosen letter the server gave no
//!   probability counts as 0 (the model put no mass on it);
//! - `agreement` (the share of samples or rotations that picked the answer).
//!
//! [`ConfidenceSource::Auto`] prefers the letter probability and falls back to
//! agreement, because a probability says something about one reply where agreement
//! over a few samples moves in coarse steps (1/N). A caller may insist on either.
//! Answers without the chosen source are left out and counted.
//!
//! **Reliability bins**: ten equal-width bins over [0, 1] (the last one closed, so a
//! confidence of 1.0 falls in it); each holds its answers' count, mean confidence and
//! accuracy. **ECE** is the standard binned estimate, `sum_b n_b / N * |acc_b -
//! conf_b|`. **The abstain curve** keeps answers whose confidence is at least a
//! threshold and sends the rest to a person: per threshold, the share kept
//! (coverage), the accuracy of what is kept and how many go to a person.
//!
//! Errors and records without a stored answer are left out: they have no answer
//! to be confident in. A question recorded twice (a retried error) counts once, its
//! last record, as scoring reads a journal.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::Serialize;

use crate::runs::journal::{Confidence, JournalRecord};
use crate::score::merged_question_type;

/// Number of equal-width reliability bins.
pub const BINS: usize = 10;

/// Thresholds of the abstain curve: 0, 0.05, ..., 1.
pub const CURVE_STEPS: usize = 20;

/// Which of a record's confidences is an answer's confidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfidenceSource {
    /// The letter probability when the record has one, else the agreement.
    #[default]
    Auto,
    /// Only the letter probability.
    Probs,
    /// Only the agreement over samples or rotations.
    Agreement,
}

impl ConfidenceSource {
    pub const ALL: [ConfidenceSource; 3] = [
        ConfidenceSource::Auto,
        ConfidenceSource::Probs,
        ConfidenceSource::Agreement,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ConfidenceSource::Auto => "auto",
            ConfidenceSource::Probs => "probs",
            ConfidenceSource::Agreement => "agreement",
        }
    }
}

/// The confidence of the answer `chosen` (a letter), or `None` when `source` has
/// nothing for it. Out-of-range values are clamped to [0, 1]; a NaN counts as none.
pub fn answer_confidence(c: &Confidence, chosen: &str, source: ConfidenceSource) -> Option<f64> {
    let from_probs = || {
        c.letter_probs
            .as_ref()
            .map(|p| p.get(chosen.trim()).copied().unwrap_or(0.0))
    };
    let value = match source {
        ConfidenceSource::Probs => from_probs(),
        ConfidenceSource::Agreement => c.agreement,
        ConfidenceSource::Auto => from_probs().or(c.agreement),
    }?;
    (!value.is_nan()).then(|| value.clamp(0.0, 1.0))
}

/// One reliability bin, `[low, high)` (the last one `[0.9, 1.0]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bin {
    pub low: f64,
    pub high: f64,
    pub count: usize,
    /// `None` for an empty bin.
    pub mean_confidence: Option<f64>,
    pub accuracy: Option<f64>,
}

/// The abstain curve at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AbstainPoint {
    pub threshold: f64,
    /// Answers with confidence >= threshold.
    pub kept: usize,
    /// Answers below it: "for a person".
    pub for_person: usize,
    /// `kept / answers`.
    pub coverage: f64,
    /// Accuracy of the kept answers; `None` when none is kept.
    pub accuracy: Option<f64>,
}

/// Calibration of one set of answers (the run or one subtask).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reliability {
    pub answers: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub mean_confidence: f64,
    pub ece: f64,
    pub bins: Vec<Bin>,
    pub abstain: Vec<AbstainPoint>,
    /// (confidence, right) sorted by confidence, for [`Reliability::abstain_at`].
    #[serde(skip)]
    points: Vec<(f64, bool)>,
}

impl Reliability {
    /// `None` for no answers.
    pub fn of(mut points: Vec<(f64, bool)>) -> Option<Reliability> {
        if points.is_empty() {
            return None;
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let n = points.len();
        let mut sums = [(0usize, 0.0f64, 0usize); BINS];
        for &(c, right) in &points {
            let b = ((c * BINS as f64).floor() as usize).min(BINS - 1);
            sums[b].0 += 1;
            sums[b].1 += c;
            sums[b].2 += usize::from(right);
        }
        let bins: Vec<Bin> = sums
            .iter()
            .enumerate()
            .map(|(i, &(count, conf, right))| Bin {
                low: i as f64 / BINS as f64,
                high: (i + 1) as f64 / BINS as f64,
                count,
                mean_confidence: (count > 0).then(|| conf / count as f64),
                accuracy: (count > 0).then(|| right as f64 / count as f64),
            })
            .collect();
        let ece = bins
            .iter()
            .filter_map(|b| {
                let gap = (b.accuracy? - b.mean_confidence?).abs();
                Some(b.count as f64 / n as f64 * gap)
            })
            .sum();
        let correct = points.iter().filter(|p| p.1).count();
        let mut r = Reliability {
            answers: n,
            correct,
            accuracy: correct as f64 / n as f64,
            mean_confidence: points.iter().map(|p| p.0).sum::<f64>() / n as f64,
            ece,
            bins,
            abstain: Vec::new(),
            points,
        };
        r.abstain = (0..=CURVE_STEPS)
            .map(|i| r.abstain_at(i as f64 / CURVE_STEPS as f64))
            .collect();
        Some(r)
    }

    /// Keep the answers with confidence >= `threshold`, the rest for a person.
    pub fn abstain_at(&self, threshold: f64) -> AbstainPoint {
        let below = self.points.partition_point(|p| p.0 < threshold);
        let kept = &self.points[below..];
        let right = kept.iter().filter(|p| p.1).count();
        AbstainPoint {
            threshold,
            kept: kept.len(),
            for_person: below,
            coverage: kept.len() as f64 / self.answers as f64,
            accuracy: (!kept.is_empty()).then(|| right as f64 / kept.len() as f64),
        }
    }
}

/// A run's calibration: overall and per subtask column (the score table's names).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub source: ConfidenceSource,
    pub all: Reliability,
    pub per_subtask: IndexMap<String, Reliability>,
    /// Answers left out because `source` gave them no confidence.
    pub without_confidence: usize,
}

impl Calibration {
    /// `None` when no answer has a confidence from `source` (a plain run).
    pub fn of(records: &[JournalRecord], source: ConfidenceSource) -> Option<Calibration> {
        let mut latest: BTreeMap<usize, &JournalRecord> = BTreeMap::new();
        for r in records {
            latest.insert(r.index, r);
        }
        let mut all = Vec::new();
        let mut per: IndexMap<String, Vec<(f64, bool)>> = IndexMap::new();
        let mut without_confidence = 0;
        for r in latest.values() {
            let Some(chosen) = r.gpt_answer.as_deref().filter(|_| r.is_ok()) else {
                continue;
            };
            let confidence = r
                .confidence
                .as_ref()
                .and_then(|c| answer_confidence(c, chosen, source));
            let Some(confidence) = confidence else {
                without_confidence += 1;
                continue;
            };
            let point = (confidence, r.correct == Some(true));
            all.push(point);
            per.entry(merged_question_type(&r.question_type).to_owned())
                .or_default()
                .push(point);
        }
        Some(Calibration {
            source,
            all: Reliability::of(all)?,
            per_subtask: per
                .into_iter()
                .filter_map(|(k, v)| Reliability::of(v).map(|r| (k, r)))
                .collect(),
            without_confidence,
        })
    }
}

/// What to tell a person when a run has no confidence to calibrate.
pub const NO_CONFIDENCE: &str = "this run records no confidence for its answers: run it with --samples, --circular or --logprobs to get one";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::test_support::record;

    fn conf(agreement: Option<f64>, probs: &[(&str, f64)]) -> Confidence {
        Confidence {
            agreement,
            letter_probs: (!probs.is_empty())
                .then(|| probs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()),
        }
    }

    /// `n` answers of `qtype` at confidence `c` (by agreement), `right` of them right.
    fn answers(start: usize, qtype: &str, n: usize, right: usize, c: f64) -> Vec<JournalRecord> {
        (0..n)
            .map(|i| {
                let given = if i < right { "A" } else { "B" };
                let mut r = record(start + i, "DS/c/test/bad/0.png", qtype, "A", Some(given));
                r.confidence = Some(conf(Some(c), &[]));
                r
            })
            .collect()
    }

    #[test]
    fn always_certain_at_seventy_percent_has_ece_point_three() {
        let records = answers(0, "Defect Classification", 100, 70, 1.0);
        let c = Calibration::of(&records, ConfidenceSource::Auto).unwrap();
        assert!((c.all.ece - 0.3).abs() < 1e-12, "{}", c.all.ece);
        assert_eq!(c.all.bins[9].count, 100, "1.0 falls in the last bin");
        assert_eq!(c.all.bins[9].accuracy, Some(0.7));
        assert!(c.all.bins[..9].iter().all(|b| b.count == 0));
    }

    #[test]
    fn a_perfectly_calibrated_run_has_ece_zero() {
        // In bin b (centre (b + 0.5) / 10), 20 answers at that confidence, of which
        // exactly that share is right: accuracy equals confidence in every bin.
        let mut records = Vec::new();
        for b in 0..BINS {
            let c = (b as f64 + 0.5) / 10.0;
            let right = (c * 20.0).round() as usize;
            records.extend(answers(b * 100, "Defect Localization", 20, right, c));
        }
        let cal = Calibration::of(&records, ConfidenceSource::Agreement).unwrap();
        assert!(cal.all.ece.abs() < 1e-12, "{}", cal.all.ece);
        assert!(cal.all.bins.iter().all(|b| b.count == 20));
        assert_eq!(cal.all.answers, 200);
    }

    #[test]
    fn ece_weights_each_bin_by_its_count() {
        // 30 answers at 0.9 all right (gap 0.1), 10 at 0.25 none right (gap 0.25):
        // 30/40 * 0.1 + 10/40 * 0.25 = 0.1375.
        let mut records = answers(0, "Object Analysis", 30, 30, 0.9);
        records.extend(answers(100, "Object Analysis", 10, 0, 0.25));
        let c = Calibration::of(&records, ConfidenceSource::Auto).unwrap();
        assert!((c.all.ece - 0.1375).abs() < 1e-12);
        assert_eq!(c.all.bins[2].mean_confidence, Some(0.25));
        assert_eq!(c.all.bins[9].count, 30);
    }

    #[test]
    fn abstain_curve_keeps_answers_at_or_above_the_threshold() {
        // 10 at 0.9 (9 right), 10 at 0.6 (5 right), 10 at 0.3 (1 right).
        let mut records = answers(0, "Defect Classification", 10, 9, 0.9);
        records.extend(answers(100, "Defect Classification", 10, 5, 0.6));
        records.extend(answers(200, "Defect Classification", 10, 1, 0.3));
        let c = Calibration::of(&records, ConfidenceSource::Auto).unwrap();
        let at = |t| c.all.abstain_at(t);
        assert_eq!(
            at(0.0),
            AbstainPoint {
                threshold: 0.0,
                kept: 30,
                for_person: 0,
                coverage: 1.0,
                accuracy: Some(15.0 / 30.0)
            }
        );
        let p = at(0.6);
        assert_eq!((p.kept, p.for_person), (20, 10), "0.6 itself is kept");
        assert!((p.coverage - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(p.accuracy, Some(14.0 / 20.0));
        let p = at(0.95);
        assert_eq!((p.kept, p.for_person, p.accuracy), (0, 30, None));
        // The stored curve is the same function at 0, 0.05, ..., 1.
        assert_eq!(c.all.abstain.len(), CURVE_STEPS + 1);
        assert_eq!(c.all.abstain[12], at(0.6));
    }

    #[test]
    fn letter_probability_wins_over_agreement_unless_asked_otherwise() {
        let mut r = record(
            0,
            "DS/c/test/bad/0.png",
            "Defect Classification",
            "A",
            Some("B"),
        );
        r.confidence = Some(conf(Some(0.8), &[("A", 0.35), ("B", 0.65)]));
        let c = r.confidence.as_ref().unwrap();
        assert_eq!(
            answer_confidence(c, "B", ConfidenceSource::Auto),
            Some(0.65)
        );
        assert_eq!(
            answer_confidence(c, "B", ConfidenceSource::Probs),
            Some(0.65)
        );
        assert_eq!(
            answer_confidence(c, "B", ConfidenceSource::Agreement),
            Some(0.8)
        );
        assert_eq!(
            answer_confidence(c, "C", ConfidenceSource::Probs),
            Some(0.0)
        );
        let only_agreement = conf(Some(0.5), &[]);
        assert_eq!(
            answer_confidence(&only_agreement, "A", ConfidenceSource::Auto),
            Some(0.5)
        );
        assert_eq!(
            answer_confidence(&only_agreement, "A", ConfidenceSource::Probs),
            None
        );
        assert_eq!(
            answer_confidence(&conf(Some(f64::NAN), &[]), "A", ConfidenceSource::Auto),
            None
        );
        assert_eq!(
            answer_confidence(&conf(Some(1.5), &[]), "A", ConfidenceSource::Auto),
            Some(1.0)
        );
    }

    #[test]
    fn per_subtask_errors_and_missing_confidence() {
        let mut records = answers(0, "Object Structure", 4, 4, 0.75);
        records.extend(answers(10, "Object Details", 4, 0, 0.75));
        records.extend(answers(20, "Anomaly Detection", 2, 1, 0.5));
        records.push(record(
            30,
            "DS/c/test/bad/1.png",
            "Anomaly Detection",
            "A",
            None,
        ));
        records.push(record(
            31,
            "DS/c/test/bad/1.png",
            "Anomaly Detection",
            "A",
            Some("A"),
        ));
        let c = Calibration::of(&records, ConfidenceSource::Auto).unwrap();
        assert_eq!(c.without_confidence, 1, "the error is not an answer");
        assert_eq!(c.all.answers, 10);
        let oa = &c.per_subtask["Object Analysis"];
        assert_eq!((oa.answers, oa.correct), (8, 4));
        assert!((oa.ece - 0.25).abs() < 1e-12);
        assert_eq!(c.per_subtask["Anomaly Detection"].answers, 2);
        // A plain run has nothing to calibrate.
        let plain = vec![record(
            0,
            "DS/c/test/bad/0.png",
            "Anomaly Detection",
            "A",
            Some("A"),
        )];
        assert!(Calibration::of(&plain, ConfidenceSource::Auto).is_none());
        assert!(Calibration::of(&records, ConfidenceSource::Probs).is_none());
    }

    #[test]
    fn a_retried_question_counts_once_by_its_last_record() {
        let mut first = answers(0, "Anomaly Detection", 1, 0, 0.9);
        let again = answers(0, "Anomaly Detection", 1, 1, 0.9);
        first.extend(again);
        let c = Calibration::of(&first, ConfidenceSource::Auto).unwrap();
        assert_eq!((c.all.answers, c.all.correct), (1, 1));
    }
}
