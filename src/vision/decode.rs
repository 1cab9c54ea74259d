//! Decoding user images safely: the header is read first, so a 50,000 x 50,000 PNG
//! is refused before any pixel memory is allocated, and every format we accept
//! ends up as 8-bit RGB.

use std::path::{Path, PathBuf};

use image::{ImageReader, RgbImage};

/// Ceilings for one decode. The defaults fit MMAD's largest images (GoodsAD,
/// VisA: about 2-3k pixels a side) with a wide margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    pub max_file_bytes: u64,
    pub max_side: u32,
    pub max_pixels: u64,
    /// Bytes the decoder may allocate (caught inside the image crate).
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_file_bytes: 256 << 20,
            max_side: 16_384,
            max_pixels: 64_000_000,
            max_alloc: 1 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot read image {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an image in a supported format (PNG, JPEG, BMP, TIFF, WebP)")]
    UnknownFormat { path: PathBuf },
    #[error(
        "{path} is {width} x {height} pixels, above the limit of {max_side} per side or {max_pixels} pixels in all"
    )]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        max_side: u32,
        max_pixels: u64,
    },
    #[error("{path} is {bytes} bytes, above the limit of {limit} bytes")]
    FileTooLarge {
        path: PathBuf,
        bytes: u64,
        limit: u64,
    },
    #[error("{path} is damaged or truncated: {message}")]
    Corrupt { path: PathBuf, message: String },
}

/// Decodes `path` to RGB8 within `limits`. Grayscale, alpha and 16-bit inputs are
/// converted (alpha is dropped, 16-bit is scaled to 8-bit).
pub fn decode_rgb8(path: &Path, limits: DecodeLimits) -> Result<RgbImage, DecodeError> {
    let bytes = read_image_file(path, limits.max_file_bytes)?;
    decode_rgb8_bytes(&bytes, path, limits)
}

/// Reads an image file's bytes; every image the crate reads from disk comes through
/// here. The type and size are checked from metadata before a byte is read (a device
/// such as `/dev/zero` or a FIFO is refused, never read or waited on), and the read
/// stops one byte past `max_bytes`, so a file that grows meanwhile is refused too.
pub fn read_image_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, DecodeError> {
    use std::io::Read;
    let io = |source| DecodeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let too_large = |bytes| DecodeError::FileTooLarge {
        path: path.to_path_buf(),
        bytes,
        limit: max_bytes,
    };
    let file = crate::util::fsx::open_regular_for_read(path)
        .map_err(|e| io(crate::util::fsx::without_path(path, e)))?;
    let len = file.metadata().map_err(io)?.len();
    if len > max_bytes {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// As [`decode_rgb8`], from bytes already in memory; `path` only names them in errors.
pub fn decode_rgb8_bytes(
    bytes: &[u8],
    path: &Path,
    limits: DecodeLimits,
) -> Result<RgbImage, DecodeError> {
    let p = || path.to_path_buf();
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(DecodeError::FileTooLarge {
            path: p(),
            bytes: bytes.len() as u64,
            limit: limits.max_file_bytes,
        });
    }
    let reader = || {
        ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|source| DecodeError::Io { path: p(), source })
    };
    let probe = reader()?;
    if probe.format().is_none() {
        return Err(DecodeError::UnknownFormat { path: p() });
    }
    let (width, height) = probe.into_dimensions().map_err(|e| classify(e, path))?;
    if width > limits.max_side
        || height > limits.max_side
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(DecodeError::TooLarge {
            path: p(),
            width,
            height,
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
        });
    }
    let mut reader = reader()?;
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(limits.max_side);
    image_limits.max_image_height = Some(limits.max_side);
    image_limits.max_alloc = Some(limits.max_alloc);
    reader.limits(image_limits);
    let image = reader.decode().map_err(|e| classify(e, path))?;
    Ok(image.into_rgb8())
}

fn classify(e: image::ImageError, path: &Path) -> DecodeError {
    match e {
        image::ImageError::Unsupported(_) => DecodeError::UnknownFormat {
            path: path.to_path_buf(),
        },
        image::ImageError::IoError(source) => DecodeError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => DecodeError::Corrupt {
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgb};

    fn encode(img: image::DynamicImage, fmt: image::ImageFormat) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, fmt).unwrap();
        out.into_inner()
    }

    #[test]
    fn formats_become_rgb8() {
        let rgb = ImageBuffer::from_fn(7, 5, |x, y| Rgb([x as u8 * 30, y as u8 * 40, 200]));
        for fmt in [
            image::ImageFormat::Png,
            image::ImageFormat::Bmp,
            image::ImageFormat::Tiff,
            image::ImageFormat::WebP,
            image::ImageFormat::Jpeg,
        ] {
            let bytes = encode(image::DynamicImage::ImageRgb8(rgb.clone()), fmt);
            let out = decode_rgb8_bytes(&bytes, Path::new("x.JPG"), DecodeLimits::default())
                .unwrap_or_else(|e| panic!("{fmt:?}: {e}"));
            assert_eq!(out.dimensions(), (7, 5), "{fmt:?}");
            if fmt != image::ImageFormat::Jpeg {
                assert_eq!(out, rgb, "{fmt:?} is lossless");
            }
        }
        let gray16: ImageBuffer<Luma<u16>, Vec<u16>> =
            ImageBuffer::from_fn(3, 2, |x, _| Luma([x as u16 * 30000]));
        let bytes = encode(
            image::DynamicImage::ImageLuma16(gray16),
            image::ImageFormat::Png,
        );
        let out = decode_rgb8_bytes(&bytes, Path::new("g.png"), DecodeLimits::default()).unwrap();
        assert_eq!(out.get_pixel(2, 0), &Rgb([233, 233, 233])); // 60000/65535*255 = 233.5, truncated
        assert_eq!(out.get_pixel(0, 1), &Rgb([0, 0, 0]));
    }

    #[test]
    fn huge_header_fails_fast_without_allocating() {
        // A valid PNG signature and IHDR claiming 50,000 x 50,000, with no pixel data.
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&50_000u32.to_be_bytes());
        ihdr.extend_from_slice(&50_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        // An empty IDAT: the header reader stops at the first data chunk.
        png.extend_from_slice(&0u32.to_be_bytes());
        png.extend_from_slice(b"IDAT");
        png.extend_from_slice(&crc32(b"IDAT").to_be_bytes());
        let start = std::time::Instant::now();
        let err =
            decode_rgb8_bytes(&png, Path::new("bomb.png"), DecodeLimits::default()).unwrap_err();
        assert!(
            matches!(err, DecodeError::TooLarge { width: 50_000, .. }),
            "{err}"
        );
        assert!(start.elapsed().as_millis() < 500);
        assert!(err.to_string().contains("50000 x 50000"));
    }

    #[test]
    fn garbage_and_truncation_are_clear_errors() {
        let err = decode_rgb8_bytes(
            b"hello, not an image",
            Path::new("a.png"),
            DecodeLimits::default(),
        )
        .unwrap_err();
        assert!(matches!(err, DecodeError::UnknownFormat { .. }), "{err}");
        let rgb = ImageBuffer::from_fn(64, 64, |x, y| Rgb([x as u8, y as u8, 7]));
        let bytes = encode(image::DynamicImage::ImageRgb8(rgb), image::ImageFormat::Png);
        let err = decode_rgb8_bytes(
            &bytes[..bytes.len() / 2],
            Path::new("t.png"),
            DecodeLimits::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, DecodeError::Corrupt { .. } | DecodeError::Io { .. }),
            "{err}"
        );
        let err = decode_rgb8(
            Path::new("/definitely/missing.png"),
            DecodeLimits::default(),
        )
        .unwrap_err();
        assert!(matches!(err, DecodeError::Io { .. }));
        let small = DecodeLimits {
            max_file_bytes: 10,
            ..DecodeLimits::default()
        };
        assert!(matches!(
            decode_rgb8_bytes(&bytes, Path::new("t.png"), small),
            Err(DecodeError::FileTooLarge { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_fifos_are_refused_without_reading_or_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("camera.png");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Off the test thread, so a regression fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let zero = decode_rgb8(Path::new("/dev/zero"), DecodeLimits::default());
            let pipe = decode_rgb8(&fifo, DecodeLimits::default());
            let _ = tx.send((zero.map(|_| ()), pipe.map(|_| ())));
        });
        let (zero, pipe) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading /dev/zero or a FIFO must fail at once, not read or wait");
        for (what, result) in [("/dev/zero", zero), ("camera.png", pipe)] {
            let err = result.unwrap_err();
            assert!(matches!(err, DecodeError::Io { .. }), "{what}: {err}");
            let text = err.to_string();
            assert!(
                text.contains(what) && text.contains("not a regular file"),
                "{text}"
            );
        }
    }

    #[test]
    fn files_over_the_limit_are_refused_from_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.png");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let err = read_image_file(&path, 4095).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::FileTooLarge {
                    bytes: 4096,
                    limit: 4095,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(read_image_file(&path, 4096).unwrap().len(), 4096);
        let small = DecodeLimits {
            max_file_bytes: 100,
            ..DecodeLimits::default()
        };
        assert!(matches!(
            decode_rgb8(&path, small),
            Err(DecodeError::FileTooLarge { .. })
        ));
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
