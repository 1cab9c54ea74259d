//! The compare panel and the dataset browser, each drawn alone in egui_kittest.
#![cfg(feature = "gui")]

use std::path::{Path, PathBuf};

use echo_workbench::dataset::{DatasetRoot, MmadDataset};
use echo_workbench::ui::{
    CompareMode, ComparePanel, DatasetBrowser, ImageKind, LoadedDataset, ReferenceImage,
};
use echo_workbench::vision::diff::difference_heatmap;
use egui::{Pos2, Rect, pos2, vec2};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use image::{Rgb, RgbImage};

use eframe::egui;

use crate::drive::wait_for;

fn panel_harness(panel: ComparePanel) -> Harness<'static, ComparePanel> {
    Harness::builder()
        .with_size([1200.0, 800.0])
        .build_ui_state(|ui, p: &mut ComparePanel| p.ui(ui), panel)
}

fn query_image() -> RgbImage {
    RgbImage::from_fn(200, 100, |x, y| Rgb([(x % 256) as u8, (y * 2) as u8, 90]))
}

/// The query with a bright square painted on it and a shifted colour elsewhere.
fn reference_image() -> RgbImage {
    let mut r = query_image();
    for y in 20..40 {
        for x in 50..80 {
            r.put_pixel(x, y, Rgb([255, 255, 255]));
        }
    }
    r
}

struct Pair {
    _dir: tempfile::TempDir,
    query: PathBuf,
    reference: PathBuf,
    mask: PathBuf,
    dir: PathBuf,
}

fn pair() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let query = dir.path().join("query_part.png");
    let reference = dir.path().join("reference_part.png");
    let mask = dir.path().join("query_mask.png");
    query_image().save(&query).unwrap();
    reference_image().save(&reference).unwrap();
    RgbImage::from_fn(200, 100, |x, y| {
        if (50..80).contains(&x) && (20..40).contains(&y) {
            Rgb([255, 255, 255])
        } else {
            Rgb([0, 0, 0])
        }
    })
    .save(&mask)
    .unwrap();
    Pair {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        query,
        reference,
        mask,
    }
}

fn ready_panel(p: &Pair) -> Harness<'static, ComparePanel> {
    let mut panel = ComparePanel::new();
    panel.set_query(p.query.clone(), format!("{}", p.query.display()));
    panel.set_reference(Some(ReferenceImage {
        path: p.reference.clone(),
        caption: "reference_part.png  similarity 0.912  (descriptor-v1)".into(),
    }));
    let mut h = panel_harness(panel);
    wait_for(&mut h, "both images", |p| p.ready());
    h
}

fn assert_close(a: Pos2, b: Pos2, what: &str) {
    assert!((a - b).length() < 0.05, "{what}: {a:?} vs {b:?}");
}

/// The same image point lands at the same place inside both panes.
fn assert_panes_in_sync(panel: &ComparePanel) {
    let panes = panel.pane_rects();
    assert_eq!(panes.len(), 2);
    assert_eq!(panes[0].size(), panes[1].size());
    let view = panel.view();
    for p in [pos2(0.0, 0.0), pos2(100.0, 50.0), pos2(173.0, 12.0)] {
        let left = view.image_to_screen(panes[0], p) - panes[0].min;
        let right = view.image_to_screen(panes[1], p) - panes[1].min;
        assert!(
            (left - right).length() < 1e-3,
            "{p:?}: {left:?} vs {right:?}"
        );
    }
}

#[test]
fn both_images_become_ready_with_their_captions() {
    let p = pair();
    let h = ready_panel(&p);
    h.get_by_label_contains(&p.query.display().to_string());
    h.get_by_label_contains("similarity 0.912  (descriptor-v1)");
    assert_eq!(h.state().query_size(), Some([200, 100]));
    assert!(h.state().error().is_none());
    assert!(h.query_by_label_contains("Decoding").is_none());
    // The first image is fitted to its pane.
    let pane = h.state().pane_rects()[0];
    let expected = (pane.width() / 200.0).min(pane.height() / 100.0);
    assert!((h.state().view().zoom - expected).abs() < 1e-4);
    assert_panes_in_sync(h.state());
}

#[test]
fn an_empty_panel_says_what_is_missing() {
    let mut h = panel_harness(ComparePanel::new());
    h.run_steps(2);
    h.get_by_label("No query image");
    h.get_by_label("No reference yet");
    assert!(!h.state().ready());
    assert!(!h.state().busy());
}

#[test]
fn wheel_zooms_toward_the_pointer_in_both_panes_and_drag_pans_both() {
    let p = pair();
    let mut h = ready_panel(&p);
    let panes: Vec<Rect> = h.state().pane_rects().to_vec();
    // Wheel over the reference pane, off-centre.
    let cursor = panes[1].min + vec2(panes[1].width() * 0.3, panes[1].height() * 0.6);
    let anchor = h.state().view().screen_to_image(panes[1], cursor);
    let zoom_before = h.state().view().zoom;
    h.hover_at(cursor);
    h.event(egui::Event::MouseWheel {
        unit: egui::MouseWheelUnit::Line,
        delta: vec2(0.0, 3.0),
        phase: egui::TouchPhase::Move,
        source: egui::MouseWheelSource::Wheel,
        modifiers: egui::Modifiers::NONE,
    });
    h.run_steps(30);
    let zoom_after = h.state().view().zoom;
    assert!(
        zoom_after > zoom_before * 1.2,
        "{zoom_before} -> {zoom_after}"
    );
    assert_close(
        h.state().view().screen_to_image(panes[1], cursor),
        anchor,
        "point under the pointer",
    );
    assert_panes_in_sync(h.state());

    // Drag in the query pane: the image follows the pointer in both panes.
    let start = panes[0].center();
    let point = h.state().view().screen_to_image(panes[0], start);
    h.drag_at(start);
    h.step();
    for i in 1..=5 {
        h.hover_at(start + vec2(-8.0 * i as f32, 5.0 * i as f32));
        h.step();
    }
    h.drop_at(start + vec2(-40.0, 25.0));
    h.run_steps(2);
    let moved = h.state().view().image_to_screen(panes[0], point);
    assert_close(moved, start + vec2(-40.0, 25.0), "dragged point");
    let moved_right = h.state().view().image_to_screen(panes[1], point);
    assert_close(
        moved_right - panes[1].min.to_vec2(),
        moved - panes[0].min.to_vec2(),
        "right pane",
    );
    assert_panes_in_sync(h.state());
}

#[test]
fn fit_and_100_percent_buttons_set_the_zoom() {
    let p = pair();
    let mut h = ready_panel(&p);
    h.get_by_label("100%").click();
    h.run_steps(2);
    assert_eq!(h.state().view().zoom, 1.0);
    h.get_by_label("Zoom 100%");
    h.state_mut().view_mut().zoom = 7.5;
    h.get_by_label("Fit").click();
    h.run_steps(2);
    let pane = h.state().pane_rects()[0];
    let expected = (pane.width() / 200.0).min(pane.height() / 100.0);
    assert!((h.state().view().zoom - expected).abs() < 1e-4);
    assert_eq!(h.state().view().pan, vec2(100.0, 50.0));
}

#[test]
fn modes_switch_between_panes_flicker_and_difference() {
    let p = pair();
    let mut h = ready_panel(&p);
    h.get_by_label("Flicker").click();
    h.run_steps(2);
    assert_eq!(h.state().view().mode, CompareMode::Flicker);
    assert_eq!(h.state().pane_rects().len(), 1);
    h.get_by_label_contains("Query: ");
    h.get_by_label("Swap").click();
    h.run_steps(2);
    assert!(h.state().view().showing_reference);
    h.get_by_label_contains("Reference: reference_part.png");
    h.key_press(egui::Key::Space);
    h.run_steps(2);
    assert!(!h.state().view().showing_reference, "Space swaps back");

    h.get_by_label("Difference").click();
    wait_for(&mut h, "difference", |p| p.difference_stats().is_some());
    let (mean, max) = h.state().difference_stats().unwrap();
    let expected = difference_heatmap(&query_image(), &reference_image());
    assert_eq!(max, expected.max);
    assert!((mean - expected.mean).abs() < 1e-4);
    h.get_by_label_contains(&format!("Mean difference {mean:.1}, max {max}"));

    h.get_by_label("Side by side").click();
    h.run_steps(2);
    assert_eq!(h.state().view().mode, CompareMode::SideBySide);
    assert_eq!(h.state().pane_rects().len(), 2);
}

#[test]
fn mask_controls_appear_only_with_a_mask() {
    let p = pair();
    let mut h = ready_panel(&p);
    assert!(h.query_by_label("Show mask").is_none());
    assert!(h.query_by_label("Mask opacity").is_none());
    h.state_mut().set_mask(Some(p.mask.clone()));
    wait_for(&mut h, "mask", |p| !p.busy());
    h.get_by_label("Show mask");
    h.get_by_label("Mask opacity");
    h.get_by_label("3.0% of the image");
    assert!(h.state().view().show_mask);
    h.get_by_label("Show mask").click();
    h.run_steps(2);
    assert!(!h.state().view().show_mask);
    h.state_mut().set_mask(None);
    h.run_steps(2);
    assert!(h.query_by_label("Show mask").is_none());
}

#[test]
fn broken_images_show_their_error_text() {
    let p = pair();
    let broken = p.dir.join("broken_part.png");
    std::fs::write(&broken, b"this is not a png").unwrap();
    let mut panel = ComparePanel::new();
    panel.set_query(broken.clone(), "broken".into());
    panel.set_reference(Some(ReferenceImage {
        path: p.dir.join("missing_reference.png"),
        caption: "missing".into(),
    }));
    let mut h = panel_harness(panel);
    wait_for(&mut h, "errors", |p| !p.busy());
    assert!(!h.state().ready());
    let err = h.state().error().unwrap().to_string();
    assert!(
        err.contains("broken_part.png") && err.contains("not an image"),
        "{err}"
    );
    h.get_by_label_contains("broken_part.png is not an image");
    h.get_by_label_contains("cannot read image");

    // A truncated PNG is reported as damaged.
    let full = std::fs::read(&p.query).unwrap();
    let truncated = p.dir.join("truncated.png");
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    h.state_mut().set_query(truncated, "truncated".into());
    wait_for(&mut h, "truncated", |p| !p.busy());
    h.get_by_label_contains("truncated.png");
    assert!(h.state().error().unwrap().contains("truncated.png"));
}

#[test]
fn a_new_query_keeps_the_old_image_until_it_is_decoded() {
    let p = pair();
    let mut h = ready_panel(&p);
    let other = p.dir.join("other.png");
    RgbImage::from_pixel(80, 60, Rgb([10, 200, 10]))
        .save(&other)
        .unwrap();
    h.state_mut().set_query(other.clone(), "other".into());
    assert!(!h.state().ready());
    assert_eq!(
        h.state().query_size(),
        Some([200, 100]),
        "no flash to empty"
    );
    wait_for(&mut h, "new query", |p| p.ready());
    assert_eq!(h.state().query_size(), Some([80, 60]));
    // A new size is fitted again.
    let pane = h.state().pane_rects()[0];
    let expected = (pane.width() / 80.0).min(pane.height() / 60.0);
    assert!((h.state().view().zoom - expected).abs() < 1e-4);
}

// ---- Dataset browser ----

struct BrowserState {
    browser: DatasetBrowser,
    dataset: LoadedDataset,
    selected: Option<String>,
}

fn sample_dataset() -> LoadedDataset {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/sample");
    let dataset = MmadDataset::load(&assets.join("mmad.json")).unwrap();
    let warnings = dataset.warnings();
    LoadedDataset {
        dataset,
        root: DatasetRoot::new(assets),
        warnings,
    }
}

fn browser_harness() -> Harness<'static, BrowserState> {
    let state = BrowserState {
        browser: DatasetBrowser::new(),
        dataset: sample_dataset(),
        selected: None,
    };
    Harness::builder().with_size([420.0, 800.0]).build_ui_state(
        |ui, s: &mut BrowserState| {
            if let Some(key) = s.browser.ui(ui, &s.dataset, s.selected.as_deref()) {
                s.selected = Some(key);
            }
        },
        state,
    )
}

#[test]
fn browser_filters_narrow_the_count() {
    let mut h = browser_harness();
    h.run_steps(2);
    let total = h.state().dataset.dataset.image_count();
    assert_eq!(total, 39);
    h.get_by_label(&format!("{total} of {total} images"));
    h.get_by_label("Defect").click();
    h.run_steps(2);
    assert_eq!(h.state().browser.filter.kind, ImageKind::Defect);
    h.get_by_label("27 of 39 images");
    h.get_by_label("Normal").click();
    h.run_steps(2);
    h.get_by_label("12 of 39 images");
    assert!(
        h.query_by_label_contains("Sample/washer/test/notch/000.png")
            .is_none()
    );
    h.get_by_label("All").click();
    h.run_steps(2);

    // Category through its combo box.
    h.get_by_value("All categories").click();
    h.run_steps(2);
    h.get_by_label("weave").click();
    h.run_steps(2);
    assert_eq!(h.state().browser.filter.category.as_deref(), Some("weave"));
    h.get_by_label("13 of 39 images");
    let visible = h.state().browser.visible_keys(&h.state().dataset);
    assert!(visible.iter().all(|k| k.starts_with("Sample/weave/")));

    // Search by name, combined with the category.
    h.get_by_role_and_label(egui::accesskit::Role::TextInput, "Search")
        .click();
    h.run_steps(1);
    h.get_by_role_and_label(egui::accesskit::Role::TextInput, "Search")
        .type_text("hole");
    h.run_steps(2);
    h.get_by_label("3 of 39 images");
    h.get_by_label_contains("Sample/weave/test/hole/001.png (weave, hole)");
}

#[test]
fn browser_click_and_arrow_keys_pick_images() {
    let mut h = browser_harness();
    h.run_steps(2);
    let keys = h.state().browser.visible_keys(&h.state().dataset);
    h.key_press(egui::Key::ArrowDown);
    h.run_steps(2);
    assert_eq!(h.state().selected.as_deref(), Some(keys[0].as_str()));
    h.key_press(egui::Key::ArrowDown);
    h.run_steps(2);
    assert_eq!(h.state().selected.as_deref(), Some(keys[1].as_str()));
    h.key_press(egui::Key::ArrowUp);
    h.run_steps(2);
    assert_eq!(h.state().selected.as_deref(), Some(keys[0].as_str()));

    h.get_by_label_contains("Sample/washer/test/scratch/001.png")
        .click();
    h.run_steps(2);
    assert_eq!(
        h.state().selected.as_deref(),
        Some("Sample/washer/test/scratch/001.png")
    );
    // Typing in the search box must not move the selection.
    h.get_by_role_and_label(egui::accesskit::Role::TextInput, "Search")
        .click();
    h.run_steps(1);
    h.key_press(egui::Key::ArrowDown);
    h.run_steps(2);
    assert_eq!(
        h.state().selected.as_deref(),
        Some("Sample/washer/test/scratch/001.png")
    );
}

#[test]
fn browser_scrolls_the_selection_into_view_and_loads_thumbnails() {
    let mut h = browser_harness();
    h.run_steps(2);
    wait_for(&mut h, "thumbnails", |s| {
        !s.browser.busy() && s.browser.cached_thumbnails() > 0
    });
    let first_screen = h.state().browser.cached_thumbnails();
    assert!(
        first_screen < 39,
        "only rows on screen are decoded ({first_screen})"
    );
    let last = h
        .state()
        .dataset
        .dataset
        .entries
        .keys()
        .last()
        .cloned()
        .unwrap();
    assert!(
        h.query_by_label_contains(&last).is_none(),
        "virtualised: not drawn yet"
    );
    h.state_mut().selected = Some(last.clone());
    h.run_steps(3);
    let row = h.get_by_label_contains(&last).rect();
    assert!(row.max.y <= 800.0 + 0.5 && row.min.y >= 0.0, "{row:?}");
    wait_for(&mut h, "more thumbnails", |s| !s.browser.busy());
    assert!(h.state().browser.cached_thumbnails() > first_screen);
}

#[test]
fn the_wheel_zooms_the_image_not_an_enclosing_scroll_area() {
    let p = pair();
    let mut panel = ComparePanel::new();
    panel.set_query(p.query.clone(), "q".into());
    let mut h = Harness::builder()
        .with_size([1000.0, 700.0])
        .build_ui_state(
            |ui, p: &mut ComparePanel| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    p.ui(ui);
                    ui.add_space(2000.0);
                    ui.label("below the panel");
                });
            },
            panel,
        );
    wait_for(&mut h, "query", |p| p.ready());
    let pane = h.state().pane_rects()[0];
    let zoom = h.state().view().zoom;
    h.hover_at(pane.center());
    h.event(egui::Event::MouseWheel {
        unit: egui::MouseWheelUnit::Line,
        delta: vec2(0.0, -2.0),
        phase: egui::TouchPhase::Move,
        source: egui::MouseWheelSource::Wheel,
        modifiers: egui::Modifiers::NONE,
    });
    h.run_steps(30);
    assert!(h.state().view().zoom < zoom * 0.9, "zoomed out");
    assert_eq!(
        h.state().pane_rects()[0],
        pane,
        "the outer area did not scroll"
    );
}
