//! The sled implementation of the store: one tree per resource, JSON records, group-committed flushes.
mod changelog;
mod conversations;
mod decoded;
mod documents;
mod flush;
mod maintenance;
mod ops;
mod profiles;
mod together;

pub use self::maintenance::CheckReport;

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use fs2::FileExt;
use sled::Tree;
use tokio::sync::broadcast;

use self::decoded::Shared;
use self::flush::Flusher;
use self::ops::Op;
use crate::domain::{Conversation, Profile};
use crate::store::codec::{Codec, ProfileRecord};
use crate::store::crypto::{KeyError, KeySource, SecretCipher};
use crate::store::records::TreeId;
use crate::store::records::{place, RotationReport};
use crate::store::{Change, EventBatch, ProfileChange, StoreError, WatchHistory};

/// Where the amount added to sled's id counter to make a seq is kept, in the default tree.
const SEQ_BASE_KEY: &[u8] = b"seq_base";

/// How many changes a watcher may fall behind before it is cut off.
const WATCH_BACKLOG: usize = 4096;

/// How many revisions of each profile the history keeps unless told otherwise.
pub const DEFAULT_HISTORY_REVISIONS: usize = 10;

/// Settings of the sled store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// The keys that encrypt secrets at rest (`<key id>:<base64>` lines, the first encrypts); `None`:
    /// the data dir's own `secret.key`, created on first open.
    pub secret_key_file: Option<PathBuf>,
    /// How many revisions of each profile the history keeps, the current one included.
    pub history_revisions: usize,
    /// How much of the profile change log is kept for watches that resume.
    pub watch_history: WatchHistory,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 32 * 1024 * 1024,
            secret_key_file: None,
            history_revisions: DEFAULT_HISTORY_REVISIONS,
            watch_history: WatchHistory::default(),
        }
    }
}

/// Why the data dir could not be opened: each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The folder cannot be created or written.
    #[error("data dir {dir}: cannot create or write it: {source}")]
    Unwritable {
        /// The data dir.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error("data dir {dir} is in use by another profile-registry process (lock {lock} is held); stop it or choose another --data-dir")]
    InUse {
        /// The data dir.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// sled refused to open the database.
    #[error("data dir {dir}: the database cannot be opened (damaged, or not a profile-registry data dir): {reason}")]
    Corrupt {
        /// The data dir.
        dir: PathBuf,
        /// sled's reason.
        reason: String,
    },
    /// The encryption keys cannot be read or created.
    #[error(transparent)]
    Keys(#[from] KeyError),
}

/// The stored records of the names an import brings (`items`: name and content), as `read` finds
/// them: what the import's plan weighs each item against.
fn stored_of<N: Clone + Eq + std::hash::Hash, C, T>(
    items: &[(N, C)],
    read: impl Fn(&N) -> Result<Option<T>, StoreError>,
) -> Result<HashMap<N, T>, StoreError> {
    let mut stored = HashMap::new();
    for (name, _) in items {
        if let Some(record) = read(name)? {
            stored.insert(name.clone(), record);
        }
    }
    Ok(stored)
}

/// The sled store. Writes are serialized by one lock (they take microseconds); the expensive part,
/// the flush, is shared by every writer waiting at that moment.
pub struct SledStore {
    pub(super) db: sled::Db,
    pub(super) profiles: Tree,
    pub(super) conversations: Tree,
    pub(super) events: Tree,
    pub(super) bindings: Tree,
    pub(super) documents: Tree,
    pub(super) history: Tree,
    pub(super) deleted: Tree,
    /// The profile change log, by seq (see `changelog.rs`).
    pub(super) change_log: Tree,
    /// How many revisions of each profile the history keeps (at least 1: the current one).
    pub(super) history_revisions: i64,
    write_lock: Mutex<()>,
    /// The turn of an rpc's write, taken before `write_lock`: waiting for it does not hold a tokio
    /// worker, and a storage fault ends the wait (see [`Self::durably`]).
    write_turn: tokio::sync::Mutex<()>,
    /// Puts of profiles and appends of events waiting for the write turn (see `together.rs`).
    puts: together::Queue<profiles::Put>,
    appends: together::Queue<conversations::Append>,
    pub(super) flusher: Flusher<Change>,
    changes: broadcast::Sender<ProfileChange>,
    /// The newest profile change seq published (raised before the change is sent, so a watcher
    /// that reads it after subscribing gets every later change live).
    published: Arc<AtomicU64>,
    watch_history: WatchHistory,
    /// How many entries the change log holds: counted at its first pruning, then kept by every
    /// write that adds or removes one (`None` until then).
    logged: Mutex<Option<usize>>,
    /// Counts the writes that remove change-log entries, twice each: odd while one is under way,
    /// so that a pruning knows when its count and the keys it read may disagree.
    unlogging: AtomicU64,
    /// Held by the pruning under way (one at a time).
    pruning: Mutex<()>,
    /// Added to sled's id counter to make a seq (raised by a restore).
    seq_base: AtomicU64,
    pub(super) event_changes: broadcast::Sender<EventBatch>,
    codec: Codec,
    /// Profiles kept decoded beside their stored bytes (see `decoded.rs`).
    decoded: decoded::DecodedProfiles,
    _lock_file: File,
}

impl SledStore {
    /// The key that authenticates this store's page tokens (see [`SecretCipher::page_key`]).
    pub fn page_key(&self) -> [u8; 32] {
        self.codec.cipher().page_key()
    }

    /// Opens (creating when absent) the store in `dir`, holding an exclusive lock on it.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Arc<Self>, OpenError> {
        let unwritable = |source| OpenError::Unwritable {
            dir: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(unwritable)?;
        let lock_path = dir.join("LOCK");
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(unwritable)?;
        if lock_file.try_lock_exclusive().is_err() {
            return Err(OpenError::InUse {
                dir: dir.to_owned(),
                lock: lock_path,
            });
        }
        let (cipher, source) = SecretCipher::load(options.secret_key_file.as_deref(), dir)?;
        if let KeySource::Local { path, created } = &source {
            tracing::warn!(
                key_file = %path.display(),
                created,
                "the encryption key lives beside the data (in the data dir): whoever can read the data dir can read every secret; give --secret-key-file (e.g. a mounted Kubernetes Secret) to keep it apart"
            );
        }
        let corrupt = |reason: String| OpenError::Corrupt {
            dir: dir.to_owned(),
            reason,
        };
        let config = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(options.cache_bytes)
            .flush_every_ms(None);
        // sled may panic on some damaged files: report it as a damaged data dir, not a trace.
        let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .map_err(|_| corrupt("the database files are damaged".into()))?
            .map_err(|e| match e {
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
                    unwritable(io)
                }
                other => corrupt(other.to_string()),
            })?;
        let tree = |t: TreeId| db.open_tree(t.name()).map_err(|e| corrupt(e.to_string()));
        let (profiles, conversations, events, bindings, documents, history, deleted) = (
            tree(TreeId::Profiles)?,
            tree(TreeId::Conversations)?,
            tree(TreeId::Events)?,
            tree(TreeId::Bindings)?,
            tree(TreeId::Documents)?,
            tree(TreeId::History)?,
            tree(TreeId::Deleted)?,
        );
        let (changes, _) = broadcast::channel(WATCH_BACKLOG);
        let (event_changes, _) = broadcast::channel(WATCH_BACKLOG);
        let change_log = db
            .open_tree("changes")
            .map_err(|e| corrupt(e.to_string()))?;
        let (publish_profile, publish_events) = (changes.clone(), event_changes.clone());
        let published = Arc::new(AtomicU64::new(0));
        let raise = Arc::clone(&published);
        let flusher = Flusher::start(
            db.clone(),
            dir.to_owned(),
            Box::new(move |c| match c {
                Change::Profile(c) => {
                    raise.fetch_max(c.seq(), Ordering::SeqCst);
                    let _ = publish_profile.send(c);
                }
                Change::Events(c) => {
                    let _ = publish_events.send(c);
                }
            }),
        )
        .map_err(unwritable)?;
        let seq_base = db
            .get(SEQ_BASE_KEY)
            .map_err(|e| corrupt(e.to_string()))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        let store = Arc::new(Self {
            db,
            profiles,
            conversations,
            events,
            bindings,
            documents,
            history,
            deleted,
            change_log,
            history_revisions: i64::try_from(options.history_revisions.max(1)).unwrap_or(i64::MAX),
            write_lock: Mutex::new(()),
            write_turn: tokio::sync::Mutex::new(()),
            puts: together::Queue::default(),
            appends: together::Queue::default(),
            flusher,
            changes,
            published,
            watch_history: options.watch_history,
            logged: Mutex::new(None),
            unlogging: AtomicU64::new(0),
            pruning: Mutex::new(()),
            seq_base: AtomicU64::new(seq_base),
            event_changes,
            codec: Codec::new(cipher),
            decoded: decoded::DecodedProfiles::new(
                decoded::DECODED_PROFILES,
                crate::store::READY_BYTES,
            ),
            _lock_file: lock_file,
        });
        let last = store
            .open_change_log()
            .map_err(|e| corrupt(e.to_string()))?;
        store.published.store(last, Ordering::SeqCst);
        Ok(store)
    }

    /// How many profiles and conversations are stored (a scan of the keys: call it off the hot path).
    pub fn counts(&self) -> (usize, usize) {
        (self.profiles.len(), self.conversations.len())
    }

    /// The database's size on disk, in bytes.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// The sled tree of `t`.
    pub(super) fn tree(&self, t: TreeId) -> &Tree {
        match t {
            TreeId::Profiles => &self.profiles,
            TreeId::Conversations => &self.conversations,
            TreeId::Bindings => &self.bindings,
            TreeId::Events => &self.events,
            TreeId::Documents => &self.documents,
            TreeId::History => &self.history,
            TreeId::Deleted => &self.deleted,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, ()> {
        self.write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `write` under the write lock, then waits until the epoch it ends with (see
    /// [`Self::changed`], [`Self::unchanged`]) is on disk: every write answers only once it, and
    /// every write before it, is durable.
    pub(super) async fn durably<T>(
        &self,
        write: impl FnOnce() -> Result<(u64, T), StoreError>,
    ) -> Result<T, StoreError> {
        // On a full volume a sled write can block for good inside sled; the writers queued
        // behind it get the fault instead of holding every tokio worker (the fail-stop, health
        // and the other answers need them).
        let turn = tokio::select! {
            biased;
            turn = self.write_turn.lock() => turn,
            fault = crate::store::fault::raised() => return Err(StoreError::Volume(fault)),
        };
        if let Some(fault) = crate::store::fault::current() {
            return Err(StoreError::Volume(fault));
        }
        let (epoch, value) = {
            let _guard = self.lock();
            self.flusher.watched(write)?
        };
        drop(turn);
        self.flusher.wait(epoch).await?;
        Ok(value)
    }

    /// The end of a write that applied its ops: `changes` publish once they are durable.
    pub(super) fn changed<C: Into<Change>, T>(
        &self,
        changes: impl IntoIterator<Item = C>,
        value: T,
    ) -> Result<(u64, T), StoreError> {
        Ok((self.flusher.committed(changes), value))
    }

    /// The end of a write that changed nothing: it still waits for what earlier writes applied,
    /// so no answer shows state that is not durable yet.
    pub(super) fn unchanged<T>(&self, value: T) -> Result<(u64, T), StoreError> {
        Ok((self.flusher.written(), value))
    }

    /// The next store-wide change seq: 1 and up (as on PostgreSQL), so that 0 means "none"; a
    /// restored store's start far above the backup's (see `restore`).
    pub(super) fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()? + 1 + self.seq_base.load(Ordering::SeqCst))
    }

    /// Makes every later seq at least `from` (sled's own counter only counts up by one).
    pub(super) fn raise_seqs(&self, from: u64) -> Result<(), StoreError> {
        let next = self.next_seq()?;
        if next < from {
            let base = self.seq_base.load(Ordering::SeqCst) + (from - next);
            self.db.insert(SEQ_BASE_KEY, &base.to_be_bytes())?;
            self.seq_base.store(base, Ordering::SeqCst);
        }
        Ok(())
    }

    pub(super) fn read_profile(&self, name: &str) -> Result<Option<ProfileRecord>, StoreError> {
        Ok(self.read_shared(name)?.map(|(seq, profile)| ProfileRecord {
            seq,
            profile: Arc::unwrap_or_clone(profile),
        }))
    }

    /// The current profile `name`, shared with the decoded copies (nothing is copied).
    pub(super) fn read_shared(&self, name: &str) -> Result<Option<Shared>, StoreError> {
        self.profiles
            .get(name.as_bytes())?
            .map(|bytes| self.decode_current(name.as_bytes(), &bytes, true))
            .transpose()
    }

    /// From now on ready responses are made by `build` (see [`Self::ready_profile`]), and every
    /// profile written keeps its own.
    pub(crate) fn answer_with(&self, build: fn(&Profile) -> bytes::Bytes) {
        self.decoded.answer_with(build);
    }

    /// The ready response of the current profile `name` (see
    /// [`decoded::DecodedProfiles::ready_current`]): a trusted one without reading the record,
    /// else the one kept for its stored bytes, or made from them; `None` when there is no such
    /// profile, or before [`Self::answer_with`].
    pub(crate) fn ready_profile(&self, name: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        let key = name.as_bytes();
        let stored = || Ok(self.profiles.get(key)?);
        let decode = |b: &[u8]| self.codec.decode_profile(key, b);
        self.decoded.ready_current(key, stored, decode)
    }

    /// A current profile record (stored in the profiles tree under `key`), decoded once per
    /// version: reads of an unchanged profile take the decoded copy (kept by reads of one profile,
    /// `keep`, not by scans).
    pub(super) fn decode_current(
        &self,
        key: &[u8],
        bytes: &[u8],
        keep: bool,
    ) -> Result<Shared, StoreError> {
        self.decoded
            .get_or_decode(key, bytes, keep, |b| self.codec.decode_profile(key, b))
    }

    pub(super) fn encode_profile(&self, record: &mut ProfileRecord) -> Result<Vec<u8>, StoreError> {
        self.codec.encode_profile(record)
    }

    pub(super) fn decode_profile(
        &self,
        key: &[u8],
        bytes: &[u8],
    ) -> Result<ProfileRecord, StoreError> {
        self.codec.decode_profile(key, bytes)
    }

    pub(super) fn encode_conversation(&self, c: &Conversation) -> Result<Vec<u8>, StoreError> {
        self.codec.encode_conversation(c)
    }

    pub(super) fn open_conversation(
        &self,
        key: &[u8],
        c: Conversation,
    ) -> Result<Conversation, StoreError> {
        self.codec.open_conversation(key, c)
    }

    /// The stored bytes of a profile record (secrets sealed), for tests and repair tools.
    #[doc(hidden)]
    pub fn raw_profile_record(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.profiles.get(name.as_bytes())?.map(|b| b.to_vec()))
    }

    /// Replaces the stored bytes of a profile record as they are, for tests and repair tools.
    #[doc(hidden)]
    pub fn put_raw_profile_record(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let keys = [name.as_bytes()];
        let _writing = self.decoded.writing(Some(&keys));
        self.profiles.insert(name.as_bytes(), bytes)?;
        self.db.flush()?;
        Ok(())
    }

    /// Re-seals the secrets of every record of one tree into `ops`; damaged records go to the report.
    fn reseal_tree(
        &self,
        tree: TreeId,
        report: &mut RotationReport,
        ops: &mut Vec<Op>,
    ) -> Result<(), StoreError> {
        for item in self.tree(tree).iter() {
            let (key, bytes) = item?;
            if let Some(sealed) = self
                .codec
                .reseal_stored(tree, &place(tree, &key), &bytes, report)
            {
                ops.push(Op::Put(tree, key.to_vec(), sealed));
            }
        }
        Ok(())
    }

    /// Re-encrypts every secret (profiles and inline LLMs of conversations) with the first key, in
    /// one transaction. Records whose secrets do not open are left as they are and reported.
    pub async fn rotate_keys(&self) -> Result<RotationReport, StoreError> {
        self.durably(|| {
            let mut report = RotationReport {
                key_id: self.codec.cipher().sealing_key_id().to_owned(),
                ..RotationReport::default()
            };
            let mut ops = Vec::new();
            // Every tree whose records hold secrets.
            for tree in [
                TreeId::Profiles,
                TreeId::Conversations,
                TreeId::Documents,
                TreeId::History,
            ] {
                self.reseal_tree(tree, &mut report, &mut ops)?;
            }
            // The records the change log carries for a resumed watch are sealed too.
            self.reseal_carried(&mut ops)?;
            if ops.is_empty() {
                self.unchanged(report)
            } else {
                self.apply(&ops)?;
                self.changed(std::iter::empty::<Change>(), report)
            }
        })
        .await
    }
}
