//! Profile files as the SDK writes them (`json.dumps(llm, indent=2)` with `schema_version` last).
use serde_json::{Map, Number, Value};

use crate::domain::pyjson::{dumps_indent2, float_number};
use crate::domain::{LlmConfig, Secret, SecretField, TYPED_KEYS};

/// The schema version the SDK writes and the newest it reads.
pub const SCHEMA_VERSION: i64 = 1;

/// The typed fields of `llm` that are set, as SDK JSON values; secrets through `secret`.
fn typed_entries(
    llm: &LlmConfig,
    secret: &dyn Fn(SecretField, &Secret) -> String,
) -> Vec<(&'static str, Value)> {
    let string = |v: &Option<String>| v.clone().map(Value::String);
    let float = |v: Option<f64>| v.and_then(float_number).map(Value::Number);
    let int = |v: Option<i64>| v.map(|v| Value::Number(Number::from(v)));
    let sec = |f: SecretField| llm.secret(f).map(|s| Value::String(secret(f, s)));
    let values = [
        Some(Value::String(llm.model.clone())),
        sec(SecretField::ApiKey),
        string(&llm.base_url),
        string(&llm.api_version),
        sec(SecretField::AwsAccessKeyId),
        sec(SecretField::AwsSecretAccessKey),
        sec(SecretField::AwsSessionToken),
        string(&llm.aws_region_name),
        float(llm.temperature),
        float(llm.top_p),
        float(llm.top_k),
        int(llm.max_input_tokens),
        int(llm.max_output_tokens),
        string(&llm.reasoning_effort),
        string(&llm.usage_id),
    ];
    TYPED_KEYS
        .iter()
        .zip(values)
        .filter_map(|(k, v)| v.map(|v| (*k, v)))
        .collect()
}

/// The JSON object the SDK would write for `llm`: keys in the imported order where known (typed
/// fields first, then extra, otherwise), `schema_version` last; secrets rendered by `secret`.
pub fn to_object(
    llm: &LlmConfig,
    secret: &dyn Fn(SecretField, &Secret) -> String,
) -> Map<String, Value> {
    let mut pending: Map<String, Value> = typed_entries(llm, secret)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    for (k, v) in &llm.extra {
        pending.insert(k.clone(), v.clone());
    }
    let mut out = Map::with_capacity(pending.len() + 1);
    for key in &llm.key_order {
        if let Some(v) = pending.shift_remove(key) {
            out.insert(key.clone(), v);
        }
    }
    out.extend(pending);
    out.insert(
        "schema_version".into(),
        Value::Number(SCHEMA_VERSION.into()),
    );
    out
}

/// The file text the SDK would write for `llm`.
pub fn to_file_text(llm: &LlmConfig, secret: &dyn Fn(SecretField, &Secret) -> String) -> String {
    dumps_indent2(&Value::Object(to_object(llm, secret)))
}

/// The SDK's default rendering of a secret: the mask.
pub fn redacted(_: SecretField, _: &Secret) -> String {
    crate::domain::SECRET_MASK.to_owned()
}
