//! The checks a strict server makes of a chat request before answering it.

use base64::Engine as _;
use hyper::StatusCode;
use serde_json::Value;

use crate::vision::decode::{DecodeLimits, decode_rgb8_bytes};

use super::MockConfig;

/// What a valid chat request asked for.
pub(super) struct Checked {
    pub(super) model: String,
    pub(super) images: usize,
    pub(super) prompt_chars: usize,
    pub(super) answer: String,
    /// `choices[0].logprobs` to send, when the request asked for them.
    pub(super) logprobs: Option<Value>,
}

pub(super) type Refusal = (StatusCode, String);

pub(super) fn bad(msg: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, msg.into())
}

/// Checks a chat request as a strict server would and computes the answer.
pub(super) fn check_chat(cfg: &MockConfig, body: &[u8]) -> Result<Checked, Refusal> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the request body is not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("the request body must be a JSON object"))?;
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        Some(_) => return Err(bad("`model` must be a non-empty string")),
        None => return Err(bad("`model` is required")),
    };
    if let Some(t) = obj.get("temperature")
        && !t.as_f64().is_some_and(|t| (0.0..=2.0).contains(&t))
    {
        return Err(bad(format!(
            "`temperature` must be a number from 0 to 2, not {t}"
        )));
    }
    if let Some(p) = obj.get("top_p")
        && !p.as_f64().is_some_and(|p| p > 0.0 && p <= 1.0)
    {
        return Err(bad(format!(
            "`top_p` must be a number above 0 and at most 1, not {p}"
        )));
    }
    if let Some(seed) = obj.get("seed")
        && !(seed.is_u64() || seed.is_i64())
    {
        return Err(bad(format!("`seed` must be an integer, not {seed}")));
    }
    let logprobs = match obj.get("logprobs") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(other) => return Err(bad(format!("`logprobs` must be a boolean, not {other}"))),
    };
    let top_logprobs = match obj.get("top_logprobs") {
        None => 0,
        Some(k) if !logprobs => {
            return Err(bad(format!(
                "`top_logprobs` ({k}) needs `logprobs` set to true"
            )));
        }
        Some(k) => match k.as_u64().filter(|k| *k <= 20) {
            Some(k) => k as usize,
            None => {
                return Err(bad(format!(
                    "`top_logprobs` must be an integer from 0 to 20, not {k}"
                )));
            }
        },
    };
    if let Some(m) = obj.get("max_tokens")
        && m.as_u64().is_none_or(|m| m == 0)
    {
        return Err(bad(format!(
            "`max_tokens` must be a positive integer, not {m}"
        )));
    }
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("`messages` is required and must be a list"))?;
    if messages.is_empty() {
        return Err(bad("`messages` is empty"));
    }
    let mut images = 0usize;
    let mut prompt_chars = 0usize;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        if !matches!(role, "system" | "user" | "assistant") {
            return Err(bad(format!(
                "messages[{i}].role must be system, user or assistant, not {:?}",
                m.get("role").unwrap_or(&Value::Null)
            )));
        }
        match m.get("content") {
            Some(Value::String(s)) => prompt_chars += s.len(),
            Some(Value::Array(parts)) => {
                for (j, p) in parts.iter().enumerate() {
                    let at = format!("messages[{i}].content[{j}]");
                    match p.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            let text = p.get("text").and_then(Value::as_str).ok_or_else(|| {
                                bad(format!("{at}: a text part needs a string `text`"))
                            })?;
                            prompt_chars += text.len();
                        }
                        Some("image_url") => {
                            if role != "user" {
                                return Err(bad(format!("{at}: images belong in user messages")));
                            }
                            let url = p
                                .get("image_url")
                                .and_then(|u| u.get("url"))
                                .and_then(Value::as_str)
                                .ok_or_else(|| {
                                    bad(format!(
                                        "{at}: an image_url part needs {{\"image_url\": {{\"url\": ...}}}}"
                                    ))
                                })?;
                            check_data_url(url, cfg.decode_images)
                                .map_err(|e| bad(format!("{at}: {e}")))?;
                            images += 1;
                        }
                        other => {
                            return Err(bad(format!(
                                "{at}: unsupported content part type {:?}",
                                other.unwrap_or("(none)")
                            )));
                        }
                    }
                }
            }
            Some(Value::Null) | None if role == "assistant" => {}
            _ => {
                return Err(bad(format!(
                    "messages[{i}].content must be a string or a list of parts"
                )));
            }
        }
    }
    if let Some(limit) = cfg.max_images
        && images > limit
    {
        return Err(bad(format!(
            "At most {limit} image(s) may be provided in one request."
        )));
    }
    if cfg.reject_unknown_model && !cfg.models.contains(&model) {
        return Err((
            StatusCode::NOT_FOUND,
            format!("The model `{model}` does not exist."),
        ));
    }
    let answer = cfg.responder.answer(&v);
    let logprobs = logprobs.then(|| super::responder::mock_logprobs(&v, &answer, top_logprobs));
    Ok(Checked {
        model,
        images,
        prompt_chars,
        answer,
        logprobs,
    })
}

/// A data URL must declare an image type, be base64, and hold an image of that type
/// (with `decode`, one that decodes; without, one whose first bytes say so).
pub(super) fn check_data_url(url: &str, decode: bool) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("data:") else {
        let shown: String = url.chars().take(40).collect();
        return Err(format!(
            "only base64 data URLs are accepted (like Ollama), not {shown:?}"
        ));
    };
    let (header, b64) = rest
        .split_once(',')
        .ok_or_else(|| "the data URL has no comma".to_string())?;
    let mime = header
        .strip_suffix(";base64")
        .ok_or_else(|| format!("the data URL is not base64 (header {header:?})"))?;
    if !mime.starts_with("image/") {
        return Err(format!("the data URL declares {mime:?}, not an image type"));
    }
    // 64 base64 characters are 48 bytes: every format's signature fits.
    let head = if decode {
        b64
    } else {
        b64.get(..b64.len().min(64)).unwrap_or(b64)
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(head)
        .map_err(|e| format!("the data URL's base64 is invalid: {e}"))?;
    let actual = match image::guess_format(&bytes) {
        Ok(image::ImageFormat::Png) => "image/png",
        Ok(image::ImageFormat::Jpeg) => "image/jpeg",
        Ok(image::ImageFormat::WebP) => "image/webp",
        Ok(image::ImageFormat::Bmp) => "image/bmp",
        Ok(image::ImageFormat::Tiff) => "image/tiff",
        Ok(image::ImageFormat::Gif) => "image/gif",
        _ => return Err("the data URL's bytes are not an image".into()),
    };
    if actual != mime && !(mime == "image/jpg" && actual == "image/jpeg") {
        return Err(format!(
            "the data URL declares {mime} but holds {actual} bytes"
        ));
    }
    if !decode {
        return Ok(());
    }
    decode_rgb8_bytes(
        &bytes,
        std::path::Path::new("(data URL)"),
        DecodeLimits::default(),
    )
    .map(|_| ())
    .map_err(|e| format!("the image does not decode: {e}"))
}
