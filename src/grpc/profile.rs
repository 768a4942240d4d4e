//! profileregistry.v1.ProfileService: thin handlers over the [`Store`].

use tonic::{Response, Status};

use super::convert::{masked_profile_to_pb, profile_from_pb, profile_to_pb};
use super::profile_watch::{forward_changes, EventStream};
use super::{conflict_policy, page_token, parse_fernet_key, secrets_out};
use crate::app::audit_secret_access;
use crate::app::transfer::{export_documents, import_documents};
use crate::auth::{principal, Role};
use crate::domain::{Profile, ProfileName, Writer};
use crate::error::{invalid_argument, invalid_field};
use crate::health::async_stream;
use crate::pb;
use crate::pb::profile_service_server::ProfileService;
use crate::store::{PutMode, StoreError};

/// The listing name page tokens of ListProfiles are bound to.
pub(super) const LISTING: &str = "profiles";

/// The ProfileService handlers.
pub type ProfileApi = super::Api;

fn parse_name(raw: &str, field: &str) -> Result<ProfileName, Status> {
    ProfileName::parse(raw, field).map_err(|v| invalid_argument(&[v]))
}

fn not_found(name: &ProfileName) -> Status {
    Status::from(StoreError::not_found("profile", name))
}

rpcs! {
    impl ProfileService for ProfileApi {
        type WatchProfilesStream = EventStream;

        fn create_profile(self, req: pb::CreateProfileRequest) -> pb::Profile {
            let who = principal(&req);
            let profile = req.into_inner().profile;
            let (name, llm) =
                profile_from_pb(profile, &self.limits).map_err(|v| invalid_argument(&v))?;
            let (p, _) = self
                .store
                .put_profile(name, llm, PutMode::Create, None, &who.name)
                .await?;
            Ok(Response::new(masked_profile_to_pb(&p)))
        }

        fn get_profile(self, who, pb::GetProfileRequest { name, reveal_secrets, resolve_connection, revision }) -> pb::Profile {
            let name = parse_name(&name, "name")?;
            let revision = revision.filter(|r| *r != 0);
            if revision.is_none() && !reveal_secrets && !resolve_connection {
                // The hot path: the current profile, masked, built from the store's shared copy.
                let p = self.store.get_profile_shared(&name).await?;
                let p = p.ok_or_else(|| not_found(&name))?;
                return Ok(Response::new(masked_profile_to_pb(&p)));
            }
            let mut p = match revision {
                None => self.store.get_profile(&name).await?,
                Some(r) if r < 0 => return Err(invalid_field("revision", "must not be negative")),
                Some(r) => self.revision(&name, r).await?,
            }
            .ok_or_else(|| not_found(&name))?;
            if resolve_connection {
                let owner = format!("profile {:?}", name.as_str());
                p.llm = crate::app::documents::resolve_connection(&self.store, p.llm, &owner).await?;
            }
            if reveal_secrets {
                audit_secret_access(&who, "reveal secrets", name.as_str())?;
                Ok(Response::new(profile_to_pb(p)))
            } else {
                Ok(Response::new(profile_to_pb(p.masked())))
            }
        }

        fn list_profiles(self, pb::ListProfilesRequest { page_size, page_token }) -> pb::ListProfilesResponse {
            let size = self.limits.page_size(page_size)?;
            let after = page_token::decode(&self.limits.page_key, LISTING, &page_token)?;
            let mut page = self.store.list_profiles(after.as_deref(), size + 1).await?;
            let next_page_token =
                page_token::cut(&self.limits.page_key, LISTING, &mut page, size, |p| {
                    p.name.to_string()
                });
            let profiles = page.into_iter().map(|p| profile_to_pb(p.masked())).collect();
            Ok(Response::new(pb::ListProfilesResponse { profiles, next_page_token }))
        }

        fn update_profile(self, who, pb::UpdateProfileRequest { profile, allow_missing, expected_revision }) -> pb::Profile {
            super::check_expected_revision(expected_revision)?;
            let (name, mut llm) =
                profile_from_pb(profile, &self.limits).map_err(|v| invalid_argument(&v))?;
            llm.blind_if(!who.has(Role::Secrets));
            let mode = PutMode::of_update(allow_missing);
            let (p, _) = self
                .store
                .put_profile(name, llm, mode, expected_revision, &who.name)
                .await?;
            Ok(Response::new(masked_profile_to_pb(&p)))
        }

        fn delete_profile(self, who, pb::DeleteProfileRequest { name, expected_revision, allow_missing, force, purge }) -> pb::DeleteProfileResponse {
            let parsed = parse_name(&name, "name")?;
            if purge {
                who.require(Role::Admin, "purge a profile's history")?;
            }
            let deleted = self
                .store
                .delete_profile(
                    &parsed,
                    expected_revision,
                    allow_missing,
                    force,
                    purge,
                    &who.name,
                )
                .await?;
            if purge && deleted.is_some() {
                tracing::info!(target: "audit", who = %who.name, action = "delete with purge", resource = %name, "history purged");
            }
            if force && deleted.is_some() {
                // Forced deletes (of bound or damaged records) are audited.
                let damaged = deleted.as_ref().is_some_and(|p| p.revision == 0);
                super::audit_forced_delete(&who, &name, damaged);
            }
            Ok(Response::new(pb::DeleteProfileResponse {
                name,
                deleted: deleted.is_some(),
                revision: deleted.map_or(0, |p| p.revision),
            }))
        }

        fn rename_profile(self, req: pb::RenameProfileRequest) -> pb::Profile {
            let who = principal(&req);
            let pb::RenameProfileRequest { name, new_name } = req.into_inner();
            let (from, to) = match (
                ProfileName::parse(&name, "name"),
                ProfileName::parse(&new_name, "new_name"),
            ) {
                (Ok(f), Ok(t)) => (f, t),
                (f, t) => {
                    let v: Vec<_> = [f.err(), t.err()].into_iter().flatten().collect();
                    return Err(invalid_argument(&v));
                }
            };
            let p = self.store.rename_profile(&from, &to, &who.name).await?;
            Ok(Response::new(profile_to_pb(p.masked())))
        }

        fn validate_profile(self, req: pb::ValidateProfileRequest) -> pb::ValidateProfileResponse {
            let profile = req.into_inner().profile;
            let violations = profile_from_pb(profile, &self.limits)
                .err()
                .unwrap_or_default();
            Ok(Response::new(super::validation(violations)))
        }

        fn watch_profiles(self, pb::WatchProfilesRequest { send_initial, start_after_seq, send_bookmarks }) -> EventStream {
            let after =
                match (start_after_seq, send_initial) {
                    (0, _) => None,
                    (s, _) if s < 0 => {
                        return Err(invalid_field(
                            "start_after_seq",
                            "must be 0 or a seq (1 and up)",
                        ))
                    }
                    (_, true) => return Err(invalid_field(
                        "start_after_seq",
                        "resumes a watch, so it cannot go with send_initial (which starts one over)",
                    )),
                    (s, false) => Some(s.unsigned_abs()),
                };
            if *self.shutdown.borrow() {
                return Err(Status::unavailable("the server is shutting down"));
            }
            let watch = self.store.watch_profiles(send_initial, after).await?;
            let shutdown = self.shutdown.clone();
            let stream: EventStream = Box::pin(async_stream(move |tx| {
                forward_changes(watch, send_bookmarks, shutdown, tx)
            }));
            Ok(Response::new(stream))
        }

        fn import_profiles(self, who, pb::ImportProfilesRequest { documents, on_conflict, fernet_key, dry_run }) -> pb::ImportProfilesResponse {
            let by = Writer {
                name: &who.name,
                blind: !who.has(Role::Secrets),
            };
            let policy = conflict_policy(on_conflict)?;
            let key = parse_fernet_key(&fernet_key)?;
            let docs = documents.into_iter().map(|d| (d.name, d.json)).collect();
            let reports = import_documents(
                &self.store,
                docs,
                key.as_ref(),
                policy,
                dry_run,
                by,
                &self.limits,
            )
            .await?;
            Ok(Response::new(pb::ImportProfilesResponse {
                results: reports.into_iter().map(pb::ImportResult::from).collect(),
            }))
        }

        fn undelete_profile(self, req: pb::UndeleteProfileRequest) -> pb::Profile {
            let who = principal(&req);
            let name = parse_name(&req.into_inner().name, "name")?;
            let p = self.store.undelete_profile(&name, &who.name).await?;
            Ok(Response::new(profile_to_pb(p.masked())))
        }

        fn list_profile_revisions(self, pb::ListProfileRevisionsRequest { name, page_size, page_token }) -> pb::ListProfileRevisionsResponse {
            let name = parse_name(&name, "name")?;
            let size = self.limits.page_size(page_size)?;
            let listing = format!("revisions|{name}");
            let before = page_token::decode_number(&self.limits.page_key, &listing, &page_token)?;
            let mut page = self
                .store
                .list_profile_revisions(&name, before, size + 1)
                .await?
                .ok_or_else(|| not_found(&name))?;
            let next_page_token =
                page_token::cut(&self.limits.page_key, &listing, &mut page, size, |p| {
                    p.revision.to_string()
                });
            let revisions = page.into_iter().map(|p| profile_to_pb(p.masked())).collect();
            Ok(Response::new(pb::ListProfileRevisionsResponse { revisions, next_page_token }))
        }

        fn rollback_profile(self, who, pb::RollbackProfileRequest { name, revision, expected_revision }) -> pb::Profile {
            let name = parse_name(&name, "name")?;
            if revision < 1 {
                return Err(invalid_field("revision", "must be 1 or more"));
            }
            super::check_expected_revision(expected_revision)?;
            // The current revision first: the put below is conditional on it, so a profile deleted
            // and made again meanwhile is not overwritten with another one's configuration.
            let current = self
                .store
                .get_profile(&name)
                .await?
                .ok_or_else(|| not_found(&name))?;
            let mut old = self
                .revision(&name, revision)
                .await?
                .ok_or_else(|| not_found(&name))?;
            // The kept configuration as it was, secrets included; from a caller who may not read
            // secrets, never reported unchanged (that would tell whether the keys are equal).
            old.llm.blind_if(!who.has(Role::Secrets));
            let expected = expected_revision.or(Some(current.revision));
            let (p, _) = self
                .store
                .put_profile(name, old.llm, PutMode::Update, expected, &who.name)
                .await?;
            Ok(Response::new(masked_profile_to_pb(&p)))
        }

        fn export_profiles(self, who, pb::ExportProfilesRequest { names, secrets, fernet_key, page_size, page_token }) -> pb::ExportProfilesResponse {
            let key = parse_fernet_key(&fernet_key)?;
            let mode = secrets_out(secrets, key.as_ref())?;
            let names = names
                .iter()
                .enumerate()
                .map(|(i, n)| parse_name(n, &format!("names[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            let size = match page_size {
                0 => usize::MAX - 1,
                n => self.limits.page_size(n)?,
            };
            let after = page_token::decode(&self.limits.page_key, EXPORT_LISTING, &page_token)?;
            // Refused before anything is read or decrypted; audited once the export succeeded.
            let action = super::secrets_action(&mode);
            if let Some(action) = action {
                who.require(Role::Secrets, action)?;
            }
            let page = export_documents(&self.store, &names, &mode, after.as_deref(), size).await?;
            if let Some(action) = action {
                audit_secret_access(&who, action, &names_or_all(&names))?;
            }
            Ok(Response::new(pb::ExportProfilesResponse {
                documents: page
                    .documents
                    .into_iter()
                    .map(|(name, json)| pb::ProfileDocument { name, json })
                    .collect(),
                next_page_token: page
                    .more_after
                    .map(|a| page_token::encode(&self.limits.page_key, EXPORT_LISTING, &a))
                    .unwrap_or_default(),
            }))
        }
    }
}

impl ProfileApi {
    /// Revision `revision` of `name` (current or kept); NOT_FOUND naming the revision when the
    /// profile exists and the history does not keep it.
    async fn revision(&self, name: &ProfileName, revision: i64) -> Result<Option<Profile>, Status> {
        if let Some(p) = self.store.get_profile_revision(name, revision).await? {
            return Ok(Some(p));
        }
        match self.store.get_profile(name).await? {
            None => Ok(None),
            Some(current) => Err(Status::not_found(format!(
                "revision {revision} of profile \"{name}\" is not kept (it is at revision {}; \
                 ListProfileRevisions shows the kept ones)",
                current.revision
            ))),
        }
    }
}

fn names_or_all(names: &[ProfileName]) -> String {
    if names.is_empty() {
        "all profiles".to_owned()
    } else {
        names
            .iter()
            .map(ProfileName::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The listing name page tokens of ExportProfiles are bound to.
const EXPORT_LISTING: &str = "profile-export";
