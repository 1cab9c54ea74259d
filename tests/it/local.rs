//! The local Qwen3-VL backend's inputs against transformers: prompts, token ids,
//! pixel values and grids of `tests/fixtures/tiny_qwen3vl/reference.json`,
//! written by `scripts/make_tiny_qwen3vl.py` from a tiny model folder with its
//! own tokenizer and chat template.

use std::path::{Path, PathBuf};

use base64::Engine;
use echo_workbench::jobs::CancelToken;
use echo_workbench::local::image_processor::smart_resize;
use echo_workbench::local::{
    LocalError, LocalModel, ModelDir, ModelSource, Processor, SamplingOptions, StopReason,
};
use echo_workbench::util::error::chain;
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_qwen3vl")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn processor() -> Processor {
    Processor::load(&ModelSource::Folder(fixture())).unwrap()
}

fn f32s(b64: &str) -> Vec<f32> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn images_of(case: &Value) -> Vec<image::RgbImage> {
    case["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            image::open(fixture().join(p.as_str().unwrap()))
                .unwrap()
                .to_rgb8()
        })
        .collect()
}

#[test]
fn every_case_equals_transformers() {
    let processor = processor();
    let reference = reference();
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    let mut with_images = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let images = images_of(case);
        let inputs = processor
            .prepare(&images, case["text"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{name}: {}", chain(&e)));
        assert_eq!(
            inputs.prompt,
            case["prompt"].as_str().unwrap(),
            "{name}: prompt"
        );
        let ids: Vec<u32> = case["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(inputs.input_ids, ids, "{name}: input_ids");
        if images.is_empty() {
            assert!(inputs.pixel_values.is_empty() && inputs.image_grid_thw.is_empty());
            continue;
        }
        with_images += 1;
        let grids: Vec<[u32; 3]> = case["image_grid_thw"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let g: Vec<u32> = g
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect();
                [g[0], g[1], g[2]]
            })
            .collect();
        assert_eq!(inputs.image_grid_thw, grids, "{name}: image_grid_thw");
        let pv = &case["pixel_values"];
        let shape: Vec<usize> = pv["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(
            [
                inputs.pixel_values.len() / inputs.patch_dim,
                inputs.patch_dim
            ],
            [shape[0], shape[1]],
            "{name}: pixel_values shape"
        );
        let expected = f32s(pv["f32le_base64"].as_str().unwrap());
        assert_eq!(expected.len(), inputs.pixel_values.len());
        let (worst, at) = inputs
            .pixel_values
            .iter()
            .zip(&expected)
            .enumerate()
            .map(|(i, (a, b))| ((a - b).abs(), i))
            .fold((0f32, 0), |acc, x| if x.0 > acc.0 { x } else { acc });
        assert!(
            worst <= 1e-6,
            "{name}: pixel value {at} differs by {worst} ({} vs {})",
            inputs.pixel_values[at],
            expected[at]
        );
    }
    assert!(with_images >= 6);
}

#[test]
fn smart_resize_equals_transformers() {
    let reference = reference();
    let cases = reference["smart_resize"].as_array().unwrap();
    assert!(cases.len() > 50);
    for case in cases {
        let n = |k: &str| case[k].as_u64().unwrap();
        let got = smart_resize(
            n("height") as u32,
            n("width") as u32,
            n("factor") as u32,
            n("min_pixels"),
            n("max_pixels"),
        );
        match case.get("resized") {
            Some(r) => {
                let want = (r[0].as_u64().unwrap() as u32, r[1].as_u64().unwrap() as u32);
                assert_eq!(got, Ok(want), "{case}");
            }
            None => assert!(
                got.is_err(),
                "{case}: transformers refused, we gave {got:?}"
            ),
        }
    }
}

#[test]
fn the_fixture_was_made_with_its_own_template_and_image_settings() {
    let processor = processor();
    // Not Qwen's wording: a port that hard-codes Qwen's template cannot pass.
    assert!(processor.template.source.contains("Inspector's answer"));
    assert!(processor.dir.template_file.ends_with("chat_template.jinja"));
    assert!(
        processor
            .dir
            .processor_file
            .ends_with("processor_config.json")
    );
    assert_eq!(processor.image_config.patch_size, 8);
    assert_eq!(processor.image_config.merge_size, 2);
}

fn copy_fixture_without(skip: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if entry.path().is_file() && !skip.contains(&name.as_str()) {
            std::fs::copy(entry.path(), dir.path().join(&name)).unwrap();
        }
    }
    dir
}

#[test]
fn template_and_settings_are_found_in_released_layouts() {
    // Released checkpoints: chat_template.json and preprocessor_config.json.
    let dir = copy_fixture_without(&["chat_template.jinja", "processor_config.json"]);
    let src = std::fs::read_to_string(fixture().join("chat_template.jinja")).unwrap();
    std::fs::write(
        dir.path().join("chat_template.json"),
        serde_json::json!({ "chat_template": src }).to_string(),
    )
    .unwrap();
    let nested: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture().join("processor_config.json")).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("preprocessor_config.json"),
        nested["image_processor"].to_string(),
    )
    .unwrap();
    let released = Processor::load(&ModelSource::Folder(dir.path().to_path_buf())).unwrap();
    let original = processor();
    assert_eq!(released.template.source, original.template.source);
    assert_eq!(released.image_config, original.image_config);
    assert!(released.dir.template_file.ends_with("chat_template.json"));

    // Older folders: the template inside tokenizer_config.json.
    std::fs::remove_file(dir.path().join("chat_template.json")).unwrap();
    let mut tok_cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    tok_cfg["chat_template"] = Value::String(src.clone());
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        tok_cfg.to_string(),
    )
    .unwrap();
    let old = Processor::load(&ModelSource::Folder(dir.path().to_path_buf())).unwrap();
    assert_eq!(old.template.source, src);
    assert!(old.dir.template_file.ends_with("tokenizer_config.json"));
}

#[test]
fn incomplete_folders_name_the_missing_files_and_the_repo() {
    let copy = copy_fixture_without(&["model.safetensors"]);
    let dir = copy_fixture_without(&[
        "tokenizer.json",
        "chat_template.jinja",
        "processor_config.json",
    ]);
    let err = Processor::load(&ModelSource::Folder(dir.path().to_path_buf())).unwrap_err();
    let text = chain(&err);
    match &err {
        LocalError::MissingFiles { missing, repo, .. } => {
            assert_eq!(missing.len(), 3, "{text}");
            assert_eq!(repo, "Qwen/Qwen3-VL-2B-Instruct");
        }
        other => panic!("{other:?}"),
    }
    for needle in [
        "tokenizer.json",
        "chat_template.jinja",
        "preprocessor_config.json",
        "hf download Qwen/Qwen3-VL-2B-Instruct",
    ] {
        assert!(text.contains(needle), "{needle} not in: {text}");
    }

    // Weights are checked apart from the inputs, and named with the repo when absent.
    let dir = ModelDir::open(&ModelSource::Folder(fixture())).unwrap();
    assert_eq!(dir.weights().unwrap(), fixture().join("model.safetensors"));
    let copy_dir = ModelDir::open(&ModelSource::Folder(copy.path().to_path_buf())).unwrap();
    let text = chain(&copy_dir.weights().unwrap_err());
    assert!(
        text.contains("model.safetensors") && text.contains("hf download"),
        "{text}"
    );

    let missing = tempfile::tempdir().unwrap().path().join("nowhere");
    let err = Processor::load(&ModelSource::Folder(missing.clone())).unwrap_err();
    assert!(matches!(err, LocalError::NoFolder { .. }), "{err:?}");

    let cache = tempfile::tempdir().unwrap();
    let source = ModelSource::HfCache {
        repo: "Qwen/Qwen3-VL-2B-Instruct".into(),
        revision: None,
        cache_dir: Some(cache.path().to_path_buf()),
    };
    let text = chain(&Processor::load(&source).unwrap_err());
    assert!(text.contains("Qwen/Qwen3-VL-2B-Instruct"), "{text}");
    assert!(
        text.contains("models--Qwen--Qwen3-VL-2B-Instruct"),
        "{text}"
    );
}

#[test]
fn a_cached_snapshot_loads_and_names_its_repo_when_incomplete() {
    let cache = tempfile::tempdir().unwrap();
    let repo_dir = cache.path().join("models--acme--tiny-vl");
    let snapshot = repo_dir.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs").join("main"), "0123abcd\n").unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), snapshot.join(entry.file_name())).unwrap();
        }
    }
    let source = ModelSource::HfCache {
        repo: "acme/tiny-vl".into(),
        revision: None,
        cache_dir: Some(cache.path().to_path_buf()),
    };
    let loaded = Processor::load(&source).unwrap();
    assert_eq!(loaded.dir.folder, snapshot);
    let inputs = loaded.prepare(&[], "hello").unwrap();
    assert_eq!(
        inputs.input_ids,
        processor().prepare(&[], "hello").unwrap().input_ids
    );

    std::fs::remove_file(snapshot.join("tokenizer.json")).unwrap();
    let text = chain(&Processor::load(&source).unwrap_err());
    assert!(
        text.contains("tokenizer.json") && text.contains("hf download acme/tiny-vl"),
        "{text}"
    );
}

#[test]
fn parses_endpoint_specs() {
    assert_eq!(
        ModelSource::parse("hf:Qwen/Qwen3-VL-2B-Instruct@abc"),
        ModelSource::HfCache {
            repo: "Qwen/Qwen3-VL-2B-Instruct".into(),
            revision: Some("abc".into()),
            cache_dir: None
        }
    );
    assert_eq!(
        ModelSource::parse("models/qwen"),
        ModelSource::Folder(PathBuf::from("models/qwen"))
    );
}

#[test]
fn a_template_with_the_wrong_number_of_placeholders_is_an_error() {
    let dir = copy_fixture_without(&["chat_template.jinja"]);
    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "{{ messages[0].content[-1].text }}<|image_pad|>",
    )
    .unwrap();
    let p = Processor::load(&ModelSource::Folder(dir.path().to_path_buf())).unwrap();
    let err = p.prepare(&[], "x").unwrap_err();
    assert!(
        matches!(
            err,
            LocalError::ImageCount {
                placeholders: 1,
                images: 0,
                ..
            }
        ),
        "{err:?}"
    );
}

fn generate_reference() -> Value {
    let text = std::fs::read_to_string(fixture().join("generate_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn load_model() -> LocalModel {
    LocalModel::load(
        &ModelSource::Folder(fixture()),
        None,
        &candle_core::Device::Cpu,
    )
    .unwrap_or_else(|e| panic!("{}", chain(&e)))
}

/// Prompt ids, greedy tokens and the first position's logits of every case
/// (text only, one, two and three images, tiny, large, wide and tall ones) of
/// the model in `folder` against transformers' `generate(do_sample=False)`.
fn greedy_generation_equals_transformers_in(folder: &Path) {
    let text = std::fs::read_to_string(folder.join("generate_reference.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let images_from = folder.with_file_name(reference["images_from"].as_str().unwrap());
    let max_tokens = reference["max_new_tokens"].as_u64().unwrap() as usize;
    let mut model = LocalModel::load(
        &ModelSource::Folder(folder.to_path_buf()),
        None,
        &candle_core::Device::Cpu,
    )
    .unwrap_or_else(|e| panic!("{}", chain(&e)));
    let options = SamplingOptions {
        max_tokens,
        ..SamplingOptions::default()
    };
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    let mut worst = 0f32;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let images: Vec<image::RgbImage> = case["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                image::open(images_from.join(p.as_str().unwrap()))
                    .unwrap()
                    .to_rgb8()
            })
            .collect();
        let mut streamed = Vec::new();
        let reply = model
            .reply(
                &images,
                case["text"].as_str().unwrap(),
                &options,
                &CancelToken::new(),
                |t| streamed.push(t),
            )
            .unwrap_or_else(|e| panic!("{name}: {}", chain(&e)));
        assert_eq!(
            reply.prompt_tokens,
            ids(&case["prompt_tokens"]),
            "{name}: prompt"
        );
        let expected = f32s(case["first_logits"]["f32le_base64"].as_str().unwrap());
        let got = &reply.generation.first_logits;
        assert_eq!(got.len(), expected.len(), "{name}: vocabulary");
        let diff = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("{}/{name}: max abs logits diff {diff:e}", folder.display());
        worst = worst.max(diff);
        // The issue asks for 1e-4; this port is at ~3e-7, and a swap of the
        // height and width rotary axes moves these logits by ~1e-5, so the
        // bound is set where such a mistake cannot hide.
        assert!(diff <= 5e-6, "{name}: logits differ by {diff}");
        assert_eq!(
            reply.generation.tokens,
            ids(&case["tokens"]),
            "{name}: tokens"
        );
        assert_eq!(streamed, reply.generation.tokens, "{name}: streamed");
        assert_eq!(
            reply.text,
            case["text_out"].as_str().unwrap(),
            "{name}: text"
        );
    }
    eprintln!("worst max abs logits diff {worst:e}");
}

#[test]
fn greedy_generation_equals_transformers() {
    greedy_generation_equals_transformers_in(&fixture());
}

/// The second tiny model: tied embeddings, no grouped key/value heads, M-RoPE
/// sections [4, 2, 2] and one deepstack block.
#[test]
fn greedy_generation_equals_transformers_tied_variant() {
    greedy_generation_equals_transformers_in(&fixture().with_file_name("tiny_qwen3vl_tied"));
}

/// Weights asked for in bfloat16 (`--dtype bf16`) against transformers'
/// model loaded with `dtype=torch.bfloat16` (`generate_reference_bf16.json`):
/// the same prompts, logits that round where transformers' round, and the
/// same greedy reply up to the first near tie.
#[test]
fn bf16_generation_follows_transformers_in_bf16() {
    let text = std::fs::read_to_string(fixture().join("generate_reference_bf16.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reference["dtype"], "bfloat16");
    let f32_reference = generate_reference();
    let mut model = LocalModel::load(
        &ModelSource::Folder(fixture()),
        Some(candle_core::DType::BF16),
        &candle_core::Device::Cpu,
    )
    .unwrap_or_else(|e| panic!("{}", chain(&e)));
    let options = SamplingOptions {
        max_tokens: reference["max_new_tokens"].as_u64().unwrap() as usize,
        ..SamplingOptions::default()
    };
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    let (mut worst, mut bf16_vs_f32, mut same_tokens) = (0f32, 0f32, 0usize);
    let (mut equal, mut logits) = (0usize, 0usize);
    let cases = reference["cases"].as_array().unwrap();
    for (case, f32_case) in cases.iter().zip(f32_reference["cases"].as_array().unwrap()) {
        let name = case["name"].as_str().unwrap();
        let reply = model
            .reply(
                &images_of(case),
                case["text"].as_str().unwrap(),
                &options,
                &CancelToken::new(),
                |_| {},
            )
            .unwrap_or_else(|e| panic!("{name}: {}", chain(&e)));
        assert_eq!(reply.prompt_tokens, ids(&case["prompt_tokens"]), "{name}");
        let theirs = f32s(case["first_logits"]["f32le_base64"].as_str().unwrap());
        let theirs_f32 = f32s(f32_case["first_logits"]["f32le_base64"].as_str().unwrap());
        let ours = &reply.generation.first_logits;
        let diff = max_diff(ours, &theirs);
        for (&a, &b) in ours.iter().zip(&theirs) {
            if a == b {
                equal += 1;
            }
            logits += 1;
        }
        let rounding = max_diff(&theirs, &theirs_f32);
        eprintln!(
            "{name}: bf16 logits vs transformers bf16 {diff:e}, transformers bf16 vs f32 {rounding:e}"
        );
        worst = worst.max(diff);
        bf16_vs_f32 = bf16_vs_f32.max(rounding);
        let expected = ids(&case["tokens"]);
        let agree = reply
            .generation
            .tokens
            .iter()
            .zip(&expected)
            .take_while(|(a, b)| a == b)
            .count();
        same_tokens += agree;
        // The first token comes from the compared logits; after it, one
        // bfloat16 rounding apart can tip a near tie of a random model.
        assert!(
            agree >= 1,
            "{name}: first token {:?} vs {expected:?}",
            reply.generation.tokens
        );
    }
    let total: usize = cases
        .iter()
        .map(|c| c["tokens"].as_array().unwrap().len())
        .sum();
    eprintln!(
        "worst {worst:e} (transformers bf16 vs f32: {bf16_vs_f32:e}); {equal} of {logits} \
         logits equal; {same_tokens} of {total} greedy tokens agree"
    );
    // Measured: worst 7.8e-3 against transformers' own bf16-vs-f32 distance of
    // 5.3e-3, 1,148 of 3,360 logits bit-equal (sums in another order round
    // apart), 189 of 192 tokens. Rounding the attention scores or the norm
    // otherwise than PyTorch gave 1.7e-2 (3.1x) and 128 tokens.
    assert!(worst <= 2.0 * bf16_vs_f32, "bf16 logits differ by {worst}");
    assert!(
        same_tokens * 10 >= total * 9,
        "{same_tokens} of {total} tokens agree"
    );
}

#[test]
fn decoding_stops_at_end_of_turn_limit_and_cancel_and_samples_by_seed() {
    let reference = generate_reference();
    let case = &reference["cases"][1];
    let greedy = ids(&case["tokens"]);
    let text = case["text"].as_str().unwrap();
    let images = images_of(case);
    let mut model = load_model();
    assert_eq!(model.stop, vec![2], "generation_config.json's eos_token_id");
    let run = |model: &mut LocalModel, options: &SamplingOptions, cancel_after: Option<usize>| {
        let cancel = CancelToken::new();
        let mut seen = 0;
        model
            .reply(&images, text, options, &cancel, |_| {
                seen += 1;
                if Some(seen) == cancel_after {
                    cancel.cancel();
                }
            })
            .unwrap()
            .generation
    };
    let limited = SamplingOptions {
        max_tokens: 3,
        ..SamplingOptions::default()
    };
    let g = run(&mut model, &limited, None);
    assert_eq!(
        (g.tokens.as_slice(), g.stop),
        (&greedy[..3], StopReason::MaxTokens)
    );

    let long = SamplingOptions {
        max_tokens: 50,
        ..SamplingOptions::default()
    };
    let g = run(&mut model, &long, Some(4));
    assert_eq!(
        (g.tokens.as_slice(), g.stop),
        (&greedy[..4], StopReason::Cancelled)
    );

    // The fifth greedy token as the end of the turn: decoding stops there, keeping it.
    model.stop = vec![greedy[4]];
    let first = greedy.iter().position(|&t| t == greedy[4]).unwrap();
    let g = run(&mut model, &long, None);
    assert_eq!(
        (g.tokens.as_slice(), g.stop),
        (&greedy[..=first], StopReason::EndOfTurn)
    );
    model.stop = vec![2];

    let sampled = |model: &mut LocalModel, seed| {
        let options = SamplingOptions {
            max_tokens: 12,
            temperature: Some(1.0),
            top_p: Some(0.95),
            seed,
        };
        run(model, &options, None).tokens
    };
    let a = sampled(&mut model, 7);
    assert_eq!(a, sampled(&mut model, 7), "same seed, same tokens");
    assert_ne!(a, sampled(&mut model, 8), "another seed, other tokens");
    assert_ne!(a, greedy[..a.len()], "sampling is not greedy");
}

/// Stop during a prefill takes effect before the next vision block or text
/// layer, wherever it comes, and the next prefill starts clean.
#[test]
fn a_prefill_stops_within_one_layer_and_the_next_starts_clean() {
    use std::cell::Cell;
    let reference = generate_reference();
    let case = &reference["cases"][1];
    let mut model = load_model();
    let inputs = model
        .processor
        .prepare(&images_of(case), case["text"].as_str().unwrap())
        .unwrap();
    assert!(!inputs.image_grid_thw.is_empty());
    let asked = Cell::new(0usize);
    let count = || {
        asked.set(asked.get() + 1);
        false
    };
    let whole = model.model.prefill(&inputs, &count).unwrap().unwrap();
    let checks = asked.get();
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap())
            .unwrap();
    let blocks = config["vision_config"]["depth"].as_u64().unwrap() as usize;
    let layers = config["text_config"]["num_hidden_layers"].as_u64().unwrap() as usize;
    assert_eq!(
        checks,
        blocks + layers,
        "asked once before every block and layer"
    );
    for stop_at in [1, 2, blocks + 1, checks] {
        asked.set(0);
        let stop = || {
            asked.set(asked.get() + 1);
            asked.get() >= stop_at
        };
        assert_eq!(
            model.model.prefill(&inputs, &stop).unwrap(),
            None,
            "{stop_at}"
        );
        assert_eq!(asked.get(), stop_at, "no layer runs after the stop");
        let again = model.model.prefill(&inputs, &|| false).unwrap().unwrap();
        assert_eq!(again, whole, "a stopped prefill leaves nothing behind");
        assert_eq!(model.model.cached(), inputs.input_ids.len());
    }
}

/// `generate --format json` prints transformers' ids for the two-image case,
/// its text, and a time for each phase; a folder without weights is named.
#[test]
fn generate_command_prints_transformers_ids() {
    let reference = generate_reference();
    let case = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "two_images")
        .unwrap();
    let mut cmd = crate::common::bin();
    cmd.arg("generate")
        .arg("--model")
        .arg(format!("local:{}", fixture().display()));
    for image in case["images"].as_array().unwrap() {
        cmd.arg("--image")
            .arg(fixture().join(image.as_str().unwrap()));
    }
    let out = cmd
        .args(["--prompt", case["text"].as_str().unwrap()])
        .args(["--max-tokens", &reference["max_new_tokens"].to_string()])
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["prompt_tokens"], case["prompt_tokens"]);
    assert_eq!(printed["tokens"], case["tokens"]);
    assert_eq!(printed["text"], case["text_out"]);
    for phase in ["load", "prefill", "decode"] {
        assert!(printed["ms"][phase].as_f64().unwrap() > 0.0, "{phase}");
    }

    let bare = copy_fixture_without(&["model.safetensors"]);
    let out = crate::common::bin()
        .args(["generate", "--prompt", "x", "--model"])
        .arg(format!("local:{}", bare.path().display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model.safetensors"), "{err}");
}

/// Ctrl-C during `generate` stops before the next token (or layer), still
/// prints what was made, says so and exits 130.
#[test]
fn ctrl_c_stops_generate_and_prints_what_it_made() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let case = &generate_reference()["cases"][1];
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("echo-workbench"));
    cmd.arg("generate")
        .arg("--model")
        .arg(format!("local:{}", fixture().display()));
    for image in case["images"].as_array().unwrap() {
        cmd.arg("--image")
            .arg(fixture().join(image.as_str().unwrap()));
    }
    // A random model rarely ends its turn: without the stop this runs for hours.
    let mut child = cmd
        .args(["--prompt", case["text"].as_str().unwrap()])
        .args(["--max-tokens", "100000000", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("loaded ") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "exited before loading"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{rest}");
    assert!(rest.contains("stopped by Ctrl-C after"), "{rest}");
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["stop"], "cancelled");
    assert_eq!(printed["prompt_tokens"], case["prompt_tokens"]);
    let made = ids(&printed["tokens"]);
    let greedy = ids(&case["tokens"]);
    let same = made.len().min(greedy.len());
    assert_eq!(
        made[..same],
        greedy[..same],
        "what was made is the greedy reply"
    );
}

/// `inspect --endpoint local:DIR` answers through the whole Echo pipeline with
/// the model in-process: the Decision Maker's request carries both images and
/// the reply's usage is the model's own token count.
#[test]
fn inspect_answers_with_a_local_model() {
    let home = tempfile::tempdir().unwrap();
    let out = crate::common::bin()
        .env("ECHO_WORKBENCH_HOME", home.path())
        .arg("inspect")
        .arg(crate::common::repo(
            "assets/sample/Sample/washer/test/scratch/000.png",
        ))
        .args(["--question", "What kind of defect does the washer have?"])
        .arg("--endpoint")
        .arg(format!("local:{}", fixture().display()))
        .args(["--max-tokens", "6", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let decision = v["experts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "decision_maker")
        .unwrap();
    let output = &decision["output"];
    let summary = &output["request_summary"];
    assert_eq!(summary["model"], format!("local:{}", fixture().display()));
    let images: Vec<&Value> = summary["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "image")
        .collect();
    assert_eq!(images.len(), 2, "reference and query image");
    assert!(images.iter().all(|p| p["width"].as_u64().unwrap() > 0));
    assert_eq!(
        output["finish_reason"], "length",
        "6 tokens of a random model"
    );
    assert!(summary["prompt_tokens"].as_u64().unwrap() > 100);
    assert!(v["answer"]["letter"].is_string(), "{v}");
}

/// A sharded checkpoint (an index naming its shards) loads like one file; a
/// missing shard is named, with the repository to fetch it from.
#[test]
fn sharded_weights_load_and_a_missing_shard_is_named() {
    let dir = copy_fixture_without(&["model.safetensors"]);
    let shard = "model-00001-of-00001.safetensors";
    std::fs::copy(fixture().join("model.safetensors"), dir.path().join(shard)).unwrap();
    let index = serde_json::json!({
        "metadata": {},
        "weight_map": {
            "lm_head.weight": shard,
            "model.language_model.norm.weight": shard,
        }
    });
    let index_path = dir.path().join("model.safetensors.index.json");
    std::fs::write(&index_path, index.to_string()).unwrap();
    let reference = generate_reference();
    let case = &reference["cases"][0];
    let mut model = LocalModel::load(
        &ModelSource::Folder(dir.path().to_path_buf()),
        None,
        &candle_core::Device::Cpu,
    )
    .unwrap_or_else(|e| panic!("{}", chain(&e)));
    let options = SamplingOptions {
        max_tokens: 5,
        ..SamplingOptions::default()
    };
    let reply = model
        .reply(
            &[],
            case["text"].as_str().unwrap(),
            &options,
            &CancelToken::new(),
            |_| {},
        )
        .unwrap();
    assert_eq!(reply.generation.tokens, ids(&case["tokens"])[..5]);

    std::fs::remove_file(dir.path().join(shard)).unwrap();
    let err = LocalModel::load(
        &ModelSource::Folder(dir.path().to_path_buf()),
        None,
        &candle_core::Device::Cpu,
    )
    .err()
    .unwrap();
    let text = chain(&err);
    assert!(matches!(err, LocalError::MissingFiles { .. }), "{text}");
    assert!(text.contains(shard) && text.contains("Qwen/"), "{text}");
}

/// Weights that do not fit the config are named, with both shapes.
#[test]
fn a_weight_of_the_wrong_shape_is_named() {
    let dir = copy_fixture_without(&["config.json"]);
    let config = std::fs::read_to_string(fixture().join("config.json")).unwrap();
    let config = config.replace(
        "\"intermediate_size\": 64,\n    \"model_type\": \"qwen3_vl_vision\"",
        "\"intermediate_size\": 65,\n    \"model_type\": \"qwen3_vl_vision\"",
    );
    assert!(
        config.contains("65"),
        "the vision tower's width was changed"
    );
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let err = LocalModel::load(
        &ModelSource::Folder(dir.path().to_path_buf()),
        None,
        &candle_core::Device::Cpu,
    )
    .err()
    .unwrap();
    let text = chain(&err);
    assert!(text.contains("linear_fc1.weight"), "{text}");
    assert!(
        text.contains("[64, 32]") && text.contains("[65, 32]"),
        "{text}"
    );
}

/// `run --endpoint local:DIR` answers a batch through the Echo pipeline with the
/// model in-process: one question at a time, every record with its tokens, the
/// manifest naming the model folder's hash; a resume continues, and a resume with
/// other model files is refused.
#[test]
fn run_answers_a_batch_with_a_local_model_and_records_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
        }
    }
    let out = dir.path().join("run");
    let run = |limit: &str| {
        crate::common::bin()
            .env("ECHO_WORKBENCH_HOME", dir.path())
            .arg("run")
            .arg("--dataset")
            .arg(crate::common::repo("assets/sample/mmad.json"))
            .arg("--knowledge")
            .arg(crate::common::repo("assets/sample/domain_knowledge.json"))
            .arg("--endpoint")
            .arg(format!("local:{}", model.display()))
            .args(["--model", "tiny-qwen3vl", "--types", "AD", "--limit", limit])
            .args(["--concurrency", "4", "--max-tokens", "4", "--resume"])
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let first = run("2");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let endpoint = &manifest["endpoints"][0];
    assert_eq!(
        endpoint["concurrency"], 1,
        "one question at a time: {endpoint}"
    );
    let sha = endpoint["model_sha256"].as_str().unwrap();
    assert_eq!(
        sha,
        echo_workbench::local::folder_sha256(&model).unwrap(),
        "the folder's files, hashed"
    );
    let journal = std::fs::read_to_string(out.join("journal.jsonl")).unwrap();
    let records: Vec<Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["attempts"], 1);
        assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() > 100, "{r}");
        assert!(
            r["usage"]["completion_tokens"].as_u64().unwrap() <= 4,
            "{r}"
        );
    }

    // Other weights under the same folder: the resume is refused, naming them.
    let config = model.join("config.json");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push('\n');
    std::fs::write(&config, text).unwrap();
    let refused = run("3");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("local model files"), "{err}");
}

/// The local backend tells a sink the reply so far while it is generated (the
/// app's Decision Maker card): each text extends the one before, the last is the
/// reply's beginning, and the handle counts its one call and its tokens.
#[test]
fn the_local_backend_streams_the_reply_as_it_is_generated() {
    use echo_workbench::echo::backend::ChatBackend;
    use echo_workbench::echo::local_backend::LocalBackend;
    use echo_workbench::mllm::ChatRequest;
    use std::sync::{Arc, Mutex};

    let model = LocalModel::load(
        &ModelSource::Folder(fixture()),
        None,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let options = SamplingOptions {
        max_tokens: 12,
        ..SamplingOptions::default()
    };
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink_seen = seen.clone();
    let backend = LocalBackend::new(model, "local:tiny", options)
        .recount()
        .streaming(Arc::new(move |text: &str| {
            sink_seen.lock().unwrap().push(text.to_owned())
        }));
    let request = ChatRequest::new()
        .image(crate::common::repo(
            "assets/sample/Sample/washer/test/scratch/000.png",
        ))
        .text("Is there a defect? Answer Yes or No.");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reply = runtime
        .block_on(backend.chat(&request, &CancelToken::new()))
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "nothing streamed for {:?}", reply.text);
    for pair in seen.windows(2) {
        assert!(pair[1].starts_with(&pair[0]), "{pair:?}");
    }
    assert!(
        reply.text.starts_with(seen.last().unwrap().as_str()),
        "{:?} then {:?}",
        seen,
        reply.text
    );
    assert_eq!(backend.attempts(), 1);
    let usage = backend.usage().unwrap();
    assert_eq!(Some(usage), reply.usage, "one call: its own tokens");
    assert!(usage.prompt_tokens > 20, "{usage:?}");
    assert!(usage.completion_tokens >= 1 && usage.completion_tokens <= 12);
}
