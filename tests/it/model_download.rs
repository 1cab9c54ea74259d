//! `local::download` against a fake Hugging Face hub on 127.0.0.1 that serves the
//! tiny Qwen3-VL fixture in the hub's URL layout: the repository API, `resolve`
//! with ETag / X-Repo-Commit headers and Range requests, gated access, and a
//! connection dropped halfway through the weights.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use echo_workbench::jobs::CancelToken;
use echo_workbench::local::download::{DownloadError, DownloadProgress, Hub, download};
use echo_workbench::local::{ModelDir, ModelSource};
use echo_workbench::util::error::chain;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};

const REPO: &str = "tiny-org/tiny-qwen3vl";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const WEIGHTS: &str = "model.safetensors";
const SERVED: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "processor_config.json",
    WEIGHTS,
];

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_qwen3vl")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One request the hub saw: method, path, Range header, Authorization header.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    range: Option<String>,
    auth: Option<String>,
}

struct HubState {
    files: Vec<(String, Bytes)>,
    /// When set, every request must carry `Bearer <this>`.
    token: Option<String>,
    /// The next full GET of the weights sends half of them and drops the connection.
    drop_weights_once: AtomicBool,
    /// Advertises a sha256 for the weights that is not theirs.
    wrong_sha: bool,
    seen: Mutex<Vec<Seen>>,
}

impl HubState {
    fn new() -> HubState {
        let mut files: Vec<(String, Bytes)> = SERVED
            .iter()
            .map(|name| {
                let bytes = std::fs::read(fixture().join(name)).unwrap();
                (name.to_string(), Bytes::from(bytes))
            })
            .collect();
        files.push(("README.md".into(), Bytes::from_static(b"# tiny\n")));
        HubState {
            files,
            token: None,
            drop_weights_once: AtomicBool::new(false),
            wrong_sha: false,
            seen: Mutex::new(Vec::new()),
        }
    }

    fn etag(&self, name: &str, bytes: &[u8]) -> String {
        if name.ends_with(".safetensors") {
            if self.wrong_sha {
                "f".repeat(64)
            } else {
                sha256_hex(bytes)
            }
        } else {
            // Git blob ids for small files, as the hub answers: 40 hex digits.
            sha256_hex(bytes)[..40].to_owned()
        }
    }
}

/// A body that yields its frames and then fails, which makes hyper drop the
/// connection with the declared length unmet. Before each frame after the first
/// it waits a moment, so what went before is flushed to the client first.
struct Frames {
    frames: VecDeque<Result<Frame<Bytes>, std::io::Error>>,
    waited: bool,
}

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if !self.waited {
            self.waited = true;
            let waker = cx.waker().clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(300));
                waker.wake();
            });
            return Poll::Pending;
        }
        self.waited = false;
        Poll::Ready(self.frames.pop_front())
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn error(status: StatusCode, code: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("x-error-code", code)
        .body(full(""))
        .unwrap()
}

async fn handle(
    state: Arc<HubState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let path = req.uri().path().to_owned();
    state.seen.lock().unwrap().push(Seen {
        method: req.method().clone(),
        path: path.clone(),
        range: header("range"),
        auth: header("authorization"),
    });
    if let Some(token) = &state.token
        && header("authorization") != Some(format!("Bearer {token}"))
    {
        return Ok(error(StatusCode::UNAUTHORIZED, "GatedRepo"));
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((repo, _rev)) = rest.split_once("/revision/") else {
            return Ok(error(StatusCode::NOT_FOUND, "EntryNotFound"));
        };
        if repo != REPO {
            return Ok(error(StatusCode::NOT_FOUND, "RepoNotFound"));
        }
        let siblings: Vec<serde_json::Value> = state
            .files
            .iter()
            .map(|(name, _)| serde_json::json!({ "rfilename": name }))
            .collect();
        let body = serde_json::json!({ "id": REPO, "sha": COMMIT, "siblings": siblings });
        return Ok(Response::new(full(body.to_string())));
    }
    let Some(rest) = path.strip_prefix(&format!("/{REPO}/resolve/")) else {
        return Ok(error(StatusCode::NOT_FOUND, "RepoNotFound"));
    };
    let Some((_rev, name)) = rest.split_once('/') else {
        return Ok(error(StatusCode::NOT_FOUND, "EntryNotFound"));
    };
    let Some((_, bytes)) = state.files.iter().find(|(n, _)| n == name) else {
        return Ok(error(StatusCode::NOT_FOUND, "EntryNotFound"));
    };
    let etag = state.etag(name, bytes);
    let builder = Response::builder()
        .header("x-repo-commit", COMMIT)
        .header("etag", format!("\"{etag}\""))
        .header("accept-ranges", "bytes");
    let builder = if name.ends_with(".safetensors") {
        builder
            .header("x-linked-etag", format!("\"{etag}\""))
            .header("x-linked-size", bytes.len().to_string())
    } else {
        builder
    };
    if req.method() == Method::HEAD {
        return Ok(builder
            .header("content-length", bytes.len().to_string())
            .body(full(""))
            .unwrap());
    }
    let start = header("range").and_then(|r| {
        r.strip_prefix("bytes=")?
            .strip_suffix('-')?
            .parse::<usize>()
            .ok()
    });
    if let Some(start) = start {
        if start >= bytes.len() {
            return Ok(error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RangeNotSatisfiable",
            ));
        }
        return Ok(builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(
                "content-range",
                format!("bytes {start}-{}/{}", bytes.len() - 1, bytes.len()),
            )
            .header("content-length", (bytes.len() - start).to_string())
            .body(full(bytes.slice(start..)))
            .unwrap());
    }
    if name == WEIGHTS && state.drop_weights_once.swap(false, Ordering::SeqCst) {
        let half = bytes.slice(..bytes.len() / 2);
        let frames = Frames {
            frames: VecDeque::from([
                Ok(Frame::data(half)),
                Err(std::io::Error::other("connection dropped on purpose")),
            ]),
            waited: true,
        };
        return Ok(builder
            .header("content-length", bytes.len().to_string())
            .body(frames.boxed())
            .unwrap());
    }
    Ok(builder
        .header("content-length", bytes.len().to_string())
        .body(full(bytes.clone()))
        .unwrap())
}

/// The fake hub on its own port of the test's runtime.
struct FakeHub {
    runtime: tokio::runtime::Runtime,
    state: Arc<HubState>,
    endpoint: String,
    cache: tempfile::TempDir,
}

impl FakeHub {
    fn start(state: HubState) -> FakeHub {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(state);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let served = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeHub {
            runtime,
            state,
            endpoint,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn hub(&self, token: Option<&str>) -> Hub {
        Hub {
            endpoint: self.endpoint.clone(),
            token: token.map(str::to_owned),
            cache_root: self.cache.path().join("hub"),
        }
    }

    fn fetch(
        &self,
        hub: &Hub,
        repo: &str,
    ) -> Result<
        (
            echo_workbench::local::download::Downloaded,
            Vec<DownloadProgress>,
        ),
        DownloadError,
    > {
        let reports = Mutex::new(Vec::new());
        let record = |p: &DownloadProgress| reports.lock().unwrap().push(p.clone());
        let done = download(
            self.runtime.handle(),
            hub,
            repo,
            None,
            &CancelToken::new(),
            &record,
        )?;
        Ok((done, reports.into_inner().unwrap()))
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn weights_blob(&self) -> PathBuf {
        let weights = std::fs::read(fixture().join(WEIGHTS)).unwrap();
        self.cache
            .path()
            .join("hub/models--tiny-org--tiny-qwen3vl/blobs")
            .join(sha256_hex(&weights))
    }
}

#[test]
fn a_download_lands_in_the_hf_cache_layout_and_opens_as_an_hf_source() {
    let fake = FakeHub::start(HubState::new());
    let hub = fake.hub(None);
    let (done, reports) = fake.fetch(&hub, REPO).unwrap();

    let repo_dir = fake.cache.path().join("hub/models--tiny-org--tiny-qwen3vl");
    assert_eq!(done.snapshot, repo_dir.join("snapshots").join(COMMIT));
    assert_eq!(done.commit, COMMIT);
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    assert_eq!(done.files, SERVED, "README.md is not a model file");
    assert!(!done.snapshot.join("README.md").exists());
    for name in SERVED {
        let link = done.snapshot.join(name);
        let expected = std::fs::read(fixture().join(name)).unwrap();
        assert_eq!(std::fs::read(&link).unwrap(), expected, "{name}");
        #[cfg(unix)]
        {
            let target = std::fs::read_link(&link).unwrap();
            assert!(target.starts_with("../../blobs"), "{name} -> {target:?}");
        }
    }
    assert!(
        fake.weights_blob().is_file(),
        "the weights' blob is named by its sha256"
    );
    let leftovers: Vec<_> = std::fs::read_dir(repo_dir.join("blobs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
        .collect();
    assert!(leftovers.is_empty());

    let total: u64 = SERVED
        .iter()
        .map(|n| std::fs::metadata(fixture().join(n)).unwrap().len())
        .sum();
    let last = reports.last().unwrap();
    assert_eq!((last.done, last.total), (total, total));
    assert!(
        reports
            .iter()
            .any(|p| p.file == WEIGHTS && p.file_done < p.file_total)
    );
    assert!(
        reports.windows(2).all(|w| w[0].done <= w[1].done),
        "overall progress only grows"
    );
    assert_eq!(done.fetched_bytes, total);

    let source = ModelSource::HfCache {
        repo: REPO.into(),
        revision: None,
        cache_dir: Some(hub.cache_root.clone()),
    };
    let dir = ModelDir::open(&source).unwrap();
    assert_eq!(dir.weights().unwrap(), done.snapshot.join(WEIGHTS));

    let gets_before = fake
        .seen()
        .iter()
        .filter(|s| s.method == Method::GET)
        .count();
    let (again, _) = fake.fetch(&hub, REPO).unwrap();
    assert_eq!(
        again.fetched_bytes, 0,
        "blobs already cached are not fetched again"
    );
    let gets_after = fake
        .seen()
        .iter()
        .filter(|s| s.method == Method::GET)
        .count();
    assert_eq!(
        gets_after,
        gets_before + 1,
        "only the repository listing is asked again"
    );
}

#[test]
fn a_dropped_connection_is_continued_from_the_part_file_with_a_range_request() {
    let state = HubState::new();
    state.drop_weights_once.store(true, Ordering::SeqCst);
    let fake = FakeHub::start(state);
    let (done, _) = fake.fetch(&fake.hub(None), REPO).unwrap();

    let expected = std::fs::read(fixture().join(WEIGHTS)).unwrap();
    assert_eq!(
        std::fs::read(done.snapshot.join(WEIGHTS)).unwrap(),
        expected
    );
    let weight_gets: Vec<Seen> = fake
        .seen()
        .into_iter()
        .filter(|s| s.method == Method::GET && s.path.ends_with(WEIGHTS))
        .collect();
    assert_eq!(weight_gets.len(), 2, "{weight_gets:?}");
    assert_eq!(weight_gets[0].range, None);
    let range = weight_gets[1]
        .range
        .as_deref()
        .expect("the retry sent a Range header");
    let from: u64 = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(from > 0 && from <= expected.len() as u64 / 2, "{range}");
    assert!(
        done.fetched_bytes < expected.len() as u64 * 2,
        "the first half was not fetched twice"
    );
}

#[test]
fn a_part_file_left_by_an_earlier_run_is_continued() {
    let fake = FakeHub::start(HubState::new());
    let weights = std::fs::read(fixture().join(WEIGHTS)).unwrap();
    let blob = fake.weights_blob();
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    let part = blob.with_file_name(format!(
        "{}.incomplete",
        blob.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&part, &weights[..1000]).unwrap();

    let (done, _) = fake.fetch(&fake.hub(None), REPO).unwrap();
    assert_eq!(std::fs::read(done.snapshot.join(WEIGHTS)).unwrap(), weights);
    assert!(!part.exists());
    let ranges: Vec<Option<String>> = fake
        .seen()
        .into_iter()
        .filter(|s| s.method == Method::GET && s.path.ends_with(WEIGHTS))
        .map(|s| s.range)
        .collect();
    assert_eq!(ranges, vec![Some("bytes=1000-".to_owned())]);
}

#[test]
fn weights_whose_sha256_differs_from_the_hubs_are_refused() {
    let mut state = HubState::new();
    state.wrong_sha = true;
    let fake = FakeHub::start(state);
    let err = fake.fetch(&fake.hub(None), REPO).unwrap_err();
    assert!(matches!(err, DownloadError::Checksum { .. }), "{err:?}");
    let text = chain(&err);
    assert!(
        text.contains(WEIGHTS) && text.contains(&"f".repeat(64)),
        "{text}"
    );
    let blobs = fake
        .cache
        .path()
        .join("hub/models--tiny-org--tiny-qwen3vl/blobs");
    assert!(!blobs.join("f".repeat(64)).exists());
    assert!(
        !blobs
            .join(format!("{}.incomplete", "f".repeat(64)))
            .exists()
    );
    let snapshot = fake
        .cache
        .path()
        .join("hub/models--tiny-org--tiny-qwen3vl/snapshots")
        .join(COMMIT);
    assert!(!snapshot.join(WEIGHTS).exists());
}

#[test]
fn a_missing_repository_and_a_gated_one_say_what_to_do() {
    let fake = FakeHub::start(HubState::new());
    let err = fake.fetch(&fake.hub(None), "nobody/nothing").unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, DownloadError::NotFound { .. }), "{text}");
    assert!(
        text.contains("404") && text.contains("/api/models/nobody/nothing/revision/main"),
        "{text}"
    );
    assert!(text.contains("RepoNotFound"), "{text}");

    let mut gated = HubState::new();
    gated.token = Some("secret-token".into());
    let fake = FakeHub::start(gated);
    let err = fake.fetch(&fake.hub(None), REPO).unwrap_err();
    let text = chain(&err);
    assert!(
        matches!(err, DownloadError::Unauthorized { status: 401, .. }),
        "{text}"
    );
    assert!(text.contains("HF_TOKEN") && text.contains("401"), "{text}");

    let (done, _) = fake.fetch(&fake.hub(Some("secret-token")), REPO).unwrap();
    assert!(done.snapshot.join(WEIGHTS).is_file());
    assert!(
        fake.seen()
            .iter()
            .skip(1)
            .all(|s| s.auth.as_deref() == Some("Bearer secret-token")),
        "every request of the authorised download carries the token"
    );
}

#[test]
fn a_cancelled_download_stops_and_names_itself() {
    let fake = FakeHub::start(HubState::new());
    let cancel = CancelToken::new();
    cancel.cancel();
    let err = download(
        fake.runtime.handle(),
        &fake.hub(None),
        REPO,
        None,
        &cancel,
        &|_: &DownloadProgress| {},
    )
    .unwrap_err();
    assert!(matches!(err, DownloadError::Cancelled), "{err:?}");
    assert!(fake.seen().is_empty(), "nothing was asked once cancelled");
}

#[test]
fn model_download_and_model_check_from_the_command_line() {
    let fake = FakeHub::start(HubState::new());
    let cache = fake.cache.path().join("hub");
    let spec = format!("hf:{REPO}");
    let out = crate::common::bin()
        .args(["model", "download", &spec])
        .env("HF_ENDPOINT", &fake.endpoint)
        .env("HF_HUB_CACHE", &cache)
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("use it as local:hf:{REPO}")),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("100.0%"));

    let out = crate::common::bin()
        .args([
            "model",
            "check",
            &format!("local:{spec}"),
            "--dtype",
            "bf16",
        ])
        .env("HF_HUB_CACHE", &cache)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for line in [
        "found config",
        "found tokenizer",
        "found template",
        "found weights",
        "memory needed: at most",
        "in bf16 x 1.3",
    ] {
        assert!(stdout.contains(line), "{line} in {stdout}");
    }

    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture().join("config.json"),
        empty.path().join("config.json"),
    )
    .unwrap();
    let out = crate::common::bin()
        .args(["model", "check"])
        .arg(format!("local:{}", empty.path().display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("found config"), "{stdout}");
    assert!(stdout.contains("missing: tokenizer.json"), "{stdout}");
    assert!(stdout.contains("missing: model.safetensors"), "{stdout}");

    let out = crate::common::bin()
        .args(["model", "download", "local:some/folder"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a hub name"));
}
