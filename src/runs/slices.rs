//! A run cut finer than MMAD's table: per category, how often normal parts were
//! called defective (Overkill) and defects missed (Miss), and for Defect
//! Classification which defect was taken for which (a confusion matrix of option
//! texts). The table averages these away; a curator fixing one category's knowledge
//! needs them.

use indexmap::IndexMap;
use serde::Serialize;

use crate::dataset::{category_of, dataset_of};
use crate::runs::journal::JournalRecord;
use crate::score::{self, Tally};

/// What the chosen option of an answer without a letter MMAD counts is called.
pub const NO_LETTER: &str = "(no letter)";

/// One category's slice of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CategorySlice {
    /// Anomaly Detection on normal images: `wrong()` of it is the Overkill count.
    pub normal: Tally,
    /// Anomaly Detection on defective images: `wrong()` of it is the Miss count.
    pub abnormal: Tally,
    /// Defect Classification: true option text -> chosen option text -> questions.
    /// Rows and columns in order of first appearance.
    pub confusion: IndexMap<String, IndexMap<String, usize>>,
}

impl CategorySlice {
    /// Percent of normal parts called defective (MMAD's Overkill), `None` without any.
    pub fn overkill(&self) -> Option<f64> {
        (self.normal.total > 0).then(|| (1.0 - self.normal.accuracy()) * 100.0)
    }

    /// Percent of defective parts called normal (MMAD's Miss), `None` without any.
    pub fn miss(&self) -> Option<f64> {
        (self.abnormal.total > 0).then(|| (1.0 - self.abnormal.accuracy()) * 100.0)
    }

    /// Defect Classification questions, and how many were right.
    pub fn classification(&self) -> Tally {
        let mut t = Tally::default();
        for (truth, row) in &self.confusion {
            for (chosen, n) in row {
                t.total += n;
                if truth == chosen {
                    t.correct += n;
                }
            }
        }
        t
    }
}

/// Slices per `dataset/category`, in order of first appearance; error records are
/// left out (they have no answer), as are questions of other types.
pub fn category_slices(records: &[JournalRecord]) -> IndexMap<String, CategorySlice> {
    let mut out: IndexMap<String, CategorySlice> = IndexMap::new();
    for r in records.iter().filter(|r| r.is_ok()) {
        let is_ad = r.question_type == score::ANOMALY_DETECTION;
        let is_dc = r.question_type == "Defect Classification";
        if !is_ad && !is_dc {
            continue;
        }
        let key = format!("{}/{}", dataset_of(&r.image), category_of(&r.image));
        let slice = out.entry(key).or_default();
        let letter = r
            .gpt_answer
            .as_deref()
            .filter(|g| score::VALID_LETTERS.contains(g));
        if is_ad {
            // As MMAD's table: an answer without a letter is not counted.
            if letter.is_some() {
                let right = letter == Some(r.correct_answer.as_str());
                if r.image.contains(score::NORMAL_FLAG) {
                    slice.normal.add(right);
                } else {
                    slice.abnormal.add(right);
                }
            }
            continue;
        }
        let text = |l: &str| {
            r.question
                .options
                .get(l)
                .map(|t| t.trim().to_owned())
                .unwrap_or_else(|| format!("option {l}"))
        };
        let truth = text(&r.correct_answer);
        let chosen = letter.map_or_else(|| NO_LETTER.to_owned(), text);
        *slice
            .confusion
            .entry(truth)
            .or_default()
            .entry(chosen)
            .or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::journal::{AnswerQuestion, RecordStatus};

    fn rec(
        image: &str,
        qtype: &str,
        options: &[&str],
        correct: &str,
        given: Option<&str>,
    ) -> JournalRecord {
        let letters = ["A", "B", "C", "D", "E"];
        JournalRecord {
            image: image.into(),
            question: AnswerQuestion {
                kind: "text".into(),
                text: "q".into(),
                options: letters
                    .iter()
                    .zip(options)
                    .map(|(l, t)| ((*l).to_owned(), (*t).to_owned()))
                    .collect(),
            },
            question_type: qtype.into(),
            correct_answer: correct.into(),
            gpt_answer: given.map(Into::into),
            index: 0,
            turn: 0,
            status: if given.is_some() {
                RecordStatus::Ok
            } else {
                RecordStatus::Error
            },
            error: given.is_none().then(|| "HTTP 500".into()),
            raw: None,
            correct: given.map(|g| g == correct),
            attempts: 1,
            latency_ms: 1,
            usage: None,
            samples: Vec::new(),
            rotations: Vec::new(),
            confidence: None,
            endpoint: "e".into(),
            finished_at: String::new(),
            traces: Vec::new(),
        }
    }

    #[test]
    fn overkill_miss_and_confusion_per_category() {
        const YN: [&str; 2] = ["Yes.", "No."];
        let dc = ["Scratch", "Crack ", "Stain"];
        let records = vec![
            // bottle: 2 normal (1 called defective), 1 defective (missed).
            rec(
                "MV/bottle/test/good/0.png",
                "Anomaly Detection",
                &YN,
                "B",
                Some("B"),
            ),
            rec(
                "MV/bottle/test/good/1.png",
                "Anomaly Detection",
                &YN,
                "B",
                Some("A"),
            ),
            rec(
                "MV/bottle/test/crack/0.png",
                "Anomaly Detection",
                &YN,
                "A",
                Some("B"),
            ),
            rec(
                "MV/bottle/test/crack/0.png",
                "Defect Classification",
                &dc,
                "B",
                Some("B"),
            ),
            rec(
                "MV/bottle/test/crack/1.png",
                "Defect Classification",
                &dc,
                "B",
                Some("A"),
            ),
            rec(
                "MV/bottle/test/crack/2.png",
                "Defect Classification",
                &dc,
                "B",
                Some("maybe"),
            ),
            rec(
                "MV/bottle/test/stain/0.png",
                "Defect Classification",
                &dc,
                "C",
                None,
            ),
            // Not sliced: other types, and an AD answer without a letter.
            rec(
                "MV/bottle/test/crack/0.png",
                "Defect Localization",
                &YN,
                "A",
                Some("A"),
            ),
            rec(
                "MV/bottle/test/good/2.png",
                "Anomaly Detection",
                &YN,
                "B",
                Some("no"),
            ),
            // candle: only normal parts, all right.
            rec(
                "VisA/candle/test/good/0.JPG",
                "Anomaly Detection",
                &YN,
                "B",
                Some("B"),
            ),
        ];
        let s = category_slices(&records);
        assert_eq!(s.keys().collect::<Vec<_>>(), ["MV/bottle", "VisA/candle"]);
        let bottle = &s["MV/bottle"];
        assert_eq!(bottle.overkill(), Some(50.0));
        assert_eq!(bottle.miss(), Some(100.0));
        // Option texts trimmed; the wrong pick and the unreadable one each a column.
        let crack = &bottle.confusion["Crack"];
        assert_eq!(crack["Crack"], 1);
        assert_eq!(crack["Scratch"], 1);
        assert_eq!(crack[NO_LETTER], 1);
        assert!(
            !bottle.confusion.contains_key("Stain"),
            "errors have no answer"
        );
        assert_eq!(
            bottle.classification(),
            Tally {
                correct: 1,
                total: 3
            }
        );
        let candle = &s["VisA/candle"];
        assert_eq!((candle.overkill(), candle.miss()), (Some(0.0), None));
        assert!(candle.confusion.is_empty());
    }
}
