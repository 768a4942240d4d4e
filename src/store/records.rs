//! Records as both backends keep them, whatever the database: the kinds of record (named after
//! sled's trees, and PostgreSQL's tables), their keys, how a record is named in errors and
//! reports, whole-store snapshots of raw records, and what a key rotation did.
use std::time::Duration;

use serde::Serialize;

use super::StoreError;
use crate::domain::{ConversationId, DocKind, ProfileName};
use crate::hex;

/// A tree of the database: the unit of a write, and of a backup record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TreeId {
    /// Profile records by name.
    Profiles,
    /// Conversation records by id.
    Conversations,
    /// The index of profile bindings: `profile \0 id`, empty values.
    Bindings,
    /// Events by `id ++ seq`.
    Events,
    /// Provider connections, meta-profiles and agent profiles by `kind \0 name`.
    Documents,
    /// Each profile's kept revisions by `name \0 revision` (8 bytes, big-endian): profile records.
    History,
    /// Deleted profiles whose history is kept (for undelete) by name: [`Tombstone`]s.
    Deleted,
}

impl TreeId {
    /// Every tree, in the order a backup lists them.
    pub const ALL: [Self; 7] = [
        Self::Profiles,
        Self::Conversations,
        Self::Bindings,
        Self::Events,
        Self::Documents,
        Self::History,
        Self::Deleted,
    ];

    /// The tree's name in the database (and in backups).
    pub fn name(self) -> &'static str {
        match self {
            Self::Profiles => "profiles",
            Self::Conversations => "conversations",
            Self::Bindings => "bindings",
            Self::Events => "events",
            Self::Documents => "documents",
            Self::History => "history",
            Self::Deleted => "deleted",
        }
    }

    /// The tree of a name, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Plain JSON, for records without secrets (events). Profiles and conversations go through
/// `SledStore::encode_profile` / `encode_conversation`, which seal their secrets.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Storage(e.to_string()))
}

pub fn binding_key(name: &ProfileName, id: &ConversationId) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.as_str().len() + 17);
    k.extend_from_slice(name.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// A document's key: its kind, a zero byte, its name.
pub fn document_key(kind: DocKind, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(kind.as_str().len() + 1 + name.len());
    k.extend_from_slice(kind.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

/// A document key: its kind and name.
pub fn split_document_key(key: &[u8]) -> Option<(DocKind, String)> {
    let at = key.iter().position(|b| *b == 0)?;
    let kind = DocKind::parse(std::str::from_utf8(&key[..at]).ok()?)?;
    Some((kind, String::from_utf8(key[at + 1..].to_vec()).ok()?))
}

/// A kept revision's key: the profile's name, a zero byte, the revision (big-endian, so a name's
/// revisions sort in order).
pub fn history_key(name: &str, revision: i64) -> Vec<u8> {
    let mut k = history_prefix(name);
    k.extend_from_slice(&revision.to_be_bytes());
    k
}

/// The prefix of every kept revision of `name`.
pub fn history_prefix(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 9);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k
}

/// A kept revision's key: the profile's name and the revision.
pub fn split_history_key(key: &[u8]) -> Option<(String, i64)> {
    let (name, rest) = key.split_at_checked(key.len().checked_sub(9)?)?;
    let (zero, revision) = rest.split_first()?;
    (*zero == 0).then_some(())?;
    Some((
        String::from_utf8(name.to_vec()).ok()?,
        i64::from_be_bytes(revision.try_into().ok()?),
    ))
}

pub fn event_key(id: &ConversationId, seq: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(24);
    k.extend_from_slice(id.as_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn decode<T: serde::de::DeserializeOwned>(
    tree: TreeId,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: place(tree, key),
        reason: json_error(&e),
    })
}

/// Why stored bytes do not decode, without quoting them: serde's own message can quote a value,
/// and a damaged record's value may be a secret.
pub fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "unreadable",
        Category::Syntax => "not valid JSON",
        Category::Data => "JSON of the wrong shape",
        Category::Eof => "JSON cut short",
    };
    format!("{what} (line {}, column {})", e.line(), e.column())
}

/// What is kept of a deleted profile beside its history, until `--deleted-retention` passes or an
/// undelete, a re-create or a purge: when, by whom, at which revision.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tombstone {
    /// The revision the profile had when it was deleted.
    pub revision: i64,
    /// When it was deleted.
    pub delete_time: crate::domain::Timestamp,
    /// Who deleted it.
    #[serde(default)]
    pub delete_principal: String,
}

/// One stored record, byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    /// Its tree.
    pub tree: TreeId,
    /// Its key, as stored.
    pub key: Vec<u8>,
    /// Its value, as stored (secret values sealed).
    pub value: Vec<u8>,
}

/// A consistent copy of every record: no write is half in it.
#[derive(Debug)]
pub struct Snapshot {
    /// The change sequence counter when it was taken: a restored store continues above it.
    pub next_seq: u64,
    /// Every record, tree by tree ([`TreeId::ALL`] order), each in key order.
    pub records: Vec<RawRecord>,
    /// How long writers were held off while it was copied.
    pub blocked: Duration,
}

/// A key as text for a report: printable, whatever the bytes.
pub fn text_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key).escape_debug().to_string()
}

pub fn conversation_id(bytes: &[u8]) -> Option<ConversationId> {
    Some(ConversationId::from_bytes(bytes.try_into().ok()?))
}

/// An event key: the conversation id and the seq.
pub fn split_event_key(key: &[u8]) -> Option<(ConversationId, i64)> {
    let (id, seq) = key.split_at_checked(16)?;
    Some((
        conversation_id(id)?,
        i64::from_be_bytes(seq.try_into().ok()?),
    ))
}

/// A binding key: the profile name and the conversation id.
pub fn split_binding_key(key: &[u8]) -> Option<(String, ConversationId)> {
    let (name, rest) = key.split_at_checked(key.len().checked_sub(17)?)?;
    let (zero, id) = rest.split_first()?;
    (*zero == 0).then_some(())?;
    Some((String::from_utf8(name.to_vec()).ok()?, conversation_id(id)?))
}

/// How a record is named in logs, errors and reports: `<tree>/<key>`, the key as a name, an id or
/// an id and seq, or as hex when it has no such shape.
pub fn place(tree: TreeId, key: &[u8]) -> String {
    let shaped = match tree {
        TreeId::Profiles => Some(text_key(key)),
        TreeId::Conversations => conversation_id(key).map(|id| id.to_string()),
        TreeId::Bindings => {
            split_binding_key(key).map(|(name, id)| format!("{}/{id}", text_key(name.as_bytes())))
        }
        TreeId::Events => split_event_key(key).map(|(id, seq)| format!("{id}/{seq}")),
        TreeId::Documents => split_document_key(key)
            .map(|(kind, name)| format!("{}/{}", kind.as_str(), text_key(name.as_bytes()))),
        TreeId::Deleted => Some(text_key(key)),
        TreeId::History => split_history_key(key)
            .map(|(name, revision)| format!("{}/{revision}", text_key(name.as_bytes()))),
    };
    format!("{}/{}", tree.name(), shaped.unwrap_or_else(|| hex(key)))
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
    /// Documents (provider connections) whose secrets were re-encrypted.
    pub documents: usize,
    /// Kept profile revisions whose secrets were re-encrypted.
    pub revisions: usize,
    /// Secrets re-encrypted, in all.
    pub secrets: usize,
    /// Secrets re-encrypted, by the key id they had (`plaintext` for an earlier version's value).
    pub by_old_key: std::collections::BTreeMap<String, usize>,
    /// Records left as they were because a secret does not open, with the reason (no secret in it).
    pub damaged: Vec<String>,
}

impl RotationReport {
    /// Counts one re-sealed record of `tree`, whose secrets had the key ids `old_keys`.
    pub(crate) fn count(&mut self, tree: TreeId, old_keys: Vec<String>) {
        match tree {
            TreeId::Profiles => self.profiles += 1,
            TreeId::Conversations => self.conversations += 1,
            TreeId::Documents => self.documents += 1,
            TreeId::History => self.revisions += 1,
            TreeId::Events | TreeId::Bindings | TreeId::Deleted => {}
        }
        self.secrets += old_keys.len();
        for k in old_keys {
            *self.by_old_key.entry(k).or_default() += 1;
        }
    }
}

/// A record that reads, or `None` after one error line naming what was passed over: a listing
/// skips a damaged record (`check` reports it, a forced delete removes it) instead of failing.
pub fn or_skip<T>(read: Result<T, StoreError>, what: &str) -> Option<T> {
    match read {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(error = %e, "skipping a damaged {what}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_and_refuse_other_shapes() {
        let id = ConversationId::generate();
        let mut event = id.as_bytes().to_vec();
        event.extend_from_slice(&7i64.to_be_bytes());
        assert_eq!(split_event_key(&event), Some((id, 7)));
        assert_eq!(split_event_key(&event[..20]), None);
        let name = crate::domain::ProfileName::parse("gpt", "name").expect("valid");
        assert_eq!(
            split_binding_key(&binding_key(&name, &id)),
            Some(("gpt".to_owned(), id))
        );
        assert_eq!(split_binding_key(b"short"), None);
        assert_eq!(text_key(b"a\nb\xff"), "a\\nb\u{fffd}");
        assert_eq!(place(TreeId::Events, &event), format!("events/{id}/7"));
        assert_eq!(
            place(TreeId::Events, &event[..3]),
            format!("events/{}", hex(&event[..3]))
        );
        assert_eq!(
            place(TreeId::Conversations, id.as_bytes()),
            format!("conversations/{id}")
        );
    }
}
