//! The client for one OpenAI-compatible endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use hyper::body::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use super::body::RequestBody;
use super::encode::{EncodeSettings, EncodedImage, ImageCache, ImageCacheStats};
use super::error::image_limit_from_body;
use super::retry::{backoff_delay, parse_retry_after};
use super::{ChatReply, ChatRequest, Decoding, EndpointConfig, MllmError, Part, Usage};
use crate::jobs::CancelToken;

/// Encoded images kept per client (all clones share it). MMAD's reference images
/// are a few hundred kB each as base64, so this holds several hundred of them.
const IMAGE_CACHE_BYTES: usize = 256 << 20;
/// A reply larger than this is not a chat completion we asked for.
const MAX_REPLY_BYTES: usize = 16 << 20;
/// How often a waiting request looks at its cancel token.
const CANCEL_POLL: Duration = Duration::from_millis(20);
/// Characters of a reply body quoted in errors.
const BODY_HEAD_CHARS: usize = 200;

/// A client for one endpoint. Cloning is cheap and clones share the concurrency
/// limit, the connection pool and the image cache.
#[derive(Clone)]
pub struct MllmClient {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: EndpointConfig,
    http: reqwest::Client,
    chat_url: Url,
    models_url: Url,
    /// The URLs as shown in messages: without any user:password part.
    chat_shown: String,
    models_shown: String,
    base_shown: String,
    timeout: Duration,
    slots: Semaphore,
    cache: ImageCache,
}

impl std::fmt::Debug for MllmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MllmClient")
            .field("name", &self.inner.cfg.name)
            .field("base_url", &self.inner.base_shown)
            .field("model", &self.inner.cfg.model)
            .field("api_key_env", &self.inner.cfg.api_key_env)
            .field("in_flight", &self.in_flight())
            .field("max_in_flight", &self.inner.cfg.max_in_flight)
            .finish()
    }
}

/// What [`MllmClient::probe`] found out about an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The endpoint answered a two-image chat request.
    pub ok: bool,
    /// What `GET {base}/models` listed (empty when that failed).
    pub models: Vec<String>,
    /// The configured model is among `models`.
    pub model_listed: bool,
    pub two_images_ok: bool,
    /// Wall time of the whole probe.
    pub latency_ms: u64,
    /// One sentence for the user: what works, or what to change.
    pub message: String,
    /// The model's reply to the two-image request, when there was one.
    pub reply: Option<String>,
    /// The tokens the server reported for that request: the floor of what a
    /// question costs here (two small images), when nothing better is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::mllm::Usage>,
}

/// A failed attempt and what the server said about trying again.
struct Failure {
    error: MllmError,
    retry_after: Option<Duration>,
}

impl From<MllmError> for Failure {
    fn from(error: MllmError) -> Self {
        Failure {
            error,
            retry_after: None,
        }
    }
}

/// One part of the user message as the client sends it: the public [`Part`]s, plus
/// in-memory images for the probe.
enum Source<'a> {
    Text(&'a str),
    File(&'a std::path::Path),
    /// Not cached: such images have no stable identity.
    Bytes {
        name: &'a str,
        bytes: Arc<[u8]>,
    },
}

/// The useful part of a chat completion.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParsedReply {
    pub text: String,
    pub reasoning: Option<String>,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    pub logprobs: Option<Vec<super::TokenLogprob>>,
}

impl MllmClient {
    /// Checks the settings and prepares the HTTP client; nothing is sent yet.
    pub fn new(cfg: EndpointConfig) -> Result<Self, MllmError> {
        let config = |msg: String| MllmError::Config { msg };
        let base = cfg.base_url.trim().trim_end_matches('/');
        let base_url = Url::parse(base).map_err(|e| {
            config(format!(
                "endpoint `{}`: base_url `{}` is not a URL ({e}); expected something like http://localhost:8000/v1",
                cfg.name,
                super::url_without_secrets(base)
            ))
        })?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(config(format!(
                "endpoint `{}`: base_url must start with http:// or https://, not `{}:`",
                cfg.name,
                base_url.scheme()
            )));
        }
        if cfg.model.trim().is_empty() {
            return Err(config(format!("endpoint `{}` has no model name", cfg.name)));
        }
        if !(cfg.timeout_s.is_finite() && cfg.timeout_s > 0.0) {
            return Err(config(format!(
                "endpoint `{}`: timeout_s must be a positive number of seconds, not {}",
                cfg.name, cfg.timeout_s
            )));
        }
        if !(1..=super::MAX_IN_FLIGHT).contains(&cfg.max_in_flight) {
            return Err(config(format!(
                "endpoint `{}`: max_in_flight must be between 1 and {}, not {}",
                cfg.name,
                super::MAX_IN_FLIGHT,
                cfg.max_in_flight
            )));
        }
        if let Some(q) = cfg.jpeg_quality
            && !(1..=100).contains(&q)
        {
            return Err(config(format!(
                "endpoint `{}`: jpeg_quality must be between 1 and 100, not {q}",
                cfg.name
            )));
        }
        for reserved in ["model", "messages"] {
            if cfg.extra_body.contains_key(reserved) {
                return Err(config(format!(
                    "endpoint `{}`: extra_body may not set `{reserved}` (the client writes it)",
                    cfg.name
                )));
            }
            if cfg.remove_keys.iter().any(|k| k == reserved) {
                return Err(config(format!(
                    "endpoint `{}`: remove_keys may not remove `{reserved}` (every request needs it)",
                    cfg.name
                )));
            }
        }
        let join = |tail: &str| {
            Url::parse(&format!("{base}/{tail}"))
                .map_err(|e| config(format!("endpoint `{}`: bad base_url: {e}", cfg.name)))
        };
        let chat_url = join("chat/completions")?;
        let models_url = join("models")?;
        let timeout = Duration::from_secs_f64(cfg.timeout_s.min(86_400.0));

        // reqwest is built without a bundled crypto provider; ring is the one this
        // crate ships. Installing twice is harmless (the second call just fails).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(cfg.max_in_flight)
            .user_agent(concat!("echo-workbench/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&base_url) {
            // A proxy from the environment can never help reach this machine.
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| config(format!("cannot set up the HTTP client: {e}")))?;
        Ok(MllmClient {
            inner: Arc::new(Inner {
                chat_shown: shown_url(&chat_url),
                models_shown: shown_url(&models_url),
                base_shown: shown_url(&base_url),
                chat_url,
                models_url,
                timeout,
                slots: Semaphore::new(cfg.max_in_flight),
                cache: ImageCache::new(IMAGE_CACHE_BYTES),
                http,
                cfg,
            }),
        })
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.inner.cfg
    }

    /// Requests being sent or awaiting their reply right now (at most `max_in_flight`).
    pub fn in_flight(&self) -> usize {
        self.inner.cfg.max_in_flight - self.inner.slots.available_permits()
    }

    pub fn image_cache_stats(&self) -> ImageCacheStats {
        self.inner.cache.stats()
    }

    /// Sends one chat request and returns the model's text.
    ///
    /// Waits for a free slot (at most `max_in_flight` requests at once), retries
    /// connection failures, timeouts, 429, 5xx and 200s that are not JSON with
    /// backoff, and gives up within about 20 ms of `cancel` being set, whatever it
    /// was waiting for.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        cancel: &CancelToken,
    ) -> Result<ChatReply, MllmError> {
        self.chat_counted(req, cancel, &AtomicU32::new(0)).await
    }

    /// [`Self::chat`], adding every HTTP attempt to `attempts` as it is made, so a
    /// caller knows what a failed call cost (a reply carries its own count).
    pub async fn chat_counted(
        &self,
        req: &ChatRequest,
        cancel: &CancelToken,
        attempts: &AtomicU32,
    ) -> Result<ChatReply, MllmError> {
        let sources: Vec<Source<'_>> = req
            .parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => Source::Text(t),
                Part::Image(path) => Source::File(path),
                Part::Generated { name, bytes } => Source::Bytes {
                    name,
                    bytes: bytes.clone(),
                },
            })
            .collect();
        self.send(
            req.system.as_deref(),
            &sources,
            &req.decoding,
            cancel,
            attempts,
        )
        .await
    }

    async fn send(
        &self,
        system: Option<&str>,
        sources: &[Source<'_>],
        decoding: &Decoding,
        cancel: &CancelToken,
        made: &AtomicU32,
    ) -> Result<ChatReply, MllmError> {
        let start = Instant::now();
        let cfg = &self.inner.cfg;
        let cancelled = || MllmError::Cancelled {
            url: self.inner.chat_shown.clone(),
        };
        if cancel.is_cancelled() {
            return Err(cancelled());
        }
        let key = self.api_key(&self.inner.chat_shown)?;
        let images = tokio::select! {
            biased;
            _ = wait_cancelled(cancel) => return Err(cancelled()),
            r = self.prepare_images(sources) => r?,
        };
        let request_summary = build_body(cfg, system, sources, decoding, &images, true);
        // Serialised once; every attempt sends the same shared bytes.
        let body = request_body(cfg, system, sources, decoding, &images).map_err(|e| {
            MllmError::Config {
                msg: format!("cannot serialise the request body: {e}"),
            }
        })?;
        drop(images);

        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let permit = tokio::select! {
                biased;
                _ = wait_cancelled(cancel) => return Err(cancelled()),
                p = self.inner.slots.acquire() => p.map_err(|_| cancelled())?,
            };
            made.fetch_add(1, Ordering::Relaxed);
            let outcome = tokio::select! {
                biased;
                _ = wait_cancelled(cancel) => return Err(cancelled()),
                r = self.attempt_chat(body.clone(), key.as_deref()) => r,
            };
            drop(permit);
            match outcome {
                Ok(parsed) => {
                    return Ok(ChatReply {
                        text: parsed.text,
                        reasoning: parsed.reasoning,
                        finish_reason: parsed.finish_reason,
                        attempts,
                        latency_ms: millis(start.elapsed()),
                        request_summary,
                        usage: parsed.usage,
                        logprobs: parsed.logprobs,
                    });
                }
                Err(failure) => {
                    let error = failure.error.redact(key.as_deref());
                    if !error.is_retryable() || attempts > cfg.max_retries {
                        return Err(error);
                    }
                    let wait = backoff_delay(attempts, cfg.retry_base_ms, failure.retry_after);
                    tracing::warn!(
                        endpoint = %cfg.name,
                        attempt = attempts,
                        wait_ms = millis(wait),
                        "retrying after: {error}"
                    );
                    tokio::select! {
                        biased;
                        _ = wait_cancelled(cancel) => return Err(cancelled()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// The model names the server lists (`GET {base}/models`, one attempt).
    pub async fn models(&self) -> Result<Vec<String>, MllmError> {
        let url = &self.inner.models_shown;
        let key = self.api_key(url)?;
        let (status, _, body) = self
            .exchange(
                Method::GET,
                self.inner.models_url.clone(),
                url,
                None,
                key.as_deref(),
            )
            .await
            .map_err(|f| f.error.redact(key.as_deref()))?;
        if !status.is_success() {
            return Err(MllmError::Http {
                url: url.clone(),
                status: status.as_u16(),
                body_head: body_head(&body),
            }
            .redact(key.as_deref()));
        }
        parse_models(&body).map_err(|detail| {
            MllmError::BadReply {
                url: url.clone(),
                detail,
                body_head: body_head(&body),
            }
            .redact(key.as_deref())
        })
    }

    /// Checks that the endpoint is usable for Echo: it lists models, knows ours, and
    /// accepts a request with two images (reference and query), which vLLM refuses
    /// unless started with `--limit-mm-per-prompt`.
    pub async fn probe(&self) -> ProbeReport {
        let start = Instant::now();
        let cfg = &self.inner.cfg;
        let base = &self.inner.base_shown;
        let mut report = ProbeReport {
            ok: false,
            models: Vec::new(),
            model_listed: false,
            two_images_ok: false,
            latency_ms: 0,
            message: String::new(),
            reply: None,
            usage: None,
        };
        let models_error = match self.models().await {
            Ok(list) => {
                report.model_listed = list.iter().any(|m| m == &cfg.model);
                report.models = list;
                None
            }
            Err(e) => Some(e),
        };
        if let Some(e) = &models_error
            && matches!(
                e,
                MllmError::Connect { .. }
                    | MllmError::Timeout { .. }
                    | MllmError::MissingApiKey { .. }
                    | MllmError::Transport { .. }
            )
        {
            report.message = with_hint(e);
            report.latency_ms = millis(start.elapsed());
            return report;
        }
        let sources = [
            Source::Bytes {
                name: "probe image 1 (red)",
                bytes: solid_png([220, 30, 30]),
            },
            Source::Bytes {
                name: "probe image 2 (blue)",
                bytes: solid_png([30, 30, 220]),
            },
            Source::Text(
                "Name the main colour of the first image and of the second image, in a few words.",
            ),
        ];
        let result = self
            .send(
                None,
                &sources,
                &Decoding::default(),
                &CancelToken::new(),
                &AtomicU32::new(0),
            )
            .await;
        report.latency_ms = millis(start.elapsed());
        let listed = || {
            let mut names: Vec<&str> = report.models.iter().take(5).map(String::as_str).collect();
            if report.models.len() > 5 {
                names.push("...");
            }
            names.join(", ")
        };
        match result {
            Ok(reply) => {
                report.two_images_ok = true;
                report.ok = true;
                let ms = reply.latency_ms;
                report.message = if let Some(e) = &models_error {
                    format!(
                        "{base} answered a two-image request in {ms} ms, but listing its models failed: {e}"
                    )
                } else if !report.model_listed && !report.models.is_empty() {
                    format!(
                        "{base} answered a two-image request in {ms} ms but does not list `{}` among its models ({}): it probably ignores the model name",
                        cfg.model,
                        listed()
                    )
                } else {
                    format!(
                        "{base} serves `{}` and answered a two-image request in {ms} ms",
                        cfg.model
                    )
                };
                report.usage = reply.usage;
                report.reply = Some(reply.text);
            }
            Err(e) => {
                report.message = match &e {
                    MllmError::Http { body_head, .. } if image_limit_from_body(body_head).is_some() => {
                        match image_limit_from_body(body_head) {
                            Some(0) => "the served model takes no images (a text-only model, or vLLM started with --language-model-only): serve a vision model".to_string(),
                            Some(1) => "the server accepts one image per prompt: start vLLM with --limit-mm-per-prompt '{\"image\":2}'".to_string(),
                            Some(n) => format!("the server accepts at most {n} images per prompt: start vLLM with --limit-mm-per-prompt '{{\"image\":2}}' or more"),
                            None => with_hint(&e),
                        }
                    }
                    MllmError::Http { status: 404, .. }
                        if !report.model_listed && !report.models.is_empty() =>
                    {
                        format!(
                            "{base} does not serve `{}`; it lists: {}",
                            cfg.model,
                            listed()
                        )
                    }
                    _ => with_hint(&e),
                };
            }
        }
        report
    }

    /// The API key from the environment, read now so a key exported after start-up
    /// is used. An unset variable is an error, not a silent unauthenticated request.
    fn api_key(&self, url: &str) -> Result<Option<String>, MllmError> {
        let Some(var) = self
            .inner
            .cfg
            .api_key_env
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
        else {
            return Ok(None);
        };
        match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(key.trim().to_string())),
            _ => Err(MllmError::MissingApiKey {
                url: url.to_string(),
                var: var.to_string(),
            }),
        }
    }

    async fn prepare_images(
        &self,
        sources: &[Source<'_>],
    ) -> Result<Vec<Arc<EncodedImage>>, MllmError> {
        let settings = EncodeSettings {
            max_side: self.inner.cfg.image_max_side,
            jpeg_quality: self.inner.cfg.jpeg_quality,
        };
        let mut out = Vec::with_capacity(sources.len());
        for source in sources {
            match source {
                Source::Text(_) => {}
                Source::File(path) => out.push(self.inner.cache.get_file(path, settings).await?),
                Source::Bytes { name, bytes } => out.push(
                    self.inner
                        .cache
                        .encode_bytes(name, bytes.clone(), settings)
                        .await?,
                ),
            }
        }
        Ok(out)
    }

    async fn attempt_chat(
        &self,
        body: RequestBody,
        key: Option<&str>,
    ) -> Result<ParsedReply, Failure> {
        let url = &self.inner.chat_shown;
        let (status, headers, reply) = self
            .exchange(
                Method::POST,
                self.inner.chat_url.clone(),
                url,
                Some(body),
                key,
            )
            .await?;
        if !status.is_success() {
            let retry_after = headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            return Err(Failure {
                error: MllmError::Http {
                    url: url.clone(),
                    status: status.as_u16(),
                    body_head: body_head(&reply),
                },
                retry_after,
            });
        }
        parse_reply(&reply, url).map_err(Failure::from)
    }

    /// One HTTP exchange with the whole reply read, within the configured timeout.
    async fn exchange(
        &self,
        method: Method,
        url: Url,
        shown: &str,
        body: Option<RequestBody>,
        key: Option<&str>,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), Failure> {
        let timeout = self.inner.timeout;
        let classify = |e: reqwest::Error| classify(e, shown, timeout);
        let work = async {
            let mut rb = self.inner.http.request(method, url);
            if let Some(body) = body {
                rb = rb
                    .header(CONTENT_TYPE, "application/json")
                    .header(CONTENT_LENGTH, body.len())
                    .body(body.to_http());
            }
            if let Some(key) = key {
                rb = rb.bearer_auth(key);
            }
            let mut resp = rb.send().await.map_err(classify)?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let mut buf = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(classify)? {
                if buf.len() + chunk.len() > MAX_REPLY_BYTES {
                    return Err(MllmError::BadReply {
                        url: shown.to_string(),
                        detail: format!("the reply is larger than {} MiB", MAX_REPLY_BYTES >> 20),
                        body_head: body_head(&buf),
                    });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok((status, headers, buf))
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r.map_err(Failure::from),
            Err(_) => Err(MllmError::Timeout {
                url: shown.to_string(),
                after_s: timeout.as_secs_f64(),
            }
            .into()),
        }
    }
}

/// The request body; with `summary`, images appear as their hash and size.
fn build_body(
    cfg: &EndpointConfig,
    system: Option<&str>,
    sources: &[Source<'_>],
    decoding: &Decoding,
    images: &[Arc<EncodedImage>],
    summary: bool,
) -> Value {
    build_body_with(cfg, system, sources, decoding, images, |_, img| {
        if summary {
            img.summary()
        } else {
            Value::String(String::from_utf8_lossy(&img.data_url).into_owned())
        }
    })
}

/// The request body as sent. Data URLs are megabytes of base64 that JSON never
/// needs to escape, so the body is the serialised text with short placeholders cut
/// out and the cached data URLs put in their place as shared chunks: they are never
/// cloned into a `Value`, scanned by the serialiser or copied into a buffer per
/// request (see [`super::body`]).
fn request_body(
    cfg: &EndpointConfig,
    system: Option<&str>,
    sources: &[Source<'_>],
    decoding: &Decoding,
    images: &[Arc<EncodedImage>],
) -> serde_json::Result<RequestBody> {
    let plain = || {
        serde_json::to_vec(&build_body(cfg, system, sources, decoding, images, false))
            .map(RequestBody::from)
    };
    // The encoder writes `data:<mime>;base64,` and then only the base64 alphabet,
    // which JSON never escapes; checking the header is enough (scanning megabytes of
    // base64 per request cost as much as the serialiser did).
    let safe = |url: &[u8]| {
        url.iter().position(|&b| b == b',').is_some_and(|comma| {
            url[..comma]
                .iter()
                .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        })
    };
    if !images.iter().all(|img| safe(&img.data_url)) {
        return plain();
    }
    // A per-request nonce keeps prompt text from ever matching a placeholder.
    let nonce = fastrand::u64(..);
    let placeholder = |i: usize| format!("echo-workbench-image-{nonce:016x}-{i}");
    let skeleton = Bytes::from(serde_json::to_vec(&build_body_with(
        cfg,
        system,
        sources,
        decoding,
        images,
        |i, _| Value::String(placeholder(i)),
    ))?);
    let mut chunks = Vec::with_capacity(2 * images.len() + 1);
    let mut from = 0;
    for (i, img) in images.iter().enumerate() {
        let needle = placeholder(i);
        let Some(at) = skeleton[from..]
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
        else {
            return plain();
        };
        chunks.push(skeleton.slice(from..from + at));
        chunks.push(img.data_url.clone());
        from += at + needle.len();
    }
    chunks.push(skeleton.slice(from..));
    Ok(RequestBody::new(chunks))
}

fn build_body_with(
    cfg: &EndpointConfig,
    system: Option<&str>,
    sources: &[Source<'_>],
    decoding: &Decoding,
    images: &[Arc<EncodedImage>],
    url_of: impl Fn(usize, &EncodedImage) -> Value,
) -> Value {
    let mut images = images.iter().enumerate();
    let content: Vec<Value> = sources
        .iter()
        .filter_map(|source| match source {
            Source::Text(text) => Some(json!({"type": "text", "text": text})),
            Source::File(_) | Source::Bytes { .. } => images
                .next()
                .map(|(i, img)| json!({"type": "image_url", "image_url": {"url": url_of(i, img)}})),
        })
        .collect();
    let mut messages = Vec::with_capacity(2);
    if let Some(system) = system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": content}));
    let mut body = Map::new();
    body.insert("model".into(), json!(cfg.model));
    body.insert("messages".into(), Value::Array(messages));
    body.insert("temperature".into(), json!(cfg.temperature));
    body.insert("max_tokens".into(), json!(cfg.max_tokens));
    for (k, v) in &cfg.extra_body {
        body.insert(k.clone(), v.clone());
    }
    if let Some(t) = decoding.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = decoding.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(seed) = decoding.seed {
        body.insert("seed".into(), json!(seed));
    }
    if let Some(k) = decoding.top_logprobs {
        body.insert("logprobs".into(), json!(true));
        body.insert("top_logprobs".into(), json!(k));
    }
    body.retain(|k, v| !v.is_null() && !cfg.remove_keys.contains(k));
    Value::Object(body)
}

/// Reads `choices[0].message` of a chat completion.
pub(crate) fn parse_reply(body: &[u8], url: &str) -> Result<ParsedReply, MllmError> {
    let bad = |detail: String| MllmError::BadReply {
        url: url.to_string(),
        detail,
        body_head: body_head(body),
    };
    let v: Value = serde_json::from_slice(body).map_err(|e| MllmError::NotJson {
        url: url.to_string(),
        detail: e.to_string(),
        body_head: body_head(body),
    })?;
    let Some(choices) = v.get("choices").and_then(Value::as_array) else {
        let detail = match v.get("error") {
            Some(err) => format!(
                "it is an error report: {}",
                err.get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| err.to_string(), str::to_string)
            ),
            None => "there is no `choices` list".to_string(),
        };
        return Err(bad(detail));
    };
    let no_content = || MllmError::NoContent {
        url: url.to_string(),
        body_head: body_head(body),
    };
    let choice = choices.first().ok_or_else(no_content)?;
    let message = choice.get("message");
    let text = match message.and_then(|m| m.get("content")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| {
                p.get("type")
                    .and_then(Value::as_str)
                    .is_none_or(|t| t == "text" || t == "output_text")
            })
            .filter_map(|p| p.as_str().or_else(|| p.get("text").and_then(Value::as_str)))
            .collect(),
        _ => String::new(),
    };
    if text.trim().is_empty() {
        return Err(no_content());
    }
    let reasoning = message
        .and_then(|m| m.get("reasoning_content").or_else(|| m.get("reasoning")))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Ok(ParsedReply {
        text,
        reasoning,
        usage: parse_usage(&v),
        logprobs: super::logprobs::parse_choice_logprobs(choice),
        finish_reason: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// `usage.prompt_tokens` and `usage.completion_tokens`, when both are whole numbers
/// (a server that sends something else has not told us its usage).
fn parse_usage(v: &Value) -> Option<Usage> {
    let usage = v.get("usage")?;
    Some(Usage {
        prompt_tokens: usage.get("prompt_tokens")?.as_u64()?,
        completion_tokens: usage.get("completion_tokens")?.as_u64()?,
    })
}

/// Model ids from `{"data": [{"id": ..}]}` (OpenAI, vLLM, Ollama, llama.cpp, LM
/// Studio) or `{"models": [{"name"|"model"|"id": ..}]}`.
fn parse_models(body: &[u8]) -> Result<Vec<String>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let (list, fields): (&Vec<Value>, &[&str]) =
        if let Some(data) = v.get("data").and_then(Value::as_array) {
            (data, &["id"])
        } else if let Some(models) = v.get("models").and_then(Value::as_array) {
            (models, &["id", "model", "name"])
        } else {
            return Err("there is no `data` list of models".into());
        };
    Ok(list
        .iter()
        .filter_map(|m| {
            fields
                .iter()
                .find_map(|f| m.get(*f).and_then(Value::as_str))
                .map(str::to_string)
        })
        .collect())
}

fn classify(e: reqwest::Error, url: &str, timeout: Duration) -> MllmError {
    let (timed_out, connect) = (e.is_timeout(), e.is_connect());
    let detail = crate::util::error::chain(&e.without_url());
    if timed_out {
        MllmError::Timeout {
            url: url.to_string(),
            after_s: timeout.as_secs_f64(),
        }
    } else if connect {
        MllmError::Connect {
            url: url.to_string(),
            detail,
        }
    } else {
        MllmError::Transport {
            url: url.to_string(),
            detail,
        }
    }
}

/// The first characters of a body, on one line.
fn body_head(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut head: String = one_line.chars().take(BODY_HEAD_CHARS).collect();
    if one_line.chars().nth(BODY_HEAD_CHARS).is_some() {
        head.push_str("...");
    }
    if head.is_empty() {
        head.push_str("(empty body)");
    }
    head
}

fn with_hint(e: &MllmError) -> String {
    match e.hint() {
        Some(hint) => format!("{e}; {hint}"),
        None => e.to_string(),
    }
}

async fn wait_cancelled(token: &CancelToken) {
    while !token.is_cancelled() {
        tokio::time::sleep(CANCEL_POLL).await;
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `url` as messages show it: see [`super::url_without_secrets`].
fn shown_url(url: &Url) -> String {
    super::url_without_secrets(url.as_str())
}

/// A tiny solid-colour PNG for the probe.
fn solid_png(rgb: [u8; 3]) -> Arc<[u8]> {
    let img = image::RgbImage::from_pixel(64, 64, image::Rgb(rgb));
    let mut out = std::io::Cursor::new(Vec::new());
    // Encoding a 64x64 image into memory cannot fail; an empty result would be
    // reported by the encoder as an image error naming the probe image.
    let _ = image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Png);
    Arc::from(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_leniently_but_errors_are_clear() {
        let ok = br#"{"choices":[{"message":{"role":"assistant","content":"B","reasoning_content":"think"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":1}}"#;
        let r = parse_reply(ok, "u").unwrap();
        assert_eq!(r.text, "B");
        assert_eq!(r.reasoning.as_deref(), Some("think"));
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 1
            })
        );

        let parts = br#"{"choices":[{"message":{"content":[{"type":"text","text":"Answer: "},{"type":"text","text":"C"}],"reasoning":"r"}}]}"#;
        let r = parse_reply(parts, "u").unwrap();
        assert_eq!(r.text, "Answer: C");
        assert_eq!(r.usage, None, "no usage sent, none recorded");
        let odd = br#"{"choices":[{"message":{"content":"A"}}],"usage":{"prompt_tokens":"ten","completion_tokens":1}}"#;
        assert_eq!(parse_reply(odd, "u").unwrap().usage, None);
        assert_eq!(r.reasoning.as_deref(), Some("r"));

        let err = parse_reply(b"<html>502 Bad Gateway</html>", "http://h/v1").unwrap_err();
        assert!(matches!(err, MllmError::NotJson { .. }));
        assert!(err.is_retryable());
        assert!(
            err.to_string().contains("<html>502 Bad Gateway</html>"),
            "{err}"
        );

        let err = parse_reply(br#"{"error":{"message":"out of memory"}}"#, "u").unwrap_err();
        assert!(err.to_string().contains("out of memory"), "{err}");

        for empty in [
            &br#"{"choices":[]}"#[..],
            br#"{"choices":[{"message":{"content":null,"reasoning_content":"..."},"finish_reason":"length"}]}"#,
            br#"{"choices":[{"message":{"content":"  "}}]}"#,
        ] {
            let err = parse_reply(empty, "u").unwrap_err();
            assert!(matches!(err, MllmError::NoContent { .. }), "{err}");
        }
    }

    /// Whatever a server (or something posing as one) sends, reading the reply
    /// returns a reply with text or an error: never a panic. 10,000 inputs from a
    /// fixed seed (`ECHO_FUZZ_SEED=N` explores others): a third random bytes, the
    /// rest a real completion mutated one to eight times.
    #[test]
    fn replies_survive_random_and_mutated_bytes() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, RngSeed, TestRunner};

        const SEEDS: &[&[u8]] = &[
            br#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"B","reasoning_content":"the scratch is on the rim"},"finish_reason":"stop"}],"usage":{"prompt_tokens":812,"completion_tokens":1}}"#,
            br#"{"choices":[{"message":{"content":[{"type":"text","text":"Answer: "},{"type":"output_text","text":"C"},{"type":"image_url","image_url":{"url":"x"}}],"reasoning":"r"},"finish_reason":"length"}]}"#,
            br#"{"error":{"message":"At most 1 image(s) may be provided in one request.","type":"BadRequestError","code":400}}"#,
            b"<html><body><h1>502 Bad Gateway</h1></body></html>",
            br#"{"choices":[]}"#,
            br#"{"choices":[{"message":{"content":null,"reasoning_content":"..."},"finish_reason":"length"}]}"#,
        ];
        const TOKENS: &[&[u8]] = &[
            b"\"",
            b"{",
            b"}",
            b"[",
            b"]",
            b":",
            b",",
            b"null",
            b"\\u0000",
            b"\\ud800",
            b"\xff\xfe",
            b"\xe2\x82",
            b"1e999",
            b"choices",
            b"message",
            b"content",
            b"\0",
            b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        ];
        #[derive(Debug, Clone)]
        enum Mutation {
            Set(usize, u8),
            Delete(usize, usize),
            Insert(usize, usize),
            Duplicate(usize, usize, usize),
            Truncate(usize),
        }
        let mutation = prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
            (any::<usize>(), 1usize..32).prop_map(|(at, n)| Mutation::Delete(at, n)),
            (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, t)| Mutation::Insert(at, t)),
            (any::<usize>(), 1usize..128, any::<usize>())
                .prop_map(|(at, n, to)| Mutation::Duplicate(at, n, to)),
            any::<usize>().prop_map(Mutation::Truncate),
        ];
        let mutated =
            (0..SEEDS.len(), proptest::collection::vec(mutation, 1..8)).prop_map(|(seed, ms)| {
                let mut b = SEEDS[seed].to_vec();
                for m in ms {
                    let n = b.len().max(1);
                    match m {
                        Mutation::Set(at, byte) => {
                            if !b.is_empty() {
                                b[at % n] = byte;
                            }
                        }
                        Mutation::Delete(at, len) => {
                            let start = at % n;
                            let end = (start + len).min(b.len());
                            if start < end {
                                b.drain(start..end);
                            }
                        }
                        Mutation::Insert(at, t) => {
                            let at = at % (b.len() + 1);
                            b.splice(at..at, TOKENS[t].iter().copied());
                        }
                        Mutation::Duplicate(at, len, to) => {
                            let start = at % n;
                            let end = (start + len).min(b.len());
                            let span = b.get(start..end).unwrap_or_default().to_vec();
                            let to = to % (b.len() + 1);
                            b.splice(to..to, span);
                        }
                        Mutation::Truncate(at) => b.truncate(at % n),
                    }
                }
                b
            });
        let inputs = prop_oneof![
            1 => proptest::collection::vec(any::<u8>(), 0..512),
            2 => mutated,
        ];
        let mut runner = TestRunner::new(Config {
            cases: 10_000,
            failure_persistence: None,
            max_shrink_iters: 2_000,
            rng_seed: RngSeed::Fixed(
                std::env::var("ECHO_FUZZ_SEED")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0x0ec4_0b0c),
            ),
            ..Config::default()
        });
        let (replies, retryable) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
        runner
            .run(&inputs, |body| {
                match parse_reply(&body, "http://h/v1/chat/completions") {
                    Ok(r) => {
                        prop_assert!(!r.text.trim().is_empty(), "a reply without text");
                        replies.set(replies.get() + 1);
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        prop_assert!(msg.contains("http://h/v1"), "{msg}");
                        // A quoted body is cut at 200 characters, never the whole reply.
                        prop_assert!(msg.chars().count() < 600, "{msg}");
                        if e.is_retryable() {
                            retryable.set(retryable.get() + 1);
                        }
                    }
                }
                Ok(())
            })
            .unwrap();
        // The mutations kept some replies readable and broke others' JSON: both
        // paths were exercised.
        let (replies, retryable) = (replies.get(), retryable.get());
        assert!(replies > 50 && retryable > 1000, "{replies} {retryable}");
    }

    #[test]
    fn spliced_bodies_are_the_json_the_serialiser_writes() {
        let mut png = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(3, 2, image::Rgb([9, 8, 7])))
            .write_to(&mut png, image::ImageFormat::Png)
            .unwrap();
        let settings = EncodeSettings {
            max_side: None,
            jpeg_quality: None,
        };
        let img = Arc::new(
            super::super::encode::encode_image(
                png.get_ref(),
                std::path::Path::new("a.png"),
                settings,
            )
            .unwrap(),
        );
        let cfg = EndpointConfig::default();
        // Text that looks like a placeholder stays text.
        let sources = [
            Source::Text("echo-workbench-image-0000000000000000-0 \"quoted\""),
            Source::File(std::path::Path::new("a.png")),
            Source::Text("between"),
            Source::File(std::path::Path::new("a.png")),
        ];
        let images = [img.clone(), img];
        let spliced = request_body(&cfg, Some("sys"), &sources, &Decoding::default(), &images)
            .unwrap()
            .to_vec();
        let plain = serde_json::to_vec(&build_body(
            &cfg,
            Some("sys"),
            &sources,
            &Decoding::default(),
            &images,
            false,
        ))
        .unwrap();
        assert_eq!(spliced, plain);
    }

    #[test]
    fn body_head_is_short_and_one_line() {
        let long = "x".repeat(500);
        let head = body_head(long.as_bytes());
        assert_eq!(head.chars().count(), BODY_HEAD_CHARS + 3);
        assert_eq!(body_head(b"a\n  b"), "a b");
        assert_eq!(body_head(b""), "(empty body)");
    }

    #[test]
    fn models_from_both_shapes() {
        assert_eq!(
            parse_models(br#"{"object":"list","data":[{"id":"a"},{"id":"b"}]}"#).unwrap(),
            ["a", "b"]
        );
        assert_eq!(
            parse_models(br#"{"models":[{"name":"q:7b"}]}"#).unwrap(),
            ["q:7b"]
        );
        assert!(parse_models(b"[]").is_err());
    }

    #[test]
    fn a_requests_decoding_keys_override_the_endpoints_and_logprobs_ask_for_top_20() {
        let mut cfg = EndpointConfig {
            model: "m".into(),
            ..Default::default()
        };
        cfg.extra_body.insert("temperature".into(), json!(0.5));
        let decoding = Decoding {
            temperature: Some(0.7),
            top_p: Some(0.9),
            seed: Some(42),
            top_logprobs: Some(20),
        };
        let body = build_body(&cfg, None, &[Source::Text("hi")], &decoding, &[], false);
        assert_eq!(body["temperature"], json!(0.7));
        assert_eq!(body["top_p"], json!(0.9));
        assert_eq!(body["seed"], json!(42));
        assert_eq!(body["logprobs"], json!(true));
        assert_eq!(body["top_logprobs"], json!(20));
        cfg.remove_keys = vec!["seed".into()];
        let body = build_body(&cfg, None, &[Source::Text("hi")], &decoding, &[], false);
        assert!(body.get("seed").is_none(), "remove_keys still wins");
        let plain = build_body(
            &cfg,
            None,
            &[Source::Text("hi")],
            &Decoding::default(),
            &[],
            false,
        );
        for key in ["top_p", "seed", "logprobs", "top_logprobs"] {
            assert!(plain.get(key).is_none(), "{key} sent without a protocol");
        }
    }

    #[test]
    fn logprobs_in_a_reply_are_read_and_junk_there_is_ignored() {
        let with = br#"{"choices":[{"message":{"content":"B"},"logprobs":{"content":[{"token":"B","logprob":-0.1,"top_logprobs":[{"token":"B","logprob":-0.1},{"token":"A","logprob":-2.4}]}]}}]}"#;
        let r = parse_reply(with, "u").unwrap();
        assert_eq!(r.logprobs.unwrap()[0].top.len(), 2);
        let junk = br#"{"choices":[{"message":{"content":"B"},"logprobs":{"content":"nope"}}]}"#;
        let r = parse_reply(junk, "u").unwrap();
        assert_eq!(r.text, "B");
        assert_eq!(r.logprobs, None);
    }

    #[test]
    fn body_merges_extra_and_summarises_images() {
        let mut cfg = EndpointConfig {
            model: "m".into(),
            ..Default::default()
        };
        cfg.extra_body.insert("max_tokens".into(), Value::Null);
        cfg.extra_body
            .insert("max_completion_tokens".into(), json!(64));
        cfg.extra_body.insert("temperature".into(), json!(0.5));
        let body = build_body(
            &cfg,
            Some("sys"),
            &[Source::Text("hello")],
            &Decoding::default(),
            &[],
            false,
        );
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["model", "messages", "temperature", "max_completion_tokens"]
        );
        assert_eq!(body["temperature"], json!(0.5));
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "sys"})
        );
        assert_eq!(
            body["messages"][1]["content"],
            json!([{"type": "text", "text": "hello"}])
        );
    }

    #[test]
    fn the_max_completion_tokens_hint_is_toml_that_does_what_it_says() {
        // The hint's settings parse as an endpoint's TOML table...
        let cfg: EndpointConfig =
            toml::from_str(super::super::error::MAX_COMPLETION_TOKENS_TOML).unwrap();
        let body = build_body(
            &cfg,
            None,
            &[Source::Text("hi")],
            &Decoding::default(),
            &[],
            false,
        );
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["model", "messages", "temperature", "max_completion_tokens"]
        );
        assert_eq!(body["max_completion_tokens"], json!(128));
        // ...the hint shown for such an API quotes them...
        let err = MllmError::Http {
            url: "u".into(),
            status: 400,
            body_head: "Unsupported parameter: 'max_tokens'. Use 'max_completion_tokens' instead."
                .into(),
        };
        let hint = err.hint().unwrap();
        for line in super::super::error::MAX_COMPLETION_TOKENS_TOML.lines() {
            assert!(hint.contains(line), "{hint}");
        }
        // ...and they survive being saved: a null, which TOML cannot write, would not.
        let saved = toml::to_string(&cfg).unwrap();
        assert_eq!(toml::from_str::<EndpointConfig>(&saved).unwrap(), cfg);
        let mut with_null = cfg.clone();
        with_null
            .extra_body
            .insert("max_tokens".into(), Value::Null);
        assert!(toml::to_string(&with_null).is_err());
        // Nothing a request needs can be removed.
        let mut bad = EndpointConfig::default();
        bad.remove_keys.push("messages".into());
        let err = MllmClient::new(bad).unwrap_err().to_string();
        assert!(
            err.contains("remove_keys may not remove `messages`"),
            "{err}"
        );
    }

    #[test]
    fn settings_are_checked() {
        let bad = |f: fn(&mut EndpointConfig)| {
            let mut cfg = EndpointConfig::default();
            f(&mut cfg);
            MllmClient::new(cfg).unwrap_err().to_string()
        };
        assert!(bad(|c| c.base_url = "localhost:8000".into()).contains("http://"));
        assert!(bad(|c| c.base_url = "not a url".into()).contains("not a URL"));
        assert!(bad(|c| c.model = " ".into()).contains("no model"));
        assert!(bad(|c| c.max_in_flight = 0).contains("max_in_flight"));
        // Past what the semaphore can hold: refused, not a panic.
        assert!(
            bad(|c| c.max_in_flight = 4_000_000_000_000_000_000)
                .contains("max_in_flight must be between 1 and 1024, not 4000000000000000000")
        );
        assert!(bad(|c| c.max_in_flight = usize::MAX).contains("max_in_flight"));
        assert!(bad(|c| c.timeout_s = f64::NAN).contains("timeout_s"));
        assert!(bad(|c| c.jpeg_quality = Some(0)).contains("jpeg_quality"));
        assert!(
            bad(|c| {
                c.extra_body.insert("messages".into(), json!([]));
            })
            .contains("messages")
        );
        let secret = bad(|c| c.base_url = "http://user:hunter2@[bad".into());
        assert!(!secret.contains("hunter2"), "{secret}");
        let client = MllmClient::new(EndpointConfig {
            base_url: "http://u:hunter2@localhost:9/v1/".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            client.inner.chat_shown,
            "http://localhost:9/v1/chat/completions"
        );
        assert!(!format!("{client:?}").contains("hunter2"));
        assert_eq!(client.in_flight(), 0);
    }
}
