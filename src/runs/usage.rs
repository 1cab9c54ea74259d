//! What a run cost: latency percentiles of the answered questions, for the whole run
//! and per subtask, read off the journal's `latency_ms` (the whole call: waiting for
//! a slot, encoding images, retries), and the tokens the servers reported, with
//! their price when one is given.

use indexmap::IndexMap;
use serde::Serialize;

use crate::mllm::Usage;
use crate::runs::journal::JournalRecord;
use crate::runs::manifest::RunManifest;
use crate::score::merged_question_type;
use crate::score::stats::quantile_sorted;

/// Latency of a set of questions, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub questions: usize,
    /// Median and 95th percentile (numpy's linear interpolation).
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: u64,
}

impl Latency {
    fn of(mut values: Vec<u64>) -> Option<Latency> {
        values.sort_unstable();
        let max_ms = *values.last()?;
        let sorted: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        Some(Latency {
            questions: values.len(),
            p50_ms: quantile_sorted(&sorted, 0.5)?,
            p95_ms: quantile_sorted(&sorted, 0.95)?,
            max_ms,
        })
    }
}

/// Latency over the run's answered questions and per subtask column (errors are
/// left out: their time is retries and timeouts, not answering).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunLatency {
    pub all: Option<Latency>,
    pub per_subtask: IndexMap<String, Latency>,
}

pub fn run_latency(records: &[JournalRecord]) -> RunLatency {
    let answered = records.iter().filter(|r| r.is_ok());
    let mut per: IndexMap<String, Vec<u64>> = IndexMap::new();
    let mut all = Vec::new();
    for r in answered {
        all.push(r.latency_ms);
        per.entry(merged_question_type(&r.question_type).to_owned())
            .or_default()
            .push(r.latency_ms);
    }
    RunLatency {
        all: Latency::of(all),
        per_subtask: per
            .into_iter()
            .filter_map(|(k, v)| Latency::of(v).map(|l| (k, l)))
            .collect(),
    }
}

/// Tokens over a set of questions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Tokens {
    /// Questions whose record reports usage (servers may not send it).
    pub questions: usize,
    pub prompt: u64,
    pub completion: u64,
}

impl Tokens {
    fn add(&mut self, u: Usage) {
        self.questions += 1;
        self.prompt += u.prompt_tokens;
        self.completion += u.completion_tokens;
    }

    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }

    /// Cost at `price`, in the price's currency.
    pub fn cost(&self, price: Price) -> f64 {
        price.cost(Usage {
            prompt_tokens: self.prompt,
            completion_tokens: self.completion,
        })
    }
}

pub use crate::mllm::Price;

/// Tokens of every record that reports usage (errors included: a failed call may
/// still have been billed), for the run and per subtask column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunTokens {
    pub all: Tokens,
    pub per_subtask: IndexMap<String, Tokens>,
}

pub fn run_tokens(records: &[JournalRecord]) -> RunTokens {
    let mut all = Tokens::default();
    let mut per: IndexMap<String, Tokens> = IndexMap::new();
    for r in records {
        let Some(u) = r.usage else { continue };
        all.add(u);
        per.entry(merged_question_type(&r.question_type).to_owned())
            .or_default()
            .add(u);
    }
    RunTokens {
        all,
        per_subtask: per,
    }
}

/// What the run's reported tokens cost at the price of the endpoint that answered
/// each record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunCost {
    pub total: f64,
    pub per_subtask: IndexMap<String, f64>,
}

/// `None` when a record that reports tokens came from an endpoint without a price
/// (a partial sum would pass for the whole cost).
pub fn run_cost(
    records: &[JournalRecord],
    price_of: impl Fn(&str) -> Option<Price>,
) -> Option<RunCost> {
    let mut total = 0.0;
    let mut per: IndexMap<String, f64> = IndexMap::new();
    for r in records {
        let Some(u) = r.usage else { continue };
        let cost = price_of(&r.endpoint)?.cost(u);
        total += cost;
        *per.entry(merged_question_type(&r.question_type).to_owned())
            .or_default() += cost;
    }
    Some(RunCost {
        total,
        per_subtask: per,
    })
}

/// The price a manifest records for endpoint `name`; a record from an endpoint the
/// manifest no longer lists (a forced resume under other endpoints) takes the first
/// endpoint's.
pub fn manifest_price(m: &RunManifest, name: &str) -> Option<Price> {
    m.endpoints
        .iter()
        .find(|e| e.name == name)
        .or_else(|| m.endpoints.first())?
        .price
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::journal::{AnswerQuestion, RecordStatus};

    fn rec(qtype: &str, latency_ms: u64, ok: bool) -> JournalRecord {
        JournalRecord {
            image: "DS/cat/test/bad/0.png".into(),
            question: AnswerQuestion {
                kind: "text".into(),
                text: "q".into(),
                options: Default::default(),
            },
            question_type: qtype.into(),
            correct_answer: "A".into(),
            gpt_answer: ok.then(|| "A".into()),
            index: 0,
            turn: 0,
            status: if ok {
                RecordStatus::Ok
            } else {
                RecordStatus::Error
            },
            error: (!ok).then(|| "HTTP 500".into()),
            raw: None,
            correct: ok.then_some(true),
            attempts: 1,
            latency_ms,
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
    fn percentiles_per_run_and_subtask_leave_errors_out() {
        let mut records: Vec<JournalRecord> = (1..=100)
            .map(|ms| rec("Defect Classification", ms * 10, true))
            .collect();
        records.push(rec("Object Details", 7, true));
        records.push(rec("Object Structure", 9, true));
        records.push(rec("Defect Classification", 60_000, false));
        let l = run_latency(&records);
        let dc = l.per_subtask["Defect Classification"];
        // numpy.percentile(range(10, 1001, 10), [50, 95]) = [505, 950.5]
        assert_eq!(
            (dc.questions, dc.p50_ms, dc.p95_ms, dc.max_ms),
            (100, 505.0, 950.5, 1000)
        );
        // Object Structure and Details are one column, as in the score table.
        let oa = l.per_subtask["Object Analysis"];
        assert_eq!((oa.questions, oa.p50_ms, oa.max_ms), (2, 8.0, 9));
        let all = l.all.unwrap();
        assert_eq!(all.questions, 102);
        assert_eq!(
            all.max_ms, 1000,
            "the error's 60 s is not an answer's latency"
        );
        assert!(run_latency(&[]).all.is_none());
    }

    #[test]
    fn tokens_add_up_per_subtask_and_price_per_million() {
        let mut records = vec![
            rec("Defect Classification", 10, true),
            rec("Defect Classification", 10, true),
            rec("Object Details", 10, true),
            rec("Defect Classification", 10, false),
        ];
        records[0].usage = Some(Usage {
            prompt_tokens: 1_000,
            completion_tokens: 10,
        });
        records[2].usage = Some(Usage {
            prompt_tokens: 500,
            completion_tokens: 5,
        });
        records[3].usage = Some(Usage {
            prompt_tokens: 1_000,
            completion_tokens: 0,
        });
        let t = run_tokens(&records);
        assert_eq!(
            (t.all.questions, t.all.prompt, t.all.completion),
            (3, 2_500, 15)
        );
        assert_eq!(t.per_subtask["Defect Classification"].prompt, 2_000);
        assert_eq!(t.per_subtask["Object Analysis"].total(), 505);
        let price = Price {
            prompt_per_million: 2.5,
            completion_per_million: 10.0,
        };
        // 2,500 * 2.5 / 1e6 + 15 * 10 / 1e6
        assert!((t.all.cost(price) - 0.00640).abs() < 1e-12);

        // Per endpoint: the last record came from a dearer one.
        records[3].endpoint = "dear".into();
        let dear = Price {
            prompt_per_million: 10.0,
            completion_per_million: 10.0,
        };
        let c = run_cost(&records, |e| Some(if e == "dear" { dear } else { price })).unwrap();
        // 1,500 * 2.5 + 15 * 10 at the first price, 1,000 * 10 at the dear one.
        assert!((c.total - (3_900.0 + 10_000.0) / 1e6).abs() < 1e-12);
        assert!((c.per_subtask["Object Analysis"] - (500.0 * 2.5 + 50.0) / 1e6).abs() < 1e-12);
        assert!(run_cost(&records, |e| (e != "dear").then_some(price)).is_none());
    }

    #[test]
    fn a_manifest_prices_records_by_endpoint_name() {
        let mut m = crate::runs::test_support::manifest(1);
        assert_eq!(manifest_price(&m, "local"), None);
        let price = Price {
            prompt_per_million: 1.0,
            completion_per_million: 2.0,
        };
        m.endpoints[0].price = Some(price);
        assert_eq!(manifest_price(&m, "local"), Some(price));
        assert_eq!(manifest_price(&m, "gone"), Some(price));
    }
}
