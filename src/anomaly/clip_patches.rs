//! CLIP ViT patch tokens as the anomaly map's patch features, as the few-shot
//! CLIP detectors (WinCLIP, APRIL-GAN, AnomalyCLIP) use them: tokens of
//! intermediate encoder blocks, where the features still say *where* and *what
//! texture* rather than only what the whole image shows.
//!
//! The model is `vision::clip`'s (the tower that embeds for retrieval), run only
//! as deep as the deepest block asked for. Default blocks: half and three
//! quarters of the depth, i.e. 6 and 9 of ViT-B/16's 12: the middle block keeps
//! fine local structure (scratches, small spots), the later one adds context
//! (a missing or misplaced part); the last block is left out because its patch
//! tokens mostly repeat the global content the class token pools.
//!
//! The whole image is squeezed to the model's input size (no centre crop), so the
//! map covers the borders too, as the descriptor backbone's does. Each block's
//! token is L2-normalised before the blocks are concatenated, so each block
//! weighs the same whatever the scale of its activations.

use std::fmt;

use image::RgbImage;

use super::features::PatchGrid;
use crate::vision::clip::{ClipEmbedder, ClipError, ClipSource, default_device};
use crate::vision::l2_normalize;
use crate::vision::preprocess::clip_pixel_values_stretched;

/// Default blocks for a tower of `depth` blocks: half and three quarters of it
/// (6 and 9 of 12), at least block 1, without repeats.
pub fn default_layers(depth: usize) -> Vec<usize> {
    let mut layers = vec![(depth / 2).max(1), ((3 * depth).div_ceil(4)).max(1)];
    layers.dedup();
    layers.retain(|&l| l <= depth.max(1));
    layers
}

/// Parses `6,9`: encoder blocks counted from 1 (0 is the embeddings), as
/// transformers' `hidden_states` index them.
pub fn parse_layers(text: &str) -> Result<Vec<usize>, String> {
    let layers: Vec<usize> = text
        .split(',')
        .map(|part| {
            part.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{}` is not a layer number", part.trim()))
        })
        .collect::<Result<_, _>>()?;
    if layers.is_empty() {
        return Err("name at least one layer, e.g. `6,9`".into());
    }
    Ok(layers)
}

/// A loaded CLIP tower that turns an image into a grid of patch features.
pub struct ClipPatches {
    embedder: ClipEmbedder,
    layers: Vec<usize>,
}

impl fmt::Debug for ClipPatches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClipPatches")
            .field("folder", &self.embedder.folder())
            .field("layers", &self.layers)
            .finish()
    }
}

impl ClipPatches {
    /// Loads the checkpoint (a folder or the HF cache, never the network);
    /// `layers` `None` takes [`default_layers`].
    pub fn load(source: &ClipSource, layers: Option<&[usize]>) -> Result<Self, ClipError> {
        let embedder = ClipEmbedder::load(source, &default_device())?;
        Self::new(embedder, layers)
    }

    /// Uses an already loaded tower.
    pub fn new(embedder: ClipEmbedder, layers: Option<&[usize]>) -> Result<Self, ClipError> {
        let depth = embedder.config().vision.num_hidden_layers;
        let layers = match layers {
            Some(l) => l.to_vec(),
            None => default_layers(depth),
        };
        if layers.is_empty() {
            return Err(ClipError::Input(
                "no CLIP layer chosen for patch features".into(),
            ));
        }
        if let Some(bad) = layers.iter().find(|&&l| l > depth) {
            return Err(ClipError::Input(format!(
                "layer {bad} asked for, but {} has {depth} layers",
                embedder.folder().display()
            )));
        }
        Ok(ClipPatches { embedder, layers })
    }

    pub fn layers(&self) -> &[usize] {
        &self.layers
    }

    /// Patches per side.
    pub fn side(&self) -> usize {
        let v = &self.embedder.config().vision;
        v.image_size / v.patch_size
    }

    /// Values per patch: the hidden size times the number of layers.
    pub fn dim(&self) -> usize {
        self.embedder.config().vision.embed_dim * self.layers.len()
    }

    pub fn embedder(&self) -> &ClipEmbedder {
        &self.embedder
    }

    /// The patch features of `image`.
    pub fn extract(&self, image: &RgbImage) -> Result<PatchGrid, ClipError> {
        let mut grids = self.extract_batch(std::slice::from_ref(image))?;
        grids
            .pop()
            .ok_or_else(|| ClipError::Input("no patch features computed".into()))
    }

    /// The patch features of each image, batched through the tower.
    pub fn extract_batch(&self, images: &[RgbImage]) -> Result<Vec<PatchGrid>, ClipError> {
        let side = self.embedder.config().vision.image_size as u32;
        let pixels: Vec<f32> = images
            .iter()
            .flat_map(|img| clip_pixel_values_stretched(img, side, self.embedder.preprocess()))
            .collect();
        let states = self.embedder.hidden_states(&pixels, &self.layers)?;
        states
            .iter()
            .map(|per_layer| self.grid_from_states(per_layer))
            .collect()
    }

    /// Normalises and concatenates one image's hidden states per patch.
    pub fn grid_from_states(
        &self,
        per_layer: &[crate::vision::clip::HiddenState],
    ) -> Result<PatchGrid, ClipError> {
        let side = self.side();
        let hidden = self.embedder.config().vision.embed_dim;
        let dim = self.dim();
        let mut values = vec![0f32; side * side * dim];
        for (li, state) in per_layer.iter().enumerate() {
            let patches = state.patches();
            if state.hidden != hidden || patches.len() != side * side * hidden {
                return Err(ClipError::Input(format!(
                    "layer {} gave {} patch values, not {side} x {side} x {hidden}",
                    state.layer,
                    patches.len()
                )));
            }
            for (p, token) in patches.chunks_exact(hidden).enumerate() {
                let at = p * dim + li * hidden;
                let out = &mut values[at..at + hidden];
                out.copy_from_slice(token);
                l2_normalize(out);
            }
        }
        Ok(PatchGrid { side, dim, values })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tiny() -> ClipSource {
        ClipSource::Folder(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_clip/full_p8_s40_f16"),
        )
    }

    #[test]
    fn default_layers_are_half_and_three_quarters_of_the_depth() {
        assert_eq!(default_layers(12), vec![6, 9]);
        assert_eq!(default_layers(24), vec![12, 18]);
        assert_eq!(default_layers(2), vec![1, 2]);
        assert_eq!(default_layers(1), vec![1]);
        assert_eq!(parse_layers(" 6, 9").unwrap(), vec![6, 9]);
        assert!(parse_layers("6,x").is_err());
        assert!(parse_layers("").is_err());
    }

    #[test]
    fn grid_holds_normalised_tokens_of_each_layer() {
        let patches = ClipPatches::load(&tiny(), None).unwrap();
        let side = patches.side();
        let image = RgbImage::from_fn(70, 45, |x, y| {
            image::Rgb([(x * 3) as u8, (y * 5) as u8, 90])
        });
        let grid = patches.extract(&image).unwrap();
        assert_eq!((grid.side, grid.dim), (side, patches.dim()));
        assert_eq!(grid.values.len(), side * side * patches.dim());
        let hidden = patches.dim() / patches.layers().len();
        for token in grid.values.chunks_exact(hidden) {
            let norm: f32 = token.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        }
        // The grid's tokens are the model's own hidden states, reordered.
        let pixels = clip_pixel_values_stretched(
            &image,
            patches.embedder().config().vision.image_size as u32,
            patches.embedder().preprocess(),
        );
        let states = patches
            .embedder()
            .hidden_states(&pixels, patches.layers())
            .unwrap();
        let mut first = states[0][0].patches()[..hidden].to_vec();
        l2_normalize(&mut first);
        let got = &grid.patch(0, 0)[..hidden];
        assert!(first.iter().zip(got).all(|(a, b)| (a - b).abs() < 1e-6));
        // A different image gives different features; the same image the same.
        let other = RgbImage::from_pixel(70, 45, image::Rgb([200, 10, 10]));
        assert_ne!(patches.extract(&other).unwrap(), grid);
        assert_eq!(
            patches.extract_batch(&[image.clone(), other]).unwrap()[0]
                .values
                .len(),
            grid.values.len()
        );
    }

    #[test]
    fn layers_past_the_depth_are_refused() {
        let err = ClipPatches::load(&tiny(), Some(&[1, 7]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("layer 7"), "{err}");
        assert!(ClipPatches::load(&tiny(), Some(&[])).is_err());
    }
}
