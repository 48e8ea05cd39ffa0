//! Python behaviours that Barman's files and output depend on: literals and `repr()`,
//! `float()`/`repr(float)`, `int()`, the `json` module's layout and datetime formatting.

pub mod datetime;
pub mod float;
pub mod json;
pub mod literal;
mod printable;

/// Parses a string as Python's `int()` does (surrounding whitespace, a sign, `_` between
/// digits). Returns `None` where Python raises `ValueError`.
pub fn parse_int(text: &str) -> Option<i128> {
    let trimmed = text.trim();
    let (negative, digits) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return None;
    }
    let cleaned = float::remove_digit_separators(digits)?;
    let value: i128 = cleaned.parse().ok()?;
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_int_follows_python() {
        assert_eq!(super::parse_int(" 42\n"), Some(42));
        assert_eq!(super::parse_int("-1_000"), Some(-1000));
        assert_eq!(super::parse_int("007"), Some(7));
        assert_eq!(super::parse_int("1.0"), None);
        assert_eq!(super::parse_int("_1"), None);
        assert_eq!(super::parse_int(""), None);
    }
}
