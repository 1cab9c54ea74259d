//! A fake Hugging Face hub on 127.0.0.1 serving the tiny Qwen3-VL fixture in the
//! hub's URL layout: the repository API, `resolve` with ETag / X-Repo-Commit
//! headers and Range requests, gated access, a connection dropped halfway
//! through the weights, and a wrong sha256 on request.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use echo_workbench::jobs::CancelToken;
use echo_workbench::local::download::{DownloadError, DownloadProgress, Downloaded, Hub, download};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};

pub const REPO: &str = "tiny-org/tiny-qwen3vl";
/// The name [`REPO`] had before it was renamed.
pub const OLD_REPO: &str = "old-org/old-name";
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
pub const WEIGHTS: &str = "model.safetensors";
pub const SERVED: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "processor_config.json",
    WEIGHTS,
];

pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_qwen3vl")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One request the hub saw: method, path, Range header, Authorization header.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub range: Option<String>,
    pub auth: Option<String>,
}

pub struct HubState {
    pub files: Vec<(String, Bytes)>,
    /// When set, every request must carry `Bearer <this>`.
    pub token: Option<String>,
    /// The next full GET of the weights sends half of them and drops the connection.
    pub drop_weights_once: AtomicBool,
    /// The next full GET of the weights sends half of them and then stalls.
    pub stall_weights_once: AtomicBool,
    /// Advertises a sha256 for the weights that is not theirs.
    pub wrong_sha: bool,
    pub seen: Mutex<Vec<Seen>>,
}

impl HubState {
    pub fn new() -> HubState {
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
            stall_weights_once: AtomicBool::new(false),
            wrong_sha: false,
            seen: Mutex::new(Vec::new()),
        }
    }

    pub fn etag(&self, name: &str, bytes: &[u8]) -> String {
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
pub struct Frames {
    frames: VecDeque<Result<Frame<Bytes>, std::io::Error>>,
    waited: bool,
    /// Once the frames are sent, send nothing more and keep the connection open.
    hang: bool,
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
        match self.frames.pop_front() {
            None if self.hang => Poll::Pending,
            next => Poll::Ready(next),
        }
    }
}

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn error(status: StatusCode, code: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("x-error-code", code)
        .body(full(""))
        .unwrap()
}

pub async fn handle(
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
    // A renamed repository: the hub answers its old name with a relative redirect.
    for prefix in ["/api/models/", "/"] {
        if let Some(rest) = path.strip_prefix(&format!("{prefix}{OLD_REPO}/")) {
            return Ok(Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header("location", format!("{prefix}{REPO}/{rest}"))
                .body(full(""))
                .unwrap());
        }
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
            hang: false,
        };
        return Ok(builder
            .header("content-length", bytes.len().to_string())
            .body(frames.boxed())
            .unwrap());
    }
    if name == WEIGHTS && state.stall_weights_once.swap(false, Ordering::SeqCst) {
        let frames = Frames {
            frames: VecDeque::from([Ok(Frame::data(bytes.slice(..bytes.len() / 2)))]),
            waited: true,
            hang: true,
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
pub struct FakeHub {
    pub runtime: tokio::runtime::Runtime,
    pub state: Arc<HubState>,
    pub endpoint: String,
    pub cache: tempfile::TempDir,
}

impl FakeHub {
    pub fn start(state: HubState) -> FakeHub {
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

    pub fn hub(&self, token: Option<&str>) -> Hub {
        Hub {
            endpoint: self.endpoint.clone(),
            token: token.map(str::to_owned),
            cache_root: self.cache.path().join("hub"),
        }
    }

    pub fn fetch(
        &self,
        hub: &Hub,
        repo: &str,
    ) -> Result<(Downloaded, Vec<DownloadProgress>), DownloadError> {
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

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn weights_blob(&self) -> PathBuf {
        let weights = std::fs::read(fixture().join(WEIGHTS)).unwrap();
        self.cache
            .path()
            .join("hub/models--tiny-org--tiny-qwen3vl/blobs")
            .join(sha256_hex(&weights))
    }
}
