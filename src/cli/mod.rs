//! Client commands, against a server or a stopped server's data dir: the everyday ones (list, get,
//! put, ...), import and export of SDK folders; backup, restore and check of a whole store.
pub mod backup;
mod connection;
pub mod conversations;
pub mod everyday;
pub mod history;
mod home;
pub mod keys;
mod output;
pub mod profiles;
mod registry;
pub mod stores;
pub mod sync;
mod target;

pub use connection::{code_words, server_url, Bearer, Refused, ServerChannel};
pub use target::Target;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::openhands::secrets::FernetKey;
use crate::store::{OpenError, SledStore, StoreOptions};

/// A mistake in how a command was called: exit code 2, as for clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The SDK's key from the environment variable `var`, when it is set and not empty.
pub fn fernet_key_from_env(var: &str) -> Option<FernetKey> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| FernetKey::from_secret_key(&v))
}

/// The SDK's key as a request's `fernet_key` field carries it: its base64, or empty for none.
pub(crate) fn fernet_key_field(key: Option<&FernetKey>) -> String {
    key.map(|k| k.to_base64().to_owned()).unwrap_or_default()
}

/// Files read as `(name, json)`, as the messages `file` makes of them for a request.
pub(crate) fn file_messages<T>(
    files: Vec<(String, String)>,
    file: fn(String, String) -> T,
) -> Vec<T> {
    files
        .into_iter()
        .map(|(name, json)| file(name, json))
        .collect()
}

/// Opens a data dir directly for the offline command `what`; while a server holds it, the error
/// says to stop the server first.
pub(crate) fn open_offline(
    dir: &Path,
    secret_key_file: Option<PathBuf>,
    what: &str,
) -> anyhow::Result<Arc<SledStore>> {
    let options = StoreOptions {
        secret_key_file,
        // The server's --history-revisions is not known here: trim nothing (its next write does).
        history_revisions: usize::MAX,
        ..StoreOptions::default()
    };
    match SledStore::open(dir, &options) {
        Ok(store) => Ok(store),
        Err(e @ OpenError::InUse { .. }) => Err(anyhow::Error::new(e).context(format!(
            "{what} needs the data dir to itself: stop the server first"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub(crate) async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
