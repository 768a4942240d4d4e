//! profileregistry.v1.ProviderConnectionService, MetaProfileService and AgentProfileService: thin
//! handlers over the store's documents, with ProfileService's conventions (masks, revisions,
//! pagination, Validate, import and export of the SDK's files).
use std::sync::Arc;

use serde_json::{Map, Value};
use tonic::{Request, Response, Status};

use super::convert::{map_to_struct, struct_to_map, timestamp_to_pb};
use super::{conflict_policy, page_token, parse_fernet_key, secrets_out, validation};
use crate::app::documents::{self as docs, connection_body, connection_of};
use crate::app::{audit_secret_access, Limits};
use crate::auth::{principal, Role};
use crate::domain::connection::{is_creatable_id, DEFAULT_PROVIDER, ID_RULE, MAX_CONNECTIONS};
use crate::domain::{
    reconcile, DocKind, Document, MetaProfile, MetaProfileClass, ProfileName, ProviderConnection,
    Secret, Timestamp, Violation, SECRET_MASK,
};
use crate::error::{invalid_argument, invalid_field};
use crate::openhands::secrets::looks_encrypted;
use crate::openhands::{agent_profiles, meta_profiles};
use crate::pb;
use crate::store::{PutMode, Store, StoreError};

/// The handlers of the three document services: shared state only.
#[derive(Clone)]
pub struct DocumentApi {
    store: Arc<Store>,
    limits: Limits,
}

impl DocumentApi {
    /// Handlers over `store`.
    pub fn new(store: Arc<Store>, limits: Limits) -> Self {
        Self { store, limits }
    }

    /// A page of `kind`, and the token of the next one.
    async fn page(
        &self,
        kind: DocKind,
        page_size: i32,
        token: &str,
    ) -> Result<(Vec<Document>, String), Status> {
        let size = self.limits.page_size(page_size)?;
        let listing = kind.as_str();
        let after = page_token::decode(&self.limits.page_key, listing, token)?;
        let mut page = self
            .store
            .list_documents(kind, after.as_deref(), size + 1)
            .await?;
        let next = if page.len() > size {
            page.truncate(size);
            page.last()
                .map(|d| page_token::encode(&self.limits.page_key, listing, &d.name))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((page, next))
    }

    async fn get(&self, kind: DocKind, name: &str) -> Result<Document, Status> {
        Ok(self
            .store
            .get_document(kind, name)
            .await?
            .ok_or_else(|| StoreError::not_found(kind.noun(), name))?)
    }

    async fn delete(
        &self,
        who: &crate::auth::Principal,
        kind: DocKind,
        name: String,
        expected_revision: Option<i64>,
        allow_missing: bool,
        force: bool,
    ) -> Result<Response<pb::DeleteDocumentResponse>, Status> {
        let deleted = self
            .store
            .delete_document(kind, &name, expected_revision, allow_missing, force)
            .await?;
        if force && deleted.is_some() {
            let damaged = deleted.as_ref().is_some_and(|d| d.revision == 0);
            super::audit_forced_delete(who, &format!("{}/{name}", kind.as_str()), damaged);
        }
        Ok(Response::new(pb::DeleteDocumentResponse {
            name,
            deleted: deleted.is_some(),
            revision: deleted.map_or(0, |d| d.revision),
        }))
    }

    async fn import_files(
        &self,
        kind: DocKind,
        req: pb::ImportDocumentsRequest,
    ) -> Result<Response<pb::ImportProfilesResponse>, Status> {
        let pb::ImportDocumentsRequest {
            documents,
            on_conflict,
            dry_run,
        } = req;
        let policy = conflict_policy(on_conflict)?;
        let files = documents.into_iter().map(|d| (d.name, d.json)).collect();
        let reports =
            docs::import_files(&self.store, kind, files, policy, dry_run, &self.limits).await?;
        Ok(Response::new(results(reports)))
    }

    async fn export_files(
        &self,
        kind: DocKind,
        names: Vec<String>,
    ) -> Result<Response<pb::ExportDocumentsResponse>, Status> {
        for (i, n) in names.iter().enumerate() {
            name_rule(n, &format!("names[{i}]"))?;
        }
        let files = docs::export_files(&self.store, kind, &names).await?;
        Ok(Response::new(pb::ExportDocumentsResponse {
            documents: files
                .into_iter()
                .map(|(name, json)| pb::ProfileDocument { name, json })
                .collect(),
        }))
    }
}

fn results(reports: Vec<crate::store::ImportOutcome>) -> pb::ImportProfilesResponse {
    pb::ImportProfilesResponse {
        results: reports.into_iter().map(pb::ImportResult::from).collect(),
    }
}

/// A meta-profile's or agent profile's name: the SDK's profile name rule.
fn name_rule(raw: &str, field: &str) -> Result<(), Status> {
    name_violation(raw, field).map_or(Ok(()), |v| Err(invalid_argument(&[v])))
}

/// The SDK's name rule, and no trailing `.json` (the SDK's stores drop it, so `x.json` would be
/// the file of `x`).
fn name_violation(raw: &str, field: &str) -> Option<Violation> {
    if let Err(v) = ProfileName::parse(raw, field) {
        return Some(v);
    }
    raw.ends_with(".json").then(|| {
        Violation::new(
            field,
            "must not end in \".json\" (the SDK's stores drop it: name the record without it)",
        )
    })
}

/// A connection id as a request names it: 1 to 128 characters (an imported id may be any).
fn connection_id(raw: &str, field: &str) -> Result<(), Status> {
    match raw.chars().count() {
        _ if raw.contains('\0') => Err(invalid_field(field, "must not contain NUL (U+0000)")),
        1..=128 => Ok(()),
        _ => Err(invalid_field(field, "must be 1 to 128 characters")),
    }
}

// ---- provider connections ----

/// A stored connection for a response, its key masked unless `reveal`.
fn connection_to_pb(doc: &Document, reveal: bool) -> Result<pb::ProviderConnection, Status> {
    let c = connection_of(doc)?;
    let key = c.api_key.map(|k| {
        if reveal {
            k.expose().to_owned()
        } else {
            SECRET_MASK.to_owned()
        }
    });
    Ok(pb::ProviderConnection {
        id: c.id,
        display_name: c.display_name,
        provider: c.provider,
        api_key: key,
        base_url: c.base_url,
        created_at: c.created_at,
        updated_at: c.updated_at,
        revision: doc.revision,
        create_time: Some(timestamp_to_pb(doc.create_time)),
        update_time: Some(timestamp_to_pb(doc.update_time)),
    })
}

/// A connection from a request, checked; `creating` applies the SDK's id rule for new ids. Its
/// timestamps are set by [`stamped`].
fn connection_from_pb(
    pb: Option<pb::ProviderConnection>,
    creating: bool,
) -> Result<ProviderConnection, Vec<Violation>> {
    let pb = pb.ok_or_else(|| vec![Violation::new("connection", "is required")])?;
    let api_key = pb.api_key.map(|k| {
        if k.trim().is_empty() {
            None
        } else {
            Some(Secret::new(k))
        }
    });
    let c = ProviderConnection {
        id: pb.id,
        display_name: pb.display_name,
        provider: if pb.provider.is_empty() {
            DEFAULT_PROVIDER.to_owned()
        } else {
            pb.provider
        },
        api_key: api_key.flatten(),
        base_url: pb.base_url,
        created_at: 0,
        updated_at: 0,
    };
    let mut violations = c.violations("connection");
    if c.api_key
        .as_ref()
        .is_some_and(|k| looks_encrypted(k.expose()))
    {
        violations.push(Violation::new(
            "connection.api_key",
            "looks like a Fernet token (gAAAAA..., a key the SDK encrypted): the SDK would try to decrypt it; give the key itself, or import the SDK's file with its OH_SECRET_KEY",
        ));
    }
    if creating && !is_creatable_id(&c.id) && !violations.iter().any(|v| v.field == "connection.id")
    {
        violations.push(Violation::new("connection.id", ID_RULE));
    }
    if violations.is_empty() {
        Ok(c)
    } else {
        Err(violations)
    }
}

/// `c`'s object with the SDK's timestamps: created now, or kept from `old` and updated now when
/// anything else changed (as the SDK's update does).
fn stamped(mut c: ProviderConnection, old: Option<&Document>) -> Map<String, Value> {
    let now = Timestamp::now().seconds;
    let Some(old) = old.and_then(|o| connection_of(o).ok()) else {
        (c.created_at, c.updated_at) = (now, now);
        return connection_body(&c);
    };
    (c.created_at, c.updated_at) = (old.created_at, old.updated_at);
    let mut effective = c.clone();
    if effective.api_key.as_ref().is_some_and(Secret::is_mask) {
        effective.api_key.clone_from(&old.api_key);
    }
    if effective != old {
        c.updated_at = now;
    }
    // A masked key stays the mask: the store keeps the stored key for it, under its write lock
    // (so a key rotated meanwhile is not written back over).
    connection_body(&c)
}

impl DocumentApi {
    /// RESOURCE_EXHAUSTED when creating `id` would pass the SDK's limit of connections.
    async fn check_room(&self, id: &str) -> Result<(), Status> {
        if self
            .store
            .get_document(DocKind::Connection, id)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let stored = self
            .store
            .list_documents(DocKind::Connection, None, MAX_CONNECTIONS)
            .await?;
        if stored.len() >= MAX_CONNECTIONS {
            return Err(Status::resource_exhausted(format!(
                "the SDK keeps at most {MAX_CONNECTIONS} provider connections: delete one first"
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::provider_connection_service_server::ProviderConnectionService for DocumentApi {
    async fn create_provider_connection(
        &self,
        req: Request<pb::CreateProviderConnectionRequest>,
    ) -> Result<Response<pb::ProviderConnection>, Status> {
        let blind = !principal(&req).has(Role::Secrets);
        let c = connection_from_pb(req.into_inner().connection, true)
            .map_err(|v| invalid_argument(&v))?;
        self.check_room(&c.id).await?;
        let id = c.id.clone();
        let (doc, _) = self
            .store
            .put_document(
                DocKind::Connection,
                &id,
                stamped(c, None),
                PutMode::Create,
                None,
                blind,
            )
            .await?;
        Ok(Response::new(connection_to_pb(&doc, false)?))
    }

    async fn get_provider_connection(
        &self,
        req: Request<pb::GetProviderConnectionRequest>,
    ) -> Result<Response<pb::ProviderConnection>, Status> {
        let who = principal(&req);
        let pb::GetProviderConnectionRequest { id, reveal_secrets } = req.into_inner();
        connection_id(&id, "id")?;
        let doc = self.get(DocKind::Connection, &id).await?;
        if reveal_secrets {
            audit_secret_access(&who, "reveal secrets", &format!("connection/{id}"))?;
        }
        Ok(Response::new(connection_to_pb(&doc, reveal_secrets)?))
    }

    async fn list_provider_connections(
        &self,
        req: Request<pb::ListProviderConnectionsRequest>,
    ) -> Result<Response<pb::ListProviderConnectionsResponse>, Status> {
        let pb::ListProviderConnectionsRequest {
            page_size,
            page_token,
        } = req.into_inner();
        let (page, next_page_token) = self
            .page(DocKind::Connection, page_size, &page_token)
            .await?;
        Ok(Response::new(pb::ListProviderConnectionsResponse {
            connections: page
                .iter()
                .map(|d| connection_to_pb(d, false))
                .collect::<Result<_, _>>()?,
            next_page_token,
        }))
    }

    async fn update_provider_connection(
        &self,
        req: Request<pb::UpdateProviderConnectionRequest>,
    ) -> Result<Response<pb::ProviderConnection>, Status> {
        let blind = !principal(&req).has(Role::Secrets);
        let pb::UpdateProviderConnectionRequest {
            connection,
            allow_missing,
            expected_revision,
        } = req.into_inner();
        super::check_expected_revision(expected_revision)?;
        let id = connection
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default();
        let old = self.store.get_document(DocKind::Connection, &id).await?;
        let c = connection_from_pb(connection, old.is_none()).map_err(|v| invalid_argument(&v))?;
        if old.is_none() && allow_missing {
            self.check_room(&id).await?;
        }
        let body = stamped(c, old.as_ref());
        let (doc, _) = self
            .store
            .put_document(
                DocKind::Connection,
                &id,
                body,
                PutMode::of_update(allow_missing),
                expected_revision,
                blind,
            )
            .await?;
        Ok(Response::new(connection_to_pb(&doc, false)?))
    }

    async fn delete_provider_connection(
        &self,
        req: Request<pb::DeleteProviderConnectionRequest>,
    ) -> Result<Response<pb::DeleteDocumentResponse>, Status> {
        let who = principal(&req);
        let pb::DeleteProviderConnectionRequest {
            id,
            expected_revision,
            allow_missing,
            force,
        } = req.into_inner();
        connection_id(&id, "id")?;
        self.delete(
            &who,
            DocKind::Connection,
            id,
            expected_revision,
            allow_missing,
            force,
        )
        .await
    }

    async fn validate_provider_connection(
        &self,
        req: Request<pb::ValidateProviderConnectionRequest>,
    ) -> Result<Response<pb::ValidateProfileResponse>, Status> {
        let violations = connection_from_pb(req.into_inner().connection, true)
            .err()
            .unwrap_or_default();
        Ok(Response::new(validation(violations)))
    }

    async fn import_provider_connections(
        &self,
        req: Request<pb::ImportProviderConnectionsRequest>,
    ) -> Result<Response<pb::ImportProfilesResponse>, Status> {
        let blind = !principal(&req).has(Role::Secrets);
        let pb::ImportProviderConnectionsRequest {
            json,
            on_conflict,
            fernet_key,
            dry_run,
        } = req.into_inner();
        let policy = conflict_policy(on_conflict)?;
        let key = parse_fernet_key(&fernet_key)?;
        let reports =
            docs::import_connections(&self.store, &json, key.as_ref(), policy, dry_run, blind)
                .await?;
        Ok(Response::new(results(reports)))
    }

    async fn export_provider_connections(
        &self,
        req: Request<pb::ExportProviderConnectionsRequest>,
    ) -> Result<Response<pb::ExportProviderConnectionsResponse>, Status> {
        let who = principal(&req);
        let pb::ExportProviderConnectionsRequest {
            secrets,
            fernet_key,
        } = req.into_inner();
        let key = parse_fernet_key(&fernet_key)?;
        let mode = secrets_out(secrets, key.as_ref())?;
        let action = super::secrets_action(&mode);
        if let Some(action) = action {
            who.require(Role::Secrets, action)?;
        }
        let (json, count) = docs::export_connections(&self.store, &mode).await?;
        if let Some(action) = action {
            audit_secret_access(&who, action, "all provider connections")?;
        }
        Ok(Response::new(pb::ExportProviderConnectionsResponse {
            json,
            count: i32::try_from(count).unwrap_or(i32::MAX),
        }))
    }
}

// ---- meta-profiles ----

fn meta_to_pb(doc: &Document) -> Result<pb::MetaProfile, Status> {
    let m = meta_profiles::parse_object(&doc.body).map_err(|reason| StoreError::Corrupt {
        key: format!("documents/meta_profile/{}", doc.name),
        reason,
    })?;
    Ok(pb::MetaProfile {
        name: doc.name.clone(),
        classifier_model: m.classifier_model,
        classes: m
            .classes
            .into_iter()
            .map(|c| pb::MetaProfileClass {
                description: c.description,
                model: c.model,
            })
            .collect(),
        prompt_template: m.prompt_template,
        model_table: m.model_table,
        revision: doc.revision,
        create_time: Some(timestamp_to_pb(doc.create_time)),
        update_time: Some(timestamp_to_pb(doc.update_time)),
    })
}

/// A meta-profile from a request: its name and stored object, or every violation.
fn meta_from_pb(
    pb: Option<pb::MetaProfile>,
) -> Result<(String, Map<String, Value>), Vec<Violation>> {
    let pb = pb.ok_or_else(|| vec![Violation::new("meta_profile", "is required")])?;
    let mut violations = Vec::new();
    violations.extend(name_violation(&pb.name, "meta_profile.name"));
    let m = MetaProfile {
        classifier_model: pb.classifier_model,
        classes: pb
            .classes
            .into_iter()
            .map(|c| MetaProfileClass {
                description: c.description,
                model: c.model,
            })
            .collect(),
        prompt_template: pb.prompt_template,
        model_table: pb.model_table,
    };
    if m.classifier_model.is_empty() {
        violations.push(Violation::new(
            "meta_profile.classifier_model",
            "is required (a profile name)",
        ));
    }
    for (i, c) in m.classes.iter().enumerate() {
        if c.model.is_empty() {
            violations.push(Violation::new(
                format!("meta_profile.classes[{i}].model"),
                "is required (a profile name)",
            ));
        }
    }
    violations.extend(m.violations("meta_profile"));
    if m.classes.is_empty() && m.prompt_template.is_none() {
        violations.push(Violation::new(
            "meta_profile.classes",
            "a meta-profile needs classes or a prompt_template (the SDK's API refuses one with neither)",
        ));
    }
    if violations.is_empty() {
        Ok((pb.name, meta_profiles::to_object(&m)))
    } else {
        Err(violations)
    }
}

#[tonic::async_trait]
impl pb::meta_profile_service_server::MetaProfileService for DocumentApi {
    async fn create_meta_profile(
        &self,
        req: Request<pb::CreateMetaProfileRequest>,
    ) -> Result<Response<pb::MetaProfile>, Status> {
        let (name, body) =
            meta_from_pb(req.into_inner().meta_profile).map_err(|v| invalid_argument(&v))?;
        let (doc, _) = self
            .store
            .put_document(
                DocKind::MetaProfile,
                &name,
                body,
                PutMode::Create,
                None,
                false,
            )
            .await?;
        Ok(Response::new(meta_to_pb(&doc)?))
    }

    async fn get_meta_profile(
        &self,
        req: Request<pb::GetMetaProfileRequest>,
    ) -> Result<Response<pb::MetaProfile>, Status> {
        let name = req.into_inner().name;
        name_rule(&name, "name")?;
        Ok(Response::new(meta_to_pb(
            &self.get(DocKind::MetaProfile, &name).await?,
        )?))
    }

    async fn list_meta_profiles(
        &self,
        req: Request<pb::ListMetaProfilesRequest>,
    ) -> Result<Response<pb::ListMetaProfilesResponse>, Status> {
        let pb::ListMetaProfilesRequest {
            page_size,
            page_token,
        } = req.into_inner();
        let (page, next_page_token) = self
            .page(DocKind::MetaProfile, page_size, &page_token)
            .await?;
        Ok(Response::new(pb::ListMetaProfilesResponse {
            meta_profiles: page.iter().map(meta_to_pb).collect::<Result<_, _>>()?,
            next_page_token,
        }))
    }

    async fn update_meta_profile(
        &self,
        req: Request<pb::UpdateMetaProfileRequest>,
    ) -> Result<Response<pb::MetaProfile>, Status> {
        let pb::UpdateMetaProfileRequest {
            meta_profile,
            allow_missing,
            expected_revision,
        } = req.into_inner();
        super::check_expected_revision(expected_revision)?;
        let (name, body) = meta_from_pb(meta_profile).map_err(|v| invalid_argument(&v))?;
        let (doc, _) = self
            .store
            .put_document(
                DocKind::MetaProfile,
                &name,
                body,
                PutMode::of_update(allow_missing),
                expected_revision,
                false,
            )
            .await?;
        Ok(Response::new(meta_to_pb(&doc)?))
    }

    async fn delete_meta_profile(
        &self,
        req: Request<pb::DeleteMetaProfileRequest>,
    ) -> Result<Response<pb::DeleteDocumentResponse>, Status> {
        let who = principal(&req);
        let pb::DeleteMetaProfileRequest {
            name,
            expected_revision,
            allow_missing,
            force,
        } = req.into_inner();
        name_rule(&name, "name")?;
        self.delete(
            &who,
            DocKind::MetaProfile,
            name,
            expected_revision,
            allow_missing,
            force,
        )
        .await
    }

    async fn rename_meta_profile(
        &self,
        req: Request<pb::RenameMetaProfileRequest>,
    ) -> Result<Response<pb::MetaProfile>, Status> {
        let pb::RenameMetaProfileRequest { name, new_name } = req.into_inner();
        name_rule(&name, "name")?;
        name_rule(&new_name, "new_name")?;
        let doc = self
            .store
            .rename_document(DocKind::MetaProfile, &name, &new_name)
            .await?;
        Ok(Response::new(meta_to_pb(&doc)?))
    }

    async fn validate_meta_profile(
        &self,
        req: Request<pb::ValidateMetaProfileRequest>,
    ) -> Result<Response<pb::ValidateProfileResponse>, Status> {
        let violations = meta_from_pb(req.into_inner().meta_profile)
            .err()
            .unwrap_or_default();
        Ok(Response::new(validation(violations)))
    }

    async fn import_meta_profiles(
        &self,
        req: Request<pb::ImportDocumentsRequest>,
    ) -> Result<Response<pb::ImportProfilesResponse>, Status> {
        self.import_files(DocKind::MetaProfile, req.into_inner())
            .await
    }

    async fn export_meta_profiles(
        &self,
        req: Request<pb::ExportDocumentsRequest>,
    ) -> Result<Response<pb::ExportDocumentsResponse>, Status> {
        self.export_files(DocKind::MetaProfile, req.into_inner().names)
            .await
    }
}

// ---- agent profiles ----

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

#[tonic::async_trait]
impl pb::agent_profile_service_server::AgentProfileService for DocumentApi {
    async fn create_agent_profile(
        &self,
        req: Request<pb::CreateAgentProfileRequest>,
    ) -> Result<Response<pb::AgentProfile>, Status> {
        let (name, body) = agent_from_pb(req.into_inner().agent_profile, None)
            .map_err(|v| invalid_argument(&v))?;
        let (doc, _) = self
            .store
            .put_document(
                DocKind::AgentProfile,
                &name,
                body,
                PutMode::Create,
                None,
                false,
            )
            .await?;
        Ok(Response::new(agent_to_pb(&doc)))
    }

    async fn get_agent_profile(
        &self,
        req: Request<pb::GetAgentProfileRequest>,
    ) -> Result<Response<pb::AgentProfile>, Status> {
        let name = req.into_inner().name;
        name_rule(&name, "name")?;
        Ok(Response::new(agent_to_pb(
            &self.get(DocKind::AgentProfile, &name).await?,
        )))
    }

    async fn list_agent_profiles(
        &self,
        req: Request<pb::ListAgentProfilesRequest>,
    ) -> Result<Response<pb::ListAgentProfilesResponse>, Status> {
        let pb::ListAgentProfilesRequest {
            page_size,
            page_token,
        } = req.into_inner();
        let (page, next_page_token) = self
            .page(DocKind::AgentProfile, page_size, &page_token)
            .await?;
        Ok(Response::new(pb::ListAgentProfilesResponse {
            agent_profiles: page.iter().map(agent_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_agent_profile(
        &self,
        req: Request<pb::UpdateAgentProfileRequest>,
    ) -> Result<Response<pb::AgentProfile>, Status> {
        let pb::UpdateAgentProfileRequest {
            agent_profile,
            allow_missing,
            expected_revision,
        } = req.into_inner();
        super::check_expected_revision(expected_revision)?;
        let name = agent_profile
            .as_ref()
            .map(|a| a.name.clone())
            .unwrap_or_default();
        let old = match ProfileName::parse(&name, "agent_profile.name") {
            Ok(_) => {
                self.store
                    .get_document(DocKind::AgentProfile, &name)
                    .await?
            }
            Err(_) => None,
        };
        let (name, body) =
            agent_from_pb(agent_profile, old.as_ref()).map_err(|v| invalid_argument(&v))?;
        let (doc, _) = self
            .store
            .put_document(
                DocKind::AgentProfile,
                &name,
                body,
                PutMode::of_update(allow_missing),
                expected_revision,
                false,
            )
            .await?;
        Ok(Response::new(agent_to_pb(&doc)))
    }

    async fn delete_agent_profile(
        &self,
        req: Request<pb::DeleteAgentProfileRequest>,
    ) -> Result<Response<pb::DeleteDocumentResponse>, Status> {
        let who = principal(&req);
        let pb::DeleteAgentProfileRequest {
            name,
            expected_revision,
            allow_missing,
        } = req.into_inner();
        name_rule(&name, "name")?;
        self.delete(
            &who,
            DocKind::AgentProfile,
            name,
            expected_revision,
            allow_missing,
            false,
        )
        .await
    }

    async fn rename_agent_profile(
        &self,
        req: Request<pb::RenameAgentProfileRequest>,
    ) -> Result<Response<pb::AgentProfile>, Status> {
        let pb::RenameAgentProfileRequest { name, new_name } = req.into_inner();
        name_rule(&name, "name")?;
        name_rule(&new_name, "new_name")?;
        let doc = self
            .store
            .rename_document(DocKind::AgentProfile, &name, &new_name)
            .await?;
        Ok(Response::new(agent_to_pb(&doc)))
    }

    async fn validate_agent_profile(
        &self,
        req: Request<pb::ValidateAgentProfileRequest>,
    ) -> Result<Response<pb::ValidateProfileResponse>, Status> {
        let violations = agent_from_pb(req.into_inner().agent_profile, None)
            .err()
            .unwrap_or_default();
        Ok(Response::new(validation(violations)))
    }

    async fn import_agent_profiles(
        &self,
        req: Request<pb::ImportDocumentsRequest>,
    ) -> Result<Response<pb::ImportProfilesResponse>, Status> {
        self.import_files(DocKind::AgentProfile, req.into_inner())
            .await
    }

    async fn export_agent_profiles(
        &self,
        req: Request<pb::ExportDocumentsRequest>,
    ) -> Result<Response<pb::ExportDocumentsResponse>, Status> {
        self.export_files(DocKind::AgentProfile, req.into_inner().names)
            .await
    }
}
