//! The server as a child process: SIGKILL at random moments, SIGTERM during traffic, data-dir errors.
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use profile_registry::pb;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use rand::Rng;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::helpers::sled_only;
use crate::helpers::{binary, connect, full_listing, profile, ChildServer};

type Acked = Arc<Mutex<BTreeMap<String, i64>>>;

/// Clients each own a profile and update it with expected_revision; every acknowledgement is recorded.
fn spawn_writers(
    addr: std::net::SocketAddr,
    acked: &Acked,
    clients: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|i| {
            let acked = Arc::clone(acked);
            tokio::spawn(async move {
                let name = format!("c{i}");
                let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect()
                    .await
                else {
                    return;
                };
                let mut c = ProfileServiceClient::new(channel);
                loop {
                    let rev = acked.lock().unwrap().get(&name).copied().unwrap_or(0);
                    let req = pb::UpdateProfileRequest {
                        profile: Some(profile(
                            &name,
                            &format!("m-{}", rev + 1),
                            Some(&format!("sk-{}", rev + 1)),
                        )),
                        allow_missing: true,
                        expected_revision: Some(rev),
                    };
                    match c.update_profile(req).await {
                        Ok(r) => {
                            let got = r.into_inner().revision;
                            assert_eq!(got, rev + 1, "{name}: acknowledged revision");
                            acked.lock().unwrap().insert(name.clone(), got);
                        }
                        Err(_) => return,
                    }
                }
            })
        })
        .collect()
}

/// Every acknowledged write is stored; an unacknowledged one may have landed whole, never half.
async fn verify(addr: std::net::SocketAddr, acked: &Acked) {
    let mut c = ProfileServiceClient::new(connect(addr).await);
    let stored: BTreeMap<String, (i64, String)> = full_listing(&mut c)
        .await
        .into_iter()
        .map(|(n, r, l)| (n, (r, l.model)))
        .collect();
    let mut acked = acked.lock().unwrap();
    for (name, rev) in acked.iter_mut() {
        let (stored_rev, model) = stored
            .get(name)
            .unwrap_or_else(|| panic!("{name} (acknowledged at revision {rev}) is missing"));
        assert!(
            *stored_rev == *rev || *stored_rev == *rev + 1,
            "{name}: acknowledged {rev}, stored {stored_rev}"
        );
        assert_eq!(
            model,
            &format!("m-{stored_rev}"),
            "{name}: content does not match its revision"
        );
        *rev = *stored_rev;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let acked: Acked = Arc::default();
    let mut rng = rand::rng();
    let mut total = 0;
    for round in 0..5 {
        let mut server = ChildServer::start(dir.path(), &[]);
        verify(server.addr, &acked).await;
        let writers = spawn_writers(server.addr, &acked, 8);
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
        server.signal("KILL");
        let (code, _) = server.wait_exit(Duration::from_secs(10));
        assert_eq!(code, None, "round {round}: killed by a signal");
        for w in writers {
            w.await.unwrap();
        }
        total = acked.lock().unwrap().values().sum::<i64>();
    }
    let server = ChildServer::start(dir.path(), &[]);
    verify(server.addr, &acked).await;
    assert!(
        total > 40,
        "too few acknowledged writes ({total}) for the test to mean anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let acked: Acked = Arc::default();
    let mut server = ChildServer::start(dir.path(), &["--shutdown-grace", "5s"]);
    let mut health = HealthClient::new(connect(server.addr).await);
    let mut statuses = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = statuses.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let writers = spawn_writers(server.addr, &acked, 4);
    let mut watcher = ProfileServiceClient::new(connect(server.addr).await);
    let mut events = watcher
        .watch_profiles(pb::WatchProfilesRequest {
            send_initial: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");

    let after = tokio::time::timeout(Duration::from_secs(5), statuses.message())
        .await
        .expect("a health update");
    assert_eq!(
        after.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    let (code, took) = tokio::task::spawn_blocking(move || {
        let r = server.wait_exit(Duration::from_secs(8));
        (r, server)
    })
    .await
    .map(|(r, _)| r)
    .unwrap();
    assert_eq!(code, Some(0), "exit code after SIGTERM");
    assert!(
        took < Duration::from_secs(6),
        "exit took {took:?}, over the grace period"
    );
    // The open watch stream was closed, not left hanging.
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match events.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return Code::Ok,
                Err(s) => return s.code(),
            }
        }
    })
    .await
    .expect("the watch stream ends");
    assert!(
        matches!(
            end,
            Code::Unavailable | Code::Ok | Code::Unknown | Code::Cancelled
        ),
        "{end:?}"
    );
    for w in writers {
        w.await.unwrap();
    }
    assert!(!acked.lock().unwrap().is_empty());
    let restarted = ChildServer::start(dir.path(), &[]);
    verify(restarted.addr, &acked).await;
}

#[test]
fn a_second_process_on_the_same_data_dir_exits_at_once() {
    if sled_only("the data dir lock is sled's") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _first = ChildServer::start(dir.path(), &[]);
    let out = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    assert!(
        err.contains(&dir.path().display().to_string()),
        "the message names the data dir: {err}"
    );
}

#[test]
fn unusable_data_dirs_fail_with_a_message_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir_all(corrupt.join("db")).unwrap();
    std::fs::write(corrupt.join("db").join("conf"), "garbage garbage garbage").unwrap();
    std::fs::write(corrupt.join("db").join("db"), vec![0xAB; 4096]).unwrap();

    for (case, data_dir) in [("under a file", file.join("data")), ("corrupt", corrupt)] {
        let out = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case}: should fail");
        assert!(err.contains("data dir"), "{case}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{case}: {err}"
        );
    }
}
