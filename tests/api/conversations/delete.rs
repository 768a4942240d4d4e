//! DeleteConversation: the conversation goes with its events, revisions and allow_missing.
use profile_registry::pb;
use tonic::Code;

use super::app_with_profiles;
use crate::helpers::{
    all_events, bound, conversation, conversation_ids, create_conversation, message_event,
};

#[tokio::test]
async fn delete_removes_the_conversation_with_its_events() {
    let (_app, mut c) = app_with_profiles().await;
    let id = create_conversation(&mut c, conversation(bound("alpha"), "doomed"))
        .await
        .id;
    c.append_events(pb::AppendEventsRequest {
        conversation_id: id.clone(),
        events: (0..3)
            .map(|i| message_event(&format!("e{i}"), "user", "hi"))
            .collect(),
        expected_next_seq: Some(0),
    })
    .await
    .unwrap();

    let stale = c
        .delete_conversation(pb::DeleteConversationRequest {
            id: id.clone(),
            expected_revision: Some(7),
            allow_missing: false,
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    assert_eq!(all_events(&mut c, &id).await.len(), 3);

    let deleted = c
        .delete_conversation(pb::DeleteConversationRequest {
            id: id.replace('-', ""),
            expected_revision: Some(1),
            allow_missing: false,
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        deleted,
        pb::DeleteConversationResponse {
            id: id.clone(),
            deleted: true,
            events_deleted: 3,
        }
    );

    let err = c
        .list_events(pb::ListEventsRequest {
            conversation_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = c
        .get_conversation(pb::GetConversationRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        conversation_ids(&mut c, pb::ExecutionStatus::Unspecified, "alpha")
            .await
            .is_empty(),
        "its binding is gone from the profile filter"
    );

    let again = c
        .delete_conversation(pb::DeleteConversationRequest {
            id: id.clone(),
            expected_revision: None,
            allow_missing: false,
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound, "{again:?}");
    let allowed = c
        .delete_conversation(pb::DeleteConversationRequest {
            id: id.clone(),
            expected_revision: None,
            allow_missing: true,
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!allowed.deleted);
    assert_eq!(allowed.events_deleted, 0);

    // A new conversation with the same id starts with an empty log.
    let mut reborn = conversation(bound("alpha"), "reborn");
    reborn.id = id.clone();
    let reborn = create_conversation(&mut c, reborn).await;
    assert_eq!(reborn.event_count, 0);
    assert!(all_events(&mut c, &id).await.is_empty());
}
