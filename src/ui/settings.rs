//! Settings: which dataset, root and knowledge base the app works on.

use eframe::egui;

use super::{Command, Persisted};

pub(super) fn ui(ui: &mut egui::Ui, draft: &mut Persisted, current: &Persisted) -> Vec<Command> {
    let mut commands = Vec::new();
    ui.heading("Data");
    egui::Grid::new("settings_data")
        .num_columns(3)
        .spacing([8.0, 6.0])
        .show(ui, |ui| {
            path_row(
                ui,
                "Dataset file (mmad.json)",
                &mut draft.dataset_path,
                false,
            );
            path_row(ui, "Dataset root folder", &mut draft.dataset_root, true);
            path_row(ui, "Knowledge base", &mut draft.knowledge_path, false);
        });
    ui.add_space(8.0);
    ui.horizontal(|ui| {
        let changed = draft.dataset_path != current.dataset_path
            || draft.dataset_root != current.dataset_root
            || draft.knowledge_path != current.knowledge_path;
        if ui
            .add_enabled(changed, egui::Button::new("Apply"))
            .clicked()
        {
            if draft.dataset_path != current.dataset_path
                || draft.dataset_root != current.dataset_root
            {
                commands.push(Command::LoadDataset {
                    path: draft.dataset_path.clone(),
                    root: draft.dataset_root.clone(),
                });
            }
            if draft.knowledge_path != current.knowledge_path {
                commands.push(Command::LoadKnowledge(draft.knowledge_path.clone()));
            }
        }
        if ui.button("Reset to the bundled sample").clicked() {
            let defaults = Persisted::default();
            draft.dataset_path = defaults.dataset_path;
            draft.dataset_root = defaults.dataset_root;
            draft.knowledge_path = defaults.knowledge_path;
        }
    });
    ui.add_space(12.0);
    ui.heading("Appearance");
    let mut dark = current.dark_mode;
    if ui.checkbox(&mut dark, "Dark theme").changed() {
        commands.push(Command::SetDarkMode(dark));
    }
    commands
}

fn path_row(ui: &mut egui::Ui, label: &str, path: &mut std::path::PathBuf, folder: bool) {
    let label = ui.label(label);
    let mut text = path.display().to_string();
    if ui
        .add(egui::TextEdit::singleline(&mut text).desired_width(520.0))
        .labelled_by(label.id)
        .changed()
    {
        *path = text.into();
    }
    if ui.button("Browse...").clicked() {
        // Without a desktop portal the dialog returns None; the text field still works.
        let dialog = rfd::FileDialog::new();
        let picked = if folder {
            dialog.pick_folder()
        } else {
            dialog.add_filter("JSON", &["json"]).pick_file()
        };
        if let Some(p) = picked {
            *path = p;
        }
    }
    ui.end_row();
}
