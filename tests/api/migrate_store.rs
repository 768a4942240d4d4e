//! `profile-registry migrate-store`: sled data dir to PostgreSQL and back moves every record, revisions,
//! timestamps, bindings, events and (still sealed) secrets included; a non-empty target is refused.
use std::process::Command;
use std::time::Duration;

use profile_registry::pb;
use profile_registry::pb::agent_profile_service_client::AgentProfileServiceClient;
use profile_registry::pb::conversation_service_client::ConversationServiceClient;
use profile_registry::pb::meta_profile_service_client::MetaProfileServiceClient;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use profile_registry::pb::provider_connection_service_client::ProviderConnectionServiceClient;

use crate::helpers::{
    all_events, binary, bound, connect, conversation, conversation_ids, create,
    create_conversation, get_conversation, inline, message_event, postgres_admin,
    postgres_database, profile, skip_without, ChildServer,
};

/// Everything a client can read: profiles with revealed secrets and timestamps, conversations
/// resolved and revealed, and their events.
#[derive(Debug, PartialEq)]
struct State {
    /// Each profile's kept revisions, newest first, secrets revealed.
    profiles: Vec<Vec<pb::Profile>>,
    conversations: Vec<(pb::Conversation, Vec<pb::Event>)>,
    /// Provider connections (keys revealed), meta-profiles and agent profiles, as files.
    documents: (String, Vec<pb::ProfileDocument>, Vec<pb::ProfileDocument>),
}

async fn state(server: &ChildServer) -> State {
    let channel = connect(server.addr).await;
    let mut p = ProfileServiceClient::new(channel.clone());
    let mut c = ConversationServiceClient::new(channel);
    let mut profiles = Vec::new();
    for (name, ..) in crate::helpers::full_listing(&mut p).await {
        let kept = p
            .list_profile_revisions(pb::ListProfileRevisionsRequest {
                name: name.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .revisions;
        let mut revisions = Vec::new();
        for r in kept {
            let req = pb::GetProfileRequest {
                name: name.clone(),
                reveal_secrets: true,
                resolve_connection: false,
                revision: Some(r.revision),
            };
            revisions.push(p.get_profile(req).await.unwrap().into_inner());
        }
        profiles.push(revisions);
    }
    let mut conversations = Vec::new();
    for id in conversation_ids(&mut c, pb::ExecutionStatus::Unspecified, "").await {
        let conv = get_conversation(&mut c, &id, true, true).await;
        conversations.push((conv, all_events(&mut c, &id).await));
    }
    let channel = connect(server.addr).await;
    let connections = ProviderConnectionServiceClient::new(channel.clone())
        .export_provider_connections(pb::ExportProviderConnectionsRequest {
            secrets: pb::export_profiles_request::Secrets::Plaintext as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .json;
    let metas = MetaProfileServiceClient::new(channel.clone())
        .export_meta_profiles(pb::ExportDocumentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .documents;
    let agents = AgentProfileServiceClient::new(channel)
        .export_agent_profiles(pb::ExportDocumentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .documents;
    State {
        profiles,
        conversations,
        documents: (connections, metas, agents),
    }
}

fn migrate(from: &str, to: &str, key: &str) -> std::process::Output {
    Command::new(binary())
        .args([
            "migrate-store",
            "--from",
            from,
            "--to",
            to,
            "--secret-key-file",
            key,
        ])
        .output()
        .unwrap()
}

fn stop(mut server: ChildServer) {
    server.signal("TERM");
    let (code, _) = server.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_to_postgres_and_back_keeps_every_record_and_revision() {
    let admin = postgres_admin();
    if skip_without("PostgreSQL (REGISTRY_TEST_POSTGRES)", admin.is_some()) {
        return;
    }
    let url = postgres_database(
        &admin.unwrap(),
        &format!("migrate_{}", uuid::Uuid::new_v4().simple()),
    );
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("keys");
    std::fs::write(&key, "m1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").unwrap();
    let key = key.display().to_string();
    let (sled_a, sled_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (a, b) = (sled_a.display().to_string(), sled_b.display().to_string());

    // Arrange: a sled store with profiles at several revisions (one renamed, one deleted), a bound
    // conversation with events, an inline one with a secret. `--store DIR` keeps it on sled in
    // either pass of the suite.
    let server = ChildServer::start(&sled_a, &["--store", &a, "--secret-key-file", &key]);
    let channel = connect(server.addr).await;
    let mut p = ProfileServiceClient::new(channel.clone());
    let mut c = ConversationServiceClient::new(channel);
    create(&mut p, profile("main", "gpt-4o", Some("sk-migrate-main"))).await;
    for model in ["gpt-4.1", "gpt-5"] {
        p.update_profile(pb::UpdateProfileRequest {
            profile: Some(profile("main", model, None)),
            allow_missing: false,
            expected_revision: None,
        })
        .await
        .unwrap();
    }
    create(
        &mut p,
        profile("old-name", "claude", Some("sk-migrate-renamed")),
    )
    .await;
    create(&mut p, profile("gone", "m", None)).await;
    let bound_conv = create_conversation(&mut c, conversation(bound("old-name"), "bound")).await;
    p.rename_profile(pb::RenameProfileRequest {
        name: "old-name".into(),
        new_name: "new-name".into(),
    })
    .await
    .unwrap();
    p.delete_profile(pb::DeleteProfileRequest {
        name: "gone".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.append_events(pb::AppendEventsRequest {
        conversation_id: bound_conv.id.clone(),
        events: (0..25)
            .map(|i| message_event(&format!("ev{i}"), "user", "hello"))
            .collect(),
        expected_next_seq: Some(0),
    })
    .await
    .unwrap();
    create_conversation(
        &mut c,
        conversation(inline("gpt-4o-mini", Some("sk-migrate-inline")), "inline"),
    )
    .await;
    ProviderConnectionServiceClient::new(connect(server.addr).await)
        .create_provider_connection(pb::CreateProviderConnectionRequest {
            connection: Some(pb::ProviderConnection {
                id: "shared".into(),
                display_name: "Shared".into(),
                api_key: Some("sk-migrate-connection".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    MetaProfileServiceClient::new(connect(server.addr).await)
        .create_meta_profile(pb::CreateMetaProfileRequest {
            meta_profile: Some(pb::MetaProfile {
                name: "router".into(),
                classifier_model: "main".into(),
                prompt_template: Some("{{ instance_text }}".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    AgentProfileServiceClient::new(connect(server.addr).await)
        .create_agent_profile(pb::CreateAgentProfileRequest {
            agent_profile: Some(pb::AgentProfile {
                name: "coder".into(),
                llm_profile_ref: Some("new-name".into()),
                meta_profile_ref: Some("router".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let before = state(&server).await;
    assert!(before.documents.0.contains("sk-migrate-connection"));
    assert_eq!((before.documents.1.len(), before.documents.2.len()), (1, 1));
    assert_eq!(before.profiles.len(), 2);
    assert_eq!(before.conversations.len(), 2);
    stop(server);

    // Act 1: sled -> PostgreSQL.
    let out = migrate(&a, &url, &key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("2 profiles, 2 conversations, 1 bindings and 25 events"),
        "{said}"
    );
    assert!(
        !said.contains("postgres://"),
        "the URL (and its password) is not printed: {said}"
    );

    // Assert: the PostgreSQL server serves exactly the same state, and continues the revisions.
    let server = ChildServer::start(
        &tmp.path().join("pg"),
        &["--store", &url, "--secret-key-file", &key],
    );
    assert_eq!(state(&server).await, before);
    let mut p = ProfileServiceClient::new(connect(server.addr).await);
    let next = p
        .update_profile(pb::UpdateProfileRequest {
            profile: Some(profile("main", "gpt-5.1", None)),
            allow_missing: false,
            expected_revision: Some(3),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.revision, 4);
    let after_update = state(&server).await;
    stop(server);

    // A target that holds records is refused, and left as it was.
    let again = migrate(&a, &url, &key);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("empty"), "{err}");

    // Act 2: PostgreSQL -> a new sled data dir.
    let out = migrate(&url, &b, &key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = ChildServer::start(&sled_b, &["--store", &b, "--secret-key-file", &key]);
    assert_eq!(state(&server).await, after_update);
    stop(server);
}
