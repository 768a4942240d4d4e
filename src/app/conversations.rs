//! Conversation use cases that need more than one record or a rule of their own: creating one
//! (inline secrets as given), an update by field mask, switching one usage's LLM, and resolving
//! each binding to the configuration in effect. The rules: a RUNNING conversation's LLMs do not
//! change under it, and an inline LLM written with its secrets masked keeps the stored ones.
use std::collections::BTreeMap;

use crate::app::transfer::resolve_llms;
use crate::domain::{
    Conversation, ConversationId, ExecutionStatus, LlmConfig, LlmSource, Violation,
};
use crate::store::{Store, StoreError};

/// The mutable fields an update mask may name.
pub const MASK_FIELDS: [&str; 5] = ["llms", "execution_status", "title", "tags", "state"];

/// What an update asks for: the fields to replace (none: all of them) and their new values.
pub struct Update {
    /// The update mask's paths.
    pub paths: Vec<String>,
    /// The new values (only the masked fields are read).
    pub new: Conversation,
    /// The request left execution_status unset: a whole-record update keeps the stored one.
    pub status_unset: bool,
}

/// A violation for every mask path that is not a mutable field.
pub fn mask_violations(paths: &[String]) -> Vec<Violation> {
    paths
        .iter()
        .filter(|p| !MASK_FIELDS.contains(&p.as_str()))
        .map(|p| {
            Violation::new(
                "update_mask.paths",
                format!("{p:?} is not one of {}", MASK_FIELDS.join(", ")),
            )
        })
        .collect()
}

/// For a write: an inline LLM given with the mask keeps the stored secrets of the same usage.
/// `blind`: the caller may not read secrets, so a secret it supplies always counts as a change
/// (see `LlmConfig::blind_write`): no outcome tells whether it equals the stored one.
fn merge_inline(new: LlmSource, old: Option<&LlmSource>, blind: bool) -> LlmSource {
    match (new, old) {
        (LlmSource::Inline(mut n), old) => {
            n.blind_if(blind);
            let old = match old {
                Some(LlmSource::Inline(o)) => Some(&**o),
                _ => None,
            };
            LlmSource::Inline(Box::new(n.merge_onto(old)))
        }
        (p, _) => p,
    }
}

/// A running agent's LLMs do not change under it: FAILED_PRECONDITION while `old` is RUNNING.
fn refuse_while_running(old: &Conversation, doing: &str) -> Result<(), StoreError> {
    if old.execution_status == ExecutionStatus::Running {
        return Err(StoreError::FailedPrecondition(format!(
            "conversation {} is RUNNING: pause it (or let it finish) before {doing}",
            old.id
        )));
    }
    Ok(())
}

/// Creates a conversation (its inline LLMs as given, masks and all).
pub async fn create(store: &Store, mut c: Conversation) -> Result<Conversation, StoreError> {
    c.llms = std::mem::take(&mut c.llms)
        .into_iter()
        .map(|(u, s)| (u, merge_inline(s, None, false)))
        .collect();
    store.create_conversation(c).await
}

/// Replaces the fields `update` names (all when it names none); `blind` as for [`merge_inline`].
pub async fn update(
    store: &Store,
    id: &ConversationId,
    expected_revision: Option<i64>,
    update: Update,
    blind: bool,
) -> Result<Conversation, StoreError> {
    let Update {
        paths,
        new,
        status_unset,
    } = update;
    let all = paths.is_empty();
    let wants = move |f: &str| all || paths.iter().any(|p| p == f);
    store
        .update_conversation(
            id,
            expected_revision,
            Box::new(move |old| {
                let mut c = old.clone();
                if wants("llms") {
                    c.llms = new
                        .llms
                        .into_iter()
                        .map(|(u, s)| {
                            let s = merge_inline(s, old.llms.get(&u), blind);
                            (u, s)
                        })
                        .collect();
                }
                if wants("execution_status") && !(all && status_unset) {
                    c.execution_status = new.execution_status;
                }
                if wants("title") {
                    c.title = new.title;
                }
                if wants("tags") {
                    c.tags = new.tags;
                }
                if wants("state") {
                    c.state = new.state;
                }
                // The same rule as SwitchLlm (a status change to RUNNING may come with new LLMs).
                if c.execution_status == ExecutionStatus::Running && c.llms != old.llms {
                    refuse_while_running(old, "changing its LLMs")?;
                }
                Ok(c)
            }),
        )
        .await
}

/// Points one usage (`agent` when empty) at `source`; refused while the conversation runs.
pub async fn switch_llm(
    store: &Store,
    id: &ConversationId,
    usage: String,
    source: LlmSource,
    expected_revision: Option<i64>,
    blind: bool,
) -> Result<Conversation, StoreError> {
    let usage = if usage.is_empty() {
        "agent".to_owned()
    } else {
        usage
    };
    store
        .update_conversation(
            id,
            expected_revision,
            Box::new(move |old| {
                refuse_while_running(old, "switching its LLM")?;
                let mut c = old.clone();
                let source = merge_inline(source, old.llms.get(&usage), blind);
                c.llms.insert(usage, source);
                Ok(c)
            }),
        )
        .await
}

/// Each binding's configuration in effect: the profile's (absent when the profile was deleted
/// with force) or the inline one; masked unless `reveal`.
pub async fn resolve(
    store: &Store,
    c: &Conversation,
    reveal: bool,
) -> Result<BTreeMap<String, LlmConfig>, StoreError> {
    let resolved = resolve_llms(store, c).await?;
    Ok(if reveal {
        resolved
    } else {
        resolved
            .into_iter()
            .map(|(usage, llm)| (usage, llm.masked()))
            .collect()
    })
}
