//! Every ConversationService rpc and its errors, over a real server, with the profiles they bind:
//! one file per rpc family, and here what they share (a server with two profiles, ids, checks).
mod create;
mod delete;
mod events;
mod get_list;
mod profile_bindings;
mod update;
mod watch_events;

use profile_registry::pb;
use profile_registry::pb::conversation_service_client::ConversationServiceClient;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{create, profile, TestApp};

pub(super) const MASK: &str = "**********";
pub(super) const HEX_ID: &str = "0b5c6f5e1c2d4e8f9a0b1c2d3e4f5a6b";
pub(super) const DASHED_ID: &str = "0b5c6f5e-1c2d-4e8f-9a0b-1c2d3e4f5a6b";
pub(super) const MISSING_ID: &str = "ffffffff-ffff-4fff-bfff-ffffffffffff";

pub(super) fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

pub(super) fn switch_to_profile(id: &str, usage: &str, name: &str) -> pb::SwitchLlmRequest {
    pb::SwitchLlmRequest {
        id: id.into(),
        usage_id: usage.into(),
        target: Some(pb::switch_llm_request::Target::Profile(name.into())),
        expected_revision: None,
    }
}

/// Asserts an INVALID_ARGUMENT that names `field` in its message and in its BadRequest details.
pub(super) fn assert_names_field(err: &tonic::Status, field: &str) {
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains(field),
        "message {:?} should name {field}",
        err.message()
    );
    let details = err.get_error_details();
    let bad = details.bad_request().expect("BadRequest details");
    assert!(
        bad.field_violations.iter().any(|v| v.field == field),
        "{:?}",
        bad.field_violations
    );
}

pub(super) fn resolved(c: &pb::Conversation, usage: &str) -> pb::LlmConfig {
    c.llms[usage]
        .resolved
        .clone()
        .unwrap_or_else(|| panic!("llms[{usage}] has no resolved LLM: {:?}", c.llms[usage]))
}

/// A server with the profiles "alpha" (gpt-4o, sk-alpha) and "beta" (claude, sk-beta).
pub(super) async fn app_with_profiles() -> (TestApp, ConversationServiceClient<Channel>) {
    let app = TestApp::spawn().await;
    let mut p = app.profiles().await;
    create(&mut p, profile("alpha", "gpt-4o", Some("sk-alpha"))).await;
    create(&mut p, profile("beta", "anthropic/claude", Some("sk-beta"))).await;
    let c = app.conversations().await;
    (app, c)
}
