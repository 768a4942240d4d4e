//! `registry-bench`: how fast profile-registry is where it matters, against the targets of issues 8 and 21.
//!
//! Starts the real `profile-registry` server as a child process on a temporary data dir (or uses
//! `--server URL`), loads the data set through the API (the profiles by importing SDK files, which
//! is itself timed, then conversations and their events), restarts the server to time start to
//! SERVING on that data, and measures each row at concurrency 1 and 64 over several connections.
//! Health/Check is the baseline: the cost of one unary call in this stack on this machine. When
//! present, the OpenHands SDK (`REGISTRY_SDK_PYTHON`/`REGISTRY_SDK_PYTHONS`) and an `etcd` binary
//! are measured in the same run for comparison. A `profile-registry sync` child times how long a
//! change takes to reach its folder. Prints a table and each target with whether it
//! is met; `--json FILE` writes every figure.
//! Run: `cargo run --release --bin registry-bench -- --json bench.json`.
mod args;
mod clients;
mod dataset;
mod etcd;
mod load;
mod procs;
mod raw;
mod report;
mod rows;
mod scenarios;
mod sdk;
mod sync;
mod transfer;

use std::time::Duration;

use anyhow::{ensure, Context};
use clap::Parser;

use args::{server_bin, Args};
use clients::{target_args, Clients};
use dataset::load_conversations;
use procs::Server;
use report::Report;
use scenarios::{etcd_rows, get_profile_at, postgres_rows, server_rows};
use transfer::FIXTURE;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.profiles >= 100, "--profiles must be at least 100");
    let work = tempfile::tempdir()?;
    let (input, out) = (work.path().join("profiles"), work.path().join("exported"));
    std::fs::create_dir(&input)?;
    transfer::generate(&input, args.profiles)?;
    let mut report = Report::new(&args);

    // The server: the one given, or the real binary on a fresh data dir.
    let bin = match &args.server {
        Some(_) => None,
        None => Some(server_bin(&args)?),
    };
    let data = work.path().join("data");
    let mut server = match &bin {
        Some(bin) => Some(Server::start(bin, &data).await?),
        None => None,
    };
    let url = match (&server, &args.server) {
        (Some(s), _) => s.url.clone(),
        (None, Some(url)) => url.clone(),
        (None, None) => unreachable!("a server is started when none is given"),
    };
    println!(
        "data set: {} profiles of ~{} bytes, {} conversations x {} events; {} per row, {} connections",
        args.profiles,
        FIXTURE.len(),
        args.conversations,
        args.events,
        humantime(args.duration),
        args.connections
    );

    let target = target_args(&url);
    let imported = transfer::import(&input, &target).await?;
    let created = transfer::create_files(&work.path().join("created"), args.profiles)?;
    let exported = transfer::export(&out, &target).await?;
    transfer::verify(&input, &out, args.profiles)?;
    report.transfer(imported, exported, created);

    let clients = Clients::connect(&url, args.connections).await?;
    let conversations = load_conversations(&clients, &args).await?;
    drop(clients);

    // Start to SERVING on the loaded data: restart the server.
    if let (Some(bin), Some(s)) = (&bin, server.take()) {
        s.stop()?;
        let restarted = Server::start(bin, &data).await?;
        report.start_to_serving(Some(restarted.start_to_serving));
        server = Some(restarted);
    } else {
        report.start_to_serving(None);
    }
    let url = server.as_ref().map_or(url, |s| s.url.clone());
    let clients = Clients::connect(&url, args.connections).await?;
    let pid = server.as_ref().map(Server::pid);
    server_rows(&mut report, &clients, &args, &conversations, pid).await?;
    drop(clients);
    match &server {
        Some(s) => report.rss(Some(s.rss_kib()?)),
        None => report.rss(None),
    }
    match bin.as_ref().filter(|_| report.wants(report::SYNC_DELAY)) {
        Some(bin) => {
            let dir = work.path().join("synced");
            let s = sync::delay(bin, &url, &dir, args.sync_changes).await?;
            report.row(report::SYNC_DELAY, 1, s);
        }
        None => report.skip(
            report::SYNC_DELAY,
            "needs the profile-registry binary (no --server)",
        ),
    }
    if let Some(s) = server.take() {
        s.stop()?;
    }

    match sdk::python().filter(|_| report.wants(report::SDK_LOAD)) {
        Some(python) => {
            let (load, save) = sdk::rates(&python, &input, args.duration)?;
            report.sdk(Some((load, save)));
        }
        None => report.sdk(None),
    }

    etcd_rows(&mut report, &args).await?;
    postgres_rows(&mut report, &args, bin.as_deref()).await?;

    match bin.as_ref().filter(|_| report.wants(report::GET_LARGE)) {
        Some(bin) => {
            let (small, _) = get_profile_at(bin, args.small_profiles, &args).await?;
            let (large, start) = get_profile_at(bin, args.large_profiles, &args).await?;
            report.scaling(Some((small, large, (args.large_profiles, start))));
        }
        None => report.scaling(None),
    }

    report.print();
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `3s`, `250ms`.
fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
