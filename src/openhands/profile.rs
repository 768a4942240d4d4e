//! Profile files as the SDK writes them (`json.dumps(llm, indent=2)` with `schema_version` last).
use serde_json::{Map, Number, Value};

use super::secrets::{read_secret, FernetKey};
use crate::domain::pyjson::{dumps_indent2, dumps_len_bound, float_number, str_len_bound};
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

/// The length of `to_file_text(llm, secret)` when it is over `limit`, else `None`. The text is
/// built only when [`file_text_len_bound`] says it could be over: building it for every request
/// took about 5% of an UpdateProfile's CPU.
pub fn file_text_len_over(
    llm: &LlmConfig,
    secret: &dyn Fn(SecretField, &Secret) -> String,
    limit: usize,
) -> Option<usize> {
    if file_text_len_bound(llm, secret) <= limit {
        return None;
    }
    Some(to_file_text(llm, secret).len()).filter(|len| *len > limit)
}

/// At least `to_file_text(llm, secret).len()`, found without building the text: every entry that
/// could be written is counted (a key both typed and in `extra` twice), each value at its longest
/// (see [`dumps_len_bound`]).
fn file_text_len_bound(llm: &LlmConfig, secret: &dyn Fn(SecretField, &Secret) -> String) -> usize {
    let entry = |key: &str, value: &Value| 4 + str_len_bound(key) + 2 + dumps_len_bound(value, 1);
    let typed: usize = typed_entries(llm, secret)
        .iter()
        .map(|(k, v)| entry(k, v))
        .sum();
    let extra: usize = llm.extra.iter().map(|(k, v)| entry(k, v)).sum();
    let mask = Value::String(SECRET_MASK.to_owned());
    let masks = SecretField::ALL.len() * entry("aws_secret_access_key", &mask);
    let version = entry("schema_version", &Value::Number(SCHEMA_VERSION.into()));
    3 + typed + extra + masks + version
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
    use proptest::prelude::*;

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            any::<f64>()
                .prop_filter_map("finite", float_number)
                .prop_map(Value::Number),
            // Any text: control characters, quotes, non-ASCII and astral characters.
            ".{0,12}".prop_map(Value::String),
            "[\\x00-\\x1f\"\\\\]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec((".{0,6}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn any_llm() -> impl Strategy<Value = LlmConfig> {
        let text = || proptest::option::of(".{0,10}");
        let keys: Vec<String> = TYPED_KEYS.iter().map(|k| (*k).to_owned()).collect();
        (
            (".{0,16}", text(), text(), text(), text()),
            (
                proptest::option::of(any::<f64>()),
                proptest::option::of(any::<i64>()),
            ),
            proptest::collection::vec((".{0,6}", any_json()), 0..5),
            proptest::sample::subsequence(keys, 0..=TYPED_KEYS.len()),
        )
            .prop_map(
                |((model, base_url, key, aws_id, usage_id), (temperature, max), extra, order)| {
                    let extra: Map<String, Value> = extra.into_iter().collect();
                    let key_order = order.into_iter().chain(extra.keys().cloned()).collect();
                    LlmConfig {
                        model,
                        base_url,
                        api_key: key.map(Secret::new),
                        aws_access_key_id: aws_id.map(Secret::new),
                        usage_id,
                        temperature,
                        max_output_tokens: max,
                        extra,
                        key_order,
                        ..LlmConfig::default()
                    }
                },
            )
    }

    proptest! {
        /// The bound the size check trusts is never under the text's length: a profile it lets
        /// through without building the text is within the limit.
        #[test]
        fn the_file_text_is_never_longer_than_its_bound(llm in any_llm()) {
            let plain = |_, s: &Secret| s.expose().to_owned();
            let text = to_file_text(&llm, &plain);
            prop_assert!(file_text_len_bound(&llm, &plain) >= text.len(), "{text}");
            // The check built on it says what the text says, right at the limit.
            prop_assert_eq!(file_text_len_over(&llm, &plain, text.len()), None);
            prop_assert_eq!(file_text_len_over(&llm, &plain, text.len() - 1), Some(text.len()));
        }
    }

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
