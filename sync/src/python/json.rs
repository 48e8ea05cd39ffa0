//! JSON as Python's `json` module reads and writes it: objects keep their key order,
//! `json.dump(indent=4)` layout, `ensure_ascii` escaping, floats written with `repr(float)`,
//! `NaN`/`Infinity` accepted and produced.

use super::float;
use std::fmt::Write as _;

/// A JSON document with ordered objects and Python's int/float distinction.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// Why a text is not JSON, with its 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at line {line} column {column}: {reason}")]
pub struct JsonError {
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl Json {
    /// The value of `key` in an object (the last one if the key repeats, as Python does).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short name of the JSON type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Int(_) => "an integer",
            Json::Float(_) => "a float",
            Json::Str(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }

    /// `json.dumps(value, indent=4)` with the default `ensure_ascii=True`.
    pub fn dump_indented(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(true) => out.push_str("true"),
            Json::Bool(false) => out.push_str("false"),
            Json::Int(value) => {
                let _ = write!(out, "{value}");
            }
            Json::Float(value) => out.push_str(&float_token(*value)),
            Json::Str(text) => write_string(text, out),
            Json::Array(items) if items.is_empty() => out.push_str("[]"),
            Json::Object(entries) if entries.is_empty() => out.push_str("{}"),
            Json::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    newline_indent(out, depth + 1);
                    item.write(out, depth + 1);
                }
                newline_indent(out, depth);
                out.push(']');
            }
            Json::Object(entries) => {
                out.push('{');
                for (index, (key, value)) in entries.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    newline_indent(out, depth + 1);
                    write_string(key, out);
                    out.push_str(": ");
                    value.write(out, depth + 1);
                }
                newline_indent(out, depth);
                out.push('}');
            }
        }
    }
}

fn float_token(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        float::repr(value)
    }
}

fn newline_indent(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("    ");
    }
}

/// A JSON string literal with Python's `ensure_ascii` escaping.
pub fn write_string(text: &str, out: &mut String) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            ' '..='~' => out.push(ch),
            _ => {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Parses a JSON text as `json.loads` does.
pub fn parse(text: &str) -> Result<Json, JsonError> {
    parse_document(Parser {
        text: text.as_bytes(),
        pos: 0,
        sink: None,
    })
}

/// [`parse`], except that the elements of the array under the top-level key `key` are handed
/// to `each` as they are read, not kept: the document holds an empty array there. A sync-info
/// listing a million WALs then costs a million small records, not a tree of a million objects.
/// `each` returns `false` to stop; the parse then fails with "stopped by the reader" (the
/// caller knows why). A repeated `key` streams the elements of each occurrence.
pub fn parse_streaming(
    text: &str,
    key: &str,
    each: &mut dyn FnMut(Json) -> bool,
) -> Result<Json, JsonError> {
    parse_document(Parser {
        text: text.as_bytes(),
        pos: 0,
        sink: Some(Sink { key, each }),
    })
}

fn parse_document(mut parser: Parser<'_>) -> Result<Json, JsonError> {
    parser.skip_space();
    let value = parser.value(0)?;
    parser.skip_space();
    if parser.pos != parser.text.len() {
        return Err(parser.error("extra data after the document"));
    }
    Ok(value)
}

const MAX_DEPTH: usize = 512;

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
    sink: Option<Sink<'a>>,
}

/// Where the elements of one top-level array go ([`parse_streaming`]).
struct Sink<'a> {
    key: &'a str,
    each: &'a mut dyn FnMut(Json) -> bool,
}

impl Parser<'_> {
    fn error(&self, reason: &str) -> JsonError {
        let before = &self.text[..self.pos.min(self.text.len())];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        JsonError {
            line,
            column,
            reason: reason.to_owned(),
        }
    }

    fn skip_space(&mut self) {
        while matches!(self.text.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, JsonError> {
        if self.text[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expecting value"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        match self.text.get(self.pos) {
            None => Err(self.error("expecting value")),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'N') => self.literal("NaN", Json::Float(f64::NAN)),
            Some(b'I') => self.literal("Infinity", Json::Float(f64::INFINITY)),
            Some(b'-') if self.text[self.pos..].starts_with(b"-Infinity") => {
                self.literal("-Infinity", Json::Float(f64::NEG_INFINITY))
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_space();
                if self.text.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    self.skip_space();
                    items.push(self.value(depth + 1)?);
                    self.skip_space();
                    match self.text.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(self.error("expecting ',' delimiter")),
                    }
                }
            }
            Some(b'{') => {
                self.pos += 1;
                let mut entries = Vec::new();
                self.skip_space();
                if self.text.get(self.pos) == Some(&b'}') {
                    self.pos += 1;
                    return Ok(Json::Object(entries));
                }
                loop {
                    self.skip_space();
                    if self.text.get(self.pos) != Some(&b'"') {
                        return Err(self.error("expecting property name enclosed in double quotes"));
                    }
                    let key = self.string()?;
                    self.skip_space();
                    if self.text.get(self.pos) != Some(&b':') {
                        return Err(self.error("expecting ':' delimiter"));
                    }
                    self.pos += 1;
                    self.skip_space();
                    let streamed = depth == 0
                        && self.text.get(self.pos) == Some(&b'[')
                        && self.sink.as_ref().is_some_and(|sink| sink.key == key);
                    let value = if streamed {
                        self.stream_array(depth + 1)?
                    } else {
                        self.value(depth + 1)?
                    };
                    entries.push((key, value));
                    self.skip_space();
                    match self.text.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Json::Object(entries));
                        }
                        _ => return Err(self.error("expecting ',' delimiter")),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("expecting value")),
        }
    }

    /// The array at `pos`, its elements handed to the sink; an empty array.
    fn stream_array(&mut self, depth: usize) -> Result<Json, JsonError> {
        self.pos += 1;
        self.skip_space();
        if self.text.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(Json::Array(Vec::new()));
        }
        loop {
            self.skip_space();
            let item = self.value(depth + 1)?;
            let sink = self.sink.as_mut().expect("streaming with a sink");
            if !(sink.each)(item) {
                return Err(self.error("stopped by the reader"));
            }
            self.skip_space();
            match self.text.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Array(Vec::new()));
                }
                _ => return Err(self.error("expecting ',' delimiter")),
            }
        }
    }

    fn number(&mut self) -> Result<Json, JsonError> {
        let start = self.pos;
        if self.text[self.pos] == b'-' {
            self.pos += 1;
        }
        let digits_start = self.pos;
        while self.text.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        let int_digits = &self.text[digits_start..self.pos];
        if int_digits.is_empty() || (int_digits.len() > 1 && int_digits[0] == b'0') {
            self.pos = start;
            return Err(self.error("expecting value"));
        }
        let mut is_float = false;
        if self.text.get(self.pos) == Some(&b'.')
            && self.text.get(self.pos + 1).is_some_and(u8::is_ascii_digit)
        {
            is_float = true;
            self.pos += 1;
            while self.text.get(self.pos).is_some_and(u8::is_ascii_digit) {
                self.pos += 1;
            }
        }
        if matches!(self.text.get(self.pos), Some(b'e' | b'E')) {
            let mut probe = self.pos + 1;
            if matches!(self.text.get(probe), Some(b'+' | b'-')) {
                probe += 1;
            }
            if self.text.get(probe).is_some_and(u8::is_ascii_digit) {
                is_float = true;
                self.pos = probe;
                while self.text.get(self.pos).is_some_and(u8::is_ascii_digit) {
                    self.pos += 1;
                }
            }
        }
        let token = std::str::from_utf8(&self.text[start..self.pos]).expect("ASCII number");
        if is_float {
            token
                .parse()
                .map(Json::Float)
                .map_err(|_| self.error("invalid number"))
        } else {
            token
                .parse()
                .map(Json::Int)
                .map_err(|_| self.error("integer out of range"))
        }
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(&byte) = self.text.get(self.pos) {
                if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(
                std::str::from_utf8(&self.text[start..self.pos])
                    .map_err(|_| self.error("invalid UTF-8 in a string"))?,
            );
            match self.text.get(self.pos) {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escaped = *self
                        .text
                        .get(self.pos)
                        .ok_or_else(|| self.error("unterminated string"))?;
                    self.pos += 1;
                    match escaped {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\x08'),
                        b'f' => out.push('\x0c'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let first = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&first)
                                && self.text[self.pos..].starts_with(b"\\u")
                            {
                                let save = self.pos;
                                self.pos += 2;
                                let second = self.hex4()?;
                                if (0xdc00..0xe000).contains(&second) {
                                    0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
                                } else {
                                    self.pos = save;
                                    first
                                }
                            } else {
                                first
                            };
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        }
                        _ => return Err(self.error("invalid \\escape")),
                    }
                }
                Some(_) => return Err(self.error("invalid control character in a string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.error("invalid \\uXXXX escape"))?;
        self.pos += 4;
        Ok(digits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_hands_over_one_top_level_array() {
        let text = r#"{"wals": [1, {"a": [2]}, 3], "other": [4], "deep": {"wals": [5]}}"#;
        let mut seen = Vec::new();
        let doc = parse_streaming(text, "wals", &mut |item| {
            seen.push(item);
            true
        })
        .unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(doc.get("wals"), Some(&Json::Array(vec![])));
        assert_eq!(doc.get("other"), Some(&Json::Array(vec![Json::Int(4)])));
        assert_eq!(
            doc.get("deep").and_then(|d| d.get("wals")),
            Some(&Json::Array(vec![Json::Int(5)])),
            "only the top-level key streams"
        );
        let stopped = parse_streaming(text, "wals", &mut |_| false).unwrap_err();
        assert_eq!(stopped.reason, "stopped by the reader");
        assert!(parse_streaming("{\"wals\": [1,", "wals", &mut |_| true).is_err());
    }

    #[test]
    fn dump_matches_python_layout() {
        let doc = Json::Object(vec![
            ("a".into(), Json::Int(1)),
            (
                "b".into(),
                Json::Array(vec![Json::Float(1704110700.0), Json::Null]),
            ),
            ("c".into(), Json::Object(vec![])),
            ("d".into(), Json::Array(vec![])),
            ("é\u{7f}\u{1f600}".into(), Json::Str("q\"\\\n\u{1}".into())),
        ]);
        let expected = "{\n    \"a\": 1,\n    \"b\": [\n        1704110700.0,\n        null\n    ],\n    \"c\": {},\n    \"d\": [],\n    \"\\u00e9\\u007f\\ud83d\\ude00\": \"q\\\"\\\\\\n\\u0001\"\n}";
        assert_eq!(doc.dump_indented(), expected);
    }

    #[test]
    fn parse_keeps_order_and_types() {
        let doc = parse(r#"{"z": 1, "a": [1.5, -2, "\u00e9\ud83d\ude00"], "n": null, "f": NaN}"#)
            .unwrap();
        let Json::Object(entries) = &doc else {
            panic!("object expected")
        };
        assert_eq!(entries[0].0, "z");
        assert_eq!(
            doc.get("a").unwrap(),
            &Json::Array(vec![
                Json::Float(1.5),
                Json::Int(-2),
                Json::Str("é😀".into())
            ])
        );
        assert!(matches!(doc.get("f"), Some(Json::Float(v)) if v.is_nan()));
    }

    #[test]
    fn parse_rejects_malformed() {
        for text in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "01",
            "\"\u{1}\"",
            "[1] x",
            "{'a': 1}",
        ] {
            assert!(parse(text).is_err(), "{text:?} should be rejected");
        }
    }
}
