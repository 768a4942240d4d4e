//! `profile-registry sync DIR`: keeps an SDK profiles folder equal to the registry while it runs,
//! so that a runtime that only reads files (the SDK's `LLMProfileStore`) follows the registry.
//!
//! One session: subscribe to WatchProfiles, then export every profile (the snapshot), then apply
//! each batch of changes as it arrives. Subscribing before the snapshot leaves no gap: a change
//! made while the snapshot is read arrives on the stream too. The snapshot is an export rather
//! than the watch's own initial events because watch events carry masked profiles, while the files
//! must be exactly what `export` writes in the chosen secrets mode.
//!
//! Files are written as `export` writes them (the SDK's `.profiles.lock`, a temp file, a rename);
//! one that already holds its profile is left untouched. The sync deletes only files it wrote
//! itself: their names are kept in the folder's manifest [`MANIFEST`], saved before a file is put
//! in place and after one is deleted, so a crash never leaves a written file unowned.
//!
//! When the stream ends (a restart, a rolling update, a lagging watch told to watch again), the
//! session starts over after a backoff; each state change is logged once.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::{FutureExt, StreamExt};
use tonic::Code;

use super::connection::{connect, status_error, ServerChannel};
use super::target::MAX_RESPONSE_BYTES;
use super::{fernet_key_from_env, interrupted, Usage};
use crate::config::SyncArgs;
use crate::domain::{ProfileName, SecretsMode};
use crate::openhands::folder::{default_dir, Equivalent, FileState, ProfilesDir, Staging};
use crate::openhands::secrets::{same_when_decrypted, FernetKey};
use crate::pb;
use crate::pb::profile_service_client::ProfileServiceClient;

/// The file in the folder that lists the profile files the sync wrote (not `*.json`, so neither
/// the SDK nor `import` takes it for a profile).
pub const MANIFEST: &str = ".profile-registry-sync";

/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Export page size for the snapshot.
const PAGE: i32 = 1000;

type Client = ProfileServiceClient<ServerChannel>;

/// Runs `sync`: once (`--once`), or until SIGTERM or Ctrl-C (then exit 0).
pub async fn run_sync(args: SyncArgs) -> anyhow::Result<bool> {
    let dir = args.dir.clone().unwrap_or_else(default_dir);
    let key = fernet_key_from_env(&args.fernet_key_env);
    if args.secrets == SecretsMode::Encrypted && key.is_none() {
        return Err(anyhow::Error::new(Usage(format!(
            "--secrets encrypted needs the SDK's key: set ${} (--fernet-key-env)",
            args.fernet_key_env
        ))));
    }
    let mut only = BTreeSet::new();
    for name in &args.names {
        let parsed = ProfileName::parse(name, "--name")
            .map_err(|v| anyhow::Error::new(Usage(v.to_string())))?;
        only.insert(parsed.to_string());
    }
    let mut mirror = Mirror::open(dir, args.secrets, key, only)?;
    if args.once {
        let mut client = client(&args).await?;
        let done = mirror.resync(&mut client).await.map_err(|e| e.error)?;
        println!("{}: {}", mirror.dir.display(), done.summary());
        return Ok(true);
    }
    let stop = interrupted();
    tokio::pin!(stop);
    tokio::select! {
        () = &mut stop => {
            tracing::info!(dir = %mirror.dir.display(), "sync stopped");
            Ok(true)
        }
        never = follow(&args, &mut mirror) => match never {},
    }
}

async fn client(args: &SyncArgs) -> anyhow::Result<Client> {
    let channel = connect(&args.client).await?;
    Ok(ProfileServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES))
}

/// Why a session ended.
struct Ended {
    error: anyhow::Error,
    /// The server asked for a new watch (ABORTED, RESOURCE_EXHAUSTED): start over at once.
    again_now: bool,
}

impl From<anyhow::Error> for Ended {
    fn from(error: anyhow::Error) -> Self {
        Self {
            error,
            again_now: false,
        }
    }
}

impl From<tonic::Status> for Ended {
    fn from(status: tonic::Status) -> Self {
        let again_now = matches!(status.code(), Code::Aborted | Code::ResourceExhausted);
        Self {
            error: status_error(status),
            again_now,
        }
    }
}

/// Sessions, one after another, forever: each ends with an error that is logged when it differs
/// from the last one logged, then a backoff.
async fn follow(args: &SyncArgs, mirror: &mut Mirror) -> std::convert::Infallible {
    let mut backoff = MIN_BACKOFF;
    let mut last_logged: Option<String> = None;
    loop {
        let ended = session(args, mirror, &mut || {
            backoff = MIN_BACKOFF;
            last_logged = None;
        })
        .await;
        let message = format!("{:#}", ended.error);
        if last_logged.as_deref() != Some(message.as_str()) {
            tracing::warn!(
                server = %args.client.server,
                "sync out of step: {message}; trying again (every {} s at most)",
                MAX_BACKOFF.as_secs()
            );
            last_logged = Some(message);
        }
        if !ended.again_now {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// One session: subscribe, snapshot, follow; `in_step` is called once the snapshot is written.
async fn session(args: &SyncArgs, mirror: &mut Mirror, in_step: &mut dyn FnMut()) -> Ended {
    let result: Result<std::convert::Infallible, Ended> = async {
        let mut client = client(args).await?;
        let mut stream = client
            .watch_profiles(pb::WatchProfilesRequest {
                send_initial: false,
            })
            .await?
            .into_inner();
        let done = mirror.resync(&mut client).await?;
        tracing::info!(
            server = %args.client.server,
            dir = %mirror.dir.display(),
            "sync in step: {}",
            done.summary()
        );
        in_step();
        loop {
            let Some(first) = stream.next().await else {
                return Err(anyhow::anyhow!("the server ended the stream").into());
            };
            // Whatever else has already arrived goes in the same batch: one lock, one sync.
            let mut batch = vec![first?];
            while let Some(Some(next)) = stream.next().now_or_never() {
                batch.push(next?);
            }
            let done = mirror.apply(&mut client, batch).await?;
            if done.changed() {
                tracing::info!(dir = %mirror.dir.display(), "synced: {}", done.summary());
            }
        }
    }
    .await;
    match result {
        Err(ended) => ended,
        Ok(never) => match never {},
    }
}

/// What one pass did to the folder.
#[derive(Debug, Default)]
struct Done {
    /// Profiles mirrored (written or unchanged).
    profiles: usize,
    written: Vec<String>,
    deleted: Vec<String>,
}

impl Done {
    fn changed(&self) -> bool {
        !self.written.is_empty() || !self.deleted.is_empty()
    }

    fn summary(&self) -> String {
        let names = |v: &[String]| {
            if v.is_empty() || v.len() > 10 {
                String::new()
            } else {
                format!(" ({})", v.join(", "))
            }
        };
        format!(
            "{} profiles, {} written{}, {} unchanged, {} deleted{}",
            self.profiles,
            self.written.len(),
            names(&self.written),
            self.profiles - self.written.len(),
            self.deleted.len(),
            names(&self.deleted)
        )
    }
}

/// The folder and what the sync knows of it.
struct Mirror {
    dir: PathBuf,
    mode: SecretsMode,
    key: Option<FernetKey>,
    /// `--name`: mirror only these (empty: all).
    only: BTreeSet<String>,
    /// The names whose files the sync wrote (the manifest).
    owned: BTreeSet<String>,
}

impl Mirror {
    fn open(
        dir: PathBuf,
        mode: SecretsMode,
        key: Option<FernetKey>,
        only: BTreeSet<String>,
    ) -> anyhow::Result<Self> {
        // Creates the folder (mode 0700) and checks that it can be locked.
        drop(
            ProfilesDir::lock(&dir, true)
                .with_context(|| format!("cannot write the profiles folder {}", dir.display()))?,
        );
        let owned = read_manifest(&dir)?;
        Ok(Self {
            dir,
            mode,
            key: key.filter(|_| mode == SecretsMode::Encrypted),
            only,
            owned,
        })
    }

    fn wanted(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.contains(name)
    }

    /// Makes the folder equal to the registry: every profile written (or left when it already
    /// holds it), and the owned files of profiles that are gone deleted.
    async fn resync(&mut self, client: &mut Client) -> Result<Done, Ended> {
        let docs = if self.only.is_empty() {
            self.export_all(client).await?
        } else {
            let names: Vec<String> = self.only.iter().cloned().collect();
            self.export_named(client, names).await?
        };
        let present: BTreeSet<&str> = docs.iter().map(|(n, _)| n.as_str()).collect();
        let gone = self
            .owned
            .iter()
            .filter(|n| !present.contains(n.as_str()))
            .cloned()
            .collect();
        Ok(self.write(docs, gone)?)
    }

    /// Applies a batch of watch events: the last event of each name decides.
    async fn apply(
        &mut self,
        client: &mut Client,
        events: Vec<pb::ProfileEvent>,
    ) -> Result<Done, Ended> {
        let mut last = BTreeMap::new();
        for e in events {
            if self.wanted(&e.name) {
                let deleted = e.r#type() == pb::profile_event::Type::Delete;
                last.insert(e.name, deleted);
            }
        }
        let (gone, put): (Vec<_>, Vec<_>) = last.into_iter().partition(|(_, deleted)| *deleted);
        let put = put.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        let docs = if put.is_empty() {
            Vec::new()
        } else {
            self.export_named(client, put).await?
        };
        Ok(self.write(docs, gone.into_iter().map(|(n, _)| n).collect())?)
    }

    fn request(
        &self,
        names: Vec<String>,
        page_size: i32,
        page_token: String,
    ) -> pb::ExportProfilesRequest {
        pb::ExportProfilesRequest {
            names,
            secrets: pb::export_profiles_request::Secrets::from(self.mode) as i32,
            fernet_key: self
                .key
                .as_ref()
                .map(|k| k.to_base64().to_owned())
                .unwrap_or_default(),
            page_size,
            page_token,
        }
    }

    async fn export_all(&self, client: &mut Client) -> Result<Vec<(String, String)>, Ended> {
        let (mut docs, mut page_token) = (Vec::new(), String::new());
        loop {
            let page = client
                .export_profiles(self.request(Vec::new(), PAGE, page_token))
                .await?
                .into_inner();
            docs.extend(page.documents.into_iter().map(|d| (d.name, d.json)));
            if page.next_page_token.is_empty() {
                return Ok(docs);
            }
            page_token = page.next_page_token;
        }
    }

    /// The files of `names`, leaving out those that do not exist (deleted since: their DELETE
    /// event follows, or the folder never had them).
    async fn export_named(
        &self,
        client: &mut Client,
        names: Vec<String>,
    ) -> Result<Vec<(String, String)>, Ended> {
        match client
            .export_profiles(self.request(names.clone(), 0, String::new()))
            .await
        {
            Ok(resp) => Ok(documents(resp.into_inner())),
            Err(status) if status.code() == Code::NotFound => {
                let mut docs = Vec::new();
                for name in names {
                    match client
                        .export_profiles(self.request(vec![name], 0, String::new()))
                        .await
                    {
                        Ok(resp) => docs.extend(documents(resp.into_inner())),
                        Err(status) if status.code() == Code::NotFound => {}
                        Err(status) => return Err(status.into()),
                    }
                }
                Ok(docs)
            }
            Err(status) => Err(status.into()),
        }
    }

    /// Under the SDK's lock: puts `docs` in place (a file that holds its profile is left as it
    /// is), then deletes the owned files among `gone`, keeping the manifest ahead of the files.
    fn write(&mut self, docs: Vec<(String, String)>, gone: Vec<String>) -> anyhow::Result<Done> {
        let _folder = ProfilesDir::lock(&self.dir, true)
            .with_context(|| format!("cannot write the profiles folder {}", self.dir.display()))?;
        let key = self.key.clone();
        let decrypted =
            key.map(|key| move |have: &str, want: &str| same_when_decrypted(have, want, &key));
        let equivalent = decrypted.as_ref().map(|f| f as &Equivalent);
        let mut staging = Staging::new(&self.dir);
        let mut done = Done {
            profiles: docs.len(),
            ..Done::default()
        };
        let mut owned = self.owned.clone();
        for (name, text) in docs {
            let file = format!("{name}.json");
            if staging.compare(&file, &text, equivalent)? != FileState::Same {
                staging.stage(file, &text)?;
                done.written.push(name.clone());
            }
            owned.insert(name);
        }
        self.save_manifest(owned)?;
        staging.commit(&|_| {})?;
        let mut owned = self.owned.clone();
        for name in gone {
            if !owned.remove(&name) {
                continue;
            }
            let path = self.dir.join(format!("{name}.json"));
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_file() => {
                    fs::remove_file(&path)
                        .with_context(|| format!("cannot delete {}", path.display()))?;
                    done.deleted.push(name);
                }
                // Gone already, or replaced by something that is not the file the sync wrote.
                _ => {}
            }
        }
        self.save_manifest(owned)?;
        Ok(done)
    }

    fn save_manifest(&mut self, owned: BTreeSet<String>) -> anyhow::Result<()> {
        if owned != self.owned {
            write_manifest(&self.dir, &owned)
                .with_context(|| format!("cannot write {}", self.dir.join(MANIFEST).display()))?;
            self.owned = owned;
        }
        Ok(())
    }
}

fn documents(resp: pb::ExportProfilesResponse) -> Vec<(String, String)> {
    resp.documents
        .into_iter()
        .map(|d| (d.name, d.json))
        .collect()
}

/// The names in the folder's manifest; none when it has none.
fn read_manifest(dir: &Path) -> anyhow::Result<BTreeSet<String>> {
    let path = dir.join(MANIFEST);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not the sync's manifest (JSON)", path.display()))?;
    let names = value
        .get("files")
        .and_then(|f| f.as_array())
        .with_context(|| format!("{}: no \"files\" list", path.display()))?;
    Ok(names
        .iter()
        .filter_map(|n| n.as_str())
        .filter_map(|n| n.strip_suffix(".json"))
        .map(str::to_owned)
        .collect())
}

/// Writes the manifest atomically (temp file, fsync, rename).
fn write_manifest(dir: &Path, owned: &BTreeSet<String>) -> io::Result<()> {
    let files: Vec<String> = owned.iter().map(|n| format!("{n}.json")).collect();
    let text = serde_json::json!({
        "about": "the profile files `profile-registry sync` wrote here; it deletes only these",
        "files": files,
    });
    let mut tmp = tempfile::Builder::new()
        .prefix("tmp")
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(format!("{text:#}\n").as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(MANIFEST)).map_err(|e| e.error)?;
    Ok(())
}
