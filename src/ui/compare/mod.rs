//! The query image beside its reference: synchronised zoom and pan, flicker, a
//! difference heat map and the ground-truth mask. Decoding, resizing and the
//! difference run in background [`Job`]s; this module only uploads finished pixels
//! and draws.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use eframe::egui::{self, Color32, Pos2, Rect, Sense, Vec2, pos2, vec2};
use image::RgbImage;
use image::imageops::FilterType;

mod view;

use super::jobs::Job;
use crate::vision::diff::{
    DifferenceOptions, difference_heatmap_with, mask_coverage, mask_overlay, shrink_to_max_side,
};
use crate::vision::{DecodeLimits, decode_rgb8};

/// Longest side of the copy uploaded for display; zoom stays in original pixels.
pub const DISPLAY_MAX_SIDE: u32 = 4096;
pub use view::{CompareView, MAX_ZOOM, MIN_ZOOM};
/// Zoom factor per point of wheel scroll (a wheel notch is about 40 points: ~1.2x).
const WHEEL_ZOOM_RATE: f32 = 0.0045;
const AUTO_FLICKER_SECONDS: f64 = 0.6;
const MASK_COLOR: [u8; 3] = [255, 40, 40];
/// Magnified texels show as crisp squares (pixels are visible past 100%), shrunk
/// ones are smoothed.
const TEXTURE_OPTIONS: egui::TextureOptions = egui::TextureOptions {
    magnification: egui::TextureFilter::Nearest,
    minification: egui::TextureFilter::Linear,
    wrap_mode: egui::TextureWrapMode::ClampToEdge,
    mipmap_mode: Some(egui::TextureFilter::Linear),
};

/// How the two images are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompareMode {
    #[default]
    SideBySide,
    /// One large pane alternating query and reference: small changes jump out.
    Flicker,
    /// The per-pixel difference as a heat map.
    Difference,
    /// The query with a [`QueryOverlay`] over it (Inspect's anomaly map); offered
    /// only where the owner gives one, so it is not in [`CompareMode::ALL`].
    Anomaly,
}

/// A view drawn over the query by the panel's owner, which computes it: its
/// controls, the caption above the pane and its paint on top of the query
/// (sharing the panes' zoom and pan).
pub trait QueryOverlay {
    fn toolbar(&mut self, ui: &mut egui::Ui);
    fn caption(&self) -> String;
    /// `image_rect` is where the whole query lies on screen, `pane` the clip.
    fn paint(&mut self, ui: &mut egui::Ui, pane: Rect, image_rect: Rect);
}

impl CompareMode {
    pub const ALL: [CompareMode; 3] = [
        CompareMode::SideBySide,
        CompareMode::Flicker,
        CompareMode::Difference,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CompareMode::SideBySide => "Side by side",
            CompareMode::Flicker => "Flicker",
            CompareMode::Difference => "Difference",
            CompareMode::Anomaly => "Anomaly",
        }
    }
}

/// The image the query is compared with, and what to say about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceImage {
    pub path: PathBuf,
    /// Shown above the pane, e.g. path, similarity score and embedder.
    pub caption: String,
}

/// A decoded image ready to upload: the display copy and the original size.
struct Decoded {
    path: PathBuf,
    pixels: Arc<RgbImage>,
    color: egui::ColorImage,
    original: [u32; 2],
}

struct Shown {
    path: PathBuf,
    texture: egui::TextureHandle,
    pixels: Arc<RgbImage>,
    original: [u32; 2],
}

/// One image the panel shows: what was asked for, the decode in flight, and what is
/// on screen (the previous image stays until the next one is ready).
#[derive(Default)]
struct ImageSlot {
    requested: Option<PathBuf>,
    caption: String,
    job: Option<Job<Decoded>>,
    shown: Option<Shown>,
    error: Option<String>,
}

impl ImageSlot {
    fn request(&mut self, path: PathBuf, caption: String) {
        self.caption = caption;
        if self.requested.as_ref() == Some(&path) {
            return;
        }
        self.requested = Some(path.clone());
        self.error = None;
        self.job = Some(Job::spawn("decode image", move || {
            decode_for_display(&path)
        }));
    }

    fn clear(&mut self) {
        *self = ImageSlot::default();
    }

    /// Uploads a finished decode. Returns true when a new image went on screen.
    fn poll(&mut self, ctx: &egui::Context, texture_name: &str) -> bool {
        let Some(result) = self.job.as_mut().and_then(Job::take) else {
            return false;
        };
        self.job = None;
        match result {
            Ok(d) if self.requested.as_ref() == Some(&d.path) => {
                let texture = ctx.load_texture(texture_name, d.color, TEXTURE_OPTIONS);
                self.shown = Some(Shown {
                    path: d.path,
                    texture,
                    pixels: d.pixels,
                    original: d.original,
                });
                true
            }
            Ok(_) => false,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    /// The requested image is the one on screen.
    fn current(&self) -> Option<&Shown> {
        self.shown
            .as_ref()
            .filter(|s| self.requested.as_ref() == Some(&s.path) && self.error.is_none())
    }

    fn size(&self) -> Option<Vec2> {
        self.shown
            .as_ref()
            .map(|s| vec2(s.original[0] as f32, s.original[1] as f32))
    }
}

fn decode_for_display(path: &Path) -> anyhow::Result<Decoded> {
    let image = decode_rgb8(path, DecodeLimits::default())?;
    let original = [image.width(), image.height()];
    let pixels = shrink_to_max_side(image, DISPLAY_MAX_SIDE, FilterType::Triangle);
    let color = egui::ColorImage::from_rgb(
        [pixels.width() as usize, pixels.height() as usize],
        pixels.as_raw(),
    );
    Ok(Decoded {
        path: path.to_path_buf(),
        pixels: Arc::new(pixels),
        color,
        original,
    })
}

struct DecodedMask {
    path: PathBuf,
    overlay: egui::ColorImage,
    coverage: f32,
}

struct ShownMask {
    path: PathBuf,
    texture: egui::TextureHandle,
    coverage: f32,
}

fn decode_mask(path: &Path) -> anyhow::Result<DecodedMask> {
    let mask = decode_rgb8(path, DecodeLimits::default())?;
    let coverage = mask_coverage(&mask);
    // Nearest keeps the mask binary when it has to shrink.
    let mask = shrink_to_max_side(mask, DISPLAY_MAX_SIDE, FilterType::Nearest);
    let overlay = mask_overlay(&mask, MASK_COLOR);
    let overlay = egui::ColorImage::from_rgba_unmultiplied(
        [overlay.width() as usize, overlay.height() as usize],
        overlay.as_raw(),
    );
    Ok(DecodedMask {
        path: path.to_path_buf(),
        overlay,
        coverage,
    })
}

/// Which pair (and colouring) a difference image was computed for.
#[derive(Debug, Clone, PartialEq)]
struct DifferenceKey {
    query: PathBuf,
    reference: PathBuf,
    stretch: bool,
}

struct ComputedDifference {
    key: DifferenceKey,
    color: egui::ColorImage,
    mean: f32,
    max: u8,
}

struct ShownDifference {
    key: DifferenceKey,
    texture: egui::TextureHandle,
    mean: f32,
    max: u8,
}

/// What a pane draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PaneContent {
    Query,
    Reference,
    Difference,
}

/// The compare widget: query and reference images with a shared view.
pub struct ComparePanel {
    view: CompareView,
    query: ImageSlot,
    reference: ImageSlot,
    mask_requested: Option<PathBuf>,
    mask_job: Option<Job<DecodedMask>>,
    mask: Option<ShownMask>,
    mask_error: Option<String>,
    difference_job: Option<(DifferenceKey, Job<ComputedDifference>)>,
    difference: Option<ShownDifference>,
    difference_error: Option<String>,
    /// Colour the heat map so its largest difference is white.
    pub stretch_difference: bool,
    /// Flicker by itself.
    pub auto_flicker: bool,
    last_flip: f64,
    /// Refit on the next frame (new image size, or the Fit button).
    fit_pending: bool,
    /// The view is fitted: refit when the pane changes size.
    fitted: bool,
    fitted_pane: Vec2,
    panes: Vec<Rect>,
}

impl Default for ComparePanel {
    fn default() -> Self {
        ComparePanel {
            view: CompareView::default(),
            query: ImageSlot::default(),
            reference: ImageSlot::default(),
            mask_requested: None,
            mask_job: None,
            mask: None,
            mask_error: None,
            difference_job: None,
            difference: None,
            difference_error: None,
            stretch_difference: true,
            auto_flicker: false,
            last_flip: 0.0,
            fit_pending: true,
            fitted: false,
            fitted_pane: Vec2::ZERO,
            panes: Vec::new(),
        }
    }
}

impl ComparePanel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Shows `path` as the query once it is decoded; the previous image stays on
    /// screen meanwhile. Asking again for the same path only updates the caption.
    pub fn set_query(&mut self, path: PathBuf, caption: String) {
        self.query.request(path, caption);
    }

    pub fn set_reference(&mut self, reference: Option<ReferenceImage>) {
        match reference {
            Some(r) => self.reference.request(r.path, r.caption),
            None => {
                self.reference.clear();
                self.difference = None;
                self.difference_job = None;
                self.difference_error = None;
            }
        }
    }

    /// The ground-truth mask of the query (white = defect), or none.
    pub fn set_mask(&mut self, mask: Option<PathBuf>) {
        if self.mask_requested == mask {
            return;
        }
        self.mask_requested = mask.clone();
        self.mask_error = None;
        self.mask_job = mask.map(|p| Job::spawn("decode mask", move || decode_mask(&p)));
        if self.mask_requested.is_none() {
            self.mask = None;
        }
    }

    /// Collects finished work and uploads it; starts the difference when a new pair
    /// of images is on screen.
    pub fn poll(&mut self, ctx: &egui::Context) {
        let old_size = self.query.size();
        if self.query.poll(ctx, "compare-query") && self.query.size() != old_size {
            self.fit_pending = true;
        }
        let had_frame = old_size.is_some() || self.reference.size().is_some();
        if self.reference.poll(ctx, "compare-reference") && !had_frame {
            self.fit_pending = true;
        }
        if let Some(result) = self.mask_job.as_mut().and_then(Job::take) {
            self.mask_job = None;
            match result {
                Ok(m) if self.mask_requested.as_ref() == Some(&m.path) => {
                    let texture = ctx.load_texture("compare-mask", m.overlay, TEXTURE_OPTIONS);
                    self.mask = Some(ShownMask {
                        path: m.path,
                        texture,
                        coverage: m.coverage,
                    });
                }
                Ok(_) => {}
                Err(e) => self.mask_error = Some(e),
            }
        }
        self.poll_difference(ctx);
        if self.busy() {
            // Background threads finish without an input event.
            ctx.request_repaint_after(Duration::from_millis(50));
        }
    }

    fn wanted_difference(&self) -> Option<(DifferenceKey, Arc<RgbImage>, Arc<RgbImage>)> {
        let q = self.query.current()?;
        let r = self.reference.current()?;
        let key = DifferenceKey {
            query: q.path.clone(),
            reference: r.path.clone(),
            stretch: self.stretch_difference,
        };
        Some((key, q.pixels.clone(), r.pixels.clone()))
    }

    fn poll_difference(&mut self, ctx: &egui::Context) {
        if let Some((key, job)) = self.difference_job.as_mut()
            && let Some(result) = job.take()
        {
            let key = key.clone();
            self.difference_job = None;
            match result {
                Ok(d) => {
                    let texture = ctx.load_texture("compare-difference", d.color, TEXTURE_OPTIONS);
                    self.difference = Some(ShownDifference {
                        key: d.key,
                        texture,
                        mean: d.mean,
                        max: d.max,
                    });
                    self.difference_error = None;
                }
                Err(e) => self.difference_error = Some(format!("{}: {e}", key.query.display())),
            }
        }
        let Some((key, query, reference)) = self.wanted_difference() else {
            return;
        };
        let done = self.difference.as_ref().is_some_and(|d| d.key == key);
        let running = self.difference_job.as_ref().is_some_and(|(k, _)| *k == key);
        if done || running {
            return;
        }
        let stretch = key.stretch;
        let job_key = key.clone();
        let job = Job::spawn("image difference", move || {
            let map = difference_heatmap_with(&query, &reference, DifferenceOptions { stretch });
            let color = egui::ColorImage::from_rgb(
                [map.image.width() as usize, map.image.height() as usize],
                map.image.as_raw(),
            );
            Ok(ComputedDifference {
                key: job_key,
                color,
                mean: map.mean,
                max: map.max,
            })
        });
        self.difference_job = Some((key, job));
    }

    pub fn busy(&self) -> bool {
        self.query.job.is_some()
            || self.reference.job.is_some()
            || self.mask_job.is_some()
            || self.difference_job.is_some()
    }

    /// The requested query (and reference, if one is set) are decoded and on screen.
    pub fn ready(&self) -> bool {
        self.query.current().is_some()
            && (self.reference.requested.is_none() || self.reference.current().is_some())
    }

    /// The first problem to show: query, reference, mask, then difference.
    pub fn error(&self) -> Option<&str> {
        self.query
            .error
            .as_deref()
            .or(self.reference.error.as_deref())
            .or(self.mask_error.as_deref())
            .or(self.difference_error.as_deref())
    }

    pub fn view(&self) -> &CompareView {
        &self.view
    }

    pub fn view_mut(&mut self) -> &mut CompareView {
        &mut self.view
    }

    /// The panes drawn last frame (side by side: query then reference), for tests
    /// and for callers that place overlays.
    pub fn pane_rects(&self) -> &[Rect] {
        &self.panes
    }

    /// The query's size in original pixels, once decoded.
    pub fn query_size(&self) -> Option<[u32; 2]> {
        self.query.shown.as_ref().map(|s| s.original)
    }

    /// Mean and largest difference of the pair on screen, once computed.
    pub fn difference_stats(&self) -> Option<(f32, u8)> {
        let (key, _, _) = self.wanted_difference()?;
        self.difference
            .as_ref()
            .filter(|d| d.key == key)
            .map(|d| (d.mean, d.max))
    }

    /// A mask is set and decoded for the query on screen.
    fn mask_ready(&self) -> Option<&ShownMask> {
        let mask = self.mask.as_ref()?;
        (self.mask_requested.as_ref() == Some(&mask.path) && self.query.current().is_some())
            .then_some(mask)
    }

    /// The frame both panes share: the query's size, or the reference's until a
    /// query is decoded.
    fn frame_size(&self) -> Option<Vec2> {
        self.query.size().or(self.reference.size())
    }

    /// Draws toolbar, captions and panes into all the space `ui` has left (give it a
    /// sized child ui to bound it).
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.ui_with(ui, None);
    }

    /// [`ComparePanel::ui`] with the Anomaly mode offered, drawn by `overlay`.
    pub fn ui_with<'o>(
        &mut self,
        ui: &mut egui::Ui,
        mut overlay: Option<&mut (dyn QueryOverlay + 'o)>,
    ) {
        self.poll(ui.ctx());
        self.keys_and_timers(ui.ctx());
        if self.view.mode == CompareMode::Anomaly && overlay.is_none() {
            self.view.mode = CompareMode::SideBySide;
        }
        self.toolbar(ui, overlay.as_deref_mut());
        ui.add_space(4.0);
        match self.view.mode {
            CompareMode::Anomaly => {
                if let Some(overlay) = overlay {
                    self.single(ui, overlay.caption(), PaneContent::Query);
                    if let (Some(frame), Some(&pane), Some(_)) =
                        (self.frame_size(), self.panes.first(), self.query.current())
                    {
                        overlay.paint(ui, pane, self.view.image_rect(pane, frame));
                    }
                }
            }
            CompareMode::SideBySide => self.side_by_side(ui),
            CompareMode::Flicker => {
                let content = if self.view.showing_reference {
                    PaneContent::Reference
                } else {
                    PaneContent::Query
                };
                let caption = match content {
                    PaneContent::Reference => format!("Reference: {}", self.reference_caption()),
                    _ => format!("Query: {}", self.query_caption()),
                };
                self.single(ui, caption, content);
            }
            CompareMode::Difference => {
                let caption = match self.difference_stats() {
                    Some((mean, max)) => format!(
                        "Mean difference {mean:.1}, max {max} (of 255; largest channel difference per pixel)"
                    ),
                    None => "Difference: |query - reference|, largest channel per pixel".into(),
                };
                self.single(ui, caption, PaneContent::Difference);
            }
        }
    }

    fn keys_and_timers(&mut self, ctx: &egui::Context) {
        if self.view.mode != CompareMode::Flicker {
            return;
        }
        // Taken before the buttons are drawn, so a focused button does not also fire.
        if !ctx.egui_wants_keyboard_input()
            && ctx.input_mut(|i| i.consume_key(egui::Modifiers::NONE, egui::Key::Space))
        {
            self.view.showing_reference = !self.view.showing_reference;
        }
        if self.auto_flicker {
            let now = ctx.input(|i| i.time);
            let since = now - self.last_flip;
            if since >= AUTO_FLICKER_SECONDS {
                self.view.showing_reference = !self.view.showing_reference;
                self.last_flip = now;
                ctx.request_repaint_after(Duration::from_secs_f64(AUTO_FLICKER_SECONDS));
            } else {
                ctx.request_repaint_after(Duration::from_secs_f64(AUTO_FLICKER_SECONDS - since));
            }
        }
    }

    fn toolbar<'o>(&mut self, ui: &mut egui::Ui, overlay: Option<&mut (dyn QueryOverlay + 'o)>) {
        ui.horizontal_wrapped(|ui| {
            for mode in CompareMode::ALL {
                ui.selectable_value(&mut self.view.mode, mode, mode.label());
            }
            if overlay.is_some() {
                let mode = CompareMode::Anomaly;
                ui.selectable_value(&mut self.view.mode, mode, mode.label())
                    .on_hover_text("The anomaly map over the query, against normal references");
            }
            ui.separator();
            if ui
                .button("Fit")
                .on_hover_text("Show the whole image (double-click a pane)")
                .clicked()
            {
                self.fit_pending = true;
            }
            if ui
                .button("100%")
                .on_hover_text("One image pixel per screen pixel")
                .clicked()
            {
                self.view.actual_size(ui.ctx().pixels_per_point());
                self.fitted = false;
            }
            let percent = self.view.zoom * ui.ctx().pixels_per_point() * 100.0;
            ui.label(format!("Zoom {percent:.0}%"))
                .on_hover_text("Mouse wheel zooms toward the pointer; drag to pan");
            match self.view.mode {
                CompareMode::Flicker => {
                    ui.separator();
                    if ui
                        .button("Swap")
                        .on_hover_text("Show the other image (Space)")
                        .clicked()
                    {
                        self.view.showing_reference = !self.view.showing_reference;
                    }
                    if ui.checkbox(&mut self.auto_flicker, "Auto").changed() {
                        self.last_flip = ui.ctx().input(|i| i.time);
                    }
                }
                CompareMode::Difference => {
                    ui.separator();
                    ui.checkbox(&mut self.stretch_difference, "Stretch contrast")
                        .on_hover_text("Colour the largest difference white");
                }
                CompareMode::SideBySide | CompareMode::Anomaly => {}
            }
            if self.mask_requested.is_some() {
                ui.separator();
                ui.checkbox(&mut self.view.show_mask, "Show mask")
                    .on_hover_text("Ground-truth defect region, tinted red over the query");
                let label = ui.label("Mask opacity");
                ui.add_enabled(
                    self.view.show_mask,
                    egui::Slider::new(&mut self.view.mask_opacity, 0.0..=1.0).show_value(false),
                )
                .labelled_by(label.id);
                if let Some(m) = self.mask_ready() {
                    ui.weak(format!("{:.1}% of the image", m.coverage * 100.0));
                }
            }
        });
        // A row of its own, so the view's controls never push the shared ones
        // out of the panel.
        if self.view.mode == CompareMode::Anomaly
            && let Some(overlay) = overlay
        {
            ui.horizontal_wrapped(|ui| overlay.toolbar(ui));
        }
        if let Some(e) = &self.mask_error {
            ui.colored_label(ui.visuals().error_fg_color, format!("Mask: {e}"));
        }
    }

    fn query_caption(&self) -> String {
        caption_or_path(&self.query)
    }

    fn reference_caption(&self) -> String {
        if self.reference.requested.is_none() {
            return "none".into();
        }
        let mut caption = caption_or_path(&self.reference);
        if let (Some(q), Some(r)) = (self.query.shown.as_ref(), self.reference.shown.as_ref()) {
            let (qa, ra) = (aspect(q.original), aspect(r.original));
            if (qa - ra).abs() > 0.01 * qa {
                caption.push_str(" (stretched to the query's shape)");
            }
        }
        caption
    }

    fn side_by_side(&mut self, ui: &mut egui::Ui) {
        let full = drawing_area(ui);
        let gap = 8.0;
        let caption_h = ui.text_style_height(&egui::TextStyle::Body) + 6.0;
        let pane_w = ((full.width() - gap) / 2.0).max(40.0);
        let pane_h = (full.height() - caption_h).max(80.0);
        let q_caption = Rect::from_min_size(full.min, vec2(pane_w, caption_h));
        let r_caption = q_caption.translate(vec2(pane_w + gap, 0.0));
        let q_pane = Rect::from_min_size(full.min + vec2(0.0, caption_h), vec2(pane_w, pane_h));
        let r_pane = q_pane.translate(vec2(pane_w + gap, 0.0));
        ui.allocate_rect(q_pane.union(r_pane).union(q_caption), Sense::hover());
        put_caption(ui, q_caption, format!("Query: {}", self.query_caption()));
        put_caption(
            ui,
            r_caption,
            format!("Reference: {}", self.reference_caption()),
        );
        // All input first, then paint: both panes draw this frame's view.
        let rq = self.pane_input(ui, q_pane, "compare_query_pane", "Query pane");
        let rr = self.pane_input(ui, r_pane, "compare_reference_pane", "Reference pane");
        self.apply_fit(q_pane.size());
        self.paint_pane(ui, q_pane, PaneContent::Query, &rq);
        self.paint_pane(ui, r_pane, PaneContent::Reference, &rr);
        self.panes = vec![q_pane, r_pane];
    }

    fn single(&mut self, ui: &mut egui::Ui, caption: String, content: PaneContent) {
        let full = drawing_area(ui);
        let caption_h = ui.text_style_height(&egui::TextStyle::Body) + 6.0;
        let caption_rect = Rect::from_min_size(full.min, vec2(full.width(), caption_h));
        let pane = Rect::from_min_size(
            full.min + vec2(0.0, caption_h),
            vec2(
                full.width().max(40.0),
                (full.height() - caption_h).max(80.0),
            ),
        );
        ui.allocate_rect(pane.union(caption_rect), Sense::hover());
        put_caption(ui, caption_rect, caption);
        let (id, label) = match content {
            PaneContent::Query => ("compare_query_pane", "Query pane"),
            PaneContent::Reference => ("compare_reference_pane", "Reference pane"),
            PaneContent::Difference => ("compare_difference_pane", "Difference pane"),
        };
        let response = self.pane_input(ui, pane, id, label);
        self.apply_fit(pane.size());
        self.paint_pane(ui, pane, content, &response);
        self.panes = vec![pane];
    }

    fn apply_fit(&mut self, pane_size: Vec2) {
        let Some(frame) = self.frame_size() else {
            return;
        };
        if self.fit_pending || (self.fitted && self.fitted_pane != pane_size) {
            self.view.fit(pane_size, frame);
            self.fit_pending = false;
            self.fitted = true;
            self.fitted_pane = pane_size;
        }
    }

    /// Wheel zoom toward the pointer, drag to pan, double-click to fit.
    fn pane_input(
        &mut self,
        ui: &mut egui::Ui,
        pane: Rect,
        id: &str,
        label: &'static str,
    ) -> egui::Response {
        let response = ui.interact(pane, ui.make_persistent_id(id), Sense::CLICK | Sense::DRAG);
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, label));
        let Some(frame) = self.frame_size() else {
            return response;
        };
        if response.dragged() {
            let delta = response.drag_delta();
            if delta != Vec2::ZERO {
                self.view.pan_by(delta, frame);
                self.fitted = false;
            }
        }
        if response.double_clicked() {
            self.fit_pending = true;
        }
        if let Some(pointer) = response.hover_pos() {
            let (scroll, pinch) = ui.input(|i| (i.smooth_scroll_delta, i.zoom_delta()));
            let factor = pinch * (scroll.y * WHEEL_ZOOM_RATE).exp();
            if factor != 1.0 {
                self.view.zoom_toward(pane, pointer, factor, frame);
                self.fitted = false;
                // The wheel zoomed the image; an enclosing scroll area must not scroll too.
                ui.ctx().input_mut(|i| i.smooth_scroll_delta = Vec2::ZERO);
            }
        }
        response
    }

    fn paint_pane(
        &self,
        ui: &mut egui::Ui,
        pane: Rect,
        content: PaneContent,
        response: &egui::Response,
    ) {
        let painter = ui.painter_at(pane);
        painter.rect_filled(pane, 2.0, ui.visuals().extreme_bg_color);
        let frame = self.frame_size();
        let uv = Rect::from_min_max(Pos2::ZERO, pos2(1.0, 1.0));
        let slot = match content {
            PaneContent::Query => Some(&self.query),
            PaneContent::Reference => Some(&self.reference),
            PaneContent::Difference => None,
        };
        let mut message: Option<(String, bool)> = None;
        let mut decoding = false;
        match slot {
            Some(slot) => {
                if let Some(e) = &slot.error {
                    message = Some((e.clone(), true));
                } else if slot.requested.is_none() {
                    let text = match content {
                        PaneContent::Reference => "No reference yet",
                        _ => "No query image",
                    };
                    message = Some((text.into(), false));
                } else if let (Some(shown), Some(frame)) = (&slot.shown, frame) {
                    let rect = self.view.image_rect(pane, frame);
                    painter.image(shown.texture.id(), rect, uv, Color32::WHITE);
                    decoding = slot.job.is_some();
                } else {
                    decoding = true;
                }
            }
            None => {
                if let Some(e) = self.query.error.as_ref().or(self.reference.error.as_ref()) {
                    message = Some((e.clone(), true));
                } else if self.query.requested.is_none() {
                    message = Some(("No query image".into(), false));
                } else if self.reference.requested.is_none() {
                    message = Some(("No reference yet: the difference needs one".into(), false));
                } else if let Some(e) = &self.difference_error {
                    message = Some((e.clone(), true));
                } else {
                    let key = self.wanted_difference().map(|(k, _, _)| k);
                    match (&self.difference, frame) {
                        (Some(d), Some(frame)) if Some(&d.key) == key.as_ref() => {
                            let rect = self.view.image_rect(pane, frame);
                            painter.image(d.texture.id(), rect, uv, Color32::WHITE);
                        }
                        _ => decoding = true,
                    }
                }
            }
        }
        let on_query_frame = matches!(content, PaneContent::Query | PaneContent::Difference);
        if on_query_frame
            && self.view.show_mask
            && let (Some(mask), Some(frame)) = (self.mask_ready(), frame)
            && message.is_none()
        {
            let rect = self.view.image_rect(pane, frame);
            let tint = Color32::WHITE.gamma_multiply(self.view.mask_opacity.clamp(0.0, 1.0));
            painter.image(mask.texture.id(), rect, uv, tint);
        }
        let stroke_color = if response.hovered() {
            ui.visuals().widgets.hovered.bg_stroke.color
        } else {
            ui.visuals().widgets.noninteractive.bg_stroke.color
        };
        painter.rect_stroke(
            pane,
            2.0,
            egui::Stroke::new(1.0, stroke_color),
            egui::StrokeKind::Inside,
        );
        if let Some((text, is_error)) = message {
            let color = if is_error {
                ui.visuals().error_fg_color
            } else {
                ui.visuals().weak_text_color()
            };
            let area = Rect::from_center_size(
                pane.center(),
                vec2(
                    (pane.width() - 32.0).max(40.0),
                    (pane.height() - 32.0).clamp(20.0, 120.0),
                ),
            );
            ui.scope_builder(
                egui::UiBuilder::new()
                    .max_rect(area)
                    .layout(egui::Layout::top_down(egui::Align::Center)),
                |ui| ui.add(egui::Label::new(egui::RichText::new(text).color(color)).wrap()),
            );
        } else if decoding {
            let has_picture = match slot {
                Some(s) => s.shown.is_some(),
                None => false,
            };
            let text = if slot.is_some() {
                "Decoding…"
            } else {
                "Computing difference…"
            };
            if has_picture {
                // The previous image stays; a small spinner says a new one is coming.
                let corner =
                    Rect::from_min_size(pane.right_top() + vec2(-26.0, 6.0), vec2(20.0, 20.0));
                egui::Spinner::new().paint_at(ui, corner);
            } else {
                let area =
                    Rect::from_center_size(pane.center(), vec2(pane.width().min(220.0), 28.0));
                ui.scope_builder(egui::UiBuilder::new().max_rect(area), |ui| {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label(text);
                    });
                });
            }
        }
    }
}

/// The space left in `ui`; inside a vertical scroll area, where it is unbounded, a
/// height in proportion to the width.
fn drawing_area(ui: &egui::Ui) -> Rect {
    let full = ui.available_rect_before_wrap();
    if full.height().is_finite() && full.height() < 20_000.0 {
        full
    } else {
        Rect::from_min_size(
            full.min,
            vec2(full.width(), (full.width() * 0.5).clamp(240.0, 900.0)),
        )
    }
}

fn caption_or_path(slot: &ImageSlot) -> String {
    match (&slot.requested, slot.caption.trim()) {
        (_, c) if !c.is_empty() => c.to_string(),
        (Some(p), _) => p.display().to_string(),
        (None, _) => "none".into(),
    }
}

fn aspect(size: [u32; 2]) -> f32 {
    size[0] as f32 / size[1].max(1) as f32
}

fn put_caption(ui: &mut egui::Ui, rect: Rect, text: String) {
    ui.scope_builder(
        egui::UiBuilder::new()
            .max_rect(rect)
            .layout(egui::Layout::left_to_right(egui::Align::Center)),
        |ui| {
            ui.add(egui::Label::new(egui::RichText::new(&text).strong()).truncate())
                .on_hover_text(&text);
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pane(x: f32, w: f32, h: f32) -> Rect {
        Rect::from_min_size(pos2(x, 40.0), vec2(w, h))
    }

    #[test]
    fn zooming_toward_a_point_keeps_that_image_point_under_it() {
        let image = vec2(640.0, 480.0);
        let p = pane(0.0, 500.0, 400.0);
        let mut view = CompareView::default();
        view.fit(p.size(), image);
        let cursor = pos2(130.0, 95.0);
        let before = view.screen_to_image(p, cursor);
        for factor in [1.7, 3.0, 0.8, 10.0] {
            view.zoom_toward(p, cursor, factor, image);
            let after = view.screen_to_image(p, cursor);
            assert!(
                (after - before).length() < 1e-3,
                "{factor}: {before:?} -> {after:?}"
            );
        }
        assert!(view.zoom > 1.0);
    }

    #[test]
    fn panes_of_equal_size_map_an_image_point_to_the_same_place() {
        let image = vec2(300.0, 200.0);
        let left = pane(0.0, 400.0, 300.0);
        let right = pane(408.0, 400.0, 300.0);
        let mut view = CompareView::default();
        view.fit(left.size(), image);
        view.zoom_toward(right, pos2(600.0, 150.0), 2.5, image);
        view.pan_by(vec2(-33.0, 12.0), image);
        for point in [pos2(0.0, 0.0), pos2(150.0, 100.0), pos2(299.0, 7.0)] {
            let a = view.image_to_screen(left, point) - left.min;
            let b = view.image_to_screen(right, point) - right.min;
            assert!((a - b).length() < 1e-4, "{point:?}");
            let back = view.screen_to_image(right, view.image_to_screen(right, point));
            assert!((back - point).length() < 1e-3);
        }
    }

    #[test]
    fn fit_shows_the_whole_image_centred() {
        let image = vec2(1000.0, 250.0);
        let p = pane(10.0, 400.0, 300.0);
        let mut view = CompareView {
            zoom: 7.0,
            ..CompareView::default()
        };
        view.fit(p.size(), image);
        assert_eq!(view.zoom, 0.4);
        let rect = view.image_rect(p, image);
        assert!(p.expand(1e-3).contains_rect(rect), "{rect:?} in {p:?}");
        assert!((rect.width() - p.width()).abs() < 1e-3);
        assert!((rect.center() - p.center()).length() < 1e-3);
    }

    #[test]
    fn zoom_and_pan_are_clamped() {
        let image = vec2(100.0, 100.0);
        let p = pane(0.0, 200.0, 200.0);
        let mut view = CompareView::default();
        view.zoom_toward(p, p.center(), 1e6, image);
        assert_eq!(view.zoom, MAX_ZOOM);
        view.zoom_toward(p, p.center(), 1e-9, image);
        assert_eq!(view.zoom, MIN_ZOOM);
        view.zoom_toward(p, p.center(), f32::NAN, image);
        assert_eq!(view.zoom, MIN_ZOOM);
        view.zoom = 1.0;
        view.pan_by(vec2(1e5, -1e5), image);
        assert_eq!(
            view.pan,
            vec2(0.0, 100.0),
            "the pane centre stays on the image"
        );
        view.actual_size(2.0);
        assert_eq!(view.zoom, 0.5);
        assert_eq!(CompareView::clamp_zoom(f32::INFINITY), 1.0);
    }

    #[test]
    fn dragging_moves_the_image_with_the_pointer() {
        let image = vec2(400.0, 400.0);
        let p = pane(0.0, 200.0, 200.0);
        let mut view = CompareView {
            zoom: 2.0,
            pan: vec2(200.0, 200.0),
            ..CompareView::default()
        };
        let point = pos2(210.0, 190.0);
        let before = view.image_to_screen(p, point);
        view.pan_by(vec2(15.0, -4.0), image);
        let after = view.image_to_screen(p, point);
        assert!((after - before - vec2(15.0, -4.0)).length() < 1e-4);
    }
}
