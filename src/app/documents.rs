//! Import and export of the SDK's other kinds (provider connections, meta-profiles, agent
//! profiles) over the [`Store`], file text in and out: shared by the gRPC handlers and the CLI's
//! `import --home` / `export --home`.
use serde_json::{Map, Value};

use crate::app::Limits;
use crate::domain::{DocKind, Document, LlmConfig, Outcome, ProfileName, ProviderConnection};
use crate::openhands::profile::SecretsOut;
use crate::openhands::secrets::FernetKey;
use crate::openhands::{agent_profiles, connections, meta_profiles};
use crate::store::{ConflictPolicy, ImportOutcome, Store, StoreError};

/// How many documents of one kind an export or a check reads at most (the SDK keeps at most 64
/// connections; meta-profiles and agent profiles are a handful in any home).
pub const MAX_DOCUMENTS: usize = 100_000;

/// A stored connection as the SDK's type.
pub fn connection_of(doc: &Document) -> Result<ProviderConnection, StoreError> {
    connections::parse_connection(&doc.body, connections::KeyIn::Stored).map_err(|reason| {
        StoreError::Corrupt {
            key: format!("documents/connection/{}", doc.name),
            reason,
        }
    })
}

/// The stored object of a connection (its key in the clear: the store seals it).
pub fn connection_body(c: &ProviderConnection) -> Map<String, Value> {
    connections::to_object(c, &SecretsOut::Plaintext)
}

/// `llm` with the credentials of the provider connection it names, as the SDK's load resolves
/// them: the connection's `base_url` wins (also when it has none), its key wins when it has one.
/// A missing connection leaves an LLM that has its own key as it is, and is FAILED_PRECONDITION
/// for one without (the SDK raises ProviderConnectionNotFound).
pub async fn resolve_connection(
    store: &Store,
    mut llm: LlmConfig,
    owner: &str,
) -> Result<LlmConfig, StoreError> {
    let Some(id) = crate::domain::document::connection_of(&llm.extra).map(str::to_owned) else {
        return Ok(llm);
    };
    match store.get_document(DocKind::Connection, &id).await? {
        Some(doc) => {
            let c = connection_of(&doc)?;
            llm.base_url = c.base_url;
            if let Some(key) = c.api_key {
                llm.api_key = Some(key);
            }
            Ok(llm)
        }
        None if llm.api_key.is_some() => Ok(llm),
        None => Err(StoreError::FailedPrecondition(format!(
            "{owner} references provider connection {id:?}, which does not exist: update it or recreate the connection"
        ))),
    }
}

/// One item to import: its name, and its object or why it does not read.
pub type Parsed = (String, Result<Map<String, Value>, String>);

/// Imports `items` (name, parsed object or why not) of `kind` as one atomic batch; the invalid
/// ones are reported in place and never written.
pub async fn import_parsed(
    store: &Store,
    kind: DocKind,
    items: Vec<Parsed>,
    policy: ConflictPolicy,
    dry_run: bool,
    blind: bool,
) -> Result<Vec<ImportOutcome>, StoreError> {
    let mut reports = Vec::with_capacity(items.len());
    let mut valid = Vec::new();
    let mut slots = Vec::new();
    for (name, parsed) in items {
        reports.push(match parsed {
            Ok(body) => {
                slots.push(reports.len());
                valid.push((name.clone(), body));
                ImportOutcome::stored(name, Outcome::Created, 0)
            }
            Err(reason) => ImportOutcome::refused(name, Outcome::Invalid, reason),
        });
    }
    let outcomes = store
        .import_documents(kind, valid, policy, dry_run, blind)
        .await?;
    for (slot, outcome) in slots.into_iter().zip(outcomes) {
        reports[slot] = outcome;
    }
    Ok(reports)
}

/// The largest file of `kind` an import reads: an agent profile's persona alone may be 65,536
/// characters (up to six bytes each, escaped), so its files get 1 MiB; the others the profile
/// limit.
pub fn max_file_bytes(kind: DocKind, limits: &Limits) -> usize {
    match kind {
        DocKind::AgentProfile => limits.max_profile_bytes.max(1024 * 1024),
        _ => limits.max_profile_bytes,
    }
}

/// Parses one file of `kind` named `name` (a meta-profile's or agent profile's stem).
pub fn parse_named(
    kind: DocKind,
    name: &str,
    text: &str,
    limits: &Limits,
) -> Result<Map<String, Value>, String> {
    let max = max_file_bytes(kind, limits);
    if text.len() > max {
        return Err(format!(
            "is {} bytes, over the limit of {max} bytes",
            text.len()
        ));
    }
    ProfileName::parse(name.strip_suffix(".json").unwrap_or(name), "name")
        .map_err(|v| v.description)?;
    match kind {
        DocKind::MetaProfile => {
            meta_profiles::parse_file(text).map(|m| meta_profiles::to_object(&m))
        }
        DocKind::AgentProfile => agent_profiles::parse_file(text),
        DocKind::Connection => {
            Err("connections come in one file, provider_connections.json".into())
        }
    }
}

/// Imports meta-profile or agent profile files (name, text).
pub async fn import_files(
    store: &Store,
    kind: DocKind,
    files: Vec<(String, String)>,
    policy: ConflictPolicy,
    dry_run: bool,
    limits: &Limits,
) -> Result<Vec<ImportOutcome>, StoreError> {
    let items = files
        .into_iter()
        .map(|(name, text)| {
            let parsed = parse_named(kind, &name, &text, limits);
            let stem = name.strip_suffix(".json").unwrap_or(&name).to_owned();
            (stem, parsed)
        })
        .collect();
    import_parsed(store, kind, items, policy, dry_run, false).await
}

/// Imports the text of `provider_connections.json`: each connection is one item, named by its
/// id. A file that does not read at all is one INVALID item named after the file.
pub async fn import_connections(
    store: &Store,
    text: &str,
    key: Option<&FernetKey>,
    policy: ConflictPolicy,
    dry_run: bool,
    blind: bool,
) -> Result<Vec<ImportOutcome>, StoreError> {
    let (items, masked): (Vec<Parsed>, Vec<bool>) = match connections::parse_file(text, key) {
        Err(reason) => (
            vec![(connections::FILE_NAME.to_owned(), Err(reason))],
            vec![false],
        ),
        Ok(list) => list
            .into_iter()
            .map(|c| {
                let mask = c
                    .api_key
                    .as_ref()
                    .is_some_and(crate::domain::Secret::is_mask);
                ((c.id.clone(), Ok(connection_body(&c))), mask)
            })
            .unzip(),
    };
    let mut reports =
        import_parsed(store, DocKind::Connection, items, policy, dry_run, blind).await?;
    // The mask keeps a stored key; a new connection has none to keep: say so, as for profiles.
    for (r, mask) in reports.iter_mut().zip(masked) {
        if mask && r.outcome == Outcome::Created {
            r.reason = crate::domain::NO_KEY.into();
        }
    }
    Ok(reports)
}

/// Every stored document of `kind`, in name order.
pub async fn all(store: &Store, kind: DocKind) -> Result<Vec<Document>, StoreError> {
    store.list_documents(kind, None, MAX_DOCUMENTS).await
}

/// The text of `provider_connections.json` for every stored connection (in creation order, as
/// the SDK keeps them), keys per `secrets`, and how many it holds.
pub async fn export_connections(
    store: &Store,
    secrets: &SecretsOut<'_>,
) -> Result<(String, usize), StoreError> {
    let mut stored = all(store, DocKind::Connection).await?;
    // The SDK's file lists connections in the order they were created (it appends).
    stored.sort_by(|a, b| (a.create_time, &a.name).cmp(&(b.create_time, &b.name)));
    let list = stored
        .iter()
        .map(connection_of)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((connections::to_file_text(&list, secrets), list.len()))
}

/// The files (name, text) of the named meta-profiles or agent profiles, all when `names` is empty.
pub async fn export_files(
    store: &Store,
    kind: DocKind,
    names: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    let docs = if names.is_empty() {
        all(store, kind).await?
    } else {
        let mut docs = Vec::with_capacity(names.len());
        for name in names {
            docs.push(
                store
                    .get_document(kind, name)
                    .await?
                    .ok_or_else(|| StoreError::not_found(kind.noun(), name))?,
            );
        }
        docs
    };
    Ok(docs
        .iter()
        .map(|d| (d.name.clone(), file_text(d)))
        .collect())
}

/// The file the SDK would write for a meta-profile or agent profile.
pub fn file_text(doc: &Document) -> String {
    match doc.kind {
        DocKind::AgentProfile => agent_profiles::to_file_text(&doc.body),
        _ => crate::domain::pyjson::dumps_indent2(&Value::Object(doc.body.clone())),
    }
}
