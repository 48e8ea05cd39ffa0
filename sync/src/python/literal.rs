//! Python literals as Barman writes them in backup.info (`repr()`) and reads them back
//! (`ast.literal_eval`): strings, ints, floats, `None`/`True`/`False`, lists, tuples and dicts.

use super::float;
use super::printable::is_printable;
use std::fmt::Write as _;

/// A value that `ast.literal_eval` can produce and `repr()` can print.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    List(Vec<PyValue>),
    Tuple(Vec<PyValue>),
    Dict(Vec<(PyValue, PyValue)>),
}

/// Why a text is not a Python literal, with the character offset where parsing stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Python literal at offset {offset}: {reason}")]
pub struct LiteralError {
    pub offset: usize,
    pub reason: String,
}

impl PyValue {
    /// Python's `repr()` of the value.
    pub fn repr(&self) -> String {
        let mut out = String::new();
        self.write_repr(&mut out);
        out
    }

    fn write_repr(&self, out: &mut String) {
        match self {
            PyValue::None => out.push_str("None"),
            PyValue::Bool(true) => out.push_str("True"),
            PyValue::Bool(false) => out.push_str("False"),
            PyValue::Int(value) => {
                let _ = write!(out, "{value}");
            }
            PyValue::Float(value) => out.push_str(&float::repr(*value)),
            PyValue::Str(text) => out.push_str(&repr_str(text)),
            PyValue::List(items) => {
                out.push('[');
                write_items(items, out);
                out.push(']');
            }
            PyValue::Tuple(items) => {
                out.push('(');
                write_items(items, out);
                if items.len() == 1 {
                    out.push(',');
                }
                out.push(')');
            }
            PyValue::Dict(entries) => {
                out.push('{');
                for (index, (key, value)) in entries.iter().enumerate() {
                    if index > 0 {
                        out.push_str(", ");
                    }
                    key.write_repr(out);
                    out.push_str(": ");
                    value.write_repr(out);
                }
                out.push('}');
            }
        }
    }

    /// Python truthiness (`if obj:`), used by Barman's `null_repr`.
    pub fn is_truthy(&self) -> bool {
        match self {
            PyValue::None => false,
            PyValue::Bool(value) => *value,
            PyValue::Int(value) => *value != 0,
            PyValue::Float(value) => *value != 0.0,
            PyValue::Str(text) => !text.is_empty(),
            PyValue::List(items) | PyValue::Tuple(items) => !items.is_empty(),
            PyValue::Dict(entries) => !entries.is_empty(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(text) => Some(text),
            _ => None,
        }
    }
}

fn write_items(items: &[PyValue], out: &mut String) {
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        item.write_repr(out);
    }
}

/// Python's `repr(str)`: single quotes unless the text holds `'` and no `"`, escapes for
/// backslash, the quote, `\t \n \r`, other control characters and non-printable characters.
pub fn repr_str(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for ch in text.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x7f || is_printable(c) => out.push(c),
            c if (c as u32) <= 0xff => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push(quote);
    out
}

/// Parses `text` as `ast.literal_eval` would (the subset Barman writes).
pub fn parse(text: &str) -> Result<PyValue, LiteralError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
    };
    parser.skip_space();
    let value = parser.value()?;
    parser.skip_space();
    if parser.pos != parser.chars.len() {
        return Err(parser.error("unexpected text after the value"));
    }
    Ok(value)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn error(&self, reason: &str) -> LiteralError {
        LiteralError {
            offset: self.pos,
            reason: reason.to_owned(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while let Some(ch) = self.peek() {
            if ch.is_whitespace() {
                self.pos += 1;
            } else if ch == '\\' && self.chars.get(self.pos + 1) == Some(&'\n') {
                self.pos += 2;
            } else {
                break;
            }
        }
    }

    fn eat(&mut self, expected: char) -> bool {
        if self.peek() == Some(expected) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<PyValue, LiteralError> {
        match self.peek() {
            None => Err(self.error("unexpected end of text")),
            Some('[') => {
                self.pos += 1;
                Ok(PyValue::List(self.sequence(']')?.0))
            }
            Some('(') => {
                self.pos += 1;
                let (items, trailing_comma) = self.sequence(')')?;
                if items.len() == 1 && !trailing_comma {
                    Ok(items.into_iter().next().expect("one item"))
                } else {
                    Ok(PyValue::Tuple(items))
                }
            }
            Some('{') => {
                self.pos += 1;
                self.dict()
            }
            Some('+') | Some('-') => {
                let negative = self.peek() == Some('-');
                self.pos += 1;
                self.skip_space();
                match self.value()? {
                    PyValue::Int(value) => Ok(PyValue::Int(if negative { -value } else { value })),
                    PyValue::Float(value) => {
                        Ok(PyValue::Float(if negative { -value } else { value }))
                    }
                    _ => Err(self.error("a sign must precede a number")),
                }
            }
            Some(ch) if ch.is_ascii_digit() || ch == '.' => self.number(),
            Some(ch) if ch == '\'' || ch == '"' => self.strings(),
            Some(ch) if ch.is_alphabetic() || ch == '_' => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    self.pos += 1;
                }
                let word: String = self.chars[start..self.pos].iter().collect();
                if matches!(self.peek(), Some('\'') | Some('"')) {
                    let prefix = word.to_ascii_lowercase();
                    if matches!(prefix.as_str(), "u" | "r") {
                        return self.strings_with_prefix(prefix == "r");
                    }
                    return Err(self.error("unsupported string prefix"));
                }
                match word.as_str() {
                    "None" => Ok(PyValue::None),
                    "True" => Ok(PyValue::Bool(true)),
                    "False" => Ok(PyValue::Bool(false)),
                    _ => {
                        self.pos = start;
                        Err(self.error("names other than None, True and False are not literals"))
                    }
                }
            }
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    /// Items up to `close`; also says whether a comma followed the last item.
    fn sequence(&mut self, close: char) -> Result<(Vec<PyValue>, bool), LiteralError> {
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            self.skip_space();
            if self.eat(close) {
                return Ok((items, trailing_comma));
            }
            items.push(self.value()?);
            self.skip_space();
            trailing_comma = self.eat(',');
            if !trailing_comma {
                self.skip_space();
                if self.eat(close) {
                    return Ok((items, false));
                }
                return Err(self.error("expected ',' or a closing bracket"));
            }
        }
    }

    fn dict(&mut self) -> Result<PyValue, LiteralError> {
        let mut entries = Vec::new();
        loop {
            self.skip_space();
            if self.eat('}') {
                return Ok(PyValue::Dict(entries));
            }
            let key = self.value()?;
            self.skip_space();
            if !self.eat(':') {
                return Err(self.error("expected ':' in a dict"));
            }
            self.skip_space();
            let value = self.value()?;
            match entries.iter_mut().find(|(existing, _)| *existing == key) {
                Some(entry) => entry.1 = value,
                None => entries.push((key, value)),
            }
            self.skip_space();
            if !self.eat(',') {
                self.skip_space();
                if self.eat('}') {
                    return Ok(PyValue::Dict(entries));
                }
                return Err(self.error("expected ',' or '}' in a dict"));
            }
        }
    }

    fn number(&mut self) -> Result<PyValue, LiteralError> {
        let start = self.pos;
        while let Some(ch) = self.peek() {
            let exponent_sign = matches!(ch, '+' | '-')
                && matches!(
                    self.chars.get(self.pos.wrapping_sub(1)),
                    Some('e') | Some('E')
                );
            if ch.is_ascii_alphanumeric() || ch == '_' || ch == '.' || exponent_sign {
                self.pos += 1;
            } else {
                break;
            }
        }
        let token: String = self.chars[start..self.pos].iter().collect();
        let lowered = token.to_ascii_lowercase();
        let radix = match lowered.get(..2) {
            Some("0x") => Some(16),
            Some("0o") => Some(8),
            Some("0b") => Some(2),
            _ => None,
        };
        if let Some(radix) = radix {
            let digits: String = lowered[2..].chars().filter(|c| *c != '_').collect();
            return i128::from_str_radix(&digits, radix)
                .map(PyValue::Int)
                .map_err(|_| self.error("invalid integer"));
        }
        let is_float = lowered.contains(['.', 'e']);
        let cleaned = float::remove_digit_separators(&lowered)
            .ok_or_else(|| self.error("misplaced '_' in a number"))?;
        if is_float {
            cleaned
                .parse::<f64>()
                .map(PyValue::Float)
                .map_err(|_| self.error("invalid float"))
        } else {
            if cleaned.len() > 1 && cleaned.starts_with('0') && cleaned.bytes().any(|b| b != b'0') {
                return Err(self.error("leading zeros in a decimal integer"));
            }
            cleaned
                .parse::<i128>()
                .map(PyValue::Int)
                .map_err(|_| self.error("invalid integer"))
        }
    }

    fn strings(&mut self) -> Result<PyValue, LiteralError> {
        self.strings_with_prefix(false)
    }

    /// One string, then any adjacent strings (Python concatenates `'a' 'b'`).
    fn strings_with_prefix(&mut self, raw: bool) -> Result<PyValue, LiteralError> {
        let mut text = self.string_body(raw)?;
        loop {
            let save = self.pos;
            self.skip_space();
            let mut next_raw = false;
            if matches!(self.peek(), Some('r') | Some('R') | Some('u') | Some('U'))
                && matches!(self.chars.get(self.pos + 1), Some('\'') | Some('"'))
            {
                next_raw = matches!(self.peek(), Some('r') | Some('R'));
                self.pos += 1;
            }
            if matches!(self.peek(), Some('\'') | Some('"')) {
                text.push_str(&self.string_body(next_raw)?);
            } else {
                self.pos = save;
                return Ok(PyValue::Str(text));
            }
        }
    }

    fn string_body(&mut self, raw: bool) -> Result<String, LiteralError> {
        let quote = self.peek().ok_or_else(|| self.error("expected a quote"))?;
        let triple = self.chars.get(self.pos + 1) == Some(&quote)
            && self.chars.get(self.pos + 2) == Some(&quote);
        self.pos += if triple { 3 } else { 1 };
        let mut out = String::new();
        loop {
            let ch = self
                .peek()
                .ok_or_else(|| self.error("unterminated string"))?;
            if ch == quote {
                if !triple {
                    self.pos += 1;
                    return Ok(out);
                }
                if self.chars.get(self.pos + 1) == Some(&quote)
                    && self.chars.get(self.pos + 2) == Some(&quote)
                {
                    self.pos += 3;
                    return Ok(out);
                }
            }
            if ch == '\n' && !triple {
                return Err(self.error("newline in a single-quoted string"));
            }
            self.pos += 1;
            if ch != '\\' {
                out.push(ch);
                continue;
            }
            let escaped = self
                .peek()
                .ok_or_else(|| self.error("unterminated string"))?;
            self.pos += 1;
            if raw {
                out.push('\\');
                out.push(escaped);
                continue;
            }
            match escaped {
                '\n' => {}
                '\\' | '\'' | '"' => out.push(escaped),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'a' => out.push('\x07'),
                'b' => out.push('\x08'),
                'f' => out.push('\x0c'),
                'v' => out.push('\x0b'),
                '0'..='7' => {
                    let mut code = escaped.to_digit(8).expect("octal digit");
                    for _ in 0..2 {
                        match self.peek().and_then(|c| c.to_digit(8)) {
                            Some(digit) => {
                                code = code * 8 + digit;
                                self.pos += 1;
                            }
                            None => break,
                        }
                    }
                    out.push(char::from_u32(code).ok_or_else(|| self.error("bad octal escape"))?);
                }
                'x' => out.push(self.hex_escape(2)?),
                'u' => out.push(self.hex_escape(4)?),
                'U' => out.push(self.hex_escape(8)?),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }

    fn hex_escape(&mut self, width: usize) -> Result<char, LiteralError> {
        let end = self.pos + width;
        if end > self.chars.len() {
            return Err(self.error("truncated escape"));
        }
        let digits: String = self.chars[self.pos..end].iter().collect();
        let code = u32::from_str_radix(&digits, 16).map_err(|_| self.error("bad hex escape"))?;
        self.pos = end;
        char::from_u32(code).ok_or_else(|| self.error("escape is not a character"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) {
        let value = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(value.repr(), text);
    }

    #[test]
    fn barman_values_round_trip() {
        round_trip("[('tbs1', 16387, '/srv/pg/tbs1')]");
        round_trip(
            "{'copy_time': 1.25, 'analysis_time': 0.5, 'number_of_workers': 1, 'total_time': 2.0}",
        );
        round_trip(
            "'START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\\nCHECKPOINT: x\\n'",
        );
        round_trip("['/etc/a.conf', '/etc/b.conf']");
        round_trip("(1,)");
        round_trip("()");
        round_trip("{}");
        round_trip("None");
        round_trip("\"it's\"");
        round_trip("'both \\' and \"'");
        round_trip("'tab\\there\\x00\\x7f é \\xa0'");
        round_trip("-5");
        round_trip("[True, False, None, 1e+16, -0.5]");
    }

    #[test]
    fn accepts_python_spellings() {
        assert_eq!(parse("\"a\" 'b'").unwrap(), PyValue::Str("ab".into()));
        assert_eq!(parse("u'x'").unwrap(), PyValue::Str("x".into()));
        assert_eq!(parse("r'\\n'").unwrap(), PyValue::Str("\\n".into()));
        assert_eq!(parse("'\\u00e9\\101'").unwrap(), PyValue::Str("éA".into()));
        assert_eq!(parse("(1)").unwrap(), PyValue::Int(1));
        assert_eq!(
            parse("[1, 2, ]").unwrap(),
            PyValue::List(vec![PyValue::Int(1), PyValue::Int(2)])
        );
        assert_eq!(parse("1_000").unwrap(), PyValue::Int(1000));
        assert_eq!(parse("0x1F").unwrap(), PyValue::Int(31));
        assert_eq!(parse("'''a\nb'''").unwrap(), PyValue::Str("a\nb".into()));
    }

    #[test]
    fn rejects_non_literals() {
        for text in [
            "os.system('x')",
            "[1, 2",
            "'abc",
            "1 2",
            "{1 2}",
            "007",
            "-'a'",
            "",
        ] {
            assert!(parse(text).is_err(), "{text} should be rejected");
        }
    }
}
