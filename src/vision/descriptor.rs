//! The weight-free image embedder (`descriptor-v1`) and the exact re-ranking
//! that follows it.
//!
//! Retrieval of a defect-free reference for a query image runs in two stages,
//! after the way MMAD chose its "similar templates" (SSIM plus colour-histogram
//! Bhattacharyya distance):
//!
//! 1. **Candidate search** with [`DescriptorEmbedder`]: a compact, training-free
//!    global descriptor, L2-normalised so that the inner product of two vectors
//!    is their similarity (1 for identical pixels). It is cheap enough to embed a
//!    whole memory on a laptop without weights and fits the vector index that CLIP
//!    embeddings use.
//! 2. **Re-ranking** of the best few candidates with [`rerank`], which compares
//!    small stored summaries ([`RerankThumb`]) exactly: SSIM on a 64 x 64 grey
//!    thumbnail minus the Bhattacharyya distance of colour histograms.
//!
//! # Working image
//!
//! Every input, whatever its size, is first reduced once to a 128 x 128 RGB
//! working image by box filtering (area averaging with exact integer sums; an
//! axis shorter than 128 pixels is repeated instead). Everything below is derived
//! from that working image, which makes the cost nearly independent of the input
//! size beyond one pass over its pixels, and averages away sensor noise and JPEG
//! artefacts. The aspect ratio is not kept: reference and query images of one
//! product come from the same camera, so they are distorted alike. Luma is
//! BT.601 (`0.299 R + 0.587 G + 0.114 B`, as OpenCV's grey conversion), on the
//! encoded 0-255 values.
//!
//! # The vector (520 values)
//!
//! | block | values | share of the inner product |
//! |---|---|---|
//! | (a) colour layout | 8 x 8 cells x 3 opponent channels = 192 | 0.4 |
//! | (b) colour histogram | 8 luma x 5 x 5 chroma bins = 200 | 0.2 |
//! | (c) gradient structure | 4 x 4 cells x 8 orientations = 128 | 0.4 |
//!
//! Each block is brought to (at most) unit length, multiplied by the square root
//! of its share, and the concatenation is L2-normalised. For two images whose
//! blocks are all at full length the similarity is therefore
//! `0.4 * layout + 0.2 * colour + 0.4 * structure`, each term a cosine. Blocks
//! (a) and (c) have a soft floor on their norm, so on a nearly flat image they
//! fall short of unit length and the other blocks decide.
//!
//! **(a) Colour layout** (values `0..192`, ordered luma cells, then `O1`, then
//! `O2`, each row-major): the working image averaged over 16 x 16 blocks to 8 x 8
//! cells, in an opponent colour space: luma, `O1 = (R - G) / sqrt 2` and
//! `O2 = (R + G - 2B) / sqrt 6`. Each channel is centred on its mean over the 64
//! cells, and the chroma channels are weighted 0.5 against luma (shape is mostly
//! in luma; chroma is noisier, JPEG halves its resolution). Centring and
//! normalising make the block blind to global brightness offset and contrast
//! gain, which are left to the histogram. It captures where the part lies and
//! its coarse appearance — what separates two poses of one product. Instead of
//! dividing by the norm `n` the block divides by `sqrt(n^2 + 64 * 2^2)`: a layout
//! whose cells vary by less than about 2 grey levels (a uniform texture, a blank
//! image) is mostly noise, so it is kept short rather than blown up to full
//! weight.
//!
//! **(b) Colour histogram** (values `192..392`, index `(l * 5 + c1) * 5 + c2`):
//! a joint histogram of luma (8 bins, centres `0, 255/7, ..., 255`) and two
//! chroma axes `C1 = R - G` and `C2 = (R + G) / 2 - B` (5 bins each, centres
//! `-128, -64, 0, 64, 128`, values beyond clamped to the end bins). Grey lies
//! at a bin *centre*, so the many nearly grey pixels of industrial images do not
//! flicker across a bin border, and each pixel is spread over the 8 nearest
//! bins by linear interpolation, so a small brightness change moves mass
//! smoothly instead of all at once. The histogram is normalised to sum 1 and
//! square-rooted (Hellinger), so its inner product is the Bhattacharyya
//! coefficient; its length is always 1.
//!
//! **(c) Gradient structure** (values `392..520`, index `(cy * 4 + cx) * 8 + o`):
//! a HOG-like descriptor of the 128 x 128 luma. Gradients are central
//! differences (`(g[x+1] - g[x-1]) / 2`, border replicated); each pixel adds its
//! gradient magnitude to 8 unsigned orientation bins (22.5 degrees wide) of a
//! 4 x 4 grid of 32 x 32 cells, interpolated linearly between the two nearest
//! orientations and bilinearly between the nearest cells, so that small shifts
//! and rotations change the vector smoothly. Unsigned orientations make it
//! indifferent to contrast polarity (a light edge on dark and a dark edge on
//! light count alike). Each bin is then square-rooted (so that a few strong
//! edges do not drown the rest) and the block's mean is subtracted: every
//! gradient histogram shares a large common part (sensor noise spread evenly
//! over all bins, the overall edge density), which would make any two images
//! look 80-90 % alike in this block; without it, the different synthetic parts
//! of the tests score about 0 to 0.5 against each other, the same part 0.95 or
//! more. The block is divided by `sqrt(E + 128^2 * 0.02)`, `E` being its
//! squared length: nearly unit length for images with real edges (the drawn
//! parts have `E / 128^2` around 0.7), short for nearly flat ones whose
//! gradients are only noise (0.0001-0.004).
//!
//! The vector is a pure function of the pixels: the same pixels always give the
//! same bits (no randomness, a fixed order of floating-point operations per
//! image; batches are parallel across images only). Change [`ID`] whenever the
//! definition above changes, so that stored memories are rebuilt.

use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::embed::{EmbedError, ImageEmbedder, l2_normalize};

/// Identifier of the descriptor defined in the module documentation.
pub const ID: &str = "descriptor-v1";

/// Side of the working image every input is reduced to.
const WORK: usize = 128;
const WORK_PIXELS: usize = WORK * WORK;

/// Colour layout: cells per side, and working pixels per cell side.
const LAYOUT_SIDE: usize = 8;
const LAYOUT_CELL: usize = WORK / LAYOUT_SIDE;
const LAYOUT_CELLS: usize = LAYOUT_SIDE * LAYOUT_SIDE;
const LAYOUT_DIM: usize = 3 * LAYOUT_CELLS;
/// Weight of each chroma channel against luma in the layout.
const LAYOUT_CHROMA_WEIGHT: f32 = 0.5;
/// Soft floor of the layout norm: cells varying by about this many grey levels
/// (root mean square) get half weight, flatter layouts less.
const LAYOUT_NOISE_LEVEL: f32 = 2.0;

/// Colour histogram bins: luma, and each of the two chroma axes.
const HIST_LUMA_BINS: usize = 8;
const HIST_CHROMA_BINS: usize = 5;
const HIST_CHROMA_FIRST: f32 = -128.0;
const HIST_CHROMA_STEP: f32 = 64.0;
/// Number of histogram bins, in the descriptor and in [`RerankThumb`].
pub const HIST_BINS: usize = HIST_LUMA_BINS * HIST_CHROMA_BINS * HIST_CHROMA_BINS;

/// Gradient structure: cells per side, orientations, pixels per cell side.
const HOG_SIDE: usize = 4;
const HOG_CELL: usize = WORK / HOG_SIDE;
const HOG_ORIENTATIONS: usize = 8;
const HOG_DIM: usize = HOG_SIDE * HOG_SIDE * HOG_ORIENTATIONS;
/// Soft floor of the structure block's squared norm, per working pixel. Drawn
/// parts with strong edges have about 0.7 (a fine texture 5), flat images with
/// sensor noise 0.0001-0.004; a block at the floor has half its squared length.
const HOG_ENERGY_FLOOR: f32 = 0.02;

/// Shares of the inner product (the squares of the block weights); they sum to 1.
const SHARE_LAYOUT: f32 = 0.4;
const SHARE_HIST: f32 = 0.2;
const SHARE_HOG: f32 = 0.4;

/// Length of every descriptor vector.
pub const DIM: usize = LAYOUT_DIM + HIST_BINS + HOG_DIM;

/// Side of the grey thumbnail kept for re-ranking.
pub const THUMB_SIDE: usize = 64;

/// SSIM constants (Wang et al. 2004) for 8-bit images.
const SSIM_C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
const SSIM_C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);
/// SSIM Gaussian window: 11 x 11 taps, sigma 1.5.
const SSIM_RADIUS: usize = 5;
const SSIM_SIGMA: f64 = 1.5;

/// The weight-free embedder: see the module documentation for the vector.
#[derive(Clone, Copy, Debug, Default)]
pub struct DescriptorEmbedder;

impl DescriptorEmbedder {
    /// Creates the embedder; it has no state.
    pub fn new() -> Self {
        Self
    }
}

impl ImageEmbedder for DescriptorEmbedder {
    fn id(&self) -> String {
        ID.to_owned()
    }

    fn dim(&self) -> usize {
        DIM
    }

    fn embed_batch(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>, EmbedError> {
        images
            .par_iter()
            .enumerate()
            .map(|(index, image)| {
                check_not_empty(image, || format!("image {index}"))?;
                let work = Work::from_image(image);
                Ok(descriptor(&work, &work.histogram()))
            })
            .collect()
    }
}

/// Computes the descriptor and the re-ranking summary of one image together,
/// sharing the downscale (what building a memory needs).
///
/// Fails only for an image without pixels.
pub fn describe(image: &RgbImage) -> Result<(Vec<f32>, RerankThumb), EmbedError> {
    check_not_empty(image, || "the image".to_owned())?;
    let work = Work::from_image(image);
    let hist = work.histogram();
    Ok((descriptor(&work, &hist), work.thumb(hist)))
}

/// Rejects an image without pixels: it has nothing to describe, and is most
/// likely a decoding mistake upstream that should not pass as a black image.
fn check_not_empty(image: &RgbImage, what: impl FnOnce() -> String) -> Result<(), EmbedError> {
    if image.width() == 0 || image.height() == 0 {
        return Err(EmbedError::Compute {
            what: format!("{} ({}x{})", what(), image.width(), image.height()),
            message: "the image has no pixels".into(),
        });
    }
    Ok(())
}

/// The 128 x 128 working image: per-channel means of the source pixels in each
/// cell (0-255), and their luma.
struct Work {
    r: Vec<f32>,
    g: Vec<f32>,
    b: Vec<f32>,
    luma: Vec<f32>,
}

impl Work {
    /// Reduces `image` to the working size by box filtering.
    ///
    /// Source rows are first summed into per-column integer accumulators, then
    /// the columns of each cell are summed, so the one pass over the (possibly
    /// large) source is a plain widening add that the compiler vectorises. An
    /// image without pixels gives a black working image.
    fn from_image(image: &RgbImage) -> Self {
        let mut work = Self {
            r: vec![0.0; WORK_PIXELS],
            g: vec![0.0; WORK_PIXELS],
            b: vec![0.0; WORK_PIXELS],
            luma: vec![0.0; WORK_PIXELS],
        };
        let (width, height) = (image.width() as usize, image.height() as usize);
        if width == 0 || height == 0 {
            return work;
        }
        let stride = width * 3;
        let raw = image.as_raw();
        let xs = spans(width, WORK);
        let ys = spans(height, WORK);
        // A column accumulates at most ceil(height / 128) values up to 255; u32
        // would overflow only past 2^32 / 255 rows per band, that is for an image
        // over two billion rows tall (6 GB even one pixel wide).
        let mut columns = vec![0u32; stride];
        for (oy, &(y0, y1)) in ys.iter().enumerate() {
            columns.fill(0);
            for row in raw[y0 * stride..y1 * stride].chunks_exact(stride) {
                columns
                    .iter_mut()
                    .zip(row)
                    .for_each(|(sum, &value)| *sum += u32::from(value));
            }
            for (ox, &(x0, x1)) in xs.iter().enumerate() {
                let mut sum = [0u64; 3];
                for pixel in columns[x0 * 3..x1 * 3].chunks_exact(3) {
                    sum[0] += u64::from(pixel[0]);
                    sum[1] += u64::from(pixel[1]);
                    sum[2] += u64::from(pixel[2]);
                }
                let count = ((y1 - y0) * (x1 - x0)) as f64;
                let i = oy * WORK + ox;
                work.r[i] = (sum[0] as f64 / count) as f32;
                work.g[i] = (sum[1] as f64 / count) as f32;
                work.b[i] = (sum[2] as f64 / count) as f32;
            }
        }
        for (((luma, &r), &g), &b) in work.luma.iter_mut().zip(&work.r).zip(&work.g).zip(&work.b) {
            *luma = 0.299 * r + 0.587 * g + 0.114 * b;
        }
        work
    }

    /// The re-ranking summary: 2 x 2 means of the working luma, and the
    /// colour histogram `hist` (from [`Work::histogram`]).
    fn thumb(&self, hist: Vec<f32>) -> RerankThumb {
        let mut gray = Vec::with_capacity(THUMB_SIDE * THUMB_SIDE);
        for ty in 0..THUMB_SIDE {
            let top = &self.luma[2 * ty * WORK..(2 * ty + 1) * WORK];
            let bottom = &self.luma[(2 * ty + 1) * WORK..(2 * ty + 2) * WORK];
            for (t, b) in top.chunks_exact(2).zip(bottom.chunks_exact(2)) {
                let mean = (t[0] + t[1] + b[0] + b[1]) * 0.25;
                // Luma of 0-255 channels stays in 0-255; the clamp only guards
                // the rounding of the weights.
                gray.push(mean.round().clamp(0.0, 255.0) as u8);
            }
        }
        RerankThumb { gray, hist }
    }

    /// The joint luma-chroma histogram with linear interpolation between bins,
    /// normalised to sum 1 (block (b) before the square root).
    fn histogram(&self) -> Vec<f32> {
        let mut hist = vec![0.0f32; HIST_BINS];
        let luma_step = 255.0 / (HIST_LUMA_BINS - 1) as f32;
        let pixels = self.luma.iter().zip(&self.r).zip(&self.g).zip(&self.b);
        for (((&luma, &r), &g), &b) in pixels {
            let l = soft_bin(luma, 0.0, luma_step, HIST_LUMA_BINS);
            let c1 = soft_bin(r - g, HIST_CHROMA_FIRST, HIST_CHROMA_STEP, HIST_CHROMA_BINS);
            let c2 = soft_bin(
                0.5 * (r + g) - b,
                HIST_CHROMA_FIRST,
                HIST_CHROMA_STEP,
                HIST_CHROMA_BINS,
            );
            for (li, lw) in l.pairs() {
                for (ai, aw) in c1.pairs() {
                    let base = (li * HIST_CHROMA_BINS + ai) * HIST_CHROMA_BINS;
                    for (bi, bw) in c2.pairs() {
                        hist[base + bi] += lw * aw * bw;
                    }
                }
            }
        }
        let scale = 1.0 / WORK_PIXELS as f32;
        hist.iter_mut().for_each(|h| *h *= scale);
        hist
    }

    /// Block (a): the mean-centred opponent-colour 8 x 8 layout, normalised
    /// with a soft floor.
    fn layout(&self) -> Vec<f32> {
        let mut cells = vec![[0.0f32; 3]; LAYOUT_CELLS];
        for y in 0..WORK {
            let row = y * WORK;
            let cell_row = (y / LAYOUT_CELL) * LAYOUT_SIDE;
            for x in 0..WORK {
                let cell = &mut cells[cell_row + x / LAYOUT_CELL];
                cell[0] += self.r[row + x];
                cell[1] += self.g[row + x];
                cell[2] += self.b[row + x];
            }
        }
        let per_cell = 1.0 / (LAYOUT_CELL * LAYOUT_CELL) as f32;
        let mut out = vec![0.0f32; LAYOUT_DIM];
        let (luma, chroma) = out.split_at_mut(LAYOUT_CELLS);
        let (o1, o2) = chroma.split_at_mut(LAYOUT_CELLS);
        for (i, cell) in cells.iter().enumerate() {
            let [r, g, b] = cell.map(|sum| sum * per_cell);
            luma[i] = 0.299 * r + 0.587 * g + 0.114 * b;
            o1[i] = LAYOUT_CHROMA_WEIGHT * (r - g) * std::f32::consts::FRAC_1_SQRT_2;
            o2[i] = LAYOUT_CHROMA_WEIGHT * (r + g - 2.0 * b) / 6.0f32.sqrt();
        }
        for channel in out.chunks_exact_mut(LAYOUT_CELLS) {
            let mean = channel.iter().sum::<f32>() / LAYOUT_CELLS as f32;
            channel.iter_mut().for_each(|v| *v -= mean);
        }
        let floor = LAYOUT_CELLS as f32 * LAYOUT_NOISE_LEVEL * LAYOUT_NOISE_LEVEL;
        let norm = (out.iter().map(|v| v * v).sum::<f32>() + floor).sqrt();
        out.iter_mut().for_each(|v| *v /= norm);
        out
    }

    /// Block (c): square-rooted, softly binned gradient-orientation histograms
    /// on a 4 x 4 grid, normalised with a soft floor.
    fn structure(&self) -> Vec<f32> {
        let mut hog = vec![0.0f32; HOG_DIM];
        let orientation_step = std::f32::consts::PI / HOG_ORIENTATIONS as f32;
        let cell_first = (HOG_CELL as f32 - 1.0) * 0.5;
        let at = |x: usize, y: usize| self.luma[y * WORK + x];
        for y in 0..WORK {
            let cy = soft_bin(y as f32, cell_first, HOG_CELL as f32, HOG_SIDE);
            let (up, down) = (y.saturating_sub(1), (y + 1).min(WORK - 1));
            for x in 0..WORK {
                let (left, right) = (x.saturating_sub(1), (x + 1).min(WORK - 1));
                let gx = 0.5 * (at(right, y) - at(left, y));
                let gy = 0.5 * (at(x, down) - at(x, up));
                let magnitude = (gx * gx + gy * gy).sqrt();
                if magnitude == 0.0 {
                    continue;
                }
                // Unsigned orientation in [0, pi).
                let mut angle = gy.atan2(gx);
                if angle < 0.0 {
                    angle += std::f32::consts::PI;
                }
                // Bin k is centred on (k + 0.5) * step; wrap around at pi.
                let t = angle / orientation_step - 0.5;
                let lower = t.floor();
                let frac = t - lower;
                let o0 = (lower as i32).rem_euclid(HOG_ORIENTATIONS as i32) as usize;
                let o1 = (o0 + 1) % HOG_ORIENTATIONS;
                let cx = soft_bin(x as f32, cell_first, HOG_CELL as f32, HOG_SIDE);
                for (yi, yw) in cy.pairs() {
                    for (xi, xw) in cx.pairs() {
                        let base = (yi * HOG_SIDE + xi) * HOG_ORIENTATIONS;
                        let w = magnitude * yw * xw;
                        hog[base + o0] += w * (1.0 - frac);
                        hog[base + o1] += w * frac;
                    }
                }
            }
        }
        // Square roots, then the mean over the block removed: what is left is how
        // the edges are distributed over cells and orientations.
        hog.iter_mut().for_each(|h| *h = h.max(0.0).sqrt());
        let mean = hog.iter().sum::<f32>() / HOG_DIM as f32;
        hog.iter_mut().for_each(|h| *h -= mean);
        let energy = hog.iter().map(|h| h * h).sum::<f32>();
        let norm = (energy + WORK_PIXELS as f32 * HOG_ENERGY_FLOOR).sqrt();
        hog.iter_mut().for_each(|h| *h /= norm);
        hog
    }
}

/// The full descriptor of a working image whose histogram is `hist`.
fn descriptor(work: &Work, hist: &[f32]) -> Vec<f32> {
    let mut vector = Vec::with_capacity(DIM);
    let layout_weight = SHARE_LAYOUT.sqrt();
    vector.extend(work.layout().into_iter().map(|v| v * layout_weight));
    let hist_weight = SHARE_HIST.sqrt();
    vector.extend(hist.iter().map(|h| h.sqrt() * hist_weight));
    let hog_weight = SHARE_HOG.sqrt();
    vector.extend(work.structure().into_iter().map(|v| v * hog_weight));
    debug_assert_eq!(vector.len(), DIM);
    l2_normalize(&mut vector);
    vector
}

/// For each of `dst` output cells along an axis of `src` pixels, the source
/// range `[start, end)` it averages: an exact partition when `src >= dst`, and
/// the nearest source pixel (repetition) when the axis is shorter.
fn spans(src: usize, dst: usize) -> Vec<(usize, usize)> {
    (0..dst)
        .map(|o| {
            let start = o * src / dst;
            let end = ((o + 1) * src / dst).max(start + 1);
            (start, end)
        })
        .collect()
}

/// Linear interpolation of a value between the two nearest of `n` bins whose
/// centres are `first + k * step`; values beyond the end centres go wholly to
/// the end bins.
#[derive(Clone, Copy)]
struct SoftBin {
    lower: usize,
    upper_weight: f32,
}

impl SoftBin {
    /// The two (bin, weight) pairs; the weights sum to 1.
    fn pairs(self) -> [(usize, f32); 2] {
        [
            (self.lower, 1.0 - self.upper_weight),
            (self.lower + 1, self.upper_weight),
        ]
    }
}

fn soft_bin(value: f32, first: f32, step: f32, n: usize) -> SoftBin {
    let t = ((value - first) / step).clamp(0.0, (n - 1) as f32);
    let lower = (t.floor() as usize).min(n - 2);
    SoftBin {
        lower,
        upper_weight: t - lower as f32,
    }
}

/// What re-ranking compares: a 64 x 64 grey thumbnail (row-major, BT.601 luma)
/// and the colour histogram of block (b) (200 bins summing to 1, before the
/// square root). About 4.9 KB; cheap to store beside each memory entry.
///
/// Deserialising checks the sizes and values, so every thumbnail that exists is
/// valid and the comparisons never panic or give NaN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ThumbData")]
pub struct RerankThumb {
    gray: Vec<u8>,
    hist: Vec<f32>,
}

impl RerankThumb {
    /// The grey thumbnail, `THUMB_SIDE` x `THUMB_SIDE`, row-major.
    pub fn gray(&self) -> &[u8] {
        &self.gray
    }

    /// The colour histogram, [`HIST_BINS`] bins summing to 1.
    pub fn hist(&self) -> &[f32] {
        &self.hist
    }

    /// Bytes in a stored thumbnail: the grey pixels, then the bins as f32 LE.
    pub const BYTES: usize = THUMB_SIDE * THUMB_SIDE + HIST_BINS * 4;

    /// A compact binary form for memories (JSON would be about 3x larger).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::BYTES);
        out.extend_from_slice(&self.gray);
        out.extend(self.hist.iter().flat_map(|h| h.to_le_bytes()));
        out
    }

    /// Reads [`RerankThumb::to_bytes`], with the same checks as deserialisation.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidThumb> {
        if bytes.len() != Self::BYTES {
            return Err(InvalidThumb(format!(
                "{} bytes, expected {}",
                bytes.len(),
                Self::BYTES
            )));
        }
        let (gray, hist) = bytes.split_at(THUMB_SIDE * THUMB_SIDE);
        let hist = hist
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        RerankThumb::try_from(ThumbData {
            gray: gray.to_vec(),
            hist,
        })
    }
}

/// The serialised form of [`RerankThumb`], checked before use.
#[derive(Deserialize)]
struct ThumbData {
    gray: Vec<u8>,
    hist: Vec<f32>,
}

/// A stored thumbnail that does not have the shape this version computes.
#[derive(Debug, thiserror::Error)]
#[error("invalid re-ranking thumbnail: {0}")]
pub struct InvalidThumb(String);

impl TryFrom<ThumbData> for RerankThumb {
    type Error = InvalidThumb;

    fn try_from(data: ThumbData) -> Result<Self, Self::Error> {
        if data.gray.len() != THUMB_SIDE * THUMB_SIDE {
            return Err(InvalidThumb(format!(
                "{} grey pixels, expected {}",
                data.gray.len(),
                THUMB_SIDE * THUMB_SIDE
            )));
        }
        if data.hist.len() != HIST_BINS {
            return Err(InvalidThumb(format!(
                "{} histogram bins, expected {HIST_BINS}",
                data.hist.len()
            )));
        }
        if let Some(bad) = data.hist.iter().find(|h| !h.is_finite() || **h < 0.0) {
            return Err(InvalidThumb(format!("histogram bin value {bad}")));
        }
        Ok(Self {
            gray: data.gray,
            hist: data.hist,
        })
    }
}

/// The re-ranking summary of an image (see [`RerankThumb`]). An image without
/// pixels gives the summary of a black image.
pub fn thumb(image: &RgbImage) -> RerankThumb {
    let work = Work::from_image(image);
    work.thumb(work.histogram())
}

/// Structural similarity of the two grey thumbnails: Gaussian windows 11 x 11,
/// sigma 1.5, over the positions where the window fits (the original
/// definition, no padding), `K1 = 0.01`, `K2 = 0.03`, `L = 255`, averaged over
/// windows. 1 for identical thumbnails; in `[-1, 1]`. Flat images are handled
/// by the constants (two equal flat thumbnails score 1).
pub fn ssim(a: &RerankThumb, b: &RerankThumb) -> f32 {
    let kernel = gaussian_kernel();
    let x: Vec<f64> = a.gray.iter().map(|&v| f64::from(v)).collect();
    let y: Vec<f64> = b.gray.iter().map(|&v| f64::from(v)).collect();
    let xx: Vec<f64> = x.iter().map(|v| v * v).collect();
    let yy: Vec<f64> = y.iter().map(|v| v * v).collect();
    let xy: Vec<f64> = x.iter().zip(&y).map(|(p, q)| p * q).collect();
    let [mx, my, sxx, syy, sxy] = [&x, &y, &xx, &yy, &xy].map(|plane| filter_valid(plane, &kernel));
    let mut total = 0.0f64;
    for i in 0..mx.len() {
        let (ux, uy) = (mx[i], my[i]);
        let vx = sxx[i] - ux * ux;
        let vy = syy[i] - uy * uy;
        let cov = sxy[i] - ux * uy;
        total += ((2.0 * ux * uy + SSIM_C1) * (2.0 * cov + SSIM_C2))
            / ((ux * ux + uy * uy + SSIM_C1) * (vx + vy + SSIM_C2));
    }
    (total / mx.len() as f64) as f32
}

/// The normalised 1-D Gaussian taps of the SSIM window.
fn gaussian_kernel() -> [f64; 2 * SSIM_RADIUS + 1] {
    let mut kernel = [0.0f64; 2 * SSIM_RADIUS + 1];
    for (i, k) in kernel.iter_mut().enumerate() {
        let d = i as f64 - SSIM_RADIUS as f64;
        *k = (-(d * d) / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp();
    }
    let sum: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    kernel
}

/// Separable filtering of a `THUMB_SIDE`-square plane, keeping only the
/// positions where the whole window fits.
fn filter_valid(plane: &[f64], kernel: &[f64]) -> Vec<f64> {
    let side = THUMB_SIDE;
    let out_side = side - kernel.len() + 1;
    let mut rows = vec![0.0f64; side * out_side];
    for y in 0..side {
        let row = &plane[y * side..(y + 1) * side];
        for (ox, window) in row.windows(kernel.len()).enumerate() {
            rows[y * out_side + ox] = window.iter().zip(kernel).map(|(v, k)| v * k).sum();
        }
    }
    let mut out = vec![0.0f64; out_side * out_side];
    for oy in 0..out_side {
        for ox in 0..out_side {
            out[oy * out_side + ox] = kernel
                .iter()
                .enumerate()
                .map(|(k, w)| rows[(oy + k) * out_side + ox] * w)
                .sum();
        }
    }
    out
}

/// Bhattacharyya distance of the two colour histograms, as OpenCV's
/// `HISTCMP_BHATTACHARYYA` defines it: 0 for identical histograms, 1 for
/// histograms with no common bin.
pub fn hist_bhattacharyya(a: &RerankThumb, b: &RerankThumb) -> f32 {
    bhattacharyya_distance(&a.hist, &b.hist)
}

/// `sqrt(1 - sum(sqrt(h1 * h2)) / sqrt(sum(h1) * sum(h2)))`, i.e. OpenCV's
/// `sqrt(1 - sum sqrt(h1 h2) / sqrt(mean1 mean2 N^2))`, including its
/// treatment of an empty histogram (distance 1) and of rounding (never below 0).
/// Computed in `f64`: the square root would magnify rounding near 0.
fn bhattacharyya_distance(h1: &[f32], h2: &[f32]) -> f32 {
    let (mut s1, mut s2, mut coefficient) = (0.0f64, 0.0f64, 0.0f64);
    for (&p, &q) in h1.iter().zip(h2) {
        let (p, q) = (f64::from(p), f64::from(q));
        s1 += p;
        s2 += q;
        coefficient += (p * q).sqrt();
    }
    let product = s1 * s2;
    let scale = if product.abs() > f64::from(f32::EPSILON) {
        1.0 / product.sqrt()
    } else {
        1.0
    };
    (1.0 - coefficient * scale).max(0.0).sqrt() as f32
}

/// Re-ranking score, higher = more similar: `ssim - hist_bhattacharyya`, in
/// `[-2, 1]`, 1 for identical summaries.
///
/// The two measures complement each other: SSIM sees grey-level structure and
/// alignment but no colour, the histogram sees colour and brightness but no
/// arrangement. They are weighted equally, as the plainest choice: both move
/// over a similar range (SSIM roughly 0-1 between images of one scene, the
/// distance 0-1), and a large difference in either should sink a candidate.
pub fn rerank_score(a: &RerankThumb, b: &RerankThumb) -> f32 {
    ssim(a, b) - hist_bhattacharyya(a, b)
}

/// Scores every `(id, thumbnail)` candidate against `query` with
/// [`rerank_score`] and returns `(id, score)` best first; equal scores keep the
/// order of `candidates`, so the result is deterministic.
pub fn rerank(query: &RerankThumb, candidates: &[(usize, &RerankThumb)]) -> Vec<(usize, f32)> {
    let mut scored: Vec<(usize, f32)> = candidates
        .par_iter()
        .map(|&(id, candidate)| (id, rerank_score(query, candidate)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// The synthetic parts the quality tests draw.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Part {
        /// A light ring (a washer) on a grey background.
        Ring,
        /// A woven grid texture filling the frame.
        Grid,
        /// A dark chip body with metal pins above and below.
        Chip,
    }

    const PARTS: [Part; 3] = [Part::Ring, Part::Grid, Part::Chip];

    /// How a drawn image departs from the reference pose and lighting.
    #[derive(Clone, Copy, Debug)]
    struct Variant {
        dx: f32,
        dy: f32,
        gain: f32,
        offset: f32,
        seed: u64,
        defect: Option<Defect>,
    }

    #[derive(Clone, Copy, Debug)]
    enum Defect {
        /// A brownish blob.
        Stain,
        /// A thin bright line.
        Scratch,
    }

    const NORMAL: Variant = Variant {
        dx: 0.0,
        dy: 0.0,
        gain: 1.0,
        offset: 0.0,
        seed: 1,
        defect: None,
    };

    /// A small deterministic generator for sensor noise.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        }
    }

    fn draw(part: Part, v: Variant, side: u32) -> RgbImage {
        let s = side as f32 / 256.0;
        let mut noise = Lcg(v.seed);
        RgbImage::from_fn(side, side, |px, py| {
            // Coordinates in a 256-unit frame, moved by the shift.
            let x = (px as f32 + 0.5) / s - v.dx;
            let y = (py as f32 + 0.5) / s - v.dy;
            let mut c = match part {
                Part::Ring => {
                    let r = ((x - 128.0).powi(2) + (y - 128.0).powi(2)).sqrt();
                    if (50.0..75.0).contains(&r) {
                        [200.0, 198.0, 190.0]
                    } else if (45.0..50.0).contains(&r) {
                        [150.0, 150.0, 145.0]
                    } else {
                        [80.0, 82.0, 85.0]
                    }
                }
                Part::Grid => {
                    let (u, w) = (x.rem_euclid(24.0), y.rem_euclid(24.0));
                    let over = ((x / 24.0).floor() + (y / 24.0).floor()) as i32 % 2 == 0;
                    let vertical = u < 7.0;
                    let horizontal = w < 7.0;
                    if vertical && horizontal {
                        if over {
                            [170.0, 170.0, 170.0]
                        } else {
                            [140.0, 140.0, 140.0]
                        }
                    } else if vertical || horizontal {
                        [155.0, 155.0, 155.0]
                    } else {
                        [35.0, 35.0, 35.0]
                    }
                }
                Part::Chip => {
                    let body = (68.0..188.0).contains(&x) && (93.0..163.0).contains(&y);
                    let pin_column = (0..6).any(|k| {
                        let left = 75.0 + 20.0 * k as f32;
                        (left..left + 8.0).contains(&x)
                    });
                    let pin_row = (73.0..93.0).contains(&y) || (163.0..183.0).contains(&y);
                    if body {
                        [40.0, 40.0, 48.0]
                    } else if pin_column && pin_row {
                        [215.0, 210.0, 190.0]
                    } else {
                        [120.0, 160.0, 120.0]
                    }
                }
            };
            match v.defect {
                Some(Defect::Stain) => {
                    let (cx, cy) = match part {
                        Part::Ring => (128.0, 66.0),
                        Part::Grid => (100.0, 140.0),
                        Part::Chip => (110.0, 120.0),
                    };
                    if (x - cx).powi(2) + (y - cy).powi(2) < 8.0f32.powi(2) {
                        c = [110.0, 70.0, 30.0];
                    }
                }
                Some(Defect::Scratch) => {
                    // A segment from (90, 100) to (140, 130), 2 units wide.
                    let (ax, ay, bx, by) = (90.0f32, 100.0f32, 140.0f32, 130.0f32);
                    let t = (((x - ax) * (bx - ax) + (y - ay) * (by - ay))
                        / ((bx - ax).powi(2) + (by - ay).powi(2)))
                    .clamp(0.0, 1.0);
                    let d = ((x - ax - t * (bx - ax)).powi(2) + (y - ay - t * (by - ay)).powi(2))
                        .sqrt();
                    if d < 1.0 {
                        c = [250.0, 250.0, 250.0];
                    }
                }
                None => {}
            }
            let n = 6.0 * noise.next();
            Rgb(c.map(|value| (value * v.gain + v.offset + n).round().clamp(0.0, 255.0) as u8))
        })
    }

    fn embed(image: &RgbImage) -> Vec<f32> {
        DescriptorEmbedder.embed(image).expect("embedding")
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// Shifted by a few pixels, brighter, with other noise.
    fn nuisance(seed: u64) -> Variant {
        Variant {
            dx: 5.0,
            dy: -3.0,
            gain: 1.1,
            offset: 8.0,
            seed,
            ..NORMAL
        }
    }

    #[test]
    fn id_and_dim_are_stable() {
        assert_eq!(DescriptorEmbedder.id(), "descriptor-v1");
        assert_eq!(DescriptorEmbedder.dim(), 520);
        assert_eq!(DIM, 520);
    }

    #[test]
    fn identical_images_have_similarity_one() {
        for part in PARTS {
            let image = draw(part, NORMAL, 256);
            let a = embed(&image);
            let b = embed(&image.clone());
            assert_eq!(a, b, "{part:?}: not deterministic");
            assert!(
                (dot(&a, &b) - 1.0).abs() < 1e-5,
                "{part:?}: {}",
                dot(&a, &b)
            );
            let t = thumb(&image);
            assert_eq!(ssim(&t, &t), 1.0);
            assert!(hist_bhattacharyya(&t, &t) < 1e-5);
            assert!((rerank_score(&t, &t) - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn batch_matches_single_and_describe() {
        let images: Vec<RgbImage> = PARTS.iter().map(|&p| draw(p, NORMAL, 200)).collect();
        let batch = DescriptorEmbedder.embed_batch(&images).expect("batch");
        assert_eq!(batch.len(), images.len());
        for (image, vector) in images.iter().zip(&batch) {
            assert_eq!(&embed(image), vector);
            let (described, summary) = describe(image).expect("describe");
            assert_eq!(&described, vector);
            assert_eq!(summary, thumb(image));
        }
        assert!(
            DescriptorEmbedder
                .embed_batch(&[])
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn degenerate_images_give_finite_unit_vectors() {
        let cases = [
            RgbImage::new(1, 1),
            RgbImage::from_pixel(1, 1, Rgb([200, 10, 10])),
            RgbImage::from_fn(3, 1000, |x, y| Rgb([(x * 80) as u8, (y % 256) as u8, 7])),
            RgbImage::from_fn(1000, 3, |x, y| Rgb([(x % 256) as u8, (y * 80) as u8, 7])),
            RgbImage::from_pixel(64, 64, Rgb([0, 0, 0])),
            RgbImage::from_pixel(300, 200, Rgb([255, 255, 255])),
            RgbImage::from_pixel(129, 127, Rgb([90, 160, 30])),
            RgbImage::from_fn(127, 129, |x, y| Rgb([((x ^ y) & 0xff) as u8; 3])),
        ];
        for image in &cases {
            let v = embed(image);
            let size = image.dimensions();
            assert_eq!(v.len(), DescriptorEmbedder.dim(), "{size:?}");
            assert!(v.iter().all(|x| x.is_finite()), "{size:?}");
            assert!((dot(&v, &v) - 1.0).abs() < 1e-5, "{size:?}");
            let t = thumb(image);
            assert_eq!(t.gray().len(), THUMB_SIDE * THUMB_SIDE);
            assert!(
                (t.hist().iter().sum::<f32>() - 1.0).abs() < 1e-4,
                "{size:?}"
            );
            for other in &cases {
                let u = thumb(other);
                for score in [
                    ssim(&t, &u),
                    hist_bhattacharyya(&t, &u),
                    rerank_score(&t, &u),
                ] {
                    assert!(score.is_finite(), "{size:?} vs {:?}", other.dimensions());
                }
            }
        }
        // Flat images: equal ones are identical, black and white are far apart.
        let black = thumb(&RgbImage::new(10, 10));
        let white = thumb(&RgbImage::from_pixel(10, 10, Rgb([255; 3])));
        assert_eq!(ssim(&black, &black), 1.0);
        assert!(ssim(&black, &white) < 0.01);
        assert!((hist_bhattacharyya(&black, &white) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn empty_image_is_an_error_not_a_panic() {
        let empty = RgbImage::new(0, 7);
        assert!(DescriptorEmbedder.embed(&empty).is_err());
        assert!(describe(&empty).is_err());
        let batch = [RgbImage::new(4, 4), RgbImage::new(0, 0)];
        let error = DescriptorEmbedder
            .embed_batch(&batch)
            .expect_err("empty image");
        assert!(error.to_string().contains("image 1"), "{error}");
        // The summary of an empty image is that of a black one.
        assert_eq!(thumb(&empty), thumb(&RgbImage::new(1, 1)));
    }

    #[test]
    fn box_filter_averages_exactly() {
        // 256 x 256 in 2 x 2 blocks of one value each: each working pixel is the
        // mean of its block.
        let image = RgbImage::from_fn(256, 256, |x, y| {
            let v = if (x / 2 + y / 2) % 2 == 0 { 10 } else { 20 };
            let w = if x % 2 == 0 { 100 } else { 201 };
            Rgb([v, w, (x / 2) as u8])
        });
        let work = Work::from_image(&image);
        for oy in 0..WORK {
            for ox in 0..WORK {
                let i = oy * WORK + ox;
                let expected_r = if (ox + oy) % 2 == 0 { 10.0 } else { 20.0 };
                assert_eq!(work.r[i], expected_r);
                assert_eq!(work.g[i], 150.5);
                assert_eq!(work.b[i], ox as f32);
            }
        }
        // Axes shorter than the working size repeat pixels.
        assert_eq!(
            spans(3, 6),
            vec![(0, 1), (0, 1), (1, 2), (1, 2), (2, 3), (2, 3)]
        );
        assert_eq!(spans(300, 128).last(), Some(&(297, 300)));
        let covered: usize = spans(1000, 128).iter().map(|(a, b)| b - a).sum();
        assert_eq!(covered, 1000);
    }

    #[test]
    fn lighting_changes_move_only_the_histogram_much() {
        let cosine = |a: &[f32], b: &[f32]| dot(a, b) / (dot(a, a) * dot(b, b)).sqrt();
        for part in PARTS {
            let base = draw(part, NORMAL, 256);
            let mild = Variant {
                gain: 1.05,
                offset: 5.0,
                ..NORMAL
            };
            let similarity = dot(&embed(&base), &embed(&draw(part, mild, 256)));
            assert!(similarity > 0.95, "{part:?}: {similarity}");
            // Layout and structure ignore gain and offset by construction (up to
            // clipping and rounding); the histogram records them on purpose.
            let strong = Variant {
                gain: 1.15,
                offset: 10.0,
                ..NORMAL
            };
            let (a, b) = (
                Work::from_image(&base),
                Work::from_image(&draw(part, strong, 256)),
            );
            let layout = cosine(&a.layout(), &b.layout());
            let structure = cosine(&a.structure(), &b.structure());
            assert!(
                layout > 0.98 && structure > 0.97,
                "{part:?}: {layout} {structure}"
            );
        }
    }

    #[test]
    fn same_part_under_nuisances_is_nearer_than_other_parts() {
        let vectors: Vec<(Part, Vec<f32>, RerankThumb)> = PARTS
            .iter()
            .flat_map(|&part| {
                [NORMAL, nuisance(7)].map(|v| {
                    let image = draw(part, v, 320);
                    (part, embed(&image), thumb(&image))
                })
            })
            .collect();
        for (i, (part, v, t)) in vectors.iter().enumerate() {
            let mut same = f32::INFINITY;
            let mut same_score = f32::INFINITY;
            let mut other = f32::NEG_INFINITY;
            let mut other_score = f32::NEG_INFINITY;
            for (j, (p, u, s)) in vectors.iter().enumerate() {
                if i == j {
                    continue;
                }
                let (similarity, score) = (dot(v, u), rerank_score(t, s));
                if p == part {
                    same = same.min(similarity);
                    same_score = same_score.min(score);
                } else {
                    other = other.max(similarity);
                    other_score = other_score.max(score);
                }
            }
            assert!(same > other + 0.1, "{part:?}: same {same}, other {other}");
            assert!(
                same_score > other_score,
                "{part:?}: same {same_score}, other {other_score}"
            );
        }
    }

    #[test]
    fn defective_part_retrieves_its_normal_part_first() {
        let memory: Vec<(Part, Vec<f32>, RerankThumb)> = PARTS
            .iter()
            .map(|&part| {
                let image = draw(part, nuisance(3), 256);
                (part, embed(&image), thumb(&image))
            })
            .collect();
        for part in PARTS {
            for defect in [Defect::Stain, Defect::Scratch] {
                let query = draw(
                    part,
                    Variant {
                        defect: Some(defect),
                        seed: 11,
                        ..NORMAL
                    },
                    256,
                );
                let (vector, summary) = describe(&query).expect("describe");
                let best = memory
                    .iter()
                    .max_by(|a, b| dot(&vector, &a.1).total_cmp(&dot(&vector, &b.1)))
                    .map(|m| m.0);
                assert_eq!(best, Some(part), "{part:?} with {defect:?}: search");
                let candidates: Vec<(usize, &RerankThumb)> =
                    memory.iter().map(|m| &m.2).enumerate().collect();
                let ranked = rerank(&summary, &candidates);
                assert_eq!(PARTS[ranked[0].0], part, "{part:?} with {defect:?}: rerank");
            }
        }
    }

    #[test]
    fn the_nearer_pose_of_the_same_part_wins() {
        // Two normal references of one part, a small and a large shift away; a
        // defective query must prefer the nearer pose in both stages.
        for part in [Part::Ring, Part::Chip] {
            let near = draw(part, nuisance(5), 256);
            let far = draw(
                part,
                Variant {
                    dx: 40.0,
                    dy: 30.0,
                    ..nuisance(6)
                },
                256,
            );
            let query = draw(
                part,
                Variant {
                    defect: Some(Defect::Stain),
                    ..NORMAL
                },
                256,
            );
            let q = embed(&query);
            assert!(dot(&q, &embed(&near)) > dot(&q, &embed(&far)), "{part:?}");
            let (tn, tf) = (thumb(&near), thumb(&far));
            let ranked = rerank(&thumb(&query), &[(10, &tf), (20, &tn)]);
            assert_eq!(ranked[0].0, 20, "{part:?}: {ranked:?}");
        }
    }

    #[test]
    fn ssim_is_symmetric_bounded_and_falls_with_noise() {
        let a = thumb(&draw(Part::Chip, NORMAL, 256));
        let b = thumb(&draw(Part::Chip, nuisance(9), 256));
        assert_eq!(ssim(&a, &b), ssim(&b, &a));
        let mut noisy = a.clone();
        let mut noise = Lcg(42);
        for (i, g) in noisy.gray.iter_mut().enumerate() {
            if i % 3 == 0 {
                *g = (f32::from(*g) + 120.0 * noise.next()).clamp(0.0, 255.0) as u8;
            }
        }
        let (clean, degraded) = (ssim(&a, &b), ssim(&a, &noisy));
        assert!((-1.0..=1.0).contains(&clean) && (-1.0..=1.0).contains(&degraded));
        assert!(degraded < 0.9, "{degraded}");
    }

    #[test]
    fn bhattacharyya_follows_opencv() {
        // Unnormalised histograms, as OpenCV accepts them.
        let h1 = [1.0f32, 2.0, 3.0, 0.0];
        let h2 = [2.0f32, 2.0, 0.0, 4.0];
        let coefficient = (2.0f64).sqrt() + 2.0;
        let expected = (1.0 - coefficient / (6.0f64 * 8.0).sqrt()).sqrt() as f32;
        assert!((bhattacharyya_distance(&h1, &h2) - expected).abs() < 1e-6);
        assert!(bhattacharyya_distance(&h1, &h1).abs() < 1e-6);
        // Scaling a histogram changes nothing; disjoint ones are 1 apart.
        let scaled = h1.map(|h| h * 7.0);
        assert!(bhattacharyya_distance(&scaled, &h1).abs() < 1e-6);
        assert_eq!(bhattacharyya_distance(&[1.0, 0.0], &[0.0, 3.0]), 1.0);
        // Empty histograms: OpenCV's scale of 1 gives distance 1.
        assert_eq!(bhattacharyya_distance(&[0.0; 3], &[0.0; 3]), 1.0);
    }

    #[test]
    fn rerank_sorts_best_first_and_keeps_ties_in_order() {
        let query = thumb(&draw(Part::Ring, NORMAL, 128));
        let same = thumb(&draw(Part::Ring, nuisance(4), 128));
        let other = thumb(&draw(Part::Grid, NORMAL, 128));
        let ranked = rerank(&query, &[(3, &other), (7, &same), (5, &same), (1, &query)]);
        let ids: Vec<usize> = ranked.iter().map(|r| r.0).collect();
        assert_eq!(ids, [1, 7, 5, 3]);
        assert!(ranked.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(rerank(&query, &[]).is_empty());
    }

    #[test]
    fn thumb_round_trips_through_serde_and_rejects_bad_data() {
        let original = thumb(&draw(Part::Chip, NORMAL, 100));
        let json = serde_json::to_string(&original).expect("serialise");
        let back: RerankThumb = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, original);
        let short = r#"{"gray":[1,2,3],"hist":[]}"#;
        assert!(serde_json::from_str::<RerankThumb>(short).is_err());
        let mut value: serde_json::Value = serde_json::from_str(&json).expect("value");
        value["hist"][0] = serde_json::json!(-1.0);
        assert!(serde_json::from_value::<RerankThumb>(value).is_err());
        let bytes = original.to_bytes();
        assert_eq!(bytes.len(), RerankThumb::BYTES);
        assert_eq!(RerankThumb::from_bytes(&bytes).expect("bytes"), original);
        assert!(RerankThumb::from_bytes(&bytes[1..]).is_err());
        let mut bad = bytes.clone();
        bad[THUMB_SIDE * THUMB_SIDE + 3] = 0xff; // a negative (NaN) bin
        assert!(RerankThumb::from_bytes(&bad).is_err());
    }

    /// The time per image, printed with `--nocapture`; the bound is checked in
    /// release builds only (`cargo test --release`), where it means something.
    #[test]
    fn time_per_megapixel_image() {
        let image = draw(Part::Chip, nuisance(1), 1024);
        let rounds = if cfg!(debug_assertions) { 2u32 } else { 50 };
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(embed(std::hint::black_box(&image)));
        }
        let per_embed = start.elapsed() / rounds;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(describe(std::hint::black_box(&image)).expect("describe"));
        }
        let per_describe = start.elapsed() / rounds;
        let (a, b) = (thumb(&image), thumb(&draw(Part::Ring, NORMAL, 512)));
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(rerank_score(std::hint::black_box(&a), &b));
        }
        let per_score = start.elapsed() / rounds;
        println!(
            "1024x1024: embed {per_embed:?}, embed + thumb {per_describe:?}; \
             rerank_score {per_score:?}"
        );
        if !cfg!(debug_assertions) {
            assert!(per_embed < std::time::Duration::from_millis(10));
        }
    }
}
