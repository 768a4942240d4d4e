//! Profile history over a real server (both stores): every revision kept with who wrote it, read,
//! listed a page at a time and rolled back to; the history's length, a rename that takes it along,
//! a delete that ends it, and a restart that keeps it.
use profile_registry::pb;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use tonic::transport::Channel;
use tonic::Code;

use crate::auth::{clients, secured_app};
use crate::helpers::{create, output_text, profile, run_cli, TestApp};

const MASK: &str = "**********";

type Profiles = ProfileServiceClient<Channel>;

async fn update(c: &mut Profiles, name: &str, model: &str, key: &str) -> pb::Profile {
    c.update_profile(pb::UpdateProfileRequest {
        profile: Some(profile(name, model, Some(key))),
        allow_missing: false,
        expected_revision: None,
    })
    .await
    .expect("update succeeds")
    .into_inner()
}

/// Every kept revision of `name`, newest first, `page_size` a page: (revision, model, principal).
async fn revisions(
    c: &mut Profiles,
    name: &str,
    page_size: i32,
) -> Result<Vec<(i64, String, String)>, tonic::Status> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .list_profile_revisions(pb::ListProfileRevisionsRequest {
                name: name.into(),
                page_size,
                page_token,
            })
            .await?
            .into_inner();
        for p in page.revisions {
            let llm = p.llm.unwrap();
            assert_eq!(
                llm.api_key.as_deref(),
                Some(MASK),
                "listed revisions are masked"
            );
            out.push((p.revision, llm.model, p.update_principal));
        }
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = page.next_page_token;
    }
}

/// Revision `revision` of `name` with its secrets, or the error.
async fn revealed(
    c: &mut Profiles,
    name: &str,
    revision: i64,
) -> Result<pb::Profile, tonic::Status> {
    c.get_profile(pb::GetProfileRequest {
        name: name.into(),
        reveal_secrets: true,
        resolve_connection: false,
        revision: Some(revision),
    })
    .await
    .map(tonic::Response::into_inner)
}

async fn rollback(
    c: &mut Profiles,
    name: &str,
    revision: i64,
    expected_revision: Option<i64>,
) -> Result<pb::Profile, tonic::Status> {
    c.rollback_profile(pb::RollbackProfileRequest {
        name: name.into(),
        revision,
        expected_revision,
    })
    .await
    .map(tonic::Response::into_inner)
}

fn key_of(p: &pb::Profile) -> String {
    p.llm.as_ref().unwrap().api_key.clone().unwrap_or_default()
}

#[tokio::test]
async fn every_revision_is_kept_read_listed_and_rolled_back_to() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    let first = create(&mut c, profile("gpt", "m-1", Some("sk-1"))).await;
    assert_eq!(first.update_principal, "anonymous");
    for i in 2..=4 {
        let p = update(&mut c, "gpt", &format!("m-{i}"), &format!("sk-{i}")).await;
        assert_eq!(p.revision, i);
    }

    // Listed newest first, in pages of every size, each with who wrote it.
    let want: Vec<(i64, String, String)> = (1..=4)
        .rev()
        .map(|i| (i, format!("m-{i}"), "anonymous".to_owned()))
        .collect();
    for size in [1, 2, 3, 0] {
        assert_eq!(
            revisions(&mut c, "gpt", size).await.unwrap(),
            want,
            "page size {size}"
        );
    }

    // An older revision reads with its own secrets (revealed) or masked, like the current one.
    let two = revealed(&mut c, "gpt", 2).await.unwrap();
    assert_eq!((two.revision, key_of(&two)), (2, "sk-2".to_owned()));
    assert_eq!(two.llm.as_ref().unwrap().model, "m-2");
    let masked = c
        .get_profile(pb::GetProfileRequest {
            name: "gpt".into(),
            revision: Some(2),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(key_of(&masked), MASK);

    // A rollback writes revision 1's configuration, key included, as revision 5.
    let stale = rollback(&mut c, "gpt", 1, Some(3)).await.unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    let rolled = rollback(&mut c, "gpt", 1, Some(4)).await.unwrap();
    assert_eq!(rolled.revision, 5);
    assert_eq!(key_of(&rolled), MASK, "the answer is masked");
    let now = revealed(&mut c, "gpt", 5).await.unwrap();
    assert_eq!(
        (
            now.llm.as_ref().unwrap().model.as_str(),
            key_of(&now).as_str()
        ),
        ("m-1", "sk-1")
    );
    let current = revealed(&mut c, "gpt", 0).await.unwrap();
    assert_eq!(current.revision, 5, "revision 0 is the current one");
    // Rolling back to what it already holds writes nothing.
    assert_eq!(rollback(&mut c, "gpt", 1, None).await.unwrap().revision, 5);

    // What is not there is NOT_FOUND, naming the revision; bad input names its field.
    let missing = revealed(&mut c, "gpt", 9).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains("revision 9"), "{missing:?}");
    assert_eq!(
        rollback(&mut c, "gpt", 9, None).await.unwrap_err().code(),
        Code::NotFound
    );
    let absent = revisions(&mut c, "nobody", 0).await.unwrap_err();
    assert_eq!(absent.code(), Code::NotFound);
    let bad = rollback(&mut c, "gpt", 0, None).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("revision"), "{bad:?}");
    let bad = revealed(&mut c, "gpt", -1).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn the_history_keeps_its_length_follows_a_rename_ends_with_a_delete_and_survives_a_restart() {
    let app = TestApp::spawn_with(|a| a.history_revisions = 3).await;
    let mut c = app.profiles().await;
    create(&mut c, profile("a", "m-1", Some("sk-1"))).await;
    for i in 2..=7 {
        update(&mut c, "a", &format!("m-{i}"), &format!("sk-{i}")).await;
    }
    let kept: Vec<i64> = revisions(&mut c, "a", 0)
        .await
        .unwrap()
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(kept, [7, 6, 5], "the last 3, the current one included");
    let gone = revealed(&mut c, "a", 4).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert!(gone.message().contains("not kept"), "{gone:?}");

    // A rename takes the history along (sealed again under the new name) and adds a revision.
    let renamed = c
        .rename_profile(pb::RenameProfileRequest {
            name: "a".into(),
            new_name: "b".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.revision, 8);
    let kept: Vec<i64> = revisions(&mut c, "b", 0)
        .await
        .unwrap()
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(kept, [8, 7, 6]);
    assert_eq!(
        revisions(&mut c, "a", 0).await.unwrap_err().code(),
        Code::NotFound
    );
    // Nothing of it stays under the old name, secrets least of all.
    let old = revealed(&mut c, "a", 7).await.unwrap_err();
    assert_eq!(old.code(), Code::NotFound);
    let six = revealed(&mut c, "b", 6).await.unwrap();
    assert_eq!((six.name.as_str(), key_of(&six).as_str()), ("b", "sk-6"));
    let back = rollback(&mut c, "b", 6, Some(8)).await.unwrap();
    assert_eq!(back.revision, 9);
    assert_eq!(key_of(&revealed(&mut c, "b", 9).await.unwrap()), "sk-6");

    // The history outlives a restart.
    let before = revisions(&mut c, "b", 0).await.unwrap();
    let app = TestApp::spawn_in_with(app.stop().await, |a| a.history_revisions = 3).await;
    let mut c = app.profiles().await;
    assert_eq!(revisions(&mut c, "b", 0).await.unwrap(), before);
    assert_eq!(key_of(&revealed(&mut c, "b", 7).await.unwrap()), "sk-7");

    // A delete ends it: the name made again starts a history of its own.
    c.delete_profile(pb::DeleteProfileRequest {
        name: "b".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    create(&mut c, profile("b", "fresh", Some("sk-new"))).await;
    let kept = revisions(&mut c, "b", 0).await.unwrap();
    assert_eq!(kept, [(1, "fresh".to_owned(), "anonymous".to_owned())]);
    assert_eq!(
        revealed(&mut c, "b", 7).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn each_revision_names_the_token_that_wrote_it_and_old_reveals_need_the_secrets_role() {
    let app = secured_app().await;
    let channel = app.channel().await;
    let (mut root, _) = clients(&channel, Some("tok-admin-0001"));
    let (mut editor, _) = clients(&channel, Some("tok-writer-0001"));
    let (mut reader, _) = clients(&channel, Some("tok-reader-0001"));
    root.create_profile(pb::CreateProfileRequest {
        profile: Some(profile("p", "m-1", Some("sk-1"))),
    })
    .await
    .unwrap();
    editor
        .update_profile(pb::UpdateProfileRequest {
            profile: Some(profile("p", "m-2", Some("sk-2"))),
            ..Default::default()
        })
        .await
        .unwrap();
    editor
        .rollback_profile(pb::RollbackProfileRequest {
            name: "p".into(),
            revision: 1,
            expected_revision: None,
        })
        .await
        .unwrap();
    let listed = reader
        .list_profile_revisions(pb::ListProfileRevisionsRequest {
            name: "p".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let who: Vec<(i64, &str)> = listed
        .revisions
        .iter()
        .map(|p| (p.revision, p.update_principal.as_str()))
        .collect();
    assert_eq!(who, [(3, "editor"), (2, "editor"), (1, "root")]);
    // A reader may read an old revision masked, not revealed; a reader may not roll back.
    let old = |reveal_secrets| pb::GetProfileRequest {
        name: "p".into(),
        reveal_secrets,
        revision: Some(2),
        ..Default::default()
    };
    let masked = reader.get_profile(old(false)).await.unwrap().into_inner();
    assert_eq!(key_of(&masked), MASK);
    let refused = reader.get_profile(old(true)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = reader
        .rollback_profile(pb::RollbackProfileRequest {
            name: "p".into(),
            revision: 2,
            expected_revision: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let two = root.get_profile(old(true)).await.unwrap().into_inner();
    assert_eq!(key_of(&two), "sk-2");
    // Purging a history is for admins; the delete itself stays a writer's.
    let purge = |name: &str| pb::DeleteProfileRequest {
        name: name.into(),
        purge: true,
        ..Default::default()
    };
    let refused = editor.delete_profile(purge("p")).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    root.delete_profile(purge("p")).await.unwrap();
    let none = root
        .undelete_profile(pb::UndeleteProfileRequest { name: "p".into() })
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_rollback_and_diff_from_the_command_line() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    create(&mut c, profile("cli", "m-1", Some("sk-cli-one"))).await;
    let mut two = profile("cli", "m-2", Some("sk-cli-two"));
    two.llm.as_mut().unwrap().base_url = Some("https://llm.example.com".into());
    c.update_profile(pb::UpdateProfileRequest {
        profile: Some(two),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = app.url();
    let cli = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend(["--server".to_owned(), url.clone()]);
        async move {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            run_cli(&args, &[]).await
        }
    };

    let o = cli(&["history", "cli"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["REVISION", "MODEL", "BASE_URL", "UPDATED", "BY"],
        "{text}"
    );
    assert_eq!(
        (rows[1][0], rows[1][1], rows[1][2]),
        ("2", "m-2", "https://llm.example.com")
    );
    assert_eq!((rows[2][0], rows[2][1], rows[2][2]), ("1", "m-1", "-"));
    assert_eq!(
        (rows[1].last(), rows.len()),
        (Some(&"anonymous"), 3),
        "{text}"
    );

    // A diff names each key once and never shows a secret's value.
    let o = cli(&["diff", "cli", "1"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    let text = output_text(&o);
    for line in [
        "revision 1 -> 2: 3 keys differ",
        "~ api_key: changed",
        "+ base_url: https://llm.example.com",
        "~ model: m-1 -> m-2",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    assert!(!text.contains("sk-cli"), "{text}");
    let o = cli(&["diff", "cli", "2", "2"]).await;
    assert!(output_text(&o).contains("no change"), "{}", output_text(&o));

    // A stale rollback is refused and changes nothing; a good one writes revision 3.
    let o = cli(&["rollback", "cli", "1", "--expected-revision", "1"]).await;
    assert!(!o.status.success(), "{}", output_text(&o));
    assert!(output_text(&o).contains("revision"), "{}", output_text(&o));
    let o = cli(&["rollback", "cli", "1"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("configuration of revision 1 (as revision 3)"),
        "{}",
        output_text(&o)
    );
    assert_eq!(
        key_of(&revealed(&mut c, "cli", 3).await.unwrap()),
        "sk-cli-one"
    );
    let missing = cli(&["history", "nobody"]).await;
    assert!(!missing.status.success());
    assert!(
        output_text(&missing).contains("nobody"),
        "{}",
        output_text(&missing)
    );

    // On a stopped server's data dir, the same commands; what they write is by `local`.
    if crate::helpers::sled_only("the data dir form opens sled's data dir") {
        return;
    }
    let dir = app.stop().await;
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let o = run_cli(&["rollback", "cli", "2", "--data-dir", data], &[]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    let o = run_cli(&["history", "cli", "-o", "json", "--data-dir", data], &[]).await;
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let newest: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(newest["revision"], "4", "{text}");
    assert_eq!(newest["updatePrincipal"], "local", "{text}");
    assert_eq!(newest["llm"]["model"], "m-2", "{text}");
}

async fn delete(c: &mut Profiles, name: &str, purge: bool) -> Result<i64, tonic::Status> {
    c.delete_profile(pb::DeleteProfileRequest {
        name: name.into(),
        force: true,
        purge,
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().revision)
}

async fn undelete(c: &mut Profiles, name: &str) -> Result<pb::Profile, tonic::Status> {
    c.undelete_profile(pb::UndeleteProfileRequest { name: name.into() })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_deleted_profile_comes_back_with_its_history_until_purged_or_made_again() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    create(&mut c, profile("p", "m-1", Some("sk-1"))).await;
    update(&mut c, "p", "m-2", "sk-2").await;
    assert_eq!(delete(&mut c, "p", false).await.unwrap(), 2);
    let gone = c
        .get_profile(pb::GetProfileRequest {
            name: "p".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    // Its history can still be read, and it comes back as its next revision, key and all.
    let kept: Vec<i64> = revisions(&mut c, "p", 0)
        .await
        .unwrap()
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(kept, [2, 1]);
    let back = undelete(&mut c, "p").await.unwrap();
    assert_eq!(
        (back.revision, back.llm.as_ref().unwrap().model.as_str()),
        (3, "m-2")
    );
    assert_eq!(key_of(&revealed(&mut c, "p", 3).await.unwrap()), "sk-2");
    let kept: Vec<i64> = revisions(&mut c, "p", 0)
        .await
        .unwrap()
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(kept, [3, 2, 1]);
    let taken = undelete(&mut c, "p").await.unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");

    // Made again after a delete, the name starts a history of its own; the old one is gone.
    delete(&mut c, "p", false).await.unwrap();
    create(&mut c, profile("p", "m-new", Some("sk-new"))).await;
    assert_eq!(revisions(&mut c, "p", 0).await.unwrap().len(), 1);
    assert_eq!(
        undelete(&mut c, "p").await.unwrap_err().code(),
        Code::AlreadyExists
    );
    delete(&mut c, "p", false).await.unwrap();
    let back = undelete(&mut c, "p").await.unwrap();
    assert_eq!(
        (back.revision, back.llm.as_ref().unwrap().model.as_str()),
        (2, "m-new")
    );

    // A purge leaves nothing to bring back, also of a profile deleted before.
    delete(&mut c, "p", false).await.unwrap();
    let purged = delete(&mut c, "p", true).await.unwrap();
    assert_eq!(purged, 2, "the purge names the revision it destroyed");
    let none = undelete(&mut c, "p").await.unwrap_err();
    assert_eq!(none.code(), Code::NotFound, "{none:?}");
    assert!(none.message().contains("no deleted profile"), "{none:?}");
    assert_eq!(
        revisions(&mut c, "p", 0).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        undelete(&mut c, "never").await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn an_undelete_makes_bound_conversations_resolve_again() {
    let app = TestApp::spawn().await;
    let (mut c, mut convs) = (app.profiles().await, app.conversations().await);
    create(&mut c, profile("bound", "m-1", Some("sk-1"))).await;
    let id = crate::helpers::create_conversation(
        &mut convs,
        crate::helpers::conversation(crate::helpers::bound("bound"), "t"),
    )
    .await
    .id;
    delete(&mut c, "bound", false).await.unwrap();
    let got = crate::helpers::get_conversation(&mut convs, &id, true, false).await;
    assert!(got.llms["agent"].resolved.is_none());
    undelete(&mut c, "bound").await.unwrap();
    let got = crate::helpers::get_conversation(&mut convs, &id, true, false).await;
    let resolved = got.llms["agent"].resolved.clone().expect("resolves again");
    assert_eq!(resolved.model, "m-1");
}

#[tokio::test]
async fn a_deleted_profile_s_history_goes_after_the_retention() {
    let retention = std::time::Duration::from_secs(2);
    let app = TestApp::spawn_with(|a| a.deleted_retention = retention).await;
    let mut c = app.profiles().await;
    create(&mut c, profile("brief", "m", Some("sk"))).await;
    create(&mut c, profile("kept", "m", Some("sk"))).await;
    delete(&mut c, "brief", false).await.unwrap();
    let deleted = std::time::Instant::now();
    assert_eq!(revisions(&mut c, "brief", 0).await.unwrap().len(), 1);
    let purged = loop {
        match revisions(&mut c, "brief", 0).await {
            Ok(_) => assert!(deleted.elapsed() < retention * 10, "never purged"),
            Err(s) => break s,
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(purged.code(), Code::NotFound);
    assert!(
        deleted.elapsed() >= retention,
        "purged early: {:?}",
        deleted.elapsed()
    );
    assert_eq!(
        undelete(&mut c, "brief").await.unwrap_err().code(),
        Code::NotFound
    );
    // A profile that is not deleted keeps its history.
    assert_eq!(revisions(&mut c, "kept", 0).await.unwrap().len(), 1);
}

#[tokio::test]
async fn watch_events_carry_the_store_wide_seq_in_change_order() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    create(&mut c, profile("a", "m", None)).await;
    create(&mut c, profile("b", "m", None)).await;
    let mut watch = c
        .watch_profiles(pb::WatchProfilesRequest {
            send_initial: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = next_event(&mut watch).await;
    let second = next_event(&mut watch).await;
    assert!(first.initial && second.initial);
    assert!(first.seq > 0 && second.seq > 0 && first.seq != second.seq);
    let snapshot_max = first.seq.max(second.seq);
    update(&mut c, "a", "m-2", "sk").await;
    delete(&mut c, "b", false).await.unwrap();
    let put = next_event(&mut watch).await;
    let del = next_event(&mut watch).await;
    assert_eq!(
        (put.name.as_str(), put.r#type),
        ("a", pb::profile_event::Type::Put as i32)
    );
    assert_eq!(
        (del.name.as_str(), del.r#type),
        ("b", pb::profile_event::Type::Delete as i32)
    );
    assert!(put.seq > snapshot_max, "{} > {snapshot_max}", put.seq);
    assert!(del.seq > put.seq, "{} > {}", del.seq, put.seq);
}

async fn next_event(w: &mut tonic::Streaming<pb::ProfileEvent>) -> pb::ProfileEvent {
    tokio::time::timeout(std::time::Duration::from_secs(10), w.message())
        .await
        .expect("an event in time")
        .unwrap()
        .unwrap()
}
