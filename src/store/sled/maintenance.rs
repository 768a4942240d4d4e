//! Whole-store maintenance: a consistent snapshot of every record (for backups), loading one into an
//! empty store (restore), and the offline check of every record: decodes, decrypts, references.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use super::SledStore;
use crate::domain::document::{connection_of, references};
use crate::domain::{Conversation, ConversationId, DocKind, Event, Secret, Target};
use crate::hex;
use crate::store::codec::{conversation_secrets, document_secrets, profile_secrets};
use crate::store::records::Tombstone;
use crate::store::records::{
    binding_key, conversation_id, decode, document_key, history_key, place, split_binding_key,
    split_event_key, text_key, RawRecord, Snapshot, TreeId,
};
use crate::store::{StoreError, RESTORE_SEQ_GAP};

/// Every profile key, and (key, connection id) of each profile bound to a provider connection.
type ProfileKeys = (BTreeSet<Vec<u8>>, Vec<(Vec<u8>, String)>);

/// What [`SledStore::check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Records read, by tree name.
    pub counts: BTreeMap<&'static str, usize>,
    /// Secret values that opened.
    pub secrets: usize,
    /// Records that are wrong: (tree/key, what is wrong). Never a secret value.
    pub problems: Vec<(String, String)>,
    /// States the server allows that are worth knowing, e.g. a conversation bound to a profile that
    /// was deleted with force.
    pub notes: Vec<(String, String)>,
    /// The records `check --repair` moves aside: profiles and conversations that do not decode
    /// (a conversation with its events and bindings), and bindings to missing conversations.
    pub damaged: Vec<(TreeId, Vec<u8>)>,
}

/// The sled tree damaged records are moved into by `check --repair`: never served, listed by
/// `check`, kept for a person to look at.
const QUARANTINE: &str = "quarantine";

impl CheckReport {
    fn problem(&mut self, place: String, what: impl Into<String>) {
        self.problems.push((place, what.into()));
    }

    /// Counts one record of `tree` as read; its place, for what is found wrong with it.
    fn read(&mut self, tree: TreeId, key: &[u8]) -> String {
        *self.counts.entry(tree.name()).or_default() += 1;
        place(tree, key)
    }

    /// [`Self::read`], and the parts `split` finds in the key: `None` after a problem when the key
    /// is not of the tree's shape.
    fn read_split<'k, T>(
        &mut self,
        tree: TreeId,
        key: &'k [u8],
        split: impl FnOnce(&'k [u8]) -> Option<T>,
    ) -> (String, Option<T>) {
        let place = self.read(tree, key);
        let parts = split(key);
        if parts.is_none() {
            let shape = match tree {
                TreeId::Bindings => "`<profile name> \\0 <16-byte conversation id>`",
                TreeId::Events => "a 16-byte conversation id and an 8-byte seq",
                // A conversation's.
                _ => "a 16-byte conversation id",
            };
            self.problem(place.clone(), format!("the key is not {shape}"));
        }
        (place, parts)
    }
}

/// Why a record does not read, from a store error (the reason only: the place is reported apart).
fn reason(e: StoreError) -> String {
    match e {
        StoreError::Corrupt { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// Counts the set secrets of a decoded (opened) record.
fn count_secrets(
    report: &mut CheckReport,
    walk: impl FnOnce(&mut dyn FnMut(&str, &mut Secret) -> Result<(), ()>),
) {
    let mut n = 0;
    walk(&mut |_, _| {
        n += 1;
        Ok(())
    });
    report.secrets += n;
}

impl SledStore {
    /// Copies every record while writers are held off, so the copy is one consistent state. The
    /// copy is in memory: writers wait only for the copying, not for the caller's use of it.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let _guard = self.lock();
        let started = Instant::now();
        let next_seq = self.next_seq()?;
        let mut records = Vec::new();
        for tree in TreeId::ALL {
            for item in self.tree(tree).iter() {
                let (key, value) = item?;
                records.push(RawRecord {
                    tree,
                    key: key.to_vec(),
                    value: value.to_vec(),
                });
            }
        }
        Ok(Snapshot {
            next_seq,
            records,
            blocked: started.elapsed(),
        })
    }

    /// Loads `records` as they are into this store, which must hold no record, moves the change
    /// counter past `next_seq` (so watchers order new changes after the restored ones; see
    /// [`RESTORE_SEQ_GAP`]) and flushes.
    pub fn restore(&self, records: &[RawRecord], next_seq: u64) -> Result<(), StoreError> {
        let _guard = self.lock();
        if let Some(t) = TreeId::ALL.into_iter().find(|t| !self.tree(*t).is_empty()) {
            return Err(StoreError::FailedPrecondition(format!(
                "the store already holds {} records: restore needs an empty data dir",
                t.name()
            )));
        }
        let _writing = self.decoded.writing(None);
        for tree in TreeId::ALL {
            let mut batch = sled::Batch::default();
            for r in records.iter().filter(|r| r.tree == tree) {
                batch.insert(r.key.as_slice(), r.value.as_slice());
            }
            self.tree(tree).apply_batch(batch)?;
        }
        // Seqs from before the restore name changes of another store: the restored one's start
        // far above them, so a watch resuming after any of them is told (OUT_OF_RANGE), even
        // after as many new changes as the old store had made since the backup.
        self.raise_seqs(next_seq.saturating_add(RESTORE_SEQ_GAP))?;
        self.restart_change_log()?;
        self.flush()?;
        Ok(())
    }

    /// Reads every record: each must decode, each secret must open with the configured keys, and
    /// references must hold (bindings index, conversations' profiles, events contiguous from 0 and
    /// counted by their conversation). Reports what is wrong with its tree and key, never a value.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        let mut report = CheckReport::default();
        let (profiles, bound) = self.check_profiles(&mut report)?;
        let conversations = self.check_conversations(&mut report, &profiles)?;
        self.check_bindings(&mut report, &conversations)?;
        self.check_events(&mut report, &conversations)?;
        self.check_documents(&mut report, &profiles, bound)?;
        self.check_history(&mut report, &profiles)?;
        for item in self.db.open_tree(QUARANTINE)?.iter().keys() {
            let key = item?;
            report.notes.push((
                format!("{QUARANTINE}/{}", text_key(&key)),
                "moved aside by check --repair: not served; look at it, then delete the data dir's quarantine tree by hand if it is of no use".into(),
            ));
        }
        Ok(report)
    }

    /// Marks a conversation for the quarantine with its events and the bindings that name it.
    fn mark_conversation_damaged(
        &self,
        report: &mut CheckReport,
        key: &[u8],
    ) -> Result<(), StoreError> {
        // Once per conversation, however many of its events are damaged: each mark scans.
        let marked = (TreeId::Conversations, key.to_vec());
        if report.damaged.contains(&marked) {
            return Ok(());
        }
        report.damaged.push(marked);
        for event in self.events.scan_prefix(key).keys() {
            report.damaged.push((TreeId::Events, event?.to_vec()));
        }
        for binding in self.bindings.iter().keys() {
            let binding = binding?;
            if binding.ends_with(key) {
                report.damaged.push((TreeId::Bindings, binding.to_vec()));
            }
        }
        Ok(())
    }

    /// Moves the records `report` found damaged into the quarantine tree (key `<tree>/<hex key>`,
    /// the bytes as they were): each is copied, then removed, so a crash in between leaves it in
    /// both places, never in neither. Flushes; returns their places.
    pub fn repair(&self, report: &CheckReport) -> Result<Vec<String>, StoreError> {
        let _guard = self.lock();
        let _writing = self.decoded.writing(None);
        let quarantine = self.db.open_tree(QUARANTINE)?;
        let mut moved = Vec::new();
        let mut seen = BTreeSet::new();
        for (tree, key) in &report.damaged {
            if !seen.insert((tree.name(), key.clone())) {
                continue;
            }
            let Some(bytes) = self.tree(*tree).get(key)? else {
                continue;
            };
            quarantine.insert(format!("{}/{}", tree.name(), hex(key)), bytes)?;
            self.tree(*tree).remove(key)?;
            moved.push(place(*tree, key));
        }
        self.db.flush()?;
        Ok(moved)
    }

    /// The keys of every profile record (damaged or not: a reference to one is not dangling), and
    /// the provider connection each readable profile names (its key, the connection id).
    fn check_profiles(&self, report: &mut CheckReport) -> Result<ProfileKeys, StoreError> {
        let mut keys = BTreeSet::new();
        let mut bound = Vec::new();
        for item in self.profiles.iter() {
            let (key, bytes) = item?;
            let place = report.read(TreeId::Profiles, &key);
            match self.decode_profile(&key, &bytes) {
                Err(e) => {
                    report.problem(place, reason(e));
                    report.damaged.push((TreeId::Profiles, key.to_vec()));
                }
                Ok(r) if r.profile.name.as_str().as_bytes() != &*key => report.problem(
                    place,
                    format!(
                        "holds the profile {:?} under another key",
                        r.profile.name.as_str()
                    ),
                ),
                // Decodes, but breaks a rule the edge enforces today (e.g. nesting deeper than
                // clients can read): the same as damaged, for check, repair and restore.
                Ok(r) if !r.profile.llm.violations("llm").is_empty() => {
                    let v = &r.profile.llm.violations("llm")[0];
                    report.problem(place, format!("breaks a rule of acceptable values: {v}"));
                    report.damaged.push((TreeId::Profiles, key.to_vec()));
                }
                Ok(mut r) => {
                    if let Some(id) = connection_of(&r.profile.llm.extra) {
                        bound.push((key.to_vec(), id.to_owned()));
                    }
                    count_secrets(report, |f| {
                        let _ = profile_secrets(&mut r, f);
                    });
                }
            }
            keys.insert(key.to_vec());
        }
        Ok((keys, bound))
    }

    /// Kept revisions: each decodes and opens under its own key (name and revision), and belongs
    /// to a stored profile.
    fn check_history(
        &self,
        report: &mut CheckReport,
        profiles: &BTreeSet<Vec<u8>>,
    ) -> Result<(), StoreError> {
        for item in self.history.iter() {
            let (key, bytes) = item?;
            let place = report.read(TreeId::History, &key);
            match self.codec.decode_revision(&key, &bytes) {
                Err(e) => {
                    report.problem(place, reason(e));
                    report.damaged.push((TreeId::History, key.to_vec()));
                }
                Ok(r) if history_key(r.profile.name.as_str(), r.profile.revision) != *key => {
                    report.problem(place, "holds another revision than its key names");
                    report.damaged.push((TreeId::History, key.to_vec()));
                }
                Ok(r)
                    if !profiles.contains(r.profile.name.as_str().as_bytes())
                        && !self
                            .deleted
                            .contains_key(r.profile.name.as_str().as_bytes())? =>
                {
                    report.notes.push((
                        place,
                        "a kept revision of a profile that is neither stored nor deleted".into(),
                    ));
                }
                Ok(_) => {}
            }
        }
        for item in self.deleted.iter() {
            let (key, bytes) = item?;
            let place = report.read(TreeId::Deleted, &key);
            if let Err(e) = decode::<Tombstone>(TreeId::Deleted, &key, &bytes) {
                report.problem(place, reason(e));
                report.damaged.push((TreeId::Deleted, key.to_vec()));
            } else if profiles.contains(&*key) {
                report.problem(place, "marks deleted a profile that is stored");
            }
        }
        Ok(())
    }

    /// Documents: each decodes and opens, under its own key; references that dangle (as real SDK
    /// homes have them, and forced deletes leave them) are notes; so are profiles bound to a
    /// connection that does not exist.
    fn check_documents(
        &self,
        report: &mut CheckReport,
        profiles: &BTreeSet<Vec<u8>>,
        bound: Vec<(Vec<u8>, String)>,
    ) -> Result<(), StoreError> {
        let mut stored = BTreeSet::new();
        let mut readable = Vec::new();
        for item in self.documents.iter() {
            let (key, bytes) = item?;
            let place = report.read(TreeId::Documents, &key);
            stored.insert(key.to_vec());
            match self.codec.decode_document(&key, &bytes) {
                Err(e) => {
                    report.problem(place, reason(e));
                    report.damaged.push((TreeId::Documents, key.to_vec()));
                }
                Ok(r) if document_key(r.document.kind, &r.document.name) != *key => {
                    report.problem(place, "holds a document under another key");
                }
                Ok(mut r) => {
                    count_secrets(report, |f| {
                        let _ = document_secrets(&mut r, f);
                    });
                    readable.push((place, r.document));
                }
            }
        }
        let exists = |t: &Target| match t {
            Target::Profile(n) => profiles.contains(n.as_bytes()),
            Target::Document(k, n) => stored.contains(&document_key(*k, n)),
        };
        for (place, doc) in readable {
            for r in references(doc.kind, &doc.body) {
                if !exists(&r.target) {
                    report.notes.push((
                        place.clone(),
                        format!(
                            "{} names {}, which does not exist",
                            r.field,
                            r.target.describe()
                        ),
                    ));
                }
            }
        }
        for (key, id) in bound {
            if !stored.contains(&document_key(DocKind::Connection, &id)) {
                report.notes.push((
                    place(TreeId::Profiles, &key),
                    format!("bound to provider connection {id:?}, which does not exist (it does not resolve)"),
                ));
            }
        }
        Ok(())
    }

    /// Every conversation key, with the record when it decodes.
    fn check_conversations(
        &self,
        report: &mut CheckReport,
        profiles: &BTreeSet<Vec<u8>>,
    ) -> Result<HashMap<Vec<u8>, Option<Conversation>>, StoreError> {
        let mut out = HashMap::new();
        for item in self.conversations.iter() {
            let (key, bytes) = item?;
            let (place, parts) = report.read_split(TreeId::Conversations, &key, conversation_id);
            let Some(id) = parts else {
                continue;
            };
            let opened = decode::<Conversation>(TreeId::Conversations, &key, &bytes)
                .and_then(|c| self.open_conversation(&key, c));
            let mut c = match opened {
                Ok(c) => c,
                Err(e) => {
                    report.problem(place, reason(e));
                    self.mark_conversation_damaged(report, &key)?;
                    out.insert(key.to_vec(), None);
                    continue;
                }
            };
            if let Some(v) =
                crate::domain::conversation_violations(&c, "conversation", usize::MAX).first()
            {
                report.problem(
                    place.clone(),
                    format!("breaks a rule of acceptable values: {v}"),
                );
                self.mark_conversation_damaged(report, &key)?;
                out.insert(key.to_vec(), None);
                continue;
            }
            if c.id != id {
                report.problem(
                    place.clone(),
                    format!("holds conversation {} under another key", c.id),
                );
            }
            for name in c.bound_profiles() {
                if !profiles.contains(name.as_str().as_bytes()) {
                    report.notes.push((
                        place.clone(),
                        format!(
                            "bound to profile {:?}, which does not exist (deleted with force?)",
                            name.as_str()
                        ),
                    ));
                }
                if !self.bindings.contains_key(binding_key(name, &id))? {
                    report.problem(
                        place.clone(),
                        format!(
                            "binds profile {:?} but the bindings index lacks it",
                            name.as_str()
                        ),
                    );
                }
            }
            count_secrets(report, |f| {
                let _ = conversation_secrets(&mut c, f);
            });
            out.insert(key.to_vec(), Some(c));
        }
        Ok(out)
    }

    fn check_bindings(
        &self,
        report: &mut CheckReport,
        conversations: &HashMap<Vec<u8>, Option<Conversation>>,
    ) -> Result<(), StoreError> {
        for key in self.bindings.iter().keys() {
            let key = key?;
            let (place, parts) = report.read_split(TreeId::Bindings, &key, split_binding_key);
            let Some((name, id)) = parts else {
                continue;
            };
            match conversations.get(id.as_bytes().as_slice()) {
                None => {
                    report.problem(place, format!("conversation {id} does not exist"));
                    report.damaged.push((TreeId::Bindings, key.to_vec()));
                }
                Some(Some(c)) if !c.bound_profiles().any(|p| p.as_str() == name) => {
                    report.problem(
                        place,
                        format!("conversation {id} does not bind profile {name:?}"),
                    );
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn check_events(
        &self,
        report: &mut CheckReport,
        conversations: &HashMap<Vec<u8>, Option<Conversation>>,
    ) -> Result<(), StoreError> {
        // Events are in key order: by conversation, then seq.
        let mut stored: HashMap<ConversationId, i64> = HashMap::new();
        for item in self.events.iter() {
            let (key, bytes) = item?;
            let (place, parts) = report.read_split(TreeId::Events, &key, split_event_key);
            let Some((id, seq)) = parts else {
                continue;
            };
            if !conversations.contains_key(id.as_bytes().as_slice()) {
                report.problem(place.clone(), format!("conversation {id} does not exist"));
            }
            let expected = stored.entry(id).or_default();
            if seq != *expected {
                report.problem(
                    place.clone(),
                    format!("seq {seq} where {expected} comes next: the log is not contiguous"),
                );
            }
            *expected = seq + 1;
            match decode::<Event>(TreeId::Events, &key, &bytes) {
                // An event cannot be moved aside alone (its log would have a gap): its whole
                // conversation goes to the quarantine.
                Err(e) => {
                    report.problem(place, reason(e));
                    self.mark_conversation_damaged(report, id.as_bytes())?;
                }
                Ok(e) if e.seq != seq => {
                    report.problem(place, format!("holds seq {} under another key", e.seq))
                }
                Ok(e) => {
                    let body: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(&e.body).unwrap_or_default();
                    let field = format!("event {}", e.seq);
                    if let Some(v) =
                        crate::domain::values::event_violations(&e.id, &e.timestamp, &body, &field)
                            .first()
                    {
                        report.problem(place, format!("breaks a rule of acceptable values: {v}"));
                        self.mark_conversation_damaged(report, id.as_bytes())?;
                    }
                }
            }
        }
        for (key, c) in conversations {
            let Some(c) = c else { continue };
            let n = conversation_id(key)
                .and_then(|id| stored.get(&id).copied())
                .unwrap_or(0);
            if c.event_count != n {
                report.problem(
                    place(TreeId::Conversations, c.id.as_bytes()),
                    format!(
                        "counts {} events but {n} are stored from seq 0 on",
                        c.event_count
                    ),
                );
            }
        }
        Ok(())
    }
}
