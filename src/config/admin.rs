//! The operator's commands: tokens (`new-token`), keys (`rotate-keys`), backups (`backup`,
//! `restore`), `check`, and the PostgreSQL schema and store moves (`migrate`, `migrate-store`).
use std::path::PathBuf;

use clap::Args;

use super::ClientArgs;

/// Settings of `migrate`.
#[derive(Clone, Debug, Args)]
pub struct MigrateArgs {
    /// The database, `postgres://user:password@host:port/database` (prefer the env variable: a
    /// password on the command line shows in `ps`).
    #[arg(long, env = "REGISTRY_STORE", hide_env_values = true)]
    #[arg(required_unless_present = "url")]
    pub store: Option<String>,

    /// The database, as an argument instead of --store.
    #[arg(value_name = "URL", conflicts_with = "store")]
    pub url: Option<String>,
}

/// Settings of `migrate-store`.
#[derive(Clone, Debug, Args)]
pub struct MigrateStoreArgs {
    /// Where the records are: a sled data dir path, or a postgres:// URL.
    #[arg(long, env = "REGISTRY_MIGRATE_FROM", hide_env_values = true)]
    pub from: String,

    /// Where they go (must hold no record): a postgres:// URL, or a sled data dir path.
    #[arg(long, env = "REGISTRY_MIGRATE_TO", hide_env_values = true)]
    pub to: String,

    /// The keys the records' secrets are sealed with (`<key id>:<base64>` lines). Default for a sled
    /// source: its `<data dir>/secret.key`. Needed with a PostgreSQL source.
    #[arg(long, env = "REGISTRY_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
}

/// Settings of `backup`.
#[derive(Clone, Debug, Args)]
pub struct BackupArgs {
    /// The file to write (replaced atomically when it exists).
    pub file: PathBuf,

    /// The running server to back up (its token needs the admin role when tokens are on).
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Settings of `restore`.
#[derive(Clone, Debug, Args)]
pub struct RestoreArgs {
    /// The backup file.
    pub file: PathBuf,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub at: OfflineStore,
}

/// The store `restore` fills and `rotate-keys` rotates: a sled data dir no server holds, or a
/// PostgreSQL database; with the key file.
#[derive(Clone, Debug, Args)]
pub struct OfflineStore {
    /// The data dir (only while no server holds it; `restore` needs it missing or empty).
    #[arg(
        long = "data-dir",
        env = "REGISTRY_DATA_DIR",
        required_unless_present = "store"
    )]
    pub data_dir: Option<PathBuf>,

    /// Or the PostgreSQL database (`postgres://...`), with --secret-key-file. `restore` needs one
    /// that holds no profile or conversation; `rotate-keys` rotates it in one transaction while
    /// servers keep serving.
    #[arg(long, env = "REGISTRY_STORE", hide_env_values = true)]
    #[arg(conflicts_with = "data_dir")]
    pub store: Option<String>,

    /// Key file, one `<key id>:<base64 of 32 bytes>` per line: the first encrypts, every one
    /// decrypts [default: the data dir's own secret.key]. For `restore`: the keys of the server
    /// the backup came from, needed when it holds secrets (serve the restored store with them).
    /// For `rotate-keys`: the new key first, the old ones after it.
    #[arg(long, env = "REGISTRY_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
}

/// Settings of `check`.
#[derive(Clone, Debug, Args)]
pub struct CheckArgs {
    /// The server's database folder (only while no server holds it).
    #[arg(long = "data-dir", env = "REGISTRY_DATA_DIR")]
    pub data_dir: PathBuf,

    /// The server's key file [default: the data dir's own secret.key].
    #[arg(long, env = "REGISTRY_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,

    /// Move the records that do not decode (a damaged conversation with its events and bindings)
    /// and bindings to missing conversations aside into the data dir's quarantine, which `check`
    /// lists; then check again. Other problems are reported, not changed.
    #[arg(long, env = "REGISTRY_CHECK_REPAIR")]
    pub repair: bool,
}

/// Settings of `rotate-keys`.
#[derive(Clone, Debug, Args)]
pub struct RotateKeysArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub at: OfflineStore,
}

/// Settings of `new-token`.
#[derive(Clone, Debug, Args)]
pub struct NewTokenArgs {
    /// The token's name: who it is for; it appears in audit lines.
    #[arg(long, env = "REGISTRY_TOKEN_NAME")]
    pub name: String,

    /// Its roles, comma-separated: reader, writer, secrets, admin.
    #[arg(long, env = "REGISTRY_TOKEN_ROLES", default_value = "reader")]
    pub roles: String,
}
