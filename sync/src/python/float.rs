//! Python's `float()` parsing and `repr(float)` formatting.
//!
//! Barman writes WAL times with `str(float)` and `json.dump` writes floats with `float.__repr__`:
//! the shortest string that round-trips, in fixed notation when the decimal exponent is in
//! `-4..16` and in scientific notation (`1e+16`, `1.5e-05`) otherwise.

/// Formats `value` exactly as Python 3's `repr(float)` does.
pub fn repr(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "1.7041107e9", "-5e-324", "0e0".
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("LowerExp output always has an exponent");
    let exponent: i32 = exponent.parse().expect("LowerExp exponent is an integer");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let shortest: String = mantissa.chars().filter(|c| *c != '.').collect();
    let digits = closest_digits(value.abs(), &shortest, exponent);
    if (-4..16).contains(&exponent) {
        fixed_notation(sign, &digits, exponent)
    } else {
        let mut out = String::from(sign);
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        out.push_str(&format!("e{exponent_sign}{:02}", exponent.abs()));
        out
    }
}

/// Among the shortest digit strings that round-trip, Python (David Gay's `dtoa`) takes the one
/// closest to the exact value, ties to even; Rust's shortest formatting may take the other one.
/// The correctly rounded string of the same length is the closest; keep it if it round-trips.
fn closest_digits(magnitude: f64, shortest: &str, exponent: i32) -> String {
    let precision = shortest.len() - 1;
    let rounded = format!("{magnitude:.precision$e}");
    let Some((mantissa, rounded_exponent)) = rounded.split_once('e') else {
        return shortest.to_owned();
    };
    if rounded_exponent.parse::<i32>() != Ok(exponent) || rounded.parse::<f64>() != Ok(magnitude) {
        return shortest.to_owned();
    }
    mantissa.chars().filter(|c| *c != '.').collect()
}

fn fixed_notation(sign: &str, digits: &str, exponent: i32) -> String {
    let mut out = String::from(sign);
    if exponent < 0 {
        out.push_str("0.");
        for _ in 0..(-exponent - 1) {
            out.push('0');
        }
        out.push_str(digits);
        return out;
    }
    let integer_len = exponent as usize + 1;
    if digits.len() <= integer_len {
        out.push_str(digits);
        for _ in digits.len()..integer_len {
            out.push('0');
        }
        out.push_str(".0");
    } else {
        out.push_str(&digits[..integer_len]);
        out.push('.');
        out.push_str(&digits[integer_len..]);
    }
    out
}

/// Parses a string as Python's `float()` does (surrounding whitespace, `_` between digits,
/// `inf`/`nan` spellings). Returns `None` where Python raises `ValueError`.
pub fn parse(text: &str) -> Option<f64> {
    let trimmed = text.trim();
    let lowered = trimmed.to_ascii_lowercase();
    let unsigned = lowered.trim_start_matches(['+', '-']);
    if lowered.len() - unsigned.len() > 1 {
        return None;
    }
    let negative = lowered.starts_with('-');
    match unsigned {
        "inf" | "infinity" => {
            return Some(if negative {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            })
        }
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    let cleaned = remove_digit_separators(&lowered)?;
    let valid_chars = cleaned
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '+' | '-'));
    if !valid_chars || !cleaned.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    cleaned.parse::<f64>().ok()
}

/// Removes `_` separators, which Python allows only between two digits.
pub(crate) fn remove_digit_separators(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    for (index, &byte) in bytes.iter().enumerate() {
        if byte == b'_' {
            let digit_before = index > 0 && bytes[index - 1].is_ascii_digit();
            let digit_after = bytes.get(index + 1).is_some_and(|b| b.is_ascii_digit());
            if !digit_before || !digit_after {
                return None;
            }
        } else {
            out.push(byte as char);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_matches_python() {
        let cases = [
            (1704110700.0, "1704110700.0"),
            (1406019329.93, "1406019329.93"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.25, "1.25"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456789.123, "123456789.123"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (f64::INFINITY, "inf"),
            (100.0, "100.0"),
            (f64::from_bits(0x4317_9085_685d_83c9), "1658206780088562.2"),
        ];
        for (value, expected) in cases {
            assert_eq!(repr(value), expected, "repr of {value:?}");
        }
    }

    #[test]
    fn parse_follows_python_float() {
        assert_eq!(parse(" 1704110700.0\n"), Some(1704110700.0));
        assert_eq!(parse("1_000.5"), Some(1000.5));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("-inf"), Some(f64::NEG_INFINITY));
        assert!(parse("nan").unwrap().is_nan());
        assert_eq!(parse("1__0"), None);
        assert_eq!(parse("abc"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("--1"), None);
    }
}
