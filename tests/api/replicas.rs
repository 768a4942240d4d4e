//! Three server processes on one PostgreSQL database (issue 9): what is written through one replica
//! is read and watched through the others, concurrent expected_revision updates through different
//! replicas lose no update, appends from several replicas keep seqs contiguous, SIGKILL of a
//! replica under load loses no acknowledged write, and a replica that missed pruned changes tells
//! its watchers.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use profile_registry::pb;
use profile_registry::pb::conversation_service_client::ConversationServiceClient;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use tonic::transport::Channel;
use tonic::Code;

use crate::helpers::{
    bound, connect, conversation, create, create_conversation, message_event, postgres_admin,
    postgres_database, profile, skip_without, ChildServer,
};

struct Cluster {
    servers: Vec<ChildServer>,
    _dirs: Vec<tempfile::TempDir>,
    _keys: tempfile::TempDir,
}

/// Three replicas on a new database, or `None` (skipped) without PostgreSQL.
fn cluster(name: &str) -> Option<Cluster> {
    let admin = postgres_admin();
    if skip_without("PostgreSQL (REGISTRY_TEST_POSTGRES)", admin.is_some()) {
        return None;
    }
    let url = postgres_database(
        &admin?,
        &format!("{name}_{}", uuid::Uuid::new_v4().simple()),
    );
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("keys");
    std::fs::write(
        &key_file,
        "shared:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n",
    )
    .unwrap();
    let key = key_file.display().to_string();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers = dirs
        .iter()
        .map(|d| ChildServer::start(d.path(), &["--store", &url, "--secret-key-file", &key]))
        .collect();
    Some(Cluster {
        servers,
        _dirs: dirs,
        _keys: keys,
    })
}

async fn profiles_of(s: &ChildServer) -> ProfileServiceClient<Channel> {
    ProfileServiceClient::new(connect(s.addr).await)
}

async fn conversations_of(s: &ChildServer) -> ConversationServiceClient<Channel> {
    ConversationServiceClient::new(connect(s.addr).await)
}

async fn get(
    c: &mut ProfileServiceClient<Channel>,
    name: &str,
) -> Result<pb::Profile, tonic::Status> {
    c.get_profile(pb::GetProfileRequest {
        name: name.into(),
        ..Default::default()
    })
    .await
    .map(tonic::Response::into_inner)
}

/// Reads `name` through `c` until it is at `revision`; returns how many reads were stale.
async fn read_until(c: &mut ProfileServiceClient<Channel>, name: &str, revision: i64) -> usize {
    let started = Instant::now();
    let mut stale = 0;
    loop {
        if get(c, name).await.is_ok_and(|p| p.revision == revision) {
            return stale;
        }
        stale += 1;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name} did not reach revision {revision} through another replica within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn next_event(s: &mut tonic::Streaming<pb::ProfileEvent>) -> pb::ProfileEvent {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("a watch event within 10 s")
        .expect("stream ok")
        .expect("stream open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_one_replica_are_read_and_watched_through_the_others() {
    let Some(cluster) = cluster("replicas_rw") else {
        return;
    };
    let [a, b, c] = [0, 1, 2].map(|i| &cluster.servers[i]);
    let mut watchers = Vec::new();
    for s in [b, c] {
        let mut p = profiles_of(s).await;
        watchers.push(
            p.watch_profiles(pb::WatchProfilesRequest {
                send_initial: false,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner(),
        );
    }
    let mut pa = profiles_of(a).await;
    let (mut pb_, mut pc) = (profiles_of(b).await, profiles_of(c).await);

    // Created through A: read through B and C (first read: a cache miss, from the database).
    create(&mut pa, profile("shared", "gpt-4o", Some("sk-replica-1"))).await;
    assert_eq!(get(&mut pb_, "shared").await.unwrap().revision, 1);
    assert_eq!(
        get(&mut pc, "shared").await.unwrap().llm.unwrap().model,
        "gpt-4o"
    );

    // Updated through A after B and C cached it: they see the new revision (their caches are
    // invalidated by the notification).
    let mut lags = Vec::new();
    for rev in 2..=21 {
        pa.update_profile(pb::UpdateProfileRequest {
            profile: Some(profile("shared", &format!("gpt-{rev}"), None)),
            allow_missing: false,
            expected_revision: Some(rev - 1),
        })
        .await
        .unwrap();
        lags.push(read_until(&mut pb_, "shared", rev).await);
        lags.push(read_until(&mut pc, "shared", rev).await);
    }
    eprintln!(
        "reads through B and C right after each acknowledged update through A: {} of {} stale at first (stale reads in a row: {lags:?})",
        lags.iter().filter(|n| **n > 0).count(),
        lags.len()
    );

    // Renamed and deleted through C: A and B see it.
    pc.rename_profile(pb::RenameProfileRequest {
        name: "shared".into(),
        new_name: "moved".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        get(&mut pa, "shared").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(get(&mut pb_, "moved").await.unwrap().revision, 22);

    // Each watcher saw every change made through A and C, in order, with no gap.
    for w in &mut watchers {
        let first = next_event(w).await;
        assert_eq!((first.name.as_str(), first.revision), ("shared", 1));
        for rev in 2..=21 {
            let e = next_event(w).await;
            assert_eq!((e.name.as_str(), e.revision), ("shared", rev));
        }
        let gone = next_event(w).await;
        assert_eq!(
            (gone.r#type(), gone.name.as_str()),
            (pb::profile_event::Type::Delete, "shared")
        );
        let moved = next_event(w).await;
        assert_eq!((moved.name.as_str(), moved.revision), ("moved", 22));
    }

    // Events appended through A and B reach a WatchEvents stream on C, in order.
    let mut ca = conversations_of(a).await;
    let conv = create_conversation(&mut ca, conversation(bound("moved"), "replicated")).await;
    let mut cc = conversations_of(c).await;
    let mut events = cc
        .watch_events(pb::WatchEventsRequest {
            conversation_id: conv.id.clone(),
            after_seq: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut cb = conversations_of(b).await;
    for i in 0..10 {
        let client = if i % 2 == 0 { &mut ca } else { &mut cb };
        client
            .append_events(pb::AppendEventsRequest {
                conversation_id: conv.id.clone(),
                events: vec![message_event(&format!("e{i}"), "user", "hi")],
                expected_next_seq: Some(i),
            })
            .await
            .unwrap();
    }
    for want in 0..10 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(e.seq, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_and_appends_through_different_replicas_lose_nothing() {
    let Some(cluster) = cluster("replicas_cc") else {
        return;
    };
    let mut p0 = profiles_of(&cluster.servers[0]).await;
    create(&mut p0, profile("counter", "m-0", None)).await;
    let mut c0 = conversations_of(&cluster.servers[0]).await;
    let conv = create_conversation(&mut c0, conversation(bound("counter"), "shared log")).await;

    // 6 writers, two per replica, each: read, update with expected_revision, retry on ABORTED.
    let mut tasks = Vec::new();
    for w in 0..6 {
        let addr = cluster.servers[w % 3].addr;
        let id = conv.id.clone();
        tasks.push(tokio::spawn(async move {
            let mut p = ProfileServiceClient::new(connect(addr).await);
            let mut c = ConversationServiceClient::new(connect(addr).await);
            let (mut won, mut aborted) = (Vec::new(), 0);
            while won.len() < 15 {
                let current = get(&mut p, "counter").await.unwrap();
                let r = p
                    .update_profile(pb::UpdateProfileRequest {
                        profile: Some(profile("counter", &format!("m-{w}-{}", won.len()), None)),
                        allow_missing: false,
                        expected_revision: Some(current.revision),
                    })
                    .await;
                match r {
                    Ok(done) => won.push(done.into_inner().revision),
                    Err(s) if s.code() == Code::Aborted => aborted += 1,
                    Err(s) => panic!("writer {w}: {s:?}"),
                }
            }
            let mut appended = 0;
            for i in 0..10 {
                c.append_events(pb::AppendEventsRequest {
                    conversation_id: id.clone(),
                    events: vec![
                        message_event(&format!("w{w}-{i}-a"), "user", "x"),
                        message_event(&format!("w{w}-{i}-b"), "agent", "y"),
                    ],
                    expected_next_seq: None,
                })
                .await
                .unwrap();
                appended += 2;
            }
            (won, aborted, appended)
        }));
    }
    let mut revisions = Vec::new();
    let (mut aborted, mut appended) = (0, 0);
    for t in tasks {
        let (won, a, n) = t.await.unwrap();
        revisions.extend(won);
        aborted += a;
        appended += n;
    }
    revisions.sort_unstable();
    // Every acknowledged update got its own revision: none was lost or applied twice.
    assert_eq!(revisions, (2..=91).collect::<Vec<i64>>());
    let last = get(&mut p0, "counter").await.unwrap();
    assert_eq!(last.revision, 91);
    eprintln!("90 updates through 3 replicas, {aborted} ABORTED retries");

    // The log holds every appended event once, seqs contiguous from 0.
    let all = crate::helpers::all_events(&mut c0, &conv.id).await;
    assert_eq!(all.len(), appended);
    assert!(all.iter().enumerate().all(|(i, e)| e.seq == i as i64));
    let mut ids: Vec<String> = all.iter().map(|e| format!("{:?}", e.body)).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), appended, "no event stored twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_a_replica_under_load_loses_no_acknowledged_write() {
    let Some(cluster) = cluster("replicas_kill") else {
        return;
    };
    let addrs: Vec<_> = cluster.servers.iter().map(|s| s.addr).collect();
    // 8 writers on replicas 0 and 1, each owning a profile, updating it with expected_revision.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let addr = addrs[w % 2];
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("owned-{w}");
            let mut p = ProfileServiceClient::new(connect(addr).await);
            create(&mut p, profile(&name, "m", None)).await;
            let (mut acked, mut unknown) = (1i64, false);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = p
                    .update_profile(pb::UpdateProfileRequest {
                        profile: Some(profile(&name, &format!("m-{}", acked + 1), None)),
                        allow_missing: false,
                        expected_revision: Some(acked),
                    })
                    .await;
                match r {
                    Ok(done) => acked = done.into_inner().revision,
                    // The replica died: its unanswered write may or may not have committed.
                    Err(_) => {
                        unknown = true;
                        break;
                    }
                }
            }
            (name, acked, unknown)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.servers[0].signal("KILL");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked: BTreeMap<String, (i64, bool)> = BTreeMap::new();
    for t in tasks {
        let (name, rev, unknown) = t.await.unwrap();
        acked.insert(name, (rev, unknown));
    }
    assert!(
        acked.values().any(|(_, unknown)| *unknown),
        "the killed replica's writers saw it die"
    );
    let mut p2 = profiles_of(&cluster.servers[2]).await;
    let mut total = 0;
    for (name, (rev, unknown)) in &acked {
        let stored = get(&mut p2, name).await.unwrap();
        total += rev;
        let allowed = if *unknown {
            *rev..=*rev + 1
        } else {
            *rev..=*rev
        };
        assert!(
            allowed.contains(&stored.revision),
            "{name}: acknowledged revision {rev}, stored {}",
            stored.revision
        );
        if stored.revision == *rev {
            assert_eq!(
                stored.llm.unwrap().model,
                if *rev == 1 {
                    "m".to_owned()
                } else {
                    format!("m-{rev}")
                }
            );
        }
    }
    eprintln!(
        "{total} acknowledged revisions over 8 profiles, replica 0 killed under load; all stored"
    );
}

#[test]
fn a_replica_whose_keys_do_not_open_the_database_refuses_to_start() {
    let admin = postgres_admin();
    if skip_without("PostgreSQL (REGISTRY_TEST_POSTGRES)", admin.is_some()) {
        return;
    }
    let url = postgres_database(
        &admin.unwrap(),
        &format!("replicas_keys_{}", uuid::Uuid::new_v4().simple()),
    );
    let tmp = tempfile::tempdir().unwrap();
    let (good, other) = (tmp.path().join("good"), tmp.path().join("other"));
    std::fs::write(
        &good,
        "first:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n",
    )
    .unwrap();
    std::fs::write(
        &other,
        "second:ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=\n",
    )
    .unwrap();
    let good = good.display().to_string();
    let _first = ChildServer::start(
        &tmp.path().join("a"),
        &["--store", &url, "--secret-key-file", &good],
    );

    let out = std::process::Command::new(crate::helpers::binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &url,
            "--secret-key-file",
        ])
        .arg(&other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"first\"") && err.contains("same key file"),
        "{err}"
    );
    assert!(
        !err.contains("postgres://"),
        "no URL (password) in the message: {err}"
    );
    assert!(!err.contains("ZmVkY2Jh"), "no key in the message: {err}");
}

/// Runs one SQL statement as the admin.
fn admin_sql(admin: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .args(["-X", "-q", admin, "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn serving_status(s: &ChildServer) -> i32 {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let mut h = HealthClient::new(connect(s.addr).await);
    h.check(HealthCheckRequest {
        service: String::new(),
    })
    .await
    .map_or(-1, |r| r.into_inner().status)
}

async fn wait_status(
    s: &ChildServer,
    want: tonic_health::pb::health_check_response::ServingStatus,
) {
    let started = Instant::now();
    while serving_status(s).await != want as i32 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "health did not turn {want:?} within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A new database for servers started by hand, with a key file in a temp dir.
struct Database {
    admin: String,
    db: String,
    url: String,
    tmp: tempfile::TempDir,
    key: String,
}

/// A new database named `prefix_<uuid>`, or `None` (skipped) without PostgreSQL.
fn database(prefix: &str) -> Option<Database> {
    let admin = postgres_admin();
    if skip_without("PostgreSQL (REGISTRY_TEST_POSTGRES)", admin.is_some()) {
        return None;
    }
    let admin = admin?;
    let db = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let url = postgres_database(&admin, &db);
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("keys");
    std::fs::write(&key, "r1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").unwrap();
    let key = key.display().to_string();
    Some(Database {
        admin,
        db,
        url,
        tmp,
        key,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database_connection() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let Some(Database {
        admin,
        db,
        url,
        tmp,
        key,
    }) = database("replicas_ready")
    else {
        return;
    };
    let server = ChildServer::start(
        &tmp.path().join("d"),
        &["--store", &url, "--secret-key-file", &key],
    );
    let mut p = profiles_of(&server).await;
    create(&mut p, profile("ready", "gpt-4o", None)).await;
    assert_eq!(serving_status(&server).await, ServingStatus::Serving as i32);

    // The database goes away (refuses connections, ours cut): NOT_SERVING, and calls that need it
    // fail with UNAVAILABLE (retryable), not INTERNAL.
    admin_sql(
        &admin,
        &format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"),
    );
    admin_sql(
        &admin,
        &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"),
    );
    wait_status(&server, ServingStatus::NotServing).await;
    let err = p
        .update_profile(pb::UpdateProfileRequest {
            profile: Some(profile("ready", "gpt-5", None)),
            allow_missing: false,
            expected_revision: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // It comes back: SERVING again, and writes work.
    admin_sql(
        &admin,
        &format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"),
    );
    wait_status(&server, ServingStatus::Serving).await;
    let updated = p
        .update_profile(pb::UpdateProfileRequest {
            profile: Some(profile("ready", "gpt-5", None)),
            allow_missing: false,
            expected_revision: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.revision, 2);
}

/// A replica cut off from the database while changes it never read are pruned from the change log
/// (as after an hour away) tells its watchers to start over (ABORTED) instead of going on as if
/// nothing was missed; a replica that stayed connected streams the same change normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_whose_replica_missed_pruned_changes_is_told_to_start_over() {
    use sqlx::Connection;
    use tonic_health::pb::health_check_response::ServingStatus;
    let Some(Database {
        admin,
        db,
        url,
        tmp,
        key,
    }) = database("replicas_missed")
    else {
        return;
    };
    // Each replica names itself (application_name in the URL), so the test can cut off one.
    let start = |name: &str| {
        ChildServer::start(
            &tmp.path().join(name),
            &[
                "--store",
                &format!("{url}?application_name={name}"),
                "--secret-key-file",
                &key,
            ],
        )
    };
    let (away, stayed) = (start("replica_away"), start("replica_stayed"));
    let mut writer = profiles_of(&stayed).await;
    create(&mut writer, profile("watched", "gpt-4o", None)).await;
    let (mut on_away, mut on_stayed) = (watch_from(&away).await, watch_from(&stayed).await);
    for stream in [&mut on_away, &mut on_stayed] {
        let first = next_event(stream).await;
        assert_eq!((first.name.as_str(), first.revision), ("watched", 1));
    }

    // Cut `away` off, change the profile through `stayed`, and prune the change log.
    let mut held = sqlx::PgConnection::connect(&url).await.unwrap();
    admin_sql(
        &admin,
        &format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"),
    );
    admin_sql(
        &admin,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{db}' AND application_name = 'replica_away'"
        ),
    );
    wait_status(&away, ServingStatus::NotServing).await;
    writer
        .update_profile(pb::UpdateProfileRequest {
            profile: Some(profile("watched", "gpt-5", None)),
            allow_missing: false,
            expected_revision: Some(1),
        })
        .await
        .unwrap();
    let changed = next_event(&mut on_stayed).await;
    assert_eq!((changed.name.as_str(), changed.revision), ("watched", 2));
    // As a pruning does (the table's trigger raises the horizon past the rows).
    sqlx::query("DELETE FROM profile_changes")
        .execute(&mut held)
        .await
        .unwrap();
    admin_sql(
        &admin,
        &format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"),
    );

    // Back: `away` serves again, its watcher is told, and a new watch starts from the truth.
    wait_status(&away, ServingStatus::Serving).await;
    let told = tokio::time::timeout(Duration::from_secs(10), on_away.message())
        .await
        .expect("the watcher is told within 10 s")
        .expect_err("an error, not an event");
    assert_eq!(told.code(), Code::Aborted, "{told:?}");
    assert!(told.message().contains("send_initial"), "{told:?}");
    let first = next_event(&mut watch_from(&away).await).await;
    assert_eq!((first.name.as_str(), first.revision), ("watched", 2));
    held.close().await.unwrap();
}

/// A new watch on `s` with send_initial.
async fn watch_from(s: &ChildServer) -> tonic::Streaming<pb::ProfileEvent> {
    profiles_of(s)
        .await
        .watch_profiles(pb::WatchProfilesRequest {
            send_initial: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_token_from_one_replica_continues_on_another() {
    let Some(cluster) = cluster("replicas_pages") else {
        return;
    };
    let [a, b, _] = [0, 1, 2].map(|i| &cluster.servers[i]);
    let mut pa = profiles_of(a).await;
    for i in 0..5 {
        create(&mut pa, profile(&format!("p{i}"), "gpt-4o", None)).await;
    }
    let first = pa
        .list_profiles(pb::ListProfilesRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // The token is keyed with the shared key file: replica B reads it.
    let mut pb_ = profiles_of(b).await;
    let second = pb_
        .list_profiles(pb::ListProfilesRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = second.profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["p2", "p3"]);
    // An altered token is refused by either.
    let mut altered = first.next_page_token.into_bytes();
    let last = altered.len() - 1;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let err = pb_
        .list_profiles(pb::ListProfilesRequest {
            page_size: 2,
            page_token: String::from_utf8(altered).unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// A watch left on one replica resumes on another (`start_after_seq`): the seq names the same
/// change on every replica, and the changes made meanwhile through a third arrive once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_another_replica_with_the_same_seqs() {
    let Some(cluster) = cluster("replicas_resume") else {
        return;
    };
    let [a, b, c] = [0, 1, 2].map(|i| &cluster.servers[i]);
    let live = |s| async move {
        profiles_of(s)
            .await
            .watch_profiles(pb::WatchProfilesRequest::default())
            .await
            .unwrap()
            .into_inner()
    };
    let (mut on_a, mut on_c) = (live(a).await, live(c).await);
    let mut writer = profiles_of(b).await;
    create(&mut writer, profile("moving", "gpt-4o", None)).await;
    let (seen_a, seen_c) = (next_event(&mut on_a).await, next_event(&mut on_c).await);
    assert_eq!(
        seen_a.seq, seen_c.seq,
        "one change, one seq: {seen_a:?} {seen_c:?}"
    );
    drop(on_a);
    for model in ["gpt-5", "gpt-5.1"] {
        writer
            .update_profile(pb::UpdateProfileRequest {
                profile: Some(profile("moving", model, None)),
                allow_missing: false,
                expected_revision: None,
            })
            .await
            .unwrap();
    }
    let mut resumed = profiles_of(c)
        .await
        .watch_profiles(pb::WatchProfilesRequest {
            start_after_seq: seen_a.seq,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = seen_a.seq;
    for revision in [2, 3] {
        let e = next_event(&mut resumed).await;
        let also = next_event(&mut on_c).await;
        assert_eq!((e.name.as_str(), e.revision), ("moving", revision), "{e:?}");
        assert_eq!(e.seq, also.seq, "the resumed and the live watch agree");
        assert!(e.seq > last);
        last = e.seq;
    }
    let quiet = tokio::time::timeout(Duration::from_millis(500), resumed.message()).await;
    assert!(quiet.is_err(), "nothing sent twice: {quiet:?}");
}
