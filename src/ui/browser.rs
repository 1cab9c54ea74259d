//! TEMPORARY minimal shim of the dataset browser (the former Inspect list) so that
//! the Inspect tab builds and its tests run; the real widget comes from its own
//! branch and replaces this file.

use eframe::egui;

use super::LoadedDataset;
use crate::dataset::{category_of, dataset_of, is_normal_key};

/// Which images the browser lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    #[default]
    All,
    Normal,
    Defect,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrowserFilter {
    pub text: String,
    pub condition: Condition,
    pub category: Option<String>,
}

#[derive(Default)]
pub struct DatasetBrowser {
    pub filter: BrowserFilter,
}

impl DatasetBrowser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn busy(&self) -> bool {
        false
    }

    pub fn visible_keys(&self, d: &LoadedDataset) -> Vec<String> {
        let needle = self.filter.text.to_lowercase();
        d.dataset
            .entries
            .keys()
            .filter(|k| match self.filter.condition {
                Condition::All => true,
                Condition::Normal => is_normal_key(k),
                Condition::Defect => !is_normal_key(k),
            })
            .filter(|k| {
                self.filter
                    .category
                    .as_deref()
                    .is_none_or(|c| category_of(k) == c)
            })
            .filter(|k| needle.is_empty() || k.to_lowercase().contains(&needle))
            .cloned()
            .collect()
    }

    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        d: &LoadedDataset,
        selected: Option<&str>,
    ) -> Option<String> {
        let mut clicked = None;
        ui.horizontal(|ui| {
            let label = ui.label("Search");
            ui.text_edit_singleline(&mut self.filter.text)
                .labelled_by(label.id);
        });
        ui.horizontal(|ui| {
            let c = &mut self.filter.condition;
            ui.selectable_value(c, Condition::All, "All");
            ui.selectable_value(c, Condition::Normal, "Normal");
            ui.selectable_value(c, Condition::Defect, "Defect");
        });
        let mut categories: Vec<String> = Vec::new();
        for k in d.dataset.entries.keys() {
            let c = format!("{}/{}", dataset_of(k), category_of(k));
            if !categories.contains(&c) {
                categories.push(c);
            }
        }
        egui::ComboBox::from_label("Category")
            .selected_text(self.filter.category.as_deref().unwrap_or("All categories"))
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut self.filter.category, None, "All categories");
                for c in &categories {
                    let cat = c.split('/').nth(1).unwrap_or_default().to_string();
                    ui.selectable_value(&mut self.filter.category, Some(cat), c);
                }
            });
        let keys = self.visible_keys(d);
        ui.label(format!(
            "{} of {} images",
            keys.len(),
            d.dataset.image_count()
        ));
        let step = ui.input(|i| {
            if i.key_pressed(egui::Key::ArrowDown) {
                1
            } else if i.key_pressed(egui::Key::ArrowUp) {
                -1
            } else {
                0
            }
        });
        if step != 0 && !keys.is_empty() && !ui.ctx().egui_wants_keyboard_input() {
            let pos = selected.and_then(|s| keys.iter().position(|k| k == s));
            let next = match pos {
                Some(p) => (p as isize + step).clamp(0, keys.len() as isize - 1) as usize,
                None => 0,
            };
            clicked = Some(keys[next].clone());
        }
        let row_h = ui.text_style_height(&egui::TextStyle::Body) + 4.0;
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .show_rows(ui, row_h, keys.len(), |ui, range| {
                for key in &keys[range] {
                    let tag = if is_normal_key(key) { "OK " } else { "DEF" };
                    if ui
                        .selectable_label(selected == Some(key.as_str()), format!("{tag}  {key}"))
                        .clicked()
                    {
                        clicked = Some(key.clone());
                    }
                }
            });
        clicked
    }
}
