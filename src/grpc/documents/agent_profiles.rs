//! profileregistry.v1.AgentProfileService: the SDK's agent profiles, with their references typed
//! and every other key of the file kept verbatim in `spec`; its rpcs are [`Named`]'s.
use serde_json::{Map, Value};
use tonic::{Response, Status};

use super::{name_violation, validate, DocumentApi, Named};
use crate::auth::principal;
use crate::domain::{reconcile, DocKind, Document, Violation};
use crate::grpc::convert::{map_to_struct, struct_to_map, timestamp_to_pb};
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
    pb::AgentProfile {
        name: doc.name.clone(),
        agent_kind: agent_profiles::agent_kind(&doc.body).to_owned(),
        id: text("id").unwrap_or_default(),
        llm_profile_ref: text("llm_profile_ref"),
        meta_profile_ref: text("meta_profile_ref"),
        spec: Some(map_to_struct(&spec)),
        revision: doc.revision,
        create_time: Some(timestamp_to_pb(doc.create_time)),
        update_time: Some(timestamp_to_pb(doc.update_time)),
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

impl Named for pb::AgentProfile {
    const KIND: DocKind = DocKind::AgentProfile;
    const FIELD: &'static str = "agent_profile";
    const BUILDS_ON_STORED: bool = true;
    type Msg = Self;

    fn to_pb(doc: &Document) -> Result<Self, Status> {
        Ok(agent_to_pb(doc))
    }

    fn from_pb(
        msg: Option<Self>,
        old: Option<&Document>,
    ) -> Result<(String, Map<String, Value>), Vec<Violation>> {
        agent_from_pb(msg, old)
    }

    fn name_of(msg: &Self) -> &str {
        &msg.name
    }
}

type Agent = pb::AgentProfile;

rpcs! {
    impl pb::agent_profile_service_server::AgentProfileService for DocumentApi {
        fn create_agent_profile(self, req: pb::CreateAgentProfileRequest) -> Agent {
            let msg = req.into_inner().agent_profile;
            self.put::<Agent>(msg, PutMode::Create, None).await
        }

        fn get_agent_profile(self, req: pb::GetAgentProfileRequest) -> Agent {
            self.read::<Agent>(&req.into_inner().name).await
        }

        fn list_agent_profiles(self, req: pb::ListAgentProfilesRequest) -> pb::ListAgentProfilesResponse {
            let r = req.into_inner();
            let (agent_profiles, next_page_token) =
                self.list::<Agent>(r.page_size, &r.page_token).await?;
            Ok(Response::new(pb::ListAgentProfilesResponse {
                agent_profiles,
                next_page_token,
            }))
        }

        fn update_agent_profile(self, req: pb::UpdateAgentProfileRequest) -> Agent {
            let r = req.into_inner();
            let mode = PutMode::of_update(r.allow_missing);
            self.put::<Agent>(r.agent_profile, mode, r.expected_revision)
                .await
        }

        fn delete_agent_profile(self, req: pb::DeleteAgentProfileRequest) -> pb::DeleteDocumentResponse {
            let who = principal(&req);
            let r = req.into_inner();
            // Nothing refers to an agent profile: there is no force.
            let (revision, missing) = (r.expected_revision, r.allow_missing);
            self.delete_named::<Agent>(&who, r.name, revision, missing, false)
                .await
        }

        fn rename_agent_profile(self, req: pb::RenameAgentProfileRequest) -> Agent {
            let r = req.into_inner();
            self.rename::<Agent>(&r.name, &r.new_name).await
        }

        fn validate_agent_profile(self, req: pb::ValidateAgentProfileRequest) -> pb::ValidateProfileResponse {
            Ok(validate::<Agent>(req.into_inner().agent_profile))
        }

        fn import_agent_profiles(self, req: pb::ImportDocumentsRequest) -> pb::ImportProfilesResponse {
            self.import_files(DocKind::AgentProfile, req.into_inner())
                .await
        }

        fn export_agent_profiles(self, req: pb::ExportDocumentsRequest) -> pb::ExportDocumentsResponse {
            self.export_files(DocKind::AgentProfile, req.into_inner().names)
                .await
        }
    }
}
