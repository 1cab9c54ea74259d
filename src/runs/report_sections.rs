//! The HTML report's calibration and usage sections (apart from `export` so that
//! file stays under the size limit). Each appears only when the run has what it
//! shows: a confidence on its answers, tokens reported by its servers. A run made
//! before either existed therefore exports exactly the report it always did.

use std::fmt::Write as _;

use crate::runs::calibration::{Calibration, ConfidenceSource, Reliability};
use crate::runs::run_folder::RunFolder;
use crate::runs::slices::category_slices;
use crate::runs::usage::{manifest_price, run_cost, run_latency, run_tokens};
use crate::util::html::escape as html_escape;

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{:.1}", v * 100.0))
}

/// Side of the square plots, and the margin their axes' labels sit in.
const PLOT: f64 = 240.0;
const MARGIN: f64 = 36.0;

/// `(x, y)` in [0, 1]² to SVG coordinates (y grows downwards).
fn at(x: f64, y: f64) -> (f64, f64) {
    (MARGIN + x * PLOT, MARGIN / 2.0 + (1.0 - y) * PLOT)
}

/// Frame, tick labels at 0, 0.5 and 1, and the axes' names.
fn axes(h: &mut String, x_name: &str, y_name: &str) {
    let (x0, y0) = at(0.0, 0.0);
    let (_, y1) = at(0.0, 1.0);
    let _ = writeln!(
        h,
        "<rect x=\"{x0}\" y=\"{y1}\" width=\"{PLOT}\" height=\"{PLOT}\" fill=\"#fafafa\" stroke=\"#bbb\"/>"
    );
    for t in [0.0, 0.5, 1.0] {
        let (x, _) = at(t, 0.0);
        let (_, y) = at(0.0, t);
        let _ = writeln!(
            h,
            "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{t}</text>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{t}</text>",
            y0 + 14.0,
            x0 - 4.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        h,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x_name}</text>\n<text x=\"10\" y=\"{}\" transform=\"rotate(-90 10 {})\" text-anchor=\"middle\">{y_name}</text>",
        x0 + PLOT / 2.0,
        y0 + 30.0,
        y1 + PLOT / 2.0,
        y1 + PLOT / 2.0
    );
}

fn svg_open(h: &mut String, label: &str) {
    let side = PLOT + 2.0 * MARGIN;
    let _ = writeln!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{side}\" height=\"{side}\" viewBox=\"0 0 {side} {side}\" font-family=\"sans-serif\" font-size=\"11\" role=\"img\" aria-label=\"{label}\">"
    );
}

/// Bars of each bin's accuracy over its confidence range, against the diagonal a
/// calibrated model would follow.
fn reliability_svg(h: &mut String, r: &Reliability) {
    svg_open(h, "reliability diagram");
    axes(h, "confidence", "accuracy");
    for b in r.bins.iter().filter(|b| b.count > 0) {
        let acc = b.accuracy.unwrap_or(0.0);
        let (x, y) = at(b.low, acc);
        let (_, base) = at(0.0, 0.0);
        let _ = writeln!(
            h,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#7aa7d9\" stroke=\"#3a6ea5\" stroke-width=\"0.5\"><title>{:.1}-{:.1}: {} answers, accuracy {}%</title></rect>",
            (b.high - b.low) * PLOT,
            base - y,
            b.low,
            b.high,
            b.count,
            pct(b.accuracy)
        );
    }
    let (ax, ay) = at(0.0, 0.0);
    let (bx, by) = at(1.0, 1.0);
    let _ = writeln!(
        h,
        "<line x1=\"{ax}\" y1=\"{ay}\" x2=\"{bx}\" y2=\"{by}\" stroke=\"#b00020\" stroke-dasharray=\"4 3\"/>\n</svg>"
    );
}

/// Accuracy of the kept answers and the share kept, against the threshold.
fn abstain_svg(h: &mut String, r: &Reliability) {
    svg_open(h, "abstain curve");
    axes(h, "abstain below", "share");
    let line = |value: &dyn Fn(&crate::runs::calibration::AbstainPoint) -> Option<f64>| {
        r.abstain
            .iter()
            .filter_map(|p| {
                let (x, y) = at(p.threshold, value(p)?);
                Some(format!("{x:.1},{y:.1}"))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        h,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1b7f3b\" stroke-width=\"2\"><title>accuracy of the kept answers</title></polyline>\n<polyline points=\"{}\" fill=\"none\" stroke=\"#888\" stroke-width=\"2\" stroke-dasharray=\"5 3\"><title>coverage</title></polyline>\n</svg>",
        line(&|p| p.accuracy),
        line(&|p| Some(p.coverage)),
    );
}

/// Reliability, ECE per subtask and the abstain curve; nothing for a run whose
/// answers carry no confidence.
pub(crate) fn push_calibration(h: &mut String, run: &RunFolder) {
    let Some(cal) = Calibration::of(run.records(), ConfidenceSource::Auto) else {
        return;
    };
    h.push_str("<h2>Calibration</h2>\n");
    let _ = writeln!(
        h,
        "<p>An answer's confidence is the probability of its letter when the server sent one, else the agreement over samples or rotations. Expected calibration error over all {} answers: <b>{}%</b>{}.</p>",
        cal.all.answers,
        pct(Some(cal.all.ece)),
        if cal.without_confidence > 0 {
            format!(
                " ({} answer(s) without a confidence left out)",
                cal.without_confidence
            )
        } else {
            String::new()
        }
    );
    h.push_str("<table class=\"score\"><tr><th>Subtask</th><th>answers</th><th>accuracy %</th><th>mean confidence %</th><th>ECE %</th></tr>\n");
    let row = |h: &mut String, name: &str, r: &Reliability| {
        let _ = writeln!(
            h,
            "<tr><th>{}</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            html_escape(name),
            r.answers,
            pct(Some(r.accuracy)),
            pct(Some(r.mean_confidence)),
            pct(Some(r.ece))
        );
    };
    row(h, "All", &cal.all);
    for (name, r) in &cal.per_subtask {
        row(h, name, r);
    }
    h.push_str("</table>\n<h3>Reliability (all answers)</h3>\n");
    reliability_svg(h, &cal.all);
    h.push_str("<table class=\"score\"><tr><th>confidence</th><th>answers</th><th>mean confidence %</th><th>accuracy %</th></tr>\n");
    for b in &cal.all.bins {
        let _ = writeln!(
            h,
            "<tr><th>{:.1}-{:.1}</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            b.low,
            b.high,
            b.count,
            pct(b.mean_confidence),
            pct(b.accuracy)
        );
    }
    h.push_str("</table>\n<h3>Abstain curve</h3>\n<p>Answers below the threshold go to a person; the solid line is the accuracy of the rest, the dashed one the share kept.</p>\n");
    abstain_svg(h, &cal.all);
    h.push_str("<table class=\"score\"><tr><th>abstain below</th><th>coverage %</th><th>accuracy %</th><th>for a person</th></tr>\n");
    for p in cal.all.abstain.iter().step_by(2) {
        let _ = writeln!(
            h,
            "<tr><th>{:.1}</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            p.threshold,
            pct(Some(p.coverage)),
            pct(p.accuracy),
            p.for_person
        );
    }
    h.push_str("</table>\n");
}

/// Tokens, latency and cost per subtask; nothing for a run whose servers reported
/// no tokens.
pub(crate) fn push_usage(h: &mut String, run: &RunFolder) {
    let records = run.records();
    let tokens = run_tokens(records);
    if tokens.all.questions == 0 {
        return;
    }
    let latency = run_latency(records);
    let cost = run_cost(records, |e| manifest_price(&run.manifest, e));
    h.push_str("<h2>Usage</h2>\n<table class=\"score\"><tr><th>Subtask</th><th>questions</th><th>prompt tokens</th><th>completion tokens</th><th>latency p50 ms</th><th>latency p95 ms</th>");
    if cost.is_some() {
        h.push_str("<th>cost</th>");
    }
    h.push_str("</tr>\n");
    let names = std::iter::once("All".to_owned()).chain(tokens.per_subtask.keys().cloned());
    for name in names {
        let (t, l, c) = if name == "All" {
            (
                Some(tokens.all),
                latency.all,
                cost.as_ref().map(|c| c.total),
            )
        } else {
            (
                tokens.per_subtask.get(&name).copied(),
                latency.per_subtask.get(&name).copied(),
                cost.as_ref()
                    .and_then(|c| c.per_subtask.get(&name).copied()),
            )
        };
        let t = t.unwrap_or_default();
        let ms = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"));
        let _ = write!(
            h,
            "<tr><th>{}</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
            html_escape(&name),
            t.questions,
            t.prompt,
            t.completion,
            ms(l.map(|l| l.p50_ms)),
            ms(l.map(|l| l.p95_ms))
        );
        if cost.is_some() {
            let _ = write!(h, "<td class=\"num\">{:.4}</td>", c.unwrap_or(0.0));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    if cost.is_none() {
        h.push_str("<p class=\"note\">No price was recorded for the endpoints, so no cost: set the endpoint's price in Settings, or pass --price-prompt and --price-completion to <code>run</code>.</p>\n");
    }
}

/// Where the errors are: per category, Overkill (normal parts called defective)
/// and Miss (defects called normal), Defect Classification's share right and the
/// confusions it made (true option text -> chosen one), as `score --slices` gives
/// them. Nothing when the run answered neither question type.
pub(crate) fn push_slices(h: &mut String, run: &RunFolder) {
    let slices = category_slices(run.records());
    if slices.is_empty() {
        return;
    }
    h.push_str("<h2>Where the errors are</h2>\n<table class=\"score\"><tr><th>Category</th><th>normal</th><th>Overkill %</th><th>defective</th><th>Miss %</th><th>classified</th><th>classified right %</th></tr>\n");
    let pct_of = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"));
    for (category, slice) in &slices {
        let dc = slice.classification();
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html_escape(category),
            slice.normal.total,
            pct_of(slice.overkill()),
            slice.abnormal.total,
            pct_of(slice.miss()),
            dc.total,
            pct_of((dc.total > 0).then(|| dc.correct as f64 * 100.0 / dc.total as f64)),
        );
    }
    h.push_str("</table>\n");
    let mut confusions: Vec<(String, &str, &str, usize)> = Vec::new();
    for (category, slice) in &slices {
        for (truth, row) in &slice.confusion {
            for (chosen, n) in row {
                if truth != chosen {
                    confusions.push((category.clone(), truth, chosen, *n));
                }
            }
        }
    }
    if confusions.is_empty() {
        return;
    }
    // Most frequent first: the defects a curator should describe better.
    confusions.sort_by(|a, b| b.3.cmp(&a.3).then_with(|| a.0.cmp(&b.0)));
    h.push_str("<h3>Defect Classification: what was taken for what</h3>\n<table class=\"score\"><tr><th>Category</th><th>true defect</th><th>answered</th><th>questions</th></tr>\n");
    for (category, truth, chosen, n) in confusions {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{n}</td></tr>",
            html_escape(&category),
            html_escape(truth),
            html_escape(chosen),
        );
    }
    h.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mllm::{Price, Usage};
    use crate::runs::journal::Confidence;
    use crate::runs::test_support::{manifest, record, write_run};

    fn folder(
        confident: bool,
        usage: bool,
        price: Option<Price>,
    ) -> (tempfile::TempDir, RunFolder) {
        let dir = tempfile::tempdir().unwrap();
        let mut m = manifest(4);
        m.endpoints[0].price = price;
        let records: Vec<_> = (0..4)
            .map(|i| {
                let given = if i < 3 { "A" } else { "B" };
                let mut r = record(
                    i,
                    "DS/c/test/bad/0.png",
                    "Defect Classification",
                    "A",
                    Some(given),
                );
                if confident {
                    r.confidence = Some(Confidence {
                        agreement: Some(1.0),
                        letter_probs: None,
                    });
                }
                if usage {
                    r.usage = Some(Usage {
                        prompt_tokens: 1_000,
                        completion_tokens: 100,
                    });
                    r.latency_ms = 100 * (i as u64 + 1);
                }
                r
            })
            .collect();
        write_run(dir.path(), &m, &records);
        let run = RunFolder::open(dir.path()).unwrap();
        (dir, run)
    }

    #[test]
    fn where_the_errors_are_gives_each_category_and_its_confusions() {
        let (_d, run) = folder(false, false, None);
        let mut h = String::new();
        push_slices(&mut h, &run);
        assert!(h.starts_with("<h2>Where the errors are</h2>"), "{h}");
        // Four Defect Classification questions of DS/c, three right, no
        // Anomaly Detection: no Overkill or Miss to give.
        assert!(
            h.contains("<tr><td>DS/c</td><td>0</td><td>–</td><td>0</td><td>–</td><td>4</td><td>75.0</td></tr>"),
            "{h}"
        );
        assert!(
            h.contains("<tr><td>DS/c</td><td>Yes.</td><td>No.</td><td>1</td></tr>"),
            "{h}"
        );
    }

    #[test]
    fn sections_appear_only_for_runs_that_have_what_they_show() {
        let (_d, plain) = folder(false, false, None);
        let mut h = String::new();
        push_calibration(&mut h, &plain);
        push_usage(&mut h, &plain);
        assert!(h.is_empty(), "{h}");
    }

    #[test]
    fn calibration_section_shows_ece_bins_and_the_curve() {
        let (_d, run) = folder(true, false, None);
        let mut h = String::new();
        push_calibration(&mut h, &run);
        // Always certain, 3 of 4 right: ECE 25%.
        assert!(h.contains("all 4 answers: <b>25.0%</b>"), "{h}");
        assert!(h.contains("aria-label=\"reliability diagram\""));
        assert!(h.contains("aria-label=\"abstain curve\""));
        assert!(h.contains("<tr><th>0.9-1.0</th><td class=\"num\">4</td><td class=\"num\">100.0</td><td class=\"num\">75.0</td></tr>"), "{h}");
        // Above 1.0 nothing is kept: all four go to a person.
        assert!(
            h.contains("<tr><th>1.0</th><td class=\"num\">100.0</td>"),
            "{h}"
        );
    }

    #[test]
    fn usage_section_prices_tokens_when_the_manifest_has_a_price() {
        let (_d, run) = folder(false, true, None);
        let mut h = String::new();
        push_usage(&mut h, &run);
        assert!(h.contains("<th>All</th><td class=\"num\">4</td><td class=\"num\">4000</td><td class=\"num\">400</td><td class=\"num\">250</td><td class=\"num\">385</td></tr>"), "{h}");
        assert!(h.contains("No price was recorded"));
        let price = Price {
            prompt_per_million: 2.0,
            completion_per_million: 10.0,
        };
        let (_d, run) = folder(false, true, Some(price));
        let mut h = String::new();
        push_usage(&mut h, &run);
        // 4,000 * 2 / 1e6 + 400 * 10 / 1e6 = 0.012
        assert!(h.contains("<td class=\"num\">0.0120</td></tr>"), "{h}");
        assert!(!h.contains("No price was recorded"));
    }
}
