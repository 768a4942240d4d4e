//! UpdateConversation and SwitchLlm: masks, revisions, switching profiles (refused while running,
//! kept across a restart), and inline secrets that stay masked while the mask keeps the stored key.
use profile_registry::pb;
use tonic::Code;

use super::{
    app_with_profiles, assert_names_field, mask, resolved, switch_to_profile, MASK, MISSING_ID,
};
use crate::helpers::{
    bound, bound_profile, conversation, conversation_ids, create_conversation, get_conversation,
    inline, TestApp,
};

#[tokio::test]
async fn update_changes_the_masked_fields_or_all_and_checks_the_revision() {
    let (_app, mut c) = app_with_profiles().await;
    let mut conv = conversation(bound("alpha"), "old title");
    conv.tags = [("team".to_owned(), "core".to_owned())].into();
    conv.state = Some(prost_types::Struct {
        fields: [("max_iterations".to_owned(), prost_types::Value::from(50.0))].into(),
    });
    let created = create_conversation(&mut c, conv).await;

    let mut other = conversation(bound("beta"), "new title");
    other.id = created.id.clone();
    other.execution_status = pb::ExecutionStatus::Paused as i32;
    other.tags = [("team".to_owned(), "infra".to_owned())].into();
    other.state = Some(prost_types::Struct {
        fields: [("max_iterations".to_owned(), prost_types::Value::from(10.0))].into(),
    });

    let titled = c
        .update_conversation(pb::UpdateConversationRequest {
            conversation: Some(other.clone()),
            update_mask: mask(&["title"]),
            expected_revision: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(titled.title, "new title");
    assert_eq!(titled.revision, 2);
    assert_eq!(bound_profile(&titled.llms["agent"]), Some("alpha"));
    assert_eq!(titled.execution_status, pb::ExecutionStatus::Idle as i32);
    assert_eq!(titled.tags, created.tags);
    assert_eq!(titled.state, created.state);
    assert_eq!(titled.create_time, created.create_time);

    let stale = c
        .update_conversation(pb::UpdateConversationRequest {
            conversation: Some(other.clone()),
            update_mask: None,
            expected_revision: Some(1),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    assert_eq!(
        get_conversation(&mut c, &created.id, false, false).await,
        titled
    );

    let unknown = c
        .update_conversation(pb::UpdateConversationRequest {
            conversation: Some(other.clone()),
            update_mask: mask(&["title", "owner"]),
            expected_revision: None,
        })
        .await
        .unwrap_err();
    assert_names_field(&unknown, "update_mask.paths");
    assert!(unknown.message().contains("owner"), "{}", unknown.message());
    assert_eq!(
        get_conversation(&mut c, &created.id, false, false).await,
        titled
    );

    let replaced = c
        .update_conversation(pb::UpdateConversationRequest {
            conversation: Some(other.clone()),
            update_mask: None,
            expected_revision: Some(2),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replaced.revision, 3);
    assert_eq!(bound_profile(&replaced.llms["agent"]), Some("beta"));
    assert_eq!(
        replaced.execution_status,
        pb::ExecutionStatus::Paused as i32
    );
    assert_eq!(replaced.title, "new title");
    assert_eq!(replaced.tags, other.tags);
    assert_eq!(replaced.state, other.state);
    assert_eq!(
        get_conversation(&mut c, &created.id, false, false).await,
        replaced
    );
    assert_eq!(
        conversation_ids(&mut c, pb::ExecutionStatus::Unspecified, "beta").await,
        vec![created.id.clone()],
        "the binding index follows an llms update"
    );
    assert!(
        conversation_ids(&mut c, pb::ExecutionStatus::Unspecified, "alpha")
            .await
            .is_empty()
    );

    let mut missing = other.clone();
    missing.id = MISSING_ID.into();
    let err = c
        .update_conversation(pb::UpdateConversationRequest {
            conversation: Some(missing),
            update_mask: mask(&["title"]),
            expected_revision: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

#[tokio::test]
async fn update_cannot_change_the_llms_of_a_running_conversation() {
    let (_app, mut c) = app_with_profiles().await;
    let mut conv = conversation(bound("alpha"), "running");
    conv.execution_status = pb::ExecutionStatus::Running as i32;
    let created = create_conversation(&mut c, conv).await;

    let mut changed = created.clone();
    changed.llms.insert("agent".into(), bound("beta"));
    let err = c
        .update_conversation(pb::UpdateConversationRequest {
            conversation: Some(changed),
            update_mask: mask(&["llms"]),
            expected_revision: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let unchanged = get_conversation(&mut c, &created.id, false, false).await;
    assert_eq!(unchanged, created);

    // Pausing in the same update is allowed: the agent is no longer running on it.
    let mut paused = created.clone();
    paused.llms.insert("agent".into(), bound("beta"));
    paused.execution_status = pb::ExecutionStatus::Paused as i32;
    let updated = c
        .update_conversation(pb::UpdateConversationRequest {
            conversation: Some(paused),
            update_mask: mask(&["llms", "execution_status"]),
            expected_revision: Some(created.revision),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bound_profile(&updated.llms["agent"]), Some("beta"));
}

#[tokio::test]
async fn switch_is_refused_while_running_and_applied_while_paused_across_a_restart() {
    let (app, mut c) = app_with_profiles().await;
    let mut conv = conversation(bound("alpha"), "switchy");
    conv.execution_status = pb::ExecutionStatus::Running as i32;
    let created = create_conversation(&mut c, conv).await;
    let id = created.id.clone();

    let err = c
        .switch_llm(switch_to_profile(&id, "", "beta"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let unchanged = get_conversation(&mut c, &id, false, false).await;
    assert_eq!(unchanged.revision, created.revision);
    assert_eq!(bound_profile(&unchanged.llms["agent"]), Some("alpha"));
    assert_eq!(unchanged, created);

    let paused = c
        .update_conversation(pb::UpdateConversationRequest {
            conversation: Some(pb::Conversation {
                id: id.clone(),
                execution_status: pb::ExecutionStatus::Paused as i32,
                ..Default::default()
            }),
            update_mask: mask(&["execution_status"]),
            expected_revision: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paused.revision, 2);

    let err = c
        .switch_llm(switch_to_profile(&id, "agent", "nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("nope"), "{}", err.message());

    let mut stale = switch_to_profile(&id, "agent", "beta");
    stale.expected_revision = Some(1);
    let err = c.switch_llm(stale).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert_eq!(get_conversation(&mut c, &id, false, false).await, paused);

    let mut req = switch_to_profile(&id, "", "beta");
    req.expected_revision = Some(2);
    let switched = c.switch_llm(req).await.unwrap().into_inner();
    assert_eq!(switched.revision, 3);
    assert_eq!(bound_profile(&switched.llms["agent"]), Some("beta"));
    assert_eq!(switched.llms.len(), 1, "usage \"\" is the agent's");

    let app = TestApp::spawn_in(app.stop().await).await;
    let mut c = app.conversations().await;
    let after = get_conversation(&mut c, &id, true, true).await;
    assert_eq!(after.revision, 3);
    assert_eq!(bound_profile(&after.llms["agent"]), Some("beta"));
    assert_eq!(after.execution_status, pb::ExecutionStatus::Paused as i32);
    assert_eq!(resolved(&after, "agent").model, "anthropic/claude");
    assert_eq!(
        resolved(&after, "agent").api_key.as_deref(),
        Some("sk-beta")
    );
    assert_eq!(
        conversation_ids(&mut c, pb::ExecutionStatus::Unspecified, "beta").await,
        vec![id.clone()]
    );
    assert!(
        conversation_ids(&mut c, pb::ExecutionStatus::Unspecified, "alpha")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn inline_secrets_are_masked_and_the_mask_keeps_the_stored_key() {
    let (_app, mut c) = app_with_profiles().await;
    let created = create_conversation(
        &mut c,
        conversation(inline("gpt-4o", Some("sk-inline-1")), "inline"),
    )
    .await;
    let inline_key = |conv: &pb::Conversation| match &conv.llms["agent"].source {
        Some(pb::llm_binding::Source::Inline(l)) => (l.model.clone(), l.api_key.clone()),
        other => panic!("agent should be inline: {other:?}"),
    };
    assert_eq!(inline_key(&created).1.as_deref(), Some(MASK));
    let listed = c
        .list_conversations(pb::ListConversationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        inline_key(&listed.conversations[0]).1.as_deref(),
        Some(MASK)
    );
    assert_eq!(
        inline_key(&get_conversation(&mut c, &created.id, false, false).await)
            .1
            .as_deref(),
        Some(MASK)
    );
    assert_eq!(
        inline_key(&get_conversation(&mut c, &created.id, false, true).await)
            .1
            .as_deref(),
        Some("sk-inline-1")
    );

    let switched = c
        .switch_llm(pb::SwitchLlmRequest {
            id: created.id.clone(),
            usage_id: "agent".into(),
            target: Some(pb::switch_llm_request::Target::Llm(pb::LlmConfig {
                model: "gpt-4.1".into(),
                api_key: Some(MASK.into()),
                ..Default::default()
            })),
            expected_revision: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(switched.revision, 2);
    assert_eq!(inline_key(&switched), ("gpt-4.1".into(), Some(MASK.into())));
    assert_eq!(
        inline_key(&get_conversation(&mut c, &created.id, false, true).await),
        ("gpt-4.1".into(), Some("sk-inline-1".into())),
        "the mask kept the stored inline key"
    );

    // An update that writes back what it read (masked) keeps the key as well.
    let mut read = get_conversation(&mut c, &created.id, false, false).await;
    read.title = "retitled".into();
    c.update_conversation(pb::UpdateConversationRequest {
        conversation: Some(read),
        update_mask: None,
        expected_revision: Some(2),
    })
    .await
    .unwrap();
    assert_eq!(
        inline_key(&get_conversation(&mut c, &created.id, false, true).await).1,
        Some("sk-inline-1".into())
    );

    c.switch_llm(pb::SwitchLlmRequest {
        id: created.id.clone(),
        usage_id: String::new(),
        target: Some(pb::switch_llm_request::Target::Llm(pb::LlmConfig {
            model: "gpt-4.1".into(),
            api_key: Some("sk-inline-2".into()),
            ..Default::default()
        })),
        expected_revision: None,
    })
    .await
    .unwrap();
    assert_eq!(
        inline_key(&get_conversation(&mut c, &created.id, false, true).await).1,
        Some("sk-inline-2".into())
    );
}
