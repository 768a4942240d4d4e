//! Conversions between the wire (pb) and the domain. Messages are destructured, so a new proto field
//! is a compile error here until it is handled.
use prost_types::value::Kind;
use serde_json::{Map, Value};

use crate::domain::pyjson::number_from_f64;
use crate::domain::{LlmConfig, Profile, ProfileName, Secret, Timestamp, Violation};
use crate::openhands::profile::to_file_text;
use crate::pb;
use crate::service::Limits;

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
    } = p;
    pb::Profile {
        name: name.into(),
        llm: Some(llm_to_pb(llm)),
        revision,
        create_time: Some(timestamp_to_pb(create_time)),
        update_time: Some(timestamp_to_pb(update_time)),
    }
}

/// An LLM configuration for a response.
pub fn llm_to_pb(llm: LlmConfig) -> pb::LlmConfig {
    let LlmConfig {
        model,
        base_url,
        api_version,
        api_key,
        aws_access_key_id,
        aws_secret_access_key,
        aws_session_token,
        aws_region_name,
        temperature,
        top_p,
        top_k,
        max_input_tokens,
        max_output_tokens,
        reasoning_effort,
        usage_id,
        extra,
        key_order: _,
    } = llm;
    let secret = |s: Option<Secret>| s.map(|s| s.expose().to_owned());
    pb::LlmConfig {
        model,
        base_url,
        api_version,
        api_key: secret(api_key),
        aws_access_key_id: secret(aws_access_key_id),
        aws_secret_access_key: secret(aws_secret_access_key),
        aws_session_token: secret(aws_session_token),
        aws_region_name,
        temperature,
        top_p,
        top_k,
        max_input_tokens,
        max_output_tokens,
        reasoning_effort,
        usage_id,
        extra: (!extra.is_empty()).then(|| map_to_struct(&extra)),
    }
}

/// An LLM configuration from a request, unvalidated; conversion problems land in `violations`.
pub fn llm_from_pb(pb: pb::LlmConfig, field: &str, violations: &mut Vec<Violation>) -> LlmConfig {
    let pb::LlmConfig {
        model,
        base_url,
        api_version,
        api_key,
        aws_access_key_id,
        aws_secret_access_key,
        aws_session_token,
        aws_region_name,
        temperature,
        top_p,
        top_k,
        max_input_tokens,
        max_output_tokens,
        reasoning_effort,
        usage_id,
        extra,
    } = pb;
    let extra = extra
        .map(|s| struct_to_map(s, &format!("{field}.extra"), violations))
        .unwrap_or_default();
    LlmConfig {
        model,
        base_url,
        api_version,
        api_key: api_key.map(Secret::new),
        aws_access_key_id: aws_access_key_id.map(Secret::new),
        aws_secret_access_key: aws_secret_access_key.map(Secret::new),
        aws_session_token: aws_session_token.map(Secret::new),
        aws_region_name,
        temperature,
        top_p,
        top_k,
        max_input_tokens,
        max_output_tokens,
        reasoning_effort,
        usage_id,
        extra,
        key_order: Vec::new(),
    }
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
    if let Some(llm) = &llm {
        let size = to_file_text(llm, &|_, s| s.expose().to_owned()).len();
        if size > limits.max_profile_bytes {
            violations.push(Violation::new(
                "profile",
                format!(
                    "is {size} bytes as SDK JSON, over the limit of {} bytes",
                    limits.max_profile_bytes
                ),
            ));
        }
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
