//! ProfileService rpcs as bound conversations see them: UpdateProfile reaches them, RenameProfile
//! carries them along, DeleteProfile is refused while they are bound unless forced.
use profile_registry::pb;
use tonic::Code;

use super::{app_with_profiles, resolved};
use crate::helpers::{
    bound, bound_profile, conversation, conversation_ids, create, create_conversation,
    get_conversation, profile,
};

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
            purge: false,
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
            resolve_connection: false,
            revision: None,
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
            purge: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(forced.deleted);
    let err = p
        .get_profile(pb::GetProfileRequest {
            name: "alpha".into(),
            reveal_secrets: false,
            resolve_connection: false,
            revision: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // The conversation still reads; its binding resolves to nothing.
    let got = get_conversation(&mut c, &id, true, false).await;
    assert_eq!(bound_profile(&got.llms["agent"]), Some("alpha"));
    assert!(got.llms["agent"].resolved.is_none());
}
