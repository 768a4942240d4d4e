//! [`TestApp`]: a server spawned inside the test process on its own port and data dir, its
//! clients, and [`connect`] for a channel to any address.
use std::net::SocketAddr;
use std::path::Path;

use profile_registry::config::ServeArgs;
use profile_registry::pb::conversation_service_client::ConversationServiceClient;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use profile_registry::server::Application;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

use super::postgres_for;

/// A server running inside the test process on its own port and data dir.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The plaintext health-only port, when `health_listen` was set.
    pub health_addr: Option<SocketAddr>,
    pub dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn serve_args(data_dir: &Path) -> ServeArgs {
    let mut args = ServeArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_owned(),
        ..ServeArgs::default()
    };
    if let Some(pg) = postgres_for(data_dir) {
        args.store = Some(pg.url);
        args.secret_key_file = Some(pg.key_file);
    }
    args
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tune: impl FnOnce(&mut ServeArgs)) -> Self {
        Self::spawn_in_with(tempfile::tempdir().unwrap(), tune).await
    }

    /// Starts a server on the data dir of an earlier (stopped) TestApp, e.g. to check what survives
    /// a restart: `let app = TestApp::spawn_in(app.stop().await).await`.
    pub async fn spawn_in(dir: TempDir) -> Self {
        Self::spawn_in_with(dir, |_| {}).await
    }

    /// [`TestApp::spawn_in`] with settings changed by `tune`.
    pub async fn spawn_in_with(dir: TempDir, tune: impl FnOnce(&mut ServeArgs)) -> Self {
        let mut args = serve_args(&dir.path().join("data"));
        tune(&mut args);
        let app = Application::build(args).await.expect("server builds");
        let (addr, health_addr) = (app.local_addr(), app.health_addr());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            health_addr,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        connect(self.addr).await
    }

    pub async fn profiles(&self) -> ProfileServiceClient<Channel> {
        ProfileServiceClient::new(self.channel().await)
    }

    pub async fn conversations(&self) -> ConversationServiceClient<Channel> {
        ConversationServiceClient::new(self.channel().await)
    }

    pub async fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel().await)
    }

    /// Runs the shutdown sequence and waits for it.
    pub async fn stop(mut self) -> TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().expect("clean shutdown");
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connects")
}
