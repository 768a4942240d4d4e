//! The server binary as a child process ([`ChildServer`], for kill and signal tests), its memory,
//! and skipping tests whose outside tools (e2e, SDK Pythons) are missing.
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::postgres_for;

/// The built server binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_profile-registry"))
}

/// A server running as a child process, for kill and signal tests.
pub struct ChildServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

impl ChildServer {
    /// Starts the binary on `data_dir` and waits until it reports its address.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(data_dir, extra, &[])
    }

    /// Like [`ChildServer::start`], with extra environment variables.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_on("127.0.0.1:0", data_dir, extra, env)
    }

    /// Like [`ChildServer::start_with_env`], listening on `listen` (e.g. the address of a server
    /// this one replaces).
    pub fn start_on(listen: &str, data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut store_args: Vec<String> = Vec::new();
        if extra.contains(&"--store") {
            // The test chose the store itself (e.g. several replicas on one database).
        } else if let Some(pg) = postgres_for(data_dir) {
            store_args.extend(["--store".into(), pg.url]);
            if !extra.contains(&"--secret-key-file") {
                store_args.push("--secret-key-file".into());
                store_args.push(pg.key_file.display().to_string());
            }
        }
        let mut child = Command::new(binary())
            .envs(env.iter().copied())
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(data_dir)
            .args(&store_args)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("server starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "server did not report its address; log:\n{}",
                    log.lock().unwrap()
                )
            });
        Self {
            child,
            addr: addr.parse().unwrap(),
            log,
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit; returns its exit code and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("server did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM to a child (a follower, a sync) and waits up to 10 s for its exit code.
pub fn terminate(child: &mut Child) -> Option<i32> {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The resident memory of process `pid`, in MiB; `None` once it is gone.
pub fn rss_mib(pid: u32) -> Option<u64> {
    profile_registry::memory::resident_kib(&pid.to_string()).map(|kib| kib / 1024)
}

/// Whether tests that need an outside tool must fail instead of skipping.
pub fn e2e_required() -> bool {
    std::env::var("REGISTRY_REQUIRE_E2E").is_ok_and(|v| v == "1")
}

/// Skips (returns true) with a printed reason when a tool is missing, unless e2e is required.
pub fn skip_without(tool: &str, found: bool) -> bool {
    if found {
        return false;
    }
    assert!(
        !e2e_required(),
        "{tool} is required (REGISTRY_REQUIRE_E2E=1) but was not found"
    );
    eprintln!("SKIPPED: {tool} not found; install it or set REGISTRY_REQUIRE_E2E=1 to make this a failure");
    true
}

/// Pythons with the real openhands-sdk, from `$REGISTRY_SDK_PYTHONS` (colon-separated, in the order
/// 1.43.1, 1.58.2 as .ci/run sets it); those that cannot import the SDK are left out.
pub fn sdk_pythons() -> Vec<PathBuf> {
    std::env::var("REGISTRY_SDK_PYTHONS")
        .unwrap_or_default()
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .filter(|p| {
            Command::new(p)
                .args(["-c", "import openhands.sdk.llm.llm_profile_store"])
                .env("OPENHANDS_SUPPRESS_BANNER", "1")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect()
}

/// The Python of `$REGISTRY_SDK_PYTHONS` whose path names SDK `version` (e.g. `1.58.2`).
pub fn sdk_python(version: &str) -> Option<PathBuf> {
    sdk_pythons()
        .into_iter()
        .find(|p| p.to_string_lossy().contains(version))
}
