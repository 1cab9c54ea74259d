//! Example images beside an entry, decoded to thumbnails off the UI thread.

use std::collections::HashMap;
use std::path::PathBuf;

use eframe::egui;

use crate::knowledge::{DatasetFacts, NORMAL_ENTRY};
use crate::ui::LoadedDataset;
use crate::ui::jobs::Job;
use crate::vision::{DecodeLimits, decode_rgb8};

use super::{EXAMPLES, KnowledgeState, Selection, THUMB_PX};

impl KnowledgeState {
    pub(super) fn poll_thumbs(&mut self, ctx: &egui::Context) {
        for thumb in self.thumbs.values_mut() {
            if let Thumb::Loading(job) = thumb
                && let Some(result) = job.take()
            {
                *thumb = match result {
                    Ok((rgb, size)) => Thumb::Ready(ctx.load_texture(
                        "knowledge-example",
                        egui::ColorImage::from_rgb(size, &rgb),
                        Default::default(),
                    )),
                    Err(e) => Thumb::Failed(e),
                };
            }
        }
    }
}

/// Image keys to show beside an entry: normal images for `good` (and for a
/// category), the defect folder's images for a defect entry.
pub(super) fn example_keys(
    facts: Option<&DatasetFacts>,
    sel: &Selection,
    entry: &str,
) -> Vec<String> {
    let Some(cf) = facts.and_then(|f| f.category(&sel.dataset, &sel.category)) else {
        return Vec::new();
    };
    let list = if entry == NORMAL_ENTRY {
        Some(&cf.normal_images)
    } else {
        cf.defect_images.get(entry)
    };
    list.map(|l| l.iter().take(EXAMPLES).cloned().collect())
        .unwrap_or_default()
}

pub(super) fn examples_ui(
    ui: &mut egui::Ui,
    thumbs: &mut HashMap<PathBuf, Thumb>,
    dataset: Option<&LoadedDataset>,
    keys: &[String],
    entry: &str,
) {
    let Some(d) = dataset else {
        ui.label("Load a dataset to see example images.");
        return;
    };
    if keys.is_empty() {
        ui.label(format!(
            "No images of `{entry}` in the loaded dataset (no folder of that name)."
        ));
        return;
    }
    ui.label(if entry == NORMAL_ENTRY {
        "Normal images of this category".to_string()
    } else {
        format!("Images in the `{entry}` folder")
    });
    ui.horizontal_wrapped(|ui| {
        for key in keys {
            // By file, not by key: another dataset (or root) may use the same keys.
            let path = match d.root.resolve(key) {
                Ok(path) => path,
                Err(e) => {
                    ui.colored_label(ui.visuals().error_fg_color, format!("{key}: {e}"));
                    continue;
                }
            };
            let thumb = thumbs.entry(path.clone()).or_insert_with(|| {
                Thumb::Loading(Job::spawn("decode example", move || {
                    let img = decode_rgb8(&path, DecodeLimits::default())?;
                    let small = image::imageops::thumbnail(&img, THUMB_PX, THUMB_PX);
                    let size = [small.width() as usize, small.height() as usize];
                    Ok((small.into_raw(), size))
                }))
            });
            match thumb {
                Thumb::Ready(tex) => {
                    let [w, h] = tex.size();
                    ui.add(
                        egui::Image::new((tex.id(), egui::vec2(w as f32, h as f32)))
                            .corner_radius(3.0),
                    )
                    .on_hover_text(key);
                }
                Thumb::Loading(_) => {
                    ui.add_sized([THUMB_PX as f32, THUMB_PX as f32], egui::Spinner::new());
                }
                Thumb::Failed(e) => {
                    ui.colored_label(ui.visuals().error_fg_color, format!("{key}: {e}"));
                }
            }
        }
    });
}

pub(super) enum Thumb {
    Loading(Job<(Vec<u8>, [usize; 2])>),
    Ready(egui::TextureHandle),
    Failed(String),
}
