//! The target of a client command: a running server (gRPC) or a data dir opened directly.
use std::sync::Arc;

use anyhow::{bail, Context};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::config::{ClientArgs, OnConflict, SecretsMode, TargetArgs};
use crate::domain::{ConversationId, ProfileName};
use crate::openhands::profile::SecretsOut;
use crate::openhands::secrets::FernetKey;
use crate::pb;
use crate::pb::conversation_service_client::ConversationServiceClient;
use crate::pb::profile_service_client::ProfileServiceClient;
use crate::service::transfer::{
    export_conversation_files, export_documents, import_conversation_files, import_documents,
    ExportPage, ImportReport, Outcome, TransferError,
};
use crate::service::Limits;
use crate::store::{
    ConflictPolicy, ConversationStore, ImportOutcome, OpenError, SledStore, StoreOptions,
};

/// Requests stay well under the server's default 4 MiB limit.
const CHUNK_BYTES: usize = 3 * 1024 * 1024;
/// Export page size: 1000 profiles of at most 64 KiB fit the client's decoding limit below.
const EXPORT_PAGE: i32 = 1000;
pub(crate) const MAX_RESPONSE_BYTES: usize = 80 * 1024 * 1024;

/// Where the work goes.
pub enum Target {
    /// A running server.
    Remote(ServerChannel),
    /// A data dir opened directly (no server running on it).
    Local(Arc<SledStore>),
}

impl Target {
    /// Connects to the server, or opens the data dir when one is given.
    pub async fn open(args: &TargetArgs) -> anyhow::Result<Self> {
        if let Some(dir) = &args.data_dir {
            let options = StoreOptions {
                secret_key_file: args.secret_key_file.clone(),
                ..StoreOptions::default()
            };
            return match SledStore::open(dir, &options) {
                Ok(store) => Ok(Self::Local(store)),
                Err(e @ OpenError::InUse { .. }) => Err(anyhow::Error::new(e)
                    .context("a server holds this data dir: use --server to go through it")),
                Err(e) => Err(e.into()),
            };
        }
        Ok(Self::Remote(connect(&args.client).await?))
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
            Self::Remote(channel) => {
                let client = &mut profiles_client(channel);
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
                    } = export_documents(&**store, &names, &secrets, after.as_deref(), 1000)
                        .await?;
                    page(documents)?;
                    match more_after {
                        Some(a) => after = Some(a),
                        None => return Ok(()),
                    }
                }
            }
            Self::Remote(channel) => {
                let mut client = profiles_client(channel);
                let secrets = secrets_pb(mode);
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

/// A connection to the server that sends the bearer token, when there is one, with every call.
pub type ServerChannel = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <token>` to each request (nothing without a token).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

/// A connection to the server `client` names (TLS with `https://`), with errors that say what to
/// fix and never the token.
pub(crate) async fn connect(client: &ClientArgs) -> anyhow::Result<ServerChannel> {
    let server = &client.server;
    let bearer = bearer(&client.token_env)?;
    let mut endpoint = Channel::from_shared(server.clone())
        .with_context(|| format!("--server {server:?} is not a URL like http://127.0.0.1:50051"))?;
    if server.starts_with("https://") {
        endpoint = endpoint
            .tls_config(tls_config(client)?)
            .context("cannot set up TLS")?;
    } else if client.ca_file.is_some()
        || client.client_cert.is_some()
        || client.tls_server_name.is_some()
    {
        bail!("--ca-file, --client-cert and --tls-server-name need an https:// --server (got {server})");
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("{}", error_chain(&e)))
        .with_context(|| format!("cannot reach the server at {server}"))?;
    if bearer.0.is_some() && !server.starts_with("https://") && !is_loopback(server) {
        eprintln!(
            "warning: sending the token in ${} unencrypted to {server}: anyone on the path can \
             read it; serve TLS and use https://",
            client.token_env
        );
    }
    Ok(InterceptedService::new(channel, bearer))
}

/// Whether the URL's host is this machine (a token sent there in plaintext stays on it).
fn is_loopback(url: &str) -> bool {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(crate::is_loopback_host))
        .unwrap_or(false)
}

/// The token in `$var` (when set and not empty) as an authorization header.
fn bearer(var: &str) -> anyhow::Result<Bearer> {
    let Some(token) = std::env::var(var).ok().filter(|t| !t.is_empty()) else {
        return Ok(Bearer(None));
    };
    let value = format!("Bearer {}", token.trim()).parse().map_err(|_| {
        anyhow::anyhow!("the token in ${var} is not valid: it must be printable ASCII")
    })?;
    Ok(Bearer(Some(value)))
}

fn tls_config(client: &ClientArgs) -> anyhow::Result<ClientTlsConfig> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))
    };
    let mut tls = match &client.ca_file {
        Some(path) => {
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--ca-file", path)?))
        }
        None => ClientTlsConfig::new().with_webpki_roots(),
    };
    if let (Some(cert), Some(key)) = (&client.client_cert, &client.client_key) {
        tls = tls.identity(Identity::from_pem(
            read("--client-cert", cert)?,
            read("--client-key", key)?,
        ));
    }
    if let Some(name) = &client.tls_server_name {
        tls = tls.domain_name(name.clone());
    }
    Ok(tls)
}

/// An error and its causes on one line (tonic's own says only "transport error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

fn profiles_client(channel: &ServerChannel) -> ProfileServiceClient<ServerChannel> {
    ProfileServiceClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

fn conversations_client(channel: &ServerChannel) -> ConversationServiceClient<ServerChannel> {
    ConversationServiceClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

fn on_conflict_pb(c: OnConflict) -> pb::import_profiles_request::OnConflict {
    use pb::import_profiles_request::OnConflict as P;
    match c {
        OnConflict::Skip => P::Skip,
        OnConflict::Overwrite => P::Overwrite,
        OnConflict::Fail => P::Fail,
    }
}

pub(crate) fn status_error(s: tonic::Status) -> anyhow::Error {
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
    client: &mut ProfileServiceClient<ServerChannel>,
    docs: Vec<(String, String)>,
    key: Option<&FernetKey>,
    on_conflict: OnConflict,
    dry_run: bool,
) -> anyhow::Result<Vec<ImportReport>> {
    let on_conflict = on_conflict_pb(on_conflict);
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

/// The result of importing one conversation folder: its id, what happened and how many events,
/// or why it was refused.
pub type ConversationImport = Result<(String, Outcome, i64, String), String>;

impl Target {
    /// Imports one conversation folder's files.
    #[allow(clippy::too_many_arguments)]
    pub async fn import_conversation(
        &mut self,
        base_state: String,
        events: Vec<(String, String)>,
        key: Option<&FernetKey>,
        bind_profile: Option<&str>,
        on_conflict: OnConflict,
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
                    &**store,
                    &base_state,
                    &events,
                    key,
                    bind.as_ref(),
                    on_conflict.into(),
                    dry_run,
                    &Limits::default(),
                )
                .await;
                Ok(match result {
                    Ok((id, outcome, n)) => {
                        let (outcome, reason) = match outcome {
                            ImportOutcome::Created(_) => (Outcome::Created, String::new()),
                            ImportOutcome::Updated(_) => (Outcome::Updated, String::new()),
                            ImportOutcome::Unchanged(_) => (Outcome::Unchanged, String::new()),
                            ImportOutcome::Skipped(why) => (Outcome::Skipped, why),
                        };
                        Ok((
                            id.to_string(),
                            outcome,
                            i64::try_from(n).unwrap_or(i64::MAX),
                            reason,
                        ))
                    }
                    Err(TransferError::Invalid(v)) => Err(v
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")),
                    Err(TransferError::Store(e)) => Err(e.to_string()),
                })
            }
            Self::Remote(channel) => {
                let on_conflict = on_conflict_pb(on_conflict);
                let mut conversations = conversations_client(channel);
                let resp = conversations
                    .import_conversation(pb::ImportConversationRequest {
                        base_state_json: base_state,
                        events: events
                            .into_iter()
                            .map(|(name, json)| pb::ConversationFile { name, json })
                            .collect(),
                        on_conflict: on_conflict as i32,
                        fernet_key: key.map(|k| k.to_base64().to_owned()).unwrap_or_default(),
                        bind_profile: bind_profile.unwrap_or_default().to_owned(),
                        dry_run,
                    })
                    .await;
                Ok(match resp {
                    Ok(r) => {
                        let r = r.into_inner();
                        use pb::import_result::Outcome as O;
                        let outcome = match r.outcome() {
                            O::Created => Outcome::Created,
                            O::Updated => Outcome::Updated,
                            O::Unchanged => Outcome::Unchanged,
                            O::Skipped => Outcome::Skipped,
                            O::Invalid | O::Unspecified => Outcome::Invalid,
                        };
                        Ok((r.id, outcome, r.events, r.reason))
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
                        export_conversation_files(&**store, &id, secrets, profile_refs).await?;
                    out.push((id.simple(), base, files));
                }
                Self::Remote(channel) => {
                    let mut conversations = conversations_client(channel);
                    let r = conversations
                        .export_conversation(pb::ExportConversationRequest {
                            id: id.to_string(),
                            secrets: secrets_pb(mode) as i32,
                            fernet_key: key.map(|k| k.to_base64().to_owned()).unwrap_or_default(),
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
    Ok(match (mode, key) {
        (SecretsMode::Redacted, _) => SecretsOut::Redacted,
        (SecretsMode::Plaintext, _) => SecretsOut::Plaintext,
        (SecretsMode::Encrypted, Some(k)) => SecretsOut::Encrypted(k),
        (SecretsMode::Encrypted, None) => {
            bail!("--secrets encrypted needs the SDK's key: set the variable named by --fernet-key-env (OH_SECRET_KEY)")
        }
    })
}

fn secrets_pb(mode: SecretsMode) -> pb::export_profiles_request::Secrets {
    use pb::export_profiles_request::Secrets;
    match mode {
        SecretsMode::Redacted => Secrets::Redacted,
        SecretsMode::Plaintext => Secrets::Plaintext,
        SecretsMode::Encrypted => Secrets::Encrypted,
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_hosts_are_told_from_others() {
        for url in [
            "http://127.0.0.1:50051",
            "http://localhost:50051",
            "http://[::1]:50051",
            "http://127.8.9.10",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:50051",
            "http://profile-registry:50051",
            "http://[2001:db8::1]:50051",
            "http://localhost.example.com:50051",
            "not a url",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }
}
