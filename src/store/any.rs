//! The store a server runs on, chosen at start: sled in a data dir (the default) or PostgreSQL.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::postgres::{PgOptions, PgStore};
use super::requests::{
    ConversationDelete, ConversationImport, ConversationQuery, ConversationUpdate, DocDelete,
    DocImport, DocQuery, DocRename, EventAppend, ProfileDelete, ProfileImport, ProfilePut,
    ProfileRename,
};
use super::{
    ConflictPolicy, ConversationChange, DocPut, EventBatch, EventQuery, ImportOutcome,
    ProfileWatch, PutMode, PutOutcome, RawRecord, SledStore, Snapshot, StoreError, StoreOptions,
};
use crate::domain::{
    Conversation, ConversationId, DocKind, Document, Event, ExecutionStatus, LlmConfig, NewEvent,
    Profile, ProfileName, Timestamp,
};
use serde_json::{Map, Value};

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

/// Writes each async method of [`Store`] once, as its contract: the doc, the arguments, what it
/// gives; the body calls the backend's method of the same name (a backend that lacks one, or
/// takes other arguments, does not compile here). `as Struct`: the backends take the arguments
/// packed in that struct of `requests.rs`, its fields named as they are.
macro_rules! dispatch {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $(as $args:ident)?;)*) => {
        $(
            $(#[$doc])*
            pub async fn $name(&self, $($arg: $ty),*) -> Result<$ret, StoreError> {
                each!(self, s => call!(s.$name, $($args)?; $($arg),*).await)
            }
        )*
    };
}

/// The call of a backend's method: with the arguments packed in `$args`, or as they are.
macro_rules! call {
    ($s:ident.$name:ident, $args:ident; $($arg:ident),*) => {
        $s.$name($args { $($arg),* })
    };
    ($s:ident.$name:ident, ; $($arg:ident),*) => {
        $s.$name($($arg),*)
    };
}

impl Store {
    /// Has the store make and keep ready responses with `build` from now on: the encoded answer
    /// of a plain GetProfile (current, masked) of each profile read or written on sled, of each
    /// profile in a replica's cache on PostgreSQL.
    pub fn answer_with(&self, build: fn(&Profile) -> bytes::Bytes) {
        match self {
            Self::Sled(s) => s.answer_with(build),
            Self::Postgres(p) => p.answer_with(build),
        }
    }

    /// Whether [`Self::ready_profiles`] can make a ListProfiles page: on sled; on PostgreSQL the
    /// handler answers every listing.
    pub fn keeps_pages(&self) -> bool {
        matches!(self, Self::Sled(_))
    }

    /// The ready response of the current profile `name` (see [`Self::answer_with`]); `None` when
    /// absent, not cached (PostgreSQL), or before a builder is given.
    pub fn ready_profile(&self, name: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        match self {
            Self::Sled(s) => s.ready_profile(name),
            Self::Postgres(p) => Ok(p.ready_profile(name)),
        }
    }

    /// The ready responses of up to `limit` current profiles in name order after `after`, with
    /// their names (a page of a masked ListProfiles); `None` on PostgreSQL, or before a builder
    /// is given.
    pub fn ready_profiles(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<(String, bytes::Bytes)>>, StoreError> {
        match self {
            Self::Sled(s) => s.ready_profiles(after, limit),
            Self::Postgres(_) => Ok(None),
        }
    }
}

/// The store's operations: the contract each backend implements once.
impl Store {
    dispatch! {
        /// One profile, or `None`.
        fn get_profile(name: &ProfileName) -> Option<Profile>;
        /// The same, shared with the store's decoded copies where it keeps them (a read that only
        /// looks at the profile then copies nothing).
        fn get_profile_shared(name: &ProfileName) -> Option<Arc<Profile>>;
        /// Up to `limit` profiles in name order, after the name `after` when given.
        fn list_profiles(after: Option<&str>, limit: usize) -> Vec<Profile>;
        /// Creates or replaces a profile's configuration (secret and extra merge rules applied
        /// against the stored one); durable when it returns.
        /// `by`: who writes (kept with the revision).
        fn put_profile(name: ProfileName, llm: LlmConfig, mode: PutMode, expected_revision: Option<i64>,
            by: &str) -> (Arc<Profile>, PutOutcome) as ProfilePut;
        /// Deletes a profile; `Ok(None)` when absent and `allow_missing`. Durable when it returns.
        /// The history is kept for an undelete (`--deleted-retention`) unless `purge`.
        fn delete_profile(name: &ProfileName, expected_revision: Option<i64>, allow_missing: bool, force: bool,
            purge: bool, by: &str) -> Option<Profile> as ProfileDelete;
        /// Brings back a deleted profile whose history is kept, its last revision as the next one;
        /// ALREADY_EXISTS while the name is taken.
        fn undelete_profile(name: &ProfileName, by: &str) -> Profile;
        /// Drops the kept history of up to `limit` profiles deleted before `cutoff`; returns how
        /// many.
        fn purge_deleted(cutoff: Timestamp, limit: usize) -> usize;
        /// Renames a profile atomically; durable when it returns.
        fn rename_profile(from: &ProfileName, to: &ProfileName, by: &str) -> Profile as ProfileRename;
        /// Imports profiles as one atomic, durable batch (per `policy`; nothing written on
        /// `dry_run`). The same name twice sees its first occurrence as existing.
        fn import_profiles(items: Vec<(ProfileName, LlmConfig)>, policy: ConflictPolicy, dry_run: bool,
            by: &str) -> Vec<ImportOutcome> as ProfileImport;
        /// Revision `revision` of a profile, when it is the current one or the history keeps it.
        fn get_profile_revision(name: &ProfileName, revision: i64) -> Option<Profile>;
        /// Up to `limit` kept revisions of a profile, newest first (the current one first), below
        /// `before` when given; `None` when there is no such profile.
        fn list_profile_revisions(name: &ProfileName, before: Option<i64>, limit: usize)
            -> Option<Vec<Profile>>;
        /// Starts a watch: subscribe first, then (optionally) the snapshot; or, resuming after the
        /// change seq `after`, the kept changes after it (OUT_OF_RANGE when they are no longer
        /// kept, or the seq is ahead of the store).
        fn watch_profiles(snapshot: bool, after: Option<u64>) -> ProfileWatch;
        /// Deletes the profile changes `--watch-history` no longer keeps; returns how many.
        fn prune_changes() -> usize;
        /// Creates a conversation (revision 1); NOT_FOUND for a binding to a missing profile.
        fn create_conversation(c: Conversation) -> Conversation;
        /// One conversation, or `None`.
        fn get_conversation(id: &ConversationId) -> Option<Conversation>;
        /// Up to `limit` conversations by id after `after`, filtered by status and bound profile
        /// (the profile filter reads an index, not every conversation).
        fn list_conversations(after: Option<ConversationId>, limit: usize, status: Option<ExecutionStatus>,
            profile: Option<&ProfileName>) -> Vec<Conversation> as ConversationQuery;
        /// Replaces the mutable fields with what `change` makes of the stored conversation;
        /// checks `expected_revision` and that bound profiles exist; durable when it returns.
        fn update_conversation(id: &ConversationId, expected_revision: Option<i64>,
            change: ConversationChange<'_>) -> Conversation as ConversationUpdate;
        /// Deletes a conversation and its events atomically; returns it and the number of events.
        /// With `force`, a record that does not decode goes too (returned as a placeholder of
        /// revision 0).
        fn delete_conversation(id: &ConversationId, expected_revision: Option<i64>, allow_missing: bool,
            force: bool) -> Option<(Conversation, i64)> as ConversationDelete;
        /// Appends events, all or none, at the next seqs; returns (first seq, next seq).
        fn append_events(id: &ConversationId, events: Vec<NewEvent>, expected_next_seq: Option<i64>)
            -> (i64, i64) as EventAppend;
        /// A page of events.
        fn list_events(id: &ConversationId, query: &EventQuery) -> Vec<Event>;
        /// Imports a conversation with its events in one transaction (per `policy`; nothing
        /// written on `dry_run`); OVERWRITE replaces the stored conversation and all its events.
        fn import_conversation(c: Conversation, events: Vec<NewEvent>, policy: ConflictPolicy, dry_run: bool)
            -> ImportOutcome as ConversationImport;
        /// One document (provider connection, meta-profile, agent profile), or `None`.
        fn get_document(kind: DocKind, name: &str) -> Option<Document>;
        /// Up to `limit` documents of `kind` in name order, after `after` when given.
        fn list_documents(kind: DocKind, after: Option<&str>, limit: usize) -> Vec<Document> as DocQuery;
        /// Creates or replaces a document (a masked secret keeps the stored value); NOT_FOUND when
        /// it adds a reference to a missing record; `blind`: the caller may not read secrets (a
        /// supplied secret is then never reported unchanged). Durable when it returns.
        fn put_document(put: DocPut) -> (Document, PutOutcome);
        /// Deletes a document; FAILED_PRECONDITION while something references it, unless `force`.
        fn delete_document(kind: DocKind, name: &str, expected_revision: Option<i64>, allow_missing: bool,
            force: bool) -> Option<Document> as DocDelete;
        /// Renames a document; what references it follows, in the same transaction.
        fn rename_document(kind: DocKind, from: &str, to: &str) -> Document as DocRename;
        /// Imports documents of one kind as one atomic, durable batch (references not checked:
        /// a home's dangling references are kept).
        fn import_documents(kind: DocKind, items: Vec<(String, Map<String, Value>)>, policy: ConflictPolicy,
            dry_run: bool, blind: bool) -> Vec<ImportOutcome> as DocImport;
    }

    /// Flushes everything to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        each!(self, s => s.flush())
    }

    /// Live appended events (subscribe before reading the stored ones, then skip by seq).
    pub fn subscribe_events(&self) -> broadcast::Receiver<EventBatch> {
        each!(self, s => s.subscribe_events())
    }
}
