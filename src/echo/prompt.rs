//! Prompt templates: plain text files with a tiny placeholder syntax, so that the
//! exact wording sent to the model is data people can read, edit, version and
//! hash into run manifests.
//!
//! # Syntax
//! * `{name}` is replaced by a value (see below); `{{` and `}}` are literal braces.
//!   A `{` that does not start `{name}` stays as it is.
//! * `{image:reference}` and `{image:query}` mark where the reference image(s) and
//!   the query image go. Text between image markers becomes its own text part, so
//!   a template decides the interleaving (Echo: images first, then one text part;
//!   MMAD: lead-in, templates, lead-in, query, question).
//! * A line that holds nothing but one placeholder (and spaces) is dropped entirely
//!   when that placeholder renders empty, so optional blocks leave no blank lines.
//! * Each text part is trimmed; empty text parts are dropped.
//!
//! # Placeholders
//! Everywhere: `{question}`, `{options}` (one line per option, each rendered from
//! `option_line`), `{letters}` (`A, B, C`), `{category}` (`metal nut`), `{dataset}`,
//! `{type}` (MMAD's type name), `{k}` (number of reference images).
//! Main templates add the blocks `{reference}` (the `reference` template, empty
//! without a reference image), `{knowledge}` (the Knowledge Guide's snippet as is),
//! `{reasoning}` (the `scaffold` template, or the `observations` template around a
//! separate reasoning call's reply) and `{instruction}`. `option_line` knows only
//! `{letter}` and `{text}`; `observations` adds `{observations}`; the `knowledge_*`
//! templates add `{entries}`.
//!
//! # Sets
//! A prompt set is a folder of `<template>.txt` files. The bundled sets (`echo`,
//! `mmad`) are compiled in; a folder given at run time overrides them file by file,
//! and a set missing a file falls back to the bundled `echo` file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

/// Which image a marker stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageSlot {
    Reference,
    Query,
}

/// A piece of a rendered prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    Image(ImageSlot),
}

/// Template names with a fixed role; every other name is a main template.
pub mod names {
    pub const OPTION_LINE: &str = "option_line";
    pub const INSTRUCTION: &str = "instruction";
    pub const SYSTEM: &str = "system";
    pub const REFERENCE: &str = "reference";
    pub const SCAFFOLD: &str = "scaffold";
    pub const OBSERVATIONS: &str = "observations";
    pub const REASONING_CALL: &str = "reasoning_call";
    pub const KNOWLEDGE_CATEGORY: &str = "knowledge_category";
    pub const KNOWLEDGE_CONDENSED: &str = "knowledge_condensed";
    pub const KNOWLEDGE_FILTERED: &str = "knowledge_filtered";
    pub const KNOWLEDGE_SELECT: &str = "knowledge_select";
}

const LEAF: &[&str] = &[
    "question", "options", "letters", "category", "dataset", "type", "k",
];
const BLOCKS: &[&str] = &["reference", "knowledge", "reasoning", "instruction"];

/// The placeholders a template may use, and whether it may place images.
fn allowed(template: &str) -> (Vec<&'static str>, bool) {
    use names::*;
    let with = |extra: &[&'static str]| LEAF.iter().chain(extra).copied().collect::<Vec<_>>();
    match template {
        OPTION_LINE => (vec!["letter", "text"], false),
        INSTRUCTION | SCAFFOLD | SYSTEM => (with(&[]), false),
        OBSERVATIONS => (with(&["observations"]), false),
        REFERENCE => (with(&[]), true),
        REASONING_CALL => (with(&["reference"]), true),
        KNOWLEDGE_CATEGORY | KNOWLEDGE_CONDENSED | KNOWLEDGE_FILTERED => {
            (with(&["entries"]), false)
        }
        KNOWLEDGE_SELECT => (with(&["entries"]), true),
        _ => (with(BLOCKS), true),
    }
}

macro_rules! bundled {
    ($($set:literal / $name:literal),+ $(,)?) => {
        &[$(($set, $name, include_str!(concat!("../../assets/prompts/", $set, "/", $name, ".txt")))),+]
    };
}

/// The compiled-in templates: (set, template, text).
const BUNDLED: &[(&str, &str, &str)] = bundled![
    "echo" / "anomaly_detection",
    "echo" / "defect_classification",
    "echo" / "defect_localization",
    "echo" / "defect_description",
    "echo" / "defect_analysis",
    "echo" / "plain",
    "echo" / "option_line",
    "echo" / "instruction",
    "echo" / "reference",
    "echo" / "scaffold",
    "echo" / "observations",
    "echo" / "reasoning_call",
    "echo" / "knowledge_category",
    "echo" / "knowledge_condensed",
    "echo" / "knowledge_filtered",
    "echo" / "knowledge_select",
    "mmad" / "plain",
    "mmad" / "option_line",
    "mmad" / "instruction",
    "mmad" / "reference",
    "mmad" / "knowledge_category",
];

/// The bundled prompt sets.
pub const BUNDLED_SETS: &[&str] = &["echo", "mmad"];

/// The largest template file read (a guard against pointing at the wrong file).
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("prompt set name `{0}` may only contain letters, digits, `-` and `_`")]
    BadSetName(String),
    #[error("unknown prompt set `{name}`: it is not bundled ({bundled}){where_}")]
    UnknownSet {
        name: String,
        bundled: String,
        where_: String,
    },
    #[error("cannot read the prompt template {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error(
        "prompt template `{set}/{template}` ({origin}): unknown placeholder `{{{name}}}` (allowed here: {allowed})"
    )]
    UnknownPlaceholder {
        set: String,
        template: String,
        origin: String,
        name: String,
        allowed: String,
    },
    #[error("prompt template `{set}/{template}` ({origin}) may not place images (`{{image:...}}`)")]
    ImageNotAllowed {
        set: String,
        template: String,
        origin: String,
    },
    #[error("prompt set `{set}` has no template `{template}` (no {template}.txt)")]
    Missing { set: String, template: String },
    #[error("prompt template `{set}/{template}`: {message}")]
    Images {
        set: String,
        template: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Lit(String),
    Var(String),
    Image(ImageSlot),
}

/// One parsed template file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    /// The file's text, exactly.
    pub text: String,
    /// Where it came from (`bundled:echo` or a path).
    pub origin: String,
    lines: Vec<Vec<Token>>,
}

impl Template {
    /// Parses `text`, checking every placeholder is allowed for a template named `name`.
    pub fn parse(
        set: &str,
        name: &str,
        text: &str,
        origin: &str,
    ) -> Result<Template, TemplateError> {
        let (allowed_names, images) = allowed(name);
        let body = text.strip_suffix('\n').unwrap_or(text);
        let body = body.strip_suffix('\r').unwrap_or(body);
        let mut lines = Vec::new();
        for raw in body.split('\n') {
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            let tokens = tokenize(raw);
            for t in &tokens {
                match t {
                    Token::Var(v) if !allowed_names.contains(&v.as_str()) => {
                        return Err(TemplateError::UnknownPlaceholder {
                            set: set.into(),
                            template: name.into(),
                            origin: origin.into(),
                            name: v.clone(),
                            allowed: allowed_names
                                .iter()
                                .map(|n| format!("{{{n}}}"))
                                .chain(
                                    images.then(|| "{image:reference}, {image:query}".to_string()),
                                )
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                    Token::Image(_) if !images => {
                        return Err(TemplateError::ImageNotAllowed {
                            set: set.into(),
                            template: name.into(),
                            origin: origin.into(),
                        });
                    }
                    _ => {}
                }
            }
            lines.push(tokens);
        }
        Ok(Template {
            name: name.into(),
            text: text.into(),
            origin: origin.into(),
            lines,
        })
    }

    /// Renders with `vars`; unknown names were rejected at parse time, and names
    /// without a value render empty.
    fn render(&self, vars: &Vars) -> Vec<Segment> {
        let mut out: Vec<Segment> = Vec::new();
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let mut rendered: Vec<Segment> = Vec::new();
            for tok in line {
                match tok {
                    Token::Lit(s) => rendered.push(Segment::Text(s.clone())),
                    Token::Var(name) => {
                        if let Some(v) = vars.values.get(name.as_str()) {
                            rendered.extend(v.iter().cloned());
                        }
                    }
                    Token::Image(slot) => {
                        if vars.has_image(*slot) {
                            rendered.push(Segment::Image(*slot));
                        }
                    }
                }
            }
            let placeholders = line.iter().filter(|t| !matches!(t, Token::Lit(_))).count();
            let only_space = line
                .iter()
                .all(|t| !matches!(t, Token::Lit(s) if !s.trim().is_empty()));
            let empty = rendered
                .iter()
                .all(|s| matches!(s, Segment::Text(t) if t.trim().is_empty()));
            if placeholders == 1 && only_space && empty {
                continue;
            }
            out.extend(rendered);
            if i < last {
                out.push(Segment::Text("\n".into()));
            }
        }
        out
    }

    fn uses(&self, name: &str) -> bool {
        self.lines
            .iter()
            .flatten()
            .any(|t| matches!(t, Token::Var(v) if v == name))
    }
}

fn tokenize(line: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("{{") {
            lit.push('{');
            rest = &rest[2..];
            continue;
        }
        if rest.starts_with("}}") {
            lit.push('}');
            rest = &rest[2..];
            continue;
        }
        if c == '{'
            && let Some(end) = rest[1..].find('}')
        {
            let name = &rest[1..1 + end];
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':');
            if valid {
                if !lit.is_empty() {
                    out.push(Token::Lit(std::mem::take(&mut lit)));
                }
                out.push(match name {
                    "image:reference" => Token::Image(ImageSlot::Reference),
                    "image:query" => Token::Image(ImageSlot::Query),
                    other => Token::Var(other.to_string()),
                });
                rest = &rest[end + 2..];
                continue;
            }
        }
        lit.push(c);
        rest = &rest[c.len_utf8()..];
    }
    if !lit.is_empty() {
        out.push(Token::Lit(lit));
    }
    out
}

/// Values for one rendering.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    values: HashMap<String, Vec<Segment>>,
    /// How many reference images there are (0: `{image:reference}` renders nothing).
    pub reference_images: usize,
    /// Whether the query image is available to place.
    pub query_image: bool,
}

impl Vars {
    pub fn set(&mut self, name: &str, text: impl Into<String>) -> &mut Self {
        let text = text.into();
        let segs = if text.is_empty() {
            Vec::new()
        } else {
            vec![Segment::Text(text)]
        };
        self.values.insert(name.to_string(), segs);
        self
    }

    pub fn set_segments(&mut self, name: &str, segments: Vec<Segment>) -> &mut Self {
        self.values.insert(name.to_string(), segments);
        self
    }

    fn has_image(&self, slot: ImageSlot) -> bool {
        match slot {
            ImageSlot::Reference => self.reference_images > 0,
            ImageSlot::Query => self.query_image,
        }
    }
}

/// Merges neighbouring text, trims every text part and drops the empty ones.
pub fn finish(segments: Vec<Segment>) -> Vec<Segment> {
    let mut merged: Vec<Segment> = Vec::new();
    for s in segments {
        match (merged.last_mut(), s) {
            (Some(Segment::Text(a)), Segment::Text(b)) => a.push_str(&b),
            (_, s) => merged.push(s),
        }
    }
    merged
        .into_iter()
        .filter_map(|s| match s {
            Segment::Text(t) => {
                let t = t.trim();
                (!t.is_empty()).then(|| Segment::Text(t.to_string()))
            }
            image => Some(image),
        })
        .collect()
}

/// The text of rendered segments (images left out), trimmed.
pub fn text_of(segments: &[Segment]) -> String {
    let mut s = String::new();
    for seg in segments {
        if let Segment::Text(t) = seg {
            s.push_str(t);
        }
    }
    s.trim().to_string()
}

/// A loaded prompt set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSet {
    pub name: String,
    templates: IndexMap<String, Template>,
}

impl PromptSet {
    /// Loads set `name`: the bundled `echo` files, overlaid by the bundled `name`
    /// files, overlaid by `<dir>/<name>/*.txt` when `dir` is given and has it.
    pub fn load(name: &str, dir: Option<&Path>) -> Result<PromptSet, TemplateError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(TemplateError::BadSetName(name.to_string()));
        }
        let folder = dir.map(|d| d.join(name)).filter(|f| f.is_dir());
        if !BUNDLED_SETS.contains(&name) && folder.is_none() {
            return Err(TemplateError::UnknownSet {
                name: name.to_string(),
                bundled: BUNDLED_SETS.join(", "),
                where_: match dir {
                    Some(d) => format!(" and {} has no folder of that name", d.display()),
                    None => String::new(),
                },
            });
        }
        let mut templates: IndexMap<String, Template> = IndexMap::new();
        for base in ["echo", name] {
            for (set, tname, text) in BUNDLED.iter().filter(|(s, _, _)| *s == base) {
                let t = Template::parse(name, tname, text, &format!("bundled:{set}"))?;
                templates.insert(tname.to_string(), t);
            }
        }
        if let Some(folder) = folder {
            let io = |path: &Path, e: &dyn std::fmt::Display| TemplateError::Io {
                path: path.to_path_buf(),
                message: e.to_string(),
            };
            let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
                .map_err(|e| io(&folder, &e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "txt") && p.is_file())
                .collect();
            files.sort();
            for path in files {
                let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                    continue;
                };
                if !stem
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    continue;
                }
                let len = std::fs::metadata(&path).map_err(|e| io(&path, &e))?.len();
                if len > MAX_TEMPLATE_BYTES {
                    return Err(io(
                        &path,
                        &format!("{len} bytes, more than a template can sensibly hold"),
                    ));
                }
                let text =
                    crate::util::fsx::read_text_limited(&path, crate::util::fsx::TEXT_FILE_LIMIT)
                        .map_err(|e| io(&path, &e))?;
                let t = Template::parse(name, stem, &text, &path.display().to_string())?;
                templates.insert(stem.to_string(), t);
            }
        }
        Ok(PromptSet {
            name: name.to_string(),
            templates,
        })
    }

    /// A bundled set (`echo` or `mmad`).
    pub fn bundled(name: &str) -> Result<PromptSet, TemplateError> {
        PromptSet::load(name, None)
    }

    pub fn get(&self, template: &str) -> Result<&Template, TemplateError> {
        self.templates
            .get(template)
            .ok_or_else(|| TemplateError::Missing {
                set: self.name.clone(),
                template: template.to_string(),
            })
    }

    pub fn has(&self, template: &str) -> bool {
        self.templates.contains_key(template)
    }

    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        self.templates.values()
    }

    /// Renders a template to finished segments.
    pub fn render(&self, template: &str, vars: &Vars) -> Result<Vec<Segment>, TemplateError> {
        Ok(finish(self.get(template)?.render(vars)))
    }

    /// Renders a text-only template to a trimmed string.
    pub fn render_text(&self, template: &str, vars: &Vars) -> Result<String, TemplateError> {
        Ok(text_of(&self.render(template, vars)?))
    }

    /// The options, one line each, rendered with `option_line`, in the given order.
    pub fn options_text(
        &self,
        options: &IndexMap<String, String>,
    ) -> Result<String, TemplateError> {
        let line = self.get(names::OPTION_LINE)?;
        let mut lines = Vec::with_capacity(options.len());
        for (letter, text) in options {
            let mut v = Vars::default();
            v.set("letter", letter.as_str()).set("text", text.as_str());
            lines.push(text_of(&line.render(&v)));
        }
        Ok(lines.join("\n"))
    }

    /// Whether the main template places `{name}` (used to warn about blocks a plan
    /// produces that the template would drop).
    pub fn template_uses(&self, template: &str, name: &str) -> bool {
        self.templates.get(template).is_some_and(|t| t.uses(name))
    }

    /// SHA-256 over every template's name and exact text, in name order.
    pub fn hash(&self) -> String {
        let mut names: Vec<&String> = self.templates.keys().collect();
        names.sort();
        let mut bytes = Vec::new();
        for n in names {
            bytes.extend_from_slice(n.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(self.templates[n].text.as_bytes());
            bytes.push(0);
        }
        crate::util::fsx::sha256_bytes(&bytes)
    }
}

/// A category folder name as people write it (`metal_nut` -> `metal nut`).
pub fn human_name(name: &str) -> String {
    name.replace(['_', '-'], " ").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, text: &str) -> Template {
        Template::parse("test", name, text, "test").unwrap()
    }

    fn texts(segs: &[Segment]) -> Vec<String> {
        segs.iter()
            .map(|s| match s {
                Segment::Text(t) => t.clone(),
                Segment::Image(ImageSlot::Reference) => "<ref>".into(),
                Segment::Image(ImageSlot::Query) => "<query>".into(),
            })
            .collect()
    }

    #[test]
    fn placeholders_braces_and_empty_lines() {
        let tpl = t(
            "main",
            "{image:reference}{image:query}\n{reference}\nQ: {question} {{not}} {x\n{knowledge}\nend {knowledge}\n",
        );
        let mut v = Vars {
            reference_images: 1,
            query_image: true,
            ..Default::default()
        };
        v.set("question", "Is it {bad}?");
        let out = finish(tpl.render(&v));
        // `{reference}` and `{knowledge}` lines vanish; a value's braces stay literal.
        assert_eq!(
            texts(&out),
            ["<ref>", "<query>", "Q: Is it {bad}? {not} {x\nend"]
        );
        v.reference_images = 0;
        let out = finish(tpl.render(&v));
        assert_eq!(texts(&out)[0], "<query>");
    }

    #[test]
    fn interleaved_images_split_text_parts() {
        let tpl = t(
            "main",
            "Lead\n{reference}\nQuery:\n{image:query}\n{question}",
        );
        let block = t(names::REFERENCE, "Samples ({k}):\n{image:reference}");
        let mut v = Vars {
            reference_images: 2,
            query_image: true,
            ..Default::default()
        };
        v.set("k", "2").set("question", "Q?");
        let r = finish(block.render(&v));
        v.set_segments("reference", r);
        assert_eq!(
            texts(&finish(tpl.render(&v))),
            ["Lead\nSamples (2):", "<ref>", "Query:", "<query>", "Q?"]
        );
    }

    #[test]
    fn unknown_placeholders_and_misplaced_images_are_rejected() {
        let e = Template::parse("s", "main", "{questoin}", "x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown placeholder `{questoin}`") && e.contains("{question}"),
            "{e}"
        );
        let e = Template::parse("s", names::INSTRUCTION, "{image:query}", "x").unwrap_err();
        assert!(matches!(e, TemplateError::ImageNotAllowed { .. }));
        let e = Template::parse("s", names::OPTION_LINE, "{question}", "x").unwrap_err();
        assert!(e.to_string().contains("{letter}, {text}"), "{e}");
    }

    #[test]
    fn bundled_sets_load_and_render_options() {
        let echo = PromptSet::bundled("echo").unwrap();
        let mmad = PromptSet::bundled("mmad").unwrap();
        let opts: IndexMap<String, String> = [("A", "Yes"), ("B", "No")]
            .map(|(a, b)| (a.into(), b.into()))
            .into_iter()
            .collect();
        assert_eq!(echo.options_text(&opts).unwrap(), "A: Yes\nB: No");
        assert_eq!(mmad.options_text(&opts).unwrap(), "A. Yes\nB. No");
        // mmad falls back to echo for what it does not define.
        assert_eq!(mmad.get(names::SCAFFOLD).unwrap().origin, "bundled:echo");
        assert_eq!(mmad.get("plain").unwrap().origin, "bundled:mmad");
        assert_ne!(echo.hash(), mmad.hash());
        assert!(PromptSet::bundled("../x").is_err());
        let e = PromptSet::bundled("mine").unwrap_err().to_string();
        assert!(e.contains("unknown prompt set `mine`"), "{e}");
    }

    #[test]
    fn user_folder_overrides_file_by_file() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("mine");
        std::fs::create_dir(&mine).unwrap();
        std::fs::write(mine.join("option_line.txt"), "({letter}) {text}\n").unwrap();
        std::fs::write(
            mine.join("my_main.txt"),
            "{image:query}\n{question}\n{options}",
        )
        .unwrap();
        let set = PromptSet::load("mine", Some(dir.path())).unwrap();
        let opts: IndexMap<String, String> =
            [("A".to_string(), "Yes".to_string())].into_iter().collect();
        assert_eq!(set.options_text(&opts).unwrap(), "(A) Yes");
        assert!(set.has("my_main") && set.has("anomaly_detection"));
        let before = set.hash();
        std::fs::write(mine.join("instruction.txt"), "Just the letter.").unwrap();
        let after = PromptSet::load("mine", Some(dir.path())).unwrap();
        assert_ne!(before, after.hash());
        std::fs::write(mine.join("instruction.txt"), "{image:query}").unwrap();
        assert!(PromptSet::load("mine", Some(dir.path())).is_err());
        // Overriding a bundled set from a folder works too.
        let mmad = dir.path().join("mmad");
        std::fs::create_dir(&mmad).unwrap();
        std::fs::write(mmad.join("instruction.txt"), "Letter only.").unwrap();
        let set = PromptSet::load("mmad", Some(dir.path())).unwrap();
        assert_eq!(
            set.render_text(names::INSTRUCTION, &Vars::default())
                .unwrap(),
            "Letter only."
        );
        assert_eq!(set.get("plain").unwrap().origin, "bundled:mmad");
    }

    #[test]
    fn human_names() {
        assert_eq!(human_name("metal_nut"), "metal nut");
        assert_eq!(human_name("pipe_fryum"), "pipe fryum");
    }
}
