//! Group commit of profile puts: one task per replica takes every put waiting at that moment and
//! applies them in one transaction (each with its own precondition, as if one after the other), so
//! concurrent writers share one commit instead of queueing for one each. Like sled's flusher.
use std::collections::HashMap;
use std::sync::Arc;

use sqlx::postgres::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::listener::ProfileCache;
use super::rows::Run;
use super::{rows, store_error, Tx, WRITE_LOCK};
use crate::domain::{LlmConfig, Profile, ProfileName};
use crate::store::codec::{Codec, ProfileRecord};
use crate::store::rules::{self, PutPlan};
use crate::store::{PutMode, PutOutcome, StoreError};

/// At most this many puts share one transaction.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<(Arc<Profile>, PutOutcome), StoreError>>;

/// One put waiting for its batch.
pub(super) struct PutJob {
    pub name: ProfileName,
    pub llm: LlmConfig,
    pub mode: PutMode,
    pub expected_revision: Option<i64>,
    /// Who writes.
    pub by: String,
    pub reply: Reply,
}

/// What the batcher needs of the store.
pub(super) struct Batcher {
    pub pool: PgPool,
    pub codec: Arc<Codec>,
    pub cache: Arc<ProfileCache>,
    /// How many revisions of each profile the history keeps.
    pub keep: i64,
}

/// Applies batches until the store (the sender) is gone.
pub(super) async fn run(b: Batcher, mut jobs: mpsc::Receiver<PutJob>) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        b.apply(batch).await;
    }
}

/// The same failure for every put of a failed batch (StoreError is not Clone).
fn shared(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        other => StoreError::Storage(other.to_string()),
    }
}

impl Batcher {
    async fn apply(&self, batch: Vec<PutJob>) {
        let mut replies = Vec::with_capacity(batch.len());
        let mut puts = Vec::with_capacity(batch.len());
        for job in batch {
            replies.push(job.reply);
            puts.push((job.name, job.llm, job.mode, job.expected_revision, job.by));
        }
        match self.transaction(puts).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(shared(&e)));
                }
            }
        }
    }

    /// Every put in order against the stored profiles and the ones written before it in the batch;
    /// the writes in one transaction under the write lock.
    async fn transaction(
        &self,
        puts: Vec<(ProfileName, LlmConfig, PutMode, Option<i64>, String)>,
    ) -> Result<Vec<Result<(Arc<Profile>, PutOutcome), StoreError>>, StoreError> {
        let mut tx: Tx = self.pool.begin().await.map_err(store_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .run(&mut *tx)
            .await?;
        let names: Vec<&str> = puts.iter().map(|p| p.0.as_str()).collect();
        let rows = rows::profile_records(&mut tx, &names).await?;
        let mut view: HashMap<ProfileName, Arc<Profile>> = HashMap::with_capacity(rows.len());
        let mut damaged: HashMap<String, StoreError> = HashMap::new();
        for (name, bytes) in rows {
            match self.codec.decode_profile(name.as_bytes(), &bytes) {
                Ok(r) => {
                    view.insert(r.profile.name.clone(), Arc::new(r.profile));
                }
                Err(e) => {
                    damaged.insert(name, e);
                }
            }
        }
        let mut results = Vec::with_capacity(puts.len());
        let mut writes: Vec<Arc<Profile>> = Vec::new();
        let mut encoded = Vec::new();
        for (name, llm, mode, expected, by) in puts {
            if let Some(e) = damaged.get(name.as_str()) {
                results.push(Err(shared(e)));
                continue;
            }
            let old = view.get(&name).cloned();
            let added =
                crate::store::documents::added_connection(old.as_ref().map(|p| &p.llm), &llm);
            if let Err(e) = super::documents::check_targets(&mut tx, "profile", &added).await {
                results.push(Err(e));
                continue;
            }
            match rules::plan_put(old, name, llm, mode, expected, &by) {
                Err(e) => results.push(Err(e)),
                Ok(PutPlan::Unchanged(p)) => results.push(Ok((p, PutOutcome::Unchanged))),
                Ok(PutPlan::Write(profile, outcome)) => {
                    // The record's seq is the row's (taken below): not kept in its bytes.
                    let mut record = ProfileRecord { seq: 0, profile };
                    encoded.push(self.codec.encode_profile(&mut record)?);
                    let p = Arc::new(record.profile);
                    view.insert(p.name.clone(), Arc::clone(&p));
                    writes.push(Arc::clone(&p));
                    results.push(Ok((p, outcome)));
                }
            }
        }
        if writes.is_empty() {
            return Ok(results);
        }
        let first = rows::take_seqs(&mut tx, writes.len()).await?;
        rows::put_profiles(&mut tx, first, &writes, &encoded, self.keep).await?;
        let listed: Vec<&str> = writes.iter().map(|p| p.name.as_str()).collect();
        rows::notify_profiles(&mut tx, &listed).await?;
        let committed = super::commit(tx).await;
        for (seq, p) in (first..).zip(&writes) {
            self.cache.invalidate(p.name.as_str(), seq);
        }
        committed?;
        Ok(results)
    }
}
