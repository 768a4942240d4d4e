//! A full data volume: a small tmpfs (CI runs as root) filled under concurrent writers. Writes are
//! refused with RESOURCE_EXHAUSTED in words (never INTERNAL), health turns NOT_SERVING, the
//! process fail-stops with a non-zero code within seconds, and after space is freed a restart
//! holds every acknowledged write.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use profile_registry::pb;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::helpers::{connect, full_listing, profile, skip_without, sled_only, ChildServer};

/// A mounted tmpfs, unmounted on drop.
struct Volume(PathBuf);

impl Volume {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_owned()))
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_volume_refuses_writes_in_words_fail_stops_and_keeps_every_acknowledged_write() {
    if sled_only("the disk-full test fills sled's own data volume") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(volume) = Volume::mount(&dir.path().join("vol"), "24m") else {
        skip_without("root, to mount a small tmpfs (mount -t tmpfs)", false);
        return;
    };
    let data = volume.0.join("data");
    let mut server = ChildServer::start(&data, &[]);
    // Leave a few MiB: the writers fill the rest.
    let filler = volume.0.join("filler");
    std::fs::write(&filler, vec![7u8; 18 * 1024 * 1024]).unwrap();

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let refusals = Arc::new(Mutex::new(Vec::<(Code, String)>::new()));
    let first_refusal = Arc::new(Mutex::new(None::<Instant>));
    let mut writers = Vec::new();
    for w in 0..4 {
        let channel = connect(server.addr).await;
        let (acked, refusals, first) = (
            Arc::clone(&acked),
            Arc::clone(&refusals),
            Arc::clone(&first_refusal),
        );
        writers.push(tokio::spawn(async move {
            let mut client = ProfileServiceClient::new(channel);
            for i in 0..2000 {
                let name = format!("w{w}-{i}");
                let mut p = profile(&name, "gpt-4o", Some("sk-disk-full"));
                p.llm.as_mut().unwrap().extra = Some(prost_types::Struct {
                    fields: [(
                        "pad".to_owned(),
                        prost_types::Value::from("p".repeat(16 * 1024)),
                    )]
                    .into(),
                });
                match client
                    .create_profile(pb::CreateProfileRequest { profile: Some(p) })
                    .await
                {
                    Ok(_) => acked.lock().unwrap().push(name),
                    Err(s) => {
                        first.lock().unwrap().get_or_insert_with(Instant::now);
                        refusals
                            .lock()
                            .unwrap()
                            .push((s.code(), s.message().to_owned()));
                        return;
                    }
                }
            }
        }));
    }
    // Health turns NOT_SERVING once writes fail (or the process is already gone).
    let mut health_seen = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while health_seen.is_none() && Instant::now() < deadline {
        if first_refusal.lock().unwrap().is_some() {
            let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
                .unwrap()
                .connect()
                .await;
            health_seen = Some(match channel {
                Ok(c) => HealthClient::new(c)
                    .check(HealthCheckRequest::default())
                    .await
                    .map_or(-1, |r| r.into_inner().status),
                Err(_) => -1,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let (code, took) = server.wait_exit(Duration::from_secs(30));
    let first = first_refusal.lock().unwrap().expect("the volume filled up");
    let exited_after = first.elapsed();
    let refusals = refusals.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "disk full: {} writes acknowledged, {} refused ({:?}); health after the first refusal: {:?}; \
         the process exited with {code:?} {:.1} s after the first refusal (waited {:.1} s)",
        acked.len(),
        refusals.len(),
        refusals.iter().map(|r| r.0).collect::<Vec<_>>(),
        health_seen,
        exited_after.as_secs_f64(),
        took.as_secs_f64()
    );
    assert!(
        !acked.is_empty(),
        "nothing was written before the volume filled"
    );
    assert_eq!(
        code,
        Some(74),
        "fail-stop exit code; log:\n{}",
        server.log()
    );
    assert!(
        exited_after < Duration::from_secs(10),
        "fail-stop took too long"
    );
    assert!(
        health_seen == Some(2) || health_seen == Some(-1),
        "health after a refused write: {health_seen:?} (2 = NOT_SERVING, -1 = gone)"
    );
    for (code, message) in &refusals {
        assert_ne!(*code, Code::Internal, "{message}");
        assert!(
            matches!(code, Code::ResourceExhausted | Code::Unavailable),
            "{code:?} {message}"
        );
    }
    assert!(
        refusals.iter().any(|(c, m)| *c == Code::ResourceExhausted
            && m.contains("no space left on the data volume")),
        "{refusals:?}"
    );
    assert!(
        !server.log().contains("sk-disk-full"),
        "a secret in the log"
    );

    // Space freed, restarted: every acknowledged write is there.
    std::fs::remove_file(&filler).unwrap();
    let server = ChildServer::start(&data, &[]);
    let mut client = ProfileServiceClient::new(connect(server.addr).await);
    let stored: std::collections::BTreeSet<String> = full_listing(&mut client)
        .await
        .into_iter()
        .map(|p| p.0)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    client
        .create_profile(pb::CreateProfileRequest {
            profile: Some(profile("after-restart", "gpt-4o", None)),
        })
        .await
        .expect("writes succeed again after the restart");
    drop(server);
    drop(volume);
}
