//! Messages are for people: no status message, CLI error or server log line shows Rust's Debug
//! formatting (`ProfileName("x")`, `Some(..)`, `Status { .. }`), over the errors a session provokes.
use profile_registry::pb;

use crate::helpers::{
    bound, conversation, create, create_conversation, output_text, profile, run_cli, ChildServer,
};

/// The places in `text` shaped like Debug output: a CamelCase name followed by `(` or ` {`.
fn debug_shapes(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i].is_ascii_uppercase()
            && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
            j += 1;
        }
        let ident: String = chars[i..j].iter().collect();
        let shaped = chars.get(j) == Some(&'(')
            || (chars.get(j) == Some(&' ') && chars.get(j + 1) == Some(&'{'));
        if shaped && ident.chars().any(|c| c.is_ascii_lowercase()) {
            let end = (j + 30).min(chars.len());
            found.push(chars[i..end].iter().collect());
        }
        i = j.max(i + 1);
    }
    found
}

#[test]
fn the_detector_finds_debug_shapes() {
    assert_eq!(
        debug_shapes("profile ProfileName(\"minimal\") is bound").len(),
        1
    );
    assert_eq!(debug_shapes("got Some(3) and Status { code: 5 }").len(), 2);
    assert!(debug_shapes("not found: profile \"x\" not found (NOT_FOUND)").is_empty());
    assert!(debug_shapes("see `profile-registry serve` (or --data-dir)").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_shows_rust_debug_formatting() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(&dir.path().join("data"), &[]);
    let url = format!("http://{}", server.addr);
    let channel = crate::helpers::connect(server.addr).await;
    let mut profiles = pb::profile_service_client::ProfileServiceClient::new(channel.clone());
    let mut conversations =
        pb::conversation_service_client::ConversationServiceClient::new(channel);
    let mut messages = Vec::new();

    create(
        &mut profiles,
        profile("minimal", "gpt-4o", Some("sk-msg-1")),
    )
    .await;
    create_conversation(&mut conversations, conversation(bound("minimal"), "bound")).await;
    let calls: Vec<Result<(), tonic::Status>> = vec![
        profiles
            .get_profile(pb::GetProfileRequest {
                name: "missing".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        profiles
            .create_profile(pb::CreateProfileRequest {
                profile: Some(profile("minimal", "gpt-4o", None)),
            })
            .await
            .map(drop),
        profiles
            .create_profile(pb::CreateProfileRequest {
                profile: Some(profile("a/b", "", None)),
            })
            .await
            .map(drop),
        profiles
            .delete_profile(pb::DeleteProfileRequest {
                name: "minimal".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        profiles
            .update_profile(pb::UpdateProfileRequest {
                profile: Some(profile("minimal", "gpt-4o", None)),
                expected_revision: Some(7),
                ..Default::default()
            })
            .await
            .map(drop),
        profiles
            .rename_profile(pb::RenameProfileRequest {
                name: "missing".into(),
                new_name: "other".into(),
            })
            .await
            .map(drop),
        profiles
            .list_profiles(pb::ListProfilesRequest {
                page_size: 5,
                page_token: "forged".into(),
            })
            .await
            .map(drop),
        conversations
            .get_conversation(pb::GetConversationRequest {
                id: "00000000-0000-4000-8000-000000000000".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        conversations
            .get_conversation(pb::GetConversationRequest {
                id: "not-an-id".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        conversations
            .append_events(pb::AppendEventsRequest {
                conversation_id: "00000000-0000-4000-8000-000000000000".into(),
                events: vec![crate::helpers::message_event("e0", "user", "x")],
                expected_next_seq: Some(3),
            })
            .await
            .map(drop),
    ];
    for (i, call) in calls.into_iter().enumerate() {
        let status = call.expect_err(&format!("call {i} should fail"));
        messages.push(format!("status {i}: {}", status.message()));
    }

    // The CLI's own errors: refusals, a bad document, an unreachable server, a bad folder.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"model\": [1]}").unwrap();
    let folder = dir.path().join("profiles");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("x y.json"), "{}").unwrap();
    std::fs::write(folder.join("ok.json"), "not json").unwrap();
    let bad = bad.to_str().unwrap().to_owned();
    let folder = folder.to_str().unwrap().to_owned();
    for args in [
        vec!["delete", "minimal", "--server", &url],
        vec!["get", "missing", "--server", &url],
        vec!["put", "minimal", &bad, "--server", &url],
        vec!["rename", "minimal", "a/b", "--server", &url],
        vec!["import", &folder, "--server", &url],
        vec!["conversations", "events", "nope", "--server", &url],
        vec!["list", "--server", "127.0.0.1:1"],
        vec!["list", "--server", "https://127.0.0.1:1"],
    ] {
        let o = run_cli(&args, &[]).await;
        assert!(!o.status.success(), "{args:?} should fail");
        messages.push(format!("cli {args:?}: {}", output_text(&o)));
    }
    drop(profiles);
    drop(conversations);
    server.signal("TERM");
    let mut server = server;
    server.wait_exit(std::time::Duration::from_secs(20));
    messages.push(server.log());

    let all = messages.join("\n");
    let shapes = debug_shapes(&all);
    assert!(
        shapes.is_empty(),
        "Debug formatting in messages: {shapes:?}\n\n{all}"
    );
    assert!(
        all.contains("profile \"minimal\" is bound by conversations"),
        "{all}"
    );
}
