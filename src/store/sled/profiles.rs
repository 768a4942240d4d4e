//! The sled implementation of profiles: profile records by name, written through the
//! group-committed flush and published to watchers once durable.
use super::conversations::Op;
use super::SledStore;
use crate::domain::{LlmConfig, Profile, ProfileName, Target};
use crate::store::codec::ProfileRecord;
use crate::store::documents;
use crate::store::records::or_skip;
use crate::store::records::TreeId;
use crate::store::rules::{self, PutPlan};
use crate::store::{
    ConflictPolicy, ImportOutcome, ProfileChange, ProfileWatch, PutMode, PutOutcome, StoreError,
};
use std::collections::HashMap;
use std::sync::Arc;

impl SledStore {
    pub(crate) async fn get_profile(
        &self,
        name: &ProfileName,
    ) -> Result<Option<Profile>, StoreError> {
        Ok(self.read_profile(name.as_str())?.map(|r| r.profile))
    }

    pub(crate) async fn list_profiles(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Profile>, StoreError> {
        let range = match after {
            Some(a) => self.profiles.range::<&[u8], _>((
                std::ops::Bound::Excluded(a.as_bytes()),
                std::ops::Bound::Unbounded,
            )),
            None => self.profiles.iter(),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in range {
            if out.len() >= limit {
                break;
            }
            let (key, bytes) = item?;
            let read = self.decode_profile(&key, &bytes);
            out.extend(or_skip(read, "profile record").map(|r| r.profile));
        }
        Ok(out)
    }

    pub(crate) async fn put_profile(
        &self,
        name: ProfileName,
        llm: LlmConfig,
        mode: PutMode,
        expected_revision: Option<i64>,
    ) -> Result<(Profile, PutOutcome), StoreError> {
        self.durably(|| {
            let old = self.read_profile(name.as_str())?.map(|r| r.profile);
            self.check_profile_connection(old.as_ref(), &llm)?;
            match rules::plan_put(old, name, llm, mode, expected_revision)? {
                PutPlan::Unchanged(old) => self.unchanged((old, PutOutcome::Unchanged)),
                PutPlan::Write(profile, outcome) => {
                    let record = ProfileRecord {
                        seq: self.next_seq()?,
                        profile,
                    };
                    self.write_profile(&record)?;
                    let change = ProfileChange::Put {
                        seq: record.seq,
                        profile: Arc::new(record.profile.clone()),
                    };
                    self.changed([change], (record.profile, outcome))
                }
            }
        })
        .await
    }

    pub(crate) async fn delete_profile(
        &self,
        name: &ProfileName,
        expected_revision: Option<i64>,
        allow_missing: bool,
        force: bool,
    ) -> Result<Option<Profile>, StoreError> {
        self.durably(|| {
            let found = match self.read_profile(name.as_str()) {
                // A record that does not decode is not kept forever: force deletes its bytes.
                Err(StoreError::Corrupt { .. }) if force => Some(rules::damaged_placeholder(name)),
                Err(e) => return Err(e),
                Ok(None) if allow_missing => None,
                Ok(None) => return Err(StoreError::not_found("profile", name)),
                Ok(Some(record)) => {
                    rules::check_revision(&record.profile, expected_revision)?;
                    rules::check_unbound(name, &self.conversations_bound_to(name, 6)?, force)?;
                    let target = Target::Profile(name.to_string());
                    documents::check_unreferenced(&target, &self.referrers(&target)?, force)?;
                    Some(record.profile)
                }
            };
            match found {
                // Nothing to delete: still answer only once every earlier write is durable.
                None => self.unchanged(None),
                Some(profile) => {
                    // With force, bindings stay: they resolve again if the name is re-created.
                    self.profiles.remove(name.as_str().as_bytes())?;
                    let change = ProfileChange::Delete {
                        seq: self.next_seq()?,
                        name: name.clone(),
                        revision: profile.revision,
                    };
                    self.changed([change], Some(profile))
                }
            }
        })
        .await
    }

    pub(crate) async fn rename_profile(
        &self,
        from: &ProfileName,
        to: &ProfileName,
    ) -> Result<Profile, StoreError> {
        self.durably(|| {
            let old = self
                .read_profile(from.as_str())?
                .ok_or_else(|| StoreError::not_found("profile", from))?
                .profile;
            if from == to {
                return self.unchanged(old);
            }
            if self.profiles.contains_key(to.as_str().as_bytes())? {
                return Err(StoreError::AlreadyExists {
                    kind: "profile",
                    name: to.to_string(),
                });
            }
            let delete_seq = self.next_seq()?;
            let record = ProfileRecord {
                seq: self.next_seq()?,
                profile: rules::renamed(&old, to),
            };
            // Conversations bound to the old name follow it, in the same transaction.
            let mut ops = vec![
                Op::Del(TreeId::Profiles, from.as_str().as_bytes().to_vec()),
                Op::Put(
                    TreeId::Profiles,
                    to.as_str().as_bytes().to_vec(),
                    self.encode_profile(&record)?,
                ),
            ];
            let now = record.profile.update_time;
            for id in self.conversations_bound_to(from, usize::MAX)? {
                let Some(before) = self.read_conversation(&id)? else {
                    continue;
                };
                let c = rules::rebound(before.clone(), from, to, now);
                ops.push(Op::Put(
                    TreeId::Conversations,
                    id.as_bytes().to_vec(),
                    self.encode_conversation(&c)?,
                ));
                Self::binding_ops(Some(&before), Some(&c), &mut ops);
            }
            // So do the documents that reference it.
            self.repoint_ops(
                &Target::Profile(from.to_string()),
                to.as_str(),
                now,
                &mut ops,
            )?;
            self.apply(&ops)?;
            let changes = [
                ProfileChange::Delete {
                    seq: delete_seq,
                    name: from.clone(),
                    revision: old.revision,
                },
                ProfileChange::Put {
                    seq: record.seq,
                    profile: Arc::new(record.profile.clone()),
                },
            ];
            self.changed(changes, record.profile)
        })
        .await
    }

    pub(crate) async fn import_profiles(
        &self,
        items: Vec<(ProfileName, LlmConfig)>,
        policy: ConflictPolicy,
        dry_run: bool,
    ) -> Result<Vec<ImportOutcome>, StoreError> {
        self.durably(|| {
            let mut stored = HashMap::new();
            for (name, _) in &items {
                if let Some(r) = self.read_profile(name.as_str())? {
                    stored.insert(name.clone(), r.profile);
                }
            }
            let (outcomes, writes) = rules::plan_import(items, policy, stored);
            if dry_run || writes.is_empty() {
                self.unchanged(outcomes)
            } else {
                let mut batch = sled::Batch::default();
                let mut changes = Vec::with_capacity(writes.len());
                for profile in writes {
                    let record = ProfileRecord {
                        seq: self.next_seq()?,
                        profile,
                    };
                    let bytes = self.encode_profile(&record)?;
                    batch.insert(record.profile.name.as_str().as_bytes(), bytes);
                    changes.push(ProfileChange::Put {
                        seq: record.seq,
                        profile: Arc::new(record.profile),
                    });
                }
                self.profiles.apply_batch(batch)?;
                self.changed(changes, outcomes)
            }
        })
        .await
    }

    pub(crate) async fn watch_profiles(&self, snapshot: bool) -> Result<ProfileWatch, StoreError> {
        let changes = self.changes.subscribe();
        let mut out = Vec::new();
        if snapshot {
            for item in self.profiles.iter() {
                let (key, bytes) = item?;
                let read = self.decode_profile(&key, &bytes);
                out.extend(or_skip(read, "profile record").map(|r| (r.seq, r.profile)));
            }
        }
        Ok(ProfileWatch {
            snapshot: out,
            covered: 0,
            changes,
        })
    }

    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}
