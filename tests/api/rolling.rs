//! A rolling restart: calls go on while the server gets SIGTERM and a new one starts on the same
//! data dir; every call either succeeds or fails with UNAVAILABLE, and no acknowledged write is lost.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use profile_registry::pb;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use tonic::transport::Channel;
use tonic::Code;

use crate::e2e::tools::python_with_grpc;
use crate::helpers::{connect, full_listing, profile, skip_without, ChildServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_survive_a_rolling_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = ChildServer::start(dir.path(), &["--shutdown-grace", "5s"]);
    let target: Arc<Mutex<SocketAddr>> = Arc::new(Mutex::new(old.addr));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    let codes: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();

    let mut clients = Vec::new();
    for i in 0..4 {
        let (target, stop, acked, codes) = (
            Arc::clone(&target),
            Arc::clone(&stop),
            Arc::clone(&acked),
            Arc::clone(&codes),
        );
        clients.push(tokio::spawn(async move {
            let name = format!("roll{i}");
            let mut current: Option<(SocketAddr, ProfileServiceClient<Channel>)> = None;
            while !stop.load(Ordering::Relaxed) {
                let addr = *target.lock().unwrap();
                if current.as_ref().is_none_or(|(a, _)| *a != addr) {
                    let ch = Channel::from_shared(format!("http://{addr}"))
                        .unwrap()
                        .connect_lazy();
                    current = Some((addr, ProfileServiceClient::new(ch)));
                }
                let client = &mut current.as_mut().unwrap().1;
                let rev = acked.lock().unwrap().get(&name).copied().unwrap_or(0);
                let req = pb::UpdateProfileRequest {
                    profile: Some(profile(&name, &format!("m-{}", rev + 1), None)),
                    allow_missing: true,
                    expected_revision: Some(rev),
                };
                let code = match client.update_profile(req).await {
                    Ok(r) => {
                        acked
                            .lock()
                            .unwrap()
                            .insert(name.clone(), r.into_inner().revision);
                        Code::Ok
                    }
                    Err(s) if s.code() == Code::Aborted => {
                        // An unacknowledged write landed before the restart: learn its revision.
                        let got = client
                            .get_profile(pb::GetProfileRequest {
                                name: name.clone(),
                                reveal_secrets: false,
                                resolve_connection: false,
                                revision: None,
                            })
                            .await;
                        if let Ok(p) = got {
                            acked
                                .lock()
                                .unwrap()
                                .insert(name.clone(), p.into_inner().revision);
                        }
                        Code::Aborted
                    }
                    // tonic's client reports a request that a closing connection never sent as
                    // CANCELLED "operation was canceled" (hyper's dispatch was gone); grpc-go and grpcio
                    // report that case as UNAVAILABLE. Counted apart, so any other CANCELLED fails.
                    // Likewise a connection torn down under a request is INTERNAL "h2 protocol
                    // error: ..." in tonic (seen once under heavy load).
                    Err(s)
                        if (s.code() == Code::Cancelled
                            && s.message() == "operation was canceled")
                            || (s.code() == Code::Internal
                                && s.message().starts_with("h2 protocol error")) =>
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        *codes
                            .lock()
                            .unwrap()
                            .entry("ConnectionLost".to_owned())
                            .or_default() += 1;
                        continue;
                    }
                    Err(s) => {
                        if s.code() != Code::Unavailable {
                            eprintln!("rolling: {:?}: {}", s.code(), s.message());
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        s.code()
                    }
                };
                *codes
                    .lock()
                    .unwrap()
                    .entry(format!("{code:?}"))
                    .or_default() += 1;
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(400)).await;
    old.signal("TERM");
    let old_exit = tokio::task::spawn_blocking(move || old.wait_exit(Duration::from_secs(10)).0)
        .await
        .unwrap();
    assert_eq!(old_exit, Some(0));
    let new = ChildServer::start(dir.path(), &[]);
    *target.lock().unwrap() = new.addr;
    let before = codes.lock().unwrap().get("Ok").copied().unwrap_or(0);
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if codes.lock().unwrap().get("Ok").copied().unwrap_or(0) > before + 20 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let codes = codes.lock().unwrap().clone();
    for code in codes.keys() {
        assert!(
            ["Ok", "Unavailable", "Aborted", "ConnectionLost"].contains(&code.as_str()),
            "a call failed with {code}: {codes:?}"
        );
    }
    assert!(
        codes.get("Ok").copied().unwrap_or(0) > before,
        "no call succeeded on the new server: {codes:?}"
    );
    let acked = acked.lock().unwrap().clone();
    assert_acknowledged_present(new.addr, &acked).await;
}

/// Every acknowledged revision (or a later one) is what the new server stores.
async fn assert_acknowledged_present(addr: SocketAddr, acked: &BTreeMap<String, i64>) {
    let mut c = ProfileServiceClient::new(connect(addr).await);
    let stored: BTreeMap<String, i64> = full_listing(&mut c)
        .await
        .into_iter()
        .map(|(n, r, _)| (n, r))
        .collect();
    for (name, rev) in acked {
        let got = stored.get(name).copied().unwrap_or(0);
        assert!(
            got >= *rev,
            "{name}: acknowledged revision {rev}, stored {got}"
        );
    }
}

/// Points the Python client at `addr`: written beside and renamed over, so the client never reads a
/// half-written (or empty) file.
fn point_at(target_file: &std::path::Path, addr: SocketAddr) {
    let next = target_file.with_extension("next");
    std::fs::write(&next, addr.to_string()).unwrap();
    std::fs::rename(&next, target_file).unwrap();
}

/// The same rolling restart driven by Python's grpcio (a C-core client, as most runtimes use):
/// here every failed call must be UNAVAILABLE, or ABORTED for a write that landed unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_client_sees_only_unavailable_during_a_rolling_restart() {
    let Some(python) = python_with_grpc() else {
        skip_without("python3 with grpcio and grpcio-tools", false);
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (target_file, stop_file) = (files.path().join("target"), files.path().join("stop"));
    let mut old = ChildServer::start(dir.path(), &["--shutdown-grace", "5s"]);
    point_at(&target_file, old.addr);
    let root = env!("CARGO_MANIFEST_DIR");
    let mut client = std::process::Command::new(python)
        .arg(format!("{root}/tests/clients/python/rolling_client.py"))
        .arg("--target-file")
        .arg(&target_file)
        .arg("--stop-file")
        .arg(&stop_file)
        .args(["--proto-dir", &format!("{root}/proto")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(client.stdout.take().unwrap()));
    let first = tokio::task::block_in_place(|| lines.next());
    assert_eq!(
        first.and_then(Result::ok).as_deref(),
        Some("running"),
        "the Python client made no successful call"
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    let old_addr = old.addr;
    old.signal("TERM");
    let (old_exit, _) = tokio::task::block_in_place(|| old.wait_exit(Duration::from_secs(10)));
    assert_eq!(old_exit, Some(0));
    let new = ChildServer::start(dir.path(), &[]);
    point_at(&target_file, new.addr);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::write(&stop_file, "").unwrap();
    let report = tokio::task::block_in_place(|| lines.next())
        .and_then(Result::ok)
        .expect("the Python client reports its outcome");
    assert!(client.wait().unwrap().success());

    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    eprintln!("grpcio rolling restart: {}", report["codes"]);
    let codes = report["codes"].as_object().unwrap();
    for code in codes.keys() {
        assert!(
            ["OK", "UNAVAILABLE", "ABORTED"].contains(&code.as_str()),
            "a call failed with {code}: {report}"
        );
    }
    for server in [old_addr, new.addr] {
        assert!(
            report["ok_by_target"][server.to_string()].as_u64() > Some(0),
            "no call succeeded on {server}: {report}"
        );
    }
    let acked: BTreeMap<String, i64> = report["acked"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(n, r)| (n.clone(), r.as_i64().unwrap()))
        .collect();
    assert!(
        acked.len() == 4,
        "every writer got an acknowledgement: {report}"
    );
    assert_acknowledged_present(new.addr, &acked).await;
}
