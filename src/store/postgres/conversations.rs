//! The conversations of the PostgreSQL store: its conversation methods (records,
//! their bindings, their events and the notifications of appends) and the helpers only it uses.
use tokio::sync::broadcast;

use super::rows::Run;
use super::{limit, rows, store_error, uuid, PgStore, Tx};
use crate::domain::{Conversation, ConversationId, Event, ExecutionStatus, ProfileName};
use crate::store::records::{decode, encode, event_key, or_skip};
use crate::store::requests::{
    ConversationDelete, ConversationImport, ConversationQuery, ConversationUpdate, EventAppend,
};
use crate::store::rules;
use crate::store::{EventBatch, EventQuery, ImportOutcome, StoreError, TreeId};

impl PgStore {
    pub(crate) async fn create_conversation(
        &self,
        c: Conversation,
    ) -> Result<Conversation, StoreError> {
        let mut tx = self.begin(true).await?;
        if self
            .read_conversation(&mut tx, &c.id, false)
            .await?
            .is_some()
        {
            return Err(StoreError::AlreadyExists {
                kind: "conversation",
                name: c.id.to_string(),
            });
        }
        self.write_bound(tx, rules::created(c)).await
    }

    pub(crate) async fn get_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        let row: Option<(Vec<u8>, i64)> =
            sqlx::query_as("SELECT record, event_count FROM conversations WHERE id = $1")
                .bind(uuid(id))
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
        row.map(|(bytes, count)| self.conversation(id, &bytes, count))
            .transpose()
    }

    pub(crate) async fn list_conversations(
        &self,
        query: ConversationQuery<'_>,
    ) -> Result<Vec<Conversation>, StoreError> {
        let rows: Vec<(uuid::Uuid, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT c.id, c.record, c.event_count FROM conversations c \
             WHERE ($1::uuid IS NULL OR c.id > $1) AND ($2::text IS NULL OR c.execution_status = $2) \
               AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM bindings b WHERE b.profile = $3 AND b.conversation = c.id)) \
             ORDER BY c.id LIMIT $4",
        )
        .bind(query.after.as_ref().map(uuid))
        .bind(query.status.map(ExecutionStatus::sdk_name))
        .bind(query.profile.map(ProfileName::as_str))
        .bind(limit(query.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, bytes, count) in rows {
            let id = ConversationId::from_bytes(id.into_bytes());
            out.extend(or_skip(
                self.conversation(&id, &bytes, count),
                "conversation record",
            ));
        }
        Ok(out)
    }

    pub(crate) async fn update_conversation(
        &self,
        update: ConversationUpdate<'_>,
    ) -> Result<Conversation, StoreError> {
        let mut tx = self.begin(true).await?;
        let old = self
            .read_conversation(&mut tx, update.id, true)
            .await?
            .ok_or_else(|| StoreError::not_found("conversation", update.id))?;
        rules::check_conversation_revision(&old, update.expected_revision)?;
        let Some(new) = rules::updated(&old, update.change)? else {
            return Ok(old);
        };
        self.write_bound(tx, new).await
    }

    pub(crate) async fn delete_conversation(
        &self,
        delete: ConversationDelete<'_>,
    ) -> Result<Option<(Conversation, i64)>, StoreError> {
        let id = delete.id;
        let mut tx = self.begin(true).await?;
        let read = match self.read_conversation(&mut tx, id, true).await {
            // A record that does not decode is not kept forever: force deletes its row (its
            // events and bindings cascade).
            Err(StoreError::Corrupt { .. }) if delete.force => {
                let events: i64 = sqlx::query_scalar(
                    "DELETE FROM conversations WHERE id = $1 RETURNING event_count",
                )
                .bind(uuid(id))
                .fetch_one(&mut *tx)
                .await
                .map_err(store_error)?;
                rows::notify(&mut tx, &format!("e {id} {events} 1")).await?;
                self.commit(tx).await?;
                return Ok(Some((rules::damaged_conversation(id), events)));
            }
            other => other?,
        };
        let Some(old) = read else {
            return rules::absent(delete.allow_missing, "conversation", id);
        };
        rules::check_conversation_revision(&old, delete.expected_revision)?;
        // Events and bindings go with it (ON DELETE CASCADE).
        sqlx::query("DELETE FROM conversations WHERE id = $1")
            .bind(uuid(id))
            .run(&mut *tx)
            .await?;
        rows::notify(&mut tx, &format!("e {id} {} 1", old.event_count)).await?;
        self.commit(tx).await?;
        let events = old.event_count;
        Ok(Some((old, events)))
    }

    pub(crate) async fn append_events(
        &self,
        append: EventAppend<'_>,
    ) -> Result<(i64, i64), StoreError> {
        let id = append.id;
        let mut tx = self.begin(false).await?;
        let first: i64 =
            sqlx::query_scalar("SELECT event_count FROM conversations WHERE id = $1 FOR UPDATE")
                .bind(uuid(id))
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?
                .ok_or_else(|| StoreError::not_found("conversation", id))?;
        rules::check_next_seq(id, first, append.expected_next_seq)?;
        if append.events.is_empty() {
            return Ok((first, first));
        }
        let events = rules::numbered(first, append.events);
        let next = first.saturating_add(limit(events.len()));
        self.insert_events(&mut tx, id, &events).await?;
        sqlx::query("UPDATE conversations SET event_count = $2 WHERE id = $1")
            .bind(uuid(id))
            .bind(next)
            .run(&mut *tx)
            .await?;
        rows::notify(&mut tx, &format!("e {id} {next} 0")).await?;
        self.commit(tx).await?;
        Ok((first, next))
    }

    pub(crate) async fn list_events(
        &self,
        id: &ConversationId,
        q: &EventQuery,
    ) -> Result<Vec<Event>, StoreError> {
        let sql = if q.descending {
            "SELECT seq, record FROM events WHERE conversation = $1 AND seq > $2 AND seq < $3 \
             AND ($4 = '' OR kind = $4) AND ($5 = '' OR source = $5) ORDER BY seq DESC LIMIT $6"
        } else {
            "SELECT seq, record FROM events WHERE conversation = $1 AND seq > $2 AND seq < $3 \
             AND ($4 = '' OR kind = $4) AND ($5 = '' OR source = $5) ORDER BY seq LIMIT $6"
        };
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(sql)
            .bind(uuid(id))
            .bind(q.after_seq.filter(|s| *s >= 0).unwrap_or(-1))
            .bind(q.before_seq.map_or(i64::MAX, |s| s.max(0)))
            .bind(&q.kind)
            .bind(&q.source)
            .bind(limit(q.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for (seq, bytes) in rows {
            let key = event_key(id, seq);
            out.extend(or_skip(
                decode::<Event>(TreeId::Events, &key, &bytes),
                "event record",
            ));
        }
        Ok(out)
    }

    pub(crate) async fn import_conversation(
        &self,
        import: ConversationImport,
    ) -> Result<ImportOutcome, StoreError> {
        let mut tx = self.begin(!import.dry_run).await?;
        self.check_profiles_exist(&mut tx, &import.c).await?;
        let old = self
            .read_conversation(&mut tx, &import.c.id, !import.dry_run)
            .await?;
        let (c, outcome) = match rules::plan_import_conversation(
            import.c,
            old.as_ref(),
            import.events.len(),
            import.policy,
        ) {
            Ok(plan) => plan,
            Err(skipped) => return Ok(skipped),
        };
        if import.dry_run {
            return Ok(outcome);
        }
        if old.is_some() {
            sqlx::query("DELETE FROM events WHERE conversation = $1")
                .bind(uuid(&c.id))
                .run(&mut *tx)
                .await?;
        }
        self.write_conversation(&mut tx, &c).await?;
        self.insert_events(&mut tx, &c.id, &rules::numbered(0, import.events))
            .await?;
        self.commit(tx).await?;
        Ok(outcome)
    }

    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<EventBatch> {
        self.event_changes.subscribe()
    }
}

impl PgStore {
    /// Writes `c` and commits, once every profile it binds exists (NOT_FOUND otherwise).
    async fn write_bound(&self, mut tx: Tx, c: Conversation) -> Result<Conversation, StoreError> {
        self.check_profiles_exist(&mut tx, &c).await?;
        self.write_conversation(&mut tx, &c).await?;
        self.commit(tx).await?;
        Ok(c)
    }

    async fn check_profiles_exist(&self, tx: &mut Tx, c: &Conversation) -> Result<(), StoreError> {
        for name in c.bound_profiles() {
            let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM profiles WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(store_error)?;
            if found.is_none() {
                return Err(StoreError::not_found("profile", name));
            }
        }
        Ok(())
    }

    async fn insert_events(
        &self,
        tx: &mut Tx,
        id: &ConversationId,
        events: &[Event],
    ) -> Result<(), StoreError> {
        for chunk in events.chunks(1000) {
            let mut seqs = Vec::with_capacity(chunk.len());
            let mut kinds = Vec::with_capacity(chunk.len());
            let mut sources = Vec::with_capacity(chunk.len());
            let mut records = Vec::with_capacity(chunk.len());
            for e in chunk {
                seqs.push(e.seq);
                kinds.push(e.kind.clone());
                sources.push(e.source.clone());
                records.push(encode(e)?);
            }
            sqlx::query(
                "INSERT INTO events (conversation, seq, kind, source, record) \
                 SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bytea[])",
            )
            .bind(uuid(id))
            .bind(seqs)
            .bind(kinds)
            .bind(sources)
            .bind(records)
            .run(&mut **tx)
            .await?;
        }
        Ok(())
    }
}
