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
use std::convert::Infallible;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use fs2::FileExt;
use futures::{FutureExt, StreamExt};
use tonic::Code;

use super::connection::{connect, status_error, ServerChannel};
use super::target::{export_request, Target, MAX_RESPONSE_BYTES};
use super::{fernet_key_from_env, interrupted, Usage};
use crate::config::SyncArgs;
use crate::domain::{ProfileName, SecretsMode};
use crate::openhands::folder::{
    create_private_dir, default_dir, read_text_file, Equivalent, FileState, ProfilesDir, Staging,
};
use crate::openhands::secrets::{same_when_decrypted, FernetKey};
use crate::pb;
use crate::pb::profile_service_client::ProfileServiceClient;

/// The file in the folder that lists the profile files the sync wrote (not `*.json`, so neither
/// the SDK nor `import` takes it for a profile).
pub const MANIFEST: &str = ".profile-registry-sync";
/// The lock a sync holds in its folder while it runs: one sync per folder.
pub const RUN_LOCK: &str = ".profile-registry-sync.lock";
/// A manifest listing 100,000 names fits well within this.
const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Export page size for the snapshot.
const PAGE: i32 = 1000;
/// Up to this many files, a write looks each up rather than listing the folder.
const FEW: usize = 32;

type Client = ProfileServiceClient<ServerChannel>;

/// Runs `sync`: once (`--once`), or until SIGTERM or Ctrl-C (then exit 0).
pub async fn run_sync(args: SyncArgs) -> anyhow::Result<bool> {
    let home = args
        .home
        .clone()
        .map(|h| h.unwrap_or_else(crate::openhands::folder::persistence_dir));
    let dir = match &home {
        Some(h) => h.join("profiles"),
        None => args.dir.clone().unwrap_or_else(default_dir),
    };
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
    let kinds_key = key.clone();
    let mut mirror = Mirror::new(dir, args.secrets, key, only);
    if args.once {
        let mut client = client(&args).await?;
        let done = mirror.resync(&mut client).await.map_err(|e| e.error)?;
        println!("{}: {}", mirror.dir.display(), done.summary());
        if let Some(home) = &home {
            let mut target = Target::Remote(connect(&args.client).await?);
            let done =
                super::home::mirror(&mut target, home, args.secrets, kinds_key.as_ref()).await?;
            println!("{}: {}", home.display(), done.summary());
        }
        return Ok(true);
    }
    let stop = interrupted();
    tokio::pin!(stop);
    let kinds = async {
        match &home {
            Some(home) => follow_kinds(&args, home, kinds_key.as_ref()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = &mut stop => {
            tracing::info!(dir = %mirror.dir.display(), "sync stopped");
            Ok(true)
        }
        ended = follow(&args, &mut mirror) => ended,
        ended = kinds => ended,
    }
}

/// With `--home`: compares the connections, meta-profiles and agent profiles with the registry
/// every `--poll-interval` and puts the differences in place; logs each change of state once.
async fn follow_kinds(
    args: &SyncArgs,
    home: &Path,
    key: Option<&FernetKey>,
) -> anyhow::Result<bool> {
    let mut target: Option<Target> = None;
    let mut last_error: Option<String> = None;
    let mut tick = tokio::time::interval(args.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = async {
            if target.is_none() {
                target = Some(Target::Remote(connect(&args.client).await?));
            }
            let t = target.as_mut().expect("connected above");
            super::home::mirror(t, home, args.secrets, key).await
        }
        .await;
        match result {
            Ok(done) => {
                if last_error.take().is_some() || done.changed() {
                    tracing::info!(home = %home.display(), "synced: {}", done.summary());
                }
            }
            Err(e) => {
                target = None;
                let message = format!("{e:#}");
                if last_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(home = %home.display(), "sync of connections, meta-profiles and agent profiles out of step: {message}; trying again");
                    last_error = Some(message);
                }
            }
        }
    }
}

async fn client(args: &SyncArgs) -> anyhow::Result<Client> {
    let channel = connect(&args.client).await?;
    Ok(ProfileServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES))
}

/// Why a session ended.
struct Ended {
    error: anyhow::Error,
    /// The server asked for a new watch (ABORTED, RESOURCE_EXHAUSTED on the stream).
    watch_again: bool,
    /// Retrying cannot help until someone changes something (a refused token, a second sync on
    /// the folder): before the first sync in step, the command exits instead of retrying.
    fatal: bool,
}

impl Ended {
    fn fatal(error: anyhow::Error) -> Self {
        Self {
            error,
            watch_again: false,
            fatal: true,
        }
    }
}

impl From<anyhow::Error> for Ended {
    fn from(error: anyhow::Error) -> Self {
        Self {
            error,
            watch_again: false,
            fatal: false,
        }
    }
}

impl From<io::Error> for Ended {
    fn from(error: io::Error) -> Self {
        anyhow::Error::new(error).into()
    }
}

impl From<tonic::Status> for Ended {
    fn from(status: tonic::Status) -> Self {
        let watch_again = matches!(status.code(), Code::Aborted | Code::ResourceExhausted);
        let fatal = matches!(
            status.code(),
            Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument
        );
        Self {
            error: status_error(status),
            watch_again,
            fatal,
        }
    }
}

/// Sessions, one after another, until an error that retrying cannot mend comes before the first
/// sync in step. Each session's end is logged when it differs from the last one logged; the next
/// session waits a backoff, except once right after a session in step that the server told to
/// watch again.
async fn follow(args: &SyncArgs, mirror: &mut Mirror) -> anyhow::Result<bool> {
    let mut backoff = MIN_BACKOFF;
    let mut last_logged: Option<String> = None;
    let mut ever_in_step = false;
    let mut quick_retry_used = false;
    loop {
        let mut in_step = false;
        let Err(ended) = session(args, mirror, &mut || in_step = true).await;
        if in_step {
            ever_in_step = true;
            backoff = MIN_BACKOFF;
            last_logged = None;
        }
        if ended.fatal && !ever_in_step {
            return Err(ended.error);
        }
        let message = format!("{:#}", ended.error);
        if last_logged.as_deref() != Some(message.as_str()) {
            tracing::warn!(
                server = %args.client.server,
                "sync out of step: {message}; trying again (every {} s at most)",
                MAX_BACKOFF.as_secs()
            );
            last_logged = Some(message);
        }
        let quick = ended.watch_again && in_step && !quick_retry_used;
        quick_retry_used = quick;
        if !quick {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// One session: subscribe, snapshot, follow, until it ends (it never ends well: the stream is
/// endless); `in_step` is called once the snapshot is written.
async fn session(
    args: &SyncArgs,
    mirror: &mut Mirror,
    in_step: &mut dyn FnMut(),
) -> Result<Infallible, Ended> {
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
            "{} profile{}, {} written{}, {} unchanged, {} deleted{}",
            self.profiles,
            if self.profiles == 1 { "" } else { "s" },
            self.written.len(),
            names(&self.written),
            self.profiles - self.written.len(),
            self.deleted.len(),
            names(&self.deleted)
        )
    }
}

/// The identity of a folder (device, inode): a folder deleted and made again is another one.
fn identity(dir: &Path) -> io::Result<(u64, u64)> {
    let meta = fs::metadata(dir)?;
    Ok((meta.dev(), meta.ino()))
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
    /// The run lock ([`RUN_LOCK`], one sync per folder) and the identity of the folder it is in.
    claim: Option<(fs::File, (u64, u64))>,
    /// Names whose file cannot be put in place (a folder in the way), warned about once each.
    blocked: BTreeSet<String>,
}

impl Mirror {
    fn new(
        dir: PathBuf,
        mode: SecretsMode,
        key: Option<FernetKey>,
        only: BTreeSet<String>,
    ) -> Self {
        Self {
            dir,
            mode,
            key: key.filter(|_| mode == SecretsMode::Encrypted),
            only,
            owned: BTreeSet::new(),
            claim: None,
            blocked: BTreeSet::new(),
        }
    }

    /// Creates the folder when missing and holds the run lock in it, reading its manifest; again
    /// when the folder was replaced. A second sync on the same folder is refused: each would
    /// delete the files the other wrote.
    fn claim(&mut self) -> Result<(), Ended> {
        create_private_dir(&self.dir)
            .with_context(|| format!("cannot create the profiles folder {}", self.dir.display()))?;
        let id = identity(&self.dir)
            .with_context(|| format!("cannot read the profiles folder {}", self.dir.display()))?;
        if self.claim.as_ref().is_some_and(|(_, held)| *held == id) {
            return Ok(());
        }
        let path = self.dir.join(RUN_LOCK);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if file.try_lock_exclusive().is_err() {
            return Err(Ended::fatal(anyhow::anyhow!(
                "another `profile-registry sync` keeps {} (it holds {RUN_LOCK}): one sync per folder",
                self.dir.display()
            )));
        }
        self.owned = read_manifest(&self.dir)?;
        self.claim = Some((file, id));
        Ok(())
    }

    fn wanted(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.contains(name)
    }

    /// Makes the folder equal to the registry: every profile written (or left when it already
    /// holds it), and the owned files of profiles that are gone (or no longer selected) deleted.
    async fn resync(&mut self, client: &mut Client) -> Result<Done, Ended> {
        self.claim()?;
        let docs = if self.only.is_empty() {
            self.export_all(client).await?
        } else {
            let names: Vec<String> = self.only.iter().cloned().collect();
            self.export_named(client, names).await?
        };
        let present: BTreeSet<&str> = docs.iter().map(|(n, _)| n.as_str()).collect();
        for name in self.only.iter().filter(|n| !present.contains(n.as_str())) {
            tracing::warn!(
                "--name {name}: the registry has no such profile (yet); its file appears when it is created"
            );
        }
        let gone = self
            .owned
            .iter()
            .filter(|n| !present.contains(n.as_str()))
            .cloned()
            .collect();
        self.write(docs, gone).await
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
        self.write(docs, gone.into_iter().map(|(n, _)| n).collect())
            .await
    }

    fn request(
        &self,
        names: Vec<String>,
        page_size: i32,
        page_token: String,
    ) -> pb::ExportProfilesRequest {
        export_request(names, self.mode, self.key.as_ref(), page_size, page_token)
    }

    /// Every profile's file. Not `Target::export_pages`, which words a refusal for a person: the
    /// sync needs the status code (a refused token ends it; a stale watch starts over).
    async fn export_all(&self, client: &mut Client) -> Result<Vec<(String, String)>, Ended> {
        let (mut docs, mut page_token) = (Vec::new(), String::new());
        loop {
            let page = client
                .export_profiles(self.request(Vec::new(), PAGE, page_token))
                .await?
                .into_inner();
            page_token = page.next_page_token.clone();
            docs.extend(documents(page));
            if page_token.is_empty() {
                return Ok(docs);
            }
        }
    }

    /// The files of `names`, a page of names a request, leaving out those that do not exist
    /// (deleted since: their DELETE event follows, or the folder never had them).
    async fn export_named(
        &self,
        client: &mut Client,
        names: Vec<String>,
    ) -> Result<Vec<(String, String)>, Ended> {
        let mut docs = Vec::new();
        for chunk in names.chunks(PAGE as usize) {
            match client
                .export_profiles(self.request(chunk.to_vec(), 0, String::new()))
                .await
            {
                Ok(resp) => docs.extend(documents(resp.into_inner())),
                Err(status) if status.code() == Code::NotFound => {
                    for name in chunk {
                        match client
                            .export_profiles(self.request(vec![name.clone()], 0, String::new()))
                            .await
                        {
                            Ok(resp) => docs.extend(documents(resp.into_inner())),
                            Err(status) if status.code() == Code::NotFound => {}
                            Err(status) => return Err(status.into()),
                        }
                    }
                }
                Err(status) => return Err(status.into()),
            }
        }
        Ok(docs)
    }

    /// Under the SDK's lock: puts `docs` in place (a file that holds its profile is left as it
    /// is), then deletes the owned files among `gone`. The manifest is saved before files are put
    /// in place and after files are deleted, so it always lists every file the sync wrote.
    async fn write(
        &mut self,
        docs: Vec<(String, String)>,
        gone: Vec<String>,
    ) -> Result<Done, Ended> {
        let mut done = Done::default();
        if docs.is_empty() && !gone.iter().any(|n| self.owned.contains(n)) {
            return Ok(done);
        }
        let _folder = ProfilesDir::lock_async(&self.dir, true)
            .await
            .with_context(|| format!("cannot write the profiles folder {}", self.dir.display()))?;
        // Deleted (and perhaps made again) under us: the files and the manifest went with it.
        let replaced = identity(&self.dir)
            .ok()
            .zip(self.claim.as_ref().map(|(_, id)| *id))
            .is_none_or(|(now, held)| now != held);
        if replaced {
            self.claim = None;
            return Err(anyhow::anyhow!(
                "{} was deleted or replaced while the sync kept it; writing it again",
                self.dir.display()
            )
            .into());
        }
        let key = self.key.clone();
        let decrypted =
            key.map(|key| move |have: &str, want: &str| same_when_decrypted(have, want, &key));
        let equivalent = decrypted.as_ref().map(|f| f as &Equivalent);
        // A batch of changes looks up its few files; a snapshot lists the folder once.
        let mut staging = if docs.len() <= FEW {
            Staging::few(&self.dir)
        } else {
            Staging::new(&self.dir)
        };
        let mut owned = self.owned.clone();
        for (name, text) in docs {
            // The server names only valid profiles; a name that is not one never becomes a path.
            if ProfileName::parse(&name, "name").is_err() {
                tracing::warn!(name = %name.escape_debug(), "the server sent a profile name that is not one; skipped");
                continue;
            }
            let file = format!("{name}.json");
            if staging.compare(&file, &text, equivalent)? == FileState::Same {
                done.profiles += 1;
                continue;
            }
            match staging.stage(file, &text) {
                Ok(()) => {
                    self.blocked.remove(&name);
                    done.profiles += 1;
                    done.written.push(name.clone());
                    owned.insert(name);
                }
                // A folder in a profile's place: that file waits, the others go on.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if self.blocked.insert(name) {
                        tracing::warn!(dir = %self.dir.display(), "{e}");
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.save_manifest(owned)?;
        if !staging.is_empty() {
            staging.commit(&|_| {})?;
        }
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

    /// Saves the manifest when it changes, or when it went missing.
    fn save_manifest(&mut self, owned: BTreeSet<String>) -> anyhow::Result<()> {
        let path = self.dir.join(MANIFEST);
        if owned != self.owned || fs::symlink_metadata(&path).is_err() {
            write_manifest(&self.dir, &owned)
                .with_context(|| format!("cannot write {}", path.display()))?;
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

/// The profile names in the folder's manifest; none when it has none. Entries that are not
/// `<valid profile name>.json` are dropped with a warning: the manifest lies in a folder others
/// can write, and its names become paths to delete.
pub(super) fn read_manifest(dir: &Path) -> anyhow::Result<BTreeSet<String>> {
    let path = dir.join(MANIFEST);
    if fs::symlink_metadata(&path).is_err() {
        return Ok(BTreeSet::new());
    }
    let text = read_text_file(&path, MAX_MANIFEST_BYTES, false)
        .map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not the sync's manifest (JSON)", path.display()))?;
    let files = value
        .get("files")
        .and_then(|f| f.as_array())
        .with_context(|| format!("{}: no \"files\" list", path.display()))?;
    let mut names = BTreeSet::new();
    for file in files {
        let name = file
            .as_str()
            .and_then(|f| f.strip_suffix(".json"))
            .and_then(|n| ProfileName::parse(n, "name").ok());
        match name {
            Some(name) => {
                names.insert(name.to_string());
            }
            None => tracing::warn!(
                manifest = %path.display(),
                "an entry that is not `<profile name>.json` was dropped: {}",
                file.to_string().escape_debug()
            ),
        }
    }
    Ok(names)
}

/// Writes the manifest atomically (temp file, fsync, rename).
pub(super) fn write_manifest(dir: &Path, owned: &BTreeSet<String>) -> io::Result<()> {
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
