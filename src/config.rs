//! Command-line configuration: every flag has an environment fallback, and its doc comment is `--help`.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A gRPC registry of OpenHands LLM profiles (named LLM configurations) over an embedded database.
///
/// With no command it serves, as `profile-registry serve` does.
#[derive(Debug, Parser)]
#[command(
    name = "profile-registry",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Server settings, when no command is given.
    #[command(flatten)]
    pub serve: ServeArgs,

    /// Logging settings.
    #[command(flatten)]
    pub log: LogArgs,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API (the default).
    Serve(ServeArgs),
}

/// Settings of `serve`.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on for gRPC (plaintext HTTP/2).
    #[arg(long, env = "REGISTRY_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Folder of the embedded database; created when missing, locked while served.
    #[arg(long, env = "REGISTRY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// On SIGTERM/SIGINT, how long in-flight calls may take before they are cut (e.g. 10s, 500ms).
    #[arg(long, env = "REGISTRY_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Database page cache, in MiB.
    #[arg(long, env = "REGISTRY_CACHE_MB", default_value_t = 32)]
    pub cache_mb: u64,

    /// Largest profile accepted, measured as the SDK's JSON file, in bytes.
    #[arg(long, env = "REGISTRY_MAX_PROFILE_BYTES", default_value_t = 64 * 1024)]
    pub max_profile_bytes: usize,

    /// Largest gRPC request message accepted, in bytes (RESOURCE_EXHAUSTED above).
    #[arg(long, env = "REGISTRY_MAX_REQUEST_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_request_bytes: usize,

    /// Largest page_size a list call may ask for (INVALID_ARGUMENT above).
    #[arg(long, env = "REGISTRY_MAX_PAGE_SIZE", default_value_t = 1000)]
    pub max_page_size: usize,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Cli::parse_from(["profile-registry"]).serve
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging settings, for every command.
#[derive(Clone, Debug, Args)]
pub struct LogArgs {
    /// Log format: text for people, json for machines.
    #[arg(
        long,
        global = true,
        env = "REGISTRY_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log filter, e.g. info, debug, or profile_registry=debug,info.
    #[arg(long, global = true, env = "REGISTRY_LOG", default_value = "info")]
    pub log_level: String,
}

/// Parses `10s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (num, unit) = raw
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((raw, "s"), |i| raw.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 10s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{raw:?}: unit must be ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{raw:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
