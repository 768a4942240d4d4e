//! Provider connections: named bundles of shared credentials (an API key, a base URL) that LLM
//! profiles reference by `provider_connection_id`, so one rotated key reaches every profile bound
//! to it. The rules are the SDK's (`openhands.sdk.llm.provider_connection_store`, 1.58.2).
use super::{Secret, Violation};

/// The SDK's limit on connections in one home (checked when one is created).
pub const MAX_CONNECTIONS: usize = 64;
/// The provider of a connection that names none.
pub const DEFAULT_PROVIDER: &str = "custom";
/// The rule a new connection's id must match (the SDK checks it on create only: an id it loaded
/// from a file needs only to be 1 to 128 characters).
pub const ID_RULE: &str = "must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$";

/// One provider connection.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProviderConnection {
    /// Its id, which profiles reference.
    pub id: String,
    /// What people call it.
    pub display_name: String,
    /// The provider (`custom` by default).
    pub provider: String,
    /// The shared key; `None` when unset.
    pub api_key: Option<Secret>,
    /// The endpoint; `None` when unset (a profile bound to the connection then has none either).
    pub base_url: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// Characters, as pydantic counts a string's length.
fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Whether `id` may name a new connection (the SDK's create rule).
pub fn is_creatable_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes[0].is_ascii_alphanumeric()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl ProviderConnection {
    /// Every rule a stored connection keeps; `prefix` is its field path (e.g. `connection`).
    pub fn violations(&self, prefix: &str) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut length = |field: &str, value: &str, max: usize| {
            let n = chars(value);
            if n == 0 || n > max {
                out.push(Violation::new(
                    format!("{prefix}.{field}"),
                    format!("must be 1 to {max} characters"),
                ));
            }
        };
        length("id", &self.id, 128);
        length("display_name", &self.display_name, 128);
        length("provider", &self.provider, 128);
        if self.id.contains('\0') {
            // PostgreSQL's text cannot hold it, and no file system name can.
            out.push(Violation::new(
                format!("{prefix}.id"),
                "must not contain NUL (U+0000)",
            ));
        }
        if self.base_url.as_deref().is_some_and(|u| chars(u) > 2048) {
            out.push(Violation::new(
                format!("{prefix}.base_url"),
                "must be at most 2048 characters",
            ));
        }
        out
    }
}
