//! Client commands: import and export of SDK profile folders, against a server or a data dir;
//! backup, restore and check of a whole store.
pub mod backup;
pub mod conversations;
pub mod keys;
pub mod profiles;
pub mod stores;
mod target;

pub use target::Target;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::openhands::secrets::FernetKey;
use crate::store::{OpenError, SledStore, StoreOptions};

/// The SDK's key from the environment variable `var`, when it is set and not empty.
pub fn fernet_key_from_env(var: &str) -> Option<FernetKey> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| FernetKey::from_secret_key(&v))
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
