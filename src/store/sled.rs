//! The sled implementation of the store: one tree per resource, JSON records, group-committed flushes.
use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use fs2::FileExt;
use serde::Serialize;
use sled::Tree;
use tokio::sync::broadcast;

use super::codec::{conversation_secrets, profile_secrets, Codec, ProfileRecord, SecretVisitor};
use super::conversations::{Op, TreeId};
use super::crypto::{KeyError, KeySource, SecretCipher};
use super::flush::Flusher;
use super::maintenance::place;
use super::rules::{self, PutPlan};
use super::{
    Change, ConflictPolicy, EventBatch, ImportOutcome, ProfileChange, ProfileStore, ProfileWatch,
    PutMode, PutOutcome, StoreError,
};
use crate::domain::{Conversation, LlmConfig, Profile, ProfileName};

/// How many changes a watcher may fall behind before it is cut off.
const WATCH_BACKLOG: usize = 4096;

/// Settings of the sled store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// The keys that encrypt secrets at rest (`<key id>:<base64>` lines, the first encrypts); `None`:
    /// the data dir's own `secret.key`, created on first open.
    pub secret_key_file: Option<PathBuf>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 32 * 1024 * 1024,
            secret_key_file: None,
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

/// The sled store. Writes are serialized by one lock (they take microseconds); the expensive part,
/// the flush, is shared by every writer waiting at that moment.
pub struct SledStore {
    pub(super) db: sled::Db,
    pub(super) profiles: Tree,
    pub(super) conversations: Tree,
    pub(super) events: Tree,
    pub(super) bindings: Tree,
    write_lock: Mutex<()>,
    pub(super) flusher: Flusher<Change>,
    changes: broadcast::Sender<ProfileChange>,
    pub(super) event_changes: broadcast::Sender<EventBatch>,
    codec: Codec,
    _lock_file: File,
}

/// What `rotate-keys` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// The key every secret is now sealed with.
    pub key_id: String,
    /// Profiles whose secrets were re-encrypted.
    pub profiles: usize,
    /// Conversations whose inline secrets were re-encrypted.
    pub conversations: usize,
    /// Secrets re-encrypted, in all.
    pub secrets: usize,
    /// Secrets re-encrypted, by the key id they had (`plaintext` for an earlier version's value).
    pub by_old_key: std::collections::BTreeMap<String, usize>,
    /// Records left as they were because a secret does not open, with the reason (no secret in it).
    pub damaged: Vec<String>,
}

impl RotationReport {
    pub(super) fn count(&mut self, old_keys: Vec<String>) {
        self.secrets += old_keys.len();
        for k in old_keys {
            *self.by_old_key.entry(k).or_default() += 1;
        }
    }
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
        let (profiles, conversations, events, bindings) = (
            tree(TreeId::Profiles)?,
            tree(TreeId::Conversations)?,
            tree(TreeId::Events)?,
            tree(TreeId::Bindings)?,
        );
        let (changes, _) = broadcast::channel(WATCH_BACKLOG);
        let (event_changes, _) = broadcast::channel(WATCH_BACKLOG);
        let (publish_profile, publish_events) = (changes.clone(), event_changes.clone());
        let flusher = Flusher::start(
            db.clone(),
            Box::new(move |c| match c {
                Change::Profile(c) => {
                    let _ = publish_profile.send(c);
                }
                Change::Events(c) => {
                    let _ = publish_events.send(c);
                }
            }),
        )
        .map_err(unwritable)?;
        Ok(Arc::new(Self {
            db,
            profiles,
            conversations,
            events,
            bindings,
            write_lock: Mutex::new(()),
            flusher,
            changes,
            event_changes,
            codec: Codec::new(cipher),
            _lock_file: lock_file,
        }))
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
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, ()> {
        self.write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    pub(super) fn read_profile(&self, name: &str) -> Result<Option<ProfileRecord>, StoreError> {
        self.profiles
            .get(name.as_bytes())?
            .map(|bytes| self.decode_profile(name.as_bytes(), &bytes))
            .transpose()
    }

    fn write_profile(&self, record: &ProfileRecord) -> Result<(), StoreError> {
        let bytes = self.encode_profile(record)?;
        self.profiles
            .insert(record.profile.name.as_str().as_bytes(), bytes)?;
        Ok(())
    }

    pub(super) fn encode_profile(&self, record: &ProfileRecord) -> Result<Vec<u8>, StoreError> {
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
        self.profiles.insert(name.as_bytes(), bytes)?;
        self.db.flush()?;
        Ok(())
    }

    /// Re-seals the secrets of every record of one tree into `ops`; damaged records go to the report.
    /// Returns how many records changed.
    fn reseal_tree<T: Serialize + serde::de::DeserializeOwned>(
        &self,
        tree_id: TreeId,
        secrets: impl Fn(&mut T, &mut SecretVisitor<'_>) -> Result<(), String>,
        report: &mut RotationReport,
        ops: &mut Vec<Op>,
    ) -> Result<usize, StoreError> {
        let mut changed = 0;
        for item in self.tree(tree_id).iter() {
            let (key, bytes) = item?;
            let label = place(tree_id, &key);
            match self.codec.reseal_record(&bytes, &secrets) {
                Err(reason) => report.damaged.push(format!("{label}: {reason}")),
                Ok(None) => {}
                Ok(Some((bytes, old_keys))) => {
                    report.count(old_keys);
                    changed += 1;
                    ops.push(Op::Put(tree_id, key.to_vec(), bytes));
                }
            }
        }
        Ok(changed)
    }

    /// Re-encrypts every secret (profiles and inline LLMs of conversations) with the first key, in
    /// one transaction. Records whose secrets do not open are left as they are and reported.
    pub async fn rotate_keys(&self) -> Result<RotationReport, StoreError> {
        let (epoch, report) = {
            let _guard = self.lock();
            let mut report = RotationReport {
                key_id: self.codec.cipher().sealing_key_id().to_owned(),
                ..RotationReport::default()
            };
            let mut ops = Vec::new();
            report.profiles = self.reseal_tree(
                TreeId::Profiles,
                |r: &mut ProfileRecord, f| profile_secrets(r, f),
                &mut report,
                &mut ops,
            )?;
            report.conversations = self.reseal_tree(
                TreeId::Conversations,
                |c: &mut Conversation, f| conversation_secrets(c, f),
                &mut report,
                &mut ops,
            )?;
            if ops.is_empty() {
                (self.flusher.written(), report)
            } else {
                self.apply(&ops)?;
                (self.flusher.committed(std::iter::empty::<Change>()), report)
            }
        };
        self.flusher.wait(epoch).await?;
        Ok(report)
    }
}

impl ProfileStore for SledStore {
    async fn get_profile(&self, name: &ProfileName) -> Result<Option<Profile>, StoreError> {
        Ok(self.read_profile(name.as_str())?.map(|r| r.profile))
    }

    async fn list_profiles(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Profile>, StoreError> {
        let range = match after {
            Some(a) => self.profiles.range::<&[u8], _>((
                std::ops::Bound::Excluded(a.as_bytes()),
                std::ops::Bound::Unbounded,
            )),
            None => self.profiles.iter(),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in range {
            if out.len() >= limit {
                break;
            }
            let (key, bytes) = item?;
            match self.decode_profile(&key, &bytes) {
                Ok(r) => out.push(r.profile),
                Err(e) => tracing::error!(error = %e, "skipping a damaged profile record"),
            }
        }
        Ok(out)
    }

    async fn put_profile(
        &self,
        name: ProfileName,
        llm: LlmConfig,
        mode: PutMode,
        expected_revision: Option<i64>,
    ) -> Result<(Profile, PutOutcome), StoreError> {
        let (epoch, result) = {
            let _guard = self.lock();
            let old = self.read_profile(name.as_str())?.map(|r| r.profile);
            match rules::plan_put(old, name, llm, mode, expected_revision)? {
                PutPlan::Unchanged(old) => (self.flusher.written(), (old, PutOutcome::Unchanged)),
                PutPlan::Write(profile, outcome) => {
                    let record = ProfileRecord {
                        seq: self.next_seq()?,
                        profile,
                    };
                    self.write_profile(&record)?;
                    let change = ProfileChange::Put {
                        seq: record.seq,
                        profile: Arc::new(record.profile.clone()),
                    };
                    (self.flusher.committed([change]), (record.profile, outcome))
                }
            }
        };
        self.flusher.wait(epoch).await?;
        Ok(result)
    }

    async fn delete_profile(
        &self,
        name: &ProfileName,
        expected_revision: Option<i64>,
        allow_missing: bool,
        force: bool,
    ) -> Result<Option<Profile>, StoreError> {
        let (epoch, deleted) = {
            let _guard = self.lock();
            let found = match self.read_profile(name.as_str()) {
                // A record that does not decode is not kept forever: force deletes its bytes.
                Err(StoreError::Corrupt { .. }) if force => Some(rules::damaged_placeholder(name)),
                Err(e) => return Err(e),
                Ok(None) if allow_missing => None,
                Ok(None) => return Err(rules::not_found(name)),
                Ok(Some(record)) => {
                    rules::check_revision(&record.profile, expected_revision)?;
                    rules::check_unbound(name, &self.conversations_bound_to(name, 6)?, force)?;
                    Some(record.profile)
                }
            };
            match found {
                // Nothing to delete: still answer only once every earlier write is durable.
                None => (self.flusher.written(), None),
                Some(profile) => {
                    // With force, bindings stay: they resolve again if the name is re-created.
                    self.profiles.remove(name.as_str().as_bytes())?;
                    let change = ProfileChange::Delete {
                        seq: self.next_seq()?,
                        name: name.clone(),
                        revision: profile.revision,
                    };
                    (self.flusher.committed([change]), Some(profile))
                }
            }
        };
        self.flusher.wait(epoch).await?;
        Ok(deleted)
    }

    async fn rename_profile(
        &self,
        from: &ProfileName,
        to: &ProfileName,
    ) -> Result<Profile, StoreError> {
        let (epoch, renamed) = {
            let _guard = self.lock();
            let old = self
                .read_profile(from.as_str())?
                .ok_or_else(|| rules::not_found(from))?
                .profile;
            if from == to {
                return Ok(old);
            }
            if self.profiles.contains_key(to.as_str().as_bytes())? {
                return Err(StoreError::AlreadyExists {
                    kind: "profile",
                    name: to.to_string(),
                });
            }
            let delete_seq = self.next_seq()?;
            let record = ProfileRecord {
                seq: self.next_seq()?,
                profile: rules::renamed(&old, to),
            };
            // Conversations bound to the old name follow it, in the same transaction.
            let mut ops = vec![
                Op::Del(TreeId::Profiles, from.as_str().as_bytes().to_vec()),
                Op::Put(
                    TreeId::Profiles,
                    to.as_str().as_bytes().to_vec(),
                    self.encode_profile(&record)?,
                ),
            ];
            let now = record.profile.update_time;
            for id in self.conversations_bound_to(from, usize::MAX)? {
                let Some(before) = self.read_conversation(&id)? else {
                    continue;
                };
                let c = rules::rebound(before.clone(), from, to, now);
                ops.push(Op::Put(
                    TreeId::Conversations,
                    id.as_bytes().to_vec(),
                    self.encode_conversation(&c)?,
                ));
                Self::binding_ops(Some(&before), Some(&c), &mut ops);
            }
            self.apply(&ops)?;
            let changes = [
                ProfileChange::Delete {
                    seq: delete_seq,
                    name: from.clone(),
                    revision: old.revision,
                },
                ProfileChange::Put {
                    seq: record.seq,
                    profile: Arc::new(record.profile.clone()),
                },
            ];
            (self.flusher.committed(changes), record.profile)
        };
        self.flusher.wait(epoch).await?;
        Ok(renamed)
    }

    async fn import_profiles(
        &self,
        items: Vec<(ProfileName, LlmConfig)>,
        policy: ConflictPolicy,
        dry_run: bool,
    ) -> Result<Vec<ImportOutcome>, StoreError> {
        let (epoch, outcomes) = {
            let _guard = self.lock();
            let mut stored = HashMap::new();
            for (name, _) in &items {
                if let Some(r) = self.read_profile(name.as_str())? {
                    stored.insert(name.clone(), r.profile);
                }
            }
            let (outcomes, writes) = rules::plan_import(items, policy, stored);
            if dry_run || writes.is_empty() {
                (self.flusher.written(), outcomes)
            } else {
                let mut batch = sled::Batch::default();
                let mut changes = Vec::with_capacity(writes.len());
                for profile in writes {
                    let record = ProfileRecord {
                        seq: self.next_seq()?,
                        profile,
                    };
                    let bytes = self.encode_profile(&record)?;
                    batch.insert(record.profile.name.as_str().as_bytes(), bytes);
                    changes.push(ProfileChange::Put {
                        seq: record.seq,
                        profile: Arc::new(record.profile),
                    });
                }
                self.profiles.apply_batch(batch)?;
                (self.flusher.committed(changes), outcomes)
            }
        };
        self.flusher.wait(epoch).await?;
        Ok(outcomes)
    }

    async fn watch_profiles(&self, snapshot: bool) -> Result<ProfileWatch, StoreError> {
        let changes = self.changes.subscribe();
        let mut out = Vec::new();
        if snapshot {
            for item in self.profiles.iter() {
                let (key, bytes) = item?;
                match self.decode_profile(&key, &bytes) {
                    Ok(r) => out.push((r.seq, r.profile)),
                    Err(e) => tracing::error!(error = %e, "skipping a damaged profile record"),
                }
            }
        }
        Ok(ProfileWatch {
            snapshot: out,
            covered: 0,
            changes,
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}
