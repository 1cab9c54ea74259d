//! The anomaly map's own figures for a run that used it (issue 18): per category,
//! the detection literature's image AUROC, pixel AUROC and AUPRO (as anomalib
//! computes them, `anomaly::metrics`), the map's Overkill and Miss at its own
//! threshold beside the model's on the Anomaly Detection questions, and how often
//! the two disagree.
//!
//! Image-level figures come from the journal alone: each map trace keeps its score
//! and threshold. The map itself is not stored (a 256 x 256 map per question would
//! make a journal line tens of kilobytes), so the pixel figures recompute it from
//! the run's memory with the run's `k`, exactly as the expert did (the detector is
//! deterministic), and read each entry's `mask_path` as `anomaly-eval` does. That
//! takes a second or so per image, so callers run [`add_pixel_metrics`] off any UI
//! thread.

use std::collections::HashSet;
use std::path::PathBuf;

use indexmap::IndexMap;
use serde::Serialize;

use crate::anomaly::metrics::{self, PixelSample};
use crate::anomaly::{Detector, References, map::to_image_size};
use crate::dataset::{DatasetRoot, ImageEntry, MmadDataset, category_of, dataset_of};
use crate::echo::ExpertName;
use crate::jobs::CancelToken;
use crate::memory::ReferenceMemory;
use crate::runs::journal::JournalRecord;
use crate::runs::manifest::RunManifest;
use crate::score::{self, Tally};
use crate::vision::{DecodeLimits, decode_rgb8};

/// One category's figures (or, as [`MapMetrics::total`], all categories').
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CategoryMap {
    /// Images with a map.
    pub images: usize,
    pub image_auroc: Option<f64>,
    /// `None` until [`add_pixel_metrics`] ran, or when the category has no defect
    /// pixels or no normal ones.
    pub pixel_auroc: Option<f64>,
    pub aupro: Option<f64>,
    /// The map's verdict per image at its threshold: on normal images `wrong()` is
    /// its Overkill count, on defective ones its Miss count.
    pub map_normal: Tally,
    pub map_abnormal: Tally,
    /// The model's Anomaly Detection answers, counted as MMAD does (no letter: not
    /// counted), on the images with a map.
    pub model_normal: Tally,
    pub model_abnormal: Tally,
    /// Anomaly Detection questions with both verdicts, and those where they differ.
    pub compared: usize,
    pub disagree: usize,
    /// The images' keys, for the pixel figures.
    #[serde(skip)]
    pub keys: Vec<String>,
    #[serde(skip)]
    scores: Vec<f32>,
    #[serde(skip)]
    labels: Vec<bool>,
}

fn percent_wrong(t: &Tally) -> Option<f64> {
    (t.total > 0).then(|| (1.0 - t.accuracy()) * 100.0)
}

impl CategoryMap {
    /// Percent of normal images the map calls anomalous.
    pub fn map_overkill(&self) -> Option<f64> {
        percent_wrong(&self.map_normal)
    }

    /// Percent of defective images the map calls normal.
    pub fn map_miss(&self) -> Option<f64> {
        percent_wrong(&self.map_abnormal)
    }

    pub fn model_overkill(&self) -> Option<f64> {
        percent_wrong(&self.model_normal)
    }

    pub fn model_miss(&self) -> Option<f64> {
        percent_wrong(&self.model_abnormal)
    }

    /// Percent of the compared questions where map and model disagree.
    pub fn disagreement(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.disagree as f64 / self.compared as f64 * 100.0)
    }

    fn add_counts(&mut self, other: &CategoryMap) {
        self.images += other.images;
        for (a, b) in [
            (&mut self.map_normal, &other.map_normal),
            (&mut self.map_abnormal, &other.map_abnormal),
            (&mut self.model_normal, &other.model_normal),
            (&mut self.model_abnormal, &other.model_abnormal),
        ] {
            a.total += b.total;
            a.correct += b.correct;
        }
        self.compared += other.compared;
        self.disagree += other.disagree;
    }
}

/// The three detection figures averaged over categories (as `anomaly-eval`'s
/// `mean`: categories without a figure are left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MapMeans {
    pub image_auroc: Option<f64>,
    pub pixel_auroc: Option<f64>,
    pub aupro: Option<f64>,
}

/// A run's anomaly-map figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MapMetrics {
    /// Per `dataset/category`, in order of first appearance.
    pub categories: IndexMap<String, CategoryMap>,
    pub mean: MapMeans,
    /// Every category's counts summed (its AUROC fields stay `None`).
    pub total: CategoryMap,
}

impl MapMetrics {
    fn update_means(&mut self) {
        let mean = |f: fn(&CategoryMap) -> Option<f64>| {
            metrics::mean(self.categories.values().filter_map(f))
        };
        self.mean = MapMeans {
            image_auroc: mean(|c| c.image_auroc),
            pixel_auroc: mean(|c| c.pixel_auroc),
            aupro: mean(|c| c.aupro),
        };
    }
}

/// The image-level figures of the records whose anomaly map ran; `None` when none
/// did (a run without the map). Error records count for the map (it ran) but not
/// for the model (it gave no answer).
pub fn map_metrics(records: &[JournalRecord]) -> Option<MapMetrics> {
    let mut out = MapMetrics::default();
    let mut seen: HashSet<&str> = HashSet::new();
    for r in records {
        let Some(map) = r
            .traces
            .iter()
            .find(|t| t.name == ExpertName::AnomalyMap && t.is_done())
            .and_then(|t| t.output.map())
        else {
            continue;
        };
        let name = format!("{}/{}", dataset_of(&r.image), category_of(&r.image));
        let c = out.categories.entry(name).or_default();
        let normal = r.image.contains(score::NORMAL_FLAG);
        let flagged = map.anomalous();
        // Every question of an image gets the same map: one verdict per image.
        if seen.insert(r.image.as_str()) {
            c.images += 1;
            c.keys.push(r.image.clone());
            c.scores.push(map.score as f32);
            c.labels.push(!normal);
            if normal {
                c.map_normal.add(!flagged);
            } else {
                c.map_abnormal.add(flagged);
            }
        }
        if r.question_type != score::ANOMALY_DETECTION || !r.is_ok() {
            continue;
        }
        let Some(letter) = r
            .gpt_answer
            .as_deref()
            .filter(|g| score::VALID_LETTERS.contains(g))
        else {
            continue;
        };
        let right = letter == r.correct_answer;
        // A yes/no question: a right answer on a defective image, or a wrong one
        // on a normal image, calls the part defective.
        let model_flags = right != normal;
        if normal {
            c.model_normal.add(right);
        } else {
            c.model_abnormal.add(right);
        }
        c.compared += 1;
        c.disagree += usize::from(model_flags != flagged);
    }
    if out.categories.is_empty() {
        return None;
    }
    let mut total = CategoryMap::default();
    for c in out.categories.values_mut() {
        c.image_auroc = metrics::auroc(&c.scores, &c.labels);
        total.add_counts(c);
    }
    out.total = total;
    out.update_means();
    Some(out)
}

#[derive(Debug, thiserror::Error)]
pub enum MapMetricsError {
    #[error("the run recorded no reference memory, so its maps cannot be recomputed")]
    NoMemory,
    #[error("the run's memory {path}: {source}")]
    Memory {
        path: PathBuf,
        #[source]
        source: crate::memory::MemoryError,
    },
    #[error("the run's dataset {path}: {source}")]
    Dataset {
        path: PathBuf,
        #[source]
        source: Box<crate::dataset::mmad::DatasetError>,
    },
    #[error("recomputing the map of `{key}`: {message}")]
    Image { key: String, message: String },
    #[error(transparent)]
    Anomaly(#[from] crate::anomaly::AnomalyError),
    #[error("cancelled")]
    Cancelled,
}

/// Pixel AUROC and AUPRO per category: each image's map recomputed from the run's
/// memory with the run's `k`, against its entry's mask (no mask: all normal).
pub fn add_pixel_metrics(
    metrics: &mut MapMetrics,
    manifest: &RunManifest,
    cancel: &CancelToken,
) -> Result<(), MapMetricsError> {
    let memory_ref = manifest.memory.as_ref().ok_or(MapMetricsError::NoMemory)?;
    let memory =
        ReferenceMemory::load(&memory_ref.path).map_err(|source| MapMetricsError::Memory {
            path: memory_ref.path.clone(),
            source,
        })?;
    let dataset =
        MmadDataset::load(&manifest.dataset.path).map_err(|source| MapMetricsError::Dataset {
            path: manifest.dataset.path.clone(),
            source: Box::new(source),
        })?;
    let root = DatasetRoot::new(&manifest.dataset.root);
    let k = manifest
        .pipeline
        .map_k
        .unwrap_or(crate::anomaly::map::DEFAULT_K);
    // The run's own backbone, so the figures are those of the maps it used.
    let backbone = manifest.pipeline.map_backbone.clone().unwrap_or_default();
    let mut detector = Detector::new(memory, backbone, References::Nearest(k))?;
    for c in metrics.categories.values_mut() {
        let mut maps = Vec::with_capacity(c.keys.len());
        for key in &c.keys {
            if cancel.is_cancelled() {
                return Err(MapMetricsError::Cancelled);
            }
            let fail = |message: String| MapMetricsError::Image {
                key: key.clone(),
                message,
            };
            let path = ImageEntry::image_file(&root, key).map_err(|e| fail(e.to_string()))?;
            let image = decode_rgb8(&path, DecodeLimits::default())
                .map_err(|e| fail(crate::util::error::chain(&e)))?;
            let detection = detector.detect(&image, Some(category_of(key)))?;
            let (w, h) = (image.width() as usize, image.height() as usize);
            let mask_path = match dataset.entries.get(key) {
                Some(entry) => entry
                    .mask_file(&root, key)
                    .map_err(|e| fail(format!("mask_path: {e}")))?,
                None => None,
            };
            let mask = match mask_path {
                Some(p) => metrics::read_mask(&p, w, h)
                    .map_err(|e| fail(format!("mask: {}", crate::util::error::chain(&e))))?,
                None => vec![false; w * h],
            };
            maps.push((to_image_size(&detection.map, w, h), mask, w, h));
        }
        let samples: Vec<PixelSample<'_>> = maps
            .iter()
            .map(|(map, mask, w, h)| PixelSample {
                map,
                mask,
                width: *w,
                height: *h,
            })
            .collect();
        c.pixel_auroc = metrics::pixel_auroc(&samples);
        c.aupro = metrics::aupro(&samples, metrics::AUPRO_FPR_LIMIT);
    }
    metrics.update_means();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::trace::{ExpertStatus, ExpertTrace, MapOutput, TraceInput, TraceOutput};

    fn map_trace(score: f64, threshold: f64) -> ExpertTrace {
        ExpertTrace {
            name: ExpertName::AnomalyMap,
            status: ExpertStatus::Done,
            input: TraceInput::None,
            output: TraceOutput::from(MapOutput {
                score,
                threshold,
                category: "c".into(),
                backbone: "descriptor".into(),
                k: 4,
                regions: Vec::new(),
                references: Vec::new(),
                hint: None,
                map_ms: 1,
            }),
            summary: String::new(),
            ms: 1,
        }
    }

    /// An Anomaly Detection question (A: yes, a defect; B: no) on `image`,
    /// answered `given`, with the map's score against threshold 0.5.
    fn rec(image: &str, given: Option<&str>, score: f64) -> JournalRecord {
        let correct = if image.contains("/good/") { "B" } else { "A" };
        let mut r =
            crate::runs::test_support::record(0, image, "Anomaly Detection", correct, given);
        r.traces = vec![map_trace(score, 0.5)];
        r
    }

    #[test]
    fn image_figures_match_a_hand_count() {
        let records = vec![
            // DS/bottle: two normals, three defects.
            rec("DS/bottle/test/good/0.png", Some("B"), 0.2), // map right, model right
            rec("DS/bottle/test/good/1.png", Some("A"), 0.7), // map overkill, model overkill
            rec("DS/bottle/test/crack/0.png", Some("A"), 0.9), // both right
            rec("DS/bottle/test/crack/1.png", Some("B"), 0.6), // model miss
            rec("DS/bottle/test/crack/2.png", None, 0.4),     // map miss, model error
            // DS/cable: one normal, one defect, the map perfectly ranked.
            rec("DS/cable/test/good/0.png", Some("A"), 0.1), // model overkill
            rec("DS/cable/test/cut/0.png", Some("A"), 0.8),
        ];
        let mut other = rec("DS/bottle/test/crack/0.png", Some("C"), 0.9);
        other.question_type = "Defect Classification".into();
        let mut records = records;
        records.push(other);
        let m = map_metrics(&records).unwrap();
        let bottle = &m.categories["DS/bottle"];
        // Scores: normals 0.2, 0.7; defects 0.9, 0.6, 0.4. Pairs (defect above
        // normal): 0.9 > both, 0.6 > 0.2, 0.4 > 0.2: 4 of 6.
        assert_eq!(bottle.image_auroc, Some(4.0 / 6.0));
        assert_eq!(bottle.images, 5);
        assert_eq!(bottle.map_overkill(), Some(50.0));
        assert!((bottle.map_miss().unwrap() - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(bottle.model_overkill(), Some(50.0));
        // The failed question is not counted for the model: one miss in two.
        assert_eq!(bottle.model_miss(), Some(50.0));
        // Compared: 4 answered; they disagree on crack/1 (map 0.6 flags, model
        // says normal) only.
        assert_eq!((bottle.compared, bottle.disagree), (4, 1));
        assert_eq!(bottle.disagreement(), Some(25.0));
        let cable = &m.categories["DS/cable"];
        assert_eq!(cable.image_auroc, Some(1.0));
        assert_eq!((cable.compared, cable.disagree), (2, 1));
        assert_eq!(m.mean.image_auroc, Some((4.0 / 6.0 + 1.0) / 2.0));
        assert_eq!(m.mean.pixel_auroc, None);
        assert_eq!(
            (m.total.images, m.total.compared, m.total.disagree),
            (7, 6, 2)
        );
        assert_eq!(
            m.total.map_normal,
            Tally {
                correct: 2,
                total: 3
            }
        );
        // A run without the map has no figures.
        let mut plain = rec("DS/cable/test/cut/0.png", Some("A"), 0.8);
        plain.traces.clear();
        assert_eq!(map_metrics(&[plain]), None);
    }

    #[test]
    fn pixel_figures_need_the_runs_memory() {
        let mut m = map_metrics(&[rec("DS/cable/test/cut/0.png", Some("A"), 0.8)]).unwrap();
        let manifest = crate::runs::test_support::manifest(1);
        let e = add_pixel_metrics(&mut m, &manifest, &CancelToken::new()).unwrap_err();
        assert!(matches!(e, MapMetricsError::NoMemory), "{e}");
        assert!(e.to_string().contains("no reference memory"));
    }
}
