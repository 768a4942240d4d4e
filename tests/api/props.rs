//! Property tests over the request validators and page-token decoding: no input panics, and every
//! refused input leaves the store unchanged.
use profile_registry::domain::ProfileName;
use profile_registry::grpc::page_token;
use profile_registry::openhands::profile::{name_from_file, parse_file};
use profile_registry::pb;
use proptest::prelude::*;

use crate::helpers::{create, full_listing, profile, TestApp};

fn any_value() -> impl Strategy<Value = prost_types::Value> {
    use prost_types::value::Kind;
    prop_oneof![
        any::<f64>().prop_map(|n| prost_types::Value {
            kind: Some(Kind::NumberValue(n))
        }),
        ".{0,20}".prop_map(|s| prost_types::Value {
            kind: Some(Kind::StringValue(s))
        }),
        any::<bool>().prop_map(|b| prost_types::Value {
            kind: Some(Kind::BoolValue(b))
        }),
        Just(prost_types::Value { kind: None }),
    ]
}

fn any_profile() -> impl Strategy<Value = pb::Profile> {
    (
        prop_oneof![".{0,70}", "[A-Za-z0-9][A-Za-z0-9._-]{0,63}"],
        prop_oneof![".{0,12}", Just(String::new()), Just("   ".to_owned())],
        proptest::option::of(any::<f64>()),
        proptest::option::of(any::<i64>()),
        proptest::collection::btree_map(
            prop_oneof![
                ".{0,10}",
                Just("api_key".to_owned()),
                Just("schema_version".to_owned())
            ],
            any_value(),
            0..4,
        ),
    )
        .prop_map(
            |(name, model, temperature, max_output_tokens, extra)| pb::Profile {
                name,
                llm: Some(pb::LlmConfig {
                    model,
                    api_key: Some("sk-prop".into()),
                    temperature,
                    max_output_tokens,
                    extra: Some(prost_types::Struct { fields: extra }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn page_tokens_never_panic_and_only_round_trip(token in ".{0,80}", listing in "[a-z|]{1,20}", last in ".{0,30}") {
        let key = [9u8; 32];
        let _ = page_token::decode(&key, &listing, &token);
        let made = page_token::encode(&key, &listing, &last);
        prop_assert_eq!(page_token::decode(&key, &listing, &made).unwrap(), Some(last));
    }

    #[test]
    fn names_and_files_never_panic(raw in ".{0,80}", text in ".{0,200}") {
        let _ = ProfileName::parse(&raw, "name");
        let _ = name_from_file(&raw);
        let _ = parse_file(&text, None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn refused_profiles_leave_the_store_unchanged(p in any_profile()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            // Through the real server: the refusal must come before anything is written.
            let app = TestApp::spawn().await;
            let mut c = app.profiles().await;
            create(&mut c, profile("keep", "gpt-4o", Some("k"))).await;
            let before = full_listing(&mut c).await;
            let req = pb::UpdateProfileRequest {
                profile: Some(p.clone()),
                allow_missing: true,
                expected_revision: None,
            };
            match c.update_profile(req).await {
                Ok(stored) => {
                    // Valid input may be stored: it must then read back whole.
                    let stored = stored.into_inner();
                    let got = c
                        .get_profile(pb::GetProfileRequest { name: p.name.clone(), reveal_secrets: false, resolve_connection: false, revision: None })
                        .await
                        .unwrap()
                        .into_inner();
                    assert_eq!(got, stored);
                    assert_eq!(got.llm.map(|l| l.model), p.llm.map(|l| l.model));
                }
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
                    assert_eq!(full_listing(&mut c).await, before, "a refused profile changed the store");
                }
            }
        });
    }
}
