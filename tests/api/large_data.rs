//! Large data stays healthy: 100,000 profiles and 1,000,000 events. A measurement, not a check
//! of speed: it prints start-up time, RSS and paging latencies, and asserts only that everything
//! is there. Run it on a release build:
//! `cargo test --release --test api large_data -- --ignored --nocapture`
//! (`REGISTRY_LARGE_PROFILES` and `REGISTRY_LARGE_EVENTS` scale it down).
use std::time::{Duration, Instant};

use profile_registry::pb;
use profile_registry::pb::conversation_service_client::ConversationServiceClient;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use tonic::transport::Channel;

use crate::helpers::{connect, conversation, import_generated, inline, rss_mib, ChildServer};

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Walks every page; returns (items, pages, slowest page, mean page).
async fn walk_profiles(
    c: &mut ProfileServiceClient<Channel>,
    page_size: i32,
) -> (usize, usize, Duration, Duration) {
    let (mut items, mut pages, mut slowest, mut total) = (0, 0, Duration::ZERO, Duration::ZERO);
    let mut token = String::new();
    loop {
        let t = Instant::now();
        let page = c
            .list_profiles(pb::ListProfilesRequest {
                page_size,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let took = t.elapsed();
        (slowest, total) = (slowest.max(took), total + took);
        items += page.profiles.len();
        pages += 1;
        if page.next_page_token.is_empty() {
            return (items, pages, slowest, total / pages as u32);
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement of minutes; run with --ignored --nocapture on a release build"]
async fn large_data_stays_healthy() {
    let profiles = env_count("REGISTRY_LARGE_PROFILES", 100_000);
    let events = env_count("REGISTRY_LARGE_EVENTS", 1_000_000);
    let conversations = (events / 1000).max(1);
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    let channel = connect(server.addr).await;
    let mut p = ProfileServiceClient::new(channel.clone());
    let mut c = ConversationServiceClient::new(channel);

    let t = Instant::now();
    import_generated(&mut p, profiles, |i| {
        (
            format!("large-{i:06}"),
            format!(
                r#"{{"model": "anthropic/claude-sonnet-4-5-20250929", "base_url": "https://llm{i}.example.com", "api_key": "sk-large-{i:06}", "temperature": 0.2, "max_output_tokens": 8192, "usage_id": "agent"}}"#
            ),
        )
    })
    .await;
    let load_profiles = t.elapsed();

    let t = Instant::now();
    let mut ids = Vec::new();
    for k in 0..conversations {
        let conv = c
            .create_conversation(pb::CreateConversationRequest {
                conversation: Some(conversation(
                    inline("openai/gpt-4o", None),
                    &format!("large {k}"),
                )),
            })
            .await
            .unwrap()
            .into_inner();
        for batch in 0..(events / conversations).div_ceil(500) {
            let n = 500.min(events / conversations - batch * 500);
            let evs = (0..n)
                .map(|j| pb::Event {
                    id: format!("e{k}-{}", batch * 500 + j),
                    kind: "MessageEvent".into(),
                    source: "agent".into(),
                    body: Some(prost_types::Struct {
                        fields: [(
                            "text".to_owned(),
                            prost_types::Value::from(format!("event {j} of a large conversation")),
                        )]
                        .into(),
                    }),
                    ..Default::default()
                })
                .collect();
            c.append_events(pb::AppendEventsRequest {
                conversation_id: conv.id.clone(),
                events: evs,
                expected_next_seq: None,
            })
            .await
            .unwrap();
        }
        ids.push(conv.id);
    }
    let load_events = t.elapsed();
    let rss_loaded = rss_mib(server.child.id()).expect("the server runs");
    drop(p);
    drop(c);
    drop(server);
    let db_bytes: u64 = walk_bytes(dir.path());

    // Restart on the loaded data dir: start-up time to a served call, memory, paging.
    let t = Instant::now();
    let server = ChildServer::start(dir.path(), &[]);
    let channel = connect(server.addr).await;
    let mut p = ProfileServiceClient::new(channel.clone());
    let mut c = ConversationServiceClient::new(channel);
    p.get_profile(pb::GetProfileRequest {
        name: "large-000000".into(),
        reveal_secrets: false,
        resolve_connection: false,
        revision: None,
    })
    .await
    .unwrap();
    let startup = t.elapsed();
    let rss_started = rss_mib(server.child.id()).expect("the server runs");

    let (items, pages, slowest, mean) = walk_profiles(&mut p, 100).await;
    assert_eq!(items, profiles);
    let rss_listed = rss_mib(server.child.id()).expect("the server runs");

    let t = Instant::now();
    for i in (0..profiles).step_by((profiles / 1000).max(1)) {
        p.get_profile(pb::GetProfileRequest {
            name: format!("large-{i:06}"),
            reveal_secrets: false,
            resolve_connection: false,
            revision: None,
        })
        .await
        .unwrap();
    }
    let gets = profiles.min(1000);
    let get_mean = t.elapsed() / gets as u32;

    let (mut ev_items, mut ev_pages, mut ev_slowest, mut ev_total) =
        (0usize, 0usize, Duration::ZERO, Duration::ZERO);
    for id in ids.iter().take(10) {
        let mut token = String::new();
        loop {
            let t = Instant::now();
            let page = c
                .list_events(pb::ListEventsRequest {
                    conversation_id: id.clone(),
                    page_size: 100,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let took = t.elapsed();
            (ev_slowest, ev_total) = (ev_slowest.max(took), ev_total + took);
            ev_items += page.events.len();
            ev_pages += 1;
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
    }
    assert_eq!(ev_items, ids.len().min(10) * (events / conversations));
    let rss_end = rss_mib(server.child.id()).expect("the server runs");

    println!(
        "large data: {profiles} profiles, {conversations} conversations x {} events",
        events / conversations
    );
    println!("  load: profiles {:.1} s (ImportProfiles, 1000 a call), events {:.1} s (AppendEvents, 500 a call)", load_profiles.as_secs_f64(), load_events.as_secs_f64());
    println!(
        "  data dir: {:.0} MiB; RSS after loading {rss_loaded} MiB",
        db_bytes as f64 / 1048576.0
    );
    println!(
        "  restart to first served GetProfile: {}; RSS then {rss_started} MiB",
        millis(startup)
    );
    println!("  ListProfiles page 100, all {pages} pages: mean {}, slowest {}; RSS after {rss_listed} MiB", millis(mean), millis(slowest));
    println!("  GetProfile over the key range: mean {}", millis(get_mean));
    println!(
        "  ListEvents page 100, {ev_pages} pages: mean {}, slowest {}; RSS at end {rss_end} MiB",
        millis(ev_total / ev_pages as u32),
        millis(ev_slowest)
    );
}

fn walk_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
