//! JSON text exactly as Python's `json.dumps(obj, indent=2)` writes it, and Python's float `repr`.
use serde_json::{Number, Value};

/// Python's `repr(float)`: the shortest digits that round-trip, positional for exponents in
/// [-4, 16), scientific (`1e-05`, `1.5e+16`) otherwise; `None` for NaN and infinities.
pub fn float_repr(x: f64) -> Option<String> {
    if !x.is_finite() {
        return None;
    }
    if x == 0.0 {
        return Some(if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned());
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-5".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e')?;
    let exp: i32 = exp.parse().ok()?;
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let n = i32::try_from(digits.len()).ok()?;
    let text = if (-4..16).contains(&exp) {
        if exp < 0 {
            format!("0.{}{digits}", "0".repeat(usize::try_from(-exp - 1).ok()?))
        } else if exp + 1 >= n {
            format!(
                "{digits}{}.0",
                "0".repeat(usize::try_from(exp + 1 - n).ok()?)
            )
        } else {
            let split = usize::try_from(exp + 1).ok()?;
            format!("{}.{}", &digits[..split], &digits[split..])
        }
    } else {
        let mantissa = if digits.len() == 1 {
            digits
        } else {
            format!("{}.{}", &digits[..1], &digits[1..])
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{esign}{:02}", exp.abs())
    };
    Some(format!("{sign}{text}"))
}

/// A JSON number for a double that came over the wire: integral values in the exactly
/// representable range become integers (`5`), the rest Python float text (`0.2`, `1e-05`).
pub fn number_from_f64(x: f64) -> Option<Number> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if x.is_finite() && x.fract() == 0.0 && x.abs() < EXACT {
        #[allow(clippy::cast_possible_truncation)]
        return Some(Number::from(x as i64));
    }
    float_number(x)
}

/// A JSON number that keeps a double's float form (`8.0`, not `8`).
pub fn float_number(x: f64) -> Option<Number> {
    float_repr(x).and_then(|t| serde_json::from_str(&t).ok())
}

/// Writes `value` as `json.dumps(value, indent=2)` does: two-space indent, `": "` after keys,
/// non-ASCII escaped as `\uXXXX`, no trailing newline. Numbers keep their stored text.
pub fn dumps_indent2(value: &Value) -> String {
    let mut out = String::with_capacity(1024);
    write_value(&mut out, value, 0);
    out
}

fn write_value(out: &mut String, value: &Value, depth: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_str(out, s),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                indent(out, depth + 1);
                write_value(out, item, depth + 1);
            }
            out.push('\n');
            indent(out, depth);
            out.push(']');
        }
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                indent(out, depth + 1);
                write_str(out, key);
                out.push_str(": ");
                write_value(out, item, depth + 1);
            }
            out.push('\n');
            indent(out, depth);
            out.push('}');
        }
    }
}

/// At least the length of the text [`write_value`] writes for `value` at `depth`, found without
/// writing it: exact but for strings, which count at their longest (six bytes a byte, `\u00XX`)
/// and for the separators, which count as two bytes (`,\n`).
pub fn dumps_len_bound(value: &Value, depth: usize) -> usize {
    // The opening bracket, the closing newline, indent and bracket, and each item's separator and
    // indent.
    let around = |items: usize| 3 + 2 * depth + items * (2 + 2 * (depth + 1));
    match value {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Number(n) => n.to_string().len(),
        Value::String(s) => str_len_bound(s),
        Value::Array(items) if items.is_empty() => 2,
        Value::Object(map) if map.is_empty() => 2,
        Value::Array(items) => {
            let inner: usize = items.iter().map(|v| dumps_len_bound(v, depth + 1)).sum();
            around(items.len()) + inner
        }
        Value::Object(map) => {
            let inner: usize = map
                .iter()
                .map(|(k, v)| str_len_bound(k) + 2 + dumps_len_bound(v, depth + 1))
                .sum();
            around(map.len()) + inner
        }
    }
}

/// At least the length of [`write_str`]'s text of `s`.
pub fn str_len_bound(s: &str) -> usize {
    6 * s.len() + 2
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// Python's `ensure_ascii` string encoding.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (0.2, "0.2"),
            (8.0, "8.0"),
            (40.0, "40.0"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (123456.789, "123456.789"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (-2.5, "-2.5"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ];
        for (x, want) in cases {
            assert_eq!(float_repr(x).as_deref(), Some(want), "{x}");
        }
        assert_eq!(float_repr(f64::NAN), None);
    }

    #[test]
    fn dumps_matches_python_indent2() {
        let v: Value = serde_json::from_str(
            r#"{"model":"m","h":{"X":"Zürich 日本 😀"},"n":300,"f":8.0,"e":[],"o":{},"l":[1,"a\"\n"]}"#,
        )
        .unwrap();
        let want = "{\n  \"model\": \"m\",\n  \"h\": {\n    \"X\": \"Z\\u00fcrich \\u65e5\\u672c \\ud83d\\ude00\"\n  },\n  \"n\": 300,\n  \"f\": 8.0,\n  \"e\": [],\n  \"o\": {},\n  \"l\": [\n    1,\n    \"a\\\"\\n\"\n  ]\n}";
        assert_eq!(dumps_indent2(&v), want);
    }
}
