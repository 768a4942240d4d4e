//! Request and message builders and small clients: profiles (create, import, full listings),
//! conversations (bindings, create/get/list, events), and the forms a secret could leak in.
use profile_registry::pb;
use profile_registry::pb::conversation_service_client::ConversationServiceClient;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use tonic::transport::Channel;

/// A profile message with a model and an API key.
pub fn profile(name: &str, model: &str, api_key: Option<&str>) -> pb::Profile {
    pb::Profile {
        name: name.into(),
        llm: Some(pb::LlmConfig {
            model: model.into(),
            api_key: api_key.map(Into::into),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A plain delete of profile `name`: any revision, kept for an undelete.
pub fn delete_request(name: &str) -> pb::DeleteProfileRequest {
    pb::DeleteProfileRequest {
        name: name.into(),
        expected_revision: None,
        allow_missing: false,
        force: false,
        purge: false,
    }
}

/// An UpdateProfile of `profile` that must find it at `expected_revision`.
pub fn update_request(profile: pb::Profile, expected_revision: i64) -> pb::UpdateProfileRequest {
    pb::UpdateProfileRequest {
        profile: Some(profile),
        allow_missing: false,
        expected_revision: Some(expected_revision),
    }
}

pub async fn create(client: &mut ProfileServiceClient<Channel>, p: pb::Profile) -> pb::Profile {
    client
        .create_profile(pb::CreateProfileRequest { profile: Some(p) })
        .await
        .expect("create succeeds")
        .into_inner()
}

/// Imports `count` generated profile files, 1,000 a call: `file(i)` gives the i-th (name, JSON).
pub async fn import_generated(
    client: &mut ProfileServiceClient<Channel>,
    count: usize,
    file: impl Fn(usize) -> (String, String),
) {
    for start in (0..count).step_by(1000) {
        let documents = (start..count.min(start + 1000))
            .map(|i| {
                let (name, json) = file(i);
                pb::ProfileDocument { name, json }
            })
            .collect();
        client
            .import_profiles(pb::ImportProfilesRequest {
                documents,
                ..Default::default()
            })
            .await
            .expect("import succeeds");
    }
}

/// Every profile with its revision, through pagination: the observable state of the store.
pub async fn full_listing(
    client: &mut ProfileServiceClient<Channel>,
) -> Vec<(String, i64, pb::LlmConfig)> {
    try_full_listing(client).await.expect("list succeeds")
}

/// [`full_listing`], or the first error.
pub async fn try_full_listing(
    client: &mut ProfileServiceClient<Channel>,
) -> Result<Vec<(String, i64, pb::LlmConfig)>, tonic::Status> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_profiles(pb::ListProfilesRequest {
                page_size: 1000,
                page_token: token.clone(),
            })
            .await?
            .into_inner();
        out.extend(
            page.profiles
                .into_iter()
                .map(|p| (p.name, p.revision, p.llm.unwrap_or_default())),
        );
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

/// A binding of an LLM usage to a profile by name.
pub fn bound(profile: &str) -> pb::LlmBinding {
    pb::LlmBinding {
        source: Some(pb::llm_binding::Source::Profile(profile.into())),
        resolved: None,
    }
}

/// A binding to an inline LLM configuration.
pub fn inline(model: &str, api_key: Option<&str>) -> pb::LlmBinding {
    pb::LlmBinding {
        source: Some(pb::llm_binding::Source::Inline(pb::LlmConfig {
            model: model.into(),
            api_key: api_key.map(Into::into),
            ..Default::default()
        })),
        resolved: None,
    }
}

/// The profile name a binding names, if it is bound to a profile.
pub fn bound_profile(b: &pb::LlmBinding) -> Option<&str> {
    match &b.source {
        Some(pb::llm_binding::Source::Profile(p)) => Some(p),
        _ => None,
    }
}

/// A conversation message whose "agent" LLM is `agent` (no id: the server generates one).
pub fn conversation(agent: pb::LlmBinding, title: &str) -> pb::Conversation {
    pb::Conversation {
        llms: [("agent".to_owned(), agent)].into(),
        title: title.into(),
        ..Default::default()
    }
}

pub async fn create_conversation(
    client: &mut ConversationServiceClient<Channel>,
    c: pb::Conversation,
) -> pb::Conversation {
    client
        .create_conversation(pb::CreateConversationRequest {
            conversation: Some(c),
        })
        .await
        .expect("create conversation succeeds")
        .into_inner()
}

pub async fn get_conversation(
    client: &mut ConversationServiceClient<Channel>,
    id: &str,
    resolve_llms: bool,
    reveal_secrets: bool,
) -> pb::Conversation {
    client
        .get_conversation(pb::GetConversationRequest {
            id: id.into(),
            resolve_llms,
            reveal_secrets,
        })
        .await
        .expect("get conversation succeeds")
        .into_inner()
}

/// Every conversation id a ListConversations filter yields, through pagination.
pub async fn conversation_ids(
    client: &mut ConversationServiceClient<Channel>,
    execution_status: pb::ExecutionStatus,
    profile: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_conversations(pb::ListConversationsRequest {
                page_size: 1000,
                page_token: token.clone(),
                execution_status: execution_status as i32,
                profile: profile.into(),
            })
            .await
            .expect("list conversations succeeds")
            .into_inner();
        out.extend(page.conversations.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// A JSON-ish value for event bodies and states.
pub fn sv(s: &str) -> prost_types::Value {
    prost_types::Value::from(s.to_owned())
}

/// An SDK-style event body: {"id", "kind": "MessageEvent", "source", "timestamp", "llm_message"}.
pub fn message_event(id: &str, source: &str, text: &str) -> pb::Event {
    let message = prost_types::Struct {
        fields: [
            ("role".to_owned(), sv(source)),
            (
                "content".to_owned(),
                prost_types::Value::from(vec![struct_value(prost_types::Struct {
                    fields: [
                        ("type".to_owned(), sv("text")),
                        ("text".to_owned(), sv(text)),
                    ]
                    .into(),
                })]),
            ),
        ]
        .into(),
    };
    pb::Event {
        body: Some(prost_types::Struct {
            fields: [
                ("id".to_owned(), sv(id)),
                ("kind".to_owned(), sv("MessageEvent")),
                ("source".to_owned(), sv(source)),
                ("timestamp".to_owned(), sv("2025-10-01T12:00:00.000001")),
                ("llm_message".to_owned(), struct_value(message)),
            ]
            .into(),
        }),
        ..Default::default()
    }
}

/// Every event of a conversation in seq order, through pagination.
pub async fn all_events(
    client: &mut ConversationServiceClient<Channel>,
    id: &str,
) -> Vec<pb::Event> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_events(pb::ListEventsRequest {
                conversation_id: id.into(),
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("list events succeeds")
            .into_inner();
        out.extend(page.events);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// A Struct as a Value.
pub fn struct_value(s: prost_types::Struct) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StructValue(s)),
    }
}

/// The forms a secret could leak in (raw, base64 std/url/url-nopad, hex lower/upper): none may
/// appear in a data dir, a log or an error.
pub fn secret_forms(secret: &str) -> Vec<(&'static str, Vec<u8>)> {
    use base64::Engine;
    let hex = profile_registry::hex(secret.as_bytes());
    vec![
        ("raw", secret.as_bytes().to_vec()),
        (
            "base64",
            base64::engine::general_purpose::STANDARD
                .encode(secret)
                .into_bytes(),
        ),
        (
            "base64url",
            base64::engine::general_purpose::URL_SAFE
                .encode(secret)
                .into_bytes(),
        ),
        (
            "base64url-nopad",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(secret)
                .into_bytes(),
        ),
        ("hex", hex.clone().into_bytes()),
        ("HEX", hex.to_uppercase().into_bytes()),
    ]
}
