//! Conversation folders as the SDK writes them: `<id hex>/base_state.json` (one line of compact
//! JSON, the agent's LLM inline at `agent.llm`) and `events/event-NNNNN-<event id>.json`.
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::profile::{export_object, parse_object, SecretsOut};
use super::secrets::FernetKey;
use crate::domain::{
    Conversation, ConversationId, Event, ExecutionStatus, LlmConfig, LlmSource, NewEvent,
    ProfileName, Timestamp,
};

/// Where the SDK keeps each bound LLM inside base_state.json: usage id -> path of objects.
const LLM_PLACES: [(&str, &[&str]); 2] = [
    ("agent", &["agent"]),
    ("condenser", &["agent", "condenser"]),
];

/// The event file name pattern's parts: the index and the event id.
pub fn parse_event_file_name(name: &str) -> Option<(u64, &str)> {
    let rest = name.strip_prefix("event-")?.strip_suffix(".json")?;
    let (index, id) = rest.split_once('-')?;
    // The SDK's own ids are UUIDs; any id the registry accepts (a file-safe id) is read back.
    let ok = index.len() >= 5
        && index.bytes().all(|b| b.is_ascii_digit())
        && crate::domain::values::is_file_safe_id(id);
    ok.then(|| Some((index.parse().ok()?, id)))?
}

/// The SDK's file name of an event.
pub fn event_file_name(e: &Event) -> String {
    format!("event-{:05}-{}.json", e.seq, e.id)
}

fn object_at<'a>(
    root: &'a mut Map<String, Value>,
    path: &[&str],
) -> Option<&'a mut Map<String, Value>> {
    let mut at = root;
    for key in path {
        at = at.get_mut(*key)?.as_object_mut()?;
    }
    Some(at)
}

/// A conversation and its events from the SDK's files. `events` are (file name, text) in any order;
/// they must be contiguous from index 0 (the SDK stops reading at a gap). With `bind_profile`, the
/// agent's LLM is bound to that profile instead of being kept inline. Reasons never hold a secret.
pub fn parse_conversation(
    base_state: &str,
    events: &[(String, String)],
    key: Option<&FernetKey>,
    bind_profile: Option<&ProfileName>,
) -> Result<(Conversation, Vec<NewEvent>), String> {
    let mut state: Map<String, Value> = match serde_json::from_str(base_state) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err("base_state.json is not a JSON object".into()),
        Err(e) => return Err(format!("base_state.json is invalid JSON: {e}")),
    };
    let id = match state.shift_remove("id") {
        Some(Value::String(s)) => {
            ConversationId::parse(&s, "id").map_err(|v| format!("base_state.json: {v}"))?
        }
        _ => return Err("base_state.json has no id".into()),
    };
    let execution_status = match state.shift_remove("execution_status") {
        None => ExecutionStatus::Idle,
        Some(Value::String(s)) => ExecutionStatus::from_sdk_name(&s).ok_or_else(|| {
            format!("base_state.json: execution_status {s:?} is not a known status")
        })?,
        Some(_) => return Err("base_state.json: execution_status must be a string".into()),
    };
    let tags = match state.shift_remove("tags") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => m
            .into_iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k, s.to_owned()))
                    .ok_or("base_state.json: tag values must be strings")
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("base_state.json: tags must be an object".into()),
    };
    let mut llms = BTreeMap::new();
    for (usage, path) in LLM_PLACES {
        let Some(holder) = object_at(&mut state, path) else {
            continue;
        };
        let Some(llm) = holder.shift_remove("llm") else {
            continue;
        };
        let Value::Object(llm) = llm else {
            return Err(format!(
                "base_state.json: {}.llm is not an object",
                path.join(".")
            ));
        };
        let source = match (usage, bind_profile) {
            ("agent", Some(name)) => LlmSource::Profile(name.clone()),
            _ if llm.get("kind").and_then(Value::as_str) == Some("profile_ref") => {
                let name = llm
                    .get("profile_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                LlmSource::Profile(
                    ProfileName::parse(name, "profile_id")
                        .map_err(|v| format!("base_state.json: {v}"))?,
                )
            }
            _ => {
                let llm = parse_object(llm, key)
                    .map_err(|e| format!("base_state.json {}.llm: {e}", path.join(".")))?;
                LlmSource::Inline(Box::new(llm.merge_onto(None)))
            }
        };
        llms.insert(usage.to_owned(), source);
    }
    let conversation = Conversation {
        id,
        llms,
        execution_status,
        title: String::new(),
        tags,
        state,
        revision: 0,
        create_time: Timestamp::default(),
        update_time: Timestamp::default(),
        event_count: 0,
    };

    let mut indexed: Vec<(u64, &str, &str, &str)> = Vec::with_capacity(events.len());
    for (file, text) in events {
        let (index, id) = parse_event_file_name(file)
            .ok_or_else(|| format!("events/{file}: not an event file name"))?;
        indexed.push((index, file, id, text));
    }
    indexed.sort_by_key(|(i, _, _, _)| *i);
    let mut out = Vec::with_capacity(indexed.len());
    for (expected, (index, file, file_id, text)) in indexed.into_iter().enumerate() {
        if index != expected as u64 {
            return Err(format!("events: index {expected} is missing (found events/{file}); the SDK would stop reading there"));
        }
        let body: Map<String, Value> = match serde_json::from_str(text) {
            Ok(Value::Object(m)) => m,
            _ => return Err(format!("events/{file}: not a JSON object")),
        };
        // The file's id: the one the event was stored (and exported) under; the body's own "id"
        // is kept verbatim in the body.
        let id = file_id.to_owned();
        let event = NewEvent::from_body(
            &body,
            (*text).to_owned(),
            id,
            String::new(),
            String::new(),
            None,
        );
        let field = format!("events/{file}");
        if let Some(v) =
            crate::domain::values::event_violations(&event.id, &event.timestamp, &body, &field)
                .first()
        {
            return Err(v.to_string());
        }
        out.push(event);
    }
    Ok((conversation, out))
}

/// How to write the bound LLMs.
pub enum LlmForm<'a> {
    /// Inline, resolved from the profile, with secrets per the given form (what the SDK reads).
    Inline(SecretsOut<'a>),
    /// `{"kind": "profile_ref", "profile_id": NAME}` for profile bindings; inline ones as above.
    ProfileRefs(SecretsOut<'a>),
}

/// The SDK's files for a conversation: base_state.json's text and the event files (name, text).
/// `resolved` holds the configuration of each bound usage (profiles resolved by the caller).
pub fn export_conversation(
    c: &Conversation,
    resolved: &BTreeMap<String, LlmConfig>,
    events: &[Event],
    form: &LlmForm<'_>,
) -> (String, Vec<(String, String)>) {
    let mut state = Map::with_capacity(c.state.len() + 3);
    state.insert("id".into(), Value::String(c.id.to_string()));
    let status = Value::String(c.execution_status.sdk_name().to_owned());
    let tags = Value::Object(
        c.tags
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    );
    for (k, v) in &c.state {
        if k == "agent_state" {
            state.insert("tags".into(), tags.clone());
        }
        state.insert(k.clone(), v.clone());
        if k == "stuck_detection" {
            state.insert("execution_status".into(), status.clone());
        }
    }
    state.entry("execution_status").or_insert(status);
    state.entry("tags").or_insert(tags);
    let secrets = match form {
        LlmForm::Inline(s) | LlmForm::ProfileRefs(s) => s,
    };
    for (usage, path) in LLM_PLACES {
        let Some(source) = c.llms.get(usage) else {
            continue;
        };
        let value = match (source, form) {
            (LlmSource::Profile(name), LlmForm::ProfileRefs(_)) => {
                let mut m = Map::new();
                m.insert("kind".into(), Value::String("profile_ref".into()));
                m.insert("profile_id".into(), Value::String(name.to_string()));
                Value::Object(m)
            }
            _ => match resolved.get(usage) {
                Some(llm) => Value::Object(export_object(llm, secrets)),
                None => continue,
            },
        };
        if let Some(holder) = object_at(&mut state, path) {
            holder.shift_insert(0, "llm".into(), value);
        } else if usage == "agent" {
            let mut agent = Map::new();
            agent.insert("llm".into(), value);
            agent.insert("kind".into(), Value::String("Agent".into()));
            state.shift_insert(1, "agent".into(), Value::Object(agent));
        }
    }
    let base = serde_json::to_string(&Value::Object(state)).unwrap_or_default();
    let files = events
        .iter()
        .map(|e| (event_file_name(e), e.body.clone()))
        .collect();
    (base, files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_file_names_follow_the_sdk_pattern() {
        assert_eq!(
            parse_event_file_name("event-00012-4a838633-a60b-428d-b4a7-288ef4dae0f0.json"),
            Some((12, "4a838633-a60b-428d-b4a7-288ef4dae0f0"))
        );
        // Any id the registry accepts reads back, e.g. the README's e0.
        assert_eq!(
            parse_event_file_name("event-00000-e0.json"),
            Some((0, "e0"))
        );
        for bad in [
            "event-12-abcdef01.json",
            "event-00001-a b.json",
            "event-00001-.hidden.json",
            ".eventlog.lock",
            "event-00001-abcdef01.txt",
        ] {
            assert_eq!(parse_event_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_gap_in_the_events_is_refused() {
        let base = r#"{"id":"c0a7e001-0000-4000-8000-000000000001","agent":{"llm":{"model":"m","api_key":"**********"},"kind":"Agent"},"execution_status":"paused","tags":{"a":"b"}}"#;
        let e = |i: u32| {
            (
                format!("event-{i:05}-abcdef01-0000.json"),
                format!(r#"{{"id":"e{i}","kind":"MessageEvent","source":"user"}}"#),
            )
        };
        let (c, events) = parse_conversation(base, &[e(1), e(0)], None, None).unwrap();
        assert_eq!(c.execution_status, ExecutionStatus::Paused);
        assert!(
            matches!(c.llms.get("agent"), Some(LlmSource::Inline(l)) if l.model == "m" && l.api_key.is_none())
        );
        // The id is the file's (what the event was stored and exported under), in index order.
        assert_eq!(
            events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["abcdef01-0000", "abcdef01-0000"]
        );
        assert!(events[0].body.contains("\"e0\"") && events[1].body.contains("\"e1\""));
        let err = parse_conversation(base, &[e(0), e(2)], None, None).unwrap_err();
        assert!(err.contains("index 1 is missing"), "{err}");
    }
}
