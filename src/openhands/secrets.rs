//! The SDK's secret forms on disk: the mask, plaintext, and Fernet tokens keyed by
//! `sha256(OH_SECRET_KEY)`.
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use sha2::{Digest, Sha256};

/// A Fernet key, as the SDK's `Cipher` builds it.
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

#[cfg(test)]
mod tests {
    use super::*;

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
