//! `profile-registry sync DIR`: a profiles folder that follows the registry. The sync runs as a
//! child process against a real server; the folder is read as files, and by the real SDK.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use profile_registry::pb;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use tonic::transport::Channel;

use crate::helpers::{
    binary, connect, create, output_text, profile, run_cli, sdk_pythons, skip_without, ChildServer,
    TestApp,
};

/// How long a change may take to reach the folder before the test calls it lost (the issue asks
/// for a second; the bench measures it).
const PATIENCE: Duration = Duration::from_secs(10);

/// `profile-registry sync` as a child process, its stderr collected.
struct Sync {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Sync {
    fn start(dir: &Path, server: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_with(&[dir.as_os_str()], server, extra, env)
    }

    /// `sync --home HOME`.
    fn start_home(home: &Path, server: &str, extra: &[&str]) -> Self {
        Self::start_with(&["--home".as_ref(), home.as_os_str()], server, extra, &[])
    }

    fn start_with(
        target: &[&std::ffi::OsStr],
        server: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut cmd = Command::new(binary());
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("REGISTRY_")) {
            cmd.env_remove(k);
        }
        let mut child = cmd
            .arg("sync")
            .args(target)
            .args(["--server", server])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Self { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM and returns the exit code.
    fn terminate(mut self) -> Option<i32> {
        crate::helpers::terminate(&mut self.child)
    }
}

impl Drop for Sync {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The folder's profile files (`*.json`), by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.ends_with(".json") {
            out.insert(name, std::fs::read(entry.path()).unwrap());
        }
    }
    out
}

/// What `export` writes for every profile (secrets redacted), as `<name>.json` files.
async fn exported(client: &mut ProfileServiceClient<Channel>) -> BTreeMap<String, Vec<u8>> {
    let resp = client
        .export_profiles(pb::ExportProfilesRequest::default())
        .await
        .unwrap()
        .into_inner();
    resp.documents
        .into_iter()
        .map(|d| (format!("{}.json", d.name), d.json.into_bytes()))
        .collect()
}

/// Waits until the folder's files are `want` plus `others` (files that are not the registry's).
async fn until_files(
    dir: &Path,
    want: &BTreeMap<String, Vec<u8>>,
    others: &BTreeMap<String, Vec<u8>>,
    sync: &Sync,
) -> Duration {
    let mut all = want.clone();
    all.extend(others.iter().map(|(k, v)| (k.clone(), v.clone())));
    let started = Instant::now();
    loop {
        if dir.is_dir() && files(dir) == all {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the folder did not follow the registry:\nwant {:?}\nhave {:?}\nsync log:\n{}",
            all.keys().collect::<Vec<_>>(),
            files(dir).keys().collect::<Vec<_>>(),
            sync.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn delete(client: &mut ProfileServiceClient<Channel>, name: &str) {
    let req = pb::DeleteProfileRequest {
        name: name.into(),
        ..Default::default()
    };
    client.delete_profile(req).await.unwrap();
}

fn update(name: &str, model: &str, key: Option<&str>) -> pb::UpdateProfileRequest {
    pb::UpdateProfileRequest {
        profile: Some(profile(name, model, key)),
        allow_missing: true,
        expected_revision: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_follows_changes_and_deletes_only_its_own_files() {
    let app = TestApp::spawn().await;
    let mut client = app.profiles().await;
    create(&mut client, profile("gpt", "gpt-4o", Some("sk-gpt-secret"))).await;
    create(&mut client, profile("claude", "claude-3", None)).await;
    let dir = app.dir.path().join("profiles");
    std::fs::create_dir_all(&dir).unwrap();
    // A file the sync did not write, and a stale copy of a registry profile it must replace.
    let mine = BTreeMap::from([("mine.json".to_owned(), b"{\"model\": \"local\"}".to_vec())]);
    std::fs::write(dir.join("mine.json"), &mine["mine.json"]).unwrap();
    std::fs::write(dir.join("claude.json"), b"{\"model\": \"old\"}").unwrap();

    let sync = Sync::start(&dir, &app.url(), &[], &[]);
    until_files(&dir, &exported(&mut client).await, &mine, &sync).await;
    let gpt = String::from_utf8(files(&dir)["gpt.json"].clone()).unwrap();
    assert!(
        gpt.contains("\"**********\"") && !gpt.contains("sk-gpt-secret"),
        "{gpt}"
    );
    let mode = std::fs::metadata(dir.join("gpt.json")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let claude_inode = std::fs::metadata(dir.join("claude.json")).unwrap().ino();

    // A change, a delete, a rename: each reaches the folder; the untouched file keeps its inode.
    client
        .update_profile(update("gpt", "gpt-4o-mini", None))
        .await
        .unwrap();
    until_files(&dir, &exported(&mut client).await, &mine, &sync).await;
    assert!(String::from_utf8_lossy(&files(&dir)["gpt.json"]).contains("gpt-4o-mini"));
    assert_eq!(
        std::fs::metadata(dir.join("claude.json")).unwrap().ino(),
        claude_inode
    );
    client
        .rename_profile(pb::RenameProfileRequest {
            name: "claude".into(),
            new_name: "claude-next".into(),
        })
        .await
        .unwrap();
    delete(&mut client, "gpt").await;
    let want = exported(&mut client).await;
    assert_eq!(want.keys().collect::<Vec<_>>(), ["claude-next.json"]);
    until_files(&dir, &want, &mine, &sync).await;
    // The manifest follows the deletes (it is saved just after them).
    let started = Instant::now();
    loop {
        let manifest = std::fs::read_to_string(dir.join(".profile-registry-sync")).unwrap();
        if manifest.contains("claude-next.json") && !manifest.contains("gpt.json") {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "{manifest}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let log = sync.log();
    assert_eq!(sync.terminate(), Some(0), "{log}");
    assert!(!log.contains("sk-gpt-secret"));
    assert_eq!(files(&dir)["mine.json"], mine["mine.json"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_converges_after_the_server_and_the_sync_restart() {
    let data = tempfile::tempdir().unwrap();
    let server = ChildServer::start(data.path(), &[]);
    let addr = server.addr;
    let mut client = ProfileServiceClient::new(connect(addr).await);
    for name in ["a", "b", "c"] {
        client
            .update_profile(update(name, "m1", None))
            .await
            .unwrap();
    }
    let dir = data.path().join("mirror");
    let sync = Sync::start(&dir, &addr.to_string(), &[], &[]);
    until_files(&dir, &exported(&mut client).await, &BTreeMap::new(), &sync).await;
    // A change the sync applies: it now knows the seq it is in step with.
    client
        .update_profile(update("c", "m1b", None))
        .await
        .unwrap();
    until_files(&dir, &exported(&mut client).await, &BTreeMap::new(), &sync).await;

    // The server dies (SIGKILL) and comes back on the same address with changes made meanwhile
    // by another server on the same data: the sync resumes its watch after the last change it
    // applied (no export of everything) and catches up.
    drop(server);
    let server = ChildServer::start(data.path(), &[]);
    let mut other = ProfileServiceClient::new(connect(server.addr).await);
    other.update_profile(update("a", "m2", None)).await.unwrap();
    delete(&mut other, "b").await;
    drop(other);
    drop(server);
    let server = ChildServer::start_on(&addr.to_string(), data.path(), &[], &[]);
    let mut client = ProfileServiceClient::new(connect(server.addr).await);
    until_files(&dir, &exported(&mut client).await, &BTreeMap::new(), &sync).await;
    assert!(sync.log().contains("sync out of step"), "{}", sync.log());
    assert!(
        sync.log().contains("resumed after change"),
        "{}",
        sync.log()
    );

    // The sync itself is killed; changes meanwhile; a new sync converges without rewriting the
    // files that still hold their profiles.
    drop(sync);
    let c_inode = std::fs::metadata(dir.join("c.json")).unwrap().ino();
    delete(&mut client, "a").await;
    client
        .update_profile(update("d", "m1", None))
        .await
        .unwrap();
    let sync = Sync::start(&dir, &addr.to_string(), &[], &[]);
    until_files(&dir, &exported(&mut client).await, &BTreeMap::new(), &sync).await;
    assert_eq!(
        std::fs::metadata(dir.join("c.json")).unwrap().ino(),
        c_inode
    );
    assert_eq!(sync.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_once_names_and_secret_modes() {
    let app = TestApp::spawn().await;
    let mut client = app.profiles().await;
    create(&mut client, profile("gpt", "gpt-4o", Some("sk-plain-1"))).await;
    create(&mut client, profile("other", "o3", Some("sk-plain-2"))).await;
    let dir = app.dir.path().join("once");
    let server = app.url();
    let o = once(
        &dir,
        &server,
        &["--name", "gpt", "--secrets", "plaintext"],
        &[],
    )
    .await;
    let text = output_text(&o);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("1 profile, 1 written"), "{text}");
    assert_eq!(files(&dir).keys().collect::<Vec<_>>(), ["gpt.json"]);
    assert!(String::from_utf8_lossy(&files(&dir)["gpt.json"]).contains("sk-plain-1"));
    assert!(!text.contains("sk-plain-1"));

    // A second run with nothing changed writes nothing.
    let o = once(
        &dir,
        &server,
        &["--name", "gpt", "--secrets", "plaintext"],
        &[],
    )
    .await;
    assert!(output_text(&o).contains("0 written, 1 unchanged"));

    // Encrypted without the key: a usage error, nothing written.
    let o = once(&dir, &server, &["--secrets", "encrypted"], &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
    assert!(output_text(&o).contains("OH_SECRET_KEY"));
    // A bad name is refused by name.
    let o = once(&dir, &server, &["--name", "../x"], &[]).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(output_text(&o).contains("--name"));

    // Encrypted: the files hold Fernet tokens, not the key; all profiles now (the manifest owns
    // gpt.json, so it is rewritten in the new mode).
    let key = "a-secret-key-for-the-sdk";
    let o = once(
        &dir,
        &server,
        &["--secrets", "encrypted"],
        &[("OH_SECRET_KEY", key)],
    )
    .await;
    assert!(o.status.success(), "{}", output_text(&o));
    let all = files(&dir);
    assert_eq!(all.keys().collect::<Vec<_>>(), ["gpt.json", "other.json"]);
    for text in all.values() {
        let text = String::from_utf8_lossy(text);
        assert!(
            text.contains("\"gAAAAA") && !text.contains("sk-plain"),
            "{text}"
        );
    }
    // Encrypted again with the same key: fresh tokens, but the same secrets: nothing rewritten.
    let o = once(
        &dir,
        &server,
        &["--secrets", "encrypted"],
        &[("OH_SECRET_KEY", key)],
    )
    .await;
    assert!(output_text(&o).contains("0 written, 2 unchanged"));

    // Nobody listening: --once fails with the address named.
    let o = once(&dir, "127.0.0.1:9", &[], &[]).await;
    assert!(!o.status.success());
    assert!(output_text(&o).contains("127.0.0.1:9"));
}

/// The real SDK's `LLMProfileStore`, reading the synced folder, sees a change made through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_loads_what_sync_wrote() {
    let pythons = sdk_pythons();
    if skip_without(
        "Python 3.12 with openhands-sdk ($REGISTRY_SDK_PYTHONS)",
        !pythons.is_empty(),
    ) {
        return;
    }
    let app = TestApp::spawn().await;
    let mut client = app.profiles().await;
    create(&mut client, profile("agent", "gpt-4o", Some("sk-agent"))).await;
    let persistence = app.dir.path().join("oh");
    let dir: PathBuf = persistence.join("profiles");
    let sync = Sync::start(&dir, &app.url(), &[], &[]);
    until_files(&dir, &exported(&mut client).await, &BTreeMap::new(), &sync).await;
    client
        .update_profile(update("agent", "claude-sonnet", None))
        .await
        .unwrap();
    // Polls the SDK's own load until it sees the new model (or 10 s pass).
    let script = r#"
import sys, time
from openhands.sdk.llm.llm_profile_store import LLMProfileStore
store = LLMProfileStore(sys.argv[1])
start = time.monotonic()
while True:
    try:
        llm = store.load("agent")
        if llm.model == "claude-sonnet":
            break
    except Exception:
        pass
    if time.monotonic() - start > 10:
        sys.exit("the SDK never loaded the change")
    time.sleep(0.01)
key = llm.api_key.get_secret_value() if llm.api_key is not None else None
assert key in (None, "", "**********"), "the default sync must not carry keys"
print(f"loaded after {time.monotonic() - start:.3f} s")
"#;
    for python in pythons {
        let o = Command::new(&python)
            .args(["-c", script])
            .arg(&dir)
            .env("OPENHANDS_SUPPRESS_BANNER", "1")
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}: {}{}\nsync log:\n{}",
            python.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            sync.log()
        );
        eprintln!(
            "{}: {}",
            python.display(),
            String::from_utf8_lossy(&o.stdout).trim()
        );
    }
    assert_eq!(sync.terminate(), Some(0));
}

/// `sync DIR --server SERVER --once` with `extra` arguments and `env`.
async fn once(dir: &Path, server: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = dir.display().to_string();
    let mut args = vec!["sync", &dir, "--server", server, "--once"];
    args.extend(extra);
    run_cli(&args, env).await
}

/// What a hostile or broken folder cannot make the sync do: delete outside the folder (a planted
/// manifest), stop syncing (a folder in a profile's place), adopt a file it did not write, or run
/// twice on one folder; and a folder deleted under a running sync is written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_holds_its_ground_in_a_hostile_folder() {
    let app = TestApp::spawn().await;
    let mut client = app.profiles().await;
    for name in ["blocked", "fine", "theirs"] {
        create(&mut client, profile(name, "m1", None)).await;
    }
    let root = app.dir.path();
    let dir = root.join("hostile");
    std::fs::create_dir_all(dir.join("blocked.json")).unwrap();
    let victims = [root.join("victim.json"), root.join("hostile-victim.json")];
    for v in &victims {
        std::fs::write(v, b"{}").unwrap();
    }
    let manifest = serde_json::json!({
        "files": ["../victim.json", victims[1].display().to_string(), "fine.json"]
    });
    std::fs::write(dir.join(".profile-registry-sync"), manifest.to_string()).unwrap();
    // A file the sync did not write that already holds its profile: left, and never adopted.
    let theirs = exported(&mut client).await.remove("theirs.json").unwrap();
    std::fs::write(dir.join("theirs.json"), &theirs).unwrap();
    let mode = std::fs::Permissions::from_mode(0o600);
    std::fs::set_permissions(dir.join("theirs.json"), mode).unwrap();

    let o = once(&dir, &app.url(), &[], &[]).await;
    let (code, text) = (o.status.code(), output_text(&o));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("2 profiles, 1 written (fine), 1 unchanged"),
        "{text}"
    );
    assert!(text.contains("folder is in the way"), "{text}");
    assert!(text.contains("was dropped"), "{text}");
    for v in &victims {
        assert!(v.exists(), "{} was deleted", v.display());
    }
    assert!(dir.join("blocked.json").is_dir());

    delete(&mut client, "theirs").await;
    let o = once(&dir, &app.url(), &[], &[]).await;
    let (code, text) = (o.status.code(), output_text(&o));
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(std::fs::read(dir.join("theirs.json")).unwrap(), theirs);

    // One sync per folder: a second one is refused while the first runs.
    std::fs::remove_dir(dir.join("blocked.json")).unwrap();
    let sync = Sync::start(&dir, &app.url(), &[], &[]);
    let mut want = exported(&mut client).await;
    let theirs_file = BTreeMap::from([("theirs.json".to_owned(), theirs.clone())]);
    until_files(&dir, &want, &theirs_file, &sync).await;
    let o = once(&dir, &app.url(), &[], &[]).await;
    let (code, text) = (o.status.code(), output_text(&o));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("one sync per folder"), "{text}");

    // The folder deleted under the running sync: the next change writes all of it again.
    std::fs::remove_dir_all(&dir).unwrap();
    client
        .update_profile(update("fine", "m2", None))
        .await
        .unwrap();
    want = exported(&mut client).await;
    until_files(&dir, &want, &BTreeMap::new(), &sync).await;
    assert_eq!(sync.terminate(), Some(0));
}

/// A token the server refuses, before the first sync in step: the sync exits 1 saying so instead
/// of retrying forever (in Kubernetes the container restarts, visibly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_exits_when_the_server_refuses_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let hash = profile_registry::auth::token_hash_hex("tok-reader-sync");
    std::fs::write(&tokens, format!("viewer:reader:sha256:{hash}\n")).unwrap();
    let app = TestApp::spawn_in_with(dir, |a| a.auth_tokens_file = Some(tokens)).await;
    let folder = app.dir.path().join("refused");
    for (extra, env, why) in [
        (vec![], vec![], "no token"),
        (
            vec!["--secrets", "plaintext"],
            vec![("REGISTRY_TOKEN", "tok-reader-sync")],
            "secrets role",
        ),
    ] {
        let sync = Sync::start(&folder, &app.url(), &extra, &env);
        let mut sync = sync;
        let started = Instant::now();
        let code = loop {
            if let Some(status) = sync.child.try_wait().unwrap() {
                break status.code();
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{why}: still running:\n{}",
                sync.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(code, Some(1), "{why}:\n{}", sync.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_home_mirrors_connections_meta_profiles_and_agent_profiles() {
    use pb::meta_profile_service_client::MetaProfileServiceClient;
    use pb::provider_connection_service_client::ProviderConnectionServiceClient;
    let app = TestApp::spawn().await;
    let channel = app.channel().await;
    let mut profiles = app.profiles().await;
    let mut conns = ProviderConnectionServiceClient::new(channel.clone());
    let mut metas = MetaProfileServiceClient::new(channel);
    conns
        .create_provider_connection(pb::CreateProviderConnectionRequest {
            connection: Some(pb::ProviderConnection {
                id: "team".into(),
                display_name: "Team".into(),
                api_key: Some("sk-team".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    create(&mut profiles, profile("small", "openai/gpt-4o-mini", None)).await;
    let meta = |name: &str| pb::CreateMetaProfileRequest {
        meta_profile: Some(pb::MetaProfile {
            name: name.into(),
            classifier_model: "small".into(),
            prompt_template: Some("{{ instance_text }}".into()),
            ..Default::default()
        }),
    };
    metas.create_meta_profile(meta("router")).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    // Someone else's meta-profile in the folder: never touched.
    std::fs::create_dir_all(home.join("meta-profiles")).unwrap();
    std::fs::write(home.join("meta-profiles/theirs.json"), "{}").unwrap();

    let sync = Sync::start_home(
        &home,
        &app.url(),
        &["--poll-interval", "100ms", "--secrets", "plaintext"],
    );
    let file = |rel: &str| std::fs::read_to_string(home.join(rel)).ok();
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !ok() {
            assert!(
                started.elapsed() < PATIENCE,
                "{what}; sync log:\n{}",
                sync.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait("the first pass", &|| {
        file("meta-profiles/router.json").is_some() && file("profiles/small.json").is_some()
    });
    let connections = file("provider-connections/provider_connections.json").unwrap();
    assert!(
        connections.contains("\"api_key\": \"sk-team\""),
        "{connections}"
    );

    // A rotation, a new meta-profile and a delete all reach the folder.
    conns
        .update_provider_connection(pb::UpdateProviderConnectionRequest {
            connection: Some(pb::ProviderConnection {
                id: "team".into(),
                display_name: "Team".into(),
                api_key: Some("sk-rotated".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    metas.create_meta_profile(meta("second")).await.unwrap();
    metas
        .delete_meta_profile(pb::DeleteMetaProfileRequest {
            name: "router".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    wait("the changes", &|| {
        file("provider-connections/provider_connections.json")
            .is_some_and(|t| t.contains("sk-rotated"))
            && file("meta-profiles/second.json").is_some()
            && file("meta-profiles/router.json").is_none()
    });
    assert_eq!(file("meta-profiles/theirs.json").as_deref(), Some("{}"));
    let mode = std::fs::metadata(home.join("meta-profiles/second.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(sync.terminate(), Some(0));
}
