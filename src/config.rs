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
    Serve(Box<ServeArgs>),
    /// Import an SDK profiles folder (`<name>.json` files) into the registry.
    Import(ImportArgs),
    /// Export the registry's profiles as an SDK profiles folder, byte for byte what the SDK writes.
    Export(ExportArgs),
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

/// Settings of `list`.
#[derive(Clone, Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

/// Settings of `get`.
#[derive(Clone, Debug, Args)]
pub struct GetArgs {
    /// The profile's name.
    pub name: String,

    /// Show the secrets' values instead of the mask (needs the secrets role; audited).
    #[arg(long)]
    pub reveal_secrets: bool,

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
    pub target: TargetArgs,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
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
    pub target: TargetArgs,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

/// Settings of `watch`.
#[derive(Clone, Debug, Args)]
pub struct WatchArgs {
    /// Print every current profile first, then the changes.
    #[arg(long)]
    pub send_initial: bool,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
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
    pub target: TargetArgs,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
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
    pub target: TargetArgs,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
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
    pub target: TargetArgs,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

/// Settings of `completions`.
#[derive(Clone, Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Settings of `migrate`.
#[derive(Clone, Debug, Args)]
pub struct MigrateArgs {
    /// The database, `postgres://user:password@host:port/database` (prefer the env variable: a
    /// password on the command line shows in `ps`).
    #[arg(
        long,
        env = "REGISTRY_STORE",
        hide_env_values = true,
        required_unless_present = "url"
    )]
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

/// How a client command reaches a running server: its address, the bearer token, TLS.
#[derive(Clone, Debug, Args)]
pub struct ClientArgs {
    /// The running server: `host:port` or `http://host:port` (plaintext), or `https://host:port`
    /// when it serves TLS.
    #[arg(long, env = "REGISTRY_SERVER", default_value = "127.0.0.1:50051")]
    pub server: String,

    /// The environment variable holding the bearer token to send (when the server requires
    /// tokens). The token is read from the environment, never from a flag, so it stays out of `ps`
    /// and shell history.
    #[arg(long, env = "REGISTRY_TOKEN_ENV", default_value = "REGISTRY_TOKEN")]
    pub token_env: String,

    /// With https://: PEM CA certificates to verify the server's certificate with [default: the
    /// Mozilla root CAs].
    #[arg(long, env = "REGISTRY_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// With https://: PEM client certificate, for a server that requires mutual TLS.
    #[arg(long, env = "REGISTRY_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// With https://: the PEM private key of --client-cert.
    #[arg(long, env = "REGISTRY_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// With https://: the name the server's certificate must carry, when it differs from the
    /// --server host (e.g. through `kubectl port-forward` to localhost).
    #[arg(long, env = "REGISTRY_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}

impl ClientArgs {
    /// The server at `url`, no token, no TLS settings.
    pub fn plain(url: &str) -> Self {
        Self {
            server: url.to_owned(),
            token_env: "REGISTRY_TOKEN".to_owned(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            tls_server_name: None,
        }
    }
}

/// Settings of `restore`.
#[derive(Clone, Debug, Args)]
pub struct RestoreArgs {
    /// The backup file.
    pub file: PathBuf,

    /// The data dir to fill: it must not exist or be empty.
    #[arg(
        long = "data-dir",
        env = "REGISTRY_DATA_DIR",
        required_unless_present = "store"
    )]
    pub data_dir: Option<PathBuf>,

    /// Or the PostgreSQL database to fill (`postgres://...`; it must hold no profile or
    /// conversation); --secret-key-file is then required.
    #[arg(
        long,
        env = "REGISTRY_STORE",
        hide_env_values = true,
        conflicts_with = "data_dir"
    )]
    pub store: Option<String>,

    /// The key file of the server the backup came from (its --secret-key-file, or its data dir's
    /// secret.key); needed when the backup holds secrets. Serve the restored dir with it too.
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
    /// The server's database folder (only while no server holds it).
    #[arg(
        long = "data-dir",
        env = "REGISTRY_DATA_DIR",
        required_unless_present = "store"
    )]
    pub data_dir: Option<PathBuf>,

    /// Or the PostgreSQL database (`postgres://...`): rotated in one transaction while servers keep
    /// serving; give --secret-key-file with the new key first and the old ones after it.
    #[arg(
        long,
        env = "REGISTRY_STORE",
        hide_env_values = true,
        conflicts_with = "data_dir"
    )]
    pub store: Option<String>,

    /// Key file, one `<key id>:<base64 of 32 bytes>` per line: the first encrypts, every one decrypts
    /// [default: the data dir's own secret.key].
    #[arg(long, env = "REGISTRY_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
}

/// Settings of `import-conversations`.
#[derive(Clone, Debug, Args)]
pub struct ImportConversationsArgs {
    /// The conversations folder [default: $OH_PERSISTENCE_DIR/conversations, else ~/.openhands/conversations].
    pub dir: Option<PathBuf>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,

    /// What to do when a conversation with that id exists (overwrite replaces it and its events).
    #[arg(long, env = "REGISTRY_ON_CONFLICT", value_enum, default_value = "skip")]
    pub on_conflict: OnConflict,

    /// Report what would happen without writing anything.
    #[arg(long, env = "REGISTRY_DRY_RUN")]
    pub dry_run: bool,

    /// The environment variable holding the SDK's OH_SECRET_KEY, to read encrypted secrets.
    #[arg(long, env = "REGISTRY_FERNET_KEY_ENV", default_value = "OH_SECRET_KEY")]
    pub fernet_key_env: String,

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

    /// How the secrets of the written LLMs appear.
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

    /// Write {"kind": "profile_ref", "profile_id": NAME} for profile bindings (the SDK alone cannot read it).
    #[arg(long, env = "REGISTRY_PROFILE_REFS")]
    pub profile_refs: bool,

    /// Only these conversations (repeatable, dashed or 32-hex ids); default all.
    #[arg(long = "id", env = "REGISTRY_EXPORT_IDS", value_delimiter = ',')]
    pub ids: Vec<String>,
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

/// Where a client command sends its work.
#[derive(Clone, Debug, Args)]
pub struct TargetArgs {
    /// The running server to talk to.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Work on this database folder directly instead of a server (only while no server holds it).
    #[arg(long = "data-dir", env = "REGISTRY_DIRECT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// With --data-dir: the server's key file (`<key id>:<base64>` lines) [default: the data dir's secret.key].
    #[arg(long, env = "REGISTRY_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
}

/// What an import does with a profile name that exists, and an export with a file that differs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OnConflict {
    /// Keep what is there (import: the stored profile; export: the folder's file).
    #[default]
    Skip,
    /// Replace it (import: with the file's profile; export: with the registry's profile).
    Overwrite,
    /// Write nothing at all when any name conflicts.
    Fail,
}

impl From<OnConflict> for crate::store::ConflictPolicy {
    fn from(c: OnConflict) -> Self {
        match c {
            OnConflict::Skip => Self::Skip,
            OnConflict::Overwrite => Self::Overwrite,
            OnConflict::Fail => Self::Fail,
        }
    }
}

/// How exported files carry secrets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum SecretsMode {
    /// The SDK's mask "**********" (the SDK's default).
    #[default]
    Redacted,
    /// The secret values (the SDK's include_secrets=True).
    Plaintext,
    /// Fernet tokens with the key from --fernet-key-env (the SDK with OH_SECRET_KEY).
    Encrypted,
}

/// Settings of `import`.
#[derive(Clone, Debug, Args)]
pub struct ImportArgs {
    /// The profiles folder [default: $OH_PERSISTENCE_DIR/profiles, else ~/.openhands/profiles].
    pub dir: Option<PathBuf>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,

    /// What to do when a profile of that name exists.
    #[arg(long, env = "REGISTRY_ON_CONFLICT", value_enum, default_value = "skip")]
    pub on_conflict: OnConflict,

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
    /// The profiles folder [default: $OH_PERSISTENCE_DIR/profiles, else ~/.openhands/profiles].
    pub dir: Option<PathBuf>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,

    /// How secrets are written.
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
    pub on_conflict: OnConflict,

    /// Report what would be written, kept and pruned without touching the folder.
    #[arg(long, env = "REGISTRY_EXPORT_DRY_RUN")]
    pub dry_run: bool,
}

/// Settings of `serve`.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on for gRPC (HTTP/2; TLS with --tls-cert).
    #[arg(long, env = "REGISTRY_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Also serve grpc.health.v1 alone, in plaintext and without tokens, on this address (e.g.
    /// 0.0.0.0:50052): for Kubernetes' gRPC probes, which cannot speak TLS, when --listen serves
    /// TLS. Nothing but health status is reachable there (off when unset).
    #[arg(long, env = "REGISTRY_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// Folder of the embedded database; created when missing, locked while served. Not used with
    /// --store.
    #[arg(long, env = "REGISTRY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Run on PostgreSQL instead of sled, for several replicas on one database:
    /// `postgres://user:password@host:port/database` (prefer the env variable: a password on the
    /// command line shows in `ps`). The schema is applied at start. Give every replica the same
    /// --secret-key-file (a replica whose keys do not open the database's secrets refuses to start).
    /// Default: sled in --data-dir.
    #[arg(long, env = "REGISTRY_STORE", hide_env_values = true)]
    pub store: Option<String>,

    /// Connections to PostgreSQL per server (the change listener has one more).
    #[arg(long, env = "REGISTRY_STORE_MAX_CONNECTIONS", default_value_t = 16)]
    pub store_max_connections: u32,

    /// Keys that encrypt secrets at rest, one `<key id>:<base64 of 32 bytes>` per line (e.g. a mounted
    /// Kubernetes Secret): the first encrypts, every one decrypts. Default: `<data dir>/secret.key`,
    /// generated on first start (the key then lives beside the data).
    #[arg(long, env = "REGISTRY_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,

    /// On SIGTERM/SIGINT, how long in-flight calls may take before they are cut (e.g. 10s, 500ms).
    #[arg(long, env = "REGISTRY_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Database page cache, in MiB.
    #[arg(long, env = "REGISTRY_CACHE_MB", default_value_t = 32)]
    pub cache_mb: u64,

    /// Largest profile accepted, measured as the SDK's JSON file, in bytes.
    #[arg(long, env = "REGISTRY_MAX_PROFILE_BYTES", default_value_t = 64 * 1024)]
    pub max_profile_bytes: usize,

    /// Largest gRPC request message accepted, in bytes (OUT_OF_RANGE above).
    #[arg(long, env = "REGISTRY_MAX_REQUEST_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_request_bytes: usize,

    /// Largest page_size a list call may ask for (INVALID_ARGUMENT above).
    #[arg(long, env = "REGISTRY_MAX_PAGE_SIZE", default_value_t = 1000)]
    pub max_page_size: usize,

    /// Concurrent streams (calls) one HTTP/2 connection may open (RST_STREAM/REFUSED above).
    #[arg(
        long,
        env = "REGISTRY_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 256
    )]
    pub max_streams_per_connection: u32,

    /// Deadline of a unary call (and of a stream's start) unless the client sets a shorter one (e.g. 30s).
    #[arg(long, env = "REGISTRY_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Serve TLS with this PEM certificate chain (needs --tls-key); re-read when the file changes.
    #[arg(long, env = "REGISTRY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert; re-read when the file changes.
    #[arg(long, env = "REGISTRY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates that chain to these PEM CA certificates (mutual TLS).
    #[arg(long, env = "REGISTRY_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Serve Prometheus metrics at http://ADDR/metrics (off when unset), e.g. 0.0.0.0:9090.
    #[arg(long, env = "REGISTRY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// File of bearer tokens (one `name:role,role:sha256:<hex>` per line; see `new-token`); re-read when it changes.
    #[arg(long, env = "REGISTRY_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,

    /// Serve without authentication on a non-loopback address (without a tokens file the server
    /// otherwise refuses to listen anywhere but loopback).
    #[arg(long, env = "REGISTRY_INSECURE_ALLOW_UNAUTHENTICATED")]
    pub insecure_allow_unauthenticated: bool,

    /// Require a valid token (any role) for reflection too; health always stays open.
    #[arg(long, env = "REGISTRY_PROTECT_REFLECTION")]
    pub protect_reflection: bool,

    /// Import this SDK profiles folder at start, before serving (e.g. a mounted ConfigMap or Secret).
    #[arg(long, env = "REGISTRY_IMPORT_ON_START")]
    pub import_on_start: Option<PathBuf>,

    /// With --import-on-start: what to do when a profile of that name exists.
    #[arg(long, env = "REGISTRY_ON_CONFLICT", value_enum, default_value = "skip")]
    pub on_conflict: OnConflict,

    /// With --import-on-start: the environment variable holding the SDK's OH_SECRET_KEY.
    #[arg(long, env = "REGISTRY_FERNET_KEY_ENV", default_value = "OH_SECRET_KEY")]
    pub fernet_key_env: String,
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
                | Self::Watch(_)
                | Self::Conversations(_)
                | Self::Completions(_)
        )
    }
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

    /// Log filter, e.g. info, debug, or profile_registry=debug,info [default: info; error for the
    /// everyday commands (list, get, put, delete, rename, watch, conversations), whose output is
    /// their answer].
    #[arg(long, global = true, env = "REGISTRY_LOG")]
    pub log_level: Option<String>,
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
