//! One definition of an acceptable value, shared by every write path (each rpc, the CLI and gRPC
//! imports, import-on-start), so that whatever is accepted can be given back to every reader:
//! the server's own decoder, the protobuf runtimes (Python's reads a `Struct` only about 32 JSON
//! objects deep, each JSON level costing up to three protobuf levels of its recursion limit of
//! 100), grpcurl, and the SDK.
use serde_json::{Map, Value};

use super::{Timestamp, Violation};

/// How deep free-form JSON (`extra`, a conversation's `state`, an event body) may nest, counting
/// the object itself as 1. At 24, the deepest reply (an event body in a ListEventsResponse) needs
/// 2 + 3 x 24 = 74 protobuf levels, well inside the limit of 100 of Python's and Java's runtimes.
pub const MAX_JSON_DEPTH: usize = 24;

/// The rule of the ids that become part of file names (event ids: `event-NNNNN-<id>.json`).
pub const FILE_ID_RULE: &str =
    "must be 1 to 128 of A-Z a-z 0-9 '.' '_' '-', not starting with '.' (it becomes part of a file name)";

/// Whether `id` may become part of a file name: no separator, no control character, no leading
/// dot (hidden files, `..`), a length every file system takes.
pub fn is_file_safe_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The first way `object`, at `field`, breaks the JSON rules: too deep, or a number that is not a
/// finite double (every reader decodes numbers as doubles).
pub fn object_violation(object: &Map<String, Value>, field: &str) -> Option<Violation> {
    let mut stack: Vec<(&Value, usize)> = object.values().map(|v| (v, 2)).collect();
    while let Some((value, depth)) = stack.pop() {
        match value {
            Value::Number(n) if !n.as_f64().is_some_and(f64::is_finite) => {
                // Cut: a number's text can be as long as the request, and a message that long
                // would not fit a client's trailer limit.
                let mut text = n.to_string();
                if text.len() > 24 {
                    text.truncate(24);
                    text.push_str("...");
                }
                return Some(Violation::new(
                    field,
                    format!("holds the number {text}, which is not a finite double (every protobuf runtime reads numbers as doubles)"),
                ));
            }
            Value::Object(_) | Value::Array(_) if depth > MAX_JSON_DEPTH => {
                return Some(Violation::new(
                    field,
                    format!("nests deeper than {MAX_JSON_DEPTH} levels of objects and arrays (protobuf runtimes refuse deeper messages)"),
                ));
            }
            Value::Object(o) => stack.extend(o.values().map(|v| (v, depth + 1))),
            Value::Array(a) => stack.extend(a.iter().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    None
}

/// The earliest and latest instants a `google.protobuf.Timestamp` may hold
/// (0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z).
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

/// Whether `t` is a valid `google.protobuf.Timestamp` (grpcurl and the runtimes refuse others).
pub fn timestamp_in_range(t: &Timestamp) -> bool {
    TIMESTAMP_SECONDS.contains(&t.seconds) && (0..1_000_000_000).contains(&t.nanos)
}

/// The violations of one event: its id (a file name part), its timestamp and its body.
pub fn event_violations(
    id: &str,
    timestamp: &Timestamp,
    body: &Map<String, Value>,
    field: &str,
) -> Vec<Violation> {
    let mut out = Vec::new();
    if !is_file_safe_id(id) {
        out.push(Violation::new(format!("{field}.id"), FILE_ID_RULE));
    }
    if !timestamp_in_range(timestamp) {
        out.push(Violation::new(
            format!("{field}.timestamp"),
            "must lie between 0001-01-01 and 9999-12-31 (the range of google.protobuf.Timestamp)",
        ));
    }
    out.extend(object_violation(body, &format!("{field}.body")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Map<String, Value> {
        let mut v = Value::from(1);
        for _ in 0..depth {
            v = Value::Object([("a".to_owned(), v)].into_iter().collect());
        }
        match v {
            Value::Object(m) => m,
            _ => unreachable!("depth >= 1"),
        }
    }

    #[test]
    fn depth_is_counted_from_the_object_itself() {
        assert!(object_violation(&nested(MAX_JSON_DEPTH), "x").is_none());
        let v = object_violation(&nested(MAX_JSON_DEPTH + 1), "x").unwrap();
        assert!(v.description.contains("nests deeper"), "{v}");
        let arrays: Value = serde_json::from_str(&format!(
            "{{\"a\": {}1{}}}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        ))
        .unwrap();
        assert!(object_violation(arrays.as_object().unwrap(), "x").is_some());
    }

    #[test]
    fn numbers_must_be_finite_doubles() {
        let m: Map<String, Value> =
            serde_json::from_str(r#"{"a": [1, 2.5, -0.0, 1e308]}"#).unwrap();
        assert!(object_violation(&m, "x").is_none());
        for text in [r#"{"a": 1e400}"#, r#"{"a": {"b": [-1e999]}}"#] {
            let m: Map<String, Value> = serde_json::from_str(text).unwrap();
            assert!(object_violation(&m, "x").is_some(), "{text}");
        }
    }

    #[test]
    fn file_ids_have_no_separator() {
        for good in ["e0", "0b5c6f5e-1c2d-4e8f", "a.b_c-d", &"x".repeat(128)] {
            assert!(is_file_safe_id(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "a b",
            "é",
            "a\0",
            &"x".repeat(129),
        ] {
            assert!(!is_file_safe_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_stay_in_protobuf_range() {
        let t = |seconds, nanos| Timestamp { seconds, nanos };
        assert!(timestamp_in_range(&t(0, 0)));
        assert!(timestamp_in_range(&t(253_402_300_799, 999_999_999)));
        assert!(!timestamp_in_range(&t(253_402_300_800, 0)));
        assert!(!timestamp_in_range(&t(-62_135_596_801, 0)));
        assert!(!timestamp_in_range(&t(0, -1)));
    }
}
