//! Profile names: the SDK's own rule, checked once at the edge.
use std::fmt;

use super::Violation;

/// A profile name that matches `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`, the SDK's rule.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProfileName(String);

impl TryFrom<String> for ProfileName {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw, "name").map_err(|v| v.to_string())
    }
}

impl From<ProfileName> for String {
    fn from(name: ProfileName) -> String {
        name.0
    }
}

/// The rule, as users read it in error messages.
pub const NAME_RULE: &str = "must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";

impl ProfileName {
    /// Checks `raw` against the rule; `field` names it in the violation.
    pub fn parse(raw: &str, field: &str) -> Result<Self, Violation> {
        let bytes = raw.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= 64
            && bytes[0].is_ascii_alphanumeric()
            && bytes[1..]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else if raw.is_empty() {
            Err(Violation::new(field, "is required"))
        } else {
            Err(Violation::new(field, NAME_RULE))
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Quoted, as a string's Debug is: a message or log field never shows the wrapper type.
impl fmt::Debug for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_sdk_rule_and_nothing_else() {
        for good in ["a", "A1", "claude.sonnet-4_5", &"x".repeat(64)] {
            assert!(ProfileName::parse(good, "name").is_ok(), "{good}");
        }
        for bad in [
            "",
            ".x",
            "-x",
            "_x",
            "a/b",
            "../x",
            "é",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(ProfileName::parse(bad, "name").is_err(), "{bad}");
        }
    }
}
