//! Import and export of SDK profile files over the [`Store`]: shared by the gRPC handlers,
//! the CLI's direct `--data-dir` mode and `serve --import-on-start`.
use std::collections::BTreeMap;

use crate::app::Limits;
use crate::domain::{
    conversation_violations, Conversation, ConversationId, Event, LlmConfig, LlmSource, Outcome,
    ProfileName, Secret, SecretField, Violation, Writer,
};
use crate::openhands::conversation::{export_conversation, parse_conversation, LlmForm};
use crate::openhands::profile::{export_file, name_from_file, parse_file, SecretsOut};
use crate::openhands::secrets::FernetKey;
use crate::store::{ConflictPolicy, EventQuery, ImportOutcome, Store, StoreError};

/// Parses every document (name, file text) and imports the valid ones as one atomic batch; bad
/// documents are reported and never written. When `by` is blind, no outcome may depend on whether
/// a supplied secret equals the stored one.
pub async fn import_documents(
    store: &Store,
    docs: Vec<(String, String)>,
    key: Option<&FernetKey>,
    policy: ConflictPolicy,
    dry_run: bool,
    by: Writer<'_>,
    limits: &Limits,
) -> Result<Vec<ImportOutcome>, StoreError> {
    let mut reports = Vec::with_capacity(docs.len());
    let mut valid = Vec::new();
    let mut slots = Vec::new();
    for (name, text) in docs {
        let parsed = check_size(&text, limits)
            .and_then(|()| name_from_file(&name))
            .and_then(|n| parse_file(&text, key).map(|llm| (n, llm)))
            .map(|(n, mut llm)| {
                llm.blind_if(by.blind);
                (n, llm)
            });
        reports.push(match parsed {
            Ok(item) => {
                let masked = SecretField::ALL
                    .iter()
                    .any(|f| item.1.secret(*f).is_some_and(Secret::is_mask));
                valid.push(item);
                slots.push((reports.len(), masked));
                // Filled in from the store's outcome below.
                ImportOutcome::stored(name, Outcome::Created, 0)
            }
            Err(reason) => ImportOutcome::refused(name, Outcome::Invalid, reason),
        });
    }
    let outcomes = store
        .import_profiles(valid, policy, dry_run, by.name)
        .await?;
    for ((slot, masked), outcome) in slots.into_iter().zip(outcomes) {
        let r = &mut reports[slot];
        // The report keeps the document's name; the store's outcome names the profile.
        (r.outcome, r.revision, r.reason) = (outcome.outcome, outcome.revision, outcome.reason);
        // The mask keeps a stored key; a new profile has none to keep, so it comes in without
        // one: say so, or a redacted export imported elsewhere loses keys silently.
        if masked && r.outcome == Outcome::Created {
            r.reason = crate::domain::NO_KEY.into();
        }
    }
    Ok(reports)
}

fn check_size(text: &str, limits: &Limits) -> Result<(), String> {
    if text.len() > limits.max_profile_bytes {
        return Err(format!(
            "is {} bytes, over the limit of {} bytes",
            text.len(),
            limits.max_profile_bytes
        ));
    }
    Ok(())
}

/// A page of exported files (name, text) and the name to continue after, if any.
pub struct ExportPage {
    /// The files, in name order.
    pub documents: Vec<(String, String)>,
    /// The last name when more profiles follow.
    pub more_after: Option<String>,
}

/// Renders the named profiles (all of them, a page at a time, when `names` is empty) as SDK files.
pub async fn export_documents(
    store: &Store,
    names: &[ProfileName],
    secrets: &SecretsOut<'_>,
    after: Option<&str>,
    page_size: usize,
) -> Result<ExportPage, StoreError> {
    let mut profiles = Vec::new();
    let mut more_after = None;
    if names.is_empty() {
        profiles = store
            .list_profiles(after, page_size.saturating_add(1))
            .await?;
        if profiles.len() > page_size {
            profiles.truncate(page_size);
            more_after = profiles.last().map(|p| p.name.to_string());
        }
    } else {
        for name in names {
            let p = store
                .get_profile(name)
                .await?
                .ok_or_else(|| StoreError::not_found("profile", name))?;
            profiles.push(p);
        }
    }
    let documents = profiles
        .into_iter()
        .map(|p| (p.name.to_string(), export_file(&p.llm, secrets)))
        .collect();
    Ok(ExportPage {
        documents,
        more_after,
    })
}

/// Why a conversation import failed.
#[derive(Debug)]
pub enum TransferError {
    /// The files break a rule; nothing was written.
    Invalid(Vec<Violation>),
    /// The store refused or failed.
    Store(StoreError),
}

impl From<StoreError> for TransferError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Imports one SDK conversation folder's files (base_state.json text, event files) all or nothing:
/// the outcome (named by the conversation's id) and how many events it wrote.
#[allow(clippy::too_many_arguments)]
pub async fn import_conversation_files(
    store: &Store,
    base_state: &str,
    events: &[(String, String)],
    key: Option<&FernetKey>,
    bind_profile: Option<&ProfileName>,
    policy: ConflictPolicy,
    dry_run: bool,
    limits: &Limits,
) -> Result<(ImportOutcome, i64), TransferError> {
    if let Some((name, text)) = events
        .iter()
        .find(|(_, t)| t.len() > limits.max_event_bytes)
    {
        return Err(TransferError::Invalid(vec![Violation::new(
            "events",
            format!(
                "{name} is {} bytes, over the limit of {} bytes",
                text.len(),
                limits.max_event_bytes
            ),
        )]));
    }
    let (c, events) = parse_conversation(base_state, events, key, bind_profile)
        .map_err(|why| TransferError::Invalid(vec![Violation::new("base_state_json", why)]))?;
    let violations = conversation_violations(&c, "base_state_json", limits.max_tags);
    if !violations.is_empty() {
        return Err(TransferError::Invalid(violations));
    }
    let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
    let outcome = store
        .import_conversation(c, events, policy, dry_run)
        .await?;
    let written = if outcome.outcome == Outcome::Skipped {
        0
    } else {
        count
    };
    Ok((outcome, written))
}

/// The configuration in effect for each LLM usage of `c`: its profile's (left out when the profile
/// was deleted with force) or its inline one, with the credentials of the provider connection it
/// names. Secrets are unmasked: mask them before responding.
pub async fn resolve_llms(
    store: &Store,
    c: &Conversation,
) -> Result<BTreeMap<String, LlmConfig>, StoreError> {
    let mut out = BTreeMap::new();
    for (usage, source) in &c.llms {
        let llm = match source {
            LlmSource::Profile(name) => match store.get_profile(name).await? {
                Some(p) => p.llm,
                None => continue,
            },
            LlmSource::Inline(l) => (**l).clone(),
        };
        let owner = format!("conversation {} LLM {usage:?}", c.id);
        // A conversation is read whole: an LLM whose connection is gone (deleted with force, or
        // dangling in an imported home) is given as it is stored, not as a failed read.
        let llm = match crate::app::documents::resolve_connection(store, llm.clone(), &owner).await
        {
            Err(StoreError::FailedPrecondition(why)) => {
                tracing::warn!(conversation = %c.id, usage = %usage, "{why}");
                llm
            }
            other => other?,
        };
        out.insert(usage.clone(), llm);
    }
    Ok(out)
}

/// One conversation as the SDK's files: base_state.json's text (bound LLMs resolved inline, or
/// profile references) and the event files (name, text).
pub async fn export_conversation_files(
    store: &Store,
    id: &ConversationId,
    secrets: SecretsOut<'_>,
    profile_refs: bool,
) -> Result<(String, Vec<(String, String)>), StoreError> {
    let c = store
        .get_conversation(id)
        .await?
        .ok_or_else(|| StoreError::not_found("conversation", id))?;
    let resolved = resolve_llms(store, &c).await?;
    let mut events: Vec<Event> = Vec::new();
    loop {
        let query = EventQuery {
            after_seq: events.last().map(|e| e.seq),
            limit: 1000,
            ..EventQuery::default()
        };
        let page = store.list_events(id, &query).await?;
        if page.is_empty() {
            break;
        }
        events.extend(page);
    }
    let form = if profile_refs {
        LlmForm::ProfileRefs(secrets)
    } else {
        LlmForm::Inline(secrets)
    };
    // Records from before ids were checked at the edge: refuse before any file is written.
    if let Some(e) = events
        .iter()
        .find(|e| !crate::domain::values::is_file_safe_id(&e.id))
    {
        return Err(StoreError::FailedPrecondition(format!(
            "event {} of conversation {id} has an id that cannot be part of a file name (an id {}); nothing was exported",
            e.seq,
            crate::domain::values::FILE_ID_RULE
        )));
    }
    Ok(export_conversation(&c, &resolved, &events, &form))
}
