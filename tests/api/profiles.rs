//! Every ProfileService rpc and its errors, over a real server.
use profile_registry::pb;
use tonic::Code;

use crate::helpers::{create, delete_request, full_listing, profile, update_request, TestApp};

const MASK: &str = "**********";

#[tokio::test]
async fn create_get_masks_and_reveals() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    let mut p = profile("claude", "anthropic/claude-sonnet-4-5", Some("sk-secret-1"));
    let llm = p.llm.as_mut().unwrap();
    llm.temperature = Some(0.2);
    llm.max_output_tokens = Some(4096);
    llm.extra = Some(prost_types::Struct {
        fields: [("num_retries".to_owned(), prost_types::Value::from(5.0))].into(),
    });

    let created = create(&mut c, p).await;
    assert_eq!(created.revision, 1);
    assert_eq!(created.llm.as_ref().unwrap().api_key.as_deref(), Some(MASK));
    assert_eq!(created.create_time, created.update_time);

    let got = c
        .get_profile(pb::GetProfileRequest {
            name: "claude".into(),
            reveal_secrets: false,
            resolve_connection: false,
            revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    let llm = got.llm.unwrap();
    assert_eq!(llm.api_key.as_deref(), Some(MASK));
    assert_eq!(llm.temperature, Some(0.2));
    assert_eq!(llm.max_output_tokens, Some(4096));
    assert_eq!(
        llm.extra.unwrap().fields["num_retries"],
        prost_types::Value::from(5.0)
    );

    let revealed = c
        .get_profile(pb::GetProfileRequest {
            name: "claude".into(),
            reveal_secrets: true,
            resolve_connection: false,
            revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        revealed.llm.unwrap().api_key.as_deref(),
        Some("sk-secret-1")
    );

    let dup = c
        .create_profile(pb::CreateProfileRequest {
            profile: Some(profile("claude", "other", None)),
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);

    let missing = c
        .get_profile(pb::GetProfileRequest {
            name: "nope".into(),
            reveal_secrets: false,
            resolve_connection: false,
            revision: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains("nope"));
}

#[tokio::test]
async fn list_pages_in_name_order_with_opaque_tokens() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    let mut names: Vec<String> = (0..25).map(|i| format!("p{:02}", (i * 7) % 25)).collect();
    for n in &names {
        create(&mut c, profile(n, "gpt-4o", Some("k"))).await;
    }
    names.sort();

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list_profiles(pb::ListProfilesRequest {
                page_size: 10,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.profiles.len() <= 10);
        assert!(page
            .profiles
            .iter()
            .all(|p| p.llm.as_ref().unwrap().api_key.as_deref() == Some(MASK)));
        let last = page
            .profiles
            .last()
            .map(|p| p.name.clone())
            .unwrap_or_default();
        seen.extend(page.profiles.into_iter().map(|p| p.name));
        if page.next_page_token.is_empty() {
            break;
        }
        // Opaque: not the last name, nor the name in the clear inside it (a 2-character probe
        // such as "p0" also matches random base64 now and then).
        assert!(
            page.next_page_token != last && !page.next_page_token.contains(&last),
            "token should not be the bare name: {} after {last}",
            page.next_page_token
        );
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, names);

    let default_page = c
        .list_profiles(pb::ListProfilesRequest {
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(default_page.profiles.len(), 25);
    assert!(default_page.next_page_token.is_empty());
}

#[tokio::test]
async fn update_bumps_revision_checks_expected_and_allow_missing() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    create(&mut c, profile("a", "gpt-4o", Some("k1"))).await;

    let updated = c
        .update_profile(pb::UpdateProfileRequest {
            profile: Some(profile("a", "gpt-4.1", Some(MASK))),
            allow_missing: false,
            expected_revision: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.revision, 2);
    assert_eq!(updated.llm.as_ref().unwrap().model, "gpt-4.1");
    let (u, c0) = (updated.update_time.unwrap(), updated.create_time.unwrap());
    assert!((u.seconds, u.nanos) > (c0.seconds, c0.nanos));

    let stale = c
        .update_profile(pb::UpdateProfileRequest {
            profile: Some(profile("a", "gpt-5", None)),
            allow_missing: false,
            expected_revision: Some(1),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);

    let same = c
        .update_profile(pb::UpdateProfileRequest {
            profile: Some(profile("a", "gpt-4.1", Some(MASK))),
            allow_missing: false,
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        same.revision, 2,
        "an update that changes nothing keeps the revision"
    );

    let missing = c
        .update_profile(pb::UpdateProfileRequest {
            profile: Some(profile("b", "gpt-4o", None)),
            allow_missing: false,
            expected_revision: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let upserted = c
        .update_profile(pb::UpdateProfileRequest {
            profile: Some(profile("b", "gpt-4o", None)),
            allow_missing: true,
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(upserted.revision, 1);

    let listing = full_listing(&mut c).await;
    let summary: Vec<_> = listing
        .iter()
        .map(|(n, r, l)| (n.as_str(), *r, l.model.as_str()))
        .collect();
    assert_eq!(summary, [("a", 2, "gpt-4.1"), ("b", 1, "gpt-4o")]);
}

#[tokio::test]
async fn secret_write_rules() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    let mut p = profile("s", "bedrock/claude", Some("sk-1"));
    p.llm.as_mut().unwrap().aws_secret_access_key = Some("aws-secret".into());
    create(&mut c, p).await;

    // Read (masked), change the temperature, write back: the key survives unseen.
    let mut read = c
        .get_profile(pb::GetProfileRequest {
            name: "s".into(),
            reveal_secrets: false,
            resolve_connection: false,
            revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    read.llm.as_mut().unwrap().temperature = Some(0.7);
    let written = c
        .update_profile(pb::UpdateProfileRequest {
            profile: Some(read),
            allow_missing: false,
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(written.revision, 2);
    let revealed = reveal(&mut c, "s").await;
    assert_eq!(revealed.api_key.as_deref(), Some("sk-1"));
    assert_eq!(
        revealed.aws_secret_access_key.as_deref(),
        Some("aws-secret")
    );
    assert_eq!(revealed.temperature, Some(0.7));

    // An unset field clears; any other value sets.
    let mut p = profile("s", "bedrock/claude", Some("sk-2"));
    p.llm.as_mut().unwrap().temperature = Some(0.7);
    c.update_profile(pb::UpdateProfileRequest {
        profile: Some(p),
        allow_missing: false,
        expected_revision: None,
    })
    .await
    .unwrap();
    let revealed = reveal(&mut c, "s").await;
    assert_eq!(revealed.api_key.as_deref(), Some("sk-2"));
    assert_eq!(revealed.aws_secret_access_key, None);
}

async fn reveal(
    c: &mut pb::profile_service_client::ProfileServiceClient<tonic::transport::Channel>,
    name: &str,
) -> pb::LlmConfig {
    c.get_profile(pb::GetProfileRequest {
        name: name.into(),
        reveal_secrets: true,
        resolve_connection: false,
        revision: None,
    })
    .await
    .unwrap()
    .into_inner()
    .llm
    .unwrap()
}

#[tokio::test]
async fn delete_checks_revision_and_allow_missing() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    create(&mut c, profile("d", "gpt-4o", None)).await;

    let stale = c
        .delete_profile(pb::DeleteProfileRequest {
            name: "d".into(),
            expected_revision: Some(7),
            allow_missing: false,
            force: false,
            purge: false,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);

    let deleted = c
        .delete_profile(pb::DeleteProfileRequest {
            name: "d".into(),
            expected_revision: Some(1),
            allow_missing: false,
            force: false,
            purge: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.deleted);
    assert_eq!(deleted.revision, 1);

    let again = c
        .delete_profile(pb::DeleteProfileRequest {
            name: "d".into(),
            expected_revision: None,
            allow_missing: false,
            force: false,
            purge: false,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);

    let tolerated = c
        .delete_profile(pb::DeleteProfileRequest {
            name: "d".into(),
            expected_revision: None,
            allow_missing: true,
            force: false,
            purge: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!tolerated.deleted);
    assert!(full_listing(&mut c).await.is_empty());
}

#[tokio::test]
async fn rename_moves_atomically() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    create(&mut c, profile("old", "gpt-4o", Some("k"))).await;
    create(&mut c, profile("taken", "gpt-4o", None)).await;

    let renamed = c
        .rename_profile(pb::RenameProfileRequest {
            name: "old".into(),
            new_name: "new".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.name, "new");
    assert_eq!(renamed.revision, 2);
    assert_eq!(reveal(&mut c, "new").await.api_key.as_deref(), Some("k"));

    let gone = c
        .rename_profile(pb::RenameProfileRequest {
            name: "old".into(),
            new_name: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let clash = c
        .rename_profile(pb::RenameProfileRequest {
            name: "new".into(),
            new_name: "taken".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(clash.code(), Code::AlreadyExists);

    let names: Vec<_> = full_listing(&mut c)
        .await
        .into_iter()
        .map(|(n, r, _)| (n, r))
        .collect();
    assert_eq!(names, [("new".to_owned(), 2), ("taken".to_owned(), 1)]);
}

#[tokio::test]
async fn validate_reports_every_violation_and_never_writes() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    let ok = c
        .validate_profile(pb::ValidateProfileRequest {
            profile: Some(profile("fine", "gpt-4o", None)),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.valid);
    assert!(ok.violations.is_empty());

    let bad = c
        .validate_profile(pb::ValidateProfileRequest {
            profile: Some(profile("a/b", "", None)),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!bad.valid);
    let fields: Vec<_> = bad.violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["profile.name", "profile.llm.model"]);
    assert!(full_listing(&mut c).await.is_empty());
}

#[tokio::test]
async fn concurrent_durable_writers_all_land() {
    let app = TestApp::spawn().await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let mut c = app.profiles().await;
        tasks.push(tokio::spawn(async move {
            for j in 0..5 {
                let p = profile(&format!("w{i:02}"), &format!("model-{j}"), None);
                c.update_profile(pb::UpdateProfileRequest {
                    profile: Some(p),
                    allow_missing: true,
                    expected_revision: None,
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = app.profiles().await;
    let listing = full_listing(&mut c).await;
    assert_eq!(listing.len(), 64);
    assert!(listing
        .iter()
        .all(|(_, r, l)| *r == 5 && l.model == "model-4"));
}

#[tokio::test]
async fn health_reports_overall_and_per_service() {
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
    let app = TestApp::spawn().await;
    let mut h = app.health().await;
    for service in ["", "profileregistry.v1.ProfileService"] {
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = h
        .check(HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn reflection_v1_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let app = TestApp::spawn().await;
    let mut r = ServerReflectionClient::new(app.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = r
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["profileregistry.v1.ProfileService", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}

/// A plain GetProfile is answered from the server's ready responses: after every kind of write it
/// answers what the handler answers (here through `resolve_connection`, which the ready path
/// leaves to the handler), never an older version.
#[tokio::test]
async fn a_plain_get_follows_every_write_and_answers_as_the_handler_does() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    let get = |name: &str, resolve_connection: bool| pb::GetProfileRequest {
        name: name.into(),
        reveal_secrets: false,
        resolve_connection,
        revision: None,
    };
    let reader = c.clone();
    let both = |name: &'static str| {
        let mut c = reader.clone();
        async move {
            let plain = c.get_profile(get(name, false)).await;
            let again = c.get_profile(get(name, false)).await;
            let handler = c.get_profile(get(name, true)).await;
            match (plain, again, handler) {
                (Ok(p), Ok(a), Ok(h)) => {
                    let (p, a, h) = (p.into_inner(), a.into_inner(), h.into_inner());
                    assert_eq!(p, a, "{name}: a second plain read");
                    assert_eq!(p, h, "{name}: the ready answer and the handler's");
                    Ok(p)
                }
                (Err(p), Err(a), Err(h)) => {
                    assert_eq!((p.code(), a.code()), (h.code(), h.code()), "{name}");
                    Err(h.code())
                }
                other => panic!("{name}: the ready path and the handler disagree: {other:?}"),
            }
        }
    };
    create(&mut c, profile("r", "gpt-4o", Some("sk-ready"))).await;
    let first = both("r").await.expect("created");
    assert_eq!(first.llm.as_ref().unwrap().api_key.as_deref(), Some(MASK));
    assert_eq!(first.revision, 1);

    c.update_profile(update_request(profile("r", "gpt-5", Some(MASK)), 1))
        .await
        .unwrap();
    let updated = both("r").await.expect("updated");
    assert_eq!(updated.llm.as_ref().unwrap().model, "gpt-5");
    assert_eq!(updated.revision, 2);

    c.rename_profile(pb::RenameProfileRequest {
        name: "r".into(),
        new_name: "s".into(),
    })
    .await
    .unwrap();
    assert_eq!(both("r").await.unwrap_err(), Code::NotFound);
    assert_eq!(
        both("s").await.expect("renamed").llm.unwrap().model,
        "gpt-5"
    );

    c.delete_profile(delete_request("s")).await.unwrap();
    assert_eq!(both("s").await.unwrap_err(), Code::NotFound);
    c.undelete_profile(pb::UndeleteProfileRequest { name: "s".into() })
        .await
        .unwrap();
    assert_eq!(
        both("s").await.expect("undeleted").llm.unwrap().model,
        "gpt-5"
    );

    c.import_profiles(pb::ImportProfilesRequest {
        documents: vec![pb::ProfileDocument {
            name: "s".into(),
            json: r#"{"model": "gpt-imported"}"#.into(),
        }],
        on_conflict: pb::import_profiles_request::OnConflict::Overwrite.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        both("s").await.expect("imported over").llm.unwrap().model,
        "gpt-imported"
    );
    assert_eq!(both("bad name!").await.unwrap_err(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_listing_answers_page_by_page_as_the_handler_reads_each_profile() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    for (i, name) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        create(
            &mut c,
            profile(name, &format!("model-{i}"), Some("sk-listed")),
        )
        .await;
    }
    c.update_profile(update_request(profile("c", "model-9", Some(MASK)), 1))
        .await
        .unwrap();
    c.delete_profile(delete_request("d")).await.unwrap();

    let list = |page_size: i32, page_token: String| pb::ListProfilesRequest {
        page_size,
        page_token,
    };
    let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = c.list_profiles(list(2, token)).await.unwrap().into_inner();
        pages += 1;
        for listed in page.profiles {
            // resolve_connection sends the read to the handler (the plain read may be a ready one).
            let read = c
                .get_profile(pb::GetProfileRequest {
                    name: listed.name.clone(),
                    reveal_secrets: false,
                    resolve_connection: true,
                    revision: None,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                listed, read,
                "{}: listed as the handler reads it",
                read.name
            );
            assert_eq!(listed.llm.as_ref().unwrap().api_key.as_deref(), Some(MASK));
            seen.push(listed);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let names: Vec<_> = seen.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["a", "b", "c", "e"],
        "in name order, the deleted one gone"
    );
    assert_eq!(pages, 2, "4 profiles in pages of 2: the second is the last");
    assert_eq!(seen[2].llm.as_ref().unwrap().model, "model-9");
    assert_eq!(seen[2].revision, 2);

    let whole = c
        .list_profiles(list(0, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        whole.profiles, seen,
        "one default page holds the same profiles"
    );
    assert!(whole.next_page_token.is_empty());

    for (request, field) in [
        (list(-1, String::new()), "page_size"),
        (list(1001, String::new()), "page_size"),
        (list(2, "not-a-token".into()), "page_token"),
    ] {
        let refused = c.list_profiles(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{field}");
        assert!(refused.message().contains(field), "{}", refused.message());
    }
}

#[tokio::test]
async fn the_ready_answers_keep_the_request_size_limit() {
    // Two profiles with the longest names (64 bytes), and a page token that follows the first.
    let (first, second) = ("x".repeat(64), "y".repeat(64));
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    for name in [&first, &second] {
        create(&mut c, profile(name, "gpt-4o", None)).await;
    }
    let list = |page_token: &str| pb::ListProfilesRequest {
        page_size: 1,
        page_token: page_token.into(),
    };
    let token = c
        .list_profiles(list(""))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(token.len() > 60, "a token of {} bytes", token.len());
    let get = |name: &str| pb::GetProfileRequest {
        name: name.into(),
        reveal_secrets: false,
        resolve_connection: false,
        revision: None,
    };

    // A GetProfile of a 64-byte name is a 66-byte message: over a limit of 65, refused as the
    // services refuse it (not answered from the ready replies), and so is the next page.
    let app = TestApp::spawn_in_with(app.stop().await, |a| a.max_request_bytes = 65).await;
    let mut c = app.profiles().await;
    let refused = c.get_profile(get(&first)).await.unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "{}", refused.message());
    let refused = c.list_profiles(list(&token)).await.unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "{}", refused.message());
    // Within it: answered.
    let page = c.list_profiles(list("")).await.unwrap().into_inner();
    assert_eq!(page.profiles.len(), 1);
    assert_eq!(page.profiles[0].name, first);
}
