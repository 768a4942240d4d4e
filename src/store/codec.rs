//! The stored form of records, shared by every backend: JSON, with each secret value sealed under
//! the place it belongs to (so a record copied to another name or id does not open).
use std::collections::BTreeSet;
use std::convert::Infallible;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::crypto::SecretCipher;
use super::records::{json_error, place, RawRecord, RotationReport, TreeId};
use super::StoreError;
use crate::domain::{Conversation, Document, LlmConfig, LlmSource, Profile, Secret, SecretField};

/// The stored form of a profile: the profile and the change seq of its last write.
#[derive(Clone, Serialize, Deserialize)]
pub struct ProfileRecord {
    /// The store-wide change seq of its last write.
    pub seq: u64,
    /// The profile.
    pub profile: Profile,
}

/// The stored form of a document: the document and the change seq of its last write.
#[derive(Clone, Serialize, Deserialize)]
pub struct DocumentRecord {
    /// The store-wide change seq of its last write.
    pub seq: u64,
    /// The document.
    pub document: Document,
}

/// A re-sealed record: its new bytes, and the key ids its secrets had.
pub type Resealed = (Vec<u8>, Vec<String>);

/// What [`Codec::reseal_record`] calls with each secret of a record and its associated data.
pub type SecretVisitor<'a> = dyn FnMut(&str, &mut Secret) -> Result<(), String> + 'a;

/// A stored record with secrets: it visits each with the associated data it is sealed under.
trait Sealed {
    fn secrets<E>(&mut self, f: impl FnMut(&str, &mut Secret) -> Result<(), E>) -> Result<(), E>;
}

impl Sealed for ProfileRecord {
    fn secrets<E>(&mut self, f: impl FnMut(&str, &mut Secret) -> Result<(), E>) -> Result<(), E> {
        profile_secrets(self, f)
    }
}

impl Sealed for DocumentRecord {
    fn secrets<E>(&mut self, f: impl FnMut(&str, &mut Secret) -> Result<(), E>) -> Result<(), E> {
        document_secrets(self, f)
    }
}

impl Sealed for Conversation {
    fn secrets<E>(&mut self, f: impl FnMut(&str, &mut Secret) -> Result<(), E>) -> Result<(), E> {
        conversation_secrets(self, f)
    }
}

/// Seals and opens records with the store's keys.
pub struct Codec {
    cipher: SecretCipher,
}

impl Codec {
    /// A codec over `cipher`.
    pub fn new(cipher: SecretCipher) -> Self {
        Self { cipher }
    }

    /// The keys.
    pub fn cipher(&self) -> &SecretCipher {
        &self.cipher
    }

    /// The stored bytes of `record`: each secret sealed under the place it belongs to (a record's
    /// name or id, so a rename, which encodes under the new name, re-seals them).
    fn seal<T: Sealed + Serialize>(&self, mut record: T) -> Result<Vec<u8>, StoreError> {
        self.seal_in_place(&mut record)
    }

    /// [`Self::seal`] without a copy of the record: its secrets are sealed in place for the
    /// encoding, then given their values back.
    fn seal_in_place<T: Sealed + Serialize>(&self, record: &mut T) -> Result<Vec<u8>, StoreError> {
        let mut opened = Vec::new();
        let Ok(()) = record.secrets(|aad, s| {
            let sealed = Secret::new(self.cipher.seal(s.expose(), aad));
            opened.push(std::mem::replace(s, sealed));
            Ok::<(), Infallible>(())
        });
        let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Storage(e.to_string()));
        // The same secrets, visited in the same order.
        let mut opened = opened.into_iter();
        let Ok(()) = record.secrets(|_, s| {
            if let Some(value) = opened.next() {
                *s = value;
            }
            Ok::<(), Infallible>(())
        });
        bytes
    }

    /// `record`, stored in `tree` under `key`, with its secrets opened.
    fn open<T: Sealed>(&self, tree: TreeId, key: &[u8], mut record: T) -> Result<T, StoreError> {
        record.secrets(|aad, s| {
            let plain = self
                .cipher
                .open(s.expose(), aad)
                .map_err(|e| StoreError::Corrupt {
                    key: place(tree, key),
                    reason: format!("{aad}: {e}"),
                })?;
            *s = Secret::new(plain);
            Ok::<(), StoreError>(())
        })?;
        Ok(record)
    }

    /// Decodes a record stored in `tree` under `key` and opens its secrets.
    fn decode<T: Sealed + DeserializeOwned>(
        &self,
        tree: TreeId,
        key: &[u8],
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        let record = serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            key: place(tree, key),
            reason: json_error(&e),
        })?;
        self.open(tree, key, record)
    }

    /// The stored bytes of a profile (its secrets sealed for the encoding only: `record` is
    /// given back as it was).
    pub fn encode_profile(&self, record: &mut ProfileRecord) -> Result<Vec<u8>, StoreError> {
        self.seal_in_place(record)
    }

    /// The change an entry of the profile change log records: a put of the sealed `record`, or
    /// the deletion of `name` at `revision`; none when the record was purged (empty), or (logged)
    /// when it does not decode.
    pub fn decode_change(
        &self,
        seq: u64,
        name: &str,
        revision: i64,
        record: Option<&[u8]>,
    ) -> Option<super::ProfileChange> {
        use super::ProfileChange;
        match record {
            // A put whose record a purge destroyed: the deletion that follows stands for it.
            Some([]) => None,
            Some(bytes) => super::records::or_skip(
                self.decode_profile(name.as_bytes(), bytes),
                "profile change",
            )
            .map(|r| ProfileChange::Put {
                seq,
                profile: std::sync::Arc::new(r.profile),
            }),
            None => crate::domain::ProfileName::parse(name, "name")
                .ok()
                .map(|name| ProfileChange::Delete {
                    seq,
                    name,
                    revision,
                }),
        }
    }

    /// Decodes a profile record stored under `key` and opens its secrets.
    pub fn decode_profile(&self, key: &[u8], bytes: &[u8]) -> Result<ProfileRecord, StoreError> {
        self.decode(TreeId::Profiles, key, bytes)
    }

    /// Decodes a kept revision stored under `key` (in the history) and opens its secrets.
    pub fn decode_revision(&self, key: &[u8], bytes: &[u8]) -> Result<ProfileRecord, StoreError> {
        self.decode(TreeId::History, key, bytes)
    }

    /// The stored bytes of a conversation (its inline LLMs' secrets sealed under its id and usage).
    pub fn encode_conversation(&self, c: &Conversation) -> Result<Vec<u8>, StoreError> {
        self.seal(c.clone())
    }

    /// Opens the secrets of a decoded conversation record stored under `key`.
    pub fn open_conversation(
        &self,
        key: &[u8],
        c: Conversation,
    ) -> Result<Conversation, StoreError> {
        self.open(TreeId::Conversations, key, c)
    }

    /// The stored bytes of a document.
    pub fn encode_document(&self, record: &DocumentRecord) -> Result<Vec<u8>, StoreError> {
        self.seal(record.clone())
    }

    /// Decodes a document record stored under `key` and opens its secrets.
    pub fn decode_document(&self, key: &[u8], bytes: &[u8]) -> Result<DocumentRecord, StoreError> {
        self.decode(TreeId::Documents, key, bytes)
    }

    /// Opens one stored secret and seals it again with the first key; returns the key id it had.
    fn reseal(&self, aad: &str, s: &mut Secret) -> Result<String, String> {
        let old = SecretCipher::key_id_of(s.expose())
            .unwrap_or("plaintext")
            .to_owned();
        let plain = self
            .cipher
            .open(s.expose(), aad)
            .map_err(|e| format!("{aad}: {e}"))?;
        *s = Secret::new(self.cipher.seal(&plain, aad));
        Ok(old)
    }

    /// Re-seals every secret of one stored record (a `T`, its secrets visited by `secrets`) with the
    /// first key: the new bytes and the key ids the secrets had, `None` when it holds no secret;
    /// `Err`: why the record is damaged (never a value).
    pub fn reseal_record<T: Serialize + serde::de::DeserializeOwned>(
        &self,
        bytes: &[u8],
        secrets: impl Fn(&mut T, &mut SecretVisitor<'_>) -> Result<(), String>,
    ) -> Result<Option<Resealed>, String> {
        let mut record: T = serde_json::from_slice(bytes).map_err(|e| json_error(&e))?;
        let mut old_keys = Vec::new();
        let mut reseal = |aad: &str, s: &mut Secret| {
            old_keys.push(self.reseal(aad, s)?);
            Ok::<(), String>(())
        };
        secrets(&mut record, &mut reseal)?;
        if old_keys.is_empty() {
            return Ok(None);
        }
        let bytes = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        Ok(Some((bytes, old_keys)))
    }

    /// Re-seals one stored record of `tree` with the first key (see [`Self::reseal_record`]): its
    /// new bytes, counted in `report`; `None` when it has nothing to re-seal, or when a secret does
    /// not open (then `report` names it, by `place`, and it is left as it is).
    pub fn reseal_stored(
        &self,
        tree: TreeId,
        place: &str,
        bytes: &[u8],
        report: &mut RotationReport,
    ) -> Option<Vec<u8>> {
        let resealed = match tree {
            TreeId::Profiles | TreeId::History => {
                self.reseal_record(bytes, |r: &mut ProfileRecord, f| profile_secrets(r, f))
            }
            TreeId::Conversations => {
                self.reseal_record(bytes, |c: &mut Conversation, f| conversation_secrets(c, f))
            }
            TreeId::Documents => {
                self.reseal_record(bytes, |d: &mut DocumentRecord, f| document_secrets(d, f))
            }
            // Their records hold no secret.
            TreeId::Events | TreeId::Bindings | TreeId::Deleted => Ok(None),
        };
        match resealed {
            Err(reason) => {
                report.damaged.push(format!("{place}: {reason}"));
                None
            }
            Ok(None) => None,
            Ok(Some((sealed, old_keys))) => {
                report.count(tree, old_keys);
                Some(sealed)
            }
        }
    }

    /// Decodes a conversation record stored under `key` and opens its secrets.
    pub fn decode_conversation(
        &self,
        key: &[u8],
        bytes: &[u8],
    ) -> Result<Conversation, StoreError> {
        let c = super::records::decode(TreeId::Conversations, key, bytes)?;
        self.open_conversation(key, c)
    }
}

/// Calls `f` with the associated data and value of every set secret of `llm`, at `place`.
fn llm_secrets<E>(
    llm: &mut LlmConfig,
    place: &str,
    f: &mut impl FnMut(&str, &mut Secret) -> Result<(), E>,
) -> Result<(), E> {
    for field in SecretField::ALL {
        if let Some(s) = llm.secret_mut(field) {
            f(&format!("{place}/{}", field.key()), s)?;
        }
    }
    Ok(())
}

/// Every secret of a profile record, bound to `profile/<name>/<field>`.
pub fn profile_secrets<E>(
    record: &mut ProfileRecord,
    mut f: impl FnMut(&str, &mut Secret) -> Result<(), E>,
) -> Result<(), E> {
    let place = format!("profile/{}", record.profile.name);
    llm_secrets(&mut record.profile.llm, &place, &mut f)
}

/// Every secret value of a document (a string under one of its kind's secret keys), bound to
/// `<kind>/<name>/<key>`.
pub fn document_secrets<E>(
    record: &mut DocumentRecord,
    mut f: impl FnMut(&str, &mut Secret) -> Result<(), E>,
) -> Result<(), E> {
    let doc = &mut record.document;
    for key in doc.kind.secret_keys() {
        if let Some(serde_json::Value::String(value)) = doc.body.get_mut(*key) {
            let mut secret = Secret::new(std::mem::take(value));
            let result = f(
                &format!("{}/{}/{key}", doc.kind.as_str(), doc.name),
                &mut secret,
            );
            *value = secret.expose().to_owned();
            result?;
        }
    }
    Ok(())
}

/// Every inline secret of a conversation, bound to `conversation/<id>/llms/<usage>/<field>`.
pub fn conversation_secrets<E>(
    c: &mut Conversation,
    mut f: impl FnMut(&str, &mut Secret) -> Result<(), E>,
) -> Result<(), E> {
    let id = c.id;
    for (usage, source) in &mut c.llms {
        if let LlmSource::Inline(llm) = source {
            llm_secrets(llm, &format!("conversation/{id}/llms/{usage}"), &mut f)?;
        }
    }
    Ok(())
}

/// The key ids that seal the secrets of `records` (profiles and inline LLMs of conversations);
/// records that do not decode are passed over (a check reports them).
pub fn sealed_key_ids(records: &[RawRecord]) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut note = |_: &str, s: &mut Secret| {
        if let Some(id) = SecretCipher::key_id_of(s.expose()) {
            ids.insert(id.to_owned());
        }
        Ok::<(), ()>(())
    };
    for r in records {
        match r.tree {
            TreeId::Profiles | TreeId::History => {
                if let Ok(mut p) = serde_json::from_slice::<ProfileRecord>(&r.value) {
                    let _ = profile_secrets(&mut p, &mut note);
                }
            }
            TreeId::Conversations => {
                if let Ok(mut c) = serde_json::from_slice::<Conversation>(&r.value) {
                    let _ = conversation_secrets(&mut c, &mut note);
                }
            }
            TreeId::Documents => {
                if let Ok(mut d) = serde_json::from_slice::<DocumentRecord>(&r.value) {
                    let _ = document_secrets(&mut d, &mut note);
                }
            }
            TreeId::Bindings | TreeId::Events | TreeId::Deleted => {}
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ProfileName;

    /// Encoding seals the secrets in the bytes only: the record is given back as it was, and the
    /// bytes decode to it.
    #[test]
    fn encoding_a_profile_leaves_it_as_it_was() {
        let codec = Codec::new(SecretCipher::new(vec![("k1".into(), [7; 32])]).unwrap());
        let mut record = ProfileRecord {
            seq: 9,
            profile: Profile {
                name: ProfileName::parse("p", "name").unwrap(),
                llm: LlmConfig {
                    model: "m".into(),
                    api_key: Some(Secret::new("sk-one")),
                    aws_secret_access_key: Some(Secret::new("aws-two")),
                    ..LlmConfig::default()
                },
                revision: 3,
                create_time: Default::default(),
                update_time: Default::default(),
                update_principal: "t".into(),
            },
        };
        let before = record.clone();
        let bytes = codec.encode_profile(&mut record).unwrap();
        assert_eq!(
            serde_json::to_value(&record.profile).unwrap(),
            serde_json::to_value(&before.profile).unwrap()
        );
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            !text.contains("sk-one") && !text.contains("aws-two"),
            "{text}"
        );
        let back = codec.decode_profile(b"p", &bytes).unwrap();
        assert_eq!(back.seq, 9);
        assert_eq!(
            serde_json::to_value(&back.profile).unwrap(),
            serde_json::to_value(&before.profile).unwrap()
        );
    }
}
