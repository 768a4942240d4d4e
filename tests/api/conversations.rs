//! Every ConversationService rpc and its errors, over a real server, with the profiles they bind.
use std::collections::HashSet;
use std::time::Duration;

use profile_registry::pb;
use profile_registry::pb::conversation_service_client::ConversationServiceClient;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{
    all_events, bound, bound_profile, conversation, conversation_ids, create, create_conversation,
    get_conversation, inline, message_event, profile, sv, TestApp,
};

const MASK: &str = "**********";
const HEX_ID: &str = "0b5c6f5e1c2d4e8f9a0b1c2d3e4f5a6b";
const DASHED_ID: &str = "0b5c6f5e-1c2d-4e8f-9a0b-1c2d3e4f5a6b";
const MISSING_ID: &str = "ffffffff-ffff-4fff-bfff-ffffffffffff";

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

fn switch_to_profile(id: &str, usage: &str, name: &str) -> pb::SwitchLlmRequest {
    pb::SwitchLlmRequest {
        id: id.into(),
        usage_id: usage.into(),
        target: Some(pb::switch_llm_request::Target::Profile(name.into())),
        expected_revision: None,
    }
}

/// Asserts an INVALID_ARGUMENT that names `field` in its message and in its BadRequest details.
fn assert_names_field(err: &tonic::Status, field: &str) {
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains(field),
        "message {:?} should name {field}",
        err.message()
    );
    let details = err.get_error_details();
    let bad = details.bad_request().expect("BadRequest details");
    assert!(
        bad.field_violations.iter().any(|v| v.field == field),
        "{:?}",
        bad.field_violations
    );
}

fn resolved(c: &pb::Conversation, usage: &str) -> pb::LlmConfig {
    c.llms[usage]
        .resolved
        .clone()
        .unwrap_or_else(|| panic!("llms[{usage}] has no resolved LLM: {:?}", c.llms[usage]))
}

/// A server with the profiles "alpha" (gpt-4o, sk-alpha) and "beta" (claude, sk-beta).
async fn app_with_profiles() -> (TestApp, ConversationServiceClient<Channel>) {
    let app = TestApp::spawn().await;
    let mut p = app.profiles().await;
    create(&mut p, profile("alpha", "gpt-4o", Some("sk-alpha"))).await;
    create(&mut p, profile("beta", "anthropic/claude", Some("sk-beta"))).await;
    let c = app.conversations().await;
    (app, c)
}

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

#[tokio::test]
async fn get_resolves_bindings_and_reveals_only_when_asked() {
    let (_app, mut c) = app_with_profiles().await;
    let mut conv = conversation(bound("alpha"), "resolve");
    conv.llms
        .insert("condenser".into(), inline("gpt-4o-mini", Some("sk-inline")));
    let id = create_conversation(&mut c, conv).await.id;

    let plain = get_conversation(&mut c, &id, false, false).await;
    assert!(plain.llms.values().all(|b| b.resolved.is_none()));
    assert_eq!(bound_profile(&plain.llms["agent"]), Some("alpha"));
    let Some(pb::llm_binding::Source::Inline(l)) = &plain.llms["condenser"].source else {
        panic!("condenser should be inline: {:?}", plain.llms["condenser"]);
    };
    assert_eq!(l.api_key.as_deref(), Some(MASK));

    let masked = get_conversation(&mut c, &id, true, false).await;
    let agent = resolved(&masked, "agent");
    assert_eq!(agent.model, "gpt-4o");
    assert_eq!(agent.api_key.as_deref(), Some(MASK));
    let condenser = resolved(&masked, "condenser");
    assert_eq!(condenser.model, "gpt-4o-mini");
    assert_eq!(condenser.api_key.as_deref(), Some(MASK));

    let revealed = get_conversation(&mut c, &id, true, true).await;
    assert_eq!(
        resolved(&revealed, "agent").api_key.as_deref(),
        Some("sk-alpha")
    );
    assert_eq!(
        resolved(&revealed, "condenser").api_key.as_deref(),
        Some("sk-inline")
    );
    let Some(pb::llm_binding::Source::Inline(l)) = &revealed.llms["condenser"].source else {
        panic!("condenser should be inline");
    };
    assert_eq!(l.api_key.as_deref(), Some("sk-inline"));

    let err = c
        .get_conversation(pb::GetConversationRequest {
            id: MISSING_ID.into(),
            resolve_llms: true,
            reveal_secrets: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(MISSING_ID), "{}", err.message());
}

#[tokio::test]
async fn list_pages_by_id_and_filters_by_status_and_profile() {
    let (_app, mut c) = app_with_profiles().await;
    let statuses = [
        pb::ExecutionStatus::Idle,
        pb::ExecutionStatus::Paused,
        pb::ExecutionStatus::Finished,
    ];
    let mut all = Vec::new();
    let mut paused_alpha = Vec::new();
    let mut beta = Vec::new();
    for i in 0..25 {
        let name = if i % 2 == 0 { "alpha" } else { "beta" };
        let mut conv = conversation(bound(name), &format!("c{i}"));
        let status = statuses[i % 3];
        conv.execution_status = status as i32;
        let id = create_conversation(&mut c, conv).await.id;
        if name == "alpha" && status == pb::ExecutionStatus::Paused {
            paused_alpha.push(id.clone());
        }
        if name == "beta" {
            beta.push(id.clone());
        }
        all.push((id, status));
    }
    all.sort();
    beta.sort();

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list_conversations(pb::ListConversationsRequest {
                page_size: 10,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.conversations.len() <= 10);
        seen.extend(page.conversations.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let ids: Vec<String> = all.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(seen, ids, "every conversation once, in id order");

    let paused: Vec<String> = all
        .iter()
        .filter(|(_, s)| *s == pb::ExecutionStatus::Paused)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(
        conversation_ids(&mut c, pb::ExecutionStatus::Paused, "").await,
        paused
    );
    assert_eq!(
        conversation_ids(&mut c, pb::ExecutionStatus::Running, "").await,
        Vec::<String>::new()
    );

    // The profile filter, a page of 3 at a time.
    let mut by_profile = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_conversations(pb::ListConversationsRequest {
                page_size: 3,
                page_token: token.clone(),
                profile: "beta".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.conversations.len() <= 3);
        assert!(page
            .conversations
            .iter()
            .all(|c| bound_profile(&c.llms["agent"]) == Some("beta")));
        by_profile.extend(page.conversations.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(by_profile, beta);

    let mut both = conversation_ids(&mut c, pb::ExecutionStatus::Paused, "alpha").await;
    both.sort();
    paused_alpha.sort();
    assert_eq!(both, paused_alpha);

    let err = c
        .list_conversations(pb::ListConversationsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

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
async fn a_profile_update_reaches_every_bound_conversation() {
    let (app, mut c) = app_with_profiles().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut conv = conversation(bound("alpha"), &format!("c{i}"));
        conv.llms.insert("condenser".into(), bound("alpha"));
        ids.push(create_conversation(&mut c, conv).await.id);
    }
    let mut p = app.profiles().await;
    p.update_profile(pb::UpdateProfileRequest {
        profile: Some(profile("alpha", "gpt-5", Some("sk-alpha-2"))),
        allow_missing: false,
        expected_revision: Some(1),
    })
    .await
    .unwrap();

    for id in &ids {
        let got = get_conversation(&mut c, id, true, true).await;
        for usage in ["agent", "condenser"] {
            let llm = resolved(&got, usage);
            assert_eq!(llm.model, "gpt-5", "{id} {usage}");
            assert_eq!(llm.api_key.as_deref(), Some("sk-alpha-2"), "{id} {usage}");
        }
        assert_eq!(got.revision, 1, "the conversation itself did not change");
    }
}

#[tokio::test]
async fn rename_profile_carries_its_bound_conversations_along() {
    let (app, mut c) = app_with_profiles().await;
    let mut conv = conversation(bound("alpha"), "renamed");
    conv.llms.insert("condenser".into(), bound("alpha"));
    conv.llms.insert("critic".into(), bound("beta"));
    let created = create_conversation(&mut c, conv).await;
    let mut p = app.profiles().await;

    let renamed = p
        .rename_profile(pb::RenameProfileRequest {
            name: "alpha".into(),
            new_name: "gamma".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.name, "gamma");

    let got = get_conversation(&mut c, &created.id, true, true).await;
    assert_eq!(bound_profile(&got.llms["agent"]), Some("gamma"));
    assert_eq!(bound_profile(&got.llms["condenser"]), Some("gamma"));
    assert_eq!(bound_profile(&got.llms["critic"]), Some("beta"));
    assert!(got.revision > created.revision);
    for usage in ["agent", "condenser"] {
        let llm = resolved(&got, usage);
        assert_eq!(llm.model, "gpt-4o", "{usage}");
        assert_eq!(llm.api_key.as_deref(), Some("sk-alpha"), "{usage}");
    }
    assert_eq!(
        conversation_ids(&mut c, pb::ExecutionStatus::Unspecified, "gamma").await,
        vec![created.id.clone()]
    );
    assert!(
        conversation_ids(&mut c, pb::ExecutionStatus::Unspecified, "alpha")
            .await
            .is_empty(),
        "the old name no longer lists it"
    );
    assert_eq!(
        conversation_ids(&mut c, pb::ExecutionStatus::Unspecified, "beta").await,
        vec![created.id.clone()]
    );

    // A new profile under the old name is not picked up by the renamed conversation.
    create(&mut p, profile("alpha", "other-model", Some("sk-other"))).await;
    let again = get_conversation(&mut c, &created.id, true, false).await;
    assert_eq!(resolved(&again, "agent").model, "gpt-4o");
}

#[tokio::test]
async fn delete_profile_is_refused_while_bound_unless_forced() {
    let (app, mut c) = app_with_profiles().await;
    let id = create_conversation(&mut c, conversation(bound("alpha"), "holder"))
        .await
        .id;
    let mut p = app.profiles().await;

    let err = p
        .delete_profile(pb::DeleteProfileRequest {
            name: "alpha".into(),
            expected_revision: None,
            allow_missing: false,
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&id),
        "the message names the conversation: {}",
        err.message()
    );
    let still = p
        .get_profile(pb::GetProfileRequest {
            name: "alpha".into(),
            reveal_secrets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.revision, 1);

    let forced = p
        .delete_profile(pb::DeleteProfileRequest {
            name: "alpha".into(),
            expected_revision: None,
            allow_missing: false,
            force: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(forced.deleted);
    let err = p
        .get_profile(pb::GetProfileRequest {
            name: "alpha".into(),
            reveal_secrets: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // The conversation still reads; its binding resolves to nothing.
    let got = get_conversation(&mut c, &id, true, false).await;
    assert_eq!(bound_profile(&got.llms["agent"]), Some("alpha"));
    assert!(got.llms["agent"].resolved.is_none());
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
