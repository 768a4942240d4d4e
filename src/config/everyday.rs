//! The everyday commands, which answer on standard output: `list`, `get`, `put`, `delete`,
//! `rename`, `history`, `rollback`, `diff`, `watch`, the `conversations` commands and `completions`, and their output formats.
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::TargetArgs;

/// How a command prints what it read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The proto JSON mapping: one object per line.
    Json,
}

/// How `get` prints a profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum GetOutput {
    /// One field per line, for people.
    #[default]
    Table,
    /// The proto JSON mapping of the Profile message.
    Json,
    /// The exact bytes of the SDK's `<name>.json` file (what `export` writes).
    Sdk,
}

/// Where an everyday command goes (a server, or a data dir) and how it prints.
#[derive(Clone, Debug, Args)]
pub struct Reach {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

/// Settings of `list`.
#[derive(Clone, Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub reach: Reach,
}

/// Settings of `get`.
#[derive(Clone, Debug, Args)]
pub struct GetArgs {
    /// The profile's name.
    pub name: String,

    /// Show the secrets' values instead of the mask (needs the secrets role; audited).
    #[arg(long)]
    pub reveal_secrets: bool,

    /// Fill base_url and api_key from the provider connection the profile names
    /// (provider_connection_id), as the SDK's load does (table and json output).
    #[arg(long)]
    pub resolve_connection: bool,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: GetOutput,
}

/// Settings of `put`.
#[derive(Clone, Debug, Args)]
pub struct PutArgs {
    /// The profile's name.
    pub name: String,

    /// The SDK profile JSON document; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,

    /// Write only if the stored profile is at this revision (compare-and-swap).
    #[arg(long)]
    pub expected_revision: Option<i64>,

    /// The environment variable holding the SDK's OH_SECRET_KEY, to read Fernet-encrypted secrets.
    #[arg(long, env = "REGISTRY_FERNET_KEY_ENV", default_value = "OH_SECRET_KEY")]
    pub fernet_key_env: String,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub reach: Reach,
}

/// Settings of `delete`.
#[derive(Clone, Debug, Args)]
pub struct DeleteArgs {
    /// The profile's name.
    pub name: String,

    /// Delete even while conversations are bound to it (their bindings stay, and resolve again
    /// when the name is re-created).
    #[arg(long)]
    pub force: bool,

    /// Delete only if the stored profile is at this revision.
    #[arg(long)]
    pub expected_revision: Option<i64>,

    /// Destroy its history at once instead of keeping it for `undelete` (needs the admin role).
    #[arg(long)]
    pub purge: bool,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,
}

/// Settings of `rename`.
#[derive(Clone, Debug, Args)]
pub struct RenameArgs {
    /// The profile's current name.
    pub old: String,

    /// Its new name.
    pub new: String,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub reach: Reach,
}

/// Settings of `history`.
#[derive(Clone, Debug, Args)]
pub struct HistoryArgs {
    /// The profile's name.
    pub name: String,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub reach: Reach,
}

/// Settings of `rollback`.
#[derive(Clone, Debug, Args)]
pub struct RollbackArgs {
    /// The profile's name.
    pub name: String,

    /// The kept revision to write again (see `history NAME`).
    pub revision: i64,

    /// Write only if the profile is at this revision now (compare-and-swap).
    #[arg(long)]
    pub expected_revision: Option<i64>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub reach: Reach,
}

/// Settings of `undelete`.
#[derive(Clone, Debug, Args)]
pub struct UndeleteArgs {
    /// The deleted profile's name.
    pub name: String,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub reach: Reach,
}

/// Settings of `diff`.
#[derive(Clone, Debug, Args)]
pub struct DiffArgs {
    /// The profile's name.
    pub name: String,

    /// The older revision.
    pub from: i64,

    /// The newer revision [default: the current one].
    pub to: Option<i64>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,
}

/// Settings of `watch`.
#[derive(Clone, Debug, Args)]
pub struct WatchArgs {
    /// Print every current profile first, then the changes.
    #[arg(long)]
    pub send_initial: bool,

    /// Resume after this change seq (the `seq` of the last line printed): every change since,
    /// then live ones. Refused when the server no longer keeps it (watch again with
    /// --send-initial).
    #[arg(long, value_name = "SEQ", default_value_t = 0, conflicts_with = "send_initial",
          value_parser = clap::value_parser!(i64).range(0..))]
    pub start_after_seq: i64,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub reach: Reach,
}

/// The `conversations` commands.
#[derive(Debug, Subcommand)]
pub enum ConversationsCommand {
    /// List the conversations: id, title, status, agent LLM, events, revision, last update.
    List(ConversationListArgs),
    /// Show one conversation, its LLMs resolved from their profiles (secrets masked).
    Get(ConversationGetArgs),
    /// Print a conversation's events in order; --follow keeps printing new ones until interrupted.
    Events(ConversationEventsArgs),
}

/// Settings of `conversations list`.
#[derive(Clone, Debug, Args)]
pub struct ConversationListArgs {
    /// Only conversations with an LLM bound to this profile.
    #[arg(long)]
    pub profile: Option<String>,

    /// Only conversations in this execution status (idle, running, paused,
    /// waiting_for_confirmation, finished, error, stuck).
    #[arg(long)]
    pub status: Option<String>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub reach: Reach,
}

/// Settings of `conversations get`.
#[derive(Clone, Debug, Args)]
pub struct ConversationGetArgs {
    /// The conversation's id (dashed UUID or 32 hex digits).
    pub id: String,

    /// Show the secrets of its LLMs instead of the mask (needs the secrets role; audited).
    #[arg(long)]
    pub reveal_secrets: bool,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub reach: Reach,
}

/// Settings of `conversations events`.
#[derive(Clone, Debug, Args)]
pub struct ConversationEventsArgs {
    /// The conversation's id (dashed UUID or 32 hex digits).
    pub id: String,

    /// After the stored events, keep printing new ones as they are appended, until interrupted.
    #[arg(long)]
    pub follow: bool,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub reach: Reach,
}

/// Settings of `completions`.
#[derive(Clone, Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}
