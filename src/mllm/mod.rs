//! Talking to multimodal LLMs through the OpenAI-compatible chat completions API.
//!
//! Every serving engine the workbench targets (vLLM, Ollama's `/v1`, llama.cpp's
//! `llama-server`, LM Studio, hosted APIs) speaks the same dialect: `POST
//! {base}/chat/completions` with content parts, images as base64 data URLs, and `GET
//! {base}/models`. One [`MllmClient`] per endpoint bounds concurrency, retries what is
//! worth retrying, honours cancellation promptly, encodes each image once (shared
//! cache) and records the exact request it sent, with images replaced by their hash,
//! so that a run's trace shows what the model saw without storing megabytes of base64.
//!
//! [`mock::MockServer`] is a real local server speaking the same API, scriptable with
//! faults, for tests, benchmarks and demos without a GPU.

mod body;
mod client;
mod encode;
mod error;
mod logprobs;
pub mod mock;
mod retry;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use client::{MllmClient, ProbeReport};
pub use encode::ImageCacheStats;
pub use error::MllmError;
pub use logprobs::{TokenLogprob, TopLogprob};

/// An endpoint URL without anything secret in it: no `user:password@`, no query
/// string (some hosted APIs take the key as `?key=`), no fragment.
pub fn url_without_secrets(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let mut url = url[..cut].to_owned();
    if let Some(scheme_end) = url.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = url[authority_start..]
            .find('/')
            .map_or(url.len(), |i| authority_start + i);
        if let Some(at) = url[authority_start..authority_end].rfind('@') {
            url.replace_range(authority_start..authority_start + at + 1, "");
        }
    }
    url
}

/// One OpenAI-compatible endpoint, as stored in the settings file.
///
/// The API key itself is never part of the settings: `api_key_env` names the
/// environment variable that holds it, read at request time, so the key is never
/// written to disk, logged or shown.
/// The most requests one endpoint may have open at once. Far above what any server
/// serves in parallel, and far below where the semaphore behind it gives out
/// (`Semaphore::MAX_PERMITS`, where a larger count panics): a typo such as
/// `--concurrency 4000000000000000000` is refused with a message instead.
pub const MAX_IN_FLIGHT: usize = 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointConfig {
    /// A label for people (settings list, run manifests).
    pub name: String,
    /// The API root, ending in `/v1` for every engine we know of, e.g.
    /// `http://localhost:8000/v1` (vLLM), `http://localhost:11434/v1` (Ollama),
    /// `http://localhost:8080/v1` (llama.cpp), `http://localhost:1234/v1` (LM Studio).
    pub base_url: String,
    /// The model name the server expects (vLLM: the served model name).
    pub model: String,
    /// Name of the environment variable holding the API key; `None` sends no key.
    pub api_key_env: Option<String>,
    /// Limit for one HTTP attempt (connect, send, full reply), in seconds.
    pub timeout_s: f64,
    /// Requests this client keeps open at once; more wait their turn (1 to
    /// [`MAX_IN_FLIGHT`]).
    pub max_in_flight: usize,
    /// MMAD and Echo decode greedily, hence 0.
    pub temperature: f64,
    /// MMAD generates up to 128 new tokens.
    pub max_tokens: u32,
    /// Merged into the request body last, overriding keys of the same name (e.g.
    /// `{"max_completion_tokens": 128}`). A JSON `null` removes a key, but TOML has
    /// no null: in settings.toml use `remove_keys`. `model` and `messages` cannot be
    /// set here.
    pub extra_body: serde_json::Map<String, serde_json::Value>,
    /// Keys left out of the request body, after `extra_body` is merged: e.g.
    /// `["max_tokens"]` for APIs that reject it (OpenAI's newer models want
    /// `max_completion_tokens`). `model` and `messages` cannot be removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove_keys: Vec<String>,
    /// Downscale images whose longer side exceeds this (keeping the aspect ratio).
    pub image_max_side: Option<u32>,
    /// Send images re-encoded as JPEG at this quality (1-100). `None` sends them
    /// losslessly: PNG and JPEG files that need no downscaling go out as their own
    /// bytes, anything else as PNG.
    pub jpeg_quality: Option<u8>,
    /// Further attempts after the first, for connection failures, timeouts, HTTP 429
    /// and 5xx, and 200s whose body is not JSON. Other errors are never retried.
    pub max_retries: u32,
    /// Backoff scale: before retry `n` the client waits a random time in
    /// `[0, retry_base_ms * 2^(n-1)]` (capped at 30 s), or what `Retry-After` says.
    pub retry_base_ms: u64,
    /// What a million prompt tokens cost at this endpoint, for cost estimates and
    /// `--max-cost`; absent (and left out of the file) when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_prompt_per_million: Option<f64>,
    /// What a million completion tokens cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_completion_per_million: Option<f64>,
}

impl EndpointConfig {
    /// The endpoint's price; `None` unless both halves are set (a cost from one
    /// half would be silently low).
    pub fn price(&self) -> Option<Price> {
        Some(Price {
            prompt_per_million: self.price_prompt_per_million?,
            completion_per_million: self.price_completion_per_million?,
        })
    }

    pub fn set_price(&mut self, price: Option<Price>) {
        self.price_prompt_per_million = price.map(|p| p.prompt_per_million);
        self.price_completion_per_million = price.map(|p| p.completion_per_million);
    }
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            name: "local vLLM".into(),
            base_url: "http://localhost:8000/v1".into(),
            model: "Qwen/Qwen2-VL-7B-Instruct".into(),
            api_key_env: None,
            timeout_s: 120.0,
            max_in_flight: 4,
            temperature: 0.0,
            max_tokens: 128,
            extra_body: serde_json::Map::new(),
            remove_keys: Vec::new(),
            image_max_side: None,
            jpeg_quality: None,
            max_retries: 3,
            retry_base_ms: 500,
            price_prompt_per_million: None,
            price_completion_per_million: None,
        }
    }
}

/// One piece of the user message, sent in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// An image file; encoded once per file version and settings (see [`EndpointConfig`]).
    Image(PathBuf),
    /// An image made for this request (the anomaly map's outlined query): encoded
    /// bytes of a format the image crate reads; `name` says what it is in errors.
    Generated {
        name: String,
        bytes: std::sync::Arc<[u8]>,
    },
}

/// One chat turn: an optional system message and one user message made of parts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    pub system: Option<String>,
    pub parts: Vec<Part>,
    /// Per-request decoding keys (a run's sampling protocol); the default sends the
    /// endpoint's own settings only.
    pub decoding: Decoding,
}

/// Decoding keys one request sets on top of its endpoint's settings. They are
/// merged after the endpoint's `extra_body` (a run's protocol is what its manifest
/// records, so it must be what is sent); `remove_keys` still removes them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Decoding {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<u64>,
    /// Ask for `logprobs: true` with this many `top_logprobs` per token.
    pub top_logprobs: Option<u8>,
}

impl ChatRequest {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn system(mut self, text: impl Into<String>) -> Self {
        self.system = Some(text.into());
        self
    }
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.parts.push(Part::Text(text.into()));
        self
    }
    pub fn image(mut self, path: impl Into<PathBuf>) -> Self {
        self.parts.push(Part::Image(path.into()));
        self
    }
    /// Number of image parts.
    pub fn image_count(&self) -> usize {
        self.parts
            .iter()
            .filter(|p| matches!(p, Part::Image(_) | Part::Generated { .. }))
            .count()
    }
}

/// Tokens a server reports for one reply (`usage` in the OpenAI API; vLLM, Ollama,
/// llama.cpp and LM Studio send it too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    pub fn total(self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
    }
}

/// What a million tokens cost, as providers list prices (in the provider's
/// currency; the workbench never converts).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub prompt_per_million: f64,
    pub completion_per_million: f64,
}

impl Price {
    /// What `usage` costs at this price.
    pub fn cost(self, usage: Usage) -> f64 {
        (usage.prompt_tokens as f64 * self.prompt_per_million
            + usage.completion_tokens as f64 * self.completion_per_million)
            / 1e6
    }
}

/// A model's answer and what it took to get it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatReply {
    /// `choices[0].message.content` (text parts joined when the server sends a list).
    pub text: String,
    /// `reasoning_content` (vLLM, DeepSeek) or `reasoning` (Ollama, OpenRouter), when sent.
    pub reasoning: Option<String>,
    pub finish_reason: Option<String>,
    /// HTTP attempts made, 1 when the first one succeeded.
    pub attempts: u32,
    /// Wall time of the whole call: queueing for a slot, image encoding, retries.
    pub latency_ms: u64,
    /// The exact JSON body sent, each image data URL replaced by
    /// `{"sha256", "bytes", "mime", "width", "height"}` of the bytes sent.
    pub request_summary: serde_json::Value,
    /// Tokens the server reported, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// `choices[0].logprobs.content`, when asked for and sent in a shape we read;
    /// a server that omits or mangles it leaves this `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<TokenLogprob>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials_and_queries() {
        assert_eq!(
            url_without_secrets("https://user:pw@host.test:8443/v1?key=abc#x"),
            "https://host.test:8443/v1"
        );
        assert_eq!(
            url_without_secrets("http://127.0.0.1:8000/v1"),
            "http://127.0.0.1:8000/v1"
        );
        // An @ in the path is not a credential.
        assert_eq!(url_without_secrets("http://h/a@b"), "http://h/a@b");
    }
}
