//! The model's `tokenizer.json`, read by the `tokenizers` crate (the library
//! behind transformers' fast tokenizers), so that prompt token ids equal
//! transformers' without a Rust copy of any vocabulary or merge rule.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

/// Boxed errors from the `tokenizers` crate.
pub type TokenizersError = Box<dyn std::error::Error + Send + Sync>;

/// Why the tokenizer could not be loaded or could not encode.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot load the tokenizer {}", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: TokenizersError,
    },
    #[error("the tokenizer {} has no token {token:?}", path.display())]
    MissingToken { path: PathBuf, token: String },
    #[error("cannot tokenize the prompt with {}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: TokenizersError,
    },
}

/// A loaded `tokenizer.json`.
#[derive(Clone)]
pub struct PromptTokenizer {
    inner: Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTokenizer")
            .field("path", &self.path)
            .field("vocab", &self.inner.get_vocab_size(true))
            .finish()
    }
}

impl PromptTokenizer {
    pub fn load(path: &Path) -> Result<PromptTokenizer, TokenizerError> {
        let inner = Tokenizer::from_file(path).map_err(|source| TokenizerError::Load {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(PromptTokenizer {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// The ids of `text`, special tokens written in it recognised as such, with
    /// whatever the tokenizer's post-processor adds (transformers'
    /// `add_special_tokens=True`, the processor's default).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|source| TokenizerError::Encode {
                path: self.path.clone(),
                source,
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The id of a token the model relies on (`<|image_pad|>`, `<|im_end|>`, ...).
    pub fn token_id(&self, token: &str) -> Result<u32, TokenizerError> {
        self.inner
            .token_to_id(token)
            .ok_or_else(|| TokenizerError::MissingToken {
                path: self.path.clone(),
                token: token.to_owned(),
            })
    }

    /// Text of `ids`, special tokens kept.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, false)
            .map_err(|source| TokenizerError::Encode {
                path: self.path.clone(),
                source,
            })
    }

    /// Text of a reply's `ids` with special tokens left out (transformers'
    /// `decode(skip_special_tokens=True)`).
    pub fn decode_reply(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, true)
            .map_err(|source| TokenizerError::Encode {
                path: self.path.clone(),
                source,
            })
    }
}
