//! The folder side of `sync`: the [`Mirror`] of one profiles folder (its manifest of the files the
//! sync wrote, its run lock, the writes and deletes that bring it to the registry's state).
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use fs2::FileExt;
use tonic::Code;

use super::outcome::{Client, Done, Ended};
use crate::cli::target::export_request;
use crate::domain::{ProfileName, SecretsMode};
use crate::openhands::folder::{
    create_private_dir, read_text_file, Equivalent, FileState, ProfilesDir, Staging,
};
use crate::openhands::secrets::{same_when_decrypted, FernetKey};
use crate::pb;

/// The file in the folder that lists the profile files the sync wrote (not `*.json`, so neither
/// the SDK nor `import` takes it for a profile).
pub const MANIFEST: &str = ".profile-registry-sync";
/// The lock a sync holds in its folder while it runs: one sync per folder.
pub const RUN_LOCK: &str = ".profile-registry-sync.lock";
/// A manifest listing 100,000 names fits well within this.
const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;
/// Export page size for the snapshot.
const PAGE: i32 = 1000;
/// Up to this many files, a write looks each up rather than listing the folder.
const FEW: usize = 32;

/// The identity of a folder (device, inode): a folder deleted and made again is another one.
fn identity(dir: &Path) -> io::Result<(u64, u64)> {
    let meta = fs::metadata(dir)?;
    Ok((meta.dev(), meta.ino()))
}

/// The folder and what the sync knows of it.
pub(super) struct Mirror {
    pub(super) dir: PathBuf,
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
    pub(super) fn new(
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
    pub(super) async fn resync(&mut self, client: &mut Client) -> Result<Done, Ended> {
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
    pub(super) async fn apply(
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

pub(super) fn documents(resp: pb::ExportProfilesResponse) -> Vec<(String, String)> {
    resp.documents
        .into_iter()
        .map(|d| (d.name, d.json))
        .collect()
}

/// The profile names in the folder's manifest; none when it has none. Entries that are not
/// `<valid profile name>.json` are dropped with a warning: the manifest lies in a folder others
/// can write, and its names become paths to delete.
pub fn read_manifest(dir: &Path) -> anyhow::Result<BTreeSet<String>> {
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
pub fn write_manifest(dir: &Path, owned: &BTreeSet<String>) -> io::Result<()> {
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
