//! Conversations under SIGKILL at random moments: appends with expected_next_seq, renames of a bound
//! profile and LLM switches are each either wholly there after a restart or wholly absent, and every
//! acknowledged one is there.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use profile_registry::pb;
use profile_registry::pb::conversation_service_client::ConversationServiceClient;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use rand::Rng;
use tonic::transport::Channel;
use tonic::Code;

use crate::helpers::{
    all_events, bound, bound_profile, connect, conversation, conversation_ids, create,
    create_conversation, get_conversation, message_event, profile, ChildServer,
};

const BATCH: i64 = 5;
const APPENDERS: usize = 4;
/// The two names the renamed profile alternates between, and the two switch targets.
const RENAMED: [&str; 2] = ["ren-a", "ren-b"];
const SWITCH: [&str; 2] = ["sw-1", "sw-2"];

/// What the clients had acknowledged when the server died.
#[derive(Clone, Default)]
struct Acked {
    /// Per appender conversation: the acknowledged next_seq.
    next_seq: Vec<i64>,
    /// The renamed profile: acknowledged name and revision.
    renamed: (String, i64),
    /// The switched conversation: the acknowledged revision.
    switched: i64,
}

/// The conversations the rounds work on.
#[derive(Clone, Default)]
struct Ids {
    appenders: Vec<String>,
    renamed: String,
    switched: String,
}

async fn client(addr: SocketAddr) -> Option<Channel> {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .ok()
}

/// The event id of `seq` in appender conversation `i`: content tells where each event belongs.
fn event_id(i: usize, seq: i64) -> String {
    format!("a{i}-{seq}")
}

async fn setup(addr: SocketAddr) -> (Ids, Acked) {
    let channel = connect(addr).await;
    let mut p = ProfileServiceClient::new(channel.clone());
    let mut c = ConversationServiceClient::new(channel);
    create(&mut p, profile(RENAMED[0], "renamed-model", Some("sk-ren"))).await;
    for name in SWITCH {
        create(&mut p, profile(name, &format!("{name}-model"), Some("k"))).await;
    }
    let mut ids = Ids::default();
    for i in 0..APPENDERS {
        let conv =
            create_conversation(&mut c, conversation(bound(SWITCH[0]), &format!("a{i}"))).await;
        ids.appenders.push(conv.id);
    }
    ids.renamed = create_conversation(&mut c, conversation(bound(RENAMED[0]), "renamed"))
        .await
        .id;
    ids.switched = create_conversation(&mut c, conversation(bound(SWITCH[0]), "switched"))
        .await
        .id;
    let acked = Acked {
        next_seq: vec![0; APPENDERS],
        renamed: (RENAMED[0].to_owned(), 1),
        switched: 1,
    };
    (ids, acked)
}

/// Starts the three kinds of clients; each runs until the server dies under it.
fn spawn_clients(
    addr: SocketAddr,
    ids: &Ids,
    acked: &Arc<Mutex<Acked>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (i, id) in ids.appenders.iter().enumerate() {
        let (id, acked) = (id.clone(), Arc::clone(acked));
        tasks.push(tokio::spawn(async move {
            let Some(channel) = client(addr).await else {
                return;
            };
            let mut c = ConversationServiceClient::new(channel);
            loop {
                let next = acked.lock().unwrap().next_seq[i];
                let events = (next..next + BATCH)
                    .map(|seq| message_event(&event_id(i, seq), "agent", "x"))
                    .collect();
                let req = pb::AppendEventsRequest {
                    conversation_id: id.clone(),
                    events,
                    expected_next_seq: Some(next),
                };
                match c.append_events(req).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        assert_eq!((r.first_seq, r.next_seq), (next, next + BATCH), "a{i}");
                        acked.lock().unwrap().next_seq[i] = r.next_seq;
                    }
                    Err(e) => {
                        assert_ne!(e.code(), Code::Aborted, "a{i}: sole writer aborted: {e:?}");
                        return;
                    }
                }
            }
        }));
    }
    let acked_r = Arc::clone(acked);
    tasks.push(tokio::spawn(async move {
        let Some(channel) = client(addr).await else {
            return;
        };
        let mut p = ProfileServiceClient::new(channel);
        loop {
            let (from, rev) = acked_r.lock().unwrap().renamed.clone();
            let to = if from == RENAMED[0] {
                RENAMED[1]
            } else {
                RENAMED[0]
            };
            let req = pb::RenameProfileRequest {
                name: from.clone(),
                new_name: to.to_owned(),
            };
            match p.rename_profile(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    assert_eq!((r.name.as_str(), r.revision), (to, rev + 1));
                    acked_r.lock().unwrap().renamed = (r.name, r.revision);
                }
                Err(_) => return,
            }
        }
    }));
    let (id, acked_s) = (ids.switched.clone(), Arc::clone(acked));
    tasks.push(tokio::spawn(async move {
        let Some(channel) = client(addr).await else {
            return;
        };
        let mut c = ConversationServiceClient::new(channel);
        loop {
            let rev = acked_s.lock().unwrap().switched;
            // Revision 1 is bound to SWITCH[0] and every switch flips: odd revisions name SWITCH[0].
            let target = SWITCH[(rev % 2) as usize];
            let req = pb::SwitchLlmRequest {
                id: id.clone(),
                usage_id: String::new(),
                target: Some(pb::switch_llm_request::Target::Profile(target.into())),
                expected_revision: Some(rev),
            };
            match c.switch_llm(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    assert_eq!(r.revision, rev + 1);
                    assert_eq!(bound_profile(&r.llms["agent"]), Some(target));
                    acked_s.lock().unwrap().switched = r.revision;
                }
                Err(e) => {
                    assert_ne!(e.code(), Code::Aborted, "sole switcher aborted: {e:?}");
                    return;
                }
            }
        }
    }));
    tasks
}

/// Every acknowledged write is there; an unacknowledged one landed whole or not at all. Moves
/// `acked` to the stored state, so the next round's clients continue from it.
async fn verify(addr: SocketAddr, ids: &Ids, acked: &Arc<Mutex<Acked>>) {
    let channel = connect(addr).await;
    let mut c = ConversationServiceClient::new(channel.clone());
    let mut p = ProfileServiceClient::new(channel);
    let shared = acked;
    let mut acked = shared.lock().unwrap().clone();

    for (i, id) in ids.appenders.iter().enumerate() {
        let conv = get_conversation(&mut c, id, false, false).await;
        let lost = conv.event_count - acked.next_seq[i];
        assert!(
            lost == 0 || lost == BATCH,
            "a{i}: acknowledged next_seq {}, stored event_count {}",
            acked.next_seq[i],
            conv.event_count
        );
        let events = all_events(&mut c, id).await;
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (0..conv.event_count).collect::<Vec<_>>(),
            "a{i}: seqs contiguous up to event_count"
        );
        for e in &events {
            assert_eq!(e.id, event_id(i, e.seq), "a{i}: the event at seq {}", e.seq);
        }
        acked.next_seq[i] = conv.event_count;
    }

    // The renamed profile: under exactly one of its names, and its conversation follows it.
    let mut present = Vec::new();
    for name in RENAMED {
        match p
            .get_profile(pb::GetProfileRequest {
                name: name.into(),
                reveal_secrets: true,
                resolve_connection: false,
                revision: None,
            })
            .await
        {
            Ok(r) => present.push(r.into_inner()),
            Err(e) => assert_eq!(e.code(), Code::NotFound, "{name}: {e:?}"),
        }
    }
    assert_eq!(
        present.len(),
        1,
        "exactly one of {RENAMED:?} exists: {present:?}"
    );
    let prof = &present[0];
    let (acked_name, acked_rev) = acked.renamed.clone();
    assert!(
        prof.revision == acked_rev || prof.revision == acked_rev + 1,
        "renamed profile: acknowledged revision {acked_rev}, stored {}",
        prof.revision
    );
    // Created as RENAMED[0] at revision 1; every rename flips the name and adds one.
    let expected_name = RENAMED[((prof.revision - 1) % 2) as usize];
    assert_eq!(prof.name, expected_name, "name matches the revision");
    if prof.revision == acked_rev {
        assert_eq!(prof.name, acked_name);
    }
    let llm = prof.llm.clone().unwrap_or_default();
    assert_eq!(llm.model, "renamed-model");
    assert_eq!(llm.api_key.as_deref(), Some("sk-ren"));
    let conv = get_conversation(&mut c, &ids.renamed, true, true).await;
    assert_eq!(
        bound_profile(&conv.llms["agent"]),
        Some(prof.name.as_str()),
        "the conversation's binding names the profile's current name"
    );
    let resolved = conv.llms["agent"].resolved.clone().unwrap_or_default();
    assert_eq!(resolved.model, "renamed-model");
    assert_eq!(resolved.api_key.as_deref(), Some("sk-ren"));
    assert_eq!(
        conv.revision, prof.revision,
        "one conversation revision per rename, as for the profile"
    );
    let other = RENAMED.iter().find(|n| **n != prof.name).unwrap();
    assert_eq!(
        conversation_ids(&mut c, pb::ExecutionStatus::Unspecified, &prof.name).await,
        vec![ids.renamed.clone()]
    );
    assert!(
        conversation_ids(&mut c, pb::ExecutionStatus::Unspecified, other)
            .await
            .is_empty(),
        "the old name {other} lists nothing"
    );
    acked.renamed = (prof.name.clone(), prof.revision);

    // The switched conversation: one of the two profiles, the one its revision says.
    let conv = get_conversation(&mut c, &ids.switched, true, false).await;
    assert!(
        conv.revision == acked.switched || conv.revision == acked.switched + 1,
        "switched: acknowledged revision {}, stored {}",
        acked.switched,
        conv.revision
    );
    let name = SWITCH[((conv.revision - 1) % 2) as usize];
    assert_eq!(bound_profile(&conv.llms["agent"]), Some(name));
    assert_eq!(
        conv.llms["agent"]
            .resolved
            .clone()
            .unwrap_or_default()
            .model,
        format!("{name}-model")
    );
    assert!(
        conversation_ids(&mut c, pb::ExecutionStatus::Unspecified, name)
            .await
            .contains(&ids.switched),
        "{name} lists the switched conversation"
    );
    let not = SWITCH.iter().find(|n| **n != name).unwrap();
    assert!(
        !conversation_ids(&mut c, pb::ExecutionStatus::Unspecified, not)
            .await
            .contains(&ids.switched),
        "{not} does not list the switched conversation"
    );
    acked.switched = conv.revision;
    *shared.lock().unwrap() = acked;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_writes_survive_sigkill_whole() {
    let dir = tempfile::tempdir().unwrap();
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let mut ids = Ids::default();
    let mut rng = rand::rng();
    for round in 0..5 {
        let mut server = ChildServer::start(dir.path(), &[]);
        if round == 0 {
            let (i, a) = setup(server.addr).await;
            ids = i;
            *acked.lock().unwrap() = a;
        } else {
            verify(server.addr, &ids, &acked).await;
        }
        let clients = spawn_clients(server.addr, &ids, &acked);
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
        server.signal("KILL");
        let (code, _) = server.wait_exit(Duration::from_secs(10));
        assert_eq!(code, None, "round {round}: killed by a signal");
        for t in clients {
            t.await.unwrap();
        }
    }
    let server = ChildServer::start(dir.path(), &[]);
    verify(server.addr, &ids, &acked).await;
    let a = acked.lock().unwrap();
    let appended: i64 = a.next_seq.iter().sum();
    assert!(
        appended >= 50 && a.renamed.1 > 3 && a.switched > 3,
        "too little acknowledged work for the test to mean anything: {appended} events, \
         profile revision {}, switch revision {}",
        a.renamed.1,
        a.switched
    );
}
