//! The current run's usage: tokens the servers reported, latency p50/p95 and the
//! cost at the prices its manifest records, for the run and per subtask.

use eframe::egui;

use crate::runs::journal::JournalRecord;
use crate::runs::manifest::RunManifest;
use crate::runs::usage::{
    RunCost, RunLatency, RunTokens, manifest_price, run_cost, run_latency, run_tokens,
};

pub struct Usage {
    pub tokens: RunTokens,
    pub latency: RunLatency,
    /// `None` without a price for every endpoint that answered.
    pub cost: Option<RunCost>,
}

impl Usage {
    pub fn of(records: &[JournalRecord], manifest: Option<&RunManifest>) -> Usage {
        Usage {
            tokens: run_tokens(records),
            latency: run_latency(records),
            cost: manifest.and_then(|m| run_cost(records, |e| manifest_price(m, e))),
        }
    }
}

pub fn usage_ui(ui: &mut egui::Ui, u: &Usage) {
    ui.strong("Usage");
    if u.tokens.all.questions == 0 {
        ui.weak("The servers reported no tokens for this run.");
    }
    egui::Grid::new("usage_grid").striped(true).show(ui, |ui| {
        for h in [
            "Subtask",
            "questions",
            "prompt tokens",
            "completion tokens",
            "p50 ms",
            "p95 ms",
            "cost",
        ] {
            ui.strong(h);
        }
        ui.end_row();
        let names = std::iter::once("All").chain(u.latency.per_subtask.keys().map(String::as_str));
        for name in names {
            let (tokens, latency, cost) = if name == "All" {
                (
                    Some(u.tokens.all),
                    u.latency.all,
                    u.cost.as_ref().map(|c| c.total),
                )
            } else {
                (
                    u.tokens.per_subtask.get(name).copied(),
                    u.latency.per_subtask.get(name).copied(),
                    u.cost
                        .as_ref()
                        .and_then(|c| c.per_subtask.get(name).copied()),
                )
            };
            let t = tokens.unwrap_or_default();
            ui.label(name);
            ui.label(latency.map_or(0, |l| l.questions).to_string());
            ui.label(t.prompt.to_string());
            ui.label(t.completion.to_string());
            ui.label(latency.map_or("-".into(), |l| format!("{:.0}", l.p50_ms)));
            ui.label(latency.map_or("-".into(), |l| format!("{:.0}", l.p95_ms)));
            ui.label(match (&u.cost, cost) {
                (None, _) => "-".to_owned(),
                (Some(_), c) => format!("cost {name}: {:.4}", c.unwrap_or(0.0)),
            });
            ui.end_row();
        }
    });
    if u.cost.is_none() && u.tokens.all.questions > 0 {
        ui.weak("No price recorded for this run's endpoints: set one in Settings for the next run's cost.");
    }
}
