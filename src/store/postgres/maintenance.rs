//! Whole-store copies for PostgreSQL: the same [`Snapshot`] of raw records as sled's (so backups,
//! restores and `migrate-store` move records between backends byte for byte, secrets still sealed).
use std::time::Duration;

use super::rows::Run;
use super::{store_error, uuid, PgStore};
use crate::domain::{Conversation, ConversationId, Event};
use crate::store::codec::{DocumentRecord, ProfileRecord};
use crate::store::records::Tombstone;
use crate::store::records::{
    binding_key, decode, document_key, event_key, history_key, place, split_document_key,
    split_history_key,
};
use crate::store::RotationReport;
use crate::store::{RawRecord, Snapshot, StoreError, TreeId, RESTORE_SEQ_GAP};

fn id_of(bytes: &[u8]) -> Option<ConversationId> {
    Some(ConversationId::from_bytes(bytes.try_into().ok()?))
}

fn bad_key(tree: TreeId, key: &[u8]) -> StoreError {
    StoreError::Corrupt {
        key: place(tree, key),
        reason: "not a key of this tree".into(),
    }
}

/// Every row `sql` selects, in the snapshot's transaction.
async fn all<O>(tx: &mut super::Tx, sql: &'static str) -> Result<Vec<O>, StoreError>
where
    O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sql)
        .fetch_all(&mut **tx)
        .await
        .map_err(store_error)
}

/// A record with the number `field` set: PostgreSQL keeps a conversation's `event_count` and a
/// profile's `seq` in their own columns (appends and puts do not rewrite them in the record), sled
/// inside the record.
fn with_number(record: &[u8], field: &str, n: i64) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(record) {
        Ok(mut map) => {
            map.insert(field.into(), n.into());
            serde_json::to_vec(&map).unwrap_or_else(|_| record.to_vec())
        }
        Err(_) => record.to_vec(),
    }
}

impl PgStore {
    /// Re-encrypts every secret (profiles, the change log, inline LLMs of conversations, the key
    /// check value) with the first key, in one transaction under the write lock: servers may keep
    /// serving (writers wait). Records whose secrets do not open are left as they are and reported.
    pub async fn rotate_keys(&self) -> Result<RotationReport, StoreError> {
        let mut tx = self.begin(true).await?;
        let mut report = RotationReport {
            key_id: self.codec.cipher().sealing_key_id().to_owned(),
            ..RotationReport::default()
        };
        // Every table whose records hold secrets: its tree, and (table, key column, its type).
        for (tree, table) in [
            (TreeId::Profiles, ("profiles", "name", "text")),
            (TreeId::Conversations, ("conversations", "id", "uuid")),
            (
                TreeId::History,
                ("profile_history", "(name || '/' || revision::text)", "text"),
            ),
            (
                TreeId::Documents,
                ("documents", "(kind || '/' || name)", "text"),
            ),
        ] {
            self.reseal_table(&mut tx, tree, table, &mut report).await?;
        }
        // The change log holds the same records for a while (other replicas read them); it is not
        // counted.
        let log = ("profile_changes", "seq", "bigint");
        let mut uncounted = RotationReport::default();
        self.reseal_table(&mut tx, TreeId::Profiles, log, &mut uncounted)
            .await?;
        sqlx::query("UPDATE registry_meta SET value = $1 WHERE key = 'key_check'")
            .bind(
                self.codec
                    .cipher()
                    .seal("profile-registry", super::KEY_CHECK_PLACE),
            )
            .run(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(report)
    }

    /// Re-seals the records of one table of `tree` (`(table, key column, its type)`) with the first
    /// key. Records whose secrets do not open are reported and left as they are.
    async fn reseal_table(
        &self,
        tx: &mut super::Tx,
        tree: TreeId,
        (table, key, key_type): (&str, &str, &str),
        report: &mut RotationReport,
    ) -> Result<(), StoreError> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(&format!(
            "SELECT {key}::text, record FROM {table} WHERE length(record) > 0 ORDER BY {key}"
        ))
        .fetch_all(&mut **tx)
        .await
        .map_err(store_error)?;
        let update = format!("UPDATE {table} SET record = $2 WHERE {key} = $1::{key_type}");
        for (k, bytes) in rows {
            let place = format!("{table}/{k}");
            if let Some(sealed) = self.codec.reseal_stored(tree, &place, &bytes, report) {
                sqlx::query(&update)
                    .bind(&k)
                    .bind(sealed)
                    .run(&mut **tx)
                    .await?;
            }
        }
        Ok(())
    }

    /// Every record in one consistent read (REPEATABLE READ); writers are not held off.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .run(&mut *tx)
            .await?;
        let next_seq = super::rows::next_seq(&mut *tx).await?;
        let mut records = Vec::new();
        let profiles: Vec<(String, i64, Vec<u8>)> = all(
            &mut tx,
            "SELECT name, seq, record FROM profiles ORDER BY name",
        )
        .await?;
        records.extend(profiles.into_iter().map(|(name, seq, value)| RawRecord {
            tree: TreeId::Profiles,
            key: name.into_bytes(),
            value: with_number(&value, "seq", seq),
        }));
        let conversations: Vec<(uuid::Uuid, Vec<u8>, i64)> = all(
            &mut tx,
            "SELECT id, record, event_count FROM conversations ORDER BY id",
        )
        .await?;
        records.extend(
            conversations
                .into_iter()
                .map(|(id, value, count)| RawRecord {
                    tree: TreeId::Conversations,
                    key: id.as_bytes().to_vec(),
                    value: with_number(&value, "event_count", count),
                }),
        );
        let bindings: Vec<(String, uuid::Uuid)> = all(
            &mut tx,
            "SELECT profile, conversation FROM bindings ORDER BY profile, conversation",
        )
        .await?;
        for (profile, id) in bindings {
            let id = ConversationId::from_bytes(id.into_bytes());
            let Ok(name) = crate::domain::ProfileName::parse(&profile, "profile") else {
                continue;
            };
            records.push(RawRecord {
                tree: TreeId::Bindings,
                key: binding_key(&name, &id),
                value: Vec::new(),
            });
        }
        let events: Vec<(uuid::Uuid, i64, Vec<u8>)> = all(
            &mut tx,
            "SELECT conversation, seq, record FROM events ORDER BY conversation, seq",
        )
        .await?;
        records.extend(events.into_iter().map(|(id, seq, value)| RawRecord {
            tree: TreeId::Events,
            key: event_key(&ConversationId::from_bytes(id.into_bytes()), seq),
            value,
        }));
        let documents: Vec<(String, String, i64, Vec<u8>)> = all(
            &mut tx,
            "SELECT kind, name, seq, record FROM documents ORDER BY kind, name",
        )
        .await?;
        for (kind, name, seq, value) in documents {
            let Some(kind) = crate::domain::DocKind::parse(&kind) else {
                continue;
            };
            records.push(RawRecord {
                tree: TreeId::Documents,
                key: document_key(kind, &name),
                value: with_number(&value, "seq", seq),
            });
        }
        let history: Vec<(String, i64, i64, Vec<u8>)> = all(
            &mut tx,
            "SELECT name, revision, seq, record FROM profile_history ORDER BY name, revision",
        )
        .await?;
        records.extend(
            history
                .into_iter()
                .map(|(name, revision, seq, value)| RawRecord {
                    tree: TreeId::History,
                    key: history_key(&name, revision),
                    value: with_number(&value, "seq", seq),
                }),
        );
        let deleted: Vec<(String, Vec<u8>)> = all(
            &mut tx,
            "SELECT name, record FROM deleted_profiles ORDER BY name",
        )
        .await?;
        records.extend(deleted.into_iter().map(|(name, value)| RawRecord {
            tree: TreeId::Deleted,
            key: name.into_bytes(),
            value,
        }));
        tx.commit().await.map_err(store_error)?;
        Ok(Snapshot {
            next_seq,
            records,
            blocked: Duration::ZERO,
        })
    }

    /// Loads `records` as they are into this database, which must hold no record, in one
    /// transaction, and moves the change counter to at least `next_seq`.
    pub async fn restore(&self, records: &[RawRecord], next_seq: u64) -> Result<(), StoreError> {
        let mut tx = self.begin(true).await?;
        let held: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM profiles) + (SELECT count(*) FROM conversations) + (SELECT count(*) FROM documents) \
             + (SELECT count(*) FROM profile_history) + (SELECT count(*) FROM deleted_profiles)",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(store_error)?;
        if held > 0 {
            return Err(StoreError::FailedPrecondition(format!(
                "the database already holds {held} records (profiles, conversations, documents, kept revisions): restore needs an empty one"
            )));
        }
        let mut max_seq = next_seq;
        for tree in TreeId::ALL {
            for r in records.iter().filter(|r| r.tree == tree) {
                self.restore_one(&mut tx, r, &mut max_seq).await?;
            }
        }
        // Past the backup's seqs by RESTORE_SEQ_GAP, as on sled.
        sqlx::query("UPDATE registry_counter SET next_seq = GREATEST(next_seq, $1)")
            .bind(i64::try_from(max_seq.saturating_add(RESTORE_SEQ_GAP)).unwrap_or(i64::MAX))
            .run(&mut *tx)
            .await?;
        // Seqs from before the restore name changes of another store: no watch resumes after them.
        sqlx::query(
            "UPDATE watch_horizon SET pruned_through = GREATEST(pruned_through, \
             (SELECT next_seq - 1 FROM registry_counter))",
        )
        .run(&mut *tx)
        .await?;
        self.commit(tx).await
    }

    async fn restore_one(
        &self,
        tx: &mut super::Tx,
        r: &RawRecord,
        max_seq: &mut u64,
    ) -> Result<(), StoreError> {
        let bad = || bad_key(r.tree, &r.key);
        match r.tree {
            TreeId::Profiles => {
                let record: ProfileRecord = decode(r.tree, &r.key, &r.value)?;
                *max_seq = (*max_seq).max(record.seq + 1);
                sqlx::query(
                    "INSERT INTO profiles (name, seq, revision, record) VALUES ($1, $2, $3, $4)",
                )
                .bind(std::str::from_utf8(&r.key).map_err(|_| bad())?)
                .bind(i64::try_from(record.seq).unwrap_or(i64::MAX))
                .bind(record.profile.revision)
                .bind(&r.value)
                .run(&mut **tx)
                .await?;
            }
            TreeId::Conversations => {
                let c: Conversation = decode(r.tree, &r.key, &r.value)?;
                let id = id_of(&r.key).ok_or_else(bad)?;
                sqlx::query(
                    "INSERT INTO conversations (id, execution_status, event_count, record) VALUES ($1, $2, $3, $4)",
                )
                .bind(uuid(&id))
                .bind(c.execution_status.sdk_name())
                .bind(c.event_count)
                .bind(&r.value)
                .run(&mut **tx)
                .await?;
            }
            TreeId::Bindings => {
                let split = r.key.len().checked_sub(17).ok_or_else(bad)?;
                let name = std::str::from_utf8(&r.key[..split]).map_err(|_| bad())?;
                let id = id_of(&r.key[split + 1..]).ok_or_else(bad)?;
                sqlx::query("INSERT INTO bindings (profile, conversation) VALUES ($1, $2)")
                    .bind(name)
                    .bind(uuid(&id))
                    .run(&mut **tx)
                    .await?;
            }
            TreeId::Events => {
                let e: Event = decode(r.tree, &r.key, &r.value)?;
                let id = r.key.get(..16).and_then(id_of).ok_or_else(bad)?;
                sqlx::query(
                    "INSERT INTO events (conversation, seq, kind, source, record) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(uuid(&id))
                .bind(e.seq)
                .bind(&e.kind)
                .bind(&e.source)
                .bind(&r.value)
                .run(&mut **tx)
                .await?;
            }
            TreeId::Deleted => {
                let t: Tombstone = decode(r.tree, &r.key, &r.value)?;
                let name = std::str::from_utf8(&r.key).map_err(|_| bad())?;
                super::rows::put_tombstone(tx, name, &t).await?;
            }
            TreeId::History => {
                let record: ProfileRecord = decode(r.tree, &r.key, &r.value)?;
                let (name, revision) = split_history_key(&r.key).ok_or_else(bad)?;
                sqlx::query(
                    "INSERT INTO profile_history (name, revision, seq, record) VALUES ($1, $2, $3, $4)",
                )
                .bind(name)
                .bind(revision)
                .bind(i64::try_from(record.seq).unwrap_or(i64::MAX))
                .bind(&r.value)
                .run(&mut **tx)
                .await?;
            }
            TreeId::Documents => {
                let record: DocumentRecord = decode(r.tree, &r.key, &r.value)?;
                let (kind, name) = split_document_key(&r.key).ok_or_else(bad)?;
                *max_seq = (*max_seq).max(record.seq + 1);
                sqlx::query(
                    "INSERT INTO documents (kind, name, seq, revision, record) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(kind.as_str())
                .bind(name)
                .bind(i64::try_from(record.seq).unwrap_or(i64::MAX))
                .bind(record.document.revision)
                .bind(&r.value)
                .run(&mut **tx)
                .await?;
            }
        }
        Ok(())
    }
}
