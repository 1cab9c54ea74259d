//! The pipeline's chat interface over a model run in-process: each request's
//! system prompt and parts (text and images, in order) go through the model's
//! own chat template, and the reply is decoded on a blocking thread so the
//! async runtime keeps serving progress and cancellation.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use image::RgbImage;
use serde_json::json;

use super::backend::{ChatBackend, ChatFuture};
use super::error::PipelineError;
use crate::jobs::CancelToken;
use crate::local::pool::SharedModel;
use crate::local::{LocalError, LocalModel, SamplingOptions, StopReason, TurnPart};
use crate::mllm::{ChatReply, ChatRequest, Decoding, Part, Usage};
use crate::vision::decode::{DecodeLimits, decode_rgb8, decode_rgb8_bytes};

/// A loaded local model behind [`ChatBackend`]. The model answers one request
/// at a time; requests made meanwhile wait their turn.
pub struct LocalBackend {
    model: Arc<Mutex<LocalModel>>,
    label: Arc<str>,
    options: SamplingOptions,
    /// Replies made through this handle (a run's record counts its question's).
    calls: AtomicU32,
    /// Tokens of those replies, summed.
    usage: Mutex<Option<Usage>>,
    /// Told the reply so far as tokens come (the app's Decision Maker card).
    stream: Option<ReplySink>,
}

/// Receives the text of a reply so far, each time a token completes a character.
pub type ReplySink = Arc<dyn Fn(&str) + Send + Sync>;

impl LocalBackend {
    /// `label` names the model in traces and cache keys (`local:DIR`).
    pub fn new(model: LocalModel, label: impl Into<Arc<str>>, options: SamplingOptions) -> Self {
        Self::shared(Arc::new(Mutex::new(model)), label, options)
    }

    /// A model others may be using too (`local::pool`): requests take turns.
    pub fn shared(
        model: SharedModel,
        label: impl Into<Arc<str>>,
        options: SamplingOptions,
    ) -> Self {
        LocalBackend {
            model,
            label: label.into(),
            options,
            calls: AtomicU32::new(0),
            usage: Mutex::new(None),
            stream: None,
        }
    }

    /// This handle tells `sink` the reply so far while it is generated.
    pub fn streaming(mut self, sink: ReplySink) -> Self {
        self.stream = Some(sink);
        self
    }

    /// The same loaded model with counts of its own from zero, as
    /// [`super::backend::MllmBackend::recount`] does for an endpoint: each question's
    /// record counts only its own calls and tokens.
    pub fn recount(&self) -> Self {
        LocalBackend {
            model: Arc::clone(&self.model),
            label: self.label.clone(),
            options: self.options.clone(),
            calls: AtomicU32::new(0),
            usage: Mutex::new(None),
            stream: None,
        }
    }

    /// Whether this handle answers with `model` (the same weights, not a copy).
    pub fn uses(&self, model: &SharedModel) -> bool {
        Arc::ptr_eq(&self.model, model)
    }

    /// Calls made through this handle (a local model makes one attempt per call).
    pub fn attempts(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Prompt and generated tokens of this handle's replies, summed.
    pub fn usage(&self) -> Option<Usage> {
        *self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The backend's options with the request's own decoding keys over them (a
/// protocol's samples each bring a temperature and seed), as the HTTP client
/// merges them over an endpoint's.
fn sampling_for(base: &SamplingOptions, decoding: &Decoding) -> SamplingOptions {
    SamplingOptions {
        max_tokens: base.max_tokens,
        temperature: decoding.temperature.or(base.temperature),
        top_p: decoding.top_p.or(base.top_p),
        seed: decoding.seed.unwrap_or(base.seed),
    }
}

/// The request's images, decoded as every other image is: files from disk, and
/// images made for the request (the anomaly map's outlined query) from memory.
fn images_of(req: &ChatRequest) -> Result<Vec<RgbImage>, PipelineError> {
    req.parts
        .iter()
        .filter_map(|part| match part {
            Part::Text(_) => None,
            Part::Image(path) => Some((decode_rgb8(path, DecodeLimits::default()), path.clone())),
            Part::Generated { name, bytes } => {
                let path = PathBuf::from(name);
                let decoded = decode_rgb8_bytes(bytes, &path, DecodeLimits::default());
                Some((decoded, path))
            }
        })
        .enumerate()
        .map(|(index, (decoded, path))| {
            decoded.map_err(|source| {
                PipelineError::from(LocalError::ReadImage {
                    index,
                    path,
                    source,
                })
            })
        })
        .collect()
}

impl ChatBackend for LocalBackend {
    fn chat<'a>(&'a self, req: &'a ChatRequest, cancel: &'a CancelToken) -> ChatFuture<'a> {
        let model = Arc::clone(&self.model);
        let options = sampling_for(&self.options, &req.decoding);
        let label = self.label.clone();
        let req = req.clone();
        let cancel = cancel.clone();
        let stream = self.stream.clone();
        Box::pin(async move {
            let started = Instant::now();
            let work = tokio::task::spawn_blocking(move || {
                let images = images_of(&req)?;
                let parts: Vec<TurnPart> = req
                    .parts
                    .iter()
                    .map(|p| match p {
                        Part::Image(_) | Part::Generated { .. } => TurnPart::Image,
                        Part::Text(t) => TurnPart::Text(t),
                    })
                    .collect();
                let sizes: Vec<[u32; 2]> = images.iter().map(|i| [i.width(), i.height()]).collect();
                let mut model = model.lock().unwrap_or_else(|e| e.into_inner());
                let tokenizer = model.processor.tokenizer.clone();
                let mut so_far = Vec::new();
                let mut shown = String::new();
                let on_token = |token: u32| {
                    let Some(sink) = &stream else { return };
                    // The whole reply decoded each time: a character split over
                    // several byte tokens shows once it is complete.
                    so_far.push(token);
                    if let Ok(text) = tokenizer.decode_reply(&so_far)
                        && text != shown
                        && !text.ends_with('\u{fffd}')
                    {
                        sink(&text);
                        shown = text;
                    }
                };
                let reply = model.reply_turn(
                    req.system.as_deref(),
                    &parts,
                    &images,
                    &options,
                    &cancel,
                    on_token,
                )?;
                if reply.generation.stop == StopReason::Cancelled {
                    return Err(PipelineError::Cancelled { traces: Vec::new() });
                }
                Ok((reply, req, sizes))
            });
            let (reply, req, sizes) = work.await.map_err(|e| PipelineError::Backend {
                message: format!("the local model's thread stopped: {e}"),
            })??;
            let g = &reply.generation;
            let usage = Usage {
                prompt_tokens: reply.prompt_tokens.len() as u64,
                completion_tokens: g.tokens.len() as u64,
            };
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.usage
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(Usage::default)
                .add(usage);
            Ok(ChatReply {
                text: reply.text.clone(),
                reasoning: None,
                logprobs: None,
                finish_reason: Some(
                    match g.stop {
                        StopReason::MaxTokens => "length",
                        _ => "stop",
                    }
                    .to_owned(),
                ),
                attempts: 1,
                latency_ms: started.elapsed().as_millis() as u64,
                request_summary: json!({
                    "model": &*label,
                    "system": req.system,
                    // Like the HTTP client's summary, images by what was
                    // read rather than where from.
                    "parts": summarise_parts(&req, &sizes),
                    "prompt_tokens": reply.prompt_tokens.len(),
                    "max_tokens": self.options.max_tokens,
                    "temperature": self.options.temperature,
                }),
                usage: Some(usage),
            })
        })
    }

    fn describe(&self) -> String {
        self.label.to_string()
    }
}

fn summarise_parts(req: &ChatRequest, sizes: &[[u32; 2]]) -> Vec<serde_json::Value> {
    let mut sizes = sizes.iter();
    req.parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => json!({"type": "text", "text": t}),
            Part::Image(_) => {
                let [w, h] = sizes.next().copied().unwrap_or_default();
                json!({"type": "image", "width": w, "height": h})
            }
            Part::Generated { name, .. } => {
                let [w, h] = sizes.next().copied().unwrap_or_default();
                json!({"type": "image", "name": name, "width": w, "height": h})
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_s_decoding_keys_win_over_the_backend_s() {
        let base = SamplingOptions {
            max_tokens: 64,
            temperature: None,
            top_p: None,
            seed: 0,
        };
        let plain = sampling_for(&base, &Decoding::default());
        assert_eq!(plain.temperature, None);
        assert_eq!(plain.seed, 0);
        let sampled = sampling_for(
            &base,
            &Decoding {
                temperature: Some(0.7),
                seed: Some(12),
                ..Decoding::default()
            },
        );
        assert_eq!(sampled.temperature, Some(0.7));
        assert_eq!(sampled.seed, 12);
        assert_eq!(sampled.max_tokens, 64);
    }
}
