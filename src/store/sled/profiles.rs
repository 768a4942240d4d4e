//! The sled implementation of profiles: profile records by name, written through the
//! group-committed flush and published to watchers once durable.
use super::changelog::{logged_delete, logged_put};
use super::ops::Op;
use super::together::Joinable;
use super::{stored_of, SledStore};
use crate::domain::{LlmConfig, Profile, ProfileName, Target, Timestamp};
use crate::store::codec::ProfileRecord;
use crate::store::documents;
use crate::store::records::TreeId;
use crate::store::records::{decode, encode, history_key, history_prefix, or_skip, Tombstone};
use crate::store::requests::{ProfileDelete, ProfileImport, ProfilePut, ProfileRename};
use crate::store::rules::{self, PutPlan};
use crate::store::{
    Change, ImportOutcome, ProfileChange, ProfileWatch, PutMode, PutOutcome, StoreError,
};
use std::sync::Arc;

/// A put of a profile (create, update), applied with the others waiting (see `together.rs`).
pub(super) struct Put {
    name: ProfileName,
    llm: LlmConfig,
    mode: PutMode,
    expected_revision: Option<i64>,
    by: String,
}

impl Joinable for Put {
    type Answer = (Arc<Profile>, PutOutcome);
    type Key = ProfileName;

    fn key(&self) -> ProfileName {
        self.name.clone()
    }

    fn plan(
        self,
        store: &SledStore,
        ops: &mut Vec<Op>,
    ) -> Result<(Option<Change>, Self::Answer), StoreError> {
        let Self {
            name,
            llm,
            mode,
            expected_revision,
            by,
        } = self;
        // Shared with the decoded copies, and the written profile with the change published:
        // a put copies no profile.
        let old = store.read_shared(name.as_str())?.map(|(_, p)| p);
        store.check_profile_connection(old.as_deref(), &llm)?;
        match rules::plan_put(old, name, llm, mode, expected_revision, &by)? {
            PutPlan::Unchanged(old) => Ok((None, (old, PutOutcome::Unchanged))),
            PutPlan::Write(profile, outcome) => {
                let mut record = ProfileRecord {
                    seq: store.next_seq()?,
                    profile,
                };
                store.profile_ops(&mut record, ops)?;
                let ProfileRecord { seq, profile } = record;
                let profile = Arc::new(profile);
                let change = ProfileChange::Put {
                    seq,
                    profile: Arc::clone(&profile),
                };
                Ok((Some(change.into()), (profile, outcome)))
            }
        }
    }
}

impl SledStore {
    pub(crate) async fn put_profile(
        &self,
        put: ProfilePut<'_>,
    ) -> Result<(Arc<Profile>, PutOutcome), StoreError> {
        let put = Put {
            name: put.name,
            llm: put.llm,
            mode: put.mode,
            expected_revision: put.expected_revision,
            by: put.by.to_owned(),
        };
        self.together(&self.puts, put).await
    }

    pub(crate) async fn get_profile(
        &self,
        name: &ProfileName,
    ) -> Result<Option<Profile>, StoreError> {
        Ok(self.read_profile(name.as_str())?.map(|r| r.profile))
    }

    pub(crate) async fn get_profile_shared(
        &self,
        name: &ProfileName,
    ) -> Result<Option<Arc<Profile>>, StoreError> {
        Ok(self.read_shared(name.as_str())?.map(|(_, p)| p))
    }

    pub(crate) async fn list_profiles(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Profile>, StoreError> {
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in self.profiles_after(after) {
            if out.len() >= limit {
                break;
            }
            let (key, bytes) = item?;
            let read = self.decode_current(&key, &bytes, false);
            out.extend(or_skip(read, "profile record").map(|(_, p)| Arc::unwrap_or_clone(p)));
        }
        Ok(out)
    }

    /// The current profiles in name order, after the name `after` when given.
    fn profiles_after(&self, after: Option<&str>) -> sled::Iter {
        match after {
            Some(a) => self.profiles.range::<&[u8], _>((
                std::ops::Bound::Excluded(a.as_bytes()),
                std::ops::Bound::Unbounded,
            )),
            None => self.profiles.iter(),
        }
    }

    /// Up to `limit` ready responses (see [`Self::ready_profile`]) of the current profiles in name
    /// order after `after`, with their names: the kept ones taken, the others made and not kept (a
    /// listing does not push the profiles read one by one out of the map); `None` before
    /// [`Self::answer_with`]. A record that does not decode fails the whole page (the handler's
    /// listing skips it and says so).
    pub(crate) fn ready_profiles(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<(String, bytes::Bytes)>>, StoreError> {
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in self.profiles_after(after).take(limit) {
            let (key, stored) = item?;
            let decode = |b: &[u8]| self.decode_profile(&key, b);
            let Some(ready) = self.decoded.ready(&key, &stored, false, decode)? else {
                return Ok(None);
            };
            let name = String::from_utf8(key.to_vec())
                .map_err(|_| StoreError::Storage("a profile name that is not UTF-8".into()))?;
            out.push((name, ready));
        }
        Ok(Some(out))
    }

    pub(crate) async fn delete_profile(
        &self,
        delete: ProfileDelete<'_>,
    ) -> Result<Option<Profile>, StoreError> {
        let name = delete.name;
        self.durably(|| {
            let mut keep = None;
            let found = match self.read_profile(name.as_str()) {
                // A record that does not decode is not kept forever: force deletes its bytes.
                Err(StoreError::Corrupt { .. }) if delete.force => {
                    Some(rules::damaged_placeholder(name))
                }
                Err(e) => return Err(e),
                // A purge of a profile deleted earlier destroys the history it left.
                Ok(None)
                    if delete.purge && self.deleted.contains_key(name.as_str().as_bytes())? =>
                {
                    let last = self.deleted_revision(name)?;
                    let mut ops = Vec::new();
                    self.purge_ops(name.as_str(), &mut ops)?;
                    self.forget_carried(name.as_str(), &mut ops)?;
                    self.apply(&ops)?;
                    return self.changed(std::iter::empty::<Change>(), last);
                }
                Ok(None) if delete.allow_missing => None,
                Ok(None) => return Err(StoreError::not_found("profile", name)),
                Ok(Some(mut record)) => {
                    rules::check_revision(&record.profile, delete.expected_revision)?;
                    rules::check_unbound(
                        name,
                        &self.conversations_bound_to(name, 6)?,
                        delete.force,
                    )?;
                    let target = Target::Profile(name.to_string());
                    documents::check_unreferenced(
                        &target,
                        &self.referrers(&target)?,
                        delete.force,
                    )?;
                    // A record written before the history was kept goes into it, so that there
                    // is one to bring back.
                    let key = history_key(name.as_str(), record.profile.revision);
                    if !delete.purge && !self.history.contains_key(&key)? {
                        keep = Some(Op::Put(
                            TreeId::History,
                            key,
                            self.encode_profile(&mut record)?,
                        ));
                    }
                    Some(record.profile)
                }
            };
            match found {
                // Nothing to delete: still answer only once every earlier write is durable.
                None => self.unchanged(None),
                Some(profile) => {
                    // With force, bindings stay: they resolve again if the name is re-created.
                    // The history stays for an undelete, unless purged.
                    let mut ops =
                        vec![Op::Del(TreeId::Profiles, name.as_str().as_bytes().to_vec())];
                    ops.extend(keep);
                    if delete.purge {
                        self.purge_ops(name.as_str(), &mut ops)?;
                        self.forget_carried(name.as_str(), &mut ops)?;
                    } else {
                        let tomb = Tombstone {
                            revision: profile.revision,
                            delete_time: Timestamp::now(),
                            delete_principal: delete.by.to_owned(),
                        };
                        let key = name.as_str().as_bytes().to_vec();
                        ops.push(Op::Put(TreeId::Deleted, key, encode(&tomb)?));
                    }
                    let seq = self.next_seq()?;
                    ops.push(logged_delete(seq, name, profile.revision));
                    self.apply(&ops)?;
                    let change = ProfileChange::Delete {
                        seq,
                        name: name.clone(),
                        revision: profile.revision,
                    };
                    self.changed([change], Some(profile))
                }
            }
        })
        .await
    }

    pub(crate) async fn rename_profile(&self, r: ProfileRename<'_>) -> Result<Profile, StoreError> {
        let ProfileRename { from, to, by } = r;
        self.durably(|| {
            let old = self
                .read_profile(from.as_str())?
                .ok_or_else(|| StoreError::not_found("profile", from))?
                .profile;
            if from == to {
                return self.unchanged(old);
            }
            if self.profiles.contains_key(to.as_str().as_bytes())? {
                return Err(rules::name_taken(to));
            }
            let delete_seq = self.next_seq()?;
            let mut record = ProfileRecord {
                seq: self.next_seq()?,
                profile: rules::renamed(&old, to, by),
            };
            // Conversations bound to the old name follow it, in the same transaction; so does
            // its history, sealed again under the new name.
            let mut ops = vec![
                Op::Del(TreeId::Profiles, from.as_str().as_bytes().to_vec()),
                logged_delete(delete_seq, from, old.revision),
            ];
            self.purge_ops(to.as_str(), &mut ops)?;
            let oldest_kept = record.profile.revision - self.history_revisions + 1;
            for item in self.history.scan_prefix(history_prefix(from.as_str())) {
                let (key, bytes) = item?;
                self.drop_revision(&key, &bytes, &mut ops)?;
                let Some(mut kept) =
                    or_skip(self.codec.decode_revision(&key, &bytes), "kept revision")
                else {
                    continue;
                };
                if kept.profile.revision >= oldest_kept {
                    kept.profile.name = to.clone();
                    let key = history_key(to.as_str(), kept.profile.revision);
                    ops.push(Op::Put(
                        TreeId::History,
                        key,
                        self.encode_profile(&mut kept)?,
                    ));
                }
            }
            self.profile_ops(&mut record, &mut ops)?;
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
        import: ProfileImport<'_>,
    ) -> Result<Vec<ImportOutcome>, StoreError> {
        self.durably(|| {
            let stored = stored_of(&import.items, |name| {
                Ok(self.read_profile(name.as_str())?.map(|r| r.profile))
            })?;
            let (outcomes, writes) =
                rules::plan_import(import.items, import.policy, stored, import.by);
            if import.dry_run || writes.is_empty() {
                self.unchanged(outcomes)
            } else {
                let mut ops = Vec::with_capacity(writes.len() * 2);
                let mut changes = Vec::with_capacity(writes.len());
                for profile in writes {
                    let mut record = ProfileRecord {
                        seq: self.next_seq()?,
                        profile,
                    };
                    self.profile_ops(&mut record, &mut ops)?;
                    changes.push(ProfileChange::Put {
                        seq: record.seq,
                        profile: Arc::new(record.profile),
                    });
                }
                self.apply(&ops)?;
                self.changed(changes, outcomes)
            }
        })
        .await
    }

    pub(crate) async fn watch_profiles(
        &self,
        snapshot: bool,
        after: Option<u64>,
    ) -> Result<ProfileWatch, StoreError> {
        if let Some(after) = after {
            return self.resume_watch(after);
        }
        let changes = self.changes.subscribe();
        let start = self.published_seq();
        let mut out = Vec::new();
        if snapshot {
            for item in self.profiles.iter() {
                let (key, bytes) = item?;
                let read = self.decode_current(&key, &bytes, false);
                out.extend(
                    or_skip(read, "profile record").map(|(seq, p)| (seq, Arc::unwrap_or_clone(p))),
                );
            }
        }
        // A live watch begins after `start`: a change published by then is not sent, even when its
        // broadcast reaches this receiver. A snapshot is deduplicated by name instead.
        let covered = if snapshot { 0 } else { start + 1 };
        Ok(ProfileWatch {
            snapshot: out,
            replay: Vec::new(),
            covered,
            start,
            changes,
        })
    }

    /// Revision `revision` of profile `name`, when it is current or kept.
    pub(crate) async fn get_profile_revision(
        &self,
        name: &ProfileName,
        revision: i64,
    ) -> Result<Option<Profile>, StoreError> {
        let key = history_key(name.as_str(), revision);
        if let Some(bytes) = self.history.get(&key)? {
            return Ok(Some(self.codec.decode_revision(&key, &bytes)?.profile));
        }
        // A profile written before the history was kept has its current revision only.
        let current = self.read_profile(name.as_str())?.map(|r| r.profile);
        Ok(current.filter(|p| p.revision == revision))
    }

    /// Up to `limit` revisions of profile `name`, newest first, below `before` when given; `None`
    /// when there is no such profile.
    pub(crate) async fn list_profile_revisions(
        &self,
        name: &ProfileName,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Option<Vec<Profile>>, StoreError> {
        // A deleted profile lists its kept history from its last revision.
        let current = match self.read_profile(name.as_str())?.map(|r| r.profile) {
            Some(p) => p,
            None => match self.deleted_revision(name)? {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        let below = before.unwrap_or(i64::MAX);
        let mut out = Vec::with_capacity(limit.min(64));
        if current.revision < below {
            out.push(current.clone());
        }
        for item in self
            .history
            .scan_prefix(history_prefix(name.as_str()))
            .rev()
        {
            if out.len() >= limit {
                break;
            }
            let (key, bytes) = item?;
            let read = self.codec.decode_revision(&key, &bytes);
            if let Some(kept) = or_skip(read, "kept revision") {
                let r = kept.profile.revision;
                if r < below && r < current.revision {
                    out.push(kept.profile);
                }
            }
        }
        out.truncate(limit);
        Ok(Some(out))
    }

    /// Brings back a deleted profile whose history is kept: its last revision, as the next one.
    pub(crate) async fn undelete_profile(
        &self,
        name: &ProfileName,
        by: &str,
    ) -> Result<Profile, StoreError> {
        self.durably(|| {
            if self.profiles.contains_key(name.as_str().as_bytes())? {
                return Err(rules::name_taken(name));
            }
            let last = self.deleted_revision(name)?;
            let profile = rules::undeleted(last.ok_or_else(|| rules::not_deleted(name))?, by);
            self.check_profile_connection(None, &profile.llm)?;
            let mut record = ProfileRecord {
                seq: self.next_seq()?,
                profile,
            };
            let mut ops = vec![Op::Del(TreeId::Deleted, name.as_str().as_bytes().to_vec())];
            self.profile_ops(&mut record, &mut ops)?;
            self.apply(&ops)?;
            let change = ProfileChange::Put {
                seq: record.seq,
                profile: Arc::new(record.profile.clone()),
            };
            self.changed([change], record.profile)
        })
        .await
    }

    /// The last kept revision of a deleted profile `name`, when its history is kept.
    fn deleted_revision(&self, name: &ProfileName) -> Result<Option<Profile>, StoreError> {
        if !self.deleted.contains_key(name.as_str().as_bytes())? {
            return Ok(None);
        }
        let prefix = history_prefix(name.as_str());
        let Some(item) = self.history.scan_prefix(prefix).next_back() else {
            return Ok(None);
        };
        let (key, bytes) = item?;
        Ok(Some(self.codec.decode_revision(&key, &bytes)?.profile))
    }

    /// Drops the kept history of up to `limit` profiles deleted before `cutoff`; returns how many.
    pub(crate) async fn purge_deleted(
        &self,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let expired = |key: &[u8], bytes: &[u8]| {
            decode::<Tombstone>(TreeId::Deleted, key, bytes)
                .map_or(true, |t| t.delete_time < cutoff)
        };
        // Found without the write lock, so that writers wait only for the purge itself.
        let mut names = Vec::new();
        for item in self.deleted.iter() {
            let (key, bytes) = item?;
            if expired(&key, &bytes) {
                names.push(key);
                if names.len() >= limit {
                    break;
                }
            }
        }
        if names.is_empty() {
            return Ok(0);
        }
        self.durably(|| {
            let mut ops = Vec::new();
            let mut purged = 0;
            for key in &names {
                // Still deleted, and still expired: an undelete or a new delete may have come.
                if let Some(bytes) = self.deleted.get(key)? {
                    if expired(key, &bytes) {
                        self.purge_ops(&String::from_utf8_lossy(key), &mut ops)?;
                        purged += 1;
                    }
                }
            }
            if ops.is_empty() {
                return self.unchanged(0);
            }
            self.apply(&ops)?;
            self.changed(std::iter::empty::<Change>(), purged)
        })
        .await
    }

    /// The ops that drop what a deleted profile `name` left: its tombstone and kept history.
    fn purge_ops(&self, name: &str, ops: &mut Vec<Op>) -> Result<(), StoreError> {
        if self.deleted.contains_key(name.as_bytes())? {
            ops.push(Op::Del(TreeId::Deleted, name.as_bytes().to_vec()));
        }
        // Not carried into the change log: what is purged is gone (a replay skips those puts;
        // the deletion that follows them brings a watcher to the same end).
        for item in self.history.scan_prefix(history_prefix(name)) {
            ops.push(Op::Del(TreeId::History, item?.0.to_vec()));
        }
        Ok(())
    }

    /// The ops that write `record` as the current profile and as a kept revision, and drop the
    /// revisions of its name that fall out of the history (or, for a new profile, all that a
    /// deleted one of that name left).
    pub(super) fn profile_ops(
        &self,
        record: &mut ProfileRecord,
        ops: &mut Vec<Op>,
    ) -> Result<(), StoreError> {
        let bytes = self.encode_profile(record)?;
        let name = record.profile.name.as_str();
        self.decoded
            .written(name.as_bytes(), &bytes, &record.profile);
        let revision = record.profile.revision;
        if revision == 1 {
            self.purge_ops(name, ops)?;
        }
        ops.push(Op::Put(
            TreeId::Profiles,
            name.as_bytes().to_vec(),
            bytes.clone(),
        ));
        ops.push(logged_put(record.seq, name, revision));
        ops.push(Op::Put(TreeId::History, history_key(name, revision), bytes));
        // Revisions sort by their big-endian bytes only while positive: 1 is the first.
        let oldest_kept = revision - self.history_revisions + 1;
        if oldest_kept > 1 {
            let range = history_key(name, 1)..history_key(name, oldest_kept);
            for item in self.history.range(range) {
                let (key, bytes) = item?;
                self.drop_revision(&key, &bytes, ops)?;
            }
        }
        Ok(())
    }

    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}
