//! The dataset browser: filters, a count, and a virtualised list of the images with
//! thumbnails decoded in the background (a few at a time, cached by key).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use eframe::egui::{self, Color32, Rect, Sense, vec2};

use super::LoadedDataset;
use super::jobs::Job;
use crate::dataset::{category_of, dataset_of, is_normal_key};
use crate::vision::diff::fit_within;
use crate::vision::{DecodeLimits, decode_rgb8};

pub const THUMBNAIL_SIDE: u32 = 64;
/// Thumbnail decodes running at once; more would only slow the visible ones down.
const MAX_THUMBNAIL_JOBS: usize = 4;
/// About 16 MiB of 64 px textures; the least recently drawn go first.
const MAX_CACHED_THUMBNAILS: usize = 1024;
const ROW_PADDING: f32 = 4.0;

/// Which images the browser lists, by MMAD's normal/abnormal rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageKind {
    #[default]
    All,
    Normal,
    Defect,
}

impl ImageKind {
    pub const ALL: [ImageKind; 3] = [ImageKind::All, ImageKind::Normal, ImageKind::Defect];

    pub fn label(self) -> &'static str {
        match self {
            ImageKind::All => "All",
            ImageKind::Normal => "Normal",
            ImageKind::Defect => "Defect",
        }
    }

    pub fn matches(self, key: &str) -> bool {
        match self {
            ImageKind::All => true,
            ImageKind::Normal => is_normal_key(key),
            ImageKind::Defect => !is_normal_key(key),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrowserFilter {
    /// The dataset folder (first key component), or all.
    pub dataset: Option<String>,
    /// The category (second key component), or all.
    pub category: Option<String>,
    pub kind: ImageKind,
    /// Case-insensitive text the key must contain.
    pub search: String,
}

impl BrowserFilter {
    pub fn matches(&self, key: &str) -> bool {
        let needle = self.search.trim().to_lowercase();
        self.kind.matches(key)
            && self.dataset.as_deref().is_none_or(|d| dataset_of(key) == d)
            && self
                .category
                .as_deref()
                .is_none_or(|c| category_of(key) == c)
            && (needle.is_empty() || key.to_lowercase().contains(&needle))
    }
}

/// What a key says about its image: `good`, or the defect type folder.
pub fn image_type(key: &str) -> &str {
    let parts: Vec<&str> = key.split('/').collect();
    let split = parts
        .iter()
        .rposition(|c| *c == "test" || *c == "train" || *c == "image");
    match split {
        Some(s) if s + 2 < parts.len() => parts[s + 1],
        _ if is_normal_key(key) => "good",
        _ => "defect",
    }
}

fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

enum Thumbnail {
    Ready(egui::TextureHandle),
    Failed(String),
}

struct CachedThumbnail {
    thumbnail: Thumbnail,
    last_drawn: u64,
}

pub struct DatasetBrowser {
    pub filter: BrowserFilter,
    thumbnails: HashMap<String, CachedThumbnail>,
    jobs: Vec<(String, Job<egui::ColorImage>)>,
    /// The root the cache belongs to; another dataset empties it.
    cache_root: Option<PathBuf>,
    frame: u64,
    /// Selection seen last frame, to scroll a new one into view once.
    last_selected: Option<String>,
    scroll_offset: f32,
    viewport_height: f32,
}

impl Default for DatasetBrowser {
    fn default() -> Self {
        DatasetBrowser {
            filter: BrowserFilter::default(),
            thumbnails: HashMap::new(),
            jobs: Vec::new(),
            cache_root: None,
            frame: 0,
            last_selected: None,
            scroll_offset: 0.0,
            viewport_height: 0.0,
        }
    }
}

impl DatasetBrowser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The keys the filters let through, in dataset order.
    pub fn visible_keys(&self, dataset: &LoadedDataset) -> Vec<String> {
        dataset
            .dataset
            .entries
            .keys()
            .filter(|k| self.filter.matches(k))
            .cloned()
            .collect()
    }

    pub fn busy(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// Thumbnails decoded and on hand (tests, diagnostics).
    pub fn cached_thumbnails(&self) -> usize {
        self.thumbnails
            .values()
            .filter(|t| matches!(t.thumbnail, Thumbnail::Ready(_)))
            .count()
    }

    /// Draws filters and the list; returns the key picked this frame by a click or
    /// by Up/Down (when no widget has keyboard focus).
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        dataset: &LoadedDataset,
        selected: Option<&str>,
    ) -> Option<String> {
        self.frame += 1;
        if self.cache_root.as_deref() != Some(dataset.root.path()) {
            self.thumbnails.clear();
            self.jobs.clear();
            self.cache_root = Some(dataset.root.path().to_path_buf());
        }
        self.collect_thumbnails(ui.ctx());
        self.filters(ui, dataset);
        let keys = self.visible_keys(dataset);
        ui.label(format!(
            "{} of {} images",
            keys.len(),
            dataset.dataset.image_count()
        ));
        ui.separator();

        let mut picked = self.arrow_keys(ui.ctx(), &keys, selected);
        let target: Option<String> = picked.clone().or(selected.map(str::to_string));
        let target = target.as_deref();
        let row_h = THUMBNAIL_SIDE as f32 + 2.0 * ROW_PADDING;
        let stride = row_h + ui.spacing().item_spacing.y;
        let mut area = egui::ScrollArea::vertical()
            .id_salt("dataset_browser_rows")
            .auto_shrink([false, false]);
        if target != self.last_selected.as_deref()
            && let Some(index) = target.and_then(|t| keys.iter().position(|k| k == t))
            && let Some(offset) = scroll_to_show(
                self.scroll_offset,
                self.viewport_height,
                index as f32 * stride,
                row_h,
            )
        {
            area = area.vertical_scroll_offset(offset);
        }
        self.last_selected = target.map(str::to_string);
        let mut wanted: Vec<String> = Vec::new();
        let output = area.show_rows(ui, row_h, keys.len(), |ui, range| {
            for key in &keys[range] {
                let is_selected = target == Some(key.as_str());
                if self.row(ui, key, row_h, is_selected).clicked() {
                    picked = Some(key.clone());
                }
                if !self.thumbnails.contains_key(key) {
                    wanted.push(key.clone());
                }
            }
        });
        self.scroll_offset = output.state.clamped_offset().y;
        self.viewport_height = output.inner_rect.height();
        self.start_thumbnails(dataset, wanted);
        self.evict();
        if self.busy() {
            ui.ctx().request_repaint_after(Duration::from_millis(50));
        }
        picked
    }

    fn filters(&mut self, ui: &mut egui::Ui, dataset: &LoadedDataset) {
        let mut datasets: Vec<&str> = Vec::new();
        let mut categories: Vec<&str> = Vec::new();
        for key in dataset.dataset.entries.keys() {
            let d = dataset_of(key);
            if !datasets.contains(&d) {
                datasets.push(d);
            }
            let c = category_of(key);
            if self.filter.dataset.as_deref().is_none_or(|f| f == d) && !categories.contains(&c) {
                categories.push(c);
            }
        }
        ui.horizontal_wrapped(|ui| {
            egui::ComboBox::from_label("Dataset")
                .selected_text(self.filter.dataset.as_deref().unwrap_or("All datasets"))
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.filter.dataset, None, "All datasets");
                    for d in &datasets {
                        ui.selectable_value(&mut self.filter.dataset, Some(d.to_string()), *d);
                    }
                });
            egui::ComboBox::from_label("Category")
                .selected_text(self.filter.category.as_deref().unwrap_or("All categories"))
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.filter.category, None, "All categories");
                    for c in &categories {
                        ui.selectable_value(&mut self.filter.category, Some(c.to_string()), *c);
                    }
                });
        });
        // A category from another dataset would hide everything without saying why.
        if self
            .filter
            .category
            .as_deref()
            .is_some_and(|c| !categories.contains(&c))
        {
            self.filter.category = None;
        }
        ui.horizontal(|ui| {
            for kind in ImageKind::ALL {
                ui.selectable_value(&mut self.filter.kind, kind, kind.label());
            }
        });
        ui.horizontal(|ui| {
            let label = ui.label("Search");
            ui.add(
                egui::TextEdit::singleline(&mut self.filter.search)
                    .hint_text("part of the path")
                    .desired_width(ui.available_width() - 30.0),
            )
            .labelled_by(label.id);
            if !self.filter.search.is_empty()
                && ui
                    .small_button("x")
                    .on_hover_text("Clear the search")
                    .clicked()
            {
                self.filter.search.clear();
            }
        });
    }

    fn arrow_keys(
        &self,
        ctx: &egui::Context,
        keys: &[String],
        selected: Option<&str>,
    ) -> Option<String> {
        if keys.is_empty() || ctx.egui_wants_keyboard_input() {
            return None;
        }
        let step = ctx.input_mut(|i| {
            if i.consume_key(egui::Modifiers::NONE, egui::Key::ArrowDown) {
                1
            } else if i.consume_key(egui::Modifiers::NONE, egui::Key::ArrowUp) {
                -1
            } else {
                0
            }
        });
        if step == 0 {
            return None;
        }
        let last = keys.len() - 1;
        let next = match selected.and_then(|s| keys.iter().position(|k| k == s)) {
            Some(p) if step > 0 => (p + 1).min(last),
            Some(p) => p.saturating_sub(1),
            None if step > 0 => 0,
            None => last,
        };
        (selected != Some(keys[next].as_str())).then(|| keys[next].clone())
    }

    fn row(&mut self, ui: &mut egui::Ui, key: &str, row_h: f32, selected: bool) -> egui::Response {
        let (rect, response) =
            ui.allocate_exact_size(vec2(ui.available_width(), row_h), Sense::CLICK);
        let category = category_of(key);
        let kind = image_type(key);
        let accessible = format!("{key} ({category}, {kind})");
        response.widget_info(|| {
            egui::WidgetInfo::selected(egui::Role::ListItem, true, selected, &accessible)
        });
        let response = response.on_hover_text(key);
        if !ui.is_rect_visible(rect) {
            return response;
        }
        let visuals = ui.visuals().clone();
        let painter = ui.painter_at(rect);
        if selected {
            painter.rect_filled(rect, 3.0, visuals.selection.bg_fill);
        } else if response.hovered() {
            painter.rect_filled(rect, 3.0, visuals.widgets.hovered.weak_bg_fill);
        }
        let side = THUMBNAIL_SIDE as f32;
        let thumb_box =
            Rect::from_min_size(rect.min + vec2(ROW_PADDING, ROW_PADDING), vec2(side, side));
        painter.rect_filled(thumb_box, 2.0, visuals.extreme_bg_color);
        match self.thumbnails.get_mut(key) {
            Some(cached) => {
                cached.last_drawn = self.frame;
                match &cached.thumbnail {
                    Thumbnail::Ready(texture) => {
                        let [w, h] = texture.size();
                        let scale = side / w.max(h).max(1) as f32;
                        let size = vec2(w as f32 * scale, h as f32 * scale);
                        let r = Rect::from_center_size(thumb_box.center(), size);
                        let uv = Rect::from_min_max(egui::Pos2::ZERO, egui::pos2(1.0, 1.0));
                        painter.image(texture.id(), r, uv, Color32::WHITE);
                    }
                    Thumbnail::Failed(_) => {
                        painter.text(
                            thumb_box.center(),
                            egui::Align2::CENTER_CENTER,
                            "!",
                            egui::FontId::proportional(24.0),
                            visuals.error_fg_color,
                        );
                    }
                }
            }
            None => {
                painter.text(
                    thumb_box.center(),
                    egui::Align2::CENTER_CENTER,
                    "…",
                    egui::FontId::proportional(18.0),
                    visuals.weak_text_color(),
                );
            }
        }
        let text_x = thumb_box.right() + 8.0;
        let text_color = if selected {
            visuals.selection.stroke.color
        } else {
            visuals.text_color()
        };
        painter.text(
            egui::pos2(text_x, rect.top() + 10.0),
            egui::Align2::LEFT_TOP,
            file_name(key),
            egui::FontId::proportional(15.0),
            text_color,
        );
        let kind_color = if is_normal_key(key) {
            Color32::from_rgb(60, 170, 90)
        } else {
            Color32::from_rgb(225, 120, 70)
        };
        let line2 = painter.text(
            egui::pos2(text_x, rect.top() + 32.0),
            egui::Align2::LEFT_TOP,
            format!("{category} · "),
            egui::FontId::proportional(13.0),
            visuals.weak_text_color(),
        );
        painter.text(
            egui::pos2(line2.right(), rect.top() + 32.0),
            egui::Align2::LEFT_TOP,
            kind,
            egui::FontId::proportional(13.0),
            kind_color,
        );
        painter.text(
            egui::pos2(text_x, rect.top() + 50.0),
            egui::Align2::LEFT_TOP,
            dataset_of(key),
            egui::FontId::proportional(11.0),
            visuals.weak_text_color(),
        );
        if let Some(CachedThumbnail {
            thumbnail: Thumbnail::Failed(e),
            ..
        }) = self.thumbnails.get(key)
        {
            return response.on_hover_text(format!("No thumbnail: {e}"));
        }
        response
    }

    /// Takes in finished thumbnail decodes; also called while another tab is shown,
    /// so finished work never lingers as "busy".
    pub fn collect_thumbnails(&mut self, ctx: &egui::Context) {
        let frame = self.frame;
        let mut still_running = Vec::with_capacity(self.jobs.len());
        for (key, mut job) in std::mem::take(&mut self.jobs) {
            let thumbnail = match job.take() {
                None => {
                    still_running.push((key, job));
                    continue;
                }
                Some(Ok(image)) => Thumbnail::Ready(ctx.load_texture(
                    format!("thumbnail:{key}"),
                    image,
                    egui::TextureOptions::LINEAR,
                )),
                Some(Err(e)) => Thumbnail::Failed(e),
            };
            self.thumbnails.insert(
                key,
                CachedThumbnail {
                    thumbnail,
                    last_drawn: frame,
                },
            );
        }
        self.jobs = still_running;
    }

    /// Starts decodes for rows on screen that have no thumbnail, a few at a time;
    /// rows scrolled past before their turn are never decoded.
    fn start_thumbnails(&mut self, dataset: &LoadedDataset, wanted: Vec<String>) {
        for key in wanted {
            if self.jobs.len() >= MAX_THUMBNAIL_JOBS {
                break;
            }
            if self.jobs.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let path = match dataset.root.resolve(&key) {
                Ok(p) => p,
                Err(e) => {
                    self.thumbnails.insert(
                        key,
                        CachedThumbnail {
                            thumbnail: Thumbnail::Failed(e.to_string()),
                            last_drawn: self.frame,
                        },
                    );
                    continue;
                }
            };
            let job = Job::spawn("thumbnail", move || {
                let image = decode_rgb8(&path, DecodeLimits::default())?;
                let (w, h) = thumbnail_size(image.width(), image.height());
                let small = image::imageops::thumbnail(&image, w, h);
                Ok(egui::ColorImage::from_rgb(
                    [small.width() as usize, small.height() as usize],
                    small.as_raw(),
                ))
            });
            self.jobs.push((key, job));
        }
    }

    fn evict(&mut self) {
        if self.thumbnails.len() <= MAX_CACHED_THUMBNAILS {
            return;
        }
        let mut by_age: Vec<(u64, String)> = self
            .thumbnails
            .iter()
            .map(|(k, t)| (t.last_drawn, k.clone()))
            .collect();
        by_age.sort();
        let excess = self.thumbnails.len() - MAX_CACHED_THUMBNAILS;
        for (_, key) in by_age.into_iter().take(excess) {
            self.thumbnails.remove(&key);
        }
    }
}

/// The thumbnail's size: the longest side `THUMBNAIL_SIDE`, never enlarged.
fn thumbnail_size(width: u32, height: u32) -> (u32, u32) {
    fit_within(width.max(1), height.max(1), THUMBNAIL_SIDE)
}

/// The scroll offset that brings a row (`row_top`, `row_height`) fully into a
/// viewport of `viewport` points scrolled to `offset`, or `None` if it is in view.
pub fn scroll_to_show(offset: f32, viewport: f32, row_top: f32, row_height: f32) -> Option<f32> {
    if viewport <= 0.0 {
        return Some(row_top);
    }
    if row_top < offset {
        Some(row_top)
    } else if row_top + row_height > offset + viewport {
        Some((row_top + row_height - viewport).max(0.0))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_type_names_the_defect_folder() {
        assert_eq!(
            image_type("MVTec-AD/bottle/test/broken_large/000.png"),
            "broken_large"
        );
        assert_eq!(image_type("MVTec-AD/bottle/test/good/000.png"), "good");
        assert_eq!(
            image_type("DS-MVTec/bottle/image/contamination/001.png"),
            "contamination"
        );
        assert_eq!(image_type("odd/place/x.png"), "defect");
        assert_eq!(image_type("odd/good/x.png"), "good");
        assert_eq!(file_name("a/b/c/000.png"), "000.png");
    }

    #[test]
    fn filters_combine() {
        let mut f = BrowserFilter::default();
        let keys = [
            "A/bottle/test/good/000.png",
            "A/bottle/test/crack/000.png",
            "A/cable/test/good/001.png",
            "B/bottle/test/hole/002.png",
        ];
        let count = |f: &BrowserFilter| keys.iter().filter(|k| f.matches(k)).count();
        assert_eq!(count(&f), 4);
        f.kind = ImageKind::Defect;
        assert_eq!(count(&f), 2);
        f.dataset = Some("A".into());
        assert_eq!(count(&f), 1);
        f.kind = ImageKind::All;
        f.category = Some("bottle".into());
        assert_eq!(count(&f), 2);
        f.search = " CRACK ".into();
        assert_eq!(count(&f), 1);
        f.kind = ImageKind::Normal;
        assert_eq!(count(&f), 0);
    }

    #[test]
    fn rows_scroll_into_view_only_when_hidden() {
        assert_eq!(scroll_to_show(100.0, 300.0, 150.0, 72.0), None);
        assert_eq!(scroll_to_show(100.0, 300.0, 40.0, 72.0), Some(40.0));
        assert_eq!(scroll_to_show(100.0, 300.0, 380.0, 72.0), Some(152.0));
        assert_eq!(scroll_to_show(0.0, 0.0, 500.0, 72.0), Some(500.0));
    }

    #[test]
    fn thumbnails_fit_64_pixels_without_enlarging() {
        assert_eq!(thumbnail_size(1024, 512), (64, 32));
        assert_eq!(thumbnail_size(30, 20), (30, 20));
        assert_eq!(thumbnail_size(0, 5), (1, 5));
    }
}
