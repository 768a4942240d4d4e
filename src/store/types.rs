//! The words of the store's contract: its errors, what a put or an import did, the changes it
//! publishes once durable, and the queries and watches it answers.
use std::sync::Arc;

use tokio::sync::broadcast;

use super::fault;
use crate::domain::{Conversation, ConversationId, Profile, ProfileName};

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
    /// A write would add a reference to a record that does not exist (NOT_FOUND, as a binding to
    /// a missing profile): the message names the field and the target.
    #[error("{0}")]
    MissingReference(String),
    /// What was asked for is not kept (NOT_FOUND): the message says why, e.g. an undelete of a
    /// profile whose history was purged.
    #[error("{0}")]
    NotKept(String),
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
    /// A position the store no longer keeps, or never had (a watch resumed after a change that
    /// was pruned from the change log): the message says what to do instead.
    #[error("{0}")]
    OutOfRange(String),
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

impl StoreError {
    /// NOT_FOUND for the `kind` ("profile", "conversation") named `name`.
    pub fn not_found(kind: &'static str, name: impl std::fmt::Display) -> Self {
        Self::NotFound {
            kind,
            name: name.to_string(),
        }
    }
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

/// What an update makes of the stored conversation, or why it refuses; run under the write lock.
pub type ConversationChange<'a> =
    Box<dyn FnOnce(&Conversation) -> Result<Conversation, StoreError> + Send + 'a>;

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

impl PutMode {
    /// The mode of an Update rpc: Upsert with `allow_missing`, else Update.
    pub fn of_update(allow_missing: bool) -> Self {
        if allow_missing {
            Self::Upsert
        } else {
            Self::Update
        }
    }
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

impl ProfileChange {
    /// The change's seq (for `Missed`, the last one read).
    pub fn seq(&self) -> u64 {
        match self {
            Self::Put { seq, .. } | Self::Delete { seq, .. } => *seq,
            Self::Missed { after } => *after,
        }
    }
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

/// A consistent start for a watcher: the current profiles with their change sequence numbers (or,
/// for a resumed watch, the kept changes after its seq), and a receiver of every change after them
/// (changes already sent are to be skipped by seq).
pub struct ProfileWatch {
    /// Current profiles with the change seq of their last write.
    pub snapshot: Vec<(u64, Profile)>,
    /// For a resumed watch: the changes after its seq, in seq order.
    pub replay: Vec<ProfileChange>,
    /// Every change below this seq is in the snapshot or the replay already (0: unknown, skip by
    /// name).
    pub covered: u64,
    /// Every change after this seq reaches `changes`: where a bookmark starts before any change.
    pub start: u64,
    /// Live changes.
    pub changes: broadcast::Receiver<ProfileChange>,
}

/// How much of the profile change log a store keeps for watches that resume (`--watch-history`):
/// the newest N changes, or those younger than a duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchHistory {
    /// The newest this many changes.
    Changes(u64),
    /// The changes of this long back.
    Age(std::time::Duration),
}

impl Default for WatchHistory {
    fn default() -> Self {
        Self::Changes(DEFAULT_WATCH_HISTORY)
    }
}

/// How far a restore moves the change counter past the backup's: seqs a client got from the store
/// the backup came from (which may have gone on after it) stay below the restored store's, so a
/// watch resuming after one is told to start over instead of silently skipping changes.
pub const RESTORE_SEQ_GAP: u64 = 1 << 32;

/// How many profile changes the change log keeps unless told otherwise.
pub const DEFAULT_WATCH_HISTORY: u64 = 10_000;

impl std::fmt::Display for WatchHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Changes(n) => write!(f, "{n}"),
            Self::Age(d) => write!(f, "{}s", d.as_secs()),
        }
    }
}

/// The message of a watch resumed from a seq the change log no longer holds.
pub fn too_old(after: u64, horizon: u64) -> StoreError {
    StoreError::OutOfRange(format!(
        "start_after_seq {after} is older than the changes this store still keeps (they start after \
         seq {horizon}, see --watch-history): watch again with send_initial"
    ))
}

/// The message of a watch resumed from a seq this store has not reached.
pub fn too_new(after: u64, last: u64) -> StoreError {
    StoreError::OutOfRange(format!(
        "start_after_seq {after} is ahead of this store's last change ({last}): the store was \
         restored or replaced since; watch again with send_initial"
    ))
}
