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
