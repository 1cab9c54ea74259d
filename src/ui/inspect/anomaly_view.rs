//! Inspect's Anomaly view: the anomaly map of the query against the k normal
//! references the memory retrieves for it (`anomaly::Detector` on the app's
//! memory), drawn over the query in the compare panel with a colour bar, the
//! category threshold marked on it, and the region boxes with their nine-grid
//! names.
//!
//! The map is computed on a background job only while the view is on screen,
//! again whenever the query, the memory, k or the backbone (Settings) changes;
//! the last map stays on screen meanwhile. The detector lives across jobs, so a category's reference
//! features and threshold are computed once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eframe::egui::{self, Color32, Pos2, Rect, Stroke, pos2, vec2};

use crate::anomaly::regions::Region;
use crate::anomaly::{Backbone, Detector, References};
use crate::ui::LoadedReference;
use crate::ui::compare::QueryOverlay;
use crate::ui::jobs::Job;
use crate::vision::{DecodeLimits, decode_rgb8};

/// Default and largest number of references a query is compared with.
pub const DEFAULT_K: usize = crate::anomaly::map::DEFAULT_K;
pub const MAX_K: usize = 16;
/// Leave-one-out needs a normal to leave out and one to compare it with.
pub const MIN_NORMALS_FOR_THRESHOLD: usize = 2;
const BOX_COLOR: Color32 = Color32::from_rgb(255, 255, 255);

/// Colour stops of the heat map, value (0 = normal, 1 = twice the threshold)
/// to colour; the threshold sits at 0.5, where green turns yellow.
const STOPS: [(f32, [u8; 3]); 5] = [
    (0.0, [20, 20, 120]),
    (0.3, [0, 150, 255]),
    (0.5, [40, 220, 120]),
    (0.7, [255, 220, 0]),
    (1.0, [220, 20, 20]),
];

/// The heat map's colour at `t` in `[0, 1]` (clamped; NaN counts as 0).
pub fn heat_color(t: f32) -> [u8; 3] {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    for pair in STOPS.windows(2) {
        let ((t0, c0), (t1, c1)) = (pair[0], pair[1]);
        if t <= t1 {
            let f = (t - t0) / (t1 - t0);
            let mix = |a: u8, b: u8| (a as f32 + (b as f32 - a as f32) * f).round() as u8;
            return [mix(c0[0], c1[0]), mix(c0[1], c1[1]), mix(c0[2], c1[2])];
        }
    }
    STOPS[STOPS.len() - 1].1
}

/// The map value coloured at the top of the scale: twice the threshold, so the
/// threshold is mid-scale (as `anomaly --out-map` greys it); without a
/// threshold, the score; else 1.
pub fn scale_top(score: f32, threshold: f32) -> f32 {
    if threshold > 0.0 {
        2.0 * threshold
    } else if score > 0.0 {
        score
    } else {
        1.0
    }
}

/// What a map was asked for; a change in any part computes it again.
#[derive(Debug, Clone, PartialEq)]
struct MapKey {
    image: PathBuf,
    category: Option<String>,
    generation: u64,
    k: usize,
    backbone: Backbone,
}

/// The detector, reused while the memory, k and backbone stay the same.
#[derive(Clone)]
struct SharedDetector {
    generation: u64,
    k: usize,
    backbone: Backbone,
    detector: Arc<Mutex<Detector>>,
}

/// What the view shows of a finished map.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalySummary {
    pub score: f32,
    pub threshold: f32,
    pub category: String,
    /// Normals of the category in the memory.
    pub normals: usize,
    pub regions: Vec<Region>,
    /// Memory paths of the references compared with.
    pub references: Vec<String>,
    pub k: usize,
    pub backbone: String,
    pub ms: u64,
    /// The query's size in pixels (region boxes are in these).
    pub image_size: [u32; 2],
}

impl AnomalySummary {
    /// A threshold exists (the category has enough normals for leave-one-out).
    pub fn has_threshold(&self) -> bool {
        self.normals >= MIN_NORMALS_FOR_THRESHOLD
    }

    pub fn above(&self) -> bool {
        self.score > self.threshold
    }

    /// "score 0.83 against the category threshold 0.41 (above: anomalous)".
    pub fn verdict(&self) -> String {
        if !self.has_threshold() {
            return format!(
                "score {:.2}; no threshold: category {} has {} normal image{} in the memory, \
                 and a threshold needs at least {MIN_NORMALS_FOR_THRESHOLD}",
                self.score,
                self.category,
                self.normals,
                if self.normals == 1 { "" } else { "s" }
            );
        }
        let (word, meaning) = if self.above() {
            ("above", "anomalous")
        } else {
            ("below", "normal")
        };
        format!(
            "score {:.2} against the category threshold {:.2} ({word}: {meaning})",
            self.score, self.threshold
        )
    }
}

struct Computed {
    key: MapKey,
    shared: SharedDetector,
    summary: AnomalySummary,
    heat: egui::ColorImage,
}

struct Shown {
    key: MapKey,
    summary: AnomalySummary,
    texture: egui::TextureHandle,
}

/// Why there is no map to compute.
#[derive(Debug, Clone, PartialEq)]
enum Missing {
    NoImage,
    MemoryLoading,
    MemoryFailed(String),
}

/// The Anomaly view's state.
pub struct AnomalyView {
    opacity: f32,
    k: usize,
    shared: Option<SharedDetector>,
    job: Option<(MapKey, Job<Computed>)>,
    wanted: Option<MapKey>,
    shown: Option<Shown>,
    error: Option<String>,
    missing: Option<Missing>,
}

impl Default for AnomalyView {
    fn default() -> Self {
        AnomalyView {
            opacity: 0.5,
            k: DEFAULT_K,
            shared: None,
            job: None,
            wanted: None,
            shown: None,
            error: None,
            missing: Some(Missing::NoImage),
        }
    }
}

impl AnomalyView {
    pub fn opacity(&self) -> f32 {
        self.opacity
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    /// The map on screen, when it is the one for the current query, memory and k.
    pub fn result(&self) -> Option<&AnomalySummary> {
        self.shown
            .as_ref()
            .filter(|s| Some(&s.key) == self.wanted.as_ref())
            .map(|s| &s.summary)
    }

    /// The last error, if the current map failed.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Collects a finished map and, when `visible`, starts the one the current
    /// query needs. `image` is the query and its dataset category; `backbone`
    /// the settings' map backbone.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn update(
        &mut self,
        ctx: &egui::Context,
        image: Option<(&Path, Option<&str>)>,
        reference: Option<&LoadedReference>,
        reference_error: Option<&str>,
        generation: u64,
        backbone: &Backbone,
        visible: bool,
    ) {
        self.collect(ctx);
        let Some((path, category)) = image else {
            self.missing = Some(Missing::NoImage);
            return;
        };
        let Some(reference) = reference else {
            self.missing = Some(match reference_error {
                Some(e) => Missing::MemoryFailed(e.to_string()),
                None => Missing::MemoryLoading,
            });
            return;
        };
        self.missing = None;
        let key = MapKey {
            image: path.to_path_buf(),
            category: category.map(str::to_owned),
            generation,
            k: self.k,
            backbone: backbone.clone(),
        };
        if self.wanted.as_ref() != Some(&key) {
            self.wanted = Some(key.clone());
            self.error = None;
        }
        let done = self.shown.as_ref().is_some_and(|s| s.key == key);
        let running = self.job.as_ref().is_some_and(|(k, _)| *k == key);
        if !visible || done || running || self.error.is_some() {
            return;
        }
        let shared = self
            .shared
            .clone()
            .filter(|s| s.generation == generation && s.k == self.k && s.backbone == *backbone);
        let reference = reference.clone();
        let job_key = key.clone();
        // A newer request replaces the old job; its result is simply dropped.
        self.job = Some((
            key,
            Job::spawn("anomaly map", move || compute(job_key, shared, reference)),
        ));
        ctx.request_repaint_after(Duration::from_millis(50));
    }

    fn collect(&mut self, ctx: &egui::Context) {
        let Some((_, job)) = self.job.as_mut() else {
            return;
        };
        let Some(result) = job.take() else {
            ctx.request_repaint_after(Duration::from_millis(50));
            return;
        };
        self.job = None;
        match result {
            Ok(c) => {
                self.shared = Some(c.shared);
                if Some(&c.key) == self.wanted.as_ref() {
                    let texture = ctx.load_texture("anomaly-map", c.heat, Default::default());
                    self.shown = Some(Shown {
                        key: c.key,
                        summary: c.summary,
                        texture,
                    });
                    self.error = None;
                }
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn message(&self) -> Option<String> {
        match &self.missing {
            Some(Missing::NoImage) => return Some("No query image".into()),
            Some(Missing::MemoryLoading) => {
                return Some(
                    "No reference memory yet: the anomaly map compares the query with normal \
                     images of the memory (it is loading, or none is set in Settings)"
                        .into(),
                );
            }
            Some(Missing::MemoryFailed(e)) => {
                return Some(format!(
                    "No anomaly map: the reference memory failed to load ({e})"
                ));
            }
            None => {}
        }
        self.error
            .as_ref()
            .map(|e| format!("Anomaly map failed: {e}"))
    }
}

/// Decodes the query, scores it (building the detector, which loads the
/// backbone's model, when there is none for this memory, k and backbone) and
/// colours the map.
fn compute(
    key: MapKey,
    shared: Option<SharedDetector>,
    reference: LoadedReference,
) -> anyhow::Result<Computed> {
    let start = Instant::now();
    let shared = match shared {
        Some(s) => s,
        None => SharedDetector {
            generation: key.generation,
            k: key.k,
            backbone: key.backbone.clone(),
            detector: Arc::new(Mutex::new(Detector::shared(
                reference.memory.clone(),
                reference.embedder.clone(),
                key.backbone.clone(),
                References::Nearest(key.k),
            )?)),
        },
    };
    let image = decode_rgb8(&key.image, DecodeLimits::default())?;
    // A panic in an earlier job leaves the caches as they were: still usable.
    let mut detector = shared
        .detector
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let detection = detector.detect(&image, key.category.as_deref())?;
    let normals = detector.normals_in(&detection.category);
    let backbone = detector.backbone().to_string();
    drop(detector);
    let top = scale_top(detection.score, detection.threshold);
    let side = detection.map.side;
    let mut rgba = Vec::with_capacity(side * side * 4);
    for v in &detection.map.values {
        let [r, g, b] = heat_color(v / top);
        rgba.extend_from_slice(&[r, g, b, 255]);
    }
    let heat = egui::ColorImage::from_rgba_unmultiplied([side, side], &rgba);
    let summary = AnomalySummary {
        score: detection.score,
        threshold: detection.threshold,
        category: detection.category,
        normals,
        regions: detection.regions,
        references: detection.references,
        k: key.k,
        backbone,
        ms: start.elapsed().as_millis() as u64,
        image_size: [image.width(), image.height()],
    };
    Ok(Computed {
        key,
        shared,
        summary,
        heat,
    })
}

impl QueryOverlay for AnomalyView {
    fn toolbar(&mut self, ui: &mut egui::Ui) {
        let label = ui.label("Heatmap opacity");
        ui.add(egui::Slider::new(&mut self.opacity, 0.0..=1.0).show_value(false))
            .labelled_by(label.id);
        let label = ui.label("References");
        ui.add(egui::DragValue::new(&mut self.k).range(1..=MAX_K))
            .labelled_by(label.id)
            .on_hover_text("How many retrieved normal images the query is compared with");
        if let Some(s) = self.result().or(self.shown.as_ref().map(|s| &s.summary)) {
            ui.weak(format!(
                "{} · k {} · {} backbone · {} ms",
                s.category, s.k, s.backbone, s.ms
            ))
            .on_hover_text(format!("Compared with: {}", s.references.join(", ")));
        }
        if self.job.is_some() {
            ui.spinner();
        }
    }

    fn caption(&self) -> String {
        if let Some(m) = self.message() {
            return format!("Anomaly: {m}");
        }
        match (self.result(), &self.shown) {
            (Some(s), _) => format!("Anomaly: {}", s.verdict()),
            (None, Some(_)) => "Anomaly: computing the map… (the last map stays meanwhile)".into(),
            (None, None) => "Anomaly: computing the map…".into(),
        }
    }

    fn paint(&mut self, ui: &mut egui::Ui, pane: Rect, image_rect: Rect) {
        let painter = ui.painter_at(pane);
        if self.message().is_some() {
            return;
        }
        // The last map stays until the new one arrives.
        let Some(shown) = &self.shown else {
            return;
        };
        let tint = Color32::WHITE.gamma_multiply(self.opacity.clamp(0.0, 1.0));
        let uv = Rect::from_min_max(Pos2::ZERO, pos2(1.0, 1.0));
        painter.image(shown.texture.id(), image_rect, uv, tint);
        let s = &shown.summary;
        let [w, h] = s.image_size.map(|v| v.max(1) as f32);
        let to_screen = |x: f32, y: f32| {
            pos2(
                image_rect.min.x + x / w * image_rect.width(),
                image_rect.min.y + y / h * image_rect.height(),
            )
        };
        for r in &s.regions {
            let rect = Rect::from_min_max(
                to_screen(r.x as f32, r.y as f32),
                to_screen((r.x + r.w) as f32, (r.y + r.h) as f32),
            );
            painter.rect_stroke(
                rect,
                0.0,
                Stroke::new(2.0, BOX_COLOR),
                egui::StrokeKind::Outside,
            );
            let text = format!("{} {:.2}", r.grid, r.score);
            let at = rect.left_top() - vec2(0.0, 2.0);
            let galley = painter.layout_no_wrap(text, egui::FontId::proportional(13.0), BOX_COLOR);
            let bg =
                Rect::from_min_size(at - vec2(0.0, galley.size().y), galley.size()).expand(2.0);
            painter.rect_filled(bg, 2.0, Color32::from_black_alpha(170));
            painter.galley(bg.min + vec2(2.0, 2.0), galley, BOX_COLOR);
        }
        self.colour_bar(ui, pane, s);
    }
}

impl AnomalyView {
    /// The scale in the pane's lower right corner, the threshold marked.
    fn colour_bar(&self, ui: &mut egui::Ui, pane: Rect, s: &AnomalySummary) {
        let painter = ui.painter_at(pane);
        let bar = Rect::from_min_size(pane.right_bottom() + vec2(-236.0, -48.0), vec2(200.0, 12.0));
        let backdrop = bar.expand2(vec2(18.0, 22.0)).translate(vec2(0.0, 8.0));
        painter.rect_filled(backdrop, 4.0, Color32::from_black_alpha(160));
        let steps = 50;
        for i in 0..steps {
            let t = (i as f32 + 0.5) / steps as f32;
            let [r, g, b] = heat_color(t);
            let x0 = bar.min.x + bar.width() * i as f32 / steps as f32;
            let x1 = bar.min.x + bar.width() * (i + 1) as f32 / steps as f32;
            let cell = Rect::from_min_max(pos2(x0, bar.min.y), pos2(x1 + 0.5, bar.max.y));
            painter.rect_filled(cell, 0.0, Color32::from_rgb(r, g, b));
        }
        let top = scale_top(s.score, s.threshold);
        let small = egui::FontId::proportional(11.0);
        painter.text(
            bar.left_bottom() + vec2(0.0, 2.0),
            egui::Align2::LEFT_TOP,
            "0",
            small.clone(),
            Color32::WHITE,
        );
        painter.text(
            bar.right_bottom() + vec2(0.0, 2.0),
            egui::Align2::RIGHT_TOP,
            format!("{top:.2}"),
            small.clone(),
            Color32::WHITE,
        );
        let label_rect =
            Rect::from_min_size(bar.left_top() - vec2(0.0, 17.0), vec2(bar.width(), 15.0));
        let label = if s.has_threshold() {
            let x = bar.min.x + bar.width() * (s.threshold / top).clamp(0.0, 1.0);
            painter.line_segment(
                [pos2(x, bar.min.y - 3.0), pos2(x, bar.max.y + 3.0)],
                Stroke::new(2.0, Color32::WHITE),
            );
            format!("threshold {:.2}", s.threshold)
        } else {
            "no threshold".to_string()
        };
        ui.put(
            label_rect,
            egui::Label::new(egui::RichText::new(label).small().color(Color32::WHITE)),
        );
        let x = bar.min.x + bar.width() * (s.score / top).clamp(0.0, 1.0);
        // The query's score, a small triangle under the bar.
        painter.add(egui::Shape::convex_polygon(
            vec![
                pos2(x, bar.max.y + 1.0),
                pos2(x - 4.0, bar.max.y + 8.0),
                pos2(x + 4.0, bar.max.y + 8.0),
            ],
            Color32::WHITE,
            Stroke::NONE,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_run_from_navy_through_green_at_the_threshold_to_red() {
        assert_eq!(heat_color(0.0), [20, 20, 120]);
        assert_eq!(heat_color(0.5), [40, 220, 120]);
        assert_eq!(heat_color(1.0), [220, 20, 20]);
        assert_eq!(heat_color(7.0), heat_color(1.0));
        assert_eq!(heat_color(-1.0), heat_color(0.0));
        assert_eq!(heat_color(f32::NAN), heat_color(0.0));
        // Between stops the colour is a blend of its neighbours.
        let mid = heat_color(0.6);
        assert!(mid[0] > 40 && mid[0] < 255, "{mid:?}");
    }

    #[test]
    fn the_threshold_sits_mid_scale() {
        assert_eq!(scale_top(0.9, 0.4), 0.8);
        assert_eq!(scale_top(0.9, 0.0), 0.9);
        assert_eq!(scale_top(0.0, 0.0), 1.0);
    }

    fn summary(score: f32, threshold: f32, normals: usize) -> AnomalySummary {
        AnomalySummary {
            score,
            threshold,
            category: "washer".into(),
            normals,
            regions: Vec::new(),
            references: Vec::new(),
            k: 4,
            backbone: "descriptor".into(),
            ms: 12,
            image_size: [100, 80],
        }
    }

    #[test]
    fn verdict_says_score_threshold_and_side() {
        assert_eq!(
            summary(0.834, 0.411, 8).verdict(),
            "score 0.83 against the category threshold 0.41 (above: anomalous)"
        );
        assert_eq!(
            summary(0.2, 0.41, 8).verdict(),
            "score 0.20 against the category threshold 0.41 (below: normal)"
        );
        let lone = summary(0.5, 0.0, 1).verdict();
        assert!(
            lone.contains("no threshold") && lone.contains("1 normal image "),
            "{lone}"
        );
    }
}
