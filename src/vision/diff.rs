//! Where a query image differs from its reference, as a heat map, and a ground-truth
//! mask as a tinted overlay. Pure pixel maths: the GUI runs these off the UI thread.
//!
//! The difference of a pixel is the largest absolute difference over its three
//! channels, not a luminance difference: a defect that changes hue but not
//! brightness (MVTec's `color` defects on carpet, pill or metal nut, a stain of the
//! same lightness) has almost no luminance difference but a large channel one.

use image::imageops::FilterType;
use image::{GrayImage, Rgb, RgbImage, RgbaImage};
use rayon::prelude::*;

/// The per-pixel difference of two images, coloured, with its statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct DifferenceMap {
    /// The heat map, the query's size (black: equal, then red, yellow, white).
    pub image: RgbImage,
    /// Mean difference over all pixels, in levels 0..=255.
    pub mean: f32,
    /// The largest difference of any pixel, in levels.
    pub max: u8,
}

/// How the levels are coloured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DifferenceOptions {
    /// Scale the colours so the largest difference is white; makes faint differences
    /// visible. `mean` and `max` stay in absolute levels either way.
    pub stretch: bool,
}

/// The difference of `reference` from `query` with absolute colours.
pub fn difference_heatmap(query: &RgbImage, reference: &RgbImage) -> DifferenceMap {
    difference_heatmap_with(query, reference, DifferenceOptions::default())
}

/// As [`difference_heatmap`], coloured as `options` say.
pub fn difference_heatmap_with(
    query: &RgbImage,
    reference: &RgbImage,
    options: DifferenceOptions,
) -> DifferenceMap {
    let levels = difference_levels(query, reference);
    let pixels = levels.as_raw().len();
    let (sum, max) = levels
        .as_raw()
        .par_chunks(1 << 16)
        .map(|c| {
            c.iter()
                .fold((0u64, 0u8), |(s, m), &v| (s + u64::from(v), m.max(v)))
        })
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1.max(b.1)));
    let mean = if pixels == 0 {
        0.0
    } else {
        (sum as f64 / pixels as f64) as f32
    };
    let gain = if options.stretch && max > 0 {
        255.0 / f32::from(max)
    } else {
        1.0
    };
    let palette: Vec<[u8; 3]> = (0..=255u8)
        .map(|v| heat_color((f32::from(v) * gain).round().min(255.0) as u8).0)
        .collect();
    let mut image = RgbImage::new(levels.width(), levels.height());
    image
        .as_mut()
        .par_chunks_mut(3 << 14)
        .zip(levels.as_raw().par_chunks(1 << 14))
        .for_each(|(out, lv)| {
            for (px, &v) in out.chunks_exact_mut(3).zip(lv) {
                px.copy_from_slice(&palette[usize::from(v)]);
            }
        });
    DifferenceMap { image, mean, max }
}

/// Per-pixel largest channel difference, the query's size. The reference is
/// resized to the query first (Catmull-Rom, antialiased when shrinking) so the two
/// are compared point for point; an empty reference counts as black.
pub fn difference_levels(query: &RgbImage, reference: &RgbImage) -> GrayImage {
    let (w, h) = query.dimensions();
    if w == 0 || h == 0 {
        return GrayImage::new(w, h);
    }
    let resized;
    let reference = if reference.dimensions() == (w, h) {
        reference
    } else if reference.width() == 0 || reference.height() == 0 {
        resized = RgbImage::new(w, h);
        &resized
    } else {
        resized = image::imageops::resize(reference, w, h, FilterType::CatmullRom);
        &resized
    };
    let mut levels = GrayImage::new(w, h);
    let row = w as usize;
    levels
        .as_mut()
        .par_chunks_mut(row)
        .zip(query.as_raw().par_chunks(row * 3))
        .zip(reference.as_raw().par_chunks(row * 3))
        .for_each(|((out, q), r)| {
            for ((o, qp), rp) in out.iter_mut().zip(q.chunks_exact(3)).zip(r.chunks_exact(3)) {
                *o = qp
                    .iter()
                    .zip(rp)
                    .map(|(a, b)| a.abs_diff(*b))
                    .max()
                    .unwrap_or(0);
            }
        });
    levels
}

/// The heat map colour of a difference level: black, red, yellow, white, each
/// third of the range ramping one channel, so brighter always means larger.
pub fn heat_color(level: u8) -> Rgb<u8> {
    let v = u32::from(level) * 3;
    let ramp = |start: u32| (v.saturating_sub(start).min(255)) as u8;
    Rgb([ramp(0), ramp(255), ramp(510)])
}

/// A ground-truth mask (white = defect) as an RGBA overlay of the mask's own size:
/// `color` inside the defect, fully opaque on its outline and partly inside so the
/// part stays visible under it, transparent elsewhere. Channels count as defect
/// above mid-grey, as MMAD's masks are 0/255 but resampled ones are not.
pub fn mask_overlay(mask: &RgbImage, color: [u8; 3]) -> RgbaImage {
    const INSIDE_ALPHA: u8 = 150;
    let (w, h) = mask.dimensions();
    let on = |x: i64, y: i64| -> bool {
        if x < 0 || y < 0 || x >= i64::from(w) || y >= i64::from(h) {
            return false;
        }
        let p = mask.get_pixel(x as u32, y as u32).0;
        p.iter().copied().max().unwrap_or(0) > 127
    };
    RgbaImage::from_fn(w, h, |x, y| {
        let (x, y) = (i64::from(x), i64::from(y));
        if !on(x, y) {
            return image::Rgba([0, 0, 0, 0]);
        }
        let edge = !(on(x - 1, y) && on(x + 1, y) && on(x, y - 1) && on(x, y + 1));
        let alpha = if edge { 255 } else { INSIDE_ALPHA };
        image::Rgba([color[0], color[1], color[2], alpha])
    })
}

/// Fraction of the mask's pixels that are defect.
pub fn mask_coverage(mask: &RgbImage) -> f32 {
    let n = mask.pixels().len();
    if n == 0 {
        return 0.0;
    }
    let on = mask
        .pixels()
        .filter(|p| p.0.iter().copied().max().unwrap_or(0) > 127)
        .count();
    on as f32 / n as f32
}

/// The size of `(width, height)` scaled down so neither side exceeds `max_side`,
/// keeping the aspect ratio; unchanged when it already fits.
pub fn fit_within(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= max_side || max_side == 0 {
        return (width, height);
    }
    let scale = f64::from(max_side) / f64::from(longest);
    let side = |v: u32| ((f64::from(v) * scale).round() as u32).clamp(1, max_side);
    (side(width), side(height))
}

/// `image` shrunk to fit within `max_side` (antialiased), or returned as is.
pub fn shrink_to_max_side(image: RgbImage, max_side: u32, filter: FilterType) -> RgbImage {
    let (w, h) = fit_within(image.width(), image.height(), max_side);
    if (w, h) == image.dimensions() {
        image
    } else {
        image::imageops::resize(&image, w, h, filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn textured(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                (x * 7 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x + y) % 256) as u8,
            ])
        })
    }

    #[test]
    fn identical_images_differ_nowhere() {
        let a = textured(40, 30);
        let map = difference_heatmap(&a, &a.clone());
        assert_eq!(map.image.dimensions(), (40, 30));
        assert_eq!(map.max, 0);
        assert_eq!(map.mean, 0.0);
        assert!(map.image.pixels().all(|p| p.0 == [0, 0, 0]));
    }

    #[test]
    fn a_painted_square_shows_up_exactly_there() {
        let reference = textured(64, 48);
        let mut query = reference.clone();
        for y in 10..20 {
            for x in 30..40 {
                let p = query.get_pixel_mut(x, y);
                p.0[0] = p.0[0].wrapping_add(100);
            }
        }
        let levels = difference_levels(&query, &reference);
        for (x, y, v) in levels.enumerate_pixels() {
            let inside = (30..40).contains(&x) && (10..20).contains(&y);
            let expected = if inside {
                let r = reference.get_pixel(x, y).0[0];
                r.abs_diff(r.wrapping_add(100))
            } else {
                0
            };
            assert_eq!(v.0[0], expected, "pixel {x},{y}");
        }
        let map = difference_heatmap(&query, &reference);
        assert!(map.max >= 100);
        let expected_mean = levels.pixels().map(|p| f64::from(p.0[0])).sum::<f64>() / (64.0 * 48.0);
        assert!((f64::from(map.mean) - expected_mean).abs() < 1e-3);
        assert_eq!(map.image.get_pixel(0, 0).0, [0, 0, 0]);
        assert_ne!(map.image.get_pixel(35, 15).0, [0, 0, 0]);
    }

    #[test]
    fn colour_only_change_counts_in_full() {
        // Same luminance-ish grey vs a hue shift: the channel maximum sees it.
        let a = RgbImage::from_pixel(4, 4, Rgb([100, 100, 100]));
        let b = RgbImage::from_pixel(4, 4, Rgb([140, 80, 100]));
        let map = difference_heatmap(&a, &b);
        assert_eq!(map.max, 40);
        assert_eq!(map.mean, 40.0);
    }

    #[test]
    fn reference_is_resized_to_the_query() {
        let query = RgbImage::from_pixel(50, 40, Rgb([200, 10, 10]));
        let reference = RgbImage::from_pixel(100, 80, Rgb([200, 10, 10]));
        let map = difference_heatmap(&query, &reference);
        assert_eq!(map.image.dimensions(), (50, 40));
        assert_eq!(map.max, 0, "a flat colour survives resizing");
        // Left half differs in the reference: the map differs on the left only.
        let reference = RgbImage::from_fn(100, 80, |x, _| {
            if x < 50 {
                Rgb([0, 10, 10])
            } else {
                Rgb([200, 10, 10])
            }
        });
        let levels = difference_levels(&query, &reference);
        assert_eq!(levels.get_pixel(5, 20).0[0], 200);
        assert_eq!(levels.get_pixel(45, 20).0[0], 0);
        let empty = difference_heatmap(&query, &RgbImage::new(0, 0));
        assert_eq!(empty.max, 200);
        let none = difference_heatmap(&RgbImage::new(0, 0), &query);
        assert_eq!((none.mean, none.max), (0.0, 0));
    }

    #[test]
    fn stretch_makes_the_largest_difference_white() {
        let a = RgbImage::from_pixel(3, 1, Rgb([10, 10, 10]));
        let mut b = a.clone();
        b.put_pixel(1, 0, Rgb([30, 10, 10]));
        let plain = difference_heatmap(&a, &b);
        assert_eq!(plain.max, 20);
        assert_eq!(plain.image.get_pixel(1, 0).0, heat_color(20).0);
        let stretched = difference_heatmap_with(&a, &b, DifferenceOptions { stretch: true });
        assert_eq!(stretched.image.get_pixel(1, 0).0, [255, 255, 255]);
        assert_eq!(stretched.image.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!((stretched.max, stretched.mean), (plain.max, plain.mean));
    }

    #[test]
    fn heat_colours_run_black_red_yellow_white_and_brighten() {
        assert_eq!(heat_color(0).0, [0, 0, 0]);
        assert_eq!(heat_color(85).0, [255, 0, 0]);
        assert_eq!(heat_color(170).0, [255, 255, 0]);
        assert_eq!(heat_color(255).0, [255, 255, 255]);
        let sum = |v: u8| heat_color(v).0.iter().map(|&c| u32::from(c)).sum::<u32>();
        for v in 1..=255u8 {
            assert!(sum(v) > sum(v - 1), "level {v}");
        }
    }

    #[test]
    fn mask_overlay_marks_the_defect_with_an_opaque_outline() {
        let mut mask = RgbImage::new(10, 10);
        for y in 2..7 {
            for x in 3..8 {
                mask.put_pixel(x, y, Rgb([255, 255, 255]));
            }
        }
        let over = mask_overlay(&mask, [255, 0, 0]);
        assert_eq!(over.dimensions(), (10, 10));
        assert_eq!(over.get_pixel(0, 0).0[3], 0);
        assert_eq!(over.get_pixel(3, 2).0, [255, 0, 0, 255], "outline");
        assert_eq!(over.get_pixel(5, 4).0, [255, 0, 0, 150], "inside");
        assert_eq!(over.get_pixel(8, 4).0[3], 0, "just outside");
        assert!((mask_coverage(&mask) - 0.25).abs() < 1e-6);
    }

    #[test]
    fn large_images_shrink_to_the_display_limit() {
        assert_eq!(fit_within(8000, 2000, 4096), (4096, 1024));
        assert_eq!(fit_within(1000, 3000, 4096), (1000, 3000));
        assert_eq!(fit_within(1, 9000, 4096), (1, 4096));
        let img = shrink_to_max_side(textured(300, 100), 150, FilterType::Triangle);
        assert_eq!(img.dimensions(), (150, 50));
    }
}
