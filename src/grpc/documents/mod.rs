//! profileregistry.v1.ProviderConnectionService, MetaProfileService and AgentProfileService: thin
//! handlers over the store's documents, with ProfileService's conventions (masks, revisions,
//! pagination, Validate, import and export of the SDK's files). One file a service; what the
//! services share (paging, delete, import and export of files, and the rpcs of a named kind, see
//! [`Named`]) is here.

use serde_json::{Map, Value};
use tonic::{Response, Status};

use super::{conflict_policy, page_token, validation};
use crate::app::documents as docs;
use crate::auth::Principal;
use crate::domain::{DocKind, Document, ProfileName, Violation};
use crate::error::{invalid_argument, invalid_field};
use crate::pb;
use crate::store::{DocPut, PutMode, StoreError};

/// A [`Named`] kind (meta-profiles, agent profiles) and the nine rpcs of its service, written
/// once: the invocation names the message, its service and kind, whether an update builds on the
/// stored document, the message's field in requests and the list response's, the conversions,
/// each rpc with its request, and what a Delete's `force` is.
macro_rules! named_rpcs {
    ($n:ty: $($service:ident)::+, $kind:expr, builds_on_stored $builds:expr, field $field:ident, listing $items:ident;
     to_pb $to_pb:expr, from_pb $from_pb:expr;
     $create:ident($create_req:ty), $get:ident($get_req:ty), $list:ident($list_req:ty) -> $list_resp:ident,
     $update:ident($update_req:ty), $delete:ident($delete_req:ty) force |$d:ident| $force:expr,
     $rename:ident($rename_req:ty), $validate:ident($validate_req:ty), $import:ident, $export:ident) => {
        impl Named for $n {
            const KIND: DocKind = $kind;
            const FIELD: &'static str = stringify!($field);
            const BUILDS_ON_STORED: bool = $builds;
            type Msg = Self;

            fn to_pb(doc: &Document) -> Result<Self, Status> {
                ($to_pb)(doc)
            }

            fn from_pb(
                msg: Option<Self>,
                old: Option<&Document>,
            ) -> Result<(String, Map<String, Value>), Vec<Violation>> {
                ($from_pb)(msg, old)
            }

            fn name_of(msg: &Self) -> &str {
                &msg.name
            }
        }

        rpcs! {
            impl $($service)::+ for DocumentApi {
                fn $create(self, req: $create_req) -> $n {
                    let msg = req.into_inner().$field;
                    self.put::<$n>(msg, PutMode::Create, None).await
                }

                fn $get(self, req: $get_req) -> $n {
                    self.read::<$n>(&req.into_inner().name).await
                }

                fn $list(self, req: $list_req) -> pb::$list_resp {
                    let r = req.into_inner();
                    let ($items, next_page_token) = self.list::<$n>(r.page_size, &r.page_token).await?;
                    Ok(Response::new(pb::$list_resp { $items, next_page_token }))
                }

                fn $update(self, req: $update_req) -> $n {
                    let r = req.into_inner();
                    let mode = PutMode::of_update(r.allow_missing);
                    self.put::<$n>(r.$field, mode, r.expected_revision).await
                }

                fn $delete(self, req: $delete_req) -> pb::DeleteDocumentResponse {
                    let who = crate::auth::principal(&req);
                    let r = req.into_inner();
                    let force = {
                        let $d = &r;
                        $force
                    };
                    let (revision, missing) = (r.expected_revision, r.allow_missing);
                    self.delete_named::<$n>(&who, r.name, revision, missing, force).await
                }

                fn $rename(self, req: $rename_req) -> $n {
                    let r = req.into_inner();
                    self.rename::<$n>(&r.name, &r.new_name).await
                }

                fn $validate(self, req: $validate_req) -> pb::ValidateProfileResponse {
                    Ok(super::validate::<$n>(req.into_inner().$field))
                }

                fn $import(self, req: pb::ImportDocumentsRequest) -> pb::ImportProfilesResponse {
                    self.import_files(<$n as Named>::KIND, req.into_inner()).await
                }

                fn $export(self, req: pb::ExportDocumentsRequest) -> pb::ExportDocumentsResponse {
                    self.export_files(<$n as Named>::KIND, req.into_inner().names).await
                }
            }
        }
    };
}

mod agent_profiles;
mod connections;
mod meta_profiles;

/// The handlers of the three document services.
pub type DocumentApi = super::Api;

/// A kind of document named by a profile-style name, with its message: meta-profiles and agent
/// profiles. Their Create, Get, List, Update, Rename and Validate are written once, over this.
trait Named {
    const KIND: DocKind;
    /// The message's field in Create, Update and Validate requests.
    const FIELD: &'static str;
    /// Whether [`Named::from_pb`] builds on the stored document (an update reads it first).
    const BUILDS_ON_STORED: bool;
    type Msg;
    /// The message of a stored document.
    fn to_pb(doc: &Document) -> Result<Self::Msg, Status>;
    /// The name and object of a message, given the stored document of that name (`None` when
    /// creating); or every violation.
    fn from_pb(
        msg: Option<Self::Msg>,
        old: Option<&Document>,
    ) -> Result<(String, Map<String, Value>), Vec<Violation>>;
    /// The name a message carries.
    fn name_of(msg: &Self::Msg) -> &str;
}

impl DocumentApi {
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
        let next = page_token::cut(&self.limits.page_key, listing, &mut page, size, |d| {
            d.name.clone()
        });
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
        who: &Principal,
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

    /// Puts a checked message of kind `N`: creating it, or updating it in `mode`.
    async fn put<N: Named>(
        &self,
        msg: Option<N::Msg>,
        mode: PutMode,
        expected_revision: Option<i64>,
    ) -> Result<Response<N::Msg>, Status> {
        super::check_expected_revision(expected_revision)?;
        let name = msg.as_ref().map(N::name_of).unwrap_or_default();
        // The stored record is read only when the kind builds on it, for a name that could be one.
        let old = match (
            mode,
            ProfileName::parse(name, &format!("{}.name", N::FIELD)),
        ) {
            _ if !N::BUILDS_ON_STORED => None,
            (PutMode::Create, _) | (_, Err(_)) => None,
            _ => self.store.get_document(N::KIND, name).await?,
        };
        let (name, body) = N::from_pb(msg, old.as_ref()).map_err(|v| invalid_argument(&v))?;
        let put = DocPut {
            kind: N::KIND,
            name,
            body,
            mode,
            expected_revision,
            blind: false,
        };
        let (doc, _) = self.store.put_document(put).await?;
        Ok(Response::new(N::to_pb(&doc)?))
    }

    async fn read<N: Named>(&self, name: &str) -> Result<Response<N::Msg>, Status> {
        name_rule(name, "name")?;
        Ok(Response::new(N::to_pb(&self.get(N::KIND, name).await?)?))
    }

    async fn list<N: Named>(
        &self,
        page_size: i32,
        token: &str,
    ) -> Result<(Vec<N::Msg>, String), Status> {
        let (page, next) = self.page(N::KIND, page_size, token).await?;
        let page = page.iter().map(N::to_pb).collect::<Result<_, _>>()?;
        Ok((page, next))
    }

    async fn delete_named<N: Named>(
        &self,
        who: &Principal,
        name: String,
        expected_revision: Option<i64>,
        allow_missing: bool,
        force: bool,
    ) -> Result<Response<pb::DeleteDocumentResponse>, Status> {
        name_rule(&name, "name")?;
        self.delete(who, N::KIND, name, expected_revision, allow_missing, force)
            .await
    }

    async fn rename<N: Named>(
        &self,
        name: &str,
        new_name: &str,
    ) -> Result<Response<N::Msg>, Status> {
        name_rule(name, "name")?;
        name_rule(new_name, "new_name")?;
        let doc = self.store.rename_document(N::KIND, name, new_name).await?;
        Ok(Response::new(N::to_pb(&doc)?))
    }
}

/// A stored document's revision and times, as its message carries them.
fn stamps(
    doc: &Document,
) -> (
    i64,
    Option<prost_types::Timestamp>,
    Option<prost_types::Timestamp>,
) {
    let time = |t| Some(crate::grpc::convert::timestamp_to_pb(t));
    (doc.revision, time(doc.create_time), time(doc.update_time))
}

/// The answer of Validate for a message of kind `N`.
fn validate<N: Named>(msg: Option<N::Msg>) -> Response<pb::ValidateProfileResponse> {
    let violations = N::from_pb(msg, None).err().unwrap_or_default();
    Response::new(validation(violations))
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
