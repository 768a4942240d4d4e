//! WatchProfiles that resumes (issue 20): `start_after_seq` sends every change after the seq once,
//! across a disconnect and a server restart; a seq the store no longer keeps (`--watch-history`) or
//! has not reached ends with OUT_OF_RANGE; `send_bookmarks` sends the current seq on a quiet stream.
use std::time::Duration;

use profile_registry::pb;
use profile_registry::pb::profile_event::Type;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use profile_registry::store::WatchHistory;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use crate::helpers::{create, profile, TestApp};
use crate::watch::next;

/// Nothing more arrives within `wait`.
async fn quiet(stream: &mut Streaming<pb::ProfileEvent>, wait: Duration) {
    if let Ok(more) = tokio::time::timeout(wait, stream.message()).await {
        panic!("expected nothing more, got {more:?}");
    }
}

async fn watch(
    c: &mut ProfileServiceClient<Channel>,
    start_after_seq: i64,
    send_bookmarks: bool,
) -> Result<Streaming<pb::ProfileEvent>, tonic::Status> {
    c.watch_profiles(pb::WatchProfilesRequest {
        send_initial: false,
        start_after_seq,
        send_bookmarks,
    })
    .await
    .map(tonic::Response::into_inner)
}

async fn update(c: &mut ProfileServiceClient<Channel>, name: &str, model: &str) {
    c.update_profile(pb::UpdateProfileRequest {
        profile: Some(profile(name, model, Some("sk-resume"))),
        allow_missing: false,
        expected_revision: None,
    })
    .await
    .unwrap();
}

async fn delete(c: &mut ProfileServiceClient<Channel>, name: &str) {
    c.delete_profile(pb::DeleteProfileRequest {
        name: name.into(),
        ..Default::default()
    })
    .await
    .unwrap();
}

fn summary(e: &pb::ProfileEvent) -> (Type, String, i64) {
    (e.r#type(), e.name.clone(), e.revision)
}

/// The changes made while `stream` is gone, as a resume after `after` must send them: in order,
/// each once, then the live ones.
async fn changes_while_away(c: &mut ProfileServiceClient<Channel>) -> Vec<(Type, String, i64)> {
    update(c, "a", "gpt-5").await;
    create(c, profile("b", "gpt-4o", None)).await;
    delete(c, "a").await;
    c.rename_profile(pb::RenameProfileRequest {
        name: "b".into(),
        new_name: "c".into(),
    })
    .await
    .unwrap();
    vec![
        (Type::Put, "a".into(), 3),
        (Type::Put, "b".into(), 1),
        (Type::Delete, "a".into(), 3),
        (Type::Delete, "b".into(), 1),
        (Type::Put, "c".into(), 2),
    ]
}

/// Reads `want.len()` events: they must be `want`, with growing seqs above `after`.
async fn expect_in_order(
    stream: &mut Streaming<pb::ProfileEvent>,
    after: i64,
    want: &[(Type, String, i64)],
) -> i64 {
    let mut last = after;
    for w in want {
        let e = next(stream).await;
        assert_eq!(&summary(&e), w, "{e:?}");
        assert!(e.seq > last, "seq {} after {last}: {e:?}", e.seq);
        assert!(!e.initial);
        last = e.seq;
    }
    last
}

#[tokio::test]
async fn a_resumed_watch_sends_each_missed_change_once_then_live_ones() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    let mut first = watch(&mut c, 0, false).await.unwrap();
    create(&mut c, profile("a", "gpt-4o", Some("sk-resume"))).await;
    update(&mut c, "a", "gpt-4.1").await;
    let created = next(&mut first).await;
    let seen = next(&mut first).await;
    assert_eq!(summary(&seen), (Type::Put, "a".into(), 2));
    assert!(
        created.seq > 0 && seen.seq > created.seq,
        "{created:?} {seen:?}"
    );
    drop(first);

    let want = changes_while_away(&mut c).await;
    let mut resumed = watch(&mut c, seen.seq, false).await.unwrap();
    let last = expect_in_order(&mut resumed, seen.seq, &want).await;
    // Then live changes, and no repeat of what was replayed.
    create(&mut c, profile("d", "gpt-4o", None)).await;
    let live = next(&mut resumed).await;
    assert_eq!(summary(&live), (Type::Put, "d".into(), 1));
    assert!(live.seq > last);
    quiet(&mut resumed, Duration::from_millis(300)).await;

    // Resuming from the middle sends only what came after it.
    let mut again = watch(&mut c, created.seq, false).await.unwrap();
    let e = next(&mut again).await;
    assert_eq!((summary(&e), e.seq), ((Type::Put, "a".into(), 2), seen.seq));
    // Resuming at the newest seq sends nothing until something changes.
    let mut at_end = watch(&mut c, live.seq, false).await.unwrap();
    quiet(&mut at_end, Duration::from_millis(300)).await;
    update(&mut c, "d", "gpt-5").await;
    assert_eq!(
        summary(&next(&mut at_end).await),
        (Type::Put, "d".into(), 2)
    );
}

#[tokio::test]
async fn a_watch_resumes_after_a_server_restart() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    let mut stream = watch(&mut c, 0, false).await.unwrap();
    create(&mut c, profile("a", "gpt-4o", Some("sk-resume"))).await;
    update(&mut c, "a", "gpt-4.1").await;
    next(&mut stream).await;
    let seen = next(&mut stream).await;
    // The stream ends with the server.
    drop(stream);
    let app = TestApp::spawn_in(app.stop().await).await;
    let mut c = app.profiles().await;
    let want = changes_while_away(&mut c).await;
    let mut resumed = watch(&mut c, seen.seq, false).await.unwrap();
    expect_in_order(&mut resumed, seen.seq, &want).await;
    quiet(&mut resumed, Duration::from_millis(300)).await;
    // Replayed profiles are masked like live ones.
    let app2 = TestApp::spawn_in(app.stop().await).await;
    let mut c = app2.profiles().await;
    let mut again = watch(&mut c, seen.seq, false).await.unwrap();
    let put = next(&mut again).await;
    let key = put.profile.unwrap().llm.unwrap().api_key;
    assert_eq!(key.as_deref(), Some("**********"), "watch never reveals");
}

#[tokio::test]
async fn a_seq_the_store_no_longer_keeps_or_never_had_is_out_of_range() {
    let app = TestApp::spawn_with(|a| a.watch_history = WatchHistory::Changes(3)).await;
    let mut c = app.profiles().await;
    let mut stream = watch(&mut c, 0, false).await.unwrap();
    create(&mut c, profile("a", "gpt-4o", None)).await;
    let first = next(&mut stream).await;
    for i in 0..6 {
        update(&mut c, "a", &format!("gpt-{i}")).await;
    }
    let mut last = first.clone();
    for _ in 0..6 {
        last = next(&mut stream).await;
    }
    // At once, whether or not the server has pruned the log to the newest 3 changes yet.
    let refused = watch(&mut c, first.seq, false).await.unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(
        refused.message().contains("send_initial") && refused.message().contains("--watch-history"),
        "{refused:?}"
    );
    // The newest changes are still kept: a resume from the third-newest sends the last two.
    let mut kept = watch(&mut c, last.seq - 2, false).await.unwrap();
    for revision in [6, 7] {
        assert_eq!(
            summary(&next(&mut kept).await),
            (Type::Put, "a".into(), revision)
        );
    }
    // A seq this store never reached (a client of a store since restored or replaced).
    let ahead = watch(&mut c, last.seq + 1000, false).await.unwrap_err();
    assert_eq!(ahead.code(), Code::OutOfRange, "{ahead:?}");
    assert!(ahead.message().contains("ahead"), "{ahead:?}");
    // Bad requests name the field.
    let negative = watch(&mut c, -1, false).await.unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument);
    assert!(
        negative.message().contains("start_after_seq"),
        "{negative:?}"
    );
    let both = c
        .watch_profiles(pb::WatchProfilesRequest {
            send_initial: true,
            start_after_seq: last.seq,
            send_bookmarks: false,
        })
        .await
        .unwrap_err();
    assert_eq!(both.code(), Code::InvalidArgument);
    assert!(both.message().contains("send_initial"), "{both:?}");
}

#[tokio::test]
async fn bookmarks_carry_the_current_seq_on_a_quiet_stream() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    create(&mut c, profile("before", "gpt-4o", None)).await;
    let mut stream = watch(&mut c, 0, true).await.unwrap();
    // Quiet from the start: the bookmark names where this watch began.
    let mark = next(&mut stream).await;
    assert_eq!(mark.r#type(), Type::Bookmark, "{mark:?}");
    assert!(mark.name.is_empty() && mark.profile.is_none(), "{mark:?}");
    assert!(mark.seq > 0, "{mark:?}");
    create(&mut c, profile("a", "gpt-4o", None)).await;
    let put = next(&mut stream).await;
    assert_eq!(summary(&put), (Type::Put, "a".into(), 1));
    assert!(put.seq > mark.seq);
    let mark = next(&mut stream).await;
    assert_eq!((mark.r#type(), mark.seq), (Type::Bookmark, put.seq));
    // A resume from the bookmark sends only what came after it.
    drop(stream);
    update(&mut c, "a", "gpt-5").await;
    let mut resumed = watch(&mut c, mark.seq, false).await.unwrap();
    assert_eq!(
        summary(&next(&mut resumed).await),
        (Type::Put, "a".into(), 2)
    );
    quiet(&mut resumed, Duration::from_millis(300)).await;
    // Without send_bookmarks a quiet stream stays quiet.
    let mut plain = watch(&mut c, 0, false).await.unwrap();
    quiet(&mut plain, Duration::from_secs(3)).await;
}

/// Writes of other records take seqs too: they neither end a watch nor show up in it.
#[tokio::test]
async fn other_records_between_profile_changes_do_not_disturb_a_watch() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    let mut stream = watch(&mut c, 0, false).await.unwrap();
    create(&mut c, profile("a", "gpt-4o", None)).await;
    let first = next(&mut stream).await;
    let mut connections =
        pb::provider_connection_service_client::ProviderConnectionServiceClient::new(
            app.channel().await,
        );
    connections
        .create_provider_connection(pb::CreateProviderConnectionRequest {
            connection: Some(pb::ProviderConnection {
                id: "conn".into(),
                display_name: "Conn".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    update(&mut c, "a", "gpt-5").await;
    let second = next(&mut stream).await;
    assert_eq!(summary(&second), (Type::Put, "a".into(), 2));
    let mut resumed = watch(&mut c, first.seq, false).await.unwrap();
    assert_eq!(
        summary(&next(&mut resumed).await),
        (Type::Put, "a".into(), 2)
    );
    quiet(&mut resumed, Duration::from_millis(300)).await;
}

/// Revisions the history drops (a short `--history-revisions`, a rename) are still replayed as
/// they were sent live; an explicit purge destroys them, so their puts are skipped.
#[tokio::test]
async fn revisions_the_history_dropped_are_still_replayed() {
    let app = TestApp::spawn_with(|a| a.history_revisions = 1).await;
    let mut c = app.profiles().await;
    let mut stream = watch(&mut c, 0, false).await.unwrap();
    create(&mut c, profile("a", "gpt-4o", None)).await;
    let first = next(&mut stream).await;
    drop(stream);
    let mut models = Vec::new();
    for i in 0..4 {
        models.push(format!("gpt-{i}"));
        update(&mut c, "a", &models[i]).await;
    }
    c.rename_profile(pb::RenameProfileRequest {
        name: "a".into(),
        new_name: "b".into(),
    })
    .await
    .unwrap();
    c.delete_profile(pb::DeleteProfileRequest {
        name: "b".into(),
        purge: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut resumed = watch(&mut c, first.seq, false).await.unwrap();
    for (i, model) in models.iter().enumerate() {
        let e = next(&mut resumed).await;
        assert_eq!(summary(&e), (Type::Put, "a".into(), i as i64 + 2));
        assert_eq!(&e.profile.unwrap().llm.unwrap().model, model);
    }
    // The purge destroyed b's records, in the log too: its put is skipped, its deletion stands.
    let want = [
        (Type::Delete, "a".to_owned(), 5),
        (Type::Delete, "b".to_owned(), 6),
    ];
    expect_in_order(&mut resumed, first.seq, &want).await;
    quiet(&mut resumed, Duration::from_millis(300)).await;
}

/// `--watch-history` as an age: changes older than it are pruned, newer ones kept.
#[tokio::test]
async fn a_watch_history_by_age_prunes_older_changes() {
    let app =
        TestApp::spawn_with(|a| a.watch_history = WatchHistory::Age(Duration::from_secs(2))).await;
    let mut c = app.profiles().await;
    // A first change, so that the one resumed after below is not seq 0 ("live only").
    create(&mut c, profile("first", "gpt-4o", None)).await;
    let mut stream = watch(&mut c, 0, false).await.unwrap();
    create(&mut c, profile("a", "gpt-4o", None)).await;
    let old = next(&mut stream).await;
    assert!(old.seq > 1, "{old:?}");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    update(&mut c, "a", "gpt-5").await;
    let fresh = next(&mut stream).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match watch(&mut c, old.seq - 1, false).await {
            Err(status) => {
                assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
                break;
            }
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(_) => panic!("a change 3.5 s old is still kept with --watch-history 2s"),
        }
    }
    // The change of a moment ago is still there.
    let mut kept = watch(&mut c, old.seq, false).await.unwrap();
    assert_eq!(next(&mut kept).await.seq, fresh.seq);
}
