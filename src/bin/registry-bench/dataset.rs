//! The data set beyond the profile files, loaded through the API (conversations and their events),
//! and the reads that prepare the rows on a loaded server (warm-up, UpdateProfile's bases, page
//! tokens).
use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use profile_registry::pb;
use serde_json::json;

use crate::args::{Args, CONCURRENCY};
use crate::clients::Clients;
use crate::transfer::profile_name;

/// An event body as the SDK writes a MessageEvent (about 400 bytes).
pub fn event(conversation: usize, n: usize) -> pb::Event {
    let body = json!({
        "kind": "MessageEvent",
        "source": if n % 2 == 0 { "user" } else { "agent" },
        "timestamp": "2025-10-01T12:00:00.000001",
        "llm_message": {
            "role": if n % 2 == 0 { "user" } else { "assistant" },
            "content": [{"type": "text", "text": format!(
                "Message {n} of conversation {conversation}: please look at the failing test in \
                 src/lib.rs and explain why the assertion on line 42 does not hold any more.")}],
        },
        "activated_skills": [],
        "extended_content": [],
    });
    let serde_json::Value::Object(map) = body else {
        unreachable!("a JSON object literal")
    };
    pb::Event {
        body: Some(profile_registry::grpc::convert::map_to_struct(&map)),
        ..Default::default()
    }
}

/// Creates `args.conversations` conversations bound to profiles, each with `args.events` events.
pub async fn load_conversations(clients: &Clients, args: &Args) -> anyhow::Result<Vec<String>> {
    let (n, profiles, events) = (args.conversations.max(1), args.profiles, args.events);
    futures::stream::iter(0..n)
        .map(|i| {
            let mut client = clients.conversations(i);
            async move {
                let conversation = pb::Conversation {
                    llms: [(
                        "agent".to_owned(),
                        pb::LlmBinding {
                            source: Some(pb::llm_binding::Source::Profile(profile_name(
                                i % profiles,
                            ))),
                            resolved: None,
                        },
                    )]
                    .into(),
                    title: format!("bench conversation {i}"),
                    ..Default::default()
                };
                let id = client
                    .create_conversation(pb::CreateConversationRequest {
                        conversation: Some(conversation),
                    })
                    .await?
                    .into_inner()
                    .id;
                let all: Vec<usize> = (0..events).collect();
                for chunk in all.chunks(100) {
                    client
                        .append_events(pb::AppendEventsRequest {
                            conversation_id: id.clone(),
                            events: chunk.iter().map(|&e| event(i, e)).collect(),
                            expected_next_seq: None,
                        })
                        .await?;
                }
                Ok::<_, anyhow::Error>(id)
            }
        })
        .buffered(16)
        .try_collect()
        .await
}

/// The LLM configurations of the profiles UpdateProfile rewrites (one per worker), as stored.
pub async fn update_bases(clients: &Clients, args: &Args) -> anyhow::Result<Vec<pb::LlmConfig>> {
    let mut out = Vec::new();
    for w in 0..CONCURRENCY[1].min(args.profiles) {
        let p = clients
            .profiles(0)
            .get_profile(pb::GetProfileRequest {
                name: profile_name(w),
                reveal_secrets: false,
                resolve_connection: false,
                revision: None,
            })
            .await?
            .into_inner();
        out.push(p.llm.context("a profile without llm")?);
    }
    Ok(out)
}

/// Reads every profile once before the rows, as a server in steady use has: the same for both stores
/// (sled's page cache, the PostgreSQL store's profile cache).
pub async fn warm_up(clients: &Clients, profiles: usize) -> anyhow::Result<()> {
    futures::stream::iter(0..profiles)
        .map(|i| {
            let mut p = clients.profiles(i);
            async move {
                p.get_profile(pb::GetProfileRequest {
                    name: profile_name(i),
                    reveal_secrets: false,
                    resolve_connection: false,
                    revision: None,
                })
                .await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<()>()
        .await
}

/// The page token of each full page of 100 profiles, the first one empty.
pub async fn page_tokens(clients: &Clients) -> anyhow::Result<Vec<String>> {
    let mut p = clients.profiles(0);
    let mut tokens = vec![String::new()];
    loop {
        let page = p
            .list_profiles(pb::ListProfilesRequest {
                page_size: 100,
                page_token: tokens.last().cloned().unwrap_or_default(),
            })
            .await?
            .into_inner();
        if page.next_page_token.is_empty() || page.profiles.len() < 100 {
            break;
        }
        tokens.push(page.next_page_token);
    }
    // The last token may lead to a short or empty page: keep only tokens of full pages.
    if tokens.len() > 1 {
        tokens.pop();
    }
    Ok(tokens)
}
