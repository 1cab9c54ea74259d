//! The model's own chat template, rendered with minijinja configured as
//! transformers configures Jinja2 for `apply_chat_template`.

use std::path::{Path, PathBuf};

use minijinja::{Environment, ErrorKind, Value as JinjaValue, context};
use serde::Serialize;

/// A chat template and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    pub source: String,
    /// The file it was read from, for errors.
    pub path: PathBuf,
    /// Special tokens the template may name (`bos_token`, `eos_token`, ...), as
    /// transformers passes them.
    pub special_tokens: Vec<(String, String)>,
}

/// A template that does not compile or fails while rendering.
#[derive(Debug, thiserror::Error)]
#[error("chat template {}", path.display())]
pub struct TemplateError {
    pub path: PathBuf,
    #[source]
    pub source: minijinja::Error,
}

/// One part of a user turn, in transformers' message format.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ContentPart<'a> {
    Image,
    Text { text: &'a str },
}

/// A message's content: a plain string (how OpenAI-compatible servers hand
/// a system prompt to the template) or a list of parts.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(&'a str),
    Parts(Vec<ContentPart<'a>>),
}

#[derive(Debug, Clone, Serialize)]
struct Message<'a> {
    role: &'a str,
    content: Content<'a>,
}

/// One part of a user turn, in the order the turn gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnPart<'a> {
    Image,
    Text(&'a str),
}

impl ChatTemplate {
    pub fn new(source: String, path: &Path) -> ChatTemplate {
        ChatTemplate {
            source,
            path: path.to_path_buf(),
            special_tokens: Vec::new(),
        }
    }

    /// One user turn (`images` image parts first, then `text`) with the
    /// generation prompt, as `processor.apply_chat_template(messages,
    /// add_generation_prompt=True, tokenize=False)` renders it.
    pub fn render_user_turn(&self, images: usize, text: &str) -> Result<String, TemplateError> {
        let mut parts = vec![TurnPart::Image; images];
        parts.push(TurnPart::Text(text));
        self.render_turn(None, &parts)
    }

    /// An optional system message, then one user turn of `parts` in order,
    /// with the generation prompt.
    pub fn render_turn(
        &self,
        system: Option<&str>,
        parts: &[TurnPart],
    ) -> Result<String, TemplateError> {
        let content = parts
            .iter()
            .map(|p| match *p {
                TurnPart::Image => ContentPart::Image,
                TurnPart::Text(text) => ContentPart::Text { text },
            })
            .collect();
        let mut messages = Vec::with_capacity(2);
        if let Some(system) = system {
            messages.push(Message {
                role: "system",
                content: Content::Text(system),
            });
        }
        messages.push(Message {
            role: "user",
            content: Content::Parts(content),
        });
        self.render(&messages)
    }

    fn render(&self, messages: &[Message]) -> Result<String, TemplateError> {
        let fail = |source| TemplateError {
            path: self.path.clone(),
            source,
        };
        let mut env = Environment::new();
        // transformers' `_compile_jinja_template`: trim_blocks and lstrip_blocks
        // on, the trailing newline of the template dropped (Jinja2's default).
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        // Jinja2 templates call Python's str methods; Qwen3's call `startswith`
        // and `endswith` on every user turn.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<(), minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template("chat", &self.source).map_err(fail)?;
        let template = env.get_template("chat").map_err(fail)?;
        let mut extra: std::collections::BTreeMap<&str, JinjaValue> = self
            .special_tokens
            .iter()
            .map(|(k, v)| (k.as_str(), JinjaValue::from(v.as_str())))
            .collect();
        extra.insert("add_generation_prompt", JinjaValue::from(true));
        extra.insert("messages", JinjaValue::from_serialize(messages));
        template
            .render(context! { ..JinjaValue::from_serialize(&extra) })
            .map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(source: &str) -> ChatTemplate {
        ChatTemplate::new(source.to_owned(), Path::new("chat_template.jinja"))
    }

    #[test]
    fn trims_blocks_like_transformers() {
        let t = template(
            "{% for m in messages %}\n  {% for p in m.content %}\n[{{ p.type }}]\n  {% endfor %}\n{% endfor %}\n{% if add_generation_prompt %}GO{% endif %}\n",
        );
        assert_eq!(
            t.render_user_turn(2, "hi").unwrap(),
            "[image]\n[image]\n[text]\nGO"
        );
    }

    #[test]
    fn a_system_message_comes_first_and_parts_keep_their_order() {
        let t = template(
            "{% for m in messages %}<{{ m.role }}>{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}[{{ p.type }}{% if p.text %}:{{ p.text }}{% endif %}]{% endfor %}{% endif %}{% endfor %}",
        );
        let parts = [TurnPart::Text("a"), TurnPart::Image, TurnPart::Text("b")];
        assert_eq!(
            t.render_turn(Some("sys"), &parts).unwrap(),
            "<system>sys<user>[text:a][image][text:b]"
        );
    }

    #[test]
    fn raise_exception_fails_the_render_with_its_message() {
        let t = template("{{ raise_exception('only user turns') }}");
        let err = t.render_user_turn(0, "x").unwrap_err();
        let text = crate::util::error::chain(&err);
        assert!(text.contains("only user turns"), "{text}");
        assert!(text.contains("chat_template.jinja"), "{text}");
    }

    #[test]
    fn python_string_methods_work() {
        let t = template(
            "{% set s = messages[0].content[-1].text %}{{ s.startswith('<a>') }} {{ s.endswith('x') }} {{ s.upper() }}",
        );
        // Booleans print as Jinja2 prints them.
        assert_eq!(t.render_user_turn(0, "<a>x").unwrap(), "True True <A>X");
    }

    #[test]
    fn special_tokens_are_variables() {
        let mut t = template("{{ bos_token }}{{ messages[0].content[0].text }}{{ eos_token }}");
        t.special_tokens = vec![
            ("bos_token".into(), "<s>".into()),
            ("eos_token".into(), "</s>".into()),
        ];
        assert_eq!(t.render_user_turn(0, "q").unwrap(), "<s>q</s>");
    }
}
