//! The PostgreSQL implementation of documents (provider connections, meta-profiles, agent
//! profiles): the `documents` table, written in transactions that hold the write lock, with
//! references across kinds (and to and from profiles) checked and re-pointed in the same
//! transaction, as sled does.
use std::collections::HashMap;

use super::rows::Run;
use super::{limit, rows, store_error, PgStore, Tx};
use crate::domain::document::{connection_of, referrer_kinds};
use crate::domain::{DocKind, Document, Reference, Target, Timestamp};
use crate::store::codec::{DocumentRecord, ProfileRecord};
use crate::store::documents::{self as rules, DocPlan, DocPut};
use crate::store::records::{decode, document_key, or_skip, TreeId};
use crate::store::requests::{DocDelete, DocImport, DocQuery, DocRename};
use crate::store::{ImportOutcome, PutOutcome, StoreError};

/// Whether a reference's target exists.
async fn target_exists(tx: &mut Tx, target: &Target) -> Result<bool, StoreError> {
    match target {
        Target::Profile(name) => {
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM profiles WHERE name = $1)")
                .bind(name)
                .fetch_one(&mut **tx)
                .await
        }
        Target::Document(kind, name) => {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM documents WHERE kind = $1 AND name = $2)",
            )
            .bind(kind.as_str())
            .bind(name)
            .fetch_one(&mut **tx)
            .await
        }
    }
    .map_err(store_error)
}

/// NOT_FOUND unless every reference in `refs` (held by `owner`) names a record that exists.
pub(super) async fn check_targets(
    tx: &mut Tx,
    owner: &str,
    refs: &[Reference],
) -> Result<(), StoreError> {
    let mut present = HashMap::new();
    for r in refs {
        present.insert(r.target.clone(), target_exists(tx, &r.target).await?);
    }
    rules::check_targets(owner, refs, |t| {
        Ok(present.get(t).copied().unwrap_or(false))
    })
}

impl PgStore {
    fn decode_document(
        &self,
        kind: DocKind,
        name: &str,
        bytes: &[u8],
    ) -> Result<Document, StoreError> {
        Ok(self
            .codec
            .decode_document(&document_key(kind, name), bytes)?
            .document)
    }

    /// The document `kind`/`name`, read through `db` (the pool, or a transaction).
    async fn read_document<'e, E: sqlx::Executor<'e, Database = sqlx::Postgres>>(
        &self,
        db: E,
        kind: DocKind,
        name: &str,
    ) -> Result<Option<Document>, StoreError> {
        let row: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT record FROM documents WHERE kind = $1 AND name = $2")
                .bind(kind.as_str())
                .bind(name)
                .fetch_optional(db)
                .await
                .map_err(store_error)?;
        row.map(|bytes| self.decode_document(kind, name, &bytes))
            .transpose()
    }

    /// The documents of `kind` that decode among `rows` of (name, record); damaged ones are
    /// passed over with a log line.
    fn readable(&self, kind: DocKind, rows: Vec<(String, Vec<u8>)>) -> Vec<Document> {
        rows.into_iter()
            .filter_map(|(name, bytes)| {
                or_skip(self.decode_document(kind, &name, &bytes), "document record")
            })
            .collect()
    }

    /// Every readable document of `kind` (damaged ones are passed over).
    async fn documents_of(&self, tx: &mut Tx, kind: DocKind) -> Result<Vec<Document>, StoreError> {
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT name, record FROM documents WHERE kind = $1 ORDER BY name")
                .bind(kind.as_str())
                .fetch_all(&mut **tx)
                .await
                .map_err(store_error)?;
        Ok(self.readable(kind, rows))
    }

    async fn write_documents(&self, tx: &mut Tx, docs: &[Document]) -> Result<(), StoreError> {
        if docs.is_empty() {
            return Ok(());
        }
        let first = rows::take_seqs(tx, docs.len()).await?;
        for (seq, doc) in (first..).zip(docs) {
            let record = DocumentRecord {
                seq,
                document: doc.clone(),
            };
            sqlx::query(
                "INSERT INTO documents (kind, name, seq, revision, record) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (kind, name) DO UPDATE SET seq = EXCLUDED.seq, revision = EXCLUDED.revision, record = EXCLUDED.record",
            )
            .bind(doc.kind.as_str())
            .bind(&doc.name)
            .bind(i64::try_from(seq).unwrap_or(i64::MAX))
            .bind(doc.revision)
            .bind(self.codec.encode_document(&record)?)
            .run(&mut **tx)
            .await?;
        }
        Ok(())
    }

    async fn remove_document(
        &self,
        tx: &mut Tx,
        kind: DocKind,
        name: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM documents WHERE kind = $1 AND name = $2")
            .bind(kind.as_str())
            .bind(name)
            .run(&mut **tx)
            .await
    }

    /// What references `target`, as `kind "name"`: documents, and for a connection the profiles
    /// bound to it.
    pub(super) async fn referrers(
        &self,
        tx: &mut Tx,
        target: &Target,
    ) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for kind in referrer_kinds(target) {
            let docs = self.documents_of(tx, *kind).await?;
            out.extend(rules::referrers_among(target, &docs));
        }
        if let Target::Document(DocKind::Connection, id) = target {
            // Read as sled reads them: the JSON of each record, secrets still sealed; a damaged
            // record is passed over (check reports it).
            let rows: Vec<(String, Vec<u8>)> =
                sqlx::query_as("SELECT name, record FROM profiles ORDER BY name")
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(store_error)?;
            for (name, bytes) in rows {
                let read = decode::<ProfileRecord>(TreeId::Profiles, name.as_bytes(), &bytes);
                if let Some(r) = or_skip(read, "profile record") {
                    if connection_of(&r.profile.llm.extra) == Some(id.as_str()) {
                        out.push(format!("profile {name:?}"));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Points every document referencing `from` at `to`.
    pub(super) async fn repoint(
        &self,
        tx: &mut Tx,
        from: &Target,
        to: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut changed = Vec::new();
        for kind in referrer_kinds(from) {
            for doc in self.documents_of(tx, *kind).await? {
                changed.extend(rules::repointed(&doc, from, to, now));
            }
        }
        self.write_documents(tx, &changed).await
    }

    pub(crate) async fn get_document(
        &self,
        kind: DocKind,
        name: &str,
    ) -> Result<Option<Document>, StoreError> {
        self.read_document(&self.pool, kind, name).await
    }

    pub(crate) async fn list_documents(
        &self,
        query: DocQuery<'_>,
    ) -> Result<Vec<Document>, StoreError> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT name, record FROM documents WHERE kind = $1 AND ($2::text IS NULL OR name > $2) ORDER BY name LIMIT $3",
        )
        .bind(query.kind.as_str())
        .bind(query.after)
        .bind(limit(query.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(self.readable(query.kind, rows))
    }

    pub(crate) async fn put_document(
        &self,
        put: DocPut,
    ) -> Result<(Document, PutOutcome), StoreError> {
        let mut tx = self.begin(true).await?;
        let old = self.read_document(&mut *tx, put.kind, &put.name).await?;
        let added = put.added_references(old.as_ref());
        check_targets(&mut tx, &put.owner(), &added).await?;
        match rules::plan_put(old, put)? {
            DocPlan::Unchanged(doc) => Ok((doc, PutOutcome::Unchanged)),
            DocPlan::Write(doc, outcome) => {
                self.write_documents(&mut tx, std::slice::from_ref(&doc))
                    .await?;
                self.commit(tx).await?;
                Ok((doc, outcome))
            }
        }
    }

    pub(crate) async fn delete_document(
        &self,
        delete: DocDelete<'_>,
    ) -> Result<Option<Document>, StoreError> {
        let mut tx = self.begin(true).await?;
        let doc = match self.read_document(&mut *tx, delete.kind, delete.name).await {
            Err(StoreError::Corrupt { .. }) if delete.force => {
                rules::damaged(delete.kind, delete.name)
            }
            Err(e) => return Err(e),
            Ok(None) => {
                return crate::store::rules::absent(
                    delete.allow_missing,
                    delete.kind.noun(),
                    delete.name,
                )
            }
            Ok(Some(doc)) => {
                rules::check_revision(&doc, delete.expected_revision)?;
                let target = Target::Document(delete.kind, delete.name.to_owned());
                let referrers = self.referrers(&mut tx, &target).await?;
                rules::check_unreferenced(&target, &referrers, delete.force)?;
                doc
            }
        };
        self.remove_document(&mut tx, delete.kind, delete.name)
            .await?;
        self.commit(tx).await?;
        Ok(Some(doc))
    }

    pub(crate) async fn rename_document(&self, r: DocRename<'_>) -> Result<Document, StoreError> {
        let DocRename { kind, from, to } = r;
        let mut tx = self.begin(true).await?;
        let old = self
            .read_document(&mut *tx, kind, from)
            .await?
            .ok_or_else(|| StoreError::not_found(kind.noun(), from))?;
        if from == to {
            return Ok(old);
        }
        if self.read_document(&mut *tx, kind, to).await?.is_some() {
            return Err(StoreError::AlreadyExists {
                kind: kind.noun(),
                name: to.to_owned(),
            });
        }
        let renamed = rules::renamed(&old, to)?;
        self.remove_document(&mut tx, kind, from).await?;
        self.write_documents(&mut tx, std::slice::from_ref(&renamed))
            .await?;
        self.repoint(
            &mut tx,
            &Target::Document(kind, from.to_owned()),
            to,
            renamed.update_time,
        )
        .await?;
        self.commit(tx).await?;
        Ok(renamed)
    }

    pub(crate) async fn import_documents(
        &self,
        import: DocImport,
    ) -> Result<Vec<ImportOutcome>, StoreError> {
        let mut tx = self.begin(!import.dry_run).await?;
        let mut stored = HashMap::new();
        for (name, _) in &import.items {
            if let Some(d) = self.read_document(&mut *tx, import.kind, name).await? {
                stored.insert(name.clone(), d);
            }
        }
        let (outcomes, writes) = rules::plan_import(
            import.kind,
            import.items,
            import.policy,
            stored,
            import.blind,
        );
        if import.dry_run || writes.is_empty() {
            return Ok(outcomes);
        }
        self.write_documents(&mut tx, &writes).await?;
        self.commit(tx).await?;
        Ok(outcomes)
    }
}
