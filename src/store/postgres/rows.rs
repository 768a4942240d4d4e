//! The row-level statements the PostgreSQL store's writes are made of.
use sqlx::{Executor, Postgres};

use super::{store_error, uuid, Tx, CHANNEL};
use crate::domain::{Conversation, ConversationId, Profile};
use crate::store::codec::ProfileRecord;
use crate::store::StoreError;

/// The counter's next change seq.
pub async fn next_seq<'e, E: Executor<'e, Database = Postgres>>(
    executor: E,
) -> Result<u64, StoreError> {
    let next: i64 = sqlx::query_scalar("SELECT next_seq FROM registry_counter")
        .fetch_one(executor)
        .await
        .map_err(store_error)?;
    Ok(u64::try_from(next).unwrap_or(1))
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

/// Inserts or replaces a profile row and logs the change.
pub async fn put_profile(
    tx: &mut Tx,
    record: &ProfileRecord,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let p = &record.profile;
    sqlx::query(
        "INSERT INTO profiles (name, seq, revision, record) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET seq = $2, revision = $3, record = $4",
    )
    .bind(p.name.as_str())
    .bind(seq_i64(record.seq))
    .bind(p.revision)
    .bind(bytes)
    .execute(&mut **tx)
    .await
    .map_err(store_error)?;
    log_change(tx, record.seq, p, Some(bytes)).await
}

/// Deletes a profile row and logs the change.
pub async fn delete_profile(tx: &mut Tx, seq: u64, p: &Profile) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM profiles WHERE name = $1")
        .bind(p.name.as_str())
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
    log_change(tx, seq, p, None).await
}

async fn log_change(
    tx: &mut Tx,
    seq: u64,
    p: &Profile,
    record: Option<&[u8]>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO profile_changes (seq, name, revision, record) VALUES ($1, $2, $3, $4)",
    )
    .bind(seq_i64(seq))
    .bind(p.name.as_str())
    .bind(p.revision)
    .bind(record)
    .execute(&mut **tx)
    .await
    .map_err(store_error)?;
    Ok(())
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
    .execute(&mut **tx)
    .await
    .map_err(store_error)?;
    Ok(())
}

/// Makes a conversation's bindings exactly `names`.
pub async fn set_bindings(
    tx: &mut Tx,
    id: &ConversationId,
    names: &[String],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM bindings WHERE conversation = $1 AND NOT (profile = ANY($2))")
        .bind(uuid(id))
        .bind(names)
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
    sqlx::query(
        "INSERT INTO bindings (profile, conversation) SELECT unnest($2::text[]), $1 \
         ON CONFLICT DO NOTHING",
    )
    .bind(uuid(id))
    .bind(names)
    .execute(&mut **tx)
    .await
    .map_err(store_error)?;
    Ok(())
}

/// Notifies every replica when the transaction commits.
pub async fn notify(tx: &mut Tx, payload: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
    Ok(())
}
