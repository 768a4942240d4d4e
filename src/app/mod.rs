//! The use-case floor, between the wire (`grpc`, `cli`) and the records (`store`): import and
//! export of SDK files, conversation updates and LLM switching, secret reveals with their audit
//! line, and every rule that needs the store. It knows nothing of protobuf; its refusals are
//! the same `Status` errors the store's map to (`crate::error`).
pub mod conversations;
pub mod documents;
pub mod transfer;

use tonic::Status;

/// Limits enforced before any work is done; each configurable.
#[derive(Clone)]
pub struct Limits {
    /// A profile's SDK JSON, in bytes.
    pub max_profile_bytes: usize,
    /// The largest page a list may ask for.
    pub max_page_size: usize,
    /// The page size when a list asks for 0.
    pub default_page_size: usize,
    /// An event's JSON, in bytes.
    pub max_event_bytes: usize,
    /// Tags per conversation.
    pub max_tags: usize,
    /// The key that authenticates page tokens (the store's, see `Store::page_key`).
    pub page_key: [u8; 32],
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_profile_bytes: 64 * 1024,
            max_page_size: 1000,
            default_page_size: 100,
            max_event_bytes: 1024 * 1024,
            max_tags: 64,
            page_key: random_key(),
        }
    }
}

/// Every limit, never the page key.
impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Taken apart whole, so that a new field is a compile error here until it is shown or,
        // like the key, left out on purpose.
        let Self {
            max_profile_bytes,
            max_page_size,
            default_page_size,
            max_event_bytes,
            max_tags,
            page_key: _,
        } = self;
        f.debug_struct("Limits")
            .field("max_profile_bytes", max_profile_bytes)
            .field("max_page_size", max_page_size)
            .field("default_page_size", default_page_size)
            .field("max_event_bytes", max_event_bytes)
            .field("max_tags", max_tags)
            .finish_non_exhaustive()
    }
}

/// A fresh random key (for a process that mints and reads its own page tokens).
fn random_key() -> [u8; 32] {
    use aes_gcm::aead::rand_core::RngCore;
    let mut key = [0u8; 32];
    aes_gcm::aead::OsRng.fill_bytes(&mut key);
    key
}

impl Limits {
    /// The page size to use for a request's `page_size`.
    pub fn page_size(&self, requested: i32) -> Result<usize, Status> {
        match usize::try_from(requested) {
            Err(_) => Err(crate::error::invalid_field(
                "page_size",
                "must not be negative",
            )),
            Ok(0) => Ok(self.default_page_size),
            Ok(n) if n > self.max_page_size => Err(crate::error::invalid_field(
                "page_size",
                &format!("must be at most {}", self.max_page_size),
            )),
            Ok(n) => Ok(n),
        }
    }
}

/// An action that exposes secret values: PERMISSION_DENIED without the `secrets` role, and one
/// audit line (who, what, which resource; never a value) when allowed.
pub fn audit_secret_access(
    who: &crate::auth::Principal,
    action: &str,
    resource: &str,
) -> Result<(), tonic::Status> {
    who.require(crate::auth::Role::Secrets, action)?;
    tracing::info!(target: "audit", who = %who.name, action, resource, "secret access");
    Ok(())
}
