//! The detector over a reference memory: which normals a query is compared with,
//! their patch features (computed once), each category's threshold, and the result
//! for one image.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use image::RgbImage;

use super::features::{self, PatchGrid};
use super::map::{self, AnomalyMap, Search};
use super::regions::{self, Region};
use super::threshold;
use crate::dataset::DatasetRoot;
use crate::memory::{ReferenceMemory, Scope};
use crate::vision::{DecodeLimits, ImageEmbedder, decode_rgb8};

/// PatchCore's default coreset size when a whole category is the memory bank.
pub const CORESET_RATIO: f64 = 0.1;
/// At most this many normals of a category are scored leave-one-out, evenly
/// spread, so a large memory's threshold costs a bounded time.
pub const MAX_THRESHOLD_NORMALS: usize = 64;

/// Which patch features the detector compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backbone {
    /// Weight-free colour, contrast and gradient features (`features`).
    #[default]
    Descriptor,
}

impl FromStr for Backbone {
    type Err = AnomalyError;

    fn from_str(s: &str) -> Result<Self, AnomalyError> {
        match s.trim() {
            "descriptor" => Ok(Backbone::Descriptor),
            other => Err(AnomalyError::UnknownBackbone(other.to_string())),
        }
    }
}

impl std::fmt::Display for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backbone::Descriptor => f.write_str("descriptor"),
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
    #[error("unknown backbone `{0}`: this build has `descriptor`")]
    UnknownBackbone(String),
    #[error("`{0}` is not a number of references: use a whole number of at least 1 or `all`")]
    BadK(String),
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
    #[error("{path} does not say how to load its embedder: {message}")]
    Embedder { path: PathBuf, message: String },
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
        let embedder = spec.load().map_err(|e| AnomalyError::Embedder {
            path: memory.root.clone(),
            message: e.to_string(),
        })?;
        Detector::with_embedder(Arc::new(memory), Arc::from(embedder), backbone, references)
    }

    /// Uses a memory and its embedder that are already loaded (the pipeline's), so
    /// a run holds one copy of each.
    pub fn with_embedder(
        memory: Arc<ReferenceMemory>,
        embedder: Arc<dyn ImageEmbedder>,
        backbone: Backbone,
        references: References,
    ) -> Result<Self, AnomalyError> {
        memory.check_query(&embedder.id(), embedder.dim())?;
        if memory.is_empty() {
            return Err(AnomalyError::NoReferences(memory.root.clone()));
        }
        let search = match references {
            References::Nearest(_) => Search::Near(map::DEFAULT_RADIUS),
            References::All => Search::All,
        };
        Ok(Detector {
            memory,
            embedder,
            backbone,
            references,
            search,
            grids: HashMap::new(),
            thresholds: HashMap::new(),
            percentile: threshold::DEFAULT_PERCENTILE,
        })
    }

    /// The memory's folder (for traces and messages).
    pub fn memory_root(&self) -> &std::path::Path {
        &self.memory.root
    }

    pub fn backbone(&self) -> Backbone {
        self.backbone
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
        let query = self.features(image);
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
                let keep = ((bank.len() / features::DIM) as f64 * CORESET_RATIO).ceil() as usize;
                let bank = map::coreset(&bank, features::DIM, keep.max(1));
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

    fn features(&self, image: &RgbImage) -> PatchGrid {
        match self.backbone {
            Backbone::Descriptor => features::extract(image),
        }
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
        let grid = self.features(&image);
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
    }
}
