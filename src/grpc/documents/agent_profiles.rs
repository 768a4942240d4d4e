//! profileregistry.v1.AgentProfileService: the SDK's agent profiles, with their references typed
//! and every other key of the file kept verbatim in `spec`; its rpcs are [`Named`]'s.
use serde_json::{Map, Value};
use tonic::{Response, Status};

use super::{name_violation, DocumentApi, Named};
use crate::domain::{reconcile, DocKind, Document, Violation};
use crate::grpc::convert::{map_to_struct, struct_to_map};
use crate::openhands::agent_profiles;
use crate::pb;
use crate::store::PutMode;

/// The keys of an agent profile's object that have their own field in the message.
const AGENT_TYPED: [&str; 5] = [
    "name",
    "agent_kind",
    "id",
    "llm_profile_ref",
    "meta_profile_ref",
];

fn agent_to_pb(doc: &Document) -> pb::AgentProfile {
    let text = |k: &str| doc.body.get(k).and_then(Value::as_str).map(str::to_owned);
    let mut spec = doc.body.clone();
    for key in AGENT_TYPED {
        spec.shift_remove(key);
    }
    let (revision, create_time, update_time) = super::stamps(doc);
    pb::AgentProfile {
        name: doc.name.clone(),
        agent_kind: agent_profiles::agent_kind(&doc.body).to_owned(),
        id: text("id").unwrap_or_default(),
        llm_profile_ref: text("llm_profile_ref"),
        meta_profile_ref: text("meta_profile_ref"),
        spec: Some(map_to_struct(&spec)),
        revision,
        create_time,
        update_time,
    }
}

/// An agent profile from a request: its name and object (the stored one's id and number forms
/// kept), or every violation.
fn agent_from_pb(
    pb: Option<pb::AgentProfile>,
    old: Option<&Document>,
) -> Result<(String, Map<String, Value>), Vec<Violation>> {
    let pb = pb.ok_or_else(|| vec![Violation::new("agent_profile", "is required")])?;
    let mut violations = Vec::new();
    violations.extend(name_violation(&pb.name, "agent_profile.name"));
    let mut spec = pb
        .spec
        .map(|s| struct_to_map(s, "agent_profile.spec", &mut violations))
        .unwrap_or_default();
    for key in AGENT_TYPED {
        if spec.contains_key(key) {
            violations.push(Violation::new(
                format!("agent_profile.spec.{key}"),
                format!("has its own field, agent_profile.{key}"),
            ));
        }
    }
    if let Some(old) = old {
        let mut value = Value::Object(spec);
        reconcile(&mut value, &Value::Object(old.body.clone()));
        spec = match value {
            Value::Object(m) => m,
            _ => Map::new(),
        };
    }
    let kind = if pb.agent_kind.is_empty() {
        "openhands".to_owned()
    } else {
        pb.agent_kind
    };
    let id = old
        .and_then(|o| o.body.get("id").cloned())
        .unwrap_or_else(|| Value::String(uuid::Uuid::new_v4().to_string()));
    spec.insert("agent_kind".into(), Value::String(kind));
    spec.insert("id".into(), id);
    spec.insert("name".into(), Value::String(pb.name.clone()));
    spec.entry("schema_version")
        .or_insert(Value::from(agent_profiles::SCHEMA_VERSION));
    let own_revision = spec.contains_key("revision");
    let old_revision = old
        .and_then(|o| o.body.get("revision"))
        .cloned()
        .unwrap_or(Value::from(0));
    spec.entry("revision").or_insert(old_revision.clone());
    for (key, value) in [
        ("llm_profile_ref", pb.llm_profile_ref),
        ("meta_profile_ref", pb.meta_profile_ref),
    ] {
        if let Some(v) = value {
            spec.insert(key.into(), Value::String(v));
        }
    }
    let mut body = agent_profiles::ordered(spec);
    // The SDK counts its own revision up on every saved edit: so does an update that changes
    // something and does not set spec.revision itself.
    if !own_revision && old.is_some_and(|o| o.body != body) {
        let next = old_revision.as_i64().unwrap_or(0).saturating_add(1);
        body.insert("revision".into(), Value::from(next));
    }
    violations.extend(agent_profiles::violations(&body, "agent_profile"));
    violations.extend(agent_profiles::unknown_keys(&body, "agent_profile.spec"));
    if violations.is_empty() {
        Ok((pb.name, body))
    } else {
        Err(violations)
    }
}

// Nothing refers to an agent profile: a Delete has no force.
named_rpcs! {
    pb::AgentProfile: pb::agent_profile_service_server::AgentProfileService, DocKind::AgentProfile, builds_on_stored true, field agent_profile, listing agent_profiles;
    to_pb |d| Ok(agent_to_pb(d)), from_pb agent_from_pb;
    create_agent_profile(pb::CreateAgentProfileRequest), get_agent_profile(pb::GetAgentProfileRequest), list_agent_profiles(pb::ListAgentProfilesRequest) -> ListAgentProfilesResponse,
    update_agent_profile(pb::UpdateAgentProfileRequest), delete_agent_profile(pb::DeleteAgentProfileRequest) force |_r| false,
    rename_agent_profile(pb::RenameAgentProfileRequest), validate_agent_profile(pb::ValidateAgentProfileRequest), import_agent_profiles, export_agent_profiles
}
