//! Authentication and roles over a real server: a role x rpc table, open health, audit lines.
use std::process::Command;

use profile_registry::auth::token_hash_hex;
use profile_registry::pb;
use profile_registry::pb::admin_service_client::AdminServiceClient;
use profile_registry::pb::conversation_service_client::ConversationServiceClient;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::helpers::{
    binary, connect, output_text, profile, profiles_folder, run_cli, ChildServer, TestApp,
};

/// Adds `authorization: Bearer <token>` to every call (nothing when `None`).
#[derive(Clone)]
pub(crate) struct Bearer(Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Ok(req)
    }
}

pub(crate) type Profiles = ProfileServiceClient<InterceptedService<Channel, Bearer>>;
pub(crate) type Conversations = ConversationServiceClient<InterceptedService<Channel, Bearer>>;

const TOKENS: [(&str, &str, &str); 5] = [
    ("viewer", "reader", "tok-reader-0001"),
    ("editor", "writer", "tok-writer-0001"),
    ("auditor", "reader,secrets", "tok-secrets-0001"),
    ("root", "admin", "tok-admin-0001"),
    ("secrets-only", "secrets", "tok-secretsonly-0001"),
];

fn tokens_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("tokens");
    let lines: Vec<String> = TOKENS
        .iter()
        .map(|(name, roles, token)| format!("{name}:{roles}:sha256:{}", token_hash_hex(token)))
        .collect();
    std::fs::write(&path, format!("# test tokens\n{}\n", lines.join("\n"))).unwrap();
    path
}

pub(crate) async fn secured_app() -> TestApp {
    // The tokens file sits beside the data dir, in the TempDir the app owns and removes.
    let dir = tempfile::tempdir().unwrap();
    let path = tokens_file(dir.path());
    TestApp::spawn_in_with(dir, |a| a.auth_tokens_file = Some(path)).await
}

pub(crate) fn clients(channel: &Channel, token: Option<&str>) -> (Profiles, Conversations) {
    let b = Bearer(token.map(str::to_owned));
    (
        ProfileServiceClient::with_interceptor(channel.clone(), b.clone()),
        ConversationServiceClient::with_interceptor(channel.clone(), b),
    )
}

fn code<T>(r: Result<tonic::Response<T>, Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// One call of each kind; `n` makes names unique per row so writes do not collide.
async fn call(rpc: &str, p: &mut Profiles, c: &mut Conversations, n: usize) -> Code {
    use pb::export_profiles_request::Secrets;
    let name = format!("p{n}");
    match rpc {
        "GetProfile" => code(
            p.get_profile(pb::GetProfileRequest {
                name: "base".into(),
                reveal_secrets: false,
                resolve_connection: false,
                revision: None,
            })
            .await,
        ),
        "GetProfile+reveal" => code(
            p.get_profile(pb::GetProfileRequest {
                name: "base".into(),
                reveal_secrets: true,
                resolve_connection: false,
                revision: None,
            })
            .await,
        ),
        "ListProfiles" => code(p.list_profiles(pb::ListProfilesRequest::default()).await),
        "ValidateProfile" => code(
            p.validate_profile(pb::ValidateProfileRequest {
                profile: Some(profile("v", "m", None)),
            })
            .await,
        ),
        "WatchProfiles" => code(
            p.watch_profiles(pb::WatchProfilesRequest {
                send_initial: false,
                ..Default::default()
            })
            .await,
        ),
        "ExportProfiles" => code(
            p.export_profiles(pb::ExportProfilesRequest {
                secrets: Secrets::Redacted as i32,
                ..Default::default()
            })
            .await,
        ),
        "ExportProfiles+plaintext" => code(
            p.export_profiles(pb::ExportProfilesRequest {
                secrets: Secrets::Plaintext as i32,
                ..Default::default()
            })
            .await,
        ),
        "CreateProfile" => code(
            p.create_profile(pb::CreateProfileRequest {
                profile: Some(profile(&name, "m", Some("sk-x"))),
            })
            .await,
        ),
        "UpdateProfile" => code(
            p.update_profile(pb::UpdateProfileRequest {
                profile: Some(profile(&name, "m2", None)),
                allow_missing: true,
                expected_revision: None,
            })
            .await,
        ),
        "DeleteProfile" => code(
            p.delete_profile(pb::DeleteProfileRequest {
                name: name.clone(),
                expected_revision: None,
                allow_missing: true,
                force: false,
                purge: false,
            })
            .await,
        ),
        "RenameProfile" => code(
            p.rename_profile(pb::RenameProfileRequest {
                name: "nothing-here".into(),
                new_name: name,
            })
            .await,
        ),
        "ImportProfiles" => code(
            p.import_profiles(pb::ImportProfilesRequest {
                documents: vec![pb::ProfileDocument {
                    name,
                    json: "{\"model\": \"m\"}".into(),
                }],
                ..Default::default()
            })
            .await,
        ),
        "GetConversation" => code(
            c.get_conversation(pb::GetConversationRequest {
                id: CONV.into(),
                ..Default::default()
            })
            .await,
        ),
        "GetConversation+reveal" => code(
            c.get_conversation(pb::GetConversationRequest {
                id: CONV.into(),
                reveal_secrets: true,
                resolve_llms: true,
            })
            .await,
        ),
        "ListConversations" => code(
            c.list_conversations(pb::ListConversationsRequest::default())
                .await,
        ),
        "ListEvents" => code(
            c.list_events(pb::ListEventsRequest {
                conversation_id: CONV.into(),
                ..Default::default()
            })
            .await,
        ),
        "AppendEvents" => code(
            c.append_events(pb::AppendEventsRequest {
                conversation_id: CONV.into(),
                events: vec![pb::Event {
                    kind: "MessageEvent".into(),
                    ..Default::default()
                }],
                expected_next_seq: None,
            })
            .await,
        ),
        "SwitchLlm" => code(
            c.switch_llm(pb::SwitchLlmRequest {
                id: CONV.into(),
                usage_id: String::new(),
                target: Some(pb::switch_llm_request::Target::Profile("base".into())),
                expected_revision: None,
            })
            .await,
        ),
        other => panic!("no call for {other}"),
    }
}

const CONV: &str = "0b5c6f5e-1c2d-4e8f-9a0b-1c2d3e4f5a6b";

/// AdminService.Backup as `token`.
async fn backup(channel: &Channel, token: Option<&str>) -> Code {
    let mut admin =
        AdminServiceClient::with_interceptor(channel.clone(), Bearer(token.map(str::to_owned)));
    code(admin.backup(pb::BackupRequest {}).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_call_exactly_its_rpcs() {
    let app = secured_app().await;
    let channel = app.channel().await;
    let (mut admin_p, mut admin_c) = clients(&channel, Some("tok-admin-0001"));
    admin_p
        .create_profile(pb::CreateProfileRequest {
            profile: Some(profile("base", "m", Some("sk-base"))),
        })
        .await
        .unwrap();
    let binding = pb::LlmBinding {
        source: Some(pb::llm_binding::Source::Profile("base".into())),
        resolved: None,
    };
    admin_c
        .create_conversation(pb::CreateConversationRequest {
            conversation: Some(pb::Conversation {
                id: CONV.into(),
                llms: [("agent".to_owned(), binding)].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();

    use Code::{Ok as OK, PermissionDenied as DENIED, Unauthenticated as UNAUTH};
    // rpc, then the code for: no token, a wrong token, reader, writer, reader+secrets, admin, secrets alone.
    let table: [(&str, [Code; 7]); 20] = [
        ("GetProfile", [UNAUTH, UNAUTH, OK, OK, OK, OK, DENIED]),
        (
            "GetProfile+reveal",
            [UNAUTH, UNAUTH, DENIED, DENIED, OK, OK, DENIED],
        ),
        ("ListProfiles", [UNAUTH, UNAUTH, OK, OK, OK, OK, DENIED]),
        ("ValidateProfile", [UNAUTH, UNAUTH, OK, OK, OK, OK, DENIED]),
        ("WatchProfiles", [UNAUTH, UNAUTH, OK, OK, OK, OK, DENIED]),
        ("ExportProfiles", [UNAUTH, UNAUTH, OK, OK, OK, OK, DENIED]),
        (
            "ExportProfiles+plaintext",
            [UNAUTH, UNAUTH, DENIED, DENIED, OK, OK, DENIED],
        ),
        (
            "CreateProfile",
            [UNAUTH, UNAUTH, DENIED, OK, DENIED, OK, DENIED],
        ),
        (
            "UpdateProfile",
            [UNAUTH, UNAUTH, DENIED, OK, DENIED, OK, DENIED],
        ),
        (
            "DeleteProfile",
            [UNAUTH, UNAUTH, DENIED, OK, DENIED, OK, DENIED],
        ),
        (
            "RenameProfile",
            [
                UNAUTH,
                UNAUTH,
                DENIED,
                Code::NotFound,
                DENIED,
                Code::NotFound,
                DENIED,
            ],
        ),
        (
            "ImportProfiles",
            [UNAUTH, UNAUTH, DENIED, OK, DENIED, OK, DENIED],
        ),
        ("GetConversation", [UNAUTH, UNAUTH, OK, OK, OK, OK, DENIED]),
        (
            "GetConversation+reveal",
            [UNAUTH, UNAUTH, DENIED, DENIED, OK, OK, DENIED],
        ),
        (
            "ListConversations",
            [UNAUTH, UNAUTH, OK, OK, OK, OK, DENIED],
        ),
        ("ListEvents", [UNAUTH, UNAUTH, OK, OK, OK, OK, DENIED]),
        (
            "AppendEvents",
            [UNAUTH, UNAUTH, DENIED, OK, DENIED, OK, DENIED],
        ),
        (
            "SwitchLlm",
            [UNAUTH, UNAUTH, DENIED, OK, DENIED, OK, DENIED],
        ),
        ("GetProfile", [UNAUTH, UNAUTH, OK, OK, OK, OK, DENIED]),
        (
            "Backup",
            [UNAUTH, UNAUTH, DENIED, DENIED, DENIED, OK, DENIED],
        ),
    ];
    let callers = [
        None,
        Some("tok-wrong"),
        Some(TOKENS[0].2),
        Some(TOKENS[1].2),
        Some(TOKENS[2].2),
        Some(TOKENS[3].2),
        Some(TOKENS[4].2),
    ];
    let mut n = 0;
    for (rpc, want) in table {
        for (caller, want) in callers.iter().zip(want) {
            n += 1;
            let (mut p, mut c) = clients(&channel, *caller);
            let got = if rpc == "Backup" {
                backup(&channel, *caller).await
            } else {
                call(rpc, &mut p, &mut c, n).await
            };
            assert_eq!(got, want, "{rpc} with token {caller:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_stay_open() {
    let app = secured_app().await;
    let mut h = app.health().await;
    let r = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    let mut r = ServerReflectionClient::new(connect(app.addr).await);
    let req = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut s = r
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    assert!(s.message().await.unwrap().is_some());
}

#[test]
fn without_tokens_it_refuses_a_public_address_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("REGISTRY_INSECURE_ALLOW_UNAUTHENTICATED")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--auth-tokens-file") && err.contains("--insecure-allow-unauthenticated"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reveals_are_audited_with_the_token_name_and_never_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = tokens_file(dir.path());
    let server = ChildServer::start(
        &dir.path().join("data"),
        &["--auth-tokens-file", path.to_str().unwrap()],
    );
    let channel = connect(server.addr).await;
    let (mut admin, _) = clients(&channel, Some("tok-admin-0001"));
    admin
        .create_profile(pb::CreateProfileRequest {
            profile: Some(profile("vault", "m", Some("sk-AUDITED-VALUE-42"))),
        })
        .await
        .unwrap();
    let (mut auditor, _) = clients(&channel, Some("tok-secrets-0001"));
    let got = auditor
        .get_profile(pb::GetProfileRequest {
            name: "vault".into(),
            reveal_secrets: true,
            resolve_connection: false,
            revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.llm.unwrap().api_key.as_deref(),
        Some("sk-AUDITED-VALUE-42")
    );
    let (mut reader, _) = clients(&channel, Some("tok-reader-0001"));
    let denied = reader
        .get_profile(pb::GetProfileRequest {
            name: "vault".into(),
            reveal_secrets: true,
            resolve_connection: false,
            revision: None,
        })
        .await
        .unwrap_err();
    assert!(
        denied.message().contains("viewer") && denied.message().contains("secrets"),
        "{denied:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let log = server.log();
    let audit = log
        .lines()
        .find(|l| l.contains("secret access"))
        .unwrap_or_else(|| panic!("no audit line in:\n{log}"));
    assert!(
        audit.contains("auditor") && audit.contains("vault") && audit.contains("reveal"),
        "{audit}"
    );
    assert!(
        !log.contains("sk-AUDITED-VALUE-42"),
        "a secret reached the log"
    );
    assert!(!log.contains("tok-secrets-0001"), "a token reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_send_the_token_from_the_environment() {
    let app = secured_app().await;
    let files = tempfile::tempdir().unwrap();
    let src = profiles_folder(files.path(), "cli-auth", "sk-cli-auth-0001");
    let out = files.path().join("out");
    let (src, out_s, url) = (
        src.to_str().unwrap().to_owned(),
        out.to_str().unwrap().to_owned(),
        app.url(),
    );
    let import = ["import", src.as_str(), "--server", url.as_str()];
    let stored = |app_channel: Channel| async move {
        let (mut p, _) = clients(&app_channel, Some("tok-admin-0001"));
        p.get_profile(pb::GetProfileRequest {
            name: "cli-auth".into(),
            ..Default::default()
        })
        .await
        .is_ok()
    };

    // No token, then a token without the writer role: refused with the code, nothing stored.
    for (env, want) in [
        (vec![], "unauthenticated: "),
        (
            vec![("REGISTRY_TOKEN", "tok-reader-0001")],
            "permission denied: ",
        ),
    ] {
        let o = run_cli(&import, &env).await;
        let text = output_text(&o);
        assert!(!o.status.success() && text.contains(want), "{text}");
        assert!(!text.contains("tok-reader-0001"), "{text}");
        assert!(!stored(app.channel().await).await);
    }

    // --token-env names another variable; the token itself is never printed.
    let mut with_env = import.to_vec();
    with_env.extend(["--token-env", "EDITOR_TOKEN"]);
    let o = run_cli(&with_env, &[("EDITOR_TOKEN", "tok-writer-0001")]).await;
    let text = output_text(&o);
    assert!(o.status.success(), "{text}");
    assert!(!text.contains("tok-writer-0001"), "{text}");
    // Plaintext to loopback stays on this machine: no warning.
    assert!(!text.contains("unencrypted"), "{text}");
    assert!(stored(app.channel().await).await);

    // A plaintext export needs the secrets role.
    let export = [
        "export",
        out_s.as_str(),
        "--server",
        url.as_str(),
        "--secrets",
        "plaintext",
    ];
    let o = run_cli(&export, &[("REGISTRY_TOKEN", "tok-writer-0001")]).await;
    assert!(!o.status.success(), "{}", output_text(&o));
    assert!(output_text(&o).contains("permission denied: "));
    assert!(!out.join("cli-auth.json").exists());
    let o = run_cli(&export, &[("REGISTRY_TOKEN", "tok-secrets-0001")]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    let written = std::fs::read_to_string(out.join("cli-auth.json")).unwrap();
    assert!(written.contains("sk-cli-auth-0001"), "{written}");

    // A token that cannot travel as metadata is named by its variable, not shown.
    let o = run_cli(&import, &[("REGISTRY_TOKEN", "tok\nbroken-0001")]).await;
    let text = output_text(&o);
    assert!(
        !o.status.success() && text.contains("$REGISTRY_TOKEN"),
        "{text}"
    );
    assert!(!text.contains("broken-0001"), "{text}");
}

/// What a writer without the secrets role learns from importing and updating a guessed key: the
/// same outcomes and revisions whether the guess is the stored key or not.
async fn guess(p: &mut Profiles, key: &str, on_conflict: i32, dry_run: bool) -> (i32, String) {
    let r = p
        .import_profiles(pb::ImportProfilesRequest {
            documents: vec![pb::ProfileDocument {
                name: "vault.json".into(),
                json: format!(r#"{{"model": "gpt-4o", "api_key": "{key}", "schema_version": 1}}"#),
            }],
            on_conflict,
            dry_run,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (r.results[0].outcome, r.results[0].reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_without_the_secrets_role_cannot_test_a_guessed_key() {
    let app = secured_app().await;
    let channel = app.channel().await;
    let (mut admin, _) = clients(&channel, Some("tok-admin-0001"));
    let (mut writer, _) = clients(&channel, Some("tok-writer-0001"));
    admin
        .create_profile(pb::CreateProfileRequest {
            profile: Some(profile("vault", "gpt-4o", Some("sk-the-real-key"))),
        })
        .await
        .unwrap();
    use pb::import_profiles_request::OnConflict;
    for (on_conflict, dry_run) in [
        (OnConflict::Skip, true),
        (OnConflict::Skip, false),
        (OnConflict::Overwrite, true),
        (OnConflict::Fail, true),
    ] {
        let right = guess(&mut writer, "sk-the-real-key", on_conflict as i32, dry_run).await;
        let wrong = guess(&mut writer, "sk-a-wrong-guess", on_conflict as i32, dry_run).await;
        assert_eq!(right, wrong, "{on_conflict:?} dry_run={dry_run}");
    }
    // Overwrite for real, then UpdateProfile: each write is a new revision, right or wrong.
    let mut revisions = Vec::new();
    for key in ["sk-the-real-key", "sk-the-real-key", "sk-a-wrong-guess"] {
        let (outcome, _) = guess(&mut writer, key, OnConflict::Overwrite as i32, false).await;
        assert_eq!(outcome, pb::import_result::Outcome::Updated as i32, "{key}");
        let updated = writer
            .update_profile(pb::UpdateProfileRequest {
                profile: Some(profile("vault", "gpt-4o", Some(key))),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        revisions.push(updated.revision);
    }
    assert!(
        revisions.windows(2).all(|w| w[1] == w[0] + 2),
        "every write is a new revision: {revisions:?}"
    );
    // The secrets role may still see UNCHANGED: it can read the key anyway.
    let (mut auditor, _) = clients(&channel, Some("tok-admin-0001"));
    let key = auditor
        .get_profile(pb::GetProfileRequest {
            name: "vault".into(),
            reveal_secrets: true,
            resolve_connection: false,
            revision: None,
        })
        .await
        .unwrap()
        .into_inner()
        .llm
        .unwrap()
        .api_key
        .unwrap();
    let (outcome, _) = guess(&mut auditor, &key, OnConflict::Skip as i32, true).await;
    assert_eq!(outcome, pb::import_result::Outcome::Unchanged as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_cannot_test_a_guessed_inline_key_of_a_conversation() {
    let app = secured_app().await;
    let channel = app.channel().await;
    let (_, mut admin) = clients(&channel, Some("tok-admin-0001"));
    let (_, mut writer) = clients(&channel, Some("tok-writer-0001"));
    let inline = |key: &str| pb::LlmBinding {
        source: Some(pb::llm_binding::Source::Inline(pb::LlmConfig {
            model: "gpt-4o".into(),
            api_key: Some(key.into()),
            ..Default::default()
        })),
        resolved: None,
    };
    let c = admin
        .create_conversation(pb::CreateConversationRequest {
            conversation: Some(pb::Conversation {
                llms: [("agent".to_owned(), inline("sk-inline-real"))].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let update = |key: &str, status: i32, paths: &[&str]| pb::UpdateConversationRequest {
        conversation: Some(pb::Conversation {
            id: c.id.clone(),
            llms: [("agent".to_owned(), inline(key))].into(),
            execution_status: status,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
        expected_revision: None,
    };
    // Idle: each guess, right or wrong, is a new revision.
    let mut revisions = vec![c.revision];
    for key in ["sk-inline-real", "sk-wrong-guess", "sk-inline-real"] {
        let r = writer
            .update_conversation(update(key, 0, &["llms"]))
            .await
            .unwrap()
            .into_inner();
        revisions.push(r.revision);
    }
    assert!(
        revisions.windows(2).all(|w| w[1] == w[0] + 1),
        "every guess is a new revision: {revisions:?}"
    );
    // Running: a right guess is refused like a wrong one (both would change the LLMs).
    admin
        .update_conversation(update(
            "**********",
            pb::ExecutionStatus::Running as i32,
            &["execution_status"],
        ))
        .await
        .unwrap();
    let mut codes = Vec::new();
    for key in ["sk-inline-real", "sk-wrong-guess"] {
        let r = writer.update_conversation(update(key, 0, &["llms"])).await;
        codes.push(r.map(|_| Code::Ok).unwrap_or_else(|s| s.code()));
        let r = writer
            .switch_llm(pb::SwitchLlmRequest {
                id: c.id.clone(),
                usage_id: "agent".into(),
                target: Some(pb::switch_llm_request::Target::Llm(pb::LlmConfig {
                    model: "gpt-4o".into(),
                    api_key: Some(key.into()),
                    ..Default::default()
                })),
                expected_revision: None,
            })
            .await;
        codes.push(r.map(|_| Code::Ok).unwrap_or_else(|s| s.code()));
    }
    assert_eq!(
        codes[..2],
        codes[2..],
        "right and wrong guesses answer alike: {codes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_without_the_secrets_role_cannot_test_a_guessed_connection_key() {
    use pb::provider_connection_service_client::ProviderConnectionServiceClient;
    let app = secured_app().await;
    let channel = app.channel().await;
    let client = |token: &str| {
        ProviderConnectionServiceClient::with_interceptor(
            channel.clone(),
            Bearer(Some(token.to_owned())),
        )
    };
    let (mut admin, mut writer) = (client("tok-admin-0001"), client("tok-writer-0001"));
    let connection = |key: &str| pb::ProviderConnection {
        id: "vault".into(),
        display_name: "Vault".into(),
        api_key: Some(key.into()),
        ..Default::default()
    };
    admin
        .create_provider_connection(pb::CreateProviderConnectionRequest {
            connection: Some(connection("sk-the-real-key")),
        })
        .await
        .unwrap();
    let file = |key: &str| {
        format!("{{\"connections\": [{{\"id\": \"vault\", \"display_name\": \"Vault\", \"provider\": \"custom\", \"api_key\": \"{key}\", \"base_url\": null, \"created_at\": 1, \"updated_at\": 1}}]}}")
    };
    // The same answer for the right key and a wrong one, whatever the policy.
    for policy in [
        pb::import_profiles_request::OnConflict::Skip,
        pb::import_profiles_request::OnConflict::Overwrite,
    ] {
        let mut answers = Vec::new();
        for key in ["sk-the-real-key", "sk-a-wrong-guess"] {
            let r = writer
                .import_provider_connections(pb::ImportProviderConnectionsRequest {
                    json: file(key),
                    on_conflict: policy as i32,
                    dry_run: true,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            answers.push(r.results[0].outcome);
        }
        assert_eq!(answers[0], answers[1], "{policy:?}");
        assert_ne!(answers[0], pb::import_result::Outcome::Unchanged as i32);
    }
    // An update with the right key still counts as a change.
    let before = admin
        .get_provider_connection(pb::GetProviderConnectionRequest {
            id: "vault".into(),
            reveal_secrets: false,
        })
        .await
        .unwrap()
        .into_inner();
    let after = writer
        .update_provider_connection(pb::UpdateProviderConnectionRequest {
            connection: Some(connection("sk-the-real-key")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.revision, before.revision + 1);
    // Reading the key back needs the secrets role.
    let err = writer
        .get_provider_connection(pb::GetProviderConnectionRequest {
            id: "vault".into(),
            reveal_secrets: true,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}
