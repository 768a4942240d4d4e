//! The store a server runs on, chosen at start: sled in a data dir (the default) or PostgreSQL.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::postgres::{PgOptions, PgStore};
use super::{
    ConflictPolicy, EventBatch, EventQuery, ImportOutcome, ProfileWatch, PutMode, PutOutcome,
    RawRecord, SledStore, Snapshot, StoreError, StoreOptions,
};
use crate::domain::{
    Conversation, ConversationId, Event, ExecutionStatus, LlmConfig, NewEvent, Profile, ProfileName,
};

/// Where the records live, as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A sled data dir.
    Sled(PathBuf),
    /// A PostgreSQL connection URL (holds the password: never print it; see [`Location::describe`]).
    Postgres(String),
}

impl Location {
    /// `--store` when given (postgres:// or postgresql://), else the data dir.
    pub fn of(store: Option<&str>, data_dir: &Path) -> Result<Self, String> {
        match store.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(Self::Sled(data_dir.to_owned())),
            Some(s) => Self::parse(s),
        }
    }

    /// A postgres:// URL or a sled data dir path.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            Ok(Self::Postgres(raw.to_owned()))
        } else if raw.contains("://") {
            Err("a store is a postgres:// (or postgresql://) URL, or a sled data dir path".into())
        } else {
            Ok(Self::Sled(PathBuf::from(raw)))
        }
    }

    /// For logs and messages: the data dir, or host:port/database (never a password).
    pub fn describe(&self) -> String {
        match self {
            Self::Sled(dir) => format!("sled data dir {}", dir.display()),
            Self::Postgres(url) => {
                format!("PostgreSQL {}", super::postgres::describe_url(url))
            }
        }
    }
}

/// Either backend, behind the storage traits.
pub enum Store {
    /// Embedded, one process.
    Sled(Arc<SledStore>),
    /// Shared by replicas.
    Postgres(Arc<PgStore>),
}

macro_rules! each {
    ($self:ident, $s:ident => $body:expr) => {
        match $self {
            Store::Sled($s) => $body,
            Store::Postgres($s) => $body,
        }
    };
}

impl Store {
    /// The key that authenticates page tokens.
    pub fn page_key(&self) -> [u8; 32] {
        each!(self, s => s.page_key())
    }

    /// Opens the store at `location`.
    pub async fn open(
        location: &Location,
        sled: &StoreOptions,
        pg: &PgOptions,
    ) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(match location {
            Location::Sled(dir) => Self::Sled(SledStore::open(dir, sled)?),
            Location::Postgres(url) => {
                Self::Postgres(PgStore::open(url, sled.secret_key_file.as_deref(), pg).await?)
            }
        }))
    }

    /// How many profiles and conversations are stored (a scan: off the hot path).
    pub async fn counts(&self) -> Result<(usize, usize), StoreError> {
        match self {
            Self::Sled(s) => Ok(s.counts()),
            Self::Postgres(p) => p.counts().await,
        }
    }

    /// The database's size, in bytes.
    pub async fn size_on_disk(&self) -> u64 {
        match self {
            Self::Sled(s) => s.size_on_disk(),
            Self::Postgres(p) => p.size_on_disk().await,
        }
    }

    /// Every record, consistent.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        match self {
            Self::Sled(s) => {
                let s = Arc::clone(s);
                tokio::task::spawn_blocking(move || s.snapshot())
                    .await
                    .map_err(|e| StoreError::Storage(e.to_string()))?
            }
            Self::Postgres(p) => p.snapshot().await,
        }
    }

    /// Loads `records` into this empty store.
    pub async fn restore(&self, records: &[RawRecord], next_seq: u64) -> Result<(), StoreError> {
        match self {
            Self::Sled(s) => s.restore(records, next_seq),
            Self::Postgres(p) => p.restore(records, next_seq).await,
        }
    }

    /// Readiness beyond the process: PostgreSQL's connection (sled has none).
    pub fn connected(&self) -> Option<watch::Receiver<bool>> {
        match self {
            Self::Sled(_) => None,
            Self::Postgres(p) => Some(p.connected()),
        }
    }
}

/// The store's operations: the contract each backend implements once (a backend that lacks one,
/// or gives it another signature, does not compile here).
impl Store {
    /// One profile, or `None`.
    pub async fn get_profile(&self, name: &ProfileName) -> Result<Option<Profile>, StoreError> {
        each!(self, s => s.get_profile(name).await)
    }

    /// Up to `limit` profiles in name order, after the name `after` when given.
    pub async fn list_profiles(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Profile>, StoreError> {
        each!(self, s => s.list_profiles(after, limit).await)
    }

    /// Creates or replaces a profile's configuration (secret and extra merge rules applied against
    /// the stored one); durable when it returns.
    pub async fn put_profile(
        &self,
        name: ProfileName,
        llm: LlmConfig,
        mode: PutMode,
        expected_revision: Option<i64>,
    ) -> Result<(Profile, PutOutcome), StoreError> {
        each!(self, s => s.put_profile(name, llm, mode, expected_revision).await)
    }

    /// Deletes a profile; `Ok(None)` when absent and `allow_missing`. Durable when it returns.
    pub async fn delete_profile(
        &self,
        name: &ProfileName,
        expected_revision: Option<i64>,
        allow_missing: bool,
        force: bool,
    ) -> Result<Option<Profile>, StoreError> {
        each!(self, s => s.delete_profile(name, expected_revision, allow_missing, force).await)
    }

    /// Renames a profile atomically; durable when it returns.
    pub async fn rename_profile(
        &self,
        from: &ProfileName,
        to: &ProfileName,
    ) -> Result<Profile, StoreError> {
        each!(self, s => s.rename_profile(from, to).await)
    }

    /// Imports profiles as one atomic, durable batch (per `policy`; nothing written on `dry_run`).
    /// The same name twice sees its first occurrence as existing.
    pub async fn import_profiles(
        &self,
        items: Vec<(ProfileName, LlmConfig)>,
        policy: ConflictPolicy,
        dry_run: bool,
    ) -> Result<Vec<ImportOutcome>, StoreError> {
        each!(self, s => s.import_profiles(items, policy, dry_run).await)
    }

    /// Starts a watch: subscribe first, then (optionally) the snapshot.
    pub async fn watch_profiles(&self, snapshot: bool) -> Result<ProfileWatch, StoreError> {
        each!(self, s => s.watch_profiles(snapshot).await)
    }

    /// Flushes everything to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        each!(self, s => s.flush())
    }
}

impl Store {
    /// Creates a conversation (revision 1); NOT_FOUND for a binding to a missing profile.
    pub async fn create_conversation(&self, c: Conversation) -> Result<Conversation, StoreError> {
        each!(self, s => s.create_conversation(c).await)
    }

    /// One conversation, or `None`.
    pub async fn get_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        each!(self, s => s.get_conversation(id).await)
    }

    /// Up to `limit` conversations by id after `after`, filtered by status and bound profile (the
    /// profile filter reads an index, not every conversation).
    pub async fn list_conversations(
        &self,
        after: Option<ConversationId>,
        limit: usize,
        status: Option<ExecutionStatus>,
        profile: Option<&ProfileName>,
    ) -> Result<Vec<Conversation>, StoreError> {
        each!(self, s => s.list_conversations(after, limit, status, profile).await)
    }

    /// Replaces the mutable fields with what `change` makes of the stored conversation; checks
    /// `expected_revision` and that bound profiles exist; durable when it returns.
    pub async fn update_conversation<F>(
        &self,
        id: &ConversationId,
        expected_revision: Option<i64>,
        change: F,
    ) -> Result<Conversation, StoreError>
    where
        F: FnOnce(&Conversation) -> Result<Conversation, StoreError> + Send,
    {
        each!(self, s => s.update_conversation(id, expected_revision, change).await)
    }

    /// Deletes a conversation and its events atomically; returns it and the number of events.
    /// With `force`, a record that does not decode goes too (returned as a placeholder of
    /// revision 0).
    pub async fn delete_conversation(
        &self,
        id: &ConversationId,
        expected_revision: Option<i64>,
        allow_missing: bool,
        force: bool,
    ) -> Result<Option<(Conversation, i64)>, StoreError> {
        each!(self, s => s.delete_conversation(id, expected_revision, allow_missing, force).await)
    }

    /// Appends events, all or none, at the next seqs; returns (first seq, next seq).
    pub async fn append_events(
        &self,
        id: &ConversationId,
        events: Vec<NewEvent>,
        expected_next_seq: Option<i64>,
    ) -> Result<(i64, i64), StoreError> {
        each!(self, s => s.append_events(id, events, expected_next_seq).await)
    }

    /// A page of events.
    pub async fn list_events(
        &self,
        id: &ConversationId,
        query: &EventQuery,
    ) -> Result<Vec<Event>, StoreError> {
        each!(self, s => s.list_events(id, query).await)
    }

    /// Imports a conversation with its events in one transaction (per `policy`; nothing written on
    /// `dry_run`); OVERWRITE replaces the stored conversation and all of its events.
    pub async fn import_conversation(
        &self,
        c: Conversation,
        events: Vec<NewEvent>,
        policy: ConflictPolicy,
        dry_run: bool,
    ) -> Result<ImportOutcome, StoreError> {
        each!(self, s => s.import_conversation(c, events, policy, dry_run).await)
    }

    /// Live appended events (subscribe before reading the stored ones, then skip by seq).
    pub fn subscribe_events(&self) -> broadcast::Receiver<EventBatch> {
        each!(self, s => s.subscribe_events())
    }
}
