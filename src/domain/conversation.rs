//! Conversations: LLM bindings by profile name (or inline), status, tags, the rest of the SDK's
//! base_state.json, and their events.
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{LlmConfig, ProfileName, Timestamp, Violation};

/// A conversation id: a UUID, canonical in its dashed form; the SDK's 32-hex form is accepted.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConversationId(uuid::Uuid);

/// The dashed id, as its Display: a message or log field never shows the wrapper type.
impl fmt::Debug for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl ConversationId {
    /// A fresh random id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// Parses the dashed (36) or plain (32 hex) form; `field` names it in the violation.
    pub fn parse(raw: &str, field: &str) -> Result<Self, Violation> {
        let ok_shape = raw.len() == 32 || raw.len() == 36;
        match uuid::Uuid::try_parse(raw) {
            Ok(u) if ok_shape => Ok(Self(u)),
            _ if raw.is_empty() => Err(Violation::new(field, "is required")),
            _ => Err(Violation::new(
                field,
                "must be a UUID (dashed, or 32 hex digits)",
            )),
        }
    }

    /// The 16 bytes, for keys.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// From stored key bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(b))
    }

    /// The SDK's folder name: 32 hex digits.
    pub fn simple(&self) -> String {
        self.0.simple().to_string()
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

/// Where one LLM usage gets its configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmSource {
    /// A profile, resolved when read.
    Profile(ProfileName),
    /// A configuration kept in the conversation.
    Inline(Box<LlmConfig>),
}

/// The SDK's ConversationExecutionStatus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ExecutionStatus {
    #[default]
    Idle,
    Running,
    Paused,
    WaitingForConfirmation,
    Finished,
    Error,
    Stuck,
}

impl ExecutionStatus {
    /// Every status.
    pub const ALL: [ExecutionStatus; 7] = [
        Self::Idle,
        Self::Running,
        Self::Paused,
        Self::WaitingForConfirmation,
        Self::Finished,
        Self::Error,
        Self::Stuck,
    ];

    /// The SDK's spelling in base_state.json.
    pub fn sdk_name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::WaitingForConfirmation => "waiting_for_confirmation",
            Self::Finished => "finished",
            Self::Error => "error",
            Self::Stuck => "stuck",
        }
    }

    /// From the SDK's spelling.
    pub fn from_sdk_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.sdk_name() == s)
    }
}

/// The keys of base_state.json that are typed fields of [`Conversation`], not part of `state`.
pub const TYPED_STATE_KEYS: [&str; 4] = ["id", "execution_status", "tags", "title"];

/// A conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// Its id.
    pub id: ConversationId,
    /// usage_id -> source.
    pub llms: BTreeMap<String, LlmSource>,
    /// Execution status.
    pub execution_status: ExecutionStatus,
    /// Title.
    #[serde(default)]
    pub title: String,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The rest of base_state.json.
    #[serde(default)]
    pub state: Map<String, Value>,
    /// 1 on create, +1 on every change.
    pub revision: i64,
    /// Created.
    pub create_time: Timestamp,
    /// Last changed.
    pub update_time: Timestamp,
    /// Number of events (the next seq).
    pub event_count: i64,
}

impl Conversation {
    /// The profiles this conversation is bound to.
    pub fn bound_profiles(&self) -> impl Iterator<Item = &ProfileName> {
        self.llms.values().filter_map(|s| match s {
            LlmSource::Profile(p) => Some(p),
            LlmSource::Inline(_) => None,
        })
    }

    /// Whether the mutable content equals `other`'s.
    pub fn same_content(&self, other: &Conversation) -> bool {
        self.llms == other.llms
            && self.execution_status == other.execution_status
            && self.title == other.title
            && self.tags == other.tags
            && self.state == other.state
    }

    /// The same conversation with inline secrets masked.
    pub fn masked(mut self) -> Self {
        for s in self.llms.values_mut() {
            if let LlmSource::Inline(l) = s {
                **l = std::mem::take(&mut **l).masked();
            }
        }
        self
    }
}

/// Checks the mutable fields' rules; `prefix` is the message's path (e.g. `conversation`).
pub fn conversation_violations(c: &Conversation, prefix: &str, max_tags: usize) -> Vec<Violation> {
    let mut out = Vec::new();
    for (usage, source) in &c.llms {
        if usage.is_empty() || usage.len() > 128 {
            out.push(Violation::new(
                format!("{prefix}.llms"),
                "usage ids must have 1 to 128 characters",
            ));
        }
        if let LlmSource::Inline(llm) = source {
            out.extend(llm.violations(&format!("{prefix}.llms[{usage}].inline")));
        }
    }
    if c.tags.len() > max_tags {
        out.push(Violation::new(
            format!("{prefix}.tags"),
            format!("at most {max_tags} tags"),
        ));
    }
    for key in c.tags.keys() {
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            out.push(Violation::new(
                format!("{prefix}.tags"),
                format!("key {key:?} must match ^[a-z0-9]+$"),
            ));
        }
    }
    out.extend(super::values::object_violation(
        &c.state,
        &format!("{prefix}.state"),
    ));
    for key in TYPED_STATE_KEYS {
        if c.state.contains_key(key) {
            out.push(Violation::new(
                format!("{prefix}.state.{key}"),
                format!("is a typed field of Conversation; set {key} there instead"),
            ));
        }
    }
    if c.state.get("agent").and_then(|a| a.get("llm")).is_some() {
        out.push(Violation::new(
            format!("{prefix}.state.agent.llm"),
            "the agent's LLM is llms[\"agent\"]; bind it there instead",
        ));
    }
    out
}

/// One stored event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// 0, 1, 2 ... per conversation.
    pub seq: i64,
    /// The SDK's event id.
    pub id: String,
    /// Event kind.
    pub kind: String,
    /// Event source.
    pub source: String,
    /// When it happened.
    pub timestamp: Timestamp,
    /// The whole event JSON text, verbatim.
    pub body: String,
}

/// An event to append (seq not yet assigned).
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// Event id (generated when empty).
    pub id: String,
    /// Event kind.
    pub kind: String,
    /// Event source.
    pub source: String,
    /// When it happened.
    pub timestamp: Timestamp,
    /// The whole event JSON text.
    pub body: String,
}

impl NewEvent {
    /// An event from its JSON object: id, kind, source and timestamp come from the object unless
    /// given; the object is kept verbatim as text.
    pub fn from_body(
        body: &Map<String, Value>,
        text: String,
        id: String,
        kind: String,
        source: String,
        timestamp: Option<Timestamp>,
    ) -> Self {
        let field = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let id = if id.is_empty() { field("id") } else { id };
        Self {
            id: if id.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                id
            },
            kind: if kind.is_empty() { field("kind") } else { kind },
            source: if source.is_empty() {
                field("source")
            } else {
                source
            },
            timestamp: timestamp
                .or_else(|| {
                    body.get("timestamp")
                        .and_then(Value::as_str)
                        .and_then(parse_timestamp)
                })
                .unwrap_or_else(Timestamp::now),
            body: text,
        }
    }
}

/// Parses the SDK's ISO 8601 timestamps (with or without an offset; naive means UTC).
pub fn parse_timestamp(s: &str) -> Option<Timestamp> {
    let dt = chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.to_utc())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").map(|n| n.and_utc())
        })
        .ok()?;
    Some(Timestamp {
        seconds: dt.timestamp(),
        nanos: i32::try_from(dt.timestamp_subsec_nanos()).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_both_sdk_forms_and_print_dashed() {
        let a = ConversationId::parse("0b5c6f5e1c2d4e8f9a0b1c2d3e4f5a6b", "id").unwrap();
        let b = ConversationId::parse("0b5c6f5e-1c2d-4e8f-9a0b-1c2d3e4f5a6b", "id").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "0b5c6f5e-1c2d-4e8f-9a0b-1c2d3e4f5a6b");
        assert_eq!(a.simple(), "0b5c6f5e1c2d4e8f9a0b1c2d3e4f5a6b");
        for bad in [
            "",
            "x",
            "{0b5c6f5e-1c2d-4e8f-9a0b-1c2d3e4f5a6b}",
            "0b5c6f5e1c2d4e8f9a0b1c2d3e4f5a6",
        ] {
            assert!(ConversationId::parse(bad, "id").is_err(), "{bad}");
        }
    }

    #[test]
    fn sdk_timestamps_parse() {
        assert!(parse_timestamp("2025-10-01T12:34:56.123456").is_some());
        assert!(parse_timestamp("2025-10-01T12:34:56+00:00").is_some());
        assert!(parse_timestamp("yesterday").is_none());
    }
}
