//! The profiles of the PostgreSQL store: its profile methods (reads through the
//! profile cache, puts through the group commit of `puts`, deletes, renames with the conversations
//! bound to the name, imports, watches) and the helpers only it uses.
use std::collections::HashMap;
use std::sync::Arc;

use super::rows::Run;
use super::{limit, puts, rows, store_error, PgStore, Tx};
use crate::domain::{ConversationId, Profile, ProfileName, Target, Timestamp};
use crate::store::codec::ProfileRecord;
use crate::store::records::{history_key, or_skip, Tombstone};
use crate::store::requests::{ProfileDelete, ProfileImport, ProfilePut, ProfileRename};
use crate::store::rules;
use crate::store::{ImportOutcome, ProfileChange, PutOutcome, StoreError};

impl PgStore {
    pub(crate) async fn get_profile(
        &self,
        name: &ProfileName,
    ) -> Result<Option<Profile>, StoreError> {
        Ok(self
            .get_profile_shared(name)
            .await?
            .map(Arc::unwrap_or_clone))
    }

    pub(crate) async fn get_profile_shared(
        &self,
        name: &ProfileName,
    ) -> Result<Option<Arc<Profile>>, StoreError> {
        if let Some(p) = self.cache.get(name.as_str()) {
            return Ok(Some(p));
        }
        let generation = self.cache.generation();
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, record FROM profiles WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
        let Some((seq, bytes)) = row else {
            return Ok(None);
        };
        let profile = Arc::new(
            self.codec
                .decode_profile(name.as_str().as_bytes(), &bytes)?
                .profile,
        );
        self.cache
            .insert(generation, u64::try_from(seq).unwrap_or(0), &profile);
        Ok(Some(profile))
    }

    pub(crate) async fn list_profiles(
        &self,
        after: Option<&str>,
        limit_to: usize,
    ) -> Result<Vec<Profile>, StoreError> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT name, record FROM profiles WHERE $1::text IS NULL OR name > $1 ORDER BY name LIMIT $2",
        )
        .bind(after)
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for (name, bytes) in rows {
            let read = self.codec.decode_profile(name.as_bytes(), &bytes);
            out.extend(or_skip(read, "profile record").map(|r| r.profile));
        }
        Ok(out)
    }

    pub(crate) async fn put_profile(
        &self,
        put: ProfilePut<'_>,
    ) -> Result<(Arc<Profile>, PutOutcome), StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = puts::PutJob {
            name: put.name,
            llm: put.llm,
            mode: put.mode,
            expected_revision: put.expected_revision,
            by: put.by.to_owned(),
            reply,
        };
        let gone = || StoreError::Unavailable("the store is closing".into());
        self.puts.send(job).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    pub(crate) async fn delete_profile(
        &self,
        delete: ProfileDelete<'_>,
    ) -> Result<Option<Profile>, StoreError> {
        let name = delete.name;
        let mut tx = self.begin(true).await?;
        let read = match self.read_profile(&mut tx, name).await {
            // A record that does not decode is not kept forever: force deletes its row (the
            // history stays, as for any delete).
            Err(StoreError::Corrupt { .. }) if delete.force => {
                let placeholder = rules::damaged_placeholder(name);
                let change = self.remove_profile(&mut tx, &placeholder).await?;
                self.keep_or_purge(&mut tx, &placeholder, delete.purge, delete.by)
                    .await?;
                self.commit_profiles(tx, &[change]).await?;
                return Ok(Some(placeholder));
            }
            other => other?,
        };
        let Some(old) = read else {
            // A purge of a profile deleted earlier destroys the history it left.
            if delete.purge {
                if let Some(last) = self.deleted_revision(&mut tx, name).await? {
                    rows::purge_deleted_names(&mut tx, &[name.as_str()]).await?;
                    rows::forget_logged_records(&mut tx, name.as_str()).await?;
                    self.commit(tx).await?;
                    return Ok(Some(last));
                }
            }
            return rules::absent(delete.allow_missing, "profile", name);
        };
        rules::check_revision(&old, delete.expected_revision)?;
        let users = self.bound_to(&mut tx, name, 6).await?;
        rules::check_unbound(name, &users, delete.force)?;
        let target = Target::Profile(name.to_string());
        let referrers = self.referrers(&mut tx, &target).await?;
        crate::store::documents::check_unreferenced(&target, &referrers, delete.force)?;
        // A record written before the history was kept goes into it, so that there is one to
        // bring back.
        sqlx::query(
            "INSERT INTO profile_history (name, revision, seq, record) \
             SELECT name, revision, seq, record FROM profiles WHERE name = $1 \
             ON CONFLICT (name, revision) DO NOTHING",
        )
        .bind(name.as_str())
        .run(&mut *tx)
        .await?;
        let change = self.remove_profile(&mut tx, &old).await?;
        self.keep_or_purge(&mut tx, &old, delete.purge, delete.by)
            .await?;
        self.commit_profiles(tx, &[change]).await?;
        Ok(Some(old))
    }

    /// After the delete of `old`: its history stays for an undelete (a tombstone), unless `purge`.
    async fn keep_or_purge(
        &self,
        tx: &mut Tx,
        old: &Profile,
        purge: bool,
        by: &str,
    ) -> Result<(), StoreError> {
        let name = old.name.as_str();
        if purge {
            rows::purge_deleted_names(tx, &[name]).await?;
            return rows::forget_logged_records(tx, name).await;
        }
        let tomb = Tombstone {
            revision: old.revision,
            delete_time: Timestamp::now(),
            delete_principal: by.to_owned(),
        };
        rows::put_tombstone(tx, name, &tomb).await
    }

    /// Brings back a deleted profile whose history is kept: its last revision, as the next one.
    pub(crate) async fn undelete_profile(
        &self,
        name: &ProfileName,
        by: &str,
    ) -> Result<Profile, StoreError> {
        let mut tx = self.begin(true).await?;
        if self.read_profile(&mut tx, name).await?.is_some() {
            return Err(rules::name_taken(name));
        }
        let last = self.deleted_revision(&mut tx, name).await?;
        let profile = rules::undeleted(last.ok_or_else(|| rules::not_deleted(name))?, by);
        let added = crate::store::documents::added_connection(None, &profile.llm);
        super::documents::check_targets(&mut tx, "profile", &added).await?;
        sqlx::query("DELETE FROM deleted_profiles WHERE name = $1")
            .bind(name.as_str())
            .run(&mut *tx)
            .await?;
        let changes = self.write_profiles(&mut tx, vec![profile.clone()]).await?;
        self.commit_profiles(tx, &changes).await?;
        Ok(profile)
    }

    /// The last kept revision of a deleted profile `name`, when its history is kept.
    async fn deleted_revision(
        &self,
        tx: &mut Tx,
        name: &ProfileName,
    ) -> Result<Option<Profile>, StoreError> {
        let tomb: Option<i64> =
            sqlx::query_scalar("SELECT revision FROM deleted_profiles WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(store_error)?;
        if tomb.is_none() {
            return Ok(None);
        }
        // The newest kept revision, damaged or not (a damaged one is an error, not skipped).
        let row: Option<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT revision, record FROM profile_history WHERE name = $1 \
             ORDER BY revision DESC LIMIT 1",
        )
        .bind(name.as_str())
        .fetch_optional(&mut **tx)
        .await
        .map_err(store_error)?;
        row.map(|(revision, bytes)| {
            let key = history_key(name.as_str(), revision);
            Ok(self.codec.decode_revision(&key, &bytes)?.profile)
        })
        .transpose()
    }

    /// Drops the kept history of up to `limit` profiles deleted before `cutoff`; returns how many.
    pub(crate) async fn purge_deleted(
        &self,
        cutoff: Timestamp,
        limit_to: usize,
    ) -> Result<usize, StoreError> {
        let mut tx = self.begin(true).await?;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM deleted_profiles WHERE delete_seconds < $1 ORDER BY delete_seconds LIMIT $2",
        )
        .bind(cutoff.seconds)
        .bind(limit(limit_to))
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        if names.is_empty() {
            return Ok(0);
        }
        let listed: Vec<&str> = names.iter().map(String::as_str).collect();
        rows::purge_deleted_names(&mut tx, &listed).await?;
        self.commit(tx).await?;
        Ok(names.len())
    }

    pub(crate) async fn rename_profile(&self, r: ProfileRename<'_>) -> Result<Profile, StoreError> {
        let ProfileRename { from, to, by } = r;
        let mut tx = self.begin(true).await?;
        let old = self
            .read_profile(&mut tx, from)
            .await?
            .ok_or_else(|| StoreError::not_found("profile", from))?;
        if from == to {
            return Ok(old);
        }
        if self.read_profile(&mut tx, to).await?.is_some() {
            return Err(rules::name_taken(to));
        }
        let renamed = rules::renamed(&old, to, by);
        // Over what a deleted profile of the new name left.
        rows::purge_deleted_names(&mut tx, &[to.as_str()]).await?;
        // The kept revisions follow the name (sealed again under it), and leave the old one.
        let oldest_kept = renamed.revision - self.history_revisions + 1;
        for mut kept in self.revisions(&mut tx, from, oldest_kept, i64::MAX).await? {
            kept.name = to.clone();
            sqlx::query(
                "INSERT INTO profile_history (name, revision, seq, record) VALUES ($1, $2, 0, $3)",
            )
            .bind(to.as_str())
            .bind(kept.revision)
            .bind(self.encode(&kept)?)
            .run(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM profile_history WHERE name = $1")
            .bind(from.as_str())
            .run(&mut *tx)
            .await?;
        let mut changes = vec![self.remove_profile(&mut tx, &old).await?];
        changes.extend(self.write_profiles(&mut tx, vec![renamed.clone()]).await?);
        // Conversations bound to the old name follow it, in the same transaction.
        for id in self.bound_to(&mut tx, from, usize::MAX).await? {
            let Some(before) = self.read_conversation(&mut tx, &id, true).await? else {
                continue;
            };
            let c = rules::rebound(before, from, to, renamed.update_time);
            self.write_conversation(&mut tx, &c).await?;
        }
        // So do the documents that reference it.
        self.repoint(
            &mut tx,
            &Target::Profile(from.to_string()),
            to.as_str(),
            renamed.update_time,
        )
        .await?;
        self.commit_profiles(tx, &changes).await?;
        Ok(renamed)
    }

    pub(crate) async fn import_profiles(
        &self,
        import: ProfileImport<'_>,
    ) -> Result<Vec<ImportOutcome>, StoreError> {
        let mut tx = self.begin(!import.dry_run).await?;
        let names: Vec<&str> = import.items.iter().map(|(n, _)| n.as_str()).collect();
        let rows = rows::profile_records(&mut tx, &names).await?;
        let mut stored = HashMap::with_capacity(rows.len());
        for (name, bytes) in rows {
            let p = self.codec.decode_profile(name.as_bytes(), &bytes)?.profile;
            stored.insert(p.name.clone(), p);
        }
        let (outcomes, writes) = rules::plan_import(import.items, import.policy, stored, import.by);
        if import.dry_run || writes.is_empty() {
            return Ok(outcomes);
        }
        let changes = self.write_profiles(&mut tx, writes).await?;
        self.commit_profiles(tx, &changes).await?;
        Ok(outcomes)
    }

    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        // Every write is committed (and so durable) before it is acknowledged.
        Ok(())
    }

    /// From now on cached profiles get ready responses made by `build` (see
    /// [`Self::ready_profile`]).
    pub(crate) fn answer_with(&self, build: fn(&crate::domain::Profile) -> bytes::Bytes) {
        self.cache.answer_with(build);
    }

    /// The ready response of `name` when this replica's cache holds its current version (kept
    /// current by the change notifications, as every cached read is); `None` otherwise: the
    /// handler reads the database.
    pub(crate) fn ready_profile(&self, name: &str) -> Option<bytes::Bytes> {
        self.cache.ready(name)
    }
}

impl PgStore {
    async fn read_profile(
        &self,
        tx: &mut Tx,
        name: &ProfileName,
    ) -> Result<Option<Profile>, StoreError> {
        let row: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT record FROM profiles WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(store_error)?;
        row.map(|bytes| {
            self.codec
                .decode_profile(name.as_str().as_bytes(), &bytes)
                .map(|r| r.profile)
        })
        .transpose()
    }

    /// The stored bytes of a profile. Its change seq lives in the `seq` column, not in the record
    /// (so a put can take its seq in the same statement that writes it).
    /// Revision `revision` of profile `name`, when it is current or kept.
    pub(crate) async fn get_profile_revision(
        &self,
        name: &ProfileName,
        revision: i64,
    ) -> Result<Option<Profile>, StoreError> {
        let mut tx = self.begin(false).await?;
        let until = revision.saturating_add(1);
        if let Some(kept) = self.revisions(&mut tx, name, revision, until).await?.pop() {
            return Ok(Some(kept));
        }
        // A profile written before the history was kept has its current revision only.
        let current = self.read_profile(&mut tx, name).await?;
        Ok(current.filter(|p| p.revision == revision))
    }

    /// Up to `limit` revisions of profile `name`, newest first, below `before` when given; `None`
    /// when there is no such profile.
    pub(crate) async fn list_profile_revisions(
        &self,
        name: &ProfileName,
        before: Option<i64>,
        limit_to: usize,
    ) -> Result<Option<Vec<Profile>>, StoreError> {
        let mut tx = self.begin(false).await?;
        // A deleted profile lists its kept history from its last revision.
        let current = match self.read_profile(&mut tx, name).await? {
            Some(p) => p,
            None => match self.deleted_revision(&mut tx, name).await? {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        let below = before
            .unwrap_or(i64::MAX)
            .min(current.revision.saturating_add(1));
        let mut kept = self.revisions(&mut tx, name, 1, below).await?;
        kept.retain(|p| p.revision != current.revision);
        kept.reverse();
        let mut out = Vec::with_capacity(limit_to.min(kept.len() + 1));
        if current.revision < below {
            out.push(current);
        }
        out.extend(kept);
        out.truncate(limit_to);
        Ok(Some(out))
    }

    /// The readable kept revisions of `name` from `from` up to (not including) `until`, oldest
    /// first; damaged ones are passed over with a log line.
    async fn revisions(
        &self,
        tx: &mut Tx,
        name: &ProfileName,
        from: i64,
        until: i64,
    ) -> Result<Vec<Profile>, StoreError> {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT revision, record FROM profile_history \
             WHERE name = $1 AND revision >= $2 AND revision < $3 ORDER BY revision",
        )
        .bind(name.as_str())
        .bind(from)
        .bind(until)
        .fetch_all(&mut **tx)
        .await
        .map_err(store_error)?;
        Ok(rows
            .into_iter()
            .filter_map(|(revision, bytes)| {
                let key = history_key(name.as_str(), revision);
                or_skip(self.codec.decode_revision(&key, &bytes), "kept revision")
            })
            .map(|r| r.profile)
            .collect())
    }

    fn encode(&self, profile: &Profile) -> Result<Vec<u8>, StoreError> {
        self.codec.encode_profile(&mut ProfileRecord {
            seq: 0,
            profile: profile.clone(),
        })
    }

    /// Writes `profiles` (each at the next change seq) and their change rows, and notifies.
    async fn write_profiles(
        &self,
        tx: &mut Tx,
        profiles: Vec<Profile>,
    ) -> Result<Vec<ProfileChange>, StoreError> {
        let first = rows::take_seqs(tx, profiles.len()).await?;
        let records = profiles
            .iter()
            .map(|p| self.encode(p))
            .collect::<Result<Vec<_>, _>>()?;
        rows::put_profiles(tx, first, &profiles, &records, self.history_revisions).await?;
        let changes = (first..)
            .zip(profiles)
            .map(|(seq, p)| ProfileChange::Put {
                seq,
                profile: Arc::new(p),
            })
            .collect();
        Ok(changes)
    }

    /// Deletes a profile row and records the change.
    async fn remove_profile(
        &self,
        tx: &mut Tx,
        profile: &Profile,
    ) -> Result<ProfileChange, StoreError> {
        let seq = rows::take_seqs(tx, 1).await?;
        rows::delete_profile(tx, seq, profile).await?;
        Ok(ProfileChange::Delete {
            seq,
            name: profile.name.clone(),
            revision: profile.revision,
        })
    }

    /// Commits a transaction that changed profiles: notifies every replica (this one included) in
    /// the same transaction, and drops the names from this replica's cache before answering, so the
    /// caller reads its own write here at once.
    async fn commit_profiles(
        &self,
        mut tx: Tx,
        changes: &[ProfileChange],
    ) -> Result<(), StoreError> {
        let names: Vec<(&str, u64)> = changes
            .iter()
            .filter_map(|c| match c {
                ProfileChange::Put { profile, seq } => Some((profile.name.as_str(), *seq)),
                ProfileChange::Delete { name, seq, .. } => Some((name.as_str(), *seq)),
                ProfileChange::Missed { .. } => None,
            })
            .collect();
        let listed: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
        rows::notify_profiles(&mut tx, &listed).await?;
        let result = self.commit(tx).await;
        for (name, seq) in names {
            self.cache.invalidate(name, seq);
        }
        result
    }

    async fn bound_to(
        &self,
        tx: &mut Tx,
        name: &ProfileName,
        limit_to: usize,
    ) -> Result<Vec<ConversationId>, StoreError> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT conversation FROM bindings WHERE profile = $1 ORDER BY conversation LIMIT $2",
        )
        .bind(name.as_str())
        .bind(limit(limit_to))
        .fetch_all(&mut **tx)
        .await
        .map_err(store_error)?;
        Ok(ids
            .into_iter()
            .map(|u| ConversationId::from_bytes(u.into_bytes()))
            .collect())
    }
}
