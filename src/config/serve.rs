//! The server's settings: `serve`, which is also what runs when no command is given.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

use super::{parse_duration, parse_watch_history, Cli};
use crate::domain::ConflictPolicy;
use crate::store::WatchHistory;

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

    /// Database page cache, in MiB: the part of sled's memory that holds pages written or read more
    /// than once (a page read once stays in memory beside it; see README, Performance).
    #[arg(long, env = "REGISTRY_CACHE_MB", default_value_t = 8)]
    pub cache_mb: u64,

    /// How often the server checks its RSS: when it grew by 4 MiB since the last trim (and every
    /// 30 s regardless), the memory its allocator holds freed goes back to the OS (glibc's
    /// `malloc_trim`; e.g. 1s, 250ms; 0s: never, the RSS then stays near its peak).
    #[arg(long, env = "REGISTRY_MEMORY_TRIM_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub memory_trim_interval: Duration,

    /// How many revisions of each profile are kept, the current one included (1 to 1000): they
    /// can be listed, read, compared and rolled back to.
    #[arg(long, env = "REGISTRY_HISTORY_REVISIONS", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub history_revisions: u16,

    /// How long a deleted profile's history is kept for an undelete (e.g. 7d, 12h, 0s: not at
    /// all); `delete --purge` drops it at once.
    #[arg(long, env = "REGISTRY_DELETED_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub deleted_retention: Duration,

    /// How many profile changes are kept for watches that resume (`WatchProfiles` with
    /// `start_after_seq`): a count (e.g. 10000) or an age (e.g. 1h, 7d). A watch resuming from
    /// before them is told to watch again with send_initial.
    #[arg(long, env = "REGISTRY_WATCH_HISTORY", default_value = "10000", value_parser = parse_watch_history)]
    pub watch_history: WatchHistory,

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
    pub on_conflict: ConflictPolicy,

    /// With --import-on-start: the environment variable holding the SDK's OH_SECRET_KEY.
    #[arg(long, env = "REGISTRY_FERNET_KEY_ENV", default_value = "OH_SECRET_KEY")]
    pub fernet_key_env: String,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Cli::parse_from(["profile-registry"]).serve
    }
}
