//! The sled implementation of documents (provider connections, meta-profiles, agent profiles): one
//! tree keyed `kind \0 name`, written under the write lock like every record, with references
//! across kinds (and to and from profiles) checked and re-pointed in the same transaction.

use super::ops::Op;
use super::{stored_of, SledStore};
use crate::domain::document::{connection_of, referrer_kinds};
use crate::domain::{DocKind, Document, LlmConfig, Profile, Target, Timestamp};
use crate::store::codec::{DocumentRecord, ProfileRecord};
use crate::store::documents::{self as rules, DocPlan, DocPut};
use crate::store::records::{decode, document_key, or_skip, TreeId};
use crate::store::requests::{DocDelete, DocImport, DocQuery, DocRename};
use crate::store::{Change, ImportOutcome, PutOutcome, StoreError};

impl SledStore {
    fn read_document(&self, kind: DocKind, name: &str) -> Result<Option<Document>, StoreError> {
        let key = document_key(kind, name);
        self.documents
            .get(&key)?
            .map(|bytes| Ok(self.codec.decode_document(&key, &bytes)?.document))
            .transpose()
    }

    /// Every readable document of `kind`, in name order (damaged ones are passed over).
    fn documents_of(&self, kind: DocKind) -> Result<Vec<Document>, StoreError> {
        let prefix = document_key(kind, "");
        let mut out = Vec::new();
        for item in self.documents.scan_prefix(&prefix) {
            let (key, bytes) = item?;
            let read = self.codec.decode_document(&key, &bytes);
            out.extend(or_skip(read, "document record").map(|r| r.document));
        }
        Ok(out)
    }

    fn document_op(&self, doc: &Document) -> Result<(Op, u64), StoreError> {
        let record = DocumentRecord {
            seq: self.next_seq()?,
            document: doc.clone(),
        };
        let key = document_key(doc.kind, &doc.name);
        Ok((
            Op::Put(TreeId::Documents, key, self.codec.encode_document(&record)?),
            record.seq,
        ))
    }

    /// Whether a reference's target exists.
    fn target_exists(&self, target: &Target) -> Result<bool, StoreError> {
        Ok(match target {
            Target::Profile(name) => self.profiles.contains_key(name.as_bytes())?,
            Target::Document(kind, name) => {
                self.documents.contains_key(document_key(*kind, name))?
            }
        })
    }

    /// What references `target`, as `kind "name"`: documents, and for a connection the profiles
    /// bound to it (read without opening their secrets).
    pub(super) fn referrers(&self, target: &Target) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for kind in referrer_kinds(target) {
            out.extend(rules::referrers_among(target, &self.documents_of(*kind)?));
        }
        if let Target::Document(DocKind::Connection, id) = target {
            for item in self.profiles.iter() {
                let (key, bytes) = item?;
                let read = decode::<ProfileRecord>(TreeId::Profiles, &key, &bytes);
                if let Some(r) = or_skip(read, "profile record") {
                    if connection_of(&r.profile.llm.extra) == Some(id.as_str()) {
                        out.push(format!("profile {:?}", r.profile.name.as_str()));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Ops that point every document referencing `from` at `to`.
    pub(super) fn repoint_ops(
        &self,
        from: &Target,
        to: &str,
        now: Timestamp,
        ops: &mut Vec<Op>,
    ) -> Result<(), StoreError> {
        for kind in referrer_kinds(from) {
            for doc in self.documents_of(*kind)? {
                if let Some(changed) = rules::repointed(&doc, from, to, now) {
                    ops.push(self.document_op(&changed)?.0);
                }
            }
        }
        Ok(())
    }

    /// NOT_FOUND when `llm` names a provider connection that does not exist and `old` (the
    /// stored profile) did not name it already.
    pub(super) fn check_profile_connection(
        &self,
        old: Option<&Profile>,
        llm: &LlmConfig,
    ) -> Result<(), StoreError> {
        let refs = rules::added_connection(old.map(|p| &p.llm), llm);
        rules::check_targets("profile", &refs, |t| self.target_exists(t))
    }

    pub(crate) async fn get_document(
        &self,
        kind: DocKind,
        name: &str,
    ) -> Result<Option<Document>, StoreError> {
        self.read_document(kind, name)
    }

    pub(crate) async fn list_documents(
        &self,
        query: DocQuery<'_>,
    ) -> Result<Vec<Document>, StoreError> {
        let start = document_key(query.kind, query.after.unwrap_or(""));
        let prefix = document_key(query.kind, "");
        let mut out = Vec::new();
        for item in self.documents.range(start.clone()..) {
            let (key, bytes) = item?;
            if !key.starts_with(&prefix) || out.len() >= query.limit {
                break;
            }
            if query.after.is_some() && *key == *start {
                continue;
            }
            let read = self.codec.decode_document(&key, &bytes);
            out.extend(or_skip(read, "document record").map(|r| r.document));
        }
        Ok(out)
    }

    pub(crate) async fn put_document(
        &self,
        put: DocPut,
    ) -> Result<(Document, PutOutcome), StoreError> {
        self.durably(|| {
            let old = self.read_document(put.kind, &put.name)?;
            let added = put.added_references(old.as_ref());
            rules::check_targets(&put.owner(), &added, |t| self.target_exists(t))?;
            match rules::plan_put(old, put)? {
                DocPlan::Unchanged(doc) => self.unchanged((doc, PutOutcome::Unchanged)),
                DocPlan::Write(doc, outcome) => {
                    let (op, _) = self.document_op(&doc)?;
                    self.apply(&[op])?;
                    self.changed(std::iter::empty::<Change>(), (doc, outcome))
                }
            }
        })
        .await
    }

    pub(crate) async fn delete_document(
        &self,
        delete: DocDelete<'_>,
    ) -> Result<Option<Document>, StoreError> {
        self.durably(|| {
            let key = document_key(delete.kind, delete.name);
            let doc = match self.read_document(delete.kind, delete.name) {
                Err(StoreError::Corrupt { .. }) if delete.force => None,
                Err(e) => return Err(e),
                Ok(None) if delete.allow_missing => return self.unchanged(None),
                Ok(None) => return Err(StoreError::not_found(delete.kind.noun(), delete.name)),
                Ok(Some(doc)) => Some(doc),
            };
            if let Some(doc) = &doc {
                rules::check_revision(doc, delete.expected_revision)?;
                let target = Target::Document(delete.kind, delete.name.to_owned());
                rules::check_unreferenced(&target, &self.referrers(&target)?, delete.force)?;
            }
            self.apply(&[Op::Del(TreeId::Documents, key)])?;
            self.changed(
                std::iter::empty::<Change>(),
                doc.or_else(|| Some(rules::damaged(delete.kind, delete.name))),
            )
        })
        .await
    }

    pub(crate) async fn rename_document(&self, r: DocRename<'_>) -> Result<Document, StoreError> {
        let DocRename { kind, from, to } = r;
        self.durably(|| {
            let old = self
                .read_document(kind, from)?
                .ok_or_else(|| StoreError::not_found(kind.noun(), from))?;
            if from == to {
                return self.unchanged(old);
            }
            if self.documents.contains_key(document_key(kind, to))? {
                return Err(StoreError::AlreadyExists {
                    kind: kind.noun(),
                    name: to.to_owned(),
                });
            }
            let renamed = rules::renamed(&old, to)?;
            let mut ops = vec![
                Op::Del(TreeId::Documents, document_key(kind, from)),
                self.document_op(&renamed)?.0,
            ];
            self.repoint_ops(
                &Target::Document(kind, from.to_owned()),
                to,
                renamed.update_time,
                &mut ops,
            )?;
            self.apply(&ops)?;
            self.changed(std::iter::empty::<Change>(), renamed)
        })
        .await
    }

    pub(crate) async fn import_documents(
        &self,
        import: DocImport,
    ) -> Result<Vec<ImportOutcome>, StoreError> {
        self.durably(|| {
            let stored = stored_of(&import.items, |name| self.read_document(import.kind, name))?;
            let (outcomes, writes) = rules::plan_import(
                import.kind,
                import.items,
                import.policy,
                stored,
                import.blind,
            );
            if import.dry_run || writes.is_empty() {
                return self.unchanged(outcomes);
            }
            let ops = writes
                .iter()
                .map(|d| Ok(self.document_op(d)?.0))
                .collect::<Result<Vec<_>, StoreError>>()?;
            self.apply(&ops)?;
            self.changed(std::iter::empty::<Change>(), outcomes)
        })
        .await
    }
}
