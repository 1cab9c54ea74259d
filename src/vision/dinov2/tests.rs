//! Conformance against transformers on the tiny random model of
//! `scripts/make_tiny_dinov2.py` (committed; no Python needed).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use candle_core::Device;
use serde_json::Value;

use super::*;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_dinov2")
}

fn floats(v: &Value) -> Vec<f32> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap();
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).unwrap())
        .unwrap()
}

fn load() -> Dinov2 {
    Dinov2::load(&Dinov2Source::Folder(fixture()), &Device::Cpu).unwrap()
}

/// Measured on the committed fixture: pixel values 0 (bit exact), hidden
/// states at most 6.3e-6 over every case and layer (`cargo test --lib
/// vision::dinov2 -- --nocapture` prints it).
#[test]
fn pixel_values_and_hidden_states_match_transformers() {
    let model = load();
    let reference = reference();
    let layers: Vec<usize> = reference["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(layers, [0, 1, 2, 3]);
    let (mut worst_pixels, mut worst_states) = (0f32, 0f32);
    let mut kinds = Vec::new();
    for case in reference["cases"].as_array().unwrap() {
        let kind = case["kind"].as_str().unwrap();
        kinds.push(kind.to_owned());
        let (h, w) = (
            case["height"].as_u64().unwrap() as usize,
            case["width"].as_u64().unwrap() as usize,
        );
        let expected_pixels = floats(&case["pixel_values"]);
        let pixels = match case["image"].as_str() {
            Some(file) => {
                let image = image::open(fixture().join("images").join(file))
                    .unwrap()
                    .to_rgb8();
                let ours = match kind {
                    "processor" => model.pixel_values(&image),
                    _ => model.pixel_values_stretched(&image, w as u32),
                };
                let d = max_abs_diff(&ours, &expected_pixels);
                worst_pixels = worst_pixels.max(d);
                ours
            }
            None => expected_pixels,
        };
        let states = model.hidden_states(&pixels, h, w, &layers).unwrap();
        assert_eq!(states.len(), 1);
        let expected = case["hidden_states"].as_array().unwrap();
        assert_eq!(expected.len(), layers.len());
        for (state, want) in states[0].iter().zip(expected) {
            let want = floats(want);
            assert_eq!(state.tokens.len(), (1 + (h / 14) * (w / 14)) * 32);
            let d = max_abs_diff(&state.tokens, &want);
            assert!(
                d <= 1e-4,
                "{kind} {:?} layer {}: {d}",
                case["image"],
                state.layer
            );
            worst_states = worst_states.max(d);
        }
    }
    assert_eq!(kinds.iter().filter(|k| *k == "raw").count(), 1);
    assert!(kinds.iter().any(|k| k == "stretched"));
    assert!(
        worst_pixels <= 1e-6,
        "pixel values differ by {worst_pixels}"
    );
    assert!(
        worst_states <= 1e-4,
        "hidden states differ by {worst_states}"
    );
    eprintln!("max abs diff: pixels {worst_pixels:e}, hidden states {worst_states:e}");
}

#[test]
fn batches_give_each_image_its_own_states() {
    let model = load();
    let a = vec![0.3f32; 3 * 42 * 42];
    let b: Vec<f32> = (0..3 * 42 * 42).map(|i| (i % 17) as f32 / 17.0).collect();
    let one = model.hidden_states(&b, 42, 42, &[2]).unwrap();
    let both = model
        .hidden_states(&[a.clone(), b].concat(), 42, 42, &[2, 0])
        .unwrap();
    assert_eq!(both.len(), 2);
    assert_eq!(both[1][0].layer, 2);
    assert_eq!(both[1][1].layer, 0);
    assert!(max_abs_diff(&both[1][0].tokens, &one[0][0].tokens) < 1e-5);
    assert!(max_abs_diff(&both[0][0].tokens, &one[0][0].tokens) > 1e-2);
    assert_eq!(both[0][0].patches().len(), 9 * 32);
}

#[test]
fn bad_inputs_and_files_are_refused_with_their_reason() {
    let model = load();
    let err = model
        .hidden_states(&[0.0; 3 * 40 * 42], 40, 42, &[1])
        .unwrap_err();
    assert!(err.to_string().contains("14-pixel patches"), "{err}");
    let err = model.hidden_states(&[0.0; 100], 42, 42, &[1]).unwrap_err();
    assert!(err.to_string().contains("pixel values"), "{err}");
    let err = model
        .hidden_states(&[0.0; 3 * 42 * 42], 42, 42, &[4])
        .unwrap_err();
    assert!(err.to_string().contains("layer 4"), "{err}");

    // A copy of the fixture with one file at fault at a time.
    let copy = |skip: &str| {
        let dir = tempfile::tempdir().unwrap();
        for f in source::REQUIRED_FILES {
            if f != skip {
                std::fs::copy(fixture().join(f), dir.path().join(f)).unwrap();
            }
        }
        dir
    };
    for file in source::REQUIRED_FILES {
        let dir = copy(file);
        let err = Dinov2::load(&Dinov2Source::Folder(dir.path().into()), &Device::Cpu)
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(matches!(err, Dinov2Error::MissingFile { .. }), "{text}");
        assert!(
            text.contains(file) && text.contains("hf download"),
            "{text}"
        );
    }
    // A config that does not fit the weights names the tensor and both shapes.
    let dir = copy("");
    let config = std::fs::read_to_string(fixture().join("config.json"))
        .unwrap()
        .replace("\"hidden_size\": 32", "\"hidden_size\": 48");
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let err = Dinov2::load(&Dinov2Source::Folder(dir.path().into()), &Device::Cpu)
        .err()
        .unwrap();
    assert!(matches!(err, Dinov2Error::TensorShape { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    // Weights that are not a DINOv2 checkpoint.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tiny_clip/full_p8_s40_f16/model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        fixture().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let err = Dinov2::load(&Dinov2Source::Folder(dir.path().into()), &Device::Cpu)
        .err()
        .unwrap();
    assert!(err.to_string().contains("embeddings.cls_token"), "{err}");
}

#[test]
fn hf_cache_snapshots_are_found_without_the_network() {
    // The cache layout `hf download` leaves: refs/main names the snapshot.
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--tiny--dinov2");
    let snapshot = repo.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd\n").unwrap();
    for f in source::REQUIRED_FILES {
        std::fs::copy(fixture().join(f), snapshot.join(f)).unwrap();
    }
    let found = crate::vision::clip::hf_snapshot(
        cache.path(),
        "tiny/dinov2",
        None,
        &source::REQUIRED_FILES,
    )
    .unwrap();
    assert_eq!(found, snapshot);
    let model = Dinov2::load(&Dinov2Source::Folder(found), &Device::Cpu).unwrap();
    assert_eq!(model.config().num_hidden_layers, 3);
    std::fs::remove_file(snapshot.join("preprocessor_config.json")).unwrap();
    let missing = crate::vision::clip::hf_snapshot(
        cache.path(),
        "tiny/dinov2",
        None,
        &source::REQUIRED_FILES,
    )
    .unwrap_err();
    assert!(missing.contains("preprocessor_config.json"), "{missing}");
}
