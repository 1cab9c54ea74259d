//! The question list: the image's MMAD questions with their Run buttons and
//! answers, the user's own question, and the trace of the focused one.

use eframe::egui;
use indexmap::IndexMap;

use super::{Current, InspectEnv, InspectState, Slot};
use crate::dataset::Question;
use crate::echo::classify_question;
use crate::ui::trace_view::{self, Outcome, QuestionRun};

/// The user's own question and its options as typed.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomQuestion {
    pub text: String,
    pub options: String,
}

impl Default for CustomQuestion {
    fn default() -> Self {
        CustomQuestion {
            text: String::new(),
            options: "A. Yes\nB. No".into(),
        }
    }
}

/// Options typed one per line as `A. text` (also `A) text` or `A: text`).
pub fn parse_options(text: &str) -> Result<IndexMap<String, String>, String> {
    let mut options = IndexMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut chars = line.chars();
        let letter = chars.next().filter(char::is_ascii_alphabetic);
        let sep = chars.next();
        let rest = chars.as_str().trim();
        match (letter, sep) {
            (Some(l), Some('.' | ')' | ':')) if !rest.is_empty() => {
                let l = l.to_ascii_uppercase().to_string();
                if options.contains_key(&l) {
                    return Err(format!("line {}: the letter {l} is used twice", n + 1));
                }
                options.insert(l, rest.to_string());
            }
            _ => {
                return Err(format!(
                    "line {} `{line}` is not `LETTER. text` (e.g. `A. Yes`)",
                    n + 1
                ));
            }
        }
    }
    if options.len() < 2 {
        return Err("give at least two options, one per line (e.g. `A. Yes`)".into());
    }
    Ok(options)
}

impl InspectState {
    pub(super) fn questions(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &egui::Context,
        env: &InspectEnv<'_>,
        cur: &Current,
    ) {
        let conversation: Vec<Question> = cur
            .entry
            .as_ref()
            .map(|e| e.conversation.clone())
            .unwrap_or_default();
        let endpoint = env.settings.active_endpoint();
        let can_run = self.active.is_none() && endpoint.is_some();
        let mut to_run: Vec<(Slot, Question)> = Vec::new();
        ui.horizontal(|ui| {
            ui.heading(format!("Questions ({})", conversation.len()));
            if !conversation.is_empty()
                && ui
                    .add_enabled(
                        can_run,
                        egui::Button::new(format!("Run all ({})", conversation.len())),
                    )
                    .on_hover_text(
                        "Ask every question in turn (Echo answers one question per call)",
                    )
                    .clicked()
            {
                to_run = conversation
                    .iter()
                    .cloned()
                    .enumerate()
                    .map(|(i, q)| (Slot::Mmad(i), q))
                    .collect();
            }
        });
        match endpoint {
            Some(e) => {
                ui.weak(format!(
                    "Model: {} at {} · preset {}",
                    e.model, e.base_url, env.settings.pipeline.preset
                ));
            }
            None => {
                ui.colored_label(
                    ui.visuals().error_fg_color,
                    "No model endpoint is configured: add one in Settings.",
                );
            }
        }
        self.run_controls(ui);
        for (i, q) in conversation.iter().enumerate() {
            let slot = Slot::Mmad(i);
            let run = self.runs.get(&(cur.path.clone(), slot));
            let focused = self.focused == Some(slot);
            let frame = egui::Frame::group(ui.style()).stroke(if focused {
                ui.visuals().selection.stroke
            } else {
                ui.visuals().widgets.noninteractive.bg_stroke
            });
            frame.show(ui, |ui| {
                ui.set_width(ui.available_width());
                ui.horizontal(|ui| {
                    ui.strong(format!("Q{}", i + 1));
                    ui.label(egui::RichText::new(q.qtype.as_str()).italics());
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        if ui
                            .add_enabled(can_run, egui::Button::new(format!("Run Q{}", i + 1)))
                            .clicked()
                        {
                            to_run = vec![(slot, q.clone())];
                        }
                        if run.is_some() && ui.selectable_label(focused, "Trace").clicked() {
                            self.focused = Some(slot);
                            self.scroll_to_trace = true;
                        }
                    });
                });
                ui.label(&q.text);
                ui.horizontal_wrapped(|ui| {
                    for (letter, text) in &q.options {
                        if *letter == q.answer {
                            ui.label(
                                egui::RichText::new(format!("{letter}. {text} (ground truth)"))
                                    .strong(),
                            );
                        } else {
                            ui.label(format!("{letter}. {text}"));
                        }
                    }
                });
                if let Some(run) = run {
                    run_summary(ui, run);
                }
            });
        }
        self.custom_question(ui, cur, can_run, &mut to_run);
        if !to_run.is_empty() {
            self.start_run(ctx, env, to_run);
        }
        if let Some(slot) = self.focused
            && let Some(run) = self.runs.get(&(cur.path.clone(), slot))
        {
            ui.add_space(6.0);
            ui.separator();
            let heading = ui.heading(format!("Trace of {}", slot.label()));
            // Bring the cards into view when a run starts or a trace is chosen.
            if std::mem::take(&mut self.scroll_to_trace) {
                heading.scroll_to_me(Some(egui::Align::TOP));
            }
            ui.label(egui::RichText::new(&run.question.text).italics());
            trace_view::run_ui(ui, run, ui.make_persistent_id(("trace", &cur.path, slot)));
        }
    }

    fn custom_question(
        &mut self,
        ui: &mut egui::Ui,
        cur: &Current,
        can_run: bool,
        to_run: &mut Vec<(Slot, Question)>,
    ) {
        // Open by default for loose images, which have no questions of their own; the
        // two cases keep their own open state.
        let loose = cur.entry.is_none();
        egui::CollapsingHeader::new(egui::RichText::new("Ask your own question").strong())
            .id_salt(("custom_question", loose))
            .default_open(loose)
            .show(ui, |ui| {
                let label = ui.label("Question");
                ui.add(
                    egui::TextEdit::multiline(&mut self.custom.text)
                        .desired_rows(2)
                        .desired_width(f32::INFINITY)
                        .hint_text("e.g. Is there a scratch on the rim?"),
                )
                .labelled_by(label.id);
                let label = ui.label("Options, one per line (A. Yes)");
                ui.add(
                    egui::TextEdit::multiline(&mut self.custom.options)
                        .desired_rows(3)
                        .desired_width(f32::INFINITY),
                )
                .labelled_by(label.id);
                let parsed = parse_options(&self.custom.options);
                let text = self.custom.text.trim().to_string();
                let question = match &parsed {
                    Ok(options) if !text.is_empty() => {
                        let (qtype, _) = classify_question(&text, options);
                        ui.weak(format!(
                            "Type: {} (classified from the text)",
                            qtype.as_str()
                        ));
                        Some(Question {
                            text: text.clone(),
                            answer: String::new(),
                            options: options.clone(),
                            qtype,
                            annotation: None,
                        })
                    }
                    Ok(_) => None,
                    Err(e) => {
                        ui.colored_label(ui.visuals().error_fg_color, e);
                        None
                    }
                };
                ui.horizontal(|ui| {
                    if ui
                        .add_enabled(
                            can_run && question.is_some(),
                            egui::Button::new("Run question"),
                        )
                        .clicked()
                        && let Some(q) = question
                    {
                        *to_run = vec![(Slot::Custom, q)];
                    }
                    if self.runs.contains_key(&(cur.path.clone(), Slot::Custom))
                        && ui
                            .selectable_label(self.focused == Some(Slot::Custom), "Trace")
                            .clicked()
                    {
                        self.focused = Some(Slot::Custom);
                        self.scroll_to_trace = true;
                    }
                });
                if let Some(run) = self.runs.get(&(cur.path.clone(), Slot::Custom)) {
                    run_summary(ui, run);
                }
            });
    }
}

/// One line under a question: its answer, or that it runs or failed.
fn run_summary(ui: &mut egui::Ui, run: &QuestionRun) {
    ui.horizontal_wrapped(|ui| match &run.outcome {
        None => {
            ui.spinner();
            ui.weak("running…");
        }
        Some(Outcome::Answered(d)) => {
            let text = match (&d.letter, &d.option_text) {
                (Some(l), Some(t)) => format!("Answered {l}. {t}"),
                (Some(l), None) => format!("Answered {l}"),
                (None, _) => "No option letter in the reply".into(),
            };
            match d.correct {
                Some(true) => trace_view::badge(ui, "correct", trace_view::ok_color(ui)),
                Some(false) => trace_view::badge(ui, "wrong", ui.visuals().error_fg_color),
                None => {}
            }
            ui.strong(text);
            ui.weak(format!("({} ms)", d.timings.total_ms));
        }
        Some(Outcome::Recorded(r)) => {
            ui.strong(format!("Answered {}", r.given));
        }
        Some(Outcome::Failed(e)) => {
            ui.colored_label(ui.visuals().error_fg_color, format!("failed: {e}"));
        }
        Some(Outcome::Cancelled) => {
            ui.colored_label(ui.visuals().warn_fg_color, "cancelled");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_one_per_line() {
        let o = parse_options("A. Yes\n b) No \n\nc: Maybe so").unwrap();
        assert_eq!(
            o.into_iter().collect::<Vec<_>>(),
            [
                ("A".to_string(), "Yes".to_string()),
                ("B".to_string(), "No".to_string()),
                ("C".to_string(), "Maybe so".to_string()),
            ]
        );
        let e = parse_options("A. Yes\nNo").unwrap_err();
        assert!(e.contains("line 2 `No`"), "{e}");
        assert!(
            parse_options("A. Yes\na. No")
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            parse_options("A. Yes")
                .unwrap_err()
                .contains("at least two")
        );
        assert!(parse_options("A.\nB. No").is_err());
    }
}
