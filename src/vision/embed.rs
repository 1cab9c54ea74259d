//! Image embedders: anything that turns decoded images into vectors for the
//! reference memory. Each embedder has a stable id so that caches and memories
//! built by one embedder are never mixed with another's.

use image::RgbImage;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("the embedder failed on {what}: {message}")]
    Compute { what: String, message: String },
    #[error("embedding was cancelled")]
    Cancelled,
}

/// A model or descriptor that maps RGB images to fixed-size vectors.
///
/// Vectors are L2-normalised, so inner product is cosine similarity.
pub trait ImageEmbedder: Send + Sync {
    /// Stable identifier, including a fingerprint of the weights where there are
    /// any (e.g. `clip:<config>:<weights sha256 prefix>`, `descriptor-v1`).
    fn id(&self) -> String;
    /// Length of every vector this embedder returns.
    fn dim(&self) -> usize;
    /// Embeds a batch; the result has one vector per input, in order.
    fn embed_batch(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// Embeds one image.
    fn embed(&self, image: &RgbImage) -> Result<Vec<f32>, EmbedError> {
        self.embed_batch(std::slice::from_ref(image))?
            .pop()
            .ok_or_else(|| EmbedError::Compute {
                what: "one image".into(),
                message: "no vector returned".into(),
            })
    }
}

/// Scales `v` to unit length in place (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_keeps_zero() {
        let mut v = [3.0f32, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut z = [0.0f32; 3];
        l2_normalize(&mut z);
        assert_eq!(z, [0.0; 3]);
    }
}
