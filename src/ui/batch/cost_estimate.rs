//! The New run form's money: what the selected questions will cost before Start,
//! and a cost budget that stops the run (`--max-cost` in the command line).
//!
//! Tokens per question come from the newest earlier run of the same model that
//! reported tokens (its `summary.json`), or, failing that, from the endpoint's
//! Test request in Settings (two small images: a floor, since real questions send
//! full-size images). The form says which. A cost needs every chosen endpoint's
//! price; the actual cost after the run is in the Current run's usage.

use eframe::egui;

use crate::mllm::{EndpointConfig, Price};
use crate::runs::catalog::RunRow;
use crate::runs::journal_summary::TokensPerQuestion;
use crate::ui::services::{EndpointProbes, ProbeState};

/// Where the tokens per question of an estimate come from.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSource {
    /// An earlier run of the same model, by its folder name.
    EarlierRun(String),
    /// The endpoint's Test request.
    Probe,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub questions: usize,
    pub per_question: TokensPerQuestion,
    pub source: TokenSource,
    /// `None` when a chosen endpoint has no price.
    pub cost: Option<f64>,
}

impl Estimate {
    pub fn tokens(&self) -> f64 {
        self.per_question.total() * self.questions as f64
    }

    pub fn text(&self) -> String {
        let source = match &self.source {
            TokenSource::EarlierRun(name) => format!("as in run {name}"),
            TokenSource::Probe => {
                "from the endpoint's Test request, two small images: full-size images cost more"
                    .to_owned()
            }
        };
        let cost = self.cost.map_or_else(
            || "no cost: set the endpoint's price in Settings".to_owned(),
            |c| format!("about {c:.4}"),
        );
        format!(
            "Estimated tokens: {:.0} ({:.0} prompt + {:.0} completion per question, {source}); cost {cost}",
            self.tokens(),
            self.per_question.prompt,
            self.per_question.completion
        )
    }
}

/// The price a question pays on average when the run's questions spread over
/// `endpoints` by their concurrency; `None` unless every one has a price.
pub fn blended_price(endpoints: &[EndpointConfig]) -> Option<Price> {
    let weights: f64 = endpoints
        .iter()
        .map(|e| e.max_in_flight.max(1) as f64)
        .sum();
    let mut blended = Price {
        prompt_per_million: 0.0,
        completion_per_million: 0.0,
    };
    for e in endpoints {
        let p = e.price()?;
        let w = e.max_in_flight.max(1) as f64 / weights;
        blended.prompt_per_million += p.prompt_per_million * w;
        blended.completion_per_million += p.completion_per_million * w;
    }
    (!endpoints.is_empty()).then_some(blended)
}

/// `None` when neither an earlier run nor a Test of a chosen endpoint reported
/// tokens. `runs` is newest first, as the run list holds them.
pub fn estimate(
    questions: usize,
    endpoints: &[EndpointConfig],
    runs: &[RunRow],
    probes: &EndpointProbes,
) -> Option<Estimate> {
    let models: Vec<&str> = endpoints.iter().map(|e| e.model.as_str()).collect();
    let earlier = runs.iter().find_map(|r| {
        let m = r.manifest.as_ref()?;
        let same = m
            .endpoints
            .iter()
            .any(|e| models.contains(&e.model.as_str()));
        same.then_some(())?;
        Some((
            r.tokens_per_question?,
            TokenSource::EarlierRun(r.name.clone()),
        ))
    });
    let probed = || {
        endpoints.iter().find_map(|e| match probes.state(e) {
            ProbeState::Done(report) => report.usage.map(|u| {
                (
                    TokensPerQuestion {
                        prompt: u.prompt_tokens as f64,
                        completion: u.completion_tokens as f64,
                    },
                    TokenSource::Probe,
                )
            }),
            _ => None,
        })
    };
    let (per_question, source) = earlier.or_else(probed)?;
    let cost = blended_price(endpoints).map(|p| {
        (per_question.prompt * p.prompt_per_million
            + per_question.completion * p.completion_per_million)
            * questions as f64
            / 1e6
    });
    Some(Estimate {
        questions,
        per_question,
        source,
        cost,
    })
}

/// The form's cost budget as typed.
#[derive(Debug, Default, Clone)]
pub struct CostForm {
    pub max_cost_text: String,
}

impl CostForm {
    /// The budget, `Ok(None)` when the field is empty.
    pub fn max_cost(&self) -> Result<Option<f64>, String> {
        let t = self.max_cost_text.trim();
        if t.is_empty() {
            return Ok(None);
        }
        match t.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
            _ => Err(format!(
                "Stop at cost: `{t}` is not an amount (a number, 0 or more)"
            )),
        }
    }

    /// The estimate and the budget field; false while the budget keeps Start
    /// disabled (unreadable, or set while a chosen endpoint has no price).
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        questions: usize,
        endpoints: &[EndpointConfig],
        runs: &[RunRow],
        probes: &EndpointProbes,
    ) -> bool {
        match estimate(questions, endpoints, runs, probes) {
            Some(e) => ui.label(e.text()),
            None => ui.weak(
                "No token estimate: no earlier run of this model reported tokens. Test the endpoint in Settings for a rough one.",
            ),
        };
        let mut ok = true;
        ui.horizontal(|ui| {
            let label = ui.label("Stop at cost");
            ui.add(
                egui::TextEdit::singleline(&mut self.max_cost_text)
                    .desired_width(80.0)
                    .hint_text("no limit"),
            )
            .labelled_by(label.id)
            .on_hover_text("Stop gracefully once the run's tokens cost this much at the endpoints' prices; resume with a larger budget");
            match self.max_cost() {
                Err(e) => {
                    ok = false;
                    ui.colored_label(ui.visuals().error_fg_color, e);
                }
                Ok(Some(_)) if blended_price(endpoints).is_none() => {
                    ok = false;
                    ui.colored_label(
                        ui.visuals().error_fg_color,
                        "A cost budget needs every chosen endpoint's price: set it in Settings",
                    );
                }
                Ok(_) => {}
            }
        });
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(model: &str, price: Option<f64>, concurrency: usize) -> EndpointConfig {
        let mut e = EndpointConfig {
            model: model.into(),
            max_in_flight: concurrency,
            ..EndpointConfig::default()
        };
        e.set_price(price.map(|p| Price {
            prompt_per_million: p,
            completion_per_million: 4.0 * p,
        }));
        e
    }

    fn run(name: &str, model: &str, per_question: Option<(f64, f64)>) -> RunRow {
        let mut m = crate::runs::test_support::manifest(10);
        m.endpoints[0].model = model.into();
        RunRow {
            dir: name.into(),
            name: name.into(),
            manifest: Some(m),
            answered: 10,
            errors: 0,
            accuracy: None,
            mean_latency_s: None,
            tokens_per_question: per_question
                .map(|(prompt, completion)| TokensPerQuestion { prompt, completion }),
            error: None,
        }
    }

    #[test]
    fn the_newest_run_of_the_model_with_tokens_gives_the_estimate() {
        let runs = [
            run("other-model", "gpt", Some((9_999.0, 9.0))),
            run("no-usage", "qwen", None),
            run("qwen-run", "qwen", Some((1_000.0, 20.0))),
        ];
        let probes = EndpointProbes::default();
        let e = estimate(50, &[endpoint("qwen", Some(2.0), 4)], &runs, &probes).unwrap();
        assert_eq!(e.source, TokenSource::EarlierRun("qwen-run".into()));
        assert_eq!(e.tokens(), 51_000.0);
        // 50 * (1,000 * 2 + 20 * 8) / 1e6
        assert!((e.cost.unwrap() - 0.108).abs() < 1e-12);
        assert!(e.text().contains("as in run qwen-run"), "{}", e.text());
        // Without a price: tokens, and says why there is no cost.
        let e = estimate(50, &[endpoint("qwen", None, 4)], &runs, &probes).unwrap();
        assert!(e.cost.is_none());
        assert!(
            e.text().contains("set the endpoint's price"),
            "{}",
            e.text()
        );
        // Nothing known about the model: no estimate at all (not a zero).
        assert!(estimate(50, &[endpoint("llava", Some(1.0), 1)], &runs, &probes).is_none());
    }

    #[test]
    fn endpoints_blend_their_prices_by_concurrency() {
        let p = blended_price(&[endpoint("a", Some(1.0), 1), endpoint("b", Some(4.0), 3)]).unwrap();
        assert_eq!(p.prompt_per_million, 0.25 * 1.0 + 0.75 * 4.0);
        assert!(blended_price(&[endpoint("a", Some(1.0), 1), endpoint("b", None, 1)]).is_none());
        assert!(blended_price(&[]).is_none());
    }

    #[test]
    fn the_budget_field_reads_amounts_and_refuses_the_rest() {
        let mut f = CostForm::default();
        assert_eq!(f.max_cost(), Ok(None));
        f.max_cost_text = " 2.5 ".into();
        assert_eq!(f.max_cost(), Ok(Some(2.5)));
        for bad in ["-1", "ten", "NaN", "inf"] {
            f.max_cost_text = bad.into();
            assert!(f.max_cost().is_err(), "{bad}");
        }
    }
}
