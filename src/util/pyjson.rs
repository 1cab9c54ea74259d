//! JSON text in the exact layout Python's `json.dumps` produces.
//!
//! MMAD's files were written by Python (`json.dump(obj, f, indent=4)`). To keep a
//! round trip byte-stable we detect the layout a file was written with and write it
//! back the same way: indentation, `ensure_ascii` escaping and the trailing newline.

use serde_json::Value;

/// How a JSON document is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JsonStyle {
    /// Spaces per level; `None` is Python's compact default (`", "` and `": "`).
    pub indent: Option<usize>,
    /// Escape every character outside printable ASCII as `\uXXXX` (Python's default).
    pub ensure_ascii: bool,
    /// Whether the file ends with a newline.
    pub trailing_newline: bool,
}

impl Default for JsonStyle {
    /// MMAD's own layout: `json.dumps(obj, indent=4)`, no trailing newline.
    fn default() -> Self {
        JsonStyle {
            indent: Some(4),
            ensure_ascii: true,
            trailing_newline: false,
        }
    }
}

impl JsonStyle {
    /// Guesses the layout of `text` (best effort; falls back to the default).
    pub fn detect(text: &str) -> JsonStyle {
        let body = text.trim_start_matches('\u{feff}');
        let indent = match body.find('\n') {
            None => None,
            Some(pos) => {
                let next = &body[pos + 1..];
                let spaces = next.bytes().take_while(|b| *b == b' ').count();
                if spaces == 0 { Some(4) } else { Some(spaces) }
            }
        };
        JsonStyle {
            indent,
            ensure_ascii: body.is_ascii(),
            trailing_newline: body.ends_with('\n'),
        }
    }
}

/// Serialises `value` like Python's `json.dumps(value, indent=.., ensure_ascii=..)`.
pub fn to_string(value: &Value, style: JsonStyle) -> String {
    let mut out = String::new();
    write_value(&mut out, value, style, 0);
    if style.trailing_newline {
        out.push('\n');
    }
    out
}

fn newline(out: &mut String, style: JsonStyle, level: usize) {
    if let Some(n) = style.indent {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', n * level));
    }
}

fn write_value(out: &mut String, value: &Value, style: JsonStyle, level: usize) {
    let item_sep = if style.indent.is_some() { "," } else { ", " };
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s, style.ensure_ascii),
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, style, level + 1);
                write_value(out, item, style, level + 1);
            }
            newline(out, style, level);
            out.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, style, level + 1);
                write_string(out, k, style.ensure_ascii);
                out.push_str(": ");
                write_value(out, v, style, level + 1);
            }
            newline(out, style, level);
            out.push('}');
        }
    }
}

fn write_number(out: &mut String, n: &serde_json::Number) {
    if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
        out.push_str(&super::pyfloat::py_float_repr(f));
    } else {
        out.push_str(&n.to_string());
    }
}

fn write_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => push_u16_escape(out, c as u16),
            c if ensure_ascii && !(' '..='~').contains(&c) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    push_u16_escape(out, *unit);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_u16_escape(out: &mut String, unit: u16) {
    out.push_str(&format!("\\u{unit:04x}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn indented_layout_matches_python() {
        // python3 -c 'import json;print(json.dumps({"a":{"b":"x","c":[]},"d":[1,2],"e":{}},indent=4))'
        let v = json!({"a": {"b": "x", "c": []}, "d": [1, 2], "e": {}});
        let expected = "{\n    \"a\": {\n        \"b\": \"x\",\n        \"c\": []\n    },\n    \"d\": [\n        1,\n        2\n    ],\n    \"e\": {}\n}";
        assert_eq!(to_string(&v, JsonStyle::default()), expected);
    }

    #[test]
    fn compact_layout_matches_python() {
        let v = json!({"a": [1, "b"], "c": null});
        let style = JsonStyle {
            indent: None,
            ensure_ascii: true,
            trailing_newline: false,
        };
        assert_eq!(to_string(&v, style), r#"{"a": [1, "b"], "c": null}"#);
    }

    #[test]
    fn ascii_escaping_matches_python() {
        // python3 -c 'import json;print(json.dumps("é😀\x7f\x01\"\\/\t"))'
        let v = json!("é😀\u{7f}\u{1}\"\\/\t");
        assert_eq!(
            to_string(&v, JsonStyle::default()),
            r#""\u00e9\ud83d\ude00\u007f\u0001\"\\/\t""#
        );
        let raw = JsonStyle {
            ensure_ascii: false,
            ..JsonStyle::default()
        };
        assert_eq!(to_string(&v, raw), "\"é😀\u{7f}\\u0001\\\"\\\\/\\t\"");
    }

    #[test]
    fn detects_style() {
        let s = JsonStyle::detect("{\n  \"a\": 1\n}\n");
        assert_eq!(s.indent, Some(2));
        assert!(s.trailing_newline);
        assert!(s.ensure_ascii);
        let s = JsonStyle::detect("{\"a\": \"é\"}");
        assert_eq!(s.indent, None);
        assert!(!s.ensure_ascii);
    }
}
