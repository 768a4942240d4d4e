//! The PostgreSQL implementation of the store, for several stateless replicas on one database.
//!
//! Same records and rules as sled (store::codec, store::rules). Writes that read-check-write across
//! records take one database-wide advisory lock in their transaction (the counterpart of sled's write
//! lock, now shared by every replica); appends take it shared plus their conversation's row lock, so
//! appends to different conversations run side by side while seqs stay contiguous. Each replica
//! LISTENs for change notifications: profile changes are read back in seq order from
//! `profile_changes` to feed its watchers and invalidate its profile cache.
mod conversations;
mod documents;
mod listener;
mod maintenance;
mod profiles;
mod puts;
mod rows;
mod watches;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::{broadcast, watch};

use self::rows::Run;
use super::codec::Codec;
use super::crypto::SecretCipher;
use super::{EventBatch, ProfileChange, StoreError, WatchHistory};
use crate::domain::{Conversation, ConversationId};

pub use self::listener::ProfileCache;

/// The schema, applied at start (and by `profile-registry migrate`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/postgres/migrations");

/// The advisory lock every structural write holds (shared by appends): "profile-registry" in hex.
const WRITE_LOCK: i64 = 0x7072_6f66_696c_6572;
/// The notification channel.
const CHANNEL: &str = "profile_registry_changes";
/// How many changes a watcher may fall behind before it is cut off.
const WATCH_BACKLOG: usize = 4096;

/// Settings of the PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Connections in the pool (the listener has one more).
    pub max_connections: u32,
    /// How long a call waits for a free connection (or a new one) before UNAVAILABLE.
    pub acquire_timeout: Duration,
    /// Profiles kept in the cache at most.
    pub cache_entries: usize,
    /// Without a key file: the folder whose `secret.key` is used (generated when missing), as sled
    /// does; `None`: a key file is required.
    pub local_key_dir: Option<PathBuf>,
    /// How many revisions of each profile the history keeps, the current one included.
    pub history_revisions: usize,
    /// How much of the profile change log is kept for watches that resume.
    pub watch_history: WatchHistory,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            cache_entries: 100_000,
            local_key_dir: None,
            history_revisions: crate::store::sled::DEFAULT_HISTORY_REVISIONS,
            watch_history: WatchHistory::default(),
        }
    }
}

/// Why the database could not be opened: each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PgOpenError {
    /// The URL does not parse.
    #[error("--store: not a valid postgres:// URL: {0}")]
    Url(String),
    /// A certificate or key file the URL names cannot be read.
    #[error("--store: {param} {path}: cannot read: {reason}")]
    TlsFile {
        /// `sslrootcert`, `sslcert` or `sslkey`.
        param: String,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The server cannot be reached or refuses us.
    #[error("--store: cannot connect to PostgreSQL at {target}: {reason}")]
    Connect {
        /// host:port/database, without the password.
        target: String,
        /// Why.
        reason: String,
    },
    /// The schema cannot be applied.
    #[error("--store: cannot apply the schema at {target}: {reason}")]
    Migrate {
        /// host:port/database.
        target: String,
        /// Why.
        reason: String,
    },
    /// The keys cannot be read.
    #[error(transparent)]
    Keys(#[from] super::crypto::KeyError),
    /// No key file was given.
    #[error("--store postgres://... needs --secret-key-file: every replica must seal and open secrets with the same keys, and they must not live in the database")]
    NoKeyFile,
    /// The database's secrets were sealed with keys this server does not have.
    #[error("--secret-key-file: the secrets in {target} are sealed with key {key_id:?}, which this server's keys do not open; give every replica the same key file")]
    WrongKeys {
        /// host:port/database.
        target: String,
        /// The key id the database's check value names.
        key_id: String,
    },
}

pub(crate) fn store_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(e.to_string()),
        // Serialization failures and deadlocks (retry), connection exceptions (class 08), too
        // many connections (53300), shutdowns (57P01-57P03), a database not accepting connections
        // (55000 at connect).
        sqlx::Error::Database(ref db)
            if db.code().is_some_and(|c| {
                c.starts_with("08")
                    || matches!(
                        c.as_ref(),
                        "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03" | "55000"
                    )
            }) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Storage(other.to_string()),
    }
}

/// Checks that the certificate files the URL names (`sslrootcert`, `sslcert`, `sslkey`) can be
/// read, so that a wrong path is named instead of surfacing as a bare "No such file or directory"
/// from the connection. A PEM given inline is never echoed.
fn check_tls_files(options: &PgConnectOptions) -> Result<(), PgOpenError> {
    use sqlx::ConnectOptions;
    for (param, value) in options.to_url_lossy().query_pairs() {
        if !matches!(param.as_ref(), "sslrootcert" | "sslcert" | "sslkey") {
            continue;
        }
        if let Some(path) = value.strip_prefix("file: ") {
            if let Err(e) = std::fs::File::open(path) {
                return Err(PgOpenError::TlsFile {
                    param: param.into_owned(),
                    path: path.to_owned(),
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Warns when the connection to a database on another machine does not verify the server's
/// certificate (libpq's default `sslmode=prefer` encrypts when it can but checks nothing).
fn warn_if_unverified(options: &PgConnectOptions) {
    if !unverified_remote(options) {
        return;
    }
    tracing::warn!(
        host = options.get_host(),
        sslmode = format!("{:?}", options.get_ssl_mode()).to_lowercase(),
        "the connection to PostgreSQL does not verify the server's certificate; add \
         sslmode=verify-full&sslrootcert=CA.pem to the --store URL"
    );
}

/// Whether the database is on another machine and its certificate is not verified.
fn unverified_remote(options: &PgConnectOptions) -> bool {
    use sqlx::postgres::PgSslMode;
    let host = options.get_host();
    !(matches!(
        options.get_ssl_mode(),
        PgSslMode::VerifyCa | PgSslMode::VerifyFull
    ) || options.get_socket().is_some()
        || host.starts_with('/')
        || crate::is_loopback_host(host))
}

/// `host:port/database` of a URL, never its password.
pub fn describe_url(url: &str) -> String {
    match url.parse::<PgConnectOptions>() {
        Ok(o) => format!(
            "{}:{}/{}",
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("")
        ),
        Err(_) => "(unparsable URL)".into(),
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgPool,
    codec: Arc<Codec>,
    cache: Arc<ProfileCache>,
    changes: broadcast::Sender<ProfileChange>,
    event_changes: broadcast::Sender<EventBatch>,
    connected: watch::Receiver<bool>,
    listener: tokio::task::JoinHandle<()>,
    puts: tokio::sync::mpsc::Sender<puts::PutJob>,
    batcher: tokio::task::JoinHandle<()>,
    target: String,
    /// How many revisions of each profile the history keeps (at least 1).
    history_revisions: i64,
    /// The newest change seq the listener handed to this replica's watchers.
    published: Arc<AtomicU64>,
    watch_history: WatchHistory,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.batcher.abort();
    }
}

fn uuid(id: &ConversationId) -> uuid::Uuid {
    uuid::Uuid::from_bytes(*id.as_bytes())
}

/// The history length as the database takes it: at least the current revision.
fn history_keep(revisions: usize) -> i64 {
    i64::try_from(revisions.max(1)).unwrap_or(i64::MAX)
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A transaction holding the write lock.
type Tx = Transaction<'static, Postgres>;

/// Commits; every write is durable on the database when this returns (the time is the flush
/// metric). With REGISTRY_FAULT_ACK_BEFORE_FLUSH=1 (debug builds) it returns at once and commits
/// 100 ms later, for the campaign to catch.
async fn commit(tx: Tx) -> Result<(), StoreError> {
    if super::fault::ack_before_flush() {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = tx.commit().await;
        });
        return Ok(());
    }
    let started = std::time::Instant::now();
    tx.commit().await.map_err(store_error)?;
    crate::metrics::record_flush(started.elapsed().as_secs_f64());
    Ok(())
}

impl PgStore {
    /// The key that authenticates this store's page tokens: the same on every replica given the
    /// same key file (see [`SecretCipher::page_key`]).
    pub fn page_key(&self) -> [u8; 32] {
        self.codec.cipher().page_key()
    }

    /// Connects, applies the schema and starts listening for changes. `key_file` is required.
    pub async fn open(
        url: &str,
        key_file: Option<&Path>,
        options: &PgOptions,
    ) -> Result<Arc<Self>, PgOpenError> {
        let cipher = match (key_file, &options.local_key_dir) {
            (Some(file), _) => SecretCipher::from_key_file(file)?,
            (None, Some(dir)) => {
                std::fs::create_dir_all(dir).map_err(|e| super::crypto::KeyError {
                    path: dir.clone(),
                    reason: format!("cannot create the folder for secret.key: {e}"),
                })?;
                let (cipher, source) = SecretCipher::load(None, dir)?;
                if let super::crypto::KeySource::Local { path, created } = source {
                    tracing::warn!(
                        key_file = %path.display(),
                        created,
                        "no --secret-key-file: secrets are sealed with this server's own key; every replica on the database must use the same key, so give them all --secret-key-file (e.g. a mounted Kubernetes Secret)"
                    );
                }
                cipher
            }
            (None, None) => return Err(PgOpenError::NoKeyFile),
        };
        let pool = Self::connect(url, options).await?;
        let target = describe_url(url);
        if super::fault::ack_before_flush() {
            tracing::warn!("FAULT INJECTION: writes are acknowledged before they commit (REGISTRY_FAULT_ACK_BEFORE_FLUSH=1, debug builds only)");
        }
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| PgOpenError::Migrate {
                target: target.clone(),
                reason: e.to_string(),
            })?;
        check_keys(&pool, &cipher, &target).await?;
        let (changes, _) = broadcast::channel(WATCH_BACKLOG);
        let (event_changes, _) = broadcast::channel(WATCH_BACKLOG);
        let codec = Arc::new(Codec::new(cipher));
        let cache = Arc::new(ProfileCache::new(options.cache_entries));
        let (connected_tx, connected) = watch::channel(false);
        // A server killed mid-write may leave a transaction that PostgreSQL is still committing
        // (or about to abort once it sees the closed connection). Every write holds WRITE_LOCK
        // until it ends, so taking it once waits those out: this server's first reads show their
        // outcome, never a state the old transaction changes afterwards.
        let barrier = async {
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(WRITE_LOCK)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        };
        match tokio::time::timeout(Duration::from_secs(10), barrier).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(PgOpenError::Connect {
                    target,
                    reason: e.to_string(),
                })
            }
            Err(_) => {
                return Err(PgOpenError::Connect {
                    target,
                    reason: "writes in flight did not end within 10 s".into(),
                })
            }
        }
        let last_seq = rows::next_seq(&pool)
            .await
            .map_err(|e| PgOpenError::Connect {
                target: target.clone(),
                reason: e.to_string(),
            })?
            - 1;
        let published = Arc::new(AtomicU64::new(last_seq));
        let listener = tokio::spawn(listener::run(listener::Listener {
            pool: pool.clone(),
            codec: codec.clone(),
            cache: cache.clone(),
            changes: changes.clone(),
            event_changes: event_changes.clone(),
            connected: connected_tx,
            last_seq,
            published: Arc::clone(&published),
        }));
        // Serve only once changes from other replicas reach this one (and readiness says so).
        let mut ready = connected.clone();
        let waited = tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|up| *up)).await;
        if !matches!(waited, Ok(Ok(_))) {
            listener.abort();
            return Err(PgOpenError::Connect {
                target,
                reason: "cannot LISTEN for changes within 10 s".into(),
            });
        }
        let (puts, jobs) = tokio::sync::mpsc::channel(4096);
        let batcher = tokio::spawn(puts::run(
            puts::Batcher {
                pool: pool.clone(),
                codec: codec.clone(),
                cache: cache.clone(),
                keep: history_keep(options.history_revisions),
            },
            jobs,
        ));
        let store = Arc::new(Self {
            pool,
            codec,
            cache,
            changes,
            event_changes,
            connected,
            listener,
            puts,
            batcher,
            target,
            history_revisions: history_keep(options.history_revisions),
            published,
            watch_history: options.watch_history,
        });
        Ok(store)
    }

    /// A pool on `url` (connected once, so a wrong URL fails here).
    pub async fn connect(url: &str, options: &PgOptions) -> Result<PgPool, PgOpenError> {
        let connect: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
            PgOpenError::Url(match e {
                sqlx::Error::Configuration(c) => c.to_string(),
                other => other.to_string(),
            })
        })?;
        check_tls_files(&connect)?;
        warn_if_unverified(&connect);
        // The URL's application_name (e.g. one per replica) wins over ours.
        let connect = match connect.get_application_name() {
            Some(_) => connect,
            None => connect.application_name("profile-registry"),
        };
        PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| PgOpenError::Connect {
                target: describe_url(url),
                reason: e.to_string(),
            })
    }

    /// Applies the schema; returns the versions applied now.
    pub async fn migrate(url: &str) -> Result<Vec<i64>, PgOpenError> {
        let pool = Self::connect(url, &PgOptions::default()).await?;
        let target = describe_url(url);
        let fail = |reason: String| PgOpenError::Migrate {
            target: target.clone(),
            reason,
        };
        let before: Vec<i64> = applied_versions(&pool).await;
        MIGRATOR.run(&pool).await.map_err(|e| fail(e.to_string()))?;
        let after = applied_versions(&pool).await;
        Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
    }

    /// host:port/database.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// True while the listener is connected: readiness.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// How many profiles and conversations are stored.
    pub async fn counts(&self) -> Result<(usize, usize), StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM profiles), (SELECT count(*) FROM conversations)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        let n = |i: usize| usize::try_from(row.get::<i64, _>(i)).unwrap_or(0);
        Ok((n(0), n(1)))
    }

    /// The database's size, in bytes.
    pub async fn size_on_disk(&self) -> u64 {
        sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())")
            .fetch_one(&self.pool)
            .await
            .ok()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0)
    }

    /// Starts a transaction holding the write lock: exclusive, or shared (appends).
    async fn begin(&self, exclusive: bool) -> Result<Tx, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let lock = if exclusive {
            "SELECT pg_advisory_xact_lock($1)"
        } else {
            "SELECT pg_advisory_xact_lock_shared($1)"
        };
        sqlx::query(lock).bind(WRITE_LOCK).run(&mut *tx).await?;
        Ok(tx)
    }

    async fn commit(&self, tx: Tx) -> Result<(), StoreError> {
        commit(tx).await
    }

    async fn read_conversation(
        &self,
        tx: &mut Tx,
        id: &ConversationId,
        lock: bool,
    ) -> Result<Option<Conversation>, StoreError> {
        let sql = if lock {
            "SELECT record, event_count FROM conversations WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT record, event_count FROM conversations WHERE id = $1"
        };
        let row: Option<(Vec<u8>, i64)> = sqlx::query_as(sql)
            .bind(uuid(id))
            .fetch_optional(&mut **tx)
            .await
            .map_err(store_error)?;
        row.map(|(bytes, count)| self.conversation(id, &bytes, count))
            .transpose()
    }

    fn conversation(
        &self,
        id: &ConversationId,
        bytes: &[u8],
        event_count: i64,
    ) -> Result<Conversation, StoreError> {
        let mut c = self.codec.decode_conversation(id.as_bytes(), bytes)?;
        c.event_count = event_count;
        Ok(c)
    }

    /// Stores a conversation (insert or replace) with its bindings.
    async fn write_conversation(&self, tx: &mut Tx, c: &Conversation) -> Result<(), StoreError> {
        let bytes = self.codec.encode_conversation(c)?;
        rows::put_conversation(tx, c, &bytes).await?;
        let names: Vec<String> = c.bound_profiles().map(|n| n.to_string()).collect();
        rows::set_bindings(tx, &c.id, &names).await
    }
}

/// The associated data of the key check value.
const KEY_CHECK_PLACE: &str = "registry/key-check";

/// Refuses keys that do not open the database's key check value (stored by the first server).
async fn check_keys(pool: &PgPool, cipher: &SecretCipher, target: &str) -> Result<(), PgOpenError> {
    let fail = |e: sqlx::Error| PgOpenError::Connect {
        target: target.to_owned(),
        reason: e.to_string(),
    };
    sqlx::query(
        "INSERT INTO registry_meta (key, value) VALUES ('key_check', $1) ON CONFLICT (key) DO NOTHING",
    )
    .bind(cipher.seal("profile-registry", KEY_CHECK_PLACE))
    .execute(pool)
    .await
    .map_err(fail)?;
    let stored: String =
        sqlx::query_scalar("SELECT value FROM registry_meta WHERE key = 'key_check'")
            .fetch_one(pool)
            .await
            .map_err(fail)?;
    match cipher.open(&stored, KEY_CHECK_PLACE) {
        Ok(_) => Ok(()),
        Err(_) => Err(PgOpenError::WrongKeys {
            target: target.to_owned(),
            key_id: SecretCipher::key_id_of(&stored).unwrap_or("?").to_owned(),
        }),
    }
}

async fn applied_versions(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unverified_connections_to_other_machines_are_flagged() {
        let flagged = |url: &str| unverified_remote(&url.parse().unwrap());
        assert!(flagged("postgres://u@db.example.com/app"));
        assert!(flagged("postgres://u@db.example.com/app?sslmode=require"));
        assert!(flagged("postgres://u@10.0.0.7:5432/app?sslmode=prefer"));
        assert!(!flagged(
            "postgres://u@db.example.com/app?sslmode=verify-full&sslrootcert=/ca.pem"
        ));
        assert!(!flagged(
            "postgres://u@db.example.com/app?sslmode=verify-ca"
        ));
        assert!(!flagged("postgres://u@127.0.0.1:5432/app"));
        assert!(!flagged("postgres://u@localhost/app?sslmode=disable"));
        assert!(!flagged("postgres://u@[::1]:5432/app"));
        assert!(!flagged("postgres://u@%2Fvar%2Frun%2Fpostgresql/app"));
    }
}
