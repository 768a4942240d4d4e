//! The data set as SDK profile files, and the timed `import` / `export` of them through the server.
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use profile_registry::app::Limits;
use profile_registry::cli::profiles::{export_to_folder, ExportOptions};
use profile_registry::cli::Target;
use profile_registry::config::TargetArgs;
use profile_registry::domain::Outcome;
use profile_registry::domain::{ConflictPolicy, SecretsMode};
use profile_registry::openhands::folder::{sync_filesystem, ProfilesDir};

/// The profile every generated file is a variant of (about 1 KiB, as the SDK writes it).
pub const FIXTURE: &str =
    include_str!("../../../tests/fixtures/profiles/1.58.2/plaintext/anthropic-full.json");

/// The name of generated profile `i`.
pub fn profile_name(i: usize) -> String {
    format!("bench-{i:06}")
}

/// The text of generated profile `i`: the fixture with its own key and endpoint.
pub fn profile_text(i: usize) -> String {
    FIXTURE
        .replacen("sk-test-ANTHROPIC-0001", &format!("sk-bench-{i:08}"), 1)
        .replacen(
            "https://api.example.com",
            &format!("https://api.example.com/bench/{i}"),
            1,
        )
}

/// Profiles `0..n` as (name, file text) documents.
pub fn documents(n: usize) -> Vec<(String, String)> {
    (0..n).map(|i| (profile_name(i), profile_text(i))).collect()
}

/// Writes profiles `0..n` as SDK files into `dir`, synced (a user's folder is already on disk).
pub fn generate(dir: &Path, n: usize) -> anyhow::Result<()> {
    for (name, text) in documents(n) {
        std::fs::write(dir.join(format!("{name}.json")), text)?;
    }
    let synced = Command::new("sync").status()?;
    ensure!(synced.success(), "sync failed");
    Ok(())
}

/// Imports documents through the server (the client code of `profile-registry import`), checking
/// that every one was created.
pub async fn import_documents(
    target: &TargetArgs,
    docs: Vec<(String, String)>,
) -> anyhow::Result<()> {
    let n = docs.len();
    let mut target = Target::open(target).await?;
    let reports = target
        .import(docs, None, ConflictPolicy::Skip, false, &|_| {})
        .await?;
    ensure!(
        reports.len() == n,
        "{} reports for {n} documents",
        reports.len()
    );
    if let Some(r) = reports.iter().find(|r| r.outcome != Outcome::Created) {
        bail!(
            "{} was {:?}, not Created (a fresh server is needed) {}",
            r.name,
            r.outcome,
            r.reason
        );
    }
    Ok(())
}

/// `profile-registry import DIR --server URL` (on-conflict skip), minus the printing; seconds.
pub async fn import(dir: &Path, target: &TargetArgs) -> anyhow::Result<f64> {
    let started = Instant::now();
    let folder = ProfilesDir::lock(dir, false)?;
    let (docs, refused) =
        folder.read_documents(Limits::default().max_profile_bytes as u64, false)?;
    ensure!(refused.is_empty(), "files refused: {refused:?}");
    import_documents(target, docs).await?;
    drop(folder);
    Ok(started.elapsed().as_secs_f64())
}

/// The floor under any export of `n` profiles: creating the same files in a new folder `dir` (create,
/// write, close each), then one `syncfs`; no server, no temp files, no renames; seconds. Measured
/// right before the export, it shows what file creation costs on this file system at that moment.
pub fn create_files(dir: &Path, n: usize) -> anyhow::Result<f64> {
    let docs = documents(n);
    std::fs::create_dir(dir)?;
    let started = Instant::now();
    for (name, text) in &docs {
        let mut file = std::fs::File::create_new(dir.join(format!("{name}.json")))?;
        file.write_all(text.as_bytes())?;
    }
    sync_filesystem(&std::fs::File::open(dir)?)?;
    Ok(started.elapsed().as_secs_f64())
}

/// `profile-registry export OUT --server URL --secrets plaintext`, minus the printing; seconds.
pub async fn export(out: &Path, target: &TargetArgs) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut target = Target::open(target).await?;
    let options = ExportOptions {
        names: &[],
        mode: SecretsMode::Plaintext,
        key: None,
        prune: false,
        on_conflict: ConflictPolicy::Overwrite,
        dry_run: false,
    };
    export_to_folder(&mut target, out, &options, &|_, _| {}).await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Every generated file must come back byte for byte.
pub fn verify(input: &Path, out: &Path, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        let name = format!("{}.json", profile_name(i));
        let want = std::fs::read(input.join(&name))?;
        let got =
            std::fs::read(out.join(&name)).with_context(|| format!("{name} was not exported"))?;
        ensure!(
            got == want,
            "exported {name} differs from the imported file"
        );
    }
    Ok(())
}
