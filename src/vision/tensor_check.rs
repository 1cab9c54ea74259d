//! Does a safetensors file hold the model we are about to build? Shared by the
//! CLIP and DINOv2 loaders, each of which words the answer in its own error.
//!
//! The key prefix in front of an anchor tensor is found first (empty for
//! transformers' own files, `clip.` or `model.` for checkpoints saved inside a
//! wrapper), then every required tensor's presence, dtype and shape is
//! checked, so that a wrong file fails with one clear sentence instead of a
//! random or garbled model.

use candle_core::safetensors::MmapedSafetensors;

/// What is wrong with the file, without its path (the caller adds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorProblem {
    Missing {
        key: String,
    },
    /// The anchor stands under several prefixes: several models in one file.
    SeveralModels {
        prefixes: Vec<String>,
    },
    Dtype {
        key: String,
        dtype: String,
    },
    Shape {
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

/// The key prefix in front of `anchor`, once every `required` tensor (keys
/// without the prefix) is there in a float dtype and the expected shape.
pub fn check_tensors(
    tensors: &MmapedSafetensors,
    anchor: &str,
    required: Vec<(String, Vec<usize>)>,
) -> Result<String, TensorProblem> {
    let mut anchors: Vec<String> = tensors
        .tensors()
        .into_iter()
        .filter_map(|(name, _)| name.strip_suffix(anchor).map(str::to_owned))
        .filter(|prefix| prefix.is_empty() || prefix.ends_with('.'))
        .collect();
    anchors.sort();
    let prefix = match anchors.as_slice() {
        [] => return Err(TensorProblem::Missing { key: anchor.into() }),
        [one] => one.clone(),
        many => {
            return Err(TensorProblem::SeveralModels {
                prefixes: many.to_vec(),
            });
        }
    };
    for (key, expected) in required {
        let key = format!("{prefix}{key}");
        let Ok(view) = tensors.get(&key) else {
            return Err(TensorProblem::Missing { key });
        };
        let dtype = format!("{:?}", view.dtype());
        if !matches!(dtype.as_str(), "F32" | "F16" | "BF16") {
            return Err(TensorProblem::Dtype { key, dtype });
        }
        if view.shape() != expected.as_slice() {
            return Err(TensorProblem::Shape {
                key,
                expected,
                found: view.shape().to_vec(),
            });
        }
    }
    Ok(prefix)
}
