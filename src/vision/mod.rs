//! Images: decoding with limits (no decompression bombs) and embedders for the
//! reference memory.

pub mod decode;
pub mod descriptor;
pub mod embed;

pub use decode::{DecodeError, DecodeLimits, decode_rgb8};
pub use embed::{EmbedError, ImageEmbedder, l2_normalize};
