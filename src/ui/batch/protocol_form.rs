//! The New run form's test-time protocol controls (see `echo::protocol`): samples
//! with temperature, top-p and seed, the order options are shown in (as in the
//! file, every rotation, or one seeded shuffle), and logprobs. They make the same
//! `Protocol` the command line's flags make.

use eframe::egui;

use crate::echo::protocol::{MAX_SAMPLES, Protocol};

/// How the options of a question are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OptionOrder {
    #[default]
    AsInFile,
    Circular,
    Shuffled,
}

/// What the user typed; turned into a [`Protocol`] when the run starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolForm {
    pub samples: u32,
    /// Empty: the endpoint's own temperature.
    pub temperature: String,
    pub top_p: String,
    pub seed: String,
    pub order: OptionOrder,
    pub shuffle_seed: String,
    pub logprobs: bool,
}

impl Default for ProtocolForm {
    fn default() -> Self {
        ProtocolForm {
            samples: 1,
            temperature: String::new(),
            top_p: String::new(),
            seed: String::new(),
            order: OptionOrder::AsInFile,
            shuffle_seed: "0".into(),
            logprobs: false,
        }
    }
}

fn optional<T: std::str::FromStr>(text: &str, what: &str) -> Result<Option<T>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("{what}: `{text}` is not a number"))
}

impl ProtocolForm {
    /// The protocol, or why it cannot be run (the same sentences as the flags').
    pub fn protocol(&self) -> Result<Protocol, String> {
        let shuffle_options = match self.order {
            OptionOrder::Shuffled => Some(
                optional(&self.shuffle_seed, "Shuffle seed")?
                    .ok_or("Shuffle seed: give a whole number")?,
            ),
            _ => None,
        };
        let p = Protocol {
            samples: self.samples,
            temperature: optional(&self.temperature, "Temperature")?,
            top_p: optional(&self.top_p, "Top-p")?,
            seed: optional(&self.seed, "Seed")?,
            circular: self.order == OptionOrder::Circular,
            shuffle_options,
            logprobs: self.logprobs,
            tie_rule: None,
        };
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }

    /// Rows of the New run form's grid.
    pub fn rows(&mut self, ui: &mut egui::Ui) {
        let label = ui.label("Samples");
        ui.horizontal(|ui| {
            ui.add(egui::DragValue::new(&mut self.samples).range(1..=MAX_SAMPLES))
                .labelled_by(label.id)
                .on_hover_text("Replies to the Decision Maker's final request; the answer is the majority letter (ties: the tied letter seen first)");
            let label = ui.label("temperature");
            ui.add(
                egui::TextEdit::singleline(&mut self.temperature)
                    .desired_width(50.0)
                    .hint_text("endpoint's"),
            )
            .labelled_by(label.id);
            let label = ui.label("top-p");
            ui.add(
                egui::TextEdit::singleline(&mut self.top_p)
                    .desired_width(50.0)
                    .hint_text("endpoint's"),
            )
            .labelled_by(label.id);
            let label = ui.label("seed");
            ui.add(
                egui::TextEdit::singleline(&mut self.seed)
                    .desired_width(70.0)
                    .hint_text("none"),
            )
            .labelled_by(label.id)
            .on_hover_text("Sample i is sent with seed + i");
        });
        ui.end_row();
        ui.label("Option order");
        ui.horizontal(|ui| {
            for (order, text, tip) in [
                (OptionOrder::AsInFile, "as in the file", "Each question asked once, options in file order"),
                (OptionOrder::Circular, "circular", "Asked once per rotation of the options; right only when every rotation is (MMBench's CircularEval)"),
                (OptionOrder::Shuffled, "shuffled", "One seeded order per question, the same in every shard and resume"),
            ] {
                ui.selectable_value(&mut self.order, order, text).on_hover_text(tip);
            }
            if self.order == OptionOrder::Shuffled {
                let label = ui.label("shuffle seed");
                ui.add(egui::TextEdit::singleline(&mut self.shuffle_seed).desired_width(70.0))
                    .labelled_by(label.id);
            }
        });
        ui.end_row();
        ui.label("Confidence");
        ui.checkbox(&mut self.logprobs, "letter probabilities (logprobs)")
            .on_hover_text(
                "Asks the server for logprobs; servers that send none leave the probabilities out",
            );
        ui.end_row();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_makes_the_protocol_the_flags_make() {
        assert!(ProtocolForm::default().protocol().unwrap().is_plain());
        let form = ProtocolForm {
            samples: 5,
            temperature: "0.7".into(),
            seed: " 3 ".into(),
            order: OptionOrder::Shuffled,
            shuffle_seed: "9".into(),
            logprobs: true,
            ..ProtocolForm::default()
        };
        let p = form.protocol().unwrap();
        assert_eq!(
            (
                p.samples,
                p.temperature,
                p.seed,
                p.shuffle_options,
                p.logprobs
            ),
            (5, Some(0.7), Some(3), Some(9), true)
        );
        let circular = ProtocolForm {
            order: OptionOrder::Circular,
            ..ProtocolForm::default()
        };
        assert!(circular.protocol().unwrap().circular);
        let greedy_samples = ProtocolForm {
            samples: 3,
            ..ProtocolForm::default()
        };
        assert!(
            greedy_samples
                .protocol()
                .unwrap_err()
                .contains("--temperature")
        );
        let typo = ProtocolForm {
            temperature: "warm".into(),
            ..ProtocolForm::default()
        };
        assert!(typo.protocol().unwrap_err().contains("Temperature"));
    }
}
