//! barsync's reimplementations of Python behaviours against the Python that runs Barman:
//! `repr(str)` over the whole Unicode range, `repr(float)` and `float()` over many doubles,
//! `json.dumps` string escaping.

mod common;

use barsync_sync::python::{float, json, literal};
use common::barman_python;

fn python_lines(script: &str, input: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("input");
    std::fs::write(&input_path, input).unwrap();
    let output = std::process::Command::new(barman_python())
        .arg("-c")
        .arg(script)
        .arg(&input_path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn string_repr_and_json_escaping_over_all_of_unicode() {
    // Each line of Python's output is repr() then json.dumps() of 256 consecutive code points.
    let script = r#"
import json, sys
for block in range(0, 0x110000, 256):
    text = "".join(chr(c) for c in range(block, block + 256) if not 0xD800 <= c < 0xE000)
    print(ascii(repr(text)), json.dumps(text), sep="\t")
"#;
    let lines = python_lines(script, "");
    assert_eq!(lines.len(), 0x110000 / 256);
    for (index, line) in lines.iter().enumerate() {
        let block = (index * 256) as u32;
        let text: String = (block..block + 256).filter_map(char::from_u32).collect();
        let (python_repr_ascii, python_json) = line.split_once('\t').unwrap();
        // ascii(repr(x)) keeps the comparison in ASCII: decode it back first.
        let python_repr = match literal::parse(python_repr_ascii).unwrap() {
            literal::PyValue::Str(repr) => repr,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            literal::repr_str(&text),
            python_repr,
            "repr of block U+{block:04X}"
        );
        let mut ours = String::new();
        json::write_string(&text, &mut ours);
        assert_eq!(ours, python_json, "json of block U+{block:04X}");
        assert_eq!(
            literal::parse(&python_repr).unwrap(),
            literal::PyValue::Str(text),
            "parse back U+{block:04X}"
        );
    }
}

#[test]
fn float_repr_and_parse_over_many_doubles() {
    // A deterministic spread of bit patterns: every exponent, varied mantissas.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut values = Vec::new();
    for _ in 0..20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let value = f64::from_bits(state);
        if value.is_finite() {
            values.push(value);
        }
    }
    values.extend([
        0.1 + 0.2,
        1e16,
        1e-5,
        123_456_789.123_456_79,
        1704110700.0,
        1406019329.93,
        5e-324,
        -0.0,
    ]);
    let input: String = values
        .iter()
        .map(|v| format!("{}\n", v.to_bits()))
        .collect();
    let script = r#"
import struct, sys
for line in open(sys.argv[1]):
    value = struct.unpack("<d", struct.pack("<Q", int(line)))[0]
    print(repr(value))
"#;
    let lines = python_lines(script, &input);
    assert_eq!(lines.len(), values.len());
    for (value, python) in values.iter().zip(&lines) {
        assert_eq!(
            &float::repr(*value),
            python,
            "repr of bits {:#x}",
            value.to_bits()
        );
        assert_eq!(
            float::parse(python).map(f64::to_bits),
            Some(value.to_bits()),
            "parse {python}"
        );
    }
}
