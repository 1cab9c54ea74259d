//! Reading answers to score: MMAD's answers JSON (a list) and our run journals.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::AnswerRecord;

/// Where in a file a bad entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryLocation {
    /// 0-based position in an answers JSON list (Python's index).
    Index(usize),
    /// 1-based line of a journal.
    Line(usize),
}

impl fmt::Display for EntryLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Index(i) => write!(f, "entry {i} (0-based)"),
            Self::Line(l) => write!(f, "line {l}"),
        }
    }
}

/// Errors reading answers; each names the file and the place in it.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The answers JSON does not parse; `line` and `column` are 1-based.
    #[error("{}: invalid JSON at line {line}, column {column}: {reason}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    /// A complete journal line (one that ends in a newline) does not parse.
    #[error("{}: line {line}, column {column}: invalid JSON: {reason}", path.display())]
    JournalLine {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error(
        "{}: expected a JSON list of answers or a journal with one JSON object per line, found {found}",
        path.display()
    )]
    NotAnswers { path: PathBuf, found: &'static str },
    #[error("{}: {at}: expected a JSON object, found {found}", path.display())]
    NotAnObject {
        path: PathBuf,
        at: EntryLocation,
        found: &'static str,
    },
    #[error("{}: {at}: field `{field}` is missing", path.display())]
    MissingField {
        path: PathBuf,
        at: EntryLocation,
        field: &'static str,
    },
    #[error("{}: {at}: field `{field}` must be a string, found {found}", path.display())]
    WrongType {
        path: PathBuf,
        at: EntryLocation,
        field: &'static str,
        found: &'static str,
    },
}

/// Layout of an answers file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFormat {
    /// MMAD's answers JSON: one list of objects.
    List,
    /// Our run journal: one JSON object per line.
    Journal,
}

/// A journal line recording a failed question (`"status": "error"`); not an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedQuestion {
    /// 1-based line number.
    pub line: usize,
    /// Image key of the question, empty if the line does not name one.
    pub image: String,
    /// The line's `error` (or `reason`, `message`) text.
    pub reason: String,
}

/// Answers read from a file, with what was left out of them.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedAnswers {
    pub format: AnswerFormat,
    /// Answers to score, in file order.
    pub records: Vec<AnswerRecord>,
    /// Journal lines for questions that failed; they are not scored.
    pub errors: Vec<FailedQuestion>,
    /// The journal's last line was cut short (a run stopped mid-write) and was ignored.
    pub torn_last_line: bool,
}

/// Read an MMAD answers JSON (a list) or a `.jsonl` run journal.
///
/// A `.jsonl` extension means a journal, streamed line by line through the reader
/// run folders use ([`crate::util::jsonl::scan_lines`]), so both agree on every
/// line, a torn last one included; otherwise the content decides (see
/// [`parse_answers`]).
pub fn load_answers(path: &Path) -> Result<LoadedAnswers, ScoreError> {
    let io_err = |source| ScoreError::Io {
        path: path.to_owned(),
        source,
    };
    let journal = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
    if journal {
        let file = crate::util::fsx::open_regular_for_read(path).map_err(io_err)?;
        let reader = std::io::BufReader::with_capacity(1 << 16, file);
        return parse_journal(reader, path).map_err(|e| {
            // Only on failure: a pretty-printed JSON document named `.jsonl` is
            // worth naming as what it is rather than as a bad line 1.
            match std::fs::metadata(path) {
                Ok(m) if m.len() <= LARGEST_DOCUMENT_CHECKED => std::fs::read(path)
                    .ok()
                    .and_then(|b| not_answers(&String::from_utf8_lossy(&b), path))
                    .unwrap_or(e),
                _ => e,
            }
        });
    }
    let bytes =
        crate::util::fsx::read_limited(path, crate::util::fsx::TEXT_FILE_LIMIT).map_err(io_err)?;
    let text = String::from_utf8_lossy(&bytes);
    parse_answers(&text, path, None)
}

/// Largest `.jsonl` file re-read whole to explain a parse failure.
const LARGEST_DOCUMENT_CHECKED: u64 = 64 << 20;

/// [`load_answers`] on text already in memory; `path` is only used in messages.
///
/// With `format` unset, text starting with `[` (or empty) is a list and anything else
/// a journal, except that a multi-line JSON document that is not a list (mmad.json
/// given by mistake, say) is rejected rather than read line by line.
pub fn parse_answers(
    text: &str,
    path: &Path,
    format: Option<AnswerFormat>,
) -> Result<LoadedAnswers, ScoreError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let format = format.unwrap_or_else(|| match text.trim_start().chars().next() {
        None | Some('[') => AnswerFormat::List,
        Some(_) => AnswerFormat::Journal,
    });
    match format {
        AnswerFormat::List => parse_list(text, path),
        AnswerFormat::Journal => {
            parse_journal(text.as_bytes(), path).map_err(|e| not_answers(text, path).unwrap_or(e))
        }
    }
}

/// A multi-line JSON document that is one value but not a list: not answers at
/// all (a journal's lines each hold a whole object, so its first line would parse).
fn not_answers(text: &str, path: &Path) -> Option<ScoreError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // One line is a journal of one record, whatever it holds.
    text.trim().lines().nth(1)?;
    let value = serde_json::from_str::<Value>(text).ok()?;
    (!value.is_array()).then(|| ScoreError::NotAnswers {
        path: path.to_owned(),
        found: json_kind(&value),
    })
}

fn parse_list(text: &str, path: &Path) -> Result<LoadedAnswers, ScoreError> {
    let mut out = LoadedAnswers {
        format: AnswerFormat::List,
        records: Vec::new(),
        errors: Vec::new(),
        torn_last_line: false,
    };
    if text.trim().is_empty() {
        return Ok(out);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| ScoreError::Json {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
        reason: json_error_reason(&e),
    })?;
    let Value::Array(entries) = value else {
        return Err(ScoreError::NotAnswers {
            path: path.to_owned(),
            found: json_kind(&value),
        });
    };
    out.records = entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| record_from_value(entry, path, EntryLocation::Index(i)))
        .collect::<Result<_, _>>()?;
    Ok(out)
}

fn parse_journal<R: std::io::BufRead>(reader: R, path: &Path) -> Result<LoadedAnswers, ScoreError> {
    let mut out = LoadedAnswers {
        format: AnswerFormat::Journal,
        records: Vec::new(),
        errors: Vec::new(),
        torn_last_line: false,
    };
    // A concurrent run appends in finishing order. When every line carries our
    // question `index`, the question's latest line counts and answers are scored in
    // dataset order, as for the run folder; other journals are read in file order.
    let mut indexed: Vec<(usize, usize, Option<AnswerRecord>, Option<FailedQuestion>)> = Vec::new();
    let mut all_indexed = true;
    let scan = crate::util::jsonl::scan_lines(
        reader,
        |journal_line| {
            let line = journal_line.number;
            let content = String::from_utf8_lossy(journal_line.text);
            let value: Value =
                serde_json::from_str(&content).map_err(|e| ScoreError::JournalLine {
                    path: path.to_owned(),
                    line,
                    column: e.column(),
                    reason: json_error_reason(&e),
                })?;
            let index = value
                .get("index")
                .and_then(Value::as_u64)
                .and_then(|i| usize::try_from(i).ok());
            all_indexed &= index.is_some();
            let (record, failed) = if value.get("status").and_then(Value::as_str) == Some("error") {
                (None, Some(failed_question(&value, line)))
            } else {
                let record = record_from_value(value, path, EntryLocation::Line(line))?;
                (Some(record), None)
            };
            indexed.push((index.unwrap_or(0), line, record, failed));
            Ok(())
        },
        |source| ScoreError::Io {
            path: path.to_owned(),
            source,
        },
    )?;
    out.torn_last_line = scan.torn_last_line;
    if all_indexed {
        // Stable: for one index the later line sorts last and replaces the earlier.
        indexed.sort_by_key(|(index, line, ..)| (*index, *line));
        let mut latest: Vec<(usize, usize, Option<AnswerRecord>, Option<FailedQuestion>)> =
            Vec::with_capacity(indexed.len());
        for entry in indexed {
            match latest.last_mut() {
                Some(prev) if prev.0 == entry.0 => *prev = entry,
                _ => latest.push(entry),
            }
        }
        indexed = latest;
    }
    for (_, _, record, failed) in indexed {
        out.records.extend(record);
        out.errors.extend(failed);
    }
    Ok(out)
}

fn failed_question(value: &Value, line: usize) -> FailedQuestion {
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    FailedQuestion {
        line,
        image: text("image").unwrap_or_default(),
        reason: text("error")
            .or_else(|| text("reason"))
            .or_else(|| text("message"))
            .unwrap_or_else(|| "unknown error".to_owned()),
    }
}

/// Check one entry field by field, so the error can name what is wrong and where.
fn record_from_value(
    value: Value,
    path: &Path,
    at: EntryLocation,
) -> Result<AnswerRecord, ScoreError> {
    let Value::Object(mut map) = value else {
        return Err(ScoreError::NotAnObject {
            path: path.to_owned(),
            at,
            found: json_kind(&value),
        });
    };
    let mut take = |field: &'static str| {
        map.remove(field).ok_or_else(|| ScoreError::MissingField {
            path: path.to_owned(),
            at,
            field,
        })
    };
    let image = take("image")?;
    let question_type = take("question_type")?;
    let correct_answer = take("correct_answer")?;
    let gpt_answer = take("gpt_answer")?;
    let string = |v: Value, field: &'static str| match v {
        Value::String(s) => Ok(s),
        other => Err(ScoreError::WrongType {
            path: path.to_owned(),
            at,
            field,
            found: json_kind(&other),
        }),
    };
    Ok(AnswerRecord {
        image: string(image, "image")?,
        question_type: string(question_type, "question_type")?,
        correct_answer,
        gpt_answer,
    })
}

/// serde_json's message without its "at line L column C" suffix, which the error
/// variants report themselves (for a journal, relative to the file, not the line).
fn json_error_reason(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&suffix) {
        Some(reason) => reason.to_owned(),
        None => message,
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
