//! Validated domain types: what the registry stores, independent of the wire and the database.
pub mod connection;
mod conversation;
pub mod document;
pub mod meta_profile;
mod name;
mod profile;
pub mod pyjson;
mod transfer;
pub mod values;

pub use connection::ProviderConnection;
pub use conversation::{
    conversation_violations, parse_timestamp, Conversation, ConversationId, Event, ExecutionStatus,
    LlmSource, NewEvent, TYPED_STATE_KEYS,
};
pub use document::{DocKind, Document, Reference, Target};
pub use meta_profile::{MetaProfile, MetaProfileClass};
pub use name::ProfileName;
pub use profile::{
    reconcile, LlmConfig, Profile, Secret, SecretField, Timestamp, SECRET_MASK, TYPED_KEYS,
};
pub use transfer::{ConflictPolicy, ImportOutcome, Outcome, SecretsMode, Writer, NO_KEY};

/// One broken rule of a request: the field's path and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The field's path, e.g. `profile.llm.model`.
    pub field: String,
    /// The rule it breaks.
    pub description: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}
