//! The stream of WatchProfiles: the snapshot (send_initial) or the kept changes after a seq
//! (start_after_seq), then every later change once, with bookmarks on an idle stream.
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{broadcast, mpsc, watch};
use tonic::Status;

use super::convert::profile_to_pb;
use crate::domain::{Profile, ProfileName};
use crate::pb;
use crate::pb::profile_event::Type;
use crate::store::{ProfileChange, ProfileWatch};

/// How long a stream stays quiet before it gets a bookmark (with send_bookmarks).
const BOOKMARK_AFTER: Duration = Duration::from_secs(2);

pub(super) type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ProfileEvent, Status>> + Send>>;

fn event(
    kind: Type,
    name: String,
    profile: Option<Profile>,
    (revision, seq): (i64, u64),
    initial: bool,
) -> pb::ProfileEvent {
    pb::ProfileEvent {
        r#type: kind as i32,
        name,
        profile: profile.map(|p| profile_to_pb(p.masked())),
        revision,
        initial,
        seq: i64::try_from(seq).unwrap_or(i64::MAX),
    }
}

/// The event of a change (none for `Missed`, which ends the stream instead).
fn change_event(change: ProfileChange) -> Option<pb::ProfileEvent> {
    match change {
        ProfileChange::Put { profile, seq } => {
            let p = Arc::unwrap_or_clone(profile);
            let (name, revision) = (p.name.to_string(), p.revision);
            Some(event(Type::Put, name, Some(p), (revision, seq), false))
        }
        ProfileChange::Delete {
            name,
            revision,
            seq,
        } => Some(event(
            Type::Delete,
            name.into(),
            None,
            (revision, seq),
            false,
        )),
        ProfileChange::Missed { .. } => None,
    }
}

/// Why a watch ends early, as the client sees it.
fn cut_off(change: &Result<ProfileChange, broadcast::error::RecvError>) -> Option<Status> {
    match change {
        Err(broadcast::error::RecvError::Lagged(n)) => Some(Status::resource_exhausted(format!(
            "this watcher fell {n} changes behind and was cut off; watch again with \
             start_after_seq (the last seq received) or send_initial"
        ))),
        Err(broadcast::error::RecvError::Closed) => Some(Status::unavailable(
            "the server stopped publishing changes; watch again",
        )),
        Ok(ProfileChange::Missed { after }) => Some(Status::aborted(format!(
            "this server missed profile changes after change {after} (it was cut off from the \
             database for longer than the change log is kept); watch again with send_initial"
        ))),
        Ok(_) => None,
    }
}

/// Sends the snapshot or the replay, then every later change once: a change already sent (its
/// seq below `covered`, or at or below the snapshot's record for that name) is skipped, so there
/// is no gap and no step back. A watcher that falls too far behind is cut off with
/// RESOURCE_EXHAUSTED; one whose server missed changes (see [`ProfileChange::Missed`]) with
/// ABORTED. With `bookmarks`, a quiet stream gets a BOOKMARK with the seq every change up to which
/// it has been sent.
pub(super) async fn forward_changes(
    watch: ProfileWatch,
    bookmarks: bool,
    mut shutdown: watch::Receiver<bool>,
    tx: mpsc::Sender<Result<pb::ProfileEvent, Status>>,
) {
    let ProfileWatch {
        snapshot,
        replay,
        covered,
        start,
        mut changes,
    } = watch;
    let mut seen: HashMap<ProfileName, u64> = HashMap::with_capacity(snapshot.len());
    let mut newest = 0;
    for (seq, p) in snapshot {
        newest = newest.max(seq);
        seen.insert(p.name.clone(), seq);
        let (name, revision) = (p.name.to_string(), p.revision);
        let e = event(Type::Put, name, Some(p), (revision, seq), true);
        if tx.send(Ok(e)).await.is_err() {
            return;
        }
    }
    // Every change up to `sent` has been sent (or came before the watch began).
    let mut sent = start;
    for change in replay {
        sent = sent.max(change.seq());
        if let Some(e) = change_event(change) {
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
    }
    loop {
        let change = tokio::select! {
            r = changes.recv() => r,
            _ = shutdown.changed() => {
                return super::tell_shutdown(&tx, "watch again elsewhere or later").await;
            }
            () = tx.closed() => return,
            // Not before a first change: seq 0 would mean "live only" to a resume.
            () = tokio::time::sleep(BOOKMARK_AFTER), if bookmarks && sent > 0 => {
                let mark = pb::ProfileEvent {
                    r#type: Type::Bookmark as i32,
                    seq: i64::try_from(sent).unwrap_or(i64::MAX),
                    ..pb::ProfileEvent::default()
                };
                if tx.send(Ok(mark)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if let Some(status) = cut_off(&change) {
            let _ = tx.send(Err(status)).await;
            return;
        }
        let Ok(change) = change else { return };
        let seq = change.seq();
        let name = match &change {
            ProfileChange::Put { profile, .. } => &profile.name,
            ProfileChange::Delete { name, .. } => name,
            ProfileChange::Missed { .. } => return,
        };
        let already = seq < covered || (seq <= newest && seen.get(name).is_some_and(|s| *s >= seq));
        sent = sent.max(seq);
        if already {
            continue;
        }
        if let Some(e) = change_event(change) {
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
    }
}
