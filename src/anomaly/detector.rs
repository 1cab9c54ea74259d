//! The detector over a reference memory: which normals a query is compared with,
//! their patch features (computed once), each category's threshold, and the result
//! for one image.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use image::RgbImage;

use super::clip_patches::ClipPatches;
use super::dinov2_patches::Dinov2Patches;
use super::features::{self, PatchGrid};
use super::map::{self, AnomalyMap, Search};
use super::regions::{self, Region};
use super::threshold;
use crate::dataset::DatasetRoot;
use crate::memory::{ReferenceMemory, Scope};
use crate::vision::clip::ClipSource;
use crate::vision::dinov2::Dinov2Source;
use crate::vision::spec::EmbedderSpec;
use crate::vision::{DecodeLimits, ImageEmbedder, decode_rgb8};

/// PatchCore's default coreset size when a whole category is the memory bank.
pub const CORESET_RATIO: f64 = 0.1;
/// At most this many normals of a category are scored leave-one-out, evenly
/// spread, so a large memory's threshold costs a bounded time.
pub const MAX_THRESHOLD_NORMALS: usize = 64;

/// Which patch features the detector compares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backbone {
    /// Weight-free colour, contrast and gradient features (`features`).
    #[default]
    Descriptor,
    /// CLIP ViT patch tokens of intermediate blocks (`clip_patches`), from a
    /// local folder or the HF cache (`clip:PATH`, `clip:hf:ORG/NAME[@REV]`).
    Clip {
        source: ClipSource,
        /// Encoder blocks (1-based); `None` = `clip_patches::default_layers`.
        layers: Option<Vec<usize>>,
    },
    /// DINOv2 patch tokens (`dinov2_patches`), from a local folder or the HF
    /// cache (`dinov2:PATH`, `dinov2:hf:ORG/NAME[@REV]`).
    Dinov2 {
        source: Dinov2Source,
        /// Encoder layers (1-based); `None` = `dinov2_patches::default_layers`.
        layers: Option<Vec<usize>>,
    },
}

impl Backbone {
    /// The same backbone reading the given CLIP blocks or DINOv2 layers (no
    /// effect on the descriptor).
    pub fn with_layers(self, layers: Option<Vec<usize>>) -> Self {
        match self {
            Backbone::Clip { source, .. } => Backbone::Clip { source, layers },
            Backbone::Dinov2 { source, .. } => Backbone::Dinov2 { source, layers },
            other => other,
        }
    }
}

impl FromStr for Backbone {
    type Err = AnomalyError;

    fn from_str(s: &str) -> Result<Self, AnomalyError> {
        let s = s.trim();
        if s == "descriptor" {
            return Ok(Backbone::Descriptor);
        }
        if s.starts_with("clip:") {
            return match s.parse::<EmbedderSpec>() {
                Ok(EmbedderSpec::Clip(source)) => Ok(Backbone::Clip {
                    source,
                    layers: None,
                }),
                _ => Err(AnomalyError::UnknownBackbone(s.to_string())),
            };
        }
        if let Some(rest) = s.strip_prefix("dinov2:") {
            return match Dinov2Source::parse(rest) {
                Some(source) => Ok(Backbone::Dinov2 {
                    source,
                    layers: None,
                }),
                None => Err(AnomalyError::UnknownBackbone(s.to_string())),
            };
        }
        Err(AnomalyError::UnknownBackbone(s.to_string()))
    }
}

impl std::fmt::Display for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backbone::Descriptor => f.write_str("descriptor"),
            Backbone::Clip { source, .. } => {
                // Printed as it is parsed, so the text round-trips.
                let spec = EmbedderSpec::Clip(source.clone()).to_string();
                f.write_str(&spec)
            }
            Backbone::Dinov2 { source, .. } => write!(f, "dinov2:{source}"),
        }
    }
}

/// Written as its text (`descriptor`, `clip:...`, `dinov2:...`), as the
/// command line takes it; the layers are not part of it.
impl serde::Serialize for Backbone {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Backbone {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A loaded backbone.
enum Features {
    Descriptor,
    Clip(Box<ClipPatches>),
    Dinov2(Box<Dinov2Patches>),
}

impl Features {
    fn load(backbone: &Backbone) -> Result<Self, AnomalyError> {
        match backbone {
            Backbone::Descriptor => Ok(Features::Descriptor),
            Backbone::Clip { source, layers } => ClipPatches::load(source, layers.as_deref())
                .map(|p| Features::Clip(Box::new(p)))
                .map_err(|e| AnomalyError::Backbone {
                    backbone: backbone.to_string(),
                    message: e.to_string(),
                }),
            Backbone::Dinov2 { source, layers } => Dinov2Patches::load(source, layers.as_deref())
                .map(|p| Features::Dinov2(Box::new(p)))
                .map_err(|e| AnomalyError::Backbone {
                    backbone: backbone.to_string(),
                    message: e.to_string(),
                }),
        }
    }

    fn side(&self) -> usize {
        match self {
            Features::Descriptor => features::GRID,
            Features::Clip(p) => p.side(),
            Features::Dinov2(p) => p.side(),
        }
    }

    /// The patch features of `image`; the error is the backbone's message.
    fn extract(&self, image: &RgbImage) -> Result<PatchGrid, String> {
        match self {
            Features::Descriptor => Ok(features::extract(image)),
            Features::Clip(p) => p.extract(image).map_err(|e| e.to_string()),
            Features::Dinov2(p) => p.extract(image).map_err(|e| e.to_string()),
        }
    }
}

/// How many normal references a query is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum References {
    /// The `k` most similar normals of the memory (retrieval order).
    Nearest(usize),
    /// Every normal of the category, as a coreset of their patches.
    All,
}

impl Default for References {
    fn default() -> Self {
        References::Nearest(map::DEFAULT_K)
    }
}

impl FromStr for References {
    type Err = AnomalyError;

    fn from_str(s: &str) -> Result<Self, AnomalyError> {
        let s = s.trim();
        if s == "all" {
            return Ok(References::All);
        }
        match s.parse::<usize>() {
            Ok(k) if k >= 1 => Ok(References::Nearest(k)),
            _ => Err(AnomalyError::BadK(s.to_string())),
        }
    }
}

impl std::fmt::Display for References {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            References::Nearest(k) => write!(f, "{k}"),
            References::All => f.write_str("all"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AnomalyError {
    #[error(
        "unknown backbone `{0}`: use `descriptor`, `clip:PATH`, `clip:hf:ORG/NAME[@REVISION]`, \
         `dinov2:PATH` or `dinov2:hf:ORG/NAME[@REVISION]`"
    )]
    UnknownBackbone(String),
    #[error("backbone `{backbone}`: {message}")]
    Backbone { backbone: String, message: String },
    #[error("`{0}` is not a number of references: use a whole number of at least 1 or `all`")]
    BadK(String),
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
    #[error("the memory of {path} does not say how to load its embedder: {message}")]
    Embedder { path: PathBuf, message: String },
    #[error("cannot load `{spec}`, the embedder the memory of {path} was built with: {message}")]
    EmbedderLoad {
        path: PathBuf,
        spec: String,
        message: String,
    },
    #[error("embedding the query: {0}")]
    Embed(#[from] crate::vision::EmbedError),
    #[error("memory item `{path}` of {memory}: {message}")]
    Item {
        memory: PathBuf,
        path: String,
        message: String,
    },
    #[error("the memory {0} has no normal image to compare with")]
    NoReferences(PathBuf),
}

/// What the detector says about one image.
#[derive(Debug, Clone)]
pub struct Detection {
    /// At working resolution; see [`map::to_image_size`].
    pub map: AnomalyMap,
    pub score: f32,
    /// The threshold of the category the references belong to.
    pub threshold: f32,
    pub category: String,
    /// Best first, in image pixels.
    pub regions: Vec<Region>,
    /// Memory paths of the references compared with.
    pub references: Vec<String>,
}

/// A reference memory ready to score images against.
pub struct Detector {
    memory: Arc<ReferenceMemory>,
    embedder: Arc<dyn ImageEmbedder>,
    backbone: Backbone,
    features: Features,
    references: References,
    search: Search,
    grids: HashMap<usize, PatchGrid>,
    thresholds: HashMap<String, f32>,
    percentile: f64,
}

impl Detector {
    /// Uses `memory` with the embedder that built it (for retrieval).
    pub fn new(
        memory: ReferenceMemory,
        backbone: Backbone,
        references: References,
    ) -> Result<Self, AnomalyError> {
        let spec: crate::vision::spec::EmbedderSpec =
            memory
                .embedder_spec
                .parse()
                .map_err(|e: crate::vision::spec::SpecError| AnomalyError::Embedder {
                    path: memory.root.clone(),
                    message: e.to_string(),
                })?;
        let embedder = spec.load().map_err(|e| AnomalyError::EmbedderLoad {
            path: memory.root.clone(),
            spec: spec.to_string(),
            message: e.to_string(),
        })?;
        Self::shared(Arc::new(memory), Arc::from(embedder), backbone, references)
    }

    /// Uses a memory and its retrieval embedder that are already loaded (the
    /// app's), without loading either again.
    pub fn shared(
        memory: Arc<ReferenceMemory>,
        embedder: Arc<dyn ImageEmbedder>,
        backbone: Backbone,
        references: References,
    ) -> Result<Self, AnomalyError> {
        memory.check_query(&embedder.id(), embedder.dim())?;
        if memory.is_empty() {
            return Err(AnomalyError::NoReferences(memory.root.clone()));
        }
        let features = Features::load(&backbone)?;
        let search = match references {
            References::Nearest(_) => Search::Near(map::radius_for_grid(features.side())),
            References::All => Search::All,
        };
        Ok(Detector {
            memory,
            embedder,
            backbone,
            features,
            references,
            search,
            grids: HashMap::new(),
            thresholds: HashMap::new(),
            percentile: threshold::DEFAULT_PERCENTILE,
        })
    }

    pub fn backbone(&self) -> Backbone {
        self.backbone.clone()
    }

    /// The CLIP blocks or DINOv2 layers the patch features come from (empty
    /// for the descriptor).
    pub fn layers(&self) -> Vec<usize> {
        match &self.features {
            Features::Descriptor => Vec::new(),
            Features::Clip(p) => p.layers().to_vec(),
            Features::Dinov2(p) => p.layers().to_vec(),
        }
    }

    /// The memory's root folder.
    pub fn memory_root(&self) -> &std::path::Path {
        &self.memory.root
    }

    /// How many normals of `category` the memory holds.
    pub fn normals_in(&self, category: &str) -> usize {
        self.category_ids(category).len()
    }

    pub fn references(&self) -> References {
        self.references
    }

    /// Scores `image`; `category` narrows retrieval to that category when the
    /// memory has it (otherwise the whole memory is searched).
    pub fn detect(
        &mut self,
        image: &RgbImage,
        category: Option<&str>,
    ) -> Result<Detection, AnomalyError> {
        let query = self.features(image)?;
        let vector = self.embedder.embed(image)?;
        let scope = match category {
            Some(c) if self.memory.items.iter().any(|i| i.category == c) => {
                Scope::Category(c.to_string())
            }
            _ => Scope::Global,
        };
        let first = self
            .memory
            .retrieve(&vector, 1, &scope)
            .into_iter()
            .next()
            .ok_or_else(|| AnomalyError::NoReferences(self.memory.root.clone()))?;
        let category = first.category.clone();
        let in_category = Scope::Category(category.clone());
        let ids: Vec<usize> = match self.references {
            References::Nearest(k) => self
                .memory
                .retrieve(&vector, k, &in_category)
                .into_iter()
                .map(|r| r.id)
                .collect(),
            References::All => self.category_ids(&category),
        };
        for &id in &ids {
            self.load_grid(id)?;
        }
        let refs: Vec<&PatchGrid> = ids.iter().filter_map(|id| self.grids.get(id)).collect();
        let map = match self.references {
            References::Nearest(_) => map::score(&query, &refs, self.search),
            References::All => {
                let bank: Vec<f32> = refs.iter().flat_map(|g| g.values.iter().copied()).collect();
                let dim = query.dim.max(1);
                let keep = ((bank.len() / dim) as f64 * CORESET_RATIO).ceil() as usize;
                let bank = map::coreset(&bank, dim, keep.max(1));
                map::from_patch_distances(&map::bank_distances(&query, &bank), query.side)
            }
        };
        let references = ids
            .iter()
            .map(|&id| self.memory.items[id].path.clone())
            .collect();
        let threshold = self.threshold(&category)?;
        let regions = regions::regions(
            &map.values,
            map.side,
            threshold,
            image.width(),
            image.height(),
        );
        Ok(Detection {
            score: map.score,
            map,
            threshold,
            category,
            regions,
            references,
        })
    }

    /// The category's threshold: leave-one-out scores of its normals, computed
    /// the way a query is scored, at the chosen percentile. A category with a
    /// single normal has no such score; its threshold is 0 (everything flagged
    /// rather than everything passed).
    pub fn threshold(&mut self, category: &str) -> Result<f32, AnomalyError> {
        if let Some(&t) = self.thresholds.get(category) {
            return Ok(t);
        }
        let all = self.category_ids(category);
        let step = all.len().div_ceil(MAX_THRESHOLD_NORMALS).max(1);
        let ids: Vec<usize> = all.iter().copied().step_by(step).collect();
        for &id in &ids {
            self.load_grid(id)?;
        }
        let grids: Vec<PatchGrid> = ids.iter().map(|id| self.grids[id].clone()).collect();
        let k = match self.references {
            References::Nearest(k) => k,
            References::All => ids.len(),
        };
        let memory = &self.memory;
        let order_of = |i: usize| -> Vec<usize> {
            let Some(vector) = memory.vector(ids[i]) else {
                return Vec::new();
            };
            let ranked = memory.retrieve(vector, all.len(), &Scope::Category(category.into()));
            ranked
                .into_iter()
                .filter_map(|r| ids.iter().position(|&id| id == r.id))
                .collect()
        };
        let scores = threshold::leave_one_out_scores(&grids, k, self.search, &order_of);
        let t = threshold::percentile(&scores, self.percentile).unwrap_or(0.0);
        self.thresholds.insert(category.to_string(), t);
        Ok(t)
    }

    fn category_ids(&self, category: &str) -> Vec<usize> {
        (0..self.memory.items.len())
            .filter(|&i| self.memory.items[i].category == category)
            .collect()
    }

    fn features(&self, image: &RgbImage) -> Result<PatchGrid, AnomalyError> {
        self.features
            .extract(image)
            .map_err(|e| AnomalyError::Backbone {
                backbone: self.backbone.to_string(),
                message: e,
            })
    }

    fn load_grid(&mut self, id: usize) -> Result<(), AnomalyError> {
        if self.grids.contains_key(&id) {
            return Ok(());
        }
        let item = &self.memory.items[id];
        let err = |message: String| AnomalyError::Item {
            memory: self.memory.root.clone(),
            path: item.path.clone(),
            message,
        };
        let path = DatasetRoot::new(&self.memory.root)
            .resolve(&item.path)
            .map_err(|e| err(e.to_string()))?;
        let image = decode_rgb8(&path, DecodeLimits::default()).map_err(|e| err(e.to_string()))?;
        let grid = self.features(&image).map_err(|e| err(e.to_string()))?;
        self.grids.insert(id, grid);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_print_back() {
        assert_eq!(
            "descriptor".parse::<Backbone>().unwrap(),
            Backbone::Descriptor
        );
        assert!(matches!(
            "dino".parse::<Backbone>(),
            Err(AnomalyError::UnknownBackbone(_))
        ));
        assert_eq!("4".parse::<References>().unwrap(), References::Nearest(4));
        assert_eq!("all".parse::<References>().unwrap(), References::All);
        assert!("0".parse::<References>().is_err());
        assert!("-3".parse::<References>().is_err());
        assert_eq!(References::Nearest(7).to_string(), "7");
        assert_eq!(Backbone::Descriptor.to_string(), "descriptor");
        for text in [
            "clip:some/folder",
            "clip:hf:openai/clip-vit-base-patch16@abc",
        ] {
            let b: Backbone = text.parse().unwrap();
            assert!(matches!(b, Backbone::Clip { layers: None, .. }));
            assert_eq!(b.to_string(), text);
        }
        let b = "clip:x"
            .parse::<Backbone>()
            .unwrap()
            .with_layers(Some(vec![6, 9]));
        assert!(matches!(b, Backbone::Clip { layers: Some(ref l), .. } if *l == [6, 9]));
        assert!(matches!(
            "clip:".parse::<Backbone>(),
            Err(AnomalyError::UnknownBackbone(_))
        ));
        for text in [
            "dinov2:some/folder",
            "dinov2:hf:facebook/dinov2-small",
            "dinov2:hf:facebook/dinov2-base@abc",
        ] {
            let b: Backbone = text.parse().unwrap();
            assert!(matches!(b, Backbone::Dinov2 { layers: None, .. }));
            assert_eq!(b.to_string(), text);
            assert_eq!(b.to_string().parse::<Backbone>().unwrap(), b);
        }
        assert!(matches!(
            "dinov2:hf:facebook/dinov2-small".parse::<Backbone>().unwrap(),
            Backbone::Dinov2 { source: Dinov2Source::HfCache { ref repo, revision: None }, .. }
                if repo == "facebook/dinov2-small"
        ));
        let b = "dinov2:x"
            .parse::<Backbone>()
            .unwrap()
            .with_layers(Some(vec![9, 12]));
        assert!(matches!(b, Backbone::Dinov2 { layers: Some(ref l), .. } if *l == [9, 12]));
        for bad in ["dinov2", "dinov2:", "dinov2:hf:noslash", "dinov2:hf:a/b@"] {
            let err = bad.parse::<Backbone>().unwrap_err();
            assert!(matches!(err, AnomalyError::UnknownBackbone(_)), "{bad}");
            assert!(err.to_string().contains("dinov2:PATH"), "{err}");
        }
    }
}
