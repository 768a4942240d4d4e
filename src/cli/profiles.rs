//! `profile-registry import` and `export`: an SDK profiles folder in, or out.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use super::{fernet_key_from_env, Target};
use crate::config::{ExportArgs, ImportArgs, SecretsMode};
use crate::openhands::folder::{default_dir, ProfilesDir, Refused, Staging};
use crate::openhands::secrets::FernetKey;
use crate::service::transfer::{ImportReport, Outcome};
use crate::service::Limits;

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
    let dir = args.dir.clone().unwrap_or_else(default_dir);
    let folder = ProfilesDir::lock(&dir, false)
        .with_context(|| format!("cannot read the profiles folder {}", dir.display()))?;
    let max = Limits::default().max_profile_bytes as u64;
    let (docs, refused) = folder.read_documents(max, false)?;
    let key = fernet_key_from_env(&args.fernet_key_env);
    let bar = progress(docs.len(), "files");
    let mut target = Target::open(&args.target).await?;
    let reports = target
        .import(docs, key.as_ref(), args.on_conflict, args.dry_run, &|n| {
            bar.set_position(n as u64)
        })
        .await?;
    bar.finish_and_clear();
    drop(folder);
    Ok(print_import_summary(&dir, &reports, &refused, args.dry_run))
}

/// Prints one line per file that was not imported and a summary per outcome; returns whether all
/// files were imported.
pub fn print_import_summary(
    dir: &std::path::Path,
    reports: &[ImportReport],
    refused: &[Refused],
    dry_run: bool,
) -> bool {
    for r in refused {
        eprintln!("INVALID {}: {}", r.file, r.reason);
    }
    let mut counts = [0usize; 5];
    for r in reports {
        counts[r.outcome as usize] += 1;
        match r.outcome {
            Outcome::Invalid => eprintln!("INVALID {}: {}", r.name, r.reason),
            Outcome::Skipped => eprintln!("SKIPPED {}: {}", r.name, r.reason),
            _ => {}
        }
    }
    counts[Outcome::Invalid as usize] += refused.len();
    println!(
        "{}{}: {} files: created {}, updated {}, unchanged {}, skipped {}, invalid {}",
        if dry_run {
            "dry run, nothing written: "
        } else {
            ""
        },
        dir.display(),
        reports.len() + refused.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
    );
    let failed_conflict = reports
        .iter()
        .any(|r| r.outcome == Outcome::Skipped && r.reason.contains("FAIL"));
    counts[Outcome::Invalid as usize] == 0 && !failed_conflict
}

/// Exports to a folder, atomically per file, holding the SDK's lock.
pub async fn run_export(args: ExportArgs) -> anyhow::Result<bool> {
    let dir: PathBuf = args.dir.clone().unwrap_or_else(default_dir);
    let key = fernet_key_from_env(&args.fernet_key_env);
    let mut target = Target::open(&args.target).await?;
    let bar = progress(0, "files");
    let exported = export_to_folder(
        &mut target,
        &dir,
        &args.names,
        args.secrets,
        key.as_ref(),
        args.prune,
        &|n, len| {
            bar.set_length(len as u64);
            bar.set_position(n as u64)
        },
    )
    .await?;
    bar.finish_and_clear();
    for name in &exported.pruned {
        eprintln!("PRUNED {name}.json");
    }
    let secrets = match args.secrets {
        SecretsMode::Redacted => "redacted",
        SecretsMode::Plaintext => "plaintext",
        SecretsMode::Encrypted => "encrypted",
    };
    println!(
        "{}: exported {} profiles (secrets {secrets}; {} written, {} unchanged), pruned {}",
        dir.display(),
        exported.written + exported.unchanged,
        exported.written,
        exported.unchanged,
        exported.pruned.len()
    );
    Ok(true)
}

/// What [`export_to_folder`] did.
#[derive(Debug)]
pub struct Exported {
    /// Files written (new or changed).
    pub written: usize,
    /// Files that already held exactly the profile, left as they were.
    pub unchanged: usize,
    /// The names deleted by `prune`.
    pub pruned: Vec<String>,
}

/// Exports from `target` into `dir` (created when missing) under the SDK's lock: a thread writes
/// each page's files while the next page is fetched, then all are put in place at once (see
/// [`Staging`]). With `prune`, deletes the folder's other profile files. `done(n, of)` follows the
/// files put in place. Files that already hold exactly their profile are left as they were.
pub async fn export_to_folder(
    target: &mut Target,
    dir: &Path,
    names: &[String],
    mode: SecretsMode,
    key: Option<&FernetKey>,
    prune: bool,
    done: &dyn Fn(usize, usize),
) -> anyhow::Result<Exported> {
    let folder = ProfilesDir::lock(dir, true)
        .with_context(|| format!("cannot write the profiles folder {}", dir.display()))?;
    let (pages, received) = std::sync::mpsc::sync_channel::<Vec<(String, String)>>(4);
    let path = folder.path().to_owned();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let mut staging = Staging::new(&path);
        let mut written = BTreeSet::new();
        for page in received {
            for (name, text) in page {
                staging.stage_if_changed(format!("{name}.json"), &text)?;
                written.insert(name);
            }
        }
        Ok((staging, written))
    });
    let fetched = target
        .export_pages(names, mode, key, &mut |page| {
            // A closed channel means the writer failed: its error is reported below.
            pages
                .send(page)
                .map_err(|_| anyhow::anyhow!("the writer stopped"))
        })
        .await;
    drop(pages);
    let written = writer.await.context("the file writer panicked")?;
    fetched?;
    let (staging, written) =
        written.with_context(|| format!("cannot write into {}", dir.display()))?;
    let (len, unchanged) = (staging.len(), staging.unchanged());
    staging
        .commit(&|n| done(n, len))
        .with_context(|| format!("cannot write into {}", dir.display()))?;
    let pruned = if prune {
        folder.prune(&written)?
    } else {
        Vec::new()
    };
    Ok(Exported {
        written: len,
        unchanged,
        pruned,
    })
}
