//! The target of a client command: a running server (gRPC) or a data dir opened directly.
use std::sync::Arc;

use anyhow::{bail, Context};
use tonic::transport::Channel;

use crate::config::{OnConflict, SecretsMode, TargetArgs};
use crate::domain::ProfileName;
use crate::openhands::profile::SecretsOut;
use crate::openhands::secrets::FernetKey;
use crate::pb;
use crate::pb::profile_service_client::ProfileServiceClient;
use crate::service::transfer::{
    export_documents, import_documents, ExportPage, ImportReport, Outcome,
};
use crate::service::Limits;
use crate::store::{ConflictPolicy, OpenError, SledStore, StoreOptions};

/// Requests stay well under the server's default 4 MiB limit.
const CHUNK_BYTES: usize = 3 * 1024 * 1024;
/// Export page size: 1000 profiles of at most 64 KiB fit the client's decoding limit below.
const EXPORT_PAGE: i32 = 1000;
const MAX_RESPONSE_BYTES: usize = 80 * 1024 * 1024;

/// Where the work goes.
pub enum Target {
    /// A running server.
    Remote(ProfileServiceClient<Channel>),
    /// A data dir opened directly (no server running on it).
    Local(Arc<SledStore>),
}

impl Target {
    /// Connects to the server, or opens the data dir when one is given.
    pub async fn open(args: &TargetArgs) -> anyhow::Result<Self> {
        if let Some(dir) = &args.data_dir {
            return match SledStore::open(dir, &StoreOptions::default()) {
                Ok(store) => Ok(Self::Local(store)),
                Err(e @ OpenError::InUse { .. }) => Err(anyhow::Error::new(e)
                    .context("a server holds this data dir: use --server to go through it")),
                Err(e) => Err(e.into()),
            };
        }
        let channel = Channel::from_shared(args.server.clone())
            .with_context(|| {
                format!(
                    "--server {:?} is not a URL like http://127.0.0.1:50051",
                    args.server
                )
            })?
            .connect()
            .await
            .with_context(|| format!("cannot reach the server at {}", args.server))?;
        Ok(Self::Remote(
            ProfileServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES),
        ))
    }

    /// Imports documents (name, file text); `progress` is told how many are done.
    pub async fn import(
        &mut self,
        docs: Vec<(String, String)>,
        key: Option<&FernetKey>,
        on_conflict: OnConflict,
        dry_run: bool,
        progress: &dyn Fn(usize),
    ) -> anyhow::Result<Vec<ImportReport>> {
        match self {
            Self::Local(store) => {
                let n = docs.len();
                let policy = ConflictPolicy::from(on_conflict);
                let reports =
                    import_documents(&**store, docs, key, policy, dry_run, &Limits::default())
                        .await?;
                progress(n);
                Ok(reports)
            }
            Self::Remote(client) => {
                let chunks = chunk(docs);
                // FAIL must write nothing if any chunk conflicts: check them all first.
                if on_conflict == OnConflict::Fail && !dry_run && chunks.len() > 1 {
                    let mut checked = Vec::new();
                    for c in &chunks {
                        checked.extend(
                            remote_import(client, c.clone(), key, on_conflict, true).await?,
                        );
                    }
                    if checked.iter().any(|r| r.outcome == Outcome::Skipped) {
                        return Ok(checked);
                    }
                }
                let mut reports = Vec::new();
                for c in chunks {
                    reports.extend(remote_import(client, c, key, on_conflict, dry_run).await?);
                    progress(reports.len());
                }
                Ok(reports)
            }
        }
    }

    /// Exports profiles as SDK files, every page, in name order.
    pub async fn export(
        &mut self,
        names: &[String],
        mode: SecretsMode,
        key: Option<&FernetKey>,
    ) -> anyhow::Result<Vec<(String, String)>> {
        if mode == SecretsMode::Encrypted && key.is_none() {
            bail!("--secrets encrypted needs the SDK's key: set the variable named by --fernet-key-env (OH_SECRET_KEY)");
        }
        let mut out = Vec::new();
        match self {
            Self::Local(store) => {
                let names = names
                    .iter()
                    .map(|n| ProfileName::parse(n, "--name").map_err(|v| anyhow::anyhow!("{v}")))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let secrets = match (mode, key) {
                    (SecretsMode::Redacted, _) => SecretsOut::Redacted,
                    (SecretsMode::Plaintext, _) => SecretsOut::Plaintext,
                    (SecretsMode::Encrypted, Some(k)) => SecretsOut::Encrypted(k),
                    (SecretsMode::Encrypted, None) => unreachable!("checked above"),
                };
                let mut after = None;
                loop {
                    let ExportPage {
                        documents,
                        more_after,
                    } = export_documents(&**store, &names, &secrets, after.as_deref(), 1000)?;
                    out.extend(documents);
                    match more_after {
                        Some(a) => after = Some(a),
                        None => return Ok(out),
                    }
                }
            }
            Self::Remote(client) => {
                use pb::export_profiles_request::Secrets;
                let secrets = match mode {
                    SecretsMode::Redacted => Secrets::Redacted,
                    SecretsMode::Plaintext => Secrets::Plaintext,
                    SecretsMode::Encrypted => Secrets::Encrypted,
                };
                let mut page_token = String::new();
                loop {
                    let resp = client
                        .export_profiles(pb::ExportProfilesRequest {
                            names: names.to_vec(),
                            secrets: secrets as i32,
                            fernet_key: key.map(|k| k.to_base64().to_owned()).unwrap_or_default(),
                            page_size: if names.is_empty() { EXPORT_PAGE } else { 0 },
                            page_token,
                        })
                        .await
                        .map_err(status_error)?
                        .into_inner();
                    out.extend(resp.documents.into_iter().map(|d| (d.name, d.json)));
                    if resp.next_page_token.is_empty() {
                        return Ok(out);
                    }
                    page_token = resp.next_page_token;
                }
            }
        }
    }
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("the server refused: {:?}: {}", s.code(), s.message())
}

fn chunk(docs: Vec<(String, String)>) -> Vec<Vec<(String, String)>> {
    let mut chunks = vec![Vec::new()];
    let mut size = 0;
    for d in docs {
        let len = d.0.len() + d.1.len() + 16;
        if size + len > CHUNK_BYTES && chunks.last().is_some_and(|c| !c.is_empty()) {
            chunks.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(last) = chunks.last_mut() {
            last.push(d);
        }
    }
    chunks
}

async fn remote_import(
    client: &mut ProfileServiceClient<Channel>,
    docs: Vec<(String, String)>,
    key: Option<&FernetKey>,
    on_conflict: OnConflict,
    dry_run: bool,
) -> anyhow::Result<Vec<ImportReport>> {
    use pb::import_profiles_request::OnConflict as P;
    let on_conflict = match on_conflict {
        OnConflict::Skip => P::Skip,
        OnConflict::Overwrite => P::Overwrite,
        OnConflict::Fail => P::Fail,
    };
    let resp = client
        .import_profiles(pb::ImportProfilesRequest {
            documents: docs
                .into_iter()
                .map(|(name, json)| pb::ProfileDocument { name, json })
                .collect(),
            on_conflict: on_conflict as i32,
            fernet_key: key.map(|k| k.to_base64().to_owned()).unwrap_or_default(),
            dry_run,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(resp
        .results
        .into_iter()
        .map(|r| {
            use pb::import_result::Outcome as O;
            let outcome = match r.outcome() {
                O::Created => Outcome::Created,
                O::Updated => Outcome::Updated,
                O::Unchanged => Outcome::Unchanged,
                O::Skipped => Outcome::Skipped,
                O::Invalid | O::Unspecified => Outcome::Invalid,
            };
            ImportReport {
                name: r.name,
                outcome,
                reason: r.reason,
                revision: r.revision,
            }
        })
        .collect())
}
