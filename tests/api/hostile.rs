//! Whatever the API accepts, it gives back: generated hostile values (nesting at the limit and one
//! past it, numbers beyond a double, ids with separators, timestamps outside protobuf's range)
//! over the write rpcs and imports. Accepted implies readable, exportable, re-importable to equal
//! values and deletable; refused implies INVALID_ARGUMENT naming the field, and the store
//! unchanged. And a conversation round-trips through its SDK files, whatever ids its events have.
use profile_registry::domain::values::MAX_JSON_DEPTH;
use profile_registry::pb;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tonic::Code;

use crate::helpers::{
    bound, conversation, create, create_conversation, full_listing, message_event, output_text,
    profile, run_cli, sv, TestApp,
};

/// A JSON value of `depth` levels of objects and arrays (mixed at random) around a string.
fn nested(depth: usize, rng: &mut impl Rng) -> Value {
    let mut v = json!("leaf");
    for _ in 0..depth {
        v = if rng.random_bool(0.5) {
            json!({ "k": v })
        } else {
            json!([v])
        };
    }
    v
}

fn to_pb(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_pb).collect(),
        }),
        Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), to_pb(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A hostile event id: separators, dots, control characters, unicode, spaces, too long.
fn hostile_id(rng: &mut impl Rng) -> String {
    let parts = [
        "../escape",
        "a/b",
        "a\\b",
        "..",
        ".hidden",
        "tab\there",
        "nul\0",
        "ünï",
        "sp ace",
        "",
    ];
    let long = "x".repeat(129);
    let pick = rng.random_range(0..=parts.len());
    if pick == parts.len() {
        long
    } else {
        parts[pick].to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_are_given_back_or_refused_with_the_store_unchanged() {
    let seed: u64 = std::env::var("REGISTRY_HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("hostile values seed {seed} (REGISTRY_HOSTILE_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let app = TestApp::spawn().await;
    let mut profiles = app.profiles().await;
    let mut conversations = app.conversations().await;
    create(&mut profiles, profile("base", "gpt-4o", None)).await;
    let c = create_conversation(&mut conversations, conversation(bound("base"), "hostile")).await;
    let (mut accepted, mut refused) = (0, 0);

    for case in 0..40 {
        // The whole object (extra, a body) at the limit, or one level past it; the object
        // itself is level 1.
        let at_limit = case % 2 == 0;
        let depth = if at_limit {
            MAX_JSON_DEPTH - 1
        } else {
            MAX_JSON_DEPTH
        };
        let value = nested(depth, &mut rng);
        let before = full_listing(&mut profiles).await;
        let name = format!("deep-{case}");
        let mut p = profile(&name, "gpt-4o", None);
        p.llm.as_mut().unwrap().extra = Some(prost_types::Struct {
            fields: [("deep".to_owned(), to_pb(&value))].into(),
        });
        let created = profiles
            .create_profile(pb::CreateProfileRequest { profile: Some(p) })
            .await;
        // The same value as an SDK file, through ImportProfiles.
        let file = json!({ "model": "gpt-4o", "deep": value }).to_string();
        let imported = profiles
            .import_profiles(pb::ImportProfilesRequest {
                documents: vec![pb::ProfileDocument {
                    name: format!("imp-{case}.json"),
                    json: file,
                }],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let outcome = imported.results[0].outcome();
        if at_limit {
            accepted += 1;
            created.unwrap_or_else(|e| panic!("case {case} (seed {seed}): {e:?}"));
            assert_eq!(outcome, pb::import_result::Outcome::Created, "case {case}");
            given_back(&mut profiles, &name).await;
            given_back(&mut profiles, &format!("imp-{case}")).await;
        } else {
            refused += 1;
            let e = created.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "case {case}");
            assert!(e.message().contains("profile.llm.extra"), "{}", e.message());
            assert!(e.message().contains("nests deeper"), "{}", e.message());
            assert_eq!(outcome, pb::import_result::Outcome::Invalid, "case {case}");
            assert_eq!(full_listing(&mut profiles).await, before, "case {case}");
        }

        // The same depth as an event body, and a hostile id or timestamp on a shallow one.
        let body = json!({ "nested": nested(depth, &mut rng) });
        let mut fields = prost_types::Struct::default();
        for (k, v) in body.as_object().unwrap() {
            fields.fields.insert(k.clone(), to_pb(v));
        }
        fields.fields.insert("kind".into(), sv("MessageEvent"));
        let deep_event = pb::Event {
            body: Some(fields),
            ..Default::default()
        };
        let mut bad_id = message_event("x", "user", "hi");
        bad_id.id = hostile_id(&mut rng);
        if bad_id.id.is_empty() {
            bad_id.id = "/".into();
        }
        let mut bad_time = message_event("t1", "user", "hi");
        bad_time.timestamp = Some(prost_types::Timestamp {
            seconds: if rng.random_bool(0.5) {
                253_402_300_800 + rng.random_range(0..1_000_000_000)
            } else {
                -62_135_596_801 - rng.random_range(0..1_000_000_000)
            },
            nanos: 0,
        });
        for (what, event, ok) in [
            ("body", deep_event, at_limit),
            ("id", bad_id, false),
            ("timestamp", bad_time, false),
        ] {
            let before = crate::helpers::all_events(&mut conversations, &c.id).await;
            let r = conversations
                .append_events(pb::AppendEventsRequest {
                    conversation_id: c.id.clone(),
                    events: vec![event],
                    expected_next_seq: None,
                })
                .await;
            if ok {
                r.unwrap_or_else(|e| panic!("case {case} {what} (seed {seed}): {e:?}"));
            } else {
                let e = r.expect_err(&format!("case {case}: a hostile {what} was accepted"));
                assert_eq!(e.code(), Code::InvalidArgument, "case {case} {what}");
                assert!(
                    e.message().contains(&format!("events[0].{what}")),
                    "{}",
                    e.message()
                );
                assert_eq!(
                    crate::helpers::all_events(&mut conversations, &c.id).await,
                    before,
                    "case {case}: a refused append changed the log"
                );
            }
        }
    }
    // Every accepted event reads back through ListEvents and exports as SDK files.
    let events = crate::helpers::all_events(&mut conversations, &c.id).await;
    assert_eq!(events.len(), 20, "one deep event per case at the limit");
    // And through the Python runtime, the strictest reader (recursion limit 100), with a profile
    // whose extra is at the limit too.
    let mut p = profile("deep-kept", "gpt-4o", None);
    p.llm.as_mut().unwrap().extra = Some(prost_types::Struct {
        fields: [(
            "deep".to_owned(),
            to_pb(&nested(MAX_JSON_DEPTH - 1, &mut rng)),
        )]
        .into(),
    });
    create(&mut profiles, p).await;
    python_reads_everything(&app, 2, 1, 20).await;
    conversations
        .export_conversation(pb::ExportConversationRequest {
            id: c.id.clone(),
            ..Default::default()
        })
        .await
        .expect("a conversation with events at the nesting limit exports");
    eprintln!("hostile values: {accepted} accepted and given back, {refused} refused");
}

/// Python's protobuf runtime reads every profile and event the server holds; its report (empty
/// when Python is missing and e2e is not required).
pub(crate) async fn python_reads_everything(
    app: &TestApp,
    profiles: usize,
    conversations: usize,
    events: usize,
) -> String {
    let Some(python) = crate::e2e::tools::python_with_grpc() else {
        crate::helpers::skip_without("python3 with grpcio and grpcio-tools", false);
        return String::new();
    };
    let root = env!("CARGO_MANIFEST_DIR");
    let addr = app.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(format!("{root}/tests/clients/python/read_back.py"))
            .args(["--server", &addr, "--proto-dir", &format!("{root}/proto")])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "Python could not read it back:\n{text}"
    );
    assert!(
        text.contains(&format!(
            "read {profiles} profiles, {conversations} conversations, {events} events"
        )),
        "{text}"
    );
    text
}

/// A profile that was accepted reads back, exports, re-imports to the same values, and deletes.
async fn given_back(
    profiles: &mut pb::profile_service_client::ProfileServiceClient<tonic::transport::Channel>,
    name: &str,
) {
    let got = profiles
        .get_profile(pb::GetProfileRequest {
            name: name.into(),
            reveal_secrets: false,
            resolve_connection: false,
            revision: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{name} does not read back: {e:?}"))
        .into_inner();
    let exported = profiles
        .export_profiles(pb::ExportProfilesRequest {
            names: vec![name.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let reimported = profiles
        .import_profiles(pb::ImportProfilesRequest {
            documents: exported.documents,
            on_conflict: pb::import_profiles_request::OnConflict::Overwrite as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reimported.results[0].outcome(),
        pb::import_result::Outcome::Unchanged,
        "{name}: its own export re-imports to equal values"
    );
    let again = profiles
        .get_profile(pb::GetProfileRequest {
            name: name.into(),
            reveal_secrets: false,
            resolve_connection: false,
            revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.llm, got.llm);
    profiles
        .delete_profile(pb::DeleteProfileRequest {
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{name} does not delete: {e:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_beyond_a_double_are_refused_on_import() {
    let app = TestApp::spawn().await;
    let mut profiles = app.profiles().await;
    for (file, field) in [
        (r#"{"model": "m", "num": 1e400}"#, "extra"),
        (r#"{"model": "m", "nested": {"a": [-1e999]}}"#, "extra"),
        (r#"{"model": "m", "temperature": 1e400}"#, "temperature"),
    ] {
        let r = profiles
            .import_profiles(pb::ImportProfilesRequest {
                documents: vec![pb::ProfileDocument {
                    name: "huge.json".into(),
                    json: file.into(),
                }],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.results[0].outcome(),
            pb::import_result::Outcome::Invalid,
            "{file}"
        );
        assert!(
            r.results[0].reason.contains(field),
            "{}",
            r.results[0].reason
        );
    }
    assert!(full_listing(&mut profiles).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_round_trip_through_sdk_files_with_any_accepted_event_ids() {
    let app = TestApp::spawn().await;
    let mut profiles = app.profiles().await;
    create(&mut profiles, profile("claude", "anthropic/claude", None)).await;
    let mut conversations = app.conversations().await;
    let c = create_conversation(&mut conversations, conversation(bound("claude"), "ids")).await;
    let mut events = vec![
        message_event("e0", "user", "hello"),
        message_event("e1", "agent", "hi"),
        message_event("a.b_c-9", "user", "dots and dashes"),
    ];
    // And one without an id: the server generates a UUID.
    let mut generated = message_event("", "agent", "generated");
    if let Some(b) = generated.body.as_mut() {
        b.fields.remove("id");
    }
    events.push(generated);
    conversations
        .append_events(pb::AppendEventsRequest {
            conversation_id: c.id.clone(),
            events,
            expected_next_seq: Some(0),
        })
        .await
        .unwrap();
    let stored = crate::helpers::all_events(&mut conversations, &c.id).await;
    assert_eq!(stored.len(), 4);

    // The CLI pair.
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("conversations");
    let folder = folder.to_str().unwrap();
    let o = run_cli(
        &["export-conversations", folder, "--server", &app.url()],
        &[],
    )
    .await;
    assert!(o.status.success(), "{}", output_text(&o));
    delete_conversation(&mut conversations, &c.id).await;
    let o = run_cli(
        &["import-conversations", folder, "--server", &app.url()],
        &[],
    )
    .await;
    assert!(o.status.success(), "{}", output_text(&o));
    let back = crate::helpers::all_events(&mut conversations, &c.id).await;
    assert_eq!(
        ids_and_bodies(&back),
        ids_and_bodies(&stored),
        "export-conversations then import-conversations: {}",
        output_text(&o)
    );

    // The gRPC pair.
    let files = conversations
        .export_conversation(pb::ExportConversationRequest {
            id: c.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    delete_conversation(&mut conversations, &c.id).await;
    let r = conversations
        .import_conversation(pb::ImportConversationRequest {
            base_state_json: files.base_state_json,
            events: files.events,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.events, 4);
    let back = crate::helpers::all_events(&mut conversations, &c.id).await;
    assert_eq!(ids_and_bodies(&back), ids_and_bodies(&stored));

    // A file that looks like an event but cannot be one is refused by name, never dropped.
    let hex = c.id.replace('-', "");
    let odd = dir.path().join("conversations").join(&hex).join("events");
    std::fs::write(odd.join("event-00004-a b.json"), "{}").unwrap();
    delete_conversation(&mut conversations, &c.id).await;
    let o = run_cli(
        &["import-conversations", folder, "--server", &app.url()],
        &[],
    )
    .await;
    assert!(!o.status.success(), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("event-00004-a b.json"),
        "{}",
        output_text(&o)
    );
}

fn ids_and_bodies(events: &[pb::Event]) -> Vec<(i64, String, Option<prost_types::Struct>)> {
    events
        .iter()
        .map(|e| (e.seq, e.id.clone(), e.body.clone()))
        .collect()
}

async fn delete_conversation(
    c: &mut pb::conversation_service_client::ConversationServiceClient<tonic::transport::Channel>,
    id: &str,
) {
    c.delete_conversation(pb::DeleteConversationRequest {
        id: id.into(),
        ..Default::default()
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nesting_limit_holds_on_updates_conversations_and_their_imports() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let app = TestApp::spawn().await;
    let mut profiles = app.profiles().await;
    let mut conversations = app.conversations().await;
    for (case, over) in [(0, false), (1, true), (2, false), (3, true)] {
        let depth = MAX_JSON_DEPTH - 1 + usize::from(over);
        let value = nested(depth, &mut rng);
        let before = full_listing(&mut profiles).await;
        let before_ids = crate::helpers::conversation_ids(
            &mut conversations,
            pb::ExecutionStatus::Unspecified,
            "",
        )
        .await;

        // UpdateProfile (creating, as the SDK's save does).
        let mut p = profile(&format!("upd-{case}"), "gpt-4o", None);
        p.llm.as_mut().unwrap().extra = Some(prost_types::Struct {
            fields: [("deep".to_owned(), to_pb(&value))].into(),
        });
        let updated = profiles
            .update_profile(pb::UpdateProfileRequest {
                profile: Some(p),
                allow_missing: true,
                expected_revision: None,
            })
            .await;
        // CreateConversation with the value in its state.
        let mut c = conversation(crate::helpers::inline("gpt-4o", None), "deep state");
        c.state = Some(prost_types::Struct {
            fields: [("deep".to_owned(), to_pb(&value))].into(),
        });
        let created = conversations
            .create_conversation(pb::CreateConversationRequest {
                conversation: Some(c),
            })
            .await;
        // ImportConversation: the value in base_state.json and in an event file.
        let id = uuid::Uuid::new_v4();
        let base = json!({ "id": id.to_string(), "deep": value }).to_string();
        let event = json!({ "id": "e0", "kind": "MessageEvent", "source": "user", "deep": value });
        let imported = conversations
            .import_conversation(pb::ImportConversationRequest {
                base_state_json: base,
                events: vec![pb::ConversationFile {
                    name: "event-00000-e0.json".into(),
                    json: event.to_string(),
                }],
                ..Default::default()
            })
            .await;
        if over {
            for (what, r) in [
                ("UpdateProfile", updated.map(drop)),
                ("CreateConversation", created.map(drop)),
                ("ImportConversation", imported.map(drop)),
            ] {
                let e = r.expect_err(&format!("{what} accepted nesting past the limit"));
                assert_eq!(e.code(), Code::InvalidArgument, "{what}: {}", e.message());
                assert!(
                    e.message().contains("nests deeper"),
                    "{what}: {}",
                    e.message()
                );
            }
            assert_eq!(full_listing(&mut profiles).await, before);
            assert_eq!(
                crate::helpers::conversation_ids(
                    &mut conversations,
                    pb::ExecutionStatus::Unspecified,
                    ""
                )
                .await,
                before_ids
            );
        } else {
            updated.expect("UpdateProfile at the limit");
            created.expect("CreateConversation at the limit");
            let r = imported
                .expect("ImportConversation at the limit")
                .into_inner();
            assert_eq!(r.events, 1);
        }
    }
    python_reads_everything(&app, 2, 4, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nested_past_what_protobuf_decodes_is_invalid_argument() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let app = TestApp::spawn().await;
    let mut profiles = app.profiles().await;
    // 60 levels: far past prost's own recursion limit of 100 protobuf levels (about 33 objects),
    // so the server's decoder refuses the request before any handler sees it.
    let mut p = profile("too-deep", "gpt-4o", None);
    p.llm.as_mut().unwrap().extra = Some(prost_types::Struct {
        fields: [("deep".to_owned(), to_pb(&nested(60, &mut rng)))].into(),
    });
    let e = profiles
        .create_profile(pb::CreateProfileRequest { profile: Some(p) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(
        e.message().contains("100 levels protobuf allows"),
        "{}",
        e.message()
    );
    assert!(full_listing(&mut profiles).await.is_empty());
}
