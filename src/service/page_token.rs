//! Opaque page tokens: the last key of the page and the listing it belongs to, with a checksum so a
//! forged or truncated token is refused rather than silently misread.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use tonic::Status;

const TAG: &[u8] = b"profile-registry/page-token/v1\0";
const MAC_LEN: usize = 8;

fn mac(payload: &[u8]) -> [u8; MAC_LEN] {
    let digest = Sha256::new()
        .chain_update(TAG)
        .chain_update(payload)
        .finalize();
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&digest[..MAC_LEN]);
    out
}

/// A token that resumes `listing` (which names the collection and its filters) after `last`.
pub fn encode(listing: &str, last: &str) -> String {
    let mut payload = Vec::with_capacity(listing.len() + last.len() + 1 + MAC_LEN);
    payload.extend_from_slice(listing.as_bytes());
    payload.push(0);
    payload.extend_from_slice(last.as_bytes());
    let m = mac(&payload);
    payload.extend_from_slice(&m);
    URL_SAFE_NO_PAD.encode(payload)
}

/// The key to resume after; `None` for an empty token. INVALID_ARGUMENT for anything not made by
/// [`encode`] for the same listing.
pub fn decode(listing: &str, token: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        crate::error::invalid_field(
            "page_token",
            "is not a token returned by this listing; start again with an empty page_token",
        )
    };
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    if raw.len() < MAC_LEN {
        return Err(bad());
    }
    let (payload, m) = raw.split_at(raw.len() - MAC_LEN);
    if mac(payload) != m {
        return Err(bad());
    }
    let mut parts = payload.splitn(2, |b| *b == 0);
    let (Some(l), Some(last)) = (parts.next(), parts.next()) else {
        return Err(bad());
    };
    if l != listing.as_bytes() {
        return Err(bad());
    }
    String::from_utf8(last.to_vec())
        .map(Some)
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_forgeries() {
        let t = encode("profiles", "abc");
        assert_eq!(decode("profiles", &t).unwrap().as_deref(), Some("abc"));
        assert_eq!(decode("profiles", "").unwrap(), None);
        assert!(decode("conversations", &t).is_err());
        assert!(decode("profiles", "garbage").is_err());
        let mut forged = URL_SAFE_NO_PAD.decode(&t).unwrap();
        forged[10] ^= 1;
        assert!(decode("profiles", &URL_SAFE_NO_PAD.encode(forged)).is_err());
    }
}
