//! What can go wrong when asking a model, in sentences a user can act on.

use std::path::PathBuf;

/// Why a request to an MLLM endpoint failed. Every message names the URL (or the
/// image file) involved; [`MllmError::hint`] adds the likely cause and fix.
///
/// Messages never contain the API key: bodies echoed by the server are redacted.
#[derive(Debug, thiserror::Error)]
pub enum MllmError {
    #[error("invalid endpoint settings: {msg}")]
    Config { msg: String },
    #[error(
        "the endpoint {url} needs an API key, but the environment variable {var} is not set or is empty"
    )]
    MissingApiKey { url: String, var: String },
    #[error("cannot connect to {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("{url} did not answer within {after_s} s")]
    Timeout { url: String, after_s: f64 },
    #[error("{url} answered HTTP {status}: {body_head}")]
    Http {
        url: String,
        status: u16,
        /// The first 200 characters of the reply body.
        body_head: String,
    },
    #[error("the connection to {url} failed before a full reply arrived: {detail}")]
    Transport { url: String, detail: String },
    /// A 200 whose body does not parse: typically a proxy's or gateway's HTML page
    /// sent in the model's place, which the next attempt may well get past.
    #[error("{url} answered HTTP 200 with a body that is not JSON ({detail}): {body_head}")]
    NotJson {
        url: String,
        detail: String,
        body_head: String,
    },
    #[error("{url} sent a reply that is not an OpenAI chat completion ({detail}): {body_head}")]
    BadReply {
        url: String,
        detail: String,
        body_head: String,
    },
    #[error("{url} sent a chat completion without text in choices[0].message.content: {body_head}")]
    NoContent { url: String, body_head: String },
    #[error("the request to {url} was cancelled")]
    Cancelled { url: String },
    /// `msg` names the file.
    #[error("{msg}")]
    Image { path: PathBuf, msg: String },
}

/// vLLM's refusal when a prompt carries more images than `--limit-mm-per-prompt`.
pub(crate) fn image_limit_from_body(body: &str) -> Option<usize> {
    // "At most 1 image(s) may be provided in one request." (older: "in one prompt.")
    let at = body.find("At most ")?;
    let rest = &body[at + "At most ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    if tail.trim_start().starts_with("image") {
        digits.parse().ok()
    } else {
        None
    }
}

/// llama-server without a projector ("image input is not supported - hint: ... mmproj"),
/// llamafile ("not compiled for multimodal"), and similar refusals.
fn image_unsupported(body: &str) -> bool {
    let lower = body.to_ascii_lowercase();
    (lower.contains("image") || lower.contains("multimodal") || lower.contains("vision"))
        && (lower.contains("not supported")
            || lower.contains("unsupported")
            || lower.contains("mmproj")
            || lower.contains("not compiled for multimodal"))
}

/// The reply says the request's images can never be accepted as sent.
pub(crate) fn cannot_take_images(body: &str) -> bool {
    image_limit_from_body(body).is_some() || image_unsupported(body)
}

impl MllmError {
    /// Whether another attempt may succeed: connection failures, timeouts, rate
    /// limits, server errors and 200s that are not JSON (a proxy answering for a
    /// busy or restarting model). A 4xx other than 429 means the request itself is
    /// wrong, and sending it again would fail the same way.
    pub fn is_retryable(&self) -> bool {
        match self {
            MllmError::Connect { .. }
            | MllmError::Timeout { .. }
            | MllmError::Transport { .. }
            | MllmError::NotJson { .. } => true,
            // llama-server reports a model without image support as a 500: asking
            // again cannot help.
            MllmError::Http {
                status, body_head, ..
            } => (*status == 429 || *status >= 500) && !cannot_take_images(body_head),
            _ => false,
        }
    }

    /// The likely cause and what to do about it, when one is known.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            MllmError::Config { .. } => Some(
                "fix the endpoint in the settings: base_url like http://localhost:8000/v1 and a model name",
            ),
            MllmError::MissingApiKey { .. } => Some(
                "export the variable with the key before starting the workbench, or clear api_key_env for servers without keys",
            ),
            MllmError::Connect { .. } => Some(
                "is the server running and is base_url's host and port right? (vLLM listens on 8000, Ollama on 11434, llama-server on 8080, LM Studio on 1234)",
            ),
            MllmError::Timeout { .. } => Some(
                "the model is slow or overloaded: raise timeout_s, lower max_in_flight, or set image_max_side to send smaller images",
            ),
            MllmError::Transport { .. } => Some(
                "the server closed the connection: it may have crashed or restarted; check its log",
            ),
            MllmError::Http {
                status, body_head, ..
            } => http_hint(*status, body_head),
            MllmError::NotJson { .. } => Some(
                "something between the workbench and the model (a proxy or gateway) answered instead of it; such replies are retried, and if every reply is like this, check base_url: it should be the API root, usually ending in /v1",
            ),
            MllmError::BadReply { .. } => Some(
                "this does not look like an OpenAI-compatible API: base_url should be the API root, usually ending in /v1",
            ),
            MllmError::NoContent { .. } => Some(
                "the model produced no answer text: if finish_reason is \"length\", raise max_tokens (reasoning models can spend all tokens thinking)",
            ),
            MllmError::Cancelled { .. } => None,
            MllmError::Image { .. } => Some(
                "check that the file exists and is a readable PNG, JPEG, BMP, TIFF or WebP image",
            ),
        }
    }

    /// Replaces every occurrence of `secret` in the message fields (servers sometimes
    /// echo the key they rejected).
    pub(crate) fn redact(self, secret: Option<&str>) -> MllmError {
        let Some(secret) = secret.filter(|s| s.len() >= 4) else {
            return self;
        };
        let r = |s: String| s.replace(secret, "***");
        match self {
            MllmError::Http {
                url,
                status,
                body_head,
            } => MllmError::Http {
                url,
                status,
                body_head: r(body_head),
            },
            MllmError::BadReply {
                url,
                detail,
                body_head,
            } => MllmError::BadReply {
                url,
                detail: r(detail),
                body_head: r(body_head),
            },
            MllmError::NotJson {
                url,
                detail,
                body_head,
            } => MllmError::NotJson {
                url,
                detail: r(detail),
                body_head: r(body_head),
            },
            MllmError::NoContent { url, body_head } => MllmError::NoContent {
                url,
                body_head: r(body_head),
            },
            MllmError::Connect { url, detail } => MllmError::Connect {
                url,
                detail: r(detail),
            },
            MllmError::Transport { url, detail } => MllmError::Transport {
                url,
                detail: r(detail),
            },
            other => other,
        }
    }
}

/// The endpoint settings (as settings.toml writes them) for an API that rejects
/// `max_tokens` and wants `max_completion_tokens`: what the hint tells people to
/// write, checked by a test to parse and to do what the hint says.
#[cfg(test)]
pub(crate) const MAX_COMPLETION_TOKENS_TOML: &str =
    "remove_keys = [\"max_tokens\"]\nextra_body = { max_completion_tokens = 128 }";

/// TOML has no null, so the hint names the key to leave out rather than a null
/// value; the lines are [`MAX_COMPLETION_TOKENS_TOML`]'s, one after the other.
const MAX_COMPLETION_TOKENS_HINT: &str = "this API wants max_completion_tokens instead of max_tokens: in the endpoint's settings (settings.toml) set remove_keys = [\"max_tokens\"] and extra_body = { max_completion_tokens = 128 }";

fn http_hint(status: u16, body: &str) -> Option<&'static str> {
    let lower = body.to_ascii_lowercase();
    if let Some(n) = image_limit_from_body(body) {
        return Some(if n == 0 {
            "the served model takes no images (a text-only model, or vLLM started with --language-model-only): serve a vision model"
        } else if n == 1 {
            "the server accepts one image per prompt: start vLLM with --limit-mm-per-prompt '{\"image\":2}'"
        } else {
            "the server accepts fewer images per prompt than this request has: raise vLLM's --limit-mm-per-prompt"
        });
    }
    if image_unsupported(body) {
        return Some(
            "the model or server cannot read images: use a vision model (llama-server needs its multimodal projector, --mmproj, or -hf with a VL GGUF)",
        );
    }
    if lower.contains("max_completion_tokens") {
        return Some(MAX_COMPLETION_TOKENS_HINT);
    }
    match status {
        401 | 403 => Some(
            "the API key is missing or wrong: set api_key_env to the name of a variable holding a valid key",
        ),
        404 if lower.contains("model") => Some(
            "the server does not serve this model name: pick one that GET {base_url}/models lists",
        ),
        404 => Some("check base_url: it should be the API root, usually ending in /v1"),
        413 => Some(
            "the request is too large: set image_max_side or jpeg_quality to send smaller images",
        ),
        400 if lower.contains("context")
            || lower.contains("too long")
            || lower.contains("maximum") =>
        {
            Some(
                "the prompt is too long for the model's context: set image_max_side, or raise the server's max model length",
            )
        }
        429 => Some("the server is rate limiting: lower max_in_flight or raise max_retries"),
        500..=599 => {
            Some("the server failed: check its log (out of GPU memory is common with large images)")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_image_limit_is_recognised() {
        assert_eq!(
            image_limit_from_body(
                r#"{"object":"error","message":"At most 1 image(s) may be provided in one request."}"#
            ),
            Some(1)
        );
        assert_eq!(
            image_limit_from_body("At most 3 images may be provided in one prompt."),
            Some(3)
        );
        assert_eq!(image_limit_from_body("At most 3 tokens"), None);
        let e = MllmError::Http {
            url: "http://x/v1/chat/completions".into(),
            status: 400,
            body_head: "At most 1 image(s) may be provided in one request.".into(),
        };
        assert!(e.hint().unwrap().contains("--limit-mm-per-prompt"));
        assert!(!e.is_retryable());
    }

    #[test]
    fn llama_server_without_projector_is_not_retried() {
        let e = MllmError::Http {
            url: "http://x/v1/chat/completions".into(),
            status: 500,
            body_head: r#"{"code":500,"message":"image input is not supported - hint: if this is unexpected, you may need to provide the mmproj","type":"server_error"}"#.into(),
        };
        assert!(!e.is_retryable());
        assert!(e.hint().unwrap().contains("--mmproj"));
        let text_only = MllmError::Http {
            url: String::new(),
            status: 400,
            body_head: "At most 0 image(s) may be provided in one prompt.".into(),
        };
        assert!(text_only.hint().unwrap().contains("takes no images"));
    }

    #[test]
    fn retryable_statuses() {
        let http = |status| MllmError::Http {
            url: String::new(),
            status,
            body_head: String::new(),
        };
        assert!(http(429).is_retryable());
        assert!(http(500).is_retryable());
        assert!(http(503).is_retryable());
        assert!(!http(400).is_retryable());
        assert!(!http(404).is_retryable());
        assert!(!http(401).is_retryable());
    }

    #[test]
    fn redaction_removes_echoed_keys() {
        let e = MllmError::Http {
            url: "u".into(),
            status: 401,
            body_head: "Incorrect API key provided: sk-secret-123".into(),
        }
        .redact(Some("sk-secret-123"));
        assert!(!e.to_string().contains("sk-secret-123"), "{e}");
        assert!(e.to_string().contains("***"));
    }
}
