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

use crate::helpers::{connect, full_listing, profile, ChildServer};

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
                    Err(s)
                        if s.code() == Code::Cancelled
                            && s.message() == "operation was canceled" =>
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        *codes
                            .lock()
                            .unwrap()
                            .entry("NeverSent".to_owned())
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
            ["Ok", "Unavailable", "Aborted", "NeverSent"].contains(&code.as_str()),
            "a call failed with {code}: {codes:?}"
        );
    }
    assert!(
        codes.get("Ok").copied().unwrap_or(0) > before,
        "no call succeeded on the new server: {codes:?}"
    );
    let mut c = ProfileServiceClient::new(connect(new.addr).await);
    let stored: BTreeMap<String, i64> = full_listing(&mut c)
        .await
        .into_iter()
        .map(|(n, r, _)| (n, r))
        .collect();
    for (name, rev) in acked.lock().unwrap().iter() {
        let got = stored.get(name).copied().unwrap_or(0);
        assert!(
            got >= *rev,
            "{name}: acknowledged revision {rev}, stored {got}"
        );
    }
}
