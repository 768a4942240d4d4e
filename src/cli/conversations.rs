//! `profile-registry import-conversations` and `export-conversations`: SDK conversation folders
//! (`<id hex>/base_state.json`, `<id hex>/events/event-NNNNN-<event id>.json`) in, or out.
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fs2::FileExt;

use super::{fernet_key_from_env, Target};
use crate::app::Limits;
use crate::config::{ExportConversationsArgs, ImportConversationsArgs};
use crate::domain::Outcome;
use crate::domain::SecretsMode;
use crate::openhands::conversation::parse_event_file_name;
use crate::openhands::folder::{read_text_file, write_files};

/// The largest base_state.json read (the request limit of the server it goes to).
const MAX_BASE_STATE_BYTES: u64 = 4 * 1024 * 1024;

/// The default folder: `$OH_PERSISTENCE_DIR/conversations` when set, else `~/.openhands/conversations`.
pub fn default_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("OH_PERSISTENCE_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("conversations");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".openhands").join("conversations")
}

/// One conversation folder's files: base_state.json and the event files (name, text).
fn read_folder(
    dir: &Path,
    max_event_bytes: u64,
) -> Result<(String, Vec<(String, String)>), String> {
    let base = read_text_file(&dir.join("base_state.json"), MAX_BASE_STATE_BYTES, false)
        .map_err(|why| format!("base_state.json {why}"))?;
    let mut events = Vec::new();
    let events_dir = dir.join("events");
    if events_dir.is_dir() {
        for entry in fs::read_dir(&events_dir).map_err(|e| format!("events: {e}"))? {
            let entry = entry.map_err(|e| format!("events: {e}"))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if parse_event_file_name(&name).is_none() {
                if name.starts_with("event-") && name.ends_with(".json") {
                    // Looks like an event but cannot be one: refuse the folder rather than
                    // import it without that event.
                    return Err(format!(
                        "events/{name}: not an event file name (event-NNNNN-<id>.json, the id {})",
                        crate::domain::values::FILE_ID_RULE
                    ));
                }
                continue; // .eventlog.lock, .eventlog-len-N.marker and anything else
            }
            let text = read_text_file(&entry.path(), max_event_bytes, false)
                .map_err(|why| format!("events/{name} {why}"))?;
            events.push((name, text));
        }
    }
    Ok((base, events))
}

/// Imports every conversation folder of the folder; returns whether all were imported.
pub async fn run_import(args: ImportConversationsArgs) -> anyhow::Result<bool> {
    let dir = args.dir.clone().unwrap_or_else(default_dir);
    let mut folders: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("cannot read the conversations folder {}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| p.join("base_state.json").is_file())
        .collect();
    folders.sort();
    let key = fernet_key_from_env(&args.choices.fernet_key_env);
    let mut target = Target::open(&args.target).await?;
    let max_event = Limits::default().max_event_bytes as u64;
    let (mut counts, mut events_total) = ([0usize; 5], 0i64);
    for folder in &folders {
        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let result = match read_folder(folder, max_event) {
            Ok((base, events)) => {
                target
                    .import_conversation(
                        base,
                        events,
                        key.as_ref(),
                        args.bind_profile.as_deref(),
                        args.choices.on_conflict,
                        args.choices.dry_run,
                    )
                    .await?
            }
            Err(why) => Err(why),
        };
        match result {
            Ok((imported, n)) => {
                let id = &imported.name;
                if id.replace('-', "") != name {
                    eprintln!("NOTE {name}: the folder holds conversation {id}");
                }
                counts[imported.outcome as usize] += 1;
                if imported.outcome == Outcome::Skipped {
                    eprintln!("SKIPPED {name}: {}", imported.reason);
                }
                events_total += n;
            }
            Err(why) => {
                counts[Outcome::Invalid as usize] += 1;
                eprintln!("INVALID {name}: {why}");
            }
        }
    }
    println!(
        "{}{}: {} conversations: created {}, updated {}, skipped {}, invalid {}; {} events",
        if args.choices.dry_run {
            "dry run, nothing written: "
        } else {
            ""
        },
        dir.display(),
        folders.len(),
        counts[Outcome::Created as usize],
        counts[Outcome::Updated as usize],
        counts[Outcome::Skipped as usize],
        counts[Outcome::Invalid as usize],
        events_total,
    );
    Ok(counts[Outcome::Invalid as usize] == 0)
}

/// Exports conversations as SDK folders under the folder.
pub async fn run_export(args: ExportConversationsArgs) -> anyhow::Result<bool> {
    let dir = args.dir.clone().unwrap_or_else(default_dir);
    let key = fernet_key_from_env(&args.out.fernet_key_env);
    let mut target = Target::open(&args.target).await?;
    let exported = target
        .export_conversations(&args.ids, args.out.secrets, key.as_ref(), args.profile_refs)
        .await?;
    let mut events = 0;
    for (name, base, files) in &exported {
        write_conversation(&dir.join(name), base, files)
            .with_context(|| format!("cannot write {}", dir.join(name).display()))?;
        events += files.len();
    }
    println!(
        "{}: exported {} conversations, {events} events",
        dir.display(),
        exported.len()
    );
    let masked = exported
        .iter()
        .filter(|(_, base, _)| base.contains("\"**********\""))
        .count();
    if masked > 0 && args.out.secrets == SecretsMode::Redacted {
        eprintln!(
            "note: {masked} conversations hold LLM keys written as the mask \"**********\", which the \
             SDK loads as no key; to carry the keys, export with --secrets plaintext or --secrets \
             encrypted (Fernet with OH_SECRET_KEY)"
        );
    }
    Ok(true)
}

/// Writes one conversation folder atomically per file, holding the SDK's event-log lock; event
/// files of an earlier, longer log are removed so the SDK reads exactly these events.
fn write_conversation(dir: &Path, base: &str, files: &[(String, String)]) -> anyhow::Result<()> {
    let events_dir = dir.join("events");
    fs::create_dir_all(&events_dir)?;
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(events_dir.join(".eventlog.lock"))?;
    lock.lock_exclusive()?;
    let keep: std::collections::BTreeSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for entry in fs::read_dir(&events_dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let stale_event = parse_event_file_name(&name).is_some() && !keep.contains(name.as_str());
        let marker = name.starts_with(".eventlog-len-") && name.ends_with(".marker");
        if stale_event || marker {
            fs::remove_file(events_dir.join(&name))?;
        }
    }
    let mut event_files: Vec<(String, &str)> =
        files.iter().map(|(n, t)| (n.clone(), t.as_str())).collect();
    event_files.push((format!(".eventlog-len-{}.marker", files.len()), ""));
    write_files(&events_dir, &event_files, &|_| {})?;
    write_files(dir, &[("base_state.json".to_owned(), base)], &|_| {})?;
    Ok(())
}
