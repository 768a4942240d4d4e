//! Logging: human-readable on a terminal, JSON for machines; never a secret value.
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogArgs, LogFormat};

/// Installs the global subscriber (stderr), with the filter `--log-level` gives or else
/// `default`. Safe to call once per process.
pub fn init(args: &LogArgs, default: &str) {
    let given = args.log_level.as_deref().unwrap_or(default);
    // PostgreSQL's notices and sqlx's slow-statement lines are the database's business: warnings
    // and up, unless the filter names sqlx itself.
    let level = if given.contains("sqlx") {
        given.to_owned()
    } else {
        format!("{given},sqlx=warn")
    };
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "internal error");
    }));
}
