//! The weight-free patch backbone: a grid of small local descriptors (colour,
//! contrast, gradient orientation) on a fixed-size copy of the image.
//!
//! Every channel is normalised by the image's own statistics, so a brighter or
//! dimmer shot of the same part gives the same features; each patch pools a
//! window twice its stride wide, so a shift of a few pixels changes a patch only
//! a little (and the scorer also looks at neighbouring patches).

use image::RgbImage;

/// The side of the square working copy every image is resized to.
pub const WORK: usize = 256;
/// Patch grid stride in working pixels.
pub const STRIDE: usize = 8;
/// Patches per side.
pub const GRID: usize = WORK / STRIDE;
/// Gradient orientation bins (unsigned, 0..180 degrees).
const ORIENTATIONS: usize = 4;
/// Per pooling window: mean luma, two chroma means, luma spread, orientations.
const WINDOW_DIM: usize = 4 + ORIENTATIONS;
/// Values per patch: a fine window (2 strides) and a coarse one (4 strides).
pub const DIM: usize = 2 * WINDOW_DIM;
/// The coarse window only gives context; the fine one says what is there.
const COARSE_WEIGHT: f32 = 0.5;
/// Below this luma spread an image is flat; dividing by it would amplify noise.
const MIN_SPREAD: f32 = 4.0;

pub const BACKBONE_ID: &str = "descriptor-patches-v1";

/// Patch features of one image on a `GRID` x `GRID` grid, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchGrid {
    pub side: usize,
    pub dim: usize,
    pub values: Vec<f32>,
}

impl PatchGrid {
    pub fn patch(&self, row: usize, col: usize) -> &[f32] {
        let at = (row * self.side + col) * self.dim;
        &self.values[at..at + self.dim]
    }

    pub fn len(&self) -> usize {
        self.side * self.side
    }

    pub fn is_empty(&self) -> bool {
        self.side == 0
    }
}

/// Area-averages `image` to `side` x `side` (aspect is not kept: every image of a
/// category is framed alike, and the map is stretched back the same way).
pub fn resize_rgb(image: &RgbImage, side: usize) -> Vec<[f32; 3]> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let xs = spans(w, side);
    let ys = spans(h, side);
    let raw = image.as_raw();
    // Columns first: sum each output column's span once per source row.
    let mut rows = vec![[0f32; 3]; h * side];
    for y in 0..h {
        let line = &raw[y * w * 3..(y + 1) * w * 3];
        for (ox, &(x0, x1)) in xs.iter().enumerate() {
            let mut acc = [0f32; 3];
            for px in line[x0 * 3..x1 * 3].chunks_exact(3) {
                acc[0] += px[0] as f32;
                acc[1] += px[1] as f32;
                acc[2] += px[2] as f32;
            }
            let n = (x1 - x0) as f32;
            rows[y * side + ox] = [acc[0] / n, acc[1] / n, acc[2] / n];
        }
    }
    let mut out = vec![[0f32; 3]; side * side];
    for (oy, &(y0, y1)) in ys.iter().enumerate() {
        for ox in 0..side {
            let mut acc = [0f32; 3];
            for y in y0..y1 {
                let p = rows[y * side + ox];
                acc[0] += p[0];
                acc[1] += p[1];
                acc[2] += p[2];
            }
            let n = (y1 - y0) as f32;
            out[oy * side + ox] = [acc[0] / n, acc[1] / n, acc[2] / n];
        }
    }
    out
}

/// The source span each of `dst` outputs averages; never empty, so an image
/// smaller than the working size is stretched rather than divided by zero.
fn spans(src: usize, dst: usize) -> Vec<(usize, usize)> {
    (0..dst)
        .map(|i| {
            let a = i * src / dst;
            let b = ((i + 1) * src).div_ceil(dst).clamp(a + 1, src.max(1));
            (a.min(src.saturating_sub(1)), b)
        })
        .collect()
}

/// Summed-area table with one extra leading row and column of zeros.
struct Integral {
    side: usize,
    sums: Vec<f64>,
}

impl Integral {
    fn new(plane: &[f32], side: usize) -> Self {
        let n = side + 1;
        let mut sums = vec![0f64; n * n];
        for y in 0..side {
            let mut row = 0f64;
            for x in 0..side {
                row += plane[y * side + x] as f64;
                sums[(y + 1) * n + x + 1] = sums[y * n + x + 1] + row;
            }
        }
        Integral { side, sums }
    }

    /// Mean over rows `y0..y1`, columns `x0..x1`.
    fn mean(&self, y0: usize, y1: usize, x0: usize, x1: usize) -> f32 {
        let n = self.side + 1;
        let s = self.sums[y1 * n + x1] - self.sums[y0 * n + x1] - self.sums[y1 * n + x0]
            + self.sums[y0 * n + x0];
        (s / ((y1 - y0) * (x1 - x0)) as f64) as f32
    }
}

/// Patch features of `image` (an empty image has all-zero features).
pub fn extract(image: &RgbImage) -> PatchGrid {
    if image.width() == 0 || image.height() == 0 {
        return PatchGrid {
            side: GRID,
            dim: DIM,
            values: vec![0.0; GRID * GRID * DIM],
        };
    }
    let pixels = resize_rgb(image, WORK);
    let n = WORK * WORK;
    // Luma and two opponent chroma channels.
    let mut luma = vec![0f32; n];
    let mut cb = vec![0f32; n];
    let mut cr = vec![0f32; n];
    for (i, p) in pixels.iter().enumerate() {
        luma[i] = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
        cb[i] = p[2] - luma[i];
        cr[i] = p[0] - luma[i];
    }
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    let luma_mean = mean(&luma) as f32;
    let spread = (luma
        .iter()
        .map(|&x| ((x - luma_mean) as f64).powi(2))
        .sum::<f64>()
        / n as f64)
        .sqrt() as f32;
    let scale = 1.0 / spread.max(MIN_SPREAD);
    let (cb_mean, cr_mean) = (mean(&cb) as f32, mean(&cr) as f32);
    for i in 0..n {
        luma[i] = (luma[i] - luma_mean) * scale;
        cb[i] = (cb[i] - cb_mean) * scale;
        cr[i] = (cr[i] - cr_mean) * scale;
    }
    let luma_sq: Vec<f32> = luma.iter().map(|x| x * x).collect();
    let orientations = orientation_planes(&luma);
    let tables: Vec<Integral> = [&luma, &cb, &cr, &luma_sq]
        .into_iter()
        .chain(orientations.iter())
        .map(|p| Integral::new(p, WORK))
        .collect();

    let mut values = Vec::with_capacity(GRID * GRID * DIM);
    for row in 0..GRID {
        for col in 0..GRID {
            for (half, weight) in [(STRIDE, 1.0), (2 * STRIDE, COARSE_WEIGHT)] {
                let cy = row * STRIDE + STRIDE / 2;
                let cx = col * STRIDE + STRIDE / 2;
                let y0 = cy.saturating_sub(half);
                let y1 = (cy + half).min(WORK);
                let x0 = cx.saturating_sub(half);
                let x1 = (cx + half).min(WORK);
                let m: Vec<f32> = tables.iter().map(|t| t.mean(y0, y1, x0, x1)).collect();
                let luma_spread = (m[3] - m[0] * m[0]).max(0.0).sqrt();
                values.extend([m[0], m[1], m[2], luma_spread].map(|v| v * weight));
                values.extend(m[4..].iter().map(|v| v * weight));
            }
        }
    }
    PatchGrid {
        side: GRID,
        dim: DIM,
        values,
    }
}

/// Gradient magnitude split into orientation bins (Sobel on the normalised luma),
/// each pixel's magnitude shared linearly between its two nearest bins.
fn orientation_planes(luma: &[f32]) -> Vec<Vec<f32>> {
    let mut planes = vec![vec![0f32; WORK * WORK]; ORIENTATIONS];
    let at = |y: usize, x: usize| luma[y * WORK + x];
    let bin_width = std::f32::consts::PI / ORIENTATIONS as f32;
    for y in 1..WORK - 1 {
        for x in 1..WORK - 1 {
            let gx = (at(y - 1, x + 1) + 2.0 * at(y, x + 1) + at(y + 1, x + 1))
                - (at(y - 1, x - 1) + 2.0 * at(y, x - 1) + at(y + 1, x - 1));
            let gy = (at(y + 1, x - 1) + 2.0 * at(y + 1, x) + at(y + 1, x + 1))
                - (at(y - 1, x - 1) + 2.0 * at(y - 1, x) + at(y - 1, x + 1));
            let magnitude = (gx * gx + gy * gy).sqrt() / 4.0;
            if magnitude == 0.0 {
                continue;
            }
            let mut angle = gy.atan2(gx);
            if angle < 0.0 {
                angle += std::f32::consts::PI;
            }
            let pos = angle / bin_width;
            let lower = pos.floor();
            let frac = pos - lower;
            let b0 = (lower as usize) % ORIENTATIONS;
            let b1 = (b0 + 1) % ORIENTATIONS;
            planes[b0][y * WORK + x] += magnitude * (1.0 - frac);
            planes[b1][y * WORK + x] += magnitude * frac;
        }
    }
    planes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn textured(w: u32, h: u32, gain: f32, offset: f32, shift: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let x = x + shift;
            let v = 100.0 + 60.0 * ((x as f32 / 9.0).sin() * (y as f32 / 13.0).cos());
            let v = (v * gain + offset).clamp(0.0, 255.0) as u8;
            image::Rgb([v, v / 2 + 40, 255 - v])
        })
    }

    fn distance(a: &PatchGrid, b: &PatchGrid) -> f32 {
        a.values
            .iter()
            .zip(&b.values)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt()
            / (a.len() as f32).sqrt()
    }

    #[test]
    fn grid_has_the_documented_shape() {
        let g = extract(&textured(300, 200, 1.0, 0.0, 0));
        assert_eq!(g.side, GRID);
        assert_eq!(g.values.len(), GRID * GRID * DIM);
        assert_eq!(g.patch(GRID - 1, GRID - 1).len(), DIM);
        assert!(g.values.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn lighting_changes_barely_move_the_features_but_content_does() {
        let base = extract(&textured(256, 256, 1.0, 0.0, 0));
        let brighter = extract(&textured(256, 256, 1.2, 15.0, 0));
        let mut painted = textured(256, 256, 1.0, 0.0, 0);
        for y in 100..140 {
            for x in 100..140 {
                painted.put_pixel(x, y, image::Rgb([0, 0, 0]));
            }
        }
        let painted = extract(&painted);
        let light = distance(&base, &brighter);
        let defect = distance(&base, &painted);
        assert!(light * 4.0 < defect, "lighting {light} vs defect {defect}");
    }

    #[test]
    fn tiny_and_flat_images_give_finite_features() {
        let one = extract(&RgbImage::from_pixel(1, 1, image::Rgb([9, 9, 9])));
        assert!(one.values.iter().all(|v| *v == 0.0));
        let thin = extract(&RgbImage::from_fn(3, 700, |_, y| image::Rgb([y as u8; 3])));
        assert!(thin.values.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn resize_averages_areas() {
        let img = RgbImage::from_fn(4, 4, |x, _| image::Rgb([if x < 2 { 0 } else { 200 }; 3]));
        let small = resize_rgb(&img, 2);
        assert_eq!(small[0], [0.0; 3]);
        assert_eq!(small[1], [200.0; 3]);
        let big = resize_rgb(&img, 8);
        assert_eq!(big.len(), 64);
        assert_eq!(big[7], [200.0; 3]);
    }
}
