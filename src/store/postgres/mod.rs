//! The PostgreSQL implementation of the store, for several stateless replicas on one database.
//!
//! Same records and rules as sled (store::codec, store::rules). Writes that read-check-write across
//! records take one database-wide advisory lock in their transaction (the counterpart of sled's write
//! lock, now shared by every replica); appends take it shared plus their conversation's row lock, so
//! appends to different conversations run side by side while seqs stay contiguous. Each replica
//! LISTENs for change notifications: profile changes are read back in seq order from
//! `profile_changes` to feed its watchers and invalidate its profile cache.
mod listener;
mod maintenance;
mod puts;
mod rows;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::{broadcast, watch};

use super::codec::{Codec, ProfileRecord};
use super::crypto::SecretCipher;
use super::rules;
use super::{
    ConflictPolicy, ConversationStore, EventBatch, EventQuery, ImportOutcome, ProfileChange,
    ProfileStore, ProfileWatch, PutMode, PutOutcome, StoreError,
};
use crate::domain::{
    Conversation, ConversationId, Event, ExecutionStatus, LlmConfig, NewEvent, Profile, ProfileName,
};

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
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            cache_entries: 100_000,
            local_key_dir: None,
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
        let last_seq = rows::next_seq(&pool)
            .await
            .map_err(|e| PgOpenError::Connect {
                target: target.clone(),
                reason: e.to_string(),
            })?
            - 1;
        let listener = tokio::spawn(listener::run(listener::Listener {
            pool: pool.clone(),
            codec: codec.clone(),
            cache: cache.clone(),
            changes: changes.clone(),
            event_changes: event_changes.clone(),
            connected: connected_tx,
            last_seq,
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
        sqlx::query(lock)
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        Ok(tx)
    }

    async fn commit(&self, tx: Tx) -> Result<(), StoreError> {
        commit(tx).await
    }

    async fn read_profile(
        &self,
        tx: &mut Tx,
        name: &ProfileName,
    ) -> Result<Option<Profile>, StoreError> {
        let row: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT record FROM profiles WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(store_error)?;
        row.map(|bytes| {
            self.codec
                .decode_profile(name.as_str().as_bytes(), &bytes)
                .map(|r| r.profile)
        })
        .transpose()
    }

    /// The stored bytes of a profile. Its change seq lives in the `seq` column, not in the record
    /// (so a put can take its seq in the same statement that writes it).
    fn encode(&self, profile: &Profile) -> Result<Vec<u8>, StoreError> {
        self.codec.encode_profile(&ProfileRecord {
            seq: 0,
            profile: profile.clone(),
        })
    }

    /// Writes `profiles` (each at the next change seq) and their change rows, and notifies.
    async fn write_profiles(
        &self,
        tx: &mut Tx,
        profiles: Vec<Profile>,
    ) -> Result<Vec<ProfileChange>, StoreError> {
        let first = rows::take_seqs(tx, profiles.len()).await?;
        let records = profiles
            .iter()
            .map(|p| self.encode(p))
            .collect::<Result<Vec<_>, _>>()?;
        rows::put_profiles(tx, first, &profiles, &records).await?;
        let changes = (first..)
            .zip(profiles)
            .map(|(seq, p)| ProfileChange::Put {
                seq,
                profile: Arc::new(p),
            })
            .collect();
        Ok(changes)
    }

    /// Deletes a profile row and records the change.
    async fn remove_profile(
        &self,
        tx: &mut Tx,
        profile: &Profile,
    ) -> Result<ProfileChange, StoreError> {
        let seq = rows::take_seqs(tx, 1).await?;
        rows::delete_profile(tx, seq, profile).await?;
        Ok(ProfileChange::Delete {
            seq,
            name: profile.name.clone(),
            revision: profile.revision,
        })
    }

    /// Commits a transaction that changed profiles: notifies every replica (this one included) in
    /// the same transaction, and drops the names from this replica's cache before answering, so the
    /// caller reads its own write here at once.
    async fn commit_profiles(
        &self,
        mut tx: Tx,
        changes: &[ProfileChange],
    ) -> Result<(), StoreError> {
        let names: Vec<(&str, u64)> = changes
            .iter()
            .filter_map(|c| match c {
                ProfileChange::Put { profile, seq } => Some((profile.name.as_str(), *seq)),
                ProfileChange::Delete { name, seq, .. } => Some((name.as_str(), *seq)),
                ProfileChange::Missed { .. } => None,
            })
            .collect();
        let listed: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
        rows::notify_profiles(&mut tx, &listed).await?;
        let result = self.commit(tx).await;
        for (name, seq) in names {
            self.cache.invalidate(name, seq);
        }
        result
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

    async fn check_profiles_exist(&self, tx: &mut Tx, c: &Conversation) -> Result<(), StoreError> {
        for name in c.bound_profiles() {
            let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM profiles WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(store_error)?;
            if found.is_none() {
                return Err(rules::not_found(name));
            }
        }
        Ok(())
    }

    async fn bound_to(
        &self,
        tx: &mut Tx,
        name: &ProfileName,
        limit_to: usize,
    ) -> Result<Vec<ConversationId>, StoreError> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT conversation FROM bindings WHERE profile = $1 ORDER BY conversation LIMIT $2",
        )
        .bind(name.as_str())
        .bind(limit(limit_to))
        .fetch_all(&mut **tx)
        .await
        .map_err(store_error)?;
        Ok(ids
            .into_iter()
            .map(|u| ConversationId::from_bytes(u.into_bytes()))
            .collect())
    }

    /// Stores a conversation (insert or replace) with its bindings.
    async fn write_conversation(&self, tx: &mut Tx, c: &Conversation) -> Result<(), StoreError> {
        let bytes = self.codec.encode_conversation(c)?;
        rows::put_conversation(tx, c, &bytes).await?;
        let names: Vec<String> = c.bound_profiles().map(|n| n.to_string()).collect();
        rows::set_bindings(tx, &c.id, &names).await
    }

    async fn insert_events(
        &self,
        tx: &mut Tx,
        id: &ConversationId,
        events: &[Event],
    ) -> Result<(), StoreError> {
        for chunk in events.chunks(1000) {
            let mut seqs = Vec::with_capacity(chunk.len());
            let mut kinds = Vec::with_capacity(chunk.len());
            let mut sources = Vec::with_capacity(chunk.len());
            let mut records = Vec::with_capacity(chunk.len());
            for e in chunk {
                seqs.push(e.seq);
                kinds.push(e.kind.clone());
                sources.push(e.source.clone());
                records.push(super::records::encode(e)?);
            }
            sqlx::query(
                "INSERT INTO events (conversation, seq, kind, source, record) \
                 SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bytea[])",
            )
            .bind(uuid(id))
            .bind(seqs)
            .bind(kinds)
            .bind(sources)
            .bind(records)
            .execute(&mut **tx)
            .await
            .map_err(store_error)?;
        }
        Ok(())
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

impl ProfileStore for PgStore {
    async fn get_profile(&self, name: &ProfileName) -> Result<Option<Profile>, StoreError> {
        if let Some(p) = self.cache.get(name.as_str()) {
            return Ok(Some(p));
        }
        let generation = self.cache.generation();
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, record FROM profiles WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
        let Some((seq, bytes)) = row else {
            return Ok(None);
        };
        let profile = self
            .codec
            .decode_profile(name.as_str().as_bytes(), &bytes)?
            .profile;
        self.cache
            .insert(generation, u64::try_from(seq).unwrap_or(0), &profile);
        Ok(Some(profile))
    }

    async fn list_profiles(
        &self,
        after: Option<&str>,
        limit_to: usize,
    ) -> Result<Vec<Profile>, StoreError> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT name, record FROM profiles WHERE $1::text IS NULL OR name > $1 ORDER BY name LIMIT $2",
        )
        .bind(after)
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for (name, bytes) in rows {
            match self.codec.decode_profile(name.as_bytes(), &bytes) {
                Ok(r) => out.push(r.profile),
                Err(e) => tracing::error!(error = %e, "skipping a damaged profile record"),
            }
        }
        Ok(out)
    }

    async fn put_profile(
        &self,
        name: ProfileName,
        llm: LlmConfig,
        mode: PutMode,
        expected_revision: Option<i64>,
    ) -> Result<(Profile, PutOutcome), StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = puts::PutJob {
            name,
            llm,
            mode,
            expected_revision,
            reply,
        };
        let gone = || StoreError::Unavailable("the store is closing".into());
        self.puts.send(job).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    async fn delete_profile(
        &self,
        name: &ProfileName,
        expected_revision: Option<i64>,
        allow_missing: bool,
        force: bool,
    ) -> Result<Option<Profile>, StoreError> {
        let mut tx = self.begin(true).await?;
        let read = match self.read_profile(&mut tx, name).await {
            // A record that does not decode is not kept forever: force deletes its row.
            Err(StoreError::Corrupt { .. }) if force => {
                let placeholder = rules::damaged_placeholder(name);
                let change = self.remove_profile(&mut tx, &placeholder).await?;
                self.commit_profiles(tx, &[change]).await?;
                return Ok(Some(placeholder));
            }
            other => other?,
        };
        let Some(old) = read else {
            return if allow_missing {
                Ok(None)
            } else {
                Err(rules::not_found(name))
            };
        };
        rules::check_revision(&old, expected_revision)?;
        let users = self.bound_to(&mut tx, name, 6).await?;
        rules::check_unbound(name, &users, force)?;
        let change = self.remove_profile(&mut tx, &old).await?;
        self.commit_profiles(tx, &[change]).await?;
        Ok(Some(old))
    }

    async fn rename_profile(
        &self,
        from: &ProfileName,
        to: &ProfileName,
    ) -> Result<Profile, StoreError> {
        let mut tx = self.begin(true).await?;
        let old = self
            .read_profile(&mut tx, from)
            .await?
            .ok_or_else(|| rules::not_found(from))?;
        if from == to {
            return Ok(old);
        }
        if self.read_profile(&mut tx, to).await?.is_some() {
            return Err(StoreError::AlreadyExists {
                kind: "profile",
                name: to.to_string(),
            });
        }
        let mut changes = vec![self.remove_profile(&mut tx, &old).await?];
        let renamed = rules::renamed(&old, to);
        changes.extend(self.write_profiles(&mut tx, vec![renamed.clone()]).await?);
        // Conversations bound to the old name follow it, in the same transaction.
        for id in self.bound_to(&mut tx, from, usize::MAX).await? {
            let Some(before) = self.read_conversation(&mut tx, &id, true).await? else {
                continue;
            };
            let c = rules::rebound(before, from, to, renamed.update_time);
            self.write_conversation(&mut tx, &c).await?;
        }
        self.commit_profiles(tx, &changes).await?;
        Ok(renamed)
    }

    async fn import_profiles(
        &self,
        items: Vec<(ProfileName, LlmConfig)>,
        policy: ConflictPolicy,
        dry_run: bool,
    ) -> Result<Vec<ImportOutcome>, StoreError> {
        let mut tx = self.begin(!dry_run).await?;
        let names: Vec<&str> = items.iter().map(|(n, _)| n.as_str()).collect();
        let rows = rows::profile_records(&mut tx, &names).await?;
        let mut stored = HashMap::with_capacity(rows.len());
        for (name, bytes) in rows {
            let p = self.codec.decode_profile(name.as_bytes(), &bytes)?.profile;
            stored.insert(p.name.clone(), p);
        }
        let (outcomes, writes) = rules::plan_import(items, policy, stored);
        if dry_run || writes.is_empty() {
            return Ok(outcomes);
        }
        let changes = self.write_profiles(&mut tx, writes).await?;
        self.commit_profiles(tx, &changes).await?;
        Ok(outcomes)
    }

    async fn watch_profiles(&self, snapshot: bool) -> Result<ProfileWatch, StoreError> {
        let changes = self.changes.subscribe();
        if !snapshot {
            return Ok(ProfileWatch {
                snapshot: Vec::new(),
                covered: 0,
                changes,
            });
        }
        // One consistent read of the profiles and the counter: every change below `covered` is in it.
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        let covered = rows::next_seq(&mut *tx).await?;
        let rows: Vec<(String, i64, Vec<u8>)> =
            sqlx::query_as("SELECT name, seq, record FROM profiles ORDER BY name")
                .fetch_all(&mut *tx)
                .await
                .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for (name, seq, bytes) in rows {
            match self.codec.decode_profile(name.as_bytes(), &bytes) {
                Ok(r) => out.push((u64::try_from(seq).unwrap_or(0), r.profile)),
                Err(e) => tracing::error!(error = %e, "skipping a damaged profile record"),
            }
        }
        Ok(ProfileWatch {
            snapshot: out,
            covered,
            changes,
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every write is committed (and so durable) before it is acknowledged.
        Ok(())
    }
}

impl ConversationStore for PgStore {
    async fn create_conversation(&self, c: Conversation) -> Result<Conversation, StoreError> {
        let mut tx = self.begin(true).await?;
        if self
            .read_conversation(&mut tx, &c.id, false)
            .await?
            .is_some()
        {
            return Err(StoreError::AlreadyExists {
                kind: "conversation",
                name: c.id.to_string(),
            });
        }
        self.check_profiles_exist(&mut tx, &c).await?;
        let c = rules::created(c);
        self.write_conversation(&mut tx, &c).await?;
        self.commit(tx).await?;
        Ok(c)
    }

    async fn get_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        let row: Option<(Vec<u8>, i64)> =
            sqlx::query_as("SELECT record, event_count FROM conversations WHERE id = $1")
                .bind(uuid(id))
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
        row.map(|(bytes, count)| self.conversation(id, &bytes, count))
            .transpose()
    }

    async fn list_conversations(
        &self,
        after: Option<ConversationId>,
        limit_to: usize,
        status: Option<ExecutionStatus>,
        profile: Option<&ProfileName>,
    ) -> Result<Vec<Conversation>, StoreError> {
        let rows: Vec<(uuid::Uuid, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT c.id, c.record, c.event_count FROM conversations c \
             WHERE ($1::uuid IS NULL OR c.id > $1) AND ($2::text IS NULL OR c.execution_status = $2) \
               AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM bindings b WHERE b.profile = $3 AND b.conversation = c.id)) \
             ORDER BY c.id LIMIT $4",
        )
        .bind(after.as_ref().map(uuid))
        .bind(status.map(ExecutionStatus::sdk_name))
        .bind(profile.map(ProfileName::as_str))
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, bytes, count) in rows {
            let id = ConversationId::from_bytes(id.into_bytes());
            match self.conversation(&id, &bytes, count) {
                Ok(c) => out.push(c),
                Err(e) => tracing::error!(error = %e, "skipping a damaged conversation record"),
            }
        }
        Ok(out)
    }

    async fn update_conversation<F>(
        &self,
        id: &ConversationId,
        expected_revision: Option<i64>,
        change: F,
    ) -> Result<Conversation, StoreError>
    where
        F: FnOnce(&Conversation) -> Result<Conversation, StoreError> + Send,
    {
        let mut tx = self.begin(true).await?;
        let old = self
            .read_conversation(&mut tx, id, true)
            .await?
            .ok_or_else(|| rules::conversation_not_found(id))?;
        rules::check_conversation_revision(&old, expected_revision)?;
        let Some(new) = rules::updated(&old, change)? else {
            return Ok(old);
        };
        self.check_profiles_exist(&mut tx, &new).await?;
        self.write_conversation(&mut tx, &new).await?;
        self.commit(tx).await?;
        Ok(new)
    }

    async fn delete_conversation(
        &self,
        id: &ConversationId,
        expected_revision: Option<i64>,
        allow_missing: bool,
        force: bool,
    ) -> Result<Option<(Conversation, i64)>, StoreError> {
        let mut tx = self.begin(true).await?;
        let read = match self.read_conversation(&mut tx, id, true).await {
            // A record that does not decode is not kept forever: force deletes its row (its
            // events and bindings cascade).
            Err(StoreError::Corrupt { .. }) if force => {
                let events: i64 = sqlx::query_scalar(
                    "DELETE FROM conversations WHERE id = $1 RETURNING event_count",
                )
                .bind(uuid(id))
                .fetch_one(&mut *tx)
                .await
                .map_err(store_error)?;
                rows::notify(&mut tx, &format!("e {id} {events} 1")).await?;
                self.commit(tx).await?;
                return Ok(Some((rules::damaged_conversation(id), events)));
            }
            other => other?,
        };
        let Some(old) = read else {
            return if allow_missing {
                Ok(None)
            } else {
                Err(rules::conversation_not_found(id))
            };
        };
        rules::check_conversation_revision(&old, expected_revision)?;
        // Events and bindings go with it (ON DELETE CASCADE).
        sqlx::query("DELETE FROM conversations WHERE id = $1")
            .bind(uuid(id))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        rows::notify(&mut tx, &format!("e {id} {} 1", old.event_count)).await?;
        self.commit(tx).await?;
        let events = old.event_count;
        Ok(Some((old, events)))
    }

    async fn append_events(
        &self,
        id: &ConversationId,
        events: Vec<NewEvent>,
        expected_next_seq: Option<i64>,
    ) -> Result<(i64, i64), StoreError> {
        let mut tx = self.begin(false).await?;
        let first: i64 =
            sqlx::query_scalar("SELECT event_count FROM conversations WHERE id = $1 FOR UPDATE")
                .bind(uuid(id))
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?
                .ok_or_else(|| rules::conversation_not_found(id))?;
        rules::check_next_seq(id, first, expected_next_seq)?;
        if events.is_empty() {
            return Ok((first, first));
        }
        let events = rules::numbered(first, events);
        let next = first.saturating_add(limit(events.len()));
        self.insert_events(&mut tx, id, &events).await?;
        sqlx::query("UPDATE conversations SET event_count = $2 WHERE id = $1")
            .bind(uuid(id))
            .bind(next)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        rows::notify(&mut tx, &format!("e {id} {next} 0")).await?;
        self.commit(tx).await?;
        Ok((first, next))
    }

    async fn list_events(
        &self,
        id: &ConversationId,
        q: &EventQuery,
    ) -> Result<Vec<Event>, StoreError> {
        let sql = if q.descending {
            "SELECT seq, record FROM events WHERE conversation = $1 AND seq > $2 AND seq < $3 \
             AND ($4 = '' OR kind = $4) AND ($5 = '' OR source = $5) ORDER BY seq DESC LIMIT $6"
        } else {
            "SELECT seq, record FROM events WHERE conversation = $1 AND seq > $2 AND seq < $3 \
             AND ($4 = '' OR kind = $4) AND ($5 = '' OR source = $5) ORDER BY seq LIMIT $6"
        };
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(sql)
            .bind(uuid(id))
            .bind(q.after_seq.filter(|s| *s >= 0).unwrap_or(-1))
            .bind(q.before_seq.map_or(i64::MAX, |s| s.max(0)))
            .bind(&q.kind)
            .bind(&q.source)
            .bind(limit(q.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for (seq, bytes) in rows {
            let key = super::records::event_key(id, seq);
            match super::records::decode::<Event>(super::TreeId::Events, &key, &bytes) {
                Ok(e) => out.push(e),
                Err(e) => tracing::error!(error = %e, "skipping a damaged event record"),
            }
        }
        Ok(out)
    }

    async fn import_conversation(
        &self,
        c: Conversation,
        events: Vec<NewEvent>,
        policy: ConflictPolicy,
        dry_run: bool,
    ) -> Result<ImportOutcome, StoreError> {
        let mut tx = self.begin(!dry_run).await?;
        self.check_profiles_exist(&mut tx, &c).await?;
        let old = self.read_conversation(&mut tx, &c.id, !dry_run).await?;
        let (c, outcome) =
            match rules::plan_import_conversation(c, old.as_ref(), events.len(), policy) {
                Ok(plan) => plan,
                Err(skipped) => return Ok(skipped),
            };
        if dry_run {
            return Ok(outcome);
        }
        if old.is_some() {
            sqlx::query("DELETE FROM events WHERE conversation = $1")
                .bind(uuid(&c.id))
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        self.write_conversation(&mut tx, &c).await?;
        self.insert_events(&mut tx, &c.id, &rules::numbered(0, events))
            .await?;
        self.commit(tx).await?;
        Ok(outcome)
    }

    fn subscribe_events(&self) -> broadcast::Receiver<EventBatch> {
        self.event_changes.subscribe()
    }
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
