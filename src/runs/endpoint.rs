//! What answers for each endpoint of a run: an OpenAI-compatible server, or a
//! vision-language model loaded in-process (`local:DIR`, `local:hf:ORG/NAME`).
//!
//! Both are asked through the pipeline's `ChatBackend`; the run also needs, per
//! question, how many attempts and tokens it took, and per endpoint how many
//! questions it may have in flight: a local model answers one at a time (it holds
//! the machine's cores or its GPU), so its endpoint takes one question at once,
//! and a run uses the app's loaded copy of the model when there is one.

use crate::echo::backend::{ChatBackend, MllmBackend};
use crate::echo::local_backend::LocalBackend;
use crate::local::{ModelSource, SamplingOptions, default_device, folder_sha256, pool};
use crate::mllm::{EndpointConfig, MllmClient, Usage};

/// How an endpoint's base URL names a model run in-process.
pub const LOCAL_PREFIX: &str = "local:";

/// `local:SPEC`'s SPEC, when the endpoint is a local model.
pub fn local_spec(base_url: &str) -> Option<&str> {
    base_url.strip_prefix(LOCAL_PREFIX)
}

pub enum EndpointBackend {
    Http(MllmBackend),
    Local(LocalBackend),
}

/// An endpoint made ready: its backend, and for a local model the SHA-256 of
/// its folder (the run's manifest records it).
pub struct OpenedEndpoint {
    pub backend: EndpointBackend,
    pub model_sha256: Option<String>,
}

impl EndpointBackend {
    /// Connects (HTTP: checks the settings; nothing is sent) or loads the model
    /// (local: reads and maps the weights, hashes the folder). `label` names the
    /// backend in traces and cache keys. The error says what failed, for the run's
    /// message naming the endpoint.
    pub fn open(cfg: &EndpointConfig, label: String) -> Result<OpenedEndpoint, String> {
        let Some(spec) = local_spec(&cfg.base_url) else {
            let client = MllmClient::new(cfg.clone()).map_err(|e| e.to_string())?;
            return Ok(OpenedEndpoint {
                backend: EndpointBackend::Http(MllmBackend::with_label(client, label)),
                model_sha256: None,
            });
        };
        if spec.is_empty() {
            return Err("`local:` names no model folder (local:DIR or local:hf:ORG/NAME)".into());
        }
        let error = |e: &dyn std::error::Error| crate::util::error::chain(e);
        let source = ModelSource::parse(spec);
        let device = default_device().map_err(|e| error(&e))?;
        // The app's loaded copy when it holds this model (Batch beside Inspect),
        // else loaded here and shared with whoever asks next.
        let pooled = pool::get_or_load(&source, None, &device).map_err(|e| error(&e))?;
        let sha = folder_sha256(&pooled.folder).map_err(|e| error(&e))?;
        let options = SamplingOptions {
            max_tokens: cfg.max_tokens as usize,
            // The endpoint's temperature as the HTTP client sends it: 0 is greedy.
            temperature: (cfg.temperature > 0.0).then_some(cfg.temperature),
            ..SamplingOptions::default()
        };
        Ok(OpenedEndpoint {
            backend: EndpointBackend::Local(LocalBackend::shared(pooled.model, label, options)),
            model_sha256: Some(sha),
        })
    }

    /// The same endpoint with counts of its own from zero, for one question.
    pub fn recount(&self) -> EndpointBackend {
        match self {
            EndpointBackend::Http(b) => EndpointBackend::Http(b.recount()),
            EndpointBackend::Local(b) => EndpointBackend::Local(b.recount()),
        }
    }

    pub fn chat(&self) -> &dyn ChatBackend {
        match self {
            EndpointBackend::Http(b) => b,
            EndpointBackend::Local(b) => b,
        }
    }

    pub fn attempts(&self) -> u32 {
        match self {
            EndpointBackend::Http(b) => b.attempts(),
            EndpointBackend::Local(b) => b.attempts(),
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        match self {
            EndpointBackend::Http(b) => b.usage(),
            EndpointBackend::Local(b) => b.usage(),
        }
    }

    /// Questions this endpoint may have in flight at once.
    pub fn max_in_flight(&self) -> usize {
        match self {
            EndpointBackend::Http(b) => b.client().config().max_in_flight.max(1),
            EndpointBackend::Local(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_endpoint_uses_the_copy_already_loaded() {
        let folder = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tiny_qwen3vl");
        let device = default_device().unwrap();
        let held = pool::get_or_load(&ModelSource::Folder(folder.clone()), None, &device).unwrap();
        let cfg = EndpointConfig {
            base_url: format!("{LOCAL_PREFIX}{}", folder.display()),
            ..EndpointConfig::default()
        };
        let opened = EndpointBackend::open(&cfg, "local".into()).unwrap();
        let EndpointBackend::Local(backend) = &opened.backend else {
            panic!("not a local backend");
        };
        assert!(backend.uses(&held.model), "the run loaded a second copy");
        assert_eq!(opened.backend.max_in_flight(), 1);
        assert_eq!(opened.model_sha256.as_deref().map(str::len), Some(64));
    }
}
