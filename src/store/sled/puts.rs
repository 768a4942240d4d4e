//! Puts of profiles applied together: the puts waiting when a writer gets the write turn share
//! sled transactions.
//!
//! sled 0.34 closes its log buffer at the end of every transaction, and one of its I/O threads
//! writes each closed buffer: with one transaction per put, those buffers and the threads they
//! wake took about 40% of the server's CPU under 64 writers. So a put does not take the turn for
//! itself alone. It queues, then waits for the turn or its answer, whichever comes first. The
//! writer that gets the turn plans every queued put against the stored state, one after another,
//! and applies the planned writes in one transaction (one epoch of the group commit; at most
//! [`MOST_PUTS`] puts or about [`MOST_BYTES`] of records each), then answers each put. A put that
//! fails its own checks (a revision, a create of an existing name) gets its own error and leaves
//! no op behind; the others still write. Two puts of one name never share a transaction: the
//! second is planned after the first is applied, so it sees it. After a transaction fails, the
//! puts not yet applied get its error.
use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

use super::conversations::Op;
use super::SledStore;
use crate::domain::{LlmConfig, Profile, ProfileName};
use crate::store::codec::ProfileRecord;
use crate::store::requests::ProfilePut;
use crate::store::rules::{self, PutPlan};
use crate::store::{fault, Change, ProfileChange, PutMode, PutOutcome, StoreError};

/// What a put answers: the epoch to wait for, and its profile and outcome.
type Answer = Result<(u64, (Profile, PutOutcome)), StoreError>;

/// A put waiting for a writer to apply it.
struct Queued {
    name: ProfileName,
    llm: LlmConfig,
    mode: PutMode,
    expected_revision: Option<i64>,
    by: String,
    answer: oneshot::Sender<Answer>,
}

/// The puts waiting for the write turn.
#[derive(Default)]
pub(super) struct PutQueue(Mutex<Vec<Queued>>);

impl PutQueue {
    fn push(&self, put: Queued) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(put);
    }

    fn take(&self) -> Vec<Queued> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// At most this many puts share a transaction...
const MOST_PUTS: usize = 256;
/// ...and at most about this many bytes of records: a sled transaction holds a process-wide lock
/// that every read waits for.
const MOST_BYTES: usize = 4 << 20;

/// The planned puts of one transaction.
#[derive(Default)]
struct Together {
    names: HashSet<ProfileName>,
    ops: Vec<Op>,
    /// The bytes of the records in `ops`.
    bytes: usize,
    changes: Vec<Change>,
    answers: Vec<(oneshot::Sender<Answer>, (Profile, PutOutcome))>,
}

impl SledStore {
    pub(crate) async fn put_profile(
        &self,
        put: ProfilePut<'_>,
    ) -> Result<(Profile, PutOutcome), StoreError> {
        let (answer, mut answered) = oneshot::channel();
        self.puts.push(Queued {
            name: put.name,
            llm: put.llm,
            mode: put.mode,
            expected_revision: put.expected_revision,
            by: put.by.to_owned(),
            answer,
        });
        let (epoch, value) = loop {
            // On a full volume a sled write can block for good inside sled; the puts queued
            // behind it get the fault instead of holding every tokio worker.
            tokio::select! {
                biased;
                done = &mut answered => {
                    break done.map_err(|_| StoreError::Storage("the write was abandoned".into()))??;
                }
                turn = self.write_turn.lock() => {
                    let queued = self.puts.take();
                    match fault::current() {
                        Some(fault) => {
                            for q in queued {
                                let _ = q.answer.send(Err(StoreError::Volume(fault.clone())));
                            }
                        }
                        None => {
                            let _guard = self.lock();
                            self.flusher.watched(|| self.put_together(queued));
                        }
                    }
                    drop(turn);
                }
                fault = fault::raised() => return Err(StoreError::Volume(fault)),
            }
        };
        self.flusher.wait(epoch).await?;
        Ok(value)
    }

    /// Plans and applies `queued`, in order, in as few transactions as their names and sizes
    /// allow, and answers each. Runs under the write lock. After a failed transaction the puts
    /// not yet applied get its error: nothing more is written.
    fn put_together(&self, queued: Vec<Queued>) {
        let mut together = Together::default();
        let mut queued = queued.into_iter();
        while let Some(q) = queued.next() {
            // The caller is gone (its call was cancelled before its turn): nothing is written.
            if q.answer.is_closed() {
                continue;
            }
            let full = together.answers.len() >= MOST_PUTS || together.bytes >= MOST_BYTES;
            if full || together.names.contains(&q.name) {
                if let Err(e) = self.apply_together(std::mem::take(&mut together)) {
                    for q in std::iter::once(q).chain(queued) {
                        let _ = q.answer.send(Err(again(&e)));
                    }
                    return;
                }
            }
            let name = q.name.clone();
            let mut ops = Vec::with_capacity(3);
            match self.plan_put(q.name, q.llm, q.mode, q.expected_revision, &q.by, &mut ops) {
                Ok((Some(change), value)) => {
                    together.names.insert(name);
                    together.bytes += ops.iter().map(Op::size).sum::<usize>();
                    together.ops.append(&mut ops);
                    together.changes.push(change);
                    together.answers.push((q.answer, value));
                }
                // Nothing to write: durable once every write applied before it is.
                Ok((None, value)) => {
                    let _ = q.answer.send(Ok((self.flusher.written(), value)));
                }
                Err(e) => {
                    let _ = q.answer.send(Err(e));
                }
            }
        }
        let _ = self.apply_together(together);
    }

    /// One put's plan: the ops that write it (into `ops`, left empty when nothing is written), the
    /// change to publish, and the answer.
    fn plan_put(
        &self,
        name: ProfileName,
        llm: LlmConfig,
        mode: PutMode,
        expected_revision: Option<i64>,
        by: &str,
        ops: &mut Vec<Op>,
    ) -> Result<(Option<Change>, (Profile, PutOutcome)), StoreError> {
        let old = self.read_profile(name.as_str())?.map(|r| r.profile);
        self.check_profile_connection(old.as_ref(), &llm)?;
        match rules::plan_put(old, name, llm, mode, expected_revision, by)? {
            PutPlan::Unchanged(old) => Ok((None, (old, PutOutcome::Unchanged))),
            PutPlan::Write(profile, outcome) => {
                let record = ProfileRecord {
                    seq: self.next_seq()?,
                    profile,
                };
                self.profile_ops(&record, ops)?;
                let change = ProfileChange::Put {
                    seq: record.seq,
                    profile: std::sync::Arc::new(record.profile.clone()),
                };
                Ok((Some(change.into()), (record.profile, outcome)))
            }
        }
    }

    /// Applies the planned puts in one transaction and answers them, all with one epoch; a
    /// failure is answered to each, and a fault of the volume raised at once (its callers may
    /// all be gone).
    fn apply_together(&self, together: Together) -> Result<(), StoreError> {
        let Together {
            ops,
            changes,
            answers,
            ..
        } = together;
        if answers.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.apply(&ops) {
            if let StoreError::Volume(fault) = &e {
                fault::raise(fault);
            }
            for (answer, _) in answers {
                let _ = answer.send(Err(again(&e)));
            }
            return Err(e);
        }
        let epoch = self.flusher.committed(changes);
        for (answer, value) in answers {
            let _ = answer.send(Ok((epoch, value)));
        }
        Ok(())
    }
}

/// The same failure, for each put of a transaction that failed.
fn again(e: &StoreError) -> StoreError {
    match e {
        StoreError::Volume(fault) => StoreError::Volume(fault.clone()),
        other => StoreError::Storage(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::LlmConfig;
    use crate::store::sled::StoreOptions;

    fn put(
        name: &str,
        model: &str,
        mode: PutMode,
        expected_revision: Option<i64>,
    ) -> ProfilePut<'static> {
        ProfilePut {
            name: ProfileName::parse(name, "name").unwrap(),
            llm: LlmConfig {
                model: model.into(),
                ..LlmConfig::default()
            },
            mode,
            expected_revision,
            by: "test",
        }
    }

    /// Calls put_profile with each of `puts` while the test holds the write turn, each call queued
    /// before the next starts (so the queue's order is the calls' order), then lets them go.
    async fn queued_while_the_turn_is_held(
        store: &std::sync::Arc<SledStore>,
        puts: Vec<ProfilePut<'static>>,
    ) -> Vec<Result<(Profile, PutOutcome), StoreError>> {
        let turn = store.write_turn.lock().await;
        let mut calls = Vec::new();
        for p in puts {
            let writer = std::sync::Arc::clone(store);
            calls.push(tokio::spawn(async move { writer.put_profile(p).await }));
            while store.puts.0.lock().unwrap().len() < calls.len() {
                tokio::task::yield_now().await;
            }
        }
        drop(turn);
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap());
        }
        answers
    }

    /// A transaction takes at most MOST_PUTS puts; the rest go into the next.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_queue_is_applied_in_bounded_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), &StoreOptions::default()).unwrap();
        let epoch_before = store.flusher.written();
        let puts = (0..MOST_PUTS + 10)
            .map(|i| put(&format!("p{i:04}"), "m", PutMode::Create, None))
            .collect();
        let answers = queued_while_the_turn_is_held(&store, puts).await;
        assert!(answers
            .iter()
            .all(|a| matches!(a, Ok((_, PutOutcome::Created)))));
        assert_eq!(store.flusher.written() - epoch_before, 2);
        assert_eq!(store.profiles.len(), MOST_PUTS + 10);
    }

    /// Puts queued while another write holds the turn are applied by the next writer in one
    /// transaction (one epoch), and each is answered on its own: a second put of one name is
    /// planned after the first, a failed check refuses only its own put.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_puts_share_one_transaction_and_answer_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), &StoreOptions::default()).unwrap();
        store
            .put_profile(put("taken", "m0", PutMode::Create, None))
            .await
            .unwrap();
        let epoch_before = store.flusher.written();

        let mut puts: Vec<_> = (0..20)
            .map(|i| put(&format!("p{i:02}"), "m1", PutMode::Create, None))
            .collect();
        puts.extend([
            put("taken", "m1", PutMode::Create, None), // ALREADY_EXISTS
            put("taken", "m2", PutMode::Update, Some(1)), // revision 2
            put("taken", "m3", PutMode::Update, Some(1)), // stale: ABORTED
            put("taken", "m3", PutMode::Update, Some(2)), // revision 3, after the first
            put("taken", "m3", PutMode::Update, None), // the same content: unchanged
        ]);
        let answers = queued_while_the_turn_is_held(&store, puts).await;

        for (i, a) in answers[..20].iter().enumerate() {
            let (p, outcome) = a.as_ref().unwrap();
            assert_eq!(
                (p.name.as_str(), p.revision, *outcome),
                (format!("p{i:02}").as_str(), 1, PutOutcome::Created)
            );
        }
        assert!(matches!(answers[20], Err(StoreError::AlreadyExists { .. })));
        assert!(
            matches!(&answers[21], Ok((p, PutOutcome::Updated)) if p.revision == 2 && p.llm.model == "m2")
        );
        assert!(matches!(
            answers[22],
            Err(StoreError::RevisionMismatch {
                expected: 1,
                actual: 2,
                ..
            })
        ));
        assert!(
            matches!(&answers[23], Ok((p, PutOutcome::Updated)) if p.revision == 3 && p.llm.model == "m3")
        );
        assert!(matches!(&answers[24], Ok((p, PutOutcome::Unchanged)) if p.revision == 3));
        // The 20 creates and the first update of "taken" in one transaction, the second update
        // (the same name) in the next: two epochs, not 22.
        assert_eq!(store.flusher.written() - epoch_before, 2);

        let stored = store.read_profile("taken").unwrap().unwrap().profile;
        assert_eq!((stored.revision, stored.llm.model.as_str()), (3, "m3"));
        for i in 0..20 {
            assert!(store.read_profile(&format!("p{i:02}")).unwrap().is_some());
        }
    }
}
