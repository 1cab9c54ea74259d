//! A run's budgets (`--max-tokens-total`, `--max-cost`) and the prices its cost is
//! counted in: the runner checks them before asking each question, so a spent
//! budget stops the run the way a first Ctrl-C does (resumable).

use std::collections::{HashMap, HashSet};

use crate::mllm::{Price, Usage};
use crate::runs::spec::RunSpec;

/// Where a run stops on its own (besides the end), and the prices its cost is
/// counted in.
pub(crate) struct Budget {
    pub max_tokens_total: Option<u64>,
    pub max_cost: Option<f64>,
    /// By endpoint name as records carry it; `None` when some endpoint has no price
    /// (then the run has no cost, and `prepare` refused a `max_cost`).
    pub prices: Option<Prices>,
}

#[derive(Clone)]
pub(crate) struct Prices {
    by_endpoint: HashMap<String, Price>,
    /// For records of an endpoint this session does not have (a resume under other
    /// endpoints): the first endpoint's price.
    fallback: Price,
}

impl Prices {
    pub fn cost(&self, endpoint: &str, usage: Option<Usage>) -> f64 {
        let price = self.by_endpoint.get(endpoint).unwrap_or(&self.fallback);
        usage.map_or(0.0, |u| price.cost(u))
    }
}

impl Budget {
    pub fn of(spec: &RunSpec) -> Budget {
        let priced: Option<Vec<Price>> = spec.endpoints.iter().map(|e| e.price()).collect();
        let prices = priced.and_then(|prices| {
            Some(Prices {
                by_endpoint: endpoint_names(spec)
                    .into_iter()
                    .zip(prices.clone())
                    .collect(),
                fallback: *prices.first()?,
            })
        });
        Budget {
            max_tokens_total: spec.max_tokens_total,
            max_cost: spec.max_cost,
            prices,
        }
    }

    pub fn tokens_spent(&self, tokens: u64) -> bool {
        self.max_tokens_total.is_some_and(|max| tokens >= max)
    }

    pub fn cost_spent(&self, cost: f64) -> bool {
        self.max_cost.is_some_and(|max| cost >= max)
    }
}

/// The names records carry for `spec.endpoints`, in order (empty or repeated names
/// made unique as `prepare` makes them).
pub(crate) fn endpoint_names(spec: &RunSpec) -> Vec<String> {
    let mut names: HashSet<String> = HashSet::new();
    spec.endpoints
        .iter()
        .enumerate()
        .map(|(i, cfg)| {
            let mut name = if cfg.name.trim().is_empty() {
                format!("endpoint {}", i + 1)
            } else {
                cfg.name.trim().to_string()
            };
            if names.contains(&name) {
                name = format!("{name} #{}", i + 1);
            }
            names.insert(name.clone());
            name
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mllm::EndpointConfig;

    fn spec(prices: &[Option<f64>]) -> RunSpec {
        let endpoints = prices
            .iter()
            .map(|p| {
                let mut e = EndpointConfig {
                    name: "box".into(),
                    ..EndpointConfig::default()
                };
                e.set_price(p.map(|v| Price {
                    prompt_per_million: v,
                    completion_per_million: v,
                }));
                e
            })
            .collect();
        RunSpec::new("d.json", ".", endpoints, "out")
    }

    #[test]
    fn records_are_priced_by_the_endpoint_that_answered() {
        let s = spec(&[Some(1.0), Some(3.0)]);
        assert_eq!(endpoint_names(&s), ["box", "box #2"]);
        let b = Budget::of(&s);
        let prices = b.prices.unwrap();
        let usage = Some(Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 0,
        });
        assert_eq!(prices.cost("box #2", usage), 3.0);
        assert_eq!(prices.cost("gone", usage), 1.0, "the first endpoint's");
        assert_eq!(prices.cost("box", None), 0.0);
        // One endpoint without a price: the run has no cost at all.
        assert!(Budget::of(&spec(&[Some(1.0), None])).prices.is_none());
    }

    #[test]
    fn a_budget_is_spent_once_reached() {
        let mut s = spec(&[Some(1.0)]);
        s.max_cost = Some(0.5);
        s.max_tokens_total = Some(10);
        let b = Budget::of(&s);
        assert!(!b.cost_spent(0.49) && b.cost_spent(0.5));
        assert!(!b.tokens_spent(9) && b.tokens_spent(10));
        let none = Budget::of(&spec(&[Some(1.0)]));
        assert!(!none.cost_spent(1e9) && !none.tokens_spent(u64::MAX));
    }
}
