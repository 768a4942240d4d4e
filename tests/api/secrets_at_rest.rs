//! Encryption at rest: no secret is readable in the data dir, a ciphertext moved to another record
//! fails that record only, and rotate-keys moves every secret to the new key.
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use profile_registry::pb;
use profile_registry::pb::conversation_service_client::ConversationServiceClient;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use profile_registry::pb::provider_connection_service_client::ProviderConnectionServiceClient;
use profile_registry::store::{SledStore, StoreOptions};
use tonic::transport::Channel;
use tonic::Code;

use crate::helpers::{
    binary, conversation, create, create_conversation, full_listing, get_conversation, inline,
    message_event, profile, secret_forms, TestApp,
};
use crate::helpers::{postgres_contents, postgres_for, sled_only};

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn llm(model: &str, secret: &str) -> pb::LlmConfig {
    pb::LlmConfig {
        model: model.into(),
        api_key: Some(format!("{secret}-api")),
        aws_access_key_id: Some(format!("{secret}-akid")),
        aws_secret_access_key: Some(format!("{secret}-sak")),
        aws_session_token: Some(format!("{secret}-tok")),
        ..Default::default()
    }
}

fn secrets_of(l: &pb::LlmConfig) -> [Option<String>; 4] {
    [
        l.api_key.clone(),
        l.aws_access_key_id.clone(),
        l.aws_secret_access_key.clone(),
        l.aws_session_token.clone(),
    ]
}

fn expected(secret: &str) -> [Option<String>; 4] {
    secrets_of(&llm("m", secret))
}

async fn revealed(p: &mut ProfileServiceClient<Channel>, name: &str) -> pb::LlmConfig {
    p.get_profile(pb::GetProfileRequest {
        name: name.into(),
        reveal_secrets: true,
        resolve_connection: false,
        revision: None,
    })
    .await
    .unwrap_or_else(|s| panic!("get {name}: {s:?}"))
    .into_inner()
    .llm
    .unwrap()
}

async fn revealed_inline(c: &mut ConversationServiceClient<Channel>, id: &str) -> pb::LlmConfig {
    let conv = get_conversation(c, id, true, true).await;
    match &conv.llms["agent"].source {
        Some(pb::llm_binding::Source::Inline(l)) => l.clone(),
        other => panic!("agent is not inline: {other:?}"),
    }
}

fn write_key_file(path: &Path, keys: &[(&str, u8)]) {
    let text: String = keys
        .iter()
        .map(|(id, b)| format!("{id}:{}\n", STANDARD.encode([*b; 32])))
        .collect();
    std::fs::write(path, format!("# test keys\n{text}")).unwrap();
}

#[tokio::test]
async fn no_secret_value_is_found_in_the_data_dir_in_any_encoding() {
    // Arrange: every write path that stores a secret.
    let app = TestApp::spawn().await;
    let (mut p, mut c) = (app.profiles().await, app.conversations().await);
    let mut created = pb::Profile {
        llm: Some(llm("gpt-4o", "sk-KNOWN-SECRET-created")),
        ..profile("created", "gpt-4o", None)
    };
    create(&mut p, created.clone()).await;
    created.llm = Some(llm("gpt-4o", "sk-KNOWN-SECRET-updated"));
    p.update_profile(pb::UpdateProfileRequest {
        profile: Some(created),
        ..Default::default()
    })
    .await
    .unwrap();
    create(
        &mut p,
        profile("to-rename", "gpt-4o", Some("sk-KNOWN-SECRET-renamed-api")),
    )
    .await;
    p.rename_profile(pb::RenameProfileRequest {
        name: "to-rename".into(),
        new_name: "renamed".into(),
    })
    .await
    .unwrap();
    let doc = r#"{"model": "gpt-4o", "api_key": "sk-KNOWN-SECRET-imported-api", "aws_session_token": "sk-KNOWN-SECRET-imported-tok"}"#;
    p.import_profiles(pb::ImportProfilesRequest {
        documents: vec![pb::ProfileDocument {
            name: "imported.json".into(),
            json: doc.into(),
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let conv = create_conversation(
        &mut c,
        conversation(
            pb::LlmBinding {
                source: Some(pb::llm_binding::Source::Inline(llm(
                    "gpt-4o",
                    "sk-KNOWN-SECRET-conv",
                ))),
                resolved: None,
            },
            "inline",
        ),
    )
    .await;
    let switched = create_conversation(
        &mut c,
        conversation(
            inline("gpt-4o", Some("sk-KNOWN-SECRET-before-switch")),
            "sw",
        ),
    )
    .await;
    c.switch_llm(pb::SwitchLlmRequest {
        id: switched.id.clone(),
        usage_id: String::new(),
        target: Some(pb::switch_llm_request::Target::Llm(llm(
            "gpt-4.1",
            "sk-KNOWN-SECRET-switched",
        ))),
        expected_revision: None,
    })
    .await
    .unwrap();
    c.append_events(pb::AppendEventsRequest {
        conversation_id: conv.id.clone(),
        events: vec![message_event("e0", "user", "hello")],
        expected_next_seq: None,
    })
    .await
    .unwrap();

    // Act: restart (the secrets still read back), then stop.
    let app = TestApp::spawn_in(app.stop().await).await;
    let (mut p, mut c) = (app.profiles().await, app.conversations().await);
    assert_eq!(
        secrets_of(&revealed(&mut p, "created").await),
        expected("sk-KNOWN-SECRET-updated")
    );
    assert_eq!(
        revealed(&mut p, "renamed").await.api_key.as_deref(),
        Some("sk-KNOWN-SECRET-renamed-api")
    );
    let imported = revealed(&mut p, "imported").await;
    assert_eq!(
        imported.api_key.as_deref(),
        Some("sk-KNOWN-SECRET-imported-api")
    );
    assert_eq!(
        secrets_of(&revealed_inline(&mut c, &conv.id).await),
        expected("sk-KNOWN-SECRET-conv")
    );
    assert_eq!(
        secrets_of(&revealed_inline(&mut c, &switched.id).await),
        expected("sk-KNOWN-SECRET-switched")
    );
    let dir = app.stop().await;

    // Assert: no file holds any of the values, raw or encoded.
    let mut values = vec![
        "sk-KNOWN-SECRET-renamed-api".to_owned(),
        "sk-KNOWN-SECRET-imported-api".to_owned(),
        "sk-KNOWN-SECRET-imported-tok".to_owned(),
        "sk-KNOWN-SECRET-before-switch".to_owned(),
    ];
    for base in [
        "sk-KNOWN-SECRET-created",
        "sk-KNOWN-SECRET-updated",
        "sk-KNOWN-SECRET-conv",
        "sk-KNOWN-SECRET-switched",
    ] {
        values.extend(expected(base).into_iter().flatten());
    }
    // On PostgreSQL, what is at rest is in the database: its records and its whole dump.
    if let Some(pg) = postgres_for(&dir.path().join("data")) {
        std::fs::write(dir.path().join("postgres.txt"), postgres_contents(&pg.url)).unwrap();
    }
    let files = files_under(dir.path());
    assert!(files.iter().any(|f| f.ends_with("secret.key")));
    let mut plain_fields_seen = false;
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        // The scan sees record contents: the non-secret fields are stored as they are.
        plain_fields_seen |= contains(&bytes, b"\"model\":\"gpt-4.1\"");
        for value in &values {
            for (form, needle) in secret_forms(value) {
                assert!(
                    !contains(&bytes, &needle),
                    "{} holds the {form} form of a secret",
                    file.display()
                );
            }
        }
    }
    assert!(plain_fields_seen, "the scan must see the stored records");
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_record_fails_that_record_only() {
    if sled_only("it edits sled records in place") {
        return;
    }
    // Arrange
    let app = TestApp::spawn().await;
    let mut p = app.profiles().await;
    for name in ["alpha", "beta", "gamma"] {
        create(
            &mut p,
            profile(name, "gpt-4o", Some(&format!("sk-KNOWN-SECRET-{name}"))),
        )
        .await;
    }
    let dir = app.stop().await;

    // Act: copy alpha's sealed api_key into beta's record, through the store.
    {
        let store = SledStore::open(&dir.path().join("data"), &StoreOptions::default()).unwrap();
        let record = |name: &str| -> serde_json::Value {
            serde_json::from_slice(&store.raw_profile_record(name).unwrap().unwrap()).unwrap()
        };
        let sealed = record("alpha")["profile"]["llm"]["api_key"].clone();
        let sealed_text = sealed.as_str().unwrap();
        assert!(sealed_text.starts_with("enc:v1:local-1:"), "{sealed_text}");
        let mut beta = record("beta");
        assert_ne!(beta["profile"]["llm"]["api_key"], sealed);
        beta["profile"]["llm"]["api_key"] = sealed;
        store
            .put_raw_profile_record("beta", &serde_json::to_vec(&beta).unwrap())
            .unwrap();
    }
    let app = TestApp::spawn_in(dir).await;
    let mut p = app.profiles().await;

    // Assert: beta is INTERNAL, named, without a secret; the others serve.
    let err = p
        .get_profile(pb::GetProfileRequest {
            name: "beta".into(),
            reveal_secrets: true,
            resolve_connection: false,
            revision: None,
        })
        .await
        .expect_err("beta's record fails its integrity check");
    assert_eq!(err.code(), Code::Internal);
    assert!(err.message().contains("beta"), "{}", err.message());
    assert!(!err.message().contains("sk-"), "{}", err.message());
    assert!(!err.message().contains("enc:"), "{}", err.message());
    for name in ["alpha", "gamma"] {
        assert_eq!(
            revealed(&mut p, name).await.api_key,
            Some(format!("sk-KNOWN-SECRET-{name}"))
        );
    }
    let names: Vec<String> = full_listing(&mut p)
        .await
        .into_iter()
        .map(|(n, ..)| n)
        .collect();
    assert_eq!(names, ["alpha", "gamma"]);
}

#[tokio::test]
async fn rotate_keys_moves_every_secret_to_the_first_key() {
    // Arrange: secrets written with key k1.
    let keys = tempfile::tempdir().unwrap();
    let (only_k1, k2_then_k1, only_k2) = (
        keys.path().join("k1"),
        keys.path().join("k2-k1"),
        keys.path().join("k2"),
    );
    write_key_file(&only_k1, &[("k1", 1)]);
    write_key_file(&k2_then_k1, &[("k2", 2), ("k1", 1)]);
    write_key_file(&only_k2, &[("k2", 2)]);
    let k1 = only_k1.clone();
    let app = TestApp::spawn_with(|a| a.secret_key_file = Some(k1)).await;
    let (mut p, mut c) = (app.profiles().await, app.conversations().await);
    for name in ["one", "two"] {
        create(
            &mut p,
            pb::Profile {
                llm: Some(llm("gpt-4o", &format!("sk-KNOWN-SECRET-{name}"))),
                ..profile(name, "gpt-4o", None)
            },
        )
        .await;
    }
    create(&mut p, profile("keyless", "gpt-4o", None)).await;
    let conv = create_conversation(
        &mut c,
        conversation(inline("gpt-4o", Some("sk-KNOWN-SECRET-conv")), "c"),
    )
    .await;
    let mut conns = ProviderConnectionServiceClient::new(app.channel().await);
    conns
        .create_provider_connection(pb::CreateProviderConnectionRequest {
            connection: Some(pb::ProviderConnection {
                id: "shared".into(),
                display_name: "Shared".into(),
                api_key: Some("sk-KNOWN-SECRET-shared".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let data = app.dir.path().join("data");
    // sled: the data dir, offline; PostgreSQL: the database, in one transaction.
    let database = postgres_for(&data).map(|pg| pg.url);
    let rotate = |key_file: &Path| {
        let mut cmd = Command::new(binary());
        cmd.arg("rotate-keys");
        match &database {
            Some(url) => cmd.args(["--store", url]),
            None => cmd.arg("--data-dir").arg(&data),
        };
        cmd.arg("--secret-key-file").arg(key_file).output().unwrap()
    };
    if database.is_none() {
        let refused = rotate(&k2_then_k1);
        assert!(!refused.status.success());
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("stop the server"),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
    }
    let dir = app.stop().await;

    // Act
    let out = rotate(&k2_then_k1);

    // Assert: the counts, then every secret opens with k2 alone.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "re-encrypted 18 secrets with key \"k2\": 2 profiles, 2 kept profile revisions, 1 conversations, 1 provider connections; by previous key: k1 18"
        ),
        "{stdout}"
    );
    let app = TestApp::spawn_in_with(dir, |a| a.secret_key_file = Some(only_k2)).await;
    let (mut p, mut c) = (app.profiles().await, app.conversations().await);
    for name in ["one", "two"] {
        assert_eq!(
            secrets_of(&revealed(&mut p, name).await),
            expected(&format!("sk-KNOWN-SECRET-{name}"))
        );
    }
    assert_eq!(revealed(&mut p, "keyless").await.api_key, None);
    // The kept revisions moved to k2 too: revision 1 reads from the history.
    let kept = p
        .get_profile(pb::GetProfileRequest {
            name: "one".into(),
            reveal_secrets: true,
            resolve_connection: false,
            revision: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        secrets_of(&kept.llm.unwrap()),
        expected("sk-KNOWN-SECRET-one")
    );
    assert_eq!(
        revealed_inline(&mut c, &conv.id).await.api_key.as_deref(),
        Some("sk-KNOWN-SECRET-conv")
    );
    assert_eq!(full_listing(&mut p).await.len(), 3);
    let mut conns = ProviderConnectionServiceClient::new(app.channel().await);
    let shared = conns
        .get_provider_connection(pb::GetProviderConnectionRequest {
            id: "shared".into(),
            reveal_secrets: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shared.api_key.as_deref(), Some("sk-KNOWN-SECRET-shared"));
    app.stop().await;
}

#[test]
fn a_bad_key_file_is_refused_naming_the_file_and_line_not_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys");
    let short = STANDARD.encode([9u8; 16]);
    std::fs::write(
        &key_file,
        format!("ok:{}\nshort:{short}\n", STANDARD.encode([1u8; 32])),
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["rotate-keys", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--secret-key-file")
        .arg(&key_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&key_file.display().to_string()) && stderr.contains("line 2"),
        "{stderr}"
    );
    assert!(!stderr.contains(&short), "{stderr}");
}
