//! The benchmark's command line: the data set's size, how long each row runs, which server and
//! stores to measure; and the server binary to start.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::ensure;
use clap::Parser;
use profile_registry::config::parse_duration;

/// Measures profile-registry's calls against Health/Check, the OpenHands SDK and etcd.
#[derive(Parser, Debug)]
#[command(name = "registry-bench")]
pub struct Args {
    /// Profiles in the data set (SDK files of about 1 KiB, imported and exported).
    #[arg(long, default_value_t = 10_000)]
    pub profiles: usize,

    /// Conversations in the data set, each bound to a profile.
    #[arg(long, default_value_t = 1_000)]
    pub conversations: usize,

    /// Events per conversation in the data set.
    #[arg(long, default_value_t = 100)]
    pub events: usize,

    /// How long each row is measured (after a warm-up of a tenth of it).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Client connections the concurrent rows are spread over.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,

    /// The small store of the GetProfile scaling row.
    #[arg(long, default_value_t = 1_000)]
    pub small_profiles: usize,

    /// The large store of the GetProfile scaling row.
    #[arg(long, default_value_t = 100_000)]
    pub large_profiles: usize,

    /// Use this running server (`host:port` or `http://host:port`) instead of starting one (it must
    /// not hold profiles named bench-*);
    /// RSS, start to SERVING and the scaling row are then skipped.
    #[arg(long)]
    pub server: Option<String>,

    /// The profile-registry binary to start (default: the one beside this binary).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,

    /// Changes timed by the sync row (one after another).
    #[arg(long, default_value_t = 200)]
    pub sync_changes: usize,

    /// Measure only the rows whose name contains one of these (repeatable; e.g. to profile one).
    #[arg(long)]
    pub only: Vec<String>,

    /// Also measure GetProfile and durable UpdateProfile on PostgreSQL, next to sled's: a server on a
    /// fresh database created through this URL (`postgres://user@host:port/db`, a role that may
    /// CREATE DATABASE) and dropped afterwards.
    #[arg(long, env = "REGISTRY_BENCH_STORE", hide_env_values = true)]
    pub store: Option<String>,

    /// Also write every figure to this file as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The concurrencies every row is measured at.
pub const CONCURRENCY: [usize; 2] = [1, 64];

pub fn server_bin(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(bin) = &args.server_bin {
        return Ok(bin.clone());
    }
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("profile-registry");
    ensure!(
        bin.is_file(),
        "no profile-registry binary beside {} (build it, or give --server-bin)",
        me.display()
    );
    Ok(bin)
}
