//! The SDK's other kinds of record, stored alike: provider connections, meta-profiles and agent
//! profiles. Each is kept as the JSON object of its file (key order, nulls and number forms as
//! read), so an export writes back the bytes the SDK wrote; the registry adds a name, a revision
//! and timestamps around it. What each kind references by name is read from that object, so the
//! store can keep references sound across kinds.
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Timestamp;

/// The kinds stored as documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    /// A provider connection (`provider-connections/provider_connections.json`), named by its id.
    Connection,
    /// A meta-profile (`meta-profiles/<name>.json`).
    MetaProfile,
    /// An agent profile (`agent-profiles/<name>.json`).
    AgentProfile,
}

impl DocKind {
    /// Every kind, in the order a home is imported (targets before what references them).
    pub const ALL: [Self; 3] = [Self::Connection, Self::MetaProfile, Self::AgentProfile];

    /// Its key in stored records and keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::MetaProfile => "meta_profile",
            Self::AgentProfile => "agent_profile",
        }
    }

    /// The kind of a key.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// How people call one, in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Connection => "provider connection",
            Self::MetaProfile => "meta-profile",
            Self::AgentProfile => "agent profile",
        }
    }

    /// The keys of its object that hold secret values (sealed at rest, masked on read).
    pub fn secret_keys(self) -> &'static [&'static str] {
        match self {
            Self::Connection => &["api_key"],
            Self::MetaProfile | Self::AgentProfile => &[],
        }
    }
}

/// One stored document (its Debug form masks secret values).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Its kind.
    pub kind: DocKind,
    /// Its name: a connection's id, a meta-profile's or agent profile's file stem.
    pub name: String,
    /// 1 on create, +1 on every change (the registry's; an agent profile's own `revision` is in
    /// its body).
    pub revision: i64,
    /// When it was created here.
    pub create_time: Timestamp,
    /// When it last changed here.
    pub update_time: Timestamp,
    /// The object of its file, secret values in the clear (sealed by the store's codec).
    pub body: Map<String, Value>,
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut body = self.body.clone();
        for key in self.kind.secret_keys() {
            if let Some(v @ Value::String(_)) = body.get_mut(*key) {
                *v = Value::String(super::SECRET_MASK.to_owned());
            }
        }
        f.debug_struct("Document")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("revision", &self.revision)
            .field("create_time", &self.create_time)
            .field("update_time", &self.update_time)
            .field("body", &body)
            .finish()
    }
}

/// What a reference points at.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// An LLM profile, by name.
    Profile(String),
    /// A document, by kind and name.
    Document(DocKind, String),
}

impl Target {
    /// `profile "x"`, `provider connection "y"`.
    pub fn describe(&self) -> String {
        match self {
            Self::Profile(n) => format!("profile {n:?}"),
            Self::Document(k, n) => format!("{} {n:?}", k.noun()),
        }
    }
}

/// One reference held by a record: the field that holds it and its target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The field's path inside the object, e.g. `classes[2].model`.
    pub field: String,
    /// What it names.
    pub target: Target,
}

/// The key of an LLM profile's JSON that names its provider connection.
pub const CONNECTION_KEY: &str = "provider_connection_id";

/// The connection an LLM's extra keys name, if any (the SDK treats an empty id as none).
pub fn connection_of(extra: &Map<String, Value>) -> Option<&str> {
    extra
        .get(CONNECTION_KEY)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Whether an agent profile's object is of the OpenHands kind (the SDK's default).
fn openhands_agent(body: &Map<String, Value>) -> bool {
    body.get("agent_kind")
        .and_then(Value::as_str)
        .is_none_or(|k| k == "openhands")
}

/// The name a reference stands for: the SDK's stores drop one trailing `.json`
/// (`canonical_profile_name`), so `gpt.json` and `gpt` name the same record.
pub fn canonical(name: &str) -> &str {
    name.strip_suffix(".json").unwrap_or(name)
}

/// Every place of `body` (a `kind` object) that names another record, with a mutable handle.
fn reference_slots(
    kind: DocKind,
    body: &mut Map<String, Value>,
) -> Vec<(String, Target, &mut Value)> {
    let mut out = Vec::new();
    match kind {
        DocKind::Connection => {}
        DocKind::MetaProfile => {
            let mut classifier = None;
            let mut classes = None;
            for (key, value) in body.iter_mut() {
                match key.as_str() {
                    "classifier_model" => classifier = Some(value),
                    "classes" => classes = Some(value),
                    _ => {}
                }
            }
            if let Some(v) = classifier {
                if let Some(name) = v.as_str().map(|n| canonical(n).to_owned()) {
                    out.push(("classifier_model".to_owned(), Target::Profile(name), v));
                }
            }
            if let Some(Value::Array(list)) = classes {
                for (i, class) in list.iter_mut().enumerate() {
                    if let Some(v) = class.as_object_mut().and_then(|c| c.get_mut("model")) {
                        if let Some(name) = v.as_str().map(|n| canonical(n).to_owned()) {
                            out.push((format!("classes[{i}].model"), Target::Profile(name), v));
                        }
                    }
                }
            }
        }
        DocKind::AgentProfile => {
            let openhands = openhands_agent(body);
            for (key, value) in body.iter_mut() {
                let Some(name) = value.as_str().map(|n| canonical(n).to_owned()) else {
                    continue;
                };
                let target = match key.as_str() {
                    "llm_profile_ref" if openhands => Target::Profile(name),
                    "meta_profile_ref" if openhands => Target::Document(DocKind::MetaProfile, name),
                    _ => continue,
                };
                out.push((key.clone(), target, value));
            }
        }
    }
    out
}

/// Every reference `body` (a `kind` object) holds, in field order.
pub fn references(kind: DocKind, body: &Map<String, Value>) -> Vec<Reference> {
    let mut copy = body.clone();
    reference_slots(kind, &mut copy)
        .into_iter()
        .map(|(field, target, _)| Reference { field, target })
        .collect()
}

/// Points every reference of `body` to `from` at `to` instead; whether anything changed.
pub fn repoint(kind: DocKind, body: &mut Map<String, Value>, from: &Target, to: &str) -> bool {
    let mut changed = false;
    for (_, target, slot) in reference_slots(kind, body) {
        if &target == from {
            *slot = Value::String(to.to_owned());
            changed = true;
        }
    }
    changed
}

/// The kinds of document that can reference a `target` of this shape.
pub fn referrer_kinds(target: &Target) -> &'static [DocKind] {
    match target {
        Target::Profile(_) => &[DocKind::MetaProfile, DocKind::AgentProfile],
        Target::Document(DocKind::MetaProfile, _) => &[DocKind::AgentProfile],
        Target::Document(_, _) => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn references_follow_the_sdks_fields_and_repoint_in_place() {
        let mut meta = object(
            r#"{"classifier_model": "small", "classes": [{"description": "d", "model": "big"}, {"description": "e", "model": "small"}], "prompt_template": null}"#,
        );
        let refs = references(DocKind::MetaProfile, &meta);
        let fields: Vec<_> = refs.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(
            fields,
            ["classifier_model", "classes[0].model", "classes[1].model"]
        );
        assert!(repoint(
            DocKind::MetaProfile,
            &mut meta,
            &Target::Profile("small".into()),
            "tiny"
        ));
        assert_eq!(meta["classifier_model"], "tiny");
        assert_eq!(meta["classes"][1]["model"], "tiny");
        assert_eq!(meta["classes"][0]["model"], "big");

        let agent = object(
            r#"{"agent_kind": "openhands", "llm_profile_ref": "a", "meta_profile_ref": "m"}"#,
        );
        let targets: Vec<_> = references(DocKind::AgentProfile, &agent)
            .into_iter()
            .map(|r| r.target)
            .collect();
        assert_eq!(
            targets,
            [
                Target::Profile("a".into()),
                Target::Document(DocKind::MetaProfile, "m".into())
            ]
        );
        // An ACP agent carries no LLM reference, whatever keys it has.
        let acp = object(r#"{"agent_kind": "acp", "llm_profile_ref": "a"}"#);
        assert!(references(DocKind::AgentProfile, &acp).is_empty());
        let none = object(r#"{"llm_profile_ref": "a", "meta_profile_ref": null}"#);
        assert_eq!(references(DocKind::AgentProfile, &none).len(), 1);
    }
}
