//! Each replica's view of changes made anywhere: a LISTEN connection; on a profile notification it
//! reads `profile_changes` after the last seq it saw, in seq order, drops those names from the cache
//! and hands the changes to its watchers. Event notifications name the conversation and its new
//! next seq; watchers read the events themselves. While the connection is down the cache is off
//! (every read goes to the database) and readiness is false.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{broadcast, watch};

use super::{store_error, CHANNEL};
use crate::domain::{ConversationId, Profile};
use crate::store::codec::Codec;
use crate::store::{EventBatch, ProfileChange, StoreError, READY_BYTES};

/// Profiles read through this replica, valid while the listener is connected. Each entry carries the
/// change seq of the version it holds; a change leaves a tombstone with its seq, so a read that
/// started before the change (and so returns an older seq) cannot put the old version back, while a
/// read that already returns the changed version is kept. Clearing the whole cache (capacity,
/// reconnect) bumps `generation`, which rejects every read that started before it.
pub struct ProfileCache {
    entries: Mutex<HashMap<String, Entry>>,
    generation: AtomicU64,
    enabled: AtomicBool,
    /// Some profiles changed, not yet known which (a large write): no hit, no fill until the change
    /// log is read.
    unsure: AtomicBool,
    capacity: usize,
    /// What makes the ready response of a cached version (a plain GetProfile's encoded answer),
    /// once the server has said (see [`ProfileCache::ready`]).
    builder: std::sync::OnceLock<fn(&Profile) -> bytes::Bytes>,
    /// The bytes of the ready responses kept, at most [`READY_BYTES`] (changed under the map's
    /// lock).
    ready_bytes: AtomicUsize,
}

/// A cached version (`profile`) and its ready response once one was made, or a tombstone
/// (`None`) of a change at `seq`. A change replaces the entry, response and all.
struct Entry {
    seq: u64,
    profile: Option<Arc<Profile>>,
    ready: Option<bytes::Bytes>,
}

impl Entry {
    /// The tombstone of a change at `seq`.
    fn tombstone(seq: u64) -> Self {
        Self {
            seq,
            profile: None,
            ready: None,
        }
    }
}

/// The seq of a change whose seq is not known yet (a notification names only the profile): no read
/// may fill the entry until the change log gives the real seq.
const PENDING: u64 = u64::MAX;

impl ProfileCache {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            enabled: AtomicBool::new(false),
            unsure: AtomicBool::new(false),
            capacity,
            builder: std::sync::OnceLock::new(),
            ready_bytes: AtomicUsize::new(0),
        }
    }

    /// Counts the ready response of `entry`, about to be replaced or removed, out.
    fn forget_ready(&self, entry: &Entry) {
        if let Some(ready) = &entry.ready {
            self.ready_bytes.fetch_sub(ready.len(), Ordering::Relaxed);
        }
    }

    /// Empties the map (under its lock), ready responses and all.
    fn clear(&self, map: &mut HashMap<String, Entry>) {
        map.clear();
        self.ready_bytes.store(0, Ordering::Relaxed);
    }

    /// From now on [`ProfileCache::ready`] makes responses with `build` (the first builder given
    /// stays).
    pub(super) fn answer_with(&self, build: fn(&Profile) -> bytes::Bytes) {
        let _ = self.builder.set(build);
    }

    /// The ready response of the cached version of `name`: made once per version (by the
    /// builder, outside the lock) and kept with it until a change replaces the entry. `None`
    /// when the cache cannot answer for `name` (not cached, off, unsure) or no builder was given:
    /// the handler reads the database, which fills the cache for the next read.
    pub(super) fn ready(&self, name: &str) -> Option<bytes::Bytes> {
        let build = self.builder.get()?;
        if !self.usable() {
            return None;
        }
        let profile = {
            let map = self.map();
            let entry = map.get(name)?;
            let profile = entry.profile.as_ref()?;
            if let Some(ready) = &entry.ready {
                return Some(ready.clone());
            }
            Arc::clone(profile)
        };
        let made = build(&profile);
        let mut map = self.map();
        let used = self.ready_bytes.load(Ordering::Relaxed);
        if let Some(entry) = map.get_mut(name) {
            // Kept only with the version it was made from, and within the budget.
            let same = entry
                .profile
                .as_ref()
                .is_some_and(|p| Arc::ptr_eq(p, &profile));
            if same && entry.ready.is_none() && used + made.len() <= READY_BYTES {
                self.ready_bytes.fetch_add(made.len(), Ordering::Relaxed);
                entry.ready = Some(made.clone());
            }
        }
        Some(made)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn usable(&self) -> bool {
        self.enabled.load(Ordering::Acquire) && !self.unsure.load(Ordering::Acquire)
    }

    pub(super) fn get(&self, name: &str) -> Option<Arc<Profile>> {
        if !self.usable() {
            return None;
        }
        self.map().get(name).and_then(|e| e.profile.clone())
    }

    /// Take before reading the database; give it back to [`ProfileCache::insert`].
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps `p`, read from the database at change seq `seq`, unless the cache was cleared since
    /// `generation` or a later change of it is known.
    pub(super) fn insert(&self, generation: u64, seq: u64, p: &Arc<Profile>) {
        let mut map = self.map();
        if !self.usable() || self.generation() != generation {
            return;
        }
        if map
            .get(p.name.as_str())
            .is_some_and(|e| e.seq > seq || e.seq == PENDING)
        {
            return;
        }
        if map.len() >= self.capacity {
            self.clear(&mut map);
            self.generation.fetch_add(1, Ordering::AcqRel);
            return;
        }
        let entry = Entry {
            seq,
            profile: Some(Arc::clone(p)),
            ready: None,
        };
        if let Some(old) = map.insert(p.name.to_string(), entry) {
            self.forget_ready(&old);
        }
    }

    /// Records a change of `name` at `seq` (or [`PENDING`]): an older cached version goes.
    pub(super) fn invalidate(&self, name: &str, seq: u64) {
        let mut map = self.map();
        match map.get_mut(name) {
            Some(e) if e.profile.is_some() && e.seq >= seq && seq != PENDING => {}
            Some(e) if e.profile.is_none() && e.seq != PENDING && e.seq >= seq => {}
            Some(e) => {
                self.forget_ready(e);
                *e = Entry::tombstone(seq);
            }
            None => {
                map.insert(name.to_owned(), Entry::tombstone(seq));
            }
        }
    }

    /// A notification named `name`: its seq comes with the change log.
    pub(super) fn invalidate_pending(&self, name: &str) {
        self.invalidate(name, PENDING);
    }

    /// Some profiles changed and the change log will tell which: until [`ProfileCache::sure`], the
    /// cache neither answers nor fills.
    fn unsure(&self) {
        self.unsure.store(true, Ordering::Release);
    }

    /// The change log was read: the cache is trustworthy again.
    fn sure(&self) {
        self.unsure.store(false, Ordering::Release);
    }

    /// Empties the cache and turns it on or off.
    fn set_enabled(&self, on: bool) {
        let mut map = self.map();
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.clear(&mut map);
        self.unsure.store(false, Ordering::Release);
        self.enabled.store(on, Ordering::Release);
    }
}

pub(super) struct Listener {
    pub pool: PgPool,
    pub codec: Arc<Codec>,
    pub cache: Arc<ProfileCache>,
    pub changes: broadcast::Sender<ProfileChange>,
    pub event_changes: broadcast::Sender<EventBatch>,
    pub connected: watch::Sender<bool>,
    pub last_seq: u64,
    /// The newest change seq handed to watchers (raised before the change is sent).
    pub published: Arc<AtomicU64>,
}

/// With no notification for this long, the listener reads the change log anyway (and so checks the
/// connection).
const IDLE: Duration = Duration::from_secs(1);
pub(super) async fn run(mut l: Listener) {
    loop {
        let mut listener = match connect(&l.pool).await {
            Ok(listener) => listener,
            Err(e) => {
                l.down(&e);
                tokio::time::sleep(IDLE).await;
                continue;
            }
        };
        // Changes made while we were away: read them, then trust the cache again.
        if let Err(e) = l.catch_up().await {
            l.down(&e);
            tokio::time::sleep(IDLE).await;
            continue;
        }
        l.cache.set_enabled(true);
        l.connected.send_replace(true);
        loop {
            let outcome = match tokio::time::timeout(IDLE, listener.try_recv()).await {
                Ok(Ok(Some(n))) => l.handle(n.payload()).await,
                Ok(Ok(None)) => Err(StoreError::Unavailable(
                    "the listen connection closed".into(),
                )),
                Ok(Err(e)) => Err(store_error(e)),
                Err(_) => l.catch_up().await,
            };
            if let Err(e) = outcome {
                l.down(&e);
                break;
            }
        }
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, StoreError> {
    let mut listener = PgListener::connect_with(pool).await.map_err(store_error)?;
    listener.listen(CHANNEL).await.map_err(store_error)?;
    Ok(listener)
}

impl Listener {
    fn down(&mut self, e: &StoreError) {
        if *self.connected.borrow() {
            tracing::warn!(error = %e, "lost the database's change notifications: cache off, not ready, reconnecting");
        }
        self.cache.set_enabled(false);
        self.connected.send_replace(false);
    }

    async fn handle(&mut self, payload: &str) -> Result<(), StoreError> {
        let mut parts = payload.split(' ');
        match parts.next() {
            Some("p") => {
                for name in parts {
                    if name == "*" {
                        self.cache.unsure();
                    } else {
                        self.cache.invalidate_pending(name);
                    }
                }
                self.catch_up().await?;
                self.cache.sure();
                Ok(())
            }
            Some("e") => {
                let batch = (|| {
                    let id = ConversationId::parse(parts.next()?, "id").ok()?;
                    let next_seq = parts.next()?.parse().ok()?;
                    let deleted = parts.next()? == "1";
                    Some(EventBatch {
                        conversation: id,
                        next_seq,
                        deleted,
                    })
                })();
                match batch {
                    Some(b) => {
                        let _ = self.event_changes.send(b);
                    }
                    None => tracing::warn!(payload, "ignoring a malformed change notification"),
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Changes after `last_seq` up to `horizon` may be gone from the log: the cache is emptied
    /// and the watchers are told.
    fn missed(&mut self, horizon: u64) {
        tracing::warn!(
            from = self.last_seq,
            to = horizon,
            "profile changes were pruned before this replica read them: cache emptied, watchers told to start over"
        );
        self.cache.set_enabled(true);
        let _ = self.changes.send(ProfileChange::Missed {
            after: self.last_seq,
        });
    }

    /// Reads the changes after `last_seq` in order; drops their names from the cache and publishes
    /// them. Rows pruned before they were read (the horizon, read after them, passed `last_seq`)
    /// empty the cache. (Seqs are shared with other records: a gap between two rows is no sign
    /// of a loss.)
    async fn catch_up(&mut self) -> Result<(), StoreError> {
        loop {
            let rows = changes_after(&self.pool, self.last_seq, CATCH_UP_BATCH).await?;
            let horizon = super::rows::watch_horizon(&self.pool).await?;
            let full = rows.len() == CATCH_UP_BATCH;
            if horizon > self.last_seq {
                self.missed(horizon);
                let newest = rows.last().map_or(0, |r| r.0);
                self.last_seq = horizon.max(newest);
                self.published.fetch_max(self.last_seq, Ordering::SeqCst);
                if full {
                    continue;
                }
                return Ok(());
            }
            for (seq, name, revision, record) in rows {
                self.last_seq = seq;
                self.cache.invalidate(&name, seq);
                self.published.fetch_max(seq, Ordering::SeqCst);
                if self.changes.receiver_count() == 0 {
                    // Nobody watches here: the change only had to leave the cache.
                    continue;
                }
                let change = self
                    .codec
                    .decode_change(seq, &name, revision, record.as_deref());
                if let Some(change) = change {
                    let _ = self.changes.send(change);
                }
            }
            if !full {
                return Ok(());
            }
        }
    }
}

/// How many change rows one read of the log takes.
const CATCH_UP_BATCH: usize = 1000;

/// A row of `profile_changes`: seq, name, revision, and the record (none for a deletion).
pub(super) type ChangeRow = (u64, String, i64, Option<Vec<u8>>);

/// Up to `limit` change rows after `after`, in seq order.
pub(super) async fn changes_after<'e, E: sqlx::Executor<'e, Database = sqlx::Postgres>>(
    executor: E,
    after: u64,
    limit: usize,
) -> Result<Vec<ChangeRow>, StoreError> {
    let rows: Vec<(i64, String, i64, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT seq, name, revision, record FROM profile_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(i64::try_from(after).unwrap_or(i64::MAX))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(executor)
    .await
    .map_err(store_error)?;
    Ok(rows
        .into_iter()
        .map(|(seq, name, revision, record)| {
            (u64::try_from(seq).unwrap_or(0), name, revision, record)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{LlmConfig, ProfileName, Timestamp};

    fn profile(name: &str, revision: i64) -> Arc<Profile> {
        Arc::new(Profile {
            name: ProfileName::parse(name, "name").unwrap(),
            llm: LlmConfig::default(),
            revision,
            create_time: Timestamp::now(),
            update_time: Timestamp::now(),
            update_principal: String::new(),
        })
    }

    /// One step of a scenario on an enabled cache.
    enum Step {
        /// A read of `.0` at revision `.2`, begun at seq `.1` in the generation the scenario
        /// started in, is offered to the cache.
        Fill(&'static str, u64, i64),
        /// The same, begun in the current generation.
        FillNow(&'static str, u64, i64),
        /// A change of `.0` at seq `.1` is known.
        Changed(&'static str, u64),
        /// A change of `.0` is notified, its seq not known yet.
        Pending(&'static str),
        /// A change of an unnamed profile is notified.
        Unsure,
        /// The log is read: every change is known again.
        Sure,
        Enabled(bool),
        /// A read of `.0` finds this revision in the cache.
        Cached(&'static str, Option<i64>),
    }

    thread_local! {
        /// How many ready responses [`revision_reply`] made on this thread.
        static BUILDS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// A ready response for the tests: the profile's revision.
    fn revision_reply(p: &Profile) -> bytes::Bytes {
        BUILDS.with(|b| b.set(b.get() + 1));
        bytes::Bytes::from(p.revision.to_string())
    }

    fn ready_revision(c: &ProfileCache, name: &str) -> Option<i64> {
        c.ready(name)
            .map(|r| String::from_utf8_lossy(&r).parse().expect("a revision"))
    }

    /// Every scenario also reads the ready responses: they answer what the cache answers.
    fn run(steps: &[Step]) {
        let c = ProfileCache::new(100);
        c.answer_with(revision_reply);
        c.set_enabled(true);
        let start = c.generation();
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Step::Fill(name, seq, revision) => c.insert(start, seq, &profile(name, revision)),
                Step::FillNow(name, seq, revision) => {
                    c.insert(c.generation(), seq, &profile(name, revision));
                }
                Step::Changed(name, seq) => c.invalidate(name, seq),
                Step::Pending(name) => c.invalidate_pending(name),
                Step::Unsure => c.unsure(),
                Step::Sure => c.sure(),
                Step::Enabled(on) => c.set_enabled(on),
                Step::Cached(name, want) => {
                    assert_eq!(c.get(name).map(|p| p.revision), want, "step {i}");
                    assert_eq!(ready_revision(&c, name), want, "step {i}: ready");
                }
            }
        }
    }

    #[test]
    fn a_read_older_than_a_known_change_is_not_cached() {
        use Step::*;
        run(&[
            Fill("a", 5, 1),
            Cached("a", Some(1)),
            // Changed at seq 7: the cached version goes; a read begun before it (seq 5) stays out.
            Changed("a", 7),
            Cached("a", None),
            Fill("a", 5, 1),
            Cached("a", None),
            // A read that returns the changed version (seq 7) is kept; an older change is ignored.
            Fill("a", 7, 2),
            Cached("a", Some(2)),
            Changed("a", 7),
            Changed("a", 6),
            Cached("a", Some(2)),
        ]);
    }

    #[test]
    fn a_notified_change_blocks_reads_until_its_seq_is_known() {
        use Step::*;
        run(&[
            Fill("a", 3, 1),
            Pending("a"),
            Cached("a", None),
            // No seq is new enough while pending.
            Fill("a", 9, 2),
            Cached("a", None),
            Changed("a", 9),
            Fill("a", 9, 2),
            Cached("a", Some(2)),
        ]);
    }

    #[test]
    fn an_unnamed_change_stops_hits_and_fills_until_the_log_is_read() {
        use Step::*;
        run(&[
            Fill("a", 3, 1),
            Unsure,
            Cached("a", None),
            Fill("b", 3, 1),
            Changed("a", 8),
            Sure,
            Cached("a", None),
            Cached("b", None),
            Fill("a", 8, 2),
            Cached("a", Some(2)),
        ]);
    }

    #[test]
    fn clearing_rejects_reads_begun_before_and_off_means_no_hits() {
        use Step::*;
        run(&[
            // Enabling again clears: a read begun before is refused.
            Enabled(true),
            Fill("a", 1, 1),
            Cached("a", None),
            FillNow("a", 1, 1),
            Cached("a", Some(1)),
            Enabled(false),
            Cached("a", None),
            FillNow("a", 1, 1),
            Cached("a", None),
        ]);
    }

    #[test]
    fn a_ready_response_is_made_once_per_cached_version() {
        let c = ProfileCache::new(100);
        assert_eq!(ready_revision(&c, "a"), None, "no builder yet");
        c.answer_with(revision_reply);
        c.set_enabled(true);
        let before = BUILDS.with(std::cell::Cell::get);
        let builds = || BUILDS.with(std::cell::Cell::get) - before;
        assert_eq!(
            ready_revision(&c, "a"),
            None,
            "not cached: the handler reads"
        );
        c.insert(c.generation(), 1, &profile("a", 1));
        assert_eq!(ready_revision(&c, "a"), Some(1));
        assert_eq!(ready_revision(&c, "a"), Some(1));
        assert_eq!(builds(), 1, "made once, then kept");
        c.invalidate("a", 2);
        assert_eq!(ready_revision(&c, "a"), None, "a change drops it");
        c.insert(c.generation(), 2, &profile("a", 2));
        assert_eq!(ready_revision(&c, "a"), Some(2));
        assert_eq!(builds(), 2, "made again for the new version");
        c.unsure();
        assert_eq!(
            ready_revision(&c, "a"),
            None,
            "an unsure cache answers nothing"
        );
    }

    thread_local! {
        /// How many replies [`large_reply`] made on this thread.
        static LARGE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// A ready response of 6 MiB: three of them are over the budget.
    fn large_reply(_: &Profile) -> bytes::Bytes {
        LARGE.with(|b| b.set(b.get() + 1));
        bytes::Bytes::from(vec![0_u8; 6 << 20])
    }

    #[test]
    fn ready_responses_are_kept_within_their_budget() {
        let c = ProfileCache::new(100);
        c.answer_with(large_reply);
        c.set_enabled(true);
        for (seq, name) in (1..).zip(["a", "b", "c"]) {
            c.insert(c.generation(), seq, &profile(name, 1));
        }
        let made = || LARGE.with(std::cell::Cell::get);
        for name in ["a", "b", "c", "a", "b", "c"] {
            assert!(c.ready(name).is_some(), "{name} is answered");
        }
        assert_eq!(
            made(),
            4,
            "a and b kept (12 MiB); c over the 16 MiB made each time"
        );
        assert_eq!(c.ready_bytes.load(Ordering::Relaxed), 12 << 20);
        c.invalidate("a", 9);
        assert_eq!(
            c.ready_bytes.load(Ordering::Relaxed),
            6 << 20,
            "a's reply went"
        );
        assert!(c.ready("c").is_some() && c.ready("c").is_some());
        assert_eq!(made(), 5, "then c's is kept");
        c.set_enabled(false);
        assert_eq!(
            c.ready_bytes.load(Ordering::Relaxed),
            0,
            "a cleared cache keeps none"
        );
    }
}
