//! The wire floor: gRPC handlers (one file per proto service), the conversions between pb and
//! domain types, page tokens and the mapping of errors to Status. Handlers decode, call `app`
//! or the store, and encode; every rule lives below them.
pub use crate::app::{audit_secret_access, Limits};

pub mod admin;
pub mod conversation;
pub mod convert;
pub mod page_token;
pub mod profile;

use std::future::Future;
use std::time::Instant;

use tonic::{Code, Status};
use tracing::Instrument;

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
