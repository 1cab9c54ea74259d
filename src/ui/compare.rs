//! TEMPORARY minimal shim of the compare widget so that the Inspect tab builds and
//! its tests run; the real widget (synchronised zoom and pan, flicker, difference,
//! mask overlay) comes from its own branch and replaces this file.

use std::path::PathBuf;

use eframe::egui;

use super::jobs::Job;
use crate::vision::{DecodeLimits, decode_rgb8};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompareMode {
    #[default]
    SideBySide,
    Flicker,
    Difference,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceImage {
    pub path: PathBuf,
    pub caption: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompareView {
    pub zoom: f32,
    pub pan: egui::Vec2,
    pub mode: CompareMode,
    pub show_mask: bool,
    pub mask_opacity: f32,
    pub showing_reference: bool,
}

impl Default for CompareView {
    fn default() -> Self {
        CompareView {
            zoom: 1.0,
            pan: egui::Vec2::ZERO,
            mode: CompareMode::SideBySide,
            show_mask: true,
            mask_opacity: 0.4,
            showing_reference: false,
        }
    }
}

struct Decoded {
    size: [usize; 2],
    rgb: Vec<u8>,
}

#[derive(Default)]
struct Slot {
    path: Option<PathBuf>,
    caption: String,
    job: Option<Job<Decoded>>,
    texture: Option<(PathBuf, egui::TextureHandle)>,
    error: Option<String>,
}

impl Slot {
    fn set(&mut self, path: Option<PathBuf>, caption: String) {
        self.caption = caption;
        if self.path == path {
            return;
        }
        self.path = path.clone();
        self.error = None;
        self.job = path.map(|p| {
            Job::spawn("decode image", move || {
                let img = decode_rgb8(&p, DecodeLimits::default())?;
                Ok(Decoded {
                    size: [img.width() as usize, img.height() as usize],
                    rgb: img.into_raw(),
                })
            })
        });
    }

    fn poll(&mut self, ctx: &egui::Context, name: &str) {
        if let Some(result) = self.job.as_mut().and_then(Job::take) {
            self.job = None;
            match result {
                Ok(d) => {
                    let color = egui::ColorImage::from_rgb(d.size, &d.rgb);
                    let tex = ctx.load_texture(name, color, Default::default());
                    if let Some(p) = self.path.clone() {
                        self.texture = Some((p, tex));
                    }
                }
                Err(e) => self.error = Some(e),
            }
        }
    }

    fn ready(&self) -> bool {
        match &self.path {
            None => true,
            Some(p) => self.texture.as_ref().is_some_and(|(t, _)| t == p) || self.error.is_some(),
        }
    }

    fn ui(&self, ui: &mut egui::Ui, width: f32) {
        ui.vertical(|ui| {
            ui.set_width(width);
            if let Some(e) = &self.error {
                ui.colored_label(ui.visuals().error_fg_color, e);
            } else if let Some((_, tex)) = &self.texture {
                let [w, h] = tex.size();
                let scale = (width / w as f32).min(ui.available_height().max(120.0) / h as f32);
                ui.add(egui::Image::new((
                    tex.id(),
                    egui::vec2(w as f32 * scale, h as f32 * scale),
                )));
            } else if self.path.is_some() {
                ui.spinner();
            }
            if !self.caption.is_empty() {
                ui.label(&self.caption);
            }
        });
    }
}

#[derive(Default)]
pub struct ComparePanel {
    query: Slot,
    reference: Slot,
    mask: Option<PathBuf>,
    view: CompareView,
}

impl ComparePanel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_query(&mut self, path: PathBuf, caption: String) {
        self.query.set(Some(path), caption);
    }

    pub fn set_reference(&mut self, reference: Option<ReferenceImage>) {
        match reference {
            Some(r) => self.reference.set(Some(r.path), r.caption),
            None => self.reference.set(None, String::new()),
        }
    }

    pub fn set_mask(&mut self, mask: Option<PathBuf>) {
        self.mask = mask;
    }

    pub fn poll(&mut self, ctx: &egui::Context) {
        self.query.poll(ctx, "compare:query");
        self.reference.poll(ctx, "compare:reference");
    }

    pub fn busy(&self) -> bool {
        self.query.job.is_some() || self.reference.job.is_some()
    }

    pub fn ready(&self) -> bool {
        self.query.path.is_some() && self.query.ready() && self.reference.ready()
    }

    pub fn error(&self) -> Option<&str> {
        self.query
            .error
            .as_deref()
            .or(self.reference.error.as_deref())
    }

    pub fn view(&self) -> &CompareView {
        &self.view
    }

    pub fn view_mut(&mut self) -> &mut CompareView {
        &mut self.view
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let width = (ui.available_width() - 12.0) / 2.0;
        ui.horizontal_top(|ui| {
            self.query.ui(ui, width);
            self.reference.ui(ui, width);
        });
        if let Some(m) = &self.mask {
            ui.weak(format!("mask: {}", m.display()));
        }
    }
}
