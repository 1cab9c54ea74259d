//! The embedder the rest of the crate calls: loads a checkpoint through
//! `source`, runs `model`, and returns L2-normalised vectors.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::model::{ClipModelConfig, VisionModel};
use super::source::{
    CONFIG_FILE, ClipSource, WEIGHTS_FILE, read_json, read_preprocess, sha256_file, verify_tensors,
};
use super::{CandleContext, ClipError};
use crate::vision::embed::{EmbedError, ImageEmbedder, l2_normalize};
use crate::vision::image_parallel;
use crate::vision::packed_matmul::MatmulChoice;
use crate::vision::preprocess::{ClipPreprocess, clip_pixel_values};

/// Loading and running options. Defaults: f32 and batches of 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClipOptions {
    /// Weight and activation type. F32 matches transformers to ~1e-6. F16 halves
    /// the weights' memory but moves normalised embeddings by ~1e-3 and is about
    /// 2.5x slower on CPU (no native f16 matmul there); BF16 is CUDA only
    /// (candle's CPU matmul has no bf16). Vectors from other dtypes get their
    /// own [`ImageEmbedder::id`], so caches never mix them.
    pub dtype: DType,
    /// Images handed to the tower at once (at least 1); larger batches use
    /// more memory.
    pub max_batch: usize,
    /// On the CPU, run the images of a batch side by side, one per core
    /// ([`crate::vision::image_parallel`]); off, each pass takes the whole
    /// batch with every core on each matmul. Results are the same either way.
    pub parallel_images: bool,
    /// The dense layers' CPU matmul. `Auto` takes
    /// [`crate::vision::packed_matmul::MATMUL_ENV`] when set, else the kernel measured
    /// faster on this CPU; the others say which, whatever the environment.
    pub matmul: MatmulChoice,
}

impl Default for ClipOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            max_batch: 8,
            parallel_images: true,
            matmul: MatmulChoice::Auto,
        }
    }
}

/// The device CLIP should run on: the first CUDA GPU when built with the `cuda`
/// feature and one is present, else the CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        Device::cuda_if_available(0).unwrap_or(Device::Cpu)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Device::Cpu
    }
}

/// CLIP image embedder: OpenAI preprocessing, vision tower, visual projection,
/// L2 normalisation.
#[derive(Debug)]
pub struct ClipEmbedder {
    model: VisionModel,
    config: ClipModelConfig,
    preprocess: ClipPreprocess,
    device: Device,
    options: ClipOptions,
    folder: PathBuf,
    id: String,
}

impl ClipEmbedder {
    /// Loads with the default [`ClipOptions`].
    pub fn load(source: &ClipSource, device: &Device) -> Result<Self, ClipError> {
        Self::load_with(source, device, ClipOptions::default())
    }

    /// Loads `config.json`, `model.safetensors` (memory-mapped; tensors are
    /// checked against the config before anything is built) and, when present,
    /// `preprocessor_config.json`.
    pub fn load_with(
        source: &ClipSource,
        device: &Device,
        options: ClipOptions,
    ) -> Result<Self, ClipError> {
        if device.is_cpu() && options.dtype == DType::BF16 {
            return Err(ClipError::Input(
                "bf16 needs a CUDA device: candle's CPU matmul supports f32 and f16 only".into(),
            ));
        }
        if !matches!(options.dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(ClipError::Input(format!(
                "CLIP runs in f32, f16 or bf16, not {}",
                options.dtype.as_str()
            )));
        }
        let matmul = match options.matmul {
            MatmulChoice::Auto => MatmulChoice::from_env().map_err(ClipError::Input)?,
            chosen => chosen,
        };
        let folder = source.resolve()?;
        let config_path = folder.join(CONFIG_FILE);
        let config = ClipModelConfig::from_hf_json(&read_json(&config_path)?, &config_path)?;
        let preprocess = read_preprocess(&folder, &config)?;

        let weights = folder.join(WEIGHTS_FILE);
        let digest = sha256_file(&weights)?;
        // SAFETY: the map is only read during this function (every tensor is
        // copied out by `VisionModel::new`); as with any mmap, the file must not
        // be truncated meanwhile, which a model folder in use never is.
        let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::new(&weights) }
            .context(|| format!("cannot open {} as safetensors", weights.display()))?;
        let prefix = verify_tensors(&tensors, &config, &weights)?;
        let mut vb = VarBuilder::from_backend(Box::new(tensors), DType::F32, device.clone());
        if let Some(p) = prefix.strip_suffix('.') {
            vb = vb.pp(p);
        }
        let model = VisionModel::new(vb, &config, options.dtype, matmul)
            .context(|| format!("cannot build the CLIP model from {}", weights.display()))?;

        let v = &config.vision;
        let mut id = format!(
            "clip:{}/{}/{}x{}:{}",
            v.image_size,
            v.patch_size,
            v.embed_dim,
            v.num_hidden_layers,
            &digest[..12]
        );
        // Reduced precision gives slightly different vectors: keep them apart.
        if options.dtype != DType::F32 {
            id.push_str(&format!(":{}", options.dtype.as_str()));
        }
        Ok(Self {
            model,
            config,
            preprocess,
            device: device.clone(),
            options: ClipOptions {
                max_batch: options.max_batch.max(1),
                matmul,
                ..options
            },
            folder,
            id,
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ClipModelConfig {
        &self.config
    }

    /// The preprocessing applied by [`ImageEmbedder::embed_batch`].
    pub fn preprocess(&self) -> &ClipPreprocess {
        &self.preprocess
    }

    /// The folder the checkpoint was read from.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    pub fn options(&self) -> ClipOptions {
        self.options
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Embeds already preprocessed images: `pixels` holds `count` CHW f32 images
    /// of `3 x image_size x image_size`, back to back. Runs in chunks of
    /// `max_batch`; returns L2-normalised vectors.
    pub fn embed_pixel_values(&self, pixels: &[f32]) -> Result<Vec<Vec<f32>>, ClipError> {
        let per_image = self.pixels_per_image();
        if !pixels.len().is_multiple_of(per_image) {
            return Err(ClipError::Input(format!(
                "got {} pixel values, not a whole number of {} x {s} x {s} images",
                pixels.len(),
                self.config.vision.num_channels,
                s = self.config.vision.image_size
            )));
        }
        let mut out = Vec::with_capacity(pixels.len() / per_image);
        for chunk in pixels.chunks(per_image * self.options.max_batch) {
            out.extend(self.per_image(chunk, |images| self.forward_chunk(images.to_vec()))?);
        }
        Ok(out)
    }

    /// `run` over the whole images in `pixels`, one pass or several
    /// ([`ClipOptions::parallel_images`]); one result per image, in order.
    fn per_image<T: Send>(
        &self,
        pixels: &[f32],
        run: impl Fn(&[f32]) -> Result<Vec<T>, ClipError> + Sync,
    ) -> Result<Vec<T>, ClipError> {
        let per_image = self.pixels_per_image();
        let count = pixels.len() / per_image;
        let threads = if self.options.parallel_images && self.device.is_cpu() {
            candle_core::utils::get_num_threads()
        } else {
            1
        };
        image_parallel::map_images(count, threads, |images| {
            run(&pixels[images.start * per_image..images.end * per_image])
        })
    }

    fn pixels_per_image(&self) -> usize {
        let v = &self.config.vision;
        v.num_channels * v.image_size * v.image_size
    }

    /// One forward pass over `pixels` (whole images, at most `max_batch`).
    fn forward_chunk(&self, pixels: Vec<f32>) -> Result<Vec<Vec<f32>>, ClipError> {
        let v = &self.config.vision;
        let n = pixels.len() / self.pixels_per_image();
        let shape = (n, v.num_channels, v.image_size, v.image_size);
        let vectors = Tensor::from_vec(pixels, shape, &self.device)
            .and_then(|t| self.model.forward(&t))
            .and_then(|t| t.to_vec2::<f32>())
            .context(|| format!("CLIP forward pass on {n} image(s) failed"))?;
        Ok(vectors
            .into_iter()
            .map(|mut v| {
                l2_normalize(&mut v);
                v
            })
            .collect())
    }
}

/// The tokens of one image after one encoder block: `tokens` rows of
/// `hidden` values, row-major, the class token first and then the patches in
/// raster order.
#[derive(Debug, Clone, PartialEq)]
pub struct HiddenState {
    /// As transformers numbers `hidden_states`: 0 = embeddings, `l` = block `l`.
    pub layer: usize,
    pub tokens: usize,
    pub hidden: usize,
    pub values: Vec<f32>,
}

impl HiddenState {
    /// The patch tokens only (the class token dropped), row-major.
    pub fn patches(&self) -> &[f32] {
        &self.values[self.hidden.min(self.values.len())..]
    }
}

impl ClipEmbedder {
    /// The hidden states after the encoder blocks `layers` (numbered as
    /// transformers' `output_hidden_states`: 0 is the embeddings, `l` the
    /// output of block `l`) for already preprocessed images, as for
    /// [`ClipEmbedder::embed_pixel_values`]. Outer index: image; inner: the
    /// entries of `layers`, in that order. The same tower as the embedding,
    /// run only as deep as the deepest layer asked for.
    pub fn hidden_states(
        &self,
        pixels: &[f32],
        layers: &[usize],
    ) -> Result<Vec<Vec<HiddenState>>, ClipError> {
        let depth = self.config.vision.num_hidden_layers;
        if let Some(bad) = layers.iter().find(|&&l| l > depth) {
            return Err(ClipError::Input(format!(
                "layer {bad} asked for, but this CLIP model has {depth} layers (0 is the embeddings)"
            )));
        }
        let per_image = self.pixels_per_image();
        if !pixels.len().is_multiple_of(per_image) {
            return Err(ClipError::Input(format!(
                "got {} pixel values, not a whole number of {per_image}-value images",
                pixels.len()
            )));
        }
        let mut out = Vec::with_capacity(pixels.len() / per_image);
        for chunk in pixels.chunks(per_image * self.options.max_batch) {
            out.extend(self.per_image(chunk, |images| self.hidden_chunk(images, layers))?);
        }
        Ok(out)
    }

    /// One pass of [`ClipEmbedder::hidden_states`] over whole images.
    fn hidden_chunk(
        &self,
        chunk: &[f32],
        layers: &[usize],
    ) -> Result<Vec<Vec<HiddenState>>, ClipError> {
        let v = &self.config.vision;
        let n = chunk.len() / self.pixels_per_image();
        let shape = (n, v.num_channels, v.image_size, v.image_size);
        let states = Tensor::from_vec(chunk.to_vec(), shape, &self.device)
            .and_then(|t| self.model.hidden_states(&t, layers))
            .context(|| format!("CLIP hidden states of {n} image(s) failed"))?;
        let mut out = Vec::with_capacity(n);
        let mut per_layer = Vec::with_capacity(layers.len());
        for (state, &layer) in states.iter().zip(layers) {
            let (_, tokens, hidden) = state
                .dims3()
                .context(|| format!("hidden state {layer} has an unexpected shape"))?;
            let values = state
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .context(|| format!("reading hidden state {layer}"))?;
            per_layer.push((layer, tokens, hidden, values));
        }
        for image in 0..n {
            out.push(
                per_layer
                    .iter()
                    .map(|(layer, tokens, hidden, values)| {
                        let size = tokens * hidden;
                        HiddenState {
                            layer: *layer,
                            tokens: *tokens,
                            hidden: *hidden,
                            values: values[image * size..(image + 1) * size].to_vec(),
                        }
                    })
                    .collect(),
            );
        }
        Ok(out)
    }
}

impl ImageEmbedder for ClipEmbedder {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn dim(&self) -> usize {
        self.config.vision.projection_dim
    }

    fn embed_batch(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let per_image = self.pixels_per_image();
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.options.max_batch) {
            // One buffer per batch, handed to candle without another copy.
            let mut pixels = Vec::with_capacity(per_image * chunk.len());
            for image in chunk {
                let values = clip_pixel_values(image, &self.preprocess);
                if values.len() != per_image {
                    return Err(ClipError::Input(format!(
                        "preprocessing gave {} values per image, the model takes {per_image}",
                        values.len()
                    ))
                    .into());
                }
                pixels.extend_from_slice(&values);
            }
            out.extend(self.per_image(&pixels, |images| self.forward_chunk(images.to_vec()))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::clip::test_support::*;

    #[test]
    fn reference_pixel_values_give_reference_embeddings() {
        // Both dense-layer kernels (`Packed` is gemm on CPUs without AVX2).
        for matmul in [MatmulChoice::Packed, MatmulChoice::Gemm] {
            for name in CONFIGS {
                let source = ClipSource::Folder(fixtures().join(name));
                let options = ClipOptions {
                    matmul,
                    ..ClipOptions::default()
                };
                let embedder = ClipEmbedder::load_with(&source, &Device::Cpu, options).unwrap();
                assert_eq!(embedder.options().matmul, matmul);
                for case in reference(name) {
                    let got = embedder.embed_pixel_values(&case.pixels).unwrap();
                    let diff = max_abs_diff(&got[0], &case.embedding);
                    println!("{matmul:?} {name} {}: max abs diff {diff:e}", case.image);
                    assert!(diff < 1e-4, "{matmul:?} {name} {}: {diff}", case.image);
                }
            }
        }
    }

    #[test]
    fn decoded_images_give_reference_embeddings() {
        for name in CONFIGS {
            let embedder = load(name);
            for case in reference(name) {
                let path = fixtures().join("images").join(&case.image);
                let image = image::open(&path).unwrap().to_rgb8();
                let pixels = clip_pixel_values(&image, embedder.preprocess());
                let pixel_diff = max_abs_diff(&pixels, &case.pixels);
                let got = embedder.embed(&image).unwrap();
                let diff = max_abs_diff(&got, &case.embedding);
                println!(
                    "{name} {} full path: pixel max abs diff {pixel_diff:e}, embedding {diff:e}",
                    case.image
                );
                // The preprocessing ports Pillow and transformers bit for bit.
                assert_eq!(pixel_diff, 0.0, "{name} {}", case.image);
                assert!(diff < 1e-4, "{name} {}: {diff}", case.image);
            }
        }
    }

    #[test]
    fn images_side_by_side_give_what_one_at_a_time_gives() {
        let folder = fixtures().join("full_p16_s32");
        let load = |parallel_images| {
            let options = ClipOptions {
                parallel_images,
                ..ClipOptions::default()
            };
            ClipEmbedder::load_with(&ClipSource::Folder(folder.clone()), &Device::Cpu, options)
                .unwrap()
        };
        let (side_by_side, one_at_a_time) = (load(true), load(false));
        // Five images: on two or more cores, some run side by side and the
        // odd one (on two cores) runs with every core.
        let mut pixels: Vec<f32> = reference("full_p16_s32")
            .iter()
            .flat_map(|c| c.pixels.clone())
            .collect();
        pixels.extend_from_within(..pixels.len() / 4);
        let a = side_by_side.embed_pixel_values(&pixels).unwrap();
        let b = one_at_a_time.embed_pixel_values(&pixels).unwrap();
        assert_eq!(a.len(), 5);
        for (x, y) in a.iter().zip(&b) {
            assert!(max_abs_diff(x, y) < 1e-6);
        }
        assert!(max_abs_diff(&a[4], &a[0]) < 1e-6, "results out of order");
        let layers = [1, 0];
        let a = side_by_side.hidden_states(&pixels, &layers).unwrap();
        let b = one_at_a_time.hidden_states(&pixels, &layers).unwrap();
        assert_eq!(a.len(), 5);
        for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
            assert_eq!((x.layer, x.tokens), (y.layer, y.tokens));
            assert!(max_abs_diff(&x.values, &y.values) < 1e-6);
        }
    }

    #[test]
    fn batches_equal_singles() {
        let folder = fixtures().join("full_p16_s32");
        let options = ClipOptions {
            max_batch: 3,
            ..ClipOptions::default()
        };
        let embedder =
            ClipEmbedder::load_with(&ClipSource::Folder(folder), &Device::Cpu, options).unwrap();
        let images: Vec<RgbImage> = reference("full_p16_s32")
            .iter()
            .map(|c| {
                let path = fixtures().join("images").join(&c.image);
                image::open(path).unwrap().to_rgb8()
            })
            .collect();
        // 4 images with batches of 3: one full and one partial batch.
        let batched = embedder.embed_batch(&images).unwrap();
        assert_eq!(batched.len(), images.len());
        for (image, vector) in images.iter().zip(&batched) {
            let single = embedder.embed(image).unwrap();
            assert!(max_abs_diff(&single, vector) < 1e-6);
            let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
        }
        assert!(embedder.embed_batch(&[]).unwrap().is_empty());
    }

    #[test]
    fn id_and_dim_describe_the_model() {
        let embedder = load("full_p16_s32");
        // The stale `vision_config.projection_dim` (512) must not win.
        assert_eq!(embedder.dim(), 16);
        let digest = sha256_file(&fixtures().join("full_p16_s32").join(WEIGHTS_FILE)).unwrap();
        assert_eq!(embedder.id(), format!("clip:32/16/32x2:{}", &digest[..12]));
        assert_eq!(load("vision_p32_s64").dim(), 8);
        assert!(load("full_p8_s40_f16").id().starts_with("clip:40/8/24x3:"));
    }

    /// transformers' `output_hidden_states` for one image
    /// (`scripts/clip_hidden_states.py`, committed): every layer, every token.
    #[test]
    fn hidden_states_match_transformers() {
        use base64::Engine as _;
        let name = "full_p8_s40_f16";
        let expected = read_json(&fixtures().join(name).join("hidden_states.json")).unwrap();
        let image = expected["image"].as_str().unwrap();
        let case = reference(name)
            .into_iter()
            .find(|c| c.image == image)
            .unwrap();
        let embedder = load(name);
        let layers: Vec<usize> = (0..=embedder.config().vision.num_hidden_layers)
            .rev()
            .collect();
        let ours = embedder.hidden_states(&case.pixels, &layers).unwrap();
        assert_eq!(ours.len(), 1);
        let theirs = expected["hidden_states"].as_array().unwrap();
        assert_eq!(theirs.len(), layers.len());
        for state in &ours[0] {
            let t = &theirs[state.layer];
            assert_eq!(t["layer"].as_u64(), Some(state.layer as u64));
            assert_eq!(t["tokens"].as_u64(), Some(state.tokens as u64));
            assert_eq!(t["hidden"].as_u64(), Some(state.hidden as u64));
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(t["values_f32le_base64"].as_str().unwrap())
                .unwrap();
            let values: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let diff = max_abs_diff(&state.values, &values);
            assert!(diff < 1e-4, "layer {}: {diff}", state.layer);
            assert_eq!(state.patches().len(), (state.tokens - 1) * state.hidden);
        }
        // Batched with another image, the first image's states do not change.
        let other = reference(name).remove(0).pixels;
        let both: Vec<f32> = case.pixels.iter().chain(&other).copied().collect();
        let batched = embedder.hidden_states(&both, &[2]).unwrap();
        assert_eq!(batched.len(), 2);
        let single = &ours[0][layers.iter().position(|&l| l == 2).unwrap()];
        assert!(max_abs_diff(&batched[0][0].values, &single.values) < 1e-5);
        assert!(embedder.hidden_states(&case.pixels, &[99]).is_err());
        assert!(embedder.hidden_states(&case.pixels[1..], &[1]).is_err());
    }

    #[test]
    fn wrong_pixel_count_is_an_error() {
        let err = load("full_p16_s32")
            .embed_pixel_values(&[0.0; 10])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("not a whole number of 3 x 32 x 32 images")
        );
    }

    #[test]
    fn embedder_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ClipEmbedder>();
    }

    #[test]
    fn unsupported_dtypes_are_refused() {
        let source = ClipSource::Folder(fixtures().join("full_p16_s32"));
        for (dtype, expected) in [
            (DType::BF16, "bf16 needs a CUDA device"),
            (DType::U8, "not u8"),
        ] {
            let options = ClipOptions {
                dtype,
                ..ClipOptions::default()
            };
            let err = ClipEmbedder::load_with(&source, &Device::Cpu, options).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[test]
    fn half_precision_stays_close() {
        let folder = fixtures().join("full_p16_s32");
        let options = ClipOptions {
            dtype: DType::F16,
            ..ClipOptions::default()
        };
        let embedder =
            ClipEmbedder::load_with(&ClipSource::Folder(folder), &Device::Cpu, options).unwrap();
        assert!(embedder.id().ends_with(":f16"));
        for case in reference("full_p16_s32") {
            let got = embedder.embed_pixel_values(&case.pixels).unwrap();
            let diff = max_abs_diff(&got[0], &case.embedding);
            println!("f16 {} max abs diff {diff:e}", case.image);
            assert!(diff < 2e-2, "{diff}");
        }
    }
}
