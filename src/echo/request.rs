//! Turning a rendered template into a chat request, and describing that request in
//! a trace exactly as sent (text verbatim, images by role and path; the client's
//! own summary adds hashes and sizes).

use std::path::{Path, PathBuf};

use super::prompt::{ImageSlot, PromptSet, Segment, TemplateError, Vars, names};
use super::trace::{ImageRole, PromptPart, RequestTrace};
use crate::mllm::{ChatRequest, Part};

/// A request plus its description for the trace.
pub struct BuiltRequest {
    pub request: ChatRequest,
    pub summary: RequestTrace,
}

/// Renders `template` of `set` and places the images: every reference image at
/// `{image:reference}`, the query at `{image:query}`.
///
/// With `strict` (the calls that look at the images), the template must place the
/// query exactly once and, when there are references, them exactly once: a prompt
/// that silently drops an image would make every result after it meaningless.
/// Without it (the knowledge selection call), images go only where the template
/// happens to place them.
pub fn build_request(
    set: &PromptSet,
    template: &str,
    vars: &Vars,
    references: &[PathBuf],
    query: &Path,
    strict: bool,
) -> Result<BuiltRequest, TemplateError> {
    let mut vars = vars.clone();
    vars.reference_images = references.len();
    vars.query_image = true;
    let segments = set.render(template, &vars)?;
    let count = |slot| {
        segments
            .iter()
            .filter(|s| matches!(s, Segment::Image(x) if *x == slot))
            .count()
    };
    let bad = |message: String| TemplateError::Images {
        set: set.name.clone(),
        template: template.to_string(),
        message,
    };
    let queries = count(ImageSlot::Query);
    if strict && queries != 1 {
        return Err(bad(format!(
            "places the query image {queries} times (`{{image:query}}` must appear exactly once)"
        )));
    }
    let refs = count(ImageSlot::Reference);
    if strict && !references.is_empty() && refs != 1 {
        return Err(bad(format!(
            "the plan sends a reference image but the template places `{{image:reference}}` {refs} times (exactly once is needed)"
        )));
    }
    let system = if set.has(names::SYSTEM) {
        Some(set.render_text(names::SYSTEM, &vars)?).filter(|s| !s.is_empty())
    } else {
        None
    };
    let mut parts = Vec::new();
    let mut described = Vec::new();
    for seg in segments {
        match seg {
            Segment::Text(t) => {
                described.push(PromptPart::Text { text: t.clone() });
                parts.push(Part::Text(t));
            }
            Segment::Image(ImageSlot::Reference) => {
                for (i, r) in references.iter().enumerate() {
                    described.push(PromptPart::Image {
                        image: ImageRole::Reference,
                        index: Some(i),
                        path: r.clone(),
                    });
                    parts.push(Part::Image(r.clone()));
                }
            }
            Segment::Image(ImageSlot::Query) => {
                described.push(PromptPart::Image {
                    image: ImageRole::Query,
                    index: None,
                    path: query.to_path_buf(),
                });
                parts.push(Part::Image(query.to_path_buf()));
            }
        }
    }
    let summary = RequestTrace {
        prompts: set.name.clone(),
        template: template.to_string(),
        system: system.clone(),
        parts: described,
    };
    Ok(BuiltRequest {
        request: ChatRequest {
            system,
            parts,
            decoding: Default::default(),
        },
        summary,
    })
}
