//! Inspect: browse the dataset, look at a part image and its questions.

use eframe::egui;

use super::jobs::Job;
use super::{Command, LoadedDataset};
use crate::dataset::{ImageEntry, category_of, dataset_of, is_normal_key};
use crate::vision::{DecodeLimits, decode_rgb8};

/// Which images the browser lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    #[default]
    All,
    Normal,
    Defect,
}

struct DecodedImage {
    key: String,
    size: [usize; 2],
    rgb: Vec<u8>,
}

#[derive(Default)]
pub struct InspectState {
    pub filter: String,
    pub condition: Condition,
    pub category: Option<String>,
    pub selected: Option<String>,
    texture: Option<(String, egui::TextureHandle)>,
    decode_job: Option<Job<DecodedImage>>,
    pub image_error: Option<String>,
    pending_decode: Option<String>,
    pending_texture: Option<DecodedImage>,
}

impl InspectState {
    pub fn select(&mut self, key: String) {
        if self.selected.as_deref() != Some(&key) {
            self.selected = Some(key.clone());
            self.pending_decode = Some(key);
            self.image_error = None;
        }
    }

    pub fn busy(&self) -> bool {
        self.decode_job.is_some()
    }

    /// The size of the decoded query image, once it is shown.
    pub fn shown_image(&self) -> Option<(&str, [usize; 2])> {
        self.texture.as_ref().map(|(k, t)| (k.as_str(), t.size()))
    }

    pub(super) fn poll(&mut self, dataset: Option<&LoadedDataset>) {
        if let (Some(key), Some(d)) = (self.pending_decode.take(), dataset) {
            match d.root.resolve(&key) {
                Ok(path) => {
                    let k = key.clone();
                    self.decode_job = Some(Job::spawn("decode image", move || {
                        let img = decode_rgb8(&path, DecodeLimits::default())?;
                        let size = [img.width() as usize, img.height() as usize];
                        Ok(DecodedImage {
                            key: k,
                            size,
                            rgb: img.into_raw(),
                        })
                    }));
                }
                Err(e) => self.image_error = Some(format!("{key}: {e}")),
            }
        } else if let Some(key) = self.pending_decode.take() {
            // No dataset yet: keep the request until one arrives.
            self.pending_decode = Some(key);
        }
        if let Some(result) = self.decode_job.as_mut().and_then(Job::take) {
            self.decode_job = None;
            match result {
                Ok(img) => self.pending_texture = Some(img),
                Err(e) => self.image_error = Some(e),
            }
        }
    }

    fn visible_keys<'a>(&self, d: &'a LoadedDataset) -> Vec<&'a str> {
        let needle = self.filter.to_lowercase();
        d.dataset
            .entries
            .keys()
            .map(String::as_str)
            .filter(|k| match self.condition {
                Condition::All => true,
                Condition::Normal => is_normal_key(k),
                Condition::Defect => !is_normal_key(k),
            })
            .filter(|k| self.category.as_deref().is_none_or(|c| category_of(k) == c))
            .filter(|k| needle.is_empty() || k.to_lowercase().contains(&needle))
            .collect()
    }

    pub(super) fn ui(
        &mut self,
        ui: &mut egui::Ui,
        dataset: Option<&LoadedDataset>,
        dataset_error: Option<&str>,
    ) -> Vec<Command> {
        let mut commands = Vec::new();
        let Some(d) = dataset else {
            ui.centered_and_justified(|ui| match dataset_error {
                Some(e) => {
                    ui.colored_label(
                        ui.visuals().error_fg_color,
                        format!(
                            "The dataset could not be loaded.\n{e}\nChoose another one in Settings."
                        ),
                    );
                }
                None => {
                    ui.spinner();
                }
            });
            return commands;
        };
        if let Some(img) = self.pending_texture.take() {
            let color = egui::ColorImage::from_rgb(img.size, &img.rgb);
            let tex =
                ui.ctx()
                    .load_texture(format!("query:{}", img.key), color, Default::default());
            self.texture = Some((img.key, tex));
        }
        egui::Panel::left("browser")
            .resizable(true)
            .default_size(320.0)
            .show(ui, |ui| self.browser(ui, d, &mut commands));
        egui::CentralPanel::default().show(ui, |ui| self.detail(ui, d));
        commands
    }

    fn browser(&mut self, ui: &mut egui::Ui, d: &LoadedDataset, commands: &mut Vec<Command>) {
        ui.heading("Images");
        ui.horizontal(|ui| {
            let label = ui.label("Search");
            ui.text_edit_singleline(&mut self.filter)
                .labelled_by(label.id);
        });
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.condition, Condition::All, "All");
            ui.selectable_value(&mut self.condition, Condition::Normal, "Normal");
            ui.selectable_value(&mut self.condition, Condition::Defect, "Defect");
        });
        let mut categories: Vec<String> = Vec::new();
        for k in d.dataset.entries.keys() {
            let c = format!("{}/{}", dataset_of(k), category_of(k));
            if !categories.contains(&c) {
                categories.push(c);
            }
        }
        egui::ComboBox::from_label("Category")
            .selected_text(self.category.as_deref().unwrap_or("All categories"))
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut self.category, None, "All categories");
                for c in &categories {
                    let cat = c.split('/').nth(1).unwrap_or_default().to_string();
                    ui.selectable_value(&mut self.category, Some(cat), c);
                }
            });
        ui.separator();
        let keys = self.visible_keys(d);
        ui.label(format!(
            "{} of {} images",
            keys.len(),
            d.dataset.image_count()
        ));
        // Arrow keys move through the filtered list.
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
            let pos = self
                .selected
                .as_deref()
                .and_then(|s| keys.iter().position(|k| *k == s));
            let next = match pos {
                Some(p) => (p as isize + step).clamp(0, keys.len() as isize - 1) as usize,
                None => 0,
            };
            commands.push(Command::SelectImage(keys[next].to_string()));
        }
        let row_h = ui.text_style_height(&egui::TextStyle::Body) + 4.0;
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .show_rows(ui, row_h, keys.len(), |ui, range| {
                for key in &keys[range] {
                    let selected = self.selected.as_deref() == Some(*key);
                    let tag = if is_normal_key(key) { "OK " } else { "DEF" };
                    let label = format!("{tag}  {key}");
                    if ui.selectable_label(selected, label).clicked() {
                        commands.push(Command::SelectImage(key.to_string()));
                    }
                }
            });
    }

    fn detail(&mut self, ui: &mut egui::Ui, d: &LoadedDataset) {
        let Some(key) = self.selected.clone() else {
            ui.centered_and_justified(|ui| {
                ui.label("Pick an image on the left to inspect it.");
            });
            return;
        };
        let Some(entry) = d.dataset.entries.get(&key) else {
            ui.label(format!("{key} is not in this dataset."));
            return;
        };
        ui.horizontal(|ui| {
            ui.heading(&key);
            if is_normal_key(&key) {
                ui.colored_label(egui::Color32::from_rgb(60, 170, 90), "normal");
            } else {
                ui.colored_label(egui::Color32::from_rgb(220, 110, 60), "defect");
            }
        });
        ui.separator();
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .show(ui, |ui| {
                self.image_view(ui, &key);
                ui.add_space(8.0);
                questions_view(ui, entry);
            });
    }

    fn image_view(&self, ui: &mut egui::Ui, key: &str) {
        if let Some(err) = &self.image_error {
            ui.colored_label(ui.visuals().error_fg_color, err);
            return;
        }
        match &self.texture {
            Some((k, tex)) if k == key => {
                let [w, h] = tex.size();
                let max_w = ui.available_width().min(720.0);
                let scale = (max_w / w as f32).min(480.0 / h as f32).min(4.0);
                ui.add(
                    egui::Image::new((tex.id(), egui::vec2(w as f32 * scale, h as f32 * scale)))
                        .corner_radius(4.0),
                )
                .on_hover_text(format!("{key}\n{w} x {h} px"));
            }
            _ => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Decoding image...");
                });
            }
        }
    }
}

fn questions_view(ui: &mut egui::Ui, entry: &ImageEntry) {
    ui.heading(format!("Questions ({})", entry.conversation.len()));
    for (i, q) in entry.conversation.iter().enumerate() {
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.horizontal(|ui| {
                ui.strong(format!("{}.", i + 1));
                ui.label(egui::RichText::new(q.qtype.as_str()).italics());
            });
            ui.label(&q.text);
            for (letter, text) in &q.options {
                let correct = *letter == q.answer;
                let line = format!("{letter}. {text}");
                if correct {
                    ui.label(egui::RichText::new(format!("{line}   (ground truth)")).strong());
                } else {
                    ui.label(line);
                }
            }
        });
    }
}
