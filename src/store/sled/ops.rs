//! One write of a transaction (an [`Op`]), and the transaction that applies a list of them
//! atomically across every tree.
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::sync::atomic::Ordering;

use super::SledStore;
use crate::store::records::TreeId;
use crate::store::StoreError;

/// One write of a transaction.
pub(super) enum Op {
    Put(TreeId, Vec<u8>, Vec<u8>),
    Del(TreeId, Vec<u8>),
    /// A new entry of the profile change log, by its seq (see `changelog.rs`).
    Log(u64, Vec<u8>),
    /// New bytes for an entry the log holds (it carries its record now, or its record sealed with
    /// the current secret key).
    Relog(u64, Vec<u8>),
    /// The removal of an entry of the profile change log.
    Unlog(u64),
}

impl Op {
    /// About how many bytes the op writes.
    pub(super) fn size(&self) -> usize {
        match self {
            Self::Put(_, k, v) => k.len() + v.len(),
            Self::Del(_, k) => k.len(),
            Self::Log(_, v) | Self::Relog(_, v) => 8 + v.len(),
            Self::Unlog(_) => 8,
        }
    }
}

impl SledStore {
    /// Applies `ops` atomically across every tree. While it changes profiles, their ready
    /// responses are not trusted (see `decoded::Writes`).
    pub(super) fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let profiles: Vec<&[u8]> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Put(TreeId::Profiles, k, _) | Op::Del(TreeId::Profiles, k) => {
                    Some(k.as_slice())
                }
                _ => None,
            })
            .collect();
        let _writing = (!profiles.is_empty()).then(|| self.decoded.writing(Some(&profiles)));
        let (added, removed) = ops.iter().fold((0, 0), |(a, r), op| match op {
            Op::Log(..) => (a + 1, r),
            Op::Unlog(_) => (a, r + 1),
            _ => (a, r),
        });
        // A pruning reading the log meanwhile sees the count odd, or changed (see
        // `prune_changes`).
        if removed > 0 {
            self.unlogging.fetch_add(1, Ordering::SeqCst);
        }
        let applied = self.transact(ops);
        if applied.is_ok() {
            self.count_logged(added, removed);
        }
        if removed > 0 {
            self.unlogging.fetch_add(1, Ordering::SeqCst);
        }
        applied
    }

    fn transact(&self, ops: &[Op]) -> Result<(), StoreError> {
        (
            &self.profiles,
            &self.conversations,
            &self.bindings,
            &self.events,
            &self.documents,
            &self.history,
            &self.deleted,
            &self.change_log,
        )
            .transaction(|(p, c, b, e, d, h, x, l)| {
                for op in ops {
                    let (id, k) = match op {
                        Op::Put(id, k, _) | Op::Del(id, k) => (id, k.as_slice()),
                        Op::Log(seq, v) | Op::Relog(seq, v) => {
                            l.insert(&seq.to_be_bytes()[..], v.as_slice())?;
                            continue;
                        }
                        Op::Unlog(seq) => {
                            l.remove(&seq.to_be_bytes()[..])?;
                            continue;
                        }
                    };
                    let t = match id {
                        TreeId::Profiles => p,
                        TreeId::Conversations => c,
                        TreeId::Bindings => b,
                        TreeId::Events => e,
                        TreeId::Documents => d,
                        TreeId::History => h,
                        TreeId::Deleted => x,
                    };
                    if let Op::Put(_, _, v) = op {
                        t.insert(k, v.as_slice())?;
                    } else {
                        t.remove(k)?;
                    }
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => StoreError::from(e),
                TransactionError::Abort(()) => StoreError::Storage("transaction aborted".into()),
            })
    }
}
