//! GetConversation (resolving bindings, revealing secrets only when asked) and ListConversations
//! (pages in id order, the status and profile filters).
use profile_registry::pb;
use tonic::Code;

use super::{app_with_profiles, resolved, MASK, MISSING_ID};
use crate::helpers::{
    bound, bound_profile, conversation, conversation_ids, create_conversation, get_conversation,
    inline,
};

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
