//! Storage: the traits the services call, and their sled and PostgreSQL implementations.
mod any;
pub mod codec;
pub mod crypto;
pub mod fault;
pub mod postgres;
pub mod records;
mod rules;
pub mod sled;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::domain::{
    Conversation, ConversationId, Event, ExecutionStatus, LlmConfig, NewEvent, Profile, ProfileName,
};

pub use self::any::{Location, Store};
pub use self::codec::sealed_key_ids;
pub use self::records::{place as place_of, RawRecord, RotationReport, Snapshot, TreeId};
pub use self::sled::{CheckReport, OpenError, SledStore, StoreOptions};
pub use crate::domain::ConflictPolicy;

/// What can go wrong in the store: expected outcomes first, then fail-stop storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The resource does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// "profile", "conversation", ...
        kind: &'static str,
        /// Its name or id.
        name: String,
    },
    /// The resource exists already.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// "profile", "conversation", ...
        kind: &'static str,
        /// Its name or id.
        name: String,
    },
    /// An optimistic-concurrency check failed.
    #[error("{kind} {name:?} is at revision {actual}, not the expected {expected}")]
    RevisionMismatch {
        /// "profile", "conversation", ...
        kind: &'static str,
        /// Its name or id.
        name: String,
        /// What the caller expected.
        expected: i64,
        /// What is stored.
        actual: i64,
    },
    /// A concurrency check other than a revision failed (e.g. a stale expected_next_seq).
    #[error("{0}")]
    Aborted(String),
    /// The operation is refused in the resource's current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A stored record cannot be decoded: reported with its key, never a panic.
    #[error("stored record {key:?} is damaged: {reason}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// Why it does not decode.
        reason: String,
    },
    /// The database cannot be reached now (PostgreSQL connection lost, pool exhausted): retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database failed (I/O, flush): fail-stop.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The data volume refused a write (full, or failing): the server fail-stops.
    #[error("{0}")]
    Volume(fault::VolumeFault),
}

impl From<::sled::Error> for StoreError {
    fn from(e: ::sled::Error) -> Self {
        match e {
            // Raised (fail-stop) where a call meets it, not here: opening a data dir that
            // cannot be written is an error at start, not a fault of a running server.
            ::sled::Error::Io(io) => Self::Volume(fault::VolumeFault::of(&io)),
            other => Self::Storage(other.to_string()),
        }
    }
}

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// A new record.
    Created,
    /// An existing record changed.
    Updated,
    /// The stored record already had this content; nothing was written.
    Unchanged,
}

/// The precondition of a put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Create only: ALREADY_EXISTS when present.
    Create,
    /// Update only: NOT_FOUND when absent.
    Update,
    /// Create or update.
    Upsert,
}

/// What an import did with one profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Created at this revision.
    Created(i64),
    /// Replaced; now at this revision.
    Updated(i64),
    /// Already stored with this content, at this revision.
    Unchanged(i64),
    /// Not written, and why.
    Skipped(String),
}

/// A change to a profile, published once it is durable, in commit order.
#[derive(Clone, Debug)]
pub enum ProfileChange {
    /// Created or changed.
    Put {
        /// Store-wide change sequence number.
        seq: u64,
        /// The profile after the change.
        profile: Arc<Profile>,
    },
    /// Deleted.
    Delete {
        /// Store-wide change sequence number.
        seq: u64,
        /// The deleted name.
        name: ProfileName,
        /// The revision it had.
        revision: i64,
    },
    /// Changes after `after` were pruned from the shared change log before this replica read
    /// them (PostgreSQL, a replica cut off from the database for longer than the log is kept): a
    /// watcher cannot know what it missed and must start over.
    Missed {
        /// The last change this replica read.
        after: u64,
    },
}

/// Events appended to one conversation (or its deletion), published once durable. It names only where the log now
/// ends, not the events themselves: a watcher that stops reading keeps at most the channel's
/// backlog of these few bytes alive, never the (up to request-sized) events; watchers read the
/// events from the store.
#[derive(Clone, Copy, Debug)]
pub struct EventBatch {
    /// The conversation.
    pub conversation: ConversationId,
    /// The seq after the last appended event.
    pub next_seq: i64,
    /// The conversation was deleted (with its log): its watchers end with NOT_FOUND.
    pub deleted: bool,
}

/// Every kind of change the flusher publishes.
#[derive(Clone, Debug)]
pub enum Change {
    /// A profile change.
    Profile(ProfileChange),
    /// Appended events.
    Events(EventBatch),
}

impl From<ProfileChange> for Change {
    fn from(c: ProfileChange) -> Self {
        Self::Profile(c)
    }
}

impl From<EventBatch> for Change {
    fn from(c: EventBatch) -> Self {
        Self::Events(c)
    }
}

/// Which events a listing wants.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    /// Only seq above this.
    pub after_seq: Option<i64>,
    /// Only seq below this (descending paging).
    pub before_seq: Option<i64>,
    /// Only this kind (empty: any).
    pub kind: String,
    /// Only this source (empty: any).
    pub source: String,
    /// Newest first.
    pub descending: bool,
    /// At most this many.
    pub limit: usize,
}

/// A consistent start for a watcher: the current profiles with their change sequence numbers, and a
/// receiver of every change after them (changes already in the snapshot are to be skipped by seq).
pub struct ProfileWatch {
    /// Current profiles with the change seq of their last write.
    pub snapshot: Vec<(u64, Profile)>,
    /// Every change below this seq is in the snapshot already (0: unknown, skip by name).
    pub covered: u64,
    /// Live changes.
    pub changes: broadcast::Receiver<ProfileChange>,
}

/// Profiles, by name.
pub trait ProfileStore: Send + Sync + 'static {
    /// One profile, or `None`.
    fn get_profile(
        &self,
        name: &ProfileName,
    ) -> impl Future<Output = Result<Option<Profile>, StoreError>> + Send;

    /// Up to `limit` profiles in name order, after the name `after` when given.
    fn list_profiles(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Profile>, StoreError>> + Send;

    /// Creates or replaces a profile's configuration (secret and extra merge rules applied against
    /// the stored one); durable when it returns.
    fn put_profile(
        &self,
        name: ProfileName,
        llm: LlmConfig,
        mode: PutMode,
        expected_revision: Option<i64>,
    ) -> impl Future<Output = Result<(Profile, PutOutcome), StoreError>> + Send;

    /// Deletes a profile; `Ok(None)` when absent and `allow_missing`. Durable when it returns.
    fn delete_profile(
        &self,
        name: &ProfileName,
        expected_revision: Option<i64>,
        allow_missing: bool,
        force: bool,
    ) -> impl Future<Output = Result<Option<Profile>, StoreError>> + Send;

    /// Renames a profile atomically; durable when it returns.
    fn rename_profile(
        &self,
        from: &ProfileName,
        to: &ProfileName,
    ) -> impl Future<Output = Result<Profile, StoreError>> + Send;

    /// Imports profiles as one atomic, durable batch (per `policy`; nothing written on `dry_run`).
    /// The same name twice sees its first occurrence as existing.
    fn import_profiles(
        &self,
        items: Vec<(ProfileName, LlmConfig)>,
        policy: ConflictPolicy,
        dry_run: bool,
    ) -> impl Future<Output = Result<Vec<ImportOutcome>, StoreError>> + Send;

    /// Starts a watch: subscribe first, then (optionally) the snapshot.
    fn watch_profiles(
        &self,
        snapshot: bool,
    ) -> impl Future<Output = Result<ProfileWatch, StoreError>> + Send;

    /// Flushes everything to disk.
    fn flush(&self) -> Result<(), StoreError>;
}

/// Conversations and their events, with referential integrity to profiles.
pub trait ConversationStore: Send + Sync + 'static {
    /// Creates a conversation (revision 1); NOT_FOUND for a binding to a missing profile.
    fn create_conversation(
        &self,
        c: Conversation,
    ) -> impl Future<Output = Result<Conversation, StoreError>> + Send;

    /// One conversation, or `None`.
    fn get_conversation(
        &self,
        id: &ConversationId,
    ) -> impl Future<Output = Result<Option<Conversation>, StoreError>> + Send;

    /// Up to `limit` conversations by id after `after`, filtered by status and bound profile (the
    /// profile filter reads an index, not every conversation).
    fn list_conversations(
        &self,
        after: Option<ConversationId>,
        limit: usize,
        status: Option<ExecutionStatus>,
        profile: Option<&ProfileName>,
    ) -> impl Future<Output = Result<Vec<Conversation>, StoreError>> + Send;

    /// Replaces the mutable fields with what `change` makes of the stored conversation; checks
    /// `expected_revision` and that bound profiles exist; durable when it returns.
    fn update_conversation<F>(
        &self,
        id: &ConversationId,
        expected_revision: Option<i64>,
        change: F,
    ) -> impl Future<Output = Result<Conversation, StoreError>> + Send
    where
        F: FnOnce(&Conversation) -> Result<Conversation, StoreError> + Send;

    /// Deletes a conversation and its events atomically; returns it and the number of events.
    /// With `force`, a record that does not decode goes too (returned as a placeholder of
    /// revision 0).
    fn delete_conversation(
        &self,
        id: &ConversationId,
        expected_revision: Option<i64>,
        allow_missing: bool,
        force: bool,
    ) -> impl Future<Output = Result<Option<(Conversation, i64)>, StoreError>> + Send;

    /// Appends events, all or none, at the next seqs; returns (first seq, next seq).
    fn append_events(
        &self,
        id: &ConversationId,
        events: Vec<NewEvent>,
        expected_next_seq: Option<i64>,
    ) -> impl Future<Output = Result<(i64, i64), StoreError>> + Send;

    /// A page of events.
    fn list_events(
        &self,
        id: &ConversationId,
        query: &EventQuery,
    ) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send;

    /// Imports a conversation with its events in one transaction (per `policy`; nothing written on
    /// `dry_run`); OVERWRITE replaces the stored conversation and all of its events.
    fn import_conversation(
        &self,
        c: Conversation,
        events: Vec<NewEvent>,
        policy: ConflictPolicy,
        dry_run: bool,
    ) -> impl Future<Output = Result<ImportOutcome, StoreError>> + Send;

    /// Live appended events (subscribe before reading the stored ones, then skip by seq).
    fn subscribe_events(&self) -> broadcast::Receiver<EventBatch>;
}
