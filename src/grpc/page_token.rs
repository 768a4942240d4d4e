//! Opaque page tokens: the last key of the page and the listing it belongs to, authenticated with
//! a server key (HMAC-SHA256), so a forged, altered or truncated token is refused rather than
//! silently misread. On PostgreSQL every replica derives the same key from the shared key file.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::Mac;
use tonic::Status;

const MAC_LEN: usize = 16;

fn mac(key: &[u8; 32], payload: &[u8]) -> [u8; MAC_LEN] {
    let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
        .expect("HMAC takes a key of any length");
    m.update(payload);
    let digest = m.finalize().into_bytes();
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&digest[..MAC_LEN]);
    out
}

/// A token that resumes `listing` (which names the collection and its filters) after `last`.
pub fn encode(key: &[u8; 32], listing: &str, last: &str) -> String {
    let mut payload = Vec::with_capacity(listing.len() + last.len() + 1 + MAC_LEN);
    payload.extend_from_slice(listing.as_bytes());
    payload.push(0);
    payload.extend_from_slice(last.as_bytes());
    let m = mac(key, &payload);
    payload.extend_from_slice(&m);
    URL_SAFE_NO_PAD.encode(payload)
}

/// Cuts a listing read with one item more than `size` (which tells that another page follows) to
/// `size` items, and returns the token of the next page: empty after the last one.
pub fn cut<T>(
    key: &[u8; 32],
    listing: &str,
    page: &mut Vec<T>,
    size: usize,
    last: impl Fn(&T) -> String,
) -> String {
    if page.len() <= size {
        return String::new();
    }
    page.truncate(size);
    page.last()
        .map(|t| encode(key, listing, &last(t)))
        .unwrap_or_default()
}

/// [`decode`] for a listing whose tokens carry a number (a revision, an event's seq).
pub fn decode_number(key: &[u8; 32], listing: &str, token: &str) -> Result<Option<i64>, Status> {
    decode(key, listing, token)?
        .map(|t| {
            t.parse::<i64>()
                .map_err(|_| crate::error::invalid_field("page_token", "is damaged"))
        })
        .transpose()
}

/// The key to resume after; `None` for an empty token. INVALID_ARGUMENT for anything not made by
/// [`encode`] for the same listing.
pub fn decode(key: &[u8; 32], listing: &str, token: &str) -> Result<Option<String>, Status> {
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
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&mac(key, payload)[..], m)) {
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
        let key = [7u8; 32];
        let t = encode(&key, "profiles", "abc");
        assert_eq!(
            decode(&key, "profiles", &t).unwrap().as_deref(),
            Some("abc")
        );
        assert_eq!(decode(&key, "profiles", "").unwrap(), None);
        assert!(decode(&key, "conversations", &t).is_err());
        assert!(decode(&key, "profiles", "garbage").is_err());
        let mut forged = URL_SAFE_NO_PAD.decode(&t).unwrap();
        forged[10] ^= 1;
        assert!(decode(&key, "profiles", &URL_SAFE_NO_PAD.encode(forged)).is_err());
    }

    #[test]
    fn a_token_made_without_the_key_is_refused() {
        // Whoever knows the format but not the server's key cannot make a token, not even one
        // with a correct unkeyed checksum (what earlier versions accepted).
        let server = [1u8; 32];
        let guess = encode(&[2u8; 32], "profiles", "zzz");
        assert!(decode(&server, "profiles", &guess).is_err());
        use sha2::{Digest, Sha256};
        let payload = b"profiles\0zzz".to_vec();
        let digest = Sha256::new()
            .chain_update(b"profile-registry/page-token/v1\0")
            .chain_update(&payload)
            .finalize();
        let mut old = payload;
        old.extend_from_slice(&digest[..8]);
        assert!(decode(&server, "profiles", &URL_SAFE_NO_PAD.encode(old)).is_err());
    }
}
