//! profileregistry.v1.AdminService: whole-store operator actions (the backup stream).
use std::pin::Pin;

use futures::Stream;
use tonic::{Response, Status};

use crate::app::audit_secret_access;
use crate::auth::principal;
use crate::pb;
use crate::pb::admin_service_server::AdminService;
use crate::store::{RawRecord, Snapshot};

/// The record bytes a backup chunk carries at most (a larger single record goes alone).
const CHUNK_BYTES: usize = 1024 * 1024;

/// The version of the record encoding a backup stream carries.
pub const BACKUP_FORMAT_VERSION: i32 = 1;

/// The AdminService handlers.
pub type AdminApi = super::Api;

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

/// Splits a snapshot into chunks of about [`CHUNK_BYTES`], the header in the first.
fn chunks(snapshot: Snapshot) -> Vec<pb::BackupChunk> {
    let header = pb::BackupHeader {
        format_version: BACKUP_FORMAT_VERSION,
        next_seq: snapshot.next_seq,
        record_count: snapshot.records.len() as u64,
        snapshot_time: Some(std::time::SystemTime::now().into()),
    };
    let mut out = vec![pb::BackupChunk {
        header: Some(header),
        records: Vec::new(),
    }];
    let mut size = 0;
    for RawRecord { tree, key, value } in snapshot.records {
        let len = key.len() + value.len() + 16;
        if size + len > CHUNK_BYTES && out.last().is_some_and(|c| !c.records.is_empty()) {
            out.push(pb::BackupChunk::default());
            size = 0;
        }
        size += len;
        if let Some(last) = out.last_mut() {
            last.records.push(pb::BackupRecord {
                tree: tree.name().to_owned(),
                key,
                value,
            });
        }
    }
    out
}

rpcs! {
    impl AdminService for AdminApi {
        type BackupStream = ChunkStream;

        fn backup(self, req: pb::BackupRequest) -> ChunkStream {
            let who = principal(&req);
            // A backup carries every secret (sealed): audited as a secret access.
            audit_secret_access(&who, "back up every record", "*")?;
            let snapshot = self.store.snapshot().await?;
            tracing::info!(
                records = snapshot.records.len(),
                writers_blocked_ms = snapshot.blocked.as_secs_f64() * 1000.0,
                "backup snapshot taken"
            );
            let stream: ChunkStream =
                Box::pin(tokio_stream::iter(chunks(snapshot).into_iter().map(Ok)));
            Ok(Response::new(stream))
        }
    }
}
