//! The SDK's provider connections file, `provider-connections/provider_connections.json`:
//! `{"schema_version": 1, "connections": [...]}` as `json.dumps(model_dump, indent=2)` writes it,
//! each connection's keys in the model's order with nulls kept. Read with the SDK's rules: a
//! missing `schema_version` is 1, a newer one is refused, unknown keys are dropped (as pydantic
//! does), an empty, blank or masked key is no key.
//!
//! The SDK never writes a redacted file (its store writes keys in plaintext, or Fernet with
//! OH_SECRET_KEY). A redacted export here writes the mask `**********`, which is what the SDK's
//! own `model_dump` gives without exposing secrets and what its loader reads as no key: a
//! redacted file thus loads in the SDK as connections without keys, says that a key exists, and
//! imported back keeps the stored key (the mask is read as the mask, and never replaces a value).
use serde_json::{Map, Number, Value};

use super::profile::SecretsOut;
use super::secrets::{read_secret, FernetKey};
use crate::domain::connection::DEFAULT_PROVIDER;
use crate::domain::pyjson::dumps_indent2;
use crate::domain::{ProviderConnection, Secret, SECRET_MASK};

/// The file's name inside `provider-connections/`.
pub const FILE_NAME: &str = "provider_connections.json";
/// The schema version the SDK writes and the newest it reads.
pub const SCHEMA_VERSION: i64 = 1;

/// Reads the file's text; a Fernet-encrypted key needs `key` (a token is never stored as if it
/// were the key). The error names the connection (by index and id) and the field.
pub fn parse_file(text: &str, key: Option<&FernetKey>) -> Result<Vec<ProviderConnection>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("the file is not a JSON object".into());
    };
    if let Some(v) = map.get("schema_version") {
        let version = v.as_i64().ok_or("schema_version must be an integer")?;
        if version > SCHEMA_VERSION {
            return Err(format!(
                "schema_version {version} is newer than supported version {SCHEMA_VERSION}"
            ));
        }
    }
    let list = match map.get("connections") {
        None => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err("connections must be a list".into()),
    };
    list.iter()
        .enumerate()
        .map(|(i, c)| {
            let Value::Object(c) = c else {
                return Err(format!("connections[{i}] must be an object"));
            };
            let id = c.get("id").and_then(Value::as_str).unwrap_or("?");
            parse_connection(c, KeyIn::File(key))
                .map_err(|e| format!("connections[{i}] ({id:?}): {e}"))
        })
        .collect()
}

/// Where a connection's key comes from, and so how it reads.
#[derive(Clone, Copy)]
pub enum KeyIn<'a> {
    /// An SDK file: a Fernet token needs the key; the mask stays the mask (an import then keeps
    /// the stored key); a blank key is no key.
    File(Option<&'a FernetKey>),
    /// The registry's own record: the key is the value as it is, whatever it looks like.
    Stored,
}

/// Reads one connection object, of a file or of a stored record (see [`KeyIn`]).
pub fn parse_connection(
    c: &Map<String, Value>,
    key: KeyIn<'_>,
) -> Result<ProviderConnection, String> {
    let string = |k: &str| match c.get(k) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(format!("{k} must be a string")),
    };
    let required = |k: &str| string(k)?.ok_or_else(|| format!("{k} is required"));
    let seconds = |k: &str| match c.get(k) {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15)
                    .map(|x| x as i64)
            })
            .ok_or_else(|| format!("{k} must be an integer (Unix seconds)")),
        None => Err(format!("{k} is required")),
        Some(_) => Err(format!("{k} must be an integer (Unix seconds)")),
    };
    let provider = match c.get("provider") {
        None => DEFAULT_PROVIDER.to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("provider must be a string".into()),
    };
    let api_key = match (string("api_key")?, key) {
        (None, _) => None,
        (Some(s), KeyIn::Stored) => Some(Secret::new(s)),
        (Some(s), KeyIn::File(_)) if s.trim().is_empty() => None,
        (Some(s), KeyIn::File(_)) if s == SECRET_MASK => Some(Secret::new(s)),
        (Some(s), KeyIn::File(key)) => Some(read_secret("api_key", s, key)?),
    };
    let connection = ProviderConnection {
        id: required("id")?,
        display_name: required("display_name")?,
        provider,
        api_key,
        base_url: string("base_url")?,
        created_at: seconds("created_at")?,
        updated_at: seconds("updated_at")?,
    };
    match connection.violations("connection").first() {
        Some(v) => Err(v.to_string()),
        None => Ok(connection),
    }
}

/// One connection as the SDK dumps it, its key per `secrets`.
pub fn to_object(c: &ProviderConnection, secrets: &SecretsOut<'_>) -> Map<String, Value> {
    let text = |s: &Option<String>| s.clone().map_or(Value::Null, Value::String);
    let mut map = Map::with_capacity(7);
    map.insert("id".into(), Value::String(c.id.clone()));
    map.insert("display_name".into(), Value::String(c.display_name.clone()));
    map.insert("provider".into(), Value::String(c.provider.clone()));
    let key = c.api_key.as_ref().map(|k| secrets.render(k));
    map.insert("api_key".into(), text(&key));
    map.insert("base_url".into(), text(&c.base_url));
    map.insert(
        "created_at".into(),
        Value::Number(Number::from(c.created_at)),
    );
    map.insert(
        "updated_at".into(),
        Value::Number(Number::from(c.updated_at)),
    );
    map
}

/// The file text the SDK would write for `connections`, keys per `secrets`.
pub fn to_file_text(connections: &[ProviderConnection], secrets: &SecretsOut<'_>) -> String {
    let mut top = Map::with_capacity(2);
    top.insert(
        "schema_version".into(),
        Value::Number(SCHEMA_VERSION.into()),
    );
    top.insert(
        "connections".into(),
        Value::Array(
            connections
                .iter()
                .map(|c| Value::Object(to_object(c, secrets)))
                .collect(),
        ),
    );
    dumps_indent2(&Value::Object(top))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connections file as the SDK writes it: indented by two, non-ASCII escaped, no newline at
    /// the end.
    const FILE: &str = r#"{
  "schema_version": 1,
  "connections": [
    {
      "id": "team-openai",
      "display_name": "Team OpenAI \u00e9",
      "provider": "openai",
      "api_key": "sk-team",
      "base_url": null,
      "created_at": 1700000000,
      "updated_at": 1700000001
    }
  ]
}"#;

    #[test]
    fn a_plaintext_file_round_trips_byte_for_byte_and_redacts_to_the_mask() {
        let connections = parse_file(FILE, None).unwrap();
        assert_eq!(connections[0].display_name, "Team OpenAI \u{e9}");
        assert_eq!(connections[0].api_key.as_ref().unwrap().expose(), "sk-team");
        assert_eq!(to_file_text(&connections, &SecretsOut::Plaintext), FILE);
        let redacted = to_file_text(&connections, &SecretsOut::Redacted);
        assert!(
            redacted.contains("\"api_key\": \"**********\""),
            "{redacted}"
        );
        let masked = parse_file(&redacted, None).unwrap();
        assert!(masked[0].api_key.as_ref().is_some_and(Secret::is_mask));
        assert_eq!(
            to_file_text(&[], &SecretsOut::Redacted),
            "{\n  \"schema_version\": 1,\n  \"connections\": []\n}"
        );
    }

    #[test]
    fn reads_what_the_sdk_reads_and_refuses_the_rest() {
        let key = FernetKey::from_secret_key("k");
        let token = key.encrypt("sk-secret");
        let one = |body: &str| format!("{{\"connections\": [{{{body}}}]}}");
        let base = "\"id\": \"c\", \"display_name\": \"C\", \"created_at\": 1, \"updated_at\": 2.0";
        let ok = parse_file(
            &one(&format!("{base}, \"api_key\": \"  \", \"extra\": 1")),
            None,
        )
        .unwrap();
        assert_eq!(ok[0].provider, "custom");
        assert_eq!((ok[0].api_key.clone(), ok[0].updated_at), (None, 2));
        assert!(parse_file("{}", None).unwrap().is_empty());
        let enc = one(&format!("{base}, \"api_key\": \"{token}\""));
        assert_eq!(
            parse_file(&enc, Some(&key)).unwrap()[0]
                .api_key
                .as_ref()
                .unwrap()
                .expose(),
            "sk-secret"
        );
        let cases = [
            ("[]".to_owned(), "not a JSON object"),
            ("{\"schema_version\": 2}".to_owned(), "newer than supported"),
            ("{\"connections\": {}}".to_owned(), "must be a list"),
            (
                one("\"id\": \"c\", \"created_at\": 1, \"updated_at\": 1"),
                "display_name is required",
            ),
            (
                one(&format!("{base}, \"provider\": \"\"")),
                "provider: must be 1 to 128",
            ),
            (
                one(&base.replace("\"created_at\": 1", "\"created_at\": 1.5")),
                "created_at must be an integer",
            ),
            (enc.clone(), "no key was given"),
        ];
        for (text, want) in cases {
            let err = parse_file(&text, None).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
            assert!(!err.contains(&token));
        }
        let wrong = parse_file(&enc, Some(&FernetKey::from_secret_key("other"))).unwrap_err();
        assert!(
            wrong.contains("another key") && !wrong.contains(&token),
            "{wrong}"
        );
    }
}
