//! profileregistry.v1.ProviderConnectionService: the SDK's provider connections (a provider's key
//! and endpoint, shared by the profiles that name it), their keys masked unless revealed.
use serde_json::{Map, Value};
use tonic::{Response, Status};

use super::{connection_id, results, DocumentApi};
use crate::app::audit_secret_access;
use crate::app::documents::{self as docs, connection_body, connection_of};
use crate::auth::{principal, Role};
use crate::domain::connection::{is_creatable_id, DEFAULT_PROVIDER, ID_RULE, MAX_CONNECTIONS};
use crate::domain::{
    DocKind, Document, ProviderConnection, Secret, Timestamp, Violation, SECRET_MASK,
};
use crate::error::invalid_argument;
use crate::grpc::{conflict_policy, parse_fernet_key, secrets_out, validation};
use crate::openhands::secrets::looks_encrypted;
use crate::pb;
use crate::store::{DocPut, PutMode};

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
    let (revision, create_time, update_time) = super::stamps(doc);
    Ok(pb::ProviderConnection {
        id: c.id,
        display_name: c.display_name,
        provider: c.provider,
        api_key: key,
        base_url: c.base_url,
        created_at: c.created_at,
        updated_at: c.updated_at,
        revision,
        create_time,
        update_time,
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
    /// Puts a checked connection, stamped against the stored `old`, in `mode`: within the SDK's
    /// limit when it may add one.
    async fn put_connection(
        &self,
        c: ProviderConnection,
        old: Option<&Document>,
        mode: PutMode,
        expected_revision: Option<i64>,
        blind: bool,
    ) -> Result<Response<pb::ProviderConnection>, Status> {
        if old.is_none() && mode != PutMode::Update {
            self.check_room(&c.id).await?;
        }
        let put = DocPut {
            kind: DocKind::Connection,
            name: c.id.clone(),
            body: stamped(c, old),
            mode,
            expected_revision,
            blind,
        };
        let (doc, _) = self.store.put_document(put).await?;
        Ok(Response::new(connection_to_pb(&doc, false)?))
    }

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

rpcs! {
    impl pb::provider_connection_service_server::ProviderConnectionService for DocumentApi {
        fn create_provider_connection(self, req: pb::CreateProviderConnectionRequest) -> pb::ProviderConnection {
            let blind = !principal(&req).has(Role::Secrets);
            let c = connection_from_pb(req.into_inner().connection, true)
                .map_err(|v| invalid_argument(&v))?;
            self.put_connection(c, None, PutMode::Create, None, blind)
                .await
        }

        fn get_provider_connection(self, req: pb::GetProviderConnectionRequest) -> pb::ProviderConnection {
            let who = principal(&req);
            let pb::GetProviderConnectionRequest { id, reveal_secrets } = req.into_inner();
            connection_id(&id, "id")?;
            let doc = self.get(DocKind::Connection, &id).await?;
            if reveal_secrets {
                audit_secret_access(&who, "reveal secrets", &format!("connection/{id}"))?;
            }
            Ok(Response::new(connection_to_pb(&doc, reveal_secrets)?))
        }

        fn list_provider_connections(self, pb::ListProviderConnectionsRequest { page_size, page_token }) -> pb::ListProviderConnectionsResponse {
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

        fn update_provider_connection(self, who, pb::UpdateProviderConnectionRequest { connection, allow_missing, expected_revision }) -> pb::ProviderConnection {
            let blind = !who.has(Role::Secrets);
            crate::grpc::check_expected_revision(expected_revision)?;
            let id = connection
                .as_ref()
                .map(|c| c.id.clone())
                .unwrap_or_default();
            let old = self.store.get_document(DocKind::Connection, &id).await?;
            let c = connection_from_pb(connection, old.is_none()).map_err(|v| invalid_argument(&v))?;
            let mode = PutMode::of_update(allow_missing);
            self.put_connection(c, old.as_ref(), mode, expected_revision, blind)
                .await
        }

        fn delete_provider_connection(self, who, pb::DeleteProviderConnectionRequest { id, expected_revision, allow_missing, force }) -> pb::DeleteDocumentResponse {
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

        fn validate_provider_connection(self, req: pb::ValidateProviderConnectionRequest) -> pb::ValidateProfileResponse {
            let violations = connection_from_pb(req.into_inner().connection, true)
                .err()
                .unwrap_or_default();
            Ok(Response::new(validation(violations)))
        }

        fn import_provider_connections(self, who, pb::ImportProviderConnectionsRequest { json, on_conflict, fernet_key, dry_run }) -> pb::ImportProfilesResponse {
            let blind = !who.has(Role::Secrets);
            let policy = conflict_policy(on_conflict)?;
            let key = parse_fernet_key(&fernet_key)?;
            let reports =
                docs::import_connections(&self.store, &json, key.as_ref(), policy, dry_run, blind)
                    .await?;
            Ok(Response::new(results(reports)))
        }

        fn export_provider_connections(self, who, pb::ExportProviderConnectionsRequest { secrets, fernet_key }) -> pb::ExportProviderConnectionsResponse {
            let key = parse_fernet_key(&fernet_key)?;
            let mode = secrets_out(secrets, key.as_ref())?;
            let action = crate::grpc::secrets_action(&mode);
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
}
