//! The arguments of the store's operations that take more than two: one struct each, so that the
//! dispatch of [`super::Store`] and both wings name them once (`Store` keeps plain arguments and
//! packs them; see `any.rs`). The wings take them apart in their signatures.
use serde_json::{Map, Value};

use super::{ConflictPolicy, ConversationChange, PutMode};
use crate::domain::{
    Conversation, ConversationId, DocKind, ExecutionStatus, LlmConfig, NewEvent, ProfileName,
};

/// A put of a profile's configuration.
pub struct ProfilePut<'a> {
    pub name: ProfileName,
    pub llm: LlmConfig,
    pub mode: PutMode,
    /// ABORTED unless the stored profile is at this revision.
    pub expected_revision: Option<i64>,
    /// Who writes (kept with the revision).
    pub by: &'a str,
}

/// A delete of a profile.
pub struct ProfileDelete<'a> {
    pub name: &'a ProfileName,
    pub expected_revision: Option<i64>,
    /// Absent is not an error.
    pub allow_missing: bool,
    /// Delete although conversations are bound to it, or documents reference it, or it does not
    /// decode.
    pub force: bool,
    /// Drop the kept history too (no undelete).
    pub purge: bool,
    pub by: &'a str,
}

/// A rename of a profile.
pub struct ProfileRename<'a> {
    pub from: &'a ProfileName,
    pub to: &'a ProfileName,
    pub by: &'a str,
}

/// An import of profiles.
pub struct ProfileImport<'a> {
    pub items: Vec<(ProfileName, LlmConfig)>,
    pub policy: ConflictPolicy,
    /// Nothing is written.
    pub dry_run: bool,
    pub by: &'a str,
}

/// Which conversations a listing wants: by id after `after`, with this status, bound to this
/// profile.
pub struct ConversationQuery<'a> {
    pub after: Option<ConversationId>,
    pub limit: usize,
    pub status: Option<ExecutionStatus>,
    pub profile: Option<&'a ProfileName>,
}

/// An update of a conversation's mutable fields.
pub struct ConversationUpdate<'a> {
    pub id: &'a ConversationId,
    pub expected_revision: Option<i64>,
    pub change: ConversationChange<'a>,
}

/// A delete of a conversation and its events.
pub struct ConversationDelete<'a> {
    pub id: &'a ConversationId,
    pub expected_revision: Option<i64>,
    pub allow_missing: bool,
    /// A record that does not decode goes too.
    pub force: bool,
}

/// An append of events to a conversation.
pub struct EventAppend<'a> {
    pub id: &'a ConversationId,
    pub events: Vec<NewEvent>,
    /// ABORTED unless the log ends at this seq.
    pub expected_next_seq: Option<i64>,
}

/// An import of a conversation with its events.
pub struct ConversationImport {
    pub c: Conversation,
    pub events: Vec<NewEvent>,
    pub policy: ConflictPolicy,
    pub dry_run: bool,
}

/// Which documents a listing wants: of `kind`, in name order after `after`.
pub struct DocQuery<'a> {
    pub kind: DocKind,
    pub after: Option<&'a str>,
    pub limit: usize,
}

/// A delete of a document.
pub struct DocDelete<'a> {
    pub kind: DocKind,
    pub name: &'a str,
    pub expected_revision: Option<i64>,
    pub allow_missing: bool,
    /// Delete although something references it, or it does not decode.
    pub force: bool,
}

/// A rename of a document; what references it follows.
pub struct DocRename<'a> {
    pub kind: DocKind,
    pub from: &'a str,
    pub to: &'a str,
}

/// An import of documents of one kind.
pub struct DocImport {
    pub kind: DocKind,
    pub items: Vec<(String, Map<String, Value>)>,
    pub policy: ConflictPolicy,
    pub dry_run: bool,
    /// The caller may not read secrets.
    pub blind: bool,
}
