//! What a sync session gives back: [`Ended`] (why it stopped, and whether retrying can help) and
//! [`Done`] (what one pass did to the folder).
use std::io;

use tonic::Code;

use crate::cli::connection::{status_error, ServerChannel};
use crate::pb::profile_service_client::ProfileServiceClient;

/// The client a sync watches and exports with.
pub(super) type Client = ProfileServiceClient<ServerChannel>;

/// Why a session ended.
pub(super) struct Ended {
    pub(super) error: anyhow::Error,
    /// The server asked for a new watch (ABORTED, RESOURCE_EXHAUSTED on the stream).
    pub(super) watch_again: bool,
    /// Retrying cannot help until someone changes something (a refused token, a second sync on
    /// the folder): before the first sync in step, the command exits instead of retrying.
    pub(super) fatal: bool,
}

impl Ended {
    pub(super) fn fatal(error: anyhow::Error) -> Self {
        Self {
            error,
            watch_again: false,
            fatal: true,
        }
    }
}

impl From<anyhow::Error> for Ended {
    fn from(error: anyhow::Error) -> Self {
        Self {
            error,
            watch_again: false,
            fatal: false,
        }
    }
}

impl From<io::Error> for Ended {
    fn from(error: io::Error) -> Self {
        anyhow::Error::new(error).into()
    }
}

impl From<tonic::Status> for Ended {
    fn from(status: tonic::Status) -> Self {
        let watch_again = matches!(status.code(), Code::Aborted | Code::ResourceExhausted);
        let fatal = matches!(
            status.code(),
            Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument
        );
        Self {
            error: status_error(status),
            watch_again,
            fatal,
        }
    }
}

/// What one pass did to the folder.
#[derive(Debug, Default)]
pub(super) struct Done {
    /// Profiles mirrored (written or unchanged).
    pub(super) profiles: usize,
    pub(super) written: Vec<String>,
    pub(super) deleted: Vec<String>,
}

impl Done {
    pub(super) fn changed(&self) -> bool {
        !self.written.is_empty() || !self.deleted.is_empty()
    }

    pub(super) fn summary(&self) -> String {
        let names = |v: &[String]| {
            if v.is_empty() || v.len() > 10 {
                String::new()
            } else {
                format!(" ({})", v.join(", "))
            }
        };
        format!(
            "{} profile{}, {} written{}, {} unchanged, {} deleted{}",
            self.profiles,
            if self.profiles == 1 { "" } else { "s" },
            self.written.len(),
            names(&self.written),
            self.profiles - self.written.len(),
            self.deleted.len(),
            names(&self.deleted)
        )
    }
}
