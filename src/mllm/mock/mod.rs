//! A real, scriptable OpenAI-compatible server on 127.0.0.1, for tests, benchmarks
//! and demos without a GPU.
//!
//! It checks every request the way a strict server would (JSON body, `model`,
//! message structure, every image a data URL whose base64 decodes to an image in
//! the format it declares), answers with a pluggable [`Responder`], and can be told
//! to misbehave ([`FaultPlan`]): server errors, rate limits, garbage, empty answers,
//! requests that hang, connections that drop. It runs on its own runtime thread, so
//! it works the same from synchronous code, async tests and the CLI.
//!
//! Built on hyper directly rather than axum: hyper is already in the dependency tree
//! (reqwest), and faults such as dropping a connection mid-request need the
//! connection-level control a router framework hides.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Request bodies above this are refused with 413 (vLLM's own default is far larger;
/// this only guards the mock's memory).
const MAX_BODY_BYTES: usize = 256 << 20;

mod check;
mod faults;
mod responder;

use check::check_chat;
pub use faults::{Fault, FaultPlan};
pub use responder::*;
#[cfg(test)]
use {check::check_data_url, responder::first_option_letter};

/// How a [`MockServer`] behaves.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// 0 picks a free port.
    pub port: u16,
    /// Added before answering every valid chat request.
    pub latency: Duration,
    /// What `GET /v1/models` lists.
    pub models: Vec<String>,
    /// More images than this in one request get vLLM's 400 refusal.
    pub max_images: Option<usize>,
    pub faults: FaultPlan,
    pub responder: Responder,
    /// When set, requests without `Authorization: Bearer <this>` get 401 (echoing the
    /// key received, as some hosted APIs do, to test that clients redact it).
    pub require_api_key: Option<String>,
    /// Answer 404 (vLLM's wording) when `model` is not in `models`; off by default so
    /// demos work with any configured model name.
    pub reject_unknown_model: bool,
    /// Most recent requests kept for [`MockServer::recorded`] (bodies include images).
    pub record_limit: usize,
    /// Decode every image in full, as a strict server would. Off, only the declared
    /// type is checked against the image's first bytes: a benchmark then measures
    /// the client rather than the mock's image decoder.
    pub decode_images: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            port: 0,
            latency: Duration::ZERO,
            models: vec!["mock-vl".into()],
            max_images: None,
            faults: FaultPlan::none(),
            responder: Responder::first_option(),
            require_api_key: None,
            reject_unknown_model: false,
            record_limit: 1000,
            decode_images: true,
        }
    }
}

/// One request as the mock saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    /// The Content-Length header, when the request had one (a chunked one has not).
    pub content_length: Option<u64>,
    /// The body, when it was JSON.
    pub body: Option<Value>,
    /// The status sent; `None` while pending, or when the connection was dropped.
    pub status: Option<u16>,
    /// The fault applied to a chat request, if any.
    pub fault: Option<Fault>,
}

struct State {
    cfg: MockConfig,
    records: Mutex<VecDeque<RecordedRequest>>,
    seq: AtomicU64,
    chats: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    rng: Mutex<fastrand::Rng>,
    shutdown: watch::Receiver<bool>,
}

impl State {
    fn records(&self) -> std::sync::MutexGuard<'_, VecDeque<RecordedRequest>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, r: RecordedRequest) {
        if self.cfg.record_limit == 0 {
            return;
        }
        let mut records = self.records();
        if records.len() >= self.cfg.record_limit {
            records.pop_front();
        }
        records.push_back(r);
    }

    fn finish(&self, seq: u64, status: Option<u16>, fault: Option<Fault>) {
        let mut records = self.records();
        if let Some(r) = records.iter_mut().rev().find(|r| r.seq == seq) {
            r.status = status;
            r.fault = fault;
        }
    }
}

/// Counts a chat request as in flight while alive, whatever way it ends.
struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    fn enter(state: &'a State) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.peak.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Makes hyper close the connection without a response.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mock: connection dropped on purpose")
    }
}

impl std::error::Error for DropConnection {}

/// A running mock server; stops when [`MockServer::stop`] is called or it is dropped.
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("url", &self.url())
            .field("responder", &self.state.cfg.responder)
            .finish()
    }
}

impl MockServer {
    /// Binds 127.0.0.1:`port` and starts serving on a runtime thread of its own.
    pub fn start(config: MockConfig) -> std::io::Result<MockServer> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", config.port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mock-mllm")
            .enable_all()
            .build()?;
        let (tx, rx) = watch::channel(false);
        let seed = config.faults.seed;
        let state = Arc::new(State {
            cfg: config,
            records: Mutex::new(VecDeque::new()),
            seq: AtomicU64::new(0),
            chats: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            shutdown: rx.clone(),
        });
        let served = state.clone();
        let thread = std::thread::Builder::new()
            .name("mock-mllm-server".into())
            .spawn(move || {
                runtime.block_on(serve(listener, served, rx));
                // Hung requests and idle keep-alive connections are simply dropped.
                runtime.shutdown_timeout(Duration::from_millis(500));
            })?;
        Ok(MockServer {
            addr,
            state,
            shutdown: tx,
            thread: Some(thread),
        })
    }

    /// The API root, `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bodies of the recorded requests that had a JSON body, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.state
            .records()
            .iter()
            .filter_map(|r| r.body.clone())
            .collect()
    }

    /// Every recorded request (up to `record_limit`, the most recent).
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.state.records().iter().cloned().collect()
    }

    /// Valid chat requests received so far (faulted ones included).
    pub fn chat_count(&self) -> usize {
        self.state.chats.load(Ordering::SeqCst)
    }

    /// The most chat requests that were being handled at the same moment.
    pub fn peak_in_flight(&self) -> usize {
        self.state.peak.load(Ordering::SeqCst)
    }

    /// Stops accepting, drops open connections (hung requests included) and waits
    /// for the server thread. Idempotent.
    pub fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("mock server cannot listen: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!("mock server accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

type Reply = Response<Full<Bytes>>;

fn json_reply(status: StatusCode, body: &Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// An error in vLLM's shape.
fn error_reply(status: StatusCode, message: &str) -> Reply {
    let kind = match status.as_u16() {
        400 => "BadRequestError",
        401 => "AuthenticationError",
        404 => "NotFoundError",
        429 => "RateLimitError",
        500..=599 => "InternalServerError",
        _ => "Error",
    };
    json_reply(
        status,
        &json!({"object": "error", "message": message, "type": kind, "param": null, "code": status.as_u16()}),
    )
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Reply, DropConnection> {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let authorization = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let content_length = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let seq = state.seq.fetch_add(1, Ordering::SeqCst);
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_big = e.is::<http_body_util::LengthLimitError>();
            state.record(RecordedRequest {
                seq,
                method: method.to_string(),
                path: path.clone(),
                authorization,
                content_length,
                body: None,
                status: None,
                fault: None,
            });
            if too_big {
                state.finish(seq, Some(413), None);
                return Ok(error_reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("request body above {} MiB", MAX_BODY_BYTES >> 20),
                ));
            }
            return Err(DropConnection);
        }
    };
    state.record(RecordedRequest {
        seq,
        method: method.to_string(),
        path: path.clone(),
        authorization: authorization.clone(),
        content_length,
        body: serde_json::from_slice(&body).ok(),
        status: None,
        fault: None,
    });

    let outcome = route(
        &state,
        &method,
        &path,
        authorization.as_deref(),
        content_type.as_deref(),
        body,
    )
    .await;
    let (status, fault) = match &outcome {
        Ok((reply, fault)) => (Some(reply.status().as_u16()), fault.clone()),
        Err(_) => (None, Some(Fault::Drop)),
    };
    state.finish(seq, status, fault.filter(|f| *f != Fault::Pass));
    tracing::info!(
        target: "echo_workbench::mock",
        "{method} {path} -> {} in {} ms",
        status.map_or_else(|| "dropped".to_string(), |s| s.to_string()),
        start.elapsed().as_millis()
    );
    outcome.map(|(reply, _)| reply)
}

async fn route(
    state: &Arc<State>,
    method: &Method,
    path: &str,
    authorization: Option<&str>,
    content_type: Option<&str>,
    body: Bytes,
) -> Result<(Reply, Option<Fault>), DropConnection> {
    let path = path.trim_end_matches('/');
    if let Some(key) = &state.cfg.require_api_key
        && path != "/health"
    {
        let expected = format!("Bearer {key}");
        if authorization != Some(expected.as_str()) {
            let got = authorization
                .and_then(|a| a.strip_prefix("Bearer "))
                .unwrap_or("(none)");
            return Ok((
                error_reply(
                    StatusCode::UNAUTHORIZED,
                    &format!("Incorrect API key provided: {got}"),
                ),
                None,
            ));
        }
    }
    match (method, path) {
        (&Method::GET, "/health") => Ok((json_reply(StatusCode::OK, &json!({})), None)),
        (&Method::GET, "/v1/models") => {
            let data: Vec<Value> = state
                .cfg
                .models
                .iter()
                .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "mock"}))
                .collect();
            Ok((
                json_reply(StatusCode::OK, &json!({"object": "list", "data": data})),
                None,
            ))
        }
        (&Method::POST, "/v1/chat/completions") => chat(state, content_type, body).await,
        (_, "/health" | "/v1/models" | "/v1/chat/completions") => Ok((
            error_reply(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{method} is not allowed on {path}"),
            ),
            None,
        )),
        _ => Ok((
            json_reply(StatusCode::NOT_FOUND, &json!({"detail": "Not Found"})),
            None,
        )),
    }
}

async fn chat(
    state: &Arc<State>,
    content_type: Option<&str>,
    body: Bytes,
) -> Result<(Reply, Option<Fault>), DropConnection> {
    if let Some(ct) = content_type
        && !ct.starts_with("application/json")
    {
        return Ok((
            error_reply(
                StatusCode::BAD_REQUEST,
                &format!("Content-Type must be application/json, not {ct}"),
            ),
            None,
        ));
    }
    let checker = state.clone();
    let checked = match tokio::task::spawn_blocking(move || check_chat(&checker.cfg, &body)).await {
        Ok(Ok(c)) => c,
        Ok(Err((status, msg))) => return Ok((error_reply(status, &msg), None)),
        Err(e) => {
            return Ok((
                error_reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("mock: checking the request failed: {e}"),
                ),
                None,
            ));
        }
    };
    let n = state.chats.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight::enter(state);
    let fault = state.cfg.faults.pick(n, &state.rng);
    if !state.cfg.latency.is_zero() {
        tokio::time::sleep(state.cfg.latency).await;
    }
    let completion = |content: &str| {
        let created = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let prompt_tokens = checked.prompt_chars / 4 + 256 * checked.images;
        let completion_tokens = content.len().div_ceil(4);
        let mut v = json!({
            "id": format!("chatcmpl-mock-{n}"),
            "object": "chat.completion",
            "created": created,
            "model": checked.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens
            }
        });
        if let Some(logprobs) = checked.logprobs.as_ref().filter(|_| !content.is_empty()) {
            v["choices"][0]["logprobs"] = logprobs.clone();
        }
        v
    };
    let reply = match &fault {
        Fault::Pass => json_reply(StatusCode::OK, &completion(&checked.answer)),
        Fault::EmptyContent => json_reply(StatusCode::OK, &completion("")),
        Fault::Http500 => error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "mock: internal server error (scripted fault)",
        ),
        Fault::Http429 { retry_after_s } => {
            let mut r = error_reply(
                StatusCode::TOO_MANY_REQUESTS,
                "mock: too many requests (scripted fault)",
            );
            if let Some(s) = retry_after_s {
                r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(*s));
            }
            r
        }
        Fault::Status(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error_reply(status, &format!("mock: HTTP {code} (scripted fault)"))
        }
        Fault::Garbage => {
            let mut r = Response::new(Full::new(Bytes::from_static(
                b"<html><body><h1>mock gateway</h1> this is not JSON</body></html>",
            )));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
            r
        }
        Fault::Hang => {
            let mut shutdown = state.shutdown.clone();
            let _ = shutdown.wait_for(|stop| *stop).await;
            return Err(DropConnection);
        }
        Fault::Drop => return Err(DropConnection),
    };
    Ok((reply, Some(fault)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn option_letters_are_found() {
        assert_eq!(
            first_option_letter("Question?\nB. yes\nA. no").as_deref(),
            Some("B")
        );
        assert_eq!(first_option_letter("  (C) maybe").as_deref(), Some("C"));
        assert_eq!(first_option_letter("D: fourth").as_deref(), Some("D"));
        assert_eq!(first_option_letter("Answer the question"), None);
    }

    #[test]
    fn oracle_prefers_image_match_then_majority() {
        let e = |q: &str, a: &str, h: Option<&str>| OracleEntry {
            question: q.into(),
            options: vec!["Yes".into(), "No".into()],
            answer: a.into(),
            answer_text: None,
            image_sha256: h.map(str::to_string),
        };
        let oracle = Oracle::new(vec![
            e("Is there any defect?", "A", Some("h1")),
            e("Is there any defect?", "B", Some("h2")),
            e("Is there any defect?", "B", Some("h3")),
            e("Is there any defect in the object?", "A", None),
        ]);
        let prompt = "Is there any defect?\nA: Yes\nB: No";
        assert_eq!(oracle.answer(prompt, &["h1".into()]).as_deref(), Some("A"));
        assert_eq!(oracle.answer(prompt, &[]).as_deref(), Some("B"));
        let longer = "Is there any defect in the object?\nA: Yes\nB: No";
        assert_eq!(oracle.answer(longer, &["h2".into()]).as_deref(), Some("A"));
        assert_eq!(oracle.answer("Something else", &[]), None);
    }

    #[test]
    fn fault_plans() {
        let rng = Mutex::new(fastrand::Rng::with_seed(1));
        let plan = FaultPlan::script([Fault::Http500, Fault::Garbage]);
        assert_eq!(plan.pick(0, &rng), Fault::Http500);
        assert_eq!(plan.pick(1, &rng), Fault::Garbage);
        assert_eq!(plan.pick(2, &rng), Fault::Pass);
        assert_eq!(FaultPlan::always(Fault::Hang).pick(7, &rng), Fault::Hang);
        let plan = FaultPlan::random(vec![(Fault::Http500, 0.3)], 42);
        let fails = (0..1000)
            .filter(|&n| plan.pick(n, &rng) == Fault::Http500)
            .count();
        assert!((200..400).contains(&fails), "{fails}");
    }

    #[test]
    fn data_urls_are_checked() {
        assert!(
            check_data_url("http://example.com/a.png", true)
                .unwrap_err()
                .contains("data URL")
        );
        assert!(
            check_data_url("data:image/png;base64,@@@", true)
                .unwrap_err()
                .contains("base64")
        );
        assert!(
            check_data_url("data:text/plain;base64,aGk=", true)
                .unwrap_err()
                .contains("not an image type")
        );
        let mut png = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(image::RgbImage::new(2, 2))
            .write_to(&mut png, image::ImageFormat::Png)
            .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(png.into_inner());
        assert!(check_data_url(&format!("data:image/png;base64,{b64}"), true).is_ok());
        assert!(
            check_data_url(&format!("data:image/jpeg;base64,{b64}"), true)
                .unwrap_err()
                .contains("holds image/png")
        );
        // Without decoding, the signature still has to match, but a damaged body passes.
        let mut big = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(32, 32, |x, y| {
            image::Rgb([(x * 7 + y * 13) as u8, (x * y) as u8, (x ^ y) as u8])
        }))
        .write_to(&mut big, image::ImageFormat::Png)
        .unwrap();
        let big = base64::engine::general_purpose::STANDARD.encode(big.into_inner());
        let cut = &big[..big.len() / 8 * 4];
        assert!(cut.len() > 64);
        assert!(check_data_url(&format!("data:image/png;base64,{cut}"), true).is_err());
        assert!(check_data_url(&format!("data:image/png;base64,{cut}"), false).is_ok());
        assert!(check_data_url(&format!("data:image/jpeg;base64,{b64}"), false).is_err());
    }
}
