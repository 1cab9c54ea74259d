//! Pictures of a detection for a model to look at: the query with a region
//! outlined, or a zoomed crop of the region, encoded as PNG.

use image::{ImageFormat, Rgb, RgbImage, imageops};

use super::regions::Region;

/// The outline's colour: pure red stands out on the grey and brown of most parts.
const OUTLINE: Rgb<u8> = Rgb([255, 0, 0]);
/// A crop shows this fraction of the region's size again on every side, so the
/// model sees the defect against the normal surface around it.
const CROP_MARGIN: f64 = 0.5;
/// Crops smaller than this many pixels a side are enlarged to it (nearest
/// neighbour keeps the defect's edges as they are).
const CROP_MIN_SIDE: u32 = 224;

/// `image` with `region` outlined; the line is about 1/150 of the longer side.
pub fn outline(image: &RgbImage, region: &Region) -> RgbImage {
    let mut out = image.clone();
    let (w, h) = out.dimensions();
    if w == 0 || h == 0 {
        return out;
    }
    let thick = (w.max(h) / 150).max(2);
    let x0 = region.x.min(w - 1);
    let y0 = region.y.min(h - 1);
    let x1 = region.x.saturating_add(region.w).min(w).max(x0 + 1) - 1;
    let y1 = region.y.saturating_add(region.h).min(h).max(y0 + 1) - 1;
    for y in y0..=y1 {
        for x in x0..=x1 {
            let near_edge = x - x0 < thick || x1 - x < thick || y - y0 < thick || y1 - y < thick;
            if near_edge {
                out.put_pixel(x, y, OUTLINE);
            }
        }
    }
    out
}

/// The part of `image` around `region`, enlarged when small.
pub fn crop(image: &RgbImage, region: &Region) -> RgbImage {
    let (w, h) = image.dimensions();
    let grow = |v: u32| (v as f64 * CROP_MARGIN).round() as u32;
    let x0 = region
        .x
        .saturating_sub(grow(region.w))
        .min(w.saturating_sub(1));
    let y0 = region
        .y
        .saturating_sub(grow(region.h))
        .min(h.saturating_sub(1));
    let x1 = (region.x + region.w + grow(region.w)).min(w).max(x0 + 1);
    let y1 = (region.y + region.h + grow(region.h)).min(h).max(y0 + 1);
    let part = imageops::crop_imm(image, x0, y0, x1 - x0, y1 - y0).to_image();
    let (cw, ch) = part.dimensions();
    let short = cw.min(ch);
    if short >= CROP_MIN_SIDE || short == 0 {
        return part;
    }
    let scale = CROP_MIN_SIDE as f64 / short as f64;
    imageops::resize(
        &part,
        (cw as f64 * scale).round() as u32,
        (ch as f64 * scale).round() as u32,
        imageops::FilterType::Nearest,
    )
}

/// PNG bytes of `image`.
pub fn png(image: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Png)?;
    Ok(bytes.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(x: u32, y: u32, w: u32, h: u32) -> Region {
        Region {
            x,
            y,
            w,
            h,
            score: 1.0,
            grid: "center",
        }
    }

    #[test]
    fn the_outline_frames_the_region_and_leaves_the_rest() {
        let image = RgbImage::from_pixel(300, 300, Rgb([10, 20, 30]));
        let out = outline(&image, &region(100, 50, 60, 40));
        // Thickness 2 at 300 pixels.
        assert_eq!(*out.get_pixel(100, 50), OUTLINE);
        assert_eq!(*out.get_pixel(101, 70), OUTLINE);
        assert_eq!(*out.get_pixel(159, 89), OUTLINE);
        assert_eq!(*out.get_pixel(130, 70), Rgb([10, 20, 30]));
        assert_eq!(*out.get_pixel(102, 70), Rgb([10, 20, 30]));
        assert_eq!(*out.get_pixel(99, 50), Rgb([10, 20, 30]));
        assert_eq!(*out.get_pixel(160, 90), Rgb([10, 20, 30]));
        // A box past the border is clipped, not a panic.
        let out = outline(&image, &region(290, 290, 50, 50));
        assert_eq!(*out.get_pixel(299, 299), OUTLINE);
    }

    #[test]
    fn a_crop_keeps_a_margin_and_is_enlarged_when_small() {
        let mut image = RgbImage::from_pixel(400, 400, Rgb([0, 0, 0]));
        image.put_pixel(200, 200, Rgb([255, 255, 255]));
        let part = crop(&image, &region(190, 190, 20, 20));
        // 20 + 2 x 10 = 40 pixels, enlarged to 224.
        assert_eq!(part.dimensions(), (224, 224));
        let big = crop(&image, &region(0, 0, 400, 400));
        assert_eq!(big.dimensions(), (400, 400));
        let bytes = png(&part).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
