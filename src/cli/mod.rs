//! Client commands: import and export of SDK profile folders, against a server or a data dir.
pub mod conversations;
pub mod keys;
pub mod profiles;
mod target;

pub use target::Target;

use crate::openhands::secrets::FernetKey;

/// The SDK's key from the environment variable `var`, when it is set and not empty.
pub fn fernet_key_from_env(var: &str) -> Option<FernetKey> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| FernetKey::from_secret_key(&v))
}
