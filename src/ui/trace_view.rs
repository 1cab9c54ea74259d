//! One question's run as people read it: a card per expert (Reference Extractor,
//! Knowledge Guide, Reasoning Expert, Decision Maker) filled as the pipeline's events
//! arrive, the final answer, and the whole trace copied as JSON or Markdown.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Instant;

use eframe::egui;
use serde_json::json;

use crate::dataset::Question;
use crate::echo::trace::{
    ImageRole, MapOutput, PromptPart, ReasoningOutput, ReferenceInput, RequestTrace, TraceOutput,
};
use crate::echo::{Decision, ExpertName, ExpertStatus, ExpertTrace, PipelineEvent};
use crate::memory::Scope;

/// Where one expert's turn stands.
#[derive(Debug, Clone, PartialEq)]
pub enum CardState {
    Waiting,
    Running {
        since: Instant,
    },
    Finished(ExpertTrace),
    /// The run ended (cancelled or failed) before this expert's turn ended.
    NotRun {
        why: String,
    },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Answered(Box<Decision>),
    /// An answer read back from a run journal (the Batch tab's drill-down).
    Recorded(RecordedAnswer),
    /// The whole error chain in one sentence.
    Failed(String),
    Cancelled,
}

/// What a journal line says of its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedAnswer {
    /// MMAD's `gpt_answer`: the letter, or the raw reply when none was found.
    pub given: String,
    pub correct: Option<bool>,
    pub raw: Option<String>,
    pub latency_ms: u64,
}

impl RecordedAnswer {
    fn line(&self, question: &Question) -> String {
        match question.options.get(&self.given) {
            Some(text) => format!("{}. {text}", self.given),
            None => format!("no option letter in the reply ({})", self.given),
        }
    }
}

/// One question asked about one image, with everything the pipeline reported.
#[derive(Debug, Clone, PartialEq)]
pub struct QuestionRun {
    pub question: Question,
    pub image: PathBuf,
    pub cards: [CardState; 5],
    pub outcome: Option<Outcome>,
    pub started: Instant,
    /// Whether the anomaly map took a turn: only then has it a card (Echo's and
    /// MMAD's plans never list it).
    pub map_listed: bool,
    /// The Decision Maker's reply so far, while a model run in-process writes it.
    pub streamed: String,
}

fn slot(name: ExpertName) -> usize {
    ExpertName::ALL
        .iter()
        .position(|n| *n == name)
        .expect("ALL lists every expert")
}

impl QuestionRun {
    pub fn new(question: Question, image: PathBuf) -> Self {
        QuestionRun {
            question,
            image,
            cards: std::array::from_fn(|_| CardState::Waiting),
            outcome: None,
            started: Instant::now(),
            map_listed: false,
            streamed: String::new(),
        }
    }

    /// A finished question as a run journal recorded it: its traces fill the cards,
    /// an error line becomes a failed outcome with the recorded reason.
    pub fn from_record(record: &crate::runs::journal::JournalRecord, image: PathBuf) -> Self {
        let question = Question {
            text: record.question.text.clone(),
            answer: record.correct_answer.clone(),
            options: record.question.options.clone(),
            qtype: crate::dataset::QuestionType::parse(&record.question_type),
            annotation: None,
        };
        let mut run = QuestionRun::new(question, image);
        for trace in &record.traces {
            run.apply(PipelineEvent::ExpertFinished(trace.clone()));
        }
        let outcome = match (&record.error, &record.gpt_answer) {
            (Some(error), _) => Outcome::Failed(error.clone()),
            (None, given) => Outcome::Recorded(RecordedAnswer {
                given: given.clone().unwrap_or_default(),
                correct: record.correct,
                raw: record.raw.clone(),
                latency_ms: record.latency_ms,
            }),
        };
        for card in &mut run.cards {
            if matches!(card, CardState::Waiting) {
                *card = CardState::NotRun {
                    why: "not in the journal record".into(),
                };
            }
        }
        run.outcome = Some(outcome);
        run
    }

    pub fn is_running(&self) -> bool {
        self.outcome.is_none()
    }

    pub fn apply(&mut self, event: PipelineEvent) {
        let name = match &event {
            PipelineEvent::ExpertStarted(name) => *name,
            PipelineEvent::ExpertFinished(trace) => trace.name,
        };
        self.map_listed |= name == ExpertName::AnomalyMap;
        match event {
            PipelineEvent::ExpertStarted(name) => {
                self.cards[slot(name)] = CardState::Running {
                    since: Instant::now(),
                }
            }
            PipelineEvent::ExpertFinished(trace) => {
                let i = slot(trace.name);
                self.cards[i] = CardState::Finished(trace);
            }
        }
    }

    /// Ends the run; experts that never finished say why.
    pub fn finish(&mut self, outcome: Outcome) {
        let why = match &outcome {
            Outcome::Answered(_) | Outcome::Recorded(_) => {
                "the pipeline ended before this expert".to_string()
            }
            Outcome::Failed(e) => format!("not run: {e}"),
            Outcome::Cancelled => "cancelled".to_string(),
        };
        for card in &mut self.cards {
            if matches!(card, CardState::Waiting | CardState::Running { .. }) {
                *card = CardState::NotRun { why: why.clone() };
            }
        }
        self.outcome = Some(outcome);
    }

    pub fn card(&self, name: ExpertName) -> &CardState {
        &self.cards[slot(name)]
    }

    pub fn traces(&self) -> impl Iterator<Item = &ExpertTrace> {
        self.cards.iter().filter_map(|c| match c {
            CardState::Finished(t) => Some(t),
            _ => None,
        })
    }

    pub fn decision(&self) -> Option<&Decision> {
        match &self.outcome {
            Some(Outcome::Answered(d)) => Some(d),
            _ => None,
        }
    }

    /// The whole run as JSON: question, answer (or error) and every expert's trace.
    pub fn to_json(&self) -> String {
        let q = &self.question;
        let answer = match &self.outcome {
            Some(Outcome::Answered(d)) => json!({
                "letter": d.letter, "option_text": d.option_text, "correct": d.correct,
                "raw": d.raw, "method": d.method, "in_scope": d.in_scope, "timings": d.timings,
            }),
            Some(Outcome::Recorded(r)) => json!({
                "letter": r.given, "correct": r.correct, "raw": r.raw, "latency_ms": r.latency_ms,
            }),
            Some(Outcome::Failed(e)) => json!({"error": e}),
            Some(Outcome::Cancelled) => json!({"error": "cancelled"}),
            None => json!({"error": "still running"}),
        };
        let value = json!({
            "image": self.image,
            "question": {
                "text": q.text, "type": q.qtype, "options": q.options,
                "answer": Some(q.answer.as_str()).filter(|a| !a.is_empty()),
            },
            "answer": answer,
            "experts": self.traces().collect::<Vec<_>>(),
        });
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    /// The whole run as Markdown for a report or an issue.
    pub fn to_markdown(&self) -> String {
        let q = &self.question;
        let mut md = format!("## {}\n\n", q.text.trim());
        md.push_str(&format!("- Image: `{}`\n", self.image.display()));
        md.push_str(&format!("- Type: {}\n", q.qtype));
        for (l, t) in &q.options {
            let truth = if *l == q.answer {
                " (ground truth)"
            } else {
                ""
            };
            md.push_str(&format!("- {l}. {t}{truth}\n"));
        }
        md.push('\n');
        match &self.outcome {
            Some(Outcome::Answered(d)) => {
                md.push_str(&format!("**Answer: {}**", answer_line(d)));
                if let Some(c) = d.correct {
                    md.push_str(if c { " (correct)" } else { " (wrong)" });
                }
                md.push_str("\n\n");
            }
            Some(Outcome::Recorded(r)) => {
                md.push_str(&format!("**Answer: {}**", r.line(q)));
                if let Some(c) = r.correct {
                    md.push_str(if c { " (correct)" } else { " (wrong)" });
                }
                md.push_str("\n\n");
            }
            Some(Outcome::Failed(e)) => md.push_str(&format!("**Failed:** {e}\n\n")),
            Some(Outcome::Cancelled) => md.push_str("**Cancelled**\n\n"),
            None => md.push_str("*still running*\n\n"),
        }
        for t in self.traces() {
            md.push_str(&format!(
                "### {} ({} ms)\n\n{}\n\n",
                t.name, t.ms, t.summary
            ));
            if let TraceOutput::Raw(value) = &t.output {
                // A shape this version does not know: what was stored, as stored.
                md.push_str(&fenced(
                    &serde_json::to_string_pretty(value).unwrap_or_default(),
                ));
                continue;
            }
            match t.name {
                ExpertName::KnowledgeGuide => {
                    if let Some(k) = t.output.knowledge() {
                        md.push_str(&fenced(&k.snippet));
                    }
                }
                ExpertName::ReasoningExpert => {
                    if let Some(s) = reasoning_text(t) {
                        md.push_str(&fenced(s));
                    }
                }
                ExpertName::DecisionMaker => {
                    md.push_str("Prompt:\n\n");
                    if let Some(request) = t.input.request() {
                        md.push_str(&fenced(&prompt_text(request)));
                    }
                    if let Some(raw) = t.output.raw_reply() {
                        md.push_str("Reply:\n\n");
                        md.push_str(&fenced(raw));
                    }
                }
                ExpertName::AnomalyMap => {
                    if let Some(m) = t.output.map() {
                        md.push_str(&format!("{}\n\n", map_lines(m).join("\n")));
                    }
                }
                ExpertName::ReferenceExtractor => {}
            }
        }
        md
    }
}

fn fenced(s: &str) -> String {
    let fence = if s.contains("```") { "~~~~" } else { "```" };
    format!("{fence}\n{}\n{fence}\n\n", s.trim_end())
}

fn answer_line(d: &Decision) -> String {
    match (&d.letter, &d.option_text) {
        (Some(l), Some(t)) => format!("{l}. {t}"),
        (Some(l), None) => l.clone(),
        (None, _) => "no option letter in the reply".into(),
    }
}

fn reasoning_text(t: &ExpertTrace) -> Option<&str> {
    t.output.reasoning().map(ReasoningOutput::text)
}

/// The Decision Maker's request as text: the system message, then every part in
/// order, images as `[image: role path]`.
pub fn prompt_text(request: &RequestTrace) -> String {
    let mut out = String::new();
    if let Some(s) = request.system.as_deref().filter(|s| !s.is_empty()) {
        out.push_str(&format!("[system]\n{s}\n\n[user]\n"));
    }
    for part in &request.parts {
        match part {
            PromptPart::Text { text } => out.push_str(text),
            PromptPart::Image { image, path, .. } => {
                let role = match image {
                    ImageRole::Reference => "reference",
                    ImageRole::Query => "query",
                    ImageRole::AnomalyMap => "anomaly map of",
                };
                out.push_str(&format!("\n[image: {role} {}]\n", path.display()));
            }
        }
    }
    out
}

const STOPWORDS: &[&str] = &[
    "the", "and", "any", "are", "does", "this", "that", "with", "which", "what", "from", "there",
    "image", "shown", "show", "object", "for", "its", "has", "have", "into", "than", "other",
    "not", "can", "how", "where", "why", "was", "were", "you", "your", "one", "all", "most", "yes",
    "kind", "type", "located", "part", "appear", "appears",
];

/// Words of the question and its options worth looking for in a knowledge snippet
/// (three letters or more, not a function word), plus `extra` terms as given.
pub fn question_terms(question: &Question, extra: &[String]) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    let mut push = |t: &str| {
        let t = t.trim();
        if !t.is_empty() && !terms.iter().any(|x| x.eq_ignore_ascii_case(t)) {
            terms.push(t.to_string());
        }
    };
    for e in extra {
        push(e);
    }
    let texts = std::iter::once(question.text.as_str())
        .chain(question.options.values().map(String::as_str));
    for text in texts {
        for w in text.split(|c: char| !c.is_alphanumeric() && c != '_') {
            if w.chars().count() >= 3 && !STOPWORDS.contains(&w.to_ascii_lowercase().as_str()) {
                push(w);
            }
        }
    }
    terms
}

fn is_word_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// Byte ranges of `text` where a term occurs as a whole word (ASCII case ignored),
/// sorted and merged. A term also matches its simple plural (`scratch` in
/// `scratches`).
pub fn highlight_ranges(text: &str, terms: &[String]) -> Vec<Range<usize>> {
    let mut found: Vec<Range<usize>> = Vec::new();
    for term in terms.iter().filter(|t| !t.is_empty()) {
        for (start, _) in text.char_indices() {
            let Some(candidate) = text.get(start..start + term.len()) else {
                continue;
            };
            if !candidate.eq_ignore_ascii_case(term)
                || is_word_char(text[..start].chars().next_back())
            {
                continue;
            }
            let mut end = start + term.len();
            for suffix in ["es", "s"] {
                let rest = &text[end..];
                if rest.len() >= suffix.len()
                    && rest.is_char_boundary(suffix.len())
                    && rest[..suffix.len()].eq_ignore_ascii_case(suffix)
                    && !is_word_char(rest[suffix.len()..].chars().next())
                {
                    end += suffix.len();
                    break;
                }
            }
            if !is_word_char(text[end..].chars().next()) {
                found.push(start..end);
            }
        }
    }
    found.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
    let mut merged: Vec<Range<usize>> = Vec::new();
    for r in found {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// `text` with `ranges` drawn on a highlight background.
pub fn highlighted_job(
    ui: &egui::Ui,
    text: &str,
    ranges: &[Range<usize>],
) -> egui::text::LayoutJob {
    let font = egui::TextStyle::Body.resolve(ui.style());
    let color = ui.visuals().text_color();
    let plain = egui::TextFormat {
        font_id: font.clone(),
        color,
        ..Default::default()
    };
    let marked = egui::TextFormat {
        font_id: font,
        color: ui.visuals().strong_text_color(),
        background: if ui.visuals().dark_mode {
            egui::Color32::from_rgb(110, 90, 20)
        } else {
            egui::Color32::from_rgb(255, 230, 140)
        },
        ..Default::default()
    };
    let mut job = egui::text::LayoutJob::default();
    let mut at = 0;
    for r in ranges {
        if r.start > at {
            job.append(&text[at..r.start], 0.0, plain.clone());
        }
        job.append(&text[r.clone()], 0.0, marked.clone());
        at = r.end;
    }
    if at < text.len() {
        job.append(&text[at..], 0.0, plain);
    }
    job.wrap.max_width = ui.available_width();
    job
}

pub fn ok_color(ui: &egui::Ui) -> egui::Color32 {
    if ui.visuals().dark_mode {
        egui::Color32::from_rgb(90, 200, 120)
    } else {
        egui::Color32::from_rgb(20, 130, 50)
    }
}

/// A small coloured word on a tinted background.
pub fn badge(ui: &mut egui::Ui, text: &str, color: egui::Color32) {
    egui::Frame::new()
        .fill(color.gamma_multiply(0.18))
        .stroke(egui::Stroke::new(1.0, color))
        .corner_radius(4.0)
        .inner_margin(egui::Margin::symmetric(6, 1))
        .show(ui, |ui| {
            ui.add(egui::Label::new(egui::RichText::new(text).color(color).strong()).extend());
        });
}

/// The correct/wrong badge, with the expected answer when wrong.
fn correctness(ui: &mut egui::Ui, correct: Option<bool>, question: &Question) {
    match correct {
        Some(true) => badge(ui, "correct", ok_color(ui)),
        Some(false) => {
            badge(ui, "wrong", ui.visuals().error_fg_color);
            let truth = &question.answer;
            let text = question
                .options
                .get(truth)
                .map(|t| format!(" ({t})"))
                .unwrap_or_default();
            ui.label(format!("expected {truth}{text}"));
        }
        None => {
            ui.weak("no ground truth to compare with");
        }
    }
}

/// The final answer, prominently: letter, option text, correct or wrong.
pub fn answer_banner(ui: &mut egui::Ui, run: &QuestionRun) {
    match &run.outcome {
        Some(Outcome::Answered(d)) => {
            ui.horizontal_wrapped(|ui| {
                ui.label(
                    egui::RichText::new(format!("Answer: {}", answer_line(d)))
                        .heading()
                        .strong(),
                );
                correctness(ui, d.correct, &run.question);
            });
            if !d.in_scope {
                ui.weak(
                    d.plan
                        .note
                        .as_deref()
                        .unwrap_or("outside the method's scope: plain prompt"),
                );
            }
        }
        Some(Outcome::Recorded(r)) => {
            ui.horizontal_wrapped(|ui| {
                ui.label(
                    egui::RichText::new(format!("Answer: {}", r.line(&run.question)))
                        .heading()
                        .strong(),
                );
                correctness(ui, r.correct, &run.question);
                ui.weak(format!("{} ms", r.latency_ms));
            });
        }
        Some(Outcome::Failed(e)) => {
            ui.colored_label(ui.visuals().error_fg_color, format!("No answer: {e}"));
        }
        Some(Outcome::Cancelled) => {
            ui.colored_label(ui.visuals().warn_fg_color, "Cancelled");
        }
        None => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!(
                    "Running… {:.1} s",
                    run.started.elapsed().as_secs_f32()
                ));
            });
        }
    }
}

/// The four cards and the copy buttons of one run.
pub fn run_ui(ui: &mut egui::Ui, run: &QuestionRun, id: egui::Id) {
    answer_banner(ui, run);
    let shown = ExpertName::ALL
        .into_iter()
        .filter(|&n| n != ExpertName::AnomalyMap || run.map_listed);
    for (i, name) in shown.enumerate() {
        expert_card(ui, run, name, i + 1, id.with(name.key()));
    }
    ui.horizontal(|ui| {
        let done = !run.is_running();
        if ui
            .add_enabled(done, egui::Button::new("Copy JSON"))
            .on_hover_text("The question, the answer and every expert's trace")
            .clicked()
        {
            ui.ctx().copy_text(run.to_json());
        }
        if ui
            .add_enabled(done, egui::Button::new("Copy Markdown"))
            .clicked()
        {
            ui.ctx().copy_text(run.to_markdown());
        }
    });
}

fn status_line(ui: &mut egui::Ui, state: &CardState) {
    match state {
        CardState::Waiting => {
            ui.weak("waiting");
        }
        CardState::Running { since } => {
            ui.spinner();
            ui.label(format!("running {:.1} s", since.elapsed().as_secs_f32()));
        }
        CardState::NotRun { why } => {
            ui.weak(why);
        }
        CardState::Finished(t) => match &t.status {
            ExpertStatus::Done => {
                ui.colored_label(ok_color(ui), format!("done in {} ms", t.ms));
            }
            ExpertStatus::Skipped { .. } => {
                ui.weak("skipped");
            }
            ExpertStatus::Failed { .. } => {
                ui.colored_label(
                    ui.visuals().error_fg_color,
                    format!("failed after {} ms", t.ms),
                );
            }
        },
    }
}

fn expert_card(ui: &mut egui::Ui, run: &QuestionRun, name: ExpertName, n: usize, id: egui::Id) {
    let state = run.card(name);
    egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.set_width(ui.available_width());
        egui::collapsing_header::CollapsingState::load_with_default_open(ui.ctx(), id, true)
            .show_header(ui, |ui| {
                ui.strong(format!("{n}. {}", name.label()));
                status_line(ui, state);
            })
            .body(|ui| match state {
                CardState::Waiting => {
                    ui.weak("Waits for the experts before it.");
                }
                CardState::Running { .. }
                    if name == ExpertName::DecisionMaker && !run.streamed.is_empty() =>
                {
                    ui.label("Reply so far:");
                    text_block(ui, &run.streamed, 160.0);
                }
                CardState::Running { .. } => {
                    ui.weak(running_hint(name));
                }
                CardState::NotRun { why } => {
                    ui.weak(why);
                }
                CardState::Finished(t) => card_body(ui, run, t),
            });
    });
}

fn running_hint(name: ExpertName) -> &'static str {
    match name {
        ExpertName::ReferenceExtractor => "Embedding the image and searching the reference memory…",
        ExpertName::AnomalyMap => "Comparing the image's patches with the nearest normals…",
        ExpertName::KnowledgeGuide => "Choosing the knowledge for this question…",
        ExpertName::ReasoningExpert => "Preparing the reasoning…",
        ExpertName::DecisionMaker => "Waiting for the model's reply…",
    }
}

fn card_body(ui: &mut egui::Ui, run: &QuestionRun, t: &ExpertTrace) {
    match &t.status {
        ExpertStatus::Skipped { why } => {
            ui.label(format!("Skipped: {why}"));
            return;
        }
        ExpertStatus::Failed { error } => {
            ui.add(
                egui::Label::new(
                    egui::RichText::new(format!("Failed: {error}"))
                        .color(ui.visuals().error_fg_color),
                )
                .wrap(),
            );
            if t.name == ExpertName::DecisionMaker {
                prompt_block(ui, t.input.request());
            }
            return;
        }
        ExpertStatus::Done => {}
    }
    match t.name {
        ExpertName::ReferenceExtractor => reference_body(ui, t),
        ExpertName::AnomalyMap => map_body(ui, t),
        ExpertName::KnowledgeGuide => knowledge_body(ui, run, t),
        ExpertName::ReasoningExpert => {
            let Some(out) = t.output.reasoning() else {
                return raw_body(ui, t);
            };
            ui.label(match out {
                ReasoningOutput::Separate { .. } => {
                    "Mode: separate call (its observations are added to the prompt)"
                }
                ReasoningOutput::Inline { .. } => "Mode: inline scaffold added to the prompt",
            });
            text_block(ui, out.text(), 160.0);
        }
        ExpertName::DecisionMaker => decision_body(ui, run, t),
    }
}

fn reference_body(ui: &mut egui::Ui, t: &ExpertTrace) {
    let Some(out) = t.output.reference() else {
        return raw_body(ui, t);
    };
    let (scope, embedder) = match t.input.reference() {
        Some(ReferenceInput::Memory {
            scope, embedder, ..
        }) => (
            match scope {
                Scope::Category(c) => format!("category `{c}`"),
                Scope::Global => "global".into(),
            },
            Some(embedder),
        ),
        _ => ("-".into(), None),
    };
    ui.label(format!("Source: {}; scope: {scope}", out.source));
    if let Some(e) = embedder {
        ui.weak(format!("Embedder: {e}"));
    }
    // Wrapped lines rather than a grid: long paths must never widen the panel.
    for c in &out.candidates {
        let used = c.used;
        let name = &c.rel_path;
        let score = c
            .score
            .map(|s| format!("  cosine {s:.3}"))
            .unwrap_or_default();
        let rerank = c
            .rerank_score
            .map(|s| format!(", rerank {s:.3}"))
            .unwrap_or_default();
        let line = format!("{}{name}{score}{rerank}", if used { "sent  " } else { "" });
        let text = if used {
            egui::RichText::new(line).strong()
        } else {
            egui::RichText::new(line)
        };
        ui.add(egui::Label::new(text).wrap());
    }
    for note in &out.notes {
        ui.weak(note);
    }
}

/// The anomaly map's finding as lines of text (the card and the Markdown copy).
pub fn map_lines(m: &MapOutput) -> Vec<String> {
    let verdict = if m.anomalous() {
        "above the threshold: anomalous"
    } else {
        "below the threshold: normal"
    };
    let mut lines = vec![
        format!(
            "Score {:.3} against the `{}` threshold {:.3} ({verdict})",
            m.score, m.category, m.threshold
        ),
        format!(
            "Backbone {}, {} nearest normals; map computed in {} ms",
            m.backbone, m.k, m.map_ms
        ),
    ];
    for (i, r) in m.regions.iter().enumerate() {
        lines.push(format!(
            "Region {}: {} ({} x {} at {}, {}), peak {:.3}",
            i + 1,
            r.grid,
            r.w,
            r.h,
            r.x,
            r.y,
            r.score
        ));
    }
    if let Some(hint) = &m.hint {
        lines.push(format!("Told the Decision Maker: {hint}"));
    }
    lines
}

fn map_body(ui: &mut egui::Ui, t: &ExpertTrace) {
    let Some(m) = t.output.map() else {
        return raw_body(ui, t);
    };
    let lines = map_lines(m);
    let color = if m.anomalous() {
        ui.visuals().warn_fg_color
    } else {
        ok_color(ui)
    };
    ui.colored_label(color, &lines[0]);
    // Score against threshold on one scale: the bar's end is whichever is larger,
    // with room, so both read at a glance.
    let top = (m.score.max(m.threshold) * 1.25).max(f64::EPSILON);
    ui.add(
        egui::ProgressBar::new((m.score / top) as f32)
            .desired_width(ui.available_width().min(320.0))
            .fill(color)
            .text(format!("threshold at {:.0}%", m.threshold / top * 100.0)),
    );
    for line in &lines[1..] {
        ui.add(egui::Label::new(line.as_str()).wrap());
    }
    if let Some(input) = t.input.map() {
        ui.weak(format!(
            "Memory {}; third image: {}",
            input.memory.display(),
            input.image
        ));
    }
}

/// A trace this version does not know the shape of: its JSON as stored.
fn raw_body(ui: &mut egui::Ui, t: &ExpertTrace) {
    for value in [t.input.to_value(), t.output.to_value()] {
        if !value.is_null() {
            text_block(
                ui,
                &serde_json::to_string_pretty(&value).unwrap_or_default(),
                160.0,
            );
        }
    }
}

fn knowledge_body(ui: &mut egui::Ui, run: &QuestionRun, t: &ExpertTrace) {
    let Some(out) = t.output.knowledge() else {
        return raw_body(ui, t);
    };
    let input = t.input.knowledge();
    let mode = input.map_or("-".to_string(), |i| i.mode.to_string());
    let category = input.and_then(|i| i.category.as_deref()).unwrap_or("-");
    let source = input
        .and_then(|i| i.source.as_deref())
        .unwrap_or("knowledge");
    ui.label(format!("Mode: {mode} ({source}, category {category})"));
    for m in out.matches.iter().flatten() {
        ui.weak(format!(
            "{} \"{}\" -> {}: {}",
            m.letter, m.option, m.entry, m.why
        ));
    }
    let snippet = out.snippet.as_str();
    let terms = question_terms(&run.question, &out.matched_terms);
    let ranges = highlight_ranges(snippet, &terms);
    ui.weak(format!(
        "{} highlighted words match the question, its options or the chosen entries",
        ranges.len()
    ));
    egui::ScrollArea::vertical()
        .id_salt("snippet")
        .max_height(180.0)
        .show(ui, |ui| {
            let job = highlighted_job(ui, snippet, &ranges);
            ui.add(egui::Label::new(job).wrap());
        });
}

fn decision_body(ui: &mut egui::Ui, run: &QuestionRun, t: &ExpertTrace) {
    let Some(out) = t.output.decision() else {
        return raw_body(ui, t);
    };
    let letter = out.letter.as_deref();
    let option = letter.and_then(|l| run.question.options.get(l));
    ui.horizontal_wrapped(|ui| {
        ui.label(format!("Letter: {}", letter.unwrap_or("none found")));
        if let Some(o) = option {
            ui.label(format!("({o})"));
        }
        match out.correct {
            Some(true) => badge(ui, "correct", ok_color(ui)),
            Some(false) => badge(ui, "wrong", ui.visuals().error_fg_color),
            None => {}
        }
    });
    ui.weak(format!(
        "Latency {} ms, {} attempt(s), read by {}",
        out.latency_ms,
        out.attempts,
        out.method.as_str()
    ));
    for w in t.input.decision().into_iter().flat_map(|i| &i.warnings) {
        ui.colored_label(ui.visuals().warn_fg_color, w);
    }
    ui.label("Raw reply:");
    text_block(ui, &out.raw, 100.0);
    prompt_block(ui, t.input.request());
}

fn prompt_block(ui: &mut egui::Ui, request: Option<&RequestTrace>) {
    let Some(request) = request else {
        return;
    };
    egui::CollapsingHeader::new("Exact prompt")
        .id_salt(ui.scope_id().with("prompt"))
        .show(ui, |ui| {
            text_block(ui, &prompt_text(request), 220.0);
        });
}

fn text_block(ui: &mut egui::Ui, text: &str, max_height: f32) {
    egui::Frame::new()
        .fill(ui.visuals().extreme_bg_color)
        .inner_margin(6)
        .corner_radius(4.0)
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            egui::ScrollArea::vertical()
                .id_salt(text.len())
                .max_height(max_height)
                .show(ui, |ui| {
                    ui.add(
                        egui::Label::new(egui::RichText::new(text).monospace())
                            .wrap()
                            .selectable(true),
                    );
                });
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::trace::TraceInput;
    use indexmap::IndexMap;

    fn record(error: Option<&str>) -> crate::runs::journal::JournalRecord {
        use crate::runs::journal::{AnswerQuestion, JournalRecord, RecordStatus};
        let q = question();
        JournalRecord {
            image: "Sample/washer/test/notch/001.png".into(),
            question: AnswerQuestion::from_question(&q),
            question_type: q.qtype.as_str().into(),
            correct_answer: "A".into(),
            gpt_answer: error.is_none().then(|| "B".into()),
            index: 7,
            turn: 1,
            status: if error.is_some() {
                RecordStatus::Error
            } else {
                RecordStatus::Ok
            },
            error: error.map(String::from),
            raw: error.is_none().then(|| "B. Notch".into()),
            correct: error.is_none().then_some(false),
            attempts: 1,
            latency_ms: 42,
            usage: None,
            samples: Vec::new(),
            rotations: Vec::new(),
            confidence: None,
            endpoint: "local".into(),
            finished_at: String::new(),
            traces: vec![ExpertTrace {
                name: ExpertName::KnowledgeGuide,
                status: ExpertStatus::Done,
                input: TraceInput::None,
                output: TraceOutput::Raw(json!({"snippet": "Notch: a missing bite in the rim."})),
                summary: "category knowledge".into(),
                ms: 1,
            }],
        }
    }

    #[test]
    fn a_journal_record_fills_the_cards_it_has_and_names_the_rest() {
        let run = QuestionRun::from_record(&record(None), "washer.png".into());
        assert!(!run.is_running());
        assert!(matches!(
            run.card(ExpertName::KnowledgeGuide),
            CardState::Finished(_)
        ));
        assert!(matches!(
            run.card(ExpertName::DecisionMaker),
            CardState::NotRun { why } if why.contains("not in the journal")
        ));
        let md = run.to_markdown();
        assert!(md.contains("**Answer: B. Notch** (wrong)"), "{md}");
        assert!(md.contains("a missing bite"), "{md}");

        let failed =
            QuestionRun::from_record(&record(Some("HTTP 500 after 4 attempts")), "w.png".into());
        assert_eq!(
            failed.outcome,
            Some(Outcome::Failed("HTTP 500 after 4 attempts".into()))
        );
        assert!(failed.to_json().contains("HTTP 500 after 4 attempts"));
    }

    fn question() -> Question {
        Question {
            text: "What kind of defect does the washer have?".into(),
            answer: "A".into(),
            options: IndexMap::from([
                ("A".to_string(), "Scratch".to_string()),
                ("B".to_string(), "Notch".to_string()),
            ]),
            qtype: crate::dataset::QuestionType::DefectClassification,
            annotation: None,
        }
    }

    #[test]
    fn terms_come_from_question_and_options_without_function_words() {
        let terms = question_terms(&question(), &["rim".to_string()]);
        assert_eq!(terms, ["rim", "defect", "washer", "Scratch", "Notch"]);
    }

    #[test]
    fn highlights_whole_words_plurals_and_merges() {
        let text = "Scratches on a washer; a notch. Washers scratchy? defect-free";
        let terms: Vec<String> = ["scratch", "washer", "notch", "defect"]
            .map(String::from)
            .to_vec();
        let words: Vec<&str> = highlight_ranges(text, &terms)
            .into_iter()
            .map(|r| &text[r])
            .collect();
        assert_eq!(words, ["Scratches", "washer", "notch", "Washers", "defect"]);
        let overlapping: Vec<String> = ["metal washer", "washer"].map(String::from).to_vec();
        let r = highlight_ranges("a metal washer here", &overlapping);
        assert_eq!(r, vec![2..14]);
        assert!(highlight_ranges("héllo wörld", &["llo".to_string()]).is_empty());
    }

    #[test]
    fn a_run_fills_cards_in_order_and_marks_the_rest_when_it_fails() {
        let mut run = QuestionRun::new(question(), "x.png".into());
        run.apply(PipelineEvent::ExpertStarted(ExpertName::ReferenceExtractor));
        assert!(matches!(
            run.card(ExpertName::ReferenceExtractor),
            CardState::Running { .. }
        ));
        let trace = ExpertTrace {
            name: ExpertName::ReferenceExtractor,
            status: ExpertStatus::Done,
            input: TraceInput::Raw(json!({})),
            output: TraceOutput::Raw(json!({"source": "memory"})),
            summary: "found".into(),
            ms: 3,
        };
        run.apply(PipelineEvent::ExpertFinished(trace.clone()));
        run.apply(PipelineEvent::ExpertStarted(ExpertName::KnowledgeGuide));
        run.finish(Outcome::Failed("boom".into()));
        assert_eq!(
            run.card(ExpertName::ReferenceExtractor),
            &CardState::Finished(trace)
        );
        assert_eq!(
            run.card(ExpertName::KnowledgeGuide),
            &CardState::NotRun {
                why: "not run: boom".into()
            }
        );
        assert!(!run.is_running());
        let v: serde_json::Value = serde_json::from_str(&run.to_json()).unwrap();
        assert_eq!(v["answer"]["error"], "boom");
        assert_eq!(v["experts"][0]["name"], "reference_extractor");
        assert_eq!(v["question"]["answer"], "A");
        let md = run.to_markdown();
        assert!(
            md.contains("**Failed:** boom") && md.contains("- A. Scratch (ground truth)"),
            "{md}"
        );
    }

    #[test]
    fn prompt_text_shows_parts_in_order() {
        let req: RequestTrace = serde_json::from_value(json!({"prompts": "echo", "template": "t", "system": "Be brief.", "parts": [{"text": "Look:"}, {"image": "reference", "index": 0, "path": "/r.png"}, {"image": "query", "path": "/q.png"}, {"text": "Answer."}]})).unwrap();
        assert_eq!(
            prompt_text(&req),
            "[system]\nBe brief.\n\n[user]\nLook:\n[image: reference /r.png]\n\n[image: query /q.png]\nAnswer."
        );
    }
}
