//! The one thing the pipeline needs from a model: answer a chat request. A trait
//! (rather than the HTTP client itself) keeps the pipeline testable without a
//! server and lets the GUI run it against a scripted backend for demos.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::error::PipelineError;
use crate::jobs::CancelToken;
use crate::mllm::{ChatReply, ChatRequest, EndpointConfig, MllmClient, MllmError, Part, Usage};

/// What [`ChatBackend::chat`] returns.
pub type ChatFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ChatReply, PipelineError>> + Send + 'a>>;

/// Anything that answers chat requests: the MLLM client, or a scripted fake.
pub trait ChatBackend: Send + Sync {
    fn chat<'a>(&'a self, req: &'a ChatRequest, cancel: &'a CancelToken) -> ChatFuture<'a>;
    /// Names the model behind it (traces, cache keys): `model at URL`.
    fn describe(&self) -> String;
}

/// The one adapter from the pipeline to the MLLM client. It names the model for
/// traces and cache keys, keeps the client's error whole
/// ([`PipelineError::Mllm`]) and counts every HTTP attempt its calls make,
/// retries before a final failure included, which a failed call's error cannot
/// say: the runner records that count for each question.
pub struct MllmBackend {
    client: MllmClient,
    label: Arc<str>,
    attempts: AtomicU32,
    /// Tokens of this adapter's replies (a question may make two calls: the separate
    /// reasoning call and the decision).
    usage: Mutex<Option<Usage>>,
}

impl MllmBackend {
    /// A client for `cfg`, named `model at URL`.
    pub fn new(cfg: EndpointConfig) -> Result<Self, MllmError> {
        let label = format!("{} at {}", cfg.model, cfg.base_url);
        Ok(Self::with_label(MllmClient::new(cfg)?, label))
    }

    /// An existing client under the name given.
    pub fn with_label(client: MllmClient, label: impl Into<Arc<str>>) -> Self {
        MllmBackend {
            client,
            label: label.into(),
            attempts: AtomicU32::new(0),
            usage: Mutex::new(None),
        }
    }

    /// The same client and name with a count of its own from zero, so that each
    /// question's record counts only its own attempts while the endpoint's
    /// connection pool and request slots stay shared.
    pub fn recount(&self) -> Self {
        MllmBackend {
            client: self.client.clone(),
            label: self.label.clone(),
            attempts: AtomicU32::new(0),
            usage: Mutex::new(None),
        }
    }

    /// HTTP attempts made through this adapter so far.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Tokens of the replies received through this adapter so far, summed; `None`
    /// when no reply reported any.
    pub fn usage(&self) -> Option<Usage> {
        *self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn client(&self) -> &MllmClient {
        &self.client
    }
}

impl ChatBackend for MllmBackend {
    fn chat<'a>(&'a self, req: &'a ChatRequest, cancel: &'a CancelToken) -> ChatFuture<'a> {
        Box::pin(async move {
            let reply = self.client.chat_counted(req, cancel, &self.attempts).await;
            if let Ok(ChatReply {
                usage: Some(usage), ..
            }) = &reply
            {
                let mut sum = self.usage.lock().unwrap_or_else(|e| e.into_inner());
                sum.get_or_insert_with(Usage::default).add(*usage);
            }
            reply.map_err(|e| {
                if cancel.is_cancelled() {
                    PipelineError::Cancelled { traces: Vec::new() }
                } else {
                    PipelineError::Mllm(e)
                }
            })
        })
    }

    fn describe(&self) -> String {
        self.label.to_string()
    }
}

/// A request as a [`ScriptedBackend`] saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedRequest {
    pub system: Option<String>,
    pub parts: Vec<RecordedPart>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordedPart {
    Text(String),
    Image(PathBuf),
    /// An image made for the request, by its name and encoded bytes.
    Generated {
        name: String,
        bytes: Vec<u8>,
    },
}

impl RecordedRequest {
    pub fn from_request(req: &ChatRequest) -> Self {
        RecordedRequest {
            system: req.system.clone(),
            parts: req
                .parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) => RecordedPart::Text(t.clone()),
                    Part::Image(p) => RecordedPart::Image(p.clone()),
                    Part::Generated { name, bytes } => RecordedPart::Generated {
                        name: name.clone(),
                        bytes: bytes.to_vec(),
                    },
                })
                .collect(),
        }
    }

    /// All text parts joined by newlines.
    pub fn text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|p| match p {
                RecordedPart::Text(t) => Some(t.as_str()),
                RecordedPart::Image(_) | RecordedPart::Generated { .. } => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The image paths in order.
    pub fn images(&self) -> Vec<PathBuf> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                RecordedPart::Image(p) => Some(p.clone()),
                RecordedPart::Text(_) | RecordedPart::Generated { .. } => None,
            })
            .collect()
    }
}

type Script = Box<dyn Fn(&RecordedRequest) -> Result<String, String> + Send + Sync>;

/// A backend without a model: it records every request and answers from a script
/// (a queue of replies, then a fallback function). For tests and offline demos.
pub struct ScriptedBackend {
    queue: Mutex<VecDeque<Result<String, String>>>,
    fallback: Script,
    requests: Mutex<Vec<RecordedRequest>>,
    /// Cancels this token when a request arrives (to test cancellation mid-run).
    cancel_on_call: Mutex<Option<(usize, CancelToken)>>,
}

impl ScriptedBackend {
    /// Answers every request with `reply`.
    pub fn constant(reply: &str) -> Self {
        let reply = reply.to_string();
        Self::with(move |_| Ok(reply.clone()))
    }

    /// Answers with `f(request)`; `Err(message)` simulates a failing server.
    pub fn with(
        f: impl Fn(&RecordedRequest) -> Result<String, String> + Send + Sync + 'static,
    ) -> Self {
        ScriptedBackend {
            queue: Mutex::new(VecDeque::new()),
            fallback: Box::new(f),
            requests: Mutex::new(Vec::new()),
            cancel_on_call: Mutex::new(None),
        }
    }

    /// Queues replies used before the fallback, in order.
    pub fn then(self, reply: Result<&str, &str>) -> Self {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(reply.map(str::to_string).map_err(str::to_string));
        self
    }

    /// Cancels `token` when request number `n` (0-based) arrives, and fails it.
    pub fn cancel_at(self, n: usize, token: CancelToken) -> Self {
        *self
            .cancel_on_call
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((n, token));
        self
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ChatBackend for ScriptedBackend {
    fn chat<'a>(&'a self, req: &'a ChatRequest, cancel: &'a CancelToken) -> ChatFuture<'a> {
        let recorded = RecordedRequest::from_request(req);
        let n = {
            let mut all = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            all.push(recorded.clone());
            all.len() - 1
        };
        if let Some((at, token)) = &*self
            .cancel_on_call
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            && *at == n
        {
            token.cancel();
        }
        let result = if cancel.is_cancelled() {
            Err(PipelineError::Cancelled { traces: Vec::new() })
        } else {
            let queued = self
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            queued
                .unwrap_or_else(|| (self.fallback)(&recorded))
                .map(|text| ChatReply {
                    text,
                    attempts: 1,
                    latency_ms: 0,
                    finish_reason: Some("stop".into()),
                    reasoning: None,
                    usage: None,
                    logprobs: None,
                    request_summary: serde_json::json!({
                        "parts": recorded.parts.len(),
                        "images": recorded.images().len(),
                    }),
                })
                .map_err(|message| PipelineError::Backend { message })
        };
        Box::pin(async move { result })
    }

    fn describe(&self) -> String {
        "scripted backend".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mllm::mock::{Fault, FaultPlan, MockConfig, MockServer};

    #[test]
    fn the_adapter_keeps_the_client_error_and_counts_each_questions_attempts() {
        let server = MockServer::start(MockConfig {
            faults: FaultPlan {
                then: Fault::Http500,
                ..FaultPlan::default()
            },
            ..MockConfig::default()
        })
        .unwrap();
        let backend = MllmBackend::new(EndpointConfig {
            base_url: server.url(),
            model: "mock-vl".into(),
            max_retries: 1,
            retry_base_ms: 1,
            ..EndpointConfig::default()
        })
        .unwrap();
        assert_eq!(backend.describe(), format!("mock-vl at {}", server.url()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let req = ChatRequest::new().text("Is the part defective?");
        let err = runtime
            .block_on(ChatBackend::chat(&backend, &req, &CancelToken::new()))
            .unwrap_err();
        let Some(MllmError::Http { status: 500, .. }) = err.mllm() else {
            panic!("the client's error was not kept: {err:?}");
        };
        // The text is the client's own sentence, as journals and traces record it.
        assert_eq!(err.to_string(), err.mllm().unwrap().to_string());
        assert_eq!(backend.attempts(), 2);

        // A recount shares the client but starts its own count.
        let again = backend.recount();
        assert_eq!(again.attempts(), 0);
        assert_eq!(again.describe(), backend.describe());
        let cancel = CancelToken::new();
        cancel.cancel();
        let err = runtime
            .block_on(ChatBackend::chat(&again, &req, &cancel))
            .unwrap_err();
        assert!(err.is_cancel(), "{err:?}");
        assert_eq!(backend.attempts(), 2);
    }
}
