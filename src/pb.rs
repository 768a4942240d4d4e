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
    use super::import_result::Outcome as PbOutcome;
    use crate::domain::{ConflictPolicy, ImportOutcome, Outcome, SecretsMode};

    /// `From` both ways between a domain enum and its pb form, variant for variant; the pb
    /// variants after `;` (UNSPECIFIED, or one a newer peer sends) read as the domain one given.
    macro_rules! both_ways {
        ($domain:ident <=> $pb:ident [$($v:ident),*]; $($other:ident => $to:ident),*) => {
            impl From<$pb> for $domain {
                fn from(x: $pb) -> Self {
                    match x {
                        $($pb::$v => Self::$v,)*
                        $($pb::$other => Self::$to,)*
                    }
                }
            }

            impl From<$domain> for $pb {
                fn from(x: $domain) -> Self {
                    match x {
                        $($domain::$v => Self::$v,)*
                    }
                }
            }
        };
    }

    both_ways!(ConflictPolicy <=> OnConflict [Skip, Overwrite, Fail]; Unspecified => Skip);
    both_ways!(SecretsMode <=> Secrets [Redacted, Plaintext, Encrypted]; Unspecified => Redacted);
    both_ways!(Outcome <=> PbOutcome [Created, Updated, Unchanged, Skipped, Invalid]; Unspecified => Invalid);

    impl From<ImportOutcome> for super::ImportResult {
        fn from(o: ImportOutcome) -> Self {
            Self {
                name: o.name,
                outcome: PbOutcome::from(o.outcome) as i32,
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
