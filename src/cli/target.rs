//! The target of a client command: a running server (gRPC) or a data dir opened directly.
use std::sync::Arc;

use anyhow::bail;

use super::connection::{connect, status_error, ServerChannel};
use super::{fernet_key_field, file_messages};
use crate::app::transfer::{
    export_conversation_files, export_documents, import_conversation_files, import_documents,
    ExportPage, TransferError,
};
use crate::app::Limits;
use crate::config::TargetArgs;
use crate::domain::Writer;
use crate::domain::{ConflictPolicy, ImportOutcome, SecretsMode};
use crate::domain::{ConversationId, ProfileName};
use crate::openhands::profile::SecretsOut;
use crate::openhands::secrets::FernetKey;
use crate::pb;
use crate::pb::conversation_service_client::ConversationServiceClient;
use crate::pb::profile_service_client::ProfileServiceClient;
use crate::store::{OpenError, SledStore, Store, StoreOptions};

/// Requests stay well under the server's default 4 MiB limit.
const CHUNK_BYTES: usize = 3 * 1024 * 1024;
/// Export page size: 1000 profiles of at most 64 KiB fit the client's decoding limit below.
const EXPORT_PAGE: i32 = 1000;
pub(crate) const MAX_RESPONSE_BYTES: usize = 80 * 1024 * 1024;

/// Opens `--data-dir` (which must be given) for a client command; while a server holds it, the
/// error says to go through the server.
pub(crate) fn open_data_dir(args: &TargetArgs) -> anyhow::Result<Arc<SledStore>> {
    let dir = args
        .data_dir
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("no --data-dir given"))?;
    let options = StoreOptions {
        secret_key_file: args.secret_key_file.clone(),
        // The server's --history-revisions is not known here: trim nothing (its next write does).
        history_revisions: usize::MAX,
        ..StoreOptions::default()
    };
    match SledStore::open(dir, &options) {
        Ok(store) => Ok(store),
        Err(e @ OpenError::InUse { .. }) => Err(anyhow::Error::new(e)
            .context("a server holds this data dir: use --server to go through it")),
        Err(e) => Err(e.into()),
    }
}

/// Where the work goes.
pub enum Target {
    /// A running server.
    Remote(ServerChannel),
    /// A data dir opened directly (no server running on it).
    Local(Arc<Store>),
}

impl Target {
    /// Connects to the server, or opens the data dir when one is given.
    pub async fn open(args: &TargetArgs) -> anyhow::Result<Self> {
        if args.data_dir.is_some() {
            return Ok(Self::Local(Arc::new(Store::Sled(open_data_dir(args)?))));
        }
        Ok(Self::Remote(connect(&args.client).await?))
    }

    /// Imports documents (name, file text); `progress` is told how many are done.
    pub async fn import(
        &mut self,
        docs: Vec<(String, String)>,
        key: Option<&FernetKey>,
        on_conflict: ConflictPolicy,
        dry_run: bool,
        progress: &dyn Fn(usize),
    ) -> anyhow::Result<Vec<ImportOutcome>> {
        match self {
            Self::Local(store) => {
                let n = docs.len();
                let policy = on_conflict;
                let (by, limits) = (Writer::LOCAL, Limits::default());
                let reports =
                    import_documents(store, docs, key, policy, dry_run, by, &limits).await?;
                progress(n);
                Ok(reports)
            }
            Self::Remote(channel) => {
                let client = &mut profiles_client(channel);
                // FAIL is one request, so the server writes all of it or nothing; the other
                // policies go in chunks under the server's request limit.
                let chunks = if on_conflict == ConflictPolicy::Fail {
                    vec![docs]
                } else {
                    chunk(docs)
                };
                let mut reports = Vec::new();
                for c in chunks {
                    reports.extend(remote_import(client, c, key, on_conflict, dry_run).await?);
                    progress(reports.len());
                }
                Ok(reports)
            }
        }
    }

    /// Exports profiles as SDK files, handing each page of (name, text) to `page` as it arrives, so
    /// that the caller can write one page while the next is fetched.
    pub async fn export_pages(
        &mut self,
        names: &[String],
        mode: SecretsMode,
        key: Option<&FernetKey>,
        page: &mut (dyn FnMut(Vec<(String, String)>) -> anyhow::Result<()> + Send),
    ) -> anyhow::Result<()> {
        if mode == SecretsMode::Encrypted && key.is_none() {
            bail!("--secrets encrypted needs the SDK's key: set the variable named by --fernet-key-env (OH_SECRET_KEY)");
        }
        match self {
            Self::Local(store) => {
                let names = names
                    .iter()
                    .map(|n| ProfileName::parse(n, "--name").map_err(|v| anyhow::anyhow!("{v}")))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let secrets = secrets_out(mode, key)?;
                let mut after = None;
                loop {
                    let ExportPage {
                        documents,
                        more_after,
                    } = export_documents(store, &names, &secrets, after.as_deref(), 1000).await?;
                    page(documents)?;
                    match more_after {
                        Some(a) => after = Some(a),
                        None => return Ok(()),
                    }
                }
            }
            Self::Remote(channel) => {
                let mut client = profiles_client(channel);
                let mut page_token = String::new();
                loop {
                    let page_size = if names.is_empty() { EXPORT_PAGE } else { 0 };
                    let req = export_request(names.to_vec(), mode, key, page_size, page_token);
                    let resp = client
                        .export_profiles(req)
                        .await
                        .map_err(status_error)?
                        .into_inner();
                    page(
                        resp.documents
                            .into_iter()
                            .map(|d| (d.name, d.json))
                            .collect(),
                    )?;
                    if resp.next_page_token.is_empty() {
                        return Ok(());
                    }
                    page_token = resp.next_page_token;
                }
            }
        }
    }
}

/// An ExportProfiles request: `names` (empty: all, a page of `page_size` after `page_token`),
/// secrets as `mode`, with the SDK's `key` for ENCRYPTED.
pub(crate) fn export_request(
    names: Vec<String>,
    mode: SecretsMode,
    key: Option<&FernetKey>,
    page_size: i32,
    page_token: String,
) -> pb::ExportProfilesRequest {
    pb::ExportProfilesRequest {
        names,
        secrets: pb::export_profiles_request::Secrets::from(mode) as i32,
        fernet_key: fernet_key_field(key),
        page_size,
        page_token,
    }
}

fn profiles_client(channel: &ServerChannel) -> ProfileServiceClient<ServerChannel> {
    ProfileServiceClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

fn conversations_client(channel: &ServerChannel) -> ConversationServiceClient<ServerChannel> {
    ConversationServiceClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
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
    client: &mut ProfileServiceClient<ServerChannel>,
    docs: Vec<(String, String)>,
    key: Option<&FernetKey>,
    on_conflict: ConflictPolicy,
    dry_run: bool,
) -> anyhow::Result<Vec<ImportOutcome>> {
    let on_conflict = pb::import_profiles_request::OnConflict::from(on_conflict);
    let resp = client
        .import_profiles(pb::ImportProfilesRequest {
            documents: file_messages(docs, |name, json| pb::ProfileDocument { name, json }),
            on_conflict: on_conflict as i32,
            fernet_key: fernet_key_field(key),
            dry_run,
        })
        .await
        .map_err(|s| {
            let too_large = matches!(
                s.code(),
                tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
            );
            let e = status_error(s);
            if too_large && on_conflict == pb::import_profiles_request::OnConflict::Fail {
                e.context("--on-conflict fail sends the whole folder as one atomic request, and the server refuses one this large: raise the server's --max-request-bytes, or import with --on-conflict skip or overwrite")
            } else {
                e
            }
        })?
        .into_inner();
    Ok(resp.results.into_iter().map(ImportOutcome::from).collect())
}

/// The result of importing one conversation folder: what happened (named by its id) and how many
/// events it wrote, or why it was refused.
pub type ConversationImport = Result<(ImportOutcome, i64), String>;

impl Target {
    /// Imports one conversation folder's files.
    #[allow(clippy::too_many_arguments)]
    pub async fn import_conversation(
        &mut self,
        base_state: String,
        events: Vec<(String, String)>,
        key: Option<&FernetKey>,
        bind_profile: Option<&str>,
        on_conflict: ConflictPolicy,
        dry_run: bool,
    ) -> anyhow::Result<ConversationImport> {
        match self {
            Self::Local(store) => {
                let bind = bind_profile
                    .map(|p| {
                        ProfileName::parse(p, "--bind-profile").map_err(|v| anyhow::anyhow!("{v}"))
                    })
                    .transpose()?;
                let result = import_conversation_files(
                    store,
                    &base_state,
                    &events,
                    key,
                    bind.as_ref(),
                    on_conflict,
                    dry_run,
                    &Limits::default(),
                )
                .await;
                Ok(match result {
                    Ok(imported) => Ok(imported),
                    Err(TransferError::Invalid(v)) => Err(v
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")),
                    Err(TransferError::Store(e)) => Err(e.to_string()),
                })
            }
            Self::Remote(channel) => {
                let on_conflict = pb::import_profiles_request::OnConflict::from(on_conflict);
                let mut conversations = conversations_client(channel);
                let resp = conversations
                    .import_conversation(pb::ImportConversationRequest {
                        base_state_json: base_state,
                        events: file_messages(events, |name, json| pb::ConversationFile {
                            name,
                            json,
                        }),
                        on_conflict: on_conflict as i32,
                        fernet_key: fernet_key_field(key),
                        bind_profile: bind_profile.unwrap_or_default().to_owned(),
                        dry_run,
                    })
                    .await;
                Ok(match resp {
                    Ok(r) => {
                        let r = r.into_inner();
                        let outcome = ImportOutcome {
                            outcome: r.outcome().into(),
                            name: r.id,
                            reason: r.reason,
                            revision: 0,
                        };
                        Ok((outcome, r.events))
                    }
                    Err(s)
                        if matches!(
                            s.code(),
                            tonic::Code::InvalidArgument
                                | tonic::Code::NotFound
                                | tonic::Code::OutOfRange
                                | tonic::Code::ResourceExhausted
                        ) =>
                    {
                        Err(s.message().to_owned())
                    }
                    Err(s) => return Err(status_error(s)),
                })
            }
        }
    }

    /// Every conversation id (or the given ones), then each as the SDK's files:
    /// (folder name, base_state.json, event files).
    pub async fn export_conversations(
        &mut self,
        ids: &[String],
        mode: SecretsMode,
        key: Option<&FernetKey>,
        profile_refs: bool,
    ) -> anyhow::Result<Vec<(String, String, Vec<(String, String)>)>> {
        if mode == SecretsMode::Encrypted && key.is_none() {
            bail!("--secrets encrypted needs the SDK's key: set the variable named by --fernet-key-env (OH_SECRET_KEY)");
        }
        let ids: Vec<ConversationId> = if ids.is_empty() {
            self.conversation_ids().await?
        } else {
            ids.iter()
                .map(|i| ConversationId::parse(i, "--id").map_err(|v| anyhow::anyhow!("{v}")))
                .collect::<anyhow::Result<_>>()?
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self {
                Self::Local(store) => {
                    let secrets = secrets_out(mode, key)?;
                    let (base, files) =
                        export_conversation_files(store, &id, secrets, profile_refs).await?;
                    out.push((id.simple(), base, files));
                }
                Self::Remote(channel) => {
                    let mut conversations = conversations_client(channel);
                    let r = conversations
                        .export_conversation(pb::ExportConversationRequest {
                            id: id.to_string(),
                            secrets: pb::export_profiles_request::Secrets::from(mode) as i32,
                            fernet_key: fernet_key_field(key),
                            profile_refs,
                        })
                        .await
                        .map_err(status_error)?
                        .into_inner();
                    out.push((
                        r.dir_name,
                        r.base_state_json,
                        r.events.into_iter().map(|f| (f.name, f.json)).collect(),
                    ));
                }
            }
        }
        Ok(out)
    }

    async fn conversation_ids(&mut self) -> anyhow::Result<Vec<ConversationId>> {
        let mut ids = Vec::new();
        match self {
            Self::Local(store) => loop {
                let page = store
                    .list_conversations(ids.last().copied(), 1000, None, None)
                    .await?;
                if page.is_empty() {
                    return Ok(ids);
                }
                ids.extend(page.into_iter().map(|c| c.id));
            },
            Self::Remote(channel) => {
                let mut conversations = conversations_client(channel);
                let mut page_token = String::new();
                loop {
                    let page = conversations
                        .list_conversations(pb::ListConversationsRequest {
                            page_size: 1000,
                            page_token,
                            ..Default::default()
                        })
                        .await
                        .map_err(status_error)?
                        .into_inner();
                    for c in page.conversations {
                        ids.push(
                            ConversationId::parse(&c.id, "id")
                                .map_err(|v| anyhow::anyhow!("{v}"))?,
                        );
                    }
                    if page.next_page_token.is_empty() {
                        return Ok(ids);
                    }
                    page_token = page.next_page_token;
                }
            }
        }
    }
}

/// The local form of `--secrets`; encrypted needs the SDK's key.
fn secrets_out(mode: SecretsMode, key: Option<&FernetKey>) -> anyhow::Result<SecretsOut<'_>> {
    SecretsOut::of(mode, key).ok_or_else(|| {
        anyhow::anyhow!("--secrets encrypted needs the SDK's key: set the variable named by --fernet-key-env (OH_SECRET_KEY)")
    })
}
