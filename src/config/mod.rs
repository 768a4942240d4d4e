//! Command-line configuration: every flag has an environment fallback, and its doc comment is `--help`.
//!
//! This file holds the top of the command line (`Cli`, `Command`) and the logging flags; the
//! settings of each command live beside it by concern: `serve` (the server), `client` (how a client
//! command reaches a server or a data dir), `everyday` (list, get, put, ... and `conversations`),
//! `transfer` (import and export), `admin` (keys, backups, checks, migrations) and `parse` (value
//! parsers the flags share). Everything is re-exported here, so `crate::config::X` is the one path.
mod admin;
mod client;
mod everyday;
mod parse;
mod serve;
mod transfer;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use self::admin::{
    BackupArgs, CheckArgs, MigrateArgs, MigrateStoreArgs, NewTokenArgs, RestoreArgs, RotateKeysArgs,
};
pub use self::client::{ClientArgs, TargetArgs};
pub use self::everyday::{
    CompletionsArgs, ConversationEventsArgs, ConversationGetArgs, ConversationListArgs,
    ConversationsCommand, DeleteArgs, DiffArgs, GetArgs, GetOutput, HistoryArgs, ListArgs, Output,
    PutArgs, Reach, RenameArgs, RollbackArgs, UndeleteArgs, WatchArgs,
};
pub use self::parse::{parse_duration, parse_watch_history};
pub use self::serve::ServeArgs;
pub use self::transfer::{
    ExportArgs, ExportConversationsArgs, ImportArgs, ImportConversationsArgs, SyncArgs,
};

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
    Serve(Box<ServeArgs>),
    /// Import an SDK profiles folder (`<name>.json` files) into the registry.
    Import(ImportArgs),
    /// Export the registry's profiles as an SDK profiles folder, byte for byte what the SDK writes.
    Export(ExportArgs),
    /// Keep an SDK profiles folder equal to the registry while it runs (a sidecar for agent
    /// runtimes that read files): writes each profile's file as `export` does, deletes the files of
    /// deleted profiles that it wrote itself, and follows the server through restarts.
    Sync(SyncArgs),
    /// Make a bearer token: prints the token (give it to the client; it is not stored) and the
    /// line to add to the --auth-tokens-file (which holds only its SHA-256).
    NewToken(NewTokenArgs),
    /// Import SDK conversation folders (`<id hex>/base_state.json` and `events/`) into the registry.
    ImportConversations(ImportConversationsArgs),
    /// Export conversations as SDK conversation folders, the agent's LLM inline (resolved from its profile).
    ExportConversations(ExportConversationsArgs),
    /// Re-encrypt every stored secret with the first key of --secret-key-file (stop the server first).
    RotateKeys(RotateKeysArgs),
    /// Write a consistent snapshot of a running server's records to FILE (needs the admin role).
    /// Secrets stay encrypted as stored; the keys are not in the file: keep them apart.
    Backup(BackupArgs),
    /// Load a backup FILE into a new or empty data dir, revisions and all; give the key file of the
    /// server it came from when it holds secrets.
    Restore(RestoreArgs),
    /// Verify every record of a data dir (decodes, decrypts, references; stop the server first);
    /// exits 1 when anything is wrong.
    Check(CheckArgs),
    /// List the profiles: name, model, base_url, revision, last update.
    List(ListArgs),
    /// Show one profile (secrets masked unless --reveal-secrets); `-o sdk` prints the exact bytes
    /// of its SDK file, as `export` writes it.
    Get(GetArgs),
    /// Create or replace a profile from an SDK profile JSON document (FILE, or - / nothing for
    /// standard input). A secret given as the mask "**********" keeps the stored one.
    Put(PutArgs),
    /// Delete a profile (refused while conversations are bound to it, unless --force).
    Delete(DeleteArgs),
    /// Rename a profile; conversations bound to it follow, in the same transaction.
    Rename(RenameArgs),
    /// List a profile's kept revisions, newest first: revision, model, base_url, when, by whom.
    History(HistoryArgs),
    /// Write a kept revision's configuration (secrets included) as the profile's new revision.
    Rollback(RollbackArgs),
    /// Bring back a deleted profile whose history is kept (--deleted-retention): its last
    /// revision, as its next one.
    Undelete(UndeleteArgs),
    /// Compare two revisions of a profile (the second defaults to the current one): the keys added,
    /// removed and changed; secrets only as changed or unchanged, never their values.
    Diff(DiffArgs),
    /// Print one line per profile change until interrupted (Ctrl-C).
    Watch(WatchArgs),
    /// Conversations: list them, show one, read or follow its events.
    #[command(subcommand)]
    Conversations(ConversationsCommand),
    /// Print a shell completion script: `profile-registry completions bash > /etc/bash_completion.d/profile-registry`.
    Completions(CompletionsArgs),
    /// Apply the PostgreSQL schema (servers also do it at start); prints the versions applied.
    Migrate(MigrateArgs),
    /// Copy every record, revisions included, from one store to another, empty one (sled data dir
    /// to PostgreSQL or back); stop the servers of both first. Secrets move still encrypted: serve
    /// the target with the same keys.
    MigrateStore(MigrateStoreArgs),
}

impl Command {
    /// Whether this is an everyday command (one that answers on standard output, where log lines
    /// would only be noise).
    pub fn is_everyday(&self) -> bool {
        matches!(
            self,
            Self::List(_)
                | Self::Get(_)
                | Self::Put(_)
                | Self::Delete(_)
                | Self::Rename(_)
                | Self::History(_)
                | Self::Rollback(_)
                | Self::Undelete(_)
                | Self::Diff(_)
                | Self::Watch(_)
                | Self::Conversations(_)
                | Self::Completions(_)
        )
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

    /// Log filter, e.g. info, debug, or profile_registry=debug,info [default: info; error for the
    /// everyday commands (list, get, put, delete, rename, watch, conversations), whose output is
    /// their answer].
    #[arg(long, global = true, env = "REGISTRY_LOG")]
    pub log_level: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
