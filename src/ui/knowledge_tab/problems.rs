//! The validation problems of the draft, grouped by where they are.

use eframe::egui;

use crate::knowledge::{Problem, Severity};

use super::{KnowledgeState, Selection, View};

impl KnowledgeState {
    pub(super) fn problems_panel(&mut self, ui: &mut egui::Ui) {
        let errors = self
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count();
        let warnings = self.problems.len() - errors;
        ui.heading("Problems");
        ui.horizontal(|ui| {
            let label = ui.label("Token budget per entry");
            ui.add(
                egui::DragValue::new(&mut self.options.token_budget)
                    .range(50..=20_000)
                    .speed(10.0),
            )
            .labelled_by(label.id)
            .on_hover_text("Tokens are estimated as characters / 4 (rounded up)");
        });
        ui.label(
            egui::RichText::new(format!(
                "Near-duplicates: {:.0} % or more of the same words in order (word-level diff ratio). {}",
                self.options.near_duplicate_ratio * 100.0,
                if self.facts.is_some() {
                    "Checked against the loaded dataset's folders and options."
                } else {
                    "Load a dataset to check entries against its folders and options."
                }
            ))
            .small()
            .weak(),
        );
        if self.problems.is_empty() {
            ui.colored_label(egui::Color32::from_rgb(60, 170, 90), "No problems");
            return;
        }
        ui.label(format!("{errors} error(s), {warnings} warning(s)"));
        let mut select = None;
        egui::ScrollArea::vertical()
            .id_salt("problems")
            .auto_shrink([false, false])
            .show(ui, |ui| {
                for p in &self.problems {
                    let (tag, color) = match p.severity {
                        Severity::Error => ("error", ui.visuals().error_fg_color),
                        Severity::Warning => ("warning", ui.visuals().warn_fg_color),
                    };
                    let at = Selection {
                        dataset: p.dataset.clone(),
                        category: p.category.clone(),
                        entry: p.entry.clone(),
                    };
                    let sel = self.selected.as_ref() == Some(&at);
                    let text =
                        egui::RichText::new(format!("{tag}: {}", problem_text(p))).color(color);
                    if ui
                        .selectable_label(sel, text)
                        .on_hover_text(&p.message)
                        .clicked()
                    {
                        select = Some(at);
                    }
                }
            });
        if let Some(s) = select {
            self.select(s);
            self.view = View::Edit;
        }
    }
}

/// The problem without its location prefix (the list is grouped by location anyway).
pub(super) fn problem_text(p: &Problem) -> String {
    let at = match &p.entry {
        Some(e) => format!("{}/{}/{e}: ", p.dataset, p.category),
        None => format!("{}/{}: ", p.dataset, p.category),
    };
    let short = p.message.strip_prefix(&at).unwrap_or(&p.message);
    match &p.entry {
        Some(e) => format!("{}/{e}: {short}", p.category),
        None => format!("{}: {short}", p.category),
    }
}
