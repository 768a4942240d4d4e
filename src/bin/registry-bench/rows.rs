//! What each row of the main server calls: one closure per row, from `(worker, n)` to one call.
use std::future::Future;
use std::sync::Arc;

use anyhow::ensure;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use profile_registry::pb;
use tonic_health::pb::HealthCheckRequest;

use crate::args::Args;
use crate::clients::Clients;
use crate::dataset::event;
use crate::load::pick;
use crate::raw;
use crate::report;
use crate::transfer::profile_name;

const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
const GET_PROFILE: &str = "/profileregistry.v1.ProfileService/GetProfile";
const UPDATE_PROFILE: &str = "/profileregistry.v1.ProfileService/UpdateProfile";

/// One row's call: `(worker, n)` to a future of one call.
pub type Call = Arc<dyn Fn(usize, u64) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

pub fn call<F, Fut>(f: F) -> Call
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    Arc::new(move |w, n| f(w, n).boxed())
}

/// A row of raw calls to `path`: `body` picks the encoded request of `(worker, n)`.
fn raw_call(
    clients: &Clients,
    path: &'static str,
    body: impl Fn(usize, u64) -> Bytes + Send + Sync + 'static,
) -> Call {
    let raw = clients.raw().clone();
    call(move |w, n| {
        let (raw, body) = (raw.clone(), body(w, n));
        async move { raw.call(w, path, body).await }
    })
}

/// The rows measured on the main server, in order.
pub fn server_calls(
    clients: &Clients,
    args: &Args,
    ids: Arc<Vec<String>>,
    bases: Arc<Vec<pb::LlmConfig>>,
    pages: Arc<Vec<String>>,
) -> Vec<(&'static str, Call)> {
    let profiles = args.profiles;
    let mut rows = Vec::new();
    // The rows compared with each other (Health/Check, GetProfile, UpdateProfile) send requests
    // encoded beforehand and do not decode the replies: the client's CPU per call stays well under
    // the server's, so on shared cores the rows measure the server.
    let check = raw::encoded(&HealthCheckRequest {
        service: String::new(),
    });
    rows.push((
        report::HEALTH,
        raw_call(clients, HEALTH_CHECK, move |_, _| check.clone()),
    ));
    let gets: Arc<Vec<Bytes>> = Arc::new(
        (0..profiles)
            .map(|i| {
                raw::encoded(&pb::GetProfileRequest {
                    name: profile_name(i),
                    reveal_secrets: false,
                    resolve_connection: false,
                    revision: None,
                })
            })
            .collect(),
    );
    rows.push((
        report::GET_PROFILE,
        raw_call(clients, GET_PROFILE, move |w, n| {
            gets[pick(w, n, gets.len())].clone()
        }),
    ));
    let cl = clients.clone();
    rows.push((
        report::LIST_PROFILES,
        call(move |w, n| {
            let mut p = cl.profiles(w);
            // A page from a random place: the tokens are the server's (keyed, so not made here).
            let page = pick(w, n, pages.len());
            let (start, page_token) = (page * 100, pages[page].clone());
            async move {
                let page = p
                    .list_profiles(pb::ListProfilesRequest {
                        page_size: 100,
                        page_token,
                    })
                    .await?
                    .into_inner();
                ensure!(
                    page.profiles.len() == 100.min(profiles - start),
                    "a short page"
                );
                Ok(())
            }
        }),
    ));
    let updated = bases.len();
    // Two versions of each profile a worker rewrites, sent in turn: every call is a real change of
    // about 1 KiB (an unchanged profile is not written).
    let updates: Arc<Vec<[Bytes; 2]>> = Arc::new(
        bases
            .iter()
            .enumerate()
            .map(|(i, base)| {
                [0.25, 0.75].map(|temperature| {
                    raw::encoded(&pb::UpdateProfileRequest {
                        profile: Some(pb::Profile {
                            name: profile_name(i),
                            llm: Some(pb::LlmConfig {
                                temperature: Some(temperature),
                                ..base.clone()
                            }),
                            ..Default::default()
                        }),
                        allow_missing: true,
                        expected_revision: None,
                    })
                })
            })
            .collect(),
    );
    rows.push((
        report::UPDATE_PROFILE,
        raw_call(clients, UPDATE_PROFILE, move |w, n| {
            updates[w % updates.len()][(n % 2) as usize].clone()
        }),
    ));
    // A history read: the kept revisions of a profile the UpdateProfile row (measured before it)
    // has just rewritten many times.
    let cl = clients.clone();
    rows.push((
        report::LIST_REVISIONS,
        call(move |w, n| {
            let mut p = cl.profiles(w);
            let name = profile_name(pick(w, n, updated));
            async move {
                let page = p
                    .list_profile_revisions(pb::ListProfileRevisionsRequest {
                        name,
                        page_size: 10,
                        page_token: String::new(),
                    })
                    .await?
                    .into_inner();
                ensure!(!page.revisions.is_empty(), "no kept revision");
                Ok(())
            }
        }),
    ));
    let (cl, ids2) = (clients.clone(), Arc::clone(&ids));
    rows.push((
        report::GET_CONVERSATION,
        call(move |w, n| {
            let mut cv = cl.conversations(w);
            let id = ids2[pick(w, n, ids2.len())].clone();
            async move {
                let conv = cv
                    .get_conversation(pb::GetConversationRequest {
                        id,
                        resolve_llms: true,
                        reveal_secrets: false,
                    })
                    .await?
                    .into_inner();
                ensure!(
                    conv.llms.values().all(|b| b.resolved.is_some()),
                    "an LLM was not resolved"
                );
                Ok(())
            }
        }),
    ));
    for (row, batch) in [(report::APPEND_1, 1), (report::APPEND_100, 100)] {
        let (cl, ids2) = (clients.clone(), Arc::clone(&ids));
        rows.push((
            row,
            call(move |w, n| {
                let mut cv = cl.conversations(w);
                // Worker w appends to conversation w: 64 workers over 64 conversations.
                let conversation_id = ids2[w % ids2.len()].clone();
                let events = (0..batch).map(|e| event(w, n as usize + e)).collect();
                async move {
                    cv.append_events(pb::AppendEventsRequest {
                        conversation_id,
                        events,
                        expected_next_seq: None,
                    })
                    .await?;
                    Ok(())
                }
            }),
        ));
    }
    let (cl, events) = (clients.clone(), args.events);
    rows.push((
        report::LIST_EVENTS,
        call(move |w, n| {
            let mut cv = cl.conversations(w);
            // Conversations past the first 64 keep their loaded events (the appends go to those).
            let i = ids.len().min(64) + pick(w, n, ids.len().saturating_sub(64));
            let conversation_id = ids[i.min(ids.len() - 1)].clone();
            async move {
                let page = cv
                    .list_events(pb::ListEventsRequest {
                        conversation_id,
                        page_size: 100,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                ensure!(!page.events.is_empty() || events == 0, "an empty page");
                Ok(())
            }
        }),
    ));
    rows
}
