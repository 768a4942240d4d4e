//! No secret value reaches the server's log, whatever the calls: reveals, plaintext and encrypted
//! exports, imports, refused requests, debug logging.
use std::time::Duration;

use profile_registry::openhands::secrets::FernetKey;
use profile_registry::pb;
use profile_registry::pb::conversation_service_client::ConversationServiceClient;
use profile_registry::pb::profile_service_client::ProfileServiceClient;

use crate::helpers::{connect, profile, secret_forms, ChildServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_of_a_busy_run_holds_no_secret() {
    let secrets = [
        "sk-LOG-PROFILE-0001",
        "sk-LOG-INLINE-0002",
        "sk-LOG-IMPORT-0003",
        "sk-LOG-REFUSED-0004",
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut server = ChildServer::start(&dir.path().join("data"), &["--log-level", "debug"]);
    let channel = connect(server.addr).await;
    let mut p = ProfileServiceClient::new(channel.clone());
    let mut c = ConversationServiceClient::new(channel);

    p.create_profile(pb::CreateProfileRequest {
        profile: Some(profile("logged", "gpt-4o", Some(secrets[0]))),
    })
    .await
    .unwrap();
    let inline = pb::LlmBinding {
        source: Some(pb::llm_binding::Source::Inline(pb::LlmConfig {
            model: "m".into(),
            api_key: Some(secrets[1].into()),
            ..Default::default()
        })),
        resolved: None,
    };
    let conv = c
        .create_conversation(pb::CreateConversationRequest {
            conversation: Some(pb::Conversation {
                llms: [("agent".to_owned(), inline)].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    p.get_profile(pb::GetProfileRequest {
        name: "logged".into(),
        reveal_secrets: true,
        resolve_connection: false,
        revision: None,
    })
    .await
    .unwrap();
    c.get_conversation(pb::GetConversationRequest {
        id: conv.id.clone(),
        resolve_llms: true,
        reveal_secrets: true,
    })
    .await
    .unwrap();
    use pb::export_profiles_request::Secrets;
    let key = FernetKey::from_secret_key("log-test-key");
    for (secrets_mode, fernet_key) in [
        (Secrets::Plaintext, String::new()),
        (Secrets::Encrypted, key.to_base64().to_owned()),
    ] {
        p.export_profiles(pb::ExportProfilesRequest {
            secrets: secrets_mode as i32,
            fernet_key: fernet_key.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        c.export_conversation(pb::ExportConversationRequest {
            id: conv.id.clone(),
            secrets: secrets_mode as i32,
            fernet_key,
            profile_refs: false,
        })
        .await
        .unwrap();
    }
    let doc = format!("{{\"model\": \"m\", \"api_key\": \"{}\"}}", secrets[2]);
    p.import_profiles(pb::ImportProfilesRequest {
        documents: vec![pb::ProfileDocument {
            name: "imported".into(),
            json: doc,
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    // Refused requests: a typed key repeated in extra, and a broken document holding a key.
    let mut bad = profile("bad", "m", None);
    bad.llm.as_mut().unwrap().extra = Some(prost_types::Struct {
        fields: [("api_key".to_owned(), secrets[3].into())].into(),
    });
    let refused = p
        .create_profile(pb::CreateProfileRequest { profile: Some(bad) })
        .await
        .unwrap_err();
    assert!(!refused.message().contains(secrets[3]), "{refused:?}");
    let broken = format!("{{\"model\": \"m\", \"api_key\": \"{}\"", secrets[3]);
    let r = p
        .import_profiles(pb::ImportProfilesRequest {
            documents: vec![pb::ProfileDocument {
                name: "broken".into(),
                json: broken,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !r.results[0].reason.contains(secrets[3]),
        "{:?}",
        r.results[0]
    );

    server.signal("TERM");
    let (code, _) = tokio::task::spawn_blocking(move || {
        let r = server.wait_exit(Duration::from_secs(15));
        (r, server)
    })
    .await
    .map(|(r, s)| {
        let log = s.log();
        for secret in secrets {
            for (form, needle) in secret_forms(secret) {
                let needle = String::from_utf8(needle).expect("every form is ASCII");
                assert!(
                    !log.contains(&needle),
                    "{secret} leaked into the log as {form}"
                );
            }
        }
        assert!(log.contains("secret access"), "the reveals are audited");
        r
    })
    .unwrap();
    assert_eq!(code, Some(0));
}
