//! WatchEvents: a watcher from the middle of the log gets exactly the later events, in order, and
//! ends with NOT_FOUND when its conversation is missing or deleted.
use std::time::Duration;

use profile_registry::pb;
use profile_registry::pb::conversation_service_client::ConversationServiceClient;
use tonic::Code;

use super::{app_with_profiles, MISSING_ID};
use crate::helpers::{all_events, bound, conversation, create_conversation, message_event};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_from_the_middle_gets_exactly_the_later_events_in_order() {
    let (app, mut c) = app_with_profiles().await;
    let id = create_conversation(&mut c, conversation(bound("alpha"), "watched"))
        .await
        .id;
    c.append_events(pb::AppendEventsRequest {
        conversation_id: id.clone(),
        events: (0..50)
            .map(|i| message_event(&format!("pre-{i}"), "user", "x"))
            .collect(),
        expected_next_seq: Some(0),
    })
    .await
    .unwrap();
    // Another conversation's appends must not show up.
    let other = create_conversation(&mut c, conversation(bound("alpha"), "other"))
        .await
        .id;

    let mut stream = c
        .watch_events(pb::WatchEventsRequest {
            conversation_id: id.clone(),
            after_seq: Some(24),
        })
        .await
        .unwrap()
        .into_inner();

    let channel = app.channel().await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut c = ConversationServiceClient::new(channel.clone());
            let (id, other) = (id.clone(), other.clone());
            tokio::spawn(async move {
                for i in 0..25 {
                    let target = if i % 5 == 0 { &other } else { &id };
                    c.append_events(pb::AppendEventsRequest {
                        conversation_id: target.clone(),
                        events: vec![
                            message_event(&format!("w{w}-{i}-a"), "agent", "x"),
                            message_event(&format!("w{w}-{i}-b"), "agent", "y"),
                        ],
                        expected_next_seq: None,
                    })
                    .await
                    .expect("append succeeds");
                }
            })
        })
        .collect();
    // 4 writers x 20 batches of 2 reach this conversation: 50 + 160 events, of which 25.. are watched.
    let total = 50 + 4 * 20 * 2;
    let received = tokio::time::timeout(Duration::from_secs(60), async {
        let mut got = Vec::new();
        while got.len() < total - 25 {
            let e = stream
                .message()
                .await
                .expect("the stream stays healthy")
                .expect("the stream stays open");
            got.push(e);
        }
        got
    })
    .await
    .expect("the watcher gets every event (hang guard)");
    for w in writers {
        w.await.unwrap();
    }

    let stored = all_events(&mut c, &id).await;
    assert_eq!(stored.len(), total);
    assert_eq!(
        received,
        stored[25..].to_vec(),
        "exactly the events after 24, in order"
    );

    // A watcher of a missing conversation is NOT_FOUND.
    let err = c
        .watch_events(pb::WatchEventsRequest {
            conversation_id: MISSING_ID.into(),
            after_seq: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // Deleting the conversation ends its watchers with NOT_FOUND.
    c.delete_conversation(pb::DeleteConversationRequest {
        id: id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the watch ends when its conversation is deleted (hang guard)");
    let err = end.expect_err("a deleted conversation's watch ends with an error");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("deleted"), "{err:?}");
}
