//! How close the batch runner comes to the throughput an endpoint allows.
//!
//! An endpoint that answers in a fixed `latency` with `c` requests in flight serves
//! at most `c / latency` questions per second; the runner's job is to keep it at
//! that bound. The benchmark runs generated MMAD-style questions (1024 x 1024 PNG
//! queries, each sent with a template image, as MMAD's 1-shot protocol does)
//! through [`crate::runs::runner::run`] against the in-process mock server, and reports
//! the achieved rate as a fraction of the bound, per concurrency.
//!
//! CPU: `getrusage(RUSAGE_SELF)` counts the whole process, mock server included.
//! The mock runs on threads of its own, all named `mock-mllm...`; their CPU time is
//! read from `/proc/self/task/*/stat` (Linux) and subtracted, which leaves the
//! runner's share (its runtime threads, the calling thread, the HTTP client).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::mllm::EndpointConfig;
use crate::mllm::mock::{MockConfig, MockServer};
use crate::runs::runner::{RunControl, RunError, RunEvent, RunSpec, TemplateSource, run};

/// Questions asked about each generated image (MMAD averages about 4.7).
const QUESTIONS_PER_IMAGE: usize = 5;
/// Normal images the queries use as templates.
const TEMPLATES: usize = 8;

#[derive(Debug, Clone)]
pub struct RunnerBenchOptions {
    pub latency_ms: u64,
    pub concurrency: Vec<usize>,
    /// Questions per level = concurrency x waves: the bound is reached only if
    /// every wave leaves at once, so start-up and the last wave are part of the cost.
    pub waves: usize,
    /// Side of the generated square images.
    pub size: u32,
    /// Where the dataset is generated (default: a temporary folder, removed after).
    pub dir: Option<PathBuf>,
}

impl Default for RunnerBenchOptions {
    fn default() -> Self {
        RunnerBenchOptions {
            latency_ms: 200,
            concurrency: vec![8, 32, 128],
            waves: 10,
            size: 1024,
            dir: None,
        }
    }
}

/// An image with smooth shading and fine sensor-like noise (so PNG cannot shrink
/// it to nothing), different for every `seed`.
fn bench_image(size: u32, seed: u64) -> image::RgbImage {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 61) as u8
    };
    let (cx, cy) = (
        size as f32 * (0.35 + 0.3 * ((seed % 7) as f32 / 7.0)),
        size as f32 * (0.35 + 0.3 * ((seed % 5) as f32 / 5.0)),
    );
    let r = size as f32 * 0.3;
    image::RgbImage::from_fn(size, size, |x, y| {
        let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
        let n = noise();
        let shade = (x + y) as f32 / (2 * size) as f32 * 40.0;
        if d < r {
            image::Rgb([
                150 + shade as u8 + n,
                140 + shade as u8 + n,
                120 + n + (seed % 16) as u8,
            ])
        } else {
            image::Rgb([40 + shade as u8 + n, 42 + shade as u8 + n, 48 + n])
        }
    })
}

/// Writes `images` query images with five MMAD-style questions each, plus template
/// images, and the mmad.json listing them. Returns the mmad.json path.
pub fn write_bench_dataset(dir: &Path, images: usize, size: u32) -> std::io::Result<PathBuf> {
    use rayon::prelude::*;
    let train = dir.join("Bench/part/train/good");
    std::fs::create_dir_all(&train)?;
    (0..TEMPLATES).into_par_iter().try_for_each(|t| {
        bench_image(size, 1_000_000 + t as u64)
            .save(train.join(format!("{t:03}.png")))
            .map_err(std::io::Error::other)
    })?;
    let key = |i: usize| {
        let folder = if i.is_multiple_of(3) { "good" } else { "crack" };
        format!("Bench/part/test/{folder}/{i:04}.png")
    };
    (0..images).into_par_iter().try_for_each(|i| {
        let path = dir.join(key(i));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        bench_image(size, i as u64)
            .save(path)
            .map_err(std::io::Error::other)
    })?;
    write_bench_mmad(dir, images)
}

/// The mmad.json of [`write_bench_dataset`] alone (`images` entries of five
/// questions each), for measurements that never open the images.
pub fn write_bench_mmad(dir: &Path, images: usize) -> std::io::Result<PathBuf> {
    let key = |i: usize| {
        let folder = if i.is_multiple_of(3) { "good" } else { "crack" };
        format!("Bench/part/test/{folder}/{i:04}.png")
    };
    let question = |text: &str, answer: &str, options: &[&str], kind: &str| {
        let options: serde_json::Map<String, Value> = options
            .iter()
            .enumerate()
            .map(|(i, o)| (((b'A' + i as u8) as char).to_string(), json!(o)))
            .collect();
        json!({"Question": text, "Answer": answer, "Options": options, "type": kind, "annotation": true})
    };
    let mut entries = serde_json::Map::new();
    for i in 0..images {
        let k = key(i);
        let template = format!("Bench/part/train/good/{:03}.png", i % TEMPLATES);
        let conversation = vec![
            question(
                "Is there any defect in the object?",
                if i.is_multiple_of(3) { "B" } else { "A" },
                &["Yes.", "No."],
                "Anomaly Detection",
            ),
            question(
                "What kind of defect is shown?",
                "A",
                &["Crack.", "Stain.", "Scratch.", "Hole."],
                "Defect Classification",
            ),
            question(
                "Where is the defect?",
                "C",
                &["Top left.", "Bottom right.", "Centre.", "Edge."],
                "Defect Localization",
            ),
            question(
                "What does the defect look like?",
                "B",
                &["A round dent.", "A thin dark line.", "A bright spot."],
                "Defect Description",
            ),
            question(
                "What effect does the defect have?",
                "A",
                &["It weakens the part.", "None.", "It improves grip."],
                "Defect Analysis",
            ),
        ];
        debug_assert_eq!(conversation.len(), QUESTIONS_PER_IMAGE);
        entries.insert(
            k.clone(),
            json!({
                "image_path": k.splitn(3, '/').nth(2).unwrap_or_default(),
                "conversation": conversation,
                "mask_path": "",
                "similar_templates": [template],
                "random_templates": [template],
            }),
        );
    }
    let mmad = dir.join("mmad.json");
    std::fs::write(&mmad, serde_json::to_vec_pretty(&Value::Object(entries))?)?;
    Ok(mmad)
}

/// User plus system CPU time of the whole process.
#[cfg(unix)]
fn process_cpu() -> Option<Duration> {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Some(tv(usage.ru_utime) + tv(usage.ru_stime))
}

#[cfg(not(unix))]
fn process_cpu() -> Option<Duration> {
    None
}

/// CPU time of this process's threads whose name starts with `prefix`.
#[cfg(target_os = "linux")]
fn threads_cpu(prefix: &str) -> Option<Duration> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return None;
    }
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: comm may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // Fields 14 and 15 of stat(5) (utime, stime); the slice starts at field 3.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        total += utime + stime;
    }
    Some(Duration::from_secs_f64(total as f64 / ticks as f64))
}

#[cfg(not(target_os = "linux"))]
fn threads_cpu(_prefix: &str) -> Option<Duration> {
    None
}

fn ms_per(d: Option<Duration>, n: usize) -> Value {
    d.map_or(Value::Null, |d| {
        json!(d.as_secs_f64() * 1000.0 / n.max(1) as f64)
    })
}

/// The reference the runner is measured against on the same machine, in the same
/// run: a client that does nothing per question but send. It posts one prepared
/// request body (the same two images as base64 data URLs, the same text) `questions`
/// times with `concurrency` requests open, through the same HTTP stack, to the same
/// mock. What the runner achieves below this is its own cost; what this achieves
/// below the bound is the machine's (moving the bytes, the mock's parsing).
fn floor_client(
    url: &str,
    body: bytes::Bytes,
    concurrency: usize,
    questions: usize,
    rt: &tokio::runtime::Handle,
) -> Result<(Duration, Option<Duration>, Option<Duration>), String> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .map_err(|e| e.to_string())?;
    let chat = format!("{url}/chat/completions");
    rt.block_on(async move {
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
        let cpu0 = (process_cpu(), threads_cpu("mock-mllm"));
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..questions {
            let permit = gate
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            let (client, chat, body) = (client.clone(), chat.clone(), body.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let reply = client
                    .post(&chat)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                reply.error_for_status()?.bytes().await.map(drop)
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        let wall = start.elapsed();
        let total = cpu0.0.zip(process_cpu()).map(|(a, b)| b.saturating_sub(a));
        let mock = cpu0
            .1
            .zip(threads_cpu("mock-mllm"))
            .map(|(a, b)| b.saturating_sub(a));
        Ok((
            wall,
            total.zip(mock).map(|(t, m)| t.saturating_sub(m)),
            mock,
        ))
    })
}

/// One request as the runner sends it for MMAD's 1-shot protocol: the template and
/// the query as data URLs, then the question.
fn floor_body(dir: &Path) -> std::io::Result<bytes::Bytes> {
    use base64::Engine as _;
    let url = |path: PathBuf| -> std::io::Result<String> {
        let bytes = crate::vision::decode::read_image_file(
            &path,
            crate::vision::DecodeLimits::default().max_file_bytes,
        )
        .map_err(std::io::Error::other)?;
        Ok(format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    };
    let template = url(dir.join("Bench/part/train/good/000.png"))?;
    let query = url(dir.join("Bench/part/test/crack/0001.png"))?;
    let body = json!({
        "model": "mock-vl",
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": template}},
            {"type": "image_url", "image_url": {"url": query}},
            {"type": "text", "text": "Here is a normal sample, then the query. What kind of defect is shown?\nA. Crack.\nB. Stain.\nC. Scratch.\nD. Hole.\nAnswer with the option's letter."},
        ]}],
        "max_tokens": 128,
        "temperature": 0.0,
    });
    Ok(serde_json::to_vec(&body)
        .map_err(std::io::Error::other)?
        .into())
}

/// Runs every concurrency level and returns the figures as JSON.
pub fn bench_runner(
    opts: &RunnerBenchOptions,
    runtime: &tokio::runtime::Handle,
) -> Result<Value, RunError> {
    let io = |source: std::io::Error| RunError::DatasetRead {
        path: opts
            .dir
            .clone()
            .unwrap_or_else(|| "(temporary folder)".into()),
        source,
    };
    let tmp = tempfile::tempdir().map_err(io)?;
    let dir = opts.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let max_questions = opts.concurrency.iter().max().copied().unwrap_or(1) * opts.waves.max(1);
    let images = max_questions.div_ceil(QUESTIONS_PER_IMAGE);
    let generated = Instant::now();
    let mmad = write_bench_dataset(&dir, images, opts.size).map_err(io)?;
    let generate_s = generated.elapsed().as_secs_f64();
    let png_bytes: u64 = (0..images.min(16))
        .filter_map(|i| {
            let folder = if i.is_multiple_of(3) { "good" } else { "crack" };
            std::fs::metadata(dir.join(format!("Bench/part/test/{folder}/{i:04}.png"))).ok()
        })
        .map(|m| m.len())
        .sum::<u64>()
        / images.clamp(1, 16) as u64;

    let latency = Duration::from_millis(opts.latency_ms);
    let server = MockServer::start(MockConfig {
        latency,
        record_limit: 0,
        decode_images: false,
        ..MockConfig::default()
    })
    .map_err(io)?;
    let floor_request = floor_body(&dir).map_err(io)?;
    let mut levels = Vec::new();
    for &c in &opts.concurrency {
        let questions = c.saturating_mul(opts.waves.max(1));
        let endpoint = EndpointConfig {
            name: "mock".into(),
            base_url: server.url(),
            model: "mock-vl".into(),
            max_in_flight: c,
            timeout_s: 60.0,
            ..EndpointConfig::default()
        };
        let mut spec = RunSpec::new(&mmad, &dir, vec![endpoint], dir.join(format!("run-c{c}")));
        spec.pipeline.preset = "mmad".into();
        spec.template = TemplateSource::Similar;
        spec.selection.limit = Some(questions);
        // The clock starts once the folder is prepared (dataset read, context set up).
        let started = Mutex::new(None);
        let events = |e: RunEvent| {
            if matches!(e, RunEvent::Started { .. }) {
                *started.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), process_cpu(), threads_cpu("mock-mllm")));
            }
        };
        let summary = run(&spec, &events, &RunControl::new(), runtime)?;
        let end = (Instant::now(), process_cpu(), threads_cpu("mock-mllm"));
        let Some((t0, cpu0, mock0)) = started.into_inner().unwrap_or_else(|p| p.into_inner())
        else {
            continue;
        };
        let wall = end.0 - t0;
        let total_cpu = cpu0.zip(end.1).map(|(a, b)| b.saturating_sub(a));
        let mock_cpu = mock0.zip(end.2).map(|(a, b)| b.saturating_sub(a));
        let runner_cpu = total_cpu.zip(mock_cpu).map(|(t, m)| t.saturating_sub(m));
        let achieved = summary.written as f64 / wall.as_secs_f64();
        let bound = c as f64 / latency.as_secs_f64().max(1e-9);
        let floor = floor_client(&server.url(), floor_request.clone(), c, questions, runtime)
            .map_err(|e| io(std::io::Error::other(format!("reference client: {e}"))))?;
        let floor_rate = questions as f64 / floor.0.as_secs_f64();
        levels.push(json!({
            "concurrency": c,
            "questions": summary.written,
            "errors": summary.errors,
            "wall_s": wall.as_secs_f64(),
            "questions_per_s": achieved,
            "bound_questions_per_s": bound,
            "ratio": achieved / bound,
            "cpu_ms_per_question": {
                "process": ms_per(total_cpu, summary.written),
                "mock_server": ms_per(mock_cpu, summary.written),
                "runner": ms_per(runner_cpu, summary.written),
            },
            "reference_client": {
                "questions_per_s": floor_rate,
                "ratio_to_bound": floor_rate / bound,
                "cpu_ms_per_question": {
                    "client": ms_per(floor.1, questions),
                    "mock_server": ms_per(floor.2, questions),
                },
            },
            "runner_vs_reference_client": achieved / floor_rate,
        }));
    }
    drop(server);
    Ok(json!({
        "latency_ms": opts.latency_ms,
        "image": {"width": opts.size, "height": opts.size, "format": "png", "mean_bytes": png_bytes},
        "images_per_request": 2,
        "questions_per_image": QUESTIONS_PER_IMAGE,
        "dataset_generation_s": generate_s,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "levels": levels,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_bench_answers_every_question_and_measures_cpu() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let out = bench_runner(
            &RunnerBenchOptions {
                latency_ms: 20,
                concurrency: vec![4],
                waves: 3,
                size: 64,
                dir: None,
            },
            runtime.handle(),
        )
        .unwrap();
        let level = &out["levels"][0];
        assert_eq!(level["questions"], 12);
        assert_eq!(level["errors"], 0);
        let ratio = level["ratio"].as_f64().unwrap();
        assert!(ratio > 0.0 && ratio <= 1.05, "{ratio}");
        let reference = level["reference_client"]["ratio_to_bound"]
            .as_f64()
            .unwrap();
        assert!(reference > 0.0 && reference <= 1.05, "{reference}");
        if cfg!(target_os = "linux") {
            let cpu = &level["cpu_ms_per_question"];
            assert!(cpu["process"].as_f64().unwrap() >= cpu["runner"].as_f64().unwrap());
        }
    }
}
