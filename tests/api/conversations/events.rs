//! AppendEvents and ListEvents: seq order, pages, kind/source/after_seq filters, expected_next_seq,
//! and concurrent appenders making one contiguous log.
use std::collections::HashSet;

use profile_registry::pb;
use profile_registry::pb::conversation_service_client::ConversationServiceClient;
use tonic::Code;

use super::{app_with_profiles, assert_names_field, MISSING_ID};
use crate::helpers::{
    all_events, bound, conversation, create_conversation, get_conversation, message_event,
};

#[tokio::test]
async fn append_and_list_events_by_seq_kind_and_source() {
    let (_app, mut c) = app_with_profiles().await;
    let id = create_conversation(&mut c, conversation(bound("alpha"), "log"))
        .await
        .id;
    let sources = ["user", "agent", "environment", "user", "agent", "agent"];
    let mut events: Vec<pb::Event> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| message_event(&format!("ev-{i}"), s, &format!("text {i}")))
        .collect();
    // One event with its own kind (over the body's) and one without an id anywhere.
    events[2].kind = "ObservationEvent".into();
    events[5].body.as_mut().unwrap().fields.remove("id");

    let appended = c
        .append_events(pb::AppendEventsRequest {
            conversation_id: id.clone(),
            events: events.clone(),
            expected_next_seq: Some(0),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((appended.first_seq, appended.next_seq), (0, 6));
    assert_eq!(
        get_conversation(&mut c, &id, false, false)
            .await
            .event_count,
        6
    );

    let stored = all_events(&mut c, &id).await;
    assert_eq!(
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
    for (i, e) in stored.iter().enumerate() {
        assert_eq!(e.source, sources[i], "seq {i}: source from the body");
        assert_eq!(
            e.kind,
            if i == 2 {
                "ObservationEvent"
            } else {
                "MessageEvent"
            },
            "seq {i}"
        );
        assert_eq!(
            e.timestamp,
            Some(prost_types::Timestamp {
                seconds: 1_759_320_000,
                nanos: 1_000
            }),
            "seq {i}: timestamp from the body"
        );
        assert_eq!(e.body, events[i].body, "seq {i}: body verbatim");
        if i == 5 {
            assert!(!e.id.is_empty(), "an id is generated");
        } else {
            assert_eq!(e.id, format!("ev-{i}"), "seq {i}: id from the body");
        }
    }

    // Pages of two by seq.
    let mut seqs = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list_events(pb::ListEventsRequest {
                conversation_id: id.clone(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.events.len() <= 2);
        seqs.extend(page.events.iter().map(|e| e.seq));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seqs, (0..6).collect::<Vec<_>>());
    assert!(pages >= 3);

    // Newest first, a page of four then the rest.
    let first = c
        .list_events(pb::ListEventsRequest {
            conversation_id: id.clone(),
            page_size: 4,
            descending: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![5, 4, 3, 2]
    );
    let rest = c
        .list_events(pb::ListEventsRequest {
            conversation_id: id.clone(),
            page_size: 4,
            page_token: first.next_page_token,
            descending: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 0]
    );
    assert!(rest.next_page_token.is_empty());

    let list = |kind: &str, source: &str, after_seq: Option<i64>, descending: bool| {
        pb::ListEventsRequest {
            conversation_id: id.clone(),
            after_seq,
            kind: kind.into(),
            source: source.into(),
            descending,
            ..Default::default()
        }
    };
    let seqs_of = |r: pb::ListEventsResponse| r.events.iter().map(|e| e.seq).collect::<Vec<_>>();
    let agent = c.list_events(list("", "agent", None, false)).await.unwrap();
    assert_eq!(seqs_of(agent.into_inner()), vec![1, 4, 5]);
    let obs = c
        .list_events(list("ObservationEvent", "", None, false))
        .await
        .unwrap();
    assert_eq!(seqs_of(obs.into_inner()), vec![2]);
    let both = c
        .list_events(list("MessageEvent", "user", None, true))
        .await
        .unwrap();
    assert_eq!(seqs_of(both.into_inner()), vec![3, 0]);
    let after = c.list_events(list("", "", Some(3), false)).await.unwrap();
    assert_eq!(seqs_of(after.into_inner()), vec![4, 5]);

    // An event with no kind anywhere is refused, and nothing of its batch is written.
    let mut kindless = message_event("k", "user", "x");
    kindless.body.as_mut().unwrap().fields.remove("kind");
    let err = c
        .append_events(pb::AppendEventsRequest {
            conversation_id: id.clone(),
            events: vec![message_event("ok", "user", "x"), kindless],
            expected_next_seq: None,
        })
        .await
        .unwrap_err();
    assert_names_field(&err, "events[1].kind");
    assert_eq!(all_events(&mut c, &id).await, stored);

    let err = c
        .append_events(pb::AppendEventsRequest {
            conversation_id: MISSING_ID.into(),
            events: vec![message_event("x", "user", "x")],
            expected_next_seq: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

#[tokio::test]
async fn a_stale_expected_next_seq_is_aborted_and_writes_nothing() {
    let (_app, mut c) = app_with_profiles().await;
    let id = create_conversation(&mut c, conversation(bound("alpha"), "cas"))
        .await
        .id;
    c.append_events(pb::AppendEventsRequest {
        conversation_id: id.clone(),
        events: vec![
            message_event("a", "user", "1"),
            message_event("b", "agent", "2"),
        ],
        expected_next_seq: Some(0),
    })
    .await
    .unwrap();
    let before = get_conversation(&mut c, &id, false, false).await;
    assert_eq!(before.event_count, 2);

    for stale in [0, 1, 3] {
        let err = c
            .append_events(pb::AppendEventsRequest {
                conversation_id: id.clone(),
                events: vec![message_event("c", "user", "3")],
                expected_next_seq: Some(stale),
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::Aborted,
            "expected_next_seq {stale}: {err:?}"
        );
    }
    assert_eq!(get_conversation(&mut c, &id, false, false).await, before);
    assert_eq!(
        all_events(&mut c, &id)
            .await
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );

    let ok = c
        .append_events(pb::AppendEventsRequest {
            conversation_id: id.clone(),
            events: vec![message_event("c", "user", "3")],
            expected_next_seq: Some(2),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ok.first_seq, ok.next_seq), (2, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_make_one_contiguous_log() {
    let (app, mut c) = app_with_profiles().await;
    let id = create_conversation(&mut c, conversation(bound("alpha"), "busy"))
        .await
        .id;
    let channel = app.channel().await;
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let mut c = ConversationServiceClient::new(channel.clone());
            let id = id.clone();
            tokio::spawn(async move {
                let mut firsts = Vec::new();
                for i in 0..25 {
                    let r = c
                        .append_events(pb::AppendEventsRequest {
                            conversation_id: id.clone(),
                            events: vec![message_event(&format!("w{w}-{i}"), "agent", "x")],
                            expected_next_seq: None,
                        })
                        .await
                        .expect("append succeeds")
                        .into_inner();
                    assert_eq!(r.next_seq, r.first_seq + 1);
                    firsts.push((r.first_seq, format!("w{w}-{i}")));
                }
                firsts
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked.sort();

    let stored = all_events(&mut c, &id).await;
    assert_eq!(
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>()
    );
    let ids: HashSet<&str> = stored.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 200, "no duplicate event ids");
    assert_eq!(
        acked,
        stored
            .iter()
            .map(|e| (e.seq, e.id.clone()))
            .collect::<Vec<_>>(),
        "each acknowledged first_seq holds that append's event"
    );
    assert_eq!(
        get_conversation(&mut c, &id, false, false)
            .await
            .event_count,
        200
    );
}
