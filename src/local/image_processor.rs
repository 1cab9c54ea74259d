//! Images to Qwen2-VL / Qwen3-VL vision inputs, as transformers' Qwen2-VL image
//! processor does with its Pillow backend: resize to multiples of
//! `patch_size * merge_size` within the pixel budget, rescale, normalise, and cut
//! into flattened patches with the single frame repeated over
//! `temporal_patch_size`.

use image::RgbImage;
use serde_json::Value;

use crate::vision::preprocess::resize_bicubic_pil;

/// Pillow's `Image.BICUBIC`, the only resampling filter reproduced here.
const PIL_BICUBIC: u64 = 3;

/// Aspect ratios beyond this are refused by transformers' `smart_resize`.
pub const MAX_ASPECT_RATIO: f64 = 200.0;

/// The image processor settings of a model folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    pub patch_size: u32,
    pub merge_size: u32,
    pub temporal_patch_size: u32,
    /// Fewest pixels after resizing (`size.shortest_edge`, or `min_pixels`).
    pub min_pixels: u64,
    /// Most pixels after resizing (`size.longest_edge`, or `max_pixels`).
    pub max_pixels: u64,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

impl Default for ImageProcessorConfig {
    /// transformers' Qwen2-VL image processor defaults.
    fn default() -> Self {
        ImageProcessorConfig {
            patch_size: 14,
            merge_size: 2,
            temporal_patch_size: 2,
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            image_std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
        }
    }
}

/// Why a setting in the image processor config cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {detail}")]
pub struct ImageConfigError {
    pub key: String,
    pub detail: String,
}

/// Why an image cannot be turned into patches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageSizeError {
    #[error("a {width}x{height} image has no pixels")]
    Empty { width: u32, height: u32 },
    #[error(
        "a {width}x{height} image is too elongated: the aspect ratio must be below {MAX_ASPECT_RATIO}"
    )]
    AspectRatio { width: u32, height: u32 },
    #[error("a {width}x{height} image resizes to {pixels} pixels, more than can be addressed")]
    TooLarge {
        width: u32,
        height: u32,
        pixels: u64,
    },
}

impl ImageProcessorConfig {
    /// Reads the settings from a `preprocessor_config.json` object (or the
    /// `image_processor` object of transformers 5's `processor_config.json`);
    /// absent keys take transformers' defaults, and `min_pixels` / `max_pixels`
    /// override `size` as they do there.
    pub fn from_hf_json(config: &Value) -> Result<Self, ImageConfigError> {
        let mut out = ImageProcessorConfig::default();
        let fail = |key: &str, detail: String| ImageConfigError {
            key: key.to_owned(),
            detail,
        };
        let positive = |key: &str| -> Result<Option<u64>, ImageConfigError> {
            match config.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if n > 0 => Ok(Some(n)),
                    _ => Err(fail(key, format!("expected a positive integer, found {v}"))),
                },
            }
        };
        let side = |key: &str, n: u64| {
            u32::try_from(n).map_err(|_| fail(key, format!("{n} is too large")))
        };
        if let Some(n) = positive("patch_size")? {
            out.patch_size = side("patch_size", n)?;
        }
        if let Some(n) = positive("merge_size")? {
            out.merge_size = side("merge_size", n)?;
        }
        if let Some(n) = positive("temporal_patch_size")? {
            out.temporal_patch_size = side("temporal_patch_size", n)?;
        }
        match config.get("size") {
            None | Some(Value::Null) => {}
            Some(size) => {
                let edge = |name: &str| {
                    size.get(name)
                        .and_then(Value::as_u64)
                        .filter(|&n| n > 0)
                        .ok_or_else(|| {
                            fail(
                                "size",
                                format!("expected `shortest_edge` and `longest_edge` pixel counts, found {size}"),
                            )
                        })
                };
                out.min_pixels = edge("shortest_edge")?;
                out.max_pixels = edge("longest_edge")?;
            }
        }
        if let Some(n) = positive("min_pixels")? {
            out.min_pixels = n;
        }
        if let Some(n) = positive("max_pixels")? {
            out.max_pixels = n;
        }
        if out.min_pixels > out.max_pixels {
            return Err(fail(
                "size",
                format!(
                    "the minimum of {} pixels exceeds the maximum of {}",
                    out.min_pixels, out.max_pixels
                ),
            ));
        }
        let flag = |key: &str, default: bool| match config.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(fail(key, format!("expected true or false, found {v}"))),
        };
        if !flag("do_resize", true)? {
            return Err(fail(
                "do_resize",
                "images must be resized to whole merged patches; false is not supported".into(),
            ));
        }
        if !flag("do_convert_rgb", true)? {
            return Err(fail(
                "do_convert_rgb",
                "only RGB input is supported; false is not".into(),
            ));
        }
        out.do_rescale = flag("do_rescale", out.do_rescale)?;
        out.do_normalize = flag("do_normalize", out.do_normalize)?;
        match config.get("resample") {
            None | Some(Value::Null) => {}
            Some(v) if v.as_u64() == Some(PIL_BICUBIC) => {}
            Some(v) => {
                return Err(fail(
                    "resample",
                    format!("only bicubic ({PIL_BICUBIC}) is reproduced, found {v}"),
                ));
            }
        }
        if let Some(v) = config.get("rescale_factor").filter(|v| !v.is_null()) {
            out.rescale_factor = v
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| fail("rescale_factor", format!("expected a number, found {v}")))?;
        }
        for (key, slot) in [
            ("image_mean", &mut out.image_mean),
            ("image_std", &mut out.image_std),
        ] {
            match config.get(key) {
                None | Some(Value::Null) => {}
                Some(v) => {
                    *slot = triple(v).ok_or_else(|| {
                        fail(key, format!("expected three numbers (or one), found {v}"))
                    })?
                }
            }
        }
        if out.image_std.contains(&0.0) {
            return Err(fail("image_std", "a standard deviation of zero".into()));
        }
        Ok(out)
    }

    /// The side every resized image is a multiple of.
    pub fn factor(&self) -> u32 {
        self.patch_size.saturating_mul(self.merge_size)
    }

    /// Values in one flattened patch: channels x temporal x patch x patch.
    pub fn patch_dim(&self) -> usize {
        let p = self.patch_size as usize;
        3 * self.temporal_patch_size as usize * p * p
    }
}

/// A number or a list of three numbers, as transformers accepts for mean / std.
fn triple(v: &Value) -> Option<[f32; 3]> {
    if let Some(x) = v.as_f64() {
        return Some([x as f32; 3]);
    }
    let items = v.as_array()?;
    match items.as_slice() {
        [a, b, c] => Some([a.as_f64()? as f32, b.as_f64()? as f32, c.as_f64()? as f32]),
        [a] => Some([a.as_f64()? as f32; 3]),
        _ => None,
    }
}

/// Python's `round()` on a non-negative float: half to even.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// transformers' `smart_resize`: the `(height, width)` nearest to the image's
/// that are multiples of `factor`, scaled (keeping the aspect ratio) into
/// `min_pixels..=max_pixels`.
///
/// The arithmetic follows Python's: true division in `f64`, `round` half to
/// even, `math.floor` / `math.ceil`, `math.sqrt`.
pub fn smart_resize(
    height: u32,
    width: u32,
    factor: u32,
    min_pixels: u64,
    max_pixels: u64,
) -> Result<(u32, u32), ImageSizeError> {
    if height == 0 || width == 0 || factor == 0 {
        return Err(ImageSizeError::Empty { width, height });
    }
    let (h, w, f) = (f64::from(height), f64::from(width), f64::from(factor));
    if h.max(w) / h.min(w) > MAX_ASPECT_RATIO {
        return Err(ImageSizeError::AspectRatio { width, height });
    }
    let mut h_bar = round_half_even(h / f) * f;
    let mut w_bar = round_half_even(w / f) * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    let too_large = || ImageSizeError::TooLarge {
        width,
        height,
        pixels: (h_bar * w_bar) as u64,
    };
    if !(h_bar >= 1.0
        && w_bar >= 1.0
        && h_bar <= f64::from(u32::MAX)
        && w_bar <= f64::from(u32::MAX))
    {
        return Err(too_large());
    }
    Ok((h_bar as u32, w_bar as u32))
}

/// One image's vision inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePatches {
    /// `grid_t * grid_h * grid_w` rows of [`ImageProcessorConfig::patch_dim`]
    /// values each, row-major.
    pub pixel_values: Vec<f32>,
    /// `[grid_t, grid_h, grid_w]` in patches.
    pub grid_thw: [u32; 3],
}

impl ImagePatches {
    /// How many `<|image_pad|>` tokens stand for this image in the prompt.
    pub fn token_count(&self, merge_size: u32) -> usize {
        let [t, h, w] = self.grid_thw.map(|v| v as usize);
        let m = merge_size as usize;
        t * h * w / (m * m).max(1)
    }
}

/// Resizes, rescales, normalises and patchifies one RGB image.
pub fn preprocess(
    img: &RgbImage,
    cfg: &ImageProcessorConfig,
) -> Result<ImagePatches, ImageSizeError> {
    let (h, w) = smart_resize(
        img.height(),
        img.width(),
        cfg.factor(),
        cfg.min_pixels,
        cfg.max_pixels,
    )?;
    let resized;
    let img = if (w, h) == img.dimensions() {
        img
    } else {
        resized = resize_bicubic_pil(img, w, h);
        &resized
    };
    let plane = (w as usize) * (h as usize);
    // Channel-first planes, as transformers holds the image before patchifying.
    let mut chw = vec![0f32; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            let mut v = f32::from(px.0[c]);
            if cfg.do_rescale {
                // numpy multiplies in float64 and stores float32.
                v = (f64::from(px.0[c]) * cfg.rescale_factor) as f32;
            }
            if cfg.do_normalize {
                v = (v - cfg.image_mean[c]) / cfg.image_std[c];
            }
            chw[c * plane + i] = v;
        }
    }
    let p = cfg.patch_size as usize;
    let m = cfg.merge_size as usize;
    let tps = cfg.temporal_patch_size as usize;
    let (grid_h, grid_w) = (h as usize / p, w as usize / p);
    let dim = cfg.patch_dim();
    let mut out = Vec::with_capacity(grid_h * grid_w * dim);
    // Rows in merge-window order (window row, window column, row and column
    // inside the window); each row is channel, time, patch row, patch column.
    for bh in 0..grid_h / m {
        for bw in 0..grid_w / m {
            for mh in 0..m {
                for mw in 0..m {
                    let top = (bh * m + mh) * p;
                    let left = (bw * m + mw) * p;
                    for c in 0..3 {
                        for _ in 0..tps {
                            for ph in 0..p {
                                let start = c * plane + (top + ph) * w as usize + left;
                                out.extend_from_slice(&chw[start..start + p]);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(ImagePatches {
        pixel_values: out,
        grid_thw: [1, grid_h as u32, grid_w as u32],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_round_is_half_to_even() {
        for (x, r) in [
            (0.5, 0.0),
            (1.5, 2.0),
            (2.5, 2.0),
            (3.5, 4.0),
            (2.4, 2.0),
            (2.6, 3.0),
        ] {
            assert_eq!(round_half_even(x), r, "{x}");
        }
    }

    #[test]
    fn smart_resize_refuses_what_python_refuses() {
        assert!(matches!(
            smart_resize(1, 201, 32, 4, 1 << 30),
            Err(ImageSizeError::AspectRatio { .. })
        ));
        assert!(matches!(
            smart_resize(0, 10, 32, 4, 1 << 30),
            Err(ImageSizeError::Empty { .. })
        ));
        assert_eq!(smart_resize(1, 200, 32, 4, 1 << 30).map(|_| ()), Ok(()));
    }

    #[test]
    fn reads_released_and_nested_configs() {
        let released = json!({
            "size": {"longest_edge": 16777216, "shortest_edge": 65536},
            "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
            "image_processor_type": "Qwen2VLImageProcessorFast"
        });
        let cfg = ImageProcessorConfig::from_hf_json(&released).unwrap();
        assert_eq!(
            (cfg.patch_size, cfg.factor(), cfg.patch_dim()),
            (16, 32, 1536)
        );
        assert_eq!((cfg.min_pixels, cfg.max_pixels), (65536, 16777216));
        assert_eq!(cfg.image_mean, [0.5; 3]);
        let qwen2 = json!({"min_pixels": 3136, "max_pixels": 12845056, "image_std": 0.5});
        let cfg = ImageProcessorConfig::from_hf_json(&qwen2).unwrap();
        assert_eq!(
            (cfg.min_pixels, cfg.max_pixels, cfg.image_std),
            (3136, 12845056, [0.5; 3])
        );
    }

    #[test]
    fn refuses_settings_it_cannot_honour() {
        for (bad, key) in [
            (json!({"resample": 2}), "resample"),
            (json!({"do_resize": false}), "do_resize"),
            (json!({"patch_size": 0}), "patch_size"),
            (json!({"size": {"height": 224}}), "size"),
            (json!({"image_std": [1, 0, 1]}), "image_std"),
            (json!({"min_pixels": 100, "max_pixels": 10}), "size"),
            (json!({"image_mean": [1, 2]}), "image_mean"),
        ] {
            let err = ImageProcessorConfig::from_hf_json(&bad).unwrap_err();
            assert_eq!(err.key, key, "{bad}: {err}");
        }
    }

    #[test]
    fn patches_follow_merge_windows_and_repeat_the_frame() {
        // A 4x4 image, patch 1, merge 2: rows are the four 2x2 windows in order,
        // each window's pixels row by row; every value appears twice (time).
        let cfg = ImageProcessorConfig {
            patch_size: 1,
            merge_size: 2,
            temporal_patch_size: 2,
            min_pixels: 16,
            max_pixels: 16,
            do_rescale: false,
            do_normalize: false,
            ..ImageProcessorConfig::default()
        };
        let img = RgbImage::from_fn(4, 4, |x, y| image::Rgb([(y * 4 + x) as u8, 100, 200]));
        let out = preprocess(&img, &cfg).unwrap();
        assert_eq!(out.grid_thw, [1, 4, 4]);
        assert_eq!(out.token_count(2), 4);
        let reds: Vec<f32> = out.pixel_values.chunks(6).map(|row| row[0]).collect();
        assert_eq!(
            reds,
            [
                0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.
            ]
        );
        assert_eq!(&out.pixel_values[..6], &[0., 0., 100., 100., 200., 200.]);
    }
}
