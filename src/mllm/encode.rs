//! Turning image files into data URLs, once.
//!
//! A benchmark sends the same reference image with hundreds of questions; decoding,
//! resizing, re-encoding and base64 are done once per file version and settings and
//! kept in a bounded cache shared by all clones of a client. Concurrent requests for
//! the same image wait for one encoding instead of each doing it.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine as _;
use hyper::body::Bytes;
use image::{DynamicImage, ImageFormat, imageops::FilterType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore};

use super::MllmError;
use crate::vision::decode::{DecodeLimits, decode_rgb8_bytes};

/// How images are prepared for one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct EncodeSettings {
    pub max_side: Option<u32>,
    pub jpeg_quality: Option<u8>,
}

/// An image ready to send.
#[derive(Debug)]
pub(crate) struct EncodedImage {
    /// `data:<mime>;base64,...`, ASCII; shared by every request that sends it.
    pub data_url: Bytes,
    /// Hex SHA-256 of the bytes sent (not of the base64 text).
    pub sha256: String,
    pub bytes: usize,
    pub mime: &'static str,
    pub width: u32,
    pub height: u32,
}

impl EncodedImage {
    /// What the request summary shows instead of the data URL.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "sha256": self.sha256,
            "bytes": self.bytes,
            "mime": self.mime,
            "width": self.width,
            "height": self.height,
        })
    }
}

/// Prepares `bytes` (read from `path`) for sending.
///
/// The image is always decoded, within [`DecodeLimits::default`], so that a damaged
/// or hostile file fails here with a clear message instead of at the server. Without
/// downscaling and JPEG re-encoding, PNG and JPEG files are passed through as their
/// own bytes: the model then sees exactly the pixels the dataset stores, and a JPEG
/// is not inflated five-fold by a lossless PNG re-encode.
pub(crate) fn encode_image(
    bytes: &[u8],
    path: &Path,
    settings: EncodeSettings,
) -> Result<EncodedImage, MllmError> {
    let fail = |msg: String| MllmError::Image {
        path: path.to_path_buf(),
        msg,
    };
    let rgb =
        decode_rgb8_bytes(bytes, path, DecodeLimits::default()).map_err(|e| fail(e.to_string()))?;
    let (width, height) = rgb.dimensions();
    let target = settings
        .max_side
        .filter(|&m| m > 0 && width.max(height) > m)
        .map(|m| fit_within(width, height, m));
    let format = image::guess_format(bytes).ok();
    if target.is_none() && settings.jpeg_quality.is_none() {
        let mime = match format {
            Some(ImageFormat::Png) => Some("image/png"),
            Some(ImageFormat::Jpeg) => Some("image/jpeg"),
            _ => None,
        };
        if let Some(mime) = mime {
            return Ok(finish(bytes.to_vec(), mime, width, height));
        }
    }
    let mut image = DynamicImage::ImageRgb8(rgb);
    if let Some((w, h)) = target {
        image = image.resize_exact(w, h, FilterType::Lanczos3);
    }
    let (width, height) = (image.width(), image.height());
    let mut out = Cursor::new(Vec::new());
    let mime = match settings.jpeg_quality {
        Some(q) => {
            let encoder =
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q.clamp(1, 100));
            image
                .write_with_encoder(encoder)
                .map_err(|e| fail(format!("cannot encode {} as JPEG: {e}", path.display())))?;
            "image/jpeg"
        }
        None => {
            image
                .write_to(&mut out, ImageFormat::Png)
                .map_err(|e| fail(format!("cannot encode {} as PNG: {e}", path.display())))?;
            "image/png"
        }
    };
    Ok(finish(out.into_inner(), mime, width, height))
}

fn finish(bytes: Vec<u8>, mime: &'static str, width: u32, height: u32) -> EncodedImage {
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let mut data_url = format!("data:{mime};base64,");
    base64::engine::general_purpose::STANDARD.encode_string(&bytes, &mut data_url);
    EncodedImage {
        data_url: Bytes::from(data_url),
        sha256,
        bytes: bytes.len(),
        mime,
        width,
        height,
    }
}

/// The size that fits `w x h` within `max_side`, keeping the aspect ratio.
fn fit_within(w: u32, h: u32, max_side: u32) -> (u32, u32) {
    let scale = f64::from(max_side) / f64::from(w.max(h));
    let side = |v: u32| ((f64::from(v) * scale).round() as u32).clamp(1, max_side);
    (side(w), side(h))
}

/// Counters of the image cache, for the GUI and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageCacheStats {
    /// Images served from the cache.
    pub hits: u64,
    /// Images decoded and encoded (cache misses).
    pub encodes: u64,
    pub entries: usize,
    /// Bytes of data URLs held.
    pub bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    path: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
    settings: EncodeSettings,
}

struct Slot {
    cell: Arc<OnceCell<Arc<EncodedImage>>>,
    last_used: u64,
    size: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Slot>,
    tick: u64,
    bytes: usize,
}

/// A bounded cache of encoded images keyed by (path, modification time, size,
/// settings); when full, the least recently used entries go first.
pub(crate) struct ImageCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
    hits: AtomicU64,
    encodes: AtomicU64,
    /// Encoding is CPU work: at most one per core at a time, so a thousand queued
    /// requests do not start a thousand blocking threads.
    encoders: Semaphore,
}

impl ImageCache {
    pub fn new(max_bytes: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ImageCache {
            inner: Mutex::new(Inner::default()),
            max_bytes,
            hits: AtomicU64::new(0),
            encodes: AtomicU64::new(0),
            encoders: Semaphore::new(cores),
        }
    }

    pub fn stats(&self) -> ImageCacheStats {
        let (entries, bytes) = match self.inner.lock() {
            Ok(inner) => (inner.map.len(), inner.bytes),
            Err(poisoned) => {
                let inner = poisoned.into_inner();
                (inner.map.len(), inner.bytes)
            }
        };
        ImageCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            encodes: self.encodes.load(Ordering::Relaxed),
            entries,
            bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map is consistent after every statement that touches it: a panic
        // elsewhere while holding the lock leaves nothing half-done.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The encoded form of the image file at `path`, from the cache when the file
    /// has not changed since it was encoded with these settings.
    pub async fn get_file(
        &self,
        path: &Path,
        settings: EncodeSettings,
    ) -> Result<Arc<EncodedImage>, MllmError> {
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| MllmError::Image {
                path: path.to_path_buf(),
                msg: format!("cannot read image {}: {e}", path.display()),
            })?;
        let key = Key {
            path: path.to_path_buf(),
            modified: meta.modified().ok(),
            len: meta.len(),
            settings,
        };
        let cell = {
            let mut inner = self.lock();
            inner.tick += 1;
            let tick = inner.tick;
            let slot = inner.map.entry(key.clone()).or_insert_with(|| Slot {
                cell: Arc::new(OnceCell::new()),
                last_used: tick,
                size: 0,
            });
            slot.last_used = tick;
            slot.cell.clone()
        };
        let mut encoded_here = false;
        let result = cell
            .get_or_try_init(|| {
                encoded_here = true;
                self.encode_file(path.to_path_buf(), settings)
            })
            .await
            .cloned();
        match &result {
            Ok(image) if encoded_here => {
                self.encodes.fetch_add(1, Ordering::Relaxed);
                self.account(&key, &cell, image.data_url.len());
            }
            Ok(_) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                let mut inner = self.lock();
                if inner
                    .map
                    .get(&key)
                    .is_some_and(|s| Arc::ptr_eq(&s.cell, &cell) && s.cell.get().is_none())
                {
                    inner.map.remove(&key);
                }
            }
        }
        result
    }

    /// Encodes bytes already in memory (not cached: they have no stable identity).
    pub async fn encode_bytes(
        &self,
        name: &str,
        bytes: Arc<[u8]>,
        settings: EncodeSettings,
    ) -> Result<Arc<EncodedImage>, MllmError> {
        let path = PathBuf::from(name);
        let _permit = self.encoder_slot(&path).await?;
        self.encodes.fetch_add(1, Ordering::Relaxed);
        run_blocking(path, move |p| encode_image(&bytes, p, settings)).await
    }

    async fn encode_file(
        &self,
        path: PathBuf,
        settings: EncodeSettings,
    ) -> Result<Arc<EncodedImage>, MllmError> {
        let _permit = self.encoder_slot(&path).await?;
        run_blocking(path, move |p| {
            let bytes =
                crate::vision::decode::read_image_file(p, DecodeLimits::default().max_file_bytes)
                    .map_err(|e| MllmError::Image {
                    path: p.to_path_buf(),
                    msg: e.to_string(),
                })?;
            encode_image(&bytes, p, settings)
        })
        .await
    }

    /// Waits for one of the per-core encoding slots (encoding is CPU-bound).
    async fn encoder_slot(
        &self,
        path: &std::path::Path,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, MllmError> {
        self.encoders.acquire().await.map_err(|_| MllmError::Image {
            path: path.to_path_buf(),
            msg: format!(
                "cannot encode image {}: the encoder pool is closed",
                path.display()
            ),
        })
    }

    /// Records the size of a fresh entry and evicts the least recently used ones
    /// (never the fresh one) while over budget.
    fn account(&self, key: &Key, cell: &Arc<OnceCell<Arc<EncodedImage>>>, size: usize) {
        let mut inner = self.lock();
        let Some(slot) = inner.map.get_mut(key) else {
            return;
        };
        if !Arc::ptr_eq(&slot.cell, cell) {
            return;
        }
        slot.size = size;
        inner.bytes += size;
        while inner.bytes > self.max_bytes {
            let victim = inner
                .map
                .iter()
                .filter(|(k, s)| *k != key && s.cell.get().is_some())
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else { break };
            if let Some(s) = inner.map.remove(&victim) {
                inner.bytes = inner.bytes.saturating_sub(s.size);
            }
        }
    }
}

async fn run_blocking<F>(path: PathBuf, f: F) -> Result<Arc<EncodedImage>, MllmError>
where
    F: FnOnce(&Path) -> Result<EncodedImage, MllmError> + Send + 'static,
{
    let p = path.clone();
    match tokio::task::spawn_blocking(move || f(&p)).await {
        Ok(r) => r.map(Arc::new),
        Err(e) => Err(MllmError::Image {
            msg: format!("encoding image {} failed: {e}", path.display()),
            path,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img)
            .write_to(&mut out, ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    const LOSSLESS: EncodeSettings = EncodeSettings {
        max_side: None,
        jpeg_quality: None,
    };

    #[test]
    fn png_passes_through_unchanged() {
        let bytes = png(20, 10);
        let e = encode_image(&bytes, Path::new("a.png"), LOSSLESS).unwrap();
        assert_eq!(e.mime, "image/png");
        assert_eq!((e.width, e.height), (20, 10));
        assert_eq!(e.sha256, hex::encode(Sha256::digest(&bytes)));
        let b64 = std::str::from_utf8(&e.data_url)
            .unwrap()
            .strip_prefix("data:image/png;base64,")
            .unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
            bytes
        );
    }

    #[test]
    fn downscale_and_jpeg() {
        let bytes = png(200, 50);
        let e = encode_image(
            &bytes,
            Path::new("a.png"),
            EncodeSettings {
                max_side: Some(64),
                jpeg_quality: Some(80),
            },
        )
        .unwrap();
        assert_eq!(e.mime, "image/jpeg");
        assert_eq!((e.width, e.height), (64, 16));
        // Already small enough: only re-encoded.
        let e = encode_image(
            &bytes,
            Path::new("a.png"),
            EncodeSettings {
                max_side: Some(400),
                jpeg_quality: None,
            },
        )
        .unwrap();
        assert_eq!((e.width, e.height, e.mime), (200, 50, "image/png"));
        assert_eq!(fit_within(3000, 1, 100), (100, 1));
    }

    #[test]
    fn bmp_is_reencoded_as_png() {
        let img = image::RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3]));
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img)
            .write_to(&mut out, ImageFormat::Bmp)
            .unwrap();
        let e = encode_image(&out.into_inner(), Path::new("a.bmp"), LOSSLESS).unwrap();
        assert_eq!(e.mime, "image/png");
    }

    #[test]
    fn garbage_is_an_image_error_naming_the_file() {
        let err = encode_image(b"not an image", Path::new("dir/x.png"), LOSSLESS).unwrap_err();
        assert!(matches!(err, MllmError::Image { .. }));
        assert!(err.to_string().contains("dir/x.png"), "{err}");
    }

    #[tokio::test]
    async fn cache_encodes_once_and_evicts_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.png");
        let b = dir.path().join("b.png");
        std::fs::write(&a, png(30, 30)).unwrap();
        std::fs::write(&b, png(31, 30)).unwrap();
        let one = encode_image(&png(30, 30), &a, LOSSLESS)
            .unwrap()
            .data_url
            .len();
        // Room for one entry only.
        let cache = ImageCache::new(one + one / 2);
        for _ in 0..3 {
            cache.get_file(&a, LOSSLESS).await.unwrap();
        }
        assert_eq!(cache.stats().encodes, 1);
        assert_eq!(cache.stats().hits, 2);
        cache.get_file(&b, LOSSLESS).await.unwrap();
        let s = cache.stats();
        assert_eq!((s.encodes, s.entries), (2, 1), "{s:?}");
        cache.get_file(&a, LOSSLESS).await.unwrap();
        assert_eq!(cache.stats().encodes, 3);
        // Other settings are another entry.
        let small = EncodeSettings {
            max_side: Some(8),
            jpeg_quality: None,
        };
        let e = cache.get_file(&a, small).await.unwrap();
        assert_eq!((e.width, e.height), (8, 8));
        // A missing file fails and leaves nothing behind.
        let err = cache
            .get_file(&dir.path().join("missing.png"), LOSSLESS)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("missing.png"), "{err}");
        assert!(cache.stats().entries <= 2);
    }
}
