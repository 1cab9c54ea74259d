//! How the mock misbehaves on request: which fault each request gets.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One way to answer (or not answer) a chat request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// No fault: answer normally.
    #[default]
    Pass,
    /// HTTP 500 with a JSON error body.
    Http500,
    /// HTTP 429, with `Retry-After: N` when given.
    Http429 { retry_after_s: Option<u64> },
    /// Any other status, with a JSON error body.
    Status(u16),
    /// HTTP 200 with a body that is not JSON.
    Garbage,
    /// A well-formed completion whose content is the empty string.
    EmptyContent,
    /// Never answers (until the server stops): the client must time out.
    Hang,
    /// Closes the connection without a response.
    Drop,
}

/// Which chat requests fail, and how. Requests are numbered from 0 in arrival
/// order (invalid requests, answered 400 at once, are not counted).
///
/// Request `n` gets `script[n]` while the script lasts, then `then`; when `then` is
/// [`Fault::Pass`], a fault is drawn from `rates` (probabilities, summing to at most
/// 1, from a generator seeded with `seed` so runs repeat).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    pub script: Vec<Fault>,
    pub then: Fault,
    pub rates: Vec<(Fault, f64)>,
    pub seed: u64,
}

impl FaultPlan {
    /// Every request answered normally.
    pub fn none() -> Self {
        Self::default()
    }
    /// These faults for the first requests, in order; normal answers afterwards.
    pub fn script(faults: impl IntoIterator<Item = Fault>) -> Self {
        FaultPlan {
            script: faults.into_iter().collect(),
            ..Self::default()
        }
    }
    /// The same fault for every request.
    pub fn always(fault: Fault) -> Self {
        FaultPlan {
            then: fault,
            ..Self::default()
        }
    }
    /// Each request independently gets a fault with the given probabilities.
    pub fn random(rates: Vec<(Fault, f64)>, seed: u64) -> Self {
        FaultPlan {
            rates,
            seed,
            ..Self::default()
        }
    }

    pub(super) fn pick(&self, n: usize, rng: &Mutex<fastrand::Rng>) -> Fault {
        if let Some(f) = self.script.get(n) {
            return f.clone();
        }
        if self.then != Fault::Pass || self.rates.is_empty() {
            return self.then.clone();
        }
        let draw = rng.lock().map_or(1.0, |mut r| r.f64());
        let mut acc = 0.0;
        for (fault, p) in &self.rates {
            acc += p;
            if draw < acc {
                return fault.clone();
            }
        }
        Fault::Pass
    }
}
