//! The services of the SDK's other kinds (issue 19) over a real server: provider connections
//! rotated once and seen by a bound profile and a bound conversation, references kept sound across
//! kinds (refused writes, refused and forced deletes, renames that re-point), and the files
//! imported and exported byte for byte.
use profile_registry::pb;
use profile_registry::pb::agent_profile_service_client::AgentProfileServiceClient;
use profile_registry::pb::meta_profile_service_client::MetaProfileServiceClient;
use profile_registry::pb::provider_connection_service_client::ProviderConnectionServiceClient;
use tonic::transport::Channel;
use tonic::Code;

use crate::helpers::{
    bound, cli_output, conversation, create, create_conversation, get_conversation, output_text,
    profile, sled_only, TestApp,
};

const MASK: &str = "**********";

fn connection(id: &str, key: Option<&str>, base_url: Option<&str>) -> pb::ProviderConnection {
    pb::ProviderConnection {
        id: id.into(),
        display_name: format!("Team {id}"),
        provider: "openai".into(),
        api_key: key.map(Into::into),
        base_url: base_url.map(Into::into),
        ..Default::default()
    }
}

/// A profile bound to connection `id` (its own key and endpoint are left out, as the SDK's save
/// leaves them out).
fn linked_profile(name: &str, id: &str) -> pb::Profile {
    let mut p = profile(name, "openai/gpt-4o", None);
    p.llm.as_mut().unwrap().extra = Some(prost_types::Struct {
        fields: [(
            "provider_connection_id".to_owned(),
            prost_types::Value::from(id.to_owned()),
        )]
        .into(),
    });
    p
}

async fn resolved(
    c: &mut profile_registry::pb::profile_service_client::ProfileServiceClient<Channel>,
    name: &str,
) -> pb::LlmConfig {
    c.get_profile(pb::GetProfileRequest {
        name: name.into(),
        reveal_secrets: true,
        resolve_connection: true,
        revision: None,
    })
    .await
    .unwrap()
    .into_inner()
    .llm
    .unwrap()
}

fn agent(name: &str, llm: &str, meta: Option<&str>) -> pb::AgentProfile {
    pb::AgentProfile {
        name: name.into(),
        llm_profile_ref: Some(llm.into()),
        meta_profile_ref: meta.map(Into::into),
        spec: Some(prost_types::Struct {
            fields: [(
                "persona".to_owned(),
                prost_types::Value::from("terse".to_owned()),
            )]
            .into(),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn one_key_rotation_reaches_a_bound_profile_and_a_bound_conversation() {
    let app = TestApp::spawn().await;
    let mut conns = ProviderConnectionServiceClient::new(app.channel().await);
    let mut profiles = app.profiles().await;
    let mut convs = app.conversations().await;

    let created = conns
        .create_provider_connection(pb::CreateProviderConnectionRequest {
            connection: Some(connection(
                "team",
                Some("sk-old"),
                Some("https://old.example"),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (created.api_key.as_deref(), created.revision),
        (Some(MASK), 1)
    );
    assert!(created.created_at > 0 && created.created_at == created.updated_at);

    create(&mut profiles, linked_profile("linked", "team")).await;
    let c = create_conversation(&mut convs, conversation(bound("linked"), "t")).await;
    let llm = resolved(&mut profiles, "linked").await;
    assert_eq!(llm.api_key.as_deref(), Some("sk-old"));
    assert_eq!(llm.base_url.as_deref(), Some("https://old.example"));

    // One update: the key rotates, the endpoint goes (the connection's base_url wins, even unset).
    let updated = conns
        .update_provider_connection(pb::UpdateProviderConnectionRequest {
            connection: Some(connection("team", Some("sk-new"), None)),
            expected_revision: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.revision, 2);
    let llm = resolved(&mut profiles, "linked").await;
    assert_eq!(
        (llm.api_key.as_deref(), llm.base_url.as_deref()),
        (Some("sk-new"), None)
    );
    let got = get_conversation(&mut convs, &c.id, true, true).await;
    let agent_llm = got.llms["agent"].resolved.as_ref().unwrap();
    assert_eq!(agent_llm.api_key.as_deref(), Some("sk-new"));
    // Masked unless revealed.
    let got = get_conversation(&mut convs, &c.id, true, false).await;
    assert_eq!(
        got.llms["agent"]
            .resolved
            .as_ref()
            .unwrap()
            .api_key
            .as_deref(),
        Some(MASK)
    );

    // Writing the mask keeps the key; a stale revision is ABORTED.
    let kept = conns
        .update_provider_connection(pb::UpdateProviderConnectionRequest {
            connection: Some(connection("team", Some(MASK), None)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.revision, 2, "the mask changes nothing");
    let stale = conns
        .update_provider_connection(pb::UpdateProviderConnectionRequest {
            connection: Some(connection("team", Some("sk-x"), None)),
            expected_revision: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    let revealed = conns
        .get_provider_connection(pb::GetProviderConnectionRequest {
            id: "team".into(),
            reveal_secrets: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revealed.api_key.as_deref(), Some("sk-new"));
}

#[tokio::test]
async fn references_across_kinds_stay_sound() {
    let app = TestApp::spawn().await;
    let channel = app.channel().await;
    let mut conns = ProviderConnectionServiceClient::new(channel.clone());
    let mut metas = MetaProfileServiceClient::new(channel.clone());
    let mut agents = AgentProfileServiceClient::new(channel);
    let mut profiles = app.profiles().await;

    // A write may not add a reference to a missing record, and leaves nothing behind.
    let err = profiles
        .create_profile(pb::CreateProfileRequest {
            profile: Some(linked_profile("p", "absent")),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("provider connection \"absent\""),
        "{}",
        err.message()
    );
    let err = agents
        .create_agent_profile(pb::CreateAgentProfileRequest {
            agent_profile: Some(agent("a", "absent", None)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("llm_profile_ref"),
        "{}",
        err.message()
    );

    conns
        .create_provider_connection(pb::CreateProviderConnectionRequest {
            connection: Some(connection("shared", Some("sk"), None)),
        })
        .await
        .unwrap();
    create(&mut profiles, linked_profile("fast", "shared")).await;
    create(&mut profiles, profile("big", "openai/gpt-5", Some("k"))).await;
    metas
        .create_meta_profile(pb::CreateMetaProfileRequest {
            meta_profile: Some(pb::MetaProfile {
                name: "router".into(),
                classifier_model: "fast".into(),
                classes: vec![pb::MetaProfileClass {
                    description: "hard tasks".into(),
                    model: "big".into(),
                }],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let a = agents
        .create_agent_profile(pb::CreateAgentProfileRequest {
            agent_profile: Some(agent("coder", "fast", Some("router"))),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.agent_kind, "openhands");
    assert_eq!(a.id.len(), 36, "a UUID is generated: {}", a.id);

    // Deletes of referenced records are refused, naming the referrers.
    let err = conns
        .delete_provider_connection(pb::DeleteProviderConnectionRequest {
            id: "shared".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("profile \"fast\""),
        "{}",
        err.message()
    );
    let err = profiles
        .delete_profile(pb::DeleteProfileRequest {
            name: "big".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("meta-profile \"router\""),
        "{}",
        err.message()
    );
    let err = metas
        .delete_meta_profile(pb::DeleteMetaProfileRequest {
            name: "router".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("agent profile \"coder\""),
        "{}",
        err.message()
    );

    // A rename re-points every reference in the same transaction.
    profiles
        .rename_profile(pb::RenameProfileRequest {
            name: "fast".into(),
            new_name: "quick".into(),
        })
        .await
        .unwrap();
    metas
        .rename_meta_profile(pb::RenameMetaProfileRequest {
            name: "router".into(),
            new_name: "switch".into(),
        })
        .await
        .unwrap();
    let a = agents
        .get_agent_profile(pb::GetAgentProfileRequest {
            name: "coder".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.llm_profile_ref.as_deref(), Some("quick"));
    assert_eq!(a.meta_profile_ref.as_deref(), Some("switch"));
    let m = metas
        .get_meta_profile(pb::GetMetaProfileRequest {
            name: "switch".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.classifier_model, "quick");

    // Forced, the delete goes through; the reference dangles, as the SDK allows.
    let done = conns
        .delete_provider_connection(pb::DeleteProviderConnectionRequest {
            id: "shared".into(),
            force: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(done.deleted && done.revision == 1);
    let err = profiles
        .get_profile(pb::GetProfileRequest {
            name: "quick".into(),
            reveal_secrets: false,
            resolve_connection: true,
            revision: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

#[tokio::test]
async fn files_with_dangling_references_import_and_export_byte_for_byte() {
    let app = TestApp::spawn().await;
    let channel = app.channel().await;
    let mut conns = ProviderConnectionServiceClient::new(channel.clone());
    let mut metas = MetaProfileServiceClient::new(channel.clone());
    let mut agents = AgentProfileServiceClient::new(channel);

    let connections_file = "{\n  \"schema_version\": 1,\n  \"connections\": [\n    {\n      \"id\": \"c1\",\n      \"display_name\": \"Caf\\u00e9 \\ud83d\\ude00\",\n      \"provider\": \"custom\",\n      \"api_key\": \"sk-1\",\n      \"base_url\": null,\n      \"created_at\": 1700000000,\n      \"updated_at\": 1700000005\n    }\n  ]\n}";
    let r = conns
        .import_provider_connections(pb::ImportProviderConnectionsRequest {
            json: connections_file.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 1);
    assert_eq!(
        r.results[0].outcome,
        pb::import_result::Outcome::Created as i32
    );
    let out = conns
        .export_provider_connections(pb::ExportProviderConnectionsRequest {
            secrets: pb::export_profiles_request::Secrets::Plaintext as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.json, connections_file);
    let redacted = conns
        .export_provider_connections(pb::ExportProviderConnectionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(redacted.json, connections_file.replace("sk-1", MASK));

    // The auto-created "default" agent profile of a real home can name a missing LLM profile.
    let agent_file = "{\n  \"schema_version\": 4,\n  \"agent_kind\": \"openhands\",\n  \"id\": \"0b0f3c1e-8a9e-4c55-9f0b-0d6f3e0a1b2c\",\n  \"name\": \"default\",\n  \"revision\": 3,\n  \"mcp_server_refs\": null,\n  \"secret_refs\": [],\n  \"llm_profile_ref\": \"missing\",\n  \"tools\": null,\n  \"acp_extra\": 1800.0\n}";
    let meta_file = "{\n  \"classifier_model\": \"nowhere\",\n  \"classes\": [],\n  \"prompt_template\": \"{{ instance_text }} \\u00e9\",\n  \"model_table\": null\n}";
    for (kind, name, text) in [("agent", "default", agent_file), ("meta", "m", meta_file)] {
        let req = pb::ImportDocumentsRequest {
            documents: vec![pb::ProfileDocument {
                name: format!("{name}.json"),
                json: text.into(),
            }],
            ..Default::default()
        };
        let r = match kind {
            "agent" => agents.import_agent_profiles(req).await,
            _ => metas.import_meta_profiles(req).await,
        }
        .unwrap()
        .into_inner();
        assert_eq!(
            r.results[0].outcome,
            pb::import_result::Outcome::Created as i32,
            "{r:?}"
        );
        let req = pb::ExportDocumentsRequest::default();
        let out = match kind {
            "agent" => agents.export_agent_profiles(req).await,
            _ => metas.export_meta_profiles(req).await,
        }
        .unwrap()
        .into_inner();
        assert_eq!(out.documents.len(), 1);
        assert_eq!(out.documents[0].name, name);
        assert_eq!(out.documents[0].json, text);
    }
    let bad = agents
        .import_agent_profiles(pb::ImportDocumentsRequest {
            documents: vec![pb::ProfileDocument {
                name: "x.json".into(),
                json: "{\"schema_version\": 9}".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        bad.results[0].outcome,
        pb::import_result::Outcome::Invalid as i32
    );
    assert!(bad.results[0].reason.contains("schema_version"), "{bad:?}");

    // What was kept dangling, check names as notes (sled: check reads a stopped data dir).
    if sled_only("check reads a sled data dir") {
        return;
    }
    let dir = app.stop().await;
    let data = dir.path().join("data");
    let o = cli_output(["check", "--data-dir", data.to_str().unwrap()], &[]);
    let text = output_text(&o);
    assert!(o.status.success(), "notes are not problems: {text}");
    assert!(text.contains("documents/agent_profile/default"), "{text}");
    assert!(
        text.contains("llm_profile_ref names profile \"missing\""),
        "{text}"
    );
    assert!(
        text.contains("classifier_model names profile \"nowhere\""),
        "{text}"
    );
}

#[tokio::test]
async fn a_redacted_export_imported_back_keeps_every_key_and_odd_values_stay_readable() {
    let app = TestApp::spawn().await;
    let channel = app.channel().await;
    let mut conns = ProviderConnectionServiceClient::new(channel.clone());
    // A key that looks like a Fernet token would be taken for one by the SDK: refused, by name.
    let token_like = format!("gAAAAA{}", "x".repeat(80));
    let err = conns
        .create_provider_connection(pb::CreateProviderConnectionRequest {
            connection: Some(connection("tokenish", Some(&token_like), None)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("connection.api_key"),
        "{}",
        err.message()
    );
    assert!(!err.message().contains(&token_like), "no key in a message");
    for (id, key) in [("plain", "sk-1"), ("other", "sk-2")] {
        conns
            .create_provider_connection(pb::CreateProviderConnectionRequest {
                connection: Some(connection(id, Some(key), None)),
            })
            .await
            .unwrap();
    }
    let redacted = conns
        .export_provider_connections(pb::ExportProviderConnectionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(redacted.count, 2);
    assert!(!redacted.json.contains("sk-1") && !redacted.json.contains("sk-2"));
    let r = conns
        .import_provider_connections(pb::ImportProviderConnectionsRequest {
            json: redacted.json,
            on_conflict: pb::import_profiles_request::OnConflict::Overwrite as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let outcomes: Vec<i32> = r.results.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [pb::import_result::Outcome::Unchanged as i32; 2],
        "{r:?}"
    );
    for (id, key) in [("plain", "sk-1"), ("other", "sk-2")] {
        let got = conns
            .get_provider_connection(pb::GetProviderConnectionRequest {
                id: id.into(),
                reveal_secrets: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.api_key.as_deref(), Some(key), "{id}");
    }
    let listed = conns
        .list_provider_connections(pb::ListProviderConnectionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.connections.len(), 2);

    // API writes refuse what the SDK's own API or models refuse, naming the field.
    let mut metas = MetaProfileServiceClient::new(channel.clone());
    let err = metas
        .create_meta_profile(pb::CreateMetaProfileRequest {
            meta_profile: Some(pb::MetaProfile {
                name: "neither".into(),
                classifier_model: "x".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("meta_profile.classes"),
        "{}",
        err.message()
    );
    let mut agents = AgentProfileServiceClient::new(channel);
    let mut profiles = app.profiles().await;
    create(&mut profiles, profile("llm", "openai/gpt-4o", None)).await;
    let mut odd = agent("odd.json", "llm", None);
    odd.spec = Some(prost_types::Struct {
        fields: [("no_such_field".to_owned(), prost_types::Value::from(1.0))].into(),
    });
    let err = agents
        .create_agent_profile(pb::CreateAgentProfileRequest {
            agent_profile: Some(odd),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    for field in ["agent_profile.name", "agent_profile.spec.no_such_field"] {
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }

    // The SDK's own revision counts up on every changed save; an unchanged one changes nothing.
    let a = agents
        .create_agent_profile(pb::CreateAgentProfileRequest {
            agent_profile: Some(agent("a", "llm", None)),
        })
        .await
        .unwrap()
        .into_inner();
    let own = |a: &pb::AgentProfile| a.spec.as_ref().unwrap().fields["revision"].clone();
    assert_eq!(own(&a), prost_types::Value::from(0.0));
    let update = |persona: &str| pb::UpdateAgentProfileRequest {
        agent_profile: Some(pb::AgentProfile {
            spec: Some(prost_types::Struct {
                fields: [(
                    "persona".to_owned(),
                    prost_types::Value::from(persona.to_owned()),
                )]
                .into(),
            }),
            ..agent("a", "llm", None)
        }),
        ..Default::default()
    };
    let same = agents
        .update_agent_profile(update("terse"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (same.revision, own(&same)),
        (1, prost_types::Value::from(0.0))
    );
    let changed = agents
        .update_agent_profile(update("chatty"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (changed.revision, own(&changed)),
        (2, prost_types::Value::from(1.0))
    );
    assert_eq!(changed.id, a.id, "the SDK's id stays");
}

/// A hostile string: quotes, backslashes, controls (NUL too), unicode beyond the BMP, the mask,
/// a Fernet look-alike, empty, blank, or longer than the SDK's limits.
fn hostile_text(rng: &mut impl rand::Rng) -> String {
    let parts = [
        "\"quoted\" \\ back\\slash",
        "tab\tnew\nline\r",
        "nul\0byte",
        "\u{1F600} emoji \u{e9}\u{2713}",
        "</script><b>",
        MASK,
        "gAAAAABfake-token-looking-value-that-is-long-enough-to-pass-for-one==",
        "",
        "   ",
        "\u{202e}rtl\u{feff}bom",
    ];
    let pick = rng.random_range(0..=parts.len() + 1);
    match pick {
        p if p < parts.len() => parts[p].to_owned(),
        p if p == parts.len() => "x".repeat(129),
        _ => "y".repeat(2049),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_documents_are_given_back_or_refused_with_the_store_unchanged() {
    use rand::SeedableRng;
    let seed: u64 = std::env::var("REGISTRY_HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("hostile documents seed {seed} (REGISTRY_HOSTILE_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let app = TestApp::spawn().await;
    let channel = app.channel().await;
    let mut conns = ProviderConnectionServiceClient::new(channel.clone());
    let mut agents = AgentProfileServiceClient::new(channel);
    let mut profiles = app.profiles().await;
    create(&mut profiles, profile("llm", "openai/gpt-4o", None)).await;
    let listing = |c: pb::ExportProviderConnectionsResponse| c.json;
    let (mut accepted, mut refused, mut kept) = (0, 0, 0);
    for case in 0..40 {
        let id = if case % 5 == 0 {
            hostile_text(&mut rng)
        } else {
            format!("c{case}")
        };
        let c = pb::ProviderConnection {
            id: id.clone(),
            display_name: hostile_text(&mut rng),
            provider: hostile_text(&mut rng),
            api_key: Some(hostile_text(&mut rng)),
            base_url: Some(hostile_text(&mut rng)),
            ..Default::default()
        };
        let before = listing(
            conns
                .export_provider_connections(pb::ExportProviderConnectionsRequest {
                    secrets: pb::export_profiles_request::Secrets::Plaintext as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner(),
        );
        let created = conns
            .create_provider_connection(pb::CreateProviderConnectionRequest {
                connection: Some(c.clone()),
            })
            .await;
        let after = conns
            .export_provider_connections(pb::ExportProviderConnectionsRequest {
                secrets: pb::export_profiles_request::Secrets::Plaintext as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        match created {
            Err(e) => {
                refused += 1;
                assert_eq!(
                    e.code(),
                    Code::InvalidArgument,
                    "case {case} (seed {seed}): {e:?}"
                );
                assert!(
                    e.message().contains("connection."),
                    "case {case}: {}",
                    e.message()
                );
                assert_eq!(
                    after.json, before,
                    "case {case}: refused, yet the store changed"
                );
            }
            Ok(_) => {
                accepted += 1;
                // Readable with its key, exactly as given (blank: no key; the mask: no key).
                let got = conns
                    .get_provider_connection(pb::GetProviderConnectionRequest {
                        id: id.clone(),
                        reveal_secrets: true,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let key = c
                    .api_key
                    .clone()
                    .filter(|k| !k.trim().is_empty() && k != MASK);
                assert_eq!(got.api_key, key, "case {case} (seed {seed})");
                assert_eq!(
                    (&got.display_name, &got.base_url),
                    (&c.display_name, &c.base_url)
                );
                // Its file imports back to the same values: nothing changes.
                let again = conns
                    .import_provider_connections(pb::ImportProviderConnectionsRequest {
                        json: after.json.clone(),
                        on_conflict: pb::import_profiles_request::OnConflict::Overwrite as i32,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(
                    again
                        .results
                        .iter()
                        .all(|r| r.outcome == pb::import_result::Outcome::Unchanged as i32),
                    "case {case} (seed {seed}): {again:?}"
                );
                // Every other one is deleted; the rest stay for Python to read.
                if case % 2 == 0 {
                    conns
                        .delete_provider_connection(pb::DeleteProviderConnectionRequest {
                            id: id.clone(),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                } else {
                    kept += 1;
                }
            }
        }
        // An agent profile carrying the same hostile text: given back byte for byte as a file.
        let name = format!("agent-{case}");
        let persona = hostile_text(&mut rng);
        let mut a = agent(&name, "llm", None);
        a.spec = Some(prost_types::Struct {
            fields: [(
                "system_message_suffix".to_owned(),
                prost_types::Value::from(persona.clone()),
            )]
            .into(),
        });
        agents
            .create_agent_profile(pb::CreateAgentProfileRequest {
                agent_profile: Some(a),
            })
            .await
            .unwrap_or_else(|e| panic!("case {case} (seed {seed}): {e:?}"));
        let file = agents
            .export_agent_profiles(pb::ExportDocumentsRequest {
                names: vec![name.clone()],
            })
            .await
            .unwrap()
            .into_inner()
            .documents
            .remove(0);
        let back: serde_json::Value = serde_json::from_str(&file.json).unwrap();
        assert_eq!(
            back["system_message_suffix"],
            persona.as_str(),
            "case {case}"
        );
        let again = agents
            .import_agent_profiles(pb::ImportDocumentsRequest {
                documents: vec![file],
                on_conflict: pb::import_profiles_request::OnConflict::Overwrite as i32,
                dry_run: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            again.results[0].outcome,
            pb::import_result::Outcome::Unchanged as i32,
            "case {case}"
        );
        agents
            .delete_agent_profile(pb::DeleteAgentProfileRequest {
                name,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert!(
        accepted > 0 && refused > 0,
        "accepted {accepted}, refused {refused} (seed {seed})"
    );
    // Python's protobuf runtime reads every one kept.
    let text = crate::hostile::python_reads_everything(&app, 1, 0, 0).await;
    assert!(
        text.is_empty() || text.contains(&format!("events, {kept} documents")),
        "{text}"
    );
}
