//! Choosing an embedder from a short text, shared by the CLI and the settings file:
//! `descriptor`, `clip:PATH` (a Hugging Face model folder) or
//! `clip:hf:ORG/NAME[@REVISION]` (the local Hugging Face cache; never downloads).

use std::path::PathBuf;
use std::str::FromStr;

use super::ImageEmbedder;
use super::clip::{ClipEmbedder, ClipSource};
use super::descriptor::DescriptorEmbedder;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EmbedderSpec {
    /// The weight-free descriptor (the default: works on any machine).
    #[default]
    Descriptor,
    /// OpenAI CLIP image features from local weights.
    Clip(ClipSource),
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "unknown embedder `{0}`: use `descriptor`, `clip:PATH` or `clip:hf:ORG/NAME[@REVISION]`"
    )]
    Unknown(String),
    #[error(transparent)]
    Clip(#[from] super::clip::ClipError),
}

impl FromStr for EmbedderSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let s = s.trim();
        if s == "descriptor" || s == super::descriptor::ID {
            return Ok(EmbedderSpec::Descriptor);
        }
        if let Some(rest) = s.strip_prefix("clip:") {
            if let Some(repo) = rest.strip_prefix("hf:") {
                let (repo, revision) = match repo.split_once('@') {
                    Some((r, rev)) => (r.to_string(), Some(rev.to_string())),
                    None => (repo.to_string(), None),
                };
                if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) {
                    return Err(SpecError::Unknown(s.to_string()));
                }
                return Ok(EmbedderSpec::Clip(ClipSource::HfCache {
                    repo,
                    revision,
                    cache_dir: None,
                }));
            }
            if !rest.is_empty() {
                return Ok(EmbedderSpec::Clip(ClipSource::Folder(PathBuf::from(rest))));
            }
        }
        Err(SpecError::Unknown(s.to_string()))
    }
}

impl std::fmt::Display for EmbedderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EmbedderSpec::Descriptor => f.write_str("descriptor"),
            EmbedderSpec::Clip(ClipSource::Folder(p)) => write!(f, "clip:{}", p.display()),
            EmbedderSpec::Clip(ClipSource::HfCache { repo, revision, .. }) => match revision {
                Some(r) => write!(f, "clip:hf:{repo}@{r}"),
                None => write!(f, "clip:hf:{repo}"),
            },
        }
    }
}

impl EmbedderSpec {
    /// Loads the embedder (for CLIP: reads and checks the weights).
    pub fn load(&self) -> Result<Box<dyn ImageEmbedder>, SpecError> {
        match self {
            EmbedderSpec::Descriptor => Ok(Box::new(DescriptorEmbedder)),
            EmbedderSpec::Clip(source) => {
                let device = super::clip::default_device();
                Ok(Box::new(ClipEmbedder::load(source, &device)?))
            }
        }
    }

    /// Whether memories built with this embedder keep re-ranking thumbnails.
    pub fn wants_thumbs(&self) -> bool {
        matches!(self, EmbedderSpec::Descriptor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in [
            "descriptor",
            "clip:/models/clip",
            "clip:hf:openai/clip-vit-base-patch16",
            "clip:hf:a/b@main",
        ] {
            let spec: EmbedderSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        assert!("clip:".parse::<EmbedderSpec>().is_err());
        assert!("clip:hf:noslash".parse::<EmbedderSpec>().is_err());
        let err = "resnet".parse::<EmbedderSpec>().unwrap_err().to_string();
        assert!(err.contains("descriptor"), "{err}");
    }
}
