//! OpenAI CLIP image preprocessing, reproducing Python's numbers exactly.
//!
//! CLIP embeddings are compared against memories that may have been built in
//! Python (Hugging Face `CLIPImageProcessor`, Pillow-backed), so "close enough"
//! preprocessing is not good enough: the `image` crate's CatmullRom filter is off
//! by 2-4 grey levels from Pillow's bicubic, which moves embeddings measurably.
//! This module therefore ports the three steps that matter bit for bit:
//!
//! 1. the output size of the shortest-edge resize, as transformers'
//!    `get_resize_output_image_size(..., default_to_square=False)` computes it;
//! 2. Pillow's `Image.resize(size, Image.BICUBIC)` for 8-bit RGB: a separable
//!    two-pass convolution whose kernel is widened by the scale factor when
//!    shrinking (antialiasing), with the weights quantised to 22-bit fixed point
//!    and each pass rounded and clipped to 8 bits the way Pillow does, in
//!    Pillow's pass order (which changed in Pillow 13, see [`PillowVersion`]);
//! 3. transformers' `center_crop`, including its zero padding when the image is
//!    smaller than the crop, followed by its rescale (`x * (1/255)` in `f64`,
//!    cast to `f32`) and normalisation (`(x - mean) / std` in `f32`).
//!
//! The fixtures under `tests/fixtures/preprocess` are made by
//! `scripts/make_preprocess_fixtures.py` with Pillow and numpy.

use std::ops::Range;

use image::RgbImage;
use serde_json::Value;

/// Pillow's fixed-point precision for 8-bit resampling. With 22 fractional bits
/// the weighted sum of 8-bit samples cannot overflow an `i32`: the normalised
/// bicubic weights' absolute values sum to at most about 1.27 (a test sweeps
/// the sizes), and 255 * 1.27 * 2^22 + 2^21 < 2^31.
const PRECISION_BITS: u32 = 22;

/// Half a unit in the last fixed-point place: the accumulators start here so that
/// the final shift rounds to nearest instead of truncating.
const ROUNDING: i32 = 1 << (PRECISION_BITS - 1);

/// Pillow's bicubic kernel has `a = -0.5` and reaches two pixels each side.
const BICUBIC_SUPPORT: f64 = 2.0;

/// Hugging Face's `rescale_factor` for CLIP, `1/255` as a Python float.
const RESCALE: f64 = 1.0 / 255.0;

/// OpenAI CLIP's per-channel mean, written digit for digit as published (and as
/// in transformers' `OPENAI_CLIP_MEAN`). Python holds them as `f64` and numpy
/// rounds them to `f32`; a test checks that gives exactly these `f32`s.
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];

/// OpenAI CLIP's per-channel standard deviation (see [`OPENAI_CLIP_MEAN`]).
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// The settings of CLIP's image preprocessing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipPreprocess {
    /// Target length of the shorter side after resizing.
    pub size: u32,
    /// Side of the square centre crop taken after resizing.
    pub crop: u32,
    /// Per-channel (R, G, B) mean subtracted after scaling to `[0, 1]`.
    pub mean: [f32; 3],
    /// Per-channel (R, G, B) standard deviation divided by after the mean.
    pub std: [f32; 3],
}

impl Default for ClipPreprocess {
    /// OpenAI CLIP's settings, as in `openai/clip-vit-base-patch16`.
    fn default() -> Self {
        ClipPreprocess {
            size: 224,
            crop: 224,
            mean: OPENAI_CLIP_MEAN,
            std: OPENAI_CLIP_STD,
        }
    }
}

/// Why a `preprocessor_config.json` cannot be honoured by [`ClipPreprocess`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreprocessConfigError {
    #[error("preprocessor config: `{key}` has an unsupported value {value}: {why}")]
    Unsupported {
        key: &'static str,
        value: String,
        why: &'static str,
    },
}

impl ClipPreprocess {
    /// Reads the settings from a Hugging Face `preprocessor_config.json`.
    ///
    /// Understood keys: `size` (an integer or `{"shortest_edge": n}`),
    /// `crop_size` (an integer or `{"height": h, "width": w}` with `h == w`),
    /// `image_mean` and `image_std` (three numbers, or one for all channels).
    /// Missing keys keep OpenAI's defaults. Settings that would make Python
    /// compute something this module does not (a resize to a fixed height and
    /// width, a filter other than bicubic, disabled steps, another rescale
    /// factor) are refused rather than silently ignored, because they would
    /// produce embeddings that do not match Python's.
    pub fn from_hf_config(config: &Value) -> Result<Self, PreprocessConfigError> {
        let mut p = ClipPreprocess::default();
        if let Some(v) = config.get("size") {
            p.size = match v {
                Value::Object(map) if map.len() == 1 => map
                    .get("shortest_edge")
                    .and_then(as_side)
                    .ok_or_else(|| unsupported("size", v, "expected {\"shortest_edge\": n}"))?,
                _ => as_side(v).ok_or_else(|| {
                    unsupported("size", v, "expected an integer or {\"shortest_edge\": n}")
                })?,
            };
        }
        if let Some(v) = config.get("crop_size") {
            p.crop = match v {
                Value::Object(map) => {
                    let h = map.get("height").and_then(as_side);
                    let w = map.get("width").and_then(as_side);
                    match (h, w) {
                        (Some(h), Some(w)) if h == w && map.len() == 2 => h,
                        _ => return Err(unsupported("crop_size", v, "expected a square crop")),
                    }
                }
                _ => as_side(v).ok_or_else(|| {
                    unsupported("crop_size", v, "expected an integer or {height, width}")
                })?,
            };
        }
        if let Some(v) = config.get("image_mean") {
            p.mean = as_triple(v).ok_or_else(|| {
                unsupported("image_mean", v, "expected one or three finite numbers")
            })?;
        }
        if let Some(v) = config.get("image_std") {
            p.std = as_triple(v)
                .filter(|s| s.iter().all(|&x| x != 0.0))
                .ok_or_else(|| {
                    unsupported("image_std", v, "expected one or three non-zero numbers")
                })?;
        }
        for key in ["do_resize", "do_center_crop", "do_rescale", "do_normalize"] {
            if let Some(v) = config.get(key).filter(|v| v.as_bool() != Some(true)) {
                return Err(unsupported(
                    key,
                    v,
                    "only the full CLIP pipeline is implemented",
                ));
            }
        }
        if let Some(v) = config.get("resample").filter(|v| v.as_u64() != Some(3)) {
            return Err(unsupported(
                "resample",
                v,
                "only bicubic (3) is implemented",
            ));
        }
        if let Some(v) = config
            .get("rescale_factor")
            .filter(|v| v.as_f64() != Some(RESCALE))
        {
            return Err(unsupported(
                "rescale_factor",
                v,
                "only 1/255 is implemented",
            ));
        }
        Ok(p)
    }
}

fn unsupported(key: &'static str, value: &Value, why: &'static str) -> PreprocessConfigError {
    PreprocessConfigError::Unsupported {
        key,
        value: value.to_string(),
        why,
    }
}

/// A side length: a non-negative integer that fits `u32`.
fn as_side(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// Three per-channel numbers, or one number meaning the same for every channel.
/// Python casts them to `float32` with round-to-nearest, as `as f32` does.
fn as_triple(v: &Value) -> Option<[f32; 3]> {
    let num = |v: &Value| v.as_f64().filter(|x| x.is_finite()).map(|x| x as f32);
    match v {
        Value::Array(items) if items.len() == 3 => {
            Some([num(&items[0])?, num(&items[1])?, num(&items[2])?])
        }
        Value::Array(items) if items.len() == 1 => num(&items[0]).map(|x| [x; 3]),
        _ => num(v).map(|x| [x; 3]),
    }
}

/// Pillow's bicubic convolution kernel (Keys, `a = -0.5`), evaluated with the
/// same operation order as Pillow so that the weights agree to the last bit.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The fixed-point filter taps of one axis, for a contiguous run of outputs.
struct Taps {
    /// Stride between the weight rows of consecutive outputs.
    ksize: usize,
    /// For each output: the first input sample it reads and how many it reads.
    spans: Vec<(usize, usize)>,
    /// `spans.len() * ksize` weights scaled by 2^22; only the first `span.1`
    /// of each row are used.
    weights: Vec<i32>,
}

impl Taps {
    /// Taps for resampling an axis of `in_size` samples to `out_size`, for the
    /// outputs in `outputs` only (each computed exactly as in a full resize).
    ///
    /// Mirrors Pillow's `precompute_coeffs` with the box spanning the whole
    /// input: output `i` is centred on `(i + 0.5) * scale` in input coordinates;
    /// when shrinking, the kernel is stretched by `scale` so every input pixel
    /// contributes (antialiasing); the reach is rounded to whole pixels and
    /// clamped to the image; the weights are normalised to sum to one in `f64`
    /// and then rounded half away from zero to 22-bit fixed point.
    fn new(in_size: u32, out_size: u32, outputs: Range<u32>) -> Taps {
        let scale = f64::from(in_size) / f64::from(out_size);
        let filterscale = scale.max(1.0);
        let support = BICUBIC_SUPPORT * filterscale;
        // C's `(int)ceil(support)`; the cast saturates instead of overflowing.
        let ksize = (support.ceil() as usize)
            .saturating_mul(2)
            .saturating_add(1);
        let inv = 1.0 / filterscale;
        let count = outputs.len();
        let mut spans = Vec::with_capacity(count);
        let mut weights = vec![0i32; count.saturating_mul(ksize)];
        let mut w = Vec::with_capacity(ksize);
        for (row, i) in weights.chunks_exact_mut(ksize).zip(outputs) {
            let center = (f64::from(i) + 0.5) * scale;
            // `as` truncates toward zero like C's `(int)`; the clamps then keep
            // the span inside the image.
            let lo = ((center - support + 0.5) as i64).clamp(0, i64::from(in_size));
            let hi = ((center + support + 0.5) as i64).clamp(lo, i64::from(in_size));
            let len = ((hi - lo) as usize).min(ksize);
            let lo = lo as usize;
            w.clear();
            let mut total = 0.0;
            for x in lo..lo + len {
                let k = bicubic((x as f64 - center + 0.5) * inv);
                total += k;
                w.push(k);
            }
            for (dst, &k) in row.iter_mut().zip(&w) {
                let k = if total != 0.0 { k / total } else { k };
                let fixed = k * f64::from(1u32 << PRECISION_BITS);
                *dst = if k < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            spans.push((lo, len));
        }
        Taps {
            ksize,
            spans,
            weights,
        }
    }

    /// The input range touched by any of these outputs.
    fn input_range(&self) -> Range<usize> {
        let start = self.spans.iter().map(|s| s.0).min().unwrap_or(0);
        let end = self.spans.iter().map(|s| s.0 + s.1).max().unwrap_or(start);
        start..end
    }

    fn weights(&self, output: usize) -> &[i32] {
        let (_, len) = self.spans[output];
        &self.weights[output * self.ksize..][..len]
    }
}

/// Pillow's `clip8`: drop the fixed-point fraction and saturate to `0..=255`.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Which Pillow release's pass order to reproduce.
///
/// Pillow resamples in two passes and rounds and clips to 8 bits in between, so
/// the order of the passes matters: swapping it moves some pixels by a level in
/// smooth areas and by much more next to hard edges. Pillow 12 and earlier
/// always ran the horizontal pass first; Pillow 13 runs the vertical pass first
/// when the height shrinks by more than twice as many pixels as the width. For
/// CLIP's shortest-edge resize the two differ only for images that are
/// downscaled and more than about twice as tall as wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PillowVersion {
    /// Pillow 13 and later.
    #[default]
    Current,
    /// Pillow 12.x and earlier: always horizontal first.
    Legacy,
}

impl PillowVersion {
    /// Whether Pillow runs the horizontal pass before the vertical one when
    /// resizing `in_w x in_h` to `out_w x out_h` (whole-image box).
    fn horizontal_first(self, in_w: u32, in_h: u32, out_w: u32, out_h: u32) -> bool {
        match self {
            PillowVersion::Legacy => true,
            PillowVersion::Current => {
                let dh = i64::from(in_h) - i64::from(out_h);
                let dw = i64::from(in_w) - i64::from(out_w);
                !(dh > 0 && dh > 2 * dw)
            }
        }
    }
}

/// An 8-bit RGB raster being passed between the resampling steps: row-major,
/// three bytes a pixel, `width` pixels a row.
struct Raster {
    width: usize,
    data: Vec<u8>,
}

/// Resamples rows `rows` of `src` horizontally with `taps`, whose spans are in
/// input columns counted from `x0` (the first column `src` holds).
fn horizontal_pass(
    src: &[u8],
    src_width: usize,
    x0: usize,
    rows: Range<usize>,
    taps: &Taps,
) -> Raster {
    /// Rows resampled together: the weights are shared by every row, so
    /// with the block stored column-major the multiply-adds run across rows in
    /// contiguous lanes, which the compiler vectorises.
    const R: usize = 8;
    const LANES: usize = 3 * R;
    let stride = src_width * 3;
    let width = taps.spans.len();
    let used = taps.input_range();
    let (c0, ncols) = (used.start - x0, used.len());
    let mut data = vec![0u8; rows.len() * width * 3];
    // `block[x][c][r]`: input column `c0 + x`, channel `c`, row `r` of the block.
    let mut block = vec![0i32; ncols * LANES];
    let lines = src[rows.start * stride..rows.end * stride].chunks(stride * R);
    for (chunk, out) in lines.zip(data.chunks_mut(width * 3 * R)) {
        for (r, line) in chunk.chunks_exact(stride).enumerate() {
            let line = &line[c0 * 3..(c0 + ncols) * 3];
            for (dst, px) in block.chunks_exact_mut(LANES).zip(line.chunks_exact(3)) {
                dst[r] = i32::from(px[0]);
                dst[R + r] = i32::from(px[1]);
                dst[2 * R + r] = i32::from(px[2]);
            }
        }
        let nrows = chunk.len() / stride;
        for (j, &(lo, _)) in taps.spans.iter().enumerate() {
            let mut acc = [ROUNDING; LANES];
            let first = lo - used.start;
            let cols = block[first * LANES..].chunks_exact(LANES);
            for (col, &k) in cols.zip(taps.weights(j)) {
                for (a, &v) in acc.iter_mut().zip(col) {
                    *a += v * k;
                }
            }
            for r in 0..nrows {
                let at = (r * width + j) * 3;
                out[at] = clip8(acc[r]);
                out[at + 1] = clip8(acc[R + r]);
                out[at + 2] = clip8(acc[2 * R + r]);
            }
        }
    }
    Raster { width, data }
}

/// Resamples columns `cols` of `src` vertically with `taps`, whose spans are in
/// input rows counted from `y0` (the first row `src` holds).
///
/// Integer sums are exact, so accumulating whole rows at a time (which the
/// compiler vectorises) gives the same result as Pillow's pixel-by-pixel loop.
fn vertical_pass(
    src: &[u8],
    src_width: usize,
    y0: usize,
    cols: Range<usize>,
    taps: &Taps,
) -> Raster {
    let stride = src_width * 3;
    let (a, b) = (cols.start * 3, cols.end * 3);
    let mut data = Vec::with_capacity(taps.spans.len() * (b - a));
    let mut acc = vec![0i32; b - a];
    for (j, &(lo, _)) in taps.spans.iter().enumerate() {
        acc.fill(ROUNDING);
        let lines = src[(lo - y0) * stride..].chunks_exact(stride);
        for (line, &k) in lines.zip(taps.weights(j)) {
            for (s, &v) in acc.iter_mut().zip(&line[a..b]) {
                *s += i32::from(v) * k;
            }
        }
        data.extend(acc.iter().map(|&s| clip8(s)));
    }
    Raster {
        width: cols.len(),
        data,
    }
}

/// Copies the rectangle `cols x rows` out of `src` (for an axis left unscaled).
fn copy_rect(src: &[u8], src_width: usize, cols: Range<usize>, rows: Range<usize>) -> Raster {
    let stride = src_width * 3;
    let mut data = Vec::with_capacity(rows.len() * cols.len() * 3);
    for line in src[rows.start * stride..rows.end * stride].chunks_exact(stride) {
        data.extend_from_slice(&line[cols.start * 3..cols.end * 3]);
    }
    Raster {
        width: cols.len(),
        data,
    }
}

fn to_usize(r: &Range<u32>) -> Range<usize> {
    r.start as usize..r.end as usize
}

/// Resamples `src` as a bicubic resize to `out_w x out_h` would, but computes
/// only the output columns `cols` and rows `rows` (a window of the result).
///
/// Each output pixel depends only on its own taps, so a window is bit-identical
/// to the same region of a full resize; computing just the window keeps the
/// centre crop of a very elongated image from allocating the whole resized
/// image. As in Pillow, an axis whose size does not change is not resampled
/// (its taps would be the identity anyway), the first pass only produces the
/// lines the second will read, and an empty input yields black.
fn resize_window(
    src: &RgbImage,
    out_w: u32,
    out_h: u32,
    cols: Range<u32>,
    rows: Range<u32>,
    pillow: PillowVersion,
) -> RgbImage {
    let (in_w, in_h) = src.dimensions();
    let cols = cols.start.min(out_w)..cols.end.min(out_w);
    let rows = rows.start.min(out_h)..rows.end.min(out_h);
    let (win_w, win_h) = (cols.len() as u32, rows.len() as u32);
    if win_w == 0 || win_h == 0 || in_w == 0 || in_h == 0 {
        return RgbImage::new(win_w, win_h);
    }
    let pixels: &[u8] = src.as_raw();
    let width = in_w as usize;

    let h_taps = (out_w != in_w).then(|| Taps::new(in_w, out_w, cols.clone()));
    let v_taps = (out_h != in_h).then(|| Taps::new(in_h, out_h, rows.clone()));
    let out = if pillow.horizontal_first(in_w, in_h, out_w, out_h) {
        let src_rows = v_taps.as_ref().map_or(to_usize(&rows), Taps::input_range);
        let tmp = match &h_taps {
            Some(taps) => horizontal_pass(pixels, width, 0, src_rows.clone(), taps),
            None => copy_rect(pixels, width, to_usize(&cols), src_rows.clone()),
        };
        match &v_taps {
            Some(taps) => vertical_pass(&tmp.data, tmp.width, src_rows.start, 0..tmp.width, taps),
            None => tmp,
        }
    } else {
        let src_cols = h_taps.as_ref().map_or(to_usize(&cols), Taps::input_range);
        let tmp = match &v_taps {
            Some(taps) => vertical_pass(pixels, width, 0, src_cols.clone(), taps),
            None => copy_rect(pixels, width, src_cols.clone(), to_usize(&rows)),
        };
        match &h_taps {
            Some(taps) => horizontal_pass(
                &tmp.data,
                tmp.width,
                src_cols.start,
                0..win_h as usize,
                taps,
            ),
            None => tmp,
        }
    };
    RgbImage::from_raw(win_w, win_h, out.data).unwrap_or_else(|| RgbImage::new(win_w, win_h))
}

/// Pillow's `Image.resize((width, height), Image.BICUBIC)` for 8-bit RGB,
/// bit-exact with Pillow 13 (see [`resize_bicubic_pil_as`] for older releases).
///
/// Where Pillow refuses (a zero output side) this returns an empty image, and an
/// empty input gives a black image of the requested size, as Pillow does.
pub fn resize_bicubic_pil(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    resize_bicubic_pil_as(img, width, height, PillowVersion::Current)
}

/// [`resize_bicubic_pil`] with the pass order of the given Pillow release.
pub fn resize_bicubic_pil_as(
    img: &RgbImage,
    width: u32,
    height: u32,
    pillow: PillowVersion,
) -> RgbImage {
    resize_window(img, width, height, 0..width, 0..height, pillow)
}

/// The `(width, height)` that transformers' CLIPImageProcessor resizes a
/// `width x height` image to for a shortest edge of `size`.
///
/// Its `get_resize_output_image_size(default_to_square=False)` sets the shorter
/// side (the width when the sides are equal) to `size` and the longer to
/// `int(size * long / short)`: true division in `f64`, then truncation. The
/// product is exact in `f64` for any realistic sizes (below 2^53), so this
/// matches Python to the pixel. Python fails on an empty image; here it gives
/// `(0, 0)`.
pub fn shortest_edge_size(width: u32, height: u32, size: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    if short == 0 {
        return (0, 0);
    }
    let new_long = ((u64::from(size) * u64::from(long)) as f64 / f64::from(short)) as u32;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// Resizes so that the shorter side is `size`, keeping the aspect ratio the way
/// CLIPImageProcessor does (see [`shortest_edge_size`]), with Pillow's bicubic.
pub fn resize_shortest_edge(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = shortest_edge_size(img.width(), img.height(), size);
    resize_bicubic_pil(img, w, h)
}

/// Where a centred window of `crop` samples starts along an axis of `len`
/// samples: `(len - crop) // 2` with Python's floor division. A negative start
/// means the window overhangs and the overhang is zero padding; transformers
/// puts the `ceil` half of the padding before the image, which is the same.
fn crop_start(len: u32, crop: u32) -> i64 {
    (i64::from(len) - i64::from(crop)).div_euclid(2)
}

/// The output positions `0..crop` that land inside `0..len`, and the offset from
/// output to input coordinates.
fn crop_overlap(len: u32, crop: u32) -> (Range<u32>, i64) {
    let start = crop_start(len, crop);
    let lo = (-start).clamp(0, i64::from(crop));
    let hi = (i64::from(len) - start).clamp(lo, i64::from(crop));
    (lo as u32..hi as u32, start)
}

/// transformers' `center_crop` to `height x width`: the window starts at
/// `((H - height) // 2, (W - width) // 2)`, so with an odd difference the extra
/// row or column is dropped at the bottom or right. Where the image is smaller
/// than the crop it is centred on a black (zero) canvas, with the odd pixel of
/// padding at the top or left.
pub fn center_crop(img: &RgbImage, height: u32, width: u32) -> RgbImage {
    let (xs, x_off) = crop_overlap(img.width(), width);
    let (ys, y_off) = crop_overlap(img.height(), height);
    let mut out = RgbImage::new(width, height);
    for y in ys {
        let sy = (i64::from(y) + y_off) as u32;
        for x in xs.clone() {
            let sx = (i64::from(x) + x_off) as u32;
            out.put_pixel(x, y, *img.get_pixel(sx, sy));
        }
    }
    out
}

/// The resized and centre-cropped image (`crop x crop`, 8-bit RGB) that CLIP
/// normalises, i.e. everything before the rescale.
///
/// Only the part of the resized image inside the crop is computed, so however
/// elongated the input, no more than a crop-wide (or crop-high) strip of it is
/// ever resampled and held. An empty input is treated as nothing but padding
/// (an all-black crop).
pub fn clip_pixel_values_u8(img: &RgbImage, p: &ClipPreprocess) -> Vec<u8> {
    clip_pixel_values_u8_as(img, p, PillowVersion::Current)
}

/// [`clip_pixel_values_u8`] resized as the given Pillow release would.
pub fn clip_pixel_values_u8_as(
    img: &RgbImage,
    p: &ClipPreprocess,
    pillow: PillowVersion,
) -> Vec<u8> {
    let (rw, rh) = shortest_edge_size(img.width(), img.height(), p.size);
    let (xs, x_off) = crop_overlap(rw, p.crop);
    let (ys, y_off) = crop_overlap(rh, p.crop);
    // The window of the resized image that survives the crop.
    let shift = |r: &Range<u32>, off: i64| {
        (i64::from(r.start) + off) as u32..(i64::from(r.end) + off) as u32
    };
    let window = resize_window(img, rw, rh, shift(&xs, x_off), shift(&ys, y_off), pillow);

    let side = p.crop as usize;
    let mut out = vec![0u8; side * side * 3];
    let win_row = window.width() as usize * 3;
    if win_row > 0 {
        for (line, y) in window.as_raw().chunks_exact(win_row).zip(ys) {
            let start = (y as usize * side + xs.start as usize) * 3;
            out[start..start + win_row].copy_from_slice(line);
        }
    }
    out
}

/// CLIP's `pixel_values` for one image: channel-major (`3 x crop x crop`)
/// `f32`, resized with Pillow's bicubic so the shorter side is `p.size`,
/// centre-cropped (zero-padded if smaller), scaled to `[0, 1]` and normalised.
///
/// The arithmetic mirrors transformers: `x * (1/255)` in `f64` rounded to
/// `f32`, then `(x - mean) / std` in `f32`, so the values agree exactly.
pub fn clip_pixel_values(img: &RgbImage, p: &ClipPreprocess) -> Vec<f32> {
    clip_pixel_values_as(img, p, PillowVersion::Current)
}

/// [`clip_pixel_values`] resized as the given Pillow release would (for
/// matching embeddings computed in Python with Pillow 12 or earlier).
pub fn clip_pixel_values_as(img: &RgbImage, p: &ClipPreprocess, pillow: PillowVersion) -> Vec<f32> {
    normalize_hwc(&clip_pixel_values_u8_as(img, p, pillow), p.crop as usize, p)
}

/// CLIP-normalised `pixel_values` of the whole image squeezed to `side x side`
/// (Pillow's bicubic, aspect not kept, nothing cropped), for uses that need
/// every part of the image under some patch: an anomaly map must cover the
/// borders that CLIP's centre crop would cut off. Rescaling and normalisation
/// are [`clip_pixel_values`]'.
pub fn clip_pixel_values_stretched(img: &RgbImage, side: u32, p: &ClipPreprocess) -> Vec<f32> {
    let resized = resize_bicubic_pil(img, side, side);
    normalize_hwc(resized.as_raw(), side as usize, p)
}

/// `side x side` 8-bit HWC to normalised CHW, with transformers' arithmetic.
fn normalize_hwc(hwc: &[u8], side: usize, p: &ClipPreprocess) -> Vec<f32> {
    let plane = side * side;
    let mut chw = vec![0f32; 3 * plane];
    for (c, dst) in chw.chunks_exact_mut(plane.max(1)).enumerate().take(3) {
        let (mean, std) = (p.mean[c], p.std[c]);
        for (d, px) in dst.iter_mut().zip(hwc.chunks_exact(3)) {
            let scaled = (f64::from(px[c]) * RESCALE) as f32;
            *d = (scaled - mean) / std;
        }
    }
    chw
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/preprocess/");

    fn fixture(name: &str) -> RgbImage {
        let path = format!("{FIXTURES}{name}");
        image::open(&path)
            .unwrap_or_else(|e| panic!("cannot open {path}: {e}"))
            .to_rgb8()
    }

    /// A deterministic, high-contrast pseudo-random image.
    fn noise(width: u32, height: u32, seed: u64) -> RgbImage {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        RgbImage::from_fn(width, height, |_, _| {
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 56) as u8
            };
            Rgb([next(), next(), next()])
        })
    }

    fn max_abs_diff(a: &[u8], b: &[u8]) -> u8 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap_or(0)
    }

    #[derive(serde::Deserialize)]
    struct Cases {
        size: u32,
        crop: u32,
        cases: Vec<Case>,
    }

    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        input: [u32; 2],
        resized: [u32; 2],
        crop_box: [i64; 4],
        pillow13_horizontal_first: bool,
        pillow12_differs: bool,
        channel_means: [f64; 3],
        samples: Vec<(usize, usize, usize, f32)>,
    }

    fn cases() -> Cases {
        let path = format!("{FIXTURES}cases.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).expect("cases.json")
    }

    #[test]
    fn matches_pillow_and_transformers_on_fixtures() {
        let doc = cases();
        let p = ClipPreprocess::default();
        assert_eq!((doc.size, doc.crop), (p.size, p.crop));
        // Both of Pillow 13's pass orders are exercised.
        assert!(doc.cases.iter().any(|c| c.pillow13_horizontal_first));
        assert!(doc.cases.iter().any(|c| !c.pillow13_horizontal_first));
        let mut worst_u8 = 0;
        let mut worst_norm = 0f32;
        for case in &doc.cases {
            let img = fixture(&format!("{}.png", case.name));
            assert_eq!(img.dimensions(), (case.input[0], case.input[1]));
            let (rw, rh) = shortest_edge_size(img.width(), img.height(), p.size);
            assert_eq!([rw, rh], case.resized, "{}", case.name);
            let (l, t) = (crop_start(rw, p.crop), crop_start(rh, p.crop));
            let c = i64::from(p.crop);
            assert_eq!([l, t, l + c, t + c], case.crop_box, "{}", case.name);

            let h_first =
                PillowVersion::Current.horizontal_first(case.input[0], case.input[1], rw, rh);
            assert_eq!(h_first, case.pillow13_horizontal_first, "{}", case.name);

            let expected = fixture(&format!("{}_crop224.png", case.name));
            let ours = clip_pixel_values_u8(&img, &p);
            let diff = max_abs_diff(&ours, expected.as_raw());
            worst_u8 = worst_u8.max(diff);
            assert_eq!(diff, 0, "{}: uint8 crop differs from Pillow", case.name);

            let legacy = if case.pillow12_differs {
                fixture(&format!("{}_crop224_pillow12.png", case.name))
            } else {
                expected.clone()
            };
            let ours_legacy = clip_pixel_values_u8_as(&img, &p, PillowVersion::Legacy);
            let diff = max_abs_diff(&ours_legacy, legacy.as_raw());
            worst_u8 = worst_u8.max(diff);
            assert_eq!(diff, 0, "{}: uint8 crop differs from Pillow 12", case.name);

            // The windowed path must equal the plain resize followed by a crop.
            let full = center_crop(&resize_shortest_edge(&img, p.size), p.crop, p.crop);
            assert_eq!(full.as_raw(), &ours, "{}", case.name);

            let values = clip_pixel_values(&img, &p);
            let plane = (p.crop * p.crop) as usize;
            assert_eq!(values.len(), 3 * plane);
            for (c, chan) in values.chunks_exact(plane).enumerate() {
                let tol = 1.0 / 255.0 / p.std[c];
                for (v, px) in chan.iter().zip(expected.pixels()) {
                    let reference = (f32::from(px[c]) / 255.0 - p.mean[c]) / p.std[c];
                    worst_norm = worst_norm.max((v - reference).abs());
                    assert!((v - reference).abs() <= tol, "{}", case.name);
                }
                let mean = chan.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64;
                assert!((mean - case.channel_means[c]).abs() < 1e-6, "{}", case.name);
            }
            for &(c, y, x, v) in &case.samples {
                // transformers' float32 arithmetic is reproduced exactly.
                assert_eq!(
                    values[c * plane + y * p.crop as usize + x],
                    v,
                    "{}",
                    case.name
                );
            }
        }
        eprintln!("fixtures: max |uint8 diff| = {worst_u8}, max |normalised diff| = {worst_norm}");
    }

    #[test]
    fn defaults_are_openai_clip() {
        let p = ClipPreprocess::default();
        assert_eq!((p.size, p.crop), (224, 224));
        // The f64 literals Python holds, rounded to f32 as numpy does.
        let mean = [0.48145466_f64, 0.4578275, 0.40821073].map(|x| x as f32);
        let std = [0.26862954_f64, 0.26130258, 0.27577711].map(|x| x as f32);
        assert_eq!((p.mean, p.std), (mean, std));
    }

    #[test]
    fn reads_hf_configs() {
        // openai/clip-vit-base-patch16's preprocessor_config.json.
        let legacy = serde_json::json!({
            "crop_size": 224, "do_center_crop": true, "do_normalize": true,
            "do_resize": true, "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3, "size": 224
        });
        let p = ClipPreprocess::from_hf_config(&legacy).unwrap();
        assert_eq!(p, ClipPreprocess::default());

        let modern = serde_json::json!({
            "size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336},
            "image_mean": [0.5, 0.5, 0.5], "image_std": 0.5,
            "rescale_factor": 0.00392156862745098, "do_convert_rgb": true
        });
        let p = ClipPreprocess::from_hf_config(&modern).unwrap();
        assert_eq!(
            (p.size, p.crop, p.mean, p.std),
            (336, 336, [0.5; 3], [0.5; 3])
        );

        // What transformers 5's CLIPImageProcessorPil().save_pretrained() writes.
        let saved = serde_json::json!({
            "crop_size": {"height": 224, "width": 224}, "do_center_crop": true,
            "do_convert_rgb": true, "do_normalize": true, "do_rescale": true,
            "do_resize": true, "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_processor_type": "CLIPImageProcessor",
            "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
            "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 224}
        });
        let p = ClipPreprocess::from_hf_config(&saved).unwrap();
        assert_eq!(p, ClipPreprocess::default());

        let empty = ClipPreprocess::from_hf_config(&serde_json::json!({})).unwrap();
        assert_eq!(empty, ClipPreprocess::default());
    }

    #[test]
    fn refuses_configs_it_cannot_honour() {
        for bad in [
            serde_json::json!({"size": {"height": 224, "width": 224}}),
            serde_json::json!({"size": -1}),
            serde_json::json!({"size": "224"}),
            serde_json::json!({"crop_size": {"height": 224, "width": 200}}),
            serde_json::json!({"image_mean": [0.5, 0.5]}),
            serde_json::json!({"image_std": [0.5, 0.0, 0.5]}),
            serde_json::json!({"resample": 2}),
            serde_json::json!({"do_center_crop": false}),
            serde_json::json!({"rescale_factor": 1.0}),
        ] {
            assert!(ClipPreprocess::from_hf_config(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shortest_edge_sizes_follow_transformers() {
        assert_eq!(shortest_edge_size(640, 480, 224), (298, 224));
        assert_eq!(shortest_edge_size(480, 640, 224), (224, 298));
        assert_eq!(shortest_edge_size(1000, 333, 224), (672, 224));
        assert_eq!(shortest_edge_size(97, 61, 224), (356, 224));
        assert_eq!(shortest_edge_size(300, 300, 224), (224, 224));
        // 224 * 3 / 1 is exact: no off-by-one from the division.
        assert_eq!(shortest_edge_size(3, 1, 224), (672, 224));
        assert_eq!(shortest_edge_size(0, 10, 224), (0, 0));
        assert_eq!(shortest_edge_size(10, 0, 224), (0, 0));
    }

    #[test]
    fn kernel_matches_keys_cubic() {
        assert_eq!(bicubic(0.0), 1.0);
        assert_eq!(bicubic(1.0), 0.0);
        assert_eq!(bicubic(-2.0), 0.0);
        assert_eq!(bicubic(0.5), 0.5625);
        assert_eq!(bicubic(1.5), -0.0625);
    }

    #[test]
    fn taps_sum_to_one_in_fixed_point() {
        for (inp, out) in [(1024, 224), (97, 356), (5, 3), (1, 7), (7, 1), (333, 224)] {
            let taps = Taps::new(inp, out, 0..out);
            for (j, &(lo, len)) in taps.spans.iter().enumerate() {
                let sum: i32 = taps.weights(j).iter().sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= 8,
                    "{inp}->{out} #{j}"
                );
                assert!(len >= 1 && lo + len <= inp as usize);
            }
        }
    }

    #[test]
    fn sums_cannot_overflow_i32() {
        let mut worst = 0i64;
        for inp in 1..40 {
            for out in 1..120 {
                let taps = Taps::new(inp, out, 0..out);
                for j in 0..taps.spans.len() {
                    let abs: i64 = taps.weights(j).iter().map(|&k| i64::from(k).abs()).sum();
                    worst = worst.max(abs);
                }
            }
        }
        // About 1.27 in real terms; the sums stay well inside i32.
        assert!(worst < (13 << PRECISION_BITS) / 10, "{worst}");
        assert!(255 * worst + i64::from(ROUNDING) < i64::from(i32::MAX));
    }

    #[test]
    fn same_size_is_a_copy_and_constant_images_stay_constant() {
        let img = noise(37, 23, 1);
        assert_eq!(resize_bicubic_pil(&img, 37, 23), img);
        let grey = RgbImage::from_pixel(50, 31, Rgb([77, 0, 255]));
        for (w, h) in [(13, 9), (200, 5), (50, 90), (1, 1)] {
            let out = resize_bicubic_pil(&grey, w, h);
            assert!(out.pixels().all(|p| *p == Rgb([77, 0, 255])), "{w}x{h}");
        }
    }

    #[test]
    fn windows_equal_the_full_resize() {
        let img = noise(61, 47, 2);
        // Both orders, both single-pass cases, and (50, 10), which Pillow 13
        // resamples vertically first.
        for (w, h) in [(150, 100), (20, 33), (61, 80), (90, 47), (50, 10), (61, 12)] {
            for pillow in [PillowVersion::Current, PillowVersion::Legacy] {
                let full = resize_bicubic_pil_as(&img, w, h, pillow);
                let (cols, rows) = (3..w - 4, 5..h - 2);
                let win = resize_window(&img, w, h, cols.clone(), rows.clone(), pillow);
                assert_eq!(win.dimensions(), (cols.len() as u32, rows.len() as u32));
                for (y, row) in rows.enumerate() {
                    for (x, col) in cols.clone().enumerate() {
                        assert_eq!(
                            win.get_pixel(x as u32, y as u32),
                            full.get_pixel(col, row),
                            "{w}x{h} {pillow:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn pass_order_follows_pillow_releases() {
        let current = PillowVersion::Current;
        // Height shrinks by more than twice the pixels the width does.
        assert!(!current.horizontal_first(100, 400, 50, 250));
        assert!(current.horizontal_first(100, 400, 50, 300)); // 100 == 2 * 50
        assert!(current.horizontal_first(1024, 1024, 224, 224));
        assert!(current.horizontal_first(300, 500, 224, 373));
        assert!(current.horizontal_first(100, 400, 300, 900)); // upscaling
        assert!(!current.horizontal_first(300, 400, 400, 350)); // width grows
        assert!(PillowVersion::Legacy.horizontal_first(100, 400, 50, 250));
        // The order matters: intermediate rounding and clipping differ.
        let img = noise(40, 200, 8);
        let a = resize_bicubic_pil_as(&img, 30, 60, PillowVersion::Current);
        let b = resize_bicubic_pil_as(&img, 30, 60, PillowVersion::Legacy);
        assert_ne!(a, b);
        assert!(max_abs_diff(a.as_raw(), b.as_raw()) <= 40);
    }

    #[test]
    fn center_crop_offsets_and_padding_follow_transformers() {
        let img = RgbImage::from_fn(5, 4, |x, y| Rgb([x as u8 + 1, y as u8 + 1, 9]));
        // Odd difference: (5 - 2) // 2 = 1, (4 - 1) // 2 = 1.
        let c = center_crop(&img, 1, 2);
        assert_eq!(c.dimensions(), (2, 1));
        assert_eq!(c.get_pixel(0, 0), &Rgb([2, 2, 9]));
        assert_eq!(c.get_pixel(1, 0), &Rgb([3, 2, 9]));
        // Larger than the image: width 5 -> 8 pads ceil(3/2) = 2 on the left, 1 on
        // the right; height 4 -> 7 pads 2 on top, 1 below.
        let c = center_crop(&img, 7, 8);
        assert_eq!(c.dimensions(), (8, 7));
        for (x, y, p) in c.enumerate_pixels() {
            let inside = (2..7).contains(&x) && (2..6).contains(&y);
            let want = if inside {
                Rgb([(x - 2) as u8 + 1, (y - 2) as u8 + 1, 9])
            } else {
                Rgb([0, 0, 0])
            };
            assert_eq!(*p, want, "({x}, {y})");
        }
        // Padding on one axis, cropping on the other.
        let c = center_crop(&img, 2, 6);
        assert_eq!(c.get_pixel(0, 0), &Rgb([0, 0, 0]));
        assert_eq!(c.get_pixel(1, 0), &Rgb([1, 2, 9]));
        assert_eq!(c.get_pixel(5, 1), &Rgb([5, 3, 9]));
    }

    #[test]
    fn crop_larger_than_resize_is_zero_padded_before_normalising() {
        let p = ClipPreprocess {
            size: 4,
            crop: 6,
            ..ClipPreprocess::default()
        };
        let img = RgbImage::from_pixel(8, 8, Rgb([255, 255, 255]));
        let u8s = clip_pixel_values_u8(&img, &p);
        assert_eq!(u8s.len(), 6 * 6 * 3);
        let white = |x: usize, y: usize| u8s[(y * 6 + x) * 3] == 255;
        assert!(white(1, 1) && white(4, 4) && !white(0, 0) && !white(5, 5));
        let values = clip_pixel_values(&img, &p);
        assert_eq!(values[0], -p.mean[0] / p.std[0]);
    }

    #[test]
    fn degenerate_sizes_do_not_panic() {
        let p = ClipPreprocess::default();
        let padding = -p.mean[2] / p.std[2];
        for (w, h) in [(0, 0), (0, 5), (5, 0), (1, 1), (1, 3000), (3000, 1), (2, 2)] {
            let img = noise(w, h, 3);
            let values = clip_pixel_values(&img, &p);
            assert_eq!(values.len(), 3 * 224 * 224, "{w}x{h}");
            assert!(values.iter().all(|v| v.is_finite()));
            if w == 0 || h == 0 {
                assert!(values[2 * 224 * 224..].iter().all(|&v| v == padding));
            }
        }
        assert_eq!(
            resize_bicubic_pil(&noise(4, 4, 4), 0, 7).dimensions(),
            (0, 7)
        );
        assert_eq!(
            resize_bicubic_pil(&noise(0, 0, 4), 3, 2),
            RgbImage::new(3, 2)
        );
        assert_eq!(center_crop(&noise(4, 4, 5), 0, 0).dimensions(), (0, 0));
        let none = ClipPreprocess {
            crop: 0,
            ..ClipPreprocess::default()
        };
        assert!(clip_pixel_values(&noise(9, 9, 6), &none).is_empty());
    }

    #[test]
    fn downscale_1024_is_fast_in_release() {
        if cfg!(debug_assertions) {
            return;
        }
        let img = noise(1024, 1024, 7);
        let p = ClipPreprocess::default();
        // The best of several runs, so that a busy machine does not fail it.
        let best = (0..20)
            .map(|_| {
                let start = std::time::Instant::now();
                std::hint::black_box(clip_pixel_values(std::hint::black_box(&img), &p));
                start.elapsed()
            })
            .min()
            .unwrap_or_default();
        eprintln!("1024x1024 -> 224: {best:?} (best of 20)");
        assert!(best.as_millis() < 10, "{best:?}");
    }
}
