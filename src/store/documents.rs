//! The rules of documents (provider connections, meta-profiles, agent profiles) that both backends
//! share: what a put or an import writes, and when a reference stops a write or a delete. The
//! backends read under their write lock and call these; nothing here touches a database.
use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::{ConflictPolicy, ImportOutcome, PutMode, PutOutcome, StoreError};
use crate::domain::document::{connection_of, references, Reference, CONNECTION_KEY};
use crate::domain::{DocKind, Document, LlmConfig, Outcome, Target, Timestamp, SECRET_MASK};

/// One document to put, and on what conditions.
pub struct DocPut {
    pub kind: DocKind,
    pub name: String,
    pub body: Map<String, Value>,
    pub mode: PutMode,
    /// ABORTED unless the stored document is at this revision (0: absent).
    pub expected_revision: Option<i64>,
    /// The caller may not read secrets: a supplied secret is then never reported unchanged.
    pub blind: bool,
}

impl DocPut {
    /// The document as errors name it: `meta-profile "x"`.
    pub fn owner(&self) -> String {
        format!("{} {:?}", self.kind.noun(), self.name)
    }

    /// The references this put adds to those of the stored `old`: the ones to check.
    pub fn added_references(&self, old: Option<&Document>) -> Vec<Reference> {
        added_references(self.kind, &self.body, old.map(|d| &d.body))
    }
}

/// What a document put does.
pub enum DocPlan {
    /// Nothing: the stored document has this content.
    Unchanged(Document),
    /// Writes the document.
    Write(Document, PutOutcome),
}

/// ABORTED (as a revision mismatch) unless `doc` is at `expected`.
pub fn check_revision(doc: &Document, expected: Option<i64>) -> Result<(), StoreError> {
    match expected.filter(|e| *e != doc.revision) {
        Some(expected) => Err(StoreError::RevisionMismatch {
            kind: doc.kind.noun(),
            name: doc.name.clone(),
            expected,
            actual: doc.revision,
        }),
        None => Ok(()),
    }
}

/// `body` with each secret that holds the mask replaced by the stored value (`null` when none is
/// stored): the mask never becomes a value.
fn merge_secrets(
    kind: DocKind,
    mut body: Map<String, Value>,
    old: Option<&Document>,
) -> Map<String, Value> {
    for key in kind.secret_keys() {
        if body.get(*key).and_then(Value::as_str) == Some(SECRET_MASK) {
            let kept = old.and_then(|o| o.body.get(*key)).cloned();
            body.insert((*key).to_owned(), kept.unwrap_or(Value::Null));
        }
    }
    body
}

/// Whether `body` supplies a secret value (not the mask, not blank): from a caller who may not
/// read secrets (`blind`), such a write is never reported unchanged, or its outcome would tell
/// whether a guessed value equals the stored one.
fn supplies_secret(kind: DocKind, body: &Map<String, Value>) -> bool {
    kind.secret_keys().iter().any(|k| {
        body.get(*k)
            .and_then(Value::as_str)
            .is_some_and(|v| v != SECRET_MASK && !v.trim().is_empty())
    })
}

/// What `put` does, given the stored document `old`.
pub fn plan_put(old: Option<Document>, put: DocPut) -> Result<DocPlan, StoreError> {
    let DocPut {
        kind,
        name,
        body,
        mode,
        expected_revision,
        blind,
    } = put;
    let name = name.as_str();
    match (&old, mode) {
        (Some(_), PutMode::Create) => {
            return Err(StoreError::AlreadyExists {
                kind: kind.noun(),
                name: name.to_owned(),
            })
        }
        (None, PutMode::Update) => return Err(StoreError::not_found(kind.noun(), name)),
        (None, _) if expected_revision.is_some_and(|r| r != 0) => {
            return Err(StoreError::RevisionMismatch {
                kind: kind.noun(),
                name: name.to_owned(),
                expected: expected_revision.unwrap_or_default(),
                actual: 0,
            })
        }
        (Some(old), _) => check_revision(old, expected_revision)?,
        (None, _) => {}
    }
    let forced = blind && supplies_secret(kind, &body);
    let body = merge_secrets(kind, body, old.as_ref());
    Ok(match old {
        Some(old) if old.body == body && !forced => DocPlan::Unchanged(old),
        Some(old) => DocPlan::Write(
            Document {
                revision: old.revision + 1,
                update_time: Timestamp::now(),
                body,
                ..old
            },
            PutOutcome::Updated,
        ),
        None => DocPlan::Write(
            fresh(kind, name, body, Timestamp::now()),
            PutOutcome::Created,
        ),
    })
}

fn fresh(kind: DocKind, name: &str, body: Map<String, Value>, now: Timestamp) -> Document {
    Document {
        kind,
        name: name.to_owned(),
        revision: 1,
        create_time: now,
        update_time: now,
        body,
    }
}

/// The references of `new` that `old` did not hold already: an API write may keep a dangling
/// reference it found (real homes have them) but may not add one.
pub fn added_references(
    kind: DocKind,
    new: &Map<String, Value>,
    old: Option<&Map<String, Value>>,
) -> Vec<Reference> {
    let held: HashSet<Target> = old
        .map(|o| references(kind, o).into_iter().map(|r| r.target).collect())
        .unwrap_or_default();
    references(kind, new)
        .into_iter()
        .filter(|r| !held.contains(&r.target))
        .collect()
}

/// NOT_FOUND naming the first of `refs` whose target does not exist (`exists` answers), as a
/// conversation bound to a missing profile is.
pub fn check_targets(
    owner: &str,
    refs: &[Reference],
    mut exists: impl FnMut(&Target) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    for r in refs {
        if !exists(&r.target)? {
            return Err(StoreError::MissingReference(format!(
                "{owner} field {} names {}, which does not exist",
                r.field,
                r.target.describe()
            )));
        }
    }
    Ok(())
}

/// FAILED_PRECONDITION naming up to five of `referrers` (`kind "name"` each) unless there are none
/// or `force`.
pub fn check_unreferenced(
    target: &Target,
    referrers: &[String],
    force: bool,
) -> Result<(), StoreError> {
    super::rules::refuse_while_used(referrers, force, |list| {
        format!(
            "{} is referenced by {list}: point them elsewhere first, or delete with force",
            target.describe()
        )
    })
}

/// The documents among `docs` that reference `target`, as `kind "name"`.
pub fn referrers_among<'a>(
    target: &Target,
    docs: impl IntoIterator<Item = &'a Document>,
) -> Vec<String> {
    docs.into_iter()
        .filter(|d| {
            references(d.kind, &d.body)
                .iter()
                .any(|r| &r.target == target)
        })
        .map(|d| format!("{} {:?}", d.kind.noun(), d.name))
        .collect()
}

/// `doc` renamed to `to`: one revision more, an agent profile's own `name` following (as the
/// SDK's rename does). A provider connection's id is its identity in the SDK: it is not renamed.
pub fn renamed(doc: &Document, to: &str) -> Result<Document, StoreError> {
    let mut body = doc.body.clone();
    match doc.kind {
        DocKind::Connection => {
            return Err(StoreError::FailedPrecondition(
                "a provider connection's id does not change (the SDK has no rename): create one under the new id and point the profiles at it".into(),
            ))
        }
        DocKind::AgentProfile if body.contains_key("name") => {
            body.insert("name".into(), Value::String(to.to_owned()));
        }
        _ => {}
    }
    Ok(Document {
        name: to.to_owned(),
        revision: doc.revision + 1,
        update_time: Timestamp::now(),
        body,
        ..doc.clone()
    })
}

/// What a forced delete of an undecodable record reports.
pub fn damaged(kind: DocKind, name: &str) -> Document {
    Document {
        kind,
        name: name.to_owned(),
        revision: 0,
        create_time: Timestamp::default(),
        update_time: Timestamp::default(),
        body: Map::new(),
    }
}

/// The provider connection `new` names when `old` (the stored LLM) did not name it already.
pub fn added_connection(old: Option<&LlmConfig>, new: &LlmConfig) -> Vec<Reference> {
    let held = old.and_then(|o| connection_of(&o.extra));
    match connection_of(&new.extra) {
        Some(id) if held != Some(id) => vec![Reference {
            field: format!("llm.extra.{CONNECTION_KEY}"),
            target: Target::Document(DocKind::Connection, id.to_owned()),
        }],
        _ => Vec::new(),
    }
}

/// `doc` with its references to `from` pointed at `to`, one revision more; `None` when it holds none.
pub fn repointed(doc: &Document, from: &Target, to: &str, now: Timestamp) -> Option<Document> {
    let mut body = doc.body.clone();
    crate::domain::document::repoint(doc.kind, &mut body, from, to).then(|| Document {
        body,
        revision: doc.revision + 1,
        update_time: now,
        ..doc.clone()
    })
}

/// What importing `items` (name, object) of `kind` does, given the `stored` documents of those
/// names: the outcome of each, and the documents to write. References are not checked: an import
/// takes every home the SDK itself takes, dangling references included. `blind`: as for
/// [`plan_put`].
pub fn plan_import(
    kind: DocKind,
    items: Vec<(String, Map<String, Value>)>,
    policy: ConflictPolicy,
    mut stored: HashMap<String, Document>,
    blind: bool,
) -> (Vec<ImportOutcome>, Vec<Document>) {
    if policy == ConflictPolicy::Fail {
        let names = items.iter().map(|(n, _)| n.as_str());
        let stored_has = |n: &str| stored.contains_key(n);
        if let Some(refused) = super::rules::refuse_conflicts(kind.noun(), names, stored_has) {
            return (refused, Vec::new());
        }
    }
    let mut outcomes = Vec::with_capacity(items.len());
    let mut writes = Vec::new();
    // Each new document is created a nanosecond after the one before it, so creation order is
    // the order of the items (a connections file keeps its connections in that order).
    let mut clock = Timestamp::now();
    for (name, body) in items {
        let old = stored.get(&name);
        let forced = blind && supplies_secret(kind, &body);
        let body = merge_secrets(kind, body, old);
        let doc = match old {
            Some(o) if o.body == body && !forced => {
                outcomes.push(ImportOutcome::stored(&name, Outcome::Unchanged, o.revision));
                continue;
            }
            Some(_) if policy == ConflictPolicy::Skip => {
                outcomes.push(ImportOutcome::refused(
                    &name,
                    Outcome::Skipped,
                    format!(
                        "a {} of that name exists with other content (on_conflict SKIP)",
                        kind.noun()
                    ),
                ));
                continue;
            }
            Some(o) => Document {
                revision: o.revision + 1,
                update_time: Timestamp::now(),
                body,
                ..o.clone()
            },
            None => {
                clock = clock.after_one_nanosecond();
                fresh(kind, &name, body, clock)
            }
        };
        let outcome = if doc.revision == 1 {
            Outcome::Created
        } else {
            Outcome::Updated
        };
        outcomes.push(ImportOutcome::stored(&name, outcome, doc.revision));
        writes.push(doc.clone());
        stored.insert(name, doc);
    }
    (outcomes, writes)
}
