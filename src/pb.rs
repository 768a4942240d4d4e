//! Code generated from `proto/` by tonic-prost-build, the descriptor set served by reflection,
//! and the conversions between the protobuf forms of the import and export words and their one
//! domain type each (used by the handlers and by the CLI as a client alike).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("profileregistry.v1");

/// The encoded descriptor set of every proto in `proto/`, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("profileregistry_descriptor");

mod words {
    use super::export_profiles_request::Secrets;
    use super::import_profiles_request::OnConflict;
    use super::import_result;
    use crate::domain::{ConflictPolicy, ImportOutcome, Outcome, SecretsMode};

    /// UNSPECIFIED is the default, SKIP.
    impl From<OnConflict> for ConflictPolicy {
        fn from(c: OnConflict) -> Self {
            match c {
                OnConflict::Unspecified | OnConflict::Skip => Self::Skip,
                OnConflict::Overwrite => Self::Overwrite,
                OnConflict::Fail => Self::Fail,
            }
        }
    }

    impl From<ConflictPolicy> for OnConflict {
        fn from(c: ConflictPolicy) -> Self {
            match c {
                ConflictPolicy::Skip => Self::Skip,
                ConflictPolicy::Overwrite => Self::Overwrite,
                ConflictPolicy::Fail => Self::Fail,
            }
        }
    }

    /// UNSPECIFIED is the default, REDACTED.
    impl From<Secrets> for SecretsMode {
        fn from(s: Secrets) -> Self {
            match s {
                Secrets::Unspecified | Secrets::Redacted => Self::Redacted,
                Secrets::Plaintext => Self::Plaintext,
                Secrets::Encrypted => Self::Encrypted,
            }
        }
    }

    impl From<SecretsMode> for Secrets {
        fn from(s: SecretsMode) -> Self {
            match s {
                SecretsMode::Redacted => Self::Redacted,
                SecretsMode::Plaintext => Self::Plaintext,
                SecretsMode::Encrypted => Self::Encrypted,
            }
        }
    }

    /// An outcome a newer server sends and this build does not know reads as INVALID.
    impl From<import_result::Outcome> for Outcome {
        fn from(o: import_result::Outcome) -> Self {
            use import_result::Outcome as O;
            match o {
                O::Created => Self::Created,
                O::Updated => Self::Updated,
                O::Unchanged => Self::Unchanged,
                O::Skipped => Self::Skipped,
                O::Invalid | O::Unspecified => Self::Invalid,
            }
        }
    }

    impl From<Outcome> for import_result::Outcome {
        fn from(o: Outcome) -> Self {
            match o {
                Outcome::Created => Self::Created,
                Outcome::Updated => Self::Updated,
                Outcome::Unchanged => Self::Unchanged,
                Outcome::Skipped => Self::Skipped,
                Outcome::Invalid => Self::Invalid,
            }
        }
    }

    impl From<ImportOutcome> for super::ImportResult {
        fn from(o: ImportOutcome) -> Self {
            Self {
                name: o.name,
                outcome: import_result::Outcome::from(o.outcome) as i32,
                reason: o.reason,
                revision: o.revision,
            }
        }
    }

    impl From<super::ImportResult> for ImportOutcome {
        fn from(r: super::ImportResult) -> Self {
            Self {
                outcome: r.outcome().into(),
                name: r.name,
                reason: r.reason,
                revision: r.revision,
            }
        }
    }
}
