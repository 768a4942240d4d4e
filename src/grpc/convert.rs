//! Conversions between the wire (pb) and the domain. Messages are destructured, so a new proto field
//! is a compile error here until it is handled.
use prost_types::value::Kind;
use serde_json::{Map, Value};

use crate::domain::pyjson::number_from_f64;
use std::collections::BTreeMap;

use crate::app::Limits;
use crate::domain::{
    conversation_violations, Conversation, ConversationId, Event, ExecutionStatus, LlmConfig,
    LlmSource, NewEvent, Profile, ProfileName, Secret, Timestamp, Violation, SECRET_MASK,
};
use crate::openhands::profile::file_text_len_over;
use crate::pb;

/// Domain timestamp to wire.
pub fn timestamp_to_pb(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.seconds,
        nanos: t.nanos,
    }
}

/// A profile for a response (mask it first unless secrets are to be revealed).
pub fn profile_to_pb(p: Profile) -> pb::Profile {
    let Profile {
        name,
        llm,
        revision,
        create_time,
        update_time,
        update_principal,
    } = p;
    pb::Profile {
        name: name.into(),
        llm: Some(llm_to_pb(llm)),
        revision,
        create_time: Some(timestamp_to_pb(create_time)),
        update_time: Some(timestamp_to_pb(update_time)),
        update_principal,
    }
}

/// `value.moved()` is `value`: the macro below takes each field with a method, `clone` from a
/// reference or this one from an owned struct, and neither converts between types.
trait Moved: Sized {
    fn moved(self) -> Self {
        self
    }
}

impl<T> Moved for T {}

/// Builds `$Dst { .. }` from `$src` with the LLM fields the domain and the pb form share as they
/// are (moved, or with `$src.clone` copied from a reference), plus `$rest` (the secrets, `extra`,
/// and what only one side has). Both structs are built this way, one in each direction, and a
/// struct literal must name every field: a field added to either side does not compile until it is
/// converted.
macro_rules! llm_with_plain_fields {
    ($src:ident => $($Dst:ident)::+ { $($rest:tt)* }) => {
        llm_with_plain_fields!($src.moved => $($Dst)::+ { $($rest)* })
    };
    ($src:ident . $take:ident => $($Dst:ident)::+ { $($rest:tt)* }) => {
        $($Dst)::+ {
            model: $src.model.$take(), base_url: $src.base_url.$take(),
            api_version: $src.api_version.$take(), aws_region_name: $src.aws_region_name.$take(),
            temperature: $src.temperature.$take(), top_p: $src.top_p.$take(),
            top_k: $src.top_k.$take(), max_input_tokens: $src.max_input_tokens.$take(),
            max_output_tokens: $src.max_output_tokens.$take(),
            reasoning_effort: $src.reasoning_effort.$take(), usage_id: $src.usage_id.$take(),
            $($rest)*
        }
    };
}

/// An LLM configuration for a response.
pub fn llm_to_pb(llm: LlmConfig) -> pb::LlmConfig {
    let secret = |s: Option<Secret>| s.map(|s| s.expose().to_owned());
    llm_with_plain_fields!(llm => pb::LlmConfig {
        api_key: secret(llm.api_key),
        aws_access_key_id: secret(llm.aws_access_key_id),
        aws_secret_access_key: secret(llm.aws_secret_access_key),
        aws_session_token: secret(llm.aws_session_token),
        extra: (!llm.extra.is_empty()).then(|| map_to_struct(&llm.extra)),
    })
}

/// A profile for a masked response, built from a shared one without copying its secrets: every
/// set secret reads as the mask.
pub fn masked_profile_to_pb(p: &Profile) -> pb::Profile {
    let llm = &p.llm;
    let mask = |s: &Option<Secret>| s.as_ref().map(|_| SECRET_MASK.to_owned());
    let llm = llm_with_plain_fields!(llm.clone => pb::LlmConfig {
        api_key: mask(&llm.api_key),
        aws_access_key_id: mask(&llm.aws_access_key_id),
        aws_secret_access_key: mask(&llm.aws_secret_access_key),
        aws_session_token: mask(&llm.aws_session_token),
        extra: (!llm.extra.is_empty()).then(|| map_to_struct(&llm.extra)),
    });
    pb::Profile {
        llm: Some(llm),
        ..profile_to_pb(Profile {
            name: p.name.clone(),
            llm: LlmConfig::default(),
            revision: p.revision,
            create_time: p.create_time,
            update_time: p.update_time,
            update_principal: p.update_principal.clone(),
        })
    }
}

/// An LLM configuration from a request, unvalidated; conversion problems land in `violations`.
pub fn llm_from_pb(pb: pb::LlmConfig, field: &str, violations: &mut Vec<Violation>) -> LlmConfig {
    let extra = pb
        .extra
        .map(|s| struct_to_map(s, &format!("{field}.extra"), violations))
        .unwrap_or_default();
    llm_with_plain_fields!(pb => LlmConfig {
        api_key: pb.api_key.map(Secret::new),
        aws_access_key_id: pb.aws_access_key_id.map(Secret::new),
        aws_secret_access_key: pb.aws_secret_access_key.map(Secret::new),
        aws_session_token: pb.aws_session_token.map(Secret::new),
        extra,
        key_order: Vec::new(),
        blind_write: false,
    })
}

/// A profile from a write request, with every rule checked: its name, its LLM configuration and the
/// size of its SDK JSON. All violations are reported together.
pub fn profile_from_pb(
    profile: Option<pb::Profile>,
    limits: &Limits,
) -> Result<(ProfileName, LlmConfig), Vec<Violation>> {
    let Some(pb::Profile {
        name,
        llm,
        revision: _,
        create_time: _,
        update_time: _,
        update_principal: _,
    }) = profile
    else {
        return Err(vec![Violation::new("profile", "is required")]);
    };
    let mut violations = Vec::new();
    let name = ProfileName::parse(&name, "profile.name")
        .map_err(|v| violations.push(v))
        .ok();
    let llm = match llm {
        Some(llm) => {
            let llm = llm_from_pb(llm, "profile.llm", &mut violations);
            violations.extend(llm.violations("profile.llm"));
            Some(llm)
        }
        None => {
            violations.push(Violation::new(
                "profile.llm",
                "is required (with at least llm.model)",
            ));
            None
        }
    };
    let plain = |_, s: &Secret| s.expose().to_owned();
    let max = limits.max_profile_bytes;
    if let Some(size) = llm
        .as_ref()
        .and_then(|l| file_text_len_over(l, &plain, max))
    {
        violations.push(Violation::new(
            "profile",
            format!("is {size} bytes as SDK JSON, over the limit of {max} bytes"),
        ));
    }
    match (name, llm) {
        (Some(name), Some(llm)) if violations.is_empty() => Ok((name, llm)),
        _ => Err(violations),
    }
}

/// A protobuf Struct as a JSON object; numbers become Python-style text (`5`, `0.2`, `1e-05`).
pub fn struct_to_map(
    s: prost_types::Struct,
    field: &str,
    violations: &mut Vec<Violation>,
) -> Map<String, Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| {
            let path = format!("{field}.{k}");
            let v = value_to_json(v, &path, violations);
            (k, v)
        })
        .collect()
}

fn value_to_json(v: prost_types::Value, field: &str, violations: &mut Vec<Violation>) -> Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => match number_from_f64(n) {
            Some(n) => Value::Number(n),
            None => {
                violations.push(Violation::new(
                    field,
                    "must be a finite number (JSON has no NaN or Infinity)",
                ));
                Value::Null
            }
        },
        Some(Kind::StructValue(s)) => Value::Object(struct_to_map(s, field, violations)),
        Some(Kind::ListValue(l)) => Value::Array(
            l.values
                .into_iter()
                .enumerate()
                .map(|(i, v)| value_to_json(v, &format!("{field}[{i}]"), violations))
                .collect(),
        ),
    }
}

/// A JSON object as a protobuf Struct.
pub fn map_to_struct(m: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(map_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Wire timestamp to domain.
pub fn timestamp_from_pb(t: prost_types::Timestamp) -> Timestamp {
    Timestamp {
        seconds: t.seconds,
        nanos: t.nanos,
    }
}

/// Domain status to wire.
pub fn status_to_pb(s: ExecutionStatus) -> pb::ExecutionStatus {
    match s {
        ExecutionStatus::Idle => pb::ExecutionStatus::Idle,
        ExecutionStatus::Running => pb::ExecutionStatus::Running,
        ExecutionStatus::Paused => pb::ExecutionStatus::Paused,
        ExecutionStatus::WaitingForConfirmation => pb::ExecutionStatus::WaitingForConfirmation,
        ExecutionStatus::Finished => pb::ExecutionStatus::Finished,
        ExecutionStatus::Error => pb::ExecutionStatus::Error,
        ExecutionStatus::Stuck => pb::ExecutionStatus::Stuck,
    }
}

/// Wire status to domain: `None` for UNSPECIFIED, a violation of `field` for an unknown number.
pub fn status_from_pb(raw: i32, field: &str) -> Result<Option<ExecutionStatus>, Violation> {
    let unknown = || Violation::new(field, "is not a known execution status");
    Ok(Some(
        match pb::ExecutionStatus::try_from(raw).map_err(|_| unknown())? {
            pb::ExecutionStatus::Unspecified => return Ok(None),
            pb::ExecutionStatus::Idle => ExecutionStatus::Idle,
            pb::ExecutionStatus::Running => ExecutionStatus::Running,
            pb::ExecutionStatus::Paused => ExecutionStatus::Paused,
            pb::ExecutionStatus::WaitingForConfirmation => ExecutionStatus::WaitingForConfirmation,
            pb::ExecutionStatus::Finished => ExecutionStatus::Finished,
            pb::ExecutionStatus::Error => ExecutionStatus::Error,
            pb::ExecutionStatus::Stuck => ExecutionStatus::Stuck,
        },
    ))
}

/// An LLM binding from a request; `field` is its path.
pub fn binding_from_pb(
    b: pb::LlmBinding,
    field: &str,
    violations: &mut Vec<Violation>,
) -> Option<LlmSource> {
    let pb::LlmBinding {
        source,
        resolved: _,
    } = b;
    match source {
        Some(pb::llm_binding::Source::Profile(name)) => {
            ProfileName::parse(&name, &format!("{field}.profile"))
                .map(LlmSource::Profile)
                .map_err(|v| violations.push(v))
                .ok()
        }
        Some(pb::llm_binding::Source::Inline(llm)) => {
            let path = format!("{field}.inline");
            let llm = llm_from_pb(llm, &path, violations);
            violations.extend(llm.violations(&path));
            Some(LlmSource::Inline(Box::new(llm)))
        }
        None => {
            violations.push(Violation::new(field, "needs a profile or an inline LLM"));
            None
        }
    }
}

/// The fields of a conversation in a request (unvalidated beyond their own conversion).
pub struct ConversationInput {
    /// The id, when given.
    pub id: Option<ConversationId>,
    /// The conversation with the request's values (revision, times and counts zero).
    pub conversation: Conversation,
    /// Whether execution_status was UNSPECIFIED.
    pub status_unset: bool,
}

/// A conversation from a request; all violations are collected, with `prefix` as the path.
pub fn conversation_from_pb(
    c: Option<pb::Conversation>,
    prefix: &str,
    limits: &Limits,
) -> Result<ConversationInput, Vec<Violation>> {
    // The record fields (revision, times, event count) are the store's: a request's are ignored.
    let Some(c) = c else {
        return Err(vec![Violation::new(prefix, "is required")]);
    };
    let (id, llms, execution_status) = (c.id, c.llms, c.execution_status);
    let (title, tags, state) = (c.title, c.tags, c.state);
    let mut violations = Vec::new();
    let id = if id.is_empty() {
        None
    } else {
        ConversationId::parse(&id, &format!("{prefix}.id"))
            .map_err(|v| violations.push(v))
            .ok()
    };
    let llms = llms
        .into_iter()
        .filter_map(|(usage, b)| {
            let source = binding_from_pb(b, &format!("{prefix}.llms[{usage}]"), &mut violations)?;
            Some((usage, source))
        })
        .collect();
    let status = status_from_pb(execution_status, &format!("{prefix}.execution_status"))
        .unwrap_or_else(|v| {
            violations.push(v);
            None
        });
    let state = state
        .map(|s| struct_to_map(s, &format!("{prefix}.state"), &mut violations))
        .unwrap_or_default();
    let conversation = Conversation {
        id: id.unwrap_or_else(ConversationId::generate),
        llms,
        execution_status: status.unwrap_or_default(),
        title,
        tags: tags.into_iter().collect(),
        state,
        revision: 0,
        create_time: Timestamp::default(),
        update_time: Timestamp::default(),
        event_count: 0,
    };
    violations.extend(conversation_violations(
        &conversation,
        prefix,
        limits.max_tags,
    ));
    if violations.is_empty() {
        Ok(ConversationInput {
            id,
            conversation,
            status_unset: status.is_none(),
        })
    } else {
        Err(violations)
    }
}

/// A conversation for a response; `resolved` holds the configuration per usage id when asked.
pub fn conversation_to_pb(
    c: Conversation,
    mut resolved: BTreeMap<String, LlmConfig>,
) -> pb::Conversation {
    let Conversation {
        id,
        llms,
        execution_status,
        title,
        tags,
        state,
        revision,
        create_time,
        update_time,
        event_count,
    } = c;
    pb::Conversation {
        id: id.to_string(),
        llms: llms
            .into_iter()
            .map(|(usage, source)| {
                let source = match source {
                    LlmSource::Profile(p) => pb::llm_binding::Source::Profile(p.into()),
                    LlmSource::Inline(l) => pb::llm_binding::Source::Inline(llm_to_pb(*l)),
                };
                let resolved = resolved.remove(&usage).map(llm_to_pb);
                (
                    usage,
                    pb::LlmBinding {
                        source: Some(source),
                        resolved,
                    },
                )
            })
            .collect(),
        execution_status: status_to_pb(execution_status) as i32,
        title,
        tags: tags.into_iter().collect(),
        state: (!state.is_empty()).then(|| map_to_struct(&state)),
        revision,
        create_time: Some(timestamp_to_pb(create_time)),
        update_time: Some(timestamp_to_pb(update_time)),
        event_count,
    }
}

/// An event for a response.
pub fn event_to_pb(e: Event) -> pb::Event {
    let body = serde_json::from_str::<Map<String, Value>>(&e.body)
        .ok()
        .map(|m| map_to_struct(&m));
    pb::Event {
        seq: e.seq,
        id: e.id,
        kind: e.kind,
        source: e.source,
        timestamp: Some(timestamp_to_pb(e.timestamp)),
        body,
    }
}

/// Events from an append request; `field` prefixes each path.
pub fn events_from_pb(
    events: Vec<pb::Event>,
    limits: &Limits,
) -> Result<Vec<NewEvent>, Vec<Violation>> {
    let mut violations = Vec::new();
    let mut out = Vec::with_capacity(events.len());
    for (i, e) in events.into_iter().enumerate() {
        let pb::Event {
            seq: _,
            id,
            kind,
            source,
            timestamp,
            body,
        } = e;
        let field = format!("events[{i}]");
        let body = body
            .map(|b| struct_to_map(b, &format!("{field}.body"), &mut violations))
            .unwrap_or_default();
        let text = serde_json::to_string(&Value::Object(body.clone())).unwrap_or_default();
        if text.len() > limits.max_event_bytes {
            violations.push(Violation::new(
                format!("{field}.body"),
                format!(
                    "is {} bytes as JSON, over the limit of {} bytes",
                    text.len(),
                    limits.max_event_bytes
                ),
            ));
            continue;
        }
        let event = NewEvent::from_body(
            &body,
            text,
            id,
            kind,
            source,
            timestamp.map(timestamp_from_pb),
        );
        if event.kind.is_empty() {
            violations.push(Violation::new(
                format!("{field}.kind"),
                "is required (or a body with \"kind\")",
            ));
        }
        violations.extend(crate::domain::values::event_violations(
            &event.id,
            &event.timestamp,
            &body,
            &field,
        ));
        out.push(event);
    }
    if violations.is_empty() {
        Ok(out)
    } else {
        Err(violations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(llm: LlmConfig) -> Profile {
        Profile {
            name: ProfileName::parse("p", "name").expect("a valid name"),
            llm,
            revision: 3,
            create_time: Timestamp::now(),
            update_time: Timestamp::now(),
            update_principal: "alice".to_owned(),
        }
    }

    #[test]
    fn a_masked_response_from_a_shared_profile_equals_the_masked_copy() {
        let secret = |s: &str| Some(Secret::new(s));
        let full = LlmConfig {
            model: "m".to_owned(),
            base_url: Some("https://x".to_owned()),
            api_version: Some("v".to_owned()),
            api_key: secret("sk-1"),
            aws_access_key_id: secret("AKIA"),
            aws_secret_access_key: secret("aws-secret"),
            aws_session_token: secret("token"),
            aws_region_name: Some("eu".to_owned()),
            temperature: Some(0.5),
            top_p: Some(0.9),
            top_k: Some(40.0),
            max_input_tokens: Some(1000),
            max_output_tokens: Some(200),
            reasoning_effort: Some("high".to_owned()),
            usage_id: Some("agent".to_owned()),
            extra: serde_json::json!({"a": [1, {"b": null}], "c": "d"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            ..LlmConfig::default()
        };
        for llm in [full, LlmConfig::default()] {
            let p = profile(llm);
            let shared = masked_profile_to_pb(&p);
            assert_eq!(shared, profile_to_pb(p.clone().masked()));
            let keys = shared.llm.as_ref().and_then(|l| l.api_key.as_deref());
            assert!(keys.is_none() || keys == Some(SECRET_MASK));
        }
    }
}
