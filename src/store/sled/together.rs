//! Writes applied together: the profile puts (create, update) and the event appends waiting when a
//! writer gets the write turn share sled transactions.
//!
//! sled 0.34 closes its log buffer at the end of every transaction, and one of its I/O threads
//! writes each closed buffer: with one transaction per write, those buffers and the threads they
//! wake took about 40% of the server's CPU under 64 writers. So such a write does not take the
//! turn for itself alone. It queues, then waits for the turn or its answer, whichever comes
//! first. The writer that gets the turn plans every queued write of its kind against the stored
//! state, one after another, and applies the planned writes in one transaction (one epoch of the
//! group commit; at most [`MOST_WRITES`] writes or about [`MOST_BYTES`] of records each), then
//! answers each. A write that fails its own checks (a revision, a create of an existing name, an
//! expected next seq) gets its own error and leaves no op behind; the others still write. Two
//! writes of one record (a profile, a conversation) never share a transaction: the second is
//! planned after the first is applied, so it sees it. After a transaction fails, the writes not
//! yet applied get its error.
use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

use super::ops::Op;
use super::SledStore;
use crate::store::{fault, Change, StoreError};

/// A write that may share a transaction with others of its kind.
pub(super) trait Joinable: Send + Sized + 'static {
    /// What it answers once durable.
    type Answer: Send + 'static;
    /// The record it changes: two writes of one record never share a transaction.
    type Key: Eq + Hash;

    fn key(&self) -> Self::Key;

    /// Plans the write against the stored state: its ops (into `ops`; none when nothing is
    /// written), the change to publish (`None`: nothing written) and its answer. Runs under the
    /// write lock.
    fn plan(
        self,
        store: &SledStore,
        ops: &mut Vec<Op>,
    ) -> Result<(Option<Change>, Self::Answer), StoreError>;
}

/// What a write answers: the epoch to wait for, and its answer.
type Answered<W> = Result<(u64, <W as Joinable>::Answer), StoreError>;

/// A write waiting for a writer to apply it.
struct Queued<W: Joinable> {
    write: W,
    answer: oneshot::Sender<Answered<W>>,
}

/// The writes of one kind waiting for the write turn.
pub(super) struct Queue<W: Joinable>(Mutex<Vec<Queued<W>>>);

impl<W: Joinable> Default for Queue<W> {
    fn default() -> Self {
        Self(Mutex::new(Vec::new()))
    }
}

impl<W: Joinable> Queue<W> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Queued<W>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, write: Queued<W>) {
        self.lock().push(write);
    }

    fn take(&self) -> Vec<Queued<W>> {
        std::mem::take(&mut *self.lock())
    }
}

/// At most this many writes share a transaction...
const MOST_WRITES: usize = 256;
/// ...and at most about this many bytes of records: a sled transaction holds a process-wide lock
/// that every read waits for.
const MOST_BYTES: usize = 4 << 20;

/// The planned writes of one transaction.
struct Planned<W: Joinable> {
    keys: HashSet<W::Key>,
    ops: Vec<Op>,
    /// The bytes of the records in `ops`.
    bytes: usize,
    changes: Vec<Change>,
    answers: Vec<(oneshot::Sender<Answered<W>>, W::Answer)>,
}

impl<W: Joinable> Default for Planned<W> {
    fn default() -> Self {
        Self {
            keys: HashSet::new(),
            ops: Vec::new(),
            bytes: 0,
            changes: Vec::new(),
            answers: Vec::new(),
        }
    }
}

impl SledStore {
    /// Applies `write` with the others of its kind in `queue` (see the module's text); answers
    /// once it, and every write before it, is durable.
    pub(super) async fn together<W: Joinable>(
        &self,
        queue: &Queue<W>,
        write: W,
    ) -> Result<W::Answer, StoreError> {
        let (answer, mut answered) = oneshot::channel();
        queue.push(Queued { write, answer });
        let (epoch, value) = loop {
            // On a full volume a sled write can block for good inside sled; the writes queued
            // behind it get the fault instead of holding every tokio worker.
            tokio::select! {
                biased;
                done = &mut answered => {
                    break done.map_err(|_| StoreError::Storage("the write was abandoned".into()))??;
                }
                turn = self.write_turn.lock() => {
                    let queued = queue.take();
                    match fault::current() {
                        Some(fault) => {
                            for q in queued {
                                let _ = q.answer.send(Err(StoreError::Volume(fault.clone())));
                            }
                        }
                        None => {
                            let _guard = self.lock();
                            self.flusher.watched(|| self.apply_queued(queued));
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

    /// Plans and applies `queued`, in order, in as few transactions as their records and sizes
    /// allow, and answers each. Runs under the write lock. After a failed transaction the writes
    /// not yet applied get its error: nothing more is written.
    fn apply_queued<W: Joinable>(&self, queued: Vec<Queued<W>>) {
        let mut planned = Planned::<W>::default();
        let mut queued = queued.into_iter();
        while let Some(q) = queued.next() {
            // The caller is gone (its call was cancelled before its turn): nothing is written.
            if q.answer.is_closed() {
                continue;
            }
            let key = q.write.key();
            let full = planned.answers.len() >= MOST_WRITES || planned.bytes >= MOST_BYTES;
            if full || planned.keys.contains(&key) {
                if let Err(e) = self.apply_planned(std::mem::take(&mut planned)) {
                    for q in std::iter::once(q).chain(queued) {
                        let _ = q.answer.send(Err(again(&e)));
                    }
                    return;
                }
            }
            let mut ops = Vec::with_capacity(3);
            match q.write.plan(self, &mut ops) {
                Ok((Some(change), value)) => {
                    planned.keys.insert(key);
                    planned.bytes += ops.iter().map(Op::size).sum::<usize>();
                    planned.ops.append(&mut ops);
                    planned.changes.push(change);
                    planned.answers.push((q.answer, value));
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
        let _ = self.apply_planned(planned);
    }

    /// Applies the planned writes in one transaction and answers them, all with one epoch; a
    /// failure is answered to each, and a fault of the volume raised at once (its callers may
    /// all be gone).
    fn apply_planned<W: Joinable>(&self, planned: Planned<W>) -> Result<(), StoreError> {
        let Planned {
            ops,
            changes,
            answers,
            bytes,
            ..
        } = planned;
        if answers.is_empty() {
            return Ok(());
        }
        tracing::debug!(writes = answers.len(), bytes, "writes in one transaction");
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

/// The same failure, for each write of a transaction that failed.
fn again(e: &StoreError) -> StoreError {
    match e {
        StoreError::Volume(fault) => StoreError::Volume(fault.clone()),
        StoreError::Storage(detail) => StoreError::Storage(detail.clone()),
        other => StoreError::Storage(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{LlmConfig, Profile, ProfileName};
    use crate::store::requests::ProfilePut;
    use crate::store::sled::StoreOptions;
    use crate::store::{PutMode, PutOutcome};

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

    /// Starts each of `calls` while the test holds the write turn, each queued before the next
    /// starts (so the queue's order is the calls' order), then lets them go.
    async fn queued_while_the_turn_is_held<T: Send + 'static>(
        store: &std::sync::Arc<SledStore>,
        calls: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>>,
    ) -> Vec<T> {
        let turn = store.write_turn.lock().await;
        let mut started = Vec::new();
        for call in calls {
            started.push(tokio::spawn(call));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while store.puts.lock().len() + store.appends.lock().len() < started.len() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "a call did not queue while the turn was held"
                );
                tokio::task::yield_now().await;
            }
        }
        drop(turn);
        let mut answers = Vec::new();
        for call in started {
            answers.push(call.await.unwrap());
        }
        answers
    }

    /// Calls put_profile with each of `puts`, queued while the test holds the turn.
    async fn queued_puts(
        store: &std::sync::Arc<SledStore>,
        puts: Vec<ProfilePut<'static>>,
    ) -> Vec<Result<(std::sync::Arc<Profile>, PutOutcome), StoreError>> {
        let calls = puts
            .into_iter()
            .map(|p| {
                let writer = std::sync::Arc::clone(store);
                Box::pin(async move { writer.put_profile(p).await }) as std::pin::Pin<Box<_>>
            })
            .collect();
        queued_while_the_turn_is_held(store, calls).await
    }

    /// A transaction takes at most MOST_WRITES puts; the rest go into the next.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_queue_is_applied_in_bounded_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), &StoreOptions::default()).unwrap();
        let epoch_before = store.flusher.written();
        let puts = (0..MOST_WRITES + 10)
            .map(|i| put(&format!("p{i:04}"), "m", PutMode::Create, None))
            .collect();
        let answers = queued_puts(&store, puts).await;
        assert!(answers
            .iter()
            .all(|a| matches!(a, Ok((_, PutOutcome::Created)))));
        assert_eq!(store.flusher.written() - epoch_before, 2);
        assert_eq!(store.profiles.len(), MOST_WRITES + 10);
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
        let answers = queued_puts(&store, puts).await;

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

    /// Appends queued while the turn is held share one transaction too; two appends to one
    /// conversation do not, and the second sees the first's seqs; a stale expected next seq is
    /// refused on its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_appends_share_one_transaction_and_keep_each_log_contiguous() {
        use crate::domain::{Conversation, ConversationId, NewEvent};
        use crate::store::requests::EventAppend;
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), &StoreOptions::default()).unwrap();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let id = ConversationId::generate();
            store
                .create_conversation(Conversation {
                    id,
                    llms: Default::default(),
                    execution_status: Default::default(),
                    title: String::new(),
                    tags: Default::default(),
                    state: Default::default(),
                    revision: 1,
                    create_time: Default::default(),
                    update_time: Default::default(),
                    event_count: 0,
                })
                .await
                .unwrap();
            ids.push(id);
        }
        let events = |n: usize| -> Vec<NewEvent> {
            (0..n)
                .map(|i| NewEvent {
                    id: format!("e{i}"),
                    kind: "MessageEvent".into(),
                    source: "user".into(),
                    timestamp: Default::default(),
                    body: "{}".into(),
                })
                .collect()
        };
        let epoch_before = store.flusher.written();
        let plan = [
            (0, 2, None),    // 0..2
            (1, 3, Some(0)), // 0..3
            (2, 1, None),    // 0..1
            (0, 2, Some(2)), // 2..4, after the first: a second transaction
            (1, 1, Some(0)), // stale: ABORTED
        ];
        let calls = plan
            .into_iter()
            .map(|(c, n, expected_next_seq)| {
                let (writer, id, events) = (std::sync::Arc::clone(&store), ids[c], events(n));
                Box::pin(async move {
                    let append = EventAppend {
                        id: &id,
                        events,
                        expected_next_seq,
                    };
                    writer.append_events(append).await
                }) as std::pin::Pin<Box<_>>
            })
            .collect();
        let answers: Vec<Result<(i64, i64), StoreError>> =
            queued_while_the_turn_is_held(&store, calls).await;
        assert_eq!(answers[0].as_ref().unwrap(), &(0, 2));
        assert_eq!(answers[1].as_ref().unwrap(), &(0, 3));
        assert_eq!(answers[2].as_ref().unwrap(), &(0, 1));
        assert_eq!(answers[3].as_ref().unwrap(), &(2, 4));
        assert!(
            matches!(answers[4], Err(StoreError::Aborted(_))),
            "{:?}",
            answers[4]
        );
        assert_eq!(store.flusher.written() - epoch_before, 2);
        for (id, count) in ids.iter().zip([4, 3, 1]) {
            let c = store.read_conversation(id).unwrap().unwrap();
            assert_eq!(c.event_count, count);
        }
    }
}
