//! DINOv2 patch tokens as the anomaly map's patch features, as AnomalyDINO
//! uses them: DINOv2's patch tokens are trained directly (iBOT's masked-patch
//! objective), so unlike CLIP's they stay local features up to the last layer.
//!
//! Default layers: three quarters of the depth and the last (9 and 12 of
//! dinov2-small's 12): the last is AnomalyDINO's choice; the earlier one adds
//! finer texture for small defects. Tokens are read before the final layer
//! norm (transformers' `hidden_states`), each L2-normalised before the layers
//! are joined, so each layer weighs the same.
//!
//! Input size: the map does not use the processor's centre crop, which would
//! cut off the borders (a 256 shortest-edge resize cropped to 224 drops an
//! eighth of the short side and more of the long one), so a defect there would
//! never be seen. The whole image is squeezed to the processor's crop size
//! (224 for the published checkpoints: 16 x 16 patches of 14 pixels, the
//! resolution the model is evaluated at), rounded down to whole patches, with
//! the processor's resampling and normalisation; the model interpolates its
//! position embeddings to that grid exactly as transformers does.

use std::fmt;

use image::RgbImage;

use super::features::PatchGrid;
use crate::vision::clip::default_device;
use crate::vision::dinov2::{Dinov2, Dinov2Error, Dinov2Source, Dinov2State};
use crate::vision::l2_normalize;

/// Default layers for a model of `depth` layers: three quarters of it and the
/// last (9 and 12 of 12), at least layer 1, without repeats.
pub fn default_layers(depth: usize) -> Vec<usize> {
    let depth = depth.max(1);
    let mut layers = vec![(3 * depth).div_ceil(4), depth];
    layers.dedup();
    layers
}

/// A loaded DINOv2 that turns an image into a grid of patch features.
pub struct Dinov2Patches {
    model: Dinov2,
    layers: Vec<usize>,
}

impl fmt::Debug for Dinov2Patches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dinov2Patches")
            .field("folder", &self.model.folder())
            .field("layers", &self.layers)
            .finish()
    }
}

impl Dinov2Patches {
    /// Loads the checkpoint (a folder or the HF cache, never the network);
    /// `layers` `None` takes [`default_layers`].
    pub fn load(source: &Dinov2Source, layers: Option<&[usize]>) -> Result<Self, Dinov2Error> {
        Self::new(Dinov2::load(source, &default_device())?, layers)
    }

    pub fn new(model: Dinov2, layers: Option<&[usize]>) -> Result<Self, Dinov2Error> {
        let depth = model.config().num_hidden_layers;
        let layers = match layers {
            Some(l) => l.to_vec(),
            None => default_layers(depth),
        };
        if layers.is_empty() {
            return Err(Dinov2Error::Input(
                "no DINOv2 layer chosen for patch features".into(),
            ));
        }
        if let Some(bad) = layers.iter().find(|&&l| l > depth) {
            return Err(Dinov2Error::Input(format!(
                "layer {bad} asked for, but {} has {depth} layers",
                model.folder().display()
            )));
        }
        Ok(Dinov2Patches { model, layers })
    }

    pub fn layers(&self) -> &[usize] {
        &self.layers
    }

    pub fn model(&self) -> &Dinov2 {
        &self.model
    }

    /// The side in pixels the image is squeezed to: the crop, in whole patches.
    pub fn input_side(&self) -> usize {
        let p = self.model.config().patch_size;
        (self.model.preprocess().crop as usize / p).max(1) * p
    }

    /// Patches per side.
    pub fn side(&self) -> usize {
        self.input_side() / self.model.config().patch_size
    }

    /// Values per patch: the hidden size times the number of layers.
    pub fn dim(&self) -> usize {
        self.model.config().hidden_size * self.layers.len()
    }

    /// The patch features of `image`.
    pub fn extract(&self, image: &RgbImage) -> Result<PatchGrid, Dinov2Error> {
        let side = self.input_side();
        let pixels = self.model.pixel_values_stretched(image, side as u32);
        let states = self
            .model
            .hidden_states(&pixels, side, side, &self.layers)?;
        let per_layer = states
            .into_iter()
            .next()
            .ok_or_else(|| Dinov2Error::Input("no patch features computed".into()))?;
        self.grid_from_states(&per_layer)
    }

    /// Normalises and joins one image's hidden states per patch.
    pub fn grid_from_states(&self, per_layer: &[Dinov2State]) -> Result<PatchGrid, Dinov2Error> {
        let side = self.side();
        let hidden = self.model.config().hidden_size;
        let dim = self.dim();
        let mut values = vec![0f32; side * side * dim];
        for (li, state) in per_layer.iter().enumerate() {
            let patches = state.patches();
            if state.hidden != hidden || patches.len() != side * side * hidden {
                return Err(Dinov2Error::Input(format!(
                    "layer {} gave {} patch values, not {side} x {side} x {hidden}",
                    state.layer,
                    patches.len()
                )));
            }
            for (p, token) in patches.chunks_exact(hidden).enumerate() {
                let out = &mut values[p * dim + li * hidden..][..hidden];
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
    use base64::Engine as _;
    use std::path::{Path, PathBuf};

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_dinov2")
    }

    #[test]
    fn default_layers_are_three_quarters_and_the_last() {
        assert_eq!(default_layers(12), vec![9, 12]);
        assert_eq!(default_layers(24), vec![18, 24]);
        assert_eq!(default_layers(3), vec![3]);
        assert_eq!(default_layers(1), vec![1]);
    }

    /// The map's features are transformers' hidden states of the squeezed
    /// image (the fixture's `stretched` cases), normalised per layer.
    #[test]
    fn grid_holds_the_normalised_tokens_transformers_computes() {
        let source = Dinov2Source::Folder(fixture());
        let patches = Dinov2Patches::load(&source, Some(&[1, 3])).unwrap();
        assert_eq!(
            (patches.input_side(), patches.side(), patches.dim()),
            (42, 3, 64)
        );
        let reference: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture().join("reference.json")).unwrap(),
        )
        .unwrap();
        let mut checked = 0;
        for case in reference["cases"].as_array().unwrap() {
            if case["kind"] != "stretched" {
                continue;
            }
            let file = case["image"].as_str().unwrap();
            let image = image::open(fixture().join("images").join(file))
                .unwrap()
                .to_rgb8();
            let grid = patches.extract(&image).unwrap();
            assert_eq!(grid.values.len(), 9 * 64);
            for (li, layer) in [1usize, 3].into_iter().enumerate() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(case["hidden_states"][layer].as_str().unwrap())
                    .unwrap();
                let tokens: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                // Skip the class token; patch p of the grid is token p + 1.
                for (p, token) in tokens[32..].chunks_exact(32).enumerate() {
                    let mut want = token.to_vec();
                    l2_normalize(&mut want);
                    let got = &grid.values[p * 64 + li * 32..][..32];
                    let d = want
                        .iter()
                        .zip(got)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(d < 1e-5, "{file} layer {layer} patch {p}: {d}");
                }
            }
            checked += 1;
        }
        assert_eq!(checked, 3);
        let flat = RgbImage::from_pixel(50, 30, image::Rgb([40, 200, 90]));
        let other = patches.extract(&flat).unwrap();
        assert_ne!(
            other.values,
            patches
                .extract(&RgbImage::from_pixel(50, 30, image::Rgb([200, 10, 10])))
                .unwrap()
                .values
        );
    }

    #[test]
    fn layers_past_the_depth_are_refused() {
        let source = Dinov2Source::Folder(fixture());
        let err = Dinov2Patches::load(&source, Some(&[1, 4]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("layer 4"), "{err}");
        assert!(Dinov2Patches::load(&source, Some(&[])).is_err());
    }
}
