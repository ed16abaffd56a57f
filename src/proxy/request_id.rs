//! Request IDs (`server.request_id`, nginx's `$request_id`): each request
//! carries one to the origin, back to the client and into the access log.
//!
//! A client's own id is kept only from a peer `guard.real_ip` trusts, and
//! only when it is short visible ASCII (at most 128 bytes, no space): it then
//! names the request across the proxies in front. Otherwise relais makes one:
//! 128 random bits as 32 hex digits, from the thread's generator (no lock and
//! no system call per request). The origin's echo of the header is dropped as
//! its response arrives (`forward`), so no stored response keeps one and a
//! hit carries its own request's id.

use http::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng as _;

/// Longest id kept from a client.
const MAX_LEN: usize = 128;

/// The request's id: the client's in `name` when `trusted()` says its peer
/// is believed and the value fits, else a new one.
pub(super) fn of(name: &HeaderName, headers: &HeaderMap, trusted: impl FnOnce() -> bool) -> HeaderValue {
    match headers.get(name) {
        Some(v) if fits(v) && trusted() => v.clone(),
        _ => generate(),
    }
}

fn fits(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| c.is_ascii_graphic())
}

/// 32 lower-case hex digits of 128 random bits.
fn generate() -> HeaderValue {
    let n: u128 = rand::rng().random();
    let mut hex = [0u8; 32];
    for (i, digit) in hex.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[(n >> (124 - 4 * i)) as usize & 0xf];
    }
    HeaderValue::from_bytes(&hex).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    static NAME: HeaderName = HeaderName::from_static("x-request-id");

    fn with(value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(NAME.clone(), HeaderValue::from_bytes(value).unwrap());
        h
    }

    #[test]
    fn made_ids_are_hex_and_differ() {
        let (a, b) = (of(&NAME, &HeaderMap::new(), || true), of(&NAME, &HeaderMap::new(), || true));
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), 32);
            assert!(id.as_bytes().iter().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id:?}");
        }
    }

    #[test]
    fn a_client_id_is_kept_only_from_a_trusted_peer_and_when_it_fits() {
        assert_eq!(of(&NAME, &with(b"edge-42/a.b"), || true), "edge-42/a.b");
        assert_ne!(of(&NAME, &with(b"edge-42"), || false), "edge-42");
        let long = [b'a'; MAX_LEN + 1];
        assert_eq!(of(&NAME, &with(&long[..MAX_LEN]), || true).len(), MAX_LEN);
        for odd in [&long[..], b"a b", b"a\tb", b"\xe9t\xe9", b""] {
            let id = of(&NAME, &with(odd), || true);
            assert_eq!(id.len(), 32, "{odd:?} was kept");
        }
    }
}
