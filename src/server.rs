//! The tonic server: services, health, reflection, limits and the shutdown sequence.
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::app::transfer::import_documents;
use crate::app::Limits;
use crate::auth::Authenticator;
use crate::cli::fernet_key_from_env;
use crate::config::ServeArgs;
use crate::domain::Outcome;
use crate::domain::Writer;
use crate::grpc::layer::CallLayer;
use crate::grpc::Api;
use crate::health::HealthState;
use crate::openhands::folder::ProfilesDir;
use crate::pb;
use crate::pb::admin_service_server::AdminServiceServer;
use crate::pb::agent_profile_service_server::AgentProfileServiceServer;
use crate::pb::conversation_service_server::ConversationServiceServer;
use crate::pb::meta_profile_service_server::MetaProfileServiceServer;
use crate::pb::profile_service_server::ProfileServiceServer;
use crate::pb::provider_connection_service_server::ProviderConnectionServiceServer;
use crate::store::postgres::PgOptions;
use crate::store::{Location, Store, StoreOptions, WatchHistory};
use crate::tls::{ReloadingTls, TlsFiles};

/// A bound, not yet serving server: the port is known (tests bind port 0), the store is open.
pub struct Application {
    listener: TcpListener,
    /// The plaintext health-only listener (`--health-listen`).
    health_listener: Option<TcpListener>,
    store: Arc<Store>,
    location: Location,
    args: ServeArgs,
    auth: Option<Arc<Authenticator>>,
    tls: Option<Arc<ReloadingTls>>,
}

impl Application {
    /// Opens the data dir and binds the listen address.
    pub async fn build(args: ServeArgs) -> anyhow::Result<Self> {
        let options = StoreOptions {
            cache_bytes: args.cache_mb.saturating_mul(1024 * 1024),
            secret_key_file: args.secret_key_file.clone(),
            history_revisions: usize::from(args.history_revisions),
            watch_history: args.watch_history,
        };
        let auth = authenticator(&args)?;
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                let files = TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: args.tls_client_ca.clone(),
                };
                Some(Arc::new(ReloadingTls::load(files).context("TLS")?))
            }
            _ => None,
        };
        let location = Location::of(args.store.as_deref(), &args.data_dir)
            .map_err(|e| anyhow::anyhow!("--store: {e}"))?;
        let pg = PgOptions {
            max_connections: args.store_max_connections.max(1),
            local_key_dir: Some(args.data_dir.clone()),
            history_revisions: usize::from(args.history_revisions),
            watch_history: args.watch_history,
            ..PgOptions::default()
        };
        let store = Store::open(&location, &options, &pg).await?;
        tracing::info!(store = %location.describe(), "store open");
        if let Some(dir) = &args.import_on_start {
            seed(&store, dir, &args).await?;
        }
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let health_listener = match args.health_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("--health-listen: cannot listen on {addr}"))?,
            ),
            None => None,
        };
        Ok(Self {
            listener,
            health_listener,
            store,
            location,
            args,
            auth,
            tls,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.args.listen)
    }

    /// The address the health-only listener bound, when there is one.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then: health NOT_SERVING, stop accepting, end streams,
    /// give in-flight calls the grace period, flush the database.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (listener, health_listener) = (self.listener, self.health_listener);
        let (store, location, args) = (self.store, self.location, self.args);
        let (auth, tls) = (self.auth, self.tls);
        let addr = listener.local_addr()?;
        let limits = Limits {
            page_key: store.page_key(),
            ..limits(&args)
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let api = Api::new(Arc::clone(&store), limits.clone(), stop_rx.clone());
        let profile_service = ProfileServiceServer::new(api.clone())
            .max_decoding_message_size(args.max_request_bytes);
        let conversation_service = ConversationServiceServer::new(api.clone())
            .max_decoding_message_size(args.max_request_bytes);
        let connection_service = ProviderConnectionServiceServer::new(api.clone())
            .max_decoding_message_size(args.max_request_bytes);
        let meta_service = MetaProfileServiceServer::new(api.clone())
            .max_decoding_message_size(args.max_request_bytes);
        let agent_service = AgentProfileServiceServer::new(api.clone())
            .max_decoding_message_size(args.max_request_bytes);
        let admin_service = AdminServiceServer::new(api);
        let health = HealthState::serving(&[
            <ProfileServiceServer<Api> as NamedService>::NAME,
            <ConversationServiceServer<Api> as NamedService>::NAME,
            <AdminServiceServer<Api> as NamedService>::NAME,
            <ProviderConnectionServiceServer<Api> as NamedService>::NAME,
            <MetaProfileServiceServer<Api> as NamedService>::NAME,
            <AgentProfileServiceServer<Api> as NamedService>::NAME,
        ]);
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let (drain_tx, drain_rx) = oneshot::channel::<()>();
        let router = Server::builder()
            .max_concurrent_streams(args.max_streams_per_connection)
            .timeout(args.request_timeout)
            .layer(CallLayer::new(auth).with_ready_profiles(
                Arc::clone(&store),
                &limits,
                args.max_request_bytes,
            ))
            .add_service(health.service(stop_rx.clone()))
            .add_service(profile_service)
            .add_service(conversation_service)
            .add_service(admin_service)
            .add_service(connection_service)
            .add_service(meta_service)
            .add_service(agent_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        let drained = async {
            let _ = drain_rx.await;
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let serve: std::pin::Pin<
            Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
        > = match tls {
            Some(tls) => Box::pin(
                router.serve_with_incoming_shutdown(crate::tls::incoming(listener, tls), drained),
            ),
            // tonic's `tcp_nodelay` is ignored with our own listener: without TCP_NODELAY
            // on each accepted socket, Nagle's algorithm holds a reply's last frames until the
            // client's delayed ACK, about 40 ms per call.
            None => Box::pin(router.serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                drained,
            )),
        };
        tokio::pin!(serve);
        let (health_stop, health_stopped) = oneshot::channel::<()>();
        let health_only = match health_listener {
            Some(l) => Some(serve_health_only(
                l,
                &health,
                stop_rx.clone(),
                health_stopped,
            )?),
            None => None,
        };
        if let Some(metrics_addr) = args.metrics_listen {
            let bound = crate::metrics::serve(metrics_addr).await?;
            let gauged = Arc::clone(&store);
            tokio::spawn(async move {
                loop {
                    let (profiles, conversations) = gauged.counts().await.unwrap_or_default();
                    let bytes = gauged.size_on_disk().await;
                    crate::metrics::record_store(profiles, conversations, bytes);
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            });
            tracing::info!(%bound, "metrics at http://{bound}/metrics");
        }
        tokio::spawn(purge_deleted_profiles(
            Arc::clone(&store),
            args.deleted_retention,
            stop_tx.subscribe(),
        ));
        tokio::spawn(prune_watch_history(
            Arc::clone(&store),
            args.watch_history,
            stop_tx.subscribe(),
        ));
        fail_stop_on_fault(health.clone())?;
        // Only now that the store is open: sled reads its log back at start in 512 KiB buffers,
        // and pages of their own for each slowed a start on 100,000 profiles from 0.11 to 0.37 s.
        crate::memory::hold_mapping_threshold();
        crate::memory::spawn_trimmer(args.memory_trim_interval);
        if let Some(connected) = store.connected() {
            tokio::spawn(follow_database(
                connected,
                health.clone(),
                stop_tx.subscribe(),
            ));
        }
        tracing::info!(
            config = %effective_config(&args, &location),
            "effective configuration"
        );
        tracing::info!(%addr, scheme, store = %location.describe(), "listening on {addr}");

        tokio::select! {
            r = &mut serve => return r.context("the server stopped"),
            () = shutdown => {}
        }
        tracing::info!(grace = ?args.shutdown_grace, "shutting down: health NOT_SERVING, no new calls");
        health.set_not_serving();
        let _ = stop_tx.send(true);
        let _ = drain_tx.send(());
        match tokio::time::timeout(args.shutdown_grace, &mut serve).await {
            Ok(r) => r.context("the server failed while draining")?,
            Err(_) => tracing::warn!("grace period over: cutting the remaining calls"),
        }
        // Bounded: a volume that stopped answering must not keep the process alive past
        // --shutdown-grace plus this.
        let flushed = tokio::time::timeout(
            FINAL_FLUSH,
            tokio::task::spawn_blocking(move || store.flush()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("the final flush did not finish within {FINAL_FLUSH:?}"))?;
        flushed.context("flush task")?.context("final flush")?;
        // The health port told NOT_SERVING through the drain; it goes last.
        let _ = health_stop.send(());
        if let Some(task) = health_only {
            let _ = tokio::time::timeout(Duration::from_millis(500), task).await;
        }
        tracing::info!("stopped; database flushed");
        Ok(())
    }
}

/// How long the final flush at shutdown may take.
const FINAL_FLUSH: Duration = Duration::from_secs(3);

/// The exit code of a fail-stop on a storage fault (EX_IOERR).
pub const FAULT_EXIT_CODE: i32 = 74;

/// On the first storage fault: health NOT_SERVING at once, then, after a moment for the calls in
/// flight to get their answer, exit non-zero. sled refuses every write after an I/O error even
/// once space is freed; a restart (Kubernetes restarts the pod) recovers it from its log.
///
/// A plain thread rather than a tokio task: on a full volume sled can block the threads that run
/// its writes (a flush that never returns holds a lock the next transaction waits for), and those
/// are the tokio workers. The exit must not need a free worker.
fn fail_stop_on_fault(health: HealthState) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("fail-stop".into())
        .spawn(move || {
            let fault = futures::executor::block_on(crate::store::fault::raised());
            health.set_not_serving();
            tracing::error!(fault = %fault, code = FAULT_EXIT_CODE, "fail-stop: health NOT_SERVING; exiting in 2 s so that a restart recovers the database (acknowledged writes are on disk)");
            std::thread::sleep(Duration::from_secs(2));
            std::process::exit(FAULT_EXIT_CODE);
        })
        .context("starting the fail-stop thread")?;
    Ok(())
}

/// Serves grpc.health.v1 alone, plaintext and without the auth layer, on `listener` until
/// `stopped`: the kubelet's gRPC probes cannot speak TLS.
fn serve_health_only(
    listener: TcpListener,
    health: &HealthState,
    shutdown: watch::Receiver<bool>,
    stopped: oneshot::Receiver<()>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let addr = listener.local_addr()?;
    let router = Server::builder().add_service(health.service(shutdown));
    tracing::info!(%addr, "health probes at {addr} (plaintext, grpc.health.v1 only)");
    Ok(tokio::spawn(async move {
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let stopped = async {
            let _ = stopped.await;
        };
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, stopped).await {
            tracing::error!(error = %e, "the health listener stopped");
        }
    }))
}

/// Readiness follows the database connection (PostgreSQL): NOT_SERVING while it is down, SERVING
/// again once it is back, until shutdown.
async fn follow_database(
    mut connected: watch::Receiver<bool>,
    health: HealthState,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let up = *connected.borrow_and_update();
        if *stop.borrow() {
            return;
        }
        if up {
            health.set_serving();
        } else {
            health.set_not_serving();
        }
        tokio::select! {
            r = connected.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

/// Drops the kept history of profiles deleted longer than `retention` ago, a few at a time (each
/// batch one short write, so writers are not held off), until the server stops. A failure is
/// logged and tried again at the next round: a store fault fail-stops the server on its own.
async fn purge_deleted_profiles(
    store: Arc<Store>,
    retention: Duration,
    mut stop: watch::Receiver<bool>,
) {
    const BATCH: usize = 100;
    // Often enough that a short retention (tests, or `0s`) is kept to within a second or so.
    let every = (retention / 10).clamp(Duration::from_millis(200), Duration::from_secs(60));
    loop {
        let now = std::time::SystemTime::now();
        let cutoff = now.checked_sub(retention).unwrap_or(std::time::UNIX_EPOCH);
        let cutoff = crate::domain::Timestamp::from(cutoff);
        loop {
            match store.purge_deleted(cutoff, BATCH).await {
                Ok(n) if n == BATCH => continue,
                Ok(0) => break,
                Ok(n) => {
                    tracing::info!(profiles = n, "purged the history of profiles deleted longer than --deleted-retention ago");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot purge deleted profiles' history now; will try again");
                    break;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Keeps the profile change log to `--watch-history`.
async fn prune_watch_history(
    store: Arc<Store>,
    keep: WatchHistory,
    mut stop: watch::Receiver<bool>,
) {
    let every = match keep {
        WatchHistory::Age(age) => {
            (age / 10).clamp(Duration::from_millis(200), Duration::from_secs(10))
        }
        WatchHistory::Changes(_) => Duration::from_secs(1),
    };
    loop {
        match store.prune_changes().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                changes = n,
                "pruned the profile change log to --watch-history"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot prune the profile change log now; will try again")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// `--import-on-start`: imports a profiles folder before serving. Bad files are logged and skipped;
/// a folder that cannot be read stops the start.
async fn seed(store: &Store, dir: &std::path::Path, args: &ServeArgs) -> anyhow::Result<()> {
    let folder = ProfilesDir::lock(dir, false).with_context(|| {
        format!(
            "--import-on-start: cannot read the profiles folder {}",
            dir.display()
        )
    })?;
    let limits = limits(args);
    let (docs, refused) = folder.read_documents(limits.max_profile_bytes as u64, true)?;
    let key = fernet_key_from_env(&args.fernet_key_env);
    let reports = import_documents(
        store,
        docs,
        key.as_ref(),
        args.on_conflict,
        false,
        Writer {
            name: "import-on-start",
            blind: false,
        },
        &limits,
    )
    .await?;
    for r in &refused {
        tracing::warn!(file = %r.file, reason = %r.reason, "import-on-start: file refused");
    }
    let mut counts = std::collections::BTreeMap::new();
    for r in &reports {
        *counts.entry(r.outcome.as_str()).or_insert(0usize) += 1;
        if matches!(r.outcome, Outcome::Invalid | Outcome::Skipped) {
            tracing::warn!(file = %r.name, outcome = r.outcome.as_str(), reason = %r.reason, "import-on-start");
        }
    }
    let counts = counts
        .iter()
        .map(|(outcome, n)| format!("{outcome} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(dir = %dir.display(), %counts, refused = refused.len(), "imported profiles at start");
    Ok(())
}

/// The settings a server runs with, as `flag=value` pairs for its start-up log line (the store
/// described without its password; secrets are paths, never contents).
fn effective_config(args: &ServeArgs, location: &Location) -> String {
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map_or_else(|| "-".to_owned(), |p| p.display().to_string())
    };
    let addr = |a: &Option<SocketAddr>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
    [
        format!("listen={}", args.listen),
        format!("health-listen={}", addr(&args.health_listen)),
        format!("store={}", location.describe()),
        format!("secret-key-file={}", path(&args.secret_key_file)),
        format!("cache-mb={}", args.cache_mb),
        format!(
            "memory-trim-interval={}ms",
            args.memory_trim_interval.as_millis()
        ),
        format!("history-revisions={}", args.history_revisions),
        format!("deleted-retention={}s", args.deleted_retention.as_secs()),
        format!("watch-history={}", args.watch_history),
        format!("shutdown-grace={}ms", args.shutdown_grace.as_millis()),
        format!("request-timeout={}ms", args.request_timeout.as_millis()),
        format!("max-request-bytes={}", args.max_request_bytes),
        format!("max-profile-bytes={}", args.max_profile_bytes),
        format!("max-page-size={}", args.max_page_size),
        format!(
            "max-streams-per-connection={}",
            args.max_streams_per_connection
        ),
        format!("tls-cert={}", path(&args.tls_cert)),
        format!("tls-client-ca={}", path(&args.tls_client_ca)),
        format!("auth-tokens-file={}", path(&args.auth_tokens_file)),
        format!(
            "insecure-allow-unauthenticated={}",
            args.insecure_allow_unauthenticated
        ),
        format!("protect-reflection={}", args.protect_reflection),
        format!("metrics-listen={}", addr(&args.metrics_listen)),
        format!("import-on-start={}", path(&args.import_on_start)),
    ]
    .join(" ")
}

fn limits(args: &ServeArgs) -> Limits {
    Limits {
        max_profile_bytes: args.max_profile_bytes,
        max_page_size: args.max_page_size,
        ..Limits::default()
    }
}

/// The tokens, or none; without them the server listens only on loopback unless told otherwise.
fn authenticator(args: &ServeArgs) -> anyhow::Result<Option<Arc<Authenticator>>> {
    if let Some(path) = &args.auth_tokens_file {
        let auth = Authenticator::load(path, args.protect_reflection)?;
        tracing::info!(file = %path.display(), tokens = auth.len(), "authentication on: bearer tokens required");
        return Ok(Some(Arc::new(auth)));
    }
    if !args.listen.ip().is_loopback() && !args.insecure_allow_unauthenticated {
        anyhow::bail!(
            "refusing to serve {} without authentication: give --auth-tokens-file, listen on loopback, or pass --insecure-allow-unauthenticated",
            args.listen
        );
    }
    tracing::warn!(listen = %args.listen, "authentication is OFF: every caller may read and change profiles and reveal secrets");
    Ok(None)
}

/// Reflection over our protos, health, and google.rpc error details (so grpcurl decodes BadRequest).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
