//! Moving SDK files in and out: `import`, `export`, `import-conversations`,
//! `export-conversations`, with their conflict and secrets policies; and `sync`, which keeps a
//! profiles folder equal to the registry.
use std::path::PathBuf;

use clap::Args;

use super::{ClientArgs, TargetArgs};
use crate::domain::{ConflictPolicy, SecretsMode};

/// The folder `import` reads and `export` writes.
#[derive(Clone, Debug, Args)]
pub struct SdkFolder {
    /// The profiles folder [default: $OH_PERSISTENCE_DIR/profiles, else ~/.openhands/profiles].
    pub dir: Option<PathBuf>,

    /// The whole SDK persistence folder instead: profiles/, provider-connections/, meta-profiles/
    /// and agent-profiles/ [DIR default: $OH_PERSISTENCE_DIR, else ~/.openhands].
    #[arg(long, env = "REGISTRY_HOME", value_name = "DIR", num_args = 0..=1, conflicts_with = "dir")]
    pub home: Option<Option<PathBuf>>,
}

/// Settings of `import`.
#[derive(Clone, Debug, Args)]
pub struct ImportArgs {
    /// The folder.
    #[command(flatten)]
    pub folder: SdkFolder,

    /// The registry the profiles go into.
    #[command(flatten)]
    pub target: TargetArgs,

    /// How conflicts, a dry run and encrypted secrets are handled.
    #[command(flatten)]
    pub choices: ImportChoices,
}

/// What `import` and `import-conversations` share: the conflict policy, the dry run and the key.
#[derive(Clone, Debug, Args)]
pub struct ImportChoices {
    /// What to do when a record of that name or id exists (overwrite replaces it, and a
    /// conversation's events with it).
    #[arg(long, env = "REGISTRY_ON_CONFLICT", value_enum, default_value = "skip")]
    pub on_conflict: ConflictPolicy,

    /// Report what would happen without writing anything.
    #[arg(long, env = "REGISTRY_DRY_RUN")]
    pub dry_run: bool,

    /// The environment variable holding the SDK's OH_SECRET_KEY, to read encrypted secrets.
    #[arg(long, env = "REGISTRY_FERNET_KEY_ENV", default_value = "OH_SECRET_KEY")]
    pub fernet_key_env: String,
}

/// Settings of `export`.
#[derive(Clone, Debug, Args)]
pub struct ExportArgs {
    /// The folder.
    #[command(flatten)]
    pub folder: SdkFolder,

    /// The registry the profiles come from.
    #[command(flatten)]
    pub target: TargetArgs,

    /// How secrets are written.
    #[command(flatten)]
    pub out: ExportSecrets,

    /// Only these profiles (repeatable); default all.
    #[arg(long = "name", env = "REGISTRY_EXPORT_NAMES", value_delimiter = ',')]
    pub names: Vec<String>,

    /// Delete the folder's other `<name>.json` files, so it holds exactly the exported profiles.
    #[arg(long, env = "REGISTRY_EXPORT_PRUNE")]
    pub prune: bool,

    /// What to do when the folder's file for a profile differs from it: replace the file
    /// (default), keep it, or write nothing at all. A file that already holds exactly the profile
    /// is left as it is in every case.
    #[arg(
        long,
        env = "REGISTRY_EXPORT_ON_CONFLICT",
        value_enum,
        default_value = "overwrite"
    )]
    pub on_conflict: ConflictPolicy,

    /// Report what would be written, kept and pruned without touching the folder.
    #[arg(long, env = "REGISTRY_EXPORT_DRY_RUN")]
    pub dry_run: bool,
}

/// How `export` and `export-conversations` write secrets.
#[derive(Clone, Debug, Args)]
pub struct ExportSecrets {
    /// How secrets are written: the SDK's mask, plaintext (needs a token with the secrets role),
    /// or encrypted with --fernet-key-env as the SDK's own cipher.
    #[arg(
        long,
        env = "REGISTRY_EXPORT_SECRETS",
        value_enum,
        default_value = "redacted"
    )]
    pub secrets: SecretsMode,

    /// The environment variable holding the SDK's OH_SECRET_KEY, for --secrets encrypted.
    #[arg(long, env = "REGISTRY_FERNET_KEY_ENV", default_value = "OH_SECRET_KEY")]
    pub fernet_key_env: String,
}

/// Settings of `import-conversations`.
#[derive(Clone, Debug, Args)]
pub struct ImportConversationsArgs {
    /// The conversations folder [default: $OH_PERSISTENCE_DIR/conversations, else ~/.openhands/conversations].
    pub dir: Option<PathBuf>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,

    /// How conflicts, a dry run and encrypted secrets are handled.
    #[command(flatten)]
    pub choices: ImportChoices,

    /// Bind each imported agent LLM to this existing profile instead of keeping its inline copy.
    #[arg(long, env = "REGISTRY_BIND_PROFILE")]
    pub bind_profile: Option<String>,
}

/// Settings of `export-conversations`.
#[derive(Clone, Debug, Args)]
pub struct ExportConversationsArgs {
    /// The conversations folder [default: $OH_PERSISTENCE_DIR/conversations, else ~/.openhands/conversations].
    pub dir: Option<PathBuf>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,

    /// How secrets are written.
    #[command(flatten)]
    pub out: ExportSecrets,

    /// Write {"kind": "profile_ref", "profile_id": NAME} for profile bindings (the SDK alone cannot read it).
    #[arg(long, env = "REGISTRY_PROFILE_REFS")]
    pub profile_refs: bool,

    /// Only these conversations (repeatable, dashed or 32-hex ids); default all.
    #[arg(long = "id", env = "REGISTRY_EXPORT_IDS", value_delimiter = ',')]
    pub ids: Vec<String>,
}

/// Settings of `sync`.
#[derive(Clone, Debug, Args)]
pub struct SyncArgs {
    /// The profiles folder to keep equal to the registry [default: $OH_PERSISTENCE_DIR/profiles,
    /// else ~/.openhands/profiles]. Created when missing. Files the sync did not write are never
    /// touched.
    #[arg(env = "REGISTRY_SYNC_DIR")]
    pub dir: Option<PathBuf>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub client: ClientArgs,

    /// How secrets are written: the SDK's mask (the default: agents then need their keys from
    /// elsewhere), plaintext (needs a token with the secrets role), or encrypted with
    /// --fernet-key-env as the SDK's own cipher.
    #[arg(
        long,
        env = "REGISTRY_SYNC_SECRETS",
        value_enum,
        default_value = "redacted"
    )]
    pub secrets: SecretsMode,

    /// Mirror only these profiles (repeatable, or comma-separated); default all.
    #[arg(long = "name", env = "REGISTRY_SYNC_NAMES", value_delimiter = ',')]
    pub names: Vec<String>,

    /// The environment variable holding the SDK's OH_SECRET_KEY, for --secrets encrypted (the
    /// SDK's own cipher).
    #[arg(long, env = "REGISTRY_FERNET_KEY_ENV", default_value = "OH_SECRET_KEY")]
    pub fernet_key_env: String,

    /// Sync once and exit (0 when the folder is in step) instead of following changes.
    #[arg(long, env = "REGISTRY_SYNC_ONCE")]
    pub once: bool,

    /// Mirror a whole SDK persistence folder instead of DIR: its profiles/ as above, and its
    /// provider-connections/, meta-profiles/ and agent-profiles/, read every --poll-interval
    /// [DIR default: $OH_PERSISTENCE_DIR, else ~/.openhands].
    #[arg(long, env = "REGISTRY_SYNC_HOME", value_name = "DIR", num_args = 0..=1, conflicts_with = "dir")]
    pub home: Option<Option<PathBuf>>,

    /// With --home: how often the connections, meta-profiles and agent profiles are compared with
    /// the registry (profiles follow a watch, at once).
    #[arg(long, env = "REGISTRY_SYNC_POLL_INTERVAL", default_value = "2s", value_parser = crate::config::parse::parse_duration)]
    pub poll_interval: std::time::Duration,
}
