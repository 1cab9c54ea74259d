//! The anomaly map's turn (issue 18): the query's patch features against those of
//! the k most similar normals of the reference memory, scored and thresholded per
//! category by `anomaly::Detector` (which the context keeps for the whole run, so
//! each category's threshold is computed once). What it found can reach the
//! Decision Maker as a sentence, a third image, or both, as the plan says.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Expert, Findings, Step, Turn};
use crate::anomaly::{Detection, Detector, picture};
use crate::echo::error::PipelineError;
use crate::echo::plan::{MapImage, MapOptions};
use crate::echo::trace::{ExpertName, MapInput, MapOutput, MapRegion, TraceInput, TraceOutput};
use crate::vision::{DecodeLimits, decode_rgb8};

pub struct AnomalyMapExpert;

/// What the Decision Maker gets from the map.
#[derive(Debug, Clone, Default)]
pub struct MapFinding {
    /// A sentence added after the query image.
    pub hint: Option<String>,
    /// A PNG added after the query image, with what it shows.
    pub picture: Option<(String, Arc<[u8]>)>,
}

impl Expert for AnomalyMapExpert {
    const NAME: ExpertName = ExpertName::AnomalyMap;

    async fn run(&self, step: &Step<'_>, found: &mut Findings) -> Result<Turn, PipelineError> {
        let Some(options) = step.plan.anomaly_map else {
            return Ok(Turn::Skipped);
        };
        let detector = match step.ctx.map_detector() {
            Ok(d) => d,
            Err(message) => {
                return Ok(Turn::Failed {
                    input: TraceInput::from(input_of(&options, &step.ctx.map_backbone(), None)),
                    error: PipelineError::AnomalyMap { message },
                });
            }
        };
        let memory = detector.lock().map(|d| d.memory_root().to_path_buf()).ok();
        let input = input_of(&options, &step.ctx.map_backbone(), memory);
        let image_path = step.query.image.clone();
        let category = step.query.category.clone();
        let work = move || detect(&detector, &image_path, category.as_deref(), options);
        // Features and the first threshold of a category take a CPU for a while:
        // off the async workers when there is a runtime to hand them to.
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(work)
                .await
                .unwrap_or_else(|e| Err(format!("the anomaly map's work stopped: {e}"))),
            Err(_) => work(),
        };
        Ok(match result {
            Ok((output, finding)) => {
                let summary = summary_of(&output);
                found.map = Some(finding);
                Turn::Done {
                    input: TraceInput::from(input),
                    output: TraceOutput::from(output),
                    summary,
                }
            }
            Err(message) => Turn::Failed {
                input: TraceInput::from(input),
                error: PipelineError::AnomalyMap { message },
            },
        })
    }
}

fn input_of(
    options: &MapOptions,
    backbone: &crate::anomaly::Backbone,
    memory: Option<std::path::PathBuf>,
) -> MapInput {
    MapInput {
        memory: memory.unwrap_or_default(),
        backbone: backbone.to_string(),
        k: options.k,
        hint: options.hint,
        image: options.image,
    }
}

fn detect(
    detector: &Mutex<Detector>,
    image_path: &std::path::Path,
    category: Option<&str>,
    options: MapOptions,
) -> Result<(MapOutput, MapFinding), String> {
    let start = Instant::now();
    let image = decode_rgb8(image_path, DecodeLimits::default())
        .map_err(|e| format!("reading the query: {}", crate::util::error::chain(&e)))?;
    let (detection, backbone) = {
        let mut d = detector
            .lock()
            .map_err(|_| "an earlier anomaly map stopped half-way".to_string())?;
        let detection = d
            .detect(&image, category)
            .map_err(|e| crate::util::error::chain(&e))?;
        (detection, d.backbone().to_string())
    };
    let hint = options.hint.then(|| hint_text(&detection)).flatten();
    let picture = match (options.image, detection.regions.first()) {
        (MapImage::None, _) | (_, None) => None,
        (kind, Some(region)) => {
            let (name, shown) = if kind == MapImage::Crop {
                (
                    "the anomaly map's most unusual region, enlarged",
                    picture::crop(&image, region),
                )
            } else {
                (
                    "the query with the anomaly map's most unusual region outlined",
                    picture::outline(&image, region),
                )
            };
            let bytes =
                picture::png(&shown).map_err(|e| format!("drawing the map's picture: {e}"))?;
            Some((name.to_string(), Arc::from(bytes)))
        }
    };
    let output = MapOutput {
        score: f64::from(detection.score),
        threshold: f64::from(detection.threshold),
        category: detection.category.clone(),
        backbone,
        k: options.k,
        regions: detection
            .regions
            .iter()
            .map(|r| MapRegion {
                x: r.x,
                y: r.y,
                w: r.w,
                h: r.h,
                score: f64::from(r.score),
                grid: r.grid.to_string(),
            })
            .collect(),
        references: detection.references.clone(),
        hint: hint.clone(),
        map_ms: start.elapsed().as_millis().try_into().unwrap_or(u64::MAX),
    };
    Ok((output, MapFinding { hint, picture }))
}

/// The sentence the Decision Maker reads, as issue 18 words it.
pub fn hint_text(detection: &Detection) -> Option<String> {
    let region = detection.regions.first()?;
    Some(format!(
        "The most unusual region is at the {}, score {:.2} against a threshold of {:.2}.",
        region.grid, detection.score, detection.threshold
    ))
}

fn summary_of(output: &MapOutput) -> String {
    let verdict = if output.anomalous() { "above" } else { "below" };
    let place = output
        .regions
        .first()
        .map(|r| format!(", most unusual at the {}", r.grid))
        .unwrap_or_default();
    format!(
        "score {:.3} {verdict} the {} threshold {:.3}{place}",
        output.score, output.category, output.threshold
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::map::AnomalyMap;
    use crate::anomaly::regions::Region;

    #[test]
    fn the_hint_names_the_best_region_with_two_decimals() {
        let detection = Detection {
            map: AnomalyMap {
                side: 1,
                values: vec![0.0],
                score: 0.834,
            },
            score: 0.834,
            threshold: 0.4149,
            category: "washer".into(),
            regions: vec![Region {
                x: 0,
                y: 0,
                w: 4,
                h: 4,
                score: 0.9,
                grid: "top left",
            }],
            references: Vec::new(),
        };
        assert_eq!(
            hint_text(&detection).unwrap(),
            "The most unusual region is at the top left, score 0.83 against a threshold of 0.41."
        );
        let none = Detection {
            regions: Vec::new(),
            ..detection
        };
        assert_eq!(hint_text(&none), None);
    }
}
