//! The mapping from domain and store errors to gRPC statuses (AIP-193): one place, every variant.
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::Violation;
use crate::store::StoreError;

/// INVALID_ARGUMENT naming each field and rule, with google.rpc.BadRequest details.
pub fn invalid_argument(violations: &[Violation]) -> Status {
    let message = violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let mut details = ErrorDetails::new();
    for v in violations {
        details.add_bad_request_violation(v.field.clone(), v.description.clone());
    }
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// A single-field INVALID_ARGUMENT.
pub fn invalid_field(field: &str, description: &str) -> Status {
    invalid_argument(&[Violation::new(field, description)])
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => Status::not_found(e.to_string()),
            StoreError::MissingReference(m) | StoreError::NotKept(m) => Status::not_found(m),
            StoreError::AlreadyExists { .. } => Status::already_exists(e.to_string()),
            StoreError::RevisionMismatch { .. } => Status::aborted(e.to_string()),
            StoreError::Aborted(m) => Status::aborted(m),
            StoreError::OutOfRange(m) => Status::out_of_range(m),
            StoreError::FailedPrecondition(m) => Status::failed_precondition(m),
            StoreError::Corrupt { ref key, .. } => {
                tracing::error!(error = %e, "damaged record");
                Status::internal(format!(
                    "stored record {key:?} is damaged; see the server log"
                ))
            }
            StoreError::Unavailable(ref detail) => {
                tracing::warn!(error = %detail, "database unavailable");
                Status::unavailable("the database cannot be reached right now; retry")
            }
            StoreError::Volume(ref fault) => {
                crate::store::fault::raise(fault);
                let code = if fault.no_space {
                    Code::ResourceExhausted
                } else {
                    Code::Unavailable
                };
                Status::new(code, format!(
                    "{fault}: this write was not acknowledged (it may or may not have reached the disk: read before retrying); writes are refused, and the server stops so that a restart recovers it (every acknowledged write is kept)"
                ))
            }
            StoreError::Storage(ref detail) => {
                tracing::error!(error = %detail, "storage failure");
                Status::internal("internal storage error; see the server log")
            }
        }
    }
}
