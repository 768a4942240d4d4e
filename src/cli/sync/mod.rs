//! `profile-registry sync DIR`: keeps an SDK profiles folder equal to the registry while it runs,
//! so that a runtime that only reads files (the SDK's `LLMProfileStore`) follows the registry.
//!
//! One session: subscribe to WatchProfiles, then export every profile (the snapshot), then apply
//! each batch of changes as it arrives. Subscribing before the snapshot leaves no gap: a change
//! made while the snapshot is read arrives on the stream too. The snapshot is an export rather
//! than the watch's own initial events because watch events carry masked profiles, while the files
//! must be exactly what `export` writes in the chosen secrets mode.
//!
//! Files are written as `export` writes them (the SDK's `.profiles.lock`, a temp file, a rename);
//! one that already holds its profile is left untouched. The sync deletes only files it wrote
//! itself: their names are kept in the folder's manifest [`MANIFEST`], saved before a file is put
//! in place and after one is deleted, so a crash never leaves a written file unowned.
//!
//! When the stream ends (a restart, a rolling update, a lagging watch told to watch again), the
//! session starts over after a backoff; each state change is logged once. A new session resumes
//! the watch after the last change applied (`start_after_seq`; bookmarks keep that seq current
//! on a quiet stream), so the folder is not read again; only when the server no longer keeps
//! that change (OUT_OF_RANGE) does it export everything again.
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::path::Path;
use std::time::Duration;

use futures::{FutureExt, StreamExt};

use super::connection::connect;
use super::target::{Target, MAX_RESPONSE_BYTES};
use super::{fernet_key_from_env, interrupted, Usage};
use crate::config::SyncArgs;
use crate::domain::{ProfileName, SecretsMode};
use crate::openhands::folder::profiles_and_home;
use crate::openhands::secrets::FernetKey;
use crate::pb;
use crate::pb::profile_service_client::ProfileServiceClient;

/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) mod mirror;
mod outcome;

use mirror::Mirror;
pub use mirror::{MANIFEST, RUN_LOCK};
use outcome::{Client, Ended};

/// Runs `sync`: once (`--once`), or until SIGTERM or Ctrl-C (then exit 0).
pub async fn run_sync(args: SyncArgs) -> anyhow::Result<bool> {
    let (home, dir) = profiles_and_home(args.dir.as_ref(), args.home.as_ref());
    let key = fernet_key_from_env(&args.fernet_key_env);
    if args.secrets == SecretsMode::Encrypted && key.is_none() {
        return Err(anyhow::Error::new(Usage(format!(
            "--secrets encrypted needs the SDK's key: set ${} (--fernet-key-env)",
            args.fernet_key_env
        ))));
    }
    let mut only = BTreeSet::new();
    for name in &args.names {
        let parsed = ProfileName::parse(name, "--name")
            .map_err(|v| anyhow::Error::new(Usage(v.to_string())))?;
        only.insert(parsed.to_string());
    }
    let kinds_key = key.clone();
    let mut mirror = Mirror::new(dir, args.secrets, key, only);
    if args.once {
        let mut client = client(&args).await?;
        let done = mirror.resync(&mut client).await.map_err(|e| e.error)?;
        println!("{}: {}", mirror.dir.display(), done.summary());
        if let Some(home) = &home {
            let mut target = Target::Remote(connect(&args.client).await?);
            let done =
                super::home::mirror(&mut target, home, args.secrets, kinds_key.as_ref()).await?;
            println!("{}: {}", home.display(), done.summary());
        }
        return Ok(true);
    }
    let stop = interrupted();
    tokio::pin!(stop);
    let kinds = async {
        match &home {
            Some(home) => follow_kinds(&args, home, kinds_key.as_ref()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = &mut stop => {
            tracing::info!(dir = %mirror.dir.display(), "sync stopped");
            Ok(true)
        }
        ended = follow(&args, &mut mirror) => ended,
        ended = kinds => ended,
    }
}

/// With `--home`: compares the connections, meta-profiles and agent profiles with the registry
/// every `--poll-interval` and puts the differences in place; logs each change of state once.
async fn follow_kinds(
    args: &SyncArgs,
    home: &Path,
    key: Option<&FernetKey>,
) -> anyhow::Result<bool> {
    let mut target: Option<Target> = None;
    let mut last_error: Option<String> = None;
    let mut tick = tokio::time::interval(args.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = async {
            if target.is_none() {
                target = Some(Target::Remote(connect(&args.client).await?));
            }
            let t = target.as_mut().expect("connected above");
            super::home::mirror(t, home, args.secrets, key).await
        }
        .await;
        match result {
            Ok(done) => {
                if last_error.take().is_some() || done.changed() {
                    tracing::info!(home = %home.display(), "synced: {}", done.summary());
                }
            }
            Err(e) => {
                target = None;
                let message = format!("{e:#}");
                if last_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(home = %home.display(), "sync of connections, meta-profiles and agent profiles out of step: {message}; trying again");
                    last_error = Some(message);
                }
            }
        }
    }
}

async fn client(args: &SyncArgs) -> anyhow::Result<Client> {
    let channel = connect(&args.client).await?;
    Ok(ProfileServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES))
}

/// Sessions, one after another, until an error that retrying cannot mend comes before the first
/// sync in step. Each session's end is logged when it differs from the last one logged; the next
/// session waits a backoff, except once right after a session in step that the server told to
/// watch again.
async fn follow(args: &SyncArgs, mirror: &mut Mirror) -> anyhow::Result<bool> {
    let mut backoff = MIN_BACKOFF;
    let mut last_logged: Option<String> = None;
    let mut ever_in_step = false;
    let mut quick_retry_used = false;
    let mut applied_through = None;
    loop {
        let mut in_step = false;
        let Err(ended) = session(args, mirror, &mut applied_through, &mut || in_step = true).await;
        if in_step {
            ever_in_step = true;
            backoff = MIN_BACKOFF;
            last_logged = None;
        }
        if ended.fatal && !ever_in_step {
            return Err(ended.error);
        }
        let message = format!("{:#}", ended.error);
        if last_logged.as_deref() != Some(message.as_str()) {
            tracing::warn!(
                server = %args.client.server,
                "sync out of step: {message}; trying again (every {} s at most)",
                MAX_BACKOFF.as_secs()
            );
            last_logged = Some(message);
        }
        let quick = ended.watch_again && in_step && !quick_retry_used;
        quick_retry_used = quick;
        if !quick {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// One session: resume the watch after `applied_through`, or subscribe and export everything (the
/// snapshot); then follow, until it ends (it never ends well: the stream is endless). `in_step` is
/// called once the folder is in step; `applied_through` follows each batch applied.
async fn session(
    args: &SyncArgs,
    mirror: &mut Mirror,
    applied_through: &mut Option<i64>,
    in_step: &mut dyn FnMut(),
) -> Result<Infallible, Ended> {
    let mut client = client(args).await?;
    let resumed = match *applied_through {
        Some(seq) => {
            let resume = pb::WatchProfilesRequest {
                start_after_seq: seq,
                send_bookmarks: true,
                ..Default::default()
            };
            match client.watch_profiles(resume).await {
                Ok(stream) => {
                    tracing::info!(server = %args.client.server, dir = %mirror.dir.display(), "sync in step: resumed after change {seq}");
                    Some(stream.into_inner())
                }
                Err(status) if status.code() == tonic::Code::OutOfRange => {
                    tracing::info!(
                        "cannot resume after change {seq} ({}): exporting every profile again",
                        status.message()
                    );
                    *applied_through = None;
                    None
                }
                Err(status) => return Err(status.into()),
            }
        }
        None => None,
    };
    let mut stream = match resumed {
        Some(stream) => stream,
        None => {
            let watch = pb::WatchProfilesRequest {
                send_bookmarks: true,
                ..Default::default()
            };
            let stream = client.watch_profiles(watch).await?.into_inner();
            let done = mirror.resync(&mut client).await?;
            tracing::info!(
                server = %args.client.server,
                dir = %mirror.dir.display(),
                "sync in step: {}",
                done.summary()
            );
            stream
        }
    };
    in_step();
    loop {
        let Some(first) = stream.next().await else {
            return Err(anyhow::anyhow!("the server ended the stream").into());
        };
        // Whatever else has already arrived goes in the same batch: one lock, one sync.
        let mut batch = vec![first?];
        while let Some(Some(next)) = stream.next().now_or_never() {
            batch.push(next?);
        }
        let newest = batch.iter().map(|e| e.seq).max().unwrap_or(0);
        batch.retain(|e| e.r#type() != pb::profile_event::Type::Bookmark);
        let done = mirror.apply(&mut client, batch).await?;
        if done.changed() {
            tracing::info!(dir = %mirror.dir.display(), "synced: {}", done.summary());
        }
        if newest > 0 {
            *applied_through = Some(newest);
        }
    }
}
