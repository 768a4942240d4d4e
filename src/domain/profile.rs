//! Profiles and their LLM configuration: the typed core of the SDK's `LLM` model plus every other key.
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{ProfileName, Violation};

/// What responses carry instead of a secret value: the SDK's own mask.
pub const SECRET_MASK: &str = "**********";

/// The SDK keys that are typed fields of [`LlmConfig`], in the SDK's field order.
pub const TYPED_KEYS: [&str; 15] = [
    "model",
    "api_key",
    "base_url",
    "api_version",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_region_name",
    "temperature",
    "top_p",
    "top_k",
    "max_input_tokens",
    "max_output_tokens",
    "reasoning_effort",
    "usage_id",
];

/// A secret value (an API key or AWS credential). Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: call only where the value must leave the process on purpose.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether this is the mask, which on write means "keep the stored value".
    pub fn is_mask(&self) -> bool {
        self.0 == SECRET_MASK
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SECRET_MASK)
    }
}

/// The secret fields of an LLM configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretField {
    /// `api_key`
    ApiKey,
    /// `aws_access_key_id`
    AwsAccessKeyId,
    /// `aws_secret_access_key`
    AwsSecretAccessKey,
    /// `aws_session_token`
    AwsSessionToken,
}

impl SecretField {
    /// Every secret field.
    pub const ALL: [SecretField; 4] = [
        Self::ApiKey,
        Self::AwsAccessKeyId,
        Self::AwsSecretAccessKey,
        Self::AwsSessionToken,
    ];

    /// The field's key in the SDK's JSON and in the proto.
    pub fn key(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::AwsAccessKeyId => "aws_access_key_id",
            Self::AwsSecretAccessKey => "aws_secret_access_key",
            Self::AwsSessionToken => "aws_session_token",
        }
    }
}

/// An LLM configuration: the typed core of the SDK's `LLM` model and every other key in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmConfig {
    /// The provider/model id; required.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub api_key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub aws_access_key_id: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub aws_secret_access_key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub aws_session_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub aws_region_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub top_k: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub max_input_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub max_output_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub reasoning_effort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub usage_id: Option<String>,
    /// Every other key of the SDK's JSON, verbatim (numbers keep their text: `40.0` stays `40.0`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
    /// The key order of the document this came from (import), so export gives it back; empty when unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_order: Vec<String>,
    /// Never stored: set on a write by a caller who may not read secrets and who supplied a
    /// secret value. Such a write is never "unchanged", so that its outcome (UNCHANGED or
    /// UPDATED, a kept or a new revision) does not tell whether the value equals the stored one.
    #[serde(skip)]
    pub blind_write: bool,
}

impl LlmConfig {
    /// The value of a secret field.
    pub fn secret(&self, field: SecretField) -> Option<&Secret> {
        match field {
            SecretField::ApiKey => self.api_key.as_ref(),
            SecretField::AwsAccessKeyId => self.aws_access_key_id.as_ref(),
            SecretField::AwsSecretAccessKey => self.aws_secret_access_key.as_ref(),
            SecretField::AwsSessionToken => self.aws_session_token.as_ref(),
        }
    }

    /// The slot of a secret field.
    pub fn secret_mut(&mut self, field: SecretField) -> &mut Option<Secret> {
        match field {
            SecretField::ApiKey => &mut self.api_key,
            SecretField::AwsAccessKeyId => &mut self.aws_access_key_id,
            SecretField::AwsSecretAccessKey => &mut self.aws_secret_access_key,
            SecretField::AwsSessionToken => &mut self.aws_session_token,
        }
    }

    /// Marks a write by a caller who may not read secrets (`blind`) that supplies a secret value
    /// (not the mask, not blank): see [`LlmConfig::blind_write`].
    pub fn blind_if(&mut self, blind: bool) {
        self.blind_write = blind
            && SecretField::ALL.iter().any(|f| {
                self.secret(*f)
                    .is_some_and(|s| !s.is_mask() && !s.expose().trim().is_empty())
            });
    }

    /// Replaces every set secret with the mask, for responses.
    pub fn masked(mut self) -> Self {
        for field in SecretField::ALL {
            if let Some(s) = self.secret_mut(field) {
                *s = Secret::new(SECRET_MASK);
            }
        }
        self
    }

    /// Applies the write rules against the stored configuration: a mask keeps the stored secret
    /// (no value when nothing is stored), an empty or blank value clears it; extra values equal to the
    /// stored ones keep their stored form, and the stored key order is kept for keys still present.
    pub fn merge_onto(mut self, stored: Option<&LlmConfig>) -> Self {
        for field in SecretField::ALL {
            let slot = self.secret_mut(field);
            match slot {
                Some(s) if s.is_mask() => *slot = stored.and_then(|o| o.secret(field)).cloned(),
                Some(s) if s.expose().trim().is_empty() => *slot = None,
                _ => {}
            }
        }
        if let Some(stored) = stored {
            for (key, value) in self.extra.iter_mut() {
                if let Some(old) = stored.extra.get(key) {
                    reconcile(value, old);
                }
            }
            if self.key_order.is_empty() {
                self.key_order = stored.key_order.clone();
            }
        }
        self
    }

    /// Whether two configurations hold the same content. Key order counts only when both know it
    /// (a profile created over gRPC has none).
    pub fn same_content(&self, other: &LlmConfig) -> bool {
        if self.blind_write || other.blind_write {
            return false;
        }
        // schema_version's place carries no content: export always writes it last, so a file
        // without it and its own export are the same profile. No order (a profile made through
        // the API) matches any order.
        fn order(l: &LlmConfig) -> impl Iterator<Item = &str> {
            l.key_order
                .iter()
                .map(String::as_str)
                .filter(|k| *k != "schema_version")
        }
        let same_order =
            self.key_order.is_empty() || other.key_order.is_empty() || order(self).eq(order(other));
        // Every field but the order and the write mode, named so that a new field cannot be
        // left out (this does not compile until it is compared too), and compared in place:
        // every durable update asks, and cloning both sides showed in its profile.
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
            blind_write: _,
        } = self;
        same_order
            && *model == other.model
            && *base_url == other.base_url
            && *api_version == other.api_version
            && *api_key == other.api_key
            && *aws_access_key_id == other.aws_access_key_id
            && *aws_secret_access_key == other.aws_secret_access_key
            && *aws_session_token == other.aws_session_token
            && *aws_region_name == other.aws_region_name
            && *temperature == other.temperature
            && *top_p == other.top_p
            && *top_k == other.top_k
            && *max_input_tokens == other.max_input_tokens
            && *max_output_tokens == other.max_output_tokens
            && *reasoning_effort == other.reasoning_effort
            && *usage_id == other.usage_id
            && *extra == other.extra
    }

    /// Checks every rule; `prefix` is the field path of this configuration (e.g. `profile.llm`).
    pub fn violations(&self, prefix: &str) -> Vec<Violation> {
        let mut out = Vec::new();
        if self.model.trim().is_empty() {
            out.push(Violation::new(
                format!("{prefix}.model"),
                "is required and must be non-empty",
            ));
        }
        let (finite, not_negative) = ("must be a finite number", "must not be negative");
        let nan_or_infinite = |v: Option<f64>| v.is_some_and(|v| !v.is_finite());
        let below_zero = |v: Option<i64>| v.is_some_and(|v| v < 0);
        for (key, broken, rule) in [
            ("temperature", nan_or_infinite(self.temperature), finite),
            ("top_p", nan_or_infinite(self.top_p), finite),
            ("top_k", nan_or_infinite(self.top_k), finite),
            (
                "max_input_tokens",
                below_zero(self.max_input_tokens),
                not_negative,
            ),
            (
                "max_output_tokens",
                below_zero(self.max_output_tokens),
                not_negative,
            ),
        ] {
            if broken {
                out.push(Violation::new(format!("{prefix}.{key}"), rule));
            }
        }
        for key in self.extra.keys() {
            if TYPED_KEYS.contains(&key.as_str()) {
                out.push(Violation::new(
                    format!("{prefix}.extra.{key}"),
                    format!("duplicates the typed field {key}; set it there instead"),
                ));
            } else if key == "schema_version" {
                out.push(Violation::new(
                    format!("{prefix}.extra.{key}"),
                    "is reserved: the registry writes schema_version on export",
                ));
            }
        }
        out.extend(super::values::object_violation(
            &self.extra,
            &format!("{prefix}.extra"),
        ));
        out
    }
}

/// Gives `new` the stored form of what it shares with `old`: equal numbers keep their stored text
/// (`8.0` stays `8.0`), objects with the same keys keep the stored key order.
pub fn reconcile(new: &mut Value, old: &Value) {
    match (new, old) {
        (Value::Number(n), Value::Number(o))
            if n.as_f64().is_some() && n.as_f64() == o.as_f64() =>
        {
            *n = o.clone();
        }
        (Value::Array(n), Value::Array(o)) if n.len() == o.len() => {
            for (n, o) in n.iter_mut().zip(o) {
                reconcile(n, o);
            }
        }
        (Value::Object(n), Value::Object(o)) => {
            for (key, value) in n.iter_mut() {
                if let Some(old) = o.get(key) {
                    reconcile(value, old);
                }
            }
            if n.len() == o.len() && o.keys().all(|k| n.contains_key(k)) {
                let mut ordered = Map::new();
                for key in o.keys() {
                    if let Some(v) = n.remove(key) {
                        ordered.insert(key.clone(), v);
                    }
                }
                *n = ordered;
            }
        }
        _ => {}
    }
}

/// A point in time, as seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp {
    /// Seconds since the epoch.
    pub seconds: i64,
    /// Nanoseconds within the second.
    pub nanos: i32,
}

impl Timestamp {
    /// One nanosecond later.
    pub fn after_one_nanosecond(self) -> Self {
        if self.nanos >= 999_999_999 {
            Self {
                seconds: self.seconds.saturating_add(1),
                nanos: 0,
            }
        } else {
            Self {
                nanos: self.nanos + 1,
                ..self
            }
        }
    }

    /// The current time.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }
}

impl From<SystemTime> for Timestamp {
    /// The time `t` (the epoch for a time before it).
    fn from(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        }
    }
}

/// A named LLM configuration with its revision and timestamps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The profile's name.
    pub name: ProfileName,
    /// Its LLM configuration.
    pub llm: LlmConfig,
    /// 1 on create, +1 on every change.
    pub revision: i64,
    /// When it was created.
    pub create_time: Timestamp,
    /// When it last changed.
    pub update_time: Timestamp,
    /// Who wrote this revision: the token's name, `anonymous` without authentication, `local`
    /// for the command line on a data dir; empty for revisions written before it was kept.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub update_principal: String,
}

impl Profile {
    /// The same profile with every secret masked.
    pub fn masked(mut self) -> Self {
        self.llm = self.llm.masked();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_key(key: &str) -> LlmConfig {
        LlmConfig {
            model: "gpt-4o".into(),
            api_key: Some(Secret::new(key)),
            ..Default::default()
        }
    }

    #[test]
    fn mask_keeps_blank_clears_value_sets() {
        let stored = with_key("sk-old");
        assert_eq!(
            with_key(SECRET_MASK).merge_onto(Some(&stored)).api_key,
            stored.api_key
        );
        assert_eq!(with_key("  ").merge_onto(Some(&stored)).api_key, None);
        assert_eq!(
            with_key("sk-new").merge_onto(Some(&stored)).api_key,
            Some(Secret::new("sk-new"))
        );
        assert_eq!(with_key(SECRET_MASK).merge_onto(None).api_key, None);
    }

    #[test]
    fn equal_numbers_keep_their_stored_text() {
        let mut stored = with_key("k");
        stored.extra.insert(
            "retry_multiplier".into(),
            serde_json::from_str("8.0").unwrap(),
        );
        let mut new = with_key("k");
        new.extra.insert(
            "retry_multiplier".into(),
            serde_json::from_str("8").unwrap(),
        );
        let merged = new.merge_onto(Some(&stored));
        assert_eq!(merged.extra["retry_multiplier"].to_string(), "8.0");
    }

    #[test]
    fn debug_never_shows_a_secret() {
        assert!(!format!("{:?}", with_key("sk-visible")).contains("sk-visible"));
    }

    #[test]
    fn same_content_compares_every_field_and_the_order_only_when_both_know_it() {
        let base = LlmConfig {
            key_order: vec!["model".into(), "api_key".into(), "schema_version".into()],
            ..with_key("k")
        };
        assert!(base.same_content(&base.clone()));
        // One field changed at a time: each makes another profile.
        type Change = fn(&mut LlmConfig);
        let changes: Vec<(&str, Change)> = vec![
            ("model", |l| l.model.push('x')),
            ("base_url", |l| l.base_url = Some("http://h".into())),
            ("api_version", |l| l.api_version = Some("v".into())),
            ("api_key", |l| l.api_key = Some(Secret::new("k2"))),
            ("aws_access_key_id", |l| {
                l.aws_access_key_id = Some(Secret::new("a"))
            }),
            ("aws_secret_access_key", |l| {
                l.aws_secret_access_key = Some(Secret::new("a"))
            }),
            ("aws_session_token", |l| {
                l.aws_session_token = Some(Secret::new("a"))
            }),
            ("aws_region_name", |l| l.aws_region_name = Some("r".into())),
            ("temperature", |l| l.temperature = Some(0.5)),
            ("top_p", |l| l.top_p = Some(0.5)),
            ("top_k", |l| l.top_k = Some(5.0)),
            ("max_input_tokens", |l| l.max_input_tokens = Some(5)),
            ("max_output_tokens", |l| l.max_output_tokens = Some(5)),
            ("reasoning_effort", |l| {
                l.reasoning_effort = Some("high".into())
            }),
            ("usage_id", |l| l.usage_id = Some("u".into())),
            ("extra", |l| {
                l.extra.insert("seed".into(), Value::from(1));
            }),
            ("key order", |l| l.key_order.swap(0, 1)),
            ("blind write", |l| l.blind_write = true),
        ];
        for (field, change) in changes {
            let mut other = base.clone();
            change(&mut other);
            assert!(!base.same_content(&other), "{field}");
            assert!(!other.same_content(&base), "{field}");
        }
        // schema_version's place, and an order only one side knows, carry no content.
        let moved = LlmConfig {
            key_order: vec!["schema_version".into(), "model".into(), "api_key".into()],
            ..base.clone()
        };
        assert!(base.same_content(&moved));
        let without_version = LlmConfig {
            key_order: vec!["model".into(), "api_key".into()],
            ..base.clone()
        };
        assert!(base.same_content(&without_version) && without_version.same_content(&base));
        let unordered = LlmConfig {
            key_order: Vec::new(),
            ..base.clone()
        };
        assert!(base.same_content(&unordered) && unordered.same_content(&base));
    }
}
