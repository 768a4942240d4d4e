//! Spawning isolated servers (in-process or as a child process) and making clients for them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use profile_registry::config::ServeArgs;
use profile_registry::pb;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use profile_registry::server::Application;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

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

/// The PostgreSQL server the suite runs on instead of sled, when `REGISTRY_TEST_STORE` names one
/// (an admin URL such as `postgres://postgres@127.0.0.1:55432/postgres`; `.ci/run` sets it for the
/// suite's second pass).
pub fn test_postgres() -> Option<String> {
    std::env::var("REGISTRY_TEST_STORE")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// In the PostgreSQL pass, skips a test of sled's own data dir (its lock, offline commands, raw
/// records), saying so.
pub fn sled_only(why: &str) -> bool {
    let skip = test_postgres().is_some();
    if skip {
        eprintln!("SKIPPED in the PostgreSQL pass: {why}");
    }
    skip
}

/// The text of every record a PostgreSQL database holds, and its whole `pg_dump`, for scans of
/// what is at rest.
pub fn postgres_contents(url: &str) -> Vec<u8> {
    let records = Command::new("psql")
        .args(["-X", "-A", "-t", url, "-c"])
        .arg(
            "SELECT convert_from(record, 'UTF8') FROM profiles \
             UNION ALL SELECT convert_from(record, 'UTF8') FROM profile_changes WHERE record IS NOT NULL \
             UNION ALL SELECT convert_from(record, 'UTF8') FROM conversations \
             UNION ALL SELECT convert_from(record, 'UTF8') FROM events",
        )
        .output()
        .expect("psql runs");
    assert!(
        records.status.success(),
        "{}",
        String::from_utf8_lossy(&records.stderr)
    );
    let dump = Command::new("pg_dump")
        .arg(url)
        .output()
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let mut out = records.stdout;
    out.extend_from_slice(&dump.stdout);
    out
}

/// A PostgreSQL admin URL for tests that need one in either pass (replicas, migrate-store):
/// `REGISTRY_TEST_POSTGRES`, else `REGISTRY_TEST_STORE`.
pub fn postgres_admin() -> Option<String> {
    std::env::var("REGISTRY_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(test_postgres)
}

/// Where a server "on data dir D" keeps its records in the PostgreSQL pass.
pub struct PgTarget {
    /// The database of D.
    pub url: String,
    /// The keys, `D/secret.key` (where sled would keep them).
    pub key_file: PathBuf,
}

/// A database URL under the admin URL `admin`, created when missing.
pub fn postgres_database(admin: &str, name: &str) -> String {
    let mut created = false;
    for _ in 0..20 {
        let out = Command::new("psql")
            .args(["-X", "-q", admin, "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("psql runs (install postgresql-client)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || stderr.contains("already exists") {
            created = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(created, "cannot create database {name} at {admin}");
    let (base, _) = admin
        .rsplit_once('/')
        .expect("an admin URL ends in /database");
    format!("{base}/{name}")
}

/// In the PostgreSQL pass, the database and key file standing for `data_dir` (one database per
/// data dir, so a server restarted "on the same data dir" finds its records).
pub fn postgres_for(data_dir: &Path) -> Option<PgTarget> {
    let admin = test_postgres()?;
    let path = std::path::absolute(data_dir).unwrap();
    let name = format!(
        "t_{}",
        &profile_registry::sha256_hex(path.to_string_lossy().as_bytes())[..24]
    );
    let url = postgres_database(&admin, &name);
    std::fs::create_dir_all(data_dir).unwrap();
    let key_file = data_dir.join("secret.key");
    if !key_file.exists() {
        let key: [u8; 32] = rand::random();
        use base64::Engine;
        let line = format!(
            "t1:{}\n",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        std::fs::write(&key_file, line).unwrap();
    }
    Some(PgTarget { url, key_file })
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tune: impl FnOnce(&mut ServeArgs)) -> Self {
        Self::spawn_in_with(tempfile::tempdir().unwrap(), tune).await
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

/// A profile message with a model and an API key.
pub fn profile(name: &str, model: &str, api_key: Option<&str>) -> pb::Profile {
    pb::Profile {
        name: name.into(),
        llm: Some(pb::LlmConfig {
            model: model.into(),
            api_key: api_key.map(Into::into),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn create(client: &mut ProfileServiceClient<Channel>, p: pb::Profile) -> pb::Profile {
    client
        .create_profile(pb::CreateProfileRequest { profile: Some(p) })
        .await
        .expect("create succeeds")
        .into_inner()
}

/// Imports `count` generated profile files, 1,000 a call: `file(i)` gives the i-th (name, JSON).
pub async fn import_generated(
    client: &mut ProfileServiceClient<Channel>,
    count: usize,
    file: impl Fn(usize) -> (String, String),
) {
    for start in (0..count).step_by(1000) {
        let documents = (start..count.min(start + 1000))
            .map(|i| {
                let (name, json) = file(i);
                pb::ProfileDocument { name, json }
            })
            .collect();
        client
            .import_profiles(pb::ImportProfilesRequest {
                documents,
                ..Default::default()
            })
            .await
            .expect("import succeeds");
    }
}

/// The resident memory of process `pid`, in MiB; `None` once it is gone.
pub fn rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(kib / 1024)
}

/// The forms a secret could leak in (raw, base64 std/url/url-nopad, hex lower/upper): none may
/// appear in a data dir, a log or an error.
pub fn secret_forms(secret: &str) -> Vec<(&'static str, Vec<u8>)> {
    use base64::Engine;
    let hex = profile_registry::hex(secret.as_bytes());
    vec![
        ("raw", secret.as_bytes().to_vec()),
        (
            "base64",
            base64::engine::general_purpose::STANDARD
                .encode(secret)
                .into_bytes(),
        ),
        (
            "base64url",
            base64::engine::general_purpose::URL_SAFE
                .encode(secret)
                .into_bytes(),
        ),
        (
            "base64url-nopad",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(secret)
                .into_bytes(),
        ),
        ("hex", hex.clone().into_bytes()),
        ("HEX", hex.to_uppercase().into_bytes()),
    ]
}

/// Every profile with its revision, through pagination: the observable state of the store.
pub async fn full_listing(
    client: &mut ProfileServiceClient<Channel>,
) -> Vec<(String, i64, pb::LlmConfig)> {
    try_full_listing(client).await.expect("list succeeds")
}

/// [`full_listing`], or the first error.
pub async fn try_full_listing(
    client: &mut ProfileServiceClient<Channel>,
) -> Result<Vec<(String, i64, pb::LlmConfig)>, tonic::Status> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_profiles(pb::ListProfilesRequest {
                page_size: 1000,
                page_token: token.clone(),
            })
            .await?
            .into_inner();
        out.extend(
            page.profiles
                .into_iter()
                .map(|p| (p.name, p.revision, p.llm.unwrap_or_default())),
        );
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

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
            .arg("127.0.0.1:0")
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

// ---- Conversations ----

use profile_registry::pb::conversation_service_client::ConversationServiceClient;

impl TestApp {
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

    pub async fn conversations(&self) -> ConversationServiceClient<Channel> {
        ConversationServiceClient::new(self.channel().await)
    }
}

/// A binding of an LLM usage to a profile by name.
pub fn bound(profile: &str) -> pb::LlmBinding {
    pb::LlmBinding {
        source: Some(pb::llm_binding::Source::Profile(profile.into())),
        resolved: None,
    }
}

/// A binding to an inline LLM configuration.
pub fn inline(model: &str, api_key: Option<&str>) -> pb::LlmBinding {
    pb::LlmBinding {
        source: Some(pb::llm_binding::Source::Inline(pb::LlmConfig {
            model: model.into(),
            api_key: api_key.map(Into::into),
            ..Default::default()
        })),
        resolved: None,
    }
}

/// The profile name a binding names, if it is bound to a profile.
pub fn bound_profile(b: &pb::LlmBinding) -> Option<&str> {
    match &b.source {
        Some(pb::llm_binding::Source::Profile(p)) => Some(p),
        _ => None,
    }
}

/// A conversation message whose "agent" LLM is `agent` (no id: the server generates one).
pub fn conversation(agent: pb::LlmBinding, title: &str) -> pb::Conversation {
    pb::Conversation {
        llms: [("agent".to_owned(), agent)].into(),
        title: title.into(),
        ..Default::default()
    }
}

pub async fn create_conversation(
    client: &mut ConversationServiceClient<Channel>,
    c: pb::Conversation,
) -> pb::Conversation {
    client
        .create_conversation(pb::CreateConversationRequest {
            conversation: Some(c),
        })
        .await
        .expect("create conversation succeeds")
        .into_inner()
}

pub async fn get_conversation(
    client: &mut ConversationServiceClient<Channel>,
    id: &str,
    resolve_llms: bool,
    reveal_secrets: bool,
) -> pb::Conversation {
    client
        .get_conversation(pb::GetConversationRequest {
            id: id.into(),
            resolve_llms,
            reveal_secrets,
        })
        .await
        .expect("get conversation succeeds")
        .into_inner()
}

/// Every conversation id a ListConversations filter yields, through pagination.
pub async fn conversation_ids(
    client: &mut ConversationServiceClient<Channel>,
    execution_status: pb::ExecutionStatus,
    profile: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_conversations(pb::ListConversationsRequest {
                page_size: 1000,
                page_token: token.clone(),
                execution_status: execution_status as i32,
                profile: profile.into(),
            })
            .await
            .expect("list conversations succeeds")
            .into_inner();
        out.extend(page.conversations.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// A JSON-ish value for event bodies and states.
pub fn sv(s: &str) -> prost_types::Value {
    prost_types::Value::from(s.to_owned())
}

/// An SDK-style event body: {"id", "kind": "MessageEvent", "source", "timestamp", "llm_message"}.
pub fn message_event(id: &str, source: &str, text: &str) -> pb::Event {
    let message = prost_types::Struct {
        fields: [
            ("role".to_owned(), sv(source)),
            (
                "content".to_owned(),
                prost_types::Value::from(vec![struct_value(prost_types::Struct {
                    fields: [
                        ("type".to_owned(), sv("text")),
                        ("text".to_owned(), sv(text)),
                    ]
                    .into(),
                })]),
            ),
        ]
        .into(),
    };
    pb::Event {
        body: Some(prost_types::Struct {
            fields: [
                ("id".to_owned(), sv(id)),
                ("kind".to_owned(), sv("MessageEvent")),
                ("source".to_owned(), sv(source)),
                ("timestamp".to_owned(), sv("2025-10-01T12:00:00.000001")),
                ("llm_message".to_owned(), struct_value(message)),
            ]
            .into(),
        }),
        ..Default::default()
    }
}

/// Every event of a conversation in seq order, through pagination.
pub async fn all_events(
    client: &mut ConversationServiceClient<Channel>,
    id: &str,
) -> Vec<pb::Event> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_events(pb::ListEventsRequest {
                conversation_id: id.into(),
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("list events succeeds")
            .into_inner();
        out.extend(page.events);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// A Struct as a Value.
pub fn struct_value(s: prost_types::Struct) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StructValue(s)),
    }
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

/// Runs the binary with `args` and `env`, with none of the caller's REGISTRY_ variables.
pub fn cli_output<I, S>(args: I, env: &[(&str, &str)]) -> std::process::Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(binary());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("REGISTRY_")) {
        cmd.env_remove(k);
    }
    cmd.args(args).envs(env.iter().copied()).output().unwrap()
}

/// A command's stdout and stderr, as text.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// [`cli_output`] off the runtime's threads, so an in-process server keeps serving it.
pub async fn run_cli(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        cli_output(&args, &env)
    })
    .await
    .unwrap()
}

/// A profiles folder holding one SDK file, `<name>.json`, with `api_key`.
pub fn profiles_folder(parent: &Path, name: &str, api_key: &str) -> PathBuf {
    let dir = parent.join("profiles-in");
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(r#"{{"model": "gpt-4o", "api_key": "{api_key}", "schema_version": 1}}"#);
    std::fs::write(dir.join(format!("{name}.json")), text).unwrap();
    dir
}
