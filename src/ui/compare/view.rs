//! Where the compare panes look: zoom and pan shared by every pane, in query
//! pixels, and the geometry between image and screen.

use eframe::egui::{Pos2, Rect, Vec2, vec2};

use super::CompareMode;

pub const MIN_ZOOM: f32 = 0.05;
pub const MAX_ZOOM: f32 = 64.0;

/// Where both panes look. `pan` is the query-image pixel at the centre of a pane and
/// `zoom` is screen points per query-image pixel, so every pane of the same size
/// shows the same region; the reference is drawn stretched to the query's size.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareView {
    pub zoom: f32,
    pub pan: Vec2,
    pub mode: CompareMode,
    pub show_mask: bool,
    pub mask_opacity: f32,
    /// Flicker phase: the reference is on screen instead of the query.
    pub showing_reference: bool,
}

impl Default for CompareView {
    fn default() -> Self {
        CompareView {
            zoom: 1.0,
            pan: Vec2::ZERO,
            mode: CompareMode::SideBySide,
            show_mask: true,
            mask_opacity: 0.5,
            showing_reference: false,
        }
    }
}

impl CompareView {
    pub fn clamp_zoom(zoom: f32) -> f32 {
        if zoom.is_finite() {
            zoom.clamp(MIN_ZOOM, MAX_ZOOM)
        } else {
            1.0
        }
    }

    /// Where image point `p` (query pixels) lands in `pane`.
    pub fn image_to_screen(&self, pane: Rect, p: Pos2) -> Pos2 {
        pane.center() + (p - self.pan.to_pos2()) * self.zoom
    }

    /// The image point (query pixels) under screen point `s` of `pane`.
    pub fn screen_to_image(&self, pane: Rect, s: Pos2) -> Pos2 {
        self.pan.to_pos2() + (s - pane.center()) / self.zoom
    }

    /// The screen rectangle the whole image of `image_size` pixels covers.
    pub fn image_rect(&self, pane: Rect, image_size: Vec2) -> Rect {
        Rect::from_min_max(
            self.image_to_screen(pane, Pos2::ZERO),
            self.image_to_screen(pane, image_size.to_pos2()),
        )
    }

    /// Multiplies the zoom by `factor`, keeping the image point under `screen_point`
    /// where it is (unless that would push the image off the pane).
    pub fn zoom_toward(&mut self, pane: Rect, screen_point: Pos2, factor: f32, image_size: Vec2) {
        if !factor.is_finite() || factor <= 0.0 {
            return;
        }
        let anchor = self.screen_to_image(pane, screen_point);
        self.zoom = Self::clamp_zoom(self.zoom * factor);
        self.pan = (anchor - (screen_point - pane.center()) / self.zoom).to_vec2();
        self.clamp_pan(image_size);
    }

    /// Moves the view with a drag of `screen_delta` points (the image follows the pointer).
    pub fn pan_by(&mut self, screen_delta: Vec2, image_size: Vec2) {
        self.pan -= screen_delta / self.zoom;
        self.clamp_pan(image_size);
    }

    /// Shows the whole image, centred, as large as the pane allows.
    pub fn fit(&mut self, pane_size: Vec2, image_size: Vec2) {
        if image_size.x <= 0.0 || image_size.y <= 0.0 {
            return;
        }
        self.zoom = Self::clamp_zoom((pane_size.x / image_size.x).min(pane_size.y / image_size.y));
        self.pan = image_size / 2.0;
    }

    /// One image pixel per physical screen pixel, keeping the centre.
    pub fn actual_size(&mut self, pixels_per_point: f32) {
        self.zoom = Self::clamp_zoom(1.0 / pixels_per_point.max(1e-3));
    }

    /// Keeps the pane centre on the image, so it can never be lost off screen.
    pub fn clamp_pan(&mut self, image_size: Vec2) {
        let clamp = |v: f32, max: f32| {
            if v.is_finite() {
                v.clamp(0.0, max.max(0.0))
            } else {
                max / 2.0
            }
        };
        self.pan = vec2(
            clamp(self.pan.x, image_size.x),
            clamp(self.pan.y, image_size.y),
        );
    }
}
