//! `profile-registry import` and `export`: an SDK profiles folder in, or out.
use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use super::{fernet_key_from_env, Target};
use crate::app::Limits;
use crate::config::{ExportArgs, ImportArgs};
use crate::domain::{ConflictPolicy, SecretsMode};
use crate::openhands::folder::{
    profiles_and_home, prunable, Equivalent, FileState, ProfilesDir, Staging,
};
use crate::openhands::secrets::{same_when_decrypted, FernetKey};

fn progress(len: usize, what: &str) -> ProgressBar {
    // Hidden by indicatif itself when stderr is not a terminal.
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what}")) {
        bar.set_style(style);
    }
    bar
}

/// Imports a folder; returns whether every file was imported (false when any was invalid, or when
/// --on-conflict fail found a conflict).
pub async fn run_import(args: ImportArgs) -> anyhow::Result<bool> {
    let (home, dir) = profiles_and_home(args.folder.dir.as_ref(), args.folder.home.as_ref());
    if home.is_some() && !dir.is_dir() {
        let key = fernet_key_from_env(&args.choices.fernet_key_env);
        let mut target = Target::open(&args.target).await?;
        let home = home.unwrap_or_default();
        return super::home::import(
            &mut target,
            &home,
            key.as_ref(),
            args.choices.on_conflict,
            args.choices.dry_run,
        )
        .await;
    }
    let folder = ProfilesDir::lock(&dir, false)
        .with_context(|| format!("cannot read the profiles folder {}", dir.display()))?;
    let max = Limits::default().max_profile_bytes as u64;
    let (docs, refused) = folder.read_documents(max, false)?;
    let key = fernet_key_from_env(&args.choices.fernet_key_env);
    let bar = progress(docs.len(), "files");
    let mut target = Target::open(&args.target).await?;
    let reports = target
        .import(
            docs,
            key.as_ref(),
            args.choices.on_conflict,
            args.choices.dry_run,
            &|n| bar.set_position(n as u64),
        )
        .await?;
    bar.finish_and_clear();
    drop(folder);
    let mut ok =
        super::output::print_import_summary(&dir, &reports, &refused, args.choices.dry_run);
    if let Some(home) = home {
        // Targets before what references them: profiles first, then connections, meta-profiles
        // and agent profiles (an import never refuses a dangling reference, but this order keeps
        // a home's references resolvable at every step).
        ok &= super::home::import(
            &mut target,
            &home,
            key.as_ref(),
            args.choices.on_conflict,
            args.choices.dry_run,
        )
        .await?;
    }
    Ok(ok)
}

/// Exports to a folder, atomically per file, holding the SDK's lock.
pub async fn run_export(args: ExportArgs) -> anyhow::Result<bool> {
    let (home, dir) = profiles_and_home(args.folder.dir.as_ref(), args.folder.home.as_ref());
    let key = fernet_key_from_env(&args.out.fernet_key_env);
    let mut target = Target::open(&args.target).await?;
    let bar = progress(0, "files");
    let options = ExportOptions {
        names: &args.names,
        mode: args.out.secrets,
        key: key.as_ref(),
        prune: args.prune,
        on_conflict: args.on_conflict,
        dry_run: args.dry_run,
    };
    let exported = export_to_folder(&mut target, &dir, &options, &|n, len| {
        bar.set_length(len as u64);
        bar.set_position(n as u64)
    })
    .await?;
    bar.finish_and_clear();
    let file = |name: &String| dir.join(format!("{name}.json")).display().to_string();
    for name in &exported.conflicts {
        eprintln!(
            "CONFLICT {}: differs from the registry's profile; nothing was written (--on-conflict fail)",
            file(name)
        );
    }
    for name in &exported.skipped {
        eprintln!(
            "SKIPPED {}: differs from the registry's profile; kept (--on-conflict skip)",
            file(name)
        );
    }
    for name in &exported.pruned {
        eprintln!("PRUNED {}", file(name));
    }
    let secrets = args.out.secrets.as_str();
    println!(
        "{}{}: exported {} profiles (secrets {secrets}; {} written, {} unchanged, {} skipped, {} conflicts), pruned {}",
        if args.dry_run || !exported.conflicts.is_empty() {
            "dry run, nothing written: "
        } else {
            ""
        },
        dir.display(),
        exported.written + exported.unchanged,
        exported.written,
        exported.unchanged,
        exported.skipped.len(),
        exported.conflicts.len(),
        exported.pruned.len()
    );
    if exported.masked > 0 && args.out.secrets == SecretsMode::Redacted {
        eprintln!(
            "note: {} profiles hold keys written as the mask \"**********\", which the SDK loads as no \
             key; to carry the keys, export with --secrets plaintext (a file only you can read) or \
             --secrets encrypted (Fernet with OH_SECRET_KEY, as the SDK's own cipher)",
            exported.masked
        );
    }
    let mut ok = exported.conflicts.is_empty();
    if let (Some(home), true) = (home, ok) {
        let (mode, policy) = (args.out.secrets, args.on_conflict);
        ok = super::home::export(&mut target, &home, mode, key.as_ref(), policy, args.dry_run)
            .await?;
    }
    Ok(ok)
}

/// What [`export_to_folder`] writes and how (no Debug: it holds the key).
#[derive(Clone, Copy)]
pub struct ExportOptions<'a> {
    /// Only these profiles; empty = all.
    pub names: &'a [String],
    /// How secrets are written.
    pub mode: SecretsMode,
    /// The SDK's key, for [`SecretsMode::Encrypted`].
    pub key: Option<&'a FernetKey>,
    /// Delete the folder's other profile files.
    pub prune: bool,
    /// A file that differs from its profile: replace it, keep it, or write nothing at all.
    pub on_conflict: ConflictPolicy,
    /// Only report.
    pub dry_run: bool,
}

/// What [`export_to_folder`] did (or, in a dry run or after a conflict, would do).
#[derive(Debug, Default)]
pub struct Exported {
    /// Files written (new or replaced).
    pub written: usize,
    /// Files that already held exactly the profile, left as they were.
    pub unchanged: usize,
    /// Files that differ from their profile, kept (`--on-conflict skip`).
    pub skipped: Vec<String>,
    /// Files that differ from their profile under `--on-conflict fail`: when any, nothing was
    /// written and nothing pruned.
    pub conflicts: Vec<String>,
    /// The names deleted by `prune`.
    pub pruned: Vec<String>,
    /// Files holding a secret as the SDK's mask (`--secrets redacted`).
    pub masked: usize,
}

/// A secret written as the SDK's mask, as it stands in a file.
const MASKED_SECRET: &str = "\"**********\"";

/// Exports from `target` into `dir` (created when missing) under the SDK's lock: a thread writes
/// each page's files while the next page is fetched, then all are put in place at once (see
/// [`Staging`]). A file that already holds exactly its profile is left as it is; one that differs
/// is handled by `on_conflict`. With `prune`, deletes the folder's other profile files. A dry run
/// reads the folder (unlocked) and writes nothing. `done(n, of)` follows the files put in place.
pub async fn export_to_folder(
    target: &mut Target,
    dir: &Path,
    options: &ExportOptions<'_>,
    done: &dyn Fn(usize, usize),
) -> anyhow::Result<Exported> {
    let folder = if options.dry_run {
        None
    } else {
        Some(
            ProfilesDir::lock(dir, true)
                .with_context(|| format!("cannot write the profiles folder {}", dir.display()))?,
        )
    };
    let (pages, received) = std::sync::mpsc::sync_channel::<Vec<(String, String)>>(4);
    let (path, policy, dry_run) = (dir.to_owned(), options.on_conflict, options.dry_run);
    // Encrypted files differ at every export (fresh Fernet tokens): compare what they decrypt to.
    let key = match options.mode {
        SecretsMode::Encrypted => options.key.cloned(),
        _ => None,
    };
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let mut staging = Staging::new(&path);
        let (mut report, mut exported) = (Exported::default(), BTreeSet::new());
        let decrypted =
            key.map(|key| move |have: &str, want: &str| same_when_decrypted(have, want, &key));
        let equivalent = decrypted.as_ref().map(|f| f as &Equivalent);
        for page in received {
            for (name, text) in page {
                let file = format!("{name}.json");
                let write = match staging.compare(&file, &text, equivalent)? {
                    FileState::Same => {
                        report.unchanged += 1;
                        false
                    }
                    FileState::Absent => true,
                    FileState::Different => match policy {
                        ConflictPolicy::Overwrite => true,
                        ConflictPolicy::Skip => {
                            report.skipped.push(name.clone());
                            false
                        }
                        ConflictPolicy::Fail => {
                            report.conflicts.push(name.clone());
                            false
                        }
                    },
                };
                if text.contains(MASKED_SECRET) {
                    report.masked += 1;
                }
                if write {
                    report.written += 1;
                    if !dry_run {
                        staging.stage(file, &text)?;
                    }
                }
                exported.insert(name);
            }
        }
        Ok((staging, report, exported))
    });
    let fetched = target
        .export_pages(options.names, options.mode, options.key, &mut |page| {
            // A closed channel means the writer failed: its error is reported below.
            pages
                .send(page)
                .map_err(|_| anyhow::anyhow!("the writer stopped"))
        })
        .await;
    drop(pages);
    let written = writer.await.context("the file writer panicked")?;
    // The writer's own error first: when it stops, the fetch only sees a closed channel.
    let (staging, mut report, exported) =
        written.with_context(|| format!("cannot write into {}", dir.display()))?;
    fetched?;
    let Some(folder) = folder.filter(|_| report.conflicts.is_empty()) else {
        // A dry run, or a conflict under FAIL: the staged temp files go with `staging`.
        drop(staging);
        if options.prune {
            report.pruned = prunable(dir, &exported)?;
        }
        return Ok(report);
    };
    let len = staging.len();
    staging
        .commit(&|n| done(n, len))
        .with_context(|| format!("cannot write into {}", dir.display()))?;
    if options.prune {
        report.pruned = folder.prune(&exported)?;
    }
    Ok(report)
}
