//! `anomaly` (one image's anomaly map, score, threshold and regions) and
//! `anomaly-eval` (image AUROC, pixel AUROC and AUPRO of an MMAD dataset).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use echo_workbench::anomaly::map::to_image_size;
use echo_workbench::anomaly::metrics::{self, PixelSample};
use echo_workbench::anomaly::{Backbone, Detection, Detector, References};
use echo_workbench::dataset::{self, DatasetRoot, ImageEntry, MmadDataset};
use echo_workbench::memory::ReferenceMemory;
use echo_workbench::vision::{DecodeLimits, decode_rgb8};
use indexmap::IndexMap;
use serde_json::{Value, json};

use crate::TextOrJson;

#[derive(Args)]
pub struct AnomalyArgs {
    image: PathBuf,
    /// A reference memory of normal images (`memory build`).
    #[arg(long)]
    memory: PathBuf,
    /// How many retrieved normal references to compare with, or `all` (the whole
    /// category's memory as a coreset).
    #[arg(long, default_value = "4")]
    k: References,
    /// Patch features: `descriptor` (weight-free), `clip:PATH` /
    /// `clip:hf:ORG/NAME[@REV]` (CLIP ViT patch tokens of intermediate layers), or
    /// `dinov2:PATH` / `dinov2:hf:ORG/NAME[@REV]` (DINOv2 patch tokens).
    #[arg(long, default_value = "descriptor")]
    backbone: Backbone,
    /// Layers whose patch tokens are compared, e.g. `6,9` (1-based encoder blocks;
    /// default for CLIP: half and three quarters of the depth, 6 and 9 of 12; for
    /// DINOv2: three quarters and the last, 9 and 12 of 12).
    #[arg(long, value_name = "L,L", value_parser = parse_layers)]
    layers: Option<Layers>,
    /// Write the map here as a greyscale PNG of the image's size: black is 0, mid
    /// grey the threshold, white twice the threshold or more.
    #[arg(long, value_name = "FILE.png")]
    out_map: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    format: TextOrJson,
}

#[derive(Args)]
pub struct AnomalyEvalArgs {
    /// An MMAD-format mmad.json; masks come from each entry's `mask_path`.
    #[arg(long)]
    dataset: PathBuf,
    /// The dataset root its keys are relative to.
    #[arg(long)]
    root: PathBuf,
    #[arg(long)]
    memory: PathBuf,
    #[arg(long, default_value = "4")]
    k: References,
    /// As for `anomaly`.
    #[arg(long, default_value = "descriptor")]
    backbone: Backbone,
    /// As for `anomaly`.
    #[arg(long, value_name = "L,L", value_parser = parse_layers)]
    layers: Option<Layers>,
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    format: TextOrJson,
}

/// CLIP or DINOv2 layer numbers from the command line (a newtype, so clap takes the list
/// as one value).
#[derive(Clone, Debug)]
pub struct Layers(pub Vec<usize>);

pub fn parse_layers(text: &str) -> Result<Layers, String> {
    echo_workbench::anomaly::clip_patches::parse_layers(text).map(Layers)
}

fn detector(
    memory: &Path,
    backbone: &Backbone,
    layers: Option<&Layers>,
    k: References,
) -> anyhow::Result<Detector> {
    if layers.is_some() && *backbone == Backbone::Descriptor {
        anyhow::bail!(
            "--layers picks CLIP or DINOv2 layers: use it with `--backbone clip:PATH` or \
             `dinov2:PATH`"
        );
    }
    let memory = ReferenceMemory::load(memory)?;
    let backbone = backbone.clone().with_layers(layers.map(|l| l.0.clone()));
    Ok(Detector::new(memory, backbone, k)?)
}

/// The backbone and, for CLIP or DINOv2, the layers read, for the JSON output.
fn backbone_json(detector: &Detector) -> (Value, Value) {
    let layers = detector.layers();
    let layers = if layers.is_empty() {
        Value::Null
    } else {
        json!(layers)
    };
    (json!(detector.backbone().to_string()), layers)
}

fn k_json(k: References) -> Value {
    match k {
        References::Nearest(n) => json!(n),
        References::All => json!("all"),
    }
}

pub fn run(args: &AnomalyArgs) -> anyhow::Result<ExitCode> {
    let mut detector = detector(&args.memory, &args.backbone, args.layers.as_ref(), args.k)?;
    let image = decode_rgb8(&args.image, DecodeLimits::default())?;
    let category = dataset::category_from_path(&args.image);
    // The first image of a category also pays for its threshold (leave-one-out
    // over its normals); `bench anomaly` measures the steady state.
    let start = Instant::now();
    let detection = detector.detect(&image, category.as_deref())?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if let Some(out) = &args.out_map {
        write_map_png(out, &detection, image.width(), image.height())?;
    }
    match args.format {
        TextOrJson::Json => {
            let (backbone, layers) = backbone_json(&detector);
            let mut v = json!({
                "score": detection.score,
                "threshold": detection.threshold,
                "backbone": backbone,
                "k": k_json(args.k),
                "category": detection.category,
                "regions": detection.regions,
                "ms": ms,
            });
            // Only token backbones have layers; the descriptor's output stays as it was.
            if !layers.is_null() {
                v["layers"] = layers;
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        TextOrJson::Text => {
            let verdict = if detection.score > detection.threshold {
                "anomalous"
            } else {
                "normal"
            };
            println!(
                "{}: score {:.4} against threshold {:.4} ({verdict}), category {}, {} backbone, k {}, {ms:.1} ms",
                args.image.display(),
                detection.score,
                detection.threshold,
                detection.category,
                args.backbone,
                args.k
            );
            for r in &detection.regions {
                println!(
                    "  {:<12} x {} y {} w {} h {}  score {:.4}",
                    r.grid, r.x, r.y, r.w, r.h, r.score
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_map_png(out: &Path, d: &Detection, width: u32, height: u32) -> anyhow::Result<()> {
    let full = to_image_size(&d.map, width as usize, height as usize);
    let white = if d.threshold > 0.0 {
        2.0 * d.threshold
    } else if d.score > 0.0 {
        d.score
    } else {
        1.0
    };
    let pixels: Vec<u8> = full
        .iter()
        .map(|v| (v / white * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect();
    let img = image::GrayImage::from_raw(width, height, pixels)
        .context("the map does not have the image's size")?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .context("encoding the map as PNG")?;
    echo_workbench::util::fsx::atomic_write(out, bytes.get_ref())
        .with_context(|| format!("cannot write the map to {}", out.display()))?;
    Ok(())
}

/// One category's material for the metrics.
#[derive(Default)]
struct CategoryEval {
    scores: Vec<f32>,
    labels: Vec<bool>,
    maps: Vec<(Vec<f32>, Vec<bool>, usize, usize)>,
}

pub fn eval(args: &AnomalyEvalArgs) -> anyhow::Result<ExitCode> {
    let data = MmadDataset::load(&args.dataset)?;
    let root = DatasetRoot::new(&args.root);
    let mut detector = detector(&args.memory, &args.backbone, args.layers.as_ref(), args.k)?;
    let mut by_category: IndexMap<String, CategoryEval> = IndexMap::new();
    for (key, entry) in &data.entries {
        let (ds, cat) = (dataset::dataset_of(key), dataset::category_of(key));
        let path = ImageEntry::image_file(&root, key).with_context(|| format!("entry `{key}`"))?;
        let image = decode_rgb8(&path, DecodeLimits::default())?;
        let detection = detector.detect(&image, Some(cat))?;
        let (w, h) = (image.width() as usize, image.height() as usize);
        let map = to_image_size(&detection.map, w, h);
        let mask = match entry
            .mask_file(&root, key)
            .with_context(|| format!("entry `{key}`: mask_path"))?
        {
            Some(mask_path) => metrics::read_mask(&mask_path, w, h)?,
            None => vec![false; w * h],
        };
        let e = by_category.entry(format!("{ds}/{cat}")).or_default();
        e.scores.push(detection.score);
        e.labels.push(!dataset::is_normal_key(key));
        e.maps.push((map, mask, w, h));
    }
    let mut image_auroc = IndexMap::new();
    let mut pixel_auroc = IndexMap::new();
    let mut aupro = IndexMap::new();
    for (name, e) in &by_category {
        let samples: Vec<PixelSample<'_>> = e
            .maps
            .iter()
            .map(|(map, mask, w, h)| PixelSample {
                map,
                mask,
                width: *w,
                height: *h,
            })
            .collect();
        image_auroc.insert(name.clone(), metrics::auroc(&e.scores, &e.labels));
        pixel_auroc.insert(name.clone(), metrics::pixel_auroc(&samples));
        aupro.insert(
            name.clone(),
            metrics::aupro(&samples, metrics::AUPRO_FPR_LIMIT),
        );
    }
    let table = |values: &IndexMap<String, Option<f64>>| -> Value {
        let mut out = serde_json::Map::new();
        for (k, v) in values {
            out.insert(k.clone(), json!(v));
        }
        out.insert(
            "mean".into(),
            json!(metrics::mean(values.values().flatten().copied())),
        );
        Value::Object(out)
    };
    let result = json!({
        "image_auroc": table(&image_auroc),
        "pixel_auroc": table(&pixel_auroc),
        "aupro": table(&aupro),
    });
    match args.format {
        TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&result)?),
        TextOrJson::Text => {
            let cell = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.4}"));
            println!(
                "{:<32} {:>11} {:>11} {:>8}",
                "category", "image AUROC", "pixel AUROC", "AUPRO"
            );
            let names = by_category.keys().map(String::as_str).chain(["mean"]);
            for name in names {
                println!(
                    "{:<32} {:>11} {:>11} {:>8}",
                    name,
                    cell(&result["image_auroc"][name]),
                    cell(&result["pixel_auroc"][name]),
                    cell(&result["aupro"][name])
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
