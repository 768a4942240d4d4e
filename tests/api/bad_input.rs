//! Every kind of bad input gets INVALID_ARGUMENT naming the field, and leaves the store unchanged.
use profile_registry::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{create, full_listing, profile, TestApp};

fn with_extra(name: &str, key: &str, value: prost_types::Value) -> pb::Profile {
    let mut p = profile(name, "gpt-4o", None);
    p.llm.as_mut().unwrap().extra = Some(prost_types::Struct {
        fields: [(key.to_owned(), value)].into(),
    });
    p
}

enum Call {
    Create(pb::Profile),
    Upsert(pb::Profile),
    List(i32, String),
}

#[tokio::test]
async fn bad_input_is_refused_with_the_field_named_and_nothing_written() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    create(&mut c, profile("keep", "gpt-4o", Some("sk-keep"))).await;
    create(&mut c, profile("keep2", "gpt-4o", None)).await;
    let first = c
        .list_profiles(pb::ListProfilesRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut forged = first.next_page_token.clone().into_bytes();
    forged[2] = if forged[2] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let no_llm = pb::Profile {
        name: "nollm".into(),
        ..Default::default()
    };

    let cases: Vec<(&str, Call, &str)> = vec![
        (
            "empty name",
            Call::Create(profile("", "gpt-4o", None)),
            "profile.name",
        ),
        (
            "dot-dot path",
            Call::Create(profile("../x", "gpt-4o", None)),
            "profile.name",
        ),
        (
            "slash",
            Call::Create(profile("a/b", "gpt-4o", None)),
            "profile.name",
        ),
        (
            "leading dot",
            Call::Upsert(profile(".x", "gpt-4o", None)),
            "profile.name",
        ),
        (
            "65 characters",
            Call::Create(profile(&"x".repeat(65), "gpt-4o", None)),
            "profile.name",
        ),
        (
            "non-ASCII",
            Call::Create(profile("é", "gpt-4o", None)),
            "profile.name",
        ),
        ("missing llm", Call::Create(no_llm), "profile.llm"),
        (
            "empty model",
            Call::Create(profile("m", "", None)),
            "profile.llm.model",
        ),
        (
            "blank model",
            Call::Upsert(profile("m", "   ", None)),
            "profile.llm.model",
        ),
        (
            "typed key in extra",
            Call::Create(with_extra("t", "api_key", "sk-dup".into())),
            "profile.llm.extra.api_key",
        ),
        (
            "over 64 KiB",
            Call::Create(with_extra("big", "blob", "x".repeat(70_000).into())),
            "profile",
        ),
        (
            "negative page_size",
            Call::List(-1, String::new()),
            "page_size",
        ),
        (
            "page_size over the limit",
            Call::List(1001, String::new()),
            "page_size",
        ),
        ("forged page token", Call::List(10, forged), "page_token"),
        (
            "garbage page token",
            Call::List(10, "not-a-token".into()),
            "page_token",
        ),
    ];

    let before = full_listing(&mut c).await;
    let dir_before = snapshot_listing_with_secrets(&mut c).await;
    for (case, call, field) in cases {
        let err = match call {
            Call::Create(p) => c
                .create_profile(pb::CreateProfileRequest { profile: Some(p) })
                .await
                .map(|_| ()),
            Call::Upsert(p) => c
                .update_profile(pb::UpdateProfileRequest {
                    profile: Some(p),
                    allow_missing: true,
                    expected_revision: None,
                })
                .await
                .map(|_| ()),
            Call::List(page_size, page_token) => c
                .list_profiles(pb::ListProfilesRequest {
                    page_size,
                    page_token,
                })
                .await
                .map(|_| ()),
        }
        .expect_err(case);
        assert_eq!(err.code(), Code::InvalidArgument, "{case}: {err:?}");
        assert!(
            err.message().contains(field),
            "{case}: message {:?} should name {field}",
            err.message()
        );
        let details = err.get_error_details();
        let bad = details
            .bad_request()
            .unwrap_or_else(|| panic!("{case}: no BadRequest details"));
        assert!(
            bad.field_violations.iter().any(|v| v.field == field),
            "{case}: {:?}",
            bad.field_violations
        );
        assert!(
            !err.message().contains("sk-dup"),
            "{case}: a secret leaked into the message"
        );
        assert_eq!(
            full_listing(&mut c).await,
            before,
            "{case}: the store changed"
        );
    }
    assert_eq!(snapshot_listing_with_secrets(&mut c).await, dir_before);
}

/// The stored profile with its secret, so a refused write that touched the key would show.
async fn snapshot_listing_with_secrets(
    c: &mut pb::profile_service_client::ProfileServiceClient<tonic::transport::Channel>,
) -> Vec<pb::Profile> {
    let mut out = Vec::new();
    for (name, _, _) in full_listing(c).await {
        out.push(
            c.get_profile(pb::GetProfileRequest {
                name,
                reveal_secrets: true,
                resolve_connection: false,
                revision: None,
            })
            .await
            .unwrap()
            .into_inner(),
        );
    }
    out
}
