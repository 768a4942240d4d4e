//! WatchProfiles: the snapshot, then live changes, with no gap and no step back.
use std::collections::BTreeMap;
use std::time::Duration;

use profile_registry::pb;
use profile_registry::pb::profile_event::Type;
use tonic::Streaming;

use crate::helpers::{create, delete_request, full_listing, profile, TestApp};

pub async fn next(stream: &mut Streaming<pb::ProfileEvent>) -> pb::ProfileEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .expect("stream ok")
        .expect("stream open")
}

#[tokio::test]
async fn initial_snapshot_then_live_changes() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    create(&mut c, profile("a", "gpt-4o", Some("sk-a"))).await;
    create(&mut c, profile("b", "gpt-4o", None)).await;

    let mut w = app.profiles().await;
    let mut stream = w
        .watch_profiles(pb::WatchProfilesRequest {
            send_initial: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for want in ["a", "b"] {
        let e = next(&mut stream).await;
        assert_eq!(
            (e.r#type(), e.name.as_str(), e.initial),
            (Type::Put, want, true)
        );
    }
    let a = next_after(&mut c, &mut stream, |c| async move {
        let mut c = c;
        c.update_profile(pb::UpdateProfileRequest {
            profile: Some(profile("a", "gpt-5", Some("sk-new"))),
            allow_missing: false,
            expected_revision: None,
        })
        .await
        .unwrap();
    })
    .await;
    assert_eq!(
        (a.r#type(), a.name.as_str(), a.revision, a.initial),
        (Type::Put, "a", 2, false)
    );
    let llm = a.profile.unwrap().llm.unwrap();
    assert_eq!(
        llm.api_key.as_deref(),
        Some("**********"),
        "watch never reveals"
    );
    assert_eq!(llm.model, "gpt-5");

    c.rename_profile(pb::RenameProfileRequest {
        name: "b".into(),
        new_name: "c".into(),
    })
    .await
    .unwrap();
    let del = next(&mut stream).await;
    let put = next(&mut stream).await;
    assert_eq!(
        (del.r#type(), del.name.as_str(), del.revision),
        (Type::Delete, "b", 1)
    );
    assert_eq!(
        (put.r#type(), put.name.as_str(), put.revision),
        (Type::Put, "c", 2)
    );

    c.delete_profile(delete_request("a")).await.unwrap();
    let gone = next(&mut stream).await;
    assert_eq!(
        (gone.r#type(), gone.name.as_str(), gone.revision),
        (Type::Delete, "a", 2)
    );
}

async fn next_after<F, Fut>(
    c: &mut pb::profile_service_client::ProfileServiceClient<tonic::transport::Channel>,
    stream: &mut Streaming<pb::ProfileEvent>,
    act: F,
) -> pb::ProfileEvent
where
    F: FnOnce(pb::profile_service_client::ProfileServiceClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    act(c.clone()).await;
    next(stream).await
}

#[tokio::test]
async fn watch_started_during_writes_has_no_gap() {
    let app = TestApp::spawn().await;
    let mut writers = Vec::new();
    for i in 0..8 {
        let mut c = app.profiles().await;
        writers.push(tokio::spawn(async move {
            for j in 0..40 {
                let name = format!("p{}", (i * 40 + j) % 12);
                c.update_profile(pb::UpdateProfileRequest {
                    profile: Some(profile(&name, &format!("m{i}-{j}"), None)),
                    allow_missing: true,
                    expected_revision: None,
                })
                .await
                .unwrap();
                if j % 10 == 9 {
                    c.delete_profile(pb::DeleteProfileRequest {
                        name,
                        expected_revision: None,
                        allow_missing: true,
                        force: false,
                        purge: false,
                    })
                    .await
                    .unwrap();
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut w = app.profiles().await;
    let mut stream = w
        .watch_profiles(pb::WatchProfilesRequest {
            send_initial: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for t in writers {
        t.await.unwrap();
    }
    let mut c = app.profiles().await;
    create(&mut c, profile("zz-sentinel", "gpt-4o", None)).await;

    let mut state: BTreeMap<String, (i64, String)> = BTreeMap::new();
    loop {
        let e = next(&mut stream).await;
        if e.name == "zz-sentinel" {
            break;
        }
        match e.r#type() {
            Type::Put => {
                let model = e.profile.unwrap().llm.unwrap().model;
                if let Some((rev, _)) = state.get(&e.name) {
                    assert!(
                        e.revision > *rev,
                        "{}: revision went from {rev} to {}",
                        e.name,
                        e.revision
                    );
                }
                state.insert(e.name, (e.revision, model));
            }
            Type::Delete => {
                state.remove(&e.name);
            }
            Type::Unspecified | Type::Bookmark => panic!("unexpected event {e:?}"),
        }
    }
    let listing: BTreeMap<String, (i64, String)> = full_listing(&mut c)
        .await
        .into_iter()
        .filter(|(n, _, _)| n != "zz-sentinel")
        .map(|(n, r, l)| (n, (r, l.model)))
        .collect();
    assert_eq!(
        state, listing,
        "the watched state must equal the stored state"
    );
}

#[tokio::test]
async fn the_request_deadline_does_not_cut_open_watch_streams() {
    let app = TestApp::spawn_with(|a| a.request_timeout = Duration::from_millis(300)).await;
    let mut w = app.profiles().await;
    let mut stream = w
        .watch_profiles(pb::WatchProfilesRequest {
            send_initial: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut c = app.profiles().await;
    create(&mut c, profile("late", "gpt-4o", None)).await;
    let e = next(&mut stream).await;
    assert_eq!((e.r#type(), e.name.as_str()), (Type::Put, "late"));
}
