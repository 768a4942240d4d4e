//! The SDK's secret forms on disk: the mask, plaintext, and Fernet tokens keyed by
//! `sha256(OH_SECRET_KEY)`.
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::domain::Secret;

/// A Fernet key, as the SDK's `Cipher` builds it (no Debug: it is a secret).
#[derive(Clone)]
pub struct FernetKey {
    fernet: fernet::Fernet,
    encoded: String,
}

impl FernetKey {
    /// The key the SDK derives from `OH_SECRET_KEY`: sha256 of its UTF-8 bytes.
    pub fn from_secret_key(secret_key: &str) -> Self {
        let raw = Sha256::digest(secret_key.as_bytes());
        let encoded = URL_SAFE.encode(raw);
        let fernet = fernet::Fernet::new(&encoded).expect("a 32-byte key is a valid Fernet key");
        Self { fernet, encoded }
    }

    /// A Fernet key given as base64 of 32 bytes, in the URL-safe or the standard alphabet.
    pub fn from_base64(key: &str) -> Result<Self, &'static str> {
        let key = key.trim();
        let raw = URL_SAFE
            .decode(key)
            .or_else(|_| STANDARD.decode(key))
            .map_err(|_| "must be base64 of 32 bytes (a Fernet key)")?;
        if raw.len() != 32 {
            return Err("must be base64 of 32 bytes (a Fernet key)");
        }
        let encoded = URL_SAFE.encode(raw);
        let fernet = fernet::Fernet::new(&encoded).ok_or("is not a valid Fernet key")?;
        Ok(Self { fernet, encoded })
    }

    /// The key as URL-safe base64, to send to a server.
    pub fn to_base64(&self) -> &str {
        &self.encoded
    }

    /// A fresh Fernet token for `plain`.
    pub fn encrypt(&self, plain: &str) -> String {
        self.fernet.encrypt(plain.as_bytes())
    }

    /// The plaintext of `token`; `None` when the key does not fit or the token is damaged.
    pub fn decrypt(&self, token: &str) -> Option<String> {
        let bytes = self.fernet.decrypt(token).ok()?;
        String::from_utf8(bytes).ok()
    }
}

/// Whether a stored value is a Fernet token (version byte 0x80, so base64 starts with `gAAAAA`).
pub fn looks_encrypted(value: &str) -> bool {
    value.len() >= 57 && value.starts_with("gAAAAA")
}

/// Whether two profile files say the same with `key`: the same JSON, key for key and in the same
/// order, once every Fernet token is replaced by its plaintext; a token in one where the other has
/// a plain value, or one the key does not open, makes them differ. Two encryptions of the same
/// profile are the same; a plaintext file is never the same as an encrypted one.
pub fn same_when_decrypted(a: &str, b: &str, key: &FernetKey) -> bool {
    let canonical = |text: &str| -> Option<String> {
        let mut value: serde_json::Value = serde_json::from_str(text).ok()?;
        for v in value.as_object_mut()?.values_mut() {
            if let Some(token) = v.as_str().filter(|s| looks_encrypted(s)) {
                *v = serde_json::json!({ "fernet": key.decrypt(token)? });
            }
        }
        serde_json::to_string(&value).ok()
    };
    canonical(a).is_some_and(|a| canonical(b).is_some_and(|b| a == b))
}

/// A secret as a file holds it: the value itself, or a Fernet token opened with `key`; a token
/// without the key (or with another key) is an error naming `field`, never stored as the value.
pub fn read_secret(field: &str, value: String, key: Option<&FernetKey>) -> Result<Secret, String> {
    if !looks_encrypted(&value) {
        return Ok(Secret::new(value));
    }
    let Some(key) = key else {
        return Err(format!(
            "{field} is encrypted (a Fernet token) and no key was given: set OH_SECRET_KEY (or --fernet-key-env)"
        ));
    };
    key.decrypt(&value).map(Secret::new).ok_or_else(|| {
        format!("{field} is encrypted with another key: the given key does not decrypt it")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryptions_of_the_same_profile_are_the_same_and_plaintext_is_not() {
        let key = FernetKey::from_secret_key("k1");
        let file =
            |secret: &str| format!("{{\n  \"model\": \"m\",\n  \"api_key\": \"{secret}\"\n}}");
        let (one, two) = (file(&key.encrypt("sk-1")), file(&key.encrypt("sk-1")));
        assert_ne!(one, two, "Fernet tokens differ each time");
        assert!(same_when_decrypted(&one, &two, &key));
        assert!(!same_when_decrypted(
            &one,
            &file(&key.encrypt("sk-2")),
            &key
        ));
        assert!(!same_when_decrypted(&one, &file("sk-1"), &key), "plaintext");
        let other = FernetKey::from_secret_key("k2");
        assert!(!same_when_decrypted(
            &one,
            &file(&other.encrypt("sk-1")),
            &key
        ));
        let reordered = format!(
            "{{\"api_key\": \"{}\", \"model\": \"m\"}}",
            key.encrypt("sk-1")
        );
        assert!(
            !same_when_decrypted(&one, &reordered, &key),
            "key order counts"
        );
        assert!(!same_when_decrypted(&one, "not json", &key));
    }

    #[test]
    fn derives_the_sdk_key_and_round_trips() {
        let k = FernetKey::from_secret_key("test-secret-key-0001");
        // The SDK's key for this secret, in the standard alphabet (it contains a '/').
        let sdk = FernetKey::from_base64("mUxAkfdy9Rv309oyRQwryBJQBlrYp1R/X1NFRegTC0k=").unwrap();
        assert_eq!(k.to_base64(), sdk.to_base64());
        let token = k.encrypt("sk-1");
        assert!(looks_encrypted(&token));
        assert_eq!(sdk.decrypt(&token).as_deref(), Some("sk-1"));
        assert_eq!(FernetKey::from_secret_key("other").decrypt(&token), None);
        assert!(FernetKey::from_base64("short").is_err());
    }
}
