//! Reading `choices[0].logprobs.content` of a chat completion (OpenAI's shape, which
//! vLLM copies): one entry per generated token with its `logprob` and the
//! `top_logprobs` alternatives at that position.
//!
//! Servers differ and some send junk here (nulls, strings for numbers, a missing
//! list), so reading is forgiving per entry and all-or-nothing overall: an entry
//! without a token text is the end of what we can trust, and a reply whose list
//! gives nothing usable has no logprobs at all, never an error.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One alternative at a token position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f64,
}

/// One generated token with the alternatives the server listed for its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    /// `None` when the server sent no finite number for it.
    pub logprob: Option<f64>,
    pub top: Vec<TopLogprob>,
}

/// The tokens of `choice.logprobs.content`, or `None` when the server sent none we
/// can read.
pub(crate) fn parse_choice_logprobs(choice: &Value) -> Option<Vec<TokenLogprob>> {
    let content = choice.get("logprobs")?.get("content")?.as_array()?;
    let mut tokens = Vec::with_capacity(content.len());
    for entry in content {
        let Some(token) = entry.get("token").and_then(Value::as_str) else {
            break;
        };
        let top = entry
            .get("top_logprobs")
            .and_then(Value::as_array)
            .map(|alts| {
                alts.iter()
                    .filter_map(|a| {
                        Some(TopLogprob {
                            token: a.get("token")?.as_str()?.to_owned(),
                            logprob: finite(a.get("logprob")?)?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        tokens.push(TokenLogprob {
            token: token.to_owned(),
            logprob: entry.get("logprob").and_then(finite),
            top,
        });
    }
    (!tokens.is_empty()).then_some(tokens)
}

/// A log-probability: a finite number no greater than zero (a rounding error's
/// small positive value is read as zero).
fn finite(v: &Value) -> Option<f64> {
    let x = v.as_f64()?;
    x.is_finite().then_some(x.min(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_shape_is_read_token_by_token() {
        let choice = json!({"logprobs": {"content": [
            {"token": "Answer", "logprob": -0.01, "top_logprobs": [{"token": "Answer", "logprob": -0.01}]},
            {"token": " B", "logprob": -0.2, "top_logprobs": [
                {"token": " B", "logprob": -0.2}, {"token": " A", "logprob": -1.9},
                {"token": "C", "logprob": "oops"}, {"logprob": -3.0}
            ]}
        ]}});
        let tokens = parse_choice_logprobs(&choice).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[1].token, " B");
        assert_eq!(tokens[1].logprob, Some(-0.2));
        assert_eq!(
            tokens[1].top,
            vec![
                TopLogprob {
                    token: " B".into(),
                    logprob: -0.2
                },
                TopLogprob {
                    token: " A".into(),
                    logprob: -1.9
                }
            ],
            "alternatives without a token or a number are left out"
        );
    }

    #[test]
    fn missing_or_mangled_logprobs_are_none_not_errors() {
        for choice in [
            json!({}),
            json!({"logprobs": null}),
            json!({"logprobs": {"content": null}}),
            json!({"logprobs": {"content": "B"}}),
            json!({"logprobs": {"content": []}}),
            json!({"logprobs": {"content": [{"logprob": -1.0}]}}),
            json!({"logprobs": [1, 2, 3]}),
        ] {
            assert_eq!(parse_choice_logprobs(&choice), None, "{choice}");
        }
        // A token whose numbers are junk is kept with what is readable.
        let odd = json!({"logprobs": {"content": [{"token": "A", "logprob": null, "top_logprobs": "x"}]}});
        let tokens = parse_choice_logprobs(&odd).unwrap();
        assert_eq!(tokens[0].logprob, None);
        assert!(tokens[0].top.is_empty());
    }
}
