//! The sled implementation of conversations: conversation records, an index of profile
//! bindings (`profile \0 id`), and events keyed by `id ++ seq` (big-endian, so ranges are in order).
//! Every multi-record change is one sled transaction over all trees.
use std::ops::Bound;

use tokio::sync::broadcast;

use super::ops::Op;
use super::together::Joinable;
use super::SledStore;
use crate::domain::{Conversation, ConversationId, Event, NewEvent, ProfileName};
use crate::store::records::{binding_key, decode, encode, event_key, or_skip, TreeId};
use crate::store::requests::{
    ConversationDelete, ConversationImport, ConversationQuery, ConversationUpdate, EventAppend,
};
use crate::store::rules;
use crate::store::{Change, EventBatch, EventQuery, ImportOutcome, StoreError};

fn binding_prefix(name: &ProfileName) -> Vec<u8> {
    let mut k = name.as_str().as_bytes().to_vec();
    k.push(0);
    k
}

fn id_from_key(key: &[u8]) -> Option<ConversationId> {
    let tail: [u8; 16] = key.get(key.len().checked_sub(16)?..)?.try_into().ok()?;
    Some(ConversationId::from_bytes(tail))
}

/// The keys of the events of `id` a query wants, between its seqs.
fn seq_bounds(id: &ConversationId, q: &EventQuery) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let lo = match q.after_seq {
        Some(s) if s >= 0 => Bound::Excluded(event_key(id, s)),
        _ => Bound::Included(event_key(id, 0)),
    };
    let hi = match q.before_seq {
        Some(s) => Bound::Excluded(event_key(id, s.max(0))),
        None => Bound::Included(event_key(id, i64::MAX)),
    };
    (lo, hi)
}

impl SledStore {
    pub(super) fn read_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        self.conversations
            .get(id.as_bytes())?
            .map(|b| {
                let c = decode(TreeId::Conversations, id.as_bytes(), &b)?;
                self.open_conversation(id.as_bytes(), c)
            })
            .transpose()
    }

    /// The conversations bound to `name`, from the index.
    pub(super) fn conversations_bound_to(
        &self,
        name: &ProfileName,
        limit: usize,
    ) -> Result<Vec<ConversationId>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .bindings
            .scan_prefix(binding_prefix(name))
            .keys()
            .take(limit)
        {
            if let Some(id) = id_from_key(&item?) {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn check_profiles_exist(&self, c: &Conversation) -> Result<(), StoreError> {
        for name in c.bound_profiles() {
            if !self.profiles.contains_key(name.as_str().as_bytes())? {
                return Err(StoreError::not_found("profile", name));
            }
        }
        Ok(())
    }

    /// The index writes that take a conversation's bindings from `old` to `new`.
    pub(super) fn binding_ops(
        old: Option<&Conversation>,
        new: Option<&Conversation>,
        ops: &mut Vec<Op>,
    ) {
        let names = |c: Option<&Conversation>| -> Vec<ProfileName> {
            c.map(|c| c.bound_profiles().cloned().collect())
                .unwrap_or_default()
        };
        let (before, after) = (names(old), names(new));
        let id = old.or(new).map(|c| c.id);
        let Some(id) = id else { return };
        for n in before.iter().filter(|n| !after.contains(n)) {
            ops.push(Op::Del(TreeId::Bindings, binding_key(n, &id)));
        }
        for n in after.iter().filter(|n| !before.contains(n)) {
            ops.push(Op::Put(TreeId::Bindings, binding_key(n, &id), Vec::new()));
        }
    }
}

impl SledStore {
    pub(crate) async fn create_conversation(
        &self,
        c: Conversation,
    ) -> Result<Conversation, StoreError> {
        self.durably(|| {
            if self.conversations.contains_key(c.id.as_bytes())? {
                return Err(StoreError::AlreadyExists {
                    kind: "conversation",
                    name: c.id.to_string(),
                });
            }
            self.check_profiles_exist(&c)?;
            let c = rules::created(c);
            let mut ops = vec![Op::Put(
                TreeId::Conversations,
                c.id.as_bytes().to_vec(),
                self.encode_conversation(&c)?,
            )];
            Self::binding_ops(None, Some(&c), &mut ops);
            self.apply(&ops)?;
            self.changed(std::iter::empty::<Change>(), c)
        })
        .await
    }

    pub(crate) async fn get_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        self.read_conversation(id)
    }

    pub(crate) async fn list_conversations(
        &self,
        query: ConversationQuery<'_>,
    ) -> Result<Vec<Conversation>, StoreError> {
        let wanted = |c: &Conversation| query.status.is_none_or(|s| c.execution_status == s);
        let mut out = Vec::new();
        if let Some(name) = query.profile {
            let prefix = binding_prefix(name);
            let start = match query.after {
                Some(a) => Bound::Excluded(binding_key(name, &a)),
                None => Bound::Included(prefix.clone()),
            };
            for key in self.bindings.range((start, Bound::Unbounded)).keys() {
                let key = key?;
                if !key.starts_with(&prefix) || out.len() >= query.limit {
                    break;
                }
                let Some(id) = id_from_key(&key) else {
                    continue;
                };
                let read = or_skip(self.read_conversation(&id), "conversation record");
                out.extend(read.flatten().filter(|c| wanted(c)));
            }
            return Ok(out);
        }
        let start = match query.after {
            Some(a) => Bound::Excluded(a.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        for item in self.conversations.range((start, Bound::Unbounded)) {
            if out.len() >= query.limit {
                break;
            }
            let (key, bytes) = item?;
            let c = decode::<Conversation>(TreeId::Conversations, &key, &bytes)
                .and_then(|c| self.open_conversation(&key, c));
            out.extend(or_skip(c, "conversation record").filter(|c| wanted(c)));
        }
        Ok(out)
    }

    pub(crate) async fn update_conversation(
        &self,
        update: ConversationUpdate<'_>,
    ) -> Result<Conversation, StoreError> {
        self.durably(|| {
            let old = self
                .read_conversation(update.id)?
                .ok_or_else(|| StoreError::not_found("conversation", update.id))?;
            rules::check_conversation_revision(&old, update.expected_revision)?;
            if let Some(new) = rules::updated(&old, update.change)? {
                self.check_profiles_exist(&new)?;
                let mut ops = vec![Op::Put(
                    TreeId::Conversations,
                    update.id.as_bytes().to_vec(),
                    self.encode_conversation(&new)?,
                )];
                Self::binding_ops(Some(&old), Some(&new), &mut ops);
                self.apply(&ops)?;
                self.changed(std::iter::empty::<Change>(), new)
            } else {
                self.unchanged(old)
            }
        })
        .await
    }

    pub(crate) async fn delete_conversation(
        &self,
        delete: ConversationDelete<'_>,
    ) -> Result<Option<(Conversation, i64)>, StoreError> {
        self.durably(|| {
            let (old, bindings) = match self.read_conversation(delete.id) {
                // Nothing to delete: still answer only once every earlier write is durable.
                Ok(None) if delete.allow_missing => return self.unchanged(None),
                Ok(None) => return Err(StoreError::not_found("conversation", delete.id)),
                Ok(Some(old)) => {
                    rules::check_conversation_revision(&old, delete.expected_revision)?;
                    let mut ops = Vec::new();
                    Self::binding_ops(Some(&old), None, &mut ops);
                    (old, ops)
                }
                // A record that does not decode is not kept forever: force deletes it, its
                // events and every binding that names it (found by a scan: the record that
                // lists them cannot be read).
                Err(StoreError::Corrupt { .. }) if delete.force => {
                    let mut ops = Vec::new();
                    for key in self.bindings.iter().keys() {
                        let key = key?;
                        if key.ends_with(delete.id.as_bytes()) {
                            ops.push(Op::Del(TreeId::Bindings, key.to_vec()));
                        }
                    }
                    (rules::damaged_conversation(delete.id), ops)
                }
                Err(e) => return Err(e),
            };
            let mut ops = vec![Op::Del(
                TreeId::Conversations,
                delete.id.as_bytes().to_vec(),
            )];
            ops.extend(bindings);
            let mut events = 0;
            for key in self.events.scan_prefix(delete.id.as_bytes()).keys() {
                ops.push(Op::Del(TreeId::Events, key?.to_vec()));
                events += 1;
            }
            self.apply(&ops)?;
            let gone = EventBatch {
                conversation: *delete.id,
                next_seq: old.event_count.max(events),
                deleted: true,
            };
            self.changed([gone], Some((old, events)))
        })
        .await
    }

    pub(crate) async fn append_events(
        &self,
        append: EventAppend<'_>,
    ) -> Result<(i64, i64), StoreError> {
        let append = Append {
            id: *append.id,
            events: append.events,
            expected_next_seq: append.expected_next_seq,
        };
        self.together(&self.appends, append).await
    }

    pub(crate) async fn list_events(
        &self,
        id: &ConversationId,
        q: &EventQuery,
    ) -> Result<Vec<Event>, StoreError> {
        let range = self.events.range(seq_bounds(id, q));
        let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if q.descending
        {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let mut out = Vec::new();
        for item in iter {
            if out.len() >= q.limit {
                break;
            }
            let (key, bytes) = item?;
            // A damaged event is skipped, like a damaged record in any listing: its seq is missing
            // from the page, which a client can see (seqs are contiguous).
            let Some(e) = or_skip(
                decode::<Event>(TreeId::Events, &key, &bytes),
                "event record",
            ) else {
                continue;
            };
            if (q.kind.is_empty() || e.kind == q.kind)
                && (q.source.is_empty() || e.source == q.source)
            {
                out.push(e);
            }
        }
        Ok(out)
    }

    pub(crate) async fn import_conversation(
        &self,
        import: ConversationImport,
    ) -> Result<ImportOutcome, StoreError> {
        self.durably(|| {
            self.check_profiles_exist(&import.c)?;
            let old = self.read_conversation(&import.c.id)?;
            let (c, outcome) = match rules::plan_import_conversation(
                import.c,
                old.as_ref(),
                import.events.len(),
                import.policy,
            ) {
                Ok(plan) => plan,
                Err(skipped) => return self.unchanged(skipped),
            };
            if import.dry_run {
                return self.unchanged(outcome);
            }
            let mut ops = Vec::with_capacity(import.events.len() + 4);
            if old.is_some() {
                for key in self.events.scan_prefix(c.id.as_bytes()).keys() {
                    ops.push(Op::Del(TreeId::Events, key?.to_vec()));
                }
            }
            for e in rules::numbered(0, import.events) {
                ops.push(Op::Put(
                    TreeId::Events,
                    event_key(&c.id, e.seq),
                    encode(&e)?,
                ));
            }
            ops.push(Op::Put(
                TreeId::Conversations,
                c.id.as_bytes().to_vec(),
                self.encode_conversation(&c)?,
            ));
            Self::binding_ops(old.as_ref(), Some(&c), &mut ops);
            self.apply(&ops)?;
            self.changed(std::iter::empty::<Change>(), outcome)
        })
        .await
    }

    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<EventBatch> {
        self.event_changes.subscribe()
    }
}

/// An append of events to a conversation, applied with the others waiting (see `together.rs`).
pub(super) struct Append {
    id: ConversationId,
    events: Vec<NewEvent>,
    expected_next_seq: Option<i64>,
}

impl Joinable for Append {
    /// The conversation's next seq before and after.
    type Answer = (i64, i64);
    type Key = ConversationId;

    fn key(&self) -> ConversationId {
        self.id
    }

    fn plan(
        self,
        store: &SledStore,
        ops: &mut Vec<Op>,
    ) -> Result<(Option<Change>, Self::Answer), StoreError> {
        let Self {
            id,
            events,
            expected_next_seq,
        } = self;
        let mut c = store
            .read_conversation(&id)?
            .ok_or_else(|| StoreError::not_found("conversation", id))?;
        let first = c.event_count;
        rules::check_next_seq(&id, first, expected_next_seq)?;
        if events.is_empty() {
            return Ok((None, (first, first)));
        }
        let appended = i64::try_from(events.len()).unwrap_or(i64::MAX);
        ops.reserve(events.len() + 1);
        for e in rules::numbered(first, events) {
            ops.push(Op::Put(TreeId::Events, event_key(&id, e.seq), encode(&e)?));
        }
        c.event_count = first.saturating_add(appended);
        ops.push(Op::Put(
            TreeId::Conversations,
            id.as_bytes().to_vec(),
            store.encode_conversation(&c)?,
        ));
        let batch = EventBatch {
            conversation: id,
            next_seq: c.event_count,
            deleted: false,
        };
        Ok((Some(batch.into()), (first, c.event_count)))
    }
}
