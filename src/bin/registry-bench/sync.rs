//! The sync row: how long a change takes from UpdateProfile's answer to the renamed file in a
//! folder that `profile-registry sync` keeps (every profile of the data set mirrored, so each change
//! lands in a folder of that many files, as it would for a real agent-server).
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use profile_registry::pb;
use profile_registry::pb::profile_service_client::ProfileServiceClient;

use crate::load::Sample;
use crate::procs;

/// The profile the row changes.
const NAME: &str = "bench-sync";

/// Kills the sync child when the row ends, however it ends.
struct Sync(Child);

impl Drop for Sync {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin sync` into `dir` against `url`, then makes `changes` changes one after another and
/// times each from the answer to the file holding it.
pub async fn delay(bin: &Path, url: &str, dir: &Path, changes: usize) -> anyhow::Result<Sample> {
    let mut client = ProfileServiceClient::new(procs::connect(url).await?);
    let model = |i: usize| {
        let profile = pb::Profile {
            name: NAME.into(),
            llm: Some(pb::LlmConfig {
                model: format!("sync-model-{i}"),
                ..Default::default()
            }),
            ..Default::default()
        };
        pb::UpdateProfileRequest {
            profile: Some(profile),
            allow_missing: true,
            expected_revision: None,
        }
    };
    client.update_profile(model(0)).await?;
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("REGISTRY_")) {
        cmd.env_remove(k);
    }
    let _sync = Sync(
        cmd.arg("sync")
            .arg(dir)
            .args(["--server", url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {} sync", bin.display()))?,
    );
    let file = dir.join(format!("{NAME}.json"));
    // The first sync writes every profile of the data set.
    until_holds(
        &file,
        &format!("\"sync-model-{}\"", 0),
        Duration::from_secs(120),
    )
    .await?;
    let started = Instant::now();
    let mut delays = Vec::with_capacity(changes);
    for i in 1..=changes {
        client.update_profile(model(i)).await?;
        let answered = Instant::now();
        until_holds(
            &file,
            &format!("\"sync-model-{i}\""),
            Duration::from_secs(10),
        )
        .await?;
        delays.push(answered.elapsed().as_secs_f64() * 1e6);
    }
    let elapsed = started.elapsed().as_secs_f64();
    delays.sort_by(f64::total_cmp);
    let at = |q: f64| delays[((delays.len() as f64 * q) as usize).min(delays.len() - 1)];
    Ok(Sample {
        calls: changes as u64,
        rate: changes as f64 / elapsed,
        p50_us: at(0.50),
        p99_us: at(0.99),
        all_calls: changes as u64,
    })
}

/// Polls `file` (every 50 us) until it holds `text`; the file is replaced by a rename, so a read
/// sees the old bytes or the new, never a mix.
async fn until_holds(file: &Path, text: &str, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if std::fs::read_to_string(file).is_ok_and(|t| t.contains(text)) {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("{} did not hold {text} within {limit:?}", file.display());
        }
        tokio::time::sleep(Duration::from_micros(50)).await;
    }
}
