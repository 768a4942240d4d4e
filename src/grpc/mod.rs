//! The wire floor: gRPC handlers (one file per proto service), the conversions between pb and
//! domain types, page tokens and the mapping of errors to Status. Handlers decode, call `app`
//! or the store, and encode; every rule lives below them.

/// A tonic service impl, one line a handler, in one of three forms:
/// - `fn rpc(self, req: Message) -> Reply { body }`: the request as tonic hands it over;
/// - `fn rpc(self, Message { fields }) -> Reply { body }`: the message taken apart (every field
///   named, so that a field added to the proto is not ignored by mistake);
/// - `fn rpc(self, who, Message { fields }) -> Reply { body }`: the same, with the caller's
///   [`crate::auth::Principal`] as `who`.
///
/// Each stands for `async fn rpc(&self, req: Request<Message>) -> Result<Response<Reply>, Status>`.
/// The stream types of streaming rpcs come first.
macro_rules! rpcs {
    (impl $($service:ident)::+ for $api:ident { $($rest:tt)* }) => {
        rpcs!(@next [$($service)::+] $api [] $($rest)*);
    };
    (@next $service:tt $api:ident [$($done:tt)*] type $stream:ident = $ty:ty; $($rest:tt)*) => {
        rpcs!(@next $service $api [$($done)* type $stream = $ty;] $($rest)*);
    };
    (@next $service:tt $api:ident [$($done:tt)*]
        $(#[$attr:meta])* fn $rpc:ident($this:ident, $who:ident, $msg:path { $($fields:tt)* })
        -> $reply:ty $body:block $($rest:tt)*) => {
        rpcs!(@next $service $api [$($done)* $(#[$attr])* async fn $rpc(
            &$this,
            req: tonic::Request<$msg>,
        ) -> Result<tonic::Response<$reply>, tonic::Status> {
            let $who = crate::auth::principal(&req);
            let $msg { $($fields)* } = req.into_inner();
            $body
        }] $($rest)*);
    };
    (@next $service:tt $api:ident [$($done:tt)*]
        $(#[$attr:meta])* fn $rpc:ident($this:ident, $req:ident: $msg:ty)
        -> $reply:ty $body:block $($rest:tt)*) => {
        rpcs!(@next $service $api [$($done)* $(#[$attr])* async fn $rpc(
            &$this,
            $req: tonic::Request<$msg>,
        ) -> Result<tonic::Response<$reply>, tonic::Status> $body] $($rest)*);
    };
    (@next $service:tt $api:ident [$($done:tt)*]
        $(#[$attr:meta])* fn $rpc:ident($this:ident, $msg:path { $($fields:tt)* })
        -> $reply:ty $body:block $($rest:tt)*) => {
        rpcs!(@next $service $api [$($done)* $(#[$attr])* async fn $rpc(
            &$this,
            req: tonic::Request<$msg>,
        ) -> Result<tonic::Response<$reply>, tonic::Status> {
            let $msg { $($fields)* } = req.into_inner();
            $body
        }] $($rest)*);
    };
    (@next [$($service:tt)*] $api:ident [$($done:tt)*]) => {
        #[tonic::async_trait]
        impl $($service)* for $api {
            $($done)*
        }
    };
}

/// The state every service's handlers share: one value serves every service (each service's
/// file adds its handlers and helpers to it).
#[derive(Clone)]
pub struct Api {
    store: std::sync::Arc<crate::store::Store>,
    limits: crate::app::Limits,
    /// Watch streams end when it turns true.
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Api {
    /// Handlers over `store`; Watch streams end when `shutdown` turns true.
    pub fn new(
        store: std::sync::Arc<crate::store::Store>,
        limits: crate::app::Limits,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            limits,
            shutdown,
        }
    }
}

pub mod admin;
pub mod conversation;
pub mod convert;
pub mod documents;
pub mod layer;
pub mod methods;
pub mod page_token;
mod pieces;
pub mod profile;
mod profile_watch;

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
    let mode = crate::pb::export_profiles_request::Secrets::try_from(raw).map_err(|_| {
        crate::error::invalid_field("secrets", "must be REDACTED, PLAINTEXT or ENCRYPTED")
    })?;
    crate::openhands::profile::SecretsOut::of(mode.into(), key).ok_or_else(|| {
        crate::error::invalid_field("fernet_key", "is required when secrets is ENCRYPTED")
    })
}

/// The conflict policy of an import request.
pub(crate) fn conflict_policy(raw: i32) -> Result<crate::domain::ConflictPolicy, tonic::Status> {
    crate::pb::import_profiles_request::OnConflict::try_from(raw)
        .map(Into::into)
        .map_err(|_| crate::error::invalid_field("on_conflict", "must be SKIP, OVERWRITE or FAIL"))
}

/// What an export in secrets form `mode` is refused and audited as (`None`: redacted, nothing to
/// audit).
pub(crate) fn secrets_action(
    mode: &crate::openhands::profile::SecretsOut<'_>,
) -> Option<&'static str> {
    use crate::openhands::profile::SecretsOut;
    match mode {
        SecretsOut::Redacted => None,
        SecretsOut::Plaintext => Some("export secrets in plaintext"),
        SecretsOut::Encrypted(_) => Some("export secrets encrypted"),
    }
}

/// Ends a watch stream at shutdown: tells the client, with `then` (what to do next), and returns.
pub(crate) async fn tell_shutdown<T>(
    tx: &tokio::sync::mpsc::Sender<Result<T, tonic::Status>>,
    then: &str,
) {
    let why = format!("the server is shutting down; {then}");
    let _ = tx.send(Err(tonic::Status::unavailable(why))).await;
}

/// The answer of a Validate rpc.
pub(crate) fn validation(
    violations: Vec<crate::domain::Violation>,
) -> crate::pb::ValidateProfileResponse {
    crate::pb::ValidateProfileResponse {
        valid: violations.is_empty(),
        violations: violations
            .into_iter()
            .map(|v| crate::pb::FieldViolation {
                field: v.field,
                description: v.description,
            })
            .collect(),
    }
}

/// Audits a forced delete (of a referenced, bound or damaged record).
pub(crate) fn audit_forced_delete(who: &crate::auth::Principal, resource: &str, damaged: bool) {
    tracing::info!(target: "audit", who = %who.name, action = "delete with force", resource, damaged, "forced delete");
}

/// INVALID_ARGUMENT for a negative `expected_revision` of an Update rpc.
pub(crate) fn check_expected_revision(expected_revision: Option<i64>) -> Result<(), tonic::Status> {
    match expected_revision {
        Some(r) if r < 0 => Err(crate::error::invalid_field(
            "expected_revision",
            "must not be negative",
        )),
        _ => Ok(()),
    }
}
