//! `import --home` and `export --home`: the SDK's other kinds of file beside `profiles/` in its
//! persistence folder (provider connections, meta-profiles, agent profiles), moved with the same
//! options as profiles, through a server or a data dir opened directly.
use std::path::Path;

use anyhow::Context;

use super::connection::{status_error, ServerChannel};
use super::target::{Target, MAX_RESPONSE_BYTES};
use crate::app::documents as docs;
use crate::app::Limits;
use crate::domain::{ConflictPolicy, DocKind, ImportOutcome, ProfileName, SecretsMode};
use crate::openhands::folder::{write_files, Refused};
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
fn read_json_files(
    dir: &Path,
    max: usize,
) -> anyhow::Result<(Files, Vec<Refused>)> {
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
                    fernet_key: key.map(|k| k.to_base64().to_owned()).unwrap_or_default(),
                    dry_run,
                };
                let resp = connections_client(channel)
                    .import_provider_connections(req)
                    .await
                    .map_err(status_error)?;
                outcomes(resp.into_inner())
            }
        };
        ok &= super::profiles::print_import_summary(&path, &reports, &[], dry_run);
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
                    documents: files
                        .into_iter()
                        .map(|(name, json)| pb::ProfileDocument { name, json })
                        .collect(),
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
        ok &= super::profiles::print_import_summary(&dir, &reports, &refused, dry_run);
    }
    Ok(ok)
}

fn outcomes(resp: pb::ImportProfilesResponse) -> Vec<ImportOutcome> {
    resp.results.into_iter().map(ImportOutcome::from).collect()
}

/// Exports the other kinds into `home`, each file atomically as the SDK writes it; prints what it
/// wrote. A file that already holds exactly the record is left as it is.
pub async fn export(
    target: &mut Target,
    home: &Path,
    mode: SecretsMode,
    key: Option<&FernetKey>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let (text, count) = match target {
        Target::Local(store) => {
            let secrets = crate::openhands::profile::SecretsOut::of(mode, key)
                .context("--secrets encrypted needs the SDK's key (--fernet-key-env)")?;
            docs::export_connections(store, &secrets).await?
        }
        Target::Remote(channel) => {
            let req = pb::ExportProviderConnectionsRequest {
                secrets: pb::export_profiles_request::Secrets::from(mode) as i32,
                fernet_key: key.map(|k| k.to_base64().to_owned()).unwrap_or_default(),
            };
            let resp = connections_client(channel)
                .export_provider_connections(req)
                .await
                .map_err(status_error)?
                .into_inner();
            (resp.json, usize::try_from(resp.count).unwrap_or(0))
        }
    };
    let mut kinds = vec![(
        home.join(folder(DocKind::Connection)),
        vec![(connections::FILE_NAME.to_owned(), text)],
        count,
        "provider connections",
    )];
    for (kind, noun) in [
        (DocKind::MetaProfile, "meta-profiles"),
        (DocKind::AgentProfile, "agent profiles"),
    ] {
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
        kinds.push((home.join(folder(kind)), files, n, noun));
    }
    for (dir, files, count, noun) in kinds {
        if count == 0 {
            continue;
        }
        let changed: Vec<(String, &str)> = files
            .iter()
            .filter(|(name, text)| {
                std::fs::read_to_string(dir.join(name)).ok().as_deref() != Some(text.as_str())
            })
            .map(|(name, text)| (name.clone(), text.as_str()))
            .collect();
        if !dry_run && !changed.is_empty() {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            write_files(&dir, &changed, &|_| {})
                .with_context(|| format!("cannot write into {}", dir.display()))?;
        }
        println!(
            "{}{}: exported {count} {noun} (secrets {}; {} files written, {} unchanged)",
            if dry_run {
                "dry run, nothing written: "
            } else {
                ""
            },
            dir.display(),
            mode.as_str(),
            changed.len(),
            files.len() - changed.len(),
        );
    }
    Ok(())
}
