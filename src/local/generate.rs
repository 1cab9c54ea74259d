//! Decoding: greedy by default (what MMAD runs use), or sampled with a
//! temperature, top-p and a seed; stops at an end-of-turn token, at the token
//! limit, or when cancelled (checked before every token).

use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde_json::Value;

use super::LocalError;
use super::model::Qwen3Vl;
use super::model_dir::ModelDir;
use super::processor::ModelInputs;
use crate::jobs::CancelToken;

/// How tokens are chosen and how many at most.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    pub max_tokens: usize,
    /// `None` or `0`: greedy (the first largest logit, as `torch.argmax`).
    pub temperature: Option<f64>,
    /// Nucleus sampling; only with a temperature.
    pub top_p: Option<f64>,
    pub seed: u64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            max_tokens: 512,
            temperature: None,
            top_p: None,
            seed: 0,
        }
    }
}

/// Why decoding ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndOfTurn,
    MaxTokens,
    Cancelled,
}

/// One reply.
#[derive(Debug, Clone)]
pub struct Generation {
    /// As transformers' `generate` returns them: the end-of-turn token
    /// included when it was reached.
    pub tokens: Vec<u32>,
    pub stop: StopReason,
    /// The logits that chose the first token.
    pub first_logits: Vec<f32>,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

/// The tokens that end a reply: `generation_config.json`'s `eos_token_id`
/// (one id or a list), else `config.json`'s.
pub fn stop_tokens(dir: &ModelDir) -> Result<Vec<u32>, LocalError> {
    for (file, nested) in [("generation_config.json", false), ("config.json", true)] {
        let path = dir.folder.join(file);
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|source| LocalError::Io {
            path: path.clone(),
            source,
        })?;
        let json: Value = serde_json::from_str(&text).map_err(|source| LocalError::Json {
            path: path.clone(),
            source,
        })?;
        let value = json.get("eos_token_id").or_else(|| {
            nested
                .then(|| json.get("text_config")?.get("eos_token_id"))
                .flatten()
        });
        let ids: Vec<u32> = match value {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_u64)
                .filter_map(|v| u32::try_from(v).ok())
                .collect(),
            Some(v) => v
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        if !ids.is_empty() {
            return Ok(ids);
        }
    }
    Err(LocalError::Config {
        path: dir.folder.join("generation_config.json"),
        detail: "no `eos_token_id` here or in config.json: nothing says where a reply ends".into(),
    })
}

/// The index of the first largest value (NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// Runs `inputs` and decodes until a `stop` token, `options.max_tokens`, or
/// `cancel`; `on_token` sees each token as it is chosen.
pub fn generate(
    model: &mut Qwen3Vl,
    inputs: &ModelInputs,
    stop: &[u32],
    options: &SamplingOptions,
    cancel: &CancelToken,
    mut on_token: impl FnMut(u32),
) -> Result<Generation, LocalError> {
    let mut sampler = match options.temperature {
        Some(t) if t > 0.0 => Some(LogitsProcessor::from_sampling(
            options.seed,
            match options.top_p {
                Some(p) if p > 0.0 && p < 1.0 => Sampling::TopP { p, temperature: t },
                _ => Sampling::All { temperature: t },
            },
        )),
        _ => None,
    };
    let mut choose = |logits: &[f32]| -> Result<u32, LocalError> {
        match sampler.as_mut() {
            None => Ok(argmax(logits)),
            Some(s) => Tensor::from_slice(logits, logits.len(), &Device::Cpu)
                .and_then(|t| s.sample(&t))
                .map_err(|source| LocalError::Model {
                    what: "sampling a token",
                    source,
                }),
        }
    };
    let started = Instant::now();
    let Some(first_logits) = model.prefill(inputs, &|| cancel.is_cancelled())? else {
        return Ok(Generation {
            tokens: Vec::new(),
            stop: StopReason::Cancelled,
            first_logits: Vec::new(),
            prefill_ms: started.elapsed().as_secs_f64() * 1e3,
            decode_ms: 0.0,
        });
    };
    let prefill_ms = started.elapsed().as_secs_f64() * 1e3;
    let decode_started = Instant::now();
    let mut tokens = Vec::new();
    let mut logits = first_logits.clone();
    let reason = loop {
        if tokens.len() >= options.max_tokens {
            break StopReason::MaxTokens;
        }
        if cancel.is_cancelled() {
            break StopReason::Cancelled;
        }
        let token = choose(&logits)?;
        tokens.push(token);
        on_token(token);
        if stop.contains(&token) {
            break StopReason::EndOfTurn;
        }
        if tokens.len() < options.max_tokens {
            logits = model.step(token)?;
        }
    };
    Ok(Generation {
        tokens,
        stop: reason,
        first_logits,
        prefill_ms,
        decode_ms: decode_started.elapsed().as_secs_f64() * 1e3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_equal_maxima_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.25]), 1);
        assert_eq!(argmax(&[-1.0]), 0);
    }
}
