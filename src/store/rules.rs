//! The rules every backend applies inside its write transaction: what a put, delete, rename or import
//! makes of the stored records, and when it is refused. Pure functions over what was read, so the
//! sled and PostgreSQL stores cannot drift apart.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{ConflictPolicy, ImportOutcome, PutMode, PutOutcome, StoreError};
use crate::domain::Outcome;
use crate::domain::{
    Conversation, ConversationId, Event, LlmConfig, LlmSource, NewEvent, Profile, ProfileName,
    Timestamp,
};

/// What a put does.
// Returned once per put and taken apart at once: boxing the profile would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum PutPlan {
    /// The stored profile already has this content: nothing to write.
    Unchanged(Arc<Profile>),
    /// Write this profile (the caller gives it its change seq).
    Write(Profile, PutOutcome),
}

pub fn check_revision(profile: &Profile, expected: Option<i64>) -> Result<(), StoreError> {
    match expected {
        Some(expected) if expected != profile.revision => Err(StoreError::RevisionMismatch {
            kind: "profile",
            name: profile.name.to_string(),
            expected,
            actual: profile.revision,
        }),
        _ => Ok(()),
    }
}

/// A put of `llm` under `name` over the stored `old`.
pub fn plan_put(
    old: Option<Arc<Profile>>,
    name: ProfileName,
    llm: LlmConfig,
    mode: PutMode,
    expected_revision: Option<i64>,
    by: &str,
) -> Result<PutPlan, StoreError> {
    match (&old, mode) {
        (Some(_), PutMode::Create) => {
            return Err(StoreError::AlreadyExists {
                kind: "profile",
                name: name.to_string(),
            })
        }
        (None, PutMode::Update) => return Err(StoreError::not_found("profile", &name)),
        (None, _) if expected_revision.is_some_and(|r| r != 0) => {
            return Err(StoreError::RevisionMismatch {
                kind: "profile",
                name: name.to_string(),
                expected: expected_revision.unwrap_or_default(),
                actual: 0,
            })
        }
        (Some(old), _) => check_revision(old, expected_revision)?,
        (None, _) => {}
    }
    let llm = llm.merge_onto(old.as_ref().map(|p| &p.llm));
    Ok(match old {
        Some(old) if old.llm.same_content(&llm) => PutPlan::Unchanged(old),
        old => {
            let now = Timestamp::now();
            let (revision, create_time, outcome) = match &old {
                Some(o) => (o.revision + 1, o.create_time, PutOutcome::Updated),
                None => (1, now, PutOutcome::Created),
            };
            let p = written(name, llm, revision, create_time, now, by);
            PutPlan::Write(p, outcome)
        }
    })
}

/// The answer to deleting what is not there: nothing when `allow_missing`, else NOT_FOUND.
pub fn absent<T>(
    allow_missing: bool,
    kind: &'static str,
    name: impl std::fmt::Display,
) -> Result<Option<T>, StoreError> {
    if allow_missing {
        Ok(None)
    } else {
        Err(StoreError::not_found(kind, name))
    }
}

/// A profile as it is written: stored values are never marked blind (that is a request's mark).
fn written(
    name: ProfileName,
    llm: LlmConfig,
    revision: i64,
    create_time: Timestamp,
    now: Timestamp,
    by: &str,
) -> Profile {
    Profile {
        name,
        llm: LlmConfig {
            blind_write: false,
            ..llm
        },
        revision,
        create_time,
        update_time: now,
        update_principal: by.to_owned(),
    }
}

/// What a forced delete of a damaged profile record reports as deleted: the name, revision 0.
pub fn damaged_placeholder(name: &ProfileName) -> Profile {
    Profile {
        name: name.clone(),
        llm: LlmConfig::default(),
        revision: 0,
        create_time: Timestamp::default(),
        update_time: Timestamp::default(),
        update_principal: String::new(),
    }
}

/// What a forced delete of a damaged conversation record reports as deleted: the id, revision 0.
pub fn damaged_conversation(id: &ConversationId) -> Conversation {
    Conversation {
        id: *id,
        llms: std::collections::BTreeMap::new(),
        execution_status: Default::default(),
        title: String::new(),
        tags: std::collections::BTreeMap::new(),
        state: serde_json::Map::new(),
        revision: 0,
        create_time: Timestamp::default(),
        update_time: Timestamp::default(),
        event_count: 0,
    }
}

/// Refuses to delete a profile that conversations are bound to (`users`: up to 6 of them), unless
/// `force`.
pub fn check_unbound(
    name: &ProfileName,
    users: &[ConversationId],
    force: bool,
) -> Result<(), StoreError> {
    refuse_while_used(users, force, |list| {
        format!("profile \"{name}\" is bound by conversations {list}: switch them to another LLM first, or delete with force")
    })
}

/// FAILED_PRECONDITION with `message` of up to five of `users` (and "..." after them when there are
/// more), unless there are none or `force`: what a delete would leave dangling, by name.
pub fn refuse_while_used<T: ToString>(
    users: &[T],
    force: bool,
    message: impl FnOnce(&str) -> String,
) -> Result<(), StoreError> {
    if users.is_empty() || force {
        return Ok(());
    }
    let mut list: Vec<String> = users.iter().take(5).map(ToString::to_string).collect();
    if users.len() > 5 {
        list.push("...".into());
    }
    Err(StoreError::FailedPrecondition(message(&list.join(", "))))
}

/// ALREADY_EXISTS for a profile name that is taken (a rename onto it, an undelete of it).
pub fn name_taken(name: &ProfileName) -> StoreError {
    StoreError::AlreadyExists {
        kind: "profile",
        name: name.to_string(),
    }
}

/// NOT_FOUND for an undelete of a name with no deleted profile kept.
pub fn not_deleted(name: &ProfileName) -> StoreError {
    StoreError::NotKept(format!(
        "no deleted profile \"{name}\" is kept (never deleted, purged, re-created since, or past --deleted-retention)"
    ))
}

/// A deleted profile's last revision `last`, brought back by `by` as its next revision.
pub fn undeleted(last: Profile, by: &str) -> Profile {
    Profile {
        revision: last.revision + 1,
        update_time: Timestamp::now(),
        update_principal: by.to_owned(),
        ..last
    }
}

/// The profile `old` under its new name `to`, renamed by `by`.
pub fn renamed(old: &Profile, to: &ProfileName, by: &str) -> Profile {
    Profile {
        name: to.clone(),
        revision: old.revision + 1,
        update_time: Timestamp::now(),
        update_principal: by.to_owned(),
        ..old.clone()
    }
}

/// A conversation bound to `from`, bound to `to` instead (one revision later).
pub fn rebound(
    mut c: Conversation,
    from: &ProfileName,
    to: &ProfileName,
    now: Timestamp,
) -> Conversation {
    for source in c.llms.values_mut() {
        if matches!(source, LlmSource::Profile(p) if p == from) {
            *source = LlmSource::Profile(to.clone());
        }
    }
    (c.revision, c.update_time) = (c.revision + 1, now);
    c
}

const FAIL_OTHER: &str = "not written: another document conflicts and on_conflict is FAIL";

/// Under FAIL: when any of `names` (of records called `noun`) is stored or named twice, every
/// item's refusal (nothing is written); `None` when the import may go ahead.
pub fn refuse_conflicts<'a>(
    noun: &str,
    names: impl Iterator<Item = &'a str> + Clone,
    stored: impl Fn(&str) -> bool,
) -> Option<Vec<ImportOutcome>> {
    let mut seen = HashSet::new();
    let conflicts: Vec<bool> = names
        .clone()
        .map(|name| !seen.insert(name) || stored(name))
        .collect();
    conflicts.iter().any(|c| *c).then(|| {
        conflicts
            .into_iter()
            .zip(names)
            .map(|(c, name)| {
                let exists = format!(
                    "a {noun} of that name exists and on_conflict is FAIL: nothing was written"
                );
                ImportOutcome::refused(name, Outcome::Skipped, if c { &exists } else { FAIL_OTHER })
            })
            .collect()
    })
}

/// An import of `items` over the stored profiles `stored` (every name of `items` that exists):
/// each item's outcome, and the profiles to write in order (the caller gives each its change seq).
/// The same name twice sees its first occurrence as existing.
pub fn plan_import(
    items: Vec<(ProfileName, LlmConfig)>,
    policy: ConflictPolicy,
    mut stored: HashMap<ProfileName, Profile>,
    by: &str,
) -> (Vec<ImportOutcome>, Vec<Profile>) {
    if policy == ConflictPolicy::Fail {
        let taken: HashSet<&str> = stored.keys().map(ProfileName::as_str).collect();
        let names = items.iter().map(|(n, _)| n.as_str());
        if let Some(refused) = refuse_conflicts("profile", names, |n| taken.contains(n)) {
            return (refused, Vec::new());
        }
    }
    let now = Timestamp::now();
    let mut outcomes = Vec::with_capacity(items.len());
    let mut writes = Vec::new();
    for (name, llm) in items {
        let old = stored.get(&name);
        let llm = llm.merge_onto(old.map(|p| &p.llm));
        let (revision, create_time, outcome) = match old {
            Some(o) if o.llm.same_content(&llm) => {
                outcomes.push(ImportOutcome::stored(
                    name.as_str(),
                    Outcome::Unchanged,
                    o.revision,
                ));
                continue;
            }
            Some(_) if policy == ConflictPolicy::Skip => {
                outcomes.push(ImportOutcome::refused(
                    name.as_str(),
                    Outcome::Skipped,
                    "a profile of that name exists with other content (on_conflict SKIP)",
                ));
                continue;
            }
            Some(o) => (o.revision + 1, o.create_time, Outcome::Updated),
            None => (1, now, Outcome::Created),
        };
        outcomes.push(ImportOutcome::stored(name.as_str(), outcome, revision));
        let profile = written(name.clone(), llm, revision, create_time, now, by);
        writes.push(profile.clone());
        stored.insert(name, profile);
    }
    (outcomes, writes)
}

pub fn check_conversation_revision(
    c: &Conversation,
    expected: Option<i64>,
) -> Result<(), StoreError> {
    match expected.filter(|e| *e != c.revision) {
        Some(expected) => Err(StoreError::RevisionMismatch {
            kind: "conversation",
            name: c.id.to_string(),
            expected,
            actual: c.revision,
        }),
        None => Ok(()),
    }
}

/// A new conversation as stored: revision 1, no events.
pub fn created(mut c: Conversation) -> Conversation {
    let now = Timestamp::now();
    (c.revision, c.create_time, c.update_time, c.event_count) = (1, now, now, 0);
    c
}

/// What `change` makes of the stored `old`: `None` when the content stays the same.
pub fn updated<F>(old: &Conversation, change: F) -> Result<Option<Conversation>, StoreError>
where
    F: FnOnce(&Conversation) -> Result<Conversation, StoreError>,
{
    let mut new = change(old)?;
    if new.same_content(old) {
        return Ok(None);
    }
    new.id = old.id;
    new.revision = old.revision + 1;
    new.create_time = old.create_time;
    new.update_time = Timestamp::now();
    new.event_count = old.event_count;
    Ok(Some(new))
}

/// Refuses an append when the caller expected another next seq.
pub fn check_next_seq(
    id: &ConversationId,
    next: i64,
    expected: Option<i64>,
) -> Result<(), StoreError> {
    match expected.filter(|e| *e != next) {
        Some(expected) => Err(StoreError::Aborted(format!(
            "conversation {id} has next seq {next}, not the expected {expected}; read the new events and retry"
        ))),
        None => Ok(()),
    }
}

/// `events` numbered from `first`.
pub fn numbered(first: i64, events: Vec<NewEvent>) -> Vec<Event> {
    (first..)
        .zip(events)
        .map(|(seq, e)| Event {
            seq,
            id: e.id,
            kind: e.kind,
            source: e.source,
            timestamp: e.timestamp,
            body: e.body,
        })
        .collect()
}

/// An import of `c` over the stored `old`: the conversation to store with its outcome, or (Err) the
/// outcome of skipping it.
pub fn plan_import_conversation(
    mut c: Conversation,
    old: Option<&Conversation>,
    events: usize,
    policy: ConflictPolicy,
) -> Result<(Conversation, ImportOutcome), ImportOutcome> {
    let now = Timestamp::now();
    let outcome = match (old, policy) {
        (Some(_), ConflictPolicy::Skip | ConflictPolicy::Fail) => {
            return Err(ImportOutcome::refused(
                c.id.to_string(),
                Outcome::Skipped,
                "a conversation with that id exists",
            ));
        }
        (Some(o), ConflictPolicy::Overwrite) => {
            (c.revision, c.create_time) = (o.revision + 1, o.create_time);
            ImportOutcome::stored(c.id.to_string(), Outcome::Updated, c.revision)
        }
        (None, _) => {
            (c.revision, c.create_time) = (1, now);
            ImportOutcome::stored(c.id.to_string(), Outcome::Created, 1)
        }
    };
    c.update_time = now;
    c.event_count = i64::try_from(events).unwrap_or(i64::MAX);
    Ok((c, outcome))
}

#[cfg(test)]
#[path = "rules_tests/mod.rs"]
mod tests;
