//! The row-level statements the PostgreSQL store's writes are made of.
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Executor, Postgres};

use super::{store_error, uuid, Tx, CHANNEL};
use crate::domain::{Conversation, ConversationId, Profile};
use crate::store::records::Tombstone;
use crate::store::StoreError;

/// `execute` with the store's errors, for a statement whose only answer is that it ran.
pub trait Run {
    /// Runs the statement on `executor` (a transaction, a connection, the pool).
    async fn run<'e, E: Executor<'e, Database = Postgres>>(
        self,
        executor: E,
    ) -> Result<(), StoreError>;
}

impl Run for Query<'_, Postgres, PgArguments> {
    async fn run<'e, E: Executor<'e, Database = Postgres>>(
        self,
        executor: E,
    ) -> Result<(), StoreError> {
        self.execute(executor).await.map_err(store_error)?;
        Ok(())
    }
}

/// The counter's next change seq.
pub async fn next_seq<'e, E: Executor<'e, Database = Postgres>>(
    executor: E,
) -> Result<u64, StoreError> {
    Ok(seq_of(executor, "SELECT next_seq FROM registry_counter")
        .await?
        .max(1))
}

/// Every change seq up to this one may be missing from `profile_changes` (pruned).
pub async fn watch_horizon<'e, E: Executor<'e, Database = Postgres>>(
    executor: E,
) -> Result<u64, StoreError> {
    seq_of(executor, "SELECT pruned_through FROM watch_horizon").await
}

/// The seq one single-row query reads (0 for a negative one).
async fn seq_of<'e, E: Executor<'e, Database = Postgres>>(
    executor: E,
    sql: &'static str,
) -> Result<u64, StoreError> {
    let seq: i64 = sqlx::query_scalar(sql)
        .fetch_one(executor)
        .await
        .map_err(store_error)?;
    Ok(u64::try_from(seq).unwrap_or(0))
}

/// An explicit purge destroys the records the change log holds for `name` too: each becomes
/// empty, which a watch skips (the deletion that follows stands for it).
pub async fn forget_logged_records(tx: &mut Tx, name: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE profile_changes SET record = '' WHERE name = $1 AND record IS NOT NULL")
        .bind(name)
        .run(&mut **tx)
        .await
}

/// Takes `n` change seqs; returns the first. Under the write lock, so seq order is commit order.
pub async fn take_seqs(tx: &mut Tx, n: usize) -> Result<u64, StoreError> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let first: i64 = sqlx::query_scalar(
        "UPDATE registry_counter SET next_seq = next_seq + $1 RETURNING next_seq - $1",
    )
    .bind(n)
    .fetch_one(&mut **tx)
    .await
    .map_err(store_error)?;
    Ok(u64::try_from(first).unwrap_or(0))
}

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Writes `profiles` at the change seqs from `first` on (the last one of a name is stored) and
/// logs every change, in two statements.
pub async fn put_profiles(
    tx: &mut Tx,
    first: u64,
    profiles: &[impl std::borrow::Borrow<Profile>],
    records: &[Vec<u8>],
    keep: i64,
) -> Result<(), StoreError> {
    let seqs: Vec<i64> = (0..profiles.len())
        .map(|i| seq_i64(first + i as u64))
        .collect();
    let names: Vec<&str> = profiles.iter().map(|p| p.borrow().name.as_str()).collect();
    let revisions: Vec<i64> = profiles.iter().map(|p| p.borrow().revision).collect();
    let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, n) in names.iter().enumerate() {
        last.insert(n, i);
    }
    let mut stored: Vec<usize> = last.into_values().collect();
    stored.sort_unstable();
    let pick = |v: &dyn Fn(usize) -> i64| stored.iter().map(|&i| v(i)).collect::<Vec<i64>>();
    sqlx::query(
        "INSERT INTO profiles (name, seq, revision, record) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[]) \
         ON CONFLICT (name) DO UPDATE SET seq = EXCLUDED.seq, revision = EXCLUDED.revision, record = EXCLUDED.record",
    )
    .bind(stored.iter().map(|&i| names[i]).collect::<Vec<&str>>())
    .bind(pick(&|i| seqs[i]))
    .bind(pick(&|i| revisions[i]))
    .bind(stored.iter().map(|&i| records[i].as_slice()).collect::<Vec<&[u8]>>())
    .run(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO profile_changes (seq, name, revision, record) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bytea[])",
    )
    .bind(&seqs)
    .bind(&names)
    .bind(&revisions)
    .bind(records)
    .run(&mut **tx)
    .await?;
    // A new profile starts a history of its own: what a deleted one of its name left goes.
    let fresh: Vec<&str> = profiles
        .iter()
        .map(std::borrow::Borrow::borrow)
        .filter(|p: &&Profile| p.revision == 1)
        .map(|p| p.name.as_str())
        .collect();
    purge_deleted_names(tx, &fresh).await?;
    // Each written revision is kept; the ones that fall out of the history go.
    sqlx::query(
        "INSERT INTO profile_history (name, revision, seq, record) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[]) \
         ON CONFLICT (name, revision) DO UPDATE SET seq = EXCLUDED.seq, record = EXCLUDED.record",
    )
    .bind(&names)
    .bind(&revisions)
    .bind(&seqs)
    .bind(records)
    .run(&mut **tx)
    .await?;
    sqlx::query(
        "DELETE FROM profile_history h USING unnest($1::text[], $2::bigint[]) AS w(name, revision) \
         WHERE h.name = w.name AND h.revision <= w.revision - $3",
    )
    .bind(stored.iter().map(|&i| names[i]).collect::<Vec<&str>>())
    .bind(pick(&|i| revisions[i]))
    .bind(keep)
    .run(&mut **tx)
    .await
}

/// Drops what deleted profiles of these names left: their tombstones and kept history.
pub async fn purge_deleted_names(tx: &mut Tx, names: &[&str]) -> Result<(), StoreError> {
    if names.is_empty() {
        return Ok(());
    }
    for table in ["deleted_profiles", "profile_history"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE name = ANY($1)"))
            .bind(names)
            .run(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Marks `name` deleted with its history kept (for an undelete).
pub async fn put_tombstone(tx: &mut Tx, name: &str, t: &Tombstone) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO deleted_profiles (name, revision, delete_seconds, record) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET revision = EXCLUDED.revision, \
         delete_seconds = EXCLUDED.delete_seconds, record = EXCLUDED.record",
    )
    .bind(name)
    .bind(t.revision)
    .bind(t.delete_time.seconds)
    .bind(crate::store::records::encode(t)?)
    .run(&mut **tx)
    .await
}

/// Deletes a profile row and logs the change.
pub async fn delete_profile(tx: &mut Tx, seq: u64, p: &Profile) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM profiles WHERE name = $1")
        .bind(p.name.as_str())
        .run(&mut **tx)
        .await?;

    log_change(tx, seq, p, None).await
}

async fn log_change(
    tx: &mut Tx,
    seq: u64,
    p: &Profile,
    record: Option<&[u8]>,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO profile_changes (seq, name, revision, record) VALUES ($1, $2, $3, $4)")
        .bind(seq_i64(seq))
        .bind(p.name.as_str())
        .bind(p.revision)
        .bind(record)
        .run(&mut **tx)
        .await
}

/// Inserts or replaces a conversation row.
pub async fn put_conversation(
    tx: &mut Tx,
    c: &Conversation,
    bytes: &[u8],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO conversations (id, execution_status, event_count, record) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET execution_status = $2, event_count = $3, record = $4",
    )
    .bind(uuid(&c.id))
    .bind(c.execution_status.sdk_name())
    .bind(c.event_count)
    .bind(bytes)
    .run(&mut **tx)
    .await
}

/// Makes a conversation's bindings exactly `names`.
pub async fn set_bindings(
    tx: &mut Tx,
    id: &ConversationId,
    names: &[String],
) -> Result<(), StoreError> {
    // The ones it no longer binds go, the new ones come; both take (id, names).
    for sql in [
        "DELETE FROM bindings WHERE conversation = $1 AND NOT (profile = ANY($2))",
        "INSERT INTO bindings (profile, conversation) SELECT unnest($2::text[]), $1 \
         ON CONFLICT DO NOTHING",
    ] {
        sqlx::query(sql)
            .bind(uuid(id))
            .bind(names)
            .run(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The stored records of those of `names` that exist.
pub async fn profile_records(
    tx: &mut Tx,
    names: &[&str],
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    sqlx::query_as("SELECT name, record FROM profiles WHERE name = ANY($1)")
        .bind(names)
        .fetch_all(&mut **tx)
        .await
        .map_err(store_error)
}

/// Tells every replica (at commit) that these profiles changed. The names ride along, so replicas
/// drop them from their caches the moment the notification arrives, before they read the change
/// rows; past NOTIFY's payload limit (8000 bytes) it says only that some changed.
pub async fn notify_profiles(tx: &mut Tx, names: &[&str]) -> Result<(), StoreError> {
    if names.is_empty() {
        return Ok(());
    }
    let mut payload = format!("p {}", names.join(" "));
    if payload.len() > 7000 {
        payload = "p *".into();
    }
    notify(tx, &payload).await
}

/// Notifies every replica when the transaction commits.
pub async fn notify(tx: &mut Tx, payload: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .run(&mut **tx)
        .await
}
