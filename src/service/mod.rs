//! Thin gRPC handlers, one file per proto service: validate, call the store, convert back.
pub mod admin;
pub mod conversation;
pub mod convert;
pub mod page_token;
pub mod profile;
pub mod transfer;

use std::future::Future;
use std::time::Instant;

use tonic::{Code, Status};
use tracing::Instrument;

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
        f.debug_struct("Limits")
            .field("max_profile_bytes", &self.max_profile_bytes)
            .field("max_page_size", &self.max_page_size)
            .field("default_page_size", &self.default_page_size)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("max_tags", &self.max_tags)
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

/// Runs one RPC inside a span and logs one line with its method, resource, status code and latency
/// (successful reads at debug level).
pub(crate) async fn observe<T>(
    method: &'static str,
    resource: &str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let span = tracing::info_span!("rpc", method, resource);
    let started = Instant::now();
    let result = call.instrument(span).await;
    let code = match &result {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    };
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    crate::metrics::record_call(
        service_of(method),
        method,
        code,
        started.elapsed().as_secs_f64(),
    );
    match code {
        Code::Internal | Code::Unknown | Code::DataLoss => {
            tracing::error!(method, resource, code = ?code, latency_us, "rpc");
        }
        // Successful reads are the hot path: logging each at info cost about a tenth of the
        // server's CPU per call. Writes, refusals and failures stay at info.
        Code::Ok if is_read(method) => {
            tracing::debug!(method, resource, code = ?code, latency_us, "rpc");
        }
        _ => tracing::info!(method, resource, code = ?code, latency_us, "rpc"),
    }
    result
}

/// Whether a method only reads (exports are logged as secret accesses where they reveal any).
fn is_read(method: &str) -> bool {
    ["Get", "List", "Validate", "Watch"]
        .iter()
        .any(|p| method.starts_with(p))
}

/// The Fernet key of a request; `None` when empty.
pub(crate) fn parse_fernet_key(
    raw: &str,
) -> Result<Option<crate::openhands::secrets::FernetKey>, tonic::Status> {
    if raw.is_empty() {
        return Ok(None);
    }
    crate::openhands::secrets::FernetKey::from_base64(raw)
        .map(Some)
        .map_err(|why| crate::error::invalid_field("fernet_key", why))
}

/// The secrets form of an export request.
pub(crate) fn secrets_out<'a>(
    raw: i32,
    key: Option<&'a crate::openhands::secrets::FernetKey>,
) -> Result<crate::openhands::profile::SecretsOut<'a>, tonic::Status> {
    use crate::openhands::profile::SecretsOut;
    use crate::pb::export_profiles_request::Secrets;
    match (Secrets::try_from(raw), key) {
        (Ok(Secrets::Unspecified | Secrets::Redacted), _) => Ok(SecretsOut::Redacted),
        (Ok(Secrets::Plaintext), _) => Ok(SecretsOut::Plaintext),
        (Ok(Secrets::Encrypted), Some(k)) => Ok(SecretsOut::Encrypted(k)),
        (Ok(Secrets::Encrypted), None) => Err(crate::error::invalid_field(
            "fernet_key",
            "is required when secrets is ENCRYPTED",
        )),
        (Err(_), _) => Err(crate::error::invalid_field(
            "secrets",
            "must be REDACTED, PLAINTEXT or ENCRYPTED",
        )),
    }
}

/// The conflict policy of an import request.
pub(crate) fn conflict_policy(raw: i32) -> Result<crate::store::ConflictPolicy, tonic::Status> {
    use crate::pb::import_profiles_request::OnConflict;
    use crate::store::ConflictPolicy;
    match OnConflict::try_from(raw) {
        Ok(OnConflict::Unspecified | OnConflict::Skip) => Ok(ConflictPolicy::Skip),
        Ok(OnConflict::Overwrite) => Ok(ConflictPolicy::Overwrite),
        Ok(OnConflict::Fail) => Ok(ConflictPolicy::Fail),
        Err(_) => Err(crate::error::invalid_field(
            "on_conflict",
            "must be SKIP, OVERWRITE or FAIL",
        )),
    }
}

/// An action that exposes secret values: PERMISSION_DENIED without the `secrets` role, and one
/// audit line (who, what, which resource; never a value) when allowed.
pub(crate) fn audit_secret_access(
    who: &crate::auth::Principal,
    action: &str,
    resource: &str,
) -> Result<(), tonic::Status> {
    who.require(crate::auth::Role::Secrets, action)?;
    tracing::info!(target: "audit", who = %who.name, action, resource, "secret access");
    Ok(())
}

/// The proto service a method name belongs to.
fn service_of(method: &str) -> &'static str {
    if method == "Backup" {
        "profileregistry.v1.AdminService"
    } else if method.contains("Profile") {
        "profileregistry.v1.ProfileService"
    } else {
        "profileregistry.v1.ConversationService"
    }
}
