//! The profile change log: every profile change by its seq (8 bytes, big-endian), written in the
//! transaction of the change, so that a watch resumes after a disconnect or a restart with no gap
//! and no duplicate. An entry names the profile and revision only: a put's record is the kept
//! revision in the history, which carries the same seq. When the history no longer keeps it (a
//! later revision pushed it out, a delete was purged, the name was made anew), a later change in
//! the log supersedes it, so the replay skips it: the watcher still ends in the same state. `--watch-history` bounds it; the highest seq pruned (the horizon, in the
//! default tree) is kept, so that a watch resuming from before it is told so (OUT_OF_RANGE) instead
//! of silently missing changes. The log is not backed up: a restore starts it afresh.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::ops::Op;
use super::SledStore;
use crate::domain::ProfileName;
use crate::store::records::TreeId;
use crate::store::records::{history_key, or_skip};
use crate::store::{too_new, too_old, ProfileChange, ProfileWatch, StoreError, WatchHistory};

/// Where the horizon is kept, in the default tree.
const HORIZON_KEY: &[u8] = b"watch_horizon";
/// How many entries one pruning step deletes.
const PRUNE_BATCH: usize = 1000;

/// One entry: when (ms), the revision, the name, and what happened: a deletion, a put whose record
/// is the kept revision, or a put that carries its record (the history dropped it). Laid out as
/// time (8 bytes), revision (8), kind (1: 0, 1 or 2), the name's length (4), the name, the record.
struct Entry {
    time_ms: i64,
    revision: i64,
    kind: Kind,
    name: String,
}

enum Kind {
    Delete,
    Put,
    /// The record as the history kept it (sealed under the history key of this name and revision).
    Carried(Vec<u8>),
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

fn encode_entry(time_ms: i64, name: &str, revision: i64, kind: &Kind) -> Vec<u8> {
    let record: &[u8] = match kind {
        Kind::Carried(r) => r,
        _ => &[],
    };
    let mut v = Vec::with_capacity(21 + name.len() + record.len());
    v.extend_from_slice(&time_ms.to_be_bytes());
    v.extend_from_slice(&revision.to_be_bytes());
    v.push(match kind {
        Kind::Delete => 0,
        Kind::Put => 1,
        Kind::Carried(_) => 2,
    });
    v.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_be_bytes());
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(record);
    v
}

fn decode_entry(bytes: &[u8]) -> Option<Entry> {
    let (time, rest) = bytes.split_first_chunk::<8>()?;
    let (revision, rest) = rest.split_first_chunk::<8>()?;
    let (&kind, rest) = rest.split_first()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let (name, record) = rest.split_at_checked(usize::try_from(u32::from_be_bytes(*len)).ok()?)?;
    let kind = match (kind, record.is_empty()) {
        (0, true) => Kind::Delete,
        (1, true) => Kind::Put,
        (2, false) => Kind::Carried(record.to_vec()),
        _ => return None,
    };
    Some(Entry {
        time_ms: i64::from_be_bytes(*time),
        revision: i64::from_be_bytes(*revision),
        kind,
        name: String::from_utf8(name.to_vec()).ok()?,
    })
}

fn seq_of(key: &[u8]) -> u64 {
    key.try_into().map_or(0, u64::from_be_bytes)
}

/// The log entry of a put (its record goes into the history in the same transaction).
pub(super) fn logged_put(seq: u64, name: &str, revision: i64) -> Op {
    Op::Log(seq, encode_entry(now_ms(), name, revision, &Kind::Put))
}

/// The log entry of a deletion (or the old name of a rename).
pub(super) fn logged_delete(seq: u64, name: &ProfileName, revision: i64) -> Op {
    Op::Log(
        seq,
        encode_entry(now_ms(), name.as_str(), revision, &Kind::Delete),
    )
}

impl SledStore {
    /// The ops that drop the kept revision under `key` (stored as `bytes`): when the log still
    /// names it, its entry takes the record along, so a replay still sends it.
    pub(super) fn drop_revision(
        &self,
        key: &[u8],
        bytes: &[u8],
        ops: &mut Vec<Op>,
    ) -> Result<(), StoreError> {
        ops.push(Op::Del(TreeId::History, key.to_vec()));
        // Only the seq is needed (the bytes are carried as they are): no decoding of the profile,
        // no opening of its secrets, on every write that pushes a revision out.
        #[derive(serde::Deserialize)]
        struct SeqOnly {
            seq: u64,
        }
        let Ok(SeqOnly { seq }) = serde_json::from_slice(bytes) else {
            return Ok(());
        };
        let Some(logged) = self.change_log.get(seq.to_be_bytes())? else {
            return Ok(());
        };
        if let Some(e) = decode_entry(&logged).filter(|e| matches!(e.kind, Kind::Put)) {
            let carried = Kind::Carried(bytes.to_vec());
            let entry = encode_entry(e.time_ms, &e.name, e.revision, &carried);
            ops.push(Op::Relog(seq, entry));
        }
        Ok(())
    }

    /// The ops that drop the records the log carries for `name` (an explicit purge destroys
    /// them with the history; the replay then skips those puts).
    pub(super) fn forget_carried(&self, name: &str, ops: &mut Vec<Op>) -> Result<(), StoreError> {
        for item in self.change_log.iter() {
            let (key, bytes) = item?;
            let carried = decode_entry(&bytes)
                .is_some_and(|e| e.name == name && matches!(e.kind, Kind::Carried(_)));
            if carried {
                ops.push(Op::Unlog(seq_of(&key)));
            }
        }
        Ok(())
    }

    /// The ops that seal the records the log carries with the current key (`rotate-keys`); one
    /// that does not open is dropped (the replay then skips that put). Returns how many changed.
    pub(super) fn reseal_carried(&self, ops: &mut Vec<Op>) -> Result<usize, StoreError> {
        let mut changed = 0;
        for item in self.change_log.iter() {
            let (key, bytes) = item?;
            let Some(Entry {
                time_ms,
                revision,
                kind: Kind::Carried(record),
                name,
            }) = decode_entry(&bytes)
            else {
                continue;
            };
            let seq = seq_of(&key);
            let opened = self
                .codec
                .decode_revision(&history_key(&name, revision), &record);
            let resealed = match opened {
                Ok(mut r) => Kind::Carried(self.encode_profile(&mut r)?),
                Err(_) => {
                    ops.push(Op::Unlog(seq));
                    continue;
                }
            };
            ops.push(Op::Relog(
                seq,
                encode_entry(time_ms, &name, revision, &resealed),
            ));
            changed += 1;
        }
        Ok(changed)
    }

    /// Every seq up to this one may be missing from the log.
    fn horizon(&self) -> Result<u64, StoreError> {
        Ok(self.db.get(HORIZON_KEY)?.map_or(0, |v| seq_of(&v)))
    }

    fn raise_horizon(&self, to: u64) -> Result<(), StoreError> {
        self.db
            .fetch_and_update(HORIZON_KEY, |old| {
                let old = old.map_or(0, seq_of);
                Some(old.max(to).to_be_bytes().to_vec())
            })
            .map(drop)
            .map_err(StoreError::from)
    }

    /// At open: a data dir written before the log was kept keeps no change before now. Returns
    /// the last change seq, which every watcher has seen at most.
    pub(super) fn open_change_log(&self) -> Result<u64, StoreError> {
        if self.db.get(HORIZON_KEY)?.is_none() {
            let last = self.next_seq()? - 1;
            self.raise_horizon(last)?;
        }
        let last = self.change_log.last()?.map_or(0, |(k, _)| seq_of(&k));
        Ok(last.max(self.horizon()?))
    }

    /// Drops the whole log (a restore, a key rotation): a watch can resume only after what comes
    /// next.
    pub(super) fn restart_change_log(&self) -> Result<(), StoreError> {
        let last = self.next_seq()? - 1;
        self.raise_horizon(last)?;
        self.change_log.clear()?;
        *self.logged_count() = Some(0);
        self.published.fetch_max(last, Ordering::SeqCst);
        Ok(())
    }

    /// Subscribes to the live changes, then reads the kept ones after `after` that are published:
    /// the later ones come live.
    pub(super) fn resume_watch(&self, after: u64) -> Result<ProfileWatch, StoreError> {
        let changes = self.changes.subscribe();
        let upto = self.published.load(Ordering::SeqCst);
        if after > upto {
            return Err(too_new(after, upto));
        }
        let lo = (after + 1).to_be_bytes();
        let mut replay = Vec::new();
        // Every entry after `after` (the unpublished ones too): when, by seq.
        let mut times = Vec::new();
        for item in self.change_log.range(&lo[..]..) {
            let (key, bytes) = item?;
            let seq = seq_of(&key);
            let Some(entry) = decode_entry(&bytes) else {
                tracing::error!(seq, "damaged profile change log entry, skipping");
                continue;
            };
            times.push((seq, entry.time_ms));
            if seq <= upto {
                replay.extend(self.logged_change(seq, entry)?);
            }
        }
        // Read after the entries: a pruning that raced them has raised it already. What the
        // next pruning would take counts as taken, so the answer does not depend on its timing.
        let horizon = self.horizon()?.max(self.due_for_pruning(&times));
        if after < horizon {
            return Err(too_old(after, horizon));
        }
        Ok(ProfileWatch {
            snapshot: Vec::new(),
            replay,
            covered: upto + 1,
            start: upto,
            changes,
        })
    }

    /// The newest of `entries` (seq and time, in seq order, the newest last) that `--watch-history`
    /// no longer keeps; 0 for none.
    fn due_for_pruning(&self, entries: &[(u64, i64)]) -> u64 {
        let gone = match self.watch_history {
            WatchHistory::Changes(n) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                entries.len().checked_sub(n).and_then(|k| k.checked_sub(1))
            }
            WatchHistory::Age(age) => {
                let keep_from = now_ms() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
                entries.iter().rposition(|(_, t)| *t < keep_from)
            }
        };
        gone.map_or(0, |i| entries[i].0)
    }

    /// The change an entry records; none for a put the history no longer keeps with this seq.
    fn logged_change(&self, seq: u64, entry: Entry) -> Result<Option<ProfileChange>, StoreError> {
        let Entry {
            revision,
            kind,
            name,
            ..
        } = entry;
        let key = history_key(&name, revision);
        let bytes = match kind {
            Kind::Delete => {
                let name = ProfileName::parse(&name, "name").ok();
                return Ok(name.map(|name| ProfileChange::Delete {
                    seq,
                    name,
                    revision,
                }));
            }
            Kind::Carried(bytes) => bytes,
            Kind::Put => match self.history.get(&key)? {
                Some(bytes) => bytes.to_vec(),
                // Dropped since the entry was read: the entry carries it now, unless it was
                // purged (then the deletion that follows stands for it).
                None => match self
                    .change_log
                    .get(seq.to_be_bytes())?
                    .and_then(|b| decode_entry(&b))
                {
                    Some(Entry {
                        kind: Kind::Carried(bytes),
                        ..
                    }) => bytes,
                    _ => return Ok(None),
                },
            },
        };
        let kept = or_skip(self.codec.decode_revision(&key, &bytes), "kept revision");
        Ok(kept.filter(|r| r.seq == seq).map(|r| ProfileChange::Put {
            seq,
            profile: Arc::new(r.profile),
        }))
    }

    /// How many entries the log holds (counted the first time, with no write under way: every
    /// write that logs holds the write lock).
    fn logged_entries(&self) -> usize {
        if let Some(n) = *self.logged_count() {
            return n;
        }
        let _writes = self.lock();
        let n = self.change_log.len();
        *self.logged_count() = Some(n);
        n
    }

    /// Counts `added` entries into the log and `removed` out of it (once it has been counted).
    pub(super) fn count_logged(&self, added: usize, removed: usize) {
        if let Some(n) = self.logged_count().as_mut() {
            *n = (*n + added).saturating_sub(removed);
        }
    }

    fn logged_count(&self) -> std::sync::MutexGuard<'_, Option<usize>> {
        self.logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The newest change seq published to watchers.
    pub(super) fn published_seq(&self) -> u64 {
        self.published.load(Ordering::SeqCst)
    }

    /// Deletes what `--watch-history` no longer keeps, raising the horizon first; returns how
    /// many entries went.
    pub(crate) async fn prune_changes(&self) -> Result<usize, StoreError> {
        // One at a time: each counts what the other deletes.
        let Ok(_pruning) = self.pruning.try_lock() else {
            return Ok(0);
        };
        // The keys of the oldest entries that go, read once: sled steps through a tree from its
        // root at each key, so every pass over the log costs (reading all of it backwards to the
        // n+1st newest each second took about 4% of the server's CPU under 64 writers).
        let gone: Vec<sled::IVec> = match self.watch_history {
            WatchHistory::Changes(n) => {
                // The entries over `n`, from the count kept. A write that removes entries (a
                // purge) between the count and the keys would make the oldest `over` reach into
                // the newest `n`: then this pruning stops, and the next one counts again. (A
                // write that adds entries adds the newest, which none of these keys is.)
                let removals = self.unlogging.load(Ordering::SeqCst);
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                let over = self.logged_entries().saturating_sub(n);
                let keys: Vec<sled::IVec> = self
                    .change_log
                    .iter()
                    .keys()
                    .take(over)
                    .collect::<Result<_, _>>()?;
                if removals % 2 == 1 || self.unlogging.load(Ordering::SeqCst) != removals {
                    return Ok(0);
                }
                keys
            }
            WatchHistory::Age(age) => {
                let keep_from = now_ms() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
                let mut gone = Vec::new();
                for item in self.change_log.iter() {
                    let (key, bytes) = item?;
                    if decode_entry(&bytes).is_some_and(|e| e.time_ms >= keep_from) {
                        break;
                    }
                    gone.push(key);
                }
                gone
            }
        };
        let Some(cut) = gone.last().map(|k| seq_of(k)) else {
            return Ok(0);
        };
        self.raise_horizon(cut)?;
        for keys in gone.chunks(PRUNE_BATCH) {
            let mut batch = sled::Batch::default();
            for key in keys {
                batch.remove(key.clone());
            }
            self.change_log.apply_batch(batch)?;
            self.count_logged(0, keys.len());
        }
        Ok(gone.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::LlmConfig;
    use crate::store::requests::{ProfileDelete, ProfilePut};
    use crate::store::sled::StoreOptions;
    use crate::store::PutMode;

    /// Pruning keeps the newest `--watch-history` entries, from the count the store keeps through
    /// new entries, entries given new bytes (a dropped revision carried), entries removed (a
    /// purge) and a reopen (counted again).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pruning_keeps_the_newest_entries_by_the_count_kept() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            watch_history: WatchHistory::Changes(3),
            history_revisions: 2,
            ..StoreOptions::default()
        };
        let put = |name: &str, model: &str| ProfilePut {
            name: ProfileName::parse(name, "name").unwrap(),
            llm: LlmConfig {
                model: model.into(),
                ..LlmConfig::default()
            },
            mode: PutMode::Upsert,
            expected_revision: None,
            by: "test",
        };
        let newest = |store: &SledStore, k: usize| -> Vec<u64> {
            let all: Vec<u64> = store
                .change_log
                .iter()
                .keys()
                .map(|k| seq_of(&k.unwrap()))
                .collect();
            assert_eq!(all.len(), k, "entries kept: {all:?}");
            all
        };
        {
            let store = SledStore::open(dir.path(), &options).unwrap();
            let mut seqs = Vec::new();
            for i in 0..5 {
                let (p, _) = store
                    .put_profile(put(&format!("p{i}"), "m1"))
                    .await
                    .unwrap();
                seqs.push(store.read_profile(p.name.as_str()).unwrap().unwrap().seq);
            }
            assert_eq!(store.prune_changes().await.unwrap(), 2);
            assert_eq!(newest(&store, 3), seqs[2..]);
            // p4's first revision is still logged: the third drops it from the history and its
            // entry carries it (new bytes, still one entry).
            store.put_profile(put("p4", "m2")).await.unwrap();
            store.put_profile(put("p4", "m3")).await.unwrap();
            assert_eq!(store.logged_entries(), 5);
            assert_eq!(store.prune_changes().await.unwrap(), 2);
            newest(&store, 3);
            // A purge removes the entries carrying p4's records and logs its deletion.
            let name = ProfileName::parse("p4", "name").unwrap();
            let delete = ProfileDelete {
                name: &name,
                expected_revision: None,
                allow_missing: false,
                force: false,
                purge: true,
                by: "test",
            };
            store.delete_profile(delete).await.unwrap();
            let left = store.change_log.len();
            assert_eq!(store.logged_entries(), left);
            store.prune_changes().await.unwrap();
            newest(&store, left.min(3));
        }
        // Reopened, the count starts again from the log itself.
        let store = SledStore::open(dir.path(), &options).unwrap();
        for i in 0..4 {
            store
                .put_profile(put(&format!("q{i}"), "m1"))
                .await
                .unwrap();
        }
        store.prune_changes().await.unwrap();
        newest(&store, 3);
        assert_eq!(store.logged_entries(), 3);
    }

    /// A pruning that overlaps a write removing entries deletes nothing (its count and the keys
    /// it read may disagree); the next one prunes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pruning_that_overlaps_a_removal_leaves_it_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            watch_history: WatchHistory::Changes(1),
            ..StoreOptions::default()
        };
        let store = SledStore::open(dir.path(), &options).unwrap();
        for i in 0..3 {
            let put = ProfilePut {
                name: ProfileName::parse(&format!("p{i}"), "name").unwrap(),
                llm: LlmConfig {
                    model: "m".into(),
                    ..LlmConfig::default()
                },
                mode: PutMode::Create,
                expected_revision: None,
                by: "test",
            };
            store.put_profile(put).await.unwrap();
        }
        store.unlogging.fetch_add(1, Ordering::SeqCst);
        assert_eq!(store.prune_changes().await.unwrap(), 0);
        assert_eq!(store.change_log.len(), 3);
        store.unlogging.fetch_add(1, Ordering::SeqCst);
        assert_eq!(store.prune_changes().await.unwrap(), 2);
        assert_eq!(store.change_log.len(), 1);
    }

    #[test]
    fn entries_read_back_as_written() {
        let put = encode_entry(5, "a\0b", 7, &Kind::Put);
        let e = decode_entry(&put).unwrap();
        assert_eq!((e.time_ms, e.name.as_str(), e.revision), (5, "a\0b", 7));
        assert!(matches!(e.kind, Kind::Put));
        let del = decode_entry(&encode_entry(5, "gone", 3, &Kind::Delete)).unwrap();
        assert!(matches!(del.kind, Kind::Delete));
        let carried = encode_entry(5, "c", 2, &Kind::Carried(b"{}".to_vec()));
        let c = decode_entry(&carried).unwrap();
        assert!(matches!(c.kind, Kind::Carried(ref r) if r == b"{}"));
        assert_eq!(c.name, "c");
        // Truncated, of an unknown kind, or with a record it should not have is damage.
        assert!(decode_entry(&put[..10]).is_none());
        let mut bad = put.clone();
        bad[16] = 9;
        assert!(decode_entry(&bad).is_none());
        let mut trailing = put;
        trailing.push(1);
        assert!(decode_entry(&trailing).is_none());
    }
}
