//! Storage: the [`Store`] the use cases call, what both backends share (rules, codec, records,
//! keys), and the two wings, `sled/` and `postgres/`.
mod any;
pub mod codec;
pub mod crypto;
pub(crate) mod documents;
pub mod fault;
pub mod postgres;
pub mod records;
pub(crate) mod requests;
mod rules;
pub mod sled;
mod types;

pub use self::any::{Location, Store};
pub use self::codec::sealed_key_ids;
pub use self::documents::DocPut;
pub use self::records::{place as place_of, RawRecord, RotationReport, Snapshot, TreeId};
pub use self::sled::{CheckReport, OpenError, SledStore, StoreOptions};
pub use self::types::*;
pub use crate::domain::{ConflictPolicy, ImportOutcome};

/// The memory the ready responses may take (the encoded answer of a plain GetProfile, about the
/// size of the stored record; on sled with its name): enough for every profile of a store of
/// 10,000 profiles of about 1 KiB, so that every plain read of such a store is answered without a
/// decode. On sled a spent budget starts the map again; on PostgreSQL a cached profile past it
/// keeps no reply (its reads go to the handler, which answers from the cache).
pub(crate) const READY_BYTES: usize = 16 << 20;
