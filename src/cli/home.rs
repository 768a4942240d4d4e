//! `import --home` and `export --home`: the SDK's other kinds of file beside `profiles/` in its
//! persistence folder (provider connections, meta-profiles, agent profiles), moved with the same
//! options as profiles, through a server or a data dir opened directly.
use std::path::Path;

use anyhow::Context;

use super::connection::{status_error, ServerChannel};
use super::target::{Target, MAX_RESPONSE_BYTES};
use super::{fernet_key_field, file_messages};
use crate::app::documents as docs;
use crate::app::Limits;
use crate::domain::{ConflictPolicy, DocKind, ImportOutcome, ProfileName, SecretsMode};
use crate::openhands::folder::{write_files, ProfilesDir, Refused};
use crate::openhands::secrets::same_when_decrypted;
use crate::openhands::secrets::FernetKey;
use crate::openhands::{agent_profiles, connections, meta_profiles};
use crate::pb;
use crate::pb::agent_profile_service_client::AgentProfileServiceClient;
use crate::pb::meta_profile_service_client::MetaProfileServiceClient;
use crate::pb::provider_connection_service_client::ProviderConnectionServiceClient;

/// The folder of a per-file kind inside the persistence folder.
fn folder(kind: DocKind) -> &'static str {
    match kind {
        DocKind::MetaProfile => meta_profiles::DIR_NAME,
        DocKind::AgentProfile => agent_profiles::DIR_NAME,
        DocKind::Connection => "provider-connections",
    }
}

fn connections_client(c: &ServerChannel) -> ProviderConnectionServiceClient<ServerChannel> {
    ProviderConnectionServiceClient::new(c.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// Files as (file name, text).
type Files = Vec<(String, String)>;

/// The files of `dir` the SDK's store lists: `<name>.json` with a valid name (hidden files, the
/// SDK's lock and temp files, and other names are passed over, as the SDK passes them over).
/// Returns the (file name, text) of each, and the files that could not be read as text.
fn read_json_files(dir: &Path, max: usize) -> anyhow::Result<(Files, Vec<Refused>)> {
    let (mut out, mut refused) = (Vec::new(), Vec::new());
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((out, refused)),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        // Followed like the SDK follows them: a symbolic link to a file is that file.
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if !meta.is_file() || ProfileName::parse(stem, "name").is_err() {
            continue;
        }
        if meta.len() > max as u64 {
            let reason = format!("is {} bytes, over the limit of {max} bytes", meta.len());
            refused.push(Refused { file: name, reason });
            continue;
        }
        let bytes = std::fs::read(entry.path())
            .with_context(|| format!("cannot read {}", entry.path().display()))?;
        match String::from_utf8(bytes) {
            Ok(text) => out.push((name, text)),
            Err(_) => refused.push(Refused {
                file: name,
                reason: "is not UTF-8 text".into(),
            }),
        }
    }
    out.sort();
    Ok((out, refused))
}

/// Imports the other kinds found in `home`; prints a summary per kind; whether all went in.
pub async fn import(
    target: &mut Target,
    home: &Path,
    key: Option<&FernetKey>,
    policy: ConflictPolicy,
    dry_run: bool,
) -> anyhow::Result<bool> {
    let mut ok = true;
    let path = home
        .join(folder(DocKind::Connection))
        .join(connections::FILE_NAME);
    if path.is_file() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let reports = match target {
            Target::Local(store) => {
                docs::import_connections(store, &text, key, policy, dry_run, false).await?
            }
            Target::Remote(channel) => {
                let req = pb::ImportProviderConnectionsRequest {
                    json: text,
                    on_conflict: pb::import_profiles_request::OnConflict::from(policy) as i32,
                    fernet_key: fernet_key_field(key),
                    dry_run,
                };
                let resp = connections_client(channel)
                    .import_provider_connections(req)
                    .await
                    .map_err(status_error)?;
                outcomes(resp.into_inner())
            }
        };
        ok &= super::output::print_import_summary(&path, &reports, &[], dry_run);
    }
    let limits = Limits::default();
    for kind in [DocKind::MetaProfile, DocKind::AgentProfile] {
        let dir = home.join(folder(kind));
        if !dir.is_dir() {
            continue;
        }
        let (files, refused) = read_json_files(&dir, docs::max_file_bytes(kind, &limits))?;
        let reports = match target {
            Target::Local(store) => {
                docs::import_files(store, kind, files, policy, dry_run, &limits).await?
            }
            Target::Remote(channel) => {
                let req = pb::ImportDocumentsRequest {
                    documents: file_messages(files, |name, json| pb::ProfileDocument {
                        name,
                        json,
                    }),
                    on_conflict: pb::import_profiles_request::OnConflict::from(policy) as i32,
                    dry_run,
                };
                let resp = match kind {
                    DocKind::MetaProfile => {
                        MetaProfileServiceClient::new(channel.clone())
                            .import_meta_profiles(req)
                            .await
                    }
                    _ => {
                        AgentProfileServiceClient::new(channel.clone())
                            .import_agent_profiles(req)
                            .await
                    }
                };
                outcomes(resp.map_err(status_error)?.into_inner())
            }
        };
        ok &= super::output::print_import_summary(&dir, &reports, &refused, dry_run);
    }
    Ok(ok)
}

fn outcomes(resp: pb::ImportProfilesResponse) -> Vec<ImportOutcome> {
    resp.results.into_iter().map(ImportOutcome::from).collect()
}

/// The lock file of a kind's folder, as the SDK's store names it.
fn lock_file(kind: DocKind) -> &'static str {
    match kind {
        DocKind::Connection => ".provider-connections.lock",
        DocKind::MetaProfile => ".meta-profiles.lock",
        DocKind::AgentProfile => ".agent-profiles.lock",
    }
}

/// One kind's files to put in its folder.
struct KindExport {
    kind: DocKind,
    noun: &'static str,
    dir: std::path::PathBuf,
    count: usize,
    files: Vec<(String, String)>,
}

/// The files of `kind` from the target, as (file name, text), and how many records they hold.
async fn fetch(
    target: &mut Target,
    kind: DocKind,
    mode: SecretsMode,
    key: Option<&FernetKey>,
) -> anyhow::Result<(Vec<(String, String)>, usize)> {
    if kind == DocKind::Connection {
        let (text, count) = match target {
            Target::Local(store) => {
                let secrets = crate::openhands::profile::SecretsOut::of(mode, key)
                    .context("--secrets encrypted needs the SDK's key (--fernet-key-env)")?;
                docs::export_connections(store, &secrets).await?
            }
            Target::Remote(channel) => {
                let req = pb::ExportProviderConnectionsRequest {
                    secrets: pb::export_profiles_request::Secrets::from(mode) as i32,
                    fernet_key: fernet_key_field(key),
                };
                let resp = connections_client(channel)
                    .export_provider_connections(req)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                (resp.json, usize::try_from(resp.count).unwrap_or(0))
            }
        };
        return Ok((vec![(connections::FILE_NAME.to_owned(), text)], count));
    }
    let files = match target {
        Target::Local(store) => docs::export_files(store, kind, &[]).await?,
        Target::Remote(channel) => {
            let req = pb::ExportDocumentsRequest { names: Vec::new() };
            let resp = match kind {
                DocKind::MetaProfile => {
                    MetaProfileServiceClient::new(channel.clone())
                        .max_decoding_message_size(MAX_RESPONSE_BYTES)
                        .export_meta_profiles(req)
                        .await
                }
                _ => {
                    AgentProfileServiceClient::new(channel.clone())
                        .max_decoding_message_size(MAX_RESPONSE_BYTES)
                        .export_agent_profiles(req)
                        .await
                }
            };
            resp.map_err(status_error)?
                .into_inner()
                .documents
                .into_iter()
                .map(|d| (d.name, d.json))
                .collect()
        }
    };
    let n = files.len();
    let files = files
        .into_iter()
        .map(|(name, text)| (format!("{name}.json"), text))
        .collect();
    Ok((files, n))
}

/// Exports the other kinds into `home`, each file as the SDK writes it (a temp file renamed into
/// place, mode 0600), holding each folder's SDK lock; prints a line per kind. A file that already
/// holds its record (for encrypted keys: decrypts to the same) is left as it is; one that differs
/// is replaced, kept or, with `fail`, stops the whole export before anything is written. Returns
/// whether there was no conflict.
pub async fn export(
    target: &mut Target,
    home: &Path,
    mode: SecretsMode,
    key: Option<&FernetKey>,
    policy: ConflictPolicy,
    dry_run: bool,
) -> anyhow::Result<bool> {
    let mut kinds = Vec::new();
    for (kind, noun) in [
        (DocKind::Connection, "provider connections"),
        (DocKind::MetaProfile, "meta-profiles"),
        (DocKind::AgentProfile, "agent profiles"),
    ] {
        let (files, count) = fetch(target, kind, mode, key).await?;
        let dir = home.join(folder(kind));
        kinds.push(KindExport {
            kind,
            noun,
            dir,
            count,
            files,
        });
    }
    let decrypting = key.filter(|_| mode == SecretsMode::Encrypted);
    let same = |have: &str, want: &str| {
        have == want || decrypting.is_some_and(|k| same_when_decrypted(have, want, k))
    };
    // (kind index, file name, absent): the files that are not already what the registry holds.
    let mut differing = Vec::new();
    for (i, k) in kinds.iter().enumerate() {
        if k.count == 0 {
            continue;
        }
        for (name, text) in &k.files {
            match std::fs::read_to_string(k.dir.join(name)) {
                Ok(have) if same(&have, text) => {}
                Ok(_) => differing.push((i, name.clone(), false)),
                Err(_) => differing.push((i, name.clone(), true)),
            }
        }
    }
    let conflicts: Vec<_> = differing.iter().filter(|(_, _, absent)| !absent).collect();
    if policy == ConflictPolicy::Fail && !conflicts.is_empty() {
        for (i, name, _) in &conflicts {
            eprintln!(
                "CONFLICT {}: differs from the registry's; nothing was written (--on-conflict fail)",
                kinds[*i].dir.join(name).display()
            );
        }
        return Ok(false);
    }
    for (i, k) in kinds.iter().enumerate() {
        if k.count == 0 {
            continue;
        }
        let mine = differing.iter().filter(|(j, _, _)| *j == i);
        let (mut write, mut skipped) = (Vec::new(), 0);
        for (_, name, absent) in mine {
            if *absent || policy == ConflictPolicy::Overwrite {
                let text = &k.files.iter().find(|(n, _)| n == name).expect("listed").1;
                write.push((name.clone(), text.as_str()));
            } else {
                skipped += 1;
                eprintln!(
                    "SKIPPED {}: differs from the registry's; kept (--on-conflict skip)",
                    k.dir.join(name).display()
                );
            }
        }
        if !dry_run && !write.is_empty() {
            let dir = ProfilesDir::lock_named(&k.dir, true, lock_file(k.kind))
                .with_context(|| format!("cannot write the folder {}", k.dir.display()))?;
            write_files(dir.path(), &write, &|_| {})
                .with_context(|| format!("cannot write into {}", k.dir.display()))?;
        }
        println!(
            "{}{}: exported {} {} (secrets {}; {} files written, {} unchanged, {skipped} skipped)",
            if dry_run {
                "dry run, nothing written: "
            } else {
                ""
            },
            k.dir.display(),
            k.count,
            k.noun,
            mode.as_str(),
            write.len(),
            k.files.len() - write.len() - skipped,
        );
    }
    Ok(true)
}

/// What one [`mirror`] pass did.
#[derive(Debug, Default)]
pub struct Mirrored {
    /// Records mirrored, of all three kinds.
    pub records: usize,
    /// Files written (`<folder>/<file>`).
    pub written: Vec<String>,
    /// Files deleted (`<folder>/<file>`).
    pub deleted: Vec<String>,
}

impl Mirrored {
    /// Whether any file changed.
    pub fn changed(&self) -> bool {
        !self.written.is_empty() || !self.deleted.is_empty()
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        format!(
            "{} connections, meta-profiles and agent profiles; files written: {}; deleted: {}",
            self.records,
            if self.written.is_empty() {
                "none".to_owned()
            } else {
                self.written.join(", ")
            },
            if self.deleted.is_empty() {
                "none".to_owned()
            } else {
                self.deleted.join(", ")
            },
        )
    }
}

/// Makes `home`'s connections, meta-profiles and agent profiles folders equal to the registry,
/// as `sync` does for profiles: files written as `export` writes them, under each folder's SDK
/// lock; a file already right is left alone; only files this sync wrote (listed in the folder's
/// sync manifest) are ever deleted.
pub async fn mirror(
    target: &mut Target,
    home: &Path,
    mode: SecretsMode,
    key: Option<&FernetKey>,
) -> anyhow::Result<Mirrored> {
    use super::sync::mirror::{read_manifest, write_manifest};
    let decrypting = key.filter(|_| mode == SecretsMode::Encrypted);
    let same = |have: &str, want: &str| {
        have == want || decrypting.is_some_and(|k| same_when_decrypted(have, want, k))
    };
    let mut done = Mirrored::default();
    for kind in [
        DocKind::Connection,
        DocKind::MetaProfile,
        DocKind::AgentProfile,
    ] {
        let (files, count) = fetch(target, kind, mode, key).await?;
        done.records += count;
        let dir_path = home.join(folder(kind));
        let dir = ProfilesDir::lock_named(&dir_path, true, lock_file(kind))
            .with_context(|| format!("cannot write the folder {}", dir_path.display()))?;
        let owned = read_manifest(dir.path())?;
        let stem = |f: &str| f.strip_suffix(".json").unwrap_or(f).to_owned();
        let wanted: std::collections::BTreeSet<String> =
            files.iter().map(|(f, _)| stem(f)).collect();
        // An empty connections file is written only where this sync wrote one before.
        let files: Vec<_> = if kind == DocKind::Connection && count == 0 {
            files
                .into_iter()
                .filter(|(f, _)| owned.contains(&stem(f)))
                .collect()
        } else {
            files
        };
        let write: Vec<(String, &str)> = files
            .iter()
            .filter(|(f, text)| {
                std::fs::read_to_string(dir.path().join(f)).map_or(true, |have| !same(&have, text))
            })
            .map(|(f, text)| (f.clone(), text.as_str()))
            .collect();
        // Owned before they are in place, so a crash never leaves a written file unowned.
        let mut all_owned = owned.clone();
        all_owned.extend(write.iter().map(|(f, _)| stem(f)));
        if all_owned != owned {
            write_manifest(dir.path(), &all_owned)?;
        }
        if !write.is_empty() {
            write_files(dir.path(), &write, &|_| {})
                .with_context(|| format!("cannot write into {}", dir_path.display()))?;
            let place = |f: &String| format!("{}/{f}", folder(kind));
            done.written.extend(write.iter().map(|(f, _)| place(f)));
        }
        let gone: Vec<String> = all_owned
            .iter()
            .filter(|n| !wanted.contains(*n) && kind != DocKind::Connection)
            .cloned()
            .collect();
        for name in &gone {
            match std::fs::remove_file(dir.path().join(format!("{name}.json"))) {
                Ok(()) => done.deleted.push(format!("{}/{name}.json", folder(kind))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot delete {name}.json in {}", dir_path.display())
                    })
                }
            }
        }
        if !gone.is_empty() {
            let kept: std::collections::BTreeSet<String> = all_owned
                .into_iter()
                .filter(|n| !gone.contains(n))
                .collect();
            write_manifest(dir.path(), &kept)?;
        }
    }
    Ok(done)
}
