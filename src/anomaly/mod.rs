//! The anomaly-map expert's core: a training-free, few-shot detector that compares
//! a query's patch features with those of retrieved normal references
//! (PatchCore-style), thresholds the score from the normals themselves, and names
//! the most anomalous regions as MMAD's localization options do.
//!
//! `features` (the weight-free patch backbone), `clip_patches` (CLIP ViT patch
//! tokens of intermediate blocks), `dinov2_patches` (DINOv2 patch tokens), `map`
//! (nearest-neighbour scoring, upsampling, smoothing, coreset), `threshold`
//! (leave-one-out), `regions` (boxes and nine-grid names), `metrics` (AUROC, pixel
//! AUROC, AUPRO), `detector` (all of it over a reference memory).

pub mod clip_patches;
pub mod detector;
pub mod dinov2_patches;
pub mod features;
pub mod map;
pub mod metrics;
pub mod picture;
pub mod regions;
pub mod threshold;

pub use detector::{AnomalyError, Backbone, Detection, Detector, References};
