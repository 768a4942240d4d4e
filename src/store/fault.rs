//! Storage faults (a full or failing data volume): sled refuses every write after its first I/O
//! error, even once space is freed, so the server fail-stops: health turns NOT_SERVING, writes
//! answer RESOURCE_EXHAUSTED or UNAVAILABLE in words, and the process exits non-zero so that its
//! supervisor restarts it; sled then recovers every acknowledged write from its log.
use std::sync::OnceLock;

use tokio::sync::watch;

/// A fault of the data volume, as told to clients and in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeFault {
    /// ENOSPC (or EDQUOT): the volume is full.
    pub no_space: bool,
    /// The cause in words, without paths.
    pub detail: String,
}

impl std::fmt::Display for VolumeFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.no_space {
            f.write_str("no space left on the data volume")
        } else {
            write!(f, "the data volume failed: {}", self.detail)
        }
    }
}

impl VolumeFault {
    /// The fault an I/O error stands for.
    pub fn of(e: &std::io::Error) -> Self {
        let no_space = matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            || e.kind() == std::io::ErrorKind::StorageFull;
        let detail = match e.raw_os_error() {
            Some(code) => format!(
                "{} (errno {code})",
                std::io::Error::from_raw_os_error(code)
                    .to_string()
                    .split(" (os error")
                    .next()
                    .unwrap_or_default()
            ),
            None => e.kind().to_string(),
        };
        Self { no_space, detail }
    }
}

fn channel() -> &'static watch::Sender<Option<VolumeFault>> {
    static FAULT: OnceLock<watch::Sender<Option<VolumeFault>>> = OnceLock::new();
    FAULT.get_or_init(|| watch::channel(None).0)
}

/// Records the first fault of this process (later ones are the same fault seen again).
pub fn raise(fault: &VolumeFault) {
    channel().send_if_modified(|current| {
        if current.is_some() {
            return false;
        }
        tracing::error!(fault = %fault, "storage fault: writes are refused from now on");
        *current = Some(fault.clone());
        true
    });
}

/// The fault, once there is one.
pub fn current() -> Option<VolumeFault> {
    channel().borrow().clone()
}

/// Completes with the fault once there is one.
pub async fn raised() -> VolumeFault {
    let mut rx = channel().subscribe();
    loop {
        if let Some(f) = rx.borrow_and_update().clone() {
            return f;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A deliberately broken build for the reliability campaign: with REGISTRY_FAULT_ACK_BEFORE_FLUSH=1,
/// a debug build acknowledges writes at once and flushes them every 100 ms. The campaign must
/// notice; release builds ignore the variable. The PostgreSQL store honours it too: it answers
/// before the transaction commits, and commits 100 ms later.
pub(crate) fn ack_before_flush() -> bool {
    #[cfg(debug_assertions)]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| std::env::var("REGISTRY_FAULT_ACK_BEFORE_FLUSH").is_ok_and(|v| v == "1"))
    }
    #[cfg(not(debug_assertions))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_told_in_words() {
        let full = VolumeFault::of(&std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(full.no_space);
        assert_eq!(full.to_string(), "no space left on the data volume");
        let eio = VolumeFault::of(&std::io::Error::from_raw_os_error(libc::EIO));
        assert!(!eio.no_space);
        assert_eq!(
            eio.to_string(),
            "the data volume failed: Input/output error (errno 5)"
        );
    }
}
