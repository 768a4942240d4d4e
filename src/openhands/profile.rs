//! Profile files as the SDK writes them (`json.dumps(llm, indent=2)` with `schema_version` last).
use serde_json::{Map, Number, Value};

use super::secrets::{read_secret, FernetKey};
use crate::domain::pyjson::{dumps_indent2, float_number};
use crate::domain::{LlmConfig, ProfileName, Secret, SecretField, SECRET_MASK, TYPED_KEYS};

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
    // A secret the source file had (redacted) but we hold no value for: keep its place, as the mask.
    for f in SecretField::ALL {
        if llm.secret(f).is_none() && llm.key_order.iter().any(|k| k == f.key()) {
            pending.insert(f.key().to_owned(), Value::String(SECRET_MASK.to_owned()));
        }
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

/// How secrets are written to a file.
pub enum SecretsOut<'a> {
    /// The mask (the SDK default).
    Redacted,
    /// The values.
    Plaintext,
    /// Fernet tokens with this key.
    Encrypted(&'a FernetKey),
}

impl<'a> SecretsOut<'a> {
    /// The form for `mode`; `None` when it is ENCRYPTED and there is no key.
    pub fn of(mode: crate::domain::SecretsMode, key: Option<&'a FernetKey>) -> Option<Self> {
        use crate::domain::SecretsMode;
        match (mode, key) {
            (SecretsMode::Redacted, _) => Some(Self::Redacted),
            (SecretsMode::Plaintext, _) => Some(Self::Plaintext),
            (SecretsMode::Encrypted, Some(k)) => Some(Self::Encrypted(k)),
            (SecretsMode::Encrypted, None) => None,
        }
    }

    /// Renders one secret value.
    pub fn render(&self, secret: &Secret) -> String {
        match self {
            Self::Redacted => SECRET_MASK.to_owned(),
            Self::Plaintext => secret.expose().to_owned(),
            Self::Encrypted(key) => key.encrypt(secret.expose()),
        }
    }
}

/// The LLM object as the SDK dumps it inside a conversation (no `schema_version`).
pub fn export_object(llm: &LlmConfig, secrets: &SecretsOut<'_>) -> Map<String, Value> {
    let mut map = to_object(llm, &|_, s| secrets.render(s));
    map.shift_remove("schema_version");
    map
}

/// The file text the SDK would write for `llm`, secrets per `secrets`.
pub fn export_file(llm: &LlmConfig, secrets: &SecretsOut<'_>) -> String {
    to_file_text(llm, &|_, s| secrets.render(s))
}

/// A profile name from a file name or document name: one trailing `.json` is stripped first.
pub fn name_from_file(raw: &str) -> Result<ProfileName, String> {
    let stem = raw.strip_suffix(".json").unwrap_or(raw);
    ProfileName::parse(stem, "name").map_err(|v| format!("name {stem:?} {}", v.description))
}

/// Reads a profile file as the SDK writes it. Reasons never contain a secret value.
/// The mask and blank secrets mean "no value" (on write, the mask keeps a stored value); Fernet
/// tokens need `key` and are never taken for the secret itself.
pub fn parse_file(text: &str, key: Option<&FernetKey>) -> Result<LlmConfig, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("invalid profile: the file is not a JSON object".into());
    };
    parse_object(map, key)
}

/// Reads an LLM object as the SDK dumps it (a profile file's content, or `agent.llm` in a
/// conversation's base_state.json), with the rules of [`parse_file`].
pub fn parse_object(map: Map<String, Value>, key: Option<&FernetKey>) -> Result<LlmConfig, String> {
    let mut llm = LlmConfig::default();
    let mut model = None;
    for (k, v) in map {
        llm.key_order.push(k.clone());
        let field = |what: &str| format!("invalid profile: {k} must be {what}");
        match k.as_str() {
            "schema_version" => {
                let version = v.as_i64().ok_or_else(|| field("an integer"))?;
                if version > SCHEMA_VERSION {
                    return Err(format!(
                        "schema_version {version} is newer than supported version {SCHEMA_VERSION}"
                    ));
                }
            }
            "model" => model = Some(v.as_str().ok_or_else(|| field("a string"))?.to_owned()),
            "base_url" | "api_version" | "aws_region_name" | "reasoning_effort" | "usage_id" => {
                let s = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s),
                    _ => return Err(field("a string")),
                };
                *string_slot(&mut llm, &k) = s;
            }
            "temperature" | "top_p" | "top_k" => {
                let x = match &v {
                    Value::Null => None,
                    Value::Number(n) => Some(n.as_f64().ok_or_else(|| field("a number"))?),
                    _ => return Err(field("a number")),
                };
                *float_slot(&mut llm, &k) = x;
            }
            "max_input_tokens" | "max_output_tokens" => {
                let x = match &v {
                    Value::Null => None,
                    Value::Number(n) => Some(n.as_i64().ok_or_else(|| field("an integer"))?),
                    _ => return Err(field("an integer")),
                };
                if k == "max_input_tokens" {
                    llm.max_input_tokens = x;
                } else {
                    llm.max_output_tokens = x;
                }
            }
            _ => match SecretField::ALL.iter().find(|f| f.key() == k) {
                Some(f) => {
                    let s = match v {
                        Value::Null => None,
                        Value::String(s) => Some(read_secret(&k, s, key)?),
                        _ => return Err(field("a string")),
                    };
                    *llm.secret_mut(*f) = s;
                }
                None => {
                    llm.extra.insert(k, v);
                }
            },
        }
    }
    match model {
        Some(m) if !m.trim().is_empty() => llm.model = m,
        Some(_) => return Err("invalid profile: model is empty".into()),
        None => return Err("invalid profile: model is missing".into()),
    }
    if let Some(v) = llm.violations("llm").first() {
        return Err(format!("invalid profile: {v}"));
    }
    Ok(llm)
}

fn string_slot<'a>(llm: &'a mut LlmConfig, key: &str) -> &'a mut Option<String> {
    match key {
        "base_url" => &mut llm.base_url,
        "api_version" => &mut llm.api_version,
        "aws_region_name" => &mut llm.aws_region_name,
        "reasoning_effort" => &mut llm.reasoning_effort,
        _ => &mut llm.usage_id,
    }
}

fn float_slot<'a>(llm: &'a mut LlmConfig, key: &str) -> &'a mut Option<f64> {
    match key {
        "temperature" => &mut llm.temperature,
        "top_p" => &mut llm.top_p,
        _ => &mut llm.top_k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile file as the SDK writes it (redacted): indented by two, non-ASCII escaped, no
    /// newline at the end.
    const FILE: &str = r#"{
  "model": "m",
  "api_key": "**********",
  "num_retries": 5,
  "retry_multiplier": 8.0,
  "temperature": 1e-05,
  "top_k": 40.0,
  "extra_headers": {
    "X": "Z\u00fcrich"
  },
  "is_subscription": false,
  "schema_version": 1
}"#;

    #[test]
    fn a_redacted_file_round_trips_byte_for_byte() {
        let llm = parse_file(FILE, None).unwrap();
        assert_eq!(llm.temperature, Some(1e-5));
        let stored = llm.merge_onto(None);
        assert_eq!(stored.api_key, None, "the mask is no value");
        assert_eq!(export_file(&stored, &SecretsOut::Redacted), FILE);
    }

    #[test]
    fn refuses_what_the_sdk_refuses_and_tokens_without_a_key() {
        let token = FernetKey::from_secret_key("k").encrypt("sk-secret");
        let cases = [
            ("{", "invalid JSON"),
            ("[1]", "not a JSON object"),
            (
                "{\"model\": \"m\", \"schema_version\": 2}",
                "newer than supported",
            ),
            ("{\"api_key\": \"x\"}", "model is missing"),
            ("{\"model\": \"\"}", "model is empty"),
        ];
        for (text, want) in cases {
            let err = parse_file(text, None).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
        let enc = format!("{{\"model\": \"m\", \"api_key\": \"{token}\"}}");
        let err = parse_file(&enc, None).unwrap_err();
        assert!(err.contains("encrypted") && !err.contains(&token), "{err}");
        let wrong = parse_file(&enc, Some(&FernetKey::from_secret_key("other"))).unwrap_err();
        assert!(wrong.contains("another key"));
        let ok = parse_file(&enc, Some(&FernetKey::from_secret_key("k"))).unwrap();
        assert_eq!(ok.api_key.unwrap().expose(), "sk-secret");
    }
}
