//! Images: decoding with limits (no decompression bombs) and embedders for the
//! reference memory.

pub mod clip;
pub mod cpu_matmul;
pub mod decode;
pub mod descriptor;
pub mod diff;
pub mod dinov2;
pub mod embed;
pub mod image_parallel;
pub mod packed_matmul;
pub mod preprocess;
pub mod simd;
pub mod spec;
pub mod tensor_check;

pub use decode::{DecodeError, DecodeLimits, decode_rgb8};
pub use embed::{EmbedError, ImageEmbedder, l2_normalize};
