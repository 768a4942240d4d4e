//! CreateConversation: generated, 32-hex and duplicate ids, missing profiles, and the
//! invalid tags, state keys and ids it refuses, naming the field.
use profile_registry::pb;
use tonic::Code;

use super::{app_with_profiles, assert_names_field, DASHED_ID, HEX_ID};
use crate::helpers::{
    bound, bound_profile, conversation, conversation_ids, create_conversation, get_conversation, sv,
};

#[tokio::test]
async fn create_generates_ids_accepts_hex_and_refuses_duplicates_and_missing_profiles() {
    let (_app, mut c) = app_with_profiles().await;

    let generated = create_conversation(&mut c, conversation(bound("alpha"), "first")).await;
    assert_eq!(generated.id.len(), 36, "{}", generated.id);
    assert!(uuid::Uuid::try_parse(&generated.id).is_ok());
    assert_eq!(generated.revision, 1);
    assert_eq!(generated.event_count, 0);
    assert_eq!(generated.title, "first");
    assert_eq!(bound_profile(&generated.llms["agent"]), Some("alpha"));
    assert_eq!(
        generated.execution_status,
        pb::ExecutionStatus::Idle as i32,
        "UNSPECIFIED is stored as IDLE"
    );
    assert_eq!(generated.create_time, generated.update_time);

    let mut hex = conversation(bound("alpha"), "hex");
    hex.id = HEX_ID.into();
    let created = create_conversation(&mut c, hex).await;
    assert_eq!(created.id, DASHED_ID);
    let got = get_conversation(&mut c, HEX_ID, false, false).await;
    assert_eq!(
        got.id, DASHED_ID,
        "the 32-hex form reads the same conversation"
    );

    let mut dup = conversation(bound("beta"), "dup");
    dup.id = DASHED_ID.into();
    let err = c
        .create_conversation(pb::CreateConversationRequest {
            conversation: Some(dup),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert_eq!(
        get_conversation(&mut c, DASHED_ID, false, false)
            .await
            .title,
        "hex"
    );

    let err = c
        .create_conversation(pb::CreateConversationRequest {
            conversation: Some(conversation(bound("nope"), "dangling")),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("nope"), "{}", err.message());
    assert_eq!(
        conversation_ids(&mut c, pb::ExecutionStatus::Unspecified, "")
            .await
            .len(),
        2,
        "the refused create wrote nothing"
    );
}

#[tokio::test]
async fn create_refuses_bad_tags_and_typed_state_keys_naming_the_field() {
    let (_app, mut c) = app_with_profiles().await;

    let mut bad_tag = conversation(bound("alpha"), "t");
    bad_tag.tags = [("Bad-Key".to_owned(), "v".to_owned())].into();
    let err = c
        .create_conversation(pb::CreateConversationRequest {
            conversation: Some(bad_tag),
        })
        .await
        .unwrap_err();
    assert_names_field(&err, "conversation.tags");
    assert!(err.message().contains("Bad-Key"), "{}", err.message());

    let mut typed_state = conversation(bound("alpha"), "t");
    typed_state.state = Some(prost_types::Struct {
        fields: [("id".to_owned(), sv(HEX_ID))].into(),
    });
    let err = c
        .create_conversation(pb::CreateConversationRequest {
            conversation: Some(typed_state),
        })
        .await
        .unwrap_err();
    assert_names_field(&err, "conversation.state.id");

    let mut bad_id = conversation(bound("alpha"), "t");
    bad_id.id = "not-a-uuid".into();
    let err = c
        .create_conversation(pb::CreateConversationRequest {
            conversation: Some(bad_id),
        })
        .await
        .unwrap_err();
    assert_names_field(&err, "conversation.id");

    assert!(
        conversation_ids(&mut c, pb::ExecutionStatus::Unspecified, "")
            .await
            .is_empty(),
        "refused creates wrote nothing"
    );
}
