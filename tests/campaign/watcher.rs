//! A WatchProfiles client that checks what it is told: within one stream, each profile's changes
//! arrive once and in order (every PUT is the previous revision + 1, a DELETE carries the last
//! revision), and at the end its picture of the store equals the store.
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use profile_registry::pb;
use profile_registry::pb::profile_event::Type;
use profile_registry::pb::profile_service_client::ProfileServiceClient;

use crate::client::channel;
use crate::Shared;

/// name -> revision, of the profiles a stream has shown as present.
pub type Picture = BTreeMap<String, i64>;

/// Watches until told to stop and the picture of the last stream equals the store; returns how many
/// events it checked.
pub async fn run(shared: Arc<Shared>) -> u64 {
    let mut checked = 0;
    let mut streams = 0;
    loop {
        let addr = *shared.addr.lock().unwrap();
        let mut client = ProfileServiceClient::new(channel(addr));
        let stream = client
            .watch_profiles(pb::WatchProfilesRequest {
                send_initial: true,
                ..Default::default()
            })
            .await;
        let Ok(stream) = stream else {
            if shared.finished.load(Ordering::SeqCst) {
                shared.violation("watch: could not watch the final server".into());
                return checked;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            continue;
        };
        streams += 1;
        let mut stream = stream.into_inner();
        // name -> (revision, present)
        let mut seen: BTreeMap<String, (i64, bool)> = BTreeMap::new();
        loop {
            // Streaming::message is cancel-safe: a timeout only means "nothing yet".
            let next = match tokio::time::timeout(Duration::from_millis(200), stream.message())
                .await
            {
                Ok(m) => m,
                Err(_) if !shared.finished.load(Ordering::SeqCst) => continue,
                Err(_) => {
                    // Quiet, and the clients are done: compare the picture with the store.
                    let picture: Picture = seen
                        .iter()
                        .filter(|(_, (_, present))| *present)
                        .map(|(n, (r, _))| (n.clone(), *r))
                        .collect();
                    match listing(&mut client).await {
                        Some(stored) if stored == picture => {
                            shared.record(format!(
                                "watch: {streams} streams, {checked} events, final picture equals the store"
                            ));
                            return checked;
                        }
                        Some(stored) if shared.deadline_passed() => {
                            shared.violation(format!(
                                "watch: the stream's picture differs from the store\n  watch {picture:?}\n  store {stored:?}"
                            ));
                            return checked;
                        }
                        _ => continue,
                    }
                }
            };
            let event = match next {
                Ok(Some(e)) => e,
                // The server went away (or cut the stream): watch again.
                Ok(None) | Err(_) => break,
            };
            checked += 1;
            let kind = Type::try_from(event.r#type).unwrap_or(Type::Unspecified);
            let previous = seen.get(&event.name).copied();
            match (kind, previous) {
                (Type::Put, Some((rev, true))) if event.revision != rev + 1 => {
                    shared.violation(format!(
                        "watch: {} went from revision {rev} to {} in one stream",
                        event.name, event.revision
                    ));
                }
                (Type::Put, Some((_, true))) if event.initial => {
                    shared.violation(format!("watch: {} sent twice in the snapshot", event.name));
                }
                (Type::Delete, Some((rev, true))) if event.revision != rev => {
                    shared.violation(format!(
                        "watch: {} deleted at revision {} after revision {rev}",
                        event.name, event.revision
                    ));
                }
                (Type::Delete, Some((_, false))) => {
                    shared.violation(format!("watch: {} deleted twice", event.name));
                }
                _ => {}
            }
            seen.insert(event.name.clone(), (event.revision, kind == Type::Put));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every stored profile's revision, or None when the server could not be read.
async fn listing(client: &mut ProfileServiceClient<tonic::transport::Channel>) -> Option<Picture> {
    let all = crate::helpers::try_full_listing(client).await.ok()?;
    Some(
        all.into_iter()
            .map(|(name, revision, _)| (name, revision))
            .collect(),
    )
}
