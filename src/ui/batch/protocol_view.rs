//! A question's protocol replies in the drill-down: every sample and every
//! rotation (or the one shuffled order) with its raw reply and letter, and how
//! sure the answer is.

use eframe::egui;

use crate::runs::journal::JournalRecord;

/// Draws nothing for a plain record.
pub fn replies(ui: &mut egui::Ui, r: &JournalRecord) {
    if let Some(c) = &r.confidence {
        ui.horizontal_wrapped(|ui| {
            ui.weak("confidence");
            if let Some(a) = c.agreement {
                let of = if r.samples.is_empty() {
                    r.rotations.len()
                } else {
                    r.samples.len()
                };
                let agreeing = (a * of as f64).round() as usize;
                ui.label(format!("agreement {:.0}% ({agreeing} of {of})", a * 100.0));
            }
            if let Some(probs) = &c.letter_probs {
                let each: Vec<String> = probs.iter().map(|(l, p)| format!("{l} {p:.2}")).collect();
                ui.label(format!("letter probabilities: {}", each.join(" · ")));
            }
        });
    }
    if !r.samples.is_empty() {
        egui::CollapsingHeader::new(format!("Samples ({})", r.samples.len()))
            .id_salt(("samples", r.index))
            .default_open(true)
            .show(ui, |ui| {
                egui::Grid::new(("sample_grid", r.index))
                    .num_columns(3)
                    .striped(true)
                    .show(ui, |ui| {
                        for (i, s) in r.samples.iter().enumerate() {
                            ui.weak(format!("sample {}", i + 1));
                            ui.strong(s.letter.as_deref().unwrap_or("no letter"));
                            ui.add(
                                egui::Label::new(egui::RichText::new(&s.raw).monospace()).wrap(),
                            );
                            ui.end_row();
                        }
                    });
            });
    }
    if !r.rotations.is_empty() {
        let title = if r.rotations.len() == 1 {
            "Shuffled order".to_string()
        } else {
            format!("Rotations ({})", r.rotations.len())
        };
        egui::CollapsingHeader::new(title)
            .id_salt(("rotations", r.index))
            .default_open(true)
            .show(ui, |ui| {
                egui::Grid::new(("rotation_grid", r.index))
                    .num_columns(4)
                    .striped(true)
                    .show(ui, |ui| {
                        for rot in &r.rotations {
                            let right =
                                rot.original_letter.as_deref() == Some(r.correct_answer.as_str());
                            ui.weak(format!("order {}", rot.order));
                            ui.strong(format!(
                                "shown {}, original {}",
                                rot.letter.as_deref().unwrap_or("no letter"),
                                rot.original_letter.as_deref().unwrap_or("none")
                            ));
                            ui.label(if right { "right" } else { "wrong" });
                            ui.add(
                                egui::Label::new(egui::RichText::new(&rot.raw).monospace()).wrap(),
                            );
                            ui.end_row();
                        }
                    });
            });
    }
}
