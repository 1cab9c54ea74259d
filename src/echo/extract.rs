//! Reading the chosen option out of an LLM's free-text reply.
//!
//! Two families of behaviour live here:
//!
//! * The MMAD modes ([`ExtractMode::MmadLast`], [`ExtractMode::MmadFirst`])
//!   reproduce MMAD's evaluation scripts exactly, so scores stay comparable
//!   with published numbers: every standalone capital `A`-`E` (Python's
//!   `re.findall(r'\b([A-E])\b', reply)`), then `difflib.get_close_matches`
//!   against the option texts, then the raw reply.
//! * [`ExtractMode::Structured`] reads the reply's structure first (a bare
//!   letter, answer markers, a leading `X.` label, bold, parentheses, quoted
//!   option text, Yes/No) and only then falls back to the MMAD algorithm.
//!   MMAD's last-match rule misreads replies such as `"D: A jagged break"`
//!   (it finds the article `A`), replies that repeat the question with its
//!   options, and chain-of-thought; the structured reader fixes those.

use std::sync::LazyLock;

use indexmap::IndexMap;
use regex::Regex;

use super::difflib;

/// How letters are read from a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExtractMode {
    /// Structure-aware reading with an MMAD-style fallback.
    #[default]
    Structured,
    /// MMAD's scripts as published: the last standalone `A`-`E`.
    MmadLast,
    /// MMAD's regex, taking the first standalone `A`-`E` instead.
    MmadFirst,
}

/// Which rule produced an [`Extraction`], so reports can show how reliable
/// each reading was.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExtractMethod {
    /// The reply starts with a label such as `B.`, `C)` or `D: text`, or (in
    /// a reply that repeats the options) its last decisive line does.
    LeadingLetter,
    /// `Answer: X`, `The answer is X`, `I choose X`, `Option X`, `\boxed{X}`.
    AnswerMarker,
    /// `(X)` inside the reply.
    Parenthesised,
    /// `**X**` or `**X. text**` inside the reply.
    Bold,
    /// The reply quotes exactly one option's text, or answers Yes/No.
    OptionText,
    /// The reply is nothing but a letter, perhaps decorated: `b`, `(C)`.
    SingleLetter,
    /// MMAD's regex, last standalone capital `A`-`E`.
    RegexLast,
    /// MMAD's regex, first standalone capital `A`-`E`.
    RegexFirst,
    /// MMAD's `difflib.get_close_matches` fallback on the option texts.
    ClosestOption,
    /// Nothing matched; the raw reply is kept as the answer.
    Unmatched,
}

impl ExtractMethod {
    /// The name journals and reports use (`leading-letter`).
    pub fn as_str(&self) -> &'static str {
        match self {
            ExtractMethod::LeadingLetter => "leading-letter",
            ExtractMethod::AnswerMarker => "answer-marker",
            ExtractMethod::Parenthesised => "parenthesised",
            ExtractMethod::Bold => "bold",
            ExtractMethod::OptionText => "option-text",
            ExtractMethod::SingleLetter => "single-letter",
            ExtractMethod::RegexLast => "regex-last",
            ExtractMethod::RegexFirst => "regex-first",
            ExtractMethod::ClosestOption => "closest-option",
            ExtractMethod::Unmatched => "unmatched",
        }
    }
}

/// The result of reading one reply.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Extraction {
    /// The letter, when one of the options' keys (or any A-E in MMAD modes) was found.
    pub letter: Option<String>,
    /// What goes in MMAD's `gpt_answer`: the letter, or the raw reply when nothing matched.
    pub answer: String,
    pub method: ExtractMethod,
}

impl Extraction {
    fn found(letter: String, method: ExtractMethod) -> Self {
        Self {
            answer: letter.clone(),
            letter: Some(letter),
            method,
        }
    }

    fn unmatched(reply: &str) -> Self {
        Self {
            letter: None,
            answer: reply.to_owned(),
            method: ExtractMethod::Unmatched,
        }
    }
}

/// Reads the chosen option from `reply`.
///
/// `options` maps keys (normally `"A"`..`"E"`) to option texts in the order
/// the question listed them; it may be empty. In Structured mode any letter
/// returned is a key of `options` (or `A`-`E` when `options` is empty); in
/// the MMAD modes the regex may return a letter that is not a key, exactly
/// as MMAD's scripts do. Never panics.
pub fn extract_answer(
    reply: &str,
    options: &IndexMap<String, String>,
    mode: ExtractMode,
) -> Extraction {
    match mode {
        ExtractMode::MmadLast => extract_mmad(reply, options, false),
        ExtractMode::MmadFirst => extract_mmad(reply, options, true),
        ExtractMode::Structured => extract_structured(reply, options),
    }
}

// ---------------------------------------------------------------------------
// MMAD's algorithm
// ---------------------------------------------------------------------------

/// Python's `\w` on `str`: exactly the Unicode letters (`L*`), numbers
/// (`N*`) and `_` (checked against CPython 3.11 for every code point).
/// Rust's `\w` differs (it includes combining marks, connector punctuation
/// and joiners, and excludes nothing Python has), so MMAD's `\b` is
/// reimplemented with this class instead of using the regex crate's `\b`.
static PY_WORD: LazyLock<Regex> = LazyLock::new(|| compile(r"[\p{L}\p{N}_]"));

fn is_python_word(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || c == '_'
    } else {
        PY_WORD.is_match(c.encode_utf8(&mut [0; 4]))
    }
}

/// Every match of Python's `\b([A-E])\b` in `text`, in order.
///
/// The pattern is one word character, so a match is a capital `A`-`E` whose
/// neighbours (if any) are not word characters, and matches never overlap.
fn mmad_letters(text: &str) -> impl Iterator<Item = char> + '_ {
    let mut previous: Option<char> = None;
    text.char_indices().filter_map(move |(i, c)| {
        let before = previous.replace(c);
        if !('A'..='E').contains(&c) || before.is_some_and(is_python_word) {
            return None;
        }
        // `c` is ASCII, so `i + 1` is the next character boundary.
        let after = text.get(i + 1..).and_then(|rest| rest.chars().next());
        (!after.is_some_and(is_python_word)).then_some(c)
    })
}

/// MMAD's fuzzy fallback: the key of the option text that
/// `get_close_matches(text, texts, n=1, cutoff=0.0)` picks, taking the first
/// key when several options share that text.
fn closest_option(text: &str, options: &IndexMap<String, String>) -> Option<String> {
    let texts: Vec<&str> = options.values().map(String::as_str).collect();
    let best = *difflib::get_close_matches(text, &texts, 1, 0.0).first()?;
    options
        .iter()
        .find(|(_, value)| value.as_str() == best)
        .map(|(key, _)| key.clone())
}

fn extract_mmad(reply: &str, options: &IndexMap<String, String>, first: bool) -> Extraction {
    let mut letters = mmad_letters(reply);
    let (hit, method) = if first {
        (letters.next(), ExtractMethod::RegexFirst)
    } else {
        (letters.last(), ExtractMethod::RegexLast)
    };
    if let Some(letter) = hit {
        return Extraction::found(letter.to_string(), method);
    }
    match closest_option(reply, options) {
        Some(key) => Extraction::found(key, ExtractMethod::ClosestOption),
        None => Extraction::unmatched(reply),
    }
}

// ---------------------------------------------------------------------------
// Structured reading
// ---------------------------------------------------------------------------

fn compile(pattern: &str) -> Regex {
    // The patterns are literals in this file, covered by the tests.
    Regex::new(pattern).expect("static extraction regex is valid")
}

static THINK_CLOSE: LazyLock<Regex> = LazyLock::new(|| compile(r"(?i)</think\s*>"));
static THINK_OPEN: LazyLock<Regex> = LazyLock::new(|| compile(r"(?i)<think\s*>"));
static ANSWER_OPEN: LazyLock<Regex> = LazyLock::new(|| compile(r"(?i)<answer\s*>"));
static ANSWER_CLOSE: LazyLock<Regex> = LazyLock::new(|| compile(r"(?i)</answer\s*>"));

/// A repeated `Question: ...?` prefix; its words must not count as quoted
/// option text. It stops at the first `?` so an answer on the same line stays.
static QUESTION_ECHO: LazyLock<Regex> =
    LazyLock::new(|| compile(r"(?im)^[ \t*_#>]*question[ \t*_]*:[^\n?]*\??"));

/// An explicit answer statement, up to where the letter or text should be.
/// A noun needs a connector (`answer is`, `option:`) so that phrases like
/// "Answer with the option's letter" or "unlike answer A" do not count, and
/// must be singular so that an echoed "Options: A. ..." does not either.
static MARKER: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r#"(?ix)
        (?:
            \b(?:answer|option|choice)
            \s*(?:\*\*|__)?\s*
            (?:
                (?:is|was|would\s+be|should\s+be|will\s+be|must\s+be
                  |seems\s+to\s+be|appears\s+to\s+be)\b\s*[:\-–—]?
              | [:=\-–—]
            )
          | \bI(?:\s+would|\s+will|'d|'ll)?\s+(?:choose|select|pick|go\s+with|opt\s+for)\b
          | 答案\s*(?:是|为|為|应该是|應該是|应为|應為)?\s*:?
          | \\boxed\{\s*(?:\\text(?:bf)?\{)?
        )
        [\s*_`'"“”‘’(\[{]*
        (?:(?:option|choice|letter)\b[\s*_`'"“”‘’(\[{]*)?
        "#,
    )
});

/// `Option X` / `choice (X)` without a connector: weaker than [`MARKER`],
/// because explanations mention options they reject.
static WEAK_OPTION: LazyLock<Regex> =
    LazyLock::new(|| compile(r"(?i)\b(?:option|choice)\b[ \t]*[(\[]?[ \t]*([A-Za-z])"));

/// `**X**`, `**(X)**`, `**X. text**` and the `__` forms.
static BOLD: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"\*\*[ \t]*[(\[]?[ \t]*([A-Za-z])[ \t]*[)\]]?[ \t]*(?:[.:)\-–][^*\n]*)?\*\*|__[ \t]*[(\[]?[ \t]*([A-Za-z])[ \t]*[)\]]?[ \t]*(?:[.:)\-–][^_\n]*)?__",
    )
});

static PARENTHESISED: LazyLock<Regex> =
    LazyLock::new(|| compile(r"[(\[][ \t]*([A-Za-z])[ \t]*[)\]]"));

/// An option label anywhere: `(X)`, `[X]`, `X.`, `X:` or `X)`.
static LABEL_ANYWHERE: LazyLock<Regex> =
    LazyLock::new(|| compile(r"[(\[]([A-Za-z])[)\]]|\b([A-Za-z])[.:)]"));

/// The whole reply is one ASCII letter, perhaps decorated: `b`, `(C)`, `**D**`.
static SINGLE_LETTER: LazyLock<Regex> =
    LazyLock::new(|| compile(r"^[^\p{L}\p{N}]*([A-Za-z])[^\p{L}\p{N}]*$"));

/// Words right after a mentioned option that reject it ("(A) is wrong").
static REJECTS: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)^[\s*_)\].,:]*(?:is\s+|seems\s+|appears\s+)?(?:to\s+be\s+)?(?:incorrect|wrong|not\b|unlikely|ruled\s+out|eliminated|excluded|false|isn't|doesn't|does\s+not|can\s+be\s+ruled|can't|cannot)",
    )
});

/// Words right after a mentioned option that endorse it ("(B) is correct").
static ENDORSES: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)^[\s*_)\].,:]*(?:is|seems|appears)\s+(?:to\s+be\s+)?(?:the\s+)?(?:correct|right|best|accurate|true|most\s+(?:likely|accurate|appropriate|plausible))",
    )
});

/// Words that negate an option text quoted right after them ("no crack").
const NEGATIONS: &[&str] = &["no", "not", "without", "nor", "never", "t", "neither"];

/// Option texts answered by a reply's first word rather than found anywhere:
/// "no" appears in too many sentences to count as a quote.
const POLAR: &[&str] = &["yes", "no"];

/// The options, with what the structured reader needs precomputed.
struct Options<'o> {
    map: &'o IndexMap<String, String>,
    /// Each option's text normalised by [`normalize`], in option order.
    texts: Vec<String>,
}

impl<'o> Options<'o> {
    fn new(map: &'o IndexMap<String, String>) -> Self {
        Self {
            map,
            texts: map.values().map(|text| normalize(text)).collect(),
        }
    }

    /// The key a letter token stands for, with its position in option order.
    ///
    /// Letters are case-insensitive and an upper-case key wins; with no
    /// options, any of `A`-`E` is accepted (upper-cased).
    fn key(&self, letter: char) -> Option<(usize, String)> {
        if !letter.is_ascii_alphabetic() {
            return None;
        }
        if self.map.is_empty() {
            let upper = letter.to_ascii_uppercase();
            return ('A'..='E')
                .contains(&upper)
                .then(|| (usize::from(upper as u8 - b'A'), upper.to_string()));
        }
        let is_letter = |key: &str, wanted: char| {
            let mut chars = key.chars();
            chars.next() == Some(wanted) && chars.next().is_none()
        };
        [letter.to_ascii_uppercase(), letter.to_ascii_lowercase()]
            .into_iter()
            .find_map(|wanted| self.map.keys().position(|key| is_letter(key, wanted)))
            .and_then(|index| self.key_at(index).map(|key| (index, key)))
    }

    fn key_at(&self, index: usize) -> Option<String> {
        self.map.get_index(index).map(|(key, _)| key.clone())
    }

    /// The text of option `index` starts `rest` (normalised, whole words).
    fn text_starts(&self, index: usize, rest: &str) -> bool {
        self.texts
            .get(index)
            .is_some_and(|text| !text.is_empty() && normalized_prefix_end(rest, text).is_some())
    }

    /// Another option's text starts `rest`: then a preceding `A` was the
    /// article ("Answer: A scratch", when B is "Scratch").
    fn other_text_starts(&self, index: usize, rest: &str) -> bool {
        (0..self.texts.len()).any(|other| other != index && self.text_starts(other, rest))
    }

    /// The option whose (longest) text starts `rest`, an article allowed first.
    fn option_starting(&self, rest: &str) -> Option<String> {
        let without_article = strip_article(rest);
        let mut best: Option<(usize, usize)> = None;
        for (index, text) in self.texts.iter().enumerate() {
            if text.is_empty() {
                continue;
            }
            let hit = normalized_prefix_end(rest, text).is_some()
                || without_article.is_some_and(|r| normalized_prefix_end(r, text).is_some());
            if hit && best.is_none_or(|(_, len)| text.len() > len) {
                best = Some((index, text.len()));
            }
        }
        best.and_then(|(index, _)| self.key_at(index))
    }

    /// Decides whether a letter token followed by `rest` names an option.
    ///
    /// Punctuation or the end right after the letter makes it a label
    /// ("B.", "c)", "answer: c"). Followed by a word, it is a label when the
    /// words start that option's own text ("D A jagged break"), or when it
    /// is a capital other than `A`. A lower-case letter followed by another
    /// word is the article or prose ("a scratch"), never a label. A capital
    /// `A` followed by a word is the article when `strict` (the start of a
    /// sentence) or when another option's text follows ("Answer: A
    /// scratch"); after "the answer is" it is the letter.
    fn accept(&self, letter: char, rest: &str, strict: bool) -> Option<(usize, String)> {
        let key = self.key(letter)?;
        let index = key.0;
        let Some(next) = rest.chars().next() else {
            return Some(key);
        };
        if next.is_alphanumeric() || next == '_' {
            return None; // part of a longer word: "Bold", "a1"
        }
        if !next.is_whitespace() {
            return Some(key);
        }
        let after = rest.trim_start_matches([' ', '\t']);
        match after.chars().next() {
            None | Some('\n' | '\r') => return Some(key),
            Some(c) if !c.is_alphanumeric() => {
                let separator = matches!(c, '.' | ':' | ')' | '-' | '–' | '—');
                return (separator || letter.is_ascii_uppercase()).then_some(key);
            }
            Some(_) => {}
        }
        if self.text_starts(index, after) {
            return Some(key);
        }
        if letter.is_ascii_lowercase() {
            return None;
        }
        if letter == 'A' && (strict || self.other_text_starts(index, after)) {
            return None;
        }
        Some(key)
    }
}

/// Lower-cases and turns every run of non-alphanumeric characters into one
/// space, so option texts compare regardless of case, punctuation and
/// spacing.
fn normalize(text: &str) -> String {
    Normalized::new(text).map(|(_, c)| c).collect()
}

/// [`normalize`] as an iterator that also reports, for each produced
/// character, the byte offset just after the source character; leading and
/// trailing separators are dropped.
struct Normalized<'s> {
    chars: std::str::CharIndices<'s>,
    pending: Option<(usize, std::char::ToLowercase)>,
    gap: bool,
    started: bool,
}

impl<'s> Normalized<'s> {
    fn new(text: &'s str) -> Self {
        Self {
            chars: text.char_indices(),
            pending: None,
            gap: false,
            started: false,
        }
    }
}

impl Iterator for Normalized<'_> {
    type Item = (usize, char);

    fn next(&mut self) -> Option<(usize, char)> {
        loop {
            if let Some((end, lower)) = self.pending.as_mut() {
                let end = *end;
                if let Some(c) = lower.next() {
                    return Some((end, c));
                }
                self.pending = None;
            }
            let (i, c) = self.chars.next()?;
            if !c.is_alphanumeric() {
                self.gap = true;
                continue;
            }
            let end = i + c.len_utf8();
            self.pending = Some((end, c.to_lowercase()));
            if self.gap && self.started {
                self.gap = false;
                return Some((i, ' '));
            }
            self.gap = false;
            self.started = true;
        }
    }
}

/// When `rest`, normalised, starts with the normalised `target` as whole
/// words, the byte offset in `rest` where the matched text ends.
fn normalized_prefix_end(rest: &str, target: &str) -> Option<usize> {
    let mut produced = Normalized::new(rest);
    let mut end = 0;
    for wanted in target.chars() {
        let (at, c) = produced.next()?;
        if c != wanted {
            return None;
        }
        end = at;
    }
    match produced.next() {
        None | Some((_, ' ')) => Some(end),
        Some(_) => None,
    }
}

/// `rest` without a leading English article, when it has one.
fn strip_article(rest: &str) -> Option<&str> {
    let trimmed = rest.trim_start();
    ["a ", "an ", "the "].iter().find_map(|article| {
        let head = trimmed.get(..article.len())?;
        head.eq_ignore_ascii_case(article)
            .then(|| &trimmed[article.len()..])
    })
}

/// Full-width ASCII (common in CJK replies: `答案：Ｂ`) to ASCII, so the
/// patterns below see ordinary letters and punctuation.
fn fold_full_width(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            _ => c,
        })
        .collect()
}

/// The part of the reply that holds the answer.
///
/// Reasoning in `<think>` blocks mentions every option, so when text follows
/// the last `</think>` only that text is read; when nothing follows (the
/// answer was cut off), the reasoning is all there is. An `<answer>` block,
/// when present and not empty, narrows the text further.
fn focus_text(reply: &str) -> String {
    let folded = fold_full_width(reply);
    let mut focus: &str = &folded;
    let mut owned: Option<String> = None;
    if let Some(close) = THINK_CLOSE.find_iter(&folded).last() {
        let after = &folded[close.end()..];
        if has_alphanumeric(after) {
            focus = after;
        } else {
            owned = Some(
                THINK_OPEN
                    .replace_all(&folded[..close.start()], " ")
                    .into_owned(),
            );
        }
    } else if THINK_OPEN.is_match(&folded) {
        owned = Some(THINK_OPEN.replace_all(&folded, " ").into_owned());
    }
    let focus: &str = owned.as_deref().unwrap_or(focus);
    if let Some(open) = ANSWER_OPEN.find_iter(focus).last() {
        let inner = &focus[open.end()..];
        let inner = ANSWER_CLOSE
            .find(inner)
            .map_or(inner, |close| &inner[..close.start()]);
        if has_alphanumeric(inner) {
            return inner.to_owned();
        }
    }
    focus.to_owned()
}

fn has_alphanumeric(text: &str) -> bool {
    text.chars().any(char::is_alphanumeric)
}

/// A line's leading label (`B.`, `(C)`, `- **D: text**`, `Option B:`), with
/// the option's position in option order.
fn line_label(line: &str, options: &Options<'_>) -> Option<(usize, String)> {
    let mut rest = line.trim_start_matches(|c: char| {
        c.is_whitespace() || matches!(c, '-' | '*' | '+' | '>' | '#' | '_' | '`' | '•')
    });
    for word in ["option", "choice", "answer"] {
        if let Some(head) = rest.get(..word.len())
            && head.eq_ignore_ascii_case(word)
            && rest[word.len()..].starts_with([' ', '\t'])
        {
            rest = rest[word.len()..].trim_start();
            break;
        }
    }
    let bracketed = rest.starts_with(['(', '[']);
    if bracketed {
        rest = rest[1..].trim_start();
    }
    let letter = rest.chars().next().filter(char::is_ascii_alphabetic)?;
    let after = &rest[1..];
    let (found, after) = if bracketed {
        let after = after.trim_start();
        let closed = after.starts_with([')', ']']);
        (
            closed.then(|| options.key(letter)).flatten(),
            after.get(1..).unwrap_or(""),
        )
    } else {
        (options.accept(letter, after, true), after)
    };
    // "(A) is wrong" opens a line without answering it.
    found.filter(|(index, _)| !REJECTS.is_match(after) || options.text_starts(*index, after))
}

/// Removes what only repeats the question: a `Question: ...?` echo, runs of
/// adjacent option listings (`A. Yes B. No`, in option order) and runs of
/// consecutive lines labelled in option order (an option-by-option
/// analysis). A single label, or labels out of order, are kept: those are
/// answers.
fn strip_echo(focus: &str, options: &Options<'_>) -> String {
    let text = QUESTION_ECHO.replace_all(focus, "\n");
    let text = strip_inline_listings(&text, options);
    strip_labelled_line_runs(&text, options)
}

fn strip_inline_listings(text: &str, options: &Options<'_>) -> String {
    // (start, end, option index) of each label directly followed by its text.
    let mut hits: Vec<(usize, usize, usize)> = Vec::new();
    for caps in LABEL_ANYWHERE.captures_iter(text) {
        let (Some(whole), Some(letter)) = (caps.get(0), caps.get(1).or_else(|| caps.get(2))) else {
            continue;
        };
        if hits.last().is_some_and(|&(_, end, _)| whole.start() < end) {
            continue;
        }
        let Some((index, _)) = letter.as_str().chars().next().and_then(|c| options.key(c)) else {
            continue;
        };
        let Some(option_text) = options.texts.get(index).filter(|t| !t.is_empty()) else {
            continue;
        };
        if let Some(len) = normalized_prefix_end(&text[whole.end()..], option_text) {
            hits.push((whole.start(), whole.end() + len, index));
        }
    }

    let mut removals: Vec<(usize, usize)> = Vec::new();
    let mut run: Vec<(usize, usize, usize)> = Vec::new();
    let flush = |run: &mut Vec<(usize, usize, usize)>, removals: &mut Vec<(usize, usize)>| {
        if let (Some(first), Some(last)) = (run.first(), run.last())
            && run.len() >= 2
        {
            removals.push((first.0, last.1));
        }
        run.clear();
    };
    for hit in hits {
        let continues = run
            .last()
            .is_some_and(|&(_, end, index)| hit.2 > index && is_listing_gap(&text[end..hit.0]));
        if !continues {
            flush(&mut run, &mut removals);
        }
        run.push(hit);
    }
    flush(&mut run, &mut removals);
    cut(text, &removals)
}

/// Text between two listed options: punctuation, whitespace, "or", "and".
fn is_listing_gap(gap: &str) -> bool {
    gap.len() <= 40 && matches!(normalize(gap).as_str(), "" | "or" | "and")
}

fn strip_labelled_line_runs(text: &str, options: &Options<'_>) -> String {
    let mut removals: Vec<(usize, usize)> = Vec::new();
    // (start, end, option index) of the labelled lines in the current run.
    let mut run: Vec<(usize, usize, usize)> = Vec::new();
    let mut offset = 0;
    let flush = |run: &mut Vec<(usize, usize, usize)>, removals: &mut Vec<(usize, usize)>| {
        if run.len() >= 2 {
            removals.extend(run.iter().map(|&(start, end, _)| (start, end)));
        }
        run.clear();
    };
    for line in text.split_inclusive('\n') {
        let (start, end) = (offset, offset + line.len());
        offset = end;
        if !has_alphanumeric(line) {
            continue;
        }
        match line_label(line, options) {
            Some((index, _)) if run.last().is_none_or(|&(_, _, last)| index > last) => {
                run.push((start, end, index));
            }
            Some((index, _)) => {
                flush(&mut run, &mut removals);
                run.push((start, end, index));
            }
            None => flush(&mut run, &mut removals),
        }
    }
    flush(&mut run, &mut removals);
    cut(text, &removals)
}

/// `text` with the sorted, disjoint byte ranges replaced by line breaks.
fn cut(text: &str, removals: &[(usize, usize)]) -> String {
    if removals.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for &(start, end) in removals {
        out.push_str(&text[from..start]);
        out.push('\n');
        from = end;
    }
    out.push_str(&text[from..]);
    out
}

fn single_letter(body: &str, options: &Options<'_>) -> Option<String> {
    let caps = SINGLE_LETTER.captures(body)?;
    let letter = caps.get(1)?.as_str().chars().next()?;
    options.key(letter).map(|(_, key)| key)
}

/// The last explicit answer statement: in chain-of-thought the conclusion
/// comes last. A letter is accepted by [`Options::accept`]; otherwise the
/// statement may name an option by its text ("The answer is yes").
fn answer_marker(body: &str, options: &Options<'_>) -> Option<String> {
    MARKER
        .find_iter(body)
        .filter_map(|marker| {
            let rest = &body[marker.end()..];
            let letter = rest.chars().next().filter(char::is_ascii_alphabetic);
            letter
                .and_then(|c| options.accept(c, &rest[1..], false))
                .map(|(_, key)| key)
                .or_else(|| options.option_starting(rest))
        })
        .last()
}

/// The first line's label; failing that, the last labelled line (after
/// listings were stripped, the last decisive statement).
fn leading_letter(body: &str, options: &Options<'_>) -> Option<String> {
    let mut lines = body.lines().filter(|line| has_alphanumeric(line));
    let first = lines.next()?;
    if let Some((_, key)) = line_label(first, options) {
        return Some(key);
    }
    lines
        .rev()
        .find_map(|line| line_label(line, options))
        .map(|(_, key)| key)
}

/// Picks among options mentioned in passing (bold, parentheses, `Option X`):
/// mentions followed by a rejection are dropped, an endorsed mention wins,
/// and otherwise the last one does.
fn pick_mention<'t>(mentions: impl Iterator<Item = (String, &'t str)>) -> Option<String> {
    let mut endorsed = None;
    let mut last = None;
    for (key, rest) in mentions {
        if REJECTS.is_match(rest) {
            continue;
        }
        if ENDORSES.is_match(rest) {
            endorsed = Some(key.clone());
        }
        last = Some(key);
    }
    endorsed.or(last)
}

fn bold(body: &str, options: &Options<'_>) -> Option<String> {
    pick_mention(BOLD.captures_iter(body).filter_map(|caps| {
        let whole = caps.get(0)?;
        let letter = caps.get(1).or_else(|| caps.get(2))?;
        let (_, key) = options.key(letter.as_str().chars().next()?)?;
        Some((key, &body[whole.end()..]))
    }))
}

fn parenthesised(body: &str, options: &Options<'_>) -> Option<String> {
    pick_mention(PARENTHESISED.captures_iter(body).filter_map(|caps| {
        let whole = caps.get(0)?;
        let letter = caps.get(1)?.as_str().chars().next()?;
        let (_, key) = options.key(letter)?;
        Some((key, &body[whole.end()..]))
    }))
}

fn weak_option(body: &str, options: &Options<'_>) -> Option<String> {
    pick_mention(WEAK_OPTION.captures_iter(body).filter_map(|caps| {
        let letter = caps.get(1)?;
        let rest = &body[letter.end()..];
        let c = letter.as_str().chars().next()?;
        let (_, key) = if rest.starts_with([')', ']']) {
            options.key(c)
        } else {
            options.accept(c, rest, false)
        }?;
        Some((key, rest))
    }))
}

/// "Yes"/"No" as the reply's first word, or as its whole last sentence,
/// mapped to the option with that text, whichever letter it has.
fn polar(body: &str, options: &Options<'_>) -> Option<String> {
    let normalized = normalize(body);
    let first = normalized.split(' ').next().unwrap_or_default();
    let word = if POLAR.contains(&first) {
        first.to_owned()
    } else {
        let last = body
            .split(['.', '!', '?', '\n'])
            .rfind(|sentence| has_alphanumeric(sentence))
            .map(normalize)?;
        if !POLAR.contains(&last.as_str()) {
            return None;
        }
        last
    };
    let mut matching = options
        .texts
        .iter()
        .enumerate()
        .filter(|(_, text)| text.split(' ').next() == Some(word.as_str()));
    let (index, _) = matching.next()?;
    if matching.next().is_some() {
        return None;
    }
    options.key_at(index)
}

/// The one option whose full text the reply quotes (normalised, whole
/// words, not right after a negation). An option quoted only inside a
/// longer quoted option ("scratch" in "deep scratch") does not count.
fn quoted_option(body: &str, options: &Options<'_>) -> Option<String> {
    let normalized = normalize(body);
    let padded = format!(" {normalized} ");
    // For each quoted option: the byte spans of its affirmative quotes.
    let mut quoted: Vec<(usize, Vec<(usize, usize)>)> = Vec::new();
    for (index, text) in options.texts.iter().enumerate() {
        if text.is_empty() || POLAR.contains(&text.as_str()) {
            continue;
        }
        let needle = format!(" {text} ");
        let spans: Vec<(usize, usize)> = padded
            .match_indices(&needle)
            .map(|(at, _)| (at + 1, at + 1 + text.len()))
            .filter(|&(start, _)| !negated(&padded[..start]))
            .collect();
        if !spans.is_empty() {
            quoted.push((index, spans));
        }
    }
    let inside_other = |me: usize, spans: &[(usize, usize)]| {
        spans.iter().all(|&(start, end)| {
            quoted.iter().any(|(other, other_spans)| {
                *other != me
                    && options.texts[*other].len() > options.texts[me].len()
                    && other_spans.iter().any(|&(s, e)| s <= start && end <= e)
            })
        })
    };
    let mut remaining = quoted
        .iter()
        .filter(|(index, spans)| !inside_other(*index, spans));
    let (index, _) = remaining.next()?;
    if remaining.next().is_some() {
        return None;
    }
    options.key_at(*index)
}

/// Whether the two words before a quote negate it ("no visible crack").
fn negated(before: &str) -> bool {
    before
        .split(' ')
        .rev()
        .filter(|word| !word.is_empty())
        .take(2)
        .any(|word| NEGATIONS.contains(&word))
}

fn extract_structured(reply: &str, map: &IndexMap<String, String>) -> Extraction {
    let options = Options::new(map);
    let focus = focus_text(reply);
    let body = strip_echo(&focus, &options);

    type Detector = fn(&str, &Options<'_>) -> Option<String>;
    let detectors: [(Detector, ExtractMethod); 8] = [
        (single_letter, ExtractMethod::SingleLetter),
        (answer_marker, ExtractMethod::AnswerMarker),
        (leading_letter, ExtractMethod::LeadingLetter),
        (bold, ExtractMethod::Bold),
        (parenthesised, ExtractMethod::Parenthesised),
        (weak_option, ExtractMethod::AnswerMarker),
        (polar, ExtractMethod::OptionText),
        (quoted_option, ExtractMethod::OptionText),
    ];
    for (detect, method) in detectors {
        if let Some(key) = detect(&body, &options) {
            return Extraction::found(key, method);
        }
    }

    // MMAD's algorithm on the focused text (not the stripped body, so a reply
    // that only lists the options still yields something), keeping only
    // letters that are keys (MMAD itself would also return non-keys).
    let last_key = mmad_letters(&focus)
        .filter_map(|c| options.key(c).map(|(_, key)| key))
        .last();
    if let Some(key) = last_key {
        return Extraction::found(key, ExtractMethod::RegexLast);
    }
    // Unlike MMAD, an empty or punctuation-only reply is not matched: the
    // closest option to nothing is decided by tie-breaking alone.
    if !has_alphanumeric(&focus) {
        return Extraction::unmatched(reply);
    }
    match closest_option(&focus, map) {
        Some(key) => Extraction::found(key, ExtractMethod::ClosestOption),
        None => Extraction::unmatched(reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_are_the_ones_journals_store() {
        use ExtractMethod::*;
        for m in [
            LeadingLetter,
            AnswerMarker,
            Parenthesised,
            Bold,
            OptionText,
            SingleLetter,
            RegexLast,
            RegexFirst,
            ClosestOption,
            Unmatched,
        ] {
            assert_eq!(serde_json::to_value(&m).unwrap(), m.as_str());
        }
    }
    use proptest::prelude::*;
    use serde::Deserialize;

    use ExtractMethod::*;
    use ExtractMode::*;

    fn opts(pairs: &[(&str, &str)]) -> IndexMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const YES_NO: &[(&str, &str)] = &[("A", "Yes"), ("B", "No")];
    /// The letter of "Yes" varies in MMAD; here it is B.
    const NO_YES: &[(&str, &str)] = &[("A", "No"), ("B", "Yes")];
    const DEFECT: &[(&str, &str)] = &[
        ("A", "Crack"),
        ("B", "Scratch"),
        ("C", "Dent"),
        ("D", "No defect"),
    ];
    const JAGGED: &[(&str, &str)] = &[
        ("A", "A smooth cut"),
        ("B", "A hole"),
        ("C", "A stain"),
        ("D", "A jagged break"),
    ];
    const PLACE: &[(&str, &str)] = &[
        ("A", "Top left"),
        ("B", "Top right"),
        ("C", "Bottom left"),
        ("D", "Bottom right"),
        ("E", "Center"),
    ];
    const NESTED: &[(&str, &str)] = &[("A", "Scratch"), ("B", "Deep scratch"), ("C", "Hole")];
    const NONE: &[(&str, &str)] = &[];

    /// (reply, options, expected letter, expected method)
    type Opts = &'static [(&'static str, &'static str)];
    type Case = (&'static str, Opts, Option<&'static str>, ExtractMethod);

    const STRUCTURED: &[Case] = &[
        // A bare letter, decorated or not.
        ("B", YES_NO, Some("B"), SingleLetter),
        ("b", YES_NO, Some("B"), SingleLetter),
        ("B.", YES_NO, Some("B"), SingleLetter),
        ("(C)", DEFECT, Some("C"), SingleLetter),
        ("**D**", DEFECT, Some("D"), SingleLetter),
        ("  'a'\n", YES_NO, Some("A"), SingleLetter),
        ("c", NONE, Some("C"), SingleLetter),
        // A leading label followed by option text: MMAD's last-match flaw.
        ("D: A jagged break", JAGGED, Some("D"), LeadingLetter),
        ("D. A jagged break", JAGGED, Some("D"), LeadingLetter),
        ("D A jagged break", JAGGED, Some("D"), LeadingLetter),
        ("C) Dent", DEFECT, Some("C"), LeadingLetter),
        ("b) scratch", DEFECT, Some("B"), LeadingLetter),
        ("- **C. Dent**", DEFECT, Some("C"), LeadingLetter),
        (
            "B. Although option A mentions a crack, the mark is a scratch.",
            DEFECT,
            Some("B"),
            LeadingLetter,
        ),
        (
            "B. No\nA would mean a defect is present, but C is not an option.",
            YES_NO,
            Some("B"),
            LeadingLetter,
        ),
        (
            "B\n\nThe image shows no defect, unlike A.",
            YES_NO,
            Some("B"),
            LeadingLetter,
        ),
        ("### Result\nC", DEFECT, Some("C"), LeadingLetter),
        // Explicit answer markers.
        ("Answer: C", DEFECT, Some("C"), AnswerMarker),
        ("The answer is B.", YES_NO, Some("B"), AnswerMarker),
        ("The answer is (C).", DEFECT, Some("C"), AnswerMarker),
        ("Final answer: **D**", DEFECT, Some("D"), AnswerMarker),
        ("**Answer:** B", YES_NO, Some("B"), AnswerMarker),
        ("**Answer**: B. No", YES_NO, Some("B"), AnswerMarker),
        ("answer: c", DEFECT, Some("C"), AnswerMarker),
        ("The answer is: a", DEFECT, Some("A"), AnswerMarker),
        (
            "The correct option is C because the dent is visible.",
            DEFECT,
            Some("C"),
            AnswerMarker,
        ),
        (
            "The answer is A because the crack runs across the part.",
            DEFECT,
            Some("A"),
            AnswerMarker,
        ),
        (
            "The object has a visible crack. Answer: A",
            DEFECT,
            Some("A"),
            AnswerMarker,
        ),
        ("I choose B.", YES_NO, Some("B"), AnswerMarker),
        ("答案：Ｂ", YES_NO, Some("B"), AnswerMarker),
        ("答案是C", DEFECT, Some("C"), AnswerMarker),
        ("$\\boxed{C}$", DEFECT, Some("C"), AnswerMarker),
        ("The answer is yes", NO_YES, Some("B"), AnswerMarker),
        ("The answer is a dent.", DEFECT, Some("C"), AnswerMarker),
        (
            "Answer: A scratch on the top.",
            DEFECT,
            Some("B"),
            AnswerMarker,
        ),
        ("Option C", DEFECT, Some("C"), LeadingLetter),
        (
            "Option A is incorrect; option B is correct.",
            DEFECT,
            Some("B"),
            AnswerMarker,
        ),
        (
            "Looking at option A and option D, the image fits option D best.",
            DEFECT,
            Some("D"),
            AnswerMarker,
        ),
        // Bold and parentheses inside prose.
        (
            "The defect looks like **B. Scratch** near the rim.",
            DEFECT,
            Some("B"),
            Bold,
        ),
        ("Looking closely, it is **C**.", DEFECT, Some("C"), Bold),
        (
            "The defect is a dent (C).",
            DEFECT,
            Some("C"),
            Parenthesised,
        ),
        (
            "(B) is correct, (A) is not.",
            DEFECT,
            Some("B"),
            LeadingLetter,
        ),
        (
            "(A) is wrong here, the mark is (B).",
            DEFECT,
            Some("B"),
            Parenthesised,
        ),
        (
            "So, (A) is wrong and (B) fits.",
            DEFECT,
            Some("B"),
            Parenthesised,
        ),
        // Option text without a letter; "a" is the article.
        ("a scratch is visible", DEFECT, Some("B"), OptionText),
        (
            "A scratch is visible on the surface.",
            DEFECT,
            Some("B"),
            OptionText,
        ),
        (
            "There is no crack; the surface shows a scratch.",
            DEFECT,
            Some("B"),
            OptionText,
        ),
        ("It is a deep scratch.", NESTED, Some("B"), OptionText),
        (
            "The mark is in the top-left corner.",
            PLACE,
            Some("A"),
            OptionText,
        ),
        ("jagged break", JAGGED, Some("D"), ClosestOption),
        // Yes/No, wherever "Yes" is.
        ("Yes", NO_YES, Some("B"), OptionText),
        ("yes.", YES_NO, Some("A"), OptionText),
        ("No, the object looks fine.", NO_YES, Some("A"), OptionText),
        ("**Yes**, there is a crack.", NO_YES, Some("B"), OptionText),
        ("Yes", &[("1", "Yes"), ("2", "No")], Some("1"), OptionText),
        (
            "Looking at the surface, it appears normal. No.",
            NO_YES,
            Some("A"),
            OptionText,
        ),
        // Chain of thought.
        (
            "<think>Option A is a crack, option B a scratch... maybe C.</think>\nB",
            DEFECT,
            Some("B"),
            SingleLetter,
        ),
        (
            "<think>The answer is A? No.</think>The answer is D.",
            DEFECT,
            Some("D"),
            AnswerMarker,
        ),
        (
            "<think>The dent is obvious, so the answer is C",
            DEFECT,
            Some("C"),
            AnswerMarker,
        ),
        (
            "<think>\nLet me look.\n</think>\n\n<answer>B</answer>",
            YES_NO,
            Some("B"),
            SingleLetter,
        ),
        (
            "<think>It is C, final answer: C.</think>\n\n",
            DEFECT,
            Some("C"),
            AnswerMarker,
        ),
        (
            "Let's analyze each option:\nA. Crack - not visible\nB. Scratch - a thin line\nC. Dent - no\nD. No defect - no\n\nTherefore, the answer is B.",
            DEFECT,
            Some("B"),
            AnswerMarker,
        ),
        (
            "Let's analyze:\nA. Crack - not visible\nB. Scratch - visible\nC. Dent - no\nSo B it is.",
            DEFECT,
            Some("B"),
            RegexLast,
        ),
        // Replies that repeat the question and its options first.
        (
            "Question: Is there any defect in the object?\nA. Yes\nB. No\nAnswer: B",
            YES_NO,
            Some("B"),
            AnswerMarker,
        ),
        (
            "Question: What is the type of the defect?\nA. Crack\nB. Scratch\nC. Dent\nD. No defect\nThe image shows a dent on the lower side.",
            DEFECT,
            Some("C"),
            OptionText,
        ),
        (
            "Is there any defect in the object?\nA. Yes\nB. No\n\nB. No",
            YES_NO,
            Some("B"),
            LeadingLetter,
        ),
        (
            "A. Crack\nB. Scratch\nC. Dent\nD. No defect\n\nC",
            DEFECT,
            Some("C"),
            SingleLetter,
        ),
        (
            "Options: A. Crack, B. Scratch, C. Dent, D. No defect. The surface has a scratch.",
            DEFECT,
            Some("B"),
            OptionText,
        ),
        (
            "Is it (A) Yes or (B) No? I would say (B).",
            YES_NO,
            Some("B"),
            Parenthesised,
        ),
        ("A. Yes\nB. No", YES_NO, Some("B"), RegexLast),
        (
            "Question: Is there any defect in the object?\nOptions:\nA. Yes\nB. No\n\nThe object appears to be normal. No.",
            NO_YES,
            Some("A"),
            OptionText,
        ),
        // Fallbacks.
        ("I think it's B.", YES_NO, Some("B"), RegexLast),
        ("It might be C, or maybe D", DEFECT, Some("D"), RegexLast),
        ("The answer is C.", YES_NO, Some("A"), ClosestOption),
        ("E", YES_NO, Some("A"), ClosestOption),
        ("no defect here", DEFECT, Some("D"), OptionText),
        ("it is fine", YES_NO, Some("A"), ClosestOption),
        ("", YES_NO, None, Unmatched),
        ("   \n", DEFECT, None, Unmatched),
        ("", NONE, None, Unmatched),
        ("Yes", NONE, None, Unmatched),
        ("The answer is F.", NONE, None, Unmatched),
    ];

    /// (reply, options, mode, expected letter, expected method)
    type MmadRow = (
        &'static str,
        Opts,
        ExtractMode,
        Option<&'static str>,
        ExtractMethod,
    );

    const MMAD: &[MmadRow] = &[
        ("D: A jagged break", JAGGED, MmadLast, Some("A"), RegexLast),
        (
            "D: A jagged break",
            JAGGED,
            MmadFirst,
            Some("D"),
            RegexFirst,
        ),
        ("B", YES_NO, MmadLast, Some("B"), RegexLast),
        (
            "Answer: C. Although A is",
            DEFECT,
            MmadLast,
            Some("A"),
            RegexLast,
        ),
        (
            "Answer: C. Although A is",
            DEFECT,
            MmadFirst,
            Some("C"),
            RegexFirst,
        ),
        ("A-B", NONE, MmadLast, Some("B"), RegexLast),
        ("A-B", NONE, MmadFirst, Some("A"), RegexFirst),
        ("(E)", YES_NO, MmadLast, Some("E"), RegexLast),
        ("b", YES_NO, MmadLast, Some("A"), ClosestOption),
        ("", YES_NO, MmadLast, Some("A"), ClosestOption),
        (
            "no defect here",
            DEFECT,
            MmadFirst,
            Some("D"),
            ClosestOption,
        ),
        ("", NONE, MmadLast, None, Unmatched),
        ("The answer is F", NONE, MmadFirst, None, Unmatched),
        ("ÀA éB B² _C_ 1D2 漢A字", NONE, MmadLast, None, Unmatched),
        ("A\u{301}", NONE, MmadLast, Some("A"), RegexLast),
        ("A\u{200d}", NONE, MmadLast, Some("A"), RegexLast),
        ("A\u{203f}", NONE, MmadLast, Some("A"), RegexLast),
        ("Ⓐ B", NONE, MmadFirst, Some("B"), RegexFirst),
        (
            "a scratch is visible",
            DEFECT,
            MmadLast,
            Some("B"),
            ClosestOption,
        ),
        (
            "<think>A or B?</think> C",
            DEFECT,
            MmadLast,
            Some("C"),
            RegexLast,
        ),
    ];

    #[test]
    fn structured_table() {
        assert!(STRUCTURED.len() >= 45);
        let mut failures = Vec::new();
        for &(reply, options, letter, ref method) in STRUCTURED {
            let got = extract_answer(reply, &opts(options), Structured);
            let expected_answer = letter.unwrap_or(reply);
            if got.letter.as_deref() != letter
                || got.method != *method
                || got.answer != expected_answer
            {
                failures.push(format!(
                    "{reply:?}: expected {letter:?} {method:?}, got {got:?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn mmad_table() {
        assert!(MMAD.len() >= 15);
        let mut failures = Vec::new();
        for &(reply, options, mode, letter, ref method) in MMAD {
            let got = extract_answer(reply, &opts(options), mode);
            let expected_answer = letter.unwrap_or(reply);
            if got.letter.as_deref() != letter
                || got.method != *method
                || got.answer != expected_answer
            {
                failures.push(format!(
                    "{reply:?} {mode:?}: expected {letter:?} {method:?}, got {got:?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// MMAD's `parse_answer` as recorded from CPython by
    /// `scripts/gen_difflib_cases.py`.
    #[test]
    fn mmad_modes_match_cpython_fixture() {
        #[derive(Deserialize)]
        struct Fixture {
            mmad: Vec<MmadCase>,
        }
        #[derive(Deserialize)]
        struct MmadCase {
            reply: String,
            options: Vec<(String, String)>,
            regex: Vec<String>,
            closest: Option<String>,
        }
        let fixture: Fixture =
            serde_json::from_str(include_str!("../../tests/fixtures/difflib_cases.json"))
                .expect("fixture parses");
        assert!(fixture.mmad.len() >= 50);
        for case in fixture.mmad {
            let options: IndexMap<String, String> = case.options.into_iter().collect();
            for (mode, pick) in [
                (MmadFirst, case.regex.first()),
                (MmadLast, case.regex.last()),
            ] {
                let got = extract_answer(&case.reply, &options, mode);
                let expected = pick.or(case.closest.as_ref());
                assert_eq!(got.letter.as_ref(), expected, "{:?} {mode:?}", case.reply);
                assert_eq!(
                    &got.answer,
                    expected.unwrap_or(&case.reply),
                    "{:?}",
                    case.reply
                );
            }
        }
    }

    #[test]
    fn python_word_class_edges() {
        for c in ['a', 'Z', '0', '_', 'é', '漢', '²', 'Ⅻ', '٣'] {
            assert!(is_python_word(c), "{c:?}");
        }
        for c in [' ', '-', '\u{301}', '\u{200d}', '\u{203f}', 'Ⓐ', '😀', '*'] {
            assert!(!is_python_word(c), "{c:?}");
        }
    }

    #[test]
    fn serde_names_are_kebab_case() {
        assert_eq!(
            serde_json::to_string(&MmadLast).ok().as_deref(),
            Some("\"mmad-last\"")
        );
        assert_eq!(
            serde_json::to_string(&ClosestOption).ok().as_deref(),
            Some("\"closest-option\"")
        );
        assert_eq!(ExtractMode::default(), Structured);
    }

    #[test]
    fn huge_replies_are_handled() {
        let options = opts(DEFECT);
        let long = format!(
            "{}Answer: C",
            "a scratch, (x) **y** A. option ".repeat(20_000)
        );
        let got = extract_answer(&long, &options, Structured);
        assert_eq!(got.letter.as_deref(), Some("C"));
        let no_letters = "the surface looks uniform ".repeat(20_000);
        for mode in [Structured, MmadLast, MmadFirst] {
            let got = extract_answer(&no_letters, &options, mode);
            assert_eq!(got.method, ClosestOption);
        }
    }

    fn reply_strategy() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("A".to_owned()),
            Just("b".to_owned()),
            Just("(C)".to_owned()),
            Just("**".to_owned()),
            Just("Answer:".to_owned()),
            Just("the answer is".to_owned()),
            Just("Option".to_owned()),
            Just("<think>".to_owned()),
            Just("</think>".to_owned()),
            Just("<answer>".to_owned()),
            Just("Question:".to_owned()),
            Just("Yes".to_owned()),
            Just("no".to_owned()),
            Just(". ".to_owned()),
            Just("\n".to_owned()),
            Just(" ".to_owned()),
            Just("\u{301}".to_owned()),
            Just("Ｂ".to_owned()),
            "[A-Ea-e .:()*\\n]{0,4}",
            any::<String>(),
        ];
        prop_oneof![
            any::<String>(),
            prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.concat()),
        ]
    }

    fn options_strategy() -> impl Strategy<Value = IndexMap<String, String>> {
        let text = prop_oneof![
            Just(String::new()),
            Just("Yes".to_owned()),
            Just("No".to_owned()),
            Just("A scratch".to_owned()),
            "[a-zA-Z ]{0,12}",
            any::<String>(),
        ];
        prop::collection::vec(("[A-E]", text), 0..6).prop_map(|pairs| pairs.into_iter().collect())
    }

    fn weird_options_strategy() -> impl Strategy<Value = IndexMap<String, String>> {
        prop::collection::vec((any::<String>(), any::<String>()), 0..5)
            .prop_map(|pairs| pairs.into_iter().collect())
    }

    proptest! {
        #[test]
        fn mmad_answer_is_a_letter_or_the_reply(reply in reply_strategy(), options in options_strategy()) {
            for mode in [MmadLast, MmadFirst] {
                let got = extract_answer(&reply, &options, mode);
                let is_letter = got.answer.len() == 1 && ('A'..='E').any(|c| got.answer.starts_with(c));
                prop_assert!(is_letter || got.answer == reply, "{got:?}");
                prop_assert_eq!(got.letter.is_none(), got.method == Unmatched);
            }
        }

        #[test]
        fn structured_letters_are_keys(reply in reply_strategy(), options in options_strategy()) {
            let got = extract_answer(&reply, &options, Structured);
            match &got.letter {
                Some(letter) if options.is_empty() => {
                    prop_assert!(["A", "B", "C", "D", "E"].contains(&letter.as_str()));
                }
                Some(letter) => prop_assert!(options.contains_key(letter), "{got:?}"),
                None => prop_assert_eq!(&got.answer, &reply),
            }
        }

        #[test]
        fn weird_options_never_panic(reply in reply_strategy(), options in weird_options_strategy()) {
            for mode in [Structured, MmadLast, MmadFirst] {
                let got = extract_answer(&reply, &options, mode);
                if mode == Structured && let Some(letter) = &got.letter && !options.is_empty() {
                    prop_assert!(options.contains_key(letter));
                }
            }
        }
    }
}
