//! Import and export of SDK conversation folders: the CLI as a real process, the real SDK resuming.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use profile_registry::pb;
use profile_registry::pb::conversation_service_client::ConversationServiceClient;

use crate::helpers::output_text as text;
use crate::helpers::{create, profile, sdk_pythons, skip_without, TestApp};

const VERSIONS: [&str; 2] = ["1.43.1", "1.58.2"];
const OH_SECRET_KEY: &str = "test-secret-key-0001";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conversations")
}

async fn cli(args: Vec<String>, key: bool) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(crate::helpers::binary());
        cmd.args(&args).env_remove("OH_SECRET_KEY");
        if key {
            cmd.env("OH_SECRET_KEY", OH_SECRET_KEY);
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap()
}

fn s(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

/// The event files of a conversation folder, by name.
fn event_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir.join("events"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("event-"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn conversation_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

/// Imports a fixture folder with the CLI and exports it again; returns the export folder.
async fn round_trip(
    app: &TestApp,
    source: &Path,
    secrets: &str,
    encrypted: bool,
    extra: &[&str],
) -> PathBuf {
    let out = app.dir.path().join(format!("export-{secrets}"));
    let url = app.url();
    let mut import = s(&[
        "import-conversations",
        source.to_str().unwrap(),
        "--server",
        &url,
    ]);
    import.extend(extra.iter().map(|a| (*a).to_owned()));
    let imported = cli(import, encrypted).await;
    assert!(imported.status.success(), "{}", text(&imported));
    let exported = cli(
        s(&[
            "export-conversations",
            out.to_str().unwrap(),
            "--server",
            &url,
            "--secrets",
            secrets,
        ]),
        encrypted,
    )
    .await;
    assert!(exported.status.success(), "{}", text(&exported));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_folders_round_trip_with_events_verbatim() {
    for version in VERSIONS {
        for (form, secrets, encrypted) in [
            ("redacted", "redacted", false),
            ("encrypted", "encrypted", true),
        ] {
            let app = TestApp::spawn().await;
            let source = fixtures().join(version).join(form);
            let out = round_trip(&app, &source, secrets, encrypted, &[]).await;
            let (want, got) = (conversation_dirs(&source), conversation_dirs(&out));
            let names = |v: &[PathBuf]| {
                v.iter()
                    .map(|p| p.file_name().unwrap().to_owned())
                    .collect::<Vec<_>>()
            };
            assert_eq!(names(&want), names(&got), "{version}/{form}");
            for (a, b) in want.iter().zip(&got) {
                assert_eq!(
                    event_files(a),
                    event_files(b),
                    "{version}/{form}: events are exported exactly as imported"
                );
                let sa: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(a.join("base_state.json")).unwrap())
                        .unwrap();
                let sb: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(b.join("base_state.json")).unwrap())
                        .unwrap();
                for key in [
                    "id",
                    "execution_status",
                    "tags",
                    "workspace",
                    "stats",
                    "confirmation_policy",
                ] {
                    assert_eq!(
                        sa.get(key),
                        sb.get(key),
                        "{version}/{form}: base_state {key}"
                    );
                }
                assert_eq!(sa["agent"]["llm"]["model"], sb["agent"]["llm"]["model"]);
                if form == "redacted" {
                    assert_eq!(
                        std::fs::read(a.join("base_state.json")).unwrap(),
                        std::fs::read(b.join("base_state.json")).unwrap(),
                        "{version}: a redacted base_state.json comes back byte for byte"
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_profile_makes_the_profile_the_source_of_truth() {
    let app = TestApp::spawn().await;
    let mut profiles = app.profiles().await;
    create(
        &mut profiles,
        profile(
            "team-claude",
            "anthropic/claude-opus-4",
            Some("sk-team-key"),
        ),
    )
    .await;
    let source = fixtures().join("1.58.2/redacted");
    let out = round_trip(
        &app,
        &source,
        "plaintext",
        false,
        &["--bind-profile", "team-claude"],
    )
    .await;

    let mut c = ConversationServiceClient::new(app.channel().await);
    let listed = c
        .list_conversations(pb::ListConversationsRequest {
            profile: "team-claude".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.conversations.len(),
        2,
        "both imported conversations are bound to the profile"
    );
    for dir in conversation_dirs(&out) {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("base_state.json")).unwrap()).unwrap();
        assert_eq!(
            state["agent"]["llm"]["model"], "anthropic/claude-opus-4",
            "export resolves the bound profile"
        );
        assert_eq!(state["agent"]["llm"]["api_key"], "sk-team-key");
    }

    let refs = app.dir.path().join("refs");
    let o = cli(
        s(&[
            "export-conversations",
            refs.to_str().unwrap(),
            "--server",
            &app.url(),
            "--profile-refs",
        ]),
        false,
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    for dir in conversation_dirs(&refs) {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("base_state.json")).unwrap()).unwrap();
        assert_eq!(
            state["agent"]["llm"],
            serde_json::json!({"kind": "profile_ref", "profile_id": "team-claude"})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_conversation_folders_are_reported_and_not_written() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let good = fixtures().join("1.58.2/redacted/c0a7e001000040008000000000000001");
    // A copy with a gap in its event indexes, and one whose key cannot be read.
    let gap = dir.path().join("c0a7e001000040008000000000000001");
    copy_dir(&good, &gap);
    let second = std::fs::read_dir(gap.join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("event-00001-"))
        .unwrap();
    std::fs::remove_file(second).unwrap();
    let enc = dir.path().join("c0a7e001000040008000000000000002");
    copy_dir(
        &fixtures().join("1.58.2/encrypted/c0a7e001000040008000000000000002"),
        &enc,
    );

    let o = cli(
        s(&[
            "import-conversations",
            dir.path().to_str().unwrap(),
            "--server",
            &app.url(),
        ]),
        false,
    )
    .await;
    let report = text(&o);
    assert!(!o.status.success(), "{report}");
    assert!(
        report.contains("INVALID c0a7e001000040008000000000000001")
            && report.contains("index 1 is missing"),
        "{report}"
    );
    assert!(
        report.contains("INVALID c0a7e001000040008000000000000002") && report.contains("no key"),
        "{report}"
    );
    assert!(!report.contains("gAAAAA"), "no token in the report");
    let mut c = ConversationServiceClient::new(app.channel().await);
    let listed = c
        .list_conversations(pb::ListConversationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.conversations.is_empty(), "nothing half-written");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("events")).unwrap();
    std::fs::copy(from.join("base_state.json"), to.join("base_state.json")).unwrap();
    for e in std::fs::read_dir(from.join("events")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join("events").join(e.file_name())).unwrap();
    }
}

/// Folders re-exported by the registry resume in the real SDK with the same state and events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_conversations_resume_in_the_real_sdk() {
    let pythons = sdk_pythons();
    if skip_without(
        "Python 3.12 with openhands-sdk ($REGISTRY_SDK_PYTHONS)",
        !pythons.is_empty(),
    ) {
        return;
    }
    let check =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdk_conversation_check.py");
    for (version, python) in VERSIONS.iter().zip(pythons.iter().cycle()) {
        for (form, secrets, encrypted) in [
            ("redacted", "redacted", false),
            ("encrypted", "encrypted", true),
        ] {
            let app = TestApp::spawn().await;
            let source = fixtures().join(version).join(form);
            let out = round_trip(&app, &source, secrets, encrypted, &[]).await;
            let mut runs = Vec::new();
            for (a, b) in conversation_dirs(&source)
                .into_iter()
                .zip(conversation_dirs(&out))
            {
                let mut cmd = Command::new(python);
                cmd.arg(&check)
                    .arg(&a)
                    .arg(&b)
                    .env("OPENHANDS_SUPPRESS_BANNER", "1")
                    .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                    .env_remove("OH_SECRET_KEY");
                if encrypted {
                    cmd.env("OH_SECRET_KEY", OH_SECRET_KEY);
                }
                runs.push(tokio::task::spawn_blocking(move || {
                    (b, cmd.output().unwrap())
                }));
            }
            for r in runs {
                let (b, o) = r.await.unwrap();
                assert!(
                    o.status.success(),
                    "{version}/{form} {}:\n{}",
                    b.display(),
                    text(&o)
                );
            }
        }
    }
}
