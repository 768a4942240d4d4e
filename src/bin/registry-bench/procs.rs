//! Child processes the benchmark starts: the real `profile-registry` server and etcd.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A `profile-registry serve` child on a loopback port.
pub struct Server {
    child: Child,
    /// Its URL.
    pub url: String,
    /// From spawning the process to the first overall SERVING answer of Health/Check.
    pub start_to_serving: Duration,
}

impl Server {
    /// Starts `bin serve` on `data_dir` and waits until Health/Check answers SERVING.
    pub async fn start(bin: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(bin, data_dir, &[]).await
    }

    /// [`Server::start`] with more arguments (e.g. `--store URL`).
    pub async fn start_with(bin: &Path, data_dir: &Path, extra: &[String]) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        // The log is read (so the server never blocks on a full pipe) and only the address kept.
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut early = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(addr.to_owned()));
                    }
                } else if tx.is_some() && early.len() < 64 * 1024 {
                    early.push_str(&line);
                    early.push('\n');
                }
            }
            if let Some(tx) = tx.take() {
                let _ = tx.send(Err(early));
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(120), rx).await {
            Ok(Ok(Ok(addr))) => addr,
            Ok(Ok(Err(log))) => bail!("the server exited before listening:\n{log}"),
            _ => {
                let _ = child.kill();
                bail!("the server did not report its address within 120 s");
            }
        };
        let url = format!("http://{addr}");
        let mut health = HealthClient::new(connect(&url).await?);
        loop {
            let answer = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if answer.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(Self {
            child,
            url,
            start_to_serving: started.elapsed(),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The resident set size now, in KiB (VmRSS of /proc/<pid>/status).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.child.id())
    }

    /// SIGTERM, then waits for the exit (the server flushes on the way out).
    pub fn stop(mut self) -> anyhow::Result<()> {
        terminate(&mut self.child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn terminate(child: &mut Child) -> anyhow::Result<()> {
    let pid = libc::pid_t::try_from(child.id())?;
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.wait()?;
    if !status.success() {
        bail!("the child exited with {status}");
    }
    Ok(())
}

/// VmRSS of a process, KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    profile_registry::memory::resident_kib(&pid.to_string())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// A channel over its own TCP connection.
pub async fn connect(url: &str) -> anyhow::Result<Channel> {
    // A bare `host:port` is a plaintext server, as grpcurl -plaintext takes it.
    let url = &if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let endpoint = Endpoint::from_shared(url.to_owned())?.tcp_nodelay(true);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match endpoint.connect().await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => {
                return Err(e).with_context(|| format!("cannot connect to {url}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// `n` channels, each its own connection.
pub async fn channels(url: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        out.push(connect(url).await?);
    }
    Ok(out)
}

/// A free loopback port (bound then released; good enough for a benchmark).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A single-member etcd on a temp data dir with its default fsync behaviour.
pub struct Etcd {
    child: Child,
    /// Its client URL.
    pub url: String,
}

impl Etcd {
    /// The `etcd` on PATH, if any.
    pub fn binary() -> Option<PathBuf> {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("etcd"))
                .find(|p| p.is_file())
        })
    }

    /// Starts etcd on `data_dir`; the caller waits for it with a first request.
    pub fn start(bin: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        let (client, peer) = (free_port()?, free_port()?);
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(bin)
            .arg("--name=bench")
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=bench={peer_url}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        Ok(Self { child, url })
    }

    /// The resident set size now, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.child.id())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = terminate(&mut self.child);
    }
}
