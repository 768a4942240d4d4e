//! The SDK's agent profile files, `agent-profiles/<name>.json`: `json.dumps(model_dump, indent=2)`
//! of an OpenHands or ACP agent spec (schema_version 4 today; files of versions 1 to 3 are read by
//! the SDK, which migrates them as it loads). The registry keeps a file's object as it is (so an
//! export is the file the SDK wrote, whatever its version) and checks what every version shares:
//! an object, a known `agent_kind`, a supported `schema_version`, and for an OpenHands agent of
//! version 4 an `llm_profile_ref`. It holds no secret: every field is a reference or a value.
use serde_json::{Map, Value};

use crate::domain::pyjson::dumps_indent2;
use crate::domain::Violation;

/// The folder's name in the SDK's persistence folder.
pub const DIR_NAME: &str = "agent-profiles";
/// The schema version the SDK writes and the newest it reads.
pub const SCHEMA_VERSION: i64 = 4;
/// The keys every agent profile starts with, in the SDK's model order.
const BASE_KEYS: [&str; 7] = [
    "schema_version",
    "agent_kind",
    "id",
    "name",
    "revision",
    "mcp_server_refs",
    "secret_refs",
];

/// Reads an agent profile file's text.
pub fn parse_file(text: &str) -> Result<Map<String, Value>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("the file is not a JSON object".into());
    };
    match violations(&map, "").first() {
        Some(v) => Err(v.to_string().trim_start_matches('.').to_owned()),
        None => Ok(map),
    }
}

/// The file text the SDK would write for `body`.
pub fn to_file_text(body: &Map<String, Value>) -> String {
    dumps_indent2(&Value::Object(body.clone()))
}

/// The agent kind of `body` ("openhands" when absent, as the SDK's discriminator).
pub fn agent_kind(body: &Map<String, Value>) -> &str {
    body.get("agent_kind")
        .and_then(Value::as_str)
        .unwrap_or("openhands")
}

/// Every rule a stored agent profile keeps; `prefix` is its field path (e.g. `agent_profile.spec`).
pub fn violations(body: &Map<String, Value>, prefix: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    let at = |k: &str| format!("{prefix}.{k}");
    let version = match body.get("schema_version") {
        None => SCHEMA_VERSION,
        Some(v) => {
            match v.as_i64() {
                Some(n) if (1..=SCHEMA_VERSION).contains(&n) => n,
                _ => {
                    out.push(Violation::new(
                    at("schema_version"),
                    format!("must be an integer from 1 to {SCHEMA_VERSION} (the newest the SDK reads)"),
                ));
                    SCHEMA_VERSION
                }
            }
        }
    };
    match body.get("agent_kind") {
        None => {}
        Some(Value::String(k)) if k == "openhands" || k == "acp" => {}
        Some(_) => out.push(Violation::new(
            at("agent_kind"),
            "must be \"openhands\" or \"acp\"",
        )),
    }
    if let Some(name) = body.get("name") {
        if name.as_str().is_none_or(str::is_empty) {
            out.push(Violation::new(at("name"), "must be a non-empty string"));
        }
    }
    if let Some(r) = body.get("revision") {
        if r.as_i64().is_none_or(|n| n < 0) {
            out.push(Violation::new(
                at("revision"),
                "must be an integer of at least 0",
            ));
        }
    }
    let openhands = agent_kind(body) == "openhands";
    for key in ["llm_profile_ref", "meta_profile_ref"] {
        match body.get(key) {
            None | Some(Value::Null) if key == "llm_profile_ref" && openhands && version >= 4 => {
                out.push(Violation::new(
                    at(key),
                    "is required for an OpenHands agent",
                ));
            }
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if !s.is_empty() && openhands => {}
            Some(Value::String(_)) if openhands => {
                out.push(Violation::new(at(key), "must not be empty"));
            }
            Some(Value::String(_)) if version >= 4 => {
                out.push(Violation::new(at(key), "is not a field of an ACP agent"));
            }
            Some(Value::String(_)) => {}
            Some(_) => out.push(Violation::new(at(key), "must be a string")),
        }
    }
    out
}

/// The keys an agent profile of schema version 4 may hold besides [`BASE_KEYS`], by kind (the
/// SDK's models forbid others).
fn kind_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "acp" => &[
            "acp_server",
            "acp_model",
            "acp_session_mode",
            "acp_prompt_timeout",
            "acp_startup_timeout",
            "acp_command",
            "acp_args",
        ],
        _ => &[
            "llm_profile_ref",
            "agent",
            "tools",
            "persona",
            "system_message_suffix",
            "disabled_skills",
            "public_skills",
            "condenser",
            "verification",
            "enable_classify_and_switch_llm_tool",
            "meta_profile_ref",
            "tool_concurrency_limit",
        ],
    }
}

/// The keys of a schema version 4 `body` that the SDK's model of its kind does not have (its
/// models forbid unknown keys, so such a file would not load); `prefix` is the field path.
pub fn unknown_keys(body: &Map<String, Value>, prefix: &str) -> Vec<Violation> {
    let version = body.get("schema_version").and_then(Value::as_i64);
    if version.is_some_and(|v| v != SCHEMA_VERSION) {
        return Vec::new();
    }
    let kind = agent_kind(body);
    body.keys()
        .filter(|k| !BASE_KEYS.contains(&k.as_str()) && !kind_keys(kind).contains(&k.as_str()))
        .map(|k| {
            Violation::new(
                format!("{prefix}.{k}"),
                format!("is not a field of an agent profile of kind {kind:?} (the SDK refuses unknown keys)"),
            )
        })
        .collect()
}

/// `body` with the SDK's leading keys first, in its model's order, the rest as given.
pub fn ordered(mut body: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::with_capacity(body.len());
    for key in BASE_KEYS {
        if let Some(v) = body.shift_remove(key) {
            out.insert(key.to_owned(), v);
        }
    }
    out.extend(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_version_the_sdk_reads_is_kept_as_it_is() {
        let v1 = "{\n  \"schema_version\": 1,\n  \"name\": \"old\",\n  \"skills\": [],\n  \"llm_profile_ref\": \"a\",\n  \"acp_prompt_timeout\": 1800.0\n}";
        assert_eq!(to_file_text(&parse_file(v1).unwrap()), v1);
        let acp = "{\"agent_kind\": \"acp\", \"name\": \"c\"}";
        assert!(parse_file(acp).is_ok());
        for (text, want) in [
            ("[]", "not a JSON object"),
            (
                "{\"schema_version\": 5, \"llm_profile_ref\": \"a\"}",
                "schema_version",
            ),
            (
                "{\"agent_kind\": \"other\", \"llm_profile_ref\": \"a\"}",
                "agent_kind",
            ),
            ("{\"name\": \"x\"}", "llm_profile_ref: is required"),
            (
                "{\"agent_kind\": \"acp\", \"llm_profile_ref\": \"a\"}",
                "not a field of an ACP agent",
            ),
        ] {
            let err = parse_file(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
